/* Unit tests for the Redis engine's names and envelopes (core/redis_proto.c).
 *
 * Inputs handed to the decoder are copied into heap blocks of exactly their
 * length, so that a sanitizer build catches any read past the end; every
 * truncation of a valid envelope is tried. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "redis_proto.h"
#include "test_util.h"
#include "wire.h"

static int decode_copy(const uint8_t *data, size_t len, mr_redis_msg *m) {
  uint8_t *copy = malloc(len ? len : 1);
  memcpy(copy, data, len);
  int r = mr_redis_decode(copy, len, 1 << 20, m);
  free(copy);
  return r;
}

static void test_names(void) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  CHECK_EQ_INT(mr_redis_room_channel(&w, "moonroom", "lobby", 5), 0);
  CHECK_SPAN((const char *)w.data, w.len, "moonroom:room:lobby");
  mr_wire_buf_reset(&w);
  /* Rooms are bytes: a NUL, a colon, anything the mesh allows. */
  CHECK_EQ_INT(mr_redis_room_channel(&w, "p", "a\0:b", 4), 0);
  CHECK_EQ_INT(w.len, 11);
  CHECK(memcmp(w.data, "p:room:a\0:b", 11) == 0);
  mr_wire_buf_reset(&w);
  CHECK_EQ_INT(mr_redis_presence_channel(&w, "app"), 0);
  CHECK_SPAN((const char *)w.data, w.len, "app:presence");
  mr_wire_buf_reset(&w);
  CHECK_EQ_INT(mr_redis_node_key(&w, "app", "n1", 2), 0);
  CHECK_SPAN((const char *)w.data, w.len, "app:node:n1");
  mr_wire_buf_reset(&w);
  CHECK_EQ_INT(mr_redis_node_pattern(&w, "moonroom"), 0);
  CHECK_SPAN((const char *)w.data, w.len, "moonroom:node:*");
  mr_wire_buf_reset(&w);
  CHECK_EQ_INT(mr_redis_node_pattern(&w, "a*b?c[d]e\\f"), 0);
  CHECK_SPAN((const char *)w.data, w.len, "a\\*b\\?c\\[d\\]e\\\\f:node:*");

  size_t n = 0;
  const char *node = mr_redis_node_of_key("app", "app:node:n1", 11, &n);
  CHECK(node != NULL);
  CHECK_SPAN(node, n, "n1");
  CHECK(mr_redis_node_of_key("app", "app:node:", 9, &n) == NULL);
  CHECK(mr_redis_node_of_key("app", "apx:node:n1", 11, &n) == NULL);
  CHECK(mr_redis_node_of_key("app", "app:nope:n1", 11, &n) == NULL);
  CHECK(mr_redis_node_of_key("app", "ap", 2, &n) == NULL);
  char long_key[300];
  memcpy(long_key, "app:node:", 9);
  memset(long_key + 9, 'x', 256);
  CHECK(mr_redis_node_of_key("app", long_key, 9 + 256, &n) == NULL);
  CHECK(mr_redis_node_of_key("app", long_key, 9 + 255, &n) != NULL);
  mr_wire_buf_free(&w);
}

static void test_room_roundtrip(void) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  CHECK_EQ_INT(mr_redis_encode_room(&w, "node-a", 6, 0x0102030405060708ull, 0,
                                    "lobby", 5, (const uint8_t *)"hi", 2),
               0);
  mr_redis_msg m;
  CHECK_EQ_INT(decode_copy(w.data, w.len, &m), 0);
  CHECK_EQ_INT(m.kind, MR_REDIS_ROOM);
  CHECK_EQ_INT(w.data[0], 'M');
  CHECK_EQ_INT(w.data[1], 1);
  CHECK_EQ_INT(w.data[2], MR_REDIS_ROOM);
  CHECK_EQ_INT(w.data[3], 6);

  /* Decoding in place gives pointers into the envelope. */
  CHECK_EQ_INT(mr_redis_decode(w.data, w.len, 1 << 20, &m), 0);
  CHECK_SPAN(m.origin, m.origin_len, "node-a");
  CHECK(m.instance == 0x0102030405060708ull);
  CHECK_EQ_INT(m.room.room.binary, 0);
  CHECK_SPAN(m.room.room.room, m.room.room.room_len, "lobby");
  CHECK_SPAN((const char *)m.room.room.data, m.room.room.data_len, "hi");

  /* Every truncation is malformed, never a read past the end. */
  for (size_t cut = 0; cut < w.len; cut++)
    CHECK(decode_copy(w.data, cut, &m) < 0);
  /* One byte too many. */
  uint8_t more[256];
  memcpy(more, w.data, w.len);
  more[w.len] = 0;
  CHECK_EQ_INT(decode_copy(more, w.len + 1, &m), MR_EPROTO);

  /* Binary, with every byte value, and an empty message. */
  mr_wire_buf_reset(&w);
  uint8_t bin[256];
  for (int i = 0; i < 256; i++)
    bin[i] = (uint8_t)i;
  CHECK_EQ_INT(mr_redis_encode_room(&w, "b", 1, 7, 1, "r", 1, bin, sizeof bin),
               0);
  CHECK_EQ_INT(mr_redis_decode(w.data, w.len, 1 << 20, &m), 0);
  CHECK_EQ_INT(m.room.room.binary, 1);
  CHECK_EQ_INT(m.room.room.data_len, 256);
  CHECK(memcmp(m.room.room.data, bin, 256) == 0);
  /* A room frame over max_frame is refused before its payload is read. */
  CHECK_EQ_INT(mr_redis_decode(w.data, w.len, 100, &m), MR_ETOOBIG);
  mr_wire_buf_reset(&w);
  CHECK_EQ_INT(mr_redis_encode_room(&w, "b", 1, 7, 0, "r", 1, NULL, 0), 0);
  CHECK_EQ_INT(mr_redis_decode(w.data, w.len, 1 << 20, &m), 0);
  CHECK_EQ_INT(m.room.room.data_len, 0);

  /* Bad inputs append nothing. */
  mr_wire_buf_reset(&w);
  CHECK_EQ_INT(mr_redis_encode_room(&w, "", 0, 1, 0, "r", 1, NULL, 0),
               MR_EINVAL);
  CHECK_EQ_INT(mr_redis_encode_room(&w, "a\nb", 3, 1, 0, "r", 1, NULL, 0),
               MR_EUTF8);
  CHECK_EQ_INT(mr_redis_encode_room(&w, "a", 1, 1, 0, "", 0, NULL, 0),
               MR_EINVAL);
  CHECK_EQ_INT(mr_redis_encode_room(&w, "a", 1, 1, 0, "\xff", 1, NULL, 0),
               MR_EUTF8);
  char name[256];
  memset(name, 'n', sizeof name);
  CHECK_EQ_INT(mr_redis_encode_room(&w, name, 256, 1, 0, "r", 1, NULL, 0),
               MR_EINVAL);
  CHECK_EQ_INT(w.len, 0);
  CHECK_EQ_INT(mr_redis_encode_room(&w, name, 255, 1, 0, "r", 1, NULL, 0), 0);
  CHECK_EQ_INT(mr_redis_decode(w.data, w.len, 1 << 20, &m), 0);
  CHECK_EQ_INT(m.origin_len, 255);
  mr_wire_buf_free(&w);
}

static void test_malformed(void) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  mr_redis_msg m;
  CHECK_EQ_INT(mr_redis_encode_header(&w, MR_REDIS_HEARTBEAT, "n", 1, 9), 0);
  CHECK_EQ_INT(decode_copy(w.data, w.len, &m), 0);
  CHECK_EQ_INT(m.kind, MR_REDIS_HEARTBEAT);
  CHECK(m.instance == 9);
  CHECK_EQ_INT(m.body_len, 0);
  uint8_t b[64];
  memcpy(b, w.data, w.len);
  size_t n = w.len;
  /* Each field broken in turn. */
  b[0] = 'X';
  CHECK_EQ_INT(decode_copy(b, n, &m), MR_EPROTO);
  b[0] = 'M';
  b[1] = 2;
  CHECK_EQ_INT(decode_copy(b, n, &m), MR_EPROTO);
  b[1] = 1;
  b[2] = 0;
  CHECK_EQ_INT(decode_copy(b, n, &m), MR_EPROTO);
  b[2] = 6;
  CHECK_EQ_INT(decode_copy(b, n, &m), MR_EPROTO);
  b[2] = MR_REDIS_HELLO;
  CHECK_EQ_INT(decode_copy(b, n, &m), 0);
  b[3] = 0;
  CHECK_EQ_INT(decode_copy(b, n, &m), MR_EPROTO);
  b[3] = 1;
  b[4] = 0x01; /* a control character in the origin */
  CHECK_EQ_INT(decode_copy(b, n, &m), MR_EUTF8);
  b[4] = 'n';
  /* A body on a kind that has none. */
  b[n] = 0;
  CHECK_EQ_INT(decode_copy(b, n + 1, &m), MR_EPROTO);
  for (size_t cut = 0; cut < n; cut++)
    CHECK_EQ_INT(decode_copy(b, cut, &m), MR_EPROTO);
  /* A ROOM envelope whose body is a frame of another tag. */
  mr_wire_buf_reset(&w);
  CHECK_EQ_INT(mr_redis_encode_header(&w, MR_REDIS_ROOM, "n", 1, 1), 0);
  CHECK_EQ_INT(mr_wire_encode_interest(&w, 1, "r", 1), 0);
  CHECK_EQ_INT(decode_copy(w.data, w.len, &m), MR_EPROTO);
  /* Invalid text in a ROOM_TEXT body. */
  mr_wire_buf_reset(&w);
  CHECK_EQ_INT(mr_redis_encode_room(&w, "n", 1, 1, 0, "r", 1,
                                    (const uint8_t *)"\xc3", 1),
               0);
  CHECK_EQ_INT(decode_copy(w.data, w.len, &m), MR_EUTF8);
  CHECK_EQ_INT(mr_redis_encode_header(&w, 0, "n", 1, 1), MR_EINVAL);
  CHECK_EQ_INT(mr_redis_encode_header(&w, 6, "n", 1, 1), MR_EINVAL);
  mr_wire_buf_free(&w);
}

static void test_state(void) {
  mr_wbuf w;
  mr_wire_buf_init(&w);
  CHECK_EQ_INT(mr_redis_encode_header(&w, MR_REDIS_STATE, "n", 1, 1), 0);
  size_t f;
  CHECK_EQ_INT(mr_wire_encode_counts_begin(&w, MR_WIRE_SYNC_FIRST, &f), 0);
  CHECK_EQ_INT(mr_wire_encode_counts_add(&w, f, "r", 1, 3), 0);
  CHECK_EQ_INT(mr_wire_encode_presence_begin(&w, MR_WIRE_SYNC_LAST, &f), 0);
  mr_redis_msg m;
  CHECK_EQ_INT(mr_redis_decode(w.data, w.len, 1 << 20, &m), 0);
  CHECK_EQ_INT(m.kind, MR_REDIS_STATE);
  const uint8_t *pos = m.body;
  size_t left = m.body_len;
  mr_wire_msg fm;
  CHECK_EQ_INT(mr_redis_state_next(&pos, &left, &fm), 1);
  CHECK_EQ_INT(fm.tag, MR_WIRE_COUNTS);
  CHECK_EQ_INT(fm.state.flags, MR_WIRE_SYNC_FIRST);
  CHECK_EQ_INT(mr_redis_state_next(&pos, &left, &fm), 1);
  CHECK_EQ_INT(fm.tag, MR_WIRE_PRESENCE);
  CHECK_EQ_INT(mr_redis_state_next(&pos, &left, &fm), 0);

  /* A body cut anywhere inside a frame is malformed at that frame. */
  size_t whole = m.body_len;
  for (size_t cut = 1; cut < whole; cut++) {
    uint8_t *copy = malloc(cut);
    memcpy(copy, m.body, cut);
    pos = copy;
    left = cut;
    int r;
    while ((r = mr_redis_state_next(&pos, &left, &fm)) == 1)
      ;
    CHECK(r == MR_EPROTO || (r == 0 && left == 0));
    free(copy);
  }
  /* A frame of another tag in a STATE body. */
  mr_wbuf o;
  mr_wire_buf_init(&o);
  CHECK_EQ_INT(mr_wire_encode_ping(&o, 5), 0);
  pos = o.data;
  left = o.len;
  CHECK_EQ_INT(mr_redis_state_next(&pos, &left, &fm), MR_EPROTO);
  CHECK(pos == o.data);
  mr_wire_buf_free(&o);
  mr_wire_buf_free(&w);
}

int main(void) {
  test_names();
  test_room_roundtrip();
  test_malformed();
  test_state();
  return test_report();
}
