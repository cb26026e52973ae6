#include "gate.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>

#include "error.h"
#include "log.h"
#include "watchdog.h"

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

/* The label is only built when something failed, and the traceback
 * handler is one shared function, so the success path costs a table lookup
 * and a pcall. */
int mr_gate_call(lua_State *L, int nargs, int nres, const char *script,
                 const char *event, uint64_t conn) {
  int base = lua_gettop(L) - nargs;
  lua_pushlightuserdata(L, (void *)&traceback_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_insert(L, base);
  /* The label tells the watchdog what a loop that stopped answering
   * signals is stuck in. */
  mr_watchdog_label prev = mr_watchdog_enter(script, event, conn);
  int r = lua_pcall(L, nargs, nres, base);
  mr_watchdog_leave(prev);
  lua_remove(L, base);
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

void mr_gate_init(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&traceback_key);
  lua_pushcfunction(L, mr_gate_traceback);
  lua_rawset(L, LUA_REGISTRYINDEX);
}
