#include "query.h"

#include <string.h>

void mr_query_init(mr_query_iter *it, const char *q, size_t len) {
  it->p = q;
  it->end = q + len;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static size_t decode(const char *s, size_t n, char *out, size_t cap) {
  size_t j = 0;
  for (size_t i = 0; i < n && j < cap; i++) {
    int hi, lo;
    if (s[i] == '+') {
      out[j++] = ' ';
    } else if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
               (lo = hexval(s[i + 2])) >= 0) {
      out[j++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      out[j++] = s[i];
    }
  }
  return j;
}

int mr_query_next(mr_query_iter *it, char *key, size_t kcap, size_t *klen,
                  char *val, size_t vcap, size_t *vlen) {
  while (it->p < it->end) {
    const char *amp = memchr(it->p, '&', (size_t)(it->end - it->p));
    const char *pair_end = amp ? amp : it->end;
    const char *pair = it->p;
    it->p = amp ? amp + 1 : it->end;
    if (pair == pair_end)
      continue; /* "a=1&&b=2" has an empty pair in the middle */
    const char *eq = memchr(pair, '=', (size_t)(pair_end - pair));
    const char *kend = eq ? eq : pair_end;
    *klen = decode(pair, (size_t)(kend - pair), key, kcap);
    *vlen = eq ? decode(eq + 1, (size_t)(pair_end - eq - 1), val, vcap) : 0;
    return 1;
  }
  return 0;
}
