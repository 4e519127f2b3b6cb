/*
 * ps_sink: where rows land.
 *
 * A sink is a struct of operations over a table: rows are written into a
 * pending batch (write), which flush sends. The batch is everything written
 * since the last flush that answered OK or DROP (or the last discard); its rows
 * are numbered from 0 in write order. flush answers
 *   PS_SINK_OK     every row of the batch is stored; the caller may
 *                  acknowledge their sources. The batch is cleared.
 *   PS_SINK_DROP   every row is stored except the ones rejected() lists, which
 *                  the destination refused for good (bad data, a 4xx): the
 *                  caller dead-letters their sources and acknowledges the
 *                  rest. The batch is cleared.
 *   PS_SINK_RETRY  some rows are not stored yet, and trying again later may
 *                  work (network, server down, overload). Rows already stored
 *                  are remembered by the sink and never sent again; rows
 *                  already refused are remembered for the DROP to come;
 *                  pending() counts only what is left. Calling flush again
 *                  (more rows may be written in between; they join the batch)
 *                  continues where this one stopped.
 * Sinks are not thread-safe: each consumer opens its own.
 */
#ifndef PS_SINK_H
#define PS_SINK_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  PS_COL_STRING,
  PS_COL_INT64,
  PS_COL_UINT64,
  PS_COL_FLOAT64,
  PS_COL_DATETIME, /* epoch seconds in .i */
} ps_col_type;

typedef struct ps_column {
  const char *name;
  ps_col_type type;
} ps_column;

/** A table: its columns, and the DDL clause after the column list. */
typedef struct ps_table {
  const char *name;
  size_t ncols;
  const ps_column *cols;
  const char *engine; /* e.g. "ENGINE = MergeTree ORDER BY id" */
} ps_table;

/** One value of a row; the column's type says which member holds it. */
typedef struct ps_value {
  const char *s; /* PS_COL_STRING: s[0..len), need not be NUL-terminated */
  size_t len;
  int64_t i;     /* INT64, DATETIME */
  uint64_t u;
  double f;
} ps_value;

typedef enum { PS_SINK_OK = 0, PS_SINK_RETRY, PS_SINK_DROP } ps_sink_result;

typedef struct ps_sink ps_sink;

typedef struct ps_sink_ops {
  const char *name;
  /** Makes sure the table exists. 0, or PS_ECONN / PS_EREJECTED with err. */
  int (*open)(ps_sink *s, char *err, size_t errlen);
  /** Appends one row (values borrowed for the call) to the pending batch. */
  void (*write)(ps_sink *s, const ps_value *row);
  /** Rows of the batch neither stored nor refused yet. */
  size_t (*pending)(ps_sink *s);
  /** Sends what is pending (see the contract above); err says why on RETRY or DROP. */
  ps_sink_result (*flush)(ps_sink *s, char *err, size_t errlen);
  /**
   * After a flush that answered PS_SINK_DROP: the number of refused rows, with
   * *rows set to their indices in the batch (ascending) and *reasons to one
   * reason per row (e.g. "HTTP 400: {body excerpt}"). Both arrays belong to the
   * sink and stay valid until its next write, flush or discard. After any other
   * answer: 0.
   */
  size_t (*rejected)(ps_sink *s, const size_t **rows, const char *const **reasons);
  /** Forgets the batch, stored and refused rows included (their sources will be redelivered). */
  void (*discard)(ps_sink *s);
  /** Frees the sink; pending rows are discarded. Accepts NULL. */
  void (*destroy)(ps_sink *s);
} ps_sink_ops;

struct ps_sink {
  const ps_sink_ops *ops;
  const ps_table *table;
};

typedef struct ps_clickhouse_options {
  const char *url;      /* http://host:8123 */
  const char *database;
  const char *user;     /* "" for none */
  const char *password;
  long timeout_ms;
} ps_clickhouse_options;

/**
 * Creates a ClickHouse sink for table (borrowed). Nothing is connected yet.
 * An insert that ClickHouse refuses as bad data is split in halves, and those
 * again, until the refused rows are single: the others are inserted and
 * flush answers DROP with the refused ones in rejected().
 */
ps_sink *ps_sink_clickhouse_create(const ps_clickhouse_options *opt, const ps_table *table);

typedef struct ps_sink_conf ps_sink_conf; /* config/ps_topology_config.h */

/**
 * Creates an HTTP forwarding sink for table (borrowed): each row becomes a JSON
 * object of its columns (DateTime as an RFC 3339 UTC string; a String column
 * named `payload` or `extra` that holds valid JSON is embedded as JSON), sent
 * one per request or as arrays of up to batch_max, with up to concurrency
 * requests in flight. 2xx is stored; a network error, 408, 429 or 5xx is
 * retried inside the flush with exponential backoff and full jitter (a
 * Retry-After on 429/503 is honoured, up to retry_max_ms) up to max_retries
 * times per request, then the flush answers RETRY; any other 4xx refuses the
 * request's rows (DROP). Once one request has spent its retries, nothing new
 * is started and the flush answers RETRY as soon as the requests on the wire
 * are done. A flush has no deadline of its own: while the target fails it can
 * take up to about max_retries * (retry_max_ms + timeout_ms). conf's strings
 * are copied. Returns NULL if conf->url is not a valid URL (the reason is
 * logged).
 */
ps_sink *ps_sink_http_create(const ps_sink_conf *conf, const ps_table *table);

/**
 * Creates an SQLite sink (the embedded store) for table (borrowed), writing to
 * the database file at path (created if missing). Same table names and columns
 * as ClickHouse; a ReplacingMergeTree engine's ORDER BY columns become a unique
 * key (INSERT OR REPLACE), so redelivered rows land once. Nothing is opened yet.
 */
ps_sink *ps_sink_sqlite_create(const char *path, const ps_table *table);

static inline int ps_sink_open(ps_sink *s, char *err, size_t errlen) { return s->ops->open(s, err, errlen); }
static inline void ps_sink_write(ps_sink *s, const ps_value *row) { s->ops->write(s, row); }
static inline size_t ps_sink_pending(ps_sink *s) { return s->ops->pending(s); }
static inline ps_sink_result ps_sink_flush(ps_sink *s, char *err, size_t errlen) {
  return s->ops->flush(s, err, errlen);
}
static inline size_t ps_sink_rejected(ps_sink *s, const size_t **rows, const char *const **reasons) {
  *rows = NULL;
  *reasons = NULL;
  return s->ops->rejected ? s->ops->rejected(s, rows, reasons) : 0;
}
static inline void ps_sink_discard(ps_sink *s) { s->ops->discard(s); }
static inline void ps_sink_destroy(ps_sink *s) {
  if (s)
    s->ops->destroy(s);
}

/** The landing table of events: one row per event. */
extern const ps_table ps_events_table;

/** Column positions in ps_events_table. */
enum {
  PS_EV_EVENT_ID,
  PS_EV_EVENT_TYPE,
  PS_EV_EVENT_TIME,
  PS_EV_EVENT_TIMESTAMP,
  PS_EV_RECEIVED_AT,
  PS_EV_SESSION_ID,
  PS_EV_USER_ID,
  PS_EV_DEVICE_ID,
  PS_EV_CLIENT_ID,
  PS_EV_OS,
  PS_EV_APP_VERSION,
  PS_EV_PAYLOAD,
  PS_EV_NCOLS
};

#endif
