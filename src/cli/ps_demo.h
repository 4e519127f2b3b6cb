/*
 * ps_demo: realistic random events of every type the contract knows.
 *
 * The event types are the message members of Event's oneof, found through
 * protobuf-c's descriptors; every field of a payload (and of the Header) is
 * filled through its descriptor too, with a value chosen by its type and,
 * for plausibility, by words in its name ("currency" gets a currency code,
 * "price" an amount with cents, "position" a small index, "...Id" an id,
 * "page" a page path, a map a few query parameters). Adding an event type or
 * a field to the .proto needs no change here: no code names an event type.
 *
 * Types come in turn (in a fresh random order every round), so any n events
 * include every type at least once when n is at least the number of types.
 */
#ifndef PS_DEMO_H
#define PS_DEMO_H

#include <stddef.h>
#include <stdint.h>

#include "core/ps_arena.h"
#include "eventservice.pb-c.h"

typedef struct ps_demo ps_demo;

/**
 * Creates a generator. Ids are "<id_prefix>-<n>" with n counting from 1
 * (id_prefix is copied). The same seed gives the same events, but for the
 * timestamps, which follow the clock. Aborts on OOM.
 */
ps_demo *ps_demo_create(uint64_t seed, const char *id_prefix);

/** Frees the generator; accepts NULL. */
void ps_demo_destroy(ps_demo *d);

/** Number of event types (members of the Event oneof). */
size_t ps_demo_type_count(const ps_demo *d);

/**
 * Builds one Events of n events with a header (one device's session), every
 * part allocated in a. Valid while a lives.
 */
Event__Events *ps_demo_batch(ps_demo *d, ps_arena *a, size_t n);

/**
 * Index of the event type called name, for ps_demo_batch_typed: its message
 * name ("ClickEvent") or its field name in the oneof ("clickEvent"); -1 when
 * the contract has no such type.
 */
int ps_demo_type_index(const ps_demo *d, const char *name);

/**
 * ps_demo_batch, but event k gets type types[k] (an index below
 * ps_demo_type_count()) instead of the next in turn.
 */
Event__Events *ps_demo_batch_typed(ps_demo *d, ps_arena *a, size_t n, const size_t *types);

/** Fills every field of m (any message) with plausible random values; allocations come from a. */
void ps_demo_fill(ps_demo *d, ps_arena *a, ProtobufCMessage *m);

#endif
