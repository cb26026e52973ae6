/* Connection handles: how Lua refers to a connection.
 *
 * Lua never sees a connection pointer. A handle is a userdata holding the
 * connection id, resolved through the server's id index on every use, so a
 * handle kept after close answers nil, "closed" instead of reaching freed
 * memory. Each connection has one handle (kept in a registry table by id)
 * so that handles compare equal and work as table keys. */
#ifndef MR_HANDLE_H
#define MR_HANDLE_H

#include <stdint.h>

#include "context.h"

typedef struct lua_State lua_State;
struct mr_conn;

#define MR_HANDLE_MT "moonroom.conn"

/* A handle is its connection's id and nothing else: every connection that
 * Lua has seen holds one (72 bytes with LuaJIT's userdata header), so the
 * server (one per Lua state) is kept in the registry instead, and whether
 * conn.state exists is told by the handle's environment table. */
typedef struct {
  uint64_t id;
} mr_handle;

/* Creates the handle metatable and the id -> handle table in L, whose
 * handles belong to srv (which outlives them). Methods are looked up in the
 * metatable's `methods` field, which the caller fills. */
void mr_handle_register(lua_State *L, mr_server *srv);

/* Pushes the one handle of connection c, creating it on first use. */
void mr_handle_push(lua_State *L, struct mr_conn *c);

/* Checks that argument idx is a handle (raises otherwise) and returns it. */
mr_handle *mr_handle_check(lua_State *L, int idx);

/* Resolves argument idx to its connection on srv if that is still open
 * (accepts messages); NULL when it is closing or gone. Raises for a
 * non-handle. The caller passes the server it is bound to (an upvalue), so
 * the hot path of ws.send and friends makes no registry lookup for it. */
struct mr_conn *mr_handle_open_conn(lua_State *L, int idx, mr_server *srv);

/* Forgets the handle of connection id: a later push makes a new one, and
 * the old one (if a script kept it) resolves to nothing. */
void mr_handle_forget(lua_State *L, uint64_t id);

#endif
