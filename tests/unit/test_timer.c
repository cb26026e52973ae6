/* Unit tests for the timer heap (core/timer.c).
 *
 * Table-style cases for ordering, ties, cancel, re-add and the insertion
 * mark; a randomized run against a plain array model that checks, after
 * every operation, the heap property, every back-pointer from node to heap
 * slot and every index entry; allocation failures (realloc and calloc are
 * wrapped at link time, see CMakeLists.txt) that must leave the set as it
 * was; and a measurement with 100,000 pending timers, printed, not
 * asserted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "test_util.h"
#include "timer.h"

/* The n-th realloc or calloc from now fails (1: the next one); 0: none. */
static int fail_in;
void *__real_realloc(void *p, size_t n);
void *__real_calloc(size_t m, size_t n);
static int should_fail(void) { return fail_in > 0 && --fail_in == 0; }
void *__wrap_realloc(void *p, size_t n) {
  return should_fail() ? NULL : __real_realloc(p, n);
}
void *__wrap_calloc(size_t m, size_t n) {
  return should_fail() ? NULL : __real_calloc(m, n);
}

/* Checks every invariant of the structure; returns 1 when all hold. */
static int consistent(const mr_timers *t) {
  int ok = 1;
  for (uint32_t pos = 0; pos < t->count; pos++) {
    const mr_timer_entry *e = &t->heap[pos];
    ok &= e->node < t->nodes_cap;
    if (e->node >= t->nodes_cap)
      continue;
    ok &= t->nodes[e->node].pos == pos;
    ok &= t->nodes[e->node].id != 0;
    ok &= mr_timers_pending(t, t->nodes[e->node].id);
    if (pos > 0) {
      const mr_timer_entry *p = &t->heap[(pos - 1) / 2];
      ok &= p->due < e->due || (p->due == e->due && p->seq < e->seq);
    }
  }
  uint32_t in_index = 0;
  for (uint32_t i = 0; i < t->index_cap; i++) {
    if (t->index[i].id == 0)
      continue;
    in_index++;
    uint32_t n = t->index[i].node;
    ok &= n < t->nodes_cap && t->nodes[n].id == t->index[i].id &&
          t->nodes[n].pos < t->count && t->heap[t->nodes[n].pos].node == n;
  }
  ok &= in_index == t->count;
  uint32_t nfree = 0;
  for (uint32_t n = t->free_node; n != UINT32_MAX && nfree <= t->nodes_cap;
       n = t->nodes[n].pos)
    nfree++;
  ok &= nfree + t->count == t->nodes_cap;
  return ok;
}

/* ---- cases --------------------------------------------------------------- */

static void test_empty(void) {
  mr_timers t;
  mr_timers_init(&t);
  uint64_t due = 7, id = 7;
  CHECK(!mr_timers_peek(&t, &due));
  CHECK(!mr_timers_pop(&t, UINT64_MAX, UINT64_MAX, &id, &due));
  CHECK_EQ_INT(mr_timers_cancel(&t, 1), 0);
  CHECK_EQ_INT(mr_timers_cancel(&t, 0), 0);
  CHECK(!mr_timers_pending(&t, 1));
  CHECK_EQ_INT(mr_timers_count(&t), 0);
  CHECK(consistent(&t));
  mr_timers_free(&t);
}

static void test_order_and_ties(void) {
  mr_timers t;
  mr_timers_init(&t);
  static const uint64_t dues[] = {50, 10, 30, 10, 20, 50, 10, 0};
  uint64_t ids[8];
  for (int i = 0; i < 8; i++)
    CHECK_EQ_INT(mr_timers_add(&t, dues[i], &ids[i]), 0);
  CHECK_EQ_INT(ids[0], 1); /* ids start at 1 and count up */
  CHECK_EQ_INT(ids[7], 8);
  uint64_t due;
  CHECK(mr_timers_peek(&t, &due) && due == 0);
  /* Due order; equal dues in insertion order. */
  static const int expect[] = {7, 1, 3, 6, 4, 2, 0, 5};
  uint64_t id, mark = mr_timers_mark(&t);
  for (int i = 0; i < 8; i++) {
    if (!CHECK(mr_timers_pop(&t, 100, mark, &id, &due)))
      break;
    CHECK_EQ_INT(id, ids[expect[i]]);
    CHECK_EQ_INT(due, dues[expect[i]]);
    CHECK(consistent(&t));
  }
  CHECK_EQ_INT(mr_timers_count(&t), 0);
  mr_timers_free(&t);
}

static void test_pop_respects_now_and_mark(void) {
  mr_timers t;
  mr_timers_init(&t);
  uint64_t a, b, c, id, due;
  mr_timers_add(&t, 100, &a);
  mr_timers_add(&t, 200, &b);
  uint64_t mark = mr_timers_mark(&t);
  CHECK(!mr_timers_pop(&t, 99, mark, &id, &due));
  CHECK(mr_timers_pop(&t, 100, mark, &id, &due) && id == a && due == 100);
  /* Added during the run, due now: waits for the next run. */
  mr_timers_add(&t, 100, &c);
  CHECK(!mr_timers_pop(&t, 100, mark, &id, &due));
  CHECK(mr_timers_pending(&t, c));
  mark = mr_timers_mark(&t);
  CHECK(mr_timers_pop(&t, 100, mark, &id, &due) && id == c);
  CHECK(!mr_timers_pop(&t, 199, mark, &id, &due));
  CHECK(mr_timers_pop(&t, 500, mark, &id, &due) && id == b && due == 200);
  mr_timers_free(&t);
}

static void test_cancel(void) {
  mr_timers t;
  mr_timers_init(&t);
  uint64_t ids[5], id, due;
  for (int i = 0; i < 5; i++)
    mr_timers_add(&t, (uint64_t)(10 * (5 - i)), &ids[i]);
  CHECK_EQ_INT(mr_timers_cancel(&t, ids[4]), 1); /* the earliest */
  CHECK_EQ_INT(mr_timers_cancel(&t, ids[4]), 0); /* twice is harmless */
  CHECK_EQ_INT(mr_timers_cancel(&t, ids[1]), 1); /* one in the middle */
  CHECK_EQ_INT(mr_timers_cancel(&t, 999), 0);    /* never given out */
  CHECK(!mr_timers_pending(&t, ids[1]));
  CHECK(mr_timers_pending(&t, ids[0]));
  CHECK(consistent(&t));
  CHECK(mr_timers_peek(&t, &due) && due == 20);
  uint64_t mark = mr_timers_mark(&t);
  CHECK(mr_timers_pop(&t, 1000, mark, &id, &due) && id == ids[3]);
  CHECK(mr_timers_pop(&t, 1000, mark, &id, &due) && id == ids[2]);
  CHECK(mr_timers_pop(&t, 1000, mark, &id, &due) && id == ids[0]);
  CHECK_EQ_INT(mr_timers_cancel(&t, ids[0]), 0); /* popped: not pending */
  CHECK(!mr_timers_pop(&t, 1000, mark, &id, &due));
  mr_timers_free(&t);
}

static void test_readd(void) {
  mr_timers t;
  mr_timers_init(&t);
  uint64_t a, b, id, due;
  mr_timers_add(&t, 10, &a);
  mr_timers_add(&t, 20, &b);
  CHECK_EQ_INT(mr_timers_readd(&t, a, 30), MR_EINVAL); /* still pending */
  CHECK_EQ_INT(mr_timers_readd(&t, 0, 30), MR_EINVAL);
  CHECK_EQ_INT(mr_timers_readd(&t, 3, 30), MR_EINVAL); /* never given out */
  uint64_t mark = mr_timers_mark(&t);
  CHECK(mr_timers_pop(&t, 10, mark, &id, &due) && id == a);
  /* Re-added at b's due: it was inserted later, so it comes after b. */
  CHECK_EQ_INT(mr_timers_readd(&t, a, 20), 0);
  CHECK(mr_timers_pending(&t, a));
  CHECK(consistent(&t));
  mark = mr_timers_mark(&t);
  CHECK(mr_timers_pop(&t, 20, mark, &id, &due) && id == b);
  CHECK(mr_timers_pop(&t, 20, mark, &id, &due) && id == a && due == 20);
  /* A cancelled id may come back too (the caller decides). */
  mr_timers_readd(&t, a, 5);
  CHECK_EQ_INT(mr_timers_cancel(&t, a), 1);
  CHECK_EQ_INT(mr_timers_readd(&t, a, 5), 0);
  CHECK_EQ_INT(mr_timers_count(&t), 1);
  mr_timers_free(&t);
  /* Freed and used again: ids never repeat. */
  CHECK_EQ_INT(mr_timers_count(&t), 0);
  CHECK(!mr_timers_pending(&t, a));
  CHECK_EQ_INT(mr_timers_add(&t, 1, &id), 0);
  CHECK_EQ_INT(id, 3);
  mr_timers_free(&t);
}

/* A fresh set holding n timers due at 100, 99, ... */
static void fill(mr_timers *t, int n) {
  uint64_t id;
  mr_timers_init(t);
  for (int i = 0; i < n; i++)
    CHECK_EQ_INT(mr_timers_add(t, (uint64_t)(100 - i), &id), 0);
}

/* With n timers pending, the next add needs to grow the heap, the nodes and
 * the index (n is 0 or a power of two from 16): whichever of the three
 * allocations fails, the add fails and the set is as it was. */
static void fail_growth(int n) {
  for (int k = 1; k <= 3; k++) {
    mr_timers t;
    fill(&t, n);
    uint64_t next = t.next_id, id, due;
    fail_in = k;
    CHECK_EQ_INT(mr_timers_add(&t, 1, &id), MR_ENOMEM);
    CHECK_EQ_INT(fail_in, 0); /* the k-th allocation was the one to fail */
    fail_in = 0;
    CHECK_EQ_INT(mr_timers_count(&t), n);
    CHECK(n == 0 ? !mr_timers_peek(&t, &due)
                 : mr_timers_peek(&t, &due) && due == (uint64_t)(101 - n));
    CHECK(consistent(&t));
    /* It works once memory is back, and no id was burnt. */
    CHECK_EQ_INT(mr_timers_add(&t, 1, &id), 0);
    CHECK_EQ_INT(id, next);
    CHECK(mr_timers_peek(&t, &due) && due == 1);
    CHECK(consistent(&t));
    mr_timers_free(&t);
  }
}

static void test_out_of_memory(void) {
  fail_growth(0);
  fail_growth(16);
  fail_growth(64);
}

/* ---- randomized model test ------------------------------------------------
 */

enum { MODEL_MAX = 4096 };

typedef struct {
  uint64_t id, due, seq;
  int live;
} model_timer;

static model_timer model[MODEL_MAX];
static int nmodel;
static uint64_t model_seq;

/* The specification of pop: the earliest (due, seq) among the live timers
 * that are due and were inserted before the mark; -1 when there is none. */
static int model_earliest(uint64_t now, uint64_t mark_seq) {
  int best = -1;
  for (int i = 0; i < nmodel; i++) {
    if (!model[i].live || model[i].due > now || model[i].seq >= mark_seq)
      continue;
    if (best < 0 || model[i].due < model[best].due ||
        (model[i].due == model[best].due && model[i].seq < model[best].seq))
      best = i;
  }
  return best;
}

/* The earliest live timer, whatever its due; -1 when none. */
static int model_first(void) {
  int best = -1;
  for (int i = 0; i < nmodel; i++) {
    if (model[i].live &&
        (best < 0 || model[i].due < model[best].due ||
         (model[i].due == model[best].due && model[i].seq < model[best].seq)))
      best = i;
  }
  return best;
}

static int model_live(void) {
  int n = 0;
  for (int i = 0; i < nmodel; i++)
    n += model[i].live;
  return n;
}

static void test_random_against_model(void) {
  test_rng_seed(UINT64_C(0x7157A11CE));
  mr_timers t;
  mr_timers_init(&t);
  uint64_t now = 0;
  int bad = 0;
  for (int step = 0; step < 200000 && !bad; step++) {
    uint64_t r = test_rng() % 100;
    uint64_t id, due;
    if (r < 40 && nmodel < MODEL_MAX) {
      /* Narrow range of dues so that ties are common. */
      due = now + test_rng() % 64;
      bad |= mr_timers_add(&t, due, &id) != 0;
      model[nmodel++] = (model_timer){id, due, model_seq++, 1};
    } else if (r < 60 && nmodel > 0) {
      model_timer *m = &model[test_rng() % (uint64_t)nmodel];
      bad |= mr_timers_cancel(&t, m->id) != m->live;
      m->live = 0;
    } else if (r < 70 && nmodel > 0) {
      model_timer *m = &model[test_rng() % (uint64_t)nmodel];
      due = now + test_rng() % 64;
      int rr = mr_timers_readd(&t, m->id, due);
      bad |= rr != (m->live ? MR_EINVAL : 0);
      if (!m->live) {
        m->due = due;
        m->seq = model_seq++;
        m->live = 1;
      }
    } else if (r < 95) {
      /* A run: the mark is taken first, then the clock may move. */
      now += test_rng() % 8;
      uint64_t mark = mr_timers_mark(&t), mark_seq = model_seq;
      for (int k = 0; k < 4; k++) {
        /* A callback schedules something due now or soon: it must wait
         * for the next run. */
        if (test_rng() % 4 == 0 && nmodel < MODEL_MAX) {
          due = now + test_rng() % 3;
          bad |= mr_timers_add(&t, due, &id) != 0;
          model[nmodel++] = (model_timer){id, due, model_seq++, 1};
        }
        int e = model_earliest(now, mark_seq);
        int got = mr_timers_pop(&t, now, mark, &id, &due);
        if (e < 0) {
          bad |= got != 0;
          break;
        }
        bad |= !got || id != model[e].id || due != model[e].due;
        model[e].live = 0;
      }
    } else {
      uint64_t pdue;
      int e = model_first();
      int got = mr_timers_peek(&t, &pdue);
      bad |= got != (e >= 0) || (got && pdue != model[e].due);
    }
    bad |= mr_timers_count(&t) != (size_t)model_live();
    if (step % 97 == 0)
      bad |= !consistent(&t);
    /* Forget dead model entries now and then so the model stays small;
     * their ids must stay unknown to the set. */
    if (nmodel == MODEL_MAX) {
      int j = 0;
      for (int i = 0; i < nmodel; i++) {
        if (model[i].live)
          model[j++] = model[i];
        else
          bad |= mr_timers_pending(&t, model[i].id);
      }
      nmodel = j;
    }
    if (bad)
      fprintf(stderr, "  model test diverged at step %d\n", step);
  }
  CHECK(!bad);
  CHECK(consistent(&t));
  /* Drain: everything comes out in (due, seq) order. */
  uint64_t id, due, last_due = 0, mark = mr_timers_mark(&t);
  size_t n = 0;
  while (mr_timers_pop(&t, UINT64_MAX, mark, &id, &due)) {
    bad |= due < last_due;
    last_due = due;
    n++;
  }
  CHECK(!bad);
  CHECK_EQ_INT(n, model_live());
  CHECK_EQ_INT(mr_timers_count(&t), 0);
  CHECK(consistent(&t));
  mr_timers_free(&t);
}

/* ---- 100,000 pending timers ----------------------------------------------
 */

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void test_hundred_thousand(void) {
  enum { N = 100000 };
  static uint64_t ids[N];
  test_rng_seed(42);
  mr_timers t;
  mr_timers_init(&t);
  double t0 = now_ns();
  for (int i = 0; i < N; i++)
    mr_timers_add(&t, 1000 + test_rng() % 60000, &ids[i]);
  double t1 = now_ns();
  CHECK_EQ_INT(mr_timers_count(&t), N);
  CHECK(consistent(&t));
  /* A loop turn with 100,000 pending: peek at the earliest. */
  uint64_t due, sink = 0;
  for (int i = 0; i < N; i++) {
    mr_timers_peek(&t, &due);
    sink += due;
  }
  double t2 = now_ns();
  int cancelled = 0;
  for (int i = 0; i < N; i += 2)
    cancelled += mr_timers_cancel(&t, ids[i]);
  double t3 = now_ns();
  CHECK_EQ_INT(cancelled, N / 2);
  CHECK(consistent(&t));
  uint64_t id, last = 0, mark = mr_timers_mark(&t);
  int popped = 0, ordered = 1;
  while (mr_timers_pop(&t, UINT64_MAX, mark, &id, &due)) {
    ordered &= due >= last && (id % 2) == 0; /* odd ids were cancelled */
    last = due;
    popped++;
  }
  double t4 = now_ns();
  CHECK(ordered);
  CHECK_EQ_INT(popped, N / 2);
  printf("timer heap, %d timers: add %.0f ns, peek %.1f ns, cancel %.0f ns, "
         "pop %.0f ns (per operation; %llu)\n",
         N, (t1 - t0) / N, (t2 - t1) / N, (t3 - t2) / (N / 2),
         (t4 - t3) / (N / 2), (unsigned long long)(sink % 10));
  mr_timers_free(&t);
}

int main(void) {
  test_empty();
  test_order_and_ties();
  test_pop_respects_now_and_mark();
  test_cancel();
  test_readd();
  test_out_of_memory();
  test_random_against_model();
  test_hundred_thousand();
  return test_report();
}
