/*
 * libFuzzer target: the `json` decoder (src/consume/ps_decoder_json.c) on
 * arbitrary message bodies, with columns of every type, a nested path, a
 * default and the catch-all column. Rows go to a sink that only touches each
 * string value, so ASan sees every byte the decoder hands out.
 *
 * Build and run from the repository root, after `make` has generated build/gen:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Isrc -Ibuild/gen \
 *     fuzz/fuzz_decoder_json.c src/consume/ps_decoder_json.c src/core/ps_time.c src/core/ps_buf.c \
 *     src/core/ps_log.c src/core/ps_error.c src/codec/ps_pbjson.c src/codec/ps_pbjson_utf8.c \
 *     $(pkg-config --cflags --libs jansson libprotobuf-c) -lm -o build/fuzz_decoder_json
 *   build/fuzz_decoder_json -max_total_time=60
 */
#include <stdlib.h>
#include <string.h>

#include "config/ps_topology_config.h"
#include "consume/ps_decoder.h"

static void fuzz_write(ps_sink *s, const ps_value *row) {
  for (size_t i = 0; i < s->table->ncols; i++)
    if (s->table->cols[i].type == PS_COL_STRING && row[i].len) {
      volatile char c = row[i].s[row[i].len - 1];
      (void)c;
    }
}

static const ps_sink_ops fuzz_ops = {.name = "fuzz", .write = fuzz_write};

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t n) {
  static ps_decoder *dec;
  static ps_table table;
  static ps_sink sink;
  if (!dec) {
    static ps_json_column_conf cols[] = {
        {"a", NULL, PS_COL_STRING, NULL, 0},     {"b", "x.y", PS_COL_INT64, "3", 0},
        {"c", "c", PS_COL_UINT64, NULL, 0},      {"d", "d.e.f", PS_COL_FLOAT64, NULL, 0},
        {"t", NULL, PS_COL_DATETIME, NULL, 0},
    };
    ps_decoder_conf conf = {PS_DECODER_JSON, cols, sizeof cols / sizeof cols[0], 1, NULL};
    dec = ps_decoder_json_create(&conf, &table);
    sink.ops = &fuzz_ops;
    sink.table = &table;
  }
  /* A copy of exactly n bytes, so a read past the body is caught. */
  char *copy = malloc(n ? n : 1);
  memcpy(copy, data, n);
  ps_delivery d;
  memset(&d, 0, sizeof d);
  d.body = copy;
  d.len = n;
  char err[256];
  ps_decoder_decode(dec, &d, &sink, err, sizeof err);
  free(copy);
  return 0;
}
