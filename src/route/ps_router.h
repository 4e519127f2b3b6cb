/*
 * ps_router: the worker pool between the queue and the event exchange.
 *
 * Each worker takes batches off the queue, groups each batch's events by type
 * and publishes every group as one proto3-JSON `Events{header, events}`
 * message to the exchange, routing key = the type name, persistent and
 * mandatory, with a message id and the receive time as AMQP timestamp.
 *
 * Nothing is dropped between the queue and the broker: every connection is in
 * publisher-confirm mode and a worker keeps each message (a bounded window of
 * them) until the broker confirms it. A batch is settled (ps_batch.settled)
 * once every one of its messages is confirmed or written to the spool. A
 * message the broker refuses is published again; one it cannot route is
 * dead-lettered; while the broker is unreachable (or stops confirming), the
 * worker writes what it holds to the spool and reconnects with backoff and
 * jitter. With no spool, it holds the messages and retries, and the queue
 * fills up: that is the backpressure.
 */
#ifndef PS_ROUTER_H
#define PS_ROUTER_H

#include <stdint.h>

#include "broker/ps_broker.h"
#include "codec/ps_events.h"
#include "core/ps_config.h"
#include "queue/ps_queue.h"
#include "spool/ps_spool.h"

typedef struct ps_router ps_router;

typedef struct ps_router_options {
  int workers;
  const char *exchange;
  /* Events accepted without a type are not published to `exchange`: they go,
     as a binary Events (unknown fields kept), to this dead-letter exchange with
     routing key `skipped_key` and the reason in the headers. */
  const char *dead_letter_exchange;
  const char *skipped_key;
  int window;             /* unconfirmed messages per worker (PUBLISH_CONFIRM_WINDOW) */
  int confirm_timeout_ms; /* a publish unconfirmed this long drops the connection */
  ps_spool *spool;        /* where messages go while the broker is unreachable; NULL: none */
  int merge_batches;      /* batches a worker takes from the queue at once and publishes in shared
                             messages (PUBLISH_MERGE_BATCHES, 1..64; 1: each batch on its own) */
  ps_publish_format format; /* PUBLISH_FORMAT: events, or for packed and protobuf one message per type for
                               the whole lot, one Events per header in it, a JSON line each
                               (PS_CONTENT_TYPE_PACKED) or length-delimited binary (PS_CONTENT_TYPE_PACKED_PB) */
  int linger_ms;          /* PUBLISH_LINGER_MS: how long a worker that popped fewer than merge_batches
                             batches waits for more before publishing them (0: it does not wait) */
  size_t window_bytes;    /* bodies' bytes of the unconfirmed messages per worker (PUBLISH_CONFIRM_WINDOW_BYTES;
                             0: bounded by window only) */
} ps_router_options;

/**
 * Writes the id of a published message, "<instance, 16 hex digits>-<who>-<n>"
 * (who: at most 23 bytes of it are used), into id (64 bytes at least).
 */
void ps_router_message_id(char *id, uint64_t instance, const char *who, uint64_t n);

/** Starts the workers on q, publishing through broker (both borrowed until stop). */
ps_router *ps_router_start(const ps_router_options *opt, ps_queue *q, ps_broker *broker);

/**
 * Writes b's messages to the spool, as a worker would publish them, in one
 * append (the dispatch waiter's overflow: the queue stayed full). One thread
 * at a time. b stays the caller's. Returns 0, PS_EFULL (no spool, or no room),
 * or the spool's error.
 */
int ps_router_spool_batch(ps_router *r, ps_batch *b);

/**
 * Sets the shutdown deadline (CLOCK_MONOTONIC) before the queue is closed:
 * past it, workers stop waiting for the broker (see ps_router_stop), so that
 * calls waiting for their batch to settle (ACK_MODE=confirmed) are answered
 * and the gRPC server's drain can end. Thread-safe.
 */
void ps_router_set_deadline(ps_router *r, int64_t deadline_ns);

/**
 * Waits for the workers to publish everything left in the queue (the caller
 * closes the queue first) and to have it confirmed, until deadline_ns
 * (CLOCK_MONOTONIC); past it, what is not confirmed goes to the spool, or,
 * with no spool (or a full one), is given up: a batch whose caller waits is
 * settled PS_ETIMEDOUT (the caller is refused), one nobody waits for is
 * logged and counted as lost. Joins the workers and frees the router.
 * Returns 0, or PS_ETIMEDOUT if an accepted event was lost that way.
 */
int ps_router_stop(ps_router *r, int64_t deadline_ns);

#endif
