/* Unit tests for frame encoding, server and client frames, and the frame
 * tracker (core/codec.c).
 *
 * The encoders' expected bytes are written out by hand from RFC 6455
 * sections 5.2 and 5.7, so those tests do not share any arithmetic with the
 * encoder. The tracker's input is then built with the checked encoder. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "error.h"
#include "test_util.h"

/* The canary that output buffers are pre-filled with, so that a write past
 * the expected end shows. */
enum { CANARY = 0xEE };

/* Checks what an encoder wrote into out (cap bytes, pre-filled with the
 * canary) and returned as n: the exact wanted bytes, and nothing past them
 * touched. len is the payload length, for the failure message. */
static void check_written(const uint8_t *out, size_t cap, size_t n,
                          const uint8_t *want, size_t wlen, uint64_t len) {
  CHECK_EQ_INT(n, wlen);
  if (!CHECK_MEM(out, want, wlen))
    fprintf(stderr, "  (payload length %llu)\n", (unsigned long long)len);
  int clean = 1;
  for (size_t i = wlen; i < cap; i++)
    if (out[i] != CANARY)
      clean = 0;
  CHECK(clean);
}

/* Writes a server header and checks its length and bytes. */
static void check_header(int opcode, size_t len, const uint8_t *want,
                         size_t wlen) {
  uint8_t out[32];
  memset(out, CANARY, sizeof out);
  CHECK_EQ_INT(mr_frame_header_len(len), wlen);
  size_t n = mr_frame_write_header(out, opcode, len);
  check_written(out, sizeof out, n, want, wlen, len);
}

static void test_header_lengths(void) {
  /* 7-bit lengths. */
  check_header(MR_OP_TEXT, 0, (const uint8_t[]){0x81, 0x00}, 2);
  check_header(MR_OP_TEXT, 1, (const uint8_t[]){0x81, 0x01}, 2);
  check_header(MR_OP_BINARY, 125, (const uint8_t[]){0x82, 0x7D}, 2);
  /* 16-bit lengths, big-endian. */
  check_header(MR_OP_TEXT, 126, (const uint8_t[]){0x81, 0x7E, 0x00, 0x7E}, 4);
  check_header(MR_OP_TEXT, 127, (const uint8_t[]){0x81, 0x7E, 0x00, 0x7F}, 4);
  check_header(MR_OP_BINARY, 256, (const uint8_t[]){0x82, 0x7E, 0x01, 0x00}, 4);
  check_header(MR_OP_BINARY, 0x1234, (const uint8_t[]){0x82, 0x7E, 0x12, 0x34},
               4);
  check_header(MR_OP_BINARY, 65535, (const uint8_t[]){0x82, 0x7E, 0xFF, 0xFF},
               4);
  /* 64-bit lengths, big-endian, most significant bit clear. */
  check_header(MR_OP_BINARY, 65536,
               (const uint8_t[]){0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00},
               10);
  check_header(MR_OP_TEXT, 1048576,
               (const uint8_t[]){0x81, 0x7F, 0, 0, 0, 0, 0, 0x10, 0x00, 0x00},
               10);
  check_header(
      MR_OP_BINARY, 0xFFFFFFFFu,
      (const uint8_t[]){0x82, 0x7F, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF}, 10);
#if SIZE_MAX > 0xFFFFFFFFu
  check_header(MR_OP_BINARY, (size_t)0x100000001ull,
               (const uint8_t[]){0x82, 0x7F, 0, 0, 0, 0x01, 0, 0, 0, 0x01}, 10);
  check_header(MR_OP_BINARY, (size_t)0x0102030405060708ull,
               (const uint8_t[]){0x82, 0x7F, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
                                 0x07, 0x08},
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
    CHECK_MEM(b->data,
              "\x88\x05\x03\xE8"
              "bye",
              7);
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
      {0, 0},    {999, 0},  {1000, 1}, {1001, 1},  {1002, 1},         {1003, 1},
      {1004, 0}, {1005, 0}, {1006, 0}, {1007, 1},  {1008, 1},         {1009, 1},
      {1010, 1}, {1011, 1}, {1012, 1}, {1013, 1},  {1014, 1},         {1015, 0},
      {1016, 0}, {1100, 0}, {2000, 0}, {2999, 0},  {3000, 1},         {3999, 1},
      {4000, 1}, {4999, 1}, {5000, 0}, {65535, 0}, {65536 + 1000, 0},
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

/* ---- client frames ---- */

/* The mask key of the examples in RFC 6455 section 5.7. */
static const uint8_t KEY[4] = {0x37, 0xFA, 0x21, 0x3D};

/* Writes a client header and checks its length and bytes. */
static void check_client_header(int fin, int rsv, int opcode, uint64_t len,
                                const uint8_t *key, const uint8_t *want,
                                size_t wlen) {
  uint8_t out[32];
  memset(out, CANARY, sizeof out);
  size_t n = mr_frame_write_client_header(out, fin, rsv, opcode, len, key);
  check_written(out, sizeof out, n, want, wlen, len);
}

static void test_client_header_lengths(void) {
  /* Masked: the MASK bit set in the second byte, the key after the length. */
  check_client_header(1, 0, MR_OP_TEXT, 0, KEY,
                      (const uint8_t[]){0x81, 0x80, 0x37, 0xFA, 0x21, 0x3D}, 6);
  check_client_header(1, 0, MR_OP_TEXT, 125, KEY,
                      (const uint8_t[]){0x81, 0xFD, 0x37, 0xFA, 0x21, 0x3D}, 6);
  check_client_header(
      1, 0, MR_OP_TEXT, 126, KEY,
      (const uint8_t[]){0x81, 0xFE, 0x00, 0x7E, 0x37, 0xFA, 0x21, 0x3D}, 8);
  check_client_header(
      1, 0, MR_OP_BINARY, 65535, KEY,
      (const uint8_t[]){0x82, 0xFE, 0xFF, 0xFF, 0x37, 0xFA, 0x21, 0x3D}, 8);
  check_client_header(1, 0, MR_OP_BINARY, 65536, KEY,
                      (const uint8_t[]){0x82, 0xFF, 0, 0, 0, 0, 0, 0x01, 0x00,
                                        0x00, 0x37, 0xFA, 0x21, 0x3D},
                      14);
  /* The length is 64 bits wide whatever size_t is. */
  check_client_header(1, 0, MR_OP_BINARY, 0x0102030405060708ull, KEY,
                      (const uint8_t[]){0x82, 0xFF, 0x01, 0x02, 0x03, 0x04,
                                        0x05, 0x06, 0x07, 0x08, 0x37, 0xFA,
                                        0x21, 0x3D},
                      14);
  /* Unmasked: no MASK bit and no key, as a server must refuse from a client. */
  check_client_header(1, 0, MR_OP_TEXT, 125, NULL,
                      (const uint8_t[]){0x81, 0x7D}, 2);
  check_client_header(1, 0, MR_OP_TEXT, 126, NULL,
                      (const uint8_t[]){0x81, 0x7E, 0x00, 0x7E}, 4);
  check_client_header(1, 0, MR_OP_BINARY, 65535, NULL,
                      (const uint8_t[]){0x82, 0x7E, 0xFF, 0xFF}, 4);
  check_client_header(
      1, 0, MR_OP_BINARY, 65536, NULL,
      (const uint8_t[]){0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00}, 10);
  /* An unmasked FIN frame without RSV bits is exactly a server header. */
  static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 1048576};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    uint8_t a[MR_FRAME_HEADER_MAX], b[MR_FRAME_HEADER_MAX];
    size_t na =
        mr_frame_write_client_header(a, 1, 0, MR_OP_PING, lens[i], NULL);
    size_t nb = mr_frame_write_header(b, MR_OP_PING, lens[i]);
    CHECK_EQ_INT(na, nb);
    CHECK_MEM(a, b, nb);
  }
}

static void test_client_header_first_byte(void) {
  /* FIN, the three RSV bits (RSV1 is 0x40) and the opcode. */
  check_client_header(0, 0, MR_OP_CONT, 0, NULL, (const uint8_t[]){0x00, 0x00},
                      2);
  check_client_header(0, 0, MR_OP_TEXT, 0, NULL, (const uint8_t[]){0x01, 0x00},
                      2);
  check_client_header(1, 4, MR_OP_TEXT, 0, NULL, (const uint8_t[]){0xC1, 0x00},
                      2);
  check_client_header(1, 1, MR_OP_BINARY, 0, NULL,
                      (const uint8_t[]){0x92, 0x00}, 2);
  check_client_header(1, 7, MR_OP_PONG, 0, NULL, (const uint8_t[]){0xFA, 0x00},
                      2);
  check_client_header(0, 0, 0xF, 0, NULL, (const uint8_t[]){0x0F, 0x00}, 2);
  /* Any true fin sets FIN, and stray high bits of rsv and opcode never leak
   * into the neighbouring fields. */
  check_client_header(2, 0, MR_OP_TEXT, 0, NULL, (const uint8_t[]){0x81, 0x00},
                      2);
  check_client_header(0, 0x0C, 0x71, 0, NULL, (const uint8_t[]){0x41, 0x00}, 2);
}

/* Encodes a whole client frame (FIN as given, no RSV bits) and checks its
 * length and bytes. */
static void check_client_frame_bytes(int fin, int opcode, const char *payload,
                                     size_t len, const uint8_t *key,
                                     const uint8_t *want, size_t wlen) {
  uint8_t out[32];
  memset(out, CANARY, sizeof out);
  size_t n = mr_frame_encode_client(out, fin, 0, opcode, payload, len, key);
  check_written(out, sizeof out, n, want, wlen, len);
}

/* The RFC 6455 section 5.7 examples, byte for byte. */
static void test_client_frame_examples(void) {
  check_client_frame_bytes(
      1, MR_OP_TEXT, "Hello", 5, NULL,
      (const uint8_t[]){0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f}, 7);
  check_client_frame_bytes(1, MR_OP_TEXT, "Hello", 5, KEY,
                           (const uint8_t[]){0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                             0x7f, 0x9f, 0x4d, 0x51, 0x58},
                           11);
  check_client_frame_bytes(0, MR_OP_TEXT, "Hel", 3, NULL,
                           (const uint8_t[]){0x01, 0x03, 0x48, 0x65, 0x6c}, 5);
  check_client_frame_bytes(1, MR_OP_CONT, "lo", 2, NULL,
                           (const uint8_t[]){0x80, 0x02, 0x6c, 0x6f}, 4);
  check_client_frame_bytes(1, MR_OP_PONG, "Hello", 5, KEY,
                           (const uint8_t[]){0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                             0x7f, 0x9f, 0x4d, 0x51, 0x58},
                           11);
  /* Not from the RFC: an empty payload may be NULL, and a masked empty frame
   * still carries its key. */
  check_client_frame_bytes(
      1, MR_OP_PING, NULL, 0, KEY,
      (const uint8_t[]){0x89, 0x80, 0x37, 0xfa, 0x21, 0x3d}, 6);
}

/* A whole client frame at each length boundary, masked and not: the header
 * size, the key, every payload byte, and nothing written past the end. */
static void check_client_frame(size_t len, const uint8_t *key) {
  size_t hlen = (len < 126 ? 2 : len <= 65535 ? 4 : 10) + (key ? 4 : 0);
  uint8_t *payload = malloc(len ? len : 1);
  uint8_t *out = malloc(hlen + len + 1);
  if (!payload || !out)
    exit(2);
  for (size_t i = 0; i < len; i++)
    payload[i] = (uint8_t)(i * 13 + 5);
  memset(out, CANARY, hlen + len + 1);
  size_t n = mr_frame_encode_client(out, 1, 0, MR_OP_BINARY, payload, len, key);
  CHECK_EQ_INT(n, hlen + len);
  CHECK_EQ_INT(out[0], 0x82);
  CHECK_EQ_INT(out[1] & 0x80, key ? 0x80 : 0);
  if (key)
    CHECK_MEM(out + hlen - 4, key, 4);
  int same = 1;
  for (size_t i = 0; i < len; i++)
    if (out[hlen + i] != (key ? payload[i] ^ key[i % 4] : payload[i]))
      same = 0;
  if (!CHECK(same))
    fprintf(stderr, "  (payload length %zu, %s)\n", len,
            key ? "masked" : "unmasked");
  CHECK_EQ_INT(out[hlen + len], CANARY);
  free(out);
  free(payload);
}

static void test_client_frame_lengths(void) {
  static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 70001};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    check_client_frame(lens[i], KEY);
    check_client_frame(lens[i], NULL);
  }
}

static void test_mask(void) {
  uint8_t src[64], whole[64], piece[64];
  for (size_t i = 0; i < sizeof src; i++)
    src[i] = (uint8_t)(i * 7 + 3);
  mr_frame_mask(whole, src, sizeof src, KEY, 0);
  CHECK_EQ_INT(whole[0], src[0] ^ 0x37);
  CHECK_EQ_INT(whole[5], src[5] ^ 0xFA);
  CHECK_EQ_INT(whole[62], src[62] ^ 0x21);
  CHECK_EQ_INT(whole[63], src[63] ^ 0x3D);
  /* Masked in pieces of every size, each starting at its payload offset,
   * the result is the same as in one go. */
  for (size_t step = 1; step <= sizeof src; step++) {
    for (size_t off = 0; off < sizeof src; off += step) {
      size_t n = sizeof src - off < step ? sizeof src - off : step;
      mr_frame_mask(piece + off, src + off, n, KEY, off);
    }
    if (!CHECK_MEM(piece, whole, sizeof whole))
      fprintf(stderr, "  (pieces of %zu)\n", step);
  }
  /* In place, a second masking gives the payload back. */
  memcpy(piece, whole, sizeof piece);
  mr_frame_mask(piece, piece, sizeof piece, KEY, 0);
  CHECK_MEM(piece, src, sizeof src);
  /* Only the payload offset modulo 4 matters, however large. */
  mr_frame_mask(piece, src + 1, 3, KEY, UINT64_C(0x100000001));
  CHECK_MEM(piece, whole + 1, 3);
}

/* ---- frame tracker ---- */

/* A masked client frame header with an all-zero key: the tracker tests need
 * only the framing, and the writer is checked byte for byte above. */
static size_t client_header(uint8_t *out, int fin, int opcode, uint64_t len) {
  static const uint8_t zero_key[4] = {0, 0, 0, 0};
  return mr_frame_write_client_header(out, fin, 0, opcode, len, zero_key);
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
  test_client_header_lengths();
  test_client_header_first_byte();
  test_client_frame_examples();
  test_client_frame_lengths();
  test_mask();
  test_tracker();
  return test_report();
}
