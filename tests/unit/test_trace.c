/* Unit tests for --trace-latency's recorder (core/trace.c): off, every hook
 * is a no-op and frames get id 0; on, a frame's record carries the stamps of
 * its read, message, queueing and writes in order and is written out when
 * the frame's last reference goes (through buf.c, as the server does); a
 * record whose slot is needed again before its frame is freed is dropped
 * and counted, not corrupted. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "buf.h"
#include "test_util.h"
#include "trace.h"

typedef struct {
  uint64_t v[12];
} line;

/* Reads the record lines of path into out (at most max); the footer's
 * frame and lost counts into *frames and *lost. Returns the lines read. */
static int read_trace(const char *path, line *out, int max, uint64_t *frames,
                      uint64_t *lost) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  char buf[512];
  int n = 0;
  *frames = *lost = UINT64_MAX;
  while (fgets(buf, sizeof buf, f)) {
    if (buf[0] == '#') {
      sscanf(buf, "# frames %" SCNu64 " lost %" SCNu64, frames, lost);
      continue;
    }
    if (n < max) {
      line *l = &out[n];
      if (sscanf(buf,
                 "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                 " %" SCNu64 " %" SCNu64,
                 &l->v[0], &l->v[1], &l->v[2], &l->v[3], &l->v[4], &l->v[5],
                 &l->v[6], &l->v[7], &l->v[8], &l->v[9], &l->v[10],
                 &l->v[11]) == 12)
        n++;
    }
  }
  fclose(f);
  return n;
}

static void test_off(void) {
  CHECK(!mr_trace_enabled);
  mr_trace_read();
  mr_trace_message();
  mr_trace_turn();
  mr_trace_send(3);
  CHECK_EQ_INT(mr_trace_frame(), 0);
  /* A frame with id 0 is queued, written and freed without a trace. */
  mr_buf *b = mr_buf_new(10);
  mr_outq q = {0};
  CHECK_EQ_INT(mr_outq_push(&q, b), 0);
  mr_buf_release(b);
  mr_outq_consume(&q, 10);
  mr_outq_clear(&q);
}

/* One frame to three recipients, written over two turns. */
static void test_one_frame(void) {
  char path[] = "/tmp/moonroom-test-trace-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  CHECK_EQ_INT(mr_trace_open(path), 0);
  CHECK(mr_trace_enabled);

  mr_trace_turn();
  mr_trace_read();
  mr_trace_message();
  mr_trace_message(); /* the second message of the read is broadcast */
  mr_buf *b = mr_buf_new(20);
  b->trace = mr_trace_frame();
  CHECK(b->trace != 0);
  mr_outq q[3] = {{0}};
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(mr_outq_push(&q[i], b), 0);
  mr_trace_queued(b->trace, 3);
  mr_buf_release(b); /* the broadcast's own reference */

  mr_trace_turn();
  mr_outq_consume(&q[0], 20);
  mr_outq_consume(&q[1], 7); /* a partial write does not count */
  mr_trace_turn();
  mr_outq_consume(&q[1], 13);
  mr_outq_consume(&q[2], 20); /* the last reference: the line is written */
  mr_trace_close();
  CHECK(!mr_trace_enabled);

  line l[4];
  uint64_t frames, lost;
  CHECK_EQ_INT(read_trace(path, l, 4, &frames, &lost), 1);
  CHECK_EQ_INT(frames, 1);
  CHECK_EQ_INT(lost, 0);
  /* seq read_no in_read read msg queued first last recipients writes
   * turn_queued turn_last */
  CHECK_EQ_INT(l[0].v[0], 1);
  CHECK_EQ_INT(l[0].v[1], 1);
  CHECK_EQ_INT(l[0].v[2], 2);
  CHECK(l[0].v[3] > 0);
  CHECK(l[0].v[3] <= l[0].v[4]);
  CHECK(l[0].v[4] <= l[0].v[5]);
  CHECK(l[0].v[5] <= l[0].v[6]);
  CHECK(l[0].v[6] <= l[0].v[7]);
  CHECK_EQ_INT(l[0].v[8], 3);
  CHECK_EQ_INT(l[0].v[9], 3);
  CHECK_EQ_INT(l[0].v[10], 1);
  CHECK_EQ_INT(l[0].v[11], 3);
  unlink(path);
}

/* More frames alive at once than the ring holds: the oldest stop being
 * traced (counted lost) and the others are intact. */
static void test_ring_wrap(void) {
  char path[] = "/tmp/moonroom-test-trace-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  CHECK_EQ_INT(mr_trace_open(path), 0);
  enum { N = 65536 + 10 };
  mr_buf **bs = malloc(sizeof *bs * N);
  for (int i = 0; i < N; i++) {
    bs[i] = mr_buf_new(1);
    bs[i]->trace = mr_trace_frame();
    mr_trace_queued(bs[i]->trace, 1);
  }
  for (int i = 0; i < N; i++)
    mr_buf_release(bs[i]);
  free(bs);
  mr_trace_close();
  static line l[N];
  uint64_t frames, lost;
  CHECK_EQ_INT(read_trace(path, l, N, &frames, &lost), 65536);
  CHECK_EQ_INT(frames, N);
  CHECK_EQ_INT(lost, 10);
  CHECK_EQ_INT(l[0].v[0], 11); /* the first ten were dropped */
  unlink(path);
}

static void test_open_fails(void) {
  CHECK(mr_trace_open("/nonexistent-dir/trace") < 0);
  CHECK(!mr_trace_enabled);
  CHECK_EQ_INT(mr_trace_frame(), 0);
}

int main(void) {
  test_off();
  test_one_frame();
  test_ring_wrap();
  test_open_fails();
  return test_report();
}
