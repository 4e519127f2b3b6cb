/*
 * ps_sinker: the buffered sinker of one queue's consumers.
 *
 * The original service's "buffered" consumers pushed rows into a 10,000-slot
 * channel that one goroutine drained into ClickHouse at 100 rows or every 5
 * minutes, and acknowledged each message as soon as it was pushed: a crash
 * lost the buffer. Here the consumers of a queue push each message's rows into
 * one bounded buffer (capacity rows), a sinker thread owning the group's one
 * sink inserts them at flush_rows rows, when the oldest row is flush_ms old, or
 * when one consumer's prefetch window (window messages) is all in the buffer
 * (at once while stopping), and tells each consumer which of its messages are
 * stored or refused; the consumer, on its own thread and connection,
 * acknowledges the stored ones and dead-letters the refused ones. A message
 * is acknowledged only after the insert holding its rows succeeded.
 *
 * Bounds: a push waits while the buffer lacks room (a message larger than the
 * buffer goes in alone), so rows in memory stay below capacity plus the one
 * batch being inserted, and a consumer that waits takes no more deliveries.
 * While the sink answers RETRY the sinker keeps its batch and retries with
 * backoff; the buffer fills and the consumers wait: back-pressure to RabbitMQ,
 * where the messages stay unacknowledged.
 *
 * Generations: a consumer that lost its connection bumps its generation; its
 * rows still in the buffer are dropped when the sinker takes them, and
 * completions for an old generation are for deliveries RabbitMQ has already
 * requeued (the consumer ignores them). Rows of an old generation already in
 * an insert land, and land again when redelivered: the tables'
 * ReplacingMergeTree engines fold such duplicates.
 */
#ifndef PS_SINKER_H
#define PS_SINKER_H

#include <stddef.h>
#include <stdint.h>

#include "core/ps_metrics.h"
#include "sink/ps_sink.h"

typedef struct ps_sinker ps_sinker;

typedef struct ps_sinker_options {
  const char *name;  /* for logs (the queue) */
  int consumers;     /* consumer ids are 0..consumers-1 */
  int capacity_rows; /* the buffer's bound */
  int flush_rows;
  int flush_ms;
  /* Metrics the sinker bumps (may be NULL): the group's series. */
  ps_counter *m_rows, *m_ins_ok, *m_ins_retry, *m_ins_drop;
  ps_histogram *m_ins_seconds, *m_ins_rows;
  /* The consumers' prefetch: with that many of one consumer's messages in the buffer, the broker sends it
     nothing more until they are acknowledged, so the sinker inserts at once. 0: no such rule. */
  int window;
} ps_sinker_options;

/** What became of one pushed message. */
typedef struct ps_sinker_done {
  uint64_t gen, tag;
  int rejected;      /* 0: stored; 1: refused, reason says why */
  size_t row;        /* refused: the first refused row's index in the message */
  char reason[512];
} ps_sinker_done;

/**
 * Starts the sinker thread with sink (owned from now on, used by the sinker
 * thread only). Registers the gauge penstock_sinker_buffer_rows{queue=name}.
 */
ps_sinker *ps_sinker_start(const ps_sinker_options *opt, ps_sink *sink);

/**
 * A staging sink for one consumer: its decoder writes a message's rows there
 * (copied), and ps_sinker_push moves them into the buffer. Its flush stores
 * nothing (and answers OK); destroy it with ps_sink_destroy.
 */
ps_sink *ps_sinker_stage(ps_sinker *s);

/**
 * Moves the rows staged in stage (a message's, possibly none) into the buffer
 * as message (consumer, gen, tag), waiting while the buffer lacks room. The
 * wait ends early, without pushing, if *abort becomes non-zero (checked every
 * 100 ms): returns PS_ECLOSED then, else 0.
 */
int ps_sinker_push(ps_sinker *s, int consumer, uint64_t gen, uint64_t tag, ps_sink *stage, const _Atomic int *abort);

/**
 * One consumer holds all the message bytes it may (max_held_bytes) and takes
 * nothing more until some are acknowledged: the buffer is inserted at once, as
 * with a full prefetch window, or the next one is, if an insert is under way.
 */
void ps_sinker_insert_now(ps_sinker *s);

/** Takes up to max completions of consumer, in push order. */
size_t ps_sinker_take(ps_sinker *s, int consumer, ps_sinker_done *out, size_t max);

/**
 * Waits until a completion of consumer is there to take, or max_ms passed;
 * returns how many are waiting (0: none came in time).
 */
size_t ps_sinker_wait(ps_sinker *s, int consumer, int max_ms);

/**
 * Consumer `consumer` is now at generation gen (it reconnected): its rows of
 * older generations still buffered are not inserted, its completions waiting
 * are dropped.
 */
void ps_sinker_reset(ps_sinker *s, int consumer, uint64_t gen);

/**
 * Stopping: from now on the sinker inserts what it holds at once, without
 * waiting for flush_rows or flush_ms, and gives up an insert that still fails
 * at deadline_ns (its messages get no completion).
 */
void ps_sinker_hurry(ps_sinker *s, int64_t deadline_ns);

/** Rows in the buffer (not counting the batch being inserted). */
size_t ps_sinker_buffered(ps_sinker *s);

/**
 * Stops the sinker once no consumer pushes any more: rows still buffered are
 * not inserted (their messages were not acknowledged and return to the
 * queue), an insert under way is given up at deadline_ns; joins and frees,
 * the sink included. Accepts NULL.
 */
void ps_sinker_stop(ps_sinker *s, int64_t deadline_ns);

#endif
