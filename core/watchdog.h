/* Signals that work whatever the loop is doing.
 *
 * libuv's uv_signal_t delivers a signal only when the loop runs, so a
 * handler stuck in `while true do end` made SIGTERM, a second SIGTERM and
 * SIGINT all wait for a loop that never came back. Here SIGINT, SIGTERM and
 * SIGHUP are blocked in every thread and one small thread takes them with
 * sigwait: it forwards each to the loop (a uv_async_t, so the orderly path
 * still runs on the loop), and when the loop has not answered a SIGINT or
 * SIGTERM within MR_WATCHDOG_GRACE_MS, or a second one comes while a handler
 * is running, it logs what the loop was running and exits with
 * MR_WATCHDOG_EXIT_STUCK.
 *
 * What the loop runs is a label the gate sets around every call into Lua
 * (script path, event, connection id): plain stores, cheap on the hot path,
 * and safe to read from the watchdog, unlike a Lua line number.
 *
 * --handler-timeout: the gate's outermost enter and leave also bump a call
 * counter (odd while Lua runs). With a timeout set, the thread wakes every
 * quarter of it (at most 100 ms) and judges the counter: the same odd value
 * for longer than the timeout means one call has overrun, and the thread
 * interrupts it by sending MR_WATCHDOG_SIG_INTERRUPT to the loop's thread,
 * whose handler calls the function the gate registered (it sets a Lua hook,
 * as LuaJIT's own interpreter does for Ctrl-C). A call that is still the
 * same MR_WATCHDOG_INTERRUPT_GRACE_MS later (a JIT-compiled loop, where
 * hooks never fire) is logged with its label, and the process exits with
 * MR_WATCHDOG_EXIT_STALLED so that a supervisor restarts it. The loop's
 * only cost is the counter's two stores per outermost call. */
#ifndef MR_WATCHDOG_H
#define MR_WATCHDOG_H

#include <signal.h>
#include <stdint.h>
#include <uv.h>

/* How long the loop has to answer a SIGINT or SIGTERM. */
#define MR_WATCHDOG_GRACE_MS 2000
/* The exit status of a process whose loop did not answer a signal. */
#define MR_WATCHDOG_EXIT_STUCK 3

/* The exit status of a process whose handler overran --handler-timeout and
 * could not be interrupted within MR_WATCHDOG_INTERRUPT_GRACE_MS. */
#define MR_WATCHDOG_EXIT_STALLED 4
/* How long an interrupted handler has to give up the loop. */
#define MR_WATCHDOG_INTERRUPT_GRACE_MS 1000
/* The signal that carries an interrupt to the loop's thread. */
#define MR_WATCHDOG_SIG_INTERRUPT SIGUSR2

/* Called on the loop's thread with SIGINT, SIGTERM or SIGHUP. */
typedef void (*mr_watchdog_fn)(void *ud, int signum);

/* What the loop is running; script and event must outlive the call they
 * label (the gate passes the script's path buffer and string literals). */
typedef struct mr_watchdog_label {
  const char *script;
  const char *event;
  uint64_t conn;
} mr_watchdog_label;

/* Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and so in every
 * thread started after it), starts the watchdog thread and an unreferenced
 * uv_async_t on loop that calls fn. Call once, on the loop's thread, before
 * anything starts another thread. Returns 0 or a negative error code. */
int mr_watchdog_start(uv_loop_t *loop, mr_watchdog_fn fn, void *ud);

/* Closes the async handle and joins the thread; signals stay blocked, so
 * one that comes after this is ignored. A no-op when not started. */
void mr_watchdog_stop(void);

/* Sets the label for a call into Lua and returns the one it replaces, for
 * mr_watchdog_leave (calls nest: a handler's send may run on_close). */
mr_watchdog_label mr_watchdog_enter(const char *script, const char *event,
                                    uint64_t conn);
void mr_watchdog_leave(mr_watchdog_label prev);

/* The current label ({NULL, NULL, 0} outside Lua). */
mr_watchdog_label mr_watchdog_current(void);

/* The call counter: odd while an outermost call into Lua runs; each
 * outermost enter and leave adds one. */
uint64_t mr_watchdog_seq(void);

/* Runs on the loop's thread, inside the handler of
 * MR_WATCHDOG_SIG_INTERRUPT, when the call numbered seq (still running)
 * overran the timeout; it may only do what a signal handler may (LuaJIT's
 * lua_sethook is written to be called so). */
typedef void (*mr_watchdog_interrupt_fn)(uint64_t seq);

/* Sets the handler timeout in ms (0: off) and the function that interrupts
 * an overrunning call. Set the timeout before mr_watchdog_start: a thread
 * started without one sleeps until a signal comes. */
void mr_watchdog_set_timeout(unsigned timeout_ms);
void mr_watchdog_set_interrupt(mr_watchdog_interrupt_fn fn);
unsigned mr_watchdog_timeout(void);

/* The decision the thread makes at each wake-up, kept pure so that it can
 * be tested with a fake clock: seq is the call counter read now. */
typedef enum {
  MR_WD_WAIT,      /* nothing to do */
  MR_WD_INTERRUPT, /* the call seq has run over the timeout: interrupt it */
  MR_WD_STALLED    /* interrupted grace_ms ago and still running: exit */
} mr_watchdog_verdict;

typedef struct mr_watchdog_judge {
  uint64_t seq;      /* the counter at the last look */
  uint64_t since;    /* when seq was first seen (ms) */
  uint64_t fired_at; /* when the interrupt was sent (ms) */
  int fired;
} mr_watchdog_judge;

mr_watchdog_verdict mr_watchdog_decide(mr_watchdog_judge *j, uint64_t seq,
                                       uint64_t now, uint64_t timeout_ms,
                                       uint64_t grace_ms);

#endif
