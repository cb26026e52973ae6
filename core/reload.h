/* Hot reload: the one entry point that reloads the handler script, for the
 * file watcher (the script and the Lua modules next to it) and for SIGHUP
 * (server.c) alike, so both keep the same content digest and log the same
 * way. */
#ifndef MR_RELOAD_H
#define MR_RELOAD_H

struct mr_server;

/* Reloads the script now (SIGHUP, which also calls mr_reload_tls, or the
 * file watcher); why names the cause for the log ("SIGHUP").
 * Records the content digest so that the watcher does not reload the same
 * content again, and logs a failure (with its traceback) on one line.
 * Returns 0 or MR_ELUA. */
int mr_reload_now(struct mr_server *srv, const char *why);

/* Reads the TLS certificates and keys of srv->cfg (--tls-*, and
 * --cluster-tls-*) into new contexts that replace srv->tls and
 * srv->cluster_tls for new handshakes; connections keep the context they
 * were made with. At startup a failure is logged as an error and returned;
 * later (on SIGHUP) a failure keeps the previous context, is counted in
 * tls_reload_failures and logged on one line. Returns 0 or MR_EINVAL. */
int mr_reload_tls(struct mr_server *srv, int startup);

/* Starts watching srv->cfg.script's directory. Returns 0 or a negative
 * error code (logged; the server runs on without watching). */
int mr_reload_start(struct mr_server *srv);

/* Stops watching and closes the watcher's handles (for shutdown). */
void mr_reload_stop(struct mr_server *srv);

#endif
