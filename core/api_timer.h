/* Script timers (ws.after, ws.every, conn:after): registration, and what
 * the bridge and the server call to run and cancel them. */
#ifndef MR_API_TIMER_H
#define MR_API_TIMER_H

#include <stddef.h>
#include <stdint.h>

#include "context.h"

typedef struct lua_State lua_State;

/* Registers after and every into the core table at index core, the after
 * method into the handle methods table at index methods, the timer handle
 * metatable and the registry tables behind them. */
void mr_api_timer_open(lua_State *L, mr_server *srv, int core, int methods);

/* Runs every timer that is due at now (loop time, ms) and was pending when
 * the run began, in due order (ties in the order they were scheduled), each
 * through the gate with script naming it in logs. What the callbacks
 * schedule, even for now, waits for the next run. A repeating timer is
 * re-armed before its call; one that raises is stopped. Returns how many
 * callbacks ran. */
int mr_api_run_timers(lua_State *L, mr_server *srv, uint64_t now,
                      const char *script);

/* Cancels every timer of connection conn (conn:after): it is closing. */
void mr_api_cancel_conn_timers(lua_State *L, mr_server *srv, uint64_t conn);

/* Cancels every timer whose id is first or later: what a script version
 * scheduled while a reload that failed was loading it. Returns how many. */
size_t mr_api_cancel_timers_since(lua_State *L, mr_server *srv, uint64_t first);

#endif
