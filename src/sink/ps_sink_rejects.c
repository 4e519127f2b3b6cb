/* ps_sink_rejects: refused rows and their reasons (see ps_sink_rejects.h). */
#include "sink/ps_sink_rejects.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ps_sink_rejects_add(ps_sink_rejects *r, size_t row, const char *reason) {
  if (r->n == r->cap) {
    r->cap = r->cap ? r->cap * 2 : 8;
    r->rows = realloc(r->rows, r->cap * sizeof *r->rows);
    r->reasons = realloc(r->reasons, r->cap * sizeof *r->reasons);
    if (!r->rows || !r->reasons)
      abort();
  }
  r->rows[r->n] = row;
  r->reasons[r->n] = strdup(reason);
  if (!r->reasons[r->n])
    abort();
  r->n++;
}

ps_sink_result ps_sink_rejects_finish(ps_sink_rejects *r, char *err, size_t errlen) {
  if (!r->n)
    return PS_SINK_OK;
  /* Rows may be refused out of order (concurrent requests): the report lists them by index. */
  for (size_t i = 1; i < r->n; i++) {
    size_t row = r->rows[i];
    char *why = r->reasons[i];
    size_t j = i;
    for (; j > 0 && r->rows[j - 1] > row; j--) {
      r->rows[j] = r->rows[j - 1];
      r->reasons[j] = r->reasons[j - 1];
    }
    r->rows[j] = row;
    r->reasons[j] = why;
  }
  snprintf(err, errlen, "%zu row(s) refused; first: %s", r->n, r->reasons[0]);
  r->reported = 1;
  return PS_SINK_DROP;
}

size_t ps_sink_rejects_report(const ps_sink_rejects *r, const size_t **rows, const char *const **reasons) {
  if (!r->reported)
    return 0;
  *rows = r->rows;
  *reasons = (const char *const *)r->reasons;
  return r->n;
}

void ps_sink_rejects_clear(ps_sink_rejects *r) {
  for (size_t i = 0; i < r->n; i++)
    free(r->reasons[i]);
  r->n = 0;
  r->reported = 0;
}

void ps_sink_rejects_free(ps_sink_rejects *r) {
  ps_sink_rejects_clear(r);
  free(r->rows);
  free(r->reasons);
  r->rows = NULL;
  r->reasons = NULL;
  r->cap = 0;
}
