/*
 * Unit tests of ps_dispatch without a network: every bad input gets its
 * status, accepted batches reach the queue, a full queue parks calls and
 * answers UNAVAILABLE after DISPATCH_TIMEOUT_MS (or DEADLINE_EXCEEDED at the
 * call's own earlier deadline), and events without a type are counted.
 */
#include <grpc/status.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_events.h"
#include "core/ps_error.h"
#include "ingest/ps_dispatch.h"
#include "ps_test.h"

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  int status;
  char message[256];
  int64_t at_ns;
} result;

static void on_done(void *ctx, int status, const char *message, uint32_t events) {
  (void)events;
  result *r = ctx;
  pthread_mutex_lock(&r->mu);
  r->done = 1;
  r->status = status;
  snprintf(r->message, sizeof r->message, "%s", message ? message : "");
  r->at_ns = ps_now_ns();
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static void result_init(result *r) {
  memset(r, 0, sizeof *r);
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  r->status = -1;
}

static void result_wait(result *r) {
  pthread_mutex_lock(&r->mu);
  while (!r->done)
    pthread_cond_wait(&r->cv, &r->mu);
  pthread_mutex_unlock(&r->mu);
}

/* A batch of n click events (every third one without a payload if holes). */
static uint8_t *make_batch(int n, int with_header, int holes, const char *session, size_t *len) {
  Event__Events evs = EVENT__EVENTS__INIT;
  Event__Header h = EVENT__HEADER__INIT;
  h.sessionid = (char *)session;
  h.userid = 42;
  if (with_header)
    evs.header = &h;
  Event__Event **list = calloc((size_t)n, sizeof *list);
  Event__Event *ev = calloc((size_t)n, sizeof *ev);
  Event__ClickEvent *click = calloc((size_t)n, sizeof *click);
  for (int i = 0; i < n; i++) {
    event__event__init(&ev[i]);
    event__click_event__init(&click[i]);
    ev[i].id = "e";
    if (!(holes && i % 3 == 0)) {
      ev[i].event_of_case = EVENT__EVENT__EVENT_OF_CLICK_EVENT;
      ev[i].clickevent = &click[i];
    }
    list[i] = &ev[i];
  }
  evs.n_events = (size_t)n;
  evs.events = list;
  *len = event__events__get_packed_size(&evs);
  uint8_t *buf = malloc(*len + 1);
  event__events__pack(&evs, buf);
  free(list);
  free(ev);
  free(click);
  return buf;
}

static void drain(ps_queue *q) {
  void *items[16];
  int n;
  while ((n = ps_queue_pop(q, items, 16, 0)) > 0)
    for (int i = 0; i < n; i++)
      ps_batch_destroy(items[i]);
}

static int submit(ps_dispatch *d, const uint8_t *data, size_t len, int64_t deadline, result *r) {
  result_init(r);
  ps_dispatch_submit(d, data, len, deadline, on_done, r);
  result_wait(r);
  return r->status;
}

PS_TEST(bad_inputs_are_invalid_argument) {
  ps_queue *q = ps_queue_create(8);
  ps_dispatch *d = ps_dispatch_create(q, 100, 0);
  result r;
  const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  PS_CHECK_INT_EQ(submit(d, garbage, sizeof garbage, INT64_MAX, &r), GRPC_STATUS_INVALID_ARGUMENT);
  PS_CHECK(strlen(r.message) > 0);

  size_t len;
  uint8_t *good = make_batch(5, 1, 0, "s", &len);
  PS_CHECK_INT_EQ(submit(d, good, len - 3, INT64_MAX, &r), GRPC_STATUS_INVALID_ARGUMENT); /* truncated */
  free(good);

  uint8_t *nohdr = make_batch(5, 0, 0, "s", &len);
  PS_CHECK_INT_EQ(submit(d, nohdr, len, INT64_MAX, &r), GRPC_STATUS_INVALID_ARGUMENT);
  PS_CHECK(strstr(r.message, "header") != NULL);
  free(nohdr);

  uint8_t *bad_utf8 = make_batch(1, 1, 0, "\xff\xfe", &len);
  PS_CHECK_INT_EQ(submit(d, bad_utf8, len, INT64_MAX, &r), GRPC_STATUS_INVALID_ARGUMENT);
  PS_CHECK_MSG(strstr(r.message, "UTF-8") != NULL, "message: %s", r.message);
  free(bad_utf8);

  PS_CHECK_INT_EQ(ps_queue_len(q), 0); /* nothing of them was queued */
  ps_dispatch_destroy(d);
  ps_queue_destroy(q);
}

PS_TEST(empty_events_succeed_without_queueing) {
  ps_queue *q = ps_queue_create(8);
  ps_dispatch *d = ps_dispatch_create(q, 100, 0);
  result r;
  size_t len;
  uint8_t *empty = make_batch(0, 1, 0, "s", &len);
  PS_CHECK_INT_EQ(submit(d, empty, len, INT64_MAX, &r), GRPC_STATUS_OK);
  PS_CHECK_INT_EQ(ps_queue_len(q), 0);
  free(empty);
  ps_dispatch_destroy(d);
  ps_queue_destroy(q);
}

PS_TEST(accepted_batch_is_queued_and_skips_are_counted) {
  ps_queue *q = ps_queue_create(8);
  ps_dispatch *d = ps_dispatch_create(q, 100, 0);
  result r;
  size_t len;
  uint8_t *b = make_batch(9, 1, 1, "s", &len);
  PS_CHECK_INT_EQ(submit(d, b, len, INT64_MAX, &r), GRPC_STATUS_OK);
  PS_CHECK_MSG(strstr(r.message, "3 skipped") != NULL, "message: %s", r.message);
  free(b);
  void *item;
  PS_CHECK_INT_EQ(ps_queue_pop(q, &item, 1, 0), 1);
  ps_batch *batch = item;
  PS_CHECK_INT_EQ(batch->n_events, 6);
  PS_CHECK_INT_EQ(batch->n_skipped, 3);
  PS_CHECK_INT_EQ(batch->msg->n_events, 9);
  PS_CHECK_STR_EQ(batch->msg->header->sessionid, "s");
  ps_batch_destroy(batch);
  ps_dispatch_destroy(d);
  ps_queue_destroy(q);
}

PS_TEST(full_queue_answers_unavailable_after_timeout) {
  ps_queue *q = ps_queue_create(1);
  ps_dispatch *d = ps_dispatch_create(q, 100, 0);
  result r;
  size_t len;
  uint8_t *b = make_batch(2, 1, 0, "s", &len);
  PS_CHECK_INT_EQ(submit(d, b, len, INT64_MAX, &r), GRPC_STATUS_OK);
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(submit(d, b, len, INT64_MAX, &r), GRPC_STATUS_UNAVAILABLE);
  PS_CHECK(strstr(r.message, "queue full") != NULL);
  PS_CHECK_MSG(r.at_ns - t0 >= 100 * 1000000LL, "answered after %lld ms", (long long)(r.at_ns - t0) / 1000000);
  /* A call whose own deadline comes first is answered at it. */
  t0 = ps_now_ns();
  PS_CHECK_INT_EQ(submit(d, b, len, t0 + 30 * 1000000LL, &r), GRPC_STATUS_DEADLINE_EXCEEDED);
  PS_CHECK_MSG(r.at_ns - t0 < 100 * 1000000LL, "answered after %lld ms", (long long)(r.at_ns - t0) / 1000000);
  PS_CHECK_INT_EQ(ps_queue_len(q), 1); /* neither rejected batch was queued */
  drain(q);
  free(b);
  ps_dispatch_destroy(d);
  ps_queue_destroy(q);
}

typedef struct {
  ps_queue *q;
} popper_arg;

static void *pop_later(void *arg) {
  popper_arg *a = arg;
  struct timespec ts = {0, 30 * 1000000};
  nanosleep(&ts, NULL);
  void *item;
  if (ps_queue_pop(a->q, &item, 1, -1) == 1)
    ps_batch_destroy(item);
  return NULL;
}

PS_TEST(parked_call_is_accepted_when_room_frees) {
  ps_queue *q = ps_queue_create(1);
  ps_dispatch *d = ps_dispatch_create(q, 2000, 0);
  result r;
  size_t len;
  uint8_t *b = make_batch(2, 1, 0, "s", &len);
  PS_CHECK_INT_EQ(submit(d, b, len, INT64_MAX, &r), GRPC_STATUS_OK);
  popper_arg a = {q};
  pthread_t t;
  pthread_create(&t, NULL, pop_later, &a);
  PS_CHECK_INT_EQ(submit(d, b, len, INT64_MAX, &r), GRPC_STATUS_OK);
  pthread_join(t, NULL);
  PS_CHECK_INT_EQ(ps_queue_len(q), 1);
  drain(q);
  free(b);
  ps_dispatch_destroy(d);
  ps_queue_destroy(q);
}

/* ps_dispatch_keep_wire: the queued batch holds a copy of the request (the caller's buffer is gone by then);
   without it, none. */
PS_TEST(a_batch_keeps_its_request_only_when_asked) {
  for (int keep = 0; keep <= 1; keep++) {
    ps_queue *q = ps_queue_create(8);
    ps_dispatch *d = ps_dispatch_create(q, 100, 0);
    ps_dispatch_keep_wire(d, keep);
    result r;
    size_t len;
    uint8_t *req = make_batch(4, 1, 0, "s", &len);
    PS_CHECK_INT_EQ(submit(d, req, len, INT64_MAX, &r), GRPC_STATUS_OK);
    uint8_t *copy = malloc(len);
    memcpy(copy, req, len);
    memset(req, 0, len);
    free(req);
    void *item = NULL;
    PS_CHECK_INT_EQ(ps_queue_pop(q, &item, 1, 0), 1);
    ps_batch *b = item;
    if (keep) {
      PS_CHECK(b->wire != NULL);
      PS_CHECK_INT_EQ(b->wire_len, len);
      PS_CHECK(b->wire && memcmp(b->wire, copy, len) == 0);
    } else {
      PS_CHECK(b->wire == NULL);
      PS_CHECK_INT_EQ(b->wire_len, 0);
    }
    free(copy);
    ps_batch_destroy(b);
    ps_dispatch_destroy(d);
    ps_queue_destroy(q);
  }
}

PS_TEST_MAIN(PS_CASE(bad_inputs_are_invalid_argument), PS_CASE(empty_events_succeed_without_queueing),
             PS_CASE(accepted_batch_is_queued_and_skips_are_counted),
             PS_CASE(full_queue_answers_unavailable_after_timeout),
             PS_CASE(parked_call_is_accepted_when_room_frees), PS_CASE(a_batch_keeps_its_request_only_when_asked))
