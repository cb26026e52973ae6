/* Logging: one line per event on stderr, with a timestamp and a level. */
#ifndef MR_LOG_H
#define MR_LOG_H

enum mr_log_level { MR_LOG_DEBUG, MR_LOG_INFO, MR_LOG_WARN, MR_LOG_ERROR };

/* Lines below this level are dropped; the default is MR_LOG_INFO. */
void mr_log_set_level(enum mr_log_level level);
enum mr_log_level mr_log_get_level(void);
/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int mr_log_parse_level(const char *name);

void mr_log(enum mr_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Rate limiting for events that come in bursts (timeouts, refusals,
 * protocol errors): each call site keeps one static mr_log_limit, logs at
 * most MR_LOG_LIMIT_LINES lines per one-second window, and the lines it
 * held back are summed up in one line ("... and 4,812 more handshake
 * timeouts in the last second") when the next event comes after the window
 * or when mr_log_limits_flush runs. Counters are kept by the callers and
 * stay exact; only the log is thinned. */
#define MR_LOG_LIMIT_LINES 5
#define MR_LOG_LIMIT_WINDOW_MS 1000

typedef struct mr_log_limit {
  /* What the lines are about, as a plural noun for the summary line. */
  const char *what;
  unsigned long long window_start; /* ms, from the log clock */
  unsigned logged;                 /* lines written in this window */
  unsigned long long suppressed;   /* lines held back in this window */
  enum mr_log_level level;         /* the level of the held-back lines */
  int registered;
  struct mr_log_limit *next; /* every limiter used so far, for the flush */
} mr_log_limit;

#define MR_LOG_LIMIT_INIT(what)                                                \
  { (what), 0, 0, 0, MR_LOG_INFO, 0, NULL }

void mr_log_limited(mr_log_limit *lim, enum mr_log_level level, const char *fmt,
                    ...) __attribute__((format(printf, 3, 4)));
/* Writes the summary line of every limiter whose window has ended with
 * lines held back; the server calls it from its periodic sweep so that the
 * count is logged soon after a burst ends, not only at the next event. */
void mr_log_limits_flush(void);
/* The clock the limiters read, in milliseconds; NULL restores the
 * monotonic clock. Tests inject their own. */
void mr_log_set_clock(unsigned long long (*now_ms)(void));

#define mr_debug(...) mr_log(MR_LOG_DEBUG, __VA_ARGS__)
#define mr_info(...) mr_log(MR_LOG_INFO, __VA_ARGS__)
#define mr_warn(...) mr_log(MR_LOG_WARN, __VA_ARGS__)
#define mr_error(...) mr_log(MR_LOG_ERROR, __VA_ARGS__)

#endif
