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

/* Forgets the state table of a room that lost its last local member, so
 * that ws.room_state() makes a fresh one if the room comes back. L is the
 * bridge's state: called from the event loop, or from inside one of this
 * module's functions on it (ws.leave), where pushing and popping again is
 * safe; it leaves the stack as it found it. */
void mr_api_drop_room_state(lua_State *L, const char *room, size_t len);

#endif
