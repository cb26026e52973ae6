/* Fuzz target: everything a client can send after a valid upgrade, through
 * the server's own connection path (frame tracker, wslay, limits, the close
 * handshake, the Lua bridge running scripts/echo.lua) on a virtual
 * connection. Each input is split in two feeds at a point it chooses, so
 * frames cut across reads are covered too. */
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

#include "bridge.h"
#include "config.h"
#include "conn.h"
#include "fuzz_target.h"
#include "log.h"
#include "server.h"

static const char upgrade[] =
    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

/* Masked client frames (mask key 0): text "hi", a ping, a fragmented text
 * message with a ping between its fragments, a close 1000. */
FUZZ_SEEDS(FUZZ_SEED("\x81\x82\x00\x00\x00\x00hi"),
           FUZZ_SEED("\x89\x83\x00\x00\x00\x00"
                     "abc\x81\x80\x00\x00\x00\x00"),
           FUZZ_SEED("\x01\x81\x00\x00\x00\x00"
                     "a\x89\x80\x00\x00\x00\x00"
                     "\x80\x81\x00\x00\x00\x00"
                     "b"),
           FUZZ_SEED("\x88\x82\x00\x00\x00\x00\x03\xe8"));

static uv_loop_t loop;
static mr_server srv;

static void setup(void) {
  static int done;
  if (done)
    return;
  done = 1;
  char *argv[] = {"moonroom", "--max-message",  "4096", "--max-backpressure",
                  "65536",    FUZZ_ECHO_SCRIPT, NULL};
  mr_config cfg;
  char err[1024];
  if (mr_config_parse(&cfg, 6, argv, err, sizeof err, stderr) != MR_CONFIG_RUN)
    abort();
  mr_log_set_level(MR_LOG_ERROR + 1); /* quiet: refusals are expected */
  uv_loop_init(&loop);
  mr_server_init(&srv, &loop, &cfg);
  if (!mr_bridge_new(&srv, FUZZ_ECHO_SCRIPT, err, sizeof err))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  mr_conn *c = mr_conn_new_virtual(&srv);
  if (!c)
    return 0;
  uint64_t id = c->id;
  mr_conn_feed(c, (const uint8_t *)upgrade, sizeof upgrade - 1);
  size_t cut = size ? data[0] % (size + 1) : 0;
  const uint8_t *parts[2] = {data, data + cut};
  size_t lens[2] = {cut, size - cut};
  for (int i = 0; i < 2; i++) {
    /* The connection may be gone after any feed. */
    if (!(c = mr_conn_find(&srv, id)))
      break;
    if (lens[i]) {
      uint8_t *copy = fuzz_copy(parts[i], lens[i]);
      if (!copy)
        break;
      mr_conn_feed(c, copy, lens[i]);
      free(copy);
    }
    if ((c = mr_conn_find(&srv, id)))
      mr_conn_virtual_drained(c);
    mr_server_flush(&srv);
  }
  /* Whatever state it is in, the connection must tear down cleanly. */
  if ((c = mr_conn_find(&srv, id))) {
    mr_conn_doom(c, 1006, "");
    mr_server_flush(&srv);
  }
  if (mr_conn_find(&srv, id))
    abort();
  return 0;
}
