/*
 * ps_grpc_server: gRPC C core plumbing (see ps_grpc_server.h).
 *
 * DESIGN: one completion queue shared by `threads` threads (a queue per thread
 * would pin each connection's calls to one thread: head-of-line blocking).
 * For each method a fixed number of call requests is kept posted; each new
 * call re-posts one before it is handled. A call's life: requested -> arrives
 * (tag NEW) -> handled -> one reply batch (initial metadata, message, status,
 * close) -> tag DONE -> freed. Dispatch replies may be sent from ps_dispatch's
 * waiter thread; the core allows a batch to be started from any thread.
 * `live` counts calls between arrival and DONE, so shutdown can wait for them
 * before tearing the queue down (the core aborts on a batch started after the
 * queue shut down).
 */
#include "ingest/ps_grpc_server.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/impl/codegen/grpc_types.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ps_error.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"
#include "queue/ps_queue.h"
#include "eventservice.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

enum { PS__M_DISPATCH, PS__M_HEALTH, PS__M_OTHER, PS__M_COUNT };
static const int ps__posted_per_method[PS__M_COUNT] = {256, 8, 4};

enum { PS__TAG_NEW, PS__TAG_DONE };

typedef struct ps__call ps__call;
typedef struct {
  ps__call *call;
  int kind;
} ps__tag;

struct ps__call {
  ps__tag tag_new, tag_done;
  ps_grpc_server *srv;
  int method;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_call_details details; /* PS__M_OTHER only */
  grpc_byte_buffer *payload;
  grpc_byte_buffer *reply;
  grpc_slice status_details;
  int cancelled;
  int64_t started_ns;  /* arrival, for latency and the access log */
  int status;          /* what the reply said */
  uint32_t events;     /* in a dispatch request */
};

static const char *const ps__method_names[PS__M_COUNT] = {"dispatch", "health", "unknown"};

struct ps_grpc_server {
  grpc_server *server;
  grpc_completion_queue *cq;
  grpc_completion_queue *shutdown_cq;
  void *registered[PS__M_COUNT];
  pthread_t *threads;
  int nthreads;
  int port;
  ps_dispatch *dispatch;
  _Atomic int serving;
  _Atomic int stopping;
  _Atomic long live;
  int access_log_per_sec;
  /* Per method and status: created on first use, then read without a lock. */
  _Atomic(ps_counter *) m_rpcs[PS__M_COUNT][17];
  _Atomic(ps_histogram *) m_latency[PS__M_COUNT][17];
  /* Access-log sampling: lines written in the current second, and those suppressed. */
  _Atomic int64_t log_window;
  _Atomic int log_in_window;
  _Atomic int64_t log_suppressed;
};

static const char *ps__code_name(int code) {
  static const char *const names[17] = {
      "OK",           "CANCELLED",       "UNKNOWN",   "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
      "OUT_OF_RANGE", "UNIMPLEMENTED",   "INTERNAL",  "UNAVAILABLE",      "DATA_LOSS",         "UNAUTHENTICATED"};
  return code >= 0 && code < 17 ? names[code] : "UNKNOWN";
}

/* Counts the finished call and writes its access-log line, if the sampling allows. */
static void ps__account(ps_grpc_server *s, ps__call *c) {
  int code = c->status >= 0 && c->status < 17 ? c->status : 2;
  int64_t now = ps_now_ns();
  double secs = (double)(now - c->started_ns) / 1e9;
  ps_counter *ctr = atomic_load_explicit(&s->m_rpcs[c->method][code], memory_order_acquire);
  ps_histogram *h = atomic_load_explicit(&s->m_latency[c->method][code], memory_order_acquire);
  if (!ctr || !h) {
    char labels[96];
    snprintf(labels, sizeof labels, "method=\"%s\",code=\"%s\"", ps__method_names[c->method], ps__code_name(code));
    ctr = ps_metrics_counter("penstock_rpcs_total", labels, "gRPC calls answered, by method and status", 0);
    h = ps_metrics_histogram("penstock_rpc_duration_seconds", labels,
                             "time from a call's arrival to its answer, by method and status",
                             ps_metrics_latency_bounds, ps_metrics_latency_nbounds);
    atomic_store_explicit(&s->m_rpcs[c->method][code], ctr, memory_order_release);
    atomic_store_explicit(&s->m_latency[c->method][code], h, memory_order_release);
  }
  ps_counter_add(ctr, 1);
  ps_histogram_observe(h, secs);

  if (s->access_log_per_sec <= 0 || !ps_log_enabled(PS_LOG_INFO))
    return;
  int64_t window = now / 1000000000;
  int64_t cur = atomic_load(&s->log_window);
  if (cur != window && atomic_compare_exchange_strong(&s->log_window, &cur, window))
    atomic_store(&s->log_in_window, 0);
  if (atomic_fetch_add(&s->log_in_window, 1) >= s->access_log_per_sec) {
    atomic_fetch_add(&s->log_suppressed, 1);
    PS_COUNT(log_suppressed_total, 1);
    return;
  }
  char *peer = grpc_call_get_peer(c->call);
  char ms[32], events[16], suppressed[24];
  snprintf(ms, sizeof ms, "%.3f", secs * 1000);
  snprintf(events, sizeof events, "%u", c->events);
  snprintf(suppressed, sizeof suppressed, "%lld", (long long)atomic_exchange(&s->log_suppressed, 0));
  if (c->method == PS__M_DISPATCH)
    ps_info("rpc", "method", ps__method_names[c->method], "code", ps__code_name(code), "duration_ms", ms, "events",
            events, "peer", peer ? peer : "", "suppressed", suppressed);
  else
    ps_info("rpc", "method", ps__method_names[c->method], "code", ps__code_name(code), "duration_ms", ms, "peer",
            peer ? peer : "", "suppressed", suppressed);
  gpr_free(peer);
}

static void ps__request(ps_grpc_server *s, int method);

static ps__call *ps__call_new(ps_grpc_server *s, int method) {
  ps__call *c = calloc(1, sizeof *c);
  if (!c)
    abort();
  c->srv = s;
  c->method = method;
  c->tag_new = (ps__tag){c, PS__TAG_NEW};
  c->tag_done = (ps__tag){c, PS__TAG_DONE};
  grpc_metadata_array_init(&c->md);
  if (method == PS__M_OTHER)
    grpc_call_details_init(&c->details);
  c->status_details = grpc_empty_slice();
  return c;
}

static void ps__call_free(ps__call *c) {
  if (c->call)
    grpc_call_unref(c->call);
  grpc_metadata_array_destroy(&c->md);
  if (c->method == PS__M_OTHER)
    grpc_call_details_destroy(&c->details);
  if (c->payload)
    grpc_byte_buffer_destroy(c->payload);
  if (c->reply)
    grpc_byte_buffer_destroy(c->reply);
  grpc_slice_unref(c->status_details);
  free(c);
}

static void ps__request(ps_grpc_server *s, int method) {
  if (atomic_load(&s->stopping))
    return;
  ps__call *c = ps__call_new(s, method);
  grpc_call_error e;
  if (method == PS__M_OTHER) {
    e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq, &c->tag_new);
  } else {
    e = grpc_server_request_registered_call(s->server, s->registered[method], &c->call, &c->deadline,
                                            &c->md, &c->payload, s->cq, s->cq, &c->tag_new);
  }
  if (e != GRPC_CALL_OK) {
    ps_error("grpc: cannot request a call", "error", grpc_call_error_to_string(e));
    ps__call_free(c);
  }
}

/* Sends the one reply batch of a call: status, and a message if body_len >= 0. */
static void ps__reply(ps__call *c, grpc_status_code status, const char *details,
                      const ProtobufCMessage *body) {
  grpc_op ops[4];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (body) {
    size_t len = protobuf_c_message_get_packed_size(body);
    grpc_slice sl = grpc_slice_malloc(len);
    protobuf_c_message_pack(body, GRPC_SLICE_START_PTR(sl));
    c->reply = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->reply;
  }
  c->status = (int)status;
  grpc_slice_unref(c->status_details);
  c->status_details = grpc_slice_from_copied_string(details ? details : "");
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = status;
  ops[n++].data.send_status_from_server.status_details = status == GRPC_STATUS_OK ? NULL : &c->status_details;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->tag_done, NULL);
  if (e != GRPC_CALL_OK) {
    ps_error("grpc: cannot send reply", "error", grpc_call_error_to_string(e));
    atomic_fetch_sub(&c->srv->live, 1);
    ps__call_free(c);
  }
}

static void ps__dispatch_done(void *ctx, int status, const char *message, uint32_t events) {
  ps__call *c = ctx;
  c->events = events;
  if (status == GRPC_STATUS_OK) {
    Event__Response r = EVENT__RESPONSE__INIT;
    r.status = "SUCCESS";
    r.message = (char *)message;
    ps__reply(c, GRPC_STATUS_OK, NULL, &r.base);
  } else {
    ps__reply(c, (grpc_status_code)status, message, NULL);
  }
}

/* Reads a request payload into one contiguous slice. */
static grpc_slice ps__payload_slice(grpc_byte_buffer *bb) {
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb))
    return grpc_empty_slice();
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  return s;
}

static int64_t ps__deadline_ns(gpr_timespec d) {
  if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0)
    return INT64_MAX;
  gpr_timespec left = gpr_time_sub(d, gpr_now(d.clock_type));
  int64_t ns = (int64_t)left.tv_sec * 1000000000 + left.tv_nsec;
  return ps_now_ns() + ns;
}

static void ps__handle_dispatch(ps__call *c) {
  if (!c->payload) {
    ps__reply(c, GRPC_STATUS_INVALID_ARGUMENT, "request has no message", NULL);
    return;
  }
  grpc_slice s = ps__payload_slice(c->payload);
  grpc_byte_buffer_destroy(c->payload);
  c->payload = NULL;
  ps_dispatch_submit(c->srv->dispatch, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s),
                     ps__deadline_ns(c->deadline), ps__dispatch_done, c);
  grpc_slice_unref(s);
}

static void ps__handle_health(ps__call *c) {
  Grpc__Health__V1__HealthCheckRequest *req = NULL;
  if (c->payload) {
    grpc_slice s = ps__payload_slice(c->payload);
    req = grpc__health__v1__health_check_request__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
  }
  if (!req) {
    ps__reply(c, GRPC_STATUS_INVALID_ARGUMENT, "request is not a valid grpc.health.v1.HealthCheckRequest", NULL);
    return;
  }
  int known = req->service[0] == '\0' || strcmp(req->service, "event.EventService") == 0;
  grpc__health__v1__health_check_request__free_unpacked(req, NULL);
  if (!known) {
    ps__reply(c, GRPC_STATUS_NOT_FOUND, "unknown service", NULL);
    return;
  }
  Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  r.status = atomic_load(&c->srv->serving) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                            : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  ps__reply(c, GRPC_STATUS_OK, NULL, &r.base);
}

static void ps__handle_new(ps__call *c) {
  ps_grpc_server *s = c->srv;
  c->started_ns = ps_now_ns();
  atomic_fetch_add(&s->live, 1);
  ps__request(s, c->method);
  switch (c->method) {
  case PS__M_DISPATCH:
    ps__handle_dispatch(c);
    break;
  case PS__M_HEALTH:
    ps__handle_health(c);
    break;
  default:
    ps__reply(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method", NULL);
    break;
  }
}

typedef struct {
  ps_grpc_server *s;
  int id;
} ps__thread_arg;

static void *ps__cq_main(void *arg) {
  ps__thread_arg *ta = arg;
  ps_grpc_server *s = ta->s;
  char name[16];
  snprintf(name, sizeof name, "ps-grpc-%d", ta->id);
  pthread_setname_np(pthread_self(), name);
  free(ta);
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type != GRPC_OP_COMPLETE)
      continue;
    ps__tag *t = ev.tag;
    ps__call *c = t->call;
    if (t->kind == PS__TAG_NEW) {
      if (!ev.success) { /* server shutting down: the request is cancelled */
        ps__call_free(c);
        continue;
      }
      ps__handle_new(c);
    } else {
      ps__account(s, c);
      ps__call_free(c);
      atomic_fetch_sub(&s->live, 1);
    }
  }
  return NULL;
}

int ps_grpc_server_start(const ps_grpc_server_options *opt, ps_dispatch *dispatch,
                         ps_grpc_server **out) {
  ps_grpc_server *s = calloc(1, sizeof *s);
  if (!s)
    abort();
  s->dispatch = dispatch;
  grpc_arg args[3];
  args[0].type = GRPC_ARG_INTEGER;
  args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[0].value.integer = (int)(opt->max_recv_bytes > INT32_MAX ? INT32_MAX : opt->max_recv_bytes);
  /* The core turns SO_REUSEPORT on by default: a stale server would then
     silently share the port and half the load. */
  args[1].type = GRPC_ARG_INTEGER;
  args[1].key = GRPC_ARG_ALLOW_REUSEPORT;
  args[1].value.integer = 0;
  args[2].type = GRPC_ARG_INTEGER;
  args[2].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
  args[2].value.integer = 256;
  grpc_channel_args cargs = {3, args};

  grpc_init();
  s->server = grpc_server_create(&cargs, NULL);
  s->cq = grpc_completion_queue_create_for_next(NULL);
  s->shutdown_cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_server_register_completion_queue(s->server, s->cq, NULL);
  s->registered[PS__M_DISPATCH] = grpc_server_register_method(
      s->server, "/event.EventService/dispatch", NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
  s->registered[PS__M_HEALTH] = grpc_server_register_method(
      s->server, "/grpc.health.v1.Health/Check", NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);

  char addr[300];
  snprintf(addr, sizeof addr, "%s:%d", opt->host ? opt->host : "0.0.0.0", opt->port);
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  s->port = grpc_server_add_http2_port(s->server, addr, creds);
  grpc_server_credentials_release(creds);
  if (s->port == 0) {
    ps_error("grpc: cannot listen", "address", addr);
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
      ;
    grpc_completion_queue_destroy(s->cq);
    grpc_completion_queue_destroy(s->shutdown_cq);
    free(s);
    grpc_shutdown();
    return PS_EIO;
  }
  grpc_server_start(s->server);
  for (int m = 0; m < PS__M_COUNT; m++)
    for (int i = 0; i < ps__posted_per_method[m]; i++)
      ps__request(s, m);
  s->nthreads = opt->threads > 0 ? opt->threads : 1;
  s->threads = calloc((size_t)s->nthreads, sizeof *s->threads);
  s->access_log_per_sec = opt->access_log_per_sec;
  for (int i = 0; i < s->nthreads; i++) {
    ps__thread_arg *ta = malloc(sizeof *ta);
    if (!ta)
      abort();
    *ta = (ps__thread_arg){s, i};
    if (pthread_create(&s->threads[i], NULL, ps__cq_main, ta) != 0)
      abort();
  }
  *out = s;
  return 0;
}

void ps_grpc_server_set_serving(ps_grpc_server *s, int serving) { atomic_store(&s->serving, serving); }

int ps_grpc_server_port(const ps_grpc_server *s) { return s->port; }

long ps_grpc_server_live_calls(ps_grpc_server *s) { return atomic_load(&s->live); }

int ps_grpc_server_shutdown(ps_grpc_server *s, int64_t deadline_ns) {
  int rc = 0;
  atomic_store(&s->serving, 0);
  atomic_store(&s->stopping, 1);
  int tag;
  grpc_server_shutdown_and_notify(s->server, s->shutdown_cq, &tag);
  for (;;) {
    int64_t left = deadline_ns - ps_now_ns();
    if (left < 0)
      left = 0;
    grpc_event ev = grpc_completion_queue_pluck(
        s->shutdown_cq, &tag, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos(left, GPR_TIMESPAN)),
        NULL);
    if (ev.type == GRPC_OP_COMPLETE)
      break;
    ps_warn("grpc: calls still in flight at the shutdown deadline; cancelling them");
    grpc_server_cancel_all_calls(s->server);
    rc = PS_ETIMEDOUT;
    deadline_ns = ps_now_ns() + 5000000000LL;
  }
  /* Calls whose reply is still to come (parked in dispatch) end within their timeout. */
  while (atomic_load(&s->live) > 0)
    usleep(1000);
  grpc_server_destroy(s->server);
  grpc_completion_queue_shutdown(s->cq);
  for (int i = 0; i < s->nthreads; i++)
    pthread_join(s->threads[i], NULL);
  grpc_completion_queue_destroy(s->cq);
  grpc_completion_queue_shutdown(s->shutdown_cq);
  grpc_completion_queue_destroy(s->shutdown_cq);
  free(s->threads);
  free(s);
  grpc_shutdown();
  return rc;
}
