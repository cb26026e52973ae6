/* The server: the loop, the listener, every connection, the rooms, and the
 * counters. Connections are in conn.h; the Lua side is in bridge.h. */
#ifndef MR_SERVER_H
#define MR_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "rooms.h"

struct mr_conn;
struct mr_bridge;
struct mr_cluster;

/* Every refusal and drop is counted; ws.stats() shows these. */
#define MR_STATS_MAP(X)                                                        \
  X(connections_accepted)                                                      \
  X(connections_open)                                                          \
  X(connections_refused)                                                       \
  X(handshakes_refused)                                                        \
  X(handshakes_timed_out)                                                      \
  X(handler_refusals)                                                          \
  X(protocol_errors)                                                           \
  X(invalid_utf8)                                                              \
  X(messages_too_big)                                                          \
  X(handler_errors)                                                            \
  X(backpressure_closes)                                                       \
  X(idle_closes)                                                               \
  X(ping_timeouts)                                                             \
  X(messages_in)                                                               \
  X(messages_out)                                                              \
  X(bytes_in)                                                                  \
  X(bytes_out)                                                                 \
  X(broadcasts)                                                                \
  X(reloads)                                                                   \
  X(reload_failures)                                                           \
  X(cluster_links_up)                                                          \
  X(cluster_links_refused)                                                     \
  X(cluster_links_dropped)                                                     \
  X(cluster_frames_malformed)                                                  \
  X(cluster_unknown_tags)                                                      \
  X(cluster_broadcasts_out)                                                    \
  X(cluster_broadcasts_in)                                                     \
  X(cluster_queue_drops)

typedef struct {
#define MR_STATS_FIELD(name) uint64_t name;
  MR_STATS_MAP(MR_STATS_FIELD)
#undef MR_STATS_FIELD
} mr_stats;

typedef struct mr_server {
  uv_loop_t *loop;
  mr_config cfg;
  uv_tcp_t listener;
  int listening;
  int handles_started;     /* timers, signals and the flush hook exist */
  uv_prepare_t flush_prep; /* flushes queued writes before the loop polls */
  uv_timer_t sweep;        /* once a second: timeouts, pings */
  uv_signal_t sig_int, sig_term, sig_hup;
  mr_rooms rooms;
  struct mr_conn *conns_by_id; /* uthash on id: how Lua handles resolve */
  struct mr_conn *all_head;    /* every connection, for the sweep */
  struct mr_conn *pending;     /* connections with queued, unflushed bytes */
  struct mr_conn *doomed;      /* connections to close at the next safe point */
  uint64_t next_id;
  char node_name[64]; /* --node, or host-pid when not given */
  struct mr_bridge *bridge;
  struct mr_cluster *cluster;
  mr_stats stats;
  int shutting_down;
  uint64_t shutdown_deadline; /* loop time when closing turns abrupt */
  void *ws_pool; /* idle wslay contexts, see conn.c */
  unsigned ws_pool_len;
  const uint8_t *feed; /* the read chunk being fed to wslay right now */
  size_t feed_len;
  uint8_t readbuf[65536]; /* shared by every read: reads are consumed at once */
} mr_server;

/* Prepares srv on loop with cfg (copied); nothing listens yet. */
int mr_server_init(mr_server *srv, uv_loop_t *loop, const mr_config *cfg);

/* Binds and listens on cfg.listen; logs and returns a negative libuv error
 * code on failure. */
int mr_server_listen(mr_server *srv);

/* Starts an orderly shutdown: stop accepting, close every connection with
 * 1001, stop timers; the loop ends when the last handle is closed. */
void mr_server_shutdown(mr_server *srv);

/* Frees what the server owns once the loop has ended. */
void mr_server_free(mr_server *srv);

/* Finds a connection by id, in any state; NULL once it has been freed. */
struct mr_conn *mr_server_find(mr_server *srv, uint64_t id);

/* Sends msg to every open local member of room except `except` (may be
 * NULL). The frame is encoded once and shared. Returns the number of
 * members it was queued for. Runs no Lua: connections that overflow are
 * closed later, at a safe point. */
int mr_server_broadcast_local(mr_server *srv, const char *room, size_t room_len,
                              const void *msg, size_t len, int binary,
                              struct mr_conn *except);

/* Delivers a room broadcast that a peer node forwarded: local members only,
 * never forwarded again (what keeps a cluster free of storms). Returns the
 * number of members it was queued for. */
int mr_server_deliver_remote(mr_server *srv, const char *room, size_t room_len,
                             const void *msg, size_t len, int binary);

/* Local delivery plus forwarding once to the cluster. */
int mr_server_broadcast(mr_server *srv, const char *room, size_t room_len,
                        const void *msg, size_t len, int binary,
                        struct mr_conn *except);

/* Runs the deferred closes and writes now (normally done before polling). */
void mr_server_flush(mr_server *srv);

#endif
