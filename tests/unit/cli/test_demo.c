/*
 * Unit tests of the demo events behind `penstock send --demo`: every event
 * type of the proto comes (found through the descriptors, as in ps_demo: no
 * type is named here), in rounds; ids count up; every field of every payload
 * and of the header gets a value in some event; values are valid proto3 (UTF-8
 * strings, JSON round trip), timestamps parse, and a seed repeats the events.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/ps_demo.h"
#include "cli/ps_send.h"
#include "codec/ps_events.h"
#include "codec/ps_pbjson.h"
#include "core/ps_time.h"
#include "ps_test.h"

static Event__Events *unpack(const ps_send_batch *b) {
  return event__events__unpack(NULL, b->len, b->data);
}

static size_t type_index(const char *name) {
  for (size_t i = 0; i < ps_event_type_count(); i++)
    if (name && strcmp(ps_event_type_at(i), name) == 0)
      return i;
  return (size_t)-1;
}

PS_TEST(every_type_in_rounds) {
  size_t nt = ps_event_type_count();
  PS_CHECK(nt > 1);
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  long long n = (long long)nt * 3;
  ps_send_demo(7, "t", n, 4, 1, &b);
  PS_CHECK_INT_EQ(b.events, n);
  PS_CHECK_INT_EQ(b.n, (size_t)(n + 3) / 4);
  size_t counts[256] = {0}, first_round[256] = {0};
  size_t seen = 0;
  for (size_t i = 0; i < b.n; i++) {
    Event__Events *m = unpack(&b.v[i]);
    PS_CHECK(m != NULL);
    for (size_t k = 0; k < m->n_events; k++, seen++) {
      size_t t = type_index(ps_event_type_name(m->events[k]));
      if (t == (size_t)-1) {
        event__events__free_unpacked(m, NULL);
        PS_CHECK_MSG(0, "event %zu has no known type", seen);
      }
      counts[t]++;
      if (seen < nt)
        first_round[t]++;
    }
    event__events__free_unpacked(m, NULL);
  }
  for (size_t t = 0; t < nt; t++) {
    PS_CHECK_MSG(counts[t] == 3, "%s: %zu events", ps_event_type_at(t), counts[t]);
    PS_CHECK_MSG(first_round[t] == 1, "%s: %zu in the first round", ps_event_type_at(t), first_round[t]);
  }
  ps_send_batches_free(&b);
}

PS_TEST(ids_count_up_and_batches_split) {
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  ps_send_demo(1, "run-x", 103, 50, 1, &b);
  PS_CHECK_INT_EQ(b.n, 3);
  PS_CHECK(b.v[0].events == 50 && b.v[1].events == 50 && b.v[2].events == 3);
  long next = 1;
  for (size_t i = 0; i < b.n; i++) {
    Event__Events *m = unpack(&b.v[i]);
    PS_CHECK(m != NULL);
    char want[4096] = "";
    for (size_t k = 0; k < m->n_events; k++, next++) {
      char id[32];
      snprintf(id, sizeof id, "run-x-%ld", next);
      int same = strcmp(m->events[k]->id, id) == 0;
      if (!same)
        event__events__free_unpacked(m, NULL);
      PS_CHECK_MSG(same, "event %ld: id %s", next, id);
      strcat(want, id);
      strcat(want, "\n");
    }
    event__events__free_unpacked(m, NULL);
    PS_CHECK(b.v[i].ids_len == strlen(want) && memcmp(b.v[i].ids, want, b.v[i].ids_len) == 0);
  }
  ps_send_batches_free(&b);
}

/* True if field f of m holds something other than its default. */
static int field_set(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f) {
  const char *p = (const char *)m + f->offset;
  if (f->label == PROTOBUF_C_LABEL_REPEATED)
    return *(const size_t *)((const char *)m + f->quantifier_offset) > 0;
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING: return *(char *const *)p && **(char *const *)p;
  case PROTOBUF_C_TYPE_MESSAGE: return *(void *const *)p != NULL;
  case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)p)->len > 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: return *(const int64_t *)p != 0;
  case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)p != 0;
  case PROTOBUF_C_TYPE_FLOAT: return *(const float *)p != 0;
  default: return *(const int32_t *)p != 0;
  }
}

PS_TEST(every_field_gets_values_and_they_are_valid) {
  size_t nt = ps_event_type_count();
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  ps_send_demo(42, "v", (long long)nt * 40, 50, 0, &b);
  /* [type][field]: set in some event; and the header's fields. */
  unsigned char set[256][64];
  memset(set, 0, sizeof set);
  unsigned char hset[64] = {0};
  const ProtobufCMessageDescriptor *hd = &event__header__descriptor;
  int64_t now = (int64_t)time(NULL);
  char err[256];
  for (size_t i = 0; i < b.n; i++) {
    Event__Events *m = unpack(&b.v[i]);
    PS_CHECK(m != NULL && m->header != NULL);
    int utf8 = ps_pb_check_utf8(&m->base, err, sizeof err);
    /* proto3 JSON round trip: encode, decode, encode again: the same text (maps come out sorted, so
       the bytes of a re-serialization may differ from the original's). */
    ps_buf j = PS_BUF_INIT, j2 = PS_BUF_INIT;
    int enc = ps_pbjson_encode(&j, &m->base);
    ProtobufCMessage *back = NULL;
    int dec = enc == 0
                  ? ps_pbjson_decode(&event__events__descriptor, j.data, j.len, NULL, &back, err, sizeof err)
                  : -1;
    int same = 0;
    if (back) {
      same = ps_pbjson_encode(&j2, back) == 0 && j2.len == j.len && memcmp(j.data, j2.data, j.len) == 0;
      protobuf_c_message_free_unpacked(back, NULL);
    }
    ps_buf_free(&j2);
    ps_buf_free(&j);
    for (unsigned f = 0; f < hd->n_fields; f++)
      hset[f] |= field_set(&m->header->base, &hd->fields[f]);
    int bad_time = 0;
    for (size_t k = 0; k < m->n_events; k++) {
      const ProtobufCMessage *pl = ps_event_payload(m->events[k]);
      size_t t = type_index(ps_event_type_name(m->events[k]));
      for (unsigned f = 0; pl && t < 256 && f < pl->descriptor->n_fields && f < 64; f++)
        set[t][f] |= field_set(pl, &pl->descriptor->fields[f]);
      int64_t ts;
      const char *s = m->events[k]->timestamp;
      if (ps_time_parse(s, strlen(s), &ts) != 0 || ts < now - 600 || ts > now + 5)
        bad_time = 1;
    }
    event__events__free_unpacked(m, NULL);
    PS_CHECK_MSG(utf8 == 0, "batch %zu: %s", i, err);
    PS_CHECK_MSG(enc == 0 && dec == 0 && same, "batch %zu: JSON round trip (%d %d %d) %s", i, enc, dec, same,
                 err);
    PS_CHECK_MSG(!bad_time, "batch %zu: a timestamp does not parse or is not recent", i);
  }
  for (unsigned f = 0; f < hd->n_fields; f++)
    PS_CHECK_MSG(hset[f], "header.%s never set", hd->fields[f].name);
  /* Each type's descriptor, as ps_events found it: through the Event oneof. */
  const ProtobufCMessageDescriptor *ed = &event__event__descriptor;
  for (unsigned i = 0; i < ed->n_fields; i++) {
    const ProtobufCFieldDescriptor *ef = &ed->fields[i];
    if (!(ef->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) || ef->type != PROTOBUF_C_TYPE_MESSAGE)
      continue;
    const ProtobufCMessageDescriptor *pd = ef->descriptor;
    size_t t = type_index(pd->short_name);
    PS_CHECK(t != (size_t)-1);
    for (unsigned f = 0; f < pd->n_fields && f < 64; f++)
      PS_CHECK_MSG(set[t][f], "%s.%s never set in 40 events", pd->short_name, pd->fields[f].name);
  }
  ps_send_batches_free(&b);
}

/* The events of a batch with their timestamps blanked (the only part that follows the clock), serialized. */
static void without_timestamps(const ps_send_batch *in, ps_buf *out) {
  Event__Events *m = unpack(in);
  if (!m)
    return;
  for (size_t k = 0; k < m->n_events; k++)
    m->events[k]->timestamp[0] = '\0';
  size_t n = event__events__get_packed_size(m);
  ps_buf_reserve(out, n);
  event__events__pack(m, (uint8_t *)out->data);
  out->len = n;
  event__events__free_unpacked(m, NULL);
}

PS_TEST(same_seed_same_events) {
  ps_send_batches a = PS_SEND_BATCHES_INIT, b = PS_SEND_BATCHES_INIT, c = PS_SEND_BATCHES_INIT;
  ps_send_demo(99, "p", 120, 30, 0, &a);
  ps_send_demo(99, "p", 120, 30, 0, &b);
  ps_send_demo(100, "p", 120, 30, 0, &c);
  int same = a.n == b.n, differs = 0;
  for (size_t i = 0; i < a.n && i < b.n && i < c.n; i++) {
    ps_buf x = PS_BUF_INIT, y = PS_BUF_INIT, z = PS_BUF_INIT;
    without_timestamps(&a.v[i], &x);
    without_timestamps(&b.v[i], &y);
    without_timestamps(&c.v[i], &z);
    same &= x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    differs |= x.len != z.len || memcmp(x.data, z.data, x.len) != 0;
    ps_buf_free(&x);
    ps_buf_free(&y);
    ps_buf_free(&z);
  }
  ps_send_batches_free(&a);
  ps_send_batches_free(&b);
  ps_send_batches_free(&c);
  PS_CHECK(same);
  PS_CHECK(differs);
}

PS_TEST_MAIN(PS_CASE(every_type_in_rounds), PS_CASE(ids_count_up_and_batches_split),
             PS_CASE(every_field_gets_values_and_they_are_valid), PS_CASE(same_seed_same_events))
