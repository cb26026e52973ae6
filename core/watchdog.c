#include "watchdog.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* The label: written by the loop's thread around every call into Lua, read
 * by the watchdog only when the loop failed to answer. */
static _Atomic(const char *) cur_script;
static _Atomic(const char *) cur_event;
static _Atomic uint64_t cur_conn;

mr_watchdog_label mr_watchdog_enter(const char *script, const char *event,
                                    uint64_t conn) {
  mr_watchdog_label prev = mr_watchdog_current();
  atomic_store_explicit(&cur_script, script, memory_order_relaxed);
  atomic_store_explicit(&cur_conn, conn, memory_order_relaxed);
  atomic_store_explicit(&cur_event, event, memory_order_release);
  return prev;
}

void mr_watchdog_leave(mr_watchdog_label prev) {
  atomic_store_explicit(&cur_script, prev.script, memory_order_relaxed);
  atomic_store_explicit(&cur_conn, prev.conn, memory_order_relaxed);
  atomic_store_explicit(&cur_event, prev.event, memory_order_release);
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

static void *run(void *arg) {
  (void)arg;
  for (;;) {
    int sig = 0;
    if (sigwait(&sigs, &sig) != 0)
      continue;
    if (atomic_load(&stopping))
      return NULL;
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
