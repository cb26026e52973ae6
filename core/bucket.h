/* A token bucket for per-connection message rates (pure, integer only).
 *
 * A bucket holds up to `burst` tokens and gains `rate` tokens a second; a
 * message takes one. Tokens are counted in thousandths, so that `rate`
 * tokens a second is exactly `rate` thousandths a millisecond: refilling is
 * one multiplication, with no rounding that could drift over a long-lived
 * connection. The state is two 32-bit words kept apart, so that a
 * connection can hold them in padding it already has (see mr_conn). */
#ifndef MR_BUCKET_H
#define MR_BUCKET_H

#include <stdint.h>

/* The largest rate and burst a bucket takes: burst * 1000 thousandths must
 * fit in 32 bits. */
#define MR_BUCKET_MAX_RATE 1000000u
#define MR_BUCKET_MAX_BURST 4000000u

/* Takes one token at now_ms (a millisecond clock) from the bucket whose
 * state is *deficit (thousandths of a token missing from a full bucket; 0,
 * the zeroed state, is full) and *stamp (the low 32 bits of the time it
 * was last refilled). Returns 1 when a token was taken, 0 when the bucket
 * had less than one (the state is still refilled to now_ms). rate and
 * burst are at least 1 and at most MR_BUCKET_MAX_*.
 *
 * The stamp wraps after 49.7 days: a connection that sends nothing for
 * that long may find its bucket less than full, never fuller. */
int mr_bucket_take(uint32_t *deficit, uint32_t *stamp, uint64_t now_ms,
                   uint32_t rate, uint32_t burst);

#endif
