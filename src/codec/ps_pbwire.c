/*
 * ps_pbwire: checks on a serialized message before anyone trusts its strings.
 *
 * protobuf-c unpacks a string field into a NUL-terminated C string and drops
 * its length, so a string holding U+0000 would be cut short without a word,
 * and it never checks UTF-8. Both are checked here on the wire bytes, where
 * every string's true length is known, walking the message by its descriptor.
 * Bytes that are not a valid encoding are left for the unpacker to refuse.
 *
 * Every request goes through here, so the walk does only what the checks
 * need. In particular the path of a field (events[3].pageOpenedEvent.params[0].key),
 * which only an error message shows, is not kept as text: the walk records,
 * per depth, the field it went into, where the enclosing message starts and
 * where that field's occurrence starts; when a check fails, ps__path_text
 * spells the path out, counting a repeated field's earlier occurrences again
 * to find its index. A path longer than PS__PATH_TEXT - 1 bytes is cut there.
 */
#include <stdio.h>
#include <string.h>

#include "codec/ps_pbjson.h"
#include "codec/ps_pbjson_internal.h"
#include "core/ps_error.h"

#define PS__PATH_TEXT 512

typedef struct {
  char *err;
  size_t errlen;
  /* Per depth: the field being looked at, the start of the message that holds it, the start of its key. */
  const ProtobufCFieldDescriptor *f[PS_PBJSON__MAX_DEPTH + 1];
  const uint8_t *msg[PS_PBJSON__MAX_DEPTH + 1];
  const uint8_t *at[PS_PBJSON__MAX_DEPTH + 1];
} ps__wire_ctx;

static inline int ps__varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  if (*p < end && **p < 0x80) { /* keys and short lengths: one byte */
    *out = *(*p)++;
    return 0;
  }
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

/*
 * Skips the value of a field with wire type key & 7 at *p. Returns 1 for a
 * length-delimited value (its bytes in *val, *len), 0 for another value
 * skipped, -1 if the bytes are not a valid encoding (the unpacker's business).
 */
static inline int ps__skip(const uint8_t **p, const uint8_t *end, uint64_t key, const uint8_t **val,
                           uint64_t *len) {
  switch (key & 7) {
  case 0: return ps__varint(p, end, len);
  case 1:
    if (end - *p < 8)
      return -1;
    *p += 8;
    return 0;
  case 5:
    if (end - *p < 4)
      return -1;
    *p += 4;
    return 0;
  case 2:
    if (ps__varint(p, end, len) || *len > (uint64_t)(end - *p))
      return -1;
    *val = *p;
    *p += *len;
    return 1;
  default: return -1; /* groups: not proto3; let the unpacker decide */
  }
}

/*
 * Field number id of d. Fields come on the wire in number order and
 * descriptors list them in number order, so the field after the previous
 * one found (*hint) is tried first, then protobuf-c's lookup.
 */
static inline const ProtobufCFieldDescriptor *ps__field(const ProtobufCMessageDescriptor *d, unsigned id,
                                                        unsigned *hint) {
  unsigned k = *hint;
  if (k < d->n_fields && d->fields[k].id == id)
    return &d->fields[k];
  if (k + 1 < d->n_fields && d->fields[k + 1].id == id) {
    *hint = k + 1;
    return &d->fields[k + 1];
  }
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, id);
  if (f)
    *hint = (unsigned)(f - d->fields);
  return f;
}

/* How many times field f occurs (length-delimited) in the message bytes [p, stop). */
static unsigned ps__occurrences(const ProtobufCFieldDescriptor *f, const uint8_t *p, const uint8_t *stop) {
  unsigned n = 0;
  while (p < stop) {
    uint64_t key, len;
    const uint8_t *val;
    if (ps__varint(&p, stop, &key))
      break;
    int r = ps__skip(&p, stop, key, &val, &len);
    if (r < 0)
      break;
    n += r == 1 && (unsigned)(key >> 3) == f->id;
  }
  return n;
}

static void ps__path_put(char *out, size_t *k, const char *s, size_t n) {
  if (n > PS__PATH_TEXT - 1 - *k)
    n = PS__PATH_TEXT - 1 - *k;
  memcpy(out + *k, s, n);
  *k += n;
}

/* Writes the path of the field at depth (levels 0..depth of ctx) into out[PS__PATH_TEXT]. */
static void ps__path_text(const ps__wire_ctx *ctx, int depth, char *out) {
  size_t k = 0;
  for (int lvl = 0; lvl <= depth; lvl++) {
    const ProtobufCFieldDescriptor *f = ctx->f[lvl];
    if (lvl)
      ps__path_put(out, &k, ".", 1);
    ps__path_put(out, &k, f->name, strlen(f->name));
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      char num[16];
      int n = snprintf(num, sizeof num, "[%u]", ps__occurrences(f, ctx->msg[lvl], ctx->at[lvl]));
      ps__path_put(out, &k, num, (size_t)n);
    }
  }
  out[k] = '\0';
}

/*
 * What is wrong with the string s[0..n): NULL for nothing. One pass for both
 * checks, 8 bytes at a time while they are ASCII and not NUL. A NUL anywhere
 * is reported before bad UTF-8 anywhere.
 */
static const char *ps__string_problem(const uint8_t *s, size_t n) {
  static const char nul[] = "contains U+0000, which is not accepted in strings";
  if (n < 8) {
    /* Most strings of an event are this short: one word decides the common case, all ASCII and no NUL. */
    if (!n)
      return NULL;
    uint64_t w = ps_word_short(s, n);
    if (!((w & PS_WORD_HIGHS) | ps_word_has_less(w, 1)))
      return NULL;
  }
  size_t i = 0;
  while (i < n) {
    if (n - i >= 8) {
      uint64_t w = ps_word_load8(s + i);
      if (!((w & PS_WORD_HIGHS) | ps_word_has_less(w, 1))) {
        i += 8;
        continue;
      }
    } else if (i >= 8) {
      /* The last n - i bytes, as the word that ends the string: the bytes before i are checked. */
      uint64_t w = ps_word_load8(s + n - 8);
      if (!((w & PS_WORD_HIGHS) | ps_word_has_less(w, 1)))
        return NULL;
    }
    unsigned c = s[i];
    if (c == 0)
      return nul;
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t k = ps_pbjson__utf8_seq(s + i, n - i);
    if (k == 0)
      return memchr(s + i, 0, n - i) ? nul : "invalid UTF-8";
    i += k;
  }
  return NULL;
}

/* Returns 1 if the message is fine or malformed (the unpacker's business), 0 with err set otherwise. */
static int ps__walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end, int depth,
                    ps__wire_ctx *ctx) {
  if (depth > PS_PBJSON__MAX_DEPTH)
    return 1;
  const uint8_t *start = p;
  unsigned hint = 0;
  while (p < end) {
    const uint8_t *at = p, *val;
    uint64_t key, len;
    if (ps__varint(&p, end, &key))
      return 1;
    int r = ps__skip(&p, end, key, &val, &len);
    if (r < 0)
      return 1;
    if (r == 0)
      continue;
    const ProtobufCFieldDescriptor *f = ps__field(d, (unsigned)(key >> 3), &hint);
    if (!f || (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE))
      continue;
    ctx->f[depth] = f;
    ctx->msg[depth] = start;
    ctx->at[depth] = at;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
      if (!ps__walk(f->descriptor, val, val + len, depth + 1, ctx))
        return 0;
      continue;
    }
    const char *why = ps__string_problem(val, len);
    if (!why)
      continue;
    char here[PS__PATH_TEXT];
    ps__path_text(ctx, depth, here);
    snprintf(ctx->err, ctx->errlen, "%s: %s", here, why);
    return 0;
  }
  return 1;
}

int ps_pb_check_wire_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len, char *err,
                             size_t errlen) {
  ps__wire_ctx ctx;
  ctx.err = err;
  ctx.errlen = errlen;
  return ps__walk(desc, data, data + len, 0, &ctx) ? 0 : PS_EINVAL;
}

int ps_pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) { return ps__varint(p, end, v); }

size_t ps_pb_put_varint(uint8_t *p, uint64_t v) {
  size_t k = 0;
  for (; v >= 0x80; v >>= 7)
    p[k++] = (uint8_t)(v | 0x80);
  p[k++] = (uint8_t)v;
  return k;
}

long ps_pb_records(const uint8_t *data, size_t len, ps_pb_record *out, size_t max) {
  const uint8_t *p = data, *end = data + len;
  size_t n = 0;
  while (p < end) {
    const uint8_t *start = p;
    uint64_t key, vlen;
    if (ps__varint(&p, end, &key) || (key & 7) != 2 || ps__varint(&p, end, &vlen) ||
        vlen > (uint64_t)(end - p) || n == max)
      return -1;
    p += vlen;
    out[n++] = (ps_pb_record){(uint32_t)(key >> 3), (size_t)(start - data), (size_t)(p - start)};
  }
  return (long)n;
}
