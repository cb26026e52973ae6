/* Timer deadlines: a binary min-heap of (due, insertion order) with ids.
 *
 * This module only keeps deadlines in order: it never reads a clock, never
 * calls Lua and knows nothing about the loop. The server arms one libuv
 * timer for the earliest deadline (mr_timers_peek) and, when it fires, pops
 * what is due; the Lua side keeps what to run for each id. Adding,
 * cancelling and popping are O(log n), finding a timer by id is O(1) (an
 * open-addressing index from id to heap slot), so 100,000 pending timers
 * cost nothing per loop turn.
 *
 * Timers due at the same time come out in the order they were inserted.
 * Ids start at 1 and are never reused, so a stale id can never cancel a
 * newer timer. Memory grows with the number of pending timers and is kept
 * at its peak until mr_timers_free. */
#ifndef MR_TIMER_H
#define MR_TIMER_H

#include <stddef.h>
#include <stdint.h>

/* One pending deadline in the heap. */
typedef struct {
  uint64_t due;  /* when it is due, in the caller's clock (ms) */
  uint64_t seq;  /* insertion order: the tie-break between equal dues */
  uint32_t node; /* its slot in nodes[] */
} mr_timer_entry;

/* Where a pending id sits in the heap. A free node links to the next free
 * one through pos (UINT32_MAX ends the list). */
typedef struct {
  uint64_t id;
  uint32_t pos;
} mr_timer_node;

typedef struct {
  uint64_t id;   /* 0: empty */
  uint32_t node; /* its slot in nodes[] */
} mr_timer_slot;

typedef struct mr_timers {
  mr_timer_entry *heap; /* heap[0] is the earliest */
  uint32_t count, heap_cap;
  mr_timer_node *nodes;
  uint32_t nodes_cap, free_node; /* UINT32_MAX: none free */
  mr_timer_slot *index;          /* id -> node, linear probing */
  uint32_t index_cap;            /* a power of two, or 0 */
  uint64_t next_id, next_seq;
} mr_timers;

/* Prepares an empty set; nothing is allocated until the first add. */
void mr_timers_init(mr_timers *t);

/* Frees every allocation; the set is empty afterwards and may be used
 * again (ids keep counting up). */
void mr_timers_free(mr_timers *t);

/* Schedules a new deadline and stores its id (never 0) in *id. Returns 0,
 * or MR_ENOMEM (nothing changed). */
int mr_timers_add(mr_timers *t, uint64_t due, uint64_t *id);

/* Schedules id again, with a fresh place in the insertion order: what a
 * repeating timer does after it was popped. Returns 0, MR_EINVAL when id is
 * pending or was never given out by mr_timers_add, or MR_ENOMEM. */
int mr_timers_readd(mr_timers *t, uint64_t id, uint64_t due);

/* Removes id. Returns 1 when it was pending, 0 when it was not (already
 * popped or cancelled, or unknown): cancelling twice is harmless. */
int mr_timers_cancel(mr_timers *t, uint64_t id);

/* 1 when id is pending. */
int mr_timers_pending(const mr_timers *t, uint64_t id);

/* The earliest deadline: returns 1 and stores it in *due, or 0 when no
 * timer is pending. */
int mr_timers_peek(const mr_timers *t, uint64_t *due);

/* The insertion mark: every timer added (or re-added) from now on is at or
 * after it. A run passes it to mr_timers_pop so that what its callbacks
 * schedule waits for the next run. */
static inline uint64_t mr_timers_mark(const mr_timers *t) {
  return t->next_seq;
}

/* Pops the earliest timer if it is due (due <= now) and was inserted before
 * mark; returns 1 and stores its id and due, or 0. Since a caller never
 * schedules a deadline earlier than its clock, stopping at the first timer
 * inserted after mark leaves no older due timer behind it. */
int mr_timers_pop(mr_timers *t, uint64_t now, uint64_t mark, uint64_t *id,
                  uint64_t *due);

static inline size_t mr_timers_count(const mr_timers *t) { return t->count; }

#endif
