/*
 * Unit tests of ps_pb_check_wire_strings: U+0000 and bad UTF-8 found at any
 * depth, with the field's path (its list indices counted on the wire, other
 * fields and unknown ones in between), in strings of every length with the
 * bad byte at every position. And of the wire helpers: varints both ways,
 * and ps_pb_records splitting a message into its top-level records.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_pbjson.h"
#include "core/ps_error.h"
#include "eventservice.pb-c.h"
#include "ps_test.h"

/* Packs Events{header{sessionId: sid}, events: [ok, {pageOpened{params{key: value}}}]}. */
static uint8_t *pack(const char *sid, const char *key, size_t keylen, size_t *len) {
  Event__Header h = EVENT__HEADER__INIT;
  h.sessionid = (char *)sid;
  Event__PageOpenedEvent__ParamsEntry entry = EVENT__PAGE_OPENED_EVENT__PARAMS_ENTRY__INIT;
  char k[64];
  memcpy(k, key, keylen);
  k[keylen] = '\0';
  entry.key = k;
  entry.value = "v";
  Event__PageOpenedEvent__ParamsEntry *entries[] = {&entry};
  Event__PageOpenedEvent page = EVENT__PAGE_OPENED_EVENT__INIT;
  page.page = "home";
  page.n_params = 1;
  page.params = entries;
  Event__Event e0 = EVENT__EVENT__INIT, e1 = EVENT__EVENT__INIT;
  e0.id = "a";
  e1.id = "b";
  e1.event_of_case = EVENT__EVENT__EVENT_OF_PAGE_OPENED_EVENT;
  e1.pageopenedevent = &page;
  Event__Event *evs[] = {&e0, &e1};
  Event__Events m = EVENT__EVENTS__INIT;
  m.header = &h;
  m.n_events = 2;
  m.events = evs;
  *len = event__events__get_packed_size(&m);
  uint8_t *buf = malloc(*len);
  event__events__pack(&m, buf);
  return buf;
}

/* Replaces the first occurrence of the 3-byte marker "KEY" in buf with bytes. */
static void patch(uint8_t *buf, size_t len, const char *bytes) {
  for (size_t i = 0; i + 3 <= len; i++)
    if (memcmp(buf + i, "KEY", 3) == 0) {
      memcpy(buf + i, bytes, 3);
      return;
    }
}

PS_TEST(valid_message_passes) {
  size_t len;
  uint8_t *b = pack("sessión ✓", "KEY", 3, &len);
  char err[256];
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, b, len, err, sizeof err), 0);
  free(b);
}

PS_TEST(nul_in_a_map_key_is_found_with_its_path) {
  size_t len;
  uint8_t *b = pack("s", "KEY", 3, &len);
  patch(b, len, "K\0Y");
  char err[256] = "";
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, b, len, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[1].pageOpenedEvent.params[0].key: contains U+0000, which is not accepted in strings");
  free(b);
}

PS_TEST(bad_utf8_is_found) {
  size_t len;
  uint8_t *b = pack("s", "KEY", 3, &len);
  patch(b, len, "\xc0\xaf!"); /* overlong '/' */
  char err[256] = "";
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, b, len, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[1].pageOpenedEvent.params[0].key: invalid UTF-8");
  free(b);
  b = pack("\xed\xa0\x80", "KEY", 3, &len); /* a surrogate */
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, b, len, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "header.sessionId: invalid UTF-8");
  free(b);
}

PS_TEST(malformed_bytes_are_left_to_the_unpacker) {
  const uint8_t junk[] = {0x22, 0x7f, 'x'}; /* length past the end */
  char err[64];
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, junk, sizeof junk, err, sizeof err), 0);
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, junk, 0, err, sizeof err), 0);
}

/* Appends a varint. */
static size_t put_varint(uint8_t *b, uint64_t v) {
  size_t n = 0;
  do {
    b[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v)
      b[n] |= 0x80;
    n++;
  } while (v);
  return n;
}

/* Appends field `num` as a length-delimited value. */
static size_t put_ld(uint8_t *b, unsigned num, const void *v, size_t len) {
  size_t n = put_varint(b, (uint64_t)num << 3 | 2);
  n += put_varint(b + n, len);
  memcpy(b + n, v, len);
  return n + len;
}

/* Appends Event{id: id} as field 5 of Events. */
static size_t put_event(uint8_t *b, const char *id, size_t idlen) {
  uint8_t ev[256];
  size_t n = put_ld(ev, 4, id, idlen);
  return put_ld(b, 5, ev, n);
}

PS_TEST(index_counts_only_that_fields_occurrences) {
  uint8_t b[1024];
  size_t n = 0;
  b[n++] = 5 << 3 | 0; /* field 5 as a varint: not an occurrence of the list */
  b[n++] = 1;
  n += put_event(b + n, "a", 1);
  n += put_ld(b + n, 99, "zz", 2); /* unknown field */
  b[n++] = 4 << 3 | 1;             /* a fixed64 */
  memset(b + n, 0, 8);
  n += 8;
  n += put_ld(b + n, 4, (const uint8_t[]){5 << 3 | 2, 1, 's'}, 3);
  n += put_event(b + n, "b", 1);
  n += put_event(b + n, "c\xff", 2);
  char err[256] = "";
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, b, n, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[2].id: invalid UTF-8");
  /* A short err buffer gets a cut message. */
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, b, n, err, 8), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[");
}

PS_TEST(nul_is_reported_before_bad_utf8) {
  uint8_t b[256];
  size_t n = put_event(b, "\xff ok \x00", 6);
  char err[256] = "";
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, b, n, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[0].id: contains U+0000, which is not accepted in strings");
  n = put_event(b, "\x00 ok \xff", 6);
  PS_CHECK_INT_EQ(ps_pb_check_wire_strings(&event__events__descriptor, b, n, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[0].id: contains U+0000, which is not accepted in strings");
}

/* Every length up to 40, every position: a NUL, a bad byte, a good 2- and 4-byte sequence. */
PS_TEST(every_length_and_position) {
  static const struct {
    const char *bytes;
    size_t len;
    const char *want; /* NULL: accepted */
  } probes[] = {
      {"\x00", 1, "events[0].id: contains U+0000, which is not accepted in strings"},
      {"\x80", 1, "events[0].id: invalid UTF-8"},
      {"\xc3", 1, "events[0].id: invalid UTF-8"}, /* truncated, or followed by ASCII */
      {"\xc3\xa9", 2, NULL},
      {"\xf0\x9f\x98\x80", 4, NULL},
      {"\x7f", 1, NULL},
  };
  for (size_t p = 0; p < sizeof probes / sizeof probes[0]; p++)
    for (size_t len = probes[p].len; len <= 40; len++)
      for (size_t at = 0; at + probes[p].len <= len; at++) {
        char id[64];
        memset(id, 'x', len);
        memcpy(id + at, probes[p].bytes, probes[p].len);
        uint8_t b[256];
        size_t n = put_event(b, id, len);
        char err[256] = "";
        int rc = ps_pb_check_wire_strings(&event__events__descriptor, b, n, err, sizeof err);
        int ok = probes[p].want ? rc == PS_EINVAL && strcmp(err, probes[p].want) == 0 : rc == 0;
        PS_CHECK_MSG(ok, "probe %zu, length %zu, at %zu: rc %d, \"%s\"", p, len, at, rc, err);
      }
}

/* Varints round-trip at every length (1 to 10 bytes); one cut short or longer than 10 bytes is refused. */
PS_TEST(varints_round_trip_and_bad_ones_are_refused) {
  static const uint64_t values[] = {0, 1, 127, 128, 300, 16383, 16384, (1ull << 35) + 5, UINT64_MAX};
  static const size_t sizes[] = {1, 1, 1, 2, 2, 2, 3, 6, 10};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    uint8_t b[10];
    size_t k = ps_pb_put_varint(b, values[i]);
    PS_CHECK_INT_EQ(k, sizes[i]);
    const uint8_t *p = b;
    uint64_t v = 0;
    PS_CHECK_INT_EQ(ps_pb_varint(&p, b + k, &v), 0);
    PS_CHECK(v == values[i] && p == b + k);
    p = b;
    if (k > 1)
      PS_CHECK_INT_EQ(ps_pb_varint(&p, b + k - 1, &v), -1); /* cut short */
  }
  static const uint8_t eleven[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  const uint8_t *p = eleven;
  uint64_t v;
  PS_CHECK_INT_EQ(ps_pb_varint(&p, eleven + sizeof eleven, &v), -1);
}

/* ps_pb_records: each top-level record whole (key, length, value), in order; refused when a record is not
   length-delimited, runs past the end, or there are more than max. */
PS_TEST(records_are_the_top_level_fields_whole) {
  size_t len;
  uint8_t *b = pack("s", "k", 1, &len);
  ps_pb_record r[4];
  PS_CHECK_INT_EQ(ps_pb_records(b, len, r, 4), 3); /* header, two events */
  PS_CHECK_INT_EQ(r[0].field, 4);
  PS_CHECK_INT_EQ(r[1].field, 5);
  PS_CHECK_INT_EQ(r[2].field, 5);
  PS_CHECK_INT_EQ(r[0].off, 0);
  PS_CHECK_INT_EQ(r[1].off, r[0].len);
  PS_CHECK_INT_EQ(r[2].off, r[1].off + r[1].len);
  PS_CHECK_INT_EQ(r[2].off + r[2].len, len);
  Event__Event *e1 = event__event__unpack(NULL, r[2].len - 2, b + r[2].off + 2); /* key, one-byte length */
  PS_CHECK(e1 && strcmp(e1->id, "b") == 0);
  if (e1)
    event__event__free_unpacked(e1, NULL);
  PS_CHECK_INT_EQ(ps_pb_records(b, len, r, 2), -1);      /* more than max */
  PS_CHECK_INT_EQ(ps_pb_records(b, len - 1, r, 4), -1);  /* the last one runs past the end */
  static const uint8_t varint_field[] = {1 << 3 | 0, 7}; /* field 1, wire type 0 */
  PS_CHECK_INT_EQ(ps_pb_records(varint_field, sizeof varint_field, r, 4), -1);
  PS_CHECK_INT_EQ(ps_pb_records(b, 0, r, 4), 0);
  free(b);
}

PS_TEST_MAIN(PS_CASE(valid_message_passes), PS_CASE(nul_in_a_map_key_is_found_with_its_path),
             PS_CASE(bad_utf8_is_found), PS_CASE(malformed_bytes_are_left_to_the_unpacker),
             PS_CASE(index_counts_only_that_fields_occurrences), PS_CASE(nul_is_reported_before_bad_utf8),
             PS_CASE(every_length_and_position), PS_CASE(varints_round_trip_and_bad_ones_are_refused),
             PS_CASE(records_are_the_top_level_fields_whole))
