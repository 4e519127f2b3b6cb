/*
 * fuzz_pbjson: libFuzzer target for the proto3 JSON codec (src/codec/ps_pbjson*.c).
 *
 * Both of its inputs come from outside: protobuf bytes from gRPC clients
 * (unpacked by protobuf-c, checked for UTF-8, encoded to JSON for the broker)
 * and JSON from the broker or HTTP clients (decoded). Each input is fed to
 * both paths, as the ingest path uses them, and two properties are checked
 * besides memory safety: a message that passes the UTF-8 check encodes, and
 * JSON the encoder wrote decodes back to a message that encodes to the same
 * bytes.
 *
 * Build and run from the repository root, after `make` has generated build/gen:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE \
 *     -Isrc -Ibuild/gen fuzz/fuzz_pbjson.c src/codec/ps_pbjson.c \
 *     src/codec/ps_pbjson_decode.c src/codec/ps_pbjson_utf8.c src/core/ps_buf.c \
 *     src/core/ps_arena.c build/gen/eventservice.pb-c.c \
 *     $(pkg-config --cflags --libs libprotobuf-c yajl) -lm -o build/fuzz_pbjson
 *   mkdir -p build/fuzz-corpus && build/fuzz_pbjson -max_len=65536 build/fuzz-corpus tests/golden
 *
 * (tests/golden holds Events as .pb and as .json: a seed corpus for both paths.)
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_pbjson.h"
#include "core/ps_arena.h"
#include "eventservice.pb-c.h"

/* Decodes json as Events, encodes the result, and checks it reproduces want. */
static void round_trip(const char *json, size_t len, const char *want) {
  ProtobufCMessage *m = NULL;
  char err[256];
  if (ps_pbjson_decode(&event__events__descriptor, json, len, NULL, &m, err, sizeof err) != 0)
    abort(); /* our own output must decode */
  ps_buf b = PS_BUF_INIT;
  if (ps_pbjson_encode(&b, m) != 0 || strcmp(b.data, want) != 0)
    abort();
  ps_buf_free(&b);
  protobuf_c_message_free_unpacked(m, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  ps_buf b = PS_BUF_INIT;

  /* Bytes as a gRPC request: unpack into an arena as the ingest path does. */
  ps_arena *arena = ps_arena_create(size * 3 + 2048);
  ProtobufCAllocator alloc = ps_arena_allocator(arena);
  Event__Events *ev = event__events__unpack(&alloc, size, data);
  if (ev) {
    int valid = ps_pb_check_utf8(&ev->base, err, sizeof err) == 0;
    int rc = ps_pbjson_encode(&b, &ev->base);
    if (valid && rc != 0)
      abort();
    if (rc == 0)
      round_trip(b.data, b.len, b.data);
  }
  ps_arena_destroy(arena);

  /* Bytes as JSON: decode; what decodes must encode and survive a round trip. */
  ProtobufCMessage *m = NULL;
  if (ps_pbjson_decode(&event__events__descriptor, (const char *)data, size, NULL, &m, err, sizeof err) ==
      0) {
    if (ps_pb_check_utf8(m, err, sizeof err) != 0)
      abort(); /* the decoder only yields valid UTF-8 */
    ps_buf_reset(&b);
    if (ps_pbjson_encode(&b, m) != 0)
      abort();
    round_trip(b.data, b.len, b.data);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  ps_buf_free(&b);
  return 0;
}
