/* Unit tests for command-line parsing (core/config.c).
 *
 * Every case runs the real parser over a fresh, writable argv (getopt may
 * permute it) and captures --help/--version output in a memory stream. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "error.h"
#include "log.h"
#include "test_util.h"

enum { MAXARGS = 160 };

/* The state of the last parse: argv strings live until the next one, since
 * cfg.script points into them. */
static char *args[MAXARGS + 2];
static int nargs;
static mr_config cfg;
static char err[512];
static char *out_text;
static size_t out_len;

static void reset(void) {
  for (int i = 0; i < nargs; i++)
    free(args[i]);
  nargs = 0;
  free(out_text);
  out_text = NULL;
  out_len = 0;
}

/* Runs the parser over an argv built from a vector of strings (argv[0] is
 * added). */
static int parse_v(int n, const char *const *v) {
  reset();
  args[nargs++] = strdup("moonroom");
  for (int i = 0; i < n && nargs < MAXARGS; i++)
    args[nargs++] = strdup(v[i]);
  args[nargs] = NULL;
  FILE *out = open_memstream(&out_text, &out_len);
  if (!out) {
    perror("open_memstream");
    exit(2);
  }
  memset(err, 'Z', sizeof err); /* the parser must always terminate err */
  err[sizeof err - 1] = '\0';
  int rc = mr_config_parse(&cfg, nargs, args, err, sizeof err, out);
  fclose(out);
  return rc;
}

/* parse("--listen", "x", "app.lua", NULL) */
static int parse(const char *first, ...) {
  const char *v[MAXARGS];
  int n = 0;
  va_list ap;
  va_start(ap, first);
  for (const char *s = first; s && n < MAXARGS; s = va_arg(ap, const char *))
    v[n++] = s;
  va_end(ap);
  return parse_v(n, v);
}

#define CHECK_CONTAINS(hay, needle)                                            \
  do {                                                                         \
    const char *h_ = (hay), *n_ = (needle);                                    \
    if (!test_record(h_ && strstr(h_, n_) != NULL, __FILE__, __LINE__,         \
                     #hay " contains " #needle))                               \
      fprintf(stderr, "  got \"%s\", expected it to contain \"%s\"\n",         \
              h_ ? h_ : "(null)", n_);                                         \
  } while (0)

/* A usage error whose message names the option and quotes the bad value. */
static void check_bad(const char *opt, const char *value, const char *want) {
  int rc = parse(opt, value, "app.lua", NULL);
  if (!test_record(rc == MR_CONFIG_USAGE, __FILE__, __LINE__,
                   "bad value gives MR_CONFIG_USAGE"))
    fprintf(stderr, "  %s %s: got %d\n", opt, value, rc);
  if (!test_record(strcmp(err, want) == 0, __FILE__, __LINE__, "usage message"))
    fprintf(stderr, "  %s %s: got \"%s\", expected \"%s\"\n", opt, value, err,
            want);
}

/* ---- defaults ---- */

static void test_defaults(void) {
  CHECK_EQ_INT(parse("app.lua", NULL), MR_CONFIG_RUN);
  CHECK_STR(err, "");
  CHECK_STR(cfg.script, "app.lua");
  CHECK_STR(cfg.listen.host, "127.0.0.1");
  CHECK_EQ_INT(cfg.listen.port, 8080);
  CHECK_EQ_INT(cfg.max_message, 1048576);
  CHECK_EQ_INT(cfg.max_backpressure, 1048576);
  CHECK_EQ_INT(cfg.max_head, 8192);
  CHECK_EQ_INT(cfg.idle_timeout, 120);
  CHECK_EQ_INT(cfg.ping_interval, 30);
  CHECK_EQ_INT(cfg.handshake_timeout, 10);
  CHECK_EQ_INT(cfg.max_connections, 0);
  CHECK_EQ_INT(cfg.log_level, MR_LOG_INFO);
  CHECK_EQ_INT(cfg.reload, 1);
  CHECK_EQ_INT(cfg.cluster, 0);
  CHECK_EQ_INT(cfg.has_cluster_listen, 0);
  CHECK_EQ_INT(cfg.npeers, 0);
  CHECK_STR(cfg.node, "");
  CHECK_STR(cfg.cookie, "");
  CHECK_STR(cfg.admin_listen.host, ""); /* no admin listener by default */
  CHECK_EQ_INT(cfg.admin_listen.port, 0);
  CHECK_EQ_INT(cfg.max_body, 1048576);
  CHECK_EQ_INT(cfg.request_timeout, 10);
  CHECK_EQ_INT(cfg.keepalive_timeout, 5);
  CHECK_EQ_INT(cfg.compression, 0); /* permessage-deflate is opt-in */
  CHECK_EQ_INT(cfg.compression_threshold, 128);
  CHECK_EQ_INT(cfg.compression_level, 1);
  CHECK_EQ_INT(cfg.compression_window, 15);
  /* The abuse limits are off: a benchmark from one address is not abuse. */
  CHECK_EQ_INT(cfg.max_connections_per_ip, 0);
  CHECK_EQ_INT(cfg.max_messages_per_second, 0);
  CHECK_EQ_INT(cfg.message_burst, 0);
  CHECK_STR(cfg.allow_origin, "");
  CHECK_EQ_INT(cfg.lua_memory_limit, 1024); /* MiB; the guards are on */
  CHECK_EQ_INT(cfg.handler_timeout, 5000);  /* ms */
  CHECK_EQ_INT(out_len, 0);                 /* nothing printed */
}

/* ---- the abuse limits ---- */

static void test_abuse_limits(void) {
  CHECK_EQ_INT(
      parse("--max-connections-per-ip", "20", "--max-messages-per-second", "50",
            "--message-burst", "200", "--allow-origin",
            "https://example.com, http://localhost:8080", "app.lua", NULL),
      MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_connections_per_ip, 20);
  CHECK_EQ_INT(cfg.max_messages_per_second, 50);
  CHECK_EQ_INT(cfg.message_burst, 200);
  CHECK_STR(cfg.allow_origin, "https://example.com, http://localhost:8080");
  CHECK_EQ_INT(parse("--allow-origin", "*", "app.lua", NULL), MR_CONFIG_RUN);
  check_bad("--max-messages-per-second", "1000001",
            "--max-messages-per-second: expected 0..1000000 messages, got "
            "'1000001'");
  check_bad("--message-burst", "4000001",
            "--message-burst: expected 0..4000000 messages, got '4000001'");
  check_bad("--max-connections-per-ip", "-1",
            "--max-connections-per-ip: expected a count, got '-1'");
  /* A malformed origin is a usage error, not a list that matches nothing. */
  CHECK_EQ_INT(parse("--allow-origin", "example.com", "app.lua", NULL),
               MR_CONFIG_USAGE);
  CHECK_STR(err, "--allow-origin: expected comma-separated origins like "
                 "https://example.com or *, got 'example.com'");
  CHECK_EQ_INT(parse("--allow-origin", "https://a.test/", "app.lua", NULL),
               MR_CONFIG_USAGE);
}

/* ---- each option ---- */

static void test_options(void) {
  CHECK_EQ_INT(parse("--listen", "0.0.0.0:9001", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.listen.host, "0.0.0.0");
  CHECK_EQ_INT(cfg.listen.port, 9001);

  CHECK_EQ_INT(parse("--listen=[::1]:9000", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_STR(cfg.listen.host, "::1");
  CHECK_EQ_INT(cfg.listen.port, 9000);
  CHECK_EQ_INT(parse("--listen", "[::1]:9000", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_STR(cfg.listen.host, "::1");
  CHECK_EQ_INT(cfg.listen.port, 9000);

  /* Options after the script are taken too (GNU permutation). */
  CHECK_EQ_INT(parse("app.lua", "--listen", "localhost:1", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.script, "app.lua");
  CHECK_STR(cfg.listen.host, "localhost");
  CHECK_EQ_INT(cfg.listen.port, 1);

  CHECK_EQ_INT(parse("--max-message", "1", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_message, 1);
  CHECK_EQ_INT(parse("--max-message", "2147483648", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_message, 2147483648ll);
  CHECK_EQ_INT(parse("--max-message=65536", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_message, 65536);

  CHECK_EQ_INT(parse("--max-backpressure", "1024", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_backpressure, 1024);
  CHECK_EQ_INT(parse("--max-backpressure", "1099511627776", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_backpressure, 1099511627776ll);

  CHECK_EQ_INT(parse("--max-head", "256", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_head, 256);
  CHECK_EQ_INT(parse("--max-head", "1048576", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_head, 1048576);

  CHECK_EQ_INT(parse("--max-body", "0", "--request-timeout", "3",
                     "--keepalive-timeout", "1", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_body, 0);
  CHECK_EQ_INT(cfg.request_timeout, 3);
  CHECK_EQ_INT(cfg.keepalive_timeout, 1);

  /* The Lua guards: 0 turns each off. */
  CHECK_EQ_INT(parse("--lua-memory-limit", "0", "--handler-timeout", "0",
                     "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.lua_memory_limit, 0);
  CHECK_EQ_INT(cfg.handler_timeout, 0);
  CHECK_EQ_INT(parse("--lua-memory-limit", "64", "--handler-timeout", "250",
                     "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.lua_memory_limit, 64);
  CHECK_EQ_INT(cfg.handler_timeout, 250);

  CHECK_EQ_INT(parse("--max-connections", "0", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_connections, 0);
  CHECK_EQ_INT(parse("--max-connections", "100000000", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_connections, 100000000);

  CHECK_EQ_INT(parse("--idle-timeout", "0", "--ping-interval", "0",
                     "--handshake-timeout", "1", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.idle_timeout, 0);
  CHECK_EQ_INT(cfg.ping_interval, 0);
  CHECK_EQ_INT(cfg.handshake_timeout, 1);
  CHECK_EQ_INT(parse("--idle-timeout", "31536000", "--ping-interval", "7",
                     "--handshake-timeout", "31536000", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.idle_timeout, 31536000);
  CHECK_EQ_INT(cfg.ping_interval, 7);
  CHECK_EQ_INT(cfg.handshake_timeout, 31536000);

  CHECK_EQ_INT(parse("--no-reload", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.reload, 0);

  static const struct {
    const char *name;
    int level;
  } levels[] = {{"debug", MR_LOG_DEBUG},
                {"info", MR_LOG_INFO},
                {"warn", MR_LOG_WARN},
                {"error", MR_LOG_ERROR}};
  for (int i = 0; i < 4; i++) {
    CHECK_EQ_INT(parse("--log-level", levels[i].name, "app.lua", NULL),
                 MR_CONFIG_RUN);
    CHECK_EQ_INT(cfg.log_level, levels[i].level);
  }

  CHECK_EQ_INT(parse("--admin-listen", "127.0.0.1:9100", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.admin_listen.host, "127.0.0.1");
  CHECK_EQ_INT(cfg.admin_listen.port, 9100);
  CHECK_EQ_INT(cfg.cluster, 0); /* an admin address does not cluster */
  CHECK_EQ_INT(parse("--admin-listen", "[::1]:9100", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.admin_listen.host, "::1");

  CHECK_EQ_INT(parse("--node", "n1", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_STR(cfg.node, "n1");
  CHECK_EQ_INT(cfg.cluster, 0); /* a name alone does not cluster */

  /* A later value of the same option wins. */
  CHECK_EQ_INT(parse("--listen", "a:1", "--listen", "b:2", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.listen.host, "b");
  CHECK_EQ_INT(cfg.listen.port, 2);

  /* "--" ends the options, so a script may start with a dash. */
  CHECK_EQ_INT(parse("--", "--odd.lua", NULL), MR_CONFIG_RUN);
  CHECK_STR(cfg.script, "--odd.lua");

  /* Every option at once. */
  CHECK_EQ_INT(parse("--listen", "10.0.0.1:80", "--max-message", "4096",
                     "--max-backpressure", "8192", "--max-head", "512",
                     "--max-connections", "77", "--idle-timeout", "5",
                     "--ping-interval", "6", "--handshake-timeout", "3",
                     "--no-reload", "--log-level", "warn", "--cluster-listen",
                     "0.0.0.0:7000", "--peer", "10.0.0.2:7000", "--node", "n",
                     "--cookie", "s3cret", "all.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.script, "all.lua");
  CHECK_STR(cfg.listen.host, "10.0.0.1");
  CHECK_EQ_INT(cfg.listen.port, 80);
  CHECK_EQ_INT(cfg.max_message, 4096);
  CHECK_EQ_INT(cfg.max_backpressure, 8192);
  CHECK_EQ_INT(cfg.max_head, 512);
  CHECK_EQ_INT(cfg.max_connections, 77);
  CHECK_EQ_INT(cfg.idle_timeout, 5);
  CHECK_EQ_INT(cfg.ping_interval, 6);
  CHECK_EQ_INT(cfg.handshake_timeout, 3);
  CHECK_EQ_INT(cfg.reload, 0);
  CHECK_EQ_INT(cfg.log_level, MR_LOG_WARN);
  CHECK_EQ_INT(cfg.cluster, 1);
  CHECK_EQ_INT(cfg.has_cluster_listen, 1);
  CHECK_STR(cfg.cluster_listen.host, "0.0.0.0");
  CHECK_EQ_INT(cfg.cluster_listen.port, 7000);
  CHECK_EQ_INT(cfg.npeers, 1);
  CHECK_STR(cfg.peers[0].host, "10.0.0.2");
  CHECK_EQ_INT(cfg.peers[0].port, 7000);
  CHECK_STR(cfg.node, "n");
  CHECK_STR(cfg.cookie, "s3cret");
  CHECK_STR(err, "");

  /* The next parse starts from the defaults again. */
  CHECK_EQ_INT(parse("app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.max_message, 1048576);
  CHECK_EQ_INT(cfg.reload, 1);
  CHECK_EQ_INT(cfg.cluster, 0);
  CHECK_EQ_INT(cfg.npeers, 0);
  CHECK_STR(cfg.cookie, "");
}

/* ---- bad values ---- */

static void test_bad_values(void) {
  check_bad("--listen", "nocolon",
            "--listen: expected HOST:PORT, got 'nocolon'");
  check_bad("--listen", "h:70000",
            "--listen: expected HOST:PORT, got 'h:70000'");
  check_bad("--listen", "[::1]", "--listen: expected HOST:PORT, got '[::1]'");
  check_bad("--max-message", "0",
            "--max-message: expected 1..2147483648 bytes, got '0'");
  check_bad("--max-message", "2147483649",
            "--max-message: expected 1..2147483648 bytes, got '2147483649'");
  check_bad("--max-message", "-1",
            "--max-message: expected 1..2147483648 bytes, got '-1'");
  check_bad("--max-message", "12k",
            "--max-message: expected 1..2147483648 bytes, got '12k'");
  check_bad("--max-message", "",
            "--max-message: expected 1..2147483648 bytes, got ''");
  check_bad("--max-message", "99999999999999999999999",
            "--max-message: expected 1..2147483648 bytes, got "
            "'99999999999999999999999'");
  check_bad("--max-backpressure", "1023",
            "--max-backpressure: expected at least 1024 bytes, got '1023'");
  check_bad("--max-backpressure", "1099511627777",
            "--max-backpressure: expected at least 1024 bytes, got "
            "'1099511627777'");
  check_bad("--max-head", "255",
            "--max-head: expected 256..1048576 bytes, got '255'");
  check_bad("--max-head", "1048577",
            "--max-head: expected 256..1048576 bytes, got '1048577'");
  check_bad("--max-body", "2147483649",
            "--max-body: expected 0..2147483648 bytes, got '2147483649'");
  check_bad("--request-timeout", "0",
            "--request-timeout: expected a number of seconds, got '0'");
  check_bad("--keepalive-timeout", "0",
            "--keepalive-timeout: expected a number of seconds, got '0'");
  check_bad("--lua-memory-limit", "1048577",
            "--lua-memory-limit: expected 0..1048576 MiB, got '1048577'");
  check_bad("--handler-timeout", "-1",
            "--handler-timeout: expected 0..86400000 ms, got '-1'");
  check_bad("--max-connections", "100000001",
            "--max-connections: expected a count, got '100000001'");
  check_bad("--max-connections", "many",
            "--max-connections: expected a count, got 'many'");
  check_bad("--max-connections", "-5",
            "--max-connections: expected a count, got '-5'");
  check_bad("--idle-timeout", "abc",
            "--idle-timeout: expected a number of seconds, got 'abc'");
  check_bad("--idle-timeout", "31536001",
            "--idle-timeout: expected a number of seconds, got '31536001'");
  check_bad("--ping-interval", "-1",
            "--ping-interval: expected a number of seconds, got '-1'");
  check_bad("--handshake-timeout", "0",
            "--handshake-timeout: expected a number of seconds, got '0'");
  check_bad("--log-level", "verbose",
            "--log-level: expected debug, info, warn or error, got 'verbose'");
  check_bad("--log-level", "INFO",
            "--log-level: expected debug, info, warn or error, got 'INFO'");
  check_bad("--cluster-listen", "7000",
            "--cluster-listen: expected HOST:PORT, got '7000'");
  check_bad("--peer", "host:", "--peer: expected HOST:PORT, got 'host:'");
  check_bad("--admin-listen", "9100",
            "--admin-listen: expected HOST:PORT, got '9100'");
  check_bad("--node", "", "--node: expected a name of 1..63 bytes");
  check_bad("--cookie", "", "--cookie: expected a secret of 1..255 bytes");

  /* The "--opt=value" spelling names the option too. */
  CHECK_EQ_INT(parse("--ping-interval=soon", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK(strncmp(err, "--ping-interval", 15) == 0);
  CHECK_CONTAINS(err, "got 'soon'");
  CHECK_EQ_INT(parse("--max-head=1", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "--max-head: expected 256..1048576 bytes, got '1'");

  /* Length limits of the fixed buffers. */
  char name[80], cookie[300];
  memset(name, 'n', sizeof name);
  name[63] = '\0';
  CHECK_EQ_INT(parse("--node", name, "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(strlen(cfg.node), 63);
  name[63] = 'n';
  name[64] = '\0';
  CHECK_EQ_INT(parse("--node", name, "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "--node: expected a name of 1..63 bytes");
  memset(cookie, 'c', sizeof cookie);
  cookie[255] = '\0';
  CHECK_EQ_INT(parse("--cookie", cookie, "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(strlen(cfg.cookie), 255);
  cookie[255] = 'c';
  cookie[256] = '\0';
  CHECK_EQ_INT(parse("--cookie", cookie, "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "--cookie: expected a secret of 1..255 bytes");

  /* A long message is cut to errlen and stays terminated. */
  reset();
  char *argv[] = {strdup("moonroom"), strdup("--listen"), strdup("bad"),
                  strdup("app.lua"), NULL};
  char small[12];
  memset(small, 'Z', sizeof small);
  mr_config c;
  CHECK_EQ_INT(mr_config_parse(&c, 4, argv, small, sizeof small, stdout),
               MR_CONFIG_USAGE);
  CHECK_STR(small, "--listen: e");
  for (int i = 0; i < 4; i++)
    free(argv[i]);
}

/* A required value that is missing: the message should say so and name the
 * option. */
static void test_missing_value(void) {
  CHECK_EQ_INT(parse("app.lua", "--listen", NULL), MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "--listen");
  CHECK_STR(err, "--listen: missing value");
  CHECK_EQ_INT(parse("app.lua", "--max-message", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "--max-message: missing value");
}

/* ---- unknown options and the script argument ---- */

static void test_args(void) {
  CHECK_EQ_INT(parse("--bogus", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "unknown option '--bogus' (see --help)");
  CHECK_EQ_INT(parse("app.lua", "--bogus=1", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "unknown option '--bogus=1' (see --help)");
  CHECK_EQ_INT(parse("-x", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "unknown option '-x' (see --help)");
  /* Unknown short options bundled in one word: the message must name the
   * option, not whatever argv word came before it. */
  CHECK_EQ_INT(parse("-xy", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "'-x");
  /* A flag given a value. */
  CHECK_EQ_INT(parse("--no-reload=yes", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "--no-reload");

  CHECK_EQ_INT(parse(NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "missing SCRIPT (see --help)");
  CHECK_EQ_INT(parse("--no-reload", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "missing SCRIPT (see --help)");
  CHECK_EQ_INT(parse("a.lua", "b.lua", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "expected exactly one SCRIPT (see --help)");
  CHECK_EQ_INT(parse("a.lua", "--no-reload", "b.lua", NULL), MR_CONFIG_USAGE);
  CHECK_STR(err, "expected exactly one SCRIPT (see --help)");
  CHECK_EQ_INT(out_len, 0);
}

static void test_help_version(void) {
  CHECK_EQ_INT(parse("--help", NULL), MR_CONFIG_EXIT);
  CHECK_STR(err, "");
  CHECK(out_text != NULL &&
        strncmp(out_text, "Usage: moonroom [options] SCRIPT\n", 33) == 0);
  static const char *const opts[] = {"--listen HOST:PORT",
                                     "--max-message BYTES",
                                     "--max-backpressure BYTES",
                                     "--max-head BYTES",
                                     "--max-connections N",
                                     "--idle-timeout SECONDS",
                                     "--ping-interval SECONDS",
                                     "--handshake-timeout SECONDS",
                                     "--no-reload",
                                     "--log-level LEVEL",
                                     "--cluster-listen HOST:PORT",
                                     "--peer HOST:PORT",
                                     "--node NAME",
                                     "--cookie SECRET",
                                     "--admin-listen HOST:PORT",
                                     "--help",
                                     "--version",
                                     "MOONROOM_COOKIE",
                                     "(default 127.0.0.1:8080)"};
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
    CHECK_CONTAINS(out_text, opts[i]);
  CHECK(out_len > 0 && out_text[out_len - 1] == '\n');

  /* --help wins over a script and other options given before it. */
  CHECK_EQ_INT(parse("--no-reload", "app.lua", "--help", NULL), MR_CONFIG_EXIT);
  CHECK_CONTAINS(out_text, "Usage: moonroom");

  CHECK_EQ_INT(parse("--version", NULL), MR_CONFIG_EXIT);
  CHECK_STR(out_text, "moonroom " MOONROOM_VERSION "\n");
  CHECK_STR(err, "");
  CHECK_EQ_INT(parse("app.lua", "--version", NULL), MR_CONFIG_EXIT);
  CHECK_STR(out_text, "moonroom " MOONROOM_VERSION "\n");

  /* Through a real FILE from tmpfile(), as the brief's callers may do. */
  reset();
  FILE *f = tmpfile();
  if (CHECK(f != NULL)) {
    char *argv[] = {strdup("moonroom"), strdup("--version"), NULL};
    mr_config c;
    char e[64];
    CHECK_EQ_INT(mr_config_parse(&c, 2, argv, e, sizeof e, f), MR_CONFIG_EXIT);
    rewind(f);
    char line[64] = {0};
    CHECK(fgets(line, sizeof line, f) != NULL);
    CHECK_STR(line, "moonroom " MOONROOM_VERSION "\n");
    fclose(f);
    free(argv[0]);
    free(argv[1]);
  }
}

/* The whole --help text, byte for byte, so that any change to its wording,
 * defaults or layout is a deliberate one: README.md's command-line table
 * documents the same options and must be kept in step. */
static const char help_golden[] =
    "Usage: moonroom [options] SCRIPT\n"
    "       moonroom new DIR\n"
    "\n"
    "Runs a WebSocket room server whose behaviour is the Lua handler SCRIPT.\n"
    "`moonroom new DIR` writes a new app's handler, spec and .busted to DIR.\n"
    "\n"
    "Options:\n"
    "  --listen HOST:PORT        address to accept WebSocket clients on\n"
    "                            (default 127.0.0.1:8080)\n"
    "  --max-message BYTES       largest message a client may send; larger\n"
    "                            ones close the connection with 1009\n"
    "                            (default 1048576)\n"
    "  --max-backpressure BYTES  unsent bytes allowed per connection before\n"
    "                            it is closed with 1008 (default 1048576)\n"
    "  --max-head BYTES          largest HTTP request head; larger gets 431\n"
    "                            (default 8192)\n"
    "  --max-connections N       connections accepted at once, 0 = only the\n"
    "                            open-file limit (default 0)\n"
    "  --idle-timeout SECONDS    close a client that sends nothing for this\n"
    "                            long, 0 = never (default 120)\n"
    "  --ping-interval SECONDS   ping every client this often and close one\n"
    "                            that does not answer, 0 = never (default 30)\n"
    "  --handshake-timeout SECONDS  time allowed for the HTTP upgrade\n"
    "                            (default 10)\n"
    "  --no-reload               do not watch SCRIPT for changes\n"
    "  --log-level LEVEL         debug, info, warn or error (default info)\n"
    "  --cluster-listen HOST:PORT  accept links from other nodes here\n"
    "  --peer HOST:PORT          dial this node (repeatable)\n"
    "  --node NAME               this node's name (default: HOSTNAME-PID)\n"
    "  --cookie SECRET           shared cluster secret (or MOONROOM_COOKIE)\n"
    "  --admin-listen HOST:PORT  serve /metrics, /healthz and /readyz over\n"
    "                            plain HTTP here (default off)\n"
    "  --max-body BYTES          largest plain HTTP request body; larger gets\n"
    "                            413 (default 1048576)\n"
    "  --request-timeout SECONDS  time allowed for a whole plain HTTP\n"
    "                            request, head and body; later gets 408\n"
    "                            (default 10)\n"
    "  --keepalive-timeout SECONDS  close an idle keep-alive HTTP connection\n"
    "                            after this long (default 5)\n"
    "  --lua-memory-limit MB     Lua heap limit: a handler that leaves the\n"
    "                            heap over it after a full collection is\n"
    "                            refused (its connection closed 1011), 0 = no\n"
    "                            limit (default 1024)\n"
    "  --handler-timeout MS      interrupt a handler that runs longer than\n"
    "                            this (exit 4 if it cannot be), 0 = never\n"
    "                            (default 5000)\n"
    "  --compression off|on      negotiate permessage-deflate (RFC 7692) with\n"
    "                            clients that offer it (default off)\n"
    "  --compression-threshold BYTES  messages shorter than this are sent\n"
    "                            uncompressed (default 128)\n"
    "  --compression-level 1..9  zlib compression level: 1 fastest, 9\n"
    "                            smallest (default 1)\n"
    "  --compression-window 9..15  the server's deflate window, 2^N bytes\n"
    "                            (server_max_window_bits) (default 15)\n"
    "  --max-presence-meta BYTES  largest encoded meta of one ws.track entry\n"
    "                            (default 512)\n"
    "  --max-connections-per-ip N  connections one IPv4 address or IPv6 /64\n"
    "                            may hold, from accept to close; more get\n"
    "                            429, 0 = no limit (default 0)\n"
    "  --max-messages-per-second N  data messages a connection may send a\n"
    "                            second before it is closed with 1008, 0 = no\n"
    "                            limit (default 0)\n"
    "  --message-burst N         messages a connection may send at once\n"
    "                            within --max-messages-per-second, 0 = one\n"
    "                            second's worth (default 0)\n"
    "  --allow-origin LIST       comma-separated origins\n"
    "                            (https://example.com) browser upgrades may\n"
    "                            come from, * = any; others get 403 (default\n"
    "                            any)\n"
    "  --tls-cert FILE           serve TLS (wss://, https://) on --listen\n"
    "                            with this certificate chain; needs --tls-key\n"
    "                            (default off)\n"
    "  --tls-key FILE            the private key of --tls-cert\n"
    "  --cluster-tls-cert FILE   run cluster links over TLS with this\n"
    "                            certificate; needs --cluster-tls-key and\n"
    "                            --cluster-tls-ca (default off)\n"
    "  --cluster-tls-key FILE    the private key of --cluster-tls-cert\n"
    "  --cluster-tls-ca FILE     the CA that signs every node's cluster\n"
    "                            certificate\n"
    "  --engine URL              run rooms across nodes through Redis at\n"
    "                            redis://[:PASSWORD@]HOST:PORT[/DB] instead\n"
    "                            of the mesh (default off)\n"
    "  --redis-password SECRET   the Redis password (or the URL's, or\n"
    "                            MOONROOM_REDIS_PASSWORD)\n"
    "  --redis-prefix PREFIX     the prefix of every Redis channel and key of\n"
    "                            this fleet (default moonroom)\n"
    "  --trace-latency FILE      write when every broadcast frame was read,\n"
    "                            queued and written to FILE, one line a frame\n"
    "                            (for the benchmark's latency breakdown;\n"
    "                            default off)\n"
    "  --help                    print this help and exit\n"
    "  --version                 print the version and exit\n";

static void test_help_text(void) {
  CHECK_EQ_INT(parse("--help", NULL), MR_CONFIG_EXIT);
  CHECK_STR(out_text, help_golden);
}

/* ---- clustering ---- */

static void test_cluster(void) {
  unsetenv("MOONROOM_COOKIE");
  CHECK_EQ_INT(parse("--peer", "10.0.0.2:7000", "app.lua", NULL),
               MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "MOONROOM_COOKIE");
  CHECK_CONTAINS(err, "--cookie");
  CHECK_EQ_INT(parse("--cluster-listen", "0.0.0.0:7000", "app.lua", NULL),
               MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "MOONROOM_COOKIE");

  /* The cookie from the environment. */
  setenv("MOONROOM_COOKIE", "from-env", 1);
  CHECK_EQ_INT(parse("--cluster-listen", "0.0.0.0:7000", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.cookie, "from-env");
  CHECK_EQ_INT(cfg.cluster, 1);
  CHECK_EQ_INT(cfg.has_cluster_listen, 1);
  CHECK_EQ_INT(cfg.npeers, 0);
  /* --cookie beats the environment. */
  CHECK_EQ_INT(parse("--peer", "h:1", "--cookie", "flag", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.cookie, "flag");
  CHECK_EQ_INT(cfg.has_cluster_listen, 0);
  /* Without clustering the environment is not read. */
  CHECK_EQ_INT(parse("app.lua", NULL), MR_CONFIG_RUN);
  CHECK_STR(cfg.cookie, "");
  /* An empty variable is no secret. */
  setenv("MOONROOM_COOKIE", "", 1);
  CHECK_EQ_INT(parse("--peer", "h:1", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "MOONROOM_COOKIE");
  /* The variable is bound by the same 255-byte limit as --cookie. */
  char longenv[300];
  memset(longenv, 'e', sizeof longenv);
  longenv[255] = '\0';
  setenv("MOONROOM_COOKIE", longenv, 1);
  CHECK_EQ_INT(parse("--peer", "h:1", "app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(strlen(cfg.cookie), 255);
  longenv[255] = 'e';
  longenv[256] = '\0';
  setenv("MOONROOM_COOKIE", longenv, 1);
  CHECK_EQ_INT(parse("--peer", "h:1", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_STR(cfg.cookie, "");
  unsetenv("MOONROOM_COOKIE");

  /* Repeated --peer keeps every address, in order. */
  CHECK_EQ_INT(parse("--peer", "10.0.0.2:7000", "--peer", "[fd00::3]:7001",
                     "--cookie", "k", "--peer=node4.local:7002", "app.lua",
                     NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.npeers, 3);
  CHECK_STR(cfg.peers[0].host, "10.0.0.2");
  CHECK_EQ_INT(cfg.peers[0].port, 7000);
  CHECK_STR(cfg.peers[1].host, "fd00::3");
  CHECK_EQ_INT(cfg.peers[1].port, 7001);
  CHECK_STR(cfg.peers[2].host, "node4.local");
  CHECK_EQ_INT(cfg.peers[2].port, 7002);
  CHECK_EQ_INT(cfg.cluster, 1);
  CHECK_EQ_INT(cfg.has_cluster_listen, 0);

  /* At most MR_MAX_PEERS. */
  static char hosts[MR_MAX_PEERS + 1][32];
  const char *v[2 * (MR_MAX_PEERS + 1) + 3];
  int n = 0;
  for (int i = 0; i <= MR_MAX_PEERS; i++) {
    snprintf(hosts[i], sizeof hosts[i], "10.1.0.%d:%d", i, 7000 + i);
    v[n++] = "--peer";
    v[n++] = hosts[i];
  }
  v[n++] = "--cookie";
  v[n++] = "k";
  v[n++] = "app.lua";
  CHECK_EQ_INT(parse_v(n, v), MR_CONFIG_USAGE);
  CHECK_STR(err, "--peer: at most 64 peers");
  /* Exactly MR_MAX_PEERS is fine: drop the last --peer pair. */
  v[2 * MR_MAX_PEERS] = "--cookie";
  v[2 * MR_MAX_PEERS + 1] = "k";
  v[2 * MR_MAX_PEERS + 2] = "app.lua";
  CHECK_EQ_INT(parse_v(2 * MR_MAX_PEERS + 3, v), MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.npeers, MR_MAX_PEERS);
  CHECK_STR(cfg.peers[MR_MAX_PEERS - 1].host, "10.1.0.63");
  CHECK_EQ_INT(cfg.peers[MR_MAX_PEERS - 1].port, 7063);
}

/* ---- the option table ----
 *
 * These walk mr_options[] rather than naming options, so every row, one
 * added later included, gets the same checks, and a row the parser cannot
 * reach fails here. test_table_shape pins which rows exist. */

/* The field that row o fills in the last parse's cfg. */
static const char *field_of(const mr_option *o) {
  return (const char *)&cfg + o->off;
}

static unsigned long long load_uint(const mr_option *o) {
  if (o->size == sizeof(uint64_t)) {
    uint64_t x;
    memcpy(&x, field_of(o), sizeof x);
    return x;
  }
  uint32_t x;
  memcpy(&x, field_of(o), sizeof x);
  return x;
}

static int load_int(const mr_option *o) {
  int x;
  memcpy(&x, field_of(o), sizeof x);
  return x;
}

static int row_takes_value(const mr_option *o) {
  return o->type != MR_OPT_OFF && o->type != MR_OPT_HELP &&
         o->type != MR_OPT_VERSION;
}

/* Parses "--NAME VALUE" (or "--NAME" when value is NULL) with a cookie given
 * first, so that the cluster options can run and --cookie's own row still
 * has the last word. */
static int parse_row(const mr_option *o, const char *value) {
  char opt[64];
  snprintf(opt, sizeof opt, "--%s", o->name);
  /* The TLS files go together: the others are given first, and the row's
   * own value comes last and wins. */
  if (strstr(o->name, "tls-") && value)
    return parse("--cookie", "k", "--peer", "127.0.0.1:1", "--tls-cert", "c",
                 "--tls-key", "k", "--cluster-tls-cert", "c",
                 "--cluster-tls-key", "k", "--cluster-tls-ca", "a", opt, value,
                 "app.lua", NULL);
  /* The Redis options need --engine, and --engine excludes the mesh. */
  if (strncmp(o->name, "redis-", 6) == 0 && value)
    return parse("--engine", "redis://127.0.0.1:6379", opt, value, "app.lua",
                 NULL);
  if (strcmp(o->name, "engine") == 0 && value)
    return parse(opt, value, "app.lua", NULL);
  if (!value)
    return parse("--cookie", "k", opt, "app.lua", NULL);
  return parse("--cookie", "k", opt, value, "app.lua", NULL);
}

/* Expects value to be refused with exactly "--NAME: expected EXPECT, got
 * 'VALUE'". */
static void check_row_bad(const mr_option *o, const char *value) {
  char want[256];
  snprintf(want, sizeof want, "--%s: expected %s, got '%s'", o->name, o->expect,
           value);
  int rc = parse_row(o, value);
  if (!test_record(rc == MR_CONFIG_USAGE && strcmp(err, want) == 0, __FILE__,
                   __LINE__, "row rejects a bad value"))
    fprintf(stderr, "  --%s %s: got %d \"%s\", expected \"%s\"\n", o->name,
            value, rc, err, want);
}

/* The table's shape: the documented options in --help order, each row
 * complete, and each field the right kind and size for its type. */
static void test_table_shape(void) {
  static const char *const names[] = {"listen",
                                      "max-message",
                                      "max-backpressure",
                                      "max-head",
                                      "max-connections",
                                      "idle-timeout",
                                      "ping-interval",
                                      "handshake-timeout",
                                      "no-reload",
                                      "log-level",
                                      "cluster-listen",
                                      "peer",
                                      "node",
                                      "cookie",
                                      "admin-listen",
                                      "max-body",
                                      "request-timeout",
                                      "keepalive-timeout",
                                      "lua-memory-limit",
                                      "handler-timeout",
                                      "compression",
                                      "compression-threshold",
                                      "compression-level",
                                      "compression-window",
                                      "max-presence-meta",
                                      "max-connections-per-ip",
                                      "max-messages-per-second",
                                      "message-burst",
                                      "allow-origin",
                                      "tls-cert",
                                      "tls-key",
                                      "cluster-tls-cert",
                                      "cluster-tls-key",
                                      "cluster-tls-ca",
                                      "engine",
                                      "redis-password",
                                      "redis-prefix",
                                      "trace-latency",
                                      "help",
                                      "version"};
  size_t n = sizeof names / sizeof names[0];
  CHECK_EQ_INT(mr_noptions, n);
  for (size_t i = 0; i < mr_noptions && i < n; i++)
    CHECK_STR(mr_options[i].name, names[i]);
  for (size_t i = 0; i < mr_noptions; i++) {
    const mr_option *o = &mr_options[i];
    CHECK(o->help && *o->help);
    CHECK((o->arg != NULL) == row_takes_value(o));
    CHECK((o->expect != NULL) == row_takes_value(o));
    CHECK(o->off + o->size <= sizeof(mr_config));
    switch (o->type) {
    case MR_OPT_UINT:
      CHECK(o->size == sizeof(uint64_t) || o->size == sizeof(uint32_t));
      CHECK(o->min <= o->max);
      CHECK(o->size == sizeof(uint64_t) || o->max <= UINT32_MAX);
      break;
    case MR_OPT_ADDR:
      CHECK_EQ_INT(o->size, sizeof(mr_addr));
      break;
    case MR_OPT_ADDR_LIST:
      CHECK(o->size >= sizeof(mr_addr) && o->size % sizeof(mr_addr) == 0);
      CHECK(o->count_off + sizeof(int) <= sizeof(mr_config));
      CHECK(o->def == NULL);
      break;
    case MR_OPT_STRING:
      CHECK(o->size >= 2);
      break;
    case MR_OPT_LOG_LEVEL:
    case MR_OPT_OFF:
    case MR_OPT_ONOFF:
      CHECK_EQ_INT(o->size, sizeof(int));
      break;
    case MR_OPT_HELP:
    case MR_OPT_VERSION:
      CHECK(o->def == NULL);
      break;
    }
    for (size_t j = 0; j < i; j++)
      CHECK(strcmp(o->name, mr_options[j].name) != 0);
  }
}

static void check_uint_row(const mr_option *o) {
  char v[32];
  unsigned long long ends[2] = {o->min, o->max};
  for (int k = 0; k < 2; k++) {
    snprintf(v, sizeof v, "%llu", ends[k]);
    CHECK_EQ_INT(parse_row(o, v), MR_CONFIG_RUN);
    CHECK(load_uint(o) == ends[k]);
  }
  snprintf(v, sizeof v, "%llu", o->max + 1);
  check_row_bad(o, v);
  if (o->min > 0) {
    snprintf(v, sizeof v, "%llu", o->min - 1);
    check_row_bad(o, v);
  }
  check_row_bad(o, "-1"); /* never wrapped around into a huge value */
  check_row_bad(o, "");
  check_row_bad(o, "12k");
}

static void check_addr_list_row(const mr_option *o) {
  size_t cap = o->size / sizeof(mr_addr);
  static char addrs[MAXARGS][64];
  const char *v[MAXARGS];
  char opt[64];
  snprintf(opt, sizeof opt, "--%s", o->name);
  int n = 0;
  v[n++] = "--cookie";
  v[n++] = "k";
  for (size_t i = 0; i <= cap && n + 3 <= MAXARGS; i++) {
    snprintf(addrs[i], sizeof addrs[i], "[fd00::%zx]:%zu", i, 1000 + i);
    v[n++] = opt;
    v[n++] = addrs[i];
  }
  if (!CHECK(n == 2 + 2 * ((int)cap + 1)))
    return;
  /* Exactly cap values fill the array in order and count them. */
  v[n - 2] = "app.lua";
  CHECK_EQ_INT(parse_v(n - 1, v), MR_CONFIG_RUN);
  const mr_addr *list = (const mr_addr *)field_of(o);
  int count;
  memcpy(&count, (const char *)&cfg + o->count_off, sizeof count);
  CHECK_EQ_INT(count, cap);
  CHECK_EQ_INT(list[cap - 1].port, 1000 + cap - 1);
  /* One more is refused, naming the option. */
  v[n - 2] = opt;
  v[n] = "app.lua";
  CHECK_EQ_INT(parse_v(n + 1, v), MR_CONFIG_USAGE);
  char want[128];
  snprintf(want, sizeof want, "--%s: at most %zu %ss", o->name, cap, o->name);
  CHECK_STR(err, want);
  check_row_bad(o, "h:-1");
  check_row_bad(o, "h:65536");
}

static void check_string_row(const mr_option *o) {
  char *s = malloc(o->size + 1);
  if (!CHECK(s != NULL))
    return;
  memset(s, 's', o->size);
  /* --allow-origin's value must also be a list of origins: one long one. */
  if (strcmp(o->name, "allow-origin") == 0)
    memcpy(s, "http://", 7);
  /* --engine's must be a URL: a database number padded with zeros. */
  if (strcmp(o->name, "engine") == 0) {
    memset(s, '0', o->size);
    memcpy(s, "redis://h:1/", 12);
  }
  s[o->size - 1] = '\0';
  CHECK_EQ_INT(parse_row(o, s), MR_CONFIG_RUN);
  CHECK_STR(field_of(o), s);
  char want[128];
  snprintf(want, sizeof want, "--%s: expected %s of 1..%zu bytes", o->name,
           o->expect, o->size - 1);
  s[o->size - 1] = 's';
  s[o->size] = '\0';
  CHECK_EQ_INT(parse_row(o, s), MR_CONFIG_USAGE);
  CHECK_STR(err, want); /* the value itself, maybe a secret, is not echoed */
  CHECK_EQ_INT(parse_row(o, ""), MR_CONFIG_USAGE);
  CHECK_STR(err, want);
  free(s);
}

/* Parses one valid and at least one invalid value for row o, and checks that
 * the valid one lands in the row's field. There is no default case, so
 * -Wswitch makes a new option type add its check here. */
static void check_row(const mr_option *o) {
  char opt[64];
  snprintf(opt, sizeof opt, "--%s=x", o->name);
  switch (o->type) {
  case MR_OPT_UINT:
    check_uint_row(o);
    break;
  case MR_OPT_ADDR:
    CHECK_EQ_INT(parse_row(o, "[::1]:65535"), MR_CONFIG_RUN);
    CHECK_STR(((const mr_addr *)field_of(o))->host, "::1");
    CHECK_EQ_INT(((const mr_addr *)field_of(o))->port, 65535);
    check_row_bad(o, "h:-1"); /* signed ports are refused */
    check_row_bad(o, "h:65536");
    check_row_bad(o, "nocolon");
    break;
  case MR_OPT_ADDR_LIST:
    check_addr_list_row(o);
    break;
  case MR_OPT_STRING:
    check_string_row(o);
    break;
  case MR_OPT_LOG_LEVEL: {
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
      CHECK_EQ_INT(parse_row(o, levels[i]), MR_CONFIG_RUN);
      CHECK_EQ_INT(load_int(o), mr_log_parse_level(levels[i]));
    }
    check_row_bad(o, "verbose");
    break;
  }
  case MR_OPT_OFF:
    CHECK_EQ_INT(parse_row(o, NULL), MR_CONFIG_RUN);
    CHECK_EQ_INT(load_int(o), 0);
    CHECK_EQ_INT(parse(opt, "app.lua", NULL), MR_CONFIG_USAGE);
    CHECK_CONTAINS(err, opt); /* a flag takes no value */
    break;
  case MR_OPT_ONOFF:
    CHECK_EQ_INT(parse_row(o, "on"), MR_CONFIG_RUN);
    CHECK_EQ_INT(load_int(o), 1);
    CHECK_EQ_INT(parse_row(o, "off"), MR_CONFIG_RUN);
    CHECK_EQ_INT(load_int(o), 0);
    check_row_bad(o, "yes");
    check_row_bad(o, "ON");
    check_row_bad(o, "");
    break;
  case MR_OPT_HELP:
  case MR_OPT_VERSION:
    CHECK_EQ_INT(parse_row(o, NULL), MR_CONFIG_EXIT);
    CHECK_CONTAINS(out_text, o->type == MR_OPT_HELP ? "Usage: moonroom"
                                                    : MOONROOM_VERSION);
    CHECK_EQ_INT(parse(opt, "app.lua", NULL), MR_CONFIG_USAGE);
    CHECK_CONTAINS(err, opt);
    break;
  }
}

static void test_table_rows(void) {
  unsetenv("MOONROOM_COOKIE");
  for (size_t i = 0; i < mr_noptions; i++)
    check_row(&mr_options[i]);
}

/* The defaults come from the table: a row's default, given explicitly,
 * leaves its field as a bare command line does, and a row without one
 * leaves its field zero (a flag's field one). */
static void test_table_defaults(void) {
  static mr_config defaults;
  CHECK_EQ_INT(parse("app.lua", NULL), MR_CONFIG_RUN);
  defaults = cfg;
  for (size_t i = 0; i < mr_noptions; i++) {
    const mr_option *o = &mr_options[i];
    const char *dflt = (const char *)&defaults + o->off;
    if (o->def) {
      CHECK_EQ_INT(parse_row(o, o->def), MR_CONFIG_RUN);
      if (!CHECK_MEM(field_of(o), dflt, o->size))
        fprintf(stderr, "  --%s default is not '%s'\n", o->name, o->def);
    } else if (o->type == MR_OPT_OFF) {
      int on;
      memcpy(&on, dflt, sizeof on);
      CHECK_EQ_INT(on, 1);
    } else {
      size_t nonzero = 0;
      for (size_t j = 0; j < o->size; j++)
        nonzero += dflt[j] != 0;
      CHECK_EQ_INT(nonzero, 0);
    }
  }
}

/* Copies s with each run of spaces and newlines made one space, so that a
 * wrapped --help entry can be compared with its row's help text. */
static void squash(const char *s, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int blank = s[i] == ' ' || s[i] == '\n';
    if (!blank || (o > 0 && out[o - 1] != ' '))
      out[o++] = blank ? ' ' : s[i];
  }
  out[o] = '\0';
}

/* The generated --help has an entry for every row, with its value name,
 * its whole help text and its default, in lines of at most 80 columns. */
static void test_table_help(void) {
  CHECK_EQ_INT(parse("--help", NULL), MR_CONFIG_EXIT);
  if (!CHECK(out_text != NULL))
    return;
  for (size_t i = 0; i < mr_noptions; i++) {
    const mr_option *o = &mr_options[i];
    char head[64], entry[512], want[160];
    snprintf(head, sizeof head, "\n  --%s%s%s ", o->name, o->arg ? " " : "",
             o->arg ? o->arg : "");
    const char *start = strstr(out_text, head);
    if (!test_record(start != NULL, __FILE__, __LINE__, "--help has the row"))
      fprintf(stderr, "  no \"%s\" in --help\n", head + 1);
    if (!start)
      continue;
    const char *end = strstr(start + 1, "\n  --");
    size_t len = end ? (size_t)(end - start) : strlen(start);
    if (!CHECK(len < sizeof entry))
      continue;
    squash(start, len, entry);
    CHECK_CONTAINS(entry, o->help);
    if (o->def) {
      snprintf(want, sizeof want, " (default %s)", o->def);
      CHECK_CONTAINS(entry, want);
    }
  }
  for (const char *line = out_text; *line;) {
    size_t len = strcspn(line, "\n");
    CHECK(len <= 80);
    line += len + (line[len] == '\n');
  }
}

/* ---- mr_addr_parse ---- */

static void check_addr(const char *s, const char *host, int port) {
  mr_addr a;
  memset(&a, 0, sizeof a);
  int rc = mr_addr_parse(s, &a);
  if (!test_record(rc == 0, __FILE__, __LINE__, "mr_addr_parse accepts"))
    fprintf(stderr, "  \"%s\": got %d\n", s, rc);
  else if (!test_record(strcmp(a.host, host) == 0 && a.port == port, __FILE__,
                        __LINE__, "mr_addr_parse result"))
    fprintf(stderr, "  \"%s\": got \"%s\" %d, expected \"%s\" %d\n", s, a.host,
            a.port, host, port);
}

static void check_addr_bad(const char *s) {
  mr_addr a;
  strcpy(a.host, "untouched");
  a.port = 4242;
  int rc = mr_addr_parse(s, &a);
  if (!test_record(rc == MR_EINVAL, __FILE__, __LINE__,
                   "mr_addr_parse rejects"))
    fprintf(stderr, "  \"%s\": got %d (\"%s\" %d)\n", s, rc, a.host, a.port);
  /* A rejected address leaves the previous value alone. */
  CHECK(strcmp(a.host, "untouched") == 0 && a.port == 4242);
}

/* ---- TLS files ---- */

static void test_tls(void) {
  CHECK_EQ_INT(parse("app.lua", NULL), MR_CONFIG_RUN);
  CHECK_STR(cfg.tls_cert, "");
  CHECK_STR(cfg.cluster_tls_ca, "");
  CHECK_EQ_INT(
      parse("--tls-cert", "c.pem", "--tls-key", "k.pem", "app.lua", NULL),
      MR_CONFIG_RUN);
  CHECK_STR(cfg.tls_cert, "c.pem");
  CHECK_STR(cfg.tls_key, "k.pem");
  CHECK_EQ_INT(parse("--tls-cert", "c.pem", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "--tls-cert and --tls-key go together");
  CHECK_EQ_INT(parse("--tls-key", "k.pem", "app.lua", NULL), MR_CONFIG_USAGE);
  CHECK_EQ_INT(parse("--cluster-tls-cert", "c", "--cluster-tls-key", "k",
                     "--cluster-tls-ca", "ca", "--peer", "127.0.0.1:1",
                     "--cookie", "s", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.cluster_tls_cert, "c");
  CHECK_STR(cfg.cluster_tls_key, "k");
  CHECK_STR(cfg.cluster_tls_ca, "ca");
  CHECK_EQ_INT(parse("--cluster-tls-cert", "c", "--cluster-tls-key", "k",
                     "--peer", "127.0.0.1:1", "--cookie", "s", "app.lua", NULL),
               MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "go together");
  CHECK_EQ_INT(parse("--cluster-tls-cert", "c", "--cluster-tls-key", "k",
                     "--cluster-tls-ca", "ca", "app.lua", NULL),
               MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "needs --cluster-listen or --peer");
  CHECK_EQ_INT(parse("--tls-cert", "", "--tls-key", "k", "app.lua", NULL),
               MR_CONFIG_USAGE);
}

/* ---- the Redis engine ---- */

static void check_url(const char *s, const char *host, int port, unsigned db,
                      const char *user, const char *password) {
  mr_redis_url u;
  int rc = mr_redis_url_parse(s, &u);
  if (!test_record(rc == 0 && strcmp(u.host, host) == 0 && u.port == port &&
                       u.db == db && strcmp(u.user, user) == 0 &&
                       strcmp(u.password, password) == 0,
                   __FILE__, __LINE__, "redis URL parses"))
    fprintf(stderr, "  %s: rc %d host '%s' port %d db %u user '%s' pw '%s'\n",
            s, rc, u.host, u.port, u.db, u.user, u.password);
}

static void check_url_bad(const char *s) {
  mr_redis_url u;
  memset(&u, 'x', sizeof u);
  int rc = mr_redis_url_parse(s, &u);
  if (!test_record(rc == MR_EINVAL && u.host[0] == '\0' &&
                       u.password[0] == '\0',
                   __FILE__, __LINE__, "bad redis URL refused"))
    fprintf(stderr, "  %s: rc %d\n", s, rc);
}

static void test_redis_url(void) {
  check_url("redis://127.0.0.1:6379", "127.0.0.1", 6379, 0, "", "");
  check_url("redis://127.0.0.1", "127.0.0.1", 6379, 0, "", "");
  check_url("redis://localhost:7000/3", "localhost", 7000, 3, "", "");
  check_url("redis://[::1]:7000/15", "::1", 7000, 15, "", "");
  check_url("redis://[::1]", "::1", 6379, 0, "", "");
  check_url("redis://:s3cret@h:1", "h", 1, 0, "", "s3cret");
  check_url("redis://ann:s3cret@h:1/2", "h", 1, 2, "ann", "s3cret");
  check_url("redis://s3cret@h:1", "h", 1, 0, "", "s3cret");
  /* A password may hold '@', ':' and '/': the userinfo ends at the last
   * '@'. */
  check_url("redis://:a@b:c/d@h:1/0", "h", 1, 0, "", "a@b:c/d");
  check_url("redis://h:1/65535", "h", 1, 65535, "", "");
  check_url_bad("");
  check_url_bad("h:6379");
  check_url_bad("http://h:6379");
  check_url_bad("rediss://h:6379");
  check_url_bad("redis://");
  check_url_bad("redis://:6379");
  check_url_bad("redis://h:0");
  check_url_bad("redis://h:65536");
  check_url_bad("redis://h:1/");
  check_url_bad("redis://h:1/x");
  check_url_bad("redis://h:1/-1");
  check_url_bad("redis://h:1/65536");
  check_url_bad("redis://h:1/1/2");
  check_url_bad("redis://:@h:1");
  check_url_bad("redis://[::1:1");
}

static void test_redis_options(void) {
  unsetenv("MOONROOM_REDIS_PASSWORD");
  CHECK_EQ_INT(parse("app.lua", NULL), MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.redis, 0);
  CHECK_STR(cfg.redis_prefix, "moonroom");
  CHECK_EQ_INT(parse("--engine", "redis://10.0.0.1:7000/2", "--redis-prefix",
                     "app1", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_EQ_INT(cfg.redis, 1);
  CHECK_STR(cfg.redis_url.host, "10.0.0.1");
  CHECK_EQ_INT(cfg.redis_url.port, 7000);
  CHECK_EQ_INT(cfg.redis_url.db, 2);
  CHECK_STR(cfg.redis_prefix, "app1");
  CHECK_STR(cfg.redis_password, "");
  /* The password: the option, else the URL's, else the environment. */
  CHECK_EQ_INT(parse("--engine", "redis://:url@h:1", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.redis_password, "url");
  CHECK_EQ_INT(parse("--engine", "redis://:url@h:1", "--redis-password", "opt",
                     "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.redis_password, "opt");
  setenv("MOONROOM_REDIS_PASSWORD", "env", 1);
  CHECK_EQ_INT(parse("--engine", "redis://:url@h:1", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.redis_password, "url");
  CHECK_EQ_INT(parse("--engine", "redis://h:1", "app.lua", NULL),
               MR_CONFIG_RUN);
  CHECK_STR(cfg.redis_password, "env");
  unsetenv("MOONROOM_REDIS_PASSWORD");
  /* Usage errors, which never quote the URL (it may hold the password). */
  CHECK_EQ_INT(parse("--engine", "redis://:pw@h:x", "app.lua", NULL),
               MR_CONFIG_USAGE);
  CHECK_STR(err, "--engine: expected redis://[:PASSWORD@]HOST:PORT[/DB] (DB "
                 "0..65535)");
  CHECK_EQ_INT(parse("--engine", "redis://h:1", "--peer", "127.0.0.1:1",
                     "--cookie", "k", "app.lua", NULL),
               MR_CONFIG_USAGE);
  CHECK_CONTAINS(err,
                 "--engine and --cluster-listen/--peer exclude each other");
  CHECK_EQ_INT(parse("--engine", "redis://h:1", "--cluster-listen",
                     "127.0.0.1:1", "--cookie", "k", "app.lua", NULL),
               MR_CONFIG_USAGE);
  CHECK_CONTAINS(err, "exclude each other");
  CHECK_EQ_INT(parse("--redis-password", "pw", "app.lua", NULL),
               MR_CONFIG_USAGE);
  CHECK_STR(err, "--redis-password needs --engine");
}

static void test_addr(void) {
  check_addr("127.0.0.1:8080", "127.0.0.1", 8080);
  check_addr("localhost:0", "localhost", 0);
  check_addr("h:65535", "h", 65535);
  check_addr("[::1]:9000", "::1", 9000);
  check_addr("[::]:1", "::", 1);
  check_addr("[fe80::1%eth0]:443", "fe80::1%eth0", 443);
  check_addr("[2001:db8::42]:65535", "2001:db8::42", 65535);
  check_addr("example.com:80", "example.com", 80);
  check_addr("::1:80", "::1", 80); /* unbracketed: the last colon splits */

  /* The host buffer holds 255 bytes and a NUL. */
  char addr[300], want[300];
  memset(addr, 'h', sizeof addr);
  strcpy(addr + 255, ":1");
  memcpy(want, addr, 255);
  want[255] = '\0';
  check_addr(addr, want, 1);
  memset(addr, 'h', sizeof addr);
  strcpy(addr + 256, ":1");
  check_addr_bad(addr);
  addr[0] = '[';
  strcpy(addr + 256, "]:1"); /* 255 bytes between the brackets */
  check_addr(addr, want, 1);
  addr[0] = '[';
  memset(addr + 1, 'h', 256);
  strcpy(addr + 257, "]:1"); /* 256 bytes between the brackets */
  check_addr_bad(addr);

  check_addr_bad("");
  check_addr_bad("8080");
  check_addr_bad("host");
  check_addr_bad(":8080");
  check_addr_bad("host:");
  check_addr_bad("host:http");
  check_addr_bad("host:80x");
  check_addr_bad("host:-1");
  check_addr_bad("host:65536");
  check_addr_bad("host:99999999999999999999");
  check_addr_bad("[::1]");
  check_addr_bad("[::1]:");
  check_addr_bad("[::1]9000");
  check_addr_bad("[::1:9000");
  check_addr_bad("[]:80");
}

int main(void) {
  test_defaults();
  test_options();
  test_bad_values();
  test_missing_value();
  test_args();
  test_help_version();
  test_help_text();
  test_abuse_limits();
  test_cluster();
  test_addr();
  test_tls();
  test_redis_url();
  test_redis_options();
  test_table_shape();
  test_table_rows();
  test_table_defaults();
  test_table_help();
  reset();
  return test_report();
}
