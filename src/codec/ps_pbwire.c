/*
 * ps_pbwire: checks on a serialized message before anyone trusts its strings.
 *
 * protobuf-c unpacks a string field into a NUL-terminated C string and drops
 * its length, so a string holding U+0000 would be cut short without a word,
 * and it never checks UTF-8. Both are checked here on the wire bytes, where
 * every string's true length is known, walking the message by its descriptor.
 * Bytes that are not a valid encoding are left for the unpacker to refuse.
 */
#include <stdio.h>
#include <string.h>

#include "codec/ps_pbjson.h"
#include "codec/ps_pbjson_internal.h"
#include "core/ps_error.h"

typedef struct {
  char *err;
  size_t errlen;
} ps__wire_ctx;

static int ps__varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
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

/* Returns 1 if the message is fine or malformed (the unpacker's business), 0 with err set otherwise. */
static int ps__walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end, int depth,
                    const char *path, ps__wire_ctx *ctx) {
  if (depth > PS_PBJSON__MAX_DEPTH)
    return 1;
  unsigned counts[d->n_fields ? d->n_fields : 1];
  memset(counts, 0, sizeof counts);
  while (p < end) {
    uint64_t key, len;
    if (ps__varint(&p, end, &key))
      return 1;
    switch (key & 7) {
    case 0:
      if (ps__varint(&p, end, &len))
        return 1;
      continue;
    case 1:
      if (end - p < 8)
        return 1;
      p += 8;
      continue;
    case 5:
      if (end - p < 4)
        return 1;
      p += 4;
      continue;
    case 2:
      break;
    default:
      return 1; /* groups: not proto3; let the unpacker decide */
    }
    if (ps__varint(&p, end, &len) || len > (uint64_t)(end - p))
      return 1;
    const uint8_t *val = p;
    p += len;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
    if (!f || (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE))
      continue;
    unsigned idx = counts[f - d->fields]++;
    char here[512];
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
      snprintf(here, sizeof here, "%s%s%s[%u]", path, *path ? "." : "", f->name, idx);
    else
      snprintf(here, sizeof here, "%s%s%s", path, *path ? "." : "", f->name);
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
      if (!ps__walk(f->descriptor, val, val + len, depth + 1, here, ctx))
        return 0;
      continue;
    }
    if (memchr(val, 0, len)) {
      snprintf(ctx->err, ctx->errlen, "%s: contains U+0000, which is not accepted in strings", here);
      return 0;
    }
    if (!ps_utf8_valid((const char *)val, len)) {
      snprintf(ctx->err, ctx->errlen, "%s: invalid UTF-8", here);
      return 0;
    }
  }
  return 1;
}

int ps_pb_check_wire_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len, char *err,
                             size_t errlen) {
  ps__wire_ctx ctx = {err, errlen};
  return ps__walk(desc, data, data + len, 0, "", &ctx) ? 0 : PS_EINVAL;
}
