#include "ipcount.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0,    0,
                                             0, 0, 0, 0, 0xff, 0xff};

static void key_from_v6(const uint8_t a[16], mr_ipkey *key) {
  memset(key, 0, sizeof *key);
  if (memcmp(a, v4_mapped_prefix, sizeof v4_mapped_prefix) == 0) {
    memcpy(key->bytes, a + 12, 4);
    return;
  }
  key->v6 = 1;
  memcpy(key->bytes, a, 8);
}

int mr_ipkey_from_sockaddr(const struct sockaddr *sa, mr_ipkey *key) {
  if (sa->sa_family == AF_INET) {
    memset(key, 0, sizeof *key);
    memcpy(key->bytes, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    key_from_v6(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr, key);
    return 0;
  }
  return MR_EINVAL;
}

int mr_ipkey_from_text(const char *text, mr_ipkey *key) {
  uint8_t a[16];
  if (inet_pton(AF_INET, text, a) == 1) {
    memset(key, 0, sizeof *key);
    memcpy(key->bytes, a, 4);
    return 0;
  }
  if (inet_pton(AF_INET6, text, a) == 1) {
    key_from_v6(a, key);
    return 0;
  }
  return MR_EINVAL;
}

void mr_ipkey_format(const mr_ipkey *key, char *out, size_t cap) {
  char name[INET6_ADDRSTRLEN];
  uint8_t a[16] = {0};
  if (!key->v6) {
    inet_ntop(AF_INET, key->bytes, name, sizeof name);
    snprintf(out, cap, "%s", name);
    return;
  }
  memcpy(a, key->bytes, 8);
  inet_ntop(AF_INET6, a, name, sizeof name);
  snprintf(out, cap, "%s/64", name);
}

int mr_ipcount_acquire(mr_ipcount **table, const mr_ipkey *key, unsigned limit,
                       mr_ipcount **entry) {
  mr_ipcount *e = NULL;
  *entry = NULL;
  HASH_FIND(hh, *table, key, sizeof *key, e);
  if (e && limit && e->count >= limit)
    return MR_ETOOBIG;
  if (!e) {
    if (!(e = calloc(1, sizeof *e)))
      return MR_ENOMEM;
    e->key = *key;
    HASH_ADD(hh, *table, key, sizeof e->key, e);
  }
  e->count++;
  *entry = e;
  return 0;
}

void mr_ipcount_release(mr_ipcount **table, mr_ipcount *entry) {
  if (--entry->count > 0)
    return;
  HASH_DEL(*table, entry);
  free(entry);
}

unsigned mr_ipcount_size(mr_ipcount *const *table) {
  return (unsigned)HASH_COUNT(*table);
}

void mr_ipcount_clear(mr_ipcount **table) {
  mr_ipcount *e, *tmp;
  HASH_ITER(hh, *table, e, tmp) {
    HASH_DEL(*table, e);
    free(e);
  }
}
