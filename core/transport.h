/* The one write path for every stream the server writes: client
 * connections and cluster links alike.
 *
 * A stream's unsent bytes wait in an mr_outq of shared, refcounted blocks
 * (buf.h). A flush writes what the socket takes at once with sendmsg and
 * hands the rest to one vectored uv_write, which keeps the buffers until its
 * callback: so one encoded frame can be written to many sockets without a
 * copy. This module parses nothing and knows nothing of frames; its owner
 * decides what a failure means.
 *
 * A stream with a TLS session (tx->tls) is written through it: queued
 * blocks (still shared, encoded once) are sealed into records a round at a
 * time, at most MR_TX_SEAL_BUDGET bytes, just before the socket is written,
 * and stay queued until their ciphertext has been written; so the queue's
 * byte count means the same with TLS as without (backpressure), and
 * plaintext waits shared rather than encrypted per connection. A plain
 * stream pays one test of tx->tls a flush. */
#ifndef MR_TRANSPORT_H
#define MR_TRANSPORT_H

#include <stddef.h>
#include <uv.h>

#include "buf.h"
#include "tls.h"

/* Plaintext sealed into records in one round of a TLS flush. */
#define MR_TX_SEAL_BUDGET 65536

typedef struct mr_tx {
  mr_outq outq;
  uv_write_t *wreq; /* allocated only while a write waits for the socket */
  size_t writing;   /* bytes handed to the in-flight uv_write */
  /* TLS only: the session (owned; NULL for a plain stream), the
   * ciphertext block the in-flight uv_write holds, and the plaintext bytes
   * at the front of outq that block carries. */
  mr_tls *tls;
  uint8_t *cipher;
  size_t sealed;
} mr_tx;

/* True while a uv_write is in flight (nothing else may be written then). */
static inline int mr_tx_busy(const mr_tx *tx) { return tx->wreq != NULL; }

/* True when nothing waits to be written: nothing queued, no write in
 * flight, and no ciphertext the TLS session made by itself (handshake
 * messages, alerts). */
static inline int mr_tx_empty(const mr_tx *tx) {
  return tx->outq.count == 0 && !tx->wreq &&
         (!tx->tls || mr_tls_pending(tx->tls) == 0);
}

/* Writes what is queued on stream: as much as the socket takes now, the
 * rest through one uv_write whose completion calls cb with req->data set to
 * data (the caller then calls mr_tx_done). *sent is the number of bytes
 * the socket took at once (ciphertext, with TLS). With TLS, queued bytes
 * are sealed only once the handshake is done; a session that fails to
 * seal returns MR_EPROTO. Returns 0 (everything written, or the rest
 * handed to uv_write), or a negative error code, in which case cb is never
 * called. Calling it while mr_tx_busy is a no-op. */
int mr_tx_flush(mr_tx *tx, uv_stream_t *stream, uv_write_cb cb, void *data,
                size_t *sent);

/* Completes the uv_write that cb reported: frees the request and, on
 * success, consumes what it wrote. Returns the bytes written (>= 0;
 * ciphertext, with TLS) or the write's negative status. */
ssize_t mr_tx_done(mr_tx *tx, uv_write_t *req, int status);

/* Releases everything queued, and the TLS session. Only when no write is
 * in flight, or after the stream was closed (libuv cancels the write and
 * calls cb first). */
void mr_tx_clear(mr_tx *tx);

/* Stops using TLS on tx (the session is freed with what it had pending),
 * so that a plain-text answer can be written to a client that did not
 * speak TLS. Only when no write is in flight. */
void mr_tx_drop_tls(mr_tx *tx);

/* Before a TLS stream is closed: queues a close_notify and writes it if
 * the socket takes it at once (best effort; nothing waits for it). */
void mr_tx_goodbye(mr_tx *tx, uv_stream_t *stream);

#endif
