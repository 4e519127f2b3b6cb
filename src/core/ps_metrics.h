/*
 * ps_metrics: counters, gauges and histograms, exposed in Prometheus' text format.
 *
 * Process-wide series with no labels live in one static struct (ps_metrics)
 * and are bumped with PS_COUNT: a relaxed atomic add, once per batch or
 * message, never per field. Labelled series (per queue, per RPC method and
 * status) are registered at run time and handed out as pointers, so their hot
 * path is the same single atomic add. Gauges that are really views of other
 * state (queue depth, readiness) are callbacks read at scrape time.
 * Names follow Prometheus conventions: penstock_<what>_<unit>, counters end in
 * _total, times are in seconds.
 */
#ifndef PS_METRICS_H
#define PS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/ps_buf.h"

/* field, name, labels (Prometheus label text or ""), help */
#define PS_METRICS_MAP(X)                                                                                   \
  X(batches_received_total, "penstock_batches_received_total", "", "dispatch calls received")              \
  X(batches_accepted_total, "penstock_batches_accepted_total", "", "dispatch calls answered SUCCESS")      \
  X(events_received_total, "penstock_events_received_total", "", "events in decodable dispatch calls")     \
  X(events_accepted_total, "penstock_events_accepted_total", "", "events whose dispatch answered SUCCESS") \
  X(events_rejected_invalid, "penstock_events_rejected_total", "reason=\"invalid\"",                        \
    "events in dispatch calls refused, by reason (events of undecodable calls are not known: 0)")          \
  X(events_rejected_queue_full, "penstock_events_rejected_total", "reason=\"queue_full\"", NULL)            \
  X(events_rejected_deadline, "penstock_events_rejected_total", "reason=\"deadline\"", NULL)                \
  X(events_rejected_shutdown, "penstock_events_rejected_total", "reason=\"shutdown\"", NULL)                \
  X(events_rejected_unstored, "penstock_events_rejected_total", "reason=\"unstored\"", NULL)                \
  X(batches_rejected_invalid, "penstock_batches_rejected_total", "reason=\"invalid\"",                      \
    "dispatch calls refused, by reason")                                                                    \
  X(batches_rejected_queue_full, "penstock_batches_rejected_total", "reason=\"queue_full\"", NULL)          \
  X(batches_rejected_deadline, "penstock_batches_rejected_total", "reason=\"deadline\"", NULL)              \
  X(batches_rejected_shutdown, "penstock_batches_rejected_total", "reason=\"shutdown\"", NULL)              \
  X(batches_rejected_unstored, "penstock_batches_rejected_total", "reason=\"unstored\"", NULL)              \
  X(events_skipped_no_payload, "penstock_events_skipped_total", "reason=\"no_payload\"",                    \
    "events accepted without a type and not published, by reason")                                         \
  X(events_skipped_unknown_type, "penstock_events_skipped_total", "reason=\"unknown_type\"", NULL)          \
  X(messages_published_total, "penstock_messages_published_total", "", "messages published to the event exchange") \
  X(events_published_total, "penstock_events_published_total", "", "events in the messages published")    \
  X(publish_errors_total, "penstock_publish_errors_total", "", "publish attempts that failed (and were retried)") \
  X(publish_nacks_total, "penstock_publish_nacks_total", "", "publishes the broker refused (nack), published again or spooled") \
  X(publish_confirm_timeouts_total, "penstock_publish_confirm_timeouts_total", "",                          \
    "connections dropped because a publish was not confirmed within PUBLISH_CONFIRM_TIMEOUT_MS")             \
  X(publish_unconfirmed, "penstock_publish_unconfirmed", "", "messages published and not yet confirmed (gauge)") \
  X(messages_returned_total, "penstock_messages_returned_total", "",                                        \
    "messages the broker could not route (mandatory), dead-lettered to grpc_event_skipped.error")           \
  X(events_spooled_total, "penstock_events_spooled_total", "",                                               \
    "events written to the local spool (broker unreachable or not confirming)")                             \
  X(messages_spooled_total, "penstock_messages_spooled_total", "", "messages written to the local spool")    \
  X(spool_replayed_messages_total, "penstock_spool_replayed_messages_total", "",                            \
    "spooled messages published again and confirmed")                                                       \
  X(publish_given_up_events_total, "penstock_publish_given_up_events_total", "",                           \
    "events not published: the shutdown deadline passed with the broker unreachable")                      \
  X(broker_reconnects_publisher, "penstock_broker_reconnects_total", "role=\"publisher\"",                  \
    "broker connections re-established after a loss, by role")                                              \
  X(broker_reconnects_consumer, "penstock_broker_reconnects_total", "role=\"consumer\"", NULL)              \
  X(broker_connections_publisher, "penstock_broker_connections", "role=\"publisher\"",                      \
    "open broker connections, by role (gauge)")                                                             \
  X(broker_connections_consumer, "penstock_broker_connections", "role=\"consumer\"", NULL)                  \
  X(log_suppressed_total, "penstock_log_suppressed_total", "", "log lines suppressed by rate limits")

typedef struct ps_metrics_t {
#define PS__METRIC_FIELD(field, name, labels, help) _Atomic int64_t field;
  PS_METRICS_MAP(PS__METRIC_FIELD)
#undef PS__METRIC_FIELD
} ps_metrics_t;

extern ps_metrics_t ps_metrics;

/* PS_METRICS_OFF builds a binary that counts nothing: only to measure what counting costs (bench/metrics-cost). */
#ifdef PS_METRICS_OFF
#define PS_COUNT(field, n) ((void)(n))
#else
#define PS_COUNT(field, n) atomic_fetch_add_explicit(&ps_metrics.field, (int64_t)(n), memory_order_relaxed)
#endif
#define PS_METRIC_GET(field) atomic_load_explicit(&ps_metrics.field, memory_order_relaxed)

/** A labelled counter (or integer gauge): bump with ps_counter_add. */
typedef struct ps_counter {
  _Atomic int64_t v;
} ps_counter;

static inline void ps_counter_add(ps_counter *c, int64_t n) {
#ifdef PS_METRICS_OFF
  (void)c;
  (void)n;
#else
  atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
#endif
}

/** A histogram with fixed upper bounds (ascending; +Inf is implied). */
typedef struct ps_histogram ps_histogram;

/** Adds one observation. */
void ps_histogram_observe(ps_histogram *h, double v);

/**
 * Registers (or finds) the counter `name{labels}` and returns it; labels is
 * Prometheus label text (`queue="q",table="t"`) or "". Lives until exit.
 * gauge=1 exposes it as a gauge. Thread-safe; not for the hot path.
 */
ps_counter *ps_metrics_counter(const char *name, const char *labels, const char *help, int gauge);

/** Registers (or finds) a histogram; bounds are copied. */
ps_histogram *ps_metrics_histogram(const char *name, const char *labels, const char *help, const double *bounds,
                                   size_t nbounds);

/** Registers a gauge whose value fn(ud) computes at scrape time. */
void ps_metrics_gauge_fn(const char *name, const char *labels, const char *help, double (*fn)(void *ud),
                         void *ud);

/** Latency buckets in seconds, from 100 µs to 10 s. */
extern const double ps_metrics_latency_bounds[];
extern const size_t ps_metrics_latency_nbounds;

/** Appends the whole exposition (text format 0.0.4), process_* metrics included. */
void ps_metrics_render(ps_buf *out);

#endif
