/* Refcounted byte blocks and the bounded per-connection output queue.
 *
 * A broadcast frame is encoded once into an mr_buf and every recipient's
 * queue holds a reference to it, so the payload is never copied per
 * recipient (the h2o / redis cluster "encode once" pattern). */
#ifndef MR_BUF_H
#define MR_BUF_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mr_buf {
  uint32_t refs;
  uint32_t trace; /* --trace-latency's record (trace.h); 0 untraced. It
                     sits in what was padding before len. */
  size_t len;
  uint8_t data[];
} mr_buf;

/* Allocates a block of len bytes with one reference owned by the caller.
 * Returns NULL when out of memory. */
mr_buf *mr_buf_new(size_t len);

/* Takes one more reference; the block must still be alive. */
static inline mr_buf *mr_buf_addref(mr_buf *b) {
  assert(b->refs > 0);
  b->refs++;
  return b;
}

/* Drops one reference; the block is freed when the last one goes. */
void mr_buf_release(mr_buf *b);

/* One queued block and how much of it was already written. */
typedef struct {
  mr_buf *buf;
  size_t off;
} mr_qent;

/* A FIFO ring of queued blocks with a running count of unsent bytes. The
 * first few entries live inside the struct, so the common case allocates
 * nothing; a burst spills to the heap, which is given back once the queue
 * drains, so an idle connection owns no queue memory. */
#define MR_OUTQ_INLINE 4

typedef struct {
  mr_qent *ents; /* inl, or a heap array once more than fits there */
  uint32_t cap, head, count;
  size_t bytes; /* unsent bytes across all entries */
  mr_qent inl[MR_OUTQ_INLINE];
} mr_outq;

/* Appends b, taking a new reference to it (the caller keeps its own).
 * Returns 0, or MR_ENOMEM when the ring cannot grow. */
int mr_outq_push(mr_outq *q, mr_buf *b);

/* Puts b before everything queued, taking a new reference to it (the
 * caller keeps its own); for a head that must precede what was queued while
 * it could not be built yet. Nothing of the queue may have been written.
 * Returns 0, or MR_ENOMEM when the ring cannot grow. */
int mr_outq_push_front(mr_outq *q, mr_buf *b);

/* Describes up to max leading entries as (pointer, length) pairs of unsent
 * bytes; returns how many were filled. The pointers stay valid until the
 * entries are consumed. */
size_t mr_outq_peek(const mr_outq *q, const uint8_t **ptrs, size_t *lens,
                    size_t max);

/* Marks n bytes from the front as sent, releasing fully sent blocks. */
void mr_outq_consume(mr_outq *q, size_t n);

/* Releases every queued block and frees the ring. */
void mr_outq_clear(mr_outq *q);

#endif
