/* One client connection: its state machine, read path, out-queue, timers
 * and close. A connection is freed only in its libuv close callback, after
 * it has left every room and Lua has seen on_close; Lua refers to it by id
 * only, so a stale handle can never reach freed memory. */
#ifndef MR_CONN_H
#define MR_CONN_H

#include <stdint.h>
#include <uthash.h>
#include <uv.h>
#include <wslay/wslay.h>

#include "buf.h"
#include "codec.h"
#include "rooms.h"
#include "server.h"

typedef enum {
  MR_CONN_HANDSHAKE, /* reading the HTTP upgrade request */
  MR_CONN_OPEN,      /* WebSocket frames flow both ways */
  MR_CONN_CLOSING,   /* close frame sent, waiting for the peer's or a flush */
  MR_CONN_CLOSED     /* on_close done, socket closing, memory freed soon */
} mr_conn_state;

enum {
  MR_CLOSING_NONE = 0,
  MR_CLOSING_AWAIT_PEER = 1, /* our close frame is out; wait for the reply */
  MR_CLOSING_AFTER_FLUSH = 2 /* close the socket once the queue is written */
};

enum {
  MR_CF_HOLD = 1 << 8,      /* on_connect runs: nothing may be written yet */
  MR_CF_BAD_CLOSE = 1 << 9, /* the peer's close frame had a 1-byte body */
  MR_CF_TOO_BIG = 1 << 10,  /* a frame header announced too much */
  MR_CF_PENDING = 1 << 0,   /* on srv->pending */
  MR_CF_WRITING = 1 << 1,   /* a uv_write is in flight */
  MR_CF_DOOMED = 1 << 2,    /* on srv->doomed */
  MR_CF_VIRTUAL = 1 << 3,   /* no socket (busted kit) */
  MR_CF_LUA = 1 << 4,       /* Lua holds a handle: on_close is owed */
  MR_CF_PINGED = 1 << 5,    /* a server ping awaits its pong */
  MR_CF_TCP_CLOSE = 1 << 7  /* uv_close was called */
};

typedef struct mr_conn {
  uv_tcp_t tcp;
  mr_server *srv;
  uint64_t id;
  UT_hash_handle hh;
  struct mr_conn *prev, *next; /* srv->all_head */
  /* Intrusive lists with back-pointers so removal is O(1) wherever the
   * connection sits when it is torn down. */
  struct mr_conn *pending_next, **pending_pprev;
  struct mr_conn *doomed_next, **doomed_pprev;
  uint8_t state;
  uint8_t closing_how; /* MR_CLOSING_* */
  uint16_t flags;
  /* Handshake: the request head accumulates here and is freed on upgrade. */
  char *head;
  uint32_t head_len;
  /* A wslay context is attached only while wslay holds state for this
   * connection (mid-frame, mid-message, control frames queued, closing);
   * idle connections return theirs to a pool, saving ~8 KiB each. */
  struct mr_ws_slot *ws;
  mr_outq outq;
  mr_frame_tracker track;
  uv_write_t *wreq;    /* allocated only while a write waits for the socket */
  size_t writing;      /* bytes handed to the in-flight uv_write */
  uint64_t last_rx;    /* loop time (ms) of the last frame from the peer */
  uint64_t deadline;   /* handshake or closing deadline, loop time ms; 0 none */
  uint16_t close_code; /* what on_close will be told */
  uint8_t close_reason_len;
  char *close_reason; /* heap, only once a reason is known */
  uint64_t next_ping; /* loop time of the next server ping */
  mr_member member;
  char *virtual_remote; /* a virtual connection's claimed address (heap) */
} mr_conn;

/* Accepts a new connection from the listener; on failure the socket is
 * closed and counted. */
void mr_conn_accept(mr_server *srv);

/* Feeds bytes to a virtual connection as if they came from its socket: the
 * HTTP upgrade request first, then masked client frames. The busted kit
 * drives the real handshake and frame path this way. */
void mr_conn_feed(mr_conn *c, const uint8_t *data, size_t len);

/* Creates a virtual connection in the handshake state (no socket). Returns
 * NULL when out of memory. Its output stays in c->outq for the caller to
 * read; it is freed when it closes. */
mr_conn *mr_conn_new_virtual(mr_server *srv);

/* Sets the address a virtual connection reports (copied). Returns 0 or
 * MR_ENOMEM. */
int mr_conn_set_virtual_remote(mr_conn *c, const char *addr);

/* Tells a virtual connection that its caller has taken everything queued
 * (the kit's stand-in for a completed socket write): a connection that was
 * waiting to flush before closing is closed at the next safe point. */
void mr_conn_virtual_drained(mr_conn *c);

/* Queues a data message (one frame, encoded here). Returns 0, MR_ECLOSED when
 * the connection is not open, MR_ENOMEM. */
int mr_conn_send(mr_conn *c, const void *msg, size_t len, int binary);

/* Queues an already-encoded frame shared with other connections; takes its
 * own reference. Returns 0 or MR_ECLOSED; a connection that goes over its
 * backpressure limit is doomed, not closed here. */
int mr_conn_send_frame(mr_conn *c, mr_buf *frame);

/* Starts the close handshake with code and reason (the connection stays
 * until the peer answers or a short deadline passes). Returns 0 or
 * MR_ECLOSED. */
int mr_conn_close(mr_conn *c, uint16_t code, const char *reason, size_t len);

/* Schedules an abrupt close at the next safe point (outside any fan-out
 * or Lua call): on_close is told code and reason. */
void mr_conn_doom(mr_conn *c, uint16_t code, const char *reason);

/* Performs a doomed close now. Only the server's safe point calls this. */
void mr_conn_finish(mr_conn *c);

/* Frees the pool of idle wslay contexts (at server teardown). */
void mr_conn_pool_free(mr_server *srv);

/* Writes what is queued; called from the flush point. */
void mr_conn_flush(mr_conn *c);

/* Once-a-second checks: handshake, idle and closing deadlines, pings. */
void mr_conn_sweep(mr_conn *c, uint64_t now);

/* The peer's IP address as text, for logs and req.remote_addr; the string
 * is static and overwritten by the next call. */
const char *mr_conn_remote(const mr_conn *c);

/* True when the connection accepts new messages. */
static inline int mr_conn_is_open(const mr_conn *c) {
  return c->state == MR_CONN_OPEN;
}

#endif
