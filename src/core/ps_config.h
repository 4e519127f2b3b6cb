/*
 * ps_config: penstock's settings.
 *
 * Every setting lives in one table (ps_config.c): its environment variable,
 * type, default, bounds and meaning. Values come from the process environment,
 * after the dotenv file for ENV has been read into it without overriding what
 * is already set (ENV=PRODUCTION: .env.production, ENV=STAGE: .env.stage,
 * otherwise .env; a missing file is fine). A value that does not parse or is out
 * of bounds stops start-up with a message naming the variable. The same table
 * prints the configuration reference, so documentation cannot drift from code.
 */
#ifndef PS_CONFIG_H
#define PS_CONFIG_H

#include <stddef.h>
#include <stdio.h>

/* What the workers publish (PUBLISH_FORMAT): one JSON Events per message (the original's format), or, per type
   and lot, one Events per header as JSON lines (packed) or as length-delimited binary (protobuf). */
typedef enum { PS_PUBLISH_EVENTS, PS_PUBLISH_PACKED, PS_PUBLISH_PROTOBUF } ps_publish_format;

typedef struct ps_config {
  char *env;
  int port;
  long long grpc_max_recv_bytes;
  int grpc_threads;
  int queue_capacity;      /* EVENT_BUFFERED_CHANNEL_SIZE, in batches */
  int dispatch_timeout_ms;
  int worker_pool_size;
  char *event_exchange;
  char *ack_mode;          /* ACK_MODE: confirmed, enqueued */
  int ack_confirmed;       /* resolved from ack_mode (not a setting) */
  char *publish_format;    /* PUBLISH_FORMAT: events, packed, protobuf */
  ps_publish_format publish_as; /* resolved from publish_format (not a setting) */
  int publish_merge_batches; /* PUBLISH_MERGE_BATCHES: batches published together, at most */
  int publish_linger_ms;   /* PUBLISH_LINGER_MS: wait for a lot to fill (default from the format) */
  int publish_window;      /* PUBLISH_CONFIRM_WINDOW: unconfirmed messages per worker */
  long long publish_window_bytes; /* PUBLISH_CONFIRM_WINDOW_BYTES: their bodies' bytes (0: no bound) */
  int publish_confirm_timeout_ms;
  char *spool_dir;         /* "": DATA_DIR/spool */
  long long spool_max_bytes; /* 0: no spool */
  char *spool_fsync;       /* always, never */
  char *mode;              /* PENSTOCK_MODE: auto, embedded, external */
  char *data_dir;
  int embedded;            /* resolved from mode (not a setting) */
  char *rabbitmq_url;
  int consumers_per_queue;
  char *topology_path; /* PENSTOCK_CONFIG; "": the built-in topology */
  char *queue_type;    /* QUEUE_TYPE: classic, quorum (the built-in topology's event queues) */
  int consumer_prefetch;
  char *clickhouse_url;
  char *clickhouse_db;
  char *clickhouse_user;
  char *clickhouse_password;
  int clickhouse_batch_rows;
  int clickhouse_flush_ms;
  int clickhouse_timeout_ms;
  int shutdown_timeout_ms;
  char *log_level;
  char *log_format;
  int monitor_port;        /* GIN_PORT */
  int debug;
  int access_log_per_sec;
} ps_config;

typedef enum { PS_SETTING_INT, PS_SETTING_BYTES, PS_SETTING_STRING } ps_setting_type;

typedef struct ps_setting {
  const char *name;        /* environment variable */
  ps_setting_type type;
  size_t offset;           /* into ps_config */
  const char *def;         /* default as text; "" for strings means empty;
                              NULL for ints: computed by ps_config_load (see help) */
  long long min, max;      /* for INT and BYTES */
  unsigned flags;          /* PS_SETTING_SECRET: never printed */
  const char *help;
} ps_setting;

#define PS_SETTING_SECRET 1u

/** The settings table, and its length in *n. */
const ps_setting *ps_config_table(size_t *n);

/**
 * Loads the dotenv file for ENV from dir (NULL: the working directory) into the
 * environment, then fills cfg from the environment. On error returns
 * PS_ECONFIG and writes a message naming the variable (or the dotenv line) to
 * err. cfg must be released with ps_config_free either way.
 */
int ps_config_load(ps_config *cfg, const char *dir, char *err, size_t errlen);

/** Frees the strings of cfg; accepts a zeroed or partly filled cfg. */
void ps_config_free(ps_config *cfg);

/**
 * Reads a dotenv file into the environment without overriding variables that
 * are already set. Lines: KEY=VALUE, optional `export `, '#' comments, values
 * optionally in single quotes (literal) or double quotes (\n, \", \\ escapes).
 * Returns 0, PS_ENOTFOUND if the file does not exist, or PS_ECONFIG with
 * "file:line: reason" in err.
 */
int ps_dotenv_load(const char *path, char *err, size_t errlen);

/** Name of the dotenv file for an ENV value (".env.production", ".env.stage", ".env"). */
const char *ps_dotenv_name(const char *env);

/** Writes the configuration reference as a Markdown table. */
void ps_config_print_reference(FILE *out);

/** Writes setting st's value in cfg as text to out, secrets redacted (a URL keeps all but its password). */
void ps_config_value(const ps_config *cfg, const ps_setting *st, char *out, size_t outlen);

/** Writes the effective configuration (secrets redacted), one NAME=value per line. */
void ps_config_print(const ps_config *cfg, FILE *out);

#endif
