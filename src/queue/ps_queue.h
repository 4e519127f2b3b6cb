/*
 * ps_queue: the bounded queue between ingest and the workers.
 *
 * A fixed-capacity ring of pointers shared by many producers (gRPC threads)
 * and many consumers (workers). A full queue is how penstock pushes back on
 * clients: producers wait for room up to a deadline, then give up. Closing the
 * queue wakes everyone: pushes fail with PS_ECLOSED, pops drain what is left and
 * then return PS_ECLOSED. The queue never owns its items; whoever pops one owns it.
 */
#ifndef PS_QUEUE_H
#define PS_QUEUE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ps_queue ps_queue;

/** Creates a queue with room for capacity items (>= 1). Aborts on OOM. */
ps_queue *ps_queue_create(size_t capacity);
/** Destroys the queue; items still in it are not freed. Accepts NULL. */
void ps_queue_destroy(ps_queue *q);

/**
 * Adds item, waiting for room until deadline_ns (CLOCK_MONOTONIC nanoseconds;
 * 0 = do not wait). Returns 0, PS_ETIMEDOUT if the queue stayed full, or
 * PS_ECLOSED if it was closed (the item is then not queued).
 */
int ps_queue_push(ps_queue *q, void *item, int64_t deadline_ns);

/**
 * Takes up to max items into items[], waiting until at least one is there or
 * deadline_ns passes (-1 = wait forever). Returns the number taken (> 0),
 * PS_ETIMEDOUT, or PS_ECLOSED once the queue is closed and empty.
 */
int ps_queue_pop(ps_queue *q, void **items, int max, int64_t deadline_ns);

/** Closes the queue: no more pushes; pops drain what is left. Idempotent. */
void ps_queue_close(ps_queue *q);

/** Items in the queue now (a snapshot, for metrics). */
size_t ps_queue_len(ps_queue *q);
size_t ps_queue_capacity(const ps_queue *q);

/** CLOCK_MONOTONIC now, in nanoseconds. */
int64_t ps_now_ns(void);

#endif
