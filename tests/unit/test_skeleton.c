/* Unit tests for `moonroom new DIR` (core/skeleton.c): the files it writes
 * and their text, the parents it creates, that it never overwrites (not
 * even one file of three), its usage errors and exit statuses, and what it
 * prints: the files, the run and test commands (quoted for a shell), and the
 * LUA_PATH/LUA_CPATH exports only when LuaJIT's path does not reach the kit.
 *
 * Everything happens under a fresh mkdtemp directory, removed at the end.
 * Whether the written app actually runs and its spec passes under busted is
 * tests/integration/test_install.py's job. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "skeleton.h"
#include "test_util.h"

static char root[64] = "/tmp/moonroom-unit-skeleton-XXXXXX";

/* What one run printed and returned. */
typedef struct {
  int status;
  char out[8192];
  char err[2048];
} run_result;

/* Reads the whole of f (from the start) into buf, NUL-terminated. */
static void slurp(FILE *f, char *buf, size_t cap) {
  rewind(f);
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
}

/* Runs `moonroom new ARGS...` (a NULL-terminated list) with the kit's
 * directories lua_dir and cmod_dir. */
static run_result run(const char *lua_dir, const char *cmod_dir, ...) {
  static run_result r;
  char *args[8];
  int n = 0;
  va_list ap;
  va_start(ap, cmod_dir);
  for (char *a; n < 8 && (a = va_arg(ap, char *)) != NULL;)
    args[n++] = a;
  va_end(ap);
  FILE *out = tmpfile(), *err = tmpfile();
  CHECK(out && err);
  r.status = mr_skeleton_main("moonroom", n, args, lua_dir, cmod_dir, out, err);
  slurp(out, r.out, sizeof r.out);
  slurp(err, r.err, sizeof r.err);
  fclose(out);
  fclose(err);
  return r;
}

/* The whole text of the file at path, or NULL. */
static const char *read_text(const char *path) {
  static char buf[16384];
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

#define CHECK_CONTAINS(hay, needle)                                            \
  do {                                                                         \
    if (!CHECK(strstr((hay), (needle)) != NULL))                               \
      fprintf(stderr, "  \"%s\" not in:\n%s\n", (needle), (hay));              \
  } while (0)

/* The files, each exactly its text, in a directory whose parents are made;
 * the commands name the directory; a second run refuses and keeps an edited
 * file as it is. */
static void test_writes_and_refuses(void) {
  char dir[128], path[256], want[512];
  snprintf(dir, sizeof dir, "%s/apps/myapp", root);
  run_result r = run(NULL, NULL, dir, NULL);
  CHECK_EQ_INT(r.status, 0);
  CHECK_STR(r.err, "");
  CHECK_EQ_INT((int)mr_skeleton_nfiles, 3);
  for (size_t i = 0; i < mr_skeleton_nfiles; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, mr_skeleton_files[i].path);
    const char *text = read_text(path);
    if (CHECK(text != NULL))
      CHECK_STR(text, mr_skeleton_files[i].text);
    snprintf(want, sizeof want, "wrote %s\n", path);
    CHECK_CONTAINS(r.out, want);
  }
  snprintf(want, sizeof want, "run it:   moonroom %s/app.lua\n", dir);
  CHECK_CONTAINS(r.out, want);
  snprintf(want, sizeof want, "test it:  cd %s && busted\n", dir);
  CHECK_CONTAINS(r.out, want);
  CHECK(strstr(r.out, "export") == NULL);

  /* The script, its spec and .busted say what they must. */
  snprintf(path, sizeof path, "%s/.busted", dir);
  CHECK_CONTAINS(read_text(path), "lua = \"luajit\"");
  snprintf(path, sizeof path, "%s/spec/app_spec.lua", dir);
  CHECK_CONTAINS(read_text(path), "require \"moonroom.testing\"");
  CHECK_CONTAINS(read_text(path), "testing.server(\"app.lua\")");
  snprintf(path, sizeof path, "%s/app.lua", dir);
  CHECK_CONTAINS(read_text(path), "require \"moonroom\"");

  /* Again, over an edited app.lua: refused, exit 1, nothing touched. */
  FILE *f = fopen(path, "wb");
  if (CHECK(f != NULL)) {
    fputs("-- mine\n", f);
    fclose(f);
  }
  r = run(NULL, NULL, dir, NULL);
  CHECK_EQ_INT(r.status, 1);
  snprintf(want, sizeof want,
           "moonroom new: %s/app.lua already exists; nothing written\n", dir);
  CHECK_STR(r.err, want);
  CHECK_STR(r.out, "");
  CHECK_STR(read_text(path), "-- mine\n");

  /* A trailing slash names the same directory. */
  snprintf(want, sizeof want, "%s/", dir);
  r = run(NULL, NULL, want, NULL);
  CHECK_EQ_INT(r.status, 1);
  CHECK_CONTAINS(r.err, "/myapp/app.lua already exists");
}

/* Only one of the three files exists (a .busted of one's own): nothing is
 * written, not even the files that do not exist. */
static void test_one_existing_file_blocks_all(void) {
  char dir[128], path[256];
  snprintf(dir, sizeof dir, "%s/mine", root);
  CHECK_EQ_INT(mkdir(dir, 0777), 0);
  snprintf(path, sizeof path, "%s/.busted", dir);
  FILE *f = fopen(path, "wb");
  if (CHECK(f != NULL)) {
    fputs("return {}\n", f);
    fclose(f);
  }
  run_result r = run(NULL, NULL, dir, NULL);
  CHECK_EQ_INT(r.status, 1);
  CHECK_CONTAINS(r.err, "/mine/.busted already exists; nothing written");
  snprintf(path, sizeof path, "%s/app.lua", dir);
  CHECK(!exists(path));
  snprintf(path, sizeof path, "%s/spec", dir);
  CHECK(!exists(path));

  /* A file where the directory should be: cannot write, exit 1. */
  snprintf(path, sizeof path, "%s/notadir", dir);
  f = fopen(path, "wb");
  if (CHECK(f != NULL))
    fclose(f);
  r = run(NULL, NULL, path, NULL);
  CHECK_EQ_INT(r.status, 1);
  CHECK_CONTAINS(r.err, "moonroom new: cannot write ");
  CHECK_CONTAINS(r.err, "Not a directory");
}

static void test_usage(void) {
  run_result r = run(NULL, NULL, NULL);
  CHECK_EQ_INT(r.status, 2);
  CHECK_STR(r.err, "moonroom: usage: moonroom new DIR\n");
  r = run(NULL, NULL, "a", "b", NULL);
  CHECK_EQ_INT(r.status, 2);
  CHECK_STR(r.err, "moonroom: usage: moonroom new DIR\n");
  r = run(NULL, NULL, "--force", NULL);
  CHECK_EQ_INT(r.status, 2);
  r = run(NULL, NULL, "", NULL);
  CHECK_EQ_INT(r.status, 2);
  r = run(NULL, NULL, "--help", NULL);
  CHECK_EQ_INT(r.status, 0);
  CHECK_CONTAINS(r.out, "usage: moonroom new DIR\n");
  CHECK_STR(r.err, "");
}

/* The exports are printed exactly when LuaJIT's path (LUA_PATH here) does
 * not reach the kit, and a directory with a space is quoted. */
static void test_kit_paths_and_quoting(void) {
  char dir[128], want[512];
  snprintf(dir, sizeof dir, "%s/with space", root);
  unsetenv("LUA_PATH");
  unsetenv("LUA_CPATH");
  run_result r = run("/opt/mr/share/lua/5.1", "/opt/mr/lib/lua/5.1", dir, NULL);
  CHECK_EQ_INT(r.status, 0);
  CHECK_CONTAINS(r.out, "  export LUA_PATH='/opt/mr/share/lua/5.1/?.lua;;' "
                        "LUA_CPATH='/opt/mr/lib/lua/5.1/?.so;;'\n");
  snprintf(want, sizeof want, "run it:   moonroom '%s/app.lua'\n", dir);
  CHECK_CONTAINS(r.out, want);
  snprintf(want, sizeof want, "test it:  cd '%s' && busted\n", dir);
  CHECK_CONTAINS(r.out, want);

  /* Once LUA_PATH has the Lua directory, only LUA_CPATH is missing. */
  setenv("LUA_PATH", "/opt/mr/share/lua/5.1/?.lua;;", 1);
  snprintf(dir, sizeof dir, "%s/two", root);
  r = run("/opt/mr/share/lua/5.1", "/opt/mr/lib/lua/5.1", dir, NULL);
  CHECK_EQ_INT(r.status, 0);
  CHECK(strstr(r.out, "LUA_PATH=") == NULL);
  CHECK_CONTAINS(r.out, "  export LUA_CPATH='/opt/mr/lib/lua/5.1/?.so;;'\n");

  /* With both, nothing to export. */
  setenv("LUA_CPATH", "/opt/mr/lib/lua/5.1/?.so;;", 1);
  snprintf(dir, sizeof dir, "%s/three", root);
  r = run("/opt/mr/share/lua/5.1", "/opt/mr/lib/lua/5.1", dir, NULL);
  CHECK_EQ_INT(r.status, 0);
  CHECK(strstr(r.out, "export") == NULL);
  unsetenv("LUA_PATH");
  unsetenv("LUA_CPATH");

  /* LuaJIT's built-in default covers /usr/local. */
  snprintf(dir, sizeof dir, "%s/four", root);
  r = run("/usr/local/share/lua/5.1", "/usr/local/lib/lua/5.1", dir, NULL);
  CHECK_EQ_INT(r.status, 0);
  CHECK(strstr(r.out, "export") == NULL);
}

int main(void) {
  if (!CHECK(mkdtemp(root) != NULL))
    return test_report();
  test_writes_and_refuses();
  test_one_existing_file_blocks_all();
  test_usage();
  test_kit_paths_and_quoting();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  CHECK_EQ_INT(system(cmd), 0);
  return test_report();
}
