/*
 * ps_word: reading a short string as one 64-bit word, for the scans that test
 * 8 bytes at a time whether any byte needs a closer look (the TabSeparated
 * escaper, the UTF-8 and NUL check of strings on the wire).
 */
#ifndef PS_WORD_H
#define PS_WORD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

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
