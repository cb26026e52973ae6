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

/* Makes room for one more entry. Returns 0 or MR_ENOMEM. */
static int reserve(mr_outq *q) {
  if (!q->ents) {
    q->ents = q->inl;
    q->cap = MR_OUTQ_INLINE;
    q->head = 0;
  }
  if (q->count == q->cap) {
    /* Grow by doubling and unwrap the ring into the new array, so a queue
     * that stays busy allocates nothing per message. */
    uint32_t ncap = q->cap * 2;
    mr_qent *n = malloc(sizeof *n * ncap);
    if (!n)
      return MR_ENOMEM;
    for (uint32_t i = 0; i < q->count; i++)
      n[i] = q->ents[(q->head + i) & (q->cap - 1)];
    if (q->ents != q->inl)
      free(q->ents);
    q->ents = n;
    q->cap = ncap;
    q->head = 0;
  }
  return 0;
}

int mr_outq_push(mr_outq *q, mr_buf *b) {
  if (reserve(q) != 0)
    return MR_ENOMEM;
  mr_qent *e = &q->ents[(q->head + q->count) & (q->cap - 1)];
  e->buf = mr_buf_addref(b);
  e->off = 0;
  q->count++;
  q->bytes += b->len;
  return 0;
}

int mr_outq_push_front(mr_outq *q, mr_buf *b) {
  /* Bytes of the first entry may already be on the wire, and nothing may
   * go in front of those. */
  assert(q->count == 0 || q->ents[q->head].off == 0);
  if (reserve(q) != 0)
    return MR_ENOMEM;
  q->head = (q->head + q->cap - 1) & (q->cap - 1);
  mr_qent *e = &q->ents[q->head];
  e->buf = mr_buf_addref(b);
  e->off = 0;
  q->count++;
  q->bytes += b->len;
  return 0;
}

size_t mr_outq_peek(const mr_outq *q, const uint8_t **ptrs, size_t *lens,
                    size_t max) {
  size_t n = q->count < max ? q->count : max;
  for (size_t i = 0; i < n; i++) {
    const mr_qent *e = &q->ents[(q->head + i) & (q->cap - 1)];
    ptrs[i] = e->buf->data + e->off;
    lens[i] = e->buf->len - e->off;
  }
  return n;
}

void mr_outq_consume(mr_outq *q, size_t n) {
  assert(n <= q->bytes);
  q->bytes -= n;
  uint64_t stamp = 0; /* read once for every traced frame this completes */
  while (n > 0) {
    assert(q->count > 0);
    mr_qent *e = &q->ents[q->head];
    size_t left = e->buf->len - e->off;
    if (n < left) {
      e->off += n;
      return;
    }
    n -= left;
    if (e->buf->trace)
      mr_trace_written(e->buf->trace, &stamp);
    mr_buf_release(e->buf);
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
  }
  /* Zero-length blocks (never queued in practice) would otherwise linger. */
  while (q->count > 0 && q->ents[q->head].buf->len == q->ents[q->head].off) {
    mr_buf_release(q->ents[q->head].buf);
    q->head = (q->head + 1) & (q->cap - 1);
    q->count--;
  }
  if (q->count == 0) {
    q->head = 0;
    if (q->ents && q->ents != q->inl) {
      free(q->ents);
      q->ents = q->inl;
      q->cap = MR_OUTQ_INLINE;
    }
  }
}

void mr_outq_clear(mr_outq *q) {
  for (uint32_t i = 0; i < q->count; i++)
    mr_buf_release(q->ents[(q->head + i) & (q->cap - 1)].buf);
  if (q->ents != q->inl)
    free(q->ents);
  q->ents = NULL;
  q->cap = q->head = q->count = 0;
  q->bytes = 0;
}
