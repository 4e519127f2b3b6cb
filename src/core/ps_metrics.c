/*
 * ps_metrics: the registry and the Prometheus exposition (see ps_metrics.h).
 *
 * Series are grouped into families by name at registration; the exposition
 * writes each family's HELP and TYPE once, then its series. Registration and
 * rendering take one mutex; observing never does.
 */
#include "core/ps_metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ps_metrics_t ps_metrics;

const double ps_metrics_latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                            0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5, 5, 10};
const size_t ps_metrics_latency_nbounds = sizeof ps_metrics_latency_bounds / sizeof ps_metrics_latency_bounds[0];

struct ps_histogram {
  double *bounds;
  size_t n;
  _Atomic int64_t *buckets; /* n + 1, the last is +Inf; not cumulative */
  _Atomic double sum;
};

enum { PS__COUNTER, PS__GAUGE, PS__GAUGE_FN, PS__HISTOGRAM };

typedef struct ps__series {
  struct ps__series *next;
  char *labels;
  int kind;
  ps_counter counter;
  ps_histogram hist;
  double (*fn)(void *);
  void *ud;
} ps__series;

typedef struct ps__family {
  struct ps__family *next;
  char *name, *help;
  int kind;
  ps__series *series, **tail;
} ps__family;

static pthread_mutex_t ps__mu = PTHREAD_MUTEX_INITIALIZER;
static ps__family *ps__families, **ps__families_tail = &ps__families;

static ps__family *ps__family_get(const char *name, const char *help, int kind) {
  for (ps__family *f = ps__families; f; f = f->next)
    if (strcmp(f->name, name) == 0)
      return f;
  ps__family *f = calloc(1, sizeof *f);
  if (!f)
    abort();
  f->name = strdup(name);
  f->help = strdup(help ? help : "");
  f->kind = kind;
  f->tail = &f->series;
  *ps__families_tail = f;
  ps__families_tail = &f->next;
  return f;
}

static ps__series *ps__series_get(ps__family *f, const char *labels, int kind, int *created) {
  for (ps__series *s = f->series; s; s = s->next)
    if (strcmp(s->labels, labels) == 0) {
      *created = 0;
      return s;
    }
  ps__series *s = calloc(1, sizeof *s);
  if (!s)
    abort();
  s->labels = strdup(labels ? labels : "");
  s->kind = kind;
  *f->tail = s;
  f->tail = &s->next;
  *created = 1;
  return s;
}

ps_counter *ps_metrics_counter(const char *name, const char *labels, const char *help, int gauge) {
  int kind = gauge ? PS__GAUGE : PS__COUNTER, created;
  pthread_mutex_lock(&ps__mu);
  ps__series *s = ps__series_get(ps__family_get(name, help, kind), labels ? labels : "", kind, &created);
  pthread_mutex_unlock(&ps__mu);
  return &s->counter;
}

ps_histogram *ps_metrics_histogram(const char *name, const char *labels, const char *help, const double *bounds,
                                   size_t nbounds) {
  int created;
  pthread_mutex_lock(&ps__mu);
  ps__series *s =
      ps__series_get(ps__family_get(name, help, PS__HISTOGRAM), labels ? labels : "", PS__HISTOGRAM, &created);
  if (created) {
    s->hist.n = nbounds;
    s->hist.bounds = malloc(nbounds * sizeof *bounds);
    s->hist.buckets = calloc(nbounds + 1, sizeof *s->hist.buckets);
    if (!s->hist.bounds || !s->hist.buckets)
      abort();
    memcpy(s->hist.bounds, bounds, nbounds * sizeof *bounds);
  }
  pthread_mutex_unlock(&ps__mu);
  return &s->hist;
}

void ps_metrics_gauge_fn(const char *name, const char *labels, const char *help, double (*fn)(void *ud),
                         void *ud) {
  int created;
  pthread_mutex_lock(&ps__mu);
  ps__series *s =
      ps__series_get(ps__family_get(name, help, PS__GAUGE_FN), labels ? labels : "", PS__GAUGE_FN, &created);
  s->fn = fn;
  s->ud = ud;
  pthread_mutex_unlock(&ps__mu);
}

void ps_histogram_observe(ps_histogram *h, double v) {
#ifdef PS_METRICS_OFF
  return;
#endif
  size_t i = 0;
  while (i < h->n && v > h->bounds[i])
    i++;
  atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
  double old = atomic_load_explicit(&h->sum, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(&h->sum, &old, old + v, memory_order_relaxed,
                                                memory_order_relaxed))
    ;
}

static void ps__num(ps_buf *out, double v) {
  if (isinf(v))
    ps_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
  else if (isnan(v))
    ps_buf_puts(out, "NaN");
  else if (v == (double)(int64_t)v && fabs(v) < 9e15)
    ps_buf_put_i64(out, (int64_t)v);
  else {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%.15g", v);
    if (strtod(tmp, NULL) != v) /* the shortest of the two that reads back exactly */
      snprintf(tmp, sizeof tmp, "%.17g", v);
    ps_buf_puts(out, tmp);
  }
}

static void ps__sample(ps_buf *out, const char *name, const char *suffix, const char *labels, const char *extra,
                       double v) {
  ps_buf_puts(out, name);
  ps_buf_puts(out, suffix);
  if (*labels || (extra && *extra)) {
    ps_buf_putc(out, '{');
    ps_buf_puts(out, labels);
    if (extra && *extra) {
      if (*labels)
        ps_buf_putc(out, ',');
      ps_buf_puts(out, extra);
    }
    ps_buf_putc(out, '}');
  }
  ps_buf_putc(out, ' ');
  ps__num(out, v);
  ps_buf_putc(out, '\n');
}

static const char *ps__type(int kind) {
  return kind == PS__COUNTER ? "counter" : kind == PS__HISTOGRAM ? "histogram" : "gauge";
}

static void ps__render_family(ps_buf *out, const ps__family *f) {
  ps_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, ps__type(f->kind));
  for (const ps__series *s = f->series; s; s = s->next) {
    if (s->kind == PS__HISTOGRAM) {
      int64_t cum = 0;
      char le[64];
      for (size_t i = 0; i <= s->hist.n; i++) {
        cum += atomic_load_explicit(&s->hist.buckets[i], memory_order_relaxed);
        if (i < s->hist.n) {
          ps_buf b = PS_BUF_INIT;
          ps__num(&b, s->hist.bounds[i]);
          snprintf(le, sizeof le, "le=\"%s\"", b.data);
          ps_buf_free(&b);
        } else {
          snprintf(le, sizeof le, "le=\"+Inf\"");
        }
        ps__sample(out, f->name, "_bucket", s->labels, le, (double)cum);
      }
      ps__sample(out, f->name, "_sum", s->labels, NULL, atomic_load(&s->hist.sum));
      ps__sample(out, f->name, "_count", s->labels, NULL, (double)cum);
    } else if (s->kind == PS__GAUGE_FN) {
      ps__sample(out, f->name, "", s->labels, NULL, s->fn(s->ud));
    } else {
      ps__sample(out, f->name, "", s->labels, NULL, (double)atomic_load(&s->counter.v));
    }
  }
}

static double ps__read_static(void *ud) { return (double)atomic_load((_Atomic int64_t *)ud); }

/* The static series join the registry on first render, in table order. */
static void ps__register_static(void) {
  static const struct {
    const char *name, *labels, *help;
    _Atomic int64_t *v;
  } table[] = {
#define PS__ROW(field_, name_, labels_, help_) {name_, labels_, help_, &ps_metrics.field_},
      PS_METRICS_MAP(PS__ROW)
#undef PS__ROW
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
    int gauge = strcmp(table[i].name, "penstock_broker_connections") == 0, created;
    ps__family *f = ps__family_get(table[i].name, table[i].help, gauge ? PS__GAUGE_FN : PS__COUNTER);
    if (table[i].help && !*f->help) {
      free(f->help);
      f->help = strdup(table[i].help);
    }
    ps__series *sr = ps__series_get(f, table[i].labels, PS__GAUGE_FN, &created);
    sr->fn = ps__read_static;
    sr->ud = (void *)table[i].v;
  }
}

static void ps__process(ps_buf *out) {
  long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  FILE *f = fopen("/proc/self/stat", "r");
  if (f) {
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long utime = 0, stime = 0, vsize = 0;
    long threads = 0, rss = 0;
    unsigned long long start = 0;
    if (p && sscanf(p + 2,
                    "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %ld %*d %llu %lu %ld",
                    &utime, &stime, &threads, &start, &vsize, &rss) == 6) {
      double boot = 0;
      FILE *st = fopen("/proc/stat", "r");
      if (st) {
        char line[256];
        while (fgets(line, sizeof line, st))
          if (sscanf(line, "btime %lf", &boot) == 1)
            break;
        fclose(st);
      }
      ps_buf_puts(out, "# HELP process_cpu_seconds_total user and system CPU time\n"
                       "# TYPE process_cpu_seconds_total counter\n");
      ps__sample(out, "process_cpu_seconds_total", "", "", NULL, (double)(utime + stime) / (double)tick);
      ps_buf_puts(out, "# HELP process_resident_memory_bytes resident set size\n"
                       "# TYPE process_resident_memory_bytes gauge\n");
      ps__sample(out, "process_resident_memory_bytes", "", "", NULL, (double)rss * (double)page);
      ps_buf_puts(out, "# HELP process_virtual_memory_bytes virtual memory size\n"
                       "# TYPE process_virtual_memory_bytes gauge\n");
      ps__sample(out, "process_virtual_memory_bytes", "", "", NULL, (double)vsize);
      ps_buf_puts(out, "# HELP process_start_time_seconds start time since the epoch\n"
                       "# TYPE process_start_time_seconds gauge\n");
      ps__sample(out, "process_start_time_seconds", "", "", NULL, boot + (double)start / (double)tick);
      ps_buf_puts(out, "# HELP process_threads threads\n# TYPE process_threads gauge\n");
      ps__sample(out, "process_threads", "", "", NULL, (double)threads);
    }
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    int fds = -1; /* the directory's own fd */
    while (readdir(d))
      fds++;
    closedir(d);
    ps_buf_puts(out, "# HELP process_open_fds open file descriptors\n# TYPE process_open_fds gauge\n");
    ps__sample(out, "process_open_fds", "", "", NULL, (double)(fds - 2)); /* minus . and .. */
  }
}

void ps_metrics_render(ps_buf *out) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_mutex_lock(&ps__mu);
  pthread_once(&once, ps__register_static);
  for (const ps__family *f = ps__families; f; f = f->next)
    ps__render_family(out, f);
  pthread_mutex_unlock(&ps__mu);
  ps__process(out);
}
