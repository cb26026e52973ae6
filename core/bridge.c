#include "bridge.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "api.h"
#include "api_presence.h"
#include "api_timer.h"
#include "conn.h"
#include "error.h"
#include "gate.h"
#include "handle.h"
#include "log.h"
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
  int answer_ref; /* mr_answer_call, made once rather than per connection */
  int http_answer_ref; /* mr_answer_http_call, likewise */
};

static int load_facade(lua_State *L) {
  if (luaL_loadbuffer(L, (const char *)luaJIT_BC_moonroom,
                      luaJIT_BC_moonroom_SIZE, "=moonroom") != 0)
    return lua_error(L);
  lua_call(L, 0, 1);
  return 1;
}

/* While the Lua heap is over --lua-memory-limit, new upgrades and plain
 * HTTP requests are refused with 503 before Lua runs: each would add to
 * the heap. Returns 1 when refused, counted and logged (rate-limited). */
static int over_memory(mr_bridge *b, mr_conn *c, const char *what) {
  static mr_log_limit lim = MR_LOG_LIMIT_INIT("lua memory refusals");
  if (!mr_gate_over_memory(b->L))
    return 0;
  b->srv->stats.lua_memory_refusals++;
  mr_log_limited(&lim, MR_LOG_WARN,
                 "conn %llu (%s): %s refused 503: the Lua heap is over "
                 "--lua-memory-limit",
                 (unsigned long long)c->id, mr_conn_remote(c), what);
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
  lua_pushcfunction(L, mr_answer_call);
  b->answer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushcfunction(L, mr_answer_http_call);
  b->http_answer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  luaL_openlibs(L);
  mr_api_open(L, srv);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, load_facade);
  lua_setfield(L, -2, "moonroom");
  lua_pop(L, 1);
  /* Modules next to the script are found first, then the ones that come
   * with the server (cfg.lua_path), then LuaJIT's default path. */
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", script);
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  else
    strcpy(dir, ".");
  const char *own = srv->cfg.lua_path;
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s%s%s", dir, dir, own ? own : "",
                  own ? ";" : "", lua_tostring(L, -1));
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
  uint64_t first_timer = b->srv->timers.next_id;
  if (mr_script_reload(&b->s, err, errlen) != 0) {
    b->srv->stats.reload_failures++;
    /* The version that failed does not run, so neither do the timers its
     * top level or on_reload started. */
    size_t n = mr_api_cancel_timers_since(b->L, b->srv, first_timer);
    if (n)
      mr_info("%s: reload failed: cancelled %zu timers the new version "
              "started",
              b->s.path, n);
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
  /* The subprotocols the client offered, in its order, from every
   * Sec-WebSocket-Protocol line; on_connect may select one of them. */
  lua_newtable(L);
  mr_http_list_iter it;
  mr_http_list_init(&it, req, "Sec-WebSocket-Protocol");
  const char *p;
  size_t len;
  for (int i = 1; mr_http_list_next(&it, &p, &len); i++) {
    lua_pushlstring(L, p, len);
    lua_rawseti(L, -2, i);
  }
  lua_setfield(L, -2, "protocols");
}

int mr_bridge_on_connect(mr_bridge *b, mr_conn *c, const mr_http_request *req,
                         mr_conn_answer *ans) {
  lua_State *L = b->L;
  if (over_memory(b, c, "upgrade")) {
    ans->status = 503;
    snprintf(ans->body, sizeof ans->body, "server over its memory limit");
    return 0;
  }
  /* The handle exists from here on, even without on_connect, so that
   * members() and broadcasts can name this connection. */
  if (b->s.refs[MR_H_CONNECT] == LUA_NOREF) {
    mr_handle_push(L, c);
    lua_pop(L, 1);
    return 1;
  }
  mr_answer_ctx x = {req, ans, 0};
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->answer_ref);
  lua_pushlightuserdata(L, &x);
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->s.refs[MR_H_CONNECT]);
  mr_handle_push(L, c);
  push_request(L, c, req);
  int r = mr_gate_call(L, 4, 0, b->s.path, "on_connect", c->id);
  /* The request table (about 750 bytes: path, query, headers, protocols)
   * is garbage once on_connect returns, unless the script kept it. With
   * LuaJIT's pacing the heap grows to twice what is live before a cycle
   * starts, and its allocator keeps those pages: in a storm of connects
   * that garbage doubled what each held connection costs in Lua. One
   * incremental step per upgrade keeps the collector running while
   * connections arrive (about 60 bytes of RSS less per idle connection,
   * measured with 19,000), and costs nothing when none do. */
  lua_gc(L, LUA_GCSTEP, 0);
  if (r == MR_ENOMEM) {
    /* on_connect left the heap over the limit: not this connection. */
    ans->status = 503;
    snprintf(ans->body, sizeof ans->body, "server over its memory limit");
    ans->protocol = NULL;
    ans->protocol_len = 0;
    ans->headers[0] = '\0';
    return 0;
  }
  if (r != 0) {
    b->srv->stats.handler_errors++;
    ans->status = 500;
    snprintf(ans->body, sizeof ans->body, "internal error");
    ans->protocol = NULL;
    ans->protocol_len = 0;
    ans->headers[0] = '\0';
    return 0;
  }
  return x.accept;
}

int mr_bridge_on_message(mr_bridge *b, mr_conn *c, const uint8_t *msg,
                         size_t len, int binary) {
  if (b->s.refs[MR_H_MESSAGE] == LUA_NOREF)
    return 0;
  lua_State *L = b->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->s.refs[MR_H_MESSAGE]);
  mr_handle_push(L, c);
  lua_pushlstring(L, (const char *)msg, len);
  lua_pushboolean(L, binary);
  int r = mr_gate_call(L, 3, 0, b->s.path, "on_message", c->id);
  if (r == MR_ENOMEM) {
    /* The handler left the heap over the limit: its connection goes, so
     * that what it feeds the heap stops (the gate counted and logged). */
    mr_conn_close(c, MR_CLOSE_INTERNAL, "lua memory limit", 16);
    return 0;
  }
  return r;
}

void mr_bridge_on_close(mr_bridge *b, mr_conn *c, unsigned code,
                        const char *reason, size_t len) {
  lua_State *L = b->L;
  /* Its conn:after timers are gone before on_close runs. */
  mr_api_cancel_conn_timers(L, b->srv, c->id);
  if (b->s.refs[MR_H_CLOSE] != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->s.refs[MR_H_CLOSE]);
    mr_handle_push(L, c);
    lua_pushinteger(L, code);
    lua_pushlstring(L, reason, len);
    if (mr_gate_call(L, 3, 0, b->s.path, "on_close", c->id) != 0)
      b->srv->stats.handler_errors++;
  }
  mr_bridge_forget(b, c);
}

void mr_bridge_forget(mr_bridge *b, mr_conn *c) {
  mr_api_cancel_conn_timers(b->L, b->srv, c->id);
  mr_handle_forget(b->L, c->id);
}

int mr_bridge_run_timers(mr_bridge *b, uint64_t now) {
  return mr_api_run_timers(b->L, b->srv, now, b->s.path);
}

void mr_bridge_on_room_gone(mr_bridge *b, const char *room, size_t len) {
  mr_api_drop_room_state(b->L, room, len);
}

size_t mr_bridge_lua_bytes(const mr_bridge *b) {
  if (!b || !b->L)
    return 0;
  return (size_t)lua_gc(b->L, LUA_GCCOUNT, 0) * 1024 +
         (size_t)lua_gc(b->L, LUA_GCCOUNTB, 0);
}

int mr_bridge_has_http(const mr_bridge *b) {
  return b->s.refs[MR_H_HTTP] != LUA_NOREF;
}

int mr_bridge_on_http(mr_bridge *b, mr_conn *c, const mr_http_request *req,
                      const char *body, size_t body_len, mr_http_answer *ans) {
  lua_State *L = b->L;
  if (b->s.refs[MR_H_HTTP] == LUA_NOREF) {
    /* A reload dropped on_http while this keep-alive connection stayed:
     * answer as a script without it does. */
    ans->status = 404;
    if ((ans->body = mr_buf_new(10)))
      memcpy(ans->body->data, "not found\n", 10);
    return 0;
  }
  if (over_memory(b, c, "HTTP request")) {
    ans->status = 503;
    if ((ans->body = mr_buf_new(29)))
      memcpy(ans->body->data, "server over its memory limit\n", 29);
    return 0;
  }
  mr_http_answer_ctx x = {ans};
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->http_answer_ref);
  lua_pushlightuserdata(L, &x);
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->s.refs[MR_H_HTTP]);
  push_request(L, c, req);
  lua_pushstring(L, req->method);
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, body, body_len);
  lua_setfield(L, -2, "body");
  /* A plain request offers no subprotocols; on_http's req has none. */
  lua_pushnil(L);
  lua_setfield(L, -2, "protocols");
  int r = mr_gate_call(L, 3, 0, b->s.path, "on_http", c->id);
  if (r == MR_ENOMEM) {
    if (ans->body)
      mr_buf_release(ans->body);
    mr_http_answer_init(ans);
    ans->status = 503;
    if ((ans->body = mr_buf_new(29)))
      memcpy(ans->body->data, "server over its memory limit\n", 29);
    return 0;
  }
  if (r != 0) {
    b->srv->stats.handler_errors++;
    if (ans->body)
      mr_buf_release(ans->body);
    mr_http_answer_init(ans);
    if ((ans->body = mr_buf_new(15)))
      memcpy(ans->body->data, "internal error\n", 15);
    return MR_ELUA;
  }
  return 0;
}

void mr_bridge_on_presence(mr_bridge *b, const char *room, size_t len,
                           const mr_presence_entry *joins, size_t njoins,
                           const mr_presence_entry *leaves, size_t nleaves) {
  if (!b->L || b->s.refs[MR_H_PRESENCE] == LUA_NOREF)
    return;
  lua_State *L = b->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->s.refs[MR_H_PRESENCE]);
  lua_pushlstring(L, room, len);
  mr_api_push_presence(L, joins, njoins);
  mr_api_push_presence(L, leaves, nleaves);
  if (mr_gate_call(L, 3, 0, b->s.path, "on_presence", 0) != 0)
    b->srv->stats.handler_errors++;
}
