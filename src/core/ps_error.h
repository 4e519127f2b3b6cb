/*
 * ps_error: penstock's error codes.
 *
 * Every function that can fail returns 0 or a negative PS_E* code from the one
 * table below; ps_strerror() names it. Codes say what the caller can do about
 * the failure (retry, give up, report bad input), not where it happened.
 */
#ifndef PS_ERROR_H
#define PS_ERROR_H

#define PS_ERRNO_MAP(X)                                                       \
  X(INVAL, "invalid argument or input")                                       \
  X(NOMEM, "out of memory")                                                   \
  X(TIMEDOUT, "timed out")                                                    \
  X(CLOSED, "closed")                                                         \
  X(FULL, "full")                                                             \
  X(AGAIN, "temporarily unavailable, try again")                              \
  X(IO, "input/output error")                                                 \
  X(CONN, "connection failed or lost")                                        \
  X(PROTO, "protocol error")                                                  \
  X(REJECTED, "rejected by the peer")                                         \
  X(TOOBIG, "too large")                                                      \
  X(NOTFOUND, "not found")                                                    \
  X(CONFIG, "invalid configuration")                                          \
  X(INTERNAL, "internal error")

enum {
  PS_OK = 0,
#define PS__ERR_ENUM(name, msg) PS_E##name,
  PS__ERR_FIRST = -100,
  PS_ERRNO_MAP(PS__ERR_ENUM)
#undef PS__ERR_ENUM
  PS__ERR_LAST
};

/** Returns a static description of err (0 or a PS_E* code); never NULL. */
const char *ps_strerror(int err);

#endif
