/*
 * penstock send: sends events to any server of the event.EventService
 * contract (penstock, or the original service).
 *
 *   penstock send [--addr HOST:PORT] (--demo N | --file F|-) [options]
 *
 * Input: proto3 JSON `Events` from a file or stdin (one object, a JSON array
 * of them, or several one after another, e.g. one per line), or --demo N
 * generated events of every type the proto knows, in batches of --batch.
 * Demo events are made through the protobuf-c descriptors (no event type is
 * named here): each scalar field of the payload gets a plausible value.
 *
 * DESIGN: one channel and one completion queue; up to --concurrency unary
 * calls in flight, each sending a pre-serialized batch; the main thread
 * starts calls and reaps completions. A progress line is redrawn on stderr
 * (a terminal only) at most ten times a second; the summary goes to stdout.
 * Exit codes: 0 every batch answered SUCCESS, 1 some did not (or the server
 * was unreachable), 2 usage or input error.
 */
#include "cli/ps_send.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/ps_pbjson.h"
#include "core/ps_arena.h"
#include "core/ps_buf.h"
#include "eventservice.pb-c.h"
#include "queue/ps_queue.h" /* ps_now_ns */

enum { PS__OK = 0, PS__FAIL = 1, PS__USAGE = 2 };

static const char ps__usage_text[] =
    "usage: penstock send [--addr HOST:PORT] (--demo N | --file F) [options]\n"
    "\n"
    "Sends events to a server of the event.EventService contract (penstock or the original).\n"
    "\n"
    "  --addr HOST:PORT    server (default 127.0.0.1:50051)\n"
    "  --demo N            send N generated events, of every event type in turn\n"
    "  --file F            send the proto3 JSON Events in F (- for stdin): one object, an array of\n"
    "                      them, or several one after another (e.g. one per line)\n"
    "  --batch B           events per call with --demo (default 50)\n"
    "  --concurrency C     calls in flight (default 8)\n"
    "  --timeout-ms T      deadline of each call (default 10000)\n"
    "  --ids FILE          write the id of every event of an accepted batch to FILE, one per line\n"
    "  --json              print the summary as one JSON object\n"
    "  --quiet             no progress line\n"
    "\n"
    "exit codes: 0 every batch accepted, 1 some not accepted (or the server unreachable),\n"
    "2 usage or input error\n";

typedef struct ps__batch {
  uint8_t *data; /* serialized Events */
  size_t len;
  size_t nevents;
  char **ids; /* for --ids */
} ps__batch;

typedef struct ps__opts {
  const char *addr, *file, *ids_path;
  long demo;
  int batch, concurrency, timeout_ms, json, quiet;
} ps__opts;

/* ------------------------------------------------------------ input */

static void ps__add_batch(ps__batch **v, size_t *n, size_t *cap, const Event__Events *m) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 64;
    *v = realloc(*v, *cap * sizeof **v);
    if (!*v)
      abort();
  }
  ps__batch *b = &(*v)[(*n)++];
  b->len = event__events__get_packed_size(m);
  b->data = malloc(b->len ? b->len : 1);
  b->ids = calloc(m->n_events ? m->n_events : 1, sizeof *b->ids);
  if (!b->data || !b->ids)
    abort();
  event__events__pack(m, b->data);
  b->nevents = m->n_events;
  for (size_t i = 0; i < m->n_events; i++) {
    b->ids[i] = strdup(m->events[i]->id ? m->events[i]->id : "");
    if (!b->ids[i])
      abort();
  }
}

static unsigned long long ps__rand(unsigned long long *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static char *ps__astr(ps_arena *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *d = ps_arena_alloc(a, n);
  memcpy(d, s, n);
  return d;
}

/* Fills the scalar fields of m (a payload message) with plausible values. */
static void ps__fill(ProtobufCMessage *m, ps_arena *a, unsigned long long *rnd, const char *run) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    void *p = (char *)m + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      if (f->type != PROTOBUF_C_TYPE_STRING)
        continue; /* maps and other repeated fields stay empty */
      size_t n = 1 + ps__rand(rnd) % 3;
      char **v = ps_arena_alloc(a, n * sizeof *v);
      for (size_t k = 0; k < n; k++) {
        char s[64];
        snprintf(s, sizeof s, "%s-%llu", f->name, ps__rand(rnd) % 100000);
        v[k] = ps__astr(a, s);
      }
      *(size_t *)((char *)m + f->quantifier_offset) = n;
      *(char ***)p = v;
      continue;
    }
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
      char s[96];
      if (strstr(f->name, "urrency"))
        snprintf(s, sizeof s, "%s", (const char *[]){"INR", "USD", "EUR"}[ps__rand(rnd) % 3]);
      else
        snprintf(s, sizeof s, "%s-%s-%llu", run, f->name, ps__rand(rnd) % 1000);
      *(char **)p = ps__astr(a, s);
      break;
    }
    case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)p = ps__rand(rnd) & 1; break;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: *(int32_t *)p = (int32_t)(1 + ps__rand(rnd) % 20); break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: *(int64_t *)p = (int64_t)(ps__rand(rnd) % 5000); break;
    case PROTOBUF_C_TYPE_DOUBLE: *(double *)p = (double)(ps__rand(rnd) % 100000) / 100.0; break;
    case PROTOBUF_C_TYPE_FLOAT: *(float *)p = (float)(ps__rand(rnd) % 1000) / 10.0f; break;
    case PROTOBUF_C_TYPE_ENUM: {
      const ProtobufCEnumDescriptor *e = f->descriptor;
      if (e->n_values)
        *(int *)p = e->values[ps__rand(rnd) % e->n_values].value;
      break;
    }
    default: break; /* nested messages and bytes stay unset */
    }
  }
}

/* --demo N: batches of events of every type of the Event oneof, in turn. */
static void ps__demo(const ps__opts *o, ps__batch **v, size_t *n, size_t *cap) {
  const ProtobufCMessageDescriptor *ed = &event__event__descriptor;
  const ProtobufCFieldDescriptor *types[64];
  size_t ntypes = 0;
  for (unsigned i = 0; i < ed->n_fields && ntypes < 64; i++)
    if ((ed->fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && ed->fields[i].type == PROTOBUF_C_TYPE_MESSAGE)
      types[ntypes++] = &ed->fields[i];
  unsigned long long rnd = (unsigned long long)ps_now_ns() | 1;
  char run[32];
  snprintf(run, sizeof run, "demo-%08llx", ps__rand(&rnd) & 0xffffffffULL);
  long made = 0;
  for (long b = 0; made < o->demo; b++) {
    ps_arena *a = ps_arena_create(16384);
    Event__Events m = EVENT__EVENTS__INIT;
    Event__Header h = EVENT__HEADER__INIT;
    char s[64];
    snprintf(s, sizeof s, "%s-session-%ld", run, b % 97);
    h.sessionid = ps__astr(a, s);
    h.userid = (int64_t)(1000 + b % 500);
    snprintf(s, sizeof s, "device-%ld", b % 31);
    h.deviceid = ps__astr(a, s);
    h.clientid = ps__astr(a, "penstock-send");
    h.os = ps__astr(a, (b & 1) ? "android" : "ios");
    h.appversion = ps__astr(a, "1.0.0");
    m.header = &h;
    size_t k = (size_t)(o->demo - made < o->batch ? o->demo - made : o->batch);
    m.events = ps_arena_alloc(a, k * sizeof *m.events);
    m.n_events = k;
    time_t now = time(NULL);
    for (size_t i = 0; i < k; i++, made++) {
      Event__Event *ev = ps_arena_alloc(a, sizeof *ev);
      event__event__init(ev);
      snprintf(s, sizeof s, "%s-%ld", run, made);
      ev->id = ps__astr(a, s);
      snprintf(s, sizeof s, "%lld", (long long)now * 1000);
      ev->timestamp = ps__astr(a, s);
      if (ntypes) {
        const ProtobufCFieldDescriptor *f = types[made % (long)ntypes];
        const ProtobufCMessageDescriptor *pd = f->descriptor;
        ProtobufCMessage *pm = ps_arena_alloc(a, pd->sizeof_message);
        pd->message_init(pm);
        ps__fill(pm, a, &rnd, run);
        *(ProtobufCMessage **)((char *)ev + f->offset) = pm;
        *(uint32_t *)((char *)ev + f->quantifier_offset) = f->id;
      }
      m.events[i] = ev;
    }
    ps__add_batch(v, n, cap, &m);
    ps_arena_destroy(a);
  }
}

/* --file: every JSON value of the text, each an Events object or an array of them. */
static int ps__read_file(const char *path, ps__batch **v, size_t *n, size_t *cap) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "penstock send: %s: %s\n", path, strerror(errno));
    return PS__USAGE;
  }
  ps_buf text = PS_BUF_INIT;
  char chunk[65536];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
    ps_buf_append(&text, chunk, got);
  if (f != stdin)
    fclose(f);
  size_t off = 0, line = 1;
  int rc = PS__OK;
  for (;;) {
    while (off < text.len && (text.data[off] == ' ' || text.data[off] == '\t' || text.data[off] == '\r' ||
                              text.data[off] == '\n')) {
      if (text.data[off] == '\n')
        line++;
      off++;
    }
    if (off >= text.len)
      break;
    json_error_t je;
    json_t *val = json_loadb(text.data + off, text.len - off, JSON_DISABLE_EOF_CHECK, &je);
    if (!val) {
      fprintf(stderr, "penstock send: %s:%zu: %s\n", path, line + (size_t)(je.line > 0 ? je.line - 1 : 0),
              je.text);
      rc = PS__USAGE;
      break;
    }
    size_t nitems = json_is_array(val) ? json_array_size(val) : 1;
    for (size_t i = 0; i < nitems && rc == PS__OK; i++) {
      json_t *item = json_is_array(val) ? json_array_get(val, i) : val;
      char *one = json_dumps(item, JSON_COMPACT);
      char err[256];
      ProtobufCMessage *m = NULL;
      if (!one || ps_pbjson_decode(&event__events__descriptor, one, strlen(one), NULL, &m, err, sizeof err) != 0) {
        fprintf(stderr, "penstock send: %s:%zu: not an Events message%s%s: %s\n", path, line,
                json_is_array(val) ? " (array element " : "", json_is_array(val) ? "...)" : "",
                one ? err : "out of memory");
        rc = PS__USAGE;
      } else {
        ps__add_batch(v, n, cap, (const Event__Events *)m);
        protobuf_c_message_free_unpacked(m, NULL);
      }
      free(one);
    }
    for (size_t k = 0; k < (size_t)je.position && off + k < text.len; k++)
      if (text.data[off + k] == '\n')
        line++;
    off += (size_t)je.position;
    json_decref(val);
    if (rc != PS__OK)
      break;
  }
  ps_buf_free(&text);
  return rc;
}

/* ------------------------------------------------------------ calls */

typedef struct ps__call {
  grpc_call *call;
  size_t batch;
  int64_t start_ns;
  grpc_byte_buffer *req, *resp;
  grpc_metadata_array init_md, trailing_md;
  grpc_status_code status;
  grpc_slice details;
} ps__call;

typedef struct ps__stats {
  long long sent_batches, sent_events, ok_events, ok_batches, failed_batches, failed_events;
  long long by_status[17];
  long long refused; /* answered OK but Response.status != SUCCESS */
  char last_error[256];
} ps__stats;

static const char *ps__status_name(int s) {
  static const char *names[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  return s >= 0 && s < 17 ? names[s] : "UNKNOWN";
}

static void ps__start(grpc_channel *ch, grpc_completion_queue *cq, ps__call *c, const ps__batch *b, size_t bi,
                      int timeout_ms) {
  memset(c, 0, sizeof *c);
  c->batch = bi;
  c->start_ns = ps_now_ns();
  gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
  c->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                     grpc_slice_from_static_string("/event.EventService/dispatch"), NULL, deadline,
                                     NULL);
  grpc_slice s = grpc_slice_from_copied_buffer((const char *)b->data, b->len);
  c->req = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  grpc_metadata_array_init(&c->init_md);
  grpc_metadata_array_init(&c->trailing_md);
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = c->req;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->init_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &c->resp;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &c->trailing_md;
  ops[5].data.recv_status_on_client.status = &c->status;
  ops[5].data.recv_status_on_client.status_details = &c->details;
  if (grpc_call_start_batch(c->call, ops, 6, c, NULL) != GRPC_CALL_OK)
    abort();
}

/* Reads the call's outcome into stats; 1 if the batch was accepted. Frees the call's resources. */
static int ps__finish(ps__call *c, const ps__batch *b, ps__stats *st) {
  int accepted = 0;
  if (c->status == GRPC_STATUS_OK && c->resp) {
    grpc_byte_buffer_reader r;
    grpc_byte_buffer_reader_init(&r, c->resp);
    grpc_slice all = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    Event__Response *resp = event__response__unpack(NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    grpc_slice_unref(all);
    if (resp && resp->status && strcmp(resp->status, "SUCCESS") == 0) {
      accepted = 1;
    } else {
      st->refused++;
      snprintf(st->last_error, sizeof st->last_error, "OK with status %s: %s",
               resp && resp->status ? resp->status : "(none)", resp && resp->message ? resp->message : "");
    }
    if (resp)
      event__response__free_unpacked(resp, NULL);
  } else if (c->status != GRPC_STATUS_OK) {
    char *d = grpc_slice_to_c_string(c->details);
    snprintf(st->last_error, sizeof st->last_error, "%s: %s", ps__status_name(c->status), d);
    gpr_free(d);
  }
  st->by_status[c->status >= 0 && c->status < 17 ? c->status : 2]++;
  if (accepted) {
    st->ok_batches++;
    st->ok_events += (long long)b->nevents;
  } else {
    st->failed_batches++;
    st->failed_events += (long long)b->nevents;
  }
  grpc_byte_buffer_destroy(c->req);
  if (c->resp)
    grpc_byte_buffer_destroy(c->resp);
  grpc_metadata_array_destroy(&c->init_md);
  grpc_metadata_array_destroy(&c->trailing_md);
  grpc_slice_unref(c->details);
  grpc_call_unref(c->call);
  return accepted;
}

static void ps__progress(const ps__stats *st, long long total, int64_t t0, int final) {
  double secs = (double)(ps_now_ns() - t0) / 1e9;
  int width = 30, done = total ? (int)((st->ok_events + st->failed_events) * width / total) : width;
  char bar[64];
  for (int i = 0; i < width; i++)
    bar[i] = i < done ? '#' : '.';
  bar[width] = '\0';
  fprintf(stderr, "\r[%s] %lld/%lld events, %lld accepted, %lld failed, %.0f events/s%s", bar,
          st->ok_events + st->failed_events, total, st->ok_events, st->failed_events,
          secs > 0 ? (double)st->ok_events / secs : 0.0, final ? "\n" : "");
  fflush(stderr);
}

static int ps__parse(int argc, char **argv, ps__opts *o) {
  *o = (ps__opts){"127.0.0.1:50051", NULL, NULL, -1, 50, 8, 10000, 0, 0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    char *end;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(ps__usage_text, stdout);
      return 1;
    } else if (strcmp(a, "--json") == 0) {
      o->json = 1;
    } else if (strcmp(a, "--quiet") == 0) {
      o->quiet = 1;
    } else if (!v) {
      fprintf(stderr, "penstock send: %s: %s\n", a, strncmp(a, "--", 2) ? "unexpected argument" : "needs a value");
      return -1;
    } else if (strcmp(a, "--addr") == 0) {
      o->addr = v, i++;
    } else if (strcmp(a, "--file") == 0) {
      o->file = v, i++;
    } else if (strcmp(a, "--ids") == 0) {
      o->ids_path = v, i++;
    } else if (strcmp(a, "--demo") == 0 || strcmp(a, "--batch") == 0 || strcmp(a, "--concurrency") == 0 ||
               strcmp(a, "--timeout-ms") == 0) {
      errno = 0;
      long x = strtol(v, &end, 10);
      long lo = strcmp(a, "--demo") == 0 ? 0 : 1;
      if (errno || *end || end == v || x < lo || x > 100000000L) {
        fprintf(stderr, "penstock send: %s %s: expected an integer from %ld\n", a, v, lo);
        return -1;
      }
      if (strcmp(a, "--demo") == 0)
        o->demo = x;
      else if (strcmp(a, "--batch") == 0)
        o->batch = (int)x;
      else if (strcmp(a, "--concurrency") == 0)
        o->concurrency = (int)(x > 1024 ? 1024 : x);
      else
        o->timeout_ms = (int)x;
      i++;
    } else {
      fprintf(stderr, "penstock send: unknown option %s (try --help)\n", a);
      return -1;
    }
  }
  if ((o->demo >= 0) == (o->file != NULL)) {
    fprintf(stderr, "penstock send: give one of --demo N or --file F (try --help)\n");
    return -1;
  }
  return 0;
}

int ps_send_main(int argc, char **argv) {
  ps__opts o;
  int prc = ps__parse(argc, argv, &o);
  if (prc)
    return prc > 0 ? PS__OK : PS__USAGE;
  ps__batch *batches = NULL;
  size_t nb = 0, capb = 0;
  if (o.file) {
    int rc = ps__read_file(o.file, &batches, &nb, &capb);
    if (rc != PS__OK)
      return rc;
  } else {
    ps__demo(&o, &batches, &nb, &capb);
  }
  FILE *ids = NULL;
  if (o.ids_path && !(ids = fopen(o.ids_path, "w"))) {
    fprintf(stderr, "penstock send: %s: %s\n", o.ids_path, strerror(errno));
    return PS__USAGE;
  }
  long long total = 0;
  for (size_t i = 0; i < nb; i++)
    total += (long long)batches[i].nevents;

  grpc_init();
  grpc_channel_credentials *creds = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(o.addr, creds, NULL);
  grpc_channel_credentials_release(creds);
  grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
  ps__call *calls = calloc((size_t)o.concurrency, sizeof *calls);
  ps__call **free_slots = calloc((size_t)o.concurrency, sizeof *free_slots);
  if (!calls || !free_slots)
    abort();
  size_t nfree = 0;
  for (int i = 0; i < o.concurrency; i++)
    free_slots[nfree++] = &calls[i];
  ps__stats st;
  memset(&st, 0, sizeof st);
  int tty = !o.quiet && isatty(STDERR_FILENO);
  int64_t t0 = ps_now_ns(), last_draw = 0;
  size_t next = 0, inflight = 0;
  while (next < nb || inflight) {
    while (next < nb && nfree) {
      ps__start(ch, cq, free_slots[--nfree], &batches[next], next, o.timeout_ms);
      st.sent_batches++;
      st.sent_events += (long long)batches[next].nevents;
      next++;
      inflight++;
    }
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE)
      continue;
    ps__call *c = ev.tag;
    const ps__batch *b = &batches[c->batch];
    if (ps__finish(c, b, &st) && ids)
      for (size_t i = 0; i < b->nevents; i++)
        fprintf(ids, "%s\n", b->ids[i]);
    free_slots[nfree++] = c;
    inflight--;
    if (tty && ps_now_ns() - last_draw > 100000000) {
      ps__progress(&st, total, t0, 0);
      last_draw = ps_now_ns();
    }
  }
  double secs = (double)(ps_now_ns() - t0) / 1e9;
  if (tty)
    ps__progress(&st, total, t0, 1);
  if (ids)
    fclose(ids);
  grpc_channel_destroy(ch);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  grpc_shutdown();

  double rate = secs > 0 ? (double)st.ok_events / secs : 0;
  if (o.json) {
    printf("{\"addr\":\"%s\",\"batches\":%lld,\"sent\":%lld,\"accepted\":%lld,\"failed\":%lld,\"seconds\":%.3f,"
           "\"events_per_second\":%.0f,\"failed_by_status\":{",
           o.addr, st.sent_batches, st.sent_events, st.ok_events, st.failed_events, secs, rate);
    int first = 1;
    for (int s = 0; s < 17; s++)
      if (st.by_status[s] && s != 0) {
        printf("%s\"%s\":%lld", first ? "" : ",", ps__status_name(s), st.by_status[s]);
        first = 0;
      }
    if (st.refused)
      printf("%s\"NOT_SUCCESS\":%lld", first ? "" : ",", st.refused);
    printf("}}\n");
  } else {
    printf("sent %lld events in %lld batches to %s: %lld accepted, %lld failed, %.2f s, %.0f events/s\n",
           st.sent_events, st.sent_batches, o.addr, st.ok_events, st.failed_events, secs, rate);
    for (int s = 1; s < 17; s++)
      if (st.by_status[s])
        printf("  failed batches with %s: %lld\n", ps__status_name(s), st.by_status[s]);
    if (st.refused)
      printf("  batches answered without SUCCESS: %lld\n", st.refused);
    if (st.last_error[0] && st.failed_batches)
      printf("  last error: %s\n", st.last_error);
  }
  for (size_t i = 0; i < nb; i++) {
    for (size_t k = 0; k < batches[i].nevents; k++)
      free(batches[i].ids[k]);
    free(batches[i].ids);
    free(batches[i].data);
  }
  free(batches);
  free(calls);
  free(free_slots);
  return st.failed_batches ? PS__FAIL : PS__OK;
}
