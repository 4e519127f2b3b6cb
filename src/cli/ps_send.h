/*
 * ps_send: `penstock send`, a command-line client of the event.EventService
 * contract (penstock, or the original Go service): proto3 JSON Events from a
 * file or stdin, or generated demo events, sent with ps_client; a live
 * progress line on a terminal; a summary (text or JSON) at the end.
 *
 * The pieces that are pure logic (argument parsing, JSON input, demo
 * batches) are public for the unit tests; ps_send_main runs the command.
 */
#ifndef PS_SEND_H
#define PS_SEND_H

#include <stddef.h>
#include <stdint.h>

/** What the command line asked for. */
typedef struct ps_send_options {
  const char *addr;      /* HOST:PORT (default 127.0.0.1:50051) */
  const char *file;      /* --file F ("-": stdin); NULL with --demo */
  long long demo;        /* --demo N; -1 when not given */
  int batch;             /* --batch B: events per call with --demo (default 50) */
  int concurrency;       /* --concurrency C: calls in flight (default 8) */
  int channels;          /* --channels N: connections (default 1) */
  int timeout_ms;        /* --timeout-ms T: deadline of each call (default 10000; 0: none) */
  const char *ids_path;  /* --ids FILE, or NULL */
  const char *id_prefix; /* --id-prefix P for demo ids, or NULL (a random one) */
  uint64_t seed;         /* --seed S */
  int seed_set;
  int json;  /* --json */
  int quiet; /* --quiet */
} ps_send_options;

/**
 * Parses the arguments of `penstock send` (argv[0] is "send"). Options take
 * "--opt VALUE" or "--opt=VALUE". Returns 0, 1 when --help was asked for (the
 * caller prints ps_send_usage()), or PS_EINVAL with a reason in err.
 */
int ps_send_parse_args(int argc, char **argv, ps_send_options *o, char *err, size_t errlen);

/** The usage text of `penstock send --help`. Static storage. */
const char *ps_send_usage(void);

/** One call to make: a serialized Events and what to report about it. */
typedef struct ps_send_batch {
  uint8_t *data; /* owned */
  size_t len;
  uint32_t events;
  char *ids; /* owned; the events' ids, each followed by '\n'; NULL unless ids were kept */
  size_t ids_len;
} ps_send_batch;

typedef struct ps_send_batches {
  ps_send_batch *v;
  size_t n, cap;
  uint64_t events; /* over all batches */
} ps_send_batches;

#define PS_SEND_BATCHES_INIT                                                                                 \
  { NULL, 0, 0, 0 }

/** Frees every batch; the list is empty and reusable afterwards. */
void ps_send_batches_free(ps_send_batches *b);

/**
 * Parses proto3 JSON input: a sequence of JSON values separated by white
 * space, each an Events object or an array of Events objects (so one object,
 * one array, or one object per line all work). Appends one batch per Events
 * (ids kept if keep_ids). name is the input's name for messages.
 * Returns 0, or PS_EINVAL with "name:line:column: reason" in err (line and
 * column of the syntax error, or of the start of the Events object that does
 * not decode, 1-based, columns in characters); batches appended before the
 * error stay in out.
 */
int ps_send_parse_json(const char *name, const char *text, size_t len, int keep_ids, ps_send_batches *out,
                       char *err, size_t errlen);

/**
 * Appends ceil(n / batch) batches of demo events (ps_demo) made with seed
 * and ids "<id_prefix>-1" .. "<id_prefix>-<n>".
 */
void ps_send_demo(uint64_t seed, const char *id_prefix, long long n, int batch, int keep_ids,
                  ps_send_batches *out);

/** Runs `penstock send`; argv[0] is "send". Returns the exit code: 0, 1 (not all accepted) or 2 (usage). */
int ps_send_main(int argc, char **argv);

#endif
