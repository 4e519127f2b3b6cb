/*
 * ps_backoff: waiting between retries.
 *
 * Exponential backoff with jitter, so that the threads and processes that lost
 * the same server do not all come back at the same instant; every wait ends
 * early at a deadline or when a stop flag is raised, so retry loops never hold
 * up a shutdown.
 */
#ifndef PS_BACKOFF_H
#define PS_BACKOFF_H

#include <stdint.h>

/** The attempt-th wait, in ms: a random time between half and all of min(base_ms * 2^attempt, max_ms). */
int ps_backoff_ms(int attempt, int base_ms, int max_ms);

/**
 * Sleeps for the attempt-th step: a random time between half and all of
 * min(base_ms * 2^attempt, max_ms). Returns early once *deadline_ns
 * (CLOCK_MONOTONIC) passes or *stop is non-zero; both are re-read while
 * sleeping, and either may be NULL.
 */
void ps_backoff_sleep(int attempt, int base_ms, int max_ms, const _Atomic int64_t *deadline_ns,
                      const _Atomic int *stop);

#endif
