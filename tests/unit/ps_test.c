/* ps_test: the unit-test harness (see ps_test.h). */
#include "ps_test.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/ps_buf.h"
#include "core/ps_metrics.h"

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

void ps_test_rmtree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  char path[512];
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
      unlink(path);
    }
  closedir(d);
  rmdir(dir);
}

double ps_test_metric(const char *series) {
  ps_buf out = PS_BUF_INIT;
  ps_metrics_render(&out);
  double v = -1;
  size_t n = strlen(series);
  for (const char *p = out.data; p && (p = strstr(p, series)); p += n)
    if ((p == out.data || p[-1] == '\n') && p[n] == ' ') {
      v = strtod(p + n + 1, NULL);
      break;
    }
  ps_buf_free(&out);
  return v;
}

void ps_test_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* In sanitizer builds: where their reports go (a weak reference: absent, and NULL, in other builds). */
extern void __sanitizer_set_report_fd(void *fd) __attribute__((weak));

int ps_test_capture_stderr_begin(void) {
  char path[] = "/tmp/ps-test-log-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0)
    abort();
  unlink(path);
  fflush(stderr);
  int saved = dup(2);
  if (__sanitizer_set_report_fd)
    __sanitizer_set_report_fd((void *)(intptr_t)saved);
  dup2(fd, 2);
  close(fd);
  return saved;
}

void ps_test_capture_stderr_end(int saved, char *out, size_t cap) {
  fflush(stderr);
  off_t n = lseek(2, 0, SEEK_CUR);
  ssize_t got = n > 0 ? pread(2, out, cap - 1, 0) : 0;
  out[got > 0 ? got : 0] = '\0';
  dup2(saved, 2);
  if (__sanitizer_set_report_fd)
    __sanitizer_set_report_fd((void *)(intptr_t)2);
  close(saved);
}
