/* Fuzz target: the Redis engine's envelope decoder (redis_proto.c), which
 * reads whatever anything that can PUBLISH to the fleet's Redis puts on a
 * room's or the presence channel. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fuzz_target.h"
#include "redis_proto.h"
#include "wire.h"

/* A ROOM envelope from node "a" (a text room frame), and a HEARTBEAT. */
FUZZ_SEEDS(FUZZ_SEED("M\x01\x01\x01"
                     "a\x00\x00\x00\x00\x00\x00\x00\x01"
                     "\x00\x00\x00\x10\x1e\x00\x04room\x00\x00\x00\x05hello"),
           FUZZ_SEED("M\x01\x03\x01"
                     "b\x00\x00\x00\x00\x00\x00\x00\x02"));

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *buf = fuzz_copy(data, size);
  if (!buf)
    return 0;
  mr_redis_msg m;
  int r = mr_redis_decode(buf, size, 1 << 16, &m);
  if (r == 0) {
    /* What the decoder hands out lies inside the input. */
    if (m.origin_len == 0 || (const uint8_t *)m.origin < buf ||
        (const uint8_t *)m.origin + m.origin_len > buf + size || m.body < buf ||
        m.body + m.body_len != buf + size)
      abort();
    if (m.kind == MR_REDIS_ROOM &&
        (m.room.tag != MR_WIRE_ROOM_TEXT && m.room.tag != MR_WIRE_ROOM_BINARY))
      abort();
    if (m.kind == MR_REDIS_STATE) {
      const uint8_t *pos = m.body;
      size_t left = m.body_len;
      mr_wire_msg f;
      while ((r = mr_redis_state_next(&pos, &left, &f)) == 1)
        if ((f.tag != MR_WIRE_COUNTS && f.tag != MR_WIRE_PRESENCE) ||
            pos + left != m.body + m.body_len)
          abort();
      if (r != 0 && r != MR_EPROTO && r != MR_EUTF8)
        abort();
    }
  } else if (r != MR_EPROTO && r != MR_EUTF8 && r != MR_ETOOBIG) {
    abort();
  }
  free(buf);
  return 0;
}
