/*
 * ps_probe: dependency checks (see ps_probe.h).
 *
 * DESIGN: one thread (ps-probe) owns a broker connection and a curl handle.
 * Each tick it pings both and stores the outcome under a mutex; readers
 * (/ready, the gauges) copy it out. A failed broker ping drops the connection
 * and the next tick connects afresh, so recovery is seen within a tick or two.
 */
#include "ops/ps_probe.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ps_buf.h"
#include "core/ps_metrics.h"

struct ps_probe {
  ps_probe_options opt;
  char *ch_url, *ch_user, *ch_password;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
  _Atomic int draining;
  _Atomic int rabbit_ok, ch_ok;
  char rabbit_err[256], ch_err[256]; /* under mu */
  ps_broker_conn *conn;
  CURL *curl;
};

static size_t ps__body(char *p, size_t size, size_t n, void *ud) {
  ps_buf *b = ud;
  if (b->len < 1024)
    ps_buf_append(b, p, size * n);
  return size * n;
}

static void ps__check_rabbit(ps_probe *p) {
  int ok = 0;
  char err[256] = "";
  if (!p->conn && ps_broker_connect(p->opt.broker, &p->conn) != 0) {
    p->conn = NULL;
    snprintf(err, sizeof err, "cannot connect to %s", p->opt.broker->display);
  } else if (ps_broker_ping(p->conn) != 0) {
    ps_broker_close(p->conn);
    p->conn = NULL;
    snprintf(err, sizeof err, "connection to %s lost", p->opt.broker->display);
  } else {
    ok = 1;
  }
  pthread_mutex_lock(&p->mu);
  snprintf(p->rabbit_err, sizeof p->rabbit_err, "%s", err);
  pthread_mutex_unlock(&p->mu);
  atomic_store(&p->rabbit_ok, ok);
}

static void ps__check_clickhouse(ps_probe *p) {
  if (!p->curl)
    p->curl = curl_easy_init();
  ps_buf body = PS_BUF_INIT;
  char url[1024], err[256] = "";
  snprintf(url, sizeof url, "%s/ping", p->ch_url);
  curl_easy_setopt(p->curl, CURLOPT_URL, url);
  curl_easy_setopt(p->curl, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(p->curl, CURLOPT_TIMEOUT_MS, 2000L);
  curl_easy_setopt(p->curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(p->curl, CURLOPT_WRITEFUNCTION, ps__body);
  curl_easy_setopt(p->curl, CURLOPT_WRITEDATA, &body);
  if (*p->ch_user) {
    curl_easy_setopt(p->curl, CURLOPT_USERNAME, p->ch_user);
    curl_easy_setopt(p->curl, CURLOPT_PASSWORD, p->ch_password);
  }
  CURLcode rc = curl_easy_perform(p->curl);
  long status = 0;
  curl_easy_getinfo(p->curl, CURLINFO_RESPONSE_CODE, &status);
  if (rc != CURLE_OK)
    snprintf(err, sizeof err, "%.120s: %.120s", url, curl_easy_strerror(rc));
  else if (status != 200)
    snprintf(err, sizeof err, "%.200s: HTTP %ld", url, status);
  ps_buf_free(&body);
  pthread_mutex_lock(&p->mu);
  snprintf(p->ch_err, sizeof p->ch_err, "%s", err);
  pthread_mutex_unlock(&p->mu);
  atomic_store(&p->ch_ok, err[0] == '\0');
}

static void *ps__probe_main(void *arg) {
  ps_probe *p = arg;
  pthread_setname_np(pthread_self(), "ps-probe");
  pthread_mutex_lock(&p->mu);
  while (!p->stop) {
    pthread_mutex_unlock(&p->mu);
    ps__check_rabbit(p);
    ps__check_clickhouse(p);
    pthread_mutex_lock(&p->mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)(p->opt.interval_ms % 1000) * 1000000L;
    ts.tv_sec += p->opt.interval_ms / 1000 + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    if (!p->stop)
      pthread_cond_timedwait(&p->cv, &p->mu, &ts);
  }
  pthread_mutex_unlock(&p->mu);
  ps_broker_close(p->conn);
  if (p->curl)
    curl_easy_cleanup(p->curl);
  return NULL;
}

static int ps__queue_ok(ps_probe *p) {
  return ps_queue_len(p->opt.queue) < ps_queue_capacity(p->opt.queue);
}

int ps_probe_snapshot(ps_probe *p, ps_probe_check checks[4]) {
  checks[0] = (ps_probe_check){"rabbitmq", atomic_load(&p->rabbit_ok), ""};
  checks[1] = (ps_probe_check){"clickhouse", atomic_load(&p->ch_ok), ""};
  checks[2] = (ps_probe_check){"queue", ps__queue_ok(p), ""};
  checks[3] = (ps_probe_check){"draining", !atomic_load(&p->draining), ""};
  pthread_mutex_lock(&p->mu);
  if (!checks[0].ok)
    snprintf(checks[0].error, sizeof checks[0].error, "%s", p->rabbit_err[0] ? p->rabbit_err : "not checked yet");
  if (!checks[1].ok)
    snprintf(checks[1].error, sizeof checks[1].error, "%s", p->ch_err[0] ? p->ch_err : "not checked yet");
  pthread_mutex_unlock(&p->mu);
  if (!checks[2].ok)
    snprintf(checks[2].error, sizeof checks[2].error, "queue full (%zu batches)",
             ps_queue_capacity(p->opt.queue));
  if (!checks[3].ok)
    snprintf(checks[3].error, sizeof checks[3].error, "shutting down");
  return checks[0].ok && checks[1].ok && checks[2].ok && checks[3].ok;
}

static double ps__g_rabbit(void *ud) { return atomic_load(&((ps_probe *)ud)->rabbit_ok); }
static double ps__g_ch(void *ud) { return atomic_load(&((ps_probe *)ud)->ch_ok); }
static double ps__g_draining(void *ud) { return atomic_load(&((ps_probe *)ud)->draining); }
static double ps__g_ready(void *ud) {
  ps_probe_check c[4];
  return ps_probe_snapshot(ud, c);
}

ps_probe *ps_probe_start(const ps_probe_options *opt) {
  ps_probe *p = calloc(1, sizeof *p);
  if (!p)
    abort();
  p->opt = *opt;
  p->ch_url = strdup(opt->clickhouse_url);
  size_t n = strlen(p->ch_url);
  while (n && p->ch_url[n - 1] == '/')
    p->ch_url[--n] = '\0';
  p->ch_user = strdup(opt->clickhouse_user ? opt->clickhouse_user : "");
  p->ch_password = strdup(opt->clickhouse_password ? opt->clickhouse_password : "");
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  ps_metrics_gauge_fn("penstock_dependency_up", "dependency=\"rabbitmq\"",
                      "1 if the dependency answered its last probe", ps__g_rabbit, p);
  ps_metrics_gauge_fn("penstock_dependency_up", "dependency=\"clickhouse\"", NULL, ps__g_ch, p);
  ps_metrics_gauge_fn("penstock_ready", "", "1 if /ready answers 200", ps__g_ready, p);
  ps_metrics_gauge_fn("penstock_draining", "", "1 while shutting down", ps__g_draining, p);
  if (pthread_create(&p->thread, NULL, ps__probe_main, p) != 0)
    abort();
  return p;
}

void ps_probe_set_draining(ps_probe *p) {
  if (p)
    atomic_store(&p->draining, 1);
}

void ps_probe_stop(ps_probe *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  pthread_join(p->thread, NULL);
  free(p->ch_url);
  free(p->ch_user);
  free(p->ch_password);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}
