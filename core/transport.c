#include "transport.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "error.h"

#define MAX_IOV 64

static size_t fill_iov(const mr_tx *tx, uv_buf_t *iov, size_t *total) {
  const uint8_t *ptrs[MAX_IOV];
  size_t lens[MAX_IOV];
  size_t n = mr_outq_peek(&tx->outq, ptrs, lens, MAX_IOV);
  *total = 0;
  for (size_t i = 0; i < n; i++) {
    iov[i] = uv_buf_init((char *)ptrs[i], (unsigned)lens[i]);
    *total += lens[i];
  }
  return n;
}

/* Writes directly to the socket with sendmsg, which is what libuv's
 * uv_try_write does with writev, minus the file layer: on the fan-out
 * path, where the kernel's send is nearly all the work, skipping vfs_writev
 * and its file position lock saves several percent. Only called while no
 * uv_write is in flight, so ordering with libuv's own write queue is kept.
 * Returns the bytes sent, UV_EAGAIN when the socket takes nothing now, or a
 * negative error code. */
static ssize_t try_send(uv_stream_t *stream, uv_buf_t *iov, size_t n) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)stream, &fd) != 0)
    return UV_EBADF;
  /* libuv documents uv_buf_t as layout-compatible with struct iovec. */
  _Static_assert(sizeof(uv_buf_t) == sizeof(struct iovec) &&
                     offsetof(uv_buf_t, base) ==
                         offsetof(struct iovec, iov_base) &&
                     offsetof(uv_buf_t, len) == offsetof(struct iovec, iov_len),
                 "uv_buf_t must match struct iovec");
  struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = n};
  ssize_t r;
  do
    r = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  if (r >= 0)
    return r;
  /* ENOBUFS is transient (the kernel is short of buffers), and libuv's own
   * write path treats it as "try again": the uv_write below waits for the
   * socket instead of the connection being dropped. */
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS
             ? UV_EAGAIN
             : uv_translate_sys_error(errno);
}

int mr_tx_flush(mr_tx *tx, uv_stream_t *stream, uv_write_cb cb, void *data,
                size_t *sent) {
  uv_buf_t iov[MAX_IOV];
  size_t total;
  *sent = 0;
  if (tx->wreq)
    return 0;
  while (tx->outq.count > 0) {
    size_t n = fill_iov(tx, iov, &total);
    ssize_t r = try_send(stream, iov, n);
    if (r == UV_EAGAIN)
      break;
    if (r < 0)
      return (int)r;
    mr_outq_consume(&tx->outq, (size_t)r);
    *sent += (size_t)r;
    if ((size_t)r < total)
      break; /* the socket buffer is full */
  }
  if (tx->outq.count == 0)
    return 0;
  size_t n = fill_iov(tx, iov, &total);
  if (!(tx->wreq = malloc(sizeof *tx->wreq)))
    return MR_ENOMEM;
  tx->wreq->data = data;
  int r = uv_write(tx->wreq, stream, iov, (unsigned)n, cb);
  if (r < 0) {
    free(tx->wreq);
    tx->wreq = NULL;
    return r;
  }
  tx->writing = total;
  return 0;
}

ssize_t mr_tx_done(mr_tx *tx, uv_write_t *req, int status) {
  free(req);
  tx->wreq = NULL;
  size_t n = tx->writing;
  tx->writing = 0;
  if (status < 0)
    return status;
  mr_outq_consume(&tx->outq, n);
  return (ssize_t)n;
}

void mr_tx_clear(mr_tx *tx) { mr_outq_clear(&tx->outq); }
