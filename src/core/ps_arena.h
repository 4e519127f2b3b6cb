/*
 * ps_arena: a bump allocator for memory that lives and dies together.
 *
 * A request's decoded batch (every protobuf-c field of it) is allocated from
 * one arena and released in one call when the batch has been published, so
 * decoding does no per-field malloc/free. Not thread-safe: an arena belongs
 * to one batch, and a batch to one thread at a time.
 */
#ifndef PS_ARENA_H
#define PS_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct ps_arena ps_arena;

/** Creates an arena whose first block holds at least first_block bytes. Aborts on OOM. */
ps_arena *ps_arena_create(size_t first_block);
/** Frees the arena and everything allocated from it; accepts NULL. */
void ps_arena_destroy(ps_arena *a);
/** Returns n bytes aligned to 16, valid until the arena is destroyed. */
void *ps_arena_alloc(ps_arena *a, size_t n);
/** Bytes handed out so far (for accounting and limits). */
size_t ps_arena_used(const ps_arena *a);
/** A protobuf-c allocator that allocates from a (its free is a no-op). */
ProtobufCAllocator ps_arena_allocator(ps_arena *a);

#endif
