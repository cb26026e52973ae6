#include "trace.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int mr_trace_enabled;

/* Records live from a frame's making to its last release; a frame still
 * queued somewhere when its slot comes round again is not traced further
 * (counted as lost), so the ring bounds the tracer's memory whatever the
 * backpressure. */
#define RING 65536

typedef struct {
  uint32_t seq; /* 1-based frame number; 0: the slot is free */
  uint32_t recipients, writes;
  uint32_t in_read;                /* the message's place in its read */
  uint64_t read_no;                /* which read brought it */
  uint64_t turn_queued, turn_last; /* loop turns, counted from the start */
  uint64_t read, msg, queued, first, last; /* CLOCK_MONOTONIC ns */
} rec;

static struct {
  FILE *out;
  rec *ring;
  uint32_t seq;
  uint64_t reads, turns, lost, sends, sent_blocks;
  uint64_t read_ns, msg_ns; /* the current read and message */
  uint32_t in_read;         /* messages handed up from the current read */
} T;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int mr_trace_open(const char *path) {
  mr_trace_close();
  memset(&T, 0, sizeof T); /* a new file numbers its frames from 1 */
  /* -errno is the error space's code on Unix (MR_ENOMEM == UV_ENOMEM ==
   * -ENOMEM); error.h sits beside this file, not under it. */
  if (!(T.ring = calloc(RING, sizeof *T.ring)))
    return -ENOMEM;
  if (!(T.out = fopen(path, "w"))) {
    int e = errno;
    free(T.ring);
    T.ring = NULL;
    return -e;
  }
  fprintf(T.out, "# seq read_no in_read read_ns msg_ns queued_ns first_ns "
                 "last_ns recipients writes turn_queued turn_last\n");
  mr_trace_enabled = 1;
  return 0;
}

void mr_trace_close(void) {
  if (!T.out)
    return;
  fprintf(T.out,
          "# frames %" PRIu32 " lost %" PRIu64 " reads %" PRIu64
          " turns %" PRIu64 " sends %" PRIu64 " sent_blocks %" PRIu64 "\n",
          T.seq, T.lost, T.reads, T.turns, T.sends, T.sent_blocks);
  fclose(T.out);
  T.out = NULL;
  free(T.ring);
  T.ring = NULL;
  mr_trace_enabled = 0;
}

void mr_trace__read(void) {
  T.reads++;
  T.read_ns = now_ns();
  T.in_read = 0;
}

void mr_trace__message(void) {
  T.msg_ns = now_ns();
  T.in_read++;
}

void mr_trace__turn(void) { T.turns++; }

void mr_trace__send(unsigned n) {
  T.sends++;
  T.sent_blocks += n;
}

static rec *find(uint32_t id) {
  if (!T.ring || id == 0)
    return NULL;
  rec *r = &T.ring[(id - 1) % RING];
  return r->seq == id ? r : NULL;
}

uint32_t mr_trace__frame(void) {
  uint32_t id = ++T.seq;
  if (id == 0)
    id = ++T.seq; /* 0 means untraced */
  rec *r = &T.ring[(id - 1) % RING];
  if (r->seq != 0) {
    T.lost++; /* the old frame is still queued: it stops being traced */
    r->seq = 0;
  }
  *r = (rec){.seq = id,
             .read_no = T.reads,
             .in_read = T.in_read,
             .read = T.read_ns,
             .msg = T.msg_ns,
             .turn_queued = T.turns};
  return id;
}

void mr_trace_queued(uint32_t id, uint32_t recipients) {
  rec *r = find(id);
  if (!r)
    return;
  r->queued = now_ns();
  r->recipients = recipients;
}

void mr_trace_written(uint32_t id, uint64_t *now) {
  rec *r = find(id);
  if (!r)
    return;
  if (!*now)
    *now = now_ns();
  uint64_t t = *now;
  if (!r->first)
    r->first = t;
  r->last = t;
  r->turn_last = T.turns;
  r->writes++;
}

void mr_trace_done(uint32_t id) {
  rec *r = find(id);
  if (!r)
    return;
  if (T.out)
    fprintf(T.out,
            "%" PRIu32 " %" PRIu64 " %" PRIu32 " %" PRIu64 " %" PRIu64
            " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu32 " %" PRIu32
            " %" PRIu64 " %" PRIu64 "\n",
            r->seq, r->read_no, r->in_read, r->read, r->msg, r->queued,
            r->first, r->last, r->recipients, r->writes, r->turn_queued,
            r->turn_last);
  r->seq = 0;
}
