#include "engine_redis.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <openssl/rand.h>
#include <uthash.h>

#include "context.h"
#include "error.h"
#include "log.h"
#include "presence.h"
#include "redis_proto.h"

/* A room this node wants to hear, and where its subscription stands. An
 * UNSUBSCRIBE whose reply has not come yet must not be followed by a
 * SUBSCRIBE of the same channel: hiredis drops its callback for the
 * channel when that reply arrives, and would drop the new subscription's
 * messages with it. So a room wanted again while unsubscribing is
 * subscribed when the reply comes. */
enum { CHAN_NONE, CHAN_SUBSCRIBED, CHAN_UNSUBSCRIBING };

typedef struct chan {
  UT_hash_handle hh;
  int want;  /* local members in the room */
  int state; /* CHAN_* */
  size_t len;
  char room[];
} chan;

/* Another node, as last heard from. */
typedef struct node {
  UT_hash_handle hh;
  uint64_t last_heard; /* loop time, ms */
  /* The connection (e->conn_gen) in which this node's full state last came
   * live on the presence channel: its stored key, read later, is older. */
  uint64_t live_gen;
  char name[MR_WIRE_MAX_NAME + 1];
} node;

struct mr_engine {
  mr_server *srv;
  mr_engine_deliver_cb deliver;
  void *deliver_ud;
  char name[MR_WIRE_MAX_NAME + 1];
  size_t name_len;
  uint64_t instance; /* drawn at start: tells our messages from a twin's */
  char ip[INET6_ADDRSTRLEN];
  char where[300]; /* host:port for the log */
  redisAsyncContext *pub, *sub;
  int pub_ready, sub_ready; /* authenticated, selected, answered PING */
  int up;                   /* both ready */
  /* Redis confirmed the SUBSCRIBE to PREFIX:presence: only then is HELLO
   * sent, or the full states it asks for could pass before we listen. */
  int pchan_subscribed;
  uint64_t conn_gen; /* counts the times both connections came up */
  int was_up;        /* up at least once: the next up is a reconnect */
  uv_timer_t tick;   /* every second: refresh, liveness */
  uv_timer_t retry;  /* the backoff, then the close deadline */
  unsigned backoff;
  uint64_t up_since, next_refresh, self_heard;
  chan *chans;
  node *nodes;
  size_t max_queue, max_frame;
  mr_wbuf scratch; /* envelopes are built here */
  mr_wbuf pchan;   /* PREFIX:presence */
  mr_wbuf key;     /* PREFIX:node:NAME */
  int live;        /* the connections of one dial exist (some may be gone) */
  uint64_t dialed_at;
  int closing;
  int twin_logged;
};

static mr_log_limit dial_limit = MR_LOG_LIMIT_INIT("Redis connection errors");
static mr_log_limit drop_limit =
    MR_LOG_LIMIT_INIT("broadcasts dropped by the Redis engine");
static mr_log_limit bad_limit =
    MR_LOG_LIMIT_INIT("malformed messages from Redis");

static uint64_t now_ms(mr_engine *e) { return uv_now(e->srv->loop); }

/* ---- hiredis on libuv ----------------------------------------------------
 *
 * Our own adapter rather than hiredis/adapters/libuv.h: the one of hiredis
 * 0.14 returns without a word when the poll reports an error, which is
 * what a refused connect looks like to libuv, so the context would wait
 * forever. Here an error is handed to hiredis as readiness, and hiredis
 * reads the socket's error itself. */

typedef struct {
  redisAsyncContext *ac; /* NULL once hiredis let go of it */
  uv_poll_t poll;
  int events;
} poller;

static void on_poll(uv_poll_t *h, int status, int events) {
  poller *p = h->data;
  int ev = status < 0 ? p->events : events;
  if (p->ac && (ev & UV_READABLE))
    redisAsyncHandleRead(p->ac);
  if (p->ac && (ev & UV_WRITABLE))
    redisAsyncHandleWrite(p->ac);
}

static void poll_update(poller *p, int add, int del) {
  p->events = (p->events | add) & ~del;
  if (p->events)
    uv_poll_start(&p->poll, p->events, on_poll);
  else
    uv_poll_stop(&p->poll);
}

static void poll_add_read(void *d) { poll_update(d, UV_READABLE, 0); }
static void poll_del_read(void *d) { poll_update(d, 0, UV_READABLE); }
static void poll_add_write(void *d) { poll_update(d, UV_WRITABLE, 0); }
static void poll_del_write(void *d) { poll_update(d, 0, UV_WRITABLE); }

static void on_poll_closed(uv_handle_t *h) { free(h->data); }

/* hiredis is done with the context (it closes the socket after this). */
static void poll_cleanup(void *d) {
  poller *p = d;
  p->ac = NULL;
  uv_close((uv_handle_t *)&p->poll, on_poll_closed);
}

/* Puts ac on loop. Returns 0, or a negative code (ac untouched). */
static int poll_attach(redisAsyncContext *ac, uv_loop_t *loop) {
  poller *p = calloc(1, sizeof *p);
  if (!p)
    return MR_ENOMEM;
  int r = uv_poll_init(loop, &p->poll, ac->c.fd);
  if (r != 0) {
    free(p);
    return r;
  }
  p->ac = ac;
  p->poll.data = p;
  ac->ev.data = p;
  ac->ev.addRead = poll_add_read;
  ac->ev.delRead = poll_del_read;
  ac->ev.addWrite = poll_add_write;
  ac->ev.delWrite = poll_del_write;
  ac->ev.cleanup = poll_cleanup;
  return 0;
}

static void subscribe_all(mr_engine *e);
static void on_retry(uv_timer_t *t);
static void on_tick(uv_timer_t *t);

/* ---- the connections' life -------------------------------------------- */

static void update_gauge(mr_engine *e) {
  e->srv->stats.engine_connected = (uint64_t)e->up;
}

/* Closes one connection. A connected one is disconnected (after the
 * replies it waits for) and reports through on_disconnect; hiredis frees
 * one still connecting without a callback, so it is forgotten here. */
static void cut(mr_engine *e, redisAsyncContext *ac) {
  if (!ac || (ac->c.flags & REDIS_DISCONNECTING))
    return;
  if (ac->c.flags & REDIS_CONNECTED) {
    redisAsyncDisconnect(ac);
    return;
  }
  if (ac == e->pub)
    e->pub = NULL;
  else
    e->sub = NULL;
  redisAsyncFree(ac);
}

static void all_gone(mr_engine *e);

/* Drops both connections (a failure on one is a failure of the engine);
 * once both are gone the redial is scheduled. */
static void drop_connections(mr_engine *e) {
  cut(e, e->pub);
  cut(e, e->sub);
  if (!e->pub && !e->sub)
    all_gone(e);
}

static void schedule_retry(mr_engine *e) {
  unsigned lo = MR_ENGINE_BACKOFF_MIN_MS, hi = MR_ENGINE_BACKOFF_MAX_MS;
  e->backoff = e->backoff ? e->backoff * 2 : lo;
  if (e->backoff > hi)
    e->backoff = hi;
  /* Jitter spreads the redials of a fleet after Redis restarts. */
  unsigned delay = e->backoff / 2 + (unsigned)rand() % (e->backoff / 2 + 1);
  uv_timer_start(&e->retry, on_retry, delay, 0);
}

/* Both connections are gone: forget the subscriptions and redial (or
 * finish closing). Runs once per dial. */
static void all_gone(mr_engine *e) {
  if (!e->live)
    return;
  e->live = 0;
  /* Subscriptions died with the connection: the wanted ones are made
   * again on reconnect, the others are forgotten. */
  chan *c, *tmp;
  HASH_ITER(hh, e->chans, c, tmp) {
    if (c->want) {
      c->state = CHAN_NONE;
    } else {
      HASH_DEL(e->chans, c);
      free(c);
    }
  }
  e->srv->stats.engine_subscriptions = 0;
  if (e->closing) {
    if (!uv_is_closing((uv_handle_t *)&e->retry))
      uv_close((uv_handle_t *)&e->retry, NULL);
  } else {
    schedule_retry(e);
  }
}

/* One of the connections is gone (hiredis frees it after this returns). */
static void lost(mr_engine *e, const redisAsyncContext *ac, const char *why) {
  if (ac == e->pub) {
    e->pub = NULL;
    e->pub_ready = 0;
  } else if (ac == e->sub) {
    e->sub = NULL;
    e->sub_ready = 0;
    e->pchan_subscribed = 0;
  }
  if (e->closing) {
    if (e->up)
      mr_info("engine: disconnected from Redis at %s", e->where);
    e->up = 0;
    update_gauge(e);
  } else if (e->up) {
    e->up = 0;
    update_gauge(e);
    mr_warn("engine: lost Redis at %s: %s; cross-node broadcasts are dropped "
            "(engine_dropped) until it is back; redialing with backoff",
            e->where, why);
  } else {
    mr_log_limited(&dial_limit, MR_LOG_WARN,
                   "engine: cannot reach Redis at %s: %s; redialing with "
                   "backoff up to %u ms",
                   e->where, why, MR_ENGINE_BACKOFF_MAX_MS);
  }
  drop_connections(e);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  mr_engine *e = ac->data;
  lost(e, ac,
       status == REDIS_OK ? "disconnected"
                          : (ac->errstr[0] ? ac->errstr : "connection lost"));
}

/* Both connections answered: the engine is up. */
static void on_both_ready(mr_engine *e) {
  e->up = 1;
  e->conn_gen++;
  e->backoff = 0;
  e->up_since = e->self_heard = now_ms(e);
  e->next_refresh = 0; /* refresh at once: publish and store our state */
  update_gauge(e);
  if (e->was_up) {
    e->srv->stats.engine_reconnects++;
    mr_info("engine: reconnected to Redis at %s", e->where);
  } else {
    mr_info("engine: connected to Redis at %s (prefix %s, node %s)", e->where,
            e->srv->cfg.redis_prefix, e->name);
  }
  e->was_up = 1;
  /* The tick does the rest at once: HELLO, the full state, the SCAN. */
  uv_timer_start(&e->tick, on_tick, 0, 1000);
}

/* The reply to the PING that follows AUTH and SELECT: an error here is
 * the first of those that failed. */
static void on_ready(redisAsyncContext *ac, void *r, void *privdata) {
  (void)privdata;
  mr_engine *e = ac->data;
  redisReply *reply = r;
  if (!reply)
    return;
  if (reply->type == REDIS_REPLY_ERROR) {
    mr_log_limited(&dial_limit, MR_LOG_ERROR,
                   "engine: Redis at %s refused this node: %s", e->where,
                   reply->str);
    redisAsyncDisconnect(ac);
    return;
  }
  if (ac == e->pub) {
    e->pub_ready = 1;
  } else {
    e->sub_ready = 1;
    subscribe_all(e);
  }
  if (e->pub_ready && e->sub_ready)
    on_both_ready(e);
}

static void on_connect(const redisAsyncContext *cac, int status) {
  redisAsyncContext *ac = (redisAsyncContext *)cac;
  mr_engine *e = ac->data;
  if (status != REDIS_OK) {
    lost(e, ac, ac->errstr[0] ? ac->errstr : "connect failed");
    return;
  }
  const mr_config *cfg = &e->srv->cfg;
  /* Pipelined: the replies to AUTH and SELECT are only looked at through
   * PING's, which fails when either did (NOAUTH, or the error itself). */
  if (cfg->redis_password[0]) {
    if (cfg->redis_url.user[0])
      redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s", cfg->redis_url.user,
                        cfg->redis_password);
    else
      redisAsyncCommand(ac, NULL, NULL, "AUTH %s", cfg->redis_password);
  }
  if (ac == e->pub && cfg->redis_url.db)
    redisAsyncCommand(ac, NULL, NULL, "SELECT %u", cfg->redis_url.db);
  redisAsyncCommand(ac, on_ready, NULL, "PING");
}

static redisAsyncContext *open_context(mr_engine *e) {
  redisAsyncContext *ac = redisAsyncConnect(e->ip, e->srv->cfg.redis_url.port);
  if (!ac)
    return NULL;
  if (ac->err) {
    mr_log_limited(&dial_limit, MR_LOG_WARN,
                   "engine: cannot reach Redis at %s: %s", e->where,
                   ac->errstr);
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = e;
  if (poll_attach(ac, e->srv->loop) != 0) {
    redisAsyncFree(ac);
    return NULL;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  return ac;
}

static void dial(mr_engine *e) {
  if (e->closing || e->live)
    return;
  e->pub = open_context(e);
  e->sub = e->pub ? open_context(e) : NULL;
  if (!e->sub) {
    if (e->pub) {
      redisAsyncFree(e->pub);
      e->pub = NULL;
    }
    schedule_retry(e);
    return;
  }
  e->live = 1;
  e->dialed_at = now_ms(e);
}

/* ---- subscriptions ------------------------------------------------------ */

static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata);

static void subscribe(mr_engine *e, chan *c) {
  mr_wbuf *w = &e->scratch;
  mr_wire_buf_reset(w);
  if (mr_redis_room_channel(w, e->srv->cfg.redis_prefix, c->room, c->len) !=
      0) {
    e->srv->stats.internal_errors++;
    mr_warn("engine: no memory to subscribe to room %.*s",
            (int)(c->len > 64 ? 64 : c->len), c->room);
    return;
  }
  if (redisAsyncCommand(e->sub, on_sub_reply, NULL, "SUBSCRIBE %b", w->data,
                        w->len) == REDIS_OK)
    c->state = CHAN_SUBSCRIBED;
}

static void unsubscribe(mr_engine *e, chan *c) {
  mr_wbuf *w = &e->scratch;
  mr_wire_buf_reset(w);
  if (mr_redis_room_channel(w, e->srv->cfg.redis_prefix, c->room, c->len) ==
          0 &&
      redisAsyncCommand(e->sub, NULL, NULL, "UNSUBSCRIBE %b", w->data,
                        w->len) == REDIS_OK)
    c->state = CHAN_UNSUBSCRIBING;
}

static void subscribe_all(mr_engine *e) {
  redisAsyncCommand(e->sub, on_sub_reply, NULL, "SUBSCRIBE %b", e->pchan.data,
                    e->pchan.len);
  chan *c, *tmp;
  HASH_ITER(hh, e->chans, c, tmp) {
    if (c->want && c->state == CHAN_NONE)
      subscribe(e, c);
  }
}

void mr_engine_interest(mr_engine *e, const char *room, size_t len,
                        int created) {
  chan *c = NULL;
  HASH_FIND(hh, e->chans, room, len, c);
  if (created) {
    if (!c) {
      if (!(c = calloc(1, sizeof *c + len))) {
        e->srv->stats.internal_errors++;
        mr_warn("engine: no memory to subscribe to room %.*s",
                (int)(len > 64 ? 64 : len), room);
        return;
      }
      memcpy(c->room, room, len);
      c->len = len;
      HASH_ADD(hh, e->chans, room, len, c);
    }
    c->want = 1;
    if (e->sub_ready && c->state == CHAN_NONE)
      subscribe(e, c);
    return;
  }
  if (!c)
    return;
  c->want = 0;
  if (e->sub_ready && c->state == CHAN_SUBSCRIBED)
    unsubscribe(e, c);
  else if (c->state == CHAN_NONE) {
    HASH_DEL(e->chans, c);
    free(c);
  }
}

/* ---- what arrives ------------------------------------------------------- */

static void malformed(mr_engine *e, const char *what, int err) {
  e->srv->stats.engine_malformed++;
  mr_log_limited(&bad_limit, MR_LOG_WARN,
                 "engine: a malformed %s from Redis was dropped: %s", what,
                 mr_strerror(err));
}

/* Notes that node (a checked name) was heard now. */
static node *heard(mr_engine *e, const char *name, size_t len) {
  node *n = NULL;
  HASH_FIND(hh, e->nodes, name, len, n);
  if (!n) {
    if (!(n = calloc(1, sizeof *n))) {
      e->srv->stats.internal_errors++;
      return NULL;
    }
    memcpy(n->name, name, len);
    HASH_ADD(hh, e->nodes, name[0], len, n);
    mr_info("engine: node %s is up", n->name);
  }
  n->last_heard = now_ms(e);
  return n;
}

static void node_gone(mr_engine *e, node *n, const char *why) {
  mr_info("engine: node %s is gone (%s)", n->name, why);
  if (e->srv->presence)
    mr_presence_node_down(e->srv->presence, n->name);
  HASH_DEL(e->nodes, n);
  free(n);
}

static void publish_full(mr_engine *e, int store);

/* Applies the COUNTS and PRESENCE frames of a STATE body from n. Returns 1
 * when it held a full state (a frame marked SYNC_LAST), else 0. */
static int apply_state(mr_engine *e, node *n, const mr_redis_msg *m) {
  const uint8_t *pos = m->body;
  size_t left = m->body_len;
  mr_wire_msg fm;
  int r;
  int full = 0;
  /* mr_presence_on_frame counts the frames in cluster_*_in. */
  while ((r = mr_redis_state_next(&pos, &left, &fm)) == 1) {
    if (fm.state.flags & MR_WIRE_SYNC_LAST)
      full = 1;
    if (e->srv->presence)
      mr_presence_on_frame(e->srv->presence, n->name, &fm);
  }
  if (r < 0)
    malformed(e, "presence state", r);
  return full;
}

/* Whose an envelope is. */
enum { FROM_OTHER, FROM_US, FROM_TWIN, FROM_NOWHERE };

/* Decodes an envelope into m and sorts out whose it is: another node's,
 * ours (this instance's: dropped, it was delivered here already), a twin's
 * (another process with our name: its room messages are delivered, since
 * a publisher that is not a node may well use any name, but its presence
 * would clash with ours and is ignored), or malformed (counted). */
static int decode_from(mr_engine *e, const uint8_t *data, size_t len,
                       mr_redis_msg *m) {
  int r = mr_redis_decode(data, len, e->max_frame, m);
  if (r != 0) {
    malformed(e, "message", r);
    return FROM_NOWHERE;
  }
  if (m->origin_len != e->name_len ||
      memcmp(m->origin, e->name, e->name_len) != 0)
    return FROM_OTHER;
  if (m->instance == e->instance) {
    if (m->kind == MR_REDIS_HEARTBEAT)
      e->self_heard = now_ms(e);
    return FROM_US;
  }
  if (m->kind != MR_REDIS_ROOM && !e->twin_logged) {
    e->twin_logged = 1;
    mr_error("engine: another process publishes presence as node %s on "
             "this Redis and prefix; it is ignored: give every node its own "
             "--node",
             e->name);
  }
  return FROM_TWIN;
}

static void on_message(mr_engine *e, const char *ch, size_t ch_len,
                       const uint8_t *data, size_t len) {
  mr_redis_msg m;
  int from = decode_from(e, data, len, &m);
  if (from == FROM_NOWHERE || from == FROM_US)
    return;
  int presence =
      ch_len == e->pchan.len && memcmp(ch, e->pchan.data, ch_len) == 0;
  if (!presence) {
    /* A room's channel carries that room's broadcasts only. */
    size_t plen = strlen(e->srv->cfg.redis_prefix) + 6;
    const mr_wire_msg *rm = &m.room;
    if (m.kind != MR_REDIS_ROOM || ch_len < plen ||
        rm->room.room_len != ch_len - plen ||
        memcmp(rm->room.room, ch + plen, ch_len - plen) != 0) {
      malformed(e, "room message", MR_EPROTO);
      return;
    }
    /* A room message keeps a known node alive, but makes no node of its
     * sender: a backend publishing into rooms is not a peer. */
    node *n = NULL;
    if (from == FROM_OTHER)
      HASH_FIND(hh, e->nodes, m.origin, m.origin_len, n);
    if (n)
      n->last_heard = now_ms(e);
    e->srv->stats.engine_received++;
    e->deliver(e->deliver_ud, rm->room.room, rm->room.room_len, rm->room.data,
               rm->room.data_len, rm->room.binary);
    return;
  }
  if (from == FROM_TWIN)
    return;
  node *n = heard(e, m.origin, m.origin_len);
  if (!n)
    return;
  switch (m.kind) {
  case MR_REDIS_STATE:
    if (apply_state(e, n, &m))
      n->live_gen = e->conn_gen;
    break;
  case MR_REDIS_HELLO:
    /* A node that just (re)connected: it gets our state now rather than
     * wait for what it read from the node keys to be corrected. */
    publish_full(e, 0);
    break;
  case MR_REDIS_BYE:
    node_gone(e, n, "it said goodbye");
    break;
  default:
    break;
  }
}

/* Every reply on the subscribing connection: subscribe and unsubscribe
 * confirmations, and messages. */
static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata) {
  (void)privdata;
  mr_engine *e = ac->data;
  redisReply *reply = r;
  if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_STRING)
    return;
  const char *type = reply->element[0]->str;
  const char *ch = reply->element[1]->str;
  size_t ch_len = reply->element[1]->len;
  if (strcasecmp(type, "message") == 0) {
    if (reply->element[2]->type == REDIS_REPLY_STRING)
      on_message(e, ch, ch_len, (const uint8_t *)reply->element[2]->str,
                 reply->element[2]->len);
    return;
  }
  if (reply->element[2]->type == REDIS_REPLY_INTEGER)
    /* Redis counts PREFIX:presence too, which is subscribed first and for
     * as long as the connection lasts: the gauge counts rooms. */
    e->srv->stats.engine_subscriptions =
        reply->element[2]->integer > 1
            ? (uint64_t)reply->element[2]->integer - 1
            : 0;
  if (strcasecmp(type, "subscribe") == 0 && ch_len == e->pchan.len &&
      memcmp(ch, e->pchan.data, ch_len) == 0) {
    e->pchan_subscribed = 1;
    if (e->up && e->next_refresh == 0)
      uv_timer_start(&e->tick, on_tick, 0, 1000); /* HELLO now */
    return;
  }
  if (strcasecmp(type, "unsubscribe") != 0)
    return;
  size_t plen = strlen(e->srv->cfg.redis_prefix);
  if (ch_len < plen + 6)
    return;
  chan *c = NULL;
  HASH_FIND(hh, e->chans, ch + plen + 6, ch_len - plen - 6, c);
  if (!c || c->state != CHAN_UNSUBSCRIBING)
    return;
  if (c->want) {
    subscribe(e, c);
  } else {
    HASH_DEL(e->chans, c);
    free(c);
  }
}

/* ---- what goes out ------------------------------------------------------ */

/* Publishes e->scratch on channel. Returns 0, or MR_EAGAIN when Redis is
 * unreachable or holds too much unsent (nothing published). */
static int publish(mr_engine *e, const void *channel, size_t channel_len) {
  if (!e->up)
    return MR_EAGAIN;
  if (sdslen(e->pub->c.obuf) + e->scratch.len > e->max_queue)
    return MR_ETOOBIG;
  if (redisAsyncCommand(e->pub, NULL, NULL, "PUBLISH %b %b", channel,
                        channel_len, e->scratch.data,
                        e->scratch.len) != REDIS_OK)
    return MR_EAGAIN;
  e->srv->stats.engine_published++;
  return 0;
}

void mr_engine_forward(mr_engine *e, const char *room, size_t room_len,
                       const void *msg, size_t len, int binary) {
  mr_wbuf *w = &e->scratch;
  mr_wire_buf_reset(w);
  mr_wbuf ch;
  mr_wire_buf_init(&ch);
  int r = mr_redis_encode_room(w, e->name, e->name_len, e->instance, binary,
                               room, room_len, msg, len);
  if (r == 0)
    r = mr_redis_room_channel(&ch, e->srv->cfg.redis_prefix, room, room_len);
  if (r == 0)
    r = publish(e, ch.data, ch.len);
  mr_wire_buf_free(&ch);
  if (r == 0)
    return;
  e->srv->stats.engine_dropped++;
  mr_log_limited(
      &drop_limit, MR_LOG_WARN,
      "engine: a broadcast to room %.*s was not sent to other nodes: %s",
      (int)(room_len > 64 ? 64 : room_len), room,
      r == MR_EAGAIN    ? "Redis is unreachable"
      : r == MR_ETOOBIG ? "Redis is not taking messages fast enough"
                        : mr_strerror(r));
}

/* The presence batch's sender: one STATE envelope on PREFIX:presence. */
static void send_presence_batch(void *ud, const mr_wbuf *w, size_t counts,
                                size_t presence) {
  mr_engine *e = ud;
  /* While Redis is away the batch is not kept: the full state goes out
   * when it is back. */
  if (!e->up)
    return;
  mr_wbuf *s = &e->scratch;
  mr_wire_buf_reset(s);
  int r = mr_redis_encode_header(s, MR_REDIS_STATE, e->name, e->name_len,
                                 e->instance);
  if (r == 0 && (r = mr_wire_buf_reserve(s, w->len)) == 0) {
    memcpy(s->data + s->len, w->data, w->len);
    s->len += w->len;
  }
  if (r == 0)
    r = publish(e, e->pchan.data, e->pchan.len);
  if (r == 0) {
    e->srv->stats.cluster_counts_out += counts;
    e->srv->stats.cluster_presence_out += presence;
  } else {
    e->srv->stats.engine_dropped++;
    mr_log_limited(&drop_limit, MR_LOG_WARN,
                   "engine: a presence batch was not published: %s",
                   mr_strerror(r));
  }
}

/* Publishes this node's full state, and stores it under the node key with
 * the TTL when store is set. */
static void publish_full(mr_engine *e, int store) {
  if (!e->up || !e->srv->presence)
    return;
  mr_wbuf *s = &e->scratch;
  mr_wire_buf_reset(s);
  size_t counts = 0, presence = 0;
  int r = mr_redis_encode_header(s, MR_REDIS_STATE, e->name, e->name_len,
                                 e->instance);
  if (r == 0)
    r = mr_presence_encode_full(e->srv->presence, s, &counts, &presence);
  if (r == 0)
    r = publish(e, e->pchan.data, e->pchan.len);
  if (r == 0 && store)
    redisAsyncCommand(e->pub, NULL, NULL, "SET %b %b PX %u", e->key.data,
                      e->key.len, s->data, s->len, MR_ENGINE_TTL_MS);
  if (r == 0) {
    e->srv->stats.cluster_counts_out += counts;
    e->srv->stats.cluster_presence_out += presence;
  } else {
    e->srv->stats.engine_dropped++;
    mr_log_limited(&drop_limit, MR_LOG_WARN,
                   "engine: this node's presence was not published: %s",
                   mr_strerror(r));
  }
}

static void publish_empty(mr_engine *e, int kind) {
  mr_wire_buf_reset(&e->scratch);
  if (mr_redis_encode_header(&e->scratch, kind, e->name, e->name_len,
                             e->instance) == 0)
    publish(e, e->pchan.data, e->pchan.len);
}

/* ---- reading the other nodes' keys at (re)connect ---------------------- */

static void on_get(redisAsyncContext *ac, void *r, void *privdata) {
  (void)privdata;
  mr_engine *e = ac->data;
  redisReply *reply = r;
  if (!reply || reply->type != REDIS_REPLY_STRING)
    return; /* gone since the SCAN, or the connection closed */
  mr_redis_msg m;
  if (decode_from(e, (const uint8_t *)reply->str, reply->len, &m) !=
          FROM_OTHER ||
      m.kind != MR_REDIS_STATE)
    return;
  node *n = heard(e, m.origin, m.origin_len);
  /* A key is as old as the node's last refresh (up to 5 s): a full state
   * that came live since we connected is newer, and stays. */
  if (n && n->live_gen != e->conn_gen)
    apply_state(e, n, &m);
}

static void scan_page(mr_engine *e, const char *cursor);

static void on_scan(redisAsyncContext *ac, void *r, void *privdata) {
  (void)privdata;
  mr_engine *e = ac->data;
  redisReply *reply = r;
  if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_ARRAY) {
    if (reply)
      mr_warn("engine: SCAN of the node keys failed%s%s",
              reply->type == REDIS_REPLY_ERROR ? ": " : "",
              reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    return;
  }
  redisReply *keys = reply->element[1];
  for (size_t i = 0; i < keys->elements; i++) {
    redisReply *k = keys->element[i];
    if (k->type != REDIS_REPLY_STRING ||
        (k->len == e->key.len && memcmp(k->str, e->key.data, k->len) == 0))
      continue;
    redisAsyncCommand(ac, on_get, NULL, "GET %b", k->str, k->len);
  }
  if (strcmp(reply->element[0]->str, "0") != 0)
    scan_page(e, reply->element[0]->str);
}

static void scan_page(mr_engine *e, const char *cursor) {
  mr_wbuf pat;
  mr_wire_buf_init(&pat);
  if (mr_redis_node_pattern(&pat, e->srv->cfg.redis_prefix) == 0)
    redisAsyncCommand(e->pub, on_scan, NULL, "SCAN %s MATCH %b COUNT 100",
                      cursor, pat.data, pat.len);
  mr_wire_buf_free(&pat);
}

/* ---- the tick ----------------------------------------------------------- */

static void on_tick(uv_timer_t *t) {
  mr_engine *e = t->data;
  uint64_t now = now_ms(e);
  node *n, *tmp;
  HASH_ITER(hh, e->nodes, n, tmp) {
    if (now - n->last_heard > MR_ENGINE_TTL_MS)
      node_gone(e, n, "silent for 15 s");
  }
  /* A connect that no one answers (a dropped SYN) would wait for the
   * kernel's minutes; it gets MR_ENGINE_CONNECT_MS. */
  if (!e->up && e->live && now - e->dialed_at > MR_ENGINE_CONNECT_MS) {
    mr_log_limited(&dial_limit, MR_LOG_WARN,
                   "engine: Redis at %s did not answer within %u ms; "
                   "redialing with backoff",
                   e->where, MR_ENGINE_CONNECT_MS);
    drop_connections(e);
  }
  if (!e->up)
    return;
  if (e->next_refresh == 0) {
    /* Just (re)connected: once we listen on the presence channel, say so
     * (every node answers HELLO with its full state), publish and store
     * our state, and read every other node's key. */
    if (!e->pchan_subscribed)
      return;
    publish_empty(e, MR_REDIS_HELLO);
    publish_full(e, 1);
    scan_page(e, "0");
    e->next_refresh = now + MR_ENGINE_REFRESH_MS;
    return;
  }
  if (now >= e->next_refresh) {
    publish_empty(e, MR_REDIS_HEARTBEAT);
    publish_full(e, 1);
    e->next_refresh = now + MR_ENGINE_REFRESH_MS;
  }
  /* Our own heartbeats come back through the subscription; when they stop,
   * one of the connections is dead without knowing it. */
  if (now - e->self_heard > MR_ENGINE_TTL_MS) {
    mr_warn("engine: this node's heartbeats have not come back from Redis "
            "at %s for %u s; reconnecting",
            e->where, MR_ENGINE_TTL_MS / 1000);
    drop_connections(e);
  }
}

static void on_retry(uv_timer_t *t) {
  mr_engine *e = t->data;
  /* (the close deadline below) */
  if (!e->closing) {
    dial(e);
    return;
  }
  /* The close deadline: what has not flushed by now is cut off. */
  redisAsyncContext *pub = e->pub, *sub = e->sub;
  e->pub = e->sub = NULL;
  e->live = 0;
  if (pub)
    redisAsyncFree(pub);
  if (sub)
    redisAsyncFree(sub);
  if (!uv_is_closing((uv_handle_t *)&e->retry))
    uv_close((uv_handle_t *)&e->retry, NULL);
}

/* ---- start and stop ----------------------------------------------------- */

/* Resolves the host once, at start: hiredis resolves names with a blocking
 * getaddrinfo on every dial, which the loop must not wait for. */
static int resolve(mr_engine *e) {
  const char *host = e->srv->cfg.redis_url.host;
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  int r = getaddrinfo(host, NULL, &hints, &res);
  if (r != 0 || !res) {
    mr_error("engine: cannot resolve the Redis host %s: %s", host,
             gai_strerror(r));
    return MR_EINVAL;
  }
  const void *a =
      res->ai_family == AF_INET6
          ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
          : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
  inet_ntop(res->ai_family, a, e->ip, sizeof e->ip);
  freeaddrinfo(res);
  return 0;
}

/* Checks the password and DB once, synchronously, so that a wrong one is
 * an error at start and not a node that runs alone. Returns 0 (an
 * unreachable Redis included: the engine keeps dialing) or MR_EAUTH. */
static int check_redis(mr_engine *e) {
  const mr_config *cfg = &e->srv->cfg;
  struct timeval tv = {2, 0};
  redisContext *c = redisConnectWithTimeout(e->ip, cfg->redis_url.port, tv);
  if (!c || c->err) {
    mr_warn("engine: Redis at %s is not reachable now (%s); starting "
            "anyway and dialing with backoff",
            e->where, c ? c->errstr : "no memory");
    redisFree(c);
    return 0;
  }
  redisSetTimeout(c, tv);
  int rc = 0;
  const char *step = "PING";
  redisReply *reply = NULL;
  if (cfg->redis_password[0]) {
    step = "AUTH";
    reply = cfg->redis_url.user[0]
                ? redisCommand(c, "AUTH %s %s", cfg->redis_url.user,
                               cfg->redis_password)
                : redisCommand(c, "AUTH %s", cfg->redis_password);
  } else {
    reply = redisCommand(c, "PING");
  }
  if (reply && reply->type != REDIS_REPLY_ERROR && cfg->redis_url.db) {
    freeReplyObject(reply);
    step = "SELECT";
    reply = redisCommand(c, "SELECT %u", cfg->redis_url.db);
  }
  if (!reply) {
    mr_warn("engine: Redis at %s did not answer %s (%s); starting anyway "
            "and dialing with backoff",
            e->where, step, c->errstr);
  } else if (reply->type == REDIS_REPLY_ERROR) {
    const char *hint =
        strcmp(step, "SELECT") == 0 ? "check the /DB of --engine"
        : strcmp(step, "AUTH") == 0
            ? "check --redis-password, MOONROOM_REDIS_PASSWORD or the "
              "password in --engine"
            : "Redis wants a password: give --redis-password or "
              "MOONROOM_REDIS_PASSWORD";
    mr_error("engine: Redis at %s refused %s: %s; %s", e->where, step,
             reply->str, hint);
    rc = MR_EAUTH;
  }
  freeReplyObject(reply);
  redisFree(c);
  return rc;
}

int mr_engine_start(mr_server *srv, mr_engine_deliver_cb deliver, void *ud) {
  mr_engine *e = calloc(1, sizeof *e);
  if (!e)
    return MR_ENOMEM;
  e->srv = srv;
  e->deliver = deliver;
  e->deliver_ud = ud;
  snprintf(e->name, sizeof e->name, "%s", srv->node_name);
  e->name_len = strlen(e->name);
  const mr_redis_url *u = &srv->cfg.redis_url;
  if (strchr(u->host, ':'))
    snprintf(e->where, sizeof e->where, "[%s]:%d", u->host, u->port);
  else
    snprintf(e->where, sizeof e->where, "%s:%d", u->host, u->port);
  mr_wire_buf_init(&e->scratch);
  mr_wire_buf_init(&e->pchan);
  mr_wire_buf_init(&e->key);
  e->max_frame = srv->cfg.max_message + 65536 + 64;
  e->max_queue = MR_ENGINE_MAX_QUEUE;
  if (e->max_queue < 4 * srv->cfg.max_message)
    e->max_queue = 4 * srv->cfg.max_message;
  int r = 0;
  if (RAND_bytes((unsigned char *)&e->instance, sizeof e->instance) != 1)
    r = MR_EAUTH;
  if (r == 0 &&
      (mr_redis_presence_channel(&e->pchan, srv->cfg.redis_prefix) != 0 ||
       mr_redis_node_key(&e->key, srv->cfg.redis_prefix, e->name,
                         e->name_len) != 0))
    r = MR_ENOMEM;
  if (r == 0 && mr_redis_encode_header(&e->scratch, MR_REDIS_HEARTBEAT, e->name,
                                       e->name_len, 0) != 0) {
    mr_error("engine: the node name %s cannot be sent (1..255 bytes of "
             "UTF-8 without control characters)",
             e->name);
    r = MR_EINVAL;
  }
  if (r == 0)
    r = resolve(e);
  if (r == 0)
    r = check_redis(e);
  if (r != 0) {
    mr_engine_free(e);
    return r;
  }
  srand((unsigned)uv_hrtime());
  uv_timer_init(srv->loop, &e->tick);
  uv_timer_init(srv->loop, &e->retry);
  e->tick.data = e->retry.data = e;
  uv_timer_start(&e->tick, on_tick, 1000, 1000);
  srv->engine = e;
  if (srv->presence) {
    mr_presence_set_node(srv->presence, e->name);
    mr_presence_set_sender(srv->presence, send_presence_batch, e);
  }
  mr_info("engine: Redis at %s, prefix %s, node %s", e->where,
          srv->cfg.redis_prefix, e->name);
  dial(e);
  return 0;
}

size_t mr_engine_peers(const mr_engine *e, const char **names, size_t max) {
  size_t n = 0;
  for (const node *p = e->nodes; p && n < max; p = p->hh.next)
    names[n++] = p->name;
  return n;
}

int mr_engine_connected(const mr_engine *e) { return e->up; }

int mr_engine_was_connected(const mr_engine *e) { return e->was_up; }

void mr_engine_close(mr_engine *e) {
  if (e->closing)
    return;
  if (e->up) {
    publish_empty(e, MR_REDIS_BYE);
    redisAsyncCommand(e->pub, NULL, NULL, "DEL %b", e->key.data, e->key.len);
  }
  e->closing = 1;
  uv_close((uv_handle_t *)&e->tick, NULL);
  if (!e->pub && !e->sub) {
    uv_close((uv_handle_t *)&e->retry, NULL);
    return;
  }
  /* hiredis disconnects once the replies to what was sent have come. */
  drop_connections(e);
  if (!uv_is_closing((uv_handle_t *)&e->retry))
    uv_timer_start(&e->retry, on_retry, 1000, 0);
}

void mr_engine_free(mr_engine *e) {
  if (!e)
    return;
  chan *c, *ctmp;
  HASH_ITER(hh, e->chans, c, ctmp) {
    HASH_DEL(e->chans, c);
    free(c);
  }
  node *n, *ntmp;
  HASH_ITER(hh, e->nodes, n, ntmp) {
    HASH_DEL(e->nodes, n);
    free(n);
  }
  mr_wire_buf_free(&e->scratch);
  mr_wire_buf_free(&e->pchan);
  mr_wire_buf_free(&e->key);
  free(e);
}
