/*
 * ps_demo: descriptor-driven random events (see ps_demo.h).
 *
 * Values are picked by field type, then refined by words in the field's name:
 * a table of (word, generator) pairs, first match wins. The words describe
 * kinds of data (currency, price, position, page, id), never event types, so
 * a new event type gets plausible values from its field names alone and, at
 * worst, generic ones. Randomness is splitmix64: fast, seedable, good enough.
 */
#include "cli/ps_demo.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PS__MAX_TYPES 256
#define PS__MAX_DEPTH 3

struct ps_demo {
  uint64_t rng;
  char *prefix;
  uint64_t next_id;
  const ProtobufCFieldDescriptor *types[PS__MAX_TYPES]; /* the oneof's message members */
  size_t ntypes;
  size_t order[PS__MAX_TYPES]; /* this round's order of types */
  size_t pos;                  /* next index into order */
};

static uint64_t ps__rand(ps_demo *d) {
  uint64_t z = (d->rng += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static int64_t ps__range(ps_demo *d, int64_t lo, int64_t hi) {
  return lo + (int64_t)(ps__rand(d) % (uint64_t)(hi - lo + 1));
}

/* Uniform in [0, 1). */
static double ps__unit(ps_demo *d) {
  return (double)(ps__rand(d) >> 11) / 9007199254740992.0;
}

static const char *ps__pick(ps_demo *d, const char *const *pool, size_t n) {
  return pool[ps__rand(d) % n];
}
#define PS__PICK(d, pool) ps__pick((d), (pool), sizeof(pool) / sizeof(pool)[0])

static char *ps__astr(ps_arena *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = ps_arena_alloc(a, n);
  memcpy(p, s, n);
  return p;
}

static char *ps__astrf(ps_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *ps__astrf(ps_arena *a, const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return ps__astr(a, buf);
}

/* ------------------------------------------------------------ strings */

static const char *const ps__pages[] = {"home",
                                        "search",
                                        "category/shoes",
                                        "category/electronics",
                                        "product/48213",
                                        "product/10077",
                                        "cart",
                                        "checkout",
                                        "checkout/payment",
                                        "order/confirmation",
                                        "profile",
                                        "orders",
                                        "wishlist",
                                        "deals",
                                        "category/groceries",
                                        "help"};
static const char *const ps__currencies[] = {"USD", "USD", "EUR", "INR", "INR", "GBP", "JPY", "BRL", "AED"};
static const char *const ps__sources[] = {"organic", "push_notification", "deeplink", "paid_search",
                                          "email",   "referral",          "widget",   "home_screen"};
static const char *const ps__clients[] = {"android-app", "ios-app", "web", "mweb"};
static const char *const ps__os[] = {"android", "android", "ios", "ios", "web"};
static const char *const ps__campaigns[] = {"summer_sale", "black_friday", "new_user", "retarget_7d",
                                            "diwali_2026"};
static const char *const ps__queries[] = {"running shoes",    "iphone case", "basmati rice", "usb-c cable",
                                          "wireless earbuds", "kurta",       "coffee beans"};
static const char *const ps__sorts[] = {"price_asc", "price_desc", "popular", "newest", "rating"};
static const char *const ps__categories[] = {"shoes", "electronics", "groceries", "fashion", "home", "toys"};
static const char *const ps__langs[] = {"en", "hi", "es", "de", "pt", "ar"};
static const char *const ps__words[] = {"alpha", "blue", "quick", "prime", "daily", "flash", "mega", "smart"};
static const char *const ps__param_keys[] = {"utm_source", "utm_medium", "utm_campaign", "q",
                                             "sort",       "category",   "ref",          "lang"};

static char *ps__uuid(ps_demo *d, ps_arena *a) {
  uint64_t x = ps__rand(d), y = ps__rand(d);
  return ps__astrf(a, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(x >> 32), (unsigned)(x >> 16) & 0xffff,
                   (unsigned)x & 0xfff, (unsigned)(0x8000 | ((y >> 48) & 0x3fff)),
                   (unsigned long long)(y & 0xffffffffffffULL));
}

/* An id for a field called "<stem>Id" or "<stem>Ids": "<stem>-<n>", stem in lower case. */
static char *ps__id_like(ps_demo *d, ps_arena *a, const char *name) {
  char stem[64];
  size_t n = strlen(name);
  size_t cut = n >= 3 && tolower((unsigned char)name[n - 1]) == 's' ? n - 3 : n >= 2 ? n - 2 : n;
  if (cut == 0 || cut >= sizeof stem)
    cut = n < sizeof stem ? n : sizeof stem - 1;
  size_t k = 0;
  for (size_t i = 0; i < cut; i++)
    if (isalnum((unsigned char)name[i]))
      stem[k++] = (char)tolower((unsigned char)name[i]);
  stem[k] = '\0';
  return ps__astrf(a, "%s-%lld", k ? stem : "id", (long long)ps__range(d, 1, 99999));
}

static int ps__has(const char *lname, const char *word) {
  return strstr(lname, word) != NULL;
}

static int ps__ends(const char *lname, const char *suffix) {
  size_t n = strlen(lname), k = strlen(suffix);
  return n >= k && strcmp(lname + n - k, suffix) == 0;
}

/* A string for a field named name (lname: the same in lower case). */
static char *ps__string(ps_demo *d, ps_arena *a, const char *name, const char *lname) {
  if (ps__has(lname, "currency"))
    return ps__astr(a, PS__PICK(d, ps__currencies));
  if (ps__has(lname, "session") || ps__has(lname, "device") || ps__has(lname, "uuid"))
    return ps__uuid(d, a);
  if (ps__has(lname, "client"))
    return ps__astr(a, PS__PICK(d, ps__clients));
  if (strcmp(lname, "os") == 0 || ps__has(lname, "platform"))
    return ps__astr(a, PS__PICK(d, ps__os));
  if (ps__has(lname, "version"))
    return ps__astrf(a, "%lld.%lld.%lld", (long long)ps__range(d, 1, 9), (long long)ps__range(d, 0, 30),
                     (long long)ps__range(d, 0, 99));
  if (ps__has(lname, "referrer") || ps__has(lname, "referer")) {
    if (ps__unit(d) < 0.3)
      return ps__astr(a, ""); /* opened directly */
    return ps__astr(a, PS__PICK(d, ps__pages));
  }
  if (ps__has(lname, "url") || ps__has(lname, "link"))
    return ps__astrf(a, "https://shop.example.com/%s", PS__PICK(d, ps__pages));
  if (ps__has(lname, "page") || ps__has(lname, "screen"))
    return ps__astr(a, PS__PICK(d, ps__pages));
  if (ps__has(lname, "source") || ps__has(lname, "medium") || ps__has(lname, "channel") ||
      strcmp(lname, "ref") == 0)
    return ps__astr(a, PS__PICK(d, ps__sources));
  if (ps__has(lname, "campaign"))
    return ps__astr(a, PS__PICK(d, ps__campaigns));
  if (strcmp(lname, "q") == 0 || ps__has(lname, "query") || ps__has(lname, "search"))
    return ps__astr(a, PS__PICK(d, ps__queries));
  if (ps__has(lname, "sort"))
    return ps__astr(a, PS__PICK(d, ps__sorts));
  if (ps__has(lname, "category"))
    return ps__astr(a, PS__PICK(d, ps__categories));
  if (ps__has(lname, "lang") || ps__has(lname, "locale"))
    return ps__astr(a, PS__PICK(d, ps__langs));
  if (ps__has(lname, "email"))
    return ps__astrf(a, "user%lld@example.com", (long long)ps__range(d, 1, 999999));
  if (ps__ends(lname, "id") || ps__ends(lname, "ids"))
    return ps__id_like(d, a, name);
  return ps__astrf(a, "%s-%lld", PS__PICK(d, ps__words), (long long)ps__range(d, 1, 999));
}

/* ------------------------------------------------------------ numbers */

static int64_t ps__integer(ps_demo *d, const char *lname, int is_64) {
  if (ps__has(lname, "position") || ps__has(lname, "index") || ps__has(lname, "rank") ||
      ps__has(lname, "slot"))
    return ps__range(d, 0, 19);
  if (ps__has(lname, "user") || ps__has(lname, "customer") || ps__has(lname, "account"))
    return ps__range(d, 10000, 9999999);
  if (ps__has(lname, "quantity") || ps__has(lname, "qty") || ps__has(lname, "count"))
    return ps__unit(d) < 0.6 ? 1 : ps__range(d, 2, 5);
  if (ps__ends(lname, "ms") || ps__has(lname, "duration") || ps__has(lname, "latency") ||
      ps__has(lname, "elapsed"))
    return ps__range(d, 80, 4000);
  if (ps__has(lname, "year"))
    return ps__range(d, 2015, 2026);
  if (strcmp(lname, "age") == 0 || ps__ends(lname, "_age"))
    return ps__range(d, 18, 70);
  if (ps__has(lname, "price") || ps__has(lname, "amount") || ps__has(lname, "cents"))
    return ps__range(d, 99, 500000);
  if (is_64 && (ps__has(lname, "time") || ps__ends(lname, "at")))
    return (int64_t)time(NULL) * 1000 - ps__range(d, 0, 600000);
  return ps__range(d, 0, 999);
}

static double ps__double(ps_demo *d, const char *lname) {
  if (ps__has(lname, "price") || ps__has(lname, "amount") || ps__has(lname, "total") ||
      ps__has(lname, "value") || ps__has(lname, "revenue") || ps__has(lname, "cost")) {
    double v = exp(log(0.99) + ps__unit(d) * (log(2999.99) - log(0.99))); /* many cheap, few dear */
    return round(v * 100) / 100;
  }
  if (ps__has(lname, "lat"))
    return round((ps__unit(d) * 130 - 60) * 1e6) / 1e6;
  if (ps__has(lname, "lon") || ps__has(lname, "lng"))
    return round((ps__unit(d) * 360 - 180) * 1e6) / 1e6;
  if (ps__has(lname, "rating") || ps__has(lname, "score"))
    return (double)ps__range(d, 10, 50) / 10;
  if (ps__has(lname, "ratio") || ps__has(lname, "rate") || ps__has(lname, "percent") ||
      ps__has(lname, "discount"))
    return (double)ps__range(d, 0, 100) / 100;
  return round(ps__unit(d) * 100000) / 100;
}

/* ------------------------------------------------------------- fields */

#define PS__AT(type, m, off) ((type *)((char *)(m) + (off)))

static void ps__fill(ps_demo *d, ps_arena *a, ProtobufCMessage *m, int depth);

static int ps__is_map_entry(const ProtobufCMessageDescriptor *md) {
  return md->n_fields == 2 && strcmp(md->fields[0].name, "key") == 0 &&
         strcmp(md->fields[1].name, "value") == 0 && ps__ends(md->name, "Entry");
}

static size_t ps__elem_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: return 8;
  case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
  case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
  case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
  case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
  default: return 4; /* 32-bit integers */
  }
}

static ProtobufCMessage *ps__new_msg(ps_demo *d, ps_arena *a, const ProtobufCMessageDescriptor *md,
                                     int depth) {
  ProtobufCMessage *sub = ps_arena_alloc(a, md->sizeof_message);
  md->message_init(sub);
  if (depth < PS__MAX_DEPTH)
    ps__fill(d, a, sub, depth + 1);
  return sub;
}

/* Writes one random value of field f (of a message named by name/lname) at p. */
static void ps__value(ps_demo *d, ps_arena *a, const ProtobufCFieldDescriptor *f, const char *lname, void *p,
                      int depth) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING: *(char **)p = ps__string(d, a, f->name, lname); break;
  case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)p = (protobuf_c_boolean)(ps__rand(d) & 1); break;
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: *(int32_t *)p = (int32_t)ps__integer(d, lname, 0); break;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: *(int64_t *)p = ps__integer(d, lname, 1); break;
  case PROTOBUF_C_TYPE_DOUBLE: *(double *)p = ps__double(d, lname); break;
  case PROTOBUF_C_TYPE_FLOAT: *(float *)p = (float)ps__double(d, lname); break;
  case PROTOBUF_C_TYPE_ENUM: {
    const ProtobufCEnumDescriptor *e = f->descriptor;
    /* Value 0 is the proto3 "unspecified" by convention: pick another when there is one. */
    if (e->n_values > 1)
      *(int *)p = e->values[1 + ps__rand(d) % (e->n_values - 1)].value;
    else if (e->n_values == 1)
      *(int *)p = e->values[0].value;
    break;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    ProtobufCBinaryData *b = p;
    b->len = (size_t)ps__range(d, 8, 16);
    b->data = ps_arena_alloc(a, b->len);
    for (size_t i = 0; i < b->len; i++)
      b->data[i] = (uint8_t)ps__rand(d);
    break;
  }
  case PROTOBUF_C_TYPE_MESSAGE: *(ProtobufCMessage **)p = ps__new_msg(d, a, f->descriptor, depth); break;
  }
}

/* A map<string, V>: a few distinct query-parameter-like keys; other maps: generic entries. */
static void ps__map(ps_demo *d, ps_arena *a, const ProtobufCFieldDescriptor *f, ProtobufCMessage *m,
                    int depth) {
  const ProtobufCMessageDescriptor *ed = f->descriptor;
  size_t n = (size_t)(ps__unit(d) < 0.35 ? 0 : ps__range(d, 1, 3));
  ProtobufCMessage **v = ps_arena_alloc(a, (n ? n : 1) * sizeof *v);
  size_t used = 0;
  size_t first = (size_t)(ps__rand(d) % (sizeof ps__param_keys / sizeof ps__param_keys[0]));
  for (size_t i = 0; i < n; i++) {
    ProtobufCMessage *e = ps_arena_alloc(a, ed->sizeof_message);
    ed->message_init(e);
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    const char *key = NULL;
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
      key = ps__param_keys[(first + i) % (sizeof ps__param_keys / sizeof ps__param_keys[0])];
      *PS__AT(char *, e, kf->offset) = ps__astr(a, key);
    } else {
      ps__value(d, a, kf, "key", PS__AT(char, e, kf->offset), depth);
    }
    ps__value(d, a, vf, key ? key : "value", PS__AT(char, e, vf->offset), depth);
    v[used++] = e;
  }
  *PS__AT(size_t, m, f->quantifier_offset) = used;
  *PS__AT(ProtobufCMessage **, m, f->offset) = v;
}

static void ps__repeated(ps_demo *d, ps_arena *a, const ProtobufCFieldDescriptor *f, const char *lname,
                         ProtobufCMessage *m, int depth) {
  if (f->type == PROTOBUF_C_TYPE_MESSAGE && ps__is_map_entry(f->descriptor)) {
    ps__map(d, a, f, m, depth);
    return;
  }
  size_t n = f->type == PROTOBUF_C_TYPE_MESSAGE && depth >= PS__MAX_DEPTH ? 0 : (size_t)ps__range(d, 1, 4);
  size_t es = ps__elem_size(f->type);
  char *v = ps_arena_alloc(a, (n ? n : 1) * es);
  for (size_t i = 0; i < n; i++)
    ps__value(d, a, f, lname, v + i * es, depth);
  *PS__AT(size_t, m, f->quantifier_offset) = n;
  *PS__AT(void *, m, f->offset) = v;
}

static void ps__fill(ps_demo *d, ps_arena *a, ProtobufCMessage *m, int depth) {
  const ProtobufCMessageDescriptor *md = m->descriptor;
  for (unsigned i = 0; i < md->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &md->fields[i];
    char lname[128];
    size_t k = 0;
    for (; f->name[k] && k < sizeof lname - 1; k++)
      lname[k] = (char)tolower((unsigned char)f->name[k]);
    lname[k] = '\0';
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      /* One member per oneof: at its first member, pick one of them all. */
      uint32_t *c = PS__AT(uint32_t, m, f->quantifier_offset);
      if (*c != 0)
        continue;
      unsigned members[64], nm = 0;
      for (unsigned j = i; j < md->n_fields && nm < 64; j++)
        if ((md->fields[j].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            md->fields[j].quantifier_offset == f->quantifier_offset)
          members[nm++] = j;
      const ProtobufCFieldDescriptor *pick = &md->fields[members[ps__rand(d) % nm]];
      if (pick->type == PROTOBUF_C_TYPE_MESSAGE && depth >= PS__MAX_DEPTH)
        continue;
      char pl[128];
      size_t pk = 0;
      for (; pick->name[pk] && pk < sizeof pl - 1; pk++)
        pl[pk] = (char)tolower((unsigned char)pick->name[pk]);
      pl[pk] = '\0';
      ps__value(d, a, pick, pl, PS__AT(char, m, pick->offset), depth);
      *c = pick->id;
      continue;
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      ps__repeated(d, a, f, lname, m, depth);
      continue;
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth >= PS__MAX_DEPTH)
      continue;
    ps__value(d, a, f, lname, PS__AT(char, m, f->offset), depth);
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
        f->type != PROTOBUF_C_TYPE_STRING && f->quantifier_offset)
      *PS__AT(protobuf_c_boolean, m, f->quantifier_offset) = 1;
  }
}

void ps_demo_fill(ps_demo *d, ps_arena *a, ProtobufCMessage *m) {
  ps__fill(d, a, m, 0);
}

/* ------------------------------------------------------------- events */

ps_demo *ps_demo_create(uint64_t seed, const char *id_prefix) {
  ps_demo *d = calloc(1, sizeof *d);
  if (!d)
    abort();
  d->rng = seed;
  d->prefix = strdup(id_prefix ? id_prefix : "demo");
  if (!d->prefix)
    abort();
  const ProtobufCMessageDescriptor *ed = &event__event__descriptor;
  for (unsigned i = 0; i < ed->n_fields && d->ntypes < PS__MAX_TYPES; i++)
    if ((ed->fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && ed->fields[i].type == PROTOBUF_C_TYPE_MESSAGE)
      d->types[d->ntypes++] = &ed->fields[i];
  d->pos = d->ntypes; /* a fresh order on the first event */
  return d;
}

void ps_demo_destroy(ps_demo *d) {
  if (!d)
    return;
  free(d->prefix);
  free(d);
}

size_t ps_demo_type_count(const ps_demo *d) {
  return d->ntypes;
}

/* The next type in turn: a new random order every round, so every type comes once per round. */
static const ProtobufCFieldDescriptor *ps__next_type(ps_demo *d) {
  if (d->pos == d->ntypes) {
    for (size_t i = 0; i < d->ntypes; i++)
      d->order[i] = i;
    for (size_t i = d->ntypes; i > 1; i--) {
      size_t j = (size_t)(ps__rand(d) % i);
      size_t t = d->order[i - 1];
      d->order[i - 1] = d->order[j];
      d->order[j] = t;
    }
    d->pos = 0;
  }
  return d->types[d->order[d->pos++]];
}

/* A client's clock reading: RFC 3339 with milliseconds mostly, epoch milliseconds otherwise. */
static char *ps__timestamp(ps_demo *d, ps_arena *a, int64_t now_ms) {
  int64_t ms = now_ms - ps__range(d, 0, 300000); /* sent up to five minutes after it happened */
  if (ps__unit(d) < 0.25)
    return ps__astrf(a, "%lld", (long long)ms);
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  return ps__astrf(a, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                   tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

int ps_demo_type_index(const ps_demo *d, const char *name) {
  for (size_t i = 0; i < d->ntypes; i++) {
    const ProtobufCMessageDescriptor *md = d->types[i]->descriptor;
    if (strcmp(md->short_name, name) == 0 || strcmp(d->types[i]->name, name) == 0)
      return (int)i;
  }
  return -1;
}

/* n events with a header; event k of type types[k], or of the next type in turn without types. */
static Event__Events *ps__batch(ps_demo *d, ps_arena *a, size_t n, const size_t *types) {
  Event__Events *evs = ps_arena_alloc(a, sizeof *evs);
  event__events__init(evs);
  Event__Header *h = ps_arena_alloc(a, sizeof *h);
  event__header__init(h);
  ps__fill(d, a, &h->base, 0);
  evs->header = h;
  evs->events = ps_arena_alloc(a, (n ? n : 1) * sizeof *evs->events);
  evs->n_events = n;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  for (size_t i = 0; i < n; i++) {
    Event__Event *ev = ps_arena_alloc(a, sizeof *ev);
    event__event__init(ev);
    ev->id = ps__astrf(a, "%s-%llu", d->prefix, (unsigned long long)++d->next_id);
    ev->timestamp = ps__timestamp(d, a, now_ms);
    if (d->ntypes) {
      const ProtobufCFieldDescriptor *f = types ? d->types[types[i] % d->ntypes] : ps__next_type(d);
      *PS__AT(ProtobufCMessage *, ev, f->offset) = ps__new_msg(d, a, f->descriptor, 0);
      *PS__AT(uint32_t, ev, f->quantifier_offset) = f->id;
    }
    evs->events[i] = ev;
  }
  return evs;
}

Event__Events *ps_demo_batch(ps_demo *d, ps_arena *a, size_t n) {
  return ps__batch(d, a, n, NULL);
}

Event__Events *ps_demo_batch_typed(ps_demo *d, ps_arena *a, size_t n, const size_t *types) {
  return ps__batch(d, a, n, types);
}
