/* One client connection: its state machine, read path, out-queue, timers
 * and close. A connection is freed only in its libuv close callback, after
 * it has left every room and Lua has seen on_close; Lua refers to it by id
 * only, so a stale handle can never reach freed memory. */
#ifndef MR_CONN_H
#define MR_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "context.h"
#include "http.h"
#include "httpconn.h"
#include "rooms.h"
#include "transport.h"
#include "ws.h"

typedef enum {
  MR_CONN_HANDSHAKE, /* reading the HTTP upgrade request */
  MR_CONN_OPEN,      /* WebSocket frames flow both ways */
  MR_CONN_CLOSING,   /* close frame sent, waiting for the peer's or a flush */
  MR_CONN_CLOSED,    /* on_close done, socket closing, memory freed soon */
  MR_CONN_HTTP       /* plain HTTP requests answered by on_http */
} mr_conn_state;

enum {
  MR_CLOSING_NONE = 0,
  MR_CLOSING_AWAIT_PEER = 1, /* our close frame is out; wait for the reply */
  MR_CLOSING_AFTER_FLUSH = 2 /* close the socket once the queue is written */
};

enum {
  MR_CF_HOLD = 1 << 8,     /* on_connect runs: nothing may be written yet */
  MR_CF_PENDING = 1 << 0,  /* on srv->pending */
  MR_CF_DOOMED = 1 << 2,   /* on srv->doomed */
  MR_CF_VIRTUAL = 1 << 3,  /* no socket (busted kit) */
  MR_CF_LUA = 1 << 4,      /* Lua holds a handle: on_close is owed */
  MR_CF_PINGED = 1 << 5,   /* a server ping awaits its pong */
  MR_CF_IP_OVER = 1 << 6,  /* over --max-connections-per-ip at accept */
  MR_CF_TCP_CLOSE = 1 << 7 /* uv_close was called */
};

typedef struct mr_conn {
  uv_tcp_t tcp;
  mr_server *srv;
  uint64_t id; /* the key of srv->conns */
  /* An intrusive list with a back-pointer, so removal is O(1) wherever the
   * connection sits when it is torn down: srv->pending or srv->doomed,
   * whichever MR_CF_PENDING or MR_CF_DOOMED names (never both: conn.c). */
  struct mr_conn *list_next, **list_pprev;
  uint8_t state;
  uint8_t closing_how; /* MR_CLOSING_* */
  uint16_t flags;
  /* The window (9..15) messages to this client are deflated with, once
   * permessage-deflate was negotiated; 0 when it was not. */
  uint8_t deflate_bits;
  uint16_t close_code; /* what on_close will be told */
  /* --max-messages-per-second's token bucket (bucket.h). */
  uint32_t rate_deficit, rate_stamp;
  mr_ws ws; /* the WebSocket session (a wslay context only while busy) */
  mr_tx tx; /* what waits to be written */
  uint64_t last_rx;   /* loop time (ms) of the last frame from the peer */
  uint64_t deadline;  /* handshake or closing deadline, loop time ms; 0 none */
  uint64_t next_ping; /* loop time of the next server ping */
  mr_member member;
  /* What only some connections need, some of the time (NULL when none of
   * it is in use): an open WebSocket in the common case holds none. */
  struct mr_conn_extra *x;
} mr_conn;

/* The rarely used part of a connection, made when first needed and freed
 * once nothing in it is (after the upgrade, typically), so that an idle
 * connection does not carry five pointers it does not use. */
typedef struct mr_conn_extra {
  /* Handshake: the request head accumulates here and is freed on
   * upgrade. */
  char *head;
  uint32_t head_len;
  uint8_t close_reason_len;
  char *close_reason;   /* heap, only once a reason is known */
  char *virtual_remote; /* a virtual connection's claimed address (heap) */
  mr_httpx *http;       /* plain HTTP requests (heap), in MR_CONN_HTTP only */
  /* The connection's slot in srv->ip_counts, released in terminate; NULL
   * when it holds none. */
  struct mr_ipcount *ip;
} mr_conn_extra;

/* How on_connect answers an upgrade, besides accepting or refusing it. The
 * connection provides the storage for the call, filled with the defaults
 * (403, no body, no protocol, no headers); the connect event writes it. */
typedef struct mr_conn_answer {
  int status;           /* a refusal's status, 400..599 */
  char body[512];       /* a refusal's body; "" for the status's default */
  const char *protocol; /* the subprotocol selected from those offered,
                           pointing into the request; NULL for none */
  size_t protocol_len;
  /* Extra header lines, "Name: value\r\n" each (checked with
   * mr_http_check_header), for the 101 or for the refusal; "" for none. */
  char headers[MR_HTTP_MAX_EXTRA];
} mr_conn_answer;

/* What a connection reports upward, each with the server it belongs to.
 * The server points srv->conn_events at these (wired to the bridge). */
typedef struct mr_conn_events {
  /* The upgrade request is valid: returns 1 to accept, or 0 to refuse; ans
   * says with what (see mr_conn_answer). */
  int (*connect)(mr_server *srv, mr_conn *c, const mr_http_request *req,
                 mr_conn_answer *ans);
  /* A data message; returns 0, or nonzero when the handler failed (the
   * connection is then closed 1011). */
  int (*message)(mr_server *srv, mr_conn *c, const uint8_t *msg, size_t len,
                 int binary);
  /* An accepted connection ended, with the code and reason it ended on. */
  void (*close)(mr_server *srv, mr_conn *c, unsigned code, const char *reason,
                size_t len);
  /* A connection that connect saw was refused after all: forget it. */
  void (*refused)(mr_server *srv, mr_conn *c);
  /* Whether plain HTTP requests are answered (the script has on_http);
   * without it they get 404 as before. */
  int (*http_enabled)(mr_server *srv);
  /* A whole plain HTTP request (req, and body_len bytes of body, both
   * borrowed for the call): fills ans and returns 0, or returns nonzero
   * when the handler failed (the answer is then 500). */
  int (*http)(mr_server *srv, mr_conn *c, const mr_http_request *req,
              const char *body, size_t body_len, mr_http_answer *ans);
} mr_conn_events;

/* The connection a room member is (members are embedded in connections). */
static inline mr_conn *mr_conn_of_member(mr_member *m) {
  return (mr_conn *)((char *)m - offsetof(mr_conn, member));
}

/* Finds a connection by id; NULL once it has closed. */
mr_conn *mr_conn_find(mr_server *srv, uint64_t id);

/* Every connection the server holds, closed ones included until they are
 * freed, in no particular order: start with *pos = 0; NULL at the end. No
 * connection may be created or freed meanwhile (sockets are freed in
 * libuv's close callbacks, which never run inside a walk). */
static inline mr_conn *mr_conn_next(const mr_server *srv, size_t *pos) {
  return mr_idtab_next(&srv->conns, pos);
}

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

/* The window bits to deflate a message of len bytes to c with: c's when c
 * negotiated permessage-deflate and len is at least
 * --compression-threshold; 0 when it goes plain. */
unsigned mr_conn_deflate_bits(const mr_conn *c, size_t len);

/* Deflates msg into a frame with RSV1 for recipients whose window is at
 * least bits (the server's stream pool, made at the first call). Returns 0
 * with *frame (one reference for the caller), or NULL when compression
 * would not make it smaller; MR_ENOMEM. Counted in messages_deflated. */
int mr_conn_deflate(mr_server *srv, int opcode, unsigned bits, const void *msg,
                    size_t len, mr_buf **frame);

/* mr_conn_send_frame for a compressed frame (from mr_conn_deflate); counts
 * it and what it saved against the plain frame's plain_len bytes. */
int mr_conn_send_compressed(mr_conn *c, mr_buf *frame, size_t plain_len);

/* Starts the close handshake with code and reason (the connection stays
 * until the peer answers or a short deadline passes). Returns 0 or
 * MR_ECLOSED. */
int mr_conn_close(mr_conn *c, uint16_t code, const char *reason, size_t len);

/* Schedules an abrupt close at the next safe point (outside any fan-out
 * or Lua call): on_close is told code and reason. */
void mr_conn_doom(mr_conn *c, uint16_t code, const char *reason);

/* Performs a doomed close now. Only the server's safe point calls this. */
void mr_conn_finish(mr_conn *c);

/* Writes what is queued; called from the flush point. */
void mr_conn_flush(mr_conn *c);

/* The sweep's checks (every 250 ms): handshake, idle and closing
 * deadlines, pings. */
void mr_conn_sweep(mr_conn *c, uint64_t now);

/* The peer's IP address as text, for logs and req.remote_addr; the string
 * is static and overwritten by the next call. */
const char *mr_conn_remote(const mr_conn *c);

/* The reason on_close will be told (its length in *len); "" when none. */
static inline const char *mr_conn_close_reason(const mr_conn *c, size_t *len) {
  *len = c->x && c->x->close_reason ? c->x->close_reason_len : 0;
  return *len ? c->x->close_reason : "";
}

/* True when the connection accepts new messages: open, and not doomed to
 * close at the next safe point. The one test of "open" everywhere. */
static inline int mr_conn_is_open(const mr_conn *c) {
  return c->state == MR_CONN_OPEN && !(c->flags & MR_CF_DOOMED);
}

#endif
