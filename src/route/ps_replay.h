/*
 * ps_replay: publishes what the spool holds once the broker is back.
 *
 * One thread with its own broker connection in confirm mode reads the spool's
 * records oldest first, publishes each (a bounded window of them unconfirmed),
 * and commits a record once the broker confirmed it and every record before
 * it; committed segments are deleted by the spool. A lost connection or a
 * refused publish rewinds to the oldest record not committed: a record may be
 * published twice (consumers see a duplicate, never a gap). A record that is
 * not a message is skipped with an error and penstock_spool_corrupt_total.
 */
#ifndef PS_REPLAY_H
#define PS_REPLAY_H

#include "broker/ps_broker.h"
#include "spool/ps_spool.h"

typedef struct ps_replay ps_replay;

typedef struct ps_replay_options {
  ps_broker *broker;
  ps_spool *spool;
  int window;                       /* unconfirmed messages at most */
  int confirm_timeout_ms;           /* a publish unconfirmed this long drops the connection */
  const char *dead_letter_exchange; /* unroutable messages go there, with routing key skipped_key */
  const char *skipped_key;
  size_t window_bytes;              /* bodies' bytes of the unconfirmed messages at most (0: no bound) */
} ps_replay_options;

/** Starts the replay thread; everything in opt is borrowed until stop. Aborts on OOM. */
ps_replay *ps_replay_start(const ps_replay_options *opt);

/** Stops the thread (what is not confirmed stays in the spool for next time) and frees it. Accepts NULL. */
void ps_replay_stop(ps_replay *rp);

#endif
