/*
 * Unit tests of ps_spool: records read back in order across segments; commit
 * deleting segments and freeing the budget (PS_EFULL, then room again);
 * rewind; reopening; damaged files (a torn tail, a CRC mismatch found at open
 * or while reading, an invalid length, a bad segment header, a leftover
 * .tmp); the lock; a failed write, a write cut short and a failed fdatasync
 * taken back; large records and batches; many appenders at once (every record
 * read once, in order per thread; with FSYNC_NEVER, on a full spool with
 * rewinds, and with FSYNC_ALWAYS sharing fdatasyncs, some of which fail);
 * wait and wake; invalid arguments; the metrics.
 * Each test works in its own directory under /tmp, removed at the end.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_failpoint.h"
#include "core/ps_metrics.h"
#include "ps_test.h"
#include "spool/ps_spool.h"

/* ---------------------------------------------------------------- helpers */

static void tmpdir(char *dir, size_t cap) {
  snprintf(dir, cap, "/tmp/ps-spool-XXXXXX");
  if (!mkdtemp(dir))
    abort();
}

static ps_spool *open_spool(const char *dir, uint64_t max_bytes, uint64_t segment_bytes,
                            ps_spool_fsync fsync) {
  ps_spool_options o = {dir, max_bytes, segment_bytes, fsync};
  ps_spool *s = NULL;
  char err[256];
  if (ps_spool_open(&o, &s, err, sizeof err) != 0) {
    fprintf(stderr, "  open %s: %s\n", dir, err);
    return NULL;
  }
  return s;
}

static int append_str(ps_spool *s, const char *str) {
  struct iovec v = {(void *)str, strlen(str)};
  return ps_spool_append(s, &v, 1);
}

/* The next record as a C string in buf (records here are short text); the result of ps_spool_next. */
static int next_str(ps_spool *s, char *buf, size_t cap, ps_spool_pos *end) {
  const void *d;
  size_t n;
  ps_spool_pos e;
  int rc = ps_spool_next(s, &d, &n, &e);
  if (rc == 0) {
    snprintf(buf, cap, "%.*s", (int)n, (const char *)d);
    if (end)
      *end = e;
  }
  return rc;
}

/* Closes s; 1 if the process-wide gauges are back to zero (what the spool counted, it uncounted). */
static int close_clean(ps_spool *s) {
  ps_spool_close(s);
  return ps_test_metric("penstock_spool_bytes") == 0 && ps_test_metric("penstock_spool_records") == 0;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp((const char *)a, (const char *)b);
}

/* The names in dir that end in suffix, sorted; returns how many (at most max are kept). */
static int list_files(const char *dir, const char *suffix, char names[][64], int max) {
  DIR *d = opendir(dir);
  if (!d)
    return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (ends_with(e->d_name, suffix)) {
      if (n < max)
        snprintf(names[n], 64, "%.63s", e->d_name);
      n++;
    }
  closedir(d);
  qsort(names, (size_t)(n < max ? n : max), 64, cmp_name);
  return n;
}

static uint64_t dir_bytes(const char *dir, const char *suffix) {
  char names[256][64], path[512];
  int n = list_files(dir, suffix, names, 256);
  uint64_t sum = 0;
  for (int i = 0; i < n && i < 256; i++) {
    struct stat st;
    snprintf(path, sizeof path, "%s/%.63s", dir, names[i]);
    if (stat(path, &st) == 0)
      sum += (uint64_t)st.st_size;
  }
  return sum;
}

/* Overwrites n bytes of dir/name at off. */
static int patch(const char *dir, const char *name, long off, const void *bytes, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_WRONLY);
  if (fd < 0)
    return -1;
  ssize_t w = pwrite(fd, bytes, n, off);
  close(fd);
  return w == (ssize_t)n ? 0 : -1;
}

/* Flips the bits of the byte at off of dir/name. */
static int flip(const char *dir, const char *name, long off) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_RDWR);
  unsigned char c;
  int ok = fd >= 0 && pread(fd, &c, 1, off) == 1;
  c ^= 0xff;
  ok = ok && pwrite(fd, &c, 1, off) == 1;
  if (fd >= 0)
    close(fd);
  return ok ? 0 : -1;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int pos_before(ps_spool_pos a, ps_spool_pos b) {
  return a.segment < b.segment || (a.segment == b.segment && a.offset < b.offset);
}

static void failpoints(const char *spec) {
  setenv("PENSTOCK_FAILPOINTS", spec, 1);
  ps_failpoint_init();
}

/* ---------------------------------------------------------------- order, commit, rewind, reopen */

PS_TEST(append_and_read_back_in_order_across_segments) {
  char dir[64], rec[64], got[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 100, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  double appended0 = ps_test_metric("penstock_spool_appended_records_total");
  for (int i = 0; i < 50; i++) {
    snprintf(rec, sizeof rec, "rec-%03d", i);
    PS_CHECK_INT_EQ(append_str(s, rec), 0);
  }
  struct iovec batch[3] = {{"rec-050", 7}, {"rec-051", 7}, {"rec-052", 7}};
  PS_CHECK_INT_EQ(ps_spool_append(s, batch, 3), 0);
  PS_CHECK(ps_test_metric("penstock_spool_appended_records_total") == appended0 + 53);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 53);
  PS_CHECK_MSG(st.segments >= 5, "only %llu segments", (unsigned long long)st.segments);
  char names[256][64];
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 256), st.segments);
  PS_CHECK_INT_EQ(dir_bytes(dir, ".seg"), st.bytes);
  PS_CHECK(ps_test_metric("penstock_spool_records") == 53);
  PS_CHECK(ps_test_metric("penstock_spool_bytes") == (double)st.bytes);

  ps_spool_pos prev = {0, 0}, end;
  for (int i = 0; i < 53; i++) {
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), 0);
    snprintf(rec, sizeof rec, "rec-%03d", i);
    PS_CHECK_STR_EQ(got, rec);
    PS_CHECK(pos_before(prev, end));
    prev = end;
  }
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), PS_EAGAIN);
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 53); /* read, not committed */
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(commit_deletes_segments_and_frees_the_budget) {
  char dir[64], got[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 400, 100, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  double full0 = ps_test_metric("penstock_spool_full_total"),
         committed0 = ps_test_metric("penstock_spool_committed_records_total");
  int n = 0, rc;
  while ((rc = append_str(s, "0123456789")) == 0)
    n++;
  PS_CHECK_INT_EQ(rc, PS_EFULL);
  PS_CHECK(ps_test_metric("penstock_spool_full_total") == full0 + 1);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK(st.bytes <= 400 && st.bytes > 400 - 18 - 8);
  PS_CHECK_INT_EQ(st.records, n);
  uint64_t segs0 = st.segments, bytes0 = st.bytes;
  PS_CHECK(segs0 >= 3);

  /* A batch larger than the whole budget never fits. */
  static char big[500];
  memset(big, 'b', sizeof big);
  struct iovec v = {big, sizeof big};
  PS_CHECK_INT_EQ(ps_spool_append(s, &v, 1), PS_EFULL);

  /* Half of it delivered: the segments wholly before the commit point go. */
  ps_spool_pos end;
  for (int i = 0; i < n / 2; i++)
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), 0);
  ps_spool_commit(s, end);
  PS_CHECK(ps_test_metric("penstock_spool_committed_records_total") == committed0 + n / 2);
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, n - n / 2);
  PS_CHECK(st.segments < segs0 && st.bytes < bytes0);
  char names[64][64];
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 64), st.segments);
  PS_CHECK_INT_EQ(dir_bytes(dir, ".seg"), st.bytes);
  PS_CHECK_INT_EQ(append_str(s, "room again"), 0);

  /* All of it: reading to the end seals the last segment, so everything goes. */
  int left = 0;
  while (next_str(s, got, sizeof got, &end) == 0)
    left++;
  PS_CHECK_INT_EQ(left, n - n / 2 + 1);
  PS_CHECK_STR_EQ(got, "room again");
  ps_spool_commit(s, end);
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 0);
  PS_CHECK_INT_EQ(st.segments, 0);
  PS_CHECK_INT_EQ(st.bytes, 0);
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 64), 0);
  PS_CHECK_INT_EQ(append_str(s, "and again"), 0);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), 0);
  PS_CHECK_STR_EQ(got, "and again");
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(rewind_reads_the_uncommitted_records_again) {
  char dir[64], rec[64], got[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 60, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  for (int i = 0; i < 10; i++) {
    snprintf(rec, sizeof rec, "r%d", i);
    PS_CHECK_INT_EQ(append_str(s, rec), 0);
  }
  ps_spool_pos ends[10];
  for (int i = 0; i < 6; i++)
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &ends[i]), 0);
  ps_spool_commit(s, ends[2]);
  ps_spool_rewind(s);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "r3");
  for (int i = 4; i < 10; i++) {
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &ends[i]), 0);
    snprintf(rec, sizeof rec, "r%d", i);
    PS_CHECK_STR_EQ(got, rec);
  }
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  ps_spool_commit(s, ends[1]); /* behind what is committed: nothing changes */
  ps_spool_rewind(s);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "r3");
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 7);
  PS_CHECK_INT_EQ(st.segments, 2);
  /* r0..r5 fill the first segment (8 + 6 * 10 bytes): committing r5 deletes it; a rewind then starts
   * at the next segment. */
  for (int i = 4; i < 10; i++)
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &ends[i]), 0);
  PS_CHECK(ends[5].segment != ends[6].segment);
  ps_spool_commit(s, ends[5]);
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.segments, 1);
  ps_spool_rewind(s);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "r6");
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(reopen_finds_the_records_not_committed) {
  char dir[64], rec[64], got[64];
  tmpdir(dir, sizeof dir);
  /* segment_bytes 1: every append seals its segment, so a commit deletes exactly what it covers. */
  ps_spool *s = open_spool(dir, 0, 1, PS_SPOOL_FSYNC_ALWAYS);
  PS_CHECK(s);
  for (int i = 0; i < 20; i++) {
    snprintf(rec, sizeof rec, "r%02d", i);
    PS_CHECK_INT_EQ(append_str(s, rec), 0);
  }
  ps_spool_pos end;
  for (int i = 0; i < 5; i++)
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), 0);
  ps_spool_commit(s, end);
  PS_CHECK(close_clean(s));

  s = open_spool(dir, 0, 1, PS_SPOOL_FSYNC_ALWAYS);
  PS_CHECK(s);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 15);
  PS_CHECK_INT_EQ(st.segments, 15);
  PS_CHECK(ps_test_metric("penstock_spool_records") == 15);
  PS_CHECK_INT_EQ(append_str(s, "new"), 0);
  for (int i = 5; i < 20; i++) {
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
    snprintf(rec, sizeof rec, "r%02d", i);
    PS_CHECK_STR_EQ(got, rec);
  }
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "new");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

/* ---------------------------------------------------------------- damaged files */

PS_TEST(torn_tail_is_cut_off_and_counted) {
  char dir[64], rec[64], got[64], names[8][64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  for (int i = 0; i < 5; i++) {
    snprintf(rec, sizeof rec, "record-%d-0123456789", i);
    PS_CHECK_INT_EQ(append_str(s, rec), 0);
  }
  PS_CHECK(close_clean(s));
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 8), 1);
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, names[0]);
  struct stat sb;
  PS_CHECK(stat(path, &sb) == 0);
  PS_CHECK(truncate(path, sb.st_size - 5) == 0); /* inside the last record's payload */

  double corrupt0 = ps_test_metric("penstock_spool_corrupt_total");
  s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK(ps_test_metric("penstock_spool_corrupt_total") == corrupt0 + 1);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 4);
  for (int i = 0; i < 4; i++) {
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
    snprintf(rec, sizeof rec, "record-%d-0123456789", i);
    PS_CHECK_STR_EQ(got, rec);
  }
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  PS_CHECK_INT_EQ(append_str(s, "after"), 0);
  ps_spool_pos end;
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), 0);
  PS_CHECK_STR_EQ(got, "after");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  ps_spool_commit(s, end);
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.segments, 0);
  /* A torn tail is what a crash leaves mid-append: its segment is deleted, not kept. */
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 8), 0);
  PS_CHECK_INT_EQ(list_files(dir, ".corrupt", names, 8), 0);
  PS_CHECK(ps_test_metric("penstock_spool_corrupt_total") == corrupt0 + 1);
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

/* Five records "aN-xxxxxxxx" (11 bytes) per batch, one batch per segment. */
#define REC_LEN 11
static int append_batch(ps_spool *s, char tag) {
  char recs[5][REC_LEN + 1];
  struct iovec v[5];
  for (int i = 0; i < 5; i++) {
    snprintf(recs[i], sizeof recs[i], "%c%d-xxxxxxxx", tag, i);
    v[i] = (struct iovec){recs[i], REC_LEN};
  }
  return ps_spool_append(s, v, 5);
}

PS_TEST(crc_mismatch_found_at_open_skips_the_rest_of_its_segment) {
  char dir[64], rec[64], got[64], names[8][64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 1, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK_INT_EQ(append_batch(s, 'a'), 0);
  PS_CHECK_INT_EQ(append_batch(s, 'b'), 0);
  PS_CHECK(close_clean(s));
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 8), 2);
  /* The third record of the first segment: header 8, two frames of 8 + 11, its own frame header 8. */
  PS_CHECK(flip(dir, names[0], 8 + 2 * (8 + REC_LEN) + 8 + 3) == 0);

  double corrupt0 = ps_test_metric("penstock_spool_corrupt_total");
  s = open_spool(dir, 0, 1, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK(ps_test_metric("penstock_spool_corrupt_total") == corrupt0 + 1);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 7);
  const char *want[] = {"a0", "a1", "b0", "b1", "b2", "b3", "b4"};
  ps_spool_pos end;
  for (int i = 0; i < 7; i++) {
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), 0);
    snprintf(rec, sizeof rec, "%s-xxxxxxxx", want[i]);
    PS_CHECK_STR_EQ(got, rec);
  }
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  ps_spool_commit(s, end);
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.segments, 0);
  /* Delivered up to the damage: the damaged segment is set aside, the other deleted. */
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 8), 0);
  PS_CHECK_INT_EQ(list_files(dir, ".seg.corrupt", names, 8), 1);
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(crc_mismatch_found_while_reading_skips_the_rest_of_its_segment) {
  char dir[64], got[64], names[8][64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK_INT_EQ(append_batch(s, 'a'), 0);
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 8), 1);
  PS_CHECK(flip(dir, names[0], 8 + 1 * (8 + REC_LEN) + 8 + 5) == 0); /* the second record */
  double corrupt0 = ps_test_metric("penstock_spool_corrupt_total");
  ps_spool_pos end;
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), 0);
  PS_CHECK_STR_EQ(got, "a0-xxxxxxxx");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  PS_CHECK(ps_test_metric("penstock_spool_corrupt_total") == corrupt0 + 1);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 1);
  /* The damaged segment takes no more appends; the next one is read. */
  PS_CHECK_INT_EQ(append_str(s, "later"), 0);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), 0);
  PS_CHECK_STR_EQ(got, "later");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  ps_spool_commit(s, end);
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 0);
  PS_CHECK_INT_EQ(st.segments, 0);
  PS_CHECK_INT_EQ(list_files(dir, ".seg.corrupt", names, 8), 1);
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(invalid_length_field_is_detected_at_open) {
  char dir[64], got[64], names[8][64], path[512];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 1, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK_INT_EQ(append_str(s, "only"), 0);
  PS_CHECK_INT_EQ(append_batch(s, 'b'), 0);
  PS_CHECK(close_clean(s));
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 8), 2);
  static const unsigned char zero[4] = {0, 0, 0, 0}, huge[4] = {0xff, 0xff, 0xff, 0x7f};
  PS_CHECK(patch(dir, names[0], 8, huge, 4) == 0);                 /* its only record */
  PS_CHECK(patch(dir, names[1], 8 + (8 + REC_LEN), zero, 4) == 0); /* the second record */

  double corrupt0 = ps_test_metric("penstock_spool_corrupt_total");
  s = open_spool(dir, 0, 1, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK(ps_test_metric("penstock_spool_corrupt_total") == corrupt0 + 2);
  /* Nothing readable in the first: set aside at once. */
  snprintf(path, sizeof path, "%s/%s.corrupt", dir, names[0]);
  PS_CHECK(access(path, F_OK) == 0);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.segments, 1);
  PS_CHECK_INT_EQ(st.records, 1);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "b0-xxxxxxxx");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(bad_segment_header_is_set_aside) {
  char dir[64], got[64], names[8][64], path[512];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 1, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK_INT_EQ(append_str(s, "first"), 0);
  PS_CHECK_INT_EQ(append_str(s, "second"), 0);
  PS_CHECK(close_clean(s));
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 8), 2);
  char bad_name[64];
  snprintf(bad_name, sizeof bad_name, "%s", names[0]);
  PS_CHECK(patch(dir, bad_name, 0, "XXXX", 4) == 0);
  /* A creation cut short before its rename: removed at open; its number is not used again. */
  snprintf(path, sizeof path, "%s/00000000000000000099.seg.tmp", dir);
  FILE *f = fopen(path, "w");
  PS_CHECK(f);
  fclose(f);

  double corrupt0 = ps_test_metric("penstock_spool_corrupt_total");
  s = open_spool(dir, 0, 1, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK(ps_test_metric("penstock_spool_corrupt_total") == corrupt0 + 1);
  PS_CHECK(access(path, F_OK) != 0);
  snprintf(path, sizeof path, "%s/%s", dir, bad_name);
  PS_CHECK(access(path, F_OK) != 0);
  snprintf(path, sizeof path, "%s/%s.corrupt", dir, bad_name);
  PS_CHECK(access(path, F_OK) == 0);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.segments, 1);
  PS_CHECK_INT_EQ(st.records, 1);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "second");
  PS_CHECK_INT_EQ(append_str(s, "third"), 0);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "third");
  PS_CHECK_INT_EQ(list_files(dir, ".seg", names, 8), 2);
  PS_CHECK_STR_EQ(names[1], "00000000000000000100.seg");
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

/* ---------------------------------------------------------------- lock, failures, arguments */

PS_TEST(second_open_of_a_directory_fails_while_it_is_open) {
  char dir[64], err[256] = "";
  tmpdir(dir, sizeof dir);
  ps_spool *a = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(a);
  ps_spool_options o = {dir, 0, 0, PS_SPOOL_FSYNC_NEVER};
  ps_spool *b = (ps_spool *)1;
  PS_CHECK_INT_EQ(ps_spool_open(&o, &b, err, sizeof err), PS_EIO);
  PS_CHECK(b == NULL);
  PS_CHECK_MSG(strstr(err, "held") != NULL, "err: %s", err);
  ps_spool_close(a);
  PS_CHECK_INT_EQ(ps_spool_open(&o, &b, err, sizeof err), 0);
  PS_CHECK(close_clean(b));

  /* A directory that cannot be created. */
  ps_spool_options bad = {"/nonexistent-ps-spool/x", 0, 0, PS_SPOOL_FSYNC_NEVER};
  PS_CHECK_INT_EQ(ps_spool_open(&bad, &b, err, sizeof err), PS_EIO);
  PS_CHECK(strstr(err, "/nonexistent-ps-spool/x") != NULL);
  ps_test_rmtree(dir);
}

PS_TEST(failed_write_fails_the_append_and_leaves_nothing) {
  char dir[64], got[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK_INT_EQ(append_str(s, "one"), 0);
  failpoints("spool.write:1");
  PS_CHECK_INT_EQ(append_str(s, "lost"), PS_EIO);
  PS_CHECK_INT_EQ(append_str(s, "two"), 0);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 2);
  PS_CHECK_INT_EQ(st.bytes, 8 + 8 + 3 + 8 + 3);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "one");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "two");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(write_cut_short_is_taken_back) {
  char dir[64], got[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK_INT_EQ(append_str(s, "first"), 0); /* the file: 8 + 8 + 5 bytes */
  /* A file size limit of 64 bytes: the next write stops part way, as on a full disk. */
  static char big[100];
  memset(big, 'z', sizeof big);
  struct iovec v = {big, sizeof big};
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = 64;
  void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
  setrlimit(RLIMIT_FSIZE, &lim);
  int cut = ps_spool_append(s, &v, 1);
  int after = append_str(s, "second");
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);
  PS_CHECK_INT_EQ(cut, PS_EIO);
  PS_CHECK_INT_EQ(after, 0);
  for (int pass = 0; pass < 2; pass++) { /* as written, then as found by a reopen: no damage */
    double corrupt0 = ps_test_metric("penstock_spool_corrupt_total");
    if (pass == 1) {
      s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
      PS_CHECK(s);
    }
    ps_spool_stats st;
    ps_spool_stats_get(s, &st);
    PS_CHECK_INT_EQ(st.records, 2);
    PS_CHECK_INT_EQ(st.bytes, 8 + 8 + 5 + 8 + 6);
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
    PS_CHECK_STR_EQ(got, "first");
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
    PS_CHECK_STR_EQ(got, "second");
    PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
    PS_CHECK(ps_test_metric("penstock_spool_corrupt_total") == corrupt0);
    PS_CHECK(close_clean(s));
  }
  ps_test_rmtree(dir);
}

PS_TEST(failed_fdatasync_fails_the_append_and_takes_it_back) {
  char dir[64], got[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_ALWAYS);
  PS_CHECK(s);
  PS_CHECK_INT_EQ(append_str(s, "one"), 0);
  failpoints("spool.fdatasync:1");
  PS_CHECK_INT_EQ(append_str(s, "lost"), PS_EIO);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 1);
  PS_CHECK_INT_EQ(append_str(s, "two"), 0); /* into a new segment */
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "one");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "two");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  PS_CHECK(close_clean(s));

  /* Nothing of the failed append is on disk: no damage found, the same two records. */
  double corrupt0 = ps_test_metric("penstock_spool_corrupt_total");
  s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_ALWAYS);
  PS_CHECK(s);
  PS_CHECK(ps_test_metric("penstock_spool_corrupt_total") == corrupt0);
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 2);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "one");
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "two");
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(invalid_arguments_are_refused) {
  char dir[64], err[256];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  double appended0 = ps_test_metric("penstock_spool_appended_records_total");
  struct iovec ok = {"x", 1}, empty = {"", 0}, huge = {"x", (64u << 20) + 1};
  struct iovec mixed[2] = {ok, empty};
  PS_CHECK_INT_EQ(ps_spool_append(s, &ok, 0), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_spool_append(s, &empty, 1), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_spool_append(s, mixed, 2), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_spool_append(s, &huge, 1), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_spool_append(s, NULL, 1), PS_EINVAL);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 0);
  PS_CHECK_INT_EQ(st.bytes, 0);
  PS_CHECK(ps_test_metric("penstock_spool_appended_records_total") == appended0);
  PS_CHECK(close_clean(s));

  ps_spool_options no_dir = {NULL, 0, 0, PS_SPOOL_FSYNC_NEVER}, empty_dir = {"", 0, 0, PS_SPOOL_FSYNC_NEVER},
                   bad_mode = {dir, 0, 0, (ps_spool_fsync)7};
  PS_CHECK_INT_EQ(ps_spool_open(&no_dir, &s, err, sizeof err), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_spool_open(&empty_dir, &s, err, sizeof err), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_spool_open(&bad_mode, &s, err, sizeof err), PS_EINVAL);
  PS_CHECK_INT_EQ(ps_spool_open(NULL, &s, err, sizeof err), PS_EINVAL);
  ps_spool_close(NULL);
  ps_test_rmtree(dir);
}

/* ---------------------------------------------------------------- threads */

#define APPENDERS 4

typedef struct {
  ps_spool *s;
  int id, n, retries, failed;
} appender_arg;

/* Appends "id:seq" for seq 0..n-1, in batches of 1 to 3; a batch refused for want of room (or, when
 * retries is set, because an fdatasync failed) is tried again. */
static void *appender(void *arg) {
  appender_arg *a = arg;
  unsigned seed = (unsigned)a->id * 7919u + 1;
  for (int i = 0; i < a->n;) {
    int k = 1 + (int)(rand_r(&seed) % 3);
    if (k > a->n - i)
      k = a->n - i;
    char recs[3][32];
    struct iovec v[3];
    for (int j = 0; j < k; j++) {
      snprintf(recs[j], sizeof recs[j], "%d:%d", a->id, i + j);
      v[j] = (struct iovec){recs[j], strlen(recs[j])};
    }
    int rc = ps_spool_append(a->s, v, (size_t)k);
    if (rc == PS_EFULL || (rc == PS_EIO && a->retries)) {
      ps_test_sleep_ms(1);
      continue;
    }
    if (rc != 0) {
      a->failed = 1;
      return NULL;
    }
    i += k;
  }
  return NULL;
}

typedef struct {
  ps_spool_fsync mode;
  int per_thread;
  uint64_t max_bytes, segment_bytes;
  int rewind_every; /* 0: never */
  int retries;      /* appenders try again after PS_EIO */
} appenders_case;

/* APPENDERS threads append per_thread records each while this thread reads, commits every 16 records
 * and now and then rewinds: every record comes back once (after a rewind, once more from what was
 * committed), each thread's in its order, and in the end nothing is left. */
static void run_appenders(const appenders_case *c) {
  char dir[64], got[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, c->max_bytes, c->segment_bytes, c->mode);
  PS_CHECK(s);
  pthread_t t[APPENDERS];
  appender_arg a[APPENDERS];
  for (int i = 0; i < APPENDERS; i++) {
    a[i] = (appender_arg){s, i, c->per_thread, c->retries, 0};
    pthread_create(&t[i], NULL, appender, &a[i]);
  }
  int next_seq[APPENDERS] = {0}, cm_seq[APPENDERS] = {0};
  int total = APPENDERS * c->per_thread, seen = 0, cm_seen = 0, bad = 0, reads = 0;
  ps_spool_pos end = {0, 0};
  int64_t deadline = now_ms() + 120000;
  while (seen < total && now_ms() < deadline) {
    int rc = next_str(s, got, sizeof got, &end);
    if (rc == PS_EAGAIN) {
      ps_spool_wait(s, 100);
      continue;
    }
    if (rc != 0) {
      bad++;
      break;
    }
    int id, seq;
    if (sscanf(got, "%d:%d", &id, &seq) != 2 || id < 0 || id >= APPENDERS || seq != next_seq[id]) {
      if (bad++ == 0)
        fprintf(stderr, "  unexpected record %s\n", got);
      continue;
    }
    next_seq[id]++;
    seen++;
    reads++;
    if (seen % 16 == 0) {
      ps_spool_commit(s, end);
      memcpy(cm_seq, next_seq, sizeof cm_seq);
      cm_seen = seen;
    }
    if (c->rewind_every && reads % c->rewind_every == 0 && seen < total) {
      ps_spool_rewind(s);
      memcpy(next_seq, cm_seq, sizeof next_seq);
      seen = cm_seen;
    }
  }
  for (int i = 0; i < APPENDERS; i++)
    pthread_join(t[i], NULL);
  for (int i = 0; i < APPENDERS; i++)
    PS_CHECK_MSG(!a[i].failed, "appender %d failed", i);
  PS_CHECK_INT_EQ(bad, 0);
  PS_CHECK_INT_EQ(seen, total);
  for (int i = 0; i < APPENDERS; i++)
    PS_CHECK_INT_EQ(next_seq[i], c->per_thread);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), PS_EAGAIN);
  ps_spool_commit(s, end);
  ps_spool_stats st;
  ps_spool_stats_get(s, &st);
  PS_CHECK_INT_EQ(st.records, 0);
  PS_CHECK_INT_EQ(st.segments, 0);
  PS_CHECK_INT_EQ(st.bytes, 0);
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(concurrent_appenders_lose_and_duplicate_nothing) {
  appenders_case c = {PS_SPOOL_FSYNC_NEVER, 3000, 0, 1 << 20, 0, 0};
  run_appenders(&c);
}

PS_TEST(concurrent_appenders_on_a_full_spool_with_rewinds) {
  /* A spool of 8 KiB: appenders keep meeting PS_EFULL and wait for commits to make room. */
  double full0 = ps_test_metric("penstock_spool_full_total");
  appenders_case c = {PS_SPOOL_FSYNC_NEVER, 2000, 8192, 1024, 500, 0};
  run_appenders(&c);
  PS_CHECK(ps_test_metric("penstock_spool_full_total") > full0);
}

PS_TEST(concurrent_appenders_with_fdatasync_lose_and_duplicate_nothing) {
  appenders_case c = {PS_SPOOL_FSYNC_ALWAYS, 150, 0, 1 << 20, 0, 0};
  run_appenders(&c);
}

PS_TEST(concurrent_appenders_retrying_failed_fdatasyncs_duplicate_nothing) {
  /* Every append a failed fdatasync covered fails and leaves nothing, so retrying it cannot duplicate. */
  failpoints("spool.fdatasync:6");
  appenders_case c = {PS_SPOOL_FSYNC_ALWAYS, 150, 0, 2048, 0, 1};
  run_appenders(&c);
  PS_CHECK_INT_EQ(ps_failpoint("spool.fdatasync"), 0); /* all six fired */
}

typedef struct {
  ps_spool *s;
  int delay_ms, wake;
} later_arg;

static void *later(void *arg) {
  later_arg *a = arg;
  ps_test_sleep_ms(a->delay_ms);
  if (a->wake)
    ps_spool_wake(a->s);
  else
    append_str(a->s, "late");
  return NULL;
}

PS_TEST(wait_returns_on_an_append_and_on_wake) {
  char dir[64], got[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_ALWAYS);
  PS_CHECK(s);
  PS_CHECK_INT_EQ(ps_spool_wait(s, 0), 0);
  int64_t t0 = now_ms();
  PS_CHECK_INT_EQ(ps_spool_wait(s, 50), 0);
  PS_CHECK_MSG(now_ms() - t0 >= 45, "returned after %lld ms", (long long)(now_ms() - t0));

  pthread_t t;
  later_arg a = {s, 50, 0};
  pthread_create(&t, NULL, later, &a);
  t0 = now_ms();
  PS_CHECK_INT_EQ(ps_spool_wait(s, 10000), 1);
  PS_CHECK(now_ms() - t0 < 5000);
  pthread_join(t, NULL);
  PS_CHECK_INT_EQ(ps_spool_wait(s, 0), 1);
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, NULL), 0);
  PS_CHECK_STR_EQ(got, "late");
  PS_CHECK_INT_EQ(ps_spool_wait(s, 0), 0);

  a = (later_arg){s, 50, 1};
  pthread_create(&t, NULL, later, &a);
  t0 = now_ms();
  PS_CHECK_INT_EQ(ps_spool_wait(s, 10000), 0);
  PS_CHECK(now_ms() - t0 < 5000);
  pthread_join(t, NULL);

  a = (later_arg){s, 50, 1};
  pthread_create(&t, NULL, later, &a);
  PS_CHECK_INT_EQ(ps_spool_wait(s, -1), 0); /* no time limit: only the wake ends it */
  pthread_join(t, NULL);

  /* A wake with no wait in progress is kept for the next wait (no lost wake-up at shutdown). */
  ps_spool_wake(s);
  t0 = now_ms();
  PS_CHECK_INT_EQ(ps_spool_wait(s, 10000), 0);
  PS_CHECK(now_ms() - t0 < 5000);
  t0 = now_ms();
  PS_CHECK_INT_EQ(ps_spool_wait(s, 30), 0);
  PS_CHECK(now_ms() - t0 >= 25);
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST(large_records_and_large_batches_read_back_whole) {
  char dir[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  /* Records larger than the reader's chunk, and a batch of more frames than one pwritev takes. */
  size_t sizes[] = {300 << 10, 1, 1 << 20, 77};
  unsigned char *big[4];
  for (int i = 0; i < 4; i++) {
    big[i] = malloc(sizes[i]);
    PS_CHECK(big[i]);
    for (size_t j = 0; j < sizes[i]; j++)
      big[i][j] = (unsigned char)(j * 31 + (size_t)i);
    struct iovec v = {big[i], sizes[i]};
    PS_CHECK_INT_EQ(ps_spool_append(s, &v, 1), 0);
  }
  enum { N = 3000 };
  static char small[N][8];
  static struct iovec vs[N];
  for (int i = 0; i < N; i++) {
    snprintf(small[i], sizeof small[i], "%d", i);
    vs[i] = (struct iovec){small[i], strlen(small[i])};
  }
  PS_CHECK_INT_EQ(ps_spool_append(s, vs, N), 0);
  for (int pass = 0; pass < 2; pass++) { /* as written, then as found by a reopen */
    const void *d;
    size_t n;
    ps_spool_pos end;
    for (int i = 0; i < 4; i++) {
      PS_CHECK_INT_EQ(ps_spool_next(s, &d, &n, &end), 0);
      PS_CHECK_INT_EQ(n, sizes[i]);
      PS_CHECK(memcmp(d, big[i], n) == 0);
    }
    for (int i = 0; i < N; i++) {
      PS_CHECK_INT_EQ(ps_spool_next(s, &d, &n, &end), 0);
      PS_CHECK(n == strlen(small[i]) && memcmp(d, small[i], n) == 0);
    }
    PS_CHECK_INT_EQ(ps_spool_next(s, &d, &n, &end), PS_EAGAIN);
    PS_CHECK(close_clean(s));
    if (pass == 0) {
      s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
      PS_CHECK(s);
    }
  }
  for (int i = 0; i < 4; i++)
    free(big[i]);
  ps_test_rmtree(dir);
}

/* ---------------------------------------------------------------- metrics */

PS_TEST(gauges_follow_appends_and_commits) {
  char dir[64], got[64];
  tmpdir(dir, sizeof dir);
  ps_spool *s = open_spool(dir, 0, 0, PS_SPOOL_FSYNC_NEVER);
  PS_CHECK(s);
  PS_CHECK(ps_test_metric("penstock_spool_records") == 0);
  PS_CHECK(ps_test_metric("penstock_spool_bytes") == 0);
  PS_CHECK(ps_test_metric("penstock_spool_corrupt_total") >= 0);
  PS_CHECK(ps_test_metric("penstock_spool_full_total") >= 0);
  double committed0 = ps_test_metric("penstock_spool_committed_records_total");
  PS_CHECK_INT_EQ(append_str(s, "abc"), 0);
  PS_CHECK_INT_EQ(append_str(s, "defg"), 0);
  PS_CHECK(ps_test_metric("penstock_spool_records") == 2);
  PS_CHECK(ps_test_metric("penstock_spool_bytes") == 8 + 11 + 12);
  ps_spool_pos end;
  PS_CHECK_INT_EQ(next_str(s, got, sizeof got, &end), 0);
  ps_spool_commit(s, end);
  PS_CHECK(ps_test_metric("penstock_spool_records") == 1);
  PS_CHECK(ps_test_metric("penstock_spool_committed_records_total") == committed0 + 1);
  PS_CHECK(close_clean(s));
  ps_test_rmtree(dir);
}

PS_TEST_MAIN(PS_CASE(append_and_read_back_in_order_across_segments),
             PS_CASE(commit_deletes_segments_and_frees_the_budget),
             PS_CASE(rewind_reads_the_uncommitted_records_again),
             PS_CASE(reopen_finds_the_records_not_committed), PS_CASE(torn_tail_is_cut_off_and_counted),
             PS_CASE(crc_mismatch_found_at_open_skips_the_rest_of_its_segment),
             PS_CASE(crc_mismatch_found_while_reading_skips_the_rest_of_its_segment),
             PS_CASE(invalid_length_field_is_detected_at_open), PS_CASE(bad_segment_header_is_set_aside),
             PS_CASE(second_open_of_a_directory_fails_while_it_is_open),
             PS_CASE(failed_write_fails_the_append_and_leaves_nothing),
             PS_CASE(write_cut_short_is_taken_back),
             PS_CASE(failed_fdatasync_fails_the_append_and_takes_it_back),
             PS_CASE(invalid_arguments_are_refused), PS_CASE(large_records_and_large_batches_read_back_whole),
             PS_CASE(concurrent_appenders_lose_and_duplicate_nothing),
             PS_CASE(concurrent_appenders_on_a_full_spool_with_rewinds),
             PS_CASE(concurrent_appenders_with_fdatasync_lose_and_duplicate_nothing),
             PS_CASE(concurrent_appenders_retrying_failed_fdatasyncs_duplicate_nothing),
             PS_CASE(wait_returns_on_an_append_and_on_wake), PS_CASE(gauges_follow_appends_and_commits))
