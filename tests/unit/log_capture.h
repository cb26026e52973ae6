/* Captures what the core logs while a test runs, so that a test can check
 * that a warning or an error was logged and that it names the problem.
 *
 * mr_log writes each line with one fwrite to stderr; between
 * capture_begin and capture_end, file descriptor 2 points at a temporary
 * file and the log level is debug. The captured text stays readable until
 * the next capture. */
#ifndef MR_LOG_CAPTURE_H
#define MR_LOG_CAPTURE_H

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static struct {
  FILE *tmp;
  int saved_fd;
  enum mr_log_level level;
  char text[65536];
} capture_state __attribute__((unused));

/* Starts capturing; returns 0, or -1 (nothing is captured) when no
 * temporary file could be made. */
static inline int capture_begin(void) {
  fflush(stderr);
  capture_state.tmp = tmpfile();
  if (!capture_state.tmp)
    return -1;
  capture_state.saved_fd = dup(2);
  dup2(fileno(capture_state.tmp), 2);
  capture_state.level = mr_log_get_level();
  mr_log_set_level(MR_LOG_DEBUG);
  return 0;
}

/* Stops capturing and returns what was logged (NUL-terminated, truncated
 * to 64 KiB). */
static inline const char *capture_end(void) {
  capture_state.text[0] = '\0';
  if (!capture_state.tmp)
    return capture_state.text;
  fflush(stderr);
  dup2(capture_state.saved_fd, 2);
  close(capture_state.saved_fd);
  mr_log_set_level(capture_state.level);
  rewind(capture_state.tmp);
  size_t n = fread(capture_state.text, 1, sizeof capture_state.text - 1,
                   capture_state.tmp);
  capture_state.text[n] = '\0';
  fclose(capture_state.tmp);
  capture_state.tmp = NULL;
  return capture_state.text;
}

#endif
