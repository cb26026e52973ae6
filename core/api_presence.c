#include "api_presence.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "error.h"
#include "handle.h"
#include "log.h"
#include "utf8.h"

/* The same bounds as every room name a script gives (api.c). */
#define MAX_ROOM_NAME 1024
/* Keys of one meta table, sorted before encoding. */
#define MAX_META_KEYS 256

static mr_server *upvalue_server(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static const char *check_room(lua_State *L, int idx, size_t *len) {
  const char *room = luaL_checklstring(L, idx, len);
  if (*len == 0 || *len > MAX_ROOM_NAME)
    luaL_argerror(L, idx, "room name must be 1 to 1024 bytes");
  if (!mr_utf8_valid((const uint8_t *)room, *len)) {
    upvalue_server(L)->stats.lua_invalid_utf8++;
    luaL_argerror(L, idx, "room name is not valid UTF-8");
  }
  return room;
}

typedef struct {
  const char *key;
  size_t len;
} meta_key;

static int by_key(const void *a, const void *b) {
  const meta_key *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->key, y->key, n);
  if (c)
    return c;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* Checks the meta table at idx (nil: empty) and collects its keys, sorted,
 * into keys (anchored by the table). Misuse raises: a key that is not a
 * 1..255-byte string, more than MAX_META_KEYS keys, a value that is not a
 * string, a finite number or a boolean, text that is not UTF-8. Nothing is
 * allocated here, so a raise leaks nothing. Returns how many keys. */
static size_t check_meta(lua_State *L, int idx, meta_key *keys) {
  size_t n = 0;
  if (lua_isnoneornil(L, idx))
    return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_argerror(L, idx, "meta keys must be strings");
    if (n == MAX_META_KEYS)
      luaL_argerror(L, idx, "meta has more than 256 keys");
    keys[n].key = lua_tolstring(L, -2, &keys[n].len);
    if (keys[n].len == 0 || keys[n].len > 255)
      luaL_argerror(L, idx, "meta keys must be 1 to 255 bytes");
    if (!mr_utf8_valid((const uint8_t *)keys[n].key, keys[n].len)) {
      upvalue_server(L)->stats.lua_invalid_utf8++;
      luaL_argerror(L, idx, "meta key is not valid UTF-8");
    }
    size_t slen;
    const char *str;
    switch (lua_type(L, -1)) {
    case LUA_TBOOLEAN:
      break;
    case LUA_TNUMBER:
      if (!isfinite(lua_tonumber(L, -1)))
        luaL_argerror(L, idx, "meta numbers must be finite");
      break;
    case LUA_TSTRING:
      str = lua_tolstring(L, -1, &slen);
      if (slen > 65535)
        luaL_argerror(L, idx, "meta strings must be at most 65535 bytes");
      if (!mr_utf8_valid((const uint8_t *)str, slen)) {
        upvalue_server(L)->stats.lua_invalid_utf8++;
        luaL_argerror(L, idx, "meta text is not valid UTF-8");
      }
      break;
    default:
      luaL_argerror(L, idx, "meta values must be strings, numbers or booleans");
    }
    lua_pop(L, 1);
    n++;
  }
  qsort(keys, n, sizeof *keys, by_key);
  return n;
}

/* Encodes the checked meta (table at idx, its n sorted keys) into w, which
 * the caller owns. Returns 0 or MR_ENOMEM. */
static int encode_meta(lua_State *L, int idx, const meta_key *keys, size_t n,
                       mr_wbuf *w) {
  size_t at;
  int r = mr_wire_meta_begin(w, &at);
  for (size_t i = 0; i < n && r == 0; i++) {
    mr_wire_meta_field f = {keys[i].key, keys[i].len, 0, 0, NULL, 0};
    lua_pushlstring(L, keys[i].key, keys[i].len);
    lua_rawget(L, idx);
    if (lua_type(L, -1) == LUA_TBOOLEAN) {
      f.type = lua_toboolean(L, -1) ? MR_META_TRUE : MR_META_FALSE;
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
      f.type = MR_META_NUMBER;
      f.num = lua_tonumber(L, -1);
    } else {
      f.type = MR_META_STRING;
      f.str = lua_tolstring(L, -1, &f.str_len);
    }
    r = mr_wire_meta_add(w, at, &f);
    lua_pop(L, 1);
  }
  return r;
}

static void push_meta(lua_State *L, const uint8_t *meta, size_t len) {
  lua_newtable(L);
  if (len < 2)
    return;
  const uint8_t *pos = meta + 2;
  size_t left = len - 2;
  mr_wire_meta_field f;
  while (mr_wire_meta_next(&pos, &left, &f)) {
    lua_pushlstring(L, f.key, f.key_len);
    if (f.type == MR_META_NUMBER)
      lua_pushnumber(L, f.num);
    else if (f.type == MR_META_STRING)
      lua_pushlstring(L, f.str, f.str_len);
    else
      lua_pushboolean(L, f.type == MR_META_TRUE);
    lua_rawset(L, -3);
  }
}

void mr_api_push_presence(lua_State *L, const mr_presence_entry *e, size_t n) {
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 3);
    lua_pushlstring(L, e[i].node, e[i].node_len);
    lua_setfield(L, -2, "node");
    lua_pushnumber(L, (lua_Number)e[i].id);
    lua_setfield(L, -2, "id");
    push_meta(L, e[i].meta, e[i].meta_len);
    lua_setfield(L, -2, "meta");
    lua_rawseti(L, -2, (int)i + 1);
  }
}

/* Counts and logs a refused ws.track, and returns nil, why. */
static int refuse(lua_State *L, uint64_t id, const char *room, size_t len,
                  const char *why) {
  static mr_log_limit lim = MR_LOG_LIMIT_INIT("refused ws.track calls");
  upvalue_server(L)->stats.presence_refused++;
  mr_log_limited(&lim, MR_LOG_WARN,
                 "presence: ws.track of conn %llu in room %.*s refused: %s",
                 (unsigned long long)id, (int)(len > 64 ? 64 : len), room, why);
  lua_pushnil(L);
  lua_pushstring(L, why);
  return 2;
}

/* track(conn, room [, meta]) -> true | nil, "closed" | nil, message */
static int l_track(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t len;
  mr_conn *c = mr_handle_open_conn(L, 1, upvalue_server(L));
  const char *room = check_room(L, 2, &len);
  meta_key keys[MAX_META_KEYS];
  lua_settop(L, 3);
  size_t nkeys = check_meta(L, 3, keys);
  if (!c) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  mr_wbuf w;
  mr_wire_buf_init(&w);
  if (encode_meta(L, 3, keys, nkeys, &w) != 0) {
    mr_wire_buf_free(&w);
    srv->stats.internal_errors++;
    return refuse(L, c->id, room, len, "out of memory");
  }
  if (w.len > srv->cfg.max_presence_meta) {
    char why[128];
    snprintf(why, sizeof why,
             "meta is %zu bytes encoded, over --max-presence-meta (%zu)", w.len,
             srv->cfg.max_presence_meta);
    mr_wire_buf_free(&w);
    return refuse(L, c->id, room, len, why);
  }
  int r = mr_presence_track(srv->presence, room, len, c->id, w.data, w.len);
  mr_wire_buf_free(&w);
  if (r < 0) {
    srv->stats.internal_errors++;
    return refuse(L, c->id, room, len, "out of memory");
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* untrack(conn, room) -> true (was tracked) | false */
static int l_untrack(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t len;
  mr_handle *h = mr_handle_check(L, 1);
  const char *room = check_room(L, 2, &len);
  lua_pushboolean(L, mr_presence_untrack(srv->presence, room, len, h->id));
  return 1;
}

/* presence(room) -> { { node = NAME, id = ID, meta = {...} }, ... } sorted
 * by node, then id */
static int l_presence(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t len;
  const char *room = check_room(L, 1, &len);
  mr_presence_entry *list;
  long n = mr_presence_list(srv->presence, room, len, &list);
  if (n < 0)
    return luaL_error(L, "out of memory");
  /* Pushing may raise (no memory): the list is moved into a block the
   * Lua GC owns first, so that nothing leaks. */
  mr_presence_entry *copy =
      n ? lua_newuserdata(L, (size_t)n * sizeof *copy) : NULL;
  if (n)
    memcpy(copy, list, (size_t)n * sizeof *copy);
  free(list);
  if (!n)
    lua_pushnil(L);
  mr_api_push_presence(L, copy, (size_t)n);
  lua_remove(L, -2);
  return 1;
}

void mr_api_presence_open(lua_State *L, mr_server *srv, int core) {
  static const luaL_Reg funcs[] = {{"track", l_track},
                                   {"untrack", l_untrack},
                                   {"presence", l_presence},
                                   {NULL, NULL}};
  if (core < 0)
    core = lua_gettop(L) + core + 1;
  for (const luaL_Reg *f = funcs; f->name; f++) {
    lua_pushlightuserdata(L, srv);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, core, f->name);
  }
}
