/* Presence and cluster-wide room counts: what every node knows of the
 * others' members and tracked connections, and the batches that keep it
 * up to date.
 *
 * State. For each node (this one included) and room: the node's member
 * count (this node's own comes from the room registry) and its presence
 * entries (connection id -> meta bytes, wire.h's meta encoding), in hash
 * tables, so a join, a leave or a lookup costs O(1) whatever the room's
 * size. A per-room total of the other nodes' counts makes the cluster
 * count O(1) too. This node's own entries are authoritative; the others'
 * are replaced by the full state a node sends whenever a link to it comes
 * up, and removed when the last link to it closes.
 *
 * Batches. Changes are not sent or reported one by one: a local join,
 * leave, track or untrack marks its room (or entry) dirty and schedules a
 * flush MR_PRESENCE_BATCH_MS later on the server's timer heap
 * (srv->timers, srv->presence_timer). The flush sends one batch of COUNTS
 * and PRESENCE frames to every linked node (through the sender the cluster
 * sets) and reports, per room, the net joins and leaves since the last
 * flush through the events callback (on_presence): a join and a leave of
 * the same entry within one batch cancel out; a changed meta is a leave of
 * the old meta and a join of the new.
 *
 * Who drives the flush: the server's script-timer run (mr_api_run_timers)
 * calls mr_presence_flush when it pops srv->presence_timer, in the real
 * loop and in the busted kit's run_timers()/advance() alike, so the kit
 * needs nothing more than moving its clock by MR_PRESENCE_BATCH_MS. Tests
 * may also call mr_presence_flush(srv->presence, now) directly.
 *
 * This module never calls Lua: events go up through the callback the
 * server sets, frames through the cluster's sender. */
#ifndef MR_PRESENCE_H
#define MR_PRESENCE_H

#include <stddef.h>
#include <stdint.h>

#include "context.h"
#include "wire.h"

/* Changes wait at most this long before they are sent and reported. */
#define MR_PRESENCE_BATCH_MS 50
/* The largest COUNTS or PRESENCE frame built (payload bytes, about): every
 * node accepts at least 65,535 + 64 (its --max-message of at least 1 plus
 * the cluster's room headroom), and one entry, with a room of at most 1024
 * bytes and a meta of at most MR_PRESENCE_MAX_META, always fits. */
#define MR_PRESENCE_FRAME_BUDGET 60000
/* The largest --max-presence-meta. */
#define MR_PRESENCE_MAX_META 32768

typedef struct mr_presence mr_presence;

/* One presence entry as reported (pointers valid during the call only). */
typedef struct {
  const char *node;
  size_t node_len;
  uint64_t id;
  const uint8_t *meta;
  size_t meta_len;
} mr_presence_entry;

/* The net changes of one room in one batch. */
typedef void (*mr_presence_events_cb)(
    void *ud, const char *room, size_t room_len, const mr_presence_entry *joins,
    size_t njoins, const mr_presence_entry *leaves, size_t nleaves);

/* Sends the frames encoded in w to every linked node (the cluster's). */
typedef void (*mr_presence_send_cb)(void *ud, const mr_wbuf *w, size_t counts,
                                    size_t presence);

/* Creates the state for srv (node name srv->node_name). Returns NULL when
 * out of memory. The server owns it and frees it with mr_presence_free. */
mr_presence *mr_presence_new(mr_server *srv);
void mr_presence_free(mr_presence *p);

/* Where batches of net changes go (the bridge's on_presence). */
void mr_presence_set_events(mr_presence *p, mr_presence_events_cb cb, void *ud);
/* Where batches of frames go; set by the cluster when it starts (without
 * it, counts are not tracked for peers and nothing is sent). */
void mr_presence_set_sender(mr_presence *p, mr_presence_send_cb cb, void *ud);
/* This node's name changed (the cluster's may differ from the server's). */
void mr_presence_set_node(mr_presence *p, const char *name);

/* ---- this node ---- */

/* Tracks connection id in room with meta (meta_len bytes of wire.h's meta
 * encoding, copied). Returns 1 when it was new, 0 when it replaced an
 * entry (same meta included), MR_ENOMEM (nothing changed). */
int mr_presence_track(mr_presence *p, const char *room, size_t room_len,
                      uint64_t id, const uint8_t *meta, size_t meta_len);
/* Returns 1 when id was tracked in room (it no longer is), else 0. */
int mr_presence_untrack(mr_presence *p, const char *room, size_t room_len,
                        uint64_t id);
/* Untracks id from every room (a connection that closed). Returns how
 * many entries it had. */
size_t mr_presence_untrack_conn(mr_presence *p, uint64_t id);
/* The local member count of room changed (the room registry's hook). */
void mr_presence_room_changed(mr_presence *p, const char *room,
                              size_t room_len);

/* ---- reading ---- */

/* Members of room on the other nodes (what they last reported). */
uint64_t mr_presence_remote_count(const mr_presence *p, const char *room,
                                  size_t room_len);
/* Every entry of room on every node, sorted by (node name, id), into a
 * new array in *out (the caller frees it; pointers stay valid until the
 * state next changes). Returns how many, or MR_ENOMEM as a negative. */
long mr_presence_list(const mr_presence *p, const char *room, size_t room_len,
                      mr_presence_entry **out);
/* Entries this node tracks, and entries it holds from other nodes. */
size_t mr_presence_local_entries(const mr_presence *p);
size_t mr_presence_remote_entries(const mr_presence *p);

/* ---- the cluster's hooks ---- */

/* Appends this node's full state (COUNTS then PRESENCE, each one or more
 * frames from SYNC_FIRST to SYNC_LAST) to w, for a link that just came
 * up, and how many frames of each it built to *counts and *presence.
 * Returns 0 or a negative error code (w may hold part of it). */
int mr_presence_encode_full(mr_presence *p, mr_wbuf *w, size_t *counts,
                            size_t *presence);
/* A COUNTS or PRESENCE frame from node (name). */
void mr_presence_on_frame(mr_presence *p, const char *node,
                          const mr_wire_msg *m);
/* The last link to node closed: its counts and entries are removed (the
 * entries with leave events at the next flush). */
void mr_presence_node_down(mr_presence *p, const char *node);

/* ---- the batch ---- */

/* Sends what changed locally since the last flush to every linked node and
 * reports the net changes per room to the events callback (for rooms this
 * node has members or tracked entries in). Cancels the pending timer. */
void mr_presence_flush(mr_presence *p, uint64_t now);

#endif
