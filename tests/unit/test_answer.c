/* Unit tests for on_connect's answer (core/answer.c): the accepting and
 * refusing forms and what they put in the response, and every wrong result,
 * which must be logged as a handler error that names the problem and
 * answered with 500.
 *
 * Each case is a one-line on_connect body written into a temporary script,
 * run by a socket-less server (tests/unit/virtual_server.h) for one
 * connection that offers "chat, superchat"; the log is captured around it
 * (tests/unit/log_capture.h). */
#include <unistd.h>

#include "log_capture.h"
#include "virtual_server.h"

static char script_path[64];

/* Writes `return { on_connect = function(conn, req) BODY end }` to the
 * temporary script. Returns 0 or -1. */
static int write_script(const char *body) {
  if (!script_path[0]) {
    snprintf(script_path, sizeof script_path,
             "/tmp/moonroom-unit-answer-XXXXXX.lua");
    int fd = mkstemps(script_path, 4);
    if (fd < 0)
      return -1;
    close(fd);
  }
  FILE *f = fopen(script_path, "wb");
  if (!f)
    return -1;
  fprintf(f,
          "return {\n"
          "  on_connect = function(conn, req)\n"
          "    %s\n"
          "  end,\n"
          "}\n",
          body);
  return fclose(f) == 0 ? 0 : -1;
}

static const char request[] = "GET /p?q=1 HTTP/1.1\r\n"
                              "Host: example.test\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Key: " KEY "\r\n"
                              "Sec-WebSocket-Protocol: chat, superchat\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "\r\n";

typedef struct {
  char response[8192]; /* what the connection was sent, NUL-terminated */
  char log[8192];      /* what was logged meanwhile */
  uint64_t handler_errors, handler_refusals;
  int open;
} outcome;

/* Runs one connection against on_connect BODY and records the outcome. */
static const outcome *run(const char *body) {
  static outcome o;
  memset(&o, 0, sizeof o);
  harness h;
  if (!CHECK(write_script(body) == 0 && h_start(&h, script_path, NULL) == 0))
    return &o;
  capture_begin();
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  feed(&h, c, request, strlen(request));
  c = mr_conn_find(h.srv, id);
  o.open = c && mr_conn_is_open(c);
  size_t n = take(&h, id, (uint8_t *)o.response, sizeof o.response - 1);
  o.response[n] = '\0';
  snprintf(o.log, sizeof o.log, "%s", capture_end());
  o.handler_errors = h.srv->stats.handler_errors;
  o.handler_refusals = h.srv->stats.handler_refusals;
  h_stop(&h);
  return &o;
}

#define CHECK_HAS(hay, needle)                                                 \
  do {                                                                         \
    if (!CHECK(strstr((hay), (needle)) != NULL))                               \
      fprintf(stderr, "  \"%s\" not in:\n%s\n", (needle), (hay));              \
  } while (0)

static void test_accepting(void) {
  const outcome *o = run("");
  CHECK(o->open);
  CHECK_STR(o->response, RESP_101);

  o = run("return true");
  CHECK(o->open);
  CHECK_STR(o->response, RESP_101);

  /* Any value but false still accepts, as it always did. */
  o = run("return 'yes'");
  CHECK(o->open);

  o = run("return true, {}");
  CHECK_STR(o->response, RESP_101);

  o = run("return true, { protocol = req.protocols[2] }");
  CHECK(o->open);
  CHECK_STR(o->response, "HTTP/1.1 101 Switching Protocols\r\n"
                         "Upgrade: websocket\r\n"
                         "Connection: Upgrade\r\n"
                         "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                         "Sec-WebSocket-Protocol: superchat\r\n"
                         "\r\n");

  /* Headers come out sorted by name, whatever the table's order; a list
   * repeats one; a number is a value. */
  o = run("return true, { headers = { ['x-b'] = '2', ['X-A'] = 1, "
          "['Set-Cookie'] = { 'a=1', 'b=2' }, ['Retry-After'] = 30.5, "
          "['X-Empty'] = {} } }");
  CHECK(o->open);
  CHECK_STR(o->response, "HTTP/1.1 101 Switching Protocols\r\n"
                         "Upgrade: websocket\r\n"
                         "Connection: Upgrade\r\n"
                         "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                         "Retry-After: 30.5\r\n"
                         "Set-Cookie: a=1\r\n"
                         "Set-Cookie: b=2\r\n"
                         "X-A: 1\r\n"
                         "x-b: 2\r\n"
                         "\r\n");
  CHECK_EQ_INT(o->handler_errors, 0);
  CHECK(strstr(o->log, "error") == NULL);
}

static void test_refusing(void) {
  const outcome *o = run("return false");
  CHECK(!o->open);
  CHECK_HAS(o->response, "HTTP/1.1 403 Forbidden\r\n");
  CHECK_EQ_INT(o->handler_refusals, 1);

  o = run("return false, 401, 'token required', "
          "{ ['WWW-Authenticate'] = 'Bearer', ['Retry-After'] = { 5 } }");
  CHECK_STR(o->response, "HTTP/1.1 401 Client Error\r\n"
                         "Content-Type: text/plain; charset=utf-8\r\n"
                         "Content-Length: 15\r\n"
                         "Connection: close\r\n"
                         "Retry-After: 5\r\n"
                         "WWW-Authenticate: Bearer\r\n"
                         "\r\n"
                         "token required\n");
  CHECK_EQ_INT(o->handler_errors, 0);

  o = run("return false, nil, 'later', { ['Retry-After'] = '5' }");
  CHECK_HAS(o->response, "HTTP/1.1 403 Forbidden\r\n");
  CHECK_HAS(o->response, "\r\nRetry-After: 5\r\n\r\nlater\n");
  o = run("return false, 599, 42");
  CHECK_HAS(o->response, "HTTP/1.1 599 ");
  CHECK_HAS(o->response, "\r\n\r\n42\n");

  /* Closing in on_connect refuses with 403 and no headers: those an
   * accepting on_connect chose were for the 101. */
  o = run("conn:close() return true, { headers = { ['X-A'] = '1' } }");
  CHECK_HAS(o->response, "HTTP/1.1 403 Forbidden\r\n");
  CHECK(strstr(o->response, "X-A") == NULL);
}

/* A wrong result: 500 with nothing the handler chose, one handler error,
 * and a log line that names the script, where on_connect is defined and
 * the problem. */
static void expect_wrong(const char *body, const char *problem, int line) {
  const outcome *o = run(body);
  char want[1024];
  snprintf(want, sizeof want,
           "%s: on_connect (conn 1): on_connect (%s:2) returned a wrong "
           "result: %s",
           script_path, script_path, problem);
  int ok = !o->open && o->handler_errors == 1 &&
           strncmp(o->response, "HTTP/1.1 500 ", 13) == 0 &&
           strstr(o->response, "\r\n\r\ninternal error\n") != NULL &&
           strstr(o->response, "X-") == NULL &&
           strstr(o->response, "Sec-WebSocket-Protocol") == NULL &&
           strstr(o->log, want) != NULL;
  if (!test_record(ok, __FILE__, line, body))
    fprintf(stderr, "  wanted \"%s\"\n  response:\n%s\n  log:\n%s\n", want,
            o->response, o->log);
}
#define EXPECT_WRONG(body, problem) expect_wrong((body), (problem), __LINE__)

static void test_wrong_results(void) {
  EXPECT_WRONG("return true, { protocol = 'graphql-ws' }",
               "selected protocol 'graphql-ws', which the client did not "
               "offer (it offered 'chat', 'superchat')");
  EXPECT_WRONG("return true, { protocol = 'Chat' }",
               "selected protocol 'Chat', which the client did not offer");
  EXPECT_WRONG("return true, { protocol = 1 }",
               "protocol must be a string, got 1");
  EXPECT_WRONG("return true, { protocol = 'chat', headers = "
               "{ ['Sec-WebSocket-Extensions'] = 'x' } }",
               "response header 'Sec-WebSocket-Extensions' is not allowed: "
               "the server sets this header itself");
  EXPECT_WRONG("return true, { headers = { Connection = 'close' } }",
               "response header 'Connection' is not allowed: the server sets "
               "this header itself");
  EXPECT_WRONG("return true, { headers = { ['Proxy-Authenticate'] = 'x' } }",
               "response header 'Proxy-Authenticate' is not allowed: it is a "
               "hop-by-hop header");
  EXPECT_WRONG("return true, { headers = { ['X-A'] = 'a\\r\\nX-B: b' } }",
               "response header 'X-A' is not allowed: the value contains CR "
               "or LF");
  EXPECT_WRONG("return true, { headers = { ['X-A'] = 'a\\0' } }",
               "response header 'X-A' is not allowed: the value contains NUL");
  EXPECT_WRONG("return true, { headers = { ['X\\r\\nY'] = '1' } }",
               "response header 'X\\x0d\\x0aY' is not allowed: the name is not "
               "an HTTP token");
  EXPECT_WRONG("return true, { headers = { ['X-A'] = { 'a', true } } }",
               "response header 'X-A' must be a string or a list of strings, "
               "got boolean");
  EXPECT_WRONG("return true, { headers = { 'X-A: 1' } }",
               "response header names must be strings, got 1");
  EXPECT_WRONG("return true, { headers = 'X-A: 1' }",
               "headers must be a table, got 'X-A: 1'");
  EXPECT_WRONG("return true, { headers = { ['X-A'] = ('x'):rep(5000) } }",
               "response headers take more than 4096 bytes");
  EXPECT_WRONG("local h = {} for i = 1, 65 do h['X-' .. i] = '1' end "
               "return true, { headers = h }",
               "more than 64 response headers");
  EXPECT_WRONG("return true, { protocols = { 'chat' } }",
               "unknown option 'protocols' (expected protocol, headers)");
  EXPECT_WRONG("return nil, 401",
               "an accepting on_connect's second result must be a table { "
               "protocol =, headers = }, got 401 (to refuse, return false, "
               "status, body)");
  EXPECT_WRONG("return false, 200",
               "refusal status must be an integer from 400 to 599, got 200");
  EXPECT_WRONG("return false, 302, 'moved'",
               "refusal status must be an integer from 400 to 599, got 302");
  EXPECT_WRONG("return false, 'abc'",
               "refusal status must be an integer from 400 to 599, got 'abc'");
  EXPECT_WRONG("return false, '401'",
               "refusal status must be an integer from 400 to 599, got '401'");
  EXPECT_WRONG("return false, 401.5",
               "refusal status must be an integer from 400 to 599, got 401.5");
  EXPECT_WRONG("return false, 1e300",
               "refusal status must be an integer from 400 to 599, got 1e+300");
  EXPECT_WRONG("return false, 0/0",
               "refusal status must be an integer from 400 to 599, got");
  EXPECT_WRONG("return false, 401, { 'no' }",
               "refusal body must be a string, got table");
  EXPECT_WRONG("return false, 401, 'no', 'WWW-Authenticate: Bearer'",
               "refusal headers must be a table, got 'WWW-Authenticate: "
               "Bearer'");
  EXPECT_WRONG("return false, 401, 'no', { Upgrade = 'h2c' }",
               "response header 'Upgrade' is not allowed");
}

/* An error the handler raises itself is logged as before, with its own
 * file and line; a metamethod that raises while its options are read is a
 * handler error like any other. */
static void test_handler_errors(void) {
  const outcome *o = run("error('boom')");
  char want[256];
  snprintf(want, sizeof want, "%s: on_connect (conn 1): %s:3: boom",
           script_path, script_path);
  CHECK_HAS(o->log, want);
  CHECK_EQ_INT(o->handler_errors, 1);
  CHECK_HAS(o->response, "HTTP/1.1 500 ");

  o = run("return true, setmetatable({}, { __index = function() "
          "error('from __index') end })");
  CHECK_HAS(o->log, "from __index");
  CHECK_EQ_INT(o->handler_errors, 1);
  CHECK_HAS(o->response, "HTTP/1.1 500 ");
}

/* Many wrong results in a row leave the Lua stack and the server as they
 * were: the next connection is served. */
static void test_balance(void) {
  harness h;
  if (!CHECK(write_script("if req.query.q == '1' then return false, 200 end "
                          "return true, { protocol = 'chat' }") == 0 &&
             h_start(&h, script_path, NULL) == 0))
    return;
  capture_begin();
  for (int i = 0; i < 300; i++) {
    mr_conn *c = mr_conn_new_virtual(h.srv);
    uint64_t id = c->id;
    feed(&h, c, request, strlen(request));
    uint8_t out[512];
    take(&h, id, out, sizeof out);
  }
  capture_end();
  CHECK_EQ_INT(h.srv->stats.handler_errors, 300);
  static const char ok_req[] = "GET / HTTP/1.1\r\n"
                               "Host: x\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Key: " KEY "\r\n"
                               "Sec-WebSocket-Protocol: chat\r\n"
                               "Sec-WebSocket-Version: 13\r\n"
                               "\r\n";
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  feed(&h, c, ok_req, strlen(ok_req));
  char out[512];
  size_t n = take(&h, id, (uint8_t *)out, sizeof out - 1);
  out[n] = '\0';
  CHECK_HAS(out, "\r\nSec-WebSocket-Protocol: chat\r\n\r\n");
  CHECK(mr_conn_is_open(mr_conn_find(h.srv, id)));
  h_stop(&h);
}

int main(void) {
  mr_log_set_level(getenv("MOONROOM_TEST_LOG")
                       ? MR_LOG_DEBUG
                       : (enum mr_log_level)(MR_LOG_ERROR + 1));
  test_accepting();
  test_refusing();
  test_wrong_results();
  test_handler_errors();
  test_balance();
  unlink(script_path);
  return test_report();
}
