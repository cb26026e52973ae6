/* The state one server shares with the modules under it: the loop, the
 * configuration, the counters, the rooms and the connection indexes.
 *
 * This header holds data only. Lower modules (conn, cluster, broadcast,
 * the bridge) include it to reach the shared state; the server's own
 * functions (listen, shutdown, the safe point) are in server.h, which only
 * the top (main, the kit) includes. Pointers to higher modules' objects
 * (bridge, cluster) are opaque here. */
#ifndef MR_CONTEXT_H
#define MR_CONTEXT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "rooms.h"
#include "timer.h"

struct mr_conn;
struct mr_conn_events;
struct mr_bridge;
struct mr_cluster;
struct mr_ws_pool;

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
  X(cluster_queue_drops)                                                       \
  X(internal_errors)                                                           \
  X(timer_errors)                                                              \
  X(lua_invalid_utf8)                                                          \
  X(http_requests)                                                             \
  X(http_errors)                                                               \
  X(http_refused)                                                              \
  X(http_idle_closes)

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
  uv_timer_t sweep;        /* every 250 ms: timeouts, pings */
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
  struct mr_ws_pool *ws_pool; /* idle wslay contexts (ws.h) */
  /* Where connections report connect, message and close: set by the
   * server to the bridge, so conn.c never calls up into Lua directly. */
  const struct mr_conn_events *conn_events;
  /* ws.after, ws.every and conn:after deadlines; the Lua side (api.c)
   * keeps what each id runs. One libuv timer is armed for the earliest. */
  mr_timers timers;
  uv_timer_t timer;
  int timer_armed;    /* timer is started, for timer_due */
  uint64_t timer_due; /* the deadline it is armed for (loop time, ms) */
} mr_server;

#endif
