/*
 * ps_deadletter: where what cannot be processed goes, with the reason.
 *
 * A dead letter is the original message (body, content type and message id), published persistent to the
 * dead-letter exchange with the routing key of its source queue (so the
 * original's `<queue>.error` queues receive it) and headers saying why:
 *   x-penstock-reason        what went wrong, in words
 *   x-penstock-source-queue  the queue it was taken from ("" for dispatch)
 *   x-penstock-consumer      the consumer (or "dispatch")
 *   x-penstock-time          when, RFC 3339 UTC
 *   x-penstock-routing-key   the message's original routing key
 *   x-penstock-message-id    its original message id, if any
 * Never a silent drop: a dead letter that cannot be published is an error the
 * caller must handle (keep the message unacknowledged).
 */
#ifndef PS_DEADLETTER_H
#define PS_DEADLETTER_H

#include <stddef.h>

#include "broker/ps_broker.h"

typedef struct ps_dead_letter {
  const char *exchange;      /* the dead-letter exchange */
  const char *routing_key;   /* usually the source queue's name */
  const char *reason;
  const char *source_queue;
  const char *consumer;
  const char *original_routing_key;
  const char *message_id;
  const char *content_type;
  const void *body;
  size_t len;
} ps_dead_letter;

/** Room for the headers of one dead letter; lives as long as the message built in it. */
typedef struct ps_dead_letter_headers {
  ps_broker_arg args[6];
  char when[32];
} ps_dead_letter_headers;

/** Builds the message for dl in *m; m borrows from dl and h. */
void ps_dead_letter_message(const ps_dead_letter *dl, ps_dead_letter_headers *h, ps_message *m);

/** Publishes dl on c. Returns 0 or the broker's error (PS_ECONN: reconnect, retry). */
int ps_dead_letter_publish(ps_broker_conn *c, const ps_dead_letter *dl);

#endif
