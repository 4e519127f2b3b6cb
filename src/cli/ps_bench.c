/*
 * penstock bench: a load generator for benchmarks (see ps_bench.h).
 *
 * DESIGN: one thread drives the run (the gRPC core's own threads do the I/O).
 * It starts calls while the window (--concurrency) has room and the schedule
 * allows, and reaps completions from ps_client's completion queue; the done
 * callback (on this thread) accounts the call, writes its ids and returns its
 * buffer. Every call in flight owns one buffer of the pool's largest batch
 * size: a batch is copied from the pool into it and its ids are numbered there,
 * and it stays untouched until the call is done (the core sends from it
 * without a copy).
 *
 * Open loop: call k is due at start + (events before it) / rate. Its latency
 * counts from that due time (ps_client_start_at), so time spent waiting for
 * room in the window, or in a client that fell behind, is in the latencies; a
 * call started more than 1 ms after it was due counts as late. Waiting: the
 * completion queue's deadlines are coarse (the core rounds them to
 * milliseconds, and may wake up to about 2 ms late), so the loop blocks on the
 * queue only while the next due time is more than 4 ms away, and until 3 ms
 * before it; closer to it, it checks the queue without waiting
 * and sleeps 50 us at a time (completions are reaped within 50 us, and calls
 * start within about as much of their due time); with nothing in flight it
 * sleeps until the due time (clock_nanosleep, absolute).
 *
 * SIGINT/SIGTERM stop starting calls; those in flight are waited for and the
 * report covers what ran. A second signal kills as usual.
 */
#include "cli/ps_bench.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <grpc/status.h>

#include "cli/ps_args.h"
#include "cli/ps_demo.h"
#include "codec/ps_events.h"
#include "codec/ps_pbjson.h"
#include "core/ps_arena.h"
#include "core/ps_error.h"
#include "eventservice.pb-c.h"
#include "queue/ps_queue.h" /* ps_now_ns */

enum { PS__EXIT_OK = 0, PS__EXIT_FAIL = 1, PS__EXIT_USAGE = 2 };

#define PS__NS 1000000000LL
#define PS__LATE_NS 1000000LL        /* a call started more than 1 ms after it was due is late */
#define PS__COARSE_WAIT_NS 4000000LL /* block on the queue only while the next due time is this far */
#define PS__FINE_SLEEP_NS 50000LL    /* closer to it: check the queue, sleep this long, again */
#define PS__MAX_WAIT_NS 100000000LL  /* signals and the progress line are seen within this */
#define PS__CONN_CHECK_NS 10000000LL /* how often to look whether a connection is up */
#define PS__MAX_BUFFER_BYTES (4ULL << 30)
#define PS__POOL_EVENTS 8192 /* about this many distinct events in the pool */
#define PS__POOL_MAX_BATCHES 1024

static const char ps__usage_text[] =
    "usage: penstock bench --addr HOST:PORT (--duration S | --events N) [options]\n"
    "\n"
    "Load generator for benchmarks of a server of the event.EventService contract (penstock, or\n"
    "the original service). Events are made before the run (realistic values, a header per\n"
    "batch, types in the proportions of --mix) and every event id is unique for the run:\n"
    "<run-id>-<n>, n a 12-digit counter from 000000000001.\n"
    "\n"
    "length of the run (one of):\n"
    "  --duration S          seconds (decimals allowed); calls in flight at the end are waited for\n"
    "  --events N            this many events (the last call may carry fewer than --batch)\n"
    "options:\n"
    "  --addr HOST:PORT      the server (required)\n"
    "  --connections N       connections (gRPC channels); calls go to them in turn (default 4)\n"
    "  --concurrency C       calls in flight at most (default 32)\n"
    "  --batch B             events per call (default 50)\n"
    "  --mix TYPE=W,...      event types and weights, TYPE a message name of the proto\n"
    "                        (default: the original's load generator, LaunchEvent=5,\n"
    "                        PageOpenedEvent=25,WidgetViewEvent=30,ClickEvent=25,AddToCartEvent=10,\n"
    "                        CompletePurchaseEvent=5)\n"
    "  --rate R              open loop: R events/s, one call every B/R seconds; a call's latency\n"
    "                        counts from when it was due, also while it waits for room in the\n"
    "                        window (no coordinated omission); without --rate: closed loop,\n"
    "                        C calls always in flight\n"
    "  --timeout-ms T        deadline of each call in ms, from its start (default 10000; 0: none)\n"
    "  --run-id ID           the ids' prefix: letters, digits, '.', '_', ':' and '-', at most 64\n"
    "                        (default: 16 random hex digits)\n"
    "  --ids FILE            write the id of every event of an accepted call to FILE, one per line\n"
    "  --json                print the report as one JSON object\n"
    "  --timeline FILE       CSV: second,accepted_events,calls,p50_ms,p99_ms, one row per second\n"
    "                        of the run (latencies of the calls that finished in that second;\n"
    "                        empty when none did)\n"
    "  --cdf FILE            CSV: latency_ms,fraction, the cumulative distribution of the call\n"
    "                        latencies, one row per non-empty histogram bucket (within 1/16)\n"
    "  --quiet               no progress line, no error lines, no text report (--json still prints)\n"
    "  --dry-run             run the event generator alone, as fast as it goes, and report its\n"
    "                        events/s; nothing is sent (--addr not needed)\n"
    "  -h, --help            this text\n"
    "\n"
    "The report (stdout): events sent, accepted, failed by gRPC status (and NOT_SUCCESS: status OK\n"
    "but Response.status is not SUCCESS), accepted events/s over the run (from its start to the\n"
    "end of its last call; in open loop at least the time its schedule spans, events / R), call\n"
    "latency p50/p90/p99/p99.9/max/mean in ms; in open loop the offered and achieved rates and\n"
    "the calls that started late (more than 1 ms after they were due). On a terminal a progress\n"
    "line on stderr shows, once a second, the elapsed time, accepted events/s over the last\n"
    "second, calls in flight and failed calls. SIGINT stops the run early.\n"
    "\n"
    "exit codes: 0 the run completed (calls the server refused are reported, not an error);\n"
    "1 the server was unreachable for the whole run (or a file could not be written);\n"
    "2 usage error\n";

const char *ps_bench_usage(void) {
  return ps__usage_text;
}

/* ------------------------------------------------------------------ mix */

static void ps__trim(const char **s, size_t *n) {
  while (*n && (**s == ' ' || **s == '\t')) {
    (*s)++;
    (*n)--;
  }
  while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
    (*n)--;
}

/* The type name (static storage) of the event type called name (message or field name), or NULL. */
static const char *ps__type_named(const char *name) {
  for (size_t i = 0; i < ps_event_type_count(); i++)
    if (strcmp(ps_event_type_at(i), name) == 0)
      return ps_event_type_at(i);
  return ps_event_type_by_json_name(name);
}

int ps_bench_mix_parse(const char *spec, ps_bench_mix *mix, char *err, size_t errlen) {
  memset(mix, 0, sizeof *mix);
  const char *p = spec;
  double sum = 0;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    const char *item = p;
    ps__trim(&item, &n);
    if (n == 0) {
      snprintf(err, errlen, "--mix: an empty entry in '%s' (expected TYPE=WEIGHT,...)", spec);
      return PS_EINVAL;
    }
    const char *eq = memchr(item, '=', n);
    if (!eq) {
      snprintf(err, errlen, "--mix: '%.*s' is not TYPE=WEIGHT", (int)n, item);
      return PS_EINVAL;
    }
    const char *name = item, *wtext = eq + 1;
    size_t nn = (size_t)(eq - item), wn = n - nn - 1;
    ps__trim(&name, &nn);
    ps__trim(&wtext, &wn);
    char nbuf[128], wbuf[64];
    if (nn == 0 || nn >= sizeof nbuf || wn == 0 || wn >= sizeof wbuf) {
      snprintf(err, errlen, "--mix: '%.*s' is not TYPE=WEIGHT", (int)n, item);
      return PS_EINVAL;
    }
    memcpy(nbuf, name, nn);
    nbuf[nn] = '\0';
    memcpy(wbuf, wtext, wn);
    wbuf[wn] = '\0';
    const char *type = ps__type_named(nbuf);
    if (!type) {
      ps_buf known = PS_BUF_INIT;
      for (size_t i = 0; i < ps_event_type_count(); i++)
        ps_buf_printf(&known, "%s%s", i ? ", " : "", ps_event_type_at(i));
      snprintf(err, errlen, "--mix: unknown event type '%s' (the proto has %s)", nbuf,
               known.data ? known.data : "none");
      ps_buf_free(&known);
      return PS_EINVAL;
    }
    char *end;
    errno = 0;
    double w = strtod(wbuf, &end);
    if (errno || end == wbuf || *end || !isfinite(w) || w < 0) {
      snprintf(err, errlen, "--mix: the weight of %s, '%s', is not a number >= 0", nbuf, wbuf);
      return PS_EINVAL;
    }
    for (size_t i = 0; i < mix->n; i++)
      if (mix->type[i] == type) {
        snprintf(err, errlen, "--mix: %s is given twice", type);
        return PS_EINVAL;
      }
    if (mix->n == PS_BENCH_MAX_TYPES) {
      snprintf(err, errlen, "--mix: more than %d types", PS_BENCH_MAX_TYPES);
      return PS_EINVAL;
    }
    mix->type[mix->n] = type;
    mix->weight[mix->n] = w;
    mix->n++;
    sum += w;
    if (!comma)
      break;
    p = comma + 1;
  }
  if (!(sum > 0) || !isfinite(sum)) {
    snprintf(err, errlen, "--mix: the weights must add up to a number > 0");
    return PS_EINVAL;
  }
  return 0;
}

void ps_bench_mix_counts(const ps_bench_mix *mix, size_t total, size_t *counts) {
  double sum = 0, rem[PS_BENCH_MAX_TYPES];
  for (size_t i = 0; i < mix->n; i++)
    sum += mix->weight[i];
  size_t assigned = 0;
  for (size_t i = 0; i < mix->n; i++) {
    double exact = sum > 0 ? mix->weight[i] / sum * (double)total : 0;
    double fl = floor(exact);
    counts[i] = (size_t)fl;
    rem[i] = exact - fl;
    assigned += counts[i];
  }
  /* A rounding error upwards is taken back from the largest count (it cannot be more than one or two). */
  while (assigned > total) {
    size_t big = 0;
    for (size_t i = 1; i < mix->n; i++)
      if (counts[i] > counts[big])
        big = i;
    counts[big]--;
    assigned--;
  }
  /* What is left (fewer than n) goes one by one to the largest remainders. */
  while (assigned < total) {
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < mix->n; i++)
      if (mix->weight[i] > 0 && (best == SIZE_MAX || rem[i] > rem[best]))
        best = i;
    if (best == SIZE_MAX)
      break; /* no weight > 0: not a mix ps_bench_mix_parse accepts */
    counts[best]++;
    rem[best] -= 1;
    assigned++;
  }
}

/* ------------------------------------------------------------------ ids */

static const char ps__two_digits[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

void ps_bench_put_counter(char *dst, uint64_t n) {
  for (int i = PS_BENCH_ID_DIGITS - 2; i >= 0; i -= 2) {
    unsigned d = (unsigned)(n % 100);
    n /= 100;
    dst[i] = ps__two_digits[2 * d];
    dst[i + 1] = ps__two_digits[2 * d + 1];
  }
}

void ps_bench_patch_ids(uint8_t *msg, const uint32_t *digits, size_t n, uint64_t first) {
  for (size_t k = 0; k < n; k++)
    ps_bench_put_counter((char *)msg + digits[k], first + k);
}

static int ps__varint(const uint8_t *p, size_t end, size_t *i, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*i >= end)
      return -1;
    uint8_t b = p[(*i)++];
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -1;
}

/* Moves *i past the value of a field of wire type wt. */
static int ps__skip(const uint8_t *p, size_t end, size_t *i, unsigned wt) {
  uint64_t v;
  switch (wt) {
  case 0: return ps__varint(p, end, i, &v);
  case 1:
    if (end - *i < 8)
      return -1;
    *i += 8;
    return 0;
  case 2:
    if (ps__varint(p, end, i, &v) || v > end - *i)
      return -1;
    *i += (size_t)v;
    return 0;
  case 5:
    if (end - *i < 4)
      return -1;
    *i += 4;
    return 0;
  default: return -1; /* groups: not in this contract */
  }
}

int ps_bench_find_ids(const uint8_t *msg, size_t len, size_t id_len, uint32_t *offsets, size_t max) {
  const uint32_t events_no =
      protobuf_c_message_descriptor_get_field_by_name(&event__events__descriptor, "events")->id;
  const uint32_t id_no = protobuf_c_message_descriptor_get_field_by_name(&event__event__descriptor, "id")->id;
  if (len > UINT32_MAX)
    return PS_EINVAL;
  size_t i = 0, n = 0;
  while (i < len) {
    uint64_t key;
    if (ps__varint(msg, len, &i, &key))
      return PS_EINVAL;
    unsigned wt = (unsigned)(key & 7);
    if (key >> 3 != events_no || wt != 2) {
      if (ps__skip(msg, len, &i, wt))
        return PS_EINVAL;
      continue;
    }
    uint64_t l;
    if (ps__varint(msg, len, &i, &l) || l > len - i)
      return PS_EINVAL;
    size_t end = i + (size_t)l;
    int found = 0;
    while (i < end) {
      if (ps__varint(msg, end, &i, &key))
        return PS_EINVAL;
      wt = (unsigned)(key & 7);
      if (key >> 3 != id_no || wt != 2) {
        if (ps__skip(msg, end, &i, wt))
          return PS_EINVAL;
        continue;
      }
      uint64_t il;
      if (found || ps__varint(msg, end, &i, &il) || il != id_len || il > end - i || n >= max)
        return PS_EINVAL;
      offsets[n] = (uint32_t)i;
      found = 1;
      i += (size_t)il;
    }
    if (!found)
      return PS_EINVAL;
    n++;
  }
  return (int)n;
}

/* ----------------------------------------------------------------- pool */

typedef struct ps__template {
  uint8_t *data;
  size_t len;
  uint32_t events;
  uint32_t *digits; /* where each event's counter is */
} ps__template;

struct ps_bench_pool {
  ps__template *t; /* nbatches, then the tail one if any */
  size_t nbatches, next, max_len;
  int has_tail;
};

static uint64_t ps__mix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

int ps_bench_pool_create(const char *run_id, const ps_bench_mix *mix, uint32_t batch, uint32_t tail,
                         size_t nbatches, uint64_t seed, ps_bench_pool **out, char *err, size_t errlen) {
  *out = NULL;
  if (batch == 0 || nbatches == 0 || tail >= batch) {
    snprintf(err, errlen, "pool: bad sizes");
    return PS_EINVAL;
  }
  int rc = PS_EINVAL;
  ps_demo *d = ps_demo_create(seed, run_id);
  size_t total = nbatches * batch + tail;
  size_t *types = malloc(total * sizeof *types);
  ps_bench_pool *p = calloc(1, sizeof *p);
  size_t nt = nbatches + (tail ? 1 : 0);
  if (p)
    p->t = calloc(nt, sizeof *p->t);
  if (!types || !p || !p->t)
    abort();
  p->nbatches = nbatches;
  p->has_tail = tail > 0;

  /* Exactly the mix's proportions over the whole pool, in a shuffled order. */
  size_t counts[PS_BENCH_MAX_TYPES], k = 0;
  ps_bench_mix_counts(mix, total, counts);
  for (size_t i = 0; i < mix->n; i++) {
    int ti = ps_demo_type_index(d, mix->type[i]);
    if (ti < 0) {
      snprintf(err, errlen, "--mix: no event type %s", mix->type[i]);
      goto cleanup;
    }
    for (size_t c = 0; c < counts[i]; c++)
      types[k++] = (size_t)ti;
  }
  uint64_t rng = seed ^ 0x5bd1e995ULL;
  for (size_t i = total; i > 1; i--) {
    size_t j = (size_t)(ps__mix64(&rng) % i);
    size_t x = types[i - 1];
    types[i - 1] = types[j];
    types[j] = x;
  }

  size_t prefix = strlen(run_id) + 1, id_len = prefix + PS_BENCH_ID_DIGITS;
  char *placeholder = malloc(id_len + 1);
  if (!placeholder)
    abort();
  snprintf(placeholder, id_len + 1, "%s-%0*d", run_id, PS_BENCH_ID_DIGITS, 0);
  size_t off = 0;
  for (size_t b = 0; b < nt; b++) {
    uint32_t n = b < nbatches ? batch : tail;
    ps_arena *a = ps_arena_create(16384);
    Event__Events *m = ps_demo_batch_typed(d, a, n, types + off);
    off += n;
    for (size_t e = 0; e < n; e++)
      m->events[e]->id = placeholder;
    ps__template *t = &p->t[b];
    t->len = event__events__get_packed_size(m);
    t->data = malloc(t->len ? t->len : 1);
    t->digits = malloc((n ? n : 1) * sizeof *t->digits);
    if (!t->data || !t->digits)
      abort();
    event__events__pack(m, t->data);
    ps_arena_destroy(a);
    int found = ps_bench_find_ids(t->data, t->len, id_len, t->digits, n);
    if (found != (int)n) {
      snprintf(err, errlen, "pool: %d ids found in a batch of %u", found, n);
      free(placeholder);
      goto cleanup;
    }
    for (uint32_t e = 0; e < n; e++)
      t->digits[e] += (uint32_t)prefix;
    t->events = n;
    if (t->len > p->max_len)
      p->max_len = t->len;
  }
  free(placeholder);
  *out = p;
  p = NULL;
  rc = 0;
cleanup:
  ps_bench_pool_destroy(p);
  free(types);
  ps_demo_destroy(d);
  return rc;
}

void ps_bench_pool_destroy(ps_bench_pool *p) {
  if (!p)
    return;
  size_t nt = p->nbatches + (p->has_tail ? 1 : 0);
  for (size_t i = 0; p->t && i < nt; i++) {
    free(p->t[i].data);
    free(p->t[i].digits);
  }
  free(p->t);
  free(p);
}

size_t ps_bench_pool_max_len(const ps_bench_pool *p) {
  return p->max_len;
}

size_t ps_bench_pool_count(const ps_bench_pool *p) {
  return p->nbatches;
}

size_t ps_bench_pool_make(ps_bench_pool *p, int tail, uint64_t first, uint8_t *buf, uint32_t *events) {
  const ps__template *t;
  if (tail && p->has_tail) {
    t = &p->t[p->nbatches];
  } else {
    t = &p->t[p->next];
    if (++p->next == p->nbatches)
      p->next = 0;
  }
  memcpy(buf, t->data, t->len);
  ps_bench_patch_ids(buf, t->digits, t->events, first);
  *events = t->events;
  return t->len;
}

/* ------------------------------------------------------------- schedule */

int64_t ps_bench_due_ns(uint64_t events, double rate) {
  return (int64_t)((long double)events * 1e9L / (long double)rate);
}

uint32_t ps_bench_schedule_next(const ps_bench_schedule *s, int64_t now_ns, int64_t *due_ns) {
  uint64_t n = s->batch;
  if (s->limit) {
    if (s->events >= s->limit)
      return 0;
    if (s->limit - s->events < n)
      n = s->limit - s->events;
  }
  if (s->events + n > PS_BENCH_MAX_EVENTS)
    return 0; /* the ids would not fit their digits */
  int64_t due = s->rate > 0 ? ps_bench_due_ns(s->events, s->rate) : now_ns;
  if (s->duration_ns > 0 && due >= s->duration_ns)
    return 0;
  *due_ns = due;
  return (uint32_t)n;
}

void ps_bench_schedule_started(ps_bench_schedule *s, uint32_t events, int64_t due_ns, int64_t now_ns) {
  s->events += events;
  s->calls++;
  int64_t lag = now_ns - due_ns;
  if (lag > s->max_lag_ns)
    s->max_lag_ns = lag;
  if (lag > s->late_after_ns)
    s->late_calls++;
}

/* ------------------------------------------------------------- timeline */

void ps_bench_timeline_init(ps_bench_timeline *t) {
  memset(t, 0, sizeof *t);
}

void ps_bench_timeline_free(ps_bench_timeline *t) {
  free(t->rows);
  ps_bench_timeline_init(t);
}

/* Ends the current second: its row is complete. */
static void ps__timeline_close(ps_bench_timeline *t) {
  if (t->n == t->cap) {
    t->cap = t->cap ? t->cap * 2 : 64;
    t->rows = realloc(t->rows, t->cap * sizeof *t->rows);
    if (!t->rows)
      abort();
  }
  ps_bench_second *r = &t->rows[t->n++];
  *r = t->cur;
  r->p50_ns = t->cur_h.count ? ps_client_latency_quantile(&t->cur_h, 0.5) : -1;
  r->p99_ns = t->cur_h.count ? ps_client_latency_quantile(&t->cur_h, 0.99) : -1;
  memset(&t->cur, 0, sizeof t->cur);
  if (t->cur_h.count)
    memset(&t->cur_h, 0, sizeof t->cur_h);
  t->current++;
}

void ps_bench_timeline_add(ps_bench_timeline *t, int64_t at_ns, int accepted, uint32_t events,
                           int64_t latency_ns) {
  int64_t sec = at_ns > 0 ? at_ns / PS__NS : 0;
  while (sec > t->current)
    ps__timeline_close(t);
  t->cur.calls++;
  if (accepted)
    t->cur.accepted_events += events;
  ps_client_latency_add(&t->cur_h, latency_ns);
}

void ps_bench_timeline_finish(ps_bench_timeline *t, int64_t end_ns) {
  int64_t last = end_ns > 0 ? (end_ns - 1) / PS__NS : 0; /* the seconds [0, end) overlaps */
  while (t->current <= last)
    ps__timeline_close(t);
  if (t->cur.calls)
    ps__timeline_close(t);
}

static void ps__put_ms(FILE *f, int64_t ns) {
  if (ns >= 0)
    fprintf(f, "%.3f", (double)ns / 1e6);
}

int ps_bench_timeline_write(const ps_bench_timeline *t, FILE *f) {
  fputs("second,accepted_events,calls,p50_ms,p99_ms\n", f);
  for (size_t i = 0; i < t->n; i++) {
    const ps_bench_second *r = &t->rows[i];
    fprintf(f, "%zu,%" PRIu64 ",%" PRIu64 ",", i, r->accepted_events, r->calls);
    ps__put_ms(f, r->p50_ns);
    fputc(',', f);
    ps__put_ms(f, r->p99_ns);
    fputc('\n', f);
  }
  return fflush(f) == 0 && !ferror(f) ? 0 : PS_EIO;
}

int ps_bench_cdf_write(const ps_client_latency *h, FILE *f) {
  fputs("latency_ms,fraction\n", f);
  uint64_t seen = 0;
  for (int i = 0; i < PS_CLIENT_LAT_BUCKETS && seen < h->count; i++) {
    if (!h->buckets[i])
      continue;
    seen += h->buckets[i];
    int64_t lo, hi;
    ps_client_latency_bucket(i, &lo, &hi);
    int64_t x = hi - 1; /* every value of the bucket is at or below it */
    if (x > h->max_ns)
      x = h->max_ns;
    if (x < h->min_ns)
      x = h->min_ns;
    fprintf(f, "%.6f,%.9g\n", (double)x / 1e6, seen == h->count ? 1.0 : (double)seen / (double)h->count);
  }
  return fflush(f) == 0 && !ferror(f) ? 0 : PS_EIO;
}

/* ------------------------------------------------------------ arguments */

static int ps__num_arg(const char *flag, const char *v, double hi, double *out, char *err, size_t errlen) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || *end || !isfinite(x) || !(x > 0) || x > hi) {
    snprintf(err, errlen, "%s: '%s' is not a number > 0 and <= %g", flag, v, hi);
    return PS_EINVAL;
  }
  *out = x;
  return 0;
}

static int ps__run_id_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > PS_BENCH_MAX_RUN_ID)
    return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
          *s == '_' || *s == ':' || *s == '-'))
      return 0;
  return 1;
}

int ps_bench_parse_args(int argc, char **argv, ps_bench_options *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  o->connections = 4;
  o->concurrency = 32;
  o->batch = 50;
  o->timeout_ms = 10000;
  o->mix_spec = PS_BENCH_DEFAULT_MIX;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
      return 1;
    if (strcmp(a, "--json") == 0) {
      o->json = 1;
      continue;
    }
    if (strcmp(a, "--quiet") == 0) {
      o->quiet = 1;
      continue;
    }
    if (strcmp(a, "--dry-run") == 0) {
      o->dry_run = 1;
      continue;
    }
    if (strncmp(a, "--", 2) != 0) {
      snprintf(err, errlen, "unexpected argument '%s'", a);
      return PS_EINVAL;
    }
    /* An option with a value: --opt VALUE or --opt=VALUE. */
    static const char *const with_value[] = {
        "--addr", "--connections", "--concurrency", "--batch", "--mix",      "--duration", "--events",
        "--rate", "--timeout-ms",  "--run-id",      "--ids",   "--timeline", "--cdf"};
    char flag[64];
    const char *v;
    if (ps_args_option(argc, argv, &i, with_value, sizeof with_value / sizeof with_value[0], flag, sizeof flag,
                       &v, err, errlen) != 0)
      return PS_EINVAL;
    long long x;
    if (strcmp(flag, "--addr") == 0) {
      if (!ps_args_addr_ok(v)) {
        snprintf(err, errlen, "--addr: '%s' is not HOST:PORT", v);
        return PS_EINVAL;
      }
      o->addr = v;
    } else if (strcmp(flag, "--connections") == 0) {
      if (ps_args_int(flag, v, 1, 64, &x, err, errlen))
        return PS_EINVAL;
      o->connections = (int)x;
    } else if (strcmp(flag, "--concurrency") == 0) {
      if (ps_args_int(flag, v, 1, 16384, &x, err, errlen))
        return PS_EINVAL;
      o->concurrency = (int)x;
    } else if (strcmp(flag, "--batch") == 0) {
      if (ps_args_int(flag, v, 1, 100000, &x, err, errlen))
        return PS_EINVAL;
      o->batch = (uint32_t)x;
    } else if (strcmp(flag, "--mix") == 0) {
      o->mix_spec = v;
    } else if (strcmp(flag, "--duration") == 0) {
      if (ps__num_arg(flag, v, 1e7, &o->duration_s, err, errlen))
        return PS_EINVAL;
    } else if (strcmp(flag, "--events") == 0) {
      if (ps_args_int(flag, v, 1, (long long)PS_BENCH_MAX_EVENTS, &x, err, errlen))
        return PS_EINVAL;
      o->events = (uint64_t)x;
    } else if (strcmp(flag, "--rate") == 0) {
      if (ps__num_arg(flag, v, 1e9, &o->rate, err, errlen))
        return PS_EINVAL;
    } else if (strcmp(flag, "--timeout-ms") == 0) {
      if (ps_args_int(flag, v, 0, 86400000LL, &x, err, errlen))
        return PS_EINVAL;
      o->timeout_ms = (int)x;
    } else if (strcmp(flag, "--run-id") == 0) {
      if (!ps__run_id_ok(v)) {
        snprintf(err, errlen, "--run-id: '%s' is not 1 to %d letters, digits, '.', '_', ':' or '-'", v,
                 PS_BENCH_MAX_RUN_ID);
        return PS_EINVAL;
      }
      o->run_id = v;
    } else {
      if (!*v) {
        snprintf(err, errlen, "%s needs a file name", flag);
        return PS_EINVAL;
      }
      if (strcmp(flag, "--ids") == 0)
        o->ids_path = v;
      else if (strcmp(flag, "--timeline") == 0)
        o->timeline_path = v;
      else
        o->cdf_path = v;
    }
  }
  if (ps_bench_mix_parse(o->mix_spec, &o->mix, err, errlen))
    return PS_EINVAL;
  if (o->duration_s > 0 && o->events > 0) {
    snprintf(err, errlen, "give either --duration S or --events N, not both");
    return PS_EINVAL;
  }
  if (o->duration_s <= 0 && o->events == 0) {
    snprintf(err, errlen, "how long to run: give --duration S or --events N");
    return PS_EINVAL;
  }
  if (o->dry_run) {
    if (o->rate > 0 || o->ids_path || o->timeline_path || o->cdf_path) {
      snprintf(err, errlen,
               "--dry-run measures the event generator alone: no --rate, --ids, --timeline or --cdf");
      return PS_EINVAL;
    }
  } else if (!o->addr) {
    snprintf(err, errlen, "no server: give --addr HOST:PORT");
    return PS_EINVAL;
  }
  return 0;
}

/* --------------------------------------------------------------- report */

static double ps__rate(const ps_bench_report *r) {
  return r->elapsed_s > 0 ? (double)r->st.events[0] / r->elapsed_s : 0.0;
}

static double ps__ms(int64_t ns) {
  return (double)ns / 1e6;
}

static double ps__mean_ms(const ps_client_latency *h) {
  return h->count ? h->sum_ns / (double)h->count / 1e6 : 0.0;
}

void ps_bench_report_text(const ps_bench_report *r, ps_buf *o) {
  const ps_client_stats *st = &r->st;
  ps_buf_printf(
      o, "run        %s: %s loop to %s, %d connections, %d calls in flight at most, %u events per call\n",
      r->run_id, r->open ? "open" : "closed", r->addr, r->connections, r->concurrency, r->batch);
  ps_buf_printf(o, "sent       %" PRIu64 " events in %" PRIu64 " calls\n", st->events_started,
                st->calls_started);
  ps_buf_printf(o, "accepted   %" PRIu64 " events (%" PRIu64 " calls)\n", st->events[0], st->calls[0]);
  ps_buf_printf(o, "failed     %" PRIu64 " events (%" PRIu64 " calls)\n", st->events_done - st->events[0],
                st->calls_done - st->calls[0]);
  for (int k = 1; k < PS_CLIENT_NOUTCOMES; k++)
    if (st->calls[k])
      ps_buf_printf(o, "  %-20s %" PRIu64 " events (%" PRIu64 " calls)\n", ps_client_outcome_name(k),
                    st->events[k], st->calls[k]);
  ps_buf_printf(o, "rate       %.0f events/s accepted\n", ps__rate(r));
  ps_buf_printf(o, "elapsed    %.3f s\n", r->elapsed_s);
  if (r->open)
    ps_buf_printf(o,
                  "open loop  offered %.0f events/s, achieved %.0f events/s; %" PRIu64 " of %" PRIu64
                  " calls started late (max %.3f ms after due)\n",
                  r->offered_rate, ps__rate(r), r->late_calls, st->calls_started, ps__ms(r->max_lag_ns));
  const ps_client_latency *h = &st->latency;
  if (h->count)
    ps_buf_printf(
        o, "latency    p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms, mean %.3f ms%s\n",
        ps__ms(ps_client_latency_quantile(h, 0.5)), ps__ms(ps_client_latency_quantile(h, 0.9)),
        ps__ms(ps_client_latency_quantile(h, 0.99)), ps__ms(ps_client_latency_quantile(h, 0.999)),
        ps__ms(h->max_ns), ps__mean_ms(h), r->open ? " (from each call's due time)" : "");
  if (r->interrupted)
    ps_buf_puts(o, "interrupted: the run was stopped early\n");
}

void ps_bench_report_json(const ps_bench_report *r, ps_buf *o) {
  const ps_client_stats *st = &r->st;
  const ps_client_latency *h = &st->latency;
  ps_buf_puts(o, "{\"run_id\":");
  ps_pbjson_put_string(o, r->run_id, strlen(r->run_id));
  ps_buf_puts(o, ",\"addr\":");
  ps_pbjson_put_string(o, r->addr, strlen(r->addr));
  ps_buf_printf(o, ",\"mode\":\"%s\",\"offered_rate\":", r->open ? "open" : "closed");
  if (r->open)
    ps_buf_printf(o, "%.3f", r->offered_rate);
  else
    ps_buf_puts(o, "null");
  ps_buf_printf(
      o, ",\"sent\":%" PRIu64 ",\"accepted\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"failed_by_status\":{",
      st->events_started, st->events[0], st->events_done - st->events[0]);
  int first = 1;
  for (int k = 1; k < PS_CLIENT_NOUTCOMES; k++)
    if (st->calls[k]) {
      ps_buf_printf(o, "%s\"%s\":{\"events\":%" PRIu64 ",\"calls\":%" PRIu64 "}", first ? "" : ",",
                    ps_client_outcome_name(k), st->events[k], st->calls[k]);
      first = 0;
    }
  ps_buf_printf(o, "},\"events_per_sec\":%.1f,\"elapsed_s\":%.6f,\"late_calls\":%" PRIu64, ps__rate(r),
                r->elapsed_s, r->late_calls);
  ps_buf_printf(
      o, ",\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f,\"mean\":%.3f}",
      ps__ms(ps_client_latency_quantile(h, 0.5)), ps__ms(ps_client_latency_quantile(h, 0.9)),
      ps__ms(ps_client_latency_quantile(h, 0.99)), ps__ms(ps_client_latency_quantile(h, 0.999)),
      ps__ms(h->count ? h->max_ns : 0), ps__mean_ms(h));
  ps_buf_printf(o,
                ",\"sent_calls\":%" PRIu64 ",\"accepted_calls\":%" PRIu64 ",\"failed_calls\":%" PRIu64
                ",\"connections\":%d,\"concurrency\":%d,\"batch\":%u,\"timeout_ms\":%d,\"mix\":{",
                st->calls_started, st->calls[0], st->calls_done - st->calls[0], r->connections,
                r->concurrency, r->batch, r->timeout_ms);
  for (size_t i = 0; r->mix && i < r->mix->n; i++)
    ps_buf_printf(o, "%s\"%s\":%.6g", i ? "," : "", r->mix->type[i], r->mix->weight[i]);
  ps_buf_printf(o, "},\"late_max_ms\":%.3f,\"interrupted\":%s}\n", ps__ms(r->max_lag_ns),
                r->interrupted ? "true" : "false");
}

/* ------------------------------------------------------------------ run */

static volatile sig_atomic_t ps__stop;

static void ps__on_signal(int sig) {
  (void)sig;
  ps__stop = 1; /* SA_RESETHAND: a second signal takes the default action */
}

typedef struct ps__buffer {
  uint8_t *data;
  uint64_t first; /* the counter of its first id */
  struct ps__buffer *next_free;
} ps__buffer;

typedef struct ps__run {
  const ps_bench_options *o;
  const ps_bench_outputs *out;
  ps_client *client;
  ps__buffer *buffers, *free_buffers;
  uint8_t *buffer_bytes;
  int64_t t0;
  ps_buf ids;       /* one call's id lines */
  size_t id_prefix; /* strlen(run_id) + 1 */
  int ids_failed;
  uint64_t failed_calls;
  unsigned char reported[PS_CLIENT_NOUTCOMES];
  int tty, line_dirty;
} ps__run;

static void ps__clear_line(ps__run *r) {
  if (r->line_dirty) {
    fputs("\r\033[K", stderr);
    r->line_dirty = 0;
  }
}

/* Appends the ids first .. first + n - 1 to f, one per line. */
static void ps__write_ids(ps__run *r, uint64_t first, uint32_t n) {
  size_t line = r->id_prefix + PS_BENCH_ID_DIGITS + 1;
  ps_buf *b = &r->ids;
  ps_buf_reset(b);
  ps_buf_reserve(b, line * n);
  char *p = b->data;
  for (uint32_t k = 0; k < n; k++, p += line) {
    memcpy(p, r->o->run_id, r->id_prefix - 1);
    p[r->id_prefix - 1] = '-';
    ps_bench_put_counter(p + r->id_prefix, first + k);
    p[line - 1] = '\n';
  }
  if (fwrite(b->data, 1, line * n, r->out->ids) != line * n)
    r->ids_failed = 1;
}

static void ps__on_done(void *ctx, const ps_client_result *res) {
  ps__run *r = ctx;
  ps__buffer *buf = res->user;
  if (r->out->timeline)
    ps_bench_timeline_add(r->out->timeline, ps_now_ns() - r->t0, res->outcome == 0, res->events,
                          res->latency_ns);
  if (res->outcome == 0) {
    if (r->out->ids)
      ps__write_ids(r, buf->first, res->events);
  } else {
    r->failed_calls++;
    if (!r->o->quiet && !r->reported[res->outcome]) {
      r->reported[res->outcome] = 1;
      ps__clear_line(r);
      const char *name = ps_client_outcome_name(res->outcome);
      if (res->outcome == PS_CLIENT_NOT_SUCCESS && res->response_status)
        fprintf(
            stderr,
            "penstock bench: a call answered OK with Response.status \"%s\": %s (more such calls are only "
            "counted)\n",
            res->response_status, res->response_message ? res->response_message : "");
      else
        fprintf(stderr, "penstock bench: a call failed with %s: %s (more %s failures are only counted)\n",
                name, res->details, name);
    }
  }
  buf->next_free = r->free_buffers;
  r->free_buffers = buf;
}

static void ps__sleep_until(int64_t t_ns) {
  struct timespec ts = {(time_t)(t_ns / PS__NS), (long)(t_ns % PS__NS)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !ps__stop)
    ;
}

static void ps__draw(ps__run *r, int64_t now, uint64_t accepted_last_second, double secs_since) {
  fprintf(stderr, "\r %6.0fs  %10.0f events/s  %6zu in flight  %8" PRIu64 " failed calls\033[K",
          (double)(now - r->t0) / 1e9, secs_since > 0 ? (double)accepted_last_second / secs_since : 0.0,
          ps_client_in_flight(r->client), r->failed_calls);
  fflush(stderr);
  r->line_dirty = 1;
}

/* How many batches the pool holds: about PS__POOL_EVENTS distinct events, at least 2 batches. */
static size_t ps__pool_batches(uint32_t batch) {
  size_t n = (PS__POOL_EVENTS + batch - 1) / batch;
  return n < 2 ? 2 : n > PS__POOL_MAX_BATCHES ? PS__POOL_MAX_BATCHES : n;
}

/* A seed from the run id (the same id makes the same events). */
static uint64_t ps__seed(const char *run_id) {
  uint64_t h = 1469598103934665603ULL;
  for (const char *p = run_id; *p; p++)
    h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  return h;
}

int ps_bench_run(const ps_bench_options *o, const ps_bench_outputs *out, ps_bench_report *rep, char *err,
                 size_t errlen) {
  memset(rep, 0, sizeof *rep);
  rep->run_id = o->run_id;
  rep->addr = o->addr;
  rep->open = o->rate > 0;
  rep->offered_rate = o->rate;
  rep->connections = o->connections;
  rep->concurrency = o->concurrency;
  rep->timeout_ms = o->timeout_ms;
  rep->batch = o->batch;
  rep->mix = &o->mix;

  ps__run r;
  memset(&r, 0, sizeof r);
  r.o = o;
  r.out = out;
  r.id_prefix = strlen(o->run_id) + 1;
  r.tty = !o->quiet && isatty(STDERR_FILENO);
  int rc = 0;
  ps_bench_pool *pool = NULL;
  uint32_t tail = o->events ? (uint32_t)(o->events % o->batch) : 0;
  rc = ps_bench_pool_create(o->run_id, &o->mix, o->batch, tail, ps__pool_batches(o->batch),
                            ps__seed(o->run_id), &pool, err, errlen);
  if (rc)
    return rc;
  size_t max_len = ps_bench_pool_max_len(pool);
  if ((unsigned long long)max_len * (unsigned long long)o->concurrency > PS__MAX_BUFFER_BYTES) {
    snprintf(err, errlen,
             "--concurrency %d calls of %zu bytes (--batch %u) need more than %llu MiB of buffers",
             o->concurrency, max_len, o->batch, PS__MAX_BUFFER_BYTES >> 20);
    ps_bench_pool_destroy(pool);
    return PS_EINVAL;
  }
  ps_client_options co = {o->addr, o->connections, o->concurrency, o->timeout_ms, NULL};
  rc = ps_client_create(&co, ps__on_done, &r, &r.client, err, errlen);
  if (rc) {
    ps_bench_pool_destroy(pool);
    return rc;
  }
  r.buffers = calloc((size_t)o->concurrency, sizeof *r.buffers);
  r.buffer_bytes = malloc(max_len * (size_t)o->concurrency);
  if (!r.buffers || !r.buffer_bytes)
    abort();
  for (size_t i = (size_t)o->concurrency; i-- > 0;) {
    r.buffers[i].data = r.buffer_bytes + i * max_len;
    r.buffers[i].next_free = r.free_buffers;
    r.free_buffers = &r.buffers[i];
  }

  ps_bench_schedule s;
  memset(&s, 0, sizeof s);
  s.rate = o->rate;
  s.batch = o->batch;
  s.limit = o->events;
  s.duration_ns = o->duration_s > 0 ? (int64_t)(o->duration_s * 1e9) : 0;
  s.late_after_ns = PS__LATE_NS;
  int connected = 0, internal = 0;
  r.t0 = ps_now_ns();
  int64_t next_tick = r.t0 + PS__NS, next_conn_check = r.t0, last_tick = r.t0;
  uint64_t accepted_at_tick = 0;
  for (;;) {
    int64_t now = ps_now_ns();
    int stopping = ps__stop || internal;
    uint32_t n = 0;
    int64_t due = 0;
    /* Start every call that is due, while the window has room. */
    while (!stopping) {
      n = ps_bench_schedule_next(&s, now - r.t0, &due);
      if (n == 0 || (s.rate > 0 && due > now - r.t0) || !r.free_buffers)
        break;
      ps__buffer *b = r.free_buffers;
      r.free_buffers = b->next_free;
      uint32_t got;
      size_t len = ps_bench_pool_make(pool, n < o->batch, s.events + 1, b->data, &got);
      b->first = s.events + 1;
      if (ps_client_start_at(r.client, b->data, len, got, b, s.rate > 0 ? r.t0 + due : 0) != 0) {
        b->next_free = r.free_buffers;
        r.free_buffers = b;
        ps__clear_line(&r);
        fprintf(stderr, "penstock bench: the gRPC core refused to start a call\n");
        internal = stopping = 1;
        break;
      }
      ps_bench_schedule_started(&s, got, due, now - r.t0);
      now = ps_now_ns();
    }
    int more = !stopping && n > 0;
    size_t in_flight = ps_client_in_flight(r.client);
    if (!more && in_flight == 0)
      break;

    /* Wait: for a completion, the next due time, the next progress line, the end of the duration. */
    int64_t until = next_tick < now + PS__MAX_WAIT_NS ? next_tick : now + PS__MAX_WAIT_NS;
    if (more && r.free_buffers && s.rate > 0 && r.t0 + due < until)
      until = r.t0 + due;
    if (more && s.rate <= 0 && s.duration_ns > 0 && r.t0 + s.duration_ns < until)
      until = r.t0 + s.duration_ns;
    if (until < now)
      until = now;
    if (in_flight == 0) {
      ps__sleep_until(until);
    } else if (until - now > PS__COARSE_WAIT_NS) {
      ps_client_poll(r.client, until - now - PS__COARSE_WAIT_NS * 3 / 4); /* the core may wake 2 ms late */
    } else if (ps_client_poll(r.client, 0) == 0 && until > now) {
      ps__sleep_until(until - now > PS__FINE_SLEEP_NS ? now + PS__FINE_SLEEP_NS : until);
    }

    now = ps_now_ns();
    if (!connected && now >= next_conn_check) {
      connected = ps_client_connected(r.client);
      next_conn_check = now + PS__CONN_CHECK_NS;
    }
    if (now >= next_tick) {
      const ps_client_stats *st = ps_client_stats_get(r.client);
      if (r.tty)
        ps__draw(&r, now, st->events[0] - accepted_at_tick, (double)(now - last_tick) / 1e9);
      accepted_at_tick = st->events[0];
      last_tick = now;
      next_tick += PS__NS;
      if (next_tick <= now)
        next_tick = now + PS__NS;
    }
  }
  if (r.tty && r.line_dirty) {
    fputc('\n', stderr);
    r.line_dirty = 0;
  }

  rep->st = *ps_client_stats_get(r.client);
  ps_client_destroy(r.client);
  const ps_client_stats *st = &rep->st;
  int64_t end = st->last_done_ns > r.t0 ? st->last_done_ns - r.t0 : 0;
  /* An open-loop run lasts at least as long as the load it offered: N events at R events/s take N / R
     seconds, however soon the last call returns (so a server that keeps up achieves exactly R). */
  if (s.rate > 0 && ps_bench_due_ns(s.events, s.rate) > end)
    end = ps_bench_due_ns(s.events, s.rate);
  rep->elapsed_s = (double)end / 1e9;
  rep->late_calls = s.late_calls;
  rep->max_lag_ns = s.rate > 0 ? s.max_lag_ns : 0;
  rep->interrupted = ps__stop != 0;
  /* Reached: a connection was seen up, or some call got an answer only a server gives. */
  rep->reached = connected;
  for (int k = 0; k < PS_CLIENT_NOUTCOMES; k++)
    if (st->calls[k] && k != GRPC_STATUS_UNAVAILABLE && k != GRPC_STATUS_DEADLINE_EXCEEDED &&
        k != GRPC_STATUS_CANCELLED)
      rep->reached = 1;
  if (out->timeline)
    ps_bench_timeline_finish(out->timeline, end);
  if (r.ids_failed) {
    snprintf(err, errlen, "write error on the ids file");
    rc = PS_EIO;
  }
  if (internal) {
    snprintf(err, errlen, "the gRPC core refused to start a call");
    rc = PS_EINTERNAL;
  }
  ps_buf_free(&r.ids);
  free(r.buffers);
  free(r.buffer_bytes);
  ps_bench_pool_destroy(pool);
  return rc;
}

/* ------------------------------------------------------------- dry run */

static volatile uint64_t ps__sink;

/* The generator alone: what each call of a run does to make its message, as fast as it goes. */
static int ps__dry_run(const ps_bench_options *o) {
  char err[512];
  ps_bench_pool *pool = NULL;
  uint32_t tail = o->events ? (uint32_t)(o->events % o->batch) : 0;
  if (ps_bench_pool_create(o->run_id, &o->mix, o->batch, tail, ps__pool_batches(o->batch),
                           ps__seed(o->run_id), &pool, err, sizeof err) != 0) {
    fprintf(stderr, "penstock bench: %s\n", err);
    return PS__EXIT_USAGE;
  }
  size_t max_len = ps_bench_pool_max_len(pool);
  enum { NBUF = 64 }; /* a few buffers in turn, as calls in flight would use */
  uint8_t *bufs = malloc(max_len * NBUF);
  if (!bufs)
    abort();
  ps_bench_schedule s;
  memset(&s, 0, sizeof s);
  s.batch = o->batch;
  s.limit = o->events;
  s.duration_ns = o->duration_s > 0 ? (int64_t)(o->duration_s * 1e9) : 0;
  uint64_t bytes = 0, check = 0;
  int64_t t0 = ps_now_ns(), now = t0;
  for (uint64_t k = 0; !ps__stop; k++) {
    if ((k & 255) == 0)
      now = ps_now_ns();
    int64_t due;
    uint32_t n = ps_bench_schedule_next(&s, now - t0, &due);
    if (!n)
      break;
    uint8_t *b = bufs + (k % NBUF) * max_len;
    uint32_t got;
    size_t len = ps_bench_pool_make(pool, n < o->batch, s.events + 1, b, &got);
    bytes += len;
    check += b[len - 1];
    ps_bench_schedule_started(&s, got, due, due);
  }
  double secs = (double)(ps_now_ns() - t0) / 1e9;
  double rate = secs > 0 ? (double)s.events / secs : 0;
  if (o->json)
    printf("{\"run_id\":\"%s\",\"mode\":\"dry-run\",\"sent\":%" PRIu64 ",\"sent_calls\":%" PRIu64
           ",\"bytes\":%" PRIu64 ",\"elapsed_s\":%.6f,\"events_per_sec\":%.1f,\"pool_batches\":%zu}\n",
           o->run_id, s.events, s.calls, bytes, secs, rate, ps_bench_pool_count(pool));
  else if (!o->quiet)
    printf("dry run    %" PRIu64 " events in %" PRIu64
           " batches of %u (%.1f MB) made in %.3f s: %.0f events/s, "
           "%.0f MB/s (pool of %zu batches; nothing sent)\n",
           s.events, s.calls, o->batch, (double)bytes / 1e6, secs, rate,
           secs > 0 ? (double)bytes / 1e6 / secs : 0, ps_bench_pool_count(pool));
  fflush(stdout);
  ps__sink = check; /* the bytes made are observed: nothing of the work can be optimised away */
  free(bufs);
  ps_bench_pool_destroy(pool);
  return PS__EXIT_OK;
}

/* ------------------------------------------------------------------ main */

static FILE *ps__open_out(const char *path) {
  FILE *f = fopen(path, "w");
  if (!f)
    fprintf(stderr, "penstock bench: %s: %s\n", path, strerror(errno));
  return f;
}

static int ps__close_out(FILE *f, const char *path) {
  if (f && fclose(f) != 0) {
    fprintf(stderr, "penstock bench: %s: %s\n", path, strerror(errno));
    return -1;
  }
  return 0;
}

int ps_bench_main(int argc, char **argv) {
  ps_bench_options o;
  char err[1024];
  int rc = ps_bench_parse_args(argc, argv, &o, err, sizeof err);
  if (rc == 1) {
    fputs(ps__usage_text, stdout);
    return PS__EXIT_OK;
  }
  if (rc != 0) {
    fprintf(stderr, "penstock bench: %s (see penstock bench --help)\n", err);
    return PS__EXIT_USAGE;
  }
  char run_id[PS_BENCH_MAX_RUN_ID + 1];
  if (!o.run_id) {
    uint64_t x;
    if (getrandom(&x, sizeof x, 0) != (ssize_t)sizeof x) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      uint64_t st = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32);
      x = ps__mix64(&st);
    }
    snprintf(run_id, sizeof run_id, "%016llx", (unsigned long long)x);
    o.run_id = run_id;
  }

  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = ps__on_signal;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  ps__stop = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  if (o.dry_run) {
    rc = ps__dry_run(&o);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return rc;
  }

  /* Every output file opens before the first call: one that cannot is a usage error, nothing sent. */
  FILE *ids = NULL, *timeline = NULL, *cdf = NULL;
  int exit_code = PS__EXIT_USAGE;
  ps_bench_timeline tl;
  ps_bench_timeline_init(&tl);
  if ((o.ids_path && !(ids = ps__open_out(o.ids_path))) ||
      (o.timeline_path && !(timeline = ps__open_out(o.timeline_path))) ||
      (o.cdf_path && !(cdf = ps__open_out(o.cdf_path))))
    goto cleanup;
  if (ids)
    setvbuf(ids, NULL, _IOFBF, 1 << 20);

  ps_bench_outputs out = {ids, timeline ? &tl : NULL};
  ps_bench_report rep;
  rc = ps_bench_run(&o, &out, &rep, err, sizeof err);
  if (rc == PS_EINVAL) {
    fprintf(stderr, "penstock bench: %s\n", err);
    goto cleanup;
  }
  exit_code = PS__EXIT_OK;
  if (rc != 0) {
    fprintf(stderr, "penstock bench: %s\n", err);
    exit_code = PS__EXIT_FAIL;
  }
  ps_buf text = PS_BUF_INIT;
  if (o.json)
    ps_bench_report_json(&rep, &text);
  else if (!o.quiet)
    ps_bench_report_text(&rep, &text);
  if (text.data)
    fputs(text.data, stdout);
  ps_buf_free(&text);
  fflush(stdout);
  if (timeline && ps_bench_timeline_write(&tl, timeline) != 0) {
    fprintf(stderr, "penstock bench: %s: write error\n", o.timeline_path);
    exit_code = PS__EXIT_FAIL;
  }
  if (cdf && ps_bench_cdf_write(&rep.st.latency, cdf) != 0) {
    fprintf(stderr, "penstock bench: %s: write error\n", o.cdf_path);
    exit_code = PS__EXIT_FAIL;
  }
  if (!rep.reached) {
    if (!o.quiet)
      fprintf(stderr, "penstock bench: %s\n",
              rep.st.calls_done ? "the server was unreachable for the whole run"
                                : "interrupted before the first call");
    exit_code = PS__EXIT_FAIL;
  }
cleanup:;
  int close_failed = ps__close_out(ids, o.ids_path);
  close_failed |= ps__close_out(timeline, o.timeline_path);
  close_failed |= ps__close_out(cdf, o.cdf_path);
  if (close_failed && exit_code == PS__EXIT_OK)
    exit_code = PS__EXIT_FAIL;
  ps_bench_timeline_free(&tl);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  return exit_code;
}
