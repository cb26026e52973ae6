/* Unit tests for one connection (core/conn.c): the handshake, the frame
 * path through wslay, close, backpressure and the wslay context pool.
 *
 * There are no sockets: as the busted kit does (core/testkit.c), each test
 * builds a real server on a private libuv loop that is never run, loads
 * tests/unit/fixtures/echo_observed.lua into the real bridge, and drives
 * virtual connections with real HTTP upgrade requests and masked client
 * frames, reading what the server queued straight from the out-queue.
 * mr_server_flush is the safe point where doomed connections are closed;
 * virtual connections are freed at once, so they are looked up by id. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bridge.h"
#include "codec.h"
#include "config.h"
#include "conn.h"
#include "error.h"
#include "log.h"
#include "server.h"
#include "test_util.h"

/* ---- harness ------------------------------------------------------------- */

/* tests/unit/fixtures/NAME, found from this file's path so that the test
 * does not depend on the working directory. */
static const char *fixture(const char *name) {
  static char path[4096];
  const char *slash = strrchr(__FILE__, '/');
  int dir = slash ? (int)(slash - __FILE__) : 1;
  snprintf(path, sizeof path, "%.*s/fixtures/%s", dir, slash ? __FILE__ : ".",
           name);
  return path;
}

typedef struct {
  uv_loop_t loop;
  mr_server *srv;
  char script[4096];
} harness;

/* Starts a virtual-only server running script; opts are extra command-line
 * options (NULL-terminated, may be NULL). Returns 0 or -1. */
static int h_start(harness *h, const char *script, const char *const *opts) {
  char *argv[32];
  int argc = 0;
  argv[argc++] = (char *)"moonroom";
  for (size_t i = 0; opts && opts[i] && argc < 30; i++)
    argv[argc++] = (char *)opts[i];
  snprintf(h->script, sizeof h->script, "%s", script);
  argv[argc++] = h->script;
  argv[argc] = NULL;
  mr_config cfg;
  char err[2048];
  if (mr_config_parse(&cfg, argc, argv, err, sizeof err, stderr) !=
      MR_CONFIG_RUN) {
    fprintf(stderr, "config: %s\n", err);
    return -1;
  }
  cfg.script = h->script;
  if (uv_loop_init(&h->loop) != 0)
    return -1;
  h->srv = calloc(1, sizeof *h->srv);
  if (!h->srv)
    return -1;
  mr_server_init(h->srv, &h->loop, &cfg);
  h->srv->virtual_only = 1;
  if (!mr_bridge_new(h->srv, h->script, err, sizeof err)) {
    fprintf(stderr, "bridge: %s\n", err);
    mr_server_free(h->srv);
    free(h->srv);
    uv_loop_close(&h->loop);
    h->srv = NULL;
    return -1;
  }
  return 0;
}

/* Closes what is left (on_close runs) and frees everything. */
static void h_stop(harness *h) {
  if (!h->srv)
    return;
  for (mr_conn *c = h->srv->all_head; c; c = c->next)
    mr_conn_doom(c, MR_CLOSE_GOING_AWAY, "test over");
  mr_server_flush(h->srv);
  CHECK(h->srv->all_head == NULL);
  mr_bridge_free(h->srv->bridge);
  h->srv->bridge = NULL;
  mr_server_free(h->srv);
  free(h->srv);
  h->srv = NULL;
  CHECK_EQ_INT(uv_loop_close(&h->loop), 0);
}

/* The RFC 6455 example key and its accept value. */
#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define RESP_101                                                               \
  "HTTP/1.1 101 Switching Protocols\r\n"                                       \
  "Upgrade: websocket\r\n"                                                     \
  "Connection: Upgrade\r\n"                                                    \
  "Sec-WebSocket-Accept: " ACCEPT "\r\n"                                       \
  "\r\n"

static int upgrade_request(char *out, size_t cap, const char *target) {
  return snprintf(out, cap,
                  "GET %s HTTP/1.1\r\n"
                  "Host: example.test\r\n"
                  "Upgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  "Sec-WebSocket-Key: " KEY "\r\n"
                  "Sec-WebSocket-Version: 13\r\n"
                  "\r\n",
                  target);
}

/* Feeds bytes as if read from the socket, then runs the safe point. */
static void feed(harness *h, mr_conn *c, const void *p, size_t n) {
  mr_conn_feed(c, (const uint8_t *)p, n);
  mr_server_flush(h->srv);
}

/* Copies everything queued for connection id into out (at most cap bytes)
 * without consuming it; returns the byte count. */
static size_t peek(harness *h, uint64_t id, uint8_t *out, size_t cap) {
  mr_conn *c = mr_server_find(h->srv, id);
  if (!c)
    return 0;
  const uint8_t *ptrs[256];
  size_t lens[256];
  size_t n = mr_outq_peek(&c->outq, ptrs, lens, 256);
  CHECK(n == c->outq.count);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (total + lens[i] > cap) {
      CHECK(!"out-queue larger than the test buffer");
      break;
    }
    memcpy(out + total, ptrs[i], lens[i]);
    total += lens[i];
  }
  CHECK_EQ_INT(total, c->outq.bytes);
  return total;
}

/* As a socket that wrote everything: copies the queue into out, tells the
 * connection it was drained and runs the safe point (which may free it). */
static size_t take(harness *h, uint64_t id, uint8_t *out, size_t cap) {
  size_t n = peek(h, id, out, cap);
  mr_conn *c = mr_server_find(h->srv, id);
  if (c) {
    mr_conn_virtual_drained(c);
    mr_server_flush(h->srv);
  }
  return n;
}

/* Opens a virtual connection to target and completes the upgrade; the 101
 * is checked and taken. Returns the connection's id (0 on failure). */
static uint64_t open_ws(harness *h, const char *target) {
  char req[512];
  int n = upgrade_request(req, sizeof req, target);
  mr_conn *c = mr_conn_new_virtual(h->srv);
  if (!CHECK(c != NULL))
    return 0;
  uint64_t id = c->id;
  feed(h, c, req, (size_t)n);
  uint8_t out[512];
  size_t len = take(h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, len, RESP_101);
  c = mr_server_find(h->srv, id);
  return CHECK(c != NULL && mr_conn_is_open(c)) ? id : 0;
}

static const uint8_t mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Encodes a client frame: b0 is the first byte (FIN, RSV, opcode). */
static size_t client_frame(uint8_t *out, int b0, const void *payload,
                           size_t len, int masked) {
  const uint8_t *p = payload;
  size_t n = 0;
  uint8_t m = masked ? 0x80 : 0;
  out[n++] = (uint8_t)b0;
  if (len < 126) {
    out[n++] = (uint8_t)(m | len);
  } else if (len <= 0xffff) {
    out[n++] = (uint8_t)(m | 126);
    out[n++] = (uint8_t)(len >> 8);
    out[n++] = (uint8_t)len;
  } else {
    out[n++] = (uint8_t)(m | 127);
    for (int i = 7; i >= 0; i--)
      out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
  }
  if (masked) {
    memcpy(out + n, mask_key, 4);
    n += 4;
  }
  for (size_t i = 0; i < len; i++)
    out[n + i] = masked ? (uint8_t)(p[i] ^ mask_key[i & 3]) : p[i];
  return n + len;
}

/* Sends one masked FIN frame with opcode op to connection id. */
static void send_frame(harness *h, uint64_t id, int op, const void *payload,
                       size_t len) {
  static uint8_t buf[70000];
  mr_conn *c = mr_server_find(h->srv, id);
  if (!CHECK(c != NULL && len + 14 <= sizeof buf))
    return;
  feed(h, c, buf, client_frame(buf, 0x80 | op, payload, len, 1));
}

static void send_close(harness *h, uint64_t id, unsigned code,
                       const char *reason) {
  uint8_t body[125];
  size_t rlen = strlen(reason);
  body[0] = (uint8_t)(code >> 8);
  body[1] = (uint8_t)code;
  memcpy(body + 2, reason, rlen);
  send_frame(h, id, MR_OP_CLOSE, body, 2 + rlen);
}

/* A frame as the server sent it. */
typedef struct {
  int fin, op, masked;
  const uint8_t *data;
  size_t len;
} sframe;

/* Splits out[0..n) into frames; returns how many, or -1 when bytes are left
 * over that do not make a whole frame. */
static int decode(const uint8_t *b, size_t n, sframe *f, int max) {
  size_t pos = 0;
  int count = 0;
  while (pos < n && count < max) {
    if (n - pos < 2)
      return -1;
    size_t hl = 2;
    uint64_t len = b[pos + 1] & 0x7f;
    if (len == 126) {
      if (n - pos < 4)
        return -1;
      len = (uint64_t)b[pos + 2] << 8 | b[pos + 3];
      hl = 4;
    } else if (len == 127) {
      if (n - pos < 10)
        return -1;
      len = 0;
      for (int i = 0; i < 8; i++)
        len = len << 8 | b[pos + 2 + i];
      hl = 10;
    }
    f[count].masked = (b[pos + 1] & 0x80) != 0;
    if (f[count].masked)
      hl += 4;
    if (n - pos < hl || n - pos - hl < len)
      return -1;
    f[count].fin = b[pos] >> 7;
    f[count].op = b[pos] & 0x0f;
    f[count].data = b + pos + hl;
    f[count].len = (size_t)len;
    pos += hl + (size_t)len;
    count++;
  }
  return pos == n ? count : -1;
}

/* Takes what connection id was sent and checks it is exactly one unmasked
 * FIN frame with opcode op and payload text (len bytes). */
static void expect_frame(harness *h, uint64_t id, int op, const char *text,
                         size_t len, int line) {
  static uint8_t out[70000];
  size_t n = take(h, id, out, sizeof out);
  sframe f[4];
  int nf = decode(out, n, f, 4);
  if (!CHECK(nf == 1)) {
    fprintf(stderr, "  (line %d: %d frames in %zu bytes)\n", line, nf, n);
    return;
  }
  CHECK_EQ_INT(f[0].fin, 1);
  CHECK_EQ_INT(f[0].masked, 0);
  CHECK_EQ_INT(f[0].op, op);
  if (!CHECK(f[0].len == len && memcmp(f[0].data, text, len) == 0))
    fprintf(stderr, "  (line %d: got \"%.*s\")\n", line, (int)f[0].len,
            (const char *)f[0].data);
}

#define EXPECT_TEXT(h, id, s)                                                  \
  expect_frame((h), (id), MR_OP_TEXT, (s), strlen(s), __LINE__)

/* Checks that the queue of connection id holds exactly one close frame with
 * code and reason (peeked, not taken). */
static void expect_close_queued(harness *h, uint64_t id, unsigned code,
                                const char *reason) {
  uint8_t out[512];
  size_t n = peek(h, id, out, sizeof out);
  sframe f[4];
  int nf = decode(out, n, f, 4);
  if (!CHECK(nf == 1))
    return;
  CHECK_EQ_INT(f[0].op, MR_OP_CLOSE);
  CHECK_EQ_INT(f[0].fin, 1);
  CHECK_EQ_INT(f[0].masked, 0);
  if (!CHECK(f[0].len >= 2))
    return;
  CHECK_EQ_INT((unsigned)f[0].data[0] << 8 | f[0].data[1], code);
  CHECK_SPAN((const char *)f[0].data + 2, f[0].len - 2, reason);
}

static int queue_empty(harness *h, uint64_t id) {
  mr_conn *c = mr_server_find(h->srv, id);
  return c && c->outq.count == 0 && c->outq.bytes == 0;
}

static const char *const no_opts[] = {NULL};

/* ---- handshake ----------------------------------------------------------- */

static void test_upgrade(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  mr_conn *c = mr_conn_new_virtual(h.srv);
  uint64_t id = c->id;
  CHECK_EQ_INT(c->state, MR_CONN_HANDSHAKE);
  CHECK(mr_server_find(h.srv, id) == c);
  CHECK_EQ_INT(h.srv->stats.connections_accepted, 1);

  char req[512];
  int n = upgrade_request(req, sizeof req, "/chat?x=1");
  feed(&h, c, req, (size_t)n);
  CHECK(mr_server_find(h.srv, id) == c);
  CHECK_EQ_INT(c->state, MR_CONN_OPEN);
  CHECK(c->head == NULL); /* freed on upgrade */
  CHECK_EQ_INT(h.srv->stats.connections_open, 1);
  CHECK_EQ_INT(h.srv->stats.handshakes_refused, 0);
  CHECK_EQ_INT(h.srv->stats.bytes_in, n);
  CHECK_EQ_INT(c->outq.count, 1);
  uint8_t out[512];
  size_t len = take(&h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, len, RESP_101);
  /* Drained, an open connection stays. */
  CHECK(mr_server_find(h.srv, id) == c);
  CHECK(queue_empty(&h, id));
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
  CHECK(mr_server_find(h.srv, id) == NULL);
  CHECK(queue_empty(&h, obs));

  /* Refusing without a valid status gives 403 and the default body. */
  n = upgrade_request(req, sizeof req, "/?refuse=0");
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
  CHECK(mr_server_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->stats.handler_refusals, 2);
  CHECK(queue_empty(&h, obs));
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
  CHECK(mr_server_find(h.srv, id) == NULL);
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
    if (c->state != MR_CONN_HANDSHAKE || c->outq.count != 0)
      early++;
  }
  CHECK_EQ_INT(early, 0);
  CHECK_EQ_INT(c->head_len, head - 1);
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
  feed(&h, mr_server_find(h.srv, id), buf, n);
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
  mr_conn *c = mr_server_find(h.srv, id);
  feed(&h, c, buf, n);
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  CHECK_EQ_INT(c->closing_how, MR_CLOSING_AFTER_FLUSH);
  expect_close_queued(&h, id, 1002, "");
  CHECK_EQ_INT(h.srv->stats.protocol_errors, 1);
  CHECK_EQ_INT(h.srv->stats.messages_in, 0); /* on_message never ran */
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  CHECK(mr_server_find(h.srv, id) == NULL);
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
  mr_conn *c = mr_server_find(h.srv, id);
  if (!CHECK(c != NULL))
    return;
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  expect_close_queued(&h, id, 1007, "");
  CHECK_EQ_INT(h.srv->stats.invalid_utf8, 1);
  CHECK_EQ_INT(h.srv->stats.messages_in, 0);
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  CHECK(mr_server_find(h.srv, id) == NULL);
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
  mr_conn *c = mr_server_find(h.srv, id);
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
  CHECK(mr_server_find(h.srv, id) == NULL);
  snprintf(expect, sizeof expect,
           "close %llu 1009 message larger than --max-message",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, expect);

  /* A fragmented message counts its fragments together: 60 + 60 > 100 is
   * refused at the second header. */
  id = open_ws(&h, "/");
  c = mr_server_find(h.srv, id);
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

static void test_ping_pong(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), no_opts) == 0))
    return;
  uint64_t id = open_ws(&h, "/");
  send_frame(&h, id, MR_OP_PING, "abc", 3);
  expect_frame(&h, id, MR_OP_PONG, "abc", 3, __LINE__);
  send_frame(&h, id, MR_OP_PING, "", 0);
  expect_frame(&h, id, MR_OP_PONG, "", 0, __LINE__);
  mr_conn *c = mr_server_find(h.srv, id);
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
  mr_conn *c = mr_server_find(h.srv, id);
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
  CHECK(mr_server_find(h.srv, id) == NULL);
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
  CHECK(mr_server_find(h.srv, id) == NULL);
  snprintf(line, sizeof line, "close %llu 1002 malformed frame",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);

  /* A code nobody may send (1005 means "no code" and is never sent). */
  id = open_ws(&h, "/");
  send_close(&h, id, 1005, "");
  expect_close_queued(&h, id, 1002, "");
  CHECK_EQ_INT(h.srv->stats.protocol_errors, 2);
  take(&h, id, out, sizeof out);
  CHECK(mr_server_find(h.srv, id) == NULL);
  snprintf(line, sizeof line, "close %llu 1002 protocol error",
           (unsigned long long)id);
  EXPECT_TEXT(&h, obs, line);

  /* An empty close is fine: on_close hears 1005, "no status". */
  id = open_ws(&h, "/");
  send_frame(&h, id, MR_OP_CLOSE, "", 0);
  mr_conn *c = mr_server_find(h.srv, id);
  CHECK(c != NULL && c->state == MR_CONN_CLOSING);
  take(&h, id, out, sizeof out);
  CHECK(mr_server_find(h.srv, id) == NULL);
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
  mr_conn *c = mr_server_find(h.srv, id);
  CHECK_EQ_INT(mr_conn_close(c, 4001, "srv", 3), 0);
  expect_close_queued(&h, id, 4001, "srv");
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  c = mr_server_find(h.srv, id);
  if (CHECK(c != NULL))
    feed(&h, c, "\x88\x81\x01\x02\x03\x04\x02", 7);
  if ((c = mr_server_find(h.srv, id)))
    CHECK(c->outq.count == 0); /* no second close frame */
  take(&h, id, out, sizeof out);
  CHECK(mr_server_find(h.srv, id) == NULL);
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
  mr_conn *c = mr_server_find(h.srv, id);
  feed(&h, c, buf, n);
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  CHECK_EQ_INT(c->closing_how, MR_CLOSING_AWAIT_PEER);
  expect_close_queued(&h, id, 4002, "asked");
  CHECK_EQ_INT(h.srv->stats.messages_in, 1);
  uint8_t out[256];
  take(&h, id, out, sizeof out);
  CHECK(mr_server_find(h.srv, id) == c); /* waits for the peer */
  CHECK(queue_empty(&h, obs));
  send_close(&h, id, 4002, "");
  CHECK(queue_empty(&h, id)); /* no second close frame */
  take(&h, id, out, sizeof out);
  CHECK(mr_server_find(h.srv, id) == NULL);
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
  mr_conn *c = mr_server_find(h.srv, id);
  char msg[100];
  memset(msg, 'b', sizeof msg);
  /* Each frame is 102 bytes; the limit is judged on what is waiting before
   * the new frame, so 11 frames (1122 bytes) go in and the 12th dooms. */
  int sent = 0, r = 0;
  while (sent < 100 && (r = mr_conn_send(c, msg, sizeof msg, 0)) == 0)
    sent++;
  CHECK_EQ_INT(sent, 11);
  CHECK_EQ_INT(r, MR_ECLOSED);
  CHECK_EQ_INT(c->outq.bytes, 11 * 102);
  CHECK(c->flags & MR_CF_DOOMED);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  CHECK_EQ_INT(mr_conn_send(c, msg, 1, 0), MR_ECLOSED);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  /* Doomed is not yet closed: the connection lives until the safe point. */
  CHECK(mr_server_find(h.srv, id) == c);
  CHECK(queue_empty(&h, obs));
  mr_server_flush(h.srv);
  CHECK(mr_server_find(h.srv, id) == NULL);
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
  mr_conn *c = mr_server_find(h.srv, id);
  /* 127 bytes a pong: 9 of them (1143 bytes) go in, the 10th dooms. */
  for (int i = 0; i < 9; i++)
    send_frame(&h, id, MR_OP_PING, payload, sizeof payload);
  CHECK(mr_server_find(h.srv, id) == c);
  CHECK_EQ_INT(c->outq.bytes, 9 * 127);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 0);
  uint8_t buf[256];
  size_t n = client_frame(buf, 0x80 | MR_OP_PING, payload, sizeof payload, 1);
  mr_conn_feed(c, buf, n);
  CHECK(c->flags & MR_CF_DOOMED);
  CHECK_EQ_INT(c->outq.bytes, 9 * 127); /* no part of the 10th */
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  mr_server_flush(h.srv);
  CHECK(mr_server_find(h.srv, id) == NULL);
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
  mr_conn *c = mr_server_find(h.srv, id);
  static char big[4000];
  memset(big, 'B', sizeof big);
  CHECK_EQ_INT(mr_conn_send(c, big, sizeof big, 1), 0);
  CHECK_EQ_INT(c->outq.count, 1);
  CHECK_EQ_INT(c->outq.bytes, 4 + sizeof big);
  CHECK(!(c->flags & MR_CF_DOOMED));
  expect_frame(&h, id, MR_OP_BINARY, big, sizeof big, __LINE__);
  c = mr_server_find(h.srv, id);
  if (!CHECK(c != NULL))
    return;
  CHECK_EQ_INT(mr_conn_send(c, big, sizeof big, 1), 0);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 0);
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), MR_ECLOSED);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  mr_server_flush(h.srv);
  CHECK(mr_server_find(h.srv, id) == NULL);

  /* The boundary: exactly the limit waiting still takes one more. */
  id = open_ws(&h, "/");
  c = mr_server_find(h.srv, id);
  CHECK_EQ_INT(mr_conn_send(c, big, 1020, 0), 0);
  CHECK_EQ_INT(c->outq.bytes, 1024);
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), 0);
  CHECK_EQ_INT(c->outq.bytes, 1027);
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
  CHECK_EQ_INT(c->outq.count, 0);

  /* Closing (our close frame is out). */
  uint64_t id = open_ws(&h, "/");
  c = mr_server_find(h.srv, id);
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
  CHECK(mr_server_find(h.srv, id) == c);
  send_close(&h, id, 4001, "");
  take(&h, id, out, sizeof out);
  CHECK(mr_server_find(h.srv, id) == NULL);

  /* Doomed. */
  id = open_ws(&h, "/");
  c = mr_server_find(h.srv, id);
  mr_conn_doom(c, MR_CLOSE_POLICY, "policy");
  CHECK_EQ_INT(c->state, MR_CONN_OPEN);
  CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), MR_ECLOSED);
  CHECK_EQ_INT(mr_conn_send_frame(c, frame), MR_ECLOSED);
  CHECK_EQ_INT(mr_conn_close(c, 1000, "", 0), MR_ECLOSED);
  CHECK_EQ_INT(c->outq.count, 0);
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
  mr_conn *c = mr_server_find(h.srv, id);
  CHECK(c->ws == NULL); /* none until the first frame */
  CHECK_EQ_INT(h.srv->ws_pool_len, 0);
  send_frame(&h, id, MR_OP_TEXT, "one", 3);
  EXPECT_TEXT(&h, id, "text 1 one");
  CHECK(c->ws == NULL);
  CHECK_EQ_INT(h.srv->ws_pool_len, 1);

  /* Half a frame: wslay holds state, so the context stays attached. */
  uint8_t buf[64];
  size_t n = client_frame(buf, 0x80 | MR_OP_TEXT, "two!", 4, 1);
  feed(&h, c, buf, n / 2);
  CHECK(c->ws != NULL);
  CHECK_EQ_INT(h.srv->ws_pool_len, 0);
  CHECK(queue_empty(&h, id));
  /* Another connection meanwhile gets a context of its own. */
  uint64_t id2 = open_ws(&h, "/");
  mr_conn *c2 = mr_server_find(h.srv, id2);
  send_frame(&h, id2, MR_OP_TEXT, "other", 5);
  EXPECT_TEXT(&h, id2, "text 1 other");
  CHECK(c2->ws == NULL);
  CHECK(c->ws != NULL);
  CHECK_EQ_INT(h.srv->ws_pool_len, 1);
  feed(&h, c, buf + n / 2, n - n / 2);
  EXPECT_TEXT(&h, id, "text 2 two!");
  CHECK(c->ws == NULL);
  CHECK_EQ_INT(h.srv->ws_pool_len, 2);

  /* Between the fragments of a message, too. */
  n = client_frame(buf, MR_OP_TEXT, "th", 2, 1);
  feed(&h, c, buf, n);
  CHECK(c->ws != NULL);
  CHECK_EQ_INT(h.srv->ws_pool_len, 1);
  CHECK(queue_empty(&h, id));
  n = client_frame(buf, 0x80 | MR_OP_CONT, "ree", 3, 1);
  feed(&h, c, buf, n);
  EXPECT_TEXT(&h, id, "text 3 three");
  CHECK(c->ws == NULL);
  CHECK_EQ_INT(h.srv->ws_pool_len, 2);

  /* A pooled context serves the next connection as good as new. */
  for (int i = 0; i < 3; i++) {
    send_frame(&h, id2, MR_OP_TEXT, "again", 5);
    CHECK(c2->ws == NULL);
  }
  CHECK_EQ_INT(h.srv->ws_pool_len, 2);
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
  CHECK(c->ws != NULL);
  CHECK_EQ_INT(h.srv->ws_pool_len, 1);
  take(&h, id, out, sizeof out);
  CHECK(mr_server_find(h.srv, id) == NULL);
  CHECK_EQ_INT(h.srv->ws_pool_len, 1);
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
  test_upgrade_with_frames();
  test_refused_by_on_connect();
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
  return test_report();
}
