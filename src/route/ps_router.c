/*
 * ps_router: publishing workers (see ps_router.h).
 *
 * DESIGN: `workers` threads, each with its own broker connection and its own
 * scratch buffers, so the publish path shares nothing but the queue and the
 * metrics counters. A worker pops up to 16 batches at a time. Groups are
 * encoded without copying events: a stack `Events` whose event array points
 * at the group's events in the batch. Stopping: the caller closes the queue;
 * workers drain it and exit; past the give-up deadline a worker that cannot
 * reach the broker drops what it holds and says so in the log.
 */
#include "route/ps_router.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/ps_events.h"
#include "codec/ps_pbjson.h"
#include "consume/ps_deadletter.h"
#include "core/ps_backoff.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"

#define PS__POP_MAX 16

typedef struct ps__worker {
  ps_router *r;
  int id;
  pthread_t thread;
  ps_broker_conn *conn;
  ps_buf body;
  uint64_t seq;
  int gave_up;
  int connected_before;
} ps__worker;

struct ps_router {
  ps_router_options opt;
  ps_queue *q;
  ps_broker *broker;
  ps__worker *workers;
  uint64_t instance; /* distinguishes this process's message ids */
  _Atomic int64_t give_up_ns; /* INT64_MAX until stop sets the shutdown deadline */
};

static int ps__past_give_up(ps_router *r) { return ps_now_ns() >= atomic_load(&r->give_up_ns); }

/* Publishes one message, reconnecting as needed. Returns 0, or PS_ETIMEDOUT when giving up. */
static int ps__publish(ps__worker *w, const ps_message *m) {
  ps_router *r = w->r;
  for (int attempt = 0;; attempt++) {
    if (!w->conn) {
      int rc = ps_broker_connect(r->broker, &w->conn);
      if (rc != 0) {
        w->conn = NULL;
        static ps_log_ratelimit rl;
        long long sup;
        if (ps_log_ratelimit_ok(&rl, 5000, &sup)) {
          char n[32];
          snprintf(n, sizeof n, "%lld", sup);
          ps_warn("router: cannot connect to the broker; retrying", "broker", r->broker->display,
                  "suppressed", n);
        }
      } else {
        PS_COUNT(broker_connections_publisher, 1);
        if (w->connected_before) {
          PS_COUNT(broker_reconnects_publisher, 1);
          ps_info("router: reconnected to the broker", "broker", r->broker->display);
        }
        w->connected_before = 1;
      }
    }
    if (w->conn) {
      if (ps_broker_publish(w->conn, m) == 0)
        return 0;
      PS_COUNT(publish_errors_total, 1);
      PS_COUNT(broker_connections_publisher, -1);
      ps_broker_close(w->conn);
      w->conn = NULL;
    }
    if (ps__past_give_up(r))
      return PS_ETIMEDOUT;
    ps_backoff_sleep(attempt, 100, 5000, &r->give_up_ns, NULL);
  }
}

/* Dead-letters the events of b that have no type, as one binary Events message. */
static void ps__dead_letter_skipped(ps__worker *w, ps_batch *b, Event__Event **scratch) {
  ps_router *r = w->r;
  size_t n = 0;
  const char *reason = NULL;
  for (size_t i = 0; i < b->msg->n_events; i++)
    if (!ps_event_type_name(b->msg->events[i])) {
      scratch[n++] = b->msg->events[i];
      const char *why = ps_event_skip_reason(b->msg->events[i]);
      reason = !reason || strcmp(reason, why) == 0 ? why : "no payload or unknown event type";
    }
  Event__Events part = *b->msg;
  part.n_events = n;
  part.events = scratch;
  ps_buf_reset(&w->body);
  size_t len = event__events__get_packed_size(&part);
  ps_buf_reserve(&w->body, len);
  event__events__pack(&part, (uint8_t *)w->body.data);
  char why[128];
  snprintf(why, sizeof why, "skipped at dispatch: %s", reason);
  ps_dead_letter dl = {r->opt.dead_letter_exchange, r->opt.skipped_key, why, "", "dispatch", "", NULL,
                       "application/x-protobuf", w->body.data, len};
  ps_dead_letter_headers h;
  ps_message m;
  ps_dead_letter_message(&dl, &h, &m);
  if (ps__publish(w, &m) != 0) {
    PS_COUNT(publish_given_up_events_total, n);
    ps_error("router: skipped events not dead-lettered: shutdown deadline passed with the broker unreachable");
  }
}

static void ps__publish_batch(ps__worker *w, ps_batch *b, Event__Event **scratch, ps_event_group *groups) {
  ps_router *r = w->r;
  if (b->n_skipped && r->opt.dead_letter_exchange)
    ps__dead_letter_skipped(w, b, scratch);
  size_t ng = ps_events_group(b->msg, groups, scratch);
  for (size_t g = 0; g < ng; g++) {
    if (w->gave_up) {
      PS_COUNT(publish_given_up_events_total, groups[g].n);
      ps_error("router: event not delivered: shutdown deadline passed with the broker unreachable",
               "event_type", groups[g].type_name, "session_id", b->msg->header->sessionid);
      continue;
    }
    Event__Events part = *b->msg;
    part.n_events = groups[g].n;
    part.events = groups[g].events;
    ps_buf_reset(&w->body);
    if (ps_pbjson_encode(&w->body, &part.base) != 0) {
      /* Cannot happen: dispatch checked UTF-8 before accepting the batch. */
      ps_error("router: cannot encode a group; dropped", "event_type", groups[g].type_name);
      continue;
    }
    char id[64];
    snprintf(id, sizeof id, "%016" PRIx64 "-%d-%" PRIu64, r->instance, w->id, ++w->seq);
    ps_message m = {
        .exchange = r->opt.exchange,
        .routing_key = groups[g].type_name,
        .content_type = "application/json",
        .message_id = id,
        .timestamp = b->received_unix,
        .persistent = 1,
        .body = w->body.data,
        .len = w->body.len,
    };
    if (ps__publish(w, &m) != 0) {
      w->gave_up = 1;
      PS_COUNT(publish_given_up_events_total, groups[g].n);
      char n[32];
      snprintf(n, sizeof n, "%zu", groups[g].n);
      ps_error("router: events not delivered: shutdown deadline passed with the broker unreachable",
               "events", n, "event_type", groups[g].type_name);
      continue;
    }
    PS_COUNT(messages_published_total, 1);
    PS_COUNT(events_published_total, groups[g].n);
  }
}

static void *ps__worker_main(void *arg) {
  ps__worker *w = arg;
  char name[16];
  snprintf(name, sizeof name, "ps-worker-%d", w->id);
  pthread_setname_np(pthread_self(), name);
  size_t cap = 0;
  Event__Event **scratch = NULL;
  size_t ntypes = ps_event_type_count();
  ps_event_group *groups = calloc(ntypes ? ntypes : 1, sizeof *groups);
  void *items[PS__POP_MAX];
  for (;;) {
    int n = ps_queue_pop(w->r->q, items, PS__POP_MAX, -1);
    if (n == PS_ECLOSED)
      break;
    for (int i = 0; i < n; i++) {
      ps_batch *b = items[i];
      if (b->msg->n_events > cap) {
        cap = b->msg->n_events * 2;
        free(scratch);
        scratch = malloc(cap * sizeof *scratch);
        if (!scratch)
          abort();
      }
      ps__publish_batch(w, b, scratch, groups);
      ps_batch_destroy(b);
    }
  }
  free(scratch);
  free(groups);
  if (w->conn)
    PS_COUNT(broker_connections_publisher, -1);
  ps_broker_close(w->conn);
  w->conn = NULL;
  ps_buf_free(&w->body);
  return NULL;
}

ps_router *ps_router_start(const ps_router_options *opt, ps_queue *q, ps_broker *broker) {
  ps_router *r = calloc(1, sizeof *r);
  if (!r)
    abort();
  r->opt = *opt;
  r->q = q;
  r->broker = broker;
  atomic_store(&r->give_up_ns, INT64_MAX);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  r->instance = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);
  r->workers = calloc((size_t)opt->workers, sizeof *r->workers);
  for (int i = 0; i < opt->workers; i++) {
    r->workers[i].r = r;
    r->workers[i].id = i;
    if (pthread_create(&r->workers[i].thread, NULL, ps__worker_main, &r->workers[i]) != 0)
      abort();
  }
  return r;
}

int ps_router_stop(ps_router *r, int64_t deadline_ns) {
  atomic_store(&r->give_up_ns, deadline_ns);
  int rc = 0;
  for (int i = 0; i < r->opt.workers; i++) {
    pthread_join(r->workers[i].thread, NULL);
    if (r->workers[i].gave_up)
      rc = PS_ETIMEDOUT;
  }
  free(r->workers);
  free(r);
  return rc;
}
