#include "ws.h"

#include <stdlib.h>
#include <string.h>
#include <wslay/wslay.h>

#include "deflate.h"
#include "error.h"
#include "utf8.h"

/* Idle wslay contexts kept for reuse; more are freed. */
#define POOL_MAX 256

enum {
  WS_TOO_BIG = 1 << 0,     /* a frame header announced too much, or a
                              compressed message inflated to too much */
  WS_BAD_CLOSE = 1 << 1,   /* the peer's close frame had a 1-byte body */
  WS_DEFLATE = 1 << 2,     /* permessage-deflate was negotiated: RSV1 ok */
  WS_BAD_UTF8 = 1 << 3,    /* an inflated text message is not UTF-8 */
  WS_BAD_DEFLATE = 1 << 4, /* a compressed message is not valid deflate */
  WS_NO_MEMORY = 1 << 5,   /* a compressed message could not be inflated */
  WS_FAILED = WS_BAD_UTF8 | WS_BAD_DEFLATE | WS_NO_MEMORY
};

typedef struct mr_ws_slot {
  wslay_event_context_ptr ctx;
  /* Frame boundaries, for early size checks. A slot goes back to the pool
   * only between messages, when the tracker is as a fresh one is, so it
   * can serve the next session as it is. */
  mr_frame_tracker track;
  mr_ws_pool *pool;
  mr_ws *ws;   /* the session it serves now */
  void *owner; /* what the session reports to */
  struct mr_ws_slot *next;
} mr_ws_slot;

struct mr_ws_pool {
  const mr_ws_events *ev;
  uint64_t max_message;
  mr_ws_slot *idle;
  unsigned nidle;
  /* The chunk being fed right now. One session is fed at a time (a handler
   * cannot make another read), so it lives here, not in every session. */
  const uint8_t *feed;
  size_t feed_len;
  /* The inflate stream, taken only while a message is inflated; made at
   * the first compressed message. */
  mr_zpool *zpool;
};

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *ud) {
  (void)flags;
  mr_ws_slot *slot = ud;
  mr_ws_pool *p = slot->pool;
  mr_ws *ws = slot->ws;
  if (ws->flags & WS_TOO_BIG) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  if (p->feed_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < p->feed_len ? len : p->feed_len;
  size_t ok;
  if (mr_frame_track(&slot->track, p->feed, n, p->max_message, &ok) != 0) {
    /* wslay still gets the messages before the oversized header; the next
     * call reports the failure, and the owner answers 1009 at once. */
    ws->flags |= WS_TOO_BIG;
    p->feed_len = n = ok;
    if (n == 0) {
      wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
      return -1;
    }
  }
  memcpy(buf, p->feed, n);
  p->feed += n;
  p->feed_len -= n;
  return (ssize_t)n;
}

/* wslay only ever sends control frames here (pong, close); data frames are
 * encoded once by codec.c and queued by the owner directly. */
static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *ud) {
  (void)flags;
  mr_ws_slot *slot = ud;
  if (slot->pool->ev->send(slot->owner, data, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

/* Hands the control frames wslay has queued so far (the pong to a ping
 * that arrived earlier in this read) to the owner's queue. wslay keeps
 * them in a queue of its own, which mr_ws_pump used to flush only after
 * the whole read, behind whatever the handlers had queued meanwhile; this
 * runs before each message is handed up, so the connection's one output
 * queue holds frames in the order their causes arrived. */
static void send_queued_control(wslay_event_context_ptr ctx) {
  if (wslay_event_want_write(ctx))
    wslay_event_send(ctx);
}

/* A compressed message (RSV1 on its first frame; wslay refuses RSV1 unless
 * the session allows it): inflated within --max-message, checked for
 * UTF-8 when it is text, and handed up plain. A failure stops reading and
 * leaves a flag for mr_ws_feed, whose caller sends the close frame. */
static void deliver_compressed(wslay_event_context_ptr ctx, mr_ws_slot *slot,
                               const struct wslay_event_on_msg_recv_arg *arg) {
  mr_ws_pool *p = slot->pool;
  int binary = arg->opcode == WSLAY_BINARY_FRAME;
  uint8_t *msg = NULL;
  size_t len = 0;
  int r = MR_ENOMEM;
  /* The pool's level is for deflating, which this pool never does. */
  if (p->zpool || (p->zpool = mr_zpool_new(1)))
    r = mr_inflate_message(p->zpool, arg->msg, arg->msg_length, p->max_message,
                           &msg, &len);
  if (r == 0 && !binary && !mr_utf8_valid(msg, len))
    r = MR_EUTF8;
  if (r != 0) {
    slot->ws->flags |= r == MR_ETOOBIG    ? WS_TOO_BIG
                       : r == MR_EUTF8    ? WS_BAD_UTF8
                       : r == MR_EDEFLATE ? WS_BAD_DEFLATE
                                          : WS_NO_MEMORY;
    wslay_event_shutdown_read(ctx);
    free(msg);
    return;
  }
  const mr_ws_events *ev = p->ev;
  if (ev->inflated)
    ev->inflated(slot->owner, arg->msg_length, len);
  ev->message(slot->owner, msg, len, binary);
  free(msg);
}

static void ws_on_msg(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg, void *ud) {
  mr_ws_slot *slot = ud;
  const mr_ws_events *ev = slot->pool->ev;
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME:
  case WSLAY_BINARY_FRAME:
    send_queued_control(ctx);
    if (arg->rsv & WSLAY_RSV1_BIT) {
      deliver_compressed(ctx, slot, arg);
      return;
    }
    ev->message(slot->owner, arg->msg, arg->msg_length,
                arg->opcode == WSLAY_BINARY_FRAME);
    return;
  case WSLAY_CONNECTION_CLOSE: {
    if (arg->msg_length == 1) {
      /* A close body is empty or at least a 2-byte code; wslay lets a
       * single byte through as "no status", which RFC 6455 forbids. */
      slot->ws->flags |= WS_BAD_CLOSE;
      return;
    }
    unsigned code = arg->status_code ? arg->status_code : MR_CLOSE_NO_STATUS;
    size_t rlen = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
    ev->close(slot->owner, code, rlen ? (const char *)arg->msg + 2 : "", rlen);
    return;
  }
  case WSLAY_PING:
    /* wslay queued the pong before telling us: send it now, ahead of
     * anything a later message in this read makes the handlers queue. */
    send_queued_control(ctx);
    return;
  case WSLAY_PONG:
    ev->pong(slot->owner);
    return;
  default:
    return;
  }
}

static const struct wslay_event_callbacks ws_callbacks = {
    ws_recv, ws_send, NULL, NULL, NULL, NULL, ws_on_msg};

mr_ws_pool *mr_ws_pool_new(const mr_ws_events *ev, uint64_t max_message) {
  mr_ws_pool *p = calloc(1, sizeof *p);
  if (p) {
    p->ev = ev;
    p->max_message = max_message;
  }
  return p;
}

static void free_slot(mr_ws_slot *slot) {
  wslay_event_context_free(slot->ctx);
  free(slot);
}

void mr_ws_pool_free(mr_ws_pool *p) {
  if (!p)
    return;
  while (p->idle) {
    mr_ws_slot *slot = p->idle;
    p->idle = slot->next;
    free_slot(slot);
  }
  mr_zpool_free(p->zpool);
  free(p);
}

unsigned mr_ws_pool_idle(const mr_ws_pool *p) { return p->nidle; }

/* Attaches a context (pooled or new) to ws; returns 0 or MR_ENOMEM. */
static int attach(mr_ws_pool *p, mr_ws *ws, void *owner) {
  mr_ws_slot *slot = ws->slot;
  if (!slot) {
    if ((slot = p->idle)) {
      p->idle = slot->next;
      p->nidle--;
    } else {
      if (!(slot = calloc(1, sizeof *slot)))
        return MR_ENOMEM;
      if (wslay_event_context_server_init(&slot->ctx, &ws_callbacks, slot)) {
        free(slot);
        return MR_ENOMEM;
      }
      /* wslay's default limit is 2 GiB; the tracker refuses earlier, this
       * is the second line. */
      wslay_event_config_set_max_recv_msg_length(slot->ctx, p->max_message);
      slot->pool = p;
    }
    slot->ws = ws;
    ws->slot = slot;
  }
  slot->owner = owner;
  /* A pooled context may have served a session that negotiated otherwise:
   * RSV1 is allowed exactly on sessions that agreed to permessage-deflate,
   * and wslay answers it with 1002 on the others. */
  wslay_event_config_set_allowed_rsv_bits(
      slot->ctx, (ws->flags & WS_DEFLATE) ? WSLAY_RSV1_BIT : WSLAY_RSV_NONE);
  return 0;
}

int mr_ws_feed(mr_ws_pool *p, mr_ws *ws, void *owner, const uint8_t *data,
               size_t len) {
  if (attach(p, ws, owner) != 0)
    return MR_ENOMEM;
  wslay_event_context_ptr ctx = ws->slot->ctx;
  p->feed = data;
  p->feed_len = len;
  int r = wslay_event_recv(ctx);
  p->feed = NULL;
  p->feed_len = 0;
  /* A frame-level violation (oversized or fragmented control frame, bad
   * length encoding) makes wslay fail without a status code, as does our
   * own early size check: the peer is owed 1002 or 1009, which the owner
   * sends. Once our own close frame is out nothing may follow it. */
  if ((r != 0 || (ws->flags & (WS_BAD_CLOSE | WS_FAILED | WS_TOO_BIG))) &&
      !wslay_event_get_close_sent(ctx)) {
    if (ws->flags & WS_TOO_BIG)
      return MR_ETOOBIG;
    if (ws->flags & WS_BAD_UTF8)
      return MR_EUTF8;
    if (ws->flags & WS_BAD_DEFLATE)
      return MR_EDEFLATE;
    if (ws->flags & WS_NO_MEMORY)
      return MR_ENOMEM;
    return MR_EPROTO;
  }
  return 0;
}

void mr_ws_enable_deflate(mr_ws *ws) { ws->flags |= WS_DEFLATE; }

int mr_ws_deflate_enabled(const mr_ws *ws) {
  return (ws->flags & WS_DEFLATE) != 0;
}

int mr_ws_queue_close(mr_ws_pool *p, mr_ws *ws, void *owner, uint16_t code,
                      const char *reason, size_t len) {
  if (attach(p, ws, owner) != 0 ||
      wslay_event_queue_close(ws->slot->ctx, code, (const uint8_t *)reason,
                              len) != 0)
    return MR_ENOMEM;
  return 0;
}

mr_ws_close_state mr_ws_pump(mr_ws *ws, unsigned *code_sent) {
  if (!ws->slot)
    return MR_WS_OPEN;
  wslay_event_context_ptr ctx = ws->slot->ctx;
  send_queued_control(ctx);
  if (!wslay_event_get_close_sent(ctx))
    return MR_WS_OPEN;
  *code_sent = wslay_event_get_status_code_sent(ctx);
  if (wslay_event_get_close_received(ctx) || !wslay_event_get_read_enabled(ctx))
    return MR_WS_CLOSE_DONE;
  return MR_WS_CLOSE_SENT;
}

void mr_ws_release_if_idle(mr_ws_pool *p, mr_ws *ws) {
  mr_ws_slot *slot = ws->slot;
  if (!slot || !mr_frame_tracker_idle(&slot->track) ||
      wslay_event_want_write(slot->ctx) ||
      wslay_event_get_close_sent(slot->ctx) ||
      wslay_event_get_close_received(slot->ctx) ||
      !wslay_event_get_read_enabled(slot->ctx))
    return;
  ws->slot = NULL;
  slot->ws = NULL;
  slot->owner = NULL;
  if (p->nidle >= POOL_MAX) {
    free_slot(slot);
    return;
  }
  slot->next = p->idle;
  p->idle = slot;
  p->nidle++;
}

void mr_ws_drop(mr_ws *ws) {
  if (ws->slot) {
    free_slot(ws->slot);
    ws->slot = NULL;
  }
}
