/* What every fuzz target shares: the libFuzzer entry point it defines, the
 * seed table that driver.c starts from and mutates, and an exact-size copy
 * of an input. libFuzzer builds (-DMOONROOM_FUZZ=ON) do not use the seeds. */
#ifndef MR_FUZZ_TARGET_H
#define MR_FUZZ_TARGET_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One seed input: bytes that may contain NULs, and their length. */
typedef struct {
  const char *data;
  size_t len;
} fuzz_seed;

/* A seed from a string literal, without its terminating NUL. */
#define FUZZ_SEED(literal)                                                     \
  { literal, sizeof(literal) - 1 }

/* Defines the target's seed table from FUZZ_SEED entries; driver.c reads it
 * through the declarations below. */
#define FUZZ_SEEDS(...)                                                        \
  const fuzz_seed fuzz_seeds[] = {__VA_ARGS__};                                \
  const size_t fuzz_nseeds = sizeof fuzz_seeds / sizeof fuzz_seeds[0]

extern const fuzz_seed fuzz_seeds[];
extern const size_t fuzz_nseeds;

/* A heap copy of exactly size bytes (the driver's buffer is larger than its
 * inputs), so that a read past the end is an ASan report. NULL when out of
 * memory; the caller frees it. */
static inline uint8_t *fuzz_copy(const uint8_t *data, size_t size) {
  uint8_t *p = malloc(size ? size : 1);
  if (p && size)
    memcpy(p, data, size);
  return p;
}

#endif
