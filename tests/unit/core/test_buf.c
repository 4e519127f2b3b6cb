/* Unit tests of ps_buf's decimal writers: every number of digits, both signs, the extremes, as printf
   writes them. */
#include <inttypes.h>
#include <stdio.h>

#include "core/ps_buf.h"
#include "ps_test.h"

/* Written between two characters, so that a writer that touches a byte beside its digits shows. */
static int same_as_printf_u64(uint64_t v) {
  char want[40];
  snprintf(want, sizeof want, "<%" PRIu64 ">", v);
  ps_buf b = PS_BUF_INIT;
  ps_buf_puts(&b, "<");
  ps_buf_put_u64(&b, v);
  ps_buf_puts(&b, ">");
  int ok = b.len == strlen(want) && strcmp(b.data, want) == 0;
  if (!ok)
    fprintf(stderr, "u64: want %s, got %s\n", want, b.data);
  ps_buf_free(&b);
  return ok;
}

static int same_as_printf_i64(int64_t v) {
  char want[32];
  snprintf(want, sizeof want, "%" PRId64, v);
  ps_buf b = PS_BUF_INIT;
  ps_buf_put_i64(&b, v);
  int ok = b.len == strlen(want) && strcmp(b.data, want) == 0;
  if (!ok)
    fprintf(stderr, "i64: want %s, got %s\n", want, b.data);
  ps_buf_free(&b);
  return ok;
}

/* Each power of ten and its neighbours, so every count of digits, odd and even, is written. */
PS_TEST(u64_at_every_number_of_digits) {
  PS_CHECK(same_as_printf_u64(0));
  PS_CHECK(same_as_printf_u64(UINT64_MAX));
  for (uint64_t p = 1; p <= UINT64_MAX / 10; p *= 10) {
    PS_CHECK_MSG(same_as_printf_u64(p - 1) && same_as_printf_u64(p) && same_as_printf_u64(p + 1),
                 "at %" PRIu64, p);
    PS_CHECK(same_as_printf_u64(p * 10 - 1));
    PS_CHECK(same_as_printf_u64(p * 7 + 3));
  }
}

PS_TEST(u64_every_value_below_100000_and_a_spread_above) {
  int bad = 0;
  for (uint64_t v = 0; v < 100000; v++)
    bad += !same_as_printf_u64(v);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 100000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    bad += !same_as_printf_u64(x >> (i % 64));
  }
  PS_CHECK_INT_EQ(bad, 0);
}

PS_TEST(i64_signs_and_extremes) {
  static const int64_t v[] = {0,  1,    -1,         9,           -9,        10,        -10,
                              99, -100, 1764300000, -1764300000, INT64_MAX, INT64_MIN, INT64_MIN + 1};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    PS_CHECK_MSG(same_as_printf_i64(v[i]), "value %" PRId64, v[i]);
}

/* The writers append: what was in the buffer stays, and the buffer stays a C string. */
PS_TEST(appends_after_what_is_there) {
  ps_buf b = PS_BUF_INIT;
  for (int i = 0; i < 300; i++) { /* past the first allocation */
    ps_buf_put_i64(&b, -i);
    ps_buf_putc(&b, ',');
  }
  PS_CHECK(strncmp(b.data, "0,-1,-2,", 8) == 0);
  PS_CHECK(b.data[b.len] == '\0');
  PS_CHECK(strcmp(b.data + b.len - 5, "-299,") == 0);
  ps_buf_free(&b);
}

PS_TEST_MAIN(PS_CASE(u64_at_every_number_of_digits), PS_CASE(u64_every_value_below_100000_and_a_spread_above),
             PS_CASE(i64_signs_and_extremes), PS_CASE(appends_after_what_is_there))
