/* ps_rows: a growable store of copied rows (see ps_rows.h). */
#include "sink/ps_rows.h"

#include <stdlib.h>
#include <string.h>

static void ps_rows_reserve(ps_rows *r, size_t more) {
  if (r->n + more <= r->cap)
    return;
  size_t cap = r->cap ? r->cap : 64;
  while (cap < r->n + more)
    cap *= 2;
  r->vals = realloc(r->vals, cap * (r->ncols ? r->ncols : 1) * sizeof *r->vals);
  if (!r->vals)
    abort();
  r->cap = cap;
}

void ps_rows_write(ps_rows *r, const ps_value *row) {
  ps_rows_reserve(r, 1);
  ps_value *v = &r->vals[r->n * r->ncols];
  for (size_t i = 0; i < r->ncols; i++) {
    v[i] = row[i];
    if (r->cols[i].type == PS_COL_STRING) {
      v[i].s = NULL;
      v[i].len = row[i].s ? row[i].len : 0;
      v[i].i = (int64_t)r->strs.len;
      if (v[i].len)
        ps_buf_append(&r->strs, row[i].s, v[i].len);
    }
  }
  r->n++;
}

void ps_rows_append(ps_rows *dst, const ps_rows *src) {
  if (!src->n)
    return;
  ps_rows_reserve(dst, src->n);
  int64_t base = (int64_t)dst->strs.len;
  if (src->strs.len)
    ps_buf_append(&dst->strs, src->strs.data, src->strs.len);
  size_t nv = src->n * src->ncols;
  ps_value *v = &dst->vals[dst->n * dst->ncols];
  memcpy(v, src->vals, nv * sizeof *v);
  for (size_t k = 0; k < nv; k++)
    if (dst->cols[k % dst->ncols].type == PS_COL_STRING)
      v[k].i += base;
  dst->n += src->n;
}

void ps_rows_get(const ps_rows *r, size_t i, ps_value *out) {
  const ps_value *v = &r->vals[i * r->ncols];
  for (size_t k = 0; k < r->ncols; k++) {
    out[k] = v[k];
    if (r->cols[k].type == PS_COL_STRING)
      out[k].s = v[k].len ? r->strs.data + v[k].i : "";
  }
}

void ps_rows_clear(ps_rows *r) {
  r->n = 0;
  ps_buf_reset(&r->strs);
}

void ps_rows_free(ps_rows *r) {
  ps_buf_free(&r->strs);
  free(r->vals);
  r->vals = NULL;
  r->n = r->cap = 0;
}

