/* ps_backoff: retry waits (see ps_backoff.h). */
#include "core/ps_backoff.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "queue/ps_queue.h"

int ps_backoff_ms(int attempt, int base_ms, int max_ms) {
  int64_t cap = base_ms;
  for (int i = 0; i < attempt && cap < max_ms; i++)
    cap *= 2;
  if (cap > max_ms)
    cap = max_ms;
  static _Thread_local unsigned seed;
  if (!seed)
    seed = (unsigned)ps_now_ns() ^ (unsigned)(uintptr_t)&seed;
  return (int)(cap / 2 + (int64_t)(rand_r(&seed) % (unsigned)(cap / 2 + 1)));
}

void ps_backoff_sleep(int attempt, int base_ms, int max_ms, const _Atomic int64_t *deadline_ns,
                      const _Atomic int *stop) {
  int64_t ms = ps_backoff_ms(attempt, base_ms, max_ms);
  int64_t end = ps_now_ns() + ms * 1000000;
  for (;;) {
    int64_t until = end;
    if (deadline_ns && atomic_load(deadline_ns) < until)
      until = atomic_load(deadline_ns);
    int64_t left = until - ps_now_ns();
    if (left <= 0 || (stop && atomic_load(stop)))
      return;
    struct timespec ts = {0, left > 50000000 ? 50000000 : (long)left};
    nanosleep(&ts, NULL);
  }
}
