/*
 * ps_word: strings scanned 8 bytes at a time, each word tested at once for a
 * byte that needs a closer look (the JSON and TabSeparated escapers, the
 * UTF-8 and NUL checks, the JSON decoder's key lookup). The tests are Hacker's
 * Delight's "find a zero byte": they never miss a byte, and may flag one more
 * above a byte they found, which a byte-by-byte look then sorts out.
 */
#ifndef PS_WORD_H
#define PS_WORD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PS_WORD_ONES 0x0101010101010101ull
#define PS_WORD_HIGHS 0x8080808080808080ull

/** Nonzero iff some byte of w is below b (b <= 128). */
static inline uint64_t ps_word_has_less(uint64_t w, unsigned b) {
  return (w - PS_WORD_ONES * b) & ~w & PS_WORD_HIGHS;
}

/** Nonzero iff some byte of w equals b. */
static inline uint64_t ps_word_has_byte(uint64_t w, unsigned b) {
  return ps_word_has_less(w ^ (PS_WORD_ONES * b), 1);
}

/** The 8 bytes at p, unaligned. */
static inline uint64_t ps_word_load8(const unsigned char *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

/**
 * For 0 < n < 8: a word that holds every byte of s[0..n) and, beside them,
 * only spaces, so that a test "does any byte of the word need a look" answers
 * for the string: two overlapping 4-byte loads when n >= 4, else the first,
 * middle and last byte (which are all of them) padded with spaces.
 */
static inline uint64_t ps_word_short(const unsigned char *s, size_t n) {
  if (n >= 4) {
    uint32_t lo, hi;
    memcpy(&lo, s, 4);
    memcpy(&hi, s + n - 4, 4);
    return lo | (uint64_t)hi << 32;
  }
  return s[0] | (uint64_t)s[n / 2] << 8 | (uint64_t)s[n - 1] << 16 | 0x2020202020000000ull;
}

#endif
