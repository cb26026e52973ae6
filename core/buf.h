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

/* A FIFO ring of queued blocks with a running count of unsent bytes. Only
 * the first block can be partly written, so one offset serves the queue and
 * an entry is just the block's pointer. An empty queue holds no ring: an
 * idle connection's queue is these 40 bytes and nothing else. The ring is
 * taken when the first block is queued and given back once the queue
 * drains, from and to a cache of rings (buf.c), so a queue that fills and
 * drains every loop turn (a subscriber of a busy room) allocates nothing
 * per message. */
typedef struct {
  mr_buf **ring; /* NULL while empty; else cap entries, a power of two */
  size_t bytes;  /* unsent bytes across all entries */
  size_t off;    /* bytes of the first entry already written */
  uint32_t cap, head, count;
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

/* Releases every queued block and gives back the ring. */
void mr_outq_clear(mr_outq *q);

/* Frees the rings the cache holds for reuse (not those queues hold). A
 * server calls it when it is freed: the busted kit's module is unloaded
 * with its Lua state, and rings left in the cache would then be leaks. */
void mr_outq_cache_free(void);

#endif
