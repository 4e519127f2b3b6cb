/*
 * ps_events: descriptor-driven access to the Event oneof (see ps_events.h).
 *
 * The oneof's members are found once, from event__event__descriptor, and kept
 * in a small table in field-number order; lookups by field number are a
 * linear scan of that table, which for a handful of types beats hashing.
 */
#include "codec/ps_events.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PS__MAX_TYPES 256

typedef struct {
  uint32_t field_id;
  const ProtobufCFieldDescriptor *field;
  const char *type_name; /* message short name */
} ps__event_type;

static ps__event_type ps__types[PS__MAX_TYPES];
static size_t ps__ntypes;
static size_t ps__case_offset;
static pthread_once_t ps__once = PTHREAD_ONCE_INIT;
static uint32_t ps__header_field, ps__events_field; /* of Events */

static void ps__init(void) {
  ps__header_field = protobuf_c_message_descriptor_get_field_by_name(&event__events__descriptor, "header")->id;
  ps__events_field = protobuf_c_message_descriptor_get_field_by_name(&event__events__descriptor, "events")->id;
  const ProtobufCMessageDescriptor *d = &event__event__descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) || f->type != PROTOBUF_C_TYPE_MESSAGE)
      continue;
    if (ps__ntypes == PS__MAX_TYPES)
      abort();
    ps__case_offset = f->quantifier_offset;
    const ProtobufCMessageDescriptor *md = f->descriptor;
    ps__types[ps__ntypes++] = (ps__event_type){f->id, f, md->short_name};
  }
}

static const ps__event_type *ps__find(const Event__Event *ev) {
  pthread_once(&ps__once, ps__init);
  if (!ps__ntypes)
    return NULL;
  uint32_t c = *(const uint32_t *)((const char *)ev + ps__case_offset);
  if (c == 0)
    return NULL;
  for (size_t i = 0; i < ps__ntypes; i++)
    if (ps__types[i].field_id == c)
      return &ps__types[i];
  return NULL;
}

const ProtobufCMessage *ps_event_payload(const Event__Event *ev) {
  const ps__event_type *t = ps__find(ev);
  if (!t)
    return NULL;
  return *(ProtobufCMessage *const *)((const char *)ev + t->field->offset);
}

const char *ps_event_type_name(const Event__Event *ev) {
  const ps__event_type *t = ps__find(ev);
  if (!t)
    return NULL;
  /* A oneof case set with a NULL message cannot come from unpack, but be safe. */
  if (!*(ProtobufCMessage *const *)((const char *)ev + t->field->offset))
    return NULL;
  return t->type_name;
}

const char *ps_event_skip_reason(const Event__Event *ev) {
  return ev->base.n_unknown_fields > 0 ? "unknown event type" : "no payload";
}

/* Proto field name to JSON name: drop '_' and capitalise what follows. */
static int ps__json_name_eq(const char *proto, const char *json) {
  int up = 0;
  for (; *proto; proto++) {
    if (*proto == '_') {
      up = 1;
      continue;
    }
    char c = up && *proto >= 'a' && *proto <= 'z' ? (char)(*proto - 32) : *proto;
    up = 0;
    if (c != *json++)
      return 0;
  }
  return *json == '\0';
}

const char *ps_event_type_by_json_name(const char *json_name) {
  pthread_once(&ps__once, ps__init);
  for (size_t i = 0; i < ps__ntypes; i++) {
    const char *n = ps__types[i].field->name;
    if (strcmp(n, json_name) == 0 || ps__json_name_eq(n, json_name))
      return ps__types[i].type_name;
  }
  return NULL;
}

size_t ps_event_type_count(void) {
  pthread_once(&ps__once, ps__init);
  return ps__ntypes;
}

const char *ps_event_type_at(size_t i) {
  pthread_once(&ps__once, ps__init);
  return i < ps__ntypes ? ps__types[i].type_name : NULL;
}

void ps_batch_destroy(ps_batch *b) {
  if (!b)
    return;
  ps_arena_destroy(b->arena); /* b itself lives in its arena */
}

size_t ps_events_group(const Event__Events *msg, ps_event_group *groups,
                       Event__Event **scratch) {
  size_t ng = 0;
  size_t counts[PS__MAX_TYPES] = {0};
  const char *names[PS__MAX_TYPES];
  /* First pass: count per type in order of first appearance. */
  for (size_t i = 0; i < msg->n_events; i++) {
    const char *t = ps_event_type_name(msg->events[i]);
    if (!t)
      continue;
    size_t g = 0;
    while (g < ng && names[g] != t)
      g++;
    if (g == ng)
      names[ng++] = t;
    counts[g]++;
  }
  size_t off = 0;
  for (size_t g = 0; g < ng; g++) {
    groups[g].type_name = names[g];
    groups[g].events = scratch + off;
    groups[g].n = 0;
    off += counts[g];
  }
  for (size_t i = 0; i < msg->n_events; i++) {
    const char *t = ps_event_type_name(msg->events[i]);
    if (!t)
      continue;
    size_t g = 0;
    while (names[g] != t)
      g++;
    groups[g].events[groups[g].n++] = msg->events[i];
  }
  return ng;
}

void ps_events_put_delimited(ps_buf *out, const Event__Events *msg) {
  size_t len = event__events__get_packed_size(msg);
  ps_buf_reserve(out, len + 10);
  uint8_t *p = (uint8_t *)out->data + out->len;
  size_t k = ps_pb_put_varint(p, len);
  event__events__pack(msg, p + k);
  out->len += k + len;
  out->data[out->len] = '\0';
}

int ps_events_records(const ps_batch *b, ps_pb_record *header, ps_pb_record *events, const char **types) {
  pthread_once(&ps__once, ps__init);
  const Event__Events *msg = b->msg;
  if (!b->wire)
    return -1;
  /* The header's record goes first into events[] too: there is room for n_events + 1 only if every record is
     the header or an event, and events[] is then compacted. */
  long k = ps_pb_records(b->wire, b->wire_len, events, msg->n_events + 1);
  size_t w = 0, headers = 0;
  for (long j = 0; j < k; j++) {
    ps_pb_record rec = events[j];
    if (rec.field == ps__header_field && !headers++)
      *header = rec;
    else if (rec.field == ps__events_field)
      events[w++] = rec;
    else
      return -1;
  }
  if (k < 0 || headers != 1 || w != msg->n_events)
    return -1;
  for (size_t i = 0; i < w; i++)
    types[i] = ps_event_type_name(msg->events[i]);
  return 0;
}

size_t ps_events_records_size(const ps_pb_record *events, const char *const *types, size_t n, const char *t,
                              size_t *bytes) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (types[i] == t) {
      m++;
      *bytes += events[i].len;
    }
  return m;
}

uint8_t *ps_events_records_copy(uint8_t *p, const uint8_t *wire, const ps_pb_record *events,
                                const char *const *types, size_t n, const char *t) {
  for (size_t i = 0; i < n; i++)
    if (types[i] == t) {
      memcpy(p, wire + events[i].off, events[i].len);
      p += events[i].len;
    }
  return p;
}
