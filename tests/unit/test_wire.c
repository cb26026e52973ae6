/* Unit tests for the cluster wire format (core/wire.c).
 *
 * Every case calls the real encoders and decoders. Inputs handed to the
 * decoders are copied into heap blocks of exactly their length, so that a
 * sanitizer build catches any read past the end of a payload. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "error.h"
#include "test_util.h"
#include "wire.h"

/* Returns 1 when [p, p + n) lies inside [base, base + len). */
static int inside(const void *p, size_t n, const uint8_t *base, size_t len) {
  const uint8_t *q = p;
  return q >= base && q <= base + len && n <= (size_t)(base + len - q);
}

/* ---- Framing helpers ---- */

/* Runs next_frame over a complete single frame and checks the result. On
 * success returns the payload (inside buf) and sets *plen. */
static const uint8_t *one_frame(const mr_wbuf *b, size_t *plen) {
  const uint8_t *payload = NULL;
  size_t consumed = 0;
  *plen = 0;
  int rc =
      mr_wire_next_frame(b->data, b->len, SIZE_MAX, &payload, plen, &consumed);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0)
    return NULL;
  CHECK_EQ_INT(consumed, b->len);
  CHECK(payload == b->data + MR_WIRE_PREFIX_LEN);
  return payload;
}

/* ---- Room messages ---- */

static void roundtrip_room(int binary, const char *room, size_t room_len,
                           const uint8_t *msg, size_t msg_len) {
  mr_wbuf b;
  mr_wire_buf_init(&b);
  int rc = mr_wire_encode_room(&b, binary, room, room_len, msg, msg_len);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0) {
    mr_wire_buf_free(&b);
    return;
  }
  CHECK_EQ_INT(b.len, 4 + 7 + room_len + msg_len);
  /* One exact-size allocation: the message was copied once, no slack. */
  CHECK_EQ_INT(b.cap, b.len < 64 ? 64 : b.len);
  CHECK_EQ_INT(b.data[4], binary ? MR_WIRE_ROOM_BINARY : MR_WIRE_ROOM_TEXT);

  const uint8_t *payload = NULL;
  size_t consumed = 0, plen = 0;
  CHECK_EQ_INT(mr_wire_next_frame(b.data, b.len, MR_WIRE_DEFAULT_MAX_FRAME,
                                  &payload, &plen, &consumed),
               0);
  CHECK_EQ_INT(consumed, b.len);
  mr_wire_msg m;
  rc = mr_wire_decode(payload, plen, &m);
  CHECK_EQ_INT(rc, 0);
  if (rc == 0) {
    CHECK(m.error == NULL);
    CHECK_EQ_INT(m.tag, binary ? MR_WIRE_ROOM_BINARY : MR_WIRE_ROOM_TEXT);
    CHECK_EQ_INT(m.room.binary, binary);
    CHECK_EQ_INT(m.room.room_len, room_len);
    CHECK(memcmp(m.room.room, room, room_len) == 0);
    CHECK_EQ_INT(m.room.data_len, msg_len);
    CHECK(msg_len == 0 || memcmp(m.room.data, msg, msg_len) == 0);
    /* No copies: the decoded pointers point into the payload. */
    CHECK(inside(m.room.room, room_len, payload, plen));
    CHECK(inside(m.room.data, msg_len, payload, plen));
  }

  /* The header-only encoder plus the message written separately is the
   * same byte stream, for scatter writes. */
  mr_wbuf h;
  mr_wire_buf_init(&h);
  CHECK_EQ_INT(mr_wire_encode_room_header(&h, binary, room, room_len, msg_len),
               0);
  CHECK_EQ_INT(h.len + msg_len, b.len);
  CHECK(h.len <= b.len && memcmp(h.data, b.data, h.len) == 0);
  mr_wire_buf_free(&h);
  mr_wire_buf_free(&b);
}

static void test_room_roundtrips(void) {
  const char *ascii = "lobby";
  const char *fancy = "salle-\xC3\xA9t\xC3\xA9-\xF0\x9F\x8C\x99";
  const char *hello = "h\xC3\xA9llo \xF0\x9F\x8C\x99";
  for (int binary = 0; binary <= 1; binary++) {
    roundtrip_room(binary, ascii, strlen(ascii), NULL, 0);
    roundtrip_room(binary, fancy, strlen(fancy), NULL, 0);
    roundtrip_room(binary, ascii, strlen(ascii), (const uint8_t *)hello,
                   strlen(hello));
    roundtrip_room(binary, fancy, strlen(fancy), (const uint8_t *)hello,
                   strlen(hello));
  }

  /* The longest room name: all ASCII, and all two-byte characters plus one
   * ASCII byte to reach exactly 65535 bytes. */
  char *big_room = malloc(MR_WIRE_MAX_ROOM);
  memset(big_room, 'r', MR_WIRE_MAX_ROOM);
  roundtrip_room(0, big_room, MR_WIRE_MAX_ROOM, (const uint8_t *)"x", 1);
  for (size_t i = 0; i + 1 < MR_WIRE_MAX_ROOM; i += 2) {
    big_room[i] = (char)0xC3;
    big_room[i + 1] = (char)0xA9;
  }
  big_room[MR_WIRE_MAX_ROOM - 1] = '!';
  roundtrip_room(1, big_room, MR_WIRE_MAX_ROOM, (const uint8_t *)"x", 1);
  free(big_room);

  /* A 16 MiB message, binary with random bytes and text with mixed UTF-8. */
  size_t n = 16u * 1024 * 1024;
  uint8_t *big = malloc(n);
  for (size_t i = 0; i < n; i++)
    big[i] = (uint8_t)test_rng();
  roundtrip_room(1, ascii, strlen(ascii), big, n);
  for (size_t i = 0; i < n; i++)
    big[i] = (uint8_t)('a' + i % 26);
  for (size_t i = 1000; i + 4 <= n; i += 100000)
    memcpy(big + i, "\xF0\x9F\x8C\x99", 4);
  roundtrip_room(0, fancy, strlen(fancy), big, n);
  free(big);
}

static void test_room_encoder_errors(void) {
  mr_wbuf b;
  mr_wire_buf_init(&b);
  CHECK_EQ_INT(mr_wire_encode_ping(&b, 7), 0);
  size_t before = b.len;
  CHECK_EQ_INT(mr_wire_encode_room(&b, 0, "", 0, NULL, 0), MR_EINVAL);
  char *huge_room = calloc(MR_WIRE_MAX_ROOM + 1, 1);
  memset(huge_room, 'r', MR_WIRE_MAX_ROOM + 1);
  CHECK_EQ_INT(
      mr_wire_encode_room(&b, 0, huge_room, MR_WIRE_MAX_ROOM + 1, NULL, 0),
      MR_EINVAL);
  free(huge_room);
  CHECK_EQ_INT(mr_wire_encode_room(&b, 0, "\xC0\xAF", 2, NULL, 0), MR_EUTF8);
  CHECK_EQ_INT(mr_wire_encode_interest(&b, 1, "\xED\xA0\x80", 3), MR_EUTF8);
  /* A message that cannot fit the u32 length is refused before anything
   * is allocated. */
  CHECK_EQ_INT(mr_wire_encode_room_header(&b, 1, "r", 1, (size_t)UINT32_MAX),
               MR_ETOOBIG);
  CHECK_EQ_INT(
      mr_wire_encode_room_header(&b, 1, "r", 1, (size_t)UINT32_MAX - 7),
      MR_ETOOBIG);
  CHECK_EQ_INT(b.len, before);
  mr_wire_buf_free(&b);
}

/* ---- Other tags ---- */

static const uint8_t NONCE_D[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                    12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                    23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t NONCE_A[32] = {
    0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA,
    0xAB, 0xAC, 0xAD, 0xAE, 0xAF, 0xB0, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5,
    0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xBB, 0xBC, 0xBD, 0xBE, 0xBF};

/* Decodes the single frame in b into *m, expecting success. */
static int decode_buf(const mr_wbuf *b, mr_wire_msg *m) {
  size_t plen;
  const uint8_t *p = one_frame(b, &plen);
  if (!p)
    return -1000;
  int rc = mr_wire_decode(p, plen, m);
  CHECK_EQ_INT(rc, 0);
  if (rc == 0)
    CHECK(m->error == NULL);
  return rc;
}

static void test_hello(void) {
  mr_wbuf b;
  mr_wire_buf_init(&b);
  mr_wire_msg m;
  CHECK_EQ_INT(mr_wire_encode_hello(&b, "node-\xC3\xA9", 7, "127.0.0.1:7001",
                                    14, NONCE_D),
               0);
  CHECK_EQ_INT(b.len, 4 + 1 + 1 + 2 + 7 + 2 + 14 + 32);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.tag, MR_WIRE_HELLO);
    CHECK_EQ_INT(m.hello.version, MR_WIRE_VERSION);
    CHECK_SPAN(m.hello.name, m.hello.name_len, "node-\xC3\xA9");
    CHECK_SPAN(m.hello.addr, m.hello.addr_len, "127.0.0.1:7001");
    CHECK(memcmp(m.hello.nonce, NONCE_D, 32) == 0);
  }

  /* Another version is reported as such, with the version readable. */
  b.data[5] = 2;
  size_t plen;
  const uint8_t *p = one_frame(&b, &plen);
  CHECK_EQ_INT(mr_wire_decode(p, plen, &m), MR_EPROTO);
  CHECK_EQ_INT(m.hello.version, 2);
  CHECK_STR(m.error, "unsupported protocol version");

  /* Names are printable UTF-8 of 1..255 bytes, on both sides. */
  size_t before = b.len;
  char long_name[256];
  memset(long_name, 'n', sizeof long_name);
  CHECK_EQ_INT(mr_wire_encode_hello(&b, "", 0, "a:1", 3, NONCE_D), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_hello(&b, "n", 1, "", 0, NONCE_D), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_hello(&b, long_name, 256, "a:1", 3, NONCE_D),
               MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_hello(&b, long_name, 255, "a:1", 3, NONCE_D), 0);
  b.len = before;
  CHECK_EQ_INT(mr_wire_encode_hello(&b, "a\nb", 3, "a:1", 3, NONCE_D),
               MR_EUTF8);
  CHECK_EQ_INT(mr_wire_encode_hello(&b, "a\0b", 3, "a:1", 3, NONCE_D),
               MR_EUTF8);
  CHECK_EQ_INT(mr_wire_encode_hello(&b, "ab", 2, "\xFF:1", 3, NONCE_D),
               MR_EUTF8);
  CHECK_EQ_INT(b.len, before);

  /* A control character smuggled in by a peer is caught by the decoder. */
  mr_wire_buf_reset(&b);
  CHECK_EQ_INT(mr_wire_encode_hello(&b, "ab", 2, "a:1", 3, NONCE_D), 0);
  b.data[4 + 1 + 1 + 2] = 0x07;
  p = one_frame(&b, &plen);
  CHECK_EQ_INT(mr_wire_decode(p, plen, &m), MR_EUTF8);
  CHECK(m.error != NULL);
  mr_wire_buf_free(&b);
}

static void test_challenge_auth_ping(void) {
  mr_wbuf b;
  mr_wire_buf_init(&b);
  mr_wire_msg m;
  CHECK_EQ_INT(mr_wire_encode_challenge(&b, NONCE_A), 0);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.tag, MR_WIRE_CHALLENGE);
    CHECK(memcmp(m.auth.mac, NONCE_A, 32) == 0);
  }
  mr_wire_buf_reset(&b);
  CHECK_EQ_INT(mr_wire_encode_auth(&b, NONCE_D), 0);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.tag, MR_WIRE_AUTH);
    CHECK(memcmp(m.auth.mac, NONCE_D, 32) == 0);
  }
  mr_wire_buf_reset(&b);
  CHECK_EQ_INT(mr_wire_encode_ping(&b, UINT64_C(0x0102030405060708)), 0);
  CHECK_EQ_INT(b.len, 4 + 1 + 8);
  CHECK(memcmp(b.data, "\0\0\0\x09\x13\x01\x02\x03\x04\x05\x06\x07\x08", 13) ==
        0);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.tag, MR_WIRE_PING);
    CHECK(m.ping.token == UINT64_C(0x0102030405060708));
  }
  mr_wire_buf_reset(&b);
  CHECK_EQ_INT(mr_wire_encode_pong(&b, UINT64_MAX), 0);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.tag, MR_WIRE_PONG);
    CHECK(m.ping.token == UINT64_MAX);
  }
  mr_wire_buf_free(&b);
}

static void test_interest(void) {
  mr_wbuf b;
  mr_wire_buf_init(&b);
  mr_wire_msg m;
  const char *room = "salle-\xC3\xA9t\xC3\xA9-\xF0\x9F\x8C\x99";
  for (int add = 0; add <= 1; add++) {
    mr_wire_buf_reset(&b);
    CHECK_EQ_INT(mr_wire_encode_interest(&b, add ? 42 : 0, room, strlen(room)),
                 0);
    if (decode_buf(&b, &m) == 0) {
      CHECK_EQ_INT(m.tag, MR_WIRE_INTEREST);
      CHECK_EQ_INT(m.interest.add, add);
      CHECK_SPAN(m.interest.room, m.interest.room_len, room);
    }
  }
  /* An op other than 0 or 1 is malformed. */
  b.data[5] = 2;
  size_t plen;
  const uint8_t *p = one_frame(&b, &plen);
  CHECK_EQ_INT(mr_wire_decode(p, plen, &m), MR_EPROTO);
  /* So is an empty room. */
  const uint8_t empty_room[] = {MR_WIRE_INTEREST, 1, 0, 0};
  CHECK_EQ_INT(mr_wire_decode(empty_room, sizeof empty_room, &m), MR_EPROTO);
  CHECK_STR(m.error, "empty room name");
  mr_wire_buf_free(&b);
}

static void test_peers(void) {
  mr_wbuf b;
  mr_wire_buf_init(&b);
  mr_wire_msg m;
  mr_wire_iter it;
  mr_wire_peer peer;
  size_t frame = 99;

  /* An empty list is a complete frame. */
  CHECK_EQ_INT(mr_wire_encode_peers_begin(&b, &frame), 0);
  CHECK_EQ_INT(frame, 0);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.tag, MR_WIRE_PEERS);
    CHECK_EQ_INT(m.peers.count, 0);
    mr_wire_iter_init(&it, &m);
    CHECK_EQ_INT(mr_wire_peers_next(&it, &peer), 0);
  }

  /* The list frame may follow other frames in the buffer. */
  mr_wire_buf_reset(&b);
  CHECK_EQ_INT(mr_wire_encode_ping(&b, 1), 0);
  size_t ping_len = b.len;
  CHECK_EQ_INT(mr_wire_encode_peers_begin(&b, &frame), 0);
  CHECK_EQ_INT(frame, ping_len);
  const char *names[3] = {"a", "node-b", "n\303\270de-c"};
  const char *addrs[3] = {"127.0.0.1:7001", "[::1]:7002", "host.example:7003"};
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(mr_wire_encode_peers_add(&b, frame, names[i], strlen(names[i]),
                                          addrs[i], strlen(addrs[i])),
                 0);
  /* Bad entries are refused and leave the frame intact. */
  size_t before = b.len;
  CHECK_EQ_INT(mr_wire_encode_peers_add(&b, frame, "", 0, "x:1", 3), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_peers_add(&b, frame, "x", 1, "\t", 1), MR_EUTF8);
  CHECK_EQ_INT(mr_wire_encode_peers_add(&b, ping_len + 1, "x", 1, "x:1", 3),
               MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_interest_all_add(&b, frame, "room", 4),
               MR_EINVAL);
  CHECK_EQ_INT(b.len, before);

  const uint8_t *p = NULL;
  size_t plen = 0, consumed = 0;
  CHECK_EQ_INT(mr_wire_next_frame(b.data + ping_len, b.len - ping_len,
                                  MR_WIRE_DEFAULT_MAX_FRAME, &p, &plen,
                                  &consumed),
               0);
  CHECK_EQ_INT(consumed, b.len - ping_len);
  CHECK_EQ_INT(mr_wire_decode(p, plen, &m), 0);
  CHECK_EQ_INT(m.peers.count, 3);
  mr_wire_iter_init(&it, &m);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_INT(mr_wire_peers_next(&it, &peer), 1);
    CHECK_SPAN(peer.name, peer.name_len, names[i]);
    CHECK_SPAN(peer.addr, peer.addr_len, addrs[i]);
  }
  CHECK_EQ_INT(mr_wire_peers_next(&it, &peer), 0);

  /* Once another frame follows, the list can no longer grow. */
  CHECK_EQ_INT(mr_wire_encode_pong(&b, 2), 0);
  CHECK_EQ_INT(mr_wire_encode_peers_add(&b, frame, "x", 1, "x:1", 3),
               MR_EINVAL);

  /* A count larger than the entries present is malformed. */
  const uint8_t short_list[] = {MR_WIRE_PEERS, 0, 2, 0, 1, 'a', 0, 1, 'b'};
  CHECK_EQ_INT(mr_wire_decode(short_list, sizeof short_list, &m), MR_EPROTO);
  mr_wire_buf_free(&b);
}

static void test_interest_all(void) {
  mr_wbuf b;
  mr_wire_buf_init(&b);
  mr_wire_msg m;
  mr_wire_iter it;
  size_t frame;
  const char *room;
  size_t room_len;

  CHECK_EQ_INT(mr_wire_encode_interest_all_begin(&b, &frame), 0);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.tag, MR_WIRE_INTEREST_ALL);
    CHECK_EQ_INT(m.rooms.count, 0);
    mr_wire_iter_init(&it, &m);
    CHECK_EQ_INT(mr_wire_rooms_next(&it, &room, &room_len), 0);
  }

  /* Many rooms, including the longest one, through repeated growth. */
  char *big_room = malloc(MR_WIRE_MAX_ROOM);
  memset(big_room, 'z', MR_WIRE_MAX_ROOM);
  char name[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(name, sizeof name, "room-%d-\xC3\xA9", i);
    CHECK_EQ_INT(mr_wire_encode_interest_all_add(&b, frame, name, strlen(name)),
                 0);
  }
  CHECK_EQ_INT(
      mr_wire_encode_interest_all_add(&b, frame, big_room, MR_WIRE_MAX_ROOM),
      0);
  CHECK_EQ_INT(mr_wire_encode_interest_all_add(&b, frame, "", 0), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_interest_all_add(&b, frame, "\xC3", 1), MR_EUTF8);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.rooms.count, 1001);
    mr_wire_iter_init(&it, &m);
    int ok = 1;
    for (int i = 0; i < 1000; i++) {
      snprintf(name, sizeof name, "room-%d-\xC3\xA9", i);
      ok &= mr_wire_rooms_next(&it, &room, &room_len) == 1 &&
            room_len == strlen(name) && memcmp(room, name, room_len) == 0;
    }
    CHECK(ok);
    CHECK_EQ_INT(mr_wire_rooms_next(&it, &room, &room_len), 1);
    CHECK(room_len == MR_WIRE_MAX_ROOM &&
          memcmp(room, big_room, MR_WIRE_MAX_ROOM) == 0);
    CHECK_EQ_INT(mr_wire_rooms_next(&it, &room, &room_len), 0);
  }
  free(big_room);

  /* An absurd count is refused up front; an empty room inside is too. */
  const uint8_t absurd[] = {
      MR_WIRE_INTEREST_ALL, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1, 'a'};
  CHECK_EQ_INT(mr_wire_decode(absurd, sizeof absurd, &m), MR_EPROTO);
  const uint8_t empty[] = {MR_WIRE_INTEREST_ALL, 0, 0, 0, 2, 0, 1, 'a', 0, 0};
  CHECK_EQ_INT(mr_wire_decode(empty, sizeof empty, &m), MR_EPROTO);
  mr_wire_buf_free(&b);
}

/* ---- Malformed input ---- */

/* Appends one frame of every tag to b and returns how many. */
static int encode_samples(mr_wbuf *b) {
  const char *fancy = "salle-\xC3\xA9t\xC3\xA9-\xF0\x9F\x8C\x99";
  size_t f;
  int n = 0;
  n += mr_wire_encode_hello(b, "node-a", 6, "127.0.0.1:7001", 14, NONCE_A) == 0;
  n += mr_wire_encode_challenge(b, NONCE_A) == 0;
  n += mr_wire_encode_auth(b, NONCE_D) == 0;
  n += mr_wire_encode_peers_begin(b, &f) == 0;
  mr_wire_encode_peers_add(b, f, "node-b", 6, "10.0.0.2:7001", 13);
  mr_wire_encode_peers_add(b, f, "node-c", 6, "10.0.0.3:7001", 13);
  n += mr_wire_encode_interest(b, 1, fancy, strlen(fancy)) == 0;
  n += mr_wire_encode_interest_all_begin(b, &f) == 0;
  mr_wire_encode_interest_all_add(b, f, "lobby", 5);
  mr_wire_encode_interest_all_add(b, f, fancy, strlen(fancy));
  n += mr_wire_encode_ping(b, 12345) == 0;
  n += mr_wire_encode_pong(b, 12345) == 0;
  n += mr_wire_encode_room(b, 0, fancy, strlen(fancy),
                           (const uint8_t *)"h\xC3\xA9llo", 6) == 0;
  n += mr_wire_encode_room(b, 1, "lobby", 5, (const uint8_t *)"\xFF\x00\xC0",
                           3) == 0;
  n += mr_wire_encode_room(b, 0, "lobby", 5, NULL, 0) == 0;
  return n;
}

static void test_truncation(void) {
  mr_wbuf b;
  mr_wire_buf_init(&b);
  int nframes = encode_samples(&b);
  CHECK_EQ_INT(nframes, 11);
  long wrong_prefix = 0, wrong_payload = 0, wrong_trailing = 0;
  size_t off = 0;
  for (int i = 0; i < nframes; i++) {
    const uint8_t *p = NULL;
    size_t plen = 0, consumed = 0;
    CHECK_EQ_INT(mr_wire_next_frame(b.data + off, b.len - off,
                                    MR_WIRE_DEFAULT_MAX_FRAME, &p, &plen,
                                    &consumed),
                 0);
    /* Every proper prefix of the frame is incomplete. */
    for (size_t k = 0; k < consumed; k++) {
      uint8_t *c = dup_exact(b.data + off, k);
      const uint8_t *q;
      size_t ql, qc;
      wrong_prefix += mr_wire_next_frame(c, k, MR_WIRE_DEFAULT_MAX_FRAME, &q,
                                         &ql, &qc) != MR_EAGAIN;
      free(c);
    }
    /* Every proper prefix of the payload is malformed, and the payload
     * with a byte appended is too. */
    mr_wire_msg m;
    for (size_t t = 0; t < plen; t++) {
      uint8_t *c = dup_exact(p, t);
      int rc = mr_wire_decode(c, t, &m);
      if (rc != MR_EPROTO || m.error == NULL) {
        fprintf(stderr, "  tag 0x%02x cut at %zu: %s\n", p[0], t,
                mr_err_name(rc));
        wrong_payload++;
      }
      free(c);
    }
    uint8_t *c = malloc(plen + 1);
    memcpy(c, p, plen);
    c[plen] = 0;
    wrong_trailing += mr_wire_decode(c, plen + 1, &m) != MR_EPROTO;
    CHECK_EQ_INT(mr_wire_decode(c, plen, &m), 0);
    free(c);
    off += consumed;
  }
  CHECK_EQ_INT(off, b.len);
  CHECK_EQ_INT(wrong_prefix, 0);
  CHECK_EQ_INT(wrong_payload, 0);
  CHECK_EQ_INT(wrong_trailing, 0);
  mr_wire_buf_free(&b);
}

/* Feeds the concatenated frames to a receiver in random-sized pieces, as
 * TCP would deliver them, and checks that the same frames come out. */
static void test_stream_reassembly(void) {
  mr_wbuf b;
  mr_wire_buf_init(&b);
  int nframes = encode_samples(&b);
  uint8_t *rx = malloc(b.len);
  long wrong = 0;
  for (int round = 0; round < 200; round++) {
    size_t sent = 0, have = 0;
    int got = 0, broken = 0;
    while (sent < b.len && !broken) {
      size_t piece = 1 + (size_t)(test_rng() % 40);
      if (piece > b.len - sent)
        piece = b.len - sent;
      memcpy(rx + have, b.data + sent, piece);
      sent += piece;
      have += piece;
      for (;;) {
        const uint8_t *p;
        size_t plen, consumed;
        int rc = mr_wire_next_frame(rx, have, MR_WIRE_DEFAULT_MAX_FRAME, &p,
                                    &plen, &consumed);
        if (rc == MR_EAGAIN)
          break;
        mr_wire_msg m;
        if (rc != 0 || mr_wire_decode(p, plen, &m) != 0) {
          broken = 1;
          break;
        }
        got++;
        memmove(rx, rx + consumed, have - consumed);
        have -= consumed;
      }
    }
    wrong += broken || got != nframes || have != 0;
  }
  CHECK_EQ_INT(wrong, 0);
  free(rx);
  mr_wire_buf_free(&b);
}

static void test_frame_limits(void) {
  const uint8_t *p;
  size_t plen, consumed;
  /* The length alone is enough to refuse an oversized frame. */
  const uint8_t big[4] = {0x01, 0x00, 0x04, 0x01}; /* 16 MiB + 1025 */
  CHECK_EQ_INT(mr_wire_next_frame(big, 4, MR_WIRE_DEFAULT_MAX_FRAME, &p, &plen,
                                  &consumed),
               MR_ETOOBIG);
  const uint8_t huge[4] = {0xFF, 0xFF, 0xFF, 0xFF};
  CHECK_EQ_INT(mr_wire_next_frame(huge, 4, MR_WIRE_DEFAULT_MAX_FRAME, &p, &plen,
                                  &consumed),
               MR_ETOOBIG);
  /* Exactly max_frame is accepted, one more is not. */
  uint8_t f[4 + 11] = {0, 0, 0, 10, MR_WIRE_PING};
  CHECK_EQ_INT(mr_wire_next_frame(f, 14, 10, &p, &plen, &consumed), 0);
  CHECK_EQ_INT(plen, 10);
  CHECK_EQ_INT(consumed, 14);
  f[3] = 11;
  CHECK_EQ_INT(mr_wire_next_frame(f, 15, 10, &p, &plen, &consumed), MR_ETOOBIG);
  /* A zero length is a protocol error, never an endless loop. */
  const uint8_t zero[4] = {0, 0, 0, 0};
  CHECK_EQ_INT(mr_wire_next_frame(zero, 4, MR_WIRE_DEFAULT_MAX_FRAME, &p, &plen,
                                  &consumed),
               MR_EPROTO);
  /* Only the first frame is returned when more bytes follow. */
  const uint8_t two[] = {0, 0, 0, 1, 0x77, 0, 0, 0, 1, 0x78};
  CHECK_EQ_INT(mr_wire_next_frame(two, sizeof two, 100, &p, &plen, &consumed),
               0);
  CHECK_EQ_INT(plen, 1);
  CHECK_EQ_INT(consumed, 5);
  CHECK(p == two + 4);
}

/* Builds a room payload by hand, so that invalid contents can be sent. */
static size_t raw_room(uint8_t *out, uint8_t tag, const char *room,
                       size_t room_len, const char *msg, size_t msg_len) {
  out[0] = tag;
  out[1] = (uint8_t)(room_len >> 8);
  out[2] = (uint8_t)room_len;
  memcpy(out + 3, room, room_len);
  uint8_t *w = out + 3 + room_len;
  w[0] = (uint8_t)(msg_len >> 24);
  w[1] = (uint8_t)(msg_len >> 16);
  w[2] = (uint8_t)(msg_len >> 8);
  w[3] = (uint8_t)msg_len;
  memcpy(w + 4, msg, msg_len);
  return 7 + room_len + msg_len;
}

static void test_invalid_utf8(void) {
  uint8_t buf[64];
  mr_wire_msg m;
  const char *bad[] = {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xC3",
                       "\x80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t bl = strlen(bad[i]);
    /* A bad room is refused for text and binary alike. */
    for (int t = 0; t <= 1; t++) {
      size_t n = raw_room(buf, t ? MR_WIRE_ROOM_BINARY : MR_WIRE_ROOM_TEXT,
                          bad[i], bl, "hi", 2);
      CHECK_EQ_INT(mr_wire_decode(buf, n, &m), MR_EUTF8);
      CHECK_STR(m.error, "room name is not valid UTF-8");
    }
    /* A bad text payload is refused; the same bytes as binary are fine. */
    size_t n = raw_room(buf, MR_WIRE_ROOM_TEXT, "lobby", 5, bad[i], bl);
    CHECK_EQ_INT(mr_wire_decode(buf, n, &m), MR_EUTF8);
    CHECK_STR(m.error, "text message is not valid UTF-8");
    n = raw_room(buf, MR_WIRE_ROOM_BINARY, "lobby", 5, bad[i], bl);
    CHECK_EQ_INT(mr_wire_decode(buf, n, &m), 0);
    CHECK_EQ_INT(m.room.binary, 1);
    CHECK_EQ_INT(m.room.data_len, bl);
    /* Rooms in INTEREST and INTEREST_ALL are checked too. */
    uint8_t in[16] = {MR_WIRE_INTEREST, 1, 0, (uint8_t)bl};
    memcpy(in + 4, bad[i], bl);
    CHECK_EQ_INT(mr_wire_decode(in, 4 + bl, &m), MR_EUTF8);
    uint8_t all[16] = {MR_WIRE_INTEREST_ALL, 0, 0, 0, 1, 0, (uint8_t)bl};
    memcpy(all + 7, bad[i], bl);
    CHECK_EQ_INT(mr_wire_decode(all, 7 + bl, &m), MR_EUTF8);
  }
  /* An empty room in a room message is malformed. */
  size_t n = raw_room(buf, MR_WIRE_ROOM_TEXT, "", 0, "hi", 2);
  CHECK_EQ_INT(mr_wire_decode(buf, n, &m), MR_EPROTO);
  CHECK_STR(m.error, "empty room name");
}

static void test_unknown_and_trailing(void) {
  mr_wire_msg m;
  const uint8_t unknown[] = {0x7F, 1, 2, 3};
  CHECK_EQ_INT(mr_wire_decode(unknown, sizeof unknown, &m), MR_ENOTFOUND);
  CHECK_EQ_INT(m.tag, 0x7F);
  CHECK(m.error != NULL);
  const uint8_t unknown0[] = {0x00};
  CHECK_EQ_INT(mr_wire_decode(unknown0, 1, &m), MR_ENOTFOUND);
  CHECK_EQ_INT(m.tag, 0);
  CHECK_EQ_INT(mr_wire_decode(unknown0, 0, &m), MR_EPROTO);
  CHECK_STR(m.error, "empty payload");

  /* Garbage after a complete room message. */
  uint8_t buf[32];
  size_t n = raw_room(buf, MR_WIRE_ROOM_TEXT, "lobby", 5, "hi", 2);
  buf[n] = 'X';
  CHECK_EQ_INT(mr_wire_decode(buf, n + 1, &m), MR_EPROTO);
  CHECK_STR(m.error, "trailing bytes after room message");
  const uint8_t ping[] = {MR_WIRE_PING, 0, 0, 0, 0, 0, 0, 0, 1, 0};
  CHECK_EQ_INT(mr_wire_decode(ping, sizeof ping, &m), MR_EPROTO);
  CHECK_STR(m.error, "trailing bytes after message");
}

/* ---- Authentication ---- */

/* Recomputes the documented MAC layout with the one-shot HMAC(), as an
 * independent check that the code hashes exactly what wire.h says. */
static void reference_mac(const char *cookie, const char *label,
                          const uint8_t nd[32], const uint8_t na[32],
                          const char *from, const char *to, uint8_t out[32]) {
  uint8_t msg[512];
  size_t n = 0;
  const char *strs[3] = {label, from, to};
  for (int i = 0; i < 3; i++) {
    size_t l = strlen(strs[i]);
    msg[n++] = (uint8_t)(l >> 24);
    msg[n++] = (uint8_t)(l >> 16);
    msg[n++] = (uint8_t)(l >> 8);
    msg[n++] = (uint8_t)l;
    memcpy(msg + n, strs[i], l);
    n += l;
    if (i == 0) {
      memcpy(msg + n, nd, 32);
      memcpy(msg + n + 32, na, 32);
      n += 64;
    }
  }
  unsigned int len = 0;
  HMAC(EVP_sha256(), cookie, (int)strlen(cookie), msg, n, out, &len);
}

static void test_auth_mac(void) {
  const char *cookie = "s3cret-cookie";
  uint8_t m1[32], m2[32], ref[32];
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, strlen(cookie), MR_WIRE_LABEL_ACCEPTOR,
                                NONCE_D, NONCE_A, "node-a", "node-d", m1),
               0);
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, strlen(cookie), MR_WIRE_LABEL_ACCEPTOR,
                                NONCE_D, NONCE_A, "node-a", "node-d", m2),
               0);
  CHECK(mr_wire_mac_equal(m1, m2));
  reference_mac(cookie, MR_WIRE_LABEL_ACCEPTOR, NONCE_D, NONCE_A, "node-a",
                "node-d", ref);
  CHECK(memcmp(m1, ref, 32) == 0);

  /* Each input changes the result. */
  CHECK_EQ_INT(mr_wire_auth_mac("s3cret-cookiE", 13, MR_WIRE_LABEL_ACCEPTOR,
                                NONCE_D, NONCE_A, "node-a", "node-d", m2),
               0);
  CHECK(!mr_wire_mac_equal(m1, m2));
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, strlen(cookie), MR_WIRE_LABEL_DIALER,
                                NONCE_D, NONCE_A, "node-a", "node-d", m2),
               0);
  CHECK(!mr_wire_mac_equal(m1, m2));
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, strlen(cookie), MR_WIRE_LABEL_ACCEPTOR,
                                NONCE_A, NONCE_D, "node-a", "node-d", m2),
               0);
  CHECK(!mr_wire_mac_equal(m1, m2));
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, strlen(cookie), MR_WIRE_LABEL_ACCEPTOR,
                                NONCE_D, NONCE_A, "node-d", "node-a", m2),
               0);
  CHECK(!mr_wire_mac_equal(m1, m2));
  /* The length prefixes keep "ab"+"c" and "a"+"bc" apart. */
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, strlen(cookie), MR_WIRE_LABEL_ACCEPTOR,
                                NONCE_D, NONCE_A, "ab", "c", m1),
               0);
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, strlen(cookie), MR_WIRE_LABEL_ACCEPTOR,
                                NONCE_D, NONCE_A, "a", "bc", m2),
               0);
  CHECK(!mr_wire_mac_equal(m1, m2));

  /* mac_equal notices a difference in any single byte. */
  int all = 1;
  for (int i = 0; i < 32; i++) {
    memcpy(m2, m1, 32);
    m2[i] ^= 0x01;
    all &= !mr_wire_mac_equal(m1, m2);
  }
  CHECK(all);
  memcpy(m2, m1, 32);
  CHECK(mr_wire_mac_equal(m1, m2));

  /* An empty cookie is refused and yields no usable MAC. */
  memset(m1, 0xAA, 32);
  CHECK_EQ_INT(mr_wire_auth_mac("", 0, MR_WIRE_LABEL_DIALER, NONCE_D, NONCE_A,
                                "a", "b", m1),
               MR_EINVAL);
  uint8_t zero[32] = {0};
  CHECK(memcmp(m1, zero, 32) == 0);

  /* Fresh nonces differ from each other. */
  uint8_t n1[32], n2[32];
  CHECK_EQ_INT(mr_wire_nonce(n1), 0);
  CHECK_EQ_INT(mr_wire_nonce(n2), 0);
  CHECK(memcmp(n1, n2, 32) != 0);
}

/* Plays the whole handshake through the encoders and decoders, then checks
 * that a reflected proof and a wrong cookie are both refused. */
static void test_handshake(void) {
  const char *cookie = "cluster-cookie";
  size_t cl = strlen(cookie);
  mr_wbuf d2a, a2d;
  mr_wire_buf_init(&d2a);
  mr_wire_buf_init(&a2d);
  uint8_t nd[32], na[32], mac[32], expect[32];
  mr_wire_msg m;
  size_t plen, consumed;
  const uint8_t *p;

  CHECK_EQ_INT(mr_wire_nonce(nd), 0);
  CHECK_EQ_INT(mr_wire_encode_hello(&d2a, "dialer", 6, "10.0.0.1:7001", 13, nd),
               0);

  /* The acceptor reads HELLO, answers HELLO + CHALLENGE in one buffer. */
  CHECK_EQ_INT(
      mr_wire_next_frame(d2a.data, d2a.len, 4096, &p, &plen, &consumed), 0);
  CHECK_EQ_INT(mr_wire_decode(p, plen, &m), 0);
  CHECK_EQ_INT(m.tag, MR_WIRE_HELLO);
  uint8_t got_nd[32];
  memcpy(got_nd, m.hello.nonce, 32);
  CHECK_EQ_INT(mr_wire_nonce(na), 0);
  CHECK_EQ_INT(
      mr_wire_encode_hello(&a2d, "acceptor", 8, "10.0.0.2:7001", 13, na), 0);
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, cl, MR_WIRE_LABEL_ACCEPTOR, got_nd, na,
                                "acceptor", "dialer", mac),
               0);
  CHECK_EQ_INT(mr_wire_encode_challenge(&a2d, mac), 0);
  uint8_t acceptor_proof[32];
  memcpy(acceptor_proof, mac, 32);

  /* The dialer reads both frames and checks the acceptor's proof. */
  size_t off = 0;
  CHECK_EQ_INT(
      mr_wire_next_frame(a2d.data, a2d.len, 4096, &p, &plen, &consumed), 0);
  CHECK_EQ_INT(mr_wire_decode(p, plen, &m), 0);
  uint8_t got_na[32];
  memcpy(got_na, m.hello.nonce, 32);
  off += consumed;
  CHECK_EQ_INT(mr_wire_next_frame(a2d.data + off, a2d.len - off, 4096, &p,
                                  &plen, &consumed),
               0);
  CHECK_EQ_INT(mr_wire_decode(p, plen, &m), 0);
  CHECK_EQ_INT(m.tag, MR_WIRE_CHALLENGE);
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, cl, MR_WIRE_LABEL_ACCEPTOR, nd, got_na,
                                "acceptor", "dialer", expect),
               0);
  CHECK(mr_wire_mac_equal(m.auth.mac, expect));

  /* The dialer proves itself; the acceptor checks. */
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, cl, MR_WIRE_LABEL_DIALER, nd, got_na,
                                "dialer", "acceptor", mac),
               0);
  CHECK_EQ_INT(mr_wire_auth_mac(cookie, cl, MR_WIRE_LABEL_DIALER, got_nd, na,
                                "dialer", "acceptor", expect),
               0);
  CHECK(mr_wire_mac_equal(mac, expect));

  /* Reflecting the acceptor's own proof back as AUTH fails, and so does a
   * proof made with another cookie. */
  CHECK(!mr_wire_mac_equal(acceptor_proof, expect));
  CHECK_EQ_INT(mr_wire_auth_mac("wrong", 5, MR_WIRE_LABEL_DIALER, nd, got_na,
                                "dialer", "acceptor", mac),
               0);
  CHECK(!mr_wire_mac_equal(mac, expect));
  mr_wire_buf_free(&d2a);
  mr_wire_buf_free(&a2d);
}

/* ---- Fuzz ---- */

/* Checks the invariants of one decode result: a known code, a reason on
 * every error, and every decoded pointer inside the payload. */
static int decode_ok(const uint8_t *p, size_t len) {
  mr_wire_msg m;
  int rc = mr_wire_decode(p, len, &m);
  if (rc == MR_EPROTO || rc == MR_EUTF8 || rc == MR_ENOTFOUND)
    return m.error != NULL;
  if (rc != 0 || m.error != NULL)
    return 0;
  mr_wire_iter it;
  switch (m.tag) {
  case MR_WIRE_HELLO:
    return inside(m.hello.name, m.hello.name_len, p, len) &&
           inside(m.hello.addr, m.hello.addr_len, p, len) &&
           inside(m.hello.nonce, 32, p, len);
  case MR_WIRE_CHALLENGE:
  case MR_WIRE_AUTH:
    return inside(m.auth.mac, 32, p, len);
  case MR_WIRE_INTEREST:
    return inside(m.interest.room, m.interest.room_len, p, len) &&
           m.interest.room_len > 0;
  case MR_WIRE_ROOM_TEXT:
  case MR_WIRE_ROOM_BINARY:
    return inside(m.room.room, m.room.room_len, p, len) &&
           inside(m.room.data, m.room.data_len, p, len) && m.room.room_len > 0;
  case MR_WIRE_PEERS: {
    mr_wire_peer peer;
    uint32_t n = 0;
    mr_wire_iter_init(&it, &m);
    while (mr_wire_peers_next(&it, &peer)) {
      if (!inside(peer.name, peer.name_len, p, len) ||
          !inside(peer.addr, peer.addr_len, p, len))
        return 0;
      n++;
    }
    return n == m.peers.count;
  }
  case MR_WIRE_INTEREST_ALL: {
    const char *room;
    size_t rl;
    uint32_t n = 0;
    mr_wire_iter_init(&it, &m);
    while (mr_wire_rooms_next(&it, &room, &rl)) {
      if (!inside(room, rl, p, len) || rl == 0)
        return 0;
      n++;
    }
    return n == m.rooms.count;
  }
  default:
    return 1;
  }
}

static void test_fuzz(void) {
  static const uint8_t tags[] = {
      MR_WIRE_HELLO,     MR_WIRE_CHALLENGE,    MR_WIRE_AUTH, MR_WIRE_PEERS,
      MR_WIRE_INTEREST,  MR_WIRE_INTEREST_ALL, MR_WIRE_PING, MR_WIRE_PONG,
      MR_WIRE_ROOM_TEXT, MR_WIRE_ROOM_BINARY};
  long bad = 0, accepted = 0;
  uint8_t tmp[80];

  /* Random short payloads; most start with a known tag and use small
   * length bytes so that the decoders get past their first checks. */
  for (int i = 0; i < 200000; i++) {
    size_t len = (size_t)(test_rng() % 72);
    for (size_t k = 0; k < len; k++) {
      uint64_t r = test_rng();
      tmp[k] = (r & 3) == 0 ? (uint8_t)(r >> 8 & 7) : (uint8_t)(r >> 16);
    }
    if (len && test_rng() % 4 != 0)
      tmp[0] = tags[test_rng() % sizeof tags];
    uint8_t *c = dup_exact(tmp, len);
    int ok = decode_ok(c, len);
    bad += !ok;
    mr_wire_msg m;
    accepted += mr_wire_decode(c, len, &m) == 0;
    /* The stream decoder must hold up against the same bytes. */
    const uint8_t *p;
    size_t plen, consumed;
    int rc = mr_wire_next_frame(c, len, 64, &p, &plen, &consumed);
    if (rc == 0)
      bad += !(plen > 0 && plen <= 64 && consumed == plen + 4 &&
               consumed <= len && p == c + 4);
    else
      bad += rc != MR_EAGAIN && rc != MR_ETOOBIG && rc != MR_EPROTO;
    free(c);
  }

  /* Valid payloads with a few bytes flipped, to reach deeper states. */
  mr_wbuf b;
  mr_wire_buf_init(&b);
  int nframes = encode_samples(&b);
  const uint8_t *payloads[16];
  size_t lens[16];
  size_t off = 0;
  for (int i = 0; i < nframes; i++) {
    size_t consumed;
    mr_wire_next_frame(b.data + off, b.len - off, SIZE_MAX, &payloads[i],
                       &lens[i], &consumed);
    off += consumed;
  }
  for (int i = 0; i < 100000; i++) {
    int f = (int)(test_rng() % (uint64_t)nframes);
    size_t len = lens[f];
    uint8_t *c = dup_exact(payloads[f], len);
    int flips = 1 + (int)(test_rng() % 3);
    for (int k = 0; k < flips; k++)
      c[test_rng() % len] ^= (uint8_t)(1u << (test_rng() % 8));
    size_t cut = test_rng() % 4 == 0 ? (size_t)(test_rng() % (len + 1)) : len;
    bad += !decode_ok(c, cut);
    free(c);
  }
  mr_wire_buf_free(&b);
  CHECK_EQ_INT(bad, 0);
  /* The generator is only useful if it also produces valid messages. */
  CHECK(accepted > 0);
}

/* ---- COUNTS, PRESENCE and the presence meta ---- */

/* A meta map of the given string fields, keys already in order. */
static void meta_of(mr_wbuf *w, const char *const *kv, int n) {
  size_t at;
  w->len = 0;
  CHECK_EQ_INT(mr_wire_meta_begin(w, &at), 0);
  for (int i = 0; i < n; i++) {
    mr_wire_meta_field f = {kv[2 * i],      strlen(kv[2 * i]),
                            MR_META_STRING, 0,
                            kv[2 * i + 1],  strlen(kv[2 * i + 1])};
    CHECK_EQ_INT(mr_wire_meta_add(w, at, &f), 0);
  }
}

/* Every field type, ordering and limit of the meta encoding, and the
 * checker that the PRESENCE decoder runs on every meta it carries. */
static void test_meta(void) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  size_t at;
  CHECK_EQ_INT(mr_wire_meta_begin(&w, &at), 0);
  CHECK_EQ_INT(at, 0);
  CHECK_EQ_INT(w.len, 2);
  CHECK_EQ_INT(mr_wire_meta_check(w.data, w.len), 0); /* the empty map */
  /* Keys strictly increasing, bytewise then shorter first. */
  mr_wire_meta_field fa = {"a", 1, MR_META_TRUE, 0, NULL, 0};
  mr_wire_meta_field fab = {"ab", 2, MR_META_NUMBER, -0.5, NULL, 0};
  mr_wire_meta_field fb = {"b", 1, MR_META_STRING, 0, "h\xC3\xA9", 3};
  mr_wire_meta_field fc = {"c", 1, MR_META_FALSE, 0, NULL, 0};
  mr_wire_meta_field fd = {"d", 1, MR_META_NUMBER, 1e300, NULL, 0};
  mr_wire_meta_field fe = {"e", 1, MR_META_STRING, 0, "", 0};
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &fa), 0);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &fab), 0);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &fb), 0);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &fc), 0);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &fd), 0);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &fe), 0);
  /* 2 + a(1+1+1) + ab(1+2+1+8) + b(1+1+1+2+3) + c(3) + d(1+1+1+8) + e(5) */
  CHECK_EQ_INT(w.len, 2 + 3 + 12 + 8 + 3 + 11 + 5);
  size_t len = w.len;
  /* Out of order, repeated, empty, too long, bad type, bad text: refused
   * and the map is unchanged. */
  mr_wire_meta_field dup = {"e", 1, MR_META_TRUE, 0, NULL, 0};
  mr_wire_meta_field before = {"b", 1, MR_META_TRUE, 0, NULL, 0};
  mr_wire_meta_field empty = {"", 0, MR_META_TRUE, 0, NULL, 0};
  char key256[256];
  memset(key256, 'z', sizeof key256);
  mr_wire_meta_field longkey = {key256, 256, MR_META_TRUE, 0, NULL, 0};
  mr_wire_meta_field badtype = {"zz", 2, 4, 0, NULL, 0};
  mr_wire_meta_field badkey = {"z\xC3", 2, MR_META_TRUE, 0, NULL, 0};
  mr_wire_meta_field badstr = {"zz", 2, MR_META_STRING, 0, "\xFF", 1};
  mr_wire_meta_field longstr = {"zz", 2, MR_META_STRING, 0, key256, 65536};
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &dup), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &before), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &empty), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &longkey), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &badtype), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &badkey), MR_EUTF8);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &badstr), MR_EUTF8);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &longstr), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_meta_add(&w, at + 1, &badtype), MR_EINVAL);
  CHECK_EQ_INT(w.len, len);
  longkey.key_len = 255;
  CHECK_EQ_INT(mr_wire_meta_add(&w, at, &longkey), 0);
  CHECK_EQ_INT(mr_wire_meta_check(w.data, w.len), 0);

  /* Read back in order, values exact. */
  const uint8_t *pos = w.data + 2;
  size_t left = w.len - 2;
  mr_wire_meta_field f;
  const mr_wire_meta_field *want[] = {&fa, &fab, &fb, &fc, &fd, &fe, &longkey};
  int fields = 0;
  while (mr_wire_meta_next(&pos, &left, &f)) {
    const mr_wire_meta_field *x = want[fields++];
    CHECK(f.key_len == x->key_len && memcmp(f.key, x->key, f.key_len) == 0);
    CHECK_EQ_INT(f.type, x->type);
    if (x->type == MR_META_NUMBER)
      CHECK(f.num == x->num);
    if (x->type == MR_META_STRING)
      CHECK(f.str_len == x->str_len &&
            (!f.str_len || memcmp(f.str, x->str, f.str_len) == 0));
  }
  CHECK_EQ_INT(fields, 7);
  CHECK_EQ_INT(left, 0);
  CHECK_EQ_INT(w.data[0] << 8 | w.data[1], 7);

  /* The checker: every proper prefix is malformed, as is a trailing byte. */
  long wrong = 0;
  for (size_t k = 0; k < w.len; k++) {
    uint8_t *c = dup_exact(w.data, k);
    wrong += mr_wire_meta_check(c, k) != MR_EPROTO;
    free(c);
  }
  CHECK_EQ_INT(wrong, 0);
  uint8_t *c = malloc(w.len + 1);
  memcpy(c, w.data, w.len);
  c[w.len] = 0;
  CHECK_EQ_INT(mr_wire_meta_check(c, w.len + 1), MR_EPROTO);
  free(c);
  /* Unsorted, repeated or empty keys, an unknown type, bad text. */
  const uint8_t unsorted[] = {0, 2, 1, 'b', 1, 1, 'a', 1};
  const uint8_t repeated[] = {0, 2, 1, 'a', 1, 1, 'a', 0};
  const uint8_t emptykey[] = {0, 1, 0, 1};
  const uint8_t unknown[] = {0, 1, 1, 'a', 4};
  const uint8_t badutf8[] = {0, 1, 1, 'a', 3, 0, 1, 0xFF};
  const uint8_t badkeyutf8[] = {0, 1, 1, 0xC3, 1};
  CHECK_EQ_INT(mr_wire_meta_check(unsorted, sizeof unsorted), MR_EPROTO);
  CHECK_EQ_INT(mr_wire_meta_check(repeated, sizeof repeated), MR_EPROTO);
  CHECK_EQ_INT(mr_wire_meta_check(emptykey, sizeof emptykey), MR_EPROTO);
  CHECK_EQ_INT(mr_wire_meta_check(unknown, sizeof unknown), MR_EPROTO);
  CHECK_EQ_INT(mr_wire_meta_check(badutf8, sizeof badutf8), MR_EUTF8);
  CHECK_EQ_INT(mr_wire_meta_check(badkeyutf8, sizeof badkeyutf8), MR_EUTF8);
  mr_wire_buf_free(&w);
}

/* COUNTS and PRESENCE round trips: flags, every entry back in order,
 * pointers into the payload, the longest room, the largest meta. */
static void test_counts_presence(void) {
  const char *fancy = "salle-\xC3\xA9t\xC3\xA9-\xF0\x9F\x8C\x99";
  mr_wbuf b, meta;
  mr_wire_buf_init(&b);
  mr_wire_buf_init(&meta);
  mr_wire_msg m;
  mr_wire_iter it;
  size_t frame;
  const char *room;
  size_t room_len;
  uint32_t members;

  CHECK_EQ_INT(mr_wire_encode_counts_begin(&b, 4, &frame), MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_presence_begin(&b, 0x80, &frame), MR_EINVAL);
  CHECK_EQ_INT(b.len, 0);
  unsigned all = MR_WIRE_SYNC_FIRST | MR_WIRE_SYNC_LAST;
  CHECK_EQ_INT(mr_wire_encode_counts_begin(&b, all, &frame), 0);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.tag, MR_WIRE_COUNTS);
    CHECK_EQ_INT(m.state.flags, all);
    CHECK_EQ_INT(m.state.list.count, 0);
    mr_wire_iter_init(&it, &m);
    CHECK_EQ_INT(mr_wire_counts_next(&it, &room, &room_len, &members), 0);
  }
  char *big_room = malloc(MR_WIRE_MAX_ROOM);
  memset(big_room, 'z', MR_WIRE_MAX_ROOM);
  CHECK_EQ_INT(mr_wire_encode_counts_add(&b, frame, "lobby", 5, 3), 0);
  CHECK_EQ_INT(
      mr_wire_encode_counts_add(&b, frame, fancy, strlen(fancy), UINT32_MAX),
      0);
  CHECK_EQ_INT(
      mr_wire_encode_counts_add(&b, frame, big_room, MR_WIRE_MAX_ROOM, 0), 0);
  size_t len = b.len;
  CHECK_EQ_INT(mr_wire_encode_counts_add(&b, frame, "", 0, 1), MR_EINVAL);
  CHECK_EQ_INT(
      mr_wire_encode_counts_add(&b, frame, big_room, MR_WIRE_MAX_ROOM + 1, 1),
      MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_counts_add(&b, frame, "\xC3", 1, 1), MR_EUTF8);
  CHECK_EQ_INT(
      mr_wire_encode_presence_add(&b, frame, 0, "lobby", 5, 1, NULL, 0),
      MR_EINVAL); /* not a PRESENCE frame */
  CHECK_EQ_INT(b.len, len);
  mr_wire_state_mark_last(&b, frame); /* already set: unchanged */
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.state.flags, all);
    CHECK_EQ_INT(m.state.list.count, 3);
    mr_wire_iter_init(&it, &m);
    CHECK_EQ_INT(mr_wire_counts_next(&it, &room, &room_len, &members), 1);
    CHECK_SPAN(room, room_len, "lobby");
    CHECK_EQ_INT(members, 3);
    CHECK(inside(room, room_len, b.data, b.len));
    CHECK_EQ_INT(mr_wire_counts_next(&it, &room, &room_len, &members), 1);
    CHECK_SPAN(room, room_len, fancy);
    CHECK_EQ_INT(members, UINT32_MAX);
    CHECK_EQ_INT(mr_wire_counts_next(&it, &room, &room_len, &members), 1);
    CHECK(room_len == MR_WIRE_MAX_ROOM &&
          memcmp(room, big_room, room_len) == 0);
    CHECK_EQ_INT(members, 0);
    CHECK_EQ_INT(mr_wire_counts_next(&it, &room, &room_len, &members), 0);
  }

  /* PRESENCE: a batch of changes (no flags), then SYNC_LAST set later. */
  b.len = 0;
  CHECK_EQ_INT(mr_wire_encode_presence_begin(&b, 0, &frame), 0);
  const char *kv[] = {"name", "ada", "status", "ready"};
  meta_of(&meta, kv, 2);
  CHECK_EQ_INT(mr_wire_encode_presence_add(&b, frame, 1, "lobby", 5, 42,
                                           meta.data, meta.len),
               0);
  /* A leave carries no meta, whatever it is given. */
  CHECK_EQ_INT(mr_wire_encode_presence_add(&b, frame, 0, fancy, strlen(fancy),
                                           UINT64_MAX, meta.data, meta.len),
               0);
  /* The largest meta, one long string. */
  char *big = malloc(MR_WIRE_MAX_META);
  memset(big, 'm', MR_WIRE_MAX_META);
  mr_wbuf bigmeta;
  mr_wire_buf_init(&bigmeta);
  size_t at;
  mr_wire_meta_begin(&bigmeta, &at);
  mr_wire_meta_field f = {"k", 1,   MR_META_STRING,
                          0,   big, MR_WIRE_MAX_META - 2 - 1 - 1 - 1 - 2};
  CHECK_EQ_INT(mr_wire_meta_add(&bigmeta, at, &f), 0);
  CHECK_EQ_INT(bigmeta.len, MR_WIRE_MAX_META);
  CHECK_EQ_INT(mr_wire_encode_presence_add(&b, frame, 1, "x", 1, 0,
                                           bigmeta.data, bigmeta.len),
               0);
  len = b.len;
  /* Refused: a meta one byte too long, a malformed or missing one for a
   * join, a bad room. Nothing is appended. */
  big[0] = 0; /* any bytes: the length is checked first */
  CHECK_EQ_INT(mr_wire_encode_presence_add(&b, frame, 1, "x", 1, 0,
                                           (const uint8_t *)big,
                                           MR_WIRE_MAX_META + 1),
               MR_EINVAL);
  const uint8_t bad_meta[] = {0, 1, 1, 'a', 9};
  CHECK_EQ_INT(mr_wire_encode_presence_add(&b, frame, 1, "x", 1, 0, bad_meta,
                                           sizeof bad_meta),
               MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_presence_add(&b, frame, 1, "x", 1, 0, NULL, 0),
               MR_EINVAL);
  CHECK_EQ_INT(
      mr_wire_encode_presence_add(&b, frame, 1, "", 0, 0, meta.data, meta.len),
      MR_EINVAL);
  CHECK_EQ_INT(mr_wire_encode_presence_add(&b, frame, 1, "\xFF", 1, 0,
                                           meta.data, meta.len),
               MR_EUTF8);
  CHECK_EQ_INT(mr_wire_encode_counts_add(&b, frame, "lobby", 5, 1),
               MR_EINVAL); /* not a COUNTS frame */
  CHECK_EQ_INT(b.len, len);
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.tag, MR_WIRE_PRESENCE);
    CHECK_EQ_INT(m.state.flags, 0);
  }
  mr_wire_state_mark_last(&b, frame);
  mr_wire_presence_entry e;
  if (decode_buf(&b, &m) == 0) {
    CHECK_EQ_INT(m.state.flags, MR_WIRE_SYNC_LAST);
    CHECK_EQ_INT(m.state.list.count, 3);
    mr_wire_iter_init(&it, &m);
    CHECK_EQ_INT(mr_wire_presence_next(&it, &e), 1);
    CHECK_EQ_INT(e.join, 1);
    CHECK_SPAN(e.room, e.room_len, "lobby");
    CHECK_EQ_INT(e.id, 42);
    CHECK(e.meta_len == meta.len && memcmp(e.meta, meta.data, meta.len) == 0);
    CHECK(inside(e.meta, e.meta_len, b.data, b.len));
    CHECK_EQ_INT(mr_wire_presence_next(&it, &e), 1);
    CHECK_EQ_INT(e.join, 0);
    CHECK_SPAN(e.room, e.room_len, fancy);
    CHECK(e.id == UINT64_MAX);
    CHECK_EQ_INT(e.meta_len, 0);
    CHECK_EQ_INT(mr_wire_presence_next(&it, &e), 1);
    CHECK_EQ_INT(e.meta_len, MR_WIRE_MAX_META);
    CHECK_EQ_INT(mr_wire_presence_next(&it, &e), 0);
  }
  free(big);
  free(big_room);
  mr_wire_buf_free(&bigmeta);
  mr_wire_buf_free(&meta);
  mr_wire_buf_free(&b);
}

/* Hand-made COUNTS and PRESENCE payloads that a hostile or broken peer
 * could send: each is refused with a reason, and every proper prefix of a
 * valid one (and one with a byte appended) too. */
static void test_counts_presence_malformed(void) {
  mr_wire_msg m;
  const uint8_t counts_ok[] = {
      MR_WIRE_COUNTS, 1, 0, 0, 0, 1, 0, 1, 'a', 0, 0, 0, 7};
  const uint8_t presence_ok[] = {MR_WIRE_PRESENCE,
                                 2,
                                 0,
                                 0,
                                 0,
                                 2,
                                 /* join a/5 {x = true} */ 1,
                                 0,
                                 1,
                                 'a',
                                 0,
                                 0,
                                 0,
                                 0,
                                 0,
                                 0,
                                 0,
                                 5,
                                 0,
                                 0,
                                 0,
                                 5,
                                 0,
                                 1,
                                 1,
                                 'x',
                                 1,
                                 /* leave a/6 */ 0,
                                 0,
                                 1,
                                 'a',
                                 0,
                                 0,
                                 0,
                                 0,
                                 0,
                                 0,
                                 0,
                                 6,
                                 0,
                                 0,
                                 0,
                                 0};
  const uint8_t *valid[] = {counts_ok, presence_ok};
  size_t valid_len[] = {sizeof counts_ok, sizeof presence_ok};
  long wrong = 0;
  for (int v = 0; v < 2; v++) {
    uint8_t *c = dup_exact(valid[v], valid_len[v]);
    CHECK_EQ_INT(mr_wire_decode(c, valid_len[v], &m), 0);
    free(c);
    for (size_t k = 1; k < valid_len[v]; k++) {
      c = dup_exact(valid[v], k);
      int rc = mr_wire_decode(c, k, &m);
      wrong += rc != MR_EPROTO || m.error == NULL;
      free(c);
    }
    c = malloc(valid_len[v] + 1);
    memcpy(c, valid[v], valid_len[v]);
    c[valid_len[v]] = 0;
    wrong += mr_wire_decode(c, valid_len[v] + 1, &m) != MR_EPROTO;
    free(c);
  }
  CHECK_EQ_INT(wrong, 0);

  /* One byte changed at a time. */
  struct {
    size_t at;
    uint8_t value;
    int presence;
    int err;
  } cases[] = {
      {1, 4, 0, MR_EPROTO},    /* an unknown flag */
      {1, 0x83, 1, MR_EPROTO}, /* unknown flags */
      {2, 0xFF, 0, MR_EPROTO}, /* a count far past the payload */
      {5, 2, 0, MR_EPROTO},    /* a count one past the entries */
      {5, 3, 1, MR_EPROTO},
      {7, 0, 0, MR_EPROTO}, /* an empty room */
      {8, 0, 1, MR_EPROTO},
      {8, 0xFF, 0, MR_EUTF8}, /* a room that is not UTF-8 */
      {9, 0xC3, 1, MR_EUTF8},
      {6, 2, 1, MR_EPROTO},    /* op neither join nor leave */
      {27, 1, 1, MR_EPROTO},   /* a join without a meta */
      {21, 6, 1, MR_EPROTO},   /* a meta one byte longer than its map */
      {21, 4, 1, MR_EPROTO},   /* or one byte shorter */
      {26, 7, 1, MR_EPROTO},   /* an unknown meta type */
      {25, 0xFF, 1, MR_EUTF8}, /* a meta key that is not UTF-8 */
      {23, 2, 1, MR_EPROTO},   /* a meta count past its fields */
      {24, 0, 1, MR_EPROTO},   /* an empty meta key */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const uint8_t *src = cases[i].presence ? presence_ok : counts_ok;
    size_t n = cases[i].presence ? sizeof presence_ok : sizeof counts_ok;
    uint8_t *c = dup_exact(src, n);
    c[cases[i].at] = cases[i].value;
    int rc = mr_wire_decode(c, n, &m);
    if (rc != cases[i].err || m.error == NULL)
      fprintf(stderr, "  case %zu: %s\n", i, mr_err_name(rc));
    CHECK_EQ_INT(rc, cases[i].err);
    free(c);
  }
  /* A leave with a meta: the u32 meta length of the leave set to 1 and
   * one byte appended. */
  uint8_t leave_meta[sizeof presence_ok + 1];
  memcpy(leave_meta, presence_ok, sizeof presence_ok);
  leave_meta[sizeof presence_ok - 1] = 1;
  leave_meta[sizeof presence_ok] = 0;
  uint8_t *c = dup_exact(leave_meta, sizeof leave_meta);
  CHECK_EQ_INT(mr_wire_decode(c, sizeof leave_meta, &m), MR_EPROTO);
  CHECK(m.error && strstr(m.error, "meta"));
  free(c);
  /* A meta over MR_WIRE_MAX_META, bytes and all. */
  size_t n = 6 + 1 + 2 + 1 + 8 + 4 + MR_WIRE_MAX_META + 1;
  uint8_t *huge = calloc(1, n);
  memcpy(huge, presence_ok, 6);
  huge[5] = 1;
  huge[6] = 1;
  huge[8] = 1;
  huge[9] = 'a';
  uint32_t ml = MR_WIRE_MAX_META + 1;
  huge[18] = (uint8_t)(ml >> 24);
  huge[19] = (uint8_t)(ml >> 16);
  huge[20] = (uint8_t)(ml >> 8);
  huge[21] = (uint8_t)ml;
  CHECK_EQ_INT(mr_wire_decode(huge, n, &m), MR_EPROTO);
  CHECK(m.error && strstr(m.error, "meta length"));
  free(huge);
}

/* Valid COUNTS and PRESENCE payloads with bits flipped and cuts: whatever
 * the decoder accepts iterates to exactly its count, inside the payload,
 * with every join's meta well formed. */
static void test_counts_presence_fuzz(void) {
  mr_wbuf b, meta;
  mr_wire_buf_init(&b);
  mr_wire_buf_init(&meta);
  size_t frame;
  mr_wire_encode_counts_begin(&b, MR_WIRE_SYNC_FIRST, &frame);
  mr_wire_encode_counts_add(&b, frame, "lobby", 5, 3);
  mr_wire_encode_counts_add(&b, frame, "g\xC3\xA9", 3, 70000);
  size_t split = b.len;
  mr_wire_encode_presence_begin(&b, 0, &frame);
  const char *kv[] = {"n", "ada", "s", "ok"};
  meta_of(&meta, kv, 2);
  mr_wire_encode_presence_add(&b, frame, 1, "lobby", 5, 9, meta.data, meta.len);
  mr_wire_encode_presence_add(&b, frame, 0, "lobby", 5, 10, NULL, 0);
  const uint8_t *payloads[2] = {b.data + 4, b.data + split + 4};
  size_t lens[2] = {split - 4, b.len - split - 4};
  long bad = 0, accepted = 0;
  for (int i = 0; i < 100000; i++) {
    int which = (int)(test_rng() % 2);
    size_t len = lens[which];
    uint8_t *c = dup_exact(payloads[which], len);
    int flips = 1 + (int)(test_rng() % 3);
    for (int k = 0; k < flips; k++)
      c[test_rng() % len] ^= (uint8_t)(1u << (test_rng() % 8));
    size_t cut = test_rng() % 4 == 0 ? (size_t)(test_rng() % (len + 1)) : len;
    mr_wire_msg m;
    int rc = mr_wire_decode(c, cut, &m);
    if (rc != 0) {
      bad += m.error == NULL;
    } else if (m.tag == MR_WIRE_COUNTS || m.tag == MR_WIRE_PRESENCE) {
      accepted++;
      mr_wire_iter it;
      mr_wire_iter_init(&it, &m);
      uint32_t n = 0;
      const char *room;
      size_t room_len;
      uint32_t members;
      mr_wire_presence_entry e;
      if (m.tag == MR_WIRE_COUNTS) {
        while (mr_wire_counts_next(&it, &room, &room_len, &members)) {
          bad += !inside(room, room_len, c, cut) || room_len == 0;
          n++;
        }
      } else {
        while (mr_wire_presence_next(&it, &e)) {
          bad += !inside(e.room, e.room_len, c, cut) || e.room_len == 0 ||
                 !inside(e.meta, e.meta_len, c, cut) ||
                 (e.join && mr_wire_meta_check(e.meta, e.meta_len) != 0) ||
                 (!e.join && e.meta_len != 0);
          n++;
        }
      }
      bad += n != m.state.list.count;
    }
    free(c);
  }
  CHECK_EQ_INT(bad, 0);
  CHECK(accepted > 0);
  mr_wire_buf_free(&meta);
  mr_wire_buf_free(&b);
}

int main(void) {
  test_room_roundtrips();
  test_room_encoder_errors();
  test_hello();
  test_challenge_auth_ping();
  test_interest();
  test_peers();
  test_interest_all();
  test_truncation();
  test_stream_reassembly();
  test_frame_limits();
  test_invalid_utf8();
  test_unknown_and_trailing();
  test_auth_mac();
  test_handshake();
  test_fuzz();
  test_meta();
  test_counts_presence();
  test_counts_presence_malformed();
  test_counts_presence_fuzz();
  return test_report();
}
