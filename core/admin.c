#include "admin.h"

#include <stdlib.h>
#include <string.h>

#include "admin_http.h"
#include "bridge.h"
#include "cluster.h"
#include "conn.h"
#include "engine_redis.h"
#include "error.h"
#include "link.h"
#include "log.h"
#include "metrics.h"
#include "transport.h"

/* How often connections are checked against their deadlines. */
#define TICK_MS 1000

#define TEXT_PLAIN "text/plain; charset=utf-8"

typedef struct admin_conn {
  uv_tcp_t tcp;
  mr_admin *a;
  struct admin_conn *prev, *next; /* a->conns */
  mr_tx tx;
  uint64_t deadline; /* loop time by which the next request must be in */
  int close_after;   /* close once the response is written */
  int closing;       /* uv_close was called */
  int paused;        /* reading stopped: the buffer is full while writing */
  unsigned served;   /* responses written on this connection */
  char remote[64];
  size_t len; /* bytes in buf */
  char buf[MR_ADMIN_MAX_HEAD];
} admin_conn;

struct mr_admin {
  mr_server *srv;
  uv_tcp_t listener;
  uv_timer_t tick;
  admin_conn *conns;
  size_t nconns; /* connections not yet freed, closing ones included */
  int closed;
  uint64_t start_hr; /* uv_hrtime() when the admin started */
  double start_time; /* the same moment in Unix seconds */
};

/* ---- what is answered ---------------------------------------------------- */

/* Readiness: 1 when this node should get traffic, else 0; why says which
 * (it becomes /readyz's body). */
static int readiness(const mr_server *srv, const char **why) {
  if (srv->shutting_down) {
    *why = "not ready: shutting down";
    return 0;
  }
  if (!srv->listening) {
    *why = "not ready: not listening";
    return 0;
  }
  if (srv->cfg.npeers > 0 && srv->stats.cluster_links_up == 0) {
    *why = "not ready: no cluster link is up yet (--peer)";
    return 0;
  }
  /* Like --peer: a new node joins the fleet before it takes traffic. A
   * Redis lost later does not make it unready: every node would go at
   * once, and local delivery still works. */
  if (srv->engine && !mr_engine_was_connected(srv->engine)) {
    *why = "not ready: not connected to Redis yet (--engine)";
    return 0;
  }
  *why = "ready";
  return 1;
}

/* Takes what /metrics reports in this loop turn. The queued bytes are
 * summed over every connection rather than kept as a running total on the
 * write path: the walk reads one field per connection, measured at about
 * 1.8 ms for 20,000 connections with a cold cache, once per scrape (every
 * 15 s or so), while a running total would cost every queue operation and
 * every connection's memory. */
static void snapshot(const mr_admin *a, mr_metrics *m) {
  const mr_server *srv = a->srv;
  const char *why;
  memset(m, 0, sizeof *m);
  m->stats = srv->stats;
  m->rooms = srv->rooms.nrooms;
  m->timers = mr_server_script_timers(srv);
  m->lua_bytes = mr_bridge_lua_bytes(srv->bridge);
  size_t pos = 0;
  for (const mr_conn *c; (c = mr_conn_next(srv, &pos));)
    m->queued_bytes += c->tx.outq.bytes;
  if (srv->cluster) {
    size_t counts[MR_LINK_NSTATES];
    mr_cluster_link_states(srv->cluster, counts);
    m->links_connecting = counts[MR_LINK_CONNECTING];
    m->links_handshake = counts[MR_LINK_HANDSHAKE];
    m->links_up = counts[MR_LINK_UP];
  }
  m->admin_connections = a->nconns;
  m->ready = readiness(srv, &why);
  m->start_time = a->start_time;
  m->uptime = (double)(uv_hrtime() - a->start_hr) / 1e9;
}

/* ---- connections --------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h) {
  admin_conn *c = h->data;
  mr_admin *a = c->a;
  mr_tx_clear(&c->tx);
  if (c->prev)
    c->prev->next = c->next;
  else
    a->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  a->nconns--;
  free(c);
}

static void conn_close(admin_conn *c) {
  if (c->closing)
    return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void serve(admin_conn *c);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_write(uv_write_t *req, int status) {
  admin_conn *c = req->data;
  ssize_t n = mr_tx_done(&c->tx, req, status);
  if (c->closing)
    return; /* cancelled by uv_close; the queue goes in on_conn_closed */
  if (n < 0) {
    mr_debug("admin %s: write failed: %s", c->remote, uv_strerror((int)n));
    conn_close(c);
    return;
  }
  serve(c);
}

/* Queues one response (head, then body unless head_only) and writes what
 * the socket takes. Returns 0, or a negative error code after closing the
 * connection. */
static int respond(admin_conn *c, int status, const char *content_type,
                   const char *body, size_t body_len, int head_only,
                   int keep_alive) {
  char head[512];
  int hlen = mr_admin_response_head(head, sizeof head, status, content_type,
                                    body_len, keep_alive);
  size_t blen = head_only ? 0 : body_len;
  mr_buf *b = hlen < 0 ? NULL : mr_buf_new((size_t)hlen + blen);
  if (!b) {
    c->a->srv->stats.internal_errors++;
    mr_warn("admin %s: cannot build a response: out of memory", c->remote);
    conn_close(c);
    return MR_ENOMEM;
  }
  memcpy(b->data, head, (size_t)hlen);
  memcpy(b->data + hlen, body, blen);
  int r = mr_outq_push(&c->tx.outq, b);
  mr_buf_release(b);
  size_t sent;
  if (r == 0)
    r = mr_tx_flush(&c->tx, (uv_stream_t *)&c->tcp, on_write, c, &sent);
  if (r != 0) {
    mr_debug("admin %s: write failed: %s", c->remote, mr_strerror(r));
    conn_close(c);
    return r;
  }
  c->a->srv->stats.admin_requests++;
  c->close_after = !keep_alive;
  return 0;
}

/* Answers one parsed request. */
static int answer(admin_conn *c, const mr_admin_request *req) {
  mr_server *srv = c->a->srv;
  int head_only = req->method == MR_ADMIN_HEAD;
  int route = mr_admin_route(req);
  const char *why;
  char text[256];
  mr_debug("admin %s: %.*s -> %d", c->remote, (int)req->path_len, req->path,
           route);
  switch (route) {
  case MR_ADMIN_METRICS: {
    mr_metrics m;
    size_t len;
    snapshot(c->a, &m);
    char *body = mr_metrics_render(&m, &len);
    if (!body) {
      srv->stats.internal_errors++;
      mr_warn("admin %s: cannot render /metrics: out of memory", c->remote);
      conn_close(c);
      return MR_ENOMEM;
    }
    int r = respond(c, 200, MR_METRICS_CONTENT_TYPE, body, len, head_only,
                    req->keep_alive);
    free(body);
    return r;
  }
  case MR_ADMIN_HEALTHZ:
    return respond(c, 200, TEXT_PLAIN, "ok\n", 3, head_only, req->keep_alive);
  case MR_ADMIN_READYZ: {
    int ready = readiness(srv, &why);
    int n = snprintf(text, sizeof text, "%s\n", why);
    return respond(c, ready ? 200 : 503, TEXT_PLAIN, text, (size_t)n, head_only,
                   req->keep_alive);
  }
  default: {
    int n = snprintf(text, sizeof text, "%s\n", mr_admin_status_text(route));
    return respond(c, route, TEXT_PLAIN, text, (size_t)n, head_only,
                   req->keep_alive);
  }
  }
}

/* Answers the requests waiting in the buffer, one at a time: the next is
 * parsed only once the previous response is written, so a client that
 * pipelines without reading holds one response and a full buffer, no
 * more. */
static void serve(admin_conn *c) {
  mr_server *srv = c->a->srv;
  while (!c->closing && !mr_tx_busy(&c->tx)) {
    if (c->close_after) {
      conn_close(c);
      return;
    }
    mr_admin_request req;
    int r = mr_admin_parse(c->buf, c->len, sizeof c->buf, &req);
    if (r == MR_EAGAIN)
      break;
    if (req.status) {
      srv->stats.admin_bad_requests++;
      mr_info("admin %s: refused %d: %s", c->remote, req.status, req.reason);
      char text[128];
      int n = snprintf(text, sizeof text, "%s\n", req.reason);
      respond(c, req.status, TEXT_PLAIN, text, (size_t)n, 0, 0);
      c->len = 0;
      continue;
    }
    int failed = answer(c, &req) != 0;
    memmove(c->buf, c->buf + req.head_len, c->len - req.head_len);
    c->len -= req.head_len;
    if (failed)
      return;
    c->served++;
    c->deadline = uv_now(srv->loop) + MR_ADMIN_TIMEOUT_MS;
  }
  if (c->paused && !c->closing && c->len < sizeof c->buf) {
    c->paused = 0;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
      conn_close(c);
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  admin_conn *c = h->data;
  (void)hint;
  *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  admin_conn *c = s->data;
  (void)buf;
  if (c->closing)
    return;
  if (nread == UV_ENOBUFS) {
    /* The buffer is full while a response is being written; reading
     * resumes once it is (serve). */
    uv_read_stop(s);
    c->paused = 1;
    return;
  }
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->len += (size_t)nread;
  serve(c);
}

static void on_refused_closed(uv_handle_t *h) { free(h); }

static void refuse_connection(mr_admin *a) {
  uv_tcp_t *t = malloc(sizeof *t);
  if (!t)
    return;
  uv_tcp_init(a->srv->loop, t);
  uv_accept((uv_stream_t *)&a->listener, (uv_stream_t *)t);
  uv_close((uv_handle_t *)t, on_refused_closed);
  a->srv->stats.admin_connections_refused++;
  mr_warn("admin connection refused: %d admin connections are open",
          MR_ADMIN_MAX_CONNECTIONS);
}

static void on_connection(uv_stream_t *s, int status) {
  mr_admin *a = s->data;
  if (status < 0) {
    a->srv->stats.admin_connections_refused++;
    mr_warn("admin accept failed: %s", uv_strerror(status));
    return;
  }
  if (a->closed || a->nconns >= MR_ADMIN_MAX_CONNECTIONS) {
    refuse_connection(a);
    return;
  }
  admin_conn *c = calloc(1, sizeof *c);
  if (!c) {
    a->srv->stats.admin_connections_refused++;
    mr_warn("admin connection refused: out of memory");
    return;
  }
  c->a = a;
  uv_tcp_init(a->srv->loop, &c->tcp);
  c->tcp.data = c;
  c->next = a->conns;
  if (a->conns)
    a->conns->prev = c;
  a->conns = c;
  a->nconns++;
  if (uv_accept(s, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  struct sockaddr_storage ss;
  int sslen = sizeof ss;
  snprintf(c->remote, sizeof c->remote, "?");
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0)
    uv_ip_name((struct sockaddr *)&ss, c->remote, sizeof c->remote);
  c->deadline = uv_now(a->srv->loop) + MR_ADMIN_TIMEOUT_MS;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    conn_close(c);
}

/* Closes connections past their deadline: one that never finished a
 * request, or did not take its response, is counted; one idle between
 * keep-alive requests is simply let go. */
static void on_tick(uv_timer_t *t) {
  mr_admin *a = t->data;
  uint64_t now = uv_now(a->srv->loop);
  for (admin_conn *c = a->conns; c; c = c->next) {
    if (c->closing || now < c->deadline)
      continue;
    if (c->len > 0 || c->served == 0 || mr_tx_busy(&c->tx)) {
      a->srv->stats.admin_timeouts++;
      mr_info("admin %s: closed: no whole request or write within %d ms",
              c->remote, MR_ADMIN_TIMEOUT_MS);
    } else {
      mr_debug("admin %s: idle keep-alive connection closed", c->remote);
    }
    conn_close(c); /* freed in a close callback, after this loop */
  }
}

/* ---- start and stop ------------------------------------------------------ */

static void on_failed_closed(uv_handle_t *h) { free(h->data); }

int mr_admin_start(mr_server *srv) {
  const mr_addr *addr = &srv->cfg.admin_listen;
  struct sockaddr_storage ss;
  int r = strchr(addr->host, ':')
              ? uv_ip6_addr(addr->host, addr->port, (struct sockaddr_in6 *)&ss)
              : uv_ip4_addr(addr->host, addr->port, (struct sockaddr_in *)&ss);
  if (r != 0) {
    mr_error("--admin-listen %s:%d: not a numeric address", addr->host,
             addr->port);
    return r;
  }
  mr_admin *a = calloc(1, sizeof *a);
  if (!a) {
    mr_error("--admin-listen: out of memory");
    return MR_ENOMEM;
  }
  a->srv = srv;
  uv_tcp_init(srv->loop, &a->listener);
  a->listener.data = a;
  if ((r = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0)) != 0 ||
      (r = uv_listen((uv_stream_t *)&a->listener, 128, on_connection)) != 0) {
    mr_error("cannot listen on --admin-listen %s:%d: %s", addr->host,
             addr->port, uv_strerror(r));
    uv_close((uv_handle_t *)&a->listener, on_failed_closed);
    return r;
  }
  uv_timer_init(srv->loop, &a->tick);
  a->tick.data = a;
  uv_timer_start(&a->tick, on_tick, TICK_MS, TICK_MS);
  /* The listener keeps the loop alive until the server closes the admin;
   * the tick alone never does. */
  uv_unref((uv_handle_t *)&a->tick);
  a->start_hr = uv_hrtime();
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) == 0)
    a->start_time = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
  srv->admin = a;
  mr_info("admin listening on %s:%d (/metrics, /healthz, /readyz)", addr->host,
          addr->port);
  return 0;
}

void mr_admin_close(mr_admin *a) {
  if (!a || a->closed)
    return;
  a->closed = 1;
  uv_close((uv_handle_t *)&a->listener, NULL);
  uv_close((uv_handle_t *)&a->tick, NULL);
  for (admin_conn *c = a->conns; c; c = c->next)
    conn_close(c);
}

void mr_admin_free(mr_admin *a) { free(a); }
