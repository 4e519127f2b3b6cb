/* ps_arena: bump allocator (see ps_arena.h). */
#include "core/ps_arena.h"

#include <stdint.h>
#include <stdlib.h>

typedef struct ps__arena_block {
  struct ps__arena_block *next;
  size_t size, used;
  _Alignas(16) unsigned char mem[];
} ps__arena_block;

struct ps_arena {
  ps__arena_block *head;
  size_t total;
};

static ps__arena_block *ps__block_new(size_t size) {
  ps__arena_block *b = malloc(sizeof *b + size);
  if (!b)
    abort();
  b->next = NULL;
  b->size = size;
  b->used = 0;
  return b;
}

ps_arena *ps_arena_create(size_t first_block) {
  ps_arena *a = malloc(sizeof *a);
  if (!a)
    abort();
  a->head = ps__block_new(first_block < 256 ? 256 : first_block);
  a->total = 0;
  return a;
}

void ps_arena_destroy(ps_arena *a) {
  if (!a)
    return;
  ps__arena_block *b = a->head;
  while (b) {
    ps__arena_block *n = b->next;
    free(b);
    b = n;
  }
  free(a);
}

void *ps_arena_alloc(ps_arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  ps__arena_block *b = a->head;
  if (b->size - b->used < n) {
    size_t size = b->size * 2;
    if (size < n)
      size = n;
    ps__arena_block *nb = ps__block_new(size);
    nb->next = b;
    a->head = b = nb;
  }
  void *p = b->mem + b->used;
  b->used += n;
  a->total += n;
  return p;
}

size_t ps_arena_used(const ps_arena *a) { return a->total; }

static void *ps__pb_alloc(void *data, size_t size) {
  return ps_arena_alloc(data, size ? size : 1);
}
static void ps__pb_free(void *data, void *p) {
  (void)data;
  (void)p;
}

ProtobufCAllocator ps_arena_allocator(ps_arena *a) {
  ProtobufCAllocator al = {ps__pb_alloc, ps__pb_free, a};
  return al;
}
