/*
 * ps_dispatch: what EventService/dispatch does with a request, apart from gRPC.
 *
 * Decodes the request bytes into an arena, validates them (proto3 wire format,
 * UTF-8 strings, a header), counts the events that have no type, and puts the
 * batch on the queue. When the queue is full the call is parked (never blocking
 * the transport's threads) and a waiter thread retries it in arrival order until
 * DISPATCH_TIMEOUT_MS or the call's deadline, whichever comes first.
 *
 * Every submitted call is answered exactly once through its done callback, with
 * a gRPC status code and a message (Response.message on success, the status
 * details otherwise). The callback may run on the submitting thread or on the
 * waiter thread.
 */
#ifndef PS_DISPATCH_H
#define PS_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "codec/ps_events.h"
#include "queue/ps_queue.h"

typedef struct ps_dispatch ps_dispatch;

/** Called once per submitted call: status is a grpc_status_code; events: in the request (0 if undecodable). */
typedef void (*ps_dispatch_done_fn)(void *ctx, int status, const char *message, uint32_t events);

/**
 * Creates the dispatcher (and its waiter thread) feeding q. Aborts on OOM.
 * confirmed (ACK_MODE=confirmed): an accepted call is answered when the router
 * settles its batch (every message confirmed or spooled), not when it is queued.
 */
ps_dispatch *ps_dispatch_create(ps_queue *q, int timeout_ms, int confirmed);

/**
 * Stops the waiter thread after it has answered every parked call, then frees
 * the dispatcher. Parked calls finish within their timeout. Accepts NULL.
 */
void ps_dispatch_destroy(ps_dispatch *d);

/**
 * Handles one request. data[0..len) is borrowed for the duration of the call.
 * deadline_ns is the call's deadline on CLOCK_MONOTONIC (INT64_MAX: none).
 */
void ps_dispatch_submit(ps_dispatch *d, const uint8_t *data, size_t len,
                        int64_t deadline_ns, ps_dispatch_done_fn done, void *ctx);

/**
 * Gives the dispatcher somewhere to put a batch that waited DISPATCH_TIMEOUT_MS
 * for room in vain (the router's spool): fn(ctx, b) returns 0 if it stored b
 * (which stays the caller's), and the call is then answered SUCCESS instead
 * of UNAVAILABLE "queue full". Called on the waiter thread only. Set it before
 * the first submit.
 */
void ps_dispatch_set_overflow(ps_dispatch *d, int (*fn)(void *ctx, ps_batch *b), void *ctx);

/**
 * With on, every accepted batch keeps a copy of its request in its arena
 * (ps_batch.wire), for a router that publishes the events' own bytes
 * (PUBLISH_FORMAT=protobuf). Set it before the first submit.
 */
void ps_dispatch_keep_wire(ps_dispatch *d, int on);

/** Calls parked waiting for room in the queue now. */
size_t ps_dispatch_parked(ps_dispatch *d);

#endif
