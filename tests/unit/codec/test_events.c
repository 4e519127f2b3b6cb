/*
 * Unit tests of ps_events: type names come from the .proto through
 * descriptors, grouping keeps first-seen order and event order, and events
 * without a type (empty oneof, unknown field number) are told apart.
 */
#include <stdlib.h>
#include <string.h>

#include "codec/ps_events.h"
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

PS_TEST_MAIN(PS_CASE(every_oneof_member_is_an_event_type), PS_CASE(type_name_and_payload),
             PS_CASE(unknown_field_number_is_reported_as_unknown_type), PS_CASE(grouping_keeps_first_seen_order))
