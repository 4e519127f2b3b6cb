/*
 * ps_topology_config: the consumer fleet as configuration (PENSTOCK_CONFIG).
 *
 * A YAML file (parsed with libyaml) declares the broker topology (exchanges,
 * queues with their arguments, bindings), the named ClickHouse connections and
 * HTTP targets, and per queue the consumers: how many, their prefetch, how a
 * message becomes rows (decoder) and where rows go (sink). Every key is known:
 * an unknown key, a wrong type or a value out of range is an error that names
 * the file, the line and the reason. `${NAME}` in a string value is replaced by
 * the environment variable NAME (for secrets); an unset variable is an error.
 *
 * ps_topology_config_load fills a ps_topology_config that owns all its strings;
 * ps_topology_config_free releases it. ps_topology_config_default() is the
 * built-in configuration (the original service's consumers) used when
 * PENSTOCK_CONFIG is not set.
 *
 * config/penstock.example.yaml documents every key. What the parse result holds
 * beyond what the file says, all resolved here so that users of the struct see
 * only plain arrays:
 *   - `${NAME:-default}` gives default when NAME is unset or empty; `$${` is a
 *     literal `${`. Expansion applies to every value (not to keys).
 *   - event_exchange (topic) and dead_letter_exchange (direct), both durable,
 *     are added at the front of `exchanges` unless declared there.
 *   - A binding without `exchange` binds to event_exchange.
 *   - A queue with `dead_letter: true` gets the arguments
 *     x-dead-letter-exchange: <dead_letter_exchange> and
 *     x-dead-letter-routing-key: <queue>, a durable queue "<queue>.error" right
 *     after it in `queues`, and the binding (<queue>.error, dead_letter_exchange,
 *     <queue>) after the file's bindings: the original service's pattern.
 *   - A consumer with `enabled: false` is checked, then left out of `consumers`
 *     (its name goes to `disabled`); a queue that only disabled consumers read is
 *     then left out too, with the "<queue>.error" queue its dead_letter: true
 *     added and all their bindings,
 *     so nothing piles up in a queue no one reads. (It does not delete what an
 *     earlier run declared on the broker.)
 */
#ifndef PS_TOPOLOGY_CONFIG_H
#define PS_TOPOLOGY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "broker/ps_broker.h"
#include "sink/ps_sink.h"

/** How a message becomes rows. */
typedef enum {
  PS_DECODER_EVENTS, /* proto3-JSON Events -> one row of the events schema per event */
  PS_DECODER_JSON,   /* a JSON object or array of objects -> one row per object */
} ps_decoder_kind;

/** One column of a json-decoded table. */
typedef struct ps_json_column_conf {
  char *name;          /* column in the table */
  char *from;          /* JSON field to read; dotted path for nested objects ("user.id"); default: name */
  ps_col_type type;    /* string, int64, uint64, float64, datetime */
  char *default_value; /* text used when the field is missing or null; NULL: the type's zero, unless required */
  int required;        /* a missing field makes the message undecodable (dead letter) */
} ps_json_column_conf;

typedef struct ps_decoder_conf {
  ps_decoder_kind kind;
  /* json only: */
  ps_json_column_conf *columns;
  size_t ncolumns;
  int keep_unknown;    /* 1: fields not mapped to a column go, as a JSON object, into unknown_column */
  char *unknown_column; /* String column for them (default "extra") when keep_unknown */
} ps_decoder_conf;

typedef enum { PS_SINK_CONF_CLICKHOUSE, PS_SINK_CONF_HTTP } ps_sink_conf_kind;
typedef enum { PS_HTTP_BODY_SINGLE, PS_HTTP_BODY_BATCH } ps_http_body_mode;

typedef struct ps_header_conf {
  char *name, *value; /* value after ${ENV} expansion */
} ps_header_conf;

typedef struct ps_sink_conf {
  ps_sink_conf_kind kind;
  /* clickhouse: */
  char *connection;    /* name of a clickhouse_connections entry */
  char *table;         /* table name (in the connection's database) */
  char *engine;        /* DDL after the column list for CREATE TABLE IF NOT EXISTS; NULL: a default */
  int buffered;        /* 0: direct (flush per prefetch window); 1: buffered sinker */
  int buffer_rows;     /* buffered: capacity of the bounded buffer (default 10000) */
  int flush_rows;      /* flush at this many rows (direct default 10000, buffered default 100) */
  int flush_ms;        /* ...or when the oldest row is this old (direct default 1000, buffered 300000) */
  /* http: */
  char *url;
  char *method;        /* POST (default), PUT, PATCH */
  ps_header_conf *headers;
  size_t nheaders;
  ps_http_body_mode body; /* one event per request, or a JSON array of up to batch_max */
  int batch_max;       /* default 100 */
  int timeout_ms;      /* default 10000 */
  int concurrency;     /* requests in flight per consumer, default 4 */
  int max_retries;     /* retries of a retryable failure within one flush (then RETRY), default 10 */
  int retry_base_ms;   /* backoff base, default 200 */
  int retry_max_ms;    /* backoff cap, default 30000 */
} ps_sink_conf;

typedef struct ps_consumer_conf {
  char *name;          /* for logs, metrics and dead-letter headers; default: the queue name */
  char *queue;
  int count;           /* consumers (threads, each with its own connection), default 2 */
  int prefetch;        /* default 1000 */
  int max_redeliveries; /* a message seen more often is dead-lettered, default 5 */
  int max_held_bytes; /* bodies of the unacknowledged messages one consumer holds, at most (default 32 MiB) */
  char *dead_letter_exchange; /* default: the top-level dead_letter_exchange */
  ps_decoder_conf decoder;
  ps_sink_conf sink;
} ps_consumer_conf;

typedef struct ps_clickhouse_conn_conf {
  char *name;
  char *url, *database, *user, *password;
  int timeout_ms;
  int health_check_ms; /* default 1000, as the original */
} ps_clickhouse_conn_conf;

/** The owned, resolved configuration. */
typedef struct ps_topology_config {
  char *source;        /* file name, or "(built-in)" */
  char *event_exchange;        /* default "grpc_event.tx" */
  char *dead_letter_exchange;  /* default "grpc_event_error.dx" */
  ps_exchange_decl *exchanges;  /* owned strings */
  size_t nexchanges;
  ps_queue_decl *queues;        /* owned strings and args */
  size_t nqueues;
  ps_binding_decl *bindings;
  size_t nbindings;
  ps_clickhouse_conn_conf *clickhouse;
  size_t nclickhouse;
  ps_consumer_conf *consumers;  /* enabled ones only */
  size_t nconsumers;
  char **disabled;              /* names of the consumers with enabled: false */
  size_t ndisabled;
} ps_topology_config;

/**
 * Parses the YAML text of file `path` into cfg. Returns 0, or PS_ECONFIG with
 * "path:line: reason" in err (cfg then holds nothing to free but is safe to
 * pass to ps_topology_config_free).
 */
int ps_topology_config_load(const char *path, ps_topology_config *cfg, char *err, size_t errlen);

/** Same, from a string (name is used in messages). */
int ps_topology_config_parse(const char *name, const char *yaml, size_t len, ps_topology_config *cfg, char *err,
                             size_t errlen);

/** The built-in configuration text (YAML), reproducing the original service's consumers. */
const char *ps_topology_config_default(void);

/** Frees everything cfg owns; accepts a zeroed cfg. */
void ps_topology_config_free(ps_topology_config *cfg);

/** The topology part, as the broker declares it (borrows from cfg). */
ps_topology ps_topology_config_topology(const ps_topology_config *cfg);

/**
 * Prints the resolved configuration as YAML (secrets redacted), for `penstock check-config`:
 * every default filled in, the expansions above done, `${` written as `$${`. The output parses
 * back to an equal configuration, except that each secret (ClickHouse passwords, the password
 * in a URL, values of headers whose name contains auth, key, token, secret, password, cookie,
 * signature or credential) reads "(redacted)".
 */
void ps_topology_config_print(const ps_topology_config *cfg, FILE *out);

/**
 * `penstock check-config [FILE]`: argv[0] is the subcommand, argv[1] the file (default:
 * $PENSTOCK_CONFIG, else the built-in configuration). Prints the resolved configuration to
 * stdout and returns 0, or prints "penstock: FILE:LINE: reason" to stderr and returns 2.
 */
int ps_topology_config_check_main(int argc, char **argv);

/**
 * The i-th key the parser knows (NULL past the last), and in *section (if not NULL) where it
 * goes, e.g. "consumers[].sink". Lists the known queue arguments under "queues[].arguments".
 * For the test that holds the example configuration to documenting every key.
 */
const char *ps_topology_config_key(size_t i, const char **section);

#endif
