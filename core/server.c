#include "server.h"

#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "cluster.h"
#include "codec.h"
#include "conn.h"
#include "error.h"
#include "log.h"
#include "reload.h"

#define SWEEP_MS 250
/* After SIGTERM, connections get this long to answer the 1001 close. */
#define SHUTDOWN_GRACE_MS 3000

static void on_room_change(void *ud, const mr_room *room, int created) {
  mr_server *srv = ud;
  if (srv->cluster)
    mr_cluster_interest(srv->cluster, room->name, room->name_len, created);
}

int mr_server_init(mr_server *srv, uv_loop_t *loop, const mr_config *cfg) {
  memset(srv, 0, sizeof *srv);
  srv->loop = loop;
  srv->cfg = *cfg;
  mr_rooms_init(&srv->rooms, on_room_change, srv);
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
  return 0;
}

mr_conn *mr_server_find(mr_server *srv, uint64_t id) {
  mr_conn *c = NULL;
  HASH_FIND(hh, srv->conns_by_id, &id, sizeof id, c);
  return c;
}

/* ---- the safe point -------------------------------------------------------
 */

void mr_server_flush(mr_server *srv) {
  /* Doomed connections are torn down here, outside any fan-out or Lua call,
   * and their on_close may doom or queue more, so loop until both settle. */
  while (srv->doomed || srv->pending) {
    while (srv->doomed)
      mr_conn_finish(srv->doomed);
    while (srv->pending && !srv->doomed)
      mr_conn_flush(srv->pending);
  }
}

static void on_prepare(uv_prepare_t *p) { mr_server_flush(p->data); }

/* ---- broadcast ------------------------------------------------------------
 */

int mr_server_broadcast_local(mr_server *srv, const char *room, size_t room_len,
                              const void *msg, size_t len, int binary,
                              mr_conn *except) {
  mr_room *r = mr_rooms_find(&srv->rooms, room, room_len);
  if (!r)
    return 0;
  mr_buf *frame = mr_frame_new(binary ? MR_OP_BINARY : MR_OP_TEXT, msg, len);
  if (!frame)
    return MR_ENOMEM;
  /* The member array cannot change under us: queuing a frame runs no Lua,
   * and a connection that overflows is only doomed, not removed, until the
   * next safe point. */
  int n = 0;
  for (uint32_t i = 0; i < r->count; i++) {
    mr_conn *c = r->members[i].member->owner;
    if (c == except)
      continue;
    if (mr_conn_send_frame(c, frame) == 0)
      n++;
  }
  mr_buf_release(frame);
  return n;
}

int mr_server_deliver_remote(mr_server *srv, const char *room, size_t room_len,
                             const void *msg, size_t len, int binary) {
  srv->stats.cluster_broadcasts_in++;
  return mr_server_broadcast_local(srv, room, room_len, msg, len, binary, NULL);
}

int mr_server_broadcast(mr_server *srv, const char *room, size_t room_len,
                        const void *msg, size_t len, int binary,
                        mr_conn *except) {
  /* Counted here, so `broadcasts` is what this node's scripts sent and
   * `cluster_broadcasts_in` what peers delivered. */
  srv->stats.broadcasts++;
  int n =
      mr_server_broadcast_local(srv, room, room_len, msg, len, binary, except);
  if (srv->cluster && n >= 0)
    mr_cluster_forward(srv->cluster, room, room_len, msg, len, binary);
  return n;
}

/* ---- listener, sweep, signals -------------------------------------------- */

static void on_connection(uv_stream_t *s, int status) {
  mr_server *srv = s->data;
  if (status < 0) {
    /* EMFILE and friends: log and keep going; the connection stays in the
     * backlog and is accepted when a descriptor frees up. */
    srv->stats.connections_refused++;
    mr_warn("accept failed: %s", uv_strerror(status));
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
  close_handle((uv_handle_t *)&srv->flush_prep);
  close_handle((uv_handle_t *)&srv->sig_int);
  close_handle((uv_handle_t *)&srv->sig_term);
  close_handle((uv_handle_t *)&srv->sig_hup);
  mr_reload_stop(srv);
  if (srv->cluster)
    mr_cluster_close(srv->cluster);
}

static void on_sweep(uv_timer_t *t) {
  mr_server *srv = t->data;
  uint64_t now = uv_now(srv->loop);
  /* Connections are freed only in close callbacks, which never run inside
   * this loop, so following next pointers is safe. */
  for (mr_conn *c = srv->all_head; c; c = c->next) {
    if (srv->shutting_down && now >= srv->shutdown_deadline &&
        c->state != MR_CONN_CLOSED)
      mr_conn_doom(c, MR_CLOSE_GOING_AWAY, "server shutting down");
    else
      mr_conn_sweep(c, now);
  }
  mr_server_flush(srv);
  if (srv->shutting_down && !srv->all_head)
    finish_shutdown(srv);
}

static void on_signal(uv_signal_t *s, int signum) {
  mr_server *srv = s->data;
  if (signum == SIGHUP) {
    char err[1024];
    mr_info("SIGHUP: reloading %s", srv->cfg.script);
    if (mr_bridge_reload(srv->bridge, err, sizeof err) != 0)
      mr_error("reload failed, keeping %s: %s", mr_bridge_version(srv->bridge),
               err);
    return;
  }
  if (srv->shutting_down) {
    mr_warn("second signal: exiting now");
    exit(0);
  }
  mr_info("%s: closing every connection with 1001",
          signum == SIGINT ? "SIGINT" : "SIGTERM");
  mr_server_shutdown(srv);
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

  srv->handles_started = 1;
  uv_prepare_init(srv->loop, &srv->flush_prep);
  srv->flush_prep.data = srv;
  uv_prepare_start(&srv->flush_prep, on_prepare);
  uv_timer_init(srv->loop, &srv->sweep);
  srv->sweep.data = srv;
  uv_timer_start(&srv->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
  uv_signal_init(srv->loop, &srv->sig_int);
  uv_signal_init(srv->loop, &srv->sig_term);
  uv_signal_init(srv->loop, &srv->sig_hup);
  srv->sig_int.data = srv->sig_term.data = srv->sig_hup.data = srv;
  uv_signal_start(&srv->sig_int, on_signal, SIGINT);
  uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
  uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);
  mr_info("listening on %s:%d (script %s, %s)", srv->cfg.listen.host,
          srv->cfg.listen.port, srv->cfg.script,
          mr_bridge_version(srv->bridge));
  return 0;
}

void mr_server_shutdown(mr_server *srv) {
  if (srv->shutting_down)
    return;
  srv->shutting_down = 1;
  srv->shutdown_deadline = uv_now(srv->loop) + SHUTDOWN_GRACE_MS;
  if (srv->listening) {
    uv_close((uv_handle_t *)&srv->listener, NULL);
    srv->listening = 0;
  }
  for (mr_conn *c = srv->all_head; c; c = c->next) {
    if (c->state == MR_CONN_OPEN)
      mr_conn_close(c, MR_CLOSE_GOING_AWAY, "server shutting down", 20);
    else if (c->state == MR_CONN_HANDSHAKE)
      mr_conn_doom(c, MR_CLOSE_GOING_AWAY, "server shutting down");
  }
  mr_server_flush(srv);
  if (!srv->all_head)
    finish_shutdown(srv);
}

void mr_server_free(mr_server *srv) {
  mr_conn_pool_free(srv);
  if (srv->cluster) {
    mr_cluster_free(srv->cluster);
    srv->cluster = NULL;
  }
  mr_rooms_free(&srv->rooms);
  HASH_CLEAR(hh, srv->conns_by_id);
}
