#include "codec.h"

#include <string.h>

size_t mr_frame_header_len(size_t payload_len) {
  if (payload_len < 126)
    return 2;
  if (payload_len <= 0xFFFF)
    return 4;
  return 10;
}

size_t mr_frame_write_header(uint8_t *out, int opcode, size_t len) {
  out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
  if (len < 126) {
    out[1] = (uint8_t)len;
    return 2;
  }
  if (len <= 0xFFFF) {
    out[1] = 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++)
    out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
  return 10;
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
