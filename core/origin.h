/* --allow-origin: matching a browser's Origin header against a list of
 * allowed origins (pure).
 *
 * An origin is "scheme://host" with an optional ":port" and nothing after
 * it (RFC 6454 serialization). Two origins match when their schemes and
 * hosts are equal ignoring ASCII case and their ports are equal, a missing
 * port being the scheme's default (http and ws 80, https and wss 443): so
 * "https://Example.COM" matches "https://example.com:443". Hosts are
 * compared as written: no IDNA, no DNS; an IPv6 host is in brackets. */
#ifndef MR_ORIGIN_H
#define MR_ORIGIN_H

#include <stddef.h>

/* Whether list is a valid --allow-origin value: comma-separated elements
 * (spaces around them ignored), each an origin as above or "*" (any).
 * Returns 1 or 0. */
int mr_origin_list_valid(const char *list);

/* Whether the Origin header value (len bytes, not NUL-terminated) is
 * allowed by list, a valid list or "" (allow any). An origin that is not
 * of the form above ("null", say) matches only "*". Returns 1 or 0. */
int mr_origin_allowed(const char *list, const char *origin, size_t len);

#endif
