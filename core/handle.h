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

typedef struct {
  uint64_t id;
  mr_server *srv; /* outlives every handle */
  int has_state;  /* conn.state was created (lazily, on first use) */
} mr_handle;

/* Creates the handle metatable and the id -> handle table in L. Methods are
 * looked up in the metatable's `methods` field, which the caller fills. */
void mr_handle_register(lua_State *L);

/* Pushes the one handle of connection c, creating it on first use. */
void mr_handle_push(lua_State *L, mr_server *srv, struct mr_conn *c);

/* Checks that argument idx is a handle (raises otherwise) and returns it. */
mr_handle *mr_handle_check(lua_State *L, int idx);

/* Resolves argument idx to its connection if that is still open (accepts
 * messages); NULL when it is closing or gone. Raises for a non-handle. */
struct mr_conn *mr_handle_open_conn(lua_State *L, int idx);

/* Forgets the handle of connection id: a later push makes a new one, and
 * the old one (if a script kept it) resolves to nothing. */
void mr_handle_forget(lua_State *L, uint64_t id);

#endif
