/*
 * ps_args: command-line helpers shared by the client commands (see ps_args.h).
 */
#include "cli/ps_args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ps_error.h"

int ps_args_option(int argc, char **argv, int *i, const char *const *with_value, size_t n, char *flag,
                   size_t flaglen, const char **value, char *err, size_t errlen) {
  const char *a = argv[*i];
  const char *eq = strchr(a, '=');
  if (eq) {
    snprintf(flag, flaglen, "%.*s", (int)(eq - a), a);
    *value = eq + 1;
  } else {
    snprintf(flag, flaglen, "%s", a);
    *value = NULL;
  }
  int known = 0;
  for (size_t k = 0; k < n; k++)
    known |= strcmp(flag, with_value[k]) == 0;
  if (!known) {
    snprintf(err, errlen, "unknown option '%s'", flag);
    return PS_EINVAL;
  }
  if (!*value) {
    if (*i + 1 >= argc) {
      snprintf(err, errlen, "%s needs a value", flag);
      return PS_EINVAL;
    }
    *value = argv[++*i];
  }
  return 0;
}

int ps_args_int(const char *flag, const char *v, long long lo, long long hi, long long *out, char *err,
                size_t errlen) {
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end || x < lo || x > hi) {
    snprintf(err, errlen, "%s: '%s' is not an integer from %lld to %lld", flag, v, lo, hi);
    return PS_EINVAL;
  }
  *out = x;
  return 0;
}

int ps_args_addr_ok(const char *a) {
  if (strncmp(a, "unix:", 5) == 0)
    return a[5] != '\0';
  const char *colon = strrchr(a, ':');
  if (!colon || colon == a)
    return 0;
  if (a[0] == '[' && colon[-1] != ']')
    return 0;
  char *end;
  errno = 0;
  long p = strtol(colon + 1, &end, 10);
  return !errno && end != colon + 1 && !*end && p >= 1 && p <= 65535;
}
