/* ps_config: the settings table, dotenv files and validation (see ps_config.h). */
#include "core/ps_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/ps_error.h"

#define OFF(f) offsetof(ps_config, f)
#define KIB 1024LL
#define MIB (1024LL * 1024LL)

static const ps_setting ps__settings[] = {
    {"ENV", PS_SETTING_STRING, OFF(env), "DEVELOPMENT", 0, 0, 0,
     "Deployment environment; picks the dotenv file: PRODUCTION reads .env.production, STAGE reads .env.stage, anything else .env."},
    {"PORT", PS_SETTING_INT, OFF(port), "50051", 1, 65535, 0,
     "gRPC listen port (EventService and grpc.health.v1.Health), on all interfaces."},
    {"GRPC_MAX_RECV_BYTES", PS_SETTING_BYTES, OFF(grpc_max_recv_bytes), "10485760", 1024, 1024 * MIB, 0,
     "Largest request accepted; larger ones get RESOURCE_EXHAUSTED. Accepts K, M, G suffixes."},
    {"GRPC_THREADS", PS_SETTING_INT, OFF(grpc_threads), "2", 1, 64, 0,
     "Threads serving gRPC completion queues."},
    {"EVENT_BUFFERED_CHANNEL_SIZE", PS_SETTING_INT, OFF(queue_capacity), "10000", 1, 10000000, 0,
     "Capacity, in batches, of the in-memory queue between dispatch and the workers."},
    {"DISPATCH_TIMEOUT_MS", PS_SETTING_INT, OFF(dispatch_timeout_ms), "1000", 0, 600000, 0,
     "How long dispatch waits for room in a full queue before answering UNAVAILABLE (never past the call's deadline)."},
    {"EVENT_WORKER_POOL_SIZE", PS_SETTING_INT, OFF(worker_pool_size), NULL, 1, 1024, 0,
     "Publishing workers, each with its own AMQP connection. Default: the number of cores."},
    {"EVENT_EXCHANGE", PS_SETTING_STRING, OFF(event_exchange), "grpc_event.tx", 0, 0, 0,
     "Durable topic exchange that events are published to, routing key = event type name (the built-in topology's event_exchange)."},
    {"ACK_MODE", PS_SETTING_STRING, OFF(ack_mode), "confirmed", 0, 0, 0,
     "When dispatch answers SUCCESS: confirmed (once RabbitMQ confirmed every event of the batch, or they are on disk in the spool) or enqueued (once the batch is in the in-memory queue: faster, but a crash loses what the queue held)."},
    {"PUBLISH_CONFIRM_WINDOW", PS_SETTING_INT, OFF(publish_window), "256", 1, 65535, 0,
     "Messages each worker may have published and not yet confirmed by RabbitMQ."},
    {"PUBLISH_CONFIRM_WINDOW_BYTES", PS_SETTING_BYTES, OFF(publish_window_bytes), "8M", 0, 1LL << 40, 0,
     "Bytes of message bodies each worker may have published and not yet confirmed (one message always fits, however large): with PUBLISH_CONFIRM_WINDOW, what bounds a worker's memory whatever the size of its messages. 0: no bound but PUBLISH_CONFIRM_WINDOW."},
    {"PUBLISH_MERGE_BATCHES", PS_SETTING_INT, OFF(publish_merge_batches), "16", 1, 64, 0,
     "Batches a worker takes from the queue at once, at most, and publishes together: the events of one type from batches with the same header go in one message (up to 1000 events). 1: one message per type per batch, as the original service."},
    {"PUBLISH_FORMAT", PS_SETTING_STRING, OFF(publish_format), "events", 0, 0, 0,
     "events: each message is one proto3-JSON Events (application/json), the format of the original service, which any consumer reads. packed: a message holds the Events of one type of several headers (batches merged as PUBLISH_MERGE_BATCHES says), one per line (application/x-ndjson): fewer messages when headers differ, read by penstock's events decoder only. protobuf: as packed, but each Events is binary protobuf preceded by its length as a varint (application/x-protobuf-delimited): about half the bytes, and cheaper to write and to read than JSON; penstock's events decoder only."},
    {"PUBLISH_LINGER_MS", PS_SETTING_INT, OFF(publish_linger_ms), NULL, 0, 100, 0,
     "How long a worker that took fewer than PUBLISH_MERGE_BATCHES batches waits for more before publishing them: under a moderate load its messages are then fewer and larger (each batch waits this much longer at most). 0: publish at once. Default: 2 with PUBLISH_FORMAT=packed or protobuf (their lots merge whatever the headers), 0 with events."},
    {"PUBLISH_CONFIRM_TIMEOUT_MS", PS_SETTING_INT, OFF(publish_confirm_timeout_ms), "10000", 100, 3600000, 0,
     "A publish not confirmed within this time counts as failed: the connection is dropped and the message republished or spooled."},
    {"SPOOL_DIR", PS_SETTING_STRING, OFF(spool_dir), "", 0, 0, 0,
     "Directory of the local spool, where messages wait while RabbitMQ is unreachable (one penstock per directory). Default: DATA_DIR/spool."},
    {"SPOOL_MAX_BYTES", PS_SETTING_BYTES, OFF(spool_max_bytes), "1073741824", 0, 1LL << 50, 0,
     "Bound on the spool's size on disk; when it is full, dispatch answers UNAVAILABLE. 0: no spool (workers hold batches and retry)."},
    {"SPOOL_FSYNC", PS_SETTING_STRING, OFF(spool_fsync), "always", 0, 0, 0,
     "always: spooled messages are on disk (fdatasync) before the client is answered; never: written, not synced (survives a crash of penstock, not of the machine)."},
    {"PENSTOCK_MODE", PS_SETTING_STRING, OFF(mode), "auto", 0, 0, 0,
     "embedded (an in-process broker and an SQLite store under DATA_DIR: no RabbitMQ, no ClickHouse), external (RabbitMQ and ClickHouse), or auto: embedded when neither RABBITMQ_URL nor CLICKHOUSE_URL is set."},
    {"DATA_DIR", PS_SETTING_STRING, OFF(data_dir), "data", 0, 0, 0,
     "penstock's directory (created if missing): the spool (unless SPOOL_DIR is set) and, in embedded mode, penstock.db (the tables, SQLite) and broker.db (messages not yet acknowledged)."},
    {"RABBITMQ_URL", PS_SETTING_STRING, OFF(rabbitmq_url), "amqp://guest:guest@127.0.0.1:5672/", 0, 0, PS_SETTING_SECRET,
     "RabbitMQ broker (amqp://user:password@host:port/vhost)."},
    {"CONSUMERS_PER_QUEUE", PS_SETTING_INT, OFF(consumers_per_queue), "2", 0, 256, 0,
     "Consumers of grpc_clickhouse_event_q in the built-in topology, each with its own AMQP connection and ClickHouse session. 0 runs no consumer of any queue (an ingest-only instance; the topology is still declared)."},
    {"QUEUE_TYPE", PS_SETTING_STRING, OFF(queue_type), "classic", 0, 0, 0,
     "Type of the built-in topology's queues bound to EVENT_EXCHANGE (grpc_clickhouse_event_q, clickhouse_click_event_q, app_init_event_q, webengage_event_q) when penstock declares them: classic, or quorum (RabbitMQ's replicated queue; it confirms and syncs continuously, where a busy classic queue syncs every 200 ms). RabbitMQ refuses to redeclare a queue as another type: to change it, drain and delete those queues first. Their .error queues stay classic."},
    {"CONSUMER_PREFETCH", PS_SETTING_INT, OFF(consumer_prefetch), "2000", 1, 65535, 0,
     "Unacknowledged messages each consumer of grpc_clickhouse_event_q (built-in topology) may hold; bounds what one insert can batch."},
    {"CLICKHOUSE_URL", PS_SETTING_STRING, OFF(clickhouse_url), "http://127.0.0.1:8123", 0, 0, 0,
     "ClickHouse HTTP interface (the built-in topology's `default` connection)."},
    {"CLICKHOUSE_DB_NAME", PS_SETTING_STRING, OFF(clickhouse_db), "default", 0, 0, 0,
     "Database of the built-in topology's tables (created if missing; the database must exist)."},
    {"CLICKHOUSE_USER", PS_SETTING_STRING, OFF(clickhouse_user), "", 0, 0, 0,
     "ClickHouse user (empty: the server's default user)."},
    {"CLICKHOUSE_PASSWORD", PS_SETTING_STRING, OFF(clickhouse_password), "", 0, 0, PS_SETTING_SECRET,
     "ClickHouse password."},
    {"CLICKHOUSE_BATCH_ROWS", PS_SETTING_INT, OFF(clickhouse_batch_rows), "50000", 1, 10000000, 0,
     "A consumer of grpc_clickhouse_event_q (built-in topology) inserts once it holds this many rows..."},
    {"CLICKHOUSE_FLUSH_MS", PS_SETTING_INT, OFF(clickhouse_flush_ms), "1000", 1, 3600000, 0,
     "...or once its oldest pending row is this old, whichever comes first."},
    {"CLICKHOUSE_TIMEOUT_MS", PS_SETTING_INT, OFF(clickhouse_timeout_ms), "30000", 100, 3600000, 0,
     "Timeout of one ClickHouse request."},
    {"PENSTOCK_CONFIG", PS_SETTING_STRING, OFF(topology_path), "", 0, 0, 0,
     "Topology file (YAML): exchanges, queues, bindings, ClickHouse connections and consumers; see config/penstock.example.yaml. Empty: the built-in one (config/penstock.default.yaml)."},
    {"SHUTDOWN_TIMEOUT_MS", PS_SETTING_INT, OFF(shutdown_timeout_ms), "30000", 0, 3600000, 0,
     "On SIGTERM/SIGINT: time allowed to finish in-flight calls, publish the queue and flush the consumers."},
    {"LOG_LEVEL", PS_SETTING_STRING, OFF(log_level), "info", 0, 0, 0,
     "debug, info, warn or error."},
    {"LOG_FORMAT", PS_SETTING_STRING, OFF(log_format), "text", 0, 0, 0,
     "text (key=value) or json (one object per line)."},
    {"ACCESS_LOG_PER_SEC", PS_SETTING_INT, OFF(access_log_per_sec), "10", 0, 1000000, 0,
     "Per-RPC access-log lines written per second at most; the rest are counted and reported as `suppressed`. 0: none."},
    {"GIN_PORT", PS_SETTING_INT, OFF(monitor_port), "8080", 0, 65535, 0,
     "Monitoring HTTP port (/health, /ready, /metrics, /debug/...), on all interfaces; 0 turns it off."},
    {"DEBUG", PS_SETTING_INT, OFF(debug), "0", 0, 1, 0,
     "1 serves /debug/threads even when ENV=PRODUCTION (it is always served otherwise)."},
};

const ps_setting *ps_config_table(size_t *n) {
  *n = sizeof ps__settings / sizeof ps__settings[0];
  return ps__settings;
}

static int ps__fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return PS_ECONFIG;
}

const char *ps_dotenv_name(const char *env) {
  if (env && strcasecmp(env, "PRODUCTION") == 0)
    return ".env.production";
  if (env && strcasecmp(env, "STAGE") == 0)
    return ".env.stage";
  return ".env";
}

/* Parses one dotenv value in place: quotes, escapes, trailing comments. */
static int ps__dotenv_value(char *v, char **out) {
  while (*v == ' ' || *v == '\t')
    v++;
  if (*v == '\'' || *v == '"') {
    char q = *v++;
    char *w = v, *r = v;
    for (; *r && *r != q; r++) {
      if (q == '"' && *r == '\\' && r[1]) {
        r++;
        *w++ = *r == 'n' ? '\n' : *r == 't' ? '\t' : *r;
      } else {
        *w++ = *r;
      }
    }
    if (*r != q)
      return -1;
    for (char *t = r + 1; *t; t++) {
      if (*t == '#')
        break;
      if (!isspace((unsigned char)*t))
        return -1;
    }
    *w = '\0';
    *out = v;
    return 0;
  }
  char *hash = strstr(v, " #");
  if (hash)
    *hash = '\0';
  size_t n = strlen(v);
  while (n && isspace((unsigned char)v[n - 1]))
    v[--n] = '\0';
  *out = v;
  return 0;
}

int ps_dotenv_load(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) {
    if (errno == ENOENT)
      return PS_ENOTFOUND;
    return ps__fail(err, errlen, "%s: %s", path, strerror(errno));
  }
  char *line = NULL;
  size_t cap = 0;
  int lineno = 0, rc = 0;
  while (getline(&line, &cap, f) >= 0) {
    lineno++;
    char *p = line;
    size_t n = strlen(p);
    while (n && (p[n - 1] == '\n' || p[n - 1] == '\r'))
      p[--n] = '\0';
    while (isspace((unsigned char)*p))
      p++;
    if (*p == '\0' || *p == '#')
      continue;
    if (strncmp(p, "export ", 7) == 0)
      p += 7;
    char *eq = strchr(p, '=');
    if (!eq) {
      rc = ps__fail(err, errlen, "%s:%d: expected KEY=VALUE", path, lineno);
      break;
    }
    char *k = p, *ke = eq;
    while (ke > k && isspace((unsigned char)ke[-1]))
      ke--;
    *ke = '\0';
    int valid = *k != '\0';
    for (char *c = k; *c; c++)
      if (!(isalnum((unsigned char)*c) || *c == '_'))
        valid = 0;
    if (!valid) {
      rc = ps__fail(err, errlen, "%s:%d: invalid variable name '%s'", path, lineno, k);
      break;
    }
    char *v;
    if (ps__dotenv_value(eq + 1, &v) != 0) {
      rc = ps__fail(err, errlen, "%s:%d: unterminated quoted value of %s", path, lineno, k);
      break;
    }
    setenv(k, v, 0);
  }
  free(line);
  fclose(f);
  return rc;
}

static int ps__parse_int(const char *s, int bytes, long long *out) {
  char *end;
  errno = 0;
  while (isspace((unsigned char)*s))
    s++;
  if (*s == '\0')
    return -1;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s)
    return -1;
  if (bytes && *end) {
    long long mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = KIB; break;
    case 'M': mul = MIB; break;
    case 'G': mul = 1024 * MIB; break;
    default: return -1;
    }
    end++;
    if (toupper((unsigned char)*end) == 'I')
      end++;
    if (toupper((unsigned char)*end) == 'B')
      end++;
    if (v > (1LL << 62) / mul)
      return -1;
    v *= mul;
  }
  while (isspace((unsigned char)*end))
    end++;
  if (*end)
    return -1;
  *out = v;
  return 0;
}

/* What an int setting without a fixed default holds until ps_config_load computes it (below any minimum). */
#define PS__UNSET (-1)

static long long ps__ncores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? n : 1;
}

int ps_config_load(ps_config *cfg, const char *dir, char *err, size_t errlen) {
  memset(cfg, 0, sizeof *cfg);
  const char *env = getenv("ENV");
  char path[4096];
  snprintf(path, sizeof path, "%s%s%s", dir ? dir : "", dir ? "/" : "", ps_dotenv_name(env));
  int rc = ps_dotenv_load(path, err, errlen);
  if (rc != 0 && rc != PS_ENOTFOUND)
    return rc;

  size_t n;
  const ps_setting *t = ps_config_table(&n);
  for (size_t i = 0; i < n; i++) {
    const ps_setting *s = &t[i];
    const char *v = getenv(s->name);
    char *field = (char *)cfg + s->offset;
    if (s->type == PS_SETTING_STRING) {
      *(char **)field = strdup(v ? v : s->def);
      continue;
    }
    long long x;
    if (!v || !*v) {
      if (!s->def) {
        *(int *)field = PS__UNSET; /* computed below, from the machine or from other settings */
        continue;
      }
      ps__parse_int(s->def, 1, &x);
    } else if (ps__parse_int(v, s->type == PS_SETTING_BYTES, &x) != 0) {
      return ps__fail(err, errlen, "%s=%s: not %s", s->name, v,
                      s->type == PS_SETTING_BYTES ? "a size (e.g. 10485760, 512K, 10M)" : "an integer");
    }
    if (x < s->min || x > s->max)
      return ps__fail(err, errlen, "%s=%s: out of range [%lld, %lld]", s->name, v ? v : "", s->min, s->max);
    if (s->type == PS_SETTING_BYTES)
      *(long long *)field = x;
    else
      *(int *)field = (int)x;
  }
  if (strncmp(cfg->rabbitmq_url, "amqp://", 7) != 0 && strncmp(cfg->rabbitmq_url, "amqps://", 8) != 0)
    return ps__fail(err, errlen, "RABBITMQ_URL: must start with amqp:// or amqps://");
  if (strncmp(cfg->clickhouse_url, "http://", 7) != 0 && strncmp(cfg->clickhouse_url, "https://", 8) != 0)
    return ps__fail(err, errlen, "CLICKHOUSE_URL=%s: must start with http:// or https://", cfg->clickhouse_url);
  if (!*cfg->event_exchange)
    return ps__fail(err, errlen, "EVENT_EXCHANGE: must not be empty");
  for (const char *c = cfg->clickhouse_db; *c; c++)
    if (!(isalnum((unsigned char)*c) || *c == '_'))
      return ps__fail(err, errlen, "CLICKHOUSE_DB_NAME=%s: only letters, digits and _", cfg->clickhouse_db);
  if (!*cfg->clickhouse_db)
    return ps__fail(err, errlen, "CLICKHOUSE_DB_NAME: must not be empty");
  const char *lv = cfg->log_level;
  if (strcasecmp(lv, "debug") && strcasecmp(lv, "info") && strcasecmp(lv, "warn") &&
      strcasecmp(lv, "warning") && strcasecmp(lv, "error"))
    return ps__fail(err, errlen, "LOG_LEVEL=%s: expected debug, info, warn or error", lv);
  if (strcasecmp(cfg->log_format, "text") && strcasecmp(cfg->log_format, "json"))
    return ps__fail(err, errlen, "LOG_FORMAT=%s: expected text or json", cfg->log_format);
  if (strcasecmp(cfg->mode, "auto") == 0) {
    const char *r = getenv("RABBITMQ_URL"), *c = getenv("CLICKHOUSE_URL");
    cfg->embedded = !(r && *r) && !(c && *c);
  } else if (strcasecmp(cfg->mode, "embedded") == 0) {
    cfg->embedded = 1;
  } else if (strcasecmp(cfg->mode, "external") != 0) {
    return ps__fail(err, errlen, "PENSTOCK_MODE=%s: expected auto, embedded or external", cfg->mode);
  }
  if (cfg->embedded && !*cfg->data_dir)
    return ps__fail(err, errlen, "DATA_DIR: must not be empty in embedded mode");
  if (strcasecmp(cfg->publish_format, "packed") == 0)
    cfg->publish_as = PS_PUBLISH_PACKED;
  else if (strcasecmp(cfg->publish_format, "protobuf") == 0)
    cfg->publish_as = PS_PUBLISH_PROTOBUF;
  else if (strcasecmp(cfg->publish_format, "events") == 0)
    cfg->publish_as = PS_PUBLISH_EVENTS;
  else
    return ps__fail(err, errlen, "PUBLISH_FORMAT=%s: expected events, packed or protobuf", cfg->publish_format);
  if (strcmp(cfg->queue_type, "classic") && strcmp(cfg->queue_type, "quorum"))
    return ps__fail(err, errlen, "QUEUE_TYPE=%s: expected classic or quorum", cfg->queue_type);
  if (cfg->worker_pool_size == PS__UNSET) {
    long long cores = ps__ncores();
    cfg->worker_pool_size = (int)(cores < 1024 ? cores : 1024);
  }
  if (cfg->publish_linger_ms == PS__UNSET)
    cfg->publish_linger_ms = cfg->publish_as != PS_PUBLISH_EVENTS ? 2 : 0;
  if (strcasecmp(cfg->ack_mode, "confirmed") == 0)
    cfg->ack_confirmed = 1;
  else if (strcasecmp(cfg->ack_mode, "enqueued") != 0)
    return ps__fail(err, errlen, "ACK_MODE=%s: expected confirmed or enqueued", cfg->ack_mode);
  if (strcasecmp(cfg->spool_fsync, "always") && strcasecmp(cfg->spool_fsync, "never"))
    return ps__fail(err, errlen, "SPOOL_FSYNC=%s: expected always or never", cfg->spool_fsync);
  if (cfg->spool_max_bytes && !*cfg->spool_dir && !*cfg->data_dir)
    return ps__fail(err, errlen, "SPOOL_DIR: DATA_DIR is empty; set SPOOL_DIR, or SPOOL_MAX_BYTES=0 for no spool");
  return 0;
}

void ps_config_free(ps_config *cfg) {
  size_t n;
  const ps_setting *t = ps_config_table(&n);
  for (size_t i = 0; i < n; i++)
    if (t[i].type == PS_SETTING_STRING) {
      char **p = (char **)((char *)cfg + t[i].offset);
      free(*p);
      *p = NULL;
    }
}

void ps_config_print_reference(FILE *out) {
  size_t n;
  const ps_setting *t = ps_config_table(&n);
  fprintf(out, "| Variable | Default | Meaning |\n|---|---|---|\n");
  for (size_t i = 0; i < n; i++) {
    const char *def = t[i].def;
    if (!def) /* computed at load: its help says how */
      fprintf(out, "| `%s` | (computed) | %s |\n", t[i].name, t[i].help);
    else
      fprintf(out, "| `%s` | %s%s%s | %s |\n", t[i].name, *def ? "`" : "", *def ? def : "(empty)", *def ? "`" : "",
              t[i].help);
  }
}

void ps_config_value(const ps_config *cfg, const ps_setting *st, char *out, size_t outlen) {
  const char *field = (const char *)cfg + st->offset;
  if (st->flags & PS_SETTING_SECRET) {
    const char *v = *(char *const *)field;
    const char *scheme = v ? strstr(v, "://") : NULL;
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    const char *colon = at ? memchr(scheme + 3, ':', (size_t)(at - scheme - 3)) : NULL;
    if (colon) /* a URL: keep all but the password */
      snprintf(out, outlen, "%.*s:<redacted>%s", (int)(colon - v), v, at);
    else
      snprintf(out, outlen, "%s", v && *v ? "<redacted>" : "");
  } else if (st->type == PS_SETTING_STRING) {
    snprintf(out, outlen, "%s", *(char *const *)field);
  } else if (st->type == PS_SETTING_BYTES) {
    snprintf(out, outlen, "%lld", *(const long long *)field);
  } else {
    snprintf(out, outlen, "%d", *(const int *)field);
  }
}

void ps_config_print(const ps_config *cfg, FILE *out) {
  size_t n;
  const ps_setting *t = ps_config_table(&n);
  for (size_t i = 0; i < n; i++) {
    char v[1024];
    ps_config_value(cfg, &t[i], v, sizeof v);
    fprintf(out, "%s=%s\n", t[i].name, v);
  }
}
