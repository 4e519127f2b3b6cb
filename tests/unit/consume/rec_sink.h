/*
 * A sink for decoder tests that keeps copies of the rows written into it
 * (strings copied, other values as given): rows[r][c], nrows. Header-only,
 * included by one test file at a time.
 */
#ifndef PS_TEST_REC_SINK_H
#define PS_TEST_REC_SINK_H

#include <stdlib.h>
#include <string.h>

#include "sink/ps_sink.h"

#define MAX_ROWS 64
#define MAX_COLS 16

typedef struct {
  ps_sink base;
  ps_value rows[MAX_ROWS][MAX_COLS];
  size_t nrows;
} rec_sink;

static void rec_write(ps_sink *bs, const ps_value *row) {
  rec_sink *s = (rec_sink *)bs;
  if (s->nrows == MAX_ROWS)
    return;
  for (size_t i = 0; i < bs->table->ncols && i < MAX_COLS; i++) {
    ps_value v = row[i];
    if (bs->table->cols[i].type == PS_COL_STRING) {
      char *c = malloc(v.len + 1);
      memcpy(c, v.s ? v.s : "", v.len);
      c[v.len] = '\0';
      v.s = c;
    } else {
      v.s = NULL;
    }
    s->rows[s->nrows][i] = v;
  }
  s->nrows++;
}
static size_t rec_pending(ps_sink *bs) {
  return ((rec_sink *)bs)->nrows;
}
static void rec_discard(ps_sink *bs) {
  rec_sink *s = (rec_sink *)bs;
  for (size_t r = 0; r < s->nrows; r++)
    for (size_t i = 0; i < MAX_COLS; i++)
      free((char *)s->rows[r][i].s);
  memset(s->rows, 0, sizeof s->rows);
  s->nrows = 0;
}
static const ps_sink_ops rec_ops = {
    .name = "rec", .write = rec_write, .pending = rec_pending, .discard = rec_discard};

#endif
