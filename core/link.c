#include "link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"

/* Every read gets at least READ_ROOM bytes of buffer. A buffer that a large
 * frame grew past SHRINK_ABOVE is given back once it is empty, so one big
 * message does not pin its memory for the life of the link. */
#define READ_ROOM 65536
#define SHRINK_ABOVE 262144

/* How a link is named in logs: the peer's node name once known. */
static const char *who(const mr_link *l) {
  return l->name[0] ? l->name : l->remote;
}

static const char *direction(const mr_link *l) {
  return l->dialer ? "to" : "from";
}

/* ---- the batch of links to flush ---------------------------------------- */

/* Virtual links are never batched: their bytes wait for mr_link_take. */
static void pending_add(mr_link *l) {
  if (l->pending || l->is_virtual || l->state == MR_LINK_CLOSED)
    return;
  mr_link_env *env = l->env;
  l->pending = 1;
  l->pending_next = env->pending;
  if (env->pending)
    env->pending->pending_pprev = &l->pending_next;
  env->pending = l;
  l->pending_pprev = &env->pending;
}

static void pending_remove(mr_link *l) {
  if (!l->pending)
    return;
  l->pending = 0;
  *l->pending_pprev = l->pending_next;
  if (l->pending_next)
    l->pending_next->pending_pprev = l->pending_pprev;
}

/* ---- writing ------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status) {
  mr_link *l = req->data;
  ssize_t n = mr_tx_done(&l->tx, req, status);
  if (l->state == MR_LINK_CLOSED)
    return; /* cancelled by uv_close; the queue is freed in on_closed */
  if (n < 0) {
    mr_link_close(l, uv_strerror((int)n), 0);
    return;
  }
  if (!mr_tx_empty(&l->tx))
    pending_add(l);
}

static void link_flush(mr_link *l) {
  pending_remove(l);
  if (l->state == MR_LINK_CLOSED || l->state == MR_LINK_CONNECTING ||
      l->is_virtual || mr_tx_busy(&l->tx))
    return;
  size_t sent;
  int r = mr_tx_flush(&l->tx, (uv_stream_t *)&l->tcp, on_write, l, &sent);
  if (r != 0)
    mr_link_close(l, mr_strerror(r), 0);
}

/* Runs before the loop polls, so that everything queued during one loop
 * iteration leaves in one write per link. A link closed mid-batch removes
 * itself from the list, and one that queues more is added at the head. */
static void on_flush(uv_prepare_t *p) {
  mr_link_env *env = p->data;
  while (env->pending)
    link_flush(env->pending);
}

int mr_link_send(mr_link *l, mr_buf *frame) {
  if (l->state == MR_LINK_CLOSED)
    return MR_ECLOSED;
  mr_link_env *env = l->env;
  if (l->tx.outq.bytes + frame->len > env->max_queue) {
    env->srv->stats.cluster_queue_drops++;
    mr_warn("cluster: link %s %s dropped: %zu bytes queued exceed the %zu "
            "byte link limit",
            direction(l), who(l), l->tx.outq.bytes, env->max_queue);
    mr_link_close(l, "send queue full", 0);
    return MR_EBACKPRESSURE;
  }
  if (mr_outq_push(&l->tx.outq, frame) != 0) {
    mr_link_close(l, "out of memory", 0);
    return MR_ENOMEM;
  }
  pending_add(l);
  return 0;
}

mr_buf *mr_link_frame(const mr_wbuf *w) {
  mr_buf *b = mr_buf_new(w->len);
  if (b)
    memcpy(b->data, w->data, w->len);
  return b;
}

int mr_link_send_encoded(mr_link *l, mr_wbuf *w, int encoded) {
  mr_buf *b = encoded == 0 ? mr_link_frame(w) : NULL;
  mr_wire_buf_free(w);
  if (!b) {
    int r = encoded ? encoded : MR_ENOMEM;
    mr_link_close(l, mr_strerror(r), 0);
    return r;
  }
  int r = mr_link_send(l, b);
  mr_buf_release(b);
  return r;
}

/* ---- reading ------------------------------------------------------------ */

/* Makes room for at least room more received bytes. Returns 0 or
 * MR_ENOMEM (the buffer is then unchanged). */
static int reserve(mr_link *l, size_t room) {
  if (l->rcap - l->rlen >= room)
    return 0;
  size_t ncap = l->rcap ? l->rcap * 2 : READ_ROOM;
  while (ncap - l->rlen < room)
    ncap *= 2;
  uint8_t *n = realloc(l->rbuf, ncap);
  if (!n)
    return MR_ENOMEM;
  l->rbuf = n;
  l->rcap = ncap;
  return 0;
}

static void send_pong(mr_link *l, uint64_t token) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  mr_link_send_encoded(l, &w, mr_wire_encode_pong(&w, token));
}

/* Decodes one frame: the link itself drops a malformed one, skips an
 * unknown tag once established (a newer node may speak tags this one does
 * not know) and answers PING; the owner gets the rest. Before the owner's
 * handshake is done every flaw refuses the peer. */
static void on_payload(mr_link *l, const uint8_t *payload, size_t len) {
  mr_server *srv = l->env->srv;
  int up = l->state == MR_LINK_UP;
  mr_wire_msg m;
  int r = mr_wire_decode(payload, len, &m);
  if (r == MR_ENOTFOUND && up) {
    srv->stats.cluster_unknown_tags++;
    mr_debug("cluster: skipped unknown tag 0x%02x from %s", m.tag, who(l));
  } else if (r != 0) {
    srv->stats.cluster_frames_malformed++;
    char why[160];
    snprintf(why, sizeof why, "malformed frame (tag 0x%02x): %s", m.tag,
             m.error ? m.error : mr_strerror(r));
    mr_link_close(l, why, !up);
    return;
  }
  /* Any frame is a sign of life, even one this node cannot read. */
  l->last_rx = uv_now(srv->loop);
  if (r != 0 || (up && m.tag == MR_WIRE_PONG))
    return;
  if (up && m.tag == MR_WIRE_PING)
    send_pong(l, m.ping.token);
  else
    l->env->events->frame(l, &m);
}

/* Cuts what was received into frames and handles them in order, until the
 * bytes run out or a frame closes the link; keeps the unread tail. */
static void read_frames(mr_link *l) {
  size_t off = 0;
  while (l->state != MR_LINK_CLOSED) {
    const uint8_t *payload;
    size_t plen, used;
    int r = mr_wire_next_frame(l->rbuf + off, l->rlen - off, l->env->max_frame,
                               &payload, &plen, &used);
    if (r == MR_EAGAIN)
      break;
    if (r != 0) {
      l->env->srv->stats.cluster_frames_malformed++;
      mr_link_close(l,
                    r == MR_ETOOBIG ? "frame larger than the limit"
                                    : "malformed frame (empty)",
                    l->state != MR_LINK_UP);
      return;
    }
    on_payload(l, payload, plen);
    off += used;
  }
  if (l->state == MR_LINK_CLOSED)
    return;
  memmove(l->rbuf, l->rbuf + off, l->rlen - off);
  l->rlen -= off;
  if (l->rlen == 0 && l->rcap > SHRINK_ABOVE) {
    free(l->rbuf);
    l->rbuf = NULL;
    l->rcap = 0;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  mr_link *l = h->data;
  /* A zero-length buffer makes libuv report UV_ENOBUFS to on_read. */
  if (reserve(l, READ_ROOM) != 0)
    *buf = uv_buf_init(NULL, 0);
  else
    *buf =
        uv_buf_init((char *)l->rbuf + l->rlen, (unsigned)(l->rcap - l->rlen));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  mr_link *l = s->data;
  if (n == 0)
    return;
  if (n < 0) {
    mr_link_close(l, n == UV_EOF ? "closed by the peer" : uv_strerror((int)n),
                  0);
    return;
  }
  l->rlen += (size_t)n;
  read_frames(l);
}

void mr_link_feed(mr_link *l, const void *bytes, size_t len) {
  if (l->state == MR_LINK_CLOSED || len == 0)
    return;
  if (reserve(l, len) != 0) {
    mr_link_close(l, "out of memory", 0);
    return;
  }
  memcpy(l->rbuf + l->rlen, bytes, len);
  l->rlen += len;
  read_frames(l);
}

size_t mr_link_take(mr_link *l, void *out, size_t cap) {
  size_t got = 0;
  const uint8_t *p;
  size_t len;
  while (got < cap && mr_outq_peek(&l->tx.outq, &p, &len, 1) == 1) {
    size_t n = len < cap - got ? len : cap - got;
    memcpy((uint8_t *)out + got, p, n);
    mr_outq_consume(&l->tx.outq, n);
    got += n;
  }
  return got;
}

/* ---- lifetime ----------------------------------------------------------- */

/* Frees the link and what it owns; only once no write is in flight. */
static void link_free(mr_link *l) {
  mr_tx_clear(&l->tx);
  free(l->rbuf);
  free(l);
}

static void on_closed(uv_handle_t *h) { link_free(h->data); }

void mr_link_close(mr_link *l, const char *why, int refused) {
  if (l->state == MR_LINK_CLOSED)
    return;
  mr_link_env *env = l->env;
  mr_link_state was = l->state;
  l->state = MR_LINK_CLOSED;
  if (l->prev)
    l->prev->next = l->next;
  else
    env->links = l->next;
  if (l->next)
    l->next->prev = l->prev;
  pending_remove(l);
  env->events->closed(l, was, why, refused);
  if (!l->is_virtual) {
    /* libuv cancels a write in flight (on_write runs first), then frees
     * the link in on_closed. */
    uv_close((uv_handle_t *)&l->tcp, on_closed);
    return;
  }
  /* A closed socket sends nothing more, and neither does a virtual link. */
  mr_tx_clear(&l->tx);
  if (!l->held)
    link_free(l);
}

void mr_link_release(mr_link *l) {
  l->held = 0;
  if (l->state != MR_LINK_CLOSED)
    mr_link_close(l, "released", 0); /* frees it, now that it is not held */
  else
    link_free(l);
}

/* Allocates a link with zeroed owner data. The caller owns the result
 * until it lists it (link_list) or frees it. */
static mr_link *link_new(mr_link_env *env, int dialer) {
  mr_link *l = calloc(1, sizeof *l + env->data_size);
  if (!l)
    return NULL;
  l->env = env;
  l->dialer = dialer;
  l->tcp.data = l;
  l->creq.data = l;
  return l;
}

/* A new link with a TCP handle on the server's loop; *err says why not. */
static mr_link *link_new_tcp(mr_link_env *env, int dialer, int *err) {
  mr_link *l = link_new(env, dialer);
  if (!l) {
    *err = MR_ENOMEM;
    return NULL;
  }
  if ((*err = uv_tcp_init(env->srv->loop, &l->tcp)) != 0) {
    free(l);
    return NULL;
  }
  return l;
}

/* Lists a new link with its owner in the handshake state (or connecting)
 * and starts the handshake deadline. */
static void link_list(mr_link *l, mr_link_state state) {
  mr_link_env *env = l->env;
  l->state = state;
  l->next = env->links;
  if (env->links)
    env->links->prev = l;
  env->links = l;
  l->last_rx = uv_now(env->srv->loop);
  l->deadline = l->last_rx + MR_LINK_HANDSHAKE_MS;
}

static void on_connect(uv_connect_t *req, int status) {
  mr_link *l = req->data;
  if (l->state == MR_LINK_CLOSED)
    return; /* cancelled by uv_close */
  int r = status < 0 ? status
                     : uv_read_start((uv_stream_t *)&l->tcp, on_alloc, on_read);
  if (r < 0) {
    mr_link_close(l, uv_strerror(r), 0);
    return;
  }
  uv_tcp_nodelay(&l->tcp, 1);
  /* The deadline counts from here: a slow TCP connect is not the peer
   * being slow to authenticate. */
  l->state = MR_LINK_HANDSHAKE;
  l->last_rx = uv_now(l->env->srv->loop);
  l->deadline = l->last_rx + MR_LINK_HANDSHAKE_MS;
  l->env->events->connected(l);
  if (l->state != MR_LINK_CLOSED && l->tx.outq.count)
    pending_add(l);
}

int mr_link_dial(mr_link_env *env, const struct sockaddr *addr,
                 const char *remote, mr_link **out) {
  int r;
  mr_link *l = link_new_tcp(env, 1, &r);
  if (!l)
    return r;
  snprintf(l->remote, sizeof l->remote, "%s", remote);
  r = uv_tcp_connect(&l->creq, &l->tcp, addr, on_connect);
  if (r != 0) {
    uv_close((uv_handle_t *)&l->tcp, on_closed);
    return r;
  }
  link_list(l, MR_LINK_CONNECTING);
  *out = l;
  return 0;
}

/* Records the socket's peer address, which names the link in logs until
 * the peer's node name is known. */
static void name_remote(mr_link *l) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  snprintf(l->remote, sizeof l->remote, "?");
  if (uv_tcp_getpeername(&l->tcp, (struct sockaddr *)&ss, &len) != 0)
    return;
  if (ss.ss_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)&ss, l->remote, sizeof l->remote);
  else
    uv_ip4_name((struct sockaddr_in *)&ss, l->remote, sizeof l->remote);
}

int mr_link_accept(mr_link_env *env, uv_stream_t *listener, mr_link **out) {
  int r;
  mr_link *l = link_new_tcp(env, 0, &r);
  if (!l)
    return r;
  if ((r = uv_accept(listener, (uv_stream_t *)&l->tcp)) != 0 ||
      (r = uv_read_start((uv_stream_t *)&l->tcp, on_alloc, on_read)) != 0) {
    uv_close((uv_handle_t *)&l->tcp, on_closed);
    return r;
  }
  name_remote(l);
  uv_tcp_nodelay(&l->tcp, 1);
  link_list(l, MR_LINK_HANDSHAKE);
  *out = l;
  return 0;
}

mr_link *mr_link_new_virtual(mr_link_env *env, int dialer, const char *remote) {
  mr_link *l = link_new(env, dialer);
  if (!l)
    return NULL;
  l->is_virtual = 1;
  l->held = 1;
  snprintf(l->remote, sizeof l->remote, "%s", remote);
  link_list(l, MR_LINK_HANDSHAKE);
  return l;
}

void mr_link_set_name(mr_link *l, const char *name, size_t len) {
  if (len > MR_WIRE_MAX_NAME)
    len = MR_WIRE_MAX_NAME;
  memcpy(l->name, name, len);
  l->name[len] = '\0';
}

void mr_link_set_up(mr_link *l) {
  if (l->state != MR_LINK_HANDSHAKE)
    return;
  l->state = MR_LINK_UP;
  l->last_rx = uv_now(l->env->srv->loop);
}

/* ---- heartbeat ---------------------------------------------------------- */

static void send_ping(mr_link *l, uint64_t now) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  mr_buf *ping = NULL;
  if (mr_wire_encode_ping(&w, now) == 0)
    ping = mr_link_frame(&w);
  mr_wire_buf_free(&w);
  if (!ping) {
    /* Not fatal by itself: the next tick tries again, and the peer only
     * gives up after several missed pings. */
    l->env->srv->stats.internal_errors++;
    mr_warn("cluster: cannot ping %s: %s", who(l), mr_strerror(MR_ENOMEM));
    return;
  }
  mr_link_send(l, ping);
  mr_buf_release(ping);
}

/* Pings an established link without judging its silence or deadline. */
static void ping_only(mr_link *l, uint64_t now) {
  if (l->state == MR_LINK_UP)
    send_ping(l, now);
}

void mr_link_tick(mr_link *l, uint64_t now) {
  if (l->state == MR_LINK_HANDSHAKE) {
    if (now >= l->deadline)
      mr_link_close(l, "handshake timed out", 1);
    return;
  }
  if (l->state != MR_LINK_UP)
    return;
  if (now >= l->last_rx + MR_LINK_SILENT_MS) {
    mr_link_close(l, "no heartbeat", 0);
    return;
  }
  send_ping(l, now);
}

/* ---- the set of links --------------------------------------------------- */

void mr_link_env_tick(mr_link_env *env, uint64_t now) {
  /* A link closed here leaves the list, and the closed callback closes no
   * other link (link.h), so the saved next pointer stays valid. */
  mr_link *next;
  for (mr_link *l = env->links; l; l = next) {
    next = l->next;
    mr_link_tick(l, now);
  }
}

void mr_link_env_beat(mr_link_env *env, uint64_t now) {
  uint64_t gap = now - env->last_beat;
  env->last_beat = now;
  if (gap < MR_LINK_STALL_MS) {
    mr_link_env_tick(env, now);
    return;
  }
  env->srv->stats.cluster_stalls++;
  if (env->links)
    mr_warn("cluster: this node did not run for %llu ms (stopped, paused or "
            "starved); reading what the peers sent before judging any link",
            (unsigned long long)(gap - MR_LINK_HEARTBEAT_MS));
  /* A ping closes at most its own link (a full queue), so the saved next
   * pointer stays valid. */
  mr_link *next;
  for (mr_link *l = env->links; l; l = next) {
    next = l->next;
    ping_only(l, now);
  }
}

mr_link *mr_link_env_find_up(const mr_link_env *env, const char *name,
                             const mr_link *except) {
  for (mr_link *l = env->links; l; l = l->next)
    if (l != except && l->state == MR_LINK_UP && strcmp(l->name, name) == 0)
      return l;
  return NULL;
}

size_t mr_link_env_names(const mr_link_env *env, const char **names,
                         size_t max) {
  size_t n = 0;
  for (mr_link *l = env->links; l && n < max; l = l->next)
    if (l->state == MR_LINK_UP)
      names[n++] = l->name;
  return n;
}

void mr_link_env_count_states(const mr_link_env *env,
                              size_t counts[MR_LINK_NSTATES]) {
  for (int i = 0; i < MR_LINK_NSTATES; i++)
    counts[i] = 0;
  for (const mr_link *l = env->links; l; l = l->next)
    if ((unsigned)l->state < MR_LINK_NSTATES)
      counts[l->state]++;
}

void mr_link_env_send_up(mr_link_env *env, mr_buf *frame) {
  /* A link dropped here (queue full) leaves the list, and the closed
   * callback closes no other link, so the saved next pointer stays valid. */
  mr_link *next;
  for (mr_link *l = env->links; l; l = next) {
    next = l->next;
    if (l->state == MR_LINK_UP)
      mr_link_send(l, frame);
  }
}

static void on_heartbeat(uv_timer_t *t) {
  mr_link_env *env = t->data;
  mr_link_env_beat(env, uv_now(env->srv->loop));
}

void mr_link_env_init(mr_link_env *env, mr_server *srv,
                      const mr_link_events *events, size_t max_frame,
                      size_t max_queue, size_t data_size) {
  memset(env, 0, sizeof *env);
  env->srv = srv;
  env->events = events;
  env->max_frame = max_frame;
  env->max_queue = max_queue;
  env->data_size = data_size;
  uv_prepare_init(srv->loop, &env->flush_prep);
  env->flush_prep.data = env;
  uv_prepare_start(&env->flush_prep, on_flush);
  uv_timer_init(srv->loop, &env->heartbeat);
  env->heartbeat.data = env;
  env->last_beat = uv_now(srv->loop);
  uv_timer_start(&env->heartbeat, on_heartbeat, MR_LINK_HEARTBEAT_MS,
                 MR_LINK_HEARTBEAT_MS);
}

void mr_link_env_close(mr_link_env *env) {
  while (env->links)
    mr_link_close(env->links, "shutting down", 0);
  uv_close((uv_handle_t *)&env->flush_prep, NULL);
  uv_close((uv_handle_t *)&env->heartbeat, NULL);
}
