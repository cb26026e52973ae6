/* Error codes shared by every core module.
 *
 * Functions return 0 on success and a negative MR_E* code on failure, as
 * libuv does; one X-macro keeps the names and messages in a single table. */
#ifndef MR_ERROR_H
#define MR_ERROR_H

#define MR_ERRNO_MAP(X)                                                        \
  X(NOMEM, -1, "out of memory")                                                \
  X(INVAL, -2, "invalid argument")                                             \
  X(AGAIN, -3, "incomplete input, need more bytes")                            \
  X(TOOBIG, -4, "input exceeds a configured limit")                            \
  X(PROTO, -5, "protocol violation")                                           \
  X(CLOSED, -6, "connection is closed")                                        \
  X(BACKPRESSURE, -7, "outgoing queue over its limit")                         \
  X(UTF8, -8, "invalid UTF-8")                                                 \
  X(AUTH, -9, "authentication failed")                                         \
  X(NOTFOUND, -10, "not found")                                                \
  X(IO, -11, "I/O error")                                                      \
  X(LUA, -12, "Lua error")

enum {
#define MR_ERR_ENUM(name, code, msg) MR_E##name = (code),
  MR_ERRNO_MAP(MR_ERR_ENUM)
#undef MR_ERR_ENUM
};

/* Returns a static string naming the error ("MR_EPROTO"), never NULL. */
const char *mr_err_name(int err);
/* Returns a static human-readable message for the error, never NULL. */
const char *mr_strerror(int err);

#endif
