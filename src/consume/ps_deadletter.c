/* ps_deadletter: publishing dead letters with their reason (see ps_deadletter.h). */
#include "consume/ps_deadletter.h"

#include <stdio.h>
#include <time.h>

int ps_dead_letter_publish(ps_broker_conn *c, const ps_dead_letter *dl) {
  char when[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  ps_broker_arg headers[] = {
      {"x-penstock-reason", dl->reason ? dl->reason : "", 0},
      {"x-penstock-source-queue", dl->source_queue ? dl->source_queue : "", 0},
      {"x-penstock-consumer", dl->consumer ? dl->consumer : "", 0},
      {"x-penstock-time", when, 0},
      {"x-penstock-routing-key", dl->original_routing_key ? dl->original_routing_key : "", 0},
      {"x-penstock-message-id", dl->message_id ? dl->message_id : "", 0},
  };
  ps_message m = {
      .exchange = dl->exchange,
      .routing_key = dl->routing_key,
      .content_type = dl->content_type && *dl->content_type ? dl->content_type : NULL,
      .message_id = dl->message_id && *dl->message_id ? dl->message_id : NULL,
      .timestamp = (int64_t)now,
      .persistent = 1,
      .headers = headers,
      .nheaders = sizeof headers / sizeof headers[0],
      .body = dl->body,
      .len = dl->len,
  };
  return ps_broker_publish(c, &m);
}
