/*
 * idle-floor: the memory that penstock's libraries take before penstock does
 * anything of its own.
 *
 * Linked with exactly the libraries penstock is linked with (`make
 * bench-idle-floor`), so the dynamic loader maps, relocates and runs the
 * constructors of the same set. It then does the start-up work every program
 * built on them must do and penstock does too: libcurl's global init (the TLS
 * library's own init with it) and grpc_init(), and it listens for gRPC on a
 * port with one completion queue, polled by its main thread, no method
 * registered. It prints "ready port=N" and runs until SIGTERM or SIGINT.
 *
 * bench/compare reads its VmRSS after the same settling time as penstock's
 * idle RSS: the difference between the two is what penstock itself holds
 * (its threads, connections, buffers); this program's figure is what no
 * change inside penstock can take away while it uses these libraries.
 *
 *   build/bench/idle-floor [ADDR]      ADDR: default 127.0.0.1:0 (any free port)
 */
#include <curl/curl.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stopping;

static void on_signal(int sig) {
  (void)sig;
  stopping = 1;
}

int main(int argc, char **argv) {
  const char *addr = argc > 1 ? argv[1] : "127.0.0.1:0";

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "idle-floor: curl_global_init failed\n");
    return 1;
  }
  grpc_init();
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server *server = grpc_server_create(NULL, NULL);
  grpc_server_register_completion_queue(server, cq, NULL);
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  int port = grpc_server_add_http2_port(server, addr, creds);
  grpc_server_credentials_release(creds);
  int rc = 0;
  if (port == 0) {
    fprintf(stderr, "idle-floor: cannot listen on %s\n", addr);
    rc = 1; /* the server never started: it is destroyed as it is */
  } else {
    grpc_server_start(server);
    printf("ready port=%d\n", port);
    fflush(stdout);

    /* This thread polls the completion queue, as penstock's do: gRPC's I/O runs on the threads that poll. */
    while (!stopping)
      grpc_completion_queue_next(
          cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)), NULL);

    grpc_server_shutdown_and_notify(server, cq, NULL);
    for (;;) {
      grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
      if (ev.type == GRPC_OP_COMPLETE) /* the shutdown's tag: no call is ever requested */
        break;
    }
  }
  grpc_server_destroy(server);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  grpc_shutdown();
  curl_global_cleanup();
  return rc;
}
