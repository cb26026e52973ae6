#include "idtab.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MIN_CAP 16

static uint64_t key_of(const mr_idtab *t, const void *p) {
  uint64_t id;
  memcpy(&id, (const char *)p + t->key_off, sizeof id);
  return id;
}

/* Fibonacci hashing: the top bits of id times 2^64 / phi. cap is a power
 * of two, at least MIN_CAP. */
static size_t home(const mr_idtab *t, uint64_t id) {
  int bits = __builtin_ctzll((unsigned long long)t->cap);
  return (size_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - bits));
}

static void put(mr_idtab *t, void *p) {
  size_t mask = t->cap - 1;
  size_t i = home(t, key_of(t, p));
  while (t->slots[i])
    i = (i + 1) & mask;
  t->slots[i] = p;
}

/* Moves every entry into a new array of ncap slots. Returns 0 or
 * MR_ENOMEM (the table is then unchanged). */
static int resize(mr_idtab *t, size_t ncap) {
  void **n = calloc(ncap, sizeof *n);
  if (!n)
    return MR_ENOMEM;
  void **old = t->slots;
  size_t ocap = t->cap;
  t->slots = n;
  t->cap = ncap;
  for (size_t i = 0; i < ocap; i++)
    if (old[i])
      put(t, old[i]);
  free(old);
  return 0;
}

void mr_idtab_init(mr_idtab *t, size_t key_off) {
  t->slots = NULL;
  t->cap = t->count = 0;
  t->key_off = key_off;
}

void mr_idtab_free(mr_idtab *t) {
  free(t->slots);
  t->slots = NULL;
  t->cap = t->count = 0;
}

int mr_idtab_add(mr_idtab *t, void *p) {
  if ((t->count + 1) * 4 > t->cap * 3 &&
      resize(t, t->cap ? t->cap * 2 : MIN_CAP) != 0)
    return MR_ENOMEM;
  put(t, p);
  t->count++;
  return 0;
}

/* The slot holding id, or cap when it is not there. */
static size_t slot_of(const mr_idtab *t, uint64_t id) {
  if (!t->count)
    return t->cap;
  size_t mask = t->cap - 1;
  for (size_t i = home(t, id); t->slots[i]; i = (i + 1) & mask)
    if (key_of(t, t->slots[i]) == id)
      return i;
  return t->cap;
}

void *mr_idtab_find(const mr_idtab *t, uint64_t id) {
  size_t i = slot_of(t, id);
  return i < t->cap ? t->slots[i] : NULL;
}

void mr_idtab_remove(mr_idtab *t, const void *p) {
  size_t i = slot_of(t, key_of(t, p));
  if (i == t->cap || t->slots[i] != p)
    return;
  /* Backward shift: every later entry of the run whose home is not
   * cyclically between the hole and itself moves into the hole, so that
   * lookups never meet a gap before their entry. */
  size_t mask = t->cap - 1;
  size_t hole = i;
  t->slots[hole] = NULL;
  for (size_t j = (hole + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
    size_t h = home(t, key_of(t, t->slots[j]));
    int stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
    if (!stays) {
      t->slots[hole] = t->slots[j];
      t->slots[j] = NULL;
      hole = j;
    }
  }
  t->count--;
  /* An array left an eighth full halves (not below the minimum), so a
   * server that held many connections once does not keep their slots. */
  if (t->cap > MIN_CAP && t->count * 8 < t->cap)
    resize(t, t->cap / 2); /* out of memory: stays as it is */
}

void *mr_idtab_next(const mr_idtab *t, size_t *pos) {
  while (*pos < t->cap) {
    void *p = t->slots[(*pos)++];
    if (p)
      return p;
  }
  return NULL;
}
