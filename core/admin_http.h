/* The admin server's HTTP/1.1: request heads parsed, routed to what the
 * admin answers, and response heads built.
 *
 * Pure: bytes in, bytes out, over Debian's http_parser. The admin server
 * (admin.c) owns the sockets; the unit tests call exactly what it runs. */
#ifndef MR_ADMIN_HTTP_H
#define MR_ADMIN_HTTP_H

#include <stddef.h>

enum { MR_ADMIN_GET, MR_ADMIN_HEAD, MR_ADMIN_OTHER };

/* What the admin server answers a request with: one of its pages, or an
 * error status (404, 405). */
enum {
  MR_ADMIN_METRICS = 1, /* GET /metrics */
  MR_ADMIN_HEALTHZ,     /* GET /healthz */
  MR_ADMIN_READYZ       /* GET /readyz */
};

/* A parsed request head. path points into the buffer that was parsed,
 * which must outlive this struct. */
typedef struct {
  int method;       /* MR_ADMIN_GET, MR_ADMIN_HEAD or MR_ADMIN_OTHER */
  const char *path; /* the request target up to '?' */
  size_t path_len;
  size_t head_len;    /* bytes of the head, including the final CRLFCRLF */
  int keep_alive;     /* the connection may carry another request after this */
  int status;         /* 0 to route; else 400 or 431, answered and closed */
  const char *reason; /* a static string saying why, when status is set */
} mr_admin_request;

/* Parses the request head at the start of buf (borrowed for the call; req,
 * the caller's, then points into it).
 *
 * Returns MR_EAGAIN while the head has no CRLFCRLF yet and is shorter than
 * max_head bytes; otherwise 0 with req filled. req->status is 431 for a
 * head longer than max_head, 400 for one that http_parser rejects, a bare
 * LF line ending, an HTTP version other than 1.x, or a target that does
 * not start with '/'; else 0. A request with a body (Content-Length or
 * chunked) is answered but not kept alive, since its body is not read. */
int mr_admin_parse(const char *buf, size_t len, size_t max_head,
                   mr_admin_request *req);

/* Routes a request whose status is 0: returns MR_ADMIN_METRICS,
 * MR_ADMIN_HEALTHZ or MR_ADMIN_READYZ for a GET or HEAD of /metrics,
 * /healthz or /readyz; 405 for another method on one of those paths; 404
 * for any other path. The query string is ignored. */
int mr_admin_route(const mr_admin_request *req);

/* The reason phrase for status ("Not Found"); "Unknown" for others. */
const char *mr_admin_status_text(int status);

/* Writes a response head into the caller's out (at most cap bytes,
 * NUL-terminated): the status line, Content-Type (content_type is only
 * read), Content-Length body_len, Cache-Control: no-store, Connection:
 * keep-alive or close, and for 405 "Allow: GET, HEAD". Returns its length
 * without the NUL, or MR_ETOOBIG when cap is too small. */
int mr_admin_response_head(char *out, size_t cap, int status,
                           const char *content_type, size_t body_len,
                           int keep_alive);

#endif
