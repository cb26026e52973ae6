/* Unit tests for UTF-8 validation (core/utf8.c): the Unicode table 3-7
 * cases, an exhaustive comparison with a reference decoder over every 1-,
 * 2- and 3-byte sequence, and the ASCII fast path at every alignment. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "utf8.h"

static int valid_str(const char *s) {
  return mr_utf8_valid((const uint8_t *)s, strlen(s));
}

static void test_utf8_table(void) {
  CHECK(mr_utf8_valid((const uint8_t *)"", 0));
  CHECK(valid_str("hello"));
  CHECK(valid_str("salle-\xC3\xA9t\xC3\xA9-\xF0\x9F\x8C\x99")); /* été 🌙 */
  CHECK(valid_str("\xC2\x80"));                                 /* U+0080 */
  CHECK(valid_str("\xDF\xBF"));                                 /* U+07FF */
  CHECK(valid_str("\xE0\xA0\x80"));                             /* U+0800 */
  CHECK(valid_str("\xED\x9F\xBF"));                             /* U+D7FF */
  CHECK(valid_str("\xEE\x80\x80"));                             /* U+E000 */
  CHECK(valid_str("\xEF\xBF\xBF"));                             /* U+FFFF */
  CHECK(valid_str("\xEF\xBB\xBF"));                             /* BOM */
  CHECK(valid_str("\xF0\x90\x80\x80"));                         /* U+10000 */
  CHECK(valid_str("\xF4\x8F\xBF\xBF"));                         /* U+10FFFF */
  CHECK(mr_utf8_valid((const uint8_t *)"a\0b", 3));             /* U+0000 */

  CHECK(!valid_str("\x80"));                     /* lone continuation */
  CHECK(!valid_str("\xBF"));                     /* lone continuation */
  CHECK(!valid_str("\xC0\x80"));                 /* overlong NUL */
  CHECK(!valid_str("\xC0\xAF"));                 /* overlong '/' */
  CHECK(!valid_str("\xC1\xBF"));                 /* overlong U+007F */
  CHECK(!valid_str("\xE0\x80\x80"));             /* overlong 3-byte */
  CHECK(!valid_str("\xE0\x9F\xBF"));             /* overlong U+07FF */
  CHECK(!valid_str("\xF0\x80\x80\x80"));         /* overlong 4-byte */
  CHECK(!valid_str("\xF0\x8F\xBF\xBF"));         /* overlong U+FFFF */
  CHECK(!valid_str("\xED\xA0\x80"));             /* U+D800 surrogate */
  CHECK(!valid_str("\xED\xBF\xBF"));             /* U+DFFF surrogate */
  CHECK(!valid_str("\xED\xA0\x80\xED\xB0\x80")); /* CESU-8 pair */
  CHECK(!valid_str("\xF4\x90\x80\x80"));         /* U+110000 */
  CHECK(!valid_str("\xF5\x80\x80\x80"));
  CHECK(!valid_str("\xF8\x88\x80\x80\x80")); /* 5-byte form */
  CHECK(!valid_str("\xFE"));
  CHECK(!valid_str("\xFF"));
  CHECK(!valid_str("\xC3"));         /* truncated 2-byte */
  CHECK(!valid_str("\xE2\x82"));     /* truncated 3-byte */
  CHECK(!valid_str("\xF0\x9F\x8C")); /* truncated 4-byte */
  CHECK(!valid_str("\xC3\x28"));     /* bad continuation */
  CHECK(!valid_str("\xE2\x28\xA1"));
  CHECK(!valid_str("\xE2\x82\x28"));
  CHECK(!valid_str("\xF0\x9F\x28\x99"));
  CHECK(!valid_str("\xF0\x9F\x8C\x28"));
}

/* Bitsets of the canonical (shortest, non-surrogate) encodings of every
 * code point, built by encoding rather than by decoding, so that they are
 * an independent reference for the validator. */
static uint8_t canon2[65536 / 8];
static uint8_t *canon3; /* 2^24 bits */

static int bit(const uint8_t *set, uint32_t i) {
  return set[i >> 3] >> (i & 7) & 1;
}

static void set_bit(uint8_t *set, uint32_t i) {
  set[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static int ref_valid(const uint8_t *s, size_t n) {
  /* A string is valid when it splits into canonical encodings; for at
   * most three bytes the possible splits can simply be listed. */
  if (n == 0)
    return 1;
  if (s[0] < 0x80 && ref_valid(s + 1, n - 1))
    return 1;
  if (n >= 2 && bit(canon2, (uint32_t)s[0] << 8 | s[1]) &&
      ref_valid(s + 2, n - 2))
    return 1;
  if (n == 3 && bit(canon3, (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2]))
    return 1;
  return 0;
}

static void test_utf8_exhaustive(void) {
  canon3 = calloc(1u << 21, 1);
  if (!canon3)
    exit(2);
  for (uint32_t cp = 0x80; cp < 0x800; cp++)
    set_bit(canon2, (0xC0 | cp >> 6) << 8 | (0x80 | (cp & 0x3F)));
  for (uint32_t cp = 0x800; cp < 0x10000; cp++)
    if (cp < 0xD800 || cp > 0xDFFF)
      set_bit(canon3, (0xE0 | cp >> 12) << 16 | (0x80 | (cp >> 6 & 0x3F)) << 8 |
                          (0x80 | (cp & 0x3F)));

  /* Every string of one, two and three bytes, against the reference. */
  long mismatches = 0;
  for (uint32_t a = 0; a < 256; a++) {
    uint8_t s1[1] = {(uint8_t)a};
    mismatches += mr_utf8_valid(s1, 1) != ref_valid(s1, 1);
  }
  for (uint32_t v = 0; v < 65536; v++) {
    uint8_t s2[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    mismatches += mr_utf8_valid(s2, 2) != ref_valid(s2, 2);
  }
  for (uint32_t v = 0; v < (1u << 24); v++) {
    uint8_t s3[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    mismatches += mr_utf8_valid(s3, 3) != ref_valid(s3, 3);
  }
  CHECK_EQ_INT(mismatches, 0);

  /* Every four-byte code point is valid; every four-byte string with a lead
   * byte F0..FF whose code point is not in U+10000..U+10FFFF is not. */
  long bad4 = 0;
  for (uint32_t cp = 0x10000; cp <= 0x10FFFF; cp++) {
    uint8_t s4[4] = {
        (uint8_t)(0xF0 | cp >> 18), (uint8_t)(0x80 | (cp >> 12 & 0x3F)),
        (uint8_t)(0x80 | (cp >> 6 & 0x3F)), (uint8_t)(0x80 | (cp & 0x3F))};
    bad4 += !mr_utf8_valid(s4, 4);
  }
  CHECK_EQ_INT(bad4, 0);
  long good4 = 0;
  for (uint32_t lead = 0xF0; lead <= 0xFF; lead++)
    for (uint32_t b1 = 0x80; b1 <= 0xBF; b1++) {
      uint32_t cp = (lead & 0x07) << 18 | (b1 & 0x3F) << 12;
      if (lead <= 0xF7 && cp >= 0x10000 && cp <= 0x10FFFF)
        continue;
      uint8_t s4[4] = {(uint8_t)lead, (uint8_t)b1, 0x80, 0x80};
      good4 += mr_utf8_valid(s4, 4);
    }
  CHECK_EQ_INT(good4, 0);
  free(canon3);
  canon3 = NULL;
}

/* The ASCII fast path skips eight bytes at a time; a bad byte must be found
 * at every offset and alignment, and a good multi-byte character too. */
static void test_utf8_fast_path(void) {
  uint8_t s[64];
  long wrong = 0;
  for (size_t len = 1; len <= sizeof s; len++)
    for (size_t at = 0; at < len; at++) {
      memset(s, 'a', len);
      s[at] = 0xFF;
      uint8_t *c = dup_exact(s, len);
      wrong += mr_utf8_valid(c, len) != 0;
      free(c);
      if (at + 2 <= len) {
        memset(s, 'a', len);
        s[at] = 0xC3;
        s[at + 1] = 0xA9;
        c = dup_exact(s, len);
        wrong += mr_utf8_valid(c, len) != 1;
        free(c);
      }
    }
  CHECK_EQ_INT(wrong, 0);
}

int main(void) {
  test_utf8_table();
  test_utf8_exhaustive();
  test_utf8_fast_path();
  return test_report();
}
