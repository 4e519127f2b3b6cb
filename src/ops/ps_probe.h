/*
 * ps_probe: is penstock ready? Watches its dependencies.
 *
 * A thread checks, every interval, that RabbitMQ answers a round trip on a
 * connection of its own and that each named ClickHouse connection the
 * consumers use answers /ping (the original service health-checked each of
 * its per-database connections every second); together with the queue's fill
 * and the draining flag this is what /ready and the penstock_dependency_up /
 * penstock_ready gauges report. Checks are named "rabbitmq", "clickhouse" (the
 * connection named default) or "clickhouse:NAME", "queue", "draining".
 */
#ifndef PS_PROBE_H
#define PS_PROBE_H

#include <stddef.h>

#include "broker/ps_broker.h"
#include "queue/ps_queue.h"

typedef struct ps_probe ps_probe;

/** A ClickHouse connection to watch; strings copied. */
typedef struct ps_probe_clickhouse {
  const char *name, *url, *user, *password;
} ps_probe_clickhouse;

/** At most this many ClickHouse connections are watched (the rest are ignored, with a warning). */
#define PS_PROBE_MAX_CLICKHOUSE 30
#define PS_PROBE_MAX_CHECKS (PS_PROBE_MAX_CLICKHOUSE + 3)

typedef struct ps_probe_options {
  ps_broker *broker;                     /* borrowed */
  const char *broker_check;              /* the broker's check and dependency name; NULL: "rabbitmq" */
  const ps_probe_clickhouse *clickhouse; /* none when consumers do not run */
  size_t nclickhouse;
  ps_queue *queue;                       /* borrowed */
  int interval_ms;
} ps_probe_options;

/** Starts the probe thread and registers its gauges. */
ps_probe *ps_probe_start(const ps_probe_options *opt);

/** Marks penstock as draining (not ready from now on). */
void ps_probe_set_draining(ps_probe *p);

/** One check's state: ok, and the last error when not. */
typedef struct ps_probe_check {
  char name[80];
  int ok;
  char error[256];
} ps_probe_check;

/**
 * Fills checks (room for PS_PROBE_MAX_CHECKS): rabbitmq, one per ClickHouse
 * connection, queue, draining, in that order; returns how many, and sets
 * *ready to 1 if all are ok.
 */
size_t ps_probe_snapshot(ps_probe *p, ps_probe_check *checks, int *ready);

/** Stops and frees; accepts NULL. */
void ps_probe_stop(ps_probe *p);

#endif
