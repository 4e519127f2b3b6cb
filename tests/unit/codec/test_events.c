/*
 * Unit tests of ps_events: type names come from the .proto through
 * descriptors, grouping keeps first-seen order and event order, and events
 * without a type (empty oneof, unknown field number) are told apart.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/ps_demo.h"
#include "codec/ps_events.h"
#include "codec/ps_pbjson.h"
#include "core/ps_arena.h"
#include "ps_test.h"

PS_TEST(every_oneof_member_is_an_event_type) {
  const ProtobufCMessageDescriptor *d = &event__event__descriptor;
  size_t members = 0;
  for (unsigned i = 0; i < d->n_fields; i++)
    if (d->fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
      members++;
  PS_CHECK(members > 0);
  PS_CHECK_INT_EQ(ps_event_type_count(), members);
  for (size_t i = 0; i < ps_event_type_count(); i++) {
    const char *name = ps_event_type_at(i);
    PS_CHECK(name != NULL);
    /* The JSON name of the member maps back to the type. */
    char json[128];
    snprintf(json, sizeof json, "%c%s", name[0] + 32, name + 1);
    PS_CHECK_STR_EQ(ps_event_type_by_json_name(json), name);
  }
  PS_CHECK(ps_event_type_by_json_name("id") == NULL);
  PS_CHECK(ps_event_type_by_json_name("nosuchEvent") == NULL);
}

PS_TEST(type_name_and_payload) {
  Event__Event ev = EVENT__EVENT__INIT;
  PS_CHECK(ps_event_type_name(&ev) == NULL);
  PS_CHECK(ps_event_payload(&ev) == NULL);
  PS_CHECK_STR_EQ(ps_event_skip_reason(&ev), "no payload");
  Event__AddToCartEvent cart = EVENT__ADD_TO_CART_EVENT__INIT;
  ev.event_of_case = EVENT__EVENT__EVENT_OF_ADD_TO_CART_EVENT;
  ev.addtocartevent = &cart;
  PS_CHECK_STR_EQ(ps_event_type_name(&ev), "AddToCartEvent");
  PS_CHECK(ps_event_payload(&ev) == &cart.base);
}

PS_TEST(unknown_field_number_is_reported_as_unknown_type) {
  /* Event{id: "x", <field 99>: {}}: a type this build does not know. */
  const uint8_t wire[] = {0x22, 0x01, 'x', 0x9a, 0x06, 0x00};
  Event__Event *ev = event__event__unpack(NULL, sizeof wire, wire);
  PS_CHECK(ev != NULL);
  PS_CHECK(ps_event_type_name(ev) == NULL);
  PS_CHECK_STR_EQ(ps_event_skip_reason(ev), "unknown event type");
  event__event__free_unpacked(ev, NULL);
}

PS_TEST(grouping_keeps_first_seen_order) {
  Event__ClickEvent click = EVENT__CLICK_EVENT__INIT;
  Event__LaunchEvent launch = EVENT__LAUNCH_EVENT__INIT;
  Event__Event ev[6];
  Event__Event *list[6];
  /* click, launch, (none), click, launch, click */
  for (int i = 0; i < 6; i++) {
    event__event__init(&ev[i]);
    list[i] = &ev[i];
  }
  int kinds[6] = {1, 2, 0, 1, 2, 1};
  for (int i = 0; i < 6; i++) {
    if (kinds[i] == 1) {
      ev[i].event_of_case = EVENT__EVENT__EVENT_OF_CLICK_EVENT;
      ev[i].clickevent = &click;
    } else if (kinds[i] == 2) {
      ev[i].event_of_case = EVENT__EVENT__EVENT_OF_LAUNCH_EVENT;
      ev[i].launchevent = &launch;
    }
  }
  Event__Events msg = EVENT__EVENTS__INIT;
  msg.n_events = 6;
  msg.events = list;
  ps_event_group groups[16];
  Event__Event *scratch[6];
  size_t ng = ps_events_group(&msg, groups, scratch);
  PS_CHECK_INT_EQ(ng, 2);
  PS_CHECK_STR_EQ(groups[0].type_name, "ClickEvent");
  PS_CHECK_INT_EQ(groups[0].n, 3);
  PS_CHECK(groups[0].events[0] == &ev[0] && groups[0].events[1] == &ev[3] && groups[0].events[2] == &ev[5]);
  PS_CHECK_STR_EQ(groups[1].type_name, "LaunchEvent");
  PS_CHECK_INT_EQ(groups[1].n, 2);
  PS_CHECK(groups[1].events[0] == &ev[1] && groups[1].events[1] == &ev[4]);
}

/*
 * ps_events_arena_size is enough for one block: batches of every event type
 * alone and of them all mixed, of 1 to 50 events with every field filled,
 * unpack into less than it (a first block too small would cost a second,
 * twice as large, for every request); and their proto3 JSON decodes into
 * less than ps_events_arena_size_json.
 */
PS_TEST(an_unpacked_batch_fits_in_the_arena_size_of_its_size) {
  ps_demo *d = ps_demo_create(7, "arena");
  size_t ntypes = ps_demo_type_count(d), types[50];
  double worst = 0;
  for (size_t t = 0; t <= ntypes; t++) { /* t == ntypes: every type in turn */
    for (size_t n = 1; n <= 50; n += 7) {
      for (size_t k = 0; k < n; k++)
        types[k] = t < ntypes ? t : k % ntypes;
      ps_arena *src = ps_arena_create(16384);
      Event__Events *m = ps_demo_batch_typed(d, src, n, types);
      size_t len = event__events__get_packed_size(m);
      uint8_t *wire = malloc(len);
      PS_CHECK(wire);
      event__events__pack(m, wire);
      ps_buf json = PS_BUF_INIT;
      int encoded = ps_pbjson_encode(&json, &m->base) == 0;
      ps_arena_destroy(src);
      ps_arena *ja = ps_arena_create(ps_events_arena_size_json(json.len));
      ProtobufCAllocator jalloc = ps_arena_allocator(ja);
      ProtobufCMessage *jm = NULL;
      char why[256] = "";
      int decoded = encoded && ps_pbjson_decode(&event__events__descriptor, json.data, json.len, &jalloc, &jm,
                                                why, sizeof why) == 0;
      size_t jused = ps_arena_used(ja), jlen = json.len;
      ps_arena_destroy(ja);
      ps_buf_free(&json);
      PS_CHECK_MSG(decoded, "type %zu, %zu events: its JSON does not decode: %s", t, n, why);
      PS_CHECK_MSG(jused <= ps_events_arena_size_json(jlen),
                   "type %zu, %zu events: %zu bytes of JSON took %zu, over %zu", t, n, jlen, jused,
                   ps_events_arena_size_json(jlen));
      ps_arena *a = ps_arena_create(ps_events_arena_size(len));
      ProtobufCAllocator alloc = ps_arena_allocator(a);
      Event__Events *u = event__events__unpack(&alloc, len, wire);
      size_t used = ps_arena_used(a);
      int ok = u && u->n_events == n;
      ps_arena_destroy(a);
      free(wire);
      PS_CHECK_MSG(ok, "type %zu, %zu events: does not unpack", t, n);
      PS_CHECK_MSG(used <= ps_events_arena_size(len),
                   "type %zu, %zu events: %zu bytes on the wire took %zu, over %zu", t, n, len, used,
                   ps_events_arena_size(len));
      if ((double)used / (double)len > worst && n == 50)
        worst = (double)used / (double)len;
    }
  }
  ps_demo_destroy(d);
  printf("  largest unpacked / wire size of a 50-event batch: %.2f\n", worst);
}

PS_TEST_MAIN(PS_CASE(every_oneof_member_is_an_event_type), PS_CASE(type_name_and_payload),
             PS_CASE(unknown_field_number_is_reported_as_unknown_type),
             PS_CASE(grouping_keeps_first_seen_order),
             PS_CASE(an_unpacked_batch_fits_in_the_arena_size_of_its_size))
