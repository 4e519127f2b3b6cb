/*
 * ps_router: the worker pool between the queue and the event exchange.
 *
 * Each worker takes batches off the queue, groups each batch's events by type
 * and publishes every group as one proto3-JSON `Events{header, events}`
 * message to the exchange, routing key = the type name, persistent, with a
 * message id and the receive time as AMQP timestamp. Each worker owns its
 * broker connection and reconnects with backoff when it breaks, retrying the
 * message it was publishing.
 */
#ifndef PS_ROUTER_H
#define PS_ROUTER_H

#include <stdint.h>

#include "broker/ps_broker.h"
#include "queue/ps_queue.h"

typedef struct ps_router ps_router;

typedef struct ps_router_options {
  int workers;
  const char *exchange;
  /* Events accepted without a type are not published to `exchange`: they go,
     as a binary Events (unknown fields kept), to this dead-letter exchange with
     routing key `skipped_key` and the reason in the headers. */
  const char *dead_letter_exchange;
  const char *skipped_key;
} ps_router_options;

/** Starts the workers on q, publishing through broker (both borrowed until stop). */
ps_router *ps_router_start(const ps_router_options *opt, ps_queue *q, ps_broker *broker);

/**
 * Waits for the workers to publish everything left in the queue (the caller
 * closes the queue first) until deadline_ns (CLOCK_MONOTONIC); past it, a
 * worker that cannot publish gives up and logs what it could not deliver.
 * Joins the workers and frees the router. Returns 0, or PS_ETIMEDOUT if
 * anything was given up.
 */
int ps_router_stop(ps_router *r, int64_t deadline_ns);

#endif
