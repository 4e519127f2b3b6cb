/* ps_time: timestamp parsing (see ps_time.h). */
#include "core/ps_time.h"

#include <ctype.h>

#include "core/ps_error.h"

#define PS__DATETIME_MAX 4294967295LL /* ClickHouse DateTime is a UInt32 */

static int ps__digits(const char *s, size_t n, size_t *i, int count, int *out) {
  int v = 0;
  for (int k = 0; k < count; k++) {
    if (*i >= n || !isdigit((unsigned char)s[*i]))
      return -1;
    v = v * 10 + (s[(*i)++] - '0');
  }
  *out = v;
  return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t ps__days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static int ps__parse_epoch(const char *s, size_t n, int64_t *out) {
  size_t i = 0;
  uint64_t u = 0;
  int digits = 0;
  if (i < n && (s[i] == '+'))
    i++;
  for (; i < n && isdigit((unsigned char)s[i]); i++) {
    if (++digits > 19) /* nanoseconds until year 2286 fit in 19 digits; more is nonsense */
      return PS_EINVAL;
    u = u * 10 + (uint64_t)(s[i] - '0'); /* 19 digits fit in a uint64_t */
  }
  if (!digits)
    return PS_EINVAL;
  if (i < n && s[i] == '.') { /* fraction: ignored (DateTime has seconds) */
    i++;
    while (i < n && isdigit((unsigned char)s[i]))
      i++;
  }
  if (i != n || u > (uint64_t)INT64_MAX)
    return PS_EINVAL;
  int64_t v = (int64_t)u;
  /* Magnitude tells the unit: seconds until year 5138 need < 1e11. */
  if (v >= 100000000000000000LL) /* 18 digits: nanoseconds */
    v /= 1000000000;
  else if (v >= 100000000000000LL)
    v /= 1000000;
  else if (v >= 100000000000LL)
    v /= 1000;
  if (v > PS__DATETIME_MAX)
    return PS_EINVAL;
  *out = v;
  return 0;
}

int ps_time_parse(const char *s, size_t n, int64_t *out) {
  while (n && isspace((unsigned char)*s))
    s++, n--;
  while (n && isspace((unsigned char)s[n - 1]))
    n--;
  if (!n)
    return PS_EINVAL;
  if (n < 10 || s[4] != '-')
    return ps__parse_epoch(s, n, out);

  size_t i = 0;
  int y, mo, d, h = 0, mi = 0, se = 0;
  if (ps__digits(s, n, &i, 4, &y) || s[i++] != '-' || ps__digits(s, n, &i, 2, &mo) || i >= n ||
      s[i++] != '-' || ps__digits(s, n, &i, 2, &d))
    return PS_EINVAL;
  if (mo < 1 || mo > 12 || d < 1 || d > 31)
    return PS_EINVAL;
  int64_t offset = 0;
  if (i < n) {
    if (s[i] != 'T' && s[i] != 't' && s[i] != ' ')
      return PS_EINVAL;
    i++;
    if (ps__digits(s, n, &i, 2, &h) || i >= n || s[i++] != ':' || ps__digits(s, n, &i, 2, &mi))
      return PS_EINVAL;
    if (i < n && s[i] == ':') {
      i++;
      if (ps__digits(s, n, &i, 2, &se))
        return PS_EINVAL;
    }
    if (h > 23 || mi > 59 || se > 60)
      return PS_EINVAL;
    if (i < n && (s[i] == '.' || s[i] == ',')) {
      i++;
      size_t f = i;
      while (i < n && isdigit((unsigned char)s[i]))
        i++;
      if (i == f)
        return PS_EINVAL;
    }
    if (i < n) {
      if (s[i] == 'Z' || s[i] == 'z') {
        i++;
      } else if (s[i] == '+' || s[i] == '-') {
        int sign = s[i++] == '-' ? -1 : 1, oh, om = 0;
        if (ps__digits(s, n, &i, 2, &oh))
          return PS_EINVAL;
        if (i < n && s[i] == ':')
          i++;
        if (i < n && ps__digits(s, n, &i, 2, &om))
          return PS_EINVAL;
        if (oh > 23 || om > 59)
          return PS_EINVAL;
        offset = sign * (oh * 3600 + om * 60);
      }
    }
    if (i != n)
      return PS_EINVAL;
  }
  int64_t t = ps__days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset;
  if (t < 0 || t > PS__DATETIME_MAX)
    return PS_EINVAL;
  *out = t;
  return 0;
}
