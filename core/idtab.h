/* An id index: objects that carry their own 64-bit id, found by it in O(1).
 *
 * Open addressing with linear probing over a power-of-two array of bare
 * pointers, at most 3/4 full: about 14 bytes an entry on average, where a
 * uthash handle in every object costs 56 plus its buckets. The id is read
 * from the object (at key_off), so the table stores nothing else. Ids are
 * spread by Fibonacci hashing: a server's ids are consecutive, and with
 * slot = id & mask the long-lived low ids would sit where newer ids wrap to,
 * making one long probe run. Removal shifts the run back (no tombstones),
 * and the array halves when it is an eighth full. Pure. */
#ifndef MR_IDTAB_H
#define MR_IDTAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  void **slots; /* cap pointers, NULL for a free slot; NULL when cap is 0 */
  size_t cap, count;
  size_t key_off; /* where each object keeps its uint64_t id */
} mr_idtab;

/* An empty table of objects whose id is the uint64_t at key_off. */
void mr_idtab_init(mr_idtab *t, size_t key_off);

/* Frees the array (not the objects); the table is then empty. */
void mr_idtab_free(mr_idtab *t);

/* Adds p, whose id must not be in the table. Returns 0 or MR_ENOMEM. */
int mr_idtab_add(mr_idtab *t, void *p);

/* The object with this id, or NULL. */
void *mr_idtab_find(const mr_idtab *t, uint64_t id);

/* Removes p (found by its id); nothing when it is not in the table. */
void mr_idtab_remove(mr_idtab *t, const void *p);

/* Every object, in no particular order: start with *pos = 0; returns NULL
 * at the end. Nothing may be added or removed while iterating. */
void *mr_idtab_next(const mr_idtab *t, size_t *pos);

#endif
