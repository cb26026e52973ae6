/* One plain HTTP exchange after another on a connection: the bytes a client
 * sent, cut into requests (head and body, Content-Length or chunked), with
 * the limits applied, and the responses' heads built.
 *
 * Pure like http.c: bytes in, requests and response bytes out. The
 * connection (conn.c) owns an mr_httpx, feeds it what it reads, asks it for
 * the next whole request, answers, and decides about the socket; nothing
 * here touches libuv. Requests are taken one at a time and in order, so
 * several requests in one read (pipelining) are answered in order. */
#ifndef MR_HTTPCONN_H
#define MR_HTTPCONN_H

#include <http_parser.h>
#include <stddef.h>

#include "buf.h"
#include "http.h"

/* The limits one exchange is held to (the server's --max-head and
 * --max-body). */
typedef struct {
  size_t max_head;
  size_t max_body;
} mr_httpx_limits;

typedef struct mr_httpx {
  char *buf; /* received, not yet consumed: the current request's head at
                the start, then bytes the body parser has not seen yet */
  size_t len, cap;
  size_t head_len; /* 0 while the current head is incomplete */
  http_parser parser;
  char *body; /* the decoded body of the current request */
  size_t body_len, body_cap;
  size_t max_body;
  int complete;      /* the current request has arrived whole */
  int too_big;       /* its body went past max_body while it arrived */
  int keep_alive;    /* the client lets the connection stay open */
  int continue_owed; /* Expect: 100-continue, nothing of the body yet */
  mr_http_request req;
} mr_httpx;

/* How on_http answers a request. The connection provides the storage,
 * filled with the defaults (500, no body, the default type, no headers);
 * the script's answer is written into it. */
typedef struct mr_http_answer {
  int status;             /* 200..599 */
  mr_buf *body;           /* owned by the answer; NULL for an empty body */
  char content_type[256]; /* "" for text/plain; charset=utf-8 */
  /* Extra header lines, "Name: value\r\n" each (checked with
   * mr_http_check_header); "" for none. */
  char headers[MR_HTTP_MAX_EXTRA];
} mr_http_answer;

/* Fills ans with the defaults. */
void mr_http_answer_init(mr_http_answer *ans);

/* What mr_httpx_next found. */
enum {
  MR_HTTPX_AGAIN = 0, /* the next request is incomplete: feed more */
  MR_HTTPX_REQUEST,   /* a whole request: x->req, x->body, x->keep_alive */
  MR_HTTPX_UPGRADE,   /* a valid WebSocket upgrade head starts the buffer */
  MR_HTTPX_CONTINUE,  /* answer "100 Continue" now, then call again */
  MR_HTTPX_REFUSE     /* answer *status with *reason and close */
};

/* Prepares an empty exchange (nothing allocated yet). */
void mr_httpx_init(mr_httpx *x);

/* Frees what x owns; x is empty afterwards. */
void mr_httpx_free(mr_httpx *x);

/* Appends len bytes the client sent (copied). Returns 0 or MR_ENOMEM. */
int mr_httpx_feed(mr_httpx *x, const char *data, size_t len);

/* Looks for the next whole request and returns one of MR_HTTPX_*. On
 * MR_HTTPX_REQUEST, x->req (pointing into x->buf) and x->body/body_len stay
 * valid until mr_httpx_done. On MR_HTTPX_REFUSE, *status is 400 (malformed,
 * or a WebSocket upgrade attempt that cannot succeed: its own status from
 * mr_http_parse_upgrade), 413 (the body is larger than max_body: judged
 * from Content-Length before any of it is read, and while a chunked body
 * arrives), 417 (an Expect other than 100-continue) or 431 (head larger
 * than max_head), and *reason (static) says why; the exchange is then
 * finished and only good for mr_httpx_free. */
int mr_httpx_next(mr_httpx *x, const mr_httpx_limits *lim, int *status,
                  const char **reason);

/* Forgets the request just answered, keeping the bytes that follow it (the
 * next pipelined request). */
void mr_httpx_done(mr_httpx *x);

/* 1 when bytes of a request that is not whole yet are waiting. */
static inline int mr_httpx_partial(const mr_httpx *x) { return x->len > 0; }

/* Queues the answer to the current request on q: the head, built by
 * mr_http_build_response, then the body block ans holds (shared, not
 * copied) unless the request was HEAD. The connection stays open when the
 * client allows it and keep is nonzero (the server is not shutting down);
 * the head says which. Then forgets the request (mr_httpx_done). Releases
 * ans->body in every case. Returns 1 when the connection stays open, 0
 * when it is to close once q is written, or MR_ENOMEM / MR_EINVAL (a
 * status, content type or header block mr_http_build_response refuses),
 * after which nothing was queued. */
int mr_httpx_respond(mr_httpx *x, mr_http_answer *ans, int keep, mr_outq *q);

/* Queues "HTTP/1.1 100 Continue" on q (after MR_HTTPX_CONTINUE). Returns 0
 * or MR_ENOMEM. */
int mr_httpx_continue(mr_outq *q);

#endif
