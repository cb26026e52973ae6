/* Error codes shared by every core module.
 *
 * Functions return 0 on success and a negative code on failure, as libuv
 * does, and there is one space of codes: where an errno fits, an MR_E* code
 * is libuv's own (MR_ENOMEM == UV_ENOMEM), so a libuv failure can be passed
 * up unchanged; moonroom's own conditions use codes below every errno and
 * every libuv code (-4095 is UV_EOF, libuv's lowest), so no two meanings
 * share a number. One X-macro keeps the names and messages in one table;
 * mr_strerror and mr_err_name answer for libuv's codes too. */
#ifndef MR_ERROR_H
#define MR_ERROR_H

#include <uv.h>

#define MR_ERRNO_MAP(X)                                                        \
  X(NOMEM, UV_ENOMEM, "out of memory")                                         \
  X(INVAL, UV_EINVAL, "invalid argument")                                      \
  X(AGAIN, UV_EAGAIN, "incomplete input, need more bytes")                     \
  X(IO, UV_EIO, "I/O error")                                                   \
  X(TOOBIG, -5001, "input exceeds a configured limit")                         \
  X(PROTO, -5002, "protocol violation")                                        \
  X(CLOSED, -5003, "connection is closed")                                     \
  X(BACKPRESSURE, -5004, "outgoing queue over its limit")                      \
  X(UTF8, -5005, "invalid UTF-8")                                              \
  X(AUTH, -5006, "authentication failed")                                      \
  X(NOTFOUND, -5007, "not found")                                              \
  X(LUA, -5008, "Lua error")                                                   \
  X(DEFLATE, -5009, "corrupt compressed data")

enum {
#define MR_ERR_ENUM(name, code, msg) MR_E##name = (code),
  MR_ERRNO_MAP(MR_ERR_ENUM)
#undef MR_ERR_ENUM
};

/* Returns a static string naming the error ("MR_EPROTO", or libuv's name
 * such as "EADDRINUSE" for a libuv code), never NULL. */
const char *mr_err_name(int err);
/* Returns a static human-readable message for the error (moonroom's or
 * libuv's), never NULL. */
const char *mr_strerror(int err);

#endif
