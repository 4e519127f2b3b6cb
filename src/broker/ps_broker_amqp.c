/*
 * ps_broker_amqp: the broker interface on RabbitMQ, through rabbitmq-c.
 *
 * One AMQP connection with one channel per ps_broker_conn, used by one thread
 * only. A connection that reports any error is treated as dead (PS_ECONN): AMQP
 * closes a channel on most errors, and reopening everything is simpler and
 * safer than tracking which half survived.
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "broker/ps_broker.h"
#include "core/ps_error.h"
#include "core/ps_log.h"

#define PS__CHANNEL 1

typedef struct {
  ps_broker base;
  char *url_copy; /* amqp_parse_url points into it */
  struct amqp_connection_info info;
} ps__amqp_broker;

typedef struct {
  ps_broker_conn base;
  amqp_connection_state_t conn;
  amqp_envelope_t env;
  int has_env;
  char content_type[128];
  char message_id[256];
} ps__amqp_conn;

static const ps_broker_ops ps__amqp_ops;

/* Turns a failed RPC reply into a log line; returns PS_ECONN. */
static int ps__rpc_fail(amqp_rpc_reply_t r, const char *what) {
  char detail[256];
  switch (r.reply_type) {
  case AMQP_RESPONSE_LIBRARY_EXCEPTION:
    snprintf(detail, sizeof detail, "%s", amqp_error_string2(r.library_error));
    break;
  case AMQP_RESPONSE_SERVER_EXCEPTION:
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
      amqp_connection_close_t *m = r.reply.decoded;
      snprintf(detail, sizeof detail, "connection closed by server: %u %.*s", m->reply_code,
               (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
      amqp_channel_close_t *m = r.reply.decoded;
      snprintf(detail, sizeof detail, "channel closed by server: %u %.*s", m->reply_code,
               (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else {
      snprintf(detail, sizeof detail, "server exception, method 0x%08x", r.reply.id);
    }
    break;
  default:
    snprintf(detail, sizeof detail, "no reply");
    break;
  }
  ps_warn("amqp: operation failed", "op", what, "error", detail);
  return PS_ECONN;
}

static int ps__check(ps__amqp_conn *c, const char *what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(c->conn);
  return r.reply_type == AMQP_RESPONSE_NORMAL ? 0 : ps__rpc_fail(r, what);
}

static void ps__amqp_close(ps_broker_conn *bc) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  if (!c)
    return;
  if (c->has_env)
    amqp_destroy_envelope(&c->env);
  if (c->conn) {
    amqp_channel_close(c->conn, PS__CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c->conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c->conn);
  }
  free(c);
}

static amqp_table_t ps__args_table(const ps_broker_arg *args, size_t n, amqp_table_entry_t *entries) {
  for (size_t i = 0; i < n; i++) {
    entries[i].key = amqp_cstring_bytes(args[i].key);
    if (args[i].str) {
      entries[i].value.kind = AMQP_FIELD_KIND_UTF8;
      entries[i].value.value.bytes = amqp_cstring_bytes(args[i].str);
    } else {
      entries[i].value.kind = AMQP_FIELD_KIND_I64;
      entries[i].value.value.i64 = args[i].num;
    }
  }
  amqp_table_t t = {(int)n, entries};
  return t;
}

static int ps__declare(ps__amqp_conn *c, const ps_topology *t) {
  if (!t)
    return 0;
  for (size_t i = 0; i < t->nexchanges; i++) {
    const ps_exchange_decl *e = &t->exchanges[i];
    amqp_exchange_declare(c->conn, PS__CHANNEL, amqp_cstring_bytes(e->name), amqp_cstring_bytes(e->type), 0,
                          e->durable, 0, 0, amqp_empty_table);
    if (ps__check(c, "exchange.declare"))
      return PS_ECONN;
  }
  for (size_t i = 0; i < t->nqueues; i++) {
    const ps_queue_decl *q = &t->queues[i];
    amqp_table_entry_t entries[32];
    if (q->nargs > 32)
      return PS_EINVAL;
    amqp_queue_declare(c->conn, PS__CHANNEL, amqp_cstring_bytes(q->name), 0, q->durable, 0, 0,
                       ps__args_table(q->args, q->nargs, entries));
    if (ps__check(c, "queue.declare"))
      return PS_ECONN;
  }
  for (size_t i = 0; i < t->nbindings; i++) {
    const ps_binding_decl *b = &t->bindings[i];
    amqp_queue_bind(c->conn, PS__CHANNEL, amqp_cstring_bytes(b->queue), amqp_cstring_bytes(b->exchange),
                    amqp_cstring_bytes(b->key), amqp_empty_table);
    if (ps__check(c, "queue.bind"))
      return PS_ECONN;
  }
  return 0;
}

static int ps__amqp_connect(ps_broker *bb, ps_broker_conn **out) {
  ps__amqp_broker *b = (ps__amqp_broker *)bb;
  ps__amqp_conn *c = calloc(1, sizeof *c);
  if (!c)
    abort();
  c->base.ops = &ps__amqp_ops;
  c->base.broker = bb;
  c->conn = amqp_new_connection();
  amqp_socket_t *sock = amqp_tcp_socket_new(c->conn);
  if (!sock) {
    ps__amqp_close(&c->base);
    return PS_ECONN;
  }
  struct timeval tv = {5, 0};
  int st = amqp_socket_open_noblock(sock, b->info.host, b->info.port, &tv);
  if (st != AMQP_STATUS_OK) {
    ps__amqp_close(&c->base);
    return PS_ECONN;
  }
  struct timeval rpc_tv = {10, 0};
  amqp_set_rpc_timeout(c->conn, &rpc_tv);
  amqp_rpc_reply_t r = amqp_login(c->conn, b->info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, b->info.user,
                                  b->info.password);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    ps__rpc_fail(r, "login");
    ps__amqp_close(&c->base);
    return PS_ECONN;
  }
  amqp_channel_open(c->conn, PS__CHANNEL);
  if (ps__check(c, "channel.open") || ps__declare(c, bb->topology)) {
    ps__amqp_close(&c->base);
    return PS_ECONN;
  }
  *out = &c->base;
  return 0;
}

static int ps__amqp_publish(ps_broker_conn *bc, const ps_message *m) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  amqp_basic_properties_t p;
  memset(&p, 0, sizeof p);
  if (m->content_type) {
    p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes(m->content_type);
  }
  if (m->message_id) {
    p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    p.message_id = amqp_cstring_bytes(m->message_id);
  }
  if (m->timestamp) {
    p._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    p.timestamp = (uint64_t)m->timestamp;
  }
  p._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
  p.delivery_mode = m->persistent ? 2 : 1;
  amqp_table_entry_t entries[16];
  if (m->nheaders) {
    if (m->nheaders > 16)
      return PS_EINVAL;
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers = ps__args_table(m->headers, m->nheaders, entries);
  }
  amqp_bytes_t body = {m->len, (void *)m->body};
  int st = amqp_basic_publish(c->conn, PS__CHANNEL, amqp_cstring_bytes(m->exchange),
                              amqp_cstring_bytes(m->routing_key), m->mandatory ? 1 : 0, 0, &p, body);
  if (st != AMQP_STATUS_OK) {
    ps_warn("amqp: publish failed", "error", amqp_error_string2(st));
    return PS_ECONN;
  }
  return 0;
}

static int ps__amqp_consume(ps_broker_conn *bc, const char *queue, int prefetch, const char *tag) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  amqp_basic_qos(c->conn, PS__CHANNEL, 0, (uint16_t)prefetch, 0);
  if (ps__check(c, "basic.qos"))
    return PS_ECONN;
  amqp_basic_consume(c->conn, PS__CHANNEL, amqp_cstring_bytes(queue), amqp_cstring_bytes(tag), 0, 0, 0,
                     amqp_empty_table);
  return ps__check(c, "basic.consume");
}

static void ps__amqp_release(ps_broker_conn *bc, ps_delivery *d) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  (void)d;
  if (c->has_env) {
    amqp_destroy_envelope(&c->env);
    c->has_env = 0;
  }
}

/* A NUL-terminated copy of a property into dst (truncated to fit), "" when absent. */
static const char *ps__cstr(char *dst, size_t cap, amqp_bytes_t b, int present) {
  size_t n = present ? (b.len < cap - 1 ? b.len : cap - 1) : 0;
  if (n)
    memcpy(dst, b.bytes, n);
  dst[n] = '\0';
  return dst;
}

static int ps__amqp_next(ps_broker_conn *bc, ps_delivery *d, int timeout_ms) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  ps__amqp_release(bc, d);
  amqp_maybe_release_buffers(c->conn);
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  amqp_rpc_reply_t r = amqp_consume_message(c->conn, &c->env, &tv, 0);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) {
    c->has_env = 1;
    amqp_basic_properties_t *p = &c->env.message.properties;
    d->tag = c->env.delivery_tag;
    d->redelivered = c->env.redelivered;
    d->routing_key = c->env.routing_key.bytes;
    d->routing_key_len = c->env.routing_key.len;
    d->timestamp = (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) ? (int64_t)p->timestamp : 0;
    d->content_type = ps__cstr(c->content_type, sizeof c->content_type, p->content_type,
                               p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
    d->message_id = ps__cstr(c->message_id, sizeof c->message_id, p->message_id,
                             p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    d->delivery_count = 0;
    if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
      for (int i = 0; i < p->headers.num_entries; i++) {
        amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len == 16 && memcmp(e->key.bytes, "x-delivery-count", 16) == 0) {
          switch (e->value.kind) {
          case AMQP_FIELD_KIND_I64: d->delivery_count = e->value.value.i64; break;
          case AMQP_FIELD_KIND_U64: d->delivery_count = (int64_t)e->value.value.u64; break;
          case AMQP_FIELD_KIND_I32: d->delivery_count = e->value.value.i32; break;
          case AMQP_FIELD_KIND_U32: d->delivery_count = e->value.value.u32; break;
          case AMQP_FIELD_KIND_I16: d->delivery_count = e->value.value.i16; break;
          case AMQP_FIELD_KIND_U16: d->delivery_count = e->value.value.u16; break;
          case AMQP_FIELD_KIND_I8: d->delivery_count = e->value.value.i8; break;
          case AMQP_FIELD_KIND_U8: d->delivery_count = e->value.value.u8; break;
          default: break;
          }
        }
      }
    d->body = c->env.message.body.bytes;
    d->len = c->env.message.body.len;
    return 0;
  }
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
    return PS_ETIMEDOUT;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
    /* A frame other than a delivery: see what it is. */
    amqp_frame_t f;
    if (amqp_simple_wait_frame(c->conn, &f) != AMQP_STATUS_OK)
      return PS_ECONN;
    if (f.frame_type == AMQP_FRAME_METHOD &&
        (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD || f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD)) {
      ps_warn("amqp: broker closed the consumer's channel");
      return PS_ECONN;
    }
    return PS_EAGAIN;
  }
  return ps__rpc_fail(r, "consume");
}

static int ps__amqp_ack(ps_broker_conn *bc, uint64_t tag, int multiple) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  return amqp_basic_ack(c->conn, PS__CHANNEL, tag, multiple) == AMQP_STATUS_OK ? 0 : PS_ECONN;
}

static int ps__amqp_nack(ps_broker_conn *bc, uint64_t tag, int multiple, int requeue) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  return amqp_basic_nack(c->conn, PS__CHANNEL, tag, multiple, requeue) == AMQP_STATUS_OK ? 0 : PS_ECONN;
}

static int ps__amqp_ping(ps_broker_conn *bc) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  /* basic.qos is a synchronous round trip with no side effect on a channel that consumes nothing. */
  amqp_basic_qos(c->conn, PS__CHANNEL, 0, 0, 0);
  return ps__check(c, "ping");
}

static int ps__amqp_confirm_select(ps_broker_conn *bc) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  amqp_confirm_select(c->conn, PS__CHANNEL);
  return ps__check(c, "confirm.select");
}

/* A basic.return is followed by the returned message's header and body frames. */
static int ps__amqp_returned(ps__amqp_conn *c, const amqp_basic_return_t *ret, const ps_confirm_handler *h) {
  char text[256], id[256];
  ps__cstr(text, sizeof text, ret->reply_text, 1);
  int code = ret->reply_code;
  amqp_message_t msg;
  amqp_rpc_reply_t r = amqp_read_message(c->conn, PS__CHANNEL, &msg, 0);
  if (r.reply_type != AMQP_RESPONSE_NORMAL)
    return ps__rpc_fail(r, "basic.return");
  ps__cstr(id, sizeof id, msg.properties.message_id, msg.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
  amqp_destroy_message(&msg);
  if (h->returned)
    h->returned(h->ctx, id, code, text);
  return 0;
}

static int ps__amqp_confirms(ps_broker_conn *bc, const ps_confirm_handler *h, int timeout_ms) {
  ps__amqp_conn *c = (ps__amqp_conn *)bc;
  amqp_maybe_release_buffers(c->conn);
  int reported = 0;
  /* The first frame may be waited for; after it, only what has already arrived is read (at most
     a bounded number of frames, so that a steady stream of confirms still lets the caller publish). */
  for (int frames = 0; frames < 4096; frames++) {
    int ms = reported ? 0 : timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    amqp_frame_t f;
    int st = amqp_simple_wait_frame_noblock(c->conn, &f, &tv);
    if (st == AMQP_STATUS_TIMEOUT)
      return reported ? 0 : PS_ETIMEDOUT;
    if (st != AMQP_STATUS_OK) {
      ps_warn("amqp: reading publisher confirms failed", "error", amqp_error_string2(st));
      return PS_ECONN;
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
      continue;
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
      amqp_basic_ack_t *a = f.payload.method.decoded;
      h->confirm(h->ctx, a->delivery_tag, a->multiple, 1);
      reported = 1;
      break;
    }
    case AMQP_BASIC_NACK_METHOD: {
      amqp_basic_nack_t *a = f.payload.method.decoded;
      h->confirm(h->ctx, a->delivery_tag, a->multiple, 0);
      reported = 1;
      break;
    }
    case AMQP_BASIC_RETURN_METHOD:
      if (ps__amqp_returned(c, f.payload.method.decoded, h) != 0)
        return PS_ECONN;
      reported = 1;
      break;
    case AMQP_CHANNEL_CLOSE_METHOD:
    case AMQP_CONNECTION_CLOSE_METHOD:
      ps_warn("amqp: broker closed the publisher's channel");
      return PS_ECONN;
    default:
      break;
    }
  }
  return 0;
}

static void ps__amqp_destroy(ps_broker *bb) {
  ps__amqp_broker *b = (ps__amqp_broker *)bb;
  if (!b)
    return;
  free(b->url_copy);
  free(b->base.display);
  free(b);
}

static const ps_broker_ops ps__amqp_ops = {
    "rabbitmq",         ps__amqp_connect, ps__amqp_publish, ps__amqp_consume, ps__amqp_next,
    ps__amqp_release,   ps__amqp_ack,     ps__amqp_nack,    ps__amqp_ping,    ps__amqp_confirm_select,
    ps__amqp_confirms,  ps__amqp_close,   ps__amqp_destroy,
};

int ps_broker_amqp_create(const char *url, const ps_topology *topology, ps_broker **out, char *err,
                          size_t errlen) {
  ps__amqp_broker *b = calloc(1, sizeof *b);
  if (!b)
    abort();
  b->base.ops = &ps__amqp_ops;
  b->base.topology = topology;
  b->url_copy = strdup(url);
  amqp_default_connection_info(&b->info);
  if (amqp_parse_url(b->url_copy, &b->info) != AMQP_STATUS_OK) {
    snprintf(err, errlen, "RABBITMQ_URL: cannot parse (expected amqp://user:password@host:port/vhost)");
    ps__amqp_destroy(&b->base);
    return PS_ECONFIG;
  }
  /* "amqp://host:port/" names the default vhost, as the original's Go client
     read it (the AMQP URI spec would make it the empty vhost, which no one means). */
  if (b->info.vhost[0] == '\0')
    b->info.vhost = "/";
  char display[512];
  snprintf(display, sizeof display, "amqp://%s@%s:%d/%s", b->info.user, b->info.host, b->info.port,
           strcmp(b->info.vhost, "/") == 0 ? "" : b->info.vhost);
  b->base.display = strdup(display);
  *out = &b->base;
  return 0;
}
