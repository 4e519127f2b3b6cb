/* Unit tests of ps_pb_check_wire_strings: U+0000 and bad UTF-8 found at any depth, with the field's path. */
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

PS_TEST_MAIN(PS_CASE(valid_message_passes), PS_CASE(nul_in_a_map_key_is_found_with_its_path),
             PS_CASE(bad_utf8_is_found), PS_CASE(malformed_bytes_are_left_to_the_unpacker))
