/*
 * fake_http: a real HTTP server (libmicrohttpd) inside a test process.
 *
 * It listens on 127.0.0.1, records every request (method, URL, headers, body,
 * arrival time) and answers each one as the test's script function says:
 * status, body, an optional Retry-After, and a delay before answering (held on
 * the connection's own thread, so concurrent requests really overlap; the
 * server counts how many are being answered at once).
 */
#ifndef FAKE_HTTP_H
#define FAKE_HTTP_H

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/ps_buf.h"
#include "queue/ps_queue.h"

#define FH_UNUSED __attribute__((unused))
#define FH_MAX_REQ 512

typedef struct fh_req {
  char method[16];
  char url[1024];
  ps_buf headers; /* "name: value\n" each */
  ps_buf body;
  int64_t at_ns; /* when the whole request had arrived */
} fh_req;

typedef struct fh_reply {
  unsigned status;
  const char *body;
  const char *retry_after; /* NULL: no header */
  int delay_ms;
} fh_reply;

typedef struct fake_http fake_http;
/* Decides the answer to request number n (0-based), called under the server's lock. */
typedef fh_reply (*fh_script)(fake_http *fh, const fh_req *req, size_t n);

struct fake_http {
  struct MHD_Daemon *daemon;
  uint16_t port;
  pthread_mutex_t mu;
  fh_req req[FH_MAX_REQ];
  size_t nreq;
  fh_script script;
  void *ud;
  _Atomic int inflight, max_inflight;
};

typedef struct {
  ps_buf body;
} fh_conn;

static FH_UNUSED enum MHD_Result fh__header(void *cls, enum MHD_ValueKind kind, const char *key,
                                            const char *value) {
  (void)kind;
  ps_buf_printf((ps_buf *)cls, "%s: %s\n", key, value ? value : "");
  return MHD_YES;
}

static FH_UNUSED enum MHD_Result fh__handle(void *cls, struct MHD_Connection *conn, const char *url,
                                            const char *method, const char *version, const char *upload,
                                            size_t *upload_size, void **con_cls) {
  (void)version;
  fake_http *fh = cls;
  fh_conn *c = *con_cls;
  if (!c) {
    c = calloc(1, sizeof *c);
    *con_cls = c;
    return MHD_YES;
  }
  if (*upload_size) {
    ps_buf_append(&c->body, upload, *upload_size);
    *upload_size = 0;
    return MHD_YES;
  }
  pthread_mutex_lock(&fh->mu);
  size_t n = fh->nreq;
  fh_reply rep = {500, "fake_http: too many requests", NULL, 0};
  if (n < FH_MAX_REQ) {
    fh_req *r = &fh->req[fh->nreq++];
    snprintf(r->method, sizeof r->method, "%s", method);
    const char *q = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "query");
    snprintf(r->url, sizeof r->url, "%s%s%s", url, q ? "?query=" : "", q ? q : "");
    MHD_get_connection_values(conn, MHD_HEADER_KIND, fh__header, &r->headers);
    ps_buf_append(&r->body, c->body.data ? c->body.data : "", c->body.len);
    r->at_ns = ps_now_ns();
    rep = fh->script(fh, r, n);
  }
  char *body = strdup(rep.body ? rep.body : ""); /* the script's text may change once unlocked */
  pthread_mutex_unlock(&fh->mu);
  int now = atomic_fetch_add(&fh->inflight, 1) + 1;
  int max = atomic_load(&fh->max_inflight);
  while (now > max && !atomic_compare_exchange_weak(&fh->max_inflight, &max, now))
    ;
  if (rep.delay_ms) {
    struct timespec ts = {rep.delay_ms / 1000, (long)(rep.delay_ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
  }
  atomic_fetch_sub(&fh->inflight, 1);
  struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
  if (rep.retry_after)
    MHD_add_response_header(resp, "Retry-After", rep.retry_after);
  enum MHD_Result ret = MHD_queue_response(conn, rep.status, resp);
  MHD_destroy_response(resp);
  return ret;
}

static FH_UNUSED void fh__completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                                    enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)conn;
  (void)toe;
  fh_conn *c = *con_cls;
  if (c) {
    ps_buf_free(&c->body);
    free(c);
  }
  *con_cls = NULL;
}

/* Starts fh on 127.0.0.1:port (0: any free port). Returns 0 or -1. */
static FH_UNUSED int fh_start(fake_http *fh, uint16_t port, fh_script script, void *ud) {
  memset(fh, 0, sizeof *fh);
  pthread_mutex_init(&fh->mu, NULL);
  fh->script = script;
  fh->ud = ud;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  fh->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, port, NULL,
                                NULL, fh__handle, fh, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                MHD_OPTION_NOTIFY_COMPLETED, fh__completed, NULL,
                                MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
  if (!fh->daemon)
    return -1;
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(fh->daemon, MHD_DAEMON_INFO_BIND_PORT);
  fh->port = info ? info->port : port;
  return 0;
}

static FH_UNUSED void fh_stop(fake_http *fh) {
  if (fh->daemon)
    MHD_stop_daemon(fh->daemon);
  fh->daemon = NULL;
  for (size_t i = 0; i < fh->nreq && i < FH_MAX_REQ; i++) {
    ps_buf_free(&fh->req[i].headers);
    ps_buf_free(&fh->req[i].body);
  }
  fh->nreq = 0;
  pthread_mutex_destroy(&fh->mu);
}

static FH_UNUSED size_t fh_count(fake_http *fh) {
  pthread_mutex_lock(&fh->mu);
  size_t n = fh->nreq;
  pthread_mutex_unlock(&fh->mu);
  return n;
}

/* A loopback port with nothing listening on it (bound, then closed). */
static FH_UNUSED uint16_t fh_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
    if (fd >= 0)
      close(fd);
    return 0;
  }
  close(fd);
  return ntohs(sa.sin_port);
}

#endif
