#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "log.h"

static const char usage_text[] =
    "Usage: moonroom [options] SCRIPT\n"
    "\n"
    "Runs a WebSocket room server whose behaviour is the Lua handler SCRIPT.\n"
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
    "  --node NAME               this node's name (default: host-pid-random)\n"
    "  --cookie SECRET           shared cluster secret (or MOONROOM_COOKIE)\n"
    "  --help                    print this help and exit\n"
    "  --version                 print the version and exit\n";

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

static int parse_size(const char *s, size_t min, size_t max, size_t *out) {
  char *end;
  errno = 0;
  if (*s == '-')
    return MR_EINVAL;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max)
    return MR_EINVAL;
  *out = (size_t)v;
  return 0;
}

enum {
  OPT_LISTEN = 256,
  OPT_MAX_MESSAGE,
  OPT_MAX_BACKPRESSURE,
  OPT_MAX_HEAD,
  OPT_MAX_CONNECTIONS,
  OPT_IDLE,
  OPT_PING,
  OPT_HANDSHAKE,
  OPT_NO_RELOAD,
  OPT_LOG_LEVEL,
  OPT_CLUSTER_LISTEN,
  OPT_PEER,
  OPT_NODE,
  OPT_COOKIE,
  OPT_HELP,
  OPT_VERSION
};

int mr_config_parse(mr_config *cfg, int argc, char **argv, char *err,
                    size_t errlen, void *outp) {
  FILE *out = outp;
  static const struct option opts[] = {
      {"listen", required_argument, 0, OPT_LISTEN},
      {"max-message", required_argument, 0, OPT_MAX_MESSAGE},
      {"max-backpressure", required_argument, 0, OPT_MAX_BACKPRESSURE},
      {"max-head", required_argument, 0, OPT_MAX_HEAD},
      {"max-connections", required_argument, 0, OPT_MAX_CONNECTIONS},
      {"idle-timeout", required_argument, 0, OPT_IDLE},
      {"ping-interval", required_argument, 0, OPT_PING},
      {"handshake-timeout", required_argument, 0, OPT_HANDSHAKE},
      {"no-reload", no_argument, 0, OPT_NO_RELOAD},
      {"log-level", required_argument, 0, OPT_LOG_LEVEL},
      {"cluster-listen", required_argument, 0, OPT_CLUSTER_LISTEN},
      {"peer", required_argument, 0, OPT_PEER},
      {"node", required_argument, 0, OPT_NODE},
      {"cookie", required_argument, 0, OPT_COOKIE},
      {"help", no_argument, 0, OPT_HELP},
      {"version", no_argument, 0, OPT_VERSION},
      {0, 0, 0, 0}};

  memset(cfg, 0, sizeof *cfg);
  strcpy(cfg->listen.host, "127.0.0.1");
  cfg->listen.port = 8080;
  cfg->max_message = 1u << 20;
  cfg->max_backpressure = 1u << 20;
  cfg->max_head = 8192;
  cfg->idle_timeout = 120;
  cfg->ping_interval = 30;
  cfg->handshake_timeout = 10;
  cfg->log_level = MR_LOG_INFO;
  cfg->reload = 1;
  err[0] = '\0';

  /* getopt keeps global state; reset it so the parser can run repeatedly
   * (the unit tests call it many times in one process). */
  optind = 0;
  opterr = 0;
  int c, li;
  size_t v;
  char namebuf[64];
  /* The leading ':' makes getopt report a missing value as ':'; the option's
   * own name comes from the long-option index or optopt, because
   * argv[optind - 1] may already be its value. */
  while ((li = -1, c = getopt_long(argc, argv, ":", opts, &li)) != -1) {
    const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
    if (li >= 0) {
      snprintf(namebuf, sizeof namebuf, "--%s", opts[li].name);
      name = namebuf;
    } else if (optopt > 0 && optopt < 256) {
      snprintf(namebuf, sizeof namebuf, "-%c", optopt);
      name = namebuf;
    }
    switch (c) {
    case OPT_LISTEN:
      if (mr_addr_parse(optarg, &cfg->listen) != 0) {
        snprintf(err, errlen, "--listen: expected HOST:PORT, got '%s'", optarg);
        return MR_CONFIG_USAGE;
      }
      break;
    case OPT_MAX_MESSAGE:
      if (parse_size(optarg, 1, (size_t)1 << 31, &v) != 0) {
        snprintf(err, errlen,
                 "--max-message: expected 1..2147483648 bytes, got '%s'",
                 optarg);
        return MR_CONFIG_USAGE;
      }
      cfg->max_message = v;
      break;
    case OPT_MAX_BACKPRESSURE:
      if (parse_size(optarg, 1024, (size_t)1 << 40, &v) != 0) {
        snprintf(err, errlen,
                 "--max-backpressure: expected at least 1024 bytes, got '%s'",
                 optarg);
        return MR_CONFIG_USAGE;
      }
      cfg->max_backpressure = v;
      break;
    case OPT_MAX_HEAD:
      if (parse_size(optarg, 256, 1 << 20, &v) != 0) {
        snprintf(err, errlen,
                 "--max-head: expected 256..1048576 bytes, got '%s'", optarg);
        return MR_CONFIG_USAGE;
      }
      cfg->max_head = v;
      break;
    case OPT_MAX_CONNECTIONS:
      if (parse_size(optarg, 0, 100000000, &v) != 0) {
        snprintf(err, errlen, "--max-connections: expected a count, got '%s'",
                 optarg);
        return MR_CONFIG_USAGE;
      }
      cfg->max_connections = (unsigned)v;
      break;
    case OPT_IDLE:
    case OPT_PING:
    case OPT_HANDSHAKE:
      if (parse_size(optarg, c == OPT_HANDSHAKE ? 1 : 0, 86400 * 365, &v) !=
          0) {
        snprintf(err, errlen, "%s: expected a number of seconds, got '%s'",
                 name, optarg);
        return MR_CONFIG_USAGE;
      }
      if (c == OPT_IDLE)
        cfg->idle_timeout = (unsigned)v;
      else if (c == OPT_PING)
        cfg->ping_interval = (unsigned)v;
      else
        cfg->handshake_timeout = (unsigned)v;
      break;
    case OPT_NO_RELOAD:
      cfg->reload = 0;
      break;
    case OPT_LOG_LEVEL: {
      int lv = mr_log_parse_level(optarg);
      if (lv < 0) {
        snprintf(err, errlen,
                 "--log-level: expected debug, info, warn or error, got '%s'",
                 optarg);
        return MR_CONFIG_USAGE;
      }
      cfg->log_level = lv;
      break;
    }
    case OPT_CLUSTER_LISTEN:
      if (mr_addr_parse(optarg, &cfg->cluster_listen) != 0) {
        snprintf(err, errlen, "--cluster-listen: expected HOST:PORT, got '%s'",
                 optarg);
        return MR_CONFIG_USAGE;
      }
      cfg->has_cluster_listen = 1;
      cfg->cluster = 1;
      break;
    case OPT_PEER:
      if (cfg->npeers == MR_MAX_PEERS) {
        snprintf(err, errlen, "--peer: at most %d peers", MR_MAX_PEERS);
        return MR_CONFIG_USAGE;
      }
      if (mr_addr_parse(optarg, &cfg->peers[cfg->npeers]) != 0) {
        snprintf(err, errlen, "--peer: expected HOST:PORT, got '%s'", optarg);
        return MR_CONFIG_USAGE;
      }
      cfg->npeers++;
      cfg->cluster = 1;
      break;
    case OPT_NODE:
      if (!*optarg || strlen(optarg) >= sizeof cfg->node) {
        snprintf(err, errlen, "--node: expected a name of 1..%zu bytes",
                 sizeof cfg->node - 1);
        return MR_CONFIG_USAGE;
      }
      strcpy(cfg->node, optarg);
      break;
    case OPT_COOKIE:
      if (!*optarg || strlen(optarg) >= sizeof cfg->cookie) {
        snprintf(err, errlen, "--cookie: expected a secret of 1..%zu bytes",
                 sizeof cfg->cookie - 1);
        return MR_CONFIG_USAGE;
      }
      strcpy(cfg->cookie, optarg);
      break;
    case OPT_HELP:
      fputs(usage_text, out);
      return MR_CONFIG_EXIT;
    case OPT_VERSION:
      fprintf(out, "moonroom %s\n", MOONROOM_VERSION);
      return MR_CONFIG_EXIT;
    case ':':
      snprintf(err, errlen, "%s: missing value", name);
      return MR_CONFIG_USAGE;
    default:
      snprintf(err, errlen, "unknown option '%s' (see --help)", name);
      return MR_CONFIG_USAGE;
    }
  }
  if (optind != argc - 1) {
    snprintf(err, errlen,
             optind >= argc ? "missing SCRIPT (see --help)"
                            : "expected exactly one SCRIPT (see --help)");
    return MR_CONFIG_USAGE;
  }
  cfg->script = argv[optind];
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
