/*
 * ps_sinker: the buffered sinker (see ps_sinker.h).
 *
 * DESIGN: rows are copied once out of the decoder, into the consumer's
 * staging row store (ps_rows), and appended to the shared buffer (a row store
 * plus one entry per message: consumer, generation, tag, row count) under the
 * group's mutex. The sinker thread swaps the shared buffer with its own empty
 * one (pointers only) and inserts outside the lock, so consumers keep pushing
 * while an insert runs.
 */
#include "consume/ps_sinker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ps_backoff.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "queue/ps_queue.h" /* ps_now_ns */
#include "sink/ps_rows.h"

/* ------------------------------------------------------------ staging sink */

typedef struct {
  ps_sink base;
  ps_rows rows;
} ps__stage;

static int ps__st_open(ps_sink *s, char *err, size_t errlen) { return 0; }
static void ps__st_write(ps_sink *s, const ps_value *row) { ps_rows_write(&((ps__stage *)s)->rows, row); }
static size_t ps__st_pending(ps_sink *s) { return ((ps__stage *)s)->rows.n; }
static ps_sink_result ps__st_flush(ps_sink *s, char *err, size_t errlen) { return PS_SINK_OK; }
static void ps__st_discard(ps_sink *s) { ps_rows_clear(&((ps__stage *)s)->rows); }
static void ps__st_destroy(ps_sink *s) {
  ps_rows_free(&((ps__stage *)s)->rows);
  free(s);
}

static const ps_sink_ops ps__stage_ops = {
    .name = "stage",
    .open = ps__st_open,
    .write = ps__st_write,
    .pending = ps__st_pending,
    .flush = ps__st_flush,
    .rejected = NULL,
    .discard = ps__st_discard,
    .destroy = ps__st_destroy,
};

/* ------------------------------------------------------------ the sinker */

typedef struct ps__entry {
  int consumer;
  uint64_t gen, tag;
  size_t nrows;
} ps__entry;

typedef struct ps__batch {
  ps_rows rows;
  ps__entry *e;
  size_t ne, cap;
  int64_t oldest_ns; /* when its first row came; 0 when empty */
} ps__batch;

typedef struct ps__inbox {
  ps_sinker_done *d;
  size_t n, cap;
  uint64_t gen; /* the consumer's current generation, as of its last push */
  size_t held;  /* its messages in the buffer (not in the insert under way) */
} ps__inbox;

struct ps_sinker {
  ps_sinker_options opt;
  ps_sink *sink;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t work;  /* the sinker: something to do */
  pthread_cond_t room;  /* pushers: the buffer has room */
  pthread_cond_t done;  /* consumers: completions were posted */
  ps__batch buf;        /* under mu */
  ps__inbox *inbox;     /* under mu, one per consumer */
  int hurry, quit;      /* under mu */
  int window_full;      /* under mu: a consumer holds window messages in the buffer */
  int opened;           /* the sinker thread's: the sink's table is known to exist */
  ps_log_ratelimit insert_rl; /* the sinker thread's: its "insert failed" warnings, each sinker its own */
  _Atomic int64_t deadline_ns;
  _Atomic int stop_retrying;
  ps_counter *m_buffered;
};

/* The metrics are optional (unit tests run without them). */
static void ps__count(ps_counter *c, int64_t n) {
  if (c)
    ps_counter_add(c, n);
}

static void ps__observe(ps_histogram *h, double v) {
  if (h)
    ps_histogram_observe(h, v);
}

static void ps__batch_add_entry(ps__batch *b, const ps__entry *e) {
  if (b->ne == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 64;
    b->e = realloc(b->e, b->cap * sizeof *b->e);
    if (!b->e)
      abort();
  }
  b->e[b->ne++] = *e;
}

static void ps__batch_clear(ps__batch *b) {
  ps_rows_clear(&b->rows);
  b->ne = 0;
  b->oldest_ns = 0;
}

static void ps__timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ns = ts.tv_nsec + (ms % 1000) * 1000000;
  ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000);
  ts.tv_nsec = (long)(ns % 1000000000);
  pthread_cond_timedwait(cv, mu, &ts);
}

/* Under mu: posts a completion to its consumer. */
static void ps__post(ps_sinker *s, const ps__entry *e, int rejected, size_t row, const char *reason) {
  ps__inbox *in = &s->inbox[e->consumer];
  if (in->n == in->cap) {
    in->cap = in->cap ? in->cap * 2 : 64;
    in->d = realloc(in->d, in->cap * sizeof *in->d);
    if (!in->d)
      abort();
  }
  ps_sinker_done *d = &in->d[in->n++];
  d->gen = e->gen;
  d->tag = e->tag;
  d->rejected = rejected;
  d->row = row;
  snprintf(d->reason, sizeof d->reason, "%s", reason ? reason : "");
}

/*
 * Inserts batch b through the sink and posts what became of each message.
 * Returns 0 when done (stored or refused), or PS_ETIMEDOUT when it gave up
 * (stopping, past the deadline): nothing is posted then.
 */
static int ps__insert(ps_sinker *s, ps__batch *b) {
  ps_value row[64];
  ps_value *rowp = b->rows.ncols <= 64 ? row : malloc(b->rows.ncols * sizeof *rowp);
  if (!rowp)
    abort();
  /* Rows of messages whose consumer has since reconnected are not sent: they were requeued. */
  pthread_mutex_lock(&s->mu);
  char *live = calloc(b->ne ? b->ne : 1, 1);
  if (!live)
    abort();
  for (size_t k = 0; k < b->ne; k++)
    live[k] = b->e[k].gen == s->inbox[b->e[k].consumer].gen;
  pthread_mutex_unlock(&s->mu);
  size_t r = 0, sent = 0;
  for (size_t k = 0; k < b->ne; k++) {
    for (size_t j = 0; j < b->e[k].nrows; j++, r++) {
      if (!live[k])
        continue;
      ps_rows_get(&b->rows, r, rowp);
      ps_sink_write(s->sink, rowp);
      sent++;
    }
  }
  if (rowp != row)
    free(rowp);
  int rc = 0;
  ps_sink_result res = PS_SINK_OK;
  char err[512] = "";
  for (int attempt = 0; sent;) {
    if (!s->opened) {
      int orc = ps_sink_open(s->sink, err, sizeof err);
      if (orc == 0)
        s->opened = 1;
      else if (orc != PS_ECONN)
        ps_error("sinker: cannot create the sink's table", "queue", s->opt.name, "error", err);
    }
    int64_t t0 = ps_now_ns();
    res = ps_sink_flush(s->sink, err, sizeof err);
    ps__observe(s->opt.m_ins_seconds, (double)(ps_now_ns() - t0) / 1e9);
    if (res != PS_SINK_RETRY)
      break;
    ps__count(s->opt.m_ins_retry, 1);
    long long sup;
    if (ps_log_ratelimit_ok(&s->insert_rl, 5000, &sup)) {
      char n[32];
      snprintf(n, sizeof n, "%lld", sup);
      ps_warn("sinker: insert failed; retrying", "queue", s->opt.name, "error", err, "suppressed", n);
    }
    if (atomic_load(&s->stop_retrying) && ps_now_ns() >= atomic_load(&s->deadline_ns)) {
      ps_sink_discard(s->sink);
      rc = PS_ETIMEDOUT;
      break;
    }
    ps_backoff_sleep(attempt++, 200, 10000, &s->deadline_ns, NULL);
  }
  if (rc == 0) {
    const size_t *bad = NULL;
    const char *const *why = NULL;
    size_t nbad = res == PS_SINK_DROP ? ps_sink_rejected(s->sink, &bad, &why) : 0;
    if (sent) {
      ps__count(res == PS_SINK_OK ? s->opt.m_ins_ok : s->opt.m_ins_drop, 1);
      ps__count(s->opt.m_rows, (int64_t)(sent - nbad));
      if (res == PS_SINK_OK)
        ps__observe(s->opt.m_ins_rows, (double)sent);
    }
    /* Map refused rows (indices among the rows sent) back to their messages. */
    pthread_mutex_lock(&s->mu);
    size_t first = 0, bi = 0;
    for (size_t k = 0; k < b->ne; k++) {
      if (!live[k])
        continue;
      size_t n = b->e[k].nrows;
      int rejected = 0;
      size_t row_in_msg = 0;
      const char *reason = NULL;
      if (res == PS_SINK_DROP && !nbad) { /* the whole batch refused, no rows named */
        rejected = 1;
        reason = err;
      }
      while (bi < nbad && bad[bi] < first + n) {
        if (!rejected) {
          rejected = 1;
          row_in_msg = bad[bi] - first;
          reason = why[bi];
        }
        bi++;
      }
      ps__post(s, &b->e[k], rejected, row_in_msg, reason);
      first += n;
    }
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->mu);
  }
  free(live);
  return rc;
}

static void *ps__sinker_main(void *arg) {
  ps_sinker *s = arg;
  pthread_setname_np(pthread_self(), "ps-sinker");
  ps__batch mine = {.rows = ps_rows_make(s->sink->table)};
  const int64_t flush_ns = (int64_t)s->opt.flush_ms * 1000000;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    ps__batch *b = &s->buf;
    int due = b->ne && (s->hurry || s->window_full || b->rows.n >= (size_t)s->opt.flush_rows ||
                        ps_now_ns() - b->oldest_ns >= flush_ns);
    if (due) {
      ps__batch t = *b; /* swap: the consumers fill an empty buffer while this one is inserted */
      *b = mine;
      mine = t;
      s->window_full = 0;
      for (int i = 0; i < (s->opt.consumers > 0 ? s->opt.consumers : 1); i++)
        s->inbox[i].held = 0;
      ps_counter_add(s->m_buffered, -(int64_t)mine.rows.n);
      pthread_cond_broadcast(&s->room);
      pthread_mutex_unlock(&s->mu);
      ps__insert(s, &mine);
      ps__batch_clear(&mine);
      pthread_mutex_lock(&s->mu);
      continue;
    }
    if (s->quit)
      break;
    int64_t wait_ms = 1000;
    if (b->ne) {
      int64_t left = (b->oldest_ns + flush_ns - ps_now_ns()) / 1000000 + 1;
      if (left < wait_ms)
        wait_ms = left < 1 ? 1 : left;
    }
    ps__timed_wait(&s->work, &s->mu, wait_ms);
  }
  pthread_mutex_unlock(&s->mu);
  ps_rows_free(&mine.rows);
  free(mine.e);
  return NULL;
}

ps_sinker *ps_sinker_start(const ps_sinker_options *opt, ps_sink *sink) {
  ps_sinker *s = calloc(1, sizeof *s);
  if (!s)
    abort();
  s->opt = *opt;
  if (s->opt.capacity_rows < 1)
    s->opt.capacity_rows = 10000;
  if (s->opt.flush_rows < 1)
    s->opt.flush_rows = 100;
  if (s->opt.flush_ms < 1)
    s->opt.flush_ms = 300000;
  s->sink = sink;
  s->buf.rows = ps_rows_make(sink->table);
  s->inbox = calloc((size_t)(opt->consumers > 0 ? opt->consumers : 1), sizeof *s->inbox);
  if (!s->inbox)
    abort();
  atomic_store(&s->deadline_ns, INT64_MAX);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->work, NULL);
  pthread_cond_init(&s->room, NULL);
  pthread_cond_init(&s->done, NULL);
  char labels[300];
  snprintf(labels, sizeof labels, "queue=\"%s\"", opt->name);
  s->m_buffered = ps_metrics_counter("penstock_sinker_buffer_rows", labels,
                                     "rows waiting in a buffered sinker's buffer", 1);
  if (pthread_create(&s->thread, NULL, ps__sinker_main, s) != 0)
    abort();
  return s;
}

ps_sink *ps_sinker_stage(ps_sinker *s) {
  ps__stage *st = calloc(1, sizeof *st);
  if (!st)
    abort();
  st->base.ops = &ps__stage_ops;
  st->base.table = s->sink->table;
  st->rows = ps_rows_make(s->sink->table);
  return &st->base;
}

int ps_sinker_push(ps_sinker *s, int consumer, uint64_t gen, uint64_t tag, ps_sink *stage, const _Atomic int *abort_) {
  ps_rows *r = &((ps__stage *)stage)->rows;
  pthread_mutex_lock(&s->mu);
  s->inbox[consumer].gen = gen;
  while (s->buf.rows.n && s->buf.rows.n + r->n > (size_t)s->opt.capacity_rows) {
    if (abort_ && atomic_load(abort_)) {
      pthread_mutex_unlock(&s->mu);
      return PS_ECLOSED;
    }
    ps__timed_wait(&s->room, &s->mu, 100);
  }
  ps_rows_append(&s->buf.rows, r);
  ps__entry e = {consumer, gen, tag, r->n};
  ps__batch_add_entry(&s->buf, &e);
  if (!s->buf.oldest_ns)
    s->buf.oldest_ns = ps_now_ns();
  ps_counter_add(s->m_buffered, (int64_t)r->n);
  if (s->opt.window > 0 && ++s->inbox[consumer].held >= (size_t)s->opt.window)
    s->window_full = 1;
  if (s->buf.rows.n >= (size_t)s->opt.flush_rows || s->hurry || s->window_full)
    pthread_cond_signal(&s->work);
  pthread_mutex_unlock(&s->mu);
  ps_rows_clear(r);
  return 0;
}

void ps_sinker_insert_now(ps_sinker *s) {
  pthread_mutex_lock(&s->mu);
  s->window_full = 1;
  pthread_cond_signal(&s->work);
  pthread_mutex_unlock(&s->mu);
}

size_t ps_sinker_take(ps_sinker *s, int consumer, ps_sinker_done *out, size_t max) {
  pthread_mutex_lock(&s->mu);
  ps__inbox *in = &s->inbox[consumer];
  size_t n = in->n < max ? in->n : max;
  if (n) {
    memcpy(out, in->d, n * sizeof *out);
    memmove(in->d, in->d + n, (in->n - n) * sizeof *in->d);
    in->n -= n;
  }
  pthread_mutex_unlock(&s->mu);
  return n;
}

size_t ps_sinker_wait(ps_sinker *s, int consumer, int max_ms) {
  int64_t until = ps_now_ns() + (int64_t)max_ms * 1000000;
  pthread_mutex_lock(&s->mu);
  ps__inbox *in = &s->inbox[consumer];
  for (int64_t left; !in->n && (left = until - ps_now_ns()) > 0;)
    ps__timed_wait(&s->done, &s->mu, left / 1000000 + 1);
  size_t n = in->n;
  pthread_mutex_unlock(&s->mu);
  return n;
}

void ps_sinker_reset(ps_sinker *s, int consumer, uint64_t gen) {
  pthread_mutex_lock(&s->mu);
  s->inbox[consumer].gen = gen;
  s->inbox[consumer].n = 0;
  s->inbox[consumer].held = 0; /* a new connection: its window starts empty */
  pthread_mutex_unlock(&s->mu);
}

void ps_sinker_hurry(ps_sinker *s, int64_t deadline_ns) {
  atomic_store(&s->deadline_ns, deadline_ns);
  atomic_store(&s->stop_retrying, 1);
  pthread_mutex_lock(&s->mu);
  s->hurry = 1;
  pthread_cond_signal(&s->work);
  pthread_mutex_unlock(&s->mu);
}

size_t ps_sinker_buffered(ps_sinker *s) {
  pthread_mutex_lock(&s->mu);
  size_t n = s->buf.rows.n;
  pthread_mutex_unlock(&s->mu);
  return n;
}

void ps_sinker_stop(ps_sinker *s, int64_t deadline_ns) {
  if (!s)
    return;
  atomic_store(&s->deadline_ns, deadline_ns);
  atomic_store(&s->stop_retrying, 1);
  pthread_mutex_lock(&s->mu);
  /* The consumers are gone: what is left was not acknowledged and returns to the queue. Do not insert it. */
  ps_counter_add(s->m_buffered, -(int64_t)s->buf.rows.n);
  ps__batch_clear(&s->buf);
  s->quit = 1;
  pthread_cond_signal(&s->work);
  pthread_mutex_unlock(&s->mu);
  pthread_join(s->thread, NULL);
  ps_rows_free(&s->buf.rows);
  free(s->buf.e);
  for (int i = 0; i < (s->opt.consumers > 0 ? s->opt.consumers : 1); i++)
    free(s->inbox[i].d);
  free(s->inbox);
  ps_sink_destroy(s->sink);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->work);
  pthread_cond_destroy(&s->room);
  pthread_cond_destroy(&s->done);
  free(s);
}
