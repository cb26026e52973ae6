#include "metrics.h"

#include <stdlib.h>
#include <string.h>

/* The entries of MR_STATS_MAP whose values are levels rather than running
 * totals; everything else in the map only ever goes up. */
static const char *const gauge_stats[] = {
    "connections_open", "engine_connected", "engine_subscriptions"};

int mr_metrics_stat_is_gauge(const char *name) {
  for (size_t i = 0; i < sizeof gauge_stats / sizeof gauge_stats[0]; i++)
    if (strcmp(name, gauge_stats[i]) == 0)
      return 1;
  return 0;
}

void mr_metrics_escape(FILE *out, const char *s, int label) {
  for (; *s; s++) {
    if (*s == '\\')
      fputs("\\\\", out);
    else if (*s == '\n')
      fputs("\\n", out);
    else if (label && *s == '"')
      fputs("\\\"", out);
    else
      fputc(*s, out);
  }
}

void mr_metrics_family(FILE *out, const char *name, const char *type,
                       const char *help) {
  fprintf(out, "# HELP %s ", name);
  mr_metrics_escape(out, help, 0);
  fprintf(out, "\n# TYPE %s %s\n", name, type);
}

static void gauge(FILE *out, const char *name, const char *help,
                  uint64_t value) {
  mr_metrics_family(out, name, "gauge", help);
  fprintf(out, "%s %llu\n", name, (unsigned long long)value);
}

static void gauge_seconds(FILE *out, const char *name, const char *help,
                          double value) {
  mr_metrics_family(out, name, "gauge", help);
  fprintf(out, "%s %.3f\n", name, value);
}

/* One MR_STATS_MAP entry: a counter NAME_total, or a gauge NAME. */
static void stat_sample(FILE *out, const char *name, const char *help,
                        uint64_t value) {
  char full[128];
  int gauge_like = mr_metrics_stat_is_gauge(name);
  snprintf(full, sizeof full, "moonroom_%s%s", name,
           gauge_like ? "" : "_total");
  mr_metrics_family(out, full, gauge_like ? "gauge" : "counter", help);
  fprintf(out, "%s %llu\n", full, (unsigned long long)value);
}

static void link_sample(FILE *out, const char *state, uint64_t value) {
  fputs("moonroom_cluster_links{state=\"", out);
  mr_metrics_escape(out, state, 1);
  fprintf(out, "\"} %llu\n", (unsigned long long)value);
}

char *mr_metrics_render(const mr_metrics *m, size_t *len) {
  char *text = NULL;
  size_t n = 0;
  FILE *out = open_memstream(&text, &n);
  if (!out)
    return NULL;
#define MR_METRICS_STAT(name, help)                                            \
  stat_sample(out, #name, help, m->stats.name);
  MR_STATS_MAP(MR_METRICS_STAT)
#undef MR_METRICS_STAT
  gauge(out, "moonroom_rooms", "rooms with members on this node", m->rooms);
  gauge(out, "moonroom_timers", "pending script timers (ws.after, ws.every)",
        m->timers);
  gauge(out, "moonroom_lua_memory_bytes", "memory held by the Lua state",
        m->lua_bytes);
  gauge(out, "moonroom_output_queued_bytes",
        "bytes queued for clients and not yet written to their sockets",
        m->queued_bytes);
  mr_metrics_family(out, "moonroom_cluster_links", "gauge",
                    "links to other cluster nodes, by state");
  link_sample(out, "connecting", m->links_connecting);
  link_sample(out, "handshake", m->links_handshake);
  link_sample(out, "up", m->links_up);
  gauge(out, "moonroom_admin_connections", "open connections to --admin-listen",
        m->admin_connections);
  gauge(out, "moonroom_ready", "1 when /readyz answers 200, else 0",
        m->ready ? 1 : 0);
  gauge_seconds(out, "moonroom_start_time_seconds",
                "when the server started listening, in Unix time",
                m->start_time);
  gauge_seconds(out, "moonroom_uptime_seconds",
                "seconds since the server started listening", m->uptime);
  int failed = ferror(out);
  if (fclose(out) != 0 || failed) {
    free(text);
    return NULL;
  }
  *len = n;
  return text;
}
