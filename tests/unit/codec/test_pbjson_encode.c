/*
 * Unit tests of the proto3 JSON encoder's fast paths (test_pbjson.c holds the
 * reference vectors): each message type's table of JSON field names, built
 * on first use and shared by threads, gives the same bytes as before for
 * several message types, a field name longer than the block the encoder
 * copies, and any position in the output buffer; plain strings of every
 * length, with each byte that needs care at every position, come out as a
 * byte-at-a-time reference writes them; doubles keep their spelling.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_pbjson.h"
#include "core/ps_error.h"
#include "eventservice.pb-c.h"
#include "ps_test.h"

/* A message type written by hand: snake_case names, one longer than the block the encoder copies names in. */
typedef struct {
  ProtobufCMessage base;
  char *long_name;
  int32_t n;
} long_names;

static void long_names_init(ProtobufCMessage *m);
static const ProtobufCFieldDescriptor long_names_fields[] = {
    {.name = "a_field_name_well_beyond_the_thirty_two_bytes",
     .id = 1,
     .label = PROTOBUF_C_LABEL_NONE,
     .type = PROTOBUF_C_TYPE_STRING,
     .offset = offsetof(long_names, long_name),
     .default_value = &protobuf_c_empty_string},
    {.name = "n",
     .id = 2,
     .label = PROTOBUF_C_LABEL_NONE,
     .type = PROTOBUF_C_TYPE_INT32,
     .offset = offsetof(long_names, n)},
};
static const unsigned long_names_by_name[] = {0, 1};
static const ProtobufCIntRange long_names_ranges[] = {{1, 0}, {0, 2}};
static const ProtobufCMessageDescriptor long_names_descriptor = {
    .magic = PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    .name = "pstest.LongNames",
    .short_name = "LongNames",
    .c_name = "LongNames",
    .package_name = "pstest",
    .sizeof_message = sizeof(long_names),
    .n_fields = 2,
    .fields = long_names_fields,
    .fields_sorted_by_name = long_names_by_name,
    .n_field_ranges = 1,
    .field_ranges = long_names_ranges,
    .message_init = long_names_init,
};
static void long_names_init(ProtobufCMessage *m) {
  memset(m, 0, sizeof(long_names));
  m->descriptor = &long_names_descriptor;
  ((long_names *)m)->long_name = (char *)protobuf_c_empty_string;
}

/* Messages of several types and their JSON. */
typedef struct {
  Event__Events evs;
  Event__Header hdr;
  Event__Event ev[4], *evp[4];
  Event__LaunchEvent launch;
  Event__AddToCartEvent cart;
  Event__PageOpenedEvent po;
  Event__PageOpenedEvent__ParamsEntry pe[2], *pep[2];
  Event__CompletePurchaseEvent cp;
  char *ids[3];
  long_names ln;
  const ProtobufCMessage *msg[8];
  const char *want[8];
  size_t n;
} msg_set;

static void msg_set_init(msg_set *c) {
  memset(c, 0, sizeof *c);
  event__header__init(&c->hdr);
  c->hdr.sessionid = "s";
  c->hdr.userid = 42;
  c->hdr.deviceid = "d";
  c->hdr.clientid = "c";
  c->hdr.os = "ios";
  c->hdr.appversion = "1.2";
  event__launch_event__init(&c->launch);
  c->launch.source = "push";
  c->launch.coldstart = 1;
  c->launch.launchms = 1500;
  event__add_to_cart_event__init(&c->cart);
  c->cart.productid = "p1";
  c->cart.quantity = 2;
  c->cart.price = 19.99;
  c->cart.currency = "USD";
  event__page_opened_event__init(&c->po);
  c->po.page = "p\xc3\xa9";
  for (int i = 0; i < 2; i++) {
    event__page_opened_event__params_entry__init(&c->pe[i]);
    c->pe[i].key = i ? "k1" : "k2";
    c->pe[i].value = "v";
    c->pep[i] = &c->pe[i];
  }
  c->po.n_params = 2;
  c->po.params = c->pep;
  event__complete_purchase_event__init(&c->cp);
  c->ids[0] = "a";
  c->ids[1] = "b";
  c->ids[2] = "c";
  c->cp.n_productids = 3;
  c->cp.productids = c->ids;
  c->cp.amount = 3.0;
  for (int i = 0; i < 4; i++) {
    event__event__init(&c->ev[i]);
    c->ev[i].id = "id";
    c->evp[i] = &c->ev[i];
  }
  c->ev[0].timestamp = "t";
  c->ev[0].event_of_case = EVENT__EVENT__EVENT_OF_LAUNCH_EVENT;
  c->ev[0].launchevent = &c->launch;
  c->ev[1].event_of_case = EVENT__EVENT__EVENT_OF_COMPLETE_PURCHASE_EVENT;
  c->ev[1].completepurchaseevent = &c->cp;
  c->ev[2].event_of_case = EVENT__EVENT__EVENT_OF_ADD_TO_CART_EVENT;
  c->ev[2].addtocartevent = &c->cart;
  c->ev[3].event_of_case = EVENT__EVENT__EVENT_OF_PAGE_OPENED_EVENT;
  c->ev[3].pageopenedevent = &c->po;
  event__events__init(&c->evs);
  c->evs.header = &c->hdr;
  c->evs.n_events = 4;
  c->evs.events = c->evp;
  long_names_init(&c->ln.base);
  c->ln.long_name = "x";
  c->ln.n = 3;

  size_t k = 0;
  c->msg[k] = &c->evs.base;
  c->want[k++] =
      "{\"header\":{\"sessionId\":\"s\",\"userId\":\"42\",\"deviceId\":\"d\",\"clientId\":\"c\","
      "\"os\":\"ios\",\"appVersion\":\"1.2\"},\"events\":[{\"id\":\"id\",\"timestamp\":\"t\","
      "\"launchEvent\":{\"source\":\"push\",\"coldStart\":true,\"launchMs\":\"1500\"}},"
      "{\"id\":\"id\",\"completePurchaseEvent\":{\"amount\":3,\"productIds\":[\"a\",\"b\",\"c\"]}},"
      "{\"id\":\"id\",\"addToCartEvent\":{\"productId\":\"p1\",\"quantity\":2,\"price\":19.99,"
      "\"currency\":\"USD\"}},{\"id\":\"id\",\"pageOpenedEvent\":{\"page\":\"p\xc3\xa9\","
      "\"params\":{\"k1\":\"v\",\"k2\":\"v\"}}}]}";
  c->msg[k] = &c->hdr.base;
  c->want[k++] = "{\"sessionId\":\"s\",\"userId\":\"42\",\"deviceId\":\"d\",\"clientId\":\"c\","
                 "\"os\":\"ios\",\"appVersion\":\"1.2\"}";
  c->msg[k] = &c->ev[0].base;
  c->want[k++] = "{\"id\":\"id\",\"timestamp\":\"t\",\"launchEvent\":{\"source\":\"push\",\"coldStart\":true,"
                 "\"launchMs\":\"1500\"}}";
  c->msg[k] = &c->cart.base;
  c->want[k++] = "{\"productId\":\"p1\",\"quantity\":2,\"price\":19.99,\"currency\":\"USD\"}";
  c->msg[k] = &c->po.base;
  c->want[k++] = "{\"page\":\"p\xc3\xa9\",\"params\":{\"k1\":\"v\",\"k2\":\"v\"}}";
  c->msg[k] = &c->pe[0].base;
  c->want[k++] = "{\"key\":\"k2\",\"value\":\"v\"}";
  c->msg[k] = &c->ln.base;
  c->want[k++] = "{\"aFieldNameWellBeyondTheThirtyTwoBytes\":\"x\",\"n\":3}";
  c->n = k;
}

typedef struct {
  const msg_set *c;
  pthread_barrier_t *start;
  int offset, bad;
} worker;

static void *worker_run(void *arg) {
  worker *w = arg;
  ps_buf b = PS_BUF_INIT;
  pthread_barrier_wait(w->start); /* every thread meets the first message types together */
  for (int i = 0; i < 3000 && !w->bad; i++) {
    size_t k = (size_t)(i + w->offset) % w->c->n;
    ps_buf_reset(&b);
    if (ps_pbjson_encode(&b, w->c->msg[k]) != 0 || strcmp(b.data, w->c->want[k]) != 0)
      w->bad = 1 + (int)k;
  }
  ps_buf_free(&b);
  return NULL;
}

/*
 * Threads that meet each message type at the same time, so that they build
 * or find its names table together (this test comes first, before any other
 * encode in the process; the TSan build checks the publication).
 */
PS_TEST(names_tables_shared_by_threads) {
  static msg_set c;
  msg_set_init(&c);
  enum { T = 8 };
  pthread_t th[T];
  worker w[T];
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, T);
  for (int i = 0; i < T; i++) {
    w[i] = (worker){&c, &start, i % 3, 0};
    if (pthread_create(&th[i], NULL, worker_run, &w[i]) != 0)
      abort(); /* the others would wait at the barrier for ever */
  }
  for (int i = 0; i < T; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&start);
  for (int i = 0; i < T; i++)
    PS_CHECK_MSG(!w[i].bad, "thread %d: message %d came out wrong", i, w[i].bad - 1);
}

/* The same messages after prefixes of many lengths: names near the end of the buffer's room or not. */
PS_TEST(names_at_every_buffer_position) {
  static msg_set c;
  msg_set_init(&c);
  for (size_t k = 0; k < c.n; k++)
    for (size_t pre = 0; pre < 1100; pre += 1 + pre / 128) {
      ps_buf b = PS_BUF_INIT;
      for (size_t i = 0; i < pre; i++)
        ps_buf_putc(&b, '.');
      int rc = ps_pbjson_encode(&b, c.msg[k]);
      int ok = rc == 0 && b.len == pre + strlen(c.want[k]) && strcmp(b.data + pre, c.want[k]) == 0;
      PS_CHECK_MSG(ok, "message %zu after %zu bytes:\n  got:      %s\n  expected: %s", k, pre,
                   b.data && pre <= b.len ? b.data + pre : "", c.want[k]);
      ps_buf_free(&b);
    }
}

/* A string's JSON as a byte-at-a-time reference writes it (bytes >= 0x80 copied as they are). */
static void reference_string(char *out, const unsigned char *s, size_t n) {
  size_t k = 0;
  out[k++] = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned c = s[i];
    const char *e = c == '"'    ? "\\\""
                    : c == '\\' ? "\\\\"
                    : c == '\b' ? "\\b"
                    : c == '\f' ? "\\f"
                    : c == '\n' ? "\\n"
                    : c == '\r' ? "\\r"
                    : c == '\t' ? "\\t"
                                : NULL;
    if (e) {
      memcpy(out + k, e, 2);
      k += 2;
    } else if (c < 0x20) {
      k += (size_t)sprintf(out + k, "\\u%04x", c);
    } else {
      out[k++] = (char)c;
    }
  }
  out[k++] = '"';
  out[k] = '\0';
}

/*
 * Every length up to 40 with each byte that needs care at each position:
 * through ps_pbjson_put_string, and as a string field, where UTF-8 is
 * checked (a lone 0xc3 or 0xff is refused, "é" is fine).
 */
PS_TEST(strings_of_every_length) {
  static const unsigned char probes[] = {'"', '\\', '\n', 0x01, 0x1f, 0x7f, '/', ' ', 0xc3, 0xff};
  for (size_t len = 0; len <= 40; len++)
    for (size_t at = 0; at <= len; at++)
      for (size_t p = 0; p < sizeof probes; p++) {
        unsigned char s[48];
        for (size_t i = 0; i < len; i++)
          s[i] = (unsigned char)('a' + i % 26);
        if (at < len)
          s[at] = probes[p];
        char want[300];
        reference_string(want, s, len);
        ps_buf b = PS_BUF_INIT;
        ps_pbjson_put_string(&b, (const char *)s, len);
        int ok = b.data && strcmp(b.data, want) == 0;
        PS_CHECK_MSG(ok, "length %zu, 0x%02x at %zu: got %s, want %s", len, probes[p], at,
                     b.data ? b.data : "(null)", want);
        ps_buf_free(&b);
        if (at == len)
          continue;
        char str[48];
        memcpy(str, s, len);
        str[len] = '\0';
        Event__Event ev = EVENT__EVENT__INIT;
        ev.id = str;
        int rc = ps_pbjson_encode(&b, &ev.base);
        if (probes[p] >= 0x80) {
          PS_CHECK_MSG(rc == PS_EINVAL, "length %zu, 0x%02x at %zu in a message: rc %d", len, probes[p], at,
                       rc);
        } else {
          char wj[320];
          snprintf(wj, sizeof wj, "{\"id\":%s}", want);
          PS_CHECK_MSG(rc == 0 && strcmp(b.data, wj) == 0, "length %zu, 0x%02x at %zu in a message: %s", len,
                       probes[p], at, b.data ? b.data : "(null)");
        }
        ps_buf_free(&b);
        if (probes[p] == 0xc3 && at + 1 < len) {
          str[at + 1] = (char)0xa9;
          rc = ps_pbjson_encode(&b, &ev.base);
          PS_CHECK_MSG(rc == 0 && strstr(b.data, "\xc3\xa9"), "length %zu, U+00E9 at %zu", len, at);
          ps_buf_free(&b);
        }
      }
}

/* Doubles as Go's protojson spells them (shortest form that reads back; 'e' below 1e-6 and from 1e21). */
PS_TEST(doubles_keep_their_spelling) {
  static const struct {
    double v;
    const char *want;
  } cases[] = {
      {0.1, "0.1"},
      {1e21, "1e+21"},
      {1e-7, "1e-7"},
      {123456789012345680000.0, "123456789012345680000"},
      {-0.0, "-0"},
      {5e-324, "5e-324"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {3.0, "3"},
      {-3.0, "-3"},
      {36028797018963972.0, "36028797018963970"}, /* integral, above 2^53: shortest digits, then zeros */
      {0.3, "0.3"},
      {2.5e-5, "0.000025"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ps_buf b = PS_BUF_INIT;
    ps_pbjson_put_double(&b, cases[i].v);
    int ok = b.data && strcmp(b.data, cases[i].want) == 0;
    PS_CHECK_MSG(ok, "%.17g: got %s, want %s", cases[i].v, b.data ? b.data : "(null)", cases[i].want);
    ps_buf_free(&b);
  }
}

PS_TEST_MAIN(PS_CASE(names_tables_shared_by_threads), PS_CASE(names_at_every_buffer_position),
             PS_CASE(strings_of_every_length), PS_CASE(doubles_keep_their_spelling))
