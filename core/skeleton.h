/* `moonroom new DIR`: the skeleton of an app repository of one's own, a
 * handler script, a spec that passes through the test kit, and a .busted
 * that selects LuaJIT. The files' text lives in skeleton.c and only there. */
#ifndef MR_SKELETON_H
#define MR_SKELETON_H

#include <stdio.h>

/* One file of the skeleton: its path inside DIR and its whole text. */
typedef struct {
  const char *path;
  const char *text;
} mr_skeleton_file;

/* The files `moonroom new` writes, in the order it writes them. */
extern const mr_skeleton_file mr_skeleton_files[];
extern const size_t mr_skeleton_nfiles;

/* Runs `moonroom new`: args (nargs of them) are what follows "new" on the
 * command line, exactly one DIR; prog is how the binary was invoked, for the
 * command it prints. DIR and its parents are created as needed. When any of
 * the files already exists nothing is written. Prints each file written and
 * the commands that run and test the app to out, preceded by the LUA_PATH and
 * LUA_CPATH to export when LuaJIT's path (as the environment sets it) does
 * not reach lua_dir and cmod_dir, where the kit's moonroom/testing.lua and
 * moonroom/sim.so are (either may be NULL or empty when unknown). Errors go
 * to err as one line. Returns the exit status: 0 written, 1 when a file
 * exists or cannot be written, 2 for a usage error. */
int mr_skeleton_main(const char *prog, int nargs, char **args,
                     const char *lua_dir, const char *cmod_dir, FILE *out,
                     FILE *err);

#endif
