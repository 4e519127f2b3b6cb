/*
 * Tests of the events decoder: an Events message (application/json) or a
 * packed one (one Events per line) -> one row of ps_events_table per event,
 * into a sink that keeps copies of what it is given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_events.h"
#include "consume/ps_decoder.h"
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

static int decode(fixture *f, const char *content_type, const char *body) {
  ps_delivery d;
  memset(&d, 0, sizeof d);
  d.body = body;
  d.len = strlen(body);
  d.content_type = content_type;
  d.timestamp = 1700000000;
  f->err[0] = '\0';
  return ps_decoder_decode(f->dec, &d, &f->sink.base, f->err, sizeof f->err);
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

PS_TEST_MAIN(PS_CASE(one_events_message_gives_a_row_per_event),
             PS_CASE(a_packed_message_gives_the_rows_of_every_line_each_with_its_header),
             PS_CASE(a_packed_message_without_a_final_newline_or_with_empty_lines_reads_the_same),
             PS_CASE(a_bad_line_refuses_the_whole_packed_message_and_says_which),
             PS_CASE(two_lines_without_the_packed_content_type_are_refused))
