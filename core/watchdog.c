#include "watchdog.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* The label: written by the loop's thread around every call into Lua, read
 * by the watchdog only when the loop failed to answer. */
static _Atomic(const char *) cur_script;
static _Atomic(const char *) cur_event;
static _Atomic uint64_t cur_conn;
/* The call counter: written only by the loop's thread, at the outermost
 * enter and leave (a call with no label before it), read by the watchdog
 * and by the interrupt's signal handler on the loop's thread. */
static _Atomic uint64_t call_seq;

mr_watchdog_label mr_watchdog_enter(const char *script, const char *event,
                                    uint64_t conn) {
  mr_watchdog_label prev = mr_watchdog_current();
  atomic_store_explicit(&cur_script, script, memory_order_relaxed);
  atomic_store_explicit(&cur_conn, conn, memory_order_relaxed);
  atomic_store_explicit(&cur_event, event, memory_order_release);
  if (!prev.event)
    atomic_store_explicit(
        &call_seq, atomic_load_explicit(&call_seq, memory_order_relaxed) + 1,
        memory_order_release);
  return prev;
}

void mr_watchdog_leave(mr_watchdog_label prev) {
  /* The counter first: an interrupt that arrives after it sees a call that
   * is over and does nothing. */
  if (!prev.event)
    atomic_store_explicit(
        &call_seq, atomic_load_explicit(&call_seq, memory_order_relaxed) + 1,
        memory_order_release);
  atomic_store_explicit(&cur_script, prev.script, memory_order_relaxed);
  atomic_store_explicit(&cur_conn, prev.conn, memory_order_relaxed);
  atomic_store_explicit(&cur_event, prev.event, memory_order_release);
}

uint64_t mr_watchdog_seq(void) {
  return atomic_load_explicit(&call_seq, memory_order_acquire);
}

mr_watchdog_verdict mr_watchdog_decide(mr_watchdog_judge *j, uint64_t seq,
                                       uint64_t now, uint64_t timeout_ms,
                                       uint64_t grace_ms) {
  /* Outside Lua, or another call than at the last look: start over. */
  if (!(seq & 1) || seq != j->seq) {
    j->seq = seq;
    j->since = now;
    j->fired = 0;
    return MR_WD_WAIT;
  }
  if (!j->fired) {
    if (now - j->since < timeout_ms)
      return MR_WD_WAIT;
    j->fired = 1;
    j->fired_at = now;
    return MR_WD_INTERRUPT;
  }
  return now - j->fired_at >= grace_ms ? MR_WD_STALLED : MR_WD_WAIT;
}

mr_watchdog_label mr_watchdog_current(void) {
  mr_watchdog_label l;
  l.event = atomic_load_explicit(&cur_event, memory_order_acquire);
  l.script = atomic_load_explicit(&cur_script, memory_order_relaxed);
  l.conn = atomic_load_explicit(&cur_conn, memory_order_relaxed);
  return l;
}

/* ---- the thread and its async handle ------------------------------------ */

static sigset_t sigs;
static pthread_t thread;
static int started;
static uv_async_t async;
static mr_watchdog_fn callback;
static void *callback_ud;
/* Guards async_open: the thread may only send while the handle is open. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int async_open;
static atomic_int stopping;
/* Signals forwarded and not yet taken by the loop, per kind. */
static atomic_int pend_int, pend_term, pend_hup;
/* sent counts forwarded SIGINT/SIGTERMs; the loop sets answered to what it
 * saw, so answered < sent means the loop has not come round. */
static atomic_uint sent, answered;

/* --handler-timeout (0: off), the gate's interrupt, the call the watchdog
 * asked to interrupt, and the loop's thread, which the interrupt signal is
 * sent to. */
static atomic_uint timeout_ms;
static _Atomic(mr_watchdog_interrupt_fn) interrupt_fn;
static _Atomic uint64_t interrupt_seq;
static pthread_t loop_thread;
/* Only the watchdog's thread uses it. */
static mr_watchdog_judge judge;

void mr_watchdog_set_timeout(unsigned ms) { atomic_store(&timeout_ms, ms); }

void mr_watchdog_set_interrupt(mr_watchdog_interrupt_fn fn) {
  atomic_store(&interrupt_fn, fn);
}

unsigned mr_watchdog_timeout(void) { return atomic_load(&timeout_ms); }

/* Runs on whatever thread the kernel picked: only the loop's thread, and
 * only while the call that overran is still running, passes it on (an
 * interrupt that crossed the call's return is dropped here). */
static void on_interrupt_signal(int sig) {
  (void)sig;
  mr_watchdog_interrupt_fn fn = atomic_load(&interrupt_fn);
  uint64_t seq = atomic_load(&interrupt_seq);
  if (fn && (seq & 1) && pthread_equal(pthread_self(), loop_thread) &&
      atomic_load_explicit(&call_seq, memory_order_acquire) == seq)
    fn(seq);
}

static const char *sig_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP";
}

static void on_async(uv_async_t *h) {
  (void)h;
  atomic_store(&answered, atomic_load(&sent));
  if (atomic_exchange(&pend_hup, 0))
    callback(callback_ud, SIGHUP);
  for (int n = atomic_exchange(&pend_term, 0); n > 0; n--)
    callback(callback_ud, SIGTERM);
  for (int n = atomic_exchange(&pend_int, 0); n > 0; n--)
    callback(callback_ud, SIGINT);
}

static void forward(int sig) {
  if (sig == SIGHUP) {
    atomic_fetch_add(&pend_hup, 1);
  } else {
    atomic_fetch_add(sig == SIGINT ? &pend_int : &pend_term, 1);
    atomic_fetch_add(&sent, 1);
  }
  pthread_mutex_lock(&lock);
  if (async_open)
    uv_async_send(&async);
  pthread_mutex_unlock(&lock);
}

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* Logs what the loop is running and exits: the loop cannot run exit
 * handlers or close anything, so _exit. */
static void stuck(int sig, const char *why) {
  mr_watchdog_label l = mr_watchdog_current();
  if (l.event && l.conn)
    mr_error("%s: %s; the loop is stuck in %s: %s (conn %llu); exiting with "
             "status %d",
             sig_name(sig), why, l.script ? l.script : "?", l.event,
             (unsigned long long)l.conn, MR_WATCHDOG_EXIT_STUCK);
  else if (l.event)
    mr_error("%s: %s; the loop is stuck in %s: %s; exiting with status %d",
             sig_name(sig), why, l.script ? l.script : "?", l.event,
             MR_WATCHDOG_EXIT_STUCK);
  else
    mr_error("%s: %s; the loop is stuck outside any handler; exiting with "
             "status %d",
             sig_name(sig), why, MR_WATCHDOG_EXIT_STUCK);
  _exit(MR_WATCHDOG_EXIT_STUCK);
}

/* A call into Lua that did not give the loop back within the grace after
 * its interrupt: a JIT-compiled loop, where hooks never fire. The Lua line
 * cannot be read safely from this thread, so the label names it. */
static void stalled(uint64_t ran_ms, unsigned limit) {
  mr_watchdog_label l = mr_watchdog_current();
  char conn[40] = "";
  if (l.conn)
    snprintf(conn, sizeof conn, " (conn %llu)", (unsigned long long)l.conn);
  mr_error("handler timeout: %s: %s%s has run for %llu ms, over "
           "--handler-timeout %u ms, and did not give up the loop within %d "
           "ms of its interrupt (a JIT-compiled loop cannot be interrupted); "
           "exiting with status %d",
           l.script ? l.script : "?", l.event ? l.event : "?", conn,
           (unsigned long long)ran_ms, limit, MR_WATCHDOG_INTERRUPT_GRACE_MS,
           MR_WATCHDOG_EXIT_STALLED);
  _exit(MR_WATCHDOG_EXIT_STALLED);
}

/* One look at the call counter, at every wake-up of the thread. */
static void check_timeout(void) {
  unsigned limit = atomic_load(&timeout_ms);
  if (!limit)
    return;
  uint64_t seq = mr_watchdog_seq();
  uint64_t now = now_ms();
  switch (mr_watchdog_decide(&judge, seq, now, limit,
                             MR_WATCHDOG_INTERRUPT_GRACE_MS)) {
  case MR_WD_INTERRUPT:
    atomic_store(&interrupt_seq, seq);
    pthread_kill(loop_thread, MR_WATCHDOG_SIG_INTERRUPT);
    break;
  case MR_WD_STALLED:
    stalled(now - judge.since, limit);
    break;
  case MR_WD_WAIT:
    break;
  }
}

/* How long the thread sleeps between looks: a quarter of the timeout, 5 to
 * 100 ms, so a call is caught within 1.25 times the timeout. */
static long tick_ms(void) {
  unsigned t = atomic_load(&timeout_ms) / 4;
  return t < 5 ? 5 : t > 100 ? 100 : (long)t;
}

/* A SIGINT or SIGTERM for a loop that answered every earlier one: a second
 * one while a handler runs cannot wait for the loop (the README promises
 * that it exits at once); otherwise it goes to the loop. */
static void take(int sig) {
  if (atomic_load(&sent) > 0 && mr_watchdog_current().event)
    stuck(sig, "second signal while a handler was running");
  forward(sig);
}

/* Waits for the loop to answer what was forwarded; a further SIGINT or
 * SIGTERM before it did, or the grace running out, ends the process.
 * Returns 0 when answered, -1 when the watchdog is stopping. */
static int await_answer(int first) {
  uint64_t deadline = now_ms() + MR_WATCHDOG_GRACE_MS;
  while (atomic_load(&answered) < atomic_load(&sent)) {
    uint64_t now = now_ms();
    if (now >= deadline)
      stuck(first, "the loop did not answer within 2 s");
    uint64_t left = deadline - now;
    /* Short steps, so that an answer is seen soon after it comes. */
    if (left > 50)
      left = 50;
    struct timespec ts = {0, (long)left * 1000000L};
    int sig = sigtimedwait(&sigs, NULL, &ts);
    if (atomic_load(&stopping))
      return -1;
    check_timeout();
    if (sig == SIGHUP) {
      forward(sig);
    } else if (sig == SIGINT || sig == SIGTERM) {
      if (atomic_load(&answered) < atomic_load(&sent))
        stuck(sig, "second signal while the loop had not answered the first");
      /* The loop answered the first just before this one came: this one
       * is the loop's too, with a grace of its own. */
      take(sig);
      first = sig;
      deadline = now_ms() + MR_WATCHDOG_GRACE_MS;
    }
  }
  return 0;
}

/* Waits for a signal; with a handler timeout, for at most one tick.
 * Returns the signal, or 0 when the tick ran out. */
static int wait_signal(void) {
  if (!atomic_load(&timeout_ms)) {
    int sig = 0;
    return sigwait(&sigs, &sig) == 0 ? sig : 0;
  }
  long t = tick_ms();
  struct timespec ts = {t / 1000, (t % 1000) * 1000000L};
  int sig = sigtimedwait(&sigs, NULL, &ts);
  return sig > 0 ? sig : 0;
}

static void *run(void *arg) {
  (void)arg;
  /* The interrupt is for the loop's thread only. */
  sigset_t own;
  sigemptyset(&own);
  sigaddset(&own, MR_WATCHDOG_SIG_INTERRUPT);
  pthread_sigmask(SIG_BLOCK, &own, NULL);
  for (;;) {
    int sig = wait_signal();
    if (atomic_load(&stopping))
      return NULL;
    check_timeout();
    if (!sig)
      continue;
    if (sig == SIGHUP) {
      forward(sig);
      continue;
    }
    take(sig);
    if (await_answer(sig) != 0)
      return NULL;
  }
}

int mr_watchdog_start(uv_loop_t *loop, mr_watchdog_fn fn, void *ud) {
  if (started)
    return UV_EBUSY;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  int r = pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  if (r != 0)
    return -r;
  callback = fn;
  callback_ud = ud;
  loop_thread = pthread_self();
  memset(&judge, 0, sizeof judge);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(MR_WATCHDOG_SIG_INTERRUPT, &sa, NULL) != 0)
    return UV_EINVAL;
  atomic_store(&stopping, 0);
  atomic_store(&sent, 0);
  atomic_store(&answered, 0);
  if ((r = uv_async_init(loop, &async, on_async)) != 0)
    return r;
  /* The watchdog never keeps the loop alive on its own. */
  uv_unref((uv_handle_t *)&async);
  async_open = 1;
  if ((r = pthread_create(&thread, NULL, run, NULL)) != 0) {
    async_open = 0;
    uv_close((uv_handle_t *)&async, NULL);
    return -r;
  }
  started = 1;
  return 0;
}

void mr_watchdog_stop(void) {
  if (!started)
    return;
  started = 0;
  atomic_store(&stopping, 1);
  pthread_mutex_lock(&lock);
  async_open = 0;
  pthread_mutex_unlock(&lock);
  uv_close((uv_handle_t *)&async, NULL);
  /* Wakes the thread out of sigwait; it sees stopping and returns. */
  pthread_kill(thread, SIGHUP);
  pthread_join(thread, NULL);
}
