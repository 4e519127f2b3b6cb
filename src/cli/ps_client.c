/*
 * ps_client: unary dispatch calls on the gRPC C core (see ps_client.h).
 *
 * DESIGN: no thread of its own. The caller's thread starts calls and reaps
 * them from one completion queue; the core's own threads do the I/O. Each call
 * is one batch of six ops (send initial metadata, message, close; receive
 * initial metadata, message, status) whose tag is the call's slot; the window
 * is a fixed array of slots, so a busy client allocates nothing per call but
 * what the core needs. The request is a static slice over the caller's bytes
 * (no copy): the core is done with it when the batch completes. Retries are
 * off (GRPC_ARG_ENABLE_RETRIES=0): every call is sent at most once, so an
 * event the summary counts once reaches the server at most once. With several
 * channels each gets its own connection (a local subchannel pool; otherwise
 * the core would share one connection between them).
 *
 * Teardown order (the core aborts otherwise): every call cancelled, reaped and
 * unreferenced; then the channels destroyed; then the queue shut down, drained
 * to GRPC_QUEUE_SHUTDOWN and destroyed; then grpc_shutdown.
 */
#include "cli/ps_client.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/impl/codegen/grpc_types.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ps_error.h"
#include "eventservice.pb-c.h"
#include "queue/ps_queue.h" /* ps_now_ns */

#define PS__MAX_CHANNELS 64
#define PS__MAX_WINDOW 65536

typedef struct ps__slot {
  grpc_call *call; /* non-NULL while the slot is busy */
  grpc_byte_buffer *req, *resp;
  grpc_metadata_array initial_md, trailing_md;
  grpc_status_code code;
  grpc_slice details;
  int64_t start_ns;
  uint32_t events;
  void *user;
  struct ps__slot *next_free;
} ps__slot;

struct ps_client {
  grpc_completion_queue *cq;
  grpc_channel **channels;
  int nchannels, next_channel;
  grpc_slice method;
  int timeout_ms;
  ps__slot *slots, *free_slots;
  size_t window, in_flight;
  ps_client_done_fn done;
  void *ctx;
  ps_client_stats st;
};

static const char *const ps__outcome_names[PS_CLIENT_NOUTCOMES] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED", "NOT_SUCCESS"};

const char *ps_client_outcome_name(int outcome) {
  return outcome >= 0 && outcome < PS_CLIENT_NOUTCOMES ? ps__outcome_names[outcome] : "UNKNOWN";
}

/* ------------------------------------------------------------ latency */

static int ps__lat_index(uint64_t v) {
  if (v < 16)
    return (int)v;
  int k = 63 - __builtin_clzll(v); /* >= 4 */
  return (k - 3) * 16 + (int)((v >> (k - 4)) & 15);
}

/* [lower, lower + width) of bucket i. */
static void ps__lat_bucket(int i, uint64_t *lower, uint64_t *width) {
  if (i < 16) {
    *lower = (uint64_t)i;
    *width = 1;
    return;
  }
  int k = i / 16 + 3;
  *lower = (uint64_t)(16 + i % 16) << (k - 4);
  *width = (uint64_t)1 << (k - 4);
}

void ps_client_latency_add(ps_client_latency *h, int64_t ns) {
  if (ns < 0)
    ns = 0;
  if (h->count == 0 || ns < h->min_ns)
    h->min_ns = ns;
  if (h->count == 0 || ns > h->max_ns)
    h->max_ns = ns;
  h->count++;
  h->sum_ns += (double)ns;
  h->buckets[ps__lat_index((uint64_t)ns)]++;
}

void ps_client_latency_bucket(int i, int64_t *lower_ns, int64_t *upper_ns) {
  uint64_t lo, w;
  ps__lat_bucket(i, &lo, &w);
  *lower_ns = (int64_t)lo;
  *upper_ns = lo + w > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)(lo + w);
}

int64_t ps_client_latency_quantile(const ps_client_latency *h, double q) {
  if (h->count == 0)
    return 0;
  if (q <= 0)
    return h->min_ns;
  if (q >= 1)
    return h->max_ns;
  uint64_t rank = (uint64_t)(q * (double)h->count);
  if ((double)rank < q * (double)h->count)
    rank++; /* ceil: the smallest value with at least q of the values at or below it */
  if (rank == 0)
    rank = 1;
  uint64_t seen = 0;
  for (int i = 0; i < PS_CLIENT_LAT_BUCKETS; i++) {
    seen += h->buckets[i];
    if (seen >= rank) {
      uint64_t lo, w;
      ps__lat_bucket(i, &lo, &w);
      int64_t mid = (int64_t)(lo + (w - 1) / 2);
      return mid < h->min_ns ? h->min_ns : mid > h->max_ns ? h->max_ns : mid;
    }
  }
  return h->max_ns;
}

void ps_client_stats_merge(ps_client_stats *into, const ps_client_stats *from) {
  into->calls_started += from->calls_started;
  into->events_started += from->events_started;
  into->calls_done += from->calls_done;
  into->events_done += from->events_done;
  for (int i = 0; i < PS_CLIENT_NOUTCOMES; i++) {
    into->calls[i] += from->calls[i];
    into->events[i] += from->events[i];
  }
  if (from->first_start_ns && (!into->first_start_ns || from->first_start_ns < into->first_start_ns))
    into->first_start_ns = from->first_start_ns;
  if (from->last_done_ns > into->last_done_ns)
    into->last_done_ns = from->last_done_ns;
  const ps_client_latency *f = &from->latency;
  ps_client_latency *t = &into->latency;
  if (f->count) {
    if (!t->count || f->min_ns < t->min_ns)
      t->min_ns = f->min_ns;
    if (!t->count || f->max_ns > t->max_ns)
      t->max_ns = f->max_ns;
    t->count += f->count;
    t->sum_ns += f->sum_ns;
    for (int i = 0; i < PS_CLIENT_LAT_BUCKETS; i++)
      t->buckets[i] += f->buckets[i];
  }
}

/* ------------------------------------------------------------- client */

int ps_client_create(const ps_client_options *opt, ps_client_done_fn done, void *ctx, ps_client **out,
                     char *err, size_t errlen) {
  *out = NULL;
  int nch = opt->channels ? opt->channels : 1;
  int window = opt->max_in_flight ? opt->max_in_flight : 8;
  if (!opt->target || !*opt->target) {
    snprintf(err, errlen, "no target address");
    return PS_EINVAL;
  }
  if (nch < 1 || nch > PS__MAX_CHANNELS) {
    snprintf(err, errlen, "channels must be 1..%d", PS__MAX_CHANNELS);
    return PS_EINVAL;
  }
  if (window < 1 || window > PS__MAX_WINDOW) {
    snprintf(err, errlen, "calls in flight must be 1..%d", PS__MAX_WINDOW);
    return PS_EINVAL;
  }
  if (opt->timeout_ms < 0) {
    snprintf(err, errlen, "timeout must be >= 0");
    return PS_EINVAL;
  }
  ps_client *c = calloc(1, sizeof *c);
  if (!c)
    abort();
  c->slots = calloc((size_t)window, sizeof *c->slots);
  c->channels = calloc((size_t)nch, sizeof *c->channels);
  if (!c->slots || !c->channels)
    abort();
  c->window = (size_t)window;
  for (size_t i = c->window; i-- > 0;) {
    c->slots[i].next_free = c->free_slots;
    c->free_slots = &c->slots[i];
  }
  c->timeout_ms = opt->timeout_ms;
  c->done = done;
  c->ctx = ctx;

  grpc_init();
  c->method = grpc_slice_from_copied_string(opt->method ? opt->method : PS_CLIENT_DISPATCH_METHOD);
  grpc_arg args[2];
  memset(args, 0, sizeof args);
  args[0].type = GRPC_ARG_INTEGER;
  args[0].key = GRPC_ARG_ENABLE_RETRIES;
  args[0].value.integer = 0;
  args[1].type = GRPC_ARG_INTEGER;
  args[1].key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
  args[1].value.integer = 1;
  grpc_channel_args cargs = {2, args};
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  for (int i = 0; i < nch; i++)
    c->channels[i] = grpc_channel_create(opt->target, creds, &cargs);
  grpc_channel_credentials_release(creds);
  c->nchannels = nch;
  c->cq = grpc_completion_queue_create_for_next(NULL);
  *out = c;
  return 0;
}

size_t ps_client_room(const ps_client *c) {
  return c->window - c->in_flight;
}

size_t ps_client_in_flight(const ps_client *c) {
  return c->in_flight;
}

const ps_client_stats *ps_client_stats_get(const ps_client *c) {
  return &c->st;
}

/* Releases what the core handed back with a finished (or never started) call. */
static void ps__slot_release(ps_client *c, ps__slot *s) {
  if (s->req)
    grpc_byte_buffer_destroy(s->req);
  if (s->resp)
    grpc_byte_buffer_destroy(s->resp);
  grpc_metadata_array_destroy(&s->initial_md);
  grpc_metadata_array_destroy(&s->trailing_md);
  grpc_slice_unref(s->details);
  if (s->call)
    grpc_call_unref(s->call);
  s->req = s->resp = NULL;
  s->call = NULL;
  s->next_free = c->free_slots;
  c->free_slots = s;
}

int ps_client_start(ps_client *c, const void *data, size_t len, uint32_t events, void *user) {
  return ps_client_start_at(c, data, len, events, user, 0);
}

int ps_client_connected(ps_client *c) {
  for (int i = 0; i < c->nchannels; i++)
    if (grpc_channel_check_connectivity_state(c->channels[i], 0) == GRPC_CHANNEL_READY)
      return 1;
  return 0;
}

int ps_client_start_at(ps_client *c, const void *data, size_t len, uint32_t events, void *user,
                       int64_t start_ns) {
  ps__slot *s = c->free_slots;
  if (!s)
    return PS_EFULL;
  c->free_slots = s->next_free;
  s->next_free = NULL;
  s->events = events;
  s->user = user;
  s->code = GRPC_STATUS_UNKNOWN;
  s->details = grpc_empty_slice();
  s->resp = NULL;
  grpc_metadata_array_init(&s->initial_md);
  grpc_metadata_array_init(&s->trailing_md);
  gpr_timespec deadline = c->timeout_ms > 0 ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                                           gpr_time_from_millis(c->timeout_ms, GPR_TIMESPAN))
                                            : gpr_inf_future(GPR_CLOCK_MONOTONIC);
  grpc_channel *ch = c->channels[c->next_channel];
  c->next_channel = (c->next_channel + 1) % c->nchannels;
  s->call =
      grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, c->method, NULL, deadline, NULL);
  grpc_slice body = grpc_slice_from_static_buffer(data, len);
  s->req = grpc_raw_byte_buffer_create(&body, 1);

  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = s->req;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &s->resp;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &s->trailing_md;
  ops[5].data.recv_status_on_client.status = &s->code;
  ops[5].data.recv_status_on_client.status_details = &s->details;
  s->start_ns = start_ns > 0 ? start_ns : ps_now_ns();
  if (grpc_call_start_batch(s->call, ops, 6, s, NULL) != GRPC_CALL_OK) {
    ps__slot_release(c, s);
    return PS_EINTERNAL;
  }
  c->in_flight++;
  if (!c->st.first_start_ns)
    c->st.first_start_ns = s->start_ns;
  c->st.calls_started++;
  c->st.events_started += events;
  return 0;
}

/* Accounts a finished call, releases its slot and reports it. */
static void ps__finish(ps_client *c, ps__slot *s, int batch_ok) {
  int64_t now = ps_now_ns();
  ps_client_result r;
  memset(&r, 0, sizeof r);
  r.user = s->user;
  r.events = s->events;
  r.latency_ns = now - s->start_ns;
  r.code = (int)s->code;
  if (!batch_ok && r.code == GRPC_STATUS_OK)
    r.code = GRPC_STATUS_UNKNOWN; /* the batch failed as a whole: its status cannot be trusted */
  char *details = NULL;
  Event__Response *resp = NULL;
  if (r.code == GRPC_STATUS_OK) {
    r.details = "";
    if (s->resp) {
      grpc_byte_buffer_reader rd;
      if (grpc_byte_buffer_reader_init(&rd, s->resp)) {
        grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        resp = event__response__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
        grpc_slice_unref(all);
      }
    }
    if (resp) {
      r.response_status = resp->status;
      r.response_message = resp->message;
      r.outcome = strcmp(resp->status, "SUCCESS") == 0 ? 0 : PS_CLIENT_NOT_SUCCESS;
    } else {
      r.details = s->resp ? "the Response does not decode" : "no Response message";
      r.outcome = PS_CLIENT_NOT_SUCCESS;
    }
  } else {
    details = grpc_slice_to_c_string(s->details);
    r.details = details;
    r.outcome = r.code > 0 && r.code < PS_CLIENT_NCODES ? r.code : GRPC_STATUS_UNKNOWN;
  }
  ps__slot_release(c, s);
  c->in_flight--;

  ps_client_stats *st = &c->st;
  st->calls_done++;
  st->events_done += r.events;
  st->calls[r.outcome]++;
  st->events[r.outcome] += r.events;
  st->last_done_ns = now;
  ps_client_latency_add(&st->latency, r.latency_ns);
  if (c->done)
    c->done(c->ctx, &r);
  if (resp)
    event__response__free_unpacked(resp, NULL);
  gpr_free(details);
}

int ps_client_poll(ps_client *c, int64_t timeout_ns) {
  int n = 0;
  gpr_timespec deadline;
  if (timeout_ns < 0)
    deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
  else if (timeout_ns == 0)
    deadline = gpr_inf_past(GPR_CLOCK_MONOTONIC);
  else
    deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos(timeout_ns, GPR_TIMESPAN));
  while (c->in_flight > 0) {
    grpc_event ev = grpc_completion_queue_next(c->cq, deadline, NULL);
    if (ev.type != GRPC_OP_COMPLETE)
      break; /* timeout (the queue is shut down only in destroy) */
    ps__finish(c, ev.tag, ev.success);
    n++;
    deadline = gpr_inf_past(GPR_CLOCK_MONOTONIC);
  }
  return n;
}

void ps_client_destroy(ps_client *c) {
  if (!c)
    return;
  if (c->in_flight) {
    for (size_t i = 0; i < c->window; i++)
      if (c->slots[i].call)
        grpc_call_cancel(c->slots[i].call, NULL);
    while (c->in_flight)
      ps_client_poll(c, -1);
  }
  for (int i = 0; i < c->nchannels; i++)
    grpc_channel_destroy(c->channels[i]);
  grpc_completion_queue_shutdown(c->cq);
  while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(c->cq);
  grpc_slice_unref(c->method);
  free(c->channels);
  free(c->slots);
  free(c);
  grpc_shutdown();
}
