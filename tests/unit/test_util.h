/* Minimal assertions shared by the unit tests.
 *
 * Each test is one executable (one translation unit), so the counters can be
 * file-static. A failed check reports and carries on, so that one run shows
 * every broken case; test_report() then turns the count into the exit code. */
#ifndef MR_TEST_UTIL_H
#define MR_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed;
static int test_failed;

/* Records one check; returns ok so that callers may skip dependent checks. */
static inline int test_record(int ok, const char *file, int line,
                              const char *expr) {
  if (ok) {
    test_passed++;
  } else {
    test_failed++;
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, expr);
  }
  return ok;
}

#define CHECK(cond) test_record(!!(cond), __FILE__, __LINE__, #cond)

#define CHECK_EQ_INT(a, b)                                                     \
  do {                                                                         \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);            \
    if (!test_record(check_a_ == check_b_, __FILE__, __LINE__, #a " == " #b))  \
      fprintf(stderr, "  got %lld, expected %lld\n", check_a_, check_b_);      \
  } while (0)

/* Functions rather than expressions, so that arrays passed as pointers do
 * not trip -Waddress and every argument is evaluated once. */
static inline int test_mem(const void *a, const void *b, size_t len,
                           const char *file, int line, const char *expr) {
  return test_record(a != NULL && b != NULL && memcmp(a, b, len) == 0, file,
                     line, expr);
}

static inline int test_span(const char *p, size_t len, const char *s,
                            const char *file, int line, const char *expr) {
  int ok = p != NULL && s != NULL && len == strlen(s) && memcmp(p, s, len) == 0;
  if (!test_record(ok, file, line, expr))
    fprintf(stderr, "  got \"%.*s\", expected \"%s\"\n", p ? (int)len : 6,
            p ? p : "(null)", s ? s : "(null)");
  return ok;
}

/* Compares len bytes at a with len bytes at b. */
#define CHECK_MEM(a, b, len)                                                   \
  test_mem((a), (b), (len), __FILE__, __LINE__, "memcmp(" #a ", " #b ")")

/* Compares a (pointer, length) span with a NUL-terminated string. */
#define CHECK_SPAN(ptr, len, str)                                              \
  test_span((ptr), (len), (str), __FILE__, __LINE__, #ptr " == " #str)

/* Compares two NUL-terminated strings; a NULL a fails. */
#define CHECK_STR(a, b) test_str_((a), (b), __FILE__, __LINE__, #a " == " #b)
static inline int test_str_(const char *a, const char *b, const char *file,
                            int line, const char *expr) {
  return test_span(a, a ? strlen(a) : 0, b, file, line, expr);
}

/* A fixed-seed xorshift64 generator (Marsaglia's 13, 7, 17), so that
 * randomized tests are reproducible and do not depend on the C library's
 * rand(). A test file that wants its own sequence calls test_rng_seed()
 * before drawing. */
#define TEST_RNG_DEFAULT_SEED UINT64_C(0x9E3779B97F4A7C15)

static uint64_t test_rng_state = TEST_RNG_DEFAULT_SEED;

static inline void test_rng_seed(uint64_t seed) {
  /* Zero is xorshift's fixed point: it would only ever yield zero. */
  test_rng_state = seed ? seed : TEST_RNG_DEFAULT_SEED;
}

static inline uint64_t test_rng(void) {
  uint64_t x = test_rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return test_rng_state = x;
}

/* Prints the summary line and returns the process exit code. */
static inline int test_report(void) {
  printf("%d passed, %d failed\n", test_passed, test_failed);
  return test_failed ? 1 : 0;
}

/* Returns a malloc'ed copy of exactly len bytes (at least one byte is
 * allocated, so an empty copy is still a valid pointer), so that a
 * sanitizer build catches a read past the end. The caller frees it. */
static inline uint8_t *dup_exact(const uint8_t *p, size_t len) {
  uint8_t *q = malloc(len ? len : 1);
  if (!q) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  if (len)
    memcpy(q, p, len);
  return q;
}

#endif
