/*
 * ps_consumer: queue -> decoder -> sink, acknowledged after landing
 * (see ps_consumer.h).
 *
 * DESIGN: each consumer thread owns a broker connection, a decoder and a sink;
 * threads share only the stop flag and the metrics. The consume loop waits for
 * a delivery no longer than the flush deadline of the oldest pending row, so
 * time-based flushes happen on time even when the queue is idle. Stopping:
 * the flag is set; each thread flushes and acks what it holds (retrying until
 * the deadline), closes its connection and exits.
 *
 * Buffered groups (opt.buffered) share one ps_sinker instead: each consumer's
 * sink is a staging sink whose rows go, message by message, into the
 * sinker's bounded buffer; the consumer polls its completions (at least every
 * 50 ms while it has messages in flight) and acknowledges, in delivery order,
 * the messages whose rows are stored, dead-lettering those refused.
 *
 * What a consumer holds unacknowledged (its messages' copies, kept until
 * their rows are stored) is bounded by prefetch and by max_held_bytes: at
 * that many bytes a direct consumer flushes at once, and a buffered one asks
 * the sinker to insert at once and takes nothing more until it can
 * acknowledge.
 */
#include "consume/ps_consumer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consume/ps_deadletter.h"
#include "consume/ps_sinker.h"
#include "core/ps_backoff.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"
#include "queue/ps_queue.h"

/* How long a dead letter may wait for the broker's confirmation before the original is given back. */
#define PS__DL_CONFIRM_MS 10000

typedef struct ps__consumer {
  ps_consumer_group *g;
  int id;
  pthread_t thread;
  ps_broker_conn *conn;
  ps_dead_letter_sender dls; /* dead letters, confirmed before the original is acknowledged */
  ps_decoder *dec;
  ps_sink *sink;
  int sink_open;       /* the sink's table is known to exist */
  int connected_before;
  uint64_t gen;        /* buffered: bumped at each reconnection (see ps_sinker.h) */
  uint64_t last_tag;   /* newest delivery whose rows are in the sink */
  size_t pending_msgs; /* deliveries waiting for the next flush */
  int64_t oldest_ns;
  /* The deliveries whose rows are in the sink's batch, with a copy of each
     (bounded by prefetch), so that a message whose rows the sink refuses can
     be dead-lettered whole, with the reason. */
  struct ps__pending {
    uint64_t tag;
    size_t first_row, nrows;
    size_t off, len, rk_len, id_len, ct_len; /* in `copies`: body, routing key, message id, content type */
    int state;      /* buffered: 0 in the sinker, 1 stored, 2 refused (reason, row) */
    size_t row;
    char *reason;
  } *pending;
  size_t npending, cap_pending;
  size_t batch_rows; /* rows written into the current batch so far */
  ps_buf copies;
  /* Deliveries seen per message id, for queues that do not count them (classic
     queues): a small table, so that a poison message cannot loop for ever. */
  struct {
    uint64_t hash;
    int count;
  } seen[1024];
} ps__consumer;

struct ps_consumer_group {
  ps_consumer_options opt;
  /* This queue's series; registered at start, bumped lock-free. */
  ps_counter *m_consumed, *m_dead_undecodable, *m_dead_rejected, *m_dead_redelivered, *m_rows, *m_ins_ok,
      *m_ins_retry, *m_ins_drop;
  ps_histogram *m_ins_seconds, *m_ins_rows;
  ps_broker *broker;
  ps_consumer_factory factory;
  ps__consumer *consumers;
  ps_sinker *sinker; /* buffered groups */
  /* Of "insert failed; retrying": one per queue, so that one queue's failures do not hide another's. */
  ps_log_ratelimit insert_rl;
  _Atomic int stop;
  _Atomic int64_t deadline_ns;
};

static void ps__pending_clear(ps__consumer *c) {
  for (size_t k = 0; k < c->npending; k++) {
    free(c->pending[k].reason);
    c->pending[k].reason = NULL;
  }
  c->npending = 0;
  c->batch_rows = 0;
  ps_buf_reset(&c->copies);
}

static void ps__drop_conn(ps__consumer *c) {
  ps_sink_discard(c->sink);
  ps__pending_clear(c);
  c->pending_msgs = 0;
  c->oldest_ns = 0;
  if (c->conn)
    PS_COUNT(broker_connections_consumer, -1);
  ps_broker_close(c->conn);
  c->conn = NULL;
  if (c->g->sinker) /* what it pushed under the old connection was requeued */
    ps_sinker_reset(c->g->sinker, c->id, ++c->gen);
}

static int ps__connect(ps__consumer *c) {
  ps_consumer_group *g = c->g;
  if (ps_broker_connect(g->broker, &c->conn) != 0) {
    c->conn = NULL;
    return PS_ECONN;
  }
  char tag[128];
  snprintf(tag, sizeof tag, "penstock-%s-%d", g->opt.queue, c->id);
  if (ps_broker_consume(c->conn, g->opt.queue, g->opt.prefetch, tag) != 0) {
    ps_broker_close(c->conn);
    c->conn = NULL;
    return PS_ECONN;
  }
  PS_COUNT(broker_connections_consumer, 1);
  return 0;
}

/* Rows the sink refused in its last DROP (0 if it does not say). */
static size_t ps__rejected_rows(ps__consumer *c) {
  const size_t *rows;
  const char *const *reasons;
  return ps_sink_rejected(c->sink, &rows, &reasons);
}

/* Dead-letters pending message pm, refused by the sink (row: its first refused row, or -1). 0 or PS_ECONN. */
static int ps__dead_letter_pending(ps__consumer *c, const struct ps__pending *pm, long long row, const char *why) {
  ps_consumer_group *g = c->g;
  const char *base = c->copies.data + pm->off;
  char rk[256], id[256], ct[128], reason[700];
  snprintf(rk, sizeof rk, "%.*s", (int)pm->rk_len, base + pm->len);
  snprintf(id, sizeof id, "%.*s", (int)pm->id_len, base + pm->len + pm->rk_len);
  snprintf(ct, sizeof ct, "%.*s", (int)pm->ct_len, base + pm->len + pm->rk_len + pm->id_len);
  if (row >= 0)
    snprintf(reason, sizeof reason, "rejected by sink (row %lld of the message): %s", row, why);
  else
    snprintf(reason, sizeof reason, "rejected by sink: %s", why);
  ps_dead_letter dl = {g->opt.dead_letter_exchange, g->opt.queue, reason, g->opt.queue,
                       g->opt.name ? g->opt.name : g->opt.queue, rk, id, ct, base, pm->len};
  if (ps_dead_letter_send(&c->dls, &dl, PS__DL_CONFIRM_MS) != 0)
    return PS_ECONN;
  ps_counter_add(g->m_dead_rejected, 1);
  ps_error("consumer: sink refused a message's rows; dead-lettered", "queue", g->opt.queue, "message_id", id,
           "reason", reason);
  return 0;
}

/*
 * After a DROP: dead-letters every pending message that has a refused row
 * (whole: its other rows are stored, and a replay would only duplicate them,
 * which the tables' engines collapse), with the sink's reason. A sink that
 * names no rows refused the whole batch. Returns 0, or PS_ECONN.
 */
static int ps__dead_letter_rejected(ps__consumer *c, const char *batch_err) {
  const size_t *rows;
  const char *const *reasons;
  size_t nr = ps_sink_rejected(c->sink, &rows, &reasons);
  char *marked = calloc(c->npending ? c->npending : 1, 1);
  const char **why = calloc(c->npending ? c->npending : 1, sizeof *why);
  size_t *which = calloc(c->npending ? c->npending : 1, sizeof *which);
  if (!marked || !why || !which)
    abort();
  for (size_t k = 0; k < c->npending; k++)
    if (!nr) {
      marked[k] = 1;
      why[k] = batch_err;
    }
  for (size_t i = 0; i < nr; i++) {
    size_t lo = 0, hi = c->npending; /* the message holding row rows[i]: last first_row <= it */
    while (hi - lo > 1) {
      size_t mid = (lo + hi) / 2;
      if (c->pending[mid].first_row <= rows[i])
        lo = mid;
      else
        hi = mid;
    }
    if (lo < c->npending && !marked[lo]) {
      marked[lo] = 1;
      why[lo] = reasons[i];
      which[lo] = rows[i] - c->pending[lo].first_row;
    }
  }
  int rc = 0;
  for (size_t k = 0; k < c->npending && rc == 0; k++)
    if (marked[k])
      rc = ps__dead_letter_pending(c, &c->pending[k], nr ? (long long)which[k] : -1, why[k]);
  free(marked);
  free(why);
  free(which);
  return rc;
}

/* Flushes and acks; returns 0 when done, PS_ECONN if the connection broke,
   PS_ETIMEDOUT if stopping and the deadline passed. */
static int ps__flush(ps__consumer *c) {
  ps_consumer_group *g = c->g;
  if (!c->pending_msgs)
    return 0;
  size_t rows = ps_sink_pending(c->sink);
  for (int attempt = 0;; attempt++) {
    char err[512];
    ps_sink_result r = PS_SINK_RETRY;
    if (!c->sink_open) {
      int orc = ps_sink_open(c->sink, err, sizeof err);
      if (orc == 0)
        c->sink_open = 1;
      else if (orc != PS_ECONN)
        ps_error("consumer: cannot create the sink's table", "queue", g->opt.queue, "error", err);
    }
    int64_t t0 = ps_now_ns();
    if (c->sink_open)
      r = ps_sink_flush(c->sink, err, sizeof err);
    ps_histogram_observe(g->m_ins_seconds, (double)(ps_now_ns() - t0) / 1e9);
    if (r == PS_SINK_OK) {
      ps_counter_add(g->m_ins_ok, 1);
      ps_counter_add(g->m_rows, (int64_t)rows);
      ps_histogram_observe(g->m_ins_rows, (double)rows);
      c->pending_msgs = 0;
      c->oldest_ns = 0;
      ps__pending_clear(c);
      if (ps_broker_ack(c->conn, c->last_tag, 1) != 0) {
        /* The rows are in; their messages will be redelivered and land again
           as duplicates that the table's engine collapses. */
        ps_warn("consumer: ack failed after insert; messages will be redelivered", "queue", g->opt.queue);
        return PS_ECONN;
      }
      return 0;
    }
    ps_counter_add(r == PS_SINK_DROP ? g->m_ins_drop : g->m_ins_retry, 1);
    if (r == PS_SINK_DROP) {
      int rc = ps__dead_letter_rejected(c, err);
      ps_counter_add(g->m_rows, (int64_t)(rows - ps__rejected_rows(c)));
      c->pending_msgs = 0;
      c->oldest_ns = 0;
      ps__pending_clear(c);
      if (rc != 0 || ps_broker_ack(c->conn, c->last_tag, 1) != 0)
        return PS_ECONN;
      return 0;
    }
    long long sup;
    if (ps_log_ratelimit_ok(&g->insert_rl, 5000, &sup)) {
      char n[32];
      snprintf(n, sizeof n, "%lld", sup);
      ps_warn("consumer: insert failed; retrying", "queue", g->opt.queue, "error", err, "suppressed", n);
    }
    if (atomic_load(&g->stop) && ps_now_ns() >= atomic_load(&g->deadline_ns))
      return PS_ETIMEDOUT;
    ps_backoff_sleep(attempt, 200, 10000, &g->deadline_ns, NULL);
  }
}

/* Flushes; if that fails the connection goes, and its unacknowledged messages with it, back to the queue. */
static void ps__flush_or_drop(ps__consumer *c) {
  int rc = ps__flush(c);
  if (rc == PS_ETIMEDOUT)
    ps_warn("consumer: stopped before its last batch landed; its messages return to the queue", "queue",
            c->g->opt.queue);
  if (rc != 0)
    ps__drop_conn(c);
}

static uint64_t ps__hash(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h ? h : 1;
}

/* How many times this message has been delivered, as far as anyone can tell. */
static int64_t ps__deliveries(ps__consumer *c, const ps_delivery *d) {
  if (d->delivery_count > 0) /* quorum queues count for us */
    return d->delivery_count + 1;
  if (!d->redelivered || !d->message_id[0])
    return 1;
  uint64_t h = ps__hash(d->message_id);
  size_t slot = h % (sizeof c->seen / sizeof c->seen[0]);
  if (c->seen[slot].hash != h) {
    c->seen[slot].hash = h;
    c->seen[slot].count = 1; /* first redelivery we see: at least the second delivery */
  }
  return ++c->seen[slot].count;
}

/* Publishes d to the dead-letter exchange with reason and acks it; drops the connection if that fails. */
static void ps__dead_letter(ps__consumer *c, const ps_delivery *d, const char *reason, ps_counter *metric) {
  ps_consumer_group *g = c->g;
  char rk[256];
  snprintf(rk, sizeof rk, "%.*s", (int)d->routing_key_len, d->routing_key);
  ps_dead_letter dl = {g->opt.dead_letter_exchange, g->opt.queue, reason, g->opt.queue,
                       g->opt.name ? g->opt.name : g->opt.queue, rk, d->message_id, d->content_type,
                       d->body, d->len};
  if (ps_dead_letter_send(&c->dls, &dl, PS__DL_CONFIRM_MS) != 0) {
    ps_warn("consumer: cannot dead-letter a message; it will be redelivered", "queue", g->opt.queue);
    ps__drop_conn(c);
    return;
  }
  /* Counted once the letter is confirmed, i.e. in its queue: what the metric says is there is. */
  ps_counter_add(metric, 1);
  ps_warn("consumer: message dead-lettered", "queue", g->opt.queue, "routing_key", rk, "message_id",
          d->message_id, "reason", reason);
  if (ps_broker_ack(c->conn, d->tag, 0) != 0) {
    ps_warn("consumer: ack failed after dead-lettering; the message will be redelivered and dead-lettered again",
            "queue", g->opt.queue);
    ps__drop_conn(c);
  }
}

/*
 * Whether c holds as many bytes of unacknowledged messages as it may
 * (max_held_bytes): a direct consumer then flushes, a buffered one takes
 * nothing more until the buffer's insert lets it acknowledge some.
 */
static int ps__holds_enough(const ps__consumer *c) {
  return c->g->opt.max_held_bytes && c->copies.len >= c->g->opt.max_held_bytes;
}

static void ps__handle(ps__consumer *c, const ps_delivery *d) {
  ps_consumer_group *g = c->g;
  ps_counter_add(g->m_consumed, 1);
  char err[512];
  int64_t seen = ps__deliveries(c, d);
  if (g->opt.max_redeliveries > 0 && seen > (int64_t)g->opt.max_redeliveries + 1) {
    snprintf(err, sizeof err, "delivered %lld times, more than max_redeliveries (%d) allows", (long long)seen,
             g->opt.max_redeliveries);
    ps__dead_letter(c, d, err, g->m_dead_redelivered);
    return;
  }
  int n = ps_decoder_decode(c->dec, d, c->sink, err, sizeof err);
  if (n < 0) {
    char reason[600];
    snprintf(reason, sizeof reason, "undecodable: %s", err);
    ps__dead_letter(c, d, reason, g->m_dead_undecodable);
    return;
  }
  if (c->npending == c->cap_pending) {
    c->cap_pending = c->cap_pending ? c->cap_pending * 2 : 64;
    c->pending = realloc(c->pending, c->cap_pending * sizeof *c->pending);
    if (!c->pending)
      abort();
  }
  struct ps__pending *pm = &c->pending[c->npending++];
  pm->tag = d->tag;
  pm->first_row = c->batch_rows;
  pm->nrows = (size_t)n;
  c->batch_rows += (size_t)n;
  pm->off = c->copies.len;
  pm->len = d->len;
  pm->rk_len = d->routing_key_len;
  pm->id_len = strlen(d->message_id);
  pm->ct_len = strlen(d->content_type);
  ps_buf_append(&c->copies, d->body, d->len);
  ps_buf_append(&c->copies, d->routing_key, d->routing_key_len);
  ps_buf_append(&c->copies, d->message_id, pm->id_len);
  ps_buf_append(&c->copies, d->content_type, pm->ct_len);
  pm->state = 0;
  pm->row = 0;
  pm->reason = NULL;
  if (g->sinker) {
    if (ps_sinker_push(g->sinker, c->id, c->gen, d->tag, c->sink, &g->stop) != 0) {
      /* Stopping while the buffer is full: leave it unacknowledged, it returns to the queue. */
      c->npending--;
      ps_sink_discard(c->sink);
      ps__drop_conn(c);
    } else if (ps__holds_enough(c)) {
      ps_sinker_insert_now(g->sinker);
    }
    return;
  }
  c->last_tag = d->tag;
  if (!c->pending_msgs++)
    c->oldest_ns = ps_now_ns();
}

/*
 * Buffered: takes the sinker's completions, then acknowledges the longest run
 * of settled messages at the head (dead-lettering the refused ones first) and
 * forgets them. Drops the connection if the broker fails.
 */
static void ps__settle(ps__consumer *c) {
  ps_consumer_group *g = c->g;
  ps_sinker_done done[32];
  size_t n, from = 0;
  while ((n = ps_sinker_take(g->sinker, c->id, done, sizeof done / sizeof done[0])) > 0) {
    for (size_t i = 0; i < n; i++) {
      if (done[i].gen != c->gen)
        continue;
      while (from < c->npending && c->pending[from].tag != done[i].tag)
        from++;
      if (from == c->npending)
        break; /* cannot happen: completions come in push order */
      struct ps__pending *pm = &c->pending[from];
      pm->state = done[i].rejected ? 2 : 1;
      if (done[i].rejected) {
        pm->row = done[i].row;
        pm->reason = strdup(done[i].reason);
        if (!pm->reason)
          abort();
      }
    }
  }
  size_t k = 0;
  while (k < c->npending && c->pending[k].state) {
    struct ps__pending *pm = &c->pending[k];
    if (pm->state == 2 && ps__dead_letter_pending(c, pm, (long long)pm->row, pm->reason) != 0) {
      ps__drop_conn(c);
      return;
    }
    k++;
  }
  if (!k)
    return;
  if (ps_broker_ack(c->conn, c->pending[k - 1].tag, 1) != 0) {
    ps_warn("consumer: ack failed after insert; messages will be redelivered", "queue", g->opt.queue);
    ps__drop_conn(c);
    return;
  }
  /* Forget them: shift the rest (bounded by prefetch) to the front. */
  size_t base = k < c->npending ? c->pending[k].off : c->copies.len;
  for (size_t j = 0; j < k; j++)
    free(c->pending[j].reason);
  memmove(c->pending, c->pending + k, (c->npending - k) * sizeof *c->pending);
  c->npending -= k;
  for (size_t j = 0; j < c->npending; j++)
    c->pending[j].off -= base;
  memmove(c->copies.data, c->copies.data + base, c->copies.len - base);
  c->copies.len -= base;
  c->copies.data[c->copies.len] = '\0';
}

/*
 * Stopping drains: once the stop flag is up the consumer keeps taking what
 * the queue holds (the workers have published their last batches by then)
 * until no delivery comes for PS__DRAIN_IDLE_MS or the deadline passes, then
 * flushes, acks and leaves.
 */
#define PS__DRAIN_IDLE_MS 300

static void *ps__consumer_main(void *arg) {
  ps__consumer *c = arg;
  ps_consumer_group *g = c->g;
  char name[16];
  snprintf(name, sizeof name, "ps-consumer-%d", c->id);
  pthread_setname_np(pthread_self(), name);
  c->dec = g->factory.decoder(g->factory.ud);
  c->sink = g->sinker ? ps_sinker_stage(g->sinker) : g->factory.sink(g->factory.ud);
  int attempt = 0;
  const int64_t flush_ns = (int64_t)g->opt.flush_ms * 1000000;
  for (;;) {
    int stopping = atomic_load(&g->stop);
    if (stopping && (!c->conn || ps_now_ns() >= atomic_load(&g->deadline_ns)))
      break;
    if (!c->conn) {
      if (ps__connect(c) != 0) {
        ps_backoff_sleep(attempt++, 100, 5000, NULL, &g->stop);
        continue;
      }
      if (c->connected_before)
        PS_COUNT(broker_reconnects_consumer, 1);
      c->connected_before = 1;
      attempt = 0;
    }
    if (g->sinker) {
      ps__settle(c);
      if (!c->conn)
        continue;
    }
    if (g->sinker && !stopping && ps__holds_enough(c)) {
      /* Holding all it may: nothing more is taken until the insert holding its rows settles some. */
      ps_sinker_wait(g->sinker, c->id, 100);
      continue;
    }
    int wait_ms = stopping ? PS__DRAIN_IDLE_MS : 200;
    if (g->sinker && c->npending && !stopping)
      wait_ms = 50;
    if (c->pending_msgs && !stopping) {
      int64_t left = c->oldest_ns + flush_ns - ps_now_ns();
      wait_ms = left <= 0 ? 0 : (int)(left / 1000000) + 1;
      if (wait_ms > 200)
        wait_ms = 200;
    }
    ps_delivery d;
    int rc = ps_broker_next(c->conn, &d, wait_ms);
    if (rc == 0) {
      ps__handle(c, &d);
      if (c->conn)
        ps_broker_release(c->conn, &d);
    } else if (rc == PS_ECONN) {
      ps__drop_conn(c);
      continue;
    }
    if (!c->conn)
      continue;
    int drained = stopping && rc == PS_ETIMEDOUT;
    if (drained && g->sinker) {
      /* The sinker inserts at once while stopping: wait for what is ours, ack it. */
      while (c->conn && c->npending && ps_now_ns() < atomic_load(&g->deadline_ns)) {
        ps__settle(c);
        if (c->conn && c->npending)
          ps_sinker_wait(g->sinker, c->id, 100);
      }
      break;
    }
    /* Flush at batch_rows, at flush_ms, with the prefetch window full (the broker then sends nothing
       more until we ack, and waiting for flush_ms would only stall the queue), or holding max_held_bytes. */
    if (c->pending_msgs && (drained || ps_sink_pending(c->sink) >= (size_t)g->opt.batch_rows ||
                            (g->opt.prefetch > 0 && c->pending_msgs >= (size_t)g->opt.prefetch) ||
                            ps__holds_enough(c) || ps_now_ns() - c->oldest_ns >= flush_ns)) {
      ps__flush_or_drop(c);
    }
    if (drained)
      break;
  }
  if (c->conn && g->sinker && c->npending)
    ps_warn("consumer: stopped before its last messages landed; they return to the queue", "queue",
            g->opt.queue);
  if (c->conn && !g->sinker)
    ps__flush_or_drop(c);
  if (c->conn)
    ps__drop_conn(c);
  ps_dead_letter_sender_close(&c->dls);
  ps_sink_destroy(c->sink);
  ps_decoder_destroy(c->dec);
  free(c->pending);
  ps_buf_free(&c->copies);
  return NULL;
}

ps_consumer_group *ps_consumers_start(const ps_consumer_options *opt, ps_broker *broker,
                                      const ps_consumer_factory *factory) {
  ps_consumer_group *g = calloc(1, sizeof *g);
  if (!g)
    abort();
  g->opt = *opt;
  g->broker = broker;
  g->factory = *factory;
  atomic_store(&g->deadline_ns, INT64_MAX);
  char l[512], lt[600];
  snprintf(l, sizeof l, "queue=\"%s\"", opt->queue);
  snprintf(lt, sizeof lt, "queue=\"%s\",table=\"%s\"", opt->queue, opt->table);
  g->m_consumed = ps_metrics_counter("penstock_messages_consumed_total", l, "messages taken from a queue", 0);
  char ld[700];
  snprintf(ld, sizeof ld, "%s,reason=\"undecodable\"", l);
  g->m_dead_undecodable = ps_metrics_counter("penstock_messages_dead_lettered_total", ld,
                                             "messages sent to the dead-letter exchange, by reason", 0);
  snprintf(ld, sizeof ld, "%s,reason=\"rejected_by_sink\"", l);
  g->m_dead_rejected = ps_metrics_counter("penstock_messages_dead_lettered_total", ld, NULL, 0);
  snprintf(ld, sizeof ld, "%s,reason=\"redelivered\"", l);
  g->m_dead_redelivered = ps_metrics_counter("penstock_messages_dead_lettered_total", ld, NULL, 0);
  g->m_rows = ps_metrics_counter("penstock_rows_inserted_total", lt, "rows stored by a sink", 0);
  snprintf(ld, sizeof ld, "%s,result=\"ok\"", lt);
  g->m_ins_ok = ps_metrics_counter("penstock_inserts_total", ld, "sink flushes (inserts), by result", 0);
  snprintf(ld, sizeof ld, "%s,result=\"retry\"", lt);
  g->m_ins_retry = ps_metrics_counter("penstock_inserts_total", ld, NULL, 0);
  snprintf(ld, sizeof ld, "%s,result=\"drop\"", lt);
  g->m_ins_drop = ps_metrics_counter("penstock_inserts_total", ld, NULL, 0);
  snprintf(ld, sizeof ld, "table=\"%s\"", opt->table);
  g->m_ins_seconds = ps_metrics_histogram("penstock_insert_duration_seconds", ld, "time of one sink flush",
                                          ps_metrics_latency_bounds, ps_metrics_latency_nbounds);
  static const double rows_bounds[] = {1, 10, 100, 1000, 5000, 10000, 50000, 100000};
  g->m_ins_rows = ps_metrics_histogram("penstock_insert_rows", ld, "rows per successful sink flush", rows_bounds,
                                       sizeof rows_bounds / sizeof rows_bounds[0]);
  if (opt->buffered) {
    ps_sinker_options so = {opt->queue,       opt->count,     opt->buffer_rows, opt->batch_rows, opt->flush_ms,
                            g->m_rows,        g->m_ins_ok,    g->m_ins_retry,   g->m_ins_drop,   g->m_ins_seconds,
                            g->m_ins_rows,    opt->prefetch};
    g->sinker = ps_sinker_start(&so, factory->sink(factory->ud));
  }
  g->consumers = calloc((size_t)(opt->count > 0 ? opt->count : 1), sizeof *g->consumers);
  for (int i = 0; i < opt->count; i++) {
    g->consumers[i].g = g;
    g->consumers[i].dls.broker = broker;
    g->consumers[i].id = i;
    if (pthread_create(&g->consumers[i].thread, NULL, ps__consumer_main, &g->consumers[i]) != 0)
      abort();
  }
  return g;
}

void ps_consumers_stop(ps_consumer_group *g, int64_t deadline_ns) {
  if (!g)
    return;
  atomic_store(&g->deadline_ns, deadline_ns);
  atomic_store(&g->stop, 1);
  if (g->sinker)
    ps_sinker_hurry(g->sinker, deadline_ns);
  for (int i = 0; i < g->opt.count; i++)
    pthread_join(g->consumers[i].thread, NULL);
  ps_sinker_stop(g->sinker, deadline_ns);
  free(g->consumers);
  free(g);
}
