#include "transport.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "error.h"
#include "trace.h"

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

/* Seals a round of queued plaintext into the session's pending ciphertext:
 * up to MR_TX_SEAL_BUDGET bytes from the first MAX_IOV blocks. Small blocks
 * (frames of a chat) are gathered into one record rather than a record
 * each, which saves both the records' overhead and OpenSSL's per-call
 * cost; large ones are sealed where they are. Records the bytes sealed in
 * tx->sealed. Returns 0 or MR_EPROTO. */
static int seal(mr_tx *tx) {
  static uint8_t join[16384];
  const uint8_t *ptrs[MAX_IOV];
  size_t lens[MAX_IOV];
  size_t n = mr_outq_peek(&tx->outq, ptrs, lens, MAX_IOV);
  size_t total = 0, jl = 0;
  int r = 0;
  for (size_t i = 0; i < n && total < MR_TX_SEAL_BUDGET && r == 0; i++) {
    size_t take = lens[i];
    if (take > MR_TX_SEAL_BUDGET - total)
      take = MR_TX_SEAL_BUDGET - total;
    if (take > sizeof join - jl && jl > 0) {
      r = mr_tls_write(tx->tls, join, jl);
      jl = 0;
    }
    if (r == 0 && take <= sizeof join - jl) {
      memcpy(join + jl, ptrs[i], take);
      jl += take;
    } else if (r == 0) {
      r = mr_tls_write(tx->tls, ptrs[i], take);
    }
    total += take;
  }
  if (r == 0 && jl > 0)
    r = mr_tls_write(tx->tls, join, jl);
  tx->sealed = total;
  return r == 0 ? 0 : MR_EPROTO;
}

/* mr_tx_flush for a TLS stream: rounds of sealing and writing until the
 * socket is full, or the queue and the session have nothing left. The
 * plaintext of a round leaves the queue only once its ciphertext is
 * written. */
static int flush_tls(mr_tx *tx, uv_stream_t *stream, uv_write_cb cb, void *data,
                     size_t *sent) {
  for (;;) {
    if (tx->sealed == 0 && tx->outq.count > 0 && mr_tls_ready(tx->tls) &&
        seal(tx) != 0)
      return MR_EPROTO;
    uint8_t *block;
    size_t len;
    mr_tls_take(tx->tls, &block, &len);
    if (len == 0)
      return 0;
    uv_buf_t b = uv_buf_init((char *)block, (unsigned)len);
    ssize_t r = try_send(stream, &b, 1);
    if (r == UV_EAGAIN)
      r = 0;
    if (r < 0) {
      free(block);
      return (int)r;
    }
    *sent += (size_t)r;
    if ((size_t)r == len) {
      free(block);
      mr_outq_consume(&tx->outq, tx->sealed);
      tx->sealed = 0;
      continue;
    }
    if (!(tx->wreq = malloc(sizeof *tx->wreq))) {
      free(block);
      return MR_ENOMEM;
    }
    tx->wreq->data = data;
    b = uv_buf_init((char *)block + r, (unsigned)(len - (size_t)r));
    int e = uv_write(tx->wreq, stream, &b, 1, cb);
    if (e < 0) {
      free(tx->wreq);
      tx->wreq = NULL;
      free(block);
      return e;
    }
    tx->cipher = block;
    tx->writing = len - (size_t)r;
    return 0;
  }
}

int mr_tx_flush(mr_tx *tx, uv_stream_t *stream, uv_write_cb cb, void *data,
                size_t *sent) {
  uv_buf_t iov[MAX_IOV];
  size_t total;
  *sent = 0;
  if (tx->wreq)
    return 0;
  if (tx->tls)
    return flush_tls(tx, stream, cb, data, sent);
  while (tx->outq.count > 0) {
    size_t n = fill_iov(tx, iov, &total);
    ssize_t r = try_send(stream, iov, n);
    if (r == UV_EAGAIN)
      break;
    if (r < 0)
      return (int)r;
    mr_trace_send((unsigned)n); /* a write the socket took (maybe in part) */
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
  if (tx->cipher) {
    free(tx->cipher);
    tx->cipher = NULL;
    if (status < 0)
      return status;
    mr_outq_consume(&tx->outq, tx->sealed);
    tx->sealed = 0;
    return (ssize_t)n;
  }
  if (status < 0)
    return status;
  mr_outq_consume(&tx->outq, n);
  return (ssize_t)n;
}

void mr_tx_clear(mr_tx *tx) {
  mr_outq_clear(&tx->outq);
  free(tx->cipher);
  tx->cipher = NULL;
  tx->sealed = 0;
  mr_tls_free(tx->tls);
  tx->tls = NULL;
}

void mr_tx_drop_tls(mr_tx *tx) {
  mr_tls_free(tx->tls);
  tx->tls = NULL;
  tx->sealed = 0;
}

void mr_tx_goodbye(mr_tx *tx, uv_stream_t *stream) {
  if (!tx->tls || tx->wreq)
    return;
  mr_tls_close_notify(tx->tls);
  uint8_t *block;
  size_t len;
  mr_tls_take(tx->tls, &block, &len);
  if (len) {
    uv_buf_t b = uv_buf_init((char *)block, (unsigned)len);
    try_send(stream, &b, 1);
  }
  free(block);
}
