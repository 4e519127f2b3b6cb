/*
 * Unit tests of ps_client: the latency histogram's quantiles, and the client
 * against penstock's own gRPC server in this process (ps_grpc_server +
 * ps_dispatch + a queue drained by a thread, or left full): the window is
 * never exceeded, every call is reported once with its outcome and latency,
 * a bad request counts as INVALID_ARGUMENT, a call past its deadline as
 * DEADLINE_EXCEEDED, a closed port as UNAVAILABLE, and destroying the client
 * with calls in flight cancels and reports them.
 *
 * Under TSan only the first two run: Debian's libgrpc is not built with TSan,
 * so its own synchronisation is invisible to it and every call it makes shows
 * up as a race; ps_client itself starts no thread (its caller's thread does all
 * its work), so TSan has nothing of ours to check there. ASan runs them all.
 */
#include <grpc/status.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/ps_client.h"
#include "cli/ps_send.h"
#include "codec/ps_events.h"
#include "core/ps_error.h"
#include "ingest/ps_dispatch.h"
#include "ingest/ps_grpc_server.h"
#include "ps_test.h"
#include "queue/ps_queue.h"

PS_TEST(latency_quantiles_within_a_sixteenth) {
  ps_client_latency h;
  memset(&h, 0, sizeof h);
  PS_CHECK_INT_EQ(ps_client_latency_quantile(&h, 0.5), 0);
  for (int64_t us = 1; us <= 1000; us++)
    ps_client_latency_add(&h, us * 1000);
  PS_CHECK_INT_EQ(h.count, 1000);
  PS_CHECK_INT_EQ(h.min_ns, 1000);
  PS_CHECK_INT_EQ(h.max_ns, 1000000);
  PS_CHECK_INT_EQ(ps_client_latency_quantile(&h, 0), 1000);
  PS_CHECK_INT_EQ(ps_client_latency_quantile(&h, 1), 1000000);
  static const double qs[] = {0.01, 0.1, 0.5, 0.9, 0.99, 0.999};
  for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
    double want = qs[i] * 1000 * 1000; /* the q-th of 1..1000 us, in ns */
    double got = (double)ps_client_latency_quantile(&h, qs[i]);
    PS_CHECK_MSG(got >= want * (1 - 1.0 / 16) - 1000 && got <= want * (1 + 1.0 / 16) + 1000,
                 "q %.3f: %.0f ns, want about %.0f", qs[i], got, want);
  }
  /* Small values are exact; negative ones count as 0; a huge one still has a bucket. */
  ps_client_latency s;
  memset(&s, 0, sizeof s);
  ps_client_latency_add(&s, 3);
  ps_client_latency_add(&s, -5);
  ps_client_latency_add(&s, INT64_MAX);
  PS_CHECK_INT_EQ(s.min_ns, 0);
  PS_CHECK_INT_EQ(ps_client_latency_quantile(&s, 0.5), 3);
  double top = (double)ps_client_latency_quantile(&s, 0.99);
  PS_CHECK(top >= (double)INT64_MAX * (1 - 1.0 / 16) && top <= (double)INT64_MAX);
}

PS_TEST(stats_merge_adds_up) {
  ps_client_stats a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  a.calls_started = a.calls_done = 2;
  a.calls[0] = 1;
  a.calls[GRPC_STATUS_UNAVAILABLE] = 1;
  a.events[0] = 50;
  a.first_start_ns = 100;
  a.last_done_ns = 200;
  ps_client_latency_add(&a.latency, 10);
  b.calls_started = b.calls_done = 1;
  b.calls[PS_CLIENT_NOT_SUCCESS] = 1;
  b.first_start_ns = 50;
  b.last_done_ns = 300;
  ps_client_latency_add(&b.latency, 5);
  ps_client_stats_merge(&a, &b);
  PS_CHECK(a.calls_started == 3 && a.calls_done == 3 && a.calls[0] == 1 &&
           a.calls[PS_CLIENT_NOT_SUCCESS] == 1);
  PS_CHECK(a.first_start_ns == 50 && a.last_done_ns == 300);
  PS_CHECK(a.latency.count == 2 && a.latency.min_ns == 5 && a.latency.max_ns == 10);
  PS_CHECK_STR_EQ(ps_client_outcome_name(0), "OK");
  PS_CHECK_STR_EQ(ps_client_outcome_name(GRPC_STATUS_UNAVAILABLE), "UNAVAILABLE");
  PS_CHECK_STR_EQ(ps_client_outcome_name(PS_CLIENT_NOT_SUCCESS), "NOT_SUCCESS");
}

/* ------------------------------------------------------- a real server */

#if defined(__SANITIZE_THREAD__)
#define PS__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PS__TSAN 1
#endif
#endif

#ifndef PS__TSAN

typedef struct {
  ps_queue *q;
  ps_dispatch *d;
  ps_grpc_server *srv;
  pthread_t drainer;
  int draining;
  char target[64];
} server;

static void *drain_main(void *arg) {
  server *s = arg;
  void *items[64];
  for (;;) {
    int n = ps_queue_pop(s->q, items, 64, -1);
    if (n == PS_ECLOSED)
      return NULL;
    for (int i = 0; i < n; i++)
      ps_batch_destroy(items[i]);
  }
}

/* A server whose queue holds capacity batches; drained by a thread if drain, else it fills up. */
static int server_start(server *s, size_t capacity, int drain) {
  memset(s, 0, sizeof *s);
  s->q = ps_queue_create(capacity);
  s->d = ps_dispatch_create(s->q, drain ? 5000 : 1000, 0); /* parked calls: answered UNAVAILABLE after 1 s */
  ps_grpc_server_options o = {"127.0.0.1", 0, 4 << 20, 2, 0};
  if (ps_grpc_server_start(&o, s->d, &s->srv) != 0)
    return -1;
  ps_grpc_server_set_serving(s->srv, 1);
  snprintf(s->target, sizeof s->target, "127.0.0.1:%d", ps_grpc_server_port(s->srv));
  s->draining = drain;
  if (drain && pthread_create(&s->drainer, NULL, drain_main, s) != 0)
    abort();
  return 0;
}

static void server_stop(server *s) {
  ps_grpc_server_shutdown(s->srv, ps_now_ns() + 10000000000LL);
  ps_queue_close(s->q);
  if (s->draining) {
    pthread_join(s->drainer, NULL);
  } else {
    void *items[64];
    int n;
    while ((n = ps_queue_pop(s->q, items, 64, 0)) > 0)
      for (int i = 0; i < n; i++)
        ps_batch_destroy(items[i]);
  }
  ps_dispatch_destroy(s->d);
  ps_queue_destroy(s->q);
}

typedef struct {
  ps_client *c;
  int results;
  int by_outcome[PS_CLIENT_NOUTCOMES];
  uint64_t events_ok;
  int bad_latency;
  int wrong_user;
  char details[256];
  const ps_send_batches *batches;
  unsigned char *seen; /* per batch: reported how many times */
} tally;

static void on_done(void *ctx, const ps_client_result *r) {
  tally *t = ctx;
  t->results++;
  t->by_outcome[r->outcome]++;
  if (r->outcome == 0)
    t->events_ok += r->events;
  if (r->latency_ns <= 0 || r->latency_ns > 60000000000LL)
    t->bad_latency++;
  if (r->outcome != 0 && !t->details[0])
    snprintf(t->details, sizeof t->details, "%s", r->details ? r->details : "");
  if (t->batches) {
    const ps_send_batch *b = r->user;
    if (b < t->batches->v || b >= t->batches->v + t->batches->n || b->events != r->events)
      t->wrong_user++;
    else
      t->seen[b - t->batches->v]++;
  }
  if (r->outcome == 0 && (!r->response_status || strcmp(r->response_status, "SUCCESS") != 0))
    t->wrong_user++;
}

/* Sends every batch through c with the window full as long as there is work; checks the window. */
static int send_all(ps_client *c, const ps_send_batches *b, size_t window) {
  size_t next = 0;
  while (next < b->n || ps_client_in_flight(c)) {
    while (next < b->n && ps_client_room(c) > 0) {
      if (ps_client_start(c, b->v[next].data, b->v[next].len, b->v[next].events, &b->v[next]) != 0)
        return -1;
      next++;
      if (ps_client_in_flight(c) > window)
        return -2;
    }
    if (next < b->n && ps_client_start(c, b->v[next].data, b->v[next].len, 1, NULL) != PS_EFULL)
      return -3; /* the window is full: a start must be refused */
    ps_client_poll(c, 1000000000LL);
  }
  return 0;
}

PS_TEST(every_call_accepted_once_within_the_window) {
  server s;
  PS_CHECK(server_start(&s, 1024, 1) == 0);
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  ps_send_demo(5, "c", 2000, 25, 0, &b);
  tally t;
  memset(&t, 0, sizeof t);
  t.batches = &b;
  t.seen = calloc(b.n, 1);
  ps_client_options o = {s.target, 2, 4, 10000, NULL};
  char err[128];
  ps_client *c = NULL;
  int rc = ps_client_create(&o, on_done, &t, &c, err, sizeof err);
  int sent = rc == 0 ? send_all(c, &b, 4) : -9;
  ps_client_stats st = c ? *ps_client_stats_get(c) : (ps_client_stats){0};
  ps_client_destroy(c);
  server_stop(&s);
  int once = 1;
  for (size_t i = 0; i < b.n; i++)
    once &= t.seen[i] == 1;
  free(t.seen);
  size_t n = b.n;
  ps_send_batches_free(&b);
  PS_CHECK_MSG(sent == 0, "send_all: %d", sent);
  PS_CHECK_MSG(t.by_outcome[0] == (int)n, "%d of %zu accepted; first failure: %s", t.by_outcome[0], n,
               t.details);
  PS_CHECK(once && t.results == (int)n && !t.wrong_user && !t.bad_latency);
  PS_CHECK_INT_EQ(t.events_ok, 2000);
  PS_CHECK(st.calls_started == n && st.calls_done == n && st.calls[0] == n);
  PS_CHECK(st.events_started == 2000 && st.events[0] == 2000 && st.events_done == 2000);
  PS_CHECK(st.latency.count == n && st.latency.min_ns > 0 && st.first_start_ns > 0 &&
           st.last_done_ns > st.first_start_ns);
}

PS_TEST(bad_request_is_invalid_argument) {
  server s;
  PS_CHECK(server_start(&s, 16, 1) == 0);
  tally t;
  memset(&t, 0, sizeof t);
  ps_client_options o = {s.target, 1, 2, 10000, NULL};
  char err[128];
  ps_client *c = NULL;
  PS_CHECK(ps_client_create(&o, on_done, &t, &c, err, sizeof err) == 0);
  static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
  PS_CHECK(ps_client_start(c, junk, sizeof junk, 3, NULL) == 0);
  while (ps_client_in_flight(c))
    ps_client_poll(c, -1);
  ps_client_stats st = *ps_client_stats_get(c);
  ps_client_destroy(c);
  server_stop(&s);
  PS_CHECK_INT_EQ(t.by_outcome[GRPC_STATUS_INVALID_ARGUMENT], 1);
  PS_CHECK(st.calls[GRPC_STATUS_INVALID_ARGUMENT] == 1 && st.events[GRPC_STATUS_INVALID_ARGUMENT] == 3);
  PS_CHECK(t.details[0] != '\0');
}

PS_TEST(deadline_exceeded_when_the_server_holds_the_call) {
  server s;
  PS_CHECK(server_start(&s, 1, 0) == 0); /* room for one batch, nobody takes it */
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  ps_send_demo(6, "d", 6, 2, 0, &b);
  tally t;
  memset(&t, 0, sizeof t);
  ps_client_options o = {s.target, 1, 1, 200, NULL}; /* one at a time: the first fills the queue */
  char err[128];
  ps_client *c = NULL;
  int rc = ps_client_create(&o, on_done, &t, &c, err, sizeof err);
  int64_t t0 = ps_now_ns();
  int sent = rc == 0 ? send_all(c, &b, 1) : -9;
  int64_t took = ps_now_ns() - t0;
  ps_client_destroy(c);
  server_stop(&s);
  ps_send_batches_free(&b);
  PS_CHECK(sent == 0);
  PS_CHECK_INT_EQ(t.by_outcome[0], 1);
  PS_CHECK_MSG(t.by_outcome[GRPC_STATUS_DEADLINE_EXCEEDED] == 2, "%d DEADLINE_EXCEEDED; %s",
               t.by_outcome[GRPC_STATUS_DEADLINE_EXCEEDED], t.details);
  PS_CHECK_MSG(took >= 380000000LL && took < 3000000000LL, "took %lld ns", (long long)took);
}

PS_TEST(closed_port_is_unavailable) {
  /* A port that was free a moment ago and is closed now. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  PS_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
           getsockname(fd, (struct sockaddr *)&a, &al) == 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", ntohs(a.sin_port));
  close(fd);
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  ps_send_demo(8, "u", 30, 10, 0, &b);
  tally t;
  memset(&t, 0, sizeof t);
  ps_client_options o = {target, 1, 8, 5000, NULL};
  char err[128];
  ps_client *c = NULL;
  int rc = ps_client_create(&o, on_done, &t, &c, err, sizeof err);
  int sent = rc == 0 ? send_all(c, &b, 8) : -9;
  ps_client_stats st = c ? *ps_client_stats_get(c) : (ps_client_stats){0};
  ps_client_destroy(c);
  ps_send_batches_free(&b);
  PS_CHECK(sent == 0);
  PS_CHECK_MSG(t.by_outcome[GRPC_STATUS_UNAVAILABLE] == 3, "%d UNAVAILABLE (%s)",
               t.by_outcome[GRPC_STATUS_UNAVAILABLE], t.details);
  PS_CHECK(st.calls[GRPC_STATUS_UNAVAILABLE] == 3 && st.events[GRPC_STATUS_UNAVAILABLE] == 30 &&
           st.calls[0] == 0);
}

PS_TEST(destroy_cancels_calls_in_flight) {
  server s;
  PS_CHECK(server_start(&s, 1, 0) == 0);
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  ps_send_demo(9, "x", 4, 1, 0, &b);
  tally t;
  memset(&t, 0, sizeof t);
  ps_client_options o = {s.target, 1, 4, 0, NULL}; /* no deadline: parked calls wait */
  char err[128];
  ps_client *c = NULL;
  PS_CHECK(ps_client_create(&o, on_done, &t, &c, err, sizeof err) == 0);
  for (size_t i = 0; i < b.n; i++)
    PS_CHECK(ps_client_start(c, b.v[i].data, b.v[i].len, b.v[i].events, &b.v[i]) == 0);
  /* The first lands in the queue and is answered; the others stay parked in dispatch. */
  for (int64_t until = ps_now_ns() + 2000000000LL; t.results < 1 && ps_now_ns() < until;)
    ps_client_poll(c, 100000000);
  size_t left = ps_client_in_flight(c);
  ps_client_destroy(c);
  server_stop(&s);
  ps_send_batches_free(&b);
  PS_CHECK_INT_EQ(t.by_outcome[0], 1);
  PS_CHECK_INT_EQ(left, 3);
  PS_CHECK_INT_EQ(t.results, 4);
  PS_CHECK_INT_EQ(t.by_outcome[GRPC_STATUS_CANCELLED], 3);
}

PS_TEST(bad_options_are_refused) {
  ps_client *c = (ps_client *)1;
  char err[128];
  ps_client_options o = {"", 1, 1, 0, NULL};
  PS_CHECK(ps_client_create(&o, NULL, NULL, &c, err, sizeof err) == PS_EINVAL && c == NULL);
  o = (ps_client_options){"127.0.0.1:1", 100, 1, 0, NULL};
  PS_CHECK(ps_client_create(&o, NULL, NULL, &c, err, sizeof err) == PS_EINVAL && strstr(err, "channels"));
  o = (ps_client_options){"127.0.0.1:1", 1, -1, 0, NULL};
  PS_CHECK(ps_client_create(&o, NULL, NULL, &c, err, sizeof err) == PS_EINVAL);
  o = (ps_client_options){"127.0.0.1:1", 1, 1, -5, NULL};
  PS_CHECK(ps_client_create(&o, NULL, NULL, &c, err, sizeof err) == PS_EINVAL);
  ps_client_destroy(NULL);
}

#endif /* !PS__TSAN */

#ifdef PS__TSAN
PS_TEST_MAIN(PS_CASE(latency_quantiles_within_a_sixteenth), PS_CASE(stats_merge_adds_up))
#else
PS_TEST_MAIN(PS_CASE(latency_quantiles_within_a_sixteenth), PS_CASE(stats_merge_adds_up),
             PS_CASE(every_call_accepted_once_within_the_window), PS_CASE(bad_request_is_invalid_argument),
             PS_CASE(deadline_exceeded_when_the_server_holds_the_call), PS_CASE(closed_port_is_unavailable),
             PS_CASE(destroy_cancels_calls_in_flight), PS_CASE(bad_options_are_refused))
#endif
