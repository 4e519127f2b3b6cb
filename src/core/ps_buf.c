/* ps_buf: growable byte buffer (see ps_buf.h). */
#include "core/ps_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void ps_buf_reserve(ps_buf *b, size_t n) {
  size_t need = b->len + n + 1;
  if (need <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p)
    abort();
  b->data = p;
  b->cap = cap;
}

void ps_buf_free(ps_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

void ps_buf_printf(ps_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n <= 0)
    return;
  ps_buf_reserve(b, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

void ps_buf_put_u64(ps_buf *b, uint64_t v) {
  char tmp[24];
  int i = (int)sizeof tmp;
  do {
    tmp[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  ps_buf_append(b, tmp + i, sizeof tmp - (size_t)i);
}

void ps_buf_put_i64(ps_buf *b, int64_t v) {
  if (v < 0) {
    ps_buf_putc(b, '-');
    ps_buf_put_u64(b, (uint64_t)0 - (uint64_t)v);
  } else {
    ps_buf_put_u64(b, (uint64_t)v);
  }
}
