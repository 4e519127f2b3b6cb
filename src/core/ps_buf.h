/*
 * ps_buf: a growable byte buffer.
 *
 * Used wherever penstock builds bytes to send (JSON bodies, TSV inserts).
 * Appends never fail: growth that cannot be satisfied aborts, since every size
 * that a client controls is checked against a configured limit before it gets
 * here. The buffer always keeps a NUL after its contents, so data is a C string.
 */
#ifndef PS_BUF_H
#define PS_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct ps_buf {
  char *data; /* owned; NUL-terminated; NULL until the first append */
  size_t len;
  size_t cap;
} ps_buf;

#define PS_BUF_INIT {NULL, 0, 0}

/** Makes room for n more bytes (plus the NUL). */
void ps_buf_reserve(ps_buf *b, size_t n);
/** Frees the contents; the buffer is empty and reusable afterwards. */
void ps_buf_free(ps_buf *b);
/** Appends printf-formatted text. */
void ps_buf_printf(ps_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static inline void ps_buf_reset(ps_buf *b) {
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

static inline void ps_buf_append(ps_buf *b, const void *p, size_t n) {
  if (b->cap - b->len < n + 1)
    ps_buf_reserve(b, n);
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static inline void ps_buf_putc(ps_buf *b, char c) {
  if (b->cap - b->len < 2)
    ps_buf_reserve(b, 1);
  b->data[b->len++] = c;
  b->data[b->len] = '\0';
}

static inline void ps_buf_puts(ps_buf *b, const char *s) {
  ps_buf_append(b, s, strlen(s));
}

/** Appends the decimal form of v. */
void ps_buf_put_i64(ps_buf *b, int64_t v);
void ps_buf_put_u64(ps_buf *b, uint64_t v);

/* The most ps_dec_u64 and ps_dec_i64 write: UINT64_MAX has 20 digits, INT64_MIN a sign and 19. */
#define PS_DEC_U64_MAX 20
#define PS_DEC_I64_MAX 20
/** Writes the decimal form of v at out (no NUL), returns its length: for writers that made room. */
size_t ps_dec_u64(char *out, uint64_t v);
size_t ps_dec_i64(char *out, int64_t v);

#endif
