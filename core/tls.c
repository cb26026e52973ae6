#include "tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mr_tls {
  SSL *ssl;
  /* The ciphertext lent by mr_tls_feed, read by the BIO; NULL between
   * calls. */
  const uint8_t *in;
  size_t in_len;
  /* Ciphertext OpenSSL wrote, waiting for mr_tls_take; NULL when none. */
  uint8_t *out;
  size_t out_len, out_cap;
  char *err; /* heap, only once the session has failed */
  uint8_t server;
  uint8_t seen_input; /* the first byte was checked for plain text */
  uint8_t failed;
};

/* One record's plaintext at most; the loop is single-threaded and every
 * feed hands its plaintext to the sink before it returns, so one buffer
 * serves every session. */
static uint8_t plainbuf[16384];

/* ---- the BIO: a borrowed read buffer and a taken write block ------------ */

static BIO_METHOD *bio_method;

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static int bio_read(BIO *b, char *out, int len) {
  mr_tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (t->in_len == 0 || len <= 0) {
    /* Not an end of stream: more ciphertext comes with the next feed. */
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = t->in_len < (size_t)len ? t->in_len : (size_t)len;
  memcpy(out, t->in, n);
  t->in += n;
  t->in_len -= n;
  return (int)n;
}

/* Makes room for len more bytes of ciphertext. Returns 0, or -1 when out of
 * memory (the block is then unchanged). */
static int reserve_out(mr_tls *t, size_t len) {
  if (t->out_cap - t->out_len >= len)
    return 0;
  size_t cap = t->out_cap ? t->out_cap * 2 : 4096;
  while (cap - t->out_len < len)
    cap *= 2;
  uint8_t *p = realloc(t->out, cap);
  if (!p)
    return -1;
  t->out = p;
  t->out_cap = cap;
  return 0;
}

/* Always takes everything: the caller writes the block when the socket
 * can, so OpenSSL never sees a write that would block. */
static int bio_write(BIO *b, const char *in, int len) {
  mr_tls *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (len <= 0)
    return 0;
  if (reserve_out(t, (size_t)len) != 0)
    return -1;
  memcpy(t->out + t->out_len, in, (size_t)len);
  t->out_len += (size_t)len;
  return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  mr_tls *t = BIO_get_data(b);
  switch (cmd) {
  case BIO_CTRL_FLUSH:
    return 1;
  case BIO_CTRL_PENDING:
    return t ? (long)t->in_len : 0;
  case BIO_CTRL_WPENDING:
    return t ? (long)t->out_len : 0;
  default:
    return 0;
  }
}

/* Made once; the loop is single-threaded, and the method lives as long as
 * the process (it is still reachable, not leaked). */
static BIO_METHOD *method(void) {
  if (bio_method)
    return bio_method;
  BIO_METHOD *m =
      BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "moonroom");
  if (!m || !BIO_meth_set_write(m, bio_write) ||
      !BIO_meth_set_read(m, bio_read) || !BIO_meth_set_ctrl(m, bio_ctrl) ||
      !BIO_meth_set_create(m, bio_create)) {
    BIO_meth_free(m);
    return NULL;
  }
  return bio_method = m;
}

/* ---- contexts ----------------------------------------------------------- */

/* Writes what failed and OpenSSL's first queued reason into err, and
 * empties the queue so that no later call reports a stale error. */
static void ssl_reason(char *err, size_t errlen, const char *what,
                       const char *file) {
  unsigned long e = ERR_get_error();
  const char *why = e ? ERR_reason_error_string(e) : NULL;
  snprintf(err, errlen, "%s%s%s: %s", what, file ? " " : "", file ? file : "",
           why ? why : "failed");
  ERR_clear_error();
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  static const unsigned char ours[] = "\x08http/1.1";
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
  }
  /* A client that offers only other protocols is not refused here: it
   * learns that none was selected and may go on with HTTP/1.1 anyway. */
  return SSL_TLSEXT_ERR_NOACK;
}

mr_tls_ctx *mr_tls_ctx_new(const char *cert, const char *key, const char *ca,
                           char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (!ctx) {
    ssl_reason(err, errlen, "cannot make a TLS context", NULL);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* An idle connection gives its record buffers back (about 34 KiB). */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  /* Resumption by stateless tickets only: a server-side cache would hold
   * every session of the last five minutes in memory. One TLS 1.3 ticket
   * is enough for a client that holds one connection. */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 1);
  if (!SSL_CTX_set_cipher_list(ctx, MR_TLS12_CIPHERS)) {
    ssl_reason(err, errlen, "cannot set the TLS 1.2 ciphers", NULL);
    goto fail;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    ssl_reason(err, errlen, "cannot load the certificate", cert);
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    ssl_reason(err, errlen,
               ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH
                   ? "the key does not match the certificate"
                   : "cannot load the key",
               key);
    goto fail;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ssl_reason(err, errlen, "the key does not match the certificate", key);
    goto fail;
  }
  if (ca) {
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
    if (SSL_CTX_load_verify_file(ctx, ca) != 1 || !names) {
      sk_X509_NAME_pop_free(names, X509_NAME_free);
      ssl_reason(err, errlen, "cannot load the CA", ca);
      goto fail;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       NULL);
  } else {
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
  }
  ERR_clear_error();
  return (mr_tls_ctx *)ctx;
fail:
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return NULL;
}

void mr_tls_ctx_free(mr_tls_ctx *ctx) { SSL_CTX_free((SSL_CTX *)ctx); }

void mr_tls_ctx_describe(const mr_tls_ctx *ctx, char *out, size_t cap) {
  X509 *x = SSL_CTX_get0_certificate((const SSL_CTX *)ctx);
  BIO *m = BIO_new(BIO_s_mem());
  out[0] = '\0';
  if (!x || !m) {
    BIO_free(m);
    ERR_clear_error();
    return;
  }
  BIO_puts(m, "subject ");
  X509_NAME_print_ex(m, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
  BIO_puts(m, ", serial ");
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  char *hex = bn ? BN_bn2hex(bn) : NULL;
  BIO_puts(m, hex ? hex : "?");
  OPENSSL_free(hex);
  BN_free(bn);
  BIO_puts(m, ", expires ");
  ASN1_TIME_print(m, X509_get0_notAfter(x));
  int n = BIO_read(m, out, (int)cap - 1);
  out[n > 0 ? n : 0] = '\0';
  BIO_free(m);
  ERR_clear_error();
}

/* ---- sessions ----------------------------------------------------------- */

mr_tls *mr_tls_new(mr_tls_ctx *ctx, int server) {
  BIO_METHOD *m = method();
  mr_tls *t = calloc(1, sizeof *t);
  BIO *b = m ? BIO_new(m) : NULL;
  if (!t || !b || !(t->ssl = SSL_new((SSL_CTX *)ctx))) {
    BIO_free(b);
    free(t);
    ERR_clear_error();
    return NULL;
  }
  BIO_set_data(b, t);
  /* One BIO both ways: SSL_set_bio takes the one reference. */
  SSL_set_bio(t->ssl, b, b);
  t->server = server != 0;
  if (server)
    SSL_set_accept_state(t->ssl);
  else
    SSL_set_connect_state(t->ssl);
  return t;
}

void mr_tls_free(mr_tls *t) {
  if (!t)
    return;
  SSL_free(t->ssl);
  free(t->out);
  free(t->err);
  free(t);
}

/* Records why the session failed, from the SSL error e of the last call,
 * and empties OpenSSL's error queue. Returns MR_TLS_FAILED. */
static int fail(mr_tls *t, int e) {
  char why[256];
  unsigned long code = ERR_get_error();
  long verify = SSL_get_verify_result(t->ssl);
  if (e == SSL_ERROR_SSL && code) {
    const char *r = ERR_reason_error_string(code);
    snprintf(why, sizeof why, "%s%s%s", r ? r : "TLS error",
             verify != X509_V_OK ? ": " : "",
             verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "");
  } else if (e == SSL_ERROR_SYSCALL) {
    /* The BIO fails only when it cannot grow its block. */
    snprintf(why, sizeof why, "out of memory");
  } else {
    snprintf(why, sizeof why, "unexpected TLS state %d", e);
  }
  ERR_clear_error();
  t->failed = 1;
  if (!t->err)
    t->err = strdup(why);
  return MR_TLS_FAILED;
}

/* Runs the handshake, then reads every record the lent input completes. */
static int run(mr_tls *t, mr_tls_sink sink, void *arg) {
  if (!SSL_is_init_finished(t->ssl)) {
    int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
      int e = SSL_get_error(t->ssl, r);
      return e == SSL_ERROR_WANT_READ ? MR_TLS_OK : fail(t, e);
    }
  }
  for (;;) {
    size_t got;
    if (SSL_read_ex(t->ssl, plainbuf, sizeof plainbuf, &got) == 1) {
      if (sink(arg, plainbuf, got) != 0)
        return MR_TLS_STOPPED;
      continue;
    }
    int e = SSL_get_error(t->ssl, 0);
    if (e == SSL_ERROR_WANT_READ)
      return MR_TLS_OK;
    if (e == SSL_ERROR_ZERO_RETURN) {
      ERR_clear_error();
      return MR_TLS_EOF;
    }
    return fail(t, e);
  }
}

int mr_tls_feed(mr_tls *t, const uint8_t *in, size_t len, mr_tls_sink sink,
                void *arg) {
  if (t->failed)
    return MR_TLS_FAILED;
  if (len == 0)
    return MR_TLS_OK;
  if (!t->seen_input) {
    t->seen_input = 1;
    /* A client that speaks plain HTTP (or anything but TLS) is told apart
     * before OpenSSL answers it with an alert it cannot read. */
    if (t->server && !mr_tls_looks_like_tls(in[0])) {
      t->failed = 1;
      t->err = strdup("not a TLS handshake (plain text on the TLS port)");
      return MR_TLS_PLAIN;
    }
  }
  t->in = in;
  t->in_len = len;
  int r = run(t, sink, arg);
  t->in = NULL;
  t->in_len = 0;
  return r;
}

int mr_tls_handshake(mr_tls *t) {
  if (t->failed)
    return MR_TLS_FAILED;
  int r = SSL_do_handshake(t->ssl);
  if (r == 1)
    return MR_TLS_OK;
  int e = SSL_get_error(t->ssl, r);
  return e == SSL_ERROR_WANT_READ ? MR_TLS_OK : fail(t, e);
}

int mr_tls_ready(const mr_tls *t) {
  return !t->failed && SSL_is_init_finished(t->ssl);
}

int mr_tls_started(const mr_tls *t) { return t->seen_input; }

int mr_tls_write(mr_tls *t, const void *plain, size_t len) {
  if (t->failed)
    return MR_TLS_FAILED;
  if (len == 0)
    return 0;
  /* Room for the records up front, so that the BIO grows once: 16 KiB of
   * plaintext a record, and at most 22 bytes of header, padding and tag
   * each for the AEAD suites (a little more is reserved). */
  if (reserve_out(t, len + (len / 16384 + 1) * 64) != 0)
    return MR_TLS_FAILED;
  size_t written;
  if (SSL_write_ex(t->ssl, plain, len, &written) != 1 || written != len)
    return fail(t, SSL_get_error(t->ssl, 0));
  return 0;
}

void mr_tls_close_notify(mr_tls *t) {
  if (t->failed || !SSL_is_init_finished(t->ssl))
    return;
  SSL_shutdown(t->ssl);
  ERR_clear_error();
}

size_t mr_tls_pending(const mr_tls *t) { return t->out_len; }

void mr_tls_take(mr_tls *t, uint8_t **data, size_t *len) {
  *data = t->out_len ? t->out : NULL;
  *len = t->out_len;
  if (!t->out_len)
    return;
  t->out = NULL;
  t->out_len = t->out_cap = 0;
}

const char *mr_tls_error(const mr_tls *t) { return t->err ? t->err : ""; }

const char *mr_tls_version(const mr_tls *t) { return SSL_get_version(t->ssl); }

const char *mr_tls_alpn(const mr_tls *t, size_t *len) {
  const unsigned char *p = NULL;
  unsigned n = 0;
  SSL_get0_alpn_selected(t->ssl, &p, &n);
  *len = n;
  return n ? (const char *)p : NULL;
}
