#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <uv.h>

#include "buf.h"
#include "context.h"
#include "error.h"
#include "log.h"
#include "wire.h"

/* Timings, in milliseconds. */
#define HANDSHAKE_MS 5000   /* a link must authenticate within this */
#define HEARTBEAT_MS 1000   /* PING on every link this often */
#define SILENT_MS 5000      /* a link that says nothing this long is dead */
#define BACKOFF_MIN_MS 100  /* first redial delay, doubling ... */
#define BACKOFF_MAX_MS 2000 /* ... up to this */
#define MAX_IOV 64

typedef enum {
  L_CONNECTING, /* TCP connect in progress (dialer) */
  L_HELLO,      /* waiting for the peer's HELLO */
  L_CHALLENGE,  /* dialer: waiting for the acceptor's proof */
  L_AUTH,       /* acceptor: waiting for the dialer's proof */
  L_UP,         /* authenticated; room traffic flows */
  L_CLOSED
} link_state;

typedef struct interest {
  UT_hash_handle hh;
  size_t len;
  char name[]; /* the room name, not NUL-terminated */
} interest;

struct peer;

typedef struct mr_link {
  uv_tcp_t tcp;
  uv_connect_t creq;
  mr_cluster *cl;
  struct mr_link *prev, *next;
  struct mr_link *pending_next;
  struct peer *peer; /* the dial target, for a link we dialed */
  link_state state;
  int dialer;
  int pending, writing_flag;
  int quiet; /* closed on purpose (duplicate): nothing to count or report */
  char name[MR_WIRE_MAX_NAME + 1];   /* the peer's node name, once known */
  char addr[MR_WIRE_MAX_NAME + 1];   /* the peer's advertised address */
  char remote[MR_WIRE_MAX_NAME + 1]; /* the socket's address, for logs */
  uint8_t nonce_d[32], nonce_a[32];
  uint8_t *rbuf;
  size_t rlen, rcap;
  mr_outq outq;
  uv_write_t wreq;
  size_t writing;
  uint64_t deadline, last_rx;
  interest *rooms; /* rooms the peer has members in */
} mr_link;

/* A node this one keeps a link to: from --peer, from a peer list, or a node
 * that dialed us. It is redialed with backoff whenever no link to it is
 * up. */
typedef struct peer {
  struct peer *next;
  mr_cluster *cl;
  char addr[MR_WIRE_MAX_NAME + 1];
  char name[MR_WIRE_MAX_NAME + 1]; /* known after the first handshake */
  uv_timer_t timer;
  unsigned backoff;
  mr_link *link;
  int refused; /* the last attempt failed authentication */
  uint64_t last_warn;
} peer;

struct mr_cluster {
  mr_server *srv;
  mr_cluster_deliver_cb deliver;
  void *deliver_ud;
  uv_tcp_t listener;
  int listening;
  uv_timer_t heartbeat;
  uv_prepare_t flush_prep;
  char name[MR_WIRE_MAX_NAME + 1];
  char addr[MR_WIRE_MAX_NAME + 1]; /* "-" when this node does not listen */
  mr_link *links;
  mr_link *pending;
  peer *peers;
  size_t max_frame;
  size_t max_queue;
  int closing;
};

static void link_close(mr_link *l, const char *why, int refused);
static void peer_schedule(peer *p);
static mr_link *find_up(mr_cluster *cl, const char *name, mr_link *except);
static peer *peer_find_addr(mr_cluster *cl, const char *addr, size_t len);

/* ---- output ---------------------------------------------------------------
 */

static void pending_add(mr_link *l) {
  if (l->pending || l->state == L_CLOSED)
    return;
  l->pending = 1;
  l->pending_next = l->cl->pending;
  l->cl->pending = l;
}

/* Queues a shared frame; the link takes its own reference. A peer that
 * cannot keep up is dropped (and redialed) rather than allowed to grow the
 * queue without bound or to slow local delivery. */
static void link_queue(mr_link *l, mr_buf *b) {
  if (l->state == L_CLOSED)
    return;
  if (l->outq.bytes + b->len > l->cl->max_queue) {
    l->cl->srv->stats.cluster_queue_drops++;
    mr_warn("cluster: link %s %s dropped: %zu bytes queued exceed the %zu "
            "byte link limit",
            l->dialer ? "to" : "from", l->name[0] ? l->name : l->remote,
            l->outq.bytes, l->cl->max_queue);
    link_close(l, "send queue full", 0);
    return;
  }
  if (mr_outq_push(&l->outq, b) != 0) {
    link_close(l, "out of memory", 0);
    return;
  }
  pending_add(l);
}

static void link_queue_wbuf(mr_link *l, mr_wbuf *w) {
  mr_buf *b = mr_buf_new(w->len);
  if (!b) {
    link_close(l, "out of memory", 0);
    return;
  }
  memcpy(b->data, w->data, w->len);
  link_queue(l, b);
  mr_buf_release(b);
}

static void on_link_write(uv_write_t *req, int status) {
  mr_link *l = req->data;
  l->writing_flag = 0;
  if (l->state == L_CLOSED)
    return;
  if (status < 0) {
    link_close(l, uv_strerror(status), 0);
    return;
  }
  mr_outq_consume(&l->outq, l->writing);
  l->writing = 0;
  if (l->outq.count)
    pending_add(l);
}

static void link_flush(mr_link *l) {
  l->pending = 0;
  if (l->state == L_CLOSED || l->state == L_CONNECTING || l->writing_flag ||
      !l->outq.count)
    return;
  const uint8_t *ptrs[MAX_IOV];
  size_t lens[MAX_IOV];
  uv_buf_t iov[MAX_IOV];
  size_t n = mr_outq_peek(&l->outq, ptrs, lens, MAX_IOV);
  l->writing = 0;
  for (size_t i = 0; i < n; i++) {
    iov[i] = uv_buf_init((char *)ptrs[i], (unsigned)lens[i]);
    l->writing += lens[i];
  }
  l->wreq.data = l;
  int r = uv_write(&l->wreq, (uv_stream_t *)&l->tcp, iov, (unsigned)n,
                   on_link_write);
  if (r < 0) {
    l->writing = 0;
    link_close(l, uv_strerror(r), 0);
    return;
  }
  l->writing_flag = 1;
}

static void on_flush(uv_prepare_t *p) {
  mr_cluster *cl = p->data;
  while (cl->pending) {
    mr_link *l = cl->pending;
    cl->pending = l->pending_next;
    link_flush(l);
  }
}

/* ---- lifetime ---------------------------------------------------------------
 */

static void interest_clear(mr_link *l) {
  interest *it, *tmp;
  HASH_ITER(hh, l->rooms, it, tmp) {
    HASH_DEL(l->rooms, it);
    free(it);
  }
}

static void on_link_closed(uv_handle_t *h) {
  mr_link *l = h->data;
  mr_outq_clear(&l->outq);
  free(l->rbuf);
  free(l);
}

/* Closes a link, counts it, and schedules a redial of its peer. The memory
 * goes in the close callback, after any write in flight is cancelled. */
static void link_close(mr_link *l, const char *why, int refused) {
  if (l->state == L_CLOSED)
    return;
  mr_cluster *cl = l->cl;
  mr_server *srv = cl->srv;
  link_state was = l->state;
  l->state = L_CLOSED;
  if (l->prev)
    l->prev->next = l->next;
  else
    cl->links = l->next;
  if (l->next)
    l->next->prev = l->prev;
  if (l->pending) {
    for (mr_link **pp = &cl->pending; *pp; pp = &(*pp)->pending_next)
      if (*pp == l) {
        *pp = l->pending_next;
        break;
      }
    l->pending = 0;
  }
  interest_clear(l);
  const char *who = l->name[0] ? l->name : l->remote;
  /* The losing half of a duplicate pair can be closed by the other node
   * first; with another link to that node up, nothing was lost. */
  if (was == L_UP && find_up(cl, l->name, l))
    l->quiet = 1;
  if (l->quiet) {
    mr_debug("cluster: closed a duplicate link with %s", who);
  } else if (was == L_UP) {
    srv->stats.cluster_links_dropped++;
    mr_warn("cluster: link %s node %s down: %s", l->dialer ? "to" : "from", who,
            why);
  } else if (refused || (was != L_CONNECTING && !cl->closing)) {
    srv->stats.cluster_links_refused++;
    peer *p = l->peer;
    uint64_t now = uv_now(srv->loop);
    /* A peer that keeps failing the same way is reported every 30 s, not on
     * every redial. */
    if (!p || !p->refused || now - p->last_warn > 30000) {
      mr_warn("cluster: link %s %s refused: %s", l->dialer ? "to" : "from", who,
              why);
      if (p)
        p->last_warn = now;
    }
    if (p)
      p->refused = 1;
  } else if (!cl->closing) {
    mr_debug("cluster: cannot reach %s: %s", l->peer ? l->peer->addr : who,
             why);
  }
  /* Redial the node: the one we dialed, or one that dialed us and that we
   * remembered by its advertised address. */
  peer *p = l->peer;
  if (!p && was == L_UP && !l->quiet && strcmp(l->addr, "-") != 0)
    p = peer_find_addr(cl, l->addr, strlen(l->addr));
  if (p && (p->link == l || !p->link)) {
    p->link = NULL;
    if (!cl->closing && !l->quiet)
      peer_schedule(p);
  }

  uv_close((uv_handle_t *)&l->tcp, on_link_closed);
}

static mr_link *link_new(mr_cluster *cl, int dialer) {
  mr_link *l = calloc(1, sizeof *l);
  if (!l)
    return NULL;
  l->cl = cl;
  l->dialer = dialer;
  l->tcp.data = l;
  uv_tcp_init(cl->srv->loop, &l->tcp);
  l->next = cl->links;
  if (cl->links)
    cl->links->prev = l;
  cl->links = l;
  l->last_rx = uv_now(cl->srv->loop);
  l->deadline = l->last_rx + HANDSHAKE_MS;
  return l;
}

static mr_link *find_up(mr_cluster *cl, const char *name, mr_link *except) {
  for (mr_link *l = cl->links; l; l = l->next)
    if (l != except && l->state == L_UP && strcmp(l->name, name) == 0)
      return l;
  return NULL;
}

/* ---- handshake --------------------------------------------------------------
 */

static void send_hello(mr_link *l, const uint8_t nonce[32]) {
  mr_cluster *cl = l->cl;
  mr_wbuf w;
  mr_wire_buf_init(&w);
  if (mr_wire_encode_hello(&w, cl->name, strlen(cl->name), cl->addr,
                           strlen(cl->addr), nonce) == 0)
    link_queue_wbuf(l, &w);
  mr_wire_buf_free(&w);
}

static int send_mac(mr_link *l, int tag, const char *label, const char *from,
                    const char *to) {
  mr_cluster *cl = l->cl;
  const char *cookie = cl->srv->cfg.cookie;
  uint8_t mac[32];
  if (mr_wire_auth_mac(cookie, strlen(cookie), label, l->nonce_d, l->nonce_a,
                       from, to, mac) != 0)
    return MR_EAUTH;
  mr_wbuf w;
  mr_wire_buf_init(&w);
  int r = tag == MR_WIRE_CHALLENGE ? mr_wire_encode_challenge(&w, mac)
                                   : mr_wire_encode_auth(&w, mac);
  if (r == 0)
    link_queue_wbuf(l, &w);
  mr_wire_buf_free(&w);
  return r;
}

static int check_mac(mr_link *l, const uint8_t *got, const char *label,
                     const char *from, const char *to) {
  const char *cookie = l->cl->srv->cfg.cookie;
  uint8_t want[32];
  if (mr_wire_auth_mac(cookie, strlen(cookie), label, l->nonce_d, l->nonce_a,
                       from, to, want) != 0)
    return 0;
  return mr_wire_mac_equal(want, got);
}

static void send_peers(mr_link *to) {
  mr_cluster *cl = to->cl;
  mr_wbuf w;
  size_t frame;
  mr_wire_buf_init(&w);
  if (mr_wire_encode_peers_begin(&w, &frame) == 0) {
    for (mr_link *l = cl->links; l; l = l->next)
      if (l->state == L_UP && l != to && strcmp(l->addr, "-") != 0)
        mr_wire_encode_peers_add(&w, frame, l->name, strlen(l->name), l->addr,
                                 strlen(l->addr));
    link_queue_wbuf(to, &w);
  }
  mr_wire_buf_free(&w);
}

static void send_interest_all(mr_link *to) {
  mr_server *srv = to->cl->srv;
  mr_wbuf w;
  size_t frame;
  mr_wire_buf_init(&w);
  if (mr_wire_encode_interest_all_begin(&w, &frame) == 0) {
    for (mr_room *r = mr_rooms_first(&srv->rooms); r; r = mr_rooms_next(r))
      if (r->name_len <= MR_WIRE_MAX_ROOM)
        mr_wire_encode_interest_all_add(&w, frame, r->name, r->name_len);
    link_queue_wbuf(to, &w);
  }
  mr_wire_buf_free(&w);
}

static peer *peer_find_addr(mr_cluster *cl, const char *addr, size_t len) {
  for (peer *p = cl->peers; p; p = p->next)
    if (strlen(p->addr) == len && memcmp(p->addr, addr, len) == 0)
      return p;
  return NULL;
}

static peer *peer_add(mr_cluster *cl, const char *addr, size_t len);

static void link_up(mr_link *l) {
  mr_cluster *cl = l->cl;
  mr_server *srv = cl->srv;
  /* Two nodes that dial each other at once end up with two links; both
   * keep the one dialed by the node whose name sorts first. */
  mr_link *dup = find_up(cl, l->name, l);
  if (dup) {
    const char *dialer_of_l = l->dialer ? cl->name : l->name;
    const char *dialer_of_dup = dup->dialer ? cl->name : dup->name;
    mr_link *drop = strcmp(dialer_of_l, dialer_of_dup) < 0 ? dup : l;
    if (drop->peer && drop->peer->link == drop) {
      drop->peer->link = NULL; /* the other link serves this peer */
      drop->peer = NULL;
    }
    drop->quiet = 1;
    link_close(drop, "duplicate link", 0);
    if (drop == l)
      return;
  }
  l->state = L_UP;
  l->last_rx = uv_now(srv->loop);
  srv->stats.cluster_links_up++;
  if (l->peer) {
    l->peer->backoff = 0;
    l->peer->refused = 0;
    snprintf(l->peer->name, sizeof l->peer->name, "%s", l->name);
  } else if (strcmp(l->addr, "-") != 0) {
    /* Remember a node that dialed us, so that we redial it if the link
     * goes; while this link is up the record stays idle. */
    peer *p = peer_find_addr(cl, l->addr, strlen(l->addr));
    if (!p)
      p = peer_add(cl, l->addr, strlen(l->addr));
    if (p) {
      snprintf(p->name, sizeof p->name, "%s", l->name);
      uv_timer_stop(&p->timer);
      p->backoff = 0;
      p->refused = 0;
    }
  }
  mr_info("cluster: link %s node %s (%s) up", l->dialer ? "to" : "from",
          l->name, l->addr);
  send_peers(l);
  send_interest_all(l);
  /* Tell every other node about the new one, so the mesh closes. */
  for (mr_link *o = cl->links; o; o = o->next)
    if (o != l && o->state == L_UP)
      send_peers(o);
}

static void on_hello(mr_link *l, const mr_wire_msg *m) {
  mr_cluster *cl = l->cl;
  if (m->hello.name_len == strlen(cl->name) &&
      memcmp(m->hello.name, cl->name, m->hello.name_len) == 0) {
    link_close(l, "the peer has this node's own name (dialed itself?)", 1);
    return;
  }
  memcpy(l->name, m->hello.name, m->hello.name_len);
  l->name[m->hello.name_len] = '\0';
  memcpy(l->addr, m->hello.addr, m->hello.addr_len);
  l->addr[m->hello.addr_len] = '\0';
  if (l->dialer) {
    memcpy(l->nonce_a, m->hello.nonce, 32);
    l->state = L_CHALLENGE;
    return;
  }
  memcpy(l->nonce_d, m->hello.nonce, 32);
  if (mr_wire_nonce(l->nonce_a) != 0) {
    link_close(l, "no random nonce", 0);
    return;
  }
  send_hello(l, l->nonce_a);
  if (send_mac(l, MR_WIRE_CHALLENGE, MR_WIRE_LABEL_ACCEPTOR, cl->name,
               l->name) != 0) {
    link_close(l, "cannot compute the proof", 0);
    return;
  }
  l->state = L_AUTH;
}

/* ---- frames ----------------------------------------------------------------
 */

static void interest_set(mr_link *l, const char *room, size_t len, int add) {
  interest *it = NULL;
  HASH_FIND(hh, l->rooms, room, len, it);
  if (add && !it) {
    it = malloc(sizeof *it + len);
    if (!it)
      return;
    it->len = len;
    memcpy(it->name, room, len);
    HASH_ADD_KEYPTR(hh, l->rooms, it->name, len, it);
  } else if (!add && it) {
    HASH_DEL(l->rooms, it);
    free(it);
  }
}

static void on_peers(mr_link *l, const mr_wire_msg *m) {
  mr_cluster *cl = l->cl;
  mr_wire_iter it;
  mr_wire_peer p;
  mr_wire_iter_init(&it, m);
  while (mr_wire_peers_next(&it, &p) == 1) {
    char name[MR_WIRE_MAX_NAME + 1];
    memcpy(name, p.name, p.name_len);
    name[p.name_len] = '\0';
    if (strcmp(name, cl->name) == 0 || find_up(cl, name, NULL))
      continue;
    if (p.addr_len == 1 && p.addr[0] == '-')
      continue;
    if (!peer_find_addr(cl, p.addr, p.addr_len)) {
      mr_info("cluster: learned of node %s at %.*s from %s", name,
              (int)p.addr_len, p.addr, l->name);
      peer *np = peer_add(cl, p.addr, p.addr_len);
      if (np)
        snprintf(np->name, sizeof np->name, "%s", name);
    }
  }
}

/* Handles one frame; returns 0, or -1 when the link was closed. */
static int on_frame(mr_link *l, const uint8_t *payload, size_t len) {
  mr_cluster *cl = l->cl;
  mr_server *srv = cl->srv;
  mr_wire_msg m;
  int r = mr_wire_decode(payload, len, &m);
  if (r == MR_ENOTFOUND && l->state == L_UP) {
    /* A newer node may speak tags this one does not know; skip them. */
    srv->stats.cluster_unknown_tags++;
    mr_debug("cluster: skipped unknown tag 0x%02x from %s", m.tag, l->name);
    return 0;
  }
  if (r != 0) {
    srv->stats.cluster_frames_malformed++;
    char why[160];
    snprintf(why, sizeof why, "malformed frame (tag 0x%02x): %s", m.tag,
             m.error ? m.error : mr_strerror(r));
    link_close(l, why, l->state != L_UP);
    return -1;
  }
  l->last_rx = uv_now(srv->loop);
  if (l->state != L_UP) {
    if (l->state == L_HELLO && m.tag == MR_WIRE_HELLO) {
      on_hello(l, &m);
    } else if (l->state == L_CHALLENGE && m.tag == MR_WIRE_CHALLENGE) {
      if (!check_mac(l, m.auth.mac, MR_WIRE_LABEL_ACCEPTOR, l->name,
                     cl->name)) {
        link_close(l, "authentication failed: node has a different cookie", 1);
        return -1;
      }
      if (send_mac(l, MR_WIRE_AUTH, MR_WIRE_LABEL_DIALER, cl->name, l->name)) {
        link_close(l, "cannot compute the proof", 0);
        return -1;
      }
      link_up(l);
    } else if (l->state == L_AUTH && m.tag == MR_WIRE_AUTH) {
      if (!check_mac(l, m.auth.mac, MR_WIRE_LABEL_DIALER, l->name, cl->name)) {
        link_close(l, "authentication failed: node has a different cookie", 1);
        return -1;
      }
      link_up(l);
    } else {
      srv->stats.cluster_frames_malformed++;
      char why[96];
      snprintf(why, sizeof why, "unexpected tag 0x%02x during the handshake",
               m.tag);
      link_close(l, why, 1);
      return -1;
    }
    return l->state == L_CLOSED ? -1 : 0;
  }
  switch (m.tag) {
  case MR_WIRE_ROOM_TEXT:
  case MR_WIRE_ROOM_BINARY:
    /* Delivered to this node's members only, never forwarded again: every
     * node forwards only what its own scripts broadcast. */
    cl->deliver(cl->deliver_ud, m.room.room, m.room.room_len, m.room.data,
                m.room.data_len, m.room.binary);
    break;
  case MR_WIRE_INTEREST:
    interest_set(l, m.interest.room, m.interest.room_len, m.interest.add);
    break;
  case MR_WIRE_INTEREST_ALL: {
    interest_clear(l);
    mr_wire_iter it;
    const char *room;
    size_t rlen;
    mr_wire_iter_init(&it, &m);
    while (mr_wire_rooms_next(&it, &room, &rlen) == 1)
      interest_set(l, room, rlen, 1);
    break;
  }
  case MR_WIRE_PEERS:
    on_peers(l, &m);
    break;
  case MR_WIRE_PING: {
    mr_wbuf w;
    mr_wire_buf_init(&w);
    if (mr_wire_encode_pong(&w, m.ping.token) == 0)
      link_queue_wbuf(l, &w);
    mr_wire_buf_free(&w);
    break;
  }
  case MR_WIRE_PONG:
    break;
  default:
    srv->stats.cluster_frames_malformed++;
    link_close(l, "handshake message on an established link", 0);
    return -1;
  }
  return l->state == L_CLOSED ? -1 : 0;
}

static void on_link_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  mr_link *l = h->data;
  if (l->rcap - l->rlen < 65536) {
    size_t ncap = l->rcap ? l->rcap * 2 : 65536;
    while (ncap - l->rlen < 65536)
      ncap *= 2;
    uint8_t *n = realloc(l->rbuf, ncap);
    if (!n) {
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    l->rbuf = n;
    l->rcap = ncap;
  }
  *buf = uv_buf_init((char *)l->rbuf + l->rlen, (unsigned)(l->rcap - l->rlen));
}

static void on_link_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  (void)buf;
  mr_link *l = s->data;
  if (n == 0)
    return;
  if (n < 0) {
    link_close(l, n == UV_EOF ? "closed by the peer" : uv_strerror((int)n), 0);
    return;
  }
  l->rlen += (size_t)n;
  size_t off = 0;
  while (l->state != L_CLOSED) {
    const uint8_t *payload;
    size_t plen, used;
    int r = mr_wire_next_frame(l->rbuf + off, l->rlen - off, l->cl->max_frame,
                               &payload, &plen, &used);
    if (r == MR_EAGAIN)
      break;
    if (r != 0) {
      l->cl->srv->stats.cluster_frames_malformed++;
      link_close(l,
                 r == MR_ETOOBIG ? "frame larger than the limit"
                                 : "malformed frame (empty)",
                 l->state != L_UP);
      return;
    }
    if (on_frame(l, payload, plen) != 0)
      return;
    off += used;
  }
  if (l->state == L_CLOSED)
    return;
  /* Keep the unread tail at the front; give back memory a large frame took. */
  memmove(l->rbuf, l->rbuf + off, l->rlen - off);
  l->rlen -= off;
  if (l->rlen == 0 && l->rcap > 262144) {
    free(l->rbuf);
    l->rbuf = NULL;
    l->rcap = 0;
  }
}

/* ---- dialing and accepting ------------------------------------------------
 */

static void on_connected(uv_connect_t *req, int status) {
  mr_link *l = req->data;
  if (l->state == L_CLOSED)
    return;
  if (status < 0) {
    link_close(l, uv_strerror(status), 0);
    return;
  }
  l->state = L_HELLO;
  uv_tcp_nodelay(&l->tcp, 1);
  if (mr_wire_nonce(l->nonce_d) != 0) {
    link_close(l, "no random nonce", 0);
    return;
  }
  send_hello(l, l->nonce_d);
  uv_read_start((uv_stream_t *)&l->tcp, on_link_alloc, on_link_read);
}

static void peer_dial(peer *p) {
  mr_cluster *cl = p->cl;
  if (cl->closing || p->link)
    return;
  if (p->name[0] && find_up(cl, p->name, NULL))
    return; /* already linked (the other node dialed us) */
  mr_addr a;
  struct sockaddr_storage ss;
  if (mr_addr_parse(p->addr, &a) != 0 ||
      (strchr(a.host, ':')
           ? uv_ip6_addr(a.host, a.port, (struct sockaddr_in6 *)&ss)
           : uv_ip4_addr(a.host, a.port, (struct sockaddr_in *)&ss)) != 0) {
    mr_warn("cluster: cannot dial '%s': not a numeric HOST:PORT", p->addr);
    return;
  }
  mr_link *l = link_new(cl, 1);
  if (!l)
    return;
  l->peer = p;
  p->link = l;
  snprintf(l->remote, sizeof l->remote, "%s", p->addr);
  l->state = L_CONNECTING;
  l->creq.data = l;
  int r =
      uv_tcp_connect(&l->creq, &l->tcp, (struct sockaddr *)&ss, on_connected);
  if (r != 0)
    link_close(l, uv_strerror(r), 0);
}

static void on_peer_timer(uv_timer_t *t) { peer_dial(t->data); }

static void peer_schedule(peer *p) {
  p->backoff = p->backoff ? p->backoff * 2 : BACKOFF_MIN_MS;
  if (p->backoff > BACKOFF_MAX_MS)
    p->backoff = BACKOFF_MAX_MS;
  /* Jitter keeps two nodes from redialing each other in lockstep. */
  unsigned delay = p->backoff / 2 + (unsigned)rand() % (p->backoff / 2 + 1);
  uv_timer_start(&p->timer, on_peer_timer, delay, 0);
}

static peer *peer_add(mr_cluster *cl, const char *addr, size_t len) {
  if (len == 0 || len > MR_WIRE_MAX_NAME)
    return NULL;
  peer *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->cl = cl;
  memcpy(p->addr, addr, len);
  p->addr[len] = '\0';
  uv_timer_init(cl->srv->loop, &p->timer);
  p->timer.data = p;
  p->next = cl->peers;
  cl->peers = p;
  uv_timer_start(&p->timer, on_peer_timer, 0, 0);
  return p;
}

static void on_link_accept(uv_stream_t *s, int status) {
  mr_cluster *cl = s->data;
  if (status < 0) {
    mr_warn("cluster: accept failed: %s", uv_strerror(status));
    return;
  }
  mr_link *l = link_new(cl, 0);
  if (!l)
    return;
  if (uv_accept(s, (uv_stream_t *)&l->tcp) != 0) {
    link_close(l, "accept failed", 0);
    return;
  }
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char ip[48] = "?";
  if (uv_tcp_getpeername(&l->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
    else
      uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
  }
  snprintf(l->remote, sizeof l->remote, "%s", ip);
  l->state = L_HELLO;
  uv_tcp_nodelay(&l->tcp, 1);
  uv_read_start((uv_stream_t *)&l->tcp, on_link_alloc, on_link_read);
}

/* ---- heartbeat ------------------------------------------------------------
 */

static void on_heartbeat(uv_timer_t *t) {
  mr_cluster *cl = t->data;
  uint64_t now = uv_now(cl->srv->loop);
  mr_wbuf w;
  mr_wire_buf_init(&w);
  mr_buf *ping = NULL;
  if (mr_wire_encode_ping(&w, now) == 0 && (ping = mr_buf_new(w.len)))
    memcpy(ping->data, w.data, w.len);
  mr_wire_buf_free(&w);
  mr_link *next;
  for (mr_link *l = cl->links; l; l = next) {
    next = l->next;
    if (l->state == L_CONNECTING)
      continue;
    if (l->state != L_UP) {
      if (now >= l->deadline)
        link_close(l, "handshake timed out", 1);
      continue;
    }
    if (now - l->last_rx >= SILENT_MS) {
      link_close(l, "no heartbeat", 0);
      continue;
    }
    if (ping)
      link_queue(l, ping);
  }
  if (ping)
    mr_buf_release(ping);
}

/* ---- the public side
 * --------------------------------------------------------- */

void mr_cluster_interest(mr_cluster *cl, const char *room, size_t len,
                         int created) {
  if (len > MR_WIRE_MAX_ROOM)
    return;
  mr_wbuf w;
  mr_wire_buf_init(&w);
  if (mr_wire_encode_interest(&w, created, room, len) == 0) {
    mr_buf *b = mr_buf_new(w.len);
    if (b) {
      memcpy(b->data, w.data, w.len);
      mr_link *next;
      for (mr_link *l = cl->links; l; l = next) {
        next = l->next;
        if (l->state == L_UP)
          link_queue(l, b);
      }
      mr_buf_release(b);
    }
  }
  mr_wire_buf_free(&w);
}

void mr_cluster_forward(mr_cluster *cl, const char *room, size_t room_len,
                        const void *msg, size_t len, int binary) {
  if (room_len > MR_WIRE_MAX_ROOM)
    return;
  /* The frame is encoded once, when the first interested link is found,
   * and shared by reference across every link. */
  mr_buf *frame = NULL;
  mr_link *next;
  for (mr_link *l = cl->links; l; l = next) {
    next = l->next;
    if (l->state != L_UP)
      continue;
    interest *it = NULL;
    HASH_FIND(hh, l->rooms, room, room_len, it);
    if (!it)
      continue;
    if (!frame) {
      mr_wbuf w;
      mr_wire_buf_init(&w);
      if (mr_wire_encode_room_header(&w, binary, room, room_len, len) != 0 ||
          !(frame = mr_buf_new(w.len + len))) {
        mr_wire_buf_free(&w);
        return;
      }
      memcpy(frame->data, w.data, w.len);
      memcpy(frame->data + w.len, msg, len);
      mr_wire_buf_free(&w);
    }
    link_queue(l, frame);
    cl->srv->stats.cluster_broadcasts_out++;
  }
  if (frame)
    mr_buf_release(frame);
}

const char *mr_cluster_node(const mr_cluster *cl) { return cl->name; }

size_t mr_cluster_peers(const mr_cluster *cl, const char **names, size_t max) {
  size_t n = 0;
  for (mr_link *l = cl->links; l && n < max; l = l->next)
    if (l->state == L_UP)
      names[n++] = l->name;
  return n;
}

/* Frees a cluster whose listener failed to start (the handle is its
 * first use of the loop, so nothing else of it is live). */
static void on_failed_listener_closed(uv_handle_t *h) { free(h->data); }

int mr_cluster_start(mr_server *srv, mr_cluster_deliver_cb deliver, void *ud) {
  mr_cluster *cl = calloc(1, sizeof *cl);
  if (!cl)
    return MR_ENOMEM;
  cl->srv = srv;
  cl->deliver = deliver;
  cl->deliver_ud = ud;
  snprintf(cl->name, sizeof cl->name, "%s", srv->node_name);
  /* A frame carries one message plus its room name and headers. */
  cl->max_frame = srv->cfg.max_message + MR_WIRE_MAX_ROOM + 64;
  cl->max_queue = 64u << 20;
  if (cl->max_queue < 4 * cl->max_frame)
    cl->max_queue = 4 * cl->max_frame;
  strcpy(cl->addr, "-");
  if (srv->cfg.has_cluster_listen) {
    mr_addr *a = &srv->cfg.cluster_listen;
    struct sockaddr_storage ss;
    int r = strchr(a->host, ':')
                ? uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)&ss)
                : uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)&ss);
    uv_tcp_init(srv->loop, &cl->listener);
    cl->listener.data = cl;
    if (r == 0)
      r = uv_tcp_bind(&cl->listener, (struct sockaddr *)&ss, 0);
    if (r == 0)
      r = uv_listen((uv_stream_t *)&cl->listener, 128, on_link_accept);
    if (r != 0) {
      mr_error("cannot listen for cluster links on %s:%d: %s", a->host, a->port,
               uv_strerror(r));
      /* The listener's memory is the cluster's: both go in its close
       * callback, never before (libuv still holds the handle). */
      uv_close((uv_handle_t *)&cl->listener, on_failed_listener_closed);
      return r;
    }
    cl->listening = 1;
    snprintf(cl->addr, sizeof cl->addr,
             strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host, a->port);
  }
  uv_timer_init(srv->loop, &cl->heartbeat);
  cl->heartbeat.data = cl;
  uv_timer_start(&cl->heartbeat, on_heartbeat, HEARTBEAT_MS, HEARTBEAT_MS);
  uv_prepare_init(srv->loop, &cl->flush_prep);
  cl->flush_prep.data = cl;
  uv_prepare_start(&cl->flush_prep, on_flush);
  srand((unsigned)uv_hrtime());
  srv->cluster = cl;
  for (int i = 0; i < srv->cfg.npeers; i++) {
    char addr[300];
    mr_addr *a = &srv->cfg.peers[i];
    snprintf(addr, sizeof addr, strchr(a->host, ':') ? "[%s]:%d" : "%s:%d",
             a->host, a->port);
    if (strcmp(addr, cl->addr) != 0 && !peer_find_addr(cl, addr, strlen(addr)))
      peer_add(cl, addr, strlen(addr));
  }
  mr_info("cluster: node %s, links on %s, %d seed peer(s)", cl->name,
          cl->listening ? cl->addr : "(dial only)", srv->cfg.npeers);
  return 0;
}

static void on_peer_timer_closed(uv_handle_t *h) { free(h->data); }

void mr_cluster_close(mr_cluster *cl) {
  if (cl->closing)
    return;
  cl->closing = 1;
  while (cl->links)
    link_close(cl->links, "shutting down", 0);
  peer *p = cl->peers;
  while (p) {
    peer *next = p->next;
    uv_close((uv_handle_t *)&p->timer, on_peer_timer_closed);
    p = next;
  }
  cl->peers = NULL;
  if (cl->listening)
    uv_close((uv_handle_t *)&cl->listener, NULL);
  uv_close((uv_handle_t *)&cl->heartbeat, NULL);
  uv_close((uv_handle_t *)&cl->flush_prep, NULL);
}

void mr_cluster_free(mr_cluster *cl) { free(cl); }
