/*
 * ps_pbjson_decode: proto3 JSON into protobuf-c messages (see ps_pbjson.h).
 *
 * Consumers read back what a publisher (penstock, or the Go peer) wrote, and
 * the HTTP ingest path reads what clients send, so this accepts everything the
 * proto3 JSON mapping allows, as Go's protojson.Unmarshal does: either field
 * name, numbers or strings for integers (with exponents, as long as the value
 * is whole), "NaN"/"Infinity", enum names or numbers, standard or URL-safe
 * base64 with or without padding, null for "leave at the default". It refuses
 * what protojson refuses: unknown or repeated fields, two members of a oneof,
 * wrong JSON types, out-of-range numbers, invalid UTF-8.
 *
 * jansson does the parsing. Its integers are 64-bit signed and it refuses
 * larger integer literals outright, yet Go writes the double 1e20 as
 * 100000000000000000000; so a document that overflows is parsed a second time
 * with every number as a double, and in that pass an integer field accepts
 * only values below 2^53, which a double holds exactly (a larger one must be
 * quoted, as every proto3 JSON writer does for 64-bit integers anyway). The
 * same goes for a document with the number -0 (a negative zero double, as Go
 * writes it), which jansson would otherwise read as the integer 0.
 *
 * The message is built the way protobuf-c's unpacker builds one, with the
 * caller's allocator: each string and bytes value and each array in its own
 * allocation, each submessage initialised by its descriptor, so that
 * protobuf_c_message_free_unpacked frees it. Every allocation is linked into
 * the tree as soon as it is made, so one free cleans up after any error.
 */
#include <jansson.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_pbjson.h"
#include "codec/ps_pbjson_internal.h"
#include "core/ps_error.h"

/* An integer read from a JSON double must be below this to be known exactly. */
#define PS__EXACT_INT 9007199254740992.0 /* 2^53 */

typedef struct {
  ProtobufCAllocator *alloc;
  int rc;
  char reason[192]; /* what is wrong */
  char path[256];   /* where, built while unwinding */
} ps__rd;

static int ps__fail(ps__rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ps__fail(ps__rd *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->reason, sizeof r->reason, fmt, ap);
  va_end(ap);
  r->path[0] = '\0';
  r->rc = PS_EINVAL;
  return PS_EINVAL;
}

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

static void *ps__alloc(ps__rd *r, size_t n) {
  void *p = r->alloc->alloc(r->alloc->allocator_data, n);
  if (!p) {
    snprintf(r->reason, sizeof r->reason, "out of memory");
    r->path[0] = '\0';
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

static locale_t ps__c_locale;
static pthread_once_t ps__c_locale_once = PTHREAD_ONCE_INIT;
static void ps__c_locale_init(void) {
  ps__c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
  if (!ps__c_locale)
    abort();
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
static int ps__rd_int(ps__rd *r, json_t *v, int is_unsigned, int64_t lo, int64_t hi, uint64_t uhi,
                      const char *what, uint64_t *out) {
  int neg = 0;
  uint64_t mag = 0;
  if (json_is_integer(v)) {
    json_int_t x = json_integer_value(v);
    neg = x < 0;
    mag = neg ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
  } else if (json_is_real(v)) {
    double x = json_real_value(v);
    if (!isfinite(x) || x != floor(x))
      return ps__fail(r, "%s: not a whole number", what);
    if (fabs(x) >= PS__EXACT_INT) /* 2^53 itself may be 2^53 + 1 rounded */
      return ps__fail(r,
                      "%s: integer too large to read exactly from a JSON number; "
                      "write it as a string",
                      what);
    neg = x < 0;
    mag = (uint64_t)fabs(x);
  } else if (json_is_string(v)) {
    int rc = ps__int_text(json_string_value(v), json_string_length(v), &neg, &mag);
    if (rc == -1)
      return ps__fail(r, "%s: \"%.40s\" is not a whole number", what, json_string_value(v));
    if (rc == -2)
      return ps__fail(r, "%s: %.40s is out of range", what, json_string_value(v));
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

static int ps__rd_floating(ps__rd *r, json_t *v, int is_float, double *out) {
  const char *what = is_float ? "float" : "double";
  double x;
  if (json_is_integer(v)) {
    x = (double)json_integer_value(v);
  } else if (json_is_real(v)) {
    x = json_real_value(v);
  } else if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strcmp(s, "NaN") == 0) {
      x = NAN;
    } else if (strcmp(s, "Infinity") == 0) {
      x = INFINITY;
    } else if (strcmp(s, "-Infinity") == 0) {
      x = -INFINITY;
    } else if (ps__is_json_number(s, n)) {
      pthread_once(&ps__c_locale_once, ps__c_locale_init);
      if (is_float) {
        float f = strtof_l(s, NULL, ps__c_locale);
        if (isinf(f))
          return ps__fail(r, "%s: %.40s is out of range", what, s);
        *out = f;
        return 0;
      }
      x = strtod_l(s, NULL, ps__c_locale);
      if (isinf(x))
        return ps__fail(r, "%s: %.40s is out of range", what, s);
    } else {
      return ps__fail(r, "%s: \"%.40s\" is not a number", what, s);
    }
  } else {
    return ps__fail(r, "%s: expected a number or a string", what);
  }
  if (is_float && isfinite(x) && isinf((float)x))
    return ps__fail(r, "%s: %g is out of range", what, x);
  *out = x;
  return 0;
}

/*
 * Whether the JSON text has the number -0 (as Go and penstock write a
 * negative zero double). jansson reads it as the integer 0, losing the sign,
 * so such a document is read with every number as a double.
 */
static int ps__has_negative_zero(const char *s, size_t n) {
  if (!memmem(s, n, "-0", 2))
    return 0;
  int in_str = 0;
  for (size_t i = 0; i + 1 < n; i++) {
    if (in_str) {
      if (s[i] == '\\')
        i++;
      else if (s[i] == '"')
        in_str = 0;
    } else if (s[i] == '"') {
      in_str = 1;
    } else if (s[i] == '-' && s[i + 1] == '0' &&
               (i + 2 == n || !strchr("0123456789.eE", s[i + 2]) || s[i + 2] == '\0')) {
      return 1;
    }
  }
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

/* ---- messages --------------------------------------------------------------- */

static int ps__rd_msg(ps__rd *r, const ProtobufCMessageDescriptor *d, json_t *obj, ProtobufCMessage *m,
                      int depth);

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

/* Copies a JSON string into a new NUL-terminated string at *dst. */
static int ps__rd_string(ps__rd *r, const char *s, size_t n, char **dst) {
  char *p = ps__alloc(r, n + 1);
  if (!p)
    return r->rc;
  memcpy(p, s, n);
  p[n] = '\0';
  *dst = p;
  return 0;
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

/* Reads one value of f's type from v into dst (an element, for lists). */
static int ps__rd_value(ps__rd *r, const ProtobufCFieldDescriptor *f, json_t *v, void *dst, int depth) {
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
      *(float *)dst = (float)x;
    else
      *(double *)dst = x;
    return 0;
  }
  case PROTOBUF_C_TYPE_BOOL:
    if (!json_is_boolean(v))
      return ps__fail(r, "bool: expected true or false");
    *(protobuf_c_boolean *)dst = json_is_true(v);
    return 0;
  case PROTOBUF_C_TYPE_ENUM: {
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    if (json_is_string(v)) {
      const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
      if (!ev)
        return ps__fail(r, "%s has no value named \"%.40s\"", ed->name, json_string_value(v));
      *(int *)dst = ev->value;
      return 0;
    }
    if (!json_is_number(v))
      return ps__fail(r, "%s: expected a name or a number", ed->name);
    if ((rc = ps__rd_int(r, v, 0, INT32_MIN, INT32_MAX, 0, ed->name, &u)))
      return rc;
    *(int *)dst = (int)(int64_t)u; /* proto3 enums are open: any number is kept */
    return 0;
  }
  case PROTOBUF_C_TYPE_STRING:
    if (!json_is_string(v))
      return ps__fail(r, "string: expected a JSON string");
    /* protobuf-c strings end at their first NUL: refuse rather than truncate. */
    if (memchr(json_string_value(v), '\0', json_string_length(v)))
      return ps__fail(r, "string: contains U+0000, which a protobuf-c string cannot hold");
    return ps__rd_string(r, json_string_value(v), json_string_length(v), (char **)dst);
  case PROTOBUF_C_TYPE_BYTES: {
    if (!json_is_string(v))
      return ps__fail(r, "bytes: expected a base64 string");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    ProtobufCBinaryData *b = dst;
    if (n == 0)
      return 0;
    uint8_t *p = ps__alloc(r, n / 4 * 3 + 3);
    if (!p)
      return r->rc;
    b->data = p; /* linked first: freed with the message if decoding fails */
    long k = ps__base64_decode(s, n, p);
    if (k < 0)
      return ps__fail(r, "bytes: invalid base64");
    b->len = (size_t)k;
    return 0;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessageDescriptor *md = f->descriptor;
    ProtobufCMessage *sub = ps__new_msg(r, md);
    if (!sub)
      return r->rc;
    *(ProtobufCMessage **)dst = sub;
    return ps__rd_msg(r, md, v, sub, depth + 1);
  }
  }
  return ps__fail(r, "unsupported field type");
}

/* Sets the has_ flag of a proto2 (or proto3 `optional`) scalar. */
static void ps__mark_present(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
      f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
    *PS_PBJSON__AT(protobuf_c_boolean, m, f->quantifier_offset) = 1;
}

/* Reads a map key (always a JSON object key, so a string) into dst. */
static int ps__rd_map_key(ps__rd *r, const ProtobufCFieldDescriptor *kf, const char *key, void *dst) {
  if (kf->type == PROTOBUF_C_TYPE_STRING)
    return ps__rd_string(r, key, strlen(key), (char **)dst);
  if (kf->type == PROTOBUF_C_TYPE_BOOL) {
    if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0)
      return ps__fail(r, "map key \"%.40s\": expected \"true\" or \"false\"", key);
    *(protobuf_c_boolean *)dst = key[0] == 't';
    return 0;
  }
  json_t *k = json_string(key);
  if (!k)
    abort();
  int rc = ps__rd_value(r, kf, k, dst, 0);
  json_decref(k);
  return rc;
}

static int ps__rd_map(ps__rd *r, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, json_t *v,
                      int depth) {
  if (!json_is_object(v))
    return ps__fail(r, "expected an object (a map)");
  size_t n = json_object_size(v);
  if (n == 0)
    return 0;
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
  ProtobufCMessage **arr = ps__alloc(r, n * sizeof *arr);
  if (!arr)
    return r->rc;
  memset(arr, 0, n * sizeof *arr);
  *PS_PBJSON__AT(ProtobufCMessage **, m, f->offset) = arr;
  *PS_PBJSON__AT(size_t, m, f->quantifier_offset) = n; /* NULL slots free as nothing */
  size_t i = 0;
  const char *key;
  json_t *val;
  json_object_foreach(v, key, val) {
    ProtobufCMessage *e = ps__new_msg(r, ed);
    if (!e)
      return r->rc;
    arr[i++] = e;
    int rc = ps__rd_map_key(r, kf, key, (char *)e + kf->offset);
    if (rc == 0 && json_is_null(val))
      rc = ps__fail(r, "null is not a map value");
    if (rc == 0)
      rc = ps__rd_value(r, vf, val, (char *)e + vf->offset, depth);
    if (rc) {
      char el[64];
      snprintf(el, sizeof el, "%.40s", key);
      ps__path_push(r, el, 0);
      return rc;
    }
    ps__mark_present(e, kf);
    ps__mark_present(e, vf);
  }
  return 0;
}

static int ps__rd_list(ps__rd *r, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, json_t *v,
                       int depth) {
  if (!json_is_array(v))
    return ps__fail(r, "expected an array");
  size_t n = json_array_size(v), es = ps_pbjson__elem_size(f->type);
  if (n == 0)
    return 0;
  char *arr = ps__alloc(r, n * es);
  if (!arr)
    return r->rc;
  memset(arr, 0, n * es);
  *PS_PBJSON__AT(char *, m, f->offset) = arr;
  *PS_PBJSON__AT(size_t, m, f->quantifier_offset) = n; /* zeroed slots free as nothing */
  for (size_t i = 0; i < n; i++) {
    json_t *el = json_array_get(v, i);
    int rc = json_is_null(el) ? ps__fail(r, "null is not a list element")
                              : ps__rd_value(r, f, el, arr + i * es, depth);
    if (rc) {
      ps__path_push(r, NULL, i);
      return rc;
    }
  }
  return 0;
}

/* Whether key is f's JSON name (its proto name with "_x" read as "X"). */
static int ps__json_name_eq(const char *name, const char *key) {
  int up = 0;
  for (; *name; name++) {
    if (*name == '_') {
      up = 1;
      continue;
    }
    char c = (up && *name >= 'a' && *name <= 'z') ? (char)(*name - 'a' + 'A') : *name;
    up = 0;
    if (*key++ != c)
      return 0;
  }
  return *key == '\0';
}

static const ProtobufCFieldDescriptor *ps__find_field(const ProtobufCMessageDescriptor *d, const char *key) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
  if (f)
    return f;
  for (unsigned i = 0; i < d->n_fields; i++)
    if (ps__json_name_eq(d->fields[i].name, key))
      return &d->fields[i];
  return NULL;
}

static int ps__rd_msg(ps__rd *r, const ProtobufCMessageDescriptor *d, json_t *obj, ProtobufCMessage *m,
                      int depth) {
  if (!json_is_object(obj))
    return ps__fail(r, "expected an object (%s)", d->name);
  if (depth > PS_PBJSON__MAX_DEPTH)
    return ps__fail(r, "messages nested deeper than %d", PS_PBJSON__MAX_DEPTH);
  /* Which fields have been named: a field may appear once, by either name. */
  unsigned char seen_stack[256], *seen = seen_stack;
  if (d->n_fields > sizeof seen_stack && !(seen = calloc(d->n_fields, 1)))
    abort();
  if (seen == seen_stack)
    memset(seen, 0, d->n_fields);
  int rc = 0;
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    const ProtobufCFieldDescriptor *f = ps__find_field(d, key);
    if (!f) {
      rc = ps__fail(r, "unknown field \"%.64s\" in %s", key, d->name);
      goto cleanup;
    }
    size_t fi = (size_t)(f - d->fields);
    if (seen[fi]) {
      rc = ps__fail(r, "field \"%s\" of %s given twice", f->name, d->name);
      goto cleanup;
    }
    seen[fi] = 1;
    if (json_is_null(v))
      continue; /* null: the default, and for a oneof member, not set */
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      rc = ps_pbjson__is_map(d, f) ? ps__rd_map(r, m, f, v, depth) : ps__rd_list(r, m, f, v, depth);
    } else {
      if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *c = PS_PBJSON__AT(uint32_t, m, f->quantifier_offset);
        if (*c != 0) {
          const char *other = "";
          for (unsigned i = 0; i < d->n_fields; i++)
            if (d->fields[i].id == *c)
              other = d->fields[i].name;
          rc = ps__fail(r,
                        "\"%s\" and \"%s\" are members of the same oneof of %s; "
                        "at most one may be set",
                        other, f->name, d->name);
          goto cleanup;
        }
        *c = f->id; /* before the value, so that a failure frees it */
      }
      rc = ps__rd_value(r, f, v, (char *)m + f->offset, depth);
      if (rc == 0)
        ps__mark_present(m, f);
    }
    if (rc) {
      ps__path_push(r, key, 0);
      goto cleanup;
    }
  }
  for (unsigned i = 0; i < d->n_fields; i++) {
    if (d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i]) {
      rc = ps__fail(r, "required field \"%s\" of %s is missing", d->fields[i].name, d->name);
      goto cleanup;
    }
  }
cleanup:
  if (seen != seen_stack)
    free(seen);
  return rc;
}

int ps_pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                     ProtobufCAllocator *alloc, ProtobufCMessage **out, char *err, size_t errlen) {
  ps__rd r;
  memset(&r, 0, sizeof r);
  r.alloc = alloc ? alloc : &ps__sys_allocator;
  *out = NULL;
  if (err && errlen)
    err[0] = '\0';
  json_error_t jerr;
  size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
  json_t *root =
      json_loadb(json, len, flags | (ps__has_negative_zero(json, len) ? JSON_DECODE_INT_AS_REAL : 0), &jerr);
  if (!root && json_error_code(&jerr) == json_error_numeric_overflow) {
    root = json_loadb(json, len, flags | JSON_DECODE_INT_AS_REAL, &jerr);
  }
  if (!root) {
    if (err && errlen)
      snprintf(err, errlen, "invalid JSON (line %d, column %d): %s", jerr.line, jerr.column, jerr.text);
    return PS_EINVAL;
  }
  ProtobufCMessage *m = ps__new_msg(&r, desc);
  int rc = m ? ps__rd_msg(&r, desc, root, m, 0) : r.rc;
  json_decref(root);
  if (rc) {
    if (m)
      protobuf_c_message_free_unpacked(m, r.alloc);
    if (err && errlen) {
      /* The reason matters most: a path too long for err loses its start. */
      const char *p = r.path[0] == '.' ? r.path + 1 : r.path;
      size_t pl = strlen(p), rl = strlen(r.reason);
      if (pl == 0 || errlen < rl + 3 + 4)
        snprintf(err, errlen, "%s", r.reason);
      else if (pl + 2 + rl < errlen)
        snprintf(err, errlen, "%s: %s", p, r.reason);
      else
        snprintf(err, errlen, "...%s: %s", p + pl - (errlen - rl - 6), r.reason);
    }
    return rc;
  }
  *out = m;
  return 0;
}
