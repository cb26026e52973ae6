/* moonroom: argv, the loop, and orderly exit. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bridge.h"
#include "broadcast.h"
#include "cluster.h"
#include "config.h"
#include "log.h"
#include "reload.h"
#include "server.h"

int main(int argc, char **argv) {
  static mr_config cfg;
  char err[2048];
  int r = mr_config_parse(&cfg, argc, argv, err, sizeof err, stdout);
  if (r == MR_CONFIG_EXIT)
    return 0;
  if (r == MR_CONFIG_USAGE) {
    fprintf(stderr, "moonroom: %s\n", err);
    return 2;
  }
  mr_log_set_level(cfg.log_level);
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
  if (mr_server_listen(&srv) != 0)
    return 1;
  if (cfg.cluster && mr_cluster_start(&srv, mr_broadcast_remote, &srv) != 0)
    return 1;
  if (cfg.reload)
    mr_reload_start(&srv);
  uv_run(loop, UV_RUN_DEFAULT);
  mr_info("stopped: %llu connections served",
          (unsigned long long)srv.stats.connections_accepted);
  mr_bridge_free(srv.bridge);
  mr_server_free(&srv);
  uv_loop_close(loop);
  return 0;
}
