/*
 * Tests of the events decoder: an Events message (application/json), a
 * packed one (one Events per line) or a packed binary one (length-delimited
 * binary Events) -> one row of ps_events_table per event, into a sink that
 * keeps copies of what it is given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_events.h"
#include "codec/ps_pbjson.h"
#include "consume/ps_decoder.h"
#include "core/ps_arena.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "ps_test.h"

#include "consume/rec_sink.h"

typedef struct {
  ps_decoder *dec;
  rec_sink sink;
  char err[512];
} fixture;

static void setup(fixture *f) {
  ps_log_setup(PS_LOG_ERROR, PS_LOG_TEXT);
  memset(f, 0, sizeof *f);
  f->dec = ps_decoder_events_create();
  f->sink.base.ops = &rec_ops;
  f->sink.base.table = &ps_events_table;
}

static void teardown(fixture *f) {
  rec_discard(&f->sink.base);
  ps_decoder_destroy(f->dec);
}

static int decode_n(fixture *f, const char *content_type, const char *body, size_t len) {
  ps_delivery d;
  memset(&d, 0, sizeof d);
  d.body = body;
  d.len = len;
  d.content_type = content_type;
  d.timestamp = 1700000000;
  f->err[0] = '\0';
  return ps_decoder_decode(f->dec, &d, &f->sink.base, f->err, sizeof f->err);
}

static int decode(fixture *f, const char *content_type, const char *body) {
  return decode_n(f, content_type, body, strlen(body));
}

/* Appends the binary form of Events e to out, preceded by its length as a varint. */
static void put_delimited(ps_buf *out, const Event__Events *e) {
  size_t len = event__events__get_packed_size(e);
  uint8_t v[10];
  size_t k = 0;
  for (size_t x = len; x >= 0x80; x >>= 7)
    v[k++] = (uint8_t)(x | 0x80);
  v[k] = (uint8_t)(len >> (7 * k));
  k++;
  ps_buf_append(out, v, k);
  ps_buf_reserve(out, len);
  event__events__pack(e, (uint8_t *)out->data + out->len);
  out->len += len;
}

/* The same for the Events of a proto3 JSON text. */
static void put_json_delimited(ps_buf *out, const char *json) {
  ps_arena *a = ps_arena_create(4096);
  ProtobufCAllocator alloc = ps_arena_allocator(a);
  ProtobufCMessage *m = NULL;
  char why[256];
  if (ps_pbjson_decode(&event__events__descriptor, json, strlen(json), &alloc, &m, why, sizeof why) != 0) {
    fprintf(stderr, "test JSON does not decode: %s\n", why);
    abort();
  }
  put_delimited(out, (Event__Events *)m);
  ps_arena_destroy(a);
}

#define S(f, r, c) ((f)->sink.rows[r][c].s)

static const char one_doc[] =
    "{\"header\":{\"sessionId\":\"s1\",\"userId\":\"7\"},\"events\":["
    "{\"id\":\"a\",\"timestamp\":\"2024-01-01T00:00:00Z\",\"clickEvent\":{\"elementId\":\"buy\"}},"
    "{\"id\":\"b\",\"timestamp\":\"2024-01-01T00:00:01Z\",\"clickEvent\":{\"position\":2}}]}";

PS_TEST(one_events_message_gives_a_row_per_event) {
  fixture f;
  setup(&f);
  PS_CHECK_INT_EQ(decode(&f, "application/json", one_doc), 2);
  PS_CHECK_INT_EQ(f.sink.nrows, 2);
  PS_CHECK_STR_EQ(S(&f, 0, PS_EV_EVENT_ID), "a");
  PS_CHECK_STR_EQ(S(&f, 1, PS_EV_EVENT_ID), "b");
  PS_CHECK_STR_EQ(S(&f, 1, PS_EV_SESSION_ID), "s1");
  PS_CHECK_INT_EQ(f.sink.rows[1][PS_EV_USER_ID].i, 7);
  PS_CHECK_STR_EQ(S(&f, 0, PS_EV_EVENT_TYPE), "ClickEvent");
  PS_CHECK_STR_EQ(S(&f, 1, PS_EV_PAYLOAD), "{\"position\":2}");
  PS_CHECK_INT_EQ(f.sink.rows[0][PS_EV_RECEIVED_AT].i, 1700000000);
  teardown(&f);
}

PS_TEST(a_packed_message_gives_the_rows_of_every_line_each_with_its_header) {
  fixture f;
  setup(&f);
  char body[1024];
  snprintf(body, sizeof body,
           "%s\n{\"header\":{\"sessionId\":\"s2\",\"os\":\"ios\"},\"events\":["
           "{\"id\":\"c\",\"timestamp\":\"2024-01-01T00:00:02Z\",\"clickEvent\":{\"page\":\"home\"}}]}\n",
           one_doc);
  PS_CHECK_INT_EQ(decode(&f, PS_CONTENT_TYPE_PACKED, body), 3);
  PS_CHECK_INT_EQ(f.sink.nrows, 3);
  PS_CHECK_STR_EQ(S(&f, 1, PS_EV_SESSION_ID), "s1");
  PS_CHECK_STR_EQ(S(&f, 1, PS_EV_OS), "");
  PS_CHECK_STR_EQ(S(&f, 2, PS_EV_EVENT_ID), "c");
  PS_CHECK_STR_EQ(S(&f, 2, PS_EV_SESSION_ID), "s2");
  PS_CHECK_STR_EQ(S(&f, 2, PS_EV_OS), "ios");
  PS_CHECK_INT_EQ(f.sink.rows[2][PS_EV_USER_ID].i, 0);
  PS_CHECK_STR_EQ(S(&f, 2, PS_EV_PAYLOAD), "{\"page\":\"home\"}");
  teardown(&f);
}

PS_TEST(a_packed_message_without_a_final_newline_or_with_empty_lines_reads_the_same) {
  fixture f;
  setup(&f);
  char body[1024];
  snprintf(body, sizeof body, "\n%s\n\n%s", one_doc, one_doc);
  PS_CHECK_INT_EQ(decode(&f, PS_CONTENT_TYPE_PACKED, body), 4);
  PS_CHECK_INT_EQ(f.sink.nrows, 4);
  PS_CHECK_STR_EQ(S(&f, 3, PS_EV_EVENT_ID), "b");
  teardown(&f);
}

PS_TEST(a_bad_line_refuses_the_whole_packed_message_and_says_which) {
  fixture f;
  setup(&f);
  char body[1024];
  snprintf(body, sizeof body, "%s\n{\"header\":{},\"events\":[{\"id\":\"x\",\"nope\":1}]}\n", one_doc);
  PS_CHECK_INT_EQ(decode(&f, PS_CONTENT_TYPE_PACKED, body), PS_EINVAL);
  PS_CHECK_INT_EQ(f.sink.nrows, 0); /* nothing of line 1 was written */
  PS_CHECK_MSG(strncmp(f.err, "line 2: ", 8) == 0 && strstr(f.err, "nope"), "err: %s", f.err);
  teardown(&f);
}

PS_TEST(two_lines_without_the_packed_content_type_are_refused) {
  fixture f;
  setup(&f);
  char body[1024];
  snprintf(body, sizeof body, "%s\n%s\n", one_doc, one_doc);
  PS_CHECK_INT_EQ(decode(&f, "application/json", body), PS_EINVAL);
  PS_CHECK_INT_EQ(f.sink.nrows, 0);
  PS_CHECK(f.err[0] != '\0');
  teardown(&f);
}

static const char two_doc[] = "{\"header\":{\"sessionId\":\"s2\",\"os\":\"ios\"},\"events\":["
                              "{\"id\":\"c\",\"timestamp\":\"2024-01-01T00:00:02Z\",\"clickEvent\":{\"page\":\"home\"}}]}";

/* PUBLISH_FORMAT=protobuf: the same Events, binary and length-delimited, give the same rows as lines of JSON. */
PS_TEST(a_packed_binary_message_gives_the_rows_its_json_lines_give) {
  fixture f, g;
  setup(&f);
  setup(&g);
  ps_buf pb = PS_BUF_INIT;
  put_json_delimited(&pb, one_doc);
  put_json_delimited(&pb, two_doc);
  char nd[1024];
  snprintf(nd, sizeof nd, "%s\n%s\n", one_doc, two_doc);
  PS_CHECK_INT_EQ(decode_n(&f, PS_CONTENT_TYPE_PACKED_PB, pb.data, pb.len), 3);
  PS_CHECK_MSG(f.err[0] == '\0', "err: %s", f.err);
  PS_CHECK_INT_EQ(decode(&g, PS_CONTENT_TYPE_PACKED, nd), 3);
  PS_CHECK_INT_EQ(f.sink.nrows, 3);
  for (size_t r = 0; r < 3; r++)
    for (size_t c = 0; c < PS_EV_NCOLS; c++) {
      if (ps_events_table.cols[c].type == PS_COL_STRING)
        PS_CHECK_MSG(strcmp(S(&f, r, c), S(&g, r, c)) == 0, "row %zu %s: '%s' / '%s'", r,
                     ps_events_table.cols[c].name, S(&f, r, c), S(&g, r, c));
      else
        PS_CHECK_MSG(f.sink.rows[r][c].i == g.sink.rows[r][c].i, "row %zu %s", r, ps_events_table.cols[c].name);
    }
  PS_CHECK_STR_EQ(S(&f, 2, PS_EV_SESSION_ID), "s2");
  PS_CHECK_STR_EQ(S(&f, 2, PS_EV_PAYLOAD), "{\"page\":\"home\"}");
  ps_buf_free(&pb);
  teardown(&f);
  teardown(&g);
}

/* A message cut short, a length past its end, an endless varint, bytes that are no Events, or a string that is
   not UTF-8: the whole message is refused, nothing written, and the error names the Events. */
PS_TEST(a_damaged_packed_binary_message_is_refused_whole) {
  fixture f;
  setup(&f);
  ps_buf pb = PS_BUF_INIT;
  put_json_delimited(&pb, one_doc);
  size_t first = pb.len;
  put_json_delimited(&pb, two_doc);
  PS_CHECK_INT_EQ(decode_n(&f, PS_CONTENT_TYPE_PACKED_PB, pb.data, pb.len - 1), PS_EINVAL);
  PS_CHECK_INT_EQ(f.sink.nrows, 0);
  PS_CHECK_MSG(strncmp(f.err, "Events 2: ", 10) == 0 && strstr(f.err, "announced"), "err: %s", f.err);
  PS_CHECK_INT_EQ(decode_n(&f, PS_CONTENT_TYPE_PACKED_PB, pb.data, first + 1), PS_EINVAL);
  PS_CHECK_MSG(strstr(f.err, "Events 2") != NULL, "err: %s", f.err);

  static const char endless[] = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01";
  PS_CHECK_INT_EQ(decode_n(&f, PS_CONTENT_TYPE_PACKED_PB, endless, sizeof endless - 1), PS_EINVAL);
  PS_CHECK_MSG(strstr(f.err, "Events 1") && strstr(f.err, "length"), "err: %s", f.err);

  static const char junk[] = "\x03\xff\xff\xff"; /* 3 bytes that are no protobuf message */
  PS_CHECK_INT_EQ(decode_n(&f, PS_CONTENT_TYPE_PACKED_PB, junk, sizeof junk - 1), PS_EINVAL);
  PS_CHECK_MSG(strstr(f.err, "Events 1") != NULL, "err: %s", f.err);

  Event__Header h = EVENT__HEADER__INIT;
  h.sessionid = "s\xc3";
  Event__Events bad = EVENT__EVENTS__INIT;
  bad.header = &h;
  ps_buf_reset(&pb);
  put_json_delimited(&pb, one_doc);
  put_delimited(&pb, &bad);
  PS_CHECK_INT_EQ(decode_n(&f, PS_CONTENT_TYPE_PACKED_PB, pb.data, pb.len), PS_EINVAL);
  PS_CHECK_MSG(strncmp(f.err, "Events 2: ", 10) == 0, "err: %s", f.err);
  PS_CHECK_INT_EQ(f.sink.nrows, 0);
  ps_buf_free(&pb);
  teardown(&f);
}

PS_TEST_MAIN(PS_CASE(one_events_message_gives_a_row_per_event),
             PS_CASE(a_packed_message_gives_the_rows_of_every_line_each_with_its_header),
             PS_CASE(a_packed_message_without_a_final_newline_or_with_empty_lines_reads_the_same),
             PS_CASE(a_bad_line_refuses_the_whole_packed_message_and_says_which),
             PS_CASE(two_lines_without_the_packed_content_type_are_refused),
             PS_CASE(a_packed_binary_message_gives_the_rows_its_json_lines_give),
             PS_CASE(a_damaged_packed_binary_message_is_refused_whole))
