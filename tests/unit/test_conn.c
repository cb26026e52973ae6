/* Unit tests for one connection (core/conn.c): the handshake, the frame
 * path through wslay, close, backpressure and the wslay context pool.
 *
 * There are no sockets: each test builds a socket-less server with
 * tests/unit/fixtures/echo_observed.lua as the script and drives virtual
 * connections through the harness in tests/unit/virtual_server.h. */
#include "virtual_server.h"

#include <zlib.h>

#include "deflate.h"

/* malloc is wrapped at link time (-Wl,--wrap=malloc, see CMakeLists.txt)
 * so that a test can make the core's next allocation fail. */
static int fail_next_malloc;
/* Fails the next allocation of exactly this many bytes (0: none), for a
 * block whose size is known but which other allocations precede. */
static size_t fail_malloc_size;
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n) {
  if (fail_next_malloc || (fail_malloc_size && n == fail_malloc_size)) {
    fail_next_malloc = 0;
    fail_malloc_size = 0;
    return NULL;
  }
  return __real_malloc(n);
}

/* ---- handshake ----------------------------------------------------------- */

static void test_upgrade(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  CHECK_EQ_INT(c->state, MR_CONN_HANDSHAKE);
  CHECK(mr_conn_find(h.srv, id) == c);
  CHECK_EQ_INT(h.srv->stats.connections_accepted, 1);

  char req[512];
  int n = upgrade_request(req, sizeof req, "/chat?x=1");
  feed(&h, c, req, (size_t)n);
  CHECK(mr_conn_find(h.srv, id) == c);
  CHECK_EQ_INT(c->state, MR_CONN_OPEN);
  CHECK(c->x == NULL); /* the head is freed on upgrade, and its side struct */
  CHECK_EQ_INT(h.srv->stats.connections_open, 1);
  CHECK_EQ_INT(h.srv->stats.handshakes_refused, 0);
  CHECK_EQ_INT(h.srv->stats.bytes_in, n);
  CHECK_EQ_INT(c->tx.outq.count, 1);
  uint8_t out[512];
  size_t len = take(&h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, len, RESP_101);
  /* Drained, an open connection stays. */
  CHECK(mr_conn_find(h.srv, id) == c);
  CHECK(queue_empty(&h, id));
  h_stop(&h);
}

/* What an idle connection holds, the subject of the idle benchmark (about
 * 630 bytes of RSS each, see README: Benchmarks). Everything it needs only
 * while busy is on the heap, and none of that is held once it is idle: no
 * side struct, no queue ring, no wslay context, no link array for its one
 * room. The struct itself is libuv's handle plus at most 200 bytes (200
 * on x86_64 today, 248 the handle): a field added to every connection must
 * be worth its memory, or go behind c->x. */
static void test_idle_footprint(void) {
  CHECK(sizeof(mr_conn) - sizeof(uv_tcp_t) <= 200);
  CHECK(sizeof(mr_outq) <= 40);
  CHECK(sizeof(mr_ws) <= 16);
  CHECK(sizeof(mr_member) <= 24);
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/?room=lobby");
  uint8_t out[512];
  take(&h, id, out, sizeof out); /* the 101 */
  send_text(&h, id, "hello");
  size_t len = take(&h, id, out, sizeof out);
  CHECK_SPAN((const char *)out + 2, len - 2, "text 1 hello");
  mr_conn *c = mr_conn_find(h.srv, id);
  if (CHECK(c != NULL)) {
    CHECK(c->x == NULL);
    CHECK(c->tx.outq.ring == NULL);
    CHECK(c->ws.slot == NULL);
    CHECK_EQ_INT(c->member.nlinks, 1);
    CHECK_EQ_INT(c->member.cap, 0); /* the inline link */
  }
  h_stop(&h);
}

/* Frames that arrive in the same read as the head are not lost. */
static void test_upgrade_with_frames(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  static uint8_t buf[20000];
  static char big[9000];
  int n = upgrade_request((char *)buf, sizeof buf, "/");
  size_t len = (size_t)n;
  len += client_frame(buf + len, 0x80 | MR_OP_TEXT, "hi", 2, 1);
  len += client_frame(buf + len, 0x80 | MR_OP_TEXT, "there", 5, 1);
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  feed(&h, c, buf, len);
  static uint8_t out[20000];
  size_t got = take(&h, id, out, sizeof out);
  size_t hl = strlen(RESP_101);
  if (CHECK(got > hl)) {
    CHECK_SPAN((const char *)out, hl, RESP_101);
    sframe f[4];
    if (CHECK(decode(out + hl, got - hl, f, 4) == 2)) {
      CHECK_SPAN((const char *)f[0].data, f[0].len, "text 1 hi");
      CHECK_SPAN((const char *)f[1].data, f[1].len, "text 2 there");
    }
  }
  CHECK_EQ_INT(h.srv->stats.messages_in, 2);

  /* The head buffer holds max_head + 1 bytes (8193 here): a read of a head
   * followed by a longer frame is split between the buffered tail and the
   * rest of the read, and both parts reach wslay in order. */
  memset(big, 'x', sizeof big);
  len = (size_t)upgrade_request((char *)buf, sizeof buf, "/");
  len += client_frame(buf + len, 0x80 | MR_OP_TEXT, big, sizeof big, 1);
  CHECK(len > h.srv->cfg.max_head + 1);
  c = mr_conn_new_virtual(h.srv);
  id = c->id;
  feed(&h, c, buf, len);
  got = take(&h, id, out, sizeof out);
  if (CHECK(got > hl)) {
    CHECK_SPAN((const char *)out, hl, RESP_101);
    sframe f[4];
    if (CHECK(decode(out + hl, got - hl, f, 4) == 1)) {
      CHECK_EQ_INT(f[0].op, MR_OP_TEXT);
      CHECK_EQ_INT(f[0].len, 7 + sizeof big);
      CHECK_MEM(f[0].data, "text 1 ", 7);
      CHECK(f[0].len == 7 + sizeof big &&
            memcmp(f[0].data + 7, big, sizeof big) == 0);
    }
  }
  h_stop(&h);
}

static void test_refused_by_on_connect(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t obs = open_ws(&h, "/?observe=1");

  char req[512];
  int n = upgrade_request(req, sizeof req, "/?refuse=503&body=full");
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  feed(&h, c, req, (size_t)n);
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  CHECK_EQ_INT(h.srv->stats.handler_refusals, 1);
  CHECK_EQ_INT(h.srv->stats.connections_open, 1); /* the observer */
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), MR_ECLOSED);
  uint8_t out[1024];
  size_t len = take(&h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, len,
             "HTTP/1.1 503 Service Unavailable\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Length: 5\r\n"
             "Connection: close\r\n"
             "\r\n"
             "full\n");
  /* Written out, the refused connection goes; it never was open, so
   * on_close did not run (the observer heard nothing). */
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK(queue_empty(&h, obs));

  /* Refusing without a status gives 403 and the default body. */
  n = upgrade_request(req, sizeof req, "/?refuse=none");
  c = mr_conn_new_virtual(h.srv);
  id = c->id;
  feed(&h, c, req, (size_t)n);
  len = take(&h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, len,
             "HTTP/1.1 403 Forbidden\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Length: 10\r\n"
             "Connection: close\r\n"
             "\r\n"
             "forbidden\n");
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->stats.handler_refusals, 2);
  CHECK(queue_empty(&h, obs));

  /* A status outside 400..599 is the handler's error, not a silent 403. */
  n = upgrade_request(req, sizeof req, "/?refuse=0");
  c = mr_conn_new_virtual(h.srv);
  id = c->id;
  feed(&h, c, req, (size_t)n);
  len = take(&h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, len,
             "HTTP/1.1 500 Internal Server Error\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Length: 15\r\n"
             "Connection: close\r\n"
             "\r\n"
             "internal error\n");
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->stats.handler_errors, 1);
  CHECK(queue_empty(&h, obs));
  h_stop(&h);
}

/* The 101 is built after on_connect, with the protocol it selected and the
 * headers it added, and still goes out before what on_connect sent; a
 * refusal carries its headers and drops what on_connect sent; a 101 that
 * cannot be built is a 500, counted and logged. */
static void test_101_after_on_connect(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("handshake.lua"), no_opts) == 0))
    return;
  static const char req_fmt[] = "GET %s HTTP/1.1\r\n"
                                "Host: example.test\r\n"
                                "Upgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Key: " KEY "\r\n"
                                "Sec-WebSocket-Protocol: chat, superchat\r\n"
                                "Sec-WebSocket-Version: 13\r\n"
                                "\r\n";
  static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                             "Sec-WebSocket-Protocol: chat\r\n"
                             "X-Server: unit\r\n"
                             "\r\n";
  char req[512];
  int n = snprintf(req, sizeof req, req_fmt, "/");
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  feed(&h, c, req, (size_t)n);
  CHECK(mr_conn_is_open(c));
  CHECK_EQ_INT(c->tx.outq.count, 2);
  uint8_t out[1024];
  size_t len = take(&h, id, out, sizeof out);
  size_t rl = strlen(resp);
  if (CHECK(len > rl)) {
    CHECK_SPAN((const char *)out, rl, resp);
    sframe f[2];
    char hello[32];
    snprintf(hello, sizeof hello, "hello %llu", (unsigned long long)id);
    CHECK(decode(out + rl, len - rl, f, 2) == 1 && f[0].op == MR_OP_TEXT &&
          f[0].len == strlen(hello) && memcmp(f[0].data, hello, f[0].len) == 0);
  }
  send_text(&h, id, "echo");
  EXPECT_TEXT(&h, id, "echo");

  /* Refused: the handler's status, body and header; no greeting. */
  n = snprintf(req, sizeof req, req_fmt, "/?refuse=1");
  c = mr_conn_new_virtual(h.srv);
  id = c->id;
  feed(&h, c, req, (size_t)n);
  len = take(&h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, len,
             "HTTP/1.1 401 Client Error\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Length: 15\r\n"
             "Connection: close\r\n"
             "WWW-Authenticate: Bearer\r\n"
             "\r\n"
             "token required\n");
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->stats.handler_refusals, 1);

  /* No memory for the 101 once on_connect has accepted. */
  n = snprintf(req, sizeof req, req_fmt, "/");
  c = mr_conn_new_virtual(h.srv);
  id = c->id;
  fail_malloc_size =
      sizeof(mr_buf) + 256 + strlen("chat") + strlen("X-Server: unit\r\n");
  feed(&h, c, req, (size_t)n);
  CHECK_EQ_INT(fail_malloc_size, 0);
  len = take(&h, id, out, sizeof out);
  CHECK(len > 12 && memcmp(out, "HTTP/1.1 500", 12) == 0);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->stats.internal_errors, 1);
  CHECK_EQ_INT(h.srv->stats.handler_refusals, 1);
  CHECK_EQ_INT(h.srv->stats.connections_open, 1);
  h_stop(&h);
}

static void test_plain_get_404(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  const char req[] = "GET /index.html HTTP/1.1\r\nHost: example.test\r\n\r\n";
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  feed(&h, c, req, sizeof req - 1);
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  CHECK_EQ_INT(h.srv->stats.handshakes_refused, 1);
  CHECK_EQ_INT(h.srv->stats.handler_refusals, 0);
  CHECK_EQ_INT(h.srv->stats.connections_open, 0);
  uint8_t out[1024];
  size_t len = take(&h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, len,
             "HTTP/1.1 404 Not Found\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Length: 10\r\n"
             "Connection: close\r\n"
             "\r\n"
             "not found\n");
  CHECK(mr_conn_find(h.srv, id) == NULL);
  h_stop(&h);
}

/* The head, and a frame after it, one byte per read. */
static void test_upgrade_bytewise(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint8_t buf[1024];
  int n = upgrade_request((char *)buf, sizeof buf, "/slow");
  size_t head = (size_t)n;
  size_t len = head + client_frame(buf + head, 0x80 | MR_OP_TEXT, "drip", 4, 1);
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  int early = 0;
  for (size_t i = 0; i + 1 < head; i++) {
    feed(&h, c, buf + i, 1);
    if (c->state != MR_CONN_HANDSHAKE || c->tx.outq.count != 0)
      early++;
  }
  CHECK_EQ_INT(early, 0);
  CHECK(c->x && c->x->head_len == head - 1);
  feed(&h, c, buf + head - 1, 1);
  CHECK_EQ_INT(c->state, MR_CONN_OPEN);
  uint8_t out[512];
  size_t got = peek(&h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, got, RESP_101);
  for (size_t i = head; i < len; i++)
    feed(&h, c, buf + i, 1);
  got = take(&h, id, out, sizeof out);
  size_t hl = strlen(RESP_101);
  if (CHECK(got > hl)) {
    CHECK_SPAN((const char *)out, hl, RESP_101);
    sframe f[2];
    if (CHECK(decode(out + hl, got - hl, f, 2) == 1))
      CHECK_SPAN((const char *)f[0].data, f[0].len, "text 1 drip");
  }
  CHECK_EQ_INT(h.srv->stats.bytes_in, len);
  h_stop(&h);
}

/* ---- frames -------------------------------------------------------------- */

static void test_messages(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/");
  send_frame(&h, id, MR_OP_TEXT, "hello", 5);
  EXPECT_TEXT(&h, id, "text 1 hello");
  /* conn.state persists between messages. */
  send_frame(&h, id, MR_OP_TEXT, "again", 5);
  EXPECT_TEXT(&h, id, "text 2 again");
  send_frame(&h, id, MR_OP_BINARY, "\x00\xff", 2);
  expect_frame(&h, id, MR_OP_BINARY, "binary 3 \x00\xff", 11, __LINE__);
  /* Valid UTF-8 beyond ASCII passes. */
  send_frame(&h, id, MR_OP_TEXT, "h\xc3\xa9", 3);
  EXPECT_TEXT(&h, id, "text 4 h\xc3\xa9");
  /* A fragmented message is delivered once, whole. */
  uint8_t buf[64];
  size_t n = client_frame(buf, MR_OP_TEXT, "frag", 4, 1);
  n += client_frame(buf + n, 0x80 | MR_OP_CONT, "ment", 4, 1);
  feed(&h, mr_conn_find(h.srv, id), buf, n);
  EXPECT_TEXT(&h, id, "text 5 fragment");
  CHECK_EQ_INT(h.srv->stats.messages_in, 5);
  CHECK_EQ_INT(h.srv->stats.messages_out, 5);
  CHECK_EQ_INT(h.srv->stats.protocol_errors, 0);
  h_stop(&h);
}

static void test_unmasked_frame(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t obs = open_ws(&h, "/?observe=1");
  uint64_t id = open_ws(&h, "/");
  uint8_t buf[64];
  size_t n = client_frame(buf, 0x80 | MR_OP_TEXT, "plain", 5, 0);
  mr_conn *c = mr_conn_find(h.srv, id);
  feed(&h, c, buf, n);
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  CHECK_EQ_INT(c->closing_how, MR_CLOSING_AFTER_FLUSH);
  expect_close_queued(&h, id, 1002, "");
  CHECK_EQ_INT(h.srv->stats.protocol_errors, 1);
  CHECK_EQ_INT(h.srv->stats.messages_in, 0); /* on_message never ran */
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  char line[64];
  snprintf(line, sizeof line, "close %llu 1002 protocol error",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);
  h_stop(&h);
}

static void test_invalid_utf8(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t obs = open_ws(&h, "/?observe=1");
  uint64_t id = open_ws(&h, "/");
  send_frame(&h, id, MR_OP_TEXT, "ok\xff\xfe", 4);
  mr_conn *c = mr_conn_find(h.srv, id);
  if (!CHECK(c != NULL))
    return;
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  expect_close_queued(&h, id, 1007, "");
  CHECK_EQ_INT(h.srv->stats.invalid_utf8, 1);
  CHECK_EQ_INT(h.srv->stats.messages_in, 0);
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  char line[80];
  snprintf(line, sizeof line, "close %llu 1007 invalid UTF-8 in a text message",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);
  /* Binary messages are not UTF-8 checked. */
  id = open_ws(&h, "/");
  send_frame(&h, id, MR_OP_BINARY, "\xff", 1);
  expect_frame(&h, id, MR_OP_BINARY, "binary 1 \xff", 10, __LINE__);
  h_stop(&h);
}

static void test_too_big(void) {
  static const char *const opts[] = {"--max-message", "100", NULL};
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), opts) == 0))
    return;
  uint64_t obs = open_ws(&h, "/?observe=1");
  char payload[101];
  memset(payload, 'm', sizeof payload);

  /* Exactly the limit is fine. */
  uint64_t id = open_ws(&h, "/");
  send_frame(&h, id, MR_OP_TEXT, payload, 100);
  char expect[200];
  snprintf(expect, sizeof expect, "text 1 %.*s", 100, payload);
  EXPECT_TEXT(&h, id, expect);

  /* One more byte, announced in a header with no payload behind it yet:
   * refused at once, not after waiting for the payload. */
  uint8_t buf[256];
  size_t n = client_frame(buf, 0x80 | MR_OP_TEXT, payload, 101, 1);
  CHECK_EQ_INT(n, 6 + 101);
  mr_conn *c = mr_conn_find(h.srv, id);
  feed(&h, c, buf, 6);
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  expect_close_queued(&h, id, 1009, "message larger than --max-message");
  CHECK_EQ_INT(h.srv->stats.messages_too_big, 1);
  /* The payload that follows is ignored. */
  feed(&h, c, buf + 6, n - 6);
  expect_close_queued(&h, id, 1009, "message larger than --max-message");
  CHECK_EQ_INT(h.srv->stats.messages_in, 1);
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  snprintf(expect, sizeof expect,
           "close %llu 1009 message larger than --max-message",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, expect);

  /* A fragmented message counts its fragments together: 60 + 60 > 100 is
   * refused at the second header. */
  id = open_ws(&h, "/");
  c = mr_conn_find(h.srv, id);
  n = client_frame(buf, MR_OP_TEXT, payload, 60, 1);
  feed(&h, c, buf, n);
  CHECK(queue_empty(&h, id));
  n = client_frame(buf, 0x80 | MR_OP_CONT, payload, 60, 1);
  feed(&h, c, buf, 6);
  expect_close_queued(&h, id, 1009, "message larger than --max-message");
  CHECK_EQ_INT(h.srv->stats.messages_too_big, 2);
  CHECK_EQ_INT(h.srv->stats.messages_in, 1);
  h_stop(&h);
}

/* A ping the sweep cannot queue (out of memory) is counted and logged, and
 * the connection is not marked as waiting for a pong it was never sent: the
 * next sweep pings it. (The failure was once silent, and the connection
 * was then closed for "no pong".) */
static void test_ping_queue_failure_is_counted(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/");
  mr_conn *c = mr_conn_find(h.srv, id);
  uint64_t due = c->next_ping;
  fail_next_malloc = 1;
  mr_conn_sweep(c, due);
  CHECK_EQ_INT(fail_next_malloc, 0);
  CHECK_EQ_INT(h.srv->stats.internal_errors, 1);
  CHECK(!(c->flags & MR_CF_PINGED));
  CHECK(queue_empty(&h, id));
  mr_conn_sweep(c, due);
  CHECK(c->flags & MR_CF_PINGED);
  expect_frame(&h, id, MR_OP_PING, "", 0, __LINE__);
  CHECK_EQ_INT(h.srv->stats.internal_errors, 1);
  h_stop(&h);
}

static void test_ping_pong(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/");
  send_frame(&h, id, MR_OP_PING, "abc", 3);
  expect_frame(&h, id, MR_OP_PONG, "abc", 3, __LINE__);
  send_frame(&h, id, MR_OP_PING, "", 0);
  expect_frame(&h, id, MR_OP_PONG, "", 0, __LINE__);
  mr_conn *c = mr_conn_find(h.srv, id);
  CHECK(c != NULL && mr_conn_is_open(c));
  CHECK_EQ_INT(h.srv->stats.messages_in, 0); /* control frames are not */
  h_stop(&h);
}

static void test_client_close(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t obs = open_ws(&h, "/?observe=1");
  uint64_t id = open_ws(&h, "/");
  send_close(&h, id, 4000, "bye");
  mr_conn *c = mr_conn_find(h.srv, id);
  if (!CHECK(c != NULL))
    return;
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  CHECK_EQ_INT(c->closing_how, MR_CLOSING_AFTER_FLUSH);
  /* The server echoes the close (wslay returns code and reason). */
  expect_close_queued(&h, id, 4000, "bye");
  /* No data after a close. */
  CHECK_EQ_INT(mr_conn_send(c, "late", 4, 0), MR_ECLOSED);
  CHECK(queue_empty(&h, obs)); /* on_close waits for the queue to drain */
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  char line[64];
  snprintf(line, sizeof line, "close %llu 4000 bye", (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);
  CHECK_EQ_INT(h.srv->stats.connections_open, 1);
  h_stop(&h);
}

/* Close frames the peer may not send. */
static void test_bad_close_frames(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t obs = open_ws(&h, "/?observe=1");
  uint8_t out[256];
  char line[80];

  /* A one-byte body: neither empty nor a code. */
  uint64_t id = open_ws(&h, "/");
  send_frame(&h, id, MR_OP_CLOSE, "\x03", 1);
  expect_close_queued(&h, id, 1002, "malformed frame");
  CHECK_EQ_INT(h.srv->stats.protocol_errors, 1);
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  snprintf(line, sizeof line, "close %llu 1002 malformed frame",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);

  /* A code nobody may send (1005 means "no code" and is never sent). */
  id = open_ws(&h, "/");
  send_close(&h, id, 1005, "");
  expect_close_queued(&h, id, 1002, "");
  CHECK_EQ_INT(h.srv->stats.protocol_errors, 2);
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  snprintf(line, sizeof line, "close %llu 1002 protocol error",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);

  /* An empty close is fine: on_close hears 1005, "no status". */
  id = open_ws(&h, "/");
  send_frame(&h, id, MR_OP_CLOSE, "", 0);
  mr_conn *c = mr_conn_find(h.srv, id);
  CHECK(c != NULL && c->state == MR_CONN_CLOSING);
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  snprintf(line, sizeof line, "close %llu 1005 ", (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);
  CHECK_EQ_INT(h.srv->stats.protocol_errors, 2);
  h_stop(&h);
}

/* A malformed (1-byte) close in reply to the server's own close: nothing may
 * follow our close frame, so the connection just ends, without a second
 * close frame and without counting a protocol error. */
static void test_bad_close_after_ours(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/");
  mr_conn *c = mr_conn_find(h.srv, id);
  CHECK_EQ_INT(mr_conn_close(c, 4001, "srv", 3), 0);
  expect_close_queued(&h, id, 4001, "srv");
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  c = mr_conn_find(h.srv, id);
  if (CHECK(c != NULL))
    feed(&h, c, "\x88\x81\x01\x02\x03\x04\x02", 7);
  if ((c = mr_conn_find(h.srv, id)))
    CHECK(c->tx.outq.count == 0); /* no second close frame */
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->stats.protocol_errors, 0);
  h_stop(&h);
}

/* The handler closes its own connection from on_message: the close frame
 * goes out and what follows in the same read is dropped. */
static void test_close_from_handler(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t obs = open_ws(&h, "/?observe=1");
  uint64_t id = open_ws(&h, "/");
  uint8_t buf[64];
  size_t n = client_frame(buf, 0x80 | MR_OP_TEXT, "close", 5, 1);
  n += client_frame(buf + n, 0x80 | MR_OP_TEXT, "late", 4, 1);
  mr_conn *c = mr_conn_find(h.srv, id);
  feed(&h, c, buf, n);
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  CHECK_EQ_INT(c->closing_how, MR_CLOSING_AWAIT_PEER);
  expect_close_queued(&h, id, 4002, "asked");
  CHECK_EQ_INT(h.srv->stats.messages_in, 1);
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == c); /* waits for the peer */
  CHECK(queue_empty(&h, obs));
  send_close(&h, id, 4002, "");
  CHECK(queue_empty(&h, id)); /* no second close frame */
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  char line[64];
  snprintf(line, sizeof line, "close %llu 4002 asked", (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);
  h_stop(&h);
}

/* ---- sending ------------------------------------------------------------- */

static void test_backpressure(void) {
  static const char *const opts[] = {"--max-backpressure", "1024", NULL};
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), opts) == 0))
    return;
  uint64_t obs = open_ws(&h, "/?observe=1");
  uint64_t id = open_ws(&h, "/");
  mr_conn *c = mr_conn_find(h.srv, id);
  char msg[100];
  memset(msg, 'b', sizeof msg);
  /* Each frame is 102 bytes; the limit is judged on what is waiting before
   * the new frame, so 11 frames (1122 bytes) go in and the 12th dooms. */
  int sent = 0, r = 0;
  while (sent < 100 && (r = mr_conn_send(c, msg, sizeof msg, 0)) == 0)
    sent++;
  CHECK_EQ_INT(sent, 11);
  CHECK_EQ_INT(r, MR_ECLOSED);
  CHECK_EQ_INT(c->tx.outq.bytes, 11 * 102);
  CHECK(c->flags & MR_CF_DOOMED);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  CHECK_EQ_INT(mr_conn_send(c, msg, 1, 0), MR_ECLOSED);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  /* Doomed is not yet closed: the connection lives until the safe point. */
  CHECK(mr_conn_find(h.srv, id) == c);
  CHECK(queue_empty(&h, obs));
  mr_server_flush(h.srv);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  char line[80];
  snprintf(line, sizeof line, "close %llu 1008 backpressure limit exceeded",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  CHECK_EQ_INT(h.srv->stats.connections_open, 1);
  h_stop(&h);
}

/* Pongs count against the limit too: a client that pings without reading
 * is closed like one that does not read messages. */
static void test_pong_backpressure(void) {
  static const char *const opts[] = {"--max-backpressure", "1024", NULL};
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), opts) == 0))
    return;
  uint64_t obs = open_ws(&h, "/?observe=1");
  uint64_t id = open_ws(&h, "/");
  char payload[125];
  memset(payload, 'p', sizeof payload);
  mr_conn *c = mr_conn_find(h.srv, id);
  /* 127 bytes a pong: 9 of them (1143 bytes) go in, the 10th dooms. */
  for (int i = 0; i < 9; i++)
    send_frame(&h, id, MR_OP_PING, payload, sizeof payload);
  CHECK(mr_conn_find(h.srv, id) == c);
  CHECK_EQ_INT(c->tx.outq.bytes, 9 * 127);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 0);
  uint8_t buf[256];
  size_t n = client_frame(buf, 0x80 | MR_OP_PING, payload, sizeof payload, 1);
  mr_conn_feed(c, buf, n);
  CHECK(c->flags & MR_CF_DOOMED);
  CHECK_EQ_INT(c->tx.outq.bytes, 9 * 127); /* no part of the 10th */
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  mr_server_flush(h.srv);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  char line[80];
  snprintf(line, sizeof line, "close %llu 1008 backpressure limit exceeded",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);
  h_stop(&h);
}

/* One frame larger than the limit goes to a connection with nothing
 * waiting; the next one is judged on it. */
static void test_big_frame_to_drained(void) {
  static const char *const opts[] = {"--max-backpressure", "1024", NULL};
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/");
  mr_conn *c = mr_conn_find(h.srv, id);
  static char big[4000];
  memset(big, 'B', sizeof big);
  CHECK_EQ_INT(mr_conn_send(c, big, sizeof big, 1), 0);
  CHECK_EQ_INT(c->tx.outq.count, 1);
  CHECK_EQ_INT(c->tx.outq.bytes, 4 + sizeof big);
  CHECK(!(c->flags & MR_CF_DOOMED));
  expect_frame(&h, id, MR_OP_BINARY, big, sizeof big, __LINE__);
  c = mr_conn_find(h.srv, id);
  if (!CHECK(c != NULL))
    return;
  CHECK_EQ_INT(mr_conn_send(c, big, sizeof big, 1), 0);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 0);
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), MR_ECLOSED);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  mr_server_flush(h.srv);
  CHECK(mr_conn_find(h.srv, id) == NULL);

  /* The boundary: exactly the limit waiting still takes one more. */
  id = open_ws(&h, "/");
  c = mr_conn_find(h.srv, id);
  CHECK_EQ_INT(mr_conn_send(c, big, 1020, 0), 0);
  CHECK_EQ_INT(c->tx.outq.bytes, 1024);
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), 0);
  CHECK_EQ_INT(c->tx.outq.bytes, 1027);
  CHECK(!(c->flags & MR_CF_DOOMED));
  CHECK_EQ_INT(mr_conn_send(c, "y", 1, 0), MR_ECLOSED);
  CHECK(c->flags & MR_CF_DOOMED);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 2);
  h_stop(&h);
}

static void test_send_when_not_open(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  mr_buf *frame = mr_frame_new(MR_OP_TEXT, "f", 1);
  /* Still in the handshake. */
  mr_conn *c = mr_conn_new_virtual(h.srv);
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), MR_ECLOSED);
  CHECK_EQ_INT(mr_conn_send_frame(c, frame), MR_ECLOSED);
  CHECK_EQ_INT(mr_conn_close(c, 1000, "", 0), MR_ECLOSED);
  CHECK_EQ_INT(c->tx.outq.count, 0);

  /* Closing (our close frame is out). */
  uint64_t id = open_ws(&h, "/");
  c = mr_conn_find(h.srv, id);
  CHECK_EQ_INT(mr_conn_close(c, 4001, "done", 4), 0);
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  CHECK_EQ_INT(c->closing_how, MR_CLOSING_AWAIT_PEER);
  expect_close_queued(&h, id, 4001, "done");
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), MR_ECLOSED);
  CHECK_EQ_INT(mr_conn_send_frame(c, frame), MR_ECLOSED);
  CHECK_EQ_INT(mr_conn_close(c, 1000, "", 0), MR_ECLOSED);
  expect_close_queued(&h, id, 4001, "done"); /* nothing more queued */
  /* The peer answers; the connection goes once drained. */
  uint8_t out[64];
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == c);
  send_close(&h, id, 4001, "");
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);

  /* Doomed. */
  id = open_ws(&h, "/");
  c = mr_conn_find(h.srv, id);
  mr_conn_doom(c, MR_CLOSE_POLICY, "policy");
  CHECK_EQ_INT(c->state, MR_CONN_OPEN);
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), MR_ECLOSED);
  CHECK_EQ_INT(mr_conn_send_frame(c, frame), MR_ECLOSED);
  CHECK_EQ_INT(mr_conn_close(c, 1000, "", 0), MR_ECLOSED);
  CHECK_EQ_INT(c->tx.outq.count, 0);
  CHECK_EQ_INT(frame->refs, 1); /* nobody took a reference */
  mr_buf_release(frame);
  h_stop(&h);
}

/* ---- the wslay context pool ---------------------------------------------- */

static void test_ws_pool(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/");
  mr_conn *c = mr_conn_find(h.srv, id);
  CHECK(c->ws.slot == NULL); /* none until the first frame */
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 0);
  send_frame(&h, id, MR_OP_TEXT, "one", 3);
  EXPECT_TEXT(&h, id, "text 1 one");
  CHECK(c->ws.slot == NULL);
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 1);

  /* Half a frame: wslay holds state, so the context stays attached. */
  uint8_t buf[64];
  size_t n = client_frame(buf, 0x80 | MR_OP_TEXT, "two!", 4, 1);
  feed(&h, c, buf, n / 2);
  CHECK(c->ws.slot != NULL);
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 0);
  CHECK(queue_empty(&h, id));
  /* Another connection meanwhile gets a context of its own. */
  uint64_t id2 = open_ws(&h, "/");
  mr_conn *c2 = mr_conn_find(h.srv, id2);
  send_frame(&h, id2, MR_OP_TEXT, "other", 5);
  EXPECT_TEXT(&h, id2, "text 1 other");
  CHECK(c2->ws.slot == NULL);
  CHECK(c->ws.slot != NULL);
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 1);
  feed(&h, c, buf + n / 2, n - n / 2);
  EXPECT_TEXT(&h, id, "text 2 two!");
  CHECK(c->ws.slot == NULL);
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 2);

  /* Between the fragments of a message, too. */
  n = client_frame(buf, MR_OP_TEXT, "th", 2, 1);
  feed(&h, c, buf, n);
  CHECK(c->ws.slot != NULL);
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 1);
  CHECK(queue_empty(&h, id));
  n = client_frame(buf, 0x80 | MR_OP_CONT, "ree", 3, 1);
  feed(&h, c, buf, n);
  EXPECT_TEXT(&h, id, "text 3 three");
  CHECK(c->ws.slot == NULL);
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 2);

  /* A pooled context serves the next connection as good as new. */
  for (int i = 0; i < 3; i++) {
    send_frame(&h, id2, MR_OP_TEXT, "again", 5);
    CHECK(c2->ws.slot == NULL);
  }
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 2);
  uint8_t out[256];
  size_t got = take(&h, id2, out, sizeof out);
  sframe f[4];
  if (CHECK(decode(out, got, f, 4) == 3)) {
    CHECK_SPAN((const char *)f[0].data, f[0].len, "text 2 again");
    CHECK_SPAN((const char *)f[2].data, f[2].len, "text 4 again");
  }

  /* A closing connection keeps its context (wslay holds the close state)
   * and drops it at teardown rather than pooling it. */
  send_close(&h, id, 1000, "");
  CHECK(c->ws.slot != NULL);
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 1);
  take(&h, id, out, sizeof out);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK_EQ_INT((h.srv->ws_pool ? mr_ws_pool_idle(h.srv->ws_pool) : 0), 1);
  h_stop(&h);
}

/* ---- permessage-deflate: nothing held between messages ------------------ */

/* What a client sends: raw deflate, sync flush, the tail stripped. */
static size_t client_deflate(const char *msg, uint8_t *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return 0;
  z.next_in = (uint8_t *)msg;
  z.avail_in = (uInt)strlen(msg);
  z.next_out = out;
  z.avail_out = (uInt)cap;
  deflate(&z, Z_SYNC_FLUSH);
  size_t n = cap - z.avail_out;
  deflateEnd(&z);
  return n - 4;
}

static void test_deflate_session(void) {
  harness h;
  static const char *const opts[] = {"--compression", "on",
                                     "--compression-threshold", "16", NULL};
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), opts) == 0))
    return;
  char req[512];
  int n = snprintf(req, sizeof req,
                   "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: "
                   "permessage-deflate; client_max_window_bits\r\n\r\n");
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  feed(&h, c, req, (size_t)n);
  char out[1024];
  size_t len = take(&h, id, (uint8_t *)out, sizeof out - 1);
  out[len] = '\0';
  CHECK(strstr(out, "\r\nSec-WebSocket-Extensions: permessage-deflate; "
                    "server_no_context_takeover; "
                    "client_no_context_takeover\r\n\r\n") != NULL);
  c = mr_conn_find(h.srv, id);
  if (!CHECK(c && mr_conn_is_open(c)))
    return;
  CHECK_EQ_INT(c->deflate_bits, 15);
  CHECK(mr_ws_deflate_enabled(&c->ws));

  /* A compressed message in, a compressed echo out. */
  const char *msg = "hello hello hello hello hello hello";
  uint8_t z[128], frame[160];
  size_t zlen = client_deflate(msg, z, sizeof z);
  feed(&h, c, frame, client_frame(frame, 0x80 | 0x40 | MR_OP_TEXT, z, zlen, 1));
  uint8_t reply[256];
  len = take(&h, id, reply, sizeof reply);
  CHECK_EQ_INT(reply[0], 0x80 | 0x40 | MR_OP_TEXT);
  if (CHECK(len >= 2 && (reply[1] & 0x7F) == len - 2)) {
    uint8_t plain[128];
    z_stream zi;
    memset(&zi, 0, sizeof zi);
    inflateInit2(&zi, -15);
    uint8_t in[260];
    memcpy(in, reply + 2, len - 2);
    memcpy(in + len - 2, "\0\0\xff\xff", 4);
    zi.next_in = in;
    zi.avail_in = (uInt)(len + 2);
    zi.next_out = plain;
    zi.avail_out = sizeof plain;
    inflate(&zi, Z_SYNC_FLUSH);
    char want[128];
    snprintf(want, sizeof want, "text 1 %s", msg);
    CHECK_SPAN((const char *)plain, sizeof plain - zi.avail_out, want);
    inflateEnd(&zi);
  }
  /* Nothing is held by the connection once the message is done: its wslay
   * context went back to the pool, and the one deflate stream waits idle
   * in the server's pool, for every connection. */
  CHECK(c->ws.slot == NULL);
  CHECK(h.srv->zpool != NULL && mr_zpool_idle(h.srv->zpool) == 1);
  CHECK_EQ_INT(h.srv->stats.compressed_messages_in, 1);
  CHECK_EQ_INT(h.srv->stats.compressed_messages_out, 1);
  CHECK_EQ_INT(h.srv->stats.compression_negotiated, 1);
  /* A short reply goes plain (under the threshold), RSV1 per message. */
  send_frame(&h, id, MR_OP_TEXT, "hi", 2);
  len = take(&h, id, reply, sizeof reply);
  CHECK_EQ_INT(reply[0], 0x80 | MR_OP_TEXT);
  CHECK_SPAN((const char *)reply + 2, len - 2, "text 2 hi");
  h_stop(&h);
}

int main(void) {
  test_bad_close_after_ours();
  /* Refusals and closes log at info/warn; the checks say what matters.
   * MOONROOM_TEST_LOG=1 shows the server's log. */
  mr_log_set_level(getenv("MOONROOM_TEST_LOG")
                       ? MR_LOG_DEBUG
                       : (enum mr_log_level)(MR_LOG_ERROR + 1));
  test_upgrade();
  test_idle_footprint();
  test_upgrade_with_frames();
  test_refused_by_on_connect();
  test_101_after_on_connect();
  test_plain_get_404();
  test_upgrade_bytewise();
  test_messages();
  test_unmasked_frame();
  test_invalid_utf8();
  test_too_big();
  test_ping_pong();
  test_client_close();
  test_bad_close_frames();
  test_close_from_handler();
  test_backpressure();
  test_pong_backpressure();
  test_big_frame_to_drained();
  test_send_when_not_open();
  test_ws_pool();
  test_ping_queue_failure_is_counted();
  test_deflate_session();
  return test_report();
}
