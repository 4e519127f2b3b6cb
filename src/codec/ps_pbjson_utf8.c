/*
 * ps_pbjson_utf8: UTF-8 validation of protobuf-c messages (see ps_pbjson.h).
 *
 * proto3 requires every `string` field to hold valid UTF-8, but protobuf-c's
 * unpacker copies the bytes unchecked, and the Go peer's protojson refuses to
 * marshal a message with a bad string. The gRPC handler therefore checks each
 * request once, before it is queued, so that a bad string is refused to the
 * client that sent it (INVALID_ARGUMENT, with the field's path) instead of
 * failing later in a worker. Request text is mostly ASCII, so the scan skips
 * 32, then 8 bytes at a time while their top bits are clear.
 */
#include <stdio.h>

#include "codec/ps_pbjson.h"
#include "codec/ps_pbjson_internal.h"
#include "core/ps_error.h"

size_t ps_utf8_prefix(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    while (n - i >= 32 && ((ps_word_load8(s + i) | ps_word_load8(s + i + 8) | ps_word_load8(s + i + 16) |
                            ps_word_load8(s + i + 24)) &
                           PS_WORD_HIGHS) == 0)
      i += 32;
    while (n - i >= 8 && (ps_word_load8(s + i) & PS_WORD_HIGHS) == 0)
      i += 8;
    if (i >= n)
      break;
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t k = ps_pbjson__utf8_seq(s + i, n - i);
    if (k == 0)
      return i;
    i += k;
  }
  return n;
}

int ps_utf8_valid(const char *s, size_t n) { return ps_utf8_prefix(s, n) == n; }

/* Path elements deeper than this are written as "..." (the check goes on). */
#define PS__PATH_MAX 32

typedef struct {
  const ProtobufCFieldDescriptor *f[PS__PATH_MAX];
  size_t idx[PS__PATH_MAX]; /* SIZE_MAX: not an element of a list */
} ps__path;

static int ps__str_ok(const char *s) {
  return !s || ps_utf8_valid(s, strlen(s));
}

/* Writes the path of the field at depth (lowerCamelCase names, [i] for list elements). */
static void ps__path_format(const ps__path *p, int depth, char *err, size_t errlen) {
  if (!err || errlen == 0)
    return;
  size_t k = 0;
  err[0] = '\0';
  for (int lvl = 0; lvl <= depth && k + 1 < errlen; lvl++) {
    if (lvl >= PS__PATH_MAX) {
      snprintf(err + k, errlen - k, "...");
      return;
    }
    if (lvl > 0)
      err[k++] = '.';
    for (const char *c = p->f[lvl]->name; *c && k + 1 < errlen; c++) {
      if (*c == '_' && c[1] >= 'a' && c[1] <= 'z') {
        err[k++] = (char)(*++c - 'a' + 'A');
      } else if (*c != '_') {
        err[k++] = *c;
      }
    }
    err[k] = '\0';
    if (p->idx[lvl] != SIZE_MAX && k + 1 < errlen) {
      size_t w = (size_t)snprintf(err + k, errlen - k, "[%zu]", p->idx[lvl]);
      k = k + w >= errlen ? errlen - 1 : k + w;
    }
  }
}

static int ps__check(const ProtobufCMessage *m, ps__path *p, int depth, char *err, size_t errlen);

/* Checks one value of string or message type at v; sets the path on failure. */
static int ps__check_value(const ProtobufCFieldDescriptor *f, const void *v, ps__path *p, int depth,
                           char *err, size_t errlen) {
  if (f->type == PROTOBUF_C_TYPE_STRING) {
    if (ps__str_ok(*(const char *const *)v))
      return 0;
    ps__path_format(p, depth, err, errlen);
    return PS_EINVAL;
  }
  const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)v;
  return sub ? ps__check(sub, p, depth + 1, err, errlen) : 0;
}

static int ps__check(const ProtobufCMessage *m, ps__path *p, int depth, char *err, size_t errlen) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned fi = 0; fi < d->n_fields; fi++) {
    const ProtobufCFieldDescriptor *f = &d->fields[fi];
    if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
      continue;
    if (!ps_pbjson__present(m, f))
      continue;
    if (depth < PS__PATH_MAX) {
      p->f[depth] = f;
      p->idx[depth] = SIZE_MAX;
    }
    const void *member = (const char *)m + f->offset;
    int rc = 0;
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
      rc = ps__check_value(f, member, p, depth, err, errlen);
    } else if (ps_pbjson__is_map(d, f)) {
      /* A map's path names the map, not the entry: its keys are not paths. */
      const ProtobufCFieldDescriptor *kf = &((const ProtobufCMessageDescriptor *)f->descriptor)->fields[0];
      const ProtobufCFieldDescriptor *vf = kf + 1;
      size_t n = *PS_PBJSON__CAT(size_t, m, f->quantifier_offset);
      const ProtobufCMessage *const *arr = *(const ProtobufCMessage *const *const *)member;
      for (size_t i = 0; i < n && rc == 0; i++) {
        if (!arr[i])
          continue;
        if (kf->type == PROTOBUF_C_TYPE_STRING)
          rc = ps__check_value(kf, (const char *)arr[i] + kf->offset, p, depth, err, errlen);
        if (rc == 0 && (vf->type == PROTOBUF_C_TYPE_STRING || vf->type == PROTOBUF_C_TYPE_MESSAGE))
          rc = ps__check_value(vf, (const char *)arr[i] + vf->offset, p, depth, err, errlen);
      }
    } else {
      size_t n = *PS_PBJSON__CAT(size_t, m, f->quantifier_offset);
      const char *arr = *(const char *const *)member;
      size_t es = ps_pbjson__elem_size(f->type);
      for (size_t i = 0; i < n && rc == 0; i++) {
        if (depth < PS__PATH_MAX)
          p->idx[depth] = i;
        rc = ps__check_value(f, arr + i * es, p, depth, err, errlen);
      }
    }
    if (rc)
      return rc;
  }
  return 0;
}

int ps_pb_check_utf8(const ProtobufCMessage *msg, char *err, size_t errlen) {
  ps__path p;
  if (err && errlen)
    err[0] = '\0';
  return ps__check(msg, &p, 0, err, errlen);
}
