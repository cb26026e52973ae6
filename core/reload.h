/* Hot reload: watch the handler script (and the Lua modules next to it) and
 * reload the bridge when one changes; SIGHUP reloads too (server.c). */
#ifndef MR_RELOAD_H
#define MR_RELOAD_H

struct mr_server;

/* Starts watching srv->cfg.script's directory. Returns 0 or a negative
 * libuv error (logged; the server runs on without watching). */
int mr_reload_start(struct mr_server *srv);

/* Stops watching and closes the watcher's handles (for shutdown). */
void mr_reload_stop(struct mr_server *srv);

#endif
