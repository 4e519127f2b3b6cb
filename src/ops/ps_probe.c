/*
 * ps_probe: dependency checks (see ps_probe.h).
 *
 * DESIGN: one thread (ps-probe) owns a broker connection and a curl handle per
 * ClickHouse connection. Each tick it pings them all and stores the outcome
 * under a mutex; readers
 * (/ready, the gauges) copy it out. A failed broker ping drops the connection
 * and the next tick connects afresh, and so does a ClickHouse ping that failed
 * below HTTP, so recovery is seen within a tick or two.
 */
#include "ops/ps_probe.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ps_buf.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"

typedef struct ps__ch {
  char *name, *check, *url, *user, *password;
  CURL *curl;         /* the probe thread's */
  _Atomic int ok;
  char err[256];      /* under mu */
} ps__ch;

struct ps_probe {
  ps_probe_options opt;
  ps__ch ch[PS_PROBE_MAX_CLICKHOUSE];
  size_t nch;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
  _Atomic int draining;
  _Atomic int rabbit_ok;
  char rabbit_err[256]; /* under mu */
  ps_broker_conn *conn;
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

static void ps__check_clickhouse(ps_probe *p, ps__ch *h) {
  if (!h->curl)
    h->curl = curl_easy_init();
  ps_buf body = PS_BUF_INIT;
  char url[1024], err[256] = "";
  snprintf(url, sizeof url, "%s/ping", h->url);
  curl_easy_setopt(h->curl, CURLOPT_URL, url);
  curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, 2000L);
  curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, ps__body);
  curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &body);
  if (*h->user) {
    curl_easy_setopt(h->curl, CURLOPT_USERNAME, h->user);
    curl_easy_setopt(h->curl, CURLOPT_PASSWORD, h->password);
  }
  CURLcode rc = curl_easy_perform(h->curl);
  long status = 0;
  curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
  if (rc != CURLE_OK)
    snprintf(err, sizeof err, "%.120s: %.120s", url, curl_easy_strerror(rc));
  else if (status != 200)
    snprintf(err, sizeof err, "%.200s: HTTP %ld", url, status);
  ps_buf_free(&body);
  if (rc != CURLE_OK) { /* a fresh handle next time: reconnect rather than reuse a broken session */
    curl_easy_cleanup(h->curl);
    h->curl = NULL;
  }
  pthread_mutex_lock(&p->mu);
  snprintf(h->err, sizeof h->err, "%s", err);
  pthread_mutex_unlock(&p->mu);
  atomic_store(&h->ok, err[0] == '\0');
}

static void *ps__probe_main(void *arg) {
  ps_probe *p = arg;
  pthread_setname_np(pthread_self(), "ps-probe");
  pthread_mutex_lock(&p->mu);
  while (!p->stop) {
    pthread_mutex_unlock(&p->mu);
    ps__check_rabbit(p);
    for (size_t i = 0; i < p->nch; i++)
      ps__check_clickhouse(p, &p->ch[i]);
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
  for (size_t i = 0; i < p->nch; i++)
    if (p->ch[i].curl)
      curl_easy_cleanup(p->ch[i].curl);
  return NULL;
}

static int ps__queue_ok(ps_probe *p) {
  return ps_queue_len(p->opt.queue) < ps_queue_capacity(p->opt.queue);
}

static void ps__set(ps_probe_check *c, const char *name, int ok, const char *err) {
  snprintf(c->name, sizeof c->name, "%s", name);
  c->ok = ok;
  snprintf(c->error, sizeof c->error, "%s", ok ? "" : err[0] ? err : "not checked yet");
}

size_t ps_probe_snapshot(ps_probe *p, ps_probe_check *checks, int *ready) {
  size_t n = 0;
  pthread_mutex_lock(&p->mu);
  ps__set(&checks[n++], p->opt.broker_check ? p->opt.broker_check : "rabbitmq", atomic_load(&p->rabbit_ok),
          p->rabbit_err);
  for (size_t i = 0; i < p->nch; i++)
    ps__set(&checks[n++], p->ch[i].check, atomic_load(&p->ch[i].ok), p->ch[i].err);
  pthread_mutex_unlock(&p->mu);
  char why[64];
  snprintf(why, sizeof why, "queue full (%zu batches)", ps_queue_capacity(p->opt.queue));
  ps__set(&checks[n++], "queue", ps__queue_ok(p), why);
  ps__set(&checks[n++], "draining", !atomic_load(&p->draining), "shutting down");
  *ready = 1;
  for (size_t i = 0; i < n; i++)
    *ready &= checks[i].ok;
  return n;
}

static double ps__g_rabbit(void *ud) { return atomic_load(&((ps_probe *)ud)->rabbit_ok); }
static double ps__g_ch(void *ud) { return atomic_load(&((ps__ch *)ud)->ok); }
static double ps__g_draining(void *ud) { return atomic_load(&((ps_probe *)ud)->draining); }
static double ps__g_ready(void *ud) {
  ps_probe_check c[PS_PROBE_MAX_CHECKS];
  int ready;
  ps_probe_snapshot(ud, c, &ready);
  return ready;
}

static char *ps__strdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d)
    abort();
  return d;
}

ps_probe *ps_probe_start(const ps_probe_options *opt) {
  ps_probe *p = calloc(1, sizeof *p);
  if (!p)
    abort();
  p->opt = *opt;
  p->opt.clickhouse = NULL;
  if (opt->nclickhouse > PS_PROBE_MAX_CLICKHOUSE)
    ps_warn("probe: too many clickhouse connections; only the first ones are health-checked");
  for (size_t i = 0; i < opt->nclickhouse && i < PS_PROBE_MAX_CLICKHOUSE; i++) {
    ps__ch *h = &p->ch[p->nch++];
    h->name = ps__strdup(opt->clickhouse[i].name);
    h->url = ps__strdup(opt->clickhouse[i].url);
    size_t n = strlen(h->url);
    while (n && h->url[n - 1] == '/')
      h->url[--n] = '\0';
    h->user = ps__strdup(opt->clickhouse[i].user);
    h->password = ps__strdup(opt->clickhouse[i].password);
    ps_buf c = PS_BUF_INIT;
    ps_buf_printf(&c, strcmp(h->name, "default") == 0 ? "clickhouse" : "clickhouse:%s", h->name);
    h->check = c.data;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  char blabels[100];
  snprintf(blabels, sizeof blabels, "dependency=\"%s\"", opt->broker_check ? opt->broker_check : "rabbitmq");
  ps_metrics_gauge_fn("penstock_dependency_up", blabels,
                      "1 if the dependency answered its last probe", ps__g_rabbit, p);
  for (size_t i = 0; i < p->nch; i++) {
    char labels[200];
    snprintf(labels, sizeof labels, "dependency=\"clickhouse\",connection=\"%s\"", p->ch[i].name);
    ps_metrics_gauge_fn("penstock_dependency_up", labels, NULL, ps__g_ch, &p->ch[i]);
  }
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
  for (size_t i = 0; i < p->nch; i++) {
    free(p->ch[i].name);
    free(p->ch[i].check);
    free(p->ch[i].url);
    free(p->ch[i].user);
    free(p->ch[i].password);
  }
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}
