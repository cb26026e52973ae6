/* HTTP/1.1 WebSocket upgrade: parse a request head, build the responses.
 *
 * Pure: bytes in, bytes out. Nothing here touches sockets or libuv, so the
 * unit tests (and fuzzers) call exactly what the server runs. */
#ifndef MR_HTTP_H
#define MR_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define MR_HTTP_MAX_HEADERS 64

typedef struct {
  const char *name; /* points into the caller's buffer; not NUL-terminated */
  size_t name_len;
  const char *value; /* leading/trailing whitespace trimmed */
  size_t value_len;
} mr_http_header;

/* A parsed upgrade request. Every pointer points into the buffer that was
 * passed to mr_http_parse_upgrade, which must outlive this struct. */
typedef struct {
  const char *path; /* the request target up to '?' */
  size_t path_len;
  const char *query; /* after '?', without it; NULL when there is none */
  size_t query_len;
  const char *key; /* Sec-WebSocket-Key value */
  size_t key_len;
  size_t head_len;    /* bytes of the head, including the final CRLFCRLF */
  int is_upgrade;     /* 1 for a valid WebSocket upgrade */
  int status;         /* when not an upgrade: 400, 404, 405, 426 or 431 */
  const char *method; /* "GET", "POST", ... (static); NULL when unparsed */
  int keep_alive;     /* the client lets the connection stay open after the
                         response (HTTP/1.1 without Connection: close, or
                         HTTP/1.0 with Connection: keep-alive) */
  int http_minor;     /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
  const char *reason; /* static string explaining status, for logs and body */
  size_t nheaders;
  mr_http_header headers[MR_HTTP_MAX_HEADERS];
} mr_http_request;

/* Parses the request head at the start of buf.
 *
 * Borrows buf for the call and fills the caller-owned req, whose pointers
 * then point into buf (nothing is allocated or copied).
 *
 * Returns MR_EAGAIN while the head is incomplete (no CRLFCRLF yet) and
 * shorter than max_head, MR_EINVAL when req is NULL (or buf is NULL with
 * len > 0); otherwise returns 0 and fills req. On 0, either
 * req->is_upgrade is 1 (a valid RFC 6455 upgrade: GET, HTTP/1.1,
 * Upgrade: websocket, Connection containing the token "upgrade",
 * Sec-WebSocket-Key that is base64 of 16 bytes, Sec-WebSocket-Version: 13),
 * or req->status and req->reason say why not:
 *   431 the head is longer than max_head bytes or has too many headers;
 *   400 malformed request (http_parser error, bare LF, obs-fold, a target
 *       that does not start with '/'), HTTP/1.0, or a missing/invalid
 *       Upgrade, Connection or key (also a repeated key);
 *   405 an upgrade attempt (an Upgrade or Sec-WebSocket-Key header is
 *       present) with a method other than GET;
 *   426 Sec-WebSocket-Version missing, repeated or not 13;
 *   404 a well-formed plain HTTP request that is not an upgrade at all
 *       (neither Upgrade nor Sec-WebSocket-Key), whatever its method.
 * head_len is set whenever the CRLFCRLF was found (also on refusals), and
 * path/query are set whenever the target could be split.
 * Bytes after head_len belong to the WebSocket stream and are not looked at.
 * The result does not depend on how the input was split across calls. */
int mr_http_parse_upgrade(const char *buf, size_t len, size_t max_head,
                          mr_http_request *req);

/* Finds the first header by case-insensitive name; returns NULL when absent.
 * The result points into req, which keeps owning it. */
const mr_http_header *mr_http_find_header(const mr_http_request *req,
                                          const char *name);

/* Computes Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)).
 * Writes 28 characters and a NUL into the caller's out, which must hold 29
 * bytes. Returns 0, or MR_ENOMEM (out is then "") when OpenSSL could not
 * compute the digest, which in practice means it could not allocate. */
int mr_http_accept_key(const char *key, size_t key_len, char out[29]);

/* Walks the elements of a comma-separated list header (such as
 * Sec-WebSocket-Protocol) across every line of that header, in order. */
typedef struct {
  const mr_http_request *req;
  const char *name;
  size_t header; /* index of the header line being walked */
  size_t pos;    /* offset of the next element in that line's value */
} mr_http_list_iter;

/* Starts a walk over the header called name (case-insensitive) in req. Both
 * are borrowed and must outlive the walk. */
void mr_http_list_init(mr_http_list_iter *it, const mr_http_request *req,
                       const char *name);

/* Finds the next non-empty element, with optional whitespace trimmed (RFC
 * 7230 7: empty elements are allowed and mean nothing). Returns 1 and sets
 * elem (pointing into the request's buffer) and len, or 0 at the end. */
int mr_http_list_next(mr_http_list_iter *it, const char **elem, size_t *len);

/* The largest block of extra header lines a handshake response takes. */
#define MR_HTTP_MAX_EXTRA 4096

/* Checks that "name: value" may be added to a handshake response (the 101
 * or a refusal). Returns NULL when it may, or a static string saying why
 * not: the name is not an RFC 7230 token; the value holds CR, LF, NUL or
 * another control character (which would split or end the head); or the
 * server owns the header (Upgrade, Connection, Sec-WebSocket-*,
 * Content-Length, Content-Type, Transfer-Encoding) or it is hop-by-hop
 * (Keep-Alive, TE, Trailer, Proxy-*). Both spans are only read. */
const char *mr_http_check_header(const char *name, size_t name_len,
                                 const char *value, size_t value_len);

/* Checks a header value alone, as mr_http_check_header does: returns NULL
 * when it may be sent, or a static string saying why not (CR, LF, NUL or
 * another control character). The span is only read. */
const char *mr_http_check_value(const char *value, size_t value_len);

/* The reason phrase for a status ("OK", "Not Found"); static. */
const char *mr_http_status_text(int status);

/* Writes the head of a plain HTTP response into the caller's out (at most
 * cap bytes, NUL-terminated): the status line for status (200..599 except
 * 101), Content-Type (content_type, or "text/plain; charset=utf-8" when
 * NULL or ""), Content-Length: body_len (left out for 204 and 304, which
 * carry no body), "Connection: close" when close is nonzero, or
 * "Connection: keep-alive" when keep_alive_header is nonzero (an HTTP/1.0
 * client that asked for it), then headers (extra lines as for
 * mr_http_build_101, NULL or "" for none) and the blank line. The body is
 * not written: the caller sends it after the head, or not at all for HEAD.
 * Returns the length without the NUL, MR_ETOOBIG when cap is too small, or
 * MR_EINVAL for a status out of range, a content type with control
 * characters, or malformed headers. */
int mr_http_build_response(int status, const char *content_type,
                           const char *headers, size_t body_len, int close,
                           int keep_alive_header, char *out, size_t cap);

/* Writes the 101 Switching Protocols response for req into the caller's out
 * (at most cap bytes, NUL-terminated). protocol (protocol_len bytes, only
 * read) is the selected subprotocol, sent as Sec-WebSocket-Protocol; NULL
 * selects none. headers (only read; NULL or "" for none) are extra lines,
 * each "Name: value\r\n" and each passing mr_http_check_header. Returns the
 * length without the NUL, MR_ETOOBIG when cap is too small, MR_EINVAL when
 * req is not a valid upgrade or protocol or headers are malformed, or
 * MR_ENOMEM from mr_http_accept_key. */
int mr_http_build_101(const mr_http_request *req, const char *protocol,
                      size_t protocol_len, const char *headers, char *out,
                      size_t cap);

/* Writes a complete error response ("HTTP/1.1 <status> <text>", a
 * text/plain body of reason plus newline, Content-Length, Connection: close,
 * for 405 "Allow: GET", and for 426 "Sec-WebSocket-Version: 13" and
 * "Upgrade: websocket") into the caller's out, NUL-terminated. reason is
 * only read; NULL means the status text. headers are extra lines as for
 * mr_http_build_101 (NULL or "" for none). Returns the length without the
 * NUL, MR_ETOOBIG when cap is too small, or MR_EINVAL for a status outside
 * 400..599 or malformed headers. */
int mr_http_build_error(int status, const char *reason, const char *headers,
                        char *out, size_t cap);

#endif
