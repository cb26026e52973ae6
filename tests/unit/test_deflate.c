/* Unit tests for permessage-deflate's data path (core/deflate.c): frames
 * that inflate back to the message, what a client's zlib makes (any window,
 * a final block, an empty message) inflated, bombs stopped at the limit
 * with bounded memory, corrupt and truncated data refused, the pool keeping
 * one stream per kind. It also prints the compression ratio on chat-like
 * JSON with and without context takeover, and per zlib level (the README's
 * numbers). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "codec.h"
#include "deflate.h"
#include "error.h"
#include "test_util.h"

/* What a client does (RFC 7692 7.2.1): raw deflate, sync flush, the
 * 00 00 ff ff tail stripped; with finish, a final block instead. Returns
 * the compressed length in out (cap bytes). */
static size_t client_deflate(const void *msg, size_t len, int bits, int finish,
                             uint8_t *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, 6, Z_DEFLATED, -bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return 0;
  z.next_in = (uint8_t *)msg;
  z.avail_in = (uInt)len;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  deflate(&z, finish ? Z_FINISH : Z_SYNC_FLUSH);
  size_t n = cap - z.avail_out;
  deflateEnd(&z);
  if (!finish && n >= 4 && memcmp(out + n - 4, "\0\0\xff\xff", 4) == 0)
    n -= 4;
  return n;
}

/* Inflates a server frame's payload with the client's window. */
static size_t client_inflate(const uint8_t *in, size_t len, int bits,
                             uint8_t *out, size_t cap) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, -bits) != Z_OK)
    return (size_t)-1;
  uint8_t *buf = malloc(len + 4);
  memcpy(buf, in, len);
  memcpy(buf + len, "\0\0\xff\xff", 4);
  z.next_in = buf;
  z.avail_in = (uInt)len + 4;
  z.next_out = out;
  z.avail_out = (uInt)cap;
  int r = inflate(&z, Z_SYNC_FLUSH);
  size_t n = cap - z.avail_out;
  inflateEnd(&z);
  free(buf);
  return r == Z_OK || r == Z_STREAM_END ? n : (size_t)-1;
}

/* A frame's payload: skips the (unmasked server) header. */
static const uint8_t *frame_payload(const mr_buf *f, size_t *len) {
  size_t h = 2;
  uint8_t l7 = f->data[1] & 0x7F;
  if (l7 == 126)
    h = 4;
  else if (l7 == 127)
    h = 10;
  *len = f->len - h;
  return f->data + h;
}

static char *chat_json(int i, size_t *len) {
  static const char *words[] = {"hello", "world",  "lobby", "ready", "game",
                                "next",  "round",  "team",  "blue",  "red",
                                "ok",    "thanks", "gg",    "wait",  "start"};
  static char buf[512];
  int n = snprintf(buf, sizeof buf,
                   "{\"type\":\"message\",\"room\":\"lobby-%d\",\"from\":"
                   "\"user%04d\",\"ts\":%lld,\"text\":\"",
                   i % 7, (i * 37) % 1000, 1764640000000LL + i * 1337);
  int nw = 3 + i % 9;
  for (int w = 0; w < nw; w++)
    n += snprintf(buf + n, sizeof buf - (size_t)n, "%s%s", w ? " " : "",
                  words[(i * 7 + w * 3) % 15]);
  n += snprintf(buf + n, sizeof buf - (size_t)n, "\"}");
  *len = (size_t)n;
  return buf;
}

static void test_roundtrip(void) {
  mr_zpool *p = mr_zpool_new(1);
  static uint8_t msg[300000], back[300000];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)("{\"a\":1,\"text\":\"hello\"}"[i % 23]);
  size_t sizes[] = {1, 128, 1000, 65536, sizeof msg};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
    for (unsigned bits = MR_DEFLATE_MIN_BITS; bits <= MR_DEFLATE_MAX_BITS;
         bits++) {
      mr_buf *f = NULL;
      CHECK_EQ_INT(mr_deflate_frame(p, MR_OP_TEXT, bits, msg, sizes[k], &f), 0);
      if (sizes[k] < 10) {
        CHECK(f == NULL); /* too small to shrink: sent plain */
        continue;
      }
      if (!CHECK(f != NULL))
        continue;
      CHECK_EQ_INT(f->data[0], 0x80 | 0x40 | MR_OP_TEXT); /* FIN, RSV1 */
      size_t plen;
      const uint8_t *pl = frame_payload(f, &plen);
      CHECK(plen < sizes[k]);
      /* The client inflates with exactly the window it agreed to. */
      CHECK_EQ_INT(client_inflate(pl, plen, (int)bits, back, sizeof back),
                   sizes[k]);
      CHECK(memcmp(back, msg, sizes[k]) == 0);
      /* And the server's own inflate reads it back. */
      uint8_t *out;
      size_t out_len;
      CHECK_EQ_INT(mr_inflate_message(p, pl, plen, sizeof msg, &out, &out_len),
                   0);
      CHECK_EQ_INT(out_len, sizes[k]);
      CHECK(out && memcmp(out, msg, sizes[k]) == 0);
      free(out);
      mr_buf_release(f);
    }
  /* One inflater, one deflater per window size used; no more. */
  CHECK_EQ_INT(mr_zpool_idle(p), 1 + 7);
  mr_zpool_free(p);
}

static void test_incompressible_goes_plain(void) {
  mr_zpool *p = mr_zpool_new(9);
  uint8_t msg[4096];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)test_rng();
  mr_buf *f = (mr_buf *)1;
  CHECK_EQ_INT(mr_deflate_frame(p, MR_OP_BINARY, 15, msg, sizeof msg, &f), 0);
  CHECK(f == NULL);
  mr_zpool_free(p);
}

static void test_client_messages(void) {
  mr_zpool *p = mr_zpool_new(1);
  static uint8_t msg[100000], z[110000];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)(i % 251 < 100 ? 'a' + i % 26 : i % 7);
  /* zlib cannot make raw deflate with an 8-bit window (it refuses it). */
  for (int bits = 9; bits <= 15; bits++)
    for (int finish = 0; finish < 2; finish++) {
      size_t n = client_deflate(msg, sizeof msg, bits, finish, z, sizeof z);
      uint8_t *out;
      size_t out_len;
      CHECK_EQ_INT(mr_inflate_message(p, z, n, sizeof msg, &out, &out_len), 0);
      CHECK_EQ_INT(out_len, sizeof msg);
      CHECK(out && memcmp(out, msg, sizeof msg) == 0);
      free(out);
    }
  /* An empty message: what zlib makes for "" (0x00 once the tail is
   * stripped), and no payload at all. */
  size_t n = client_deflate("", 0, 15, 0, z, sizeof z);
  uint8_t *out = (uint8_t *)1;
  size_t out_len = 1;
  CHECK_EQ_INT(mr_inflate_message(p, z, n, 10, &out, &out_len), 0);
  CHECK(out == NULL && out_len == 0);
  CHECK_EQ_INT(mr_inflate_message(p, z, 0, 10, &out, &out_len), 0);
  CHECK_EQ_INT(out_len, 0);
  /* Exactly the limit is fine; one byte more is not. */
  n = client_deflate(msg, 1000, 15, 0, z, sizeof z);
  CHECK_EQ_INT(mr_inflate_message(p, z, n, 1000, &out, &out_len), 0);
  free(out);
  CHECK_EQ_INT(mr_inflate_message(p, z, n, 999, &out, &out_len), MR_ETOOBIG);
  CHECK(out == NULL);
  mr_zpool_free(p);
}

static void test_bomb(void) {
  /* 64 MiB of zeros compress to ~64 KiB; with a 1 MiB limit inflation
   * stops at the limit. */
  size_t big = 64u << 20;
  uint8_t *zeros = calloc(1, big);
  static uint8_t z[1 << 20];
  size_t n = client_deflate(zeros, big, 15, 0, z, sizeof z);
  free(zeros);
  CHECK(n > 0 && n < 200000);
  mr_zpool *p = mr_zpool_new(1);
  uint8_t *out;
  size_t out_len;
  CHECK_EQ_INT(mr_inflate_message(p, z, n, 1 << 20, &out, &out_len),
               MR_ETOOBIG);
  CHECK(out == NULL);
  mr_zpool_free(p);
}

static void test_corrupt(void) {
  mr_zpool *p = mr_zpool_new(1);
  uint8_t *out;
  size_t out_len;
  /* Block type 3 is reserved. */
  const uint8_t reserved[] = {0xff, 0xff, 0xff};
  CHECK_EQ_INT(
      mr_inflate_message(p, reserved, sizeof reserved, 1000, &out, &out_len),
      MR_EDEFLATE);
  /* A stored block whose length and its complement disagree. */
  const uint8_t stored[] = {0x00, 0x05, 0x00, 0x00, 0x00, 'h', 'e'};
  CHECK_EQ_INT(
      mr_inflate_message(p, stored, sizeof stored, 1000, &out, &out_len),
      MR_EDEFLATE);
  /* A message cut in the middle of a block. */
  static uint8_t msg[5000], z[6000];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)("chat chat json "[i % 15] + i % 3);
  size_t n = client_deflate(msg, sizeof msg, 15, 0, z, sizeof z);
  CHECK_EQ_INT(mr_inflate_message(p, z, n / 2, 10000, &out, &out_len),
               MR_EDEFLATE);
  /* The pool's inflater still works after failures. */
  CHECK_EQ_INT(mr_inflate_message(p, z, n, 10000, &out, &out_len), 0);
  CHECK_EQ_INT(out_len, sizeof msg);
  free(out);
  CHECK_EQ_INT(mr_zpool_idle(p), 1);
  mr_zpool_free(p);
}

/* Any bytes: never more than the limit, never a crash. */
static void test_random_input(void) {
  mr_zpool *p = mr_zpool_new(1);
  uint8_t in[64];
  for (int round = 0; round < 100000; round++) {
    size_t len = test_rng() % sizeof in;
    for (size_t i = 0; i < len; i++)
      in[i] = (uint8_t)test_rng();
    uint8_t *out;
    size_t out_len;
    int r = mr_inflate_message(p, in, len, 300, &out, &out_len);
    if (r == 0)
      CHECK(out_len <= 300);
    else
      CHECK(r == MR_EDEFLATE || r == MR_ETOOBIG);
    free(out);
  }
  mr_zpool_free(p);
}

/* The README's numbers: bytes on the wire for 2000 chat-like JSON
 * messages, compressed one by one with no context takeover (what moonroom
 * does) and with context takeover (one stream for the whole sequence, what
 * it gives up), and the time per level. Prints; checks only that no
 * context takeover still shrinks the messages. */
static void measure_ratio(void) {
  enum { N = 2000 };
  size_t plain = 0, nct[10] = {0}, ct = 0;
  double secs[10] = {0};
  for (int level = 1; level <= 9; level++) {
    mr_zpool *p = mr_zpool_new(level);
    clock_t t0 = clock();
    for (int rep = 0; rep < 5; rep++)
      for (int i = 0; i < N; i++) {
        size_t len;
        char *m = chat_json(i, &len);
        mr_buf *f = NULL;
        mr_deflate_frame(p, MR_OP_TEXT, 15, m, len, &f);
        if (rep == 0) {
          nct[level] += f ? f->len : mr_frame_header_len(len) + len;
          if (level == 1)
            plain += mr_frame_header_len(len) + len;
        }
        mr_buf_release(f);
      }
    secs[level] = (double)(clock() - t0) / CLOCKS_PER_SEC / (5.0 * N);
    mr_zpool_free(p);
  }
  z_stream z;
  memset(&z, 0, sizeof z);
  deflateInit2(&z, 1, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
  static uint8_t out[4096];
  for (int i = 0; i < N; i++) {
    size_t len;
    char *m = chat_json(i, &len);
    z.next_in = (uint8_t *)m;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = sizeof out;
    deflate(&z, Z_SYNC_FLUSH);
    size_t n = sizeof out - z.avail_out - 4;
    ct += mr_frame_header_len(n) + n;
  }
  deflateEnd(&z);
  printf("chat-like JSON, %d messages, %zu plain bytes on the wire "
         "(frames):\n",
         N, plain);
  printf("  context takeover, level 1:    %zu bytes (%.2fx)\n", ct,
         (double)plain / (double)ct);
  for (int level = 1; level <= 9; level++)
    printf("  no context takeover, level %d: %zu bytes (%.2fx), %.1f us/msg\n",
           level, nct[level], (double)plain / (double)nct[level],
           secs[level] * 1e6);
  CHECK(nct[1] < plain);
}

int main(void) {
  test_roundtrip();
  test_incompressible_goes_plain();
  test_client_messages();
  test_bomb();
  test_corrupt();
  test_random_input();
  measure_ratio();
  return test_report();
}
