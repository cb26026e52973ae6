/* The one error space: moonroom's codes, libuv's codes, no collisions. */
#include <errno.h>
#include <string.h>

#include "error.h"
#include "test_util.h"

static const int mr_codes[] = {
#define MR_ERR_CODE(name, code, msg) code,
    MR_ERRNO_MAP(MR_ERR_CODE)
#undef MR_ERR_CODE
};
#define NCODES (sizeof mr_codes / sizeof *mr_codes)

/* Where an errno fits, the code is libuv's, so libuv's failures pass up
 * unchanged and mean the same thing. (MR_ENOMEM was once -1, UV_EPERM.) */
static void test_shared_codes_are_libuvs(void) {
  CHECK_EQ_INT(MR_ENOMEM, UV_ENOMEM);
  CHECK_EQ_INT(MR_EINVAL, UV_EINVAL);
  CHECK_EQ_INT(MR_EAGAIN, UV_EAGAIN);
  CHECK_EQ_INT(MR_EIO, UV_EIO);
  CHECK((int)MR_ENOMEM != (int)UV_EPERM);
}

/* moonroom's own codes are unknown to libuv (so never mistaken for one)
 * and distinct from each other. */
static void test_own_codes_are_distinct(void) {
  char buf[64];
  for (size_t i = 0; i < NCODES; i++) {
    CHECK(mr_codes[i] < 0);
    for (size_t j = i + 1; j < NCODES; j++)
      CHECK(mr_codes[i] != mr_codes[j]);
    int shared = mr_codes[i] == UV_ENOMEM || mr_codes[i] == UV_EINVAL ||
                 mr_codes[i] == UV_EAGAIN || mr_codes[i] == UV_EIO;
    uv_err_name_r(mr_codes[i], buf, sizeof buf);
    if (!shared)
      CHECK(strncmp(buf, "Unknown", 7) == 0);
    CHECK(strncmp(mr_err_name(mr_codes[i]), "MR_E", 4) == 0);
  }
}

/* Names and messages answer for both kinds of code, and never NULL. */
static void test_names_and_messages(void) {
  CHECK_STR(mr_err_name(MR_EPROTO), "MR_EPROTO");
  CHECK_STR(mr_strerror(MR_ECLOSED), "connection is closed");
  CHECK_STR(mr_err_name(UV_EADDRINUSE), "EADDRINUSE");
  CHECK_STR(mr_strerror(UV_EADDRINUSE), "address already in use");
  CHECK_STR(mr_err_name(0), "OK");
  CHECK(mr_strerror(-987654) != NULL);
  CHECK(mr_err_name(-987654) != NULL);
}

int main(void) {
  test_shared_codes_are_libuvs();
  test_own_codes_are_distinct();
  test_names_and_messages();
  return test_report();
}
