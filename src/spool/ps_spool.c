/*
 * ps_spool: the on-disk spool (see ps_spool.h).
 *
 * Layout: DIR/lock (flock'd while open) and DIR/NNNNNNNNNNNNNNNNNNNN.seg, the
 * number zero-padded to 20 digits so that names sort in write order. A
 * segment starts with an 8-byte header ("PSSP", version 1 as a little-endian
 * u32); each record is framed as its length (LE u32, 1..64 MiB), the CRC-32
 * of its payload (LE u32, zlib's) and the payload. A new segment is written
 * as NAME.tmp (header, then fdatasync) and renamed into place, so a segment
 * name always carries a whole header; a leftover .tmp holds no record and is
 * removed at open. Segments whose header is not understood, and, once their
 * readable part is delivered, segments with a CRC or length mismatch, are
 * renamed to NAME.corrupt, never deleted; a torn (short) last frame is what a
 * crash mid-append leaves, so its segment is deleted as usual.
 *
 * DESIGN: one mutex (mu) guards the segment list, the budget and the write
 * and sync state. An append frames its records (CRCs outside mu) and writes
 * them with one pwritev at the tail's end under mu. With FSYNC_ALWAYS it then
 * either runs a sync round (fdatasync outside mu, covering all written when
 * the round began) or waits on sync_cv for the round that answers it: group
 * commit. The reader sees only bytes whose append succeeded, so a failed
 * write or fdatasync is taken back (ftruncate) and never replayed. A segment
 * is sealed past segment_bytes, after a failure, or when the reader has read
 * all written to it; the next append waits out any round on it, then creates
 * the next one. The reader reads through its own descriptor and buffer
 * outside mu (only it removes segments), re-checks every frame, and keeps the
 * ends of records read but not committed in a ring, so commit knows what it
 * delivers. wait sleeps on readable_cv; a wake is kept until a wait takes it.
 * Fail points (ps_failpoint, for tests): spool.write, spool.fdatasync.
 */
#include "spool/ps_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "core/ps_error.h"
#include "core/ps_failpoint.h"
#include "core/ps_log.h"
#include "core/ps_metrics.h"

#define PS__MAGIC "PSSP"
#define PS__VERSION 1u
#define PS__HDR 8u   /* segment header: magic, version */
#define PS__FRAME 8u /* record frame: length, CRC-32 */
#define PS__MAX_RECORD (64u << 20)
#define PS__DEFAULT_MAX_BYTES (1ull << 30)
#define PS__DEFAULT_SEGMENT_BYTES (8ull << 20)
#define PS__READ_CHUNK ((size_t)256 << 10)
#define PS__NOSTOP UINT64_MAX
#define PS__STACK_RECS 16

/* Frame check results (>= 0; a read error is PS_EIO). */
enum { PS__OK = 0, PS__TORN, PS__BADLEN, PS__BADCRC };

typedef struct ps__seg {
  struct ps__seg *next;
  uint64_t id;
  uint64_t size; /* bytes in the file */
  uint64_t vis;  /* end of what the reader may read: appends that succeeded */
  uint64_t stop; /* offset of the first unreadable frame, or PS__NOSTOP */
  uint64_t nrec; /* records in the readable part, counted in ps_spool.records */
  int sealed;    /* takes no more appends */
  int bad;       /* stop is a CRC or length mismatch (not a torn tail): set aside when done */
  int wfd;       /* the appenders' descriptor (the tail's), or -1 */
} ps__seg;

/* An appender waiting for a sync round to cover its bytes (FSYNC_ALWAYS); on its stack. */
typedef struct ps__waiter {
  struct ps__waiter *next;
  uint64_t lsn; /* end of its bytes, in the write sequence */
  int done, rc;
} ps__waiter;

typedef struct {
  uint64_t seg, off;
} ps__end;

struct ps_spool {
  char *dir;
  int dirfd, lockfd;
  uint64_t max_bytes, segment_bytes;
  ps_spool_fsync fsync;

  pthread_mutex_t mu;
  pthread_cond_t sync_cv;     /* a sync round ended */
  pthread_cond_t readable_cv; /* records became visible, or wake */
  ps__seg *head, *tail;
  uint64_t nsegs, bytes, records, next_id;

  /* Appenders. Bytes and records since open: written (w) and visible (v); they differ only while a
   * round is due. */
  uint64_t wlsn, vlsn, wrec, vrec;
  int syncing;
  ps__waiter *waiters, **waiters_tail;

  /* The reader. rd NULL: at the start of the head segment. */
  ps__seg *rd;
  uint64_t rd_off, rd_idx; /* rd_idx: records of rd before rd_off */
  int rd_waiting, wake;
  int rd_fd;
  uint64_t rd_fd_id;  /* segment open in rd_fd (ids start at 1) */
  unsigned char *buf; /* file bytes [buf_off, buf_off + buf_len) of segment buf_id */
  size_t buf_cap, buf_len;
  uint64_t buf_off, buf_id;
  ps__end *ring; /* ends of the records read and not committed, oldest first */
  size_t ring_cap, ring_head, ring_len;
  uint64_t cm_seg, cm_off, cm_idx; /* the last record committed: its end, its index in its segment + 1 */
};

/* ---------------------------------------------------------------- metrics */

static struct { ps_counter *bytes, *records, *appended, *committed, *corrupt, *full; } ps__m;
static pthread_once_t ps__m_once = PTHREAD_ONCE_INIT;

static void ps__metrics_register(void) {
  ps__m.bytes = ps_metrics_counter("penstock_spool_bytes", "", "size of the open spool's segment files", 1);
  ps__m.records = ps_metrics_counter("penstock_spool_records", "",
                                     "records in the open spool, appended and not committed", 1);
  ps__m.appended =
      ps_metrics_counter("penstock_spool_appended_records_total", "", "records appended to the spool", 0);
  ps__m.committed = ps_metrics_counter("penstock_spool_committed_records_total", "",
                                       "spool records committed (delivered)", 0);
  ps__m.corrupt = ps_metrics_counter("penstock_spool_corrupt_total", "",
                                     "unreadable spool data found: segments cut short, headers set aside", 0);
  ps__m.full = ps_metrics_counter("penstock_spool_full_total", "", "appends refused: the spool was full", 0);
}

/* ---------------------------------------------------------------- helpers */

static void ps__err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void ps__err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static void ps__put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

static uint32_t ps__get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t ps__crc(const void *p, size_t n) {
  return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

static void ps__name(char *out, size_t cap, uint64_t id, const char *suffix) {
  snprintf(out, cap, "%020" PRIu64 ".seg%s", id, suffix);
}

/* Kind of a directory entry: 1 segment, 2 set aside, 3 unfinished creation, 0 something else. */
static int ps__parse_name(const char *name, uint64_t *id) {
  uint64_t v = 0;
  for (int i = 0; i < 20; i++) {
    if (name[i] < '0' || name[i] > '9')
      return 0;
    unsigned d = (unsigned)(name[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      return 0;
    v = v * 10 + d;
  }
  if (v == 0) /* never written: 0 means "none" in the reader */
    return 0;
  *id = v;
  const char *sfx = name + 20;
  return strcmp(sfx, ".seg") == 0           ? 1
         : strcmp(sfx, ".seg.corrupt") == 0 ? 2
         : strcmp(sfx, ".seg.tmp") == 0     ? 3
                                            : 0;
}

static uint64_t ps__limit(const ps__seg *g) {
  return g->vis < g->stop ? g->vis : g->stop;
}

static const char *ps__why(int st) {
  return st == PS__TORN     ? "torn (the segment ends inside the record)"
         : st == PS__BADLEN ? "invalid record length"
                            : "CRC mismatch";
}

static void ps__path(char *out, size_t cap, const ps_spool *s, uint64_t id) {
  char name[48];
  ps__name(name, sizeof name, id, "");
  snprintf(out, cap, "%s/%s", s->dir, name);
}

static void ps__warn_at(const ps_spool *s, uint64_t id, uint64_t off, const char *msg, const char *why) {
  char path[4200], o[24];
  ps__path(path, sizeof path, s, id);
  snprintf(o, sizeof o, "%" PRIu64, off);
  ps_warn(msg, "file", path, "offset", o, "reason", why);
}

/* Unreadable data found in segment id at off: one warning, one count. */
static void ps__warn_corrupt(const ps_spool *s, uint64_t id, uint64_t off, const char *msg, const char *why) {
  ps_counter_add(ps__m.corrupt, 1);
  ps__warn_at(s, id, off, msg, why);
}

/* Logs a failed system call on segment id; rl (NULL: none) limits a failure that may repeat per append. */
static void ps__error_io(const ps_spool *s, ps_log_ratelimit *rl, const char *msg, uint64_t id, int e) {
  long long sup = 0;
  if (rl && !ps_log_ratelimit_ok(rl, 5000, &sup))
    return;
  char path[4200], n[24];
  ps__path(path, sizeof path, s, id);
  snprintf(n, sizeof n, "%lld", sup);
  ps_error(msg, "file", path, "error", strerror(e), "suppressed", n);
}

static ps_log_ratelimit ps__rl_write, ps__rl_sync, ps__rl_read, ps__rl_create;

static void ps__add(ps_counter *gauge, uint64_t *field, int64_t delta) {
  *field = (uint64_t)((int64_t)*field + delta);
  ps_counter_add(gauge, delta);
}

/* ---------------------------------------------------------------- reading frames */

/* Makes the reader's buffer hold segment bytes [off, off + n) (read from rd_fd, never past limit).
 * Returns 0 and *p, 1 if the file or limit ends first, PS_EIO. */
static int ps__fill(ps_spool *s, uint64_t off, size_t n, uint64_t limit, const unsigned char **p) {
  if (off > limit || n > limit - off)
    return 1;
  if (s->buf_id && s->buf_id == s->rd_fd_id && off >= s->buf_off && off + n <= s->buf_off + s->buf_len) {
    *p = s->buf + (off - s->buf_off);
    return 0;
  }
  size_t want = n > PS__READ_CHUNK ? n : PS__READ_CHUNK;
  if (want > limit - off)
    want = (size_t)(limit - off);
  if (want > s->buf_cap) {
    unsigned char *nb = realloc(s->buf, want);
    if (!nb)
      abort();
    s->buf = nb;
    s->buf_cap = want;
  }
  s->buf_id = 0;
  size_t got = 0;
  while (got < want) {
    ssize_t r = pread(s->rd_fd, s->buf + got, want - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return PS_EIO;
    if (r == 0)
      break;
    got += (size_t)r;
  }
  s->buf_id = s->rd_fd_id;
  s->buf_off = off;
  s->buf_len = got;
  if (got < n)
    return 1;
  *p = s->buf;
  return 0;
}

/* Checks the frame at off (ending by limit) of the segment open in rd_fd: PS__OK with *payload and
 * *len, another PS__* verdict, or PS_EIO. */
static int ps__frame(ps_spool *s, uint64_t off, uint64_t limit, const unsigned char **payload,
                     uint32_t *len) {
  const unsigned char *p;
  int rc = ps__fill(s, off, PS__FRAME, limit, &p);
  if (rc != 0)
    return rc < 0 ? rc : PS__TORN;
  uint32_t n = ps__get32(p), crc = ps__get32(p + 4);
  if (n == 0 || n > PS__MAX_RECORD)
    return PS__BADLEN;
  if ((rc = ps__fill(s, off, PS__FRAME + (size_t)n, limit, &p)) != 0)
    return rc < 0 ? rc : PS__TORN;
  if (ps__crc(p + PS__FRAME, n) != crc)
    return PS__BADCRC;
  *payload = p + PS__FRAME;
  *len = n;
  return PS__OK;
}

/* Points rd_fd at segment id (reader only). */
static int ps__rd_use(ps_spool *s, uint64_t id) {
  if (s->rd_fd_id == id)
    return 0;
  if (s->rd_fd >= 0)
    close(s->rd_fd);
  s->rd_fd_id = 0;
  char name[48];
  ps__name(name, sizeof name, id, "");
  s->rd_fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
  if (s->rd_fd < 0)
    return PS_EIO;
  s->rd_fd_id = id;
  return 0;
}

static void ps__rd_drop(ps_spool *s) {
  if (s->rd_fd >= 0)
    close(s->rd_fd);
  s->rd_fd = -1;
  s->rd_fd_id = 0;
  s->buf_id = 0;
}

/* ---------------------------------------------------------------- segments */

/* Removes a segment's file: renamed aside if it holds data not understood, else deleted. */
static void ps__remove_file(ps_spool *s, uint64_t id, int set_aside) {
  char name[48], aside[48];
  ps__name(name, sizeof name, id, "");
  if (set_aside) {
    ps__name(aside, sizeof aside, id, ".corrupt");
    if (renameat(s->dirfd, name, s->dirfd, aside) != 0)
      ps__error_io(s, NULL, "spool: cannot set a corrupt segment aside", id, errno);
  } else if (unlinkat(s->dirfd, name, 0) != 0) {
    ps__error_io(s, NULL,
                 "spool: cannot delete a delivered segment; its records will be read again at the next open",
                 id, errno);
  }
}

static void ps__append_seg(ps_spool *s, ps__seg *g) {
  if (s->tail)
    s->tail->next = g;
  else
    s->head = g;
  s->tail = g;
  s->nsegs++;
  ps__add(ps__m.bytes, &s->bytes, (int64_t)g->size);
  ps__add(ps__m.records, &s->records, (int64_t)g->nrec);
}

/* Removes the head segment, wholly delivered (mu held; the reader's thread). */
static void ps__dispose_head(ps_spool *s) {
  ps__seg *g = s->head;
  s->head = g->next;
  if (!s->head)
    s->tail = NULL;
  if (s->rd == g)
    s->rd = NULL;
  if (s->rd_fd_id == g->id)
    ps__rd_drop(s);
  if (g->wfd >= 0)
    close(g->wfd);
  if (g->bad) /* counted when it was found */
    ps__warn_at(s, g->id, g->stop,
                "spool: segment delivered up to an unreadable record; set aside as .corrupt",
                "CRC or length mismatch");
  ps__remove_file(s, g->id, g->bad);
  s->nsegs--;
  ps__add(ps__m.bytes, &s->bytes, -(int64_t)g->size); /* its records are committed: no longer counted */
  free(g);
}

/* Every record of g is committed and nothing more can come to it. */
static int ps__delivered(const ps_spool *s, const ps__seg *g) {
  if (!g->sealed || g->vis != g->size)
    return 0;
  uint64_t limit = ps__limit(g);
  if (limit <= PS__HDR)
    return 1; /* nothing readable in it */
  return g->id < s->cm_seg || (g->id == s->cm_seg && s->cm_off >= limit);
}

/* Creates the next segment and makes it the tail (mu held; the old tail, if any, is sealed and synced). */
static int ps__seg_new(ps_spool *s) {
  if (s->tail && s->tail->wfd >= 0) {
    close(s->tail->wfd);
    s->tail->wfd = -1;
  }
  uint64_t id = s->next_id++;
  errno = 0;
  char name[48], tmp[48];
  ps__name(name, sizeof name, id, "");
  ps__name(tmp, sizeof tmp, id, ".tmp");
  int always = s->fsync == PS_SPOOL_FSYNC_ALWAYS, renamed = 0;
  unsigned char hdr[PS__HDR];
  memcpy(hdr, PS__MAGIC, 4);
  ps__put32(hdr + 4, PS__VERSION);
  int fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    goto fail;
  if (pwrite(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr || (always && fdatasync(fd) != 0))
    goto fail;
  if (renameat(s->dirfd, tmp, s->dirfd, name) != 0)
    goto fail;
  renamed = 1;
  if (always && fsync(s->dirfd) != 0) /* the name must last as long as the records acknowledged in it */
    goto fail;
  ps__seg *g = calloc(1, sizeof *g);
  if (!g)
    abort();
  g->id = id;
  g->size = g->vis = PS__HDR;
  g->stop = PS__NOSTOP;
  g->wfd = fd;
  ps__append_seg(s, g);
  return 0;

fail:;
  int e = errno ? errno : EIO;
  ps__error_io(s, &ps__rl_create, "spool: cannot create a segment", id, e);
  if (fd >= 0)
    close(fd);
  unlinkat(s->dirfd, renamed ? name : tmp, 0);
  return PS_EIO;
}

/* ---------------------------------------------------------------- appending */

/* Bytes up to size (lsn, rec) of the tail g became visible (mu held): answers the waiters they cover. */
static void ps__publish(ps_spool *s, ps__seg *g, uint64_t size, uint64_t lsn, uint64_t rec) {
  uint64_t k = rec - s->vrec;
  g->vis = size;
  s->vlsn = lsn;
  s->vrec = rec;
  if (g->stop == PS__NOSTOP) { /* else the reader found this segment unreadable: these are lost with it */
    g->nrec += k;
    ps__add(ps__m.records, &s->records, (int64_t)k);
  }
  while (s->waiters && s->waiters->lsn <= lsn) {
    ps__waiter *w = s->waiters;
    s->waiters = w->next;
    w->done = 1;
    w->rc = 0;
  }
  if (!s->waiters)
    s->waiters_tail = &s->waiters;
  if (s->rd_waiting)
    pthread_cond_broadcast(&s->readable_cv);
}

/* The fdatasync of the tail g failed (mu held): every byte not yet visible is taken back and every
 * waiting appender fails. */
static void ps__discard(ps_spool *s, ps__seg *g, int e) {
  ps__error_io(s, &ps__rl_sync, "spool: fdatasync failed; the appends it covered fail and are taken back",
               g->id, e);
  /* If ftruncate fails too, the bytes stay in the file past vis: not read now, but a later open would find
   * them (records the appender was told failed, read once more: at least once, never lost). */
  if (ftruncate(g->wfd, (off_t)g->vis) != 0)
    ps__error_io(s, NULL, "spool: cannot truncate a segment after a failed fdatasync", g->id, errno);
  ps__add(ps__m.bytes, &s->bytes, -(int64_t)(g->size - g->vis));
  g->size = g->vis;
  g->sealed = 1; /* after a failed fdatasync the file is not trusted with more */
  s->wlsn = s->vlsn;
  s->wrec = s->vrec;
  for (ps__waiter *w = s->waiters; w; w = w->next) {
    w->done = 1;
    w->rc = PS_EIO;
  }
  s->waiters = NULL;
  s->waiters_tail = &s->waiters;
}

/* One step towards everything written being synced (mu held; syncing or vlsn < wlsn): runs a sync round
 * of the tail, or waits for the one in progress. */
static void ps__sync_step(ps_spool *s) {
  if (s->syncing) {
    pthread_cond_wait(&s->sync_cv, &s->mu);
    return;
  }
  ps__seg *g = s->tail;
  uint64_t size = g->size, lsn = s->wlsn, rec = s->wrec;
  int fd = g->wfd;
  s->syncing = 1;
  pthread_mutex_unlock(&s->mu);
  int rc = ps_failpoint("spool.fdatasync") ? (errno = EIO, -1) : fdatasync(fd);
  int e = errno;
  pthread_mutex_lock(&s->mu);
  s->syncing = 0;
  if (rc == 0)
    ps__publish(s, g, size, lsn, rec);
  else
    ps__discard(s, g, e);
  pthread_cond_broadcast(&s->sync_cv);
}

/* pwritev of all of iov at off, in pieces of at most IOV_MAX; iov is consumed. 0 or -1 (errno). */
static int ps__pwritev_all(int fd, struct iovec *iov, size_t cnt, uint64_t off) {
  while (cnt > 0) {
    int k = cnt < (size_t)IOV_MAX ? (int)cnt : IOV_MAX;
    ssize_t w = pwritev(fd, iov, k, (off_t)off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -1;
    if (w == 0) {
      errno = EIO;
      return -1;
    }
    off += (uint64_t)w;
    size_t left = (size_t)w;
    while (cnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt > 0) {
      iov->iov_base = (char *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

int ps_spool_append(ps_spool *s, const struct iovec *recs, size_t n) {
  if (!s || !recs || n == 0)
    return PS_EINVAL;
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (recs[i].iov_len == 0 || recs[i].iov_len > PS__MAX_RECORD || !recs[i].iov_base)
      return PS_EINVAL;
    total += PS__FRAME + recs[i].iov_len;
  }
  if (total > s->max_bytes) { /* never fits */
    ps_counter_add(ps__m.full, 1);
    return PS_EFULL;
  }
  unsigned char hdr_stack[PS__STACK_RECS][PS__FRAME];
  struct iovec iov_stack[2 * PS__STACK_RECS];
  unsigned char(*hdrs)[PS__FRAME] = hdr_stack;
  struct iovec *iov = iov_stack;
  if (n > PS__STACK_RECS) {
    hdrs = malloc(n * sizeof *hdrs);
    iov = malloc(2 * n * sizeof *iov);
    if (!hdrs || !iov)
      abort();
  }
  for (size_t i = 0; i < n; i++) {
    ps__put32(hdrs[i], (uint32_t)recs[i].iov_len);
    ps__put32(hdrs[i] + 4, ps__crc(recs[i].iov_base, recs[i].iov_len));
    iov[2 * i] = (struct iovec){hdrs[i], PS__FRAME};
    iov[2 * i + 1] = recs[i];
  }

  int rc = 0;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    int fresh = !s->tail || s->tail->sealed;
    if (s->bytes + total + (fresh ? PS__HDR : 0) > s->max_bytes) {
      ps_counter_add(ps__m.full, 1);
      rc = PS_EFULL;
      goto unlock;
    }
    if (!fresh)
      break;
    if (s->syncing || s->vlsn < s->wlsn) { /* the sealed tail still has a round due: settle it first */
      ps__sync_step(s);
      continue;
    }
    if ((rc = ps__seg_new(s)) != 0)
      goto unlock;
  }
  ps__seg *g = s->tail;
  int w = ps_failpoint("spool.write") ? (errno = EIO, -1) : ps__pwritev_all(g->wfd, iov, 2 * n, g->size);
  if (w != 0) {
    int e = errno;
    ps__error_io(s, &ps__rl_write, "spool: write failed; the append fails", g->id, e);
    if (ftruncate(g->wfd, (off_t)g->size) != 0)
      g->sealed = 1; /* what the write left past size is never read now; appends go elsewhere */
    rc = PS_EIO;
    goto unlock;
  }
  g->size += total;
  ps__add(ps__m.bytes, &s->bytes, (int64_t)total);
  s->wlsn += total;
  s->wrec += n;
  if (g->size >= s->segment_bytes)
    g->sealed = 1;
  if (s->fsync == PS_SPOOL_FSYNC_NEVER) {
    ps__publish(s, g, g->size, s->wlsn, s->wrec);
  } else {
    ps__waiter me = {NULL, s->wlsn, 0, 0};
    *s->waiters_tail = &me;
    s->waiters_tail = &me.next;
    while (!me.done)
      ps__sync_step(s);
    rc = me.rc;
  }
unlock:
  pthread_mutex_unlock(&s->mu);
  if (rc == 0)
    ps_counter_add(ps__m.appended, (int64_t)n);
  if (hdrs != hdr_stack) {
    free(hdrs);
    free(iov);
  }
  return rc;
}

/* ---------------------------------------------------------------- reading */

/* The reader found the frame at off of g unreadable (mu held): the rest of g is lost. */
static void ps__cut(ps_spool *s, ps__seg *g, uint64_t off, int st) {
  g->stop = off;
  g->bad = st != PS__TORN;
  g->sealed = 1;
  uint64_t lost = g->nrec - s->rd_idx;
  g->nrec = s->rd_idx;
  ps__add(ps__m.records, &s->records, -(int64_t)lost);
  ps__warn_corrupt(s, g->id, off, "spool: unreadable record; the rest of the segment is skipped",
                   ps__why(st));
}

int ps_spool_next(ps_spool *s, const void **data, size_t *len, ps_spool_pos *end) {
  pthread_mutex_lock(&s->mu);
  for (;;) {
    if (!s->rd) {
      if (!s->head)
        break;
      s->rd = s->head;
      s->rd_off = PS__HDR;
      s->rd_idx = 0;
    }
    ps__seg *g = s->rd;
    uint64_t limit = ps__limit(g), off = s->rd_off;
    if (off < limit) {
      /* Only this thread removes segments, and bytes below limit never change: read unlocked. */
      pthread_mutex_unlock(&s->mu);
      const unsigned char *p = NULL;
      uint32_t n = 0;
      int st = ps__rd_use(s, g->id);
      if (st == 0)
        st = ps__frame(s, off, limit, &p, &n);
      int e = errno;
      pthread_mutex_lock(&s->mu);
      if (st < 0) {
        ps__error_io(s, &ps__rl_read, "spool: read failed", g->id, e);
        pthread_mutex_unlock(&s->mu);
        return PS_EIO;
      }
      if (st != PS__OK) {
        ps__cut(s, g, off, st);
        continue;
      }
      if (s->ring_len == s->ring_cap) {
        size_t cap = s->ring_cap ? 2 * s->ring_cap : 64;
        ps__end *r = malloc(cap * sizeof *r);
        if (!r)
          abort();
        for (size_t i = 0; i < s->ring_len; i++)
          r[i] = s->ring[(s->ring_head + i) % s->ring_cap];
        free(s->ring);
        s->ring = r;
        s->ring_cap = cap;
        s->ring_head = 0;
      }
      uint64_t e_off = off + PS__FRAME + n;
      s->ring[(s->ring_head + s->ring_len++) % s->ring_cap] = (ps__end){g->id, e_off};
      s->rd_off = e_off;
      s->rd_idx++;
      pthread_mutex_unlock(&s->mu);
      *data = p;
      *len = n;
      *end = (ps_spool_pos){g->id, e_off};
      return 0;
    }
    if (g->next) {
      s->rd = g->next;
      s->rd_off = PS__HDR;
      s->rd_idx = 0;
      continue;
    }
    /* At the end of all that was written to the tail: seal it, so that it can be finished and deleted. */
    if (!g->sealed && off == g->size && g->size > PS__HDR)
      g->sealed = 1;
    break;
  }
  pthread_mutex_unlock(&s->mu);
  return PS_EAGAIN;
}

void ps_spool_commit(ps_spool *s, ps_spool_pos pos) {
  pthread_mutex_lock(&s->mu);
  uint64_t k = 0;
  while (s->ring_len > 0) {
    const ps__end *e = &s->ring[s->ring_head];
    if (e->seg > pos.segment || (e->seg == pos.segment && e->off > pos.offset))
      break;
    if (e->seg != s->cm_seg) {
      s->cm_seg = e->seg;
      s->cm_idx = 0;
    }
    s->cm_idx++;
    s->cm_off = e->off;
    s->ring_head = (s->ring_head + 1) % s->ring_cap;
    s->ring_len--;
    k++;
  }
  ps__add(ps__m.records, &s->records, -(int64_t)k);
  ps_counter_add(ps__m.committed, (int64_t)k);
  while (s->head && ps__delivered(s, s->head))
    ps__dispose_head(s);
  pthread_mutex_unlock(&s->mu);
}

void ps_spool_rewind(ps_spool *s) {
  pthread_mutex_lock(&s->mu);
  s->ring_head = s->ring_len = 0;
  if (s->head && s->head->id == s->cm_seg) {
    s->rd = s->head;
    s->rd_off = s->cm_off;
    s->rd_idx = s->cm_idx;
  } else {
    s->rd = NULL; /* everything before the head is committed and gone */
  }
  pthread_mutex_unlock(&s->mu);
}

/* A record is readable from the reader's position (mu held). */
static int ps__readable(const ps_spool *s) {
  const ps__seg *g = s->rd ? s->rd : s->head;
  uint64_t off = s->rd ? s->rd_off : PS__HDR;
  for (; g; g = g->next, off = PS__HDR)
    if (off < ps__limit(g))
      return 1;
  return 0;
}

int ps_spool_wait(ps_spool *s, int timeout_ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t deadline = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (int64_t)timeout_ms * 1000000;
  struct timespec dl = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
  int r = 0;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    if ((r = ps__readable(s)) != 0)
      break;
    if (s->wake) {
      s->wake = 0;
      break;
    }
    s->rd_waiting = 1;
    int t = timeout_ms < 0 ? pthread_cond_wait(&s->readable_cv, &s->mu)
                           : pthread_cond_timedwait(&s->readable_cv, &s->mu, &dl);
    s->rd_waiting = 0;
    if (t == ETIMEDOUT) {
      r = ps__readable(s);
      break;
    }
  }
  pthread_mutex_unlock(&s->mu);
  return r;
}

void ps_spool_wake(ps_spool *s) {
  pthread_mutex_lock(&s->mu);
  s->wake = 1;
  pthread_cond_broadcast(&s->readable_cv);
  pthread_mutex_unlock(&s->mu);
}

void ps_spool_stats_get(ps_spool *s, ps_spool_stats *st) {
  pthread_mutex_lock(&s->mu);
  st->bytes = s->bytes;
  st->records = s->records;
  st->segments = s->nsegs;
  pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- open and close */

/* Checks segment id and adds what is readable of it to the list. 0, or PS_EIO if it cannot be read. */
static int ps__scan_seg(ps_spool *s, uint64_t id, char *err, size_t errlen) {
  char name[48];
  ps__name(name, sizeof name, id, "");
  int rc = ps__rd_use(s, id);
  struct stat sb;
  if (rc != 0 || fstat(s->rd_fd, &sb) != 0) {
    ps__err(err, errlen, "spool: %s/%s: %s", s->dir, name, strerror(errno));
    return PS_EIO;
  }
  uint64_t size = (uint64_t)sb.st_size;
  const unsigned char *p;
  rc = ps__fill(s, 0, PS__HDR, size, &p);
  if (rc < 0)
    goto io;
  if (rc > 0 || memcmp(p, PS__MAGIC, 4) != 0 || ps__get32(p + 4) != PS__VERSION) {
    ps__rd_drop(s);
    ps__warn_corrupt(s, id, 0, "spool: segment header not understood; set aside as .corrupt", "bad header");
    ps__remove_file(s, id, 1);
    return 0;
  }
  uint64_t off = PS__HDR, nrec = 0;
  int st = PS__OK;
  while (off < size) {
    uint32_t n;
    if ((st = ps__frame(s, off, size, &p, &n)) < 0)
      goto io;
    if (st != PS__OK)
      break;
    nrec++;
    off += PS__FRAME + n;
  }
  ps__rd_drop(s);
  if (st != PS__OK)
    ps__warn_corrupt(s, id, off, "spool: unreadable record; the rest of the segment is skipped", ps__why(st));
  int bad = st == PS__BADLEN || st == PS__BADCRC;
  if (nrec == 0) { /* nothing to deliver: done with at once */
    ps__remove_file(s, id, bad);
    return 0;
  }
  ps__seg *g = calloc(1, sizeof *g);
  if (!g)
    abort();
  g->id = id;
  g->size = g->vis = size;
  g->stop = st == PS__OK ? PS__NOSTOP : off;
  g->bad = bad;
  g->nrec = nrec;
  g->sealed = 1; /* appends go to a new segment */
  g->wfd = -1;
  ps__append_seg(s, g);
  return 0;
io:
  ps__err(err, errlen, "spool: %s/%s: read failed: %s", s->dir, name, strerror(errno));
  ps__rd_drop(s);
  return PS_EIO;
}

static int ps__cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int ps__scan(ps_spool *s, char *err, size_t errlen) {
  int fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    ps__err(err, errlen, "spool: %s: %s", s->dir, strerror(errno));
    if (fd >= 0)
      close(fd);
    return PS_EIO;
  }
  uint64_t *ids = NULL, maxid = 0;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    uint64_t id;
    int kind = ps__parse_name(e->d_name, &id);
    if (kind == 0)
      continue;
    if (id > maxid)
      maxid = id;
    if (kind == 3) { /* a creation cut short: at most a header */
      unlinkat(s->dirfd, e->d_name, 0);
    } else if (kind == 1) {
      if (n == cap) {
        cap = cap ? 2 * cap : 64;
        ids = realloc(ids, cap * sizeof *ids);
        if (!ids)
          abort();
      }
      ids[n++] = id;
    }
  }
  closedir(d);
  if (n)
    qsort(ids, n, sizeof *ids, ps__cmp_u64);
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++)
    rc = ps__scan_seg(s, ids[i], err, errlen);
  free(ids);
  s->next_id = maxid + 1;
  return rc;
}

int ps_spool_open(const ps_spool_options *opt, ps_spool **out, char *err, size_t errlen) {
  if (out)
    *out = NULL;
  if (!opt || !out || !opt->dir || !*opt->dir ||
      (opt->fsync != PS_SPOOL_FSYNC_ALWAYS && opt->fsync != PS_SPOOL_FSYNC_NEVER)) {
    ps__err(err, errlen, "spool: invalid options (a directory and an fsync mode are needed)");
    return PS_EINVAL;
  }
  pthread_once(&ps__m_once, ps__metrics_register);
  ps_spool *s = calloc(1, sizeof *s);
  if (!s)
    abort();
  s->dir = strdup(opt->dir);
  if (!s->dir)
    abort();
  s->dirfd = s->lockfd = s->rd_fd = -1;
  s->max_bytes = opt->max_bytes ? opt->max_bytes : PS__DEFAULT_MAX_BYTES;
  s->segment_bytes = opt->segment_bytes ? opt->segment_bytes : PS__DEFAULT_SEGMENT_BYTES;
  s->fsync = opt->fsync;
  s->waiters_tail = &s->waiters;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->sync_cv, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->readable_cv, &ca);
  pthread_condattr_destroy(&ca);

  int rc = PS_EIO;
  if (mkdir(s->dir, 0700) != 0 && errno != EEXIST) {
    ps__err(err, errlen, "spool: cannot create %s: %s", s->dir, strerror(errno));
    goto cleanup;
  }
  s->dirfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (s->dirfd < 0) {
    ps__err(err, errlen, "spool: %s: %s", s->dir, strerror(errno));
    goto cleanup;
  }
  /* flock, not fcntl: it also keeps a second open in this process off the directory. */
  s->lockfd = openat(s->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s->lockfd < 0 || flock(s->lockfd, LOCK_EX | LOCK_NB) != 0) {
    ps__err(err, errlen, "spool: %s/lock: %s", s->dir,
            s->lockfd >= 0 && errno == EWOULDBLOCK ? "held: another spool has this directory open"
                                                   : strerror(errno));
    goto cleanup;
  }
  if ((rc = ps__scan(s, err, errlen)) != 0)
    goto cleanup;
  *out = s;
  return 0;

cleanup:
  ps_spool_close(s);
  return rc;
}

void ps_spool_close(ps_spool *s) {
  if (!s)
    return;
  while (s->head) {
    ps__seg *g = s->head;
    s->head = g->next;
    if (g->wfd >= 0)
      close(g->wfd);
    free(g);
  }
  ps_counter_add(ps__m.bytes, -(int64_t)s->bytes);
  ps_counter_add(ps__m.records, -(int64_t)s->records);
  ps__rd_drop(s);
  if (s->lockfd >= 0)
    close(s->lockfd); /* releases the flock */
  if (s->dirfd >= 0)
    close(s->dirfd);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->sync_cv);
  pthread_cond_destroy(&s->readable_cv);
  free(s->buf);
  free(s->ring);
  free(s->dir);
  free(s);
}
