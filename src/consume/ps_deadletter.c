/* ps_deadletter: publishing dead letters with their reason (see ps_deadletter.h). */
#include "consume/ps_deadletter.h"

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

int ps_dead_letter_publish(ps_broker_conn *c, const ps_dead_letter *dl) {
  ps_dead_letter_headers h;
  ps_message m;
  ps_dead_letter_message(dl, &h, &m);
  return ps_broker_publish(c, &m);
}
