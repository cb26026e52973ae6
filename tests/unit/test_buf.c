/* Unit tests for refcounted blocks and the output queue (core/buf.c).
 *
 * Every block carries recognisable bytes (derived from an id), so that order
 * and contents can be checked after the ring wraps and grows. Leaks and
 * double frees are caught when this runs under the sanitizer build. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "test_util.h"

static uint8_t pattern(unsigned id, size_t i) {
  return (uint8_t)(id * 31u + i * 7u + 1u);
}

/* A new block of len bytes filled with the pattern of id; exits when out of
 * memory, which is not what these tests are about. */
static mr_buf *make(unsigned id, size_t len) {
  mr_buf *b = mr_buf_new(len);
  if (!b) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  for (size_t i = 0; i < len; i++)
    b->data[i] = pattern(id, i);
  return b;
}

/* Checks that the queue's unsent bytes, as described by peek, are exactly
 * the len bytes at want. Returns 1 when they are. */
static int queue_holds(const mr_outq *q, const uint8_t *want, size_t len) {
  size_t max = q->count ? q->count : 1;
  const uint8_t **ptrs = malloc(sizeof *ptrs * max);
  size_t *lens = malloc(sizeof *lens * max);
  int ok = ptrs && lens;
  size_t n = ok ? mr_outq_peek(q, ptrs, lens, max) : 0;
  ok = ok && n == q->count;
  size_t at = 0;
  for (size_t i = 0; ok && i < n; i++) {
    if (at + lens[i] > len || (lens[i] && memcmp(ptrs[i], want + at, lens[i])))
      ok = 0;
    at += lens[i];
  }
  ok = ok && at == len && q->bytes == len;
  free(ptrs);
  free(lens);
  return ok;
}

/* ---- mr_buf ---- */

static void test_buf_refcount(void) {
  mr_buf *b = mr_buf_new(16);
  if (!CHECK(b != NULL))
    return;
  CHECK_EQ_INT(b->refs, 1);
  CHECK_EQ_INT(b->len, 16);
  memset(b->data, 0x5A, 16); /* the whole payload is writable */

  CHECK(mr_buf_addref(b) == b);
  CHECK_EQ_INT(b->refs, 2);
  CHECK(mr_buf_addref(b) == b);
  CHECK_EQ_INT(b->refs, 3);
  mr_buf_release(b);
  CHECK_EQ_INT(b->refs, 2);
  /* Releasing NULL is a no-op: no reference is dropped from any block. */
  mr_buf_release(NULL);
  CHECK_EQ_INT(b->refs, 2);
  mr_buf_release(b);
  CHECK_EQ_INT(b->refs, 1);
  CHECK_EQ_INT(b->data[15], 0x5A);
  mr_buf_release(b); /* freed here; ASan reports a leak otherwise */

  mr_buf *z = mr_buf_new(0);
  if (CHECK(z != NULL)) {
    CHECK_EQ_INT(z->refs, 1);
    CHECK_EQ_INT(z->len, 0);
    mr_buf_release(z);
  }
}

/* ---- mr_outq ---- */

static void test_outq_empty(void) {
  mr_outq q = {0};
  const uint8_t *p[4];
  size_t l[4];
  CHECK_EQ_INT(mr_outq_peek(&q, p, l, 4), 0);
  mr_outq_consume(&q, 0);
  CHECK_EQ_INT(q.count, 0);
  CHECK_EQ_INT(q.bytes, 0);
  CHECK(q.ring == NULL); /* an idle queue owns no memory */
  mr_outq_clear(&q);
  CHECK(q.ring == NULL);
  CHECK_EQ_INT(q.cap, 0);
  mr_outq_clear(&q); /* clearing twice is harmless */
  CHECK_EQ_INT(q.count, 0);
}

static void test_outq_basic(void) {
  mr_outq q = {0};
  mr_buf *a = make(1, 10), *b = make(2, 5), *c = make(3, 7);
  CHECK_EQ_INT(mr_outq_push(&q, a), 0);
  CHECK_EQ_INT(a->refs, 2); /* the queue took its own reference */
  CHECK_EQ_INT(q.bytes, 10);
  CHECK_EQ_INT(q.count, 1);
  CHECK_EQ_INT(q.cap, 8); /* the smallest ring */
  CHECK(q.ring != NULL);
  CHECK_EQ_INT(mr_outq_push(&q, b), 0);
  CHECK_EQ_INT(mr_outq_push(&q, c), 0);
  CHECK_EQ_INT(q.bytes, 22);
  CHECK_EQ_INT(q.count, 3);

  const uint8_t *p[8];
  size_t l[8];
  CHECK_EQ_INT(mr_outq_peek(&q, p, l, 8), 3);
  CHECK(p[0] == a->data && l[0] == 10);
  CHECK(p[1] == b->data && l[1] == 5);
  CHECK(p[2] == c->data && l[2] == 7);
  /* peek never fills more than max */
  p[1] = NULL;
  CHECK_EQ_INT(mr_outq_peek(&q, p, l, 1), 1);
  CHECK(p[0] == a->data && p[1] == NULL);
  CHECK_EQ_INT(mr_outq_peek(&q, p, l, 0), 0);

  /* Partial consume inside the first entry. */
  mr_outq_consume(&q, 4);
  CHECK_EQ_INT(q.bytes, 18);
  CHECK_EQ_INT(q.count, 3);
  CHECK_EQ_INT(a->refs, 2);
  CHECK_EQ_INT(mr_outq_peek(&q, p, l, 8), 3);
  CHECK(p[0] == a->data + 4);
  CHECK_EQ_INT(l[0], 6);

  /* Across the rest of a and into the middle of b. */
  mr_outq_consume(&q, 6 + 2);
  CHECK_EQ_INT(q.bytes, 10);
  CHECK_EQ_INT(q.count, 2);
  CHECK_EQ_INT(a->refs, 1); /* a was released by the queue */
  CHECK_EQ_INT(b->refs, 2);
  CHECK_EQ_INT(mr_outq_peek(&q, p, l, 8), 2);
  CHECK(p[0] == b->data + 2);
  CHECK_EQ_INT(l[0], 3);
  CHECK(p[1] == c->data);
  CHECK_EQ_INT(l[1], 7);

  /* Consuming 0 bytes changes nothing. */
  mr_outq_consume(&q, 0);
  CHECK_EQ_INT(q.bytes, 10);
  CHECK_EQ_INT(q.count, 2);

  /* Exactly to the end of b. */
  mr_outq_consume(&q, 3);
  CHECK_EQ_INT(q.count, 1);
  CHECK_EQ_INT(b->refs, 1);
  CHECK_EQ_INT(q.bytes, 7);
  CHECK_EQ_INT(mr_outq_peek(&q, p, l, 8), 1);
  CHECK(p[0] == c->data && l[0] == 7);

  /* Everything: the queue is empty and reset, and gives its ring back. */
  mr_outq_consume(&q, 7);
  CHECK_EQ_INT(q.count, 0);
  CHECK_EQ_INT(q.bytes, 0);
  CHECK_EQ_INT(q.head, 0);
  CHECK_EQ_INT(c->refs, 1);
  CHECK(q.ring == NULL);
  CHECK_EQ_INT(mr_outq_peek(&q, p, l, 8), 0);

  mr_outq_clear(&q);
  CHECK_EQ_INT(a->refs, 1);
  CHECK_EQ_INT(b->refs, 1);
  CHECK_EQ_INT(c->refs, 1);
  mr_buf_release(a);
  mr_buf_release(b);
  mr_buf_release(c);
}

/* Push 5, consume 3, push 20: the ring wraps (head 3 in 8 slots) and then
 * grows twice, the first time while wrapped. Order must survive. */
static void test_outq_wrap_and_grow(void) {
  enum { N = 25 };
  mr_outq q = {0};
  mr_buf *bufs[N];
  for (unsigned i = 0; i < N; i++)
    bufs[i] = make(i, 1 + (i * 3) % 11);

  size_t total = 0;
  for (unsigned i = 0; i < 5; i++) {
    CHECK_EQ_INT(mr_outq_push(&q, bufs[i]), 0);
    total += bufs[i]->len;
  }
  CHECK_EQ_INT(q.bytes, total);
  size_t first3 = bufs[0]->len + bufs[1]->len + bufs[2]->len;
  mr_outq_consume(&q, first3);
  total -= first3;
  CHECK_EQ_INT(q.count, 2);
  CHECK_EQ_INT(q.head, 3);
  CHECK_EQ_INT(q.bytes, total);
  for (unsigned i = 0; i < 3; i++)
    CHECK_EQ_INT(bufs[i]->refs, 1);

  for (unsigned i = 5; i < N; i++) {
    CHECK_EQ_INT(mr_outq_push(&q, bufs[i]), 0);
    total += bufs[i]->len;
    CHECK_EQ_INT(q.bytes, total);
    CHECK_EQ_INT(q.count, i - 2);
    if (i == 10) { /* 8 entries in 8 slots, wrapped: head 3 */
      CHECK_EQ_INT(q.cap, 8);
      CHECK_EQ_INT(q.head, 3);
    }
    if (i == 11)
      CHECK_EQ_INT(q.cap, 16); /* grew while wrapped */
  }
  CHECK_EQ_INT(q.count, 22);
  CHECK_EQ_INT(q.cap, 32);

  const uint8_t *p[32];
  size_t l[32];
  CHECK_EQ_INT(mr_outq_peek(&q, p, l, 32), 22);
  for (unsigned i = 0; i < 22; i++) {
    mr_buf *b = bufs[i + 3];
    CHECK(p[i] == b->data);
    CHECK_EQ_INT(l[i], b->len);
    CHECK_EQ_INT(b->refs, 2);
  }

  /* Contents, byte by byte, in order. */
  uint8_t want[512];
  size_t wl = 0;
  for (unsigned i = 3; i < N; i++)
    for (size_t k = 0; k < bufs[i]->len; k++)
      want[wl++] = pattern(i, k);
  CHECK(queue_holds(&q, want, wl));

  /* Drain in odd-sized chunks that split entries; contents must follow. */
  size_t off = 0;
  while (off < wl) {
    size_t n = wl - off < 5 ? wl - off : 5;
    mr_outq_consume(&q, n);
    off += n;
    if (!CHECK(queue_holds(&q, want + off, wl - off)))
      break;
  }
  CHECK_EQ_INT(q.count, 0);
  for (unsigned i = 0; i < N; i++) {
    CHECK_EQ_INT(bufs[i]->refs, 1);
    mr_buf_release(bufs[i]);
  }
  mr_outq_clear(&q);
}

/* One consume that spans several whole entries and ends mid-entry. */
static void test_outq_consume_span(void) {
  mr_outq q = {0};
  mr_buf *b[4];
  for (unsigned i = 0; i < 4; i++) {
    b[i] = make(40 + i, 10);
    mr_outq_push(&q, b[i]);
    mr_buf_release(b[i]); /* the queue holds the only reference */
  }
  CHECK_EQ_INT(b[3]->refs, 1);
  mr_outq_consume(&q, 25); /* b0, b1 whole, 5 bytes of b2 */
  CHECK_EQ_INT(q.count, 2);
  CHECK_EQ_INT(q.bytes, 15);
  uint8_t want[15];
  for (unsigned k = 0; k < 5; k++)
    want[k] = pattern(42, 5 + k);
  for (unsigned k = 0; k < 10; k++)
    want[5 + k] = pattern(43, k);
  CHECK(queue_holds(&q, want, 15));
  mr_outq_clear(&q); /* frees b2 and b3 */
  CHECK_EQ_INT(q.count, 0);
  CHECK_EQ_INT(q.bytes, 0);
  CHECK(q.ring == NULL);
}

/* Zero-length blocks are accepted and do not linger once passed. */
static void test_outq_zero_length(void) {
  mr_outq q = {0};
  mr_buf *z = make(0, 0), *a = make(50, 4);
  mr_outq_push(&q, z);
  CHECK_EQ_INT(q.count, 1);
  CHECK_EQ_INT(q.bytes, 0);
  mr_outq_consume(&q, 0);
  CHECK_EQ_INT(q.count, 0);
  CHECK_EQ_INT(z->refs, 1);

  mr_outq_push(&q, z);
  mr_outq_push(&q, a);
  mr_outq_push(&q, z);
  CHECK_EQ_INT(z->refs, 3);
  CHECK_EQ_INT(q.bytes, 4);
  mr_outq_consume(&q, 4);
  CHECK_EQ_INT(q.count, 0);
  CHECK_EQ_INT(q.bytes, 0);
  CHECK_EQ_INT(z->refs, 1);
  CHECK_EQ_INT(a->refs, 1);
  mr_outq_clear(&q);
  mr_buf_release(z);
  mr_buf_release(a);
}

/* One block queued in three queues is freed only with the last reference. */
static void test_outq_shared(void) {
  mr_outq q[3] = {{0}, {0}, {0}};
  mr_buf *s = make(60, 32);
  mr_buf *other = make(61, 8);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_INT(mr_outq_push(&q[i], other), 0);
    CHECK_EQ_INT(mr_outq_push(&q[i], s), 0);
  }
  CHECK_EQ_INT(s->refs, 4);
  CHECK_EQ_INT(other->refs, 4);
  mr_buf_release(s); /* the sender's reference */
  CHECK_EQ_INT(s->refs, 3);

  /* Each queue consumes independently: partial progress on one does not
   * affect what the others see. */
  mr_outq_consume(&q[0], 8 + 10);
  const uint8_t *p[2];
  size_t l[2];
  CHECK_EQ_INT(mr_outq_peek(&q[0], p, l, 2), 1);
  CHECK(p[0] == s->data + 10 && l[0] == 22);
  CHECK_EQ_INT(mr_outq_peek(&q[1], p, l, 2), 2);
  CHECK(p[0] == other->data && l[0] == 8);
  CHECK(p[1] == s->data && l[1] == 32);
  CHECK_EQ_INT(s->refs, 3);
  CHECK_EQ_INT(other->refs, 3);

  mr_outq_clear(&q[0]);
  CHECK_EQ_INT(s->refs, 2);
  mr_outq_consume(&q[1], 40);
  CHECK_EQ_INT(s->refs, 1);
  CHECK_EQ_INT(other->refs, 2);
  /* s still alive and intact while q[2] holds it. */
  CHECK_EQ_INT(s->data[31], pattern(60, 31));
  mr_outq_clear(&q[2]); /* frees s: ASan flags a leak or a double free */
  CHECK_EQ_INT(q[2].count, 0);
  CHECK_EQ_INT(other->refs, 1);
  mr_outq_clear(&q[1]);
  mr_buf_release(other);
}

/* Random pushes and consumes against a model byte stream, many times around
 * the ring. The queue holds the only reference to each block. */
static void test_outq_random(void) {
  enum { CAP = 1 << 16 };
  static uint8_t model[CAP];
  size_t mhead = 0, mlen = 0; /* model[mhead .. mhead+mlen) is unsent */
  mr_outq q = {0};
  unsigned id = 0;
  int bad = 0;
  /* This file's own seed, so the run stays the one it always was. */
  test_rng_seed(UINT64_C(0x2545F4914F6CDD1D));
  uint32_t maxcap = 0;
  for (int op = 0; op < 20000 && !bad; op++) {
    if (test_rng() % 100 < 55 && mlen + 300 < CAP) {
      size_t len = test_rng() % 40 == 0 ? 0 : 1 + test_rng() % 200;
      mr_buf *b = make(++id, len);
      if (mr_outq_push(&q, b) != 0)
        bad = 1;
      if (mhead + mlen + len > CAP) { /* compact the model */
        memmove(model, model + mhead, mlen);
        mhead = 0;
      }
      memcpy(model + mhead + mlen, b->data, len);
      mlen += len;
      mr_buf_release(b);
    } else {
      size_t n = mlen ? test_rng() % (mlen + 1) : 0;
      if (test_rng() % 4 == 0)
        n = mlen; /* drain now and then */
      mr_outq_consume(&q, n);
      mhead += n;
      mlen -= n;
    }
    if (q.cap > maxcap)
      maxcap = q.cap;
    if (!queue_holds(&q, model + mhead, mlen)) {
      fprintf(stderr, "  outq diverged from the model at op %d\n", op);
      bad = 1;
    }
  }
  CHECK(!bad);
  CHECK(maxcap >= 16); /* the run did exercise growth */
  mr_outq_clear(&q);
  CHECK_EQ_INT(q.bytes, 0);
}

/* A burst grows the ring; once drained the queue gives it back, so a
 * connection that was busy once keeps no queue memory. The next message
 * takes a ring from the cache rather than from malloc: the one the last
 * drained queue of that size gave back. */
static void test_outq_spill_and_return(void) {
  mr_outq q = {0};
  mr_buf *b = make(9, 3);
  for (int i = 0; i < 20; i++)
    CHECK_EQ_INT(mr_outq_push(&q, b), 0);
  CHECK(q.ring != NULL);
  CHECK(q.cap >= 20);
  CHECK_EQ_INT(b->refs, 21);
  mr_outq_consume(&q, 59);
  CHECK_EQ_INT(q.count, 1);
  CHECK_EQ_INT(q.off, 2); /* the last block is partly written */
  mr_outq_consume(&q, 1);
  CHECK_EQ_INT(q.count, 0);
  CHECK(q.ring == NULL);
  CHECK_EQ_INT(q.cap, 0);
  CHECK_EQ_INT(q.off, 0);
  CHECK_EQ_INT(b->refs, 1);
  CHECK_EQ_INT(mr_outq_push(&q, b), 0);
  mr_buf **first = q.ring;
  CHECK_EQ_INT(q.cap, 8);
  mr_outq_consume(&q, 3);
  CHECK(q.ring == NULL);
  CHECK_EQ_INT(mr_outq_push(&q, b), 0);
  CHECK(q.ring == first); /* reused from the cache */
  mr_outq_clear(&q);
  CHECK(q.ring == NULL);
  CHECK_EQ_INT(b->refs, 1);
  mr_buf_release(b);
}

/* push_front puts a block before what is queued: on an empty queue, on a
 * ring whose head is at 0 (it wraps backwards), on a full ring (it grows),
 * and after the ring has wrapped. */
static void test_outq_push_front(void) {
  uint8_t want[64];
  size_t n = 0;
  mr_outq q = {0};
  mr_buf *h = make(9, 3);
  CHECK_EQ_INT(mr_outq_push_front(&q, h), 0);
  CHECK_EQ_INT(h->refs, 2);
  CHECK(queue_holds(&q, h->data, 3));
  mr_outq_clear(&q);
  CHECK_EQ_INT(h->refs, 1);

  /* Seven behind, one in front: head wraps to the end of the ring, which
   * is then full. */
  mr_buf *b[5];
  for (unsigned i = 0; i < 5; i++)
    b[i] = make(i + 1, 2 + i);
  mr_buf *f = make(11, 1);
  for (unsigned i = 0; i < 7; i++)
    CHECK_EQ_INT(mr_outq_push(&q, i < 3 ? b[i] : f), 0);
  CHECK_EQ_INT(mr_outq_push_front(&q, h), 0);
  CHECK(q.cap == 8 && q.count == 8 && q.head == 7);
  memcpy(want, h->data, 3);
  n = 3;
  for (unsigned i = 0; i < 7; i++) {
    const mr_buf *x = i < 3 ? b[i] : f;
    memcpy(want + n, x->data, x->len);
    n += x->len;
  }
  CHECK(queue_holds(&q, want, n));
  /* Full: the front push grows the ring and keeps the order. */
  mr_buf *h2 = make(10, 4);
  CHECK_EQ_INT(mr_outq_push_front(&q, h2), 0);
  CHECK(q.cap == 16 && q.count == 9);
  memmove(want + 4, want, n);
  memcpy(want, h2->data, 4);
  n += 4;
  CHECK(queue_holds(&q, want, n));
  /* Pushes at the back still land after everything. */
  CHECK_EQ_INT(mr_outq_push(&q, b[3]), 0);
  memcpy(want + n, b[3]->data, b[3]->len);
  n += b[3]->len;
  CHECK(queue_holds(&q, want, n));
  /* Consumed whole entries leave a head in the middle; a front push then
   * goes just before it. */
  mr_outq_consume(&q, 4 + 3);
  memmove(want, want + 7, n - 7);
  n -= 7;
  CHECK_EQ_INT(mr_outq_push_front(&q, b[4]), 0);
  memmove(want + b[4]->len, want, n);
  memcpy(want, b[4]->data, b[4]->len);
  n += b[4]->len;
  CHECK(queue_holds(&q, want, n));
  mr_outq_clear(&q);
  CHECK_EQ_INT(h->refs, 1);
  CHECK_EQ_INT(h2->refs, 1);
  for (unsigned i = 0; i < 5; i++) {
    CHECK_EQ_INT(b[i]->refs, 1);
    mr_buf_release(b[i]);
  }
  CHECK_EQ_INT(f->refs, 1);
  mr_buf_release(f);
  mr_buf_release(h);
  mr_buf_release(h2);
}

int main(void) {
  test_outq_spill_and_return();
  test_buf_refcount();
  test_outq_empty();
  test_outq_basic();
  test_outq_wrap_and_grow();
  test_outq_consume_span();
  test_outq_zero_length();
  test_outq_shared();
  test_outq_random();
  test_outq_push_front();
  return test_report();
}
