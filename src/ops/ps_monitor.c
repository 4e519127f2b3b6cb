/*
 * ps_monitor: monitoring endpoints over libmicrohttpd (see ps_monitor.h).
 *
 * libmicrohttpd runs its own polling thread; every handler here only reads
 * atomics or takes short locks (the metrics registry, the probe's state), so
 * a scrape never waits on the data path.
 */
#include "ops/ps_monitor.h"

#include <dirent.h>
#include <pthread.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "codec/ps_pbjson.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"

struct ps_monitor {
  ps_monitor_options opt;
  struct MHD_Daemon *daemon;
  int debug_threads;
};

static enum MHD_Result ps__send(struct MHD_Connection *conn, unsigned status, const char *type, ps_buf *body) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(body->len, body->data ? body->data : (char *)"", MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(r, "Content-Type", type);
  MHD_add_response_header(r, "Cache-Control", "no-store");
  enum MHD_Result ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  ps_buf_free(body);
  return ret;
}

static enum MHD_Result ps__json_error(struct MHD_Connection *conn, unsigned status, const char *msg) {
  ps_buf b = PS_BUF_INIT;
  ps_buf_puts(&b, "{\"error\":");
  ps_pbjson_put_string(&b, msg, strlen(msg));
  ps_buf_puts(&b, "}\n");
  struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(r, "Content-Type", "application/json");
  if (status == 405)
    MHD_add_response_header(r, "Allow", "GET, HEAD");
  enum MHD_Result ret = MHD_queue_response(conn, status, r);
  MHD_destroy_response(r);
  ps_buf_free(&b);
  return ret;
}

static enum MHD_Result ps__ready(ps_monitor *m, struct MHD_Connection *conn) {
  ps_probe_check c[PS_PROBE_MAX_CHECKS];
  int ok;
  size_t n = ps_probe_snapshot(m->opt.probe, c, &ok);
  ps_buf b = PS_BUF_INIT;
  ps_buf_printf(&b, "{\"ready\":%s,\"checks\":{", ok ? "true" : "false");
  for (size_t i = 0; i < n; i++) {
    ps_buf_printf(&b, "%s\"%s\":{\"ok\":%s", i ? "," : "", c[i].name, c[i].ok ? "true" : "false");
    if (!c[i].ok) {
      ps_buf_puts(&b, ",\"error\":");
      ps_pbjson_put_string(&b, c[i].error, strlen(c[i].error));
    }
    if (strcmp(c[i].name, "queue") == 0)
      ps_buf_printf(&b, ",\"depth\":%zu,\"capacity\":%zu", ps_queue_len(m->opt.queue),
                    ps_queue_capacity(m->opt.queue));
    ps_buf_putc(&b, '}');
  }
  ps_buf_puts(&b, "}}\n");
  return ps__send(conn, ok ? 200 : 503, "application/json", &b);
}

static enum MHD_Result ps__config(ps_monitor *m, struct MHD_Connection *conn) {
  size_t n;
  const ps_setting *t = ps_config_table(&n);
  ps_buf b = PS_BUF_INIT;
  ps_buf_putc(&b, '{');
  for (size_t i = 0; i < n; i++) {
    char v[1024];
    ps_config_value(m->opt.cfg, &t[i], v, sizeof v);
    ps_buf_puts(&b, i ? ",\"" : "\"");
    ps_buf_puts(&b, t[i].name);
    ps_buf_puts(&b, "\":");
    ps_pbjson_put_string(&b, v, strlen(v));
  }
  ps_buf_puts(&b, "}\n");
  return ps__send(conn, 200, "application/json", &b);
}

static enum MHD_Result ps__threads(ps_monitor *m, struct MHD_Connection *conn) {
  long tick = sysconf(_SC_CLK_TCK);
  ps_buf b = PS_BUF_INIT;
  ps_buf_puts(&b, "{\"threads\":[");
  DIR *d = opendir("/proc/self/task");
  int first = 1;
  for (struct dirent *e; d && (e = readdir(d));) {
    if (e->d_name[0] == '.')
      continue;
    char path[300], comm[64] = "", stat[1024];
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (f) {
      if (fgets(comm, sizeof comm, f))
        comm[strcspn(comm, "\n")] = '\0';
      fclose(f);
    }
    unsigned long ut = 0, st = 0;
    char state = '?';
    snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
    f = fopen(path, "r");
    if (f) {
      size_t len = fread(stat, 1, sizeof stat - 1, f);
      stat[len] = '\0';
      fclose(f);
      char *p = strrchr(stat, ')');
      if (p)
        sscanf(p + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &state, &ut, &st);
    }
    ps_buf_printf(&b, "%s{\"tid\":%s,\"name\":", first ? "" : ",", e->d_name);
    ps_pbjson_put_string(&b, comm, strlen(comm));
    ps_buf_printf(&b, ",\"state\":\"%c\",\"cpu_seconds\":%.2f}", state, (double)(ut + st) / (double)tick);
    first = 0;
  }
  if (d)
    closedir(d);
  ps_buf_printf(&b,
                "],\"queue\":{\"depth\":%zu,\"capacity\":%zu,\"parked\":%zu},"
                "\"connections\":{\"publisher\":%lld,\"consumer\":%lld}}\n",
                ps_queue_len(m->opt.queue), ps_queue_capacity(m->opt.queue), ps_dispatch_parked(m->opt.dispatch),
                (long long)PS_METRIC_GET(broker_connections_publisher),
                (long long)PS_METRIC_GET(broker_connections_consumer));
  return ps__send(conn, 200, "application/json", &b);
}

static enum MHD_Result ps__handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state) {
  ps_monitor *m = cls;
  static _Thread_local int named; /* libmicrohttpd's thread: name it for /debug/threads and perf */
  if (!named) {
    pthread_setname_np(pthread_self(), "ps-monitor");
    named = 1;
  }
  (void)version;
  (void)upload;
  (void)upload_size;
  (void)state;
  int known = !strcmp(url, "/health") || !strcmp(url, "/ready") || !strcmp(url, "/metrics") ||
              !strcmp(url, "/debug/config") || (!strcmp(url, "/debug/threads") && m->debug_threads);
  if (!known)
    return ps__json_error(conn, 404, "not found");
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return ps__json_error(conn, 405, "method not allowed");
  if (!strcmp(url, "/health")) {
    ps_buf b = PS_BUF_INIT;
    ps_buf_printf(&b, "{\"status\":\"ok\",\"version\":\"%s\"}\n", m->opt.version);
    return ps__send(conn, 200, "application/json", &b);
  }
  if (!strcmp(url, "/ready"))
    return ps__ready(m, conn);
  if (!strcmp(url, "/metrics")) {
    ps_buf b = PS_BUF_INIT;
    ps_metrics_render(&b);
    return ps__send(conn, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
  }
  if (!strcmp(url, "/debug/config"))
    return ps__config(m, conn);
  return ps__threads(m, conn);
}

int ps_monitor_start(const ps_monitor_options *opt, ps_monitor **out) {
  ps_monitor *m = calloc(1, sizeof *m);
  if (!m)
    abort();
  m->opt = *opt;
  m->debug_threads = opt->cfg->debug || strcasecmp(opt->cfg->env, "PRODUCTION") != 0;
  m->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)opt->port, NULL,
                               NULL, ps__handle, m, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
  if (!m->daemon) {
    free(m);
    return PS_EIO;
  }
  *out = m;
  return 0;
}

void ps_monitor_stop(ps_monitor *m) {
  if (!m)
    return;
  MHD_stop_daemon(m->daemon);
  free(m);
}
