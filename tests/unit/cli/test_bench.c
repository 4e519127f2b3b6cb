/*
 * Unit tests of `penstock bench` (ps_bench): arguments and --mix; the id
 * counters and their patching into serialized batches (every id unique, every
 * length unchanged, the rest of the bytes untouched, types in the mix's
 * proportions); the open-loop schedule's arithmetic and late-start counting;
 * latencies counted from the due time (ps_client_start_at); the timeline, CDF
 * and JSON writers; the generator's speed; and whole runs against penstock's
 * own gRPC server in this process (closed loop for a count with --ids, open
 * loop at a rate, an unreachable server).
 *
 * Under TSan the tests that drive the gRPC core are left out, as in
 * test_client.c: Debian's libgrpc is not built with TSan, so its own
 * synchronisation is invisible to it; ps_bench starts no thread of its own.
 */
#include <grpc/status.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/ps_bench.h"
#include "cli/ps_client.h"
#include "codec/ps_events.h"
#include "core/ps_error.h"
#include "eventservice.pb-c.h"
#include "ingest/ps_dispatch.h"
#include "ingest/ps_grpc_server.h"
#include "ps_test.h"
#include "queue/ps_queue.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define PS__SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define PS__SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define PS__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PS__TSAN 1
#endif
#endif

#define MS 1000000LL
#define SEC 1000000000LL

static int parse(ps_bench_options *o, char *err, size_t errlen, ...) {
  char *argv[64];
  int argc = 0;
  argv[argc++] = "bench";
  va_list ap;
  va_start(ap, errlen);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 63;)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  err[0] = '\0';
  return ps_bench_parse_args(argc, argv, o, err, errlen);
}

/* ------------------------------------------------------------ arguments */

PS_TEST(arguments_defaults_and_values) {
  ps_bench_options o;
  char err[512];
  PS_CHECK_INT_EQ(parse(&o, err, sizeof err, "--addr", "127.0.0.1:50051", "--duration", "2.5", NULL), 0);
  PS_CHECK_STR_EQ(o.addr, "127.0.0.1:50051");
  PS_CHECK(o.connections == 4 && o.concurrency == 32 && o.batch == 50 && o.timeout_ms == 10000);
  PS_CHECK(o.duration_s == 2.5 && o.events == 0 && o.rate == 0);
  PS_CHECK(!o.json && !o.quiet && !o.dry_run && !o.run_id && !o.ids_path && !o.timeline_path && !o.cdf_path);
  PS_CHECK_INT_EQ(o.mix.n, 6);
  PS_CHECK_STR_EQ(o.mix.type[0], "LaunchEvent");
  PS_CHECK(o.mix.weight[0] == 5 && o.mix.weight[2] == 30);

  PS_CHECK_INT_EQ(parse(&o, err, sizeof err, "--addr=h:1", "--connections", "2", "--concurrency=7", "--batch",
                        "9", "--mix", "ClickEvent=3,launchEvent=1", "--events", "1000", "--rate", "2000.5",
                        "--timeout-ms", "0", "--run-id", "r-1.x_y:z", "--ids", "i.txt", "--json",
                        "--timeline", "t.csv", "--cdf=c.csv", "--quiet", NULL),
                  0);
  PS_CHECK(o.connections == 2 && o.concurrency == 7 && o.batch == 9 && o.events == 1000 && o.rate == 2000.5);
  PS_CHECK(o.timeout_ms == 0 && o.json && o.quiet);
  PS_CHECK_STR_EQ(o.run_id, "r-1.x_y:z");
  PS_CHECK_STR_EQ(o.ids_path, "i.txt");
  PS_CHECK_STR_EQ(o.timeline_path, "t.csv");
  PS_CHECK_STR_EQ(o.cdf_path, "c.csv");
  PS_CHECK_INT_EQ(o.mix.n, 2);
  PS_CHECK_STR_EQ(o.mix.type[1], "LaunchEvent"); /* the field name names the type too */
  PS_CHECK_INT_EQ(parse(&o, err, sizeof err, "--help", NULL), 1);
  PS_CHECK_INT_EQ(parse(&o, err, sizeof err, "--dry-run", "--events", "10", NULL), 0);
  PS_CHECK(strstr(ps_bench_usage(), "--addr HOST:PORT") && strstr(ps_bench_usage(), "exit codes"));
}

PS_TEST(arguments_errors) {
  static const struct {
    const char *args[8];
    const char *want;
  } cases[] = {
      {{"--addr", "h:1", NULL}, "--duration S or --events N"},
      {{"--addr", "h:1", "--duration", "1", "--events", "5", NULL}, "not both"},
      {{"--duration", "1", NULL}, "--addr"},
      {{"--addr", "nohost", "--duration", "1", NULL}, "HOST:PORT"},
      {{"--addr", "h:1", "--duration", "0", NULL}, "--duration"},
      {{"--addr", "h:1", "--duration", "nan", NULL}, "--duration"},
      {{"--addr", "h:1", "--events", "0", NULL}, "--events"},
      {{"--addr", "h:1", "--events", "5", "--rate", "-3", NULL}, "--rate"},
      {{"--addr", "h:1", "--events", "5", "--batch", "0", NULL}, "--batch"},
      {{"--addr", "h:1", "--events", "5", "--connections", "65", NULL}, "--connections"},
      {{"--addr", "h:1", "--events", "5", "--run-id", "a b", NULL}, "--run-id"},
      {{"--addr", "h:1", "--events", "5", "--mix", "NoSuchEvent=1", NULL},
       "unknown event type 'NoSuchEvent'"},
      {{"--addr", "h:1", "--events", "5", "--frob", NULL}, "unknown option"},
      {{"--addr", "h:1", "--events", NULL}, "needs a value"},
      {{"--dry-run", "--events", "5", "--rate", "10", NULL}, "--dry-run"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *argv[10] = {"bench"};
    int argc = 1;
    for (int k = 0; cases[i].args[k]; k++)
      argv[argc++] = (char *)cases[i].args[k];
    ps_bench_options o;
    char err[512] = "";
    int rc = ps_bench_parse_args(argc, argv, &o, err, sizeof err);
    PS_CHECK_MSG(rc == PS_EINVAL && strstr(err, cases[i].want), "case %zu: rc %d, err '%s', want '%s'", i, rc,
                 err, cases[i].want);
  }
}

/* ------------------------------------------------------------------ mix */

PS_TEST(mix_parse) {
  ps_bench_mix m;
  char err[512];
  PS_CHECK_INT_EQ(ps_bench_mix_parse(PS_BENCH_DEFAULT_MIX, &m, err, sizeof err), 0);
  PS_CHECK_INT_EQ(m.n, 6);
  double sum = 0;
  for (size_t i = 0; i < m.n; i++)
    sum += m.weight[i];
  PS_CHECK(sum == 100);
  /* Every type of the default is a type of the proto, and every type of the proto is in the default. */
  PS_CHECK_INT_EQ(m.n, ps_event_type_count());
  PS_CHECK_INT_EQ(ps_bench_mix_parse(" ClickEvent = 0.5 , AddToCartEvent=1.5", &m, err, sizeof err), 0);
  PS_CHECK(m.n == 2 && m.weight[0] == 0.5 && m.weight[1] == 1.5);
  PS_CHECK_STR_EQ(m.type[0], "ClickEvent");
  PS_CHECK_INT_EQ(ps_bench_mix_parse("ClickEvent=1,LaunchEvent=0", &m, err, sizeof err), 0);

  static const struct {
    const char *spec, *want;
  } bad[] = {{"Click=1", "unknown event type 'Click'"},      {"ClickEvent", "not TYPE=WEIGHT"},
             {"ClickEvent=-1", "not a number >= 0"},         {"ClickEvent=x", "not a number >= 0"},
             {"ClickEvent=1,ClickEvent=2", "twice"},         {"ClickEvent=0", "add up"},
             {"ClickEvent=1,,LaunchEvent=1", "empty entry"}, {"", "empty entry"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    int rc = ps_bench_mix_parse(bad[i].spec, &m, err, sizeof err);
    PS_CHECK_MSG(rc == PS_EINVAL && strstr(err, bad[i].want), "'%s': rc %d, err '%s'", bad[i].spec, rc, err);
  }
  /* An unknown type's message lists the known ones. */
  ps_bench_mix_parse("Nope=1", &m, err, sizeof err);
  PS_CHECK(strstr(err, "ClickEvent") && strstr(err, "LaunchEvent"));
}

PS_TEST(mix_counts_are_proportional_and_add_up) {
  ps_bench_mix m;
  char err[256];
  PS_CHECK_INT_EQ(ps_bench_mix_parse(PS_BENCH_DEFAULT_MIX, &m, err, sizeof err), 0);
  size_t c[PS_BENCH_MAX_TYPES];
  ps_bench_mix_counts(&m, 200, c);
  PS_CHECK(c[0] == 10 && c[1] == 50 && c[2] == 60 && c[3] == 50 && c[4] == 20 && c[5] == 10);
  static const size_t totals[] = {0, 1, 7, 13, 99, 101, 8200, 1000003};
  for (size_t t = 0; t < sizeof totals / sizeof totals[0]; t++) {
    ps_bench_mix_counts(&m, totals[t], c);
    size_t sum = 0;
    for (size_t i = 0; i < m.n; i++) {
      double exact = m.weight[i] / 100.0 * (double)totals[t];
      PS_CHECK_MSG(fabs((double)c[i] - exact) < 1.0, "total %zu type %zu: %zu for %.2f", totals[t], i, c[i],
                   exact);
      sum += c[i];
    }
    PS_CHECK_INT_EQ(sum, totals[t]);
  }
  PS_CHECK_INT_EQ(ps_bench_mix_parse("ClickEvent=1,LaunchEvent=1,PageOpenedEvent=1", &m, err, sizeof err), 0);
  ps_bench_mix_counts(&m, 10, c);
  PS_CHECK(c[0] + c[1] + c[2] == 10 && c[0] >= 3 && c[1] >= 3 && c[2] >= 3);
  PS_CHECK_INT_EQ(ps_bench_mix_parse("ClickEvent=0,LaunchEvent=1", &m, err, sizeof err), 0);
  ps_bench_mix_counts(&m, 5, c);
  PS_CHECK(c[0] == 0 && c[1] == 5);
}

/* ------------------------------------------------------------------ ids */

PS_TEST(counter_digits) {
  char d[PS_BENCH_ID_DIGITS + 1];
  d[PS_BENCH_ID_DIGITS] = '\0';
  ps_bench_put_counter(d, 0);
  PS_CHECK_STR_EQ(d, "000000000000");
  ps_bench_put_counter(d, 1);
  PS_CHECK_STR_EQ(d, "000000000001");
  ps_bench_put_counter(d, 1234567890);
  PS_CHECK_STR_EQ(d, "001234567890");
  ps_bench_put_counter(d, PS_BENCH_MAX_EVENTS);
  PS_CHECK_STR_EQ(d, "999999999999");
  for (uint64_t n = 0; n < 100000; n += 7) {
    char want[32];
    snprintf(want, sizeof want, "%012llu", (unsigned long long)n);
    ps_bench_put_counter(d, n);
    PS_CHECK_MSG(strcmp(d, want) == 0, "%llu: %s", (unsigned long long)n, d);
  }
}

/* Serializes an Events with the given ids (and a payload after each id). */
static size_t pack_events(uint8_t *out, const char *const *ids, size_t n) {
  Event__Events m = EVENT__EVENTS__INIT;
  Event__Header h = EVENT__HEADER__INIT;
  h.sessionid = "s";
  h.userid = 42;
  m.header = &h;
  Event__Event ev[8], *evp[8];
  Event__ClickEvent click[8];
  for (size_t i = 0; i < n; i++) {
    event__event__init(&ev[i]);
    event__click_event__init(&click[i]);
    click[i].page = "home";
    click[i].position = (int32_t)i;
    ev[i].id = (char *)ids[i];
    ev[i].timestamp = "1700000000";
    ev[i].event_of_case = EVENT__EVENT__EVENT_OF_CLICK_EVENT;
    ev[i].clickevent = &click[i];
    evp[i] = &ev[i];
  }
  m.events = evp;
  m.n_events = n;
  return event__events__pack(&m, out);
}

PS_TEST(find_ids_walks_the_wire_format) {
  static const char *const ids[] = {"run-000000000000", "run-000000000000", "run-000000000000"};
  uint8_t msg[1024];
  size_t len = pack_events(msg, ids, 3);
  uint32_t off[8];
  PS_CHECK_INT_EQ(ps_bench_find_ids(msg, len, 16, off, 8), 3);
  for (int k = 0; k < 3; k++)
    PS_CHECK(memcmp(msg + off[k], "run-000000000000", 16) == 0);
  PS_CHECK(off[0] < off[1] && off[1] < off[2]);
  uint32_t digits[3] = {off[0] + 4, off[1] + 4, off[2] + 4};
  ps_bench_patch_ids(msg, digits, 3, 998);
  Event__Events *m = event__events__unpack(NULL, len, msg);
  PS_CHECK(m != NULL && m->n_events == 3);
  int ok = strcmp(m->events[0]->id, "run-000000000998") == 0 &&
           strcmp(m->events[1]->id, "run-000000000999") == 0 &&
           strcmp(m->events[2]->id, "run-000000001000") == 0 && m->events[2]->clickevent &&
           m->events[2]->clickevent->position == 2 && strcmp(m->header->sessionid, "s") == 0;
  event__events__free_unpacked(m, NULL);
  PS_CHECK(ok);

  /* Wrong id length, too many events, an event without an id, truncated bytes: refused. */
  PS_CHECK_INT_EQ(ps_bench_find_ids(msg, len, 15, off, 8), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_bench_find_ids(msg, len, 16, off, 2), PS_EINVAL);
  /* A prefix that ends between two top-level fields is a valid Events with fewer events; any other fails. */
  for (size_t cut = 1; cut < len; cut++) {
    int n = ps_bench_find_ids(msg, cut, 16, off, 8);
    PS_CHECK_MSG(n == PS_EINVAL || (n >= 0 && n < 3), "truncated at %zu: %d", cut, n);
  }
  static const char *const no_id[] = {""};
  len = pack_events(msg, no_id, 1);
  PS_CHECK_INT_EQ(ps_bench_find_ids(msg, len, 16, off, 8), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_bench_find_ids(msg, 0, 16, off, 8), 0); /* no events */
}

/* Type index (in ps_event_type_at order) of an event, or -1. */
static int type_of(const Event__Event *ev) {
  const char *name = ps_event_type_name(ev);
  for (size_t i = 0; name && i < ps_event_type_count(); i++)
    if (strcmp(ps_event_type_at(i), name) == 0)
      return (int)i;
  return -1;
}

PS_TEST(pool_ids_unique_lengths_fixed_types_mixed) {
  ps_bench_mix mix;
  char err[256];
  PS_CHECK_INT_EQ(ps_bench_mix_parse(PS_BENCH_DEFAULT_MIX, &mix, err, sizeof err), 0);
  ps_bench_pool *p = NULL;
  const uint32_t batch = 7, tail = 3;
  const size_t nb = 40;
  PS_CHECK_INT_EQ(ps_bench_pool_create("tr", &mix, batch, tail, nb, 11, &p, err, sizeof err), 0);
  PS_CHECK_INT_EQ(ps_bench_pool_count(p), nb);
  size_t max_len = ps_bench_pool_max_len(p);
  uint8_t *buf = malloc(max_len), *again = malloc(max_len);
  size_t lens[40];
  size_t type_counts[PS_BENCH_MAX_TYPES] = {0};
  uint64_t next = 1;
  int problems = 0;
  char first_problem[256] = "";
  /* Three rounds of the pool: ids count up across calls, each batch keeps its length. */
  for (size_t call = 0; call < 3 * nb; call++) {
    uint32_t events = 0;
    size_t len = ps_bench_pool_make(p, 0, next, buf, &events);
    PS_CHECK(len <= max_len && events == batch);
    if (call < nb)
      lens[call] = len;
    else
      PS_CHECK_INT_EQ(len, lens[call % nb]);
    Event__Events *m = event__events__unpack(NULL, len, buf);
    PS_CHECK(m != NULL && m->n_events == batch && m->header && m->header->sessionid[0]);
    for (size_t k = 0; k < m->n_events; k++, next++) {
      char want[64];
      snprintf(want, sizeof want, "tr-%012llu", (unsigned long long)next);
      if (strcmp(m->events[k]->id, want) != 0 && !problems++)
        snprintf(first_problem, sizeof first_problem, "call %zu event %zu: id %s, want %s", call, k,
                 m->events[k]->id, want);
      int t = type_of(m->events[k]);
      if (t < 0 && !problems++)
        snprintf(first_problem, sizeof first_problem, "call %zu event %zu: no type", call, k);
      if (call < nb && t >= 0)
        type_counts[t]++;
      if (!m->events[k]->timestamp[0] && !problems++)
        snprintf(first_problem, sizeof first_problem, "call %zu event %zu: no timestamp", call, k);
    }
    event__events__free_unpacked(m, NULL);
    PS_CHECK_MSG(!problems, "%d problems; first: %s", problems, first_problem);
  }
  /* The same batch numbered otherwise differs in the id digits only. */
  uint32_t e1, e2;
  size_t l1 = ps_bench_pool_make(p, 0, 5, buf, &e1);
  for (size_t i = 1; i < nb; i++)
    ps_bench_pool_make(p, 0, 1, again, &e2);
  size_t l2 = ps_bench_pool_make(p, 0, 777777, again, &e2);
  PS_CHECK(l1 == l2 && e1 == e2);
  size_t diff = 0;
  for (size_t i = 0; i < l1; i++)
    diff += buf[i] != again[i];
  PS_CHECK_MSG(diff > 0 && diff <= (size_t)batch * 6, "%zu bytes differ", diff);
  /* The tail batch. */
  uint32_t te;
  size_t tl = ps_bench_pool_make(p, 1, 1000, buf, &te);
  Event__Events *m = event__events__unpack(NULL, tl, buf);
  PS_CHECK(m && m->n_events == tail && te == tail);
  int tail_ok =
      strcmp(m->events[0]->id, "tr-000000001000") == 0 && strcmp(m->events[2]->id, "tr-000000001002") == 0;
  event__events__free_unpacked(m, NULL);
  PS_CHECK(tail_ok);
  /* Over the full batches (the tail holds the rest), types follow the mix: 5/25/30/25/10/5 % of 283 events.
   */
  size_t want[PS_BENCH_MAX_TYPES];
  ps_bench_mix_counts(&mix, nb * batch + tail, want);
  for (size_t i = 0; i < mix.n; i++) {
    size_t t = 0;
    while (strcmp(ps_event_type_at(t), mix.type[i]) != 0)
      t++;
    PS_CHECK_MSG(type_counts[t] <= want[i] && type_counts[t] + tail >= want[i],
                 "%s: %zu events, mix says %zu", mix.type[i], type_counts[t], want[i]);
  }
  free(buf);
  free(again);
  ps_bench_pool_destroy(p);

  /* A mix of one type: every event is of it. */
  PS_CHECK_INT_EQ(ps_bench_mix_parse("AddToCartEvent=1", &mix, err, sizeof err), 0);
  PS_CHECK_INT_EQ(ps_bench_pool_create("x", &mix, 5, 0, 3, 1, &p, err, sizeof err), 0);
  buf = malloc(ps_bench_pool_max_len(p));
  uint32_t ev;
  size_t len = ps_bench_pool_make(p, 0, 1, buf, &ev);
  m = event__events__unpack(NULL, len, buf);
  int all = m && m->n_events == 5;
  for (size_t k = 0; all && k < m->n_events; k++)
    all = strcmp(ps_event_type_name(m->events[k]), "AddToCartEvent") == 0;
  event__events__free_unpacked(m, NULL);
  free(buf);
  ps_bench_pool_destroy(p);
  PS_CHECK(all);
}

PS_TEST(generator_is_fast) {
  ps_bench_mix mix;
  char err[256];
  PS_CHECK_INT_EQ(ps_bench_mix_parse(PS_BENCH_DEFAULT_MIX, &mix, err, sizeof err), 0);
  ps_bench_pool *p = NULL;
  PS_CHECK_INT_EQ(ps_bench_pool_create("0123456789abcdef", &mix, 50, 0, 164, 3, &p, err, sizeof err), 0);
  size_t max_len = ps_bench_pool_max_len(p);
  uint8_t *bufs = malloc(max_len * 32);
  uint64_t events = 0, sink = 0;
  int64_t t0 = ps_now_ns(), t = t0;
  for (uint64_t k = 0; t - t0 < 300 * MS; k++) {
    uint32_t e;
    uint8_t *b = bufs + (k % 32) * max_len;
    size_t len = ps_bench_pool_make(p, 0, events + 1, b, &e);
    sink += b[len - 1];
    events += e;
    if ((k & 63) == 0)
      t = ps_now_ns();
  }
  double rate = (double)events / ((double)(t - t0) / 1e9);
  printf("generator: %.1fM events/s (batches of 50, %zu bytes at most)%s\n", rate / 1e6, max_len,
         sink == 0 ? "" : "");
  free(bufs);
  ps_bench_pool_destroy(p);
  /* Well over a million a second; sanitizers slow memcpy down (TSan most), so they are only held to less. */
#if defined(PS__TSAN)
  PS_CHECK_MSG(rate > 1e5, "%.0f events/s", rate);
#elif defined(PS__SANITIZED)
  PS_CHECK_MSG(rate > 1e6, "%.0f events/s", rate);
#else
  PS_CHECK_MSG(rate > 5e6, "%.0f events/s", rate);
#endif
}

/* ------------------------------------------------------------- schedule */

PS_TEST(open_loop_schedule_arithmetic) {
  PS_CHECK_INT_EQ(ps_bench_due_ns(0, 1000), 0);
  PS_CHECK_INT_EQ(ps_bench_due_ns(50, 1000), 50 * MS);
  PS_CHECK_INT_EQ(ps_bench_due_ns(1, 3), 333333333);
  PS_CHECK_INT_EQ(ps_bench_due_ns(3000000000ULL, 1e6), 3000 * SEC); /* no drift over long runs */

  /* 2000 events/s in calls of 50 for 3 s: one call every 25 ms, 120 calls, the last due at 2.975 s. */
  ps_bench_schedule s;
  memset(&s, 0, sizeof s);
  s.rate = 2000;
  s.batch = 50;
  s.duration_ns = 3 * SEC;
  s.late_after_ns = MS;
  int64_t due;
  for (int k = 0; k < 120; k++) {
    uint32_t n = ps_bench_schedule_next(&s, 0, &due);
    PS_CHECK_MSG(n == 50 && due == k * 25 * MS, "call %d: %u events due %lld", k, n, (long long)due);
    ps_bench_schedule_started(&s, n, due, due + (k == 7 ? 3 * MS : k == 8 ? MS : 100000));
  }
  PS_CHECK_INT_EQ(ps_bench_schedule_next(&s, 0, &due), 0);
  PS_CHECK(s.calls == 120 && s.events == 6000);
  PS_CHECK_INT_EQ(s.late_calls, 1); /* 3 ms after due is late; 1 ms is not */
  PS_CHECK_INT_EQ(s.max_lag_ns, 3 * MS);

  /* A count: the last call carries the rest; nothing after it. */
  memset(&s, 0, sizeof s);
  s.rate = 1000;
  s.batch = 50;
  s.limit = 120;
  s.late_after_ns = MS;
  uint32_t sizes[4] = {0};
  int64_t dues[4] = {0};
  for (int k = 0; k < 4; k++) {
    sizes[k] = ps_bench_schedule_next(&s, 0, &dues[k]);
    if (sizes[k])
      ps_bench_schedule_started(&s, sizes[k], dues[k], dues[k]);
  }
  PS_CHECK(sizes[0] == 50 && sizes[1] == 50 && sizes[2] == 20 && sizes[3] == 0);
  PS_CHECK(dues[0] == 0 && dues[1] == 50 * MS && dues[2] == 100 * MS);
  PS_CHECK_INT_EQ(s.late_calls, 0);

  /* Calls that waited for room all count from their own due time: started together at 200 ms, the three
     calls due at 0, 50 and 100 ms lagged 200, 150 and 100 ms. */
  memset(&s, 0, sizeof s);
  s.rate = 1000;
  s.batch = 50;
  s.late_after_ns = MS;
  for (int k = 0; k < 3; k++) {
    uint32_t n = ps_bench_schedule_next(&s, 200 * MS, &due);
    PS_CHECK(n == 50 && due == k * 50 * MS);
    ps_bench_schedule_started(&s, n, due, 200 * MS);
  }
  PS_CHECK(s.late_calls == 3 && s.max_lag_ns == 200 * MS);
}

PS_TEST(closed_loop_schedule) {
  ps_bench_schedule s;
  memset(&s, 0, sizeof s);
  s.batch = 10;
  s.duration_ns = SEC;
  s.late_after_ns = MS;
  int64_t due;
  PS_CHECK_INT_EQ(ps_bench_schedule_next(&s, 5 * MS, &due), 10);
  PS_CHECK_INT_EQ(due, 5 * MS); /* no schedule: due now, never late */
  ps_bench_schedule_started(&s, 10, due, due);
  PS_CHECK_INT_EQ(ps_bench_schedule_next(&s, SEC - 1, &due), 10);
  PS_CHECK_INT_EQ(ps_bench_schedule_next(&s, SEC, &due), 0);
  PS_CHECK_INT_EQ(s.late_calls, 0);
  memset(&s, 0, sizeof s);
  s.batch = 10;
  s.limit = 25;
  uint32_t total = 0, n;
  while ((n = ps_bench_schedule_next(&s, 0, &due)) != 0) {
    ps_bench_schedule_started(&s, n, due, due);
    total += n;
  }
  PS_CHECK(total == 25 && s.calls == 3);
  /* The ids' digits bound a run. */
  memset(&s, 0, sizeof s);
  s.batch = 10;
  s.events = PS_BENCH_MAX_EVENTS - 5;
  PS_CHECK_INT_EQ(ps_bench_schedule_next(&s, 0, &due), 0);
}

/* ------------------------------------------------------------- writers */

/* The text a memstream holds so far. */
static char *mem_text(char **buf, FILE *f) {
  fflush(f);
  return *buf;
}

PS_TEST(timeline_rows_per_second) {
  ps_bench_timeline t;
  ps_bench_timeline_init(&t);
  ps_bench_timeline_add(&t, 100 * MS, 1, 50, 2 * MS);
  ps_bench_timeline_add(&t, 900 * MS, 1, 50, 4 * MS);
  ps_bench_timeline_add(&t, 950 * MS, 0, 50, 8 * MS); /* failed: a call, no accepted events */
  ps_bench_timeline_add(&t, 2500 * MS, 1, 20, 1 * MS);
  ps_bench_timeline_finish(&t, 3200 * MS); /* the run lasted 3.2 s: seconds 0 to 3 */
  PS_CHECK_INT_EQ(t.n, 4);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  PS_CHECK_INT_EQ(ps_bench_timeline_write(&t, f), 0);
  const char *want = "second,accepted_events,calls,p50_ms,p99_ms\n"
                     "0,100,3,3.998,7.995\n" /* the histogram's, within 1/16 */
                     "1,0,0,,\n"
                     "2,20,1,1.000,1.000\n"
                     "3,0,0,,\n";
  int same = strcmp(mem_text(&buf, f), want) == 0;
  if (!same)
    fprintf(stderr, "got:\n%s", buf);
  fclose(f);
  free(buf);
  ps_bench_timeline_free(&t);
  PS_CHECK(same);

  /* A run that ends on a second's boundary has no row past it; a call finishing at the end gets one. */
  ps_bench_timeline_init(&t);
  ps_bench_timeline_add(&t, 10 * MS, 1, 1, MS);
  ps_bench_timeline_finish(&t, 2 * SEC);
  PS_CHECK_INT_EQ(t.n, 2);
  ps_bench_timeline_free(&t);
  ps_bench_timeline_init(&t);
  ps_bench_timeline_add(&t, 2 * SEC, 1, 1, MS);
  ps_bench_timeline_finish(&t, 2 * SEC);
  PS_CHECK_INT_EQ(t.n, 3);
  PS_CHECK(t.rows[2].calls == 1 && t.rows[0].calls == 0 && t.rows[0].p50_ns == -1);
  ps_bench_timeline_free(&t);
}

PS_TEST(cdf_is_cumulative) {
  ps_client_latency h;
  memset(&h, 0, sizeof h);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  PS_CHECK_INT_EQ(ps_bench_cdf_write(&h, f), 0);
  PS_CHECK_STR_EQ(mem_text(&buf, f), "latency_ms,fraction\n");
  fclose(f);
  free(buf);

  for (int i = 1; i <= 1000; i++)
    ps_client_latency_add(&h, (int64_t)i * 10000); /* 10 us .. 10 ms */
  ps_client_latency_add(&h, 250 * MS);
  int nonempty = 0;
  for (int i = 0; i < PS_CLIENT_LAT_BUCKETS; i++)
    nonempty += h.buckets[i] != 0;
  buf = NULL;
  f = open_memstream(&buf, &len);
  PS_CHECK_INT_EQ(ps_bench_cdf_write(&h, f), 0);
  fflush(f);
  char *save, *line = strtok_r(buf, "\n", &save);
  PS_CHECK_STR_EQ(line, "latency_ms,fraction");
  int rows = 0, ok = 1;
  double last_x = -1, last_frac = 0, x = 0, frac = 0;
  while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
    rows++;
    if (sscanf(line, "%lf,%lf", &x, &frac) != 2 || x <= last_x || frac <= last_frac || frac > 1)
      ok = 0;
    last_x = x;
    last_frac = frac;
  }
  fclose(f);
  free(buf);
  PS_CHECK_MSG(ok, "rows not increasing");
  PS_CHECK_INT_EQ(rows, nonempty);
  PS_CHECK(frac == 1.0 && x == 250.0); /* the last row: every call, at the largest latency */
}

static void fill_report(ps_bench_report *r, ps_bench_mix *mix, int open) {
  memset(r, 0, sizeof *r);
  char err[128];
  ps_bench_mix_parse(PS_BENCH_DEFAULT_MIX, mix, err, sizeof err);
  r->run_id = "r\"1";
  r->addr = "127.0.0.1:50051";
  r->open = open;
  r->offered_rate = open ? 2000 : 0;
  r->connections = 4;
  r->concurrency = 32;
  r->timeout_ms = 10000;
  r->batch = 50;
  r->mix = mix;
  r->st.calls_started = r->st.calls_done = 12;
  r->st.events_started = r->st.events_done = 600;
  r->st.calls[0] = 10;
  r->st.events[0] = 500;
  r->st.calls[GRPC_STATUS_UNAVAILABLE] = 1;
  r->st.events[GRPC_STATUS_UNAVAILABLE] = 50;
  r->st.calls[PS_CLIENT_NOT_SUCCESS] = 1;
  r->st.events[PS_CLIENT_NOT_SUCCESS] = 50;
  for (int i = 1; i <= 12; i++)
    ps_client_latency_add(&r->st.latency, (int64_t)i * MS);
  r->elapsed_s = 0.25;
  r->late_calls = open ? 3 : 0;
  r->max_lag_ns = open ? 7 * MS : 0;
  r->reached = 1;
}

PS_TEST(json_report_has_every_key) {
  ps_bench_report r;
  ps_bench_mix mix;
  for (int open = 0; open <= 1; open++) {
    fill_report(&r, &mix, open);
    ps_buf b = PS_BUF_INIT;
    ps_bench_report_json(&r, &b);
    PS_CHECK(b.len > 0 && b.data[b.len - 1] == '\n' && !memchr(b.data, '\n', b.len - 1));
    json_error_t je;
    json_t *j = json_loads(b.data, 0, &je);
    ps_buf_free(&b);
    PS_CHECK_MSG(j && json_is_object(j), "not JSON: %s", je.text);
    static const char *const keys[] = {"run_id",         "addr",      "mode",       "offered_rate",
                                       "sent",           "accepted",  "failed",     "failed_by_status",
                                       "events_per_sec", "elapsed_s", "late_calls", "latency_ms"};
    int missing = -1;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
      if (!json_object_get(j, keys[k]))
        missing = (int)k;
    json_t *lat = json_object_get(j, "latency_ms");
    static const char *const lkeys[] = {"p50", "p90", "p99", "p999", "max", "mean"};
    int lat_ok = json_is_object(lat);
    double prev = 0;
    for (size_t k = 0; lat_ok && k < 5; k++) {
      json_t *v = json_object_get(lat, lkeys[k]);
      lat_ok = json_is_number(v) && json_number_value(v) >= prev;
      prev = lat_ok ? json_number_value(v) : prev;
    }
    lat_ok = lat_ok && json_is_number(json_object_get(lat, "mean"));
    json_t *fbs = json_object_get(j, "failed_by_status");
    json_t *una = json_object_get(fbs, "UNAVAILABLE"), *ns = json_object_get(fbs, "NOT_SUCCESS");
    int ok = missing < 0 && lat_ok && strcmp(json_string_value(json_object_get(j, "run_id")), "r\"1") == 0 &&
             strcmp(json_string_value(json_object_get(j, "mode")), open ? "open" : "closed") == 0 &&
             (open ? json_number_value(json_object_get(j, "offered_rate")) == 2000
                   : json_is_null(json_object_get(j, "offered_rate"))) &&
             json_integer_value(json_object_get(j, "sent")) == 600 &&
             json_integer_value(json_object_get(j, "accepted")) == 500 &&
             json_integer_value(json_object_get(j, "failed")) == 100 && json_object_size(fbs) == 2 &&
             json_integer_value(json_object_get(una, "events")) == 50 &&
             json_integer_value(json_object_get(una, "calls")) == 1 &&
             json_integer_value(json_object_get(ns, "calls")) == 1 &&
             json_number_value(json_object_get(j, "events_per_sec")) == 2000 &&
             json_number_value(json_object_get(j, "elapsed_s")) == 0.25 &&
             json_integer_value(json_object_get(j, "late_calls")) == (open ? 3 : 0) &&
             json_number_value(json_object_get(lat, "max")) == 12 &&
             json_number_value(json_object_get(lat, "mean")) == 6.5 &&
             json_integer_value(json_object_get(json_object_get(j, "mix"), "WidgetViewEvent")) == 30;
    json_decref(j);
    PS_CHECK_MSG(ok, "open=%d: missing key %d, latency ok %d", open, missing, lat_ok);
  }
  /* The text report names the same numbers. */
  fill_report(&r, &mix, 1);
  ps_buf t = PS_BUF_INIT;
  ps_bench_report_text(&r, &t);
  int ok = strstr(t.data, "sent       600 events in 12 calls\n") &&
           strstr(t.data, "accepted   500 events (10 calls)\n") &&
           strstr(t.data, "failed     100 events (2 calls)\n") && strstr(t.data, "UNAVAILABLE") &&
           strstr(t.data, "NOT_SUCCESS") && strstr(t.data, "offered 2000 events/s, achieved 2000 events/s") &&
           strstr(t.data, "3 of 12 calls started late") && strstr(t.data, "p99.9");
  if (!ok)
    fprintf(stderr, "%s", t.data);
  ps_buf_free(&t);
  PS_CHECK(ok);
}

/* ------------------------------------------------------- a real server */

#ifndef PS__TSAN

/* A port that was free a moment ago and is closed now. */
static void closed_port(char *target, size_t n) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &al) != 0)
    abort();
  snprintf(target, n, "127.0.0.1:%d", ntohs(a.sin_port));
  close(fd);
}

typedef struct {
  int64_t latency_ns;
  int outcome;
} one_result;

static void on_one(void *ctx, const ps_client_result *r) {
  one_result *o = ctx;
  o->latency_ns = r->latency_ns;
  o->outcome = r->outcome;
}

PS_TEST(latency_counts_from_the_due_time) {
  char target[64];
  closed_port(target, sizeof target);
  one_result res = {0, -1};
  ps_client *c = NULL;
  char err[128];
  ps_client_options o = {target, 1, 4, 5000, NULL};
  PS_CHECK_INT_EQ(ps_client_create(&o, on_one, &res, &c, err, sizeof err), 0);
  static const uint8_t empty[1];
  int64_t due = ps_now_ns() - 80 * MS; /* it was due 80 ms ago: waited for room, say */
  PS_CHECK_INT_EQ(ps_client_start_at(c, empty, 0, 0, NULL, due), 0);
  while (ps_client_in_flight(c))
    ps_client_poll(c, SEC);
  const ps_client_stats *st = ps_client_stats_get(c);
  int64_t min = st->latency.min_ns, first = st->first_start_ns;
  ps_client_destroy(c);
  PS_CHECK_INT_EQ(res.outcome, GRPC_STATUS_UNAVAILABLE);
  PS_CHECK_MSG(res.latency_ns >= 80 * MS && res.latency_ns < 5 * SEC, "latency %lld ns",
               (long long)res.latency_ns);
  PS_CHECK(min >= 80 * MS && first == due);
}

typedef struct {
  ps_queue *q;
  ps_dispatch *d;
  ps_grpc_server *srv;
  pthread_t drainer;
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

static int server_start(server *s) {
  memset(s, 0, sizeof *s);
  s->q = ps_queue_create(1000);
  s->d = ps_dispatch_create(s->q, 5000, 0);
  ps_grpc_server_options o = {"127.0.0.1", 0, 4 << 20, 2, 0};
  if (ps_grpc_server_start(&o, s->d, &s->srv) != 0)
    return -1;
  ps_grpc_server_set_serving(s->srv, 1);
  snprintf(s->target, sizeof s->target, "127.0.0.1:%d", ps_grpc_server_port(s->srv));
  if (pthread_create(&s->drainer, NULL, drain_main, s) != 0)
    abort();
  return 0;
}

static void server_stop(server *s) {
  ps_grpc_server_shutdown(s->srv, ps_now_ns() + 10 * SEC);
  ps_queue_close(s->q);
  pthread_join(s->drainer, NULL);
  ps_dispatch_destroy(s->d);
  ps_queue_destroy(s->q);
}

static void bench_options(ps_bench_options *o, const char *target) {
  char err[256];
  memset(o, 0, sizeof *o);
  o->addr = target;
  o->connections = 2;
  o->concurrency = 8;
  o->batch = 50;
  o->timeout_ms = 10000;
  o->run_id = "ut";
  o->quiet = 1;
  ps_bench_mix_parse(PS_BENCH_DEFAULT_MIX, &o->mix, err, sizeof err);
}

PS_TEST(closed_loop_count_against_a_server) {
  server s;
  PS_CHECK_INT_EQ(server_start(&s), 0);
  ps_bench_options o;
  bench_options(&o, s.target);
  o.events = 1030; /* 20 calls of 50 and one of 30 */
  char *ids = NULL;
  size_t ids_len = 0;
  FILE *idf = open_memstream(&ids, &ids_len);
  ps_bench_timeline tl;
  ps_bench_timeline_init(&tl);
  ps_bench_outputs out = {idf, &tl};
  ps_bench_report rep;
  char err[256];
  int rc = ps_bench_run(&o, &out, &rep, err, sizeof err);
  fclose(idf);
  server_stop(&s);
  PS_CHECK_MSG(rc == 0, "rc %d: %s", rc, err);
  PS_CHECK(rep.reached && !rep.open && rep.st.calls_started == 21 && rep.st.events_started == 1030);
  PS_CHECK_MSG(rep.st.events[0] == 1030 && rep.st.calls[0] == 21, "accepted %llu events",
               (unsigned long long)rep.st.events[0]);
  PS_CHECK(rep.elapsed_s > 0 && rep.st.latency.count == 21 && rep.late_calls == 0);
  /* --ids: every id once, 1 .. 1030. */
  char *seen = calloc(1031, 1);
  size_t lines = 0;
  int bad = 0;
  for (char *save, *line = strtok_r(ids, "\n", &save); line; line = strtok_r(NULL, "\n", &save), lines++) {
    unsigned long long n;
    char tail;
    if (strlen(line) != 15 || sscanf(line, "ut-%12llu%c", &n, &tail) != 1 || n < 1 || n > 1030 || seen[n]++)
      bad++;
  }
  free(seen);
  free(ids);
  uint64_t tl_calls = 0, tl_events = 0;
  for (size_t i = 0; i < tl.n; i++) {
    tl_calls += tl.rows[i].calls;
    tl_events += tl.rows[i].accepted_events;
  }
  ps_bench_timeline_free(&tl);
  PS_CHECK_MSG(lines == 1030 && bad == 0, "%zu id lines, %d bad", lines, bad);
  PS_CHECK(tl_calls == 21 && tl_events == 1030);
}

PS_TEST(open_loop_rate_against_a_server) {
  server s;
  PS_CHECK_INT_EQ(server_start(&s), 0);
  ps_bench_options o;
  bench_options(&o, s.target);
  o.rate = 4000; /* a call of 50 every 12.5 ms, for 0.5 s: 40 calls */
  o.duration_s = 0.5;
  ps_bench_outputs out = {NULL, NULL};
  ps_bench_report rep;
  char err[256];
  int rc = ps_bench_run(&o, &out, &rep, err, sizeof err);
  server_stop(&s);
  PS_CHECK_MSG(rc == 0, "rc %d: %s", rc, err);
  PS_CHECK(rep.open && rep.reached);
  PS_CHECK_INT_EQ(rep.st.calls_started, 40);
  PS_CHECK_INT_EQ(rep.st.events[0], 2000);
  double rate = (double)rep.st.events[0] / rep.elapsed_s;
  PS_CHECK_MSG(rep.elapsed_s >= 0.4875 && rate > 4000 * 0.9 && rate < 4000 * 1.1, "%.0f events/s over %.3f s",
               rate, rep.elapsed_s);
  /* Late starts (more than 1 ms after due) are the client falling behind: a few on a busy machine. */
  PS_CHECK_MSG(rep.late_calls <= 20, "%llu late calls", (unsigned long long)rep.late_calls);
}

PS_TEST(unreachable_server_is_reported) {
  char target[64];
  closed_port(target, sizeof target);
  ps_bench_options o;
  bench_options(&o, target);
  o.events = 500;
  ps_bench_outputs out = {NULL, NULL};
  ps_bench_report rep;
  char err[256];
  PS_CHECK_INT_EQ(ps_bench_run(&o, &out, &rep, err, sizeof err), 0);
  PS_CHECK(!rep.reached && rep.st.events[0] == 0 && rep.st.events_started == 500);
  PS_CHECK_INT_EQ(rep.st.calls[GRPC_STATUS_UNAVAILABLE], 10);
}

#define PS__SERVER_CASES                                                                                     \
  , PS_CASE(latency_counts_from_the_due_time), PS_CASE(closed_loop_count_against_a_server),                  \
      PS_CASE(open_loop_rate_against_a_server), PS_CASE(unreachable_server_is_reported)
#else
#define PS__SERVER_CASES
#endif

PS_TEST_MAIN(PS_CASE(arguments_defaults_and_values), PS_CASE(arguments_errors), PS_CASE(mix_parse),
             PS_CASE(mix_counts_are_proportional_and_add_up), PS_CASE(counter_digits),
             PS_CASE(find_ids_walks_the_wire_format), PS_CASE(pool_ids_unique_lengths_fixed_types_mixed),
             PS_CASE(generator_is_fast), PS_CASE(open_loop_schedule_arithmetic),
             PS_CASE(closed_loop_schedule), PS_CASE(timeline_rows_per_second), PS_CASE(cdf_is_cumulative),
             PS_CASE(json_report_has_every_key) PS__SERVER_CASES)
