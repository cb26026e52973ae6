/* The handler script: loading it into a fresh environment, checking the
 * handler table it returns, and swapping it on reload (with on_reload, and
 * with the old modules put back when the new version fails).
 *
 * A key of the handler table that looks like a misspelt handler is
 * warned about at every load, and so is a handler that a reload drops. The
 * version names the script's content and that of the modules it required
 * from its directory.
 *
 * Pure Lua work on a state the bridge owns; reload.c decides when. */
#ifndef MR_SCRIPT_H
#define MR_SCRIPT_H

#include <stddef.h>

typedef struct lua_State lua_State;

enum {
  MR_H_CONNECT,
  MR_H_MESSAGE,
  MR_H_CLOSE,
  MR_H_RELOAD,
  MR_H_HTTP,
  MR_H_PRESENCE,
  MR_H_COUNT
};

/* "on_connect", ... indexed by MR_H_*. */
extern const char *const mr_script_handler_names[MR_H_COUNT];

typedef struct mr_script {
  lua_State *L;
  char path[4096];
  int refs[MR_H_COUNT]; /* registry refs to the handler functions */
  int table_ref;        /* the handler table itself */
  unsigned generation;  /* versions loaded so far */
  char version[64];     /* "version N sha256:...", for logs */
} mr_script;

/* For a handler-table key that is not a handler, the handler it most
 * likely meant: compared lower-cased without '_' and '-', by edit
 * distance. Returns NULL for a real handler name and for keys that do not
 * look like one: neither written as on_x, On_x, onX or on-x, nor starting
 * with "on" within two edits of a handler (so "online" and "close" are
 * not). The result is static. Load and reload warn with it. */
const char *mr_script_closest_handler(const char *key, size_t len);

/* Prepares s for state L (nothing loaded). */
void mr_script_init(mr_script *s, lua_State *L);

/* Loads the script at path and makes its handlers current. Returns 0, or
 * MR_ELUA with err naming the file and line. */
int mr_script_load(mr_script *s, const char *path, char *err, size_t errlen);

/* Loads the script again into a fresh environment, with the modules from
 * its directory required afresh, and swaps the handlers only when it
 * returns a valid handler table and its on_reload(old) succeeds; otherwise
 * the old handlers and modules stay and err says why. Returns 0 or
 * MR_ELUA. */
int mr_script_reload(mr_script *s, char *err, size_t errlen);

#endif
