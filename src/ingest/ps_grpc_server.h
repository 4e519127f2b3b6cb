/*
 * ps_grpc_server: the gRPC endpoint, on the gRPC C core.
 *
 * Serves /event.EventService/dispatch (handed to ps_dispatch) and
 * /grpc.health.v1.Health/Check (SERVING, or NOT_SERVING while starting up or
 * draining); every other method gets UNIMPLEMENTED. Requests larger than
 * max_recv_bytes are refused by the core with RESOURCE_EXHAUSTED.
 */
#ifndef PS_GRPC_SERVER_H
#define PS_GRPC_SERVER_H

#include <stdint.h>

#include "ingest/ps_dispatch.h"

typedef struct ps_grpc_server ps_grpc_server;

typedef struct ps_grpc_server_options {
  const char *host;          /* e.g. "0.0.0.0" */
  int port;                  /* 0: pick a free port */
  long long max_recv_bytes;
  int threads;               /* completion-queue threads */
  int access_log_per_sec;    /* access-log lines per second at most; 0: none */
} ps_grpc_server_options;

/**
 * Binds, starts the threads and begins serving (health: NOT_SERVING until
 * ps_grpc_server_set_serving). dispatch is borrowed until shutdown returns.
 * Returns 0 and *out, or PS_EIO if the port cannot be bound.
 */
int ps_grpc_server_start(const ps_grpc_server_options *opt, ps_dispatch *dispatch,
                         ps_grpc_server **out);

/** Sets what health checks answer. */
void ps_grpc_server_set_serving(ps_grpc_server *s, int serving);

/** The bound port. */
int ps_grpc_server_port(const ps_grpc_server *s);

/**
 * Stops accepting calls, lets calls in flight finish until deadline_ns
 * (CLOCK_MONOTONIC), cancels what is left, and frees the server.
 * Returns 0 if every call finished in time, PS_ETIMEDOUT if some were cancelled.
 */
int ps_grpc_server_shutdown(ps_grpc_server *s, int64_t deadline_ns);

/** Calls accepted by the transport and not yet answered. */
long ps_grpc_server_live_calls(ps_grpc_server *s);

#endif
