/* Unit tests for the Prometheus text exposition (core/metrics.c).
 *
 * The exposition is rendered from a snapshot with a distinct value in every
 * counter, then read back line by line, the way a scraper would: every
 * MR_STATS_MAP entry must be there with its help text, type and value, and
 * every family must be well formed (HELP, then TYPE, then its samples, each
 * name once). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "test_util.h"

#define CHECK_CONTAINS(hay, needle)                                            \
  do {                                                                         \
    const char *h_ = (hay), *n_ = (needle);                                    \
    if (!test_record(h_ && strstr(h_, n_) != NULL, __FILE__, __LINE__,         \
                     #hay " contains " #needle))                               \
      fprintf(stderr, "  expected to find:\n%s\n", n_);                        \
  } while (0)

/* Writes through f into a memory stream and returns the text (owned by the
 * caller). */
static char *capture(void (*f)(FILE *, const void *), const void *arg) {
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  if (!out)
    exit(2);
  f(out, arg);
  fclose(out);
  return text;
}

static void escape_help(FILE *out, const void *s) {
  mr_metrics_escape(out, s, 0);
}
static void escape_label(FILE *out, const void *s) {
  mr_metrics_escape(out, s, 1);
}
static void family(FILE *out, const void *help) {
  mr_metrics_family(out, "moonroom_x_total", "counter", help);
}

/* HELP text escapes backslash and newline (a double quote stays as it is);
 * a label value escapes all three (exposition format 0.0.4). */
static void test_escaping(void) {
  char *t = capture(escape_help, "a\\b\nc\"d");
  CHECK_STR(t, "a\\\\b\\nc\"d");
  free(t);
  t = capture(escape_label, "a\\b\nc\"d");
  CHECK_STR(t, "a\\\\b\\nc\\\"d");
  free(t);
  t = capture(escape_help, "");
  CHECK_STR(t, "");
  free(t);
  t = capture(escape_label, "plain text, UTF-8 \xc3\xa9");
  CHECK_STR(t, "plain text, UTF-8 \xc3\xa9");
  free(t);
  t = capture(family, "two\nlines \\ here");
  CHECK_STR(t, "# HELP moonroom_x_total two\\nlines \\\\ here\n"
               "# TYPE moonroom_x_total counter\n");
  free(t);
}

static mr_metrics sample_snapshot(void) {
  mr_metrics m;
  memset(&m, 0, sizeof m);
  uint64_t v = 1000;
#define SET(name, help) m.stats.name = v++;
  MR_STATS_MAP(SET)
#undef SET
  m.rooms = 7;
  m.timers = 8;
  m.lua_bytes = 123456;
  m.queued_bytes = 99;
  m.links_connecting = 1;
  m.links_handshake = 2;
  m.links_up = 3;
  m.admin_connections = 4;
  m.ready = 1;
  m.start_time = 1700000000.25;
  m.uptime = 12.5;
  return m;
}

/* Every counter of the X-macro is there with its help text and value:
 * counters as NAME_total of type counter, connections_open as a gauge. */
static void test_every_stat(void) {
  mr_metrics m = sample_snapshot();
  size_t len = 0;
  char *text = mr_metrics_render(&m, &len);
  if (!CHECK(text != NULL))
    return;
  CHECK_EQ_INT(strlen(text), len);
  char want[1024];
  int nstats = 0;
#define WANT(name, help)                                                       \
  nstats++;                                                                    \
  if (mr_metrics_stat_is_gauge(#name))                                         \
    snprintf(want, sizeof want,                                                \
             "# HELP moonroom_%s %s\n# TYPE moonroom_%s gauge\n"               \
             "moonroom_%s %llu\n",                                             \
             #name, help, #name, #name, (unsigned long long)m.stats.name);     \
  else                                                                         \
    snprintf(want, sizeof want,                                                \
             "# HELP moonroom_%s_total %s\n# TYPE moonroom_%s_total counter\n" \
             "moonroom_%s_total %llu\n",                                       \
             #name, help, #name, #name, (unsigned long long)m.stats.name);     \
  CHECK_CONTAINS(text, want);                                                  \
  CHECK(strlen(help) > 0 && !strchr(help, '\n'));
  MR_STATS_MAP(WANT)
#undef WANT
  CHECK(nstats >= 35);
  CHECK(mr_metrics_stat_is_gauge("connections_open"));
  CHECK(!mr_metrics_stat_is_gauge("connections_accepted"));
  CHECK(!mr_metrics_stat_is_gauge("admin_requests"));
  /* The Redis engine's state and subscriptions are levels too. */
  CHECK(mr_metrics_stat_is_gauge("engine_connected"));
  CHECK(mr_metrics_stat_is_gauge("engine_subscriptions"));
  CHECK(!mr_metrics_stat_is_gauge("engine_published"));
  CHECK_CONTAINS(text, "# TYPE moonroom_engine_connected gauge\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_engine_dropped_total counter\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_connections_open gauge\n");
  CHECK(strstr(text, "moonroom_connections_open_total") == NULL);
  free(text);
}

/* The gauges outside the X-macro, typed as gauges, with their values. */
static void test_gauges(void) {
  mr_metrics m = sample_snapshot();
  size_t len;
  char *text = mr_metrics_render(&m, &len);
  if (!CHECK(text != NULL))
    return;
  CHECK_CONTAINS(text, "# TYPE moonroom_rooms gauge\nmoonroom_rooms 7\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_timers gauge\nmoonroom_timers 8\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_lua_memory_bytes gauge\n"
                       "moonroom_lua_memory_bytes 123456\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_output_queued_bytes gauge\n"
                       "moonroom_output_queued_bytes 99\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_cluster_links gauge\n"
                       "moonroom_cluster_links{state=\"connecting\"} 1\n"
                       "moonroom_cluster_links{state=\"handshake\"} 2\n"
                       "moonroom_cluster_links{state=\"up\"} 3\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_admin_connections gauge\n"
                       "moonroom_admin_connections 4\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_ready gauge\nmoonroom_ready 1\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_start_time_seconds gauge\n"
                       "moonroom_start_time_seconds 1700000000.250\n");
  CHECK_CONTAINS(text, "# TYPE moonroom_uptime_seconds gauge\n"
                       "moonroom_uptime_seconds 12.500\n");
  free(text);
  m.ready = 0;
  text = mr_metrics_render(&m, &len);
  CHECK_CONTAINS(text, "moonroom_ready 0\n");
  free(text);
}

/* Reads the exposition back as a scraper would: every line is a HELP, a
 * TYPE or a sample; a family's HELP comes first, then its TYPE, then only
 * samples of that family; no family appears twice; the text ends with a
 * newline. */
static void test_well_formed(void) {
  mr_metrics m = sample_snapshot();
  size_t len;
  char *text = mr_metrics_render(&m, &len);
  if (!CHECK(text != NULL))
    return;
  CHECK(len > 0 && text[len - 1] == '\n');
  char family_name[128] = "";
  char seen[4096] = " ";
  int expect = 0; /* 0: HELP next; 1: TYPE next; 2: samples or HELP */
  int bad = 0, families = 0, samples = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    char name[128], rest[1024];
    if (strncmp(line, "# HELP ", 7) == 0) {
      if (expect == 1 || sscanf(line + 7, "%127s %1023[^\n]", name, rest) != 2)
        bad++;
      char key[132];
      snprintf(key, sizeof key, " %s ", name);
      if (strstr(seen, key))
        bad++; /* a family twice */
      if (strlen(seen) + strlen(key) < sizeof seen)
        strcat(seen, key + 1);
      snprintf(family_name, sizeof family_name, "%s", name);
      families++;
      expect = 1;
    } else if (strncmp(line, "# TYPE ", 7) == 0) {
      char type[32];
      if (expect != 1 || sscanf(line + 7, "%127s %31s", name, type) != 2 ||
          strcmp(name, family_name) != 0 ||
          (strcmp(type, "counter") != 0 && strcmp(type, "gauge") != 0))
        bad++;
      expect = 2;
    } else {
      double v;
      size_t n = strcspn(line, "{ ");
      if (expect != 2 || n != strlen(family_name) ||
          strncmp(line, family_name, n) != 0 ||
          sscanf(strrchr(line, ' ') + 1, "%lf", &v) != 1)
        bad++;
      samples++;
    }
    if (bad)
      fprintf(stderr, "  malformed at: %s\n", line);
    if (bad)
      break;
  }
  CHECK_EQ_INT(bad, 0);
  CHECK(families >= 44);
  CHECK_EQ_INT(samples, families + 2); /* cluster_links has three samples */
  free(text);
}

int main(void) {
  test_escaping();
  test_every_stat();
  test_gauges();
  test_well_formed();
  return test_report();
}
