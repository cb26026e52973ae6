/* Fuzz target: the HTTP upgrade parser and the response builders. */
#include <stdint.h>
#include <stdlib.h>

#include "error.h"
#include "fuzz_target.h"
#include "http.h"

#define REQ(extra)                                                             \
  "GET /chat?room=a&name=b HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"      \
  "Connection: keep-alive, Upgrade\r\n"                                        \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                            \
  "Sec-WebSocket-Version: 13\r\n" extra "\r\n"

FUZZ_SEEDS(FUZZ_SEED(REQ("")), FUZZ_SEED(REQ("X-A: 1\r\nX-B:  two  \r\n")),
           FUZZ_SEED("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
           FUZZ_SEED("POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = (char *)fuzz_copy(data, size);
  if (!buf)
    return 0;
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
