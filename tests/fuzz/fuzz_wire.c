/* Fuzz target: the cluster wire decoder over a byte stream. */
#include <stdint.h>
#include <stdlib.h>

#include "error.h"
#include "fuzz_target.h"
#include "wire.h"

/* A room message, a PEERS, an INTEREST and a PING frame, each complete. */
FUZZ_SEEDS(FUZZ_SEED("\x00\x00\x00\x10\x1e\x00\x04room\x00\x00\x00\x05hello"),
           FUZZ_SEED("\x00\x00\x00\x17\x10\x00\x01\x00\x02n1\x00\x0e"
                     "127.0.0.1:7001"),
           FUZZ_SEED("\x00\x00\x00\x08\x11\x01\x00\x04room"),
           FUZZ_SEED("\x00\x00\x00\x09\x13\x00\x00\x00\x00\x00\x00\x00\x01"));

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *buf = fuzz_copy(data, size);
  if (!buf)
    return 0;
  size_t off = 0;
  for (;;) {
    const uint8_t *payload;
    size_t plen, used;
    int r = mr_wire_next_frame(buf + off, size - off, 1 << 16, &payload, &plen,
                               &used);
    if (r != 0)
      break;
    if (used > size - off || plen + 4 != used)
      abort();
    mr_wire_msg m;
    r = mr_wire_decode(payload, plen, &m);
    if (r == 0 && (m.tag == MR_WIRE_PEERS || m.tag == MR_WIRE_INTEREST_ALL)) {
      mr_wire_iter it;
      mr_wire_iter_init(&it, &m);
      mr_wire_peer p;
      const char *room;
      size_t rlen;
      if (m.tag == MR_WIRE_PEERS)
        while (mr_wire_peers_next(&it, &p) == 1)
          ;
      else
        while (mr_wire_rooms_next(&it, &room, &rlen) == 1)
          ;
    } else if (r == 0 && m.tag == MR_WIRE_COUNTS) {
      mr_wire_iter it;
      mr_wire_iter_init(&it, &m);
      const char *room;
      size_t rlen;
      uint32_t members;
      uint32_t n = 0;
      while (mr_wire_counts_next(&it, &room, &rlen, &members) == 1)
        n++;
      if (n != m.state.list.count)
        abort();
    } else if (r == 0 && m.tag == MR_WIRE_PRESENCE) {
      /* The decoder vouches for every entry: the iterator yields them
       * all, and a join's meta is a well-formed map. */
      mr_wire_iter it;
      mr_wire_iter_init(&it, &m);
      mr_wire_presence_entry e;
      uint32_t n = 0;
      while (mr_wire_presence_next(&it, &e) == 1) {
        n++;
        if (e.join ? mr_wire_meta_check(e.meta, e.meta_len) != 0
                   : e.meta_len != 0)
          abort();
      }
      if (n != m.state.list.count)
        abort();
    } else if (r != 0 && r != MR_ENOTFOUND && !m.error) {
      abort(); /* every refusal names its reason for the log */
    }
    off += used;
  }
  free(buf);
  return 0;
}
