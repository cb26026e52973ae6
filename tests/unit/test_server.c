/* Unit tests for the server (core/server.c): room broadcasts (encoded once
 * and shared), remote deliveries, closes deferred to the safe point during a
 * fan-out, and shutdown of a server without sockets (which drops pending
 * script timers).
 *
 * Same approach as tests/unit/test_conn.c: a socket-less server with
 * tests/unit/fixtures/echo_observed.lua as the script, and virtual
 * connections driven through the harness in tests/unit/virtual_server.h. */
#include <unistd.h>

#include "broadcast.h"
#include "rooms.h"
#include "virtual_server.h"

/* ---- queue inspection ---------------------------------------------------- */

/* The first queued block of c, or NULL. */
static mr_buf *first_buf(const mr_conn *c) {
  return c && c->tx.outq.count ? c->tx.outq.ring[c->tx.outq.head] : NULL;
}

/* Checks that the queue of c holds exactly one block with these bytes. */
static void expect_queued(const mr_conn *c, const void *bytes, size_t len,
                          int line) {
  mr_buf *b = first_buf(c);
  int ok = c && c->tx.outq.count == 1 && c->tx.outq.bytes == len && b &&
           b->len == len && memcmp(b->data, bytes, len) == 0;
  test_record(ok, __FILE__, line, "expected exactly one queued frame");
}

/* A text frame as the server encodes it (payload under 126 bytes). */
static size_t text_frame(uint8_t *out, const char *text) {
  size_t len = strlen(text);
  out[0] = 0x80 | MR_OP_TEXT;
  out[1] = (uint8_t)len;
  memcpy(out + 2, text, len);
  return 2 + len;
}

#define EXPECT_TEXT_QUEUED(c, text)                                            \
  do {                                                                         \
    uint8_t f_[256];                                                           \
    expect_queued((c), f_, text_frame(f_, (text)), __LINE__);                  \
  } while (0)

/* ---- broadcasts ---------------------------------------------------------- */

static void test_broadcast_shares_one_frame(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), NULL) == 0))
    return;
  uint64_t ids[4];
  mr_conn *m[3];
  for (int i = 0; i < 3; i++) {
    ids[i] = open_ws(&h, "/?room=lobby");
    m[i] = mr_conn_find(h.srv, ids[i]);
  }
  ids[3] = open_ws(&h, "/?room=other");
  mr_conn *outsider = mr_conn_find(h.srv, ids[3]);
  mr_room *room = mr_rooms_find(&h.srv->rooms, "lobby", 5);
  if (!CHECK(room != NULL && room->count == 3))
    return;
  uint64_t out0 = h.srv->stats.messages_out;

  CHECK_EQ_INT(mr_broadcast_local(h.srv, "lobby", 5, "news", 4, 0, NULL), 3);
  /* `broadcasts` counts what scripts send (mr_server_broadcast), not the
   * local fan-out that remote deliveries use too. */
  CHECK_EQ_INT(h.srv->stats.broadcasts, 0);
  CHECK_EQ_INT(h.srv->stats.messages_out - out0, 3);
  uint8_t want[] = {0x81, 4, 'n', 'e', 'w', 's'};
  for (int i = 0; i < 3; i++)
    expect_queued(m[i], want, sizeof want, __LINE__);
  /* Encoded once: every queue holds the same block, and only the queues
   * hold it (the broadcast released its own reference). */
  mr_buf *b = first_buf(m[0]);
  CHECK(b != NULL && first_buf(m[1]) == b && first_buf(m[2]) == b);
  if (b)
    CHECK_EQ_INT(b->refs, 3);
  CHECK_EQ_INT(outsider->tx.outq.count, 0);
  /* A reference goes with each drained queue. */
  uint8_t out[64];
  take(&h, ids[0], out, sizeof out);
  if (b)
    CHECK_EQ_INT(b->refs, 2);
  take(&h, ids[1], out, sizeof out);
  if (b)
    CHECK_EQ_INT(b->refs, 1);
  take(&h, ids[2], out, sizeof out);

  /* Binary. */
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "lobby", 5, "\x00\x01", 2, 1, NULL),
               3);
  uint8_t wantb[] = {0x82, 2, 0x00, 0x01};
  for (int i = 0; i < 3; i++)
    expect_queued(m[i], wantb, sizeof wantb, __LINE__);
  for (int i = 0; i < 3; i++)
    take(&h, ids[i], out, sizeof out);

  /* `except` skips that member only. */
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "lobby", 5, "but", 3, 0, m[1]), 2);
  EXPECT_TEXT_QUEUED(m[0], "but");
  CHECK_EQ_INT(m[1]->tx.outq.count, 0);
  EXPECT_TEXT_QUEUED(m[2], "but");
  b = first_buf(m[0]);
  CHECK(b != NULL && first_buf(m[2]) == b);
  if (b)
    CHECK_EQ_INT(b->refs, 2);
  /* A connection that is not a member as `except` changes nothing. */
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "lobby", 5, "x", 1, 0, outsider), 3);
  CHECK_EQ_INT(outsider->tx.outq.count, 0);
  CHECK_EQ_INT(h.srv->stats.broadcasts, 0);

  /* An unknown room (names are exact bytes): nobody, nothing counted. */
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "nowhere", 7, "x", 1, 0, NULL), 0);
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "lobb", 4, "x", 1, 0, NULL), 0);
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "Lobby", 5, "x", 1, 0, NULL), 0);
  CHECK_EQ_INT(h.srv->stats.broadcasts, 0);
  CHECK_EQ_INT(m[0]->tx.outq.count, 2);

  /* mr_server_broadcast without a cluster is the local broadcast. */
  CHECK(h.srv->cluster == NULL);
  CHECK_EQ_INT(mr_broadcast(h.srv, "other", 5, "o", 1, 0, NULL), 1);
  CHECK_EQ_INT(h.srv->stats.broadcasts, 1);
  EXPECT_TEXT_QUEUED(outsider, "o");
  CHECK_EQ_INT(h.srv->stats.cluster_broadcasts_out, 0);
  h_stop(&h);
}

static void test_deliver_remote(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), NULL) == 0))
    return;
  uint64_t a = open_ws(&h, "/?room=r");
  mr_conn *ca = mr_conn_find(h.srv, a);
  uint64_t b = open_ws(&h, "/?room=r");
  mr_conn *cb = mr_conn_find(h.srv, b);
  CHECK(h.srv->cluster == NULL);
  CHECK_EQ_INT(mr_broadcast_remote(h.srv, "r", 1, "from afar", 9, 0), 2);
  CHECK_EQ_INT(h.srv->stats.cluster_broadcasts_in, 1);
  CHECK_EQ_INT(h.srv->stats.cluster_broadcasts_out, 0);
  EXPECT_TEXT_QUEUED(ca, "from afar");
  EXPECT_TEXT_QUEUED(cb, "from afar");
  CHECK(first_buf(ca) == first_buf(cb));
  /* Counted even when nobody here is in the room. */
  CHECK_EQ_INT(mr_broadcast_remote(h.srv, "empty", 5, "x", 1, 0), 0);
  CHECK_EQ_INT(h.srv->stats.cluster_broadcasts_in, 2);
  CHECK_EQ_INT(h.srv->stats.cluster_broadcasts_out, 0);
  CHECK_EQ_INT(h.srv->stats.broadcasts, 0); /* deliveries are not sends */
  CHECK(h.srv->cluster == NULL);
  h_stop(&h);
}

/* A member doomed in the middle of a fan-out stays in the room's member
 * array (the loop over it must not shift) until the safe point. */
static void test_doomed_during_fanout(void) {
  static const char *const opts[] = {"--max-backpressure", "1024", NULL};
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), opts) == 0))
    return;
  uint64_t ids[3];
  uint64_t obs = open_ws(&h, "/?observe=1");
  mr_conn *o = mr_conn_find(h.srv, obs);
  mr_conn *m[3];
  for (int i = 0; i < 3; i++) {
    ids[i] = open_ws(&h, "/?room=r");
    m[i] = mr_conn_find(h.srv, ids[i]);
  }
  /* The middle member does not read: 1004 bytes already wait. */
  static char filler[1000];
  memset(filler, 'f', sizeof filler);
  CHECK_EQ_INT(mr_conn_send(m[1], filler, sizeof filler, 0), 0);
  CHECK_EQ_INT(m[1]->tx.outq.bytes, 1004);

  char msg[100];
  memset(msg, 'a', sizeof msg);
  /* Under the limit before the frame: queued (1106 bytes now). */
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "r", 1, msg, 100, 0, NULL), 3);
  CHECK_EQ_INT(m[1]->tx.outq.bytes, 1106);
  CHECK(!(m[1]->flags & MR_CF_DOOMED));
  uint8_t out[256];
  take(&h, ids[0], out, sizeof out);
  take(&h, ids[2], out, sizeof out);

  /* Over it: doomed, the others still get the frame. */
  memset(msg, 'b', sizeof msg);
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "r", 1, msg, 100, 0, NULL), 2);
  CHECK(m[1]->flags & MR_CF_DOOMED);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  mr_room *room = mr_rooms_find(&h.srv->rooms, "r", 1);
  if (CHECK(room != NULL)) {
    CHECK_EQ_INT(room->count, 3);
    CHECK(room->members[1].member == &m[1]->member);
    CHECK(mr_rooms_is_member(&m[1]->member, room));
  }
  uint8_t want[102] = {0x81, 100};
  memset(want + 2, 'b', 100);
  expect_queued(m[0], want, sizeof want, __LINE__);
  expect_queued(m[2], want, sizeof want, __LINE__);
  CHECK(first_buf(m[0]) == first_buf(m[2]));
  CHECK_EQ_INT(m[1]->tx.outq.bytes, 1106); /* nothing more for the doomed */
  /* A further broadcast skips the doomed member. */
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "r", 1, "c", 1, 0, NULL), 2);
  CHECK_EQ_INT(h.srv->stats.backpressure_closes, 1);
  CHECK_EQ_INT(o->tx.outq.count, 0);

  /* The safe point closes it and takes it out of the room. */
  mr_server_flush(h.srv);
  CHECK(mr_conn_find(h.srv, ids[1]) == NULL);
  room = mr_rooms_find(&h.srv->rooms, "r", 1);
  if (CHECK(room != NULL)) {
    CHECK_EQ_INT(room->count, 2);
    CHECK(mr_rooms_is_member(&m[0]->member, room));
    CHECK(mr_rooms_is_member(&m[2]->member, room));
  }
  CHECK_EQ_INT(m[0]->tx.outq.count, 2);
  CHECK_EQ_INT(m[2]->tx.outq.count, 2);
  char line[80];
  snprintf(line, sizeof line, "close %llu 1008 backpressure limit exceeded",
           (unsigned long long)ids[1]);
  EXPECT_TEXT_QUEUED(o, line);
  CHECK_EQ_INT(mr_broadcast_local(h.srv, "r", 1, "d", 1, 0, NULL), 2);
  h_stop(&h);
}

/* ---- shutdown ------------------------------------------------------------ */

/* Reads the whole file at path into buf (NUL-terminated). */
static void read_text(const char *path, char *buf, size_t cap) {
  buf[0] = '\0';
  FILE *f = fopen(path, "rb");
  if (!f)
    return;
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
}

static void test_shutdown(void) {
  /* on_close reports to this file: no connection stays open to hear it. */
  char log_path[] = "/tmp/moonroom-unit-server-XXXXXX";
  int fd = mkstemp(log_path);
  if (!CHECK(fd >= 0))
    return;
  close(fd);
  setenv("MOONROOM_UNIT_LOG", log_path, 1);

  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), NULL) == 0)) {
    unsetenv("MOONROOM_UNIT_LOG");
    unlink(log_path);
    return;
  }
  uint64_t a, b, hs;
  a = open_ws(&h, "/?room=r");
  mr_conn *ca = mr_conn_find(h.srv, a);
  b = open_ws(&h, "/");
  mr_conn *cb = mr_conn_find(h.srv, b);
  (void)cb;
  /* One still in its handshake (half a request head). */
  mr_conn *half = mr_conn_new_virtual(h.srv);
  hs = half->id;
  feed(&h, half, "GET / HTTP/1.1\r\n", 16);
  CHECK_EQ_INT(half->state, MR_CONN_HANDSHAKE);
  /* And some output still waiting for a. */
  CHECK_EQ_INT(mr_conn_send(ca, "pending", 7, 0), 0);

  mr_server_shutdown(h.srv);
  CHECK_EQ_INT(h.srv->shutting_down, 1);
  /* Never listened and never started timers: nothing of that was touched. */
  CHECK_EQ_INT(h.srv->listening, 0);
  CHECK_EQ_INT(h.srv->handles_started, 0);
  /* The handshake is dropped at once, without on_close. */
  CHECK(mr_conn_find(h.srv, hs) == NULL);
  /* The open ones get a 1001 close frame after what was waiting, and wait
   * for the client's answer. */
  uint8_t want[64];
  size_t wl = text_frame(want, "pending");
  uint8_t close_frame[] = {0x88, 22,  0x03, 0xe9, 's', 'e', 'r', 'v',
                           'e',  'r', ' ',  's',  'h', 'u', 't', 't',
                           'i',  'n', 'g',  ' ',  'd', 'o', 'w', 'n'};
  memcpy(want + wl, close_frame, sizeof close_frame);
  uint8_t out[128];
  size_t n = take(&h, a, out, sizeof out);
  CHECK(n == wl + sizeof close_frame && memcmp(out, want, n) == 0);
  n = take(&h, b, out, sizeof out);
  CHECK(n == sizeof close_frame && memcmp(out, close_frame, n) == 0);
  mr_conn *c = mr_conn_find(h.srv, a);
  if (CHECK(c != NULL)) {
    CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
    CHECK_EQ_INT(c->closing_how, MR_CLOSING_AWAIT_PEER);
    CHECK_EQ_INT(mr_conn_send(c, "x", 1, 0), MR_ECLOSED);
  }
  CHECK(mr_conn_find(h.srv, b) != NULL);
  /* Left rooms only at close: a is still a member until it goes. */
  CHECK_EQ_INT(h.srv->rooms.nrooms, 1);
  char text[512];
  read_text(log_path, text, sizeof text);
  CHECK_STR(text, "");
  /* A second shutdown is a no-op. */
  mr_server_shutdown(h.srv);
  CHECK(mr_conn_find(h.srv, a) != NULL);

  /* The clients answer; once drained, each goes and on_close hears 1001. */
  send_frame(&h, a, MR_OP_CLOSE, "\x03\xe9", 2);
  take(&h, a, out, sizeof out);
  CHECK(mr_conn_find(h.srv, a) == NULL);
  send_frame(&h, b, MR_OP_CLOSE, "\x03\xe9", 2);
  take(&h, b, out, sizeof out);
  CHECK(mr_conn_find(h.srv, b) == NULL);
  CHECK(h.srv->conns.count == 0);
  CHECK_EQ_INT(h.srv->rooms.nrooms, 0);
  CHECK_EQ_INT(h.srv->stats.connections_open, 0);
  char expect[256];
  snprintf(expect, sizeof expect,
           "close %llu 1001 server shutting down\n"
           "close %llu 1001 server shutting down\n",
           (unsigned long long)a, (unsigned long long)b);
  read_text(log_path, text, sizeof text);
  CHECK_STR(text, expect);
  h_stop(&h);
  unsetenv("MOONROOM_UNIT_LOG");
  unlink(log_path);
}

/* With nothing left open after the handshakes are dropped, shutdown
 * finishes at once; a server that never listened has no handles to close. */
static void test_shutdown_idle(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), NULL) == 0))
    return;
  mr_conn *half = mr_conn_new_virtual(h.srv);
  uint64_t id = half->id;
  feed(&h, half, "GET /", 5);
  mr_server_shutdown(h.srv);
  CHECK_EQ_INT(h.srv->shutting_down, 1);
  CHECK(mr_conn_find(h.srv, id) == NULL);
  CHECK(h.srv->conns.count == 0);
  CHECK_EQ_INT(h.srv->listening, 0);
  CHECK_EQ_INT(h.srv->handles_started, 0);
  /* The loop holds no handle of ours, active or closing. */
  CHECK_EQ_INT(uv_loop_alive(&h.loop), 0);
  CHECK_EQ_INT(uv_run(&h.loop, UV_RUN_NOWAIT), 0);
  mr_server_shutdown(h.srv);
  h_stop(&h);
}

/* Script timers on the server's heap: an id the Lua side does not know
 * (added here behind its back) is popped and skipped, and shutdown drops
 * whatever is pending, so no timer runs during the grace period or holds
 * the loop. */
static void test_timers_dropped_at_shutdown(void) {
  harness h;
  if (!CHECK(h_start(&h, fixture("echo_observed.lua"), NULL) == 0))
    return;
  uint64_t id, now = uv_now(&h.loop);
  CHECK_EQ_INT(mr_timers_add(&h.srv->timers, now, &id), 0);
  CHECK_EQ_INT(mr_bridge_run_timers(h.srv->bridge, now), 0);
  CHECK_EQ_INT(mr_timers_count(&h.srv->timers), 0);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(mr_timers_add(&h.srv->timers, now + 1000, &id), 0);
  mr_server_shutdown(h.srv);
  CHECK_EQ_INT(mr_timers_count(&h.srv->timers), 0);
  CHECK_EQ_INT(h.srv->timer_armed, 0);
  CHECK_EQ_INT(uv_loop_alive(&h.loop), 0);
  CHECK_EQ_INT(mr_bridge_run_timers(h.srv->bridge, now + 1000), 0);
  h_stop(&h);
}

int main(void) {
  mr_log_set_level(getenv("MOONROOM_TEST_LOG")
                       ? MR_LOG_DEBUG
                       : (enum mr_log_level)(MR_LOG_ERROR + 1));
  test_broadcast_shares_one_frame();
  test_deliver_remote();
  test_doomed_during_fanout();
  test_shutdown();
  test_shutdown_idle();
  test_timers_dropped_at_shutdown();
  return test_report();
}
