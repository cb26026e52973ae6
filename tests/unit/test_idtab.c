/* Unit tests for the id index (core/idtab.c): adds, finds and removes
 * checked against a plain array after every operation, through growth,
 * shrinking and the backward shift of removal; and the connection pattern
 * it serves: consecutive ids, a few long-lived among many short-lived. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "idtab.h"
#include "test_util.h"

typedef struct {
  int payload;
  uint64_t id;
} obj;

static mr_idtab table(void) {
  mr_idtab t;
  mr_idtab_init(&t, offsetof(obj, id));
  return t;
}

static void test_empty(void) {
  mr_idtab t = table();
  CHECK(mr_idtab_find(&t, 1) == NULL);
  size_t pos = 0;
  CHECK(mr_idtab_next(&t, &pos) == NULL);
  obj o = {0, 7};
  mr_idtab_remove(&t, &o); /* not there: nothing */
  CHECK_EQ_INT(t.count, 0);
  mr_idtab_free(&t);
  mr_idtab_free(&t); /* twice is harmless */
}

static void test_basic(void) {
  mr_idtab t = table();
  obj a = {1, 10}, b = {2, 11}, c = {3, 1ull << 40};
  CHECK_EQ_INT(mr_idtab_add(&t, &a), 0);
  CHECK_EQ_INT(mr_idtab_add(&t, &b), 0);
  CHECK_EQ_INT(mr_idtab_add(&t, &c), 0);
  CHECK_EQ_INT(t.count, 3);
  CHECK(mr_idtab_find(&t, 10) == &a);
  CHECK(mr_idtab_find(&t, 11) == &b);
  CHECK(mr_idtab_find(&t, 1ull << 40) == &c);
  CHECK(mr_idtab_find(&t, 12) == NULL);
  int seen = 0;
  size_t pos = 0;
  for (obj *o; (o = mr_idtab_next(&t, &pos));)
    seen |= 1 << o->payload;
  CHECK_EQ_INT(seen, 0xE);
  /* Removing an object that is not the one under its id does nothing. */
  obj impostor = {9, 10};
  mr_idtab_remove(&t, &impostor);
  CHECK(mr_idtab_find(&t, 10) == &a);
  mr_idtab_remove(&t, &b);
  CHECK(mr_idtab_find(&t, 11) == NULL);
  CHECK(mr_idtab_find(&t, 10) == &a);
  CHECK_EQ_INT(t.count, 2);
  mr_idtab_free(&t);
}

/* Random adds and removes against a model, with every id checked after
 * each step: a removal that shifted an entry wrongly shows up as a lookup
 * that misses. */
static void test_random(void) {
  enum { N = 3000, STEPS = 40000 };
  obj *objs = calloc(N, sizeof *objs);
  char *in = calloc(N, 1);
  if (!CHECK(objs && in))
    return;
  mr_idtab t = table();
  srand(12345);
  size_t n = 0, maxcap = 0;
  int bad = 0;
  for (int i = 0; i < N; i++)
    objs[i] = (obj){i, (uint64_t)i * 7919 + 1};
  for (int s = 0; s < STEPS; s++) {
    int k = rand() % N;
    /* Phases: fill mostly, then empty mostly, so it grows and shrinks. */
    int adding = (s / 10000) % 2 == 0 ? rand() % 4 != 0 : rand() % 8 == 0;
    if (adding && !in[k]) {
      if (mr_idtab_add(&t, &objs[k]) != 0)
        bad++;
      in[k] = 1;
      n++;
    } else if (!adding && in[k]) {
      mr_idtab_remove(&t, &objs[k]);
      in[k] = 0;
      n--;
    }
    if (t.cap > maxcap)
      maxcap = t.cap;
    if (t.count != n || (t.cap && t.count * 4 > t.cap * 3))
      bad++;
    if (s % 97 == 0 || s > STEPS - 50)
      for (int j = 0; j < N; j++)
        if (mr_idtab_find(&t, objs[j].id) != (in[j] ? &objs[j] : NULL))
          bad++;
  }
  CHECK_EQ_INT(bad, 0);
  CHECK(maxcap >= 2048);
  if (!CHECK(t.cap < maxcap)) /* it shrank when emptied */
    fprintf(stderr, "  cap %zu, max %zu, count %zu\n", t.cap, maxcap, t.count);
  size_t pos = 0, seen = 0;
  for (obj *o; (o = mr_idtab_next(&t, &pos));)
    seen += in[o->payload] ? 1 : 1000000;
  CHECK_EQ_INT(seen, n);
  mr_idtab_free(&t);
  free(objs);
  free(in);
}

/* A server's pattern: ids handed out in order, a few held for the whole
 * run while thousands come and go. Every lookup stays short: no probe run
 * forms where the new ids meet the old ones. */
static void test_churn(void) {
  enum { LONG = 600, WINDOW = 200, TOTAL = 100000 };
  obj *held = calloc(LONG, sizeof *held);
  obj *ring = calloc(WINDOW, sizeof *ring);
  if (!CHECK(held && ring))
    return;
  mr_idtab t = table();
  uint64_t next = 1;
  for (int i = 0; i < LONG; i++) {
    held[i] = (obj){i, next++};
    mr_idtab_add(&t, &held[i]);
  }
  int bad = 0;
  for (int i = 0; i < TOTAL; i++) {
    obj *slot = &ring[i % WINDOW];
    if (i >= WINDOW)
      mr_idtab_remove(&t, slot);
    *slot = (obj){-1, next++};
    mr_idtab_add(&t, slot);
    if (mr_idtab_find(&t, slot->id) != slot ||
        mr_idtab_find(&t, held[i % LONG].id) != &held[i % LONG])
      bad++;
  }
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(t.count, LONG + WINDOW);
  /* The longest run of occupied slots stays far below the count. */
  size_t run = 0, longest = 0;
  for (size_t i = 0; i < 2 * t.cap; i++) {
    run = t.slots[i % t.cap] ? run + 1 : 0;
    if (run > longest)
      longest = run;
  }
  CHECK(longest < 64);
  mr_idtab_free(&t);
  free(held);
  free(ring);
}

int main(void) {
  test_empty();
  test_basic();
  test_random();
  test_churn();
  return test_report();
}
