/* moonroom: argv, the loop, and orderly exit; `moonroom new DIR` is handed
 * to skeleton.c. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "admin.h"
#include "bridge.h"
#include "broadcast.h"
#include "cluster.h"
#include "config.h"
#include "engine_redis.h"
#include "error.h"
#include "log.h"
#include "reload.h"
#include "server.h"
#include "skeleton.h"
#include "trace.h"

/* Writes the real path of dir/sub into out (PATH_MAX bytes) when it is a
 * directory. Returns 1 when it is, else 0 and out is empty. */
static int real_dir(const char *dir, const char *sub, char *out) {
  char path[PATH_MAX + 64];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, sub);
  out[0] = '\0';
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode) || !realpath(path, out)) {
    out[0] = '\0';
    return 0;
  }
  return 1;
}

/* Finds the Lua modules that come with this binary (lua_dir) and the kit's
 * C module (cmod_dir) from where the executable really is, so that nothing
 * depends on where the source tree was when it was built: a build directory
 * holds the link lua-source to the source tree's lua/ and builds the kit
 * under lua/; an installed PREFIX/bin/moonroom has them in PREFIX/share/lua/
 * 5.1 and PREFIX/lib/lua/5.1 (MOONROOM_LUA_RELDIR, MOONROOM_CMOD_RELDIR, from
 * CMakeLists.txt). Both are PATH_MAX bytes; empty when not found. */
static void find_lua_dirs(char *lua_dir, char *cmod_dir) {
  char exe[PATH_MAX];
  size_t len = sizeof exe;
  lua_dir[0] = cmod_dir[0] = '\0';
  if (uv_exepath(exe, &len) != 0)
    return;
  char *slash = strrchr(exe, '/');
  if (!slash)
    return;
  *slash = '\0';
  if (real_dir(exe, "lua-source", lua_dir)) {
    real_dir(exe, "lua", cmod_dir);
    return;
  }
  real_dir(exe, MOONROOM_LUA_RELDIR, lua_dir);
  real_dir(exe, MOONROOM_CMOD_RELDIR, cmod_dir);
}

int main(int argc, char **argv) {
  static mr_config cfg;
  static char lua_dir[PATH_MAX], cmod_dir[PATH_MAX],
      lua_path[2 * PATH_MAX + 32];
  find_lua_dirs(lua_dir, cmod_dir);
  /* `moonroom new DIR` is a command of its own, not a server option. */
  if (argc >= 2 && strcmp(argv[1], "new") == 0)
    return mr_skeleton_main(argv[0], argc - 2, argv + 2, lua_dir, cmod_dir,
                            stdout, stderr);
  char err[2048];
  int r = mr_config_parse(&cfg, argc, argv, err, sizeof err, stdout);
  if (r == MR_CONFIG_EXIT)
    return 0;
  if (r == MR_CONFIG_USAGE) {
    fprintf(stderr, "moonroom: %s\n", err);
    return 2;
  }
  mr_log_set_level(cfg.log_level);
  if (lua_dir[0]) {
    snprintf(lua_path, sizeof lua_path, "%s/?.lua;%s/?/init.lua", lua_dir,
             lua_dir);
    cfg.lua_path = lua_path;
    mr_debug("lua modules: %s", lua_dir);
  }
  /* A peer that vanishes mid-write must be an error code, not a signal. */
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t *loop = uv_default_loop();
  static mr_server srv;
  mr_server_init(&srv, loop, &cfg);
  if (!mr_bridge_new(&srv, cfg.script, err, sizeof err)) {
    mr_error("cannot load %s", err);
    fprintf(stderr, "moonroom: cannot load %s\n", err);
    return 1;
  }
  if (mr_server_listen(&srv) != 0 ||
      (cfg.admin_listen.host[0] && mr_admin_start(&srv) != 0) ||
      (cfg.cluster && mr_cluster_start(&srv, mr_broadcast_remote, &srv) != 0) ||
      (cfg.redis && mr_engine_start(&srv, mr_broadcast_remote, &srv) != 0)) {
    /* Closing the Lua state runs the finalizers of the C modules a script
     * loaded (lua-cjson's buffers are malloc'd), which exiting does not. */
    mr_bridge_free(srv.bridge);
    return 1;
  }
  if (cfg.reload)
    mr_reload_start(&srv);
  if (cfg.trace_latency[0]) {
    int r = mr_trace_open(cfg.trace_latency);
    if (r != 0) {
      mr_error("cannot write --trace-latency %s: %s", cfg.trace_latency,
               mr_strerror(r));
      mr_bridge_free(srv.bridge);
      return 1;
    }
    mr_info("tracing every broadcast frame's timings to %s", cfg.trace_latency);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  mr_trace_close();
  mr_info("stopped: %llu connections served",
          (unsigned long long)srv.stats.connections_accepted);
  mr_bridge_free(srv.bridge);
  mr_server_free(&srv);
  uv_loop_close(loop);
  return 0;
}
