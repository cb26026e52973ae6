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
 * and safe to read from the watchdog, unlike a Lua line number. */
#ifndef MR_WATCHDOG_H
#define MR_WATCHDOG_H

#include <stdint.h>
#include <uv.h>

/* How long the loop has to answer a SIGINT or SIGTERM. */
#define MR_WATCHDOG_GRACE_MS 2000
/* The exit status of a process whose loop did not answer a signal. */
#define MR_WATCHDOG_EXIT_STUCK 3

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

#endif
