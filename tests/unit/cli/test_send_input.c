/*
 * Unit tests of `penstock send`'s JSON input: one Events object, a JSON array
 * of them, one per line (and any mix), with the ids kept for --ids; and every
 * kind of bad input reported at its line and column with a reason.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/ps_send.h"
#include "core/ps_error.h"
#include "eventservice.pb-c.h"
#include "ps_test.h"

static int parse(const char *text, ps_send_batches *b, char *err) {
  err[0] = '\0';
  return ps_send_parse_json("in.json", text, strlen(text), 1, b, err, 512);
}

static Event__Events *unpack(const ps_send_batch *b) {
  return event__events__unpack(NULL, b->len, b->data);
}

PS_TEST(one_object) {
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  char err[512];
  const char *text =
      "{\"header\":{\"sessionId\":\"s\",\"userId\":\"42\"},\"events\":["
      "{\"id\":\"a\",\"timestamp\":\"1700000000\",\"clickEvent\":{\"page\":\"home\",\"position\":3}},"
      "{\"id\":\"b\",\"launchEvent\":{\"coldStart\":true}}]}\n";
  PS_CHECK_MSG(parse(text, &b, err) == 0, "%s", err);
  PS_CHECK_INT_EQ(b.n, 1);
  PS_CHECK_INT_EQ(b.events, 2);
  PS_CHECK_INT_EQ(b.v[0].events, 2);
  PS_CHECK_INT_EQ(b.v[0].ids_len, 4);
  PS_CHECK(memcmp(b.v[0].ids, "a\nb\n", 4) == 0);
  Event__Events *m = unpack(&b.v[0]);
  PS_CHECK(m != NULL);
  int ok = strcmp(m->header->sessionid, "s") == 0 && m->header->userid == 42 && m->n_events == 2 &&
           m->events[0]->event_of_case == EVENT__EVENT__EVENT_OF_CLICK_EVENT &&
           m->events[0]->clickevent->position == 3 && strcmp(m->events[0]->timestamp, "1700000000") == 0 &&
           m->events[1]->event_of_case == EVENT__EVENT__EVENT_OF_LAUNCH_EVENT &&
           m->events[1]->launchevent->coldstart;
  event__events__free_unpacked(m, NULL);
  ps_send_batches_free(&b);
  PS_CHECK(ok);
}

PS_TEST(array_lines_and_mixes) {
  static const struct {
    const char *text;
    size_t batches;
    const char *ids;
  } cases[] = {
      {"[{\"events\":[{\"id\":\"1\"}]},{\"events\":[{\"id\":\"2\"},{\"id\":\"3\"}]}]", 2, "1\n2\n3\n"},
      {" [ ] ", 0, ""}, /* an empty array only: nothing to send */
      {"{\"events\":[{\"id\":\"1\"}]}\n{\"events\":[{\"id\":\"2\"}]}\n{\"events\":[{\"id\":\"3\"}]}\n", 3,
       "1\n2\n3\n"},
      {"\r\n{\"events\":[{\"id\":\"1\"}]}\r\n\r\n[{\"events\":[]}, {\"events\":[{\"id\":\"2\"}]}]{}", 4,
       "1\n2\n"},
      {"\xEF\xBB\xBF{\"events\":[{\"id\":\"bom\"}]}", 1, "bom\n"},
      {"{\"header\":{\"os\":\"}{][\\\"\"},\"events\":[{\"id\":\"brackets\"}]}", 1, "brackets\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ps_send_batches b = PS_SEND_BATCHES_INIT;
    char err[512];
    int rc = parse(cases[i].text, &b, err);
    if (cases[i].batches == 0) {
      PS_CHECK_MSG(rc == PS_EINVAL && strstr(err, "no Events"), "case %zu: %d %s", i, rc, err);
      ps_send_batches_free(&b);
      continue;
    }
    PS_CHECK_MSG(rc == 0, "case %zu: %s", i, err);
    PS_CHECK_MSG(b.n == cases[i].batches, "case %zu: %zu batches", i, b.n);
    char ids[256] = "";
    for (size_t k = 0; k < b.n; k++)
      if (b.v[k].ids)
        strncat(ids, b.v[k].ids, b.v[k].ids_len);
    ps_send_batches_free(&b);
    PS_CHECK_MSG(strcmp(ids, cases[i].ids) == 0, "case %zu: ids %s", i, ids);
  }
}

PS_TEST(ids_only_when_asked) {
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  char err[512];
  const char *text = "{\"events\":[{\"id\":\"x\"}]}";
  PS_CHECK(ps_send_parse_json("in", text, strlen(text), 0, &b, err, sizeof err) == 0);
  PS_CHECK(b.n == 1 && b.v[0].ids == NULL && b.v[0].events == 1);
  ps_send_batches_free(&b);
  PS_CHECK(b.n == 0 && b.v == NULL);
}

/* Every bad input: the error starts with "in.json:LINE:COL: " and names the reason. */
PS_TEST(errors_have_line_column_and_reason) {
  static const struct {
    const char *text;
    const char *want;
  } cases[] = {
      /* syntax, at the offending character */
      {"{\"events\":[]}\n{\"header\":{},\n  \"events\":[{\"id\":\"x\",}]}\n", "in.json:3:23: invalid JSON"},
      {"{\"events\":[]}\n{\"header\":{\"os\":\"ab\ncd\"}}\n", "in.json:2:19: invalid JSON"},
      {"{\"events\":[]}\n{\"header\":{\"os\":\"ab", "in.json:2:"},
      {"{\"events\":[]}\n{\"events\":[}\n", "in.json:2:12: invalid JSON"},
      {"{\"events\":[]}\n{\"events\":[]", "in.json:2:12: invalid JSON: '}' expected near end of file"},
      {"{\"a\":1,\"a\":2}", "in.json:1:"},
      /* structure of the input */
      {"{\"events\":[]}\n42\n",
       "in.json:2:1: expected an Events object ('{') or an array of them ('['), found '4'"},
      {"\n\n  nope", "in.json:3:3: expected an Events object"},
      {"[{\"events\":[]} {\"events\":[]}]",
       "in.json:1:16: expected ',' or ']' after an array element, found '{'"},
      {"[{\"events\":[]},]", "in.json:1:16: expected an Events object ('{') in the array, found ']'"},
      {"[\n{\"events\":[]},\n", "the input ends inside the array opened at line 1"},
      {"[1]", "in.json:1:2: expected an Events object"},
      /* decodes as JSON, not as Events: at the object's start, with the field */
      {"{\"events\":[]}\n\n  {\"events\":[{\"clickEvent\":{\"position\":\"abc\"}}]}",
       "in.json:3:3: not a valid Events object: events[0].clickEvent.position"},
      {"[{\"events\":[]},\n {\"header\":{\"sessionI\":\"s\"}}]",
       "in.json:2:2: not a valid Events object: header: unknown field"},
      {"{\"events\":[{\"clickEvent\":{},\"launchEvent\":{}}]}", "same oneof"},
      /* U+0000 cannot be carried: refused where it is */
      {"{\"header\":{\"os\":\"a\\u0000b\"}}", "in.json:1:19: U+0000"},
      {"", "in.json: no Events in the input"},
      {"   \n ", "no Events in the input"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ps_send_batches b = PS_SEND_BATCHES_INIT;
    char err[512];
    int rc = parse(cases[i].text, &b, err);
    ps_send_batches_free(&b);
    PS_CHECK_MSG(rc == PS_EINVAL, "case %zu: rc %d", i, rc);
    PS_CHECK_MSG(strstr(err, cases[i].want) != NULL, "case %zu: error \"%s\" lacks \"%s\"", i, err,
                 cases[i].want);
  }
}

PS_TEST(escaped_backslash_before_u0000_is_not_a_nul) {
  /* "a\\u0000" is a backslash followed by the text u0000: fine. */
  ps_send_batches b = PS_SEND_BATCHES_INIT;
  char err[512];
  PS_CHECK_MSG(parse("{\"header\":{\"os\":\"a\\\\u0000\"}}", &b, err) == 0, "%s", err);
  Event__Events *m = unpack(&b.v[0]);
  int ok = m && strcmp(m->header->os, "a\\u0000") == 0;
  if (m)
    event__events__free_unpacked(m, NULL);
  ps_send_batches_free(&b);
  PS_CHECK(ok);
}

PS_TEST_MAIN(PS_CASE(one_object), PS_CASE(array_lines_and_mixes), PS_CASE(ids_only_when_asked),
             PS_CASE(errors_have_line_column_and_reason),
             PS_CASE(escaped_backslash_before_u0000_is_not_a_nul))
