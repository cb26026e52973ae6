#include "bridge.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "conn.h"
#include "error.h"
#include "gate.h"
#include "handle.h"
#include "query.h"
#include "script.h"

/* The public `moonroom` module is Lua (lua/moonroom.lua) compiled into the
 * binary at build time; it wraps the C functions of api.c, registered as
 * `moonroom.core`. */
#include "moonroom_lua.h"

struct mr_bridge {
  lua_State *L;
  mr_server *srv;
  mr_script s;
};

static int load_facade(lua_State *L) {
  if (luaL_loadbuffer(L, (const char *)luaJIT_BC_moonroom,
                      luaJIT_BC_moonroom_SIZE, "=moonroom") != 0)
    return lua_error(L);
  lua_call(L, 0, 1);
  return 1;
}

mr_bridge *mr_bridge_new(mr_server *srv, const char *script, char *err,
                         size_t errlen) {
  mr_bridge *b = calloc(1, sizeof *b);
  lua_State *L = b ? luaL_newstate() : NULL;
  if (!L) {
    snprintf(err, errlen, "%s",
             b ? "cannot create a Lua state" : "out of memory");
    free(b);
    return NULL;
  }
  b->srv = srv;
  b->L = L;
  mr_script_init(&b->s, L);
  luaL_openlibs(L);
  mr_api_open(L, srv);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, load_facade);
  lua_setfield(L, -2, "moonroom");
  lua_pop(L, 1);
  /* Modules next to the script are found first, then the project's lua/. */
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", script);
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  else
    strcpy(dir, ".");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s", dir, dir,
                  MOONROOM_LUA_DIR, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);

  srv->bridge = b;
  if (mr_script_load(&b->s, script, err, errlen) != 0) {
    mr_bridge_free(b);
    srv->bridge = NULL;
    return NULL;
  }
  return b;
}

void mr_bridge_free(mr_bridge *b) {
  if (!b)
    return;
  if (b->L)
    lua_close(b->L);
  free(b);
}

const char *mr_bridge_version(const mr_bridge *b) {
  return b ? b->s.version : "no script";
}

int mr_bridge_reload(mr_bridge *b, char *err, size_t errlen) {
  if (mr_script_reload(&b->s, err, errlen) != 0) {
    b->srv->stats.reload_failures++;
    return MR_ELUA;
  }
  b->srv->stats.reloads++;
  return 0;
}

/* ---- events -----------------------------------------------------------------
 */

static void push_query(lua_State *L, const char *q, size_t len) {
  lua_newtable(L);
  if (!q)
    return;
  mr_query_iter it;
  mr_query_init(&it, q, len);
  char key[1024], val[4096];
  size_t klen, vlen;
  while (mr_query_next(&it, key, sizeof key, &klen, val, sizeof val, &vlen)) {
    lua_pushlstring(L, key, klen);
    lua_pushlstring(L, val, vlen);
    lua_rawset(L, -3);
  }
}

static void push_request(lua_State *L, mr_conn *c, const mr_http_request *req) {
  lua_createtable(L, 0, 6);
  lua_pushlstring(L, req->path, req->path_len);
  lua_setfield(L, -2, "path");
  push_query(L, req->query, req->query_len);
  lua_setfield(L, -2, "query");
  if (req->query)
    lua_pushlstring(L, req->query, req->query_len);
  else
    lua_pushliteral(L, "");
  lua_setfield(L, -2, "query_string");
  lua_createtable(L, 0, (int)req->nheaders);
  for (size_t i = 0; i < req->nheaders; i++) {
    const mr_http_header *h = &req->headers[i];
    char name[256];
    size_t n = h->name_len < sizeof name ? h->name_len : sizeof name;
    for (size_t k = 0; k < n; k++)
      name[k] = (char)(h->name[k] >= 'A' && h->name[k] <= 'Z' ? h->name[k] + 32
                                                              : h->name[k]);
    /* Repeated headers are joined with ", " as HTTP allows. */
    lua_pushlstring(L, name, n);
    lua_rawget(L, -2);
    if (lua_isstring(L, -1)) {
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, h->value, h->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, h->value, h->value_len);
    }
    lua_pushlstring(L, name, n);
    lua_insert(L, -2);
    lua_rawset(L, -3);
  }
  lua_setfield(L, -2, "headers");
  lua_pushstring(L, mr_conn_remote(c));
  lua_setfield(L, -2, "remote_addr");
}

int mr_bridge_on_connect(mr_bridge *b, mr_conn *c, const mr_http_request *req,
                         int *status, char *body, size_t cap) {
  lua_State *L = b->L;
  /* The handle exists from here on, even without on_connect, so that
   * members() and broadcasts can name this connection. */
  mr_handle_push(L, b->srv, c);
  if (b->s.refs[MR_H_CONNECT] == LUA_NOREF) {
    lua_pop(L, 1);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->s.refs[MR_H_CONNECT]);
  lua_insert(L, -2);
  push_request(L, c, req);
  if (mr_gate_call(L, 2, 3, b->s.path, "on_connect", c->id) != 0) {
    b->srv->stats.handler_errors++;
    *status = 500;
    snprintf(body, cap, "internal error");
    return 0;
  }
  int accept = !(lua_isboolean(L, -3) && !lua_toboolean(L, -3));
  if (!accept) {
    if (lua_isnumber(L, -2)) {
      int s = (int)lua_tointeger(L, -2);
      *status = s >= 400 && s <= 599 ? s : 403;
    }
    if (lua_isstring(L, -1))
      snprintf(body, cap, "%s", lua_tostring(L, -1));
  }
  lua_pop(L, 3);
  return accept;
}

int mr_bridge_on_message(mr_bridge *b, mr_conn *c, const uint8_t *msg,
                         size_t len, int binary) {
  if (b->s.refs[MR_H_MESSAGE] == LUA_NOREF)
    return 0;
  lua_State *L = b->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->s.refs[MR_H_MESSAGE]);
  mr_handle_push(L, b->srv, c);
  lua_pushlstring(L, (const char *)msg, len);
  lua_pushboolean(L, binary);
  return mr_gate_call(L, 3, 0, b->s.path, "on_message", c->id);
}

void mr_bridge_on_close(mr_bridge *b, mr_conn *c, unsigned code,
                        const char *reason, size_t len) {
  lua_State *L = b->L;
  if (b->s.refs[MR_H_CLOSE] != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->s.refs[MR_H_CLOSE]);
    mr_handle_push(L, b->srv, c);
    lua_pushinteger(L, code);
    lua_pushlstring(L, reason, len);
    if (mr_gate_call(L, 3, 0, b->s.path, "on_close", c->id) != 0)
      b->srv->stats.handler_errors++;
  }
  mr_bridge_forget(b, c);
}

void mr_bridge_forget(mr_bridge *b, mr_conn *c) {
  mr_handle_forget(b->L, c->id);
}

void mr_bridge_on_room_gone(mr_bridge *b, const char *room, size_t len) {
  mr_api_drop_room_state(b->L, room, len);
}
