#include "buf.h"

#include <stdlib.h>

#include "error.h"
#include "trace.h"

mr_buf *mr_buf_new(size_t len) {
  mr_buf *b = malloc(sizeof *b + len);
  if (!b)
    return NULL;
  b->refs = 1;
  b->trace = 0;
  b->len = len;
  return b;
}

void mr_buf_release(mr_buf *b) {
  if (!b)
    return;
  assert(b->refs > 0);
  if (--b->refs == 0) {
    if (b->trace)
      mr_trace_done(b->trace);
    free(b);
  }
}

/* The ring cache: rings of RING_MIN << k entries, for k below
 * RING_CLASSES, kept on one free list per class, each list holding at most
 * RING_CACHE_BYTES of rings; the first pointer of a cached ring links to
 * the next. Bigger rings, and rings past the bound, go back to malloc. The
 * event loop is single-threaded, and so is every user of a queue, so the
 * cache is the process's, like conn.c's read buffer. A 1,000-subscriber
 * fan-out with 16 messages in flight holds 1,000 rings of 16 entries
 * (128 KiB) between a broadcast and the flush. */
#define RING_MIN 8
#define RING_CLASSES 6
#define RING_CACHE_BYTES (256 * 1024)

static struct {
  mr_buf **head;
  size_t n;
} ring_cache[RING_CLASSES];

static int ring_class(uint32_t cap) {
  for (int k = 0; k < RING_CLASSES; k++)
    if (cap == (uint32_t)RING_MIN << k)
      return k;
  return -1;
}

static mr_buf **ring_get(uint32_t cap) {
  int k = ring_class(cap);
  mr_buf **r = k >= 0 ? ring_cache[k].head : NULL;
  if (!r)
    return malloc(sizeof *r * cap);
  ring_cache[k].head = (mr_buf **)r[0];
  ring_cache[k].n--;
  return r;
}

static void ring_put(mr_buf **r, uint32_t cap) {
  int k = ring_class(cap);
  if (k < 0 || (ring_cache[k].n + 1) * cap * sizeof *r > RING_CACHE_BYTES) {
    free(r);
    return;
  }
  r[0] = (mr_buf *)ring_cache[k].head;
  ring_cache[k].head = r;
  ring_cache[k].n++;
}

void mr_outq_cache_free(void) {
  for (int k = 0; k < RING_CLASSES; k++) {
    while (ring_cache[k].head) {
      mr_buf **r = ring_cache[k].head;
      ring_cache[k].head = (mr_buf **)r[0];
      free(r);
    }
    ring_cache[k].n = 0;
  }
}

/* The i-th queued entry (0 is the first). */
static inline mr_buf **ent(const mr_outq *q, uint32_t i) {
  return &q->ring[(q->head + i) & (q->cap - 1)];
}

/* Makes room for one more entry. Returns 0 or MR_ENOMEM. */
static int reserve(mr_outq *q) {
  if (!q->ring) {
    if (!(q->ring = ring_get(RING_MIN)))
      return MR_ENOMEM;
    q->cap = RING_MIN;
    q->head = 0;
  }
  if (q->count == q->cap) {
    /* Grow by doubling and unwrap the ring into the new array, so a queue
     * that stays busy allocates nothing per message. */
    uint32_t ncap = q->cap * 2;
    mr_buf **n = ring_get(ncap);
    if (!n)
      return MR_ENOMEM;
    for (uint32_t i = 0; i < q->count; i++)
      n[i] = *ent(q, i);
    ring_put(q->ring, q->cap);
    q->ring = n;
    q->cap = ncap;
    q->head = 0;
  }
  return 0;
}

/* Gives the ring of a drained queue back. */
static void drop_ring(mr_outq *q) {
  if (q->ring)
    ring_put(q->ring, q->cap);
  q->ring = NULL;
  q->cap = q->head = q->count = 0;
  q->off = 0;
}

int mr_outq_push(mr_outq *q, mr_buf *b) {
  if (reserve(q) != 0)
    return MR_ENOMEM;
  *ent(q, q->count) = mr_buf_addref(b);
  q->count++;
  q->bytes += b->len;
  return 0;
}

int mr_outq_push_front(mr_outq *q, mr_buf *b) {
  /* Bytes of the first entry may already be on the wire, and nothing may
   * go in front of those. */
  assert(q->count == 0 || q->off == 0);
  if (reserve(q) != 0)
    return MR_ENOMEM;
  q->head = (q->head + q->cap - 1) & (q->cap - 1);
  q->ring[q->head] = mr_buf_addref(b);
  q->count++;
  q->bytes += b->len;
  return 0;
}

size_t mr_outq_peek(const mr_outq *q, const uint8_t **ptrs, size_t *lens,
                    size_t max) {
  size_t n = q->count < max ? q->count : max;
  for (size_t i = 0; i < n; i++) {
    const mr_buf *b = *ent(q, (uint32_t)i);
    size_t off = i == 0 ? q->off : 0;
    ptrs[i] = b->data + off;
    lens[i] = b->len - off;
  }
  return n;
}

void mr_outq_consume(mr_outq *q, size_t n) {
  assert(n <= q->bytes);
  q->bytes -= n;
  uint64_t stamp = 0; /* read once for every traced frame this completes */
  while (n > 0) {
    assert(q->count > 0);
    mr_buf *b = q->ring[q->head];
    size_t left = b->len - q->off;
    if (n < left) {
      q->off += n;
      return;
    }
    n -= left;
    if (b->trace)
      mr_trace_written(b->trace, &stamp);
    mr_buf_release(b);
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    q->off = 0;
  }
  /* Zero-length blocks (never queued in practice) would otherwise linger. */
  while (q->count > 0 && q->ring[q->head]->len == q->off) {
    mr_buf_release(q->ring[q->head]);
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
    q->off = 0;
  }
  if (q->count == 0)
    drop_ring(q);
}

void mr_outq_clear(mr_outq *q) {
  for (uint32_t i = 0; i < q->count; i++)
    mr_buf_release(*ent(q, i));
  drop_ring(q);
  q->bytes = 0;
}
