/* Unit tests for the admin server's HTTP (core/admin_http.c): request heads
 * parsed (also split at every byte), routed, and response heads built.
 *
 * Inputs are copied into heap blocks of exactly their length (no NUL), so a
 * sanitizer build catches any read past the end. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_http.h"
#include "error.h"
#include "test_util.h"

/* Parses all of s with max_head; the request goes to *req. */
static int parse_max(const char *s, size_t max_head, mr_admin_request *req) {
  size_t len = strlen(s);
  char *copy = (char *)dup_exact((const uint8_t *)s, len);
  int r = mr_admin_parse(copy, len, max_head, req);
  /* The path points into the copy: keep a stable one for the checks. */
  static char path[256];
  if (r == 0 && req->path && req->path_len < sizeof path) {
    memcpy(path, req->path, req->path_len);
    req->path = path;
  }
  free(copy);
  return r;
}

static int parse(const char *s, mr_admin_request *req) {
  return parse_max(s, 8192, req);
}

static void test_get(void) {
  mr_admin_request req;
  const char *get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK_EQ_INT(parse(get, &req), 0);
  CHECK_EQ_INT(req.status, 0);
  CHECK_EQ_INT(req.method, MR_ADMIN_GET);
  CHECK_SPAN(req.path, req.path_len, "/metrics");
  CHECK_EQ_INT(req.head_len, strlen(get));
  CHECK_EQ_INT(req.keep_alive, 1);
  CHECK_EQ_INT(mr_admin_route(&req), MR_ADMIN_METRICS);

  /* Bytes after the head (a pipelined request) are not part of it. */
  char two[256];
  snprintf(two, sizeof two, "%sGET /healthz HTTP/1.1\r\n\r\n", get);
  CHECK_EQ_INT(parse(two, &req), 0);
  CHECK_EQ_INT(req.head_len, strlen(get));
  CHECK_SPAN(req.path, req.path_len, "/metrics");

  /* The query string is not part of the path. */
  CHECK_EQ_INT(parse("GET /readyz?verbose=1 HTTP/1.1\r\n\r\n", &req), 0);
  CHECK_SPAN(req.path, req.path_len, "/readyz");
  CHECK_EQ_INT(mr_admin_route(&req), MR_ADMIN_READYZ);

  CHECK_EQ_INT(parse("HEAD /healthz HTTP/1.1\r\n\r\n", &req), 0);
  CHECK_EQ_INT(req.method, MR_ADMIN_HEAD);
  CHECK_EQ_INT(mr_admin_route(&req), MR_ADMIN_HEALTHZ);
}

/* Whatever the split, the head is incomplete until its last byte. */
static void test_every_split(void) {
  const char *get = "GET /healthz HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
  size_t len = strlen(get);
  for (size_t cut = 0; cut <= len; cut++) {
    char *copy = (char *)dup_exact((const uint8_t *)get, cut);
    mr_admin_request req;
    int r = mr_admin_parse(copy, cut, 8192, &req);
    if (cut < len)
      CHECK_EQ_INT(r, MR_EAGAIN);
    else {
      CHECK_EQ_INT(r, 0);
      CHECK_EQ_INT(req.status, 0);
      CHECK_EQ_INT(req.head_len, len);
    }
    free(copy);
  }
}

static void test_keep_alive(void) {
  mr_admin_request req;
  CHECK_EQ_INT(
      parse("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", &req), 0);
  CHECK_EQ_INT(req.keep_alive, 0);
  CHECK_EQ_INT(parse("GET /healthz HTTP/1.0\r\n\r\n", &req), 0);
  CHECK_EQ_INT(req.status, 0);
  CHECK_EQ_INT(req.keep_alive, 0);
  CHECK_EQ_INT(
      parse("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &req),
      0);
  CHECK_EQ_INT(req.keep_alive, 1);
  /* A body is never read, so the connection is not kept. */
  CHECK_EQ_INT(
      parse("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", &req),
      0);
  CHECK_EQ_INT(req.status, 0);
  CHECK_EQ_INT(req.keep_alive, 0);
  CHECK_EQ_INT(mr_admin_route(&req), 405);
  CHECK_EQ_INT(
      parse("PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &req), 0);
  CHECK_EQ_INT(req.keep_alive, 0);
  CHECK_EQ_INT(parse("GET /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &req), 0);
  CHECK_EQ_INT(req.keep_alive, 1);
}

static void test_routes(void) {
  static const struct {
    const char *head;
    int route;
  } cases[] = {
      {"GET /metrics HTTP/1.1\r\n\r\n", MR_ADMIN_METRICS},
      {"HEAD /metrics HTTP/1.1\r\n\r\n", MR_ADMIN_METRICS},
      {"GET /healthz HTTP/1.1\r\n\r\n", MR_ADMIN_HEALTHZ},
      {"GET /readyz HTTP/1.1\r\n\r\n", MR_ADMIN_READYZ},
      {"POST /metrics HTTP/1.1\r\n\r\n", 405},
      {"DELETE /healthz HTTP/1.1\r\n\r\n", 405},
      {"OPTIONS /readyz HTTP/1.1\r\n\r\n", 405},
      {"GET / HTTP/1.1\r\n\r\n", 404},
      {"GET /metrics/ HTTP/1.1\r\n\r\n", 404},
      {"GET /METRICS HTTP/1.1\r\n\r\n", 404},
      {"GET /metricsx HTTP/1.1\r\n\r\n", 404},
      {"GET /health HTTP/1.1\r\n\r\n", 404},
      {"POST /nothing HTTP/1.1\r\n\r\n", 404},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mr_admin_request req;
    CHECK_EQ_INT(parse(cases[i].head, &req), 0);
    CHECK_EQ_INT(req.status, 0);
    int route = mr_admin_route(&req);
    if (!test_record(route == cases[i].route, __FILE__, __LINE__, "route"))
      fprintf(stderr, "  %s: got %d, expected %d\n", cases[i].head, route,
              cases[i].route);
  }
}

static void check_refused(const char *head, int status, int line) {
  mr_admin_request req;
  int r = parse(head, &req);
  if (!test_record(r == 0 && req.status == status && req.keep_alive == 0 &&
                       req.reason && *req.reason,
                   __FILE__, line, "refused"))
    fprintf(stderr, "  %s: got r=%d status %d, expected %d\n", head, r,
            req.status, status);
}

static void test_garbage(void) {
  check_refused("garbage\r\n\r\n", 400, __LINE__);
  check_refused("\r\n\r\n", 400, __LINE__);
  check_refused("GET /metrics\r\n\r\n", 400, __LINE__);
  check_refused("GET /metrics HTTP/1.1\nHost: x\r\n\r\n", 400, __LINE__);
  check_refused("GET /metrics HTTP/2.0\r\n\r\n", 400, __LINE__);
  check_refused("GET * HTTP/1.1\r\n\r\n", 400, __LINE__);
  check_refused("GET http://h/metrics HTTP/1.1\r\n\r\n", 400, __LINE__);
  check_refused("GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", 400, __LINE__);
  check_refused("\x16\x03\x01\x02\x01\x01\x01\x01\xfc\r\n\r\n", 400, __LINE__);
}

/* A head is refused 431 once max_head bytes hold no CRLFCRLF; one that ends
 * exactly at max_head is served. */
static void test_too_large(void) {
  char big[600];
  memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
  memset(big + 26, 'a', sizeof big - 26);
  big[sizeof big - 1] = '\0';
  mr_admin_request req;
  CHECK_EQ_INT(parse_max(big, 512, &req), 0);
  CHECK_EQ_INT(req.status, 431);
  CHECK_EQ_INT(req.keep_alive, 0);
  /* Shorter than the limit and incomplete: wait for more. */
  big[300] = '\0';
  CHECK_EQ_INT(parse_max(big, 512, &req), MR_EAGAIN);
  /* Exactly max_head bytes, the last four being CRLFCRLF. */
  big[300] = 'a';
  memcpy(big + 508, "\r\n\r\n", 5);
  CHECK_EQ_INT(strlen(big), 512);
  CHECK_EQ_INT(parse_max(big, 512, &req), 0);
  CHECK_EQ_INT(req.status, 0);
  CHECK_EQ_INT(req.head_len, 512);
  CHECK_EQ_INT(mr_admin_parse(NULL, 0, 512, &req), MR_EAGAIN);
  CHECK_EQ_INT(mr_admin_parse(NULL, 1, 512, &req), MR_EINVAL);
}

static void test_response_head(void) {
  char out[512];
  int n = mr_admin_response_head(out, sizeof out, 200, "text/plain", 3, 1);
  CHECK_STR(out, "HTTP/1.1 200 OK\r\n"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: 3\r\n"
                 "Cache-Control: no-store\r\n"
                 "Connection: keep-alive\r\n"
                 "\r\n");
  CHECK_EQ_INT(n, strlen(out));
  mr_admin_response_head(out, sizeof out, 405, "text/plain", 19, 0);
  CHECK_STR(out, "HTTP/1.1 405 Method Not Allowed\r\n"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: 19\r\n"
                 "Cache-Control: no-store\r\n"
                 "Allow: GET, HEAD\r\n"
                 "Connection: close\r\n"
                 "\r\n");
  mr_admin_response_head(out, sizeof out, 503, "t", 0, 1);
  CHECK(strncmp(out, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
  mr_admin_response_head(out, sizeof out, 431, "t", 0, 0);
  CHECK(strncmp(out, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46) ==
        0);
  CHECK_EQ_INT(mr_admin_response_head(out, 20, 200, "text/plain", 3, 1),
               MR_ETOOBIG);
  CHECK_STR(mr_admin_status_text(404), "Not Found");
  CHECK_STR(mr_admin_status_text(400), "Bad Request");
  CHECK_STR(mr_admin_status_text(299), "Unknown");
}

int main(void) {
  test_get();
  test_every_split();
  test_keep_alive();
  test_routes();
  test_garbage();
  test_too_large();
  test_response_head();
  return test_report();
}
