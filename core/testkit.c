/* moonroom.sim: the Lua C module under the busted kit
 * (lua/moonroom/testing.lua).
 *
 * A simulated server is the real core with no sockets: the real mr_server,
 * room registry and bridge (which loads the handler script into its own
 * lua_State, exactly as the server does), and virtual connections that are
 * fed real HTTP upgrade requests and real masked client frames. So the
 * handshake, on_connect, wslay, on_message, close handshake and on_close
 * paths the kit exercises are the server's own. Everything is synchronous:
 * every call that can close a connection ends at the server's safe point
 * (see settle), and the private libuv loop is never run; it only provides
 * uv_now, which is frozen unless advance() or run_timers() moves it. Script
 * timers (ws.after, ws.every) are the server's heap, run by run_timers().
 *
 * For testing.cluster, a server can also start the real cluster module
 * with no sockets (cluster_start): its links are virtual ones the kit opens
 * by index (link_open), whose bytes the Lua side moves from one node's end
 * to the other's (link_take, link_feed), and its heartbeat runs when the
 * kit calls cluster_tick with the shared clock's time.
 *
 * This file is compiled into the module only (build/moonroom/sim.so), never
 * into moonroom_core. It does not link LuaJIT: the host luajit process
 * provides the Lua C API, so the busted process and every simulated
 * script share one LuaJIT runtime. */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <uv.h>

#include "api.h"
#include "bridge.h"
#include "broadcast.h"
#include "cluster.h"
#include "codec.h"
#include "config.h"
#include "conn.h"
#include "error.h"
#include "http.h"
#include "link.h"
#include "log.h"
#include "rooms.h"
#include "server.h"
#include "testkit_codec.h"
#include "wire.h"

#define SIM_MT "moonroom.sim.server"
#define MAX_ARGS 64

/* What on_close was told for a connection that is gone (or, for a refused
 * handshake, what its teardown recorded). */
typedef struct {
  uint64_t id;
  uint16_t code;
  uint8_t had_lua;
  uint8_t reason_len;
  char reason[123];
} sim_grave;

typedef struct {
  uv_loop_t loop;
  mr_server *srv; /* NULL once freed */
  char script[4096];
  sim_grave *graves;
  size_t ngraves, cap;
  /* The cluster kit's virtual links (testing.cluster), by index; a
   * released one is NULL. The sim holds each until it releases it. */
  mr_link **links;
  size_t nlinks, links_cap;
} sim_t;

/* ---- helpers ------------------------------------------------------------- */

static sim_t *check_sim(lua_State *L) {
  sim_t *s = luaL_checkudata(L, 1, SIM_MT);
  if (!s->srv)
    luaL_error(L, "moonroom.sim: the simulated server is closed");
  return s;
}

static uint64_t check_id(lua_State *L, int idx) {
  lua_Number n = luaL_checknumber(L, idx);
  if (n < 1 || n != (lua_Number)(uint64_t)n)
    luaL_argerror(L, idx, "connection id expected");
  return (uint64_t)n;
}

static mr_conn *find_conn(sim_t *s, lua_State *L, int idx) {
  return mr_conn_find(s->srv, check_id(L, idx));
}

static int push_closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

static void bury(sim_t *s, const mr_conn *c) {
  if (s->ngraves == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    sim_grave *g = realloc(s->graves, cap * sizeof *g);
    if (!g)
      return; /* the record is a convenience; the close itself goes on */
    s->graves = g;
    s->cap = cap;
  }
  sim_grave *g = &s->graves[s->ngraves++];
  g->id = c->id;
  /* terminate() reports 1006 when no earlier reason was recorded. */
  g->code = c->close_code ? c->close_code : MR_CLOSE_ABNORMAL;
  size_t len;
  const char *reason = mr_conn_close_reason(c, &len);
  g->reason_len = c->close_code ? (uint8_t)len : 0;
  if (g->reason_len > sizeof g->reason)
    g->reason_len = sizeof g->reason;
  memcpy(g->reason, reason, g->reason_len);
  g->had_lua = (c->flags & MR_CF_LUA) != 0;
}

/* The safe point. For a virtual connection every teardown goes through the
 * doomed list (closes after a drained queue, drops, refusals, backpressure),
 * so finishing the doomed ones here, one at a time, is what
 * mr_server_flush does, plus a note of each close code for the kit. An
 * on_close may doom more connections, hence the loop. */
static void settle(sim_t *s) {
  mr_server *srv = s->srv;
  do {
    while (srv->doomed) {
      mr_conn *c = srv->doomed;
      bury(s, c);
      mr_conn_finish(c);
    }
    mr_server_flush(srv);
  } while (srv->doomed);
}

/* Lets go of every virtual link and closes the cluster, then runs the
 * private loop once so that libuv closes the cluster's handles (its
 * heartbeat timer and flush hook, never run by the kit): the loop can then
 * be closed. Nothing to do for a server without a cluster. */
static void release_cluster(sim_t *s) {
  mr_server *srv = s->srv;
  for (size_t i = 0; i < s->nlinks; i++)
    if (s->links[i])
      mr_link_release(s->links[i]);
  free(s->links);
  s->links = NULL;
  s->nlinks = s->links_cap = 0;
  if (!srv->cluster)
    return;
  mr_cluster_close(srv->cluster);
  uv_run(&s->loop, UV_RUN_DEFAULT);
}

static int newer_first(const void *a, const void *b) {
  uint64_t x = (*(mr_conn *const *)a)->id, y = (*(mr_conn *const *)b)->id;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Dooms every connection, newest first: the kit's closes are done in an
 * order a spec can rely on (on_close runs oldest first, see settle), not
 * in the order of the server's id table. */
static void doom_all(mr_server *srv, uint16_t code, const char *reason) {
  size_t n = srv->conns.count, pos = 0, i = 0;
  mr_conn **all = n ? malloc(n * sizeof *all) : NULL;
  for (mr_conn *c; (c = mr_conn_next(srv, &pos));) {
    if (all)
      all[i++] = c;
    else
      mr_conn_doom(c, code, reason); /* out of memory: in any order */
  }
  if (!all)
    return;
  qsort(all, n, sizeof *all, newer_first);
  for (i = 0; i < n; i++)
    mr_conn_doom(all[i], code, reason);
  free(all);
}

static void sim_free(sim_t *s) {
  if (!s->srv)
    return;
  mr_server *srv = s->srv;
  /* Whatever is still connected goes as on server exit: on_close runs. */
  doom_all(srv, MR_CLOSE_GOING_AWAY, "server shutting down");
  settle(s);
  mr_bridge_free(srv->bridge);
  srv->bridge = NULL;
  release_cluster(s);
  mr_server_free(srv);
  free(srv);
  s->srv = NULL;
  uv_loop_close(&s->loop);
  /* The graves stay readable until the userdata is collected. */
}

/* ---- sim.new(script, args) ------------------------------------------------
 */

/* new(script [, { "--max-message", "100", ... }]) -> server | nil, err
 * The options are parsed by the server's own command-line parser. */
static int l_new(lua_State *L) {
  size_t slen;
  const char *script = luaL_checklstring(L, 1, &slen);
  char *argv[MAX_ARGS + 3];
  int argc = 0;
  argv[argc++] = (char *)"moonroom";
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int)lua_objlen(L, 2);
    if (n > MAX_ARGS)
      return luaL_argerror(L, 2, "too many options");
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, 2, i);
      if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 2, "options must be strings");
      /* The string stays referenced by the table for the whole call. */
      argv[argc++] = (char *)lua_tostring(L, -1);
      lua_pop(L, 1);
    }
  }
  argv[argc++] = (char *)script;
  argv[argc] = NULL;

  sim_t *s = lua_newuserdata(L, sizeof *s);
  memset(s, 0, sizeof *s);
  luaL_getmetatable(L, SIM_MT);
  lua_setmetatable(L, -2);
  if (slen >= sizeof s->script) {
    lua_pushnil(L);
    lua_pushliteral(L, "script path too long");
    return 2;
  }

  mr_config cfg;
  char err[2048];
  int r = mr_config_parse(&cfg, argc, argv, err, sizeof err, stderr);
  if (r != MR_CONFIG_RUN) {
    lua_pushnil(L);
    lua_pushstring(L, r == MR_CONFIG_USAGE ? err : "not a server option");
    return 2;
  }
  memcpy(s->script, script, slen + 1);
  cfg.script = s->script;

  mr_server *srv = calloc(1, sizeof *srv);
  if (!srv)
    return luaL_error(L, "out of memory");
  int ur = uv_loop_init(&s->loop);
  if (ur != 0) {
    free(srv);
    return luaL_error(L, "uv_loop_init: %s", uv_strerror(ur));
  }
  /* The script finds the modules the specs can require: the host's
   * package.path (busted's lpath, LUA_PATH) after the script's directory.
   * The string stays on this stack while the bridge reads it, and the
   * server forgets it afterwards. */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  cfg.lua_path = lua_tostring(L, -1);
  mr_server_init(srv, &s->loop, &cfg);
  int ok = mr_bridge_new(srv, s->script, err, sizeof err) != NULL;
  srv->cfg.lua_path = NULL;
  lua_pop(L, 2);
  if (!ok) {
    mr_server_free(srv);
    free(srv);
    uv_loop_close(&s->loop);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  s->srv = srv;
  return 1;
}

/* ---- connections ----------------------------------------------------------
 */

/* s:open([remote_addr]) -> id: a virtual connection in the handshake state */
static int s_open(lua_State *L) {
  sim_t *s = check_sim(L);
  const char *remote = luaL_optstring(L, 2, NULL);
  mr_conn *c = mr_conn_new_virtual(s->srv);
  if (!c)
    return luaL_error(L, "out of memory");
  if (remote && mr_conn_set_virtual_remote(c, remote) != 0) {
    mr_conn_doom(c, MR_CLOSE_ABNORMAL, "out of memory");
    settle(s);
    return luaL_error(L, "out of memory");
  }
  lua_pushnumber(L, (lua_Number)c->id);
  return 1;
}

/* s:feed(id, bytes) -> true | nil, "closed": bytes as read from the socket */
static int s_feed(lua_State *L) {
  sim_t *s = check_sim(L);
  size_t len;
  mr_conn *c = find_conn(s, L, 2);
  const char *p = luaL_checklstring(L, 3, &len);
  if (!c)
    return push_closed(L);
  if (len > 0)
    mr_conn_feed(c, (const uint8_t *)p, len);
  settle(s);
  lua_pushboolean(L, 1);
  return 1;
}

/* s:take(id) -> bytes, alive | nil: everything the server queued for the
 * connection (as if the socket wrote it all), then the drained notice. */
static int s_take(lua_State *L) {
  sim_t *s = check_sim(L);
  uint64_t id = check_id(L, 2);
  mr_conn *c = mr_conn_find(s->srv, id);
  if (!c)
    return 0;
  size_t n = c->tx.outq.count;
  const uint8_t **ptrs = NULL;
  size_t *lens = NULL;
  if (n > 0) {
    ptrs = malloc(n * sizeof *ptrs);
    lens = malloc(n * sizeof *lens);
    if (!ptrs || !lens) {
      free(ptrs);
      free(lens);
      return luaL_error(L, "out of memory");
    }
    n = mr_outq_peek(&c->tx.outq, ptrs, lens, n);
  }
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += lens[i];
  char *out = total ? malloc(total) : NULL;
  if (total && !out) {
    free(ptrs);
    free(lens);
    return luaL_error(L, "out of memory");
  }
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    memcpy(out + off, ptrs[i], lens[i]);
    off += lens[i];
  }
  free(ptrs);
  free(lens);
  /* What a socket write would count. */
  s->srv->stats.bytes_out += total;
  mr_conn_virtual_drained(c);
  settle(s);
  lua_pushlstring(L, out ? out : "", total);
  free(out);
  lua_pushboolean(L, mr_conn_find(s->srv, id) != NULL);
  return 2;
}

/* s:drop(id) -> true | nil, "closed": the peer vanished (TCP reset) */
static int s_drop(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_conn *c = find_conn(s, L, 2);
  if (!c)
    return push_closed(L);
  /* As a failed read does: 1006 unless a close reason came first. */
  mr_conn_doom(c, MR_CLOSE_ABNORMAL, "");
  settle(s);
  lua_pushboolean(L, 1);
  return 1;
}

static const char *state_name(const mr_conn *c) {
  switch (c->state) {
  case MR_CONN_HANDSHAKE:
    return "handshake";
  case MR_CONN_OPEN:
    return (c->flags & MR_CF_DOOMED) ? "closing" : "open";
  case MR_CONN_CLOSING:
    return "closing";
  case MR_CONN_HTTP:
    return "http";
  default:
    return "closed";
  }
}

/* s:state(id) -> "handshake" | "open" | "closing", close_code, reason | nil */
static int s_state(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_conn *c = find_conn(s, L, 2);
  if (!c)
    return 0;
  lua_pushstring(L, state_name(c));
  lua_pushinteger(L, c->close_code);
  size_t len;
  const char *reason = mr_conn_close_reason(c, &len);
  lua_pushlstring(L, reason, len);
  return 3;
}

/* s:ids() -> { id, ... } of every connection the server holds */
static int s_ids(lua_State *L) {
  sim_t *s = check_sim(L);
  lua_newtable(L);
  int i = 0;
  size_t pos = 0;
  for (mr_conn *c; (c = mr_conn_next(s->srv, &pos));) {
    lua_pushnumber(L, (lua_Number)c->id);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* s:graves() -> { { id=, code=, reason=, on_close= }, ... } since last call
 * (also after free(), for the connections it closed) */
static int s_graves(lua_State *L) {
  sim_t *s = luaL_checkudata(L, 1, SIM_MT);
  lua_createtable(L, (int)s->ngraves, 0);
  for (size_t i = 0; i < s->ngraves; i++) {
    sim_grave *g = &s->graves[i];
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, (lua_Number)g->id);
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, g->code);
    lua_setfield(L, -2, "code");
    lua_pushlstring(L, g->reason, g->reason_len);
    lua_setfield(L, -2, "reason");
    lua_pushboolean(L, g->had_lua);
    lua_setfield(L, -2, "on_close");
    lua_rawseti(L, -2, (int)i + 1);
  }
  s->ngraves = 0;
  return 1;
}

/* ---- rooms -----------------------------------------------------------------
 */

static const char *check_room(lua_State *L, int idx, size_t *len) {
  const char *room = luaL_checklstring(L, idx, len);
  if (*len == 0)
    luaL_argerror(L, idx, "room name must not be empty");
  return room;
}

/* s:members(room) -> { id, ... } in the registry's order */
static int s_members(lua_State *L) {
  sim_t *s = check_sim(L);
  size_t len;
  const char *name = check_room(L, 2, &len);
  mr_room *r = mr_rooms_find(&s->srv->rooms, name, len);
  lua_createtable(L, r ? (int)r->count : 0, 0);
  int n = 0;
  mr_room_iter it;
  mr_member *m;
  mr_room_iter_init(&it, r);
  while ((m = mr_room_iter_next(&it))) {
    const mr_conn *c = mr_conn_of_member(m);
    lua_pushnumber(L, (lua_Number)c->id);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

/* s:count(room) -> number of members */
static int s_count(lua_State *L) {
  sim_t *s = check_sim(L);
  size_t len;
  const char *name = check_room(L, 2, &len);
  mr_room *r = mr_rooms_find(&s->srv->rooms, name, len);
  lua_pushinteger(L, r ? (lua_Integer)r->count : 0);
  return 1;
}

/* s:rooms(id) -> { name, ... } (unsorted) | nil, "closed" */
static int s_rooms(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_conn *c = find_conn(s, L, 2);
  if (!c)
    return push_closed(L);
  lua_createtable(L, (int)c->member.nlinks, 0);
  for (uint32_t i = 0; i < c->member.nlinks; i++) {
    const mr_room *r = mr_member_room(&c->member, i);
    lua_pushlstring(L, r->name, r->name_len);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

/* s:room_names() -> { name, ... } of every room (unsorted) */
static int s_room_names(lua_State *L) {
  sim_t *s = check_sim(L);
  lua_createtable(L, (int)s->srv->rooms.nrooms, 0);
  int i = 0;
  mr_room *r, *tmp;
  HASH_ITER(hh, s->srv->rooms.by_name, r, tmp) {
    lua_pushlstring(L, r->name, r->name_len);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* s:remote_broadcast(room, msg [, binary]) -> n: a room broadcast that a
 * peer node forwarded, delivered as the cluster link delivers it. */
static int s_remote_broadcast(lua_State *L) {
  sim_t *s = check_sim(L);
  size_t rlen, mlen;
  const char *room = check_room(L, 2, &rlen);
  const char *msg = luaL_checklstring(L, 3, &mlen);
  int binary = lua_toboolean(L, 4);
  int n = mr_broadcast_remote(s->srv, room, rlen, msg, mlen, binary);
  settle(s);
  if (n < 0)
    return luaL_error(L, "out of memory");
  lua_pushinteger(L, n);
  return 1;
}

/* ---- the server ------------------------------------------------------------
 */

/* s:stats() -> { counter = n, ..., rooms = n } */
static int s_stats(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_api_push_stats(L, s->srv);
  return 1;
}

/* s:reload() -> true | nil, err: what SIGHUP and the file watcher do */
static int s_reload(lua_State *L) {
  sim_t *s = check_sim(L);
  char err[2048];
  int r = mr_bridge_reload(s->srv->bridge, err, sizeof err);
  settle(s);
  if (r != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* s:version() -> "version N sha256:..." of the running script */
static int s_version(lua_State *L) {
  sim_t *s = check_sim(L);
  lua_pushstring(L, mr_bridge_version(s->srv->bridge));
  return 1;
}

/* s:now() -> the loop clock (ms), as ws.now() sees it */
static int s_now(lua_State *L) {
  sim_t *s = check_sim(L);
  lua_pushnumber(L, (lua_Number)uv_now(&s->loop));
  return 1;
}

/* s:advance(ms) -> now: moves the frozen clock forward (timers do not run:
 * the kit's advance() runs them with run_timers first) */
static int s_advance(lua_State *L) {
  sim_t *s = check_sim(L);
  lua_Number ms = luaL_checknumber(L, 2);
  luaL_argcheck(L, ms >= 0, 2, "cannot go back in time");
  s->loop.time += (uint64_t)ms;
  lua_pushnumber(L, (lua_Number)uv_now(&s->loop));
  return 1;
}

/* s:timer_due() -> the earliest script timer's due time (ms) | nil */
static int s_timer_due(lua_State *L) {
  sim_t *s = check_sim(L);
  uint64_t due;
  if (!mr_timers_peek(&s->srv->timers, &due))
    return 0;
  lua_pushnumber(L, (lua_Number)due);
  return 1;
}

/* s:run_timers(time) -> n: moves the clock to time (never back) and runs
 * the timers due then, as one timer run of the loop does; what they
 * schedule waits for the next call. The kit's advance() steps through the
 * due times with this. */
static int s_run_timers(lua_State *L) {
  sim_t *s = check_sim(L);
  lua_Number t = luaL_checknumber(L, 2);
  if (t > (lua_Number)s->loop.time)
    s->loop.time = (uint64_t)t;
  int n = mr_bridge_run_timers(s->srv->bridge, s->loop.time);
  settle(s);
  lua_pushinteger(L, n);
  return 1;
}

/* s:shutdown(): what SIGTERM does to connections: every open one is closed
 * with 1001 "server shutting down", handshakes are dropped. The caller lets
 * the clients answer, then calls free(). */
static int s_shutdown(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_server_shutdown(s->srv);
  settle(s);
  return 0;
}

/* s:free(): closes what is left (on_close runs) and frees everything */
static int s_free(lua_State *L) {
  sim_t *s = luaL_checkudata(L, 1, SIM_MT);
  sim_free(s);
  return 0;
}

static int s_gc(lua_State *L) {
  sim_t *s = luaL_checkudata(L, 1, SIM_MT);
  sim_free(s);
  free(s->graves);
  s->graves = NULL;
  s->ngraves = s->cap = 0;
  return 0;
}

static int s_tostring(lua_State *L) {
  sim_t *s = luaL_checkudata(L, 1, SIM_MT);
  lua_pushfstring(L, "moonroom.sim(%s%s)", s->script, s->srv ? "" : ", closed");
  return 1;
}

/* log_level(name): the core's log threshold for the whole process;
 * "debug", "info", "warn", "error" or "off". Returns the previous one. */
static int l_log_level(lua_State *L) {
  static const char *const names[] = {"debug", "info", "warn", "error", "off"};
  int prev = (int)mr_log_get_level();
  if (!lua_isnoneornil(L, 1)) {
    const char *name = luaL_checkstring(L, 1);
    int lv =
        strcmp(name, "off") == 0 ? MR_LOG_ERROR + 1 : mr_log_parse_level(name);
    if (lv < 0)
      return luaL_argerror(L, 1, "debug, info, warn, error or off expected");
    mr_log_set_level((enum mr_log_level)lv);
  }
  lua_pushstring(L, prev >= 0 && prev <= 4 ? names[prev] : "off");
  return 1;
}

/* ---- the cluster kit (testing.cluster) -------------------------------------
 */

/* What a killed node's connections report on the way out: nothing. The
 * process is gone, so no script runs and no event is counted. */
static int vanished_connect(mr_server *srv, mr_conn *c,
                            const mr_http_request *req, mr_conn_answer *ans) {
  (void)srv, (void)c, (void)req, (void)ans;
  return 0;
}
static int vanished_message(mr_server *srv, mr_conn *c, const uint8_t *msg,
                            size_t len, int binary) {
  (void)srv, (void)c, (void)msg, (void)len, (void)binary;
  return 0;
}
static void vanished_close(mr_server *srv, mr_conn *c, unsigned code,
                           const char *reason, size_t len) {
  (void)srv, (void)c, (void)code, (void)reason, (void)len;
}
static void vanished_refused(mr_server *srv, mr_conn *c) { (void)srv, (void)c; }
static int vanished_http_enabled(mr_server *srv) {
  (void)srv;
  return 0;
}
static int vanished_http(mr_server *srv, mr_conn *c, const mr_http_request *req,
                         const char *body, size_t body_len,
                         mr_http_answer *ans) {
  (void)srv, (void)c, (void)req, (void)body, (void)body_len, (void)ans;
  return 1;
}
static const mr_conn_events vanished_events = {
    vanished_connect, vanished_message,      vanished_close,
    vanished_refused, vanished_http_enabled, vanished_http};

/* s:cluster_start() -> true | nil, err: starts the real cluster on the
 * simulated server, with no listener and no seed peers (the node advertises
 * no address, so no node ever dials it): its links are the virtual ones the
 * kit opens with link_open. The node's name and cookie are the server's
 * --node and --cookie. */
static int s_cluster_start(lua_State *L) {
  sim_t *s = check_sim(L);
  if (s->srv->cluster)
    return luaL_error(L, "moonroom.sim: the cluster is already started");
  int r = mr_cluster_start(s->srv, mr_broadcast_remote, s->srv);
  if (r != 0) {
    lua_pushnil(L);
    lua_pushstring(L, mr_strerror(r));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static mr_cluster *check_cluster(lua_State *L, sim_t *s) {
  if (!s->srv->cluster)
    luaL_error(L, "moonroom.sim: the cluster is not started");
  return s->srv->cluster;
}

/* s:cluster_tick(time): moves the clock to time (never back) and runs the
 * cluster's heartbeat then, as its one-second timer does: handshakes past
 * their deadline and links silent for too long close, the others are
 * pinged. */
static int s_cluster_tick(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_cluster *cl = check_cluster(L, s);
  lua_Number t = luaL_checknumber(L, 2);
  if (t > (lua_Number)s->loop.time)
    s->loop.time = (uint64_t)t;
  mr_cluster_tick(cl, s->loop.time);
  settle(s);
  return 0;
}

/* s:set_now(ms): sets the frozen clock, in either direction. For a node the
 * cluster kit creates, whose clock must start at the cluster's time. */
static int s_set_now(lua_State *L) {
  sim_t *s = check_sim(L);
  lua_Number ms = luaL_checknumber(L, 2);
  luaL_argcheck(L, ms >= 0, 2, "a time >= 0 expected");
  s->loop.time = (uint64_t)ms;
  return 0;
}

/* s:peers() -> { name, ... } of the linked (authenticated) nodes, sorted
 * as ws.peers() lists them. */
static int s_peers(lua_State *L) {
  sim_t *s = check_sim(L);
  const char *names[256];
  size_t n =
      s->srv->cluster ? mr_cluster_peers(s->srv->cluster, names, 256) : 0;
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

/* s:link_open(dialer) -> index: one end of a virtual link, in the handshake
 * state; the dialer's end has queued its HELLO. The sim holds the link
 * until link_release (or until the server is freed). */
static int s_link_open(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_cluster *cl = check_cluster(L, s);
  int dialer = lua_toboolean(L, 2);
  if (s->nlinks == s->links_cap) {
    size_t cap = s->links_cap ? s->links_cap * 2 : 8;
    mr_link **links = realloc(s->links, cap * sizeof *links);
    if (!links)
      return luaL_error(L, "out of memory");
    s->links = links;
    s->links_cap = cap;
  }
  mr_link *l = mr_cluster_link_virtual(cl, dialer);
  if (!l)
    return luaL_error(L, "out of memory");
  s->links[s->nlinks++] = l;
  lua_pushinteger(L, (lua_Integer)s->nlinks);
  return 1;
}

static mr_link *check_link(lua_State *L, sim_t *s, int idx) {
  lua_Integer i = luaL_checkinteger(L, idx);
  if (i < 1 || (size_t)i > s->nlinks || !s->links[i - 1])
    luaL_argerror(L, idx, "no such link");
  return s->links[i - 1];
}

/* s:link_take(index) -> bytes: everything the link queued, as a socket
 * that wrote it all (whole frames, since frames are queued whole). */
static int s_link_take(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_link *l = check_link(L, s, 2);
  size_t n = l->tx.outq.bytes;
  if (n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  char *out = malloc(n);
  if (!out)
    return luaL_error(L, "out of memory");
  size_t got = mr_link_take(l, out, n);
  lua_pushlstring(L, out, got);
  free(out);
  return 1;
}

/* s:link_feed(index, bytes): bytes arrive as if read from the link's
 * socket; what they deliver reaches the clients at the safe point. */
static int s_link_feed(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_link *l = check_link(L, s, 2);
  size_t len;
  const char *p = luaL_checklstring(L, 3, &len);
  mr_link_feed(l, p, len);
  settle(s);
  return 0;
}

/* s:link_state(index) -> "handshake" | "up" | "closed", the peer's name
 * ("" before its HELLO) */
static int s_link_state(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_link *l = check_link(L, s, 2);
  static const char *const names[] = {"connecting", "handshake", "up",
                                      "closed"};
  lua_pushstring(L, (unsigned)l->state < MR_LINK_NSTATES ? names[l->state]
                                                         : "closed");
  lua_pushstring(L, l->name);
  return 2;
}

/* s:link_close(index, why): the link ends as when its socket reads EOF or
 * a reset (why is what the log says); a closed link is left alone. */
static int s_link_close(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_link *l = check_link(L, s, 2);
  const char *why = luaL_optstring(L, 3, "closed by the peer");
  mr_link_close(l, why, 0);
  settle(s);
  return 0;
}

/* s:link_release(index): the sim lets go of the link (an open one closes
 * first, "released"); the index is then invalid. */
static int s_link_release(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_link *l = check_link(L, s, 2);
  s->links[lua_tointeger(L, 2) - 1] = NULL;
  mr_link_release(l);
  settle(s);
  return 0;
}

/* s:kill(): the node's process vanishes (kill -9, a machine lost): no
 * script runs again (no on_close), its connections just end, and its links
 * close on this side only, so the other nodes learn of it only from their
 * heartbeat. Everything is freed as by free(). */
static int s_kill(lua_State *L) {
  sim_t *s = check_sim(L);
  mr_server *srv = s->srv;
  /* The script goes first: nothing that happens below may run it. */
  mr_bridge_free(srv->bridge);
  srv->bridge = NULL;
  srv->conn_events = &vanished_events;
  doom_all(srv, MR_CLOSE_ABNORMAL, "");
  settle(s);
  release_cluster(s);
  mr_server_free(srv);
  free(srv);
  s->srv = NULL;
  uv_loop_close(&s->loop);
  return 0;
}

/* The wire's frame tags by name (wire.h), for the kit's frame counts. */
static void push_wire_tags(lua_State *L) {
  static const struct {
    int tag;
    const char *name;
  } tags[] = {
      {MR_WIRE_HELLO, "HELLO"},         {MR_WIRE_CHALLENGE, "CHALLENGE"},
      {MR_WIRE_AUTH, "AUTH"},           {MR_WIRE_PEERS, "PEERS"},
      {MR_WIRE_INTEREST, "INTEREST"},   {MR_WIRE_INTEREST_ALL, "INTEREST_ALL"},
      {MR_WIRE_PING, "PING"},           {MR_WIRE_PONG, "PONG"},
      {MR_WIRE_ROOM_TEXT, "ROOM_TEXT"}, {MR_WIRE_ROOM_BINARY, "ROOM_BINARY"},
      {MR_WIRE_COUNTS, "COUNTS"},       {MR_WIRE_PRESENCE, "PRESENCE"},
  };
  lua_newtable(L);
  for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
    lua_pushstring(L, tags[i].name);
    lua_rawseti(L, -2, tags[i].tag);
  }
}

/* ---- module ---------------------------------------------------------------
 */

static const luaL_Reg server_methods[] = {
    {"open", s_open},
    {"feed", s_feed},
    {"take", s_take},
    {"drop", s_drop},
    {"state", s_state},
    {"ids", s_ids},
    {"graves", s_graves},
    {"members", s_members},
    {"count", s_count},
    {"rooms", s_rooms},
    {"room_names", s_room_names},
    {"remote_broadcast", s_remote_broadcast},
    {"stats", s_stats},
    {"reload", s_reload},
    {"version", s_version},
    {"now", s_now},
    {"advance", s_advance},
    {"shutdown", s_shutdown},
    {"free", s_free},
    {"timer_due", s_timer_due},
    {"run_timers", s_run_timers},
    {"cluster_start", s_cluster_start},
    {"cluster_tick", s_cluster_tick},
    {"set_now", s_set_now},
    {"peers", s_peers},
    {"link_open", s_link_open},
    {"link_take", s_link_take},
    {"link_feed", s_link_feed},
    {"link_state", s_link_state},
    {"link_close", s_link_close},
    {"link_release", s_link_release},
    {"kill", s_kill},
    {NULL, NULL}};

static const luaL_Reg module_funcs[] = {
    {"new", l_new}, {"log_level", l_log_level}, {NULL, NULL}};

int luaopen_moonroom_sim(lua_State *L);

int luaopen_moonroom_sim(lua_State *L) {
  if (luaL_newmetatable(L, SIM_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, server_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, s_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, s_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  luaL_register(L, NULL, module_funcs);
  luaL_register(L, NULL, mr_testkit_codec_funcs);
  lua_pushliteral(L, "moonroom " MOONROOM_VERSION);
  lua_setfield(L, -2, "version");
  push_wire_tags(L);
  lua_setfield(L, -2, "wire_tags");
  return 1;
}
