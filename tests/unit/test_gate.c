/* Unit tests for the gate's guards (core/gate.c).
 *
 * The memory limit: which calls are refused (the one that crossed it, then
 * only those that kept more), the over-limit state the server refuses new
 * work by, and its end when the heap is freed. The timeout: an interpreted
 * loop is interrupted by the watchdog's signal, counted, and the hook is
 * gone for the next call. And what the guards cost per call, printed (the
 * README quotes it). A JIT-compiled loop ends the process (exit 4), so that
 * is tested against the real binary in tests/integration/test_guards.py. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <time.h>
#include <uv.h>

#include "context.h"
#include "error.h"
#include "gate.h"
#include "log.h"
#include "test_util.h"
#include "watchdog.h"

static mr_server srv;

static lua_State *new_state(size_t limit_mb) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  memset(&srv, 0, sizeof srv);
  srv.cfg.lua_memory_limit = limit_mb;
  mr_gate_init(L);
  mr_gate_configure(L, &srv);
  return L;
}

/* Runs the global function name through the gate with one argument. */
static int call(lua_State *L, const char *name, const char *arg) {
  int top = lua_gettop(L);
  lua_getglobal(L, name);
  lua_pushstring(L, arg);
  int r = mr_gate_call(L, 1, 0, "test.lua", "on_message", 7);
  CHECK_EQ_INT(lua_gettop(L), top); /* the stack is as it was */
  return r;
}

static const char script[] =
    "hoard = {}\n"
    "function grow(mb)\n"
    "  for i = 1, tonumber(mb) do\n"
    "    hoard[#hoard + 1] = #hoard .. (' '):rep(1048576)\n"
    "  end\n"
    "end\n"
    "function touch(s) local t = {} for i = 1, 100 do t[i] = s .. i end end\n"
    "function free() hoard = {} end\n"
    "function fail() error('boom') end\n"
    "function spin() while true do end end\n"
    "jit.off(spin)\n"
    "function empty() end\n";

static void test_memory_limit(void) {
  lua_State *L = new_state(8);
  CHECK(luaL_dostring(L, script) == 0);
  CHECK_EQ_INT(call(L, "grow", "4"), 0);
  CHECK_EQ_INT(mr_gate_over_memory(L), 0);
  /* The call that crosses the limit is refused, counted, and the heap is
   * over from then on. */
  CHECK_EQ_INT(call(L, "grow", "5"), MR_ENOMEM);
  CHECK_EQ_INT(srv.stats.lua_memory_limit_hits, 1);
  CHECK_EQ_INT(mr_gate_over_memory(L), 1);
  /* A call that keeps nothing is served while over. */
  CHECK_EQ_INT(call(L, "touch", "x"), 0);
  CHECK_EQ_INT(srv.stats.lua_memory_limit_hits, 1);
  /* One that keeps more is refused. */
  CHECK_EQ_INT(call(L, "grow", "1"), MR_ENOMEM);
  CHECK_EQ_INT(srv.stats.lua_memory_limit_hits, 2);
  /* An error stays an error (MR_ELUA) even when the heap is over. */
  CHECK_EQ_INT(call(L, "fail", ""), MR_ELUA);
  /* Freed: the next call finds the heap under the limit again. */
  CHECK_EQ_INT(call(L, "free", ""), 0);
  CHECK_EQ_INT(mr_gate_over_memory(L), 0);
  CHECK_EQ_INT(call(L, "grow", "2"), 0);
  lua_close(L);
}

static void test_memory_limit_off(void) {
  lua_State *L = new_state(0);
  CHECK(luaL_dostring(L, script) == 0);
  CHECK_EQ_INT(call(L, "grow", "12"), 0);
  CHECK_EQ_INT(mr_gate_over_memory(L), 0);
  CHECK_EQ_INT(srv.stats.lua_memory_limit_hits, 0);
  lua_close(L);
}

/* The watchdog runs on this loop's thread; the test spins in Lua without
 * running the loop, as a stuck handler does. */
static void test_timeout_interrupts(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  lua_State *L = new_state(0);
  CHECK(luaL_dostring(L, script) == 0);
  mr_watchdog_set_timeout(100);
  CHECK(mr_watchdog_start(&loop, NULL, NULL) == 0);
  uint64_t t0 = uv_hrtime();
  CHECK_EQ_INT(call(L, "spin", ""), MR_ELUA);
  double ms = (double)(uv_hrtime() - t0) / 1e6;
  /* At the timeout plus at most one tick (a quarter of it) and a margin
   * for a loaded machine. */
  CHECK(ms >= 100 && ms < 1000);
  CHECK_EQ_INT(srv.stats.handler_timeouts, 1);
  /* The hook went with the call: the next one runs to its end. */
  CHECK(lua_gethook(L) == NULL);
  CHECK_EQ_INT(call(L, "touch", "y"), 0);
  CHECK_EQ_INT(srv.stats.handler_timeouts, 1);
  /* A second overrun is caught as well. */
  CHECK_EQ_INT(call(L, "spin", ""), MR_ELUA);
  CHECK_EQ_INT(srv.stats.handler_timeouts, 2);
  mr_watchdog_stop();
  mr_watchdog_set_timeout(0);
  lua_close(L);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

/* ns per call of an empty handler: lua_pcall alone, the gate with the
 * guards off, and with both on (the watchdog's timeout costs the loop the
 * same counter stores whether set or not). */
static double per_call(lua_State *L, int gate, int n) {
  uint64_t t0 = uv_hrtime();
  for (int i = 0; i < n; i++) {
    lua_getglobal(L, "empty");
    if (gate)
      mr_gate_call(L, 0, 0, "bench.lua", "on_message", 1);
    else
      lua_pcall(L, 0, 0, 0);
  }
  return (double)(uv_hrtime() - t0) / n;
}

static void bench(void) {
  const int n = 2000000;
  lua_State *off = new_state(0);
  CHECK(luaL_dostring(off, script) == 0);
  lua_State *on = new_state(1024);
  CHECK(luaL_dostring(on, script) == 0);
  per_call(off, 1, n / 10); /* warm up */
  double bare = per_call(off, 0, n);
  double gate_off = per_call(off, 1, n);
  double gate_on = per_call(on, 1, n);
  printf("gate cost per call: lua_pcall %.1f ns, gate (guards off) %.1f ns, "
         "gate (memory limit on) %.1f ns\n",
         bare, gate_off, gate_on);
  lua_close(off);
  lua_close(on);
}

int main(void) {
  mr_log_set_level(MR_LOG_ERROR + 1);
  test_memory_limit();
  test_memory_limit_off();
  test_timeout_interrupts();
  bench();
  return test_report();
}
