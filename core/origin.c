#include "origin.h"

#include <string.h>

typedef struct {
  const char *scheme, *host;
  size_t scheme_len, host_len;
  long port; /* the given port, or the scheme's default; -1 for none */
} origin_parts;

static int lower(int ch) { return ch >= 'A' && ch <= 'Z' ? ch + 32 : ch; }

static int same_ci(const char *a, size_t alen, const char *b, size_t blen) {
  if (alen != blen)
    return 0;
  for (size_t i = 0; i < alen; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
      return 0;
  return 1;
}

static int scheme_char(int ch, int first) {
  int alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
  return alpha || (!first && ((ch >= '0' && ch <= '9') || ch == '+' ||
                              ch == '-' || ch == '.'));
}

/* Host characters: what a reg-name or a bracketed IPv6 literal holds, less
 * what would start a port, path, query or userinfo. */
static int host_char(int ch) {
  return ch > 0x20 && ch < 0x7f && !strchr("/?#@,:[]", ch);
}

static long default_port(const char *s, size_t len) {
  if (same_ci(s, len, "http", 4) || same_ci(s, len, "ws", 2))
    return 80;
  if (same_ci(s, len, "https", 5) || same_ci(s, len, "wss", 3))
    return 443;
  return -1;
}

/* Splits s (len bytes) into scheme, host and port; returns 1, or 0 when it
 * is not "scheme://host[:port]". */
static int parse(const char *s, size_t len, origin_parts *o) {
  size_t i = 0;
  while (i < len && scheme_char((unsigned char)s[i], i == 0))
    i++;
  if (i == 0 || len - i < 3 || memcmp(s + i, "://", 3) != 0)
    return 0;
  o->scheme = s;
  o->scheme_len = i;
  i += 3;
  o->host = s + i;
  if (i < len && s[i] == '[') {
    while (i < len && s[i] != ']') {
      unsigned char ch = (unsigned char)s[i];
      if (ch != '[' && !(ch == ':' || ch == '.' || (ch >= '0' && ch <= '9') ||
                         (lower(ch) >= 'a' && lower(ch) <= 'f')))
        return 0;
      i++;
    }
    if (i == len)
      return 0;
    i++; /* the ']' */
  } else {
    while (i < len && host_char((unsigned char)s[i]))
      i++;
  }
  o->host_len = (size_t)(s + i - o->host);
  if (o->host_len == 0 || (o->host[0] == '[' && o->host_len < 3))
    return 0;
  o->port = default_port(o->scheme, o->scheme_len);
  if (i == len)
    return 1;
  if (s[i] != ':' || i + 1 == len || len - i - 1 > 5)
    return 0;
  long port = 0;
  for (i++; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    port = port * 10 + (s[i] - '0');
  }
  if (port > 65535)
    return 0;
  o->port = port;
  return 1;
}

/* Steps to the next element of a comma-separated list, spaces trimmed;
 * returns 0 at the end. */
static int next_element(const char **list, const char **el, size_t *len) {
  const char *p = *list;
  while (*p == ' ' || *p == ',')
    p++;
  if (!*p)
    return 0;
  const char *end = p + strcspn(p, ",");
  *list = end;
  while (end > p && end[-1] == ' ')
    end--;
  *el = p;
  *len = (size_t)(end - p);
  return 1;
}

int mr_origin_list_valid(const char *list) {
  const char *el;
  size_t len;
  origin_parts o;
  int n = 0;
  /* Empty elements (",,", a leading or trailing comma) are typos, not
   * "any". */
  if (list[strspn(list, " ")] == ',')
    return 0;
  for (const char *p = list; *p; p++)
    if (*p == ',') {
      const char *q = p + 1;
      while (*q == ' ')
        q++;
      if (*q == ',' || !*q)
        return 0;
    }
  while (next_element(&list, &el, &len)) {
    if (!(len == 1 && el[0] == '*') && !parse(el, len, &o))
      return 0;
    n++;
  }
  return n > 0;
}

int mr_origin_allowed(const char *list, const char *origin, size_t len) {
  const char *el;
  size_t elen;
  origin_parts want, got;
  if (!*list)
    return 1;
  int valid = parse(origin, len, &got);
  while (next_element(&list, &el, &elen)) {
    if (elen == 1 && el[0] == '*')
      return 1;
    if (valid && parse(el, elen, &want) &&
        same_ci(want.scheme, want.scheme_len, got.scheme, got.scheme_len) &&
        same_ci(want.host, want.host_len, got.host, got.host_len) &&
        want.port == got.port)
      return 1;
  }
  return 0;
}
