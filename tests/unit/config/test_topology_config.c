/*
 * Unit tests of ps_topology_config: the built-in configuration reproduces the
 * original consumer set; the example configuration loads and documents every
 * key the parser knows; each class of error names the right file, line and
 * reason (and frees what it had built: run under ASan); ${VAR} expansion;
 * integer and string queue arguments; dead_letter and enabled expansions; and
 * printing, which must parse back to an equal configuration with the secrets
 * redacted.
 *
 * Files are read relative to the working directory (the repository root, where
 * make and tests/run-unit run).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/ps_topology_config.h"
#include "consume/ps_decoder.h"
#include "core/ps_error.h"
#include "ps_test.h"

#define EXAMPLE "config/penstock.example.yaml"
#define DEFAULT_FILE "config/penstock.default.yaml"

/* Variables the built-in and example configurations read. */
static void clear_env(void) {
  static const char *const vars[] = {
      "EVENT_EXCHANGE",
      "CLICKHOUSE_URL",
      "CLICKHOUSE_DB_NAME",
      "CLICKHOUSE_USER",
      "CLICKHOUSE_PASSWORD",
      "CLICKHOUSE_TIMEOUT_MS",
      "CONSUMER_PREFETCH",
      "CLICKHOUSE_BATCH_ROWS",
      "CLICKHOUSE_FLUSH_MS",
      "QUEUE_TYPE",
      "WEBENGAGE_ENABLED",
      "WEBENGAGE_URL",
      "WEBENGAGE_API_KEY",
      "PURCHASE_FORWARD_ENABLED",
      "PURCHASE_API_URL",
      "PURCHASE_API_KEY",
      "PS_T_A",
      "PS_T_B",
      "PS_T_EMPTY",
  };
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
    unsetenv(vars[i]);
}

static int parse(const char *yaml, ps_topology_config *cfg, char *err, size_t errlen) {
  return ps_topology_config_parse("t.yaml", yaml, strlen(yaml), cfg, err, errlen);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)n + 1);
  if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
    free(p);
    p = NULL;
  }
  if (p)
    p[n] = '\0';
  fclose(f);
  return p;
}

static const ps_queue_decl *find_queue(const ps_topology_config *c, const char *name) {
  for (size_t i = 0; i < c->nqueues; i++)
    if (strcmp(c->queues[i].name, name) == 0)
      return &c->queues[i];
  return NULL;
}

static const ps_consumer_conf *find_consumer(const ps_topology_config *c, const char *name) {
  for (size_t i = 0; i < c->nconsumers; i++)
    if (strcmp(c->consumers[i].name, name) == 0)
      return &c->consumers[i];
  return NULL;
}

static const ps_broker_arg *find_arg(const ps_queue_decl *q, const char *key) {
  for (size_t i = 0; i < q->nargs; i++)
    if (strcmp(q->args[i].key, key) == 0)
      return &q->args[i];
  return NULL;
}

static int has_binding(const ps_topology_config *c, const char *queue, const char *exchange,
                       const char *key) {
  for (size_t i = 0; i < c->nbindings; i++)
    if (!strcmp(c->bindings[i].queue, queue) && !strcmp(c->bindings[i].exchange, exchange) &&
        !strcmp(c->bindings[i].key, key))
      return 1;
  return 0;
}

static size_t count_bindings(const ps_topology_config *c, const char *queue) {
  size_t n = 0;
  for (size_t i = 0; i < c->nbindings; i++)
    n += strcmp(c->bindings[i].queue, queue) == 0;
  return n;
}

/* ---- the built-in configuration ------------------------------------------------------------- */

PS_TEST(default_matches_its_file) {
  char *file = slurp(DEFAULT_FILE);
  PS_CHECK(file != NULL);
  int same = strcmp(file, ps_topology_config_default()) == 0;
  free(file);
  PS_CHECK_MSG(same, "the built-in configuration differs from %s (rebuild)", DEFAULT_FILE);
}

/* queue, binding key on the event exchange (or exchange:key), decoder, table (or URL), count, buffered. */
static const struct {
  const char *queue, *exchange, *key;
  ps_decoder_kind decoder;
  const char *table;
  int count, buffered;
} default_set[] = {
    {"grpc_clickhouse_event_q", "grpc_event.tx", "#", PS_DECODER_EVENTS, "events", 2, 0},
    {"clickhouse_click_event_q", "grpc_event.tx", "ClickEvent", PS_DECODER_EVENTS, "click_events", 2, 1},
    {"app_init_event_q", "grpc_event.tx", "LaunchEvent", PS_DECODER_EVENTS, "app_init_events", 2, 0},
    {"branch_event_q", "branch_event.tx", "*", PS_DECODER_JSON, "branch_events", 2, 0},
    {"graphy_event_q", "graphy_event.tx", "*", PS_DECODER_JSON, "graphy_events", 2, 0},
    {"trace_log", "identity.dx", "*", PS_DECODER_JSON, "trace_logs", 2, 1},
    {"affiliate_orders_event_q", "affiliate.dx", "*", PS_DECODER_JSON, "affiliate_orders", 2, 1},
    {"post_log_events_q", "beat.dx", "post_log_events", PS_DECODER_JSON, "post_log_events", 2, 1},
    {"sentiment_log_events_q", "beat.dx", "sentiment_log_events", PS_DECODER_JSON, "sentiment_log_events", 2,
     1},
    {"shopify_events_q", "shopify_event.dx", "shopify_events", PS_DECODER_JSON, "shopify_events", 2, 1},
};

static int check_dead_letter(const ps_topology_config *c, const char *queue) {
  const ps_queue_decl *q = find_queue(c, queue);
  char eq[300];
  snprintf(eq, sizeof eq, "%s.error", queue);
  const ps_queue_decl *e = find_queue(c, eq);
  const ps_broker_arg *dlx = q ? find_arg(q, "x-dead-letter-exchange") : NULL;
  const ps_broker_arg *dlk = q ? find_arg(q, "x-dead-letter-routing-key") : NULL;
  return q && e && e->durable && q->durable && dlx && dlx->str && !strcmp(dlx->str, "grpc_event_error.dx") &&
         dlk && dlk->str && !strcmp(dlk->str, queue) && has_binding(c, eq, "grpc_event_error.dx", queue);
}

PS_TEST(default_reproduces_the_original_consumers) {
  clear_env();
  ps_topology_config c;
  char err[512];
  const char *y = ps_topology_config_default();
  PS_CHECK_MSG(ps_topology_config_parse("(built-in)", y, strlen(y), &c, err, sizeof err) == 0, "%s", err);
  PS_CHECK_STR_EQ(c.source, "(built-in)");
  PS_CHECK_STR_EQ(c.event_exchange, "grpc_event.tx");
  PS_CHECK_STR_EQ(c.dead_letter_exchange, "grpc_event_error.dx");
  PS_CHECK_STR_EQ(c.exchanges[0].name, "grpc_event.tx");
  PS_CHECK_STR_EQ(c.exchanges[0].type, "topic");
  PS_CHECK_STR_EQ(c.exchanges[1].name, "grpc_event_error.dx");
  PS_CHECK_STR_EQ(c.exchanges[1].type, "direct");
  for (size_t i = 0; i < sizeof default_set / sizeof default_set[0]; i++) {
    const char *qn = default_set[i].queue;
    const ps_consumer_conf *cc = find_consumer(&c, qn);
    PS_CHECK_MSG(cc != NULL, "no consumer %s", qn);
    PS_CHECK_STR_EQ(cc->queue, qn);
    PS_CHECK_MSG(has_binding(&c, qn, default_set[i].exchange, default_set[i].key), "binding of %s", qn);
    PS_CHECK_INT_EQ(count_bindings(&c, qn), 1);
    PS_CHECK_MSG(check_dead_letter(&c, qn), "dead letters of %s", qn);
    PS_CHECK_INT_EQ(cc->decoder.kind, default_set[i].decoder);
    PS_CHECK_INT_EQ(cc->sink.kind, PS_SINK_CONF_CLICKHOUSE);
    PS_CHECK_STR_EQ(cc->sink.connection, "default");
    PS_CHECK_STR_EQ(cc->sink.table, default_set[i].table);
    PS_CHECK_INT_EQ(cc->count, default_set[i].count);
    PS_CHECK_INT_EQ(cc->sink.buffered, default_set[i].buffered);
    PS_CHECK(cc->count >= 2 && cc->count <= 20);
    PS_CHECK(cc->prefetch >= 1);
    PS_CHECK(!cc->sink.buffered || cc->sink.flush_rows <= cc->sink.buffer_rows);
    PS_CHECK_STR_EQ(cc->dead_letter_exchange, "grpc_event_error.dx");
    if (cc->decoder.kind == PS_DECODER_JSON) {
      PS_CHECK(cc->decoder.ncolumns >= 3);
      PS_CHECK(cc->decoder.keep_unknown);
      PS_CHECK(cc->sink.engine != NULL);
    }
  }
  /* Direct: CLICKHOUSE_BATCH_ROWS (50000) rows or CLICKHOUSE_FLUSH_MS (1 s), whichever comes first (the
     original inserted once per message); clicks buffered: a 10000-row buffer, 5000 rows / 1 s. */
  const ps_consumer_conf *g = find_consumer(&c, "grpc_clickhouse_event_q");
  PS_CHECK_INT_EQ(g->prefetch, 2000);
  PS_CHECK_INT_EQ(g->sink.flush_rows, 50000);
  PS_CHECK_INT_EQ(g->sink.flush_ms, 1000);
  PS_CHECK(g->sink.engine == NULL);
  const ps_consumer_conf *k = find_consumer(&c, "clickhouse_click_event_q");
  PS_CHECK_INT_EQ(k->sink.buffer_rows, 10000);
  PS_CHECK_INT_EQ(k->sink.flush_rows, 5000);
  PS_CHECK_INT_EQ(k->sink.flush_ms, 1000);
  PS_CHECK_INT_EQ(k->max_redeliveries, 5);
  const ps_consumer_conf *s = find_consumer(&c, "shopify_events_q");
  PS_CHECK_STR_EQ(s->decoder.unknown_column, "payload");
  /* QUEUE_TYPE unset: the queues of the gRPC events say classic (what RabbitMQ takes as no type at all);
     the others and the .error queues say nothing. */
  for (size_t i = 0; i < c.nqueues; i++) {
    const ps_broker_arg *t = find_arg(&c.queues[i], "x-queue-type");
    if (t)
      PS_CHECK_STR_EQ(t->str, "classic");
  }
  PS_CHECK(find_arg(find_queue(&c, "grpc_clickhouse_event_q"), "x-queue-type") != NULL);
  PS_CHECK(find_arg(find_queue(&c, "branch_event_q"), "x-queue-type") == NULL);
  const ps_clickhouse_conn_conf *ch = &c.clickhouse[0];
  PS_CHECK_INT_EQ(c.nclickhouse, 1);
  PS_CHECK_STR_EQ(ch->url, "http://127.0.0.1:8123");
  PS_CHECK_STR_EQ(ch->database, "default");
  PS_CHECK_STR_EQ(ch->user, "");
  PS_CHECK_STR_EQ(ch->password, "");
  PS_CHECK_INT_EQ(ch->health_check_ms, 1000);
  /* WebEngage is off without WEBENGAGE_ENABLED: no consumer, no queue, no binding. */
  PS_CHECK(find_consumer(&c, "webengage_event_q") == NULL);
  PS_CHECK(find_queue(&c, "webengage_event_q") == NULL);
  PS_CHECK(find_queue(&c, "webengage_event_q.error") == NULL);
  PS_CHECK_INT_EQ(count_bindings(&c, "webengage_event_q"), 0);
  PS_CHECK_INT_EQ(c.ndisabled, 1);
  PS_CHECK_STR_EQ(c.disabled[0], "webengage_event_q");
  PS_CHECK_INT_EQ(c.nconsumers, 10);
  PS_CHECK_INT_EQ(c.nqueues, 20);
  ps_topology_config_free(&c);
}

PS_TEST(default_webengage_when_enabled) {
  clear_env();
  setenv("WEBENGAGE_ENABLED", "true", 1);
  setenv("WEBENGAGE_URL", "https://api.webengage.com/v1/accounts/abc/events", 1);
  setenv("WEBENGAGE_API_KEY", "k-123", 1);
  ps_topology_config c;
  char err[512];
  const char *y = ps_topology_config_default();
  int rc = ps_topology_config_parse("(built-in)", y, strlen(y), &c, err, sizeof err);
  clear_env();
  PS_CHECK_MSG(rc == 0, "%s", err);
  const ps_consumer_conf *w = find_consumer(&c, "webengage_event_q");
  PS_CHECK(w != NULL);
  PS_CHECK_INT_EQ(c.ndisabled, 0);
  PS_CHECK_INT_EQ(w->count, 3);
  PS_CHECK_INT_EQ(w->decoder.kind, PS_DECODER_EVENTS);
  PS_CHECK_INT_EQ(w->sink.kind, PS_SINK_CONF_HTTP);
  PS_CHECK_STR_EQ(w->sink.url, "https://api.webengage.com/v1/accounts/abc/events");
  PS_CHECK_STR_EQ(w->sink.method, "POST");
  PS_CHECK_INT_EQ(w->sink.body, PS_HTTP_BODY_SINGLE);
  PS_CHECK_INT_EQ(w->sink.nheaders, 2);
  PS_CHECK_STR_EQ(w->sink.headers[0].name, "Authorization");
  PS_CHECK_STR_EQ(w->sink.headers[0].value, "Bearer k-123");
  PS_CHECK(has_binding(&c, "webengage_event_q", "grpc_event.tx", "CompletePurchaseEvent"));
  PS_CHECK(has_binding(&c, "webengage_event_q", "grpc_event.tx", "AddToCartEvent"));
  PS_CHECK(check_dead_letter(&c, "webengage_event_q"));
  PS_CHECK_INT_EQ(c.nconsumers, 11);
  ps_topology_config_free(&c);
}

PS_TEST(default_takes_the_environment_settings) {
  clear_env();
  setenv("CLICKHOUSE_URL", "http://ch.internal:8123", 1);
  setenv("CLICKHOUSE_DB_NAME", "analytics", 1);
  setenv("CLICKHOUSE_BATCH_ROWS", "500", 1);
  setenv("CONSUMER_PREFETCH", "300", 1);
  setenv("EVENT_EXCHANGE", "events.tx", 1);
  setenv("QUEUE_TYPE", "quorum", 1);
  ps_topology_config c;
  char err[512];
  const char *y = ps_topology_config_default();
  int rc = ps_topology_config_parse("(built-in)", y, strlen(y), &c, err, sizeof err);
  clear_env();
  PS_CHECK_MSG(rc == 0, "%s", err);
  PS_CHECK_STR_EQ(c.clickhouse[0].url, "http://ch.internal:8123");
  PS_CHECK_STR_EQ(c.clickhouse[0].database, "analytics");
  const ps_consumer_conf *g = find_consumer(&c, "grpc_clickhouse_event_q");
  PS_CHECK_INT_EQ(g->sink.flush_rows, 500);
  PS_CHECK_INT_EQ(g->prefetch, 300);
  PS_CHECK_STR_EQ(c.exchanges[0].name, "events.tx");
  PS_CHECK(has_binding(&c, "clickhouse_click_event_q", "events.tx", "ClickEvent"));
  /* QUEUE_TYPE: the queues bound to the event exchange, not those other services publish to, nor .error. */
  static const char *const quorum[] = {"grpc_clickhouse_event_q", "clickhouse_click_event_q", "app_init_event_q"};
  for (size_t i = 0; i < sizeof quorum / sizeof quorum[0]; i++) {
    const ps_broker_arg *t = find_arg(find_queue(&c, quorum[i]), "x-queue-type");
    PS_CHECK_MSG(t && strcmp(t->str, "quorum") == 0, "%s", quorum[i]);
    PS_CHECK_MSG(check_dead_letter(&c, quorum[i]), "dead letters of %s", quorum[i]);
  }
  PS_CHECK(find_arg(find_queue(&c, "grpc_clickhouse_event_q.error"), "x-queue-type") == NULL);
  PS_CHECK(find_arg(find_queue(&c, "branch_event_q"), "x-queue-type") == NULL);
  ps_topology_config_free(&c);
  /* An invalid value there is an error naming the line. */
  setenv("CLICKHOUSE_BATCH_ROWS", "lots", 1);
  rc = ps_topology_config_parse("(built-in)", y, strlen(y), &c, err, sizeof err);
  clear_env();
  PS_CHECK_INT_EQ(rc, PS_ECONFIG);
  PS_CHECK_MSG(strstr(err, "consumers[0].sink.flush_rows: 'lots' is not an integer") != NULL, "%s", err);
}

/* ---- the example ------------------------------------------------------------------------------ */

PS_TEST(example_loads) {
  clear_env();
  ps_topology_config c;
  char err[512];
  PS_CHECK_MSG(ps_topology_config_load(EXAMPLE, &c, err, sizeof err) == 0, "%s", err);
  PS_CHECK_STR_EQ(c.source, EXAMPLE);
  PS_CHECK(find_consumer(&c, "partner_orders") != NULL);
  PS_CHECK(find_consumer(&c, "purchase_forward") == NULL); /* enabled: ${PURCHASE_FORWARD_ENABLED:-false} */
  const ps_queue_decl *q = find_queue(&c, "partner_orders_q");
  PS_CHECK(q != NULL);
  const ps_broker_arg *a = find_arg(q, "x-queue-type");
  PS_CHECK(a && a->str && !strcmp(a->str, "quorum"));
  a = find_arg(q, "x-max-length");
  PS_CHECK(a && !a->str && a->num == 100000);
  ps_topology_config_free(&c);
  setenv("PURCHASE_FORWARD_ENABLED", "yes", 1);
  int rc = ps_topology_config_load(EXAMPLE, &c, err, sizeof err);
  clear_env();
  PS_CHECK_MSG(rc == 0, "%s", err);
  const ps_consumer_conf *p = find_consumer(&c, "purchase_forward");
  PS_CHECK(p != NULL);
  PS_CHECK_INT_EQ(p->sink.body, PS_HTTP_BODY_BATCH);
  PS_CHECK_INT_EQ(p->sink.batch_max, 50);
  ps_topology_config_free(&c);
}

/* Every key the parser knows is documented: it starts a comment line ("#   name  (string, ..."). */
PS_TEST(example_documents_every_key) {
  char *text = slurp(EXAMPLE);
  PS_CHECK(text != NULL);
  size_t n = 0, missing = 0;
  const char *key, *section;
  for (; (key = ps_topology_config_key(n, &section)) != NULL; n++) {
    int found = 0;
    size_t kl = strlen(key);
    for (const char *line = text; line && *line && !found;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
      if (*line != '#')
        continue;
      const char *p = line + 1;
      while (*p == ' ')
        p++;
      found = strncmp(p, key, kl) == 0 && (p[kl] == ' ' || p[kl] == '\n');
    }
    if (!found) {
      fprintf(stderr, "  %s: %s.%s is not documented\n", EXAMPLE, section, key);
      missing++;
    }
  }
  free(text);
  PS_CHECK(n > 60);
  PS_CHECK_INT_EQ(missing, 0);
}

/* What the parser accepts, the json decoder must accept too (it checks defaults and names itself). */
static int json_decoders_build(const ps_topology_config *c, char *why, size_t n) {
  for (size_t i = 0; i < c->nconsumers; i++) {
    if (c->consumers[i].decoder.kind != PS_DECODER_JSON)
      continue;
    ps_table t = {0};
    ps_decoder *d = ps_decoder_json_create(&c->consumers[i].decoder, &t);
    if (!d) {
      snprintf(why, n, "consumer %s", c->consumers[i].name);
      return 0;
    }
    size_t want = c->consumers[i].decoder.ncolumns + (c->consumers[i].decoder.keep_unknown ? 1 : 0);
    int ok = t.ncols == want;
    ps_decoder_destroy(d);
    if (!ok) {
      snprintf(why, n, "consumer %s: %zu columns", c->consumers[i].name, t.ncols);
      return 0;
    }
  }
  return 1;
}

PS_TEST(json_consumers_make_decoders) {
  clear_env();
  ps_topology_config c;
  char err[512], why[128];
  const char *y = ps_topology_config_default();
  PS_CHECK_MSG(ps_topology_config_parse("(built-in)", y, strlen(y), &c, err, sizeof err) == 0, "%s", err);
  int ok = json_decoders_build(&c, why, sizeof why);
  ps_topology_config_free(&c);
  PS_CHECK_MSG(ok, "built-in: %s", why);
  PS_CHECK_MSG(ps_topology_config_load(EXAMPLE, &c, err, sizeof err) == 0, "%s", err);
  ok = json_decoders_build(&c, why, sizeof why);
  ps_topology_config_free(&c);
  PS_CHECK_MSG(ok, "example: %s", why);
}

/* ---- errors: file, line, reason ------------------------------------------------------------ */

#define CONN "clickhouse_connections: [{name: ch, url: \"http://127.0.0.1:8123\"}]\n"

static const struct {
  const char *yaml, *err;
} errors[] = {
    /* unknown key */
    {"queues:\n"
     "  - name: q\n"
     "consumers:\n"
     "  - queue: q\n"
     "    decoder: {type: events}\n"
     "    sink:\n"
     "      type: clickhouse\n"
     "      connection: ch\n"
     "      tabel: events\n" CONN,
     "t.yaml:9: consumers[0].sink: unknown key 'tabel'"},
    {"event_exchange: x\nfoo: 1\n", "t.yaml:2: unknown key 'foo'"},
    {"exchanges:\n  - name: a\n    type: topic\n    durabel: true\n",
     "t.yaml:4: exchanges[0]: unknown key 'durabel'"},
    /* wrong type */
    {"event_exchange:\n  name: x\n", "t.yaml:2: event_exchange: expected a string, found a mapping"},
    {"queues: {name: q}\n", "t.yaml:1: queues: expected a sequence, found a mapping"},
    {"queues:\n  - q1\n", "t.yaml:2: queues[0]: expected a mapping, found a scalar"},
    {"queues:\n  - name: [a, b]\n", "t.yaml:2: queues[0].name: expected a string, found a sequence"},
    {"queues:\n  - name: q\n    durable: maybe\n",
     "t.yaml:3: queues[0].durable: expected true or false, found 'maybe'"},
    {"queues:\n  - name: q\n    durable: \"true\"\n",
     "t.yaml:3: queues[0].durable: expected true or false, found a quoted string"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    count: \"3\"\n",
     "t.yaml:5: consumers[0].count: expected an integer, found a quoted string"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    count: 2.5\n",
     "t.yaml:5: consumers[0].count: '2.5' is not an integer"},
    {"- a\n- b\n", "t.yaml:1: expected a mapping, found a sequence"},
    {"---\n", "t.yaml:1: empty configuration (no keys)"},
    {"", "t.yaml:1: empty configuration (no YAML document)"},
    {"# only a comment\n", "t.yaml:1: empty configuration (no YAML document)"},
    {"a: 1\n---\nb: 2\n", "t.yaml:2: more than one YAML document"},
    /* bad enum value */
    {"exchanges:\n  - {name: a, type: topics}\n",
     "t.yaml:2: exchanges[0].type: bad value 'topics' (expected one of: topic, direct, fanout, headers)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: protobuf}\n",
     "t.yaml:5: consumers[0].decoder.type: bad value 'protobuf' (expected one of: events, json)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink: {type: "
     "http, url: \"http://x/\", method: GET}\n",
     "t.yaml:6: consumers[0].sink.method: bad value 'GET' (expected one of: POST, PUT, PATCH)"},
    {"queues:\n  - name: q\n    arguments:\n      x-queue-type: quorom\n",
     "t.yaml:4: queues[0].arguments.x-queue-type: bad value 'quorom' (expected one of: classic, quorum, "
     "stream)"},
    /* integer out of range */
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    count: 257\n",
     "t.yaml:5: consumers[0].count: 257 is out of range (0..256)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    prefetch: 70000\n",
     "t.yaml:5: consumers[0].prefetch: 70000 is out of range (1..65535)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    max_held_bytes: 1000\n",
     "t.yaml:5: consumers[0].max_held_bytes: 1000 is out of range (1024..2147483647)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    count: 99999999999999999999\n",
     "t.yaml:5: consumers[0].count: '99999999999999999999' is not an integer"},
    {"queues:\n  - name: q\n    arguments: {x-max-priority: 300}\n",
     "t.yaml:3: queues[0].arguments.x-max-priority: 300 is out of range (1..255)"},
    {"queues:\n  - name: q\n    arguments: {x-max-length: lots}\n",
     "t.yaml:3: queues[0].arguments.x-max-length: expected an integer, found 'lots'"},
    /* missing required key */
    {"queues:\n  - durable: true\n", "t.yaml:2: queues[0]: missing required key 'name'"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n",
     "t.yaml:4: consumers[0]: missing required key 'sink'"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n      "
     "type: clickhouse\n      connection: ch\n",
     "t.yaml:7: consumers[0].sink: missing required key 'table'"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: json}\n",
     "t.yaml:5: consumers[0].decoder: missing required key 'columns'"},
    {"bindings:\n  - {queue: q, exchange: x}\n", "t.yaml:2: bindings[0]: missing required key 'key'"},
    /* duplicates */
    {"queues:\n  - name: q\n    durable: true\n    durable: false\n",
     "t.yaml:4: queues[0]: duplicate key 'durable' (first at line 3)"},
    {"queues:\n  - name: a\n  - name: b\n  - name: a\n",
     "t.yaml:4: queues[2].name: duplicate queue 'a' (first at line 2)"},
    {"exchanges:\n  - {name: x, type: topic}\n  - {name: x, type: direct}\n",
     "t.yaml:3: exchanges[1].name: duplicate exchange 'x' (first at line 2)"},
    {"clickhouse_connections:\n  - {name: ch, url: \"http://a\"}\n  - {name: ch, url: \"http://b\"}\n",
     "t.yaml:3: clickhouse_connections[1].name: duplicate connection 'ch' (first at line 2)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n"
     "  - {queue: q, decoder: {type: events}, sink: {type: clickhouse, connection: ch, table: t}}\n"
     "  - {queue: q, decoder: {type: events}, sink: {type: clickhouse, connection: ch, table: t}}\n",
     "t.yaml:5: consumers[1].name: duplicate consumer name 'q' (first at line 4); give each consumer of a "
     "queue its "
     "own name"},
    {"queues:\n  - name: q\n    dead_letter: true\n  - name: q.error\n",
     "t.yaml:4: queues[1].name: duplicate queue 'q.error' (declared by dead_letter: true at line 3)"},
    {"queues:\n  - name: q.error\n  - name: q\n    dead_letter: true\n",
     "t.yaml:4: queues[1].dead_letter: declares queue 'q.error', already declared at line 2"},
    {"queues: [{name: q}]\nbindings:\n  - {queue: q, key: a}\n  - {queue: q, key: a}\n",
     "t.yaml:4: bindings[1]: duplicate binding of 'q' to 'grpc_event.tx' with key 'a' (first at line 3)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder:\n      type: json\n      "
     "columns:\n        - {name: a}\n        - {name: a}\n"
     "    sink: {type: clickhouse, connection: ch, table: t}\n",
     "t.yaml:9: consumers[0].decoder.columns[1].name: duplicate column 'a'"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n      "
     "type: http\n      url: \"http://x/\"\n"
     "      headers:\n        X-A: 1\n        x-a: 2\n",
     "t.yaml:11: consumers[0].sink.headers: duplicate header 'x-a'"},
    /* dangling references */
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: r\n    decoder: {type: events}\n"
     "    sink: {type: clickhouse, connection: ch, table: t}\n",
     "t.yaml:4: consumers[0].queue: queue 'r' is not declared"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n"
     "    sink:\n      type: clickhouse\n      connection: cg\n      table: t\n",
     "t.yaml:8: consumers[0].sink.connection: clickhouse connection 'cg' is not declared"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    dead_letter_exchange: dlx\n"
     "    decoder: {type: events}\n    sink: {type: clickhouse, connection: ch, table: t}\n",
     "t.yaml:5: consumers[0].dead_letter_exchange: exchange 'dlx' is not declared"},
    {"queues: [{name: q}]\nbindings:\n  - {queue: r, key: a}\n",
     "t.yaml:3: bindings[0]: queue 'r' is not declared"},
    {"queues: [{name: q}]\nbindings:\n  - queue: q\n    exchange: nowhere.tx\n    key: a\n",
     "t.yaml:4: bindings[0]: exchange 'nowhere.tx' is not declared"},
    {"queues: [{name: q}]\nbindings:\n  - {queue: q, exchange: \"\", key: a}\n",
     "t.yaml:3: bindings[0]: cannot bind to the default exchange \"\""},
    {"queues:\n  - name: q\n    arguments:\n      x-dead-letter-exchange: gone.dx\n",
     "t.yaml:4: queues[0].arguments.x-dead-letter-exchange: exchange 'gone.dx' is not declared"},
    {"exchanges:\n  - {name: amq.topic, type: topic}\n",
     "t.yaml:2: exchanges[0]: exchange 'amq.topic' is built in (amq.*) and cannot be declared"},
    /* ${VAR} */
    {"queues:\n  - name: ${PS_T_UNSET_VAR}\n",
     "t.yaml:2: queues[0].name: environment variable PS_T_UNSET_VAR is not set"},
    {"queues:\n  - name: ${PS_T_A\n",
     "t.yaml:2: queues[0].name: unterminated '${PS_T_A' (expected ${NAME} or "
     "${NAME:-default})"},
    {"queues:\n  - name: a${1X}\n",
     "t.yaml:2: queues[0].name: bad variable name in '${1X}' (expected ${NAME} or "
     "${NAME:-default})"},
    /* keys of another type */
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: clickhouse\n      connection: ch\n      table: t\n      url: \"http://x/\"\n",
     "t.yaml:10: consumers[0].sink: 'url' is only for an http sink"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: http\n      url: \"http://x/\"\n      buffered: true\n",
     "t.yaml:9: consumers[0].sink: 'buffered' is only for a clickhouse sink"},
    {"queues: [{name: q}]\n" CONN
     "consumers:\n  - queue: q\n    decoder:\n      type: events\n      keep_unknown: true\n",
     "t.yaml:7: consumers[0].decoder: 'keep_unknown' is only for a json decoder"},
    /* values that depend on others */
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: clickhouse\n      connection: ch\n      table: t\n      buffer_rows: 5\n",
     "t.yaml:10: consumers[0].sink.buffer_rows: only for a buffered sink (buffered: true)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: clickhouse\n      connection: ch\n      table: t\n      buffered: true\n      buffer_rows: "
     "50\n",
     "t.yaml:11: consumers[0].sink.buffer_rows: 50 is less than flush_rows (100, the default of a buffered "
     "sink)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: clickhouse\n      connection: ch\n      table: t\n      buffered: true\n      flush_rows: "
     "20000\n",
     "t.yaml:11: consumers[0].sink.flush_rows: 20000 is more than buffer_rows (10000)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: http\n      url: \"http://x/\"\n      batch_max: 5\n",
     "t.yaml:9: consumers[0].sink.batch_max: only with body: batch"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: http\n      url: \"http://x/\"\n      retry_base_ms: 500\n      retry_max_ms: 100\n",
     "t.yaml:10: consumers[0].sink.retry_max_ms: 100 is less than retry_base_ms (500)"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: http\n      url: ftp://x/\n",
     "t.yaml:8: consumers[0].sink.url: 'ftp://x/' is not an http:// or https:// URL"},
    {"clickhouse_connections:\n  - {name: ch, url: \"127.0.0.1:8123\"}\n",
     "t.yaml:2: clickhouse_connections[0].url: '127.0.0.1:8123' is not an http:// or https:// URL"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder:\n      type: json\n      columns:\n"
     "        - {name: a, required: true, default: x}\n",
     "t.yaml:8: consumers[0].decoder.columns[0].default: a required column never uses its default"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder:\n      type: json\n      columns:\n"
     "        - {name: a, type: int64, default: seven}\n",
     "t.yaml:8: consumers[0].decoder.columns[0].default: 'seven' is not a valid int64"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder:\n      type: json\n      columns:\n"
     "        - {name: a, type: datetime, default: yesterday}\n",
     "t.yaml:8: consumers[0].decoder.columns[0].default: 'yesterday' is not a valid datetime"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder:\n      type: json\n      columns:\n"
     "        - {name: my-col}\n",
     "t.yaml:8: consumers[0].decoder.columns[0].name: 'my-col': expected a name of letters, digits and '_' "
     "(not "
     "starting with a digit)"},
    {"queues: [{name: q}]\n" CONN
     "consumers:\n  - queue: q\n    decoder:\n      type: json\n      columns: []\n",
     "t.yaml:7: consumers[0].decoder.columns: a json decoder needs at least one column"},
    {"queues: [{name: q}]\n" CONN
     "consumers:\n  - queue: q\n    decoder:\n      type: json\n      columns: [{name: a}]\n"
     "      unknown_column: rest\n",
     "t.yaml:8: consumers[0].decoder.unknown_column: only with keep_unknown: true"},
    {"queues: [{name: q}]\n" CONN
     "consumers:\n  - queue: q\n    decoder:\n      type: json\n      columns: [{name: extra}]\n"
     "      keep_unknown: true\n",
     "t.yaml:8: consumers[0].decoder.unknown_column: 'extra' is also the name of a column"},
    {"queues:\n  - name: q\n    durable: false\n    arguments: {x-queue-type: quorum}\n",
     "t.yaml:3: queues[0]: a quorum queue must be durable"},
    {"queues:\n  - name: q\n    dead_letter: true\n    arguments: {x-dead-letter-exchange: amq.direct}\n",
     "t.yaml:3: queues[0].dead_letter: sets x-dead-letter-exchange and x-dead-letter-routing-key; do not set "
     "them in "
     "arguments too"},
    {"queues:\n  - name: q\n    arguments:\n      x-custom: true\n",
     "t.yaml:4: queues[0].arguments.x-custom: a boolean is not a valid queue argument (quote it to send a "
     "string)"},
    {"queues:\n  - name: q\n    arguments: {x-single-active-consumer: true}\n",
     "t.yaml:3: queues[0].arguments: 'x-single-active-consumer' takes a boolean, which penstock cannot "
     "declare"},
    {"queues:\n  - name: \"\"\n", "t.yaml:2: queues[0].name: '': must not be empty"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: http\n      url: \"http://x/\"\n      headers: {Content-Length: 5}\n",
     "t.yaml:9: consumers[0].sink.headers: 'Content-Length' is set by penstock"},
    {"queues: [{name: q}]\n" CONN "consumers:\n  - queue: q\n    decoder: {type: events}\n    sink:\n"
     "      type: http\n      url: \"http://x/\"\n      headers: {X-A: \"a\\r\\nX-B: b\"}\n",
     "t.yaml:9: consumers[0].sink.headers.X-A: a header value must not contain a line break"},
    /* YAML itself */
    {"queues:\n  - name: q\n   durable: true\n",
     "t.yaml:3: invalid YAML: did not find expected '-' indicator (while "
     "parsing a block collection)"},
    {"queues:\n  - name: &n q\n  - name: *n\n", "t.yaml:3: aliases (*name) are not supported"},
    {"queues: !!set {a: 1}\n", "t.yaml:1: unsupported tag 'tag:yaml.org,2002:set'"},
    {"queues:\n  - name: \"a\\0b\"\n", "t.yaml:2: a string contains a NUL character"},
    {"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
     "t.yaml:1: nested more than 32 levels deep"},
    {"event_exchange: \"\\xff\"\nqueues: [{name: \"\xff\"}]\n",
     "t.yaml:2: invalid YAML: invalid leading UTF-8 octet"},
};

PS_TEST(errors_name_file_line_and_reason) {
  clear_env();
  setenv("PS_T_A", "a", 1);
  for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
    ps_topology_config c;
    char err[512] = "";
    int rc = parse(errors[i].yaml, &c, err, sizeof err);
    if (rc != PS_ECONFIG) {
      ps_test__fail(__FILE__, __LINE__, "case %zu: parsed:\n%s", i, errors[i].yaml);
      ps_topology_config_free(&c);
      continue;
    }
    if (strcmp(err, errors[i].err) != 0)
      ps_test__fail(__FILE__, __LINE__, "case %zu:\n  got:      %s\n  expected: %s", i, err, errors[i].err);
    /* Nothing left to free, and freeing again is fine. */
    PS_CHECK(c.nqueues == 0 && c.queues == NULL && c.nconsumers == 0 && c.source == NULL &&
             c.event_exchange == NULL);
    ps_topology_config_free(&c);
  }
  clear_env();
}

PS_TEST(missing_file) {
  ps_topology_config c;
  char err[512];
  PS_CHECK_INT_EQ(ps_topology_config_load("/nonexistent/penstock.yaml", &c, err, sizeof err), PS_ECONFIG);
  PS_CHECK_STR_EQ(err, "/nonexistent/penstock.yaml: No such file or directory");
  ps_topology_config_free(&c);
}

/* ---- what is accepted -------------------------------------------------------------------------- */

PS_TEST(minimal_file_gets_defaults) {
  clear_env();
  ps_topology_config c;
  char err[512];
  const char *y = "queues: [{name: q}]\n" CONN "consumers:\n"
                  "  - queue: q\n"
                  "    decoder: {type: events}\n"
                  "    sink: {type: clickhouse, connection: ch, table: t}\n"
                  "  - name: fwd\n"
                  "    queue: q\n"
                  "    decoder:\n"
                  "      type: json\n"
                  "      columns: [{name: id}, {name: n, from: a.b, type: uint64, default: \"7\"}]\n"
                  "      keep_unknown: on\n"
                  "    sink: {type: http, url: \"https://x.example/\"}\n";
  PS_CHECK_MSG(parse(y, &c, err, sizeof err) == 0, "%s", err);
  PS_CHECK_STR_EQ(c.event_exchange, "grpc_event.tx");
  PS_CHECK_STR_EQ(c.dead_letter_exchange, "grpc_event_error.dx");
  PS_CHECK_INT_EQ(c.nexchanges, 2);
  PS_CHECK(c.exchanges[0].durable && c.exchanges[1].durable);
  PS_CHECK_INT_EQ(c.nqueues, 1);
  PS_CHECK_INT_EQ(c.queues[0].durable, 1);
  PS_CHECK_INT_EQ(c.queues[0].nargs, 0);
  PS_CHECK_STR_EQ(c.clickhouse[0].database, "default");
  PS_CHECK_INT_EQ(c.clickhouse[0].timeout_ms, 30000);
  PS_CHECK_INT_EQ(c.clickhouse[0].health_check_ms, 1000);
  const ps_consumer_conf *a = &c.consumers[0], *b = &c.consumers[1];
  PS_CHECK_STR_EQ(a->name, "q");
  PS_CHECK_INT_EQ(a->count, 2);
  PS_CHECK_INT_EQ(a->prefetch, 1000);
  PS_CHECK_INT_EQ(a->max_redeliveries, 5);
  PS_CHECK_INT_EQ(a->max_held_bytes, 32 << 20);
  PS_CHECK_STR_EQ(a->dead_letter_exchange, "grpc_event_error.dx");
  PS_CHECK_INT_EQ(a->sink.buffered, 0);
  PS_CHECK_INT_EQ(a->sink.buffer_rows, 10000);
  PS_CHECK_INT_EQ(a->sink.flush_rows, 10000);
  PS_CHECK_INT_EQ(a->sink.flush_ms, 1000);
  PS_CHECK(a->sink.engine == NULL && a->sink.url == NULL);
  PS_CHECK_STR_EQ(b->name, "fwd");
  PS_CHECK_INT_EQ(b->decoder.ncolumns, 2);
  PS_CHECK_STR_EQ(b->decoder.columns[0].from, "id");
  PS_CHECK_INT_EQ(b->decoder.columns[0].type, PS_COL_STRING);
  PS_CHECK(b->decoder.columns[0].default_value == NULL);
  PS_CHECK_STR_EQ(b->decoder.columns[1].from, "a.b");
  PS_CHECK_INT_EQ(b->decoder.columns[1].type, PS_COL_UINT64);
  PS_CHECK_STR_EQ(b->decoder.columns[1].default_value, "7");
  PS_CHECK_INT_EQ(b->decoder.keep_unknown, 1);
  PS_CHECK_STR_EQ(b->decoder.unknown_column, "extra");
  PS_CHECK_STR_EQ(b->sink.method, "POST");
  PS_CHECK_INT_EQ(b->sink.body, PS_HTTP_BODY_SINGLE);
  PS_CHECK_INT_EQ(b->sink.batch_max, 100);
  PS_CHECK_INT_EQ(b->sink.timeout_ms, 10000);
  PS_CHECK_INT_EQ(b->sink.concurrency, 4);
  PS_CHECK_INT_EQ(b->sink.max_retries, 10);
  PS_CHECK_INT_EQ(b->sink.retry_base_ms, 200);
  PS_CHECK_INT_EQ(b->sink.retry_max_ms, 30000);
  PS_CHECK(b->sink.connection == NULL && b->sink.table == NULL);
  ps_topology t = ps_topology_config_topology(&c);
  PS_CHECK(t.exchanges == c.exchanges && t.nexchanges == c.nexchanges);
  PS_CHECK(t.queues == c.queues && t.nqueues == c.nqueues);
  PS_CHECK(t.bindings == c.bindings && t.nbindings == c.nbindings);
  ps_topology_config_free(&c);
  ps_topology_config_free(&c); /* zeroed: fine */
}

PS_TEST(env_expansion) {
  clear_env();
  setenv("PS_T_A", "alpha", 1);
  setenv("PS_T_B", "7", 1);
  setenv("PS_T_EMPTY", "", 1);
  ps_topology_config c;
  char err[512];
  const char *y = "event_exchange: ${PS_T_A}.tx\n"
                  "dead_letter_exchange: x${PS_T_UNSET:-dl}-${PS_T_EMPTY:-e}${PS_T_EMPTY}.dx\n"
                  "queues:\n"
                  "  - name: \"lit-$${PS_T_A}-$$-$x-${PS_T_A:-no}\"\n"
                  "    arguments: {x-max-length: \"${PS_T_B}\"}\n" CONN "consumers:\n"
                  "  - queue: \"lit-$${PS_T_A}-$$-$x-alpha\"\n"
                  "    count: ${PS_T_B}\n"
                  "    prefetch: ${PS_T_UNSET:-12}\n"
                  "    decoder: {type: events}\n"
                  "    sink: {type: clickhouse, connection: ch, table: t}\n";
  /* x-max-length is a known integer argument: quoted, it is refused; plain, it is expanded then read. */
  PS_CHECK_INT_EQ(parse(y, &c, err, sizeof err), PS_ECONFIG);
  PS_CHECK_STR_EQ(err,
                  "t.yaml:5: queues[0].arguments.x-max-length: expected an integer, found a quoted string");
  const char *y2 = "event_exchange: ${PS_T_A}.tx\n"
                   "dead_letter_exchange: x${PS_T_UNSET:-dl}-${PS_T_EMPTY:-e}${PS_T_EMPTY}.dx\n"
                   "queues:\n"
                   "  - name: \"lit-$${PS_T_A}-$$-$x-${PS_T_A:-no}\"\n"
                   "    arguments:\n"
                   "      x-max-length: ${PS_T_B}\n"
                   "      x-label: \"${PS_T_B}\"\n" CONN "consumers:\n"
                   "  - queue: \"lit-$${PS_T_A}-$$-$x-alpha\"\n"
                   "    count: ${PS_T_B}\n"
                   "    prefetch: ${PS_T_UNSET:-12}\n"
                   "    decoder: {type: events}\n"
                   "    sink: {type: clickhouse, connection: ch, table: t}\n";
  int rc = parse(y2, &c, err, sizeof err);
  clear_env();
  PS_CHECK_MSG(rc == 0, "%s", err);
  PS_CHECK_STR_EQ(c.event_exchange, "alpha.tx");
  PS_CHECK_STR_EQ(c.dead_letter_exchange, "xdl-e.dx");
  PS_CHECK_STR_EQ(c.queues[0].name, "lit-${PS_T_A}-$$-$x-alpha");
  PS_CHECK(c.queues[0].args[0].str == NULL);
  PS_CHECK_INT_EQ(c.queues[0].args[0].num, 7);
  PS_CHECK_STR_EQ(c.queues[0].args[1].str, "7"); /* quoted: a string, even after expansion */
  PS_CHECK_INT_EQ(c.consumers[0].count, 7);
  PS_CHECK_INT_EQ(c.consumers[0].prefetch, 12);
  ps_topology_config_free(&c);
  /* An expansion into a bad value is reported on the line of the ${...}. */
  setenv("PS_T_A", "alpha", 1);
  setenv("PS_T_EMPTY", "", 1);
  setenv("PS_T_B", "300", 1);
  rc = parse(y2, &c, err, sizeof err);
  clear_env();
  PS_CHECK_INT_EQ(rc, PS_ECONFIG);
  PS_CHECK_STR_EQ(err, "t.yaml:11: consumers[0].count: 300 is out of range (0..256)");
  /* Unset without a default. */
  rc = parse(y2, &c, err, sizeof err);
  PS_CHECK_INT_EQ(rc, PS_ECONFIG);
  PS_CHECK_STR_EQ(err, "t.yaml:1: event_exchange: environment variable PS_T_A is not set");
  /* Expanded text must be UTF-8. */
  setenv("PS_T_A", "\xff", 1);
  rc = parse("event_exchange: ${PS_T_A}\n", &c, err, sizeof err);
  clear_env();
  PS_CHECK_INT_EQ(rc, PS_ECONFIG);
  PS_CHECK_STR_EQ(err, "t.yaml:1: event_exchange: not valid UTF-8 after ${} expansion");
}

PS_TEST(queue_arguments_keep_their_type) {
  clear_env();
  ps_topology_config c;
  char err[512];
  const char *y = "exchanges: [{name: dlx, type: direct}]\n"
                  "queues:\n"
                  "  - name: q\n"
                  "    arguments:\n"
                  "      x-queue-type: quorum\n"
                  "      x-max-length: 100000\n"
                  "      x-message-ttl: 0\n"
                  "      x-dead-letter-exchange: dlx\n"
                  "      x-dead-letter-routing-key: 123\n"
                  "      x-custom-int: -42\n"
                  "      x-custom-str: \"42\"\n"
                  "      x-custom-word: hello\n";
  PS_CHECK_MSG(parse(y, &c, err, sizeof err) == 0, "%s", err);
  const ps_queue_decl *q = find_queue(&c, "q");
  PS_CHECK_INT_EQ(q->nargs, 8);
  const ps_broker_arg *a;
  PS_CHECK((a = find_arg(q, "x-queue-type")) && a->str && !strcmp(a->str, "quorum"));
  PS_CHECK((a = find_arg(q, "x-max-length")) && !a->str && a->num == 100000);
  PS_CHECK((a = find_arg(q, "x-message-ttl")) && !a->str && a->num == 0);
  PS_CHECK((a = find_arg(q, "x-dead-letter-exchange")) && a->str && !strcmp(a->str, "dlx"));
  PS_CHECK((a = find_arg(q, "x-dead-letter-routing-key")) && a->str && !strcmp(a->str, "123"));
  PS_CHECK((a = find_arg(q, "x-custom-int")) && !a->str && a->num == -42);
  PS_CHECK((a = find_arg(q, "x-custom-str")) && a->str && !strcmp(a->str, "42"));
  PS_CHECK((a = find_arg(q, "x-custom-word")) && a->str && !strcmp(a->str, "hello"));
  ps_topology_config_free(&c);
}

PS_TEST(dead_letter_expansion) {
  clear_env();
  ps_topology_config c;
  char err[512];
  const char *y = "dead_letter_exchange: errors.dx\n"
                  "queues:\n"
                  "  - {name: a, dead_letter: true, arguments: {x-max-length: 10}}\n"
                  "  - {name: b}\n"
                  "bindings:\n"
                  "  - {queue: a, key: A}\n"
                  "  - {queue: b, exchange: amq.topic, key: \"#\"}\n";
  PS_CHECK_MSG(parse(y, &c, err, sizeof err) == 0, "%s", err);
  PS_CHECK_INT_EQ(c.nqueues, 3);
  PS_CHECK_STR_EQ(c.queues[0].name, "a");
  PS_CHECK_STR_EQ(c.queues[1].name, "a.error"); /* right after its queue */
  PS_CHECK_STR_EQ(c.queues[2].name, "b");
  PS_CHECK(c.queues[1].durable && c.queues[1].nargs == 0);
  PS_CHECK_INT_EQ(c.queues[0].nargs, 3);
  PS_CHECK_STR_EQ(c.queues[0].args[1].key, "x-dead-letter-exchange");
  PS_CHECK_STR_EQ(c.queues[0].args[1].str, "errors.dx");
  PS_CHECK_STR_EQ(c.queues[0].args[2].key, "x-dead-letter-routing-key");
  PS_CHECK_STR_EQ(c.queues[0].args[2].str, "a");
  PS_CHECK_INT_EQ(c.nbindings, 3);
  PS_CHECK_STR_EQ(c.bindings[2].queue, "a.error"); /* after the file's */
  PS_CHECK_STR_EQ(c.bindings[2].exchange, "errors.dx");
  PS_CHECK_STR_EQ(c.bindings[2].key, "a");
  PS_CHECK_STR_EQ(c.exchanges[1].name, "errors.dx");
  ps_topology_config_free(&c);
}

PS_TEST(disabled_consumers_take_only_their_own_queues) {
  clear_env();
  ps_topology_config c;
  char err[512];
  const char *y = "queues:\n"
                  "  - {name: off_q, dead_letter: true}\n"
                  "  - {name: shared_q, dead_letter: true}\n"
                  "  - {name: idle_q}\n" CONN "bindings:\n"
                  "  - {queue: off_q, key: A}\n"
                  "  - {queue: shared_q, key: B}\n"
                  "  - {queue: idle_q, key: C}\n"
                  "consumers:\n"
                  "  - {name: off, queue: off_q, enabled: false, decoder: {type: events},\n"
                  "     sink: {type: clickhouse, connection: ch, table: t}}\n"
                  "  - {name: off2, queue: shared_q, enabled: no, decoder: {type: events},\n"
                  "     sink: {type: clickhouse, connection: ch, table: t}}\n"
                  "  - {name: on, queue: shared_q, decoder: {type: events},\n"
                  "     sink: {type: clickhouse, connection: ch, table: t}}\n";
  PS_CHECK_MSG(parse(y, &c, err, sizeof err) == 0, "%s", err);
  PS_CHECK_INT_EQ(c.nconsumers, 1);
  PS_CHECK_STR_EQ(c.consumers[0].name, "on");
  PS_CHECK_INT_EQ(c.ndisabled, 2);
  PS_CHECK_STR_EQ(c.disabled[0], "off");
  PS_CHECK_STR_EQ(c.disabled[1], "off2");
  PS_CHECK(find_queue(&c, "off_q") == NULL && find_queue(&c, "off_q.error") == NULL);
  PS_CHECK(find_queue(&c, "shared_q") && find_queue(&c, "shared_q.error"));
  PS_CHECK(find_queue(&c, "idle_q") != NULL); /* no consumer at all: declared for others */
  PS_CHECK_INT_EQ(count_bindings(&c, "off_q") + count_bindings(&c, "off_q.error"), 0);
  PS_CHECK_INT_EQ(c.nbindings, 3);
  ps_topology_config_free(&c);
  /* A disabled consumer is still checked. */
  const char *bad = "queues: [{name: q}]\n" CONN "consumers:\n"
                    "  - queue: q\n"
                    "    enabled: false\n"
                    "    decoder: {type: events}\n"
                    "    sink: {type: clickhouse, connection: nope, table: t}\n";
  PS_CHECK_INT_EQ(parse(bad, &c, err, sizeof err), PS_ECONFIG);
  PS_CHECK_STR_EQ(err,
                  "t.yaml:7: consumers[0].sink.connection: clickhouse connection 'nope' is not declared");
}

/* ---- printing --------------------------------------------------------------------------------- */

__attribute__((noinline)) static char *print_to_string(const ps_topology_config *c) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  ps_topology_config_print(c, f);
  fclose(f);
  return buf;
}

static int str_eq(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Everything but secrets equal; why says what differs. */
static int cfg_equal(const ps_topology_config *a, const ps_topology_config *b, char *why, size_t n) {
#define DIFF(cond, ...)                                                                                      \
  do {                                                                                                       \
    if (cond) {                                                                                              \
      snprintf(why, n, __VA_ARGS__);                                                                         \
      return 0;                                                                                              \
    }                                                                                                        \
  } while (0)
  DIFF(!str_eq(a->event_exchange, b->event_exchange) ||
           !str_eq(a->dead_letter_exchange, b->dead_letter_exchange),
       "top-level exchanges");
  DIFF(a->nexchanges != b->nexchanges, "nexchanges");
  for (size_t i = 0; i < a->nexchanges; i++)
    DIFF(!str_eq(a->exchanges[i].name, b->exchanges[i].name) ||
             !str_eq(a->exchanges[i].type, b->exchanges[i].type) ||
             a->exchanges[i].durable != b->exchanges[i].durable,
         "exchange %zu", i);
  DIFF(a->nqueues != b->nqueues, "nqueues");
  for (size_t i = 0; i < a->nqueues; i++) {
    const ps_queue_decl *p = &a->queues[i], *q = &b->queues[i];
    DIFF(!str_eq(p->name, q->name) || p->durable != q->durable || p->nargs != q->nargs, "queue %zu", i);
    for (size_t j = 0; j < p->nargs; j++)
      DIFF(!str_eq(p->args[j].key, q->args[j].key) || !str_eq(p->args[j].str, q->args[j].str) ||
               (!p->args[j].str && p->args[j].num != q->args[j].num),
           "queue %zu arg %zu", i, j);
  }
  DIFF(a->nbindings != b->nbindings, "nbindings");
  for (size_t i = 0; i < a->nbindings; i++)
    DIFF(!str_eq(a->bindings[i].queue, b->bindings[i].queue) ||
             !str_eq(a->bindings[i].exchange, b->bindings[i].exchange) ||
             !str_eq(a->bindings[i].key, b->bindings[i].key),
         "binding %zu", i);
  DIFF(a->nclickhouse != b->nclickhouse, "nclickhouse");
  for (size_t i = 0; i < a->nclickhouse; i++) {
    const ps_clickhouse_conn_conf *p = &a->clickhouse[i], *q = &b->clickhouse[i];
    DIFF(!str_eq(p->name, q->name) || !str_eq(p->database, q->database) || !str_eq(p->user, q->user) ||
             p->timeout_ms != q->timeout_ms || p->health_check_ms != q->health_check_ms,
         "connection %zu", i);
    DIFF(!strchr(p->url, '@') && !str_eq(p->url, q->url), "connection %zu url", i);
  }
  /* Disabled consumers are printed as a comment only: they and their queues are gone. */
  DIFF(a->nconsumers != b->nconsumers, "nconsumers");
  for (size_t i = 0; i < a->nconsumers; i++) {
    const ps_consumer_conf *p = &a->consumers[i], *q = &b->consumers[i];
    DIFF(!str_eq(p->name, q->name) || !str_eq(p->queue, q->queue) || p->count != q->count ||
             p->prefetch != q->prefetch || p->max_redeliveries != q->max_redeliveries ||
             p->max_held_bytes != q->max_held_bytes ||
             !str_eq(p->dead_letter_exchange, q->dead_letter_exchange),
         "consumer %zu", i);
    const ps_decoder_conf *d = &p->decoder, *e = &q->decoder;
    DIFF(d->kind != e->kind || d->ncolumns != e->ncolumns || d->keep_unknown != e->keep_unknown ||
             !str_eq(d->unknown_column, e->unknown_column),
         "consumer %zu decoder", i);
    for (size_t j = 0; j < d->ncolumns; j++)
      DIFF(!str_eq(d->columns[j].name, e->columns[j].name) ||
               !str_eq(d->columns[j].from, e->columns[j].from) || d->columns[j].type != e->columns[j].type ||
               !str_eq(d->columns[j].default_value, e->columns[j].default_value) ||
               d->columns[j].required != e->columns[j].required,
           "consumer %zu column %zu", i, j);
    const ps_sink_conf *s = &p->sink, *t = &q->sink;
    DIFF(s->kind != t->kind || !str_eq(s->connection, t->connection) || !str_eq(s->table, t->table) ||
             !str_eq(s->engine, t->engine) || s->buffered != t->buffered ||
             s->buffer_rows != t->buffer_rows || s->flush_rows != t->flush_rows ||
             s->flush_ms != t->flush_ms || !str_eq(s->method, t->method) || s->body != t->body ||
             s->batch_max != t->batch_max || s->timeout_ms != t->timeout_ms ||
             s->concurrency != t->concurrency || s->max_retries != t->max_retries ||
             s->retry_base_ms != t->retry_base_ms || s->retry_max_ms != t->retry_max_ms ||
             s->nheaders != t->nheaders,
         "consumer %zu sink", i);
    DIFF(s->url && !strchr(s->url, '@') && !str_eq(s->url, t->url), "consumer %zu url", i);
    for (size_t j = 0; j < s->nheaders; j++)
      DIFF(!str_eq(s->headers[j].name, t->headers[j].name), "consumer %zu header %zu", i, j);
  }
  return 1;
#undef DIFF
}

/* Prints c, parses the output, compares. */
static int round_trip(const ps_topology_config *c, ps_topology_config *back, char **text, char *why,
                      size_t n) {
  *text = print_to_string(c);
  if (parse(*text, back, why, n) != 0)
    return 0;
  return cfg_equal(c, back, why, n);
}

PS_TEST(print_round_trips_with_secrets_redacted) {
  clear_env();
  setenv("PURCHASE_FORWARD_ENABLED", "true", 1);
  setenv("PURCHASE_API_KEY", "sk-live-SECRET1", 1);
  setenv("CLICKHOUSE_PASSWORD", "pw-SECRET2", 1);
  setenv("CLICKHOUSE_URL", "https://reader:pw-SECRET3@ch.example:8443", 1);
  ps_topology_config c, back;
  char err[512], why[512];
  int rc = ps_topology_config_load(EXAMPLE, &c, err, sizeof err);
  clear_env();
  PS_CHECK_MSG(rc == 0, "%s", err);
  char *text;
  int ok = round_trip(&c, &back, &text, why, sizeof why);
  int leaked = strstr(text, "SECRET") != NULL;
  int has_url = strstr(text, "\"https://reader:(redacted)@ch.example:8443\"") != NULL;
  if (!ok || leaked)
    fprintf(stderr, "%s\n", text);
  free(text);
  PS_CHECK_MSG(ok, "round trip: %s", why);
  PS_CHECK(!leaked);
  PS_CHECK(has_url);
  PS_CHECK_STR_EQ(back.clickhouse[0].password, "(redacted)");
  PS_CHECK_STR_EQ(back.clickhouse[1].password, ""); /* nothing to hide */
  const ps_consumer_conf *p = find_consumer(&back, "purchase_forward");
  PS_CHECK(p != NULL);
  PS_CHECK_STR_EQ(p->sink.headers[0].name, "Authorization");
  PS_CHECK_STR_EQ(p->sink.headers[0].value, "(redacted)");
  PS_CHECK_STR_EQ(p->sink.headers[1].value, "penstock"); /* X-Source: not a secret */
  ps_topology_config_free(&back);
  /* Printing the re-parsed configuration gives the same text. */
  char *t1 = print_to_string(&c);
  PS_CHECK(parse(t1, &back, err, sizeof err) == 0);
  char *t2 = print_to_string(&back);
  ps_topology_config_free(&back);
  ps_topology_config_free(&c);
  const char *b1 = strchr(t1, '\n'), *b2 = strchr(t2, '\n'); /* the first line names the source */
  int same = b1 && b2 && strcmp(b1, b2) == 0;
  free(t1);
  free(t2);
  PS_CHECK(same);
}

PS_TEST(print_round_trips_the_default_and_odd_strings) {
  clear_env();
  ps_topology_config c, back;
  char err[512], why[512];
  const char *y = ps_topology_config_default();
  PS_CHECK_MSG(ps_topology_config_parse("(built-in)", y, strlen(y), &c, err, sizeof err) == 0, "%s", err);
  char *text;
  int ok = round_trip(&c, &back, &text, why, sizeof why);
  free(text);
  ps_topology_config_free(&back);
  ps_topology_config_free(&c);
  PS_CHECK_MSG(ok, "default: %s", why);
  /* Quotes, backslashes, control characters, ${, non-ASCII and characters YAML must escape. */
  const char *odd =
      "event_exchange: \"a\\\"b\\\\c\\td\\ne$${X}f\\x01\\x7f\\u0085\\u00e9\\u2028\\uFEFF\\U0001F600\"\n"
      "queues: [{name: \"q: #1 'x'\", arguments: {\"x-${not-expanded}\": \"$${v}\"}}]\n" CONN "consumers:\n"
      "  - queue: \"q: #1 'x'\"\n"
      "    decoder:\n"
      "      type: json\n"
      "      columns: [{name: a, from: \"x.y\", default: \"  spaced  \"}, {name: b, default: \"\"}]\n"
      "    sink: {type: clickhouse, connection: ch, table: t, engine: \"ENGINE = Log -- '\\\"\"}\n";
  PS_CHECK_MSG(parse(odd, &c, err, sizeof err) == 0, "%s", err);
  PS_CHECK_STR_EQ(c.event_exchange,
                  "a\"b\\c\td\ne${X}f\x01\x7f\xc2\x85\xc3\xa9\xe2\x80\xa8\xef\xbb\xbf\xf0\x9f\x98\x80");
  PS_CHECK_STR_EQ(c.consumers[0].decoder.columns[1].default_value, "");
  PS_CHECK_STR_EQ(c.queues[0].args[0].key, "x-${not-expanded}"); /* keys are never expanded */
  PS_CHECK_STR_EQ(c.queues[0].args[0].str, "${v}");
  ok = round_trip(&c, &back, &text, why, sizeof why);
  if (!ok)
    fprintf(stderr, "%s\n", text);
  free(text);
  ps_topology_config_free(&back);
  ps_topology_config_free(&c);
  PS_CHECK_MSG(ok, "odd strings: %s", why);
}

PS_TEST(check_config_exit_codes) {
  clear_env();
  /* What it prints (the configuration, or the error) goes away. */
  fflush(stdout);
  fflush(stderr);
  int saved_out = dup(1), saved_err = dup(2);
  FILE *null = fopen("/dev/null", "w");
  dup2(fileno(null), 1);
  dup2(fileno(null), 2);
  char *bad_argv[] = {"check-config", "a", "b", NULL};
  int rc_usage = ps_topology_config_check_main(3, bad_argv);
  char *missing_argv[] = {"check-config", "/nonexistent/penstock.yaml", NULL};
  int rc_missing = ps_topology_config_check_main(2, missing_argv);
  char *ok_argv[] = {"check-config", EXAMPLE, NULL};
  int rc_example = ps_topology_config_check_main(2, ok_argv);
  char *default_argv[] = {"check-config", NULL};
  int rc_default = ps_topology_config_check_main(1, default_argv);
  fflush(stdout);
  fflush(stderr);
  dup2(saved_out, 1);
  dup2(saved_err, 2);
  close(saved_out);
  close(saved_err);
  fclose(null);
  PS_CHECK_INT_EQ(rc_usage, 2);
  PS_CHECK_INT_EQ(rc_missing, 2);
  PS_CHECK_INT_EQ(rc_example, 0);
  PS_CHECK_INT_EQ(rc_default, 0);
}

PS_TEST_MAIN(PS_CASE(default_matches_its_file), PS_CASE(default_reproduces_the_original_consumers),
             PS_CASE(default_webengage_when_enabled), PS_CASE(default_takes_the_environment_settings),
             PS_CASE(example_loads), PS_CASE(example_documents_every_key),
             PS_CASE(json_consumers_make_decoders), PS_CASE(errors_name_file_line_and_reason),
             PS_CASE(missing_file), PS_CASE(minimal_file_gets_defaults), PS_CASE(env_expansion),
             PS_CASE(queue_arguments_keep_their_type), PS_CASE(dead_letter_expansion),
             PS_CASE(disabled_consumers_take_only_their_own_queues),
             PS_CASE(print_round_trips_with_secrets_redacted),
             PS_CASE(print_round_trips_the_default_and_odd_strings), PS_CASE(check_config_exit_codes))
