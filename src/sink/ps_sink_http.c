/*
 * ps_sink_http: rows forwarded to a third-party HTTP API (see ps_sink.h).
 *
 * Each row is rendered into JSON text when it is written, so a flush only
 * slices and joins: one object per request (body: single) or arrays of up to
 * batch_max of them (body: batch). A flush drives up to `concurrency` libcurl
 * easy handles on one multi handle, from the flushing thread; each handle is a
 * slot that takes the next rows, sends them and, on a retryable answer, waits
 * out its backoff and resends the same body (so a slot that is backing off
 * does not send anything new: an overloaded server sees the load go down).
 *
 * Results follow Fluent Bit's out_http: 2xx stores the rows; a network error,
 * 408, 429, 5xx (and anything else that is not a 4xx) is retried with
 * exponential backoff and full jitter, a random wait in
 * [0, min(retry_max_ms, retry_base_ms * 2^attempt)], or the server's
 * Retry-After on 429/503 (delay-seconds or HTTP-date, never longer than
 * retry_max_ms); any other 4xx refuses the rows of the request for good.
 * Once one request has used its max_retries the target is taken to be down:
 * no new request starts, backoffs are abandoned, the requests on the wire
 * finish, and flush answers RETRY. Each row's state (pending, stored, refused)
 * is kept, so the next flush sends only the pending ones.
 *
 * Header values may be secrets: they are never logged, nor is the URL's query
 * or user info (logs name the target as scheme://host[:port]/path).
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "codec/ps_pbjson.h"
#include "config/ps_topology_config.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "queue/ps_queue.h"
#include "sink/ps_sink.h"
#include "sink/ps_sink_rejects.h"

enum { PS__ROW_PENDING, PS__ROW_STORED, PS__ROW_REFUSED };
enum { PS__SLOT_IDLE, PS__SLOT_RUNNING, PS__SLOT_WAITING };

#define PS__REPLY_MAX 4096 /* bytes of a response body kept for messages */
#define PS__EXCERPT 300    /* bytes of it quoted in a reason */

typedef struct {
  CURL *easy;
  int state;
  size_t *rows; /* batch indices of the rows in body */
  size_t nrows;
  ps_buf body;
  ps_buf reply;
  int attempt;              /* retries done for this body */
  int64_t until_ns;         /* WAITING: when to resend */
  long long retry_after_ms; /* from the last response; -1: none */
} ps__slot;

typedef struct {
  ps_sink base;
  char *url, *method, *display;
  struct curl_slist *headers;
  int batch, batch_max, timeout_ms, concurrency, max_retries, base_ms, max_ms;
  CURLM *multi;
  ps__slot *slots;
  /* The batch: row i's JSON object is json[off[i], off[i+1]). */
  ps_buf json;
  size_t *off;
  unsigned char *state;
  size_t n, cap, npending;
  ps_sink_rejects rej; /* refused rows of the batch */
  unsigned seed;
  ps_log_ratelimit rl_retry, rl_refused, rl_giveup;
} ps__http_sink;

static pthread_once_t ps__curl_once = PTHREAD_ONCE_INIT;
static void ps__curl_init(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- rendering rows ---------------------------------------------------------- */

/* Appends s[0..n) as a JSON string; invalid UTF-8 becomes U+FFFD so that the
   body stays valid JSON whatever a column holds. */
static void ps__put_str(ps_buf *out, const char *s, size_t n) {
  if (ps_utf8_valid(s, n)) {
    ps_pbjson_put_string(out, s, n);
    return;
  }
  ps_buf clean = PS_BUF_INIT;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xC2 && c <= 0xDF ? 2
                 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4
                                          : 0;
    if (len && i + len <= n && ps_utf8_valid(s + i, len)) {
      ps_buf_append(&clean, s + i, len);
      i += len;
    } else {
      ps_buf_append(&clean, "\xEF\xBF\xBD", 3);
      i++;
    }
  }
  ps_pbjson_put_string(out, clean.data, clean.len);
  ps_buf_free(&clean);
}

static int ps__is_json_column(const char *name) {
  return !strcmp(name, "payload") || !strcmp(name, "extra");
}

static int ps__valid_json(const char *s, size_t n) {
  if (!n)
    return 0;
  json_error_t e;
  json_t *j = json_loadb(s, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
  if (!j)
    return 0;
  json_decref(j);
  return 1;
}

static void ps__put_datetime(ps_buf *out, int64_t epoch) {
  time_t t = (time_t)epoch;
  struct tm tm;
  if (!gmtime_r(&t, &tm)) {
    ps_buf_puts(out, "\"1970-01-01T00:00:00Z\"");
    return;
  }
  ps_buf_printf(out, "\"%04d-%02d-%02dT%02d:%02d:%02dZ\"", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void ps__render(ps__http_sink *s, const ps_value *row) {
  const ps_table *t = s->base.table;
  ps_buf *b = &s->json;
  ps_buf_putc(b, '{');
  for (size_t i = 0; i < t->ncols; i++) {
    const ps_column *c = &t->cols[i];
    const ps_value *v = &row[i];
    if (i)
      ps_buf_putc(b, ',');
    ps__put_str(b, c->name, strlen(c->name));
    ps_buf_putc(b, ':');
    switch (c->type) {
    case PS_COL_STRING: {
      const char *p = v->s ? v->s : "";
      size_t n = v->s ? v->len : 0;
      if (ps__is_json_column(c->name) && ps__valid_json(p, n))
        ps_buf_append(b, p, n);
      else
        ps__put_str(b, p, n);
      break;
    }
    case PS_COL_INT64: ps_buf_put_i64(b, v->i); break;
    case PS_COL_UINT64: ps_buf_put_u64(b, v->u); break;
    case PS_COL_FLOAT64: ps_pbjson_put_double(b, v->f); break;
    case PS_COL_DATETIME: ps__put_datetime(b, v->i); break;
    }
  }
  ps_buf_putc(b, '}');
}

/* ---- the batch ---------------------------------------------------------------- */

static void ps__clear_rows(ps__http_sink *s) {
  ps_buf_reset(&s->json);
  s->n = 0;
  s->npending = 0;
  if (s->off)
    s->off[0] = 0;
}

static void ps__http_write(ps_sink *bs, const ps_value *row) {
  ps__http_sink *s = (ps__http_sink *)bs;
  ps_sink_rejects_expire(&s->rej);
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 64;
    s->off = realloc(s->off, (s->cap + 1) * sizeof *s->off);
    s->state = realloc(s->state, s->cap);
    if (!s->off || !s->state)
      abort();
  }
  s->off[s->n] = s->json.len;
  ps__render(s, row);
  s->state[s->n] = PS__ROW_PENDING;
  s->n++;
  s->off[s->n] = s->json.len;
  s->npending++;
}

static size_t ps__http_pending(ps_sink *bs) {
  return ((ps__http_sink *)bs)->npending;
}

static void ps__http_discard(ps_sink *bs) {
  ps__http_sink *s = (ps__http_sink *)bs;
  for (int i = 0; i < s->concurrency; i++) {
    s->slots[i].state = PS__SLOT_IDLE;
    s->slots[i].nrows = 0;
  }
  ps__clear_rows(s);
  ps_sink_rejects_clear(&s->rej);
}

static size_t ps__http_rejected(ps_sink *bs, const size_t **rows, const char *const **reasons) {
  return ps_sink_rejects_report(&((ps__http_sink *)bs)->rej, rows, reasons);
}

static void ps__refuse(ps__http_sink *s, size_t row, const char *reason) {
  ps_sink_rejects_add(&s->rej, row, reason);
  s->state[row] = PS__ROW_REFUSED;
  s->npending--;
}

/* ---- one request -------------------------------------------------------------- */

static size_t ps__on_body(char *p, size_t size, size_t n, void *ud) {
  ps__slot *sl = ud;
  size_t len = size * n;
  if (sl->reply.len < PS__REPLY_MAX)
    ps_buf_append(&sl->reply, p, len < PS__REPLY_MAX - sl->reply.len ? len : PS__REPLY_MAX - sl->reply.len);
  return len;
}

/* Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3). */
static size_t ps__on_header(char *p, size_t size, size_t n, void *ud) {
  ps__slot *sl = ud;
  size_t len = size * n;
  static const char name[] = "retry-after:";
  if (len > sizeof name - 1 && !strncasecmp(p, name, sizeof name - 1)) {
    char v[128];
    size_t i = sizeof name - 1, w = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\t'))
      i++;
    while (i < len && p[i] != '\r' && p[i] != '\n' && w < sizeof v - 1)
      v[w++] = p[i++];
    while (w && (v[w - 1] == ' ' || v[w - 1] == '\t'))
      w--;
    v[w] = '\0';
    size_t d = 0;
    while (d < w && v[d] >= '0' && v[d] <= '9')
      d++;
    if (w && d == w) {
      long long secs = d > 9 ? 999999999LL : strtoll(v, NULL, 10);
      sl->retry_after_ms = secs * 1000;
    } else if (w) {
      time_t at = curl_getdate(v, NULL);
      if (at != -1) {
        long long left = (long long)(at - time(NULL));
        sl->retry_after_ms = left > 0 ? left * 1000 : 0;
      }
    }
  }
  return len;
}

static void ps__start(ps__http_sink *s, ps__slot *sl) {
  CURL *c = sl->easy;
  ps_buf_reset(&sl->reply);
  sl->retry_after_ms = -1;
  curl_easy_setopt(c, CURLOPT_URL, s->url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, sl->body.data);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)sl->body.len);
  if (strcmp(s->method, "POST") != 0)
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, s->method);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(s->timeout_ms < 5000 ? s->timeout_ms : 5000));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ps__on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, sl);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, ps__on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, sl);
  curl_easy_setopt(c, CURLOPT_PRIVATE, sl);
  curl_multi_add_handle(s->multi, c);
  sl->state = PS__SLOT_RUNNING;
}

/* Gives slot sl the next pending rows from *cursor on; 0 if none are left. */
static int ps__take(ps__http_sink *s, ps__slot *sl, size_t *cursor) {
  size_t max = s->batch ? (size_t)s->batch_max : 1;
  sl->nrows = 0;
  ps_buf_reset(&sl->body);
  for (; *cursor < s->n && sl->nrows < max; (*cursor)++) {
    size_t r = *cursor;
    if (s->state[r] != PS__ROW_PENDING)
      continue;
    if (s->batch)
      ps_buf_putc(&sl->body, sl->nrows ? ',' : '[');
    ps_buf_append(&sl->body, s->json.data + s->off[r], s->off[r + 1] - s->off[r]);
    sl->rows[sl->nrows++] = r;
  }
  if (!sl->nrows)
    return 0;
  if (s->batch)
    ps_buf_putc(&sl->body, ']');
  sl->attempt = 0;
  return 1;
}

/* The wait before retry number attempt+1: full jitter, or Retry-After. */
static int64_t ps__backoff_ms(ps__http_sink *s, int attempt, long status, long long retry_after_ms) {
  int64_t cap = s->base_ms;
  for (int i = 0; i < attempt && cap < s->max_ms; i++)
    cap *= 2;
  if (cap > s->max_ms)
    cap = s->max_ms;
  int64_t ms = (int64_t)(rand_r(&s->seed) % (unsigned)(cap + 1));
  if ((status == 429 || status == 503) && retry_after_ms >= 0)
    ms = retry_after_ms < s->max_ms ? retry_after_ms : s->max_ms;
  return ms;
}

static void ps__reason(ps__slot *sl, long status, char *out, size_t outlen) {
  snprintf(out, outlen, "HTTP %ld: %.*s", status, PS__EXCERPT, sl->reply.data ? sl->reply.data : "");
  for (char *p = out; *p; p++)
    if (*p == '\n' || *p == '\r' || *p == '\t')
      *p = ' ';
}

static void ps__log_limited(ps_log_ratelimit *rl, ps_log_level lvl, const char *msg, ps__http_sink *s,
                            const char *error) {
  long long sup;
  if (!ps_log_enabled(lvl) || !ps_log_ratelimit_ok(rl, 5000, &sup))
    return;
  char sp[32];
  snprintf(sp, sizeof sp, "%lld", sup);
  ps_log_write(lvl, msg, "target", s->display, "error", error, "suppressed", sp, (const char *)0);
}

/* ---- flush -------------------------------------------------------------------- */

static ps_sink_result ps__http_flush(ps_sink *bs, char *err, size_t errlen) {
  ps__http_sink *s = (ps__http_sink *)bs;
  ps_sink_rejects_expire(&s->rej);
  size_t cursor = 0;
  int giving_up = 0;
  char last_err[512] = "";
  for (;;) {
    int64_t now = ps_now_ns();
    int busy = 0;
    int64_t next_ns = INT64_MAX;
    for (int i = 0; i < s->concurrency; i++) {
      ps__slot *sl = &s->slots[i];
      if (sl->state == PS__SLOT_WAITING && giving_up)
        sl->state = PS__SLOT_IDLE; /* its rows stay pending */
      if (sl->state == PS__SLOT_IDLE && !giving_up && ps__take(s, sl, &cursor))
        ps__start(s, sl);
      else if (sl->state == PS__SLOT_WAITING && sl->until_ns <= now)
        ps__start(s, sl);
      if (sl->state == PS__SLOT_WAITING && sl->until_ns < next_ns)
        next_ns = sl->until_ns;
      busy |= sl->state != PS__SLOT_IDLE;
    }
    if (!busy)
      break;
    int running = 0;
    curl_multi_perform(s->multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(s->multi, &left))) {
      if (m->msg != CURLMSG_DONE)
        continue;
      char *priv = NULL;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
      ps__slot *sl = (ps__slot *)priv;
      CURLcode cc = m->data.result;
      curl_multi_remove_handle(s->multi, m->easy_handle);
      long status = 0;
      char why[400];
      if (cc == CURLE_OK) {
        curl_easy_getinfo(sl->easy, CURLINFO_RESPONSE_CODE, &status);
        ps__reason(sl, status, why, sizeof why);
      } else {
        snprintf(why, sizeof why, "%s", curl_easy_strerror(cc));
      }
      sl->state = PS__SLOT_IDLE;
      if (cc == CURLE_OK && status >= 200 && status < 300) {
        for (size_t k = 0; k < sl->nrows; k++) {
          s->state[sl->rows[k]] = PS__ROW_STORED;
          s->npending--;
        }
      } else if (cc == CURLE_OK && status >= 400 && status < 500 && status != 408 && status != 429) {
        for (size_t k = 0; k < sl->nrows; k++)
          ps__refuse(s, sl->rows[k], why);
        ps__log_limited(&s->rl_refused, PS_LOG_WARN, "http sink: target refused rows", s, why);
      } else if (giving_up) {
        /* abandoned: the rows stay pending */
      } else if (sl->attempt >= s->max_retries) {
        snprintf(last_err, sizeof last_err, "%s (after %d retries)", why, sl->attempt);
        giving_up = 1;
        ps__log_limited(&s->rl_giveup, PS_LOG_WARN, "http sink: target keeps failing; will retry later", s,
                        why);
      } else {
        int64_t ms = ps__backoff_ms(s, sl->attempt, status, sl->retry_after_ms);
        sl->attempt++;
        sl->until_ns = ps_now_ns() + ms * 1000000;
        sl->state = PS__SLOT_WAITING;
        if (sl->until_ns < next_ns)
          next_ns = sl->until_ns;
        snprintf(last_err, sizeof last_err, "%s", why);
        ps__log_limited(&s->rl_retry, PS_LOG_WARN, "http sink: request failed; retrying", s, why);
      }
    }
    int idle = 0, all_idle = 1;
    for (int i = 0; i < s->concurrency; i++) {
      if (giving_up && s->slots[i].state == PS__SLOT_WAITING)
        s->slots[i].state = PS__SLOT_IDLE; /* its rows stay pending */
      idle |= s->slots[i].state == PS__SLOT_IDLE;
      all_idle &= s->slots[i].state == PS__SLOT_IDLE;
    }
    if (all_idle || (idle && !giving_up && cursor < s->n))
      continue; /* done, or a slot is free and rows are waiting */
    long wait_ms = 1000;
    if (next_ns != INT64_MAX) {
      int64_t d = (next_ns - ps_now_ns()) / 1000000 + 1;
      wait_ms = d < 0 ? 0 : d < wait_ms ? (long)d : wait_ms;
    }
    if (giving_up)
      wait_ms = wait_ms < 100 ? wait_ms : 100;
    curl_multi_poll(s->multi, NULL, 0, (int)wait_ms, NULL);
  }
  if (s->npending) {
    snprintf(err, errlen, "%zu row(s) not sent: %s", s->npending, last_err[0] ? last_err : "target failing");
    return PS_SINK_RETRY;
  }
  ps__clear_rows(s);
  return ps_sink_rejects_finish(&s->rej, err, errlen);
}

/* ---- life cycle --------------------------------------------------------------- */

static int ps__http_open(ps_sink *bs, char *err, size_t errlen) {
  (void)bs;
  (void)err;
  (void)errlen;
  return 0;
}

static void ps__http_destroy(ps_sink *bs) {
  ps__http_sink *s = (ps__http_sink *)bs;
  if (!s)
    return;
  for (int i = 0; s->slots && i < s->concurrency; i++) {
    ps__slot *sl = &s->slots[i];
    if (sl->easy) {
      if (s->multi)
        curl_multi_remove_handle(s->multi, sl->easy);
      curl_easy_cleanup(sl->easy);
    }
    free(sl->rows);
    ps_buf_free(&sl->body);
    ps_buf_free(&sl->reply);
  }
  free(s->slots);
  if (s->multi)
    curl_multi_cleanup(s->multi);
  curl_slist_free_all(s->headers);
  ps_sink_rejects_free(&s->rej);
  ps_buf_free(&s->json);
  free(s->off);
  free(s->state);
  free(s->url);
  free(s->method);
  free(s->display);
  free(s);
}

static const ps_sink_ops ps__http_ops = {
    .name = "http",
    .open = ps__http_open,
    .write = ps__http_write,
    .pending = ps__http_pending,
    .flush = ps__http_flush,
    .rejected = ps__http_rejected,
    .discard = ps__http_discard,
    .destroy = ps__http_destroy,
};

/* scheme://host[:port]/path of url: what logs may show. NULL if it does not parse. */
static char *ps__display(const char *url) {
  CURLU *u = curl_url();
  char *out = NULL;
  if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_url_get(u, CURLUPART_PORT, &port, 0);
    curl_url_get(u, CURLUPART_PATH, &path, 0);
    if (scheme && host) {
      ps_buf b = PS_BUF_INIT;
      ps_buf_printf(&b, "%s://%s%s%s%s", scheme, host, port ? ":" : "", port ? port : "", path ? path : "");
      out = b.data;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
  }
  curl_url_cleanup(u);
  return out;
}

static int ps__has_header(const ps_sink_conf *conf, const char *name) {
  for (size_t i = 0; i < conf->nheaders; i++)
    if (conf->headers[i].name && !strcasecmp(conf->headers[i].name, name))
      return 1;
  return 0;
}

ps_sink *ps_sink_http_create(const ps_sink_conf *conf, const ps_table *table) {
  pthread_once(&ps__curl_once, ps__curl_init);
  char *display = conf->url ? ps__display(conf->url) : NULL;
  if (!display) {
    ps_error("http sink: the target URL does not parse", "table", table->name ? table->name : "");
    return NULL;
  }
  ps__http_sink *s = calloc(1, sizeof *s);
  if (!s)
    abort();
  s->base.ops = &ps__http_ops;
  s->base.table = table;
  s->display = display;
  s->url = strdup(conf->url);
  s->method = strdup(conf->method && conf->method[0] ? conf->method : "POST");
  if (!s->url || !s->method)
    abort();
  s->batch = conf->body == PS_HTTP_BODY_BATCH;
  s->batch_max = conf->batch_max > 0 ? conf->batch_max : 100;
  s->timeout_ms = conf->timeout_ms > 0 ? conf->timeout_ms : 10000;
  s->concurrency = conf->concurrency > 0 ? conf->concurrency : 4;
  s->max_retries = conf->max_retries >= 0 ? conf->max_retries : 10;
  s->base_ms = conf->retry_base_ms > 0 ? conf->retry_base_ms : 200;
  s->max_ms = conf->retry_max_ms > 0 ? conf->retry_max_ms : 30000;
  if (s->max_ms < s->base_ms)
    s->max_ms = s->base_ms;
  for (size_t i = 0; i < conf->nheaders; i++) {
    ps_buf h = PS_BUF_INIT;
    ps_buf_printf(&h, "%s: %s", conf->headers[i].name, conf->headers[i].value ? conf->headers[i].value : "");
    s->headers = curl_slist_append(s->headers, h.data);
    ps_buf_free(&h);
  }
  if (!ps__has_header(conf, "Content-Type"))
    s->headers = curl_slist_append(s->headers, "Content-Type: application/json");
  if (!ps__has_header(conf, "User-Agent"))
    s->headers = curl_slist_append(s->headers, "User-Agent: penstock");
  if (!ps__has_header(conf, "Expect"))
    s->headers = curl_slist_append(s->headers, "Expect:");
  s->multi = curl_multi_init();
  s->slots = calloc((size_t)s->concurrency, sizeof *s->slots);
  if (!s->headers || !s->multi || !s->slots)
    abort();
  size_t per = s->batch ? (size_t)s->batch_max : 1;
  for (int i = 0; i < s->concurrency; i++) {
    s->slots[i].easy = curl_easy_init();
    s->slots[i].rows = malloc(per * sizeof *s->slots[i].rows);
    if (!s->slots[i].easy || !s->slots[i].rows)
      abort();
  }
  s->seed = (unsigned)ps_now_ns() ^ (unsigned)(uintptr_t)s;
  return &s->base;
}
