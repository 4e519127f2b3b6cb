/*
 * ps_failpoint: named places where a test can make penstock fail on purpose.
 *
 * PENSTOCK_FAILPOINTS is a comma-separated list of names, each optionally
 * with ":N" (fail only the first N times): `dispatch.internal:3`. A fail point
 * that is not listed costs one relaxed load. This is how the tests prove that
 * an internal failure answers an error and leaves the process serving; it is
 * not meant for production use.
 *
 * Fail points: dispatch.internal (a dispatch handler fails internally),
 * spool.write and spool.fdatasync (a spool append fails with EIO).
 */
#ifndef PS_FAILPOINT_H
#define PS_FAILPOINT_H

/** Reads PENSTOCK_FAILPOINTS; call once at start. */
void ps_failpoint_init(void);

/** Returns 1 if the named fail point fires now (and counts it), else 0. */
int ps_failpoint(const char *name);

#endif
