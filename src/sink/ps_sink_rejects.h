/*
 * ps_sink_rejects: the rows a sink refused for good, and why.
 *
 * Every sink that can refuse single rows keeps one of these: rows are added as
 * they are refused during a flush; ps_sink_rejects_finish turns them into the
 * flush's answer (OK, or DROP with the report) and ps_sink_rejects_report is
 * what the sink's rejected() op returns until the next call clears it.
 */
#ifndef PS_SINK_REJECTS_H
#define PS_SINK_REJECTS_H

#include <stddef.h>

#include "sink/ps_sink.h"

typedef struct ps_sink_rejects {
  size_t *rows;   /* batch indices, ascending once finished */
  char **reasons; /* owned */
  size_t n, cap;
  int reported;   /* the last flush answered DROP: this is its report */
} ps_sink_rejects;

/** Records row as refused for reason (copied). Aborts on OOM. */
void ps_sink_rejects_add(ps_sink_rejects *r, size_t row, const char *reason);

/** Ends a flush whose every row is stored or refused: OK if none was refused, else DROP with a summary in err. */
ps_sink_result ps_sink_rejects_finish(ps_sink_rejects *r, char *err, size_t errlen);

/** What rejected() returns: the report of the last DROP, or 0. */
size_t ps_sink_rejects_report(const ps_sink_rejects *r, const size_t **rows, const char *const **reasons);

/** Forgets the rows (the report's lifetime is over). */
void ps_sink_rejects_clear(ps_sink_rejects *r);

/** Called first by every sink operation after a flush: a DROP's report lives until then. */
static inline void ps_sink_rejects_expire(ps_sink_rejects *r) {
  if (r->reported)
    ps_sink_rejects_clear(r);
}

/** Frees everything. */
void ps_sink_rejects_free(ps_sink_rejects *r);

#endif
