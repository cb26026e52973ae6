#include "timer.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

#define NONE UINT32_MAX
#define MIN_CAP 16u

void mr_timers_init(mr_timers *t) {
  memset(t, 0, sizeof *t);
  t->free_node = NONE;
  t->next_id = 1;
}

void mr_timers_free(mr_timers *t) {
  uint64_t next_id = t->next_id, next_seq = t->next_seq;
  free(t->heap);
  free(t->nodes);
  free(t->index);
  mr_timers_init(t);
  t->next_id = next_id;
  t->next_seq = next_seq;
}

/* ---- the id index -------------------------------------------------------- */

/* Fibonacci hashing: ids are consecutive, and multiplying by 2^64/phi
 * spreads consecutive keys evenly over the table. */
static uint32_t home(const mr_timers *t, uint64_t id) {
  return (uint32_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> 32) &
         (t->index_cap - 1);
}

static uint32_t index_find(const mr_timers *t, uint64_t id) {
  if (t->index_cap == 0 || id == 0)
    return NONE;
  for (uint32_t i = home(t, id);; i = (i + 1) & (t->index_cap - 1)) {
    if (t->index[i].id == id)
      return i;
    if (t->index[i].id == 0)
      return NONE;
  }
}

/* The caller has made room (the table is at most half full). */
static void index_put(mr_timers *t, uint64_t id, uint32_t node) {
  uint32_t i = home(t, id);
  while (t->index[i].id != 0)
    i = (i + 1) & (t->index_cap - 1);
  t->index[i].id = id;
  t->index[i].node = node;
}

/* Backward-shift deletion (Knuth's algorithm R): every later entry of the
 * probe run that may move into the hole does, so lookups never need
 * tombstones and the table never degrades. */
static void index_del(mr_timers *t, uint32_t hole) {
  uint32_t mask = t->index_cap - 1;
  for (uint32_t i = (hole + 1) & mask; t->index[i].id != 0;
       i = (i + 1) & mask) {
    uint32_t h = home(t, t->index[i].id);
    /* Entry i may fill the hole unless its home lies cyclically in
     * (hole, i]: then moving it would put it before its home. */
    int stays = hole <= i ? (hole < h && h <= i) : (hole < h || h <= i);
    if (!stays) {
      t->index[hole] = t->index[i];
      hole = i;
    }
  }
  t->index[hole].id = 0;
}

static int index_resize(mr_timers *t, uint32_t cap) {
  mr_timer_slot *old = t->index;
  uint32_t old_cap = t->index_cap;
  mr_timer_slot *fresh = calloc(cap, sizeof *fresh);
  if (!fresh)
    return MR_ENOMEM;
  t->index = fresh;
  t->index_cap = cap;
  for (uint32_t i = 0; i < old_cap; i++)
    if (old[i].id != 0)
      index_put(t, old[i].id, old[i].node);
  free(old);
  return 0;
}

/* ---- the heap ------------------------------------------------------------ */

static int earlier(const mr_timer_entry *a, const mr_timer_entry *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void place(mr_timers *t, uint32_t pos, mr_timer_entry e) {
  t->heap[pos] = e;
  t->nodes[e.node].pos = pos;
}

static void sift_up(mr_timers *t, uint32_t pos) {
  mr_timer_entry e = t->heap[pos];
  while (pos > 0) {
    uint32_t parent = (pos - 1) / 2;
    if (!earlier(&e, &t->heap[parent]))
      break;
    place(t, pos, t->heap[parent]);
    pos = parent;
  }
  place(t, pos, e);
}

static void sift_down(mr_timers *t, uint32_t pos) {
  mr_timer_entry e = t->heap[pos];
  for (;;) {
    uint32_t child = 2 * pos + 1;
    if (child >= t->count)
      break;
    if (child + 1 < t->count && earlier(&t->heap[child + 1], &t->heap[child]))
      child++;
    if (!earlier(&t->heap[child], &e))
      break;
    place(t, pos, t->heap[child]);
    pos = child;
  }
  place(t, pos, e);
}

/* Takes the entry at pos out of the heap and frees its node and index
 * slot (islot, which the caller has looked up). */
static void remove_at(mr_timers *t, uint32_t pos, uint32_t islot) {
  uint32_t node = t->heap[pos].node;
  index_del(t, islot);
  t->nodes[node].id = 0;
  t->nodes[node].pos = t->free_node;
  t->free_node = node;
  t->count--;
  if (pos == t->count)
    return;
  place(t, pos, t->heap[t->count]);
  if (pos > 0 && earlier(&t->heap[pos], &t->heap[(pos - 1) / 2]))
    sift_up(t, pos);
  else
    sift_down(t, pos);
}

/* Makes room for one more timer in the heap, the nodes and the index, so
 * that an insertion cannot fail half-way. */
static int reserve(mr_timers *t) {
  if (t->count >= UINT32_MAX / 4)
    return MR_ENOMEM;
  if (t->count == t->heap_cap) {
    uint32_t cap = t->heap_cap ? t->heap_cap * 2 : MIN_CAP;
    mr_timer_entry *h = realloc(t->heap, (size_t)cap * sizeof *h);
    if (!h)
      return MR_ENOMEM;
    t->heap = h;
    t->heap_cap = cap;
  }
  if (t->free_node == NONE) {
    uint32_t cap = t->nodes_cap ? t->nodes_cap * 2 : MIN_CAP;
    mr_timer_node *n = realloc(t->nodes, (size_t)cap * sizeof *n);
    if (!n)
      return MR_ENOMEM;
    t->nodes = n;
    /* Chain the new nodes so that the lowest is taken first. */
    for (uint32_t i = cap; i-- > t->nodes_cap;) {
      n[i].id = 0;
      n[i].pos = t->free_node;
      t->free_node = i;
    }
    t->nodes_cap = cap;
  }
  if ((uint64_t)(t->count + 1) * 2 > t->index_cap)
    return index_resize(t, t->index_cap ? t->index_cap * 2 : MIN_CAP);
  return 0;
}

/* Inserts id at due; reserve() has succeeded. */
static void insert(mr_timers *t, uint64_t id, uint64_t due) {
  uint32_t node = t->free_node;
  t->free_node = t->nodes[node].pos;
  t->nodes[node].id = id;
  index_put(t, id, node);
  mr_timer_entry e = {due, t->next_seq++, node};
  t->heap[t->count] = e;
  t->nodes[node].pos = t->count;
  t->count++;
  sift_up(t, t->count - 1);
}

/* ---- the interface ------------------------------------------------------- */

int mr_timers_add(mr_timers *t, uint64_t due, uint64_t *id) {
  int r = reserve(t);
  if (r != 0)
    return r;
  *id = t->next_id++;
  insert(t, *id, due);
  return 0;
}

int mr_timers_readd(mr_timers *t, uint64_t id, uint64_t due) {
  if (id == 0 || id >= t->next_id || index_find(t, id) != NONE)
    return MR_EINVAL;
  int r = reserve(t);
  if (r != 0)
    return r;
  insert(t, id, due);
  return 0;
}

int mr_timers_cancel(mr_timers *t, uint64_t id) {
  uint32_t islot = index_find(t, id);
  if (islot == NONE)
    return 0;
  remove_at(t, t->nodes[t->index[islot].node].pos, islot);
  return 1;
}

int mr_timers_pending(const mr_timers *t, uint64_t id) {
  return index_find(t, id) != NONE;
}

int mr_timers_peek(const mr_timers *t, uint64_t *due) {
  if (t->count == 0)
    return 0;
  *due = t->heap[0].due;
  return 1;
}

int mr_timers_pop(mr_timers *t, uint64_t now, uint64_t mark, uint64_t *id,
                  uint64_t *due) {
  if (t->count == 0 || t->heap[0].due > now || t->heap[0].seq >= mark)
    return 0;
  *id = t->nodes[t->heap[0].node].id;
  *due = t->heap[0].due;
  remove_at(t, 0, index_find(t, *id));
  return 1;
}
