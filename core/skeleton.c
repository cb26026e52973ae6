#include "skeleton.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the files ------------------------------------------------------------
 */

static const char app_lua[] =
    "-- A moonroom handler: a client joins the room named in its URL,\n"
    "--   ws://127.0.0.1:8080/?room=lobby&name=ada\n"
    "-- and what it sends goes to everyone in that room. The handlers and the\n"
    "-- `moonroom` module are described in moonroom's README.\n"
    "local ws = require \"moonroom\"\n"
    "\n"
    "return {\n"
    "  on_connect = function(conn, req)\n"
    "    local room = req.query.room or \"lobby\"\n"
    "    if room == \"\" or #room > 64 then\n"
    "      return false, 400, \"room must be 1 to 64 bytes\"\n"
    "    end\n"
    "    conn.state.room = room\n"
    "    conn.state.name = req.query.name or (\"guest\" .. conn.id)\n"
    "    ws.join(conn, room)\n"
    "    ws.broadcast_except(room, conn.state.name .. \" joined\", conn)\n"
    "  end,\n"
    "\n"
    "  on_message = function(conn, msg, is_binary)\n"
    "    local room = conn.state.room\n"
    "    if is_binary then\n"
    "      conn:close(1003, \"text only\")\n"
    "    elseif msg == \"/who\" then\n"
    "      conn:send((\"%d here\"):format(ws.count(room)))\n"
    "    else\n"
    "      ws.broadcast(room, conn.state.name .. \": \" .. msg)\n"
    "    end\n"
    "  end,\n"
    "\n"
    "  on_close = function(conn)\n"
    "    ws.broadcast(conn.state.room, conn.state.name .. \" left\")\n"
    "  end,\n"
    "}\n";

static const char app_spec_lua[] =
    "-- Specs for app.lua, run by moonroom's test kit against the server's "
    "real\n"
    "-- core: `busted` in the app's directory (see .busted).\n"
    "local testing = require \"moonroom.testing\"\n"
    "\n"
    "describe(\"app.lua\", function()\n"
    "  local srv\n"
    "\n"
    "  before_each(function()\n"
    "    srv = testing.server(\"app.lua\")\n"
    "  end)\n"
    "\n"
    "  after_each(function()\n"
    "    srv:close()\n"
    "  end)\n"
    "\n"
    "  it(\"puts clients in the room named in the URL and announces them\", "
    "function()\n"
    "    local ada = srv:connect(\"/?room=dev&name=ada\")\n"
    "    local bob = srv:connect(\"/?room=dev&name=bob\")\n"
    "    assert.same({ ada.id, bob.id }, srv:members(\"dev\"))\n"
    "    assert.same({ \"bob joined\" }, ada:messages())\n"
    "    assert.same({}, bob:messages())\n"
    "  end)\n"
    "\n"
    "  it(\"broadcasts to the room, sender included\", function()\n"
    "    local ada = srv:connect(\"/?room=dev&name=ada\")\n"
    "    local bob = srv:connect(\"/?room=dev&name=bob\")\n"
    "    local cat = srv:connect(\"/?room=ops&name=cat\")\n"
    "    ada:messages() -- the join notice\n"
    "    ada:send(\"hello\")\n"
    "    assert.equals(\"ada: hello\", ada:next())\n"
    "    assert.equals(\"ada: hello\", bob:next())\n"
    "    assert.same({}, cat:messages())\n"
    "  end)\n"
    "\n"
    "  it(\"answers /who with the number of people in the room\", "
    "function()\n"
    "    local ada = srv:connect(\"/?name=ada\")\n"
    "    srv:connect(\"/?name=bob\")\n"
    "    ada:messages()\n"
    "    ada:send(\"/who\")\n"
    "    assert.equals(\"2 here\", ada:next())\n"
    "  end)\n"
    "\n"
    "  it(\"refuses a room name that is too long\", function()\n"
    "    local conn, status, body = srv:try_connect(\"/?room=\" .. "
    "(\"x\"):rep(65))\n"
    "    assert.is_nil(conn)\n"
    "    assert.equals(400, status)\n"
    "    assert.equals(\"room must be 1 to 64 bytes\", body)\n"
    "  end)\n"
    "\n"
    "  it(\"closes a connection that sends binary with 1003\", function()\n"
    "    local ada = srv:connect(\"/?name=ada\")\n"
    "    ada:send(\"\\0\\1\", true)\n"
    "    assert.equals(1003, ada.close_code)\n"
    "    assert.equals(\"text only\", ada.close_reason)\n"
    "  end)\n"
    "\n"
    "  it(\"tells the room when someone leaves\", function()\n"
    "    local ada = srv:connect(\"/?room=dev&name=ada\")\n"
    "    local bob = srv:connect(\"/?room=dev&name=bob\")\n"
    "    ada:messages()\n"
    "    bob:close()\n"
    "    assert.equals(\"bob left\", ada:next())\n"
    "    assert.same({ ada.id }, srv:members(\"dev\"))\n"
    "  end)\n"
    "end)\n";

static const char busted_conf[] =
    "-- The test kit runs moonroom's core inside busted, under LuaJIT.\n"
    "return {\n"
    "  _all = { lua = \"luajit\" },\n"
    "}\n";

const mr_skeleton_file mr_skeleton_files[] = {
    {"app.lua", app_lua},
    {"spec/app_spec.lua", app_spec_lua},
    {".busted", busted_conf},
};
const size_t mr_skeleton_nfiles =
    sizeof mr_skeleton_files / sizeof *mr_skeleton_files;

static const char usage[] = "usage: moonroom new DIR";

/* ---- writing --------------------------------------------------------------
 */

/* Creates dir and its missing parents, as mkdir -p does. Returns 0, or -1
 * with errno set. */
static int make_dirs(const char *dir) {
  char buf[4096];
  size_t len = strlen(dir);
  if (len >= sizeof buf) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(buf, dir, len + 1);
  for (char *p = buf + 1;; p++) {
    if (*p != '/' && *p != '\0')
      continue;
    char c = *p;
    *p = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
      return -1;
    *p = c;
    if (c == '\0')
      return 0;
  }
}

/* Writes text to a file that must not exist yet (O_EXCL, so a file that
 * appeared since the check is not overwritten either). Returns 0, or -1
 * with errno set. */
static int write_new(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0666);
  if (fd < 0)
    return -1;
  size_t len = strlen(text), off = 0;
  while (off < len) {
    ssize_t n = write(fd, text + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    off += (size_t)n;
  }
  return close(fd);
}

/* Prints s so that a POSIX shell reads it back as one word: as it is when
 * it holds only safe characters, else in single quotes. */
static void put_word(FILE *out, const char *s) {
  if (*s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789_-./:@%+=,") == strlen(s)) {
    fputs(s, out);
    return;
  }
  fputc('\'', out);
  for (; *s; s++)
    if (*s == '\'')
      fputs("'\\''", out);
    else
      fputc(*s, out);
  fputc('\'', out);
}

/* True when the ';'-separated search path has the entry dir + suffix. */
static int on_path(const char *path, const char *dir, const char *suffix) {
  size_t dlen = strlen(dir), slen = strlen(suffix);
  while (path && *path) {
    const char *end = strchr(path, ';');
    size_t n = end ? (size_t)(end - path) : strlen(path);
    if (n == dlen + slen && memcmp(path, dir, dlen) == 0 &&
        memcmp(path + dlen, suffix, slen) == 0)
      return 1;
    path = end ? end + 1 : NULL;
  }
  return 0;
}

/* Prints the exports that let busted find the kit, when LuaJIT's path as
 * this environment sets it (LUA_PATH, LUA_CPATH, or the built-in default)
 * does not reach it. The path is read from a fresh lua_State of the same
 * LuaJIT that luajit itself runs on. */
static void print_kit_paths(FILE *out, const char *lua_dir,
                            const char *cmod_dir) {
  lua_State *L = luaL_newstate();
  if (!L)
    return;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_getfield(L, -2, "cpath");
  int need_path =
      lua_dir && *lua_dir && !on_path(lua_tostring(L, -2), lua_dir, "/?.lua");
  int need_cpath =
      cmod_dir && *cmod_dir && !on_path(lua_tostring(L, -1), cmod_dir, "/?.so");
  lua_close(L);
  if (!need_path && !need_cpath)
    return;
  fputs("busted finds moonroom's test kit once you\n  export", out);
  char entry[4200];
  if (need_path) {
    snprintf(entry, sizeof entry, "%s/?.lua;;", lua_dir);
    fputs(" LUA_PATH=", out);
    put_word(out, entry);
  }
  if (need_cpath) {
    snprintf(entry, sizeof entry, "%s/?.so;;", cmod_dir);
    fputs(" LUA_CPATH=", out);
    put_word(out, entry);
  }
  fputc('\n', out);
}

int mr_skeleton_main(const char *prog, int nargs, char **args,
                     const char *lua_dir, const char *cmod_dir, FILE *out,
                     FILE *err) {
  if (nargs == 1 &&
      (strcmp(args[0], "--help") == 0 || strcmp(args[0], "-h") == 0)) {
    fprintf(out,
            "%s\n\nWrites a new app into DIR: app.lua (a room handler), "
            "spec/app_spec.lua\n(its specs, through moonroom.testing) and "
            ".busted (LuaJIT). Existing files\nare never overwritten.\n",
            usage);
    return 0;
  }
  if (nargs != 1 || args[0][0] == '\0' || args[0][0] == '-') {
    fprintf(err, "moonroom: %s\n", usage);
    return 2;
  }
  /* "app/" names the same directory as "app", and prints better without
   * the slash. */
  char dir[4096];
  size_t len = strlen(args[0]);
  while (len > 1 && args[0][len - 1] == '/')
    len--;
  if (len >= sizeof dir) {
    fprintf(err, "moonroom new: %s: path too long\n", args[0]);
    return 1;
  }
  memcpy(dir, args[0], len);
  dir[len] = '\0';
  char path[4200];
  for (size_t i = 0; i < mr_skeleton_nfiles; i++) {
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, mr_skeleton_files[i].path);
    if (lstat(path, &st) == 0) {
      fprintf(err, "moonroom new: %s already exists; nothing written\n", path);
      return 1;
    }
  }
  for (size_t i = 0; i < mr_skeleton_nfiles; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, mr_skeleton_files[i].path);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    int r = make_dirs(path);
    *slash = '/';
    if (r != 0 || write_new(path, mr_skeleton_files[i].text) != 0) {
      fprintf(err, "moonroom new: cannot write %s: %s\n", path,
              strerror(errno));
      return 1;
    }
    fprintf(out, "wrote %s\n", path);
  }
  fputc('\n', out);
  print_kit_paths(out, lua_dir, cmod_dir);
  fputs("run it:   ", out);
  put_word(out, prog);
  fputc(' ', out);
  snprintf(path, sizeof path, "%s/app.lua", dir);
  put_word(out, path);
  fputs("\ntest it:  cd ", out);
  put_word(out, dir);
  fputs(" && busted\n", out);
  return 0;
}
