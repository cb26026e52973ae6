#include "gate.h"

#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "context.h"
#include "error.h"
#include "log.h"
#include "watchdog.h"

/* A call that leaves the heap over the limit while it already was is
 * blamed only when the heap grew by more than this since it was last
 * judged: compiled traces and interned strings grow it a little under
 * calls that keep nothing, and those calls must go on being served. */
#define MEMORY_SLACK (64 * 1024)
/* While over the limit, refusals re-collect at most this often (ms). */
#define MEMORY_RECHECK_MS 1000

/* The guards' state of one Lua state: a userdata that is the upvalue of
 * the traceback handler, so that the one registry lookup the gate makes
 * finds both. */
typedef struct {
  mr_server *srv;        /* whose stats count the hits; NULL: not counted */
  size_t limit;          /* bytes; 0: no limit */
  size_t baseline;       /* the heap when last judged over the limit */
  int over;              /* the last judgement: over the limit */
  uint64_t last_collect; /* uv_hrtime() ms of the last full collection */
} gate_env;

/* The interrupt (--handler-timeout). Only the loop's thread touches these:
 * the gate, and the watchdog's signal handler that interrupts it. */
static lua_State *volatile running;    /* the state of the outermost call */
static volatile sig_atomic_t hooked;   /* the timeout hook is set */
static volatile sig_atomic_t timedout; /* it raised in this call */

int mr_gate_traceback(lua_State *L) {
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

void mr_gate_log_error(const char *what, const char *msg) {
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

/* The registry key of the shared traceback handler: the address of this
 * variable, which needs no string hashing on the hot path. */
static const char traceback_key;

static size_t heap_bytes(lua_State *L) {
  return (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 +
         (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

static void collect(lua_State *L, gate_env *e) {
  lua_gc(L, LUA_GCCOLLECT, 0);
  e->last_collect = now_ms();
}

/* The count hook the interrupt sets: raises at the next bytecode the
 * interpreter runs, and keeps raising (the hook stays until the outermost
 * call returns), so a handler that catches the error with pcall cannot go
 * on. A C hook adds no frame: level 0 is the function that was running. */
static void on_timeout_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  timedout = 1;
  luaL_where(L, 0);
  lua_pushfstring(L, "%shandler timeout: ran over %d ms (--handler-timeout)",
                  lua_tostring(L, -1), (int)mr_watchdog_timeout());
  lua_error(L);
}

/* In the watchdog's signal handler on the loop's thread, while the call
 * that overran still runs (the watchdog checked its number): LuaJIT's own
 * interpreter sets its Ctrl-C hook from a signal handler the same way. */
static void interrupt(uint64_t seq) {
  (void)seq;
  lua_State *L = running;
  if (!L)
    return;
  lua_sethook(L, on_timeout_hook, LUA_MASKCOUNT, 1);
  hooked = 1;
}

/* Judges the heap after a call: returns 1 when this call is to be refused
 * for leaving it over the limit. */
static int over_limit(lua_State *L, gate_env *e) {
  size_t n = heap_bytes(L);
  if (n <= e->limit) {
    e->over = 0;
    return 0;
  }
  collect(L, e);
  n = heap_bytes(L);
  if (n <= e->limit) {
    e->over = 0;
    return 0;
  }
  int blame = !e->over || n > e->baseline + MEMORY_SLACK;
  if (blame || n < e->baseline)
    e->baseline = n;
  e->over = 1;
  return blame;
}

/* Logs a call refused for the memory limit, naming the handler's script
 * and line (fn at index idx). */
static void log_memory_hit(lua_State *L, int idx, gate_env *e,
                           const char *script, const char *event,
                           uint64_t conn) {
  static mr_log_limit lim = MR_LOG_LIMIT_INIT("lua memory limit hits");
  lua_Debug ar;
  char where[300] = "";
  if (lua_isfunction(L, idx)) {
    lua_pushvalue(L, idx);
    if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
      snprintf(where, sizeof where, " (%s:%d)", ar.short_src, ar.linedefined);
  }
  char c[40] = "";
  if (conn)
    snprintf(c, sizeof c, " (conn %llu)", (unsigned long long)conn);
  mr_log_limited(&lim, MR_LOG_ERROR,
                 "%s: %s%s%s left the Lua heap at %.1f MiB after a full "
                 "collection, over --lua-memory-limit %zu MiB; its work is "
                 "refused",
                 script, event, where, c, (double)heap_bytes(L) / 1048576.0,
                 e->limit / 1048576);
}

/* The label is only built when something failed, and the traceback
 * handler is one shared function, so the success path costs a table lookup
 * and a pcall. */
int mr_gate_call(lua_State *L, int nargs, int nres, const char *script,
                 const char *event, uint64_t conn) {
  int base = lua_gettop(L) - nargs;
  lua_pushlightuserdata(L, (void *)&traceback_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_getupvalue(L, -1, 1);
  gate_env *e = lua_touserdata(L, -1);
  lua_pop(L, 1);
  lua_insert(L, base);
  /* With a memory limit, a copy of the function stays below, to name the
   * handler if the call is refused. */
  int keep = e && e->limit;
  if (keep) {
    lua_pushvalue(L, base + 1);
    lua_insert(L, base);
    base++;
  }
  /* The label tells the watchdog what a loop that stopped answering
   * signals is stuck in, and its counter what to time. */
  mr_watchdog_label prev = mr_watchdog_enter(script, event, conn);
  if (!prev.event)
    running = L;
  int r = lua_pcall(L, nargs, nres, base);
  mr_watchdog_leave(prev);
  if (!prev.event) {
    /* After the counter moved on, so no interrupt can come in between and
     * leave the hook for the next call. */
    running = NULL;
    if (hooked) {
      lua_sethook(L, NULL, 0, 0);
      hooked = 0;
    }
    if (timedout) {
      timedout = 0;
      if (e && e->srv)
        e->srv->stats.handler_timeouts++;
    }
  }
  lua_remove(L, base);
  int refuse = keep && over_limit(L, e);
  if (refuse) {
    if (e->srv)
      e->srv->stats.lua_memory_limit_hits++;
    log_memory_hit(L, base - 1, e, script, event, conn);
  }
  if (keep)
    lua_remove(L, base - 1);
  if (refuse && r == 0) {
    lua_pop(L, nres);
    return MR_ENOMEM;
  }
  if (r != 0) {
    char what[4200];
    if (conn)
      snprintf(what, sizeof what, "%s: %s (conn %llu)", script, event,
               (unsigned long long)conn);
    else
      snprintf(what, sizeof what, "%s: %s", script, event);
    const char *msg = lua_tostring(L, -1);
    mr_gate_log_error(what, msg ? msg : "(no message)");
    lua_pop(L, 1);
    return MR_ELUA;
  }
  return 0;
}

static gate_env *env_of(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&traceback_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  gate_env *e = NULL;
  if (lua_iscfunction(L, -1) && lua_getupvalue(L, -1, 1)) {
    e = lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return e;
}

void mr_gate_init(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&traceback_key);
  gate_env *e = lua_newuserdata(L, sizeof *e);
  memset(e, 0, sizeof *e);
  lua_pushcclosure(L, mr_gate_traceback, 1);
  lua_rawset(L, LUA_REGISTRYINDEX);
  mr_watchdog_set_interrupt(interrupt);
}

void mr_gate_configure(lua_State *L, mr_server *srv) {
  gate_env *e = env_of(L);
  if (!e)
    return;
  e->srv = srv;
  e->limit = srv->cfg.lua_memory_limit * 1024 * 1024;
}

int mr_gate_over_memory(lua_State *L) {
  gate_env *e = env_of(L);
  if (!e || !e->limit || !e->over)
    return 0;
  if (heap_bytes(L) <= e->limit) {
    e->over = 0;
    return 0;
  }
  if (now_ms() - e->last_collect >= MEMORY_RECHECK_MS) {
    collect(L, e);
    if (heap_bytes(L) <= e->limit)
      e->over = 0;
  }
  return e->over;
}
