/*
 * ps_consumer: consumers of one queue, landing its messages in a sink.
 *
 * `count` threads consume the same queue, each with its own broker connection,
 * decoder and sink. A consumer decodes each message into rows in its sink's
 * pending batch, and flushes when the batch holds batch_rows rows or its oldest
 * row is flush_ms old. Deliveries are acknowledged (one multiple-ack) only
 * after the flush that holds their rows succeeded; while the sink answers
 * RETRY they stay unacknowledged (bounded by prefetch) and the flush is retried
 * with backoff. A message that cannot be decoded, or that was delivered more
 * than max_redeliveries times, is published to the dead-letter exchange with
 * its reason (ps_deadletter.h) and acknowledged: never dropped, never looping.
 */
#ifndef PS_CONSUMER_H
#define PS_CONSUMER_H

#include <stdint.h>

#include "broker/ps_broker.h"
#include "consume/ps_decoder.h"
#include "sink/ps_sink.h"

typedef struct ps_consumer_group ps_consumer_group;

/** Makes one consumer's decoder and sink; called on the consumer's thread. */
typedef struct ps_consumer_factory {
  ps_decoder *(*decoder)(void *ud);
  ps_sink *(*sink)(void *ud);
  void *ud;
} ps_consumer_factory;

typedef struct ps_consumer_options {
  const char *queue;
  const char *table; /* where the sink lands rows, for metrics labels */
  int count;
  int prefetch;
  int batch_rows;
  int flush_ms;
  const char *name;                 /* for logs and dead-letter headers; NULL: the queue */
  const char *dead_letter_exchange; /* dead letters go there, routing key = the queue */
  int max_redeliveries;             /* a message delivered more often than this is dead-lettered */
  size_t max_held_bytes; /* bodies held unacknowledged, at most (see the topology's max_held_bytes);
                            0: bounded by prefetch only */
  /*
   * Buffered (the original's "buffered sinker"): the queue's consumers push
   * decoded rows into one bounded buffer of buffer_rows rows, drained by a
   * sinker thread that owns the group's one sink and flushes at batch_rows
   * rows or when the oldest row is flush_ms old, and at shutdown. Each
   * delivery is acknowledged, by the consumer that took it, only after the
   * insert holding its rows succeeded. 0: direct (each consumer flushes its own
   * sink).
   */
  int buffered;
  int buffer_rows;
} ps_consumer_options;

/** Starts the consumers. broker and factory->ud are borrowed until stop. */
ps_consumer_group *ps_consumers_start(const ps_consumer_options *opt, ps_broker *broker,
                                      const ps_consumer_factory *factory);

/**
 * Asks the consumers to stop: each flushes what it holds and acknowledges it,
 * retrying until deadline_ns, then closes its connection (what it could not
 * land goes back to the queue). Joins and frees. Accepts NULL.
 */
void ps_consumers_stop(ps_consumer_group *g, int64_t deadline_ns);

#endif
