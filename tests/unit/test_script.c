/* Unit tests for the handler script's checks and version (core/script.c):
 * keys that look like misspelt handlers are warned about at load and at
 * every reload, with the handler they most likely meant; a reload that
 * drops a handler says so; and the version digest covers the modules the
 * script required from its directory, subdirectories included.
 *
 * Scripts and modules are written into a fresh temporary directory (removed
 * at the end) and loaded by a socket-less server
 * (tests/unit/virtual_server.h); the log is captured around each load
 * (tests/unit/log_capture.h). */
#include <errno.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log_capture.h"
#include "script.h"
#include "virtual_server.h"

static char dir[64];

/* Writes src to DIR/name (replacing it). Returns 0 or -1. */
static int put(const char *name, const char *src) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f)
    return -1;
  size_t len = strlen(src);
  int ok = fwrite(src, 1, len, f) == len;
  return fclose(f) == 0 && ok ? 0 : -1;
}

static const char *script_path(void) {
  static char path[256];
  snprintf(path, sizeof path, "%s/handler.lua", dir);
  return path;
}

/* Counts the occurrences of needle in hay. */
static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

#define CHECK_LOGGED(log, needle, times)                                       \
  do {                                                                         \
    if (!CHECK(count((log), (needle)) == (times)))                             \
      fprintf(stderr, "  wanted %d x \"%s\" in:\n%s\n", (times), (needle),     \
              (log));                                                          \
  } while (0)

/* ---- misspelt handlers --------------------------------------------------- */

static void test_closest_handler(void) {
  static const struct {
    const char *key, *want;
  } cases[] = {
      {"on_mesage", "on_message"},
      {"onMessage", "on_message"},
      {"On_Close", "on_close"},
      {"ON_CONNECT", "on_connect"},
      {"on-reload", "on_reload"},
      {"onmesage", "on_message"},
      {"onclose", "on_close"},
      {"on_conect", "on_connect"},
      {"on_closed", "on_close"},
      {"onReLoad", "on_reload"},
      {"on_messages", "on_message"},
      {"on_open", "on_close"},
      {"on_connect", NULL},
      {"on_message", NULL},
      {"on_close", NULL},
      {"on_reload", NULL},
      {"online", NULL},
      {"once", NULL},
      {"onion", NULL},
      {"close", NULL},
      {"message", NULL},
      {"tag", NULL},
      {"on", NULL},
      {"", NULL},
      {"o", NULL},
      {"hits", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *got =
        mr_script_closest_handler(cases[i].key, strlen(cases[i].key));
    int ok = cases[i].want ? got && strcmp(got, cases[i].want) == 0 : !got;
    if (!CHECK(ok))
      fprintf(stderr, "  %s: got %s, expected %s\n", cases[i].key,
              got ? got : "NULL", cases[i].want ? cases[i].want : "NULL");
  }
  /* Lengths, not NULs, delimit the key. */
  CHECK(mr_script_closest_handler("on_close\0x", 10) != NULL);
  CHECK(mr_script_closest_handler("on_close", 8) == NULL);
  char long_key[200];
  memset(long_key, 'x', sizeof long_key);
  memcpy(long_key, "on_", 3);
  CHECK(mr_script_closest_handler(long_key, sizeof long_key) == NULL);
}

static const char misspelt[] = "return {\n"
                               "  on_connect = function() end,\n"
                               "  on_mesage = function() end,\n"
                               "  onMessage = function() end,\n"
                               "  On_Close = function() end,\n"
                               "  tag = 'v1', online = true, [1] = 'x',\n"
                               "}\n";

static void test_misspelt_handlers_warned(void) {
  if (!CHECK(put("handler.lua", misspelt) == 0))
    return;
  harness h;
  capture_begin();
  int started = h_start(&h, script_path(), NULL);
  const char *log = capture_end();
  if (!CHECK(started == 0))
    return;
  char want[512];
  static const char *const pairs[][2] = {{"on_mesage", "on_message"},
                                         {"onMessage", "on_message"},
                                         {"On_Close", "on_close"}};
  for (int i = 0; i < 3; i++) {
    snprintf(want, sizeof want,
             "warn  %s: the handler table has '%s', which is not a handler "
             "and will never be called; did you mean %s?",
             script_path(), pairs[i][0], pairs[i][1]);
    CHECK_LOGGED(log, want, 1);
  }
  CHECK_LOGGED(log, "which is not a handler", 3);
  /* A warning, not an error: the script runs. */
  CHECK_LOGGED(log, "error", 0);
  uint64_t id = open_ws(&h, "/");
  CHECK(id != 0);

  /* Every reload checks again. */
  char err[2048];
  capture_begin();
  CHECK_EQ_INT(mr_bridge_reload(h.srv->bridge, err, sizeof err), 0);
  log = capture_end();
  CHECK_LOGGED(log, "which is not a handler", 3);

  /* A handler that is not a function is still an error, and the warnings
   * of that table are logged too. */
  CHECK(put("handler.lua", "return { on_close = 'x', onMesage = 1 }\n") == 0);
  capture_begin();
  CHECK_EQ_INT(mr_bridge_reload(h.srv->bridge, err, sizeof err), MR_ELUA);
  log = capture_end();
  snprintf(want, sizeof want,
           "%s: handler on_close must be a function, got string",
           script_path());
  CHECK_STR(err, want);
  CHECK_LOGGED(log, "has 'onMesage', which is not a handler", 1);
  h_stop(&h);
}

/* ---- dropped handlers ---------------------------------------------------- */

static void test_dropped_handlers_logged(void) {
  if (!CHECK(put("handler.lua", "return {\n"
                                "  on_connect = function() end,\n"
                                "  on_message = function() end,\n"
                                "  on_close = function() end,\n"
                                "}\n") == 0))
    return;
  harness h;
  if (!CHECK(h_start(&h, script_path(), NULL) == 0))
    return;
  char err[2048], want[512];

  /* A reload that fails keeps every handler: nothing to say. */
  CHECK(put("handler.lua", "return {\n"
                           "  on_reload = function() error('no') end,\n"
                           "}\n") == 0);
  capture_begin();
  CHECK_EQ_INT(mr_bridge_reload(h.srv->bridge, err, sizeof err), MR_ELUA);
  const char *log = capture_end();
  CHECK_LOGGED(log, "no longer defined", 0);

  /* on_message and on_close go; on_connect stays; on_reload is new. */
  CHECK(put("handler.lua", "return {\n"
                           "  on_connect = function() end,\n"
                           "  on_reload = function() end,\n"
                           "}\n") == 0);
  capture_begin();
  CHECK_EQ_INT(mr_bridge_reload(h.srv->bridge, err, sizeof err), 0);
  log = capture_end();
  snprintf(want, sizeof want, "warn  %s: reload: on_close is no longer defined",
           script_path());
  CHECK_LOGGED(log, want, 1);
  snprintf(want, sizeof want,
           "warn  %s: reload: on_message is no longer defined", script_path());
  CHECK_LOGGED(log, want, 1);
  CHECK_LOGGED(log, "no longer defined", 2);

  /* Dropping on_reload (which the running version had) is said too; the
   * handlers that were already gone are not mentioned again. */
  CHECK(put("handler.lua", "return { on_connect = function() end }\n") == 0);
  capture_begin();
  CHECK_EQ_INT(mr_bridge_reload(h.srv->bridge, err, sizeof err), 0);
  log = capture_end();
  CHECK_LOGGED(log, "reload: on_reload is no longer defined", 1);
  CHECK_LOGGED(log, "no longer defined", 1);
  h_stop(&h);
}

/* ---- the version digest -------------------------------------------------- */

/* "version GEN sha256:" and the first six bytes of SHA-256 over src, then,
 * for each module (NULL-terminated name/content pairs, in name order),
 * "\0NAME\0CONTENT" and the content's size as 8 bytes. */
static const char *digest_of(unsigned gen, const char *src,
                             const char *const *mods) {
  static char out[64];
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  EVP_DigestUpdate(ctx, src, strlen(src));
  for (size_t i = 0; mods && mods[i]; i += 2) {
    unsigned long long size = strlen(mods[i + 1]);
    EVP_DigestUpdate(ctx, "", 1);
    EVP_DigestUpdate(ctx, mods[i], strlen(mods[i]) + 1);
    EVP_DigestUpdate(ctx, mods[i + 1], size);
    EVP_DigestUpdate(ctx, &size, sizeof size);
  }
  EVP_DigestFinal_ex(ctx, md, &mdlen);
  EVP_MD_CTX_free(ctx);
  snprintf(out, sizeof out, "version %u sha256:%02x%02x%02x%02x%02x%02x", gen,
           md[0], md[1], md[2], md[3], md[4], md[5]);
  return out;
}

static const char with_modules[] = "local ws = require 'moonroom'\n"
                                   "local util = require 'util'\n"
                                   "local deep = require 'lib.deep'\n"
                                   "return {\n"
                                   "  on_message = function(conn)\n"
                                   "    conn:send(util.v .. ' ' .. deep.v)\n"
                                   "  end,\n"
                                   "}\n";

static void test_version_covers_modules(void) {
  char sub[128];
  snprintf(sub, sizeof sub, "%s/lib", dir);
  if (!CHECK(mkdir(sub, 0700) == 0 || errno == EEXIST))
    return;
  const char *util1 = "return { v = 'u1' }\n", *deep1 = "return { v = 'd1' }\n";
  CHECK(put("util.lua", util1) == 0 && put("lib/deep.lua", deep1) == 0 &&
        put("unused.lua", "return 1\n") == 0 &&
        put("handler.lua", with_modules) == 0);
  harness h;
  if (!CHECK(h_start(&h, script_path(), NULL) == 0))
    return;
  mr_bridge *b = h.srv->bridge;
  /* Name order: "lib.deep" before "util"; moonroom (preloaded) and
   * unused.lua (never required) are not part of it. */
  const char *m1[] = {"lib.deep", deep1, "util", util1, NULL};
  CHECK_STR(mr_bridge_version(b), digest_of(1, with_modules, m1));
  uint64_t id = open_ws(&h, "/");
  send_text(&h, id, "?");
  EXPECT_TEXT(&h, id, "u1 d1");

  /* Only the module in the subdirectory changes: a new version, which
   * runs the new module. */
  char err[2048];
  const char *deep2 = "return { v = 'd2' }\n";
  CHECK(put("lib/deep.lua", deep2) == 0);
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), 0);
  const char *m2[] = {"lib.deep", deep2, "util", util1, NULL};
  CHECK_STR(mr_bridge_version(b), digest_of(2, with_modules, m2));
  send_text(&h, id, "?");
  EXPECT_TEXT(&h, id, "u1 d2");

  /* A module that is no longer required is no longer part of it. */
  const char *alone = "return { on_message = function(c) c:send('x') end }\n";
  CHECK(put("handler.lua", alone) == 0);
  CHECK_EQ_INT(mr_bridge_reload(b, err, sizeof err), 0);
  CHECK_STR(mr_bridge_version(b), digest_of(3, alone, NULL));
  h_stop(&h);
}

int main(void) {
  mr_log_set_level(getenv("MOONROOM_TEST_LOG")
                       ? MR_LOG_DEBUG
                       : (enum mr_log_level)(MR_LOG_ERROR + 1));
  snprintf(dir, sizeof dir, "/tmp/moonroom-unit-script-XXXXXX");
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 2;
  }
  test_closest_handler();
  test_misspelt_handlers_warned();
  test_dropped_handlers_logged();
  test_version_covers_modules();
  static const char *const files[] = {"handler.lua",  "util.lua", "unused.lua",
                                      "lib/deep.lua", "lib",      NULL};
  char path[256];
  for (int i = 0; files[i]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    remove(path);
  }
  rmdir(dir);
  return test_report();
}
