/* The one protected gate for every call from C into Lua: handlers, the
 * reload hook and script timers (ws.after, ws.every, conn:after) all enter
 * Lua here.
 *
 * An error raised by the script is caught with its traceback, logged on one
 * line naming the script, the event and the connection, and turned into
 * MR_ELUA; the server keeps running.
 *
 * The gate is also where the Lua guards sit. --lua-memory-limit: after each
 * call the heap is measured (lua_gc's count, a field read); over the limit
 * a full collection runs, and a call that leaves the heap over the limit
 * (the one that crossed it, or, while over, one that kept 64 KiB more than
 * the heap held when last judged) is logged with the handler's script and
 * line, counted in lua_memory_limit_hits, and answered MR_ENOMEM, so that
 * its caller refuses its work. --handler-timeout: the watchdog's interrupt
 * arrives here (mr_watchdog_set_interrupt) and sets a count hook on the
 * state that is running, which raises "handler timeout" at the next
 * bytecode the interpreter runs; the outermost call removes the hook when
 * it returns and counts the timeout in handler_timeouts. */
#ifndef MR_GATE_H
#define MR_GATE_H

#include <stdint.h>

typedef struct lua_State lua_State;
struct mr_server;

/* Registers the shared traceback handler and the guards' state in L's
 * registry (owned by L, freed with it); once per state, before the first
 * mr_gate_call. The guards start off. */
void mr_gate_init(lua_State *L);

/* Turns the guards on for L as srv's configuration says, and counts their
 * hits in srv's stats; srv must outlive L. */
void mr_gate_configure(lua_State *L, struct mr_server *srv);

/* Whether L's heap is over --lua-memory-limit, as the last call left it:
 * the server refuses new upgrades and plain HTTP requests while it is. It
 * re-measures, and when still over, runs a full collection at most once a
 * second to see whether what closed connections held has been freed. */
int mr_gate_over_memory(lua_State *L);

/* Calls the function below nargs arguments on the stack; on success nres
 * results replace them. On error the message and traceback are logged as
 * "SCRIPT: EVENT (conn N)" (conn 0: none), the stack is back where it was
 * before the function was pushed, and MR_ELUA is returned. A call that ran
 * without error but left the heap over --lua-memory-limit returns
 * MR_ENOMEM with its results popped (nothing to read). */
int mr_gate_call(lua_State *L, int nargs, int nres, const char *script,
                 const char *event, uint64_t conn);

/* A message handler for lua_pcall that adds a traceback (what the gate
 * uses; for callers that need the message back rather than logged). */
int mr_gate_traceback(lua_State *L);

/* Logs "WHAT: MSG" as one error line: a log record is one line, so a
 * traceback's line breaks become " | ". */
void mr_gate_log_error(const char *what, const char *msg);

#endif
