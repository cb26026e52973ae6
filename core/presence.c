#include "presence.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "error.h"
#include "log.h"
#include "utf8.h"

/* Room names longer than this are cut in log lines. */
#define LOG_ROOM 64

/* One tracked connection in one room of one node. meta is its own block,
 * owned by the entry. */
typedef struct entry {
  UT_hash_handle hh; /* in its nroom's entries, keyed by id */
  uint64_t id;
  struct nroom *room;
  uint32_t gen; /* the node's presence generation that last set it */
  uint8_t *meta;
  size_t meta_len;
  /* This node's entries only: the other rooms the same connection is
   * tracked in, so that its close untracks it everywhere. */
  struct entry *conn_next;
} entry;

/* One node's state in one room: its member count (other nodes only) and
 * its entries. Freed as soon as both are empty. */
typedef struct nroom {
  UT_hash_handle hh; /* in its node's rooms, keyed by name */
  struct node *node;
  uint32_t count;
  uint32_t count_gen; /* the node's counts generation that last set it */
  entry *entries;
  size_t len;
  char name[]; /* not NUL-terminated */
} nroom;

typedef struct node {
  UT_hash_handle hh; /* in p->nodes, keyed by name */
  nroom *rooms;
  uint32_t counts_gen, presence_gen;
  size_t len;
  char name[MR_WIRE_MAX_NAME + 1];
} node;

/* The sum of the other nodes' counts in one room. */
typedef struct total {
  UT_hash_handle hh;
  uint64_t members;
  size_t len;
  char name[];
} total;

/* The first connection entry of a local connection. */
typedef struct conn_index {
  UT_hash_handle hh;
  uint64_t id;
  entry *first;
} conn_index;

/* An entry touched in this batch and what it was before the first touch;
 * key is "node\0" and the id's 8 bytes. */
typedef struct touch {
  UT_hash_handle hh;
  int had;
  uint8_t *meta; /* the meta it had (owned), when had */
  size_t meta_len;
  uint64_t id;
  size_t node_len;
  size_t key_len;
  char key[];
} touch;

/* A room with changes in this batch: its touched entries. */
typedef struct evroom {
  UT_hash_handle hh;
  touch *touched;
  size_t len;
  char name[];
} evroom;

/* A room whose local count or local entry changed since the last flush:
 * what the next batch sends. ids holds the touched local ids. */
typedef struct dirty {
  UT_hash_handle hh;
  int count; /* the member count changed */
  uint64_t *ids;
  size_t nids, cap;
  size_t len;
  char name[];
} dirty;

struct mr_presence {
  mr_server *srv;
  node *nodes;
  node *self;
  total *totals;
  conn_index *conns;
  evroom *events;
  dirty *dirty;
  size_t nlocal, nremote;
  mr_presence_events_cb on_events;
  void *events_ud;
  mr_presence_send_cb send;
  void *send_ud;
};

/* Allocation failures in here lose a change, never the state's shape:
 * counted and logged once per failure. */
static void nomem(mr_presence *p, const char *what) {
  p->srv->stats.internal_errors++;
  mr_warn("presence: %s dropped: out of memory", what);
}

static node *node_get(mr_presence *p, const char *name, size_t len,
                      int create) {
  node *n = NULL;
  HASH_FIND(hh, p->nodes, name, len, n);
  if (n || !create)
    return n;
  if (len > MR_WIRE_MAX_NAME || !(n = calloc(1, sizeof *n)))
    return NULL;
  memcpy(n->name, name, len);
  n->len = len;
  HASH_ADD_KEYPTR(hh, p->nodes, n->name, n->len, n);
  return n;
}

static nroom *nroom_get(node *n, const char *room, size_t len, int create) {
  nroom *r = NULL;
  HASH_FIND(hh, n->rooms, room, len, r);
  if (r || !create)
    return r;
  if (!(r = calloc(1, sizeof *r + len)))
    return NULL;
  r->node = n;
  r->len = len;
  memcpy(r->name, room, len);
  HASH_ADD_KEYPTR(hh, n->rooms, r->name, r->len, r);
  return r;
}

static void nroom_maybe_free(nroom *r) {
  if (r->count || r->entries)
    return;
  HASH_DEL(r->node->rooms, r);
  free(r);
}

/* Adds delta to the other nodes' total for room. */
static void total_add(mr_presence *p, const char *room, size_t len,
                      int64_t delta) {
  total *t = NULL;
  HASH_FIND(hh, p->totals, room, len, t);
  if (!t) {
    if (delta <= 0)
      return;
    if (!(t = calloc(1, sizeof *t + len))) {
      nomem(p, "a cluster count");
      return;
    }
    t->len = len;
    memcpy(t->name, room, len);
    HASH_ADD_KEYPTR(hh, p->totals, t->name, t->len, t);
  }
  t->members = (uint64_t)((int64_t)t->members + delta);
  if (t->members == 0) {
    HASH_DEL(p->totals, t);
    free(t);
  }
}

/* Sets a remote node's count in a room. */
static void set_count(mr_presence *p, nroom *r, uint32_t count) {
  total_add(p, r->name, r->len, (int64_t)count - (int64_t)r->count);
  r->count = count;
}

/* ---- scheduling ---- */

static void schedule(mr_presence *p) {
  mr_server *srv = p->srv;
  if (srv->presence_timer &&
      mr_timers_pending(&srv->timers, srv->presence_timer))
    return;
  uint64_t now = uv_now(srv->loop);
  if (mr_timers_add(&srv->timers, now + MR_PRESENCE_BATCH_MS,
                    &srv->presence_timer) != 0) {
    srv->presence_timer = 0;
    nomem(p, "the presence batch timer");
  }
}

/* ---- what changed in this batch ---- */

/* Remembers what the entry (node, room, id) was before this batch first
 * changed it: call before every change. cur is the entry now, or NULL. */
static void touch_entry(mr_presence *p, const node *n, const char *room,
                        size_t room_len, uint64_t id, const entry *cur) {
  if (!p->on_events)
    return;
  evroom *e = NULL;
  HASH_FIND(hh, p->events, room, room_len, e);
  if (!e) {
    if (!(e = calloc(1, sizeof *e + room_len))) {
      nomem(p, "a presence event");
      return;
    }
    e->len = room_len;
    memcpy(e->name, room, room_len);
    HASH_ADD_KEYPTR(hh, p->events, e->name, e->len, e);
  }
  char key[MR_WIRE_MAX_NAME + 1 + 8];
  size_t klen = n->len + 1 + 8;
  memcpy(key, n->name, n->len);
  key[n->len] = '\0';
  memcpy(key + n->len + 1, &id, 8);
  touch *t = NULL;
  HASH_FIND(hh, e->touched, key, klen, t);
  if (t)
    return; /* the state before the batch is already known */
  if (!(t = calloc(1, sizeof *t + klen))) {
    nomem(p, "a presence event");
    return;
  }
  t->id = id;
  t->node_len = n->len;
  t->key_len = klen;
  memcpy(t->key, key, klen);
  if (cur) {
    t->had = 1;
    t->meta_len = cur->meta_len;
    if (cur->meta_len && !(t->meta = malloc(cur->meta_len))) {
      free(t);
      nomem(p, "a presence event");
      return;
    }
    if (cur->meta_len)
      memcpy(t->meta, cur->meta, cur->meta_len);
  }
  HASH_ADD_KEYPTR(hh, e->touched, t->key, t->key_len, t);
  schedule(p);
}

/* Marks a local room dirty for the next batch: its count, or an entry. */
static void mark_dirty(mr_presence *p, const char *room, size_t len, int count,
                       const uint64_t *id) {
  if (!p->send)
    return;
  dirty *d = NULL;
  HASH_FIND(hh, p->dirty, room, len, d);
  if (!d) {
    if (!(d = calloc(1, sizeof *d + len))) {
      nomem(p, "a presence update");
      return;
    }
    d->len = len;
    memcpy(d->name, room, len);
    HASH_ADD_KEYPTR(hh, p->dirty, d->name, d->len, d);
  }
  if (count)
    d->count = 1;
  if (id) {
    if (d->nids == d->cap) {
      size_t cap = d->cap ? d->cap * 2 : 4;
      uint64_t *ids = realloc(d->ids, cap * sizeof *ids);
      if (!ids) {
        nomem(p, "a presence update");
        return;
      }
      d->ids = ids;
      d->cap = cap;
    }
    d->ids[d->nids++] = *id;
  }
  schedule(p);
}

/* ---- entries ---- */

static entry *entry_find(const nroom *r, uint64_t id) {
  entry *e = NULL;
  if (r)
    HASH_FIND(hh, r->entries, &id, sizeof id, e);
  return e;
}

/* Sets (creates or replaces) the entry id of r to meta. Returns 1 when
 * created, 0 when replaced, MR_ENOMEM. */
static int entry_set(mr_presence *p, nroom *r, uint64_t id, const uint8_t *meta,
                     size_t meta_len, uint32_t gen) {
  entry *e = entry_find(r, id);
  uint8_t *copy = NULL;
  if (meta_len && !(copy = malloc(meta_len)))
    return MR_ENOMEM;
  if (meta_len)
    memcpy(copy, meta, meta_len);
  int created = !e;
  if (!e) {
    if (!(e = calloc(1, sizeof *e))) {
      free(copy);
      return MR_ENOMEM;
    }
    e->id = id;
    e->room = r;
    HASH_ADD(hh, r->entries, id, sizeof e->id, e);
    if (r->node == p->self)
      p->nlocal++;
    else
      p->nremote++;
  }
  free(e->meta);
  e->meta = copy;
  e->meta_len = meta_len;
  e->gen = gen;
  return created;
}

static void entry_del(mr_presence *p, entry *e) {
  nroom *r = e->room;
  HASH_DEL(r->entries, e);
  if (r->node == p->self)
    p->nlocal--;
  else
    p->nremote--;
  free(e->meta);
  free(e);
}

/* ---- this node ---- */

static conn_index *conn_find(mr_presence *p, uint64_t id) {
  conn_index *c = NULL;
  HASH_FIND(hh, p->conns, &id, sizeof id, c);
  return c;
}

/* Takes e out of its connection's list. */
static void conn_unlink(mr_presence *p, entry *e) {
  conn_index *c = conn_find(p, e->id);
  if (!c)
    return;
  for (entry **pp = &c->first; *pp; pp = &(*pp)->conn_next)
    if (*pp == e) {
      *pp = e->conn_next;
      break;
    }
  if (!c->first) {
    HASH_DEL(p->conns, c);
    free(c);
  }
}

static int meta_eq(const uint8_t *a, size_t alen, const uint8_t *b,
                   size_t blen);

int mr_presence_track(mr_presence *p, const char *room, size_t room_len,
                      uint64_t id, const uint8_t *meta, size_t meta_len) {
  nroom *r = nroom_get(p->self, room, room_len, 1);
  if (!r)
    return MR_ENOMEM;
  entry *old = entry_find(r, id);
  /* Tracking again with the same meta (one encoding per table, so equal
   * tables are equal bytes) changes nothing: no batch entry, no frame. */
  if (old && meta_eq(old->meta, old->meta_len, meta, meta_len))
    return 0;
  conn_index *c = NULL;
  if (!old && !(c = conn_find(p, id))) {
    if (!(c = calloc(1, sizeof *c))) {
      nroom_maybe_free(r);
      return MR_ENOMEM;
    }
    c->id = id;
    HASH_ADD(hh, p->conns, id, sizeof c->id, c);
  }
  touch_entry(p, p->self, room, room_len, id, old);
  int rc = entry_set(p, r, id, meta, meta_len, 0);
  if (rc < 0) {
    if (c && !c->first) {
      HASH_DEL(p->conns, c);
      free(c);
    }
    nroom_maybe_free(r);
    return rc;
  }
  if (rc == 1) {
    entry *e = entry_find(r, id);
    e->conn_next = c->first;
    c->first = e;
  }
  mark_dirty(p, room, room_len, 0, &id);
  return rc;
}

static void untrack_entry(mr_presence *p, entry *e) {
  nroom *r = e->room;
  uint64_t id = e->id;
  touch_entry(p, p->self, r->name, r->len, id, e);
  mark_dirty(p, r->name, r->len, 0, &id);
  entry_del(p, e);
  nroom_maybe_free(r);
}

int mr_presence_untrack(mr_presence *p, const char *room, size_t room_len,
                        uint64_t id) {
  entry *e = entry_find(nroom_get(p->self, room, room_len, 0), id);
  if (!e)
    return 0;
  conn_unlink(p, e);
  untrack_entry(p, e);
  return 1;
}

size_t mr_presence_untrack_conn(mr_presence *p, uint64_t id) {
  conn_index *c = conn_find(p, id);
  if (!c)
    return 0;
  HASH_DEL(p->conns, c);
  size_t n = 0;
  for (entry *e = c->first, *next; e; e = next, n++) {
    next = e->conn_next;
    untrack_entry(p, e);
  }
  free(c);
  return n;
}

void mr_presence_room_changed(mr_presence *p, const char *room,
                              size_t room_len) {
  mark_dirty(p, room, room_len, 1, NULL);
}

/* ---- reading ---- */

uint64_t mr_presence_remote_count(const mr_presence *p, const char *room,
                                  size_t room_len) {
  total *t = NULL;
  HASH_FIND(hh, p->totals, room, room_len, t);
  return t ? t->members : 0;
}

static int by_node_id(const void *a, const void *b) {
  const mr_presence_entry *x = a, *y = b;
  size_t n = x->node_len < y->node_len ? x->node_len : y->node_len;
  int c = memcmp(x->node, y->node, n);
  if (c)
    return c;
  if (x->node_len != y->node_len)
    return x->node_len < y->node_len ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

long mr_presence_list(const mr_presence *p, const char *room, size_t room_len,
                      mr_presence_entry **out) {
  size_t total = 0;
  *out = NULL;
  for (node *n = p->nodes; n; n = n->hh.next) {
    nroom *r = nroom_get(n, room, room_len, 0);
    if (r)
      total += HASH_COUNT(r->entries);
  }
  if (!total)
    return 0;
  mr_presence_entry *list = malloc(total * sizeof *list);
  if (!list)
    return MR_ENOMEM;
  size_t i = 0;
  for (node *n = p->nodes; n; n = n->hh.next) {
    nroom *r = nroom_get(n, room, room_len, 0);
    if (!r)
      continue;
    for (entry *e = r->entries; e; e = e->hh.next)
      list[i++] =
          (mr_presence_entry){n->name, n->len, e->id, e->meta, e->meta_len};
  }
  qsort(list, total, sizeof *list, by_node_id);
  *out = list;
  return (long)total;
}

size_t mr_presence_local_entries(const mr_presence *p) { return p->nlocal; }
size_t mr_presence_remote_entries(const mr_presence *p) { return p->nremote; }

/* ---- frames ---- */

/* Whether the wire can name room. Scripts' rooms always can (1..1024 bytes
 * of UTF-8); one that cannot is left out of what is sent, counted and
 * logged, as the cluster does with its interest in it, and the rest of the
 * frames still go out. */
static int sendable(mr_presence *p, const char *what, const char *room,
                    size_t len) {
  int err = 0;
  if (len == 0 || len > MR_WIRE_MAX_ROOM)
    err = MR_EINVAL;
  else if (!mr_utf8_valid((const uint8_t *)room, len))
    err = MR_EUTF8;
  if (!err)
    return 1;
  p->srv->stats.internal_errors++;
  mr_warn("presence: %s for room %.*s%s (%zu bytes) dropped: %s", what,
          (int)(len > LOG_ROOM ? LOG_ROOM : len), room,
          len > LOG_ROOM ? "..." : "", len, mr_strerror(err));
  return 0;
}

/* Frames are built in w, each begun again when the next entry would take
 * it past MR_PRESENCE_FRAME_BUDGET; what is in w so far is handed to
 * the caller. */
typedef struct {
  mr_wbuf *w;
  int presence;   /* PRESENCE, else COUNTS */
  unsigned flags; /* of the first frame (later ones drop SYNC_FIRST) */
  size_t frame;   /* offset of the frame being filled */
  int open;
  size_t frames; /* frames begun */
} builder;

static int b_room(builder *b, size_t entry_len) {
  int r = 0;
  if (b->open && b->w->len - b->frame + entry_len > MR_PRESENCE_FRAME_BUDGET)
    b->open = 0;
  if (!b->open) {
    unsigned flags = b->frames ? b->flags & ~MR_WIRE_SYNC_FIRST : b->flags;
    flags &= ~MR_WIRE_SYNC_LAST;
    r = b->presence ? mr_wire_encode_presence_begin(b->w, flags, &b->frame)
                    : mr_wire_encode_counts_begin(b->w, flags, &b->frame);
    if (r == 0) {
      b->open = 1;
      b->frames++;
    }
  }
  return r;
}

/* Ends a builder: a full state always sends at least one frame, and its
 * last frame says so. */
static int b_end(builder *b) {
  if (!(b->flags & MR_WIRE_SYNC_LAST))
    return 0;
  int r = b->frames ? 0 : b_room(b, 0);
  if (r == 0)
    mr_wire_state_mark_last(b->w, b->frame);
  return r;
}

static int add_count(builder *b, const char *room, size_t len, uint32_t count) {
  int r = b_room(b, 2 + len + 4);
  return r ? r : mr_wire_encode_counts_add(b->w, b->frame, room, len, count);
}

static int add_entry(builder *b, int join, const char *room, size_t len,
                     uint64_t id, const uint8_t *meta, size_t meta_len) {
  int r = b_room(b, 1 + 2 + len + 8 + 4 + meta_len);
  return r ? r
           : mr_wire_encode_presence_add(b->w, b->frame, join, room, len, id,
                                         meta, meta_len);
}

static uint32_t local_count(const mr_presence *p, const char *room,
                            size_t len) {
  mr_room *r = mr_rooms_find(&p->srv->rooms, room, len);
  return r ? r->count : 0;
}

int mr_presence_encode_full(mr_presence *p, mr_wbuf *w, size_t *counts,
                            size_t *presence) {
  unsigned full = MR_WIRE_SYNC_FIRST | MR_WIRE_SYNC_LAST;
  builder c = {w, 0, full, 0, 0, 0};
  int r = 0;
  for (mr_room *room = mr_rooms_first(&p->srv->rooms); room && r == 0;
       room = mr_rooms_next(room))
    if (sendable(p, "the count", room->name, room->name_len))
      r = add_count(&c, room->name, room->name_len, room->count);
  if (r == 0)
    r = b_end(&c);
  builder e = {w, 1, full, 0, 0, 0};
  for (nroom *nr = p->self->rooms; nr && r == 0; nr = nr->hh.next) {
    if (!sendable(p, "the presence", nr->name, nr->len))
      continue;
    for (entry *x = nr->entries; x && r == 0; x = x->hh.next)
      r = add_entry(&e, 1, nr->name, nr->len, x->id, x->meta, x->meta_len);
  }
  if (r == 0)
    r = b_end(&e);
  *counts = c.frames;
  *presence = e.frames;
  return r;
}

/* ---- frames from other nodes ---- */

static void on_counts(mr_presence *p, node *n, const mr_wire_msg *m) {
  unsigned flags = m->state.flags;
  if (flags & MR_WIRE_SYNC_FIRST)
    n->counts_gen++;
  mr_wire_iter it;
  const char *room;
  size_t len;
  uint32_t count;
  mr_wire_iter_init(&it, m);
  while (mr_wire_counts_next(&it, &room, &len, &count) == 1) {
    nroom *r = nroom_get(n, room, len, count != 0);
    if (!r) {
      if (count)
        nomem(p, "a cluster count");
      continue;
    }
    set_count(p, r, count);
    r->count_gen = n->counts_gen;
    nroom_maybe_free(r);
  }
  if (!(flags & MR_WIRE_SYNC_LAST))
    return;
  /* The full state is complete: a room it did not name has no members. */
  for (nroom *r = n->rooms, *next; r; r = next) {
    next = r->hh.next;
    if (r->count && r->count_gen != n->counts_gen) {
      set_count(p, r, 0);
      nroom_maybe_free(r);
    }
  }
}

static void remove_remote(mr_presence *p, node *n, entry *e) {
  nroom *r = e->room;
  touch_entry(p, n, r->name, r->len, e->id, e);
  entry_del(p, e);
}

static void on_presence_frame(mr_presence *p, node *n, const mr_wire_msg *m) {
  unsigned flags = m->state.flags;
  if (flags & MR_WIRE_SYNC_FIRST)
    n->presence_gen++;
  mr_wire_iter it;
  mr_wire_presence_entry x;
  mr_wire_iter_init(&it, m);
  while (mr_wire_presence_next(&it, &x) == 1) {
    nroom *r = nroom_get(n, x.room, x.room_len, x.join);
    entry *e = entry_find(r, x.id);
    if (!x.join) {
      if (e) {
        remove_remote(p, n, e);
        nroom_maybe_free(r);
      }
      continue;
    }
    if (!r) {
      nomem(p, "a presence entry");
      continue;
    }
    if (e && e->meta_len == x.meta_len &&
        memcmp(e->meta, x.meta, x.meta_len) == 0) {
      e->gen = n->presence_gen; /* unchanged: no event */
      continue;
    }
    touch_entry(p, n, x.room, x.room_len, x.id, e);
    if (entry_set(p, r, x.id, x.meta, x.meta_len, n->presence_gen) < 0) {
      nomem(p, "a presence entry");
      nroom_maybe_free(r);
    }
  }
  if (!(flags & MR_WIRE_SYNC_LAST))
    return;
  p->srv->stats.presence_resyncs++;
  /* What the full state did not mention is gone. */
  for (nroom *r = n->rooms, *rnext; r; r = rnext) {
    rnext = r->hh.next;
    for (entry *e = r->entries, *next; e; e = next) {
      next = e->hh.next;
      if (e->gen != n->presence_gen)
        remove_remote(p, n, e);
    }
    nroom_maybe_free(r);
  }
}

void mr_presence_on_frame(mr_presence *p, const char *name,
                          const mr_wire_msg *m) {
  node *n = node_get(p, name, strlen(name), 1);
  if (!n || n == p->self) {
    if (!n)
      nomem(p, "a node's presence");
    return;
  }
  if (m->tag == MR_WIRE_COUNTS) {
    p->srv->stats.cluster_counts_in++;
    on_counts(p, n, m);
  } else if (m->tag == MR_WIRE_PRESENCE) {
    p->srv->stats.cluster_presence_in++;
    on_presence_frame(p, n, m);
  }
}

void mr_presence_node_down(mr_presence *p, const char *name) {
  node *n = node_get(p, name, strlen(name), 0);
  if (!n || n == p->self)
    return;
  p->srv->stats.presence_node_drops++;
  size_t entries = 0, rooms = 0;
  for (nroom *r = n->rooms, *rnext; r; r = rnext) {
    rnext = r->hh.next;
    rooms++;
    set_count(p, r, 0);
    for (entry *e = r->entries, *next; e; e = next, entries++) {
      next = e->hh.next;
      remove_remote(p, n, e);
    }
    nroom_maybe_free(r);
  }
  mr_info("presence: node %s is gone: %zu presence entries in %zu rooms "
          "removed",
          n->name, entries, rooms);
  HASH_DEL(p->nodes, n);
  free(n);
}

/* ---- the batch ---- */

static void free_touches(evroom *e) {
  touch *t, *tmp;
  HASH_ITER(hh, e->touched, t, tmp) {
    HASH_DEL(e->touched, t);
    free(t->meta);
    free(t);
  }
}

static int by_id(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Sends the local changes of this batch: the rooms whose count changed,
 * then the touched entries as they are now. */
static void send_batch(mr_presence *p) {
  if (!p->dirty)
    return;
  mr_wbuf w;
  mr_wire_buf_init(&w);
  builder c = {&w, 0, 0, 0, 0, 0};
  builder e = {NULL, 1, 0, 0, 0, 0};
  mr_wbuf we;
  mr_wire_buf_init(&we);
  e.w = &we;
  int r = 0;
  dirty *d, *tmp;
  HASH_ITER(hh, p->dirty, d, tmp) {
    if (r == 0 && !sendable(p, "a change", d->name, d->len))
      d->nids = d->count = 0;
    if (r == 0 && d->count)
      r = add_count(&c, d->name, d->len, local_count(p, d->name, d->len));
    nroom *nr = nroom_get(p->self, d->name, d->len, 0);
    /* An id touched twice is sent once, as it is now. */
    if (d->nids > 1)
      qsort(d->ids, d->nids, sizeof *d->ids, by_id);
    for (size_t i = 0; i < d->nids && r == 0; i++) {
      uint64_t id = d->ids[i];
      if (i && d->ids[i - 1] == id)
        continue;
      entry *x = entry_find(nr, id);
      r = add_entry(&e, x != NULL, d->name, d->len, id, x ? x->meta : NULL,
                    x ? x->meta_len : 0);
    }
    HASH_DEL(p->dirty, d);
    free(d->ids);
    free(d);
  }
  if (r == 0 && we.len && mr_wire_buf_reserve(&w, we.len) != 0)
    r = MR_ENOMEM;
  if (r == 0 && we.len) {
    memcpy(w.data + w.len, we.data, we.len);
    w.len += we.len;
  }
  if (r != 0) {
    p->srv->stats.internal_errors++;
    mr_warn("presence: a batch of changes was not sent: %s", mr_strerror(r));
  } else if (w.len) {
    p->send(p->send_ud, &w, c.frames, e.frames);
  }
  mr_wire_buf_free(&w);
  mr_wire_buf_free(&we);
}

static int meta_eq(const uint8_t *a, size_t alen, const uint8_t *b,
                   size_t blen) {
  return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Whether this node has members or tracked entries in room. */
static int interested(mr_presence *p, const char *room, size_t len) {
  return mr_rooms_find(&p->srv->rooms, room, len) ||
         nroom_get(p->self, room, len, 0);
}

/* Reports one room's net changes. */
static void report_room(mr_presence *p, evroom *ev) {
  size_t n = HASH_COUNT(ev->touched);
  if (!n)
    return; /* its only change was lost to a failed allocation */
  mr_presence_entry *joins = malloc(n * sizeof *joins);
  mr_presence_entry *leaves = malloc(n * sizeof *leaves);
  if (!joins || !leaves) {
    free(joins);
    free(leaves);
    nomem(p, "a batch of presence events");
    return;
  }
  size_t nj = 0, nl = 0;
  for (touch *t = ev->touched; t; t = t->hh.next) {
    node *nd = node_get(p, t->key, t->node_len, 0);
    entry *cur =
        nd ? entry_find(nroom_get(nd, ev->name, ev->len, 0), t->id) : NULL;
    if (t->had && cur &&
        meta_eq(t->meta, t->meta_len, cur->meta, cur->meta_len))
      continue;
    if (t->had)
      leaves[nl++] =
          (mr_presence_entry){t->key, t->node_len, t->id, t->meta, t->meta_len};
    if (cur)
      joins[nj++] = (mr_presence_entry){t->key, t->node_len, t->id, cur->meta,
                                        cur->meta_len};
  }
  if (nj || nl) {
    qsort(joins, nj, sizeof *joins, by_node_id);
    qsort(leaves, nl, sizeof *leaves, by_node_id);
    p->srv->stats.presence_events++;
    p->on_events(p->events_ud, ev->name, ev->len, joins, nj, leaves, nl);
  }
  free(joins);
  free(leaves);
}

void mr_presence_flush(mr_presence *p, uint64_t now) {
  (void)now;
  mr_server *srv = p->srv;
  if (srv->presence_timer) {
    mr_timers_cancel(&srv->timers, srv->presence_timer);
    srv->presence_timer = 0;
  }
  if (p->send)
    send_batch(p);
  /* The batch is detached first: a handler that tracks or untracks starts
   * the next one. */
  evroom *events = p->events;
  p->events = NULL;
  evroom *ev, *tmp;
  HASH_ITER(hh, events, ev, tmp) {
    if (p->on_events && interested(p, ev->name, ev->len))
      report_room(p, ev);
    HASH_DEL(events, ev);
    free_touches(ev);
    free(ev);
  }
}

/* ---- life ---- */

mr_presence *mr_presence_new(mr_server *srv) {
  mr_presence *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->srv = srv;
  mr_presence_set_node(p, srv->node_name);
  if (!p->self) {
    free(p);
    return NULL;
  }
  return p;
}

void mr_presence_set_node(mr_presence *p, const char *name) {
  size_t len = strlen(name);
  if (len > MR_WIRE_MAX_NAME)
    len = MR_WIRE_MAX_NAME;
  if (p->self) {
    if (p->self->len == len && memcmp(p->self->name, name, len) == 0)
      return;
    HASH_DEL(p->nodes, p->self);
    memcpy(p->self->name, name, len);
    p->self->name[len] = '\0';
    p->self->len = len;
    HASH_ADD_KEYPTR(hh, p->nodes, p->self->name, p->self->len, p->self);
    return;
  }
  p->self = node_get(p, name, len, 1);
}

void mr_presence_set_events(mr_presence *p, mr_presence_events_cb cb,
                            void *ud) {
  p->on_events = cb;
  p->events_ud = ud;
}

void mr_presence_set_sender(mr_presence *p, mr_presence_send_cb cb, void *ud) {
  p->send = cb;
  p->send_ud = ud;
}

void mr_presence_free(mr_presence *p) {
  if (!p)
    return;
  node *n, *ntmp;
  HASH_ITER(hh, p->nodes, n, ntmp) {
    nroom *r, *rtmp;
    HASH_ITER(hh, n->rooms, r, rtmp) {
      entry *e, *etmp;
      HASH_ITER(hh, r->entries, e, etmp) {
        HASH_DEL(r->entries, e);
        free(e->meta);
        free(e);
      }
      HASH_DEL(n->rooms, r);
      free(r);
    }
    HASH_DEL(p->nodes, n);
    free(n);
  }
  total *t, *ttmp;
  HASH_ITER(hh, p->totals, t, ttmp) {
    HASH_DEL(p->totals, t);
    free(t);
  }
  conn_index *c, *ctmp;
  HASH_ITER(hh, p->conns, c, ctmp) {
    HASH_DEL(p->conns, c);
    free(c);
  }
  evroom *ev, *etmp2;
  HASH_ITER(hh, p->events, ev, etmp2) {
    HASH_DEL(p->events, ev);
    free_touches(ev);
    free(ev);
  }
  dirty *d, *dtmp;
  HASH_ITER(hh, p->dirty, d, dtmp) {
    HASH_DEL(p->dirty, d);
    free(d->ids);
    free(d);
  }
  free(p);
}
