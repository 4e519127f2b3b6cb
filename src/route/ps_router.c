/*
 * ps_router: publishing workers (see ps_router.h).
 *
 * DESIGN: `workers` threads, each with its own broker connection, its own
 * window of unconfirmed messages (ps_inflight) and its own scratch buffers,
 * so the publish path shares nothing but the queue, the spool and the
 * metrics. A worker pops up to merge_batches batches at a time (a "lot":
 * one when the queue is short, more under load; with linger_ms it waits
 * that long for a short lot to fill) and publishes their groups
 * (encoded without copying events: a stack `Events` whose event array points
 * at the groups' events in the batches); the groups of one type from batches
 * with the same header go in one message (packed: one message per type for
 * the lot). Between pops it reads the confirmations that arrived
 * ("pumping"). Each window entry refers to the first batch of its lot (the
 * lead); the lead counts the lot's unsettled messages, and when the count
 * reaches zero every batch of the lot (lot_next) is settled, then freed.
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

#define PS__LOT_MAX 64           /* batches a worker publishes together, at most */
#define PS__MERGE_MAX_EVENTS 1000 /* events one merged message takes, at most */
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
  ps_buf rec;
  char who[16];             /* its part of message ids */
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

/*
 * One message of the lot led by b is settled (rc 0: confirmed or spooled); the
 * last one settles every batch of the lot, with the lot's first failure, and
 * frees them.
 */
static void ps__settle(ps_batch *b, int rc) {
  if (rc && !b->failed)
    b->failed = rc;
  if (--b->pending)
    return;
  rc = b->failed; /* b is freed first */
  for (ps_batch *x = b, *next; x; x = next) {
    next = x->lot_next;
    if (x->settled)
      x->settled(x, rc);
    ps_batch_destroy(x);
  }
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

/* Where the messages of a lot go: emit(ctx, lead, message, events in it; 0 for a dead letter). */
typedef void (*ps__emit_fn)(void *ctx, ps_batch *lead, const ps_message *m, uint32_t events);

/* Scratch space of ps__lot_messages, kept by its caller from one lot to the next. */
typedef struct ps__scratch {
  Event__Event **ev;      /* the lot's events grouped by type, batch after batch, then a merged group */
  size_t ev_cap;
  ps_event_group *groups; /* ps_event_type_count() per batch */
  const char **types;     /* a header class's types, in order of first appearance */
  ps_buf hdr;             /* the batches' packed headers, back to back */
  ps_buf body;            /* the message being built */
  ps_pb_record *rec;      /* protobuf from the requests: the lot's event records, batch after batch */
  const char **etype;     /* and each one's type name */
  size_t rec_cap;
} ps__scratch;

static void ps__scratch_init(ps__scratch *s) {
  size_t nt = ps_event_type_count();
  nt = nt ? nt : 1;
  *s = (ps__scratch){NULL, 0, calloc(PS__LOT_MAX * nt, sizeof *s->groups), calloc(nt, sizeof *s->types),
                     PS_BUF_INIT, PS_BUF_INIT, NULL, NULL, 0};
  if (!s->groups || !s->types)
    abort();
}

static void ps__scratch_free(ps__scratch *s) {
  free(s->ev);
  free(s->groups);
  free(s->types);
  ps_buf_free(&s->hdr);
  ps_buf_free(&s->body);
  free(s->rec);
  free(s->etype);
}

/* Batch b's events without a type, as one binary Events (unknown fields kept) to the dead-letter exchange. */
static void ps__skipped_message(ps_router *r, ps_batch *b, ps__scratch *s, ps_batch *lead, ps__emit_fn emit,
                                void *ctx) {
  size_t n = 0;
  const char *reason = NULL;
  for (size_t i = 0; i < b->msg->n_events; i++)
    if (!ps_event_type_name(b->msg->events[i])) {
      s->ev[n++] = b->msg->events[i];
      const char *why = ps_event_skip_reason(b->msg->events[i]);
      reason = !reason || strcmp(reason, why) == 0 ? why : "no payload or unknown event type";
    }
  Event__Events part = *b->msg;
  part.n_events = n;
  part.events = s->ev;
  ps_buf_reset(&s->body);
  size_t len = event__events__get_packed_size(&part);
  ps_buf_reserve(&s->body, len);
  event__events__pack(&part, (uint8_t *)s->body.data);
  char why[128];
  snprintf(why, sizeof why, "skipped at dispatch: %s", reason);
  ps_dead_letter dl = {r->opt.dead_letter_exchange, r->opt.skipped_key, why, "", "dispatch", "", NULL,
                       "application/x-protobuf", s->body.data, len};
  ps_dead_letter_headers h;
  ps_message m;
  ps_dead_letter_message(&dl, &h, &m);
  emit(ctx, lead, &m, 0);
}

void ps_router_message_id(char *id, uint64_t instance, const char *who, uint64_t n) {
  static const char hex[] = "0123456789abcdef";
  char *p = id;
  for (int i = 15; i >= 0; i--)
    *p++ = hex[(instance >> (i * 4)) & 15];
  *p++ = '-';
  for (const char *c = who; *c && p < id + 40; c++)
    *p++ = *c;
  *p++ = '-';
  char d[20];
  int k = 0;
  do
    d[k++] = (char)('0' + n % 10);
  while (n /= 10);
  while (k)
    *p++ = d[--k];
  *p = '\0';
}

/* Appends the proto3 JSON of Events{like's header, events[0..n)} to s->body; 0, or -1 (logged) if it cannot. */
static int ps__put_events(ps__scratch *s, const Event__Events *like, const char *type_name, Event__Event **events,
                          size_t n) {
  Event__Events part = *like;
  part.n_events = n;
  part.events = events;
  if (ps_pbjson_encode(&s->body, &part.base) != 0) {
    /* Cannot happen: dispatch checked UTF-8 before accepting the batch. */
    ps_error("router: cannot encode a group; dropped", "event_type", type_name);
    return -1;
  }
  return 0;
}

/* Hands s->body, n events of type type_name, to emit as one message to the event exchange. */
static void ps__emit_body(ps_router *r, ps__scratch *s, const char *type_name, size_t n, ps_batch *lead,
                          const char *who, uint64_t *msgno, ps__emit_fn emit, void *ctx) {
  char id[64];
  ps_router_message_id(id, r->instance, who, ++*msgno);
  ps_message m = {
      .exchange = r->opt.exchange,
      .routing_key = type_name,
      .content_type = r->opt.format == PS_PUBLISH_PROTOBUF ? PS_CONTENT_TYPE_PACKED_PB
                      : r->opt.format == PS_PUBLISH_PACKED ? PS_CONTENT_TYPE_PACKED
                                                           : "application/json",
      .message_id = id,
      .timestamp = lead->received_unix,
      .persistent = 1,
      .mandatory = 1,
      .body = s->body.data,
      .len = s->body.len,
  };
  emit(ctx, lead, &m, (uint32_t)n);
}

/* A lot as ps__lot_messages sees it: its batches, each one's group count and header class. */
typedef struct ps__lot_view {
  ps_batch **bs;
  size_t n, ntypes;
  const size_t *ng, *cls;
} ps__lot_view;

/* The types of the batches of header class c (every batch: SIZE_MAX), in order of first appearance, into
   s->types; returns how many. */
static size_t ps__types_of(const ps__lot_view *v, ps__scratch *s, size_t c) {
  size_t nt = 0;
  for (size_t i = c == SIZE_MAX ? 0 : c; i < v->n; i++) {
    if (c != SIZE_MAX && v->cls[i] != c)
      continue;
    for (size_t g = 0; g < v->ng[i]; g++) {
      const char *t = s->groups[i * v->ntypes + g].type_name;
      size_t k = 0;
      while (k < nt && s->types[k] != t)
        k++;
      if (k == nt)
        s->types[nt++] = t;
    }
  }
  return nt;
}

/*
 * Gathers into merged the events of type t of the batches of header class c
 * (batches c.. whose cls is c), group after group; with flush, hands each
 * run of whole groups of up to PS__MERGE_MAX_EVENTS to the caller through
 * flush. Returns the events gathered and not flushed.
 */
static size_t ps__gather(const ps__lot_view *v, const ps__scratch *s, size_t c, const char *t, Event__Event **merged,
                         void (*flush)(void *arg, size_t m), void *arg) {
  size_t m = 0;
  for (size_t i = c; i < v->n; i++) {
    if (v->cls[i] != c)
      continue;
    const ps_event_group *grp = s->groups + i * v->ntypes;
    size_t g = 0;
    while (g < v->ng[i] && grp[g].type_name != t)
      g++;
    if (g == v->ng[i])
      continue;
    if (flush && m && m + grp[g].n > PS__MERGE_MAX_EVENTS) {
      flush(arg, m);
      m = 0;
    }
    memcpy(merged + m, grp[g].events, grp[g].n * sizeof *merged);
    m += grp[g].n;
  }
  return m;
}

/* The message being built by ps__lot_messages, for ps__gather's flush. */
typedef struct ps__lot_out {
  ps_router *r;
  ps__scratch *s;
  const Event__Events *like;
  const char *type;
  Event__Event **merged;
  ps_batch *lead;
  const char *who;
  uint64_t *msgno;
  ps__emit_fn emit;
  void *ctx;
} ps__lot_out;

static void ps__flush_events(void *arg, size_t m) {
  ps__lot_out *o = arg;
  ps_buf_reset(&o->s->body);
  if (ps__put_events(o->s, o->like, o->type, o->merged, m) == 0)
    ps__emit_body(o->r, o->s, o->type, m, o->lead, o->who, o->msgno, o->emit, o->ctx);
}

/*
 * PUBLISH_FORMAT=protobuf publishes the events' own bytes when it can: each
 * batch's kept request split into records (ps_events_records), the header's
 * into hs[i] and the events' into s->rec from first[i] on, their type names
 * in s->etype. Returns 0, or -1 if a batch cannot be split so (the lot is
 * then packed again from its messages).
 */
static int ps__lot_records(ps__scratch *s, ps_batch **bs, size_t n, ps_pb_record *hs, size_t *first) {
  size_t total = 0, used = 0;
  for (size_t i = 0; i < n; i++)
    total += bs[i]->msg->n_events + 1;
  if (total > s->rec_cap) {
    free(s->rec);
    free(s->etype);
    s->rec_cap = 2 * total;
    s->rec = malloc(s->rec_cap * sizeof *s->rec);
    s->etype = malloc(s->rec_cap * sizeof *s->etype);
    if (!s->rec || !s->etype)
      abort();
  }
  for (size_t i = 0; i < n; i++) {
    if (ps_events_records(bs[i], &hs[i], s->rec + used, s->etype + used) != 0)
      return -1;
    first[i] = used;
    used += bs[i]->msg->n_events;
  }
  return 0;
}

/* Of ps__lot_records' events, those of type t in the batches of header class c: how many, and in *bytes the
   size of the Events they make with the class's header. */
static size_t ps__records_of(const ps__scratch *s, const ps__lot_view *v, size_t c, const char *t,
                             const ps_pb_record *hs, const size_t *first, size_t *bytes) {
  size_t m = 0;
  *bytes = hs[c].len;
  for (size_t i = c; i < v->n; i++)
    if (v->cls[i] == c)
      m += ps_events_records_size(s->rec + first[i], s->etype + first[i], v->bs[i]->msg->n_events, t, bytes);
  return m;
}

/* Appends that Events (bytes from ps__records_of) to s->body, preceded by its length: the class's header record,
   then each event record of type t, batch after batch. */
static void ps__put_records(ps__scratch *s, const ps__lot_view *v, size_t c, const char *t, const ps_pb_record *hs,
                            const size_t *first, size_t bytes) {
  ps_buf_reserve(&s->body, bytes + 10);
  uint8_t *p = (uint8_t *)s->body.data + s->body.len;
  p += ps_pb_put_varint(p, bytes);
  memcpy(p, v->bs[c]->wire + hs[c].off, hs[c].len);
  p += hs[c].len;
  for (size_t i = c; i < v->n; i++)
    if (v->cls[i] == c)
      p = ps_events_records_copy(p, v->bs[i]->wire, s->rec + first[i], s->etype + first[i],
                                 v->bs[i]->msg->n_events, t);
  s->body.len = (size_t)(p - (uint8_t *)s->body.data);
  s->body.data[s->body.len] = '\0';
}

/*
 * Whether batches i and j have the same header: the same bytes on the wire
 * (off[i] SIZE_MAX: no header; two batches without one count as the same).
 */
static int ps__same_header(const ps__scratch *s, const size_t *off, const size_t *len, size_t i, size_t j) {
  if (off[i] == SIZE_MAX || off[j] == SIZE_MAX)
    return off[i] == off[j];
  return len[i] == len[j] && memcmp(s->hdr.data + off[i], s->hdr.data + off[j], len[i]) == 0;
}

/*
 * Builds the messages of the lot bs[0..n) and hands each to emit, with bs[0]
 * (the lead) as the batch it settles: first, per batch, the dead letter of
 * its events without a type; then, per header (batches whose headers are the
 * same bytes share their messages) and per type, in order of first
 * appearance, one message of that type's events, batch after batch, in the
 * order they came. A message takes whole groups of a batch up to
 * PS__MERGE_MAX_EVENTS events (one larger group has a message of its own).
 * A lot of one batch gives what the original service published: one message
 * per type. Message ids: "<instance>-<who>-<n>", n from *msgno.
 */
static void ps__lot_messages(ps_router *r, ps__scratch *s, ps_batch **bs, size_t n, const char *who,
                             uint64_t *msgno, ps__emit_fn emit, void *ctx) {
  size_t ntypes = ps_event_type_count(), total = 0;
  for (size_t i = 0; i < n; i++)
    total += bs[i]->msg->n_events;
  if (2 * total > s->ev_cap) {
    free(s->ev);
    s->ev_cap = 2 * total + 64;
    s->ev = malloc(s->ev_cap * sizeof *s->ev);
    if (!s->ev)
      abort();
  }
  for (size_t i = 0; i < n; i++)
    if (bs[i]->n_skipped && r->opt.dead_letter_exchange)
      ps__skipped_message(r, bs[i], s, bs[0], emit, ctx);

  size_t ng[PS__LOT_MAX], cls[PS__LOT_MAX], off[PS__LOT_MAX], len[PS__LOT_MAX];
  Event__Event **ev = s->ev;
  ps_buf_reset(&s->hdr);
  for (size_t i = 0; i < n; i++) {
    ng[i] = ps_events_group(bs[i]->msg, s->groups + i * ntypes, ev);
    ev += bs[i]->msg->n_events;
    const Event__Header *h = bs[i]->msg->header;
    off[i] = SIZE_MAX;
    len[i] = 0;
    if (h && n > 1) {
      len[i] = event__header__get_packed_size(h);
      off[i] = s->hdr.len;
      ps_buf_reserve(&s->hdr, len[i]);
      event__header__pack(h, (uint8_t *)s->hdr.data + s->hdr.len);
      s->hdr.len += len[i];
    }
    cls[i] = i;
    for (size_t j = 0; j < i; j++)
      if (cls[j] == j && ps__same_header(s, off, len, i, j)) {
        cls[i] = j;
        break;
      }
  }

  Event__Event **merged = s->ev + total;
  ps__lot_view v = {bs, n, ntypes, ng, cls};
  ps__lot_out o = {r, s, NULL, NULL, merged, bs[0], who, msgno, emit, ctx};
  if (r->opt.format == PS_PUBLISH_EVENTS) {
    for (size_t c = 0; c < n; c++) {
      if (cls[c] != c)
        continue;
      size_t nt = ps__types_of(&v, s, c);
      for (size_t k = 0; k < nt; k++) {
        o.like = bs[c]->msg;
        o.type = s->types[k];
        size_t m = ps__gather(&v, s, c, s->types[k], merged, ps__flush_events, &o);
        if (m)
          ps__flush_events(&o, m);
      }
    }
    return;
  }
  /* Packed: per type, one line (protobuf: one delimited Events) per header class, in messages of about
     PS__MERGE_MAX_EVENTS events. */
  ps_pb_record hs[PS__LOT_MAX];
  size_t first[PS__LOT_MAX];
  int protobuf = r->opt.format == PS_PUBLISH_PROTOBUF;
  int records = protobuf && ps__lot_records(s, bs, n, hs, first) == 0;
  size_t nt = ps__types_of(&v, s, SIZE_MAX);
  for (size_t k = 0; k < nt; k++) {
    size_t events = 0;
    ps_buf_reset(&s->body);
    for (size_t c = 0; c < n; c++) {
      if (cls[c] != c)
        continue;
      size_t bytes = 0;
      size_t m = records ? ps__records_of(s, &v, c, s->types[k], hs, first, &bytes)
                         : ps__gather(&v, s, c, s->types[k], merged, NULL, NULL);
      if (!m)
        continue;
      if (events && events + m > PS__MERGE_MAX_EVENTS) {
        ps__emit_body(r, s, s->types[k], events, bs[0], who, msgno, emit, ctx);
        ps_buf_reset(&s->body);
        events = 0;
      }
      if (records) {
        ps__put_records(s, &v, c, s->types[k], hs, first, bytes);
      } else if (protobuf) {
        Event__Events part = *bs[c]->msg;
        part.n_events = m;
        part.events = merged;
        ps_events_put_delimited(&s->body, &part);
      } else {
        size_t mark = s->body.len;
        if (ps__put_events(s, bs[c]->msg, s->types[k], merged, m) != 0) {
          s->body.len = mark;
          continue;
        }
        ps_buf_append(&s->body, "\n", 1);
      }
      events += m;
    }
    if (events)
      ps__emit_body(r, s, s->types[k], events, bs[0], who, msgno, emit, ctx);
  }
}

static void ps__emit_send(void *ctx, ps_batch *lead, const ps_message *m, uint32_t events) {
  ps__send(ctx, lead, m, events);
}

/* Publishes the lot bs[0..n): its batches settle together, when the last of their messages does. */
static void ps__publish_lot(ps__worker *w, ps__scratch *s, ps_batch **bs, size_t n) {
  for (size_t i = 0; i < n; i++)
    bs[i]->lot_next = i + 1 < n ? bs[i + 1] : NULL;
  bs[0]->pending++; /* held while the messages are handed out */
  ps__lot_messages(w->r, s, bs, n, w->who, &w->msgno, ps__emit_send, w);
  ps__settle(bs[0], 0); /* the hold */
}

/* The spool records of one batch, for ps_router_spool_batch. */
typedef struct ps__records {
  ps_buf rec;
  size_t *off;
  size_t n, cap;
  uint64_t events;
} ps__records;

static void ps__emit_record(void *ctx, ps_batch *lead, const ps_message *m, uint32_t events) {
  ps__records *rs = ctx;
  (void)lead;
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
  ps__scratch s;
  ps__scratch_init(&s);
  ps__records rs = {PS_BUF_INIT, NULL, 0, 0, 0};
  ps__lot_messages(r, &s, &b, 1, "o", &r->overflow_msgno, ps__emit_record, &rs);
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
  ps__scratch_free(&s);
  ps_buf_free(&rs.rec);
  free(rs.off);
  return rc;
}

/*
 * Lingering: a worker that popped n < lot batches waits up to linger_ms for
 * more, so that under a moderate load (batches arriving a few a millisecond)
 * a lot still holds several of them and its messages are fewer and larger;
 * under a heavy load the queue fills whole lots and nobody waits. Returns the
 * batches in items now. A closed queue ends the wait at once.
 */
static int ps__linger(ps_router *r, void **items, int n, size_t lot) {
  int64_t until = ps_now_ns() + (int64_t)r->opt.linger_ms * 1000000;
  while ((size_t)n < lot) {
    int k = ps_queue_pop(r->q, items + n, (int)(lot - (size_t)n), until);
    if (k <= 0)
      break;
    n += k;
  }
  return n;
}

static void *ps__worker_main(void *arg) {
  ps__worker *w = arg;
  char name[16];
  snprintf(name, sizeof name, "ps-worker-%d", w->id);
  pthread_setname_np(pthread_self(), name);
  ps__scratch s;
  ps__scratch_init(&s);
  void *items[PS__LOT_MAX];
  size_t lot = (size_t)w->r->opt.merge_batches;
  lot = lot < 1 ? 1 : lot > PS__LOT_MAX ? PS__LOT_MAX : lot;
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
    int n = ps_queue_pop(w->r->q, items, lot, until);
    if (n == PS_ECLOSED) {
      closed = 1;
      continue;
    }
    if (n > 0 && (size_t)n < lot && w->r->opt.linger_ms > 0)
      n = ps__linger(w->r, items, n, lot);
    if (n > 0)
      ps__publish_lot(w, &s, (ps_batch **)items, (size_t)n);
    ps__pump(w, 0);
  }
  ps__scratch_free(&s);
  if (w->conn)
    PS_COUNT(broker_connections_publisher, -1);
  ps_broker_close(w->conn);
  w->conn = NULL;
  ps_inflight_free(&w->fl);
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
    snprintf(r->workers[i].who, sizeof r->workers[i].who, "%d", i);
    ps_inflight_init(&r->workers[i].fl, (size_t)(opt->window > 0 ? opt->window : 256), opt->window_bytes);
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
