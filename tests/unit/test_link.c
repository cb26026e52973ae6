/* Unit tests for one cluster link (core/link.c): cutting the byte stream
 * into frames, what the link answers or refuses by itself, the heartbeat
 * and handshake deadline, the queue limit and the lifetime of virtual
 * links.
 *
 * There are no sockets and no cluster: each test makes an environment on a
 * private loop with callbacks that record what the link reported (in the
 * link's own owner data), and drives virtual links with mr_link_feed and
 * mr_link_take. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "context.h"
#include "error.h"
#include "link.h"
#include "log.h"
#include "test_util.h"
#include "wire.h"

#define MAX_FRAME 4096

/* What a link reported, kept in its owner data. */
typedef struct {
  int connected, frames, closed, refused;
  int close_on_frame; /* the owner closes the link on its next frame */
  mr_link_state was;
  uint8_t tags[16];
  char room_msg[64]; /* the message of the last room frame */
  char why[160];
} record;

static record *rec(mr_link *l) { return mr_link_data(l); }

static void ev_connected(mr_link *l) { rec(l)->connected++; }

static void ev_frame(mr_link *l, const mr_wire_msg *m) {
  record *r = rec(l);
  if (r->frames < 16)
    r->tags[r->frames] = m->tag;
  r->frames++;
  if (m->tag == MR_WIRE_ROOM_TEXT)
    snprintf(r->room_msg, sizeof r->room_msg, "%.*s", (int)m->room.data_len,
             (const char *)m->room.data);
  if (r->close_on_frame)
    mr_link_close(l, "closed by its owner", 0);
}

static void ev_closed(mr_link *l, mr_link_state was, const char *why,
                      int refused) {
  record *r = rec(l);
  r->closed++;
  r->was = was;
  r->refused = refused;
  snprintf(r->why, sizeof r->why, "%s", why);
}

static const mr_link_events events = {ev_connected, ev_frame, ev_closed};

/* A loop, a server that only lends the loop and the counters, and one
 * environment of links. */
typedef struct {
  uv_loop_t loop;
  mr_server srv;
  mr_link_env env;
} rig;

static rig *rig_new(size_t max_queue) {
  rig *t = calloc(1, sizeof *t);
  if (!t || uv_loop_init(&t->loop) != 0)
    abort();
  t->srv.loop = &t->loop;
  mr_link_env_init(&t->env, &t->srv, &events, MAX_FRAME, max_queue,
                   sizeof(record));
  return t;
}

/* Closes the environment, runs the loop until every handle is closed and
 * checks that nothing is left. Virtual links are released by the test. */
static void rig_free(rig *t) {
  mr_link_env_close(&t->env);
  CHECK_EQ_INT(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
  CHECK_EQ_INT(uv_loop_close(&t->loop), 0);
  free(t);
}

/* ---- bytes --------------------------------------------------------------- */

static const uint8_t nonce[32] = {1, 2, 3};

/* A stream of four frames of different kinds; returns its length. */
static size_t sample_stream(uint8_t *out, size_t cap) {
  mr_wbuf w;
  size_t frame;
  mr_wire_buf_init(&w);
  CHECK_EQ_INT(mr_wire_encode_hello(&w, "b", 1, "-", 1, nonce), 0);
  CHECK_EQ_INT(mr_wire_encode_interest(&w, 1, "room", 4), 0);
  CHECK_EQ_INT(mr_wire_encode_room(&w, 0, "room", 4, (const uint8_t *)"hi", 2),
               0);
  CHECK_EQ_INT(mr_wire_encode_peers_begin(&w, &frame), 0);
  CHECK_EQ_INT(mr_wire_encode_peers_add(&w, frame, "c", 1, "h:1", 3), 0);
  size_t n = w.len <= cap ? w.len : 0;
  memcpy(out, w.data, n);
  mr_wire_buf_free(&w);
  return n;
}

static void expect_sample(mr_link *l, int line) {
  record *r = rec(l);
  static const uint8_t want[] = {MR_WIRE_HELLO, MR_WIRE_INTEREST,
                                 MR_WIRE_ROOM_TEXT, MR_WIRE_PEERS};
  if (!CHECK(r->frames == 4 && memcmp(r->tags, want, 4) == 0))
    fprintf(stderr, "  (line %d: %d frames)\n", line, r->frames);
  CHECK_STR(r->room_msg, "hi");
  CHECK_EQ_INT(r->closed, 0);
}

/* Takes everything a link queued and checks it is one PING or PONG frame
 * with token. */
static void expect_ping(mr_link *l, int tag, uint64_t token) {
  uint8_t out[64];
  size_t n = mr_link_take(l, out, sizeof out);
  const uint8_t *payload;
  size_t plen, used;
  mr_wire_msg m;
  if (!CHECK(mr_wire_next_frame(out, n, MAX_FRAME, &payload, &plen, &used) ==
                 0 &&
             used == n && mr_wire_decode(payload, plen, &m) == 0))
    return;
  CHECK_EQ_INT(m.tag, tag);
  CHECK(m.ping.token == token);
}

static void feed_ping(mr_link *l, int pong, uint64_t token) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  if (pong)
    mr_wire_encode_pong(&w, token);
  else
    mr_wire_encode_ping(&w, token);
  mr_link_feed(l, w.data, w.len);
  mr_wire_buf_free(&w);
}

/* ---- reading --------------------------------------------------------------
 */

/* Frames come out whole and in order however the stream is cut: in two at
 * every byte boundary, and one byte at a time. */
static void test_frames_split_anywhere(void) {
  rig *t = rig_new(1 << 20);
  uint8_t stream[256];
  size_t n = sample_stream(stream, sizeof stream);
  CHECK(n > 40);
  for (size_t cut = 0; cut <= n; cut++) {
    mr_link *l = mr_link_new_virtual(&t->env, 0, "test");
    mr_link_feed(l, stream, cut);
    mr_link_feed(l, stream + cut, n - cut);
    expect_sample(l, __LINE__);
    CHECK_EQ_INT(l->rlen, 0);
    mr_link_release(l);
  }
  mr_link *l = mr_link_new_virtual(&t->env, 0, "test");
  for (size_t i = 0; i < n; i++)
    mr_link_feed(l, stream + i, 1);
  expect_sample(l, __LINE__);
  mr_link_release(l);
  CHECK_EQ_INT(t->srv.stats.cluster_frames_malformed, 0);
  rig_free(t);
}

/* When the owner closes the link on a frame, the frames after it in the
 * same read are not handed over. */
static void test_no_frame_after_close(void) {
  rig *t = rig_new(1 << 20);
  uint8_t stream[256];
  size_t n = sample_stream(stream, sizeof stream);
  mr_link *l = mr_link_new_virtual(&t->env, 0, "test");
  rec(l)->close_on_frame = 1;
  mr_link_feed(l, stream, n);
  CHECK_EQ_INT(rec(l)->frames, 1);
  CHECK_EQ_INT(rec(l)->closed, 1);
  CHECK_STR(rec(l)->why, "closed by its owner");
  CHECK_EQ_INT(l->state, MR_LINK_CLOSED);
  /* Bytes fed to a closed link are ignored. */
  mr_link_feed(l, stream, n);
  CHECK_EQ_INT(rec(l)->frames, 1);
  mr_link_release(l);
  rig_free(t);
}

/* A length prefix of zero, a prefix over the frame limit, and a payload
 * that does not decode: each drops the link and is counted; during the
 * handshake the peer is refused, afterwards it is only lost. */
static void test_malformed_frames(void) {
  rig *t = rig_new(1 << 20);
  static const uint8_t empty[] = {0, 0, 0, 0};
  static const uint8_t huge[] = {0, 0, 0x10, 0x01}; /* 4097 > MAX_FRAME */
  static const uint8_t short_ping[] = {0, 0, 0, 2, MR_WIRE_PING, 0};
  struct {
    const uint8_t *bytes;
    size_t len;
    const char *why;
  } cases[] = {
      {empty, sizeof empty, "malformed frame (empty)"},
      {huge, sizeof huge, "frame larger than the limit"},
      {short_ping, sizeof short_ping, "malformed frame (tag 0x13): "},
  };
  uint64_t malformed = 0;
  for (int up = 0; up <= 1; up++)
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      mr_link *l = mr_link_new_virtual(&t->env, 1, "test");
      if (up)
        mr_link_set_up(l);
      mr_link_feed(l, cases[i].bytes, cases[i].len);
      CHECK_EQ_INT(t->srv.stats.cluster_frames_malformed, ++malformed);
      CHECK_EQ_INT(rec(l)->closed, 1);
      CHECK_EQ_INT(rec(l)->refused, !up);
      CHECK_EQ_INT(rec(l)->was, up ? MR_LINK_UP : MR_LINK_HANDSHAKE);
      CHECK(strncmp(rec(l)->why, cases[i].why, strlen(cases[i].why)) == 0);
      CHECK_EQ_INT(rec(l)->frames, 0);
      mr_link_release(l);
    }
  rig_free(t);
}

/* An unknown tag is a malformed frame during the handshake, and skipped
 * (counted) once the link is up: a newer node may speak tags this one does
 * not know. */
static void test_unknown_tag(void) {
  rig *t = rig_new(1 << 20);
  static const uint8_t unknown[] = {0, 0, 0, 3, 0x7f, 1, 2};
  mr_link *l = mr_link_new_virtual(&t->env, 0, "test");
  mr_link_feed(l, unknown, sizeof unknown);
  CHECK_EQ_INT(rec(l)->closed, 1);
  CHECK_EQ_INT(rec(l)->refused, 1);
  CHECK_EQ_INT(t->srv.stats.cluster_frames_malformed, 1);
  CHECK_EQ_INT(t->srv.stats.cluster_unknown_tags, 0);
  mr_link_release(l);

  l = mr_link_new_virtual(&t->env, 0, "test");
  mr_link_set_up(l);
  uint8_t stream[256];
  size_t n = sample_stream(stream, sizeof stream);
  memcpy(stream + n, unknown, sizeof unknown);
  mr_link_feed(l, unknown, sizeof unknown);
  mr_link_feed(l, stream, n + sizeof unknown);
  CHECK_EQ_INT(t->srv.stats.cluster_unknown_tags, 2);
  CHECK_EQ_INT(t->srv.stats.cluster_frames_malformed, 1);
  CHECK_EQ_INT(l->state, MR_LINK_UP);
  expect_sample(l, __LINE__);
  mr_link_release(l);
  rig_free(t);
}

/* Once up, the link answers PING with PONG (same token) and swallows PONG;
 * before that both are the owner's to judge. */
static void test_ping_pong(void) {
  rig *t = rig_new(1 << 20);
  mr_link *l = mr_link_new_virtual(&t->env, 0, "test");
  feed_ping(l, 0, 7);
  CHECK_EQ_INT(rec(l)->frames, 1);
  CHECK_EQ_INT(rec(l)->tags[0], MR_WIRE_PING);
  CHECK_EQ_INT(l->tx.outq.bytes, 0);
  mr_link_set_up(l);
  feed_ping(l, 0, 0x1122334455667788ull);
  expect_ping(l, MR_WIRE_PONG, 0x1122334455667788ull);
  feed_ping(l, 1, 9);
  CHECK_EQ_INT(rec(l)->frames, 1);
  CHECK_EQ_INT(l->tx.outq.bytes, 0);
  CHECK_EQ_INT(rec(l)->closed, 0);
  mr_link_release(l);
  rig_free(t);
}

/* ---- heartbeat ----------------------------------------------------------- */

static void test_handshake_deadline(void) {
  rig *t = rig_new(1 << 20);
  uint64_t t0 = uv_now(&t->loop);
  mr_link *l = mr_link_new_virtual(&t->env, 1, "test");
  CHECK(l->deadline == t0 + MR_LINK_HANDSHAKE_MS);
  mr_link_tick(l, t0 + MR_LINK_HANDSHAKE_MS - 1);
  CHECK_EQ_INT(l->state, MR_LINK_HANDSHAKE);
  CHECK_EQ_INT(l->tx.outq.bytes, 0); /* no PING before the handshake */
  mr_link_env_tick(&t->env, t0 + MR_LINK_HANDSHAKE_MS);
  CHECK_EQ_INT(l->state, MR_LINK_CLOSED);
  CHECK_EQ_INT(rec(l)->refused, 1);
  CHECK_STR(rec(l)->why, "handshake timed out");
  mr_link_release(l);
  rig_free(t);
}

/* An established link is pinged on every tick, and closed (not refused)
 * once it has heard nothing for MR_LINK_SILENT_MS. */
static void test_heartbeat(void) {
  rig *t = rig_new(1 << 20);
  uint64_t t0 = uv_now(&t->loop);
  mr_link *l = mr_link_new_virtual(&t->env, 1, "test");
  mr_link_set_up(l);
  mr_link_env_tick(&t->env, t0 + 1000);
  expect_ping(l, MR_WIRE_PING, t0 + 1000);
  mr_link_env_tick(&t->env, t0 + MR_LINK_SILENT_MS - 1);
  expect_ping(l, MR_WIRE_PING, t0 + MR_LINK_SILENT_MS - 1);
  CHECK_EQ_INT(rec(l)->closed, 0);
  mr_link_env_tick(&t->env, t0 + MR_LINK_SILENT_MS);
  CHECK_EQ_INT(rec(l)->closed, 1);
  CHECK_EQ_INT(rec(l)->was, MR_LINK_UP);
  CHECK_EQ_INT(rec(l)->refused, 0);
  CHECK_STR(rec(l)->why, "no heartbeat");
  /* A closed link's queue is dropped, as a closed socket's would be. */
  CHECK_EQ_INT(l->tx.outq.bytes, 0);
  mr_link_release(l);
  rig_free(t);
}

/* A beat MR_LINK_STALL_MS or more after the previous one finds a node that
 * did not run meanwhile: it pings but judges neither silence nor handshake
 * deadlines (what the peers sent is still unread), and counts the stall.
 * The next beat judges as usual, so a peer that is really gone still goes. */
static void test_stalled_beat_judges_nothing(void) {
  rig *t = rig_new(1 << 20);
  uint64_t t0 = uv_now(&t->loop);
  mr_link *l = mr_link_new_virtual(&t->env, 1, "test");
  mr_link *h = mr_link_new_virtual(&t->env, 0, "handshaking");
  mr_link_set_up(l);
  mr_link_env_beat(&t->env, t0 + 1000);
  expect_ping(l, MR_WIRE_PING, t0 + 1000);
  CHECK(t->srv.stats.cluster_stalls == 0);
  /* Seven seconds without a beat: past both the silence limit and the
   * handshake deadline, yet nothing is judged. */
  uint64_t resumed = t0 + 1000 + MR_LINK_SILENT_MS + 2000;
  mr_link_env_beat(&t->env, resumed);
  CHECK_EQ_INT(rec(l)->closed, 0);
  CHECK_EQ_INT(rec(h)->closed, 0);
  expect_ping(l, MR_WIRE_PING, resumed);
  CHECK(t->srv.stats.cluster_stalls == 1);
  /* One heartbeat later the loop has read what was waiting; nothing came. */
  mr_link_env_beat(&t->env, resumed + MR_LINK_HEARTBEAT_MS);
  CHECK_EQ_INT(rec(l)->closed, 1);
  CHECK_STR(rec(l)->why, "no heartbeat");
  CHECK_EQ_INT(rec(h)->closed, 1);
  CHECK_STR(rec(h)->why, "handshake timed out");
  CHECK(t->srv.stats.cluster_stalls == 1);
  mr_link_release(l);
  mr_link_release(h);
  rig_free(t);
}

/* ---- writing ------------------------------------------------------------- */

/* A link whose queue would pass max_queue is dropped and counted, rather
 * than let a peer that does not read grow this node's memory; a link
 * whose bytes are taken as they come never is. */
static void test_queue_limit(void) {
  rig *t = rig_new(100);
  mr_buf *b = mr_buf_new(40);
  memset(b->data, 'x', 40);
  mr_link *l = mr_link_new_virtual(&t->env, 1, "test");
  mr_link_set_name(l, "slow", 4);
  CHECK_EQ_INT(mr_link_send(l, b), 0);
  CHECK_EQ_INT(mr_link_send(l, b), 0);
  CHECK_EQ_INT(l->tx.outq.bytes, 80);
  CHECK_EQ_INT(b->refs, 3); /* shared, not copied */
  CHECK_EQ_INT(mr_link_send(l, b), MR_EBACKPRESSURE);
  CHECK_EQ_INT(t->srv.stats.cluster_queue_drops, 1);
  CHECK_EQ_INT(rec(l)->closed, 1);
  CHECK_STR(rec(l)->why, "send queue full");
  CHECK_EQ_INT(mr_link_send(l, b), MR_ECLOSED);
  CHECK_EQ_INT(b->refs, 1);
  mr_link_release(l);

  /* Taking what was queued makes room again. */
  l = mr_link_new_virtual(&t->env, 1, "test");
  uint8_t out[100];
  for (int i = 0; i < 10; i++) {
    CHECK_EQ_INT(mr_link_send(l, b), 0);
    CHECK_EQ_INT(mr_link_take(l, out, 30), 30);
    CHECK_EQ_INT(mr_link_take(l, out + 30, sizeof out - 30), 10);
    CHECK_EQ_INT(mr_link_take(l, out, sizeof out), 0);
  }
  CHECK_EQ_INT(t->srv.stats.cluster_queue_drops, 1);
  CHECK_EQ_INT(rec(l)->closed, 0);
  mr_link_release(l);
  mr_buf_release(b);
  rig_free(t);
}

/* ---- lifetime ------------------------------------------------------------ */

/* Releasing an open virtual link closes it first; closing the environment
 * closes every link, and the released ones are freed (ASan checks). */
static void test_release_and_env_close(void) {
  rig *t = rig_new(1 << 20);
  mr_link *a = mr_link_new_virtual(&t->env, 1, "a");
  mr_link *b = mr_link_new_virtual(&t->env, 0, "b");
  mr_link *c = mr_link_new_virtual(&t->env, 0, "c");
  CHECK(t->env.links == c && c->next == b && b->next == a);
  CHECK_EQ_INT(a->dialer, 1);
  CHECK_STR(b->remote, "b");
  mr_link_release(b);
  CHECK(t->env.links == c && c->next == a && a->prev == c);
  mr_link_env_close(&t->env);
  CHECK(t->env.links == NULL);
  CHECK_EQ_INT(rec(a)->closed, 1);
  CHECK_STR(rec(a)->why, "shutting down");
  CHECK_EQ_INT(rec(c)->closed, 1);
  mr_link_release(a);
  mr_link_release(c);
  CHECK_EQ_INT(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
  CHECK_EQ_INT(uv_loop_close(&t->loop), 0);
  free(t);
}

int main(void) {
  mr_log_set_level(MR_LOG_ERROR);
  test_frames_split_anywhere();
  test_no_frame_after_close();
  test_malformed_frames();
  test_unknown_tag();
  test_ping_pong();
  test_handshake_deadline();
  test_heartbeat();
  test_stalled_beat_judges_nothing();
  test_queue_limit();
  test_release_and_env_close();
  return test_report();
}
