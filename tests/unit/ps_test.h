/*
 * ps_test: the unit-test harness.
 *
 * A test file defines test functions with PS_TEST(name) and lists them in
 * PS_TEST_MAIN(...). Each binary runs its tests in order and ends with the
 * line "<binary>: N passed, N failed"; it exits non-zero if any failed. The
 * runner (tests/run-unit) runs every binary in its own process with a timeout.
 * A failed PS_CHECK records the failure and returns from the test.
 */
#ifndef PS_TEST_H
#define PS_TEST_H

#include <stdio.h>
#include <string.h>

typedef void (*ps_test_fn)(void);
typedef struct {
  const char *name;
  ps_test_fn fn;
} ps_test_case;

extern int ps_test__failed_current;
int ps_test_main(int argc, char **argv, const ps_test_case *cases, size_t n);

/** Removes dir and the files in it (one level: what the tests make). */
void ps_test_rmtree(const char *dir);
/** The value of the exposition line `series value` (series with its labels, as rendered), or -1. */
double ps_test_metric(const char *series);
void ps_test_sleep_ms(int ms);
/**
 * Sends fd 2 (where ps_log writes) to a temporary file; returns the saved
 * descriptor, for ps_test_capture_stderr_end. Sanitizer reports keep going
 * to the real stderr meanwhile.
 */
int ps_test_capture_stderr_begin(void);
/** Restores fd 2 and puts what was written to it since the matching begin in out[0..cap). */
void ps_test_capture_stderr_end(int saved, char *out, size_t cap);
void ps_test__fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define PS_TEST(name) static void name(void)

#define PS_CHECK(cond)                                                        \
  do {                                                                        \
    if (!(cond)) {                                                            \
      ps_test__fail(__FILE__, __LINE__, "check failed: %s", #cond);           \
      return;                                                                 \
    }                                                                         \
  } while (0)

#define PS_CHECK_MSG(cond, ...)                                               \
  do {                                                                        \
    if (!(cond)) {                                                            \
      ps_test__fail(__FILE__, __LINE__, __VA_ARGS__);                         \
      return;                                                                 \
    }                                                                         \
  } while (0)

#define PS_CHECK_INT_EQ(a, b)                                                 \
  do {                                                                        \
    long long ps__a = (long long)(a), ps__b = (long long)(b);                 \
    if (ps__a != ps__b) {                                                     \
      ps_test__fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b,     \
                    ps__a, ps__b);                                            \
      return;                                                                 \
    }                                                                         \
  } while (0)

#define PS_CHECK_STR_EQ(a, b)                                                 \
  do {                                                                        \
    const char *ps__a = (a), *ps__b = (b);                                    \
    if (!ps__a || !ps__b || strcmp(ps__a, ps__b) != 0) {                      \
      ps_test__fail(__FILE__, __LINE__, "%s == %s:\n  got:      %s\n  expected: %s", \
                    #a, #b, ps__a ? ps__a : "(null)", ps__b ? ps__b : "(null)"); \
      return;                                                                 \
    }                                                                         \
  } while (0)

#define PS_TEST_MAIN(...)                                                     \
  int main(int argc, char **argv) {                                           \
    static const ps_test_case cases[] = {__VA_ARGS__};                        \
    return ps_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);   \
  }
#define PS_CASE(fn) {#fn, fn}

#endif
