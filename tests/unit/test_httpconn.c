/* Unit tests for core/httpconn.c: plain HTTP requests cut from a byte
 * stream (heads, Content-Length and chunked bodies, pipelining), the limits,
 * and the responses queued. Every request is also fed split at every byte,
 * as wslay's parsers are tested, so the result cannot depend on how the
 * bytes arrived. */
#include "error.h"
#include "httpconn.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static const mr_httpx_limits lim = {8192, 64};

/* Feeds s split at split (the whole of it when split >= len) and runs
 * mr_httpx_next after each part, as the connection does after each read.
 * Returns the last result. */
static int feed_split(mr_httpx *x, const char *s, size_t len, size_t split,
                      const mr_httpx_limits *l, int *status,
                      const char **reason) {
  int r = MR_HTTPX_AGAIN;
  if (split > len)
    split = len;
  if (split > 0) {
    mr_httpx_feed(x, s, split);
    r = mr_httpx_next(x, l, status, reason);
    if (r == MR_HTTPX_CONTINUE)
      r = mr_httpx_next(x, l, status, reason);
    if (r != MR_HTTPX_AGAIN || split == len)
      return r;
  }
  mr_httpx_feed(x, s + split, len - split);
  r = mr_httpx_next(x, l, status, reason);
  if (r == MR_HTTPX_CONTINUE)
    r = mr_httpx_next(x, l, status, reason);
  return r;
}

/* A request that must parse to method, path and body whatever the split. */
static void check_request(const char *s, const char *method, const char *path,
                          const char *body, int keep_alive, int line) {
  size_t len = strlen(s);
  for (size_t split = 0; split <= len; split++) {
    mr_httpx x;
    mr_httpx_init(&x);
    int status = 0;
    const char *reason = NULL;
    int r = feed_split(&x, s, len, split, &lim, &status, &reason);
    int ok = r == MR_HTTPX_REQUEST && strcmp(x.req.method, method) == 0 &&
             x.req.path_len == strlen(path) &&
             memcmp(x.req.path, path, x.req.path_len) == 0 &&
             x.body_len == strlen(body) &&
             (!x.body_len || memcmp(x.body, body, x.body_len) == 0) &&
             x.keep_alive == keep_alive;
    if (!test_record(ok, __FILE__, line, "request parsed at every split")) {
      fprintf(stderr, "  split %zu: r %d status %d (%s) body %.*s\n", split, r,
              status, reason ? reason : "", (int)x.body_len,
              x.body ? x.body : "");
      mr_httpx_free(&x);
      return;
    }
    mr_httpx_done(&x);
    CHECK_EQ_INT(x.len, 0);
    mr_httpx_free(&x);
  }
}

/* A request that must be refused with status whatever the split. */
static void check_refused(const char *s, const mr_httpx_limits *l, int want,
                          int line) {
  size_t len = strlen(s);
  for (size_t split = 0; split <= len; split++) {
    mr_httpx x;
    mr_httpx_init(&x);
    int status = 0;
    const char *reason = NULL;
    int r = feed_split(&x, s, len, split, l, &status, &reason);
    int ok = r == MR_HTTPX_REFUSE && status == want && reason && *reason;
    mr_httpx_free(&x);
    if (!test_record(ok, __FILE__, line, "request refused at every split")) {
      fprintf(stderr, "  split %zu: r %d status %d (want %d)\n", split, r,
              status, want);
      return;
    }
  }
}

static void test_requests(void) {
  check_request("GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", "GET", "/a", "", 1,
                __LINE__);
  check_request("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
                "POST", "/p", "hello", 1, __LINE__);
  check_request("PUT /p HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "PUT", "/p", "",
                1, __LINE__);
  check_request("DELETE /d HTTP/1.1\r\nConnection: close\r\n\r\n", "DELETE",
                "/d", "", 0, __LINE__);
  check_request("HEAD /h HTTP/1.0\r\n\r\n", "HEAD", "/h", "", 0, __LINE__);
  check_request("GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET",
                "/k", "", 1, __LINE__);
  /* Chunked, with an extension, a chunk of size 0x10 and a trailer. */
  check_request("POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n"
                "X-Trailer: t\r\n\r\n",
                "POST", "/c", "abc0123456789abcdef", 1, __LINE__);
  check_request("POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "0\r\n\r\n",
                "POST", "/e", "", 1, __LINE__);
}

static void test_refusals(void) {
  /* Over max_body (64): judged from Content-Length before the body... */
  check_refused("POST /p HTTP/1.1\r\nContent-Length: 65\r\n\r\n", &lim, 413,
                __LINE__);
  /* ...and while a chunked body arrives. */
  char big[512];
  snprintf(big, sizeof big,
           "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           "20\r\n%s\r\n21\r\n%s1\r\n0\r\n\r\n",
           "0123456789abcdef0123456789abcdef",
           "0123456789abcdef0123456789abcdef");
  check_refused(big, &lim, 413, __LINE__);
  check_refused("POST /p HTTP/1.1\r\nExpect: coffee\r\nContent-Length: 1\r\n"
                "\r\nx",
                &lim, 417, __LINE__);
  check_refused("POST /p HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: "
                "chunked\r\n\r\n",
                &lim, 400, __LINE__);
  check_refused("POST /p HTTP/1.1\r\nContent-Length: x\r\n\r\n", &lim, 400,
                __LINE__);
  check_refused("POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                &lim, 400, __LINE__);
  check_refused("BREW /p HTTP/1.1\r\n\r\n", &lim, 400, __LINE__);
  check_refused("GET http://x/p HTTP/1.1\r\n\r\n", &lim, 400, __LINE__);
  check_refused("GET /p HTTP/1.1\nHost: h\r\n\r\n", &lim, 400, __LINE__);
  /* An upgrade attempt that cannot succeed keeps its own status. */
  check_refused("POST /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", &lim, 405,
                __LINE__);
  mr_httpx_limits small = {256, 64};
  char head[600];
  snprintf(head, sizeof head, "GET / HTTP/1.1\r\nX-Big: %0300d\r\n\r\n", 0);
  check_refused(head, &small, 431, __LINE__);
}

static void test_pipelining(void) {
  const char *s = "GET /1 HTTP/1.1\r\n\r\n"
                  "POST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                  "POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "2\r\nde\r\n0\r\n\r\n"
                  "GET /4 HTTP/1.1\r\nConnection: close\r\n\r\n"
                  "GET /5";
  const char *paths[] = {"/1", "/2", "/3", "/4"};
  const char *bodies[] = {"", "abc", "de", ""};
  mr_httpx x;
  mr_httpx_init(&x);
  int status;
  const char *reason;
  mr_httpx_feed(&x, s, strlen(s));
  for (int i = 0; i < 4; i++) {
    CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_REQUEST);
    CHECK_SPAN(x.req.path, x.req.path_len, paths[i]);
    if (*bodies[i])
      CHECK_SPAN(x.body, x.body_len, bodies[i]);
    else
      CHECK_EQ_INT(x.body_len, 0);
    CHECK_EQ_INT(x.keep_alive, i < 3);
    mr_httpx_done(&x);
  }
  /* The start of a fifth request waits for the rest of it. */
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_AGAIN);
  CHECK(mr_httpx_partial(&x));
  mr_httpx_feed(&x, " HTTP/1.1\r\n\r\n", 13);
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_REQUEST);
  CHECK_SPAN(x.req.path, x.req.path_len, "/5");
  mr_httpx_done(&x);
  CHECK(!mr_httpx_partial(&x));
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_AGAIN);
  mr_httpx_free(&x);
}

static void test_upgrade_after_requests(void) {
  const char *s = "GET /1 HTTP/1.1\r\n\r\n"
                  "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n";
  mr_httpx x;
  mr_httpx_init(&x);
  int status;
  const char *reason;
  mr_httpx_feed(&x, s, strlen(s));
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_REQUEST);
  mr_httpx_done(&x);
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_UPGRADE);
  CHECK(x.len == strlen(s) - 19 && memcmp(x.buf, "GET /ws", 7) == 0);
  mr_httpx_free(&x);
}

static void test_expect_continue(void) {
  mr_httpx x;
  mr_httpx_init(&x);
  int status;
  const char *reason;
  const char *head = "POST /p HTTP/1.1\r\nExpect: 100-continue\r\n"
                     "Content-Length: 2\r\n\r\n";
  mr_httpx_feed(&x, head, strlen(head));
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_CONTINUE);
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_AGAIN);
  mr_httpx_feed(&x, "ok", 2);
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_REQUEST);
  CHECK_SPAN(x.body, x.body_len, "ok");
  mr_httpx_free(&x);

  /* The body already came with the head: nothing to continue. */
  mr_httpx_init(&x);
  mr_httpx_feed(&x, head, strlen(head));
  mr_httpx_feed(&x, "ok", 2);
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_REQUEST);
  mr_httpx_free(&x);

  /* Too large: 413 rather than an invitation to send it. */
  mr_httpx_init(&x);
  const char *big = "POST /p HTTP/1.1\r\nExpect: 100-continue\r\n"
                    "Content-Length: 100\r\n\r\n";
  mr_httpx_feed(&x, big, strlen(big));
  CHECK_EQ_INT(mr_httpx_next(&x, &lim, &status, &reason), MR_HTTPX_REFUSE);
  CHECK_EQ_INT(status, 413);
  mr_httpx_free(&x);
}

/* Everything queued on q, concatenated into out (NUL-terminated). */
static size_t drain(mr_outq *q, char *out, size_t cap) {
  const uint8_t *p[8];
  size_t l[8], n = mr_outq_peek(q, p, l, 8), off = 0;
  for (size_t i = 0; i < n && off + l[i] < cap; i++) {
    memcpy(out + off, p[i], l[i]);
    off += l[i];
  }
  out[off] = '\0';
  mr_outq_clear(q);
  return off;
}

static mr_buf *text_buf(const char *s) {
  mr_buf *b = mr_buf_new(strlen(s));
  memcpy(b->data, s, strlen(s));
  return b;
}

/* Answers the single request in s with status and body; returns
 * mr_httpx_respond's result and the bytes queued in out. */
static int respond(const char *s, int status, const char *body, int keep,
                   char *out, size_t cap) {
  mr_httpx x;
  mr_httpx_init(&x);
  int st;
  const char *reason;
  mr_httpx_feed(&x, s, strlen(s));
  if (mr_httpx_next(&x, &lim, &st, &reason) != MR_HTTPX_REQUEST) {
    mr_httpx_free(&x);
    return -1000;
  }
  mr_http_answer ans;
  mr_http_answer_init(&ans);
  ans.status = status;
  ans.body = body ? text_buf(body) : NULL;
  mr_outq q;
  memset(&q, 0, sizeof q);
  int r = mr_httpx_respond(&x, &ans, keep, &q);
  CHECK(ans.body == NULL);
  drain(&q, out, cap);
  mr_outq_clear(&q);
  mr_httpx_free(&x);
  return r;
}

static void test_respond(void) {
  char out[1024];
  CHECK_EQ_INT(respond("GET / HTTP/1.1\r\n\r\n", 200, "hi", 1, out, sizeof out),
               1);
  CHECK_STR(out, "HTTP/1.1 200 OK\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: 2\r\n"
                 "\r\n"
                 "hi");
  /* HEAD: the same head, no body. */
  CHECK_EQ_INT(
      respond("HEAD / HTTP/1.1\r\n\r\n", 200, "hi", 1, out, sizeof out), 1);
  CHECK_STR(out, "HTTP/1.1 200 OK\r\n"
                 "Content-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: 2\r\n"
                 "\r\n");
  /* The client's Connection: close, or the server's (shutting down). */
  CHECK_EQ_INT(respond("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 404, NULL,
                       1, out, sizeof out),
               0);
  CHECK(strstr(out, "Content-Length: 0\r\nConnection: close\r\n\r\n") != NULL);
  CHECK_EQ_INT(respond("GET / HTTP/1.1\r\n\r\n", 200, NULL, 0, out, sizeof out),
               0);
  CHECK(strstr(out, "Connection: close\r\n") != NULL);
  /* HTTP/1.0 keep-alive is said out loud; plain HTTP/1.0 closes. */
  CHECK_EQ_INT(respond("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200,
                       NULL, 1, out, sizeof out),
               1);
  CHECK(strstr(out, "Connection: keep-alive\r\n") != NULL);
  CHECK_EQ_INT(respond("GET / HTTP/1.0\r\n\r\n", 200, NULL, 1, out, sizeof out),
               0);
  /* A status the builder refuses queues nothing. */
  CHECK_EQ_INT(respond("GET / HTTP/1.1\r\n\r\n", 101, "x", 1, out, sizeof out),
               MR_EINVAL);
  CHECK_STR(out, "");
}

static void test_continue_bytes(void) {
  mr_outq q;
  memset(&q, 0, sizeof q);
  char out[64];
  CHECK_EQ_INT(mr_httpx_continue(&q), 0);
  drain(&q, out, sizeof out);
  CHECK_STR(out, "HTTP/1.1 100 Continue\r\n\r\n");
  mr_outq_clear(&q);
}

int main(void) {
  test_requests();
  test_refusals();
  test_pipelining();
  test_upgrade_after_requests();
  test_expect_continue();
  test_respond();
  test_continue_bytes();
  return test_report();
}
