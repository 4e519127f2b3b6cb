/*
 * ps_pbjson_decode: proto3 JSON into protobuf-c messages (see ps_pbjson.h).
 *
 * Consumers read back what a publisher (penstock, or the Go peer) wrote, and
 * the HTTP ingest path reads what clients send, so this accepts everything the
 * proto3 JSON mapping allows, as Go's protojson.Unmarshal does: either field
 * name, numbers or strings for integers (with exponents, as long as the value
 * is whole), "NaN"/"Infinity", enum names or numbers, standard or URL-safe
 * base64 with or without padding, null for "leave at the default". It refuses
 * what protojson refuses: unknown or repeated fields (and duplicate map keys),
 * two members of a oneof, wrong JSON types, out-of-range numbers, invalid
 * UTF-8.
 *
 * yajl does the parsing, as a stream of events (a key, a string, the start of
 * an object...) that are written straight into the message: no document tree
 * is built. A stack of frames says where the next value goes: a message (with
 * the field its last key named, and which fields it has seen), a list (its
 * array, grown as elements come) or a map (its entries, the current one's key
 * already read). yajl hands every number over as its text, so integers are
 * read exactly, whatever their size or form (1e3, 2500e-2, -0), and floating
 * point values by strtod/strtof, rounded once.
 *
 * yajl is laxer than JSON in three ways, which a scan of the text refuses
 * before parsing: its UTF-8 check lets overlong forms, surrogates and code
 * points above U+10FFFF through (the scan applies ps_utf8_valid's rules to the
 * whole text, so yajl's own check is off); it reads an unpaired UTF-16
 * surrogate escape as '?' (the scan refuses \uD800 without a low surrogate
 * after it, and a lone \uDC00); it takes vertical tab and form feed for
 * whitespace. Comments and partial values stay refused.
 *
 * Each thread keeps one parser (yajl 2 has no reset; a new one costs more
 * than a small document): it is told to accept values one after the other,
 * and this file requires that nothing but whitespace follow the first one
 * (which also covers yajl 2.1.0 taking an unterminated string after the value
 * for the end of the text). After a syntax error the parser is replaced.
 *
 * A syntax error anywhere wins over any other error (a text that is not JSON
 * is reported as such, wherever the first problem of its content lies): after
 * the first error in the content the parse goes on to the end, building
 * nothing, to look for one.
 *
 * The message is built the way protobuf-c's unpacker builds one, with the
 * caller's allocator: each string and bytes value and each array in its own
 * allocation, each submessage initialised by its descriptor, so that
 * protobuf_c_message_free_unpacked frees it. Every allocation is linked into
 * the tree as soon as it is made (a list's count always says how many of its
 * slots are filled), so one free cleans up after any error.
 */
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "codec/ps_pbjson.h"
#include "codec/ps_pbjson_internal.h"
#include "core/ps_error.h"

/* Frames at most: messages 0..MAX_DEPTH deep, a list or map between each two, one more on top. */
#define PS__MAX_FRAMES (2 * (PS_PBJSON__MAX_DEPTH + 1))

enum { PS__MSG, PS__LIST, PS__MAP };

/* What a yajl event delivered. */
enum { PS__J_NULL, PS__J_BOOL, PS__J_NUMBER, PS__J_STRING, PS__J_OBJECT, PS__J_ARRAY };

typedef struct {
  int t;         /* PS__J_* */
  const char *s; /* number text or string bytes (not NUL-terminated) */
  size_t n;
  int b; /* a boolean's value */
} ps__val;

typedef struct {
  unsigned char kind;    /* PS__MSG, PS__LIST, PS__MAP */
  unsigned char spelled; /* PS__MSG: the current field was named by 1: its name, 2: its JSON name */
  unsigned char has_key; /* PS__MAP: an entry's key has been read and its value not yet ended */
  int depth;             /* of the message, or of the message holding the list or map */
  ProtobufCMessage *m;   /* the message, or the one holding the list or map */
  const ProtobufCMessageDescriptor *d; /* PS__MSG: its type */
  const ProtobufCFieldDescriptor *f;   /* PS__MSG: the field being read, or NULL; else the list or map */
  size_t seen;                         /* PS__MSG: where its field marks start in ps__rd.seen */
  size_t n, cap;                       /* PS__LIST, PS__MAP: elements (entries) so far, room for */
  size_t cur;                          /* PS__LIST: index of the element being read */
  ProtobufCMessage *entry;             /* PS__MAP: the entry being read */
  char key[41];                        /* PS__MAP: its key as written, cut at 40 bytes (for error paths) */
} ps__frame;

typedef struct ps__tls ps__tls;

/* The state of one decode (each thread keeps one in its ps__tls). */

typedef struct {
  ps__tls *tls;
  ProtobufCAllocator *alloc;
  const ProtobufCMessageDescriptor *desc; /* the root's type */
  ProtobufCMessage *root;
  int rc;           /* the first error, or 0 */
  char reason[192]; /* what is wrong */
  char path[256];   /* where */
  /* Per message frame, per field: 0 not seen, else how it was named (as ps__frame.spelled). */
  unsigned char *seen;
  size_t seen_len, seen_cap;
  unsigned char seen_buf[512];
  yajl_handle h;
  const char *json; /* the text */
  size_t len;
  int completing;  /* in yajl_complete_parse: yajl's offsets are no longer into the text */
  int level;       /* JSON nesting, counted even after an error */
  size_t root_end; /* where the (first) top-level value ends, or SIZE_MAX */
  int nf;          /* frames in use */
  ps__frame fr[PS__MAX_FRAMES];
} ps__rd;

/* ---- errors ----------------------------------------------------------------- */

/* Prepends a path element: a field name (".name") or a list index ("[i]"). */
static void ps__path_push(ps__rd *r, const char *name, size_t idx) {
  char el[96];
  int n = name ? snprintf(el, sizeof el, ".%s", name) : snprintf(el, sizeof el, "[%zu]", idx);
  size_t len = strlen(r->path), k = n < 0 ? 0 : (size_t)n >= sizeof el ? sizeof el - 1 : (size_t)n;
  if (len + k >= sizeof r->path)
    return; /* too deep to name: keep the innermost part */
  memmove(r->path + k, r->path, len + 1);
  memcpy(r->path, el, k);
}

/* Writes a field's JSON name (its name with "_x" read as "X") into buf. */
static const char *ps__json_name(const char *name, char *buf, size_t size) {
  size_t k = 0;
  int up = 0;
  for (; *name && k + 1 < size; name++) {
    if (*name == '_') {
      up = 1;
      continue;
    }
    buf[k++] = (up && *name >= 'a' && *name <= 'z') ? (char)(*name - 'a' + 'A') : *name;
    up = 0;
  }
  buf[k] = '\0';
  return buf;
}

/* The path of where the frames stand: field names as written, list indexes, map keys. */
static void ps__path_build(ps__rd *r) {
  r->path[0] = '\0';
  for (int i = r->nf - 1; i >= 0; i--) {
    const ps__frame *t = &r->fr[i];
    if (t->kind == PS__LIST) {
      ps__path_push(r, NULL, t->cur);
    } else if (t->kind == PS__MAP) {
      if (t->has_key)
        ps__path_push(r, t->key, 0);
    } else if (t->f) {
      char jn[96];
      ps__path_push(r, t->spelled == 1 ? t->f->name : ps__json_name(t->f->name, jn, sizeof jn), 0);
    }
  }
}

static int ps__fail(ps__rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ps__fail(ps__rd *r, const char *fmt, ...) {
  if (r->rc)
    return r->rc;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->reason, sizeof r->reason, fmt, ap);
  va_end(ap);
  ps__path_build(r);
  r->rc = PS_EINVAL;
  return PS_EINVAL;
}

/* At most 40 bytes of a value, for "%.*s" in error messages. */
#define PS__SHOW(n) ((int)((n) < 40 ? (n) : 40))

/* s[0..n) for an error message: at most max bytes, a NUL shown as \u0000. */
static const char *ps__show(const char *s, size_t n, size_t max, char *buf, size_t size) {
  size_t k = 0;
  for (size_t i = 0; i < n && i < max && k + 7 < size; i++) {
    if (s[i] == '\0') {
      memcpy(buf + k, "\\u0000", 6);
      k += 6;
    } else {
      buf[k++] = s[i];
    }
  }
  buf[k] = '\0';
  return buf;
}

/* ---- memory ----------------------------------------------------------------- */

static void *ps__alloc(ps__rd *r, size_t n) {
  void *p = r->alloc->alloc(r->alloc->allocator_data, n);
  if (!p && !r->rc) {
    snprintf(r->reason, sizeof r->reason, "out of memory");
    ps__path_build(r);
    r->rc = PS_ENOMEM;
  }
  return p;
}

static void *ps__sys_alloc(void *data, size_t n) {
  (void)data;
  return malloc(n);
}
static void ps__sys_free(void *data, void *p) {
  (void)data;
  free(p);
}
/* What protobuf_c_message_free_unpacked(msg, NULL) frees with. */
static ProtobufCAllocator ps__sys_allocator = {ps__sys_alloc, ps__sys_free, NULL};

/* yajl's own state (its stacks and buffers): the C heap; yajl cannot fail an allocation. */
static void *ps__yajl_malloc(void *ctx, size_t n) {
  (void)ctx;
  void *p = malloc(n);
  if (!p)
    abort();
  return p;
}
static void *ps__yajl_realloc(void *ctx, void *p, size_t n) {
  (void)ctx;
  p = realloc(p, n);
  if (!p)
    abort();
  return p;
}
static void ps__yajl_free(void *ctx, void *p) {
  (void)ctx;
  free(p);
}
static yajl_alloc_funcs ps__yajl_alloc_funcs = {ps__yajl_malloc, ps__yajl_realloc, ps__yajl_free, NULL};

static locale_t ps__c_locale;
static pthread_once_t ps__c_locale_once = PTHREAD_ONCE_INIT;
static void ps__c_locale_init(void) {
  ps__c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
  if (!ps__c_locale)
    abort();
}

/* ---- per-thread state ------------------------------------------------------- */

/*
 * A field lookup remembered: key[0..n) (n <= 24) of message type d names f.
 * The key is kept as the three 8-byte words that cover it (head, middle,
 * tail, zero-padded below 8 bytes), so that comparing them compares the key.
 * Message types are protoc-c's static descriptors: a pointer names the same
 * one for the life of the process.
 */
typedef struct {
  const ProtobufCMessageDescriptor *d;
  const ProtobufCFieldDescriptor *f;
  uint64_t a, m, b;
  unsigned char n, spelled;
} ps__fent;

#define PS__FCACHE 256 /* entries, direct-mapped; a message type has a few dozen keys at most */
#define PS__RCACHE 64

/*
 * What a thread keeps from one decode to the next: its yajl parser (yajl 2
 * has no reset, and a new parser costs more than a small document), the
 * decoding state (frames, field marks), the field lookups (a binary search by
 * name, then a scan by JSON name, would cost more than all the rest of a
 * key's handling) and which message types have required fields. Freed when
 * the thread exits.
 */
struct ps__tls {
  yajl_handle h; /* ready for the next document, or NULL */
  int busy;      /* in ps_pbjson_decode */
  ps__rd rd;
  ps__fent fields[PS__FCACHE];
  struct {
    const ProtobufCMessageDescriptor *d;
    int required; /* the type has required (proto2) fields */
  } req[PS__RCACHE];
};

static pthread_key_t ps__tls_key;
static pthread_once_t ps__tls_once = PTHREAD_ONCE_INIT;
static _Thread_local ps__tls *ps__tls_mine;

static void ps__tls_free(void *p) {
  ps__tls *c = p;
  if (c->h)
    yajl_free(c->h);
  if (c->rd.seen != c->rd.seen_buf)
    free(c->rd.seen);
  free(c);
  ps__tls_mine = NULL;
}
static void ps__tls_key_init(void) {
  if (pthread_key_create(&ps__tls_key, ps__tls_free) != 0)
    abort();
}

static ps__tls *ps__tls_get(void) {
  ps__tls *c = ps__tls_mine;
  if (c)
    return c;
  pthread_once(&ps__tls_once, ps__tls_key_init);
  if (!(c = calloc(1, sizeof *c)) || pthread_setspecific(ps__tls_key, c) != 0)
    abort();
  c->rd.tls = c;
  c->rd.seen = c->rd.seen_buf;
  c->rd.seen_cap = sizeof c->rd.seen_buf;
  return ps__tls_mine = c;
}

/* ---- numbers ---------------------------------------------------------------- */

/* Whether s[0..n) is a JSON number (RFC 8259 grammar, nothing around it). */
static int ps__is_json_number(const char *s, size_t n) {
  size_t i = 0;
  if (i < n && s[i] == '-')
    i++;
  if (i >= n)
    return 0;
  if (s[i] == '0') {
    i++;
  } else if (s[i] >= '1' && s[i] <= '9') {
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++;
  } else {
    return 0;
  }
  if (i < n && s[i] == '.') {
    size_t d = ++i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++;
    if (i == d)
      return 0;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-'))
      i++;
    size_t d = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++;
    if (i == d)
      return 0;
  }
  return i == n;
}

/*
 * Reads a JSON number written as text exactly, as an integer: "12", "-3",
 * "1.0", "1e3", "2500e-2". Returns 0 and the sign and magnitude, -1 if it is
 * not a number or not whole, -2 if the magnitude exceeds 2^64 - 1.
 */
static int ps__int_text(const char *s, size_t n, int *neg, uint64_t *mag) {
  if (!ps__is_json_number(s, n))
    return -1;
  size_t i = 0;
  *neg = s[0] == '-';
  i += (size_t)*neg;
  const char *ip = s + i;
  size_t il = 0, fl = 0;
  while (i < n && s[i] >= '0' && s[i] <= '9')
    i++, il++;
  const char *fp = s + i + 1;
  if (i < n && s[i] == '.')
    for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
      fl++;
  long exp = 0;
  if (i < n) { /* 'e' or 'E' */
    int eneg = s[++i] == '-';
    if (s[i] == '-' || s[i] == '+')
      i++;
    for (; i < n; i++)
      if (exp < 100000)
        exp = exp * 10 + (s[i] - '0');
    if (eneg)
      exp = -exp;
  }
  /* The digits are ip[0..il) fp[0..fl); the value is them times 10^(exp - fl). */
  size_t total = il + fl;
  long keep = (long)total + exp - (long)fl; /* digits left of the point */
#define PS__DIGIT(k) ((k) < il ? ip[(k)] : fp[(k)-il])
  for (long k = keep < 0 ? 0 : keep; k < (long)total; k++)
    if (PS__DIGIT((size_t)k) != '0')
      return -1;
  uint64_t v = 0;
  for (long k = 0; k < keep && k < (long)total; k++) {
    unsigned d = (unsigned)(PS__DIGIT((size_t)k) - '0');
    if (v > (UINT64_MAX - d) / 10)
      return -2;
    v = v * 10 + d;
  }
#undef PS__DIGIT
  for (long k = (long)total; v != 0 && k < keep; k++) {
    if (v > UINT64_MAX / 10)
      return -2;
    v *= 10;
  }
  *mag = v;
  return 0;
}

/*
 * Reads an integer field's value (number, or number in a string) into *out,
 * which must lie in [lo, hi] (signed) or [0, uhi] (is_unsigned).
 */
static int ps__rd_int(ps__rd *r, const ps__val *v, int is_unsigned, int64_t lo, int64_t hi, uint64_t uhi,
                      const char *what, uint64_t *out) {
  int neg = 0;
  uint64_t mag = 0;
  if (v->t == PS__J_NUMBER) {
    int rc = ps__int_text(v->s, v->n, &neg, &mag);
    if (rc == -1)
      return ps__fail(r, "%s: not a whole number", what);
    if (rc == -2)
      return ps__fail(r, "%s: value out of range", what);
  } else if (v->t == PS__J_STRING) {
    int rc = ps__int_text(v->s, v->n, &neg, &mag);
    char show[256];
    if (rc == -1)
      return ps__fail(r, "%s: \"%s\" is not a whole number", what,
                      ps__show(v->s, v->n, 40, show, sizeof show));
    if (rc == -2)
      return ps__fail(r, "%s: %s is out of range", what, ps__show(v->s, v->n, 40, show, sizeof show));
  } else {
    return ps__fail(r, "%s: expected a number or a numeric string", what);
  }
  if (is_unsigned) {
    if ((neg && mag != 0) || mag > uhi)
      return ps__fail(r, "%s: value out of range", what);
    *out = mag;
    return 0;
  }
  if (neg ? mag > (uint64_t)0 - (uint64_t)lo : mag > (uint64_t)hi)
    return ps__fail(r, "%s: value out of range", what);
  *out = neg ? (uint64_t)0 - mag : mag;
  return 0;
}

/* strtod (or strtof) in the C locale of the JSON number s[0..n). */
static double ps__strtod(const char *s, size_t n, int is_float) {
  char buf[64], *p = buf;
  if (n >= sizeof buf && !(p = malloc(n + 1)))
    abort();
  memcpy(p, s, n);
  p[n] = '\0';
  pthread_once(&ps__c_locale_once, ps__c_locale_init);
  double x = is_float ? (double)strtof_l(p, NULL, ps__c_locale) : strtod_l(p, NULL, ps__c_locale);
  if (p != buf)
    free(p);
  return x;
}

static int ps__rd_floating(ps__rd *r, const ps__val *v, int is_float, double *out) {
  const char *what = is_float ? "float" : "double";
  const char *s = v->s;
  size_t n = v->n;
  if (v->t == PS__J_STRING) {
    if (n == 3 && memcmp(s, "NaN", 3) == 0) {
      *out = NAN;
      return 0;
    }
    if (n == 8 && memcmp(s, "Infinity", 8) == 0) {
      *out = INFINITY;
      return 0;
    }
    if (n == 9 && memcmp(s, "-Infinity", 9) == 0) {
      *out = -INFINITY;
      return 0;
    }
    char show[256];
    if (!ps__is_json_number(s, n))
      return ps__fail(r, "%s: \"%s\" is not a number", what, ps__show(s, n, 40, show, sizeof show));
  } else if (v->t != PS__J_NUMBER) {
    return ps__fail(r, "%s: expected a number or a string", what);
  }
  double x = ps__strtod(s, n, is_float);
  if (isinf(x))
    return ps__fail(r, "%s: %.*s is out of range", what, PS__SHOW(n), s);
  *out = x;
  return 0;
}

/* ---- bytes ------------------------------------------------------------------ */

/*
 * Decodes base64 as Go's protojson does: URL-safe alphabet if '-' or '_'
 * occurs, standard otherwise; padding present iff the length is a multiple
 * of 4. out must hold n / 4 * 3 + 3 bytes. Returns the length, or -1.
 */
static long ps__base64_decode(const char *s, size_t n, uint8_t *out) {
  int url = memchr(s, '-', n) || memchr(s, '_', n);
  if (n % 4 == 0) {
    size_t pad = 0;
    while (pad < 2 && n > pad && s[n - 1 - pad] == '=')
      pad++;
    n -= pad;
    if (pad && n % 4 + pad != 4)
      return -1;
  }
  if (n % 4 == 1)
    return -1;
  size_t k = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned c = (unsigned char)s[i], d;
    if (c >= 'A' && c <= 'Z')
      d = c - 'A';
    else if (c >= 'a' && c <= 'z')
      d = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      d = c - '0' + 52;
    else if (c == (url ? '-' : '+'))
      d = 62;
    else if (c == (url ? '_' : '/'))
      d = 63;
    else
      return -1;
    acc = acc << 6 | d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[k++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  return (long)k;
}

/* ---- names ------------------------------------------------------------------ */

/* Compares the NUL-terminated name with key[0..n) in strcmp's order. */
static int ps__name_cmp(const char *name, const char *key, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char a = (unsigned char)name[i], b = (unsigned char)key[i];
    if (a == 0)
      return -1; /* name is shorter (or key holds a NUL here: no match either way) */
    if (a != b)
      return a < b ? -1 : 1;
  }
  return name[n] ? 1 : 0;
}

/* Whether key[0..n) is the JSON name of the field called name. */
static int ps__json_name_eq(const char *name, const char *key, size_t n) {
  size_t i = 0;
  int up = 0;
  for (; *name; name++) {
    if (*name == '_') {
      up = 1;
      continue;
    }
    char c = (up && *name >= 'a' && *name <= 'z') ? (char)(*name - 'a' + 'A') : *name;
    up = 0;
    if (i == n || key[i++] != c)
      return 0;
  }
  return i == n;
}

/* The field named key[0..n), by its name (*spelled = 1) or its JSON name (2), or NULL. */
static const ProtobufCFieldDescriptor *ps__find_field(const ProtobufCMessageDescriptor *d, const char *key,
                                                      size_t n, unsigned char *spelled) {
  unsigned lo = 0, hi = d->n_fields;
  while (lo < hi) {
    unsigned mid = lo + (hi - lo) / 2;
    const ProtobufCFieldDescriptor *f = &d->fields[d->fields_sorted_by_name[mid]];
    int c = ps__name_cmp(f->name, key, n);
    if (c == 0) {
      *spelled = 1;
      return f;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (unsigned i = 0; i < d->n_fields; i++)
    if (ps__json_name_eq(d->fields[i].name, key, n)) {
      *spelled = 2;
      return &d->fields[i];
    }
  return NULL;
}

/* ps__find_field through the thread's cache. */
static const ProtobufCFieldDescriptor *ps__lookup(ps__tls *c, const ProtobufCMessageDescriptor *d,
                                                  const char *key, size_t n, unsigned char *spelled) {
  if (n == 0 || n > 24)
    return ps__find_field(d, key, n, spelled);
  const unsigned char *k = (const unsigned char *)key;
  uint64_t a = 0, m = 0, b = 0;
  if (n >= 8) {
    a = ps_word_load8(k);
    b = ps_word_load8(k + n - 8);
    if (n > 16)
      m = ps_word_load8(k + 8);
  } else {
    for (size_t i = 0; i < n; i++)
      a |= (uint64_t)k[i] << (8 * i);
  }
  uint64_t h = (a ^ (uint64_t)(uintptr_t)d) * 0x9E3779B97F4A7C15ull ^ (b + m + n) * 0xC2B2AE3D27D4EB4Full;
  ps__fent *e = &c->fields[(h ^ h >> 29) >> 56];
  if (e->d == d && e->n == n && e->a == a && e->b == b && e->m == m) {
    *spelled = e->spelled;
    return e->f;
  }
  const ProtobufCFieldDescriptor *f = ps__find_field(d, key, n, spelled);
  if (f)
    *e = (ps__fent){d, f, a, m, b, (unsigned char)n, *spelled};
  return f;
}

/* Whether message type d has required fields, through the thread's cache. */
static int ps__has_required(ps__tls *c, const ProtobufCMessageDescriptor *d) {
  size_t i = ((uintptr_t)d >> 4) % PS__RCACHE;
  if (c->req[i].d != d) {
    int req = 0;
    for (unsigned fi = 0; fi < d->n_fields && !req; fi++)
      req = d->fields[fi].label == PROTOBUF_C_LABEL_REQUIRED;
    c->req[i].d = d;
    c->req[i].required = req;
  }
  return c->req[i].required;
}

static const ProtobufCEnumValue *ps__find_enum(const ProtobufCEnumDescriptor *ed, const char *key, size_t n) {
  unsigned lo = 0, hi = ed->n_value_names;
  while (lo < hi) {
    unsigned mid = lo + (hi - lo) / 2;
    int c = ps__name_cmp(ed->values_by_name[mid].name, key, n);
    if (c == 0)
      return &ed->values[ed->values_by_name[mid].index];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

static const char *ps__type_word(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT32: return "int32";
  case PROTOBUF_C_TYPE_SINT32: return "sint32";
  case PROTOBUF_C_TYPE_SFIXED32: return "sfixed32";
  case PROTOBUF_C_TYPE_INT64: return "int64";
  case PROTOBUF_C_TYPE_SINT64: return "sint64";
  case PROTOBUF_C_TYPE_SFIXED64: return "sfixed64";
  case PROTOBUF_C_TYPE_UINT32: return "uint32";
  case PROTOBUF_C_TYPE_FIXED32: return "fixed32";
  case PROTOBUF_C_TYPE_UINT64: return "uint64";
  case PROTOBUF_C_TYPE_FIXED64: return "fixed64";
  default: return "value";
  }
}

/* ---- frames ----------------------------------------------------------------- */

static ps__frame *ps__push(ps__rd *r, int kind, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                           int depth) {
  if (r->nf == PS__MAX_FRAMES) { /* cannot happen: the depth check comes first */
    ps__fail(r, "messages nested deeper than %d", PS_PBJSON__MAX_DEPTH);
    return NULL;
  }
  ps__frame *t = &r->fr[r->nf++];
  t->kind = (unsigned char)kind;
  t->has_key = 0;
  t->depth = depth;
  t->m = m;
  t->f = f;
  t->n = t->cap = t->cur = 0;
  return t;
}

static void ps__push_msg(ps__rd *r, const ProtobufCMessageDescriptor *d, ProtobufCMessage *m, int depth) {
  size_t need = r->seen_len + d->n_fields;
  if (need > r->seen_cap) {
    size_t cap = need * 2;
    unsigned char *p = r->seen == r->seen_buf ? malloc(cap) : realloc(r->seen, cap);
    if (!p)
      abort();
    if (r->seen == r->seen_buf)
      memcpy(p, r->seen_buf, r->seen_len);
    r->seen = p;
    r->seen_cap = cap;
  }
  ps__frame *t = ps__push(r, PS__MSG, m, NULL, depth);
  if (!t)
    return;
  t->d = d;
  t->seen = r->seen_len;
  memset(r->seen + r->seen_len, 0, d->n_fields);
  r->seen_len = need;
}

static void ps__pop(ps__rd *r) {
  ps__frame *t = &r->fr[--r->nf];
  if (t->kind == PS__MSG)
    r->seen_len = t->seen;
}

static ProtobufCMessage *ps__new_msg(ps__rd *r, const ProtobufCMessageDescriptor *d) {
  ProtobufCMessage *m = ps__alloc(r, d->sizeof_message);
  if (!m)
    return NULL;
  if (d->message_init) {
    d->message_init(m);
  } else {
    memset(m, 0, d->sizeof_message);
    m->descriptor = d;
  }
  return m;
}

/*
 * Adds a zeroed element of es bytes to the list or map of frame t and returns
 * it. The array grows by doubling, through the caller's allocator (which has
 * no realloc): a new array, the elements copied, the old one freed; the field
 * and its count always describe the elements filled so far.
 */
static void *ps__grow(ps__rd *r, ps__frame *t, size_t es) {
  char **field = PS_PBJSON__AT(char *, t->m, t->f->offset);
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 8;
    if (cap > SIZE_MAX / 2 / es) {
      ps__fail(r, "too many elements");
      return NULL;
    }
    char *arr = ps__alloc(r, cap * es);
    if (!arr)
      return NULL;
    char *old = *field;
    if (t->n)
      memcpy(arr, old, t->n * es);
    *field = arr;
    if (old)
      r->alloc->free(r->alloc->allocator_data, old);
    t->cap = cap;
  }
  char *slot = *field + t->n * es;
  memset(slot, 0, es);
  *PS_PBJSON__AT(size_t, t->m, t->f->quantifier_offset) = ++t->n;
  return slot;
}

/* ---- values ----------------------------------------------------------------- */

/* Copies s[0..n) into a new NUL-terminated string at *dst. */
static int ps__rd_string(ps__rd *r, const char *s, size_t n, char **dst) {
  char *p = ps__alloc(r, n + 1);
  if (!p)
    return r->rc;
  memcpy(p, s, n);
  p[n] = '\0';
  *dst = p;
  return 0;
}

/* Sets the has_ flag of a proto2 (or proto3 `optional`) scalar. */
static void ps__mark_present(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
      f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
    *PS_PBJSON__AT(protobuf_c_boolean, m, f->quantifier_offset) = 1;
}

/*
 * Reads one value of f's type from v into dst (an element, for lists). A
 * message starts a frame of its own, depth + 1 deep, that its fields go to.
 */
static int ps__put(ps__rd *r, const ProtobufCFieldDescriptor *f, const ps__val *v, void *dst, int depth) {
  uint64_t u;
  int rc;
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    if ((rc = ps__rd_int(r, v, 0, INT32_MIN, INT32_MAX, 0, ps__type_word(f->type), &u)))
      return rc;
    *(int32_t *)dst = (int32_t)(int64_t)u;
    return 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    if ((rc = ps__rd_int(r, v, 0, INT64_MIN, INT64_MAX, 0, ps__type_word(f->type), &u)))
      return rc;
    *(int64_t *)dst = (int64_t)u;
    return 0;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    if ((rc = ps__rd_int(r, v, 1, 0, 0, UINT32_MAX, ps__type_word(f->type), &u)))
      return rc;
    *(uint32_t *)dst = (uint32_t)u;
    return 0;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    if ((rc = ps__rd_int(r, v, 1, 0, 0, UINT64_MAX, ps__type_word(f->type), &u)))
      return rc;
    *(uint64_t *)dst = u;
    return 0;
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_DOUBLE: {
    double x = 0;
    if ((rc = ps__rd_floating(r, v, f->type == PROTOBUF_C_TYPE_FLOAT, &x)))
      return rc;
    if (f->type == PROTOBUF_C_TYPE_FLOAT)
      *(float *)dst = (float)x; /* exact: x came from strtof */
    else
      *(double *)dst = x;
    return 0;
  }
  case PROTOBUF_C_TYPE_BOOL:
    if (v->t != PS__J_BOOL)
      return ps__fail(r, "bool: expected true or false");
    *(protobuf_c_boolean *)dst = v->b != 0;
    return 0;
  case PROTOBUF_C_TYPE_ENUM: {
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    if (v->t == PS__J_STRING) {
      const ProtobufCEnumValue *ev = ps__find_enum(ed, v->s, v->n);
      char show[256];
      if (!ev)
        return ps__fail(r, "%s has no value named \"%s\"", ed->name,
                        ps__show(v->s, v->n, 40, show, sizeof show));
      *(int *)dst = ev->value;
      return 0;
    }
    if (v->t != PS__J_NUMBER)
      return ps__fail(r, "%s: expected a name or a number", ed->name);
    if ((rc = ps__rd_int(r, v, 0, INT32_MIN, INT32_MAX, 0, ed->name, &u)))
      return rc;
    *(int *)dst = (int)(int64_t)u; /* proto3 enums are open: any number is kept */
    return 0;
  }
  case PROTOBUF_C_TYPE_STRING:
    if (v->t != PS__J_STRING)
      return ps__fail(r, "string: expected a JSON string");
    /* protobuf-c strings end at their first NUL: refuse rather than truncate. A string that
       yajl hands over in the text itself had no escapes, and yajl refuses a raw NUL. */
    if ((uintptr_t)v->s - (uintptr_t)r->json >= r->len && memchr(v->s, '\0', v->n))
      return ps__fail(r, "string: contains U+0000, which a protobuf-c string cannot hold");
    return ps__rd_string(r, v->s, v->n, (char **)dst);
  case PROTOBUF_C_TYPE_BYTES: {
    if (v->t != PS__J_STRING)
      return ps__fail(r, "bytes: expected a base64 string");
    ProtobufCBinaryData *b = dst;
    if (v->n == 0)
      return 0;
    uint8_t *p = ps__alloc(r, v->n / 4 * 3 + 3);
    if (!p)
      return r->rc;
    b->data = p; /* linked first: freed with the message if decoding fails */
    long k = ps__base64_decode(v->s, v->n, p);
    if (k < 0)
      return ps__fail(r, "bytes: invalid base64");
    b->len = (size_t)k;
    return 0;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessageDescriptor *md = f->descriptor;
    if (v->t != PS__J_OBJECT)
      return ps__fail(r, "expected an object (%s)", md->name);
    if (depth + 1 > PS_PBJSON__MAX_DEPTH)
      return ps__fail(r, "messages nested deeper than %d", PS_PBJSON__MAX_DEPTH);
    ProtobufCMessage *sub = ps__new_msg(r, md);
    if (!sub)
      return r->rc;
    *(ProtobufCMessage **)dst = sub;
    ps__push_msg(r, md, sub, depth + 1);
    return r->rc;
  }
  }
  return ps__fail(r, "unsupported field type");
}

/* A value for the field that frame t's last key named. */
static void ps__msg_value(ps__rd *r, ps__frame *t, const ps__val *v) {
  const ProtobufCFieldDescriptor *f = t->f;
  if (v->t == PS__J_NULL)
    return; /* null: the default, and for a oneof member, not set */
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    if (ps_pbjson__is_map(t->d, f)) {
      if (v->t != PS__J_OBJECT)
        ps__fail(r, "expected an object (a map)");
      else
        ps__push(r, PS__MAP, t->m, f, t->depth);
    } else {
      if (v->t != PS__J_ARRAY)
        ps__fail(r, "expected an array");
      else
        ps__push(r, PS__LIST, t->m, f, t->depth);
    }
    return;
  }
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    uint32_t *c = PS_PBJSON__AT(uint32_t, t->m, f->quantifier_offset);
    if (*c != 0) {
      const char *other = "";
      for (unsigned i = 0; i < t->d->n_fields; i++)
        if (t->d->fields[i].id == *c)
          other = t->d->fields[i].name;
      t->f = NULL; /* the error is the message's, not the field's */
      ps__fail(r, "\"%s\" and \"%s\" are members of the same oneof of %s; at most one may be set", other,
               f->name, t->d->name);
      return;
    }
    *c = f->id; /* before the value, so that a failure frees it */
  }
  if (ps__put(r, f, v, (char *)t->m + f->offset, t->depth) == 0)
    ps__mark_present(t->m, f);
}

/* An element of the list of frame t. */
static void ps__list_value(ps__rd *r, ps__frame *t, const ps__val *v) {
  t->cur = t->n;
  if (v->t == PS__J_NULL) {
    ps__fail(r, "null is not a list element");
    return;
  }
  void *slot = ps__grow(r, t, ps_pbjson__elem_size(t->f->type));
  if (slot)
    ps__put(r, t->f, v, slot, t->depth);
}

/* The value of the entry whose key frame t has just read. */
static void ps__map_value(ps__rd *r, ps__frame *t, const ps__val *v) {
  if (v->t == PS__J_NULL) {
    ps__fail(r, "null is not a map value");
    return;
  }
  const ProtobufCFieldDescriptor *vf = &((const ProtobufCMessageDescriptor *)t->f->descriptor)->fields[1];
  if (ps__put(r, vf, v, (char *)t->entry + vf->offset, t->depth) == 0)
    ps__mark_present(t->entry, vf);
}

/* Every JSON value, wherever it stands. */
static void ps__value(ps__rd *r, const ps__val *v) {
  if (r->nf == 0) {
    if (v->t != PS__J_OBJECT || r->root) {
      ps__fail(r, "expected an object (%s)", r->desc->name);
      return;
    }
    r->root = ps__new_msg(r, r->desc);
    if (r->root)
      ps__push_msg(r, r->desc, r->root, 0);
    return;
  }
  ps__frame *t = &r->fr[r->nf - 1];
  if (t->kind == PS__MSG)
    ps__msg_value(r, t, v);
  else if (t->kind == PS__LIST)
    ps__list_value(r, t, v);
  else
    ps__map_value(r, t, v);
}

/* A key inside a message: which field comes next. */
static void ps__msg_key(ps__rd *r, ps__frame *t, const char *key, size_t n) {
  unsigned char spelled = 0;
  t->f = NULL;
  const ProtobufCFieldDescriptor *f = ps__lookup(r->tls, t->d, key, n, &spelled);
  if (!f) {
    char show[400];
    ps__fail(r, "unknown field \"%s\" in %s", ps__show(key, n, 64, show, sizeof show), t->d->name);
    return;
  }
  unsigned char *seen = r->seen + t->seen + (f - t->d->fields);
  if (*seen) {
    /* A field may appear once, by either name. */
    if (*seen == spelled)
      ps__fail(r, "duplicate key \"%.*s\" in %s", PS__SHOW(n), key, t->d->name);
    else
      ps__fail(r, "field \"%s\" of %s given twice", f->name, t->d->name);
    return;
  }
  *seen = spelled;
  t->f = f;
  t->spelled = spelled;
}

/* A key inside a map: a new entry. */
static void ps__map_key(ps__rd *r, ps__frame *t, const char *key, size_t n) {
  size_t kl = n < 40 ? n : 40;
  memcpy(t->key, key, kl);
  t->key[kl] = '\0';
  t->has_key = 1;
  const ProtobufCMessageDescriptor *ed = t->f->descriptor;
  const ProtobufCFieldDescriptor *kf = &ed->fields[0];
  ProtobufCMessage **slot = ps__grow(r, t, sizeof *slot);
  if (!slot)
    return;
  ProtobufCMessage *e = ps__new_msg(r, ed);
  if (!e)
    return;
  *slot = t->entry = e;
  void *dst = (char *)e + kf->offset;
  if (kf->type == PROTOBUF_C_TYPE_BOOL) {
    if (!(n == 4 && memcmp(key, "true", 4) == 0) && !(n == 5 && memcmp(key, "false", 5) == 0)) {
      char show[256];
      ps__fail(r, "map key \"%s\": expected \"true\" or \"false\"", ps__show(key, n, 40, show, sizeof show));
      return;
    }
    *(protobuf_c_boolean *)dst = n == 4;
  } else {
    ps__val kv = {PS__J_STRING, key, n, 0};
    if (ps__put(r, kf, &kv, dst, t->depth))
      return;
  }
  ps__mark_present(e, kf);
}

/* Orders map entries by key (any consistent order: only equality matters). */
static int ps__key_cmp(const void *a, const void *b, void *arg) {
  const ProtobufCFieldDescriptor *kf = arg;
  const char *ka = (const char *)*(ProtobufCMessage *const *)a + kf->offset;
  const char *kb = (const char *)*(ProtobufCMessage *const *)b + kf->offset;
  switch (kf->type) {
  case PROTOBUF_C_TYPE_STRING: return strcmp(*(char *const *)ka, *(char *const *)kb);
  case PROTOBUF_C_TYPE_BOOL: {
    protobuf_c_boolean x = *(const protobuf_c_boolean *)ka, y = *(const protobuf_c_boolean *)kb;
    return (x > y) - (x < y);
  }
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: {
    uint64_t x = *(const uint64_t *)ka, y = *(const uint64_t *)kb;
    return (x > y) - (x < y);
  }
  default: {
    uint32_t x = *(const uint32_t *)ka, y = *(const uint32_t *)kb;
    return (x > y) - (x < y);
  }
  }
}

/* The key of entry e as text, for an error message. */
static const char *ps__key_text(const ProtobufCFieldDescriptor *kf, const ProtobufCMessage *e, char *buf,
                                size_t size) {
  const char *k = (const char *)e + kf->offset;
  switch (kf->type) {
  case PROTOBUF_C_TYPE_STRING: snprintf(buf, size, "%.40s", *(char *const *)k); break;
  case PROTOBUF_C_TYPE_BOOL:
    snprintf(buf, size, "%s", *(const protobuf_c_boolean *)k ? "true" : "false");
    break;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64: snprintf(buf, size, "%" PRId64, *(const int64_t *)k); break;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: snprintf(buf, size, "%" PRIu64, *(const uint64_t *)k); break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: snprintf(buf, size, "%" PRIu32, *(const uint32_t *)k); break;
  default: snprintf(buf, size, "%" PRId32, *(const int32_t *)k); break;
  }
  return buf;
}

/* The end of a map: no key may appear twice (compared as values, as Go's protojson does). */
static void ps__map_end(ps__rd *r, ps__frame *t) {
  t->has_key = 0;
  if (t->n < 2)
    return;
  const ProtobufCFieldDescriptor *kf = &((const ProtobufCMessageDescriptor *)t->f->descriptor)->fields[0];
  ProtobufCMessage **arr = *PS_PBJSON__AT(ProtobufCMessage **, t->m, t->f->offset);
  const ProtobufCMessage *dup = NULL;
  if (t->n <= 8) {
    for (size_t i = 1; i < t->n && !dup; i++)
      for (size_t j = 0; j < i && !dup; j++)
        if (ps__key_cmp(&arr[i], &arr[j], (void *)kf) == 0)
          dup = arr[i];
  } else {
    ProtobufCMessage **sorted = malloc(t->n * sizeof *sorted);
    if (!sorted)
      abort();
    memcpy(sorted, arr, t->n * sizeof *sorted);
    qsort_r(sorted, t->n, sizeof *sorted, ps__key_cmp, (void *)kf);
    for (size_t i = 1; i < t->n && !dup; i++)
      if (ps__key_cmp(&sorted[i - 1], &sorted[i], (void *)kf) == 0)
        dup = sorted[i];
    free(sorted);
  }
  if (dup) {
    char buf[64];
    ps__fail(r, "duplicate map key \"%s\"", ps__key_text(kf, dup, buf, sizeof buf));
  }
}

/* The end of a message: its required (proto2) fields must have been given. */
static void ps__msg_end(ps__rd *r, ps__frame *t) {
  t->f = NULL;
  if (!ps__has_required(r->tls, t->d))
    return;
  const unsigned char *seen = r->seen + t->seen;
  for (unsigned i = 0; i < t->d->n_fields; i++)
    if (t->d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i]) {
      ps__fail(r, "required field \"%s\" of %s is missing", t->d->fields[i].name, t->d->name);
      return;
    }
}

/*
 * ---- yajl's callbacks ------------------------------------------------------
 *
 * After an error they only keep count of the nesting, to find where the
 * top-level value ends: what follows it is checked once yajl is done.
 */

/* A scalar: at the top level, it is the whole value. */
static void ps__scalar_end(ps__rd *r) {
  if (r->level == 0 && r->root_end == SIZE_MAX)
    r->root_end = r->completing ? r->len : yajl_get_bytes_consumed(r->h);
}

/* A scalar value (kind, text s[0..n) or boolean b) where the parser stands. */
static int ps__scalar(ps__rd *r, int kind, const char *s, size_t n, int b) {
  ps__scalar_end(r);
  if (!r->rc) {
    ps__val v = {kind, s, n, b};
    ps__value(r, &v);
  }
  return 1;
}

static int ps__cb_null(void *ctx) { return ps__scalar(ctx, PS__J_NULL, NULL, 0, 0); }
static int ps__cb_boolean(void *ctx, int b) { return ps__scalar(ctx, PS__J_BOOL, NULL, 0, b); }
static int ps__cb_number(void *ctx, const char *s, size_t n) { return ps__scalar(ctx, PS__J_NUMBER, s, n, 0); }
static int ps__cb_string(void *ctx, const unsigned char *s, size_t n) {
  return ps__scalar(ctx, PS__J_STRING, (const char *)s, n, 0);
}

/* An object or an array opens where the parser stands. */
static int ps__open(ps__rd *r, int kind) {
  if (!r->rc) {
    ps__val v = {kind, NULL, 0, 0};
    ps__value(r, &v);
  }
  r->level++;
  return 1;
}

static int ps__cb_start_map(void *ctx) { return ps__open(ctx, PS__J_OBJECT); }
static int ps__cb_start_array(void *ctx) { return ps__open(ctx, PS__J_ARRAY); }

/* An object or an array closes: the root's closing marks where the document ends. */
static void ps__close(ps__rd *r) {
  if (--r->level == 0 && r->root_end == SIZE_MAX)
    r->root_end = yajl_get_bytes_consumed(r->h);
}

static int ps__cb_map_key(void *ctx, const unsigned char *key, size_t n) {
  ps__rd *r = ctx;
  if (!r->rc) {
    ps__frame *t = &r->fr[r->nf - 1];
    if (t->kind == PS__MSG)
      ps__msg_key(r, t, (const char *)key, n);
    else
      ps__map_key(r, t, (const char *)key, n);
  }
  return 1;
}

static int ps__cb_end_map(void *ctx) {
  ps__rd *r = ctx;
  ps__close(r);
  if (!r->rc) {
    ps__frame *t = &r->fr[r->nf - 1];
    if (t->kind == PS__MSG)
      ps__msg_end(r, t);
    else
      ps__map_end(r, t);
    if (!r->rc)
      ps__pop(r);
  }
  return 1;
}

static int ps__cb_end_array(void *ctx) {
  ps__rd *r = ctx;
  ps__close(r);
  if (!r->rc)
    ps__pop(r);
  return 1;
}

static const yajl_callbacks ps__callbacks = {
    ps__cb_null,      ps__cb_boolean,   NULL,           NULL,           ps__cb_number,
    ps__cb_string,    ps__cb_start_map, ps__cb_map_key, ps__cb_end_map, ps__cb_start_array,
    ps__cb_end_array,
};

/* ---- what yajl lets through ------------------------------------------------- */

/* Reads 4 hex digits at p (before end) into *cp; 0 if they are not there. */
static int ps__hex4(const char *p, const char *end, unsigned *cp) {
  if (end - p < 4)
    return 0;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = (unsigned char)p[i], d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
      d = (c | 0x20) - 'a' + 10;
    else
      return 0;
    v = v << 4 | d;
  }
  *cp = v;
  return 1;
}

/*
 * Finds what proto3 JSON refuses and yajl would accept (see the top of the
 * file): returns its offset in json[0..len), with what it is in *why, or
 * SIZE_MAX. Escapes yajl refuses anyway (a bad hex digit) are left to it.
 */
static size_t ps__prescan(const char *json, size_t len, const char **why) {
  if (len == 0)
    return SIZE_MAX;
  size_t bad = ps_utf8_prefix(json, len);
  if (bad < len) {
    *why = "invalid UTF-8";
    return bad;
  }
  const char *end = json + len;
  for (const char *p = memchr(json, '\\', len); p; p = memchr(p, '\\', (size_t)(end - p))) {
    const char *esc = p++;
    if (p == end)
      break;
    if (*p++ != 'u')
      continue; /* a one-character escape, skipped whole (it may be "\\") */
    unsigned cp, lo;
    if (!ps__hex4(p, end, &cp))
      continue;
    p += 4;
    if (cp < 0xD800 || cp > 0xDFFF)
      continue;
    if (cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u' && ps__hex4(p + 2, end, &lo) &&
        lo >= 0xDC00 && lo <= 0xDFFF) {
      p += 6;
      continue;
    }
    *why = "\\u escape of an unpaired UTF-16 surrogate";
    return (size_t)(esc - json);
  }
  /* JSON's whitespace is space, tab, LF and CR; these are no more valid inside a string. */
  const char *vt = memchr(json, '\v', len), *ff = memchr(json, '\f', len);
  if (vt || ff) {
    const char *p = !vt ? ff : !ff ? vt : vt < ff ? vt : ff;
    *why = *p == '\v' ? "invalid character U+000B" : "invalid character U+000C";
    return (size_t)(p - json);
  }
  return SIZE_MAX;
}

/* "invalid JSON (line L, column C): what", the position being json[at] (characters, from 1). */
static void ps__syntax_error(char *err, size_t errlen, const char *json, size_t len, size_t at,
                             const char *what) {
  if (!err || !errlen)
    return;
  int line = 1, col = 1;
  for (size_t i = 0; i < at && i < len; i++) {
    if (json[i] == '\n')
      line++, col = 1;
    else if (((unsigned char)json[i] & 0xC0) != 0x80)
      col++;
  }
  snprintf(err, errlen, "invalid JSON (line %d, column %d): %s", line, col, what);
}

/* A parser for documents one after the other: nothing but whitespace may follow a value (checked here). */
static yajl_handle ps__parser(ps__rd *r) {
  yajl_handle h = yajl_alloc(&ps__callbacks, &ps__yajl_alloc_funcs, r);
  if (!h)
    abort();
  yajl_config(h, yajl_allow_comments, 0);
  yajl_config(h, yajl_allow_partial_values, 0);
  yajl_config(h, yajl_allow_trailing_garbage, 0);
  /* After a document, the parser waits for the next value instead of for the end: it can be reused. */
  yajl_config(h, yajl_allow_multiple_values, 1);
  yajl_config(h, yajl_dont_validate_strings, 1); /* the prescan does, more strictly */
  return h;
}

/* Parses json[0..len) into r; a syntax error goes into what (where: *at), else what stays "". */
static void ps__parse(ps__rd *r, const char *json, size_t len, char *what, size_t wlen, size_t *at) {
  yajl_handle h = r->h;
  yajl_status st = yajl_parse(h, (const unsigned char *)json, len);
  *at = yajl_get_bytes_consumed(h);
  if (st == yajl_status_ok) {
    r->completing = 1;
    st = yajl_complete_parse(h);
    *at = len; /* what completing finds wrong is at the end */
  }
  if (r->root_end != SIZE_MAX) {
    /* After the value: whatever yajl made of the rest, only whitespace may follow. */
    for (*at = r->root_end; *at < len && json[*at] && strchr(" \t\n\r", json[*at]); ++*at)
      ;
    if (*at < len || st != yajl_status_ok)
      snprintf(what, wlen, "trailing garbage");
  } else if (st != yajl_status_ok) {
    /* "parse error: premature EOF\n": the part after the first ": ", without the newline. */
    unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
    const char *m = msg ? (const char *)msg : "syntax error", *colon = strstr(m, ": ");
    snprintf(what, wlen, "%s", colon ? colon + 2 : m);
    size_t wl = strlen(what);
    while (wl && (what[wl - 1] == '\n' || what[wl - 1] == '.'))
      what[--wl] = '\0';
    if (msg)
      yajl_free_error(h, msg);
  } else {
    snprintf(what, wlen, "premature EOF"); /* nothing but whitespace */
  }
}

int ps_pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                     ProtobufCAllocator *alloc, ProtobufCMessage **out, char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen)
    err[0] = '\0';
  const char *why = NULL;
  size_t at = ps__prescan(json, len, &why);
  if (at != SIZE_MAX) {
    ps__syntax_error(err, errlen, json, len, at, why);
    return PS_EINVAL;
  }

  ps__tls *c = ps__tls_get();
  if (c->busy)
    abort(); /* called again from the allocator: the thread's state is in use */
  c->busy = 1;
  ps__rd *r = &c->rd;
  r->alloc = alloc ? alloc : &ps__sys_allocator;
  r->desc = desc;
  r->root = NULL;
  r->rc = 0;
  r->reason[0] = r->path[0] = '\0';
  r->seen_len = 0;
  r->json = json;
  r->len = len;
  r->completing = 0;
  r->level = 0;
  r->root_end = SIZE_MAX;
  r->nf = 0;
  r->h = c->h ? c->h : ps__parser(r);
  c->h = NULL;

  char what[128] = "";
  ps__parse(r, json, len, what, sizeof what, &at);
  int rc = r->rc;
  if (what[0]) {
    /* A syntax error: it wins. The parser is left in an error state, or with a partial token. */
    ps__syntax_error(err, errlen, json, len, at, what);
    yajl_free(r->h);
    rc = PS_EINVAL;
  } else {
    c->h = r->h;
    if (!rc && !r->root) /* cannot happen: yajl has seen a whole value */
      rc = ps__fail(r, "expected an object (%s)", desc->name);
    if (rc && err && errlen) {
      /* The reason matters most: a path too long for err loses its start. */
      const char *p = r->path[0] == '.' ? r->path + 1 : r->path;
      size_t pl = strlen(p), rl = strlen(r->reason);
      if (pl == 0 || errlen < rl + 3 + 4)
        snprintf(err, errlen, "%s", r->reason);
      else if (pl + 2 + rl < errlen)
        snprintf(err, errlen, "%s: %s", p, r->reason);
      else
        snprintf(err, errlen, "...%s: %s", p + pl - (errlen - rl - 6), r->reason);
    }
  }
  if (rc) {
    if (r->root)
      protobuf_c_message_free_unpacked(r->root, r->alloc);
  } else {
    *out = r->root;
  }
  r->root = NULL;
  c->busy = 0;
  return rc;
}
