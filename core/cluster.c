#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <uv.h>

#include "buf.h"
#include "context.h"
#include "error.h"
#include "link.h"
#include "log.h"
#include "presence.h"
#include "utf8.h"
#include "wire.h"

/* Timings, in milliseconds. The heartbeat and the handshake deadline
 * belong to the links (link.h). */
#define BACKOFF_MIN_MS 100  /* first redial delay, doubling ... */
#define BACKOFF_MAX_MS 2000 /* ... up to this */
#define REFUSAL_WARN_MS 30000
/* A node that fails authentication has a different cookie, which no redial
 * fixes until an operator does: it is redialed far more slowly. */
#define AUTH_BACKOFF_MIN_MS 1000  /* first redial delay, doubling ... */
#define AUTH_BACKOFF_MAX_MS 60000 /* ... up to this */
/* How many nodes refused for their cookie the accepting side remembers, to
 * log each once; past that, refusals are counted but not logged, so a flood
 * of made-up names cannot fill the log. */
#define COOKIE_LOG_MAX 64
/* A frame carries one message plus its room name and headers. */
#define FRAME_HEADROOM (MR_WIRE_MAX_ROOM + 64)
/* Room names are cut to this many bytes in log lines. */
#define LOG_ROOM 64
/* The largest INTEREST_ALL frame sent (see send_interest_all). */
#define INTEREST_ALL_MAX 65536
/* A link must stay up this long before its peer's redial backoff starts
 * again from the minimum: a link that comes up and drops at once (a peer
 * that refuses what it is sent) is redialed ever more slowly, not every
 * 100 ms forever. */
#define STABLE_MS 5000

typedef struct interest {
  UT_hash_handle hh;
  size_t len;
  char name[]; /* the room name, not NUL-terminated */
} interest;

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
  uint64_t up_since; /* loop time its last link came up; 0 none */
  mr_link *link;
  int refused; /* the last attempt failed authentication */
  uint64_t last_warn;
  int wrong_cookie;  /* the last attempt failed on the cookie: slow backoff */
  int cookie_logged; /* that was logged once since the last link up */
  int tls_logged;    /* a TLS refusal was logged since the last link up */
} peer;

/* What the cluster knows about one link (its mr_link_data): the
 * handshake, the node at the other end, and the rooms that node wants. */
typedef struct session {
  peer *peer; /* the dial target, for a link we dialed */
  /* The handshake: the peer's HELLO came, so its proof comes next (the
   * acceptor's CHALLENGE to a dialer, the dialer's AUTH to an acceptor). */
  int got_hello;
  int quiet; /* closed on purpose (duplicate): nothing to count or report */
  int wrong_cookie;                /* the handshake failed on the cookie */
  char addr[MR_WIRE_MAX_NAME + 1]; /* the peer's advertised address */
  uint8_t nonce_d[32], nonce_a[32];
  interest *rooms; /* rooms the peer has members in */
} session;

struct mr_cluster {
  mr_server *srv;
  mr_cluster_deliver_cb deliver;
  void *deliver_ud;
  uv_tcp_t listener;
  int listening;
  mr_link_env links; /* every link that is not closed */
  char name[MR_WIRE_MAX_NAME + 1];
  char addr[MR_WIRE_MAX_NAME + 1]; /* "-" when this node does not listen */
  peer *peers;
  int closing;
  /* Nodes whose links this node accepted and refused for their cookie, as
   * "NAME ADDR", each logged once until it links up. */
  char *cookie_logged[COOKIE_LOG_MAX];
  int ncookie_logged;
};

static session *sess(mr_link *l) { return mr_link_data(l); }
static mr_cluster *cluster_of(const mr_link *l) { return l->env->data; }

/* ---- peers: dialing and backoff ----------------------------------------- */

static peer *peer_find_addr(mr_cluster *cl, const char *addr, size_t len) {
  for (peer *p = cl->peers; p; p = p->next)
    if (strlen(p->addr) == len && memcmp(p->addr, addr, len) == 0)
      return p;
  return NULL;
}

/* Fills ss from a numeric HOST:PORT. Returns 0 or a negative error code. */
static int sockaddr_of(const mr_addr *a, struct sockaddr_storage *ss) {
  return strchr(a->host, ':')
             ? uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)ss)
             : uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)ss);
}

/* Writes a the way other nodes dial it ([HOST]:PORT for IPv6). */
static void format_addr(char *out, size_t cap, const mr_addr *a) {
  snprintf(out, cap, strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host,
           a->port);
}

static void on_peer_timer(uv_timer_t *t);

static void peer_schedule(peer *p) {
  unsigned lo = p->wrong_cookie ? AUTH_BACKOFF_MIN_MS : BACKOFF_MIN_MS;
  unsigned hi = p->wrong_cookie ? AUTH_BACKOFF_MAX_MS : BACKOFF_MAX_MS;
  p->backoff = p->backoff ? p->backoff * 2 : lo;
  if (p->backoff < lo)
    p->backoff = lo;
  if (p->backoff > hi)
    p->backoff = hi;
  /* Jitter keeps two nodes from redialing each other in lockstep. */
  unsigned delay = p->backoff / 2 + (unsigned)rand() % (p->backoff / 2 + 1);
  uv_timer_start(&p->timer, on_peer_timer, delay, 0);
}

static void peer_dial(peer *p) {
  mr_cluster *cl = p->cl;
  if (cl->closing || p->link)
    return;
  if (p->name[0] && mr_link_env_find_up(&cl->links, p->name, NULL))
    return; /* already linked (the other node dialed us) */
  mr_addr a;
  struct sockaddr_storage ss;
  if (mr_addr_parse(p->addr, &a) != 0 || sockaddr_of(&a, &ss) != 0) {
    mr_warn("cluster: cannot dial '%s': not a numeric HOST:PORT", p->addr);
    return;
  }
  mr_link *l;
  int r = mr_link_dial(&cl->links, (struct sockaddr *)&ss, p->addr, &l);
  if (r != 0) {
    mr_debug("cluster: cannot reach %s: %s", p->addr, mr_strerror(r));
    peer_schedule(p);
    return;
  }
  sess(l)->peer = p;
  p->link = l;
}

static void on_peer_timer(uv_timer_t *t) { peer_dial(t->data); }

/* Adds a peer at addr (len bytes), named name when known (else ""), to
 * dial at once. The cluster owns it; it is freed in its timer's close
 * callback. */
static peer *peer_add(mr_cluster *cl, const char *addr, size_t len,
                      const char *name) {
  if (len == 0 || len > MR_WIRE_MAX_NAME)
    return NULL;
  peer *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->cl = cl;
  memcpy(p->addr, addr, len);
  p->addr[len] = '\0';
  snprintf(p->name, sizeof p->name, "%s", name);
  uv_timer_init(cl->srv->loop, &p->timer);
  p->timer.data = p;
  p->next = cl->peers;
  cl->peers = p;
  uv_timer_start(&p->timer, on_peer_timer, 0, 0);
  return p;
}

/* ---- what could not be sent --------------------------------------------- */

/* Counts and logs a frame about a room that the cluster could not build or
 * keep, so that nothing is dropped silently. */
static void dropped(mr_cluster *cl, const char *what, const char *room,
                    size_t room_len, int err) {
  cl->srv->stats.internal_errors++;
  mr_warn("cluster: %s for room %.*s%s (%zu bytes) dropped: %s", what,
          (int)(room_len > LOG_ROOM ? LOG_ROOM : room_len), room,
          room_len > LOG_ROOM ? "..." : "", room_len, mr_strerror(err));
}

/* ---- handshake ---------------------------------------------------------- */

static int send_hello(mr_link *l, const uint8_t nonce[32]) {
  mr_cluster *cl = cluster_of(l);
  mr_wbuf w;
  mr_wire_buf_init(&w);
  int r = mr_wire_encode_hello(&w, cl->name, strlen(cl->name), cl->addr,
                               strlen(cl->addr), nonce);
  return mr_link_send_encoded(l, &w, r);
}

/* Computes this node's proof for the peer (mine), or the proof expected
 * from the peer. The label names the prover's role, so that neither proof
 * can be reflected back as the other. Returns 0 or MR_EAUTH. */
static int make_proof(mr_link *l, int mine, uint8_t mac[32]) {
  mr_cluster *cl = cluster_of(l);
  session *s = sess(l);
  const char *cookie = cl->srv->cfg.cookie;
  int by_dialer = mine ? l->dialer : !l->dialer;
  const char *me = cl->name, *them = l->name;
  const char *label = by_dialer ? MR_WIRE_LABEL_DIALER : MR_WIRE_LABEL_ACCEPTOR;
  return mr_wire_auth_mac(cookie, strlen(cookie), label, s->nonce_d, s->nonce_a,
                          mine ? me : them, mine ? them : me, mac) != 0
             ? MR_EAUTH
             : 0;
}

/* Sends this node's proof: CHALLENGE from the acceptor, AUTH from the
 * dialer. Returns 0, or a negative error code (the link may be closed). */
static int send_proof(mr_link *l) {
  uint8_t mac[32];
  if (make_proof(l, 1, mac) != 0)
    return MR_EAUTH;
  mr_wbuf w;
  mr_wire_buf_init(&w);
  int r = l->dialer ? mr_wire_encode_auth(&w, mac)
                    : mr_wire_encode_challenge(&w, mac);
  return mr_link_send_encoded(l, &w, r);
}

/* The dialer opens the handshake: its HELLO with a fresh nonce. */
static void on_link_connected(mr_link *l) {
  session *s = sess(l);
  if (mr_wire_nonce(s->nonce_d) != 0) {
    mr_link_close(l, "no random nonce", 0);
    return;
  }
  send_hello(l, s->nonce_d);
}

static void send_peers(mr_link *to) {
  mr_cluster *cl = cluster_of(to);
  mr_wbuf w;
  size_t frame;
  mr_wire_buf_init(&w);
  int r = mr_wire_encode_peers_begin(&w, &frame);
  for (mr_link *l = cl->links.links; l && r == 0; l = l->next) {
    const char *addr = sess(l)->addr;
    if (l->state == MR_LINK_UP && l != to && strcmp(addr, "-") != 0)
      r = mr_wire_encode_peers_add(&w, frame, l->name, strlen(l->name), addr,
                                   strlen(addr));
  }
  mr_link_send_encoded(to, &w, r);
}

/* Tells a new peer every room this node has members in. A room the wire
 * cannot name is left out, counted and logged; the peer then never
 * forwards that room's broadcasts here.
 *
 * One INTEREST_ALL frame is kept under the frame size every node accepts
 * (a node refuses a frame over its --max-message plus FRAME_HEADROOM, and
 * drops the link): the rooms that do not fit follow as INTEREST frames in
 * the same buffer. A single frame with tens of thousands of rooms once made
 * the link drop and redial forever. */
static void send_interest_all(mr_link *to) {
  mr_cluster *cl = cluster_of(to);
  /* Every node accepts frames of its --max-message (at least 1) plus
   * FRAME_HEADROOM, so a frame this size passes any peer. */
  _Static_assert(INTEREST_ALL_MAX < FRAME_HEADROOM,
                 "an INTEREST_ALL frame must fit every node's frame limit");
  size_t budget = INTEREST_ALL_MAX;
  mr_wbuf w;
  size_t frame;
  mr_wire_buf_init(&w);
  int r = mr_wire_encode_interest_all_begin(&w, &frame);
  for (mr_room *room = mr_rooms_first(&cl->srv->rooms); room && r == 0;
       room = mr_rooms_next(room)) {
    if (w.len - frame + 2 + room->name_len <= budget)
      r = mr_wire_encode_interest_all_add(&w, frame, room->name,
                                          room->name_len);
    else
      r = mr_wire_encode_interest(&w, 1, room->name, room->name_len);
    if (r == MR_EINVAL || r == MR_EUTF8) {
      dropped(cl, "interest", room->name, room->name_len, r);
      r = 0;
    }
  }
  mr_link_send_encoded(to, &w, r);
}

/* Two nodes that dial each other at once end up with two links; both keep
 * the one dialed by the node whose name sorts first. Returns 1 when l is
 * the one that goes (it is then closed). */
static int resolve_duplicate(mr_link *l) {
  mr_cluster *cl = cluster_of(l);
  mr_link *dup = mr_link_env_find_up(&cl->links, l->name, l);
  if (!dup)
    return 0;
  const char *dialer_of_l = l->dialer ? cl->name : l->name;
  const char *dialer_of_dup = dup->dialer ? cl->name : dup->name;
  mr_link *drop = strcmp(dialer_of_l, dialer_of_dup) < 0 ? dup : l;
  session *d = sess(drop);
  if (d->peer && d->peer->link == drop) {
    d->peer->link = NULL; /* the other link serves this peer */
    d->peer = NULL;
  }
  d->quiet = 1;
  mr_link_close(drop, "duplicate link", 0);
  return drop == l;
}

/* Remembers the node at the other end of a new link as a peer to redial:
 * the one we dialed, or one that dialed us and advertised an address. */
static void remember_peer(mr_link *l) {
  mr_cluster *cl = cluster_of(l);
  session *s = sess(l);
  peer *p = s->peer;
  if (!p && strcmp(s->addr, "-") != 0) {
    /* While this link is up the record stays idle. */
    p = peer_find_addr(cl, s->addr, strlen(s->addr));
    if (!p)
      p = peer_add(cl, s->addr, strlen(s->addr), l->name);
    if (p)
      uv_timer_stop(&p->timer);
  }
  if (!p)
    return;
  p->up_since = uv_now(cl->srv->loop);
  p->refused = 0;
  p->wrong_cookie = 0;
  p->cookie_logged = 0;
  p->tls_logged = 0;
  snprintf(p->name, sizeof p->name, "%s", l->name);
}

static void cookie_forget(mr_cluster *cl, mr_link *l);

/* Sends a new peer this node's counts and presence entries in full; the
 * peer replaces whatever it held from this node (presence.h). */
static void send_presence_full(mr_link *to) {
  mr_server *srv = cluster_of(to)->srv;
  if (!srv->presence || to->state != MR_LINK_UP)
    return;
  mr_wbuf w;
  mr_wire_buf_init(&w);
  size_t counts = 0, presence = 0;
  int r = mr_presence_encode_full(srv->presence, &w, &counts, &presence);
  if (mr_link_send_encoded(to, &w, r) == 0) {
    srv->stats.cluster_counts_out += counts;
    srv->stats.cluster_presence_out += presence;
  }
}

/* The presence batch's sender: one shared block for every established
 * link. */
static void send_presence_batch(void *ud, const mr_wbuf *w, size_t counts,
                                size_t presence) {
  mr_cluster *cl = ud;
  mr_buf *b = mr_link_frame(w);
  if (!b) {
    cl->srv->stats.internal_errors++;
    mr_warn("cluster: a presence batch was not sent: %s",
            mr_strerror(MR_ENOMEM));
    return;
  }
  mr_link *next;
  for (mr_link *l = cl->links.links; l; l = next) {
    next = l->next;
    if (l->state == MR_LINK_UP && mr_link_send(l, b) == 0) {
      cl->srv->stats.cluster_counts_out += counts;
      cl->srv->stats.cluster_presence_out += presence;
    }
  }
  mr_buf_release(b);
}

/* The handshake succeeded: room traffic may flow. */
static void link_up(mr_link *l) {
  mr_cluster *cl = cluster_of(l);
  if (l->state != MR_LINK_HANDSHAKE || resolve_duplicate(l))
    return;
  mr_link_set_up(l);
  cl->srv->stats.cluster_links_up++;
  remember_peer(l);
  if (!l->dialer)
    cookie_forget(cl, l);
  mr_info("cluster: link %s node %s (%s) up", l->dialer ? "to" : "from",
          l->name, sess(l)->addr);
  send_peers(l);
  if (l->state == MR_LINK_UP)
    send_interest_all(l);
  send_presence_full(l);
  /* Tell every other node about the new one, so the mesh closes. */
  mr_link *next;
  for (mr_link *o = cl->links.links; o; o = next) {
    next = o->next;
    if (o != l && o->state == MR_LINK_UP)
      send_peers(o);
  }
}

static void on_hello(mr_link *l, const mr_wire_msg *m) {
  mr_cluster *cl = cluster_of(l);
  session *s = sess(l);
  if (m->hello.name_len == strlen(cl->name) &&
      memcmp(m->hello.name, cl->name, m->hello.name_len) == 0) {
    mr_link_close(l, "the peer has this node's own name (dialed itself?)", 1);
    return;
  }
  mr_link_set_name(l, m->hello.name, m->hello.name_len);
  memcpy(s->addr, m->hello.addr, m->hello.addr_len);
  s->addr[m->hello.addr_len] = '\0';
  s->got_hello = 1;
  if (l->dialer) {
    memcpy(s->nonce_a, m->hello.nonce, 32);
    return;
  }
  /* The acceptor answers with its own HELLO and proves itself first. */
  memcpy(s->nonce_d, m->hello.nonce, 32);
  if (mr_wire_nonce(s->nonce_a) != 0) {
    mr_link_close(l, "no random nonce", 0);
    return;
  }
  if (send_hello(l, s->nonce_a) != 0 || send_proof(l) != 0)
    mr_link_close(l, "cannot send the proof", 0);
}

/* The peer's proof. The dialer checks the acceptor's before it proves
 * itself, so that it never proves anything to a node without the cookie. */
static void on_proof(mr_link *l, const mr_wire_msg *m) {
  uint8_t want[32];
  if (make_proof(l, 0, want) != 0 || !mr_wire_mac_equal(want, m->auth.mac)) {
    sess(l)->wrong_cookie = 1;
    mr_link_close(l, "authentication failed: node has a different cookie", 1);
    return;
  }
  if (l->dialer && send_proof(l) != 0) {
    mr_link_close(l, "cannot send the proof", 0);
    return;
  }
  link_up(l);
}

/* Before a link is established only the next step of the handshake is
 * acceptable; anything else refuses the peer. */
static void on_handshake_frame(mr_link *l, const mr_wire_msg *m) {
  session *s = sess(l);
  int proof = l->dialer ? MR_WIRE_CHALLENGE : MR_WIRE_AUTH;
  if (!s->got_hello && m->tag == MR_WIRE_HELLO) {
    on_hello(l, m);
  } else if (s->got_hello && m->tag == proof) {
    on_proof(l, m);
  } else {
    cluster_of(l)->srv->stats.cluster_frames_malformed++;
    char why[96];
    snprintf(why, sizeof why, "unexpected tag 0x%02x during the handshake",
             m->tag);
    mr_link_close(l, why, 1);
  }
}

/* ---- established links -------------------------------------------------- */

static void interest_clear(session *s) {
  interest *it, *tmp;
  HASH_ITER(hh, s->rooms, it, tmp) {
    HASH_DEL(s->rooms, it);
    free(it);
  }
}

/* Records that the node at the other end of l has (add) or no longer has
 * members in room. An entry belongs to the link's table and is freed when
 * the room is removed, when the node resends all its rooms, or when the
 * link closes (interest_clear). */
static void interest_set(mr_link *l, const char *room, size_t len, int add) {
  session *s = sess(l);
  interest *it = NULL;
  HASH_FIND(hh, s->rooms, room, len, it);
  if (add && !it) {
    if (!(it = malloc(sizeof *it + len))) {
      /* The node then misses this room's broadcasts until it announces
       * the room again (or the link is re-established). */
      char what[MR_WIRE_MAX_NAME + 32];
      snprintf(what, sizeof what, "interest of node %s", l->name);
      dropped(cluster_of(l), what, room, len, MR_ENOMEM);
      return;
    }
    it->len = len;
    memcpy(it->name, room, len);
    HASH_ADD_KEYPTR(hh, s->rooms, it->name, len, it);
  } else if (!add && it) {
    HASH_DEL(s->rooms, it);
    free(it);
  }
}

static void on_interest_all(mr_link *l, const mr_wire_msg *m) {
  interest_clear(sess(l));
  mr_wire_iter it;
  const char *room;
  size_t len;
  mr_wire_iter_init(&it, m);
  while (mr_wire_rooms_next(&it, &room, &len) == 1)
    interest_set(l, room, len, 1);
}

static void on_peers(mr_link *l, const mr_wire_msg *m) {
  mr_cluster *cl = cluster_of(l);
  mr_wire_iter it;
  mr_wire_peer p;
  mr_wire_iter_init(&it, m);
  while (mr_wire_peers_next(&it, &p) == 1) {
    char name[MR_WIRE_MAX_NAME + 1];
    memcpy(name, p.name, p.name_len);
    name[p.name_len] = '\0';
    if (strcmp(name, cl->name) == 0 ||
        mr_link_env_find_up(&cl->links, name, NULL))
      continue;
    if (p.addr_len == 1 && p.addr[0] == '-')
      continue;
    if (!peer_find_addr(cl, p.addr, p.addr_len)) {
      mr_info("cluster: learned of node %s at %.*s from %s", name,
              (int)p.addr_len, p.addr, l->name);
      peer_add(cl, p.addr, p.addr_len, name);
    }
  }
}

static void on_established_frame(mr_link *l, const mr_wire_msg *m) {
  mr_cluster *cl = cluster_of(l);
  switch (m->tag) {
  case MR_WIRE_ROOM_TEXT:
  case MR_WIRE_ROOM_BINARY:
    /* Delivered to this node's members only, never forwarded again: every
     * node forwards only what its own scripts broadcast. */
    cl->deliver(cl->deliver_ud, m->room.room, m->room.room_len, m->room.data,
                m->room.data_len, m->room.binary);
    break;
  case MR_WIRE_INTEREST:
    interest_set(l, m->interest.room, m->interest.room_len, m->interest.add);
    break;
  case MR_WIRE_INTEREST_ALL:
    on_interest_all(l, m);
    break;
  case MR_WIRE_PEERS:
    on_peers(l, m);
    break;
  case MR_WIRE_COUNTS:
  case MR_WIRE_PRESENCE:
    if (cl->srv->presence)
      mr_presence_on_frame(cl->srv->presence, l->name, m);
    break;
  default:
    cl->srv->stats.cluster_frames_malformed++;
    mr_link_close(l, "handshake message on an established link", 0);
  }
}

static void on_link_frame(mr_link *l, const mr_wire_msg *m) {
  if (l->state == MR_LINK_UP)
    on_established_frame(l, m);
  else
    on_handshake_frame(l, m);
}

/* ---- closed links ------------------------------------------------------- */

/* The key under which an accepted node refused for its cookie is
 * remembered: its name and advertised address. */
static void cookie_key(mr_link *l, char *out, size_t cap) {
  snprintf(out, cap, "%s %s", l->name, sess(l)->addr);
}

/* Whether key (a refused node) is new to the list of those logged (then
 * it is remembered, while there is room). */
static int logged_first(mr_cluster *cl, const char *key) {
  for (int i = 0; i < cl->ncookie_logged; i++)
    if (strcmp(cl->cookie_logged[i], key) == 0)
      return 0;
  if (cl->ncookie_logged == COOKIE_LOG_MAX)
    return 0;
  size_t len = strlen(key) + 1;
  char *copy = malloc(len);
  if (copy) {
    memcpy(copy, key, len);
    cl->cookie_logged[cl->ncookie_logged++] = copy;
  }
  return 1;
}

/* Whether the refusal of l for its cookie is the first from that node. */
static int cookie_first(mr_cluster *cl, mr_link *l) {
  char key[2 * MR_WIRE_MAX_NAME + 2];
  cookie_key(l, key, sizeof key);
  return logged_first(cl, key);
}

/* The key under which a node refused in the TLS handshake is remembered:
 * its address, since its name is not known before the cookie handshake. */
static void tls_key(mr_link *l, char *out, size_t cap) {
  snprintf(out, cap, "tls %s", l->remote);
}

static void logged_forget(mr_cluster *cl, const char *key);

/* A node that links up is forgotten, so that it is reported again should
 * its cookie or its certificate change later. */
static void cookie_forget(mr_cluster *cl, mr_link *l) {
  char key[2 * MR_WIRE_MAX_NAME + 2];
  cookie_key(l, key, sizeof key);
  logged_forget(cl, key);
  tls_key(l, key, sizeof key);
  logged_forget(cl, key);
}

static void logged_forget(mr_cluster *cl, const char *key) {
  for (int i = 0; i < cl->ncookie_logged; i++)
    if (strcmp(cl->cookie_logged[i], key) == 0) {
      free(cl->cookie_logged[i]);
      cl->cookie_logged[i] = cl->cookie_logged[--cl->ncookie_logged];
      return;
    }
}

/* Logs a handshake that failed on the cookie: on the dialing side once per
 * peer until it links up, on the accepting side once per remote node.
 * refused is 1 when this node found the proof wrong (why says so), 0 when
 * the dialer closed after this node's proof. The caller counts it. */
static void report_cookie(mr_link *l, const char *why, int refused) {
  mr_cluster *cl = cluster_of(l);
  peer *p = sess(l)->peer;
  if (l->dialer && p) {
    p->wrong_cookie = 1;
    if (p->cookie_logged) {
      mr_debug("cluster: node %s at %s refused again: %s", l->name, p->addr,
               why);
      return;
    }
    p->cookie_logged = 1;
    mr_warn("cluster: node %s at %s has a different cookie (%s); check "
            "--cookie / MOONROOM_COOKIE on both nodes; redialing with backoff "
            "up to %d s, further failures are counted in "
            "cluster_links_refused, not logged",
            l->name, p->addr, why, AUTH_BACKOFF_MAX_MS / 1000);
    return;
  }
  if (!cookie_first(cl, l)) {
    mr_debug("cluster: link from %s refused again: wrong cookie (node %s)",
             l->remote, l->name);
    return;
  }
  mr_warn("cluster: link from %s refused: wrong cookie (node %s, at %s): %s; "
          "check --cookie / MOONROOM_COOKIE on both nodes; further attempts "
          "are counted in cluster_links_refused, not logged",
          l->remote, l->name, sess(l)->addr,
          refused ? why : "it did not accept this node's proof");
}

/* Logs a link refused in the TLS handshake (why has OpenSSL's reason, with
 * the certificate's verify error): once per peer until it links up, on the
 * dialing side per peer address, on the accepting side per remote
 * address. The caller counts it. */
static void report_tls(mr_link *l, const char *why) {
  mr_cluster *cl = cluster_of(l);
  peer *p = sess(l)->peer;
  const char *dir = l->dialer ? "to" : "from";
  const char *who = l->dialer && p ? p->addr : l->remote;
  int first;
  if (l->dialer && p) {
    first = !p->tls_logged;
    p->tls_logged = 1;
  } else {
    char key[2 * MR_WIRE_MAX_NAME + 2];
    tls_key(l, key, sizeof key);
    first = logged_first(cl, key);
  }
  if (!first) {
    mr_debug("cluster: link %s %s refused again: %s", dir, who, why);
    return;
  }
  mr_warn("cluster: link %s %s refused: %s; check --cluster-tls-cert and "
          "--cluster-tls-ca on both nodes; further failures are counted in "
          "cluster_tls_failures, not logged",
          dir, who, why);
}

/* Counts and logs why a link ended. A peer that keeps failing the same way
 * is reported every REFUSAL_WARN_MS, not on every redial. */
static void report_close(mr_link *l, mr_link_state was, const char *why,
                         int refused) {
  mr_cluster *cl = cluster_of(l);
  mr_server *srv = cl->srv;
  session *s = sess(l);
  const char *who = l->name[0] ? l->name : l->remote;
  const char *dir = l->dialer ? "to" : "from";
  if (s->quiet) {
    mr_debug("cluster: closed a duplicate link with %s", who);
  } else if (was == MR_LINK_UP) {
    srv->stats.cluster_links_dropped++;
    mr_warn("cluster: link %s node %s down: %s", dir, who, why);
  } else if (l->tls_failed) {
    srv->stats.cluster_links_refused++;
    report_tls(l, why);
  } else if (s->wrong_cookie) {
    srv->stats.cluster_links_refused++;
    report_cookie(l, why, refused);
  } else if (refused || (was != MR_LINK_CONNECTING && !cl->closing)) {
    srv->stats.cluster_links_refused++;
    peer *p = s->peer;
    uint64_t now = uv_now(srv->loop);
    if (!p || !p->refused || now - p->last_warn > REFUSAL_WARN_MS) {
      mr_warn("cluster: link %s %s refused: %s", dir, who, why);
      if (p)
        p->last_warn = now;
    }
    if (p)
      p->refused = 1;
  } else if (!cl->closing) {
    mr_debug("cluster: cannot reach %s: %s", s->peer ? s->peer->addr : who,
             why);
  }
}

static void on_link_closed(mr_link *l, mr_link_state was, const char *why,
                           int refused) {
  mr_cluster *cl = cluster_of(l);
  session *s = sess(l);
  interest_clear(s);
  /* The losing half of a duplicate pair can be closed by the other node
   * first; with another link to that node up, nothing was lost. */
  if (was == MR_LINK_UP && mr_link_env_find_up(&cl->links, l->name, l))
    s->quiet = 1;
  /* The node's counts and entries go with its last link. */
  if (was == MR_LINK_UP && !s->quiet && cl->srv->presence)
    mr_presence_node_down(cl->srv->presence, l->name);
  /* A dialer that closes the handshake after this node's proof found that
   * proof wrong: it has a different cookie (it says no more on the wire).
   * Unless a link to that node is up: then the dialer kept that one (the
   * duplicate rule, resolve_duplicate) and dropped this link right after
   * its proof, which may not have left; nothing was refused. */
  if (!l->dialer && was == MR_LINK_HANDSHAKE && s->got_hello && !refused &&
      !cl->closing) {
    if (mr_link_env_find_up(&cl->links, l->name, l))
      s->quiet = 1;
    else
      s->wrong_cookie = 1;
  }
  report_close(l, was, why, refused);
  /* Redial the node: the one we dialed, or one that dialed us and that we
   * remembered by its advertised address. */
  peer *p = s->peer;
  if (!p && was == MR_LINK_UP && !s->quiet && strcmp(s->addr, "-") != 0)
    p = peer_find_addr(cl, s->addr, strlen(s->addr));
  if (p && (p->link == l || !p->link)) {
    p->link = NULL;
    if (was == MR_LINK_UP && p->up_since &&
        uv_now(cl->srv->loop) - p->up_since >= STABLE_MS)
      p->backoff = 0;
    p->up_since = 0;
    if (!cl->closing && !s->quiet)
      peer_schedule(p);
  }
}

static const mr_link_events link_events = {on_link_connected, on_link_frame,
                                           on_link_closed};

/* ---- accepting ---------------------------------------------------------- */

static void on_link_accept(uv_stream_t *s, int status) {
  mr_cluster *cl = s->data;
  mr_link *l;
  if (status == 0)
    status = mr_link_accept(&cl->links, s, &l);
  if (status != 0)
    mr_warn("cluster: accept failed: %s", mr_strerror(status));
}

/* ---- the public side ---------------------------------------------------- */

void mr_cluster_tick(mr_cluster *cl, uint64_t now) {
  mr_link_env_tick(&cl->links, now);
}

void mr_cluster_interest(mr_cluster *cl, const char *room, size_t len,
                         int created) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  mr_buf *b = NULL;
  int r = mr_wire_encode_interest(&w, created, room, len);
  if (r == 0 && !(b = mr_link_frame(&w)))
    r = MR_ENOMEM;
  mr_wire_buf_free(&w);
  if (r != 0) {
    dropped(cl, created ? "interest" : "end of interest", room, len, r);
    return;
  }
  mr_link_env_send_up(&cl->links, b);
  mr_buf_release(b);
}

/* Encodes a room broadcast once, for every interested link to share.
 * Returns the block (owned by the caller), or NULL after counting and
 * logging the drop. */
static mr_buf *encode_room(mr_cluster *cl, const char *room, size_t room_len,
                           const void *msg, size_t len, int binary) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  mr_buf *frame = NULL;
  int r = mr_wire_encode_room_header(&w, binary, room, room_len, len);
  if (r == 0 && !(frame = mr_buf_new(w.len + len)))
    r = MR_ENOMEM;
  if (r == 0) {
    memcpy(frame->data, w.data, w.len);
    memcpy(frame->data + w.len, msg, len);
  }
  mr_wire_buf_free(&w);
  if (r != 0)
    dropped(cl, "a broadcast", room, room_len, r);
  return frame;
}

void mr_cluster_forward(mr_cluster *cl, const char *room, size_t room_len,
                        const void *msg, size_t len, int binary) {
  /* The frame is encoded once, when the first interested link is found. */
  mr_buf *frame = NULL;
  int any_up = 0;
  mr_link *next;
  for (mr_link *l = cl->links.links; l; l = next) {
    next = l->next;
    if (l->state != MR_LINK_UP)
      continue;
    any_up = 1;
    interest *it = NULL;
    HASH_FIND(hh, sess(l)->rooms, room, room_len, it);
    if (!it)
      continue;
    if (!frame && !(frame = encode_room(cl, room, room_len, msg, len, binary)))
      return;
    if (mr_link_send(l, frame) == 0)
      cl->srv->stats.cluster_broadcasts_out++;
  }
  if (frame) {
    mr_buf_release(frame);
    return;
  }
  /* No node can announce interest in a room the wire cannot name, though
   * one may well have members in it: the broadcast is lost to them. */
  if (!any_up)
    return;
  if (room_len == 0 || room_len > MR_WIRE_MAX_ROOM)
    dropped(cl, "a broadcast", room, room_len, MR_EINVAL);
  else if (!mr_utf8_valid((const uint8_t *)room, room_len))
    dropped(cl, "a broadcast", room, room_len, MR_EUTF8);
}

const char *mr_cluster_node(const mr_cluster *cl) { return cl->name; }

size_t mr_cluster_peers(const mr_cluster *cl, const char **names, size_t max) {
  return mr_link_env_names(&cl->links, names, max);
}

void mr_cluster_link_states(const mr_cluster *cl, size_t *counts) {
  mr_link_env_count_states(&cl->links, counts);
}

mr_link *mr_cluster_link_virtual(mr_cluster *cl, int dialer) {
  mr_link *l = mr_link_new_virtual(&cl->links, dialer, "virtual");
  if (l && dialer)
    on_link_connected(l);
  return l;
}

/* A listener that never started is closed; the cluster around it may be
 * freed only in its close callback. */
static void on_failed_listener_closed(uv_handle_t *h) { free(h->data); }

/* Binds and listens on --cluster-listen. On failure the listener is closed
 * and the cluster freed (in the close callback), and the error returned. */
static int listen_links(mr_cluster *cl) {
  mr_addr *a = &cl->srv->cfg.cluster_listen;
  struct sockaddr_storage ss;
  int r = sockaddr_of(a, &ss);
  uv_tcp_init(cl->srv->loop, &cl->listener);
  cl->listener.data = cl;
  if (r == 0)
    r = uv_tcp_bind(&cl->listener, (struct sockaddr *)&ss, 0);
  if (r == 0)
    r = uv_listen((uv_stream_t *)&cl->listener, 128, on_link_accept);
  if (r != 0) {
    mr_error("cannot listen for cluster links on %s:%d: %s", a->host, a->port,
             uv_strerror(r));
    uv_close((uv_handle_t *)&cl->listener, on_failed_listener_closed);
    return r;
  }
  cl->listening = 1;
  format_addr(cl->addr, sizeof cl->addr, a);
  return 0;
}

static void add_seed_peers(mr_cluster *cl) {
  mr_config *cfg = &cl->srv->cfg;
  for (int i = 0; i < cfg->npeers; i++) {
    char addr[300];
    format_addr(addr, sizeof addr, &cfg->peers[i]);
    if (strcmp(addr, cl->addr) != 0 && !peer_find_addr(cl, addr, strlen(addr)))
      peer_add(cl, addr, strlen(addr), "");
  }
}

int mr_cluster_start(mr_server *srv, mr_cluster_deliver_cb deliver, void *ud) {
  mr_cluster *cl = calloc(1, sizeof *cl);
  if (!cl)
    return MR_ENOMEM;
  cl->srv = srv;
  cl->deliver = deliver;
  cl->deliver_ud = ud;
  snprintf(cl->name, sizeof cl->name, "%s", srv->node_name);
  strcpy(cl->addr, "-");
  if (srv->cfg.has_cluster_listen) {
    int r = listen_links(cl);
    if (r != 0)
      return r;
  }
  size_t max_frame = srv->cfg.max_message + FRAME_HEADROOM;
  size_t max_queue = 64u << 20;
  if (max_queue < 4 * max_frame)
    max_queue = 4 * max_frame;
  mr_link_env_init(&cl->links, srv, &link_events, max_frame, max_queue,
                   sizeof(session));
  cl->links.data = cl;
  srand((unsigned)uv_hrtime());
  srv->cluster = cl;
  if (srv->presence) {
    mr_presence_set_node(srv->presence, cl->name);
    mr_presence_set_sender(srv->presence, send_presence_batch, cl);
  }
  add_seed_peers(cl);
  mr_info("cluster: node %s, links on %s, %d seed peer(s)", cl->name,
          cl->listening ? cl->addr : "(dial only)", srv->cfg.npeers);
  return 0;
}

static void on_peer_timer_closed(uv_handle_t *h) { free(h->data); }

void mr_cluster_close(mr_cluster *cl) {
  if (cl->closing)
    return;
  cl->closing = 1;
  mr_link_env_close(&cl->links);
  for (peer *p = cl->peers, *next; p; p = next) {
    next = p->next;
    uv_close((uv_handle_t *)&p->timer, on_peer_timer_closed);
  }
  cl->peers = NULL;
  if (cl->listening)
    uv_close((uv_handle_t *)&cl->listener, NULL);
}

void mr_cluster_free(mr_cluster *cl) {
  for (int i = 0; i < cl->ncookie_logged; i++)
    free(cl->cookie_logged[i]);
  free(cl);
}
