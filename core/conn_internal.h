/* What the files of the connection module share (conn.c: a connection's
 * life, its queue and close; conn_ws.c: its WebSocket session; conn_http.c:
 * plain HTTP requests on it). Not for other modules: they use conn.h. The
 * double underscore marks these as the module's own, as libuv's uv__ does. */
#ifndef MR_CONN_INTERNAL_H
#define MR_CONN_INTERNAL_H

#include "conn.h"

/* How long a closing connection may take to answer our close frame or to
 * drain its queue before the socket is simply closed. */
#define MR_CONN_CLOSING_GRACE_MS 2000

/* conn.c: the connection's queue and life. */

/* c's side struct, made when missing; NULL when out of memory. */
mr_conn_extra *mr_conn__extra(mr_conn *c);
/* Frees c's side struct once nothing in it is in use. */
void mr_conn__extra_trim(mr_conn *c);

/* Puts c on the server's list of connections with bytes to write. */
void mr_conn__pending_add(mr_conn *c);
/* Records the first reason to close (code, reason), what on_close hears. */
void mr_conn__set_close(mr_conn *c, unsigned code, const char *reason,
                        size_t len);
/* Queues a shared block (c takes its own reference) or a copy of bytes;
 * returns 0 or MR_ENOMEM. */
int mr_conn__queue_buf(mr_conn *c, mr_buf *b);
int mr_conn__queue_bytes(mr_conn *c, const void *p, size_t len);
/* Judges what already waits against --max-backpressure (after trying to
 * write); returns 1 when c is over it, and dooms c. */
int mr_conn__over_backpressure(mr_conn *c);
/* The one teardown path: leave rooms, tell the bridge, close the socket. */
void mr_conn__terminate(mr_conn *c);
/* Answers an HTTP error (status, reason, extra header lines) and closes
 * once it is written. */
void mr_conn__refuse(mr_conn *c, int status, const char *reason,
                     const char *headers);
/* Takes a token from c's --max-messages-per-second bucket; returns 1 when
 * it has none (counted, and logged with action, what the caller then does
 * to c), 0 otherwise or when the limit is off. */
int mr_conn__over_rate(mr_conn *c, const char *action);
/* conn_ws.c: the WebSocket session. */

/* Feeds bytes the socket read to c's session. */
void mr_conn__feed_ws(mr_conn *c, const uint8_t *p, size_t n);
/* Moves c to closing: how (MR_CLOSING_*), with a deadline. */
void mr_conn__set_closing(mr_conn *c, int how);
/* conn_http.c: plain HTTP requests (on_http). */

/* Feeds bytes the socket read to c's plain HTTP exchange. */
void mr_conn__http_read(mr_conn *c, const char *data, size_t n);
/* The sweep's check of a plain HTTP connection's deadlines. */
void mr_conn__http_sweep(mr_conn *c, uint64_t now);
/* conn.c again: the upgrade request (or the first plain request). */
void mr_conn__handshake(mr_conn *c, const char *data, size_t n);
/* Turns c into a plain HTTP connection, rest being what followed the head. */
void mr_conn__start_http(mr_conn *c, const char *rest, size_t len);

#endif
