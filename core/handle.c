#include "handle.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "conn.h"

/* The registry keys of the id -> handle table, of the server the handles
 * belong to, and of the shared empty table that is the environment of
 * every handle whose conn.state was never asked for: the addresses of these
 * variables, which need no string hashing on the hot path. */
static const char handles_key;
static const char server_key;
static const char no_state_key;

static mr_server *server_of(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&server_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  mr_server *srv = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return srv;
}

void mr_handle_push(lua_State *L, mr_conn *c) {
  lua_pushlightuserdata(L, (void *)&handles_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushnumber(L, (lua_Number)c->id);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    mr_handle *h = lua_newuserdata(L, sizeof *h);
    h->id = c->id;
    luaL_getmetatable(L, MR_HANDLE_MT);
    lua_setmetatable(L, -2);
    lua_pushlightuserdata(L, (void *)&no_state_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_setfenv(L, -2);
    lua_pushnumber(L, (lua_Number)c->id);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
}

mr_handle *mr_handle_check(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, MR_HANDLE_MT);
}

mr_conn *mr_handle_open_conn(lua_State *L, int idx, mr_server *srv) {
  mr_handle *h = mr_handle_check(L, idx);
  mr_conn *c = mr_conn_find(srv, h->id);
  return c && mr_conn_is_open(c) ? c : NULL;
}

static int h_index(lua_State *L) {
  mr_handle *h = mr_handle_check(L, 1);
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "id") == 0) {
    lua_pushnumber(L, (lua_Number)h->id);
    return 1;
  }
  if (strcmp(key, "state") == 0) {
    /* The userdata's environment table is the connection's `state`, made on
     * first use so that connections whose script keeps no state cost no
     * table; until then it is the shared empty table. */
    lua_getfenv(L, 1);
    lua_pushlightuserdata(L, (void *)&no_state_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    int none = lua_rawequal(L, -1, -2);
    lua_pop(L, 1);
    if (none) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setfenv(L, 1);
    }
    return 1;
  }
  if (strcmp(key, "remote_addr") == 0) {
    mr_conn *c = mr_conn_find(server_of(L), h->id);
    if (!c)
      return 0;
    lua_pushstring(L, mr_conn_remote(c));
    return 1;
  }
  if (strcmp(key, "open") == 0) {
    lua_pushboolean(L, mr_handle_open_conn(L, 1, server_of(L)) != NULL);
    return 1;
  }
  /* Methods live in the metatable's `methods` table. */
  luaL_getmetatable(L, MR_HANDLE_MT);
  lua_getfield(L, -1, "methods");
  lua_getfield(L, -1, key);
  return 1;
}

static int h_newindex(lua_State *L) {
  return luaL_error(L, "connection handles are read-only; keep your data "
                       "in conn.state");
}

static int h_tostring(lua_State *L) {
  mr_handle *h = mr_handle_check(L, 1);
  /* lua_pushfstring has no 64-bit conversion; ids grow past 2^31 on a
   * long-lived server, so format them here. */
  char buf[48];
  snprintf(buf, sizeof buf, "moonroom.conn(%llu)", (unsigned long long)h->id);
  lua_pushstring(L, buf);
  return 1;
}

void mr_handle_register(lua_State *L, mr_server *srv) {
  lua_pushlightuserdata(L, (void *)&server_key);
  lua_pushlightuserdata(L, srv);
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, (void *)&no_state_key);
  lua_newtable(L);
  lua_rawset(L, LUA_REGISTRYINDEX);
  luaL_newmetatable(L, MR_HANDLE_MT);
  lua_pushcfunction(L, h_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, h_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, h_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "moonroom.conn");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  lua_pushlightuserdata(L, (void *)&handles_key);
  lua_newtable(L);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

void mr_handle_forget(lua_State *L, uint64_t id) {
  lua_pushlightuserdata(L, (void *)&handles_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushnumber(L, (lua_Number)id);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}
