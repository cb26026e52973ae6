/* Unit tests for the token bucket (core/bucket.c), driven by a fake clock:
 * the burst, refill to the millisecond, no drift over long runs, the 32-bit
 * clock wrap. */
#include <stdint.h>

#include "bucket.h"
#include "test_util.h"

typedef struct {
  uint32_t deficit, stamp;
} bucket;

static int take(bucket *b, uint64_t now, uint32_t rate, uint32_t burst) {
  return mr_bucket_take(&b->deficit, &b->stamp, now, rate, burst);
}

/* A zeroed bucket is full: burst messages at once, then none. */
static void test_burst(void) {
  bucket b = {0, 0};
  uint64_t t = 5000;
  for (int i = 0; i < 7; i++)
    CHECK(take(&b, t, 2, 7));
  CHECK(!take(&b, t, 2, 7));
  CHECK(!take(&b, t, 2, 7));
  /* A refused take costs nothing: half a second later one token is back. */
  CHECK(take(&b, t + 500, 2, 7));
  CHECK(!take(&b, t + 500, 2, 7));
}

/* Rate 3/s: a token takes 333.33 ms; 333 ms is not enough, 334 is. */
static void test_refill_exact(void) {
  bucket b = {0, 0};
  uint64_t t = 1000;
  CHECK(take(&b, t, 3, 2));
  CHECK(take(&b, t, 3, 2));
  CHECK(!take(&b, t + 333, 3, 2));
  CHECK(take(&b, t + 334, 3, 2));
  /* The remainder is carried: the second token is due at 666.67 ms, so
   * 667 has it (a bucket that rounded per token would wait for 668). */
  CHECK(!take(&b, t + 666, 3, 2));
  CHECK(take(&b, t + 667, 3, 2));
  /* Never fuller than the burst, however long it rests. */
  CHECK(take(&b, t + 1000000, 3, 2));
  CHECK(take(&b, t + 1000000, 3, 2));
  CHECK(!take(&b, t + 1000000, 3, 2));
}

/* A client that sends as fast as it may, checked every millisecond for
 * ten minutes, gets exactly burst + rate * seconds messages: no drift. */
static void test_no_drift(void) {
  const uint32_t rates[] = {1, 3, 7, 30, 999, 1000, 1001, 5000};
  for (size_t r = 0; r < sizeof rates / sizeof rates[0]; r++) {
    bucket b = {0, 0};
    uint64_t t0 = 123456789, taken = 0;
    uint64_t ms = 600000;
    for (uint64_t t = t0; t <= t0 + ms; t++)
      while (take(&b, t, rates[r], 5))
        taken++;
    CHECK_EQ_INT(taken, 5 + (uint64_t)rates[r] * ms / 1000);
  }
}

/* The stamp is the clock's low 32 bits: refill is right across the wrap. */
static void test_wrap(void) {
  bucket b = {0, 0};
  uint64_t t = 0xFFFFFF00ull; /* 256 ms before the low word wraps */
  CHECK(take(&b, t, 10, 1));
  CHECK(!take(&b, t + 50, 10, 1));
  CHECK(take(&b, t + 300, 10, 1)); /* after the wrap */
  CHECK(!take(&b, t + 300, 10, 1));
}

/* The largest settings do not overflow. */
static void test_limits(void) {
  bucket b = {0, 0};
  for (uint32_t i = 0; i < 1000; i++)
    CHECK(take(&b, 7, MR_BUCKET_MAX_RATE, MR_BUCKET_MAX_BURST));
  b.deficit = MR_BUCKET_MAX_BURST * 1000u;
  CHECK(!take(&b, 7, MR_BUCKET_MAX_RATE, MR_BUCKET_MAX_BURST));
  CHECK(take(&b, 8, MR_BUCKET_MAX_RATE, MR_BUCKET_MAX_BURST));
  CHECK(take(&b, 8 + 0xFFFFFFFFull, MR_BUCKET_MAX_RATE, MR_BUCKET_MAX_BURST));
}

int main(void) {
  test_burst();
  test_refill_exact();
  test_no_drift();
  test_wrap();
  test_limits();
  return test_report();
}
