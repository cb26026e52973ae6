/* Command-line configuration: parsing is pure so it can be unit tested. */
#ifndef MR_CONFIG_H
#define MR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define MR_MAX_PEERS 64

typedef struct {
  char host[256];
  int port;
} mr_addr;

/* A parsed --engine redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] URL. */
typedef struct {
  char host[256];     /* without the brackets of an IPv6 address */
  int port;           /* 6379 when not given */
  unsigned db;        /* 0 when not given */
  char user[128];     /* "" when not given (AUTH with the password only) */
  char password[256]; /* "" when not given */
} mr_redis_url;

typedef struct {
  const char *script;
  mr_addr listen;
  size_t max_message;      /* largest message accepted from a client */
  size_t max_backpressure; /* unsent bytes allowed per connection */
  size_t max_head;         /* largest HTTP request head */
  unsigned idle_timeout;   /* seconds without a frame from the client; 0 off */
  unsigned ping_interval;  /* seconds between server pings; 0 off */
  unsigned handshake_timeout; /* seconds to complete the HTTP upgrade */
  unsigned max_connections;   /* 0: limited by the open-file limit only */
  int log_level;
  int reload; /* watch the script for changes */
  /* Cluster. */
  int cluster; /* cluster_listen or a peer given */
  mr_addr cluster_listen;
  int has_cluster_listen;
  mr_addr peers[MR_MAX_PEERS];
  int npeers;
  char node[64];
  char cookie[256];
  /* Plain HTTP (on_http). */
  size_t max_body;            /* largest request body */
  unsigned request_timeout;   /* seconds for a whole request, head and body */
  unsigned keepalive_timeout; /* seconds an idle keep-alive connection stays */
  /* Not from argv: package.path entries for the modules that come with the
   * server (the binary's own lua/, or the kit's host path), searched after
   * the script's directory and before LuaJIT's default path; NULL for none.
   * The caller keeps it alive while mr_bridge_new runs, the only reader. */
  const char *lua_path;
  /* --admin-listen: where /metrics, /healthz and /readyz are served over
   * plain HTTP; an empty host means off. */
  mr_addr admin_listen;
  /* permessage-deflate (pmd.c negotiates, deflate.c compresses). */
  int compression;              /* --compression on: negotiate it */
  size_t compression_threshold; /* shorter messages are sent plain */
  unsigned compression_level;   /* zlib's level, 1..9 */
  unsigned compression_window;  /* the server's window bits, 9..15 */
  /* --max-presence-meta: the largest encoded meta of a ws.track entry. */
  size_t max_presence_meta;
  /* Abuse limits. Connections counted per IPv4 address or IPv6 /64 from
   * accept to close (0: no limit); data messages a connection may send a
   * second, and how many at once (0: the rate), before it is closed 1008
   * (0: no limit); the origins a browser upgrade may come from ("": any;
   * checked by mr_origin_list_valid). */
  unsigned max_connections_per_ip;
  unsigned max_messages_per_second;
  unsigned message_burst;
  char allow_origin[1024];
  /* TLS (tls.c): the files for clients (--tls-cert, --tls-key) and for
   * cluster links (--cluster-tls-cert, -key, -ca); "" when not given. */
  char tls_cert[1024], tls_key[1024];
  char cluster_tls_cert[1024], cluster_tls_key[1024], cluster_tls_ca[1024];
  /* Lua guards (gate.c, watchdog.c): the Lua heap's limit in MiB and the
   * longest a handler may run in ms; 0 turns either off. */
  size_t lua_memory_limit;
  unsigned handler_timeout;
  /* The Redis engine (engine_redis.c): --engine as given ("" when off), the
   * URL it names, the password (--redis-password, else the URL's, else
   * MOONROOM_REDIS_PASSWORD) and the prefix of every channel and key. */
  char engine[1024];
  int redis; /* --engine given */
  mr_redis_url redis_url;
  char redis_password[256];
  char redis_prefix[128];
  /* --trace-latency: the file every broadcast frame's timings go to
   * (trace.h); "" when off. */
  char trace_latency[1024];
} mr_config;

enum { MR_CONFIG_RUN = 0, MR_CONFIG_EXIT = 1, MR_CONFIG_USAGE = 2 };

/* How an option's value is read and stored. The names say what the field in
 * mr_config receives. */
typedef enum {
  MR_OPT_UINT,      /* a decimal number in [min, max], unsigned field */
  MR_OPT_ADDR,      /* HOST:PORT into an mr_addr */
  MR_OPT_ADDR_LIST, /* HOST:PORT appended to an mr_addr array (repeatable) */
  MR_OPT_STRING,    /* 1 to size-1 bytes copied into a char array */
  MR_OPT_LOG_LEVEL, /* debug, info, warn or error into an int */
  MR_OPT_OFF,       /* a flag that clears an int that is 1 by default */
  MR_OPT_HELP,      /* prints the generated help and exits */
  MR_OPT_VERSION,   /* prints the version and exits */
  MR_OPT_ONOFF      /* off or on into an int (0 or 1) */
} mr_option_type;

/* One command-line option. The parser, the defaults and --help are all
 * driven by the table of these, so an option is added in one place. */
typedef struct {
  const char *name;    /* without the leading "--" */
  const char *arg;     /* the value's name in --help; NULL for a flag */
  mr_option_type type; /* how the value is read and stored */
  size_t off, size;    /* the field of mr_config that receives the value */
  size_t count_off;    /* MR_OPT_ADDR_LIST: offset of the int count */
  unsigned long long min, max; /* MR_OPT_UINT: the accepted range */
  const char *def;    /* default, parsed like a given value; NULL: zero */
  const char *expect; /* what a usage error says was expected */
  const char *help;   /* --help text; "(default DEF)" is appended */
} mr_option;

/* The options in --help order; the unit tests walk it. */
extern const mr_option mr_options[];
extern const size_t mr_noptions;

/* Fills defaults, then parses argv. Returns MR_CONFIG_RUN to start the
 * server, MR_CONFIG_EXIT after printing --help or --version to out, or
 * MR_CONFIG_USAGE with a one-line message in err. getenv is consulted for
 * MOONROOM_COOKIE. */
int mr_config_parse(mr_config *cfg, int argc, char **argv, char *err,
                    size_t errlen, void *out /* FILE* */);

/* Parses "HOST:PORT" (IPv6 as "[::1]:PORT"); returns 0 or MR_EINVAL. */
int mr_addr_parse(const char *s, mr_addr *out);

/* Parses redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (IPv6 as [::1]; the
 * password is taken up to the last '@', verbatim, not percent-decoded).
 * Returns 0, or MR_EINVAL with *out zeroed. */
int mr_redis_url_parse(const char *s, mr_redis_url *out);

#endif
