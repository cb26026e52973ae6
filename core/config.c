#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "log.h"
#include "origin.h"

/* Names the field of mr_config that a row fills: its offset, and its size so
 * that numbers, strings and lists know how much room they have. */
#define FIELD(f)                                                               \
  .off = offsetof(mr_config, f), .size = sizeof(((mr_config *)0)->f)

#define SECONDS_MAX (86400ull * 365)

const mr_option mr_options[] = {
    {.name = "listen",
     .arg = "HOST:PORT",
     .type = MR_OPT_ADDR,
     FIELD(listen),
     .def = "127.0.0.1:8080",
     .expect = "HOST:PORT",
     .help = "address to accept WebSocket clients on"},
    {.name = "max-message",
     .arg = "BYTES",
     .type = MR_OPT_UINT,
     FIELD(max_message),
     .min = 1,
     .max = 1ull << 31,
     .def = "1048576",
     .expect = "1..2147483648 bytes",
     .help = "largest message a client may send; larger ones close the "
             "connection with 1009"},
    {.name = "max-backpressure",
     .arg = "BYTES",
     .type = MR_OPT_UINT,
     FIELD(max_backpressure),
     .min = 1024,
     .max = 1ull << 40,
     .def = "1048576",
     .expect = "at least 1024 bytes",
     .help = "unsent bytes allowed per connection before it is closed with "
             "1008"},
    {.name = "max-head",
     .arg = "BYTES",
     .type = MR_OPT_UINT,
     FIELD(max_head),
     .min = 256,
     .max = 1ull << 20,
     .def = "8192",
     .expect = "256..1048576 bytes",
     .help = "largest HTTP request head; larger gets 431"},
    {.name = "max-connections",
     .arg = "N",
     .type = MR_OPT_UINT,
     FIELD(max_connections),
     .min = 0,
     .max = 100000000,
     .def = "0",
     .expect = "a count",
     .help = "connections accepted at once, 0 = only the open-file limit"},
    {.name = "idle-timeout",
     .arg = "SECONDS",
     .type = MR_OPT_UINT,
     FIELD(idle_timeout),
     .min = 0,
     .max = SECONDS_MAX,
     .def = "120",
     .expect = "a number of seconds",
     .help = "close a client that sends nothing for this long, 0 = never"},
    {.name = "ping-interval",
     .arg = "SECONDS",
     .type = MR_OPT_UINT,
     FIELD(ping_interval),
     .min = 0,
     .max = SECONDS_MAX,
     .def = "30",
     .expect = "a number of seconds",
     .help = "ping every client this often and close one that does not "
             "answer, 0 = never"},
    {.name = "handshake-timeout",
     .arg = "SECONDS",
     .type = MR_OPT_UINT,
     FIELD(handshake_timeout),
     .min = 1,
     .max = SECONDS_MAX,
     .def = "10",
     .expect = "a number of seconds",
     .help = "time allowed for the HTTP upgrade"},
    {.name = "no-reload",
     .type = MR_OPT_OFF,
     FIELD(reload),
     .help = "do not watch SCRIPT for changes"},
    {.name = "log-level",
     .arg = "LEVEL",
     .type = MR_OPT_LOG_LEVEL,
     FIELD(log_level),
     .def = "info",
     .expect = "debug, info, warn or error",
     .help = "debug, info, warn or error"},
    {.name = "cluster-listen",
     .arg = "HOST:PORT",
     .type = MR_OPT_ADDR,
     FIELD(cluster_listen),
     .expect = "HOST:PORT",
     .help = "accept links from other nodes here"},
    {.name = "peer",
     .arg = "HOST:PORT",
     .type = MR_OPT_ADDR_LIST,
     FIELD(peers),
     .count_off = offsetof(mr_config, npeers),
     .expect = "HOST:PORT",
     .help = "dial this node (repeatable)"},
    /* The node's default name is made by the server at start-up, so it is
     * described rather than given as a value. */
    {.name = "node",
     .arg = "NAME",
     .type = MR_OPT_STRING,
     FIELD(node),
     .expect = "a name",
     .help = "this node's name (default: HOSTNAME-PID)"},
    {.name = "cookie",
     .arg = "SECRET",
     .type = MR_OPT_STRING,
     FIELD(cookie),
     .expect = "a secret",
     .help = "shared cluster secret (or MOONROOM_COOKIE)"},
    {.name = "admin-listen",
     .arg = "HOST:PORT",
     .type = MR_OPT_ADDR,
     FIELD(admin_listen),
     .expect = "HOST:PORT",
     .help = "serve /metrics, /healthz and /readyz over plain HTTP here "
             "(default off)"},
    {.name = "max-body",
     .arg = "BYTES",
     .type = MR_OPT_UINT,
     FIELD(max_body),
     .min = 0,
     .max = 1ull << 31,
     .def = "1048576",
     .expect = "0..2147483648 bytes",
     .help = "largest plain HTTP request body; larger gets 413"},
    {.name = "request-timeout",
     .arg = "SECONDS",
     .type = MR_OPT_UINT,
     FIELD(request_timeout),
     .min = 1,
     .max = SECONDS_MAX,
     .def = "10",
     .expect = "a number of seconds",
     .help = "time allowed for a whole plain HTTP request, head and body; "
             "later gets 408"},
    {.name = "keepalive-timeout",
     .arg = "SECONDS",
     .type = MR_OPT_UINT,
     FIELD(keepalive_timeout),
     .min = 1,
     .max = SECONDS_MAX,
     .def = "5",
     .expect = "a number of seconds",
     .help = "close an idle keep-alive HTTP connection after this long"},
    {.name = "lua-memory-limit",
     .arg = "MB",
     .type = MR_OPT_UINT,
     FIELD(lua_memory_limit),
     .min = 0,
     .max = 1u << 20,
     .def = "1024",
     .expect = "0..1048576 MiB",
     .help = "Lua heap limit: a handler that leaves the heap over it after a "
             "full collection is refused (its connection closed 1011), 0 = "
             "no limit"},
    {.name = "handler-timeout",
     .arg = "MS",
     .type = MR_OPT_UINT,
     FIELD(handler_timeout),
     .min = 0,
     .max = 86400000,
     .def = "5000",
     .expect = "0..86400000 ms",
     .help = "interrupt a handler that runs longer than this (exit 4 if it "
             "cannot be), 0 = never"},
    {.name = "compression",
     .arg = "off|on",
     .type = MR_OPT_ONOFF,
     FIELD(compression),
     .def = "off",
     .expect = "off or on",
     .help = "negotiate permessage-deflate (RFC 7692) with clients that "
             "offer it"},
    {.name = "compression-threshold",
     .arg = "BYTES",
     .type = MR_OPT_UINT,
     FIELD(compression_threshold),
     .min = 0,
     .max = 1ull << 31,
     .def = "128",
     .expect = "0..2147483648 bytes",
     .help = "messages shorter than this are sent uncompressed"},
    {.name = "compression-level",
     .arg = "1..9",
     .type = MR_OPT_UINT,
     FIELD(compression_level),
     .min = 1,
     .max = 9,
     .def = "1",
     .expect = "a zlib level 1..9",
     .help = "zlib compression level: 1 fastest, 9 smallest"},
    {.name = "compression-window",
     .arg = "9..15",
     .type = MR_OPT_UINT,
     FIELD(compression_window),
     .min = 9,
     .max = 15,
     .def = "15",
     .expect = "window bits 9..15",
     .help = "the server's deflate window, 2^N bytes (server_max_window_bits)"},
    {.name = "max-presence-meta",
     .arg = "BYTES",
     .type = MR_OPT_UINT,
     FIELD(max_presence_meta),
     .min = 16,
     .max = 32768,
     .def = "512",
     .expect = "16..32768 bytes",
     .help = "largest encoded meta of one ws.track entry"},
    {.name = "max-connections-per-ip",
     .arg = "N",
     .type = MR_OPT_UINT,
     FIELD(max_connections_per_ip),
     .min = 0,
     .max = 100000000,
     .def = "0",
     .expect = "a count",
     .help = "connections one IPv4 address or IPv6 /64 may hold, from accept "
             "to close; more get 429, 0 = no limit"},
    {.name = "max-messages-per-second",
     .arg = "N",
     .type = MR_OPT_UINT,
     FIELD(max_messages_per_second),
     .min = 0,
     .max = 1000000,
     .def = "0",
     .expect = "0..1000000 messages",
     .help = "data messages a connection may send a second before it is "
             "closed with 1008, 0 = no limit"},
    {.name = "message-burst",
     .arg = "N",
     .type = MR_OPT_UINT,
     FIELD(message_burst),
     .min = 0,
     .max = 4000000,
     .def = "0",
     .expect = "0..4000000 messages",
     .help = "messages a connection may send at once within "
             "--max-messages-per-second, 0 = one second's worth"},
    {.name = "allow-origin",
     .arg = "LIST",
     .type = MR_OPT_STRING,
     FIELD(allow_origin),
     .expect = "a list of origins",
     .help = "comma-separated origins (https://example.com) browser upgrades "
             "may come from, * = any; others get 403 (default any)"},
    {.name = "tls-cert",
     .arg = "FILE",
     .type = MR_OPT_STRING,
     FIELD(tls_cert),
     .expect = "a PEM file",
     .help = "serve TLS (wss://, https://) on --listen with this certificate "
             "chain; needs --tls-key (default off)"},
    {.name = "tls-key",
     .arg = "FILE",
     .type = MR_OPT_STRING,
     FIELD(tls_key),
     .expect = "a PEM file",
     .help = "the private key of --tls-cert"},
    {.name = "cluster-tls-cert",
     .arg = "FILE",
     .type = MR_OPT_STRING,
     FIELD(cluster_tls_cert),
     .expect = "a PEM file",
     .help = "run cluster links over TLS with this certificate; needs "
             "--cluster-tls-key and --cluster-tls-ca (default off)"},
    {.name = "cluster-tls-key",
     .arg = "FILE",
     .type = MR_OPT_STRING,
     FIELD(cluster_tls_key),
     .expect = "a PEM file",
     .help = "the private key of --cluster-tls-cert"},
    {.name = "cluster-tls-ca",
     .arg = "FILE",
     .type = MR_OPT_STRING,
     FIELD(cluster_tls_ca),
     .expect = "a PEM file",
     .help = "the CA that signs every node's cluster certificate"},
    {.name = "engine",
     .arg = "URL",
     .type = MR_OPT_STRING,
     FIELD(engine),
     .expect = "redis://[:PASSWORD@]HOST:PORT[/DB]",
     .help = "run rooms across nodes through Redis at "
             "redis://[:PASSWORD@]HOST:PORT[/DB] instead of the mesh "
             "(default off)"},
    {.name = "redis-password",
     .arg = "SECRET",
     .type = MR_OPT_STRING,
     FIELD(redis_password),
     .expect = "a password",
     .help = "the Redis password (or the URL's, or MOONROOM_REDIS_PASSWORD)"},
    {.name = "redis-prefix",
     .arg = "PREFIX",
     .type = MR_OPT_STRING,
     FIELD(redis_prefix),
     .def = "moonroom",
     .expect = "a prefix",
     .help = "the prefix of every Redis channel and key of this fleet"},
    {.name = "trace-latency",
     .arg = "FILE",
     .type = MR_OPT_STRING,
     FIELD(trace_latency),
     .expect = "a file name",
     .help = "write when every broadcast frame was read, queued and written "
             "to FILE, one line a frame (for the benchmark's latency "
             "breakdown; default off)"},
    {.name = "help", .type = MR_OPT_HELP, .help = "print this help and exit"},
    {.name = "version",
     .type = MR_OPT_VERSION,
     .help = "print the version and exit"},
};

const size_t mr_noptions = sizeof mr_options / sizeof mr_options[0];

/* getopt_long reports a table option as OPT_BASE plus its row, above every
 * byte value so that it cannot be mistaken for a short option in optopt. */
enum { OPT_BASE = 256 };

/* --help puts descriptions in a column and wraps them before HELP_WIDTH. */
enum { HELP_COLUMN = 28, HELP_WIDTH = 72 };

static const char usage_head[] =
    "Usage: moonroom [options] SCRIPT\n"
    "       moonroom new DIR\n"
    "\n"
    "Runs a WebSocket room server whose behaviour is the Lua handler SCRIPT.\n"
    "`moonroom new DIR` writes a new app's handler, spec and .busted to DIR.\n"
    "\n"
    "Options:\n";

int mr_addr_parse(const char *s, mr_addr *out) {
  const char *colon;
  const char *host = s;
  size_t hlen;
  if (s[0] == '[') {
    const char *end = strchr(s, ']');
    if (!end || end[1] != ':')
      return MR_EINVAL;
    host = s + 1;
    hlen = (size_t)(end - host);
    colon = end + 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon)
      return MR_EINVAL;
    hlen = (size_t)(colon - s);
  }
  if (hlen == 0 || hlen >= sizeof out->host)
    return MR_EINVAL;
  char *endp;
  errno = 0;
  if (colon[1] < '0' || colon[1] > '9')
    return MR_EINVAL;
  long port = strtol(colon + 1, &endp, 10);
  if (errno || *endp || endp == colon + 1 || port < 0 || port > 65535)
    return MR_EINVAL;
  memcpy(out->host, host, hlen);
  out->host[hlen] = '\0';
  out->port = (int)port;
  return 0;
}

int mr_redis_url_parse(const char *s, mr_redis_url *out) {
  memset(out, 0, sizeof *out);
  static const char scheme[] = "redis://";
  if (strncmp(s, scheme, sizeof scheme - 1) != 0)
    return MR_EINVAL;
  s += sizeof scheme - 1;
  /* The authority ends at the first '/' after the userinfo, which ends at
   * its last '@' (a password may hold '/' and '@'). */
  const char *at = strrchr(s, '@');
  if (at) {
    const char *colon = memchr(s, ':', (size_t)(at - s));
    size_t ulen = colon ? (size_t)(colon - s) : 0;
    size_t plen = colon ? (size_t)(at - colon - 1) : (size_t)(at - s);
    const char *pw = colon ? colon + 1 : s;
    if (plen == 0 || ulen >= sizeof out->user || plen >= sizeof out->password)
      goto bad;
    memcpy(out->user, s, ulen);
    memcpy(out->password, pw, plen);
    s = at + 1;
  }
  const char *slash = strchr(s, '/');
  size_t alen = slash ? (size_t)(slash - s) : strlen(s);
  char auth[300];
  if (alen == 0 || alen + sizeof ":6379" > sizeof auth)
    goto bad;
  memcpy(auth, s, alen);
  auth[alen] = '\0';
  /* The port is optional: an authority without one gets Redis's. */
  const char *rb = strrchr(auth, ']');
  const char *last = strrchr(auth, ':');
  if (!last || (auth[0] == '[' && (!rb || last < rb)))
    memcpy(auth + alen, ":6379", sizeof ":6379");
  mr_addr a;
  if (mr_addr_parse(auth, &a) != 0 || a.port == 0)
    goto bad;
  memcpy(out->host, a.host, sizeof out->host);
  out->port = a.port;
  if (slash) {
    const char *d = slash + 1;
    char *end;
    errno = 0;
    unsigned long db = strtoul(d, &end, 10);
    if (*d < '0' || *d > '9' || *end || errno || db > 65535)
      goto bad;
    out->db = (unsigned)db;
  }
  return 0;
bad:
  memset(out, 0, sizeof *out);
  return MR_EINVAL;
}

static int parse_number(const char *s, unsigned long long min,
                        unsigned long long max, unsigned long long *out) {
  char *end;
  errno = 0;
  /* strtoull would quietly negate "-1" into a huge value. */
  if (*s == '-')
    return MR_EINVAL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max)
    return MR_EINVAL;
  *out = v;
  return 0;
}

/* Stores v in an unsigned field whose width the row's FIELD() recorded, so
 * that size_t and unsigned settings share one option type. */
static void store_uint(void *dst, size_t size, unsigned long long v) {
  if (size == sizeof(uint64_t)) {
    uint64_t x = v;
    memcpy(dst, &x, sizeof x);
  } else if (size == sizeof(uint32_t)) {
    uint32_t x = (uint32_t)v;
    memcpy(dst, &x, sizeof x);
  }
}

/* Line-wrapping state for one option's entry in --help. */
typedef struct {
  FILE *out;
  size_t col;
  int fresh; /* nothing written in the description column yet */
} help_line;

static void put_word(help_line *l, const char *w, size_t len) {
  if (!l->fresh && l->col + 1 + len > HELP_WIDTH) {
    fprintf(l->out, "\n%*s", HELP_COLUMN, "");
    l->col = HELP_COLUMN;
    l->fresh = 1;
  }
  if (!l->fresh) {
    fputc(' ', l->out);
    l->col++;
  }
  fwrite(w, 1, len, l->out);
  l->col += len;
  l->fresh = 0;
}

static void print_option(FILE *out, const mr_option *o) {
  help_line l = {out, 0, 1};
  l.col = 4 + strlen(o->name) + (o->arg ? 1 + strlen(o->arg) : 0);
  fprintf(out, "  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
  /* A long name pushes its description right rather than onto a line of its
   * own, keeping two spaces between them. */
  size_t pad = l.col + 2 > HELP_COLUMN ? 2 : HELP_COLUMN - l.col;
  fprintf(out, "%*s", (int)pad, "");
  l.col += pad;
  const char *w = o->help + strspn(o->help, " ");
  while (*w) {
    size_t len = strcspn(w, " ");
    put_word(&l, w, len);
    w += len;
    w += strspn(w, " ");
  }
  if (o->def) {
    /* One word, so that a default is never split from its value. */
    char def[128];
    snprintf(def, sizeof def, "(default %s)", o->def);
    put_word(&l, def, strlen(def));
  }
  fputc('\n', out);
}

static void print_help(FILE *out) {
  fputs(usage_head, out);
  for (size_t i = 0; i < mr_noptions; i++)
    print_option(out, &mr_options[i]);
}

static int bad_value(const mr_option *o, const char *val, char *err,
                     size_t errlen) {
  snprintf(err, errlen, "--%s: expected %s, got '%s'", o->name, o->expect, val);
  return MR_CONFIG_USAGE;
}

static int add_addr(const mr_option *o, const char *val, mr_config *cfg,
                    char *err, size_t errlen) {
  int *count = (int *)((char *)cfg + o->count_off);
  mr_addr *list = (mr_addr *)((char *)cfg + o->off);
  size_t cap = o->size / sizeof *list;
  if ((size_t)*count == cap) {
    /* The option names what it lists: "--peer: at most 64 peers". */
    snprintf(err, errlen, "--%s: at most %zu %ss", o->name, cap, o->name);
    return MR_CONFIG_USAGE;
  }
  if (mr_addr_parse(val, &list[*count]) != 0)
    return bad_value(o, val, err, errlen);
  ++*count;
  return MR_CONFIG_RUN;
}

static int set_string(const mr_option *o, const char *val, mr_config *cfg,
                      char *err, size_t errlen) {
  size_t len = strlen(val);
  if (len == 0 || len >= o->size) {
    /* The value is not quoted back: it may be the cluster secret. */
    snprintf(err, errlen, "--%s: expected %s of 1..%zu bytes", o->name,
             o->expect, o->size - 1);
    return MR_CONFIG_USAGE;
  }
  memcpy((char *)cfg + o->off, val, len + 1);
  return MR_CONFIG_RUN;
}

/* Applies one option with its value (NULL for a flag). Returns MR_CONFIG_RUN,
 * MR_CONFIG_EXIT after --help or --version, or MR_CONFIG_USAGE with a message
 * naming the option in err. */
static int take_option(const mr_option *o, const char *val, mr_config *cfg,
                       FILE *out, char *err, size_t errlen) {
  void *dst = (char *)cfg + o->off;
  unsigned long long n;
  int level;
  switch (o->type) {
  case MR_OPT_UINT:
    if (parse_number(val, o->min, o->max, &n) != 0)
      return bad_value(o, val, err, errlen);
    store_uint(dst, o->size, n);
    return MR_CONFIG_RUN;
  case MR_OPT_ADDR:
    if (mr_addr_parse(val, dst) != 0)
      return bad_value(o, val, err, errlen);
    return MR_CONFIG_RUN;
  case MR_OPT_ADDR_LIST:
    return add_addr(o, val, cfg, err, errlen);
  case MR_OPT_STRING:
    return set_string(o, val, cfg, err, errlen);
  case MR_OPT_LOG_LEVEL:
    if ((level = mr_log_parse_level(val)) < 0)
      return bad_value(o, val, err, errlen);
    *(int *)dst = level;
    return MR_CONFIG_RUN;
  case MR_OPT_OFF:
    *(int *)dst = 0;
    return MR_CONFIG_RUN;
  case MR_OPT_ONOFF:
    if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0)
      return bad_value(o, val, err, errlen);
    *(int *)dst = strcmp(val, "on") == 0;
    return MR_CONFIG_RUN;
  case MR_OPT_HELP:
    print_help(out);
    return MR_CONFIG_EXIT;
  case MR_OPT_VERSION:
    fprintf(out, "moonroom %s\n", MOONROOM_VERSION);
    return MR_CONFIG_EXIT;
  }
  return MR_CONFIG_RUN;
}

/* Zeroes cfg, then gives each option its default through the same code as a
 * value from argv, so that --help shows exactly the value that is used. */
static int set_defaults(mr_config *cfg, char *err, size_t errlen) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < mr_noptions; i++) {
    const mr_option *o = &mr_options[i];
    if (o->type == MR_OPT_OFF)
      *(int *)((char *)cfg + o->off) = 1;
    else if (o->def &&
             take_option(o, o->def, cfg, NULL, err, errlen) != MR_CONFIG_RUN)
      return MR_CONFIG_USAGE;
  }
  return MR_CONFIG_RUN;
}

/* Names the argv word that getopt rejected. getopt may already have stepped
 * past a value, so the long-option index or optopt is preferred to
 * argv[optind - 1]; buf holds the name when it is not an argv word. */
static const char *rejected_name(char *buf, size_t len, int argc, char **argv,
                                 int li) {
  if (li >= 0)
    snprintf(buf, len, "--%s", mr_options[li].name);
  else if (optopt > 0 && optopt < OPT_BASE)
    snprintf(buf, len, "-%c", optopt);
  else
    return optind > 0 && optind <= argc ? argv[optind - 1] : "?";
  return buf;
}

/* Takes the cluster secret from MOONROOM_COOKIE when --cookie was not given,
 * and refuses to cluster without one. */
static int cluster_cookie(mr_config *cfg, char *err, size_t errlen) {
  if (cfg->cluster && !cfg->cookie[0]) {
    const char *env = getenv("MOONROOM_COOKIE");
    if (env && *env && strlen(env) >= sizeof cfg->cookie) {
      snprintf(err, errlen,
               "MOONROOM_COOKIE: expected a secret of 1..%zu bytes",
               sizeof cfg->cookie - 1);
      return MR_CONFIG_USAGE;
    }
    if (env && *env)
      strcpy(cfg->cookie, env);
  }
  if (cfg->cluster && !cfg->cookie[0]) {
    snprintf(err, errlen,
             "clustering needs a shared secret: pass --cookie SECRET or set "
             "MOONROOM_COOKIE");
    return MR_CONFIG_USAGE;
  }
  return MR_CONFIG_RUN;
}

/* Checks that the TLS files come as a whole: a certificate and its key,
 * and for cluster links also the CA, on a node that clusters. */
static int tls_options(const mr_config *cfg, char *err, size_t errlen) {
  if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
    snprintf(err, errlen, "--tls-cert and --tls-key go together");
    return MR_CONFIG_USAGE;
  }
  int n = !!cfg->cluster_tls_cert[0] + !!cfg->cluster_tls_key[0] +
          !!cfg->cluster_tls_ca[0];
  if (n != 0 && n != 3) {
    snprintf(err, errlen,
             "--cluster-tls-cert, --cluster-tls-key and "
             "--cluster-tls-ca go together");
    return MR_CONFIG_USAGE;
  }
  if (n == 3 && !cfg->cluster) {
    snprintf(err, errlen,
             "--cluster-tls-cert needs --cluster-listen or "
             "--peer");
    return MR_CONFIG_USAGE;
  }
  return MR_CONFIG_RUN;
}

/* Reads --engine, refuses it beside the mesh's options, and picks the
 * password: --redis-password, else the URL's, else MOONROOM_REDIS_PASSWORD.
 * The URL is not quoted back: it may hold the password. */
static int redis_options(mr_config *cfg, char *err, size_t errlen) {
  if (!cfg->engine[0]) {
    if (cfg->redis_password[0]) {
      snprintf(err, errlen, "--redis-password needs --engine");
      return MR_CONFIG_USAGE;
    }
    return MR_CONFIG_RUN;
  }
  if (mr_redis_url_parse(cfg->engine, &cfg->redis_url) != 0) {
    snprintf(err, errlen,
             "--engine: expected redis://[:PASSWORD@]HOST:PORT[/DB] (DB "
             "0..65535)");
    return MR_CONFIG_USAGE;
  }
  if (cfg->cluster) {
    snprintf(err, errlen,
             "--engine and --cluster-listen/--peer exclude each other: run "
             "the nodes through Redis or as a mesh, not both");
    return MR_CONFIG_USAGE;
  }
  cfg->redis = 1;
  if (!cfg->redis_password[0])
    memcpy(cfg->redis_password, cfg->redis_url.password,
           sizeof cfg->redis_password);
  const char *env = getenv("MOONROOM_REDIS_PASSWORD");
  if (!cfg->redis_password[0] && env && *env) {
    if (strlen(env) >= sizeof cfg->redis_password) {
      snprintf(err, errlen,
               "MOONROOM_REDIS_PASSWORD: expected a password of 1..%zu bytes",
               sizeof cfg->redis_password - 1);
      return MR_CONFIG_USAGE;
    }
    strcpy(cfg->redis_password, env);
  }
  return MR_CONFIG_RUN;
}

/* Checks what only the whole command line tells: that there is exactly one
 * SCRIPT, and whether this node clusters. */
static int finish(mr_config *cfg, int argc, char **argv, char *err,
                  size_t errlen) {
  if (optind != argc - 1) {
    snprintf(err, errlen,
             optind >= argc ? "missing SCRIPT (see --help)"
                            : "expected exactly one SCRIPT (see --help)");
    return MR_CONFIG_USAGE;
  }
  cfg->script = argv[optind];
  /* mr_addr_parse never stores an empty host, so an empty one was not given;
   * listening for or dialling other nodes is what clustering means. */
  cfg->has_cluster_listen = cfg->cluster_listen.host[0] != '\0';
  cfg->cluster = cfg->has_cluster_listen || cfg->npeers > 0;
  if (cfg->allow_origin[0] && !mr_origin_list_valid(cfg->allow_origin)) {
    snprintf(err, errlen,
             "--allow-origin: expected comma-separated origins like "
             "https://example.com or *, got '%s'",
             cfg->allow_origin);
    return MR_CONFIG_USAGE;
  }
  if (tls_options(cfg, err, errlen) != MR_CONFIG_RUN)
    return MR_CONFIG_USAGE;
  if (redis_options(cfg, err, errlen) != MR_CONFIG_RUN)
    return MR_CONFIG_USAGE;
  return cluster_cookie(cfg, err, errlen);
}

int mr_config_parse(mr_config *cfg, int argc, char **argv, char *err,
                    size_t errlen, void *outp) {
  struct option opts[sizeof mr_options / sizeof mr_options[0] + 1];
  for (size_t i = 0; i < mr_noptions; i++)
    opts[i] = (struct option){
        mr_options[i].name, mr_options[i].arg ? required_argument : no_argument,
        NULL, OPT_BASE + (int)i};
  opts[mr_noptions] = (struct option){NULL, 0, NULL, 0};
  if (set_defaults(cfg, err, errlen) != MR_CONFIG_RUN)
    return MR_CONFIG_USAGE;
  err[0] = '\0';

  /* getopt keeps global state; reset it so the parser can run repeatedly
   * (the unit tests call it many times in one process). */
  optind = 0;
  opterr = 0;
  int c, li;
  /* The leading ':' makes getopt report a missing value as ':'. */
  while ((li = -1, c = getopt_long(argc, argv, ":", opts, &li)) != -1) {
    if (c >= OPT_BASE && c < OPT_BASE + (int)mr_noptions) {
      int r = take_option(&mr_options[c - OPT_BASE], optarg, cfg, outp, err,
                          errlen);
      if (r != MR_CONFIG_RUN)
        return r;
      continue;
    }
    char buf[64];
    const char *name = rejected_name(buf, sizeof buf, argc, argv, li);
    snprintf(err, errlen,
             c == ':' ? "%s: missing value"
                      : "unknown option '%s' (see --help)",
             name);
    return MR_CONFIG_USAGE;
  }
  return finish(cfg, argc, argv, err, errlen);
}
