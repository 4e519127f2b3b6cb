/*
 * ps_dispatch: decode, validate, enqueue (see ps_dispatch.h).
 *
 * DESIGN: submit runs on a gRPC completion-queue thread and must not block it,
 * or every other call of that thread (health checks included) would wait. It
 * tries the queue without waiting; if the queue is full, or other calls are
 * already parked (to keep arrival order), the call goes to the parked list. One
 * waiter thread owns that list: it pushes the oldest parked batch with a
 * deadline of min(parked_at + DISPATCH_TIMEOUT_MS, call deadline) and answers
 * the call. Parked calls are bounded by the transport's own limit on calls in
 * flight; each holds only its decoded batch.
 */
#include "ingest/ps_dispatch.h"

#include <grpc/status.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/ps_events.h"
#include "codec/ps_pbjson.h"
#include "core/ps_error.h"
#include "core/ps_failpoint.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"

typedef struct ps__parked {
  struct ps__parked *next;
  ps_batch *batch;
  uint32_t n_events;       /* of the batch, readable after it was queued */
  int64_t deadline_ns;     /* min(parked + timeout, call deadline) */
  int deadline_is_call;    /* the call's own deadline is the earlier one */
  ps_dispatch_done_fn done;
  void *ctx;
  char reply[160];
} ps__parked;

struct ps_dispatch {
  ps_queue *q;
  int confirmed; /* ACK_MODE=confirmed: answer when the router settles the batch */
  int keep_wire; /* copy each request into its batch's arena (ps_batch.wire) */
  int (*overflow)(void *ctx, ps_batch *b); /* takes a batch the full queue would refuse (the spool) */
  void *overflow_ctx;
  int64_t timeout_ns;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  ps__parked *head, *tail;
  size_t nparked;
  int stopping;
  pthread_t waiter;
};

static void ps__reply_success(const ps_batch *b, size_t unknown, char *out, size_t outlen) {
  if (!b->n_skipped)
    snprintf(out, outlen, "%u events accepted", (unsigned)b->n_events);
  else
    snprintf(out, outlen, "%u events accepted; %u skipped (%zu with no payload, %zu of an unknown event type)",
             (unsigned)b->n_events, (unsigned)b->n_skipped, (size_t)b->n_skipped - unknown, unknown);
}

/* Answers an accepted batch. The batch itself is the workers' now (it may
   already be freed), so the caller passes its event count. */
static void ps__accepted(uint32_t n_events, ps_dispatch_done_fn done, void *ctx, const char *reply) {
  PS_COUNT(events_accepted_total, n_events);
  PS_COUNT(batches_accepted_total, 1);
  done(ctx, GRPC_STATUS_OK, reply, n_events);
}

/* ACK_MODE=confirmed: who to answer once the router settled the batch (in the batch's arena). */
typedef struct ps__waiting {
  ps_dispatch_done_fn done;
  void *ctx;
  uint32_t n_events;
  char reply[160];
} ps__waiting;

static void ps__settled(ps_batch *b, int rc) {
  ps__waiting *w = b->settled_ctx;
  if (rc == 0) {
    ps__accepted(w->n_events, w->done, w->ctx, w->reply);
    return;
  }
  PS_COUNT(batches_rejected_unstored, 1);
  PS_COUNT(events_rejected_unstored, w->n_events);
  char m[200];
  snprintf(m, sizeof m, "not stored: the broker is unreachable and %s; retry later",
           rc == PS_EFULL ? "the spool is full" : rc == PS_ETIMEDOUT ? "penstock is shutting down" : "the spool failed");
  w->done(w->ctx, GRPC_STATUS_UNAVAILABLE, m, w->n_events);
}

/* Makes the batch answer its caller when settled (ACK_MODE=confirmed); returns 1 if it does. */
static int ps__wait_settled(ps_dispatch *d, ps_batch *b, ps_dispatch_done_fn done, void *ctx, const char *reply) {
  if (!d->confirmed)
    return 0;
  ps__waiting *w = ps_arena_alloc(b->arena, sizeof *w);
  w->done = done;
  w->ctx = ctx;
  w->n_events = b->n_events + b->n_skipped;
  snprintf(w->reply, sizeof w->reply, "%s", reply);
  b->settled = ps__settled;
  b->settled_ctx = w;
  return 1;
}

static void ps__reject(ps_dispatch *d, ps__parked *p, int rc) {
  if (rc == PS_ETIMEDOUT && !p->deadline_is_call && d->overflow && d->overflow(d->overflow_ctx, p->batch) == 0) {
    /* The queue stayed full for DISPATCH_TIMEOUT_MS: the batch is in the spool instead (on disk). */
    ps_batch_destroy(p->batch);
    ps__accepted(p->n_events, p->done, p->ctx, p->reply);
    free(p);
    return;
  }
  ps_batch_destroy(p->batch);
  if (rc == PS_ETIMEDOUT && p->deadline_is_call) {
    PS_COUNT(batches_rejected_deadline, 1);
    PS_COUNT(events_rejected_deadline, p->n_events);
    p->done(p->ctx, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded while waiting for room in the queue",
            p->n_events);
  } else if (rc == PS_ECLOSED) {
    PS_COUNT(batches_rejected_shutdown, 1);
    PS_COUNT(events_rejected_shutdown, p->n_events);
    p->done(p->ctx, GRPC_STATUS_UNAVAILABLE, "shutting down", p->n_events);
  } else {
    PS_COUNT(batches_rejected_queue_full, 1);
    PS_COUNT(events_rejected_queue_full, p->n_events);
    p->done(p->ctx, GRPC_STATUS_UNAVAILABLE, "queue full", p->n_events);
  }
  free(p);
}

/*
 * Pushes the oldest parked batch, waiting no longer than the earliest deadline
 * of any parked call; whenever a wait ends without room, every call whose
 * deadline has passed is answered, so none is answered late because of the
 * calls ahead of it.
 */
static void *ps__waiter_main(void *arg) {
  ps_dispatch *d = arg;
  pthread_setname_np(pthread_self(), "ps-dispatch");
  pthread_mutex_lock(&d->mu);
  for (;;) {
    while (!d->head && !d->stopping)
      pthread_cond_wait(&d->cv, &d->mu);
    if (!d->head)
      break;
    ps__parked *p = d->head;
    int64_t until = p->deadline_ns;
    for (ps__parked *o = p->next; o; o = o->next)
      if (o->deadline_ns < until)
        until = o->deadline_ns;
    pthread_mutex_unlock(&d->mu);

    int rc = ps_now_ns() < p->deadline_ns ? ps_queue_push(d->q, p->batch, until) : PS_ETIMEDOUT;

    pthread_mutex_lock(&d->mu);
    ps__parked *expired = NULL, **link = &d->head;
    int64_t now = ps_now_ns();
    while (*link) {
      ps__parked *o = *link;
      int take = o == p ? 1 : (rc != 0 && o->deadline_ns <= now);
      if (o == p && rc != 0 && o->deadline_ns > now && rc != PS_ECLOSED)
        take = 0; /* woken early for another call's deadline: try again */
      if (take) {
        *link = o->next;
        d->nparked--;
        if (o != p) {
          o->next = expired;
          expired = o;
        }
      } else {
        link = &o->next;
      }
    }
    d->tail = NULL;
    for (ps__parked *o = d->head; o; o = o->next)
      d->tail = o;
    int p_done = rc == 0 || rc == PS_ECLOSED || p->deadline_ns <= now;
    pthread_mutex_unlock(&d->mu);

    if (p_done) {
      if (rc == 0) {
        if (!d->confirmed) /* else the router answers when it settles the batch */
          ps__accepted(p->n_events, p->done, p->ctx, p->reply);
        free(p);
      } else {
        ps__reject(d, p, rc);
      }
    }
    while (expired) {
      ps__parked *o = expired;
      expired = o->next;
      ps__reject(d, o, PS_ETIMEDOUT);
    }
    pthread_mutex_lock(&d->mu);
  }
  pthread_mutex_unlock(&d->mu);
  return NULL;
}

ps_dispatch *ps_dispatch_create(ps_queue *q, int timeout_ms, int confirmed) {
  ps_dispatch *d = calloc(1, sizeof *d);
  if (!d)
    abort();
  d->q = q;
  d->confirmed = confirmed;
  d->timeout_ns = (int64_t)timeout_ms * 1000000;
  pthread_mutex_init(&d->mu, NULL);
  pthread_cond_init(&d->cv, NULL);
  if (pthread_create(&d->waiter, NULL, ps__waiter_main, d) != 0)
    abort();
  return d;
}

void ps_dispatch_destroy(ps_dispatch *d) {
  if (!d)
    return;
  pthread_mutex_lock(&d->mu);
  d->stopping = 1;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
  pthread_join(d->waiter, NULL);
  pthread_mutex_destroy(&d->mu);
  pthread_cond_destroy(&d->cv);
  free(d);
}

void ps_dispatch_keep_wire(ps_dispatch *d, int on) { d->keep_wire = on; }

void ps_dispatch_set_overflow(ps_dispatch *d, int (*fn)(void *ctx, ps_batch *b), void *ctx) {
  pthread_mutex_lock(&d->mu);
  d->overflow = fn;
  d->overflow_ctx = ctx;
  pthread_mutex_unlock(&d->mu);
}

size_t ps_dispatch_parked(ps_dispatch *d) {
  pthread_mutex_lock(&d->mu);
  size_t n = d->nparked;
  pthread_mutex_unlock(&d->mu);
  return n;
}

/* Counts and logs the event at index i, which has no type; returns 1 if its type is unknown (vs no payload). */
static int ps__skip(const ps_batch *b, size_t i) {
  const Event__Event *ev = b->msg->events[i];
  const char *reason = ps_event_skip_reason(ev);
  int unknown = strcmp(reason, "unknown event type") == 0;
  if (unknown)
    PS_COUNT(events_skipped_unknown_type, 1);
  else
    PS_COUNT(events_skipped_no_payload, 1);
  ps_warn("event skipped: it has no type", "event_id", ev->id, "reason", reason, "session_id",
          b->msg->header->sessionid);
  return unknown;
}

void ps_dispatch_submit(ps_dispatch *d, const uint8_t *data, size_t len,
                        int64_t deadline_ns, ps_dispatch_done_fn done, void *ctx) {
  PS_COUNT(batches_received_total, 1);
  if (ps_failpoint("dispatch.internal")) {
    done(ctx, GRPC_STATUS_INTERNAL, "internal error (fail point dispatch.internal)", 0);
    return;
  }
  ps_arena *arena = ps_arena_create(ps_batch_arena_size(len, d->keep_wire));
  ProtobufCAllocator alloc = ps_arena_allocator(arena);
  Event__Events *msg = event__events__unpack(&alloc, len, data);
  char err[256];
  if (!msg) {
    ps_arena_destroy(arena);
    PS_COUNT(batches_rejected_invalid, 1);
    done(ctx, GRPC_STATUS_INVALID_ARGUMENT, "request is not a valid event.Events message (malformed or truncated protobuf)",
         0);
    return;
  }
  const uint32_t n_events = (uint32_t)msg->n_events;
  PS_COUNT(events_received_total, n_events);
  if (ps_pb_check_wire_strings(&event__events__descriptor, data, len, err, sizeof err) != 0) {
    char m[320];
    snprintf(m, sizeof m, "invalid string field %s", err);
    ps_arena_destroy(arena);
    PS_COUNT(batches_rejected_invalid, 1);
    PS_COUNT(events_rejected_invalid, n_events);
    done(ctx, GRPC_STATUS_INVALID_ARGUMENT, m, n_events);
    return;
  }
  if (!msg->header) {
    PS_COUNT(batches_rejected_invalid, 1);
    PS_COUNT(events_rejected_invalid, n_events);
    ps_arena_destroy(arena);
    done(ctx, GRPC_STATUS_INVALID_ARGUMENT, "request has no header", n_events);
    return;
  }
  if (msg->n_events == 0) {
    ps_arena_destroy(arena);
    PS_COUNT(batches_accepted_total, 1);
    done(ctx, GRPC_STATUS_OK, "no events", 0);
    return;
  }

  ps_batch *b = ps_arena_alloc(arena, sizeof *b);
  b->arena = arena;
  b->msg = msg;
  b->received_unix = (int64_t)time(NULL);
  b->n_events = b->n_skipped = 0;
  b->wire = NULL;
  b->wire_len = 0;
  if (d->keep_wire) {
    uint8_t *w = ps_arena_alloc(arena, len);
    memcpy(w, data, len);
    b->wire = w;
    b->wire_len = len;
  }
  b->settled = NULL;
  b->settled_ctx = NULL;
  b->pending = 0;
  b->failed = 0;
  size_t unknown = 0;
  for (size_t i = 0; i < msg->n_events; i++) {
    if (ps_event_type_name(msg->events[i])) {
      b->n_events++;
    } else {
      b->n_skipped++;
      unknown += (size_t)ps__skip(b, i);
    }
  }

  char reply[160];
  ps__reply_success(b, unknown, reply, sizeof reply);
  int settles = ps__wait_settled(d, b, done, ctx, reply);

  pthread_mutex_lock(&d->mu);
  int parked_before = d->head != NULL;
  pthread_mutex_unlock(&d->mu);
  if (!parked_before) {
    uint32_t n = b->n_events + b->n_skipped;
    int rc = ps_queue_push(d->q, b, 0);
    if (rc == 0) {
      if (!settles)
        ps__accepted(n, done, ctx, reply);
      return;
    }
    if (rc == PS_ECLOSED) {
      PS_COUNT(batches_rejected_shutdown, 1);
      PS_COUNT(events_rejected_shutdown, n);
      ps_batch_destroy(b);
      done(ctx, GRPC_STATUS_UNAVAILABLE, "shutting down", n);
      return;
    }
  }

  ps__parked *p = calloc(1, sizeof *p);
  if (!p)
    abort();
  int64_t mine = ps_now_ns() + d->timeout_ns;
  p->batch = b;
  p->n_events = b->n_events + b->n_skipped;
  p->deadline_is_call = deadline_ns < mine;
  p->deadline_ns = p->deadline_is_call ? deadline_ns : mine;
  p->done = done;
  p->ctx = ctx;
  memcpy(p->reply, reply, sizeof p->reply);
  pthread_mutex_lock(&d->mu);
  if (d->tail)
    d->tail->next = p;
  else
    d->head = p;
  d->tail = p;
  d->nparked++;
  pthread_cond_signal(&d->cv);
  pthread_mutex_unlock(&d->mu);
}
