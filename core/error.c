#include "error.h"

const char *mr_err_name(int err) {
  switch (err) {
#define MR_ERR_NAME(name, code, msg)                                           \
  case code:                                                                   \
    return "MR_E" #name;
    MR_ERRNO_MAP(MR_ERR_NAME)
#undef MR_ERR_NAME
  case 0:
    return "OK";
  }
  /* Everything else in the space is libuv's. The _r form, because libuv's
   * plain uv_err_name allocates (and leaks) a string for a code it does not
   * know; the buffer is static, as the loop is single-threaded. */
  static char buf[64];
  return uv_err_name_r(err, buf, sizeof buf);
}

const char *mr_strerror(int err) {
  switch (err) {
#define MR_ERR_MSG(name, code, msg)                                            \
  case code:                                                                   \
    return msg;
    MR_ERRNO_MAP(MR_ERR_MSG)
#undef MR_ERR_MSG
  case 0:
    return "success";
  }
  static char buf[128];
  return uv_strerror_r(err, buf, sizeof buf);
}
