/*
 * ps_broker: the message broker interface.
 *
 * A broker (RabbitMQ over AMQP 0-9-1 today; an in-process one later) is a
 * struct of operations. A ps_broker holds what is needed to connect; each
 * thread opens its own ps_broker_conn and never shares it, as rabbitmq-c
 * requires. Every new connection declares the topology (exchanges, queues,
 * bindings) before use, so a restarted broker gets it back without help.
 *
 * Operations return 0 or a negative PS_E* code. PS_ECONN means the connection
 * is unusable: close it and connect again (with backoff). Deliveries stay
 * unacknowledged until ack/nack; closing a connection returns them to their
 * queue.
 *
 * Publisher confirms: after confirm_select, the broker confirms every publish
 * of the connection, numbered 1, 2, ... in publish order; `confirms` reads
 * those confirmations (and the mandatory messages it could not route, each
 * reported before its confirmation) as they arrive. A publish that was never
 * confirmed when the connection died may or may not have been routed.
 */
#ifndef PS_BROKER_H
#define PS_BROKER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ps_broker ps_broker;
typedef struct ps_broker_conn ps_broker_conn;
typedef struct ps_broker_ops ps_broker_ops;

/** A queue argument (x-dead-letter-exchange, x-max-length, x-queue-type, ...). */
typedef struct ps_broker_arg {
  const char *key;
  const char *str; /* string value, or NULL for an integer one */
  int64_t num;
} ps_broker_arg;

typedef struct ps_exchange_decl {
  const char *name;
  const char *type; /* "topic", "direct", "fanout", "headers" */
  int durable;
} ps_exchange_decl;

typedef struct ps_queue_decl {
  const char *name;
  int durable;
  const ps_broker_arg *args;
  size_t nargs;
} ps_queue_decl;

typedef struct ps_binding_decl {
  const char *queue, *exchange, *key;
} ps_binding_decl;

/** What a connection declares when it opens. All borrowed for the broker's life. */
typedef struct ps_topology {
  const ps_exchange_decl *exchanges;
  size_t nexchanges;
  const ps_queue_decl *queues;
  size_t nqueues;
  const ps_binding_decl *bindings;
  size_t nbindings;
} ps_topology;

/** A message to publish; everything borrowed for the duration of the call. */
typedef struct ps_message {
  const char *exchange;
  const char *routing_key;
  const char *content_type;
  const char *message_id;
  int64_t timestamp; /* unix seconds; 0: none */
  int persistent;
  int mandatory; /* unroutable: returned (see ps_confirm_handler), not dropped */
  const ps_broker_arg *headers; /* application headers (dead-letter reasons, ...) */
  size_t nheaders;
  const void *body;
  size_t len;
} ps_message;

/** A message taken from a queue; valid until ps_broker_release. */
typedef struct ps_delivery {
  uint64_t tag;
  int redelivered;
  const char *routing_key;
  size_t routing_key_len;
  const char *content_type; /* NUL-terminated copy, "" if none */
  int64_t timestamp;        /* unix seconds; 0: none */
  const char *message_id;   /* NUL-terminated copy, "" if none */
  int64_t delivery_count;   /* x-delivery-count (quorum queues) when present, else 0 */
  const void *body;
  size_t len;
} ps_delivery;

/** What ps_broker_confirms reports, on the calling thread. */
typedef struct ps_confirm_handler {
  void *ctx;
  /* Publish number seq (and every earlier one not yet reported, if multiple) was
     confirmed (ack = 1: the broker took responsibility) or refused (ack = 0). */
  void (*confirm)(void *ctx, uint64_t seq, int multiple, int ack);
  /* A mandatory message could not be routed; its confirmation follows. */
  void (*returned)(void *ctx, const char *message_id, int reply_code, const char *reply_text);
} ps_confirm_handler;

struct ps_broker_ops {
  const char *name;
  int (*connect)(ps_broker *b, ps_broker_conn **out);
  int (*publish)(ps_broker_conn *c, const ps_message *m);
  int (*consume)(ps_broker_conn *c, const char *queue, int prefetch, const char *tag);
  /* 0 with *d filled, PS_ETIMEDOUT, PS_EAGAIN (nothing for the caller), PS_ECONN. */
  int (*next)(ps_broker_conn *c, ps_delivery *d, int timeout_ms);
  void (*release)(ps_broker_conn *c, ps_delivery *d);
  int (*ack)(ps_broker_conn *c, uint64_t tag, int multiple);
  int (*nack)(ps_broker_conn *c, uint64_t tag, int multiple, int requeue);
  /* A cheap round trip proving the connection works: 0 or PS_ECONN. */
  int (*ping)(ps_broker_conn *c);
  /* Turns publisher confirms on for the connection's later publishes: 0 or PS_ECONN. */
  int (*confirm_select)(ps_broker_conn *c);
  /* Reports what arrived, waiting up to timeout_ms for the first report:
     0 (at least one), PS_ETIMEDOUT (none), PS_ECONN. */
  int (*confirms)(ps_broker_conn *c, const ps_confirm_handler *h, int timeout_ms);
  void (*close)(ps_broker_conn *c);
  void (*destroy)(ps_broker *b);
};

/** Every broker starts with this; implementations extend it. */
struct ps_broker {
  const ps_broker_ops *ops;
  const ps_topology *topology;
  char *display; /* where it is, for logs, without credentials */
};

/** Every connection starts with this. */
struct ps_broker_conn {
  const ps_broker_ops *ops;
  ps_broker *broker;
};

/**
 * Creates an AMQP broker for url (amqp://user:pass@host:port/vhost) that
 * declares topology on each connection. Returns 0 and *out, or PS_ECONFIG with
 * a reason in err if the URL does not parse. Nothing is connected yet.
 */
int ps_broker_amqp_create(const char *url, const ps_topology *topology, ps_broker **out,
                          char *err, size_t errlen);

/**
 * Options of the in-process broker (embedded mode: no RabbitMQ). Zeroes give
 * the defaults. See the DESIGN comment of src/broker/ps_broker_mem.c for what
 * it keeps of RabbitMQ's semantics and what durability costs.
 */
typedef struct ps_broker_mem_options {
  const char *data_dir;      /* durable messages are kept in data_dir/broker.db (SQLite); NULL: memory only */
  size_t queue_max_messages; /* per-queue bound when the queue has no x-max-length (default 100000 if 0) */
  int publish_wait_ms;       /* a publish to a full queue waits this long for room, then fails PS_EAGAIN (default 1000 if 0) */
} ps_broker_mem_options;

/**
 * Creates an in-process broker with topology (borrowed for its life): topic,
 * direct and fanout exchanges, bounded FIFO queues, per-connection prefetch,
 * acks, requeue and dead-lettering as RabbitMQ does them. With opt->data_dir,
 * persistent messages of durable queues survive a restart (they come back
 * redelivered); data_dir is created if missing and may be used by one broker
 * at a time. opt may be NULL (memory only, defaults). Returns 0 and *out, or a
 * PS_E* code with the reason in err: PS_ECONFIG (a binding names an unknown
 * queue or exchange, a bad argument), PS_EIO (data_dir or broker.db unusable,
 * or in use by another broker). ps_broker_destroy frees it.
 */
int ps_broker_mem_create(const ps_topology *topology, const ps_broker_mem_options *opt, ps_broker **out,
                         char *err, size_t errlen);

static inline int ps_broker_connect(ps_broker *b, ps_broker_conn **out) { return b->ops->connect(b, out); }
static inline int ps_broker_publish(ps_broker_conn *c, const ps_message *m) { return c->ops->publish(c, m); }
static inline int ps_broker_consume(ps_broker_conn *c, const char *queue, int prefetch, const char *tag) {
  return c->ops->consume(c, queue, prefetch, tag);
}
static inline int ps_broker_next(ps_broker_conn *c, ps_delivery *d, int timeout_ms) {
  return c->ops->next(c, d, timeout_ms);
}
static inline void ps_broker_release(ps_broker_conn *c, ps_delivery *d) { c->ops->release(c, d); }
static inline int ps_broker_ack(ps_broker_conn *c, uint64_t tag, int multiple) {
  return c->ops->ack(c, tag, multiple);
}
static inline int ps_broker_nack(ps_broker_conn *c, uint64_t tag, int multiple, int requeue) {
  return c->ops->nack(c, tag, multiple, requeue);
}
static inline int ps_broker_ping(ps_broker_conn *c) { return c->ops->ping(c); }
static inline int ps_broker_confirm_select(ps_broker_conn *c) { return c->ops->confirm_select(c); }
static inline int ps_broker_confirms(ps_broker_conn *c, const ps_confirm_handler *h, int timeout_ms) {
  return c->ops->confirms(c, h, timeout_ms);
}
/** Closes c; accepts NULL. */
static inline void ps_broker_close(ps_broker_conn *c) {
  if (c)
    c->ops->close(c);
}
/** Frees b; accepts NULL. Every connection must be closed first. */
static inline void ps_broker_destroy(ps_broker *b) {
  if (b)
    b->ops->destroy(b);
}

#endif
