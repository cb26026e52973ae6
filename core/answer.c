#include "answer.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Raises an error from inside the protected call, naming where the
 * handler (a copy of it sits at stack index 2 of mr_answer_call) is defined,
 * so that a wrong result is logged and counted as the handler error it is.
 * Lua's own formatter knows no %.*s or %zu, hence vsnprintf. */
/* The handler whose results are being read, for fail()'s message. The
 * calls below never nest (no handler can start another answer while its
 * own results are read) and the Lua state is single-threaded. */
static const char *answering = "on_connect";

static int fail(lua_State *L, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(lua_State *L, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lua_Debug ar;
  lua_pushvalue(L, 2);
  lua_getinfo(L, ">S", &ar);
  return luaL_error(L, "%s (%s:%d) returned a wrong result: %s", answering,
                    ar.short_src, ar.linedefined, msg);
}

/* Copies at most 60 bytes of s into out with anything unprintable escaped,
 * so that what a script got wrong can be named in the log without breaking
 * the line. Returns out. */
static const char *printable(const char *s, size_t len, char out[256]) {
  size_t j = 0;
  for (size_t i = 0; i < len && j + 8 < 256; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (i == 60) {
      j += (size_t)snprintf(out + j, 256 - j, "...");
      break;
    }
    if (ch < 0x20 || ch > 0x7e || ch == '\\' || ch == '\'')
      j += (size_t)snprintf(out + j, 256 - j, "\\x%02x", ch);
    else
      out[j++] = (char)ch;
  }
  out[j] = '\0';
  return out;
}

/* Describes the value at idx for an error message: 'text', a number, or
 * its type. */
static const char *describe(lua_State *L, int idx, char out[256]) {
  char tmp[256];
  size_t len;
  if (lua_type(L, idx) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, idx, &len);
    snprintf(out, 256, "'%s'", printable(s, len, tmp));
  } else if (lua_type(L, idx) == LUA_TNUMBER) {
    snprintf(out, 256, "%.14g", (double)lua_tonumber(L, idx));
  } else {
    snprintf(out, 256, "%s", luaL_typename(L, idx));
  }
  return out;
}

/* Selects the protocol at idx (a string) among those the request offered;
 * ans then points into the request, which outlives the handshake. */
static void select_protocol(lua_State *L, int idx, mr_answer_ctx *x) {
  char d[256], offered[512];
  if (lua_type(L, idx) != LUA_TSTRING)
    fail(L, "protocol must be a string, got %s", describe(L, idx, d));
  size_t want_len, len, n = 0;
  const char *want = lua_tolstring(L, idx, &want_len), *p;
  mr_http_list_iter it;
  mr_http_list_init(&it, x->req, "Sec-WebSocket-Protocol");
  offered[0] = '\0';
  while (mr_http_list_next(&it, &p, &len)) {
    if (len == want_len && memcmp(p, want, len) == 0) {
      x->ans->protocol = p;
      x->ans->protocol_len = len;
      return;
    }
    if (n < sizeof offered - 80)
      n += (size_t)snprintf(offered + n, sizeof offered - n, "%s'%s'",
                            n ? ", " : "", printable(p, len, d));
  }
  fail(L, "selected protocol %s, which the client did not offer (%s%s)",
       describe(L, idx, d), n ? "it offered " : "it offered none", offered);
}

/* Where a headers table goes: a block of "Name: value\r\n" lines, and for
 * on_http the Content-Type (NULL where the server sets it). */
typedef struct {
  char *block;
  size_t cap;
  char *content_type;
  size_t content_type_cap;
} header_out;

/* Appends "name: value\r\n" to the answer's header block after checking
 * it. */
static void add_header(lua_State *L, header_out *x, const char *name,
                       size_t nlen, int vidx) {
  char d[256], pn[256];
  int t = lua_type(L, vidx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER)
    fail(L,
         "response header '%s' must be a string or a list of strings, "
         "got %s",
         printable(name, nlen, pn), describe(L, vidx, d));
  size_t vlen;
  const char *value = lua_tolstring(L, vidx, &vlen);
  if (x->content_type && nlen == 12 &&
      strncasecmp(name, "Content-Type", 12) == 0) {
    const char *bad = mr_http_check_value(value, vlen);
    if (bad)
      fail(L, "response header 'Content-Type' is not allowed: %s", bad);
    if (x->content_type[0] || vlen == 0 || vlen >= x->content_type_cap)
      fail(L, "Content-Type must be one non-empty value under %zu bytes",
           x->content_type_cap);
    memcpy(x->content_type, value, vlen);
    x->content_type[vlen] = '\0';
    return;
  }
  const char *why = mr_http_check_header(name, nlen, value, vlen);
  if (why)
    fail(L, "response header '%s' is not allowed: %s",
         printable(name, nlen, pn), why);
  char *block = x->block;
  size_t used = strlen(block);
  if (used + nlen + vlen + 4 >= x->cap)
    fail(L, "response headers take more than %d bytes", MR_HTTP_MAX_EXTRA);
  memcpy(block + used, name, nlen);
  memcpy(block + used + nlen, ": ", 2);
  memcpy(block + used + nlen + 2, value, vlen);
  memcpy(block + used + nlen + 2 + vlen, "\r\n", 3);
}

/* A header name held by the script's table while the call runs. */
typedef struct {
  const char *p;
  size_t len;
} name_span;

static int cmp_names(const void *a, const void *b) {
  const name_span *x = a, *y = b;
  int r = strcasecmp(x->p, y->p);
  return r ? r : strcmp(x->p, y->p);
}

/* Reads the headers table at idx ({ ["Name"] = "value" or { "v1", "v2" } })
 * into the answer, in name order so that responses are reproducible. */
static void read_headers(lua_State *L, int idx, header_out *x,
                         const char *what) {
  char d[256];
  name_span names[MR_HTTP_MAX_HEADERS];
  size_t n = 0;
  if (lua_type(L, idx) != LUA_TTABLE)
    fail(L, "%s must be a table, got %s", what, describe(L, idx, d));
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      fail(L, "response header names must be strings, got %s",
           describe(L, -1, d));
    if (n == MR_HTTP_MAX_HEADERS)
      fail(L, "more than %d response headers", MR_HTTP_MAX_HEADERS);
    /* The table keeps the key alive while this call runs. */
    names[n].p = lua_tolstring(L, -1, &names[n].len);
    n++;
  }
  qsort(names, n, sizeof *names, cmp_names);
  for (size_t i = 0; i < n; i++) {
    lua_pushlstring(L, names[i].p, names[i].len);
    lua_rawget(L, idx);
    if (lua_type(L, -1) == LUA_TTABLE) {
      /* A list repeats the header, one line per value (Set-Cookie). */
      int vt = lua_gettop(L);
      for (int k = 1;; k++) {
        lua_rawgeti(L, vt, k);
        if (lua_isnil(L, -1)) {
          lua_pop(L, 1);
          break;
        }
        add_header(L, x, names[i].p, names[i].len, lua_gettop(L));
        lua_pop(L, 1);
      }
    } else {
      add_header(L, x, names[i].p, names[i].len, lua_gettop(L));
    }
    lua_pop(L, 1);
  }
}

/* The accepting form: `return true, { protocol = P, headers = H }`. */
static void read_options(lua_State *L, int idx, mr_answer_ctx *x) {
  char d[256];
  if (lua_isnil(L, idx))
    return;
  if (lua_type(L, idx) != LUA_TTABLE)
    fail(L,
         "an accepting on_connect's second result must be a table "
         "{ protocol =, headers = }, got %s (to refuse, return false, "
         "status, body)",
         describe(L, idx, d));
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    if (strcmp(k, "protocol") != 0 && strcmp(k, "headers") != 0)
      fail(L, "unknown option %s (expected protocol, headers)",
           describe(L, -1, d));
  }
  lua_getfield(L, idx, "protocol");
  if (!lua_isnil(L, -1))
    select_protocol(L, lua_gettop(L), x);
  lua_getfield(L, idx, "headers");
  header_out out = {x->ans->headers, sizeof x->ans->headers, NULL, 0};
  if (!lua_isnil(L, -1))
    read_headers(L, lua_gettop(L), &out, "headers");
  lua_pop(L, 2);
}

/* The refusing form: `return false [, status [, body [, headers]]]`. */
static void read_refusal(lua_State *L, int idx, mr_answer_ctx *x) {
  char d[256];
  if (!lua_isnil(L, idx)) {
    lua_Number s = lua_tonumber(L, idx);
    if (lua_type(L, idx) != LUA_TNUMBER || !(s >= 400 && s <= 599) ||
        s != (lua_Number)(int)s)
      fail(L, "refusal status must be an integer from 400 to 599, got %s",
           describe(L, idx, d));
    x->ans->status = (int)s;
  }
  int bt = lua_type(L, idx + 1);
  if (bt == LUA_TSTRING || bt == LUA_TNUMBER)
    snprintf(x->ans->body, sizeof x->ans->body, "%s", lua_tostring(L, idx + 1));
  else if (bt != LUA_TNIL)
    fail(L, "refusal body must be a string, got %s", describe(L, idx + 1, d));
  header_out out = {x->ans->headers, sizeof x->ans->headers, NULL, 0};
  if (!lua_isnil(L, idx + 2))
    read_headers(L, idx + 2, &out, "refusal headers");
}

int mr_answer_call(lua_State *L) {
  mr_answer_ctx *x = lua_touserdata(L, 1);
  answering = "on_connect";
  lua_pushvalue(L, 2); /* kept at 2 for fail() */
  lua_insert(L, 2);
  lua_call(L, 2, 4);
  x->accept = !(lua_isboolean(L, 3) && !lua_toboolean(L, 3));
  if (x->accept)
    read_options(L, 4, x);
  else
    read_refusal(L, 4, x);
  return 0;
}

int mr_answer_http_call(lua_State *L) {
  mr_http_answer_ctx *x = lua_touserdata(L, 1);
  mr_http_answer *ans = x->ans;
  char d[256];
  answering = "on_http";
  lua_pushvalue(L, 2); /* kept at 2 for fail() */
  lua_insert(L, 2);
  lua_call(L, 1, 3);
  lua_Number s = lua_tonumber(L, 3);
  if (lua_type(L, 3) != LUA_TNUMBER || !(s >= 200 && s <= 599) ||
      s != (lua_Number)(int)s)
    fail(L,
         "status must be an integer from 200 to 599 (return status, body "
         "[, headers]), got %s",
         describe(L, 3, d));
  int status = (int)s;
  if (lua_type(L, 4) != LUA_TSTRING)
    fail(L, "body must be a string, got %s", describe(L, 4, d));
  size_t blen;
  const char *body = lua_tolstring(L, 4, &blen);
  if (blen && (status == 204 || status == 304))
    fail(L, "a %d response has no body, got %zu bytes", status, blen);
  header_out out = {ans->headers, sizeof ans->headers, ans->content_type,
                    sizeof ans->content_type};
  if (!lua_isnil(L, 5))
    read_headers(L, 5, &out, "headers");
  if (blen) {
    mr_buf *b = mr_buf_new(blen);
    if (!b)
      return luaL_error(L, "out of memory");
    memcpy(b->data, body, blen);
    ans->body = b;
  }
  ans->status = status;
  return 0;
}
