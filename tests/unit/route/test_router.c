/*
 * Unit tests of the publishing workers (ps_router) and of the spool replay
 * (ps_replay), driven through a fake broker defined here: a ps_broker_ops of
 * our own whose connections record what is published and confirm it the way
 * the test says (ack everything, nack the next N publishes, return then ack
 * a mandatory message whose routing key is "unroutable", or never confirm),
 * and that refuses connections (and kills open ones) while `down` is set.
 *
 * What is checked: every batch is settled exactly once and only once its
 * messages are confirmed (or spooled); a nacked message is published again
 * with the same message id; a returned one is dead-lettered; with the broker
 * down, messages go to the spool, or, with no spool, are held (the queue
 * fills up behind the worker) until the broker is back; a connection that
 * stops confirming is dropped; stopping past the deadline gives up what is
 * held; the replay publishes the spool in order and commits it.
 *
 * Every wait polls with a deadline; each test takes well under 2 s.
 */
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker/ps_broker.h"
#include "codec/ps_events.h"
#include "core/ps_arena.h"
#include "core/ps_error.h"
#include "core/ps_metrics.h"
#include "ps_test.h"
#include "queue/ps_queue.h"
#include "route/ps_inflight.h"
#include "route/ps_replay.h"
#include "route/ps_router.h"
#include "spool/ps_spool.h"

/* ---------------------------------------------------------------- small helpers */

static int64_t ms_since(int64_t t0) { return (ps_now_ns() - t0) / 1000000; }

/* Polls cond every 2 ms until it holds or ms pass (the caller checks cond afterwards). */
#define WAIT_UNTIL(cond, ms)                                                                                 \
  do {                                                                                                       \
    int64_t wait_deadline__ = ps_now_ns() + (int64_t)(ms)*1000000;                                           \
    while (!(cond) && ps_now_ns() < wait_deadline__)                                                         \
      ps_test_sleep_ms(2);                                                                                           \
  } while (0)

/* ---------------------------------------------------------------- the fake broker */

enum { FAKE_ACK = 0, FAKE_NEVER = 1 }; /* how publishes are confirmed */

#define FAKE_MAX_HEADERS 8

/* One publish, as the broker saw it. */
typedef struct fake_rec {
  char exchange[64], routing_key[64], message_id[128], content_type[64];
  int mandatory, persistent;
  int64_t timestamp;
  size_t nheaders;
  char hkey[FAKE_MAX_HEADERS][48], hstr[FAKE_MAX_HEADERS][320];
  int hnum_is[FAKE_MAX_HEADERS];
  int64_t hnum[FAKE_MAX_HEADERS];
  char *body; /* NUL-terminated copy */
  size_t len;
  int conn;     /* connection number, 1-based */
  uint64_t seq; /* publish number on it (0: not in confirm mode) */
  int outcome;  /* 'A' ack, 'N' nack, 'R' return then ack, 0 never */
  int reported; /* the outcome was handed to the publisher (through confirms) */
} fake_rec;

typedef struct fake_report {
  uint64_t seq;
  int outcome;
  char id[128];
} fake_report;

typedef struct fake {
  ps_broker base;
  pthread_mutex_t mu;
  /* Set by the test (under mu, through the fake_set_* helpers). */
  int down;                   /* connect fails; open connections fail with PS_ECONN */
  int mode;                   /* FAKE_ACK or FAKE_NEVER */
  int nack_next;              /* nack this many of the next publishes */
  const char *unroutable[4];  /* mandatory messages with these routing keys are returned, then acked */
  size_t nunroutable;
  const char *never_exchange; /* publishes to this exchange are never confirmed */
  int multiple;               /* report runs of acks as one multiple ack */
  /* Seen by the test. */
  int connect_attempts, connects, closes, open;
  fake_rec *recs;
  size_t nrecs, caprecs;
} fake;

typedef struct fake_conn {
  ps_broker_conn base;
  fake *f;
  int no;
  int confirming;
  uint64_t seq;
  size_t *due; /* indexes of recs whose outcome is still to report */
  size_t ndue, capdue;
} fake_conn;

static int fake_connect(ps_broker *b, ps_broker_conn **out);

static int fake_publish(ps_broker_conn *bc, const ps_message *m) {
  fake_conn *c = (fake_conn *)bc;
  fake *f = c->f;
  pthread_mutex_lock(&f->mu);
  if (f->down) {
    pthread_mutex_unlock(&f->mu);
    return PS_ECONN;
  }
  if (f->nrecs == f->caprecs) {
    f->caprecs = f->caprecs ? 2 * f->caprecs : 64;
    f->recs = realloc(f->recs, f->caprecs * sizeof *f->recs);
    if (!f->recs)
      abort();
  }
  fake_rec *r = &f->recs[f->nrecs];
  memset(r, 0, sizeof *r);
  snprintf(r->exchange, sizeof r->exchange, "%s", m->exchange ? m->exchange : "");
  snprintf(r->routing_key, sizeof r->routing_key, "%s", m->routing_key ? m->routing_key : "");
  snprintf(r->message_id, sizeof r->message_id, "%s", m->message_id ? m->message_id : "");
  snprintf(r->content_type, sizeof r->content_type, "%s", m->content_type ? m->content_type : "");
  r->mandatory = m->mandatory;
  r->persistent = m->persistent;
  r->timestamp = m->timestamp;
  for (size_t i = 0; i < m->nheaders && i < FAKE_MAX_HEADERS; i++) {
    snprintf(r->hkey[i], sizeof r->hkey[i], "%s", m->headers[i].key);
    snprintf(r->hstr[i], sizeof r->hstr[i], "%s", m->headers[i].str ? m->headers[i].str : "");
    r->hnum_is[i] = m->headers[i].str == NULL;
    r->hnum[i] = m->headers[i].num;
    r->nheaders = i + 1;
  }
  r->body = malloc(m->len + 1);
  if (!r->body)
    abort();
  if (m->len)
    memcpy(r->body, m->body, m->len);
  r->body[m->len] = '\0';
  r->len = m->len;
  r->conn = c->no;
  if (c->confirming) {
    r->seq = ++c->seq;
    int unroutable = 0;
    for (size_t i = 0; i < f->nunroutable; i++)
      unroutable |= m->mandatory && strcmp(r->routing_key, f->unroutable[i]) == 0;
    if (unroutable)
      r->outcome = 'R';
    else if (f->nack_next > 0) {
      f->nack_next--;
      r->outcome = 'N';
    } else if (f->mode == FAKE_NEVER || (f->never_exchange && strcmp(r->exchange, f->never_exchange) == 0))
      r->outcome = 0;
    else
      r->outcome = 'A';
    if (r->outcome) {
      if (c->ndue == c->capdue) {
        c->capdue = c->capdue ? 2 * c->capdue : 16;
        c->due = realloc(c->due, c->capdue * sizeof *c->due);
        if (!c->due)
          abort();
      }
      c->due[c->ndue++] = f->nrecs;
    }
  }
  f->nrecs++;
  pthread_mutex_unlock(&f->mu);
  return 0;
}

static int fake_confirm_select(ps_broker_conn *bc) {
  fake_conn *c = (fake_conn *)bc;
  pthread_mutex_lock(&c->f->mu);
  int down = c->f->down;
  c->confirming = !down;
  pthread_mutex_unlock(&c->f->mu);
  return down ? PS_ECONN : 0;
}

static int fake_confirms(ps_broker_conn *bc, const ps_confirm_handler *h, int timeout_ms) {
  fake_conn *c = (fake_conn *)bc;
  fake *f = c->f;
  pthread_mutex_lock(&f->mu);
  if (!f->down && !c->ndue && timeout_ms > 0) {
    /* Only this connection's own thread adds to what is due: nothing arrives while we wait. */
    pthread_mutex_unlock(&f->mu);
    ps_test_sleep_ms(timeout_ms);
    pthread_mutex_lock(&f->mu);
  }
  if (f->down) {
    pthread_mutex_unlock(&f->mu);
    return PS_ECONN;
  }
  size_t n = c->ndue;
  if (!n) {
    pthread_mutex_unlock(&f->mu);
    return PS_ETIMEDOUT;
  }
  fake_report *rep = calloc(n, sizeof *rep);
  if (!rep)
    abort();
  for (size_t i = 0; i < n; i++) {
    fake_rec *r = &f->recs[c->due[i]];
    r->reported = 1;
    rep[i].seq = r->seq;
    rep[i].outcome = r->outcome;
    snprintf(rep[i].id, sizeof rep[i].id, "%s", r->message_id);
  }
  c->ndue = 0;
  int multiple = f->multiple;
  pthread_mutex_unlock(&f->mu);
  uint64_t run = 0; /* the last ack of a run not reported yet */
  for (size_t i = 0; i < n; i++) {
    if (rep[i].outcome == 'A' && multiple) {
      run = rep[i].seq;
      continue;
    }
    if (run) {
      h->confirm(h->ctx, run, 1, 1);
      run = 0;
    }
    if (rep[i].outcome == 'R') {
      h->returned(h->ctx, rep[i].id, 312, "NO_ROUTE");
      h->confirm(h->ctx, rep[i].seq, 0, 1);
    } else {
      h->confirm(h->ctx, rep[i].seq, 0, rep[i].outcome == 'A');
    }
  }
  if (run)
    h->confirm(h->ctx, run, 1, 1);
  free(rep);
  return 0;
}

static void fake_close(ps_broker_conn *bc) {
  fake_conn *c = (fake_conn *)bc;
  pthread_mutex_lock(&c->f->mu);
  c->f->closes++;
  c->f->open--;
  pthread_mutex_unlock(&c->f->mu);
  free(c->due);
  free(c);
}

static int fake_consume(ps_broker_conn *c, const char *queue, int prefetch, const char *tag) { return PS_EINVAL; }
static int fake_next(ps_broker_conn *c, ps_delivery *d, int timeout_ms) { return PS_EINVAL; }
static void fake_release(ps_broker_conn *c, ps_delivery *d) {}
static int fake_ack(ps_broker_conn *c, uint64_t tag, int multiple) { return PS_EINVAL; }
static int fake_nack(ps_broker_conn *c, uint64_t tag, int multiple, int requeue) { return PS_EINVAL; }
static int fake_ping(ps_broker_conn *bc) {
  fake_conn *c = (fake_conn *)bc;
  pthread_mutex_lock(&c->f->mu);
  int down = c->f->down;
  pthread_mutex_unlock(&c->f->mu);
  return down ? PS_ECONN : 0;
}
static void fake_destroy(ps_broker *b) {}

static const ps_broker_ops fake_ops = {"fake",    fake_connect,        fake_publish, fake_consume,
                                       fake_next, fake_release,        fake_ack,     fake_nack,
                                       fake_ping, fake_confirm_select, fake_confirms, fake_close,
                                       fake_destroy};

static int fake_connect(ps_broker *b, ps_broker_conn **out) {
  fake *f = (fake *)b;
  pthread_mutex_lock(&f->mu);
  f->connect_attempts++;
  if (f->down) {
    pthread_mutex_unlock(&f->mu);
    return PS_ECONN;
  }
  fake_conn *c = calloc(1, sizeof *c);
  if (!c)
    abort();
  c->base.ops = &fake_ops;
  c->base.broker = b;
  c->f = f;
  c->no = ++f->connects;
  f->open++;
  pthread_mutex_unlock(&f->mu);
  *out = &c->base;
  return 0;
}

static fake *fake_create(void) {
  fake *f = calloc(1, sizeof *f);
  if (!f)
    abort();
  f->base.ops = &fake_ops;
  f->base.display = "fake";
  pthread_mutex_init(&f->mu, NULL);
  return f;
}

static void fake_free(fake *f) {
  if (!f)
    return;
  for (size_t i = 0; i < f->nrecs; i++)
    free(f->recs[i].body);
  free(f->recs);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

static void fake_set_down(fake *f, int down) {
  pthread_mutex_lock(&f->mu);
  f->down = down;
  pthread_mutex_unlock(&f->mu);
}

static void fake_set_mode(fake *f, int mode) {
  pthread_mutex_lock(&f->mu);
  f->mode = mode;
  pthread_mutex_unlock(&f->mu);
}

/* Reads one int field of f under its lock. */
#define FAKE_GET(f, field) fake_get__((f), offsetof(fake, field))
static int fake_get__(fake *f, size_t off) {
  pthread_mutex_lock(&f->mu);
  int v = *(int *)((char *)f + off);
  pthread_mutex_unlock(&f->mu);
  return v;
}

static size_t fake_nrecs(fake *f) {
  pthread_mutex_lock(&f->mu);
  size_t n = f->nrecs;
  pthread_mutex_unlock(&f->mu);
  return n;
}

/* A copy of the i-th publish (its body borrowed: valid while the fake lives, read after the workers stopped). */
static fake_rec fake_rec_at(fake *f, size_t i) {
  pthread_mutex_lock(&f->mu);
  fake_rec r = f->recs[i];
  pthread_mutex_unlock(&f->mu);
  return r;
}

/* Publishes so far whose ack (plain or after a return) was reported. */
static size_t fake_acks_reported(fake *f) {
  size_t n = 0;
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->nrecs; i++)
    n += f->recs[i].reported && (f->recs[i].outcome == 'A' || f->recs[i].outcome == 'R');
  pthread_mutex_unlock(&f->mu);
  return n;
}

/* Publishes to exchange (NULL: any), or only those whose ack was reported. */
static size_t fake_count(fake *f, const char *exchange, int acked_only) {
  size_t n = 0;
  pthread_mutex_lock(&f->mu);
  for (size_t i = 0; i < f->nrecs; i++)
    if ((!exchange || strcmp(f->recs[i].exchange, exchange) == 0) &&
        (!acked_only || (f->recs[i].reported && f->recs[i].outcome != 'N' && f->recs[i].outcome)))
      n++;
  pthread_mutex_unlock(&f->mu);
  return n;
}

static const char *rec_header(const fake_rec *r, const char *key) {
  for (size_t i = 0; i < r->nheaders; i++)
    if (strcmp(r->hkey[i], key) == 0)
      return r->hstr[i];
  return NULL;
}

/* ---------------------------------------------------------------- batches */

/* What a batch's settled callback saw. */
typedef struct settle_rec {
  _Atomic int count; /* times settled: must end at 1 */
  int rc;
  int order;         /* 0, 1, ... across the test */
  size_t recs_at;    /* publishes the fake had seen when it settled */
  size_t acks_at;    /* acks it had reported */
  fake *f;
} settle_rec;

static _Atomic int settle_order;

static void on_settled(ps_batch *b, int rc) {
  settle_rec *s = b->settled_ctx;
  s->rc = rc;
  s->order = atomic_fetch_add(&settle_order, 1);
  if (s->f) {
    s->recs_at = fake_nrecs(s->f);
    s->acks_at = fake_acks_reported(s->f);
  }
  atomic_fetch_add(&s->count, 1);
}

static char *arena_str(ps_arena *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = ps_arena_alloc(a, n);
  memcpy(p, s, n);
  return p;
}

/*
 * A batch as ps_dispatch_submit builds it: the Events of session `session`,
 * one event per letter of types (C click, L launch, P page opened, N no
 * payload), event ids "<ids>-e<i>", all in the batch's arena. s: the
 * settled callback's record, or NULL for a batch nobody waits for.
 */
static ps_batch *make_batch_ids(const char *session, const char *ids, const char *types, settle_rec *s) {
  ps_arena *a = ps_arena_create(4096);
  Event__Events *msg = ps_arena_alloc(a, sizeof *msg);
  event__events__init(msg);
  Event__Header *h = ps_arena_alloc(a, sizeof *h);
  event__header__init(h);
  h->sessionid = arena_str(a, session);
  h->userid = 42;
  msg->header = h;
  size_t n = strlen(types);
  msg->n_events = n;
  msg->events = ps_arena_alloc(a, n * sizeof *msg->events);
  ps_batch *b = ps_arena_alloc(a, sizeof *b);
  memset(b, 0, sizeof *b);
  b->arena = a;
  b->msg = msg;
  b->received_unix = 1700000000;
  for (size_t i = 0; i < n; i++) {
    Event__Event *ev = ps_arena_alloc(a, sizeof *ev);
    event__event__init(ev);
    char id[64];
    snprintf(id, sizeof id, "%s-e%zu", ids, i);
    ev->id = arena_str(a, id);
    ev->timestamp = arena_str(a, "2024-01-01T00:00:00Z");
    if (types[i] == 'C') {
      Event__ClickEvent *c = ps_arena_alloc(a, sizeof *c);
      event__click_event__init(c);
      c->elementid = arena_str(a, "buy");
      c->position = (int32_t)i;
      ev->event_of_case = EVENT__EVENT__EVENT_OF_CLICK_EVENT;
      ev->clickevent = c;
    } else if (types[i] == 'L') {
      Event__LaunchEvent *l = ps_arena_alloc(a, sizeof *l);
      event__launch_event__init(l);
      l->source = arena_str(a, "icon");
      ev->event_of_case = EVENT__EVENT__EVENT_OF_LAUNCH_EVENT;
      ev->launchevent = l;
    } else if (types[i] == 'P') {
      Event__PageOpenedEvent *p = ps_arena_alloc(a, sizeof *p);
      event__page_opened_event__init(p);
      p->page = arena_str(a, "home");
      ev->event_of_case = EVENT__EVENT__EVENT_OF_PAGE_OPENED_EVENT;
      ev->pageopenedevent = p;
    }
    msg->events[i] = ev;
    if (ps_event_type_name(ev))
      b->n_events++;
    else
      b->n_skipped++;
  }
  if (s) {
    b->settled = on_settled;
    b->settled_ctx = s;
  }
  return b;
}

static ps_batch *make_batch(const char *session, const char *types, settle_rec *s) {
  return make_batch_ids(session, session, types, s);
}

/* ---------------------------------------------------------------- the fixture */

#define MAX_BATCHES 64

typedef struct fixture {
  fake *f;
  ps_queue *q;
  ps_router *r;
  ps_spool *spool;
  char dir[64];
  settle_rec s[MAX_BATCHES];
  int nb;
  ps_router_options opt; /* what setup starts the router with (now, or at start_router) */
} fixture;

/* A spool in a new temporary directory; max_bytes 0: the default bound. */
static ps_spool *open_spool(fixture *fx, uint64_t max_bytes) {
  snprintf(fx->dir, sizeof fx->dir, "/tmp/ps-router-XXXXXX");
  if (!mkdtemp(fx->dir))
    abort();
  ps_spool_options o = {fx->dir, max_bytes, 0, PS_SPOOL_FSYNC_NEVER};
  char err[256];
  if (ps_spool_open(&o, &fx->spool, err, sizeof err) != 0) {
    fprintf(stderr, "  spool %s: %s\n", fx->dir, err);
    abort();
  }
  return fx->spool;
}

static ps_router_options default_options(void) {
  return (ps_router_options){.workers = 1,
                             .exchange = "events",
                             .dead_letter_exchange = "dlx",
                             .skipped_key = "skipped",
                             .window = 8,
                             .confirm_timeout_ms = 5000,
                             .spool = NULL};
}

/* with_spool: 0 none, 1 a spool, more: a spool of at most that many bytes. start: start the router now. */
static void setup(fixture *fx, const ps_router_options *opt, int with_spool, int start) {
  memset(fx, 0, sizeof *fx);
  atomic_store(&settle_order, 0);
  fx->f = fake_create();
  fx->q = ps_queue_create(MAX_BATCHES);
  ps_router_options o = *opt;
  if (with_spool)
    o.spool = open_spool(fx, with_spool > 1 ? (uint64_t)with_spool : 0);
  for (int i = 0; i < MAX_BATCHES; i++)
    fx->s[i].f = fx->f;
  fx->opt = o;
  if (start)
    fx->r = ps_router_start(&o, fx->q, &fx->f->base);
}

/* Starts the router of a fixture set up with start 0 (so that what is queued already is there at its first pop). */
static void start_router(fixture *fx) { fx->r = ps_router_start(&fx->opt, fx->q, &fx->f->base); }

/* The router, stopped; the fake left as it is (so that the test can read it). */
static int stop_router(fixture *fx, int64_t deadline_ns) {
  ps_queue_close(fx->q);
  int rc = ps_router_stop(fx->r, deadline_ns);
  fx->r = NULL;
  return rc;
}

/* Frees everything, whatever state a failed check left it in. */
static void teardown(fixture *fx) {
  if (fx->r) { /* let it drain: a healthy broker */
    pthread_mutex_lock(&fx->f->mu);
    fx->f->down = 0;
    fx->f->mode = FAKE_ACK;
    fx->f->nack_next = 0;
    fx->f->nunroutable = 0;
    fx->f->never_exchange = NULL;
    pthread_mutex_unlock(&fx->f->mu);
    stop_router(fx, ps_now_ns() + 3000000000LL);
  }
  ps_queue_close(fx->q);
  void *item;
  while (ps_queue_pop(fx->q, &item, 1, 0) == 1)
    ps_batch_destroy(item);
  ps_queue_destroy(fx->q);
  ps_spool_close(fx->spool);
  if (fx->dir[0])
    ps_test_rmtree(fx->dir);
  fake_free(fx->f);
}

/* Queues batch i (session "s<i>") of types, with a settled callback (or none). */
static void push(fixture *fx, const char *types, int with_settled) {
  char session[16];
  snprintf(session, sizeof session, "s%d", fx->nb);
  ps_batch *b = make_batch(session, types, with_settled ? &fx->s[fx->nb] : NULL);
  fx->nb++;
  if (ps_queue_push(fx->q, b, ps_now_ns() + 1000000000LL) != 0)
    abort();
}

static int settled_count(fixture *fx) {
  int n = 0;
  for (int i = 0; i < fx->nb; i++)
    n += atomic_load(&fx->s[i].count) > 0;
  return n;
}

/*
 * Runs a test body with a fixture set up and torn down around it, whatever the body's checks did.
 * ROUTER_TEST starts the router before the body; ROUTER_TEST_LATE leaves it to the body (start_router).
 */
#define ROUTER_TEST_(name, opt_expr, with_spool, start)                                                    \
  static void name##_body(fixture *fx);                                                                    \
  PS_TEST(name) {                                                                                          \
    fixture *fx = calloc(1, sizeof *fx);                                                                   \
    ps_router_options o = opt_expr;                                                                        \
    setup(fx, &o, with_spool, start);                                                                      \
    name##_body(fx);                                                                                       \
    teardown(fx);                                                                                          \
    free(fx);                                                                                              \
  }                                                                                                        \
  static void name##_body(fixture *fx)
#define ROUTER_TEST(name, opt_expr, with_spool) ROUTER_TEST_(name, opt_expr, with_spool, 1)
#define ROUTER_TEST_LATE(name, opt_expr, with_spool) ROUTER_TEST_(name, opt_expr, with_spool, 0)

static ps_router_options with_window(int window) {
  ps_router_options o = default_options();
  o.window = window;
  return o;
}

static ps_router_options with_confirm_timeout(int ms) {
  ps_router_options o = default_options();
  o.confirm_timeout_ms = ms;
  return o;
}

/* ---------------------------------------------------------------- (a) all acked */

/* Checks what the fake recorded for n batches "CLC" (one click message, one launch message each). */
static void check_clc_messages(fixture *fx, int n) {
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 2 * n);
  char id0[32], id1[32], id2[32];
  for (int b = 0; b < n; b++) {
    snprintf(id0, sizeof id0, "\"s%d-e0\"", b);
    snprintf(id1, sizeof id1, "\"s%d-e1\"", b);
    snprintf(id2, sizeof id2, "\"s%d-e2\"", b);
    int clicks = 0, launches = 0;
    for (size_t i = 0; i < fake_nrecs(fx->f); i++) {
      fake_rec r = fake_rec_at(fx->f, i);
      if (!strstr(r.body, id0) && !strstr(r.body, id1))
        continue;
      PS_CHECK_STR_EQ(r.exchange, "events");
      PS_CHECK_INT_EQ(r.mandatory, 1);
      PS_CHECK_INT_EQ(r.persistent, 1);
      PS_CHECK_STR_EQ(r.content_type, "application/json");
      PS_CHECK_INT_EQ(r.timestamp, 1700000000);
      PS_CHECK(r.message_id[0] != '\0');
      if (strcmp(r.routing_key, "ClickEvent") == 0) {
        clicks++;
        PS_CHECK_MSG(strstr(r.body, id0) && strstr(r.body, id2) && !strstr(r.body, id1), "click message %s",
                     r.body);
      } else {
        PS_CHECK_STR_EQ(r.routing_key, "LaunchEvent");
        launches++;
        PS_CHECK_MSG(strstr(r.body, id1) && !strstr(r.body, id0) && !strstr(r.body, id2), "launch message %s",
                     r.body);
      }
    }
    PS_CHECK_MSG(clicks == 1 && launches == 1, "batch %d: %d click and %d launch messages", b, clicks, launches);
  }
  for (size_t i = 0; i < fake_nrecs(fx->f); i++)
    for (size_t j = i + 1; j < fake_nrecs(fx->f); j++) {
      fake_rec a = fake_rec_at(fx->f, i), c = fake_rec_at(fx->f, j);
      PS_CHECK_MSG(strcmp(a.message_id, c.message_id) != 0, "message id %s used twice", a.message_id);
    }
}

static void check_settled_once_in_order(fixture *fx, int rc) {
  for (int i = 0; i < fx->nb; i++) {
    PS_CHECK_MSG(atomic_load(&fx->s[i].count) == 1, "batch %d settled %d times", i, atomic_load(&fx->s[i].count));
    PS_CHECK_MSG(fx->s[i].rc == rc, "batch %d settled with %d", i, fx->s[i].rc);
    PS_CHECK_MSG(fx->s[i].order == i, "batch %d settled %d-th", i, fx->s[i].order);
  }
}

ROUTER_TEST(all_acked_each_batch_settles_once_one_message_per_type, default_options(), 0) {
  int64_t msgs0 = PS_METRIC_GET(messages_published_total), events0 = PS_METRIC_GET(events_published_total);
  int64_t unconfirmed0 = PS_METRIC_GET(publish_unconfirmed);
  for (int i = 0; i < 5; i++)
    push(fx, "CLC", 1);
  WAIT_UNTIL(settled_count(fx) == 5, 1500);
  PS_CHECK_INT_EQ(settled_count(fx), 5);
  for (int i = 0; i < 5; i++) /* each only once both of its messages were acked */
    PS_CHECK_MSG(fx->s[i].acks_at >= (size_t)(2 * (i + 1)), "batch %d settled after %zu acks", i, fx->s[i].acks_at);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  if (ps_test__failed_current)
    return;
  check_clc_messages(fx, 5);
  if (ps_test__failed_current)
    return;
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_published_total) - msgs0, 10);
  PS_CHECK_INT_EQ(PS_METRIC_GET(events_published_total) - events0, 15);
  PS_CHECK_INT_EQ(PS_METRIC_GET(publish_unconfirmed) - unconfirmed0, 0);
  PS_CHECK_INT_EQ(FAKE_GET(fx->f, connects), 1);
  PS_CHECK_INT_EQ(FAKE_GET(fx->f, open), 0);
}

ROUTER_TEST(multiple_acks_over_a_small_window_settle_everything, with_window(3), 0) {
  pthread_mutex_lock(&fx->f->mu);
  fx->f->multiple = 1;
  pthread_mutex_unlock(&fx->f->mu);
  int64_t msgs0 = PS_METRIC_GET(messages_published_total);
  for (int i = 0; i < 20; i++)
    push(fx, "CLC", 1);
  WAIT_UNTIL(settled_count(fx) == 20, 1500);
  PS_CHECK_INT_EQ(settled_count(fx), 20);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  if (ps_test__failed_current)
    return;
  check_clc_messages(fx, 20);
  if (ps_test__failed_current)
    return;
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_published_total) - msgs0, 40);
}

static ps_router_options with_workers(int workers) {
  ps_router_options o = default_options();
  o.workers = workers;
  o.window = 4;
  return o;
}

ROUTER_TEST(several_workers_each_batch_settles_once, with_workers(3), 0) {
  int64_t msgs0 = PS_METRIC_GET(messages_published_total);
  for (int i = 0; i < 40; i++)
    push(fx, "CLC", 1);
  WAIT_UNTIL(settled_count(fx) == 40, 1500);
  PS_CHECK_INT_EQ(settled_count(fx), 40);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  for (int i = 0; i < fx->nb; i++) {
    PS_CHECK_MSG(atomic_load(&fx->s[i].count) == 1, "batch %d settled %d times", i, atomic_load(&fx->s[i].count));
    PS_CHECK_INT_EQ(fx->s[i].rc, 0);
  }
  check_clc_messages(fx, 40); /* message ids unique across workers too */
  if (ps_test__failed_current)
    return;
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_published_total) - msgs0, 80);
  PS_CHECK(FAKE_GET(fx->f, connects) >= 1 && FAKE_GET(fx->f, connects) <= 3); /* one connection per worker */
  PS_CHECK_INT_EQ(FAKE_GET(fx->f, open), 0);
}

static ps_router_options with_window_bytes(size_t bytes) {
  ps_router_options o = default_options();
  o.window = 64;
  o.window_bytes = bytes;
  o.confirm_timeout_ms = 300;
  return o;
}

/*
 * With nothing confirmed, the publisher stopped at the byte bound: fewer than max_msgs messages went out
 * (the count did not stop it), their bytes reach bound, and without the last one they did not.
 */
static void check_stopped_at_the_byte_bound(fake *f, size_t max_msgs, size_t bound) {
  size_t n = fake_nrecs(f), bytes = 0, last = 0;
  for (size_t i = 0; i < n; i++) {
    fake_rec r = fake_rec_at(f, i);
    bytes += r.len;
    last = r.len;
  }
  PS_CHECK_MSG(n > 1 && n < max_msgs, "%zu messages published unconfirmed", n);
  PS_CHECK_MSG(bytes >= bound && bytes - last < bound, "%zu bytes unconfirmed, the last message %zu", bytes,
               last);
}

ROUTER_TEST(a_byte_bound_on_the_window_holds_publishing_until_confirms_make_room, with_window_bytes(1500), 0) {
  fake_set_mode(fx->f, FAKE_NEVER);
  for (int i = 0; i < 20; i++)
    push(fx, "CLC", 1);
  WAIT_UNTIL(fake_nrecs(fx->f) > 0, 1500);
  ps_test_sleep_ms(100); /* the worker publishes what the bound lets it, then waits for confirms */
  /* 20 batches of 2 messages, 64 entries allowed: the bytes stopped it, right after reaching the bound. */
  check_stopped_at_the_byte_bound(fx->f, 40, 1500);
  PS_CHECK_INT_EQ(settled_count(fx), 0);
  /* Confirms come again: the unconfirmed ones time out and go again on a new connection, then the rest. */
  fake_set_mode(fx->f, FAKE_ACK);
  WAIT_UNTIL(settled_count(fx) == 20, 5000);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
}

/* ---------------------------------------------------------------- lots: batches published together */

static ps_router_options with_merge(int merge_batches) {
  ps_router_options o = default_options();
  o.merge_batches = merge_batches;
  o.window = 64;
  return o;
}

/* Queues a batch of session `session` whose event ids are "b<n>-e<i>" (n: its number in the test). */
static void push_session(fixture *fx, const char *session, const char *types) {
  char ids[16];
  snprintf(ids, sizeof ids, "b%d", fx->nb);
  ps_batch *b = make_batch_ids(session, ids, types, &fx->s[fx->nb]);
  fx->nb++;
  if (ps_queue_push(fx->q, b, ps_now_ns() + 1000000000LL) != 0)
    abort();
}

/* Whether body holds the event ids of the space-separated list ids, each once, in that order, and no other id. */
static int body_has_ids_in_order(const char *body, const char *ids) {
  char list[512], quoted[64];
  snprintf(list, sizeof list, "%s", ids);
  const char *at = body;
  int n = 0;
  for (char *save = NULL, *id = strtok_r(list, " ", &save); id; id = strtok_r(NULL, " ", &save), n++) {
    snprintf(quoted, sizeof quoted, "\"id\":\"%s\"", id);
    const char *p = strstr(at, quoted);
    if (!p || strstr(p + 1, quoted))
      return 0;
    at = p + 1;
  }
  int ids_in_body = 0;
  for (const char *p = strstr(body, "\"id\":"); p; p = strstr(p + 1, "\"id\":"))
    ids_in_body++;
  return ids_in_body == n;
}

/*
 * Starts the router on what is queued, waits until every batch settled (ms at most), stops it, checks
 * that each settled once, in order, with rc 0, and that the fake saw nrecs publishes (the caller looks at
 * ps_test__failed_current).
 */
static void run_queued(fixture *fx, int ms, size_t nrecs) {
  start_router(fx);
  WAIT_UNTIL(settled_count(fx) == fx->nb, ms);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), nrecs);
}

/* Queues three batches: session a "C", session b "CL", session a "CC". */
static void push_a_b_a(fixture *fx) {
  push_session(fx, "a", "C");
  push_session(fx, "b", "CL");
  push_session(fx, "a", "CC");
}

ROUTER_TEST_LATE(a_lot_of_batches_with_one_header_shares_one_message_per_type, with_merge(16), 0) {
  int64_t msgs0 = PS_METRIC_GET(messages_published_total), events0 = PS_METRIC_GET(events_published_total);
  push_session(fx, "dev", "CLC");
  push_session(fx, "dev", "CL");
  push_session(fx, "dev", "LLC");
  run_queued(fx, 1500, 2);
  if (ps_test__failed_current)
    return;
  for (int i = 0; i < 3; i++) /* the lot settles once both of its messages are acked */
    PS_CHECK_MSG(fx->s[i].acks_at >= 2, "batch %d settled after %zu acks", i, fx->s[i].acks_at);
  fake_rec click = fake_rec_at(fx->f, 0), launch = fake_rec_at(fx->f, 1);
  PS_CHECK_STR_EQ(click.routing_key, "ClickEvent");
  PS_CHECK_MSG(body_has_ids_in_order(click.body, "b0-e0 b0-e2 b1-e0 b2-e2"), "click message %s", click.body);
  PS_CHECK_STR_EQ(launch.routing_key, "LaunchEvent");
  PS_CHECK_MSG(body_has_ids_in_order(launch.body, "b0-e1 b1-e1 b2-e0 b2-e1"), "launch message %s", launch.body);
  PS_CHECK_MSG(strstr(click.body, "{\"header\":{\"sessionId\":\"dev\",\"userId\":\"42\"},\"events\":[") == click.body,
               "click message %s", click.body);
  PS_CHECK(strcmp(click.message_id, launch.message_id) != 0);
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_published_total) - msgs0, 2);
  PS_CHECK_INT_EQ(PS_METRIC_GET(events_published_total) - events0, 8);
}

ROUTER_TEST_LATE(batches_with_other_headers_get_messages_of_their_own, with_merge(16), 0) {
  push_a_b_a(fx);
  run_queued(fx, 1500, 3);
  if (ps_test__failed_current)
    return;
  fake_rec a = fake_rec_at(fx->f, 0), bc = fake_rec_at(fx->f, 1), bl = fake_rec_at(fx->f, 2);
  PS_CHECK_MSG(strstr(a.body, "\"sessionId\":\"a\"") && body_has_ids_in_order(a.body, "b0-e0 b2-e0 b2-e1"),
               "session a %s", a.body);
  PS_CHECK_MSG(strstr(bc.body, "\"sessionId\":\"b\"") && body_has_ids_in_order(bc.body, "b1-e0"), "session b %s",
               bc.body);
  PS_CHECK_MSG(strstr(bl.body, "\"sessionId\":\"b\"") && body_has_ids_in_order(bl.body, "b1-e1"), "session b %s",
               bl.body);
  PS_CHECK_STR_EQ(bl.routing_key, "LaunchEvent");
}

ROUTER_TEST_LATE(merge_batches_1_publishes_each_batch_on_its_own, with_merge(1), 0) {
  for (int i = 0; i < 3; i++)
    push_session(fx, "dev", "CC");
  run_queued(fx, 1500, 3);
  if (ps_test__failed_current)
    return;
  for (int i = 0; i < 3; i++) {
    char ids[32];
    snprintf(ids, sizeof ids, "b%d-e0 b%d-e1", i, i);
    fake_rec r = fake_rec_at(fx->f, (size_t)i);
    PS_CHECK_MSG(body_has_ids_in_order(r.body, ids), "message %d: %s", i, r.body);
  }
}

ROUTER_TEST_LATE(a_merged_message_takes_whole_groups_up_to_1000_events, with_merge(64), 0) {
  char fifty[51];
  memset(fifty, 'C', 50);
  fifty[50] = '\0';
  for (int i = 0; i < 25; i++) /* 1,250 events: 20 batches (1,000 events), then 5 */
    push_session(fx, "dev", fifty);
  run_queued(fx, 3000, 2);
  if (ps_test__failed_current)
    return;
  fake_rec m0 = fake_rec_at(fx->f, 0), m1 = fake_rec_at(fx->f, 1);
  int n0 = 0, n1 = 0;
  for (const char *p = strstr(m0.body, "\"id\":"); p; p = strstr(p + 1, "\"id\":"))
    n0++;
  for (const char *p = strstr(m1.body, "\"id\":"); p; p = strstr(p + 1, "\"id\":"))
    n1++;
  PS_CHECK_INT_EQ(n0, 1000);
  PS_CHECK_INT_EQ(n1, 250);
  PS_CHECK(strstr(m0.body, "\"b19-e49\"") && !strstr(m0.body, "\"b20-e0\""));
  PS_CHECK(strstr(m1.body, "\"b20-e0\"") && strstr(m1.body, "\"b24-e49\""));
}

ROUTER_TEST_LATE(a_nacked_merged_message_is_sent_again_and_its_lot_settles_once, with_merge(16), 0) {
  pthread_mutex_lock(&fx->f->mu);
  fx->f->nack_next = 1;
  pthread_mutex_unlock(&fx->f->mu);
  push_session(fx, "dev", "CL");
  push_session(fx, "dev", "LC");
  run_queued(fx, 1500, 3); /* click (nacked), launch, click again */
  if (ps_test__failed_current)
    return;
  fake_rec first = fake_rec_at(fx->f, 0), again = fake_rec_at(fx->f, 2);
  PS_CHECK_STR_EQ(first.message_id, again.message_id);
  PS_CHECK_MSG(body_has_ids_in_order(again.body, "b0-e0 b1-e1"), "resent %s", again.body);
  for (int i = 0; i < 2; i++) /* settled only after the resent message was acked */
    PS_CHECK_MSG(fx->s[i].recs_at == 3, "batch %d settled after %zu publishes", i, fx->s[i].recs_at);
}

ROUTER_TEST_LATE(a_lot_given_up_at_the_deadline_refuses_every_batch_of_it, with_merge(16), 0) {
  fake_set_down(fx->f, 1);
  push_session(fx, "dev", "C");
  push_session(fx, "dev", "CL");
  start_router(fx);
  ps_test_sleep_ms(50);
  PS_CHECK_INT_EQ(settled_count(fx), 0); /* held: no spool, no broker */
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 100000000LL), 0);
  for (int i = 0; i < 2; i++) {
    PS_CHECK_MSG(atomic_load(&fx->s[i].count) == 1, "batch %d settled %d times", i, atomic_load(&fx->s[i].count));
    PS_CHECK_INT_EQ(fx->s[i].rc, PS_ETIMEDOUT);
  }
}

static ps_router_options with_packed_lot(int merge_batches) {
  ps_router_options o = with_merge(merge_batches);
  o.format = PS_PUBLISH_PACKED;
  return o;
}

static ps_router_options with_packed(void) { return with_packed_lot(16); }

/* Publishes push_a_b_a's three batches as one lot: the click message into *c, the launch message into *l, each
   checked for its routing key and content_type (a failed check marks the test failed). */
static void run_a_b_a(fixture *fx, fake_rec *c, fake_rec *l, const char *content_type) {
  push_a_b_a(fx);
  run_queued(fx, 1500, 2);
  if (ps_test__failed_current)
    return;
  *c = fake_rec_at(fx->f, 0);
  *l = fake_rec_at(fx->f, 1);
  PS_CHECK_STR_EQ(c->routing_key, "ClickEvent");
  PS_CHECK_STR_EQ(c->content_type, content_type);
  PS_CHECK_STR_EQ(l->routing_key, "LaunchEvent");
  PS_CHECK_STR_EQ(l->content_type, content_type);
}

ROUTER_TEST_LATE(packed_one_message_per_type_for_the_lot_one_line_per_header, with_packed(), 0) {
  fake_rec c, l;
  run_a_b_a(fx, &c, &l, PS_CONTENT_TYPE_PACKED);
  if (ps_test__failed_current)
    return;
  char *nl = strchr(c.body, '\n');
  PS_CHECK_MSG(nl && nl[1] && strchr(nl + 1, '\n') && !strchr(nl + 1, '\n')[1], "two lines: %s", c.body);
  if (ps_test__failed_current)
    return;
  *nl = '\0';
  PS_CHECK_MSG(strstr(c.body, "\"sessionId\":\"a\"") && body_has_ids_in_order(c.body, "b0-e0 b2-e0 b2-e1"),
               "line 1: %s", c.body);
  PS_CHECK_MSG(strstr(nl + 1, "\"sessionId\":\"b\"") && body_has_ids_in_order(nl + 1, "b1-e0"), "line 2: %s",
               nl + 1);
  PS_CHECK_MSG(strstr(l.body, "\"sessionId\":\"b\"") && body_has_ids_in_order(l.body, "b1-e1") &&
                   strchr(l.body, '\n') == l.body + strlen(l.body) - 1,
               "launch: %s", l.body);
}

static ps_router_options with_protobuf(void) {
  ps_router_options o = with_packed_lot(16);
  o.format = PS_PUBLISH_PROTOBUF;
  return o;
}

/* The delimited binary Events of a PUBLISH_FORMAT=protobuf body, unpacked into ev[0..max); how many, or -1 if the
   body is not exactly a sequence of them. */
static int delimited_events(const fake_rec *r, Event__Events **ev, int max) {
  const uint8_t *p = (const uint8_t *)r->body, *end = p + r->len;
  int n = 0;
  while (p < end && n < max) {
    size_t len = 0;
    int shift = 0;
    while (p < end && (*p & 0x80)) {
      len |= (size_t)(*p++ & 0x7f) << shift;
      shift += 7;
    }
    if (p == end)
      return -1;
    len |= (size_t)*p++ << shift;
    if (len > (size_t)(end - p) || !(ev[n] = event__events__unpack(NULL, len, p)))
      return -1;
    n++;
    p += len;
  }
  return p == end ? n : -1;
}

/* The click and launch messages of push_a_b_a's lot in PUBLISH_FORMAT=protobuf: one delimited Events per header,
   in order, holding that header and its batches' events of the type, batch after batch. */
static void check_a_b_a_delimited(const fake_rec *c, const fake_rec *l) {
  Event__Events *ev[4] = {NULL};
  PS_CHECK_INT_EQ(delimited_events(c, ev, 4), 2);
  if (!ps_test__failed_current) {
    PS_CHECK_STR_EQ(ev[0]->header->sessionid, "a");
    PS_CHECK_INT_EQ(ev[0]->header->userid, 42);
    PS_CHECK_INT_EQ(ev[0]->n_events, 3);
    PS_CHECK_STR_EQ(ev[0]->events[0]->id, "b0-e0");
    PS_CHECK_STR_EQ(ev[0]->events[1]->id, "b2-e0");
    PS_CHECK_STR_EQ(ev[0]->events[2]->id, "b2-e1");
    PS_CHECK(ev[0]->events[2]->event_of_case == EVENT__EVENT__EVENT_OF_CLICK_EVENT);
    PS_CHECK_STR_EQ(ev[1]->header->sessionid, "b");
    PS_CHECK_INT_EQ(ev[1]->n_events, 1);
    PS_CHECK_STR_EQ(ev[1]->events[0]->id, "b1-e0");
  }
  for (int i = 0; i < 4; i++)
    if (ev[i])
      event__events__free_unpacked(ev[i], NULL);
  Event__Events *lv[2] = {NULL};
  PS_CHECK_INT_EQ(delimited_events(l, lv, 2), 1);
  if (lv[0]) {
    PS_CHECK_STR_EQ(lv[0]->header->sessionid, "b");
    PS_CHECK_STR_EQ(lv[0]->events[0]->id, "b1-e1");
    event__events__free_unpacked(lv[0], NULL);
  }
}

ROUTER_TEST_LATE(protobuf_packs_as_packed_does_with_binary_length_delimited_events, with_protobuf(), 0) {
  fake_rec c, l;
  run_a_b_a(fx, &c, &l, PS_CONTENT_TYPE_PACKED_PB);
  if (ps_test__failed_current)
    return;
  check_a_b_a_delimited(&c, &l);
}

/*
 * Pushes a batch of push_session's kind that kept its request (as dispatch does with PUBLISH_FORMAT=protobuf):
 * the request is its message packed, plus, with extra, an unknown top-level field (number 15, 2 bytes). Then
 * every event id in the message is changed to "<id>-unpacked": an id that reaches the broker with that suffix
 * was packed again from the message, one without it was copied from the request.
 */
static void push_session_wire(fixture *fx, const char *session, const char *types, int extra) {
  char ids[16];
  snprintf(ids, sizeof ids, "b%d", fx->nb);
  ps_batch *b = make_batch_ids(session, ids, types, &fx->s[fx->nb]);
  fx->nb++;
  size_t len = event__events__get_packed_size(b->msg);
  uint8_t *w = ps_arena_alloc(b->arena, len + 4);
  event__events__pack(b->msg, w);
  if (extra) {
    static const uint8_t field15[] = {15 << 3 | 2, 2, 'x', 'y'};
    memcpy(w + len, field15, sizeof field15);
    len += sizeof field15;
  }
  b->wire = w;
  b->wire_len = len;
  for (size_t i = 0; i < b->msg->n_events; i++) {
    char id[80];
    snprintf(id, sizeof id, "%s-unpacked", b->msg->events[i]->id);
    b->msg->events[i]->id = arena_str(b->arena, id);
  }
  if (ps_queue_push(fx->q, b, ps_now_ns() + 1000000000LL) != 0)
    abort();
}

/* With the requests kept, the events' own bytes are published: the same Events, per header and type, in order. */
ROUTER_TEST_LATE(protobuf_publishes_the_requests_own_event_bytes, with_protobuf(), 0) {
  push_session_wire(fx, "a", "C", 0);
  push_session_wire(fx, "b", "CL", 0);
  push_session_wire(fx, "a", "CC", 0);
  run_queued(fx, 1500, 2);
  if (ps_test__failed_current)
    return;
  fake_rec c = fake_rec_at(fx->f, 0), l = fake_rec_at(fx->f, 1);
  PS_CHECK_STR_EQ(c.content_type, PS_CONTENT_TYPE_PACKED_PB);
  check_a_b_a_delimited(&c, &l);
}

/* A request with a top-level field that is neither header nor events cannot be cut into records: its lot is
   packed again from the messages, as without a request. */
ROUTER_TEST_LATE(protobuf_packs_again_a_lot_whose_request_has_other_fields, with_protobuf(), 0) {
  push_session_wire(fx, "a", "C", 0);
  push_session_wire(fx, "a", "C", 1);
  run_queued(fx, 1500, 1);
  if (ps_test__failed_current)
    return;
  fake_rec c = fake_rec_at(fx->f, 0);
  Event__Events *ev[2] = {NULL};
  PS_CHECK_INT_EQ(delimited_events(&c, ev, 2), 1);
  if (ev[0]) {
    PS_CHECK_INT_EQ(ev[0]->n_events, 2);
    PS_CHECK_STR_EQ(ev[0]->events[0]->id, "b0-e0-unpacked");
    PS_CHECK_STR_EQ(ev[0]->events[1]->id, "b1-e0-unpacked");
    event__events__free_unpacked(ev[0], NULL);
  }
}

/* Whether body has n lines, each one Events of 50 events. */
static int lines_of_50(const char *body, int n) {
  int lines = 0;
  for (const char *p = body; *p; lines++) {
    const char *nl = strchr(p, '\n');
    if (!nl)
      return 0;
    int ids = 0;
    for (const char *q = strstr(p, "\"id\":"); q && q < nl; q = strstr(q + 1, "\"id\":"))
      ids++;
    if (ids != 50)
      return 0;
    p = nl + 1;
  }
  return lines == n;
}

/* Packed: a message takes whole header lines up to 1000 events; the next line starts a new message. */
ROUTER_TEST_LATE(packed_messages_take_whole_lines_up_to_1000_events, with_packed_lot(64), 0) {
  char fifty[51], session[16];
  memset(fifty, 'C', 50);
  fifty[50] = '\0';
  for (int i = 0; i < 25; i++) { /* 25 headers of 50 clicks: 20 lines (1,000 events), then 5 */
    snprintf(session, sizeof session, "s%d", i);
    push_session(fx, session, fifty);
  }
  run_queued(fx, 3000, 2);
  if (ps_test__failed_current)
    return;
  fake_rec m0 = fake_rec_at(fx->f, 0), m1 = fake_rec_at(fx->f, 1);
  PS_CHECK_MSG(lines_of_50(m0.body, 20), "first message: %.200s", m0.body);
  PS_CHECK_MSG(lines_of_50(m1.body, 5), "second message: %.200s", m1.body);
  PS_CHECK(strstr(m0.body, "\"b19-e49\"") && !strstr(m0.body, "\"b20-e0\""));
  PS_CHECK(strstr(m1.body, "\"b20-e0\"") && strstr(m1.body, "\"b24-e49\""));
}

/* ---------------------------------------------------------------- lingering: waiting for a short lot to fill */

static ps_router_options with_linger(int merge_batches, int linger_ms) {
  ps_router_options o = with_merge(merge_batches);
  o.linger_ms = linger_ms;
  return o;
}

/* Queues a batch of session "dev" and waits until the worker took it from the queue (the queue's only taker). */
static void push_taken(fixture *fx, const char *types) {
  push_session(fx, "dev", types);
  WAIT_UNTIL(ps_queue_len(fx->q) == 0, 2000);
  PS_CHECK_INT_EQ(ps_queue_len(fx->q), 0);
}

/* Lots of 2 and a linger of a minute: the worker holds the first batch until the second fills its lot. */
ROUTER_TEST(a_short_lot_waits_for_the_batch_that_fills_it, with_linger(2, 60000), 0) {
  push_taken(fx, "CL");
  ps_test_sleep_ms(20);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 0); /* lingering */
  push_session(fx, "dev", "LC");
  WAIT_UNTIL(settled_count(fx) == 2, 2000); /* the full lot goes at once, not after the minute */
  PS_CHECK_INT_EQ(settled_count(fx), 2);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 2); /* one message per type for both batches */
  if (ps_test__failed_current)
    return;
  fake_rec c = fake_rec_at(fx->f, 0), l = fake_rec_at(fx->f, 1);
  PS_CHECK_MSG(body_has_ids_in_order(c.body, "b0-e0 b1-e1"), "click message %s", c.body);
  PS_CHECK_MSG(body_has_ids_in_order(l.body, "b0-e1 b1-e0"), "launch message %s", l.body);
}

/* The same without lingering: the first batch is published on its own before the second comes. */
ROUTER_TEST(without_lingering_a_short_lot_is_published_at_once, with_linger(2, 0), 0) {
  push_taken(fx, "CL");
  WAIT_UNTIL(fake_nrecs(fx->f) == 2, 2000);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 2);
  push_session(fx, "dev", "LC");
  WAIT_UNTIL(settled_count(fx) == 2, 2000);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 4);
}

/* A lot that does not fill is published when the linger ends. */
ROUTER_TEST(a_short_lot_is_published_when_the_linger_ends, with_linger(16, 300), 0) {
  push_taken(fx, "CL");
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 0); /* lingering */
  WAIT_UNTIL(settled_count(fx) == 1, 3000);
  PS_CHECK_INT_EQ(settled_count(fx), 1);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 2);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
}

/* Stopping closes the queue, which ends a linger at once: the batch is published and settles. */
ROUTER_TEST(stopping_ends_a_linger_and_publishes_the_short_lot, with_linger(16, 60000), 0) {
  push_taken(fx, "CL");
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 0); /* lingering */
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 5000000000LL), 0);
  PS_CHECK_MSG(ms_since(t0) < 1000, "stopped after %" PRId64 " ms", ms_since(t0));
  check_settled_once_in_order(fx, 0);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 2);
}

PS_TEST(message_ids_are_instance_worker_and_number) {
  char id[64];
  ps_router_message_id(id, 0x0123456789abcdefULL, "12", 0);
  PS_CHECK_STR_EQ(id, "0123456789abcdef-12-0");
  ps_router_message_id(id, 0, "o", UINT64_MAX);
  PS_CHECK_STR_EQ(id, "0000000000000000-o-18446744073709551615");
  ps_router_message_id(id, UINT64_MAX, "3", 1000);
  PS_CHECK_STR_EQ(id, "ffffffffffffffff-3-1000");
  ps_router_message_id(id, 1, "abcdefghijklmnopqrstuvwxyz", UINT64_MAX); /* who cut to 23 bytes; fits 64 */
  PS_CHECK_STR_EQ(id, "0000000000000001-abcdefghijklmnopqrstuvw-18446744073709551615");
}

ROUTER_TEST_LATE(in_a_lot_each_batch_dead_letters_its_own_events_without_a_type, with_merge(16), 0) {
  push_session(fx, "dev", "NC");
  push_session(fx, "dev", "CN");
  run_queued(fx, 1500, 3); /* a dead letter per batch, then one click message for both */
  if (ps_test__failed_current)
    return;
  fake_rec d0 = fake_rec_at(fx->f, 0), d1 = fake_rec_at(fx->f, 1), c = fake_rec_at(fx->f, 2);
  PS_CHECK_STR_EQ(d0.exchange, "dlx");
  PS_CHECK_STR_EQ(d1.exchange, "dlx");
  PS_CHECK_MSG(strstr(d0.body, "b0-e0") && !strstr(d0.body, "b1-e1"), "dead letter 0 holds batch 0's event");
  PS_CHECK_MSG(strstr(d1.body, "b1-e1") && !strstr(d1.body, "b0-e0"), "dead letter 1 holds batch 1's event");
  PS_CHECK_STR_EQ(c.routing_key, "ClickEvent");
  PS_CHECK_MSG(body_has_ids_in_order(c.body, "b0-e1 b1-e0"), "click message %s", c.body);
}

ROUTER_TEST(events_without_a_type_are_dead_lettered_as_one_message, default_options(), 0) {
  int64_t events0 = PS_METRIC_GET(events_published_total);
  push(fx, "NCN", 1);
  WAIT_UNTIL(settled_count(fx) == 1, 1500);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  if (ps_test__failed_current)
    return;
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 2);
  fake_rec dl = fake_rec_at(fx->f, 0), click = fake_rec_at(fx->f, 1);
  PS_CHECK_STR_EQ(dl.exchange, "dlx");
  PS_CHECK_STR_EQ(dl.routing_key, "skipped");
  PS_CHECK_STR_EQ(dl.content_type, "application/x-protobuf");
  PS_CHECK_STR_EQ(rec_header(&dl, "x-penstock-reason"), "skipped at dispatch: no payload");
  Event__Events *ev = event__events__unpack(NULL, dl.len, (const uint8_t *)dl.body);
  PS_CHECK(ev != NULL);
  int ok = ev->n_events == 2 && strcmp(ev->events[0]->id, "s0-e0") == 0 && strcmp(ev->events[1]->id, "s0-e2") == 0;
  event__events__free_unpacked(ev, NULL);
  PS_CHECK_MSG(ok, "the dead letter holds the two untyped events");
  PS_CHECK_STR_EQ(click.routing_key, "ClickEvent");
  PS_CHECK_INT_EQ(PS_METRIC_GET(events_published_total) - events0, 1);
}

/* ---------------------------------------------------------------- (b) a nack */

ROUTER_TEST(a_nacked_message_is_published_again_and_settles_after_its_ack, default_options(), 0) {
  pthread_mutex_lock(&fx->f->mu);
  fx->f->nack_next = 1;
  pthread_mutex_unlock(&fx->f->mu);
  int64_t nacks0 = PS_METRIC_GET(publish_nacks_total), msgs0 = PS_METRIC_GET(messages_published_total);
  push(fx, "CL", 1);
  WAIT_UNTIL(settled_count(fx) == 1, 1500);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  if (ps_test__failed_current)
    return;
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 3);
  fake_rec first = fake_rec_at(fx->f, 0), launch = fake_rec_at(fx->f, 1), again = fake_rec_at(fx->f, 2);
  PS_CHECK_STR_EQ(first.routing_key, "ClickEvent");
  PS_CHECK_INT_EQ(first.outcome, 'N');
  PS_CHECK_STR_EQ(launch.routing_key, "LaunchEvent");
  PS_CHECK_STR_EQ(again.routing_key, "ClickEvent");
  PS_CHECK_STR_EQ(again.message_id, first.message_id); /* the same message, again */
  PS_CHECK_STR_EQ(again.body, first.body);
  PS_CHECK_INT_EQ(again.conn, first.conn); /* on the same connection: a nack is not a lost connection */
  PS_CHECK_INT_EQ(again.outcome, 'A');
  /* Settled only once the re-publish was acked. */
  PS_CHECK_INT_EQ(fx->s[0].recs_at, 3);
  PS_CHECK_INT_EQ(fx->s[0].acks_at, 2);
  PS_CHECK_INT_EQ(PS_METRIC_GET(publish_nacks_total) - nacks0, 1);
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_published_total) - msgs0, 2);
}

/* ---------------------------------------------------------------- (c) a returned message */

static void check_returned_launch(fixture *fx, int batches) {
  /* Per batch "CL": the click, the launch (returned), the launch's dead letter. */
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 3 * batches);
  int dls = 0;
  for (size_t i = 0; i < fake_nrecs(fx->f); i++) {
    fake_rec r = fake_rec_at(fx->f, i);
    if (strcmp(r.exchange, "dlx") != 0)
      continue;
    dls++;
    /* Its original: the returned launch message of the same id. */
    fake_rec orig;
    memset(&orig, 0, sizeof orig);
    for (size_t j = 0; j < i; j++) {
      fake_rec o = fake_rec_at(fx->f, j);
      if (strcmp(o.message_id, r.message_id) == 0 && strcmp(o.exchange, "events") == 0)
        orig = o;
    }
    PS_CHECK_MSG(orig.exchange[0], "dead letter %zu (id %s) has no original", i, r.message_id);
    PS_CHECK_STR_EQ(orig.routing_key, "LaunchEvent");
    PS_CHECK_INT_EQ(orig.outcome, 'R');
    PS_CHECK_STR_EQ(r.routing_key, "skipped");
    const char *why = rec_header(&r, "x-penstock-reason");
    PS_CHECK_MSG(why && strncmp(why, "unroutable", 10) == 0, "reason: %s", why ? why : "(none)");
    PS_CHECK_MSG(strstr(why, "LaunchEvent") && strstr(why, "events"), "reason: %s", why);
    PS_CHECK_STR_EQ(rec_header(&r, "x-penstock-routing-key"), "LaunchEvent");
    PS_CHECK_STR_EQ(rec_header(&r, "x-penstock-message-id"), orig.message_id);
    PS_CHECK_STR_EQ(rec_header(&r, "x-penstock-consumer"), "dispatch");
    PS_CHECK_INT_EQ(r.len, orig.len);
    PS_CHECK_STR_EQ(r.body, orig.body);
    PS_CHECK_STR_EQ(r.content_type, "application/json");
    PS_CHECK_INT_EQ(r.persistent, 1);
    PS_CHECK_INT_EQ(r.outcome, 'A');
  }
  PS_CHECK_INT_EQ(dls, batches);
}

/* Window 1 first: the dead letter then takes the very slot of the message it replaces. */
ROUTER_TEST(a_returned_message_is_dead_lettered_window_1, with_window(1), 0) {
  pthread_mutex_lock(&fx->f->mu);
  fx->f->unroutable[fx->f->nunroutable++] = "LaunchEvent";
  pthread_mutex_unlock(&fx->f->mu);
  int64_t returned0 = PS_METRIC_GET(messages_returned_total), msgs0 = PS_METRIC_GET(messages_published_total);
  /* The log, to read the router's warning (the first dead letter of the process is logged). */
  char log[4096] = "";
  int saved = ps_test_capture_stderr_begin();
  push(fx, "CL", 1);
  WAIT_UNTIL(settled_count(fx) == 1, 1500);
  int stop_rc = stop_router(fx, ps_now_ns() + 1000000000LL);
  ps_test_capture_stderr_end(saved, log, sizeof log);
  fputs(log, stderr);
  PS_CHECK_INT_EQ(stop_rc, 0);
  check_settled_once_in_order(fx, 0);
  if (ps_test__failed_current)
    return;
  PS_CHECK_MSG(strstr(log, "dead-lettered exchange=events routing_key=LaunchEvent"),
               "the warning names the returned message's routing key; the log was:\n%s", log);
  check_returned_launch(fx, 1);
  if (ps_test__failed_current)
    return;
  /* Settled after the dead letter was acked: all three acks reported by then. */
  PS_CHECK_INT_EQ(fx->s[0].recs_at, 3);
  PS_CHECK_INT_EQ(fx->s[0].acks_at, 3);
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_returned_total) - returned0, 1);
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_published_total) - msgs0, 1); /* the click only */
}

ROUTER_TEST(a_returned_message_is_dead_lettered, default_options(), 0) {
  pthread_mutex_lock(&fx->f->mu);
  fx->f->unroutable[fx->f->nunroutable++] = "LaunchEvent";
  pthread_mutex_unlock(&fx->f->mu);
  int64_t returned0 = PS_METRIC_GET(messages_returned_total);
  for (int i = 0; i < 4; i++)
    push(fx, "CL", 1);
  WAIT_UNTIL(settled_count(fx) == 4, 1500);
  PS_CHECK_INT_EQ(settled_count(fx), 4);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  for (int i = 0; i < fx->nb; i++) {
    PS_CHECK_INT_EQ(atomic_load(&fx->s[i].count), 1);
    PS_CHECK_INT_EQ(fx->s[i].rc, 0);
  }
  check_returned_launch(fx, 4);
  if (ps_test__failed_current)
    return;
  /* Each batch settled only after its dead letter was acked. */
  for (int i = 0; i < fx->nb; i++) {
    char id1[32];
    snprintf(id1, sizeof id1, "\"s%d-e1\"", i);
    size_t dl_at = 0;
    for (size_t k = 0; k < fake_nrecs(fx->f); k++) {
      fake_rec r = fake_rec_at(fx->f, k);
      if (strcmp(r.exchange, "dlx") == 0 && strstr(r.body, id1))
        dl_at = k + 1;
    }
    PS_CHECK_MSG(dl_at && fx->s[i].recs_at >= dl_at, "batch %d settled when %zu were published, its dead letter is #%zu",
                 i, fx->s[i].recs_at, dl_at);
  }
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_returned_total) - returned0, 4);
}

/* ---------------------------------------------------------------- (d) down, with a spool */

ROUTER_TEST(broker_down_with_a_spool_batches_settle_once_spooled, default_options(), 1) {
  fake_set_down(fx->f, 1);
  int64_t spooled0 = PS_METRIC_GET(messages_spooled_total), events0 = PS_METRIC_GET(events_spooled_total);
  int64_t t0 = ps_now_ns();
  for (int i = 0; i < 3; i++)
    push(fx, "CLC", 1);
  WAIT_UNTIL(settled_count(fx) == 3, 1500);
  PS_CHECK_MSG(settled_count(fx) == 3, "%d of 3 settled", settled_count(fx));
  PS_CHECK_MSG(ms_since(t0) < 1000, "settling took %lld ms", (long long)ms_since(t0));
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  if (ps_test__failed_current)
    return;
  PS_CHECK(FAKE_GET(fx->f, connect_attempts) >= 1);
  PS_CHECK_INT_EQ(FAKE_GET(fx->f, connects), 0);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 0);
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_spooled_total) - spooled0, 6);
  PS_CHECK_INT_EQ(PS_METRIC_GET(events_spooled_total) - events0, 9);
  ps_spool_stats st;
  ps_spool_stats_get(fx->spool, &st);
  PS_CHECK_INT_EQ(st.records, 6);
  /* The records are the messages the batches would have published, in order. */
  char ids[6][128];
  for (int i = 0; i < 6; i++) {
    const void *data;
    size_t len;
    ps_spool_pos end;
    PS_CHECK_INT_EQ(ps_spool_next(fx->spool, &data, &len, &end), 0);
    ps_message m;
    ps_broker_arg h[PS_INFLIGHT_MAX_HEADERS];
    void *own = NULL;
    PS_CHECK_INT_EQ(ps_message_unpack(data, len, &m, h, &own), 0);
    char e0[32];
    snprintf(e0, sizeof e0, "\"s%d-e%d\"", i / 2, i % 2);
    char body[4096];
    snprintf(body, sizeof body, "%.*s", (int)m.len, (const char *)m.body);
    int ok = strcmp(m.exchange, "events") == 0 && strcmp(m.routing_key, i % 2 ? "LaunchEvent" : "ClickEvent") == 0 &&
             m.mandatory == 1 && m.persistent == 1 && m.content_type &&
             strcmp(m.content_type, "application/json") == 0 && m.message_id && m.timestamp == 1700000000 &&
             strstr(body, e0) != NULL;
    snprintf(ids[i], sizeof ids[i], "%s", m.message_id ? m.message_id : "");
    ps_message_unpacked_free(own);
    PS_CHECK_MSG(ok, "record %d: %s", i, body);
    for (int j = 0; j < i; j++)
      PS_CHECK(strcmp(ids[i], ids[j]) != 0);
  }
  const void *data;
  size_t len;
  ps_spool_pos end;
  PS_CHECK_INT_EQ(ps_spool_next(fx->spool, &data, &len, &end), PS_EAGAIN);
}

ROUTER_TEST(broker_down_and_the_spool_full_a_waiting_batch_settles_efull, default_options(), 100) {
  fake_set_down(fx->f, 1);
  push(fx, "CL", 1);
  WAIT_UNTIL(settled_count(fx) == 1, 1000);
  PS_CHECK_MSG(settled_count(fx) == 1, "the batch did not settle though the spool refuses its messages");
  PS_CHECK_INT_EQ(fx->s[0].rc, PS_EFULL);
  /* The next one is held for the broker (nobody waits for it), and published once it is back. */
  push(fx, "C", 0);
  ps_test_sleep_ms(50);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 0);
  fake_set_down(fx->f, 0);
  WAIT_UNTIL(fake_count(fx->f, "events", 1) == 1, 1500);
  PS_CHECK_INT_EQ(fake_count(fx->f, "events", 1), 1);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  PS_CHECK_INT_EQ(atomic_load(&fx->s[0].count), 1);
  ps_spool_stats st;
  ps_spool_stats_get(fx->spool, &st);
  PS_CHECK_INT_EQ(st.records, 0);
}

/* The dispatch waiter's overflow path: a batch written straight to the spool, as a worker would publish it. */
ROUTER_TEST(spool_batch_writes_a_batch_as_its_messages, default_options(), 1) {
  int64_t spooled0 = PS_METRIC_GET(messages_spooled_total), events0 = PS_METRIC_GET(events_spooled_total);
  ps_batch *b = make_batch("ov", "CNLC", NULL);
  int rc = ps_router_spool_batch(fx->r, b);
  ps_batch_destroy(b); /* still the caller's */
  PS_CHECK_INT_EQ(rc, 0);
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_spooled_total) - spooled0, 3);
  PS_CHECK_INT_EQ(PS_METRIC_GET(events_spooled_total) - events0, 3);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 0); /* nothing published */
  ps_spool_stats st;
  ps_spool_stats_get(fx->spool, &st);
  PS_CHECK_INT_EQ(st.records, 3);
  static const char *want_ex[] = {"dlx", "events", "events"};
  static const char *want_rk[] = {"skipped", "ClickEvent", "LaunchEvent"};
  for (int i = 0; i < 3; i++) {
    const void *data;
    size_t len;
    ps_spool_pos end;
    PS_CHECK_INT_EQ(ps_spool_next(fx->spool, &data, &len, &end), 0);
    ps_message m;
    ps_broker_arg h[PS_INFLIGHT_MAX_HEADERS];
    void *own = NULL;
    PS_CHECK_INT_EQ(ps_message_unpack(data, len, &m, h, &own), 0);
    char body[4096];
    snprintf(body, sizeof body, "%.*s", (int)m.len, (const char *)m.body);
    int ok = strcmp(m.exchange, want_ex[i]) == 0 && strcmp(m.routing_key, want_rk[i]) == 0 &&
             m.mandatory == (i > 0) && m.persistent == 1 &&
             (i == 0 || (m.message_id && strstr(body, i == 1 ? "\"ov-e3\"" : "\"ov-e2\"")));
    ps_message_unpacked_free(own);
    PS_CHECK_MSG(ok, "record %d: %s %s %s", i, want_ex[i], want_rk[i], i ? body : "");
  }
}

ROUTER_TEST(spool_batch_without_a_spool_is_refused, default_options(), 0) {
  ps_batch *b = make_batch("ov", "C", NULL);
  int rc = ps_router_spool_batch(fx->r, b);
  ps_batch_destroy(b);
  PS_CHECK_INT_EQ(rc, PS_EFULL);
}

/* ---------------------------------------------------------------- (e) down, no spool */

ROUTER_TEST(broker_down_without_a_spool_holds_batches_and_the_queue_fills, with_window(2), 0) {
  fake_set_down(fx->f, 1);
  push(fx, "C", 1);
  /* The worker took it and tried the broker. */
  WAIT_UNTIL(ps_queue_len(fx->q) == 0 && FAKE_GET(fx->f, connect_attempts) >= 1, 1000);
  PS_CHECK_INT_EQ(ps_queue_len(fx->q), 0);
  PS_CHECK(FAKE_GET(fx->f, connect_attempts) >= 1);
  for (int i = 0; i < 5; i++) /* more than the window */
    push(fx, "C", 1);
  /* While the broker is down: nothing settles, and the worker takes nothing more. */
  int64_t t0 = ps_now_ns();
  while (ms_since(t0) < 300) {
    PS_CHECK_MSG(settled_count(fx) == 0, "a batch settled while the broker was down and there is no spool");
    PS_CHECK_MSG(ps_queue_len(fx->q) == 5, "the worker took batches while holding messages: %zu queued",
                 ps_queue_len(fx->q));
    ps_test_sleep_ms(10);
  }
  PS_CHECK(FAKE_GET(fx->f, connect_attempts) >= 2); /* it keeps trying */
  fake_set_down(fx->f, 0);
  WAIT_UNTIL(settled_count(fx) == 6, 1500);
  PS_CHECK_MSG(settled_count(fx) == 6, "%d of 6 settled after the broker came back", settled_count(fx));
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 6);
  for (int i = 0; i < 6; i++) {
    fake_rec r = fake_rec_at(fx->f, (size_t)i);
    char e0[32];
    snprintf(e0, sizeof e0, "\"s%d-e0\"", i);
    PS_CHECK_MSG(strstr(r.body, e0), "publish %d: %s", i, r.body);
    PS_CHECK_INT_EQ(r.outcome, 'A');
  }
}

/* ---------------------------------------------------------------- (f) never confirmed */

ROUTER_TEST(a_broker_that_stops_confirming_is_dropped_and_messages_move_on, with_confirm_timeout(300), 1) {
  fake_set_mode(fx->f, FAKE_NEVER);
  int64_t timeouts0 = PS_METRIC_GET(publish_confirm_timeouts_total);
  push(fx, "C", 1);
  /* Unconfirmed for 300 ms: the connection is dropped, a new one opened, the message published again. */
  WAIT_UNTIL(FAKE_GET(fx->f, connects) >= 2 && fake_nrecs(fx->f) >= 2, 1500);
  PS_CHECK_MSG(FAKE_GET(fx->f, connects) >= 2, "%d connections", FAKE_GET(fx->f, connects));
  PS_CHECK(fake_nrecs(fx->f) >= 2);
  PS_CHECK(FAKE_GET(fx->f, closes) >= 1);
  PS_CHECK_INT_EQ(settled_count(fx), 0);
  fake_rec first = fake_rec_at(fx->f, 0), second = fake_rec_at(fx->f, 1);
  PS_CHECK_STR_EQ(second.message_id, first.message_id);
  PS_CHECK(second.conn > first.conn);
  PS_CHECK(PS_METRIC_GET(publish_confirm_timeouts_total) - timeouts0 >= 1);
  /* Then the broker goes away: the message goes to the spool and the batch settles. */
  fake_set_down(fx->f, 1);
  WAIT_UNTIL(settled_count(fx) == 1, 1500);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  ps_spool_stats st;
  ps_spool_stats_get(fx->spool, &st);
  PS_CHECK_INT_EQ(st.records, 1);
  const void *data;
  size_t len;
  ps_spool_pos end;
  PS_CHECK_INT_EQ(ps_spool_next(fx->spool, &data, &len, &end), 0);
  ps_message m;
  ps_broker_arg h[PS_INFLIGHT_MAX_HEADERS];
  void *own = NULL;
  PS_CHECK_INT_EQ(ps_message_unpack(data, len, &m, h, &own), 0);
  int same = m.message_id && strcmp(m.message_id, first.message_id) == 0;
  ps_message_unpacked_free(own);
  PS_CHECK_MSG(same, "the spooled record is the unconfirmed message");
}

ROUTER_TEST(a_broker_that_stops_confirming_then_recovers_gets_the_message_again, with_confirm_timeout(300), 0) {
  fake_set_mode(fx->f, FAKE_NEVER);
  push(fx, "C", 1);
  WAIT_UNTIL(FAKE_GET(fx->f, connects) >= 2, 1500);
  PS_CHECK(FAKE_GET(fx->f, connects) >= 2);
  fake_set_mode(fx->f, FAKE_ACK);
  WAIT_UNTIL(settled_count(fx) == 1, 1500);
  PS_CHECK_INT_EQ(stop_router(fx, ps_now_ns() + 1000000000LL), 0);
  check_settled_once_in_order(fx, 0);
  size_t n = fake_nrecs(fx->f);
  PS_CHECK(n >= 2);
  fake_rec last = fake_rec_at(fx->f, n - 1), first = fake_rec_at(fx->f, 0);
  PS_CHECK_STR_EQ(last.message_id, first.message_id);
  PS_CHECK_INT_EQ(last.outcome, 'A');
}

/* ---------------------------------------------------------------- (g) stopping while down */

/* Batches whose callers wait are settled PS_ETIMEDOUT (the callers hear UNAVAILABLE): nothing accepted is
   lost, so stop returns 0 (contrast the next test, where nobody waits). */
ROUTER_TEST(stop_past_the_deadline_with_the_broker_down_and_no_spool_refuses_waiting_batches, default_options(), 0) {
  fake_set_down(fx->f, 1);
  push(fx, "CL", 1);
  push(fx, "C", 1);
  /* The worker took the first (maybe both: it holds what it took and takes no more) and tried the broker. */
  WAIT_UNTIL(ps_queue_len(fx->q) <= 1 && FAKE_GET(fx->f, connect_attempts) >= 1, 1000);
  PS_CHECK(FAKE_GET(fx->f, connect_attempts) >= 1);
  PS_CHECK_INT_EQ(settled_count(fx), 0);
  int64_t t0 = ps_now_ns();
  int rc = stop_router(fx, t0 + 300 * 1000000LL);
  int64_t took = ms_since(t0);
  PS_CHECK_MSG(took >= 290 && took < 1500, "stop took %lld ms", (long long)took);
  for (int i = 0; i < fx->nb; i++) {
    PS_CHECK_MSG(atomic_load(&fx->s[i].count) == 1, "batch %d settled %d times", i, atomic_load(&fx->s[i].count));
    PS_CHECK_MSG(fx->s[i].rc != 0, "batch %d settled 0 though nothing was delivered", i);
    PS_CHECK_INT_EQ(fx->s[i].rc, PS_ETIMEDOUT);
  }
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 0);
  PS_CHECK_MSG(rc == 0, "ps_router_stop returned %d (%s): no accepted event was given up", rc, ps_strerror(rc));
}

ROUTER_TEST(stop_gives_up_unwaited_batches_and_says_so, default_options(), 0) {
  fake_set_down(fx->f, 1);
  int64_t given0 = PS_METRIC_GET(publish_given_up_events_total);
  push(fx, "CLC", 0); /* nobody waits for it (ACK_MODE=enqueued) */
  WAIT_UNTIL(ps_queue_len(fx->q) == 0 && FAKE_GET(fx->f, connect_attempts) >= 1, 1000);
  int64_t t0 = ps_now_ns();
  int rc = stop_router(fx, t0 + 200 * 1000000LL);
  PS_CHECK_MSG(ms_since(t0) < 1500, "stop took %lld ms", (long long)ms_since(t0));
  PS_CHECK_INT_EQ(rc, PS_ETIMEDOUT);
  PS_CHECK_INT_EQ(PS_METRIC_GET(publish_given_up_events_total) - given0, 3);
  PS_CHECK_INT_EQ(fake_nrecs(fx->f), 0);
}

ROUTER_TEST(stop_with_the_broker_down_and_a_spool_spools_and_returns_0, default_options(), 1) {
  fake_set_down(fx->f, 1);
  push(fx, "CL", 0);
  push(fx, "C", 1);
  int rc = stop_router(fx, ps_now_ns() + 300 * 1000000LL);
  PS_CHECK_INT_EQ(rc, 0);
  PS_CHECK_INT_EQ(atomic_load(&fx->s[1].count), 1);
  PS_CHECK_INT_EQ(fx->s[1].rc, 0);
  ps_spool_stats st;
  ps_spool_stats_get(fx->spool, &st);
  PS_CHECK_INT_EQ(st.records, 3);
}

/* ---------------------------------------------------------------- (h) replay */

typedef struct replay_fixture {
  fake *f;
  ps_spool *spool;
  char dir[64];
  ps_replay *rp;
} replay_fixture;

static void replay_setup(replay_fixture *rf) {
  memset(rf, 0, sizeof *rf);
  rf->f = fake_create();
  snprintf(rf->dir, sizeof rf->dir, "/tmp/ps-replay-XXXXXX");
  if (!mkdtemp(rf->dir))
    abort();
  ps_spool_options o = {rf->dir, 0, 0, PS_SPOOL_FSYNC_NEVER};
  char err[256];
  if (ps_spool_open(&o, &rf->spool, err, sizeof err) != 0) {
    fprintf(stderr, "  spool %s: %s\n", rf->dir, err);
    abort();
  }
}

static void replay_start(replay_fixture *rf, int window, int confirm_timeout_ms) {
  ps_replay_options o = {&rf->f->base, rf->spool, window, confirm_timeout_ms, "dlx", "skipped", 0};
  rf->rp = ps_replay_start(&o);
}

static void replay_teardown(replay_fixture *rf) {
  ps_replay_stop(rf->rp);
  ps_spool_close(rf->spool);
  ps_test_rmtree(rf->dir);
  fake_free(rf->f);
}

/* Appends the record of a message to exchange "events" with routing key rk and id id (and two headers). */
static void spool_message(ps_spool *s, const char *rk, const char *id) {
  ps_broker_arg h[] = {{"x-origin", "test", 0}, {"x-n", NULL, 7}};
  char body[64];
  snprintf(body, sizeof body, "{\"id\":\"%s\"}", id);
  ps_message m = {.exchange = "events",
                  .routing_key = rk,
                  .content_type = "application/json",
                  .message_id = id,
                  .timestamp = 1700000000,
                  .persistent = 1,
                  .mandatory = 1,
                  .headers = h,
                  .nheaders = 2,
                  .body = body,
                  .len = strlen(body)};
  ps_buf rec = PS_BUF_INIT;
  ps_message_pack(&m, &rec);
  struct iovec v = {rec.data, rec.len};
  if (ps_spool_append(s, &v, 1) != 0)
    abort();
  ps_buf_free(&rec);
}

static uint64_t spool_records(ps_spool *s) {
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  return st.records;
}

static void replay_publishes_in_order_body(replay_fixture *rf) {
  pthread_mutex_lock(&rf->f->mu);
  rf->f->unroutable[rf->f->nunroutable++] = "LaunchEvent";
  pthread_mutex_unlock(&rf->f->mu);
  spool_message(rf->spool, "ClickEvent", "r1");
  spool_message(rf->spool, "LaunchEvent", "r2");
  spool_message(rf->spool, "PageOpenedEvent", "r3");
  spool_message(rf->spool, "ClickEvent", "r4");
  int64_t replayed0 = PS_METRIC_GET(spool_replayed_messages_total);
  int64_t returned0 = PS_METRIC_GET(messages_returned_total);
  replay_start(rf, 8, 5000);
  WAIT_UNTIL(spool_records(rf->spool) == 0 && fake_count(rf->f, "dlx", 1) == 1, 1500);
  PS_CHECK_MSG(spool_records(rf->spool) == 0, "%llu records left", (unsigned long long)spool_records(rf->spool));
  PS_CHECK_INT_EQ(fake_count(rf->f, "dlx", 1), 1);
  ps_replay_stop(rf->rp);
  rf->rp = NULL;
  /* The records in spool order, then the returned one's dead letter. */
  PS_CHECK_INT_EQ(fake_nrecs(rf->f), 5);
  static const char *want_id[] = {"r1", "r2", "r3", "r4"};
  static const char *want_rk[] = {"ClickEvent", "LaunchEvent", "PageOpenedEvent", "ClickEvent"};
  for (size_t i = 0; i < 4; i++) {
    fake_rec r = fake_rec_at(rf->f, i);
    PS_CHECK_STR_EQ(r.message_id, want_id[i]);
    PS_CHECK_STR_EQ(r.exchange, "events");
    PS_CHECK_STR_EQ(r.routing_key, want_rk[i]);
    PS_CHECK_INT_EQ(r.mandatory, 1);
    PS_CHECK_INT_EQ(r.persistent, 1);
    PS_CHECK_STR_EQ(r.content_type, "application/json");
    PS_CHECK_INT_EQ(r.timestamp, 1700000000);
    PS_CHECK_STR_EQ(rec_header(&r, "x-origin"), "test");
    PS_CHECK_INT_EQ(r.nheaders, 2);
    PS_CHECK(r.hnum_is[1] && r.hnum[1] == 7);
    char body[64];
    snprintf(body, sizeof body, "{\"id\":\"%s\"}", want_id[i]);
    PS_CHECK_STR_EQ(r.body, body);
  }
  fake_rec dl = fake_rec_at(rf->f, 4);
  PS_CHECK_STR_EQ(dl.exchange, "dlx");
  PS_CHECK_STR_EQ(dl.routing_key, "skipped");
  const char *why = rec_header(&dl, "x-penstock-reason");
  PS_CHECK_MSG(why && strncmp(why, "unroutable", 10) == 0, "reason: %s", why ? why : "(none)");
  PS_CHECK_STR_EQ(rec_header(&dl, "x-penstock-message-id"), "r2");
  PS_CHECK_STR_EQ(rec_header(&dl, "x-penstock-routing-key"), "LaunchEvent");
  PS_CHECK_STR_EQ(dl.body, "{\"id\":\"r2\"}");
  PS_CHECK_INT_EQ(PS_METRIC_GET(spool_replayed_messages_total) - replayed0, 4); /* r1, r3, r4, r2's dead letter */
  PS_CHECK_INT_EQ(PS_METRIC_GET(messages_returned_total) - returned0, 1);
  /* Everything is committed: a fresh read finds nothing. */
  ps_spool_rewind(rf->spool);
  const void *data;
  size_t len;
  ps_spool_pos end;
  PS_CHECK_INT_EQ(ps_spool_next(rf->spool, &data, &len, &end), PS_EAGAIN);
}

PS_TEST(replay_publishes_the_spool_in_order_and_commits_it) {
  replay_fixture rf;
  replay_setup(&rf);
  replay_publishes_in_order_body(&rf);
  replay_teardown(&rf);
}

static void replay_waits_for_the_broker_body(replay_fixture *rf) {
  fake_set_down(rf->f, 1);
  replay_start(rf, 2, 5000);
  for (int i = 0; i < 6; i++) {
    char id[16];
    snprintf(id, sizeof id, "w%d", i);
    spool_message(rf->spool, "ClickEvent", id);
  }
  WAIT_UNTIL(FAKE_GET(rf->f, connect_attempts) >= 1, 1000);
  PS_CHECK(FAKE_GET(rf->f, connect_attempts) >= 1);
  PS_CHECK_INT_EQ(spool_records(rf->spool), 6);
  fake_set_down(rf->f, 0);
  WAIT_UNTIL(spool_records(rf->spool) == 0, 1500);
  PS_CHECK_INT_EQ(spool_records(rf->spool), 0);
  ps_replay_stop(rf->rp);
  rf->rp = NULL;
  PS_CHECK_INT_EQ(fake_nrecs(rf->f), 6);
  for (int i = 0; i < 6; i++) {
    char id[16];
    snprintf(id, sizeof id, "w%d", i);
    fake_rec r = fake_rec_at(rf->f, (size_t)i);
    PS_CHECK_STR_EQ(r.message_id, id);
  }
}

PS_TEST(replay_waits_for_the_broker_then_publishes_in_order) {
  replay_fixture rf;
  replay_setup(&rf);
  replay_waits_for_the_broker_body(&rf);
  replay_teardown(&rf);
}

static void replay_nack_body(replay_fixture *rf) {
  pthread_mutex_lock(&rf->f->mu);
  rf->f->nack_next = 1;
  pthread_mutex_unlock(&rf->f->mu);
  spool_message(rf->spool, "ClickEvent", "n1");
  spool_message(rf->spool, "ClickEvent", "n2");
  replay_start(rf, 8, 5000);
  WAIT_UNTIL(spool_records(rf->spool) == 0, 1500);
  PS_CHECK_INT_EQ(spool_records(rf->spool), 0);
  ps_replay_stop(rf->rp);
  rf->rp = NULL;
  /* n1 refused: everything from n1 on is published again (n2 may be twice: a duplicate, never a gap). */
  size_t n = fake_nrecs(rf->f);
  PS_CHECK(n >= 3);
  fake_rec r0 = fake_rec_at(rf->f, 0);
  PS_CHECK_STR_EQ(r0.message_id, "n1");
  PS_CHECK_INT_EQ(r0.outcome, 'N');
  int n1_acked = 0, n2_acked = 0;
  for (size_t i = 1; i < n; i++) {
    fake_rec r = fake_rec_at(rf->f, i);
    n1_acked |= strcmp(r.message_id, "n1") == 0 && r.outcome == 'A';
    n2_acked |= strcmp(r.message_id, "n2") == 0 && r.outcome == 'A';
  }
  PS_CHECK(n1_acked && n2_acked);
}

PS_TEST(replay_publishes_a_nacked_record_again) {
  replay_fixture rf;
  replay_setup(&rf);
  replay_nack_body(&rf);
  replay_teardown(&rf);
}

static void replay_skips_corrupt_body(replay_fixture *rf) {
  ps_counter *corrupt = ps_metrics_counter("penstock_spool_corrupt_total", "", NULL, 0);
  int64_t corrupt0 = atomic_load(&corrupt->v);
  spool_message(rf->spool, "ClickEvent", "c1");
  struct iovec junk = {"this is not a message record", 28};
  PS_CHECK_INT_EQ(ps_spool_append(rf->spool, &junk, 1), 0);
  spool_message(rf->spool, "ClickEvent", "c2");
  replay_start(rf, 8, 5000);
  WAIT_UNTIL(spool_records(rf->spool) == 0, 1500);
  PS_CHECK_INT_EQ(spool_records(rf->spool), 0);
  ps_replay_stop(rf->rp);
  rf->rp = NULL;
  PS_CHECK_INT_EQ(fake_nrecs(rf->f), 2);
  fake_rec a = fake_rec_at(rf->f, 0), b = fake_rec_at(rf->f, 1);
  PS_CHECK_STR_EQ(a.message_id, "c1");
  PS_CHECK_STR_EQ(b.message_id, "c2");
  PS_CHECK_INT_EQ(atomic_load(&corrupt->v) - corrupt0, 1);
}

PS_TEST(replay_skips_a_record_that_is_not_a_message) {
  replay_fixture rf;
  replay_setup(&rf);
  replay_skips_corrupt_body(&rf);
  replay_teardown(&rf);
}

/*
 * The dead letter of a returned record must be confirmed before that record
 * is committed: if the connection is lost first, the record is still in the
 * spool and is replayed (and dead-lettered) again; never a gap.
 */
static void replay_dead_letter_survives_body(replay_fixture *rf) {
  pthread_mutex_lock(&rf->f->mu);
  rf->f->unroutable[rf->f->nunroutable++] = "LaunchEvent";
  rf->f->never_exchange = "dlx"; /* dead letters are not confirmed, for now */
  pthread_mutex_unlock(&rf->f->mu);
  spool_message(rf->spool, "ClickEvent", "d1");
  spool_message(rf->spool, "LaunchEvent", "d2");
  spool_message(rf->spool, "ClickEvent", "d3");
  replay_start(rf, 8, 300);
  WAIT_UNTIL(fake_count(rf->f, "dlx", 0) >= 1, 1000);
  PS_CHECK_INT_EQ(fake_count(rf->f, "dlx", 0), 1);
  ps_test_sleep_ms(50); /* d3's ack is reported with or right after the return: let it settle */
  PS_CHECK_MSG(spool_records(rf->spool) >= 1,
               "the returned record d2 was committed while its dead letter is unconfirmed "
               "(%llu records left in the spool)",
               (unsigned long long)spool_records(rf->spool));
  /* The unconfirmed dead letter times out; the connection is dropped. */
  WAIT_UNTIL(FAKE_GET(rf->f, connects) >= 2, 1500);
  PS_CHECK(FAKE_GET(rf->f, connects) >= 2);
  pthread_mutex_lock(&rf->f->mu);
  rf->f->never_exchange = NULL;
  pthread_mutex_unlock(&rf->f->mu);
  WAIT_UNTIL(fake_count(rf->f, "dlx", 1) >= 1 && spool_records(rf->spool) == 0, 1500);
  PS_CHECK_MSG(fake_count(rf->f, "dlx", 1) >= 1, "the dead letter of d2 was lost with the connection");
  PS_CHECK_INT_EQ(spool_records(rf->spool), 0);
}

PS_TEST(replay_a_dead_letter_lost_with_its_connection_is_published_again) {
  replay_fixture rf;
  replay_setup(&rf);
  replay_dead_letter_survives_body(&rf);
  replay_teardown(&rf);
}

/* The replay's window is bounded in bytes too (PUBLISH_CONFIRM_WINDOW_BYTES), as the workers' is. */
static void replay_byte_bound_body(replay_fixture *rf) {
  fake_set_mode(rf->f, FAKE_NEVER);
  for (int i = 0; i < 10; i++) {
    char id[16];
    snprintf(id, sizeof id, "b%d", i);
    spool_message(rf->spool, "ClickEvent", id); /* bodies {"id":"bN"}: 11 bytes */
  }
  ps_replay_options o = {&rf->f->base, rf->spool, 64, 300, "dlx", "skipped", 40};
  rf->rp = ps_replay_start(&o);
  WAIT_UNTIL(fake_nrecs(rf->f) > 0, 1500);
  ps_test_sleep_ms(100); /* it publishes what the bound lets it, then waits for confirms */
  check_stopped_at_the_byte_bound(rf->f, 10, 40); /* 10 records, 64 entries allowed */
  PS_CHECK_INT_EQ(spool_records(rf->spool), 10);
  /* Confirms come again: the unconfirmed ones time out and go again on a new connection, then the rest. */
  fake_set_mode(rf->f, FAKE_ACK);
  WAIT_UNTIL(spool_records(rf->spool) == 0, 5000);
  PS_CHECK_INT_EQ(spool_records(rf->spool), 0);
  ps_replay_stop(rf->rp);
  rf->rp = NULL;
  /* Every record confirmed, the first confirmation of each in spool order. */
  size_t want = 0;
  for (size_t i = 0, nrecs = fake_nrecs(rf->f); i < nrecs; i++) {
    fake_rec r = fake_rec_at(rf->f, i);
    char id[16];
    snprintf(id, sizeof id, "b%zu", want);
    if (r.outcome == 'A' && strcmp(r.message_id, id) == 0)
      want++;
  }
  PS_CHECK_INT_EQ(want, 10);
}

PS_TEST(replay_a_byte_bound_on_the_window_holds_publishing_until_confirms_make_room) {
  replay_fixture rf;
  replay_setup(&rf);
  replay_byte_bound_body(&rf);
  replay_teardown(&rf);
}

PS_TEST_MAIN(PS_CASE(all_acked_each_batch_settles_once_one_message_per_type),
             PS_CASE(a_returned_message_is_dead_lettered_window_1),
             PS_CASE(multiple_acks_over_a_small_window_settle_everything),
             PS_CASE(a_byte_bound_on_the_window_holds_publishing_until_confirms_make_room),
             PS_CASE(several_workers_each_batch_settles_once),
             PS_CASE(a_lot_of_batches_with_one_header_shares_one_message_per_type),
             PS_CASE(batches_with_other_headers_get_messages_of_their_own),
             PS_CASE(merge_batches_1_publishes_each_batch_on_its_own),
             PS_CASE(a_merged_message_takes_whole_groups_up_to_1000_events),
             PS_CASE(a_nacked_merged_message_is_sent_again_and_its_lot_settles_once),
             PS_CASE(a_lot_given_up_at_the_deadline_refuses_every_batch_of_it),
             PS_CASE(packed_one_message_per_type_for_the_lot_one_line_per_header),
             PS_CASE(packed_messages_take_whole_lines_up_to_1000_events),
             PS_CASE(protobuf_packs_as_packed_does_with_binary_length_delimited_events),
             PS_CASE(protobuf_publishes_the_requests_own_event_bytes),
             PS_CASE(protobuf_packs_again_a_lot_whose_request_has_other_fields),
             PS_CASE(a_short_lot_waits_for_the_batch_that_fills_it),
             PS_CASE(without_lingering_a_short_lot_is_published_at_once),
             PS_CASE(a_short_lot_is_published_when_the_linger_ends),
             PS_CASE(stopping_ends_a_linger_and_publishes_the_short_lot),
             PS_CASE(in_a_lot_each_batch_dead_letters_its_own_events_without_a_type),
             PS_CASE(message_ids_are_instance_worker_and_number),
             PS_CASE(events_without_a_type_are_dead_lettered_as_one_message),
             PS_CASE(a_nacked_message_is_published_again_and_settles_after_its_ack),
             PS_CASE(a_returned_message_is_dead_lettered),
             PS_CASE(broker_down_with_a_spool_batches_settle_once_spooled),
             PS_CASE(broker_down_and_the_spool_full_a_waiting_batch_settles_efull),
             PS_CASE(spool_batch_writes_a_batch_as_its_messages),
             PS_CASE(spool_batch_without_a_spool_is_refused),
             PS_CASE(broker_down_without_a_spool_holds_batches_and_the_queue_fills),
             PS_CASE(a_broker_that_stops_confirming_is_dropped_and_messages_move_on),
             PS_CASE(a_broker_that_stops_confirming_then_recovers_gets_the_message_again),
             PS_CASE(stop_past_the_deadline_with_the_broker_down_and_no_spool_refuses_waiting_batches),
             PS_CASE(stop_gives_up_unwaited_batches_and_says_so),
             PS_CASE(stop_with_the_broker_down_and_a_spool_spools_and_returns_0),
             PS_CASE(replay_publishes_the_spool_in_order_and_commits_it),
             PS_CASE(replay_waits_for_the_broker_then_publishes_in_order),
             PS_CASE(replay_publishes_a_nacked_record_again),
             PS_CASE(replay_skips_a_record_that_is_not_a_message),
             PS_CASE(replay_a_dead_letter_lost_with_its_connection_is_published_again),
             PS_CASE(replay_a_byte_bound_on_the_window_holds_publishing_until_confirms_make_room))
