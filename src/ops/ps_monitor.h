/*
 * ps_monitor: the monitoring HTTP server (libmicrohttpd).
 *
 *   GET /health         liveness: 200 {"status":"ok","version":...}
 *   GET /ready          200 or 503 {"ready":bool,"checks":{name:{"ok":bool,"error":...}}}
 *   GET /metrics        Prometheus text exposition 0.0.4
 *   GET /debug/config   effective configuration, secrets redacted
 *   GET /debug/threads  per-thread CPU time, queue and connection states; only
 *                       when DEBUG=1 or ENV is not PRODUCTION (404 otherwise)
 * Other paths answer 404, other methods 405, both with a JSON body.
 */
#ifndef PS_MONITOR_H
#define PS_MONITOR_H

#include "core/ps_config.h"
#include "ingest/ps_dispatch.h"
#include "ops/ps_probe.h"
#include "queue/ps_queue.h"

typedef struct ps_monitor ps_monitor;

typedef struct ps_monitor_options {
  int port;
  const ps_config *cfg; /* borrowed, like the rest, until stop */
  ps_probe *probe;
  ps_queue *queue;
  ps_dispatch *dispatch;
  const char *version;
} ps_monitor_options;

/** Starts serving; returns 0 and *out, or PS_EIO if the port cannot be bound. */
int ps_monitor_start(const ps_monitor_options *opt, ps_monitor **out);

/** Stops serving and frees; accepts NULL. */
void ps_monitor_stop(ps_monitor *m);

#endif
