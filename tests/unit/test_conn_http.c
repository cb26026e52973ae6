/* Plain HTTP on a connection (conn.c with httpconn.c) over virtual
 * connections: on_http's answers, keep-alive and pipelining, closing, the
 * request and keep-alive timeouts, refusals, handler errors, an upgrade
 * after plain requests, and 404 as before for a script without on_http. */
#include "log_capture.h"
#include "virtual_server.h"

static harness h;
static uint8_t out[65536];

/* A new virtual connection fed s; returns its id. */
static uint64_t request(const char *s) {
  mr_conn *c = mr_conn_new_virtual(h.srv);
  if (!CHECK(c != NULL))
    return 0;
  uint64_t id = c->id;
  feed(&h, c, s, strlen(s));
  return id;
}

/* Takes what is queued for id as a NUL-terminated string. */
static const char *taken(uint64_t id) {
  size_t n = take(&h, id, out, sizeof out - 1);
  out[n] = '\0';
  return (const char *)out;
}

static void test_answer_and_close(void) {
  uint64_t id = request("POST /p?x=1 HTTP/1.1\r\nHost: h\r\n"
                        "Content-Length: 5\r\nConnection: close\r\n\r\nhello");
  CHECK_STR(taken(id), "HTTP/1.1 200 OK\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Content-Length: 13\r\n"
                       "Connection: close\r\n"
                       "\r\n"
                       "POST /p hello");
  /* Connection: close: gone once the answer was written. */
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->stats.http_requests, 1);
}

static void test_keep_alive_pipelining(void) {
  uint64_t before = h.srv->stats.http_requests;
  uint64_t id = request("GET /1 HTTP/1.1\r\n\r\n"
                        "PUT /2 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
                        "DELETE /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                        "\r\n1\r\ny\r\n0\r\n\r\n"
                        "HEAD /4 HTTP/1.1\r\n\r\n");
  const char *s = taken(id);
  const char *a = strstr(s, "GET /1 ");
  const char *b = strstr(s, "PUT /2 x");
  const char *c = strstr(s, "DELETE /3 y");
  CHECK(a && b && c && a < b && b < c);
  CHECK(strstr(s, "HEAD /4") == NULL); /* HEAD: no body */
  CHECK(strstr(s, "Connection: close") == NULL);
  CHECK_EQ_INT(h.srv->stats.http_requests - before, 4);
  mr_conn *conn = mr_conn_find(h.srv, id);
  CHECK(conn && conn->state == MR_CONN_HTTP);
  /* Another request on the same connection. */
  feed(&h, conn, "GET /5 HTTP/1.1\r\n\r\n", 19);
  CHECK(strstr(taken(id), "GET /5 ") != NULL);
  /* Idle past --keepalive-timeout: closed quietly. */
  conn = mr_conn_find(h.srv, id);
  uint64_t idle = h.srv->stats.http_idle_closes;
  mr_conn_sweep(conn, conn->deadline - 1);
  CHECK(mr_conn_find(h.srv, id) != NULL);
  mr_conn_sweep(conn, conn->deadline);
  mr_server_flush(h.srv);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->stats.http_idle_closes - idle, 1);
}

static void test_request_timeout(void) {
  uint64_t refused = h.srv->stats.http_refused;
  uint64_t id = request("POST /slow HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
  CHECK_STR(taken(id), "");
  mr_conn *c = mr_conn_find(h.srv, id);
  /* The request's time counts from the accept: --request-timeout 3. */
  uint64_t due = uv_now(&h.loop) + 3000;
  CHECK_EQ_INT(c->deadline, due);
  mr_conn_sweep(c, due - 1);
  CHECK_STR(taken(id), "");
  capture_begin();
  mr_conn_sweep(c, due);
  const char *log = capture_end();
  CHECK(strstr(log, "http refused 408: request not complete within "
                    "--request-timeout") != NULL);
  CHECK(strstr(taken(id), "HTTP/1.1 408 Request Timeout\r\n") != NULL);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->stats.http_refused - refused, 1);
}

static void test_refusals(void) {
  static const struct {
    const char *req;
    const char *status;
  } cases[] = {
      {"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n",
       "413 Content Too Large"},
      {"POST / HTTP/1.1\r\nExpect: tea\r\nContent-Length: 1\r\n\r\n",
       "417 Expectation Failed"},
      {"GET / HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n", "400 Bad Request"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint64_t refused = h.srv->stats.http_refused;
    capture_begin();
    uint64_t id = request(cases[i].req);
    const char *log = capture_end();
    CHECK(strstr(log, "http refused") != NULL);
    const char *s = taken(id);
    /* A refusal ends the connection (after any answers before it). */
    CHECK(strstr(s, cases[i].status) != NULL);
    CHECK(strstr(s, "Connection: close") != NULL);
    CHECK(mr_conn_find(h.srv, id) == NULL);
    CHECK_EQ_INT(h.srv->stats.http_refused - refused, 1);
  }
}

static void test_expect_continue(void) {
  uint64_t id = request("POST /e HTTP/1.1\r\nExpect: 100-continue\r\n"
                        "Content-Length: 2\r\n\r\n");
  CHECK_STR(taken(id), "HTTP/1.1 100 Continue\r\n\r\n");
  feed(&h, mr_conn_find(h.srv, id), "ok", 2);
  CHECK(strstr(taken(id), "POST /e ok") != NULL);
}

static void test_handler_errors(void) {
  uint64_t errors = h.srv->stats.handler_errors;
  uint64_t http_errors = h.srv->stats.http_errors;
  capture_begin();
  uint64_t id = request("GET /boom HTTP/1.1\r\n\r\nGET /wrong HTTP/1.1\r\n\r\n"
                        "GET /after HTTP/1.1\r\n\r\n");
  const char *log = capture_end();
  /* Logged through the gate with the script and the line. */
  CHECK(strstr(log, "http.lua: on_http (conn ") != NULL);
  CHECK(strstr(log, "http.lua:9: boom") != NULL);
  CHECK(strstr(log, "on_http (") != NULL &&
        strstr(log, "http.lua:7) returned a wrong result: status must be an "
                    "integer from 200 to 599") != NULL);
  const char *s = taken(id);
  const char *first = strstr(s, "HTTP/1.1 500 Internal Server Error\r\n");
  CHECK(first && strstr(first + 1, "HTTP/1.1 500 Internal Server Error\r\n"));
  CHECK(strstr(s, "internal error\n") != NULL);
  /* The connection carries on: a handler error is not the client's. */
  CHECK(strstr(s, "GET /after ") != NULL);
  CHECK_EQ_INT(h.srv->stats.handler_errors - errors, 2);
  CHECK_EQ_INT(h.srv->stats.http_errors - http_errors, 2);
}

static void test_publish_and_upgrade(void) {
  uint64_t ws = open_ws(&h, "/?room=news");
  uint64_t id = request("POST /pub/news HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
                        "hello");
  CHECK(strstr(taken(id), "\r\n\r\n1") != NULL);
  size_t n = take(&h, ws, out, sizeof out);
  CHECK(n == 7 && out[0] == 0x81 && out[1] == 5 &&
        memcmp(out + 2, "hello", 5) == 0);
  /* An upgrade after a plain request on the same connection. */
  char up[512];
  upgrade_request(up, sizeof up, "/?room=news");
  feed(&h, mr_conn_find(h.srv, id), up, strlen(up));
  CHECK_STR(taken(id), RESP_101);
  mr_conn *c = mr_conn_find(h.srv, id);
  CHECK(c && mr_conn_is_open(c));
}

static void test_without_on_http(void) {
  harness plain;
  if (!CHECK(h_start(&plain, fixture("handshake.lua"), no_opts) == 0))
    return;
  mr_conn *c = mr_conn_new_virtual(plain.srv);
  uint64_t id = c->id;
  const char *req = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
  feed(&plain, c, req, strlen(req));
  size_t n = take(&plain, id, out, sizeof out - 1);
  out[n] = '\0';
  CHECK_STR((const char *)out, "HTTP/1.1 404 Not Found\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 10\r\n"
                               "Connection: close\r\n"
                               "\r\n"
                               "not found\n");
  CHECK(mr_conn_find(plain.srv, id) == NULL);
  CHECK_EQ_INT(plain.srv->stats.http_requests, 0);
  CHECK_EQ_INT(plain.srv->stats.handshakes_refused, 1);
  h_stop(&plain);
}

int main(void) {
  static const char *const opts[] = {"--max-body", "64", "--request-timeout",
                                     "3", NULL};
  if (h_start(&h, fixture("http.lua"), opts) != 0)
    return 1;
  test_answer_and_close();
  test_keep_alive_pipelining();
  test_request_timeout();
  test_refusals();
  test_expect_continue();
  test_handler_errors();
  test_publish_and_upgrade();
  h_stop(&h);
  test_without_on_http();
  return test_report();
}
