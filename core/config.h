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
} mr_config;

enum { MR_CONFIG_RUN = 0, MR_CONFIG_EXIT = 1, MR_CONFIG_USAGE = 2 };

/* Fills defaults, then parses argv. Returns MR_CONFIG_RUN to start the
 * server, MR_CONFIG_EXIT after printing --help or --version to out, or
 * MR_CONFIG_USAGE with a one-line message in err. getenv is consulted for
 * MOONROOM_COOKIE. */
int mr_config_parse(mr_config *cfg, int argc, char **argv, char *err,
                    size_t errlen, void *out /* FILE* */);

/* Parses "HOST:PORT" (IPv6 as "[::1]:PORT"); returns 0 or MR_EINVAL. */
int mr_addr_parse(const char *s, mr_addr *out);

#endif
