/* Connections counted per client address, for --max-connections-per-ip.
 *
 * An IPv4 client is one address; an IPv6 client is its /64 (one host or
 * LAN usually holds a whole /64, so counting single IPv6 addresses would
 * let one machine take as many slots as it likes); an IPv4-mapped IPv6
 * address (::ffff:a.b.c.d, what a dual-stack listener reports for IPv4
 * clients) is the IPv4 address. Entries live in a hash table and are
 * removed when their count falls to zero, so the table holds only
 * addresses with connections open. Pure: no sockets, no libuv. */
#ifndef MR_IPCOUNT_H
#define MR_IPCOUNT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uthash.h>

typedef struct {
  uint8_t v6;       /* 1: bytes is an IPv6 /64 prefix; 0: an IPv4 address */
  uint8_t bytes[8]; /* 4 (IPv4) or 8 (IPv6 /64) bytes; the rest zero */
} mr_ipkey;

/* One address's connections. */
typedef struct mr_ipcount {
  mr_ipkey key;
  uint32_t count;
  UT_hash_handle hh;
} mr_ipcount;

/* The key of a peer address (AF_INET or AF_INET6). Returns 0, or MR_EINVAL
 * for another family. */
int mr_ipkey_from_sockaddr(const struct sockaddr *sa, mr_ipkey *key);

/* The key of a numeric address in text ("203.0.113.7", "2001:db8::1",
 * "::ffff:10.0.0.1"). Returns 0 or MR_EINVAL. */
int mr_ipkey_from_text(const char *text, mr_ipkey *key);

/* Writes the key for logs: "203.0.113.7" or "2001:db8:0:1::/64". */
void mr_ipkey_format(const mr_ipkey *key, char *out, size_t cap);

/* Counts one more connection for key in *table, unless it already has
 * limit (limit 0: no limit). Returns 0 with *entry, the entry to hand back
 * to mr_ipcount_release exactly once (the table owns it); MR_ETOOBIG with
 * *entry NULL when the address is at the limit; MR_ENOMEM. */
int mr_ipcount_acquire(mr_ipcount **table, const mr_ipkey *key, unsigned limit,
                       mr_ipcount **entry);

/* Counts one connection of entry's address less; the entry is freed when
 * it has none left. */
void mr_ipcount_release(mr_ipcount **table, mr_ipcount *entry);

/* The number of addresses with connections counted. */
unsigned mr_ipcount_size(mr_ipcount *const *table);

/* Frees every entry (at server teardown; the table is empty by then unless
 * connections leaked). */
void mr_ipcount_clear(mr_ipcount **table);

#endif
