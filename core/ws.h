/* The wslay adapter: RFC 6455 parsing, unmasking, UTF-8 checks and control
 * frames for one connection at a time, over a pool of wslay contexts.
 *
 * A context is attached to a connection only while wslay holds state for
 * it (mid-frame, mid-message, control frames queued, closing); an idle
 * connection returns its context to the pool, saving ~8 KiB each. wslay
 * offers no way to change a context's user data, so its callbacks get the
 * pool slot and read the owner from it, which lets an idle context move
 * between connections.
 *
 * This module knows nothing of connections: it reports what the peer sent
 * through mr_ws_events, and its owner (conn.c) decides what that means for
 * the connection's life. Data frames are never sent through wslay: the
 * owner queues frames that codec.c encoded once. */
#ifndef MR_WS_H
#define MR_WS_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/* What a session reports to its owner, while mr_ws_feed runs. */
typedef struct mr_ws_events {
  /* A complete data message; text has been checked for UTF-8. */
  void (*message)(void *owner, const uint8_t *msg, size_t len, int binary);
  /* The peer's close frame: its code (MR_CLOSE_NO_STATUS when it had none)
   * and reason. Not called for a malformed close body (see mr_ws_feed). */
  void (*close)(void *owner, unsigned code, const char *reason, size_t len);
  /* A pong from the peer. */
  void (*pong)(void *owner);
  /* The bytes of a control frame wslay produced (a pong, our close); the
   * header and the payload may come in separate calls. Returns 0, or a
   * negative code to make wslay fail. */
  int (*send)(void *owner, const uint8_t *data, size_t len);
  /* A compressed message of in_len bytes was inflated to out_len; message
   * is called with it next. May be NULL. */
  void (*inflated)(void *owner, size_t in_len, size_t out_len);
} mr_ws_events;

typedef struct mr_ws_pool mr_ws_pool;
struct mr_ws_slot;

/* One connection's WebSocket session state: 16 bytes. Everything that
 * only matters mid-frame (wslay's context, the frame-boundary tracker for
 * the early size checks) is in the attached slot, which an idle session
 * does not hold. */
typedef struct mr_ws {
  struct mr_ws_slot *slot; /* the attached wslay context, or NULL */
  uint8_t flags;           /* internal to ws.c */
} mr_ws;

/* How far the close handshake has come, after wslay last ran. */
typedef enum {
  MR_WS_OPEN,       /* no close frame sent */
  MR_WS_CLOSE_SENT, /* ours is queued; the peer's reply is awaited */
  MR_WS_CLOSE_DONE  /* ours is queued and nothing more will be read */
} mr_ws_close_state;

/* Creates a pool whose sessions report through ev (kept by reference) and
 * refuse messages over max_message bytes. NULL when out of memory. */
mr_ws_pool *mr_ws_pool_new(const mr_ws_events *ev, uint64_t max_message);

/* Frees the pool and its idle contexts; sessions must be dropped first. */
void mr_ws_pool_free(mr_ws_pool *p);

/* Idle contexts held by the pool (for tests and memory accounting). */
unsigned mr_ws_pool_idle(const mr_ws_pool *p);

/* Feeds bytes from the peer; events are reported to owner as they parse.
 * Returns 0; MR_ENOMEM when no context could be attached (or a compressed
 * message could not be inflated); or, for a failure that wslay answers
 * without a status code, MR_ETOOBIG (a header announced more than
 * max_message, or a compressed message inflated to more: the peer is owed
 * 1009), MR_EUTF8 (an inflated text message is not UTF-8: 1007),
 * MR_EDEFLATE (a compressed message is not valid deflate: 1007) or
 * MR_EPROTO (malformed framing or close body: 1002). On those the owner
 * sends the close frame itself; no frame from wslay has been queued. A
 * failure after our own close frame went out is not reported: nothing may
 * follow that frame, and mr_ws_close_state says the session is done. */
int mr_ws_feed(mr_ws_pool *p, mr_ws *ws, void *owner, const uint8_t *data,
               size_t len);

/* Queues a close frame (code, reason of at most 123 bytes). Returns 0 or
 * MR_ENOMEM. */
int mr_ws_queue_close(mr_ws_pool *p, mr_ws *ws, void *owner, uint16_t code,
                      const char *reason, size_t len);

/* Sends the control frames wslay produced and reports how far the close
 * handshake has come; *code_sent is the status of the close frame wslay
 * sent (0 when none), set only when the state is not MR_WS_OPEN. */
mr_ws_close_state mr_ws_pump(mr_ws *ws, unsigned *code_sent);

/* Returns the context to the pool when wslay holds nothing for the session
 * (between messages, nothing queued, no close begun): such a context is in
 * the same state as a fresh one. */
void mr_ws_release_if_idle(mr_ws_pool *p, mr_ws *ws);

/* Frees a context that may hold state (a closing connection's). */
void mr_ws_drop(mr_ws *ws);

/* Marks the session as having negotiated permessage-deflate: frames with
 * RSV1 are accepted from now on and their messages inflated (within the
 * pool's max_message) before they are reported. Without it RSV1 is a
 * protocol error (1002, sent by wslay). */
void mr_ws_enable_deflate(mr_ws *ws);

/* True once mr_ws_enable_deflate was called for the session. */
int mr_ws_deflate_enabled(const mr_ws *ws);

#endif
