/*
 * ps_sink: where rows land.
 *
 * A sink is a struct of operations over a table: rows are written into a
 * pending batch (write), which flush sends in one go. flush answers
 *   PS_SINK_OK     the batch is stored; the caller may acknowledge its sources,
 *   PS_SINK_RETRY  nothing was stored and trying again later may work
 *                  (network, server down, overload); the batch is kept,
 *   PS_SINK_DROP   the server refused the data itself; retrying is useless.
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
  /** Rows pending. */
  size_t (*pending)(ps_sink *s);
  /** Sends the pending batch; on OK or DROP the batch is cleared. */
  ps_sink_result (*flush)(ps_sink *s, char *err, size_t errlen);
  /** Forgets the pending batch (its sources will be redelivered). */
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

/** Creates a ClickHouse sink for table (borrowed). Nothing is connected yet. */
ps_sink *ps_sink_clickhouse_create(const ps_clickhouse_options *opt, const ps_table *table);

static inline int ps_sink_open(ps_sink *s, char *err, size_t errlen) { return s->ops->open(s, err, errlen); }
static inline void ps_sink_write(ps_sink *s, const ps_value *row) { s->ops->write(s, row); }
static inline size_t ps_sink_pending(ps_sink *s) { return s->ops->pending(s); }
static inline ps_sink_result ps_sink_flush(ps_sink *s, char *err, size_t errlen) {
  return s->ops->flush(s, err, errlen);
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
