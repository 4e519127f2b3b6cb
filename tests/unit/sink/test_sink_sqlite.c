/*
 * The SQLite sink (the embedded store) against a real SQLite file in a
 * temporary directory: types and values as stored, the unique key of a
 * ReplacingMergeTree table, several sinks on one file, RETRY keeping the rows
 * while the file cannot be opened, and a row refused alone.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ps_test.h"
#include "sink/ps_sink.h"

static const ps_column cols[] = {
    {"id", PS_COL_STRING}, {"n", PS_COL_INT64}, {"u", PS_COL_UINT64}, {"f", PS_COL_FLOAT64}, {"at", PS_COL_DATETIME}};
static const ps_table plain = {"t", 5, cols, "ENGINE = MergeTree ORDER BY tuple()"};
static const ps_table keyed = {"k", 5, cols, "ENGINE = ReplacingMergeTree(at) PARTITION BY toYYYYMM(at) ORDER BY (id, n)"};
static const ps_table exprkey = {"e", 5, cols, "ENGINE = ReplacingMergeTree ORDER BY (toDate(at), id)"};

static char dir[256], path[512];

static void fresh_db(void) {
  snprintf(dir, sizeof dir, "/tmp/ps-sqlite-test-XXXXXX");
  if (!mkdtemp(dir))
    abort();
  snprintf(path, sizeof path, "%s/store.db", dir);
}

static void cleanup(void) {
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
}

static void row(ps_sink *s, const char *id, int64_t n, uint64_t u, double f, int64_t at) {
  ps_value v[5] = {{.s = id, .len = strlen(id)}, {.i = n}, {.u = u}, {.f = f}, {.i = at}};
  ps_sink_write(s, v);
}

/* The first column of the first row of sql, as text, into out. */
static int query(const char *sql, char *out, size_t outlen) {
  sqlite3 *db;
  if (sqlite3_open(path, &db) != SQLITE_OK)
    return -1;
  sqlite3_stmt *st;
  int rc = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) {
      const unsigned char *t = sqlite3_column_text(st, 0);
      snprintf(out, outlen, "%s", t ? (const char *)t : "(null)");
      rc = 0;
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return rc;
}

PS_TEST(stores_rows_with_their_types) {
  fresh_db();
  ps_sink *s = ps_sink_sqlite_create(path, &plain);
  char err[256], got[256];
  PS_CHECK_INT_EQ(ps_sink_open(s, err, sizeof err), 0);
  row(s, "a\tb\n'\"", -7, 18446744073709551615ULL, 0.25, 1700000000);
  row(s, "", 1, 2, 1e-7, 0);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 2);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 0);
  PS_CHECK_INT_EQ(query("SELECT count(*) FROM t", got, sizeof got), 0);
  PS_CHECK_STR_EQ(got, "2");
  PS_CHECK_INT_EQ(query("SELECT id || '|' || n || '|' || u || '|' || f || '|' || at FROM t WHERE n = -7", got,
                        sizeof got), 0);
  PS_CHECK_STR_EQ(got, "a\tb\n'\"|-7|-1|0.25|2023-11-14 22:13:20");
  PS_CHECK_INT_EQ(query("SELECT typeof(n) || typeof(f) || typeof(at) FROM t LIMIT 1", got, sizeof got), 0);
  PS_CHECK_STR_EQ(got, "integerrealtext");
  /* SQLite's date functions read the DateTime text. */
  PS_CHECK_INT_EQ(query("SELECT strftime('%s', at) FROM t WHERE n = -7", got, sizeof got), 0);
  PS_CHECK_STR_EQ(got, "1700000000");
  ps_sink_destroy(s);
  cleanup();
}

PS_TEST(replacing_key_lands_a_redelivered_row_once) {
  fresh_db();
  ps_sink *s = ps_sink_sqlite_create(path, &keyed);
  char err[256], got[64];
  row(s, "x", 1, 0, 1.0, 100);
  row(s, "x", 2, 0, 1.0, 100);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK); /* opens on first flush */
  row(s, "x", 1, 0, 9.0, 200); /* the same key again: replaces */
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(query("SELECT count(*) FROM k", got, sizeof got), 0);
  PS_CHECK_STR_EQ(got, "2");
  PS_CHECK_INT_EQ(query("SELECT f FROM k WHERE id = 'x' AND n = 1", got, sizeof got), 0);
  PS_CHECK_STR_EQ(got, "9.0");
  ps_sink_destroy(s);
  /* A key that is an expression keeps no unique index: both rows stay. */
  s = ps_sink_sqlite_create(path, &exprkey);
  row(s, "y", 1, 0, 1.0, 100);
  row(s, "y", 1, 0, 1.0, 100);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(query("SELECT count(*) FROM e", got, sizeof got), 0);
  PS_CHECK_STR_EQ(got, "2");
  ps_sink_destroy(s);
  cleanup();
}

PS_TEST(sinks_of_several_consumers_share_one_file) {
  fresh_db();
  ps_sink *a = ps_sink_sqlite_create(path, &plain), *b = ps_sink_sqlite_create(path, &plain);
  char err[256], got[64];
  PS_CHECK_INT_EQ(ps_sink_open(a, err, sizeof err), 0);
  PS_CHECK_INT_EQ(ps_sink_open(b, err, sizeof err), 0); /* CREATE TABLE IF NOT EXISTS: the second one too */
  for (int i = 0; i < 10; i++) {
    char id[16];
    snprintf(id, sizeof id, "a%d", i);
    row(a, id, i, 0, 0, 0);
    snprintf(id, sizeof id, "b%d", i);
    row(b, id, i, 0, 0, 0);
    PS_CHECK_INT_EQ(ps_sink_flush(i % 2 ? a : b, err, sizeof err), PS_SINK_OK);
  }
  PS_CHECK_INT_EQ(ps_sink_flush(a, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(ps_sink_flush(b, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(query("SELECT count(DISTINCT id) || '/' || count(*) FROM t", got, sizeof got), 0);
  PS_CHECK_STR_EQ(got, "20/20");
  ps_sink_destroy(a);
  ps_sink_destroy(b);
  cleanup();
}

PS_TEST(missing_directory_is_retry_then_works_once_it_exists) {
  fresh_db();
  char sub[400];
  snprintf(sub, sizeof sub, "%s/later/store.db", dir);
  ps_sink *s = ps_sink_sqlite_create(sub, &plain);
  char err[256];
  row(s, "a", 1, 0, 0, 0);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_RETRY);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 1);
  PS_CHECK_MSG(strstr(err, "later/store.db") != NULL, "err: %s", err);
  char later[350];
  snprintf(later, sizeof later, "%s/later", dir);
  PS_CHECK(mkdir(later, 0700) == 0);
  row(s, "b", 2, 0, 0, 0);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 0);
  ps_sink_destroy(s);
  snprintf(path, sizeof path, "%s", sub);
  char got[64];
  PS_CHECK_INT_EQ(query("SELECT count(*) FROM t", got, sizeof got), 0);
  PS_CHECK_STR_EQ(got, "2");
  cleanup();
}

PS_TEST(a_refused_row_is_refused_alone) {
  fresh_db();
  /* The table exists already with a constraint the sink does not know about. */
  sqlite3 *db;
  PS_CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  PS_CHECK(sqlite3_exec(db, "CREATE TABLE t (id TEXT CHECK (id <> 'bad'), n INTEGER, u INTEGER, f REAL, at TEXT)",
                        NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  ps_sink *s = ps_sink_sqlite_create(path, &plain);
  char err[256], got[64];
  row(s, "ok1", 1, 0, 0, 0);
  row(s, "bad", 2, 0, 0, 0);
  row(s, "ok2", 3, 0, 0, 0);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_DROP);
  const size_t *rows;
  const char *const *reasons;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &reasons), 1);
  PS_CHECK_INT_EQ(rows[0], 1);
  PS_CHECK_MSG(strstr(reasons[0], "CHECK constraint") != NULL, "reason: %s", reasons[0]);
  PS_CHECK_INT_EQ(query("SELECT group_concat(id) FROM (SELECT id FROM t ORDER BY id)", got, sizeof got), 0);
  PS_CHECK_STR_EQ(got, "ok1,ok2");
  PS_CHECK_INT_EQ(ps_sink_pending(s), 0);
  ps_sink_destroy(s);
  cleanup();
}

PS_TEST_MAIN(PS_CASE(stores_rows_with_their_types), PS_CASE(replacing_key_lands_a_redelivered_row_once),
             PS_CASE(sinks_of_several_consumers_share_one_file),
             PS_CASE(missing_directory_is_retry_then_works_once_it_exists), PS_CASE(a_refused_row_is_refused_alone))
