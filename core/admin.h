/* The admin server: plain HTTP/1.1 on --admin-listen, apart from the
 * WebSocket port, for operators and load balancers: /metrics (Prometheus
 * text, metrics.c), /healthz and /readyz.
 *
 * It runs on the server's loop, so a stuck loop fails /healthz by timing
 * out. Connections are bounded in number, buffer and time; every refusal
 * is counted in ws.stats() (admin_*) and logged. */
#ifndef MR_ADMIN_H
#define MR_ADMIN_H

#include "context.h"

/* At most this many admin connections are open at once; more are closed
 * as soon as they are accepted. */
#define MR_ADMIN_MAX_CONNECTIONS 64
/* The largest request head; a longer one is answered 431 and closed. */
#define MR_ADMIN_MAX_HEAD 8192
/* A connection must send a whole request head within this many
 * milliseconds of connecting or of its previous response being written
 * (and a response must be taken within as long), or it is closed. */
#define MR_ADMIN_TIMEOUT_MS 5000

typedef struct mr_admin mr_admin;

/* Starts serving on srv->cfg.admin_listen; the admin is in srv->admin.
 * Returns 0, or a negative error code after logging why (nothing is left
 * to free then). */
int mr_admin_start(mr_server *srv);

/* Closes the listener and every admin connection (when the server has
 * finished its shutdown); the loop then has nothing of the admin's left.
 * Safe to call with NULL or twice. */
void mr_admin_close(mr_admin *a);

/* Frees the admin after mr_admin_close and the end of the loop. Safe with
 * NULL. */
void mr_admin_free(mr_admin *a);

#endif
