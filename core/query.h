/* URL query strings: split "a=1&b=x%20y" into decoded pairs. Pure. */
#ifndef MR_QUERY_H
#define MR_QUERY_H

#include <stddef.h>

typedef struct {
  const char *p, *end;
} mr_query_iter;

void mr_query_init(mr_query_iter *it, const char *q, size_t len);

/* Decodes the next non-empty pair into key and val (percent escapes and '+'
 * for space; a malformed escape is kept as it is; a pair without '=' has an
 * empty value). Output longer than the buffers is truncated. Returns 1 for a
 * pair, 0 at the end. */
int mr_query_next(mr_query_iter *it, char *key, size_t kcap, size_t *klen,
                  char *val, size_t vcap, size_t *vlen);

#endif
