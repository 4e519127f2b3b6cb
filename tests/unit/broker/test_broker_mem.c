/*
 * Unit tests of the in-process broker (ps_broker_mem), through the broker
 * interface only: routing (topic table, direct, fanout, unroutable), FIFO
 * deliveries and their fields, prefetch, ack/nack (multiple, requeue,
 * dead-lettering), close returning deliveries, bounded queues (wait, then
 * PS_EAGAIN; room after an ack), durability across destroy/create and across
 * a process that exits without cleaning up, metrics, and a multi-threaded
 * stress test that checks every message is acknowledged exactly once.
 */
#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker/ps_broker.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_metrics.h"
#include "ps_test.h"
#include "queue/ps_queue.h"

/* ---------------------------------------------------------------- helpers */

static int pub(ps_broker_conn *c, const char *exchange, const char *key, const char *id, int persistent) {
  ps_message m = {.exchange = exchange,
                  .routing_key = key,
                  .content_type = "text/plain",
                  .message_id = id,
                  .timestamp = 1700000000,
                  .persistent = persistent,
                  .body = id,
                  .len = id ? strlen(id) : 0};
  return ps_broker_publish(c, &m);
}

/* The body of d as a C string (bodies here are short text). */
static const char *body(const ps_delivery *d) {
  static _Thread_local char buf[256];
  snprintf(buf, sizeof buf, "%.*s", (int)d->len, (const char *)d->body);
  return buf;
}

/* How many messages a fresh consumer of queue finds (taking and acking them). */
static int drain(ps_broker *b, const char *queue) {
  ps_broker_conn *c;
  if (ps_broker_connect(b, &c) != 0 || ps_broker_consume(c, queue, 0, "t") != 0)
    return -1;
  int n = 0;
  ps_delivery d;
  while (ps_broker_next(c, &d, 0) == 0) {
    ps_broker_ack(c, d.tag, 0);
    n++;
  }
  ps_broker_close(c);
  return n;
}

static char *tmpdir(void) {
  static char dir[64];
  snprintf(dir, sizeof dir, "/tmp/ps-broker-mem-XXXXXX");
  if (!mkdtemp(dir))
    abort();
  return dir;
}

/* ---------------------------------------------------------------- routing */

/* 1 if a topic binding `pattern` takes routing key `key`, 0 if not, -1 on error. */
static int topic_routes(const char *pattern, const char *key) {
  ps_exchange_decl ex[] = {{"tx", "topic", 1}};
  ps_queue_decl qs[] = {{"q", 1, NULL, 0}};
  ps_binding_decl bs[] = {{"q", "tx", pattern}};
  ps_topology t = {ex, 1, qs, 1, bs, 1};
  ps_broker *b;
  char err[256];
  if (ps_broker_mem_create(&t, NULL, &b, err, sizeof err) != 0)
    return -1;
  ps_broker_conn *c;
  ps_broker_connect(b, &c);
  int rc = pub(c, "tx", key, "m", 0);
  ps_broker_close(c);
  int n = rc == 0 ? drain(b, "q") : -1;
  ps_broker_destroy(b);
  return n;
}

PS_TEST(topic_matching_table) {
  static const struct {
    const char *pattern, *key;
    int match;
  } rows[] = {
      {"#", "", 1},
      {"#", "a", 1},
      {"#", "a.b.c", 1},
      {"*", "", 0},
      {"*", "a", 1},
      {"*", "a.b", 0},
      {"a.*", "a.b", 1},
      {"a.*", "a", 0},
      {"a.*", "a.b.c", 0},
      {"a.#", "a", 1},
      {"a.#", "a.b.c", 1},
      {"a.#", "b.a", 0},
      {"#.a", "a", 1},
      {"#.a", "x.y.a", 1},
      {"#.a", "a.x", 0},
      {"a.#.b", "a.b", 1},
      {"a.#.b", "a.x.y.b", 1},
      {"a.#.b", "a.b.c", 0},
      {"a.#.b", "b", 0},
      {"a.#.b", "a.x.b.y", 0},
      {"a.*.#", "a", 0},
      {"a.*.#", "a.b.c.d", 1},
      {"#.*.#", "", 0},
      {"#.*.#", "a", 1},
      {"#.#", "", 1},
      {"a.#.#.b", "a.b", 1},
      {"*.*", ".", 1},
      {"*", ".", 0},
      {"a..b", "a..b", 1},
      {"a.*.b", "a..b", 1},
      {"a.b", "a..b", 0},
      {"", "", 1},
      {"", "a", 0},
      {"a.", "a", 0},
      {"a.", "a.", 1},
      {"a.*", "a.", 1},
      {".a", "a", 0},
      {".a", ".a", 1},
      {"ClickEvent", "ClickEvent", 1},
      {"ClickEvent", "clickevent", 0},
      {"ClickEvent", "ClickEvent.x", 0},
      {"a.b*", "a.bc", 0},
      {"a.b*", "a.b*", 1},
      {"a#", "a", 0},
      {"a#", "a#", 1},
      {"ab", "a", 0},
      {"a", "ab", 0},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    int got = topic_routes(rows[i].pattern, rows[i].key);
    PS_CHECK_MSG(got == rows[i].match, "pattern \"%s\" key \"%s\": routed %d, expected %d", rows[i].pattern,
                 rows[i].key, got, rows[i].match);
  }
  /* Long keys and many '#' stay correct and fast (no backtracking blow-up). */
  char key[256], pat[256];
  size_t n = 0;
  while (n + 2 < 254) {
    key[n++] = 'a';
    key[n++] = '.';
  }
  key[n++] = 'a';
  key[n] = '\0';
  n = 0;
  for (int i = 0; i < 40; i++) {
    pat[n++] = '#';
    pat[n++] = '.';
  }
  strcpy(pat + n, "b");
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(topic_routes(pat, key), 0);
  pat[n] = 'a';
  PS_CHECK_INT_EQ(topic_routes(pat, key), 1);
  PS_CHECK_MSG(ps_now_ns() - t0 < 2000000000LL, "topic matching took %lld ms",
               (long long)(ps_now_ns() - t0) / 1000000);
}

PS_TEST(direct_fanout_and_unroutable) {
  ps_exchange_decl ex[] = {{"rt.d", "direct", 1}, {"rt.f", "fanout", 1}, {"rt.t", "topic", 1}};
  ps_queue_decl qs[] = {{"q1", 0, NULL, 0}, {"q2", 0, NULL, 0}, {"q3", 0, NULL, 0}};
  ps_binding_decl bs[] = {{"q1", "rt.d", "k1"}, {"q2", "rt.d", "k2"}, {"q3", "rt.d", "k1"},
                          {"q1", "rt.f", "x"},  {"q2", "rt.f", "y"},  {"q3", "rt.t", "#"},
                          {"q3", "rt.t", "a"},  {"q1", "rt.d", "*"}};
  ps_topology t = {ex, 3, qs, 3, bs, 8};
  ps_broker *b;
  char err[256];
  PS_CHECK_INT_EQ(ps_broker_mem_create(&t, NULL, &b, err, sizeof err), 0);
  double before = ps_test_metric("penstock_embedded_unroutable_total{exchange=\"rt.d\"}");
  PS_CHECK(before >= 0);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(pub(c, "rt.d", "k1", "1", 0), 0);
  PS_CHECK_INT_EQ(drain(b, "q1"), 1);
  PS_CHECK_INT_EQ(drain(b, "q2"), 0);
  PS_CHECK_INT_EQ(drain(b, "q3"), 1);
  PS_CHECK_INT_EQ(pub(c, "rt.d", "k2", "2", 0), 0);
  PS_CHECK_INT_EQ(drain(b, "q1"), 0);
  PS_CHECK_INT_EQ(drain(b, "q2"), 1);
  /* direct: "*" is a literal key, and no prefix or pattern matching */
  PS_CHECK_INT_EQ(pub(c, "rt.d", "k", "3", 0), 0);
  PS_CHECK_INT_EQ(pub(c, "rt.d", "k1.x", "4", 0), 0);
  PS_CHECK_INT_EQ(drain(b, "q1") + drain(b, "q2") + drain(b, "q3"), 0);
  PS_CHECK(ps_test_metric("penstock_embedded_unroutable_total{exchange=\"rt.d\"}") == before + 2);
  PS_CHECK_INT_EQ(pub(c, "rt.d", "*", "5", 0), 0);
  PS_CHECK_INT_EQ(drain(b, "q1"), 1);
  /* fanout ignores keys */
  PS_CHECK_INT_EQ(pub(c, "rt.f", "anything", "6", 0), 0);
  PS_CHECK_INT_EQ(drain(b, "q1"), 1);
  PS_CHECK_INT_EQ(drain(b, "q2"), 1);
  PS_CHECK_INT_EQ(drain(b, "q3"), 0);
  /* two bindings of one queue that both match: delivered once */
  PS_CHECK_INT_EQ(pub(c, "rt.t", "a", "7", 0), 0);
  PS_CHECK_INT_EQ(drain(b, "q3"), 1);
  /* an exchange the topology does not declare */
  PS_CHECK_INT_EQ(pub(c, "nope", "k1", "8", 0), PS_EINVAL);
  PS_CHECK_INT_EQ(pub(c, "", "q1", "9", 0), PS_EINVAL);
  ps_broker_close(c);
  ps_broker_destroy(b);
}

/* ---------------------------------------------------------------- consuming */

static ps_exchange_decl one_ex[] = {{"x", "topic", 1}};
static ps_queue_decl one_q[] = {{"q", 1, NULL, 0}};
static ps_binding_decl one_b[] = {{"q", "x", "#"}};
static const ps_topology one = {one_ex, 1, one_q, 1, one_b, 1};

PS_TEST(fifo_with_fields_and_tags) {
  ps_broker *b;
  char err[256], id[32];
  PS_CHECK_INT_EQ(ps_broker_mem_create(&one, NULL, &b, err, sizeof err), 0);
  ps_broker_conn *p, *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &p), 0);
  for (int i = 0; i < 100; i++) {
    snprintf(id, sizeof id, "m%d", i);
    PS_CHECK_INT_EQ(pub(p, "x", i % 2 ? "Odd.Event" : "EvenEvent", id, 0), 0);
  }
  ps_message nothing = {.exchange = "x", .routing_key = "e"}; /* no properties, empty body */
  PS_CHECK_INT_EQ(ps_broker_publish(p, &nothing), 0);
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "q", 0, "t"), 0);
  ps_delivery d;
  for (int i = 0; i < 100; i++) {
    PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
    snprintf(id, sizeof id, "m%d", i);
    PS_CHECK_INT_EQ(d.tag, i + 1);
    PS_CHECK_STR_EQ(d.message_id, id);
    PS_CHECK_STR_EQ(body(&d), id);
    PS_CHECK_INT_EQ(d.routing_key_len, strlen(i % 2 ? "Odd.Event" : "EvenEvent"));
    PS_CHECK(memcmp(d.routing_key, i % 2 ? "Odd.Event" : "EvenEvent", d.routing_key_len) == 0);
    PS_CHECK_STR_EQ(d.content_type, "text/plain");
    PS_CHECK_INT_EQ(d.timestamp, 1700000000);
    PS_CHECK_INT_EQ(d.redelivered, 0);
    PS_CHECK_INT_EQ(d.delivery_count, 0);
    ps_broker_release(c, &d);
  }
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_STR_EQ(d.message_id, "");
  PS_CHECK_STR_EQ(d.content_type, "");
  PS_CHECK_INT_EQ(d.len, 0);
  PS_CHECK_INT_EQ(d.timestamp, 0);
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 50), PS_ETIMEDOUT);
  PS_CHECK(ps_now_ns() - t0 >= 50 * 1000000LL);
  PS_CHECK_INT_EQ(ps_broker_ack(c, 0, 1), 0); /* tag 0, multiple: everything */
  PS_CHECK_INT_EQ(ps_broker_ack(c, 1, 0), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_broker_ping(c), 0);
  ps_broker_close(c);
  ps_broker_close(p);
  PS_CHECK_INT_EQ(drain(b, "q"), 0);
  ps_broker_destroy(b);
}

PS_TEST(delivery_valid_until_release_even_after_ack) {
  ps_broker *b;
  char err[256];
  PS_CHECK_INT_EQ(ps_broker_mem_create(&one, NULL, &b, err, sizeof err), 0);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "q", 1, "t"), 0);
  PS_CHECK_INT_EQ(pub(c, "x", "key.one", "first", 0), 0);
  ps_delivery d;
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_INT_EQ(ps_broker_ack(c, d.tag, 0), 0);
  /* acked, so the queue let go of it: the delivery's fields are still ours (ASan would see otherwise) */
  PS_CHECK_INT_EQ(pub(c, "x", "key.two", "second", 0), 0);
  PS_CHECK_STR_EQ(body(&d), "first");
  PS_CHECK_STR_EQ(d.message_id, "first");
  PS_CHECK(d.routing_key_len == 7 && memcmp(d.routing_key, "key.one", 7) == 0);
  ps_broker_release(c, &d);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_STR_EQ(body(&d), "second");
  ps_broker_close(c); /* unreleased and unacked: close handles both */
  PS_CHECK_INT_EQ(drain(b, "q"), 1);
  ps_broker_destroy(b);
}

PS_TEST(prefetch_limits_unacked_per_connection) {
  ps_broker *b;
  char err[256], id[8];
  PS_CHECK_INT_EQ(ps_broker_mem_create(&one, NULL, &b, err, sizeof err), 0);
  ps_broker_conn *c, *c2;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "q", 3, "t"), 0);
  for (int i = 1; i <= 5; i++) {
    snprintf(id, sizeof id, "%d", i);
    PS_CHECK_INT_EQ(pub(c, "x", "k", id, 0), 0);
  }
  ps_delivery d;
  for (int i = 1; i <= 3; i++)
    PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 30), PS_ETIMEDOUT);
  PS_CHECK(ps_now_ns() - t0 >= 30 * 1000000LL);
  /* another connection is not limited by this one's window */
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c2), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c2, "q", 1, "t2"), 0);
  PS_CHECK_INT_EQ(ps_broker_next(c2, &d, 1000), 0);
  PS_CHECK_STR_EQ(body(&d), "4");
  PS_CHECK_INT_EQ(ps_broker_next(c2, &d, 0), PS_ETIMEDOUT);
  PS_CHECK_INT_EQ(ps_broker_ack(c, 1, 0), 0); /* one slot free */
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_STR_EQ(body(&d), "5");
  PS_CHECK_INT_EQ(d.tag, 4);
  ps_broker_close(c2);
  ps_broker_close(c);
  PS_CHECK_INT_EQ(drain(b, "q"), 4);
  ps_broker_destroy(b);
}

PS_TEST(ack_multiple_and_close_returns_the_rest_in_order) {
  ps_broker *b;
  char err[256], id[8];
  PS_CHECK_INT_EQ(ps_broker_mem_create(&one, NULL, &b, err, sizeof err), 0);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "q", 0, "t"), 0);
  for (int i = 1; i <= 9; i++) {
    snprintf(id, sizeof id, "%d", i);
    PS_CHECK_INT_EQ(pub(c, "x", "k", id, 0), 0);
  }
  ps_delivery d;
  for (int i = 1; i <= 8; i++)
    PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_INT_EQ(ps_broker_ack(c, 3, 1), 0); /* 1, 2, 3 */
  PS_CHECK_INT_EQ(ps_broker_ack(c, 3, 0), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_broker_ack(c, 6, 0), 0);         /* 6 alone */
  PS_CHECK_INT_EQ(ps_broker_ack(c, 2, 1), PS_EINVAL); /* nothing outstanding up to 2 */
  ps_broker_close(c); /* 4, 5, 7, 8 go back before 9, which was never delivered */
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "q", 0, "t"), 0);
  static const char *expect[] = {"4", "5", "7", "8", "9"};
  for (int i = 0; i < 5; i++) {
    PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
    PS_CHECK_STR_EQ(body(&d), expect[i]);
    PS_CHECK_INT_EQ(d.tag, i + 1); /* tags are per connection */
    PS_CHECK_INT_EQ(d.redelivered, i < 4);
    PS_CHECK_INT_EQ(d.delivery_count, i < 4);
  }
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), PS_ETIMEDOUT);
  PS_CHECK_INT_EQ(ps_broker_ack(c, 5, 1), 0);
  ps_broker_close(c);
  PS_CHECK_INT_EQ(drain(b, "q"), 0);
  ps_broker_destroy(b);
}

PS_TEST(nack_requeue_puts_back_at_head_redelivered) {
  ps_broker *b;
  char err[256], id[8];
  PS_CHECK_INT_EQ(ps_broker_mem_create(&one, NULL, &b, err, sizeof err), 0);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "q", 0, "t"), 0);
  for (int i = 1; i <= 4; i++) {
    snprintf(id, sizeof id, "%d", i);
    PS_CHECK_INT_EQ(pub(c, "x", "k", id, 0), 0);
  }
  ps_delivery d;
  for (int i = 1; i <= 3; i++)
    PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_INT_EQ(ps_broker_nack(c, 3, 1, 1), 0); /* 1, 2, 3 back, before 4 */
  static const char *expect[] = {"1", "2", "3", "4"};
  for (int i = 0; i < 4; i++) {
    PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
    PS_CHECK_STR_EQ(body(&d), expect[i]);
    PS_CHECK_INT_EQ(d.tag, 4 + i);
    PS_CHECK_INT_EQ(d.redelivered, i < 3);
    PS_CHECK_INT_EQ(d.delivery_count, i < 3);
  }
  PS_CHECK_INT_EQ(ps_broker_nack(c, 5, 0, 1), 0); /* "2" alone, again */
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_STR_EQ(body(&d), "2");
  PS_CHECK_INT_EQ(d.delivery_count, 2);
  PS_CHECK_INT_EQ(ps_broker_nack(c, 99, 0, 1), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_broker_ack(c, 0, 1), 0);
  ps_broker_close(c);
  PS_CHECK_INT_EQ(drain(b, "q"), 0);
  ps_broker_destroy(b);
}

/* work: dead-letters to dlx with key "work"; keyless: to dlx with the message's own key; plain: discards. */
static ps_broker_arg work_args[] = {{"x-dead-letter-exchange", "dlx", 0},
                                    {"x-dead-letter-routing-key", "work", 0}};
static ps_broker_arg keyless_args[] = {{"x-dead-letter-exchange", "dlx", 0}, {"x-queue-type", "quorum", 0}};
static ps_exchange_decl dl_ex[] = {{"ev", "topic", 1}, {"dlx", "direct", 1}};
static ps_queue_decl dl_q[] = {{"work", 1, work_args, 2},
                               {"keyless", 1, keyless_args, 2},
                               {"plain", 1, NULL, 0},
                               {"work.error", 1, NULL, 0},
                               {"by.key", 1, NULL, 0}};
static ps_binding_decl dl_b[] = {{"work", "ev", "w.#"},
                                 {"keyless", "ev", "k.#"},
                                 {"plain", "ev", "p.#"},
                                 {"work.error", "dlx", "work"},
                                 {"by.key", "dlx", "k.orig"}};
static const ps_topology dl = {dl_ex, 2, dl_q, 5, dl_b, 5};

PS_TEST(nack_without_requeue_dead_letters_or_discards) {
  ps_broker *b;
  char err[256];
  PS_CHECK_INT_EQ(ps_broker_mem_create(&dl, NULL, &b, err, sizeof err), 0);
  ps_broker_conn *p, *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &p), 0);
  PS_CHECK_INT_EQ(pub(p, "ev", "w.x", "w1", 1), 0);
  PS_CHECK_INT_EQ(pub(p, "ev", "w.y", "w2", 1), 0);
  PS_CHECK_INT_EQ(pub(p, "ev", "k.orig", "k1", 1), 0);
  PS_CHECK_INT_EQ(pub(p, "ev", "p.z", "p1", 1), 0);
  ps_delivery d;
  /* with x-dead-letter-routing-key: both (multiple) to work.error under "work", in order */
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "work", 0, "t"), 0);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_INT_EQ(ps_broker_nack(c, d.tag, 1, 0), 0);
  ps_broker_close(c);
  PS_CHECK_INT_EQ(drain(b, "work"), 0);
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "work.error", 0, "t"), 0);
  for (int i = 1; i <= 2; i++) {
    PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
    PS_CHECK(d.routing_key_len == 4 && memcmp(d.routing_key, "work", 4) == 0);
    PS_CHECK_STR_EQ(body(&d), i == 1 ? "w1" : "w2");
    PS_CHECK_STR_EQ(d.message_id, i == 1 ? "w1" : "w2");
    PS_CHECK_STR_EQ(d.content_type, "text/plain");
    PS_CHECK_INT_EQ(d.redelivered, 0);
  }
  PS_CHECK_INT_EQ(ps_broker_ack(c, 0, 1), 0);
  ps_broker_close(c);
  /* without it: the message's own routing key */
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "keyless", 0, "t"), 0);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_INT_EQ(ps_broker_nack(c, d.tag, 0, 0), 0);
  ps_broker_close(c);
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "by.key", 0, "t"), 0);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK(d.routing_key_len == 6 && memcmp(d.routing_key, "k.orig", 6) == 0);
  PS_CHECK_STR_EQ(body(&d), "k1");
  ps_broker_close(c);
  /* no dead-letter exchange: gone */
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "plain", 0, "t"), 0);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_INT_EQ(ps_broker_nack(c, d.tag, 0, 0), 0);
  ps_broker_close(c);
  PS_CHECK_INT_EQ(drain(b, "plain") + drain(b, "work.error") + drain(b, "keyless"), 0);
  PS_CHECK_INT_EQ(drain(b, "by.key"), 1);
  ps_broker_close(p);
  ps_broker_destroy(b);
}

/* ---------------------------------------------------------------- bounds */

/* f fills "big" (bound 3) before "small" (bound 2) in queue order: a refusal at "small" must give back
   the room it reserved in "big". h reaches "big" alone; g reaches "one" (bound 1, given as text). */
static ps_broker_arg max3[] = {{"x-max-length", NULL, 3}};
static ps_broker_arg max2[] = {{"x-max-length", NULL, 2}};
static ps_broker_arg max1[] = {{"x-max-length", "1", 0}};
static ps_exchange_decl bd_ex[] = {{"f", "fanout", 1}, {"g", "fanout", 1}, {"h", "fanout", 1}};
static ps_queue_decl bd_q[] = {{"big", 1, max3, 1}, {"small", 1, max2, 1}, {"one", 1, max1, 1}};
static ps_binding_decl bd_b[] = {{"big", "f", ""}, {"small", "f", ""}, {"one", "g", ""}, {"big", "h", ""}};
static const ps_topology bounded = {bd_ex, 3, bd_q, 3, bd_b, 4};

PS_TEST(full_queue_publish_waits_then_eagain_enqueuing_nowhere) {
  ps_broker *b;
  char err[256];
  ps_broker_mem_options opt = {.publish_wait_ms = 100};
  PS_CHECK_INT_EQ(ps_broker_mem_create(&bounded, &opt, &b, err, sizeof err), 0);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(pub(c, "f", "", "1", 0), 0);
  PS_CHECK_INT_EQ(pub(c, "f", "", "2", 0), 0);
  int64_t t0 = ps_now_ns();
  PS_CHECK_INT_EQ(pub(c, "f", "", "3", 0), PS_EAGAIN);
  int64_t waited = ps_now_ns() - t0;
  PS_CHECK_MSG(waited >= 100 * 1000000LL, "gave up after %lld ms, before publish_wait_ms",
               (long long)waited / 1000000);
  /* "big" had room but got nothing (all or nothing), and the room it reserved is free again */
  PS_CHECK_INT_EQ(pub(c, "h", "", "big only", 0), 0);
  ps_broker_close(c);
  PS_CHECK_INT_EQ(drain(b, "big"), 3);
  PS_CHECK_INT_EQ(drain(b, "small"), 2);
  /* a taken but unacknowledged message still counts against the bound */
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "small", 0, "t"), 0);
  PS_CHECK_INT_EQ(pub(c, "f", "", "4", 0), 0);
  PS_CHECK_INT_EQ(pub(c, "f", "", "5", 0), 0);
  ps_delivery d;
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0);
  PS_CHECK_INT_EQ(pub(c, "f", "", "6", 0), PS_EAGAIN);
  PS_CHECK_INT_EQ(ps_broker_ack(c, d.tag, 0), 0);
  PS_CHECK_INT_EQ(pub(c, "f", "", "6", 0), 0);
  ps_broker_close(c);
  ps_broker_destroy(b);
}

typedef struct {
  ps_broker *b;
  int rc;
  _Atomic int done;
} blocked_pub;

static void *publish_blocked(void *arg) {
  blocked_pub *a = arg;
  ps_broker_conn *c;
  ps_broker_connect(a->b, &c);
  a->rc = pub(c, "g", "", "second", 1);
  atomic_store(&a->done, 1);
  ps_broker_close(c);
  return NULL;
}

PS_TEST(full_queue_publish_succeeds_once_a_consumer_acks) {
  ps_broker *b;
  char err[256];
  ps_broker_mem_options opt = {.publish_wait_ms = 10000};
  PS_CHECK_INT_EQ(ps_broker_mem_create(&bounded, &opt, &b, err, sizeof err), 0);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "one", 0, "t"), 0);
  PS_CHECK_INT_EQ(pub(c, "g", "", "first", 1), 0);
  ps_delivery d;
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  blocked_pub a = {b, -1, 0};
  pthread_t t;
  PS_CHECK_INT_EQ(pthread_create(&t, NULL, publish_blocked, &a), 0);
  ps_test_sleep_ms(50);
  int early = atomic_load(&a.done);
  int64_t t0 = ps_now_ns();
  int ack = ps_broker_ack(c, d.tag, 0);
  pthread_join(t, NULL);
  int64_t after = ps_now_ns() - t0;
  PS_CHECK_MSG(!early, "publish to a full queue returned before the ack");
  PS_CHECK_INT_EQ(ack, 0);
  PS_CHECK_INT_EQ(a.rc, 0);
  PS_CHECK_MSG(after < 2000000000LL, "publisher woke %lld ms after the ack", (long long)after / 1000000);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 1000), 0);
  PS_CHECK_STR_EQ(body(&d), "second");
  ps_broker_close(c);
  ps_broker_destroy(b);
}

/* ---------------------------------------------------------------- durability */

static ps_exchange_decl du_ex[] = {{"ev", "fanout", 1}, {"dlx", "direct", 1}};
static ps_broker_arg du_args[] = {{"x-dead-letter-exchange", "dlx", 0},
                                  {"x-dead-letter-routing-key", "dq", 0}};
static ps_queue_decl du_q[] = {{"dq", 1, du_args, 2}, {"mq", 0, NULL, 0}, {"dq.error", 1, NULL, 0}};
static ps_binding_decl du_b[] = {{"dq", "ev", ""}, {"mq", "ev", ""}, {"dq.error", "dlx", "dq"}};
static const ps_topology durable = {du_ex, 2, du_q, 3, du_b, 3};

PS_TEST(durable_messages_survive_destroy_in_order_redelivered) {
  char *dir = tmpdir();
  ps_broker_mem_options opt = {.data_dir = dir};
  ps_broker *b;
  char err[256], id[8];
  PS_CHECK_MSG(ps_broker_mem_create(&durable, &opt, &b, err, sizeof err) == 0, "%s", err);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  for (int i = 1; i <= 5; i++) {
    snprintf(id, sizeof id, "m%d", i);
    PS_CHECK_INT_EQ(pub(c, "ev", "key", id, 1), 0);
  }
  PS_CHECK_INT_EQ(pub(c, "ev", "key", "transient", 0), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "dq", 0, "t"), 0);
  ps_delivery d;
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0); /* m1: acked */
  PS_CHECK_INT_EQ(ps_broker_ack(c, d.tag, 0), 0);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0); /* m2: returned once, then held */
  PS_CHECK_INT_EQ(ps_broker_nack(c, d.tag, 0, 1), 0);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0);
  PS_CHECK_STR_EQ(body(&d), "m2");
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0); /* m3: held */
  ps_broker_close(c);                           /* m2, m3 go back (m2 for the second time) */
  ps_broker_destroy(b);

  PS_CHECK_MSG(ps_broker_mem_create(&durable, &opt, &b, err, sizeof err) == 0, "%s", err);
  PS_CHECK_INT_EQ(drain(b, "mq"), 0); /* not durable */
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "dq", 0, "t"), 0);
  static const char *expect[] = {"m2", "m3", "m4", "m5"};
  static const int count[] = {2, 1, 0, 0};
  for (int i = 0; i < 4; i++) {
    PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0);
    PS_CHECK_STR_EQ(body(&d), expect[i]);
    PS_CHECK_STR_EQ(d.message_id, expect[i]);
    PS_CHECK_STR_EQ(d.content_type, "text/plain");
    PS_CHECK_INT_EQ(d.timestamp, 1700000000);
    PS_CHECK(d.routing_key_len == 3 && memcmp(d.routing_key, "key", 3) == 0);
    PS_CHECK_INT_EQ(d.redelivered, 1);
    PS_CHECK_INT_EQ(d.delivery_count, count[i]);
  }
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), PS_ETIMEDOUT); /* neither m1 (acked) nor the transient one */
  /* m2 dead-lettered (moved to dq.error), m3 acked; m4, m5 stay */
  PS_CHECK_INT_EQ(ps_broker_nack(c, 1, 0, 0), 0);
  PS_CHECK_INT_EQ(ps_broker_ack(c, 2, 0), 0);
  ps_broker_close(c);
  ps_broker_destroy(b);

  PS_CHECK_MSG(ps_broker_mem_create(&durable, &opt, &b, err, sizeof err) == 0, "%s", err);
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "dq.error", 0, "t"), 0);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0);
  PS_CHECK_STR_EQ(body(&d), "m2");
  PS_CHECK(d.routing_key_len == 2 && memcmp(d.routing_key, "dq", 2) == 0);
  PS_CHECK_INT_EQ(ps_broker_ack(c, d.tag, 0), 0);
  ps_broker_close(c);
  PS_CHECK_INT_EQ(drain(b, "dq"), 2);
  ps_broker_destroy(b);

  PS_CHECK_MSG(ps_broker_mem_create(&durable, &opt, &b, err, sizeof err) == 0, "%s", err);
  PS_CHECK_INT_EQ(drain(b, "dq") + drain(b, "dq.error") + drain(b, "mq"), 0);
  ps_broker_destroy(b);
  ps_test_rmtree(dir);
}

PS_TEST(durable_messages_survive_a_process_that_exits_without_cleanup) {
  char *dir = tmpdir();
  ps_broker_mem_options opt = {.data_dir = dir};
  pid_t pid = fork();
  if (pid == 0) {
    ps_broker *b;
    ps_broker_conn *c;
    char err[256];
    if (ps_broker_mem_create(&durable, &opt, &b, err, sizeof err) != 0 || ps_broker_connect(b, &c) != 0)
      _exit(2);
    if (pub(c, "ev", "k", "c1", 1) || pub(c, "ev", "k", "c2", 1) || pub(c, "ev", "k", "c3", 1))
      _exit(3);
    ps_delivery d;
    if (ps_broker_consume(c, "dq", 0, "t") || ps_broker_next(c, &d, 0) || ps_broker_ack(c, d.tag, 0) ||
        ps_broker_next(c, &d, 0))
      _exit(4);
    _exit(0); /* no close, no destroy: as a crash leaves it */
  }
  int st;
  PS_CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
  PS_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed: status %d", st);
  ps_broker *b;
  char err[256];
  PS_CHECK_MSG(ps_broker_mem_create(&durable, &opt, &b, err, sizeof err) == 0, "%s", err);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "dq", 0, "t"), 0);
  ps_delivery d;
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0);
  PS_CHECK_STR_EQ(body(&d), "c2");
  PS_CHECK_INT_EQ(d.redelivered, 1);
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0);
  PS_CHECK_STR_EQ(body(&d), "c3");
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), PS_ETIMEDOUT);
  ps_broker_close(c);
  ps_broker_destroy(b);
  ps_test_rmtree(dir);
}

PS_TEST(stored_rows_are_readable_with_sqlite3) {
  char *dir = tmpdir();
  ps_broker_mem_options opt = {.data_dir = dir};
  ps_broker *b;
  char err[256];
  PS_CHECK_MSG(ps_broker_mem_create(&durable, &opt, &b, err, sizeof err) == 0, "%s", err);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  ps_broker_arg h[] = {{"x-penstock-reason", "bad \"row\" é", 0}, {"n", NULL, 5}};
  ps_message m = {.exchange = "ev",
                  .routing_key = "Click",
                  .persistent = 1,
                  .headers = h,
                  .nheaders = 2,
                  .body = "{}",
                  .len = 2};
  PS_CHECK_INT_EQ(ps_broker_publish(c, &m), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "dq", 0, "t"), 0);
  ps_delivery d;
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0);
  PS_CHECK_INT_EQ(ps_broker_nack(c, d.tag, 0, 0), 0); /* to dq.error */
  char path[128];
  snprintf(path, sizeof path, "%s/broker.db", dir);
  sqlite3 *db;
  PS_CHECK_INT_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st;
  PS_CHECK_INT_EQ(
      sqlite3_prepare_v2(db,
                         "SELECT queue, routing_key, json_extract(headers, '$.\"x-penstock-reason\"'),"
                         " json_extract(headers, '$.n'), json_extract(headers, '$.\"x-first-death-queue\"'),"
                         " body FROM messages",
                         -1, &st, NULL),
      SQLITE_OK);
  int row = sqlite3_step(st);
  char got[512] = "";
  if (row == SQLITE_ROW)
    snprintf(got, sizeof got, "%s|%s|%s|%lld|%s|%s", sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
             sqlite3_column_text(st, 2), sqlite3_column_int64(st, 3), sqlite3_column_text(st, 4),
             (const char *)sqlite3_column_blob(st, 5));
  int more = sqlite3_step(st);
  sqlite3_finalize(st);
  sqlite3_close(db);
  PS_CHECK_INT_EQ(row, SQLITE_ROW);
  PS_CHECK_STR_EQ(got, "dq.error|dq|bad \"row\" é|5|dq|{}");
  PS_CHECK_INT_EQ(more, SQLITE_DONE); /* the original's row went with the move */
  ps_broker_close(c);
  ps_broker_destroy(b);
  ps_test_rmtree(dir);
}

PS_TEST(one_broker_per_data_dir) {
  char *dir = tmpdir();
  ps_broker_mem_options opt = {.data_dir = dir};
  ps_broker *b, *b2;
  char err[256] = "";
  PS_CHECK_MSG(ps_broker_mem_create(&durable, &opt, &b, err, sizeof err) == 0, "%s", err);
  PS_CHECK_INT_EQ(ps_broker_mem_create(&durable, &opt, &b2, err, sizeof err), PS_EIO);
  PS_CHECK_MSG(strstr(err, "another penstock"), "err: %s", err);
  ps_broker_destroy(b);
  PS_CHECK_MSG(ps_broker_mem_create(&durable, &opt, &b2, err, sizeof err) == 0, "%s", err);
  ps_broker_destroy(b2);
  ps_test_rmtree(dir);
}

/* ---------------------------------------------------------------- configuration and metrics */

PS_TEST(create_refuses_a_topology_it_cannot_honour) {
  ps_broker *b;
  char err[256] = "";
  ps_binding_decl to_nowhere[] = {{"q", "x", "#"}, {"missing", "x", "#"}};
  ps_topology t = {one_ex, 1, one_q, 1, to_nowhere, 2};
  PS_CHECK_INT_EQ(ps_broker_mem_create(&t, NULL, &b, err, sizeof err), PS_ECONFIG);
  PS_CHECK_MSG(strstr(err, "missing"), "err: %s", err);
  ps_binding_decl no_ex[] = {{"q", "nope", "#"}};
  ps_topology t2 = {one_ex, 1, one_q, 1, no_ex, 1};
  PS_CHECK_INT_EQ(ps_broker_mem_create(&t2, NULL, &b, err, sizeof err), PS_ECONFIG);
  PS_CHECK_MSG(strstr(err, "nope"), "err: %s", err);
  ps_exchange_decl bad_type[] = {{"x", "round-robin", 1}};
  ps_topology t3 = {bad_type, 1, one_q, 1, one_b, 1};
  PS_CHECK_INT_EQ(ps_broker_mem_create(&t3, NULL, &b, err, sizeof err), PS_ECONFIG);
  ps_broker_arg zero[] = {{"x-max-length", NULL, 0}};
  ps_queue_decl zq[] = {{"q", 1, zero, 1}};
  ps_topology t4 = {one_ex, 1, zq, 1, one_b, 1};
  PS_CHECK_INT_EQ(ps_broker_mem_create(&t4, NULL, &b, err, sizeof err), PS_ECONFIG);
  /* an unwritable data_dir */
  ps_broker_mem_options opt = {.data_dir = "/proc/no/such/dir"};
  PS_CHECK_INT_EQ(ps_broker_mem_create(&one, &opt, &b, err, sizeof err), PS_EIO);
}

PS_TEST(queue_gauge_counts_ready_and_unacked) {
  ps_exchange_decl ex[] = {{"gx", "topic", 1}};
  ps_queue_decl qs[] = {{"gauge_q", 0, NULL, 0}};
  ps_binding_decl bs[] = {{"gauge_q", "gx", "#"}};
  ps_topology t = {ex, 1, qs, 1, bs, 1};
  ps_broker *b;
  char err[256];
  PS_CHECK_INT_EQ(ps_broker_mem_create(&t, NULL, &b, err, sizeof err), 0);
  const char *series = "penstock_embedded_queue_messages{queue=\"gauge_q\"}";
  PS_CHECK(ps_test_metric(series) == 0);
  ps_broker_conn *c;
  PS_CHECK_INT_EQ(ps_broker_connect(b, &c), 0);
  PS_CHECK_INT_EQ(ps_broker_consume(c, "gauge_q", 0, "t"), 0);
  for (int i = 0; i < 3; i++)
    PS_CHECK_INT_EQ(pub(c, "gx", "a", "m", 0), 0);
  ps_delivery d;
  PS_CHECK_INT_EQ(ps_broker_next(c, &d, 0), 0);
  PS_CHECK_MSG(ps_test_metric(series) == 3, "gauge %g", ps_test_metric(series));
  PS_CHECK_INT_EQ(ps_broker_ack(c, d.tag, 0), 0);
  PS_CHECK(ps_test_metric(series) == 2);
  ps_broker_close(c);
  ps_broker_destroy(b);
  PS_CHECK(ps_test_metric(series) == 0); /* and no callback into freed memory */
}

/* ---------------------------------------------------------------- stress */

#define NPUB 4
#define NCONS 3 /* per queue */

typedef struct {
  ps_broker *b;
  int per_pub;
  int persistent;
  _Atomic int *acked[2]; /* per queue, per message */
  _Atomic int acked_total[2];
  _Atomic int errors;
  _Atomic int refused, returned; /* publishes refused for room; deliveries given back (nack, close) */
  int64_t deadline_ns;           /* a lost message must fail the test, not hang it */
} stress_ctx;

typedef struct {
  stress_ctx *s;
  int id;
  int q;
} stress_arg;

static const char *stress_queue[2] = {"s1", "s2"};

static void *stress_publisher(void *arg) {
  stress_arg *a = arg;
  stress_ctx *s = a->s;
  ps_broker_conn *c;
  ps_broker_connect(s->b, &c);
  char id[32];
  for (int i = 0; i < s->per_pub; i++) {
    snprintf(id, sizeof id, "%d", a->id * s->per_pub + i);
    int rc;
    while ((rc = pub(c, "sx", i % 3 ? "ev.a" : "ev.b.c", id, s->persistent)) != 0) {
      if (rc != PS_EAGAIN || ps_now_ns() >= s->deadline_ns) {
        atomic_fetch_add(&s->errors, 1);
        break;
      }
      atomic_fetch_add(&s->refused, 1);
      ps_broker_close(c); /* as the router does */
      ps_broker_connect(s->b, &c);
    }
  }
  ps_broker_close(c);
  return NULL;
}

static void *stress_consumer(void *arg) {
  stress_arg *a = arg;
  stress_ctx *s = a->s;
  int total = NPUB * s->per_pub;
  unsigned seed = (unsigned)(a->id * 7919 + a->q);
  struct {
    uint64_t tag;
    int msg;
  } pending[16];
  int np = 0;
  ps_broker_conn *c;
  ps_broker_connect(s->b, &c);
  ps_broker_consume(c, stress_queue[a->q], 16, "t");
  while (atomic_load(&s->acked_total[a->q]) < total && ps_now_ns() < s->deadline_ns) {
    ps_delivery d;
    int rc = ps_broker_next(c, &d, 5);
    if (rc == 0) {
      int msg = atoi(body(&d));
      if (msg < 0 || msg >= total || strcmp(d.message_id, body(&d)) != 0) {
        atomic_fetch_add(&s->errors, 1);
        msg = 0;
      }
      pending[np].tag = d.tag;
      pending[np++].msg = msg;
      ps_broker_release(c, &d);
    }
    if (!np)
      continue;
    int r = (int)(rand_r(&seed) % 200);
    if (np == 16 || rc != 0 || r < 40) { /* ack all (multiple): a full window, an idle queue, or by chance */
      if (ps_broker_ack(c, pending[np - 1].tag, 1) != 0)
        atomic_fetch_add(&s->errors, 1);
      for (int i = 0; i < np; i++)
        atomic_fetch_add(&s->acked[a->q][pending[i].msg], 1);
      atomic_fetch_add(&s->acked_total[a->q], np);
      np = 0;
    } else if (r < 45) { /* ack the oldest alone */
      if (ps_broker_ack(c, pending[0].tag, 0) != 0)
        atomic_fetch_add(&s->errors, 1);
      atomic_fetch_add(&s->acked[a->q][pending[0].msg], 1);
      atomic_fetch_add(&s->acked_total[a->q], 1);
      memmove(pending, pending + 1, (size_t)--np * sizeof pending[0]);
    } else if (r < 48) { /* give everything back */
      if (ps_broker_nack(c, pending[np - 1].tag, 1, 1) != 0)
        atomic_fetch_add(&s->errors, 1);
      atomic_fetch_add(&s->returned, np);
      np = 0;
    } else if (r < 50) { /* drop the connection */
      ps_broker_close(c);
      atomic_fetch_add(&s->returned, np);
      np = 0;
      ps_broker_connect(s->b, &c);
      ps_broker_consume(c, stress_queue[a->q], 16, "t");
    }
  }
  ps_broker_close(c);
  return NULL;
}

static void stress(int per_pub, const char *dir) {
  ps_broker_arg small[] = {{"x-max-length", NULL, 20}};
  ps_exchange_decl ex[] = {{"sx", "topic", 1}};
  ps_queue_decl qs[] = {{"s1", 1, small, 1}, {"s2", 1, NULL, 0}};
  ps_binding_decl bs[] = {{"s1", "sx", "ev.#"}, {"s2", "sx", "*.a"}, {"s2", "sx", "ev.*.c"}};
  ps_topology t = {ex, 1, qs, 2, bs, 3};
  ps_broker_mem_options opt = {.data_dir = dir, .queue_max_messages = 30, .publish_wait_ms = 5};
  stress_ctx s = {.per_pub = per_pub, .persistent = dir != NULL};
  char err[256];
  PS_CHECK_MSG(ps_broker_mem_create(&t, &opt, &s.b, err, sizeof err) == 0, "%s", err);
  int total = NPUB * per_pub;
  for (int q = 0; q < 2; q++)
    s.acked[q] = calloc((size_t)total, sizeof(_Atomic int));
  pthread_t pubs[NPUB], cons[2][NCONS];
  stress_arg pa[NPUB], ca[2][NCONS];
  int64_t t0 = ps_now_ns();
  s.deadline_ns = t0 + 60 * 1000000000LL;
  for (int q = 0; q < 2; q++)
    for (int i = 0; i < NCONS; i++) {
      ca[q][i] = (stress_arg){&s, i, q};
      pthread_create(&cons[q][i], NULL, stress_consumer, &ca[q][i]);
    }
  for (int i = 0; i < NPUB; i++) {
    pa[i] = (stress_arg){&s, i, 0};
    pthread_create(&pubs[i], NULL, stress_publisher, &pa[i]);
  }
  for (int i = 0; i < NPUB; i++)
    pthread_join(pubs[i], NULL);
  for (int q = 0; q < 2; q++)
    for (int i = 0; i < NCONS; i++)
      pthread_join(cons[q][i], NULL);
  int64_t ms = (ps_now_ns() - t0) / 1000000;
  printf(
      "     stress%s: %d messages to 2 queues, %d publishers, %d consumers, %d publishes refused for room, "
      "%d deliveries given back: %lld ms\n",
      dir ? " (durable)" : "", total, NPUB, 2 * NCONS, atomic_load(&s.refused), atomic_load(&s.returned),
      (long long)ms);
  PS_CHECK_MSG(atomic_load(&s.returned) > 0, "the stress test gave nothing back: it tests less than it says");
  int bad = atomic_load(&s.errors);
  for (int q = 0; q < 2; q++)
    for (int i = 0; i < total && !bad; i++)
      if (atomic_load(&s.acked[q][i]) != 1) {
        ps_test__fail(__FILE__, __LINE__, "queue %s: message %d acked %d times", stress_queue[q], i,
                      atomic_load(&s.acked[q][i]));
        bad = 1;
      }
  PS_CHECK_INT_EQ(atomic_load(&s.errors), 0);
  PS_CHECK_INT_EQ(drain(s.b, "s1") + drain(s.b, "s2"), 0);
  ps_broker_destroy(s.b);
  for (int q = 0; q < 2; q++)
    free(s.acked[q]);
  if (dir) { /* every acked row was deleted */
    PS_CHECK_MSG(ps_broker_mem_create(&t, &opt, &s.b, err, sizeof err) == 0, "%s", err);
    PS_CHECK_INT_EQ(drain(s.b, "s1") + drain(s.b, "s2"), 0);
    ps_broker_destroy(s.b);
  }
}

PS_TEST(stress_every_message_acked_exactly_once) {
  stress(5000, NULL);
}

PS_TEST(stress_durable_every_message_acked_exactly_once) {
  char *dir = tmpdir();
  stress(1000, dir);
  ps_test_rmtree(dir);
}

PS_TEST_MAIN(PS_CASE(topic_matching_table), PS_CASE(direct_fanout_and_unroutable),
             PS_CASE(fifo_with_fields_and_tags), PS_CASE(delivery_valid_until_release_even_after_ack),
             PS_CASE(prefetch_limits_unacked_per_connection),
             PS_CASE(ack_multiple_and_close_returns_the_rest_in_order),
             PS_CASE(nack_requeue_puts_back_at_head_redelivered),
             PS_CASE(nack_without_requeue_dead_letters_or_discards),
             PS_CASE(full_queue_publish_waits_then_eagain_enqueuing_nowhere),
             PS_CASE(full_queue_publish_succeeds_once_a_consumer_acks),
             PS_CASE(durable_messages_survive_destroy_in_order_redelivered),
             PS_CASE(durable_messages_survive_a_process_that_exits_without_cleanup),
             PS_CASE(stored_rows_are_readable_with_sqlite3), PS_CASE(one_broker_per_data_dir),
             PS_CASE(create_refuses_a_topology_it_cannot_honour),
             PS_CASE(queue_gauge_counts_ready_and_unacked), PS_CASE(stress_every_message_acked_exactly_once),
             PS_CASE(stress_durable_every_message_acked_exactly_once))
