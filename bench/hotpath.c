/*
 * hotpath: the CPU cost of each stage of penstock's data path, stage by stage.
 *
 * Built against the library's own objects (`make bench-hotpath`), it makes a
 * fixed pool of realistic 50-event batches (ps_demo, a fixed seed, the
 * original load generator's mix of event types), prepares what every stage
 * takes as input (the request bytes, the decoded batch, the published JSON
 * groups, the rows), then runs one stage's real penstock functions over
 * --batches batches of the pool, in one function per stage,
 * hotpath_run_<stage>, so that callgrind can count that function alone:
 *
 *   valgrind --tool=callgrind --collect-atstart=no --toggle-collect=hotpath_run_encode \
 *     --zero-before=hotpath_run_encode build/bench/hotpath encode
 *
 * bench/hotpath-cost does that for every stage and prints the table
 * (instructions per event and per batch). Each stage's function runs twice:
 * once over the pool as a warm-up (buffers grown, lazy bindings resolved,
 * the libraries' caches filled), whose counts --zero-before discards, then
 * over --batches batches: what is counted is the steady state. The line it
 * prints per stage gives wall-clock ns/event too, indicative only (and
 * meaningless under valgrind).
 *
 * What each stage runs is in hot__stages[] below. The publish stage needs a
 * socket: it publishes through the real AMQP broker code (ps_broker_amqp,
 * rabbitmq-c) to a minimal AMQP peer on a thread of this process (loopback,
 * a port the kernel picks), which answers the handshake and confirms every
 * message; no RabbitMQ runs. Its thread never calls a counted function, so
 * none of its instructions are counted.
 */
#include <amqp.h>
#include <amqp_framing.h>
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "broker/ps_broker.h"
#include "cli/ps_demo.h"
#include "codec/ps_events.h"
#include "codec/ps_pbjson.h"
#include "consume/ps_decoder.h"
#include "core/ps_arena.h"
#include "core/ps_buf.h"
#include "core/ps_config.h"
#include "core/ps_error.h"
#include "queue/ps_queue.h"
#include "route/ps_inflight.h"
#include "route/ps_router.h"
#include "sink/ps_rows.h"
#include "sink/ps_sink.h"

#define HOT_BATCH 50
#define HOT_SEED 20261128ULL

/* The original service's load generator (as `penstock bench --mix`'s default), fixed here so that a
   change of that default does not move these numbers. */
static const struct {
  const char *type;
  size_t weight;
} hot__mix[] = {{"LaunchEvent", 5}, {"PageOpenedEvent", 25}, {"WidgetViewEvent", 30},
                {"ClickEvent", 25}, {"AddToCartEvent", 10},  {"CompletePurchaseEvent", 5}};
#define HOT_NMIX (sizeof hot__mix / sizeof hot__mix[0])

/* One message the router publishes for a batch: one event type's group, as proto3 JSON (and as the
   PUBLISH_FORMAT=protobuf body: that group as one length-delimited binary Events). */
typedef struct {
  char *body;
  size_t len;
  char *pb;
  size_t pb_len;
  const char *type_name;
  char id[64];
  uint32_t events;
  size_t first_row, nrows; /* its rows in the batch's rows */
} hot_msg;

/* One batch of the pool, with every stage's input. */
typedef struct {
  uint8_t *wire; /* the request: a serialized event.Events */
  size_t len;
  ps_arena *arena; /* holds msg */
  Event__Events *msg;
  int64_t received_unix;
  hot_msg *msgs;
  size_t nmsgs;
  ps_rows rows;   /* what the events decoder makes of msgs, copied */
  ps_value *vals; /* the same rows as the decoder hands them to the sink (pointers into rows) */
} hot_batch;

static struct {
  hot_batch *pool;
  size_t npool, nbatches;
  /* encode */
  ps_event_group *groups;
  Event__Event **scratch;
  ps_buf body;
  ps_pb_record rec[4096]; /* encode_pb: a request's records */
  const char *etype[4096];
  /* publish */
  ps_broker *broker;
  ps_broker_conn *conn;
  ps_inflight fl;
  ps_confirm_handler handler;
  uint64_t seq, msgno, instance;
  /* consume, insert */
  ps_decoder *dec;
  ps_sink count_sink;
  size_t counted_rows;
  ps_sink *ch;
  ps_rows stage, shared;
  uint64_t tag;
} H;

static void hot__die(const char *what, const char *detail) {
  fprintf(stderr, "hotpath: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

/* ------------------------------------------------------------ sinks of the bench */

/* Counts rows and keeps nothing: the consume stage's sink, so that it counts the decoder alone. */
static void hot__count_write(ps_sink *s, const ps_value *row) {
  (void)s;
  (void)row;
  H.counted_rows++;
}

static const ps_sink_ops hot__count_ops = {.name = "count", .write = hot__count_write};

/* Captures the decoder's rows into a batch's row store while the pool is prepared. */
typedef struct {
  ps_sink base;
  ps_rows *rows;
} hot_capture;

static void hot__capture_write(ps_sink *s, const ps_value *row) {
  ps_rows_write(((hot_capture *)s)->rows, row);
}

static const ps_sink_ops hot__capture_ops = {.name = "capture", .write = hot__capture_write};

/* ------------------------------------------------------------ the AMQP peer */

/*
 * Just enough of an AMQP 0-9-1 broker for one publisher: the handshake,
 * channel.open, confirm.select, basic.qos, close, and a basic.ack (not
 * multiple) for every published message, written once everything that has
 * arrived is read. Nothing is routed or stored.
 */
typedef struct {
  int lfd;
  uint16_t port;
  pthread_t thread;
  ps_buf in, out;
  size_t off;
  int got_header, closing;
  uint64_t body_left, published;
} hot_peer;

static hot_peer hot__peer;

static void hot__put_be(ps_buf *b, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--)
    ps_buf_putc(b, (char)(uint8_t)(v >> (8 * i)));
}

static uint64_t hot__get_be(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

static void hot__peer_method(hot_peer *p, uint16_t channel, amqp_method_number_t id, void *args) {
  uint8_t enc[512];
  int n = amqp_encode_method(id, args, (amqp_bytes_t){sizeof enc, enc});
  if (n < 0)
    hot__die("peer: amqp_encode_method failed", amqp_error_string2(n));
  ps_buf_putc(&p->out, AMQP_FRAME_METHOD);
  hot__put_be(&p->out, channel, 2);
  hot__put_be(&p->out, (uint64_t)n + 4, 4);
  hot__put_be(&p->out, id, 4);
  ps_buf_append(&p->out, enc, (size_t)n);
  ps_buf_putc(&p->out, (char)AMQP_FRAME_END);
}

static void hot__peer_published(hot_peer *p) {
  amqp_basic_ack_t ack = {++p->published, 0};
  hot__peer_method(p, 1, AMQP_BASIC_ACK_METHOD, &ack);
}

static void hot__peer_frame(hot_peer *p, int type, uint16_t ch, const uint8_t *pl, size_t size) {
  if (type == AMQP_FRAME_HEADER && size >= 12) {
    p->body_left = hot__get_be(pl + 4, 8);
    if (!p->body_left)
      hot__peer_published(p);
    return;
  }
  if (type == AMQP_FRAME_BODY) {
    p->body_left -= size < p->body_left ? size : p->body_left;
    if (!p->body_left)
      hot__peer_published(p);
    return;
  }
  if (type != AMQP_FRAME_METHOD || size < 4)
    return;
  char dummy = 0;
  switch ((amqp_method_number_t)hot__get_be(pl, 4)) {
  case AMQP_CONNECTION_START_OK_METHOD: {
    amqp_connection_tune_t t = {2047, 131072, 0};
    hot__peer_method(p, 0, AMQP_CONNECTION_TUNE_METHOD, &t);
    break;
  }
  case AMQP_CONNECTION_OPEN_METHOD: {
    amqp_connection_open_ok_t o = {amqp_empty_bytes};
    hot__peer_method(p, 0, AMQP_CONNECTION_OPEN_OK_METHOD, &o);
    break;
  }
  case AMQP_CHANNEL_OPEN_METHOD: {
    amqp_channel_open_ok_t o = {amqp_empty_bytes};
    hot__peer_method(p, ch, AMQP_CHANNEL_OPEN_OK_METHOD, &o);
    break;
  }
  case AMQP_CONFIRM_SELECT_METHOD: hot__peer_method(p, ch, AMQP_CONFIRM_SELECT_OK_METHOD, &dummy); break;
  case AMQP_BASIC_QOS_METHOD: hot__peer_method(p, ch, AMQP_BASIC_QOS_OK_METHOD, &dummy); break;
  case AMQP_CHANNEL_CLOSE_METHOD: hot__peer_method(p, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &dummy); break;
  case AMQP_CONNECTION_CLOSE_METHOD:
    hot__peer_method(p, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &dummy);
    p->closing = 1;
    break;
  default: /* connection.tune-ok, basic.publish (its header and body frames follow) */ break;
  }
}

/* Handles every complete frame in p->in. */
static void hot__peer_parse(hot_peer *p) {
  const uint8_t *d = (const uint8_t *)p->in.data;
  if (!p->got_header) {
    if (p->in.len - p->off < 8)
      return;
    p->off += 8; /* "AMQP" 0 0 9 1 */
    p->got_header = 1;
    amqp_connection_start_t st = {0, 9, amqp_empty_table, amqp_cstring_bytes("PLAIN"),
                                  amqp_cstring_bytes("en_US")};
    hot__peer_method(p, 0, AMQP_CONNECTION_START_METHOD, &st);
  }
  while (p->in.len - p->off >= 7) {
    const uint8_t *f = d + p->off;
    size_t size = (size_t)hot__get_be(f + 3, 4);
    if (p->in.len - p->off < 7 + size + 1)
      break;
    hot__peer_frame(p, f[0], (uint16_t)hot__get_be(f + 1, 2), f + 7, size);
    p->off += 7 + size + 1;
  }
  if (p->off == p->in.len) {
    ps_buf_reset(&p->in);
    p->off = 0;
  }
}

static void *hot__peer_main(void *arg) {
  hot_peer *p = arg;
  int fd = accept(p->lfd, NULL, NULL);
  if (fd < 0)
    hot__die("peer: accept", strerror(errno));
  char tmp[65536];
  while (!p->closing) {
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0)
      break;
    do
      ps_buf_append(&p->in, tmp, (size_t)n);
    while ((n = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT)) > 0);
    hot__peer_parse(p);
    for (size_t w = 0; w < p->out.len;) {
      ssize_t k = send(fd, p->out.data + w, p->out.len - w, MSG_NOSIGNAL);
      if (k <= 0)
        hot__die("peer: send", strerror(errno));
      w += (size_t)k;
    }
    ps_buf_reset(&p->out);
  }
  close(fd);
  return NULL;
}

static void hot__peer_start(hot_peer *p) {
  p->lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(p->lfd, 1) != 0 ||
      getsockname(p->lfd, (struct sockaddr *)&a, &alen) != 0)
    hot__die("peer: cannot listen on loopback", strerror(errno));
  p->port = ntohs(a.sin_port);
  if (pthread_create(&p->thread, NULL, hot__peer_main, p) != 0)
    hot__die("peer: pthread_create", NULL);
}

static void hot__on_confirm(void *ctx, uint64_t seq, int multiple, int ack) {
  (void)ctx;
  if (!ack)
    hot__die("the peer refused a publish", NULL);
  ps_inflight_confirm(&H.fl, seq, multiple, ack);
}

static void hot__publisher_open(void) {
  hot__peer_start(&hot__peer);
  char url[128], err[256];
  snprintf(url, sizeof url, "amqp://guest:guest@127.0.0.1:%u/", (unsigned)hot__peer.port);
  if (ps_broker_amqp_create(url, NULL, &H.broker, err, sizeof err) != 0)
    hot__die("ps_broker_amqp_create", err);
  if (ps_broker_connect(H.broker, &H.conn) != 0 || ps_broker_confirm_select(H.conn) != 0)
    hot__die("cannot connect to the AMQP peer", NULL);
  /* The router's confirm window as penstock serve would have it (its defaults, or the environment's). */
  ps_config cfg = {0};
  if (ps_config_load(&cfg, NULL, err, sizeof err) != 0)
    hot__die("ps_config_load", err);
  ps_inflight_init(&H.fl, (size_t)cfg.publish_window, (size_t)cfg.publish_window_bytes);
  ps_config_free(&cfg);
  H.handler = (ps_confirm_handler){NULL, hot__on_confirm, NULL};
  H.instance = 0x0123456789abcdefULL;
}

static void hot__publisher_close(void) {
  ps_broker_close(H.conn);
  pthread_join(hot__peer.thread, NULL);
  close(hot__peer.lfd);
  ps_buf_free(&hot__peer.in);
  ps_buf_free(&hot__peer.out);
  ps_broker_destroy(H.broker);
  ps_inflight_free(&H.fl);
}

/* ------------------------------------------------------------ the stages, one batch each */

/* Nothing: what the harness costs (a call per batch). */
static size_t hot_empty(hot_batch *b) {
  return b->msg->n_events;
}

/* A server that only decodes: protobuf-c's unpacker with its default allocator (malloc), then free. */
static size_t hot_reference(hot_batch *b) {
  Event__Events *m = event__events__unpack(NULL, b->len, b->wire);
  if (!m)
    hot__die("reference: unpack failed", NULL);
  size_t n = m->n_events;
  event__events__free_unpacked(m, NULL);
  return n;
}

/* ps_dispatch_submit's decode: into a per-request arena, freed with the batch (ps_batch_destroy). */
static size_t hot_decode(hot_batch *b) {
  ps_arena *a = ps_arena_create(ps_batch_arena_size(b->len, 0));
  ProtobufCAllocator alloc = ps_arena_allocator(a);
  Event__Events *m = event__events__unpack(&alloc, b->len, b->wire);
  if (!m)
    hot__die("decode: unpack failed", NULL);
  size_t n = m->n_events;
  ps_arena_destroy(a);
  return n;
}

/* ps_dispatch_submit's checks: UTF-8 and NULs on the wire, a header, each event's type. */
static size_t hot_validate(hot_batch *b) {
  char err[256];
  if (ps_pb_check_wire_strings(&event__events__descriptor, b->wire, b->len, err, sizeof err) != 0)
    hot__die("validate", err);
  if (!b->msg->header)
    hot__die("validate: no header", NULL);
  size_t typed = 0;
  for (size_t i = 0; i < b->msg->n_events; i++)
    typed += ps_event_type_name(b->msg->events[i]) != NULL;
  return typed;
}

/* The router's encode (ps__lot_messages, a lot of one batch): group by type, proto3 JSON of each group into one
   reused buffer. */
static size_t hot_encode(hot_batch *b) {
  size_t ng = ps_events_group(b->msg, H.groups, H.scratch), n = 0;
  for (size_t g = 0; g < ng; g++) {
    Event__Events part = *b->msg;
    part.n_events = H.groups[g].n;
    part.events = H.groups[g].events;
    ps_buf_reset(&H.body);
    if (ps_pbjson_encode(&H.body, &part.base) != 0)
      hot__die("encode failed", H.groups[g].type_name);
    n += H.groups[g].n;
  }
  return n;
}

/* The same with PUBLISH_FORMAT=protobuf, as the router does it for a batch that kept its request: the request
   split into records (ps_events_records), then per type one length-delimited Events of the header's record and
   that type's event records, copied. */
static size_t hot_encode_pb(hot_batch *b) {
  ps_batch kept = {.msg = b->msg, .wire = b->wire, .wire_len = b->len};
  ps_pb_record header;
  if (ps_events_records(&kept, &header, H.rec, H.etype) != 0)
    hot__die("a demo request does not split into records", NULL);
  size_t ng = ps_events_group(b->msg, H.groups, H.scratch), n = 0;
  for (size_t g = 0; g < ng; g++) {
    const char *t = H.groups[g].type_name;
    size_t bytes = header.len;
    size_t m = ps_events_records_size(H.rec, H.etype, b->msg->n_events, t, &bytes);
    ps_buf_reset(&H.body);
    ps_buf_reserve(&H.body, bytes + 10);
    uint8_t *p = (uint8_t *)H.body.data;
    p += ps_pb_put_varint(p, bytes);
    memcpy(p, b->wire + header.off, header.len);
    p = ps_events_records_copy(p + header.len, b->wire, H.rec, H.etype, b->msg->n_events, t);
    H.body.len = (size_t)(p - (uint8_t *)H.body.data);
    n += m;
  }
  return n;
}

/*
 * The router's publish of a batch's messages (ps__send, then ps__pump): a
 * message id, a copy into the confirm window, ps_broker_publish (properties,
 * rabbitmq-c's framing, the writes), then reading the confirms
 * (ps_broker_confirms) and retiring the confirmed entries.
 */
static size_t hot_publish(hot_batch *b) {
  size_t n = 0;
  for (size_t k = 0; k < b->nmsgs; k++) {
    const hot_msg *hm = &b->msgs[k];
    char id[64];
    ps_router_message_id(id, H.instance, "0", ++H.msgno);
    ps_message m = {
        .exchange = "grpc_event.tx",
        .routing_key = hm->type_name,
        .content_type = "application/json",
        .message_id = id,
        .timestamp = b->received_unix,
        .persistent = 1,
        .mandatory = 1,
        .body = hm->body,
        .len = hm->len,
    };
    ps_inflight_entry *e = ps_inflight_push(&H.fl, 0, &m, b);
    e->events = hm->events;
    e->tag[1] = 1;
    if (ps_broker_publish(H.conn, &m) != 0)
      hot__die("publish failed", NULL);
    e->seq = ++H.seq;
    e->sent_ns = ps_now_ns();
    n += hm->events;
  }
  while (ps_inflight_count(&H.fl)) {
    int rc = ps_broker_confirms(H.conn, &H.handler, 10000);
    if (rc != 0)
      hot__die("reading confirms", ps_strerror(rc));
    while (ps_inflight_count(&H.fl) && ps_inflight_at(&H.fl, 0)->state == PS_INFLIGHT_ACKED)
      ps_inflight_pop(&H.fl);
  }
  return n;
}

static ps_delivery hot__delivery(const hot_batch *b, const hot_msg *hm) {
  return (ps_delivery){.tag = ++H.tag,
                       .routing_key = hm->type_name,
                       .routing_key_len = strlen(hm->type_name),
                       .content_type = "application/json",
                       .timestamp = b->received_unix,
                       .message_id = hm->id,
                       .body = hm->body,
                       .len = hm->len};
}

/* The consumer's decode of each delivered message (the `events` decoder) into rows, handed to the sink: the JSON
   messages, or (pb) those of PUBLISH_FORMAT=protobuf (PS_CONTENT_TYPE_PACKED_PB). */
static size_t hot__consume(hot_batch *b, int pb) {
  char err[512];
  size_t before = H.counted_rows;
  for (size_t k = 0; k < b->nmsgs; k++) {
    ps_delivery d = hot__delivery(b, &b->msgs[k]);
    if (pb) {
      d.content_type = PS_CONTENT_TYPE_PACKED_PB;
      d.body = b->msgs[k].pb;
      d.len = b->msgs[k].pb_len;
    }
    if (ps_decoder_decode(H.dec, &d, &H.count_sink, err, sizeof err) < 0)
      hot__die("consume", err);
  }
  return H.counted_rows - before;
}
static size_t hot_consume(hot_batch *b) { return hot__consume(b, 0); }
static size_t hot_consume_pb(hot_batch *b) { return hot__consume(b, 1); }

/* The ClickHouse sink's write of each row (TSV into the insert body), then a discard where a flush would
 * POST. */
static size_t hot_insert(hot_batch *b) {
  for (size_t r = 0; r < b->rows.n; r++)
    ps_sink_write(H.ch, &b->vals[r * PS_EV_NCOLS]);
  size_t n = ps_sink_pending(H.ch);
  ps_sink_discard(H.ch);
  return n;
}

/* What a buffered sink adds: the staging copy per message, its append to the shared buffer, the read back. */
static size_t hot_buffered(hot_batch *b) {
  ps_value row[PS_EV_NCOLS];
  for (size_t k = 0; k < b->nmsgs; k++) {
    const hot_msg *hm = &b->msgs[k];
    for (size_t r = hm->first_row; r < hm->first_row + hm->nrows; r++)
      ps_rows_write(&H.stage, &b->vals[r * PS_EV_NCOLS]);
    ps_rows_append(&H.shared, &H.stage);
    ps_rows_clear(&H.stage);
  }
  size_t n = H.shared.n;
  for (size_t r = 0; r < n; r++)
    ps_rows_get(&H.shared, r, row);
  ps_rows_clear(&H.shared);
  return n;
}

/* ------------------------------------------------------------ counted loops */

/* One per stage, so that --toggle-collect=hotpath_run_<stage> counts that stage alone: never inlined,
   never cloned under another name. */
#if defined(__clang__)
#define HOT_COUNTED __attribute__((noinline))
#else
#define HOT_COUNTED __attribute__((noinline, noclone))
#endif
#define HOT_RUN(stage)                                                                                       \
  HOT_COUNTED size_t hotpath_run_##stage(void);                                                              \
  HOT_COUNTED size_t hotpath_run_##stage(void) {                                                             \
    size_t n = 0;                                                                                            \
    for (size_t i = 0; i < H.nbatches; i++)                                                                  \
      n += hot_##stage(&H.pool[i % H.npool]);                                                                \
    return n;                                                                                                \
  }
HOT_RUN(empty)
HOT_RUN(reference)
HOT_RUN(decode)
HOT_RUN(validate)
HOT_RUN(encode)
HOT_RUN(publish)
HOT_RUN(consume)
HOT_RUN(encode_pb)
HOT_RUN(consume_pb)
HOT_RUN(insert)
HOT_RUN(buffered)

typedef struct {
  const char *name;
  size_t (*run)(void);
  const char *covers;
} hot_stage;

static const hot_stage hot__stages[] = {
    {"reference", hotpath_run_reference,
     "a server that only decodes: protobuf-c unpack (malloc), free_unpacked"},
    {"decode", hotpath_run_decode,
     "ps_arena_create, event__events__unpack into the arena, ps_arena_destroy (as ps_dispatch_submit)"},
    {"validate", hotpath_run_validate,
     "ps_pb_check_wire_strings (UTF-8, no NUL, on the wire), header check, ps_event_type_name per event"},
    {"encode", hotpath_run_encode,
     "ps_events_group, ps_pbjson_encode of each type's group (as the router's ps__lot_messages for a lot of one batch)"},
    {"publish", hotpath_run_publish,
     "per message: id, ps_inflight_push (copy), ps_broker_publish (AMQP framing, send); ps_broker_confirms, "
     "ps_inflight_confirm/pop"},
    {"consume", hotpath_run_consume,
     "the events decoder per message: ps_pbjson_decode, payloads re-encoded, ps_time_parse; rows to the "
     "sink"},
    {"encode_pb", hotpath_run_encode_pb,
     "PUBLISH_FORMAT=protobuf instead of encode: the request split into records (ps_events_records), "
     "ps_events_group, per type one length-delimited Events of the header's and the events' records, copied"},
    {"consume_pb", hotpath_run_consume_pb,
     "PUBLISH_FORMAT=protobuf instead of consume: the events decoder per message: ps_pb_check_wire_strings, "
     "protobuf-c unpack into an arena, payloads encoded as JSON, ps_time_parse; rows to the sink"},
    {"insert", hotpath_run_insert,
     "ClickHouse sink write per row (TSV escape into the insert body); discard instead of the POST"},
    {"buffered", hotpath_run_buffered,
     "buffered sinks only, on top of insert: ps_rows_write staging copy, ps_rows_append, ps_rows_get"},
    {"empty", hotpath_run_empty, "the harness alone: one call per batch (should be ~0)"},
};
#define HOT_NSTAGES (sizeof hot__stages / sizeof hot__stages[0])

/* ------------------------------------------------------------ the pool */

static uint64_t hot__rand(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static void hot__make_pool(size_t npool) {
  ps_demo *d = ps_demo_create(HOT_SEED, "hot");
  size_t total = npool * HOT_BATCH, sum = 0, k = 0;
  size_t *types = malloc(total * sizeof *types);
  H.pool = calloc(npool, sizeof *H.pool);
  if (!types || !H.pool)
    abort();
  H.npool = npool;
  /* The mix's proportions over the pool (the last type takes the rounding), in a shuffled order. */
  for (size_t i = 0; i < HOT_NMIX; i++)
    sum += hot__mix[i].weight;
  for (size_t i = 0; i < HOT_NMIX; i++) {
    int ti = ps_demo_type_index(d, hot__mix[i].type);
    if (ti < 0)
      hot__die("the contract has no event type", hot__mix[i].type);
    size_t c = i + 1 < HOT_NMIX ? total * hot__mix[i].weight / sum : total - k;
    for (size_t j = 0; j < c; j++)
      types[k++] = (size_t)ti;
  }
  uint64_t rng = HOT_SEED;
  for (size_t i = total; i > 1; i--) {
    size_t j = (size_t)(hot__rand(&rng) % i), x = types[i - 1];
    types[i - 1] = types[j];
    types[j] = x;
  }

  /* Each batch: the request bytes, decoded as dispatch decodes them, its groups' JSON, their rows. */
  size_t ntypes = ps_event_type_count();
  H.groups = calloc(ntypes ? ntypes : 1, sizeof *H.groups);
  H.scratch = malloc(HOT_BATCH * sizeof *H.scratch);
  H.dec = ps_decoder_events_create();
  if (!H.groups || !H.scratch)
    abort();
  for (size_t i = 0; i < npool; i++) {
    hot_batch *b = &H.pool[i];
    ps_arena *a = ps_arena_create(16384);
    Event__Events *m = ps_demo_batch_typed(d, a, HOT_BATCH, types + i * HOT_BATCH);
    b->len = event__events__get_packed_size(m);
    b->wire = malloc(b->len);
    if (!b->wire)
      abort();
    event__events__pack(m, b->wire);
    ps_arena_destroy(a);

    b->arena = ps_arena_create(ps_batch_arena_size(b->len, 0));
    ProtobufCAllocator alloc = ps_arena_allocator(b->arena);
    b->msg = event__events__unpack(&alloc, b->len, b->wire);
    if (!b->msg)
      hot__die("a demo batch does not decode", NULL);
    b->received_unix = (int64_t)time(NULL);

    size_t ng = ps_events_group(b->msg, H.groups, H.scratch);
    b->msgs = calloc(ng ? ng : 1, sizeof *b->msgs);
    b->rows = ps_rows_make(&ps_events_table);
    if (!b->msgs)
      abort();
    b->nmsgs = ng;
    hot_capture cap = {{&hot__capture_ops, &ps_events_table}, &b->rows};
    for (size_t g = 0; g < ng; g++) {
      hot_msg *hm = &b->msgs[g];
      Event__Events part = *b->msg;
      part.n_events = H.groups[g].n;
      part.events = H.groups[g].events;
      ps_buf body = PS_BUF_INIT;
      if (ps_pbjson_encode(&body, &part.base) != 0)
        hot__die("a demo group does not encode", H.groups[g].type_name);
      hm->body = body.data;
      hm->len = body.len;
      hm->type_name = H.groups[g].type_name;
      hm->events = (uint32_t)H.groups[g].n;
      snprintf(hm->id, sizeof hm->id, "%016" PRIx64 "-0-%zu", (uint64_t)0x0123456789abcdefULL, i * 16 + g);
      hm->first_row = b->rows.n;
      ps_delivery dl = hot__delivery(b, hm);
      char err[512];
      int nr = ps_decoder_decode(H.dec, &dl, &cap.base, err, sizeof err);
      if (nr != (int)hm->events)
        hot__die("a demo group does not decode back", err);
      hm->nrows = (size_t)nr;
      ps_buf pb = PS_BUF_INIT;
      ps_events_put_delimited(&pb, &part);
      hm->pb = pb.data;
      hm->pb_len = pb.len;
      /* The binary message must give the same rows as the JSON one. */
      ps_rows again = ps_rows_make(&ps_events_table);
      hot_capture cap2 = {{&hot__capture_ops, &ps_events_table}, &again};
      dl.content_type = PS_CONTENT_TYPE_PACKED_PB;
      dl.body = hm->pb;
      dl.len = hm->pb_len;
      if (ps_decoder_decode(H.dec, &dl, &cap2.base, err, sizeof err) != nr)
        hot__die("a demo group does not decode back from protobuf", err);
      for (size_t r = 0; r < (size_t)nr; r++) {
        ps_value x[PS_EV_NCOLS], y[PS_EV_NCOLS];
        ps_rows_get(&b->rows, hm->first_row + r, x);
        ps_rows_get(&again, r, y);
        for (size_t c = 0; c < PS_EV_NCOLS; c++)
          if (ps_events_table.cols[c].type == PS_COL_STRING
                  ? x[c].len != y[c].len || (x[c].len && memcmp(x[c].s, y[c].s, x[c].len) != 0)
                  : x[c].i != y[c].i)
            hot__die("protobuf and JSON messages give different rows", ps_events_table.cols[c].name);
      }
      ps_rows_free(&again);
    }
    b->vals = malloc((b->rows.n ? b->rows.n : 1) * PS_EV_NCOLS * sizeof *b->vals);
    if (!b->vals)
      abort();
    for (size_t r = 0; r < b->rows.n; r++)
      ps_rows_get(&b->rows, r, &b->vals[r * PS_EV_NCOLS]);
  }
  free(types);
  ps_demo_destroy(d);
}

static void hot__free_pool(void) {
  for (size_t i = 0; i < H.npool; i++) {
    hot_batch *b = &H.pool[i];
    for (size_t g = 0; g < b->nmsgs; g++) {
      free(b->msgs[g].body);
      free(b->msgs[g].pb);
    }
    free(b->msgs);
    free(b->vals);
    ps_rows_free(&b->rows);
    ps_arena_destroy(b->arena);
    free(b->wire);
  }
  free(H.pool);
  free(H.groups);
  free(H.scratch);
  ps_decoder_destroy(H.dec);
}

/* ------------------------------------------------------------ main */

static void hot__usage(FILE *f) {
  fprintf(f, "usage: hotpath [--batches N] [--pool P] STAGE...\n"
             "       hotpath --list\n"
             "Runs each STAGE over N batches (default 200) of a pool of P (default 64) 50-event batches.\n"
             "Stages:\n");
  for (size_t i = 0; i < HOT_NSTAGES; i++)
    fprintf(f, "  %-10s %s\n", hot__stages[i].name, hot__stages[i].covers);
}

static int64_t hot__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  size_t nbatches = 200, npool = 64;
  const hot_stage *run[HOT_NSTAGES * 4];
  size_t nrun = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--list") == 0) {
      for (size_t s = 0; s < HOT_NSTAGES; s++)
        printf("%s\t%s\n", hot__stages[s].name, hot__stages[s].covers);
      return 0;
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      hot__usage(stdout);
      return 0;
    } else if ((strcmp(argv[i], "--batches") == 0 || strcmp(argv[i], "--pool") == 0) && i + 1 < argc) {
      char *end;
      unsigned long long v = strtoull(argv[i + 1], &end, 10);
      if (*end || v == 0 || v > 1000000)
        hot__die("not a count in 1..1000000", argv[i + 1]);
      *(argv[i][2] == 'b' ? &nbatches : &npool) = (size_t)v;
      i++;
    } else {
      size_t s = 0;
      while (s < HOT_NSTAGES && strcmp(hot__stages[s].name, argv[i]) != 0)
        s++;
      if (s == HOT_NSTAGES || nrun == sizeof run / sizeof run[0]) {
        hot__usage(stderr);
        return 2;
      }
      run[nrun++] = &hot__stages[s];
    }
  }
  if (!nrun) {
    hot__usage(stderr);
    return 2;
  }

  hot__make_pool(npool);
  H.count_sink = (ps_sink){&hot__count_ops, &ps_events_table};
  ps_clickhouse_options ch = {"http://127.0.0.1:1", "default", "", "", 30000}; /* never contacted */
  H.ch = ps_sink_clickhouse_create(&ch, &ps_events_table);
  H.stage = ps_rows_make(&ps_events_table);
  H.shared = ps_rows_make(&ps_events_table);
  int publisher = 0;
  for (size_t r = 0; r < nrun; r++)
    publisher |= run[r]->run == hotpath_run_publish;
  if (publisher)
    hot__publisher_open();

  for (size_t r = 0; r < nrun; r++) {
    const hot_stage *st = run[r];
    size_t want = 0;
    for (size_t i = 0; i < nbatches; i++)
      want += H.pool[i % npool].msg->n_events;
    H.nbatches = npool; /* the warm-up: once over the pool (--zero-before forgets it) */
    st->run();
    H.nbatches = nbatches;
    int64_t t0 = hot__now_ns();
    size_t got = st->run();
    int64_t t1 = hot__now_ns();
    if (got != want)
      fprintf(stderr, "hotpath: %s: %zu events processed, %zu expected\n", st->name, got, want);
    printf("stage=%s batches=%zu events=%zu ns_per_event=%.1f\n", st->name, nbatches, want,
           want ? (double)(t1 - t0) / (double)want : 0.0);
    if (got != want)
      return 1;
  }

  if (publisher)
    hot__publisher_close();
  ps_rows_free(&H.stage);
  ps_rows_free(&H.shared);
  ps_sink_destroy(H.ch);
  ps_buf_free(&H.body);
  hot__free_pool();
  return 0;
}
