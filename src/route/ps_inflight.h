/*
 * ps_inflight: the messages a publisher has published and the broker has not
 * confirmed yet, each an owned copy, in publish order.
 *
 * A publisher in confirm mode keeps every message here until its confirmation
 * arrives, so that a refused message or one left unconfirmed by a lost
 * connection can be published again or written to the spool: nothing is
 * dropped for want of its bytes. The window is bounded by a number of entries
 * (cap) and, optionally, by the bytes of their bodies (max_bytes): it is full
 * at cap entries, or once the bodies it holds reach max_bytes (one message,
 * however large, always fits in an empty window). Slots and their buffers are
 * reused, so a steady stream allocates nothing; with max_bytes set, a slot does
 * not keep a buffer larger than its share (max_bytes / cap) once its message
 * leaves, so what the window holds stays within about twice max_bytes
 * whatever the size of the messages.
 *
 * Also here: a message's spool record (penstock.spool.Message, proto/spool.proto)
 * and back.
 */
#ifndef PS_INFLIGHT_H
#define PS_INFLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "broker/ps_broker.h"
#include "core/ps_buf.h"

#define PS_INFLIGHT_MAX_HEADERS 8

enum { PS_INFLIGHT_PENDING = 0, PS_INFLIGHT_ACKED = 1, PS_INFLIGHT_NACKED = 2 };

typedef struct ps_inflight_entry {
  uint64_t seq;      /* publish number on the connection; 0: not published on it (yet) */
  int state;         /* PS_INFLIGHT_* */
  int returned;      /* the broker could not route it (mandatory) */
  int reply_code;    /* of the return */
  int64_t sent_ns;   /* when it was published (CLOCK_MONOTONIC) */
  uint32_t events;   /* events of the event exchange in it (0: a dead letter), for the metrics */
  void *ref;         /* the owner's: what the message belongs to */
  uint64_t tag[2];   /* the owner's, too */
  ps_message m;      /* points into the fields below */
  ps_broker_arg headers[PS_INFLIGHT_MAX_HEADERS];
  ps_buf store;      /* strings and body */
} ps_inflight_entry;

typedef struct ps_inflight {
  ps_inflight_entry *e;
  size_t cap, head, n;
  size_t max_bytes; /* 0: bounded by cap only */
  size_t bytes;     /* bodies of the entries in the window */
} ps_inflight;

/** An empty window of cap (>= 1) entries and max_bytes of bodies (0: no byte bound). Aborts on OOM. */
void ps_inflight_init(ps_inflight *f, size_t cap, size_t max_bytes);
void ps_inflight_free(ps_inflight *f);

static inline size_t ps_inflight_count(const ps_inflight *f) { return f->n; }
static inline size_t ps_inflight_bytes(const ps_inflight *f) { return f->bytes; }
static inline int ps_inflight_full(const ps_inflight *f) {
  return f->n == f->cap || (f->max_bytes && f->n && f->bytes >= f->max_bytes);
}

/** The i-th entry, oldest first (i < count). */
static inline ps_inflight_entry *ps_inflight_at(ps_inflight *f, size_t i) {
  return &f->e[(f->head + i) % f->cap];
}

/**
 * Adds a copy of m (headers beyond PS_INFLIGHT_MAX_HEADERS are an error: the
 * caller never builds more) as the newest entry; the window must not be full.
 * Returns the entry, PENDING, with ref and seq set.
 */
ps_inflight_entry *ps_inflight_push(ps_inflight *f, uint64_t seq, const ps_message *m, void *ref);

/** Replaces the oldest entry by a copy of m (which must not borrow from it). */
ps_inflight_entry *ps_inflight_replace_head(ps_inflight *f, uint64_t seq, const ps_message *m, void *ref);

/**
 * The oldest entry, a mandatory message the broker returned (unroutable) and
 * then confirmed, is replaced in place by its dead letter (to exchange dlx,
 * routing key `key`, reason "unroutable: ..." in the headers), unsent (seq 0),
 * with the same ref and tags and no events; scratch is a buffer of the
 * caller's. Counts penstock_messages_returned_total and logs (rate-limited).
 * Returns the entry.
 */
ps_inflight_entry *ps_inflight_dead_letter_head(ps_inflight *f, const char *dlx, const char *key, ps_buf *scratch);

/** Removes the oldest entry; its buffer is kept for reuse, unless larger than a slot's share of max_bytes. */
void ps_inflight_pop(ps_inflight *f);

/**
 * Marks what a confirmation covers: the pending entry numbered seq, or with
 * multiple every pending entry numbered up to seq (never those numbered 0).
 * Returns how many entries it marked.
 */
size_t ps_inflight_confirm(ps_inflight *f, uint64_t seq, int multiple, int ack);

/** The pending entry whose message id is id, or NULL. */
ps_inflight_entry *ps_inflight_find_id(ps_inflight *f, const char *id);

/** Appends m's spool record to out. */
void ps_message_pack(const ps_message *m, ps_buf *out);

/** The same, saying that m carries events events (what the replay counts as published). */
void ps_message_pack_events(const ps_message *m, uint32_t events, ps_buf *out);

/**
 * Reads a spool record into *m, whose strings, headers and body point into
 * storage owned by *owner (free it with ps_message_unpacked_free). Returns 0,
 * or PS_EPROTO if data is not a record (or has more than
 * PS_INFLIGHT_MAX_HEADERS headers).
 */
int ps_message_unpack(const void *data, size_t len, ps_message *m, ps_broker_arg *headers, void **owner);
void ps_message_unpacked_free(void *owner);

/** The events count packed with the record that owner holds (0 if none was). */
uint32_t ps_message_unpacked_events(const void *owner);

#endif
