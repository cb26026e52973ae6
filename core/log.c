#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum mr_log_level min_level = MR_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void mr_log_set_level(enum mr_log_level level) { min_level = level; }
enum mr_log_level mr_log_get_level(void) { return min_level; }

int mr_log_parse_level(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0)
      return i;
  return -1;
}

void mr_log(enum mr_log_level level, const char *fmt, ...) {
  if (level < min_level)
    return;
  /* The line is formatted whole and written with one call so that lines from
   * several processes sharing a terminal or a log file never interleave. */
  char line[2048];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  int n = snprintf(
      line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
      tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
      tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2)
    len = sizeof line - 2;
  /* Newlines inside a message (tracebacks) are kept, but the record ends in
   * exactly one newline. */
  line[len++] = '\n';
  fwrite(line, 1, len, stderr);
}
