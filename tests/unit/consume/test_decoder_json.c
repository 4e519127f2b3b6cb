/* Tests of the json decoder: JSON records -> rows, into a sink that records what it is given. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/ps_topology_config.h"
#include "consume/ps_decoder.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "ps_test.h"

#include "consume/rec_sink.h"

/* ---- helpers ---- */

typedef struct {
  ps_decoder *dec;
  ps_table table;
  rec_sink sink;
  char err[512];
} fixture;

static int setup(fixture *f, ps_json_column_conf *cols, size_t n, int keep_unknown, char *unknown_column) {
  ps_log_setup(PS_LOG_ERROR, PS_LOG_TEXT);
  memset(f, 0, sizeof *f);
  ps_decoder_conf c = {PS_DECODER_JSON, cols, n, keep_unknown, unknown_column};
  f->table.name = "tbl";
  f->table.engine = "ENGINE = Memory";
  f->dec = ps_decoder_json_create(&c, &f->table);
  f->sink.base.ops = &rec_ops;
  f->sink.base.table = &f->table;
  return f->dec != NULL;
}

static void teardown(fixture *f) {
  rec_discard(&f->sink.base);
  ps_decoder_destroy(f->dec);
}

static int decode(fixture *f, const char *json) {
  ps_delivery d;
  memset(&d, 0, sizeof d);
  d.body = json;
  d.len = strlen(json);
  d.content_type = "application/json";
  f->err[0] = '\0';
  return ps_decoder_decode(f->dec, &d, &f->sink.base, f->err, sizeof f->err);
}

#define ROW(f, r, c) ((f)->sink.rows[r][c])

/* One column of type t read from field "v". */
static int one_column(fixture *f, ps_col_type t, char *def, int required) {
  static ps_json_column_conf col;
  col = (ps_json_column_conf){"v", NULL, t, def, required};
  return setup(f, &col, 1, 0, NULL);
}

/* Decodes {"v": json} into a one-column table of type t; returns decode's result. */
static int coerce(fixture *f, ps_col_type t, const char *json) {
  if (!one_column(f, t, NULL, 0))
    return -999;
  char body[512];
  snprintf(body, sizeof body, "{\"v\": %s}", json);
  return decode(f, body);
}

/* ---- tests ---- */

PS_TEST(test_object_and_types) {
  ps_json_column_conf cols[] = {
      {"id", NULL, PS_COL_STRING, NULL, 0},     {"n", NULL, PS_COL_INT64, NULL, 0},
      {"u", NULL, PS_COL_UINT64, NULL, 0},      {"f", NULL, PS_COL_FLOAT64, NULL, 0},
      {"at", "time", PS_COL_DATETIME, NULL, 0},
  };
  fixture f;
  PS_CHECK(setup(&f, cols, 5, 0, NULL));
  PS_CHECK_INT_EQ(f.table.ncols, 5);
  PS_CHECK_STR_EQ(f.table.name, "tbl");
  PS_CHECK_STR_EQ(f.table.engine, "ENGINE = Memory");
  PS_CHECK_STR_EQ(f.table.cols[4].name, "at");
  PS_CHECK_INT_EQ(f.table.cols[4].type, PS_COL_DATETIME);
  int n = decode(
      &f, "{\"id\":\"a\\u0000b\\u00e9\",\"n\":-42,\"u\":7,\"f\":2.5,\"time\":\"2024-01-02T03:04:05Z\"}");
  PS_CHECK_MSG(n == 1, "decode: %d %s", n, f.err);
  PS_CHECK_INT_EQ(ROW(&f, 0, 0).len, 5);
  PS_CHECK(memcmp(ROW(&f, 0, 0).s, "a\0b\xC3\xA9", 5) == 0);
  PS_CHECK_INT_EQ(ROW(&f, 0, 1).i, -42);
  PS_CHECK_INT_EQ(ROW(&f, 0, 2).u, 7);
  PS_CHECK(ROW(&f, 0, 3).f == 2.5);
  PS_CHECK_INT_EQ(ROW(&f, 0, 4).i, 1704164645);
  teardown(&f);
}

PS_TEST(test_array_of_objects) {
  ps_json_column_conf cols[] = {{"id", NULL, PS_COL_STRING, NULL, 0}, {"n", NULL, PS_COL_INT64, NULL, 0}};
  fixture f;
  PS_CHECK(setup(&f, cols, 2, 0, NULL));
  PS_CHECK_INT_EQ(decode(&f, "[{\"id\":\"a\",\"n\":1},{\"id\":\"b\"},{\"n\":3}]"), 3);
  PS_CHECK_STR_EQ(ROW(&f, 0, 0).s, "a");
  PS_CHECK_STR_EQ(ROW(&f, 1, 0).s, "b");
  PS_CHECK_INT_EQ(ROW(&f, 1, 1).i, 0);
  PS_CHECK_STR_EQ(ROW(&f, 2, 0).s, "");
  PS_CHECK_INT_EQ(ROW(&f, 2, 1).i, 3);
  rec_discard(&f.sink.base);
  PS_CHECK_INT_EQ(decode(&f, "[]"), 0);
  PS_CHECK_INT_EQ(f.sink.nrows, 0);
  /* Decoders are reused across messages. */
  PS_CHECK_INT_EQ(decode(&f, "{\"id\":\"c\"}"), 1);
  PS_CHECK_STR_EQ(ROW(&f, 0, 0).s, "c");
  teardown(&f);
}

PS_TEST(test_nested_paths) {
  ps_json_column_conf cols[] = {
      {"user_id", "user.id", PS_COL_INT64, NULL, 0},
      {"city", "user.address.city", PS_COL_STRING, "unknown", 0},
      {"deep", "a.b.c", PS_COL_STRING, NULL, 0},
  };
  fixture f;
  PS_CHECK(setup(&f, cols, 3, 0, NULL));
  PS_CHECK_INT_EQ(
      decode(&f, "{\"user\":{\"id\":\"12\",\"address\":{\"city\":\"Pune\"}},\"a\":{\"b\":{\"c\":[1]}}}"), 1);
  PS_CHECK_INT_EQ(ROW(&f, 0, 0).i, 12);
  PS_CHECK_STR_EQ(ROW(&f, 0, 1).s, "Pune");
  PS_CHECK_STR_EQ(ROW(&f, 0, 2).s, "[1]");
  rec_discard(&f.sink.base);
  /* A path through a non-object finds nothing. */
  PS_CHECK_INT_EQ(decode(&f, "{\"user\":{\"id\":5,\"address\":\"Pune\"},\"a\":7}"), 1);
  PS_CHECK_STR_EQ(ROW(&f, 0, 1).s, "unknown");
  PS_CHECK_STR_EQ(ROW(&f, 0, 2).s, "");
  teardown(&f);
}

PS_TEST(test_string_coercions) {
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"\"text\"", "text"},
      {"42", "42"},
      {"-7", "-7"},
      {"1.5", "1.5"},
      {"1e21", "1e+21"},
      {"true", "true"},
      {"false", "false"},
      {"{\"b\": 1, \"a\": [1, 2.5, \"x\", null, {}], \"c\": {\"d\": \"\\n\"}}",
       "{\"b\":1,\"a\":[1,2.5,\"x\",null,{}],\"c\":{\"d\":\"\\n\"}}"},
      {"[]", "[]"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fixture f;
    int n = coerce(&f, PS_COL_STRING, cases[i].in);
    PS_CHECK_MSG(n == 1, "%s: %d %s", cases[i].in, n, f.err);
    PS_CHECK_STR_EQ(ROW(&f, 0, 0).s, cases[i].out);
    teardown(&f);
  }
}

PS_TEST(test_int_coercions) {
  static const struct {
    const char *in;
    long long out;
  } ok[] = {{"42", 42},
            {"-42", -42},
            {"42.0", 42},
            {"\"42\"", 42},
            {"\"-7\"", -7},
            {"\"+7\"", 7},
            {"\"1e3\"", 1000},
            {"\"12.0\"", 12},
            {"-9223372036854775808", INT64_MIN},
            {"\"9223372036854775807\"", INT64_MAX}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    fixture f;
    int n = coerce(&f, PS_COL_INT64, ok[i].in);
    PS_CHECK_MSG(n == 1, "%s: %d %s", ok[i].in, n, f.err);
    PS_CHECK_MSG(ROW(&f, 0, 0).i == ok[i].out, "%s -> %lld", ok[i].in, (long long)ROW(&f, 0, 0).i);
    teardown(&f);
  }
  static const char *bad[] = {"1.5",  "\"abc\"", "\"\"",     "true",   "{}", "[1]", "\"9223372036854775808\"",
                              "1e19", "\"12 \"", "\"0x10\"", "\"1.5\""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fixture f;
    int n = coerce(&f, PS_COL_INT64, bad[i]);
    PS_CHECK_MSG(n == PS_EINVAL, "%s: %d", bad[i], n);
    PS_CHECK_MSG(strstr(f.err, "field \"v\"") && strstr(f.err, "int64"), "%s: %s", bad[i], f.err);
    PS_CHECK_INT_EQ(f.sink.nrows, 0);
    teardown(&f);
  }
}

PS_TEST(test_uint_coercions) {
  static const struct {
    const char *in;
    unsigned long long out;
  } ok[] = {{"0", 0},
            {"7", 7},
            {"\"18446744073709551615\"", UINT64_MAX},
            {"1.8e19", 18000000000000000000ULL},
            {"\"1e3\"", 1000}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    fixture f;
    int n = coerce(&f, PS_COL_UINT64, ok[i].in);
    PS_CHECK_MSG(n == 1, "%s: %d %s", ok[i].in, n, f.err);
    PS_CHECK_MSG(ROW(&f, 0, 0).u == ok[i].out, "%s -> %llu", ok[i].in, (unsigned long long)ROW(&f, 0, 0).u);
    teardown(&f);
  }
  static const char *bad[] = {"-1", "\"-1\"", "\"18446744073709551616\"", "2e19", "-0.5", "false"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fixture f;
    PS_CHECK_MSG(coerce(&f, PS_COL_UINT64, bad[i]) == PS_EINVAL, "%s", bad[i]);
    PS_CHECK_MSG(strstr(f.err, "unsigned"), "%s: %s", bad[i], f.err);
    teardown(&f);
  }
}

PS_TEST(test_float_coercions) {
  static const struct {
    const char *in;
    double out;
  } ok[] = {{"1.5", 1.5}, {"2", 2.0}, {"\"3.25\"", 3.25}, {"\"-1e-3\"", -0.001}, {"-0.0", -0.0}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    fixture f;
    int n = coerce(&f, PS_COL_FLOAT64, ok[i].in);
    PS_CHECK_MSG(n == 1, "%s: %d %s", ok[i].in, n, f.err);
    PS_CHECK_MSG(ROW(&f, 0, 0).f == ok[i].out, "%s -> %g", ok[i].in, ROW(&f, 0, 0).f);
    teardown(&f);
  }
  static const char *bad[] = {"\"1e400\"", "\"nan\"", "\"inf\"", "\"0x10\"", "true", "\"\"", "[]"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fixture f;
    PS_CHECK_MSG(coerce(&f, PS_COL_FLOAT64, bad[i]) == PS_EINVAL, "%s", bad[i]);
    PS_CHECK_MSG(strstr(f.err, "float64"), "%s: %s", bad[i], f.err);
    teardown(&f);
  }
}

PS_TEST(test_datetime_coercions) {
  static const char *ok[] = {"1704164645",
                             "1704164645123",
                             "1704164645123456",
                             "1704164645123456789",
                             "1704164645.9",
                             "\"1704164645\"",
                             "\"1704164645123\"",
                             "\"2024-01-02T03:04:05Z\"",
                             "\"2024-01-02 04:04:05+01:00\"",
                             "\"2024-01-02T03:04:05.123456Z\""};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    fixture f;
    int n = coerce(&f, PS_COL_DATETIME, ok[i]);
    PS_CHECK_MSG(n == 1, "%s: %d %s", ok[i], n, f.err);
    PS_CHECK_MSG(ROW(&f, 0, 0).i == 1704164645, "%s -> %lld", ok[i], (long long)ROW(&f, 0, 0).i);
    teardown(&f);
  }
  static const char *bad[] = {"\"yesterday\"", "-5", "true", "{}", "1e30", "\"2024-13-01\""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fixture f;
    PS_CHECK_MSG(coerce(&f, PS_COL_DATETIME, bad[i]) == PS_EINVAL, "%s", bad[i]);
    PS_CHECK_MSG(strstr(f.err, "datetime"), "%s: %s", bad[i], f.err);
    teardown(&f);
  }
}

PS_TEST(test_defaults) {
  ps_json_column_conf cols[] = {
      {"s", NULL, PS_COL_STRING, "none", 0},
      {"i", NULL, PS_COL_INT64, "-7", 0},
      {"u", NULL, PS_COL_UINT64, "9", 0},
      {"f", NULL, PS_COL_FLOAT64, "0.5", 0},
      {"t", NULL, PS_COL_DATETIME, "2024-01-02T03:04:05Z", 0},
      {"z", NULL, PS_COL_FLOAT64, NULL, 0},
  };
  fixture f;
  PS_CHECK(setup(&f, cols, 6, 0, NULL));
  PS_CHECK_INT_EQ(
      decode(&f, "[{}, {\"s\":null,\"i\":null,\"u\":null,\"f\":null,\"t\":null,\"z\":null}, {\"s\":\"x\"}]"),
      3);
  for (int r = 0; r < 2; r++) {
    PS_CHECK_STR_EQ(ROW(&f, r, 0).s, "none");
    PS_CHECK_INT_EQ(ROW(&f, r, 1).i, -7);
    PS_CHECK_INT_EQ(ROW(&f, r, 2).u, 9);
    PS_CHECK(ROW(&f, r, 3).f == 0.5);
    PS_CHECK_INT_EQ(ROW(&f, r, 4).i, 1704164645);
    PS_CHECK(ROW(&f, r, 5).f == 0.0);
  }
  PS_CHECK_STR_EQ(ROW(&f, 2, 0).s, "x");
  teardown(&f);
}

PS_TEST(test_required) {
  ps_json_column_conf cols[] = {{"id", NULL, PS_COL_STRING, NULL, 1},
                                {"uid", "user.id", PS_COL_INT64, "5", 1}};
  fixture f;
  PS_CHECK(setup(&f, cols, 2, 0, NULL));
  PS_CHECK_INT_EQ(decode(&f, "{\"id\":\"a\",\"user\":{\"id\":1}}"), 1);
  rec_discard(&f.sink.base);
  PS_CHECK_INT_EQ(decode(&f, "{\"user\":{\"id\":1}}"), PS_EINVAL);
  PS_CHECK_STR_EQ(f.err, "field \"id\" is required but missing");
  PS_CHECK_INT_EQ(decode(&f, "{\"id\":\"a\",\"user\":{\"id\":null}}"), PS_EINVAL);
  PS_CHECK_STR_EQ(f.err, "field \"user.id\" is required but null");
  /* One bad element fails the message: nothing of it is written. */
  PS_CHECK_INT_EQ(
      decode(&f, "[{\"id\":\"a\",\"user\":{\"id\":1}},{\"id\":\"b\",\"user\":{\"id\":2}},{\"id\":\"c\"}]"),
      PS_EINVAL);
  PS_CHECK_STR_EQ(f.err, "element 2: field \"user.id\" is required but missing");
  PS_CHECK_INT_EQ(decode(&f, "[{\"id\":\"a\",\"user\":{\"id\":1}},{\"id\":\"b\",\"user\":{\"id\":\"x\"}}]"),
                  PS_EINVAL);
  PS_CHECK_STR_EQ(f.err, "element 1: field \"user.id\" (int64): string \"x\" is not a 64-bit integer");
  PS_CHECK_INT_EQ(f.sink.nrows, 0);
  teardown(&f);
}

PS_TEST(test_keep_unknown) {
  ps_json_column_conf cols[] = {{"id", NULL, PS_COL_STRING, NULL, 0},
                                {"uid", "user.id", PS_COL_INT64, NULL, 0}};
  fixture f;
  PS_CHECK(setup(&f, cols, 2, 1, NULL));
  PS_CHECK_INT_EQ(f.table.ncols, 3);
  PS_CHECK_STR_EQ(f.table.cols[2].name, "extra");
  PS_CHECK_INT_EQ(f.table.cols[2].type, PS_COL_STRING);
  PS_CHECK_INT_EQ(
      decode(&f, "[{\"z\":1,\"id\":\"a\",\"user\":{\"id\":1,\"name\":\"n\"},\"w\":{\"q\":[1,\"\\u00e9\"]}},"
                 "{\"id\":\"b\"}]"),
      2);
  PS_CHECK_STR_EQ(ROW(&f, 0, 2).s, "{\"z\":1,\"w\":{\"q\":[1,\"\xC3\xA9\"]}}");
  PS_CHECK_STR_EQ(ROW(&f, 1, 2).s, "{}");
  teardown(&f);

  PS_CHECK(setup(&f, cols, 2, 1, "rest"));
  PS_CHECK_STR_EQ(f.table.cols[2].name, "rest");
  teardown(&f);

  /* Off: unknown fields are dropped, and the table has no such column. */
  PS_CHECK(setup(&f, cols, 2, 0, "rest"));
  PS_CHECK_INT_EQ(f.table.ncols, 2);
  PS_CHECK_INT_EQ(decode(&f, "{\"id\":\"a\",\"other\":1}"), 1);
  teardown(&f);
}

PS_TEST(test_not_objects) {
  ps_json_column_conf cols[] = {{"id", NULL, PS_COL_STRING, NULL, 0}};
  static const struct {
    const char *in, *err;
  } cases[] = {
      {"42", "the body is an integer, not an object or an array of objects"},
      {"\"s\"", "the body is a string, not an object or an array of objects"},
      {"null", "the body is null, not an object or an array of objects"},
      {"[{\"id\":\"a\"}, 1]", "element 1: is an integer, not an object"},
      {"[[]]", "element 0: is an array, not an object"},
  };
  fixture f;
  PS_CHECK(setup(&f, cols, 1, 0, NULL));
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    PS_CHECK_MSG(decode(&f, cases[i].in) == PS_EINVAL, "%s", cases[i].in);
    PS_CHECK_STR_EQ(f.err, cases[i].err);
  }
  static const char *broken[] = {"", "{", "not json", "{\"id\":\"a\"} trailing", "{\"id\":\"\xff\"}"};
  for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
    PS_CHECK_MSG(decode(&f, broken[i]) == PS_EINVAL, "%s", broken[i]);
    PS_CHECK_MSG(!strncmp(f.err, "not JSON: ", 10), "%s: %s", broken[i], f.err);
  }
  PS_CHECK_INT_EQ(f.sink.nrows, 0);
  teardown(&f);
}

PS_TEST(test_bad_configurations) {
  fixture f;
  ps_json_column_conf bad_default[] = {{"n", NULL, PS_COL_INT64, "abc", 0}};
  PS_CHECK(!setup(&f, bad_default, 1, 0, NULL));
  ps_json_column_conf bad_time[] = {{"t", NULL, PS_COL_DATETIME, "soon", 0}};
  PS_CHECK(!setup(&f, bad_time, 1, 0, NULL));
  ps_json_column_conf dup[] = {{"a", NULL, PS_COL_INT64, NULL, 0}, {"a", "b", PS_COL_STRING, NULL, 0}};
  PS_CHECK(!setup(&f, dup, 2, 0, NULL));
  ps_json_column_conf clash[] = {{"extra", NULL, PS_COL_STRING, NULL, 0}};
  PS_CHECK(!setup(&f, clash, 1, 1, NULL));
  PS_CHECK(setup(&f, clash, 1, 0, NULL));
  teardown(&f);
  ps_decoder_destroy(NULL);
}

PS_TEST_MAIN(PS_CASE(test_object_and_types), PS_CASE(test_array_of_objects), PS_CASE(test_nested_paths),
             PS_CASE(test_string_coercions), PS_CASE(test_int_coercions), PS_CASE(test_uint_coercions),
             PS_CASE(test_float_coercions), PS_CASE(test_datetime_coercions), PS_CASE(test_defaults),
             PS_CASE(test_required), PS_CASE(test_keep_unknown), PS_CASE(test_not_objects),
             PS_CASE(test_bad_configurations))
