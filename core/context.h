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
#include "idtab.h"
#include "rooms.h"
#include "timer.h"

struct mr_conn;
struct mr_conn_events;
struct mr_bridge;
struct mr_cluster;
struct mr_ws_pool;
struct mr_admin;
struct mr_zpool;
struct mr_ipcount;
struct mr_engine;

/* Every refusal and drop is counted; ws.stats() shows these, and /metrics
 * (metrics.c) exports each with its help text. */
#define MR_STATS_MAP(X)                                                        \
  X(connections_accepted,                                                      \
    "TCP connections accepted by the WebSocket listener")                      \
  X(connections_open, "WebSocket connections open now (upgraded)")             \
  X(connections_refused,                                                       \
    "connections refused at accept (--max-connections, accept errors)")        \
  X(handshakes_refused,                                                        \
    "upgrade requests refused as malformed or not a WebSocket upgrade")        \
  X(handshakes_timed_out,                                                      \
    "connections closed for not finishing the upgrade in --handshake-timeout") \
  X(handler_refusals, "upgrades that on_connect refused")                      \
  X(protocol_errors, "connections closed for a WebSocket protocol violation")  \
  X(invalid_utf8,                                                              \
    "connections closed with 1007 for a text message that is not UTF-8")       \
  X(messages_too_big,                                                          \
    "connections closed with 1009 for a message over --max-message")           \
  X(handler_errors, "errors raised by handlers or wrong on_connect results")   \
  X(backpressure_closes,                                                       \
    "connections closed with 1008 for unsent bytes over --max-backpressure")   \
  X(idle_closes, "connections closed for sending nothing for --idle-timeout")  \
  X(ping_timeouts, "connections closed for not answering a ping")              \
  X(messages_in, "data messages received from clients")                        \
  X(messages_out, "data messages queued for clients")                          \
  X(bytes_in, "bytes received from clients")                                   \
  X(bytes_out, "bytes written to clients")                                     \
  X(broadcasts, "room broadcasts made on this node")                           \
  X(reloads, "successful script reloads")                                      \
  X(reload_failures, "script reloads that failed and kept the old version")    \
  X(cluster_links_up, "cluster links that completed the handshake")            \
  X(cluster_links_refused, "cluster links refused in the handshake")           \
  X(cluster_links_dropped, "established cluster links lost")                   \
  X(cluster_frames_malformed, "malformed frames received from peers")          \
  X(cluster_unknown_tags, "cluster frames of an unknown type ignored")         \
  X(cluster_broadcasts_out, "room broadcasts forwarded to other nodes")        \
  X(cluster_broadcasts_in, "room broadcasts received from other nodes")        \
  X(cluster_queue_drops,                                                       \
    "cluster links dropped because their send queue was full")                 \
  X(internal_errors, "internal failures such as out of memory")                \
  X(timer_errors, "errors raised by timer callbacks")                          \
  X(lua_invalid_utf8, "Lua calls refused for text that is not valid UTF-8")    \
  X(admin_requests, "requests answered on --admin-listen")                     \
  X(admin_bad_requests, "admin requests answered 400 or 431 and closed")       \
  X(admin_connections_refused,                                                 \
    "admin connections refused over the limit of open ones")                   \
  X(admin_timeouts,                                                            \
    "admin connections closed for not sending a whole request in time")        \
  X(http_requests, "plain HTTP requests given to on_http")                     \
  X(http_errors, "on_http requests answered 500 for a handler error")          \
  X(http_refused, "plain HTTP requests refused by the server (4xx)")           \
  X(http_idle_closes,                                                          \
    "keep-alive HTTP connections closed after --keepalive-timeout")            \
  X(cluster_stalls,                                                            \
    "heartbeats that judged no link because this node had not run")            \
  X(compression_negotiated, "connections that negotiated permessage-deflate")  \
  X(compression_offers_declined,                                               \
    "permessage-deflate offers declined as malformed or unsupported")          \
  X(compressed_messages_in, "compressed messages received and inflated")       \
  X(compressed_messages_out, "messages queued compressed (RSV1) for clients")  \
  X(compressed_bytes_saved,                                                    \
    "bytes saved on the wire by compressed frames over plain ones")            \
  X(messages_deflated,                                                         \
    "messages compressed (a broadcast once per window size in use)")           \
  X(inflate_errors, "connections closed with 1007 for corrupt compressed "     \
                    "data")                                                    \
  X(cluster_counts_out, "COUNTS frames sent to other nodes (per link)")        \
  X(cluster_counts_in, "COUNTS frames received from other nodes")              \
  X(cluster_presence_out, "PRESENCE frames sent to other nodes (per link)")    \
  X(cluster_presence_in, "PRESENCE frames received from other nodes")          \
  X(presence_resyncs, "full presence states received from other nodes")        \
  X(presence_node_drops,                                                       \
    "nodes whose counts and presence were removed when their link closed")     \
  X(presence_refused, "ws.track calls refused (meta too big, no memory)")      \
  X(presence_events, "on_presence calls (one per room per batch)")             \
  X(connections_per_ip_refused,                                                \
    "requests answered 429 over --max-connections-per-ip")                     \
  X(origins_refused,                                                           \
    "upgrades answered 403 for an Origin not in --allow-origin")               \
  X(message_rate_closes,                                                       \
    "connections closed over --max-messages-per-second (1008, or 429 for "     \
    "plain HTTP)")                                                             \
  X(tls_handshakes, "TLS handshakes completed with clients")                   \
  X(tls_handshake_failures,                                                    \
    "client connections closed for a failed TLS handshake")                    \
  X(tls_plaintext_refused,                                                     \
    "plain-text connections refused 400 on the TLS port")                      \
  X(tls_reloads, "TLS certificates and keys reloaded")                         \
  X(tls_reload_failures,                                                       \
    "TLS reloads that failed and kept the previous certificate")               \
  X(cluster_tls_failures,                                                      \
    "cluster links refused for a failed TLS handshake or certificate")         \
  X(handler_timeouts,                                                          \
    "handler calls interrupted for running over --handler-timeout")            \
  X(lua_memory_limit_hits,                                                     \
    "handler calls refused for leaving the Lua heap over --lua-memory-limit")  \
  X(lua_memory_refusals,                                                       \
    "upgrades and HTTP requests refused 503 while over --lua-memory-limit")    \
  X(engine_connected, "1 while the Redis engine is connected, else 0")         \
  X(engine_reconnects, "reconnections of the Redis engine after a loss")       \
  X(engine_subscriptions, "Redis channels the engine is subscribed to now")    \
  X(engine_published, "messages the Redis engine published")                   \
  X(engine_received, "room broadcasts received from other nodes via Redis")    \
  X(engine_dropped,                                                            \
    "broadcasts not published: Redis unreachable or over its queue limit")     \
  X(engine_malformed, "malformed messages from Redis dropped")

typedef struct {
#define MR_STATS_FIELD(name, help) uint64_t name;
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
  /* Active while connections wait for the next slice of a write sweep, so
   * that the loop polls without blocking in between (server.c). */
  uv_idle_t flush_more;
  uv_timer_t sweep; /* every 250 ms: timeouts, pings */
  mr_rooms rooms;
  /* Every connection by id, from accept until it is freed (closed ones
   * too, until their socket's close callback): how Lua handles resolve,
   * and what the sweep and shutdown walk. */
  mr_idtab conns;
  size_t conns_unclosed; /* those of them not closed yet */
  /* Connections with queued, unflushed bytes, oldest first: a write sweep
   * takes them from the front, and a connection that gets more after its
   * turn goes to the back (pending_tail points at the last next pointer,
   * or at pending when the list is empty). */
  struct mr_conn *pending;
  struct mr_conn **pending_tail;
  struct mr_conn *doomed; /* connections to close at the next safe point */
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
  int timer_armed;        /* timer is started, for timer_due */
  uint64_t timer_due;     /* the deadline it is armed for (loop time, ms) */
  struct mr_admin *admin; /* --admin-listen's HTTP server; NULL when off */
  /* The open-file limit read at listen (0: not checked, as in the kit) and
   * the descriptors kept back from clients for the log, the admin port and
   * cluster links: a client whose descriptor is at or above
   * fd_limit - fd_reserve is refused. */
  unsigned fd_limit;
  unsigned fd_reserve;
  /* Idle zlib streams for compressing messages (deflate.h); created at the
   * first compressed send. Inflating has its own, under ws_pool. */
  struct mr_zpool *zpool;
  /* Presence and cluster-wide counts (presence.h), and the id of its batch
   * flush on the timer heap (0: none pending). */
  struct mr_presence *presence;
  uint64_t presence_timer;
  /* --max-connections-per-ip: connections counted per address (ipcount.h),
   * from accept to close; NULL when empty or the limit is off. */
  struct mr_ipcount *ip_counts;
  /* TLS contexts (tls.h) for clients (--tls-cert) and cluster links
   * (--cluster-tls-*); NULL when off. A reload replaces them; sessions
   * keep the context they were made with. */
  struct mr_tls_ctx *tls;
  struct mr_tls_ctx *cluster_tls;
  /* The Redis engine (engine_redis.h); NULL without --engine. */
  struct mr_engine *engine;
} mr_server;

/* Pending script timers (ws.after, ws.every, conn:after): the heap less the
 * presence batch flush, which shares it but is no handler's timer. */
static inline size_t mr_server_script_timers(const mr_server *srv) {
  size_t n = mr_timers_count(&srv->timers);
  if (n && srv->presence_timer &&
      mr_timers_pending(&srv->timers, srv->presence_timer))
    n--;
  return n;
}

#endif
