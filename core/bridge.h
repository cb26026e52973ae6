/* The Lua bridge: one lua_State with the `moonroom` module (api.c) and the
 * handler script (script.c), and the events that enter it: connect,
 * message, close, each through the one protected gate (gate.c). Lua sees
 * connections only as handles holding an id (handle.c). */
#ifndef MR_BRIDGE_H
#define MR_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "presence.h"

struct mr_server;
struct mr_conn;
struct mr_conn_answer;
struct mr_http_answer;
typedef struct mr_bridge mr_bridge;
typedef struct lua_State lua_State;

/* Creates the Lua state and loads the handler script. On failure returns
 * NULL and writes a message naming the file and line into err. */
mr_bridge *mr_bridge_new(struct mr_server *srv, const char *script, char *err,
                         size_t errlen);

void mr_bridge_free(mr_bridge *b);

/* Reloads the script (see mr_script_reload) and counts the outcome.
 * Returns 0 or MR_ELUA with err saying why. Called by reload.c, the one
 * place that decides to reload and logs it. */
int mr_bridge_reload(mr_bridge *b, char *err, size_t errlen);

/* Runs on_connect with req (req.protocols lists the offered subprotocols)
 * and reads its results into the caller's ans: the protocol it selected and
 * the headers it added to the 101, or a refusal's status, body and headers.
 * Returns 1 to accept, 0 to refuse. A handler error, and results that are
 * wrong (a protocol the client did not offer, a header that is not allowed,
 * a status outside 400..599), are logged as handler errors and refuse with
 * 500. */
int mr_bridge_on_connect(mr_bridge *b, struct mr_conn *c,
                         const mr_http_request *req,
                         struct mr_conn_answer *ans);

/* Runs on_message. Returns 0, or MR_ELUA when the handler raised (the caller
 * closes the connection with 1011). */
int mr_bridge_on_message(mr_bridge *b, struct mr_conn *c, const uint8_t *msg,
                         size_t len, int binary);

/* Cancels the connection's timers, runs on_close and forgets its handle. */
void mr_bridge_on_close(mr_bridge *b, struct mr_conn *c, unsigned code,
                        const char *reason, size_t len);

/* Forgets a handle that never became a connection (refused upgrade), and
 * cancels the timers on_connect gave it. */
void mr_bridge_forget(mr_bridge *b, struct mr_conn *c);

/* Runs the timers due at now (loop time, ms): see mr_api_run_timers.
 * Returns how many callbacks ran. */
int mr_bridge_run_timers(mr_bridge *b, uint64_t now);

/* 1 when the running script defines on_http. */
int mr_bridge_has_http(const mr_bridge *b);

/* Runs on_http(req) for a whole plain HTTP request (req.method and
 * req.body besides what on_connect's req holds) and reads its results,
 * status, body [, headers], into the caller's ans (see mr_answer_http_call);
 * the body block ans then holds is the caller's to release. Returns 0, or
 * MR_ELUA when the handler raised or returned a wrong result: that is
 * logged and counted as a handler error, and ans is a bare 500. */
int mr_bridge_on_http(mr_bridge *b, struct mr_conn *c,
                      const mr_http_request *req, const char *body,
                      size_t body_len, struct mr_http_answer *ans);

/* A short description of the running script version (for logs). */
const char *mr_bridge_version(const mr_bridge *b);

/* The room lost its last local member: its ws.room_state() table goes. */
void mr_bridge_on_room_gone(mr_bridge *b, const char *room, size_t len);

/* The bytes the Lua state has allocated now (LUA_GCCOUNT and
 * LUA_GCCOUNTB), for /metrics; 0 without a bridge. */
size_t mr_bridge_lua_bytes(const mr_bridge *b);

/* One batch of presence changes in room (presence.h): calls on_presence
 * (room, joins, leaves) through the gate, when the script has it. */
void mr_bridge_on_presence(mr_bridge *b, const char *room, size_t len,
                           const mr_presence_entry *joins, size_t njoins,
                           const mr_presence_entry *leaves, size_t nleaves);

#endif
