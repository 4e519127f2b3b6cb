/*
 * ps_decoder_events: proto3-JSON Events -> event rows (see ps_decoder.h).
 *
 * A message is one Events (application/json, as the workers publish it by
 * default) or, packed (PS_CONTENT_TYPE_PACKED, PUBLISH_FORMAT=packed), one
 * Events per line, or, packed binary (PS_CONTENT_TYPE_PACKED_PB,
 * PUBLISH_FORMAT=protobuf), binary Events each preceded by its length; every
 * Events of a message is parsed before any row is written. Binary Events are
 * checked as dispatch checks a request (strings valid UTF-8 without NUL) and
 * unpacked by protobuf-c.
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
  Event__Events **docs; /* the Events of the message being decoded */
  size_t ndocs, capdocs;
} ps__events_decoder;

/* Whether the delivery is a packed message (PS_CONTENT_TYPE_PACKED: one Events per line). */
static int ps__packed(const ps_delivery *d) {
  return d->content_type && strcmp(d->content_type, PS_CONTENT_TYPE_PACKED) == 0;
}

/* Adds m to dec->docs. */
static void ps__add_doc(ps__events_decoder *dec, ProtobufCMessage *m) {
  if (dec->ndocs == dec->capdocs) {
    dec->capdocs = dec->capdocs ? 2 * dec->capdocs : 8;
    dec->docs = realloc(dec->docs, dec->capdocs * sizeof *dec->docs);
    if (!dec->docs)
      abort();
  }
  dec->docs[dec->ndocs++] = (Event__Events *)m;
}

/* Parses one Events, json[0..n), into dec->docs; line > 0 names its line of a packed message in err. */
static int ps__parse_one(ps__events_decoder *dec, const char *json, size_t n, size_t line,
                         ProtobufCAllocator *alloc, char *err, size_t errlen) {
  ProtobufCMessage *m = NULL;
  char why[256];
  if (ps_pbjson_decode(&event__events__descriptor, json, n, alloc, &m, why, sizeof why) != 0) {
    if (line)
      snprintf(err, errlen, "line %zu: %s", line, why);
    else
      snprintf(err, errlen, "%s", why);
    return PS_EINVAL;
  }
  ps__add_doc(dec, m);
  return 0;
}

/* Parses the length-delimited binary Events of a PS_CONTENT_TYPE_PACKED_PB message into dec->docs. */
static int ps__parse_pb(ps__events_decoder *dec, const uint8_t *p, size_t n, ProtobufCAllocator *alloc, char *err,
                        size_t errlen) {
  const uint8_t *at = p, *end = p + n;
  for (size_t k = 1; at < end; k++) {
    uint64_t len;
    if (ps_pb_varint(&at, end, &len) != 0) {
      snprintf(err, errlen, "Events %zu: truncated or overlong length at byte %zu", k, (size_t)(at - p));
      return PS_EINVAL;
    }
    if (len > (uint64_t)(end - at)) {
      snprintf(err, errlen, "Events %zu: %llu bytes announced, %zu left", k, (unsigned long long)len,
               (size_t)(end - at));
      return PS_EINVAL;
    }
    char why[256];
    if (ps_pb_check_wire_strings(&event__events__descriptor, at, (size_t)len, why, sizeof why) != 0) {
      snprintf(err, errlen, "Events %zu: %s", k, why);
      return PS_EINVAL;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(&event__events__descriptor, alloc, (size_t)len, at);
    if (!m) {
      snprintf(err, errlen, "Events %zu: not a valid binary Events", k);
      return PS_EINVAL;
    }
    ps__add_doc(dec, m);
    at += len;
  }
  return 0;
}

/* Parses the Events of d (one, one per non-empty line of a packed message, or the delimited Events of a packed
   binary one) into dec->docs, in arena. */
static int ps__parse(ps__events_decoder *dec, const ps_delivery *d, ProtobufCAllocator *alloc, char *err,
                     size_t errlen) {
  dec->ndocs = 0;
  if (d->content_type && strcmp(d->content_type, PS_CONTENT_TYPE_PACKED_PB) == 0)
    return ps__parse_pb(dec, (const uint8_t *)d->body, d->len, alloc, err, errlen);
  if (!ps__packed(d))
    return ps__parse_one(dec, d->body, d->len, 0, alloc, err, errlen);
  const char *p = d->body, *end = d->body + d->len;
  for (size_t line = 1; p < end; line++) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    size_t n = (size_t)((eol ? eol : end) - p);
    if (n && ps__parse_one(dec, p, n, line, alloc, err, errlen) != 0)
      return PS_EINVAL;
    p += n + (eol != NULL);
  }
  return 0;
}

static int ps__decode(ps_decoder *bd, const ps_delivery *d, ps_sink *sink, char *err, size_t errlen) {
  ps__events_decoder *dec = (ps__events_decoder *)bd;
  int pb = d->content_type && strcmp(d->content_type, PS_CONTENT_TYPE_PACKED_PB) == 0;
  ps_arena *arena = ps_arena_create(pb ? ps_events_arena_size(d->len) : ps_events_arena_size_json(d->len));
  ProtobufCAllocator alloc = ps_arena_allocator(arena);
  if (ps__parse(dec, d, &alloc, err, errlen) != 0) {
    ps_arena_destroy(arena);
    return PS_EINVAL;
  }
  size_t total = 0;
  for (size_t k = 0; k < dec->ndocs; k++)
    total += dec->docs[k]->n_events;

  /* Encode every payload first: a failure leaves the sink untouched. */
  if (total + 1 > dec->cap) {
    dec->cap = total * 2 + 1;
    free(dec->offsets);
    dec->offsets = malloc(dec->cap * sizeof *dec->offsets);
    if (!dec->offsets)
      abort();
  }
  ps_buf_reset(&dec->payloads);
  size_t j = 0;
  for (size_t k = 0; k < dec->ndocs; k++)
    for (size_t i = 0; i < dec->docs[k]->n_events; i++, j++) {
      const Event__Event *ev = dec->docs[k]->events[i];
      dec->offsets[j] = dec->payloads.len;
      const ProtobufCMessage *p = ps_event_payload(ev);
      if (!p) {
        snprintf(err, errlen, "event %zu (id %s) has no payload", j, ev->id);
        ps_arena_destroy(arena);
        return PS_EINVAL;
      }
      if (ps_pbjson_encode(&dec->payloads, p) != 0) {
        snprintf(err, errlen, "event %zu (id %s): payload cannot be encoded", j, ev->id);
        ps_arena_destroy(arena);
        return PS_EINVAL;
      }
    }
  dec->offsets[total] = dec->payloads.len;

  int64_t received = d->timestamp ? d->timestamp : (int64_t)time(NULL);
  ps_value row[PS_EV_NCOLS];
  memset(row, 0, sizeof row);
#define PS__STR(col, v)                                                       \
  do {                                                                        \
    row[col].s = (v);                                                         \
    row[col].len = strlen(row[col].s);                                        \
  } while (0)
  static Event__Header empty_header = EVENT__HEADER__INIT;
  j = 0;
  for (size_t k = 0; k < dec->ndocs; k++) {
    const Event__Events *evs = dec->docs[k];
    const Event__Header *h = evs->header ? evs->header : &empty_header;
    PS__STR(PS_EV_SESSION_ID, h->sessionid);
    row[PS_EV_USER_ID].i = h->userid;
    PS__STR(PS_EV_DEVICE_ID, h->deviceid);
    PS__STR(PS_EV_CLIENT_ID, h->clientid);
    PS__STR(PS_EV_OS, h->os);
    PS__STR(PS_EV_APP_VERSION, h->appversion);
    row[PS_EV_RECEIVED_AT].i = received;
    for (size_t i = 0; i < evs->n_events; i++, j++) {
      const Event__Event *ev = evs->events[i];
      PS__STR(PS_EV_EVENT_ID, ev->id);
      PS__STR(PS_EV_EVENT_TYPE, ps_event_type_name(ev));
      PS__STR(PS_EV_EVENT_TIMESTAMP, ev->timestamp);
      int64_t t;
      row[PS_EV_EVENT_TIME].i = ps_time_parse(ev->timestamp, strlen(ev->timestamp), &t) == 0 ? t : received;
      row[PS_EV_PAYLOAD].s = dec->payloads.data + dec->offsets[j];
      row[PS_EV_PAYLOAD].len = dec->offsets[j + 1] - dec->offsets[j];
      ps_sink_write(sink, row);
    }
  }
#undef PS__STR
  ps_arena_destroy(arena);
  return (int)total;
}

static void ps__destroy(ps_decoder *bd) {
  ps__events_decoder *dec = (ps__events_decoder *)bd;
  if (!dec)
    return;
  ps_buf_free(&dec->payloads);
  free(dec->offsets);
  free(dec->docs);
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
