/* on_connect's answer: what the handler returned, read and checked into an
 * mr_conn_answer for the connection to build its response from.
 *
 *   return [true [, { protocol = P, headers = H }]]   accept
 *   return false [, status [, body [, headers]]]       refuse
 *
 * P must be one of the subprotocols the request offered; H maps header
 * names to a string or a list of strings and every line must pass
 * mr_http_check_header; a status is an integer from 400 to 599. Anything
 * else raises an error naming the problem, so the gate logs and counts it
 * as the handler error it is. */
#ifndef MR_ANSWER_H
#define MR_ANSWER_H

#include "conn.h"
#include "http.h"

typedef struct lua_State lua_State;

/* What mr_answer_call shares with its caller: the request on_connect saw
 * (borrowed), where the answer goes (the caller's, filled with the
 * defaults), and whether on_connect accepted. */
typedef struct {
  const mr_http_request *req;
  mr_conn_answer *ans;
  int accept;
} mr_answer_ctx;

/* A lua_CFunction for the gate: called with (ctx as light userdata,
 * on_connect, conn, req), it calls on_connect and reads its results into
 * ctx. The protocol it selects points into the request's buffer. Raises
 * (through the gate's protected call) for a wrong result; ctx->ans may
 * then be half written, and the caller resets it. */
int mr_answer_call(lua_State *L);

/* What mr_answer_http_call shares with its caller: where on_http's answer
 * goes (the caller's, filled with the defaults). */
typedef struct {
  mr_http_answer *ans;
} mr_http_answer_ctx;

/* A lua_CFunction for the gate: called with (ctx as light userdata,
 * on_http, req), it calls on_http and reads `return status, body
 * [, headers]` into ctx->ans: status an integer from 200 to 599, body a
 * string (empty for 204 and 304), headers as on_connect's, where
 * Content-Type is allowed too and goes to ans->content_type. The body is
 * copied once into a block ans then owns. Raises (through the gate's
 * protected call) for a wrong result; the caller then releases any body
 * and resets ans. */
int mr_answer_http_call(lua_State *L);

#endif
