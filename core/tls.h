/* TLS on OpenSSL 3 through memory BIOs, pure of libuv: the socket's owner
 * feeds the ciphertext it read and gets plaintext back through a callback,
 * hands plaintext to seal and takes the ciphertext to write. Nothing here
 * blocks, reads a socket or runs a thread.
 *
 * A context (mr_tls_ctx) is an SSL_CTX made from a certificate chain and a
 * key: for client connections (server side only), or for cluster links
 * (both sides, each verifying the other against a CA). A session (mr_tls)
 * is one connection's SSL object. Its BIOs are this module's own small
 * memory BIOs rather than BIO_s_mem: the read BIO lends OpenSSL the
 * caller's read buffer for the length of one mr_tls_feed, and the write BIO
 * appends to a heap block that the caller takes whole, so an idle session
 * holds no buffer at all (BIO_s_mem keeps its largest size forever), and
 * with SSL_MODE_RELEASE_BUFFERS OpenSSL frees its own record buffers too.
 *
 * Policy: TLS 1.2 and 1.3 only; TLS 1.3 with OpenSSL's default suites, TLS
 * 1.2 with ECDHE key exchange and AEAD ciphers only (MR_TLS12_CIPHERS); no
 * renegotiation; ALPN "http/1.1" selected when a client offers it; no
 * server-side session cache, resumption by stateless session tickets. */
#ifndef MR_TLS_H
#define MR_TLS_H

#include <stddef.h>
#include <stdint.h>

/* The TLS 1.2 cipher list: forward secrecy and authenticated encryption. */
#define MR_TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"

typedef struct mr_tls_ctx mr_tls_ctx;
typedef struct mr_tls mr_tls;

/* Makes a context from a PEM certificate chain and a PEM private key that
 * must match. With ca (a PEM file of trusted certificates) the context is
 * for cluster links: either side verifies the other's certificate against
 * ca and refuses a peer without one. Without ca (NULL) it is for client
 * connections, server side only. Returns the context (the caller owns one
 * reference; mr_tls_ctx_free drops it), or NULL with a one-line reason in
 * err (errlen bytes). OpenSSL's error queue is left empty either way. */
mr_tls_ctx *mr_tls_ctx_new(const char *cert, const char *key, const char *ca,
                           char *err, size_t errlen);

/* Drops the caller's reference; sessions made from ctx keep theirs, so a
 * replaced context lives until its last session is freed. NULL is a
 * no-op. */
void mr_tls_ctx_free(mr_tls_ctx *ctx);

/* Describes ctx's certificate for logs ("subject CN=x, serial 0A1B, expires
 * 2027-01-01 00:00:00 UTC") into out (cap bytes). */
void mr_tls_ctx_describe(const mr_tls_ctx *ctx, char *out, size_t cap);

/* Makes a session on ctx that accepts (server != 0) or connects. Returns
 * NULL when out of memory. The caller owns it (mr_tls_free). */
mr_tls *mr_tls_new(mr_tls_ctx *ctx, int server);

/* Frees the session and any ciphertext it still holds. NULL is a no-op. */
void mr_tls_free(mr_tls *t);

/* What mr_tls_feed and mr_tls_handshake report. */
enum {
  MR_TLS_OK = 0,  /* everything fed was used; more input is needed */
  MR_TLS_STOPPED, /* the sink asked to stop (its connection is going) */
  MR_TLS_EOF,     /* the peer ended TLS with close_notify */
  MR_TLS_FAILED,  /* a handshake or record failure; see mr_tls_error */
  MR_TLS_PLAIN    /* the first bytes are not a TLS handshake record */
};

/* Receives plaintext (valid during the call only); returns 0 to go on,
 * nonzero to stop feeding. */
typedef int (*mr_tls_sink)(void *arg, const uint8_t *plain, size_t len);

/* Feeds len bytes of ciphertext read from the socket: runs the handshake
 * while it is not done, then decrypts every whole record and hands each
 * run of plaintext to sink. The caller keeps owning in; nothing of it is
 * kept past the call (a partial record is buffered by OpenSSL). Whatever
 * the result, the session may have ciphertext to write (handshake
 * messages, an alert): see mr_tls_pending. Returns an MR_TLS_* value. */
int mr_tls_feed(mr_tls *t, const uint8_t *in, size_t len, mr_tls_sink sink,
                void *arg);

/* Starts a connecting session's handshake (the ClientHello goes to the
 * pending ciphertext). Returns MR_TLS_OK or MR_TLS_FAILED. */
int mr_tls_handshake(mr_tls *t);

/* True once the handshake has completed. */
int mr_tls_ready(const mr_tls *t);

/* True once the peer has sent anything (a handshake has begun). */
int mr_tls_started(const mr_tls *t);

/* Encrypts len bytes of plaintext into the pending ciphertext (as many
 * records as it takes). Only after mr_tls_ready. Returns 0, or
 * MR_TLS_FAILED (out of memory, or the session has failed). */
int mr_tls_write(mr_tls *t, const void *plain, size_t len);

/* Queues a close_notify alert when the handshake has completed (best
 * effort; nothing happens otherwise). */
void mr_tls_close_notify(mr_tls *t);

/* Bytes of ciphertext waiting to be written. */
size_t mr_tls_pending(const mr_tls *t);

/* Hands over the pending ciphertext: *data (a malloc'd block the caller
 * frees) and *len; the session starts a new block for what follows. Both
 * are NULL and 0 when nothing is pending. */
void mr_tls_take(mr_tls *t, uint8_t **data, size_t *len);

/* Why the session failed, one line ("certificate verify failed: unable to
 * get local issuer certificate"); "" while it has not. */
const char *mr_tls_error(const mr_tls *t);

/* The protocol version ("TLSv1.3") and the ALPN protocol selected (NULL
 * when none), for logs and tests. */
const char *mr_tls_version(const mr_tls *t);
const char *mr_tls_alpn(const mr_tls *t, size_t *len);

/* Whether the first byte a client sent can start a TLS connection (a
 * handshake record, 0x16); pure, for the plain-text check. */
static inline int mr_tls_looks_like_tls(uint8_t first) { return first == 0x16; }

#endif
