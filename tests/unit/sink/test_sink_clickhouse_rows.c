/*
 * The ClickHouse sink's bad-row isolation, against a fake ClickHouse in the
 * process (fake_http.h): an INSERT whose TSV holds a line with BAD is refused
 * the way ClickHouse refuses unparsable data (Code: 27), anything else is
 * stored line by line; the test can make chosen requests fail with a
 * retryable error (Code: 202). The real server is exercised by the
 * integration tests. Also the TabSeparated escaping of the insert body, byte
 * for byte, for strings of every length with each byte that matters at every
 * position.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ps_log.h"
#include "ps_test.h"
#include "sink/fake_http.h"
#include "sink/ps_sink.h"

static const ps_column cols[] = {{"id", PS_COL_STRING}, {"n", PS_COL_INT64}};
static const ps_table table = {"t", 2, cols, "ENGINE = Memory"};

#define MAX_LINES 256

typedef struct {
  char *stored[MAX_LINES]; /* lines inserted, in order */
  size_t nstored;
  int fail_request[16]; /* request numbers (0-based) answered with a retryable error */
  size_t nfail;
} fake_ch;

static fh_reply ch_script(fake_http *fh, const fh_req *r, size_t n) {
  fake_ch *ch = fh->ud;
  for (size_t i = 0; i < ch->nfail; i++)
    if ((size_t)ch->fail_request[i] == n)
      return (fh_reply){
          503, "Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)",
          NULL, 0};
  if (!strstr(r->url, "INSERT INTO db.t (id, n) FORMAT TabSeparated"))
    return (fh_reply){400, "Code: 62. DB::Exception: Syntax error", NULL, 0};
  const char *body = r->body.data ? r->body.data : "";
  const char *bad = strstr(body, "BAD");
  if (bad) {
    static char msg[256];
    const char *eol = strchr(bad, '\n');
    snprintf(msg, sizeof msg,
             "Code: 27. DB::Exception: Cannot parse input: expected '\\t' before: '%.*s': (at row 1)\n",
             (int)(eol ? eol - bad : 3), bad);
    return (fh_reply){500, msg, NULL, 0};
  }
  for (const char *p = body; *p;) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    if (ch->nstored < MAX_LINES)
      ch->stored[ch->nstored++] = strndup(p, len);
    p += len + (eol ? 1 : 0);
  }
  return (fh_reply){200, "", NULL, 0};
}

static size_t times_stored(fake_http *fh, fake_ch *ch, const char *id) {
  fh_count(fh); /* synchronises with the server's threads */
  size_t k = 0;
  for (size_t i = 0; i < ch->nstored; i++) {
    size_t n = strlen(id);
    if (!strncmp(ch->stored[i], id, n) && ch->stored[i][n] == '\t')
      k++;
  }
  return k;
}

static size_t nstored(fake_http *fh, fake_ch *ch) {
  pthread_mutex_lock(&fh->mu);
  size_t n = ch->nstored;
  pthread_mutex_unlock(&fh->mu);
  return n;
}

static void free_ch(fake_ch *ch) {
  for (size_t i = 0; i < ch->nstored; i++)
    free(ch->stored[i]);
  memset(ch, 0, sizeof *ch);
}

static char url[64];

static ps_sink *make_sink(fake_http *fh) {
  ps_log_setup(PS_LOG_ERROR, PS_LOG_TEXT);
  snprintf(url, sizeof url, "http://127.0.0.1:%u", fh->port);
  ps_clickhouse_options o = {url, "db", "", "", 5000};
  return ps_sink_clickhouse_create(&o, &table);
}

static void write_rows(ps_sink *s, size_t n, const char *const *ids) {
  for (size_t i = 0; i < n; i++) {
    ps_value v[2];
    memset(v, 0, sizeof v);
    v[0].s = ids[i];
    v[0].len = strlen(ids[i]);
    v[1].i = (int64_t)i;
    ps_sink_write(s, v);
  }
}

static void set_failures(fake_http *fh, fake_ch *ch, const int *req, size_t n) {
  pthread_mutex_lock(&fh->mu);
  ch->nfail = n;
  for (size_t i = 0; i < n; i++)
    ch->fail_request[i] = req[i];
  pthread_mutex_unlock(&fh->mu);
}

PS_TEST(test_good_batch_one_insert) {
  static fake_ch ch;
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ch_script, &ch) == 0);
  ps_sink *s = make_sink(&fh);
  const char *ids[] = {"a", "b", "c"};
  write_rows(s, 3, ids);
  char err[512];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(fh_count(&fh), 1);
  PS_CHECK_INT_EQ(nstored(&fh, &ch), 3);
  PS_CHECK_STR_EQ(nstored(&fh, &ch) ? ch.stored[2] : NULL, "c\t2");
  const size_t *rows;
  const char *const *why;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 0);
  ps_sink_destroy(s);
  fh_stop(&fh);
  free_ch(&ch);
}

PS_TEST(test_bad_rows_are_isolated) {
  static fake_ch ch;
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ch_script, &ch) == 0);
  ps_sink *s = make_sink(&fh);
  const char *ids[] = {"r0", "r1", "r2", "BAD3", "r4", "r5", "r6", "BAD7", "r8", "r9"};
  write_rows(s, 10, ids);
  char err[512];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_DROP);
  PS_CHECK_MSG(strstr(err, "2 row(s) refused") != NULL, "err: %s", err);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 0);
  const size_t *rows;
  const char *const *why;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 2);
  PS_CHECK_INT_EQ(rows[0], 3);
  PS_CHECK_INT_EQ(rows[1], 7);
  PS_CHECK_MSG(strstr(why[0], "Code: 27") && strstr(why[0], "BAD3"), "why[0]: %s", why[0]);
  PS_CHECK_MSG(strstr(why[1], "Code: 27") && strstr(why[1], "BAD7"), "why[1]: %s", why[1]);
  PS_CHECK_INT_EQ(nstored(&fh, &ch), 8);
  for (int i = 0; i < 10; i++)
    PS_CHECK_INT_EQ(times_stored(&fh, &ch, ids[i]), i == 3 || i == 7 ? 0 : 1);
  /* 1 + about 2·log2(10) per bad row. */
  PS_CHECK_MSG(fh_count(&fh) <= 13, "%zu requests", fh_count(&fh));
  /* The next batch starts from index 0 and has nothing to report. */
  const char *more[] = {"BADx"};
  write_rows(s, 1, more);
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 0);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_DROP);
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 1);
  PS_CHECK_INT_EQ(rows[0], 0);
  ps_sink_destroy(s);
  fh_stop(&fh);
  free_ch(&ch);
}

PS_TEST(test_all_rows_bad) {
  static fake_ch ch;
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ch_script, &ch) == 0);
  ps_sink *s = make_sink(&fh);
  const char *ids[] = {"BAD0", "BAD1", "BAD2", "BAD3"};
  write_rows(s, 4, ids);
  char err[512];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_DROP);
  const size_t *rows;
  const char *const *why;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 4);
  for (size_t i = 0; i < 4; i++)
    PS_CHECK_INT_EQ(rows[i], i);
  PS_CHECK_INT_EQ(nstored(&fh, &ch), 0);
  PS_CHECK_INT_EQ(fh_count(&fh), 7); /* 2n - 1 */
  ps_sink_destroy(s);
  fh_stop(&fh);
  free_ch(&ch);
}

PS_TEST(test_retry_before_anything_is_stored) {
  static fake_ch ch;
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ch_script, &ch) == 0);
  int fail[] = {0};
  set_failures(&fh, &ch, fail, 1);
  ps_sink *s = make_sink(&fh);
  const char *ids[] = {"a", "b"};
  write_rows(s, 2, ids);
  char err[512];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_RETRY);
  PS_CHECK(strstr(err, "Code: 202") != NULL);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 2);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(nstored(&fh, &ch), 2);
  ps_sink_destroy(s);
  fh_stop(&fh);
  free_ch(&ch);
}

/*
 * 8 rows, BAD at 5. Requests: #0 [0,8) bad; #1 [0,4) ok, so [4,8) is bad
 * and is split unsent; #2 [4,6) -> made to fail with a retryable error: RETRY
 * with rows 0..3 stored and cut out of the buffer.
 */
PS_TEST(test_retry_during_bisection_keeps_what_landed) {
  static fake_ch ch;
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ch_script, &ch) == 0);
  int fail[] = {2};
  set_failures(&fh, &ch, fail, 1);
  ps_sink *s = make_sink(&fh);
  const char *ids[] = {"r0", "r1", "r2", "r3", "r4", "BAD5", "r6", "r7"};
  write_rows(s, 8, ids);
  char err[512];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_RETRY);
  PS_CHECK_INT_EQ(fh_count(&fh), 3);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 4);
  const size_t *rows;
  const char *const *why;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 0);
  PS_CHECK_INT_EQ(nstored(&fh, &ch), 4);
  /* A row written now joins the batch as index 8. */
  const char *more[] = {"BAD8"};
  write_rows(s, 1, more);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 5);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_DROP);
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 2);
  PS_CHECK_INT_EQ(rows[0], 5);
  PS_CHECK_INT_EQ(rows[1], 8);
  for (int i = 0; i < 8; i++)
    PS_CHECK_MSG(times_stored(&fh, &ch, ids[i]) == (i == 5 ? 0u : 1u), "%s stored %zu times", ids[i],
                 times_stored(&fh, &ch, ids[i]));
  /* The second line of the remaining TSV still starts at a row boundary: r4's n is 4. */
  int found = 0;
  for (size_t i = 0; i < ch.nstored; i++)
    found |= !strcmp(ch.stored[i], "r4\t4") || !strcmp(ch.stored[i], "r7\t7");
  PS_CHECK(found);
  ps_sink_destroy(s);
  fh_stop(&fh);
  free_ch(&ch);
}

/*
 * 8 rows, BAD at 1: #0 [0,8) bad; #1 [0,4) bad; #2 [0,2) bad; #3 [0,1) ok,
 * so row 1 is refused unsent; #4 [2,4) ok; #5 [4,8) -> retryable failure. The refusal of
 * row 1 is remembered for the DROP that ends the batch.
 */
PS_TEST(test_refusal_survives_a_retry) {
  static fake_ch ch;
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ch_script, &ch) == 0);
  int fail[] = {5};
  set_failures(&fh, &ch, fail, 1);
  ps_sink *s = make_sink(&fh);
  const char *ids[] = {"r0", "BAD1", "r2", "r3", "r4", "r5", "r6", "r7"};
  write_rows(s, 8, ids);
  char err[512];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_RETRY);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 4);
  PS_CHECK_INT_EQ(nstored(&fh, &ch), 3);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_DROP);
  const size_t *rows;
  const char *const *why;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 1);
  PS_CHECK_INT_EQ(rows[0], 1);
  PS_CHECK(strstr(why[0], "BAD1") != NULL);
  PS_CHECK_INT_EQ(nstored(&fh, &ch), 7);
  for (int i = 0; i < 8; i++)
    PS_CHECK_INT_EQ(times_stored(&fh, &ch, ids[i]), i == 1 ? 0 : 1);
  /* Discard forgets everything, report included. */
  write_rows(s, 2, ids);
  ps_sink_discard(s);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 0);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  ps_sink_destroy(s);
  fh_stop(&fh);
  free_ch(&ch);
}

/* A string as TabSeparated writes it, byte at a time: \\ \t \n \r \0 \b \f escaped, the rest copied. */
static size_t reference_tsv(char *out, const unsigned char *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    char e = 0;
    switch (s[i]) {
    case '\\': e = '\\'; break;
    case '\t': e = 't'; break;
    case '\n': e = 'n'; break;
    case '\r': e = 'r'; break;
    case '\0': e = '0'; break;
    case '\b': e = 'b'; break;
    case '\f': e = 'f'; break;
    }
    if (e) {
      out[k++] = '\\';
      out[k++] = e;
    } else {
      out[k++] = (char)s[i];
    }
  }
  return k;
}

PS_TEST(test_tsv_escaping_byte_for_byte) {
  /* The seven escaped bytes, bytes the 8-at-a-time scan may flag that need no escape, and others. */
  static const unsigned char probes[] = {'\\', '\t', '\n', '\r', 0,   '\b', '\f', 1,
                                         7,    11,   14,   31,   '"', 0x80, 0xff};
  static fake_ch ch;
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ch_script, &ch) == 0);
  ps_sink *s = make_sink(&fh);
  ps_buf want = PS_BUF_INIT;
  size_t rows = 0;
  for (size_t len = 0; len <= 40; len++)
    for (size_t at = 0; at <= len; at++)
      for (size_t p = 0; p < sizeof probes; p++) {
        if (at == len && p > 0)
          continue; /* the clean string once per length */
        unsigned char str[48];
        for (size_t i = 0; i < len; i++)
          str[i] = (unsigned char)('a' + i % 26);
        if (at < len)
          str[at] = probes[p];
        if (at + 3 < len && p % 2) /* and some with two in a row */
          str[at + 1] = probes[(p + 3) % sizeof probes];
        ps_value v[2];
        memset(v, 0, sizeof v);
        v[0].s = (const char *)str;
        v[0].len = len;
        v[1].i = -(int64_t)rows;
        ps_sink_write(s, v);
        char line[128];
        size_t k = reference_tsv(line, str, len);
        ps_buf_append(&want, line, k);
        ps_buf_printf(&want, "\t%lld\n", -(long long)rows);
        rows++;
      }
  char err[512];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(fh_count(&fh), 1);
  const ps_buf *body = &fh.req[0].body;
  size_t at = 0;
  while (at < want.len && at < body->len && want.data[at] == body->data[at])
    at++;
  PS_CHECK_MSG(body->len == want.len && at == want.len,
               "%zu rows: body differs at byte %zu: got \"%.40s\", want \"%.40s\"", rows, at,
               body->data ? body->data + at : "", want.data + at);
  ps_buf_free(&want);
  ps_sink_destroy(s);
  fh_stop(&fh);
  free_ch(&ch);
}

static fh_reply ok_script(fake_http *fh, const fh_req *r, size_t n) {
  (void)fh, (void)r, (void)n;
  return (fh_reply){200, "", NULL, 0};
}

/* A row of every column type, with the widest values each can take and strings that are all escapes (the row
   writer reserves the room for the whole row up front: twice each string, 32 bytes a column), as printf and
   reference_tsv write them; a missing string is empty. Rows are written until the buffer has grown several
   times. */
PS_TEST(test_every_column_type_at_its_widest) {
  static const ps_column wide_cols[] = {{"s", PS_COL_STRING},   {"u", PS_COL_UINT64}, {"f", PS_COL_FLOAT64},
                                        {"d", PS_COL_DATETIME}, {"i", PS_COL_INT64},  {"none", PS_COL_STRING},
                                        {"f2", PS_COL_FLOAT64}};
  static const ps_table wide = {"w", 7, wide_cols, "ENGINE = Memory"};
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ok_script, NULL) == 0);
  ps_log_setup(PS_LOG_ERROR, PS_LOG_TEXT);
  snprintf(url, sizeof url, "http://127.0.0.1:%u", fh.port);
  ps_clickhouse_options o = {url, "db", "", "", 5000};
  ps_sink *s = ps_sink_clickhouse_create(&o, &wide);
  static char str[3000];
  ps_buf want = PS_BUF_INIT;
  for (size_t r = 0; r < 40; r++) {
    size_t len = (r * 397) % sizeof str;
    memset(str, r % 2 ? '\t' : '\\', len);
    ps_value v[7];
    memset(v, 0, sizeof v);
    v[0].s = str;
    v[0].len = len;
    v[1].u = UINT64_MAX - r;
    v[2].f = -1.2345678901234567e+308;
    v[3].i = INT64_MIN + (int64_t)r;
    v[4].i = r % 2 ? INT64_MAX : INT64_MIN;
    v[6].f = 1.0 / 3;
    ps_sink_write(s, v);
    for (size_t i = 0; i < len; i++)
      ps_buf_puts(&want, r % 2 ? "\\t" : "\\\\");
    ps_buf_printf(&want, "\t%llu\t%.17g\t%lld\t%lld\t\t%.17g\n", (unsigned long long)v[1].u, v[2].f,
                  (long long)v[3].i, (long long)v[4].i, v[6].f);
  }
  char err[512];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(fh_count(&fh), 1);
  const ps_buf *body = &fh.req[0].body;
  PS_CHECK(strstr(fh.req[0].url, "INSERT INTO db.w (s, u, f, d, i, none, f2) FORMAT TabSeparated"));
  size_t at = 0;
  while (at < want.len && at < body->len && want.data[at] == body->data[at])
    at++;
  PS_CHECK_MSG(body->len == want.len && at == want.len,
               "body differs at byte %zu of %zu (got %zu): \"%.40s\"", at, want.len, body->len,
               body->data ? body->data + at : "");
  ps_buf_free(&want);
  ps_sink_destroy(s);
  fh_stop(&fh);
}

PS_TEST_MAIN(PS_CASE(test_good_batch_one_insert), PS_CASE(test_bad_rows_are_isolated),
             PS_CASE(test_all_rows_bad), PS_CASE(test_retry_before_anything_is_stored),
             PS_CASE(test_retry_during_bisection_keeps_what_landed), PS_CASE(test_refusal_survives_a_retry),
             PS_CASE(test_tsv_escaping_byte_for_byte), PS_CASE(test_every_column_type_at_its_widest))
