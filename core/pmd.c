#include "pmd.h"

#include <stdio.h>
#include <string.h>

/* A cursor over one header value. */
typedef struct {
  const char *p, *end;
} cursor;

/* RFC 7230 tchar. */
static int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
    c->p++;
}

/* Reads a token; returns its length, 0 when there is none. */
static size_t token(cursor *c, const char **start) {
  *start = c->p;
  while (c->p < c->end && is_tchar((unsigned char)*c->p))
    c->p++;
  return (size_t)(c->p - *start);
}

/* A parameter's value, unquoted: RFC 6455 9.1 requires a quoted value to
 * be a token once unquoted. The first cap - 1 bytes are copied into buf
 * (NUL-terminated); the whole value is read whatever its length, so that
 * the next offer can still be judged. Returns the value's full length, or
 * -1 when it is malformed. */
static long param_value(cursor *c, char *buf, size_t cap) {
  size_t n = 0;
  int quoted = c->p < c->end && *c->p == '"';
  if (quoted)
    c->p++;
  while (c->p < c->end) {
    if (quoted && *c->p == '"')
      break;
    if (quoted && *c->p == '\\' && c->p + 1 < c->end)
      c->p++;
    if (!is_tchar((unsigned char)*c->p))
      break;
    if (n + 1 < cap)
      buf[n] = *c->p;
    n++;
    c->p++;
  }
  buf[n + 1 < cap ? n : cap - 1] = '\0';
  if (quoted) {
    if (c->p == c->end || *c->p != '"')
      return -1;
    c->p++;
  }
  return n == 0 ? -1 : (long)n;
}

static int name_is(const char *s, size_t n, const char *want) {
  size_t wn = strlen(want);
  if (n != wn)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char a = s[i];
    if (a >= 'A' && a <= 'Z')
      a = (char)(a - 'A' + 'a');
    if (a != want[i])
      return 0;
  }
  return 1;
}

/* A window size: 8..15 written without leading zeros (RFC 7692 7.1.2). */
static int window_value(const char *v, long n) {
  if (n == 1 && v[0] >= '8' && v[0] <= '9')
    return v[0] - '0';
  if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
    return 10 + v[1] - '0';
  return -1;
}

enum {
  P_SERVER_NCT = 1 << 0,
  P_CLIENT_NCT = 1 << 1,
  P_SERVER_BITS = 1 << 2,
  P_CLIENT_BITS = 1 << 3
};

/* Judges one parameter of a permessage-deflate offer (name, and value of
 * vlen bytes, vlen < 0 for none). Returns NULL when it can be honoured, or
 * why not. */
static const char *judge_param(const char *name, size_t nlen, const char *v,
                               long vlen, unsigned *seen, int *server_bits) {
  unsigned bit;
  if (name_is(name, nlen, "server_no_context_takeover"))
    bit = P_SERVER_NCT;
  else if (name_is(name, nlen, "client_no_context_takeover"))
    bit = P_CLIENT_NCT;
  else if (name_is(name, nlen, "server_max_window_bits"))
    bit = P_SERVER_BITS;
  else if (name_is(name, nlen, "client_max_window_bits"))
    bit = P_CLIENT_BITS;
  else
    return "unknown parameter";
  if (*seen & bit)
    return "repeated parameter";
  *seen |= bit;
  if (bit == P_SERVER_NCT || bit == P_CLIENT_NCT)
    return vlen < 0 ? NULL : "unexpected value";
  if (vlen < 0)
    /* client_max_window_bits may come bare: the client can take any
     * window; server_max_window_bits must say how much. */
    return bit == P_CLIENT_BITS ? NULL : "server_max_window_bits needs a value";
  int bits = window_value(v, vlen);
  if (bits < 0)
    return "window bits out of range";
  if (bit == P_SERVER_BITS) {
    if (bits < MR_PMD_MIN_BITS)
      return "server_max_window_bits=8 cannot be honoured";
    *server_bits = bits;
  }
  /* The client's own window needs nothing from us: inflating with the
   * largest window reads data made with any smaller one. */
  return NULL;
}

int mr_pmd_negotiate(const char *value, size_t len, unsigned window_bits,
                     mr_pmd_agreement *out, unsigned *declined,
                     const char **why) {
  cursor c = {value, value + len};
  for (;;) {
    skip_ows(&c);
    while (c.p < c.end && *c.p == ',') {
      c.p++; /* empty list elements mean nothing (RFC 7230 7) */
      skip_ows(&c);
    }
    if (c.p == c.end)
      return 0;
    const char *ext;
    size_t elen = token(&c, &ext);
    if (elen == 0)
      goto malformed;
    int pmd = name_is(ext, elen, "permessage-deflate");
    const char *no = NULL;
    unsigned seen = 0;
    int server_bits = -1;
    for (;;) {
      skip_ows(&c);
      if (c.p == c.end || *c.p == ',')
        break;
      if (*c.p != ';')
        goto malformed;
      c.p++;
      skip_ows(&c);
      const char *name;
      size_t nlen = token(&c, &name);
      if (nlen == 0)
        goto malformed;
      skip_ows(&c);
      char v[16];
      long vlen = -1;
      if (c.p < c.end && *c.p == '=') {
        c.p++;
        skip_ows(&c);
        if ((vlen = param_value(&c, v, sizeof v)) < 0)
          goto malformed;
      }
      if (pmd && !no)
        no = judge_param(name, nlen, v, vlen, &seen, &server_bits);
    }
    if (!pmd)
      continue;
    if (no) {
      ++*declined;
      if (why)
        *why = no;
      continue;
    }
    out->answer_server_bits = server_bits > 0;
    out->server_bits = window_bits;
    if (server_bits > 0 && (unsigned)server_bits < window_bits)
      out->server_bits = (unsigned)server_bits;
    return 1;
  }
malformed:
  ++*declined;
  if (why)
    *why = "malformed header";
  return 0;
}

int mr_pmd_response(const mr_pmd_agreement *a, char *buf, size_t cap) {
  int n;
  if (a->answer_server_bits)
    n = snprintf(buf, cap,
                 "Sec-WebSocket-Extensions: permessage-deflate; "
                 "server_no_context_takeover; client_no_context_takeover; "
                 "server_max_window_bits=%u\r\n",
                 a->server_bits);
  else
    n = snprintf(buf, cap,
                 "Sec-WebSocket-Extensions: permessage-deflate; "
                 "server_no_context_takeover; client_no_context_takeover\r\n");
  return n < 0 || (size_t)n >= cap ? -1 : n;
}
