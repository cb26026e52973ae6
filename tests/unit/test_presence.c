/* Presence and cluster-wide counts (core/presence.c) without sockets: real
 * servers (virtual_server.h's harness, no script) whose presence state is
 * driven directly, and whose batches are carried to the other "nodes" by
 * decoding the real frames the sender is handed and feeding them to
 * mr_presence_on_frame, as the cluster does. The flush is called directly,
 * so nothing waits for a timer.
 *
 * What is checked: counts per node and the cluster total; track, update
 * and untrack; batching (nothing leaves before the flush, one flush is a
 * bounded number of frames) and netting (a join and a leave in one batch
 * cancel, a changed meta is a leave of the old and a join of the new);
 * full states replacing what they do not mention only at SYNC_LAST; a
 * node that goes down taking its counts and entries with leave events; a
 * 10,000-member join storm as a handful of frames. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "presence.h"
#include "rooms.h"
#include "virtual_server.h"
#include "wire.h"

/* ---- nodes ----------------------------------------------------------------
 */

#define MAX_NODES 3
#define MAX_EVENTS 64

/* One on_presence report, summed up: ids and the "name" meta field of the
 * first few joins and leaves. */
typedef struct {
  char room[64];
  size_t njoins, nleaves;
  uint64_t join_ids[8], leave_ids[8];
  char join_names[8][16], leave_names[8][16];
  char join_nodes[8][8], leave_nodes[8][8];
} event;

typedef struct node {
  harness h;
  mr_presence *p;
  const char *name;
  /* Where this node's batches go: the nodes it is "linked" to. */
  struct node *links[MAX_NODES];
  int nlinks;
  /* What the sender was handed. */
  size_t send_calls, counts_frames, presence_frames, bytes;
  /* The flags of every frame sent, in order (up to 64). */
  unsigned flags[64];
  size_t nflags;
  event events[MAX_EVENTS];
  size_t nevents;
  size_t joins_total, leaves_total;
} node;

static node nodes[MAX_NODES];

/* The "name" field of a meta, or "" (into out, cap bytes). */
static void meta_name(const uint8_t *meta, size_t len, char *out, size_t cap) {
  out[0] = '\0';
  if (len < 2)
    return;
  const uint8_t *pos = meta + 2;
  size_t left = len - 2;
  mr_wire_meta_field f;
  while (mr_wire_meta_next(&pos, &left, &f))
    if (f.key_len == 4 && memcmp(f.key, "name", 4) == 0 &&
        f.type == MR_META_STRING)
      snprintf(out, cap, "%.*s", (int)f.str_len, f.str);
}

static void on_events(void *ud, const char *room, size_t room_len,
                      const mr_presence_entry *joins, size_t njoins,
                      const mr_presence_entry *leaves, size_t nleaves) {
  node *n = ud;
  n->joins_total += njoins;
  n->leaves_total += nleaves;
  if (n->nevents == MAX_EVENTS)
    return;
  event *e = &n->events[n->nevents++];
  memset(e, 0, sizeof *e);
  snprintf(e->room, sizeof e->room, "%.*s", (int)room_len, room);
  e->njoins = njoins;
  e->nleaves = nleaves;
  for (size_t i = 0; i < njoins && i < 8; i++) {
    e->join_ids[i] = joins[i].id;
    meta_name(joins[i].meta, joins[i].meta_len, e->join_names[i], 16);
    snprintf(e->join_nodes[i], 8, "%.*s", (int)joins[i].node_len,
             joins[i].node);
  }
  for (size_t i = 0; i < nleaves && i < 8; i++) {
    e->leave_ids[i] = leaves[i].id;
    meta_name(leaves[i].meta, leaves[i].meta_len, e->leave_names[i], 16);
    snprintf(e->leave_nodes[i], 8, "%.*s", (int)leaves[i].node_len,
             leaves[i].node);
  }
}

/* Decodes every frame in w and hands it to `to` as coming from `from`;
 * records the flags of each. Returns how many frames there were. */
static size_t deliver(const mr_wbuf *w, node *from, node *to) {
  size_t off = 0, frames = 0;
  const uint8_t *payload;
  size_t plen, used;
  while (off < w->len &&
         mr_wire_next_frame(w->data + off, w->len - off, 1 << 24, &payload,
                            &plen, &used) == 0) {
    mr_wire_msg m;
    CHECK_EQ_INT(mr_wire_decode(payload, plen, &m), 0);
    CHECK(plen <= MR_PRESENCE_FRAME_BUDGET + 1100);
    if (from->nflags < 64)
      from->flags[from->nflags++] = m.state.flags;
    if (to)
      mr_presence_on_frame(to->p, from->name, &m);
    off += used;
    frames++;
  }
  CHECK_EQ_INT(off, w->len);
  return frames;
}

static void on_send(void *ud, const mr_wbuf *w, size_t counts,
                    size_t presence) {
  node *n = ud;
  n->send_calls++;
  n->counts_frames += counts;
  n->presence_frames += presence;
  n->bytes += w->len;
  size_t frames = 0;
  for (int i = 0; i < n->nlinks; i++)
    frames = deliver(w, n, n->links[i]);
  if (!n->nlinks)
    frames = deliver(w, n, NULL);
  CHECK_EQ_INT(frames, counts + presence);
}

static node *node_start(int i, const char *name) {
  node *n = &nodes[i];
  memset(n, 0, sizeof *n);
  const char *opts[] = {"--node", name, NULL};
  if (h_init(&n->h, fixture("echo_observed.lua"), opts) != 0) {
    fprintf(stderr, "cannot start node %s\n", name);
    exit(1);
  }
  n->name = name;
  n->p = n->h.srv->presence;
  mr_presence_set_events(n->p, on_events, n);
  mr_presence_set_sender(n->p, on_send, n);
  return n;
}

static void node_stop(node *n) {
  mr_server_free(n->h.srv);
  free(n->h.srv);
  n->h.srv = NULL;
  CHECK_EQ_INT(uv_loop_close(&n->h.loop), 0);
}

static void link_to(node *from, node *to) { from->links[from->nlinks++] = to; }

/* The link from -> to came up: from's full state goes to `to`. */
static void send_full(node *from, node *to) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  size_t counts = 0, presence = 0;
  CHECK_EQ_INT(mr_presence_encode_full(from->p, &w, &counts, &presence), 0);
  CHECK_EQ_INT(deliver(&w, from, to), counts + presence);
  mr_wire_buf_free(&w);
}

static void flush(node *n) { mr_presence_flush(n->p, 0); }

static void reset_events(node *n) {
  n->nevents = 0;
  n->joins_total = n->leaves_total = 0;
}

/* ---- members and metas ----------------------------------------------------
 */

static void join(node *n, mr_member *m, const char *room) {
  CHECK_EQ_INT(mr_rooms_join(&n->h.srv->rooms, m, room, strlen(room)), 1);
}

static void leave(node *n, mr_member *m, const char *room) {
  CHECK_EQ_INT(mr_rooms_leave(&n->h.srv->rooms, m, room, strlen(room)), 1);
}

static uint64_t count(node *n, const char *room) {
  mr_room *r = mr_rooms_find(&n->h.srv->rooms, room, strlen(room));
  return (r ? r->count : 0) +
         mr_presence_remote_count(n->p, room, strlen(room));
}

/* A meta {name = name} in w (reset first). */
static const uint8_t *meta(mr_wbuf *w, const char *name) {
  w->len = 0;
  size_t at;
  CHECK_EQ_INT(mr_wire_meta_begin(w, &at), 0);
  mr_wire_meta_field f = {"name", 4, MR_META_STRING, 0, name, strlen(name)};
  CHECK_EQ_INT(mr_wire_meta_add(w, at, &f), 0);
  return w->data;
}

static int track(node *n, const char *room, uint64_t id, const char *name) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  meta(&w, name);
  int r = mr_presence_track(n->p, room, strlen(room), id, w.data, w.len);
  mr_wire_buf_free(&w);
  return r;
}

static int untrack(node *n, const char *room, uint64_t id) {
  return mr_presence_untrack(n->p, room, strlen(room), id);
}

/* The entries of room as n sees them, as "node:id:name" joined by spaces. */
static const char *listing(node *n, const char *room) {
  static char out[1024];
  out[0] = '\0';
  mr_presence_entry *list;
  long k = mr_presence_list(n->p, room, strlen(room), &list);
  size_t len = 0;
  for (long i = 0; i < k && len < sizeof out - 64; i++) {
    char name[32];
    meta_name(list[i].meta, list[i].meta_len, name, sizeof name);
    len += (size_t)snprintf(out + len, sizeof out - len, "%s%.*s:%llu:%s",
                            i ? " " : "", (int)list[i].node_len, list[i].node,
                            (unsigned long long)list[i].id, name);
  }
  free(list);
  return out;
}

/* ---- counts ---------------------------------------------------------------
 */

/* Each node keeps every other node's count per room and their sum: local
 * counts go out only at the flush, as absolute numbers, all rooms of one
 * batch in one COUNTS frame. */
static void test_counts(void) {
  node *a = node_start(0, "A"), *b = node_start(1, "B"),
       *c = node_start(2, "C");
  link_to(a, b);
  link_to(a, c);
  link_to(c, a);
  link_to(c, b);
  mr_member ma[3] = {{0}}, mb = {0}, mc[2] = {{0}};
  for (int i = 0; i < 3; i++)
    join(a, &ma[i], "lobby");
  join(a, &ma[0], "game");
  join(b, &mb, "lobby");

  /* Batched: nothing has left A yet, and its flush is pending. */
  CHECK_EQ_INT(a->send_calls, 0);
  CHECK(a->h.srv->presence_timer != 0);
  CHECK(mr_timers_pending(&a->h.srv->timers, a->h.srv->presence_timer));
  CHECK_EQ_INT(count(b, "lobby"), 1);
  flush(a);
  CHECK_EQ_INT(a->h.srv->presence_timer, 0);
  CHECK_EQ_INT(a->send_calls, 1);
  CHECK_EQ_INT(a->counts_frames, 1);
  CHECK_EQ_INT(a->presence_frames, 0);
  CHECK_EQ_INT(mr_presence_remote_count(b->p, "lobby", 5), 3);
  CHECK_EQ_INT(mr_presence_remote_count(b->p, "game", 4), 1);
  CHECK_EQ_INT(count(b, "lobby"), 4);
  CHECK_EQ_INT(count(c, "lobby"), 3);
  /* A flush with nothing new sends nothing. */
  flush(a);
  CHECK_EQ_INT(a->send_calls, 1);

  /* A second node's counts add up in the same total. */
  join(c, &mc[0], "lobby");
  join(c, &mc[1], "lobby");
  flush(c);
  CHECK_EQ_INT(mr_presence_remote_count(b->p, "lobby", 5), 5);
  CHECK_EQ_INT(count(b, "lobby"), 6);
  CHECK_EQ_INT(count(a, "lobby"), 5);
  CHECK_EQ_INT(mr_presence_remote_count(a->p, "lobby", 5), 2);
  /* A node never counts itself twice: its own frames are ignored. */
  mr_wbuf w;
  mr_wire_buf_init(&w);
  size_t frame;
  CHECK_EQ_INT(mr_wire_encode_counts_begin(&w, 0, &frame), 0);
  CHECK_EQ_INT(mr_wire_encode_counts_add(&w, frame, "lobby", 5, 99), 0);
  deliver(&w, b, b);
  mr_wire_buf_free(&w);
  CHECK_EQ_INT(count(b, "lobby"), 6);

  /* Leaves: absolute counts, so the total follows whatever order. */
  leave(a, &ma[1], "lobby");
  leave(a, &ma[0], "game");
  join(a, &ma[1], "lobby"); /* and back, within the batch */
  leave(a, &ma[2], "lobby");
  flush(a);
  CHECK_EQ_INT(a->counts_frames, 2);
  CHECK_EQ_INT(mr_presence_remote_count(b->p, "lobby", 5), 4);
  CHECK_EQ_INT(mr_presence_remote_count(b->p, "game", 4), 0);
  CHECK_EQ_INT(count(c, "game"), 0);
  CHECK_EQ_INT(b->h.srv->stats.cluster_counts_in, 3);

  mr_rooms_leave_all(&a->h.srv->rooms, &ma[0]);
  mr_rooms_leave_all(&a->h.srv->rooms, &ma[1]);
  mr_rooms_leave_all(&a->h.srv->rooms, &ma[2]);
  mr_rooms_leave_all(&b->h.srv->rooms, &mb);
  mr_rooms_leave_all(&c->h.srv->rooms, &mc[0]);
  mr_rooms_leave_all(&c->h.srv->rooms, &mc[1]);
  flush(a);
  flush(c);
  CHECK_EQ_INT(count(b, "lobby"), 0);
  node_stop(a);
  node_stop(b);
  node_stop(c);
}

/* ---- entries --------------------------------------------------------------
 */

/* Track, track again (a new meta), untrack, and a closing connection's
 * entries in every room; the local view changes at once, the other nodes'
 * at the flush. */
static void test_track_update_untrack(void) {
  node *a = node_start(0, "A"), *b = node_start(1, "B");
  link_to(a, b);
  CHECK_EQ_INT(track(a, "lobby", 7, "ada"), 1);
  CHECK_EQ_INT(track(a, "lobby", 3, "bob"), 1);
  CHECK_EQ_INT(track(a, "game", 7, "ada"), 1);
  CHECK_EQ_INT(mr_presence_local_entries(a->p), 3);
  CHECK_STR(listing(a, "lobby"), "A:3:bob A:7:ada");
  CHECK_STR(listing(b, "lobby"), "");
  flush(a);
  CHECK_EQ_INT(a->presence_frames, 1);
  CHECK_EQ_INT(a->counts_frames, 0); /* tracking is not joining */
  CHECK_STR(listing(b, "lobby"), "A:3:bob A:7:ada");
  CHECK_STR(listing(b, "game"), "A:7:ada");
  CHECK_EQ_INT(mr_presence_remote_entries(b->p), 3);

  /* Tracking again replaces the meta (0: not new). */
  CHECK_EQ_INT(track(a, "lobby", 7, "ada2"), 0);
  CHECK_STR(listing(a, "lobby"), "A:3:bob A:7:ada2");
  flush(a);
  CHECK_STR(listing(b, "lobby"), "A:3:bob A:7:ada2");
  CHECK_EQ_INT(mr_presence_remote_entries(b->p), 3);

  CHECK_EQ_INT(untrack(a, "lobby", 3), 1);
  CHECK_EQ_INT(untrack(a, "lobby", 3), 0);
  CHECK_EQ_INT(untrack(a, "nowhere", 3), 0);
  flush(a);
  CHECK_STR(listing(b, "lobby"), "A:7:ada2");

  /* A connection that closes leaves every room it was tracked in. */
  CHECK_EQ_INT(mr_presence_untrack_conn(a->p, 7), 2);
  CHECK_EQ_INT(mr_presence_untrack_conn(a->p, 7), 0);
  CHECK_EQ_INT(mr_presence_local_entries(a->p), 0);
  flush(a);
  CHECK_STR(listing(b, "lobby"), "");
  CHECK_STR(listing(b, "game"), "");
  CHECK_EQ_INT(mr_presence_remote_entries(b->p), 0);
  CHECK_EQ_INT(b->h.srv->stats.cluster_presence_in, 4);
  node_stop(a);
  node_stop(b);
}

/* ---- batching and netting -------------------------------------------------
 */

/* on_presence reports net changes per batch: a join and a leave of one
 * entry within one batch are no change; a new meta is a leave of the old
 * one and a join of the new; the same meta again is nothing. Remote
 * changes are netted the same way, across frames that arrive between two
 * of the receiver's flushes. */
static void test_netting(void) {
  node *a = node_start(0, "A"), *b = node_start(1, "B");
  link_to(a, b);
  mr_member ma = {0}, mb = {0};
  join(a, &ma, "lobby"); /* both nodes have a member: both report */
  join(b, &mb, "lobby");
  flush(a);
  flush(b);
  reset_events(a);
  reset_events(b);

  /* Joined and gone within one batch. */
  CHECK_EQ_INT(track(a, "lobby", 1, "ada"), 1);
  CHECK_EQ_INT(untrack(a, "lobby", 1), 1);
  CHECK_EQ_INT(track(a, "lobby", 2, "bob"), 1);
  flush(a);
  CHECK_EQ_INT(a->nevents, 1);
  CHECK_EQ_INT(a->events[0].njoins, 1);
  CHECK_EQ_INT(a->events[0].nleaves, 0);
  CHECK_EQ_INT(a->events[0].join_ids[0], 2);
  CHECK_STR(a->events[0].join_names[0], "bob");
  CHECK_STR(a->events[0].join_nodes[0], "A");
  CHECK_STR(a->events[0].room, "lobby");
  flush(b);
  CHECK_EQ_INT(b->nevents, 1);
  CHECK_EQ_INT(b->joins_total, 1);
  CHECK_EQ_INT(b->leaves_total, 0);
  CHECK_EQ_INT(b->events[0].join_ids[0], 2);
  reset_events(a);
  reset_events(b);

  /* A changed meta: leave of the old, join of the new. Changed twice in
   * one batch: from the first to the last. */
  CHECK_EQ_INT(track(a, "lobby", 2, "bobby"), 0);
  CHECK_EQ_INT(track(a, "lobby", 2, "robert"), 0);
  flush(a);
  flush(b);
  for (int k = 0; k < 2; k++) {
    node *n = k ? b : a;
    CHECK_EQ_INT(n->nevents, 1);
    CHECK_EQ_INT(n->events[0].njoins, 1);
    CHECK_EQ_INT(n->events[0].nleaves, 1);
    CHECK_STR(n->events[0].leave_names[0], "bob");
    CHECK_STR(n->events[0].join_names[0], "robert");
    CHECK_EQ_INT(n->events[0].leave_ids[0], 2);
    CHECK_EQ_INT(n->events[0].join_ids[0], 2);
  }
  reset_events(a);
  reset_events(b);

  /* The same meta again sends nothing at all: no batch, no frame. */
  size_t frames = a->presence_frames;
  CHECK_EQ_INT(track(a, "lobby", 2, "robert"), 0);
  flush(a);
  CHECK_EQ_INT(a->presence_frames, frames);
  /* Changed and changed back within a batch: no event (it is sent). */
  CHECK_EQ_INT(track(a, "lobby", 2, "robert"), 0);
  CHECK_EQ_INT(track(a, "lobby", 2, "x"), 0);
  CHECK_EQ_INT(track(a, "lobby", 2, "robert"), 0);
  flush(a);
  flush(b);
  CHECK_EQ_INT(a->nevents, 0);
  CHECK_EQ_INT(b->nevents, 0);

  /* Two batches of A (a join, then its leave) that reach B before B's own
   * flush: B reports nothing. */
  CHECK_EQ_INT(track(a, "lobby", 5, "eve"), 1);
  flush(a);
  CHECK_EQ_INT(untrack(a, "lobby", 5), 1);
  flush(a);
  reset_events(a);
  flush(b);
  CHECK_EQ_INT(b->nevents, 0);
  CHECK_STR(listing(b, "lobby"), "A:2:robert");

  /* A node with neither members nor entries in a room is not told. */
  CHECK_EQ_INT(track(a, "elsewhere", 9, "zed"), 1);
  flush(a);
  flush(b);
  CHECK_EQ_INT(a->nevents, 1);
  CHECK_EQ_INT(b->nevents, 0);
  CHECK_STR(listing(b, "elsewhere"), "A:9:zed");
  CHECK_EQ_INT(b->h.srv->stats.presence_events, 2);

  mr_rooms_leave_all(&a->h.srv->rooms, &ma);
  mr_rooms_leave_all(&b->h.srv->rooms, &mb);
  node_stop(a);
  node_stop(b);
}

/* ---- full states ----------------------------------------------------------
 */

/* A full state (SYNC_FIRST ... SYNC_LAST, over several frames) replaces
 * what the receiver held from its sender, but only once it is complete:
 * until SYNC_LAST nothing it has not mentioned yet is removed. Entries it
 * repeats unchanged are not reported. */
static void test_full_state(void) {
  node *a = node_start(0, "A"), *b = node_start(1, "B");
  link_to(a, b);
  mr_member mb = {0}, ma[2] = {{0}};
  join(b, &mb, "lobby");
  join(a, &ma[0], "lobby");
  join(a, &ma[1], "game");
  for (uint64_t id = 1; id <= 3; id++)
    CHECK_EQ_INT(track(a, "lobby", id, "n"), 1);
  flush(a);
  flush(b);
  CHECK_STR(listing(b, "lobby"), "A:1:n A:2:n A:3:n");
  CHECK_EQ_INT(count(b, "game"), 1);
  reset_events(b);

  /* A "restarted" A's full state, by hand: counts lobby=2, other=1 in two
   * frames (game not mentioned); entries 1 (same), 4 (new) and 3 (new
   * meta) in two frames (2 not mentioned). */
  mr_wbuf w, m;
  mr_wire_buf_init(&w);
  mr_wire_buf_init(&m);
  size_t f;
  CHECK_EQ_INT(mr_wire_encode_counts_begin(&w, MR_WIRE_SYNC_FIRST, &f), 0);
  CHECK_EQ_INT(mr_wire_encode_counts_add(&w, f, "lobby", 5, 2), 0);
  deliver(&w, a, b);
  CHECK_EQ_INT(count(b, "lobby"), 3);
  CHECK_EQ_INT(count(b, "game"), 1); /* not yet: the state is not complete */
  w.len = 0;
  CHECK_EQ_INT(mr_wire_encode_counts_begin(&w, MR_WIRE_SYNC_LAST, &f), 0);
  CHECK_EQ_INT(mr_wire_encode_counts_add(&w, f, "other", 5, 1), 0);
  deliver(&w, a, b);
  CHECK_EQ_INT(count(b, "game"), 0);
  CHECK_EQ_INT(count(b, "other"), 1);
  CHECK_EQ_INT(count(b, "lobby"), 3);

  w.len = 0;
  CHECK_EQ_INT(mr_wire_encode_presence_begin(&w, MR_WIRE_SYNC_FIRST, &f), 0);
  meta(&m, "n");
  CHECK_EQ_INT(
      mr_wire_encode_presence_add(&w, f, 1, "lobby", 5, 1, m.data, m.len), 0);
  meta(&m, "new");
  CHECK_EQ_INT(
      mr_wire_encode_presence_add(&w, f, 1, "lobby", 5, 4, m.data, m.len), 0);
  deliver(&w, a, b);
  CHECK_STR(listing(b, "lobby"), "A:1:n A:2:n A:3:n A:4:new");
  CHECK_EQ_INT(b->h.srv->stats.presence_resyncs, 0);
  w.len = 0;
  CHECK_EQ_INT(mr_wire_encode_presence_begin(&w, MR_WIRE_SYNC_LAST, &f), 0);
  meta(&m, "three");
  CHECK_EQ_INT(
      mr_wire_encode_presence_add(&w, f, 1, "lobby", 5, 3, m.data, m.len), 0);
  deliver(&w, a, b);
  CHECK_STR(listing(b, "lobby"), "A:1:n A:3:three A:4:new");
  CHECK_EQ_INT(b->h.srv->stats.presence_resyncs, 1);
  flush(b);
  CHECK_EQ_INT(b->nevents, 1);
  CHECK_EQ_INT(b->events[0].njoins, 2);  /* 3 (new meta) and 4 */
  CHECK_EQ_INT(b->events[0].nleaves, 2); /* 2, and 3's old meta */
  CHECK_EQ_INT(b->events[0].join_ids[0], 3);
  CHECK_EQ_INT(b->events[0].join_ids[1], 4);
  CHECK_EQ_INT(b->events[0].leave_ids[0], 2);
  CHECK_EQ_INT(b->events[0].leave_ids[1], 3);
  CHECK_STR(b->events[0].leave_names[1], "n");

  /* An empty full state (one frame with both flags) clears everything. */
  w.len = 0;
  CHECK_EQ_INT(mr_wire_encode_presence_begin(
                   &w, MR_WIRE_SYNC_FIRST | MR_WIRE_SYNC_LAST, &f),
               0);
  CHECK_EQ_INT(mr_wire_encode_counts_begin(
                   &w, MR_WIRE_SYNC_FIRST | MR_WIRE_SYNC_LAST, &f),
               0);
  deliver(&w, a, b);
  CHECK_STR(listing(b, "lobby"), "");
  CHECK_EQ_INT(count(b, "lobby"), 1);
  CHECK_EQ_INT(count(b, "other"), 0);
  mr_wire_buf_free(&w);
  mr_wire_buf_free(&m);

  /* The real full state of A puts it all back. */
  send_full(a, b);
  CHECK_STR(listing(b, "lobby"), "A:1:n A:2:n A:3:n");
  CHECK_EQ_INT(count(b, "lobby"), 2);
  CHECK_EQ_INT(count(b, "game"), 1);

  /* A full state too big for one frame is split: SYNC_FIRST on the first,
   * SYNC_LAST on the last, neither in between; B ends up with all of it. */
  char big[401];
  memset(big, 'x', 400);
  big[400] = '\0';
  for (uint64_t id = 100; id < 700; id++)
    CHECK_EQ_INT(track(a, "big", id, big), 1);
  flush(a);
  a->nflags = 0;
  send_full(a, b);
  CHECK(a->nflags >= 5); /* COUNTS, and 600 * ~440 bytes of PRESENCE */
  CHECK_EQ_INT(a->flags[0], MR_WIRE_SYNC_FIRST | MR_WIRE_SYNC_LAST);
  CHECK_EQ_INT(a->flags[1], MR_WIRE_SYNC_FIRST);
  for (size_t i = 2; i + 1 < a->nflags; i++)
    CHECK_EQ_INT(a->flags[i], 0);
  CHECK_EQ_INT(a->flags[a->nflags - 1], MR_WIRE_SYNC_LAST);
  mr_presence_entry *list;
  CHECK_EQ_INT(mr_presence_list(b->p, "big", 3, &list), 600);
  free(list);
  CHECK_EQ_INT(mr_presence_remote_entries(b->p), 603);

  mr_rooms_leave_all(&a->h.srv->rooms, &ma[0]);
  mr_rooms_leave_all(&a->h.srv->rooms, &ma[1]);
  mr_rooms_leave_all(&b->h.srv->rooms, &mb);
  node_stop(a);
  node_stop(b);
}

/* ---- a node that goes -----------------------------------------------------
 */

/* The last link to a node closed: its counts and entries go at once, with
 * leave events at the next flush; a full state brings them back. */
static void test_node_down(void) {
  node *a = node_start(0, "A"), *b = node_start(1, "B");
  link_to(a, b);
  mr_member ma = {0}, mb = {0};
  join(a, &ma, "lobby");
  join(b, &mb, "lobby");
  CHECK_EQ_INT(track(a, "lobby", 1, "ada"), 1);
  CHECK_EQ_INT(track(a, "lobby", 2, "bob"), 1);
  CHECK_EQ_INT(track(a, "game", 1, "ada"), 1);
  CHECK_EQ_INT(track(b, "lobby", 1, "cy"), 1);
  flush(a);
  flush(b);
  CHECK_STR(listing(b, "lobby"), "A:1:ada A:2:bob B:1:cy");
  CHECK_EQ_INT(count(b, "lobby"), 2);
  reset_events(b);

  mr_presence_node_down(b->p, "nobody"); /* unknown: nothing */
  mr_presence_node_down(b->p, "B");      /* itself: nothing */
  CHECK_EQ_INT(b->h.srv->stats.presence_node_drops, 0);
  mr_presence_node_down(b->p, "A");
  CHECK_EQ_INT(b->h.srv->stats.presence_node_drops, 1);
  CHECK_STR(listing(b, "lobby"), "B:1:cy");
  CHECK_STR(listing(b, "game"), "");
  CHECK_EQ_INT(count(b, "lobby"), 1);
  CHECK_EQ_INT(mr_presence_remote_entries(b->p), 0);
  flush(b);
  /* lobby reports both leaves; game is not B's business. */
  CHECK_EQ_INT(b->nevents, 1);
  CHECK_STR(b->events[0].room, "lobby");
  CHECK_EQ_INT(b->events[0].njoins, 0);
  CHECK_EQ_INT(b->events[0].nleaves, 2);
  CHECK_STR(b->events[0].leave_nodes[0], "A");
  CHECK_STR(b->events[0].leave_names[0], "ada");
  CHECK_STR(b->events[0].leave_names[1], "bob");
  reset_events(b);

  /* Back: the link's full state. */
  send_full(a, b);
  CHECK_STR(listing(b, "lobby"), "A:1:ada A:2:bob B:1:cy");
  CHECK_EQ_INT(count(b, "lobby"), 2);
  flush(b);
  CHECK_EQ_INT(b->joins_total, 2);
  CHECK_EQ_INT(b->leaves_total, 0);

  mr_rooms_leave_all(&a->h.srv->rooms, &ma);
  mr_rooms_leave_all(&b->h.srv->rooms, &mb);
  node_stop(a);
  node_stop(b);
}

/* ---- a join storm ---------------------------------------------------------
 */

/* 10,000 members join one room and are tracked within one batch: A sends a
 * bounded number of frames (one COUNTS, PRESENCE frames of up to
 * MR_PRESENCE_FRAME_BUDGET bytes), not one per join, and B reports them in
 * one on_presence call. */
static void test_storm(void) {
  enum { N = 10000 };
  node *a = node_start(0, "A"), *b = node_start(1, "B");
  link_to(a, b);
  mr_member mb = {0};
  join(b, &mb, "storm");
  flush(b);
  mr_member *ms = calloc(N, sizeof *ms);
  for (uint64_t i = 0; i < N; i++) {
    join(a, &ms[i], "storm");
    char name[16];
    snprintf(name, sizeof name, "p%llu", (unsigned long long)i);
    CHECK_EQ_INT(track(a, "storm", i + 1, name), 1);
  }
  CHECK_EQ_INT(a->send_calls, 0);
  flush(a);
  CHECK_EQ_INT(a->send_calls, 1);
  CHECK_EQ_INT(a->counts_frames, 1);
  /* About 30 bytes an entry: 300 kB in frames of at most 60 kB. */
  size_t bound = a->bytes / MR_PRESENCE_FRAME_BUDGET + 2;
  CHECK(a->presence_frames >= 1 && a->presence_frames <= bound);
  CHECK(a->presence_frames <= 10);
  CHECK_EQ_INT(count(b, "storm"), N + 1);
  mr_presence_entry *list;
  CHECK_EQ_INT(mr_presence_list(b->p, "storm", 5, &list), N);
  free(list);
  flush(b);
  CHECK_EQ_INT(b->nevents, 1);
  CHECK_EQ_INT(b->joins_total, N);

  /* And all of them leave (closing): again a handful of frames. */
  size_t before = a->counts_frames + a->presence_frames;
  for (uint64_t i = 0; i < N; i++) {
    mr_rooms_leave_all(&a->h.srv->rooms, &ms[i]);
    CHECK_EQ_INT(mr_presence_untrack_conn(a->p, i + 1), 1);
  }
  flush(a);
  CHECK(a->counts_frames + a->presence_frames - before <= 10);
  CHECK_EQ_INT(count(b, "storm"), 1);
  CHECK_EQ_INT(mr_presence_remote_entries(b->p), 0);
  reset_events(b);
  flush(b);
  CHECK_EQ_INT(b->leaves_total, N);
  free(ms);
  mr_rooms_leave_all(&b->h.srv->rooms, &mb);
  node_stop(a);
  node_stop(b);
}

int main(void) {
  mr_log_set_level(MR_LOG_ERROR);
  test_counts();
  test_track_update_untrack();
  test_netting();
  test_full_state();
  test_node_down();
  test_storm();
  return test_report();
}
