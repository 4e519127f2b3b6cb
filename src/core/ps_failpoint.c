/* ps_failpoint: test-only failure injection (see ps_failpoint.h). */
#include "core/ps_failpoint.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define PS__MAX_FAILPOINTS 16

static struct {
  char name[64];
  _Atomic long remaining; /* < 0: always */
} ps__points[PS__MAX_FAILPOINTS];
static _Atomic int ps__count;

void ps_failpoint_init(void) {
  const char *spec = getenv("PENSTOCK_FAILPOINTS");
  if (!spec || !*spec)
    return;
  char *copy = strdup(spec), *save = NULL;
  int n = 0;
  for (char *tok = strtok_r(copy, ",", &save); tok && n < PS__MAX_FAILPOINTS; tok = strtok_r(NULL, ",", &save)) {
    char *colon = strchr(tok, ':');
    long times = -1;
    if (colon) {
      *colon = '\0';
      times = strtol(colon + 1, NULL, 10);
    }
    strncpy(ps__points[n].name, tok, sizeof ps__points[n].name - 1);
    atomic_store(&ps__points[n].remaining, times);
    n++;
  }
  free(copy);
  atomic_store(&ps__count, n);
}

int ps_failpoint(const char *name) {
  int n = atomic_load_explicit(&ps__count, memory_order_relaxed);
  for (int i = 0; i < n; i++) {
    if (strcmp(ps__points[i].name, name) != 0)
      continue;
    long r = atomic_load(&ps__points[i].remaining);
    while (r != 0) {
      if (r < 0 || atomic_compare_exchange_weak(&ps__points[i].remaining, &r, r - 1))
        return 1;
    }
    return 0;
  }
  return 0;
}
