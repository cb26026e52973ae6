#include "bridge.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "conn.h"
#include "error.h"
#include "log.h"
#include "query.h"
#include "server.h"

/* The public `moonroom` module is Lua (lua/moonroom.lua) compiled into the
 * binary at build time; it wraps the C functions registered here as
 * `moonroom.core`. */
#include "moonroom_lua.h"

#define HANDLE_MT "moonroom.conn"
#define MAX_ROOM_NAME 1024

enum { H_CONNECT, H_MESSAGE, H_CLOSE, H_RELOAD, H_COUNT };
static const char *const handler_names[H_COUNT] = {"on_connect", "on_message",
                                                   "on_close", "on_reload"};

struct mr_bridge {
  lua_State *L;
  mr_server *srv;
  char script[4096];
  int refs[H_COUNT]; /* registry refs to the handler functions */
  int table_ref;     /* the handler table itself */
  unsigned generation;
  char version[64];
};

/* A connection as Lua sees it: the id, never the pointer. The server pointer
 * lets methods resolve the id; it outlives every handle. */
typedef struct {
  uint64_t id;
  mr_server *srv;
  int has_state; /* conn.state was created (lazily, on first use) */
} handle_t;

/* ---- the protected gate ---------------------------------------------------
 */

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Logs a Lua error with its traceback on one line: a log record is one line,
 * so the traceback's line breaks become " | ". */
static void log_lua_error(const char *what, const char *msg) {
  char flat[1800];
  size_t j = 0;
  for (size_t i = 0; msg[i] && j + 4 < sizeof flat; i++) {
    if (msg[i] == '\n') {
      flat[j++] = ' ';
      flat[j++] = '|';
      flat[j++] = ' ';
    } else if (msg[i] != '\t') {
      flat[j++] = msg[i];
    }
  }
  flat[j] = '\0';
  mr_error("%s: %s", what, flat);
}

/* The registry key of the id -> handle table (see push_handle). */
static const char handles_key;

/* The registry key of the shared traceback handler: the address of this
 * variable, which needs no string hashing on the hot path. */
static const char traceback_key;

/* Every call into Lua goes through here: the function and nargs arguments
 * are on the stack; on success nres results replace them. On error the
 * message and traceback are logged, naming the script, the event and the
 * connection (conn 0: none), and MR_ELUA is returned with the stack back
 * where it was before the function was pushed. The label is only built when
 * something failed, and the traceback handler is one shared function, so
 * the success path costs a table lookup and a pcall. */
static int gate(lua_State *L, int nargs, int nres, const char *script,
                const char *event, uint64_t conn) {
  int base = lua_gettop(L) - nargs;
  lua_pushlightuserdata(L, (void *)&traceback_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_insert(L, base);
  int r = lua_pcall(L, nargs, nres, base);
  lua_remove(L, base);
  if (r != 0) {
    char what[4200];
    if (conn)
      snprintf(what, sizeof what, "%s: %s (conn %llu)", script, event,
               (unsigned long long)conn);
    else
      snprintf(what, sizeof what, "%s: %s", script, event);
    const char *msg = lua_tostring(L, -1);
    log_lua_error(what, msg ? msg : "(no message)");
    lua_pop(L, 1);
    return MR_ELUA;
  }
  return 0;
}

/* ---- handles ----------------------------------------------------------------
 */

static mr_server *upvalue_server(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

/* Pushes the one handle of connection c, creating it on first use, so that
 * handles compare equal and work as table keys. */
static void push_handle(lua_State *L, mr_server *srv, mr_conn *c) {
  lua_pushlightuserdata(L, (void *)&handles_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushnumber(L, (lua_Number)c->id);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    handle_t *h = lua_newuserdata(L, sizeof *h);
    h->id = c->id;
    h->srv = srv;
    h->has_state = 0;
    luaL_getmetatable(L, HANDLE_MT);
    lua_setmetatable(L, -2);
    lua_pushnumber(L, (lua_Number)c->id);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
}

static handle_t *check_handle(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, HANDLE_MT);
}

/* Resolves a handle to its connection if the connection is still open. */
static mr_conn *open_conn(lua_State *L, int idx) {
  handle_t *h = check_handle(L, idx);
  mr_conn *c = mr_server_find(h->srv, h->id);
  if (!c || c->state != MR_CONN_OPEN || (c->flags & MR_CF_DOOMED))
    return NULL;
  return c;
}

static int closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

static const char *check_room(lua_State *L, int idx, size_t *len) {
  const char *room = luaL_checklstring(L, idx, len);
  if (*len == 0 || *len > MAX_ROOM_NAME)
    luaL_argerror(L, idx, "room name must be 1 to 1024 bytes");
  return room;
}

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
  mr_conn *c = open_conn(L, 1);
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
  mr_conn *c = open_conn(L, 1);
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
    handle_t *h = check_handle(L, except_idx);
    except = mr_server_find(srv, h->id);
  }
  int binary = opt_binary(L, bin_idx);
  int n = mr_server_broadcast(srv, room, rlen, msg, mlen, binary, except);
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
  mr_conn *c = open_conn(L, 1);
  const char *msg = luaL_checklstring(L, 2, &len);
  int binary = opt_binary(L, 3);
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
  mr_conn *c = open_conn(L, 1);
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
  if (!c)
    return closed(L);
  mr_conn_close(c, (uint16_t)code, reason, len);
  lua_pushboolean(L, 1);
  return 1;
}

/* rooms(conn) -> { room, ... } (sorted) | nil, "closed" */
static int l_rooms(lua_State *L) {
  mr_conn *c = open_conn(L, 1);
  if (!c)
    return closed(L);
  lua_createtable(L, (int)c->member.nlinks, 0);
  for (uint32_t i = 0; i < c->member.nlinks; i++) {
    mr_room *r = c->member.links[i].room;
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
  for (uint32_t i = 0; r && i < r->count; i++) {
    mr_conn *c = r->members[i].member->owner;
    push_handle(L, srv, c);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* count(room) -> number of local members */
static int l_count(lua_State *L) {
  mr_server *srv = upvalue_server(L);
  size_t len;
  const char *room = check_room(L, 1, &len);
  mr_room *r = mr_rooms_find(&srv->rooms, room, len);
  lua_pushinteger(L, r ? (lua_Integer)r->count : 0);
  return 1;
}

void mr_bridge_push_stats(lua_State *L, const mr_server *srv) {
  lua_newtable(L);
#define MR_STATS_PUSH(name)                                                    \
  lua_pushnumber(L, (lua_Number)srv->stats.name);                              \
  lua_setfield(L, -2, #name);
  MR_STATS_MAP(MR_STATS_PUSH)
#undef MR_STATS_PUSH
  lua_pushinteger(L, (lua_Integer)srv->rooms.nrooms);
  lua_setfield(L, -2, "rooms");
}

/* stats() -> { counter = n, ... } */
static int l_stats(lua_State *L) {
  mr_bridge_push_stats(L, upvalue_server(L));
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
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  sort_top(L);
  return 1;
}

/* ---- handle metatable -------------------------------------------------------
 */

static int h_index(lua_State *L) {
  handle_t *h = check_handle(L, 1);
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "id") == 0) {
    lua_pushnumber(L, (lua_Number)h->id);
    return 1;
  }
  if (strcmp(key, "state") == 0) {
    /* The userdata's environment table is the connection's `state`, made on
     * first use so that connections whose script keeps no state cost no
     * table. */
    if (!h->has_state) {
      lua_newtable(L);
      lua_setfenv(L, 1);
      h->has_state = 1;
    }
    lua_getfenv(L, 1);
    return 1;
  }
  if (strcmp(key, "remote_addr") == 0) {
    mr_conn *c = mr_server_find(h->srv, h->id);
    if (!c)
      return 0;
    lua_pushstring(L, mr_conn_remote(c));
    return 1;
  }
  if (strcmp(key, "open") == 0) {
    lua_pushboolean(L, open_conn(L, 1) != NULL);
    return 1;
  }
  /* Methods live in the metatable's `methods` table. */
  luaL_getmetatable(L, HANDLE_MT);
  lua_getfield(L, -1, "methods");
  lua_getfield(L, -1, key);
  return 1;
}

static int h_newindex(lua_State *L) {
  return luaL_error(L, "connection handles are read-only; keep your data "
                       "in conn.state");
}

static int h_tostring(lua_State *L) {
  handle_t *h = check_handle(L, 1);
  lua_pushfstring(L, "moonroom.conn(%d)", (int)h->id);
  return 1;
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
                                      {NULL, NULL}};

#define CORE_KEY "moonroom.core"

static int l_open_core(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, CORE_KEY);
  return 1;
}

void mr_bridge_open_core(lua_State *L, mr_server *srv) {
  luaL_newmetatable(L, HANDLE_MT);
  lua_pushcfunction(L, h_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, h_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, h_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "moonroom.conn");
  lua_setfield(L, -2, "__metatable");

  /* The core functions, bound to srv; handles get the ones that take a
   * connection first as methods, so conn:send() works in a script that
   * never required the module. */
  lua_newtable(L);
  for (const luaL_Reg *f = core_funcs; f->name; f++) {
    lua_pushlightuserdata(L, srv);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  lua_newtable(L);
  const char *methods[] = {"send", "close", "rooms", "join", "leave"};
  for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
    lua_getfield(L, -2, methods[i]);
    lua_setfield(L, -2, methods[i]);
  }
  lua_setfield(L, -3, "methods");
  lua_setfield(L, LUA_REGISTRYINDEX, CORE_KEY);
  lua_pop(L, 1);

  lua_pushlightuserdata(L, (void *)&handles_key);
  lua_newtable(L);
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, (void *)&traceback_key);
  lua_pushcfunction(L, traceback);
  lua_rawset(L, LUA_REGISTRYINDEX);

  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, l_open_core);
  lua_setfield(L, -2, "moonroom.core");
  lua_pop(L, 2);
}

static int load_facade(lua_State *L) {
  if (luaL_loadbuffer(L, (const char *)luaJIT_BC_moonroom,
                      luaJIT_BC_moonroom_SIZE, "=moonroom") != 0)
    return lua_error(L);
  lua_call(L, 0, 1);
  return 1;
}

/* ---- loading and reloading ---------------------------------------------- */

static void set_version(mr_bridge *b, const char *src, size_t len) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_Digest(src, len, md, &mdlen, EVP_sha256(), NULL);
  snprintf(b->version, sizeof b->version,
           "version %u sha256:%02x%02x%02x%02x%02x%02x", b->generation, md[0],
           md[1], md[2], md[3], md[4], md[5]);
}

static char *read_file(const char *path, size_t *len, char *err,
                       size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap);
  size_t r;
  while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) {
        free(buf);
        buf = NULL;
      }
      buf = nb;
    }
  }
  fclose(f);
  if (!buf)
    snprintf(err, errlen, "%s: out of memory", path);
  *len = n;
  return buf;
}

/* Compiles and runs the script in a fresh environment and leaves its
 * handler table on the stack. Returns 0, or MR_ELUA with err filled. */
static int load_handlers(mr_bridge *b, char *err, size_t errlen) {
  lua_State *L = b->L;
  size_t len;
  char *src = read_file(b->script, &len, err, errlen);
  if (!src)
    return MR_ELUA;
  char chunkname[4100];
  snprintf(chunkname, sizeof chunkname, "@%s", b->script);
  int top = lua_gettop(L);
  if (luaL_loadbuffer(L, src, len, chunkname) != 0) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, top);
    free(src);
    return MR_ELUA;
  }
  /* A fresh global environment per load: a new version of the script
   * starts from clean globals that still see the standard library. */
  lua_newtable(L);
  lua_newtable(L);
  lua_pushvalue(L, LUA_GLOBALSINDEX);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  lua_setfenv(L, -2);
  lua_pushcfunction(L, traceback);
  lua_insert(L, -2);
  if (lua_pcall(L, 0, 1, -2) != 0) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, top);
    free(src);
    return MR_ELUA;
  }
  lua_remove(L, -2);
  if (!lua_istable(L, -1)) {
    snprintf(err, errlen,
             "%s: the script must return a table of handlers "
             "(on_connect, on_message, on_close), got %s",
             b->script, luaL_typename(L, -1));
    lua_settop(L, top);
    free(src);
    return MR_ELUA;
  }
  for (int i = 0; i < H_COUNT; i++) {
    lua_getfield(L, -1, handler_names[i]);
    int t = lua_type(L, -1);
    lua_pop(L, 1);
    if (t != LUA_TNIL && t != LUA_TFUNCTION) {
      snprintf(err, errlen, "%s: handler %s must be a function, got %s",
               b->script, handler_names[i], lua_typename(L, t));
      lua_settop(L, top);
      free(src);
      return MR_ELUA;
    }
  }
  b->generation++;
  set_version(b, src, len);
  free(src);
  return 0;
}

/* Takes the handler table on top of the stack and makes it current. */
static void install_handlers(mr_bridge *b) {
  lua_State *L = b->L;
  for (int i = 0; i < H_COUNT; i++) {
    luaL_unref(L, LUA_REGISTRYINDEX, b->refs[i]);
    lua_getfield(L, -1, handler_names[i]);
    b->refs[i] = lua_isfunction(L, -1) ? luaL_ref(L, LUA_REGISTRYINDEX)
                                       : (lua_pop(L, 1), LUA_NOREF);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, b->table_ref);
  b->table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

mr_bridge *mr_bridge_new(mr_server *srv, const char *script, char *err,
                         size_t errlen) {
  mr_bridge *b = calloc(1, sizeof *b);
  if (!b || strlen(script) >= sizeof b->script) {
    snprintf(err, errlen, "%s: %s", script,
             b ? "path too long" : "out of memory");
    free(b);
    return NULL;
  }
  b->srv = srv;
  strcpy(b->script, script);
  for (int i = 0; i < H_COUNT; i++)
    b->refs[i] = LUA_NOREF;
  b->table_ref = LUA_NOREF;
  b->L = luaL_newstate();
  if (!b->L) {
    snprintf(err, errlen, "cannot create a Lua state");
    free(b);
    return NULL;
  }
  lua_State *L = b->L;
  luaL_openlibs(L);
  mr_bridge_open_core(L, srv);
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
  if (load_handlers(b, err, errlen) != 0) {
    mr_bridge_free(b);
    srv->bridge = NULL;
    return NULL;
  }
  install_handlers(b);
  return b;
}

/* Forgets the package.loaded entries of modules that live in the script's
 * directory (DIR/NAME.lua or DIR/NAME/init.lua, dots as slashes), so that
 * the reloaded script requires them afresh and a changed module takes
 * effect. The old handlers keep the module tables they already hold. The
 * standard libraries and preloaded modules (moonroom) are never forgotten. */
static void forget_local_modules(mr_bridge *b) {
  static const char *const builtin[] = {
      "_G", "package", "coroutine", "string", "table", "math", "io",
      "os", "debug",   "bit",       "jit",    "ffi",   NULL};
  lua_State *L = b->L;
  char dir[4096], mod[4096], path[8300];
  lua_newtable(L); /* the saved modules, left on the stack for the caller */
  snprintf(dir, sizeof dir, "%s", b->script);
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  else
    strcpy(dir, ".");
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_getfield(L, -2, "loaded");
  if (!lua_istable(L, -1) || !lua_istable(L, -2)) {
    lua_pop(L, 3);
    return;
  }
  /* Stack: saved, package, preload, loaded. */
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      continue;
    size_t len;
    const char *name = lua_tolstring(L, -1, &len);
    int skip = len == 0 || len >= sizeof mod || strlen(name) != len ||
               strchr(name, '.') == name || strncmp(name, "jit.", 4) == 0 ||
               strncmp(name, "string.", 7) == 0 ||
               strncmp(name, "table.", 6) == 0;
    for (int i = 0; builtin[i] && !skip; i++)
      skip = strcmp(name, builtin[i]) == 0;
    if (!skip) {
      lua_pushvalue(L, -1);
      lua_rawget(L, -4); /* preload[name] */
      skip = !lua_isnil(L, -1);
      lua_pop(L, 1);
    }
    if (skip)
      continue;
    for (size_t i = 0; i <= len; i++)
      mod[i] = name[i] == '.' ? '/' : name[i];
    snprintf(path, sizeof path, "%s/%s.lua", dir, mod);
    FILE *f = fopen(path, "rb");
    if (!f) {
      snprintf(path, sizeof path, "%s/%s/init.lua", dir, mod);
      f = fopen(path, "rb");
    }
    if (f) {
      fclose(f);
      /* Keep the old module in the saved table (stack -5) so that a failed
       * reload can put it back, then clear it; clearing an existing field
       * during lua_next is allowed. Stack: key, loaded, preload, package,
       * saved. */
      lua_pushvalue(L, -1);
      lua_pushvalue(L, -1);
      lua_rawget(L, -4);
      lua_rawset(L, -7);
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, -4);
    }
  }
  lua_pop(L, 3);
}

/* Puts back the modules forget_local_modules saved (the table on top of the
 * stack), undoing whatever the failed load required in their place; pops
 * the table. */
static void restore_local_modules(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_remove(L, -2);
  lua_pushnil(L);
  while (lua_next(L, -3) != 0) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_pop(L, 2);
}

int mr_bridge_reload(mr_bridge *b, char *err, size_t errlen) {
  lua_State *L = b->L;
  forget_local_modules(b); /* pushes the saved modules */
  int saved = lua_gettop(L);
  unsigned old_generation = b->generation;
  char old_version[sizeof b->version];
  memcpy(old_version, b->version, sizeof old_version);
  if (load_handlers(b, err, errlen) != 0) {
    restore_local_modules(L);
    b->srv->stats.reload_failures++;
    return MR_ELUA;
  }
  /* on_reload(old_handlers) lets the new version migrate what the old one
   * kept; an error there keeps the old handlers too. */
  lua_getfield(L, -1, "on_reload");
  if (lua_isfunction(L, -1)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->table_ref);
    if (gate(L, 1, 0, b->script, "on_reload", 0) != 0) {
      lua_pop(L, 1);
      lua_pushvalue(L, saved);
      restore_local_modules(L);
      lua_remove(L, saved);
      b->generation = old_generation;
      memcpy(b->version, old_version, sizeof old_version);
      snprintf(err, errlen, "%s: on_reload raised an error (see above)",
               b->script);
      b->srv->stats.reload_failures++;
      return MR_ELUA;
    }
  } else {
    lua_pop(L, 1);
  }
  install_handlers(b);
  lua_remove(L, saved);
  b->srv->stats.reloads++;
  mr_info("reloaded %s: now running %s", b->script, b->version);
  return 0;
}

void mr_bridge_free(mr_bridge *b) {
  if (!b)
    return;
  if (b->L)
    lua_close(b->L);
  free(b);
}

const char *mr_bridge_version(const mr_bridge *b) {
  return b ? b->version : "no script";
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
  push_handle(L, b->srv, c);
  if (b->refs[H_CONNECT] == LUA_NOREF) {
    lua_pop(L, 1);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->refs[H_CONNECT]);
  lua_insert(L, -2);
  push_request(L, c, req);
  if (gate(L, 2, 3, b->script, "on_connect", c->id) != 0) {
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
  if (b->refs[H_MESSAGE] == LUA_NOREF)
    return 0;
  lua_State *L = b->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->refs[H_MESSAGE]);
  push_handle(L, b->srv, c);
  lua_pushlstring(L, (const char *)msg, len);
  lua_pushboolean(L, binary);
  return gate(L, 3, 0, b->script, "on_message", c->id);
}

void mr_bridge_on_close(mr_bridge *b, mr_conn *c, unsigned code,
                        const char *reason, size_t len) {
  lua_State *L = b->L;
  if (b->refs[H_CLOSE] != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->refs[H_CLOSE]);
    push_handle(L, b->srv, c);
    lua_pushinteger(L, code);
    lua_pushlstring(L, reason, len);
    if (gate(L, 3, 0, b->script, "on_close", c->id) != 0)
      b->srv->stats.handler_errors++;
  }
  mr_bridge_forget(b, c);
}

void mr_bridge_forget(mr_bridge *b, mr_conn *c) {
  lua_State *L = b->L;
  lua_pushlightuserdata(L, (void *)&handles_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushnumber(L, (lua_Number)c->id);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}
