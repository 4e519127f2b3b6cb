/*
 * ps_pbjson: proto3 JSON for protobuf-c messages, driven by their descriptors.
 *
 * The encoder writes exactly what the reference implementations write (Go's
 * protojson, Python's json_format) in compact form: lowerCamelCase field names
 * (the descriptor's name with '_x' turned into 'X'), fields in field-number
 * order, proto3 default values omitted (a oneof member and a proto3 `optional`
 * field are written whenever they are set), 64-bit integers as strings, bytes
 * as standard base64, enums by name (by number when unknown), maps as objects
 * with string keys in sorted order, doubles and floats in the shortest form that
 * round-trips (Go's rules: exponent form below 1e-6 and from 1e21 up;
 * "NaN", "Infinity", "-Infinity" as strings), strings as UTF-8 with only '"',
 * '\\' and control characters escaped (\b \f \n \r \t, else \u00xx).
 *
 * The decoder reads proto3 JSON (as written above, and everything else the
 * proto3 JSON mapping allows: original field names, numbers as strings,
 * enum numbers, null for a default) into a protobuf-c message. It is what
 * penstock's consumers use on messages taken from the broker.
 *
 * No code here knows any message type: adding a field or an event type to the
 * .proto needs no change.
 */
#ifndef PS_PBJSON_H
#define PS_PBJSON_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "core/ps_buf.h"

/**
 * Appends the proto3 JSON of msg to out.
 * Returns 0, or PS_EINVAL if a string field holds invalid UTF-8 (out then
 * holds a partial document that the caller must discard).
 */
int ps_pbjson_encode(ps_buf *out, const ProtobufCMessage *msg);

/** Appends s (n bytes, UTF-8) as a JSON string literal with the escaping above. */
void ps_pbjson_put_string(ps_buf *out, const char *s, size_t n);

/** Appends a double the way the encoder writes a `double` field. */
void ps_pbjson_put_double(ps_buf *out, double v);

/** Appends a float the way the encoder writes a `float` field. */
void ps_pbjson_put_float(ps_buf *out, float v);

/**
 * Parses the proto3 JSON text json[0..len) into a new message of type desc,
 * allocated with alloc (NULL: protobuf-c's default allocator; free it with
 * protobuf_c_message_free_unpacked). Unknown fields are an error.
 * Returns 0 and sets *out, or PS_EINVAL with a reason (naming the field) in
 * err[0..errlen).
 */
int ps_pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json,
                     size_t len, ProtobufCAllocator *alloc,
                     ProtobufCMessage **out, char *err, size_t errlen);

/**
 * Checks that every string field of msg, at any depth (repeated fields and
 * maps included), is valid UTF-8, as proto3 requires and protobuf-c does not
 * check. Returns 0, or PS_EINVAL with the offending field's path (e.g.
 * "events[3].pageOpenedEvent.params") in err.
 */
int ps_pb_check_utf8(const ProtobufCMessage *msg, char *err, size_t errlen);

/**
 * Checks every string field of the serialized message data[0..len) of type
 * desc, at any depth, on the wire: valid UTF-8 and no U+0000 (protobuf-c
 * would silently cut such a string at the NUL). Bytes that are not a valid
 * encoding pass (the unpacker refuses them). Returns 0, or PS_EINVAL with
 * "<field path>: <reason>" (e.g. "events[3].pageOpenedEvent.params[0].key:
 * invalid UTF-8") in err.
 */
int ps_pb_check_wire_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len, char *err,
                             size_t errlen);

/**
 * Reads the base-128 varint at *p (before end) into *v and moves *p past it.
 * Returns 0, or -1 if it is cut short or longer than 10 bytes.
 */
int ps_pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v);

/** Writes v as a base-128 varint at p (10 bytes at most); returns how many bytes. */
size_t ps_pb_put_varint(uint8_t *p, uint64_t v);

/** One top-level field of a serialized message: its number and where its whole record (key, length, value) is. */
typedef struct ps_pb_record {
  uint32_t field;
  size_t off, len;
} ps_pb_record;

/**
 * Splits the serialized message data[0..len) into its top-level fields, in
 * order, into out[0..max). Every field must be length-delimited (as message,
 * string and bytes fields are). Returns how many there are, or -1 if a record
 * is of another wire type, malformed, or beyond max.
 */
long ps_pb_records(const uint8_t *data, size_t len, ps_pb_record *out, size_t max);

/** Returns 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int ps_utf8_valid(const char *s, size_t n);

/** The offset of the first byte of s[0..n) that does not start a valid UTF-8 sequence, or n. */
size_t ps_utf8_prefix(const char *s, size_t n);

#endif
