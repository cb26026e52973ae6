/* Hot reload: the one entry point that reloads the handler script, for the
 * file watcher (the script and the Lua modules next to it) and for SIGHUP
 * (server.c) alike, so both keep the same content digest and log the same
 * way. */
#ifndef MR_RELOAD_H
#define MR_RELOAD_H

struct mr_server;

/* Reloads the script now; why names the cause for the log ("SIGHUP").
 * Records the content digest so that the watcher does not reload the same
 * content again, and logs a failure (with its traceback) on one line.
 * Returns 0 or MR_ELUA. */
int mr_reload_now(struct mr_server *srv, const char *why);

/* Starts watching srv->cfg.script's directory. Returns 0 or a negative
 * error code (logged; the server runs on without watching). */
int mr_reload_start(struct mr_server *srv);

/* Stops watching and closes the watcher's handles (for shutdown). */
void mr_reload_stop(struct mr_server *srv);

#endif
