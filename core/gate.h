/* The one protected gate for every call from C into Lua: handlers, the
 * reload hook and script timers (ws.after, ws.every, conn:after) all enter
 * Lua here.
 *
 * An error raised by the script is caught with its traceback, logged on one
 * line naming the script, the event and the connection, and turned into
 * MR_ELUA; the server keeps running. */
#ifndef MR_GATE_H
#define MR_GATE_H

#include <stdint.h>

typedef struct lua_State lua_State;

/* Registers the shared traceback handler in L's registry; once per state,
 * before the first mr_gate_call. */
void mr_gate_init(lua_State *L);

/* Calls the function below nargs arguments on the stack; on success nres
 * results replace them. On error the message and traceback are logged as
 * "SCRIPT: EVENT (conn N)" (conn 0: none), the stack is back where it was
 * before the function was pushed, and MR_ELUA is returned. */
int mr_gate_call(lua_State *L, int nargs, int nres, const char *script,
                 const char *event, uint64_t conn);

/* A message handler for lua_pcall that adds a traceback (what the gate
 * uses; for callers that need the message back rather than logged). */
int mr_gate_traceback(lua_State *L);

/* Logs "WHAT: MSG" as one error line: a log record is one line, so a
 * traceback's line breaks become " | ". */
void mr_gate_log_error(const char *what, const char *msg);

#endif
