/*
 * ps_pbjson internals shared by the encoder (ps_pbjson.c), the decoder
 * (ps_pbjson_decode.c) and the UTF-8 checks (ps_pbjson_utf8.c): how a
 * protobuf-c message stores a field, when a field counts as present, how a map
 * field is recognised, and how one UTF-8 sequence is validated. Not part of the
 * module's contract; nothing outside src/codec includes it.
 */
#ifndef PS_PBJSON_INTERNAL_H
#define PS_PBJSON_INTERNAL_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/ps_word.h"

/*
 * Nesting deeper than this is refused by the encoder, the decoder and the
 * UTF-8 check. 100 is the default recursion limit of the C++ and Python
 * protobuf parsers, so no message that the reference implementations accept
 * is refused here, and a hostile message cannot exhaust a worker's stack.
 */
#define PS_PBJSON__MAX_DEPTH 100

#define PS_PBJSON__AT(type, msg, off) ((type *)((char *)(msg) + (off)))
#define PS_PBJSON__CAT(type, msg, off) ((const type *)((const char *)(msg) + (off)))

/*
 * Whether field f of msg is to be written (encoder) or looked at (UTF-8
 * check). Mirrors what protobuf-c's own packer writes, except that implicit
 * presence (LABEL_NONE) follows proto3's rule of "not the zero value" with
 * floating point compared by bits, as Go and C++ do: -0.0 is present.
 * Repeated fields are present when non-empty.
 */
static inline int ps_pbjson__present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f) {
  const void *member = PS_PBJSON__CAT(char, msg, f->offset);
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    return *PS_PBJSON__CAT(size_t, msg, f->quantifier_offset) != 0;
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    if (*PS_PBJSON__CAT(uint32_t, msg, f->quantifier_offset) != f->id)
      return 0;
    /* A selected string or message that is NULL is not on the wire either
       (protobuf-c's packer skips it); a selected "" or 0 is. */
    if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING)
      return *(const void *const *)member != NULL;
    return 1;
  }
  if (f->label == PROTOBUF_C_LABEL_REQUIRED)
    return f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING
               ? 1
               : *(const void *const *)member != NULL;
  if (f->type == PROTOBUF_C_TYPE_MESSAGE)
    return *(const void *const *)member != NULL;
  if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
    if (f->type == PROTOBUF_C_TYPE_STRING) {
      const void *p = *(const void *const *)member;
      return p != NULL && p != f->default_value;
    }
    return *PS_PBJSON__CAT(protobuf_c_boolean, msg, f->quantifier_offset) != 0;
  }
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(const char *const *)member;
    return s != NULL && s[0] != '\0';
  }
  case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)member)->len != 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE: return *(const uint64_t *)member != 0;
  case PROTOBUF_C_TYPE_BOOL: return *(const protobuf_c_boolean *)member != 0;
  default: /* 32-bit integers, enums and float: compare the bits */ return *(const uint32_t *)member != 0;
  }
}

/*
 * protobuf-c 1.4 keeps no trace of `map<K, V>` in its descriptors: a map is a
 * repeated field of a generated nested message. protoc names that message
 * after the field (MapEntryName: '_' dropped, the next letter and the first
 * one upper-cased, "Entry" appended), gives it exactly the fields key = 1 and
 * value = 2, and refuses any other nested type of that name; so this shape
 * identifies a map. (A hand-written nested message of the same name and shape
 * used as a plain repeated field would be taken for a map; its JSON would then
 * be an object instead of an array.)
 */
static inline int ps_pbjson__is_map(const ProtobufCMessageDescriptor *parent,
                                    const ProtobufCFieldDescriptor *f) {
  if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
    return 0;
  const ProtobufCMessageDescriptor *e = f->descriptor;
  if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
      e->fields[0].label == PROTOBUF_C_LABEL_REPEATED || e->fields[1].label == PROTOBUF_C_LABEL_REPEATED ||
      strcmp(e->fields[0].name, "key") != 0 || strcmp(e->fields[1].name, "value") != 0)
    return 0;
  size_t pl = strlen(parent->name);
  if (strncmp(e->name, parent->name, pl) != 0 || e->name[pl] != '.')
    return 0;
  const char *q = e->name + pl + 1;
  int up = 1;
  for (const char *p = f->name; *p; p++) {
    if (*p == '_') {
      up = 1;
      continue;
    }
    char c = (up && *p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
    up = 0;
    if (*q++ != c)
      return 0;
  }
  return strcmp(q, "Entry") == 0;
}

/* Size of one element of a repeated field of type t, as protobuf-c lays it out. */
static inline size_t ps_pbjson__elem_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: return sizeof(uint64_t);
  case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
  case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
  case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
  default: /* 32-bit integers; protobuf-c forces enums to int size */ return sizeof(uint32_t);
  }
}

/*
 * Length of the valid UTF-8 sequence that starts at p (at most n bytes
 * available), or 0 if it is not one: overlong forms, UTF-16 surrogates
 * (U+D800..U+DFFF), code points above U+10FFFF, stray continuation bytes and
 * truncated sequences are all refused (Unicode 15, table 3-7).
 */
static inline size_t ps_pbjson__utf8_seq(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  if (c < 0x80)
    return 1;
  if (c < 0xC2)
    return 0;
  if (c < 0xE0)
    return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3 || (p[2] & 0xC0) != 0x80)
      return 0;
    unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return p[1] >= lo && p[1] <= hi ? 3 : 0;
  }
  if (c < 0xF5) {
    if (n < 4 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
      return 0;
    unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return p[1] >= lo && p[1] <= hi ? 4 : 0;
  }
  return 0;
}

#endif
