/*
 * ps_probe: is penstock ready? Watches its dependencies.
 *
 * A thread checks, every second, that RabbitMQ answers a round trip on a
 * connection of its own and that ClickHouse answers /ping; together with the
 * queue's fill and the draining flag this is what /ready and the
 * penstock_dependency_up / penstock_ready gauges report.
 */
#ifndef PS_PROBE_H
#define PS_PROBE_H

#include <stddef.h>

#include "broker/ps_broker.h"
#include "queue/ps_queue.h"

typedef struct ps_probe ps_probe;

typedef struct ps_probe_options {
  ps_broker *broker;          /* borrowed */
  const char *clickhouse_url; /* copied */
  const char *clickhouse_user, *clickhouse_password;
  ps_queue *queue;            /* borrowed */
  int interval_ms;
} ps_probe_options;

/** Starts the probe thread and registers its gauges. */
ps_probe *ps_probe_start(const ps_probe_options *opt);

/** Marks penstock as draining (not ready from now on). */
void ps_probe_set_draining(ps_probe *p);

/** One check's state: ok, and the last error when not. */
typedef struct ps_probe_check {
  const char *name;
  int ok;
  char error[256];
} ps_probe_check;

/** Fills checks[0..4) (rabbitmq, clickhouse, queue, draining); returns 1 if all are ok. */
int ps_probe_snapshot(ps_probe *p, ps_probe_check checks[4]);

/** Stops and frees; accepts NULL. */
void ps_probe_stop(ps_probe *p);

#endif
