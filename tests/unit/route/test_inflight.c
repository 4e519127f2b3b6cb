/*
 * Unit tests of ps_inflight, the window of unconfirmed messages, and of the
 * spool record of a message (ps_message_pack / ps_message_unpack): ring order
 * and wrap-around, owned copies (nothing borrowed from the caller survives in
 * an entry), what a confirmation marks (single, multiple, never seq 0, resent
 * entries out of seq order), lookup by message id, and record round trips.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "ps_test.h"
#include "route/ps_inflight.h"
#include "spool.pb-c.h"

/* ---------------------------------------------------------------- helpers */

/* A message with only an exchange and an id (ids tell entries apart). */
static ps_message msg_id(const char *id) {
  return (ps_message){.exchange = "events", .routing_key = "ClickEvent", .message_id = id, .body = id,
                      .len = strlen(id)};
}

/* The message ids of f's entries, oldest first, joined by ','. */
static const char *ids(ps_inflight *f) {
  static char out[256];
  size_t n = 0;
  out[0] = '\0';
  for (size_t i = 0; i < ps_inflight_count(f) && n < sizeof out - 1; i++)
    n += (size_t)snprintf(out + n, sizeof out - n, "%s%s", i ? "," : "", ps_inflight_at(f, i)->m.message_id);
  return out;
}

/* The states of f's entries, oldest first: P(ending), A(cked), N(acked). */
static const char *states(ps_inflight *f) {
  static char out[64];
  size_t i;
  for (i = 0; i < ps_inflight_count(f) && i < sizeof out - 1; i++) {
    int s = ps_inflight_at(f, i)->state;
    out[i] = s == PS_INFLIGHT_PENDING ? 'P' : s == PS_INFLIGHT_ACKED ? 'A' : s == PS_INFLIGHT_NACKED ? 'N' : '?';
  }
  out[i] = '\0';
  return out;
}

/* ---------------------------------------------------------------- the ring */

PS_TEST(push_pop_at_keep_publish_order_across_wrap_around) {
  ps_inflight f;
  ps_inflight_init(&f, 3, 0);
  PS_CHECK_INT_EQ(ps_inflight_count(&f), 0);
  PS_CHECK(!ps_inflight_full(&f));
  ps_inflight_pop(&f); /* popping an empty window does nothing */
  PS_CHECK_INT_EQ(ps_inflight_count(&f), 0);
  ps_message a = msg_id("a"), b = msg_id("b"), c = msg_id("c");
  int ref;
  ps_inflight_entry *e = ps_inflight_push(&f, 1, &a, &ref);
  PS_CHECK(e == ps_inflight_at(&f, 0));
  PS_CHECK_INT_EQ(e->seq, 1);
  PS_CHECK(e->ref == &ref);
  PS_CHECK_INT_EQ(e->state, PS_INFLIGHT_PENDING);
  ps_inflight_push(&f, 2, &b, NULL);
  ps_inflight_push(&f, 3, &c, NULL);
  PS_CHECK(ps_inflight_full(&f));
  PS_CHECK_STR_EQ(ids(&f), "a,b,c");
  ps_inflight_pop(&f);
  PS_CHECK_INT_EQ(ps_inflight_count(&f), 2);
  PS_CHECK(!ps_inflight_full(&f));
  PS_CHECK_STR_EQ(ids(&f), "b,c");
  PS_CHECK_INT_EQ(ps_inflight_at(&f, 0)->seq, 2);
  /* Around the end of the ring, many times: order and contents hold. */
  char id[16], expect[64];
  int next = 0, oldest = 0; /* ids d0, d1, ... */
  ps_inflight_pop(&f);
  ps_inflight_pop(&f);
  for (int round = 0; round < 20; round++) {
    while (!ps_inflight_full(&f)) {
      snprintf(id, sizeof id, "d%d", next);
      ps_message m = msg_id(id);
      e = ps_inflight_push(&f, (uint64_t)next + 100, &m, NULL);
      PS_CHECK(e == ps_inflight_at(&f, ps_inflight_count(&f) - 1));
      next++;
    }
    size_t n = 0;
    for (int k = oldest; k < next; k++)
      n += (size_t)snprintf(expect + n, sizeof expect - n, "%sd%d", k > oldest ? "," : "", k);
    PS_CHECK_STR_EQ(ids(&f), expect);
    for (size_t i = 0; i < ps_inflight_count(&f); i++)
      PS_CHECK_INT_EQ(ps_inflight_at(&f, i)->seq, (uint64_t)(oldest + (int)i) + 100);
    int drop = 1 + round % 3; /* pop 1, 2 or 3 */
    for (int k = 0; k < drop; k++)
      ps_inflight_pop(&f);
    oldest += drop;
  }
  ps_inflight_free(&f);
  ps_inflight_free(&f); /* twice: harmless */

  ps_inflight_init(&f, 0, 0); /* 0 means 1 */
  PS_CHECK_INT_EQ(f.cap, 1);
  ps_inflight_push(&f, 0, &a, NULL);
  PS_CHECK(ps_inflight_full(&f));
  ps_inflight_free(&f);
}

/* A message whose body is n bytes of c (n < 4096), with an id. */
static ps_message msg_body(const char *id, char c, size_t n) {
  static char bodies[8][4096];
  static unsigned next;
  char *b = bodies[next++ % 8];
  memset(b, c, n);
  return (ps_message){.exchange = "events", .routing_key = "ClickEvent", .message_id = id, .body = b, .len = n};
}

PS_TEST(a_byte_bound_fills_the_window_before_its_entries_do) {
  ps_inflight f;
  ps_inflight_init(&f, 8, 100);
  ps_message a = msg_body("a", 'a', 40), b = msg_body("b", 'b', 59), c = msg_body("c", 'c', 1);
  ps_inflight_push(&f, 1, &a, NULL);
  ps_inflight_push(&f, 2, &b, NULL);
  PS_CHECK_INT_EQ(ps_inflight_bytes(&f), 99);
  PS_CHECK(!ps_inflight_full(&f)); /* 99 of 100 bytes, 2 of 8 entries */
  ps_inflight_push(&f, 3, &c, NULL);
  PS_CHECK_INT_EQ(ps_inflight_bytes(&f), 100);
  PS_CHECK(ps_inflight_full(&f)); /* by bytes, with 3 of 8 entries */
  ps_inflight_pop(&f);
  PS_CHECK_INT_EQ(ps_inflight_bytes(&f), 60);
  PS_CHECK(!ps_inflight_full(&f));
  PS_CHECK_STR_EQ(ids(&f), "b,c");
  ps_inflight_pop(&f);
  ps_inflight_pop(&f);
  PS_CHECK_INT_EQ(ps_inflight_bytes(&f), 0);

  /* One message larger than the bound fits in an empty window, and fills it. */
  ps_message big = msg_body("big", 'x', 1000);
  PS_CHECK(!ps_inflight_full(&f));
  ps_inflight_entry *e = ps_inflight_push(&f, 4, &big, NULL);
  PS_CHECK_INT_EQ(e->m.len, 1000);
  PS_CHECK(memcmp(e->m.body, big.body, 1000) == 0);
  PS_CHECK(ps_inflight_full(&f));

  /* A replaced head (a dead letter instead of the message) counts with its own size. */
  ps_message small = msg_body("small", 's', 10);
  ps_inflight_replace_head(&f, 0, &small, NULL);
  PS_CHECK_INT_EQ(ps_inflight_bytes(&f), 10);
  PS_CHECK(!ps_inflight_full(&f));
  ps_inflight_free(&f);

  /* Without a byte bound, only the entries count. */
  ps_inflight_init(&f, 2, 0);
  ps_message huge = msg_body("huge", 'h', 4000);
  ps_inflight_push(&f, 1, &huge, NULL);
  PS_CHECK(!ps_inflight_full(&f));
  ps_inflight_push(&f, 2, &huge, NULL);
  PS_CHECK(ps_inflight_full(&f));
  ps_inflight_free(&f);
}

PS_TEST(a_slot_keeps_no_buffer_larger_than_its_share_of_the_byte_bound) {
  ps_inflight f;
  ps_inflight_init(&f, 4, 4000); /* a slot's share: 1000 bytes */
  ps_message small = msg_body("small", 's', 100), big = msg_body("big", 'b', 3000);
  ps_inflight_push(&f, 1, &small, NULL); /* slot 0 */
  ps_inflight_push(&f, 2, &big, NULL);   /* slot 1 */
  ps_inflight_pop(&f);
  PS_CHECK(f.e[0].store.cap > 0 && f.e[0].store.cap <= 1000); /* kept for the next message */
  ps_inflight_pop(&f);
  PS_CHECK_INT_EQ(f.e[1].store.cap, 0); /* released */
  PS_CHECK(f.e[1].store.data == NULL);
  /* The slot is used again as usual. */
  for (uint64_t seq = 10; !ps_inflight_full(&f); seq++)
    ps_inflight_push(&f, seq, &big, NULL);
  PS_CHECK_INT_EQ(ps_inflight_count(&f), 2); /* 3000 bytes, then 6000 >= 4000 */
  ps_inflight_free(&f);
}

PS_TEST(push_copies_everything_it_is_given) {
  char exchange[32] = "events", rk[32] = "ClickEvent", ct[32] = "application/json", id[32] = "id-1";
  char k0[32] = "x-penstock-reason", v0[64] = "why not", k1[32] = "x-count";
  unsigned char body[64];
  for (size_t i = 0; i < sizeof body; i++)
    body[i] = (unsigned char)i; /* NULs included */
  ps_broker_arg h[2] = {{k0, v0, 0}, {k1, NULL, -7}};
  ps_message m = {.exchange = exchange,
                  .routing_key = rk,
                  .content_type = ct,
                  .message_id = id,
                  .timestamp = 1700000001,
                  .persistent = 1,
                  .mandatory = 1,
                  .headers = h,
                  .nheaders = 2,
                  .body = body,
                  .len = sizeof body};
  ps_inflight f;
  ps_inflight_init(&f, 2, 0);
  ps_inflight_entry *e = ps_inflight_push(&f, 5, &m, NULL);
  /* The caller's storage changes or goes away after the push. */
  memset(exchange, 'X', sizeof exchange - 1);
  memset(rk, 'X', sizeof rk - 1);
  memset(ct, 'X', sizeof ct - 1);
  memset(id, 'X', sizeof id - 1);
  memset(k0, 'X', sizeof k0 - 1);
  memset(v0, 'X', sizeof v0 - 1);
  memset(k1, 'X', sizeof k1 - 1);
  memset(body, 0xEE, sizeof body);
  h[0] = (ps_broker_arg){"other", "other", 1};
  h[1] = (ps_broker_arg){"other", "other", 1};
  PS_CHECK_STR_EQ(e->m.exchange, "events");
  PS_CHECK_STR_EQ(e->m.routing_key, "ClickEvent");
  PS_CHECK_STR_EQ(e->m.content_type, "application/json");
  PS_CHECK_STR_EQ(e->m.message_id, "id-1");
  PS_CHECK_INT_EQ(e->m.timestamp, 1700000001);
  PS_CHECK_INT_EQ(e->m.persistent, 1);
  PS_CHECK_INT_EQ(e->m.mandatory, 1);
  PS_CHECK_INT_EQ(e->m.nheaders, 2);
  PS_CHECK(e->m.headers == e->headers); /* the entry's own array, not the caller's */
  PS_CHECK_STR_EQ(e->m.headers[0].key, "x-penstock-reason");
  PS_CHECK_STR_EQ(e->m.headers[0].str, "why not");
  PS_CHECK_STR_EQ(e->m.headers[1].key, "x-count");
  PS_CHECK(e->m.headers[1].str == NULL); /* a number stays a number */
  PS_CHECK_INT_EQ(e->m.headers[1].num, -7);
  PS_CHECK_INT_EQ(e->m.len, 64);
  for (size_t i = 0; i < 64; i++)
    PS_CHECK_INT_EQ(((const unsigned char *)e->m.body)[i], i);

  /* Absent strings stay absent, and an empty body is empty (but not a NULL pointer). */
  ps_message bare = {.exchange = "dlx", .routing_key = "k"};
  ps_inflight_entry *e2 = ps_inflight_push(&f, 0, &bare, NULL);
  PS_CHECK(e2->m.content_type == NULL);
  PS_CHECK(e2->m.message_id == NULL);
  PS_CHECK(e2->m.headers == NULL);
  PS_CHECK_INT_EQ(e2->m.nheaders, 0);
  PS_CHECK_INT_EQ(e2->m.len, 0);
  PS_CHECK(e2->m.body != NULL);
  ps_inflight_pop(&f); /* the first one; the bare one is now the oldest */
  ps_message empty_body = {.exchange = "x", .routing_key = "k", .message_id = "e", .body = "", .len = 0};
  ps_inflight_entry *e3 = ps_inflight_push(&f, 0, &empty_body, NULL); /* into the first one's slot */
  PS_CHECK(e3 == e);
  PS_CHECK_INT_EQ(e3->m.len, 0);
  PS_CHECK(e3->m.body != NULL);
  PS_CHECK_INT_EQ(e3->m.nheaders, 0);
  PS_CHECK(e3->m.headers == NULL);
  PS_CHECK(e3->m.content_type == NULL);
  PS_CHECK_INT_EQ(e3->m.mandatory, 0);
  PS_CHECK_STR_EQ(e3->m.message_id, "e");
  /* The bare one is untouched by its neighbour's reuse. */
  PS_CHECK(ps_inflight_at(&f, 0) == e2);
  PS_CHECK_STR_EQ(e2->m.exchange, "dlx");
  PS_CHECK_STR_EQ(e2->m.routing_key, "k");
  ps_inflight_free(&f);
}

PS_TEST(a_reused_slot_starts_clean_and_grows) {
  ps_inflight f;
  ps_inflight_init(&f, 1, 0);
  ps_message small = msg_id("small");
  ps_inflight_entry *e = ps_inflight_push(&f, 9, &small, &f);
  e->state = PS_INFLIGHT_ACKED;
  e->returned = 1;
  e->reply_code = 312;
  e->sent_ns = 123;
  e->tag[0] = 4;
  e->tag[1] = 1;
  ps_inflight_pop(&f);
  /* The same slot, a message far larger than its buffer so far. */
  size_t big_len = 100000;
  char *big = malloc(big_len);
  for (size_t i = 0; i < big_len; i++)
    big[i] = (char)('a' + i % 26);
  ps_broker_arg h[PS_INFLIGHT_MAX_HEADERS];
  char keys[PS_INFLIGHT_MAX_HEADERS][16];
  for (int i = 0; i < PS_INFLIGHT_MAX_HEADERS; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i);
    h[i] = (ps_broker_arg){keys[i], i % 2 ? NULL : keys[i], i};
  }
  ps_message m = {.exchange = "events", .routing_key = "BigEvent", .message_id = "big", .headers = h,
                  .nheaders = PS_INFLIGHT_MAX_HEADERS, .body = big, .len = big_len};
  e = ps_inflight_push(&f, 0, &m, NULL);
  PS_CHECK(e == ps_inflight_at(&f, 0));
  PS_CHECK_INT_EQ(e->state, PS_INFLIGHT_PENDING);
  PS_CHECK_INT_EQ(e->returned, 0);
  PS_CHECK_INT_EQ(e->reply_code, 0);
  PS_CHECK_INT_EQ(e->sent_ns, 0);
  PS_CHECK_INT_EQ(e->tag[0], 0);
  PS_CHECK_INT_EQ(e->tag[1], 0);
  PS_CHECK_INT_EQ(e->seq, 0);
  PS_CHECK(e->ref == NULL);
  PS_CHECK_STR_EQ(e->m.exchange, "events");
  PS_CHECK_STR_EQ(e->m.routing_key, "BigEvent");
  PS_CHECK_STR_EQ(e->m.message_id, "big");
  PS_CHECK(e->m.content_type == NULL);
  for (int i = 0; i < PS_INFLIGHT_MAX_HEADERS; i++) {
    PS_CHECK_STR_EQ(e->m.headers[i].key, keys[i]);
    PS_CHECK(i % 2 ? e->m.headers[i].str == NULL : strcmp(e->m.headers[i].str, keys[i]) == 0);
    PS_CHECK_INT_EQ(e->m.headers[i].num, i);
  }
  PS_CHECK_INT_EQ(e->m.len, big_len);
  PS_CHECK(memcmp(e->m.body, big, big_len) == 0);
  free(big);
  ps_inflight_free(&f);
}

/* ---------------------------------------------------------------- confirmations */

/* A window of n entries whose seqs are seqs[0..n) and ids "m<seq>" (or "u<i>" for seq 0). */
static void fill(ps_inflight *f, const uint64_t *seqs, size_t n) {
  ps_inflight_init(f, n + 2, 0);
  for (size_t i = 0; i < n; i++) {
    char id[32];
    if (seqs[i])
      snprintf(id, sizeof id, "m%llu", (unsigned long long)seqs[i]);
    else
      snprintf(id, sizeof id, "u%zu", i);
    ps_message m = msg_id(id);
    ps_inflight_push(f, seqs[i], &m, NULL);
  }
}

PS_TEST(confirm_single_marks_one_and_multiple_marks_every_pending_up_to_seq) {
  ps_inflight f;
  fill(&f, (const uint64_t[]){1, 2, 3, 4, 5}, 5);
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 3, 0, 1), 1);
  PS_CHECK_STR_EQ(states(&f), "PPAPP");
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 3, 0, 1), 0); /* already confirmed */
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 9, 0, 1), 0); /* no such publish */
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 4, 1, 1), 3); /* 1, 2, 4: not 3 again */
  PS_CHECK_STR_EQ(states(&f), "AAAAP");
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 5, 1, 0), 1);
  PS_CHECK_STR_EQ(states(&f), "AAAAN");
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 5, 1, 1), 0); /* a nacked entry is not acked by a later report */
  PS_CHECK_STR_EQ(states(&f), "AAAAN");
  ps_inflight_free(&f);

  fill(&f, (const uint64_t[]){1, 2, 3}, 3);
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 2, 1, 0), 2);
  PS_CHECK_STR_EQ(states(&f), "NNP");
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 3, 0, 1), 1);
  PS_CHECK_STR_EQ(states(&f), "NNA");
  ps_inflight_free(&f);
}

PS_TEST(confirm_never_marks_entries_numbered_0) {
  ps_inflight f;
  fill(&f, (const uint64_t[]){0, 3, 0, 4}, 4);
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 0, 0, 1), 0);
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 0, 1, 1), 0);
  PS_CHECK_STR_EQ(states(&f), "PPPP");
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 100, 1, 1), 2);
  PS_CHECK_STR_EQ(states(&f), "PAPA");
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 100, 1, 0), 0);
  PS_CHECK_STR_EQ(states(&f), "PAPA");
  ps_inflight_free(&f);
}

PS_TEST(confirm_handles_resent_entries_out_of_seq_order) {
  /* Window order 7, 2, 5, 1: entries sent again after a nack or a reconnect carry later numbers. */
  ps_inflight f;
  fill(&f, (const uint64_t[]){7, 2, 5, 1}, 4);
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 2, 1, 1), 2); /* 1 and 2 */
  PS_CHECK_STR_EQ(states(&f), "PAPA");
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 6, 1, 0), 1); /* 5 */
  PS_CHECK_STR_EQ(states(&f), "PANA");
  PS_CHECK_INT_EQ(ps_inflight_confirm(&f, 7, 0, 1), 1);
  PS_CHECK_STR_EQ(states(&f), "AANA");
  ps_inflight_free(&f);
}

PS_TEST(find_id_finds_only_pending_entries) {
  ps_inflight f;
  ps_inflight_init(&f, 4, 0);
  ps_message a1 = msg_id("a"), b = msg_id("b"), a2 = msg_id("a"), none = {.exchange = "x", .routing_key = "k"};
  ps_inflight_push(&f, 0, &none, NULL); /* no id at all: skipped, no crash */
  ps_inflight_entry *ea1 = ps_inflight_push(&f, 1, &a1, NULL);
  ps_inflight_entry *eb = ps_inflight_push(&f, 2, &b, NULL);
  ps_inflight_entry *ea2 = ps_inflight_push(&f, 3, &a2, NULL);
  PS_CHECK(ps_inflight_find_id(&f, "a") == ea1);
  PS_CHECK(ps_inflight_find_id(&f, "b") == eb);
  PS_CHECK(ps_inflight_find_id(&f, "zz") == NULL);
  PS_CHECK(ps_inflight_find_id(&f, "") == NULL);
  ps_inflight_confirm(&f, 1, 0, 1);
  PS_CHECK(ps_inflight_find_id(&f, "a") == ea2);
  ps_inflight_confirm(&f, 3, 0, 0);
  PS_CHECK(ps_inflight_find_id(&f, "a") == NULL);
  ps_inflight_confirm(&f, 2, 0, 1);
  PS_CHECK(ps_inflight_find_id(&f, "b") == NULL);
  ps_inflight_free(&f);
}

/* ---------------------------------------------------------------- spool records */

PS_TEST(pack_unpack_round_trip) {
  unsigned char body[300];
  for (size_t i = 0; i < sizeof body; i++)
    body[i] = (unsigned char)(i * 7);
  ps_broker_arg h[] = {{"x-penstock-reason", "unroutable: \"quoted\" é", 0},
                       {"x-num", NULL, -9000000000LL},
                       {"x-zero", NULL, 0},
                       {"x-empty", "", 0}};
  ps_message m = {.exchange = "events",
                  .routing_key = "ClickEvent",
                  .content_type = "application/json",
                  .message_id = "0123-0-7",
                  .timestamp = 1700000002,
                  .persistent = 1,
                  .mandatory = 1,
                  .headers = h,
                  .nheaders = 4,
                  .body = body,
                  .len = sizeof body};
  ps_buf out = PS_BUF_INIT;
  ps_buf_puts(&out, "prefix"); /* pack appends */
  ps_message_pack(&m, &out);
  size_t first_end = out.len;
  ps_message bare = {.exchange = "dlx", .routing_key = ""}; /* nothing else */
  ps_message_pack(&bare, &out);
  PS_CHECK(memcmp(out.data, "prefix", 6) == 0);

  ps_message u;
  ps_broker_arg uh[PS_INFLIGHT_MAX_HEADERS];
  void *own = NULL;
  PS_CHECK_INT_EQ(ps_message_unpack(out.data + 6, first_end - 6, &u, uh, &own), 0);
  PS_CHECK(own != NULL);
  PS_CHECK_STR_EQ(u.exchange, "events");
  PS_CHECK_STR_EQ(u.routing_key, "ClickEvent");
  PS_CHECK_STR_EQ(u.content_type, "application/json");
  PS_CHECK_STR_EQ(u.message_id, "0123-0-7");
  PS_CHECK_INT_EQ(u.timestamp, 1700000002);
  PS_CHECK_INT_EQ(u.persistent, 1);
  PS_CHECK_INT_EQ(u.mandatory, 1);
  PS_CHECK_INT_EQ(u.nheaders, 4);
  PS_CHECK(u.headers == uh);
  PS_CHECK_STR_EQ(uh[0].key, "x-penstock-reason");
  PS_CHECK_STR_EQ(uh[0].str, "unroutable: \"quoted\" é");
  PS_CHECK_STR_EQ(uh[1].key, "x-num");
  PS_CHECK(uh[1].str == NULL);
  PS_CHECK_INT_EQ(uh[1].num, -9000000000LL);
  PS_CHECK(uh[2].str == NULL); /* a number 0 is still a number */
  PS_CHECK_INT_EQ(uh[2].num, 0);
  PS_CHECK(uh[3].str != NULL); /* and an empty string still a string */
  PS_CHECK_STR_EQ(uh[3].str, "");
  PS_CHECK_INT_EQ(u.len, sizeof body);
  PS_CHECK(memcmp(u.body, body, sizeof body) == 0);
  /* Packing the unpacked message gives the same record. */
  ps_buf again = PS_BUF_INIT;
  ps_message_pack(&u, &again);
  PS_CHECK_INT_EQ(again.len, first_end - 6);
  PS_CHECK(memcmp(again.data, out.data + 6, again.len) == 0);
  ps_buf_free(&again);
  ps_message_unpacked_free(own);

  own = NULL;
  PS_CHECK_INT_EQ(ps_message_unpack(out.data + first_end, out.len - first_end, &u, uh, &own), 0);
  PS_CHECK_STR_EQ(u.exchange, "dlx");
  PS_CHECK_STR_EQ(u.routing_key, "");
  PS_CHECK(u.content_type == NULL);
  PS_CHECK(u.message_id == NULL);
  PS_CHECK(u.headers == NULL);
  PS_CHECK_INT_EQ(u.nheaders, 0);
  PS_CHECK_INT_EQ(u.len, 0);
  PS_CHECK_INT_EQ(u.timestamp, 0);
  PS_CHECK_INT_EQ(u.persistent, 0);
  PS_CHECK_INT_EQ(u.mandatory, 0);
  ps_message_unpacked_free(own);
  ps_message_unpacked_free(NULL);
  ps_buf_free(&out);
}

PS_TEST(pack_of_an_entry_round_trips_too) {
  /* What the router spools: the entry's own copy. */
  ps_broker_arg h[] = {{"k", "v", 0}, {"n", NULL, 3}};
  ps_message m = {.exchange = "events", .routing_key = "LaunchEvent", .message_id = "id", .headers = h,
                  .nheaders = 2, .body = "{}", .len = 2, .mandatory = 1, .persistent = 1};
  ps_inflight f;
  ps_inflight_init(&f, 1, 0);
  ps_inflight_entry *e = ps_inflight_push(&f, 0, &m, NULL);
  ps_buf rec = PS_BUF_INIT;
  ps_message_pack(&e->m, &rec);
  ps_message u;
  ps_broker_arg uh[PS_INFLIGHT_MAX_HEADERS];
  void *own = NULL;
  PS_CHECK_INT_EQ(ps_message_unpack(rec.data, rec.len, &u, uh, &own), 0);
  PS_CHECK_STR_EQ(u.routing_key, "LaunchEvent");
  PS_CHECK_STR_EQ(u.message_id, "id");
  PS_CHECK_INT_EQ(u.nheaders, 2);
  PS_CHECK_STR_EQ(uh[0].str, "v");
  PS_CHECK(uh[1].str == NULL && uh[1].num == 3);
  PS_CHECK_INT_EQ(u.len, 2);
  PS_CHECK(memcmp(u.body, "{}", 2) == 0);
  ps_message_unpacked_free(own);
  ps_buf_free(&rec);
  ps_inflight_free(&f);
}

PS_TEST(unpack_refuses_what_is_not_a_record) {
  ps_message u;
  ps_broker_arg uh[PS_INFLIGHT_MAX_HEADERS];
  void *own = NULL;
  static const unsigned char garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  PS_CHECK_INT_EQ(ps_message_unpack(garbage, sizeof garbage, &u, uh, &own), PS_EPROTO);
  PS_CHECK(own == NULL);
  PS_CHECK_INT_EQ(ps_message_unpack("hello, world", 12, &u, uh, &own), PS_EPROTO);
  /* An empty record parses but names no exchange: not a message. */
  PS_CHECK_INT_EQ(ps_message_unpack("", 0, &u, uh, &own), PS_EPROTO);

  /* A real record cut short anywhere. */
  ps_message m = {.exchange = "events", .routing_key = "ClickEvent", .message_id = "id", .body = "0123456789",
                  .len = 10};
  ps_buf rec = PS_BUF_INIT;
  ps_message_pack(&m, &rec);
  /* (A cut between two fields leaves a shorter valid record: the spool's frame has the length and a CRC.
     A cut inside a field is never a record.) */
  for (size_t cut = 1; cut < rec.len; cut++) {
    if (cut >= 8 && cut < rec.len - 11) /* past the exchange field, before the body field */
      continue;
    own = NULL;
    int rc = ps_message_unpack(rec.data, cut, &u, uh, &own);
    PS_CHECK_MSG(rc == PS_EPROTO, "record cut to %zu of %zu bytes: rc %d", cut, rec.len, rc);
    PS_CHECK(own == NULL);
  }
  ps_buf_free(&rec);

  /* More headers than a window entry holds. */
  Penstock__Spool__Message r = PENSTOCK__SPOOL__MESSAGE__INIT;
  Penstock__Spool__Header hv[PS_INFLIGHT_MAX_HEADERS + 1], *hp[PS_INFLIGHT_MAX_HEADERS + 1];
  for (size_t i = 0; i < PS_INFLIGHT_MAX_HEADERS + 1; i++) {
    penstock__spool__header__init(&hv[i]);
    hv[i].key = "k";
    hv[i].str = "v";
    hp[i] = &hv[i];
  }
  r.exchange = "events";
  r.routing_key = "ClickEvent";
  r.n_headers = PS_INFLIGHT_MAX_HEADERS + 1;
  r.headers = hp;
  uint8_t buf[512];
  size_t len = penstock__spool__message__pack(&r, buf);
  own = NULL;
  PS_CHECK_INT_EQ(ps_message_unpack(buf, len, &u, uh, &own), PS_EPROTO);
  PS_CHECK(own == NULL);
  r.n_headers = PS_INFLIGHT_MAX_HEADERS; /* exactly the limit is fine */
  len = penstock__spool__message__pack(&r, buf);
  PS_CHECK_INT_EQ(ps_message_unpack(buf, len, &u, uh, &own), 0);
  PS_CHECK_INT_EQ(u.nheaders, PS_INFLIGHT_MAX_HEADERS);
  ps_message_unpacked_free(own);
}

PS_TEST_MAIN(PS_CASE(push_pop_at_keep_publish_order_across_wrap_around), PS_CASE(push_copies_everything_it_is_given),
             PS_CASE(a_byte_bound_fills_the_window_before_its_entries_do),
             PS_CASE(a_slot_keeps_no_buffer_larger_than_its_share_of_the_byte_bound),
             PS_CASE(a_reused_slot_starts_clean_and_grows),
             PS_CASE(confirm_single_marks_one_and_multiple_marks_every_pending_up_to_seq),
             PS_CASE(confirm_never_marks_entries_numbered_0),
             PS_CASE(confirm_handles_resent_entries_out_of_seq_order), PS_CASE(find_id_finds_only_pending_entries),
             PS_CASE(pack_unpack_round_trip), PS_CASE(pack_of_an_entry_round_trips_too),
             PS_CASE(unpack_refuses_what_is_not_a_record))
