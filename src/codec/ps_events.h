/*
 * ps_events: penstock's view of the contract's messages.
 *
 * The contract (proto/eventservice.proto) gives each Event a oneof payload;
 * its message type name ("ClickEvent") is the event's type, the routing key on
 * the exchange and the event_type column. Everything here reads the oneof
 * through protobuf-c's descriptors, so a new event type in the .proto needs no
 * C change.
 *
 * A ps_batch is one accepted dispatch call on its way from ingest to the
 * workers: the decoded Events (allocated in the batch's arena) and what the
 * workers need to know about it.
 */
#ifndef PS_EVENTS_H
#define PS_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "codec/ps_pbjson.h"
#include "core/ps_arena.h"
#include "core/ps_buf.h"
#include "eventservice.pb-c.h"

/** Returns the payload of ev's oneof, or NULL if none is set (or a field number this build does not know). */
const ProtobufCMessage *ps_event_payload(const Event__Event *ev);

/** Returns ev's type name ("ClickEvent"), or NULL if it has no payload. Static storage. */
const char *ps_event_type_name(const Event__Event *ev);

/** Returns why ev has no type: "no payload" or "unknown event type" (a field number this build does not know). */
const char *ps_event_skip_reason(const Event__Event *ev);

/**
 * Returns the type name of the oneof member whose JSON name (or proto name)
 * is json_name, or NULL if it is not one. Static storage.
 */
const char *ps_event_type_by_json_name(const char *json_name);

/** Number of event types this build knows (members of the Event oneof). */
size_t ps_event_type_count(void);

/** Name of the i-th event type in field-number order (i < ps_event_type_count()). */
const char *ps_event_type_at(size_t i);

/*
 * Content type of a packed message (PUBLISH_FORMAT=packed): several proto3-JSON
 * Events, one per line, each ending with a newline (proto3 JSON has no raw
 * newline in it); penstock's events decoder reads it.
 */
#define PS_CONTENT_TYPE_PACKED "application/x-ndjson"

/*
 * Content type of a packed binary message (PUBLISH_FORMAT=protobuf): several
 * binary Events back to back, each preceded by its length as a base-128
 * varint (protobuf's "delimited" framing); penstock's events decoder reads it.
 */
#define PS_CONTENT_TYPE_PACKED_PB "application/x-protobuf-delimited"

typedef struct ps_batch {
  ps_arena *arena;          /* owns msg and everything below it */
  Event__Events *msg;       /* decoded request; events of no type still in it */
  int64_t received_unix;    /* wall-clock seconds when the call arrived */
  uint32_t n_events;        /* events with a type (the ones to publish) */
  uint32_t n_skipped;       /* events without a type (not published) */
  /* The request as it came, in the arena, when the router publishes its events' own bytes
     (PUBLISH_FORMAT=protobuf; see ps_dispatch_keep_wire); NULL otherwise. */
  const uint8_t *wire;
  size_t wire_len;
  /* Called once by the router when every message of the batch is confirmed by
     the broker or written to the spool (rc 0), or when some could not be
     (rc < 0: PS_EFULL, PS_EIO, PS_ETIMEDOUT); the router frees the batch right
     after. NULL: nobody waits (ACK_MODE=enqueued). */
  void (*settled)(struct ps_batch *b, int rc);
  void *settled_ctx;
  uint32_t pending;         /* the router's: messages not yet settled */
  int failed;               /* the router's: the first failure, or 0 */
  struct ps_batch *lot_next; /* the router's: the next batch published in the same messages as this
                                one (settled with it, with its result), or NULL */
} ps_batch;

/** Frees the batch and its arena; accepts NULL. */
void ps_batch_destroy(ps_batch *b);

/**
 * The first block for an arena that an Events of len bytes on the wire is
 * unpacked into (ps_arena_create), large enough that no second block is
 * needed: protobuf-c's structures for this contract's events, with their
 * strings, take 3.7 to 4.5 times the wire size (50-event batches of every
 * type mixed, or of one type), so 5 times, plus room for the fixed parts.
 */
static inline size_t ps_events_arena_size(size_t len) {
  return len * 5 + 1024;
}

/** The same for an Events in proto3 JSON of len bytes: about twice the size of its protobuf. */
static inline size_t ps_events_arena_size_json(size_t len) {
  return ps_events_arena_size(len / 2);
}

/**
 * The first block for a batch's arena (ps_batch.arena), made from a request
 * of len bytes: the unpacked request, the batch itself with what the
 * dispatcher adds to it, and, with keep_wire, the request's copy.
 */
static inline size_t ps_batch_arena_size(size_t len, int keep_wire) {
  return ps_events_arena_size(len) + sizeof(ps_batch) + 256 + (keep_wire ? len : 0);
}

/**
 * A group of one type's events within a batch, in the order they came.
 * events[] points into the batch; valid while the batch lives.
 */
typedef struct ps_event_group {
  const char *type_name;
  size_t n;
  Event__Event **events;
} ps_event_group;

/**
 * Groups the typed events of msg by type, in order of first appearance.
 * groups must have room for ps_event_type_count() entries and scratch for
 * msg->n_events pointers (the groups' event arrays are carved out of it).
 * Returns the number of groups.
 */
size_t ps_events_group(const Event__Events *msg, ps_event_group *groups,
                       Event__Event **scratch);

/**
 * Appends msg to out as binary protobuf preceded by its length as a varint:
 * one Events of a PS_CONTENT_TYPE_PACKED_PB message.
 */
void ps_events_put_delimited(ps_buf *out, const Event__Events *msg);

/**
 * Splits the request b kept (b->wire) into its records: the header's into
 * *header, each event's into events[i] (b->msg->n_events of them, in order)
 * with its type name (ps_event_type_name, NULL for none) in types[i].
 * Returns 0, or -1 if b kept no request or the request is not exactly one
 * header and b's events (another top-level field, say).
 */
int ps_events_records(const ps_batch *b, ps_pb_record *header, ps_pb_record *events, const char **types);

/** Of the records of ps_events_records, those of type t: how many, and their bytes added to *bytes. */
size_t ps_events_records_size(const ps_pb_record *events, const char *const *types, size_t n, const char *t,
                              size_t *bytes);

/** Copies the records of type t from wire to p, in order; returns p past them. */
uint8_t *ps_events_records_copy(uint8_t *p, const uint8_t *wire, const ps_pb_record *events,
                                const char *const *types, size_t n, const char *t);

#endif
