/* Fuzz target: the permessage-deflate inflate path. The first byte picks
 * where the rest goes: even, straight to mr_inflate_message (whose output
 * must stay within the limit, and, deflated again by the server's own
 * mr_deflate_frame, inflate back to itself); odd, as the payload of a
 * compressed (RSV1) text or binary message on a virtual connection that
 * negotiated permessage-deflate, through wslay, the inflate, the UTF-8
 * check and scripts/echo.lua, whose compressed echo goes out again. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bridge.h"
#include "codec.h"
#include "config.h"
#include "conn.h"
#include "deflate.h"
#include "error.h"
#include "fuzz_target.h"
#include "log.h"
#include "server.h"

#define LIMIT 4096

static const char upgrade[] =
    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    "\r\n";

/* Mode byte, then what zlib makes for "hello" (sync flush, tail stripped),
 * the empty message, a stored block, and "hello" as a final block. */
FUZZ_SEEDS(FUZZ_SEED("\x00\xf2\x48\xcd\xc9\xc9\x07\x00"),
           FUZZ_SEED("\x01\xf2\x48\xcd\xc9\xc9\x07\x00"), FUZZ_SEED("\x00\x00"),
           FUZZ_SEED("\x03\x00\x05\x00\xfa\xffhello"),
           FUZZ_SEED("\x02\xcb\x48\xcd\xc9\xc9\x07\x00"));

static uv_loop_t loop;
static mr_server srv;
static mr_zpool *pool;

static void setup(void) {
  static int done;
  if (done)
    return;
  done = 1;
  char *argv[] = {
      "moonroom", "--max-message",  "4096", "--max-backpressure",
      "65536",    "--compression",  "on",   "--compression-threshold",
      "0",        FUZZ_ECHO_SCRIPT, NULL};
  mr_config cfg;
  char err[1024];
  if (mr_config_parse(&cfg, 10, argv, err, sizeof err, stderr) != MR_CONFIG_RUN)
    abort();
  mr_log_set_level(MR_LOG_ERROR + 1); /* quiet: refusals are expected */
  uv_loop_init(&loop);
  mr_server_init(&srv, &loop, &cfg);
  if (!mr_bridge_new(&srv, FUZZ_ECHO_SCRIPT, err, sizeof err))
    abort();
  if (!(pool = mr_zpool_new(1)))
    abort();
}

/* Straight to the inflater, and the round trip through the deflater with
 * a window of bits. */
static void inflate_direct(unsigned bits, const uint8_t *data, size_t size) {
  uint8_t *out;
  size_t out_len;
  int r = mr_inflate_message(pool, data, size, LIMIT, &out, &out_len);
  if (r != 0) {
    if ((r != MR_EDEFLATE && r != MR_ETOOBIG) || out)
      abort();
    return;
  }
  if (out_len > LIMIT || (out_len > 0) != (out != NULL))
    abort();
  mr_buf *f = NULL;
  if (mr_deflate_frame(pool, MR_OP_BINARY, bits, out, out_len, &f) != 0)
    abort();
  if (f) {
    size_t h = (f->data[1] & 0x7F) == 126 ? 4 : 2;
    uint8_t *back;
    size_t back_len;
    if ((f->data[0] & 0x40) == 0 ||
        mr_inflate_message(pool, f->data + h, f->len - h, LIMIT, &back,
                           &back_len) != 0 ||
        back_len != out_len || (out_len && memcmp(back, out, out_len) != 0))
      abort();
    free(back);
    mr_buf_release(f);
  }
  free(out);
}

/* As a compressed message on a connection. */
static void inflate_on_conn(int binary, const uint8_t *data, size_t size) {
  mr_conn *c = mr_conn_new_virtual(&srv);
  if (!c)
    return;
  uint64_t id = c->id;
  mr_conn_feed(c, (const uint8_t *)upgrade, sizeof upgrade - 1);
  static const uint8_t key[4] = {0, 0, 0, 0};
  uint8_t *frame = malloc(MR_FRAME_HEADER_MAX + size);
  if (frame && (c = mr_conn_find(&srv, id))) {
    size_t n = mr_frame_encode_client(
        frame, 1, 4, binary ? MR_OP_BINARY : MR_OP_TEXT, data, size, key);
    mr_conn_feed(c, frame, n);
  }
  free(frame);
  if ((c = mr_conn_find(&srv, id)))
    mr_conn_virtual_drained(c);
  mr_server_flush(&srv);
  if ((c = mr_conn_find(&srv, id))) {
    mr_conn_doom(c, MR_CLOSE_GOING_AWAY, "fuzz input done");
    mr_server_flush(&srv);
  }
  if (mr_conn_find(&srv, id))
    abort(); /* a connection that cannot be torn down */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  if (size == 0)
    return 0;
  uint8_t *copy = fuzz_copy(data + 1, size - 1);
  if (!copy)
    return 0;
  if (data[0] % 2 == 0)
    inflate_direct(9 + data[0] / 2 % 7, copy, size - 1);
  else
    inflate_on_conn(data[0] & 2, copy, size - 1);
  free(copy);
  return 0;
}
