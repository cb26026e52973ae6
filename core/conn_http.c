/* Plain HTTP requests on a connection (on_http): the exchange itself is
 * httpconn.c's; this is the connection's side of it. */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "conn_internal.h"
#include "error.h"
#include "httpconn.h"
#include "log.h"

/* ---- plain HTTP (httpconn.h) ---------------------------------------------
 */

static void http_end(mr_conn *c) {
  mr_httpx_free(c->x->http);
  free(c->x->http);
  c->x->http = NULL;
  mr_conn__extra_trim(c);
}

/* Calls on_http for the request that arrived whole and queues its answer.
 * Returns 1 when the connection stays for another request. */
static int http_answer(mr_conn *c) {
  mr_server *srv = c->srv;
  mr_httpx *x = c->x->http;
  mr_http_answer ans;
  mr_http_answer_init(&ans);
  /* Each request runs on_http as a message runs on_message, so it takes a
   * token from the same bucket; past the rate, 429 and close. */
  if (mr_conn__over_rate(c, "http refused 429")) {
    http_end(c);
    mr_conn__refuse(c, 429, "request rate exceeded", "Retry-After: 1\r\n");
    return 0;
  }
  srv->stats.http_requests++;
  if (srv->conn_events->http(srv, c, &x->req, x->body, x->body_len, &ans))
    srv->stats.http_errors++;
  mr_debug("conn %llu (%s): %s %.*s -> %d", (unsigned long long)c->id,
           mr_conn_remote(c), x->req.method, (int)x->req.path_len, x->req.path,
           ans.status);
  int r = mr_httpx_respond(x, &ans, !srv->shutting_down, &c->tx.outq);
  mr_conn__pending_add(c);
  if (r < 0) {
    srv->stats.internal_errors++;
    mr_warn("conn %llu (%s): cannot queue the response: %s",
            (unsigned long long)c->id, mr_conn_remote(c), mr_strerror(r));
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
    return 0;
  }
  if (r == 0) {
    http_end(c);
    c->deadline = 0; /* the closing grace, not the request's time */
    mr_conn__set_closing(c, MR_CLOSING_AFTER_FLUSH);
    c->state = MR_CONN_CLOSING;
    if (!(c->flags & MR_CF_VIRTUAL))
      uv_read_stop((uv_stream_t *)&c->tcp);
    return 0;
  }
  /* A client that does not read its answers is judged as a WebSocket
   * reader is. */
  return !mr_conn__over_backpressure(c);
}

/* Answers every whole request that is waiting, in order, then sets the
 * deadline for what comes next: the rest of a request that has begun, or
 * the next request on an idle keep-alive connection. Refusals of the
 * server's own (400, 408, 413, 417, 431) close after the answer: the rest
 * of the stream cannot be trusted to start a new request. */
static void http_run(mr_conn *c) {
  mr_server *srv = c->srv;
  mr_httpx_limits lim = {srv->cfg.max_head, srv->cfg.max_body};
  int status = 0, r = MR_HTTPX_AGAIN;
  const char *why = "";
  while (c->state == MR_CONN_HTTP && !(c->flags & MR_CF_DOOMED) &&
         (r = mr_httpx_next(c->x->http, &lim, &status, &why)) !=
             MR_HTTPX_AGAIN) {
    if (r == MR_HTTPX_CONTINUE) {
      if (mr_httpx_continue(&c->tx.outq) == 0)
        mr_conn__pending_add(c);
    } else if (r == MR_HTTPX_REFUSE) {
      static mr_log_limit refused_lim = MR_LOG_LIMIT_INIT("refused requests");
      srv->stats.http_refused++;
      mr_log_limited(&refused_lim, MR_LOG_INFO,
                     "conn %llu (%s): http refused %d: %s",
                     (unsigned long long)c->id, mr_conn_remote(c), status, why);
      http_end(c);
      mr_conn__refuse(c, status, why, "");
    } else if (r == MR_HTTPX_UPGRADE) {
      /* A WebSocket upgrade after plain requests on one connection: its
       * bytes go to the handshake as on a new connection. */
      mr_httpx *x = c->x->http;
      c->x->http = NULL; /* the side struct stays: the handshake needs it */
      c->state = MR_CONN_HANDSHAKE;
      c->deadline = uv_now(srv->loop) + srv->cfg.handshake_timeout * 1000ull;
      mr_conn__handshake(c, x->buf, x->len);
      mr_httpx_free(x);
      free(x);
    } else if (http_answer(c)) {
      c->deadline = uv_now(srv->loop) + (mr_httpx_partial(c->x->http)
                                             ? srv->cfg.request_timeout
                                             : srv->cfg.keepalive_timeout) *
                                            1000ull;
    }
  }
}

/* The first request on the connection is plain HTTP and the script answers
 * such requests: the head read so far and the rest of this read become the
 * first request of an exchange, whose time counts from the accept. */
void mr_conn__start_http(mr_conn *c, const char *rest, size_t len) {
  mr_server *srv = c->srv;
  /* The side struct exists: it holds the head read so far. */
  if (!(c->x->http = malloc(sizeof *c->x->http))) {
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
    return;
  }
  mr_httpx_init(c->x->http);
  c->state = MR_CONN_HTTP;
  uint64_t hs = srv->cfg.handshake_timeout * 1000ull;
  c->deadline = (c->deadline >= hs ? c->deadline - hs : uv_now(srv->loop)) +
                srv->cfg.request_timeout * 1000ull;
  if (mr_httpx_feed(c->x->http, c->x->head, c->x->head_len) != 0 ||
      mr_httpx_feed(c->x->http, rest, len) != 0) {
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
    return;
  }
  free(c->x->head);
  c->x->head = NULL;
  c->x->head_len = 0;
  http_run(c);
}

void mr_conn__http_read(mr_conn *c, const char *data, size_t n) {
  if (!mr_httpx_partial(c->x->http))
    c->deadline = uv_now(c->srv->loop) + c->srv->cfg.request_timeout * 1000ull;
  if (mr_httpx_feed(c->x->http, data, n) != 0)
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
  else
    http_run(c);
}

/* A request that has begun and not arrived whole in time gets 408; an idle
 * keep-alive connection is closed quietly, as its client expects it may. */
void mr_conn__http_sweep(mr_conn *c, uint64_t now) {
  mr_server *srv = c->srv;
  if (now < c->deadline)
    return;
  if (mr_httpx_partial(c->x->http)) {
    static mr_log_limit lim = MR_LOG_LIMIT_INIT("request timeouts");
    srv->stats.http_refused++;
    mr_log_limited(
        &lim, MR_LOG_INFO,
        "conn %llu (%s): http refused 408: request not complete within "
        "--request-timeout",
        (unsigned long long)c->id, mr_conn_remote(c));
    http_end(c);
    mr_conn__refuse(c, 408, "request not complete within --request-timeout",
                    "");
    return;
  }
  srv->stats.http_idle_closes++;
  mr_debug("conn %llu (%s): idle keep-alive connection closed",
           (unsigned long long)c->id, mr_conn_remote(c));
  mr_conn__terminate(c);
}
