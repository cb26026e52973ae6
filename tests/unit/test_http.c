/* Unit tests for core/http.c: the upgrade parser and the response builders. */
#include "error.h"
#include "http.h"
#include "test_util.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define MAX_HEAD 8192

/* The RFC 6455 1.3 example request, with a query and unrelated headers. */
static const char valid_req[] = "GET /chat?room=lobby&x=1 HTTP/1.1\r\n"
                                "Host: server.example.com\r\n"
                                "Upgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Key: " KEY "\r\n"
                                "Origin: http://example.com\r\n"
                                "Sec-WebSocket-Protocol: chat, superchat\r\n"
                                "Sec-WebSocket-Version: 13\r\n"
                                "User-Agent: test\r\n"
                                "\r\n";

/* Builds a request from a request line and the header lines between the
 * fixed Host line and the blank line; the result is static. */
static const char *req_with(const char *line, const char *headers) {
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s\r\nHost: h\r\n%s\r\n", line, headers);
  return buf;
}

#define UPGRADE_HEADERS                                                        \
  "Upgrade: websocket\r\nConnection: Upgrade\r\n"                              \
  "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n"

/* Parses s from an exactly sized heap copy, so that AddressSanitizer catches
 * any read past len. */
static int parse(const char *s, size_t len, size_t max_head,
                 mr_http_request *req) {
  char *copy = malloc(len ? len : 1);
  memcpy(copy, s, len);
  int rc = mr_http_parse_upgrade(copy, len, max_head, req);
  /* The pointers in req point into copy; only the scalar results are kept
   * by callers of this helper, so the copy can go. */
  free(copy);
  return rc;
}

static void expect_status(const char *s, int status, const char *reason,
                          int line) {
  mr_http_request req;
  int rc = parse(s, strlen(s), MAX_HEAD, &req);
  int ok = rc == 0 && !req.is_upgrade && req.status == status &&
           req.reason != NULL && (!reason || strcmp(req.reason, reason) == 0);
  if (!test_record(ok, __FILE__, line, "expected refusal"))
    fprintf(stderr, "  rc %d, is_upgrade %d, status %d (want %d), reason %s\n",
            rc, req.is_upgrade, req.status, status,
            req.reason ? req.reason : "(null)");
}
#define EXPECT_STATUS(s, status, reason)                                       \
  expect_status((s), (status), (reason), __LINE__)

static void test_accept_key(void) {
  char out[29];
  CHECK_EQ_INT(mr_http_accept_key(KEY, strlen(KEY), out), 0);
  CHECK_STR(out, ACCEPT);
}

static void test_valid_upgrade(void) {
  mr_http_request req;
  size_t len = strlen(valid_req);
  CHECK_EQ_INT(mr_http_parse_upgrade(valid_req, len, MAX_HEAD, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, 1);
  CHECK_EQ_INT(req.status, 0);
  CHECK_SPAN(req.path, req.path_len, "/chat");
  CHECK_SPAN(req.query, req.query_len, "room=lobby&x=1");
  CHECK_SPAN(req.key, req.key_len, KEY);
  CHECK_EQ_INT(req.head_len, len);
  CHECK_EQ_INT(req.nheaders, 8);
  const mr_http_header *h = mr_http_find_header(&req, "sec-websocket-protocol");
  CHECK(h != NULL);
  if (h)
    CHECK_SPAN(h->value, h->value_len, "chat, superchat");
  CHECK(mr_http_find_header(&req, "Cookie") == NULL);
}

static void test_trailing_bytes(void) {
  /* A client may send its first frame in the same segment as the head. */
  char buf[sizeof valid_req + 8];
  size_t hlen = strlen(valid_req);
  memcpy(buf, valid_req, hlen);
  memcpy(buf + hlen, "\x81\x85\x37\xfa\x21\x3d\x7f\x9f", 8);
  mr_http_request req;
  CHECK_EQ_INT(parse(buf, hlen + 8, MAX_HEAD, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, 1);
  CHECK_EQ_INT(req.head_len, hlen);

  /* Trailing bytes that look like HTTP must not be parsed either. */
  char buf2[sizeof valid_req * 2];
  memcpy(buf2, valid_req, hlen);
  memcpy(buf2 + hlen, "GARBAGE\r\n\r\n", 11);
  CHECK_EQ_INT(parse(buf2, hlen + 11, MAX_HEAD, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, 1);
  CHECK_EQ_INT(req.head_len, hlen);
}

/* Every proper prefix must ask for more, and the whole must match the
 * one-shot result, whatever the request's outcome. */
static void check_splits(const char *s, int want_upgrade, int want_status) {
  size_t len = strlen(s);
  mr_http_request req;
  int again = 0;
  for (size_t k = 0; k < len; k++)
    again += parse(s, k, MAX_HEAD, &req) == MR_EAGAIN;
  CHECK_EQ_INT(again, len);
  CHECK_EQ_INT(parse(s, len, MAX_HEAD, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, want_upgrade);
  CHECK_EQ_INT(req.status, want_status);
  CHECK_EQ_INT(req.head_len, len);
}

static void test_split_points(void) {
  check_splits(valid_req, 1, 0);
  check_splits(req_with("POST / HTTP/1.1", UPGRADE_HEADERS), 0, 405);
  check_splits(req_with("GET / HTTP/1.1", ""), 0, 404);
}

static void test_refusals(void) {
  EXPECT_STATUS(req_with("POST /chat HTTP/1.1", UPGRADE_HEADERS), 405,
                "WebSocket upgrade requires GET");
  EXPECT_STATUS(
      req_with("PUT /chat HTTP/1.1", "Sec-WebSocket-Key: " KEY "\r\n"), 405,
      NULL);
  EXPECT_STATUS(req_with("GET / HTTP/1.1", ""), 404, "not found");
  EXPECT_STATUS(req_with("POST /form HTTP/1.1", "Content-Length: 0\r\n"), 404,
                "not found");
  EXPECT_STATUS(req_with("GET /chat HTTP/1.0", UPGRADE_HEADERS), 400,
                "WebSocket upgrade requires HTTP/1.1 or later");

  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY
                         "\r\nSec-WebSocket-Version: 13\r\n"),
                400, "missing or invalid Upgrade header");
  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Upgrade: h2c\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: " KEY
                         "\r\nSec-WebSocket-Version: 13\r\n"),
                400, "missing or invalid Upgrade header");
  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Upgrade: websocketx\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: " KEY
                         "\r\nSec-WebSocket-Version: 13\r\n"),
                400, "missing or invalid Upgrade header");

  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Upgrade: websocket\r\nSec-WebSocket-Key: " KEY
                         "\r\nSec-WebSocket-Version: 13\r\n"),
                400, "missing or invalid Connection header");
  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Upgrade: websocket\r\nConnection: keep-alive\r\n"
                         "Sec-WebSocket-Key: " KEY
                         "\r\nSec-WebSocket-Version: 13\r\n"),
                400, "missing or invalid Connection header");
  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Upgrade: websocket\r\nConnection: upgraded\r\n"
                         "Sec-WebSocket-Key: " KEY
                         "\r\nSec-WebSocket-Version: 13\r\n"),
                400, "missing or invalid Connection header");

  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: " KEY "\r\n"),
                426, "missing Sec-WebSocket-Version");
  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: " KEY
                         "\r\nSec-WebSocket-Version: 8\r\n"),
                426, "unsupported Sec-WebSocket-Version");
  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: " KEY
                         "\r\nSec-WebSocket-Version: 13, 8\r\n"),
                426, "unsupported Sec-WebSocket-Version");

  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\n"),
                400, "missing Sec-WebSocket-Key");
  static const char *const bad_keys[] = {
      "",
      "dGhlIHNhbXBsZSBub25jZQ",     /* 16 bytes without padding */
      "dGhlIHNhbXBsZSBub25jZQ=",    /* short padding */
      "dGhlIHNhbXBsZSBub25jZ===",   /* 15 bytes, too much padding */
      "dGhlIHNhbXBs=SBub25jZQ==",   /* '=' inside the data */
      "dGhlIHNhbXBs*SBub25jZQ==",   /* not a base64 character */
      "dGhlIHNhbXBsZSBub25jZQAA",   /* 18 bytes */
      "AAAAAAAAAAAAAAAAAAAA",       /* 15 bytes */
      "dGhlIHNhbXBsZSBub25jZQ==AA", /* trailing data */
      "dGhlIHNhbXBs ZSBub25jZQ==",  /* inner whitespace */
  };
  for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
    char headers[512];
    snprintf(headers, sizeof headers,
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
             bad_keys[i]);
    EXPECT_STATUS(req_with("GET /chat HTTP/1.1", headers), 400,
                  "invalid Sec-WebSocket-Key");
  }
  /* Two keys would make the accept value ambiguous. */
  EXPECT_STATUS(req_with("GET /chat HTTP/1.1",
                         UPGRADE_HEADERS "Sec-WebSocket-Key: " KEY "\r\n"),
                400, "invalid Sec-WebSocket-Key");

  /* Malformed heads. */
  EXPECT_STATUS(req_with("GET /chat HTTP/1.1", "Bad Header\r\n"), 400,
                http_errno_description(HPE_INVALID_HEADER_TOKEN));
  EXPECT_STATUS("GARBAGE\r\n\r\n", 400, NULL);
  EXPECT_STATUS(req_with("GET http://h/chat HTTP/1.1", UPGRADE_HEADERS), 400,
                "request target must be an absolute path");
  EXPECT_STATUS("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, NULL);
  EXPECT_STATUS("GET /chat HTTP/1.1\nHost: h\r\n" UPGRADE_HEADERS "\r\n", 400,
                "bare LF in request head");
  EXPECT_STATUS(
      "GET /chat HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n" UPGRADE_HEADERS
      "\r\n",
      400, "obsolete line folding in request head");
}

static void test_size_limits(void) {
  mr_http_request req;
  size_t len = strlen(valid_req);

  /* No CRLFCRLF: wait while under the limit, refuse once at it. */
  char junk[100];
  memset(junk, 'a', sizeof junk);
  CHECK_EQ_INT(parse(junk, 99, 100, &req), MR_EAGAIN);
  CHECK_EQ_INT(parse(junk, 100, 100, &req), 0);
  CHECK_EQ_INT(req.status, 431);
  CHECK_EQ_INT(req.head_len, 0);
  CHECK_EQ_INT(parse(junk, 100, 10, &req), 0);
  CHECK_EQ_INT(req.status, 431);

  /* A complete head one byte over the limit, and one exactly at it. */
  CHECK_EQ_INT(parse(valid_req, len, len - 1, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, 0);
  CHECK_EQ_INT(req.status, 431);
  CHECK_EQ_INT(parse(valid_req, len, len, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, 1);

  /* Too many headers: 64 fit exactly, 65 do not. */
  char headers[4096] = UPGRADE_HEADERS;
  for (int i = 0; i < MR_HTTP_MAX_HEADERS - 5; i++) {
    size_t n = strlen(headers);
    snprintf(headers + n, sizeof headers - n, "X-%d: v\r\n", i);
  }
  const char *s = req_with("GET /chat HTTP/1.1", headers);
  CHECK_EQ_INT(parse(s, strlen(s), MAX_HEAD, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, 1);
  CHECK_EQ_INT(req.nheaders, MR_HTTP_MAX_HEADERS);
  strcat(headers, "X-last: v\r\n");
  EXPECT_STATUS(req_with("GET /chat HTTP/1.1", headers), 431,
                "too many header fields");
}

static void test_lenient_forms(void) {
  mr_http_request req;
  const char *s =
      req_with("GET / HTTP/1.1", "Upgrade: websocket\r\n"
                                 "Connection: keep-alive, Upgrade\r\n"
                                 "Sec-WebSocket-Key: " KEY "\r\n"
                                 "Sec-WebSocket-Version: 13\r\n");
  CHECK_EQ_INT(parse(s, strlen(s), MAX_HEAD, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, 1);

  /* Names are case-insensitive, token lists may hold several elements and
   * values carry surrounding whitespace that is not theirs. */
  char buf[1024];
  snprintf(buf, sizeof buf,
           "GET /p? HTTP/1.1\r\n"
           "host: h\r\n"
           "UPGRADE: foo, WebSocket\r\n"
           "connection: keep-alive\r\n"
           "CONNECTION:upgrade\r\n"
           "sec-websocket-key:  \t" KEY " \t\r\n"
           "sec-WEBSOCKET-version: 13 \r\n"
           "X-Empty:\r\n"
           "\r\n");
  CHECK_EQ_INT(mr_http_parse_upgrade(buf, strlen(buf), MAX_HEAD, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, 1);
  CHECK_SPAN(req.key, req.key_len, KEY);
  CHECK_SPAN(req.path, req.path_len, "/p");
  CHECK(req.query != NULL);
  CHECK_EQ_INT(req.query_len, 0);
  const mr_http_header *h = mr_http_find_header(&req, "x-empty");
  CHECK(h != NULL && h->value != NULL && h->value_len == 0);

  /* No '?' at all means no query. */
  s = req_with("GET /room/1 HTTP/1.1", UPGRADE_HEADERS);
  CHECK_EQ_INT(parse(s, strlen(s), MAX_HEAD, &req), 0);
  CHECK_EQ_INT(req.is_upgrade, 1);
  CHECK_EQ_INT(req.path_len, strlen("/room/1"));
  CHECK(req.query == NULL);

  CHECK_EQ_INT(mr_http_parse_upgrade(valid_req, 1, MAX_HEAD, NULL), MR_EINVAL);
}

static void test_build_101(void) {
  mr_http_request req;
  CHECK_EQ_INT(
      mr_http_parse_upgrade(valid_req, strlen(valid_req), MAX_HEAD, &req), 0);
  static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                             "\r\n";
  char out[256];
  int n = mr_http_build_101(&req, NULL, 0, NULL, out, sizeof out);
  CHECK_EQ_INT(n, strlen(want));
  CHECK_STR(out, want);
  CHECK_EQ_INT(mr_http_build_101(&req, NULL, 0, NULL, out, strlen(want) + 1),
               n);
  CHECK_EQ_INT(mr_http_build_101(&req, NULL, 0, NULL, out, strlen(want)),
               MR_ETOOBIG);
  CHECK_EQ_INT(mr_http_build_101(&req, NULL, 0, NULL, out, 10), MR_ETOOBIG);
  req.is_upgrade = 0;
  CHECK_EQ_INT(mr_http_build_101(&req, NULL, 0, NULL, out, sizeof out),
               MR_EINVAL);
}

/* Checks the status line, that Content-Length equals the body's length and
 * that the body is the reason plus a newline. */
static void check_error_response(const char *out, int n,
                                 const char *status_line, const char *reason) {
  CHECK(n > 0 && (size_t)n == strlen(out));
  CHECK(strncmp(out, status_line, strlen(status_line)) == 0);
  CHECK(strstr(out, "\r\nConnection: close\r\n") != NULL);
  const char *end = strstr(out, "\r\n\r\n");
  const char *cl = strstr(out, "\r\nContent-Length: ");
  if (!CHECK(end != NULL && cl != NULL && cl < end))
    return;
  const char *body = end + 4;
  CHECK_EQ_INT(strtoul(cl + 18, NULL, 10), strlen(body));
  CHECK_EQ_INT(strlen(body), strlen(reason) + 1);
  CHECK(strncmp(body, reason, strlen(reason)) == 0);
  CHECK_EQ_INT(body[strlen(body) - 1], '\n');
}

static void test_build_error(void) {
  char out[512];
  int n = mr_http_build_error(426, "unsupported Sec-WebSocket-Version", NULL,
                              out, sizeof out);
  check_error_response(out, n, "HTTP/1.1 426 Upgrade Required\r\n",
                       "unsupported Sec-WebSocket-Version");
  CHECK(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);

  n = mr_http_build_error(405, "WebSocket upgrade requires GET", NULL, out,
                          sizeof out);
  check_error_response(out, n, "HTTP/1.1 405 Method Not Allowed\r\n",
                       "WebSocket upgrade requires GET");
  CHECK(strstr(out, "\r\nAllow: GET\r\n") != NULL);

  static const struct {
    int status;
    const char *line;
  } cases[] = {
      {400, "HTTP/1.1 400 Bad Request\r\n"},
      {403, "HTTP/1.1 403 Forbidden\r\n"},
      {404, "HTTP/1.1 404 Not Found\r\n"},
      {431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"},
      {500, "HTTP/1.1 500 Internal Server Error\r\n"},
      {503, "HTTP/1.1 503 Service Unavailable\r\n"},
      {418, "HTTP/1.1 418 "},
      {502, "HTTP/1.1 502 "},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    n = mr_http_build_error(cases[i].status, "why", NULL, out, sizeof out);
    check_error_response(out, n, cases[i].line, "why");
    CHECK(strstr(out, "Sec-WebSocket-Version") == NULL);
    CHECK(strstr(out, "Allow:") == NULL);
  }

  /* A NULL reason falls back to the status text. */
  n = mr_http_build_error(404, NULL, NULL, out, sizeof out);
  check_error_response(out, n, "HTTP/1.1 404 Not Found\r\n", "Not Found");

  n = mr_http_build_error(400, "x", NULL, out, sizeof out);
  CHECK_EQ_INT(mr_http_build_error(400, "x", NULL, out, (size_t)n + 1), n);
  CHECK_EQ_INT(mr_http_build_error(400, "x", NULL, out, (size_t)n), MR_ETOOBIG);
  CHECK_EQ_INT(mr_http_build_error(400, "x", NULL, out, 8), MR_ETOOBIG);
  CHECK_EQ_INT(mr_http_build_error(400, "x", NULL, NULL, 0), MR_ETOOBIG);
  CHECK_EQ_INT(mr_http_build_error(200, "x", NULL, out, sizeof out), MR_EINVAL);
}

/* Collects the list elements of header name in s, joined with '|'. */
static const char *list_of(const char *s, const char *name) {
  static char out[512];
  mr_http_request req;
  out[0] = '\0';
  if (!CHECK(mr_http_parse_upgrade(s, strlen(s), MAX_HEAD, &req) == 0))
    return out;
  mr_http_list_iter it;
  mr_http_list_init(&it, &req, name);
  const char *e;
  size_t len, n = 0;
  while (mr_http_list_next(&it, &e, &len)) {
    CHECK(e >= s && e + len <= s + strlen(s)); /* points into the request */
    n += (size_t)snprintf(out + n, sizeof out - n, "%s%.*s", n ? "|" : "",
                          (int)len, e);
  }
  CHECK(!mr_http_list_next(&it, &e, &len)); /* stays at the end */
  return out;
}

static void test_protocol_list(void) {
  CHECK_STR(list_of(valid_req, "Sec-WebSocket-Protocol"), "chat|superchat");
  /* Repeated lines keep their order; whitespace and empty elements go; the
   * name is case-insensitive; other headers in between do not matter. */
  const char *s = req_with("GET / HTTP/1.1", UPGRADE_HEADERS
                           "sec-websocket-protocol:  a ,b,,\t c\t\r\n"
                           "X-Other: x, y\r\n"
                           "SEC-WEBSOCKET-PROTOCOL: ,\r\n"
                           "Sec-WebSocket-Protocol: graphql-ws\r\n");
  CHECK_STR(list_of(s, "Sec-WebSocket-Protocol"), "a|b|c|graphql-ws");
  CHECK_STR(list_of(s, "X-Other"), "x|y");
  /* None offered: an empty walk. */
  s = req_with("GET / HTTP/1.1", UPGRADE_HEADERS);
  CHECK_STR(list_of(s, "Sec-WebSocket-Protocol"), "");
  s = req_with("GET / HTTP/1.1", UPGRADE_HEADERS "Sec-WebSocket-Protocol:\r\n");
  CHECK_STR(list_of(s, "Sec-WebSocket-Protocol"), "");
}

/* Checks mr_http_check_header's verdict on a name and a value given as
 * string literals (their sizes count embedded NULs); want NULL: allowed. */
static void check_header(const char *name, size_t nlen, const char *value,
                         size_t vlen, const char *want, int line) {
  const char *why = mr_http_check_header(name, nlen, value, vlen);
  int ok = want ? why != NULL && strcmp(why, want) == 0 : why == NULL;
  if (!test_record(ok, __FILE__, line, "mr_http_check_header"))
    fprintf(stderr, "  %s: got %s\n", name, why ? why : "(allowed)");
}
#define CHECK_HEADER(name, value, want)                                        \
  check_header((name), sizeof(name) - 1, (value), sizeof(value) - 1, (want),   \
               __LINE__)

static void test_check_header(void) {
  static const char *const own = "the server sets this header itself";
  static const char *const hop = "it is a hop-by-hop header";
  CHECK_HEADER("X-Server", "a", NULL);
  CHECK_HEADER("WWW-Authenticate", "Bearer realm=\"x\", error=\"t\"", NULL);
  CHECK_HEADER("Set-Cookie", "sid=1; HttpOnly", NULL);
  CHECK_HEADER("x!#$%&'*+-.^_`|~9", "tab\tand UTF-8 \xc3\xa9", NULL);
  CHECK_HEADER("Retry-After", "", NULL);
  CHECK_HEADER("", "x", "the name is empty");
  CHECK_HEADER("X Server", "x", "the name is not an HTTP token");
  CHECK_HEADER("X-A:", "x", "the name is not an HTTP token");
  CHECK_HEADER("X-A\r\nEvil", "x", "the name is not an HTTP token");
  CHECK_HEADER("X-\xc3\xa9", "x", "the name is not an HTTP token");
  CHECK_HEADER("X-A", "a\r\nSet-Cookie: evil=1", "the value contains CR or LF");
  CHECK_HEADER("X-A", "a\nb", "the value contains CR or LF");
  CHECK_HEADER("X-A", "a\rb", "the value contains CR or LF");
  CHECK_HEADER("X-A", "a\0b", "the value contains NUL");
  CHECK_HEADER("X-A", "a\x01", "the value contains a control character");
  CHECK_HEADER("X-A", "a\x7f", "the value contains a control character");
  CHECK_HEADER("upgrade", "h2c", own);
  CHECK_HEADER("Connection", "close", own);
  CHECK_HEADER("Sec-WebSocket-Protocol", "x", own);
  CHECK_HEADER("sec-websocket-accept", "x", own);
  CHECK_HEADER("Sec-WebSocket-Extensions", "x", own);
  CHECK_HEADER("Content-Length", "0", own);
  CHECK_HEADER("content-type", "application/json", own);
  CHECK_HEADER("Transfer-Encoding", "chunked", own);
  CHECK_HEADER("Keep-Alive", "timeout=5", hop);
  CHECK_HEADER("TE", "trailers", hop);
  CHECK_HEADER("Trailer", "X", hop);
  CHECK_HEADER("Proxy-Authenticate", "Basic", hop);
  CHECK_HEADER("proxy-connection", "x", hop);
  /* Names that only start like a forbidden one are the application's. */
  CHECK_HEADER("Upgraded-By", "x", NULL);
  CHECK_HEADER("Sec-WebSocketish", "x", NULL);
  CHECK_HEADER("Tea", "x", NULL);
}

static void test_build_101_extras(void) {
  mr_http_request req;
  CHECK_EQ_INT(
      mr_http_parse_upgrade(valid_req, strlen(valid_req), MAX_HEAD, &req), 0);
  static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                             "Sec-WebSocket-Protocol: superchat\r\n"
                             "Set-Cookie: a=1\r\n"
                             "X-Server: a\r\n"
                             "\r\n";
  /* The protocol is a span (it points into the request) and need not end
   * in a NUL. */
  const char *proto = strstr(valid_req, "superchat");
  const char *hdrs = "Set-Cookie: a=1\r\nX-Server: a\r\n";
  char out[512];
  int n = mr_http_build_101(&req, proto, 9, hdrs, out, sizeof out);
  CHECK_EQ_INT(n, strlen(want));
  CHECK_STR(out, want);
  CHECK_EQ_INT(mr_http_build_101(&req, proto, 9, hdrs, out, strlen(want) + 1),
               n);
  CHECK_EQ_INT(mr_http_build_101(&req, proto, 9, hdrs, out, strlen(want)),
               MR_ETOOBIG);

  /* Each alone; an empty block is no headers. */
  n = mr_http_build_101(&req, proto, 4, "", out, sizeof out);
  CHECK(n > 0 && strstr(out, "\r\nSec-WebSocket-Protocol: supe\r\n\r\n"));
  n = mr_http_build_101(&req, NULL, 0, "X-A: 1\r\n", out, sizeof out);
  CHECK(n > 0 && strstr(out, "Accept: " ACCEPT "\r\nX-A: 1\r\n\r\n"));
  CHECK(strstr(out, "Sec-WebSocket-Protocol") == NULL);

  /* Whatever could split the head is refused, whoever made it. */
  static const char *const bad_headers[] = {
      "X-A: 1",     "X-A: 1\r\nX-B",  "X-A 1\r\n",
      "X-A:1\r\n",  "X-A: a\nb\r\n",  "Upgrade: h2c\r\n",
      "X A: 1\r\n", "X-A: a\rb\r\n",  "Content-Length: 0\r\n",
      ": 1\r\n",    "X-A: 1\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
    if (!CHECK(mr_http_build_101(&req, NULL, 0, bad_headers[i], out,
                                 sizeof out) == MR_EINVAL))
      fprintf(stderr, "  accepted \"%s\"\n", bad_headers[i]);
    CHECK(mr_http_build_error(403, "no", bad_headers[i], out, sizeof out) ==
          MR_EINVAL);
  }
  CHECK_EQ_INT(mr_http_build_101(&req, "a\r\nb", 4, NULL, out, sizeof out),
               MR_EINVAL);
  CHECK_EQ_INT(mr_http_build_101(&req, "a b", 3, NULL, out, sizeof out),
               MR_EINVAL);
  CHECK_EQ_INT(mr_http_build_101(&req, "a,b", 3, NULL, out, sizeof out),
               MR_EINVAL);
  CHECK_EQ_INT(mr_http_build_101(&req, "", 0, NULL, out, sizeof out),
               MR_EINVAL);
}

static void test_build_error_extras(void) {
  char out[512];
  int n = mr_http_build_error(401, "token required",
                              "WWW-Authenticate: Bearer\r\n", out, sizeof out);
  CHECK_STR(out, "HTTP/1.1 401 Client Error\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: 15\r\n"
                 "Connection: close\r\n"
                 "WWW-Authenticate: Bearer\r\n"
                 "\r\n"
                 "token required\n");
  check_error_response(out, n, "HTTP/1.1 401 ", "token required");
  /* After the server's own extras for 426. */
  n = mr_http_build_error(426, "v", "X-A: 1\r\n", out, sizeof out);
  check_error_response(out, n, "HTTP/1.1 426 Upgrade Required\r\n", "v");
  CHECK(strstr(out, "\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n") != NULL);
  n = mr_http_build_error(401, "x", "", out, sizeof out);
  check_error_response(out, n, "HTTP/1.1 401 ", "x");
}

/* A plain request's method, version and keep-alive, which on_http and the
 * exchange read from the same parse. */
static void test_plain_request_fields(void) {
  static const struct {
    const char *req;
    const char *method;
    int minor, keep_alive;
  } cases[] = {
      {"GET / HTTP/1.1\r\n\r\n", "GET", 1, 1},
      {"POST / HTTP/1.1\r\nConnection: close\r\n\r\n", "POST", 1, 0},
      {"PUT / HTTP/1.0\r\n\r\n", "PUT", 0, 0},
      {"DELETE / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "DELETE", 0, 1},
      {"HEAD / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", "HEAD", 1, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    mr_http_request req;
    CHECK_EQ_INT(mr_http_parse_upgrade(cases[i].req, strlen(cases[i].req),
                                       MAX_HEAD, &req),
                 0);
    CHECK_EQ_INT(req.status, 404);
    CHECK_STR(req.method, cases[i].method);
    CHECK_EQ_INT(req.http_minor, cases[i].minor);
    CHECK_EQ_INT(req.keep_alive, cases[i].keep_alive);
  }
}

static void test_build_response(void) {
  char out[1024];
  int n = mr_http_build_response(200, NULL, NULL, 5, 0, 0, out, sizeof out);
  CHECK_STR(out, "HTTP/1.1 200 OK\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: 5\r\n"
                 "\r\n");
  CHECK_EQ_INT(n, (int)strlen(out));
  mr_http_build_response(202, "application/json", "X-A: 1\r\nX-B: 2\r\n", 0, 1,
                         0, out, sizeof out);
  CHECK_STR(out, "HTTP/1.1 202 Accepted\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: 0\r\n"
                 "Connection: close\r\n"
                 "X-A: 1\r\nX-B: 2\r\n"
                 "\r\n");
  mr_http_build_response(404, "", "", 3, 0, 1, out, sizeof out);
  CHECK_STR(out, "HTTP/1.1 404 Not Found\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: 3\r\n"
                 "Connection: keep-alive\r\n"
                 "\r\n");
  /* 204 and 304 carry no body, so no length either. */
  mr_http_build_response(204, NULL, NULL, 0, 0, 0, out, sizeof out);
  CHECK(strstr(out, "Content-Length") == NULL);
  mr_http_build_response(304, NULL, NULL, 0, 0, 0, out, sizeof out);
  CHECK(strstr(out, "Content-Length") == NULL);
  mr_http_build_response(299, NULL, NULL, 0, 0, 0, out, sizeof out);
  CHECK(strstr(out, "HTTP/1.1 299 Success\r\n") == out);
  mr_http_build_response(599, NULL, NULL, 0, 0, 0, out, sizeof out);
  CHECK(strstr(out, "HTTP/1.1 599 Server Error\r\n") == out);
  /* Interim and out-of-range statuses, and anything that would split the
   * head, are refused. */
  CHECK_EQ_INT(mr_http_build_response(101, NULL, NULL, 0, 0, 0, out, 1024),
               MR_EINVAL);
  CHECK_EQ_INT(mr_http_build_response(100, NULL, NULL, 0, 0, 0, out, 1024),
               MR_EINVAL);
  CHECK_EQ_INT(mr_http_build_response(600, NULL, NULL, 0, 0, 0, out, 1024),
               MR_EINVAL);
  CHECK_EQ_INT(
      mr_http_build_response(200, "a\r\nX: y", NULL, 0, 0, 0, out, 1024),
      MR_EINVAL);
  CHECK_EQ_INT(mr_http_build_response(200, NULL, "Content-Length: 1\r\n", 0, 0,
                                      0, out, 1024),
               MR_EINVAL);
  CHECK_EQ_INT(mr_http_build_response(200, NULL, "X-A: 1", 0, 0, 0, out, 1024),
               MR_EINVAL);
  CHECK_EQ_INT(mr_http_build_response(200, NULL, NULL, 0, 0, 0, out, 40),
               MR_ETOOBIG);
}

static void test_check_value(void) {
  CHECK(mr_http_check_value("text/html; charset=utf-8", 24) == NULL);
  CHECK(mr_http_check_value("a\tb", 3) == NULL);
  CHECK_STR(mr_http_check_value("a\rb", 3), "the value contains CR or LF");
  CHECK_STR(mr_http_check_value("a\0b", 3), "the value contains NUL");
  CHECK_STR(mr_http_check_value("a\x7f", 2),
            "the value contains a control character");
}

int main(void) {
  test_accept_key();
  test_valid_upgrade();
  test_trailing_bytes();
  test_split_points();
  test_refusals();
  test_size_limits();
  test_lenient_forms();
  test_build_101();
  test_build_error();
  test_protocol_list();
  test_check_header();
  test_build_101_extras();
  test_build_error_extras();
  test_plain_request_fields();
  test_build_response();
  test_check_value();
  return test_report();
}
