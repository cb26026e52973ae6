/* ws.track, ws.untrack and ws.presence (the cluster count is ws.count's,
 * in api.c), and the Lua side of on_presence's entries. */
#ifndef MR_API_PRESENCE_H
#define MR_API_PRESENCE_H

#include <stddef.h>

#include "context.h"
#include "presence.h"

typedef struct lua_State lua_State;

/* Registers track, untrack and presence, bound to srv, into the core
 * table at index core. */
void mr_api_presence_open(lua_State *L, mr_server *srv, int core);

/* Pushes a list of n entries: { { node = NAME, id = ID, meta = {...} },
 * ... } in the given order. */
void mr_api_push_presence(lua_State *L, const mr_presence_entry *e, size_t n);

#endif
