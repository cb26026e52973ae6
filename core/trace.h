/* --trace-latency FILE: where a broadcast's time goes, frame by frame.
 *
 * When it is on, every plain broadcast frame carries a trace id (in the
 * padding of its mr_buf, so a frame costs no memory for it), and the
 * record it names collects the loop-time stamps of the frame's way out:
 * when the read that brought the message returned, when the message was
 * handed to the handler, when the broadcast had queued it for every
 * recipient, and when the first and the last recipient's socket took it.
 * When the last reference to the frame goes, its record is written to the
 * file as one line. The benchmark joins these lines with the load
 * generator's send and receive times (tests/bench/run.py, the latency
 * breakdown).
 *
 * Off (the default), each hook is one test of a global that is never set,
 * and frames carry trace id 0. The tracer is process-wide, like the log:
 * the frame's refcount (buf.c, layer 1) ends its record and has no server
 * to ask. Pure of libuv: stamps are CLOCK_MONOTONIC nanoseconds, the clock
 * the load generator stamps its messages with. */
#ifndef MR_TRACE_H
#define MR_TRACE_H

#include <stdint.h>

/* Nonzero while a trace file is open. */
extern int mr_trace_enabled;

/* Opens path for writing (truncating it) and turns tracing on. Returns 0
 * or a negative error code (the file could not be opened, or no memory for
 * the records). */
int mr_trace_open(const char *path);

/* Writes what is buffered and turns tracing off. */
void mr_trace_close(void);

/* The hooks, each a no-op while tracing is off. */

/* A read from a client's socket returned (before its bytes are parsed). */
void mr_trace__read(void);
static inline void mr_trace_read(void) {
  if (mr_trace_enabled)
    mr_trace__read();
}

/* A data message of that read is handed to the handler. */
void mr_trace__message(void);
static inline void mr_trace_message(void) {
  if (mr_trace_enabled)
    mr_trace__message();
}

/* A broadcast frame was made: returns its trace id (0 when off, or when no
 * record is free). */
uint32_t mr_trace__frame(void);
static inline uint32_t mr_trace_frame(void) {
  return mr_trace_enabled ? mr_trace__frame() : 0;
}

/* The broadcast of frame id has queued it for recipients connections. */
void mr_trace_queued(uint32_t id, uint32_t recipients);

/* A socket took the last byte of frame id (one recipient's copy); *now is
 * the stamp to use, read from the clock when 0 (a write that completes
 * several frames reads it once). */
void mr_trace_written(uint32_t id, uint64_t *now);

/* The last reference to frame id went: its record is written out. */
void mr_trace_done(uint32_t id);

/* A sendmsg to a client handed the kernel n queued blocks. */
void mr_trace__send(unsigned n);
static inline void mr_trace_send(unsigned n) {
  if (mr_trace_enabled)
    mr_trace__send(n);
}

/* A loop turn reached the server's safe point (a slice of writes). */
void mr_trace__turn(void);
static inline void mr_trace_turn(void) {
  if (mr_trace_enabled)
    mr_trace__turn();
}

#endif
