/* Unit tests for TLS through memory BIOs (core/tls.c).
 *
 * Two sessions talk to each other in memory: what one has pending is fed to
 * the other until neither has anything to say. The certificates are made
 * here with OpenSSL (a throw-away CA, leaves it signs, and a second CA that
 * no one trusts), written to a temporary directory, and removed at the
 * end. Under the sanitizer build, leaks of SSL objects and of OpenSSL's
 * error queue show up here. */
#include <malloc.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "tls.h"

static char dir[] = "/tmp/mr_test_tls_XXXXXX";

typedef struct {
  EVP_PKEY *key;
  X509 *cert;
  char cert_path[256], key_path[256];
} pair;

static void die(const char *what) {
  fprintf(stderr, "test setup failed: %s\n", what);
  ERR_print_errors_fp(stderr);
  exit(2);
}

/* Makes a P-256 key and a certificate for cn, signed by issuer (NULL: self
 * signed, a CA), and writes both as PEM files named after cn. */
static void make_pair(pair *p, const char *cn, const pair *issuer, long serial,
                      int ca) {
  p->key = EVP_EC_gen("P-256");
  p->cert = X509_new();
  if (!p->key || !p->cert)
    die("key");
  X509_set_version(p->cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(p->cert), serial);
  X509_gmtime_adj(X509_getm_notBefore(p->cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(p->cert), 3600);
  X509_set_pubkey(p->cert, p->key);
  X509_NAME *name = X509_get_subject_name(p->cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(p->cert,
                       issuer ? X509_get_subject_name(issuer->cert) : name);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer ? issuer->cert : p->cert, p->cert, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(
      NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
  if (!ext || !X509_add_ext(p->cert, ext, -1))
    die("extension");
  X509_EXTENSION_free(ext);
  if (!ca) {
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
                              "DNS:localhost,IP:127.0.0.1");
    if (!ext || !X509_add_ext(p->cert, ext, -1))
      die("san");
    X509_EXTENSION_free(ext);
  }
  if (!X509_sign(p->cert, issuer ? issuer->key : p->key, EVP_sha256()))
    die("sign");
  snprintf(p->cert_path, sizeof p->cert_path, "%s/%s.crt", dir, cn);
  snprintf(p->key_path, sizeof p->key_path, "%s/%s.key", dir, cn);
  FILE *f = fopen(p->cert_path, "w");
  if (!f || !PEM_write_X509(f, p->cert))
    die("write cert");
  fclose(f);
  f = fopen(p->key_path, "w");
  if (!f || !PEM_write_PrivateKey(f, p->key, NULL, NULL, 0, NULL, NULL))
    die("write key");
  fclose(f);
}

static void free_pair(pair *p) {
  unlink(p->cert_path);
  unlink(p->key_path);
  EVP_PKEY_free(p->key);
  X509_free(p->cert);
}

/* What a sink received. */
typedef struct {
  uint8_t *data;
  size_t len, cap;
  int stop_after; /* stop feeding after this many calls (0: never) */
  int calls;
} sink_buf;

static int sink(void *arg, const uint8_t *p, size_t n) {
  sink_buf *s = arg;
  if (s->len + n > s->cap) {
    s->cap = (s->len + n) * 2;
    s->data = realloc(s->data, s->cap);
    if (!s->data)
      die("memory");
  }
  memcpy(s->data + s->len, p, n);
  s->len += n;
  return s->stop_after && ++s->calls >= s->stop_after;
}

/* Moves what from has pending into to, step bytes a feed (0: all at
 * once). Returns the last feed's result (MR_TLS_OK when nothing moved). */
static int move(mr_tls *from, mr_tls *to, sink_buf *got, size_t step) {
  uint8_t *data;
  size_t len;
  mr_tls_take(from, &data, &len);
  int r = MR_TLS_OK;
  for (size_t off = 0; off < len && r == MR_TLS_OK;) {
    size_t n = step && len - off > step ? step : len - off;
    r = mr_tls_feed(to, data + off, n, sink, got);
    off += n;
  }
  free(data);
  return r;
}

/* Pumps both ways until neither side has anything pending or a side fails;
 * returns the first result that is not MR_TLS_OK (or MR_TLS_OK). */
static int pump(mr_tls *a, mr_tls *b, sink_buf *ga, sink_buf *gb, size_t step) {
  for (int i = 0; i < 100; i++) {
    if (!mr_tls_pending(a) && !mr_tls_pending(b))
      return MR_TLS_OK;
    int r = move(a, b, gb, step);
    if (r != MR_TLS_OK)
      return r;
    r = move(b, a, ga, step);
    if (r != MR_TLS_OK)
      return r;
  }
  return -1;
}

static void test_handshake_and_data(const pair *leaf, size_t step) {
  char err[256];
  mr_tls_ctx *ctx =
      mr_tls_ctx_new(leaf->cert_path, leaf->key_path, NULL, err, sizeof err);
  if (!CHECK(ctx != NULL)) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  mr_tls *srv = mr_tls_new(ctx, 1), *cli = mr_tls_new(ctx, 0);
  /* The sessions keep the context: dropping it now must be safe. */
  mr_tls_ctx_free(ctx);
  sink_buf gs = {0}, gc = {0};
  CHECK(!mr_tls_ready(srv));
  CHECK_EQ_INT(mr_tls_handshake(cli), MR_TLS_OK);
  CHECK(mr_tls_pending(cli) > 0); /* the ClientHello */
  CHECK_EQ_INT(pump(cli, srv, &gc, &gs, step), MR_TLS_OK);
  CHECK(mr_tls_ready(srv));
  CHECK(mr_tls_ready(cli));
  CHECK(strcmp(mr_tls_version(srv), "TLSv1.3") == 0);
  size_t alen;
  CHECK(mr_tls_alpn(srv, &alen) == NULL); /* this client offered none */

  /* Data both ways, one small message and one of several records. */
  CHECK_EQ_INT(mr_tls_write(cli, "hello", 5), 0);
  CHECK_EQ_INT(pump(cli, srv, &gc, &gs, step), MR_TLS_OK);
  CHECK_SPAN((const char *)gs.data, gs.len, "hello");
  size_t big = 100000;
  uint8_t *msg = malloc(big);
  for (size_t i = 0; i < big; i++)
    msg[i] = (uint8_t)(i * 7 + 3);
  CHECK_EQ_INT(mr_tls_write(srv, msg, big), 0);
  CHECK(mr_tls_pending(srv) > big); /* records add headers and tags */
  CHECK(mr_tls_pending(srv) < big + 1000);
  CHECK_EQ_INT(pump(srv, cli, &gs, &gc, step), MR_TLS_OK);
  CHECK_EQ_INT(gc.len, big);
  CHECK_MEM(gc.data, msg, big);
  /* Nothing is held once everything was taken. */
  CHECK_EQ_INT(mr_tls_pending(srv), 0);
  uint8_t *none;
  size_t nlen;
  mr_tls_take(srv, &none, &nlen);
  CHECK(none == NULL && nlen == 0);

  /* A close_notify ends the stream at the other side. */
  mr_tls_close_notify(cli);
  CHECK(mr_tls_pending(cli) > 0);
  CHECK_EQ_INT(move(cli, srv, &gs, step), MR_TLS_EOF);
  CHECK(ERR_peek_error() == 0);
  free(msg);
  free(gs.data);
  free(gc.data);
  mr_tls_free(srv);
  mr_tls_free(cli);
}

/* A sink that asks to stop is obeyed: the rest of the records stay. */
static void test_sink_stops(const pair *leaf) {
  char err[256];
  mr_tls_ctx *ctx =
      mr_tls_ctx_new(leaf->cert_path, leaf->key_path, NULL, err, sizeof err);
  mr_tls *srv = mr_tls_new(ctx, 1), *cli = mr_tls_new(ctx, 0);
  sink_buf gs = {0}, gc = {0};
  mr_tls_handshake(cli);
  CHECK_EQ_INT(pump(cli, srv, &gc, &gs, 0), MR_TLS_OK);
  mr_tls_write(cli, "one", 3);
  mr_tls_write(cli, "two", 3);
  gs.stop_after = 1;
  CHECK_EQ_INT(move(cli, srv, &gs, 0), MR_TLS_STOPPED);
  CHECK_SPAN((const char *)gs.data, gs.len, "one");
  free(gs.data);
  free(gc.data);
  mr_tls_free(srv);
  mr_tls_free(cli);
  mr_tls_ctx_free(ctx);
}

static void test_bad_input(const pair *leaf) {
  char err[256];
  mr_tls_ctx *ctx =
      mr_tls_ctx_new(leaf->cert_path, leaf->key_path, NULL, err, sizeof err);
  sink_buf g = {0};
  /* Plain HTTP on the TLS port is told apart before OpenSSL sees it. */
  mr_tls *s = mr_tls_new(ctx, 1);
  const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK_EQ_INT(mr_tls_feed(s, (const uint8_t *)get, strlen(get), sink, &g),
               MR_TLS_PLAIN);
  CHECK(strstr(mr_tls_error(s), "plain text") != NULL);
  CHECK_EQ_INT(mr_tls_pending(s), 0);
  CHECK_EQ_INT(mr_tls_feed(s, (const uint8_t *)"x", 1, sink, &g),
               MR_TLS_FAILED);
  mr_tls_free(s);
  /* A handshake record with garbage in it fails with a reason and an
   * alert for the peer; the error queue is left empty. */
  s = mr_tls_new(ctx, 1);
  CHECK_EQ_INT(mr_tls_error(s)[0], '\0');
  uint8_t junk[64] = {0x16, 0x03, 0x01, 0x00, 0x3b, 0x01, 0x00, 0x00, 0x37};
  for (size_t i = 9; i < sizeof junk; i++)
    junk[i] = (uint8_t)(0xa5 ^ i);
  CHECK_EQ_INT(mr_tls_feed(s, junk, sizeof junk, sink, &g), MR_TLS_FAILED);
  CHECK(mr_tls_error(s)[0] != '\0');
  CHECK(mr_tls_pending(s) > 0); /* the alert */
  CHECK(ERR_peek_error() == 0);
  CHECK_EQ_INT(mr_tls_write(s, "x", 1), MR_TLS_FAILED);
  mr_tls_free(s);
  CHECK_EQ_INT(g.len, 0);
  mr_tls_ctx_free(ctx);
  free(g.data);
}

static void test_ctx_errors(const pair *leaf, const pair *other) {
  char err[512];
  CHECK(mr_tls_ctx_new("/nonexistent.crt", leaf->key_path, NULL, err,
                       sizeof err) == NULL);
  CHECK(strstr(err, "cannot load the certificate /nonexistent.crt") != NULL);
  CHECK(mr_tls_ctx_new(leaf->cert_path, "/nonexistent.key", NULL, err,
                       sizeof err) == NULL);
  CHECK(strstr(err, "/nonexistent.key") != NULL);
  /* A key of another certificate. */
  CHECK(mr_tls_ctx_new(leaf->cert_path, other->key_path, NULL, err,
                       sizeof err) == NULL);
  CHECK(strstr(err, "the key does not match the certificate") != NULL);
  CHECK(strstr(err, other->key_path) != NULL);
  /* A key file that is not a key. */
  CHECK(mr_tls_ctx_new(leaf->cert_path, leaf->cert_path, NULL, err,
                       sizeof err) == NULL);
  CHECK(mr_tls_ctx_new(leaf->cert_path, leaf->key_path, "/nonexistent.ca", err,
                       sizeof err) == NULL);
  CHECK(strstr(err, "cannot load the CA") != NULL);
  CHECK(ERR_peek_error() == 0);
  mr_tls_ctx *ctx =
      mr_tls_ctx_new(leaf->cert_path, leaf->key_path, NULL, err, sizeof err);
  char desc[256];
  mr_tls_ctx_describe(ctx, desc, sizeof desc);
  CHECK(strstr(desc, "subject CN=leaf, serial 0") != NULL);
  CHECK(strstr(desc, "expires ") != NULL);
  mr_tls_ctx_free(ctx);
  mr_tls_ctx_free(NULL);
  mr_tls_free(NULL);
}

/* Cluster contexts: both sides present a certificate and verify the
 * other's against the CA. */
static int cluster_pair(const pair *ca, const pair *srv_pair,
                        const pair *ca_cli, const pair *cli_pair, char *srv_err,
                        char *cli_err) {
  char err[512];
  mr_tls_ctx *sctx = mr_tls_ctx_new(srv_pair->cert_path, srv_pair->key_path,
                                    ca->cert_path, err, sizeof err);
  mr_tls_ctx *cctx = mr_tls_ctx_new(cli_pair->cert_path, cli_pair->key_path,
                                    ca_cli->cert_path, err, sizeof err);
  if (!CHECK(sctx && cctx)) {
    fprintf(stderr, "  %s\n", err);
    return -1;
  }
  mr_tls *s = mr_tls_new(sctx, 1), *c = mr_tls_new(cctx, 0);
  sink_buf gs = {0}, gc = {0};
  mr_tls_handshake(c);
  int r = pump(c, s, &gc, &gs, 0);
  if (r == MR_TLS_FAILED) {
    /* Let the alert reach the other side, as the socket would. */
    pump(c, s, &gc, &gs, 0);
  }
  int ok = mr_tls_ready(s) && mr_tls_ready(c);
  if (ok) {
    mr_tls_write(c, "hi", 2);
    pump(c, s, &gc, &gs, 0);
    ok = gs.len == 2;
  }
  snprintf(srv_err, 256, "%s", mr_tls_error(s));
  snprintf(cli_err, 256, "%s", mr_tls_error(c));
  mr_tls_free(s);
  mr_tls_free(c);
  mr_tls_ctx_free(sctx);
  mr_tls_ctx_free(cctx);
  free(gs.data);
  free(gc.data);
  CHECK(ERR_peek_error() == 0);
  return ok;
}

static void test_cluster(const pair *ca, const pair *a, const pair *b,
                         const pair *ca2, const pair *rogue) {
  char se[256], ce[256];
  CHECK_EQ_INT(cluster_pair(ca, a, ca, b, se, ce), 1);
  /* A rogue client (signed by another CA, trusting only that one) fails
   * to verify the server first. */
  CHECK_EQ_INT(cluster_pair(ca, a, ca2, rogue, se, ce), 0);
  CHECK(strstr(ce, "certificate verify failed") != NULL);
  /* OpenSSL names the failure after the chain the server sent (it adds
   * the CA it knows): "self-signed certificate in certificate chain". */
  CHECK(strstr(ce, "certificate") != NULL && strchr(ce, ':') != NULL);
  CHECK(se[0] != '\0'); /* told by the alert */
  /* A rogue client that trusts the cluster's CA still cannot link: the
   * server refuses its certificate. */
  CHECK_EQ_INT(cluster_pair(ca, a, ca, rogue, se, ce), 0);
  CHECK(strstr(se, "certificate verify failed") != NULL);
  /* And a rogue server is refused by an honest client. */
  CHECK_EQ_INT(cluster_pair(ca2, rogue, ca, b, se, ce), 0);
  CHECK(strstr(ce, "certificate verify failed") != NULL);
}

/* With SSL_MODE_RELEASE_BUFFERS, an idle session holds no record buffers:
 * a pair measures about 33 KiB with them released and about 100 KiB
 * without (each session keeps a 17 KiB read and a 17 KiB write buffer). The
 * sanitizer's allocator is not malloc's, so this is measured in the
 * optimised build only. */
static void test_idle_memory(const pair *leaf) {
#if defined(__SANITIZE_ADDRESS__)
  (void)leaf;
#else
  enum { N = 64 };
  char err[256];
  mr_tls_ctx *ctx =
      mr_tls_ctx_new(leaf->cert_path, leaf->key_path, NULL, err, sizeof err);
  mr_tls *s[N], *c[N];
  sink_buf g = {0};
  uint8_t *msg = calloc(1, 40000);
  /* One pair first, so that what OpenSSL allocates once is not counted. */
  mr_tls *s0 = mr_tls_new(ctx, 1), *c0 = mr_tls_new(ctx, 0);
  mr_tls_handshake(c0);
  pump(c0, s0, &g, &g, 0);
  struct mallinfo2 before = mallinfo2();
  for (int i = 0; i < N; i++) {
    c[i] = mr_tls_new(ctx, 0);
    mr_tls_handshake(c[i]);
    s[i] = mr_tls_new(ctx, 1);
    pump(c[i], s[i], &g, &g, 0);
    mr_tls_write(s[i], msg, 40000);
    mr_tls_write(c[i], msg, 40000);
    pump(c[i], s[i], &g, &g, 0);
    g.len = 0;
  }
  struct mallinfo2 after = mallinfo2();
  /* Both ends of each pair: a server session is about half. */
  long per = ((long)after.uordblks - (long)before.uordblks) / N;
  fprintf(stderr, "idle TLS session pair: %ld bytes of heap\n", per);
  CHECK(per > 0 && per < 48 * 1024);
  for (int i = 0; i < N; i++) {
    mr_tls_free(s[i]);
    mr_tls_free(c[i]);
  }
  mr_tls_free(s0);
  mr_tls_free(c0);
  free(msg);
  free(g.data);
  mr_tls_ctx_free(ctx);
#endif
}

int main(void) {
  if (!mkdtemp(dir))
    die("mkdtemp");
  pair ca, a, b, ca2, rogue, leaf;
  make_pair(&ca, "ca", NULL, 1, 1);
  make_pair(&a, "a", &ca, 2, 0);
  make_pair(&b, "b", &ca, 3, 0);
  make_pair(&ca2, "ca2", NULL, 4, 1);
  make_pair(&rogue, "rogue", &ca2, 5, 0);
  make_pair(&leaf, "leaf", NULL, 6, 0);

  test_handshake_and_data(&leaf, 0);
  /* Every record split at every byte boundary the feed can see. */
  test_handshake_and_data(&leaf, 1);
  test_handshake_and_data(&leaf, 7);
  test_sink_stops(&leaf);
  test_bad_input(&leaf);
  test_ctx_errors(&leaf, &a);
  test_cluster(&ca, &a, &b, &ca2, &rogue);
  test_idle_memory(&leaf);

  free_pair(&ca);
  free_pair(&a);
  free_pair(&b);
  free_pair(&ca2);
  free_pair(&rogue);
  free_pair(&leaf);
  rmdir(dir);
  return test_report();
}
