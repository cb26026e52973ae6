#include "httpconn.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"

void mr_httpx_init(mr_httpx *x) { memset(x, 0, sizeof *x); }

void mr_httpx_free(mr_httpx *x) {
  free(x->buf);
  free(x->body);
  memset(x, 0, sizeof *x);
}

/* Grows *p (holding *cap bytes) to hold at least need bytes. Returns 0 or
 * MR_ENOMEM (then *p is unchanged). */
static int grow(char **p, size_t *cap, size_t need) {
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 1024;
  while (n < need)
    n *= 2;
  char *q = realloc(*p, n);
  if (!q)
    return MR_ENOMEM;
  *p = q;
  *cap = n;
  return 0;
}

int mr_httpx_feed(mr_httpx *x, const char *data, size_t len) {
  if (grow(&x->buf, &x->cap, x->len + len) != 0)
    return MR_ENOMEM;
  memcpy(x->buf + x->len, data, len);
  x->len += len;
  return 0;
}

/* ---- the body, decoded by http_parser ------------------------------------ */

static int on_headers_complete(http_parser *p) {
  mr_httpx *x = p->data;
  x->keep_alive = http_should_keep_alive(p);
  return 0;
}

/* A chunked body has no length up front, so the limit is applied to what
 * has been decoded so far; stopping here keeps the rest from being copied. */
static int on_body(http_parser *p, const char *at, size_t len) {
  mr_httpx *x = p->data;
  if (x->body_len + len > x->max_body) {
    x->too_big = 1;
    return 1;
  }
  if (grow(&x->body, &x->body_cap, x->body_len + len) != 0)
    return 1;
  memcpy(x->body + x->body_len, at, len);
  x->body_len += len;
  return 0;
}

/* Pausing stops the parser right after this request, so the bytes of the
 * next pipelined one stay in the buffer for their own turn. */
static int on_message_complete(http_parser *p) {
  mr_httpx *x = p->data;
  x->complete = 1;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings body_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Feeds the bytes after the head to the parser and drops those it took.
 * Returns 0, or a refusal through *status and *reason. */
static int read_body(mr_httpx *x, int *status, const char **reason) {
  size_t avail = x->len - x->head_len;
  if (avail == 0 || x->complete)
    return 0;
  size_t n = http_parser_execute(&x->parser, &body_settings,
                                 x->buf + x->head_len, avail);
  enum http_errno err = HTTP_PARSER_ERRNO(&x->parser);
  if (x->too_big) {
    *status = 413;
    *reason = "request body larger than --max-body";
    return -1;
  }
  if (err != HPE_OK && err != HPE_PAUSED) {
    *status = err == HPE_CB_body ? 500 : 400;
    *reason =
        err == HPE_CB_body ? "out of memory" : http_errno_description(err);
    return -1;
  }
  memmove(x->buf + x->head_len, x->buf + x->head_len + n, avail - n);
  x->len -= n;
  if (n > 0)
    x->continue_owed = 0;
  return 0;
}

/* The head is complete and is a plain request: start the body parser on
 * it, which also reads Content-Length and Transfer-Encoding, and judge the
 * announced length before any of the body is read. */
static int start_body(mr_httpx *x, const mr_httpx_limits *lim, int *status,
                      const char **reason) {
  http_parser_init(&x->parser, HTTP_REQUEST);
  x->parser.data = x;
  x->body_len = 0;
  x->complete = 0;
  x->too_big = 0;
  x->max_body = lim->max_body;
  size_t n =
      http_parser_execute(&x->parser, &body_settings, x->buf, x->head_len);
  enum http_errno err = HTTP_PARSER_ERRNO(&x->parser);
  if ((err != HPE_OK && err != HPE_PAUSED) || n != x->head_len) {
    *status = 400;
    *reason = http_errno_description(err);
    return -1;
  }
  int chunked = (x->parser.flags & F_CHUNKED) != 0;
  uint64_t announced = x->parser.content_length;
  if (!x->complete && !chunked && announced != ULLONG_MAX &&
      announced > lim->max_body) {
    *status = 413;
    *reason = "Content-Length larger than --max-body";
    return -1;
  }
  const mr_http_header *expect = mr_http_find_header(&x->req, "Expect");
  /* RFC 9110 10.1.1: an HTTP/1.0 client cannot have meant it. */
  if (expect && x->req.http_minor >= 1) {
    if (expect->value_len != 12 ||
        strncasecmp(expect->value, "100-continue", 12) != 0) {
      *status = 417;
      *reason = "unsupported Expect";
      return -1;
    }
    x->continue_owed = !x->complete && x->len == x->head_len;
  }
  return 0;
}

int mr_httpx_next(mr_httpx *x, const mr_httpx_limits *lim, int *status,
                  const char **reason) {
  if (x->head_len == 0) {
    if (x->len == 0)
      return MR_HTTPX_AGAIN;
    int r = mr_http_parse_upgrade(x->buf, x->len, lim->max_head, &x->req);
    if (r == MR_EAGAIN)
      return MR_HTTPX_AGAIN;
    if (r != 0) {
      *status = 400;
      *reason = "malformed request";
      return MR_HTTPX_REFUSE;
    }
    if (x->req.is_upgrade)
      return MR_HTTPX_UPGRADE;
    if (x->req.status != 404) {
      /* A malformed head, one too large, or a WebSocket upgrade attempt
       * that cannot succeed: the same answer as on a fresh connection. */
      *status = x->req.status;
      *reason = x->req.reason;
      return MR_HTTPX_REFUSE;
    }
    x->head_len = x->req.head_len;
    if (start_body(x, lim, status, reason) != 0)
      return MR_HTTPX_REFUSE;
  }
  if (read_body(x, status, reason) != 0)
    return MR_HTTPX_REFUSE;
  if (x->continue_owed) {
    x->continue_owed = 0;
    return MR_HTTPX_CONTINUE;
  }
  if (!x->complete)
    return MR_HTTPX_AGAIN;
  /* The buffer may have moved while the body arrived: point the request
   * into it again. The head has not changed, so neither does the result. */
  mr_http_parse_upgrade(x->buf, x->head_len, lim->max_head, &x->req);
  return MR_HTTPX_REQUEST;
}

void mr_httpx_done(mr_httpx *x) {
  memmove(x->buf, x->buf + x->head_len, x->len - x->head_len);
  x->len -= x->head_len;
  x->head_len = 0;
  x->body_len = 0;
  x->complete = 0;
  x->continue_owed = 0;
  /* A large body's buffer is not kept for an idle keep-alive connection. */
  if (x->body_cap > 65536) {
    free(x->body);
    x->body = NULL;
    x->body_cap = 0;
  }
}

void mr_http_answer_init(mr_http_answer *ans) {
  ans->status = 500;
  ans->body = NULL;
  ans->content_type[0] = '\0';
  ans->headers[0] = '\0';
}

/* Queues len bytes copied from p. */
static int queue_copy(mr_outq *q, const char *p, size_t len) {
  mr_buf *b = mr_buf_new(len);
  if (!b)
    return MR_ENOMEM;
  memcpy(b->data, p, len);
  b->len = len;
  int r = mr_outq_push(q, b);
  mr_buf_release(b);
  return r;
}

int mr_httpx_continue(mr_outq *q) {
  return queue_copy(q, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

int mr_httpx_respond(mr_httpx *x, mr_http_answer *ans, int keep, mr_outq *q) {
  keep = keep && x->keep_alive;
  mr_buf *body = ans->body;
  ans->body = NULL;
  size_t blen = body ? body->len : 0;
  size_t cap = 256 + strlen(ans->headers) + strlen(ans->content_type);
  char *head = malloc(cap);
  int n = head ? mr_http_build_response(
                     ans->status, ans->content_type, ans->headers, blen, !keep,
                     keep && x->req.http_minor == 0, head, cap)
               : MR_ENOMEM;
  if (n == MR_ETOOBIG)
    n = MR_EINVAL;
  if (n >= 0)
    n = queue_copy(q, head, (size_t)n);
  /* HEAD gets the GET answer's headers, Content-Length included, and no
   * body (RFC 9110 9.3.2). */
  if (n >= 0 && blen && strcmp(x->req.method, "HEAD") != 0)
    n = mr_outq_push(q, body);
  free(head);
  if (body)
    mr_buf_release(body);
  if (n < 0)
    return n;
  mr_httpx_done(x);
  return keep;
}
