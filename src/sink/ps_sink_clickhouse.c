/*
 * ps_sink_clickhouse: rows into ClickHouse over its HTTP interface.
 *
 * Rows are kept as TabSeparated text in one buffer and sent as a single
 * `INSERT ... FORMAT TabSeparated` per flush, over a keep-alive libcurl
 * handle owned by the sink. DateTime values go as epoch seconds, which every
 * ClickHouse release parses the same way whatever the server's time zone.
 * A failed insert is classified from ClickHouse's exception code: data it
 * cannot parse is bad data, everything else (network, overload, server down)
 * RETRY.
 *
 * One bad row must not take its batch down with it. An insert of n rows is
 * atomic (one block: n is far below max_insert_block_size), so when it is
 * refused as bad data the sink bisects: each half is inserted on its own, a
 * refused half is split again, until the refused rows are single; those are
 * reported through rejected() and everything else is stored. When the left
 * half of a refused range goes in, the right half is known bad and is split
 * without being sent whole. That costs at most about 2·log2(n) requests per
 * bad row (2n - 1 if every row is bad). Each row's offset in the TSV buffer is kept
 * as it is written, so a half is a slice of the buffer, not a copy. If a RETRY
 * error interrupts the bisection, the rows already inserted (and the ones
 * already refused) are cut out of the buffer before flush answers RETRY, so
 * the next flush sends only what is left and nothing lands twice.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "core/ps_word.h"
#include "sink/ps_sink.h"
#include "sink/ps_sink_rejects.h"

typedef struct {
  ps_sink base;
  ps_clickhouse_options opt;
  char *url, *database, *user, *password;
  CURL *curl;
  ps_buf rows;         /* TSV of the rows not stored yet */
  size_t nrows;
  size_t *off;         /* off[i]: where pending row i starts in rows; off[nrows] == rows.len */
  size_t *idx;         /* idx[i]: pending row i's index in the batch */
  unsigned char *done; /* during a flush: 0 not yet, 1 inserted, 2 refused */
  size_t cap;          /* of idx and done; off has cap + 1 */
  size_t next_idx;     /* batch index of the next row written */
  ps_sink_rejects rej; /* refused rows of the batch */
  char *insert_url;
  ps_buf reply;
} ps__ch_sink;

static ps_log_ratelimit ps__bisect_rl;

static pthread_once_t ps__curl_once = PTHREAD_ONCE_INIT;
static void ps__curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static size_t ps__on_body(char *p, size_t size, size_t n, void *ud) {
  ps_buf *b = ud;
  if (b->len < 4096)
    ps_buf_append(b, p, size * n);
  return size * n;
}

/* Exception codes that mean "this data is wrong", not "try later". */
static int ps__is_bad_data(int code) {
  static const int bad[] = {6, 26, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (bad[i] == code)
      return 1;
  return 0;
}

/* POSTs body to query; returns OK, RETRY or DROP with a message in err. */
static ps_sink_result ps__post(ps__ch_sink *s, const char *url, const char *body, size_t len, char *err,
                               size_t errlen) {
  if (!s->curl) {
    s->curl = curl_easy_init();
    if (!s->curl) {
      snprintf(err, errlen, "curl_easy_init failed");
      return PS_SINK_RETRY;
    }
  }
  CURL *c = s->curl;
  ps_buf_reset(&s->reply);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ps__on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &s->reply);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, s->opt.timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  if (s->user[0]) {
    curl_easy_setopt(c, CURLOPT_USERNAME, s->user);
    curl_easy_setopt(c, CURLOPT_PASSWORD, s->password);
  }
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: text/tab-separated-values");
  hdr = curl_slist_append(hdr, "Expect:");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
  CURLcode cc = curl_easy_perform(c);
  curl_slist_free_all(hdr);
  if (cc != CURLE_OK) {
    snprintf(err, errlen, "%s", curl_easy_strerror(cc));
    return PS_SINK_RETRY;
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status == 200)
    return PS_SINK_OK;
  const char *msg = s->reply.data ? s->reply.data : "";
  snprintf(err, errlen, "HTTP %ld: %.*s", status, 400, msg);
  for (char *p = err; *p; p++)
    if (*p == '\n')
      *p = ' ';
  int code = 0;
  const char *cp = strstr(msg, "Code: ");
  if (cp)
    code = atoi(cp + 6);
  return ps__is_bad_data(code) ? PS_SINK_DROP : PS_SINK_RETRY;
}

static const char *ps__type_ddl(ps_col_type t) {
  switch (t) {
  case PS_COL_STRING: return "String";
  case PS_COL_INT64: return "Int64";
  case PS_COL_UINT64: return "UInt64";
  case PS_COL_FLOAT64: return "Float64";
  case PS_COL_DATETIME: return "DateTime";
  }
  return "String";
}

static char *ps__query_url(ps__ch_sink *s, const char *query) {
  CURL *c = curl_easy_init();
  char *q = curl_easy_escape(c, query, 0);
  ps_buf u = PS_BUF_INIT;
  ps_buf_printf(&u, "%s/?query=%s", s->url, q);
  curl_free(q);
  curl_easy_cleanup(c);
  return u.data;
}

static int ps__ch_open(ps_sink *bs, char *err, size_t errlen) {
  ps__ch_sink *s = (ps__ch_sink *)bs;
  const ps_table *t = bs->table;
  ps_buf ddl = PS_BUF_INIT;
  ps_buf_printf(&ddl, "CREATE TABLE IF NOT EXISTS %s.%s (", s->database, t->name);
  for (size_t i = 0; i < t->ncols; i++)
    ps_buf_printf(&ddl, "%s%s %s", i ? ", " : "", t->cols[i].name, ps__type_ddl(t->cols[i].type));
  ps_buf_printf(&ddl, ") %s", t->engine);
  ps_sink_result r = ps__post(s, s->url, ddl.data, ddl.len, err, errlen);
  ps_buf_free(&ddl);
  if (r == PS_SINK_OK)
    return 0;
  return r == PS_SINK_RETRY ? PS_ECONN : PS_EREJECTED;
}

/*
 * TabSeparated escaping: backslash, tab, newline, carriage return, NUL,
 * backspace and form feed become two-byte escapes; every other byte is
 * copied. ps__tsv_esc maps a byte to the letter of its escape (0: none).
 */
static const char ps__tsv_esc[256] = {
    ['\\'] = '\\', ['\t'] = 't', ['\n'] = 'n', ['\r'] = 'r', ['\0'] = '0', ['\b'] = 'b', ['\f'] = 'f',
};

/*
 * Whether any of the 8 bytes in w may need escaping: the escaped bytes but
 * the backslash are all below 14, so the test is "a byte below 14 or a
 * backslash" (it never misses one; the few bytes below 14 that need no escape
 * are sorted out by the table).
 */
static inline uint64_t ps__tsv_maybe(uint64_t w) {
  return ps_word_has_less(w, 14) | ps_word_has_byte(w, '\\');
}

/*
 * A length i such that s[0..i) needs no escaping, and i == n exactly when
 * none of s does: 16 bytes at a time, then 8, then the last n % 8 bytes as
 * the word that ends s (it overlaps bytes already seen, which are clean). A
 * string shorter than 8 bytes is tested as one word (ps_word_short); when
 * that word has a hit the answer is 0.
 */
static inline size_t ps__tsv_clean(const unsigned char *s, size_t n) {
  if (n < 8)
    return n && !ps__tsv_maybe(ps_word_short(s, n)) ? n : 0;
  size_t i = 0;
  for (; n - i >= 16; i += 16)
    if (ps__tsv_maybe(ps_word_load8(s + i)) | ps__tsv_maybe(ps_word_load8(s + i + 8)))
      return i;
  if (n - i >= 8) {
    if (ps__tsv_maybe(ps_word_load8(s + i)))
      return i;
    i += 8;
  }
  return i == n || !ps__tsv_maybe(ps_word_load8(s + n - 8)) ? n : i;
}

/*
 * Writes s[0..n) escaped at w, which has room for 2n bytes, and returns the
 * end. Most strings (JSON, identifiers) need no escape at all: one scan, 8
 * bytes at a time, and one copy. Otherwise the bytes from the first word with
 * a possible hit are looked up one by one in ps__tsv_esc, still skipping
 * clean words.
 */
static char *ps__tsv_string(char *w, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = ps__tsv_clean(u, n), run = 0;
  if (i == n) {
    memcpy(w, s, n);
    return w + n;
  }
  while (i < n) {
    while (n - i >= 8 && !ps__tsv_maybe(ps_word_load8(u + i)))
      i += 8;
    if (i >= n)
      break;
    char e = ps__tsv_esc[u[i]];
    if (!e) {
      i++;
      continue;
    }
    memcpy(w, s + run, i - run);
    w += i - run;
    *w++ = '\\';
    *w++ = e;
    run = ++i;
  }
  memcpy(w, s + run, n - run);
  return w + n - run;
}

/* Forgets the batch; what rejected() reports is left alone. */
static void ps__clear_rows(ps__ch_sink *s) {
  ps_buf_reset(&s->rows);
  s->nrows = 0;
  s->next_idx = 0;
  if (s->off)
    s->off[0] = 0;
}

static void ps__ch_write(ps_sink *bs, const ps_value *row) {
  ps__ch_sink *s = (ps__ch_sink *)bs;
  const ps_table *t = bs->table;
  ps_sink_rejects_expire(&s->rej);
  if (s->nrows == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 64;
    s->off = realloc(s->off, (s->cap + 1) * sizeof *s->off);
    s->idx = realloc(s->idx, s->cap * sizeof *s->idx);
    s->done = realloc(s->done, s->cap);
    if (!s->off || !s->idx || !s->done)
      abort();
  }
  s->off[s->nrows] = s->rows.len;
  /* Room for the whole row at once, then the row is written without a check per value: each string
     twice its length (all escapes), and 32 bytes a column for its separator and any number (20 digits at
     most, 24 characters for "%.17g"). */
  size_t room = t->ncols * 32 + 1;
  for (size_t i = 0; i < t->ncols; i++)
    if (t->cols[i].type == PS_COL_STRING && row[i].s)
      room += 2 * row[i].len;
  ps_buf_reserve(&s->rows, room);
  char *w = s->rows.data + s->rows.len;
  for (size_t i = 0; i < t->ncols; i++) {
    if (i)
      *w++ = '\t';
    const ps_value *v = &row[i];
    switch (t->cols[i].type) {
    case PS_COL_STRING:
      if (v->s)
        w = ps__tsv_string(w, v->s, v->len);
      break;
    case PS_COL_INT64:
    case PS_COL_DATETIME: w += ps_dec_i64(w, v->i); break;
    case PS_COL_UINT64: w += ps_dec_u64(w, v->u); break;
    case PS_COL_FLOAT64: /* rare: through printf, which needs the buffer's length up to date */
      s->rows.len = (size_t)(w - s->rows.data);
      ps_buf_printf(&s->rows, "%.17g", v->f);
      w = s->rows.data + s->rows.len;
      break;
    }
  }
  *w++ = '\n';
  s->rows.len = (size_t)(w - s->rows.data);
  s->rows.data[s->rows.len] = '\0';
  s->idx[s->nrows] = s->next_idx++;
  s->nrows++;
  s->off[s->nrows] = s->rows.len;
}

static size_t ps__ch_pending(ps_sink *bs) { return ((ps__ch_sink *)bs)->nrows; }

static void ps__ch_discard(ps_sink *bs) {
  ps__ch_sink *s = (ps__ch_sink *)bs;
  ps__clear_rows(s);
  ps_sink_rejects_clear(&s->rej);
}

static size_t ps__ch_rejected(ps_sink *bs, const size_t **rows, const char *const **reasons) {
  return ps_sink_rejects_report(&((ps__ch_sink *)bs)->rej, rows, reasons);
}

/* Records pending row i as refused for reason. Bisection goes left to right,
   so batch indices arrive in ascending order. */
static void ps__reject(ps__ch_sink *s, size_t i, const char *reason) {
  ps_sink_rejects_add(&s->rej, s->idx[i], reason);
  s->done[i] = 2;
}

static ps_sink_result ps__insert_range(ps__ch_sink *s, size_t lo, size_t hi, char *err, size_t errlen) {
  return ps__post(s, s->insert_url, s->rows.data + s->off[lo], s->off[hi] - s->off[lo], err, errlen);
}

/*
 * Rows [lo, hi) were refused together as bad data (with reason `why`): inserts
 * each half on its own, splitting refused halves again. Returns OK once every
 * row of the range is inserted or refused, or RETRY (with err) as soon as an
 * insert fails for another reason; done[] says what happened to each row.
 */
static ps_sink_result ps__bisect(ps__ch_sink *s, size_t lo, size_t hi, const char *why, char *err,
                                 size_t errlen) {
  if (hi - lo == 1) {
    ps__reject(s, lo, why);
    return PS_SINK_OK;
  }
  size_t mid = lo + (hi - lo) / 2;
  size_t part[3] = {lo, mid, hi};
  int left_ok = 0;
  for (int h = 0; h < 2; h++) {
    char msg[512];
    ps_sink_result r;
    if (h == 1 && left_ok) { /* the whole was refused and its left half went in: the right half is bad */
      snprintf(msg, sizeof msg, "%s", why);
      r = PS_SINK_DROP;
    } else {
      r = ps__insert_range(s, part[h], part[h + 1], msg, sizeof msg);
    }
    left_ok = h == 0 && r == PS_SINK_OK;
    if (r == PS_SINK_OK) {
      memset(s->done + part[h], 1, part[h + 1] - part[h]);
    } else if (r == PS_SINK_DROP) {
      if (ps__bisect(s, part[h], part[h + 1], msg, err, errlen) == PS_SINK_RETRY)
        return PS_SINK_RETRY;
    } else {
      snprintf(err, errlen, "%s", msg);
      return PS_SINK_RETRY;
    }
  }
  return PS_SINK_OK;
}

/* Cuts the inserted and refused rows out of the pending buffer. */
static void ps__compact(ps__ch_sink *s) {
  size_t w = 0, wpos = 0;
  for (size_t i = 0; i < s->nrows; i++) {
    if (s->done[i])
      continue;
    size_t len = s->off[i + 1] - s->off[i];
    if (wpos != s->off[i])
      memmove(s->rows.data + wpos, s->rows.data + s->off[i], len);
    s->off[w] = wpos;
    s->idx[w] = s->idx[i];
    wpos += len;
    w++;
  }
  s->nrows = w;
  s->off[w] = wpos;
  s->rows.len = wpos;
  if (s->rows.data)
    s->rows.data[wpos] = '\0';
}

static ps_sink_result ps__ch_flush(ps_sink *bs, char *err, size_t errlen) {
  ps__ch_sink *s = (ps__ch_sink *)bs;
  ps_sink_rejects_expire(&s->rej);
  ps_sink_result r = PS_SINK_OK;
  if (s->nrows) {
    char msg[512];
    r = ps__insert_range(s, 0, s->nrows, msg, sizeof msg);
    if (r == PS_SINK_RETRY) {
      snprintf(err, errlen, "%s", msg);
      return PS_SINK_RETRY;
    }
    if (r == PS_SINK_DROP) {
      long long sup;
      if (ps_log_ratelimit_ok(&ps__bisect_rl, 5000, &sup)) {
        char n[32], sp[32];
        snprintf(n, sizeof n, "%zu", s->nrows);
        snprintf(sp, sizeof sp, "%lld", sup);
        ps_warn("clickhouse: insert refused as bad data; isolating the bad rows", "table", bs->table->name,
                "rows", n, "error", msg, "suppressed", sp);
      }
      memset(s->done, 0, s->nrows);
      r = ps__bisect(s, 0, s->nrows, msg, err, errlen);
      if (r == PS_SINK_RETRY) {
        ps__compact(s);
        return PS_SINK_RETRY;
      }
    }
  }
  /* Every row of the batch is now stored or refused. */
  ps__clear_rows(s);
  return ps_sink_rejects_finish(&s->rej, err, errlen);
}

static void ps__ch_destroy(ps_sink *bs) {
  ps__ch_sink *s = (ps__ch_sink *)bs;
  if (!s)
    return;
  if (s->curl)
    curl_easy_cleanup(s->curl);
  ps_sink_rejects_free(&s->rej);
  free(s->off);
  free(s->idx);
  free(s->done);
  ps_buf_free(&s->rows);
  ps_buf_free(&s->reply);
  free(s->insert_url);
  free(s->url);
  free(s->database);
  free(s->user);
  free(s->password);
  free(s);
}

static const ps_sink_ops ps__ch_ops = {
    .name = "clickhouse",
    .open = ps__ch_open,
    .write = ps__ch_write,
    .pending = ps__ch_pending,
    .flush = ps__ch_flush,
    .rejected = ps__ch_rejected,
    .discard = ps__ch_discard,
    .destroy = ps__ch_destroy,
};

ps_sink *ps_sink_clickhouse_create(const ps_clickhouse_options *opt, const ps_table *table) {
  pthread_once(&ps__curl_once, ps__curl_init);
  ps__ch_sink *s = calloc(1, sizeof *s);
  if (!s)
    abort();
  s->base.ops = &ps__ch_ops;
  s->base.table = table;
  s->opt = *opt;
  s->url = strdup(opt->url);
  size_t n = strlen(s->url);
  while (n && s->url[n - 1] == '/')
    s->url[--n] = '\0';
  s->database = strdup(opt->database);
  s->user = strdup(opt->user ? opt->user : "");
  s->password = strdup(opt->password ? opt->password : "");
  ps_buf q = PS_BUF_INIT;
  ps_buf_printf(&q, "INSERT INTO %s.%s (", s->database, table->name);
  for (size_t i = 0; i < table->ncols; i++)
    ps_buf_printf(&q, "%s%s", i ? ", " : "", table->cols[i].name);
  ps_buf_puts(&q, ") FORMAT TabSeparated");
  s->insert_url = ps__query_url(s, q.data);
  ps_buf_free(&q);
  return &s->base;
}
