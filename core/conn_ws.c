/* A connection's WebSocket session: the events ws.c reports, the close
 * handshake, and feeding it what the socket read. */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "conn_internal.h"
#include "error.h"
#include "log.h"
#include "trace.h"

/* ---- the WebSocket session's events (ws.h) ------------------------------ */

/* Control frames from wslay (pongs, our close). A client that pings without
 * reading would otherwise pile up pongs, so the backpressure limit applies
 * here too. wslay hands over a frame's header and payload in separate
 * calls: once the connection is doomed nothing more is queued, so no half
 * frame goes out. */
static int ev_send(void *owner, const uint8_t *data, size_t len) {
  mr_conn *c = owner;
  if ((c->flags & MR_CF_DOOMED) || mr_conn__over_backpressure(c))
    return 0;
  return mr_conn__queue_bytes(c, data, len);
}

static void ev_message(void *owner, const uint8_t *msg, size_t len,
                       int binary) {
  mr_conn *c = owner;
  mr_server *srv = c->srv;
  if (!mr_conn_is_open(c))
    return; /* a closing connection's late messages are dropped */
  srv->stats.messages_in++;
  /* Past the rate the connection is closed rather than its messages
   * dropped: a protocol over WebSocket assumes every message arrives, and
   * silent gaps would break it in ways no one could trace. */
  if (mr_conn__over_rate(c, "closed 1008")) {
    mr_conn_close(c, MR_CLOSE_POLICY, "message rate exceeded", 21);
    return;
  }
  mr_trace_message();
  if (srv->conn_events->message(srv, c, msg, len, binary) != 0) {
    srv->stats.handler_errors++;
    mr_conn_close(c, MR_CLOSE_INTERNAL, "handler error", 13);
  }
}

static void ev_close(void *owner, unsigned code, const char *reason,
                     size_t len) {
  mr_conn__set_close(owner, code, reason, len);
}

static void ev_pong(void *owner) {
  mr_conn *c = owner;
  c->flags &= ~MR_CF_PINGED;
}

static void ev_inflated(void *owner, size_t in_len, size_t out_len) {
  (void)in_len;
  (void)out_len;
  mr_conn *c = owner;
  c->srv->stats.compressed_messages_in++;
}

static const mr_ws_events ws_events = {ev_message, ev_close, ev_pong, ev_send,
                                       ev_inflated};

static mr_ws_pool *ws_pool(mr_server *srv) {
  if (!srv->ws_pool)
    srv->ws_pool = mr_ws_pool_new(&ws_events, srv->cfg.max_message);
  return srv->ws_pool;
}

void mr_conn__set_closing(mr_conn *c, int how) {
  if (c->state == MR_CONN_OPEN)
    c->state = MR_CONN_CLOSING;
  c->closing_how = (uint8_t)how;
  if (!c->deadline)
    c->deadline = uv_now(c->srv->loop) + MR_CONN_CLOSING_GRACE_MS;
  mr_conn__pending_add(c);
}

/* After wslay has read or we queued a close: push out the control frames
 * wslay produced and work out how far the close handshake has come. */
static void after_wslay(mr_conn *c) {
  mr_server *srv = c->srv;
  unsigned code = 0;
  mr_ws_close_state st = mr_ws_pump(&c->ws, &code);
  if (st == MR_WS_OPEN)
    return;
  if (!c->close_code) {
    /* wslay closed the connection itself: a limit or validation failure. */
    const char *why = "protocol error";
    if (code == MR_CLOSE_BAD_DATA) {
      why = "invalid UTF-8 in a text message";
      srv->stats.invalid_utf8++;
    } else if (code == MR_CLOSE_TOO_BIG) {
      why = "message larger than --max-message";
      srv->stats.messages_too_big++;
    } else {
      srv->stats.protocol_errors++;
    }
    static mr_log_limit lim = MR_LOG_LIMIT_INIT("protocol closes");
    mr_log_limited(&lim, MR_LOG_INFO, "conn %llu (%s): closed %u: %s",
                   (unsigned long long)c->id, mr_conn_remote(c), code, why);
    mr_conn__set_close(c, code, why, strlen(why));
  }
  if (st == MR_WS_CLOSE_DONE)
    mr_conn__set_closing(c, MR_CLOSING_AFTER_FLUSH);
  else
    mr_conn__set_closing(c, c->closing_how == MR_CLOSING_NONE
                                ? MR_CLOSING_AWAIT_PEER
                                : c->closing_how);
}

/* A frame-level failure that wslay answers without a status code: the peer
 * is owed 1002 or 1009, so we send the close frame ourselves. */
static void protocol_failure(mr_conn *c, unsigned code, const char *why,
                             uint64_t *counter) {
  ++*counter;
  static mr_log_limit lim = MR_LOG_LIMIT_INIT("protocol failures");
  mr_log_limited(&lim, MR_LOG_INFO, "conn %llu (%s): closed %u: %s",
                 (unsigned long long)c->id, mr_conn_remote(c), code, why);
  mr_conn__set_close(c, code, why, strlen(why));
  mr_buf *f = mr_frame_new_close((uint16_t)code, why, strlen(why));
  if (f) {
    mr_conn__queue_buf(c, f);
    mr_buf_release(f);
  }
  c->deadline = 0;
  mr_conn__set_closing(c, MR_CLOSING_AFTER_FLUSH);
  c->state = MR_CONN_CLOSING;
}

void mr_conn__feed_ws(mr_conn *c, const uint8_t *p, size_t n) {
  if (c->closing_how == MR_CLOSING_AFTER_FLUSH)
    return;
  mr_ws_pool *pool = ws_pool(c->srv);
  int r = pool ? mr_ws_feed(pool, &c->ws, c, p, n) : MR_ENOMEM;
  if (c->state == MR_CONN_CLOSED)
    return;
  if (r == MR_ENOMEM) {
    mr_conn_doom(c, MR_CLOSE_INTERNAL, "out of memory");
    return;
  }
  mr_stats *st = &c->srv->stats;
  if (r == MR_ETOOBIG) {
    protocol_failure(c, MR_CLOSE_TOO_BIG, "message larger than --max-message",
                     &st->messages_too_big);
    return;
  }
  /* An inflated text message that is not UTF-8, and compressed data that
   * does not inflate, are both payloads inconsistent with their message
   * (RFC 6455 7.4.1: 1007); the framing itself was sound. */
  if (r == MR_EUTF8) {
    protocol_failure(c, MR_CLOSE_BAD_DATA, "invalid UTF-8 in a text message",
                     &st->invalid_utf8);
    return;
  }
  if (r == MR_EDEFLATE) {
    protocol_failure(c, MR_CLOSE_BAD_DATA, "corrupt compressed data",
                     &st->inflate_errors);
    return;
  }
  if (r != 0) {
    protocol_failure(c, MR_CLOSE_PROTOCOL, "malformed frame",
                     &st->protocol_errors);
    return;
  }
  after_wslay(c);
  if (c->state == MR_CONN_OPEN)
    mr_ws_release_if_idle(pool, &c->ws);
}

int mr_conn_close(mr_conn *c, uint16_t code, const char *reason, size_t len) {
  if (!mr_conn_is_open(c))
    return MR_ECLOSED;
  if (len > 123)
    len = 123;
  mr_conn__set_close(c, code, reason, len);
  mr_ws_pool *pool = ws_pool(c->srv);
  if (!pool || mr_ws_queue_close(pool, &c->ws, c, code, reason, len) != 0) {
    mr_conn_doom(c, code, "");
    return 0;
  }
  after_wslay(c);
  return 0;
}
