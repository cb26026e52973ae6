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
  return "MR_EUNKNOWN";
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
  return "unknown error";
}
