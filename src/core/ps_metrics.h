/*
 * ps_metrics: process-wide counters.
 *
 * Plain relaxed atomics, one per figure, bumped once per batch or message
 * (never per field), so counting stays off the hot path's critical costs.
 * Readers take a snapshot of each counter independently.
 */
#ifndef PS_METRICS_H
#define PS_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#define PS_METRICS_MAP(X)                                                     \
  X(rpcs_total, "dispatch calls received")                                    \
  X(events_received_total, "events in dispatch calls received")               \
  X(events_accepted_total, "events whose dispatch answered SUCCESS")          \
  X(events_skipped_total, "events accepted without a type, not published")    \
  X(rejected_invalid_total, "dispatch calls rejected as invalid")             \
  X(rejected_queue_full_total, "dispatch calls rejected: queue full")         \
  X(rejected_deadline_total, "dispatch calls that hit their deadline waiting for the queue") \
  X(messages_published_total, "messages published to the event exchange")    \
  X(events_published_total, "events in messages published")                  \
  X(publish_errors_total, "publish attempts that failed (retried)")           \
  X(broker_reconnects_total, "broker connections re-established")             \
  X(messages_consumed_total, "messages taken from queues")                    \
  X(messages_undecodable_total, "consumed messages that could not be decoded")\
  X(rows_inserted_total, "rows inserted into ClickHouse")                     \
  X(inserts_total, "INSERT requests that succeeded")                          \
  X(insert_errors_total, "INSERT requests that failed")

typedef struct ps_metrics_t {
#define PS__METRIC_FIELD(name, help) _Atomic uint64_t name;
  PS_METRICS_MAP(PS__METRIC_FIELD)
#undef PS__METRIC_FIELD
} ps_metrics_t;

extern ps_metrics_t ps_metrics;

#define PS_COUNT(name, n)                                                     \
  atomic_fetch_add_explicit(&ps_metrics.name, (uint64_t)(n), memory_order_relaxed)
#define PS_METRIC_GET(name) atomic_load_explicit(&ps_metrics.name, memory_order_relaxed)

#endif
