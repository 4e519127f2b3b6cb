/*
 * penstock send: sends events to any server of the event.EventService
 * contract (penstock, or the original Go service).
 *
 * Everything to send is read (or generated), validated and serialized before
 * the first call: bad input exits 2 having sent nothing, and the rate the
 * summary gives measures the calls alone. Input is proto3 JSON decoded by
 * ps_pbjson; demo events come from ps_demo; the calls go through ps_client,
 * which keeps --concurrency calls in flight and counts every outcome.
 *
 * DESIGN: one thread. It starts calls while the window has room, then reaps
 * completions with a 100 ms timeout, so that the progress line (stderr on a
 * terminal only) is redrawn at most ten times a second and SIGINT/SIGTERM are
 * seen promptly: the first stops starting calls and waits for those in flight
 * (then the summary counts what was not sent); a second one kills as usual.
 */
#include "cli/ps_send.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/ps_args.h"
#include "cli/ps_client.h"
#include "cli/ps_demo.h"
#include "codec/ps_pbjson.h"
#include "core/ps_arena.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "eventservice.pb-c.h"
#include "queue/ps_queue.h" /* ps_now_ns */

enum { PS__EXIT_OK = 0, PS__EXIT_FAIL = 1, PS__EXIT_USAGE = 2 };

#define PS__DRAW_EVERY_NS 100000000LL /* progress redraws: ten a second at most */

static const char ps__usage_text[] =
    "usage: penstock send [--addr HOST:PORT] (--demo N | --file F) [options]\n"
    "\n"
    "Sends events to a server of the event.EventService contract (penstock, or the original\n"
    "service) and prints a summary: events sent, accepted, failed by gRPC status, events/s, elapsed.\n"
    "\n"
    "input (one of):\n"
    "  --demo N            N generated events of every event type the proto knows, in turn,\n"
    "                      with realistic random values and a header per batch\n"
    "  --file F            proto3 JSON Events from F (- for stdin): one Events object, a JSON\n"
    "                      array of them, or one per line; each Events object is one call\n"
    "options:\n"
    "  --addr HOST:PORT    the server (default 127.0.0.1:50051)\n"
    "  --batch B           events per call with --demo (default 50)\n"
    "  --concurrency C     calls in flight (default 8)\n"
    "  --channels N        connections to open; calls go to them in turn (default 1)\n"
    "  --timeout-ms T      deadline of each call in ms (default 10000; 0 for none)\n"
    "  --ids FILE          write the id of every event of an accepted call to FILE, one per line\n"
    "  --id-prefix P       demo event ids are P-1, P-2, ... (default: send-<random hex>)\n"
    "  --seed S            seed of the demo values (default: from the clock)\n"
    "  --json              print the summary as one JSON object\n"
    "  --quiet             no progress line, no error lines and no text summary (--json still prints)\n"
    "  -h, --help          this text\n"
    "\n"
    "A call is accepted when its status is OK and Response.status is SUCCESS. On a terminal a\n"
    "progress line on stderr shows events sent and accepted and events/s. Nothing is sent when\n"
    "the input is invalid. SIGINT stops sending; calls in flight are waited for.\n"
    "\n"
    "exit codes: 0 every call accepted; 1 some were not (or the server was unreachable);\n"
    "2 usage error, or unreadable or invalid input (reported as FILE:LINE:COLUMN: reason)\n";

const char *ps_send_usage(void) {
  return ps__usage_text;
}

/* ------------------------------------------------------------ arguments */

int ps_send_parse_args(int argc, char **argv, ps_send_options *o, char *err, size_t errlen) {
  *o = (ps_send_options){.addr = "127.0.0.1:50051",
                         .demo = -1,
                         .batch = 50,
                         .concurrency = 8,
                         .channels = 1,
                         .timeout_ms = 10000};
  int batch_set = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
      return 1;
    if (strcmp(a, "--json") == 0) {
      o->json = 1;
      continue;
    }
    if (strcmp(a, "--quiet") == 0) {
      o->quiet = 1;
      continue;
    }
    if (strncmp(a, "--", 2) != 0) {
      snprintf(err, errlen, "unexpected argument '%s'", a);
      return PS_EINVAL;
    }
    /* An option with a value: --opt VALUE or --opt=VALUE. */
    static const char *const with_value[] = {"--addr",        "--file",     "--demo",       "--batch",
                                             "--concurrency", "--channels", "--timeout-ms", "--ids",
                                             "--id-prefix",   "--seed"};
    char flag[64];
    const char *v;
    if (ps_args_option(argc, argv, &i, with_value, sizeof with_value / sizeof with_value[0], flag, sizeof flag,
                       &v, err, errlen) != 0)
      return PS_EINVAL;
    long long x;
    if (strcmp(flag, "--addr") == 0) {
      if (!ps_args_addr_ok(v)) {
        snprintf(err, errlen, "--addr: '%s' is not HOST:PORT", v);
        return PS_EINVAL;
      }
      o->addr = v;
    } else if (strcmp(flag, "--file") == 0) {
      if (!*v) {
        snprintf(err, errlen, "--file needs a file name (- for stdin)");
        return PS_EINVAL;
      }
      o->file = v;
    } else if (strcmp(flag, "--ids") == 0) {
      if (!*v) {
        snprintf(err, errlen, "--ids needs a file name");
        return PS_EINVAL;
      }
      o->ids_path = v;
    } else if (strcmp(flag, "--id-prefix") == 0) {
      for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
          snprintf(err, errlen, "--id-prefix: no spaces or control characters");
          return PS_EINVAL;
        }
      if (!*v) {
        snprintf(err, errlen, "--id-prefix must not be empty");
        return PS_EINVAL;
      }
      o->id_prefix = v;
    } else if (strcmp(flag, "--seed") == 0) {
      char *end;
      errno = 0;
      unsigned long long s = strtoull(v, &end, 0);
      if (errno || end == v || *end || *v == '-') {
        snprintf(err, errlen, "--seed: '%s' is not an unsigned integer", v);
        return PS_EINVAL;
      }
      o->seed = s;
      o->seed_set = 1;
    } else if (strcmp(flag, "--demo") == 0) {
      if (ps_args_int(flag, v, 1, 1000000000LL, &x, err, errlen))
        return PS_EINVAL;
      o->demo = x;
    } else if (strcmp(flag, "--batch") == 0) {
      if (ps_args_int(flag, v, 1, 100000, &x, err, errlen))
        return PS_EINVAL;
      o->batch = (int)x;
      batch_set = 1;
    } else if (strcmp(flag, "--concurrency") == 0) {
      if (ps_args_int(flag, v, 1, 4096, &x, err, errlen))
        return PS_EINVAL;
      o->concurrency = (int)x;
    } else if (strcmp(flag, "--channels") == 0) {
      if (ps_args_int(flag, v, 1, 64, &x, err, errlen))
        return PS_EINVAL;
      o->channels = (int)x;
    } else { /* --timeout-ms */
      if (ps_args_int(flag, v, 0, 86400000LL, &x, err, errlen))
        return PS_EINVAL;
      o->timeout_ms = (int)x;
    }
  }
  if (o->demo >= 0 && o->file) {
    snprintf(err, errlen, "give either --demo N or --file F, not both");
    return PS_EINVAL;
  }
  if (o->demo < 0 && !o->file) {
    snprintf(err, errlen, "nothing to send: give --demo N or --file F");
    return PS_EINVAL;
  }
  if (batch_set && o->file) {
    snprintf(err, errlen, "--batch applies to --demo only (each Events object of a file is one call)");
    return PS_EINVAL;
  }
  if (o->id_prefix && o->file) {
    snprintf(err, errlen, "--id-prefix applies to --demo only");
    return PS_EINVAL;
  }
  return 0;
}

/* ------------------------------------------------------------ batches */

void ps_send_batches_free(ps_send_batches *b) {
  for (size_t i = 0; i < b->n; i++) {
    free(b->v[i].data);
    free(b->v[i].ids);
  }
  free(b->v);
  *b = (ps_send_batches)PS_SEND_BATCHES_INIT;
}

/* Serializes m as the next batch. */
static void ps__add_batch(ps_send_batches *out, const Event__Events *m, int keep_ids) {
  if (out->n == out->cap) {
    out->cap = out->cap ? out->cap * 2 : 64;
    out->v = realloc(out->v, out->cap * sizeof *out->v);
    if (!out->v)
      abort();
  }
  ps_send_batch *b = &out->v[out->n++];
  memset(b, 0, sizeof *b);
  b->len = event__events__get_packed_size(m);
  b->data = malloc(b->len ? b->len : 1);
  if (!b->data)
    abort();
  event__events__pack(m, b->data);
  b->events = (uint32_t)m->n_events;
  out->events += m->n_events;
  if (keep_ids) {
    ps_buf ids = PS_BUF_INIT;
    for (size_t i = 0; i < m->n_events; i++) {
      ps_buf_puts(&ids, m->events[i]->id ? m->events[i]->id : "");
      ps_buf_putc(&ids, '\n');
    }
    b->ids = ids.data;
    b->ids_len = ids.len;
  }
}

void ps_send_demo(uint64_t seed, const char *id_prefix, long long n, int batch, int keep_ids,
                  ps_send_batches *out) {
  ps_demo *d = ps_demo_create(seed, id_prefix);
  for (long long made = 0; made < n;) {
    size_t k = (size_t)(n - made < batch ? n - made : batch);
    ps_arena *a = ps_arena_create(16384);
    ps__add_batch(out, ps_demo_batch(d, a, k), keep_ids);
    ps_arena_destroy(a);
    made += (long long)k;
  }
  ps_demo_destroy(d);
}

/* ------------------------------------------------------------ JSON input */

/* 1-based line and column (in characters: UTF-8 continuation bytes do not count) of text[off]. */
static void ps__linecol(const char *t, size_t off, long *line, long *col) {
  long l = 1, c = 1;
  for (size_t i = 0; i < off; i++) {
    if (t[i] == '\n') {
      l++;
      c = 1;
    } else if (((unsigned char)t[i] & 0xC0) != 0x80) {
      c++;
    }
  }
  *line = l;
  *col = c;
}

static int ps__input_error(const char *name, const char *t, size_t off, char *err, size_t errlen,
                           const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int ps__input_error(const char *name, const char *t, size_t off, char *err, size_t errlen,
                           const char *fmt, ...) {
  long line, col;
  ps__linecol(t, off, &line, &col);
  char reason[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  snprintf(err, errlen, "%s:%ld:%ld: %s", name, line, col, reason);
  return PS_EINVAL;
}

static size_t ps__skip_space(const char *t, size_t len, size_t i) {
  while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
    i++;
  return i;
}

/* Offset just past the object or array starting at t[start], or 0 when the text ends inside it. */
static size_t ps__value_end(const char *t, size_t len, size_t start) {
  long depth = 0;
  for (size_t i = start; i < len; i++) {
    char c = t[i];
    if (c == '"') {
      for (i++; i < len && t[i] != '"'; i++)
        if (t[i] == '\\')
          i++;
      if (i >= len)
        return 0;
    } else if (c == '{' || c == '[') {
      depth++;
    } else if (c == '}' || c == ']') {
      if (--depth == 0)
        return i + 1;
    }
  }
  return 0;
}

/* Reports the JSON syntax error in t[start..end) where jansson finds it, or 0 when jansson finds none. */
static int ps__syntax_error(const char *name, const char *t, size_t start, size_t end, char *err,
                            size_t errlen) {
  json_error_t je;
  size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
  json_t *v = json_loadb(t + start, end - start, flags, &je);
  if (!v && json_error_code(&je) == json_error_numeric_overflow)
    v = json_loadb(t + start, end - start, flags | JSON_DECODE_INT_AS_REAL, &je);
  if (v) {
    json_decref(v);
    return 0;
  }
  size_t off = start;
  if (je.position > 0 && (size_t)je.position <= end - start)
    off = start + (size_t)je.position - 1; /* jansson counts the bytes read, to the end of the bad token */
  return ps__input_error(name, t, off, err, errlen, "invalid JSON: %s", je.text);
}

/* Offset of a "\u0000" escape in t[start..end), or SIZE_MAX. */
static size_t ps__find_nul_escape(const char *t, size_t start, size_t end) {
  const char *p = t + start, *e = t + end;
  while ((p = memmem(p, (size_t)(e - p), "\\u0000", 6)) != NULL) {
    size_t bs = 0; /* an escape only if preceded by an even number of backslashes */
    for (const char *q = p; q > t + start && q[-1] == '\\'; q--)
      bs++;
    if (bs % 2 == 0)
      return (size_t)(p - t);
    p += 6;
  }
  return SIZE_MAX;
}

/* Decodes the Events object t[start..end) into a batch. */
static int ps__one_events(const char *name, const char *t, size_t start, size_t end, int keep_ids,
                          ps_send_batches *out, char *err, size_t errlen) {
  size_t nul = ps__find_nul_escape(t, start, end);
  if (nul != SIZE_MAX)
    return ps__input_error(
        name, t, nul, err, errlen,
        "U+0000 in a string: the contract's servers refuse it and protobuf-c cannot carry it");
  char why[512];
  ProtobufCMessage *m = NULL;
  if (ps_pbjson_decode(&event__events__descriptor, t + start, end - start, NULL, &m, why, sizeof why) != 0) {
    if (ps__syntax_error(name, t, start, end, err, errlen))
      return PS_EINVAL;
    return ps__input_error(name, t, start, err, errlen, "not a valid Events object: %s", why);
  }
  ps__add_batch(out, (const Event__Events *)m, keep_ids);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

/* Decodes the Events object starting at t[*i] and moves *i past it. */
static int ps__take_events(const char *name, const char *t, size_t len, size_t *i, int keep_ids,
                           ps_send_batches *out, char *err, size_t errlen) {
  size_t end = ps__value_end(t, len, *i);
  if (!end) {
    if (ps__syntax_error(name, t, *i, len, err, errlen))
      return PS_EINVAL;
    return ps__input_error(name, t, *i, err, errlen, "the input ends inside this Events object");
  }
  if (ps__one_events(name, t, *i, end, keep_ids, out, err, errlen))
    return PS_EINVAL;
  *i = end;
  return 0;
}

static int ps__describe_char(char c, char *buf, size_t n) {
  if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
    return snprintf(buf, n, "'%c'", c);
  return snprintf(buf, n, "byte 0x%02x", (unsigned char)c);
}

int ps_send_parse_json(const char *name, const char *t, size_t len, int keep_ids, ps_send_batches *out,
                       char *err, size_t errlen) {
  size_t i = 0;
  if (len >= 3 && memcmp(t, "\xEF\xBB\xBF", 3) == 0)
    i = 3; /* a UTF-8 byte order mark */
  size_t before = out->n;
  char what[32];
  for (;;) {
    i = ps__skip_space(t, len, i);
    if (i >= len)
      break;
    if (t[i] == '{') {
      if (ps__take_events(name, t, len, &i, keep_ids, out, err, errlen))
        return PS_EINVAL;
      continue;
    }
    if (t[i] != '[') {
      ps__describe_char(t[i], what, sizeof what);
      return ps__input_error(name, t, i, err, errlen,
                             "expected an Events object ('{') or an array of them ('['), found %s", what);
    }
    size_t open = i++;
    long oline, ocol;
    ps__linecol(t, open, &oline, &ocol);
    i = ps__skip_space(t, len, i);
    if (i < len && t[i] == ']') {
      i++;
      continue;
    }
    for (;;) {
      i = ps__skip_space(t, len, i);
      if (i >= len)
        return ps__input_error(name, t, len, err, errlen,
                               "the input ends inside the array opened at line %ld", oline);
      if (t[i] != '{') {
        ps__describe_char(t[i], what, sizeof what);
        return ps__input_error(name, t, i, err, errlen,
                               "expected an Events object ('{') in the array, found %s", what);
      }
      if (ps__take_events(name, t, len, &i, keep_ids, out, err, errlen))
        return PS_EINVAL;
      i = ps__skip_space(t, len, i);
      if (i >= len)
        return ps__input_error(name, t, len, err, errlen,
                               "the input ends inside the array opened at line %ld", oline);
      if (t[i] == ',') {
        i++;
        continue;
      }
      if (t[i] == ']') {
        i++;
        break;
      }
      ps__describe_char(t[i], what, sizeof what);
      return ps__input_error(name, t, i, err, errlen, "expected ',' or ']' after an array element, found %s",
                             what);
    }
  }
  if (out->n == before) {
    snprintf(err, errlen, "%s: no Events in the input", name);
    return PS_EINVAL;
  }
  return 0;
}

/* ------------------------------------------------------------ sending */

static volatile sig_atomic_t ps__stop;

static void ps__on_signal(int sig) {
  (void)sig;
  ps__stop = 1; /* SA_RESETHAND: a second signal takes the default action */
}

typedef struct ps__run {
  const ps_send_options *o;
  const ps_send_batches *in;
  FILE *ids;
  int ids_failed;
  int tty, cols;
  int64_t last_draw;
  int line_dirty; /* a progress line is on the terminal */
  unsigned char reported[PS_CLIENT_NOUTCOMES];
  ps_client *client;
} ps__run;

static void ps__clear_line(ps__run *r) {
  if (r->line_dirty) {
    fputs("\r\033[K", stderr);
    r->line_dirty = 0;
  }
}

static void ps__on_done(void *ctx, const ps_client_result *res) {
  ps__run *r = ctx;
  const ps_send_batch *b = res->user;
  if (res->outcome == 0) {
    if (r->ids && b->ids_len && fwrite(b->ids, 1, b->ids_len, r->ids) != b->ids_len)
      r->ids_failed = 1;
    return;
  }
  if (r->o->quiet || r->reported[res->outcome])
    return;
  r->reported[res->outcome] = 1;
  ps__clear_line(r);
  const char *name = ps_client_outcome_name(res->outcome);
  if (res->outcome == PS_CLIENT_NOT_SUCCESS && res->response_status)
    fprintf(stderr,
            "penstock send: a call answered OK with Response.status \"%s\": %s (more such calls are only "
            "counted)\n",
            res->response_status, res->response_message ? res->response_message : "");
  else
    fprintf(stderr, "penstock send: a call failed with %s: %s (more %s failures are only counted)\n", name,
            res->details, name);
}

/* "12.3k" style for the progress line. */
static void ps__human(char *buf, size_t n, double v) {
  if (v >= 1e6)
    snprintf(buf, n, "%.2fM", v / 1e6);
  else if (v >= 1e4)
    snprintf(buf, n, "%.1fk", v / 1e3);
  else
    snprintf(buf, n, "%.0f", v);
}

static void ps__draw(ps__run *r, int64_t now) {
  const ps_client_stats *st = ps_client_stats_get(r->client);
  uint64_t total = r->in->events;
  uint64_t done = st->events_done, acc = st->events[0];
  double secs = st->first_start_ns ? (double)(now - st->first_start_ns) / 1e9 : 0;
  char rate[32];
  ps__human(rate, sizeof rate, secs > 0 ? (double)acc / secs : 0);
  /* Numbers padded to the width of the total, so that the line keeps its length. */
  int w = snprintf(NULL, 0, "%" PRIu64, total);
  char text[256];
  int tl = snprintf(text, sizeof text,
                    " %3d%%  %*" PRIu64 "/%" PRIu64 " sent  %*" PRIu64 " accepted  %*" PRIu64
                    " failed  %7s events/s  %6.1fs",
                    total ? (int)(done * 100 / total) : 100, w, st->events_started, total, w, acc, w,
                    done - acc, rate, secs);
  int width = r->cols - 1 - tl - 2; /* room for the bar between [ ] */
  if (width > 30)
    width = 30;
  char bar[40] = "";
  if (width >= 10) {
    int fill = total ? (int)(done * (uint64_t)width / total) : width;
    bar[0] = '[';
    for (int k = 0; k < width; k++)
      bar[1 + k] = k < fill ? '#' : '.';
    bar[1 + width] = ']';
    bar[2 + width] = '\0';
  }
  fprintf(stderr, "\r%s%.*s\033[K", bar,
          r->cols - 1 - (int)strlen(bar) > 0 ? r->cols - 1 - (int)strlen(bar) : 0, text);
  fflush(stderr);
  r->line_dirty = 1;
  r->last_draw = now;
}

static void ps__summary_text(const ps__run *r, const ps_client_stats *st, uint64_t not_sent, double secs) {
  uint64_t failed_calls = st->calls_done - st->calls[0], failed = st->events_done - st->events[0];
  printf("sent       %" PRIu64 " events in %" PRIu64 " calls to %s\n", st->events_started, st->calls_started,
         r->o->addr);
  printf("accepted   %" PRIu64 " events (%" PRIu64 " calls)\n", st->events[0], st->calls[0]);
  printf("failed     %" PRIu64 " events (%" PRIu64 " calls)\n", failed, failed_calls);
  for (int k = 1; k < PS_CLIENT_NOUTCOMES; k++)
    if (st->calls[k])
      printf("  %-20s %" PRIu64 " events (%" PRIu64 " calls)\n", ps_client_outcome_name(k), st->events[k],
             st->calls[k]);
  if (not_sent)
    printf("not sent   %" PRIu64 " events (interrupted)\n", not_sent);
  printf("rate       %.0f events/s\n", secs > 0 ? (double)st->events[0] / secs : 0.0);
  printf("elapsed    %.3f s\n", secs);
  if (st->latency.count)
    printf("latency    p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           (double)ps_client_latency_quantile(&st->latency, 0.5) / 1e6,
           (double)ps_client_latency_quantile(&st->latency, 0.9) / 1e6,
           (double)ps_client_latency_quantile(&st->latency, 0.99) / 1e6, (double)st->latency.max_ns / 1e6);
}

static void ps__summary_json(const ps__run *r, const ps_client_stats *st, uint64_t not_sent, double secs) {
  ps_buf j = PS_BUF_INIT;
  ps_buf_puts(&j, "{\"addr\":");
  ps_pbjson_put_string(&j, r->o->addr, strlen(r->o->addr));
  ps_buf_printf(&j,
                ",\"sent\":%" PRIu64 ",\"sent_calls\":%" PRIu64 ",\"accepted\":%" PRIu64
                ",\"accepted_calls\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"failed_calls\":%" PRIu64
                ",\"failed_by_status\":{",
                st->events_started, st->calls_started, st->events[0], st->calls[0],
                st->events_done - st->events[0], st->calls_done - st->calls[0]);
  int first = 1;
  for (int k = 1; k < PS_CLIENT_NOUTCOMES; k++)
    if (st->calls[k]) {
      ps_buf_printf(&j, "%s\"%s\":{\"events\":%" PRIu64 ",\"calls\":%" PRIu64 "}", first ? "" : ",",
                    ps_client_outcome_name(k), st->events[k], st->calls[k]);
      first = 0;
    }
  ps_buf_printf(&j, "},\"not_sent\":%" PRIu64 ",\"events_per_sec\":%.1f,\"elapsed_s\":%.6f", not_sent,
                secs > 0 ? (double)st->events[0] / secs : 0.0, secs);
  ps_buf_printf(&j, ",\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}\n",
                (double)ps_client_latency_quantile(&st->latency, 0.5) / 1e6,
                (double)ps_client_latency_quantile(&st->latency, 0.9) / 1e6,
                (double)ps_client_latency_quantile(&st->latency, 0.99) / 1e6,
                (double)st->latency.max_ns / 1e6);
  fputs(j.data, stdout);
  ps_buf_free(&j);
}

/* Sends every batch; returns the exit code. */
static int ps__send_all(const ps_send_options *o, const ps_send_batches *in, FILE *ids) {
  ps__run r;
  memset(&r, 0, sizeof r);
  r.o = o;
  r.in = in;
  r.ids = ids;
  r.tty = !o->quiet && isatty(STDERR_FILENO);
  r.cols = 80;
  struct winsize ws;
  if (r.tty && ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    r.cols = ws.ws_col;

  char err[256];
  ps_client_options co = {o->addr, o->channels, o->concurrency, o->timeout_ms, NULL};
  if (ps_client_create(&co, ps__on_done, &r, &r.client, err, sizeof err) != 0) {
    fprintf(stderr, "penstock send: %s\n", err);
    return PS__EXIT_USAGE;
  }
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = ps__on_signal;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  ps__stop = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  int internal = 0;
  size_t next = 0;
  while ((next < in->n && !ps__stop && !internal) || ps_client_in_flight(r.client)) {
    while (next < in->n && !ps__stop && !internal && ps_client_room(r.client) > 0) {
      const ps_send_batch *b = &in->v[next];
      if (ps_client_start(r.client, b->data, b->len, b->events, (void *)b) != 0) {
        ps__clear_line(&r);
        fprintf(stderr, "penstock send: the gRPC core refused to start a call\n");
        internal = 1;
        break;
      }
      next++;
    }
    ps_client_poll(r.client, PS__DRAW_EVERY_NS);
    int64_t now = ps_now_ns();
    if (r.tty && now - r.last_draw >= PS__DRAW_EVERY_NS)
      ps__draw(&r, now);
  }
  if (r.tty) {
    ps__draw(&r, ps_now_ns());
    fputc('\n', stderr);
    r.line_dirty = 0;
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);

  ps_client_stats st = *ps_client_stats_get(r.client);
  ps_client_destroy(r.client);
  uint64_t not_sent = in->events - st.events_started;
  double secs = st.last_done_ns > st.first_start_ns ? (double)(st.last_done_ns - st.first_start_ns) / 1e9 : 0;
  if (ps__stop && !o->quiet)
    fprintf(stderr, "penstock send: interrupted; %" PRIu64 " events not sent\n", not_sent);
  if (o->json)
    ps__summary_json(&r, &st, not_sent, secs);
  else if (!o->quiet)
    ps__summary_text(&r, &st, not_sent, secs);
  fflush(stdout);
  int all = st.calls[0] == in->n && !internal && !ps__stop;
  if (r.ids_failed) {
    fprintf(stderr, "penstock send: %s: write error\n", o->ids_path);
    all = 0;
  }
  return all ? PS__EXIT_OK : PS__EXIT_FAIL;
}

/* Reads all of path ("-": stdin) into b. 0, or -1 with errno. */
static int ps__read_all(const char *path, ps_buf *b) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f)
    return -1;
  char chunk[65536];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
    ps_buf_append(b, chunk, got);
  int bad = ferror(f);
  int e = errno;
  if (f != stdin)
    fclose(f);
  if (bad) {
    errno = e ? e : EIO;
    return -1;
  }
  if (!b->data)
    ps_buf_reserve(b, 0);
  return 0;
}

int ps_send_main(int argc, char **argv) {
  ps_send_options o;
  char err[1024];
  int rc = ps_send_parse_args(argc, argv, &o, err, sizeof err);
  if (rc == 1) {
    fputs(ps__usage_text, stdout);
    return PS__EXIT_OK;
  }
  if (rc != 0) {
    fprintf(stderr, "penstock send: %s (see penstock send --help)\n", err);
    return PS__EXIT_USAGE;
  }

  ps_send_batches in = PS_SEND_BATCHES_INIT;
  if (o.file) {
    ps_buf text = PS_BUF_INIT;
    const char *name = strcmp(o.file, "-") == 0 ? "(stdin)" : o.file;
    if (ps__read_all(o.file, &text) != 0) {
      fprintf(stderr, "penstock send: %s: %s\n", name, strerror(errno));
      ps_buf_free(&text);
      return PS__EXIT_USAGE;
    }
    rc = ps_send_parse_json(name, text.data, text.len, o.ids_path != NULL, &in, err, sizeof err);
    ps_buf_free(&text);
    if (rc != 0) {
      fprintf(stderr, "penstock send: %s\n", err);
      ps_send_batches_free(&in);
      return PS__EXIT_USAGE;
    }
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t clock_seed =
        ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ ((uint64_t)getpid() << 32);
    uint64_t seed = o.seed_set ? o.seed : clock_seed;
    char prefix[32];
    if (!o.id_prefix)
      snprintf(prefix, sizeof prefix, "send-%08llx",
               (unsigned long long)((clock_seed * 0x9E3779B97F4A7C15ULL) >> 32));
    ps_send_demo(seed, o.id_prefix ? o.id_prefix : prefix, o.demo, o.batch, o.ids_path != NULL, &in);
  }

  FILE *ids = NULL;
  if (o.ids_path && !(ids = fopen(o.ids_path, "w"))) {
    fprintf(stderr, "penstock send: %s: %s\n", o.ids_path, strerror(errno));
    ps_send_batches_free(&in);
    return PS__EXIT_USAGE;
  }
  rc = ps__send_all(&o, &in, ids);
  if (ids && fclose(ids) != 0) {
    fprintf(stderr, "penstock send: %s: %s\n", o.ids_path, strerror(errno));
    rc = PS__EXIT_FAIL;
  }
  ps_send_batches_free(&in);
  return rc;
}
