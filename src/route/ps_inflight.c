/*
 * ps_inflight: unconfirmed messages, owned, in publish order (see ps_inflight.h).
 *
 * A ring of entries; each entry keeps one buffer (store) holding its message's
 * strings and body back to back, and the message's pointers are set into it
 * once the copy is complete (the buffer may move while it grows).
 */
#include "route/ps_inflight.h"

#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "consume/ps_deadletter.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"
#include "spool.pb-c.h"

void ps_inflight_init(ps_inflight *f, size_t cap, size_t max_bytes) {
  memset(f, 0, sizeof *f);
  f->cap = cap ? cap : 1;
  f->max_bytes = max_bytes;
  f->e = calloc(f->cap, sizeof *f->e);
  if (!f->e)
    abort();
}

void ps_inflight_free(ps_inflight *f) {
  if (!f->e)
    return;
  for (size_t i = 0; i < f->cap; i++)
    ps_buf_free(&f->e[i].store);
  free(f->e);
  memset(f, 0, sizeof *f);
}

/* Appends s (NUL included) to the store; returns its offset, or SIZE_MAX for NULL. */
static size_t ps__keep(ps_buf *b, const char *s) {
  if (!s)
    return SIZE_MAX;
  size_t off = b->len;
  ps_buf_append(b, s, strlen(s) + 1);
  return off;
}

static const char *ps__at(const ps_buf *b, size_t off) { return off == SIZE_MAX ? NULL : b->data + off; }

static ps_inflight_entry *ps__fill(ps_inflight_entry *e, uint64_t seq, const ps_message *m, void *ref);

ps_inflight_entry *ps_inflight_push(ps_inflight *f, uint64_t seq, const ps_message *m, void *ref) {
  if (ps_inflight_full(f) || m->nheaders > PS_INFLIGHT_MAX_HEADERS)
    abort(); /* the callers check both: a bug otherwise */
  ps_inflight_entry *e = &f->e[(f->head + f->n) % f->cap];
  f->n++;
  f->bytes += m->len;
  return ps__fill(e, seq, m, ref);
}

ps_inflight_entry *ps_inflight_replace_head(ps_inflight *f, uint64_t seq, const ps_message *m, void *ref) {
  if (!f->n || m->nheaders > PS_INFLIGHT_MAX_HEADERS)
    abort();
  ps_inflight_entry *e = ps_inflight_at(f, 0);
  f->bytes = f->bytes - e->m.len + m->len;
  return ps__fill(e, seq, m, ref);
}

static ps_inflight_entry *ps__fill(ps_inflight_entry *e, uint64_t seq, const ps_message *m, void *ref) {
  ps_buf store = e->store;
  memset(e, 0, sizeof *e);
  e->store = store;
  e->seq = seq;
  e->ref = ref;
  ps_buf *b = &e->store;
  ps_buf_reset(b);
  size_t ex = ps__keep(b, m->exchange), rk = ps__keep(b, m->routing_key), ct = ps__keep(b, m->content_type),
         id = ps__keep(b, m->message_id);
  size_t hk[PS_INFLIGHT_MAX_HEADERS], hs[PS_INFLIGHT_MAX_HEADERS];
  for (size_t i = 0; i < m->nheaders; i++) {
    hk[i] = ps__keep(b, m->headers[i].key);
    hs[i] = ps__keep(b, m->headers[i].str);
  }
  size_t body = b->len;
  if (m->len)
    ps_buf_append(b, m->body, m->len);
  else
    ps_buf_reserve(b, 0);
  e->m = *m;
  e->m.exchange = ps__at(b, ex);
  e->m.routing_key = ps__at(b, rk);
  e->m.content_type = ps__at(b, ct);
  e->m.message_id = ps__at(b, id);
  for (size_t i = 0; i < m->nheaders; i++)
    e->headers[i] = (ps_broker_arg){ps__at(b, hk[i]), ps__at(b, hs[i]), m->headers[i].num};
  e->m.headers = m->nheaders ? e->headers : NULL;
  e->m.body = b->data + body;
  return e;
}

ps_inflight_entry *ps_inflight_dead_letter_head(ps_inflight *f, const char *dlx, const char *key, ps_buf *scratch) {
  ps_inflight_entry *e = ps_inflight_at(f, 0);
  PS_COUNT(messages_returned_total, 1);
  static ps_log_ratelimit rl;
  long long sup;
  if (ps_log_ratelimit_ok(&rl, 5000, &sup)) {
    char n[32];
    snprintf(n, sizeof n, "%lld", sup);
    ps_warn("a message could not be routed; dead-lettered", "exchange", e->m.exchange, "routing_key",
            e->m.routing_key, "suppressed", n);
  }
  char why[300];
  snprintf(why, sizeof why, "unroutable: no queue bound to exchange %s for routing key %s (%d)", e->m.exchange,
           e->m.routing_key, e->reply_code);
  ps_dead_letter dl = {dlx, key, why, "", "dispatch", e->m.routing_key, e->m.message_id, e->m.content_type,
                       e->m.body, e->m.len};
  ps_dead_letter_headers h;
  ps_message m;
  ps_dead_letter_message(&dl, &h, &m);
  /* An own copy first: the dead letter borrows from the entry it replaces. */
  ps_buf_reset(scratch);
  ps_message_pack(&m, scratch);
  ps_message copy;
  ps_broker_arg hd[PS_INFLIGHT_MAX_HEADERS];
  void *own = NULL;
  if (ps_message_unpack(scratch->data, scratch->len, &copy, hd, &own) != 0)
    abort(); /* packed just above */
  void *ref = e->ref;
  uint64_t tag0 = e->tag[0], tag1 = e->tag[1];
  ps_inflight_entry *d = ps_inflight_replace_head(f, 0, &copy, ref);
  ps_message_unpacked_free(own);
  d->tag[0] = tag0;
  d->tag[1] = tag1;
  return d;
}

void ps_inflight_pop(ps_inflight *f) {
  if (!f->n)
    return;
  ps_inflight_entry *e = ps_inflight_at(f, 0);
  f->bytes -= e->m.len;
  if (f->max_bytes && e->store.cap > f->max_bytes / f->cap)
    ps_buf_free(&e->store);
  f->head = (f->head + 1) % f->cap;
  f->n--;
}

size_t ps_inflight_confirm(ps_inflight *f, uint64_t seq, int multiple, int ack) {
  size_t marked = 0;
  for (size_t i = 0; i < f->n; i++) {
    ps_inflight_entry *e = ps_inflight_at(f, i);
    /* seq 0: not published on this connection (yet); resent entries are out of seq order. */
    if (e->state != PS_INFLIGHT_PENDING || e->seq == 0 || e->seq > seq || (!multiple && e->seq != seq))
      continue;
    e->state = ack ? PS_INFLIGHT_ACKED : PS_INFLIGHT_NACKED;
    marked++;
  }
  return marked;
}

ps_inflight_entry *ps_inflight_find_id(ps_inflight *f, const char *id) {
  for (size_t i = 0; i < f->n; i++) {
    ps_inflight_entry *e = ps_inflight_at(f, i);
    if (e->state == PS_INFLIGHT_PENDING && e->m.message_id && strcmp(e->m.message_id, id) == 0)
      return e;
  }
  return NULL;
}

static char *ps__str(const char *s) { return (char *)(s ? s : ""); }

void ps_message_pack(const ps_message *m, ps_buf *out) { ps_message_pack_events(m, 0, out); }

void ps_message_pack_events(const ps_message *m, uint32_t events, ps_buf *out) {
  Penstock__Spool__Message r = PENSTOCK__SPOOL__MESSAGE__INIT;
  r.events = events;
  Penstock__Spool__Header hv[PS_INFLIGHT_MAX_HEADERS], *hp[PS_INFLIGHT_MAX_HEADERS];
  r.exchange = ps__str(m->exchange);
  r.routing_key = ps__str(m->routing_key);
  r.content_type = ps__str(m->content_type);
  r.message_id = ps__str(m->message_id);
  r.timestamp = m->timestamp;
  r.persistent = m->persistent != 0;
  r.mandatory = m->mandatory != 0;
  size_t nh = m->nheaders < PS_INFLIGHT_MAX_HEADERS ? m->nheaders : PS_INFLIGHT_MAX_HEADERS;
  for (size_t i = 0; i < nh; i++) {
    penstock__spool__header__init(&hv[i]);
    hv[i].key = ps__str(m->headers[i].key);
    hv[i].is_num = m->headers[i].str == NULL;
    hv[i].str = ps__str(m->headers[i].str);
    hv[i].num = m->headers[i].num;
    hp[i] = &hv[i];
  }
  r.n_headers = nh;
  r.headers = hp;
  r.body.data = (uint8_t *)m->body;
  r.body.len = m->len;
  size_t len = penstock__spool__message__get_packed_size(&r);
  ps_buf_reserve(out, len);
  penstock__spool__message__pack(&r, (uint8_t *)out->data + out->len);
  out->len += len;
  out->data[out->len] = '\0';
}

static const char *ps__opt(const char *s) { return s && *s ? s : NULL; }

int ps_message_unpack(const void *data, size_t len, ps_message *m, ps_broker_arg *headers, void **owner) {
  Penstock__Spool__Message *r = penstock__spool__message__unpack(NULL, len, data);
  if (!r)
    return PS_EPROTO;
  if (r->n_headers > PS_INFLIGHT_MAX_HEADERS || !r->exchange[0]) {
    penstock__spool__message__free_unpacked(r, NULL);
    return PS_EPROTO;
  }
  memset(m, 0, sizeof *m);
  m->exchange = r->exchange;
  m->routing_key = r->routing_key;
  m->content_type = ps__opt(r->content_type);
  m->message_id = ps__opt(r->message_id);
  m->timestamp = r->timestamp;
  m->persistent = r->persistent;
  m->mandatory = r->mandatory;
  for (size_t i = 0; i < r->n_headers; i++)
    headers[i] = (ps_broker_arg){r->headers[i]->key, r->headers[i]->is_num ? NULL : r->headers[i]->str,
                                 r->headers[i]->num};
  m->headers = r->n_headers ? headers : NULL;
  m->nheaders = r->n_headers;
  m->body = r->body.data;
  m->len = r->body.len;
  *owner = r;
  return 0;
}

uint32_t ps_message_unpacked_events(const void *owner) {
  return owner ? ((const Penstock__Spool__Message *)owner)->events : 0;
}

void ps_message_unpacked_free(void *owner) {
  if (owner)
    penstock__spool__message__free_unpacked(owner, NULL);
}
