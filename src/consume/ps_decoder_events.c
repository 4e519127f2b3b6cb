/*
 * ps_decoder_events: proto3-JSON Events -> event rows (see ps_decoder.h).
 *
 * The body is parsed into a protobuf-c Events (in an arena reused across
 * messages), which validates it against the contract; each event's payload is
 * then written back as canonical proto3 JSON for the payload column. Going
 * through the message rather than copying JSON text means the column holds
 * the same bytes whatever JSON formatting the publisher used.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/ps_events.h"
#include "codec/ps_pbjson.h"
#include "consume/ps_decoder.h"
#include "core/ps_arena.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_time.h"

typedef struct {
  ps_decoder base;
  ps_buf payloads;
  size_t *offsets;
  size_t cap;
} ps__events_decoder;

static int ps__decode(ps_decoder *bd, const ps_delivery *d, ps_sink *sink, char *err, size_t errlen) {
  ps__events_decoder *dec = (ps__events_decoder *)bd;
  ps_arena *arena = ps_arena_create(d->len * 2 + 1024);
  ProtobufCAllocator alloc = ps_arena_allocator(arena);
  ProtobufCMessage *m = NULL;
  int rc = ps_pbjson_decode(&event__events__descriptor, d->body, d->len, &alloc, &m, err, errlen);
  if (rc != 0) {
    ps_arena_destroy(arena);
    return PS_EINVAL;
  }
  Event__Events *evs = (Event__Events *)m;
  static Event__Header empty_header = EVENT__HEADER__INIT;
  const Event__Header *h = evs->header ? evs->header : &empty_header;

  /* Encode every payload first: a failure leaves the sink untouched. */
  if (evs->n_events + 1 > dec->cap) {
    dec->cap = evs->n_events * 2 + 1;
    free(dec->offsets);
    dec->offsets = malloc(dec->cap * sizeof *dec->offsets);
    if (!dec->offsets)
      abort();
  }
  ps_buf_reset(&dec->payloads);
  for (size_t i = 0; i < evs->n_events; i++) {
    dec->offsets[i] = dec->payloads.len;
    const ProtobufCMessage *p = ps_event_payload(evs->events[i]);
    if (!p) {
      snprintf(err, errlen, "event %zu (id %s) has no payload", i, evs->events[i]->id);
      ps_arena_destroy(arena);
      return PS_EINVAL;
    }
    if (ps_pbjson_encode(&dec->payloads, p) != 0) {
      snprintf(err, errlen, "event %zu (id %s): payload cannot be encoded", i, evs->events[i]->id);
      ps_arena_destroy(arena);
      return PS_EINVAL;
    }
  }
  dec->offsets[evs->n_events] = dec->payloads.len;

  int64_t received = d->timestamp ? d->timestamp : (int64_t)time(NULL);
  ps_value row[PS_EV_NCOLS];
  memset(row, 0, sizeof row);
#define PS__STR(col, v)                                                       \
  do {                                                                        \
    row[col].s = (v);                                                         \
    row[col].len = strlen(row[col].s);                                        \
  } while (0)
  PS__STR(PS_EV_SESSION_ID, h->sessionid);
  row[PS_EV_USER_ID].i = h->userid;
  PS__STR(PS_EV_DEVICE_ID, h->deviceid);
  PS__STR(PS_EV_CLIENT_ID, h->clientid);
  PS__STR(PS_EV_OS, h->os);
  PS__STR(PS_EV_APP_VERSION, h->appversion);
  row[PS_EV_RECEIVED_AT].i = received;
  for (size_t i = 0; i < evs->n_events; i++) {
    const Event__Event *ev = evs->events[i];
    PS__STR(PS_EV_EVENT_ID, ev->id);
    PS__STR(PS_EV_EVENT_TYPE, ps_event_type_name(ev));
    PS__STR(PS_EV_EVENT_TIMESTAMP, ev->timestamp);
    int64_t t;
    row[PS_EV_EVENT_TIME].i = ps_time_parse(ev->timestamp, strlen(ev->timestamp), &t) == 0 ? t : received;
    row[PS_EV_PAYLOAD].s = dec->payloads.data + dec->offsets[i];
    row[PS_EV_PAYLOAD].len = dec->offsets[i + 1] - dec->offsets[i];
    ps_sink_write(sink, row);
  }
#undef PS__STR
  int n = (int)evs->n_events;
  ps_arena_destroy(arena);
  return n;
}

static void ps__destroy(ps_decoder *bd) {
  ps__events_decoder *dec = (ps__events_decoder *)bd;
  if (!dec)
    return;
  ps_buf_free(&dec->payloads);
  free(dec->offsets);
  free(dec);
}

static const ps_decoder_ops ps__ops = {"events", ps__decode, ps__destroy};

ps_decoder *ps_decoder_events_create(void) {
  ps__events_decoder *dec = calloc(1, sizeof *dec);
  if (!dec)
    abort();
  dec->base.ops = &ps__ops;
  return &dec->base;
}
