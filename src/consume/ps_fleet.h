/*
 * ps_fleet: every consumer of the topology file, running.
 *
 * For each consumer of a ps_topology_config the fleet builds what its threads
 * need (the table its rows form, the decoder and sink factories, the named
 * ClickHouse connection) and starts a ps_consumer_group on the shared broker.
 * Tables are created at start where ClickHouse answers; a consumer creates its
 * table itself before its first insert otherwise.
 *
 * A table's columns come from its decoder: `events` gives the events schema
 * (ps_events_table) under the table name the sink names; `json` gives the
 * configured columns (plus the catch-all column). The engine is the sink's
 * `engine`, else ps_events_table's for events tables and
 * "ENGINE = MergeTree ORDER BY tuple()" for json ones. An HTTP sink's "table"
 * is only a name for metrics and logs: the consumer's name.
 */
#ifndef PS_FLEET_H
#define PS_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include "broker/ps_broker.h"
#include "config/ps_topology_config.h"

typedef struct ps_fleet ps_fleet;

typedef struct ps_fleet_options {
  const ps_topology_config *config; /* borrowed for the fleet's life */
  ps_broker *broker;                /* borrowed */
  int ingest_only;                  /* 1: run no consumer (the topology is still declared) */
  /*
   * Embedded mode: the SQLite file every `clickhouse` sink writes to instead
   * (same tables and columns; see ps_sink_sqlite_create); its connections are
   * then not used. NULL: ClickHouse.
   */
  const char *store_path;
} ps_fleet_options;

/**
 * Prepares every consumer and starts them. Returns 0 and *out, or PS_ECONFIG
 * with a reason in err when a consumer cannot work as configured (a json
 * decoder whose default does not fit its column, an HTTP sink with an invalid
 * URL); nothing runs then.
 */
int ps_fleet_start(const ps_fleet_options *opt, ps_fleet **out, char *err, size_t errlen);

/** Consumer groups running (0 with ingest_only). */
size_t ps_fleet_groups(const ps_fleet *f);

/**
 * The ClickHouse connections that running consumers use, each once, in the
 * configuration's order (none in embedded mode); returns their number and sets *conns (owned by the
 * fleet) to the array of pointers into the configuration.
 */
size_t ps_fleet_clickhouse(const ps_fleet *f, const ps_clickhouse_conn_conf *const **conns);

/** Stops every group (see ps_consumers_stop), then frees. Accepts NULL. */
void ps_fleet_stop(ps_fleet *f, int64_t deadline_ns);

#endif
