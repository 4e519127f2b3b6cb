/*
 * ps_log: structured logging to stderr.
 *
 * One line per record, either `text` (time level msg key=value ...) or `json`
 * (one object per line), chosen by LOG_FORMAT; records below LOG_LEVEL are
 * dropped before any formatting. Fields are passed as alternating key/value
 * C strings ending in NULL, so a record is built without allocation on the
 * caller's side. Thread-safe: each record is written with one write(2).
 */
#ifndef PS_LOG_H
#define PS_LOG_H

#include <stdarg.h>

typedef enum { PS_LOG_DEBUG, PS_LOG_INFO, PS_LOG_WARN, PS_LOG_ERROR } ps_log_level;
typedef enum { PS_LOG_TEXT, PS_LOG_JSON } ps_log_format;

/** Sets the threshold and the format; before this: info, text. */
void ps_log_setup(ps_log_level level, ps_log_format format);
/** Parses "debug|info|warn|error"; returns 0 or PS_EINVAL. */
int ps_log_level_parse(const char *s, ps_log_level *out);
/** Parses "text|json"; returns 0 or PS_EINVAL. */
int ps_log_format_parse(const char *s, ps_log_format *out);
/** True if a record at level would be written. */
int ps_log_enabled(ps_log_level level);

/**
 * Writes a record: msg, then key/value pairs (const char *), NULL-terminated.
 * Use the PS_LOG_* macros, which skip the call when the level is off.
 */
void ps_log_write(ps_log_level level, const char *msg, ...);
void ps_log_writev(ps_log_level level, const char *msg, va_list kv);

#define PS_LOG_AT(lvl, msg, ...)                                              \
  do {                                                                        \
    if (ps_log_enabled(lvl))                                                  \
      ps_log_write(lvl, msg, ##__VA_ARGS__, (const char *)0);                 \
  } while (0)
#define ps_debug(msg, ...) PS_LOG_AT(PS_LOG_DEBUG, msg, ##__VA_ARGS__)
#define ps_info(msg, ...) PS_LOG_AT(PS_LOG_INFO, msg, ##__VA_ARGS__)
#define ps_warn(msg, ...) PS_LOG_AT(PS_LOG_WARN, msg, ##__VA_ARGS__)
#define ps_error(msg, ...) PS_LOG_AT(PS_LOG_ERROR, msg, ##__VA_ARGS__)

/**
 * A rate limiter for a repeated error: ps_log_ratelimit_ok() returns 1 at most
 * once per interval and then reports, in *suppressed, how many calls it said
 * no to since. Zero-initialise; safe to share between threads.
 */
typedef struct {
  _Atomic long long next_ns;
  _Atomic long long suppressed;
} ps_log_ratelimit;

int ps_log_ratelimit_ok(ps_log_ratelimit *rl, long long interval_ms,
                        long long *suppressed);

#endif
