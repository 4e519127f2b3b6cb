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

/* "00" to "99": two digits per division, half the divisions of one digit at a time. */
static const char ps__digits2[201] = "00010203040506070809101112131415161718192021222324"
                                     "25262728293031323334353637383940414243444546474849"
                                     "50515253545556575859606162636465666768697071727374"
                                     "75767778798081828384858687888990919293949596979899";

size_t ps_dec_u64(char *out, uint64_t v) {
  char tmp[PS_DEC_U64_MAX];
  size_t i = sizeof tmp;
  while (v >= 100) {
    unsigned r = (unsigned)(v % 100);
    v /= 100;
    i -= 2;
    memcpy(tmp + i, ps__digits2 + 2 * r, 2);
  }
  if (v >= 10) {
    i -= 2;
    memcpy(tmp + i, ps__digits2 + 2 * v, 2);
  } else {
    tmp[--i] = (char)('0' + v);
  }
  memcpy(out, tmp + i, sizeof tmp - i);
  return sizeof tmp - i;
}

size_t ps_dec_i64(char *out, int64_t v) {
  if (v >= 0)
    return ps_dec_u64(out, (uint64_t)v);
  out[0] = '-';
  return 1 + ps_dec_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

void ps_buf_put_u64(ps_buf *b, uint64_t v) {
  ps_buf_reserve(b, PS_DEC_U64_MAX);
  b->len += ps_dec_u64(b->data + b->len, v);
  b->data[b->len] = '\0';
}

void ps_buf_put_i64(ps_buf *b, int64_t v) {
  ps_buf_reserve(b, PS_DEC_I64_MAX);
  b->len += ps_dec_i64(b->data + b->len, v);
  b->data[b->len] = '\0';
}
