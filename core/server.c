#include "server.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "admin.h"
#include "bridge.h"
#include "buf.h"
#include "cluster.h"
#include "codec.h"
#include "conn.h"
#include "deflate.h"
#include "engine_redis.h"
#include "error.h"
#include "log.h"
#include "presence.h"
#include "reload.h"
#include "tls.h"
#include "trace.h"
#include "watchdog.h"
#include "ws.h"

#define SWEEP_MS 250
/* After SIGTERM, connections get this long to answer the 1001 close. */
#define SHUTDOWN_GRACE_MS 3000

static void on_room_change(void *ud, const mr_room *room, int created) {
  mr_server *srv = ud;
  if (srv->cluster)
    mr_cluster_interest(srv->cluster, room->name, room->name_len, created);
  if (srv->engine)
    mr_engine_interest(srv->engine, room->name, room->name_len, created);
  if (!created && srv->bridge)
    mr_bridge_on_room_gone(srv->bridge, room->name, room->name_len);
}

/* Every join and leave: the cluster-wide count of the room is sent to the
 * other nodes with the next presence batch. */
static void on_room_count(void *ud, const mr_room *room) {
  mr_server *srv = ud;
  if (srv->presence)
    mr_presence_room_changed(srv->presence, room->name, room->name_len);
}

static void on_presence_events(void *ud, const char *room, size_t room_len,
                               const mr_presence_entry *joins, size_t njoins,
                               const mr_presence_entry *leaves,
                               size_t nleaves) {
  mr_server *srv = ud;
  if (srv->bridge)
    mr_bridge_on_presence(srv->bridge, room, room_len, joins, njoins, leaves,
                          nleaves);
}

/* ---- wiring: connections report to the bridge ---------------------------- */

static int ev_connect(mr_server *srv, mr_conn *c, const mr_http_request *req,
                      mr_conn_answer *ans) {
  return mr_bridge_on_connect(srv->bridge, c, req, ans);
}

static int ev_message(mr_server *srv, mr_conn *c, const uint8_t *msg,
                      size_t len, int binary) {
  return mr_bridge_on_message(srv->bridge, c, msg, len, binary);
}

static void ev_close(mr_server *srv, mr_conn *c, unsigned code,
                     const char *reason, size_t len) {
  mr_bridge_on_close(srv->bridge, c, code, reason, len);
  /* After on_close, so that the handler still sees its own entries (and
   * whatever it tracked there goes too). */
  if (srv->presence)
    mr_presence_untrack_conn(srv->presence, c->id);
}

static void ev_refused(mr_server *srv, mr_conn *c) {
  mr_bridge_forget(srv->bridge, c);
  /* on_connect may have tracked it before refusing. */
  if (srv->presence)
    mr_presence_untrack_conn(srv->presence, c->id);
}

static int ev_http_enabled(mr_server *srv) {
  return mr_bridge_has_http(srv->bridge);
}

static int ev_http(mr_server *srv, mr_conn *c, const mr_http_request *req,
                   const char *body, size_t len, mr_http_answer *ans) {
  return mr_bridge_on_http(srv->bridge, c, req, body, len, ans);
}

static const mr_conn_events conn_events = {
    ev_connect, ev_message, ev_close, ev_refused, ev_http_enabled, ev_http};

int mr_server_init(mr_server *srv, uv_loop_t *loop, const mr_config *cfg) {
  memset(srv, 0, sizeof *srv);
  srv->loop = loop;
  mr_idtab_init(&srv->conns, offsetof(mr_conn, id));
  srv->cfg = *cfg;
  srv->conn_events = &conn_events;
  mr_rooms_init(&srv->rooms, on_room_change, srv);
  mr_timers_init(&srv->timers);
  srv->rooms.on_count = on_room_count;
  if (cfg->node[0]) {
    snprintf(srv->node_name, sizeof srv->node_name, "%s", cfg->node);
  } else {
    /* Unique enough on one machine and readable in logs: host and pid. */
    char host[32] = "node";
    size_t hlen = sizeof host;
    uv_os_gethostname(host, &hlen);
    snprintf(srv->node_name, sizeof srv->node_name, "%s-%d", host,
             (int)uv_os_getpid());
  }
  if (!(srv->presence = mr_presence_new(srv)))
    return MR_ENOMEM;
  mr_presence_set_events(srv->presence, on_presence_events, srv);
  return 0;
}

/* ---- the safe point -------------------------------------------------------
 */

/* Tears down every doomed connection and writes up to budget pending ones,
 * oldest first. Doomed connections are torn down here, outside any fan-out
 * or Lua call, and their on_close may doom or queue more, so this loops
 * until the doomed are gone and the budget is spent or nothing is pending.
 * A budget of 0 only tears down. */
static void flush_some(mr_server *srv, size_t budget) {
  while (srv->doomed || (srv->pending && budget)) {
    while (srv->doomed)
      mr_conn_finish(srv->doomed);
    while (srv->pending && !srv->doomed && budget) {
      mr_conn_flush(srv->pending);
      budget--;
    }
  }
}

void mr_server_flush(mr_server *srv) { flush_some(srv, SIZE_MAX); }

/* ---- script timers --------------------------------------------------------
 */

static void on_timers(uv_timer_t *t) {
  mr_server *srv = t->data;
  srv->timer_armed = 0;
  mr_bridge_run_timers(srv->bridge, uv_now(srv->loop));
}

/* Arms the one libuv timer for the earliest script timer, when that has
 * changed. Runs before every poll (after the flush, whose on_close handlers
 * may cancel timers), so a timer scheduled anywhere in a loop turn is armed
 * before the loop sleeps, and a loop turn costs O(1) however many timers
 * are pending. */
static void arm_timers(mr_server *srv) {
  uint64_t due;
  if (srv->shutting_down || !mr_timers_peek(&srv->timers, &due)) {
    if (srv->timer_armed) {
      uv_timer_stop(&srv->timer);
      srv->timer_armed = 0;
    }
    return;
  }
  if (srv->timer_armed && srv->timer_due == due)
    return;
  uint64_t now = uv_now(srv->loop);
  uv_timer_start(&srv->timer, on_timers, due > now ? due - now : 0, 0);
  srv->timer_armed = 1;
  srv->timer_due = due;
}

/* Connections written per loop turn, at most. A fan-out to a large room
 * is written in slices with a poll in between, and the sweep goes round the
 * pending list oldest first: a message that arrives while one sweep is
 * under way is read within a slice and joins the queues of everyone not
 * yet written, instead of waiting for the whole sweep and then a sweep of
 * its own. Every connection is still written once per round with all it
 * has queued, so the sends per delivery stay as few; what changes is that
 * a delivery waits half a round on average, not one and a half. 32 was
 * measured best among 16, 32, 64 and 128 at 1,000 and 10,000 subscribers
 * (the poll between slices costs one epoll_wait; larger slices let new
 * messages wait longer). */
#define FLUSH_SLICE 32

static void on_flush_more(uv_idle_t *h) { (void)h; }

/* The safe point of a loop turn: every doomed connection is torn down, and
 * up to FLUSH_SLICE pending ones are written. While more wait, an idle
 * handle makes the loop poll without sleeping (and prepare run again). */
static void flush_slice(mr_server *srv) {
  flush_some(srv, FLUSH_SLICE);
  if (srv->pending && !uv_is_active((uv_handle_t *)&srv->flush_more))
    uv_idle_start(&srv->flush_more, on_flush_more);
  else if (!srv->pending && uv_is_active((uv_handle_t *)&srv->flush_more))
    uv_idle_stop(&srv->flush_more);
}

static void on_prepare(uv_prepare_t *p) {
  mr_server *srv = p->data;
  mr_trace_turn();
  flush_slice(srv);
  arm_timers(srv);
}

/* ---- listener, sweep, signals -------------------------------------------- */

static void on_connection(uv_stream_t *s, int status) {
  mr_server *srv = s->data;
  if (status < 0) {
    /* A connection never stays in the backlog here: on EMFILE or ENFILE
     * libuv closes a descriptor it keeps for the purpose, accepts and
     * closes every waiting connection (the clients see a reset), and calls
     * us only when even that failed. So the connections dropped cannot be
     * counted one by one: this counts one per failed accept, and the log
     * names the file limit. The descriptor reserve (mr_conn_accept) keeps
     * the server clear of this in the ordinary case. */
    static mr_log_limit lim = MR_LOG_LIMIT_INIT("failed accepts");
    srv->stats.connections_refused++;
    if (status == UV_EMFILE || status == UV_ENFILE)
      mr_log_limited(&lim, MR_LOG_WARN,
                     "accept failed: %s (open-file limit %u, ulimit -n); "
                     "waiting connections were reset",
                     uv_strerror(status), srv->fd_limit);
    else
      mr_log_limited(&lim, MR_LOG_WARN, "accept failed: %s",
                     uv_strerror(status));
    return;
  }
  mr_conn_accept(srv);
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

static void finish_shutdown(mr_server *srv) {
  /* A server without sockets (the busted kit's) never started these. */
  if (!srv->handles_started)
    return;
  close_handle((uv_handle_t *)&srv->sweep);
  close_handle((uv_handle_t *)&srv->timer);
  close_handle((uv_handle_t *)&srv->flush_prep);
  close_handle((uv_handle_t *)&srv->flush_more);
  mr_watchdog_stop();
  mr_reload_stop(srv);
  if (srv->cluster)
    mr_cluster_close(srv->cluster);
  if (srv->engine)
    mr_engine_close(srv->engine);
  /* Last: /readyz answered 503 throughout the grace period, and nothing of
   * the admin's may keep the loop alive once the server is done. */
  mr_admin_close(srv->admin);
}

static void on_sweep(uv_timer_t *t) {
  mr_server *srv = t->data;
  uint64_t now = uv_now(srv->loop);
  /* Connections are freed only in close callbacks, which never run inside
   * this loop, so the walk is safe. */
  size_t pos = 0;
  for (mr_conn *c; (c = mr_conn_next(srv, &pos));) {
    if (srv->shutting_down && now >= srv->shutdown_deadline &&
        c->state != MR_CONN_CLOSED)
      mr_conn_doom(c, MR_CLOSE_GOING_AWAY, "server shutting down");
    else
      mr_conn_sweep(c, now);
  }
  /* Only the doomed are finished here (their on_close may doom more):
   * what the sweep queued (pings, close frames) is written by the prepare
   * hook of this same loop turn, in slices like any other write, so this
   * timer never writes a whole fan-out at once. */
  flush_some(srv, 0);
  /* The counts of lines held back during a burst are logged soon after it
   * ends, not only when the next such event comes. */
  mr_log_limits_flush();
  if (srv->shutting_down && srv->conns.count == 0)
    finish_shutdown(srv);
}

/* Called on the loop by the watchdog (core/watchdog.c), which takes the
 * signals in its own thread so that they work whatever the loop is doing. */
static void on_signal(void *ud, int signum) {
  mr_server *srv = ud;
  if (signum == SIGHUP) {
    /* Certificates are re-read on SIGHUP only: a script saved during
     * development must not rotate them, count reloads or log. */
    mr_reload_tls(srv, 0);
    mr_reload_now(srv, "SIGHUP");
    return;
  }
  if (srv->shutting_down) {
    mr_warn("second signal: exiting now");
    /* Closing the Lua state runs the finalizers of the C modules a script
     * loaded (lua-cjson's buffers are malloc'd), which exiting does not;
     * nothing returns to the loop after it. */
    mr_bridge_free(srv->bridge);
    srv->bridge = NULL;
    exit(0);
  }
  mr_info("%s: closing every connection with 1001",
          signum == SIGINT ? "SIGINT" : "SIGTERM");
  mr_server_shutdown(srv);
}

/* Reads the open-file limit and sets the reserve kept from clients: an
 * eighth of the limit, at least 16 and at most 256 descriptors, enough for
 * the admin port's 64 connections, cluster links and reading scripts. */
static void read_fd_limit(mr_server *srv) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
      rl.rlim_cur > 0x7fffffff) {
    srv->fd_limit = 0;
    return;
  }
  srv->fd_limit = (unsigned)rl.rlim_cur;
  unsigned reserve = srv->fd_limit / 8;
  if (reserve < 16)
    reserve = 16;
  if (reserve > 256)
    reserve = 256;
  srv->fd_reserve = reserve;
  mr_debug("open-file limit %u, %u descriptors kept from clients",
           srv->fd_limit, srv->fd_reserve);
}

int mr_server_listen(mr_server *srv) {
  struct sockaddr_storage ss;
  int r;
  if (strchr(srv->cfg.listen.host, ':'))
    r = uv_ip6_addr(srv->cfg.listen.host, srv->cfg.listen.port,
                    (struct sockaddr_in6 *)&ss);
  else
    r = uv_ip4_addr(srv->cfg.listen.host, srv->cfg.listen.port,
                    (struct sockaddr_in *)&ss);
  if (r != 0) {
    mr_error("--listen %s:%d: not a numeric address", srv->cfg.listen.host,
             srv->cfg.listen.port);
    return r;
  }
  /* The certificates are read before the port is bound, so that a node
   * with a broken one never accepts a client it cannot serve. */
  if ((r = mr_reload_tls(srv, 1)) != 0)
    return r;
  uv_tcp_init(srv->loop, &srv->listener);
  srv->listener.data = srv;
  if ((r = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0)) != 0 ||
      (r = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection)) !=
          0) {
    mr_error("cannot listen on %s:%d: %s", srv->cfg.listen.host,
             srv->cfg.listen.port, uv_strerror(r));
    uv_close((uv_handle_t *)&srv->listener, NULL);
    return r;
  }
  srv->listening = 1;
  read_fd_limit(srv);

  srv->handles_started = 1;
  uv_prepare_init(srv->loop, &srv->flush_prep);
  srv->flush_prep.data = srv;
  uv_prepare_start(&srv->flush_prep, on_prepare);
  uv_idle_init(srv->loop, &srv->flush_more);
  uv_timer_init(srv->loop, &srv->sweep);
  srv->sweep.data = srv;
  uv_timer_start(&srv->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
  /* Script timers never keep the loop alive on their own. */
  uv_timer_init(srv->loop, &srv->timer);
  srv->timer.data = srv;
  uv_unref((uv_handle_t *)&srv->timer);
  /* Signals go to the watchdog's thread, never to uv_signal_t: libuv's
   * handler would only run when the loop does. */
  mr_watchdog_set_timeout(srv->cfg.handler_timeout);
  if ((r = mr_watchdog_start(srv->loop, on_signal, srv)) != 0) {
    mr_error("cannot start the signal watchdog: %s", uv_strerror(r));
    return r;
  }
  mr_info("listening on %s:%d (script %s, %s)", srv->cfg.listen.host,
          srv->cfg.listen.port, srv->cfg.script,
          mr_bridge_version(srv->bridge));
  return 0;
}

void mr_server_shutdown(mr_server *srv) {
  if (srv->shutting_down)
    return;
  srv->shutting_down = 1;
  /* Pending script timers are dropped: none runs during the grace period,
   * and none holds the loop. */
  size_t ntimers = mr_timers_count(&srv->timers);
  if (ntimers)
    mr_info("shutdown: dropping %zu pending timers", ntimers);
  mr_timers_free(&srv->timers);
  if (srv->timer_armed) {
    uv_timer_stop(&srv->timer);
    srv->timer_armed = 0;
  }
  if (srv->listening) {
    uv_close((uv_handle_t *)&srv->listener, NULL);
    srv->listening = 0;
  }
  size_t pos = 0;
  for (mr_conn *c; (c = mr_conn_next(srv, &pos));) {
    if (c->state == MR_CONN_OPEN)
      mr_conn_close(c, MR_CLOSE_GOING_AWAY, "server shutting down", 20);
    else if (c->state == MR_CONN_HANDSHAKE || c->state == MR_CONN_HTTP)
      mr_conn_doom(c, MR_CLOSE_GOING_AWAY, "server shutting down");
  }
  mr_server_flush(srv);
  /* The grace starts now, after the close frames were queued and flushed:
   * the loop's cached clock is from before the handler that ran in this
   * turn and before this close work (about 0.5 s with 10,000 clients), and
   * a deadline from it gave clients about 2.5 s, not 3. */
  uv_update_time(srv->loop);
  srv->shutdown_deadline = uv_now(srv->loop) + SHUTDOWN_GRACE_MS;
  /* A closing connection's own close-handshake grace (2 s, from the same
   * stale clock) would cut it first: during shutdown the documented 3 s
   * apply. */
  pos = 0;
  for (mr_conn *c; (c = mr_conn_next(srv, &pos));)
    if (c->state == MR_CONN_CLOSING && c->deadline &&
        c->deadline < srv->shutdown_deadline)
      c->deadline = srv->shutdown_deadline;
  if (srv->conns.count == 0)
    finish_shutdown(srv);
}

void mr_server_free(mr_server *srv) {
  mr_ws_pool_free(srv->ws_pool);
  srv->ws_pool = NULL;
  mr_zpool_free(srv->zpool);
  srv->zpool = NULL;
  if (srv->cluster) {
    mr_cluster_free(srv->cluster);
    srv->cluster = NULL;
  }
  mr_engine_free(srv->engine);
  srv->engine = NULL;
  mr_rooms_free(&srv->rooms);
  mr_presence_free(srv->presence);
  srv->presence = NULL;
  mr_timers_free(&srv->timers);
  mr_idtab_free(&srv->conns);
  mr_admin_free(srv->admin);
  srv->admin = NULL;
  mr_tls_ctx_free(srv->tls);
  mr_tls_ctx_free(srv->cluster_tls);
  srv->tls = srv->cluster_tls = NULL;
  /* Last: everything above has given its queues' rings back. */
  mr_outq_cache_free();
}
