/* The one write path for every stream the server writes: client
 * connections and cluster links alike.
 *
 * A stream's unsent bytes wait in an mr_outq of shared, refcounted blocks
 * (buf.h). A flush writes what the socket takes at once with sendmsg and
 * hands the rest to one vectored uv_write, which keeps the buffers until its
 * callback: so one encoded frame can be written to many sockets without a
 * copy. This module parses nothing and knows nothing of frames; its owner
 * decides what a failure means. */
#ifndef MR_TRANSPORT_H
#define MR_TRANSPORT_H

#include <stddef.h>
#include <uv.h>

#include "buf.h"

typedef struct mr_tx {
  mr_outq outq;
  uv_write_t *wreq; /* allocated only while a write waits for the socket */
  size_t writing;   /* bytes handed to the in-flight uv_write */
} mr_tx;

/* True while a uv_write is in flight (nothing else may be written then). */
static inline int mr_tx_busy(const mr_tx *tx) { return tx->wreq != NULL; }

/* Writes what is queued on stream: as much as the socket takes now, the
 * rest through one uv_write whose completion calls cb with req->data set to
 * data (the caller then calls mr_tx_done). *sent is the number of bytes
 * the socket took at once. Returns 0 (everything written, or the rest
 * handed to uv_write), or a negative error code, in which case cb is never
 * called. Calling it while mr_tx_busy is a no-op. */
int mr_tx_flush(mr_tx *tx, uv_stream_t *stream, uv_write_cb cb, void *data,
                size_t *sent);

/* Completes the uv_write that cb reported: frees the request and, on
 * success, consumes what it wrote. Returns the bytes written (>= 0) or the
 * write's negative status. */
ssize_t mr_tx_done(mr_tx *tx, uv_write_t *req, int status);

/* Releases everything queued. Only when no write is in flight, or after
 * the stream was closed (libuv cancels the write and calls cb first). */
void mr_tx_clear(mr_tx *tx);

#endif
