/* ps_test: the unit-test harness (see ps_test.h). */
#include "ps_test.h"

#include <stdarg.h>
#include <stdlib.h>

int ps_test__failed_current;

void ps_test__fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "  %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  ps_test__failed_current = 1;
}

int ps_test_main(int argc, char **argv, const ps_test_case *cases, size_t n) {
  const char *only = argc > 1 ? argv[1] : NULL;
  const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
  int passed = 0, failed = 0;
  for (size_t i = 0; i < n; i++) {
    if (only && strcmp(only, cases[i].name) != 0)
      continue;
    ps_test__failed_current = 0;
    cases[i].fn();
    if (ps_test__failed_current) {
      failed++;
      fprintf(stderr, "FAIL %s.%s\n", prog, cases[i].name);
    } else {
      passed++;
      printf("ok   %s.%s\n", prog, cases[i].name);
    }
    fflush(stdout);
  }
  printf("%s: %d passed, %d failed\n", prog, passed, failed);
  return failed ? 1 : 0;
}
