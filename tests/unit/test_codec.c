/* Unit tests for server frame encoding (core/codec.c).
 *
 * Expected bytes are written out by hand from RFC 6455 section 5.2, so the
 * tests do not share any arithmetic with the encoder. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "test_util.h"

/* Writes a header into a buffer pre-filled with a canary and checks the
 * returned length, the exact header bytes and that nothing past them was
 * touched. */
static void check_header(int opcode, size_t len, const uint8_t *want,
                         size_t wlen) {
  uint8_t out[32];
  memset(out, 0xEE, sizeof out);
  CHECK_EQ_INT(mr_frame_header_len(len), wlen);
  size_t n = mr_frame_write_header(out, opcode, len);
  CHECK_EQ_INT(n, wlen);
  if (!CHECK_MEM(out, want, wlen))
    fprintf(stderr, "  (payload length %zu)\n", len);
  int clean = 1;
  for (size_t i = wlen; i < sizeof out; i++)
    if (out[i] != 0xEE)
      clean = 0;
  CHECK(clean);
}

static void test_header_lengths(void) {
  /* 7-bit lengths. */
  check_header(MR_OP_TEXT, 0, (const uint8_t[]){0x81, 0x00}, 2);
  check_header(MR_OP_TEXT, 1, (const uint8_t[]){0x81, 0x01}, 2);
  check_header(MR_OP_BINARY, 125, (const uint8_t[]){0x82, 0x7D}, 2);
  /* 16-bit lengths, big-endian. */
  check_header(MR_OP_TEXT, 126, (const uint8_t[]){0x81, 0x7E, 0x00, 0x7E}, 4);
  check_header(MR_OP_TEXT, 127, (const uint8_t[]){0x81, 0x7E, 0x00, 0x7F}, 4);
  check_header(MR_OP_BINARY, 256, (const uint8_t[]){0x82, 0x7E, 0x01, 0x00},
               4);
  check_header(MR_OP_BINARY, 0x1234,
               (const uint8_t[]){0x82, 0x7E, 0x12, 0x34}, 4);
  check_header(MR_OP_BINARY, 65535, (const uint8_t[]){0x82, 0x7E, 0xFF, 0xFF},
               4);
  /* 64-bit lengths, big-endian, most significant bit clear. */
  check_header(MR_OP_BINARY, 65536,
               (const uint8_t[]){0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00},
               10);
  check_header(MR_OP_TEXT, 1048576,
               (const uint8_t[]){0x81, 0x7F, 0, 0, 0, 0, 0, 0x10, 0x00, 0x00},
               10);
  check_header(MR_OP_BINARY, 0xFFFFFFFFu,
               (const uint8_t[]){0x82, 0x7F, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF,
                                 0xFF},
               10);
#if SIZE_MAX > 0xFFFFFFFFu
  check_header(MR_OP_BINARY, (size_t)0x100000001ull,
               (const uint8_t[]){0x82, 0x7F, 0, 0, 0, 0x01, 0, 0, 0, 0x01},
               10);
  check_header(MR_OP_BINARY, (size_t)0x0102030405060708ull,
               (const uint8_t[]){0x82, 0x7F, 0x01, 0x02, 0x03, 0x04, 0x05,
                                 0x06, 0x07, 0x08},
               10);
#endif
}

static void test_header_opcodes(void) {
  /* FIN is always set, RSV bits always clear, the opcode in the low nibble. */
  static const struct {
    int op;
    uint8_t b0;
  } ops[] = {{MR_OP_CONT, 0x80},  {MR_OP_TEXT, 0x81}, {MR_OP_BINARY, 0x82},
             {MR_OP_CLOSE, 0x88}, {MR_OP_PING, 0x89}, {MR_OP_PONG, 0x8A}};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    uint8_t out[10];
    CHECK_EQ_INT(mr_frame_write_header(out, ops[i].op, 5), 2);
    CHECK_EQ_INT(out[0], ops[i].b0);
    CHECK_EQ_INT(out[1], 5); /* MASK bit clear: server frames are unmasked */
  }
  CHECK_EQ_INT(MR_OP_CONT, 0x0);
  CHECK_EQ_INT(MR_OP_TEXT, 0x1);
  CHECK_EQ_INT(MR_OP_BINARY, 0x2);
  CHECK_EQ_INT(MR_OP_CLOSE, 0x8);
  CHECK_EQ_INT(MR_OP_PING, 0x9);
  CHECK_EQ_INT(MR_OP_PONG, 0xA);
  /* Stray high bits of an opcode never leak into FIN/RSV. */
  uint8_t out[10];
  mr_frame_write_header(out, 0x71, 0);
  CHECK_EQ_INT(out[0], 0x81);
}

/* mr_frame_new puts the payload right after the header, for each size
 * class, and returns a block with one reference. */
static void check_frame(int opcode, size_t len) {
  uint8_t *payload = malloc(len ? len : 1);
  if (!payload)
    exit(2);
  for (size_t i = 0; i < len; i++)
    payload[i] = (uint8_t)(i * 13 + 5);
  mr_buf *b = mr_frame_new(opcode, len ? payload : NULL, len);
  if (CHECK(b != NULL)) {
    size_t h = len < 126 ? 2 : len <= 65535 ? 4 : 10;
    CHECK_EQ_INT(b->refs, 1);
    CHECK_EQ_INT(b->len, h + len);
    uint8_t want[10];
    size_t wh = mr_frame_write_header(want, opcode, len);
    CHECK_EQ_INT(wh, h);
    CHECK_MEM(b->data, want, h);
    CHECK_EQ_INT(b->data[0], 0x80 | opcode);
    if (len)
      CHECK_MEM(b->data + h, payload, len);
    mr_buf_release(b);
  }
  free(payload);
}

static void test_frame_new(void) {
  check_frame(MR_OP_TEXT, 0);
  check_frame(MR_OP_TEXT, 1);
  check_frame(MR_OP_BINARY, 125);
  check_frame(MR_OP_BINARY, 126);
  check_frame(MR_OP_TEXT, 65535);
  check_frame(MR_OP_BINARY, 65536);
  check_frame(MR_OP_BINARY, 200000);
  check_frame(MR_OP_PING, 4);

  /* One literal frame, byte for byte. */
  mr_buf *b = mr_frame_new(MR_OP_TEXT, "Hello", 5);
  if (CHECK(b != NULL)) {
    CHECK_EQ_INT(b->len, 7);
    CHECK_MEM(b->data, "\x81\x05Hello", 7);
    mr_buf_release(b);
  }
}

/* ---- close frames ---- */

static void test_close_frames(void) {
  mr_buf *b = mr_frame_new_close(1000, "bye", 3);
  if (CHECK(b != NULL)) {
    CHECK_EQ_INT(b->len, 7);
    CHECK_MEM(b->data, "\x88\x05\x03\xE8" "bye", 7);
    CHECK_EQ_INT(b->refs, 1);
    mr_buf_release(b);
  }

  /* A code without a reason: a two-byte body. */
  b = mr_frame_new_close(MR_CLOSE_TOO_BIG, NULL, 0);
  if (CHECK(b != NULL)) {
    CHECK_EQ_INT(b->len, 4);
    CHECK_MEM(b->data, "\x88\x02\x03\xF1", 4); /* 1009 */
    mr_buf_release(b);
  }
  b = mr_frame_new_close(4999, "", 0);
  if (CHECK(b != NULL)) {
    CHECK_EQ_INT(b->len, 4);
    CHECK_MEM(b->data, "\x88\x02\x13\x87", 4);
    mr_buf_release(b);
  }

  /* Code 0: no body at all, whatever reason is given. */
  b = mr_frame_new_close(0, NULL, 0);
  if (CHECK(b != NULL)) {
    CHECK_EQ_INT(b->len, 2);
    CHECK_MEM(b->data, "\x88\x00", 2);
    mr_buf_release(b);
  }
  b = mr_frame_new_close(0, "ignored", 7);
  if (CHECK(b != NULL)) {
    CHECK_EQ_INT(b->len, 2);
    CHECK_MEM(b->data, "\x88\x00", 2);
    mr_buf_release(b);
  }

  /* Reasons up to 123 bytes are kept; longer ones are cut at 123, so the
   * body never exceeds the 125 bytes allowed for a control frame. */
  char reason[300];
  for (size_t i = 0; i < sizeof reason; i++)
    reason[i] = (char)('a' + i % 26);
  static const size_t lens[] = {122, 123, 124, 125, 126, 300};
  for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
    size_t len = lens[k], kept = len > 123 ? 123 : len;
    b = mr_frame_new_close(MR_CLOSE_GOING_AWAY, reason, len);
    if (!CHECK(b != NULL))
      continue;
    CHECK_EQ_INT(b->len, 2 + 2 + kept);
    CHECK_EQ_INT(b->data[0], 0x88);
    CHECK_EQ_INT(b->data[1], 2 + kept);
    CHECK_EQ_INT(b->data[2], 0x03); /* 1001 */
    CHECK_EQ_INT(b->data[3], 0xE9);
    CHECK_MEM(b->data + 4, reason, kept);
    mr_buf_release(b);
  }
}

static void test_close_codes(void) {
  static const struct {
    unsigned code;
    int valid;
  } cases[] = {
      {0, 0},     {999, 0},   {1000, 1},  {1001, 1},  {1002, 1},
      {1003, 1},  {1004, 0},  {1005, 0},  {1006, 0},  {1007, 1},
      {1008, 1},  {1009, 1},  {1010, 1},  {1011, 1},  {1012, 1},
      {1013, 1},  {1014, 1},  {1015, 0},  {1016, 0},  {1100, 0},
      {2000, 0},  {2999, 0},  {3000, 1},  {3999, 1},  {4000, 1},
      {4999, 1},  {5000, 0},  {65535, 0}, {65536 + 1000, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (!CHECK(!!mr_close_code_valid(cases[i].code) == cases[i].valid))
      fprintf(stderr, "  code %u: expected %s\n", cases[i].code,
              cases[i].valid ? "valid" : "invalid");
  }
  CHECK_EQ_INT(MR_CLOSE_NORMAL, 1000);
  CHECK_EQ_INT(MR_CLOSE_GOING_AWAY, 1001);
  CHECK_EQ_INT(MR_CLOSE_PROTOCOL, 1002);
  CHECK_EQ_INT(MR_CLOSE_NO_STATUS, 1005);
  CHECK_EQ_INT(MR_CLOSE_ABNORMAL, 1006);
  CHECK_EQ_INT(MR_CLOSE_BAD_DATA, 1007);
  CHECK_EQ_INT(MR_CLOSE_POLICY, 1008);
  CHECK_EQ_INT(MR_CLOSE_TOO_BIG, 1009);
  CHECK_EQ_INT(MR_CLOSE_INTERNAL, 1011);
  CHECK_EQ_INT(MR_CLOSE_TRY_AGAIN, 1013);
}

/* Builds a masked client frame header (mask key zero) into out. */
static size_t client_header(uint8_t *out, int fin, int opcode, uint64_t len) {
  size_t n = 0;
  out[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  if (len < 126) {
    out[n++] = (uint8_t)(0x80 | len);
  } else if (len <= 0xFFFF) {
    out[n++] = 0x80 | 126;
    out[n++] = (uint8_t)(len >> 8);
    out[n++] = (uint8_t)len;
  } else {
    out[n++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--)
      out[n++] = (uint8_t)(len >> (8 * i));
  }
  memset(out + n, 0, 4);
  return n + 4;
}

/* Feeds the stream to a fresh tracker in pieces of `step` bytes and returns
 * the absolute offset at which it refused, or -1 when it accepted all. */
static long track_split(const uint8_t *p, size_t n, uint64_t max, size_t step) {
  mr_frame_tracker t;
  memset(&t, 0, sizeof t);
  for (size_t off = 0; off < n; off += step) {
    size_t len = n - off < step ? n - off : step;
    size_t ok = 0;
    if (mr_frame_track(&t, p + off, len, max, &ok) == MR_ETOOBIG)
      return (long)(off + ok);
  }
  return -1;
}

static void test_tracker(void) {
  uint8_t s[4096];
  size_t n = 0;
  /* A 100-byte text message, a ping, a 3-fragment 300-byte message, then a
   * header announcing 2000 bytes with no payload behind it. */
  n += client_header(s + n, 1, MR_OP_TEXT, 100);
  memset(s + n, 'a', 100);
  n += 100;
  n += client_header(s + n, 1, MR_OP_PING, 4);
  memset(s + n, 'p', 4);
  n += 4;
  for (int i = 0; i < 3; i++) {
    n += client_header(s + n, i == 2, i ? MR_OP_CONT : MR_OP_TEXT, 100);
    memset(s + n, 'b', 100);
    n += 100;
  }
  size_t ok_end = n;
  n += client_header(s + n, 1, MR_OP_BINARY, 2000);
  size_t bad_end = n;

  /* The whole stream up to the big header is fine at max 300, at any split. */
  for (size_t step = 1; step <= ok_end; step++)
    CHECK_EQ_INT(track_split(s, ok_end, 300, step), -1);
  /* The refusal lands exactly at the end of the offending header, however
   * the bytes were split. */
  for (size_t step = 1; step <= bad_end; step++)
    CHECK_EQ_INT(track_split(s, bad_end, 1000, step), (long)bad_end);
  /* Fragments add up: at max 299 the 3-fragment message is refused at the
   * header of its third fragment. */
  CHECK_EQ_INT(track_split(s, ok_end, 299, 7), (long)(ok_end - 100));
  /* A 64-bit length near the top cannot wrap the running total. */
  uint8_t h[32];
  size_t hn = client_header(h, 0, MR_OP_TEXT, 10);
  memset(h + hn, 'x', 10);
  hn += 10;
  size_t hn2 = hn + client_header(h + hn, 1, MR_OP_CONT, UINT64_MAX - 5);
  CHECK_EQ_INT(track_split(h, hn2, 1000, 1), (long)hn2);
  /* Control frames never count toward the message. */
  uint8_t c[64];
  size_t cn = client_header(c, 1, MR_OP_PONG, 125);
  CHECK_EQ_INT(track_split(c, cn, 10, 1), -1);
}

int main(void) {
  test_header_lengths();
  test_header_opcodes();
  test_frame_new();
  test_close_frames();
  test_close_codes();
  test_tracker();
  return test_report();
}
