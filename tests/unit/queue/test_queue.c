/* Unit tests of ps_queue: ordering, timed push, close, and many producers and consumers. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/ps_error.h"
#include "ps_test.h"
#include "queue/ps_queue.h"

PS_TEST(fifo_and_batch_pop) {
  ps_queue *q = ps_queue_create(4);
  for (intptr_t i = 1; i <= 4; i++)
    PS_CHECK_INT_EQ(ps_queue_push(q, (void *)i, 0), 0);
  PS_CHECK_INT_EQ(ps_queue_len(q), 4);
  void *items[3];
  PS_CHECK_INT_EQ(ps_queue_pop(q, items, 3, -1), 3);
  PS_CHECK(items[0] == (void *)1 && items[1] == (void *)2 && items[2] == (void *)3);
  PS_CHECK_INT_EQ(ps_queue_push(q, (void *)5, 0), 0);
  PS_CHECK_INT_EQ(ps_queue_pop(q, items, 3, -1), 2);
  PS_CHECK(items[0] == (void *)4 && items[1] == (void *)5);
  ps_queue_destroy(q);
}

PS_TEST(push_to_full_queue_times_out_after_deadline) {
  ps_queue *q = ps_queue_create(1);
  PS_CHECK_INT_EQ(ps_queue_push(q, (void *)1, 0), 0);
  PS_CHECK_INT_EQ(ps_queue_push(q, (void *)2, 0), PS_ETIMEDOUT);
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(ps_queue_push(q, (void *)2, t0 + 50 * 1000000LL), PS_ETIMEDOUT);
  int64_t waited = ps_now_ns() - t0;
  PS_CHECK_MSG(waited >= 50 * 1000000LL, "returned after %lld ns, before its deadline", (long long)waited);
  PS_CHECK_INT_EQ(ps_queue_len(q), 1);
  ps_queue_destroy(q);
}

PS_TEST(pop_times_out_on_empty_queue) {
  ps_queue *q = ps_queue_create(2);
  void *item;
  PS_CHECK_INT_EQ(ps_queue_pop(q, &item, 1, ps_now_ns() + 10 * 1000000LL), PS_ETIMEDOUT);
  PS_CHECK_INT_EQ(ps_queue_pop(q, &item, 1, 0), PS_ETIMEDOUT);
  ps_queue_destroy(q);
}

typedef struct {
  ps_queue *q;
  int rc;
} blocked_arg;

static void *push_blocked(void *arg) {
  blocked_arg *a = arg;
  a->rc = ps_queue_push(a->q, (void *)9, ps_now_ns() + 10LL * 1000000000);
  return NULL;
}

PS_TEST(push_waits_for_room_then_succeeds) {
  ps_queue *q = ps_queue_create(1);
  PS_CHECK_INT_EQ(ps_queue_push(q, (void *)1, 0), 0);
  blocked_arg a = {q, -1};
  pthread_t t;
  pthread_create(&t, NULL, push_blocked, &a);
  void *item;
  PS_CHECK_INT_EQ(ps_queue_pop(q, &item, 1, -1), 1);
  pthread_join(t, NULL);
  PS_CHECK_INT_EQ(a.rc, 0);
  PS_CHECK_INT_EQ(ps_queue_pop(q, &item, 1, -1), 1);
  PS_CHECK(item == (void *)9);
  ps_queue_destroy(q);
}

PS_TEST(close_wakes_blocked_producer_and_drains) {
  ps_queue *q = ps_queue_create(1);
  PS_CHECK_INT_EQ(ps_queue_push(q, (void *)1, 0), 0);
  blocked_arg a = {q, 0};
  pthread_t t;
  pthread_create(&t, NULL, push_blocked, &a);
  struct timespec ts = {0, 20 * 1000000};
  nanosleep(&ts, NULL);
  ps_queue_close(q);
  pthread_join(t, NULL);
  PS_CHECK_INT_EQ(a.rc, PS_ECLOSED);
  PS_CHECK_INT_EQ(ps_queue_push(q, (void *)2, 0), PS_ECLOSED);
  void *item;
  PS_CHECK_INT_EQ(ps_queue_pop(q, &item, 1, -1), 1); /* what was in it is still delivered */
  PS_CHECK(item == (void *)1);
  PS_CHECK_INT_EQ(ps_queue_pop(q, &item, 1, -1), PS_ECLOSED);
  ps_queue_destroy(q);
}

#define PRODUCERS 4
#define CONSUMERS 3
#define PER_PRODUCER 20000

typedef struct {
  ps_queue *q;
  int id;
  long long sum;
  long long count;
} worker_arg;

static void *producer(void *arg) {
  worker_arg *a = arg;
  for (long long i = 1; i <= PER_PRODUCER; i++) {
    intptr_t v = (intptr_t)(a->id * 1000000 + i);
    while (ps_queue_push(a->q, (void *)v, ps_now_ns() + 1000000000LL) != 0)
      ;
  }
  return NULL;
}

static void *consumer(void *arg) {
  worker_arg *a = arg;
  void *items[8];
  for (;;) {
    int n = ps_queue_pop(a->q, items, 8, -1);
    if (n == PS_ECLOSED)
      break;
    for (int i = 0; i < n; i++) {
      a->sum += (intptr_t)items[i];
      a->count++;
    }
  }
  return NULL;
}

PS_TEST(many_producers_and_consumers_lose_and_duplicate_nothing) {
  ps_queue *q = ps_queue_create(16);
  pthread_t pt[PRODUCERS], ct[CONSUMERS];
  worker_arg pa[PRODUCERS], ca[CONSUMERS];
  for (int i = 0; i < CONSUMERS; i++) {
    ca[i] = (worker_arg){q, i, 0, 0};
    pthread_create(&ct[i], NULL, consumer, &ca[i]);
  }
  for (int i = 0; i < PRODUCERS; i++) {
    pa[i] = (worker_arg){q, i + 1, 0, 0};
    pthread_create(&pt[i], NULL, producer, &pa[i]);
  }
  for (int i = 0; i < PRODUCERS; i++)
    pthread_join(pt[i], NULL);
  ps_queue_close(q);
  long long sum = 0, count = 0, expect = 0;
  for (int i = 0; i < CONSUMERS; i++) {
    pthread_join(ct[i], NULL);
    sum += ca[i].sum;
    count += ca[i].count;
  }
  for (int p = 1; p <= PRODUCERS; p++)
    expect += (long long)p * 1000000 * PER_PRODUCER + (long long)PER_PRODUCER * (PER_PRODUCER + 1) / 2;
  PS_CHECK_INT_EQ(count, PRODUCERS * PER_PRODUCER);
  PS_CHECK_INT_EQ(sum, expect);
  ps_queue_destroy(q);
}

PS_TEST_MAIN(PS_CASE(fifo_and_batch_pop), PS_CASE(push_to_full_queue_times_out_after_deadline),
             PS_CASE(pop_times_out_on_empty_queue), PS_CASE(push_waits_for_room_then_succeeds),
             PS_CASE(close_wakes_blocked_producer_and_drains),
             PS_CASE(many_producers_and_consumers_lose_and_duplicate_nothing))
