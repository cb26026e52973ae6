/* Unit tests for the Lua bridge (core/bridge.c): loading a handler script
 * and its error messages, the version string, reloading (on_reload, failed
 * reloads keep the old handlers), handler errors, and connection handles.
 *
 * The handler scripts are written here, to temporary files made with
 * mkstemp (and removed at the end), so that each one sits next to the
 * checks on its line numbers and a reload can rewrite the file. Events come
 * from virtual connections on a server that never opens a socket, driven
 * through the harness in tests/unit/virtual_server.h. */
#include <openssl/evp.h>
#include <unistd.h>

#include "virtual_server.h"

/* ---- temporary scripts --------------------------------------------------- */

enum { MAX_TEMPS = 16 };
static char temps[MAX_TEMPS][64];
static int ntemps;

/* Writes src to the file at path (replacing it). Returns 0 or -1. */
static int write_file(const char *path, const char *src) {
  FILE *f = fopen(path, "wb");
  if (!f)
    return -1;
  size_t len = strlen(src);
  int ok = fwrite(src, 1, len, f) == len;
  return fclose(f) == 0 && ok ? 0 : -1;
}

/* Creates a new temporary script holding src; returns its path (removed at
 * exit by remove_temps), or NULL. */
static const char *temp_script(const char *src) {
  if (ntemps == MAX_TEMPS)
    return NULL;
  char *path = temps[ntemps];
  snprintf(path, sizeof temps[0], "/tmp/moonroom-unit-bridge-XXXXXX");
  int fd = mkstemp(path);
  if (fd < 0)
    return NULL;
  close(fd);
  ntemps++;
  return write_file(path, src) == 0 ? path : NULL;
}

/* Creates a temporary module /tmp/moonroom-unit-mod-XXXXXX.lua holding src;
 * writes its module name (the file name without ".lua") into name. */
static const char *temp_module(const char *src, char *name, size_t cap) {
  if (ntemps == MAX_TEMPS)
    return NULL;
  char *path = temps[ntemps];
  snprintf(path, sizeof temps[0], "/tmp/moonroom-unit-mod-XXXXXX.lua");
  int fd = mkstemps(path, 4);
  if (fd < 0)
    return NULL;
  close(fd);
  ntemps++;
  snprintf(name, cap, "%.*s", (int)(strlen(path) - 5 - 4), path + 5);
  return write_file(path, src) == 0 ? path : NULL;
}

static void remove_temps(void) {
  for (int i = 0; i < ntemps; i++)
    unlink(temps[i]);
  ntemps = 0;
}

/* What mr_bridge_version reports for generation gen of source src. */
static const char *expected_version(unsigned gen, const char *src) {
  static char out[64];
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_Digest(src, strlen(src), md, &mdlen, EVP_sha256(), NULL);
  snprintf(out, sizeof out, "version %u sha256:%02x%02x%02x%02x%02x%02x", gen,
           md[0], md[1], md[2], md[3], md[4], md[5]);
  return out;
}

/* True when s starts with prefix. */
static int starts_with(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

#define CHECK_PREFIX(s, prefix)                                                \
  do {                                                                         \
    if (!CHECK(starts_with((s), (prefix))))                                    \
      fprintf(stderr, "  got \"%s\", expected it to start with \"%s\"\n", (s), \
              (prefix));                                                       \
  } while (0)

/* ---- the scripts --------------------------------------------------------- */

/* Version 1: keeps every handle it is given in on_connect. */
static const char script_v1[] =
    "local ws = require 'moonroom'\n"
    "local kept = {}\n"
    "return {\n"
    "  tag = 'v1',\n"
    "  on_connect = function(conn, req)\n"
    "    if req.query.crash then error('crash in on_connect') end\n"
    "    kept[conn.id] = conn\n"
    "    ws.join(conn, 'all')\n"
    "  end,\n"
    "  on_message = function(conn, msg)\n"
    "    local cmd, arg = msg:match('^(%a+)%s?(.*)$')\n"
    "    if cmd == 'who' then\n"
    "      conn:send('v1 migrated=' .. tostring(migrated))\n"
    "    elseif cmd == 'same' then\n"
    "      local m = ws.members('all')\n"
    "      local found = false\n"
    "      for _, h in ipairs(m) do found = found or rawequal(h, conn) end\n"
    "      conn:send(tostring(rawequal(kept[conn.id], conn)) .. ' ' ..\n"
    "        tostring(kept[conn.id] == conn) .. ' ' .. tostring(found))\n"
    "    elseif cmd == 'poke' then\n"
    "      local h = kept[tonumber(arg)]\n"
    "      local ok, err = h:send('hi')\n"
    "      conn:send(string.format('%s,%s,%s,%d', tostring(ok),\n"
    "        tostring(err), tostring(h.open), h.id))\n"
    "    elseif cmd == 'fail' then\n"
    "      error('failed on purpose')\n"
    "    elseif cmd == 'crashclose' then\n"
    "      conn.state.crash = true\n"
    "      conn:send('armed')\n"
    "    else\n"
    "      conn:send('v1 ' .. msg)\n"
    "    end\n"
    "  end,\n"
    "  on_close = function(conn)\n"
    "    if conn.state.crash then error('crash in on_close') end\n"
    "  end,\n"
    "}\n";

/* Version 2: migrates from the old handler table in on_reload. */
static const char script_v2[] =
    "return {\n"
    "  on_reload = function(old)\n"
    "    migrated = old.tag\n"
    "  end,\n"
    "  on_message = function(conn, msg)\n"
    "    conn:send('v2 migrated=' .. tostring(migrated))\n"
    "  end,\n"
    "}\n";

/* ---- loading ------------------------------------------------------------- */

/* Runs mr_bridge_new on src and returns the error it wrote (NULL when it
 * unexpectedly succeeded); *path gets the script's path. */
static const char *load_error(const char *src, const char **path) {
  static char err[4096];
  *path = temp_script(src);
  if (!CHECK(*path != NULL))
    return NULL;
  harness h;
  if (!CHECK(h_init(&h, *path, NULL) == 0))
    return NULL;
  strcpy(err, "(unchanged)");
  mr_bridge *b = mr_bridge_new(h.srv, *path, err, sizeof err);
  CHECK(b == NULL);
  CHECK(h.srv->bridge == NULL);
  h_stop(&h);
  return b ? NULL : err;
}

static void test_load_errors(void) {
  const char *path, *err;
  char want[512];

  /* A syntax error: the compiler's message, file and line. */
  err = load_error("local t = {}\n"
                   "local x = = 1\n"
                   "return t\n",
                   &path);
  if (err) {
    snprintf(want, sizeof want, "%s:2: unexpected symbol near '='", path);
    CHECK_STR(err, want);
  }

  /* A runtime error while the script runs: file, line, then a traceback. */
  err = load_error("local x = 1\n"
                   "\n"
                   "error('boom at load')\n"
                   "return {}\n",
                   &path);
  if (err) {
    snprintf(want, sizeof want, "%s:3: boom at load\nstack traceback:", path);
    CHECK_PREFIX(err, want);
  }

  /* Not a table: the file. */
  err = load_error("return 42\n", &path);
  if (err) {
    snprintf(want, sizeof want,
             "%s: the script must return a table of handlers (on_connect, "
             "on_message, on_close), got number",
             path);
    CHECK_STR(err, want);
  }
  err = load_error("local unused = 1\n", &path);
  if (err) {
    snprintf(want, sizeof want,
             "%s: the script must return a table of handlers (on_connect, "
             "on_message, on_close), got nil",
             path);
    CHECK_STR(err, want);
  }

  /* A handler that is not a function: the file and the handler's name (a
   * field's value carries no line). */
  err = load_error("return {\n"
                   "  on_connect = function() end,\n"
                   "  on_message = 'hello',\n"
                   "}\n",
                   &path);
  if (err) {
    snprintf(want, sizeof want,
             "%s: handler on_message must be a function, got string", path);
    CHECK_STR(err, want);
  }
  err = load_error("return { on_reload = {} }\n", &path);
  if (err) {
    snprintf(want, sizeof want,
             "%s: handler on_reload must be a function, got table", path);
    CHECK_STR(err, want);
  }

  /* A missing file. */
  path = temp_script("return {}\n");
  if (CHECK(path != NULL)) {
    unlink(path);
    harness h;
    char buf[512];
    if (CHECK(h_init(&h, path, NULL) == 0)) {
      CHECK(mr_bridge_new(h.srv, path, buf, sizeof buf) == NULL);
      snprintf(want, sizeof want, "%s: No such file or directory", path);
      CHECK_STR(buf, want);
      h_stop(&h);
    }
  }
}

static void test_version(void) {
  const char *path = temp_script(script_v1);
  harness h;
  if (!CHECK(path != NULL && h_init(&h, path, NULL) == 0))
    return;
  char err[512] = "";
  mr_bridge *b = mr_bridge_new(h.srv, path, err, sizeof err);
  if (!CHECK(b != NULL)) {
    fprintf(stderr, "  %s\n", err);
    h_stop(&h);
    return;
  }
  CHECK(h.srv->bridge == b);
  CHECK_PREFIX(mr_bridge_version(b), "version 1 sha256:");
  CHECK_STR(mr_bridge_version(b), expected_version(1, script_v1));
  CHECK_STR(mr_bridge_version(NULL), "no script");
  /* A script that returns an empty table is valid: no handlers at all. */
  uint64_t id = open_conn(&h, "/", 1);
  send_text(&h, id, "hello");
  EXPECT_TEXT(&h, id, "v1 hello");
  h_stop(&h);

  const char empty[] = "return {}\n";
  path = temp_script(empty);
  if (!CHECK(path != NULL && h_start(&h, path, NULL) == 0))
    return;
  CHECK_STR(mr_bridge_version(h.srv->bridge), expected_version(1, empty));
  id = open_conn(&h, "/", 1);
  send_text(&h, id, "ignored");
  mr_conn *c = mr_conn_find(h.srv, id);
  CHECK(c != NULL && mr_conn_is_open(c) && c->tx.outq.count == 0);
  CHECK_EQ_INT(
      mr_bridge_on_message(h.srv->bridge, c, (const uint8_t *)"x", 1, 0), 0);
  h_stop(&h);
}

/* ---- reloading ----------------------------------------------------------- */

static void test_reload(void) {
  const char *path = temp_script(script_v1);
  harness h;
  if (!CHECK(path != NULL && h_start(&h, path, NULL) == 0))
    return;
  mr_bridge *b = h.srv->bridge;
  char err[2048], want[512];
  uint64_t id = open_conn(&h, "/", 1);
  send_text(&h, id, "who");
  EXPECT_TEXT(&h, id, "v1 migrated=nil");

  /* A changed file: a new version whose on_reload saw the old handlers. */
  CHECK(write_file(path, script_v2) == 0);
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), 0);
  CHECK(h.srv->bridge == b);
  CHECK_STR(mr_bridge_version(b), expected_version(2, script_v2));
  CHECK_EQ_INT(h.srv->stats.reloads, 1);
  CHECK_EQ_INT(h.srv->stats.reload_failures, 0);
  /* The open connection is now served by version 2. */
  send_text(&h, id, "who");
  EXPECT_TEXT(&h, id, "v2 migrated=v1");

  /* A syntax error: refused, with file and line; version 2 stays. */
  CHECK(write_file(path, "return {\n"
                         "  on_message = function(conn, msg)\n"
                         "    conn:send('v3' ..)\n"
                         "  end,\n"
                         "}\n") == 0);
  strcpy(err, "");
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), MR_ELUA);
  snprintf(want, sizeof want, "%s:3: unexpected symbol near ')'", path);
  CHECK_STR(err, want);
  CHECK_EQ_INT(h.srv->stats.reload_failures, 1);
  CHECK_EQ_INT(h.srv->stats.reloads, 1);
  CHECK_STR(mr_bridge_version(b), expected_version(2, script_v2));
  send_text(&h, id, "who");
  EXPECT_TEXT(&h, id, "v2 migrated=v1");

  /* A runtime error at load. */
  CHECK(write_file(path, "local t = nil\n"
                         "return t.x\n") == 0);
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), MR_ELUA);
  snprintf(want, sizeof want, "%s:2: attempt to index local 't' (a nil value)",
           path);
  CHECK_PREFIX(err, want);
  CHECK_EQ_INT(h.srv->stats.reload_failures, 2);
  send_text(&h, id, "who");
  EXPECT_TEXT(&h, id, "v2 migrated=v1");

  /* on_reload itself raising also keeps the old handlers and version. */
  CHECK(write_file(path, "return {\n"
                         "  on_reload = function(old) error('no way') end,\n"
                         "  on_message = function(conn) conn:send('v3') end,\n"
                         "}\n") == 0);
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), MR_ELUA);
  snprintf(want, sizeof want, "%s: on_reload raised an error (see above)",
           path);
  CHECK_STR(err, want);
  CHECK_EQ_INT(h.srv->stats.reload_failures, 3);
  CHECK_EQ_INT(h.srv->stats.reloads, 1);
  CHECK_STR(mr_bridge_version(b), expected_version(2, script_v2));
  send_text(&h, id, "who");
  EXPECT_TEXT(&h, id, "v2 migrated=v1");

  /* A bad handler table. */
  CHECK(write_file(path, "return { on_close = 1 }\n") == 0);
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), MR_ELUA);
  snprintf(want, sizeof want,
           "%s: handler on_close must be a function, got number", path);
  CHECK_STR(err, want);
  CHECK_EQ_INT(h.srv->stats.reload_failures, 4);

  /* Failures do not use up version numbers; each load starts from fresh
   * globals (version 1's `migrated` was never set, version 2's is gone). */
  CHECK(write_file(path, script_v1) == 0);
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), 0);
  CHECK_STR(mr_bridge_version(b), expected_version(3, script_v1));
  CHECK_EQ_INT(h.srv->stats.reloads, 2);
  send_text(&h, id, "who");
  EXPECT_TEXT(&h, id, "v1 migrated=nil");
  h_stop(&h);
}

/* Modules next to the script are required afresh by a reload, and a failed
 * reload puts back the ones the running version uses. */
static void test_reload_modules(void) {
  char mod[64], src[512], want[128];
  const char *mpath = temp_module("return { value = 'm1' }\n", mod, sizeof mod);
  if (!CHECK(mpath != NULL))
    return;
  /* The handler requires the module on every message, so it sees whatever
   * package.loaded holds. */
  snprintf(src, sizeof src,
           "local first = require('%s')\n"
           "return {\n"
           "  on_message = function(conn)\n"
           "    conn:send(first.value .. ' ' .. require('%s').value)\n"
           "  end,\n"
           "}\n",
           mod, mod);
  const char *path = temp_script(src);
  harness h;
  if (!CHECK(path != NULL && h_start(&h, path, NULL) == 0))
    return;
  mr_bridge *b = h.srv->bridge;
  char err[2048];
  uint64_t id = open_conn(&h, "/", 1);
  send_text(&h, id, "?");
  EXPECT_TEXT(&h, id, "m1 m1");

  /* Only the module changed: the reload loads it again. */
  CHECK(write_file(mpath, "return { value = 'm2' }\n") == 0);
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), 0);
  send_text(&h, id, "?");
  EXPECT_TEXT(&h, id, "m2 m2");

  /* A failed reload that required the changed module before failing: the
   * running version still finds its own module in package.loaded. */
  CHECK(write_file(mpath, "return { value = 'm3' }\n") == 0);
  snprintf(src, sizeof src,
           "local m = require('%s')\n"
           "error('broken after require')\n",
           mod);
  CHECK(write_file(path, src) == 0);
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), MR_ELUA);
  snprintf(want, sizeof want, "%s:2: broken after require", path);
  CHECK_PREFIX(err, want);
  send_text(&h, id, "?");
  EXPECT_TEXT(&h, id, "m2 m2");
  CHECK_EQ_INT(h.srv->stats.reload_failures, 1);
  CHECK_EQ_INT(h.srv->stats.reloads, 1);
  h_stop(&h);
}

/* ---- handler errors ------------------------------------------------------ */

static void test_handler_errors(void) {
  const char *path = temp_script(script_v1);
  harness h;
  if (!CHECK(path != NULL && h_start(&h, path, NULL) == 0))
    return;
  mr_bridge *b = h.srv->bridge;
  uint64_t id = open_conn(&h, "/", 1);
  mr_conn *c = mr_conn_find(h.srv, id);

  /* Called directly: MR_ELUA, and the connection is the caller's business. */
  CHECK_EQ_INT(mr_bridge_on_message(b, c, (const uint8_t *)"fail", 4, 0),
               MR_ELUA);
  CHECK(mr_conn_is_open(c));
  CHECK_EQ_INT(c->tx.outq.count, 0);
  CHECK_EQ_INT(mr_bridge_on_message(b, c, (const uint8_t *)"direct", 6, 0), 0);
  EXPECT_TEXT(&h, id, "v1 direct");
  /* The Lua stack stays balanced over many failures. */
  int fails = 0;
  for (int i = 0; i < 500; i++)
    fails +=
        mr_bridge_on_message(b, c, (const uint8_t *)"fail", 4, 0) == MR_ELUA;
  CHECK_EQ_INT(fails, 500);
  send_text(&h, id, "still");
  EXPECT_TEXT(&h, id, "v1 still");
  CHECK_EQ_INT(h.srv->stats.handler_errors, 0);

  /* Through the connection: closed with 1011. */
  send_text(&h, id, "fail");
  CHECK_EQ_INT(h.srv->stats.handler_errors, 1);
  CHECK_EQ_INT(c->state, MR_CONN_CLOSING);
  expect_close(&h, id, 1011, "handler error", __LINE__);

  /* An error in on_connect refuses the upgrade with 500. */
  uint64_t bad = open_conn(&h, "/?crash=1", 0);
  uint8_t out[512];
  size_t n = take(&h, bad, out, sizeof out);
  CHECK_SPAN((const char *)out, n,
             "HTTP/1.1 500 Internal Server Error\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n"
             "Content-Length: 15\r\n"
             "Connection: close\r\n"
             "\r\n"
             "internal error\n");
  CHECK(mr_conn_find(h.srv, bad) == NULL);
  CHECK_EQ_INT(h.srv->stats.handler_errors, 2);

  /* An error in on_close is counted and goes no further. */
  uint64_t id2 = open_conn(&h, "/", 1);
  send_text(&h, id2, "crashclose");
  EXPECT_TEXT(&h, id2, "armed");
  mr_conn_doom(mr_conn_find(h.srv, id2), MR_CLOSE_ABNORMAL, "");
  mr_server_flush(h.srv);
  CHECK(mr_conn_find(h.srv, id2) == NULL);
  CHECK_EQ_INT(h.srv->stats.handler_errors, 3);
  uint64_t id3 = open_conn(&h, "/", 1);
  send_text(&h, id3, "after");
  EXPECT_TEXT(&h, id3, "v1 after");
  h_stop(&h);
}

/* ---- handles ------------------------------------------------------------- */

static void test_handles(void) {
  const char *path = temp_script(script_v1);
  harness h;
  if (!CHECK(path != NULL && h_start(&h, path, NULL) == 0))
    return;
  uint64_t a = open_conn(&h, "/", 1);
  uint64_t b = open_conn(&h, "/", 1);
  /* The handle on_connect kept, the one on_message gets and the one in
   * members() are one and the same. */
  send_text(&h, a, "same");
  EXPECT_TEXT(&h, a, "true true true");
  send_text(&h, a, "same");
  EXPECT_TEXT(&h, a, "true true true");

  /* A kept handle works while its connection is open... */
  char cmd[64], want[64];
  snprintf(cmd, sizeof cmd, "poke %llu", (unsigned long long)a);
  send_text(&h, b, cmd);
  snprintf(want, sizeof want, "true,nil,true,%llu", (unsigned long long)a);
  EXPECT_TEXT(&h, b, want);
  EXPECT_TEXT(&h, a, "hi");

  /* ...and answers nil, "closed" once it has gone. */
  send_frame(&h, a, MR_OP_CLOSE, "\x03\xe8", 2);
  uint8_t out[64];
  take(&h, a, out, sizeof out);
  CHECK(mr_conn_find(h.srv, a) == NULL);
  send_text(&h, b, cmd);
  snprintf(want, sizeof want, "nil,closed,false,%llu", (unsigned long long)a);
  EXPECT_TEXT(&h, b, want);

  /* A handle whose connection is closing (not yet gone) is closed too. */
  uint64_t c3 = open_conn(&h, "/", 1);
  mr_conn *c = mr_conn_find(h.srv, c3);
  CHECK_EQ_INT(mr_conn_close(c, 1000, "", 0), 0);
  snprintf(cmd, sizeof cmd, "poke %llu", (unsigned long long)c3);
  send_text(&h, b, cmd);
  snprintf(want, sizeof want, "nil,closed,false,%llu", (unsigned long long)c3);
  EXPECT_TEXT(&h, b, want);
  h_stop(&h);
}

/* ---- where modules are found --------------------------------------------
 */

/* cfg.lua_path (the server's own modules) is searched after the script's
 * directory, so a module next to the script wins, and without it a module
 * that only lives there is not found. */
static void test_lua_path(void) {
  char lib[64] = "/tmp/moonroom-unit-lib-XXXXXX";
  char mod[64], src[512], file[160], lpath[96];
  if (!CHECK(mkdtemp(lib) != NULL))
    return;
  const char *mpath =
      temp_module("return { value = 'next to the script' }\n", mod, sizeof mod);
  snprintf(
      src, sizeof src,
      "local a, b = require('%s'), require('mr_unit_only_in_lib')\n"
      "return {\n"
      "  on_message = function(conn) conn:send(a.value .. ', ' .. b) end,\n"
      "}\n",
      mod);
  const char *path = temp_script(src);
  char shadow[160];
  snprintf(shadow, sizeof shadow, "%s/%s.lua", lib, mod);
  snprintf(file, sizeof file, "%s/mr_unit_only_in_lib.lua", lib);
  snprintf(lpath, sizeof lpath, "%s/?.lua", lib);
  if (!CHECK(mpath && path &&
             write_file(shadow, "return { value = 'in lib' }\n") == 0 &&
             write_file(file, "return 'only in lib'\n") == 0))
    goto out;

  harness h;
  char err[2048];
  if (CHECK(h_init(&h, path, NULL) == 0)) {
    h.srv->cfg.lua_path = lpath;
    if (CHECK(mr_bridge_new(h.srv, path, err, sizeof err) != NULL)) {
      uint64_t id = open_conn(&h, "/", 1);
      send_text(&h, id, "?");
      EXPECT_TEXT(&h, id, "next to the script, only in lib");
    } else {
      fprintf(stderr, "  %s\n", err);
    }
    h_stop(&h);
  }
  if (CHECK(h_init(&h, path, NULL) == 0)) {
    CHECK(mr_bridge_new(h.srv, path, err, sizeof err) == NULL);
    CHECK(strstr(err, "module 'mr_unit_only_in_lib' not found") != NULL);
    h_stop(&h);
  }
out:
  unlink(shadow);
  unlink(file);
  rmdir(lib);
}

int main(void) {
  mr_log_set_level(getenv("MOONROOM_TEST_LOG")
                       ? MR_LOG_DEBUG
                       : (enum mr_log_level)(MR_LOG_ERROR + 1));
  test_load_errors();
  test_version();
  test_reload();
  test_reload_modules();
  test_handler_errors();
  test_handles();
  test_lua_path();
  remove_temps();
  return test_report();
}
