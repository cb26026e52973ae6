#include "redis_proto.h"

#include <string.h>

#include "error.h"
#include "utf8.h"

/* Appends len bytes of s to out. */
static int put(mr_wbuf *out, const void *s, size_t len) {
  if (mr_wire_buf_reserve(out, len) != 0)
    return MR_ENOMEM;
  if (len)
    memcpy(out->data + out->len, s, len);
  out->len += len;
  return 0;
}

/* Appends PREFIX:MIDDLE then tail; on failure out is as it was. */
static int put_name(mr_wbuf *out, const char *prefix, const char *middle,
                    const char *tail, size_t tail_len) {
  size_t was = out->len;
  if (put(out, prefix, strlen(prefix)) != 0 ||
      put(out, middle, strlen(middle)) != 0 || put(out, tail, tail_len) != 0) {
    out->len = was;
    return MR_ENOMEM;
  }
  return 0;
}

int mr_redis_room_channel(mr_wbuf *out, const char *prefix, const char *room,
                          size_t room_len) {
  return put_name(out, prefix, ":room:", room, room_len);
}

int mr_redis_presence_channel(mr_wbuf *out, const char *prefix) {
  return put_name(out, prefix, ":presence", "", 0);
}

int mr_redis_node_key(mr_wbuf *out, const char *prefix, const char *node,
                      size_t node_len) {
  return put_name(out, prefix, ":node:", node, node_len);
}

int mr_redis_node_pattern(mr_wbuf *out, const char *prefix) {
  size_t was = out->len;
  for (const char *p = prefix; *p; p++) {
    /* SCAN MATCH is a glob: a prefix like "app[1]" must match itself. */
    if (strchr("*?[]\\", *p) && put(out, "\\", 1) != 0)
      goto fail;
    if (put(out, p, 1) != 0)
      goto fail;
  }
  if (put(out, ":node:*", 7) == 0)
    return 0;
fail:
  out->len = was;
  return MR_ENOMEM;
}

const char *mr_redis_node_of_key(const char *prefix, const char *key,
                                 size_t key_len, size_t *node_len) {
  size_t plen = strlen(prefix);
  if (key_len <= plen + 6 || memcmp(key, prefix, plen) != 0 ||
      memcmp(key + plen, ":node:", 6) != 0)
    return NULL;
  size_t n = key_len - plen - 6;
  if (n > MR_WIRE_MAX_NAME)
    return NULL;
  *node_len = n;
  return key + plen + 6;
}

/* A node name as the wire allows it: 1..255 bytes of UTF-8 without
 * control characters, so it can be logged and made a C string. */
static int check_origin(const char *s, size_t len) {
  if (len == 0 || len > MR_WIRE_MAX_NAME)
    return MR_EINVAL;
  for (size_t i = 0; i < len; i++)
    if ((uint8_t)s[i] < 0x20 || (uint8_t)s[i] == 0x7F)
      return MR_EUTF8;
  return mr_utf8_valid((const uint8_t *)s, len) ? 0 : MR_EUTF8;
}

int mr_redis_encode_header(mr_wbuf *out, int kind, const char *origin,
                           size_t origin_len, uint64_t instance) {
  int r = check_origin(origin, origin_len);
  if (r != 0)
    return r;
  if (kind < MR_REDIS_ROOM || kind > MR_REDIS_BYE)
    return MR_EINVAL;
  uint8_t h[MR_REDIS_HEADER_MAX];
  h[0] = MR_REDIS_MAGIC;
  h[1] = MR_REDIS_VERSION;
  h[2] = (uint8_t)kind;
  h[3] = (uint8_t)origin_len;
  memcpy(h + 4, origin, origin_len);
  for (int i = 0; i < 8; i++)
    h[4 + origin_len + (size_t)i] = (uint8_t)(instance >> (56 - 8 * i));
  return put(out, h, 4 + origin_len + 8);
}

int mr_redis_encode_room(mr_wbuf *out, const char *origin, size_t origin_len,
                         uint64_t instance, int binary, const char *room,
                         size_t room_len, const uint8_t *msg, size_t msg_len) {
  size_t was = out->len;
  int r =
      mr_redis_encode_header(out, MR_REDIS_ROOM, origin, origin_len, instance);
  if (r == 0)
    r = mr_wire_encode_room(out, binary, room, room_len, msg, msg_len);
  if (r != 0)
    out->len = was;
  return r;
}

int mr_redis_decode(const uint8_t *data, size_t len, size_t max_frame,
                    mr_redis_msg *out) {
  memset(out, 0, sizeof *out);
  if (len < 4 || data[0] != MR_REDIS_MAGIC || data[1] != MR_REDIS_VERSION)
    return MR_EPROTO;
  int kind = data[2];
  size_t olen = data[3];
  if (kind < MR_REDIS_ROOM || kind > MR_REDIS_BYE || olen == 0 ||
      len < 4 + olen + 8)
    return MR_EPROTO;
  const char *origin = (const char *)data + 4;
  if (check_origin(origin, olen) != 0)
    return MR_EUTF8;
  uint64_t inst = 0;
  for (size_t i = 0; i < 8; i++)
    inst = inst << 8 | data[4 + olen + i];
  out->kind = kind;
  out->origin = origin;
  out->origin_len = olen;
  out->instance = inst;
  out->body = data + 4 + olen + 8;
  out->body_len = len - (4 + olen + 8);
  if (kind == MR_REDIS_STATE)
    return 0;
  if (kind != MR_REDIS_ROOM)
    return out->body_len == 0 ? 0 : MR_EPROTO;
  const uint8_t *payload;
  size_t plen, used;
  int r = mr_wire_next_frame(out->body, out->body_len, max_frame, &payload,
                             &plen, &used);
  if (r == MR_EAGAIN || (r == 0 && used != out->body_len))
    return MR_EPROTO;
  if (r != 0)
    return r;
  r = mr_wire_decode(payload, plen, &out->room);
  if (r == MR_ENOTFOUND || (r == 0 && out->room.tag != MR_WIRE_ROOM_TEXT &&
                            out->room.tag != MR_WIRE_ROOM_BINARY))
    return MR_EPROTO;
  return r;
}

int mr_redis_state_next(const uint8_t **pos, size_t *left, mr_wire_msg *m) {
  if (*left == 0)
    return 0;
  const uint8_t *payload;
  size_t plen, used;
  /* The body is whole: a frame cut short is malformed, not pending. */
  int r = mr_wire_next_frame(*pos, *left, *left, &payload, &plen, &used);
  if (r != 0)
    return MR_EPROTO;
  r = mr_wire_decode(payload, plen, m);
  if (r == MR_EUTF8)
    return r;
  if (r != 0 || (m->tag != MR_WIRE_COUNTS && m->tag != MR_WIRE_PRESENCE))
    return MR_EPROTO;
  *pos += used;
  *left -= used;
  return 1;
}
