/* Tests of the HTTP forwarding sink against a real HTTP server in the process (fake_http.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/ps_topology_config.h"
#include "core/ps_log.h"
#include "ps_test.h"
#include "sink/fake_http.h"
#include "sink/ps_sink.h"

static const ps_column cols[] = {
    {"id", PS_COL_STRING},  {"n", PS_COL_INT64},        {"u", PS_COL_UINT64},     {"f", PS_COL_FLOAT64},
    {"t", PS_COL_DATETIME}, {"payload", PS_COL_STRING}, {"extra", PS_COL_STRING},
};
static const ps_table table = {"fwd", sizeof cols / sizeof cols[0], cols, ""};

/* A row whose id is id and whose other columns are fixed. */
static void write_row(ps_sink *s, const char *id) {
  ps_value v[7];
  memset(v, 0, sizeof v);
  v[0].s = id;
  v[0].len = strlen(id);
  v[1].i = 7;
  v[4].i = 0;
  v[5].s = "{}";
  v[5].len = 2;
  ps_sink_write(s, v);
}

static char url[128];

static ps_sink_conf conf_for(uint16_t port) {
  ps_sink_conf c;
  memset(&c, 0, sizeof c);
  c.kind = PS_SINK_CONF_HTTP;
  snprintf(url, sizeof url, "http://127.0.0.1:%u/ingest?api_key=secret", port);
  c.url = url;
  c.method = "POST";
  c.body = PS_HTTP_BODY_SINGLE;
  c.batch_max = 100;
  c.timeout_ms = 5000;
  c.concurrency = 1;
  c.max_retries = 5;
  c.retry_base_ms = 50;
  c.retry_max_ms = 2000;
  ps_log_setup(PS_LOG_ERROR, PS_LOG_TEXT);
  return c;
}

static fh_reply ok_script(fake_http *fh, const fh_req *r, size_t n) {
  (void)fh, (void)r, (void)n;
  return (fh_reply){200, "ok", NULL, 0};
}

/* Counts the requests whose body contains needle. */
static size_t count_bodies(fake_http *fh, const char *needle) {
  size_t k = 0, n = fh_count(fh);
  for (size_t i = 0; i < n; i++)
    if (strstr(fh->req[i].body.data ? fh->req[i].body.data : "", needle))
      k++;
  return k;
}

PS_TEST(test_row_json_and_request) {
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ok_script, NULL) == 0);
  ps_sink_conf c = conf_for(fh.port);
  ps_header_conf h[] = {{"Authorization", "Bearer tok"}, {"X-Source", "penstock"}};
  c.headers = h;
  c.nheaders = 2;
  c.method = "PUT";
  ps_sink *s = ps_sink_http_create(&c, &table);
  PS_CHECK(s != NULL);
  char err[256];
  PS_CHECK_INT_EQ(ps_sink_open(s, err, sizeof err), 0);
  ps_value v[7];
  memset(v, 0, sizeof v);
  v[0].s = "a\"b\n\xff";
  v[0].len = strlen(v[0].s);
  v[1].i = -5;
  v[2].u = UINT64_MAX;
  v[3].f = 1.5;
  v[4].i = 1704164645; /* 2024-01-02T03:04:05Z */
  v[5].s = " {\"a\": [1, 2]} ";
  v[5].len = strlen(v[5].s);
  v[6].s = "not json";
  v[6].len = strlen(v[6].s);
  ps_sink_write(s, v);
  v[5].s = "";
  v[5].len = 0;
  v[6].s = "42";
  v[6].len = 2;
  v[0].s = NULL;
  ps_sink_write(s, v);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 2);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 0);
  PS_CHECK_INT_EQ(fh_count(&fh), 2);
  PS_CHECK_STR_EQ(fh.req[0].method, "PUT");
  PS_CHECK_STR_EQ(fh.req[0].url, "/ingest");
  PS_CHECK_STR_EQ(fh.req[0].body.data,
                  "{\"id\":\"a\\\"b\\n\xEF\xBF\xBD\",\"n\":-5,\"u\":18446744073709551615,\"f\":1.5,"
                  "\"t\":\"2024-01-02T03:04:05Z\",\"payload\": {\"a\": [1, 2]} ,\"extra\":\"not json\"}");
  PS_CHECK_STR_EQ(fh.req[1].body.data, "{\"id\":\"\",\"n\":-5,\"u\":18446744073709551615,\"f\":1.5,"
                                       "\"t\":\"2024-01-02T03:04:05Z\",\"payload\":\"\",\"extra\":42}");
  const char *hd = fh.req[0].headers.data;
  PS_CHECK(strstr(hd, "Authorization: Bearer tok\n") != NULL);
  PS_CHECK(strstr(hd, "X-Source: penstock\n") != NULL);
  PS_CHECK(strstr(hd, "Content-Type: application/json\n") != NULL);
  const size_t *rows;
  const char *const *why;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 0);
  ps_sink_destroy(s);
  fh_stop(&fh);
}

/* 503 twice (408 and 500 too), then 200. */
static fh_reply flaky_script(fake_http *fh, const fh_req *r, size_t n) {
  (void)fh, (void)r;
  static const unsigned st[] = {503, 408, 500};
  if (n < 3)
    return (fh_reply){st[n], "busy", NULL, 0};
  return (fh_reply){200, "ok", NULL, 0};
}

PS_TEST(test_retries_then_ok_with_backoff) {
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, flaky_script, NULL) == 0);
  ps_sink_conf c = conf_for(fh.port);
  c.retry_base_ms = 100;
  c.retry_max_ms = 150;
  ps_sink *s = ps_sink_http_create(&c, &table);
  write_row(s, "r0");
  char err[256];
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  int64_t took = ps_now_ns() - t0;
  PS_CHECK_INT_EQ(fh_count(&fh), 4);
  for (int i = 1; i < 4; i++)
    PS_CHECK_STR_EQ(fh.req[i].body.data, fh.req[0].body.data);
  /* Full jitter: waits in [0, 100], [0, 150], [0, 150] ms. */
  static const int64_t cap_ms[] = {100, 150, 150};
  for (int i = 1; i < 4; i++) {
    int64_t gap = (fh.req[i].at_ns - fh.req[i - 1].at_ns) / 1000000;
    PS_CHECK_MSG(gap <= cap_ms[i - 1] + 250, "gap %d = %lld ms", i, (long long)gap);
  }
  PS_CHECK_MSG(took < 1500 * 1000000LL, "flush took %lld ms", (long long)(took / 1000000));
  ps_sink_destroy(s);
  fh_stop(&fh);
}

static fh_reply retry_after_script(fake_http *fh, const fh_req *r, size_t n) {
  (void)r;
  if (n == 0)
    return (fh_reply){429, "slow down", (const char *)fh->ud, 0};
  return (fh_reply){200, "ok", NULL, 0};
}

/* Flushes one row against a 429 carrying Retry-After: value, then 200; *gap_ms is the wait between the two
   requests. Returns 0, or -1 (after recording the failure) if the flush or the request count was wrong. */
static int retry_after_gap(const char *value, int retry_max_ms, int64_t *gap_ms) {
  fake_http fh;
  if (fh_start(&fh, 0, retry_after_script, (void *)value) != 0) {
    ps_test__fail(__FILE__, __LINE__, "fake server did not start");
    return -1;
  }
  ps_sink_conf c = conf_for(fh.port);
  c.retry_base_ms = 10;
  c.retry_max_ms = retry_max_ms;
  ps_sink *s = ps_sink_http_create(&c, &table);
  write_row(s, "r0");
  char err[256];
  int rc = 0;
  if (ps_sink_flush(s, err, sizeof err) != PS_SINK_OK || fh_count(&fh) != 2) {
    ps_test__fail(__FILE__, __LINE__, "Retry-After %s: flush %s, %zu requests", value, err, fh_count(&fh));
    rc = -1;
  } else {
    *gap_ms = (fh.req[1].at_ns - fh.req[0].at_ns) / 1000000;
  }
  ps_sink_destroy(s);
  fh_stop(&fh);
  return rc;
}

PS_TEST(test_retry_after_seconds) {
  int64_t gap;
  PS_CHECK(retry_after_gap("1", 5000, &gap) == 0);
  PS_CHECK_MSG(gap >= 1000 && gap < 2500, "gap %lld ms", (long long)gap);
}

PS_TEST(test_retry_after_http_date) {
  char date[64];
  time_t at = time(NULL) + 2;
  struct tm tm;
  gmtime_r(&at, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  int64_t gap;
  PS_CHECK(retry_after_gap(date, 5000, &gap) == 0);
  PS_CHECK_MSG(gap >= 900 && gap < 3500, "gap %lld ms", (long long)gap);
}

PS_TEST(test_retry_after_capped_by_retry_max) {
  int64_t gap;
  PS_CHECK(retry_after_gap("3600", 300, &gap) == 0);
  PS_CHECK_MSG(gap >= 250 && gap < 1000, "gap %lld ms", (long long)gap);
}

/* 400 for bodies holding BAD, 200 for the rest. */
static fh_reply bad_script(fake_http *fh, const fh_req *r, size_t n) {
  (void)fh, (void)n;
  if (strstr(r->body.data, "BAD"))
    return (fh_reply){400, "{\"error\":\"field x\nis wrong\"}", NULL, 0};
  return (fh_reply){201, "created", NULL, 0};
}

PS_TEST(test_4xx_refuses_only_its_rows) {
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, bad_script, NULL) == 0);
  ps_sink_conf c = conf_for(fh.port);
  c.concurrency = 3;
  ps_sink *s = ps_sink_http_create(&c, &table);
  write_row(s, "r0");
  write_row(s, "BAD1");
  write_row(s, "r2");
  write_row(s, "BAD3");
  write_row(s, "r4");
  char err[256];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_DROP);
  PS_CHECK(strstr(err, "2 row(s) refused") != NULL);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 0);
  PS_CHECK_INT_EQ(fh_count(&fh), 5); /* no retries of a 400 */
  const size_t *rows;
  const char *const *why;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 2);
  PS_CHECK_INT_EQ(rows[0], 1);
  PS_CHECK_INT_EQ(rows[1], 3);
  PS_CHECK_STR_EQ(why[0], "HTTP 400: {\"error\":\"field x is wrong\"}");
  PS_CHECK_STR_EQ(why[1], why[0]);
  /* The report lives until the next call; then the sink starts a new batch. */
  write_row(s, "r5");
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 0);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(count_bodies(&fh, "\"r5\""), 1);
  ps_sink_destroy(s);
  fh_stop(&fh);
}

PS_TEST(test_batch_arrays) {
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, ok_script, NULL) == 0);
  ps_sink_conf c = conf_for(fh.port);
  c.body = PS_HTTP_BODY_BATCH;
  c.batch_max = 3;
  ps_sink *s = ps_sink_http_create(&c, &table);
  for (int i = 0; i < 7; i++) {
    char id[16];
    snprintf(id, sizeof id, "r%d", i);
    write_row(s, id);
  }
  char err[256];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(fh_count(&fh), 3);
  static const size_t sizes[] = {3, 3, 1};
  int next = 0;
  for (int i = 0; i < 3; i++) {
    json_error_t je;
    json_t *a = json_loads(fh.req[i].body.data, 0, &je);
    PS_CHECK_MSG(a && json_is_array(a), "body %d is not an array: %s", i, fh.req[i].body.data);
    PS_CHECK_INT_EQ(json_array_size(a), sizes[i]);
    for (size_t k = 0; k < json_array_size(a); k++) {
      char id[16];
      snprintf(id, sizeof id, "r%d", next++);
      json_t *o = json_array_get(a, k);
      PS_CHECK(json_is_object(o));
      PS_CHECK_STR_EQ(json_string_value(json_object_get(o, "id")), id);
      PS_CHECK(json_is_object(json_object_get(o, "payload")));
    }
    json_decref(a);
  }
  ps_sink_destroy(s);
  fh_stop(&fh);
}

PS_TEST(test_batch_4xx_refuses_the_whole_request) {
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, bad_script, NULL) == 0);
  ps_sink_conf c = conf_for(fh.port);
  c.body = PS_HTTP_BODY_BATCH;
  c.batch_max = 2;
  c.concurrency = 2;
  ps_sink *s = ps_sink_http_create(&c, &table);
  write_row(s, "r0");
  write_row(s, "r1");
  write_row(s, "r2");
  write_row(s, "BAD3");
  write_row(s, "r4");
  char err[256];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_DROP);
  const size_t *rows;
  const char *const *why;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 2);
  PS_CHECK_INT_EQ(rows[0], 2);
  PS_CHECK_INT_EQ(rows[1], 3);
  PS_CHECK_INT_EQ(fh_count(&fh), 3);
  ps_sink_destroy(s);
  fh_stop(&fh);
}

static fh_reply slow_script(fake_http *fh, const fh_req *r, size_t n) {
  (void)fh, (void)r, (void)n;
  return (fh_reply){200, "ok", NULL, 200};
}

PS_TEST(test_concurrency_overlaps_requests) {
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, slow_script, NULL) == 0);
  ps_sink_conf c = conf_for(fh.port);
  c.concurrency = 4;
  ps_sink *s = ps_sink_http_create(&c, &table);
  for (int i = 0; i < 8; i++)
    write_row(s, "r");
  char err[256];
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  int64_t took = (ps_now_ns() - t0) / 1000000;
  PS_CHECK_INT_EQ(fh_count(&fh), 8);
  PS_CHECK_MSG(atomic_load(&fh.max_inflight) == 4, "max in flight %d", atomic_load(&fh.max_inflight));
  PS_CHECK_MSG(took < 1200, "8 requests of 200 ms, 4 at a time, took %lld ms", (long long)took);
  ps_sink_destroy(s);
  fh_stop(&fh);

  PS_CHECK(fh_start(&fh, 0, slow_script, NULL) == 0);
  c = conf_for(fh.port);
  c.concurrency = 1;
  s = ps_sink_http_create(&c, &table);
  for (int i = 0; i < 3; i++)
    write_row(s, "r");
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(atomic_load(&fh.max_inflight), 1);
  ps_sink_destroy(s);
  fh_stop(&fh);
}

PS_TEST(test_network_error_retry_then_continue) {
  uint16_t port = fh_free_port();
  PS_CHECK(port != 0);
  ps_sink_conf c = conf_for(port);
  c.max_retries = 2;
  c.retry_base_ms = 10;
  c.retry_max_ms = 50;
  c.concurrency = 2;
  ps_sink *s = ps_sink_http_create(&c, &table);
  write_row(s, "r0");
  write_row(s, "r1");
  write_row(s, "r2");
  char err[256];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_RETRY);
  PS_CHECK_MSG(strstr(err, "after 2 retries") != NULL, "err: %s", err);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 3);
  const size_t *rows;
  const char *const *why;
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 0);
  /* More rows join the batch; the target comes up; the flush continues. */
  write_row(s, "BAD3");
  fake_http fh;
  PS_CHECK(fh_start(&fh, port, bad_script, NULL) == 0);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_DROP);
  PS_CHECK_INT_EQ(ps_sink_rejected(s, &rows, &why), 1);
  PS_CHECK_INT_EQ(rows[0], 3);
  PS_CHECK_INT_EQ(fh_count(&fh), 4);
  ps_sink_destroy(s);
  fh_stop(&fh);
}

/* Bodies holding "r1" fail with 503 while fh->ud is non-NULL. */
static fh_reply r1_down_script(fake_http *fh, const fh_req *r, size_t n) {
  (void)n;
  if (fh->ud && strstr(r->body.data, "\"r1\""))
    return (fh_reply){503, "down", NULL, 0};
  return (fh_reply){200, "ok", NULL, 0};
}

PS_TEST(test_stored_rows_are_not_sent_again) {
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, r1_down_script, (void *)1) == 0);
  ps_sink_conf c = conf_for(fh.port);
  c.max_retries = 1;
  c.retry_base_ms = 10;
  ps_sink *s = ps_sink_http_create(&c, &table);
  write_row(s, "r0");
  write_row(s, "r1");
  write_row(s, "r2");
  char err[256];
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_RETRY);
  PS_CHECK(strstr(err, "HTTP 503") != NULL);
  /* r0 landed; r1 failed twice, and the sink stopped there: r2 waits. */
  PS_CHECK_INT_EQ(ps_sink_pending(s), 2);
  PS_CHECK_INT_EQ(count_bodies(&fh, "\"r0\""), 1);
  PS_CHECK_INT_EQ(count_bodies(&fh, "\"r1\""), 2);
  PS_CHECK_INT_EQ(count_bodies(&fh, "\"r2\""), 0);
  pthread_mutex_lock(&fh.mu);
  fh.ud = NULL;
  pthread_mutex_unlock(&fh.mu);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 0);
  PS_CHECK_INT_EQ(count_bodies(&fh, "\"r0\""), 1);
  PS_CHECK_INT_EQ(count_bodies(&fh, "\"r1\""), 3);
  PS_CHECK_INT_EQ(count_bodies(&fh, "\"r2\""), 1);
  ps_sink_destroy(s);
  fh_stop(&fh);
}

/* The first request hangs for longer than the sink's timeout. */
static fh_reply hang_script(fake_http *fh, const fh_req *r, size_t n) {
  (void)fh, (void)r;
  return (fh_reply){200, "ok", NULL, n == 0 ? 1500 : 0};
}

PS_TEST(test_timeout_is_retried) {
  fake_http fh;
  PS_CHECK(fh_start(&fh, 0, hang_script, NULL) == 0);
  ps_sink_conf c = conf_for(fh.port);
  c.timeout_ms = 300;
  c.retry_base_ms = 10;
  ps_sink *s = ps_sink_http_create(&c, &table);
  write_row(s, "r0");
  char err[256];
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  int64_t took = (ps_now_ns() - t0) / 1000000;
  PS_CHECK_INT_EQ(fh_count(&fh), 2);
  PS_CHECK_MSG(took >= 300 && took < 1200, "took %lld ms", (long long)took);
  ps_sink_destroy(s);
  fh_stop(&fh);

  /* Always too slow: RETRY once the retries are spent. */
  PS_CHECK(fh_start(&fh, 0, slow_script, NULL) == 0);
  c = conf_for(fh.port);
  c.timeout_ms = 50;
  c.max_retries = 1;
  c.retry_base_ms = 10;
  s = ps_sink_http_create(&c, &table);
  write_row(s, "r0");
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_RETRY);
  PS_CHECK_MSG(strstr(err, "imeout") || strstr(err, "timed out"), "err: %s", err);
  ps_sink_discard(s);
  PS_CHECK_INT_EQ(ps_sink_pending(s), 0);
  size_t before = fh_count(&fh);
  PS_CHECK_INT_EQ(ps_sink_flush(s, err, sizeof err), PS_SINK_OK);
  PS_CHECK_INT_EQ(fh_count(&fh), before);
  ps_sink_destroy(s);
  fh_stop(&fh);
}

PS_TEST(test_bad_url) {
  ps_sink_conf c = conf_for(1);
  c.url = "not a url";
  PS_CHECK(ps_sink_http_create(&c, &table) == NULL);
  ps_sink_destroy(NULL);
}

PS_TEST_MAIN(PS_CASE(test_row_json_and_request), PS_CASE(test_retries_then_ok_with_backoff),
             PS_CASE(test_retry_after_seconds), PS_CASE(test_retry_after_http_date),
             PS_CASE(test_retry_after_capped_by_retry_max), PS_CASE(test_4xx_refuses_only_its_rows),
             PS_CASE(test_batch_arrays), PS_CASE(test_batch_4xx_refuses_the_whole_request),
             PS_CASE(test_concurrency_overlaps_requests), PS_CASE(test_network_error_retry_then_continue),
             PS_CASE(test_stored_rows_are_not_sent_again), PS_CASE(test_timeout_is_retried),
             PS_CASE(test_bad_url))
