/*
 * ps_sink_sqlite: rows into an SQLite file, the embedded store.
 *
 * The embedded mode's stand-in for ClickHouse: same table names, same
 * columns, so a newcomer's queries read the same. Column types map to SQLite's
 * (String TEXT, Int64/UInt64 INTEGER, Float64 REAL, DateTime TEXT
 * "YYYY-MM-DD HH:MM:SS" in UTC, as ClickHouse prints it and SQLite's date
 * functions read it). A UInt64 above INT64_MAX is stored as its two's
 * complement (SQLite integers are signed).
 *
 * ReplacingMergeTree in a table's engine means "one row per key" in
 * ClickHouse (after merges); here its ORDER BY columns become a UNIQUE index
 * and rows go in with INSERT OR REPLACE, so a redelivered message lands once,
 * at once. Other engines get a plain table.
 *
 * DESIGN: written rows are copied (ps_rows); flush
 * inserts all pending rows in one IMMEDIATE transaction with a prepared
 * statement. The file is in WAL mode with synchronous=NORMAL (a commit is
 * durable against a crash of the process; the last commits may be lost if the
 * machine loses power) and a busy timeout, so the consumers' connections
 * (one per sink) write one after another and readers (sqlite3 on the command
 * line) never block them. SQLITE_BUSY/LOCKED/IOERR/FULL answer RETRY with the
 * rows kept; a row SQLite refuses (a constraint) is refused alone (DROP).
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "sink/ps_sink.h"
#include "sink/ps_rows.h"
#include "sink/ps_sink_rejects.h"

#define PS__BUSY_TIMEOUT_MS 10000

typedef struct {
  ps_sink base;
  char *path;
  sqlite3 *db;
  sqlite3_stmt *insert;
  int replace; /* the table has a unique key: INSERT OR REPLACE */
  ps_rows rows;   /* pending */
  ps_value *row;  /* scratch: one row with pointers, for binding */
  ps_sink_rejects rej;
} ps__sq_sink;

static const char *ps__type_sql(ps_col_type t) {
  switch (t) {
  case PS_COL_STRING: return "TEXT";
  case PS_COL_INT64: return "INTEGER";
  case PS_COL_UINT64: return "INTEGER";
  case PS_COL_FLOAT64: return "REAL";
  case PS_COL_DATETIME: return "TEXT";
  }
  return "TEXT";
}

static int ps__is_ident(const char *s, size_t n) {
  if (!n)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i && c >= '0' && c <= '9')))
      return 0;
  }
  return 1;
}

static int ps__has_column(const ps_table *t, const char *name, size_t n) {
  for (size_t i = 0; i < t->ncols; i++)
    if (strlen(t->cols[i].name) == n && memcmp(t->cols[i].name, name, n) == 0)
      return 1;
  return 0;
}

/*
 * The key of a ReplacingMergeTree engine clause: its ORDER BY columns, as
 * "a, b" in *key. Returns 0 when there is none or it is not a plain list of
 * the table's columns (an expression such as toDate(x) keeps no key here).
 */
static int ps__replacing_key(const ps_table *t, ps_buf *key) {
  const char *e = t->engine ? t->engine : "";
  if (!strstr(e, "ReplacingMergeTree"))
    return 0;
  const char *ob = strstr(e, "ORDER BY");
  if (!ob)
    return 0;
  const char *p = ob + 8;
  while (*p == ' ')
    p++;
  int paren = *p == '(';
  if (paren)
    p++;
  for (;;) {
    while (*p == ' ')
      p++;
    const char *start = p;
    while (*p && *p != ',' && *p != ')' && *p != ' ')
      p++;
    size_t n = (size_t)(p - start);
    if (!ps__is_ident(start, n) || !ps__has_column(t, start, n))
      return 0;
    ps_buf_printf(key, "%s\"%.*s\"", key->len ? ", " : "", (int)n, start);
    while (*p == ' ')
      p++;
    if (*p == ',') {
      p++;
      continue;
    }
    if (paren && *p != ')')
      return 0;
    return key->len > 0;
  }
}

static void ps__close_db(ps__sq_sink *s) {
  sqlite3_finalize(s->insert);
  s->insert = NULL;
  sqlite3_close(s->db);
  s->db = NULL;
}

static int ps__exec(ps__sq_sink *s, const char *sql, char *err, size_t errlen) {
  char *msg = NULL;
  int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK)
    snprintf(err, errlen, "%s: %s", s->path, msg ? msg : sqlite3_errstr(rc));
  sqlite3_free(msg);
  return rc;
}

static int ps__sq_open(ps_sink *bs, char *err, size_t errlen) {
  ps__sq_sink *s = (ps__sq_sink *)bs;
  const ps_table *t = bs->table;
  if (s->insert)
    return 0;
  if (!s->db) {
    int rc = sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
      snprintf(err, errlen, "%s: %s", s->path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
      ps__close_db(s);
      return PS_ECONN;
    }
    sqlite3_busy_timeout(s->db, PS__BUSY_TIMEOUT_MS);
    if (ps__exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", err, errlen) != SQLITE_OK) {
      ps__close_db(s);
      return PS_ECONN;
    }
  }
  ps_buf ddl = PS_BUF_INIT, key = PS_BUF_INIT, ins = PS_BUF_INIT;
  ps_buf_printf(&ddl, "CREATE TABLE IF NOT EXISTS \"%s\" (", t->name);
  for (size_t i = 0; i < t->ncols; i++)
    ps_buf_printf(&ddl, "%s\"%s\" %s", i ? ", " : "", t->cols[i].name, ps__type_sql(t->cols[i].type));
  ps_buf_puts(&ddl, ");");
  s->replace = ps__replacing_key(t, &key);
  if (s->replace)
    ps_buf_printf(&ddl, " CREATE UNIQUE INDEX IF NOT EXISTS \"%s_key\" ON \"%s\" (%s);", t->name, t->name,
                  key.data);
  int rc = ps__exec(s, ddl.data, err, errlen);
  if (rc == SQLITE_OK) {
    ps_buf_printf(&ins, "INSERT %sINTO \"%s\" (", s->replace ? "OR REPLACE " : "", t->name);
    for (size_t i = 0; i < t->ncols; i++)
      ps_buf_printf(&ins, "%s\"%s\"", i ? ", " : "", t->cols[i].name);
    ps_buf_puts(&ins, ") VALUES (");
    for (size_t i = 0; i < t->ncols; i++)
      ps_buf_puts(&ins, i ? ", ?" : "?");
    ps_buf_puts(&ins, ")");
    rc = sqlite3_prepare_v2(s->db, ins.data, -1, &s->insert, NULL);
    if (rc != SQLITE_OK)
      snprintf(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
  }
  ps_buf_free(&ddl);
  ps_buf_free(&key);
  ps_buf_free(&ins);
  if (rc == SQLITE_OK)
    return 0;
  /* A busy or full database may work later; a table that exists with other columns will not. */
  int again = rc == SQLITE_BUSY || rc == SQLITE_LOCKED || (rc & 0xff) == SQLITE_IOERR || rc == SQLITE_FULL;
  return again ? PS_ECONN : PS_EREJECTED;
}

static void ps__sq_write(ps_sink *bs, const ps_value *row) {
  ps__sq_sink *s = (ps__sq_sink *)bs;
  ps_sink_rejects_expire(&s->rej);
  ps_rows_write(&s->rows, row);
}

static size_t ps__sq_pending(ps_sink *bs) { return ((ps__sq_sink *)bs)->rows.n; }

static void ps__sq_discard(ps_sink *bs) {
  ps__sq_sink *s = (ps__sq_sink *)bs;
  ps_rows_clear(&s->rows);
  ps_sink_rejects_clear(&s->rej);
}

static size_t ps__sq_rejected(ps_sink *bs, const size_t **rows, const char *const **reasons) {
  return ps_sink_rejects_report(&((ps__sq_sink *)bs)->rej, rows, reasons);
}

static void ps__bind_row(ps__sq_sink *s, const ps_value *v) {
  const ps_table *t = s->base.table;
  for (size_t i = 0; i < t->ncols; i++) {
    int col = (int)i + 1;
    switch (t->cols[i].type) {
    case PS_COL_STRING:
      sqlite3_bind_text(s->insert, col, v[i].s, (int)v[i].len, SQLITE_STATIC);
      break;
    case PS_COL_INT64:
      sqlite3_bind_int64(s->insert, col, v[i].i);
      break;
    case PS_COL_UINT64:
      sqlite3_bind_int64(s->insert, col, (sqlite3_int64)v[i].u);
      break;
    case PS_COL_FLOAT64:
      sqlite3_bind_double(s->insert, col, v[i].f);
      break;
    case PS_COL_DATETIME: {
      char when[32];
      time_t tt = (time_t)v[i].i;
      struct tm tm;
      gmtime_r(&tt, &tm);
      strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
      sqlite3_bind_text(s->insert, col, when, -1, SQLITE_TRANSIENT);
      break;
    }
    }
  }
}

static int ps__retryable(int rc) {
  rc &= 0xff;
  return rc == SQLITE_BUSY || rc == SQLITE_LOCKED || rc == SQLITE_IOERR || rc == SQLITE_FULL ||
         rc == SQLITE_CANTOPEN || rc == SQLITE_NOMEM || rc == SQLITE_PROTOCOL;
}

static ps_sink_result ps__sq_flush(ps_sink *bs, char *err, size_t errlen) {
  ps__sq_sink *s = (ps__sq_sink *)bs;
  ps_sink_rejects_expire(&s->rej);
  if (!s->rows.n)
    return ps_sink_rejects_finish(&s->rej, err, errlen);
  if (!s->insert) {
    int orc = ps__sq_open(bs, err, errlen);
    if (orc != 0)
      return orc == PS_ECONN ? PS_SINK_RETRY : PS_SINK_DROP;
  }
  if (ps__exec(s, "BEGIN IMMEDIATE", err, errlen) != SQLITE_OK)
    return PS_SINK_RETRY;
  for (size_t r = 0; r < s->rows.n; r++) {
    ps_rows_get(&s->rows, r, s->row);
    ps__bind_row(s, s->row);
    int rc = sqlite3_step(s->insert);
    sqlite3_reset(s->insert);
    sqlite3_clear_bindings(s->insert);
    if (rc == SQLITE_DONE)
      continue;
    if (ps__retryable(rc)) {
      snprintf(err, errlen, "%s: %s", s->path, sqlite3_errstr(rc));
      char ignored[64];
      ps__exec(s, "ROLLBACK", ignored, sizeof ignored);
      ps_sink_rejects_clear(&s->rej);
      return PS_SINK_RETRY;
    }
    char why[300];
    snprintf(why, sizeof why, "sqlite: %s", sqlite3_errmsg(s->db));
    ps_sink_rejects_add(&s->rej, r, why);
  }
  int rc = ps__exec(s, "COMMIT", err, errlen);
  if (rc != SQLITE_OK) {
    char ignored[64];
    ps__exec(s, "ROLLBACK", ignored, sizeof ignored);
    ps_sink_rejects_clear(&s->rej);
    return PS_SINK_RETRY;
  }
  ps_rows_clear(&s->rows);
  return ps_sink_rejects_finish(&s->rej, err, errlen);
}

static void ps__sq_destroy(ps_sink *bs) {
  ps__sq_sink *s = (ps__sq_sink *)bs;
  ps__close_db(s);
  ps_sink_rejects_free(&s->rej);
  ps_rows_free(&s->rows);
  free(s->row);
  free(s->path);
  free(s);
}

static const ps_sink_ops ps__sq_ops = {
    .name = "sqlite",
    .open = ps__sq_open,
    .write = ps__sq_write,
    .pending = ps__sq_pending,
    .flush = ps__sq_flush,
    .rejected = ps__sq_rejected,
    .discard = ps__sq_discard,
    .destroy = ps__sq_destroy,
};

ps_sink *ps_sink_sqlite_create(const char *path, const ps_table *table) {
  ps__sq_sink *s = calloc(1, sizeof *s);
  if (!s)
    abort();
  s->base.ops = &ps__sq_ops;
  s->base.table = table;
  s->rows = ps_rows_make(table);
  s->row = calloc(table->ncols ? table->ncols : 1, sizeof *s->row);
  s->path = strdup(path);
  if (!s->path || !s->row)
    abort();
  return &s->base;
}
