/* Fuzz target: the HTTP upgrade parser and the response builders. */
#include <stdint.h>
#include <stdio.h>
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
           FUZZ_SEED(REQ("Sec-WebSocket-Protocol: a, b,,c\r\n")),
           FUZZ_SEED("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
           FUZZ_SEED("POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));

/* Every offered subprotocol and every request header that passes
 * mr_http_check_header must make a 101 the builder accepts (it re-checks
 * both, so the two checks cannot disagree), and the elements must point
 * into the input. */
static void check_extras(const mr_http_request *req, const char *buf,
                         size_t size) {
  char out[MR_HTTP_MAX_EXTRA + 2048], line[MR_HTTP_MAX_EXTRA];
  mr_http_list_iter it;
  mr_http_list_init(&it, req, "Sec-WebSocket-Protocol");
  const char *e;
  size_t len;
  while (mr_http_list_next(&it, &e, &len)) {
    if (len == 0 || e < buf || e + len > buf + size)
      abort();
    int n = mr_http_build_101(req, e, len, NULL, out, sizeof out);
    if (n < 0 && n != MR_EINVAL && n != MR_ETOOBIG)
      abort();
  }
  for (size_t i = 0; i < req->nheaders; i++) {
    const mr_http_header *h = &req->headers[i];
    if (h->name_len + h->value_len + 5 > sizeof line ||
        mr_http_check_header(h->name, h->name_len, h->value, h->value_len))
      continue;
    snprintf(line, sizeof line, "%.*s: %.*s\r\n", (int)h->name_len, h->name,
             (int)h->value_len, h->value);
    if (mr_http_build_101(req, NULL, 0, line, out, sizeof out) <= 0 ||
        mr_http_build_error(403, "x", line, out, sizeof out) <= 0)
      abort();
  }
}

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
      mr_http_build_101(&req, NULL, 0, NULL, out, sizeof out);
    else if (mr_http_build_error(req.status, req.reason, NULL, out,
                                 sizeof out) < 0)
      abort(); /* every refusal has a response */
    for (size_t i = 0; i < req.nheaders; i++)
      if (req.headers[i].name < buf || req.headers[i].name >= buf + size)
        abort(); /* headers point into the input */
    if (req.is_upgrade)
      check_extras(&req, buf, size);
  } else if (r != MR_EAGAIN) {
    abort();
  }
  free(buf);
  return 0;
}
