#include "codec.h"

#include <string.h>

#include "error.h"

size_t mr_frame_header_len(size_t payload_len) {
  if (payload_len < 126)
    return 2;
  if (payload_len <= 0xFFFF)
    return 4;
  return 10;
}

/* Writes the first two bytes and the extended length; the server's and the
 * client's headers differ only in what goes around this. */
static size_t put_header(uint8_t *out, uint8_t b0, uint8_t mask_bit,
                         uint64_t len) {
  out[0] = b0;
  if (len < 126) {
    out[1] = (uint8_t)(mask_bit | len);
    return 2;
  }
  if (len <= 0xFFFF) {
    out[1] = mask_bit | 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    return 4;
  }
  out[1] = mask_bit | 127;
  for (int i = 0; i < 8; i++)
    out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
  return 10;
}

size_t mr_frame_write_header(uint8_t *out, int opcode, size_t len) {
  return put_header(out, (uint8_t)(0x80 | (opcode & 0x0F)), 0, len);
}

size_t mr_frame_write_client_header(uint8_t *out, int fin, int rsv, int opcode,
                                    uint64_t len, const uint8_t *mask_key) {
  uint8_t b0 =
      (uint8_t)((fin ? 0x80 : 0) | ((rsv & 0x07) << 4) | (opcode & 0x0F));
  size_t n = put_header(out, b0, mask_key ? 0x80 : 0, len);
  if (!mask_key)
    return n;
  memcpy(out + n, mask_key, 4);
  return n + 4;
}

void mr_frame_mask(uint8_t *dst, const uint8_t *src, size_t n,
                   const uint8_t mask_key[4], uint64_t pos) {
  for (size_t i = 0; i < n; i++)
    dst[i] = src[i] ^ mask_key[(pos + i) & 3];
}

size_t mr_frame_encode_client(uint8_t *out, int fin, int rsv, int opcode,
                              const void *payload, size_t len,
                              const uint8_t *mask_key) {
  size_t n = mr_frame_write_client_header(out, fin, rsv, opcode, len, mask_key);
  /* An empty payload may come as NULL, which memcpy must not be given. */
  if (len == 0)
    return n;
  if (mask_key)
    mr_frame_mask(out + n, payload, len, mask_key, 0);
  else
    memcpy(out + n, payload, len);
  return n + len;
}

mr_buf *mr_frame_new(int opcode, const void *payload, size_t len) {
  size_t h = mr_frame_header_len(len);
  mr_buf *b = mr_buf_new(h + len);
  if (!b)
    return NULL;
  mr_frame_write_header(b->data, opcode, len);
  if (len)
    memcpy(b->data + h, payload, len);
  return b;
}

mr_buf *mr_frame_new_close(uint16_t code, const char *reason, size_t len) {
  uint8_t body[125];
  size_t n = 0;
  if (code) {
    if (len > 123)
      len = 123;
    body[0] = (uint8_t)(code >> 8);
    body[1] = (uint8_t)code;
    if (len)
      memcpy(body + 2, reason, len);
    n = 2 + len;
  }
  return mr_frame_new(MR_OP_CLOSE, body, n);
}

int mr_close_code_valid(unsigned code) {
  return (code >= 1000 && code <= 1014 && code != 1004 && code != 1005 &&
          code != 1006) ||
         (code >= 3000 && code <= 4999);
}

/* Header size implied by its first two bytes: base, extended length, mask. */
static size_t header_size(const uint8_t *h) {
  size_t n = 2;
  uint8_t len7 = h[1] & 0x7F;
  if (len7 == 126)
    n += 2;
  else if (len7 == 127)
    n += 8;
  if (h[1] & 0x80)
    n += 4;
  return n;
}

int mr_frame_track(mr_frame_tracker *t, const uint8_t *p, size_t n,
                   uint64_t max_message, size_t *ok) {
  size_t i = 0;
  while (i < n) {
    if (t->remaining > 0) {
      uint64_t skip = n - i < t->remaining ? n - i : t->remaining;
      t->remaining -= skip;
      i += (size_t)skip;
      continue;
    }
    t->hdr[t->hlen++] = p[i++];
    if (t->hlen < 2 || t->hlen < header_size(t->hdr))
      continue;
    uint8_t len7 = t->hdr[1] & 0x7F;
    uint64_t len = len7;
    if (len7 == 126)
      len = (uint64_t)t->hdr[2] << 8 | t->hdr[3];
    else if (len7 == 127)
      for (int k = 0; k < 8; k++)
        len = (k ? len << 8 : 0) | t->hdr[2 + k];
    int opcode = t->hdr[0] & 0x0F;
    int fin = t->hdr[0] >> 7;
    t->hlen = 0;
    t->remaining = len;
    if (opcode >= 0x8)
      continue; /* control frames are capped at 125 bytes by wslay */
    t->msg_len = opcode == MR_OP_CONT ? t->msg_len + len : len;
    if (t->msg_len > max_message || t->msg_len < len) {
      *ok = i;
      return MR_ETOOBIG;
    }
    t->in_msg = !fin;
    if (fin)
      t->msg_len = 0;
  }
  *ok = n;
  return 0;
}
