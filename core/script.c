#include "script.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gate.h"

const char *const mr_script_handler_names[MR_H_COUNT] = {
    "on_connect", "on_message", "on_close", "on_reload"};

static void set_version(mr_script *s, const char *src, size_t len) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_Digest(src, len, md, &mdlen, EVP_sha256(), NULL);
  snprintf(s->version, sizeof s->version,
           "version %u sha256:%02x%02x%02x%02x%02x%02x", s->generation, md[0],
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
static int load_handlers(mr_script *s, char *err, size_t errlen) {
  lua_State *L = s->L;
  size_t len;
  char *src = read_file(s->path, &len, err, errlen);
  if (!src)
    return MR_ELUA;
  char chunkname[4100];
  snprintf(chunkname, sizeof chunkname, "@%s", s->path);
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
  lua_pushcfunction(L, mr_gate_traceback);
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
             s->path, luaL_typename(L, -1));
    lua_settop(L, top);
    free(src);
    return MR_ELUA;
  }
  for (int i = 0; i < MR_H_COUNT; i++) {
    lua_getfield(L, -1, mr_script_handler_names[i]);
    int t = lua_type(L, -1);
    lua_pop(L, 1);
    if (t != LUA_TNIL && t != LUA_TFUNCTION) {
      snprintf(err, errlen, "%s: handler %s must be a function, got %s",
               s->path, mr_script_handler_names[i], lua_typename(L, t));
      lua_settop(L, top);
      free(src);
      return MR_ELUA;
    }
  }
  s->generation++;
  set_version(s, src, len);
  free(src);
  return 0;
}

/* Takes the handler table on top of the stack and makes it current. */
static void install_handlers(mr_script *s) {
  lua_State *L = s->L;
  for (int i = 0; i < MR_H_COUNT; i++) {
    luaL_unref(L, LUA_REGISTRYINDEX, s->refs[i]);
    lua_getfield(L, -1, mr_script_handler_names[i]);
    s->refs[i] = lua_isfunction(L, -1) ? luaL_ref(L, LUA_REGISTRYINDEX)
                                       : (lua_pop(L, 1), LUA_NOREF);
  }
  luaL_unref(L, LUA_REGISTRYINDEX, s->table_ref);
  s->table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Forgets the package.loaded entries of modules that live in the script's
 * directory (DIR/NAME.lua or DIR/NAME/init.lua, dots as slashes), so that
 * the reloaded script requires them afresh and a changed module takes
 * effect. The old handlers keep the module tables they already hold. The
 * standard libraries and preloaded modules (moonroom) are never forgotten. */
static void forget_local_modules(mr_script *s) {
  static const char *const builtin[] = {
      "_G", "package", "coroutine", "string", "table", "math", "io",
      "os", "debug",   "bit",       "jit",    "ffi",   NULL};
  lua_State *L = s->L;
  char dir[4096], mod[4096], path[8300];
  lua_newtable(L); /* the saved modules, left on the stack for the caller */
  snprintf(dir, sizeof dir, "%s", s->path);
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

int mr_script_reload(mr_script *s, char *err, size_t errlen) {
  lua_State *L = s->L;
  forget_local_modules(s); /* pushes the saved modules */
  int saved = lua_gettop(L);
  unsigned old_generation = s->generation;
  char old_version[sizeof s->version];
  memcpy(old_version, s->version, sizeof old_version);
  if (load_handlers(s, err, errlen) != 0) {
    restore_local_modules(L);
    return MR_ELUA;
  }
  /* on_reload(old_handlers) lets the new version migrate what the old one
   * kept; an error there keeps the old handlers too. */
  lua_getfield(L, -1, "on_reload");
  if (lua_isfunction(L, -1)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->table_ref);
    if (mr_gate_call(L, 1, 0, s->path, "on_reload", 0) != 0) {
      lua_pop(L, 1);
      lua_pushvalue(L, saved);
      restore_local_modules(L);
      lua_remove(L, saved);
      s->generation = old_generation;
      memcpy(s->version, old_version, sizeof old_version);
      snprintf(err, errlen, "%s: on_reload raised an error (see above)",
               s->path);
      return MR_ELUA;
    }
  } else {
    lua_pop(L, 1);
  }
  install_handlers(s);
  lua_remove(L, saved);
  return 0;
}

void mr_script_init(mr_script *s, lua_State *L) {
  memset(s, 0, sizeof *s);
  s->L = L;
  for (int i = 0; i < MR_H_COUNT; i++)
    s->refs[i] = LUA_NOREF;
  s->table_ref = LUA_NOREF;
}

int mr_script_load(mr_script *s, const char *path, char *err, size_t errlen) {
  if (strlen(path) >= sizeof s->path) {
    snprintf(err, errlen, "%s: path too long", path);
    return MR_ELUA;
  }
  strcpy(s->path, path);
  if (load_handlers(s, err, errlen) != 0)
    return MR_ELUA;
  install_handlers(s);
  return 0;
}
