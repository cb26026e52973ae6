/* The server: the listener, the safe point where deferred closes and
 * writes happen, the sweep of timeouts, signals and shutdown, and the
 * wiring of lower modules' events to the bridge. Its state is in
 * context.h. */
#ifndef MR_SERVER_H
#define MR_SERVER_H

#include "context.h"

/* Prepares srv on loop with cfg (copied); nothing listens yet. */
int mr_server_init(mr_server *srv, uv_loop_t *loop, const mr_config *cfg);

/* Binds and listens on cfg.listen; logs and returns a negative error code
 * (error.h) on failure. */
int mr_server_listen(mr_server *srv);

/* Starts an orderly shutdown: stop accepting, close every connection with
 * 1001, stop timers; the loop ends when the last handle is closed. */
void mr_server_shutdown(mr_server *srv);

/* Frees what the server owns once the loop has ended. */
void mr_server_free(mr_server *srv);

/* Runs the deferred closes and writes now (normally done before polling). */
void mr_server_flush(mr_server *srv);

#endif
