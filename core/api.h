/* The `moonroom.core` module: the C functions behind lua/moonroom.lua
 * (rooms, sending, broadcasts, stats, logging, the cluster's view), each
 * bound to one server. Runtime conditions return nil, "closed"; misuse
 * raises (luaL_argerror), as OpenResty and luv do. */
#ifndef MR_API_H
#define MR_API_H

#include "context.h"

typedef struct lua_State lua_State;

/* Registers the handle metatable, the gate's traceback handler and the
 * `moonroom.core` module bound to srv into L (used by the bridge and by the
 * busted kit's Lua C module). */
void mr_api_open(lua_State *L, mr_server *srv);

/* Pushes a table of srv's counters (ws.stats() without lua_kb). */
void mr_api_push_stats(lua_State *L, const mr_server *srv);

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
/* Forgets the state table of a room that lost its last local member, so
 * that ws.room_state() makes a fresh one if the room comes back. L is the
 * bridge's state: called from the event loop, or from inside one of this
 * module's functions on it (ws.leave), where pushing and popping again is
 * safe; it leaves the stack as it found it. */
void mr_api_drop_room_state(lua_State *L, const char *room, size_t len);

#endif
