/* A socket-less server for unit tests, shared by test_conn.c, test_server.c
 * and test_bridge.c.
 *
 * Why: those tests need the real server, the real bridge and real
 * connections, but no network. As the busted kit does (core/testkit.c), the
 * harness builds a real server on a private libuv loop that is never run,
 * loads a handler script into the real bridge, and drives virtual
 * connections with real HTTP upgrade requests and masked client frames,
 * reading what the server queued straight from the out-queue. Keeping one
 * copy here means a change to the server's internals (or to how a test
 * server is set up) is made once, not three times.
 *
 * mr_server_flush is the safe point where doomed connections are closed;
 * virtual connections are freed at once, so they are looked up by id.
 *
 * fixture() resolves tests/unit/fixtures/NAME from this header's own
 * __FILE__ (which lives in tests/unit/), so the tests keep working from any
 * working directory.
 *
 * Every function is static inline (and every object is marked unused), so a
 * test that does not use some of them still builds under -Wall -Wextra
 * -Werror. It includes test_util.h (CHECK and the counters) itself. */
#ifndef MR_VIRTUAL_SERVER_H
#define MR_VIRTUAL_SERVER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "bridge.h"
#include "codec.h"
#include "config.h"
#include "conn.h"
#include "error.h"
#include "log.h"
#include "server.h"
#include "test_util.h"

/* ---- paths --------------------------------------------------------------- */

/* tests/unit/fixtures/NAME, found from this header's path (tests/unit/) so
 * that the test does not depend on the working directory. */
static inline const char *fixture(const char *name) {
  static char path[4096];
  const char *slash = strrchr(__FILE__, '/');
  int dir = slash ? (int)(slash - __FILE__) : 1;
  snprintf(path, sizeof path, "%.*s/fixtures/%s", dir, slash ? __FILE__ : ".",
           name);
  return path;
}

/* ---- the server ---------------------------------------------------------- */

typedef struct {
  uv_loop_t loop;
  mr_server *srv;
  char script[4096];
} harness;

/* No extra command-line options. */
static const char *const no_opts[] __attribute__((unused)) = {NULL};

/* Prepares a virtual-only server for script without loading the script; opts
 * are extra command-line options (NULL-terminated, may be NULL). Returns 0
 * or -1. */
static inline int h_init(harness *h, const char *script,
                         const char *const *opts) {
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
  return 0;
}

/* h_init and the script loaded into the bridge. Returns 0 or -1. */
static inline int h_start(harness *h, const char *script,
                          const char *const *opts) {
  char err[2048];
  if (h_init(h, script, opts) != 0)
    return -1;
  if (!mr_bridge_new(h->srv, h->script, err, sizeof err)) {
    fprintf(stderr, "bridge: %s\n", err);
    mr_server_free(h->srv);
    free(h->srv);
    h->srv = NULL;
    uv_loop_close(&h->loop);
    return -1;
  }
  return 0;
}

/* Closes what is left (on_close runs) and frees everything. */
static inline void h_stop(harness *h) {
  if (!h->srv)
    return;
  size_t pos = 0;
  for (mr_conn *c; (c = mr_conn_next(h->srv, &pos));)
    mr_conn_doom(c, MR_CLOSE_GOING_AWAY, "test over");
  mr_server_flush(h->srv);
  CHECK(h->srv->conns.count == 0);
  mr_bridge_free(h->srv->bridge);
  h->srv->bridge = NULL;
  mr_server_free(h->srv);
  free(h->srv);
  h->srv = NULL;
  CHECK_EQ_INT(uv_loop_close(&h->loop), 0);
}

/* Writes src to a new temporary script (its path into path, cap >= 40),
 * for tests whose handler lives in the test file. The caller unlinks it.
 * Returns 0 or -1. */
static inline int write_temp_script(char *path, size_t cap, const char *src) {
  snprintf(path, cap, "/tmp/moonroom-unit-XXXXXX");
  int fd = mkstemp(path);
  if (fd < 0)
    return -1;
  size_t len = strlen(src);
  ssize_t n = write(fd, src, len);
  close(fd);
  return n == (ssize_t)len ? 0 : -1;
}

/* ---- the handshake ------------------------------------------------------- */

/* The RFC 6455 example key and its accept value. */
#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define RESP_101                                                               \
  "HTTP/1.1 101 Switching Protocols\r\n"                                       \
  "Upgrade: websocket\r\n"                                                     \
  "Connection: Upgrade\r\n"                                                    \
  "Sec-WebSocket-Accept: " ACCEPT "\r\n"                                       \
  "\r\n"

static inline int upgrade_request(char *out, size_t cap, const char *target) {
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

/* ---- the socket's side --------------------------------------------------- */

/* Feeds bytes as if read from the socket, then runs the safe point. */
static inline void feed(harness *h, mr_conn *c, const void *p, size_t n) {
  mr_conn_feed(c, (const uint8_t *)p, n);
  mr_server_flush(h->srv);
}

/* Copies everything queued for connection id into out (at most cap bytes)
 * without consuming it; returns the byte count. */
static inline size_t peek(harness *h, uint64_t id, uint8_t *out, size_t cap) {
  mr_conn *c = mr_conn_find(h->srv, id);
  if (!c)
    return 0;
  const uint8_t *ptrs[256];
  size_t lens[256];
  size_t n = mr_outq_peek(&c->tx.outq, ptrs, lens, 256);
  CHECK(n == c->tx.outq.count);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (total + lens[i] > cap) {
      CHECK(!"out-queue larger than the test buffer");
      break;
    }
    memcpy(out + total, ptrs[i], lens[i]);
    total += lens[i];
  }
  CHECK_EQ_INT(total, c->tx.outq.bytes);
  return total;
}

/* As a socket that wrote everything: copies the queue into out, tells the
 * connection it was drained and runs the safe point (which may free it). */
static inline size_t take(harness *h, uint64_t id, uint8_t *out, size_t cap) {
  size_t n = peek(h, id, out, cap);
  mr_conn *c = mr_conn_find(h->srv, id);
  if (c) {
    mr_conn_virtual_drained(c);
    mr_server_flush(h->srv);
  }
  return n;
}

/* True when connection id exists and nothing is queued for it. */
static inline int queue_empty(harness *h, uint64_t id) {
  mr_conn *c = mr_conn_find(h->srv, id);
  return c && c->tx.outq.count == 0 && c->tx.outq.bytes == 0;
}

/* Opens a virtual connection and sends the upgrade for target; returns the
 * connection's id (0 on failure). When the upgrade is expected to succeed,
 * the 101 is checked and taken, and 0 is returned if the connection is not
 * open. */
static inline uint64_t open_conn(harness *h, const char *target,
                                 int expect_open) {
  char req[512];
  int n = upgrade_request(req, sizeof req, target);
  mr_conn *c = mr_conn_new_virtual(h->srv);
  if (!CHECK(c != NULL))
    return 0;
  uint64_t id = c->id;
  feed(h, c, req, (size_t)n);
  if (!expect_open)
    return id;
  uint8_t out[512];
  size_t len = take(h, id, out, sizeof out);
  CHECK_SPAN((const char *)out, len, RESP_101);
  c = mr_conn_find(h->srv, id);
  return CHECK(c != NULL && mr_conn_is_open(c)) ? id : 0;
}

/* open_conn expecting the upgrade to succeed. */
static inline uint64_t open_ws(harness *h, const char *target) {
  return open_conn(h, target, 1);
}

/* ---- client frames ------------------------------------------------------- */

/* Encodes a client frame: b0 is the first byte (FIN, RSV, opcode). */
static inline size_t client_frame(uint8_t *out, int b0, const void *payload,
                                  size_t len, int masked) {
  static const uint8_t mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};
  return mr_frame_encode_client(out, b0 >> 7, (b0 >> 4) & 7, b0 & 0x0F, payload,
                                len, masked ? mask_key : NULL);
}

/* Sends one masked FIN frame with opcode op to connection id. */
static inline void send_frame(harness *h, uint64_t id, int op,
                              const void *payload, size_t len) {
  static uint8_t buf[70000];
  mr_conn *c = mr_conn_find(h->srv, id);
  if (!CHECK(c != NULL && len + 14 <= sizeof buf))
    return;
  feed(h, c, buf, client_frame(buf, 0x80 | op, payload, len, 1));
}

static inline void send_text(harness *h, uint64_t id, const char *text) {
  send_frame(h, id, MR_OP_TEXT, text, strlen(text));
}

static inline void send_close(harness *h, uint64_t id, unsigned code,
                              const char *reason) {
  uint8_t body[125];
  size_t rlen = strlen(reason);
  body[0] = (uint8_t)(code >> 8);
  body[1] = (uint8_t)code;
  memcpy(body + 2, reason, rlen);
  send_frame(h, id, MR_OP_CLOSE, body, 2 + rlen);
}

/* ---- server frames ------------------------------------------------------- */

/* A frame as the server sent it. */
typedef struct {
  int fin, rsv, op, masked;
  const uint8_t *data;
  size_t len;
} sframe;

/* Splits b[0..n) into frames; returns how many, or -1 when bytes are left
 * over that do not make a whole frame. */
static inline int decode(const uint8_t *b, size_t n, sframe *f, int max) {
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
    f[count].rsv = (b[pos] >> 4) & 0x07;
    f[count].op = b[pos] & 0x0f;
    f[count].data = b + pos + hl;
    f[count].len = (size_t)len;
    pos += hl + (size_t)len;
    count++;
  }
  return pos == n ? count : -1;
}

/* Takes what connection id was sent and checks it is exactly one unmasked
 * FIN frame, no RSV bits, with opcode op and payload text (len bytes). */
static inline void expect_frame(harness *h, uint64_t id, int op,
                                const char *text, size_t len, int line) {
  static uint8_t out[70000];
  size_t n = take(h, id, out, sizeof out);
  sframe f[4];
  int nf = decode(out, n, f, 4);
  if (!CHECK(nf == 1)) {
    fprintf(stderr, "  (line %d: %d frames in %zu bytes)\n", line, nf, n);
    return;
  }
  CHECK_EQ_INT(f[0].fin, 1);
  CHECK_EQ_INT(f[0].rsv, 0);
  CHECK_EQ_INT(f[0].masked, 0);
  CHECK_EQ_INT(f[0].op, op);
  if (!CHECK(f[0].len == len && memcmp(f[0].data, text, len) == 0))
    fprintf(stderr, "  (line %d: got \"%.*s\")\n", line, (int)f[0].len,
            (const char *)f[0].data);
}

#define EXPECT_TEXT(h, id, s)                                                  \
  expect_frame((h), (id), MR_OP_TEXT, (s), strlen(s), __LINE__)

/* Takes what connection id was sent and checks it is exactly one close
 * frame with code and reason. */
static inline void expect_close(harness *h, uint64_t id, unsigned code,
                                const char *reason, int line) {
  char body[128];
  body[0] = (char)(code >> 8);
  body[1] = (char)(code & 0xff);
  snprintf(body + 2, sizeof body - 2, "%s", reason);
  expect_frame(h, id, MR_OP_CLOSE, body, 2 + strlen(reason), line);
}

/* Checks that the queue of connection id holds exactly one close frame with
 * code and reason (peeked, not taken). */
static inline void expect_close_queued(harness *h, uint64_t id, unsigned code,
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

#endif
