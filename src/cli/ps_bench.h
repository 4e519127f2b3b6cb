/*
 * ps_bench: `penstock bench`, a load generator for benchmarks of any server
 * of the event.EventService contract (penstock, or the original service).
 *
 * Closed loop (no --rate): --concurrency calls in flight over --connections
 * channels, for --duration seconds or --events events. Open loop (--rate R):
 * calls are due at fixed intervals (one batch every batch / R seconds) and
 * each call's latency counts from when it was due, not from when it could be
 * sent, so a stalled server shows in the latencies (no coordinated omission).
 *
 * Events come from a pool of serialized batches made before the run (ps_demo
 * values, event types in the proportions of --mix); every call copies one and
 * writes fresh ids into it: ids are "<run-id>-<n>" with n a fixed-width
 * (PS_BENCH_ID_DIGITS) counter, so patching them leaves every length, and so
 * the rest of the bytes, as they are. Nothing is encoded during the run.
 *
 * The pure parts (arguments, mix, pool and id patching, the open-loop
 * schedule, the timeline, the CSV and JSON writers) are public for the unit
 * tests; ps_bench_run drives a run, ps_bench_main is the command.
 */
#ifndef PS_BENCH_H
#define PS_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/ps_client.h"
#include "core/ps_buf.h"

/** Digits of the event counter in an id: "<run-id>-000000000042". */
#define PS_BENCH_ID_DIGITS 12
/** Ids of one run are numbered 1 .. PS_BENCH_MAX_EVENTS. */
#define PS_BENCH_MAX_EVENTS 999999999999ULL
#define PS_BENCH_MAX_RUN_ID 64
#define PS_BENCH_MAX_TYPES 64

/** The default mix: the original service's load generator. */
#define PS_BENCH_DEFAULT_MIX                                                                                 \
  "LaunchEvent=5,PageOpenedEvent=25,WidgetViewEvent=30,ClickEvent=25,AddToCartEvent=10,"                     \
  "CompletePurchaseEvent=5"

/** Event types and their weights. Type names are static storage (ps_event_type_at). */
typedef struct ps_bench_mix {
  size_t n;
  const char *type[PS_BENCH_MAX_TYPES];
  double weight[PS_BENCH_MAX_TYPES]; /* >= 0; their sum > 0 */
} ps_bench_mix;

/**
 * Parses "TYPE=W,TYPE=W,...": TYPE an event type's message name
 * ("ClickEvent", as in proto/eventservice.proto) or its field name
 * ("clickEvent"), W a weight >= 0 (any number; only the proportions count).
 * Returns 0, or PS_EINVAL with a reason in err (an unknown type is named,
 * with the list of known ones).
 */
int ps_bench_mix_parse(const char *spec, ps_bench_mix *mix, char *err, size_t errlen);

/**
 * Splits total events between the mix's types in proportion to their weights
 * (largest remainder: counts[i] is floor or ceil of its share, and they add up
 * to total).
 */
void ps_bench_mix_counts(const ps_bench_mix *mix, size_t total, size_t *counts);

/* ------------------------------------------------------------------ ids */

/** Writes n as PS_BENCH_ID_DIGITS decimal digits (zero-padded, no NUL) at dst. */
void ps_bench_put_counter(char *dst, uint64_t n);

/**
 * Finds the id of every event of a serialized Events by walking its wire
 * format: offsets[k] is where event k's id string starts in msg. Every id must
 * be id_len bytes long. Returns the number of events (at most max), or
 * PS_EINVAL if msg does not parse, an event has no id, an id has another
 * length, or there are more than max events.
 */
int ps_bench_find_ids(const uint8_t *msg, size_t len, size_t id_len, uint32_t *offsets, size_t max);

/** Writes counters first, first + 1, ... into the n digit fields at msg + digits[k]. */
void ps_bench_patch_ids(uint8_t *msg, const uint32_t *digits, size_t n, uint64_t first);

/* ----------------------------------------------------------------- pool */

typedef struct ps_bench_pool ps_bench_pool;

/**
 * Makes nbatches serialized Events of batch events each, plus one of tail
 * events when tail > 0 (the last call of a count that batch does not divide),
 * with demo values (ps_demo, seeded by seed), a header per batch, event types
 * in the proportions of mix over all of them (shuffled), and ids
 * "<run_id>-000000000000" for ps_bench_pool_make to number. run_id is copied.
 * Returns 0 and *out, or PS_EINVAL with err (a mix type ps_demo lacks).
 */
int ps_bench_pool_create(const char *run_id, const ps_bench_mix *mix, uint32_t batch, uint32_t tail,
                         size_t nbatches, uint64_t seed, ps_bench_pool **out, char *err, size_t errlen);

/** Frees the pool; accepts NULL. */
void ps_bench_pool_destroy(ps_bench_pool *p);

/** The longest batch of the pool, in bytes: what a buffer given to ps_bench_pool_make must hold. */
size_t ps_bench_pool_max_len(const ps_bench_pool *p);

/** Batches in the pool (not counting the tail one). */
size_t ps_bench_pool_count(const ps_bench_pool *p);

/**
 * Copies the next batch of the pool (in turn; the tail one if tail) into buf
 * and numbers its ids first, first + 1, ...; returns its length in bytes and
 * its events in *events. A memcpy and a few digits per event: no encoding.
 */
size_t ps_bench_pool_make(ps_bench_pool *p, int tail, uint64_t first, uint8_t *buf, uint32_t *events);

/* ------------------------------------------------------------- schedule */

/**
 * The open-loop schedule: the call that follows the first `events` events of
 * the run is due `events / rate` seconds after the run's start. Returns that
 * offset in ns.
 */
int64_t ps_bench_due_ns(uint64_t events, double rate);

/** Where a run stands: what was started so far, and what is left. */
typedef struct ps_bench_schedule {
  double rate;           /* events/s; 0: closed loop (no schedule) */
  uint32_t batch;        /* events per call */
  uint64_t limit;        /* --events N; 0: none */
  int64_t duration_ns;   /* --duration; 0: none */
  int64_t late_after_ns; /* a call started more than this after it was due counts as late */
  uint64_t events, calls;
  uint64_t late_calls;
  int64_t max_lag_ns; /* the largest start - due */
} ps_bench_schedule;

/**
 * The next call: returns its events (0 when none is left: the count is reached,
 * or, with a duration, it would be due, or in a closed loop start, at or after
 * its end) and its due offset in *due_ns (now_ns in a closed loop). now_ns:
 * ns since the run's start.
 */
uint32_t ps_bench_schedule_next(const ps_bench_schedule *s, int64_t now_ns, int64_t *due_ns);

/** Records that the call ps_bench_schedule_next gave (events, due_ns) started at now_ns. */
void ps_bench_schedule_started(ps_bench_schedule *s, uint32_t events, int64_t due_ns, int64_t now_ns);

/* ------------------------------------------------------------- timeline */

typedef struct ps_bench_second {
  uint64_t accepted_events, calls;
  int64_t p50_ns, p99_ns; /* of the calls that finished in this second; -1 when none did */
} ps_bench_second;

/** Per-second rows of a run: calls are added in the order they finish. */
typedef struct ps_bench_timeline {
  ps_bench_second *rows;
  size_t n, cap;           /* rows[0 .. n) are complete */
  int64_t current;         /* the second being filled */
  ps_bench_second cur;     /* its counts */
  ps_client_latency cur_h; /* its latencies */
} ps_bench_timeline;

void ps_bench_timeline_init(ps_bench_timeline *t);
void ps_bench_timeline_free(ps_bench_timeline *t);

/** One finished call, at_ns after the run's start (non-decreasing from call to call). */
void ps_bench_timeline_add(ps_bench_timeline *t, int64_t at_ns, int accepted, uint32_t events,
                           int64_t latency_ns);

/** Completes the rows up to and including the second of end_ns (the run's end, since its start). */
void ps_bench_timeline_finish(ps_bench_timeline *t, int64_t end_ns);

/**
 * Writes "second,accepted_events,calls,p50_ms,p99_ms" and one row per second
 * (p50_ms and p99_ms empty in a second in which no call finished).
 * Returns 0, or PS_EIO.
 */
int ps_bench_timeline_write(const ps_bench_timeline *t, FILE *f);

/**
 * Writes "latency_ms,fraction" and, per non-empty bucket of h, the bucket's
 * upper bound (the largest latency for the last one) and the fraction of calls
 * at or below it: the cumulative distribution. Returns 0, or PS_EIO.
 */
int ps_bench_cdf_write(const ps_client_latency *h, FILE *f);

/* -------------------------------------------------------------- options */

typedef struct ps_bench_options {
  const char *addr;     /* --addr HOST:PORT (required unless --dry-run) */
  int connections;      /* --connections N (4) */
  int concurrency;      /* --concurrency C: calls in flight (32) */
  uint32_t batch;       /* --batch B: events per call (50) */
  ps_bench_mix mix;     /* --mix (PS_BENCH_DEFAULT_MIX) */
  const char *mix_spec; /* as given (or the default) */
  double duration_s;    /* --duration S; 0 with --events */
  uint64_t events;      /* --events N; 0 with --duration */
  double rate;          /* --rate R events/s; 0: closed loop */
  int timeout_ms;       /* --timeout-ms T (10000; 0: none) */
  const char *run_id;   /* --run-id ID; NULL: random hex */
  const char *ids_path, *timeline_path, *cdf_path;
  int json, quiet, dry_run;
} ps_bench_options;

/**
 * Parses the arguments of `penstock bench` (argv[0] is "bench"); options take
 * "--opt VALUE" or "--opt=VALUE". Returns 0, 1 when --help was asked for, or
 * PS_EINVAL with a reason in err.
 */
int ps_bench_parse_args(int argc, char **argv, ps_bench_options *o, char *err, size_t errlen);

/** The usage text of `penstock bench --help`. Static storage. */
const char *ps_bench_usage(void);

/* --------------------------------------------------------------- report */

/** What a run did: the final report, and what --json prints. */
typedef struct ps_bench_report {
  const char *run_id, *addr;
  int open;            /* open loop */
  double offered_rate; /* events/s (open loop) */
  int connections, concurrency, timeout_ms;
  uint32_t batch;
  const ps_bench_mix *mix;
  ps_client_stats st; /* every call; latencies from the due time in open loop */
  double elapsed_s;   /* from the run's start to the last call's end; open loop: at least events / rate */
  uint64_t late_calls;
  int64_t max_lag_ns;
  int reached;     /* the server answered at least once (or a connection was up) */
  int interrupted; /* SIGINT/SIGTERM stopped it early */
} ps_bench_report;

/** The report as text lines (appended to out). */
void ps_bench_report_text(const ps_bench_report *r, ps_buf *out);

/**
 * The report as one JSON object and a newline (appended to out): run_id, addr,
 * mode ("closed"|"open"), offered_rate (null in closed loop), sent, accepted,
 * failed (events), failed_by_status {NAME: {events, calls}}, events_per_sec
 * (accepted), elapsed_s, late_calls, latency_ms {p50, p90, p99, p999, max,
 * mean}; then sent_calls, accepted_calls, failed_calls, connections,
 * concurrency, batch, timeout_ms, mix {TYPE: weight}, late_max_ms, interrupted.
 */
void ps_bench_report_json(const ps_bench_report *r, ps_buf *out);

/* ------------------------------------------------------------------ run */

/** Files a run writes as it goes (NULL: not wanted); borrowed. */
typedef struct ps_bench_outputs {
  FILE *ids;                   /* every id of an accepted call, one per line */
  ps_bench_timeline *timeline; /* filled and finished by the run */
} ps_bench_outputs;

/**
 * Runs the load o describes (o->run_id set; o->dry_run not) and fills *rep
 * (whose strings point into o). Returns 0, or PS_EINVAL with err for options
 * the client or the pool refuse, or PS_EINTERNAL when the gRPC core refused to
 * start a call (the report still covers what ran).
 */
int ps_bench_run(const ps_bench_options *o, const ps_bench_outputs *out, ps_bench_report *rep, char *err,
                 size_t errlen);

/** Runs `penstock bench`; argv[0] is "bench". Returns the exit code (0, 1 or 2). */
int ps_bench_main(int argc, char **argv);

#endif
