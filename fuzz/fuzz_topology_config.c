/*
 * fuzz_topology_config: libFuzzer target for the topology file parser
 * (src/config/ps_topology_config.c).
 *
 * The file is operator input rather than a client's, but it goes through
 * libyaml and a hand-written tree and expander, so arbitrary bytes must never
 * crash, hang or leak. Besides memory safety it checks two properties: a
 * failed parse leaves an error message and nothing to free, and a configuration
 * that parses prints as YAML that parses again into a configuration that prints
 * the same (the `check-config` output is itself a valid file, and printing is a
 * fixed point: nothing is lost or altered but the redacted secrets).
 *
 * Build and run from the repository root, after `make` has generated build/gen:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE \
 *     -Isrc -Ibuild/gen fuzz/fuzz_topology_config.c src/config/ps_topology_config.c \
 *     src/core/ps_buf.c src/core/ps_time.c src/core/ps_error.c \
 *     $(pkg-config --cflags --libs yaml-0.1) -lm -o build/fuzz_topology_config
 *   mkdir -p build/fuzz-corpus-topology && build/fuzz_topology_config -max_len=16384 \
 *     build/fuzz-corpus-topology config
 *
 * (config/ holds the built-in and the example configurations: a seed corpus.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/ps_topology_config.h"

static char *print(const ps_topology_config *cfg, size_t *len) {
  char *text = NULL;
  FILE *f = open_memstream(&text, len);
  if (!f)
    abort();
  ps_topology_config_print(cfg, f);
  fclose(f);
  return text;
}

/* text without its comment lines (the source's name, disabled consumers). */
static void strip_comments(char *text) {
  char *w = text;
  for (char *r = text; *r;) {
    char *nl = strchr(r, '\n');
    size_t n = nl ? (size_t)(nl - r + 1) : strlen(r);
    if (*r != '#') {
      memmove(w, r, n);
      w += n;
    }
    r += n;
  }
  *w = '\0';
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  /* Variables the seeds use, so that their ${...} expand to something. */
  setenv("PS_FUZZ", "fuzz", 1);
  setenv("CLICKHOUSE_PASSWORD", "secret", 1);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ps_topology_config cfg;
  char err[512];
  err[0] = '\0';
  if (ps_topology_config_parse("fuzz.yaml", (const char *)data, size, &cfg, err, sizeof err) != 0) {
    if (err[0] == '\0' || cfg.nqueues || cfg.queues || cfg.nconsumers || cfg.consumers || cfg.source)
      abort(); /* a failure explains itself and leaves nothing behind */
    ps_topology_config_free(&cfg);
    return 0;
  }
  size_t len, len2;
  char *text = print(&cfg, &len);
  ps_topology_config back;
  if (ps_topology_config_parse("printed.yaml", text, len, &back, err, sizeof err) != 0) {
    fprintf(stderr, "printed configuration does not parse: %s\n%s\n", err, text);
    abort();
  }
  char *again = print(&back, &len2);
  strip_comments(text);
  strip_comments(again);
  if (strcmp(text, again) != 0) {
    fprintf(stderr, "printing is not a fixed point:\n%s\n----\n%s\n", text, again);
    abort();
  }
  free(again);
  ps_topology_config_free(&back);
  free(text);
  ps_topology_config_free(&cfg);
  return 0;
}
