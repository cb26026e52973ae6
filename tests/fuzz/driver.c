/* A stand-in for libFuzzer's main, so every fuzz target also runs in ctest
 * on any compiler: it feeds the target seeds, random bytes and random
 * mutations of the seeds, from a fixed PRNG seed, for a bounded number of
 * inputs. With clang, -DMOONROOM_FUZZ=ON builds the same targets against
 * libFuzzer for open-ended, coverage-guided runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each target provides seed inputs, valid messages to mutate (fuzz_seeds). */
#include "fuzz_target.h"

static uint64_t state = 0x9E3779B97F4A7C15ull;

static uint64_t next_random(void) {
  /* xorshift64*: good enough to spread inputs, and repeatable. */
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  return state * 2685821657736338717ull;
}

int main(int argc, char **argv) {
  long runs = argc > 1 ? atol(argv[1]) : 200000;
  uint8_t *buf = malloc(70000);
  if (!buf)
    return 1;
  for (size_t i = 0; i < fuzz_nseeds; i++)
    LLVMFuzzerTestOneInput((const uint8_t *)fuzz_seeds[i].data,
                           fuzz_seeds[i].len);
  for (long r = 0; r < runs; r++) {
    size_t n;
    uint64_t kind = next_random() % 4;
    if (kind == 0 || fuzz_nseeds == 0) {
      n = next_random() % 512;
      for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)next_random();
    } else {
      /* A seed with a few bytes flipped, inserted, cut or truncated. */
      size_t s = next_random() % fuzz_nseeds;
      n = fuzz_seeds[s].len;
      memcpy(buf, fuzz_seeds[s].data, n);
      int edits = 1 + (int)(next_random() % 4);
      for (int e = 0; e < edits && n > 0; e++) {
        size_t at = next_random() % n;
        switch (next_random() % 4) {
        case 0:
          buf[at] = (uint8_t)next_random();
          break;
        case 1:
          buf[at] ^= (uint8_t)(1u << (next_random() % 8));
          break;
        case 2:
          n = at; /* truncate */
          break;
        default:
          if (n < 69000) {
            memmove(buf + at + 1, buf + at, n - at);
            buf[at] = (uint8_t)next_random();
            n++;
          }
        }
      }
    }
    LLVMFuzzerTestOneInput(buf, n);
  }
  free(buf);
  printf("%ld passed, 0 failed\n", runs + (long)fuzz_nseeds);
  return 0;
}
