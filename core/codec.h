/* WebSocket frame encoding (server frames, and client frames for the tests
 * and the kit) and the frame-header tracker; the wslay adapter is ws.c.
 *
 * Outgoing data frames are encoded here once, into a refcounted block that
 * any number of connections can queue; wslay is used for everything it is
 * good at on the receive side (unmasking, UTF-8, limits, control frames)
 * and only for control frames on the send side. */
#ifndef MR_CODEC_H
#define MR_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum {
  MR_OP_CONT = 0x0,
  MR_OP_TEXT = 0x1,
  MR_OP_BINARY = 0x2,
  MR_OP_CLOSE = 0x8,
  MR_OP_PING = 0x9,
  MR_OP_PONG = 0xA
};

/* Close codes used by the server (RFC 6455 section 7.4.1). */
enum {
  MR_CLOSE_NORMAL = 1000,
  MR_CLOSE_GOING_AWAY = 1001,
  MR_CLOSE_PROTOCOL = 1002,
  MR_CLOSE_NO_STATUS = 1005,
  MR_CLOSE_ABNORMAL = 1006,
  MR_CLOSE_BAD_DATA = 1007,
  MR_CLOSE_POLICY = 1008,
  MR_CLOSE_TOO_BIG = 1009,
  MR_CLOSE_INTERNAL = 1011,
  MR_CLOSE_TRY_AGAIN = 1013
};

/* The longest frame header: two bytes, a 64-bit length and a mask key. */
enum { MR_FRAME_HEADER_MAX = 14 };

/* Size of the header of an unmasked server frame with this payload size. */
size_t mr_frame_header_len(size_t payload_len);

/* Writes an unmasked FIN frame header for opcode and payload_len into out
 * (at least 10 bytes) and returns its length. */
size_t mr_frame_write_header(uint8_t *out, int opcode, size_t payload_len);

/* Client frames. The server never sends these; they are here so that the
 * unit tests and the busted kit build what a client sends with the one
 * encoder that also writes the server's headers, instead of each keeping a
 * copy of the length rules. */

/* Writes a client frame header into out (MR_FRAME_HEADER_MAX bytes) and
 * returns its length. fin is a flag, rsv the three RSV bits, and opcode is
 * kept to its low four bits. mask_key is the 4-byte key, or NULL for an
 * unmasked frame, which a server must refuse: tests need those too. */
size_t mr_frame_write_client_header(uint8_t *out, int fin, int rsv, int opcode,
                                    uint64_t payload_len,
                                    const uint8_t *mask_key);

/* Masks (or unmasks: XOR is its own inverse) n payload bytes from src into
 * dst, which may be src. pos is the offset of src[0] within the payload, so
 * that a payload can be masked in pieces. */
void mr_frame_mask(uint8_t *dst, const uint8_t *src, size_t n,
                   const uint8_t mask_key[4], uint64_t pos);

/* Encodes a complete client frame, header then payload (masked when
 * mask_key is not NULL), into out, which has room for MR_FRAME_HEADER_MAX +
 * len bytes; returns the frame's length. */
size_t mr_frame_encode_client(uint8_t *out, int fin, int rsv, int opcode,
                              const void *payload, size_t len,
                              const uint8_t *mask_key);

/* Encodes one complete unmasked FIN frame into a new block with one
 * reference owned by the caller; NULL when out of memory. */
mr_buf *mr_frame_new(int opcode, const void *payload, size_t len);

/* Encodes a close frame with code and reason (truncated to 123 bytes);
 * code 0 means a close frame without a body. */
mr_buf *mr_frame_new_close(uint16_t code, const char *reason, size_t len);

/* Follows frame boundaries in the client's byte stream, alongside wslay.
 * wslay announces a frame only once some of its payload has arrived, so
 * without this a client could announce a huge message and keep the server
 * waiting for it; this sees each header as soon as it is complete. */
typedef struct {
  uint8_t hdr[MR_FRAME_HEADER_MAX];
  uint8_t hlen;       /* header bytes collected so far */
  uint64_t remaining; /* payload bytes of the current frame still to come */
  uint64_t msg_len;   /* payload so far of the current data message */
  uint8_t in_msg;     /* a data message has started and not finished */
} mr_frame_tracker;

/* True when the tracker is between frames and between messages: wslay then
 * holds no partial input for the connection. */
static inline int mr_frame_tracker_idle(const mr_frame_tracker *t) {
  return t->hlen == 0 && t->remaining == 0 && !t->in_msg;
}

/* Feeds n bytes. Returns 0 when every header in them keeps its message
 * within max_message, or MR_ETOOBIG with *ok set to the number of bytes up
 * to and including the header that goes over. Malformed headers are not
 * judged here; wslay refuses those. */
int mr_frame_track(mr_frame_tracker *t, const uint8_t *p, size_t n,
                   uint64_t max_message, size_t *ok);

/* True for close codes a peer may send (RFC 6455 7.4, and 3000-4999). The
 * script may send the same set, except 1005/1006/1015. */
int mr_close_code_valid(unsigned code);

#endif
