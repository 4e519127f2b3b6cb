/*
 * ps_rows: a growable store of copied rows of one table.
 *
 * Rows are written with borrowed values (ps_sink's write) and kept until
 * cleared: every value is copied, each string into one byte buffer, where a
 * stored value keeps its offset (so the store grows by realloc without fixing
 * up pointers). ps_rows_get hands a row back with pointers. Used by sinks that
 * must keep what was written until their flush (the SQLite store) and by the
 * buffered sinker's buffers. Not thread-safe.
 */
#ifndef PS_ROWS_H
#define PS_ROWS_H

#include <stddef.h>

#include "core/ps_buf.h"
#include "sink/ps_sink.h"

typedef struct ps_rows {
  size_t ncols;
  const ps_column *cols;
  ps_buf strs;
  ps_value *vals; /* n * ncols; a string's .s is NULL and .i its offset in strs */
  size_t n, cap;
} ps_rows;

/** An empty store for rows of table t (borrowed). */
static inline ps_rows ps_rows_make(const ps_table *t) {
  ps_rows r = {t->ncols, t->cols, PS_BUF_INIT, NULL, 0, 0};
  return r;
}

/** Appends a copy of row (ncols values). Aborts on OOM. */
void ps_rows_write(ps_rows *r, const ps_value *row);
/** Appends a copy of every row of src (same table) to dst. */
void ps_rows_append(ps_rows *dst, const ps_rows *src);
/** Row i into out (ncols values); its strings point into r until r changes. */
void ps_rows_get(const ps_rows *r, size_t i, ps_value *out);
/** Forgets every row, keeping the memory. */
void ps_rows_clear(ps_rows *r);
/** Frees the memory; the store is empty and reusable. */
void ps_rows_free(ps_rows *r);

#endif
