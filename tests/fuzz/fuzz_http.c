/* Fuzz target: the HTTP upgrade parser and the response builders. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "http.h"

#define REQ(extra)                                                             \
  "GET /chat?room=a&name=b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"      \
  "Connection: keep-alive, Upgrade\r\n"                                        \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                            \
  "Sec-WebSocket-Version: 13\r\n" extra "\r\n"

static const char s1[] = REQ("");
static const char s2[] = REQ("X-A: 1\r\nX-B:  two  \r\n");
static const char s3[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
static const char s4[] = "POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
const char *const fuzz_seeds[] = {s1, s2, s3, s4};
const size_t fuzz_seed_lens[] = {sizeof s1 - 1, sizeof s2 - 1, sizeof s3 - 1,
                                 sizeof s4 - 1};
const size_t fuzz_nseeds = 4;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy, so that a read past the end is an ASan report. */
  char *buf = malloc(size ? size : 1);
  if (!buf)
    return 0;
  memcpy(buf, data, size);
  mr_http_request req;
  int r = mr_http_parse_upgrade(buf, size, 8192, &req);
  if (r == 0) {
    if (req.head_len > size)
      abort(); /* the head cannot be longer than the input */
    char out[1024];
    if (req.is_upgrade)
      mr_http_build_101(&req, out, sizeof out);
    else if (mr_http_build_error(req.status, req.reason, out, sizeof out) < 0)
      abort(); /* every refusal has a response */
    for (size_t i = 0; i < req.nheaders; i++)
      if (req.headers[i].name < buf || req.headers[i].name >= buf + size)
        abort(); /* headers point into the input */
  } else if (r != MR_EAGAIN) {
    abort();
  }
  free(buf);
  return 0;
}
