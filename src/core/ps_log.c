/* ps_log: structured logging (see ps_log.h). */
#include "core/ps_log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/ps_buf.h"
#include "core/ps_error.h"

static _Atomic int ps__level = PS_LOG_INFO;
static _Atomic int ps__format = PS_LOG_TEXT;

static const char *const ps__level_names[] = {"debug", "info", "warn", "error"};

void ps_log_setup(ps_log_level level, ps_log_format format) {
  atomic_store(&ps__level, (int)level);
  atomic_store(&ps__format, (int)format);
}

int ps_log_level_parse(const char *s, ps_log_level *out) {
  for (int i = 0; i < 4; i++)
    if (strcasecmp(s, ps__level_names[i]) == 0) {
      *out = (ps_log_level)i;
      return 0;
    }
  if (strcasecmp(s, "warning") == 0) {
    *out = PS_LOG_WARN;
    return 0;
  }
  return PS_EINVAL;
}

int ps_log_format_parse(const char *s, ps_log_format *out) {
  if (strcasecmp(s, "text") == 0)
    *out = PS_LOG_TEXT;
  else if (strcasecmp(s, "json") == 0)
    *out = PS_LOG_JSON;
  else
    return PS_EINVAL;
  return 0;
}

int ps_log_enabled(ps_log_level level) {
  return (int)level >= atomic_load_explicit(&ps__level, memory_order_relaxed);
}

/* JSON string escaping, kept local so the log has no dependency on codecs. */
static void ps__json_str(ps_buf *b, const char *s) {
  ps_buf_putc(b, '"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      ps_buf_putc(b, '\\');
      ps_buf_putc(b, (char)c);
    } else if (c < 0x20) {
      ps_buf_printf(b, "\\u%04x", c);
    } else {
      ps_buf_putc(b, (char)c);
    }
  }
  ps_buf_putc(b, '"');
}

static void ps__text_val(ps_buf *b, const char *s) {
  int quote = *s == '\0';
  for (const char *c = s; *c && !quote; c++)
    quote = (unsigned char)*c <= ' ' || *c == '"' || *c == '=' || *c == '\\';
  if (!quote) {
    ps_buf_puts(b, s);
    return;
  }
  ps_buf_putc(b, '"');
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      ps_buf_putc(b, '\\');
      ps_buf_putc(b, (char)c);
    } else if (c == '\n') {
      ps_buf_puts(b, "\\n");
    } else if (c == '\t') {
      ps_buf_puts(b, "\\t");
    } else if (c < 0x20 || c == 0x7f) {
      ps_buf_printf(b, "\\x%02x", c);
    } else {
      ps_buf_putc(b, (char)c);
    }
  }
  ps_buf_putc(b, '"');
}

void ps_log_writev(ps_log_level level, const char *msg, va_list kv) {
  char ts[40];
  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);

  ps_buf b = PS_BUF_INIT;
  int json = atomic_load_explicit(&ps__format, memory_order_relaxed) == PS_LOG_JSON;
  if (json) {
    ps_buf_puts(&b, "{\"time\":\"");
    ps_buf_puts(&b, ts);
    ps_buf_puts(&b, "\",\"level\":\"");
    ps_buf_puts(&b, ps__level_names[level]);
    ps_buf_puts(&b, "\",\"msg\":");
    ps__json_str(&b, msg);
  } else {
    ps_buf_printf(&b, "%s %-5s %s", ts, ps__level_names[level], msg);
  }
  for (;;) {
    const char *k = va_arg(kv, const char *);
    if (!k)
      break;
    const char *v = va_arg(kv, const char *);
    if (!v)
      v = "";
    if (json) {
      ps_buf_putc(&b, ',');
      ps__json_str(&b, k);
      ps_buf_putc(&b, ':');
      ps__json_str(&b, v);
    } else {
      ps_buf_putc(&b, ' ');
      ps_buf_puts(&b, k);
      ps_buf_putc(&b, '=');
      ps__text_val(&b, v);
    }
  }
  if (json)
    ps_buf_putc(&b, '}');
  ps_buf_putc(&b, '\n');
  ssize_t w = write(STDERR_FILENO, b.data, b.len);
  (void)w;
  ps_buf_free(&b);
}

void ps_log_write(ps_log_level level, const char *msg, ...) {
  va_list ap;
  va_start(ap, msg);
  ps_log_writev(level, msg, ap);
  va_end(ap);
}

int ps_log_ratelimit_ok(ps_log_ratelimit *rl, long long interval_ms,
                        long long *suppressed) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long long t = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
  _Atomic long long *next = &rl->next_ns;
  _Atomic long long *sup = &rl->suppressed;
  long long due = atomic_load(next);
  if (t >= due && atomic_compare_exchange_strong(next, &due, t + interval_ms * 1000000LL)) {
    *suppressed = atomic_exchange(sup, 0);
    return 1;
  }
  atomic_fetch_add(sup, 1);
  return 0;
}
