/* The Redis engine's names and messages: pure functions over bytes (no
 * hiredis, no libuv), so the unit tests and fuzzers run exactly what the
 * engine runs.
 *
 * Names. Every channel and key of one fleet starts with its prefix
 * (--redis-prefix, "moonroom" by default):
 *   PREFIX:room:ROOM     the channel of a room's broadcasts (ROOM raw bytes)
 *   PREFIX:presence      the channel of presence, heartbeats and hellos
 *   PREFIX:node:NODE     a key: NODE's full presence state, with a TTL
 *
 * Messages. Every message published is an envelope:
 *   [u8 'M'][u8 version=1][u8 kind][u8 origin_len][origin][u64 instance]
 *   [body]
 * origin is the sending node's name (1..255 bytes, UTF-8, no control
 * characters) and instance a random number the node drew at start, so a
 * node tells its own messages (dropped: it delivered them already) from
 * another process that uses the same name. The body by kind:
 *   ROOM       one wire.h ROOM_TEXT or ROOM_BINARY frame, u32 prefix
 *              included, and nothing after it
 *   STATE      zero or more wire.h COUNTS and PRESENCE frames (a batch, or
 *              a full state from SYNC_FIRST to SYNC_LAST)
 *   HEARTBEAT  empty: the node is alive
 *   HELLO      empty: the node (re)connected; every node that hears it
 *              publishes its full state
 *   BYE        empty: the node is stopping; its state goes at once
 * The value stored under PREFIX:node:NODE is a STATE envelope holding the
 * node's full state. All integers are big-endian. */
#ifndef MR_REDIS_PROTO_H
#define MR_REDIS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define MR_REDIS_MAGIC 0x4Du
#define MR_REDIS_VERSION 1u

enum mr_redis_kind {
  MR_REDIS_ROOM = 1,
  MR_REDIS_STATE = 2,
  MR_REDIS_HEARTBEAT = 3,
  MR_REDIS_HELLO = 4,
  MR_REDIS_BYE = 5
};

/* The largest envelope header: magic, version, kind, a 255-byte name and
 * the instance. */
#define MR_REDIS_HEADER_MAX (4 + MR_WIRE_MAX_NAME + 8)

/* One decoded envelope; pointers point into the bytes given to
 * mr_redis_decode, which must outlive it. */
typedef struct {
  int kind; /* enum mr_redis_kind */
  const char *origin;
  size_t origin_len;
  uint64_t instance;
  const uint8_t *body;
  size_t body_len;
  /* ROOM: the decoded frame (room, binary flag, message). */
  mr_wire_msg room;
} mr_redis_msg;

/* Appends PREFIX:room:ROOM, PREFIX:presence, PREFIX:node:NODE to out (not
 * NUL-terminated; the caller owns out). Returns 0 or MR_ENOMEM. */
int mr_redis_room_channel(mr_wbuf *out, const char *prefix, const char *room,
                          size_t room_len);
int mr_redis_presence_channel(mr_wbuf *out, const char *prefix);
int mr_redis_node_key(mr_wbuf *out, const char *prefix, const char *node,
                      size_t node_len);
/* Appends the SCAN MATCH pattern of every node key, PREFIX:node:*, with
 * the glob characters of the prefix (* ? [ ] \) escaped by a backslash.
 * Returns 0 or MR_ENOMEM. */
int mr_redis_node_pattern(mr_wbuf *out, const char *prefix);
/* The NODE of a node key (pointer into key), or NULL when key is not
 * PREFIX:node:NODE with a NODE of 1..255 bytes. */
const char *mr_redis_node_of_key(const char *prefix, const char *key,
                                 size_t key_len, size_t *node_len);

/* Appends an envelope header of kind for origin (1..255 bytes of UTF-8
 * without control characters; MR_EINVAL / MR_EUTF8 otherwise, nothing
 * appended) to out; the body follows it. Returns 0 or a negative code. */
int mr_redis_encode_header(mr_wbuf *out, int kind, const char *origin,
                           size_t origin_len, uint64_t instance);

/* Appends a whole ROOM envelope: header, then the wire.h room frame of msg
 * (text must be valid UTF-8, which the caller guarantees as for
 * mr_wire_encode_room). Returns 0 or a negative code (nothing appended). */
int mr_redis_encode_room(mr_wbuf *out, const char *origin, size_t origin_len,
                         uint64_t instance, int binary, const char *room,
                         size_t room_len, const uint8_t *msg, size_t msg_len);

/* Decodes one envelope of len bytes. max_frame bounds the ROOM frame (as
 * mr_wire_next_frame's). Returns 0; MR_EPROTO for anything malformed (a
 * wrong magic, version or kind, a short header, a body where none belongs,
 * a ROOM body that is not exactly one room frame); MR_EUTF8 for an origin
 * or room text that is not UTF-8; MR_ETOOBIG for a room frame over
 * max_frame. A STATE body is checked frame by frame by mr_redis_state_next
 * as it is read. */
int mr_redis_decode(const uint8_t *data, size_t len, size_t max_frame,
                    mr_redis_msg *out);

/* Reads the next COUNTS or PRESENCE frame of a STATE body: set *pos and
 * *left to the body first. Returns 1 with *m decoded (pointers into the
 * body), 0 at the end of the body, or MR_EPROTO / MR_EUTF8 for a
 * malformed frame or a frame of another tag (the rest is unread). */
int mr_redis_state_next(const uint8_t **pos, size_t *left, mr_wire_msg *m);

#endif
