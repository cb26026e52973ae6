/* Unit tests for the query-string iterator (core/query.c).
 *
 * Inputs are copied into heap blocks of exactly their length (no NUL), so a
 * sanitizer build catches any read past the end of the query. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query.h"
#include "test_util.h"

/* Decodes all of q (len bytes) and compares the pairs with want, a list of
 * key, value strings ending with NULL. Buffers are generous. */
static void check_pairs_n(const char *q, size_t len, const char *const *want,
                          int line) {
  char *copy = (char *)dup_exact((const uint8_t *)q, len);
  mr_query_iter it;
  mr_query_init(&it, copy, len);
  char key[256], val[256];
  size_t klen, vlen;
  int i = 0;
  while (mr_query_next(&it, key, sizeof key, &klen, val, sizeof val, &vlen)) {
    if (!want[i]) {
      test_record(0, __FILE__, line, "an unexpected extra pair");
      fprintf(stderr, "  query \"%.*s\": extra pair \"%.*s\"=\"%.*s\"\n",
              (int)len, q, (int)klen, key, (int)vlen, val);
      break;
    }
    if (!test_span(key, klen, want[i], __FILE__, line, "key") ||
        !test_span(val, vlen, want[i + 1], __FILE__, line, "value"))
      fprintf(stderr, "  query \"%.*s\", pair %d\n", (int)len, q, i / 2);
    i += 2;
  }
  if (want[i]) {
    test_record(0, __FILE__, line, "a missing pair");
    fprintf(stderr, "  query \"%.*s\": pair %d (\"%s\") not returned\n",
            (int)len, q, i / 2, want[i]);
  }
  /* The end is sticky. */
  test_record(
      mr_query_next(&it, key, sizeof key, &klen, val, sizeof val, &vlen) == 0,
      __FILE__, line, "iterator stays at the end");
  free(copy);
}

#define CHECK_PAIRS(q, ...)                                                    \
  check_pairs_n((q), strlen(q), (const char *const[]){__VA_ARGS__, NULL},      \
                __LINE__)
#define CHECK_NO_PAIRS(q)                                                      \
  check_pairs_n((q), strlen(q), (const char *const[]){NULL}, __LINE__)

static void test_basic(void) {
  CHECK_PAIRS("a=1&b=x%20y+z", "a", "1", "b", "x y z");
  CHECK_PAIRS("a=1", "a", "1");
  CHECK_PAIRS("room=lobby&name=ann&token=abc123", "room", "lobby", "name",
              "ann", "token", "abc123");
  /* Keys are decoded too. */
  CHECK_PAIRS("my+key=v&k%3Dx=%26", "my key", "v", "k=x", "&");
  /* Only the first '=' splits; later ones belong to the value. */
  CHECK_PAIRS("a=b=c&d==", "a", "b=c", "d", "=");
  /* Duplicate keys are all returned, in order. */
  CHECK_PAIRS("k=1&k=2", "k", "1", "k", "2");
  /* Escapes in both cases of hex digits. */
  CHECK_PAIRS("x=%2f%2F%41%7e%7E", "x", "//A~~");
  /* '+' encoded as %2B stays a plus. */
  CHECK_PAIRS("e=a%2Bb+c", "e", "a+b c");
}

static void test_empty(void) {
  CHECK_NO_PAIRS("");
  CHECK_NO_PAIRS("&");
  CHECK_NO_PAIRS("&&&");
  CHECK_PAIRS("&&a=1&", "a", "1");
  CHECK_PAIRS("a=1&&b=2", "a", "1", "b", "2");
  CHECK_PAIRS("&a=1&&&b=2&&", "a", "1", "b", "2");

  /* A key without '=' has an empty value. */
  CHECK_PAIRS("flag", "flag", "");
  CHECK_PAIRS("flag&a=1&other", "flag", "", "a", "1", "other", "");
  /* An empty value and an empty key are still pairs. */
  CHECK_PAIRS("a=", "a", "");
  CHECK_PAIRS("=v", "", "v");
  CHECK_PAIRS("=", "", "");
  CHECK_PAIRS("a=&=b&=", "a", "", "", "b", "", "");

  /* A query of length zero is empty, whatever the bytes after it. */
  mr_query_iter it;
  mr_query_init(&it, "a=1", 0);
  char k[4], v[4];
  size_t kl = 99, vl = 99;
  CHECK_EQ_INT(mr_query_next(&it, k, sizeof k, &kl, v, sizeof v, &vl), 0);
}

static void test_malformed(void) {
  /* Bad or cut escapes are kept literally, byte for byte. */
  CHECK_PAIRS("a=%zz", "a", "%zz");
  CHECK_PAIRS("a=%4", "a", "%4");
  CHECK_PAIRS("a=%", "a", "%");
  CHECK_PAIRS("a=%%", "a", "%%");
  CHECK_PAIRS("a=%g1", "a", "%g1");
  CHECK_PAIRS("a=%1g", "a", "%1g");
  CHECK_PAIRS("a=100%", "a", "100%");
  CHECK_PAIRS("a=%%41", "a", "%A");
  CHECK_PAIRS("a=%4%41", "a", "%4A");
  CHECK_PAIRS("%zz=1", "%zz", "1");
  CHECK_PAIRS("k%=v", "k%", "v");
  /* An escape cut by '&' does not borrow bytes from the next pair. */
  CHECK_PAIRS("a=%4&1=x", "a", "%4", "1", "x");
  CHECK_PAIRS("a=%&41", "a", "%", "41", "");
  /* An escape cut by the end of the given length does not read past it. */
  check_pairs_n("a=%41", 4, (const char *const[]){"a", "%4", NULL}, __LINE__);
  check_pairs_n("a=%41", 3, (const char *const[]){"a", "%", NULL}, __LINE__);
  /* A decoded '&' or '=' is data, not a separator. */
  CHECK_PAIRS("a=%26b%3Dc", "a", "&b=c");
}

static void test_binary_utf8(void) {
  /* Percent-encoded UTF-8 decodes to the raw bytes. */
  CHECK_PAIRS("name=%C3%A9t%C3%A9&moon=%F0%9F%8C%99", "name",
              "\xC3\xA9t\xC3\xA9", "moon", "\xF0\x9F\x8C\x99");
  /* Raw UTF-8 passes through. */
  CHECK_PAIRS("r=salle-\xC3\xA9", "r", "salle-\xC3\xA9");
  /* Lowercase hex is the same. */
  CHECK_PAIRS("moon=%f0%9f%8c%99", "moon", "\xF0\x9F\x8C\x99");
  /* A UTF-8 key. */
  CHECK_PAIRS("%C3%A9=1", "\xC3\xA9", "1");
}

static void test_binary_bytes(void) {
  const char *q = "b=x%00y%ff";
  mr_query_iter it;
  mr_query_init(&it, q, strlen(q));
  char key[16], val[16];
  size_t kl, vl;
  CHECK_EQ_INT(mr_query_next(&it, key, sizeof key, &kl, val, sizeof val, &vl),
               1);
  CHECK_SPAN(key, kl, "b");
  CHECK_EQ_INT(vl, 4);
  CHECK_MEM(val, "x\0y\xFF", 4);
  CHECK_EQ_INT(mr_query_next(&it, key, sizeof key, &kl, val, sizeof val, &vl),
               0);
}

static void test_truncation(void) {
  const char *q = "longkey=abcdefgh&k=%41%42%43%44&x=1";
  char *copy = (char *)dup_exact((const uint8_t *)q, strlen(q));
  mr_query_iter it;
  mr_query_init(&it, copy, strlen(q));
  /* Canaries past the small buffers catch any overflow. */
  char key[4 + 4], val[3 + 4];
  size_t kl, vl;
  memset(key, '#', sizeof key);
  memset(val, '#', sizeof val);
  CHECK_EQ_INT(mr_query_next(&it, key, 4, &kl, val, 3, &vl), 1);
  CHECK_SPAN(key, kl, "long");
  CHECK_SPAN(val, vl, "abc");
  CHECK_MEM(key + 4, "####", 4);
  CHECK_MEM(val + 3, "####", 4);
  /* Truncation applies to decoded bytes, and the next pair is intact. */
  memset(key, '#', sizeof key);
  memset(val, '#', sizeof val);
  CHECK_EQ_INT(mr_query_next(&it, key, 4, &kl, val, 3, &vl), 1);
  CHECK_SPAN(key, kl, "k");
  CHECK_SPAN(val, vl, "ABC");
  CHECK_MEM(val + 3, "####", 4);
  CHECK_EQ_INT(mr_query_next(&it, key, 4, &kl, val, 3, &vl), 1);
  CHECK_SPAN(key, kl, "x");
  CHECK_SPAN(val, vl, "1");
  CHECK_EQ_INT(mr_query_next(&it, key, 4, &kl, val, 3, &vl), 0);
  free(copy);

  /* Zero-sized buffers: nothing is written, lengths are 0, pairs still
   * counted. */
  q = "a=1&bb=22";
  mr_query_init(&it, q, strlen(q));
  char k0 = '#', v0 = '#';
  int n = 0;
  while (mr_query_next(&it, &k0, 0, &kl, &v0, 0, &vl)) {
    n++;
    CHECK_EQ_INT(kl, 0);
    CHECK_EQ_INT(vl, 0);
  }
  CHECK_EQ_INT(n, 2);
  CHECK(k0 == '#' && v0 == '#');

  /* Cut exactly at a buffer's end, and one byte short of it. */
  q = "abc=de";
  mr_query_init(&it, q, strlen(q));
  char kb[3], vb[2];
  CHECK_EQ_INT(mr_query_next(&it, kb, 3, &kl, vb, 2, &vl), 1);
  CHECK_SPAN(kb, kl, "abc");
  CHECK_SPAN(vb, vl, "de");
  mr_query_init(&it, q, strlen(q));
  CHECK_EQ_INT(mr_query_next(&it, kb, 2, &kl, vb, 1, &vl), 1);
  CHECK_SPAN(kb, kl, "ab");
  CHECK_SPAN(vb, vl, "d");
}

/* Every byte value round-trips through percent encoding. */
static void test_all_bytes(void) {
  char q[3 + 256 * 3];
  size_t n = 0;
  memcpy(q, "v=", 2);
  n = 2;
  for (int c = 0; c < 256; c++)
    n += (size_t)sprintf(q + n, "%%%02X", c);
  char *copy = (char *)dup_exact((const uint8_t *)q, n);
  mr_query_iter it;
  mr_query_init(&it, copy, n);
  char key[8], val[300];
  size_t kl, vl;
  CHECK_EQ_INT(mr_query_next(&it, key, sizeof key, &kl, val, sizeof val, &vl),
               1);
  CHECK_SPAN(key, kl, "v");
  CHECK_EQ_INT(vl, 256);
  int ok = vl == 256;
  for (int c = 0; ok && c < 256; c++)
    if ((unsigned char)val[c] != c)
      ok = 0;
  CHECK(ok);
  free(copy);
}

int main(void) {
  test_basic();
  test_empty();
  test_malformed();
  test_binary_utf8();
  test_binary_bytes();
  test_truncation();
  test_all_bytes();
  return test_report();
}
