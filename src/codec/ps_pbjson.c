/*
 * ps_pbjson: the proto3 JSON encoder (see ps_pbjson.h for the contract).
 *
 * Every message penstock publishes goes through here, so it writes straight
 * into the caller's ps_buf: no allocation per field (a map with more than
 * PS__MAP_STACK entries needs one array to sort its keys), field names copied
 * from a table built once per message type (ps__names_of), plain strings
 * tested and copied 8 bytes at a time, and UTF-8 validation fused into the
 * escaping pass.
 *
 * The output is byte-for-byte what Go's protojson.Marshal writes for the same
 * message (less the space that some Go builds add after a comma, on purpose,
 * to keep callers from comparing bytes), since the Go service is the peer
 * whose consumers read what penstock publishes. Python's json_format writes
 * the same document up to whitespace, number spelling (20.0 vs 20, 1e-07 vs
 * 1e-7) and map order (its hash order; Go and penstock sort keys), which is
 * how the golden tests compare against it. Fields come in the order of the
 * descriptor, which protoc-c sorts by number; Go uses declaration order, the
 * same for every message penstock carries.
 *
 * Floating point: Go prints the shortest decimal that reads back as the same
 * value (strconv 'f' or 'e' with precision -1). glibc has no such mode, so
 * the shortest form is found with correctly rounded printf and strtod: if any
 * decimal of at most 15 significant digits (6 for float) reads back as x, the
 * nearest one does, and %.14e finds it; otherwise the nearest 16-digit
 * decimal is tried, and, for a power of two (whose rounding interval is
 * narrower below than above), the next 16-digit decimal above it; 17 digits
 * (9 for float) always read back. Subnormals, with fewer significant bits,
 * start from one digit. The parse uses a private "C" locale so that a
 * process-wide setlocale() cannot change the output. Before all that, doubles
 * with few decimals (prices) take a fast path of a multiply and a divide.
 */
#include "codec/ps_pbjson.h"

#include <float.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_pbjson_internal.h"
#include "core/ps_error.h"

/* Maps up to this many entries are sorted in a stack array. */
#define PS__MAP_STACK 64

/* ---- strings ---------------------------------------------------------------- */

/* Whether any of the 8 bytes in w needs more than a copy: below 0x20, '"', '\\' or >= 0x80. */
static inline uint64_t ps__str_special(uint64_t w) {
  return ps_word_has_less(w, 0x20) | ps_word_has_byte(w, '"') | ps_word_has_byte(w, '\\') |
         (w & PS_WORD_HIGHS);
}

/*
 * Appends s as a JSON string, s[0..i) known to be plain: see ps__put_str.
 * Kept out of line so that the plain case stays small.
 */
__attribute__((noinline)) static int ps__put_str_slow(ps_buf *out, const unsigned char *s, size_t n, size_t i,
                                                      int check) {
  static const char hex[] = "0123456789abcdef";
  size_t run = 0;
  ps_buf_putc(out, '"');
  while (i < n) {
    while (n - i >= 8 && !ps__str_special(ps_word_load8(s + i)))
      i += 8;
    if (i >= n)
      break;
    unsigned c = s[i];
    if (c >= 0x80) {
      size_t k = check ? ps_pbjson__utf8_seq(s + i, n - i) : 1;
      if (k == 0)
        return -1;
      i += k;
      continue;
    }
    if (c >= 0x20 && c != '"' && c != '\\') {
      i++;
      continue;
    }
    ps_buf_append(out, s + run, i - run);
    char esc[6] = {'\\', 0, 0, 0, 0, 0};
    size_t elen = 2;
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    default:
      memcpy(esc + 1, "u00", 3);
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      elen = 6;
    }
    ps_buf_append(out, esc, elen);
    run = ++i;
  }
  ps_buf_append(out, s + run, n - run);
  ps_buf_putc(out, '"');
  return 0;
}

/*
 * Appends s as a JSON string. With check set, returns -1 at the first byte
 * that does not start a valid UTF-8 sequence; otherwise copies bytes >= 0x80
 * through unchecked.
 *
 * Most strings are plain ASCII throughout, and take one pass that tests and
 * copies 8 bytes at a time into the space reserved for them (the last n % 8
 * bytes as one word that overlaps bytes already seen; a string shorter than 8
 * as two overlapping 4-byte words, or its first, middle and last byte padded
 * with spaces). At the first word that is not plain, ps__put_str_slow takes
 * over from that word; what was copied so far lies beyond out->len and is
 * written again.
 */
__attribute__((always_inline)) static inline int ps__put_str(ps_buf *out, const char *str, size_t n,
                                                             int check) {
  const unsigned char *s = (const unsigned char *)str;
  if (out->cap - out->len < n + 3)
    ps_buf_reserve(out, n + 2);
  char *w = out->data + out->len + 1; /* after the opening quote */
  size_t i = 0;
  if (n >= 8) {
    for (; n - i >= 8; i += 8) {
      uint64_t x = ps_word_load8(s + i);
      if (ps__str_special(x))
        return ps__put_str_slow(out, s, n, i, check);
      memcpy(w + i, &x, 8);
    }
    if (i < n) {
      uint64_t x = ps_word_load8(s + n - 8);
      if (ps__str_special(x))
        return ps__put_str_slow(out, s, n, i, check);
      memcpy(w + n - 8, &x, 8);
    }
  } else if (n >= 4) {
    uint32_t lo, hi;
    memcpy(&lo, s, 4);
    memcpy(&hi, s + n - 4, 4);
    if (ps__str_special(lo | (uint64_t)hi << 32))
      return ps__put_str_slow(out, s, n, 0, check);
    memcpy(w, &lo, 4);
    memcpy(w + n - 4, &hi, 4);
  } else if (n) {
    unsigned char a = s[0], m = s[n / 2], z = s[n - 1];
    if (ps__str_special(a | (uint64_t)m << 8 | (uint64_t)z << 16 | 0x2020202020000000ull))
      return ps__put_str_slow(out, s, n, 0, check);
    w[0] = (char)a;
    w[n / 2] = (char)m;
    w[n - 1] = (char)z;
  }
  w[-1] = '"';
  w[n] = '"';
  w[n + 1] = '\0';
  out->len += n + 2;
  return 0;
}

void ps_pbjson_put_string(ps_buf *out, const char *s, size_t n) {
  (void)ps__put_str(out, s, n, 0);
}

/* ---- numbers ---------------------------------------------------------------- */

static locale_t ps__c_locale;
static pthread_once_t ps__c_locale_once = PTHREAD_ONCE_INIT;

static void ps__c_locale_init(void) {
  ps__c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
  if (!ps__c_locale)
    abort();
}

/* A decimal d[0].d[1]...d[n-1] x 10^e, n significant digits. */
typedef struct {
  char d[24];
  int n;
  int e;
} ps__dec;

/* Rounds x (> 0, finite) to p significant digits (correctly, by printf). */
static void ps__dec_round(ps__dec *r, double x, int p) {
  char buf[48];
  int len = snprintf(buf, sizeof buf, "%.*e", p - 1, x);
  int i = 0;
  r->n = 0;
  /* Skip the decimal point, whatever the locale spells it as. */
  for (; i < len && buf[i] != 'e'; i++)
    if (buf[i] >= '0' && buf[i] <= '9')
      r->d[r->n++] = buf[i];
  int neg = buf[++i] == '-', e = 0;
  for (i++; i < len; i++)
    e = e * 10 + (buf[i] - '0');
  r->e = neg ? -e : e;
}

/* Writes r as "d.ddde<exp>" into buf (48 bytes), for strtod. */
static void ps__dec_text(const ps__dec *r, char *buf) {
  int k = 0;
  buf[k++] = r->d[0];
  buf[k++] = '.';
  memcpy(buf + k, r->d + 1, (size_t)r->n - 1);
  k += r->n - 1;
  snprintf(buf + k, 48 - (size_t)k, "e%d", r->e);
}

static double ps__dec_value(const ps__dec *r) {
  char buf[48];
  ps__dec_text(r, buf);
  return strtod_l(buf, NULL, ps__c_locale);
}

/* Whether r reads back as x; a float is parsed as one (rounding through a
   double first could round twice). */
static int ps__dec_reads_back(const ps__dec *r, double x, int is_float) {
  char buf[48];
  ps__dec_text(r, buf);
  if (is_float)
    return strtof_l(buf, NULL, ps__c_locale) == (float)x;
  return strtod_l(buf, NULL, ps__c_locale) == x;
}

/* Adds one unit in the last place of r. */
static void ps__dec_next_up(ps__dec *r) {
  int i = r->n - 1;
  while (i >= 0 && r->d[i] == '9')
    r->d[i--] = '0';
  if (i >= 0) {
    r->d[i]++;
  } else { /* 99..9 -> 100..0: one digit more before the point */
    r->d[0] = '1';
    r->e++;
  }
}

/* The shortest decimal that reads back as x (> 0, finite); see the top comment. */
static void ps__shortest(ps__dec *r, double x, int is_float) {
  int lo = is_float ? 6 : 15, hi = is_float ? 9 : 17;
  /* Subnormals carry fewer significant bits, so their shortest form can be
     shorter than `lo` digits without the nearest lo-digit decimal being it.
     Their spacing is even, so the nearest p-digit decimal is the one to try. */
  if (is_float ? (float)x < FLT_MIN : x < DBL_MIN)
    lo = 1;
  int exp2;
  int pow2 = (is_float ? frexpf((float)x, &exp2) : frexp(x, &exp2)) == 0.5;
  pthread_once(&ps__c_locale_once, ps__c_locale_init);
  for (int p = lo; p <= hi; p++) {
    ps__dec_round(r, x, p);
    if (p == hi || ps__dec_reads_back(r, x, is_float))
      break;
    if (pow2 && p > lo && ps__dec_value(r) < x) {
      ps__dec r2 = *r;
      ps__dec_next_up(&r2);
      if (ps__dec_reads_back(&r2, x, is_float)) {
        *r = r2;
        break;
      }
    }
  }
  while (r->n > 1 && r->d[r->n - 1] == '0')
    r->n--;
}

/* Writes r as Go's strconv does with format 'e' or 'f' and precision -1. */
static void ps__put_dec(ps_buf *out, int neg, const ps__dec *r, int efmt) {
  char buf[64]; /* 'f' is used only for 1e-6 <= x < 1e21 */
  size_t k = 0;
  if (neg)
    buf[k++] = '-';
  if (efmt) {
    buf[k++] = r->d[0];
    if (r->n > 1) {
      buf[k++] = '.';
      memcpy(buf + k, r->d + 1, (size_t)r->n - 1);
      k += (size_t)r->n - 1;
    }
    /* Go writes at least two exponent digits; protojson then turns "e-0X"
       into "e-X" (and never writes a one-digit positive exponent). */
    int e = r->e < 0 ? -r->e : r->e;
    k += (size_t)snprintf(buf + k, sizeof buf - k, r->e < 0 ? "e-%d" : "e+%02d", e);
  } else if (r->e >= r->n - 1) {
    memcpy(buf + k, r->d, (size_t)r->n);
    k += (size_t)r->n;
    for (int z = r->e - (r->n - 1); z > 0; z--)
      buf[k++] = '0';
  } else if (r->e >= 0) {
    memcpy(buf + k, r->d, (size_t)r->e + 1);
    k += (size_t)r->e + 1;
    buf[k++] = '.';
    memcpy(buf + k, r->d + r->e + 1, (size_t)(r->n - r->e - 1));
    k += (size_t)(r->n - r->e - 1);
  } else {
    buf[k++] = '0';
    buf[k++] = '.';
    for (int z = -r->e - 1; z > 0; z--)
      buf[k++] = '0';
    memcpy(buf + k, r->d, (size_t)r->n);
    k += (size_t)r->n;
  }
  ps_buf_append(out, buf, k);
}

/*
 * The fast path for the doubles events carry (prices, amounts: few decimals).
 * For k = 0, 1, ... it takes v = x * 10^k rounded to an integer, and accepts
 * v / 10^k == x: that division of two exact doubles is correctly rounded,
 * so it equals what strtod makes of the decimal v * 10^-k, i.e. the decimal
 * reads back as x. The first k that works has the fewest digits; while v has
 * at most 15 digits no other decimal of that length reads back as x (see the
 * top comment), so it is also the one Go writes. Returns 0 (nothing written)
 * when x needs more than 15 digits.
 */
static int ps__put_short_fixed(ps_buf *out, int neg, double a) {
  static const double p10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  for (int k = 0; k < (int)(sizeof p10 / sizeof p10[0]); k++) {
    double v = nearbyint(a * p10[k]);
    if (v >= 1e15)
      return 0;
    if (v / p10[k] != a)
      continue;
    char digits[24], buf[48];
    int n = 0, w = 0;
    for (uint64_t u = (uint64_t)v; u; u /= 10)
      digits[n++] = (char)('0' + u % 10); /* reversed */
    if (neg)
      buf[w++] = '-';
    if (n <= k) { /* 0.000ddd */
      buf[w++] = '0';
      buf[w++] = '.';
      for (int z = k - n; z > 0; z--)
        buf[w++] = '0';
    }
    for (int i = n - 1; i >= 0; i--) {
      buf[w++] = digits[i];
      if (i == k && k > 0)
        buf[w++] = '.';
    }
    ps_buf_append(out, buf, (size_t)w);
    return 1;
  }
  return 0;
}

/*
 * x holds a float's value when is_float. Go decides between 'f' and 'e' on
 * the value in its own precision: float32(1e-6) is not below 1e-6f.
 */
static void ps__put_floating(ps_buf *out, double x, int is_float) {
  if (isnan(x)) {
    ps_buf_append(out, "\"NaN\"", 5);
    return;
  }
  if (isinf(x)) {
    if (x < 0)
      ps_buf_append(out, "\"-Infinity\"", 11);
    else
      ps_buf_append(out, "\"Infinity\"", 10);
    return;
  }
  int neg = signbit(x) != 0;
  double a = fabs(x);
  if (a == 0) {
    ps_buf_puts(out, neg ? "-0" : "0");
    return;
  }
  /* Below 2^53 (2^24) an integer's own digits are its shortest form. */
  if (a < (is_float ? 16777216.0 : 9007199254740992.0) && a == floor(a)) {
    if (neg)
      ps_buf_putc(out, '-');
    ps_buf_put_u64(out, (uint64_t)a);
    return;
  }
  if (!is_float && a >= 1e-6 && a < 1e15 && ps__put_short_fixed(out, neg, a))
    return;
  int efmt = is_float ? ((float)a < 1e-6f || (float)a >= 1e21f) : (a < 1e-6 || a >= 1e21);
  ps__dec r;
  ps__shortest(&r, a, is_float);
  ps__put_dec(out, neg, &r, efmt);
}

void ps_pbjson_put_double(ps_buf *out, double v) {
  ps__put_floating(out, v, 0);
}

void ps_pbjson_put_float(ps_buf *out, float v) {
  ps__put_floating(out, v, 1);
}

/* ---- bytes ------------------------------------------------------------------ */

static void ps__put_base64(ps_buf *out, const uint8_t *p, size_t n) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  ps_buf_reserve(out, (n + 2) / 3 * 4 + 2);
  char *w = out->data + out->len;
  *w++ = '"';
  size_t i = 0;
  for (; n - i >= 3; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *w++ = tab[v >> 18];
    *w++ = tab[(v >> 12) & 63];
    *w++ = tab[(v >> 6) & 63];
    *w++ = tab[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)p[i] << 16;
    *w++ = tab[v >> 18];
    *w++ = tab[(v >> 12) & 63];
    *w++ = '=';
    *w++ = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
    *w++ = tab[v >> 18];
    *w++ = tab[(v >> 12) & 63];
    *w++ = tab[(v >> 6) & 63];
    *w++ = '=';
  }
  *w++ = '"';
  out->len = (size_t)(w - out->data);
  out->data[out->len] = '\0';
}

/* ---- messages --------------------------------------------------------------- */

/*
 * Field names, once per message type. Turning a proto name into
 * lowerCamelCase byte by byte for every field of every message written would
 * cost a quarter of the encoder's time, so each message descriptor gets, the
 * first time it is encoded, a table with every field's name already as JSON
 * text, with the comma that precedes all but the first field: `,"jsonName":`
 * (the first field written starts one byte in). The table also says which
 * repeated fields are maps (ps_pbjson__is_map compares names, too slow to
 * repeat per message).
 *
 * The tables live in a fixed hash of lock-free lists keyed by descriptor
 * address, shared by every encoding thread. A table is built completely
 * before it is published with a release compare-and-swap at the head of its
 * bucket's list, and readers load the heads with acquire, so a reader sees
 * either no table or a whole one; lists only ever grow at the head. Two
 * threads meeting a new type at once may both build its table: the loser
 * frees its copy and uses the winner's. Descriptors are static data that live
 * as long as the process, so the tables are never freed (and stay reachable).
 */
typedef struct {
  uint32_t off;   /* of the field's `,"name":` in text */
  uint32_t len;   /* its length, comma included */
  uint8_t is_map; /* ps_pbjson__is_map(descriptor, field) */
} ps__field_name;

typedef struct ps__names {
  const ProtobufCMessageDescriptor *desc;
  struct ps__names *next; /* in its bucket; set before publication, never changed */
  const char *text;
  ps__field_name f[]; /* one per field, in descriptor order */
} ps__names;

#define PS__NAMES_BUCKETS 256 /* a power of two */
#define PS__NAME_COPY 32      /* names up to this long are copied as one fixed-size block */
static _Atomic(ps__names *) ps__names_buckets[PS__NAMES_BUCKETS];

static ps__names *ps__names_build(const ProtobufCMessageDescriptor *d) {
  size_t text_len = 0;
  for (unsigned i = 0; i < d->n_fields; i++)
    text_len += strlen(d->fields[i].name) + 4;
  size_t head = sizeof(ps__names) + d->n_fields * sizeof(ps__field_name);
  /* PS__NAME_COPY bytes of padding after the text: see ps__put_name. */
  ps__names *t = calloc(1, head + text_len + 1 + PS__NAME_COPY);
  if (!t)
    abort();
  char *text = (char *)t + head, *w = text;
  t->desc = d;
  t->next = NULL;
  t->text = text;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    t->f[i].off = (uint32_t)(w - text);
    *w++ = ',';
    *w++ = '"';
    /* proto name to JSON name: '_' dropped, the next letter upper-cased */
    int up = 0;
    for (const char *p = f->name; *p; p++) {
      if (*p == '_') {
        up = 1;
        continue;
      }
      *w++ = (up && *p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
      up = 0;
    }
    *w++ = '"';
    *w++ = ':';
    t->f[i].len = (uint32_t)(w - text) - t->f[i].off;
    t->f[i].is_map = (uint8_t)ps_pbjson__is_map(d, f);
  }
  *w = '\0';
  return t;
}

/*
 * Writes field fi's name (first: without the comma). A name is short and its
 * length varies, so rather than calling memcpy for a few bytes, a whole
 * PS__NAME_COPY-byte block (which the compiler copies inline) goes in when it
 * fits, and the length counts only the name; the text's padding keeps that
 * read inside the table.
 */
static inline void ps__put_name(ps_buf *out, const ps__names *names, unsigned fi, int first) {
  const char *src = names->text + names->f[fi].off + first;
  size_t len = names->f[fi].len - (unsigned)first;
  if (len <= PS__NAME_COPY && out->cap - out->len > PS__NAME_COPY) {
    memcpy(out->data + out->len, src, PS__NAME_COPY);
    out->len += len;
    out->data[out->len] = '\0';
  } else {
    ps_buf_append(out, src, len);
  }
}

/* The names table of d, built on first use. */
static const ps__names *ps__names_of(const ProtobufCMessageDescriptor *d) {
  uint64_t h = (uint64_t)(uintptr_t)d * 0x9E3779B97F4A7C15ull;
  _Atomic(ps__names *) *bucket = &ps__names_buckets[h >> 56 & (PS__NAMES_BUCKETS - 1)];
  ps__names *first = atomic_load_explicit(bucket, memory_order_acquire);
  for (ps__names *t = first; t; t = t->next)
    if (t->desc == d)
      return t;
  ps__names *mine = ps__names_build(d);
  for (;;) {
    mine->next = first;
    if (atomic_compare_exchange_weak_explicit(bucket, &first, mine, memory_order_release,
                                              memory_order_acquire))
      return mine;
    /* Another table went in first (first now holds the new head): it may be d's. */
    for (ps__names *t = first; t; t = t->next)
      if (t->desc == d) {
        free(mine);
        return t;
      }
  }
}

static int ps__enc_msg(ps_buf *out, const ProtobufCMessage *m, int depth);

/* Writes the one value at p of field f's type (an element, for repeated fields). */
static int ps__enc_value(ps_buf *out, const ProtobufCFieldDescriptor *f, const void *p, int depth) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32: ps_buf_put_i64(out, *(const int32_t *)p); return 0;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: ps_buf_put_u64(out, *(const uint32_t *)p); return 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    ps_buf_putc(out, '"');
    ps_buf_put_i64(out, *(const int64_t *)p);
    ps_buf_putc(out, '"');
    return 0;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    ps_buf_putc(out, '"');
    ps_buf_put_u64(out, *(const uint64_t *)p);
    ps_buf_putc(out, '"');
    return 0;
  case PROTOBUF_C_TYPE_FLOAT: ps_pbjson_put_float(out, *(const float *)p); return 0;
  case PROTOBUF_C_TYPE_DOUBLE: ps_pbjson_put_double(out, *(const double *)p); return 0;
  case PROTOBUF_C_TYPE_BOOL:
    if (*(const protobuf_c_boolean *)p)
      ps_buf_append(out, "true", 4);
    else
      ps_buf_append(out, "false", 5);
    return 0;
  case PROTOBUF_C_TYPE_ENUM: {
    int v = *(const int *)p;
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
    if (ev) {
      ps_buf_putc(out, '"');
      ps_buf_puts(out, ev->name);
      ps_buf_putc(out, '"');
    } else { /* proto3 enums are open: an unknown number is kept as a number */
      ps_buf_put_i64(out, v);
    }
    return 0;
  }
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(const char *const *)p;
    if (!s)
      s = "";
    return ps__put_str(out, s, strlen(s), 1) == 0 ? 0 : PS_EINVAL;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *b = p;
    ps__put_base64(out, b->data, b->len);
    return 0;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)p;
    if (!sub) { /* an unset message in a list or a map value */
      ps_buf_append(out, "{}", 2);
      return 0;
    }
    return ps__enc_msg(out, sub, depth + 1);
  }
  }
  return PS_EINVAL;
}

typedef struct {
  const ProtobufCMessage *m;
  size_t i; /* position in the field's array: duplicates keep the last */
} ps__entry;

/* Key order of Go's protojson: bytewise, numeric, false before true. */
static int ps__key_cmp(const void *a, const void *b, void *ctx) {
  const ProtobufCFieldDescriptor *kf = ctx;
  const ps__entry *x = a, *y = b;
  const char *kx = (const char *)x->m + kf->offset, *ky = (const char *)y->m + kf->offset;
  int c = 0;
  switch (kf->type) {
  case PROTOBUF_C_TYPE_STRING: {
    const char *sx = *(const char *const *)kx, *sy = *(const char *const *)ky;
    c = strcmp(sx ? sx : "", sy ? sy : "");
    break;
  }
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64: {
    int64_t vx = *(const int64_t *)kx, vy = *(const int64_t *)ky;
    c = (vx > vy) - (vx < vy);
    break;
  }
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: {
    uint64_t vx = *(const uint64_t *)kx, vy = *(const uint64_t *)ky;
    c = (vx > vy) - (vx < vy);
    break;
  }
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: {
    uint32_t vx = *(const uint32_t *)kx, vy = *(const uint32_t *)ky;
    c = (vx > vy) - (vx < vy);
    break;
  }
  case PROTOBUF_C_TYPE_BOOL: {
    int vx = *(const protobuf_c_boolean *)kx != 0, vy = *(const protobuf_c_boolean *)ky != 0;
    c = vx - vy;
    break;
  }
  default: { /* int32, sint32, sfixed32 */
    int32_t vx = *(const int32_t *)kx, vy = *(const int32_t *)ky;
    c = (vx > vy) - (vx < vy);
  }
  }
  if (c == 0)
    c = (x->i > y->i) - (x->i < y->i);
  return c;
}

static int ps__key_eq(const ps__entry *x, const ps__entry *y, const ProtobufCFieldDescriptor *kf) {
  ps__entry a = *x, b = *y;
  a.i = b.i = 0;
  return ps__key_cmp(&a, &b, (void *)kf) == 0;
}

/* Writes a map key as a JSON string (numbers and bools in quotes). */
static int ps__enc_key(ps_buf *out, const ProtobufCFieldDescriptor *kf, const void *p) {
  switch (kf->type) {
  case PROTOBUF_C_TYPE_STRING: return ps__enc_value(out, kf, p, 0);
  case PROTOBUF_C_TYPE_BOOL:
    if (*(const protobuf_c_boolean *)p)
      ps_buf_append(out, "\"true\"", 6);
    else
      ps_buf_append(out, "\"false\"", 7);
    return 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: return ps__enc_value(out, kf, p, 0); /* already quoted */
  default:
    ps_buf_putc(out, '"');
    ps__enc_value(out, kf, p, 0);
    ps_buf_putc(out, '"');
    return 0;
  }
}

static int ps__enc_map(ps_buf *out, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m, int depth) {
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
  size_t n = *PS_PBJSON__CAT(size_t, m, f->quantifier_offset);
  const ProtobufCMessage *const *arr = *PS_PBJSON__CAT(ProtobufCMessage *const *, m, f->offset);
  ps__entry stack[PS__MAP_STACK], *ents = stack;
  if (n > PS__MAP_STACK) {
    ents = malloc(n * sizeof *ents);
    if (!ents)
      abort();
  }
  size_t k = 0;
  int sorted = 1;
  for (size_t i = 0; i < n; i++) {
    if (!arr[i])
      continue;
    ents[k].m = arr[i];
    ents[k].i = i;
    if (k > 0 && sorted && ps__key_cmp(&ents[k - 1], &ents[k], (void *)kf) > 0)
      sorted = 0;
    k++;
  }
  if (!sorted)
    qsort_r(ents, k, sizeof *ents, ps__key_cmp, (void *)kf);
  int rc = 0, first = 1;
  ps_buf_putc(out, '{');
  for (size_t i = 0; i < k && rc == 0; i++) {
    /* protobuf-c keeps every entry of a repeated key; proto keeps the last */
    if (i + 1 < k && ps__key_eq(&ents[i], &ents[i + 1], kf))
      continue;
    if (!first)
      ps_buf_putc(out, ',');
    first = 0;
    rc = ps__enc_key(out, kf, (const char *)ents[i].m + kf->offset);
    if (rc == 0) {
      ps_buf_putc(out, ':');
      rc = ps__enc_value(out, vf, (const char *)ents[i].m + vf->offset, depth);
    }
  }
  ps_buf_putc(out, '}');
  if (ents != stack)
    free(ents);
  return rc;
}

static int ps__enc_msg(ps_buf *out, const ProtobufCMessage *m, int depth) {
  if (depth > PS_PBJSON__MAX_DEPTH)
    return PS_EINVAL;
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const ps__names *names = ps__names_of(d);
  int first = 1;
  ps_buf_putc(out, '{');
  for (unsigned fi = 0; fi < d->n_fields; fi++) {
    const ProtobufCFieldDescriptor *f = &d->fields[fi];
    if (!ps_pbjson__present(m, f))
      continue;
    ps__put_name(out, names, fi, first);
    first = 0;
    int rc;
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
      rc = ps__enc_value(out, f, (const char *)m + f->offset, depth);
    } else if (names->f[fi].is_map) {
      rc = ps__enc_map(out, f, m, depth);
    } else {
      size_t n = *PS_PBJSON__CAT(size_t, m, f->quantifier_offset), es = ps_pbjson__elem_size(f->type);
      const char *arr = *PS_PBJSON__CAT(char *, m, f->offset);
      rc = 0;
      ps_buf_putc(out, '[');
      for (size_t i = 0; i < n && rc == 0; i++) {
        if (i)
          ps_buf_putc(out, ',');
        rc = ps__enc_value(out, f, arr + i * es, depth);
      }
      ps_buf_putc(out, ']');
    }
    if (rc)
      return rc;
  }
  ps_buf_putc(out, '}');
  return 0;
}

int ps_pbjson_encode(ps_buf *out, const ProtobufCMessage *msg) {
  return ps__enc_msg(out, msg, 0);
}
