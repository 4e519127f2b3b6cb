/*
 * ps_queue: bounded MPMC ring (see ps_queue.h).
 *
 * DESIGN: one mutex guards the ring; `not_full` wakes producers, `not_empty`
 * wakes consumers; both conditions run on CLOCK_MONOTONIC so deadlines are
 * immune to wall-clock steps. Consumers take items in batches to amortise the
 * lock when the queue is busy. Waiter counts avoid needless signals.
 */
#include "queue/ps_queue.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/ps_error.h"

struct ps_queue {
  pthread_mutex_t mu;
  pthread_cond_t not_full, not_empty;
  size_t cap, head, len;
  int closed;
  int waiting_producers, waiting_consumers;
  void **ring;
};

int64_t ps_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec ps__ts(int64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
  return ts;
}

ps_queue *ps_queue_create(size_t capacity) {
  ps_queue *q = calloc(1, sizeof *q);
  if (!q)
    abort();
  q->cap = capacity ? capacity : 1;
  q->ring = calloc(q->cap, sizeof *q->ring);
  if (!q->ring)
    abort();
  pthread_mutex_init(&q->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&q->not_full, &ca);
  pthread_cond_init(&q->not_empty, &ca);
  pthread_condattr_destroy(&ca);
  return q;
}

void ps_queue_destroy(ps_queue *q) {
  if (!q)
    return;
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->not_full);
  pthread_cond_destroy(&q->not_empty);
  free(q->ring);
  free(q);
}

int ps_queue_push(ps_queue *q, void *item, int64_t deadline_ns) {
  pthread_mutex_lock(&q->mu);
  while (!q->closed && q->len == q->cap) {
    if (deadline_ns <= 0 || ps_now_ns() >= deadline_ns) {
      pthread_mutex_unlock(&q->mu);
      return PS_ETIMEDOUT;
    }
    struct timespec ts = ps__ts(deadline_ns);
    q->waiting_producers++;
    pthread_cond_timedwait(&q->not_full, &q->mu, &ts);
    q->waiting_producers--;
  }
  if (q->closed) {
    pthread_mutex_unlock(&q->mu);
    return PS_ECLOSED;
  }
  q->ring[(q->head + q->len) % q->cap] = item;
  q->len++;
  if (q->waiting_consumers)
    pthread_cond_signal(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

int ps_queue_pop(ps_queue *q, void **items, int max, int64_t deadline_ns) {
  pthread_mutex_lock(&q->mu);
  while (q->len == 0) {
    if (q->closed) {
      pthread_mutex_unlock(&q->mu);
      return PS_ECLOSED;
    }
    if (deadline_ns >= 0 && ps_now_ns() >= deadline_ns) {
      pthread_mutex_unlock(&q->mu);
      return PS_ETIMEDOUT;
    }
    q->waiting_consumers++;
    if (deadline_ns < 0) {
      pthread_cond_wait(&q->not_empty, &q->mu);
    } else {
      struct timespec ts = ps__ts(deadline_ns);
      pthread_cond_timedwait(&q->not_empty, &q->mu, &ts);
    }
    q->waiting_consumers--;
  }
  int n = 0;
  while (n < max && q->len > 0) {
    items[n++] = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
  }
  if (q->waiting_producers) {
    if (n > 1)
      pthread_cond_broadcast(&q->not_full);
    else
      pthread_cond_signal(&q->not_full);
  }
  /* Another consumer may take what is left. */
  if (q->len > 0 && q->waiting_consumers)
    pthread_cond_signal(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
  return n;
}

void ps_queue_close(ps_queue *q) {
  pthread_mutex_lock(&q->mu);
  q->closed = 1;
  pthread_cond_broadcast(&q->not_full);
  pthread_cond_broadcast(&q->not_empty);
  pthread_mutex_unlock(&q->mu);
}

size_t ps_queue_len(ps_queue *q) {
  pthread_mutex_lock(&q->mu);
  size_t n = q->len;
  pthread_mutex_unlock(&q->mu);
  return n;
}

size_t ps_queue_capacity(const ps_queue *q) { return q->cap; }
