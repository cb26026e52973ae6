/* Unit tests for the signal watchdog (core/watchdog.c).
 *
 * The label nests and unwinds as gate calls do; signals sent to the process
 * reach the loop's callback through the watchdog's thread (SIGHUP and
 * SIGTERM, each once and in the loop's thread), and stopping joins the
 * thread. The stuck path (exit status 3) ends the process, so it is tested
 * against the real binary in tests/integration/test_signals.py. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>
#include <uv.h>

#include "test_util.h"
#include "watchdog.h"

static void test_label_nests(void) {
  mr_watchdog_label l = mr_watchdog_current();
  CHECK(l.script == NULL && l.event == NULL && l.conn == 0);
  mr_watchdog_label a = mr_watchdog_enter("a.lua", "on_message", 7);
  CHECK(a.event == NULL);
  mr_watchdog_label b = mr_watchdog_enter("a.lua", "on_close", 9);
  l = mr_watchdog_current();
  CHECK(l.event && strcmp(l.event, "on_close") == 0 && l.conn == 9);
  mr_watchdog_leave(b);
  l = mr_watchdog_current();
  CHECK(l.event && strcmp(l.event, "on_message") == 0 && l.conn == 7);
  CHECK(l.script && strcmp(l.script, "a.lua") == 0);
  mr_watchdog_leave(a);
  l = mr_watchdog_current();
  CHECK(l.event == NULL && l.script == NULL && l.conn == 0);
}

/* The counter moves at the outermost enter and leave only: odd while Lua
 * runs, and a nested call (on_close inside a handler's send) is part of
 * the call around it. */
static void test_counter_counts_outermost_calls(void) {
  uint64_t s0 = mr_watchdog_seq();
  CHECK((s0 & 1) == 0);
  mr_watchdog_label a = mr_watchdog_enter("a.lua", "on_message", 7);
  CHECK_EQ_INT(mr_watchdog_seq(), s0 + 1);
  mr_watchdog_label b = mr_watchdog_enter("a.lua", "on_close", 9);
  CHECK_EQ_INT(mr_watchdog_seq(), s0 + 1);
  mr_watchdog_leave(b);
  CHECK_EQ_INT(mr_watchdog_seq(), s0 + 1);
  mr_watchdog_leave(a);
  CHECK_EQ_INT(mr_watchdog_seq(), s0 + 2);
}

/* The decision, with a fake clock (ms) and a timeout of 100, grace 1000. */
static void test_decide(void) {
  mr_watchdog_judge j;
  memset(&j, 0, sizeof j);
  /* Outside Lua (even counter): nothing, however long. */
  CHECK_EQ_INT(mr_watchdog_decide(&j, 4, 0, 100, 1000), MR_WD_WAIT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 4, 5000, 100, 1000), MR_WD_WAIT);
  /* A call first seen at 5000 overruns at 5100, not before. */
  CHECK_EQ_INT(mr_watchdog_decide(&j, 5, 5000, 100, 1000), MR_WD_WAIT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 5, 5099, 100, 1000), MR_WD_WAIT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 5, 5100, 100, 1000), MR_WD_INTERRUPT);
  /* Interrupted once; stalled when still the same call after the grace. */
  CHECK_EQ_INT(mr_watchdog_decide(&j, 5, 5200, 100, 1000), MR_WD_WAIT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 5, 6099, 100, 1000), MR_WD_WAIT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 5, 6100, 100, 1000), MR_WD_STALLED);
  /* Many short calls between two looks are never one long call. */
  memset(&j, 0, sizeof j);
  uint64_t seq = 7;
  for (uint64_t t = 0; t < 1000; t += 50, seq += 2)
    CHECK_EQ_INT(mr_watchdog_decide(&j, seq, t, 100, 1000), MR_WD_WAIT);
  /* A call that ended after its interrupt resets the judgement: the next
   * one gets its own full timeout. */
  memset(&j, 0, sizeof j);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 9, 0, 100, 1000), MR_WD_WAIT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 9, 100, 100, 1000), MR_WD_INTERRUPT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 10, 150, 100, 1000), MR_WD_WAIT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 11, 160, 100, 1000), MR_WD_WAIT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 11, 259, 100, 1000), MR_WD_WAIT);
  CHECK_EQ_INT(mr_watchdog_decide(&j, 11, 260, 100, 1000), MR_WD_INTERRUPT);
}

static int got_hup, got_term;
static pthread_t loop_thread;
static int wrong_thread;

static void on_sig(void *ud, int signum) {
  (void)ud;
  if (!pthread_equal(pthread_self(), loop_thread))
    wrong_thread = 1;
  if (signum == SIGHUP)
    got_hup++;
  else if (signum == SIGTERM)
    got_term++;
}

static void on_tick(uv_timer_t *t) {
  uint64_t *ticks = t->data;
  if (++*ticks > 200 || (got_hup && got_term))
    uv_stop(t->loop);
}

static void test_signals_reach_the_loop(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  loop_thread = pthread_self();
  CHECK(mr_watchdog_start(&loop, on_sig, NULL) == 0);
  CHECK(mr_watchdog_start(&loop, on_sig, NULL) == UV_EBUSY);
  kill(getpid(), SIGHUP);
  kill(getpid(), SIGTERM);
  /* Bounded: 200 ticks of 10 ms. */
  uint64_t ticks = 0;
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = &ticks;
  uv_timer_start(&t, on_tick, 10, 10);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(got_hup == 1);
  CHECK(got_term == 1);
  CHECK(!wrong_thread);
  uv_close((uv_handle_t *)&t, NULL);
  mr_watchdog_stop();
  mr_watchdog_stop(); /* a no-op once stopped */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

int main(void) {
  test_label_nests();
  test_counter_counts_outermost_calls();
  test_decide();
  test_signals_reach_the_loop();
  return test_report();
}
