#include "broadcast.h"

#include "cluster.h"
#include "codec.h"
#include "conn.h"
#include "deflate.h"
#include "engine_redis.h"
#include "error.h"
#include "log.h"
#include "trace.h"

int mr_broadcast_local(mr_server *srv, const char *room, size_t room_len,
                       const void *msg, size_t len, int binary,
                       mr_conn *except) {
  mr_room *r = mr_rooms_find(&srv->rooms, room, room_len);
  if (!r)
    return 0;
  int op = binary ? MR_OP_BINARY : MR_OP_TEXT;
  /* Both frames are made lazily, each at most once: the plain one the
   * first time a recipient takes it (a room of browsers that all
   * negotiated compression never does), the compressed ones the first time
   * a recipient that negotiated permessage-deflate is met. With no context
   * takeover one compressed frame serves every such recipient whose window
   * is at least the one it was made with, so there is one per window size
   * in use at most (in practice one). tried[b] says a frame for b was
   * attempted: NULL there means compression did not help or zlib failed,
   * and the plain frame goes instead. */
  mr_buf *frame = NULL;
  size_t plain_len = mr_frame_header_len(len) + len;
  int compressible = len >= srv->cfg.compression_threshold;
  mr_buf *zframe[MR_DEFLATE_MAX_BITS + 1] = {0};
  uint8_t tried[MR_DEFLATE_MAX_BITS + 1] = {0};
  int n = 0, err = 0;
  mr_room_iter it;
  mr_member *m;
  mr_room_iter_init(&it, r);
  while ((m = mr_room_iter_next(&it))) {
    mr_conn *c = mr_conn_of_member(m);
    if (c == except)
      continue;
    unsigned bits = compressible ? c->deflate_bits : 0;
    mr_buf *z = NULL;
    if (bits) {
      unsigned b = MR_DEFLATE_MIN_BITS;
      while (b < bits && !zframe[b])
        b++;
      if (!zframe[b] && !tried[bits]) {
        tried[bits] = 1;
        mr_conn_deflate(srv, op, bits, msg, len, &zframe[bits]);
        b = bits;
      }
      z = zframe[b];
    }
    if (!z && !frame) {
      if (!(frame = mr_frame_new(op, msg, len))) {
        err = MR_ENOMEM; /* those reached so far keep it */
        break;
      }
      frame->trace = mr_trace_frame();
    }
    if ((z ? mr_conn_send_compressed(c, z, plain_len)
           : mr_conn_send_frame(c, frame)) == 0)
      n++;
  }
  for (unsigned b = 0; b <= MR_DEFLATE_MAX_BITS; b++)
    mr_buf_release(zframe[b]);
  if (frame && frame->trace)
    mr_trace_queued(frame->trace, (uint32_t)n);
  mr_buf_release(frame);
  return err ? err : n;
}

int mr_broadcast(mr_server *srv, const char *room, size_t room_len,
                 const void *msg, size_t len, int binary, mr_conn *except) {
  /* Counted here, so `broadcasts` is what this node's scripts sent and
   * `cluster_broadcasts_in` what peers delivered. */
  srv->stats.broadcasts++;
  int n = mr_broadcast_local(srv, room, room_len, msg, len, binary, except);
  if (srv->cluster && n >= 0)
    mr_cluster_forward(srv->cluster, room, room_len, msg, len, binary);
  if (srv->engine && n >= 0)
    mr_engine_forward(srv->engine, room, room_len, msg, len, binary);
  return n;
}

int mr_broadcast_remote(void *ud, const char *room, size_t room_len,
                        const void *msg, size_t len, int binary) {
  mr_server *srv = ud;
  srv->stats.cluster_broadcasts_in++;
  int n = mr_broadcast_local(srv, room, room_len, msg, len, binary, NULL);
  if (n < 0) {
    srv->stats.internal_errors++;
    mr_warn("cluster: a broadcast to room %.*s from a peer was dropped: %s",
            (int)(room_len > 64 ? 64 : room_len), room, mr_strerror(n));
  }
  return n;
}
