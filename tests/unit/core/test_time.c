/* Unit tests of ps_time_parse: every timestamp form apps send, and what is refused. */
#include <string.h>

#include "core/ps_error.h"
#include "core/ps_time.h"
#include "ps_test.h"

static int parse(const char *s, long long *out) {
  int64_t v = -1;
  int rc = ps_time_parse(s, strlen(s), &v);
  *out = (long long)v;
  return rc;
}

PS_TEST(epoch_units_by_magnitude) {
  long long t;
  PS_CHECK_INT_EQ(parse("1764300000", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("1764300000123", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("1764300000123456", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("1764300000123456789", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("1764300000.75", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse(" 0 ", &t), 0);
  PS_CHECK_INT_EQ(t, 0);
}

PS_TEST(iso8601_forms) {
  long long t;
  PS_CHECK_INT_EQ(parse("2025-11-28T03:20:00Z", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("2025-11-28T03:20:00.123456Z", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("2025-11-28 03:20:00", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("2025-11-28T08:50:00+05:30", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("2025-11-27T22:20:00.5-0500", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("2025-11-28T04:20+01", &t), 0);
  PS_CHECK_INT_EQ(t, 1764300000);
  PS_CHECK_INT_EQ(parse("2025-11-28", &t), 0);
  PS_CHECK_INT_EQ(t, 1764288000);
  PS_CHECK_INT_EQ(parse("2024-02-29T00:00:00Z", &t), 0);
  PS_CHECK_INT_EQ(t, 1709164800);
}

PS_TEST(refuses_garbage_and_out_of_range) {
  long long t;
  const char *bad[] = {"", "abc", "12ab", "2025-13-01", "2025-11-28T25:00:00Z", "2025-11-28T03:20:00Q",
                       "2025-11-28T03", "1969-12-31T23:59:59Z", "2200-01-01", "-5", "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    PS_CHECK_MSG(parse(bad[i], &t) == PS_EINVAL, "accepted '%s' as %lld", bad[i], t);
}

PS_TEST_MAIN(PS_CASE(epoch_units_by_magnitude), PS_CASE(iso8601_forms), PS_CASE(refuses_garbage_and_out_of_range))
