#include "conn.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bucket.h"
#include "codec.h"
#include "conn_internal.h"
#include "deflate.h"
#include "error.h"
#include "ipcount.h"
#include "log.h"
#include "origin.h"
#include "pmd.h"
#include "trace.h"

/* Every read is consumed before its callback returns, so one buffer
 * serves every connection of the process (the loop is single-threaded). */
static uint8_t readbuf[65536];

/* ---- intrusive lists ---------------------------------------------------- */

/* A connection is on at most one of srv->pending and srv->doomed, through
 * the same two pointers: the safe point tears doomed connections down
 * before it flushes any, so a doomed connection is never flushed there and
 * need not stay pending. The flag says which list it is on. */

static void list_push(mr_conn *c, mr_conn **head, uint16_t flag) {
  c->flags |= flag;
  c->list_next = *head;
  if (*head)
    (*head)->list_pprev = &c->list_next;
  *head = c;
  c->list_pprev = head;
}

static void list_remove(mr_conn *c, uint16_t flag) {
  if (!(c->flags & flag))
    return;
  c->flags &= ~flag;
  *c->list_pprev = c->list_next;
  if (c->list_next)
    c->list_next->list_pprev = c->list_pprev;
}

void mr_conn__pending_add(mr_conn *c) {
  if (c->flags & (MR_CF_PENDING | MR_CF_DOOMED | MR_CF_VIRTUAL))
    return;
  /* Appended: the sweep takes the oldest first (server.c). */
  mr_server *srv = c->srv;
  if (!srv->pending)
    srv->pending_tail = &srv->pending;
  c->flags |= MR_CF_PENDING;
  c->list_next = NULL;
  c->list_pprev = srv->pending_tail;
  *srv->pending_tail = c;
  srv->pending_tail = &c->list_next;
}

static void pending_remove(mr_conn *c) {
  if ((c->flags & MR_CF_PENDING) && !c->list_next)
    c->srv->pending_tail = c->list_pprev; /* it was the last */
  list_remove(c, MR_CF_PENDING);
}

static void doomed_remove(mr_conn *c) { list_remove(c, MR_CF_DOOMED); }

/* ---- the side struct ----------------------------------------------------
 */

mr_conn_extra *mr_conn__extra(mr_conn *c) {
  if (!c->x)
    c->x = calloc(1, sizeof *c->x);
  return c->x;
}

void mr_conn__extra_trim(mr_conn *c) {
  mr_conn_extra *x = c->x;
  if (x && !x->head && !x->close_reason && !x->virtual_remote && !x->http &&
      !x->ip) {
    free(x);
    c->x = NULL;
  }
}

/* Forgets the close reason recorded so far. */
static void drop_close_reason(mr_conn *c) {
  if (!c->x)
    return;
  free(c->x->close_reason);
  c->x->close_reason = NULL;
  c->x->close_reason_len = 0;
  mr_conn__extra_trim(c);
}

void mr_conn__set_close(mr_conn *c, unsigned code, const char *reason,
                        size_t len) {
  if (c->close_code)
    return; /* the first reason to close is the one on_close hears */
  c->close_code = (uint16_t)code;
  if (len > 123)
    len = 123;
  /* Out of memory: on_close hears the code without the reason. */
  mr_conn_extra *x = len ? mr_conn__extra(c) : NULL;
  if (x && (x->close_reason = malloc(len))) {
    memcpy(x->close_reason, reason, len);
    x->close_reason_len = (uint8_t)len;
  }
}

void mr_conn_doom(mr_conn *c, uint16_t code, const char *reason) {
  if (c->state == MR_CONN_CLOSED || (c->flags & MR_CF_DOOMED))
    return;
  mr_conn__set_close(c, code, reason, strlen(reason));
  pending_remove(c);
  list_push(c, &c->srv->doomed, MR_CF_DOOMED);
}

void mr_conn_finish(mr_conn *c) {
  doomed_remove(c);
  mr_conn__terminate(c);
}

/* ---- writing --------------------------------------------------------------
 */

int mr_conn__queue_buf(mr_conn *c, mr_buf *b) {
  int r = mr_outq_push(&c->tx.outq, b);
  if (r != 0)
    return r;
  mr_conn__pending_add(c);
  return 0;
}

int mr_conn__queue_bytes(mr_conn *c, const void *p, size_t len) {
  mr_buf *b = mr_buf_new(len);
  if (!b)
    return MR_ENOMEM;
  memcpy(b->data, p, len);
  int r = mr_conn__queue_buf(c, b);
  mr_buf_release(b);
  return r;
}

static void on_write(uv_write_t *req, int status) {
  mr_conn *c = req->data;
  ssize_t n = mr_tx_done(&c->tx, req, status);
  if (c->state == MR_CONN_CLOSED)
    return; /* cancelled by uv_close; the queue is freed in on_closed */
  if (n < 0) {
    mr_debug("conn %llu: write failed: %s", (unsigned long long)c->id,
             uv_strerror((int)n));
    mr_conn__set_close(c, MR_CLOSE_ABNORMAL, "write failed", 12);
    mr_conn__terminate(c);
    return;
  }
  c->srv->stats.bytes_out += (size_t)n;
  if (!mr_tx_empty(&c->tx) || c->closing_how == MR_CLOSING_AFTER_FLUSH)
    mr_conn__pending_add(c);
}

/* Writes what the socket takes and hands the rest to one uv_write. It never
 * tears the connection down itself (it may run in the middle of a fan-out);
 * failures doom the connection instead. */
void mr_conn_flush(mr_conn *c) {
  pending_remove(c);
  if (c->state == MR_CONN_CLOSED || mr_tx_busy(&c->tx) ||
      (c->flags & (MR_CF_HOLD | MR_CF_VIRTUAL)))
    return;
  size_t sent;
  int r = mr_tx_flush(&c->tx, (uv_stream_t *)&c->tcp, on_write, c, &sent);
  c->srv->stats.bytes_out += sent;
  if (r != 0) {
    mr_conn_doom(c, MR_CLOSE_ABNORMAL,
                 r == MR_ENOMEM ? "out of memory" : "write failed");
    return;
  }
  if (mr_tx_empty(&c->tx) && c->closing_how == MR_CLOSING_AFTER_FLUSH)
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "");
}

/* The limit applies to what is already waiting when something new is
 * queued (as uWebSockets does): a single message larger than the limit
 * still goes to a reader that keeps up, and a connection holds at most the
 * limit plus one message. Before judging, write what the socket takes.
 * Returns 1 when the connection is over the limit (and now doomed). */
int mr_conn__over_backpressure(mr_conn *c) {
  size_t limit = c->srv->cfg.max_backpressure;
  if (c->tx.outq.bytes <= limit)
    return 0;
  mr_conn_flush(c);
  if (c->tx.outq.bytes <= limit)
    return 0;
  if (!(c->flags & MR_CF_DOOMED)) {
    static mr_log_limit lim = MR_LOG_LIMIT_INIT("backpressure closes");
    c->srv->stats.backpressure_closes++;
    mr_log_limited(&lim, MR_LOG_WARN,
                   "conn %llu (%s): closed 1008, %zu unsent bytes exceed "
                   "--max-backpressure %zu",
                   (unsigned long long)c->id, mr_conn_remote(c),
                   c->tx.outq.bytes, limit);
    mr_conn_doom(c, MR_CLOSE_POLICY, "backpressure limit exceeded");
  }
  return 1;
}

int mr_conn_send_frame(mr_conn *c, mr_buf *frame) {
  if (!mr_conn_is_open(c))
    return MR_ECLOSED;
  if (mr_conn__over_backpressure(c))
    return MR_ECLOSED;
  int r = mr_conn__queue_buf(c, frame);
  if (r != 0)
    return r;
  c->srv->stats.messages_out++;
  return 0;
}

int mr_conn_send_compressed(mr_conn *c, mr_buf *frame, size_t plain_len) {
  int r = mr_conn_send_frame(c, frame);
  if (r == 0) {
    c->srv->stats.compressed_messages_out++;
    c->srv->stats.compressed_bytes_saved += plain_len - frame->len;
  }
  return r;
}

unsigned mr_conn_deflate_bits(const mr_conn *c, size_t len) {
  return len >= c->srv->cfg.compression_threshold ? c->deflate_bits : 0;
}

int mr_conn_deflate(mr_server *srv, int opcode, unsigned bits, const void *msg,
                    size_t len, mr_buf **frame) {
  *frame = NULL;
  if (!srv->zpool &&
      !(srv->zpool = mr_zpool_new((int)srv->cfg.compression_level)))
    return MR_ENOMEM;
  int r = mr_deflate_frame(srv->zpool, opcode, bits, msg, len, frame);
  if (r == 0 && *frame)
    srv->stats.messages_deflated++;
  return r;
}

int mr_conn_send(mr_conn *c, const void *msg, size_t len, int binary) {
  if (!mr_conn_is_open(c))
    return MR_ECLOSED;
  int op = binary ? MR_OP_BINARY : MR_OP_TEXT;
  unsigned bits = mr_conn_deflate_bits(c, len);
  mr_buf *z = NULL;
  /* Out of memory for zlib is no reason to fail a send that fits plain. */
  if (bits && mr_conn_deflate(c->srv, op, bits, msg, len, &z) == 0 && z) {
    int r = mr_conn_send_compressed(c, z, mr_frame_header_len(len) + len);
    mr_buf_release(z);
    return r;
  }
  mr_buf *f = mr_frame_new(op, msg, len);
  if (!f)
    return MR_ENOMEM;
  int r = mr_conn_send_frame(c, f);
  mr_buf_release(f);
  return r;
}

/* ---- handshake ------------------------------------------------------------
 */

/* Frees the request head read so far. */
static void free_head(mr_conn *c) {
  if (!c->x)
    return;
  free(c->x->head);
  c->x->head = NULL;
  c->x->head_len = 0;
  mr_conn__extra_trim(c);
}

/* Answers the upgrade with an HTTP error (and extra header lines, "" for
 * none) and closes once it is written. */
void mr_conn__refuse(mr_conn *c, int status, const char *reason,
                     const char *headers) {
  size_t cap = 512 + strlen(reason) + strlen(headers);
  mr_buf *b = mr_buf_new(cap);
  int n = b ? mr_http_build_error(status, reason, headers, (char *)b->data, cap)
            : MR_ENOMEM;
  if (n > 0) {
    b->len = (size_t)n;
    mr_conn__queue_buf(c, b);
  }
  mr_buf_release(b);
  c->state = MR_CONN_CLOSING;
  c->closing_how = MR_CLOSING_AFTER_FLUSH;
  c->deadline = uv_now(c->srv->loop) + MR_CONN_CLOSING_GRACE_MS;
  free_head(c);
  if (!(c->flags & MR_CF_VIRTUAL))
    uv_read_stop((uv_stream_t *)&c->tcp);
}

/* on_connect refused the upgrade, closed the connection, or it was doomed
 * while the handler ran: undo the open and answer with an HTTP error. */
static void refuse_after_connect(mr_conn *c, int ok,
                                 const mr_conn_answer *ans) {
  mr_server *srv = c->srv;
  int status = ans->status;
  mr_rooms_leave_all(&srv->rooms, &c->member);
  srv->conn_events->refused(srv, c);
  mr_outq_clear(&c->tx.outq);
  /* Refused by the handler, or closed by it (conn:close() in on_connect
   * refuses with the default 403); doomed while it ran (out of memory,
   * over the backpressure limit) is a server-side failure, 500. Only the
   * handler's own refusal carries its headers: those an accepting
   * on_connect chose were meant for the 101. */
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
  drop_close_reason(c);
  /* A token check refusing a flood of clients is a flood of lines. */
  static mr_log_limit lim = MR_LOG_LIMIT_INIT("upgrades refused by on_connect");
  mr_log_limited(&lim, MR_LOG_INFO,
                 "conn %llu (%s): upgrade refused %d by on_connect",
                 (unsigned long long)c->id, mr_conn_remote(c), status);
  mr_conn__refuse(c, status,
                  ans->body[0] && !ok
                      ? ans->body
                      : (status == 500 ? "internal error" : "forbidden"),
                  ok ? "" : ans->headers);
}

/* Answers the first permessage-deflate offer that can be honoured, when
 * --compression is on: writes the response's extension header line into
 * ext (cap bytes; "" when none was agreed) and marks c as compressing.
 * Declined offers are counted and logged. */
static void negotiate_deflate(mr_conn *c, const mr_http_request *req, char *ext,
                              size_t cap) {
  mr_server *srv = c->srv;
  ext[0] = '\0';
  if (!srv->cfg.compression)
    return;
  mr_http_list_iter it;
  const char *offer;
  size_t len;
  unsigned declined = 0;
  const char *why = NULL;
  mr_pmd_agreement a;
  int ok = 0;
  mr_http_list_init(&it, req, "Sec-WebSocket-Extensions");
  while (!ok && mr_http_list_next(&it, &offer, &len))
    ok = mr_pmd_negotiate(offer, len, srv->cfg.compression_window, &a,
                          &declined, &why);
  if (declined) {
    static mr_log_limit lim = MR_LOG_LIMIT_INIT("declined compression offers");
    srv->stats.compression_offers_declined += declined;
    mr_log_limited(&lim, MR_LOG_INFO,
                   "conn %llu (%s): %u permessage-deflate offer%s declined: %s",
                   (unsigned long long)c->id, mr_conn_remote(c), declined,
                   declined == 1 ? "" : "s", why);
  }
  if (!ok)
    return;
  if (mr_pmd_response(&a, ext, cap) < 0) {
    ext[0] = '\0';
    return;
  }
  c->deflate_bits = (uint8_t)a.server_bits;
  mr_ws_enable_deflate(&c->ws);
  srv->stats.compression_negotiated++;
}

/* Puts the 101 in front of the frames on_connect queued: it can only be
 * built once on_connect has chosen a protocol and headers, and it must
 * reach the client before them. Returns 0, or a negative code after
 * counting and logging the failure. */
static int queue_101(mr_conn *c, const mr_http_request *req,
                     const mr_conn_answer *ans, const char *ext) {
  size_t elen = strlen(ext);
  size_t cap = 256 + ans->protocol_len + strlen(ans->headers) + elen;
  mr_buf *b = mr_buf_new(cap);
  int n = b ? mr_http_build_101(req, ans->protocol, ans->protocol_len,
                                ans->headers, (char *)b->data, cap)
            : MR_ENOMEM;
  if (n > 0 && elen > 0) {
    /* The extension line is the server's own, a Sec-WebSocket-* header
     * that the builder keeps on_connect's headers from setting: it goes in
     * after them, before the blank line that ends the head (cap counted
     * it). */
    memcpy(b->data + n - 2, ext, elen);
    memcpy(b->data + n - 2 + elen, "\r\n", 2);
    n += (int)elen;
  }
  if (n > 0) {
    b->len = (size_t)n;
    n = mr_outq_push_front(&c->tx.outq, b);
  }
  mr_buf_release(b);
  if (n < 0) {
    c->srv->stats.internal_errors++;
    mr_warn("conn %llu (%s): cannot build the 101 response: %s",
            (unsigned long long)c->id, mr_conn_remote(c), mr_strerror(n));
    return n;
  }
  mr_conn__pending_add(c);
  return 0;
}

/* A connection over --max-connections-per-ip at accept is answered 429
 * once its request head is in, whatever the request: a reply sent before
 * the request could be lost to the reset that closing with unread bytes
 * causes, and over TLS there is nothing to answer on before the TLS
 * handshake. Retry-After is --handshake-timeout: by then every slot that
 * a stalled handshake holds has been freed. */
static void refuse_over_ip(mr_conn *c) {
  static mr_log_limit lim =
      MR_LOG_LIMIT_INIT("requests refused over --max-connections-per-ip");
  mr_server *srv = c->srv;
  const char *remote = mr_conn_remote(c);
  mr_ipkey key;
  char who[64];
  /* An IPv6 client is named by the /64 its slots are counted under. */
  if (mr_ipkey_from_text(remote, &key) == 0)
    mr_ipkey_format(&key, who, sizeof who);
  else
    snprintf(who, sizeof who, "%s", remote);
  srv->stats.connections_per_ip_refused++;
  mr_log_limited(&lim, MR_LOG_INFO,
                 "conn %llu (%s): refused 429: %s already holds "
                 "--max-connections-per-ip %u connections",
                 (unsigned long long)c->id, remote, who,
                 srv->cfg.max_connections_per_ip);
  char hdr[48];
  snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", srv->cfg.handshake_timeout);
  mr_conn__refuse(c, 429, "too many connections from this address", hdr);
}

/* --allow-origin: a browser says where the page that opens the socket came
 * from; an upgrade from a page of another origin is refused before Lua
 * runs. No Origin header is a client that is not a browser, allowed.
 * Returns 1 when c was refused. */
static int refuse_origin(mr_conn *c, const mr_http_request *req) {
  mr_server *srv = c->srv;
  const mr_http_header *h = mr_http_find_header(req, "Origin");
  if (!h || !srv->cfg.allow_origin[0] ||
      mr_origin_allowed(srv->cfg.allow_origin, h->value, h->value_len))
    return 0;
  static mr_log_limit lim =
      MR_LOG_LIMIT_INIT("upgrades refused for their origin");
  srv->stats.origins_refused++;
  mr_log_limited(&lim, MR_LOG_INFO,
                 "conn %llu (%s): upgrade refused 403: Origin '%.*s' is not "
                 "in --allow-origin",
                 (unsigned long long)c->id, mr_conn_remote(c),
                 (int)(h->value_len > 200 ? 200 : h->value_len), h->value);
  mr_conn__refuse(c, 403, "origin not allowed", "");
  return 1;
}

int mr_conn__over_rate(mr_conn *c, const char *action) {
  mr_server *srv = c->srv;
  uint32_t rate = srv->cfg.max_messages_per_second;
  if (!rate)
    return 0;
  uint32_t burst = srv->cfg.message_burst ? srv->cfg.message_burst : rate;
  if (mr_bucket_take(&c->rate_deficit, &c->rate_stamp, uv_now(srv->loop), rate,
                     burst))
    return 0;
  static mr_log_limit lim = MR_LOG_LIMIT_INIT("message rate closes");
  srv->stats.message_rate_closes++;
  mr_log_limited(&lim, MR_LOG_WARN,
                 "conn %llu (%s): %s: over --max-messages-per-second %u "
                 "(burst %u)",
                 (unsigned long long)c->id, mr_conn_remote(c), action, rate,
                 burst);
  return 1;
}

void mr_conn__handshake(mr_conn *c, const char *data, size_t n) {
  mr_server *srv = c->srv;
  size_t cap = srv->cfg.max_head + 1;
  mr_conn_extra *x = mr_conn__extra(c);
  if (!x || (!x->head && !(x->head = malloc(cap)))) {
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
    return;
  }
  size_t take = n < cap - x->head_len ? n : cap - x->head_len;
  memcpy(x->head + x->head_len, data, take);
  x->head_len += (uint32_t)take;

  mr_http_request req;
  int r = mr_http_parse_upgrade(x->head, x->head_len, srv->cfg.max_head, &req);
  if (r == MR_EAGAIN)
    return;
  if (c->flags & MR_CF_IP_OVER) {
    refuse_over_ip(c);
    return;
  }
  if (r == 0 && !req.is_upgrade && req.status == 404 &&
      srv->conn_events->http_enabled(srv)) {
    mr_conn__start_http(c, data + take, n - take);
    return;
  }
  if (r != 0 || !req.is_upgrade) {
    int status = r != 0 ? 400 : req.status;
    const char *why = r != 0 ? "malformed request" : req.reason;
    static mr_log_limit lim = MR_LOG_LIMIT_INIT("refused upgrades");
    srv->stats.handshakes_refused++;
    mr_log_limited(&lim, MR_LOG_INFO, "conn %llu (%s): upgrade refused %d: %s",
                   (unsigned long long)c->id, mr_conn_remote(c), status, why);
    mr_conn__refuse(c, status, why, "");
    return;
  }
  if (refuse_origin(c, &req))
    return;

  /* The connection is open for on_connect, but held: frames the handler
   * sends from on_connect wait in the queue, and the 101 goes in front of
   * them afterwards; a refusal discards them. */
  c->state = MR_CONN_OPEN;
  c->flags |= MR_CF_HOLD;
  mr_conn_answer ans;
  ans.status = 403;
  ans.body[0] = '\0';
  ans.protocol = NULL;
  ans.protocol_len = 0;
  ans.headers[0] = '\0';
  int ok = srv->conn_events->connect(srv, c, &req, &ans);
  c->flags &= ~MR_CF_HOLD;
  char ext[160] = "";
  if (ok && !(c->flags & MR_CF_DOOMED) && c->state == MR_CONN_OPEN)
    negotiate_deflate(c, &req, ext, sizeof ext);
  if (ok && !(c->flags & MR_CF_DOOMED) && c->state == MR_CONN_OPEN &&
      queue_101(c, &req, &ans, ext) != 0)
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
  if (!ok || (c->flags & MR_CF_DOOMED) || c->state != MR_CONN_OPEN) {
    refuse_after_connect(c, ok, &ans);
    return;
  }
  c->flags |= MR_CF_LUA;
  srv->stats.connections_open++;
  c->deadline = 0;
  c->last_rx = uv_now(srv->loop);
  c->next_ping = c->last_rx + (uint64_t)srv->cfg.ping_interval * 1000;
  mr_conn__pending_add(c);
  mr_debug("conn %llu (%s): open %.*s%s%.*s", (unsigned long long)c->id,
           mr_conn_remote(c), (int)req.path_len, req.path,
           ans.protocol ? " protocol " : "", (int)ans.protocol_len,
           ans.protocol ? ans.protocol : "");

  /* Bytes that came in the same packet after the head are frames. The
   * head is taken out first: req points into it, and nothing of the
   * handshake is needed once the frames run. */
  size_t extra = x->head_len - req.head_len;
  char *head = x->head;
  x->head = NULL;
  x->head_len = 0;
  mr_conn__extra_trim(c);
  if (extra > 0)
    mr_conn__feed_ws(c, (const uint8_t *)head + req.head_len, extra);
  if (take < n && c->state != MR_CONN_CLOSED)
    mr_conn__feed_ws(c, (const uint8_t *)data + take, n - take);
  free(head);
}

/* ---- reading --------------------------------------------------------------
 */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  (void)h;
  *buf = uv_buf_init((char *)readbuf, sizeof readbuf);
}

/* Hands bytes of the stream (as read, or as TLS decrypted them) to the
 * upgrade, the WebSocket session or the plain HTTP exchange. */
static void deliver(mr_conn *c, const uint8_t *p, size_t n) {
  if (c->state == MR_CONN_HANDSHAKE)
    mr_conn__handshake(c, (const char *)p, n);
  else if (c->state == MR_CONN_OPEN || c->state == MR_CONN_CLOSING)
    mr_conn__feed_ws(c, p, n);
  else if (c->state == MR_CONN_HTTP)
    mr_conn__http_read(c, (const char *)p, n);
}

/* Plaintext out of TLS; stops once the connection reads no more. */
static int on_plain(void *arg, const uint8_t *p, size_t n) {
  mr_conn *c = arg;
  deliver(c, p, n);
  return c->state == MR_CONN_CLOSED || c->closing_how == MR_CLOSING_AFTER_FLUSH;
}

/* Ends a connection whose TLS failed: the alert OpenSSL made (if any) is
 * written, then the socket closed, within the closing grace. */
static void close_after_alert(mr_conn *c) {
  c->state = MR_CONN_CLOSING;
  c->closing_how = MR_CLOSING_AFTER_FLUSH;
  c->deadline = uv_now(c->srv->loop) + MR_CONN_CLOSING_GRACE_MS;
  uv_read_stop((uv_stream_t *)&c->tcp);
  mr_conn__pending_add(c);
}

/* Failed TLS handshakes, however they fail, share one log limit. */
static mr_log_limit tls_failed_lim = MR_LOG_LIMIT_INIT("failed TLS handshakes");

/* Counts and logs a TLS handshake that failed for why. */
static void tls_handshake_failed(mr_conn *c, const char *why) {
  c->srv->stats.tls_handshake_failures++;
  mr_log_limited(&tls_failed_lim, MR_LOG_INFO,
                 "conn %llu (%s): closed: TLS handshake failed: %s",
                 (unsigned long long)c->id, mr_conn_remote(c), why);
}

/* Feeds ciphertext to c's TLS session; what it decrypts goes to deliver.
 * A plain-text client is answered 400 in plain text, a failed handshake
 * gets OpenSSL's alert; both are counted and logged. */
static void tls_read(mr_conn *c, const uint8_t *p, size_t n) {
  mr_server *srv = c->srv;
  int ready = mr_tls_ready(c->tx.tls);
  int r = mr_tls_feed(c->tx.tls, p, n, on_plain, c);
  if (c->state == MR_CONN_CLOSED)
    return;
  if (!ready && mr_tls_ready(c->tx.tls)) {
    srv->stats.tls_handshakes++;
    mr_debug("conn %llu (%s): %s", (unsigned long long)c->id, mr_conn_remote(c),
             mr_tls_version(c->tx.tls));
  }
  if (r == MR_TLS_PLAIN) {
    static mr_log_limit lim =
        MR_LOG_LIMIT_INIT("plain-text connections on the TLS port");
    srv->stats.tls_plaintext_refused++;
    mr_log_limited(&lim, MR_LOG_INFO,
                   "conn %llu (%s): refused: plain text on the TLS port "
                   "(--tls-cert): use wss:// or https://",
                   (unsigned long long)c->id, mr_conn_remote(c));
    mr_tx_drop_tls(&c->tx);
    mr_conn__refuse(c, 400, "this port speaks TLS: use wss:// or https://", "");
    return;
  }
  if (r == MR_TLS_FAILED) {
    static mr_log_limit lim = MR_LOG_LIMIT_INIT("TLS record errors");
    if (!ready) {
      tls_handshake_failed(c, mr_tls_error(c->tx.tls));
    } else {
      srv->stats.protocol_errors++;
      mr_log_limited(&lim, MR_LOG_INFO, "conn %llu (%s): closed: TLS error: %s",
                     (unsigned long long)c->id, mr_conn_remote(c),
                     mr_tls_error(c->tx.tls));
    }
    mr_conn__set_close(c, MR_CLOSE_ABNORMAL, "TLS error", 9);
    close_after_alert(c);
    return;
  }
  if (r == MR_TLS_EOF) {
    mr_conn__set_close(c, MR_CLOSE_ABNORMAL, "", 0);
    mr_conn__terminate(c);
    return;
  }
  if (!mr_tx_empty(&c->tx))
    mr_conn__pending_add(c);
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
    /* A client that gives up in the middle of the handshake usually did
     * not accept the certificate: it may close without an alert. */
    if (c->tx.tls && mr_tls_started(c->tx.tls) && !mr_tls_ready(c->tx.tls) &&
        c->state == MR_CONN_HANDSHAKE)
      tls_handshake_failed(c, "the client closed the connection in the "
                              "handshake (does it trust the certificate?)");
    mr_conn__set_close(c, MR_CLOSE_ABNORMAL, "", 0);
    mr_conn__terminate(c);
    return;
  }
  srv->stats.bytes_in += (size_t)n;
  c->last_rx = uv_now(srv->loop);
  mr_trace_read();
  if (c->tx.tls) {
    tls_read(c, (const uint8_t *)buf->base, (size_t)n);
    return;
  }
  deliver(c, (const uint8_t *)buf->base, (size_t)n);
}

/* ---- lifetime -------------------------------------------------------------
 */

static void on_closed(uv_handle_t *h) {
  mr_conn *c = h->data;
  mr_idtab_remove(&c->srv->conns, c);
  mr_tx_clear(&c->tx);
  if (c->x) {
    free(c->x->close_reason);
    free(c->x->virtual_remote);
    free(c->x);
  }
  free(c);
}

/* --max-connections-per-ip: a connection takes a slot of its address from
 * accept to close, so that half-open handshakes from one address are
 * bounded too, not only open WebSockets. One over the limit is let in
 * marked, to be answered 429 (refuse_over_ip). Virtual connections count
 * under the address they claim, so the kit and the unit tests see the
 * same limit. */
static void ip_admit(mr_conn *c, const mr_ipkey *key) {
  mr_server *srv = c->srv;
  if (!srv->cfg.max_connections_per_ip)
    return;
  mr_conn_extra *x = mr_conn__extra(c);
  int r = x ? mr_ipcount_acquire(&srv->ip_counts, key,
                                 srv->cfg.max_connections_per_ip, &x->ip)
            : MR_ENOMEM;
  if (r == MR_ETOOBIG) {
    c->flags |= MR_CF_IP_OVER;
  } else if (r != 0) {
    /* Out of memory for an entry: let it in uncounted rather than refuse
     * a client for the server's own trouble. */
    srv->stats.internal_errors++;
    mr_warn("conn %llu: cannot count its address: %s",
            (unsigned long long)c->id, mr_strerror(r));
  }
}

/* Gives back c's slot, exactly once: every way a connection ends goes
 * through terminate, and a virtual one that changes its address. */
static void ip_release(mr_conn *c) {
  if (c->x && c->x->ip) {
    mr_ipcount_release(&c->srv->ip_counts, c->x->ip);
    c->x->ip = NULL;
    mr_conn__extra_trim(c);
  }
  c->flags &= ~MR_CF_IP_OVER;
}

static void ip_admit_socket(mr_conn *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  mr_ipkey key;
  if (c->srv->cfg.max_connections_per_ip &&
      uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0 &&
      mr_ipkey_from_sockaddr((struct sockaddr *)&ss, &key) == 0)
    ip_admit(c, &key);
}

static void ip_admit_text(mr_conn *c, const char *addr) {
  mr_ipkey key;
  if (mr_ipkey_from_text(addr, &key) == 0)
    ip_admit(c, &key);
}

/* The one teardown path: leave every room first, so nothing can reach the
 * connection through a room, then tell Lua, then close the socket. The
 * memory goes in on_closed. */
void mr_conn__terminate(mr_conn *c) {
  if (c->state == MR_CONN_CLOSED)
    return;
  mr_server *srv = c->srv;
  int had_lua = c->flags & MR_CF_LUA;
  c->state = MR_CONN_CLOSED;
  pending_remove(c);
  doomed_remove(c);
  mr_rooms_leave_all(&srv->rooms, &c->member);
  if (!c->close_code)
    mr_conn__set_close(c, MR_CLOSE_ABNORMAL, "", 0);
  if (had_lua) {
    srv->stats.connections_open--;
    c->flags &= ~MR_CF_LUA;
    mr_debug("conn %llu (%s): closed %u", (unsigned long long)c->id,
             mr_conn_remote(c), c->close_code);
    size_t len;
    const char *reason = mr_conn_close_reason(c, &len);
    srv->conn_events->close(srv, c, c->close_code, reason, len);
  }
  srv->conns_unclosed--;
  ip_release(c);
  mr_ws_drop(&c->ws);
  if (c->x && c->x->http) {
    mr_httpx_free(c->x->http);
    free(c->x->http);
    c->x->http = NULL;
  }
  free_head(c);
  if (c->flags & MR_CF_VIRTUAL) {
    c->tcp.data = c;
    on_closed((uv_handle_t *)&c->tcp);
    return;
  }
  if (c->tx.tls)
    mr_tx_goodbye(&c->tx, (uv_stream_t *)&c->tcp);
  c->flags |= MR_CF_TCP_CLOSE;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

mr_conn *mr_conn_find(mr_server *srv, uint64_t id) {
  /* A closed connection stays in the table until its socket is closed, for
   * the walks; by id it is gone at once, as a stale handle must see. */
  mr_conn *c = mr_idtab_find(&srv->conns, id);
  return c && c->state != MR_CONN_CLOSED ? c : NULL;
}

static mr_conn *conn_new(mr_server *srv) {
  mr_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->srv = srv;
  c->id = ++srv->next_id;
  c->tcp.data = c;
  if (mr_idtab_add(&srv->conns, c) != 0) {
    free(c);
    return NULL;
  }
  srv->conns_unclosed++;
  return c;
}

const char *mr_conn_remote(const mr_conn *c) {
  /* Asked of the socket when needed rather than stored: it is only for logs
   * and on_connect, and 64 bytes a connection add up. */
  static char name[64];
  struct sockaddr_storage ss;
  int len = sizeof ss;
  snprintf(name, sizeof name, "%s",
           c->x && c->x->virtual_remote
               ? c->x->virtual_remote
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
  mr_conn_extra *x = mr_conn__extra(c);
  char *copy = x ? strdup(addr) : NULL;
  if (!copy) {
    mr_conn__extra_trim(c);
    return MR_ENOMEM;
  }
  free(x->virtual_remote);
  x->virtual_remote = copy;
  if (c->state == MR_CONN_HANDSHAKE) {
    ip_release(c);
    ip_admit_text(c, addr);
  }
  return 0;
}

mr_conn *mr_conn_new_virtual(mr_server *srv) {
  mr_conn *c = conn_new(srv);
  if (!c)
    return NULL;
  c->flags |= MR_CF_VIRTUAL;
  c->state = MR_CONN_HANDSHAKE;
  srv->stats.connections_accepted++;
  ip_admit_text(c, "127.0.0.1"); /* what it reports until told otherwise */
  return c;
}

void mr_conn_virtual_drained(mr_conn *c) {
  mr_outq_clear(&c->tx.outq);
  if (c->state != MR_CONN_CLOSED && c->closing_how == MR_CLOSING_AFTER_FLUSH)
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "");
}

void mr_conn_feed(mr_conn *c, const uint8_t *data, size_t len) {
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
  on_read((uv_stream_t *)&c->tcp, (ssize_t)len, &buf);
}

static void on_refused_closed(uv_handle_t *h) { free(h); }

/* Descriptors are handed out lowest first, so a client that got descriptor
 * fd means fd + 1 are open. Past the limit minus the reserve the client is
 * closed at once (it sees a clean close or a reset, never a hang), so that
 * the log, the admin port and cluster links still have descriptors. Counted
 * per connection. Returns 1 when the connection must be dropped. */
static int over_fd_reserve(mr_conn *c) {
  static mr_log_limit lim =
      MR_LOG_LIMIT_INIT("connections refused at the open-file limit");
  mr_server *srv = c->srv;
  uv_os_fd_t fd;
  if (!srv->fd_limit || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 ||
      (unsigned)fd + srv->fd_reserve < srv->fd_limit)
    return 0;
  srv->stats.connections_refused++;
  mr_log_limited(&lim, MR_LOG_WARN,
                 "connection refused: %u descriptors open, open-file limit "
                 "%u (ulimit -n) less %u kept for the admin port, cluster "
                 "links and the log",
                 (unsigned)fd + 1, srv->fd_limit, srv->fd_reserve);
  return 1;
}

void mr_conn_accept(mr_server *srv) {
  size_t open = srv->conns_unclosed;
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
    static mr_log_limit lim = MR_LOG_LIMIT_INIT("connections refused");
    srv->stats.connections_refused++;
    mr_log_limited(&lim, MR_LOG_WARN, "connection refused: %s",
                   srv->shutting_down ? "shutting down"
                                      : "--max-connections reached");
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
    mr_conn__terminate(c);
    return;
  }
  if (over_fd_reserve(c)) {
    mr_conn__terminate(c);
    return;
  }
  srv->stats.connections_accepted++;
  uv_tcp_nodelay(&c->tcp, 1);
  c->state = MR_CONN_HANDSHAKE;
  /* With TLS, the handshake timeout covers the TLS handshake too. */
  c->deadline = uv_now(srv->loop) + (uint64_t)srv->cfg.handshake_timeout * 1000;
  ip_admit_socket(c);
  if ((c->flags & MR_CF_IP_OVER) &&
      srv->cfg.handshake_timeout * 1000ull > MR_CONN_CLOSING_GRACE_MS)
    c->deadline = uv_now(srv->loop) + MR_CONN_CLOSING_GRACE_MS;
  if (srv->tls && !(c->tx.tls = mr_tls_new(srv->tls, 1))) {
    srv->stats.internal_errors++;
    mr_warn("conn %llu: cannot start TLS: out of memory",
            (unsigned long long)c->id);
    mr_conn__terminate(c);
    return;
  }
  int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (r != 0) {
    mr_warn("conn %llu: read_start failed: %s", (unsigned long long)c->id,
            uv_strerror(r));
    mr_conn__terminate(c);
  }
}

void mr_conn_sweep(mr_conn *c, uint64_t now) {
  mr_server *srv = c->srv;
  /* Virtual connections are swept too when a test asks (the kit runs no
   * sweep timer). */
  if (c->state == MR_CONN_CLOSED || (c->flags & MR_CF_DOOMED))
    return;
  if (c->state == MR_CONN_HANDSHAKE) {
    if (now >= c->deadline) {
      static mr_log_limit lim = MR_LOG_LIMIT_INIT("handshake timeouts");
      srv->stats.handshakes_timed_out++;
      mr_log_limited(&lim, MR_LOG_INFO, "conn %llu (%s): handshake timed out%s",
                     (unsigned long long)c->id, mr_conn_remote(c),
                     c->tx.tls && !mr_tls_ready(c->tx.tls)
                         ? " (TLS handshake not finished)"
                         : "");
      mr_conn__terminate(c);
    }
    return;
  }
  if (c->state == MR_CONN_CLOSING) {
    if (c->deadline && now >= c->deadline)
      mr_conn__terminate(c);
    return;
  }
  if (c->state == MR_CONN_HTTP) {
    mr_conn__http_sweep(c, now);
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
    int r = f ? mr_conn__queue_buf(c, f) : MR_ENOMEM;
    if (f)
      mr_buf_release(f);
    if (r != 0) {
      /* Not judged by a ping it never got: the next sweep tries again. */
      srv->stats.internal_errors++;
      mr_warn("conn %llu (%s): cannot queue a ping: %s",
              (unsigned long long)c->id, mr_conn_remote(c), mr_strerror(r));
      return;
    }
    c->flags |= MR_CF_PINGED;
    c->next_ping = now + (uint64_t)ping * 1000;
  }
}
