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
#include "log.h"

const char *const mr_script_handler_names[MR_H_COUNT] = {
    "on_connect", "on_message", "on_close",
    "on_reload",  "on_http",    "on_presence"};

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

/* ---- modules from the script's directory --------------------------------- */

/* The script's directory, "." for a bare file name. */
static void script_dir(const mr_script *s, char dir[4096]) {
  snprintf(dir, 4096, "%s", s->path);
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  else
    strcpy(dir, ".");
}

/* Pushes a table { [module name] = file } of the modules in package.loaded
 * that live in the script's directory (DIR/NAME.lua or DIR/NAME/init.lua,
 * dots as slashes, so "lib.util" is DIR/lib/util.lua): the modules the
 * script required from next to itself. The standard libraries and
 * preloaded modules (moonroom) are never among them. */
static void push_local_modules(mr_script *s) {
  static const char *const builtin[] = {
      "_G", "package", "coroutine", "string", "table", "math", "io",
      "os", "debug",   "bit",       "jit",    "ffi",   NULL};
  lua_State *L = s->L;
  char dir[4096], mod[4096], path[8300];
  script_dir(s, dir);
  lua_newtable(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_getfield(L, -2, "loaded");
  if (!lua_istable(L, -1) || !lua_istable(L, -2)) {
    lua_pop(L, 3);
    return;
  }
  /* Stack: found, package, preload, loaded. */
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
      lua_pushvalue(L, -1);
      lua_pushstring(L, path);
      lua_rawset(L, -7);
    }
  }
  lua_pop(L, 3);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sets s->version from the script's source and the modules it loaded from
 * its directory (push_local_modules, read now, in name order), so that a
 * reload caused by a module alone names a new version. Without such
 * modules the digest is SHA-256 of the script alone. */
static void set_version(mr_script *s, const char *src, size_t len) {
  lua_State *L = s->L;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  memset(md, 0, sizeof md);
  if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
    EVP_DigestUpdate(ctx, src, len);
    push_local_modules(s);
    int t = lua_gettop(L);
    size_t n = 0;
    const char *names[256];
    lua_pushnil(L);
    while (lua_next(L, t) != 0 && n < sizeof names / sizeof names[0]) {
      lua_pop(L, 1);
      names[n++] = lua_tostring(L, -1); /* kept alive by the table */
    }
    lua_settop(L, t);
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
      lua_getfield(L, t, names[i]);
      char err[64];
      size_t mlen = 0;
      char *m = read_file(lua_tostring(L, -1), &mlen, err, sizeof err);
      lua_pop(L, 1);
      unsigned long long size = m ? mlen : ~0ULL;
      /* Each module is "\0NAME\0CONTENT<size>", so that no two sets of
       * modules hash alike; a module that went missing hashes as a size
       * no file has. */
      EVP_DigestUpdate(ctx, "", 1);
      EVP_DigestUpdate(ctx, names[i], strlen(names[i]) + 1);
      if (m)
        EVP_DigestUpdate(ctx, m, mlen);
      EVP_DigestUpdate(ctx, &size, sizeof size);
      free(m);
    }
    lua_settop(L, t - 1);
    EVP_DigestFinal_ex(ctx, md, &mdlen);
  }
  EVP_MD_CTX_free(ctx);
  snprintf(s->version, sizeof s->version,
           "version %u sha256:%02x%02x%02x%02x%02x%02x", s->generation, md[0],
           md[1], md[2], md[3], md[4], md[5]);
}

/* ---- the handler table ------------------------------------------------- */

/* Lower-cases name and drops '_' and '-' into out (at most cap - 1 bytes):
 * the form in which onMessage, On_Message and on-message are one name. */
static size_t normalise(const char *name, size_t len, char *out, size_t cap) {
  size_t j = 0;
  for (size_t i = 0; i < len && j + 1 < cap; i++) {
    char c = name[i];
    if (c == '_' || c == '-')
      continue;
    out[j++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  out[j] = '\0';
  return j;
}

/* Levenshtein distance between a and b (both at most 63 bytes). */
static size_t edit_distance(const char *a, size_t alen, const char *b,
                            size_t blen) {
  size_t row[64];
  for (size_t j = 0; j <= blen; j++)
    row[j] = j;
  for (size_t i = 1; i <= alen; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= blen; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[blen];
}

const char *mr_script_closest_handler(const char *key, size_t len) {
  char norm[64], known[64];
  if (len == 0 || len >= sizeof norm)
    return NULL;
  for (int i = 0; i < MR_H_COUNT; i++)
    if (strlen(mr_script_handler_names[i]) == len &&
        memcmp(mr_script_handler_names[i], key, len) == 0)
      return NULL; /* a handler, spelt right */
  size_t n = normalise(key, len, norm, sizeof norm);
  /* on_x, On_x, onX, on-x: written as a handler whatever follows. */
  int styled =
      len > 2 && (key[0] == 'o' || key[0] == 'O') &&
      (key[1] == 'n' || key[1] == 'N') &&
      (key[2] == '_' || key[2] == '-' || (key[2] >= 'A' && key[2] <= 'Z'));
  const char *best = NULL;
  size_t best_d = (size_t)-1;
  for (int i = 0; i < MR_H_COUNT; i++) {
    const char *h = mr_script_handler_names[i];
    size_t k = normalise(h, strlen(h), known, sizeof known);
    size_t d = edit_distance(norm, n, known, k);
    if (d < best_d) {
      best_d = d;
      best = h;
    }
  }
  /* Anything else counts only when it is a near miss that starts like a
   * handler (onmesage, onclose), so that keys such as "online", "once" or
   * "close" stay the script's own business. */
  return styled || (best_d <= 2 && n > 2 && norm[0] == 'o' && norm[1] == 'n')
             ? best
             : NULL;
}

/* Warns about every key of the handler table (on top of the stack) that
 * looks like a handler but is none: it would silently never be called. */
static void warn_unknown_keys(mr_script *s) {
  lua_State *L = s->L;
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      continue;
    size_t len;
    const char *key = lua_tolstring(L, -1, &len);
    const char *near = mr_script_closest_handler(key, len);
    if (near)
      mr_warn("%s: the handler table has '%s', which is not a handler and "
              "will never be called; did you mean %s?",
              s->path, key, near);
  }
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
  warn_unknown_keys(s);
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
 * directory (push_local_modules), so that the reloaded script requires them
 * afresh and a changed module takes effect. The old handlers keep the
 * module tables they already hold. Leaves on the stack a table of the
 * forgotten modules, for restore_local_modules. */
static void forget_local_modules(mr_script *s) {
  lua_State *L = s->L;
  lua_newtable(L); /* the saved modules, left on the stack for the caller */
  push_local_modules(s);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_remove(L, -2);
  /* Stack: saved, found, loaded. Clearing an existing field of loaded
   * while walking found is allowed (it is another table). */
  lua_pushnil(L);
  while (lua_next(L, -3) != 0) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushvalue(L, -1);
    lua_rawget(L, -4);
    lua_rawset(L, -6); /* saved[name] = loaded[name] */
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, -4); /* loaded[name] = nil */
  }
  lua_pop(L, 2);
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
  int had[MR_H_COUNT];
  for (int i = 0; i < MR_H_COUNT; i++)
    had[i] = s->refs[i] != LUA_NOREF;
  install_handlers(s);
  lua_remove(L, saved);
  /* Dropping a handler is legal but easy to do by mistake (a rename, a
   * deleted line), and its effect is silent: say so. */
  for (int i = 0; i < MR_H_COUNT; i++)
    if (had[i] && s->refs[i] == LUA_NOREF)
      mr_warn("%s: reload: %s is no longer defined", s->path,
              mr_script_handler_names[i]);
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
