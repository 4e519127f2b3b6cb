/* ps_deadletter: publishing dead letters with their reason (see ps_deadletter.h). */
#include "consume/ps_deadletter.h"

#include "core/ps_error.h"
#include "core/ps_log.h"
#include "queue/ps_queue.h"

#include <stdio.h>
#include <time.h>

static const char *ps__or_empty(const char *s) { return s ? s : ""; }

void ps_dead_letter_message(const ps_dead_letter *dl, ps_dead_letter_headers *h, ps_message *m) {
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(h->when, sizeof h->when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  h->args[0] = (ps_broker_arg){"x-penstock-reason", ps__or_empty(dl->reason), 0};
  h->args[1] = (ps_broker_arg){"x-penstock-source-queue", ps__or_empty(dl->source_queue), 0};
  h->args[2] = (ps_broker_arg){"x-penstock-consumer", ps__or_empty(dl->consumer), 0};
  h->args[3] = (ps_broker_arg){"x-penstock-time", h->when, 0};
  h->args[4] = (ps_broker_arg){"x-penstock-routing-key", ps__or_empty(dl->original_routing_key), 0};
  h->args[5] = (ps_broker_arg){"x-penstock-message-id", ps__or_empty(dl->message_id), 0};
  *m = (ps_message){
      .exchange = dl->exchange,
      .routing_key = dl->routing_key,
      .content_type = dl->content_type && *dl->content_type ? dl->content_type : NULL,
      .message_id = dl->message_id && *dl->message_id ? dl->message_id : NULL,
      .timestamp = (int64_t)now,
      .persistent = 1,
      .headers = h->args,
      .nheaders = sizeof h->args / sizeof h->args[0],
      .body = dl->body,
      .len = dl->len,
  };
}

static void ps__dl_confirm(void *ctx, uint64_t seq, int multiple, int ack) {
  ps_dead_letter_sender *s = ctx;
  (void)multiple;
  if (!ack)
    s->nacked = 1;
  else if (seq > s->confirmed)
    s->confirmed = seq;
}

void ps_dead_letter_sender_close(ps_dead_letter_sender *s) {
  ps_broker_close(s->conn);
  s->conn = NULL;
}

int ps_dead_letter_send(ps_dead_letter_sender *s, const ps_dead_letter *dl, int timeout_ms) {
  if (!s->conn) {
    int rc = ps_broker_connect(s->broker, &s->conn);
    if (rc == 0 && (rc = ps_broker_confirm_select(s->conn)) != 0)
      ps_broker_close(s->conn);
    if (rc != 0) {
      s->conn = NULL;
      return PS_ECONN;
    }
    s->seq = s->confirmed = 0;
  }
  ps_dead_letter_headers h;
  ps_message m;
  ps_dead_letter_message(dl, &h, &m);
  /* Not mandatory: a queue declared without `dead_letter: true` has no `.error` queue, and RabbitMQ drops
     its dead letters, as the topology asks; the others route, since penstock declares their bindings. */
  s->nacked = 0;
  int rc = ps_broker_publish(s->conn, &m);
  uint64_t mine = ++s->seq;
  ps_confirm_handler handler = {s, ps__dl_confirm, NULL};
  int64_t until = ps_now_ns() + (int64_t)timeout_ms * 1000000;
  while (rc == 0 && s->confirmed < mine && !s->nacked) {
    int64_t left = (until - ps_now_ns()) / 1000000;
    if (left <= 0) {
      rc = PS_ETIMEDOUT;
      break;
    }
    int r = ps_broker_confirms(s->conn, &handler, (int)left);
    if (r == PS_ECONN)
      rc = PS_ECONN;
  }
  if (rc == 0 && s->nacked)
    rc = PS_EREJECTED;
  if (rc != 0)
    ps_dead_letter_sender_close(s); /* a fresh connection: no confirm of this one can arrive late */
  return rc;
}
