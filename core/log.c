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

static void log_line(enum mr_log_level level, const char *fmt, va_list ap);

void mr_log(enum mr_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_line(level, fmt, ap);
  va_end(ap);
}

static void log_line(enum mr_log_level level, const char *fmt, va_list ap) {
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
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2)
    len = sizeof line - 2;
  /* Newlines inside a message (tracebacks) are kept, but the record ends in
   * exactly one newline. */
  line[len++] = '\n';
  fwrite(line, 1, len, stderr);
}

/* ---- rate-limited lines -------------------------------------------------- */

static unsigned long long monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000ull +
         (unsigned long long)ts.tv_nsec / 1000000ull;
}

static unsigned long long (*clock_ms)(void) = monotonic_ms;
static mr_log_limit *limits_head;

void mr_log_set_clock(unsigned long long (*now_ms)(void)) {
  clock_ms = now_ms ? now_ms : monotonic_ms;
}

/* Formats n with thousands separators ("4,812"), so that a large count
 * reads at a glance. */
static void group_digits(char *out, size_t size, unsigned long long n) {
  char digits[32];
  int len = snprintf(digits, sizeof digits, "%llu", n);
  size_t o = 0;
  for (int i = 0; i < len && o + 2 < size; i++) {
    if (i > 0 && (len - i) % 3 == 0)
      out[o++] = ',';
    out[o++] = digits[i];
  }
  out[o] = '\0';
}

static void log_summary(enum mr_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void log_summary(enum mr_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_line(level, fmt, ap);
  va_end(ap);
}

/* Ends the window that started at lim->window_start: the lines held back
 * in it are summed up in one line. */
static void close_window(mr_log_limit *lim) {
  if (lim->suppressed) {
    char count[40];
    group_digits(count, sizeof count, lim->suppressed);
    log_summary(lim->level, "... and %s more %s in the last second", count,
                lim->what);
  }
  lim->suppressed = 0;
  lim->logged = 0;
}

void mr_log_limited(mr_log_limit *lim, enum mr_log_level level, const char *fmt,
                    ...) {
  if (!lim->registered) {
    lim->registered = 1;
    lim->next = limits_head;
    limits_head = lim;
    lim->window_start = clock_ms();
  }
  unsigned long long now = clock_ms();
  if (now - lim->window_start >= MR_LOG_LIMIT_WINDOW_MS) {
    close_window(lim);
    lim->window_start = now;
  }
  if (lim->logged >= MR_LOG_LIMIT_LINES) {
    lim->suppressed++;
    lim->level = level;
    return;
  }
  lim->logged++;
  va_list ap;
  va_start(ap, fmt);
  log_line(level, fmt, ap);
  va_end(ap);
}

void mr_log_limits_flush(void) {
  unsigned long long now = clock_ms();
  for (mr_log_limit *lim = limits_head; lim; lim = lim->next)
    if (lim->suppressed && now - lim->window_start >= MR_LOG_LIMIT_WINDOW_MS) {
      close_window(lim);
      lim->window_start = now;
    }
}
