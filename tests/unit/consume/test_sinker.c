/*
 * The buffered sinker's logic against an in-process fake sink: when it
 * inserts (size, time, stop), what each consumer is told afterwards (stored,
 * or refused with the row and reason), that a failing sink keeps its batch and
 * that the buffer's bound then holds the pushers back, and that rows of a
 * reconnected consumer's old generation are not inserted.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consume/ps_sinker.h"
#include "core/ps_error.h"
#include "ps_test.h"
#include "queue/ps_queue.h"
#include "sink/ps_sink.h"

static const ps_column cols[] = {{"id", PS_COL_STRING}, {"n", PS_COL_INT64}};
static const ps_table table = {"t", 2, cols, ""};

/* The fake: stores "id" strings; refuses rows whose id starts with "bad"; answers RETRY while fail > 0. */
typedef struct {
  ps_sink base;
  pthread_mutex_t mu;
  char pending[256][32];
  size_t npending;
  char stored[1024][32];
  size_t nstored;
  int inserts;
  _Atomic int fail;
  size_t rej_rows[256];
  const char *rej_reasons[256];
  size_t nrej;
} fake_sink;

static int f_open(ps_sink *s, char *e, size_t n) { return 0; }
static void f_write(ps_sink *bs, const ps_value *row) {
  fake_sink *s = (fake_sink *)bs;
  snprintf(s->pending[s->npending++], 32, "%.*s", (int)row[0].len, row[0].s);
  s->nrej = 0;
}
static size_t f_pending(ps_sink *bs) { return ((fake_sink *)bs)->npending; }
static ps_sink_result f_flush(ps_sink *bs, char *err, size_t errlen) {
  fake_sink *s = (fake_sink *)bs;
  if (atomic_load(&s->fail) > 0) {
    atomic_fetch_sub(&s->fail, 1);
    snprintf(err, errlen, "down");
    return PS_SINK_RETRY;
  }
  pthread_mutex_lock(&s->mu);
  s->nrej = 0;
  for (size_t i = 0; i < s->npending; i++) {
    if (strncmp(s->pending[i], "bad", 3) == 0) {
      s->rej_rows[s->nrej] = i;
      s->rej_reasons[s->nrej++] = "HTTP 400: no";
    } else {
      snprintf(s->stored[s->nstored++], 32, "%s", s->pending[i]);
    }
  }
  s->inserts++;
  s->npending = 0;
  pthread_mutex_unlock(&s->mu);
  return s->nrej ? PS_SINK_DROP : PS_SINK_OK;
}
static size_t f_rejected(ps_sink *bs, const size_t **rows, const char *const **reasons) {
  fake_sink *s = (fake_sink *)bs;
  *rows = s->rej_rows;
  *reasons = s->rej_reasons;
  return s->nrej;
}
static void f_discard(ps_sink *bs) { ((fake_sink *)bs)->npending = 0; }
static void f_destroy(ps_sink *bs) {} /* the test owns it */
static const ps_sink_ops fake_ops = {"fake", f_open, f_write, f_pending, f_flush, f_rejected, f_discard, f_destroy};

static void fake_init(fake_sink *s) {
  memset(s, 0, sizeof *s);
  s->base.ops = &fake_ops;
  s->base.table = &table;
  pthread_mutex_init(&s->mu, NULL);
}

static int fake_stored(fake_sink *s) {
  pthread_mutex_lock(&s->mu);
  int n = (int)s->nstored;
  pthread_mutex_unlock(&s->mu);
  return n;
}

static void msleep(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* Pushes a message of the given row ids as (consumer, gen, tag). */
static int push(ps_sinker *sk, ps_sink *stage, int consumer, uint64_t gen, uint64_t tag, const char *const *ids,
                size_t n) {
  for (size_t i = 0; i < n; i++) {
    ps_value v[2] = {{.s = ids[i], .len = strlen(ids[i])}, {.i = (int64_t)i}};
    ps_sink_write(stage, v);
  }
  return ps_sinker_push(sk, consumer, gen, tag, stage, NULL);
}

/* Waits up to ms for n completions of consumer, with ps_sinker_wait; returns how many came. */
static size_t take(ps_sinker *sk, int consumer, ps_sinker_done *out, size_t n, int ms) {
  int64_t until = ps_now_ns() + (int64_t)ms * 1000000;
  size_t got = ps_sinker_take(sk, consumer, out, n);
  for (int64_t left; got < n && (left = until - ps_now_ns()) > 0;) {
    ps_sinker_wait(sk, consumer, (int)(left / 1000000) + 1);
    got += ps_sinker_take(sk, consumer, out + got, n - got);
  }
  return got;
}

static ps_sinker_options opts(int capacity, int flush_rows, int flush_ms) {
  ps_sinker_options o = {"q", 2, capacity, flush_rows, flush_ms, NULL, NULL, NULL, NULL, NULL, NULL, 0};
  return o;
}

PS_TEST(inserts_at_flush_rows_not_before) {
  fake_sink fs;
  fake_init(&fs);
  ps_sinker_options o = opts(100, 4, 60000);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st0 = ps_sinker_stage(sk), *st1 = ps_sinker_stage(sk);
  const char *a[] = {"a1", "a2"}, *b[] = {"b1"}, *c[] = {"c1"};
  PS_CHECK_INT_EQ(push(sk, st0, 0, 0, 1, a, 2), 0);
  PS_CHECK_INT_EQ(push(sk, st1, 1, 0, 1, b, 1), 0);
  ps_sinker_done d[8];
  PS_CHECK_INT_EQ(take(sk, 0, d, 1, 200), 0); /* 3 rows < 4: nothing yet */
  PS_CHECK_INT_EQ(fake_stored(&fs), 0);
  PS_CHECK_INT_EQ(ps_sinker_buffered(sk), 3);
  PS_CHECK_INT_EQ(push(sk, st0, 0, 0, 2, c, 1), 0); /* 4 rows: one insert of all, from both consumers */
  PS_CHECK_INT_EQ(take(sk, 0, d, 2, 2000), 2);
  PS_CHECK_INT_EQ(d[0].tag, 1);
  PS_CHECK_INT_EQ(d[1].tag, 2);
  PS_CHECK(!d[0].rejected && !d[1].rejected);
  PS_CHECK_INT_EQ(take(sk, 1, d, 1, 2000), 1);
  PS_CHECK_INT_EQ(d[0].tag, 1);
  PS_CHECK_INT_EQ(fake_stored(&fs), 4);
  PS_CHECK_INT_EQ(fs.inserts, 1);
  ps_sink_destroy(st0);
  ps_sink_destroy(st1);
  ps_sinker_stop(sk, 0);
}

PS_TEST(inserts_when_the_oldest_row_is_flush_ms_old) {
  fake_sink fs;
  fake_init(&fs);
  ps_sinker_options o = opts(100, 1000, 300);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st = ps_sinker_stage(sk);
  const char *a[] = {"a1"};
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(push(sk, st, 0, 0, 7, a, 1), 0);
  ps_sinker_done d[2];
  PS_CHECK_INT_EQ(take(sk, 0, d, 1, 3000), 1);
  int64_t ms = (ps_now_ns() - t0) / 1000000;
  PS_CHECK_MSG(ms >= 290, "inserted after %lld ms, flush_ms is 300", (long long)ms);
  PS_CHECK_INT_EQ(d[0].tag, 7);
  ps_sink_destroy(st);
  ps_sinker_stop(sk, 0);
}

PS_TEST(hurry_inserts_at_once_and_stop_drops_what_was_never_sent) {
  fake_sink fs;
  fake_init(&fs);
  ps_sinker_options o = opts(100, 1000, 600000);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st = ps_sinker_stage(sk);
  const char *a[] = {"a1", "a2"};
  PS_CHECK_INT_EQ(push(sk, st, 0, 0, 1, a, 2), 0);
  ps_sinker_hurry(sk, ps_now_ns() + 5000000000LL);
  ps_sinker_done d[2];
  PS_CHECK_INT_EQ(take(sk, 0, d, 1, 2000), 1);
  PS_CHECK_INT_EQ(fake_stored(&fs), 2);
  ps_sink_destroy(st);
  ps_sinker_stop(sk, 0);
}

/* Stopping with a sink that keeps failing: the insert is given up at the deadline, and its messages get no
   completion (they stay unacknowledged and return to the queue); the sinker does not retry past it. */
PS_TEST(hurry_gives_up_a_failing_insert_at_the_deadline_without_completions) {
  fake_sink fs;
  fake_init(&fs);
  atomic_store(&fs.fail, 1000000);
  ps_sinker_options o = opts(100, 1000, 600000);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st = ps_sinker_stage(sk);
  const char *a[] = {"a1", "a2"};
  PS_CHECK_INT_EQ(push(sk, st, 0, 0, 1, a, 2), 0);
  int64_t t0 = ps_now_ns();
  ps_sinker_hurry(sk, t0 + 300000000LL);
  ps_sinker_done d[2];
  PS_CHECK_INT_EQ(take(sk, 0, d, 1, 1500), 0);
  int left = atomic_load(&fs.fail);
  PS_CHECK_MSG(left < 1000000, "the insert was not even tried");
  msleep(300);
  PS_CHECK_INT_EQ(atomic_load(&fs.fail), left); /* no retry after the deadline */
  PS_CHECK_INT_EQ(fake_stored(&fs), 0);
  ps_sink_destroy(st);
  ps_sinker_stop(sk, 0);
  PS_CHECK(ps_now_ns() - t0 < 5000000000LL);
}

/* The number of lines of log that contain both a and b. */
static int log_lines_with(const char *log, const char *a, const char *b) {
  int n = 0;
  for (const char *line = log; *line;) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    char one[1024];
    snprintf(one, sizeof one, "%.*s", (int)len, line);
    n += strstr(one, a) && strstr(one, b);
    line += len + (nl != NULL);
  }
  return n;
}

/*
 * Two buffered queues whose inserts fail at the same time each say so once:
 * a sinker's retries within 5 s are one warning, and one queue's warning
 * does not silence the other's.
 */
PS_TEST(each_sinker_warns_of_its_own_failing_inserts_once_per_interval) {
  fake_sink fa, fb;
  fake_init(&fa);
  fake_init(&fb);
  atomic_store(&fa.fail, 3);
  atomic_store(&fb.fail, 3);
  ps_sinker_options oa = opts(100, 1, 60000), ob = opts(100, 1, 60000);
  oa.name = "queue_a";
  ob.name = "queue_b";
  char log[8192] = "";
  int saved = ps_test_capture_stderr_begin();
  ps_sinker *ka = ps_sinker_start(&oa, &fa.base), *kb = ps_sinker_start(&ob, &fb.base);
  ps_sink *sa = ps_sinker_stage(ka), *sb = ps_sinker_stage(kb);
  const char *a[] = {"a1"}, *b[] = {"b1"};
  int pa = push(ka, sa, 0, 0, 1, a, 1), pb = push(kb, sb, 0, 0, 1, b, 1);
  ps_sinker_done d[2];
  size_t ta = take(ka, 0, d, 1, 10000), tb = take(kb, 0, d + 1, 1, 10000);
  ps_sink_destroy(sa);
  ps_sink_destroy(sb);
  ps_sinker_stop(ka, 0);
  ps_sinker_stop(kb, 0);
  ps_test_capture_stderr_end(saved, log, sizeof log);
  fputs(log, stderr);
  PS_CHECK_INT_EQ(pa, 0);
  PS_CHECK_INT_EQ(pb, 0);
  PS_CHECK_INT_EQ(ta, 1);
  PS_CHECK_INT_EQ(tb, 1);
  PS_CHECK_INT_EQ(fake_stored(&fa), 1);
  PS_CHECK_INT_EQ(fake_stored(&fb), 1);
  PS_CHECK_INT_EQ(atomic_load(&fa.fail), 0); /* each insert failed three times before it went in */
  PS_CHECK_INT_EQ(atomic_load(&fb.fail), 0);
  PS_CHECK_MSG(log_lines_with(log, "insert failed; retrying", "queue_a") == 1,
               "one warning for queue_a's three failed inserts; the log was:\n%s", log);
  PS_CHECK_MSG(log_lines_with(log, "insert failed; retrying", "queue_b") == 1,
               "one warning for queue_b's three failed inserts; the log was:\n%s", log);
}

PS_TEST(refused_rows_are_reported_to_their_message) {
  fake_sink fs;
  fake_init(&fs);
  ps_sinker_options o = opts(100, 6, 60000);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st0 = ps_sinker_stage(sk), *st1 = ps_sinker_stage(sk);
  const char *m1[] = {"ok1", "ok2"}, *m2[] = {"ok3", "bad4"}, *m3[] = {"bad5", "ok6"};
  PS_CHECK_INT_EQ(push(sk, st0, 0, 0, 1, m1, 2), 0);
  PS_CHECK_INT_EQ(push(sk, st1, 1, 0, 9, m2, 2), 0);
  PS_CHECK_INT_EQ(push(sk, st0, 0, 0, 2, m3, 2), 0);
  ps_sinker_done d[4];
  PS_CHECK_INT_EQ(take(sk, 0, d, 2, 2000), 2);
  PS_CHECK(d[0].tag == 1 && !d[0].rejected);
  PS_CHECK(d[1].tag == 2 && d[1].rejected && d[1].row == 0);
  PS_CHECK_STR_EQ(d[1].reason, "HTTP 400: no");
  PS_CHECK_INT_EQ(take(sk, 1, d, 1, 2000), 1);
  PS_CHECK(d[0].tag == 9 && d[0].rejected && d[0].row == 1);
  PS_CHECK_INT_EQ(fake_stored(&fs), 4);
  ps_sink_destroy(st0);
  ps_sink_destroy(st1);
  ps_sinker_stop(sk, 0);
}

typedef struct {
  ps_sinker *sk;
  ps_sink *stage;
  _Atomic int done;
} pusher_arg;

static void *pusher(void *arg) {
  pusher_arg *a = arg;
  const char *m[] = {"late1", "late2", "late3"};
  push(a->sk, a->stage, 1, 0, 5, m, 3);
  atomic_store(&a->done, 1);
  return NULL;
}

PS_TEST(a_failing_sink_keeps_its_batch_and_the_bound_holds_pushers_back) {
  fake_sink fs;
  fake_init(&fs);
  atomic_store(&fs.fail, 3); /* three RETRY answers, then it works */
  ps_sinker_options o = opts(4, 2, 60000);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st0 = ps_sinker_stage(sk), *st1 = ps_sinker_stage(sk);
  const char *m1[] = {"r1", "r2"}, *m2[] = {"r3", "r4"};
  PS_CHECK_INT_EQ(push(sk, st0, 0, 0, 1, m1, 2), 0); /* taken by the sinker, which now retries */
  msleep(50);
  PS_CHECK_INT_EQ(push(sk, st0, 0, 0, 2, m2, 2), 0); /* fills the buffer's room beside nothing */
  /* The buffer holds 2 of 4 (m2, or m2 is in a second batch): 3 more rows do not fit until it drains. */
  pusher_arg pa = {sk, st1, 0};
  pthread_t t;
  PS_CHECK(pthread_create(&t, NULL, pusher, &pa) == 0);
  msleep(100);
  int blocked = !atomic_load(&pa.done);
  ps_sinker_done d[4];
  size_t got = take(sk, 0, d, 2, 10000);
  pthread_join(t, NULL);
  PS_CHECK_MSG(blocked, "a push beyond the bound did not wait while the sink failed");
  PS_CHECK_INT_EQ(got, 2);
  PS_CHECK(d[0].tag == 1 && d[1].tag == 2 && !d[0].rejected && !d[1].rejected);
  PS_CHECK_INT_EQ(take(sk, 1, d, 1, 10000), 1);
  PS_CHECK_INT_EQ(fake_stored(&fs), 7);
  ps_sink_destroy(st0);
  ps_sink_destroy(st1);
  ps_sinker_stop(sk, 0);
}

PS_TEST(rows_of_an_old_generation_are_not_inserted) {
  fake_sink fs;
  fake_init(&fs);
  ps_sinker_options o = opts(100, 3, 60000);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st = ps_sinker_stage(sk);
  const char *old[] = {"old1", "old2"}, *fresh[] = {"new1"};
  PS_CHECK_INT_EQ(push(sk, st, 0, 0, 1, old, 2), 0);
  ps_sinker_reset(sk, 0, 1); /* reconnected: tag 1 of generation 0 was requeued */
  PS_CHECK_INT_EQ(push(sk, st, 0, 1, 1, fresh, 1), 0);
  ps_sinker_done d[4];
  PS_CHECK_INT_EQ(take(sk, 0, d, 2, 1000), 1);
  PS_CHECK(d[0].gen == 1 && d[0].tag == 1 && !d[0].rejected);
  PS_CHECK_INT_EQ(fake_stored(&fs), 1);
  PS_CHECK_STR_EQ(fs.stored[0], "new1");
  ps_sink_destroy(st);
  ps_sinker_stop(sk, 0);
}

PS_TEST(a_message_larger_than_the_buffer_goes_in_alone) {
  fake_sink fs;
  fake_init(&fs);
  ps_sinker_options o = opts(2, 2, 60000);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st = ps_sinker_stage(sk);
  const char *big[] = {"b1", "b2", "b3", "b4", "b5"};
  PS_CHECK_INT_EQ(push(sk, st, 0, 0, 1, big, 5), 0);
  ps_sinker_done d[2];
  PS_CHECK_INT_EQ(take(sk, 0, d, 1, 2000), 1);
  PS_CHECK_INT_EQ(fake_stored(&fs), 5);
  ps_sink_destroy(st);
  ps_sinker_stop(sk, 0);
}

/* With window 2, a consumer's second message in the buffer fills its prefetch window: the broker would send it
   nothing more, so the sinker inserts then, far below flush_rows and long before flush_ms. One message of the
   other consumer does not; nor does a consumer's message left from before it reconnected. */
PS_TEST(inserts_when_a_consumers_prefetch_window_is_in_the_buffer) {
  fake_sink fs;
  fake_init(&fs);
  ps_sinker_options o = opts(100, 1000, 600000);
  o.window = 2;
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st0 = ps_sinker_stage(sk), *st1 = ps_sinker_stage(sk);
  const char *a[] = {"a1"}, *b[] = {"b1"}, *c[] = {"c1"}, *e[] = {"e1"};
  ps_sinker_done d[4];
  PS_CHECK_INT_EQ(push(sk, st0, 0, 0, 1, a, 1), 0);
  ps_sinker_reset(sk, 0, 1); /* reconnected: its window starts empty again */
  PS_CHECK_INT_EQ(push(sk, st0, 0, 1, 1, b, 1), 0);
  PS_CHECK_INT_EQ(push(sk, st1, 1, 0, 1, c, 1), 0);
  PS_CHECK_INT_EQ(take(sk, 0, d, 1, 300), 0); /* one message of each consumer (and an old one): no insert */
  PS_CHECK_INT_EQ(fs.inserts, 0);
  PS_CHECK_INT_EQ(push(sk, st0, 0, 1, 2, e, 1), 0); /* consumer 0's window is full */
  PS_CHECK_INT_EQ(take(sk, 0, d, 2, 2000), 2);
  PS_CHECK(d[0].gen == 1 && d[0].tag == 1 && d[1].tag == 2);
  PS_CHECK_INT_EQ(take(sk, 1, d, 1, 2000), 1);
  PS_CHECK_INT_EQ(fs.inserts, 1);
  PS_CHECK_INT_EQ(fake_stored(&fs), 3); /* b1, c1, e1: a1 was of the old generation */
  /* The insert emptied the windows: one more message of consumer 1 waits again. */
  PS_CHECK_INT_EQ(push(sk, st1, 1, 0, 2, a, 1), 0);
  PS_CHECK_INT_EQ(take(sk, 1, d, 1, 300), 0);
  PS_CHECK_INT_EQ(fs.inserts, 1);
  ps_sink_destroy(st0);
  ps_sink_destroy(st1);
  ps_sinker_stop(sk, 0);
}

/* A consumer holding max_held_bytes asks for the insert at once: far below flush_rows, long before flush_ms.
   Asked while nothing is buffered, it applies to what comes next. */
PS_TEST(insert_now_inserts_the_buffer_at_once) {
  fake_sink fs;
  fake_init(&fs);
  ps_sinker_options o = opts(100, 1000, 600000);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st = ps_sinker_stage(sk);
  const char *a[] = {"a1", "a2"}, *b[] = {"b1"};
  ps_sinker_done d[4];
  PS_CHECK_INT_EQ(push(sk, st, 0, 0, 1, a, 2), 0);
  PS_CHECK_INT_EQ(take(sk, 0, d, 1, 300), 0); /* 2 rows of 1000, 10 minutes to go: nothing */
  PS_CHECK_INT_EQ(fs.inserts, 0);
  ps_sinker_insert_now(sk);
  PS_CHECK_INT_EQ(take(sk, 0, d, 1, 2000), 1);
  PS_CHECK(d[0].tag == 1 && !d[0].rejected);
  PS_CHECK_INT_EQ(fs.inserts, 1);
  PS_CHECK_INT_EQ(fake_stored(&fs), 2);
  ps_sinker_insert_now(sk); /* an empty buffer: nothing to insert, the next push goes at once */
  PS_CHECK_INT_EQ(push(sk, st, 0, 0, 2, b, 1), 0);
  PS_CHECK_INT_EQ(take(sk, 0, d, 1, 2000), 1);
  PS_CHECK_INT_EQ(d[0].tag, 2);
  PS_CHECK_INT_EQ(fs.inserts, 2);
  ps_sink_destroy(st);
  ps_sinker_stop(sk, 0);
}

/* A consumer that holds all it may waits for its completions: woken when they are posted, not by polling. */
PS_TEST(wait_returns_when_a_completion_is_posted) {
  fake_sink fs;
  fake_init(&fs);
  ps_sinker_options o = opts(100, 1000, 600000);
  ps_sinker *sk = ps_sinker_start(&o, &fs.base);
  ps_sink *st = ps_sinker_stage(sk);
  const char *a[] = {"a1"};
  PS_CHECK_INT_EQ(push(sk, st, 0, 0, 1, a, 1), 0);
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(ps_sinker_wait(sk, 0, 150), 0); /* nothing inserted yet: waits its time out */
  PS_CHECK(ps_now_ns() - t0 >= 140 * 1000000LL);
  ps_sinker_insert_now(sk);
  t0 = ps_now_ns();
  PS_CHECK_INT_EQ(ps_sinker_wait(sk, 0, 20000), 1);
  PS_CHECK(ps_now_ns() - t0 < 10000 * 1000000LL); /* woken by the insert, long before the 20 s */
  PS_CHECK_INT_EQ(ps_sinker_wait(sk, 1, 0), 0);   /* the other consumer has none */
  ps_sinker_done d[2];
  PS_CHECK_INT_EQ(ps_sinker_take(sk, 0, d, 2), 1);
  PS_CHECK(d[0].tag == 1 && !d[0].rejected);
  ps_sink_destroy(st);
  ps_sinker_stop(sk, 0);
}

PS_TEST_MAIN(PS_CASE(inserts_at_flush_rows_not_before), PS_CASE(inserts_when_the_oldest_row_is_flush_ms_old),
             PS_CASE(hurry_inserts_at_once_and_stop_drops_what_was_never_sent),
             PS_CASE(hurry_gives_up_a_failing_insert_at_the_deadline_without_completions),
             PS_CASE(each_sinker_warns_of_its_own_failing_inserts_once_per_interval),
             PS_CASE(refused_rows_are_reported_to_their_message),
             PS_CASE(a_failing_sink_keeps_its_batch_and_the_bound_holds_pushers_back),
             PS_CASE(rows_of_an_old_generation_are_not_inserted),
             PS_CASE(a_message_larger_than_the_buffer_goes_in_alone),
             PS_CASE(inserts_when_a_consumers_prefetch_window_is_in_the_buffer),
             PS_CASE(insert_now_inserts_the_buffer_at_once),
             PS_CASE(wait_returns_when_a_completion_is_posted))
