/*
 * ps_fleet: every consumer of the topology file, running (see ps_fleet.h).
 *
 * DESIGN: one ps__unit per configured consumer holds what its threads share
 * and read only: the configuration entry, the table (columns and engine), and
 * for json decoders a template decoder that owns the column array the table
 * points into. The consumer threads make their own decoder and sink from the
 * unit (sinks and decoders are not thread-safe), so nothing here is locked.
 * Stopping stops every group at once (a thread each): each group drains its
 * queue for a moment before leaving, and doing that one group after another
 * would add those moments up.
 */
#include "consume/ps_fleet.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consume/ps_consumer.h"
#include "consume/ps_decoder.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "sink/ps_sink.h"

#define PS__JSON_ENGINE "ENGINE = MergeTree ORDER BY tuple()"
#define PS__HTTP_FLUSH_MS 200

typedef struct ps__unit {
  const struct ps_fleet *fleet;
  const ps_consumer_conf *conf;
  const ps_clickhouse_conn_conf *ch; /* clickhouse sinks */
  ps_decoder *tmpl;                  /* json: owns the columns table.cols points to */
  ps_table table;
  ps_consumer_group *group;
} ps__unit;

struct ps_fleet {
  ps_fleet_options opt;
  ps__unit *units;
  size_t nunits;
  const ps_clickhouse_conn_conf **ch_used;
  size_t nch_used;
};

static ps_decoder *ps__make_decoder(void *ud) {
  ps__unit *u = ud;
  if (u->conf->decoder.kind == PS_DECODER_EVENTS)
    return ps_decoder_events_create();
  ps_table scratch = {0}; /* the same columns as the template's: the unit's table is used */
  ps_decoder *d = ps_decoder_json_create(&u->conf->decoder, &scratch);
  if (!d) /* the template was made from the same configuration: cannot fail but on OOM */
    abort();
  return d;
}

static ps_sink *ps__make_sink(void *ud) {
  ps__unit *u = ud;
  if (u->conf->sink.kind == PS_SINK_CONF_HTTP) {
    ps_sink *s = ps_sink_http_create(&u->conf->sink, &u->table);
    if (!s) /* the URL was checked at start */
      abort();
    return s;
  }
  if (u->fleet->opt.store_path)
    return ps_sink_sqlite_create(u->fleet->opt.store_path, &u->table);
  ps_clickhouse_options o = {u->ch->url, u->ch->database, u->ch->user, u->ch->password, u->ch->timeout_ms};
  return ps_sink_clickhouse_create(&o, &u->table);
}

static const ps_clickhouse_conn_conf *ps__connection(const ps_topology_config *cfg, const char *name) {
  for (size_t i = 0; i < cfg->nclickhouse; i++)
    if (strcmp(cfg->clickhouse[i].name, name) == 0)
      return &cfg->clickhouse[i];
  return NULL;
}

static void ps__free_units(ps_fleet *f) {
  for (size_t i = 0; i < f->nunits; i++)
    ps_decoder_destroy(f->units[i].tmpl);
  free(f->units);
  free(f->ch_used);
  free(f);
}

/* Fills u from its configuration; 0 or PS_ECONFIG with err. */
static int ps__prepare(ps_fleet *f, ps__unit *u, const ps_consumer_conf *c, char *err, size_t errlen) {
  u->fleet = f;
  u->conf = c;
  if (c->decoder.kind == PS_DECODER_EVENTS) {
    u->table.ncols = ps_events_table.ncols;
    u->table.cols = ps_events_table.cols;
  } else {
    u->tmpl = ps_decoder_json_create(&c->decoder, &u->table);
    if (!u->tmpl) {
      snprintf(err, errlen, "consumer %s: its json decoder cannot work as configured (see the log)", c->name);
      return PS_ECONFIG;
    }
  }
  if (c->sink.kind == PS_SINK_CONF_HTTP) {
    u->table.name = c->name;
    u->table.engine = "";
    ps_sink *probe = ps_sink_http_create(&c->sink, &u->table);
    if (!probe) {
      snprintf(err, errlen, "consumer %s: invalid HTTP sink URL", c->name);
      return PS_ECONFIG;
    }
    ps_sink_destroy(probe);
    return 0;
  }
  u->ch = ps__connection(f->opt.config, c->sink.connection);
  if (!u->ch) { /* the parser checks references; kept for configurations built in code */
    snprintf(err, errlen, "consumer %s: unknown clickhouse connection '%s'", c->name, c->sink.connection);
    return PS_ECONFIG;
  }
  u->table.name = c->sink.table;
  u->table.engine = c->sink.engine ? c->sink.engine
                    : c->decoder.kind == PS_DECODER_EVENTS ? ps_events_table.engine
                                                           : PS__JSON_ENGINE;
  return 0;
}

/* Creates u's table now if ClickHouse answers; its consumers retry otherwise. */
static void ps__create_table(ps__unit *u) {
  ps_sink *s = ps__make_sink(u);
  char err[512];
  if (ps_sink_open(s, err, sizeof err) != 0)
    ps_warn("sink: cannot create a table yet; its consumers will retry", "table", u->table.name, "store",
            u->fleet->opt.store_path ? u->fleet->opt.store_path : u->ch->name, "error", err);
  ps_sink_destroy(s);
}

static void ps__note_connection(ps_fleet *f, const ps_clickhouse_conn_conf *ch) {
  for (size_t i = 0; i < f->nch_used; i++)
    if (f->ch_used[i] == ch)
      return;
  f->ch_used[f->nch_used++] = ch;
}

int ps_fleet_start(const ps_fleet_options *opt, ps_fleet **out, char *err, size_t errlen) {
  const ps_topology_config *cfg = opt->config;
  ps_fleet *f = calloc(1, sizeof *f);
  if (!f)
    abort();
  f->opt = *opt;
  *out = NULL;
  size_t n = opt->ingest_only ? 0 : cfg->nconsumers;
  f->units = calloc(n ? n : 1, sizeof *f->units);
  f->ch_used = calloc(cfg->nclickhouse ? cfg->nclickhouse : 1, sizeof *f->ch_used);
  if (!f->units || !f->ch_used)
    abort();
  for (size_t i = 0; i < n; i++) {
    f->nunits++;
    if (ps__prepare(f, &f->units[i], &cfg->consumers[i], err, errlen) != 0) {
      ps__free_units(f);
      return PS_ECONFIG;
    }
  }
  /* Connections in the configuration's order, not the consumers'. */
  for (size_t k = 0; k < cfg->nclickhouse; k++)
    for (size_t i = 0; i < n; i++)
      if (f->units[i].ch == &cfg->clickhouse[k] && f->units[i].conf->count > 0 && !opt->store_path) {
        ps__note_connection(f, f->units[i].ch);
        break;
      }
  for (size_t i = 0; i < n; i++) {
    ps__unit *u = &f->units[i];
    if (u->ch && u->conf->count > 0)
      ps__create_table(u);
  }
  for (size_t i = 0; i < n; i++) {
    ps__unit *u = &f->units[i];
    const ps_consumer_conf *c = u->conf;
    if (c->count == 0)
      continue; /* declared for other instances; none here */
    int http = c->sink.kind == PS_SINK_CONF_HTTP;
    ps_consumer_options co = {
        .queue = c->queue,
        .table = u->table.name,
        .count = c->count,
        .prefetch = c->prefetch,
        .batch_rows = http ? c->prefetch : c->sink.flush_rows,
        .flush_ms = http ? PS__HTTP_FLUSH_MS : c->sink.flush_ms,
        .name = c->name,
        .dead_letter_exchange = c->dead_letter_exchange,
        .max_redeliveries = c->max_redeliveries,
        .max_held_bytes = (size_t)c->max_held_bytes,
        .buffered = !http && c->sink.buffered,
        .buffer_rows = c->sink.buffer_rows,
    };
    ps_consumer_factory cf = {ps__make_decoder, ps__make_sink, u};
    u->group = ps_consumers_start(&co, opt->broker, &cf);
    char count[16];
    snprintf(count, sizeof count, "%d", co.count);
    ps_info("consumers started", "consumer", c->name, "queue", c->queue, "count", count, "decoder",
            c->decoder.kind == PS_DECODER_EVENTS ? "events" : "json", "sink",
            http                 ? "http"
            : opt->store_path    ? (co.buffered ? "sqlite (buffered)" : "sqlite")
            : co.buffered        ? "clickhouse (buffered)"
                                 : "clickhouse",
            "table", u->table.name);
  }
  *out = f;
  return 0;
}

size_t ps_fleet_groups(const ps_fleet *f) {
  size_t n = 0;
  for (size_t i = 0; f && i < f->nunits; i++)
    n += f->units[i].group != NULL;
  return n;
}

size_t ps_fleet_clickhouse(const ps_fleet *f, const ps_clickhouse_conn_conf *const **conns) {
  *conns = f ? f->ch_used : NULL;
  return f ? f->nch_used : 0;
}

typedef struct {
  ps_consumer_group *g;
  int64_t deadline_ns;
} ps__stop_arg;

static void *ps__stop_main(void *arg) {
  ps__stop_arg *a = arg;
  ps_consumers_stop(a->g, a->deadline_ns);
  return NULL;
}

void ps_fleet_stop(ps_fleet *f, int64_t deadline_ns) {
  if (!f)
    return;
  pthread_t *t = calloc(f->nunits ? f->nunits : 1, sizeof *t);
  ps__stop_arg *a = calloc(f->nunits ? f->nunits : 1, sizeof *a);
  char *started = calloc(f->nunits ? f->nunits : 1, 1);
  if (!t || !a || !started)
    abort();
  for (size_t i = 0; i < f->nunits; i++) {
    a[i] = (ps__stop_arg){f->units[i].group, deadline_ns};
    started[i] = pthread_create(&t[i], NULL, ps__stop_main, &a[i]) == 0;
    if (!started[i])
      ps__stop_main(&a[i]);
  }
  for (size_t i = 0; i < f->nunits; i++)
    if (started[i])
      pthread_join(t[i], NULL);
  free(t);
  free(a);
  free(started);
  ps__free_units(f);
}
