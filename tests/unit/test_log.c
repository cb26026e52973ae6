/* The log's rate limiter: a burst becomes a few lines and one summary with
 * the exact count of what was held back. */
#include <string.h>

#include "log.h"
#include "log_capture.h"
#include "test_util.h"

static unsigned long long fake_now;
static unsigned long long fake_clock(void) { return fake_now; }

static int count_lines(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

/* 200 events in one window: MR_LOG_LIMIT_LINES lines, then nothing until
 * the window ends; the next event after it writes the summary first. */
static void test_burst_is_summed_up_on_the_next_event(void) {
  static mr_log_limit lim = MR_LOG_LIMIT_INIT("test events");
  fake_now = 1000;
  capture_begin();
  for (int i = 0; i < 200; i++)
    mr_log_limited(&lim, MR_LOG_INFO, "event %d", i);
  fake_now += MR_LOG_LIMIT_WINDOW_MS;
  mr_log_limited(&lim, MR_LOG_INFO, "event after");
  const char *text = capture_end();
  CHECK_EQ_INT(count_lines(text, "event "), MR_LOG_LIMIT_LINES + 1);
  CHECK(strstr(text, "event 4\n") != NULL);
  CHECK(strstr(text, "event 5\n") == NULL);
  char want[80];
  snprintf(want, sizeof want, "... and %d more test events in the last second",
           200 - MR_LOG_LIMIT_LINES);
  CHECK(strstr(text, want) != NULL);
  /* The summary comes before the line that opened the new window. */
  CHECK(strstr(text, want) < strstr(text, "event after"));
}

/* The flush writes a pending summary once its window has ended, and only
 * then; counts are grouped in thousands. */
static void test_flush_writes_the_summary_after_the_window(void) {
  static mr_log_limit lim = MR_LOG_LIMIT_INIT("flood events");
  fake_now = 50000;
  capture_begin();
  for (int i = 0; i < 4817; i++)
    mr_log_limited(&lim, MR_LOG_WARN, "flood %d", i);
  fake_now += MR_LOG_LIMIT_WINDOW_MS - 1;
  mr_log_limits_flush();
  const char *early = capture_end();
  CHECK(strstr(early, "more flood events") == NULL);
  capture_begin();
  fake_now += 1;
  mr_log_limits_flush();
  mr_log_limits_flush();
  const char *text = capture_end();
  CHECK_EQ_INT(count_lines(text, "... and 4,812 more flood events in the last "
                                 "second"),
               1);
  CHECK(strstr(text, "warn") != NULL);
}

/* Events slower than the limit are all logged, with no summary. */
static void test_slow_events_are_all_logged(void) {
  static mr_log_limit lim = MR_LOG_LIMIT_INIT("slow events");
  fake_now = 100000;
  capture_begin();
  for (int i = 0; i < 20; i++) {
    mr_log_limited(&lim, MR_LOG_INFO, "slow %d", i);
    fake_now += 300;
  }
  mr_log_limits_flush();
  const char *text = capture_end();
  CHECK_EQ_INT(count_lines(text, "slow "), 20);
  CHECK(strstr(text, "more slow events") == NULL);
}

int main(void) {
  mr_log_set_clock(fake_clock);
  test_burst_is_summed_up_on_the_next_event();
  test_flush_writes_the_summary_after_the_window();
  test_slow_events_are_all_logged();
  mr_log_set_clock(NULL);
  return test_report();
}
