/*
 * ps_client: an asynchronous unary client of event.EventService/dispatch on
 * the gRPC C core, for `penstock send` and for load generators.
 *
 * The caller hands it pre-serialized `Events` messages; it keeps up to a
 * window of calls in flight on one or a few channels (connections) and one
 * completion queue, measures each call's latency, decodes the `Response`, and
 * reports every finished call to a callback and into running statistics:
 * calls and events by outcome (gRPC status code, or NOT_SUCCESS for an OK
 * status whose Response.status is not "SUCCESS") and a latency histogram.
 *
 * Driving it: start calls while ps_client_room() > 0, then ps_client_poll()
 * to reap completions (the done callback runs inside poll, on the caller's
 * thread); repeat; ps_client_destroy() at the end. A client belongs to one
 * thread at a time. Several clients may run in several threads: each has its
 * own completion queue and channels, and the statistics of each can be merged.
 */
#ifndef PS_CLIENT_H
#define PS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

/** gRPC status codes 0..16, then the outcome "OK, but Response.status is not SUCCESS". */
#define PS_CLIENT_NCODES 17
enum { PS_CLIENT_NOT_SUCCESS = PS_CLIENT_NCODES, PS_CLIENT_NOUTCOMES };

/** The default gRPC method: the contract's only one. */
#define PS_CLIENT_DISPATCH_METHOD "/event.EventService/dispatch"

typedef struct ps_client ps_client;

typedef struct ps_client_options {
  const char *target; /* gRPC target, e.g. "127.0.0.1:50051"; required */
  int channels;       /* connections; calls go to them in turn (0: 1) */
  int max_in_flight;  /* the window: calls started and not finished (0: 8) */
  int timeout_ms;     /* deadline of each call from its start (0: none) */
  const char *method; /* NULL: PS_CLIENT_DISPATCH_METHOD */
} ps_client_options;

/** One finished call, as the done callback sees it. Strings are valid during the callback only. */
typedef struct ps_client_result {
  void *user;                   /* as given to ps_client_start */
  uint32_t events;              /* as given to ps_client_start */
  int64_t latency_ns;           /* from the start of the call to its status */
  int code;                     /* grpc_status_code */
  const char *details;          /* status details ("" for OK) */
  const char *response_status;  /* Response.status; NULL when no Response was decoded */
  const char *response_message; /* Response.message; NULL likewise */
  int outcome;                  /* 0 (accepted), a code 1..16, or PS_CLIENT_NOT_SUCCESS */
} ps_client_result;

/** Called once per started call, inside ps_client_poll (or ps_client_destroy, with CANCELLED). */
typedef void (*ps_client_done_fn)(void *ctx, const ps_client_result *r);

/**
 * Latencies in a log-linear histogram: 16 buckets per power of two, so a
 * quantile is known within 1/16 (6%) of its value, from 1 ns to 2^63 ns.
 */
#define PS_CLIENT_LAT_BUCKETS (64 * 16)
typedef struct ps_client_latency {
  uint64_t count;
  int64_t min_ns, max_ns;
  double sum_ns;
  uint64_t buckets[PS_CLIENT_LAT_BUCKETS];
} ps_client_latency;

typedef struct ps_client_stats {
  uint64_t calls_started, events_started;
  uint64_t calls_done, events_done;
  uint64_t calls[PS_CLIENT_NOUTCOMES];  /* finished calls by outcome; [0]: accepted */
  uint64_t events[PS_CLIENT_NOUTCOMES]; /* their events, likewise */
  int64_t first_start_ns, last_done_ns; /* CLOCK_MONOTONIC; 0 until the first start / finish */
  ps_client_latency latency;            /* of every finished call */
} ps_client_stats;

/**
 * Creates a client: initialises the gRPC core (reference-counted), opens the
 * channels (they connect on the first call) and the completion queue.
 * done (may be NULL) is called with ctx for every finished call.
 * Returns 0 and *out, or PS_EINVAL with a reason in err for bad options.
 */
int ps_client_create(const ps_client_options *opt, ps_client_done_fn done, void *ctx, ps_client **out,
                     char *err, size_t errlen);

/**
 * Cancels the calls still in flight and reaps them (their callbacks run with
 * CANCELLED unless they finished first), then closes the channels and the
 * queue in the order the core requires. Accepts NULL.
 */
void ps_client_destroy(ps_client *c);

/** Calls that may be started now (the window minus the calls in flight). */
size_t ps_client_room(const ps_client *c);

/** Calls started and not yet reaped. */
size_t ps_client_in_flight(const ps_client *c);

/**
 * Starts one call sending the serialized message data[0..len), which stays
 * borrowed until the call's done callback has returned. events (the events
 * in the message) is only counted; user comes back in the result.
 * Returns 0, PS_EFULL when the window is full, or PS_EINTERNAL when the core
 * refused to start the call (nothing was started or counted then).
 */
int ps_client_start(ps_client *c, const void *data, size_t len, uint32_t events, void *user);

/**
 * ps_client_start, but the call's latency counts from start_ns (CLOCK_MONOTONIC,
 * as ps_now_ns) instead of from now: its scheduled start in an open-loop load,
 * so that a call that had to wait for room in the window still counts the wait
 * (no coordinated omission). start_ns <= 0 means now. The deadline (timeout_ms)
 * still runs from the actual start.
 */
int ps_client_start_at(ps_client *c, const void *data, size_t len, uint32_t events, void *user,
                       int64_t start_ns);

/**
 * True when any of the client's channels is connected (READY) now. Does not
 * start connecting. For telling "the server never answered" from "it refused".
 */
int ps_client_connected(ps_client *c);

/**
 * Reaps finished calls: waits up to timeout_ns for the first (0: not at all;
 * < 0: until one finishes; returns at once when nothing is in flight), then
 * takes every other one already finished, running the done callback for each.
 * Returns the number reaped.
 */
int ps_client_poll(ps_client *c, int64_t timeout_ns);

/** The running statistics (updated by ps_client_poll; valid until ps_client_destroy). */
const ps_client_stats *ps_client_stats_get(const ps_client *c);

/** Adds the counts of from to into (for clients driven by several threads). */
void ps_client_stats_merge(ps_client_stats *into, const ps_client_stats *from);

/** Name of an outcome: the gRPC code's ("UNAVAILABLE"), or "NOT_SUCCESS". Static storage. */
const char *ps_client_outcome_name(int outcome);

/** Records one latency (negative values count as 0). */
void ps_client_latency_add(ps_client_latency *h, int64_t ns);

/** The q-quantile (0 <= q <= 1) in ns, within 1/16 of it; 0 when empty. */
int64_t ps_client_latency_quantile(const ps_client_latency *h, double q);

/** The values bucket i (0 <= i < PS_CLIENT_LAT_BUCKETS) counts: [*lower_ns, *upper_ns). */
void ps_client_latency_bucket(int i, int64_t *lower_ns, int64_t *upper_ns);

#endif
