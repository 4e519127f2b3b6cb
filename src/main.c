/*
 * penstock: an event-ingestion gateway.
 *
 *   penstock serve      run the gateway (configuration from the environment)
 *   penstock send       send events to a server of the contract
 *   penstock bench      a load generator for benchmarks of a server of the contract
 *   penstock version    print the version
 *   penstock config     print the configuration reference (--markdown) or the
 *                       effective configuration
 *
 * DESIGN (serve): the main thread loads the configuration, starts every stage
 * and then only waits for SIGINT/SIGTERM, which every other thread blocks.
 * Threads: gRPC completion-queue threads (ingest), the dispatch waiter
 * (parked calls), the router's workers (publish), the consumers (land). Each
 * worker and consumer owns its broker connection; they share the batch queue.
 * Shutdown runs the data path front to back: health turns NOT_SERVING and the
 * server stops taking calls and finishes those in flight; the queue is closed
 * and the workers publish what is left; the consumers flush and acknowledge;
 * all within SHUTDOWN_TIMEOUT_MS.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <errno.h>

#include "broker/ps_broker.h"
#include "config/ps_topology_config.h"
#include "cli/ps_bench.h"
#include "cli/ps_send.h"
#include "consume/ps_fleet.h"
#include "core/ps_config.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"
#include "ingest/ps_dispatch.h"
#include "core/ps_failpoint.h"
#include "ingest/ps_grpc_server.h"
#include "ops/ps_monitor.h"
#include "ops/ps_probe.h"
#include "queue/ps_queue.h"
#include "route/ps_replay.h"
#include "route/ps_router.h"
#include "spool/ps_spool.h"
#include "sink/ps_sink.h"
#include <systemd/sd-daemon.h>
#include <time.h>

#ifndef PENSTOCK_VERSION
#define PENSTOCK_VERSION "0.1.0"
#endif

#define PS_SKIPPED_QUEUE "grpc_event_skipped.error"

enum { PS_EXIT_OK = 0, PS_EXIT_FAIL = 1, PS_EXIT_USAGE = 2 };

static void ps__usage(FILE *out) {
  fprintf(out,
          "usage: penstock <command> [options]\n"
          "\n"
          "commands:\n"
          "  serve             run the gateway; configuration comes from the environment\n"
          "                    and the dotenv file for ENV (see `penstock config --markdown`)\n"
          "  send [--addr HOST:PORT] (--demo N | --file F)\n"
          "                    send events to a server of the contract (see penstock send --help)\n"
          "  bench --addr HOST:PORT (--duration S | --events N)\n"
          "                    load generator for benchmarks: closed loop, or open loop with --rate;\n"
          "                    latency percentiles, timeline, CDF (see penstock bench --help)\n"
          "  check-config [FILE]  validate a topology file (default: $PENSTOCK_CONFIG, else the\n"
          "                    built-in one) and print it resolved; exit 2 with file:line: reason\n"
          "  config            print the effective configuration (secrets redacted)\n"
          "  config --markdown print the configuration reference\n"
          "  version           print the version\n"
          "\n"
          "exit codes: 0 success, 1 runtime failure, 2 usage or configuration error\n");
}

static double ps__g_queue_depth(void *ud) { return (double)ps_queue_len(ud); }
static double ps__g_queue_capacity(void *ud) { return (double)ps_queue_capacity(ud); }
static double ps__g_parked(void *ud) { return (double)ps_dispatch_parked(ud); }

/* Waits for SIGINT/SIGTERM, pinging systemd's watchdog (if it asked for one) meanwhile. */
static int ps__wait_for_signal(const sigset_t *sigs) {
  uint64_t watchdog_us = 0;
  int wd = sd_watchdog_enabled(0, &watchdog_us) > 0 && watchdog_us > 0;
  int64_t every_ns = wd ? (int64_t)watchdog_us * 500 : 3600LL * 1000000000; /* half the interval */
  for (;;) {
    struct timespec ts = {(time_t)(every_ns / 1000000000), (long)(every_ns % 1000000000)};
    int sig = sigtimedwait(sigs, NULL, &ts);
    if (sig == SIGINT || sig == SIGTERM)
      return sig;
    if (wd)
      sd_notify(0, "WATCHDOG=1");
  }
}

/* The topology file: PENSTOCK_CONFIG, else the built-in one. 0, or PS_ECONFIG with err. */
static int ps__load_topology(const ps_config *cfg, ps_topology_config *tc, char *err, size_t errlen) {
  const char *path = cfg->topology_path;
  if (*path)
    return ps_topology_config_load(path, tc, err, errlen);
  const char *text = ps_topology_config_default();
  return ps_topology_config_parse("(built-in)", text, strlen(text), tc, err, errlen);
}

/* Frees what serve holds before its threads start; returns code. */
static int ps__start_failed(int code, ps_config *cfg, ps_topology_config *tc, ps_queue_decl *queues,
                            ps_binding_decl *bindings) {
  ps_topology_config_free(tc);
  free(queues);
  free(bindings);
  ps_config_free(cfg);
  return code;
}

static int ps__overflow(void *router, ps_batch *b) { return ps_router_spool_batch(router, b); }

static int ps__serve(void) {
  ps_config cfg;
  char err[512];
  if (ps_config_load(&cfg, NULL, err, sizeof err) != 0) {
    fprintf(stderr, "penstock: configuration error: %s\n", err);
    ps_config_free(&cfg);
    return PS_EXIT_USAGE;
  }
  ps_log_level lvl = PS_LOG_INFO;
  ps_log_format fmt = PS_LOG_TEXT;
  ps_log_level_parse(cfg.log_level, &lvl);
  ps_log_format_parse(cfg.log_format, &fmt);
  ps_log_setup(lvl, fmt);
  ps_failpoint_init();
  pthread_setname_np(pthread_self(), "ps-main");

  /* Every thread started from here on inherits this mask; only sigwait below sees the signals. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  /* The topology file, plus the queue that keeps the events dispatch could not route. */
  ps_topology_config tc;
  if (ps__load_topology(&cfg, &tc, err, sizeof err) != 0) {
    fprintf(stderr, "penstock: %s\n", err);
    return ps__start_failed(PS_EXIT_USAGE, &cfg, &tc, NULL, NULL);
  }
  ps_topology topo = ps_topology_config_topology(&tc);
  ps_queue_decl *queues = calloc(topo.nqueues + 1, sizeof *queues);
  ps_binding_decl *bindings = calloc(topo.nbindings + 1, sizeof *bindings);
  if (!queues || !bindings)
    abort();
  memcpy(queues, topo.queues, topo.nqueues * sizeof *queues);
  memcpy(bindings, topo.bindings, topo.nbindings * sizeof *bindings);
  queues[topo.nqueues++] = (ps_queue_decl){PS_SKIPPED_QUEUE, 1, NULL, 0};
  bindings[topo.nbindings++] = (ps_binding_decl){PS_SKIPPED_QUEUE, tc.dead_letter_exchange, PS_SKIPPED_QUEUE};
  topo.queues = queues;
  topo.bindings = bindings;

  /* Embedded: an in-process broker and an SQLite store under DATA_DIR; external: RabbitMQ and ClickHouse. */
  ps_broker *broker = NULL;
  char store[4096] = "";
  int brc;
  if (cfg.embedded) {
    ps_broker_mem_options bo = {cfg.data_dir, 0, 0};
    brc = ps_broker_mem_create(&topo, &bo, &broker, err, sizeof err);
    snprintf(store, sizeof store, "%s/penstock.db", cfg.data_dir);
  } else {
    brc = ps_broker_amqp_create(cfg.rabbitmq_url, &topo, &broker, err, sizeof err);
  }
  if (brc != 0) {
    fprintf(stderr, "penstock: %s%s\n", brc == PS_ECONFIG ? "configuration error: " : "", err);
    return ps__start_failed(brc == PS_ECONFIG ? PS_EXIT_USAGE : PS_EXIT_FAIL, &cfg, &tc, queues, bindings);
  }
  ps_info("penstock starting", "version", PENSTOCK_VERSION, "env", cfg.env, "mode",
          cfg.embedded ? "embedded" : "external", "broker", broker->display, "store",
          cfg.embedded ? store : cfg.clickhouse_url, "topology", tc.source, "ack_mode",
          cfg.ack_confirmed ? "confirmed" : "enqueued");
  /* Declare the topology before serving, so that its queues exist when health says SERVING (every
     connection declares it again; this one only goes first). Not fatal: the broker may come later. */
  ps_broker_conn *first = NULL;
  if (ps_broker_connect(broker, &first) == 0)
    ps_broker_close(first);
  else
    ps_warn("broker: cannot declare the topology yet; every connection retries", "broker", broker->display);

  /* The spool: where messages wait while the broker cannot take them (SPOOL_MAX_BYTES=0: none). */
  ps_spool *spool = NULL;
  char spool_dir[4096];
  snprintf(spool_dir, sizeof spool_dir, "%s", *cfg.spool_dir ? cfg.spool_dir : cfg.data_dir);
  if (!*cfg.spool_dir)
    strncat(spool_dir, "/spool", sizeof spool_dir - strlen(spool_dir) - 1);
  if (cfg.spool_max_bytes > 0) {
    if (!*cfg.spool_dir && mkdir(cfg.data_dir, 0700) != 0 && errno != EEXIST)
      ps_warn("cannot create DATA_DIR", "path", cfg.data_dir, "error", strerror(errno)); /* the spool says why */
    ps_spool_options so = {spool_dir, (uint64_t)cfg.spool_max_bytes, 0,
                           strcasecmp(cfg.spool_fsync, "never") == 0 ? PS_SPOOL_FSYNC_NEVER : PS_SPOOL_FSYNC_ALWAYS};
    if (ps_spool_open(&so, &spool, err, sizeof err) != 0) {
      fprintf(stderr, "penstock: %s\n", err);
      ps_broker_destroy(broker);
      return ps__start_failed(PS_EXIT_FAIL, &cfg, &tc, queues, bindings);
    }
  }

  /* CONSUMERS_PER_QUEUE=0 makes an ingest-only instance: the topology is declared, nothing consumed. */
  ps_fleet_options fo = {&tc, broker, cfg.consumers_per_queue == 0, cfg.embedded ? store : NULL};
  ps_fleet *fleet = NULL;
  if (ps_fleet_start(&fo, &fleet, err, sizeof err) != 0) {
    fprintf(stderr, "penstock: configuration error: %s\n", err);
    ps_spool_close(spool);
    ps_broker_destroy(broker);
    return ps__start_failed(PS_EXIT_USAGE, &cfg, &tc, queues, bindings);
  }

  ps_queue *q = ps_queue_create((size_t)cfg.queue_capacity);
  ps_router_options ro = {.workers = cfg.worker_pool_size,
                          .exchange = tc.event_exchange,
                          .dead_letter_exchange = tc.dead_letter_exchange,
                          .skipped_key = PS_SKIPPED_QUEUE,
                          .window = cfg.publish_window,
                          .window_bytes = (size_t)cfg.publish_window_bytes,
                          .confirm_timeout_ms = cfg.publish_confirm_timeout_ms,
                          .spool = spool,
                          .merge_batches = cfg.publish_merge_batches,
                          .format = cfg.publish_as,
                          .linger_ms = cfg.publish_linger_ms};
  ps_router *router = ps_router_start(&ro, q, broker);
  ps_replay_options rpo = {.broker = broker,
                           .spool = spool,
                           .window = cfg.publish_window,
                           .window_bytes = (size_t)cfg.publish_window_bytes,
                           .confirm_timeout_ms = cfg.publish_confirm_timeout_ms,
                           .dead_letter_exchange = tc.dead_letter_exchange,
                           .skipped_key = PS_SKIPPED_QUEUE};
  ps_replay *replay = spool ? ps_replay_start(&rpo) : NULL;

  ps_dispatch *dispatch = ps_dispatch_create(q, cfg.dispatch_timeout_ms, cfg.ack_confirmed);
  ps_dispatch_keep_wire(dispatch, cfg.publish_as == PS_PUBLISH_PROTOBUF);
  if (spool) /* a queue full for DISPATCH_TIMEOUT_MS overflows into the spool before refusing calls */
    ps_dispatch_set_overflow(dispatch, ps__overflow, router);
  ps_metrics_gauge_fn("penstock_queue_depth", "", "batches in the queue between dispatch and the workers",
                      ps__g_queue_depth, q);
  ps_metrics_gauge_fn("penstock_queue_capacity", "", "capacity of that queue (EVENT_BUFFERED_CHANNEL_SIZE)",
                      ps__g_queue_capacity, q);
  ps_metrics_gauge_fn("penstock_dispatch_parked_calls", "", "dispatch calls waiting for room in the queue",
                      ps__g_parked, dispatch);
  ps_metrics_counter("penstock_build_info", "version=\"" PENSTOCK_VERSION "\"", "build information", 1)->v = 1;
  const ps_clickhouse_conn_conf *const *chs;
  size_t nch = ps_fleet_clickhouse(fleet, &chs);
  ps_probe_clickhouse pch[PS_PROBE_MAX_CLICKHOUSE];
  int interval_ms = 1000;
  for (size_t i = 0; i < nch && i < PS_PROBE_MAX_CLICKHOUSE; i++) {
    pch[i] = (ps_probe_clickhouse){chs[i]->name, chs[i]->url, chs[i]->user, chs[i]->password};
    if (chs[i]->health_check_ms > 0 && chs[i]->health_check_ms < interval_ms)
      interval_ms = chs[i]->health_check_ms;
  }
  ps_probe_options po = {broker, cfg.embedded ? "broker" : "rabbitmq", pch, nch, q, interval_ms};
  ps_probe *probe = ps_probe_start(&po);

  ps_grpc_server_options go = {"0.0.0.0", cfg.port, cfg.grpc_max_recv_bytes, cfg.grpc_threads,
                               cfg.access_log_per_sec};
  ps_grpc_server *server = NULL;
  ps_monitor *monitor = NULL;
  int exit_code = PS_EXIT_OK;
  ps_monitor_options mo = {cfg.monitor_port, &cfg, probe, q, dispatch, PENSTOCK_VERSION};
  if (cfg.monitor_port && ps_monitor_start(&mo, &monitor) != 0) {
    ps_error("cannot start the monitoring HTTP server", "port", getenv("GIN_PORT") ? getenv("GIN_PORT") : "8080");
    exit_code = PS_EXIT_FAIL;
  } else if (ps_grpc_server_start(&go, dispatch, &server) != 0) {
    ps_error("cannot start the gRPC server", "port", getenv("PORT") ? getenv("PORT") : "50051");
    exit_code = PS_EXIT_FAIL;
  } else {
    ps_grpc_server_set_serving(server, 1);
    char port[16], mport[16], workers[16], consumers_n[16];
    snprintf(port, sizeof port, "%d", ps_grpc_server_port(server));
    snprintf(mport, sizeof mport, "%d", cfg.monitor_port);
    snprintf(workers, sizeof workers, "%d", cfg.worker_pool_size);
    snprintf(consumers_n, sizeof consumers_n, "%zu", ps_fleet_groups(fleet));
    ps_info("penstock serving", "grpc_port", port, "monitor_port", mport, "workers", workers,
            "consumer_groups", consumers_n);
    sd_notify(0, "READY=1");

    int sig = ps__wait_for_signal(&sigs);
    sd_notify(0, "STOPPING=1");
    ps_info("shutting down", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  }

  ps_probe_set_draining(probe);
  int64_t deadline = ps_now_ns() + (int64_t)cfg.shutdown_timeout_ms * 1000000;
  ps_router_set_deadline(router, deadline); /* calls awaiting confirms are answered by then */
  if (server && ps_grpc_server_shutdown(server, deadline) != 0)
    exit_code = PS_EXIT_FAIL;
  ps_queue_close(q);
  if (ps_router_stop(router, deadline) != 0)
    exit_code = PS_EXIT_FAIL;
  ps_replay_stop(replay); /* what it has not published stays in the spool */
  ps_fleet_stop(fleet, deadline);
  /* The monitor serves until here, reporting the drain; the gauges it reads die after it. */
  ps_monitor_stop(monitor);
  ps_probe_stop(probe);
  ps_dispatch_destroy(dispatch);
  ps_queue_destroy(q);
  ps_spool_close(spool);
  ps_broker_destroy(broker);
  ps_topology_config_free(&tc);
  free(queues);
  free(bindings);

  char acc[32], pub[32];
  snprintf(acc, sizeof acc, "%lld", (long long)PS_METRIC_GET(events_accepted_total));
  snprintf(pub, sizeof pub, "%lld", (long long)PS_METRIC_GET(events_published_total));
  ps_info("penstock stopped", "events_accepted", acc, "events_published", pub);
  ps_config_free(&cfg);
  return exit_code;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    ps__usage(stderr);
    return PS_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
    ps__usage(stdout);
    return PS_EXIT_OK;
  }
  int help = argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0);
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    if (help) {
      printf("usage: penstock version\n\nPrints the version.\n");
      return PS_EXIT_OK;
    }
    printf("penstock %s\n", PENSTOCK_VERSION);
    return PS_EXIT_OK;
  }
  if (strcmp(cmd, "serve") == 0) {
    if (argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
      printf("usage: penstock serve\n\nRuns the gateway. Settings come from the environment and the\n"
             "dotenv file for ENV; `penstock config --markdown` lists them. With neither RABBITMQ_URL\n"
             "nor CLICKHOUSE_URL set (or PENSTOCK_MODE=embedded) it runs embedded: an in-process broker\n"
             "and an SQLite store under DATA_DIR. SIGTERM or SIGINT drains and stops it.\n"
             "Exit codes: 0 stopped cleanly, 1 runtime failure, 2 configuration error.\n");
      return PS_EXIT_OK;
    }
    if (argc > 2) {
      fprintf(stderr, "penstock serve: unexpected argument '%s'\n", argv[2]);
      return PS_EXIT_USAGE;
    }
    return ps__serve();
  }
  if (strcmp(cmd, "send") == 0)
    return ps_send_main(argc - 1, argv + 1);
  if (strcmp(cmd, "bench") == 0)
    return ps_bench_main(argc - 1, argv + 1);
  if (strcmp(cmd, "check-config") == 0)
    return ps_topology_config_check_main(argc - 1, argv + 1);
  if (strcmp(cmd, "config") == 0) {
    if (help) {
      printf("usage: penstock config [--markdown]\n\nPrints the effective configuration (from the environment and "
             "the dotenv file for ENV;\nsecrets redacted), or with --markdown the reference table of every "
             "setting.\nExit codes: 0, or 2 if the configuration is invalid.\n");
      return PS_EXIT_OK;
    }
    if (argc > 2 && strcmp(argv[2], "--markdown") == 0) {
      ps_config_print_reference(stdout);
      return PS_EXIT_OK;
    }
    ps_config cfg;
    char err[512];
    int rc = ps_config_load(&cfg, NULL, err, sizeof err);
    if (rc != 0)
      fprintf(stderr, "penstock: configuration error: %s\n", err);
    else
      ps_config_print(&cfg, stdout);
    ps_config_free(&cfg);
    return rc ? PS_EXIT_USAGE : PS_EXIT_OK;
  }
  fprintf(stderr, "penstock: unknown command '%s'\n", cmd);
  ps__usage(stderr);
  return PS_EXIT_USAGE;
}
