#include "admin_http.h"

#include <http_parser.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

/* What the http_parser callbacks collect while one head is parsed. */
typedef struct {
  const char *url; /* first byte of the target; its pieces are contiguous */
  size_t url_len;
  int complete; /* on_headers_complete ran */
} head_state;

static int on_url(http_parser *p, const char *at, size_t len) {
  head_state *st = p->data;
  if (!st->url)
    st->url = at;
  st->url_len = (size_t)(at + len - st->url);
  return 0;
}

static int on_headers_complete(http_parser *p) {
  ((head_state *)p->data)->complete = 1;
  return 0;
}

static int refuse(mr_admin_request *req, int status, const char *why) {
  req->status = status;
  req->reason = why;
  req->keep_alive = 0;
  return 0;
}

/* Finds the end of the head: the offset just past the first CRLFCRLF, or 0
 * when there is none in the first len bytes. */
static size_t head_end(const char *buf, size_t len) {
  for (size_t i = 3; i < len; i++)
    if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' &&
        buf[i - 3] == '\r')
      return i + 1;
  return 0;
}

int mr_admin_parse(const char *buf, size_t len, size_t max_head,
                   mr_admin_request *req) {
  if (!req || (!buf && len > 0))
    return MR_EINVAL;
  memset(req, 0, sizeof *req);
  req->method = MR_ADMIN_OTHER;
  size_t end = head_end(buf, len < max_head ? len : max_head);
  if (!end) {
    if (len < max_head)
      return MR_EAGAIN;
    return refuse(req, 431, "request head too large");
  }
  req->head_len = end;
  /* http_parser accepts a bare LF as a line ending, which could make it end
   * the head somewhere other than the CRLFCRLF found above. */
  for (size_t i = 0; i < end; i++)
    if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
      return refuse(req, 400, "bare LF in the request head");
  head_state st = {0};
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_url = on_url;
  settings.on_headers_complete = on_headers_complete;
  http_parser parser;
  http_parser_init(&parser, HTTP_REQUEST);
  parser.data = &st;
  http_parser_execute(&parser, &settings, buf, end);
  if (HTTP_PARSER_ERRNO(&parser) != HPE_OK || !st.complete)
    return refuse(req, 400, "malformed request head");
  if (parser.http_major != 1)
    return refuse(req, 400, "only HTTP/1.x is served");
  if (!st.url || st.url_len == 0 || st.url[0] != '/')
    return refuse(req, 400, "the request target must start with '/'");
  req->method = parser.method == HTTP_GET    ? MR_ADMIN_GET
                : parser.method == HTTP_HEAD ? MR_ADMIN_HEAD
                                             : MR_ADMIN_OTHER;
  req->path = st.url;
  const char *q = memchr(st.url, '?', st.url_len);
  req->path_len = q ? (size_t)(q - st.url) : st.url_len;
  /* A body is not read, so the bytes after the head would be taken for the
   * next request: such a connection is answered and closed. */
  int has_body =
      (parser.flags & F_CHUNKED) ||
      (parser.content_length > 0 && parser.content_length != (uint64_t)-1);
  req->keep_alive = http_should_keep_alive(&parser) && !has_body;
  return 0;
}

static int path_is(const mr_admin_request *req, const char *path) {
  return req->path_len == strlen(path) &&
         memcmp(req->path, path, req->path_len) == 0;
}

int mr_admin_route(const mr_admin_request *req) {
  int page = path_is(req, "/metrics")   ? MR_ADMIN_METRICS
             : path_is(req, "/healthz") ? MR_ADMIN_HEALTHZ
             : path_is(req, "/readyz")  ? MR_ADMIN_READYZ
                                        : 0;
  if (!page)
    return 404;
  if (req->method == MR_ADMIN_OTHER)
    return 405;
  return page;
}

const char *mr_admin_status_text(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 431:
    return "Request Header Fields Too Large";
  case 503:
    return "Service Unavailable";
  }
  return "Unknown";
}

int mr_admin_response_head(char *out, size_t cap, int status,
                           const char *content_type, size_t body_len,
                           int keep_alive) {
  int n = snprintf(out, cap,
                   "HTTP/1.1 %d %s\r\n"
                   "Content-Type: %s\r\n"
                   "Content-Length: %zu\r\n"
                   "Cache-Control: no-store\r\n"
                   "%s"
                   "Connection: %s\r\n"
                   "\r\n",
                   status, mr_admin_status_text(status), content_type, body_len,
                   status == 405 ? "Allow: GET, HEAD\r\n" : "",
                   keep_alive ? "keep-alive" : "close");
  if (n < 0 || (size_t)n >= cap)
    return MR_ETOOBIG;
  return n;
}
