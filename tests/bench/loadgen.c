/* moonroom-loadgen: a WebSocket load generator for the room benchmark.
 *
 * One process, one thread, one epoll loop, thousands of client connections.
 * Every client does a real RFC 6455 handshake (random Sec-WebSocket-Key, the
 * 101 status and Sec-WebSocket-Accept are checked), sends masked frames and
 * parses any number of server frames per read. Nothing is allocated per
 * message: buffers are per connection and only grow on the rare frame that
 * does not fit.
 *
 * Scenarios (see tests/bench/README.md or --help):
 *   fanout  N subscribers (role=sub) and one publisher (role=pub) in one room;
 *           the publisher keeps --window messages in flight, a message is
 *           complete when every subscriber has it.
 *   chat    N connections (role=pub) in rooms of --room-size; each sends
 *           --rate messages/s, or with --rate 0 keeps --window of its own
 *           messages in flight (closed loop on its own echo).
 *   idle    opens up to N connections, reports the connect rate, prints
 *           "HOLDING <n>" on stderr and holds them for --hold seconds.
 *
 * fanout --http-publish: the publisher is not a WebSocket client but one
 * keep-alive HTTP connection that POSTs every message to
 * /publish?room=ROOM (the path of --url before it), pipelining --window
 * requests; every response must be 2xx. A message is complete, as ever,
 * when every subscriber has it: msgs_per_s is publish requests per second
 * with the fan-out behind each.
 *
 * Every data message is text (or --binary) of --size bytes:
 *   "<seq:16 hex> <send time CLOCK_MONOTONIC ns:16 hex> <room:8 hex> <sender:8
 * hex> " + 'x' padding Each receiver checks that the sequence numbers of every
 * sender arrive exactly once and in order. With --json the message is wrapped
 * as {"text":"<message>"} for a handler that decodes it, and a received
 * message is any JSON text that holds "text":"<message>". The result is one
 * JSON object on stdout.
 *
 * fanout --pub-url: the publisher connects to another server than the
 * subscribers (another node of a mesh, or of a fleet on the Redis engine),
 * so that every delivery crosses from one node to the other.
 *
 * --payload chat pads with chat-like JSON (words, names, numbers, as a chat
 * message with its metadata would be) instead of 'x', so that compression
 * ratios mean something. --deflate offers permessage-deflate (RFC 7692) the
 * way a browser does ("permessage-deflate; client_max_window_bits"), fails
 * the handshake when the server does not accept it, and inflates with zlib
 * every frame that has RSV1 before reading its timestamp; with the server's
 * server_no_context_takeover one inflate stream is shared by every
 * connection, without it each connection keeps its own. The loadgen itself
 * sends uncompressed frames (RFC 7692 lets a client choose per message), so
 * that its CPU goes to receiving. wire_bytes_per_delivery is the WebSocket
 * bytes (frame headers included) the subscribers received in the measured
 * window, divided by the deliveries. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <zlib.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define HDR_LEN 52            /* fixed part of a payload, see above */
#define MAX_SIZE 16384        /* largest --size */
#define RX_CAP (512 * 1024)   /* shared receive buffer */
#define MAX_FRAME (64 * 1024) /* larger server frames are a protocol error */
#define MAX_HS 16384          /* largest handshake response head */
#define RING 4096             /* fanout completion ring, > max window */
#define MAX_EVENTS 1024

/* --json: what goes before and after the message. */
#define JSON_PRE "{\"text\":\""
#define JSON_PRE_LEN 9
#define JSON_POST "\"}"
#define JSON_POST_LEN 2

enum { ST_IDLE, ST_CONNECTING, ST_TLS, ST_HS, ST_OPEN, ST_CLOSED };
enum { SC_FANOUT, SC_CHAT, SC_IDLE };
enum { ROLE_SUB, ROLE_PUB };
enum { P_CONNECT, P_SETTLE, P_RUN, P_DRAIN, P_HOLD, P_DONE };

typedef struct {
  int fd;
  uint8_t st;
  uint8_t role;
  uint8_t want_out; /* EPOLLOUT registered */
  uint32_t room;
  uint32_t idx; /* index inside the room (chat), 0 for the fanout publisher */
  char key[25];
  uint8_t *rbuf; /* handshake bytes, then the unparsed tail of a frame */
  uint32_t rlen, rcap;
  uint8_t *wbuf; /* bytes the kernel did not take yet */
  uint32_t wlen, wcap;
  uint64_t last_seq;   /* fanout: last sequence seen from the publisher */
  uint64_t sent_seq;   /* chat: own messages sent */
  uint64_t acked_seq;  /* chat closed loop: own messages seen back */
  uint64_t *peer_last; /* chat: last sequence seen from each room member */
  z_stream *zin;       /* --deflate with context takeover: this connection's */
  SSL *ssl;            /* --tls: the connection's TLS state, else NULL */
} conn_t;

/* ---- options ---- */
static int o_scenario = SC_FANOUT;
static char o_host[64] = "127.0.0.1";
static int o_port = 8080;
static char o_path[256] = "/";
static long o_conns = 100;
static long o_room_size = 10;
static double o_rate = 1.0;
static long o_window = 16;
static long o_size = 64;
static double o_duration = 5.0;
static double o_warmup = 1.0;
static double o_hold = 3.0;
static double o_settle = 0.3;
static double o_drain = 5.0;
static double o_stall = 5.0;
static double o_connect_timeout = 60.0;
static long o_concurrency = 128;
static int o_binary = 0;
static int o_json = 0;
static long o_server_pid = 0;
static int o_verbose = 0;
static char o_room_name[64] = "bench";
static int o_http_publish = 0;
static int o_deflate = 0;
static int o_payload_chat = 0;
static int o_tls = 0;          /* --tls or a wss:// URL */
static const char *o_tls_ca;   /* --tls-ca FILE: verify against it */
static int o_tls_insecure = 0; /* --tls-insecure: verify nothing */
/* --pub-url: where the fanout publisher connects (another node of a
 * cluster); 0 = the --url server. */
static char o_pub_host[64] = "127.0.0.1";
static int o_pub_port = 0;

/* ---- state ---- */
static conn_t *conns;
static long nconns;
static int epfd;
static uint8_t *rx;
static volatile sig_atomic_t got_signal;
static uint32_t rng_state = 0x9e3779b9u;

static int phase = P_CONNECT;
static int running;   /* senders may send */
static int measuring; /* inside the measured window */
static int win_begun, win_ended;
static uint64_t t_start, t_connected, t_first_open, t_last_open;
static uint64_t t_run_start, t_win0, t_win1, t_deadline;
static long next_to_connect, pending, opened, failed;

/* error counters */
static uint64_t e_connect, e_handshake, e_closed, e_protocol, e_malformed;
static uint64_t e_order, e_cross_room, e_unexpected, e_short_write;
static int first_connect_errno;
static char first_handshake_error[160];

/* --deflate: one inflate stream for every connection while the server
 * compresses without context takeover (reset per message); else per
 * connection (conn_t.zin). */
static z_stream z_shared;
static int z_takeover; /* the server did not say server_no_context_takeover */
static uint8_t *z_out; /* one inflated message */
#define Z_OUT_CAP (MAX_SIZE + 4096)
static uint64_t inflated_msgs, inflated_in, inflated_out;

/* traffic counters */
static uint64_t rx_bytes; /* WebSocket bytes read by open connections */
static uint64_t rx_bytes_win0, rx_bytes_win1;
static uint64_t
    deliveries; /* data messages received (fanout: subscribers only) */
static uint64_t pub_echoes;     /* fanout: publisher's own messages seen back */
static uint64_t http_responses; /* --http-publish: 2xx answers to the POSTs */
static uint64_t sent_total;     /* data messages sent */
static uint64_t
    expected_total; /* chat: deliveries expected for what was sent */
static uint64_t deliveries_win0, deliveries_win1, sent_win0, sent_win1;
static uint64_t completed_win0, completed_win1;

/* fanout */
static conn_t *pub;
static uint64_t f_sent, f_completed;
static uint32_t f_count[RING];
static uint64_t f_sent_ts[RING];
/* --trace-out: when each message's first subscriber got it, and where the
 * per-message lines go (seq, sent, first received, last received; ns of
 * CLOCK_MONOTONIC, the clock moonroom --trace-latency stamps with). */
static uint64_t f_first_rx[RING];
static FILE *trace_out;
static uint64_t f_last_progress;
static int f_stalled;

/* chat */
static uint64_t c_rr;
static uint64_t c_lag_max;

/* cpu */
static struct rusage ru0, ru1;
static uint64_t srv_ticks0, srv_ticks1;
static int srv_cpu_ok;

static char err_msg[256];

/* ---- helpers ---- */
static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t rnd(void) {
  uint32_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return rng_state = x;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("moonroom-loadgen: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

static void vlog(const char *fmt, ...) {
  if (!o_verbose)
    return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[%.3f] ", (double)(now_ns() - t_start) / 1e9);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void set_error(const char *fmt, ...) {
  if (err_msg[0])
    return; /* keep the first */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err_msg, sizeof err_msg, fmt, ap);
  va_end(ap);
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q)
    die("out of memory");
  return q;
}

static const char HEX[] = "0123456789abcdef";

static void put_hex(uint8_t *p, uint64_t v, int width) {
  for (int i = width - 1; i >= 0; i--) {
    p[i] = (uint8_t)HEX[v & 15];
    v >>= 4;
  }
}

static int get_hex(const uint8_t *p, int width, uint64_t *out) {
  uint64_t v = 0;
  for (int i = 0; i < width; i++) {
    uint8_t ch = p[i];
    unsigned d;
    if (ch >= '0' && ch <= '9')
      d = ch - '0';
    else if (ch >= 'a' && ch <= 'f')
      d = ch - 'a' + 10;
    else
      return -1;
    v = (v << 4) | d;
  }
  *out = v;
  return 0;
}

/* ---- latency histograms: log-linear, 128 sub-buckets per power of two ---- */
#define H_SUB_BITS 7
#define H_SUB (1 << H_SUB_BITS)
#define H_BUCKETS (2 * H_SUB + (64 - H_SUB_BITS - 1) * H_SUB)

typedef struct {
  uint64_t c[H_BUCKETS];
  uint64_t n, sum, max;
} hist_t;

static hist_t h_deliver;  /* send -> each delivery */
static hist_t h_complete; /* fanout: send -> delivered to all subscribers */

static int h_index(uint64_t v) {
  if (v < 2 * H_SUB)
    return (int)v;
  int msb = 63 - __builtin_clzll(v);
  int shift = msb - H_SUB_BITS;
  return 2 * H_SUB + (shift - 1) * H_SUB + (int)((v >> shift) - H_SUB);
}

static uint64_t h_value(int i) { /* middle of bucket i */
  if (i < 2 * H_SUB)
    return (uint64_t)i;
  int shift = (i - 2 * H_SUB) / H_SUB + 1;
  uint64_t mant = (uint64_t)((i - 2 * H_SUB) % H_SUB + H_SUB);
  return (mant << shift) + ((1ull << shift) >> 1);
}

static void h_add(hist_t *h, uint64_t v) {
  h->c[h_index(v)]++;
  h->n++;
  h->sum += v;
  if (v > h->max)
    h->max = v;
}

static double h_pct(const hist_t *h, double p) {
  if (!h->n)
    return 0;
  uint64_t want = (uint64_t)(p / 100.0 * (double)h->n);
  if (want >= h->n)
    want = h->n - 1;
  uint64_t seen = 0;
  for (int i = 0; i < H_BUCKETS; i++) {
    seen += h->c[i];
    if (seen > want) {
      uint64_t v = h_value(i);
      return (double)(v > h->max ? h->max : v);
    }
  }
  return (double)h->max;
}

static void h_json(const char *name, const hist_t *h) {
  printf("\"%s\":{\"count\":%" PRIu64
         ",\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,"
         "\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
         name, h->n, h->n ? (double)h->sum / (double)h->n / 1e3 : 0.0,
         h_pct(h, 50) / 1e3, h_pct(h, 90) / 1e3, h_pct(h, 99) / 1e3,
         h_pct(h, 99.9) / 1e3, (double)h->max / 1e3);
}

/* ---- cpu ---- */
static int server_ticks(uint64_t *out) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", o_server_pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p)
    return -1;
  unsigned long long ut = 0, st = 0;
  /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
   * cmajflt utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &ut, &st) != 2)
    return -1;
  *out = ut + st;
  return 0;
}

static double ru_secs(const struct rusage *r) {
  return (double)r->ru_utime.tv_sec + (double)r->ru_utime.tv_usec / 1e6 +
         (double)r->ru_stime.tv_sec + (double)r->ru_stime.tv_usec / 1e6;
}

/* ---- epoll ---- */
static void ep_set(conn_t *c, int out, int add) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
  ev.data.u64 = (uint64_t)(c - conns);
  if (epoll_ctl(epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev) < 0)
    die("epoll_ctl: %s", strerror(errno));
  c->want_out = (uint8_t)out;
}

static void conn_close(conn_t *c) {
  if (c->ssl) {
    /* No close_notify: the benchmark ends connections only on errors. */
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  if (c->fd >= 0) {
    close(c->fd); /* also removes it from epoll */
    c->fd = -1;
  }
  int was_pending = c->st == ST_CONNECTING || c->st == ST_TLS || c->st == ST_HS;
  if (was_pending) {
    pending--;
    failed++;
  }
  c->st = ST_CLOSED;
  c->wlen = 0;
}

/* ---- TLS (--tls) ----
 * OpenSSL on the same non-blocking sockets and the same epoll loop: a
 * connection does its TLS handshake (ST_TLS) before the WebSocket one, then
 * every read and write goes through SSL_read/SSL_write instead of
 * recv/send. Nothing blocks: WANT_READ leaves EPOLLIN armed (it always is),
 * WANT_WRITE arms EPOLLOUT. OpenSSL reads one record at a time from the
 * socket (no read-ahead), so decrypted bytes it still holds are taken with
 * SSL_pending before going back to epoll, which only sees the socket. */
static SSL_CTX *tls_ctx;
static uint64_t tls_handshakes; /* completed TLS handshakes */
static uint64_t e_tls;          /* TLS handshakes that failed */
static char tls_version[32], tls_cipher[64], tls_alpn[32];
static char first_tls_error[200];

/* What read and write return besides a byte count. */
#define IO_AGAIN (-1) /* nothing now; epoll says when */
#define IO_ERROR (-2) /* the connection is gone (reset, TLS alert, ...) */
#define IO_EOF 0

static void tls_init(void) {
  tls_ctx = SSL_CTX_new(TLS_client_method());
  if (!tls_ctx)
    die("SSL_CTX_new failed");
  SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
  /* Partial writes and a buffer that moves between retries: unsent bytes
   * are copied into the connection's wbuf and retried from there. Released
   * buffers keep 19,000 idle clients small. */
  SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
  static const unsigned char alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(tls_ctx, alpn, sizeof alpn - 1);
  if (o_tls_insecure) {
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
  } else {
    if (!o_tls_ca)
      die("--tls needs --tls-ca FILE (or --tls-insecure)");
    if (SSL_CTX_load_verify_locations(tls_ctx, o_tls_ca, NULL) != 1)
      die("cannot load --tls-ca %s", o_tls_ca);
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
  }
}

/* Records why the first TLS handshake failed: OpenSSL's error queue, and
 * the certificate check's verdict when that was the reason. */
static void tls_note_error(conn_t *c, int err) {
  if (first_tls_error[0])
    return;
  char what[128] = "";
  unsigned long e = ERR_peek_last_error();
  if (e)
    ERR_error_string_n(e, what, sizeof what);
  else if (err == SSL_ERROR_SYSCALL)
    snprintf(what, sizeof what, "%s", errno ? strerror(errno) : "EOF");
  long v = SSL_get_verify_result(c->ssl);
  snprintf(first_tls_error, sizeof first_tls_error, "%s%s%s", what,
           v != X509_V_OK ? "; certificate: " : "",
           v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
}

static ssize_t io_send(conn_t *c, const uint8_t *buf, size_t len) {
  if (!c->ssl) {
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0)
      return n;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IO_AGAIN
                                                                     : IO_ERROR;
  }
  if (len == 0)
    return 0;
  ERR_clear_error();
  int n = SSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
  if (n > 0)
    return n;
  int e = SSL_get_error(c->ssl, n);
  /* WANT_READ: OpenSSL must read first; the next readable event does, and
   * on_event flushes again after it. */
  return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? IO_AGAIN
                                                               : IO_ERROR;
}

/* Reads up to cap bytes; with TLS as many records as are there, so that one
 * call takes as much as one recv() would. */
static ssize_t io_recv(conn_t *c, uint8_t *buf, size_t cap) {
  if (!c->ssl) {
    ssize_t n = recv(c->fd, buf, cap, 0);
    if (n >= 0)
      return n;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? IO_AGAIN
                                                                     : IO_ERROR;
  }
  size_t got = 0;
  while (got < cap) {
    ERR_clear_error();
    size_t want = cap - got;
    int n =
        SSL_read(c->ssl, buf + got, want > INT32_MAX ? INT32_MAX : (int)want);
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    if (got)
      break; /* what follows (EOF, an error) comes with the next call */
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ)
      return IO_AGAIN;
    if (e == SSL_ERROR_WANT_WRITE) {
      if (!c->want_out)
        ep_set(c, 1, 0);
      return IO_AGAIN;
    }
    return e == SSL_ERROR_ZERO_RETURN ? IO_EOF : IO_ERROR;
  }
  return (ssize_t)got;
}

/* ---- sending ---- */
static void conn_write(conn_t *c, const uint8_t *buf, size_t len) {
  if (c->st != ST_OPEN && c->st != ST_HS)
    return;
  if (c->wlen == 0) {
    ssize_t n = io_send(c, buf, len);
    if (n == (ssize_t)len)
      return;
    if (n < 0) {
      if (n != IO_AGAIN) {
        e_closed++;
        conn_close(c);
        return;
      }
      n = 0;
    }
    e_short_write++;
    buf += n;
    len -= (size_t)n;
  }
  if (c->wlen + len > c->wcap) {
    size_t cap = c->wcap ? c->wcap : 1024;
    while (cap < c->wlen + len)
      cap *= 2;
    c->wbuf = xrealloc(c->wbuf, cap);
    c->wcap = (uint32_t)cap;
  }
  memcpy(c->wbuf + c->wlen, buf, len);
  c->wlen += (uint32_t)len;
  if (!c->want_out)
    ep_set(c, 1, 0);
}

static void conn_flush(conn_t *c) {
  while (c->wlen) {
    ssize_t n = io_send(c, c->wbuf, c->wlen);
    if (n < 0) {
      if (n == IO_AGAIN)
        return;
      e_closed++;
      conn_close(c);
      return;
    }
    memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
    c->wlen -= (uint32_t)n;
  }
  if (c->want_out)
    ep_set(c, 0, 0);
}

/* A masked client frame. */
static void send_frame(conn_t *c, int opcode, const uint8_t *payload,
                       size_t len) {
  uint8_t frame[MAX_SIZE + JSON_PRE_LEN + JSON_POST_LEN + 14];
  size_t h = 0;
  if (len > MAX_SIZE + JSON_PRE_LEN + JSON_POST_LEN)
    len = MAX_SIZE + JSON_PRE_LEN + JSON_POST_LEN;
  frame[h++] = (uint8_t)(0x80 | opcode);
  if (len < 126) {
    frame[h++] = (uint8_t)(0x80 | len);
  } else {
    frame[h++] = 0x80 | 126;
    frame[h++] = (uint8_t)(len >> 8);
    frame[h++] = (uint8_t)len;
  }
  uint32_t m = rnd();
  uint8_t mask[4] = {(uint8_t)m, (uint8_t)(m >> 8), (uint8_t)(m >> 16),
                     (uint8_t)(m >> 24)};
  memcpy(frame + h, mask, 4);
  h += 4;
  for (size_t i = 0; i < len; i++)
    frame[h + i] = payload[i] ^ mask[i & 3];
  conn_write(c, frame, h + len);
}

/* The message, with room before and after it for the --json wrapping. */
static uint8_t payload_tmpl[JSON_PRE_LEN + MAX_SIZE + JSON_POST_LEN];

/* --http-publish: the message as the body of one POST, written at once. */
static void send_post(conn_t *c, const uint8_t *body, size_t len) {
  static uint8_t req[512 + MAX_SIZE + JSON_PRE_LEN + JSON_POST_LEN];
  int n = snprintf((char *)req, 512,
                   "POST %spublish?room=%s HTTP/1.1\r\nHost: %s:%d\r\n"
                   "Content-Length: %zu\r\n\r\n",
                   o_path, o_room_name, o_host, o_port, len);
  memcpy(req + n, body, len);
  conn_write(c, req, (size_t)n + len);
}

static void send_data(conn_t *c, uint64_t seq, uint32_t room, uint32_t idx) {
  uint8_t *p = payload_tmpl + JSON_PRE_LEN;
  put_hex(p, seq, 16);
  put_hex(p + 17, now_ns(), 16);
  put_hex(p + 34, room, 8);
  put_hex(p + 43, idx, 8);
  if (o_http_publish && c->role == ROLE_PUB)
    send_post(c, o_json ? payload_tmpl : p,
              o_json ? JSON_PRE_LEN + (size_t)o_size + JSON_POST_LEN
                     : (size_t)o_size);
  else if (o_json)
    send_frame(c, o_binary ? 2 : 1, payload_tmpl,
               JSON_PRE_LEN + (size_t)o_size + JSON_POST_LEN);
  else
    send_frame(c, o_binary ? 2 : 1, p, (size_t)o_size);
  sent_total++;
}

/* --json: finds the message inside a received JSON text (the handler may
 * put other fields around it, in any order). Returns NULL when it is not
 * there, or not followed by the closing quote. */
static const uint8_t *json_message(const uint8_t *p, uint64_t len) {
  static const char key[] = "\"text\":\"";
  const uint8_t *m = memmem(p, (size_t)len, key, sizeof key - 1);
  if (!m)
    return NULL;
  m += sizeof key - 1;
  if ((uint64_t)(m - p) + (uint64_t)o_size >= len || m[o_size] != '"')
    return NULL;
  return m;
}

/* ---- fanout ---- */
static void fanout_send_one(void) {
  uint64_t seq = ++f_sent;
  f_count[seq % RING] = 0;
  f_sent_ts[seq % RING] = now_ns();
  send_data(pub, seq, 0, 0);
}

static void fanout_fill(void) {
  while (running && pub->st == ST_OPEN &&
         f_sent - f_completed < (uint64_t)o_window)
    fanout_send_one();
}

static void fanout_advance(uint64_t now) {
  int progressed = 0;
  while (f_completed < f_sent &&
         f_count[(f_completed + 1) % RING] >= (uint32_t)o_conns) {
    f_completed++;
    uint64_t ts = f_sent_ts[f_completed % RING];
    if (ts >= t_win0 && ts < t_win1) {
      h_add(&h_complete, now - ts);
      if (trace_out)
        fprintf(trace_out, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                f_completed, ts, f_first_rx[f_completed % RING], now);
    }
    progressed = 1;
  }
  if (progressed) {
    f_last_progress = now;
    fanout_fill();
  }
}

/* ---- receiving ---- */
static void on_data(conn_t *c, const uint8_t *p, uint64_t len, uint64_t now) {
  uint64_t seq, ts, room, idx;
  if (o_json) {
    if (!(p = json_message(p, len))) {
      e_malformed++;
      return;
    }
    len = (uint64_t)o_size;
  }
  if (len < HDR_LEN || get_hex(p, 16, &seq) || get_hex(p + 17, 16, &ts) ||
      get_hex(p + 34, 8, &room) || get_hex(p + 43, 8, &idx)) {
    e_malformed++;
    return;
  }
  if (len != (uint64_t)o_size)
    e_malformed++;
  if (o_scenario == SC_FANOUT) {
    if (seq != c->last_seq + 1)
      e_order++;
    if (seq > c->last_seq)
      c->last_seq = seq;
    if (c->role == ROLE_PUB) {
      pub_echoes++;
      return;
    }
    deliveries++;
    if (ts >= t_win0 && ts < t_win1)
      h_add(&h_deliver, now - ts);
    if (seq > f_completed && seq <= f_sent) {
      if (f_count[seq % RING]++ == 0)
        f_first_rx[seq % RING] = now;
      if (seq == f_completed + 1)
        fanout_advance(now);
    }
  } else if (o_scenario == SC_CHAT) {
    if (room != c->room || idx >= (uint64_t)o_room_size) {
      e_cross_room++;
      return;
    }
    uint64_t *last = &c->peer_last[idx];
    if (seq != *last + 1)
      e_order++;
    if (seq > *last)
      *last = seq;
    deliveries++;
    if (ts >= t_win0 && ts < t_win1)
      h_add(&h_deliver, now - ts);
    if (idx == c->idx && o_rate <= 0) {
      c->acked_seq = seq;
      if (running && c->sent_seq - c->acked_seq < (uint64_t)o_window) {
        c->sent_seq++;
        expected_total += (uint64_t)o_room_size;
        send_data(c, c->sent_seq, c->room, c->idx);
      }
    }
  } else {
    e_unexpected++;
  }
}

/* Inflates one compressed message into z_out (RFC 7692 7.2.2: the payload
 * plus 00 00 ff ff); returns its length, or UINT64_MAX when it is corrupt
 * or longer than any message the loadgen sends. */
static uint64_t inflate_message(conn_t *c, const uint8_t *p, uint64_t len) {
  static const uint8_t tail[4] = {0, 0, 0xff, 0xff};
  z_stream *z = &z_shared;
  if (z_takeover) {
    if (!c->zin) {
      c->zin = calloc(1, sizeof *c->zin);
      if (!c->zin || inflateInit2(c->zin, -15) != Z_OK)
        die("inflateInit2 failed");
    }
    z = c->zin;
  }
  z->next_out = z_out;
  z->avail_out = Z_OUT_CAP;
  for (int part = 0; part < 2; part++) {
    z->next_in = (Bytef *)(part ? tail : p);
    z->avail_in = (uInt)(part ? sizeof tail : len);
    int r = inflate(z, Z_SYNC_FLUSH);
    if ((r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END) || z->avail_in) {
      if (!z_takeover)
        inflateReset(z); /* the next connection's message starts clean */
      return UINT64_MAX;
    }
  }
  uint64_t n = Z_OUT_CAP - z->avail_out;
  if (!z_takeover)
    inflateReset(z);
  inflated_msgs++;
  inflated_in += len;
  inflated_out += n;
  return n;
}

/* Parses every complete frame in buf; returns the bytes consumed. */
static size_t parse_frames(conn_t *c, const uint8_t *buf, size_t len,
                           uint64_t now) {
  size_t off = 0;
  while (c->st == ST_OPEN && len - off >= 2) {
    const uint8_t *p = buf + off;
    size_t avail = len - off;
    int fin = p[0] & 0x80, rsv = p[0] & 0x70, op = p[0] & 0x0f;
    int masked = p[1] & 0x80;
    uint64_t plen = p[1] & 0x7f;
    size_t hl = 2;
    if (plen == 126) {
      if (avail < 4)
        break;
      plen = ((uint64_t)p[2] << 8) | p[3];
      hl = 4;
    } else if (plen == 127) {
      if (avail < 10)
        break;
      plen = 0;
      for (int i = 0; i < 8; i++)
        plen = (plen << 8) | p[2 + i];
      hl = 10;
    }
    int compressed = o_deflate && rsv == 0x40 && (op == 1 || op == 2);
    if (masked || (rsv && !compressed) || plen > MAX_FRAME) {
      e_protocol++;
      conn_close(c);
      break;
    }
    if (avail < hl + plen)
      break;
    const uint8_t *pl = p + hl;
    off += hl + (size_t)plen;
    switch (op) {
    case 1:
    case 2:
      if (!fin) {
        e_protocol++; /* the loadgen does not reassemble fragments */
        break;
      }
      if (compressed) {
        uint64_t n = inflate_message(c, pl, plen);
        if (n == UINT64_MAX) {
          e_protocol++;
          conn_close(c);
          break;
        }
        on_data(c, z_out, n, now);
        break;
      }
      on_data(c, pl, plen, now);
      break;
    case 8:
      e_closed++;
      conn_close(c);
      break;
    case 9:
      send_frame(c, 10, pl, (size_t)plen);
      break;
    case 10:
      break;
    default:
      e_protocol++;
      break;
    }
  }
  return off;
}

static void rbuf_reserve(conn_t *c, size_t need) {
  if (need <= c->rcap)
    return;
  size_t cap = c->rcap ? c->rcap : 256;
  while (cap < need)
    cap *= 2;
  c->rbuf = xrealloc(c->rbuf, cap);
  c->rcap = (uint32_t)cap;
}

static void conn_opened(conn_t *c, uint64_t now) {
  c->st = ST_OPEN;
  pending--;
  opened++;
  if (!t_first_open)
    t_first_open = now;
  t_last_open = now;
}

static int header_has(const char *head, const char *name, const char *value) {
  size_t nl = strlen(name);
  for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
    const char *line = p + 2;
    if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
      const char *v = line + nl + 1;
      while (*v == ' ' || *v == '\t')
        v++;
      size_t vl = strlen(value);
      return strncmp(v, value, vl) == 0 &&
             (v[vl] == '\r' || v[vl] == ' ' || v[vl] == '\t');
    }
  }
  return 0;
}

static void hs_fail(conn_t *c, const char *why, const char *head) {
  e_handshake++;
  if (!first_handshake_error[0]) {
    char line[80];
    size_t n = 0;
    while (head && head[n] && head[n] != '\r' && n < sizeof line - 1) {
      line[n] = head[n];
      n++;
    }
    line[n] = 0;
    snprintf(first_handshake_error, sizeof first_handshake_error, "%s (%s)",
             why, line);
  }
  conn_close(c);
}

static void on_handshake_bytes(conn_t *c, uint64_t now) {
  uint8_t *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
  if (!end) {
    if (c->rlen >= MAX_HS - 1)
      hs_fail(c, "response head too long", NULL);
    return;
  }
  size_t head_len = (size_t)(end - c->rbuf) + 4;
  char head[MAX_HS];
  memcpy(head, c->rbuf, head_len);
  head[head_len] = 0;
  if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
    hs_fail(c, "status is not 101", head);
    return;
  }
  /* expected accept: base64(SHA-1(key + GUID)) */
  char cat[64];
  uint8_t digest[SHA_DIGEST_LENGTH];
  char accept[32];
  int n = snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11",
                   c->key);
  SHA1((const unsigned char *)cat, (size_t)n, digest);
  EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);
  if (!header_has(head, "Sec-WebSocket-Accept", accept)) {
    hs_fail(c, "bad or missing Sec-WebSocket-Accept", head);
    return;
  }
  if (o_deflate) {
    /* The answer must accept permessage-deflate; with
     * server_no_context_takeover every message inflates on its own. */
    const char *ext = NULL;
    for (const char *q = strstr(head, "\r\n"); q; q = strstr(q + 2, "\r\n"))
      if (strncasecmp(q + 2, "Sec-WebSocket-Extensions:", 25) == 0)
        ext = q + 2 + 25;
    if (!ext || !strstr(ext, "permessage-deflate")) {
      hs_fail(c, "permessage-deflate not negotiated", head);
      return;
    }
    const char *eol = strstr(ext, "\r\n");
    const char *snct = strstr(ext, "server_no_context_takeover");
    if (!snct || snct > eol)
      z_takeover = 1;
  }
  conn_opened(c, now);
  size_t rest = c->rlen - head_len;
  memmove(c->rbuf, c->rbuf + head_len, rest);
  c->rlen = (uint32_t)rest;
  if (rest) {
    memcpy(rx, c->rbuf, rest);
    size_t used = parse_frames(c, rx, rest, now);
    if (c->st == ST_OPEN) {
      memcpy(c->rbuf, rx + used, rest - used);
      c->rlen = (uint32_t)(rest - used);
    }
  }
}

/* --http-publish: reads the publisher's responses, which carry a
 * Content-Length (a count); anything but 2xx is a protocol error. */
static void on_http_readable(conn_t *c) {
  rbuf_reserve(c, c->rlen + 65536);
  ssize_t n = io_recv(c, c->rbuf + c->rlen, c->rcap - c->rlen);
  if (n <= 0) {
    if (n == IO_AGAIN)
      return;
    e_closed++;
    conn_close(c);
    return;
  }
  c->rlen += (uint32_t)n;
  size_t off = 0;
  for (;;) {
    uint8_t *p = c->rbuf + off;
    size_t left = c->rlen - off;
    uint8_t *end = memmem(p, left, "\r\n\r\n", 4);
    if (!end)
      break;
    size_t head = (size_t)(end - p) + 4;
    char *cl = memmem(p, head, "Content-Length: ", 16);
    size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
    if (left < head + body)
      break;
    if (left < 12 || memcmp(p, "HTTP/1.1 2", 10) != 0) {
      e_protocol++;
      set_error("publish answered %.12s", (const char *)p);
    } else {
      http_responses++;
    }
    off += head + body;
  }
  memmove(c->rbuf, c->rbuf + off, c->rlen - off);
  c->rlen -= (uint32_t)off;
}

static void on_readable(conn_t *c) {
  if (o_http_publish && c->role == ROLE_PUB && c->st == ST_OPEN) {
    on_http_readable(c);
    return;
  }
  if (c->st == ST_HS) {
    /* Response heads are a few hundred bytes: start small, grow to MAX_HS. */
    if (c->rlen + 1 >= c->rcap)
      rbuf_reserve(c, c->rcap ? c->rcap * 2 : 512);
    size_t room = (c->rcap < MAX_HS ? c->rcap : MAX_HS) - 1 - c->rlen;
    ssize_t n = io_recv(c, c->rbuf + c->rlen, room);
    if (n <= 0) {
      if (n == IO_AGAIN)
        return;
      hs_fail(c, n == 0 ? "closed during handshake" : "error during handshake",
              NULL);
      return;
    }
    c->rlen += (uint32_t)n;
    on_handshake_bytes(c, now_ns());
    return;
  }
  if (c->st != ST_OPEN)
    return;
  size_t have = c->rlen;
  if (have)
    memcpy(rx, c->rbuf, have);
  ssize_t n = io_recv(c, rx + have, RX_CAP - have);
  if (n <= 0) {
    if (n == IO_AGAIN)
      return;
    e_closed++;
    conn_close(c);
    return;
  }
  uint64_t now = now_ns();
  if (c->role == ROLE_SUB || o_scenario != SC_FANOUT)
    rx_bytes += (uint64_t)n;
  size_t total = have + (size_t)n;
  size_t used = parse_frames(c, rx, total, now);
  if (c->st != ST_OPEN)
    return;
  size_t left = total - used;
  rbuf_reserve(c, left);
  if (left)
    memcpy(c->rbuf, rx + used, left);
  c->rlen = (uint32_t)left;
}

/* ---- connecting ---- */
static void query_for(long i, char *out, size_t cap) {
  conn_t *c = &conns[i];
  if (o_scenario == SC_FANOUT)
    snprintf(out, cap, "room=%s&role=%s", o_room_name,
             c->role == ROLE_PUB ? "pub" : "sub");
  else if (o_scenario == SC_CHAT)
    snprintf(out, cap, "room=%s%u&role=pub", o_room_name, c->room);
  else
    snprintf(out, cap, "room=%s%u&role=sub", o_room_name, c->room);
}

static void start_connect(long i) {
  conn_t *c = &conns[i];
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    if (!first_connect_errno)
      first_connect_errno = errno;
    e_connect++;
    c->st = ST_CLOSED;
    failed++;
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in src;
  memset(&src, 0, sizeof src);
  src.sin_family = AF_INET;
  src.sin_addr.s_addr =
      htonl(0x7f000001u + (uint32_t)(i % 250)); /* 127.0.0.1 .. 127.0.0.250 */
  if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
    if (!first_connect_errno)
      first_connect_errno = errno;
    e_connect++;
    close(fd);
    c->st = ST_CLOSED;
    failed++;
    return;
  }
  struct sockaddr_in dst;
  memset(&dst, 0, sizeof dst);
  dst.sin_family = AF_INET;
  int to_pub = c->role == ROLE_PUB && o_pub_port;
  dst.sin_port = htons((uint16_t)(to_pub ? o_pub_port : o_port));
  inet_pton(AF_INET, to_pub ? o_pub_host : o_host, &dst.sin_addr);
  c->fd = fd;
  c->st = ST_CONNECTING;
  pending++;
  if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 &&
      errno != EINPROGRESS) {
    if (!first_connect_errno)
      first_connect_errno = errno;
    e_connect++;
    conn_close(c);
    return;
  }
  ep_set(c, 1, 1);
}

static void after_transport(conn_t *c);

/* Drives the TLS handshake of a connection in ST_TLS one step. */
static void tls_step(conn_t *c) {
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    tls_handshakes++;
    if (!tls_version[0]) {
      const unsigned char *a = NULL;
      unsigned al = 0;
      snprintf(tls_version, sizeof tls_version, "%s", SSL_get_version(c->ssl));
      snprintf(tls_cipher, sizeof tls_cipher, "%s",
               SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)));
      SSL_get0_alpn_selected(c->ssl, &a, &al);
      snprintf(tls_alpn, sizeof tls_alpn, "%.*s", (int)al,
               a ? (const char *)a : "");
    }
    after_transport(c);
    return;
  }
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    if (c->want_out)
      ep_set(c, 0, 0);
    return;
  }
  if (e == SSL_ERROR_WANT_WRITE) {
    if (!c->want_out)
      ep_set(c, 1, 0);
    return;
  }
  e_tls++;
  tls_note_error(c, e);
  conn_close(c);
}

static void on_connected(conn_t *c) {
  int err = 0;
  socklen_t el = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
  if (err) {
    if (!first_connect_errno)
      first_connect_errno = err;
    e_connect++;
    conn_close(c);
    return;
  }
  if (o_tls) {
    c->ssl = SSL_new(tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
      die("SSL_new failed");
    SSL_set_connect_state(c->ssl);
    /* The certificate must name the address connected to (an IP SAN); no
     * SNI, which may not carry an address (RFC 6066). */
    if (!o_tls_insecure &&
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), o_host) != 1)
      die("cannot verify against address %s", o_host);
    c->st = ST_TLS;
    tls_step(c);
    return;
  }
  after_transport(c);
}

/* TCP (and TLS, with --tls) is up: the WebSocket handshake, or for the
 * --http-publish publisher nothing more. */
static void after_transport(conn_t *c) {
  uint8_t raw[16];
  for (int k = 0; k < 16; k += 4) {
    uint32_t r = rnd();
    memcpy(raw + k, &r, 4);
  }
  EVP_EncodeBlock((unsigned char *)c->key, raw, 16);
  if (o_http_publish && c->role == ROLE_PUB) {
    /* A plain HTTP connection: open as soon as TCP is. */
    ep_set(c, 0, 0);
    conn_opened(c, now_ns());
    return;
  }
  char q[128], req[512];
  query_for(c - conns, q, sizeof q);
  int n = snprintf(
      req, sizeof req,
      "GET %s?%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
      "Sec-WebSocket-Version: 13\r\nUser-Agent: moonroom-loadgen\r\n%s\r\n",
      o_path, q, c->role == ROLE_PUB && o_pub_port ? o_pub_host : o_host,
      c->role == ROLE_PUB && o_pub_port ? o_pub_port : o_port, c->key,
      o_deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                  "client_max_window_bits\r\n"
                : "");
  c->st = ST_HS;
  ep_set(c, 0, 0);
  conn_write(c, (const uint8_t *)req, (size_t)n);
}

static void on_event(conn_t *c, uint32_t ev) {
  if (c->st == ST_CONNECTING) {
    if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
      on_connected(c);
    return;
  }
  if (c->st == ST_TLS) {
    tls_step(c);
    return;
  }
  if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
    on_readable(c);
    /* Records OpenSSL has decrypted but not handed out yet: epoll, which
     * sees only the socket, would not say so. */
    while (c->ssl && (c->st == ST_OPEN || c->st == ST_HS) &&
           SSL_pending(c->ssl) > 0)
      on_readable(c);
  }
  /* With TLS a write may have waited for a read (WANT_READ). */
  if (((ev & EPOLLOUT) || (c->ssl && c->wlen)) &&
      (c->st == ST_OPEN || c->st == ST_HS))
    conn_flush(c);
}

/* ---- phases ---- */
static void start_more(void) {
  while (next_to_connect < nconns && pending < o_concurrency)
    start_connect(next_to_connect++);
}

static void snapshot_begin(uint64_t now) {
  (void)now;
  measuring = 1;
  win_begun = 1;
  deliveries_win0 = deliveries;
  rx_bytes_win0 = rx_bytes;
  sent_win0 = sent_total;
  completed_win0 = f_completed;
  getrusage(RUSAGE_SELF, &ru0);
  if (o_server_pid)
    srv_cpu_ok = server_ticks(&srv_ticks0) == 0;
}

static void snapshot_end(uint64_t now) {
  if (!win_begun)
    return;
  measuring = 0;
  win_ended = 1;
  t_win1 = now; /* messages stamped later are not in the histogram */
  deliveries_win1 = deliveries;
  rx_bytes_win1 = rx_bytes;
  sent_win1 = sent_total;
  completed_win1 = f_completed;
  getrusage(RUSAGE_SELF, &ru1);
  if (srv_cpu_ok)
    srv_cpu_ok = server_ticks(&srv_ticks1) == 0;
}

static void run_start(uint64_t now) {
  t_run_start = now;
  t_win0 = now + (uint64_t)(o_warmup * 1e9);
  t_win1 = t_win0 + (uint64_t)(o_duration * 1e9);
  running = 1;
  phase = P_RUN;
  vlog("run: warmup %.1fs, measure %.1fs", o_warmup, o_duration);
  if (o_scenario == SC_FANOUT) {
    f_last_progress = now;
    fanout_fill();
  } else if (o_scenario == SC_CHAT && o_rate <= 0) {
    for (long i = 0; i < nconns; i++) {
      conn_t *c = &conns[i];
      for (long k = 0; k < o_window && c->st == ST_OPEN; k++) {
        c->sent_seq++;
        expected_total += (uint64_t)o_room_size;
        send_data(c, c->sent_seq, c->room, c->idx);
      }
    }
  }
}

static void chat_rate_tick(uint64_t now) {
  double total_rate = o_rate * (double)nconns;
  uint64_t due = (uint64_t)((double)(now - t_run_start) / 1e9 * total_rate);
  uint64_t budget = 20000;
  uint64_t sent_here = 0;
  while (c_rr < due && sent_here < budget) {
    conn_t *c = &conns[c_rr % (uint64_t)nconns];
    c_rr++;
    if (c->st != ST_OPEN)
      continue;
    c->sent_seq++;
    expected_total += (uint64_t)o_room_size;
    send_data(c, c->sent_seq, c->room, c->idx);
    sent_here++;
  }
  if (due > c_rr && due - c_rr > c_lag_max)
    c_lag_max = due - c_rr;
}

static int drained(void) {
  if (o_scenario == SC_FANOUT)
    return f_completed == f_sent &&
           (!o_http_publish || http_responses == f_sent);
  if (o_scenario == SC_CHAT)
    return deliveries >= expected_total;
  return 1;
}

static void phase_tick(uint64_t now) {
  switch (phase) {
  case P_CONNECT:
    start_more();
    if (opened + failed >= nconns) {
      t_connected = now;
      vlog("connected %ld, failed %ld", opened, failed);
      if (o_scenario == SC_IDLE) {
        fprintf(stderr, "HOLDING %ld\n", opened);
        fflush(stderr);
        t_deadline = now + (uint64_t)(o_hold * 1e9);
        phase = P_HOLD;
      } else if (failed) {
        set_error("only %ld of %ld connections opened", opened, nconns);
        phase = P_DONE;
      } else {
        t_deadline = now + (uint64_t)(o_settle * 1e9);
        phase = P_SETTLE;
      }
    } else if (now - t_start > (uint64_t)(o_connect_timeout * 1e9)) {
      set_error(
          "connect phase timed out: %ld open, %ld failed, %ld pending of %ld",
          opened, failed, pending, nconns);
      t_connected = now;
      for (long i = 0; i < nconns; i++)
        if (conns[i].st == ST_CONNECTING || conns[i].st == ST_TLS ||
            conns[i].st == ST_HS)
          conn_close(&conns[i]);
      if (o_scenario == SC_IDLE) {
        fprintf(stderr, "HOLDING %ld\n", opened);
        fflush(stderr);
        t_deadline = now + (uint64_t)(o_hold * 1e9);
        phase = P_HOLD;
      } else {
        phase = P_DONE;
      }
    }
    break;
  case P_SETTLE:
    if (now >= t_deadline)
      run_start(now);
    break;
  case P_RUN:
    if (!measuring && now >= t_win0 && now < t_win1)
      snapshot_begin(now);
    if (o_scenario == SC_CHAT && o_rate > 0)
      chat_rate_tick(now);
    if (o_scenario == SC_FANOUT) {
      if (pub->st != ST_OPEN) {
        set_error("publisher connection closed");
        phase = P_DONE;
        break;
      }
      if (now - f_last_progress > (uint64_t)(o_stall * 1e9)) {
        f_stalled = 1;
        set_error("fan-out stalled: message %" PRIu64
                  " not delivered to all subscribers in %.0fs",
                  f_completed + 1, o_stall);
        snapshot_end(now);
        running = 0;
        phase = P_DONE;
        break;
      }
    }
    if (now >= t_win1) {
      snapshot_end(now);
      running = 0;
      t_deadline = now + (uint64_t)(o_drain * 1e9);
      phase = P_DRAIN;
      vlog("draining");
    }
    break;
  case P_DRAIN:
    if (drained() || now >= t_deadline)
      phase = P_DONE;
    break;
  case P_HOLD:
    if (now >= t_deadline)
      phase = P_DONE;
    break;
  default:
    break;
  }
}

/* ---- result ---- */
static uint64_t count_missing(void) {
  uint64_t missing = 0;
  if (o_scenario == SC_FANOUT) {
    for (long i = 0; i < nconns; i++) {
      conn_t *c = &conns[i];
      if (c->role == ROLE_SUB && c->last_seq < f_sent)
        missing += f_sent - c->last_seq;
    }
  } else if (o_scenario == SC_CHAT) {
    for (long i = 0; i < nconns; i++) {
      conn_t *c = &conns[i];
      long base = i - (long)c->idx;
      for (long k = 0; k < o_room_size && base + k < nconns; k++) {
        uint64_t sent = conns[base + k].sent_seq;
        if (c->peer_last[k] < sent)
          missing += sent - c->peer_last[k];
      }
    }
  }
  return missing;
}

static int print_result(void) {
  static const char *names[] = {"fanout", "chat", "idle"};
  uint64_t missing = count_missing();
  double win = (double)(t_win1 - t_win0) / 1e9;
  int ran = o_scenario != SC_IDLE && win_begun && win_ended && t_win1 > t_win0;
  if (!ran)
    win = 0;
  double conn_span =
      t_last_open > t_start ? (double)(t_last_open - t_start) / 1e9 : 0;
  int ok = !err_msg[0] && !e_order && !missing && !e_malformed &&
           !e_cross_room && !e_protocol && !e_closed && !e_handshake &&
           !e_connect && !e_tls && !got_signal &&
           (!o_http_publish || http_responses == f_sent);
  if (o_scenario == SC_IDLE)
    ok = !err_msg[0] && opened > 0 && !e_protocol && !e_closed && !got_signal;
  printf("{\"scenario\":\"%s\",\"ok\":%s,", names[o_scenario],
         ok ? "true" : "false");
  printf("\"error\":");
  if (err_msg[0] || got_signal) {
    printf("\"%s\",", got_signal ? "interrupted" : err_msg);
  } else {
    printf("null,");
  }
  printf(
      "\"url\":\"%s://"
      "%s:%d%s\",\"conns\":%ld,\"room_size\":%ld,\"size\":%ld,\"window\":%ld,"
      "\"rate\":%.3f,\"binary\":%s,\"json\":%s,",
      o_tls ? "wss" : "ws", o_host, o_port, o_path, o_conns,
      o_scenario == SC_FANOUT ? o_conns : o_room_size, o_size, o_window, o_rate,
      o_binary ? "true" : "false", o_json ? "true" : "false");
  printf(
      "\"opened\":%ld,\"failed\":%ld,\"connect_s\":%.3f,\"connect_rate\":%.1f,",
      opened, failed, conn_span,
      conn_span > 0 ? (double)opened / conn_span : 0.0);
  printf("\"duration_s\":%.3f,", win);
  printf("\"tls\":%s,\"tls_verify\":\"%s\",\"tls_handshakes\":%" PRIu64
         ",\"tls_errors\":%" PRIu64
         ",\"tls_version\":\"%s\",\"tls_cipher\":\"%s\",\"tls_alpn\":\"%s\",",
         o_tls ? "true" : "false",
         !o_tls           ? ""
         : o_tls_insecure ? "none"
                          : "ca",
         tls_handshakes, e_tls, tls_version, tls_cipher, tls_alpn);
  if (o_scenario != SC_IDLE) {
    double msgs = o_scenario == SC_FANOUT
                      ? (double)(completed_win1 - completed_win0)
                      : (double)(sent_win1 - sent_win0);
    printf("\"sent\":%" PRIu64 ",\"deliveries\":%" PRIu64 ",", sent_total,
           deliveries);
    printf("\"msgs_per_s\":%.1f,\"deliveries_per_s\":%.1f,",
           win > 0 ? msgs / win : 0.0,
           win > 0 ? (double)(deliveries_win1 - deliveries_win0) / win : 0.0);
    uint64_t dwin = deliveries_win1 - deliveries_win0;
    printf("\"wire_bytes_per_delivery\":%.1f,",
           dwin ? (double)(rx_bytes_win1 - rx_bytes_win0) / (double)dwin : 0.0);
    printf("\"deflate\":%s,\"payload\":\"%s\",\"inflated_msgs\":%" PRIu64
           ",\"inflated_ratio\":%.2f,",
           o_deflate ? "true" : "false", o_payload_chat ? "chat" : "x",
           inflated_msgs,
           inflated_in ? (double)inflated_out / (double)inflated_in : 0.0);
    if (o_scenario == SC_FANOUT)
      printf("\"completed\":%" PRIu64 ",\"pub_echoes\":%" PRIu64
             ",\"stalled\":%s,\"http_publish\":%s,\"http_responses\":%" PRIu64
             ",",
             f_completed, pub_echoes, f_stalled ? "true" : "false",
             o_http_publish ? "true" : "false", http_responses);
    if (o_scenario == SC_CHAT)
      printf("\"expected\":%" PRIu64 ",\"send_lag_max\":%" PRIu64 ",",
             expected_total, c_lag_max);
    h_json("latency_us", &h_deliver);
    printf(",");
    if (o_scenario == SC_FANOUT) {
      h_json("complete_us", &h_complete);
      printf(",");
    }
    if (win > 0) {
      double lcpu = ru_secs(&ru1) - ru_secs(&ru0);
      printf("\"loadgen_cpu_pct\":%.1f,", 100.0 * lcpu / win);
      if (srv_cpu_ok)
        printf("\"server_cpu_pct\":%.1f,",
               100.0 * (double)(srv_ticks1 - srv_ticks0) /
                   (double)sysconf(_SC_CLK_TCK) / win);
    }
  }
  printf("\"order_violations\":%" PRIu64 ",\"missing\":%" PRIu64
         ",\"malformed\":%" PRIu64 ",\"cross_room\":%" PRIu64
         ",\"protocol_errors\":%" PRIu64 ",\"closed_by_server\":%" PRIu64
         ",\"connect_errors\":%" PRIu64 ",\"handshake_errors\":%" PRIu64
         ",\"short_writes\":%" PRIu64 ",\"unexpected\":%" PRIu64,
         e_order, missing, e_malformed, e_cross_room, e_protocol, e_closed,
         e_connect, e_handshake, e_short_write, e_unexpected);
  if (first_connect_errno)
    printf(",\"first_connect_error\":\"%s\"", strerror(first_connect_errno));
  if (first_tls_error[0]) {
    printf(",\"first_tls_error\":\"");
    for (const char *p = first_tls_error; *p; p++)
      if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
        putchar(*p);
    printf("\"");
  }
  if (first_handshake_error[0]) {
    printf(",\"first_handshake_error\":\"");
    for (const char *p = first_handshake_error; *p; p++)
      if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
        putchar(*p);
    printf("\"");
  }
  printf("}\n");
  fflush(stdout);
  return ok;
}

/* --payload chat: fills p with chat-like JSON lines (the metadata and words
 * of chat messages, from a fixed seed), as a compressor would meet them. */
static void chat_padding(uint8_t *p, size_t len) {
  static const char *words[] = {
      "hello", "the",  "deploy", "finished", "is",   "green",   "who",
      "can",   "look", "at",     "my",       "pull", "request", "thanks",
      "lunch", "in",   "ten",    "minutes",  "ok",   "build",   "failed",
      "again", "on",   "main",   "ship",     "it",   "today",   "review"};
  static const char *names[] = {"ada", "bob", "cy", "dana", "eve", "finn"};
  uint32_t x = 0x2545f491u;
  size_t n = 0;
  char line[256];
  while (n < len) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    int k =
        snprintf(line, sizeof line,
                 "{\"from\":\"%s\",\"room\":\"lobby\",\"id\":%u,\"text\":\"",
                 names[x % 6], (unsigned)(x % 100000));
    /* Up to 19 words: the shift wraps within the 32-bit state. */
    for (int w = 0; w < 4 + (int)(x >> 28) && k < 200; w++)
      k += snprintf(line + k, sizeof line - (size_t)k, "%s%s", w ? " " : "",
                    words[(x >> ((w * 3) % 30)) % 28]);
    k += snprintf(line + k, sizeof line - (size_t)k, "\"} ");
    size_t take = (size_t)k < len - n ? (size_t)k : len - n;
    memcpy(p + n, line, take);
    n += take;
  }
}

/* ---- options ---- */
static void usage(FILE *f) {
  fprintf(
      f,
      "usage: moonroom-loadgen [options]\n"
      "  --scenario fanout|chat|idle   (default fanout)\n"
      "  --url ws://127.0.0.1:PORT/    server address (IPv4 literal; default "
      "port 8080)\n"
      "                    wss://... is the same as --tls\n"
      "  --tls             TLS (1.2 or 1.3) under the WebSocket; the server's\n"
      "                    certificate is verified against --tls-ca, and must "
      "name\n"
      "                    the --url address (an IP SAN)\n"
      "  --tls-ca FILE     CA certificate(s) (PEM) to verify the server with\n"
      "  --tls-insecure    verify nothing (the handshake's CPU is the same)\n"
      "  --pub-url ws://127.0.0.1:PORT/  fanout: the publisher connects "
      "here (another\n"
      "                    node of a cluster), the subscribers to --url\n"
      "  --conns N         fanout: subscribers; chat: connections; idle: "
      "target (100)\n"
      "  --room-size R     chat/idle: connections per room (10)\n"
      "  --room NAME       room name (fanout) or prefix (chat, idle) (bench)\n"
      "  --rate R          chat: messages/s per connection; 0 = closed loop "
      "(1)\n"
      "  --window W        fanout: messages in flight; chat closed loop: per "
      "connection (16)\n"
      "  --size BYTES      message size, %d..%d (64)\n"
      "  --binary          send binary frames instead of text\n"
      "  --http-publish    fanout: publish by HTTP POST /publish?room=ROOM on "
      "one\n"
      "                    keep-alive connection instead of a WebSocket\n"
      "  --json            wrap each message as {\"text\":\"...\"} and find "
      "it in\n"
      "                    the JSON text that comes back\n"
      "  --payload x|chat  pad messages with 'x' or with chat-like JSON (x)\n"
      "  --deflate         offer permessage-deflate, require it, inflate "
      "what comes\n"
      "  --warmup S        seconds before measuring (1)\n"
      "  --duration S      measured seconds (5)\n"
      "  --settle S        pause between connecting and sending (0.3)\n"
      "  --drain S         max wait for in-flight messages after the run (5)\n"
      "  --stall S         fanout: fail when no message completes for S "
      "seconds (5)\n"
      "  --trace-out FILE  fanout: one line per message completed in the "
      "window:\n"
      "                    seq, sent, first and last received (monotonic "
      "ns)\n"
      "  --hold S          idle: seconds to hold the connections (3)\n"
      "  --concurrency C   connection attempts in flight (128)\n"
      "  --connect-timeout S  whole connect phase (60)\n"
      "  --server-pid PID  report the server's CPU use during the measured "
      "window\n"
      "  --verbose         progress on stderr\n"
      "Prints one JSON object on stdout; exit status 0 when \"ok\" is true, 1 "
      "otherwise.\n",
      HDR_LEN, MAX_SIZE);
}

static double num(const char *s, const char *name) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || v < 0)
    die("bad value for --%s: %s", name, s);
  return v;
}

/* Parses ws://HOST[:PORT][/PATH] for --url (path != NULL) and --pub-url
 * (whose path must be the same as --url's, so it is not read). */
static void parse_url(const char *opt, const char *url, char *host, size_t hcap,
                      int *port, char *path, size_t pcap) {
  const char *p = url;
  if (strncmp(p, "ws://", 5) == 0) {
    p += 5;
  } else if (strncmp(p, "wss://", 6) == 0) {
    p += 6;
    o_tls = 1;
  } else {
    die("--%s must start with ws:// or wss://", opt);
  }
  const char *colon = strchr(p, ':');
  const char *slash = strchr(p, '/');
  size_t hl = colon && (!slash || colon < slash) ? (size_t)(colon - p)
              : slash                            ? (size_t)(slash - p)
                                                 : strlen(p);
  if (hl == 0 || hl >= hcap)
    die("bad host in --%s", opt);
  memcpy(host, p, hl);
  host[hl] = 0;
  if (strcmp(host, "localhost") == 0)
    strcpy(host, "127.0.0.1");
  struct in_addr a;
  if (inet_pton(AF_INET, host, &a) != 1)
    die("--%s host must be an IPv4 address", opt);
  if (colon && (!slash || colon < slash))
    *port = atoi(colon + 1);
  if (*port <= 0 || *port > 65535)
    die("bad port in --%s", opt);
  if (slash && path) {
    const char *q = strchr(slash, '?');
    size_t pl = q ? (size_t)(q - slash) : strlen(slash);
    if (pl >= pcap)
      die("path too long");
    memcpy(path, slash, pl);
    path[pl] = 0;
  }
}

static void on_signal(int sig) {
  (void)sig;
  got_signal = 1;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"scenario", required_argument, 0, 's'},
      {"url", required_argument, 0, 'u'},
      {"pub-url", required_argument, 0, 'U'},
      {"conns", required_argument, 0, 'n'},
      {"room-size", required_argument, 0, 'r'},
      {"room", required_argument, 0, 'R'},
      {"rate", required_argument, 0, 'q'},
      {"window", required_argument, 0, 'w'},
      {"size", required_argument, 0, 'z'},
      {"binary", no_argument, 0, 'b'},
      {"json", no_argument, 0, 'j'},
      {"http-publish", no_argument, 0, 'P'},
      {"deflate", no_argument, 0, 'Z'},
      {"payload", required_argument, 0, 'Y'},
      {"warmup", required_argument, 0, 'W'},
      {"duration", required_argument, 0, 'd'},
      {"settle", required_argument, 0, 'S'},
      {"drain", required_argument, 0, 'D'},
      {"stall", required_argument, 0, 'T'},
      {"trace-out", required_argument, 0, 'X'},
      {"hold", required_argument, 0, 'H'},
      {"concurrency", required_argument, 0, 'c'},
      {"connect-timeout", required_argument, 0, 'C'},
      {"server-pid", required_argument, 0, 'p'},
      {"verbose", no_argument, 0, 'v'},
      {"tls", no_argument, 0, 'L'},
      {"tls-ca", required_argument, 0, 'A'},
      {"tls-insecure", no_argument, 0, 'I'},
      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 's':
      if (strcmp(optarg, "fanout") == 0)
        o_scenario = SC_FANOUT;
      else if (strcmp(optarg, "chat") == 0)
        o_scenario = SC_CHAT;
      else if (strcmp(optarg, "idle") == 0)
        o_scenario = SC_IDLE;
      else
        die("unknown scenario %s", optarg);
      break;
    case 'u':
      parse_url("url", optarg, o_host, sizeof o_host, &o_port, o_path,
                sizeof o_path);
      break;
    case 'U':
      o_pub_port = 8080;
      parse_url("pub-url", optarg, o_pub_host, sizeof o_pub_host, &o_pub_port,
                NULL, 0);
      break;
    case 'n':
      o_conns = (long)num(optarg, "conns");
      break;
    case 'r':
      o_room_size = (long)num(optarg, "room-size");
      break;
    case 'R':
      if (strlen(optarg) >= sizeof o_room_name ||
          strspn(optarg, "abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                         "0123456789_-.") != strlen(optarg))
        die("--room must be short and URL-safe");
      strcpy(o_room_name, optarg);
      break;
    case 'q':
      o_rate = num(optarg, "rate");
      break;
    case 'w':
      o_window = (long)num(optarg, "window");
      break;
    case 'z':
      o_size = (long)num(optarg, "size");
      break;
    case 'b':
      o_binary = 1;
      break;
    case 'j':
      o_json = 1;
      break;
    case 'P':
      o_http_publish = 1;
      break;
    case 'Z':
      o_deflate = 1;
      break;
    case 'Y':
      if (strcmp(optarg, "chat") == 0)
        o_payload_chat = 1;
      else if (strcmp(optarg, "x") != 0)
        die("--payload must be x or chat");
      break;
    case 'W':
      o_warmup = num(optarg, "warmup");
      break;
    case 'd':
      o_duration = num(optarg, "duration");
      break;
    case 'S':
      o_settle = num(optarg, "settle");
      break;
    case 'D':
      o_drain = num(optarg, "drain");
      break;
    case 'T':
      o_stall = num(optarg, "stall");
      break;
    case 'X':
      if (!(trace_out = fopen(optarg, "w")))
        die("cannot write --trace-out %s", optarg);
      break;
    case 'H':
      o_hold = num(optarg, "hold");
      break;
    case 'c':
      o_concurrency = (long)num(optarg, "concurrency");
      break;
    case 'C':
      o_connect_timeout = num(optarg, "connect-timeout");
      break;
    case 'p':
      o_server_pid = (long)num(optarg, "server-pid");
      break;
    case 'v':
      o_verbose = 1;
      break;
    case 'L':
      o_tls = 1;
      break;
    case 'A':
      o_tls_ca = optarg;
      break;
    case 'I':
      o_tls_insecure = 1;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  if (o_conns < 1)
    die("--conns must be at least 1");
  if (o_size < HDR_LEN || o_size > MAX_SIZE)
    die("--size must be %d..%d", HDR_LEN, MAX_SIZE);
  if (o_window < 1 || o_window > RING / 2)
    die("--window must be 1..%d", RING / 2);
  if (o_room_size < 1)
    die("--room-size must be at least 1");
  if (o_concurrency < 1)
    o_concurrency = 1;
  if (o_payload_chat && o_json)
    die("--payload chat pads with JSON of its own: not with --json");
  if (o_http_publish && o_scenario != SC_FANOUT)
    die("--http-publish is for the fanout scenario");
  if (o_pub_port && o_scenario != SC_FANOUT)
    die("--pub-url is for the fanout scenario");

  if (o_tls)
    tls_init();
  else if (o_tls_ca || o_tls_insecure)
    die("--tls-ca and --tls-insecure go with --tls");

  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  t_start = now_ns();
  rng_state ^= (uint32_t)t_start ^ (uint32_t)getpid() << 16;
  if (!rng_state)
    rng_state = 1;

  nconns = o_scenario == SC_FANOUT ? o_conns + 1 : o_conns;
  if (o_scenario == SC_CHAT && o_conns % o_room_size)
    die("--conns must be a multiple of --room-size");
  conns = calloc((size_t)nconns, sizeof *conns);
  rx = malloc(RX_CAP);
  if (!conns || !rx)
    die("out of memory");
  uint64_t *peer_last = NULL;
  if (o_scenario == SC_CHAT) {
    peer_last = calloc((size_t)nconns * (size_t)o_room_size, sizeof *peer_last);
    if (!peer_last)
      die("out of memory");
  }
  for (long i = 0; i < nconns; i++) {
    conn_t *c = &conns[i];
    c->fd = -1;
    c->st = ST_IDLE;
    c->role = ROLE_SUB;
    if (o_scenario == SC_CHAT || o_scenario == SC_IDLE) {
      c->room = (uint32_t)(i / o_room_size);
      c->idx = (uint32_t)(i % o_room_size);
      c->role = o_scenario == SC_CHAT ? ROLE_PUB : ROLE_SUB;
      if (peer_last)
        c->peer_last = peer_last + (size_t)i * (size_t)o_room_size;
    }
  }
  if (o_scenario == SC_FANOUT) {
    pub = &conns[nconns - 1];
    pub->role = ROLE_PUB;
  }
  memset(payload_tmpl, 'x', sizeof payload_tmpl);
  if (o_payload_chat)
    chat_padding(payload_tmpl + JSON_PRE_LEN + HDR_LEN,
                 (size_t)o_size - HDR_LEN);
  if (o_deflate) {
    z_out = malloc(Z_OUT_CAP);
    if (!z_out || inflateInit2(&z_shared, -15) != Z_OK)
      die("zlib: cannot set up inflate");
  }
  memcpy(payload_tmpl, JSON_PRE, JSON_PRE_LEN);
  uint8_t *msg = payload_tmpl + JSON_PRE_LEN;
  msg[16] = msg[33] = msg[42] = msg[51] = ' ';
  memcpy(msg + o_size, JSON_POST, JSON_POST_LEN);

  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0)
    die("epoll_create1: %s", strerror(errno));
  vlog("connecting %ld to %s:%d", nconns, o_host, o_port);

  struct epoll_event evs[MAX_EVENTS];
  while (phase != P_DONE && !got_signal) {
    int timeout = phase == P_RUN ? 1 : 10;
    int n = epoll_wait(epfd, evs, MAX_EVENTS, timeout);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      die("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++)
      on_event(&conns[evs[i].data.u64], evs[i].events);
    phase_tick(now_ns());
  }
  if (phase == P_RUN && measuring)
    snapshot_end(now_ns());
  /* The kernel closes the sockets. */
  return print_result() ? 0 : 1;
}
