/* The Prometheus text exposition (format 0.0.4) of a server's counters and
 * gauges, for the admin server's /metrics.
 *
 * Pure: the admin server takes a snapshot (mr_metrics) in one loop turn and
 * this module turns it into text, so the unit tests check exactly what a
 * scrape returns without a socket. Every counter of MR_STATS_MAP
 * (context.h) is exported with the help text written beside it, so a
 * counter added there appears here with nothing else to change. */
#ifndef MR_METRICS_H
#define MR_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "context.h"

/* The Content-Type of the exposition. */
#define MR_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* What one scrape reports. */
typedef struct {
  mr_stats stats;        /* every MR_STATS_MAP counter */
  uint64_t rooms;        /* rooms with local members */
  uint64_t timers;       /* pending script timers */
  uint64_t lua_bytes;    /* memory the Lua state holds */
  uint64_t queued_bytes; /* unsent bytes across client connections */
  uint64_t links_connecting, links_handshake, links_up; /* cluster links */
  uint64_t admin_connections; /* open admin connections, this one included */
  int ready;                  /* what /readyz answers: 1 for 200 */
  double start_time;          /* when the server started, Unix seconds */
  double uptime;              /* seconds since then */
} mr_metrics;

/* True for an MR_STATS_MAP entry whose value goes up and down (such as
 * connections_open): it is exported as a gauge named moonroom_NAME rather
 * than as a counter moonroom_NAME_total. */
int mr_metrics_stat_is_gauge(const char *name);

/* Writes s to out escaped for a HELP line (backslash and newline) or, when
 * label is 1, for a label value (backslash, double quote and newline). */
void mr_metrics_escape(FILE *out, const char *s, int label);

/* Writes the "# HELP name help" and "# TYPE name type" lines of a family,
 * with help escaped. */
void mr_metrics_family(FILE *out, const char *name, const char *type,
                       const char *help);

/* Writes the exposition of m. Returns a NUL-terminated text of *len bytes
 * that the caller owns and frees with free(), or NULL when out of memory. */
char *mr_metrics_render(const mr_metrics *m, size_t *len);

#endif
