/*
 * ps_time: parsing the timestamps clients send.
 *
 * Event.timestamp is free text on the wire. Apps send epoch seconds, epoch
 * milliseconds (sometimes micro- or nanoseconds), or ISO-8601 / RFC 3339 with
 * an optional fraction and zone. ps_time_parse turns any of these into epoch
 * seconds so the row can carry a real DateTime next to the text as sent.
 */
#ifndef PS_TIME_H
#define PS_TIME_H

#include <stddef.h>
#include <stdint.h>

/**
 * Parses s[0..n) into epoch seconds (UTC). Accepts: an integer or decimal epoch
 * in seconds, milliseconds, microseconds or nanoseconds (told apart by
 * magnitude); "YYYY-MM-DD", "YYYY-MM-DDThh:mm[:ss[.frac]]" with 'T' or ' ',
 * then optional "Z", "±hh", "±hhmm" or "±hh:mm" (no zone: UTC).
 * Returns 0 and *out, or PS_EINVAL if s is none of these or out of the range
 * ClickHouse's DateTime holds (1970..2105).
 */
int ps_time_parse(const char *s, size_t n, int64_t *out);

#endif
