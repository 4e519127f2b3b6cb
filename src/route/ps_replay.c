/*
 * ps_replay: spool → broker (see ps_replay.h).
 *
 * DESIGN: the window (ps_inflight) holds the records read and not yet
 * committed, in spool order, each tagged with its end position. Only the
 * oldest entry is ever committed, when it is confirmed, so a commit never
 * passes a record whose publish is still in doubt. An unroutable record is
 * replaced, in place, by its dead letter, which is committed (in the record's
 * turn) when it is confirmed.
 */
#include "route/ps_replay.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consume/ps_deadletter.h"
#include "core/ps_backoff.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"
#include "queue/ps_queue.h"
#include "route/ps_inflight.h"

struct ps_replay {
  ps_replay_options opt;
  pthread_t thread;
  _Atomic int stop;
  ps_broker_conn *conn;
  uint64_t seq;
  int attempt;
  ps_inflight fl;
  ps_buf rec;
};

static void ps__on_confirm(void *ctx, uint64_t seq, int multiple, int ack) {
  ps_replay *rp = ctx;
  ps_inflight_confirm(&rp->fl, seq, multiple, ack);
}

static void ps__on_return(void *ctx, const char *message_id, int reply_code, const char *reply_text) {
  ps_replay *rp = ctx;
  (void)reply_text;
  ps_inflight_entry *e = ps_inflight_find_id(&rp->fl, message_id);
  if (e) {
    e->returned = 1;
    e->reply_code = reply_code;
  }
}

/* Drops the connection and the window: the spool is read again from its oldest uncommitted record. */
static void ps__lost(ps_replay *rp) {
  if (rp->conn) {
    PS_COUNT(broker_connections_publisher, -1);
    ps_broker_close(rp->conn);
    rp->conn = NULL;
  }
  while (ps_inflight_count(&rp->fl))
    ps_inflight_pop(&rp->fl);
  ps_spool_rewind(rp->opt.spool);
}

static int ps__publish(ps_replay *rp, ps_inflight_entry *e) {
  if (ps_broker_publish(rp->conn, &e->m) != 0) {
    ps__lost(rp);
    return -1;
  }
  e->seq = ++rp->seq;
  e->sent_ns = ps_now_ns();
  return 0;
}

/* Reads records into the window and publishes them. */
static void ps__fill(ps_replay *rp) {
  while (rp->conn && !ps_inflight_full(&rp->fl)) {
    const void *data;
    size_t len;
    ps_spool_pos end;
    if (ps_spool_next(rp->opt.spool, &data, &len, &end) != 0)
      return;
    ps_message m;
    ps_broker_arg hd[PS_INFLIGHT_MAX_HEADERS];
    void *own = NULL;
    if (ps_message_unpack(data, len, &m, hd, &own) != 0) {
      ps_error("replay: a spool record is not a message; skipped");
      ps_counter_add(ps_metrics_counter("penstock_spool_corrupt_total", "", NULL, 0), 1);
      /* A placeholder, done already: committed in its turn, never before the records ahead of it. */
      ps_message none = {.exchange = ""};
      ps_inflight_entry *e = ps_inflight_push(&rp->fl, 0, &none, NULL);
      e->state = PS_INFLIGHT_ACKED;
      e->tag[0] = end.segment;
      e->tag[1] = end.offset;
      e->returned = -1; /* not a message: nothing to count as replayed */
      continue;
    }
    ps_inflight_entry *e = ps_inflight_push(&rp->fl, 0, &m, NULL);
    e->events = ps_message_unpacked_events(own);
    ps_message_unpacked_free(own);
    e->tag[0] = end.segment;
    e->tag[1] = end.offset;
    if (ps__publish(rp, e) != 0)
      return;
  }
}

static void ps__settle_head(ps_replay *rp) {
  while (ps_inflight_count(&rp->fl)) {
    ps_inflight_entry *e = ps_inflight_at(&rp->fl, 0);
    if (e->state == PS_INFLIGHT_PENDING)
      return;
    if (e->state == PS_INFLIGHT_NACKED) {
      PS_COUNT(publish_nacks_total, 1);
      ps__lost(rp);
      return;
    }
    if (e->returned > 0 && rp->opt.dead_letter_exchange) {
      /* Its dead letter takes its place (and its spool position), published now. */
      ps__publish(rp, ps_inflight_dead_letter_head(&rp->fl, rp->opt.dead_letter_exchange, rp->opt.skipped_key,
                                                   &rp->rec));
      continue;
    }
    ps_spool_commit(rp->opt.spool, (ps_spool_pos){e->tag[0], e->tag[1]});
    if (e->returned == 0) {
      PS_COUNT(spool_replayed_messages_total, 1);
      if (e->events) { /* what the workers could not publish, published now */
        PS_COUNT(messages_published_total, 1);
        PS_COUNT(events_published_total, e->events);
      }
    }
    ps_inflight_pop(&rp->fl);
  }
}

static void *ps__main(void *arg) {
  ps_replay *rp = arg;
  pthread_setname_np(pthread_self(), "ps-replay");
  ps_confirm_handler h = {rp, ps__on_confirm, ps__on_return};
  int replaying = 0;
  while (!atomic_load(&rp->stop)) {
    if (!ps_inflight_count(&rp->fl) && !ps_spool_wait(rp->opt.spool, 200)) {
      if (replaying) {
        ps_info("replay: the spool is empty again");
        replaying = 0;
      }
      continue;
    }
    if (!rp->conn) {
      int rc = ps_broker_connect(rp->opt.broker, &rp->conn);
      if (rc == 0 && (rc = ps_broker_confirm_select(rp->conn)) != 0)
        ps_broker_close(rp->conn);
      if (rc != 0) {
        rp->conn = NULL;
        ps_backoff_sleep(rp->attempt++, 100, 5000, NULL, &rp->stop);
        continue;
      }
      PS_COUNT(broker_connections_publisher, 1);
      rp->attempt = 0;
      rp->seq = 0;
    }
    if (!replaying) {
      ps_spool_stats st;
      ps_spool_stats_get(rp->opt.spool, &st);
      char n[32];
      snprintf(n, sizeof n, "%llu", (unsigned long long)st.records);
      ps_info("replay: publishing what the spool holds", "records", n);
      replaying = 1;
    }
    ps__fill(rp);
    if (!rp->conn || !ps_inflight_count(&rp->fl))
      continue;
    int rc = ps_broker_confirms(rp->conn, &h, 50);
    if (rc == PS_ECONN) {
      ps__lost(rp);
      continue;
    }
    ps__settle_head(rp);
    if (rp->conn && ps_inflight_count(&rp->fl)) {
      ps_inflight_entry *e = ps_inflight_at(&rp->fl, 0);
      if (e->seq && ps_now_ns() - e->sent_ns > (int64_t)rp->opt.confirm_timeout_ms * 1000000) {
        PS_COUNT(publish_confirm_timeouts_total, 1);
        ps_warn("replay: the broker did not confirm a publish in time; reconnecting");
        ps__lost(rp);
      }
    }
  }
  ps__lost(rp);
  return NULL;
}

ps_replay *ps_replay_start(const ps_replay_options *opt) {
  ps_replay *rp = calloc(1, sizeof *rp);
  if (!rp)
    abort();
  rp->opt = *opt;
  ps_inflight_init(&rp->fl, (size_t)(opt->window > 0 ? opt->window : 256), opt->window_bytes);
  if (pthread_create(&rp->thread, NULL, ps__main, rp) != 0)
    abort();
  return rp;
}

void ps_replay_stop(ps_replay *rp) {
  if (!rp)
    return;
  atomic_store(&rp->stop, 1);
  ps_spool_wake(rp->opt.spool);
  pthread_join(rp->thread, NULL);
  ps_inflight_free(&rp->fl);
  ps_buf_free(&rp->rec);
  free(rp);
}
