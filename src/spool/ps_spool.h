/*
 * ps_spool: an append-only local spool of opaque records, on disk.
 *
 * When the broker is down (or a publish is not confirmed), the router writes
 * the messages it could not hand over to the spool instead of dropping them,
 * and answers the client only once they are there; a replay thread reads them
 * back in order, publishes them, and commits what the broker confirmed, which
 * deletes whole segments. One process uses a spool directory at a time (a
 * lock file says so).
 *
 * On disk: a directory of segment files, named so that they sort in write
 * order. A segment starts with a fixed header and holds records, each framed
 * as a length, a CRC-32 of the payload (zlib's) and the payload. A segment is
 * sealed when it passes segment_bytes (and when the reader reaches the end of
 * the segment being written, so that replay never waits on a half-written
 * one); later appends go to a new segment. Opening a spool scans every
 * segment: the first record whose frame is torn (short) or whose CRC does
 * not match ends that segment's readable part; what follows it in that
 * segment is skipped with one warning and penstock_spool_corrupt_total, and
 * nothing before it is lost. Reading checks each CRC again and treats a
 * mismatch the same way. A segment whose header is not understood is renamed
 * NAME.corrupt (also warned and counted) and skipped; so is, once its readable
 * part is committed, a segment cut short by a CRC or length mismatch (a torn
 * tail, what a crash mid-append leaves, is deleted as usual).
 *
 * Thread safety: append may be called from many threads at once; the reader
 * calls (next, commit, rewind, wait) from one thread; stats from any.
 */
#ifndef PS_SPOOL_H
#define PS_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct ps_spool ps_spool;

typedef enum ps_spool_fsync {
  PS_SPOOL_FSYNC_ALWAYS = 0, /* append returns after the data is on disk (fdatasync) */
  PS_SPOOL_FSYNC_NEVER = 1,  /* append returns after write(2): survives a process crash, not a power loss */
} ps_spool_fsync;

typedef struct ps_spool_options {
  const char *dir;        /* created (mode 0700) if missing; its parent must exist */
  uint64_t max_bytes;     /* bound on the total size of the segment files; 0: 1 GiB */
  uint64_t segment_bytes; /* a segment is sealed past this size; 0: 8 MiB */
  ps_spool_fsync fsync;
} ps_spool_options;

typedef struct ps_spool_stats {
  uint64_t bytes;    /* size of the segment files on disk */
  uint64_t records;  /* records appended (or found at open) and not yet committed */
  uint64_t segments; /* segment files on disk */
} ps_spool_stats;

/** Where a record ends: what ps_spool_commit takes. Ordered by (segment, offset). */
typedef struct ps_spool_pos {
  uint64_t segment;
  uint64_t offset;
} ps_spool_pos;

/**
 * Opens (creating if needed) the spool in opt->dir, takes its lock and scans
 * existing segments (see above). Returns 0 and *out, or PS_EIO with the reason
 * in err (dir unusable, or locked: by another process, or by a spool of this
 * process still open), PS_EINVAL for bad options. Registers the spool's metrics
 * (penstock_spool_bytes, penstock_spool_records,
 * penstock_spool_appended_records_total,
 * penstock_spool_committed_records_total, penstock_spool_corrupt_total,
 * penstock_spool_full_total) the first time a spool is opened; the two gauges
 * add up the spools open in the process (one, in practice).
 */
int ps_spool_open(const ps_spool_options *opt, ps_spool **out, char *err, size_t errlen);

/** Closes the files and releases the lock; the segments stay on disk. Accepts NULL. */
void ps_spool_close(ps_spool *s);

/**
 * Appends n records (n >= 1; recs[i] is one record's payload) in one write,
 * then, with PS_SPOOL_FSYNC_ALWAYS, waits until they are on disk. Concurrent
 * appends share one fdatasync when they can. Returns 0; PS_EFULL (nothing
 * written) if the spool would pass max_bytes; PS_EINVAL if a record is
 * empty or over 64 MiB; PS_EIO if writing failed (nothing counts as
 * written: the spool stays usable for later appends). A failed fdatasync
 * fails every append it covered. The reader sees a record only once its
 * append has succeeded, so a record whose append failed is never read.
 */
int ps_spool_append(ps_spool *s, const struct iovec *recs, size_t n);

/**
 * Reader: the next record not yet read since open or the last rewind, oldest
 * first. Returns 0 with *data and *len (valid until the next next or rewind call)
 * and *end (the position just after it), PS_EAGAIN when there is none now,
 * or PS_EIO if reading a segment file failed (logged; try again later).
 */
int ps_spool_next(ps_spool *s, const void **data, size_t *len, ps_spool_pos *end);

/**
 * Reader: every record that ends at or before pos is delivered. Segments
 * wholly delivered (and sealed) are deleted; their bytes free room for appends.
 * pos is an *end from ps_spool_next: only records already read are committed,
 * and a pos at or before an earlier commit changes nothing.
 */
void ps_spool_commit(ps_spool *s, ps_spool_pos pos);

/** Reader: the next ps_spool_next returns the oldest record not committed yet. */
void ps_spool_rewind(ps_spool *s);

/**
 * Waits until a record may be readable, timeout_ms passes (< 0: no limit) or
 * ps_spool_wake is called. Returns 1 if one may be, else 0.
 */
int ps_spool_wait(ps_spool *s, int timeout_ms);

/**
 * Wakes a ps_spool_wait in progress (for shutdown). With none in progress,
 * the next ps_spool_wait returns at once instead, so a wake is never lost.
 */
void ps_spool_wake(ps_spool *s);

void ps_spool_stats_get(ps_spool *s, ps_spool_stats *st);

#endif
