#include "api.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_presence.h"
#include "api_timer.h"
#include "broadcast.h"
#include "cluster.h"
#include "conn.h"
#include "engine_redis.h"
#include "error.h"
#include "gate.h"
#include "handle.h"
#include "log.h"
#include "utf8.h"

#define MAX_ROOM_NAME 1024

static mr_server *upvalue_server(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static int closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

/* Raises unless s is valid UTF-8. Everything a script sends as text goes
 * out as a text frame (or a close reason, or a room name on the cluster
 * wire), and a peer that follows RFC 6455 fails the whole connection on one
 * invalid byte (1007), so the mistake is reported where the script made it.
 * Counted, since a script that catches the error would otherwise hide it. */
static void check_utf8(lua_State *L, int idx, const char *s, size_t len,
                       const char *what) {
  if (mr_utf8_valid((const uint8_t *)s, len))
    return;
  upvalue_server(L)->stats.lua_invalid_utf8++;
  luaL_argerror(L, idx, what);
}

static const char *check_room(lua_State *L, int idx, size_t *len) {
  const char *room = luaL_checklstring(L, idx, len);
  if (*len == 0 || *len > MAX_ROOM_NAME)
    luaL_argerror(L, idx, "room name must be 1 to 1024 bytes");
  check_utf8(L, idx, room, *len, "room name is not valid UTF-8");
  return room;
}

#define TEXT_NOT_UTF8 "text is not valid UTF-8; send bytes as binary"

static int opt_binary(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx))
    return 0;
  luaL_checktype(L, idx, LUA_TBOOLEAN);
  return lua_toboolean(L, idx);
}

/* Sorts the list on top of the stack in place (table.sort), so that scripts
 * and tests see names in a stable order. */
static void sort_top(lua_State *L) {
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_remove(L, -2);
  lua_pushvalue(L, -2);
  lua_call(L, 1, 0);
}

/* ---- moonroom.core functions --------------------------------------------- */

/* join(conn, room) -> true | false (already a member) | nil, "closed" */
static int l_join(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t len;
  mr_conn *c = mr_handle_open_conn(L, 1, upvalue_server(L));
  const char *room = check_room(L, 2, &len);
  if (!c)
    return closed(L);
  int r = mr_rooms_join(&srv->rooms, &c->member, room, len);
  if (r < 0)
    return luaL_error(L, "out of memory");
  lua_pushboolean(L, r == 1);
  return 1;
}

/* leave(conn, room) -> true (was a member) | false | nil, "closed" */
static int l_leave(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t len;
  mr_conn *c = mr_handle_open_conn(L, 1, upvalue_server(L));
  const char *room = check_room(L, 2, &len);
  if (!c)
    return closed(L);
  lua_pushboolean(L, mr_rooms_leave(&srv->rooms, &c->member, room, len) == 1);
  return 1;
}

static int do_broadcast(lua_State *L, int except_idx, int bin_idx) {
  mr_server *srv = upvalue_server(L);
  size_t rlen, mlen;
  const char *room = check_room(L, 1, &rlen);
  const char *msg = luaL_checklstring(L, 2, &mlen);
  mr_conn *except = NULL;
  if (except_idx) {
    mr_handle *h = mr_handle_check(L, except_idx);
    except = mr_conn_find(srv, h->id);
  }
  int binary = opt_binary(L, bin_idx);
  if (!binary)
    check_utf8(L, 2, msg, mlen, TEXT_NOT_UTF8);
  int n = mr_broadcast(srv, room, rlen, msg, mlen, binary, except);
  if (n < 0)
    return luaL_error(L, "out of memory");
  lua_pushinteger(L, n);
  return 1;
}

/* broadcast(room, msg [, binary]) -> number of local members queued */
static int l_broadcast(lua_State *L) { return do_broadcast(L, 0, 3); }

/* broadcast_except(room, msg, conn [, binary]) -> number queued */
static int l_broadcast_except(lua_State *L) { return do_broadcast(L, 3, 4); }

/* send(conn, msg [, binary]) -> true | nil, "closed" */
static int l_send(lua_State *L) {
  size_t len;
  mr_conn *c = mr_handle_open_conn(L, 1, upvalue_server(L));
  const char *msg = luaL_checklstring(L, 2, &len);
  int binary = opt_binary(L, 3);
  if (!binary)
    check_utf8(L, 2, msg, len, TEXT_NOT_UTF8);
  if (!c)
    return closed(L);
  int r = mr_conn_send(c, msg, len, binary);
  if (r == MR_ENOMEM)
    return luaL_error(L, "out of memory");
  if (r != 0)
    return closed(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* close(conn [, code [, reason]]) -> true | nil, "closed" */
static int l_close(lua_State *L) {
  mr_conn *c = mr_handle_open_conn(L, 1, upvalue_server(L));
  lua_Integer code = luaL_optinteger(L, 2, 1000);
  size_t len = 0;
  const char *reason = luaL_optlstring(L, 3, "", &len);
  if (code != 1000 &&
      !(code >= 1001 && code <= 1014 && code != 1004 && code != 1005 &&
        code != 1006) &&
      !(code >= 3000 && code <= 4999))
    return luaL_argerror(L, 2,
                         "close code must be 1000-1014 (not 1004-1006) "
                         "or 3000-4999");
  if (len > 123)
    return luaL_argerror(L, 3, "close reason must be at most 123 bytes");
  check_utf8(L, 3, reason, len, "close reason is not valid UTF-8");
  if (!c)
    return closed(L);
  mr_conn_close(c, (uint16_t)code, reason, len);
  lua_pushboolean(L, 1);
  return 1;
}

/* rooms(conn) -> { room, ... } (sorted) | nil, "closed" */
static int l_rooms(lua_State *L) {
  mr_conn *c = mr_handle_open_conn(L, 1, upvalue_server(L));
  if (!c)
    return closed(L);
  uint32_t n = mr_member_nrooms(&c->member);
  lua_createtable(L, (int)n, 0);
  for (uint32_t i = 0; i < n; i++) {
    mr_room *r = mr_member_room(&c->member, i);
    lua_pushlstring(L, r->name, r->name_len);
    lua_rawseti(L, -2, (int)i + 1);
  }
  sort_top(L);
  return 1;
}

/* members(room) -> { conn, ... } in join order of the current array */
static int l_members(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t len;
  const char *room = check_room(L, 1, &len);
  mr_room *r = mr_rooms_find(&srv->rooms, room, len);
  lua_createtable(L, r ? (int)r->count : 0, 0);
  int n = 0;
  mr_room_iter it;
  mr_member *m;
  mr_room_iter_init(&it, r);
  while ((m = mr_room_iter_next(&it))) {
    mr_handle_push(L, mr_conn_of_member(m));
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* count(room [, "cluster"]) -> number of local members, or of members on
 * every node (the others' as they last reported, presence.h) */
static int l_count(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t len;
  const char *room = check_room(L, 1, &len);
  int cluster = 0;
  if (!lua_isnoneornil(L, 2)) {
    const char *scope = luaL_checkstring(L, 2);
    if (strcmp(scope, "cluster") != 0)
      return luaL_argerror(L, 2, "scope must be \"cluster\" (or nothing)");
    cluster = 1;
  }
  mr_room *r = mr_rooms_find(&srv->rooms, room, len);
  uint64_t n = r ? r->count : 0;
  if (cluster && srv->presence)
    n += mr_presence_remote_count(srv->presence, room, len);
  lua_pushnumber(L, (lua_Number)n);
  return 1;
}

void mr_api_push_stats(lua_State *L, const mr_server *srv) {
  lua_newtable(L);
#define MR_STATS_PUSH(name, help)                                              \
  lua_pushnumber(L, (lua_Number)srv->stats.name);                              \
  lua_setfield(L, -2, #name);
  MR_STATS_MAP(MR_STATS_PUSH)
#undef MR_STATS_PUSH
  lua_pushinteger(L, (lua_Integer)srv->rooms.nrooms);
  lua_setfield(L, -2, "rooms");
  lua_pushinteger(L, (lua_Integer)mr_server_script_timers(srv));
  lua_setfield(L, -2, "timers");
}

/* stats() -> { counter = n, ... } */
static int l_stats(lua_State *L) {
  mr_api_push_stats(L, upvalue_server(L));
  lua_pushinteger(L, lua_gc(L, LUA_GCCOUNT, 0));
  lua_setfield(L, -2, "lua_kb");
  return 1;
}

/* log(level, message): level is "debug", "info", "warn" or "error" */
static int l_log(lua_State *L) {
  int level = mr_log_parse_level(luaL_checkstring(L, 1));
  if (level < 0)
    return luaL_argerror(L, 1, "level must be debug, info, warn or error");
  const char *msg = luaL_checkstring(L, 2);
  /* Name the script line that logged, skipping the moonroom module's own
   * frames (its chunk name starts with '='). */
  lua_Debug ar;
  for (int level_up = 1; lua_getstack(L, level_up, &ar); level_up++) {
    if (lua_getinfo(L, "Sl", &ar) && ar.source[0] == '@' &&
        ar.currentline > 0) {
      mr_log(level, "[%s:%d] %s", ar.short_src, ar.currentline, msg);
      return 0;
    }
  }
  mr_log(level, "%s", msg);
  return 0;
}

/* version() -> "moonroom 0.1.0" */
static int l_version(lua_State *L) {
  lua_pushliteral(L, "moonroom " MOONROOM_VERSION);
  return 1;
}

/* now() -> milliseconds of the event loop clock */
static int l_now(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  lua_pushnumber(L, srv->loop ? (lua_Number)uv_now(srv->loop) : 0);
  return 1;
}

/* clock() -> milliseconds of the monotonic clock read now, with fractions:
 * the clock now() caches at the start of each loop turn, so a handler that
 * runs long can see time pass (now() does not move inside it). The test
 * kit's frozen clock does not apply: this is always the real one. */
static int l_clock(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
  return 1;
}

/* node() -> this node's name (--node, or host-pid) */
static int l_node(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  lua_pushstring(L, srv->node_name);
  return 1;
}

/* peers() -> sorted names of the nodes linked to this one */
static int l_peers(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  const char *names[256];
  size_t n = srv->cluster ? mr_cluster_peers(srv->cluster, names, 256) : 0;
  /* With the Redis engine: the nodes heard from within its TTL. */
  if (srv->engine)
    n = mr_engine_peers(srv->engine, names, 256);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  sort_top(L);
  return 1;
}

/* utf8_valid(s) -> true | false: whether s is well-formed UTF-8, by the
 * same rules as the text frames clients send */
static int l_utf8_valid(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, mr_utf8_valid((const uint8_t *)s, len));
  return 1;
}

static int by_name(const void *a, const void *b) {
  const mr_room *x = *(const mr_room *const *)a;
  const mr_room *y = *(const mr_room *const *)b;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(x->name, y->name, n);
  if (c != 0)
    return c;
  return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

/* room_list() -> { { name = room, count = n }, ... } of every room with local
 * members, sorted by name (bytewise). One pass over the room registry, never
 * over connections; sorted in C so that a node with many rooms does not pay
 * for a Lua comparator. */
static int l_room_list(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t n = srv->rooms.nrooms, i = 0;
  /* A userdata rather than malloc: the pushes below can raise (out of
   * memory), and the collector then frees the array. */
  mr_room **sorted = lua_newuserdata(L, (n ? n : 1) * sizeof *sorted);
  for (mr_room *r = mr_rooms_first(&srv->rooms); r && i < n;
       r = mr_rooms_next(r))
    sorted[i++] = r;
  n = i;
  qsort(sorted, n, sizeof *sorted, by_name);
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_createtable(L, 0, 2);
    lua_pushlstring(L, sorted[i]->name, sorted[i]->name_len);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)sorted[i]->count);
    lua_setfield(L, -2, "count");
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

/* The registry key of the room name -> state table map (see room_state):
 * the address of this variable. */
static const char room_states_key;

/* room_state(room) -> the room's state table | nil, "empty room"
 * The table is made on first use, is the same table for every caller until
 * the room's last local member leaves (mr_api_drop_room_state), and lives in
 * the registry, so a reload keeps it. A room without local members has no
 * state: made then, it would never be dropped. */
static int l_room_state(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t len;
  const char *room = check_room(L, 1, &len);
  if (!mr_rooms_find(&srv->rooms, room, len)) {
    lua_pushnil(L);
    lua_pushliteral(L, "empty room");
    return 2;
  }
  lua_pushlightuserdata(L, (void *)&room_states_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  return 1;
}

void mr_api_drop_room_state(lua_State *L, const char *room, size_t len) {
  /* Only a runaway stack refuses three slots; the table then stays until
   * the room next empties, which is better than writing past the stack. */
  if (!lua_checkstack(L, 3))
    return;
  lua_pushlightuserdata(L, (void *)&room_states_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushlstring(L, room, len);
  lua_rawget(L, -2);
  int had = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (had) {
    lua_pushlstring(L, room, len);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
}

/* ---- module setup -------------------------------------------------------- */

static const luaL_Reg core_funcs[] = {{"join", l_join},
                                      {"leave", l_leave},
                                      {"broadcast", l_broadcast},
                                      {"broadcast_except", l_broadcast_except},
                                      {"send", l_send},
                                      {"close", l_close},
                                      {"rooms", l_rooms},
                                      {"members", l_members},
                                      {"count", l_count},
                                      {"stats", l_stats},
                                      {"log", l_log},
                                      {"version", l_version},
                                      {"now", l_now},
                                      {"node", l_node},
                                      {"peers", l_peers},
                                      {"utf8_valid", l_utf8_valid},
                                      {"room_list", l_room_list},
                                      {"room_state", l_room_state},
                                      {"clock", l_clock},
                                      {NULL, NULL}};

#define CORE_KEY "moonroom.core"

static int l_open_core(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, CORE_KEY);
  return 1;
}

void mr_api_open(lua_State *L, mr_server *srv) {
  mr_handle_register(L, srv);
  mr_gate_init(L);
  mr_gate_configure(L, srv);
  lua_pushlightuserdata(L, (void *)&room_states_key);
  lua_newtable(L);
  lua_rawset(L, LUA_REGISTRYINDEX);

  /* The core functions, bound to srv; handles get the ones that take a
   * connection first as methods, so conn:send() works in a script that
   * never required the module. */
  lua_newtable(L);
  for (const luaL_Reg *f = core_funcs; f->name; f++) {
    lua_pushlightuserdata(L, srv);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  mr_api_presence_open(L, srv, -1);
  luaL_getmetatable(L, MR_HANDLE_MT);
  lua_newtable(L);
  const char *methods[] = {"send", "close", "rooms", "join", "leave"};
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    lua_getfield(L, -3, methods[i]);
    lua_setfield(L, -2, methods[i]);
  }
  mr_api_timer_open(L, srv, -3, -1);
  lua_setfield(L, -2, "methods");
  lua_pop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, CORE_KEY);

  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, l_open_core);
  lua_setfield(L, -2, "moonroom.core");
  lua_pop(L, 2);
}
