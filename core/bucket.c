#include "bucket.h"

int mr_bucket_take(uint32_t *deficit, uint32_t *stamp, uint64_t now_ms,
                   uint32_t rate, uint32_t burst) {
  uint32_t now = (uint32_t)now_ms;
  /* Unsigned subtraction is right across the 32-bit wrap of the clock. */
  uint64_t refill = (uint64_t)(uint32_t)(now - *stamp) * rate;
  *stamp = now;
  *deficit = refill >= *deficit ? 0 : *deficit - (uint32_t)refill;
  if ((uint64_t)*deficit + 1000 > (uint64_t)burst * 1000)
    return 0;
  *deficit += 1000;
  return 1;
}
