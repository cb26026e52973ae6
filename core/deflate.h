/* permessage-deflate's data path on zlib: one message inflated with a bound
 * on its size, one message deflated into a frame with RSV1. pmd.c
 * negotiates; this module compresses.
 *
 * With no context takeover in either direction (what pmd.c always agrees
 * to), every message starts from a fresh zlib state, so a stream is needed
 * only while one message is inflated or deflated. Streams (tens to hundreds
 * of KiB each) live in a small pool and are reset and handed back at once:
 * no connection ever holds one, idle or not. The server runs one message
 * at a time, so the pool keeps one idle stream per kind (inflate, and
 * deflate per window size) and frees the rest. */
#ifndef MR_DEFLATE_H
#define MR_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* The deflate windows zlib can make for raw deflate (2^9..2^15 bytes). */
enum { MR_DEFLATE_MIN_BITS = 9, MR_DEFLATE_MAX_BITS = 15 };

typedef struct mr_zpool mr_zpool;

/* Creates a pool whose deflate streams compress at level (1..9). NULL when
 * out of memory. */
mr_zpool *mr_zpool_new(int level);

/* Frees the pool and its idle streams (none may be in use). NULL is fine. */
void mr_zpool_free(mr_zpool *p);

/* Streams the pool holds idle now (for tests and memory accounting). */
unsigned mr_zpool_idle(const mr_zpool *p);

/* Inflates one compressed message (its frames' payloads joined, without
 * the 00 00 ff ff tail that RFC 7692 7.2.2 strips and this puts back).
 * Inflation stops as soon as the output would pass max bytes: a bomb costs
 * at most max bytes of memory, never what it announces.
 *
 * Returns 0 and gives the caller *out (malloc'd, the caller frees it; NULL
 * for an empty message) and *out_len; MR_ETOOBIG when the message inflates
 * to more than max; MR_EDEFLATE when the data is not valid deflate (or has
 * bytes after a final block); MR_ENOMEM. */
int mr_inflate_message(mr_zpool *p, const uint8_t *in, size_t len, size_t max,
                       uint8_t **out, size_t *out_len);

/* Deflates msg (len bytes) as one message with a window of bits (9..15),
 * and encodes it as an unmasked FIN frame of opcode with RSV1 set.
 *
 * Returns 0 and gives the caller *frame (one reference), or sets *frame to
 * NULL when compressing would not make the frame smaller (send the plain
 * one instead); MR_ENOMEM. */
int mr_deflate_frame(mr_zpool *p, int opcode, unsigned bits, const void *msg,
                     size_t len, mr_buf **frame);

#endif
