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

#define mr_debug(...) mr_log(MR_LOG_DEBUG, __VA_ARGS__)
#define mr_info(...) mr_log(MR_LOG_INFO, __VA_ARGS__)
#define mr_warn(...) mr_log(MR_LOG_WARN, __VA_ARGS__)
#define mr_error(...) mr_log(MR_LOG_ERROR, __VA_ARGS__)

#endif
