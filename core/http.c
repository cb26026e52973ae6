#include "http.h"

#include "error.h"

#include <http_parser.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* State shared with the http_parser callbacks while one head is parsed. */
typedef struct {
  mr_http_request *req;
  const char *url;
  size_t url_len;
  int in_value;     /* the last header callback was on_header_value */
  int too_many;     /* a header arrived after MR_HTTP_MAX_HEADERS */
  int headers_done; /* on_headers_complete fired */
} parse_state;

/* http_parser may report one element in several pieces; all pieces lie in
 * the single buffer we pass, so an element is extended to the end of the
 * newest piece rather than copied. */
static int on_url(http_parser *p, const char *at, size_t len) {
  parse_state *st = p->data;
  if (!st->url)
    st->url = at;
  st->url_len = (size_t)(at + len - st->url);
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  parse_state *st = p->data;
  mr_http_request *req = st->req;
  if (req->nheaders == 0 || st->in_value) {
    if (req->nheaders == MR_HTTP_MAX_HEADERS) {
      /* Aborting here stops the parser at once instead of scanning the
       * rest of a head we are going to refuse anyway. */
      st->too_many = 1;
      return 1;
    }
    mr_http_header *h = &req->headers[req->nheaders++];
    h->name = at;
    h->name_len = len;
    h->value = NULL;
    h->value_len = 0;
    st->in_value = 0;
    return 0;
  }
  mr_http_header *h = &req->headers[req->nheaders - 1];
  h->name_len = (size_t)(at + len - h->name);
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  parse_state *st = p->data;
  mr_http_header *h = &st->req->headers[st->req->nheaders - 1];
  if (!h->value)
    h->value = at;
  h->value_len = (size_t)(at + len - h->value);
  st->in_value = 1;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  parse_state *st = p->data;
  st->headers_done = 1;
  /* Whatever follows the head is not HTTP body but WebSocket frames (or a
   * refused request), so the parser must not try to read a body. */
  return 1;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Trims optional whitespace, which RFC 7230 allows around values and list
 * elements and which never belongs to them. */
static void trim(const char **s, size_t *len) {
  while (*len > 0 && is_ows(**s)) {
    (*s)++;
    (*len)--;
  }
  while (*len > 0 && is_ows((*s)[*len - 1]))
    (*len)--;
}

/* Returns 1 when a comma-separated token list contains token, ignoring case,
 * as Connection ("keep-alive, Upgrade") and Upgrade lists require. */
static int list_has_token(const char *s, size_t len, const char *token) {
  size_t tlen = strlen(token);
  while (len > 0) {
    const char *comma = memchr(s, ',', len);
    size_t elen = comma ? (size_t)(comma - s) : len;
    const char *e = s;
    size_t el = elen;
    trim(&e, &el);
    if (el == tlen && strncasecmp(e, token, tlen) == 0)
      return 1;
    if (!comma)
      break;
    s = comma + 1;
    len -= elen + 1;
  }
  return 0;
}

/* A field may be sent as several lines, which mean the same as one line
 * joined with commas, so every instance is searched. */
static int header_has_token(const mr_http_request *req, const char *name,
                            const char *token) {
  size_t nlen = strlen(name);
  for (size_t i = 0; i < req->nheaders; i++) {
    const mr_http_header *h = &req->headers[i];
    if (h->name_len == nlen && strncasecmp(h->name, name, nlen) == 0 &&
        list_has_token(h->value, h->value_len, token))
      return 1;
  }
  return 0;
}

static size_t count_headers(const mr_http_request *req, const char *name) {
  size_t nlen = strlen(name), n = 0;
  for (size_t i = 0; i < req->nheaders; i++)
    if (req->headers[i].name_len == nlen &&
        strncasecmp(req->headers[i].name, name, nlen) == 0)
      n++;
  return n;
}

/* The key must be base64 of exactly 16 bytes: 22 data characters and "==".
 * EVP_DecodeBlock decodes '=' as zero bits anywhere and counts them in its
 * result, so the padding is checked here and subtracted from its length. */
static int key_is_valid(const char *key, size_t len) {
  unsigned char out[24];
  if (len != 24 || key[22] != '=' || key[23] != '=' || memchr(key, '=', 22))
    return 0;
  int n = EVP_DecodeBlock(out, (const unsigned char *)key, 24);
  return n - 2 == 16;
}

/* Fills req->status and req->reason and returns 0, the result of every
 * refusal, so that the checks below read as a list. */
static int refuse(mr_http_request *req, int status, const char *reason) {
  req->is_upgrade = 0;
  req->status = status;
  req->reason = reason;
  return 0;
}

/* Runs http_parser over exactly the head and splits the request target.
 * Returns 1 when the head parsed, or 0 after refusing it through refuse(). */
static int parse_head(const char *buf, mr_http_request *req, int *method,
                      int *version_ok) {
  /* http_parser tolerates bare LF, which could end its head before our
   * CRLFCRLF and let the two disagree about where the stream starts; obs-fold
   * would put CRLF inside a value. RFC 7230 allows refusing both. */
  for (size_t i = 0; i < req->head_len; i++) {
    if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))
      return refuse(req, 400, "bare LF in request head");
    if (buf[i] == '\n' && i + 1 < req->head_len && is_ows(buf[i + 1]))
      return refuse(req, 400, "obsolete line folding in request head");
  }

  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  parse_state st = {.req = req};
  http_parser parser;
  http_parser_init(&parser, HTTP_REQUEST);
  parser.data = &st;
  http_parser_execute(&parser, &settings, buf, req->head_len);

  enum http_errno err = HTTP_PARSER_ERRNO(&parser);
  if (st.too_many)
    return refuse(req, 431, "too many header fields");
  if (err == HPE_HEADER_OVERFLOW)
    return refuse(req, 431, http_errno_description(err));
  if (err != HPE_OK)
    return refuse(req, 400, http_errno_description(err));
  if (!st.headers_done || !st.url)
    return refuse(req, 400, "incomplete request head");

  for (size_t i = 0; i < req->nheaders; i++) {
    mr_http_header *h = &req->headers[i];
    /* An empty value may get no callback; point it at the end of the name
     * so that every value is a valid (empty) span inside buf. */
    if (!h->value)
      h->value = h->name + h->name_len;
    trim(&h->value, &h->value_len);
  }

  /* Only origin-form is meaningful for a WebSocket endpoint; absolute-form
   * and "*" (the HTTP/2 preface) are refused rather than guessed at. */
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (st.url_len == 0 || st.url[0] != '/' ||
      http_parser_parse_url(st.url, st.url_len, 0, &u) != 0 ||
      !(u.field_set & (1 << UF_PATH)))
    return refuse(req, 400, "request target must be an absolute path");
  req->path = st.url + u.field_data[UF_PATH].off;
  req->path_len = u.field_data[UF_PATH].len;
  if (u.field_set & (1 << UF_QUERY)) {
    req->query = st.url + u.field_data[UF_QUERY].off;
    req->query_len = u.field_data[UF_QUERY].len;
  } else if (req->path_len < st.url_len && req->path[req->path_len] == '?') {
    /* http_parser drops an empty query; "/p?" still has one, just empty. */
    req->query = req->path + req->path_len + 1;
    req->query_len = 0;
  }

  *method = parser.method;
  req->method = http_method_str(parser.method);
  req->keep_alive = http_should_keep_alive(&parser);
  req->http_minor = parser.http_minor;
  *version_ok = parser.http_major > 1 ||
                (parser.http_major == 1 && parser.http_minor >= 1);
  return 1;
}

int mr_http_parse_upgrade(const char *buf, size_t len, size_t max_head,
                          mr_http_request *req) {
  if (!req || (!buf && len > 0))
    return MR_EINVAL;
  memset(req, 0, sizeof *req);

  /* A head that fits has its CRLFCRLF within max_head bytes, so looking
   * further would only spend time on a request already too large. */
  size_t window = len < max_head ? len : max_head;
  const char *end = window ? memmem(buf, window, "\r\n\r\n", 4) : NULL;
  if (!end) {
    if (len < max_head)
      return MR_EAGAIN;
    return refuse(req, 431, "request head too large");
  }
  req->head_len = (size_t)(end - buf) + 4;

  int method = 0, version_ok = 0;
  if (parse_head(buf, req, &method, &version_ok) == 0)
    return 0;

  const mr_http_header *upgrade = mr_http_find_header(req, "Upgrade");
  const mr_http_header *key = mr_http_find_header(req, "Sec-WebSocket-Key");
  const mr_http_header *version =
      mr_http_find_header(req, "Sec-WebSocket-Version");

  /* Anything that names an upgrade or carries a key is an attempt at one, and
   * an attempt with the wrong method deserves 405 rather than 404. */
  if (method != HTTP_GET && (upgrade || key))
    return refuse(req, 405, "WebSocket upgrade requires GET");
  if (!upgrade && !key)
    return refuse(req, 404, "not found");
  if (!version_ok)
    return refuse(req, 400, "WebSocket upgrade requires HTTP/1.1 or later");
  if (!header_has_token(req, "Upgrade", "websocket"))
    return refuse(req, 400, "missing or invalid Upgrade header");
  if (!header_has_token(req, "Connection", "upgrade"))
    return refuse(req, 400, "missing or invalid Connection header");
  if (!version)
    return refuse(req, 426, "missing Sec-WebSocket-Version");
  if (count_headers(req, "Sec-WebSocket-Version") != 1 ||
      version->value_len != 2 || memcmp(version->value, "13", 2) != 0)
    return refuse(req, 426, "unsupported Sec-WebSocket-Version");
  if (!key)
    return refuse(req, 400, "missing Sec-WebSocket-Key");
  /* Two keys would leave the accept value ambiguous. */
  if (count_headers(req, "Sec-WebSocket-Key") != 1 ||
      !key_is_valid(key->value, key->value_len))
    return refuse(req, 400, "invalid Sec-WebSocket-Key");

  req->key = key->value;
  req->key_len = key->value_len;
  req->is_upgrade = 1;
  return 0;
}

const mr_http_header *mr_http_find_header(const mr_http_request *req,
                                          const char *name) {
  size_t nlen = strlen(name);
  for (size_t i = 0; i < req->nheaders; i++) {
    const mr_http_header *h = &req->headers[i];
    if (h->name_len == nlen && strncasecmp(h->name, name, nlen) == 0)
      return h;
  }
  return NULL;
}

int mr_http_accept_key(const char *key, size_t key_len, char out[29]) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  out[0] = '\0';
  /* The streaming interface avoids concatenating key and GUID into a buffer
   * whose size would depend on the caller's key_len. */
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx)
    return MR_ENOMEM;
  int ok = EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) &&
           EVP_DigestUpdate(ctx, key, key_len) &&
           EVP_DigestUpdate(ctx, WS_GUID, sizeof WS_GUID - 1) &&
           EVP_DigestFinal_ex(ctx, digest, &dlen);
  EVP_MD_CTX_free(ctx);
  if (!ok || dlen != 20)
    return MR_ENOMEM;
  /* 20 bytes encode to exactly 28 characters, and EVP_EncodeBlock adds the
   * NUL, which is why out holds 29. */
  EVP_EncodeBlock((unsigned char *)out, digest, 20);
  return 0;
}

/* snprintf's result becomes ours: the length when it fit, else MR_ETOOBIG. */
static int fit(int n, size_t cap) {
  if (n < 0)
    return MR_EINVAL;
  if ((size_t)n >= cap)
    return MR_ETOOBIG;
  return n;
}

void mr_http_list_init(mr_http_list_iter *it, const mr_http_request *req,
                       const char *name) {
  it->req = req;
  it->name = name;
  it->header = 0;
  it->pos = 0;
}

int mr_http_list_next(mr_http_list_iter *it, const char **elem, size_t *len) {
  size_t nlen = strlen(it->name);
  for (; it->header < it->req->nheaders; it->header++, it->pos = 0) {
    const mr_http_header *h = &it->req->headers[it->header];
    if (h->name_len != nlen || strncasecmp(h->name, it->name, nlen) != 0)
      continue;
    while (it->pos < h->value_len) {
      const char *s = h->value + it->pos;
      size_t left = h->value_len - it->pos;
      const char *comma = memchr(s, ',', left);
      size_t elen = comma ? (size_t)(comma - s) : left;
      it->pos += elen + (comma ? 1 : 0);
      trim(&s, &elen);
      if (elen > 0) {
        *elem = s;
        *len = elen;
        return 1;
      }
    }
  }
  return 0;
}

/* RFC 7230 3.2.6 tchar. */
static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int name_is(const char *name, size_t len, const char *want) {
  return len == strlen(want) && strncasecmp(name, want, len) == 0;
}

static int name_starts(const char *name, size_t len, const char *prefix) {
  size_t plen = strlen(prefix);
  return len >= plen && strncasecmp(name, prefix, plen) == 0;
}

const char *mr_http_check_header(const char *name, size_t name_len,
                                 const char *value, size_t value_len) {
  if (name_len == 0)
    return "the name is empty";
  for (size_t i = 0; i < name_len; i++)
    if (!is_tchar((unsigned char)name[i]))
      return "the name is not an HTTP token";
  /* The server writes these itself: a second copy from a script would
   * contradict the handshake or the framing of the response. */
  if (name_is(name, name_len, "Upgrade") ||
      name_is(name, name_len, "Connection") ||
      name_starts(name, name_len, "Sec-WebSocket-") ||
      name_is(name, name_len, "Content-Length") ||
      name_is(name, name_len, "Content-Type") ||
      name_is(name, name_len, "Transfer-Encoding"))
    return "the server sets this header itself";
  /* Hop-by-hop headers describe one connection to a proxy, never the
   * handshake an application answers. */
  if (name_is(name, name_len, "Keep-Alive") || name_is(name, name_len, "TE") ||
      name_is(name, name_len, "Trailer") ||
      name_starts(name, name_len, "Proxy-"))
    return "it is a hop-by-hop header";
  return mr_http_check_value(value, value_len);
}

const char *mr_http_check_value(const char *value, size_t value_len) {
  for (size_t i = 0; i < value_len; i++) {
    unsigned char c = (unsigned char)value[i];
    if (c == '\r' || c == '\n')
      return "the value contains CR or LF";
    if (c == 0)
      return "the value contains NUL";
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return "the value contains a control character";
  }
  return NULL;
}

/* Returns 1 when headers is a block of "Name: value\r\n" lines that each
 * pass mr_http_check_header: the builders refuse anything else rather than
 * write a head that a script could have split. */
static int headers_ok(const char *headers) {
  const char *p = headers;
  while (*p) {
    const char *eol = strstr(p, "\r\n");
    const char *colon = memchr(p, ':', eol ? (size_t)(eol - p) : 0);
    if (!eol || !colon || colon[1] != ' ')
      return 0;
    if (mr_http_check_header(p, (size_t)(colon - p), colon + 2,
                             (size_t)(eol - colon - 2)) != NULL)
      return 0;
    p = eol + 2;
  }
  return 1;
}

/* A subprotocol is an RFC 6455 token; the one selected is always one the
 * client offered, but the builder does not rely on that to keep CR and LF
 * out of the head. */
static int protocol_ok(const char *p, size_t len) {
  if (len == 0)
    return 0;
  for (size_t i = 0; i < len; i++)
    if (!is_tchar((unsigned char)p[i]))
      return 0;
  return 1;
}

int mr_http_build_101(const mr_http_request *req, const char *protocol,
                      size_t protocol_len, const char *headers, char *out,
                      size_t cap) {
  if (!req || !req->is_upgrade || !req->key || (!out && cap > 0))
    return MR_EINVAL;
  if ((protocol && !protocol_ok(protocol, protocol_len)) ||
      (headers && !headers_ok(headers)))
    return MR_EINVAL;
  if (protocol_len > INT_MAX)
    return MR_ETOOBIG;
  char accept[29];
  int rc = mr_http_accept_key(req->key, req->key_len, accept);
  if (rc < 0)
    return rc;
  int n = snprintf(out, cap,
                   "HTTP/1.1 101 Switching Protocols\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Accept: %s\r\n"
                   "%s%.*s%s"
                   "%s"
                   "\r\n",
                   accept, protocol ? "Sec-WebSocket-Protocol: " : "",
                   protocol ? (int)protocol_len : 0, protocol ? protocol : "",
                   protocol ? "\r\n" : "", headers ? headers : "");
  return fit(n, cap);
}

const char *mr_http_status_text(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Content Too Large";
  case 415:
    return "Unsupported Media Type";
  case 417:
    return "Expectation Failed";
  case 422:
    return "Unprocessable Content";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 503:
    return "Service Unavailable";
  }
  if (status < 300)
    return "Success";
  if (status < 400)
    return "Redirection";
  return status < 500 ? "Client Error" : "Server Error";
}

int mr_http_build_response(int status, const char *content_type,
                           const char *headers, size_t body_len, int close,
                           int keep_alive_header, char *out, size_t cap) {
  /* 1xx are interim answers: a 1xx alone would leave the client waiting
   * for the final response, so only final statuses are built here. */
  if (status < 200 || status > 599 || (!out && cap > 0) ||
      (headers && !headers_ok(headers)))
    return MR_EINVAL;
  if (!content_type || !*content_type)
    content_type = "text/plain; charset=utf-8";
  if (mr_http_check_value(content_type, strlen(content_type)) != NULL)
    return MR_EINVAL;
  char length[48] = "";
  if (status != 204 && status != 304)
    snprintf(length, sizeof length, "Content-Length: %zu\r\n", body_len);
  int n =
      snprintf(out, cap,
               "HTTP/1.1 %d %s\r\n"
               "Content-Type: %s\r\n"
               "%s"
               "%s"
               "%s"
               "\r\n",
               status, mr_http_status_text(status), content_type, length,
               close ? "Connection: close\r\n"
                     : (keep_alive_header ? "Connection: keep-alive\r\n" : ""),
               headers ? headers : "");
  return fit(n, cap);
}

int mr_http_build_error(int status, const char *reason, const char *headers,
                        char *out, size_t cap) {
  /* The status line needs exactly three digits, and this builder is only for
   * refusals, never for 1xx-3xx. */
  if (status < 400 || status > 599 || (!out && cap > 0) ||
      (headers && !headers_ok(headers)))
    return MR_EINVAL;
  const char *text = mr_http_status_text(status);
  if (!reason)
    reason = text;
  const char *extra = "";
  if (status == 405)
    extra = "Allow: GET\r\n";
  else if (status == 426)
    /* RFC 6455 4.4 names the versions we speak; RFC 7231 6.5.15 requires
     * the Upgrade field on every 426. */
    extra = "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n";
  int n = snprintf(out, cap,
                   "HTTP/1.1 %d %s\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\n"
                   "Connection: close\r\n"
                   "%s"
                   "%s"
                   "\r\n"
                   "%s\n",
                   status, text, strlen(reason) + 1, extra,
                   headers ? headers : "", reason);
  return fit(n, cap);
}
