#include "conn.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bridge.h"
#include "codec.h"
#include "error.h"
#include "http.h"
#include "log.h"

/* How long a closing connection may take to answer our close frame or to
 * drain its queue before the socket is simply closed. */
#define CLOSING_GRACE_MS 2000
#define MAX_IOV 64
/* Idle wslay contexts kept for reuse; more are freed. */
#define WS_POOL_MAX 256

/* A wslay context and the connection it serves now. wslay offers no way to
 * change a context's user data, so callbacks get the slot and read the
 * connection from it, which lets an idle context move between connections. */
typedef struct mr_ws_slot {
  wslay_event_context_ptr ctx;
  mr_conn *conn;
  struct mr_ws_slot *next;
} mr_ws_slot;

static void terminate(mr_conn *c);
static int over_backpressure(mr_conn *c);

/* ---- intrusive lists ---------------------------------------------------- */

static void pending_add(mr_conn *c) {
  if (c->flags & (MR_CF_PENDING | MR_CF_VIRTUAL))
    return;
  mr_server *srv = c->srv;
  c->flags |= MR_CF_PENDING;
  c->pending_next = srv->pending;
  if (srv->pending)
    srv->pending->pending_pprev = &c->pending_next;
  srv->pending = c;
  c->pending_pprev = &srv->pending;
}

static void pending_remove(mr_conn *c) {
  if (!(c->flags & MR_CF_PENDING))
    return;
  c->flags &= ~MR_CF_PENDING;
  *c->pending_pprev = c->pending_next;
  if (c->pending_next)
    c->pending_next->pending_pprev = c->pending_pprev;
}

static void doomed_remove(mr_conn *c) {
  if (!(c->flags & MR_CF_DOOMED))
    return;
  c->flags &= ~MR_CF_DOOMED;
  *c->doomed_pprev = c->doomed_next;
  if (c->doomed_next)
    c->doomed_next->doomed_pprev = c->doomed_pprev;
}

static void set_close(mr_conn *c, unsigned code, const char *reason,
                      size_t len) {
  if (c->close_code)
    return; /* the first reason to close is the one on_close hears */
  c->close_code = (uint16_t)code;
  if (len > 123)
    len = 123;
  if (len && (c->close_reason = malloc(len)))
    memcpy(c->close_reason, reason, len);
  c->close_reason_len = c->close_reason ? (uint8_t)len : 0;
}

void mr_conn_doom(mr_conn *c, uint16_t code, const char *reason) {
  if (c->state == MR_CONN_CLOSED || (c->flags & MR_CF_DOOMED))
    return;
  set_close(c, code, reason, strlen(reason));
  mr_server *srv = c->srv;
  c->flags |= MR_CF_DOOMED;
  c->doomed_next = srv->doomed;
  if (srv->doomed)
    srv->doomed->doomed_pprev = &c->doomed_next;
  srv->doomed = c;
  c->doomed_pprev = &srv->doomed;
}

void mr_conn_finish(mr_conn *c) {
  doomed_remove(c);
  terminate(c);
}

/* ---- writing --------------------------------------------------------------
 */

static int queue_buf(mr_conn *c, mr_buf *b) {
  int r = mr_outq_push(&c->outq, b);
  if (r != 0)
    return r;
  pending_add(c);
  return 0;
}

static int queue_bytes(mr_conn *c, const void *p, size_t len) {
  mr_buf *b = mr_buf_new(len);
  if (!b)
    return MR_ENOMEM;
  memcpy(b->data, p, len);
  int r = queue_buf(c, b);
  mr_buf_release(b);
  return r;
}

static size_t fill_iov(mr_conn *c, uv_buf_t *iov) {
  const uint8_t *ptrs[MAX_IOV];
  size_t lens[MAX_IOV];
  size_t n = mr_outq_peek(&c->outq, ptrs, lens, MAX_IOV);
  for (size_t i = 0; i < n; i++)
    iov[i] = uv_buf_init((char *)ptrs[i], (unsigned)lens[i]);
  return n;
}

static void on_write(uv_write_t *req, int status) {
  mr_conn *c = req->data;
  free(req);
  c->wreq = NULL;
  c->flags &= ~MR_CF_WRITING;
  if (c->state == MR_CONN_CLOSED)
    return; /* cancelled by uv_close; the queue is freed in on_closed */
  if (status < 0) {
    mr_debug("conn %llu: write failed: %s", (unsigned long long)c->id,
             uv_strerror(status));
    set_close(c, MR_CLOSE_ABNORMAL, "write failed", 12);
    terminate(c);
    return;
  }
  mr_outq_consume(&c->outq, c->writing);
  c->srv->stats.bytes_out += c->writing;
  c->writing = 0;
  if (c->outq.count > 0 || c->closing_how == MR_CLOSING_AFTER_FLUSH)
    pending_add(c);
}

/* Writes directly to the socket with sendmsg, which is what uv_try_write
 * does with writev, minus the file layer: on the fan-out path, where the
 * kernel's send is nearly all the work, skipping vfs_writev and its file
 * position lock saves several percent. Only called while no uv_write is in
 * flight, so ordering with libuv's own write queue is kept. Returns the
 * bytes sent, UV_EAGAIN, or a negative libuv error. */
static ssize_t try_send(mr_conn *c, uv_buf_t *iov, size_t n) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
    return UV_EBADF;
  /* libuv documents uv_buf_t as layout-compatible with struct iovec. */
  _Static_assert(sizeof(uv_buf_t) == sizeof(struct iovec) &&
                     offsetof(uv_buf_t, base) ==
                         offsetof(struct iovec, iov_base) &&
                     offsetof(uv_buf_t, len) == offsetof(struct iovec, iov_len),
                 "uv_buf_t must match struct iovec");
  struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = n};
  ssize_t r;
  do
    r = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  if (r >= 0)
    return r;
  return errno == EAGAIN || errno == EWOULDBLOCK
             ? UV_EAGAIN
             : uv_translate_sys_error(errno);
}

/* Writes as much as the socket takes now and hands the rest to one
 * vectored uv_write. It never tears the connection down itself (it may run
 * in the middle of a fan-out); failures doom the connection instead. */
void mr_conn_flush(mr_conn *c) {
  pending_remove(c);
  if (c->state == MR_CONN_CLOSED ||
      (c->flags & (MR_CF_WRITING | MR_CF_HOLD | MR_CF_VIRTUAL)))
    return;
  uv_buf_t iov[MAX_IOV];
  while (c->outq.count > 0) {
    size_t n = fill_iov(c, iov);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
      total += iov[i].len;
    ssize_t r = try_send(c, iov, n);
    if (r == UV_EAGAIN)
      break;
    if (r < 0) {
      mr_conn_doom(c, MR_CLOSE_ABNORMAL, "write failed");
      return;
    }
    mr_outq_consume(&c->outq, (size_t)r);
    c->srv->stats.bytes_out += (size_t)r;
    if ((size_t)r < total)
      break; /* the socket buffer is full */
  }
  if (c->outq.count > 0) {
    size_t n = fill_iov(c, iov);
    c->writing = 0;
    for (size_t i = 0; i < n; i++)
      c->writing += iov[i].len;
    if (!(c->wreq = malloc(sizeof *c->wreq))) {
      c->writing = 0;
      mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
      return;
    }
    c->wreq->data = c;
    int r =
        uv_write(c->wreq, (uv_stream_t *)&c->tcp, iov, (unsigned)n, on_write);
    if (r < 0) {
      free(c->wreq);
      c->wreq = NULL;
      c->writing = 0;
      mr_conn_doom(c, MR_CLOSE_ABNORMAL, "write failed");
      return;
    }
    c->flags |= MR_CF_WRITING;
    return;
  }
  if (c->closing_how == MR_CLOSING_AFTER_FLUSH)
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "");
}

/* The limit applies to what is already waiting when something new is
 * queued (as uWebSockets does): a single message larger than the limit
 * still goes to a reader that keeps up, and a connection holds at most the
 * limit plus one message. Before judging, write what the socket takes.
 * Returns 1 when the connection is over the limit (and now doomed). */
static int over_backpressure(mr_conn *c) {
  size_t limit = c->srv->cfg.max_backpressure;
  if (c->outq.bytes <= limit)
    return 0;
  mr_conn_flush(c);
  if (c->outq.bytes <= limit)
    return 0;
  if (!(c->flags & MR_CF_DOOMED)) {
    c->srv->stats.backpressure_closes++;
    mr_warn("conn %llu (%s): closed 1008, %zu unsent bytes exceed "
            "--max-backpressure %zu",
            (unsigned long long)c->id, mr_conn_remote(c), c->outq.bytes, limit);
    mr_conn_doom(c, MR_CLOSE_POLICY, "backpressure limit exceeded");
  }
  return 1;
}

int mr_conn_send_frame(mr_conn *c, mr_buf *frame) {
  if (c->state != MR_CONN_OPEN || (c->flags & MR_CF_DOOMED))
    return MR_ECLOSED;
  if (over_backpressure(c))
    return MR_ECLOSED;
  int r = queue_buf(c, frame);
  if (r != 0)
    return r;
  c->srv->stats.messages_out++;
  return 0;
}

int mr_conn_send(mr_conn *c, const void *msg, size_t len, int binary) {
  if (c->state != MR_CONN_OPEN || (c->flags & MR_CF_DOOMED))
    return MR_ECLOSED;
  mr_buf *f = mr_frame_new(binary ? MR_OP_BINARY : MR_OP_TEXT, msg, len);
  if (!f)
    return MR_ENOMEM;
  int r = mr_conn_send_frame(c, f);
  mr_buf_release(f);
  return r;
}

/* ---- wslay glue ---------------------------------------------------------- */

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *ud) {
  (void)flags;
  mr_conn *c = ((mr_ws_slot *)ud)->conn;
  mr_server *srv = c->srv;
  if (c->flags & MR_CF_TOO_BIG) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  if (srv->feed_len == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < srv->feed_len ? len : srv->feed_len;
  size_t ok;
  if (mr_frame_track(&c->track, srv->feed, n, srv->cfg.max_message, &ok) != 0) {
    /* wslay still gets the messages before the oversized header; the next
     * call reports the failure, and feed_ws answers 1009 at once. */
    c->flags |= MR_CF_TOO_BIG;
    srv->feed_len = n = ok;
    if (n == 0) {
      wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
      return -1;
    }
  }
  memcpy(buf, srv->feed, n);
  srv->feed += n;
  srv->feed_len -= n;
  return (ssize_t)n;
}

/* wslay only ever sends control frames here (pong, close); data frames are
 * encoded by us and queued directly, so copying these few bytes is fine. */
static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *ud) {
  (void)flags;
  mr_conn *c = ((mr_ws_slot *)ud)->conn;
  /* A client that pings without reading would otherwise pile up pongs, so
   * the limit for messages applies here too. wslay hands over a frame's
   * header and payload in separate calls: once the connection is doomed,
   * nothing more is queued, so no half frame goes out. */
  if ((c->flags & MR_CF_DOOMED) || over_backpressure(c))
    return (ssize_t)len;
  if (queue_bytes(c, data, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static void ws_on_msg(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg, void *ud) {
  (void)ctx;
  mr_conn *c = ((mr_ws_slot *)ud)->conn;
  mr_server *srv = c->srv;
  switch (arg->opcode) {
  case WSLAY_TEXT_FRAME:
  case WSLAY_BINARY_FRAME:
    if (c->state != MR_CONN_OPEN || (c->flags & MR_CF_DOOMED))
      return; /* a closing connection's late messages are dropped */
    srv->stats.messages_in++;
    if (mr_bridge_on_message(srv->bridge, c, arg->msg, arg->msg_length,
                             arg->opcode == WSLAY_BINARY_FRAME) != 0) {
      srv->stats.handler_errors++;
      mr_conn_close(c, MR_CLOSE_INTERNAL, "handler error", 13);
    }
    return;
  case WSLAY_CONNECTION_CLOSE: {
    if (arg->msg_length == 1) {
      /* A close body is empty or at least a 2-byte code; wslay lets a
       * single byte through as "no status", which RFC 6455 forbids. */
      c->flags |= MR_CF_BAD_CLOSE;
      return;
    }
    unsigned code = arg->status_code ? arg->status_code : MR_CLOSE_NO_STATUS;
    size_t rlen = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
    set_close(c, code, rlen ? (const char *)arg->msg + 2 : "", rlen);
    return;
  }
  case WSLAY_PONG:
    c->flags &= ~MR_CF_PINGED;
    return;
  default:
    return;
  }
}

static const struct wslay_event_callbacks ws_callbacks = {
    ws_recv, ws_send, NULL, NULL, NULL, NULL, ws_on_msg};

/* Attaches a context (pooled or new) to c; returns 0 or MR_ENOMEM. */
static int ws_attach(mr_conn *c) {
  if (c->ws)
    return 0;
  mr_server *srv = c->srv;
  mr_ws_slot *slot = srv->ws_pool;
  if (slot) {
    srv->ws_pool = slot->next;
    srv->ws_pool_len--;
  } else {
    slot = calloc(1, sizeof *slot);
    if (!slot)
      return MR_ENOMEM;
    if (wslay_event_context_server_init(&slot->ctx, &ws_callbacks, slot) != 0) {
      free(slot);
      return MR_ENOMEM;
    }
  }
  /* The limit is set on every attach: pooled contexts may come from a server
   * with another limit only in the kit, and it costs nothing. */
  wslay_event_config_set_max_recv_msg_length(slot->ctx, srv->cfg.max_message);
  slot->conn = c;
  c->ws = slot;
  return 0;
}

static void ws_free_slot(mr_ws_slot *slot) {
  wslay_event_context_free(slot->ctx);
  free(slot);
}

/* Returns c's context to the pool when wslay holds nothing for it: the
 * tracker is between messages (so wslay's input buffer is empty and no
 * message is being assembled), nothing is queued, and no close has begun.
 * Such a context is in the same state as a fresh one. */
static void ws_detach_if_idle(mr_conn *c) {
  mr_ws_slot *slot = c->ws;
  if (!slot || c->state != MR_CONN_OPEN || !mr_frame_tracker_idle(&c->track) ||
      wslay_event_want_write(slot->ctx) ||
      wslay_event_get_close_sent(slot->ctx) ||
      wslay_event_get_close_received(slot->ctx) ||
      !wslay_event_get_read_enabled(slot->ctx))
    return;
  c->ws = NULL;
  slot->conn = NULL;
  mr_server *srv = c->srv;
  if (srv->ws_pool_len >= WS_POOL_MAX) {
    ws_free_slot(slot);
    return;
  }
  slot->next = srv->ws_pool;
  srv->ws_pool = slot;
  srv->ws_pool_len++;
}

/* Frees a context that may hold state (a closing connection's). */
static void ws_drop(mr_conn *c) {
  if (c->ws) {
    ws_free_slot(c->ws);
    c->ws = NULL;
  }
}

void mr_conn_pool_free(mr_server *srv) {
  while (srv->ws_pool) {
    mr_ws_slot *slot = srv->ws_pool;
    srv->ws_pool = slot->next;
    ws_free_slot(slot);
  }
  srv->ws_pool_len = 0;
}

/* After wslay has read or we queued a close: push out the control frames
 * wslay produced and work out how far the close handshake has come. */
static void after_wslay(mr_conn *c) {
  mr_server *srv = c->srv;
  wslay_event_context_ptr ws = c->ws->ctx;
  if (wslay_event_want_write(ws))
    wslay_event_send(ws);
  if (!wslay_event_get_close_sent(ws))
    return;
  if (!c->close_code) {
    /* wslay closed the connection itself: a limit or validation failure. */
    unsigned code = wslay_event_get_status_code_sent(ws);
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
    mr_info("conn %llu (%s): closed %u: %s", (unsigned long long)c->id,
            mr_conn_remote(c), code, why);
    set_close(c, code, why, strlen(why));
  }
  if (c->state == MR_CONN_OPEN)
    c->state = MR_CONN_CLOSING;
  if (wslay_event_get_close_received(ws) || !wslay_event_get_read_enabled(ws)) {
    c->closing_how = MR_CLOSING_AFTER_FLUSH;
  } else if (c->closing_how == MR_CLOSING_NONE) {
    c->closing_how = MR_CLOSING_AWAIT_PEER;
  }
  if (!c->deadline)
    c->deadline = uv_now(srv->loop) + CLOSING_GRACE_MS;
  pending_add(c);
}

/* A frame-level violation (oversized or fragmented control frame, bad
 * length encoding) makes wslay fail without a status code, as does our own
 * early size check; the peer is owed 1002 or 1009, so we send it ourselves
 * and drop wslay's empty close. */
static void protocol_failure(mr_conn *c, unsigned code, const char *why) {
  mr_server *srv = c->srv;
  if (code == MR_CLOSE_TOO_BIG)
    srv->stats.messages_too_big++;
  else
    srv->stats.protocol_errors++;
  mr_info("conn %llu (%s): closed %u: %s", (unsigned long long)c->id,
          mr_conn_remote(c), code, why);
  set_close(c, code, why, strlen(why));
  mr_buf *f = mr_frame_new_close((uint16_t)code, why, strlen(why));
  if (f) {
    queue_buf(c, f);
    mr_buf_release(f);
  }
  c->state = MR_CONN_CLOSING;
  c->closing_how = MR_CLOSING_AFTER_FLUSH;
  c->deadline = uv_now(srv->loop) + CLOSING_GRACE_MS;
}

static void feed_ws(mr_conn *c, const uint8_t *p, size_t n) {
  if (c->closing_how == MR_CLOSING_AFTER_FLUSH)
    return;
  if (ws_attach(c) != 0) {
    mr_conn_doom(c, MR_CLOSE_INTERNAL, "out of memory");
    return;
  }
  /* One connection is fed at a time (a handler cannot make another read),
   * so the chunk being fed lives in the server, not in every connection. */
  mr_server *srv = c->srv;
  srv->feed = p;
  srv->feed_len = n;
  int r = wslay_event_recv(c->ws->ctx);
  srv->feed = NULL;
  srv->feed_len = 0;
  if (c->state == MR_CONN_CLOSED)
    return;
  /* Once our own close frame is out nothing may follow it, so a malformed
   * reply to it just ends the connection (after_wslay sees the close). */
  if ((r != 0 || (c->flags & MR_CF_BAD_CLOSE)) &&
      !wslay_event_get_close_sent(c->ws->ctx)) {
    if (c->flags & MR_CF_TOO_BIG)
      protocol_failure(c, MR_CLOSE_TOO_BIG,
                       "message larger than --max-message");
    else
      protocol_failure(c, MR_CLOSE_PROTOCOL, "malformed frame");
    return;
  }
  after_wslay(c);
  ws_detach_if_idle(c);
}

int mr_conn_close(mr_conn *c, uint16_t code, const char *reason, size_t len) {
  if (c->state != MR_CONN_OPEN || (c->flags & MR_CF_DOOMED))
    return MR_ECLOSED;
  if (len > 123)
    len = 123;
  set_close(c, code, reason, len);
  if (ws_attach(c) != 0 ||
      wslay_event_queue_close(c->ws->ctx, code, (const uint8_t *)reason, len) !=
          0) {
    mr_conn_doom(c, code, "");
    return 0;
  }
  after_wslay(c);
  return 0;
}

/* ---- handshake ------------------------------------------------------------
 */

static void refuse(mr_conn *c, int status, const char *reason) {
  char resp[1024];
  int n = mr_http_build_error(status, reason, resp, sizeof resp);
  if (n > 0)
    queue_bytes(c, resp, (size_t)n);
  c->state = MR_CONN_CLOSING;
  c->closing_how = MR_CLOSING_AFTER_FLUSH;
  c->deadline = uv_now(c->srv->loop) + CLOSING_GRACE_MS;
  free(c->head);
  c->head = NULL;
  if (!(c->flags & MR_CF_VIRTUAL))
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static void handshake(mr_conn *c, const char *data, size_t n) {
  mr_server *srv = c->srv;
  size_t cap = srv->cfg.max_head + 1;
  if (!c->head && !(c->head = malloc(cap))) {
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
    return;
  }
  size_t take = n < cap - c->head_len ? n : cap - c->head_len;
  memcpy(c->head + c->head_len, data, take);
  c->head_len += (uint32_t)take;

  mr_http_request req;
  int r = mr_http_parse_upgrade(c->head, c->head_len, srv->cfg.max_head, &req);
  if (r == MR_EAGAIN)
    return;
  if (r != 0 || !req.is_upgrade) {
    int status = r != 0 ? 400 : req.status;
    const char *why = r != 0 ? "malformed request" : req.reason;
    srv->stats.handshakes_refused++;
    mr_info("conn %llu (%s): upgrade refused %d: %s", (unsigned long long)c->id,
            mr_conn_remote(c), status, why);
    refuse(c, status, why);
    return;
  }

  /* The 101 goes into the queue first, held back while on_connect runs, so
   * that frames the handler sends from on_connect follow it; a refusal
   * discards both. */
  char resp[256];
  int rn = mr_http_build_101(&req, resp, sizeof resp);
  c->state = MR_CONN_OPEN;
  c->flags |= MR_CF_HOLD;
  if (rn < 0 || queue_bytes(c, resp, (size_t)rn) != 0) {
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
    return;
  }
  int status = 403;
  char body[512];
  body[0] = '\0';
  int ok =
      mr_bridge_on_connect(srv->bridge, c, &req, &status, body, sizeof body);
  c->flags &= ~MR_CF_HOLD;
  if (!ok || (c->flags & MR_CF_DOOMED) || c->state != MR_CONN_OPEN) {
    mr_rooms_leave_all(&srv->rooms, &c->member);
    mr_bridge_forget(srv->bridge, c);
    mr_outq_clear(&c->outq);
    /* Refused by the handler, or closed by it (conn:close() in on_connect
     * refuses with the default 403); doomed while it ran (out of memory,
     * over the backpressure limit) is a server-side failure, 500. */
    if (ok && (c->flags & MR_CF_DOOMED)) {
      status = 500;
    } else {
      srv->stats.handler_refusals++;
      if (ok)
        status = 403;
    }
    doomed_remove(c);
    /* A refused upgrade never opened: forget any close recorded while
     * on_connect ran. */
    c->close_code = 0;
    free(c->close_reason);
    c->close_reason = NULL;
    c->close_reason_len = 0;
    mr_info("conn %llu (%s): upgrade refused %d by on_connect",
            (unsigned long long)c->id, mr_conn_remote(c), status);
    refuse(c, status,
           body[0] ? body : (status == 500 ? "internal error" : "forbidden"));
    return;
  }
  c->flags |= MR_CF_LUA;
  srv->stats.connections_open++;
  c->deadline = 0;
  c->last_rx = uv_now(srv->loop);
  c->next_ping = c->last_rx + (uint64_t)srv->cfg.ping_interval * 1000;
  pending_add(c);
  mr_debug("conn %llu (%s): open %.*s", (unsigned long long)c->id,
           mr_conn_remote(c), (int)req.path_len, req.path);

  /* Bytes that came in the same packet after the head are frames. */
  size_t extra = c->head_len - req.head_len;
  char *head = c->head;
  c->head = NULL;
  if (extra > 0)
    feed_ws(c, (const uint8_t *)head + req.head_len, extra);
  if (take < n && c->state != MR_CONN_CLOSED)
    feed_ws(c, (const uint8_t *)data + take, n - take);
  free(head);
}

/* ---- reading --------------------------------------------------------------
 */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  mr_conn *c = h->data;
  /* Every read is consumed before the callback returns, so one buffer
   * serves every connection. */
  *buf = uv_buf_init((char *)c->srv->readbuf, sizeof c->srv->readbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  mr_conn *c = s->data;
  mr_server *srv = c->srv;
  if (n == 0)
    return;
  if (n < 0) {
    if (n != UV_EOF)
      mr_debug("conn %llu: read error: %s", (unsigned long long)c->id,
               uv_strerror((int)n));
    set_close(c, MR_CLOSE_ABNORMAL, "", 0);
    terminate(c);
    return;
  }
  srv->stats.bytes_in += (size_t)n;
  c->last_rx = uv_now(srv->loop);
  if (c->state == MR_CONN_HANDSHAKE)
    handshake(c, buf->base, (size_t)n);
  else if (c->state == MR_CONN_OPEN || c->state == MR_CONN_CLOSING)
    feed_ws(c, (const uint8_t *)buf->base, (size_t)n);
}

/* ---- lifetime -------------------------------------------------------------
 */

static void on_closed(uv_handle_t *h) {
  mr_conn *c = h->data;
  mr_server *srv = c->srv;
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->all_head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  mr_outq_clear(&c->outq);
  free(c->close_reason);
  free(c->virtual_remote);
  free(c);
}

/* The one teardown path: leave every room first, so nothing can reach the
 * connection through a room, then tell Lua, then close the socket. The
 * memory goes in on_closed. */
static void terminate(mr_conn *c) {
  if (c->state == MR_CONN_CLOSED)
    return;
  mr_server *srv = c->srv;
  int had_lua = c->flags & MR_CF_LUA;
  c->state = MR_CONN_CLOSED;
  pending_remove(c);
  doomed_remove(c);
  mr_rooms_leave_all(&srv->rooms, &c->member);
  if (!c->close_code)
    set_close(c, MR_CLOSE_ABNORMAL, "", 0);
  if (had_lua) {
    srv->stats.connections_open--;
    c->flags &= ~MR_CF_LUA;
    mr_debug("conn %llu (%s): closed %u", (unsigned long long)c->id,
             mr_conn_remote(c), c->close_code);
    mr_bridge_on_close(srv->bridge, c, c->close_code, c->close_reason,
                       c->close_reason_len);
  }
  HASH_DEL(srv->conns_by_id, c);
  ws_drop(c);
  free(c->head);
  c->head = NULL;
  if (c->flags & MR_CF_VIRTUAL) {
    c->tcp.data = c;
    on_closed((uv_handle_t *)&c->tcp);
    return;
  }
  c->flags |= MR_CF_TCP_CLOSE;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static mr_conn *conn_new(mr_server *srv) {
  mr_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->srv = srv;
  c->id = ++srv->next_id;
  c->member.owner = c;
  c->tcp.data = c;
  HASH_ADD(hh, srv->conns_by_id, id, sizeof c->id, c);
  c->next = srv->all_head;
  if (srv->all_head)
    srv->all_head->prev = c;
  srv->all_head = c;
  return c;
}

const char *mr_conn_remote(const mr_conn *c) {
  /* Asked of the socket when needed rather than stored: it is only for logs
   * and on_connect, and 64 bytes a connection add up. */
  static char name[64];
  struct sockaddr_storage ss;
  int len = sizeof ss;
  snprintf(name, sizeof name, "%s",
           c->virtual_remote ? c->virtual_remote
                             : (c->flags & MR_CF_VIRTUAL ? "127.0.0.1" : "?"));
  if (!(c->flags & (MR_CF_VIRTUAL | MR_CF_TCP_CLOSE)) &&
      uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
    if (ss.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&ss, name, sizeof name);
    else
      uv_ip4_name((struct sockaddr_in *)&ss, name, sizeof name);
  }
  return name;
}

int mr_conn_set_virtual_remote(mr_conn *c, const char *addr) {
  char *copy = strdup(addr);
  if (!copy)
    return MR_ENOMEM;
  free(c->virtual_remote);
  c->virtual_remote = copy;
  return 0;
}

mr_conn *mr_conn_new_virtual(mr_server *srv) {
  mr_conn *c = conn_new(srv);
  if (!c)
    return NULL;
  c->flags |= MR_CF_VIRTUAL;
  c->state = MR_CONN_HANDSHAKE;
  srv->stats.connections_accepted++;
  return c;
}

void mr_conn_virtual_drained(mr_conn *c) {
  mr_outq_clear(&c->outq);
  if (c->state != MR_CONN_CLOSED && c->closing_how == MR_CLOSING_AFTER_FLUSH)
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "");
}

void mr_conn_feed(mr_conn *c, const uint8_t *data, size_t len) {
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
  on_read((uv_stream_t *)&c->tcp, (ssize_t)len, &buf);
}

static void on_refused_closed(uv_handle_t *h) { free(h); }

void mr_conn_accept(mr_server *srv) {
  unsigned open = (unsigned)HASH_COUNT(srv->conns_by_id);
  if (srv->shutting_down ||
      (srv->cfg.max_connections && open >= srv->cfg.max_connections)) {
    /* Accept and close at once, so the client sees a clean refusal rather
     * than a connection stuck in the backlog. */
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t)
      return;
    uv_tcp_init(srv->loop, t);
    uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, on_refused_closed);
    srv->stats.connections_refused++;
    mr_warn("connection refused: %s",
            srv->shutting_down ? "shutting down" : "--max-connections reached");
    return;
  }
  mr_conn *c = conn_new(srv);
  if (!c) {
    srv->stats.connections_refused++;
    return;
  }
  uv_tcp_init(srv->loop, &c->tcp);
  c->tcp.data = c;
  if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&c->tcp) != 0) {
    terminate(c);
    return;
  }
  srv->stats.connections_accepted++;
  uv_tcp_nodelay(&c->tcp, 1);
  c->state = MR_CONN_HANDSHAKE;
  c->deadline = uv_now(srv->loop) + (uint64_t)srv->cfg.handshake_timeout * 1000;
  int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (r != 0) {
    mr_warn("conn %llu: read_start failed: %s", (unsigned long long)c->id,
            uv_strerror(r));
    terminate(c);
  }
}

void mr_conn_sweep(mr_conn *c, uint64_t now) {
  mr_server *srv = c->srv;
  if (c->state == MR_CONN_CLOSED || (c->flags & (MR_CF_DOOMED | MR_CF_VIRTUAL)))
    return;
  if (c->state == MR_CONN_HANDSHAKE) {
    if (now >= c->deadline) {
      srv->stats.handshakes_timed_out++;
      mr_info("conn %llu (%s): handshake timed out", (unsigned long long)c->id,
              mr_conn_remote(c));
      terminate(c);
    }
    return;
  }
  if (c->state == MR_CONN_CLOSING) {
    if (c->deadline && now >= c->deadline)
      terminate(c);
    return;
  }
  unsigned idle = srv->cfg.idle_timeout;
  if (idle && now - c->last_rx >= (uint64_t)idle * 1000) {
    srv->stats.idle_closes++;
    mr_info("conn %llu (%s): closed 1001: idle for %us",
            (unsigned long long)c->id, mr_conn_remote(c), idle);
    mr_conn_close(c, MR_CLOSE_GOING_AWAY, "idle timeout", 12);
    return;
  }
  unsigned ping = srv->cfg.ping_interval;
  if (ping && now >= c->next_ping) {
    if (c->flags & MR_CF_PINGED) {
      srv->stats.ping_timeouts++;
      mr_info("conn %llu (%s): closed 1001: no pong within %us",
              (unsigned long long)c->id, mr_conn_remote(c), ping);
      mr_conn_close(c, MR_CLOSE_GOING_AWAY, "ping timeout", 12);
      c->closing_how = MR_CLOSING_AFTER_FLUSH;
      return;
    }
    mr_buf *f = mr_frame_new(MR_OP_PING, NULL, 0);
    if (f) {
      queue_buf(c, f);
      mr_buf_release(f);
    }
    c->flags |= MR_CF_PINGED;
    c->next_ping = now + (uint64_t)ping * 1000;
  }
}
