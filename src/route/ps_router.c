/*
 * ps_router: publishing workers (see ps_router.h).
 *
 * DESIGN: `workers` threads, each with its own broker connection, its own
 * window of unconfirmed messages (ps_inflight) and its own scratch buffers,
 * so the publish path shares nothing but the queue, the spool and the
 * metrics. A worker pops up to 16 batches at a time, publishes their groups
 * (encoded without copying events: a stack `Events` whose event array points
 * at the group's events in the batch), and between pops reads the
 * confirmations that arrived ("pumping"). Each window entry refers to its
 * batch; a batch counts its unsettled messages and is settled, then freed,
 * when the count reaches zero.
 *
 * An entry is published on the current connection (seq > 0) or not (seq 0:
 * never sent, refused by a nack, or sent on a connection since lost). Pumping
 * connects when due (backoff with jitter), sends the seq-0 entries again in
 * order, or, while there is no connection, writes them to the spool in one
 * append (one fsync), and settles the oldest entries that are done.
 * Stopping: the caller closes the queue; workers drain it and their windows;
 * past the give-up deadline they drop the connection so that what is still
 * unconfirmed goes to the spool (with no spool, it is given up and logged).
 */
#include "route/ps_router.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
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
#include "route/ps_inflight.h"

#define PS__POP_MAX 16
#define PS__SPOOL_IOV 64

/* Window entry states beyond ps_inflight's own. */
enum { PS__SPOOLED = 10, PS__FAILED = 11 };

typedef struct ps__worker {
  ps_router *r;
  int id;
  pthread_t thread;
  ps_broker_conn *conn;
  uint64_t seq;             /* publishes on conn */
  int attempt;              /* failed connects in a row */
  int64_t next_connect_ns;
  int connected_before;
  ps_inflight fl;
  ps_buf body, rec;
  uint64_t msgno;           /* for message ids */
  int gave_up;
  size_t held;              /* entries neither sent nor spooled after the last pump */
  ps_confirm_handler handler;
} ps__worker;

struct ps_router {
  ps_router_options opt;
  ps_queue *q;
  ps_broker *broker;
  ps__worker *workers;
  uint64_t instance; /* distinguishes this process's message ids */
  uint64_t overflow_msgno; /* message ids of ps_router_spool_batch (the dispatch waiter's thread only) */
  _Atomic int64_t give_up_ns; /* INT64_MAX until stop sets the shutdown deadline */
};

static int ps__past_give_up(ps_router *r) { return ps_now_ns() >= atomic_load(&r->give_up_ns); }

static void ps__ratelimited_warn(ps_log_ratelimit *rl, const char *msg, const char *k, const char *v) {
  long long sup;
  if (ps_log_ratelimit_ok(rl, 5000, &sup)) {
    char n[32];
    snprintf(n, sizeof n, "%lld", sup);
    ps_warn(msg, k, v, "suppressed", n);
  }
}

/* One message of b is settled (rc 0: confirmed or spooled); the last one settles b and frees it. */
static void ps__settle(ps_batch *b, int rc) {
  if (rc && !b->failed)
    b->failed = rc;
  if (--b->pending)
    return;
  if (b->settled)
    b->settled(b, b->failed);
  ps_batch_destroy(b);
}

/* The connection is gone: what it published and the broker did not confirm is to be sent again. */
static void ps__lost(ps__worker *w) {
  PS_COUNT(publish_errors_total, 1);
  PS_COUNT(broker_connections_publisher, -1);
  ps_broker_close(w->conn);
  w->conn = NULL;
  for (size_t i = 0; i < ps_inflight_count(&w->fl); i++) {
    ps_inflight_entry *e = ps_inflight_at(&w->fl, i);
    if (e->state == PS_INFLIGHT_PENDING)
      e->seq = 0;
  }
  w->next_connect_ns = 0; /* one immediate attempt, then backoff */
}

static void ps__connect(ps__worker *w) {
  if (w->conn || ps_now_ns() < w->next_connect_ns)
    return;
  ps_router *r = w->r;
  int rc = ps_broker_connect(r->broker, &w->conn);
  if (rc == 0 && (rc = ps_broker_confirm_select(w->conn)) != 0)
    ps_broker_close(w->conn);
  if (rc != 0) {
    w->conn = NULL;
    w->next_connect_ns = ps_now_ns() + (int64_t)ps_backoff_ms(w->attempt++, 100, 5000) * 1000000;
    static ps_log_ratelimit rl;
    ps__ratelimited_warn(&rl, "router: cannot connect to the broker; retrying", "broker", r->broker->display);
    return;
  }
  w->attempt = 0;
  w->seq = 0;
  PS_COUNT(broker_connections_publisher, 1);
  if (w->connected_before) {
    PS_COUNT(broker_reconnects_publisher, 1);
    ps_info("router: reconnected to the broker", "broker", r->broker->display);
  }
  w->connected_before = 1;
}

static void ps__on_confirm(void *ctx, uint64_t seq, int multiple, int ack) {
  ps__worker *w = ctx;
  ps_inflight_confirm(&w->fl, seq, multiple, ack);
  if (ack)
    return;
  for (size_t i = 0; i < ps_inflight_count(&w->fl); i++) {
    ps_inflight_entry *e = ps_inflight_at(&w->fl, i);
    if (e->state == PS_INFLIGHT_NACKED) {
      PS_COUNT(publish_nacks_total, 1);
      e->state = PS_INFLIGHT_PENDING;
      e->seq = 0;
    }
  }
}

static void ps__on_return(void *ctx, const char *message_id, int reply_code, const char *reply_text) {
  ps__worker *w = ctx;
  ps_inflight_entry *e = ps_inflight_find_id(&w->fl, message_id);
  (void)reply_text;
  if (e) {
    e->returned = 1;
    e->reply_code = reply_code;
  }
}

/* (Re)sends the entries not published on this connection, in order. */
static void ps__resend(ps__worker *w) {
  for (size_t i = 0; w->conn && i < ps_inflight_count(&w->fl); i++) {
    ps_inflight_entry *e = ps_inflight_at(&w->fl, i);
    if (e->state != PS_INFLIGHT_PENDING || e->seq)
      continue;
    if (ps_broker_publish(w->conn, &e->m) != 0) {
      ps__lost(w);
      return;
    }
    e->seq = ++w->seq;
    e->sent_ns = ps_now_ns();
  }
}

/* Marks entry e as not deliverable (rc), counting and logging what is given up. */
static void ps__fail(ps__worker *w, ps_inflight_entry *e, int rc) {
  ps_batch *b = e->ref;
  e->state = PS__FAILED;
  e->reply_code = rc;
  if (!b->settled) { /* nobody to tell: the client was answered at enqueue */
    w->gave_up = 1;
    PS_COUNT(publish_given_up_events_total, e->events);
    char n[32];
    snprintf(n, sizeof n, "%" PRIu32, e->events);
    ps_error("router: events not delivered: the shutdown deadline passed with the broker unreachable and "
             "no room in the spool", "events", n, "routing_key", e->m.routing_key);
  }
}

/* Appends the k records packed in w->rec (boundaries off[0..k]) for entries idx[0..k) in one write. */
/* Returns how many of them stay held (the spool refused them and nobody is to be told yet). */
static size_t ps__spool_flush(ps__worker *w, const size_t *idx, const size_t *off, size_t k) {
  ps_router *r = w->r;
  struct iovec v[PS__SPOOL_IOV] = {{0}};
  for (size_t j = 0; j < k; j++)
    v[j] = (struct iovec){w->rec.data + off[j], off[j + 1] - off[j]};
  int rc = ps_spool_append(r->opt.spool, v, k);
  size_t held = 0;
  for (size_t j = 0; j < k; j++) {
    ps_inflight_entry *e = ps_inflight_at(&w->fl, idx[j]);
    ps_batch *b = e->ref;
    if (rc == 0) {
      e->state = PS__SPOOLED;
      PS_COUNT(messages_spooled_total, 1);
      PS_COUNT(events_spooled_total, e->events);
    } else if (b->settled || ps__past_give_up(r)) {
      ps__fail(w, e, rc); /* the client hears it (UNAVAILABLE), or the deadline passed */
    } else {
      held++; /* tried again at the next pump */
    }
  }
  if (rc != 0) {
    static ps_log_ratelimit rl;
    ps__ratelimited_warn(&rl, "router: broker unreachable and the spool refuses messages", "error",
                         ps_strerror(rc));
  }
  return held;
}

/*
 * Without a connection: writes the unsent entries to the spool, PS__SPOOL_IOV
 * per append (one fsync). What stays held (no spool, or it refused) is
 * returned (the pump keeps it in w->held): the worker then takes no new
 * batch, and the queue fills up behind it.
 */
static size_t ps__spool_unsent(ps__worker *w) {
  ps_router *r = w->r;
  size_t idx[PS__SPOOL_IOV], off[PS__SPOOL_IOV + 1], k = 0, held = 0;
  ps_buf_reset(&w->rec);
  for (size_t i = 0; i < ps_inflight_count(&w->fl); i++) {
    ps_inflight_entry *e = ps_inflight_at(&w->fl, i);
    if (e->state != PS_INFLIGHT_PENDING || e->seq)
      continue;
    if (!r->opt.spool) {
      if (ps__past_give_up(r))
        ps__fail(w, e, PS_ETIMEDOUT);
      else
        held++;
      continue;
    }
    off[k] = w->rec.len;
    ps_message_pack_events(&e->m, e->tag[1] ? e->events : 0, &w->rec);
    idx[k++] = i;
    if (k == PS__SPOOL_IOV) {
      off[k] = w->rec.len;
      held += ps__spool_flush(w, idx, off, k);
      k = 0;
      ps_buf_reset(&w->rec);
    }
  }
  if (k) {
    off[k] = w->rec.len;
    held += ps__spool_flush(w, idx, off, k);
  }
  return held;
}

/* Settles the oldest entries that are done. */
static void ps__settle_head(ps__worker *w) {
  while (ps_inflight_count(&w->fl)) {
    ps_inflight_entry *e = ps_inflight_at(&w->fl, 0);
    ps_batch *b = e->ref;
    int rc = 0;
    switch (e->state) {
    case PS_INFLIGHT_PENDING:
      return;
    case PS_INFLIGHT_ACKED:
      if (e->returned && w->r->opt.dead_letter_exchange) {
        /* Its dead letter takes its place, unsent; it settles (with its batch) in this turn. */
        ps_inflight_entry *d = ps_inflight_dead_letter_head(&w->fl, w->r->opt.dead_letter_exchange,
                                                            w->r->opt.skipped_key, &w->rec);
        d->tag[1] = 0; /* a dead letter: not counted as published */
        continue;
      }
      if (e->tag[1]) {
        PS_COUNT(messages_published_total, 1);
        PS_COUNT(events_published_total, e->events);
      }
      break;
    case PS__FAILED:
      rc = e->reply_code;
      break;
    default: /* spooled */
      break;
    }
    ps_inflight_pop(&w->fl);
    PS_COUNT(publish_unconfirmed, -1);
    ps__settle(b, rc);
  }
}

/*
 * Moves the window along: connects when due, (re)sends or spools what is
 * unsent, reads confirmations (waiting up to wait_ms for the first), drops a
 * connection that stopped confirming, and settles what is done.
 */
static void ps__pump(ps__worker *w, int wait_ms) {
  ps_router *r = w->r;
  ps__connect(w);
  if (w->conn)
    ps__resend(w);
  w->held = w->conn ? 0 : ps__spool_unsent(w);
  ps__settle_head(w);
  if (!ps_inflight_count(&w->fl))
    return;
  if (!w->conn) {
    /* Held messages (no spool, or a full one): wait for the next connect attempt. */
    int64_t left = w->next_connect_ns - ps_now_ns();
    if (left > (int64_t)wait_ms * 1000000)
      left = (int64_t)wait_ms * 1000000;
    if (left > 0) {
      struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
      nanosleep(&ts, NULL);
    }
    return;
  }
  int rc = ps_broker_confirms(w->conn, &w->handler, wait_ms);
  if (rc == PS_ECONN) {
    ps__lost(w);
  } else {
    /* The oldest unconfirmed publish tells whether the broker still confirms. */
    for (size_t i = 0; i < ps_inflight_count(&w->fl); i++) {
      ps_inflight_entry *e = ps_inflight_at(&w->fl, i);
      if (e->state != PS_INFLIGHT_PENDING || !e->seq)
        continue;
      int64_t age = ps_now_ns() - e->sent_ns;
      if (age > (int64_t)r->opt.confirm_timeout_ms * 1000000) {
        PS_COUNT(publish_confirm_timeouts_total, 1);
        ps_warn("router: the broker did not confirm a publish in time; reconnecting", "broker",
                r->broker->display);
        ps__lost(w);
      } else if (ps__past_give_up(r) && r->opt.spool) {
        ps__lost(w); /* shutting down: what is unconfirmed goes to the spool */
      }
      break;
    }
  }
  ps__settle_head(w);
}

/*
 * Publishes (or holds) one message of batch b: a group of events events to the
 * event exchange, or (events 0) a dead letter. Entry tag [1]: 1 for a group
 * (counted as published once confirmed).
 */
static void ps__send(ps__worker *w, ps_batch *b, const ps_message *m, uint32_t events) {
  while (ps_inflight_full(&w->fl))
    ps__pump(w, 50);
  ps_inflight_entry *e = ps_inflight_push(&w->fl, 0, m, b);
  PS_COUNT(publish_unconfirmed, 1);
  e->events = events;
  e->tag[1] = events > 0;
  b->pending++;
  if (w->conn) {
    if (ps_broker_publish(w->conn, m) == 0) {
      e->seq = ++w->seq;
      e->sent_ns = ps_now_ns();
    } else {
      ps__lost(w);
    }
  }
}

/* Where the messages of a batch go: emit(ctx, message, events in it; 0 for a dead letter). */
typedef void (*ps__emit_fn)(void *ctx, ps_batch *b, const ps_message *m, uint32_t events);

/*
 * Builds the messages of batch b (the dead letter of its events without a
 * type, then one message per type) in body and hands each to emit. Message
 * ids: "<instance>-<who>-<n>", n from *msgno.
 */
static void ps__batch_messages(ps_router *r, ps_batch *b, Event__Event **scratch, ps_event_group *groups,
                               ps_buf *body, const char *who, uint64_t *msgno, ps__emit_fn emit, void *ctx) {
  if (b->n_skipped && r->opt.dead_letter_exchange) {
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
    ps_buf_reset(body);
    size_t len = event__events__get_packed_size(&part);
    ps_buf_reserve(body, len);
    event__events__pack(&part, (uint8_t *)body->data);
    char why[128];
    snprintf(why, sizeof why, "skipped at dispatch: %s", reason);
    ps_dead_letter dl = {r->opt.dead_letter_exchange, r->opt.skipped_key, why, "", "dispatch", "", NULL,
                         "application/x-protobuf", body->data, len};
    ps_dead_letter_headers h;
    ps_message m;
    ps_dead_letter_message(&dl, &h, &m);
    emit(ctx, b, &m, 0);
  }
  size_t ng = ps_events_group(b->msg, groups, scratch);
  for (size_t g = 0; g < ng; g++) {
    Event__Events part = *b->msg;
    part.n_events = groups[g].n;
    part.events = groups[g].events;
    ps_buf_reset(body);
    if (ps_pbjson_encode(body, &part.base) != 0) {
      /* Cannot happen: dispatch checked UTF-8 before accepting the batch. */
      ps_error("router: cannot encode a group; dropped", "event_type", groups[g].type_name);
      continue;
    }
    char id[64];
    snprintf(id, sizeof id, "%016" PRIx64 "-%s-%" PRIu64, r->instance, who, ++*msgno);
    ps_message m = {
        .exchange = r->opt.exchange,
        .routing_key = groups[g].type_name,
        .content_type = "application/json",
        .message_id = id,
        .timestamp = b->received_unix,
        .persistent = 1,
        .mandatory = 1,
        .body = body->data,
        .len = body->len,
    };
    emit(ctx, b, &m, (uint32_t)groups[g].n);
  }
}

static void ps__emit_send(void *ctx, ps_batch *b, const ps_message *m, uint32_t events) {
  ps__send(ctx, b, m, events);
}

static void ps__publish_batch(ps__worker *w, ps_batch *b, Event__Event **scratch, ps_event_group *groups) {
  char who[16];
  snprintf(who, sizeof who, "%d", w->id);
  b->pending++; /* held while its messages are handed out */
  ps__batch_messages(w->r, b, scratch, groups, &w->body, who, &w->msgno, ps__emit_send, w);
  ps__settle(b, 0); /* the hold */
}

/* The spool records of one batch, for ps_router_spool_batch. */
typedef struct ps__records {
  ps_buf rec;
  size_t *off;
  size_t n, cap;
  uint64_t events;
} ps__records;

static void ps__emit_record(void *ctx, ps_batch *b, const ps_message *m, uint32_t events) {
  ps__records *rs = ctx;
  (void)b;
  if (rs->n + 1 >= rs->cap) {
    rs->cap = rs->cap ? rs->cap * 2 : 16;
    rs->off = realloc(rs->off, rs->cap * sizeof *rs->off);
    if (!rs->off)
      abort();
  }
  rs->off[rs->n++] = rs->rec.len;
  ps_message_pack_events(m, events, &rs->rec);
  rs->events += events;
}

int ps_router_spool_batch(ps_router *r, ps_batch *b) {
  if (!r->opt.spool)
    return PS_EFULL;
  size_t ntypes = ps_event_type_count();
  Event__Event **scratch = malloc((b->msg->n_events ? b->msg->n_events : 1) * sizeof *scratch);
  ps_event_group *groups = calloc(ntypes ? ntypes : 1, sizeof *groups);
  if (!scratch || !groups)
    abort();
  ps__records rs = {PS_BUF_INIT, NULL, 0, 0, 0};
  ps_buf body = PS_BUF_INIT;
  ps__batch_messages(r, b, scratch, groups, &body, "o", &r->overflow_msgno, ps__emit_record, &rs);
  int rc = 0;
  if (rs.n) {
    struct iovec *v = calloc(rs.n, sizeof *v);
    if (!v)
      abort();
    for (size_t i = 0; i < rs.n; i++)
      v[i] = (struct iovec){rs.rec.data + rs.off[i], (i + 1 < rs.n ? rs.off[i + 1] : rs.rec.len) - rs.off[i]};
    rc = ps_spool_append(r->opt.spool, v, rs.n);
    free(v);
  }
  if (rc == 0) {
    PS_COUNT(messages_spooled_total, rs.n);
    PS_COUNT(events_spooled_total, rs.events);
  }
  ps_buf_free(&body);
  ps_buf_free(&rs.rec);
  free(rs.off);
  free(scratch);
  free(groups);
  return rc;
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
  int closed = 0;
  for (;;) {
    if (closed || ps_inflight_full(&w->fl) || w->held) {
      if (closed && !ps_inflight_count(&w->fl))
        break;
      ps__pump(w, 50);
      continue;
    }
    /* With messages awaiting confirmation, wait for new batches 1 ms at most, then read confirmations. */
    int64_t until = ps_inflight_count(&w->fl) ? ps_now_ns() + 1000000 : -1;
    int n = ps_queue_pop(w->r->q, items, PS__POP_MAX, until);
    if (n == PS_ECLOSED) {
      closed = 1;
      continue;
    }
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
    }
    ps__pump(w, 0);
  }
  free(scratch);
  free(groups);
  if (w->conn)
    PS_COUNT(broker_connections_publisher, -1);
  ps_broker_close(w->conn);
  w->conn = NULL;
  ps_inflight_free(&w->fl);
  ps_buf_free(&w->body);
  ps_buf_free(&w->rec);
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
    ps_inflight_init(&r->workers[i].fl, (size_t)(opt->window > 0 ? opt->window : 256));
    r->workers[i].handler = (ps_confirm_handler){&r->workers[i], ps__on_confirm, ps__on_return};
    if (pthread_create(&r->workers[i].thread, NULL, ps__worker_main, &r->workers[i]) != 0)
      abort();
  }
  return r;
}

void ps_router_set_deadline(ps_router *r, int64_t deadline_ns) { atomic_store(&r->give_up_ns, deadline_ns); }

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
