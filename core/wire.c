/* Cluster wire format; see wire.h for the frame layouts and the handshake.
 *
 * Encoders check every input before they touch the output buffer, then
 * reserve the exact frame size once and write it front to back, so a failed
 * call leaves the buffer as it was. Decoders never read a byte without first
 * checking that it is inside the payload. */
#include "wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "error.h"
#include "utf8.h"

/* ---- Big-endian helpers ---- */

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v) {
  put32(p, (uint32_t)(v >> 32));
  put32(p + 4, (uint32_t)v);
}

static uint16_t get16(const uint8_t *p) {
  return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static uint64_t get64(const uint8_t *p) {
  return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* Node names and addresses end up in log lines and C strings, so on top of
 * being UTF-8 they must not contain NUL or other ASCII control bytes. */
static int name_valid(const uint8_t *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (s[i] < 0x20 || s[i] == 0x7F)
      return 0;
  return mr_utf8_valid(s, len);
}

/* ---- Output buffer ---- */

void mr_wire_buf_init(mr_wbuf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void mr_wire_buf_free(mr_wbuf *b) {
  free(b->data);
  mr_wire_buf_init(b);
}

void mr_wire_buf_reset(mr_wbuf *b) { b->len = 0; }

int mr_wire_buf_reserve(mr_wbuf *b, size_t extra) {
  if (extra > SIZE_MAX - b->len)
    return MR_ENOMEM;
  size_t need = b->len + extra;
  if (need <= b->cap)
    return 0;
  /* Doubling keeps many small appends amortised O(1); taking need when it
   * is larger sizes a single big room frame exactly instead of rounding a
   * 16 MiB message up to 32 MiB. */
  size_t ncap = b->cap > SIZE_MAX / 2 ? SIZE_MAX : b->cap * 2;
  if (ncap < need)
    ncap = need;
  if (ncap < 64)
    ncap = 64;
  uint8_t *p = realloc(b->data, ncap);
  if (!p)
    return MR_ENOMEM;
  b->data = p;
  b->cap = ncap;
  return 0;
}

/* ---- Encoders ---- */

/* Checks a room name given to an encoder. */
static int check_room(const char *room, size_t room_len) {
  if (room_len == 0 || room_len > MR_WIRE_MAX_ROOM || !room)
    return MR_EINVAL;
  if (!mr_utf8_valid((const uint8_t *)room, room_len))
    return MR_EUTF8;
  return 0;
}

/* Checks a node name or dial address given to an encoder. */
static int check_name(const char *name, size_t name_len) {
  if (name_len == 0 || name_len > MR_WIRE_MAX_NAME || !name)
    return MR_EINVAL;
  if (!name_valid((const uint8_t *)name, name_len))
    return MR_EUTF8;
  return 0;
}

/* Reserves a whole frame whose payload (tag included) is payload_len bytes
 * and writes the length prefix and tag. Returns the write cursor just after
 * the tag, or NULL with *err set; nothing is appended until the caller sets
 * out->len after writing the body. */
static uint8_t *frame_open(mr_wbuf *out, uint8_t tag, size_t payload_len,
                           int *err) {
  if (payload_len > UINT32_MAX) {
    *err = MR_ETOOBIG;
    return NULL;
  }
  if (payload_len > SIZE_MAX - MR_WIRE_PREFIX_LEN ||
      mr_wire_buf_reserve(out, MR_WIRE_PREFIX_LEN + payload_len) != 0) {
    *err = MR_ENOMEM;
    return NULL;
  }
  uint8_t *w = out->data + out->len;
  put32(w, (uint32_t)payload_len);
  w[4] = tag;
  return w + 5;
}

/* Commits a frame written through frame_open: w is the end of the body. */
static int frame_close(mr_wbuf *out, uint8_t *w) {
  out->len = (size_t)(w - out->data);
  return 0;
}

static uint8_t *put_str16(uint8_t *w, const char *s, size_t len) {
  put16(w, (uint16_t)len);
  memcpy(w + 2, s, len);
  return w + 2 + len;
}

int mr_wire_encode_hello(mr_wbuf *out, const char *name, size_t name_len,
                         const char *addr, size_t addr_len,
                         const uint8_t nonce[32]) {
  int err;
  if ((err = check_name(name, name_len)) != 0 ||
      (err = check_name(addr, addr_len)) != 0)
    return err;
  if (!nonce)
    return MR_EINVAL;
  size_t plen = 1 + 1 + 2 + name_len + 2 + addr_len + MR_WIRE_NONCE_LEN;
  uint8_t *w = frame_open(out, MR_WIRE_HELLO, plen, &err);
  if (!w)
    return err;
  *w++ = (uint8_t)MR_WIRE_VERSION;
  w = put_str16(w, name, name_len);
  w = put_str16(w, addr, addr_len);
  memcpy(w, nonce, MR_WIRE_NONCE_LEN);
  return frame_close(out, w + MR_WIRE_NONCE_LEN);
}

static int encode_mac(mr_wbuf *out, uint8_t tag, const uint8_t mac[32]) {
  int err;
  if (!mac)
    return MR_EINVAL;
  uint8_t *w = frame_open(out, tag, 1 + MR_WIRE_MAC_LEN, &err);
  if (!w)
    return err;
  memcpy(w, mac, MR_WIRE_MAC_LEN);
  return frame_close(out, w + MR_WIRE_MAC_LEN);
}

int mr_wire_encode_challenge(mr_wbuf *out, const uint8_t mac[32]) {
  return encode_mac(out, MR_WIRE_CHALLENGE, mac);
}

int mr_wire_encode_auth(mr_wbuf *out, const uint8_t mac[32]) {
  return encode_mac(out, MR_WIRE_AUTH, mac);
}

int mr_wire_encode_interest(mr_wbuf *out, int add, const char *room,
                            size_t room_len) {
  int err = check_room(room, room_len);
  if (err)
    return err;
  uint8_t *w = frame_open(out, MR_WIRE_INTEREST, 1 + 1 + 2 + room_len, &err);
  if (!w)
    return err;
  *w++ = add ? 1 : 0;
  return frame_close(out, put_str16(w, room, room_len));
}

static int encode_token(mr_wbuf *out, uint8_t tag, uint64_t token) {
  int err;
  uint8_t *w = frame_open(out, tag, 1 + 8, &err);
  if (!w)
    return err;
  put64(w, token);
  return frame_close(out, w + 8);
}

int mr_wire_encode_ping(mr_wbuf *out, uint64_t token) {
  return encode_token(out, MR_WIRE_PING, token);
}

int mr_wire_encode_pong(mr_wbuf *out, uint64_t token) {
  return encode_token(out, MR_WIRE_PONG, token);
}

/* Size of a room frame's payload without the message bytes: tag, u16 room
 * length, room, u32 message length. */
#define ROOM_FIXED 7u

int mr_wire_encode_room_header(mr_wbuf *out, int binary, const char *room,
                               size_t room_len, size_t msg_len) {
  int err = check_room(room, room_len);
  if (err)
    return err;
  /* The payload length must fit the u32 prefix; checking msg_len against
   * the remainder avoids overflowing the sum on any size_t width. */
  if (msg_len > UINT32_MAX - ROOM_FIXED - room_len)
    return MR_ETOOBIG;
  uint8_t tag = binary ? MR_WIRE_ROOM_BINARY : MR_WIRE_ROOM_TEXT;
  /* frame_open reserves the whole frame, message included, so that
   * mr_wire_encode_room can copy the message right behind the header
   * without a second reallocation. */
  uint8_t *w = frame_open(out, tag, ROOM_FIXED + room_len + msg_len, &err);
  if (!w)
    return err;
  w = put_str16(w, room, room_len);
  put32(w, (uint32_t)msg_len);
  return frame_close(out, w + 4);
}

int mr_wire_encode_room(mr_wbuf *out, int binary, const char *room,
                        size_t room_len, const uint8_t *msg, size_t msg_len) {
  if (!msg && msg_len)
    return MR_EINVAL;
  int err = mr_wire_encode_room_header(out, binary, room, room_len, msg_len);
  if (err)
    return err;
  if (msg_len)
    memcpy(out->data + out->len, msg, msg_len);
  out->len += msg_len;
  return 0;
}

/* Checks that frame is the offset of a list frame with the given tag that
 * ends exactly at out->len, so appending an entry extends that frame. */
static int list_frame_ok(const mr_wbuf *out, size_t frame, uint8_t tag,
                         size_t count_len) {
  if (frame > out->len || out->len - frame < MR_WIRE_PREFIX_LEN + 1 + count_len)
    return 0;
  const uint8_t *f = out->data + frame;
  return f[MR_WIRE_PREFIX_LEN] == tag &&
         get32(f) == out->len - frame - MR_WIRE_PREFIX_LEN;
}

int mr_wire_encode_peers_begin(mr_wbuf *out, size_t *frame) {
  int err;
  size_t at = out->len;
  uint8_t *w = frame_open(out, MR_WIRE_PEERS, 1 + 2, &err);
  if (!w)
    return err;
  put16(w, 0);
  *frame = at;
  return frame_close(out, w + 2);
}

int mr_wire_encode_peers_add(mr_wbuf *out, size_t frame, const char *name,
                             size_t name_len, const char *addr,
                             size_t addr_len) {
  int err;
  if (!list_frame_ok(out, frame, MR_WIRE_PEERS, 2))
    return MR_EINVAL;
  if ((err = check_name(name, name_len)) != 0 ||
      (err = check_name(addr, addr_len)) != 0)
    return err;
  uint8_t *f = out->data + frame;
  uint16_t count = get16(f + 5);
  size_t entry = 2 + name_len + 2 + addr_len;
  uint32_t plen = get32(f);
  if (count == UINT16_MAX || entry > UINT32_MAX - plen)
    return MR_ETOOBIG;
  if (mr_wire_buf_reserve(out, entry) != 0)
    return MR_ENOMEM;
  f = out->data + frame; /* the reservation may have moved the buffer */
  uint8_t *w = out->data + out->len;
  w = put_str16(w, name, name_len);
  w = put_str16(w, addr, addr_len);
  put16(f + 5, (uint16_t)(count + 1));
  put32(f, plen + (uint32_t)entry);
  return frame_close(out, w);
}

int mr_wire_encode_interest_all_begin(mr_wbuf *out, size_t *frame) {
  int err;
  size_t at = out->len;
  uint8_t *w = frame_open(out, MR_WIRE_INTEREST_ALL, 1 + 4, &err);
  if (!w)
    return err;
  put32(w, 0);
  *frame = at;
  return frame_close(out, w + 4);
}

int mr_wire_encode_interest_all_add(mr_wbuf *out, size_t frame,
                                    const char *room, size_t room_len) {
  if (!list_frame_ok(out, frame, MR_WIRE_INTEREST_ALL, 4))
    return MR_EINVAL;
  int err = check_room(room, room_len);
  if (err)
    return err;
  uint8_t *f = out->data + frame;
  uint32_t count = get32(f + 5);
  size_t entry = 2 + room_len;
  uint32_t plen = get32(f);
  if (count == UINT32_MAX || entry > UINT32_MAX - plen)
    return MR_ETOOBIG;
  if (mr_wire_buf_reserve(out, entry) != 0)
    return MR_ENOMEM;
  f = out->data + frame; /* the reservation may have moved the buffer */
  uint8_t *w = put_str16(out->data + out->len, room, room_len);
  put32(f + 5, count + 1);
  put32(f, plen + (uint32_t)entry);
  return frame_close(out, w);
}

/* Begins a COUNTS or PRESENCE frame: [flags][u32 count = 0]. */
static int state_begin(mr_wbuf *out, uint8_t tag, unsigned flags,
                       size_t *frame) {
  int err;
  if (flags & ~(MR_WIRE_SYNC_FIRST | MR_WIRE_SYNC_LAST))
    return MR_EINVAL;
  size_t at = out->len;
  uint8_t *w = frame_open(out, tag, 1 + 1 + 4, &err);
  if (!w)
    return err;
  w[0] = (uint8_t)flags;
  put32(w + 1, 0);
  *frame = at;
  return frame_close(out, w + 5);
}

/* Reserves entry more bytes at the end of the list frame at frame and
 * counts them (and one more entry) into its header. Returns the write
 * cursor for the entry, or NULL with *err set. */
static uint8_t *state_grow(mr_wbuf *out, size_t frame, size_t entry, int *err) {
  uint8_t *f = out->data + frame;
  uint32_t count = get32(f + 6);
  uint32_t plen = get32(f);
  if (count == UINT32_MAX || entry > UINT32_MAX - plen) {
    *err = MR_ETOOBIG;
    return NULL;
  }
  if (mr_wire_buf_reserve(out, entry) != 0) {
    *err = MR_ENOMEM;
    return NULL;
  }
  f = out->data + frame; /* the reservation may have moved the buffer */
  put32(f + 6, count + 1);
  put32(f, plen + (uint32_t)entry);
  return out->data + out->len;
}

int mr_wire_encode_counts_begin(mr_wbuf *out, unsigned flags, size_t *frame) {
  return state_begin(out, MR_WIRE_COUNTS, flags, frame);
}

int mr_wire_encode_counts_add(mr_wbuf *out, size_t frame, const char *room,
                              size_t room_len, uint32_t members) {
  int err;
  if (!list_frame_ok(out, frame, MR_WIRE_COUNTS, 5))
    return MR_EINVAL;
  if ((err = check_room(room, room_len)) != 0)
    return err;
  uint8_t *w = state_grow(out, frame, 2 + room_len + 4, &err);
  if (!w)
    return err;
  w = put_str16(w, room, room_len);
  put32(w, members);
  return frame_close(out, w + 4);
}

int mr_wire_encode_presence_begin(mr_wbuf *out, unsigned flags, size_t *frame) {
  return state_begin(out, MR_WIRE_PRESENCE, flags, frame);
}

int mr_wire_encode_presence_add(mr_wbuf *out, size_t frame, int join,
                                const char *room, size_t room_len, uint64_t id,
                                const uint8_t *meta, size_t meta_len) {
  int err;
  if (!list_frame_ok(out, frame, MR_WIRE_PRESENCE, 5))
    return MR_EINVAL;
  if ((err = check_room(room, room_len)) != 0)
    return err;
  if (!join)
    meta_len = 0;
  if (meta_len > MR_WIRE_MAX_META || (meta_len && !meta))
    return MR_EINVAL;
  uint8_t *w =
      state_grow(out, frame, 1 + 2 + room_len + 8 + 4 + meta_len, &err);
  if (!w)
    return err;
  *w++ = join ? 1 : 0;
  w = put_str16(w, room, room_len);
  put64(w, id);
  put32(w + 8, (uint32_t)meta_len);
  w += 12;
  if (meta_len)
    memcpy(w, meta, meta_len);
  return frame_close(out, w + meta_len);
}

void mr_wire_state_mark_last(mr_wbuf *out, size_t frame) {
  if (frame + MR_WIRE_PREFIX_LEN + 1 < out->len)
    out->data[frame + MR_WIRE_PREFIX_LEN + 1] |= MR_WIRE_SYNC_LAST;
}

/* ---- Decoders ---- */

int mr_wire_next_frame(const uint8_t *buf, size_t len, size_t max_frame,
                       const uint8_t **payload, size_t *payload_len,
                       size_t *consumed) {
  if (len < MR_WIRE_PREFIX_LEN)
    return MR_EAGAIN;
  uint32_t n = get32(buf);
  /* Both checks come before waiting for the payload, so a hostile length
   * is refused at once instead of making the link buffer up to 4 GiB. */
  if (n == 0)
    return MR_EPROTO;
  if (n > max_frame)
    return MR_ETOOBIG;
  if (len - MR_WIRE_PREFIX_LEN < n)
    return MR_EAGAIN;
  *payload = buf + MR_WIRE_PREFIX_LEN;
  *payload_len = n;
  *consumed = MR_WIRE_PREFIX_LEN + (size_t)n;
  return 0;
}

/* A bounds-checked cursor over the bytes of a payload not yet read. */
typedef struct {
  const uint8_t *p;
  size_t left;
} reader;

static int rd_u8(reader *r, uint8_t *v) {
  if (r->left < 1)
    return 0;
  *v = r->p[0];
  r->p++;
  r->left--;
  return 1;
}

static int rd_u16(reader *r, uint16_t *v) {
  if (r->left < 2)
    return 0;
  *v = get16(r->p);
  r->p += 2;
  r->left -= 2;
  return 1;
}

static int rd_u32(reader *r, uint32_t *v) {
  if (r->left < 4)
    return 0;
  *v = get32(r->p);
  r->p += 4;
  r->left -= 4;
  return 1;
}

static int rd_u64(reader *r, uint64_t *v) {
  if (r->left < 8)
    return 0;
  *v = get64(r->p);
  r->p += 8;
  r->left -= 8;
  return 1;
}

static int rd_bytes(reader *r, size_t n, const uint8_t **v) {
  if (r->left < n)
    return 0;
  *v = r->p;
  r->p += n;
  r->left -= n;
  return 1;
}

/* Reads [u16 len][bytes]; the length is only checked against the input. */
static int rd_str16(reader *r, const char **s, size_t *len) {
  uint16_t n;
  const uint8_t *p;
  if (!rd_u16(r, &n) || !rd_bytes(r, n, &p))
    return 0;
  *s = (const char *)p;
  *len = n;
  return 1;
}

static int fail(mr_wire_msg *msg, int err, const char *why) {
  msg->error = why;
  return err;
}

/* Reads and checks one [u16 len][name] field of HELLO or PEERS. Returns 0
 * or an error code with msg->error set. */
static int rd_name(reader *r, const char **s, size_t *len, mr_wire_msg *msg,
                   const char *what_short, const char *what_bad) {
  if (!rd_str16(r, s, len))
    return fail(msg, MR_EPROTO, what_short);
  if (*len == 0 || *len > MR_WIRE_MAX_NAME)
    return fail(msg, MR_EPROTO, "node name or address length out of range");
  if (!name_valid((const uint8_t *)*s, *len))
    return fail(msg, MR_EUTF8, what_bad);
  return 0;
}

/* Reads and checks one [u16 len][room] field. */
static int rd_room(reader *r, const char **room, size_t *len,
                   mr_wire_msg *msg) {
  if (!rd_str16(r, room, len))
    return fail(msg, MR_EPROTO, "truncated room name");
  if (*len == 0)
    return fail(msg, MR_EPROTO, "empty room name");
  if (!mr_utf8_valid((const uint8_t *)*room, *len))
    return fail(msg, MR_EUTF8, "room name is not valid UTF-8");
  return 0;
}

static int decode_hello(reader *r, mr_wire_msg *msg) {
  int err;
  if (!rd_u8(r, &msg->hello.version))
    return fail(msg, MR_EPROTO, "truncated HELLO");
  /* The version is checked first because a future version may lay out the
   * rest differently; the caller logs msg->hello.version. */
  if (msg->hello.version != MR_WIRE_VERSION)
    return fail(msg, MR_EPROTO, "unsupported protocol version");
  if ((err = rd_name(r, &msg->hello.name, &msg->hello.name_len, msg,
                     "truncated HELLO node name",
                     "HELLO node name is not printable UTF-8")) != 0)
    return err;
  if ((err = rd_name(r, &msg->hello.addr, &msg->hello.addr_len, msg,
                     "truncated HELLO address",
                     "HELLO address is not printable UTF-8")) != 0)
    return err;
  if (!rd_bytes(r, MR_WIRE_NONCE_LEN, &msg->hello.nonce))
    return fail(msg, MR_EPROTO, "truncated HELLO nonce");
  return 0;
}

static int decode_peers(reader *r, mr_wire_msg *msg) {
  uint16_t count;
  if (!rd_u16(r, &count))
    return fail(msg, MR_EPROTO, "truncated PEERS count");
  msg->peers.count = count;
  msg->peers.entries = r->p;
  for (uint32_t i = 0; i < count; i++) {
    const char *s;
    size_t n;
    int err;
    if ((err = rd_name(r, &s, &n, msg, "truncated PEERS entry",
                       "PEERS node name is not printable UTF-8")) != 0 ||
        (err = rd_name(r, &s, &n, msg, "truncated PEERS entry",
                       "PEERS address is not printable UTF-8")) != 0)
      return err;
  }
  msg->peers.entries_len = (size_t)(r->p - msg->peers.entries);
  return 0;
}

static int decode_interest_all(reader *r, mr_wire_msg *msg) {
  uint32_t count;
  if (!rd_u32(r, &count))
    return fail(msg, MR_EPROTO, "truncated INTEREST_ALL count");
  /* Every entry takes at least three bytes, so a count that cannot fit is
   * refused before looping up to four billion times. */
  if (count > r->left / 3)
    return fail(msg, MR_EPROTO, "INTEREST_ALL count exceeds the payload");
  msg->rooms.count = count;
  msg->rooms.entries = r->p;
  for (uint32_t i = 0; i < count; i++) {
    const char *room;
    size_t n;
    int err = rd_room(r, &room, &n, msg);
    if (err)
      return err;
  }
  msg->rooms.entries_len = (size_t)(r->p - msg->rooms.entries);
  return 0;
}

/* COUNTS and PRESENCE: [flags][u32 count] and the entries, every one
 * checked here so that the iterators cannot meet a bad one. */
static int decode_state(reader *r, mr_wire_msg *msg) {
  uint32_t count;
  if (!rd_u8(r, &msg->state.flags) || !rd_u32(r, &count))
    return fail(msg, MR_EPROTO, "truncated COUNTS/PRESENCE header");
  if (msg->state.flags & ~(MR_WIRE_SYNC_FIRST | MR_WIRE_SYNC_LAST))
    return fail(msg, MR_EPROTO, "unknown COUNTS/PRESENCE flags");
  int presence = msg->tag == MR_WIRE_PRESENCE;
  /* The smallest entry is 7 bytes (COUNTS) or 16 (PRESENCE): a count that
   * cannot fit is refused before looping up to four billion times. */
  if (count > r->left / (presence ? 16 : 7))
    return fail(msg, MR_EPROTO, "COUNTS/PRESENCE count exceeds the payload");
  msg->state.list.count = count;
  msg->state.list.entries = r->p;
  for (uint32_t i = 0; i < count; i++) {
    const char *room;
    size_t n;
    uint8_t op = 1;
    uint32_t v;
    uint64_t id;
    const uint8_t *meta;
    int err;
    if (presence && !rd_u8(r, &op))
      return fail(msg, MR_EPROTO, "truncated PRESENCE entry");
    if (op > 1)
      return fail(msg, MR_EPROTO, "PRESENCE op is neither join nor leave");
    if ((err = rd_room(r, &room, &n, msg)) != 0)
      return err;
    if (!presence) {
      if (!rd_u32(r, &v))
        return fail(msg, MR_EPROTO, "truncated COUNTS entry");
      continue;
    }
    if (!rd_u64(r, &id) || !rd_u32(r, &v) || !rd_bytes(r, v, &meta))
      return fail(msg, MR_EPROTO, "truncated PRESENCE entry");
    if (v > MR_WIRE_MAX_META || (op == 0 && v != 0))
      return fail(msg, MR_EPROTO, "PRESENCE meta length out of range");
    if (op == 1 && (err = mr_wire_meta_check(meta, v)) != 0)
      return fail(msg, err, "PRESENCE meta is malformed");
  }
  msg->state.list.entries_len = (size_t)(r->p - msg->state.list.entries);
  return 0;
}

static int decode_room(reader *r, mr_wire_msg *msg) {
  uint16_t room_len;
  uint32_t data_len;
  const uint8_t *room;
  /* All lengths are checked before any UTF-8, so a truncated frame is
   * always reported as truncated, whatever its contents. */
  if (!rd_u16(r, &room_len) || !rd_bytes(r, room_len, &room))
    return fail(msg, MR_EPROTO, "truncated room name");
  if (room_len == 0)
    return fail(msg, MR_EPROTO, "empty room name");
  if (!rd_u32(r, &data_len) || !rd_bytes(r, data_len, &msg->room.data))
    return fail(msg, MR_EPROTO, "truncated room message");
  if (r->left != 0)
    return fail(msg, MR_EPROTO, "trailing bytes after room message");
  msg->room.binary = msg->tag == MR_WIRE_ROOM_BINARY;
  msg->room.room = (const char *)room;
  msg->room.room_len = room_len;
  msg->room.data_len = data_len;
  if (!mr_utf8_valid(room, room_len))
    return fail(msg, MR_EUTF8, "room name is not valid UTF-8");
  if (!msg->room.binary && !mr_utf8_valid(msg->room.data, data_len))
    return fail(msg, MR_EUTF8, "text message is not valid UTF-8");
  return 0;
}

int mr_wire_decode(const uint8_t *payload, size_t len, mr_wire_msg *msg) {
  memset(msg, 0, sizeof *msg);
  if (len == 0)
    return fail(msg, MR_EPROTO, "empty payload");
  msg->tag = payload[0];
  reader r = {payload + 1, len - 1};
  int err = 0;
  switch (msg->tag) {
  case MR_WIRE_HELLO:
    err = decode_hello(&r, msg);
    break;
  case MR_WIRE_CHALLENGE:
  case MR_WIRE_AUTH:
    if (!rd_bytes(&r, MR_WIRE_MAC_LEN, &msg->auth.mac))
      err = fail(msg, MR_EPROTO, "truncated MAC");
    break;
  case MR_WIRE_PEERS:
    err = decode_peers(&r, msg);
    break;
  case MR_WIRE_INTEREST: {
    uint8_t op;
    if (!rd_u8(&r, &op))
      err = fail(msg, MR_EPROTO, "truncated INTEREST");
    else if (op > 1)
      err = fail(msg, MR_EPROTO, "INTEREST op is neither add nor remove");
    else {
      msg->interest.add = op;
      err = rd_room(&r, &msg->interest.room, &msg->interest.room_len, msg);
    }
    break;
  }
  case MR_WIRE_INTEREST_ALL:
    err = decode_interest_all(&r, msg);
    break;
  case MR_WIRE_PING:
  case MR_WIRE_PONG:
    if (!rd_u64(&r, &msg->ping.token))
      err = fail(msg, MR_EPROTO, "truncated PING/PONG token");
    break;
  case MR_WIRE_ROOM_TEXT:
  case MR_WIRE_ROOM_BINARY:
    err = decode_room(&r, msg);
    break;
  case MR_WIRE_COUNTS:
  case MR_WIRE_PRESENCE:
    err = decode_state(&r, msg);
    break;
  default:
    return fail(msg, MR_ENOTFOUND, "unknown tag");
  }
  if (err)
    return err;
  if (r.left != 0)
    return fail(msg, MR_EPROTO, "trailing bytes after message");
  return 0;
}

void mr_wire_iter_init(mr_wire_iter *it, const mr_wire_msg *msg) {
  const mr_wire_list *l = NULL;
  if (msg->error == NULL && msg->tag == MR_WIRE_PEERS)
    l = &msg->peers;
  else if (msg->error == NULL && msg->tag == MR_WIRE_INTEREST_ALL)
    l = &msg->rooms;
  else if (msg->error == NULL &&
           (msg->tag == MR_WIRE_COUNTS || msg->tag == MR_WIRE_PRESENCE))
    l = &msg->state.list;
  if (!l || !l->entries) {
    it->pos = it->end = NULL;
    it->left = 0;
    return;
  }
  it->pos = l->entries;
  it->end = l->entries + l->entries_len;
  it->left = l->count;
}

/* Takes one [u16 len][bytes] from an iterator. The list was validated by
 * mr_wire_decode, but the bounds are checked again because it costs nothing
 * and a misused iterator must not read past the payload. */
static int it_str16(mr_wire_iter *it, const char **s, size_t *len) {
  reader r = {it->pos, (size_t)(it->end - it->pos)};
  if (!rd_str16(&r, s, len))
    return 0;
  it->pos = r.p;
  return 1;
}

int mr_wire_peers_next(mr_wire_iter *it, mr_wire_peer *peer) {
  if (it->left == 0)
    return 0;
  if (!it_str16(it, &peer->name, &peer->name_len) ||
      !it_str16(it, &peer->addr, &peer->addr_len)) {
    it->left = 0;
    return 0;
  }
  it->left--;
  return 1;
}

int mr_wire_rooms_next(mr_wire_iter *it, const char **room, size_t *room_len) {
  if (it->left == 0)
    return 0;
  if (!it_str16(it, room, room_len)) {
    it->left = 0;
    return 0;
  }
  it->left--;
  return 1;
}

int mr_wire_counts_next(mr_wire_iter *it, const char **room, size_t *room_len,
                        uint32_t *members) {
  if (it->left == 0)
    return 0;
  reader r = {it->pos, (size_t)(it->end - it->pos)};
  if (!rd_str16(&r, room, room_len) || !rd_u32(&r, members)) {
    it->left = 0;
    return 0;
  }
  it->pos = r.p;
  it->left--;
  return 1;
}

int mr_wire_presence_next(mr_wire_iter *it, mr_wire_presence_entry *e) {
  if (it->left == 0)
    return 0;
  reader r = {it->pos, (size_t)(it->end - it->pos)};
  uint8_t op;
  uint32_t n;
  if (!rd_u8(&r, &op) || !rd_str16(&r, &e->room, &e->room_len) ||
      !rd_u64(&r, &e->id) || !rd_u32(&r, &n) || !rd_bytes(&r, n, &e->meta)) {
    it->left = 0;
    return 0;
  }
  e->join = op == 1;
  e->meta_len = n;
  it->pos = r.p;
  it->left--;
  return 1;
}

/* ---- Presence meta ---- */

int mr_wire_meta_begin(mr_wbuf *out, size_t *at) {
  if (mr_wire_buf_reserve(out, 2) != 0)
    return MR_ENOMEM;
  *at = out->len;
  put16(out->data + out->len, 0);
  out->len += 2;
  return 0;
}

/* Whether key a sorts strictly before key b (bytewise, shorter first). */
static int key_before(const char *a, size_t alen, const char *b, size_t blen) {
  size_t n = alen < blen ? alen : blen;
  int c = memcmp(a, b, n);
  return c < 0 || (c == 0 && alen < blen);
}

int mr_wire_meta_next(const uint8_t **pos, size_t *left,
                      mr_wire_meta_field *f) {
  reader r = {*pos, *left};
  uint8_t klen, type;
  const uint8_t *k;
  if (!rd_u8(&r, &klen) || !rd_bytes(&r, klen, &k) || !rd_u8(&r, &type))
    return 0;
  memset(f, 0, sizeof *f);
  f->key = (const char *)k;
  f->key_len = klen;
  f->type = type;
  if (type == MR_META_NUMBER) {
    uint64_t bits;
    if (!rd_u64(&r, &bits))
      return 0;
    memcpy(&f->num, &bits, sizeof bits);
  } else if (type == MR_META_STRING) {
    if (!rd_str16(&r, &f->str, &f->str_len))
      return 0;
  } else if (type > MR_META_TRUE) {
    return 0;
  }
  *pos = r.p;
  *left = r.left;
  return 1;
}

int mr_wire_meta_add(mr_wbuf *out, size_t at, const mr_wire_meta_field *f) {
  if (at + 2 > out->len || f->key_len == 0 || f->key_len > 255 || f->type < 0 ||
      f->type > MR_META_STRING ||
      (f->type == MR_META_STRING && f->str_len > UINT16_MAX))
    return MR_EINVAL;
  if (!mr_utf8_valid((const uint8_t *)f->key, f->key_len) ||
      (f->type == MR_META_STRING &&
       !mr_utf8_valid((const uint8_t *)f->str, f->str_len)))
    return MR_EUTF8;
  uint16_t count = get16(out->data + at);
  if (count == UINT16_MAX)
    return MR_EINVAL;
  /* The new key must sort after the last one: walk to it. */
  const uint8_t *pos = out->data + at + 2;
  size_t left = out->len - at - 2;
  mr_wire_meta_field last = {0};
  for (uint16_t i = 0; i < count; i++)
    if (!mr_wire_meta_next(&pos, &left, &last))
      return MR_EINVAL;
  if (left != 0 ||
      (count && !key_before(last.key, last.key_len, f->key, f->key_len)))
    return MR_EINVAL;
  size_t n = 1 + f->key_len + 1 +
             (f->type == MR_META_NUMBER   ? 8
              : f->type == MR_META_STRING ? 2 + f->str_len
                                          : 0);
  if (mr_wire_buf_reserve(out, n) != 0)
    return MR_ENOMEM;
  uint8_t *w = out->data + out->len;
  *w++ = (uint8_t)f->key_len;
  memcpy(w, f->key, f->key_len);
  w += f->key_len;
  *w++ = (uint8_t)f->type;
  if (f->type == MR_META_NUMBER) {
    uint64_t bits;
    memcpy(&bits, &f->num, sizeof bits);
    put64(w, bits);
    w += 8;
  } else if (f->type == MR_META_STRING) {
    w = put_str16(w, f->str, f->str_len);
  }
  put16(out->data + at, (uint16_t)(count + 1));
  out->len = (size_t)(w - out->data);
  return 0;
}

int mr_wire_meta_check(const uint8_t *meta, size_t len) {
  reader r = {meta, len};
  uint16_t count;
  if (!rd_u16(&r, &count))
    return MR_EPROTO;
  const uint8_t *pos = r.p;
  size_t left = r.left;
  mr_wire_meta_field f, prev = {0};
  for (uint16_t i = 0; i < count; i++) {
    if (!mr_wire_meta_next(&pos, &left, &f) || f.key_len == 0 ||
        (i && !key_before(prev.key, prev.key_len, f.key, f.key_len)))
      return MR_EPROTO;
    if (!mr_utf8_valid((const uint8_t *)f.key, f.key_len) ||
        (f.type == MR_META_STRING &&
         !mr_utf8_valid((const uint8_t *)f.str, f.str_len)))
      return MR_EUTF8;
    prev = f;
  }
  return left == 0 ? 0 : MR_EPROTO;
}

/* ---- Authentication ---- */

int mr_wire_nonce(uint8_t out[32]) {
  if (RAND_bytes(out, MR_WIRE_NONCE_LEN) != 1) {
    memset(out, 0, MR_WIRE_NONCE_LEN);
    return MR_EAUTH;
  }
  return 0;
}

/* Feeds [u32 len][s] into the MAC, so field boundaries are unambiguous. */
static int mac_str(EVP_MAC_CTX *ctx, const char *s) {
  size_t n = strlen(s);
  uint8_t len[4];
  if (n > UINT32_MAX)
    return 0;
  put32(len, (uint32_t)n);
  return EVP_MAC_update(ctx, len, 4) == 1 &&
         EVP_MAC_update(ctx, (const unsigned char *)s, n) == 1;
}

int mr_wire_auth_mac(const char *cookie, size_t cookie_len,
                     const char *direction_label,
                     const uint8_t nonce_dialer[32],
                     const uint8_t nonce_acceptor[32], const char *from_name,
                     const char *to_name, uint8_t out[32]) {
  memset(out, 0, MR_WIRE_MAC_LEN);
  if (!cookie || cookie_len == 0 || !direction_label || !nonce_dialer ||
      !nonce_acceptor || !from_name || !to_name)
    return MR_EINVAL;
  int ok = 0;
  /* The MAC object is fetched per call rather than cached, to keep this
   * module free of global state; handshakes are rare enough for the cost
   * not to matter. */
  EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
  if (ctx) {
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    uint8_t md[EVP_MAX_MD_SIZE];
    size_t md_len = 0;
    ok = EVP_MAC_init(ctx, (const unsigned char *)cookie, cookie_len, params) ==
             1 &&
         mac_str(ctx, direction_label) &&
         EVP_MAC_update(ctx, nonce_dialer, MR_WIRE_NONCE_LEN) == 1 &&
         EVP_MAC_update(ctx, nonce_acceptor, MR_WIRE_NONCE_LEN) == 1 &&
         mac_str(ctx, from_name) && mac_str(ctx, to_name) &&
         EVP_MAC_final(ctx, md, &md_len, sizeof md) == 1 &&
         md_len == MR_WIRE_MAC_LEN;
    if (ok)
      memcpy(out, md, MR_WIRE_MAC_LEN);
    OPENSSL_cleanse(md, sizeof md);
  }
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return ok ? 0 : MR_EAUTH;
}

int mr_wire_mac_equal(const uint8_t a[32], const uint8_t b[32]) {
  return CRYPTO_memcmp(a, b, MR_WIRE_MAC_LEN) == 0;
}
