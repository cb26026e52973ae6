/* Script timers: ws.after, ws.every and conn:after, and the timer handles
 * they return. The deadlines live in the server's heap (timer.c), driven by
 * one libuv timer (server.c); what to call lives here, in two registry
 * tables keyed by timer id and by connection id, so Lua holds ids, never
 * pointers. Every callback runs through the gate. */
#include "api_timer.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>

#include "conn.h"
#include "gate.h"
#include "handle.h"
#include "log.h"
#include "presence.h"

static mr_server *upvalue_server(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

#define TIMER_MT "moonroom.timer"
/* 2^53: past it a Lua number no longer holds every whole millisecond. */
#define MAX_TIMER_MS 9007199254740992.0

/* A timer's entry in the timers table is an array: the function, the
 * interval (0: runs once), the connection id (0: none), the number of extra
 * arguments and the arguments themselves. */
enum { T_FN = 1, T_EVERY, T_CONN, T_NARGS, T_ARGS };

/* What Lua holds for a timer: its id, never a pointer into the heap. */
typedef struct {
  uint64_t id;
  mr_server *srv; /* outlives every handle */
} timer_handle;

/* Registry keys: timer id -> entry, and connection id -> { [timer id] =
 * true } for the connections that have timers, so that a close cancels
 * them without looking at anyone else's. */
static const char timers_key, conn_timers_key;

static void push_registry(lua_State *L, const char *key) {
  lua_pushlightuserdata(L, (void *)key);
  lua_rawget(L, LUA_REGISTRYINDEX);
}

static uint64_t entry_number(lua_State *L, int entry, int i) {
  lua_rawgeti(L, entry, i);
  uint64_t n = (uint64_t)lua_tonumber(L, -1);
  lua_pop(L, 1);
  return n;
}

/* Forgets timer id (whose entry is in the table at map) and its place in
 * its connection's set; the heap is the caller's business. */
static void forget_timer(lua_State *L, int map, uint64_t id, uint64_t conn) {
  lua_pushnumber(L, (lua_Number)id);
  lua_pushnil(L);
  lua_rawset(L, map);
  if (!conn)
    return;
  push_registry(L, &conn_timers_key);
  lua_pushnumber(L, (lua_Number)conn);
  lua_rawget(L, -2);
  if (lua_istable(L, -1)) {
    lua_pushnumber(L, (lua_Number)id);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pushnil(L);
    if (lua_next(L, -2) != 0) {
      lua_pop(L, 2);
    } else {
      lua_pushnumber(L, (lua_Number)conn);
      lua_pushnil(L);
      lua_rawset(L, -4);
    }
  }
  lua_pop(L, 2);
}

/* Forgets timer id, looking up its connection in its entry. */
static void drop_timer(lua_State *L, uint64_t id) {
  push_registry(L, &timers_key);
  int map = lua_gettop(L);
  lua_pushnumber(L, (lua_Number)id);
  lua_rawget(L, map);
  uint64_t conn = lua_istable(L, -1) ? entry_number(L, -1, T_CONN) : 0;
  lua_pop(L, 1);
  forget_timer(L, map, id, conn);
  lua_pop(L, 1);
}

/* Whole milliseconds, rounded up so that a timer never fires early; raises
 * for anything but a finite number >= 0 (> 0 for an interval). */
static uint64_t check_ms(lua_State *L, int idx, int repeating) {
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_typerror(L, idx, "number");
  lua_Number ms = lua_tonumber(L, idx);
  if (ms != ms)
    luaL_argerror(L, idx, "ms must be a number, not NaN");
  if (ms < 0)
    luaL_argerror(L, idx, "ms must not be negative");
  if (ms > MAX_TIMER_MS)
    luaL_argerror(L, idx, "ms must be finite (at most 2^53)");
  if (repeating && ms == 0)
    luaL_argerror(L, idx, "the interval must be more than 0 ms");
  return (uint64_t)ceil(ms);
}

/* schedule(ms, fn, ...) for argument ms at ms_idx: records the entry,
 * schedules it and returns its handle; c is the connection of conn:after. */
static int schedule(lua_State *L, int ms_idx, int repeating, mr_conn *c) {
  mr_server *srv = upvalue_server(L);
  uint64_t ms = check_ms(L, ms_idx, repeating);
  luaL_checktype(L, ms_idx + 1, LUA_TFUNCTION);
  int nargs = lua_gettop(L) - ms_idx - 1;
  push_registry(L, &timers_key);
  lua_createtable(L, T_ARGS - 1 + nargs, 0);
  lua_pushvalue(L, ms_idx + 1);
  lua_rawseti(L, -2, T_FN);
  lua_pushnumber(L, repeating ? (lua_Number)ms : 0);
  lua_rawseti(L, -2, T_EVERY);
  lua_pushnumber(L, c ? (lua_Number)c->id : 0);
  lua_rawseti(L, -2, T_CONN);
  lua_pushinteger(L, nargs);
  lua_rawseti(L, -2, T_NARGS);
  for (int i = 0; i < nargs; i++) {
    lua_pushvalue(L, ms_idx + 2 + i);
    lua_rawseti(L, -2, T_ARGS + i);
  }
  uint64_t id, now = srv->loop ? uv_now(srv->loop) : 0;
  if (mr_timers_add(&srv->timers, now + ms, &id) != 0)
    return luaL_error(L, "out of memory");
  lua_pushnumber(L, (lua_Number)id);
  lua_insert(L, -2);
  lua_rawset(L, -3);
  if (c) {
    push_registry(L, &conn_timers_key);
    lua_pushnumber(L, (lua_Number)c->id);
    lua_rawget(L, -2);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      lua_createtable(L, 0, 1);
      lua_pushnumber(L, (lua_Number)c->id);
      lua_pushvalue(L, -2);
      lua_rawset(L, -4);
    }
    lua_pushnumber(L, (lua_Number)id);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 2);
  }
  timer_handle *h = lua_newuserdata(L, sizeof *h);
  h->id = id;
  h->srv = srv;
  luaL_getmetatable(L, TIMER_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* after(ms, fn, ...) -> timer: fn(...) once, ms from now */
static int l_after(lua_State *L) { return schedule(L, 1, 0, NULL); }

/* every(ms, fn, ...) -> timer: fn(...) every ms until cancelled */
static int l_every(lua_State *L) { return schedule(L, 1, 1, NULL); }

/* conn:after(ms, fn, ...) -> timer | nil, "closed": fn(conn, ...) once, ms
 * from now, unless the connection has closed by then */
static int l_conn_after(lua_State *L) {
  mr_conn *c = mr_handle_open_conn(L, 1, upvalue_server(L));
  if (!c) {
    check_ms(L, 2, 0);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  return schedule(L, 2, 0, c);
}

/* timer:cancel() -> true when it was pending, false otherwise */
static int t_cancel(lua_State *L) {
  timer_handle *h = luaL_checkudata(L, 1, TIMER_MT);
  int was = mr_timers_cancel(&h->srv->timers, h->id);
  if (was)
    drop_timer(L, h->id);
  lua_pushboolean(L, was);
  return 1;
}

/* timer:pending() -> true until it has run (once) or was cancelled */
static int t_pending(lua_State *L) {
  timer_handle *h = luaL_checkudata(L, 1, TIMER_MT);
  lua_pushboolean(L, mr_timers_pending(&h->srv->timers, h->id));
  return 1;
}

static int t_tostring(lua_State *L) {
  timer_handle *h = luaL_checkudata(L, 1, TIMER_MT);
  char buf[48];
  snprintf(buf, sizeof buf, "moonroom.timer(%llu)", (unsigned long long)h->id);
  lua_pushstring(L, buf);
  return 1;
}

/* Names where fn (at entry) was defined, for the line that says a
 * repeating timer was stopped. */
static void log_stopped(lua_State *L, int entry, const char *script,
                        uint64_t id, uint64_t every) {
  lua_Debug ar;
  lua_rawgeti(L, entry, T_FN);
  lua_getinfo(L, ">S", &ar);
  mr_error("%s: ws.every timer %llu (every %llu ms, function at %s:%d) "
           "raised an error: stopped",
           script, (unsigned long long)id, (unsigned long long)every,
           ar.short_src, ar.linedefined);
}

int mr_api_run_timers(lua_State *L, mr_server *srv, uint64_t now,
                      const char *script) {
  uint64_t mark = mr_timers_mark(&srv->timers), id, due;
  int ran = 0, top = lua_gettop(L);
  push_registry(L, &timers_key);
  int map = lua_gettop(L);
  while (mr_timers_pop(&srv->timers, now, mark, &id, &due)) {
    /* The presence batch shares the heap, so that the kit's run_timers
     * drives it exactly as the loop does (presence.h). */
    if (id == srv->presence_timer && srv->presence) {
      srv->presence_timer = 0;
      mr_presence_flush(srv->presence, now);
      lua_settop(L, map);
      continue;
    }
    lua_pushnumber(L, (lua_Number)id);
    lua_rawget(L, map);
    int entry = lua_gettop(L);
    if (!lua_istable(L, entry)) {
      lua_settop(L, map);
      continue;
    }
    uint64_t every = entry_number(L, entry, T_EVERY);
    uint64_t conn = entry_number(L, entry, T_CONN);
    int nargs = (int)entry_number(L, entry, T_NARGS);
    mr_conn *c = conn ? mr_conn_find(srv, conn) : NULL;
    if (conn && (!c || !mr_conn_is_open(c))) {
      /* Closing: its timers go with it (on_close cancels the rest). */
      forget_timer(L, map, id, conn);
      lua_settop(L, map);
      continue;
    }
    if (every) {
      /* Re-armed before the call, so that the callback can cancel it; a
       * loop that fell behind skips the ticks it missed. */
      uint64_t next = due + every > now ? due + every : now + every;
      if (mr_timers_readd(&srv->timers, id, next) != 0) {
        srv->stats.internal_errors++;
        mr_error("%s: ws.every timer %llu stopped: out of memory", script,
                 (unsigned long long)id);
        forget_timer(L, map, id, conn);
        every = 0;
      }
    } else {
      forget_timer(L, map, id, conn);
    }
    if (!lua_checkstack(L, nargs + 4)) {
      srv->stats.internal_errors++;
      mr_error("%s: timer %llu dropped: no Lua stack for its %d arguments",
               script, (unsigned long long)id, nargs);
      lua_settop(L, map);
      continue;
    }
    lua_rawgeti(L, entry, T_FN);
    if (c)
      mr_handle_push(L, c);
    for (int i = 0; i < nargs; i++)
      lua_rawgeti(L, entry, T_ARGS + i);
    ran++;
    const char *what = c ? "conn:after" : every ? "ws.every" : "ws.after";
    if (mr_gate_call(L, nargs + (c != NULL), 0, script, what, conn) != 0) {
      srv->stats.timer_errors++;
      if (every && mr_timers_cancel(&srv->timers, id)) {
        forget_timer(L, map, id, conn);
        log_stopped(L, entry, script, id, every);
      }
    }
    lua_settop(L, map);
  }
  lua_settop(L, top);
  return ran;
}

void mr_api_cancel_conn_timers(lua_State *L, mr_server *srv, uint64_t conn) {
  push_registry(L, &conn_timers_key);
  lua_pushnumber(L, (lua_Number)conn);
  lua_rawget(L, -2);
  if (!lua_istable(L, -1)) {
    lua_pop(L, 2);
    return;
  }
  push_registry(L, &timers_key);
  lua_pushnil(L);
  while (lua_next(L, -3) != 0) {
    lua_pop(L, 1);
    mr_timers_cancel(&srv->timers, (uint64_t)lua_tonumber(L, -1));
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, -4);
  }
  lua_pop(L, 2);
  lua_pushnumber(L, (lua_Number)conn);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

size_t mr_api_cancel_timers_since(lua_State *L, mr_server *srv,
                                  uint64_t first) {
  size_t n = 0;
  push_registry(L, &timers_key);
  int map = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, map) != 0) {
    uint64_t id = (uint64_t)lua_tonumber(L, -2);
    if (id >= first) {
      uint64_t conn = entry_number(L, -1, T_CONN);
      mr_timers_cancel(&srv->timers, id);
      /* Clearing a field that exists is allowed while lua_next walks. */
      forget_timer(L, map, id, conn);
      n++;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return n;
}

void mr_api_timer_open(lua_State *L, mr_server *srv, int core, int methods) {
  core = core < 0 ? lua_gettop(L) + core + 1 : core;
  methods = methods < 0 ? lua_gettop(L) + methods + 1 : methods;
  static const luaL_Reg funcs[] = {{"after", l_after}, {"every", l_every}};
  for (size_t i = 0; i < sizeof funcs / sizeof *funcs; i++) {
    lua_pushlightuserdata(L, srv);
    lua_pushcclosure(L, funcs[i].func, 1);
    lua_setfield(L, core, funcs[i].name);
  }
  lua_pushlightuserdata(L, srv);
  lua_pushcclosure(L, l_conn_after, 1);
  lua_setfield(L, methods, "after");

  /* Timer handles, and the tables behind them. */
  luaL_newmetatable(L, TIMER_MT);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, t_cancel);
  lua_setfield(L, -2, "cancel");
  lua_pushcfunction(L, t_pending);
  lua_setfield(L, -2, "pending");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, t_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, TIMER_MT);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  const char *keys[] = {&timers_key, &conn_timers_key};
  for (size_t i = 0; i < 2; i++) {
    lua_pushlightuserdata(L, (void *)keys[i]);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
}
