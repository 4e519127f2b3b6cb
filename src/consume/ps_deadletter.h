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

/**
 * A confirmed sender of dead letters: its own broker connection in
 * publisher-confirm mode, opened when first needed (a consuming connection
 * cannot wait for confirms without taking deliveries). Owned by one thread.
 */
typedef struct ps_dead_letter_sender {
  ps_broker *broker;
  ps_broker_conn *conn;
  uint64_t seq;      /* publishes on conn */
  uint64_t confirmed; /* highest publish number acknowledged */
  int nacked;
} ps_dead_letter_sender;

/**
 * Publishes dl and waits up to timeout_ms for the broker to confirm it, so
 * that the caller may then acknowledge the original. Returns 0, or PS_ECONN /
 * PS_ETIMEDOUT / PS_EREJECTED (refused: the connection is closed and reopened
 * at the next call): keep the original unacknowledged.
 */
int ps_dead_letter_send(ps_dead_letter_sender *s, const ps_dead_letter *dl, int timeout_ms);

/** Closes the sender's connection (it reopens when used again). */
void ps_dead_letter_sender_close(ps_dead_letter_sender *s);

#endif
