/* The one write path (transport.c) over a real socket pair: direct sends,
 * the hand-over to uv_write when the socket is full, and what counts as
 * "try again". sendmsg is wrapped at link time (-Wl,--wrap=sendmsg, see
 * CMakeLists.txt) so a test can make the kernel answer as it would under
 * memory pressure. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "error.h"
#include "test_util.h"
#include "transport.h"

static int fail_errno; /* nonzero: the next sendmsg fails with this errno */
static int sendmsg_calls;

ssize_t __real_sendmsg(int fd, const struct msghdr *msg, int flags);
ssize_t __wrap_sendmsg(int fd, const struct msghdr *msg, int flags) {
  sendmsg_calls++;
  if (fail_errno) {
    errno = fail_errno;
    fail_errno = 0;
    return -1;
  }
  return __real_sendmsg(fd, msg, flags);
}

typedef struct {
  uv_loop_t loop;
  uv_pipe_t writer, reader;
  mr_tx tx;
  size_t received;
  uint8_t first[16]; /* the first bytes read, to check order */
  ssize_t done;      /* what mr_tx_done returned; -1 until it ran */
  int callbacks;
} pair_t;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  static char space[65536];
  (void)suggested;
  *buf = uv_buf_init(space, sizeof space);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  pair_t *p = s->data;
  if (n <= 0)
    return;
  for (ssize_t i = 0; i < n && p->received + (size_t)i < sizeof p->first; i++)
    p->first[p->received + (size_t)i] = (uint8_t)buf->base[i];
  p->received += (size_t)n;
}

static void on_write(uv_write_t *req, int status) {
  pair_t *p = req->data;
  p->callbacks++;
  p->done = mr_tx_done(&p->tx, req, status);
}

static void pair_open(pair_t *p) {
  memset(p, 0, sizeof *p);
  p->done = -1;
  int fds[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  uv_loop_init(&p->loop);
  uv_pipe_init(&p->loop, &p->writer, 0);
  uv_pipe_init(&p->loop, &p->reader, 0);
  CHECK(uv_pipe_open(&p->writer, fds[0]) == 0);
  CHECK(uv_pipe_open(&p->reader, fds[1]) == 0);
  p->reader.data = p;
  uv_read_start((uv_stream_t *)&p->reader, on_alloc, on_read);
}

static void pair_close(pair_t *p) {
  mr_tx_clear(&p->tx);
  uv_close((uv_handle_t *)&p->writer, NULL);
  uv_close((uv_handle_t *)&p->reader, NULL);
  uv_run(&p->loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&p->loop), 0);
}

static void queue(pair_t *p, const char *text, size_t len) {
  mr_buf *b = mr_buf_new(len);
  memcpy(b->data, text, len);
  CHECK_EQ_INT(mr_outq_push(&p->tx.outq, b), 0);
  mr_buf_release(b);
}

/* Run the loop until the reader has n bytes (bounded). */
static void pump_until(pair_t *p, size_t n) {
  for (int i = 0; i < 100000 && p->received < n; i++)
    uv_run(&p->loop, UV_RUN_NOWAIT);
}

/* The common case: the socket takes everything at once, no uv_write. */
static void test_direct(void) {
  pair_t p;
  pair_open(&p);
  queue(&p, "hello", 5);
  queue(&p, " world", 6);
  size_t sent = 0;
  CHECK_EQ_INT(
      mr_tx_flush(&p.tx, (uv_stream_t *)&p.writer, on_write, &p, &sent), 0);
  CHECK_EQ_INT(sent, 11);
  CHECK(!mr_tx_busy(&p.tx));
  CHECK_EQ_INT(p.tx.outq.count, 0);
  pump_until(&p, 11);
  CHECK_EQ_INT(p.received, 11);
  CHECK_MEM(p.first, "hello world", 11);
  CHECK_EQ_INT(p.callbacks, 0);
  pair_close(&p);
}

/* ENOBUFS means "the kernel is short of buffers, try again", as libuv
 * treats it: the bytes go through uv_write, they are not an error that
 * drops the connection. (Before the fix, mr_conn_flush doomed the
 * connection with "write failed".) */
static void test_enobufs_is_try_again(void) {
  pair_t p;
  pair_open(&p);
  queue(&p, "abcdef", 6);
  fail_errno = ENOBUFS;
  size_t sent = 99;
  int r = mr_tx_flush(&p.tx, (uv_stream_t *)&p.writer, on_write, &p, &sent);
  CHECK_EQ_INT(r, 0);
  CHECK_EQ_INT(sent, 0);
  CHECK(mr_tx_busy(&p.tx)); /* handed to uv_write */
  pump_until(&p, 6);
  for (int i = 0; i < 1000 && p.callbacks == 0; i++)
    uv_run(&p.loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT(p.callbacks, 1);
  CHECK_EQ_INT(p.done, 6);
  CHECK_EQ_INT(p.received, 6);
  CHECK_MEM(p.first, "abcdef", 6);
  CHECK(!mr_tx_busy(&p.tx));
  CHECK_EQ_INT(p.tx.outq.count, 0);
  pair_close(&p);
}

/* A real failure is reported, the queue is kept for the owner to clear,
 * and no callback is ever made (libuv's rule). */
static void test_hard_error(void) {
  pair_t p;
  pair_open(&p);
  queue(&p, "xyz", 3);
  fail_errno = ECONNRESET;
  size_t sent = 0;
  int r = mr_tx_flush(&p.tx, (uv_stream_t *)&p.writer, on_write, &p, &sent);
  CHECK_EQ_INT(r, UV_ECONNRESET);
  CHECK(!mr_tx_busy(&p.tx));
  CHECK_EQ_INT(p.tx.outq.count, 1);
  uv_run(&p.loop, UV_RUN_NOWAIT);
  CHECK_EQ_INT(p.callbacks, 0);
  pair_close(&p);
}

/* More than the socket buffer holds: what it takes goes at once, the rest
 * through one uv_write, in order, and a second flush while the write is in
 * flight does nothing. */
static void test_socket_full(void) {
  pair_t p;
  pair_open(&p);
  size_t total = 0;
  for (int i = 0; i < 64; i++) {
    mr_buf *b = mr_buf_new(65536);
    memset(b->data, 'a' + i % 26, b->len);
    mr_outq_push(&p.tx.outq, b);
    mr_buf_release(b);
    total += 65536;
  }
  size_t sent = 0;
  CHECK_EQ_INT(
      mr_tx_flush(&p.tx, (uv_stream_t *)&p.writer, on_write, &p, &sent), 0);
  CHECK(sent < total);
  CHECK(mr_tx_busy(&p.tx));
  int calls = sendmsg_calls;
  size_t again = 7;
  CHECK_EQ_INT(
      mr_tx_flush(&p.tx, (uv_stream_t *)&p.writer, on_write, &p, &again), 0);
  CHECK_EQ_INT(again, 0);
  CHECK_EQ_INT(sendmsg_calls, calls);
  /* A uv_write takes at most 64 blocks' worth at a time (one iovec each);
   * keep flushing as the owner's safe point does. */
  for (int i = 0; i < 100000 && p.received < total; i++) {
    uv_run(&p.loop, UV_RUN_NOWAIT);
    if (!mr_tx_busy(&p.tx) && p.tx.outq.count)
      mr_tx_flush(&p.tx, (uv_stream_t *)&p.writer, on_write, &p, &again);
  }
  CHECK_EQ_INT(p.received, total);
  CHECK(p.callbacks >= 1);
  CHECK_EQ_INT(p.tx.outq.count, 0);
  pair_close(&p);
}

int main(void) {
  test_direct();
  test_enobufs_is_try_again();
  test_hard_error();
  test_socket_full();
  return test_report();
}
