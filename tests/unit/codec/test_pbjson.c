/*
 * Unit tests of ps_pbjson: the proto3 JSON encoder and decoder and the UTF-8
 * checks.
 *
 * The encoder is held to two references. Goldens (tests/golden, written by
 * Google's Python protobuf, see tests/golden/README.md) pin down which fields
 * appear, their names, order and values; they are compared as parsed JSON,
 * order included, since Python spells numbers and spaces differently from Go.
 * Byte-exact vectors pin down the spelling Go's protojson uses (numbers,
 * escapes), which the service's Go peer writes and reads. The decoder is
 * checked by round trips through the goldens and by what it must refuse.
 *
 * Goldens are read from $PS_GOLDEN_DIR, by default tests/golden relative to
 * the working directory (the repository root, where make and tests/run-unit
 * run).
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_pbjson.h"
#include "core/ps_arena.h"
#include "core/ps_error.h"
#include "eventservice.pb-c.h"
#include "ps_test.h"
#include "tests/types.pb-c.h"
#include "tests/types2.pb-c.h"

/* ---- helpers ---------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)n + 1);
  if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
    free(p);
    p = NULL;
  }
  fclose(f);
  if (p) {
    p[n] = '\0';
    *len = (size_t)n;
  }
  return p;
}

/* Encodes msg into a fresh string (caller frees), or NULL with *rc set. */
static char *encode(const ProtobufCMessage *msg, int *rc) {
  ps_buf b = PS_BUF_INIT;
  *rc = ps_pbjson_encode(&b, msg);
  if (*rc) {
    ps_buf_free(&b);
    return NULL;
  }
  return b.data ? b.data : strdup("");
}

static char *put_double(double v) {
  ps_buf b = PS_BUF_INIT;
  ps_pbjson_put_double(&b, v);
  return b.data;
}

static char *put_float(float v) {
  ps_buf b = PS_BUF_INIT;
  ps_pbjson_put_float(&b, v);
  return b.data;
}

static char *put_string(const char *s, size_t n) {
  ps_buf b = PS_BUF_INIT;
  ps_pbjson_put_string(&b, s, n);
  return b.data;
}

/*
 * Compares two JSON values: object keys in the same order, strings byte for
 * byte, numbers (all parsed as doubles) by value and sign. Writes where they
 * differ into why.
 */
static int json_same(json_t *a, json_t *b, char *why, size_t n, const char *at) {
  if (json_typeof(a) != json_typeof(b)) {
    snprintf(why, n, "%s: JSON types differ", at);
    return 0;
  }
  switch (json_typeof(a)) {
  case JSON_OBJECT: {
    if (json_object_size(a) != json_object_size(b)) {
      snprintf(why, n, "%s: %zu keys vs %zu", at, json_object_size(a), json_object_size(b));
      return 0;
    }
    void *ia = json_object_iter(a), *ib = json_object_iter(b);
    for (; ia && ib; ia = json_object_iter_next(a, ia), ib = json_object_iter_next(b, ib)) {
      char sub[512];
      snprintf(sub, sizeof sub, "%s.%s", at, json_object_iter_key(ia));
      if (strcmp(json_object_iter_key(ia), json_object_iter_key(ib)) != 0) {
        snprintf(why, n, "%s: key \"%s\" where \"%s\" expected", at, json_object_iter_key(ia),
                 json_object_iter_key(ib));
        return 0;
      }
      if (!json_same(json_object_iter_value(ia), json_object_iter_value(ib), why, n, sub))
        return 0;
    }
    return 1;
  }
  case JSON_ARRAY:
    if (json_array_size(a) != json_array_size(b)) {
      snprintf(why, n, "%s: %zu elements vs %zu", at, json_array_size(a), json_array_size(b));
      return 0;
    }
    for (size_t i = 0; i < json_array_size(a); i++) {
      char sub[512];
      snprintf(sub, sizeof sub, "%s[%zu]", at, i);
      if (!json_same(json_array_get(a, i), json_array_get(b, i), why, n, sub))
        return 0;
    }
    return 1;
  case JSON_STRING:
    if (json_string_length(a) != json_string_length(b) ||
        memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) != 0) {
      snprintf(why, n, "%s: \"%s\" vs \"%s\"", at, json_string_value(a), json_string_value(b));
      return 0;
    }
    return 1;
  case JSON_REAL: {
    double x = json_real_value(a), y = json_real_value(b);
    if (x != y || signbit(x) != signbit(y)) {
      snprintf(why, n, "%s: %.17g vs %.17g", at, x, y);
      return 0;
    }
    return 1;
  }
  default: /* true, false, null (integers do not occur: INT_AS_REAL) */ return 1;
  }
}

/* Whether s has whitespace outside its string literals. */
static int is_compact(const char *s) {
  int in = 0;
  for (; *s; s++) {
    if (in) {
      if (*s == '\\')
        s++;
      else if (*s == '"')
        in = 0;
    } else if (*s == '"') {
      in = 1;
    } else if (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') {
      return 0;
    }
  }
  return 1;
}

static const char *golden_dir(void) {
  const char *d = getenv("PS_GOLDEN_DIR");
  return d && *d ? d : "tests/golden";
}

/* The message type of a golden, from its name's prefix. */
static const ProtobufCMessageDescriptor *golden_type(const char *name) {
  if (strncmp(name, "events_", 7) == 0)
    return &event__events__descriptor;
  if (strncmp(name, "types_", 6) == 0)
    return &pstest__all_types__descriptor;
  return NULL;
}

/* ---- goldens ---------------------------------------------------------------- */

/* Runs every golden through encode, compare, decode, re-encode. */
PS_TEST(goldens_match_reference_and_round_trip) {
  DIR *dir = opendir(golden_dir());
  PS_CHECK_MSG(dir, "cannot open %s (run from the repository root or set PS_GOLDEN_DIR)", golden_dir());
  int count = 0, events = 0, bad = 0;
  struct dirent *de;
  while ((de = readdir(dir)) && !bad) {
    size_t nl = strlen(de->d_name);
    if (nl < 4 || strcmp(de->d_name + nl - 3, ".pb") != 0)
      continue;
    char base[256], path[512];
    snprintf(base, sizeof base, "%.*s", (int)(nl - 3), de->d_name);
    const ProtobufCMessageDescriptor *desc = golden_type(base);
    if (!desc) {
      ps_test__fail(__FILE__, __LINE__, "%s: unknown golden prefix", base);
      bad = 1;
      break;
    }
    size_t pblen = 0, jlen = 0;
    snprintf(path, sizeof path, "%s/%s.pb", golden_dir(), base);
    char *pb = read_file(path, &pblen);
    snprintf(path, sizeof path, "%s/%s.json", golden_dir(), base);
    char *gj = read_file(path, &jlen);
    char *ours = NULL, *again = NULL, why[2048] = "";
    ProtobufCMessage *msg = NULL, *back = NULL;
    json_t *jo = NULL, *jg = NULL;
    int rc = 0;
    if (!pb || !gj) {
      snprintf(why, sizeof why, "%s: missing .pb or .json", base);
      goto done;
    }
    msg = protobuf_c_message_unpack(desc, NULL, pblen, (const uint8_t *)pb);
    if (!msg) {
      snprintf(why, sizeof why, "%s: protobuf-c cannot unpack the .pb", base);
      goto done;
    }
    char uerr[256];
    if (ps_pb_check_utf8(msg, uerr, sizeof uerr) != 0) {
      snprintf(why, sizeof why, "%s: check_utf8 refused %s", base, uerr);
      goto done;
    }
    ours = encode(msg, &rc);
    if (!ours) {
      snprintf(why, sizeof why, "%s: encode returned %d", base, rc);
      goto done;
    }
    if (!is_compact(ours)) {
      snprintf(why, sizeof why, "%s: output not compact: %s", base, ours);
      goto done;
    }
    json_error_t je;
    jo = json_loads(ours, JSON_DECODE_INT_AS_REAL, &je);
    jg = json_loadb(gj, jlen, JSON_DECODE_INT_AS_REAL, &je);
    if (!jo || !jg) {
      snprintf(why, sizeof why, "%s: %s does not parse: %s", base, jo ? "golden" : "output", je.text);
      goto done;
    }
    char diff[900];
    if (!json_same(jo, jg, diff, sizeof diff, "$")) {
      snprintf(why, sizeof why, "%s: %s\n  ours: %.600s", base, diff, ours);
      goto done;
    }
    char derr[256];
    rc = ps_pbjson_decode(desc, gj, jlen, NULL, &back, derr, sizeof derr);
    if (rc) {
      snprintf(why, sizeof why, "%s: decoding the golden failed: %s", base, derr);
      goto done;
    }
    again = encode(back, &rc);
    if (!again || strcmp(again, ours) != 0) {
      snprintf(why, sizeof why, "%s: round trip differs:\n  first:  %.400s\n  second: %.400s", base, ours,
               again ? again : "(error)");
      goto done;
    }
    count++;
    events += desc == &event__events__descriptor;
  done:
    if (why[0]) {
      ps_test__fail(__FILE__, __LINE__, "%s", why);
      bad = 1;
    }
    free(pb);
    free(gj);
    free(ours);
    free(again);
    json_decref(jo);
    json_decref(jg);
    if (msg)
      protobuf_c_message_free_unpacked(msg, NULL);
    if (back)
      protobuf_c_message_free_unpacked(back, NULL);
  }
  closedir(dir);
  if (bad)
    return;
  PS_CHECK_MSG(count >= 20 && events >= 10, "only %d goldens (%d of Events) found in %s", count, events,
               golden_dir());
}

/* ---- numbers: Go's protojson spelling --------------------------------------- */

PS_TEST(double_spelling_matches_go) {
  static const struct {
    double v;
    const char *want;
  } cases[] = {
      {0.0, "0"},
      {-0.0, "-0"},
      {1.0, "1"},
      {-1.0, "-1"},
      {20.0, "20"},
      {0.1, "0.1"},
      {19.99, "19.99"},
      {-19.99, "-19.99"},
      {0.30000000000000004, "0.30000000000000004"},
      {123456789.125, "123456789.125"},
      {1e15, "1000000000000000"},
      {9007199254740992.0, "9007199254740992"},
      {9007199254740994.0, "9007199254740994"},
      {1e20, "100000000000000000000"},
      {123456789e12, "123456789000000000000"},
      {1e21, "1e+21"},
      {-1e21, "-1e+21"},
      {1.5e300, "1.5e+300"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {0.000001, "0.000001"},
      {0.0000012345, "0.0000012345"},
      {1e-7, "1e-7"},
      {1.5e-7, "1.5e-7"},
      {-1.5e-7, "-1.5e-7"},
      {9.99999e-7, "9.99999e-7"},
      {1e-10, "1e-10"},
      {2.2250738585072014e-308, "2.2250738585072014e-308"},
      {5e-324, "5e-324"},
      {4.9406564584124654e-320, "4.9407e-320"},           /* subnormal: fewer digits */
      {7.120236347223045e-307, "7.120236347223045e-307"}, /* 2^-1017 */
      {7.678447687145631e-239, "7.678447687145631e-239"}, /* 2^-791 */
      {1.2345678901234567e-5, "0.000012345678901234568"},
      {100.5, "100.5"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *got = put_double(cases[i].v);
    int ok = strcmp(got, cases[i].want) == 0;
    if (!ok)
      ps_test__fail(__FILE__, __LINE__, "double %.17g: got %s, want %s", cases[i].v, got, cases[i].want);
    free(got);
    if (!ok)
      return;
  }
  char *s;
  PS_CHECK_STR_EQ(s = put_double(NAN), "\"NaN\"");
  free(s);
  PS_CHECK_STR_EQ(s = put_double(INFINITY), "\"Infinity\"");
  free(s);
  PS_CHECK_STR_EQ(s = put_double(-INFINITY), "\"-Infinity\"");
  free(s);
}

PS_TEST(float_spelling_matches_go) {
  static const struct {
    float v;
    const char *want;
  } cases[] = {
      {0.0f, "0"},
      {-0.0f, "-0"},
      {0.1f, "0.1"},
      {19.99f, "19.99"},
      {3.14159f, "3.14159"},
      {16777216.0f, "16777216"},
      {16777218.0f, "16777218"},
      {1e10f, "10000000000"},
      {1e20f, "100000000000000000000"},
      {1e21f, "1e+21"},
      {3.4028234663852886e38f, "3.4028235e+38"},
      {1e-6f, "0.000001"}, /* float32(1e-6) is not below 1e-6 in float32 */
      {1.5e-7f, "1.5e-7"},
      {1e-45f, "1e-45"}, /* subnormal: Python writes 1.4013e-45 */
      {1.1754944e-38f, "1.1754944e-38"},
      {0.3f, "0.3"},
      {41983.1875f, "41983.188"}, /* a tie: rounded to even, as Go does */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *got = put_float(cases[i].v);
    int ok = strcmp(got, cases[i].want) == 0;
    if (!ok)
      ps_test__fail(__FILE__, __LINE__, "float %.9g: got %s, want %s", (double)cases[i].v, got,
                    cases[i].want);
    free(got);
    if (!ok)
      return;
  }
  char *s;
  PS_CHECK_STR_EQ(s = put_float(NAN), "\"NaN\"");
  free(s);
  PS_CHECK_STR_EQ(s = put_float(-INFINITY), "\"-Infinity\"");
  free(s);
}

/* Every double written reads back as itself (random bit patterns). */
PS_TEST(doubles_round_trip) {
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < 20000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    double d;
    memcpy(&d, &x, sizeof d);
    float f;
    uint32_t xf = (uint32_t)(x >> 17);
    memcpy(&f, &xf, sizeof f);
    char *sd = put_double(d), *sf = put_float(f);
    int ok = isnan(d)   ? strcmp(sd, "\"NaN\"") == 0
             : isinf(d) ? sd[0] == '"'
                        : strtod(sd, NULL) == d && strlen(sd) <= 25;
    int okf = isnan(f)   ? strcmp(sf, "\"NaN\"") == 0
              : isinf(f) ? sf[0] == '"'
                         : strtof(sf, NULL) == f && strlen(sf) <= 23;
    if (!ok || !okf)
      ps_test__fail(__FILE__, __LINE__, "%.17g -> %s / %.9g -> %s", d, sd, (double)f, sf);
    free(sd);
    free(sf);
    if (!ok || !okf)
      return;
  }
}

/* ---- strings ---------------------------------------------------------------- */

PS_TEST(string_escaping_matches_go) {
  static const struct {
    const char *in;
    size_t n;
    const char *want;
  } cases[] = {
      {"", 0, "\"\""},
      {"plain ascii text that is longer than sixteen bytes", 50,
       "\"plain ascii text that is longer than sixteen bytes\""},
      {"q\"b\\s/", 6, "\"q\\\"b\\\\s/\""},
      {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
      {"\x00\x01\x1f\x0b\x7f", 5, "\"\\u0000\\u0001\\u001f\\u000b\x7f\""},
      {"\xe2\x80\xa8\xe2\x80\xa9", 6, "\"\xe2\x80\xa8\xe2\x80\xa9\""}, /* U+2028/9 raw */
      {"d\xc3\xa9j\xc3\xa0 \xf0\x9f\x98\x80 <&>", 15, "\"d\xc3\xa9j\xc3\xa0 \xf0\x9f\x98\x80 <&>\""},
      {"0123456789abcdef\"0123456789abcdef\n", 34, "\"0123456789abcdef\\\"0123456789abcdef\\n\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *got = put_string(cases[i].in, cases[i].n);
    int ok = strcmp(got, cases[i].want) == 0;
    if (!ok)
      ps_test__fail(__FILE__, __LINE__, "case %zu: got %s, want %s", i, got, cases[i].want);
    free(got);
    if (!ok)
      return;
  }
  /* Every control character, in one string, at every alignment. */
  char in[40], want[256];
  for (int shift = 0; shift < 8; shift++) {
    size_t k = 0, w = 0;
    for (int j = 0; j < shift; j++)
      in[k++] = 'x';
    want[w++] = '"';
    memset(want + w, 'x', (size_t)shift);
    w += (size_t)shift;
    for (int c = 0; c < 0x20; c++) {
      in[k++] = (char)c;
      const char *e = c == '\b'   ? "\\b"
                      : c == '\f' ? "\\f"
                      : c == '\n' ? "\\n"
                      : c == '\r' ? "\\r"
                      : c == '\t' ? "\\t"
                                  : NULL;
      if (e) {
        memcpy(want + w, e, 2);
        w += 2;
      } else {
        w += (size_t)snprintf(want + w, sizeof want - w, "\\u%04x", c);
      }
    }
    want[w++] = '"';
    want[w] = '\0';
    char *got = put_string(in, k);
    int ok = strcmp(got, want) == 0;
    free(got);
    PS_CHECK_MSG(ok, "control characters at shift %d", shift);
  }
}

/* ---- UTF-8 ------------------------------------------------------------------ */

PS_TEST(utf8_validation) {
  static const struct {
    const char *s;
    size_t n;
    int valid;
  } cases[] = {
      {"", 0, 1},
      {"ascii only, longer than sixteen bytes to use the wide path", 58, 1},
      {"\xc2\x80", 2, 1},         /* U+0080 */
      {"\xdf\xbf", 2, 1},         /* U+07FF */
      {"\xe0\xa0\x80", 3, 1},     /* U+0800 */
      {"\xed\x9f\xbf", 3, 1},     /* U+D7FF */
      {"\xee\x80\x80", 3, 1},     /* U+E000 */
      {"\xef\xbf\xbd", 3, 1},     /* U+FFFD */
      {"\xef\xbf\xbf", 3, 1},     /* U+FFFF */
      {"\xf0\x90\x80\x80", 4, 1}, /* U+10000 */
      {"\xf4\x8f\xbf\xbf", 4, 1}, /* U+10FFFF */
      {"0123456789abcdef\xf0\x9f\x98\x80", 20, 1},
      {"\xc0\x80", 2, 0},                 /* overlong NUL */
      {"\xc1\xbf", 2, 0},                 /* overlong */
      {"\xe0\x80\xaf", 3, 0},             /* overlong '/' */
      {"\xe0\x9f\xbf", 3, 0},             /* overlong U+07FF */
      {"\xf0\x8f\xbf\xbf", 4, 0},         /* overlong U+FFFF */
      {"\xed\xa0\x80", 3, 0},             /* U+D800 */
      {"\xed\xbf\xbf", 3, 0},             /* U+DFFF */
      {"\xed\xa0\xbd\xed\xb8\x80", 6, 0}, /* CESU-8 surrogate pair */
      {"\xf4\x90\x80\x80", 4, 0},         /* U+110000 */
      {"\xf5\x80\x80\x80", 4, 0},
      {"\xff", 1, 0},
      {"\x80", 1, 0},         /* stray continuation */
      {"\xc3", 1, 0},         /* truncated */
      {"\xe2\x82", 2, 0},     /* truncated */
      {"\xf0\x9f\x98", 3, 0}, /* truncated */
      {"\xc3(", 2, 0},
      {"0123456789abcdef0123456789abcde\xc3", 32, 0}, /* truncated at the end of a long run */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    PS_CHECK_MSG(ps_utf8_valid(cases[i].s, cases[i].n) == cases[i].valid, "case %zu", i);
}

/* Builds events[0..3] with event 3 a page_opened event; the caller spoils one string. */
typedef struct {
  Event__Events evs;
  Event__Header hdr;
  Event__Event ev[4], *evp[4];
  Event__PageOpenedEvent po;
  Event__PageOpenedEvent__ParamsEntry pe[2], *pep[2];
  Event__CompletePurchaseEvent cp;
  char *ids[3];
} fixture;

static void fixture_init(fixture *f) {
  event__events__init(&f->evs);
  event__header__init(&f->hdr);
  f->hdr.sessionid = "s";
  f->evs.header = &f->hdr;
  for (int i = 0; i < 4; i++) {
    event__event__init(&f->ev[i]);
    f->ev[i].id = "id";
    f->evp[i] = &f->ev[i];
  }
  f->evs.n_events = 4;
  f->evs.events = f->evp;
  event__page_opened_event__init(&f->po);
  f->po.page = "p\xc3\xa9";
  for (int i = 0; i < 2; i++) {
    event__page_opened_event__params_entry__init(&f->pe[i]);
    f->pe[i].key = i ? "k2" : "k1";
    f->pe[i].value = "v";
    f->pep[i] = &f->pe[i];
  }
  f->po.n_params = 2;
  f->po.params = f->pep;
  f->ev[3].event_of_case = EVENT__EVENT__EVENT_OF_PAGE_OPENED_EVENT;
  f->ev[3].pageopenedevent = &f->po;
  event__complete_purchase_event__init(&f->cp);
  f->ids[0] = "a";
  f->ids[1] = "b";
  f->ids[2] = "c";
  f->cp.n_productids = 3;
  f->cp.productids = f->ids;
  f->ev[1].event_of_case = EVENT__EVENT__EVENT_OF_COMPLETE_PURCHASE_EVENT;
  f->ev[1].completepurchaseevent = &f->cp;
}

PS_TEST(check_utf8_names_the_field) {
  fixture f;
  char err[128];
  fixture_init(&f);
  PS_CHECK_INT_EQ(ps_pb_check_utf8(&f.evs.base, err, sizeof err), 0);
  PS_CHECK_STR_EQ(err, "");

  f.pe[1].value = "bad \xed\xa0\x80";
  PS_CHECK_INT_EQ(ps_pb_check_utf8(&f.evs.base, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[3].pageOpenedEvent.params");
  int rc;
  PS_CHECK(encode(&f.evs.base, &rc) == NULL && rc == PS_EINVAL);

  fixture_init(&f);
  f.pe[0].key = "\xc0\xaf";
  PS_CHECK_INT_EQ(ps_pb_check_utf8(&f.evs.base, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[3].pageOpenedEvent.params");

  fixture_init(&f);
  f.ids[2] = "\xf4\x90\x80\x80";
  PS_CHECK_INT_EQ(ps_pb_check_utf8(&f.evs.base, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[1].completePurchaseEvent.productIds[2]");

  fixture_init(&f);
  f.ev[2].timestamp = "\xe2\x82";
  PS_CHECK_INT_EQ(ps_pb_check_utf8(&f.evs.base, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "events[2].timestamp");

  fixture_init(&f);
  f.hdr.sessionid = "\xc3\xa9\xc3";
  PS_CHECK_INT_EQ(ps_pb_check_utf8(&f.evs.base, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "header.sessionId");

  /* snake_case names are reported by their JSON names; a short buffer truncates. */
  Pstest__AllTypes t = PSTEST__ALL_TYPES__INIT;
  t.snake_case_name = "\xff";
  PS_CHECK_INT_EQ(ps_pb_check_utf8(&t.base, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "snakeCaseName");
  PS_CHECK_INT_EQ(ps_pb_check_utf8(&t.base, err, 6), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "snake");
  PS_CHECK_INT_EQ(ps_pb_check_utf8(&t.base, NULL, 0), PS_EINVAL);
}

/* ---- the generic encoder on hand-built messages ------------------------------ */

static int expect_json(const ProtobufCMessage *m, const char *want) {
  int rc;
  char *got = encode(m, &rc);
  int ok = got && strcmp(got, want) == 0;
  if (!ok)
    ps_test__fail(__FILE__, __LINE__, "encode:\n  got:      %s\n  expected: %s", got ? got : "(error)", want);
  free(got);
  return ok;
}

PS_TEST(encode_all_types_by_hand) {
  Pstest__AllTypes t = PSTEST__ALL_TYPES__INIT;
  if (!expect_json(&t.base, "{}"))
    return;
  Pstest__Inner inner = PSTEST__INNER__INIT, in2 = PSTEST__INNER__INIT;
  t.i32 = -1;
  t.s32 = -2;
  t.sf32 = 3;
  t.i64 = INT64_MIN;
  t.s64 = -5;
  t.sf64 = 6;
  t.u32 = UINT32_MAX;
  t.f32 = 8;
  t.u64 = UINT64_MAX;
  t.f64 = 10;
  t.flt = 1.5f;
  t.dbl = -2.25;
  t.flag = 1;
  t.color = 2;
  t.str = "x";
  uint8_t raw[] = {0xfb, 0xff, 0xfe};
  t.raw.data = raw;
  t.raw.len = 3;
  t.inner = &inner;
  t.snake_case_name = "s";
  if (!expect_json(&t.base,
                   "{\"i32\":-1,\"s32\":-2,\"sf32\":3,\"i64\":\"-9223372036854775808\",\"s64\":\"-5\","
                   "\"sf64\":\"6\",\"u32\":4294967295,\"f32\":8,\"u64\":\"18446744073709551615\","
                   "\"f64\":\"10\",\"flt\":1.5,\"dbl\":-2.25,\"flag\":true,\"color\":\"GREEN\","
                   "\"str\":\"x\",\"raw\":\"+//+\",\"inner\":{},\"snakeCaseName\":\"s\"}"))
    return;

  Pstest__AllTypes r = PSTEST__ALL_TYPES__INIT;
  int32_t ri[] = {1, -2};
  char *rs[] = {"a", ""};
  Pstest__Inner *rin[] = {&inner, &in2};
  in2.name = "n";
  in2.n = 7;
  ProtobufCBinaryData rr[] = {{0, NULL}, {1, raw}, {2, raw}};
  int rc_[] = {0, 1, 99, -1};
  double rd[] = {0.5, NAN, -0.0};
  float rf[] = {0.1f, INFINITY};
  int64_t r64[] = {1, -1};
  protobuf_c_boolean rb[] = {0, 1};
  r.n_r_i32 = 2, r.r_i32 = ri;
  r.n_r_str = 2, r.r_str = rs;
  r.n_r_inner = 2, r.r_inner = rin;
  r.n_r_raw = 3, r.r_raw = rr;
  r.n_r_color = 4, r.r_color = (Pstest__Color *)rc_;
  r.n_r_dbl = 3, r.r_dbl = rd;
  r.n_r_flt = 2, r.r_flt = rf;
  r.n_r_i64 = 2, r.r_i64 = r64;
  r.n_r_flag = 2, r.r_flag = rb;
  if (!expect_json(&r.base,
                   "{\"rI32\":[1,-2],\"rStr\":[\"a\",\"\"],\"rInner\":[{},{\"name\":\"n\",\"n\":7}],"
                   "\"rRaw\":[\"\",\"+w==\",\"+/8=\"],\"rColor\":[\"COLOR_UNSPECIFIED\",\"RED\",99,-1],"
                   "\"rDbl\":[0.5,\"NaN\",-0],\"rFlt\":[0.1,\"Infinity\"],\"rI64\":[\"1\",\"-1\"],"
                   "\"rFlag\":[false,true]}"))
    return;

  /* Oneof members are written when selected, even at their default. */
  Pstest__AllTypes o = PSTEST__ALL_TYPES__INIT;
  o.choice_case = PSTEST__ALL_TYPES__CHOICE_C_I32;
  o.c_i32 = 0;
  if (!expect_json(&o.base, "{\"cI32\":0}"))
    return;
  o.choice_case = PSTEST__ALL_TYPES__CHOICE_C_STR;
  o.c_str = "";
  if (!expect_json(&o.base, "{\"cStr\":\"\"}"))
    return;
  o.choice_case = PSTEST__ALL_TYPES__CHOICE_C_INNER;
  o.c_inner = &in2;
  if (!expect_json(&o.base, "{\"cInner\":{\"name\":\"n\",\"n\":7}}"))
    return;
  o.choice_case = PSTEST__ALL_TYPES__CHOICE_C_RAW;
  o.c_raw.len = 0;
  o.c_raw.data = NULL;
  if (!expect_json(&o.base, "{\"cRaw\":\"\"}"))
    return;

  /* -0.0 is not proto3's default (bits differ); NaN is written as a string. */
  Pstest__AllTypes z = PSTEST__ALL_TYPES__INIT;
  z.dbl = -0.0;
  z.flt = -0.0f;
  if (!expect_json(&z.base, "{\"flt\":-0,\"dbl\":-0}"))
    return;
  z.dbl = NAN;
  z.flt = 0;
  z.color = 42; /* unknown number */
  if (!expect_json(&z.base, "{\"dbl\":\"NaN\",\"color\":42}"))
    return;
}

PS_TEST(encode_maps_sorted_like_go) {
  Pstest__AllTypes t = PSTEST__ALL_TYPES__INIT;
  Pstest__AllTypes__MI32Entry i32[5], *i32p[5];
  int32_t keys[] = {10, -3, 9, 2147483647, -2147483648};
  for (int i = 0; i < 5; i++) {
    pstest__all_types__mi32_entry__init(&i32[i]);
    i32[i].key = keys[i];
    i32[i].value = i == 2 ? "nine" : "v";
    i32p[i] = &i32[i];
  }
  t.n_m_i32 = 5, t.m_i32 = i32p;
  Pstest__AllTypes__MFlagEntry fl[2], *flp[2];
  for (int i = 0; i < 2; i++) {
    pstest__all_types__mflag_entry__init(&fl[i]);
    fl[i].key = !i;
    fl[i].value = i;
    flp[i] = &fl[i];
  }
  t.n_m_flag = 2, t.m_flag = flp;
  /* A message value that is missing is written as {}; a repeated key keeps its last value. */
  Pstest__AllTypes__MInnerEntry mi[3], *mip[3];
  Pstest__Inner in = PSTEST__INNER__INIT;
  in.n = 1;
  const char *mk[] = {"b", "a", "b"};
  for (int i = 0; i < 3; i++) {
    pstest__all_types__minner_entry__init(&mi[i]);
    mi[i].key = (char *)mk[i];
    mi[i].value = i == 2 ? &in : NULL;
    mip[i] = &mi[i];
  }
  t.n_m_inner = 3, t.m_inner = mip;
  Pstest__AllTypes__MU32Entry mu[2], *mup[2];
  for (int i = 0; i < 2; i++) {
    pstest__all_types__mu32_entry__init(&mu[i]);
    mu[i].key = i ? 4000000000u : 7;
    mup[i] = &mu[i];
  }
  t.n_m_u32 = 2, t.m_u32 = mup;
  Pstest__AllTypes__MS64Entry ms[2], *msp[2];
  for (int i = 0; i < 2; i++) {
    pstest__all_types__ms64_entry__init(&ms[i]);
    ms[i].key = i ? INT64_MIN : 1;
    ms[i].value = 0.5;
    msp[i] = &ms[i];
  }
  t.n_m_s64 = 2, t.m_s64 = msp;
  if (!expect_json(&t.base, "{\"mI32\":{\"-2147483648\":\"v\",\"-3\":\"v\",\"9\":\"nine\",\"10\":\"v\","
                            "\"2147483647\":\"v\"},\"mFlag\":{\"false\":1,\"true\":0},"
                            "\"mInner\":{\"a\":{},\"b\":{\"n\":1}},\"mU32\":{\"7\":\"\",\"4000000000\":\"\"},"
                            "\"mS64\":{\"-9223372036854775808\":0.5,\"1\":0.5}}"))
    return;

  /* Strings sort bytewise (UTF-8 order = code point order); more entries than the stack array. */
  Event__PageOpenedEvent po = EVENT__PAGE_OPENED_EVENT__INIT;
  enum { N = 200 };
  Event__PageOpenedEvent__ParamsEntry *pe = calloc(N, sizeof *pe), **pep = calloc(N, sizeof *pep);
  char(*names)[8] = calloc(N, 8);
  for (int i = 0; i < N; i++) {
    event__page_opened_event__params_entry__init(&pe[i]);
    snprintf(names[i], 8, "k%03d", (i * 7919) % N);
    pe[i].key = names[i];
    pe[i].value = "";
    pep[i] = &pe[i];
  }
  pe[5].key = "\xc3\xa9"; /* é sorts after every ASCII key */
  pe[6].key = "Z";        /* upper case before lower case */
  po.n_params = N, po.params = pep;
  int rc;
  char *got = encode(&po.base, &rc);
  free(pe);
  free(pep);
  free(names);
  PS_CHECK(got);
  PS_CHECK_MSG(strncmp(got, "{\"params\":{\"Z\":\"\",\"k000\":\"\",\"k001\":\"\",", 38) == 0, "%.80s", got);
  PS_CHECK_MSG(strstr(got, "\"k199\":\"\",\"\xc3\xa9\":\"\"}}") != NULL, "%s", got + strlen(got) - 40);
  free(got);
}

PS_TEST(encode_proto2_labels) {
  Pstest2__Opt o = PSTEST2__OPT__INIT;
  /* Unset optionals (even with [default = ...]) are omitted; required is always written. */
  if (!expect_json(&o.base, "{\"req\":0}"))
    return;
  Pstest2__Opt sub = PSTEST2__OPT__INIT;
  uint8_t b[] = {1};
  o.req = 5;
  o.has_opt_i32 = 1, o.opt_i32 = 0;
  o.opt_str = "";
  o.has_opt_flag = 1, o.opt_flag = 0;
  o.has_opt_dbl = 1, o.opt_dbl = 0;
  o.has_opt_raw = 1, o.opt_raw.len = 1, o.opt_raw.data = b;
  o.has_opt_shade = 1, o.opt_shade = PSTEST2__SHADE__SHADE_NONE;
  o.opt_msg = &sub;
  o.has_opt_i64 = 1;
  if (!expect_json(&o.base, "{\"req\":5,\"optI32\":0,\"optStr\":\"\",\"optFlag\":false,\"optDbl\":0,"
                            "\"optRaw\":\"AQ==\",\"optShade\":\"SHADE_NONE\",\"optMsg\":{\"req\":0},"
                            "\"optI64\":\"42\"}"))
    return;
  /* The decoder sets has_ flags and insists on required fields. */
  ProtobufCMessage *m = NULL;
  char err[256];
  const char *j = "{\"req\":1,\"optI32\":0,\"opt_str\":\"\",\"optDef\":\"x\"}";
  PS_CHECK_INT_EQ(ps_pbjson_decode(&pstest2__opt__descriptor, j, strlen(j), NULL, &m, err, sizeof err), 0);
  Pstest2__Opt *d = (Pstest2__Opt *)m;
  PS_CHECK(d->has_opt_i32 && d->opt_i32 == 0 && d->opt_str && d->opt_str[0] == '\0');
  PS_CHECK(!d->has_opt_flag && !d->has_opt_i64 && d->opt_i64 == 42 && strcmp(d->opt_def, "x") == 0);
  protobuf_c_message_free_unpacked(m, NULL);
  j = "{\"optI32\":1}";
  PS_CHECK_INT_EQ(ps_pbjson_decode(&pstest2__opt__descriptor, j, strlen(j), NULL, &m, err, sizeof err),
                  PS_EINVAL);
  PS_CHECK_MSG(strstr(err, "req") != NULL, "%s", err);
}

PS_TEST(encode_depth_limit) {
  enum { N = 150 };
  Pstest__Node *nodes = calloc(N, sizeof *nodes);
  for (int i = 0; i < N; i++) {
    pstest__node__init(&nodes[i]);
    nodes[i].child = i + 1 < N ? &nodes[i + 1] : NULL;
  }
  int rc;
  char *got = encode(&nodes[0].base, &rc);
  PS_CHECK(got == NULL && rc == PS_EINVAL);
  nodes[99].child = NULL; /* 100 levels: the most C++ and Python parse */
  got = encode(&nodes[0].base, &rc);
  free(nodes);
  PS_CHECK(got != NULL);
  free(got);
}

/* ---- decoder ---------------------------------------------------------------- */

/* Decodes json as T, re-encodes, and compares with want. */
static int decodes_to(const ProtobufCMessageDescriptor *d, const char *json, const char *want) {
  ProtobufCMessage *m = NULL;
  char err[256];
  int rc = ps_pbjson_decode(d, json, strlen(json), NULL, &m, err, sizeof err);
  if (rc) {
    ps_test__fail(__FILE__, __LINE__, "decode %s: %s", json, err);
    return 0;
  }
  int erc;
  char *got = encode(m, &erc);
  protobuf_c_message_free_unpacked(m, NULL);
  int ok = got && strcmp(got, want) == 0;
  if (!ok)
    ps_test__fail(__FILE__, __LINE__, "decode %s:\n  got:      %s\n  expected: %s", json,
                  got ? got : "(error)", want);
  free(got);
  return ok;
}

PS_TEST(decode_accepts_the_proto3_forms) {
  const ProtobufCMessageDescriptor *T = &pstest__all_types__descriptor;
  static const char *const cases[][2] = {
      /* original and JSON names */
      {"{\"snake_case_name\":\"a\"}", "{\"snakeCaseName\":\"a\"}"},
      {"{\"snakeCaseName\":\"a\",\"r_i32\":[1]}", "{\"snakeCaseName\":\"a\",\"rI32\":[1]}"},
      /* integers: numbers, strings, exponents, whole reals */
      {"{\"i32\":\"-7\",\"u32\":\"4294967295\",\"i64\":-9223372036854775808,\"u64\":"
       "\"18446744073709551615\"}",
       "{\"i32\":-7,\"i64\":\"-9223372036854775808\",\"u32\":4294967295,\"u64\":\"18446744073709551615\"}"},
      {"{\"i32\":1.0,\"s32\":\"2500e-2\",\"sf32\":\"0.0\",\"s64\":\"1E2\",\"f64\":\"-0\"}",
       "{\"i32\":1,\"s32\":25,\"s64\":\"100\"}"},
      {"{\"i64\":\"9223372036854775807\",\"sf64\":9223372036854775807}",
       "{\"i64\":\"9223372036854775807\",\"sf64\":\"9223372036854775807\"}"},
      /* floating point: numbers, strings, specials, huge integer literals */
      {"{\"flt\":\"1.5\",\"dbl\":\"NaN\",\"rDbl\":[\"Infinity\",\"-Infinity\",1e-7,20,\"-0\"]}",
       "{\"flt\":1.5,\"dbl\":\"NaN\",\"rDbl\":[\"Infinity\",\"-Infinity\",1e-7,20,-0]}"},
      {"{\"dbl\":100000000000000000000,\"i32\":5}", "{\"i32\":5,\"dbl\":100000000000000000000}"},
      /* integers are read from the number's text, exactly, even beyond 2^53 */
      {"{\"dbl\":100000000000000000000,\"i64\":9007199254740993,\"u64\":18446744073709551615}",
       "{\"i64\":\"9007199254740993\",\"u64\":\"18446744073709551615\",\"dbl\":100000000000000000000}"},
      /* -0 (as Go writes a negative zero) keeps its sign; "-0" in a string is no number */
      {"{\"i32\":-0,\"dbl\":-0,\"rDbl\":[-0,0,-0e0,-0.0],\"str\":\"-0\",\"i64\":\"-0\"}",
       "{\"dbl\":-0,\"str\":\"-0\",\"rDbl\":[-0,0,-0,-0]}"},
      {"{\"str\":\"\\\"-0\",\"flt\":-0}", "{\"flt\":-0,\"str\":\"\\\"-0\"}"},
      /* enums by name or number */
      {"{\"color\":\"RED\",\"rColor\":[2,\"GREEN\",17,-3]}",
       "{\"color\":\"RED\",\"rColor\":[\"GREEN\",\"GREEN\",17,-3]}"},
      /* bytes: standard or URL-safe, padded or not */
      {"{\"raw\":\"+/8=\",\"rRaw\":[\"-_8\",\"-_8=\",\"+/8\",\"YQ\",\"YWI\",\"\",\"AAAA\"]}",
       "{\"raw\":\"+/8=\",\"rRaw\":[\"+/8=\",\"+/8=\",\"+/8=\",\"YQ==\",\"YWI=\",\"\",\"AAAA\"]}"},
      /* null is the default; a null oneof member leaves the oneof unset */
      {"{\"i32\":null,\"str\":null,\"inner\":null,\"rStr\":null,\"mI32\":null,\"cI32\":null,\"cStr\":\"x\"}",
       "{\"cStr\":\"x\"}"},
      /* oneof members at their default are kept */
      {"{\"cInner\":{}}", "{\"cInner\":{}}"},
      {"{\"cRaw\":\"\"}", "{\"cRaw\":\"\"}"},
      /* maps, with every key type */
      {"{\"mI32\":{\"5\":\"a\",\"-1\":\"b\"},\"mFlag\":{\"true\":1,\"false\":2},"
       "\"mInner\":{\"x\":{\"n\":3},\"\":{}},\"mI64\":{\"-9223372036854775808\":\"RED\"},"
       "\"mU32\":{\"4294967295\":\"AQ\"},\"mS64\":{\"7\":\"NaN\"}}",
       "{\"mI32\":{\"-1\":\"b\",\"5\":\"a\"},\"mFlag\":{\"false\":2,\"true\":1},"
       "\"mInner\":{\"\":{},\"x\":{\"n\":3}},\"mI64\":{\"-9223372036854775808\":\"RED\"},"
       "\"mU32\":{\"4294967295\":\"AQ==\"},\"mS64\":{\"7\":\"NaN\"}}"},
      /* strings with escapes, including a surrogate pair */
      {"{\"str\":\"a\\u00e9\\ud83d\\ude00\\n\\\"\\/\"}", "{\"str\":\"a\xc3\xa9\xf0\x9f\x98\x80\\n\\\"/\"}"},
      /* whitespace anywhere */
      {" {\n \"i32\" : 1 ,\t\"str\":\"s\" } ", "{\"i32\":1,\"str\":\"s\"}"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (!decodes_to(T, cases[i][0], cases[i][1]))
      return;
  }
  /* An Events document as a client would write it. */
  PS_CHECK(decodes_to(&event__events__descriptor,
                      "{\"header\":{\"os\":null,\"sessionId\":\"s\",\"userId\":123},"
                      "\"events\":[{\"id\":\"1\",\"clickEvent\":{}},{\"addToCartEvent\":"
                      "{\"quantity\":\"2\",\"price\":19.99}}]}",
                      "{\"header\":{\"sessionId\":\"s\",\"userId\":\"123\"},\"events\":[{\"id\":"
                      "\"1\",\"clickEvent\":{}},{\"addToCartEvent\":{\"quantity\":2,\"price\":19.99}}]}"));
}

/* Decodes json[0..len) as T; on failure checks PS_EINVAL, no message, and needle in the error. */
static int refuses(const ProtobufCMessageDescriptor *d, const char *json, size_t len, const char *needle) {
  ProtobufCMessage *m = (ProtobufCMessage *)1;
  char err[256];
  int rc = ps_pbjson_decode(d, json, len, NULL, &m, err, sizeof err);
  if (rc == 0)
    protobuf_c_message_free_unpacked(m, NULL);
  if (rc != PS_EINVAL || m != NULL || !strstr(err, needle)) {
    ps_test__fail(__FILE__, __LINE__, "%.*s: rc %d, error \"%s\", expected \"%s\"",
                  (int)(len < 200 ? len : 200), json, rc, rc ? err : "", needle);
    return 0;
  }
  return 1;
}
#define REFUSES(json, needle) refuses(&pstest__all_types__descriptor, json, sizeof json - 1, needle)

PS_TEST(decode_refuses_bad_input) {
  const ProtobufCMessageDescriptor *T = &pstest__all_types__descriptor;
  static const struct {
    const char *json, *needle; /* needle: a part of the expected error message */
  } cases[] = {
      {"{\"nope\":1}", "unknown field \"nope\""},
      {"{\"inner\":{\"name\":\"a\",\"extra\":true}}", "inner: unknown field \"extra\" in pstest.Inner"},
      {"{\"rInner\":[{},{\"bad\":1}]}", "rInner[1]: unknown field \"bad\""},
      {"{\"i32\":\"x\"}", "i32"},
      {"{\"i32\":true}", "i32: int32: expected a number"},
      {"{\"str\":5}", "str: string"},
      {"{\"flag\":\"true\"}", "flag: bool"},
      {"{\"flag\":1}", "flag: bool"},
      {"{\"inner\":[]}", "inner: expected an object"},
      {"{\"rI32\":{}}", "rI32: expected an array"},
      {"{\"mI32\":[]}", "mI32: expected an object"},
      {"{\"rI32\":[1,null]}", "rI32[1]: null"},
      {"{\"mI32\":{\"x\":\"a\"}}", "mI32.x"},
      {"{\"mFlag\":{\"yes\":1}}", "mFlag.yes"},
      {"{\"mI32\":{\"1\":null}}", "null is not a map value"},
      {"{\"raw\":\"YQ=\"}", "raw: bytes: invalid base64"},
      {"{\"raw\":\"Y\"}", "raw: bytes: invalid base64"},
      {"{\"raw\":\"YQ==YQ==\"}", "invalid base64"},
      {"{\"raw\":\"+_8=\"}", "invalid base64"}, /* mixed alphabets */
      {"{\"raw\":\"Y Q==\"}", "invalid base64"},
      {"{\"i32\":2147483648}", "i32: int32: value out of range"},
      {"{\"i32\":-2147483649}", "out of range"},
      {"{\"i32\":\"2147483648\"}", "out of range"},
      {"{\"u32\":-1}", "out of range"},
      {"{\"u32\":4294967296}", "out of range"},
      {"{\"u64\":\"18446744073709551616\"}", "out of range"},
      {"{\"i64\":\"9223372036854775808\"}", "out of range"},
      {"{\"i64\":\"-9223372036854775809\"}", "out of range"},
      {"{\"s32\":\"25e-1\"}", "not a whole number"},
      {"{\"i32\":1.5}", "not a whole number"},
      {"{\"i32\":\" 1\"}", "not a whole number"},
      {"{\"i32\":\"0x10\"}", "not a whole number"},
      {"{\"i32\":\"01\"}", "not a whole number"},
      {"{\"i64\":1e300}", "i64: int64: value out of range"},
      {"{\"flt\":1e39}", "flt: float"},
      {"{\"flt\":\"-1e39\"}", "out of range"},
      {"{\"dbl\":\"1e999\"}", "out of range"},
      {"{\"dbl\":\"nan\"}", "not a number"},
      {"{\"dbl\":\"Infinity \"}", "not a number"},
      {"{\"dbl\":[]}", "dbl: double"},
      {"{\"color\":\"BLUE\"}", "no value named \"BLUE\""},
      {"{\"color\":2147483648}", "out of range"},
      {"{\"color\":true}", "color"},
      {"{\"cI32\":1,\"cStr\":\"a\"}", "\"c_i32\" and \"c_str\" are members of the same oneof"},
      {"{\"cInner\":{},\"c_raw\":\"\"}", "same oneof"},
      {"{\"str\":\"a\",\"str\":\"b\"}", "duplicate"},
      {"{\"snakeCaseName\":\"a\",\"snake_case_name\":\"b\"}", "given twice"},
      {"{\"str\":\"\xc3\"}", "invalid JSON"},
      {"{\"str\":\"\xed\xa0\x80\"}", "invalid JSON"},
      {"{\"str\":\"\xc0\xaf\"}", "invalid JSON"},
      {"{\"str\":\"\xf4\x90\x80\x80\"}", "invalid JSON"},
      {"{\"s\xff\":1}", "invalid JSON"},
      {"{\"str\":\"\\ud800\"}", "invalid JSON"},
      {"{\"str\":\"a\\u0000b\"}", "str: string: contains U+0000"},
      {"{\"rStr\":[\"\\u0000\"]}", "rStr[0]: string: contains U+0000"},
      {"[1]", "expected an object"},
      {"", "invalid JSON"},
      {"{", "invalid JSON"},
      {"{}x", "invalid JSON"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    refuses(T, cases[i].json, strlen(cases[i].json), cases[i].needle);
  /* Failures deep inside a partly built message leave nothing behind (ASan checks). */
  const char *j =
      "{\"str\":\"s\",\"rStr\":[\"a\",\"b\"],\"rInner\":[{\"name\":\"x\"},{\"name\":\"y\",\"n\":\"z\"}]}";
  ProtobufCMessage *m;
  char err[256];
  PS_CHECK_INT_EQ(ps_pbjson_decode(T, j, strlen(j), NULL, &m, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "rInner[1].n: int32: \"z\" is not a whole number");
  j = "{\"cInner\":{\"name\":\"q\",\"n\":[]},\"mInner\":{\"k\":{\"name\":\"v\"}}}";
  PS_CHECK_INT_EQ(ps_pbjson_decode(T, j, strlen(j), NULL, &m, NULL, 0), PS_EINVAL);
  j = "{\"mInner\":{\"k\":{\"name\":\"v\"},\"l\":{\"name\":5}}}";
  PS_CHECK_INT_EQ(ps_pbjson_decode(T, j, strlen(j), NULL, &m, err, sizeof err), PS_EINVAL);
  PS_CHECK_STR_EQ(err, "mInner.l.name: string: expected a JSON string");
  /* Depth: 100 levels are fine, 102 are not. */
  char deep[2048];
  size_t k = 0;
  for (int i = 0; i < 102; i++)
    k += (size_t)snprintf(deep + k, sizeof deep - k, "{\"child\":");
  k += (size_t)snprintf(deep + k, sizeof deep - k, "{}");
  for (int i = 0; i < 102; i++)
    deep[k++] = '}';
  deep[k] = '\0';
  PS_CHECK_INT_EQ(ps_pbjson_decode(&pstest__node__descriptor, deep, k, NULL, &m, err, sizeof err), PS_EINVAL);
  PS_CHECK_MSG(strstr(err, "nested deeper") != NULL, "%s", err);
  /* A path too long for err loses its start, not the reason. */
  PS_CHECK_MSG(strncmp(err, "...", 3) == 0 && strlen(err) == sizeof err - 1 &&
                   strcmp(err + strlen(err) - 31, "messages nested deeper than 100") == 0,
               "%s", err);
  const char *shallow = deep + 3 * 9; /* 99 "child" levels */
  PS_CHECK_INT_EQ(
      ps_pbjson_decode(&pstest__node__descriptor, shallow, strlen(shallow) - 3, NULL, &m, err, sizeof err),
      0);
  protobuf_c_message_free_unpacked(m, NULL);
}

PS_TEST(decode_into_an_arena) {
  ps_arena *a = ps_arena_create(1024);
  ProtobufCAllocator al = ps_arena_allocator(a);
  const char *j = "{\"header\":{\"userId\":\"-5\"},\"events\":[{\"pageOpenedEvent\":{\"params\":"
                  "{\"b\":\"2\",\"a\":\"1\"}}},{\"completePurchaseEvent\":{\"productIds\":[\"x\",\"y\"],"
                  "\"amount\":\"1e21\"}}]}";
  ProtobufCMessage *m = NULL;
  char err[128];
  PS_CHECK_INT_EQ(ps_pbjson_decode(&event__events__descriptor, j, strlen(j), &al, &m, err, sizeof err), 0);
  Event__Events *e = (Event__Events *)m;
  PS_CHECK(e->header && e->header->userid == -5 && e->n_events == 2);
  PS_CHECK(e->events[0]->event_of_case == EVENT__EVENT__EVENT_OF_PAGE_OPENED_EVENT);
  PS_CHECK(e->events[0]->pageopenedevent->n_params == 2);
  PS_CHECK_STR_EQ(e->events[0]->pageopenedevent->params[0]->key, "b");
  PS_CHECK(e->events[1]->completepurchaseevent->amount == 1e21);
  PS_CHECK_INT_EQ(ps_pb_check_utf8(m, err, sizeof err), 0);
  int rc;
  char *got = encode(m, &rc);
  PS_CHECK_STR_EQ(got, "{\"header\":{\"userId\":\"-5\"},\"events\":[{\"pageOpenedEvent\":{\"params\":"
                       "{\"a\":\"1\",\"b\":\"2\"}}},{\"completePurchaseEvent\":{\"amount\":1e+21,"
                       "\"productIds\":[\"x\",\"y\"]}}]}");
  free(got);
  PS_CHECK(ps_arena_used(a) > 0);
  ps_arena_destroy(a);
}

/* An allocator that fails its n-th allocation (SQLite's habit: fail each one in turn). */
typedef struct {
  int left, live;
} failing;
static void *failing_alloc(void *d, size_t n) {
  failing *f = d;
  if (f->left-- == 0)
    return NULL;
  f->live++;
  return malloc(n);
}
static void failing_free(void *d, void *p) {
  ((failing *)d)->live--;
  free(p);
}

PS_TEST(decode_survives_each_allocation_failing) {
  size_t len;
  char path[512];
  snprintf(path, sizeof path, "%s/types_values.json", golden_dir());
  char *json = read_file(path, &len);
  PS_CHECK_MSG(json, "cannot read %s", path);
  int n = 0, rc;
  for (;; n++) {
    failing f = {n, 0};
    ProtobufCAllocator al = {failing_alloc, failing_free, &f};
    ProtobufCMessage *m = NULL;
    char err[128];
    rc = ps_pbjson_decode(&pstest__all_types__descriptor, json, len, &al, &m, err, sizeof err);
    if (rc == 0) {
      protobuf_c_message_free_unpacked(m, &al);
      PS_CHECK_INT_EQ(f.live, 0);
      break;
    }
    PS_CHECK_MSG(rc == PS_ENOMEM && m == NULL && f.live == 0, "allocation %d: rc %d, %d left", n, rc, f.live);
  }
  free(json);
  PS_CHECK_MSG(n > 50, "only %d allocations", n);
}

/* ---- decoder: the parser's edges ---------------------------------------------- */


/* Numbers arrive as their text: integers are read exactly at every limit, in every form. */
PS_TEST(decode_numbers_exactly_at_the_limits) {
  const ProtobufCMessageDescriptor *T = &pstest__all_types__descriptor;
  static const char *const ok[][2] = {
      {"{\"i64\":-9223372036854775808,\"s64\":9223372036854775807,\"u64\":18446744073709551615}",
       "{\"i64\":\"-9223372036854775808\",\"s64\":\"9223372036854775807\",\"u64\":\"18446744073709551615\"}"},
      {"{\"i64\":-9.223372036854775808e18,\"sf64\":92233720368547758.07e2,\"f64\":1.8446744073709551615E19}",
       "{\"i64\":\"-9223372036854775808\",\"sf64\":\"9223372036854775807\",\"f64\":"
       "\"18446744073709551615\"}"},
      {"{\"i32\":2147483647,\"s32\":-2147483648,\"sf32\":-2147483648.000,\"u32\":4294967295e0,\"f32\":"
       "42949672.95e2}",
       "{\"i32\":2147483647,\"s32\":-2147483648,\"sf32\":-2147483648,\"u32\":4294967295,\"f32\":4294967295}"},
      {"{\"u64\":1e19,\"i64\":-0,\"s64\":0e999999,\"sf64\":-0.0e-5,\"rI64\":[9007199254740993,-"
       "9007199254740993]}",
       "{\"u64\":\"10000000000000000000\",\"rI64\":[\"9007199254740993\",\"-9007199254740993\"]}"},
      {"{\"color\":1.0,\"rColor\":[2e0,-2147483648]}",
       "{\"color\":\"RED\",\"rColor\":[\"GREEN\",-2147483648]}"},
      /* a number longer than any buffer still rounds once, correctly */
      {"{\"dbl\":1.000000000000000000000000000000000000000000000000000000000000000000000000000000000001,"
       "\"flt\":0.1000000000000000000000000000000000000000000000000000000000000000000000000000000000000001}",
       "{\"flt\":0.1,\"dbl\":1}"},
      {"{\"dbl\":4.9406564584124654e-324,\"rDbl\":[1.7976931348623157e308,-1e-400]}",
       "{\"dbl\":5e-324,\"rDbl\":[1.7976931348623157e+308,-0]}"},
      {"{\"flt\":3.4028235e38,\"rFlt\":[1e-46,16777217]}", "{\"flt\":3.4028235e+38,\"rFlt\":[0,16777216]}"},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    if (!decodes_to(T, ok[i][0], ok[i][1]))
      return;
  PS_CHECK(REFUSES("{\"raw\":1}", "raw: bytes: expected a base64 string"));
  PS_CHECK(REFUSES("{\"rRaw\":[true]}", "rRaw[0]: bytes: expected a base64 string"));
  PS_CHECK(REFUSES("{\"i64\":9223372036854775808}", "i64: int64: value out of range"));
  PS_CHECK(REFUSES("{\"i64\":-9223372036854775809}", "i64: int64: value out of range"));
  PS_CHECK(REFUSES("{\"i64\":9.223372036854775808e18}", "out of range"));
  PS_CHECK(REFUSES("{\"u64\":18446744073709551616}", "u64: uint64: value out of range"));
  PS_CHECK(REFUSES("{\"u64\":1e20}", "out of range"));
  PS_CHECK(REFUSES("{\"u64\":-1}", "out of range"));
  PS_CHECK(REFUSES("{\"u64\":-0.5}", "not a whole number"));
  PS_CHECK(REFUSES("{\"i32\":2147483648.0}", "out of range"));
  PS_CHECK(REFUSES("{\"i32\":-2147483649e0}", "out of range"));
  PS_CHECK(REFUSES("{\"u32\":4294967296}", "out of range"));
  PS_CHECK(REFUSES("{\"color\":1.5}", "color: pstest.Color: not a whole number"));
  PS_CHECK(REFUSES("{\"i64\":1e-999999}", "not a whole number"));
  PS_CHECK(REFUSES("{\"i64\":1000000000000000000000000000000000000000000000000000000000000000000000000}",
                   "out of range"));
  PS_CHECK(REFUSES("{\"dbl\":1e309}", "dbl: double: 1e309 is out of range"));
  PS_CHECK(REFUSES("{\"rDbl\":[1,-2e308]}", "rDbl[1]: double: -2e308 is out of range"));
  PS_CHECK(REFUSES("{\"flt\":3.5e38}", "flt: float: 3.5e38 is out of range"));
  /* yajl's number grammar is JSON's */
  PS_CHECK(REFUSES("{\"i32\":01}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\":+1}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\":1.}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\":.5}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\":1e}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\":-}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"dbl\":NaN}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"dbl\":Infinity}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\":0x10}", "invalid JSON"));
}

/* Every proper prefix of a document is refused as invalid JSON, and leaves nothing behind. */
PS_TEST(decode_refuses_truncated_documents) {
  const char *j =
      "{\"i32\":-12,\"str\":\"a\\u00e9\\ud83d\\ude00\",\"rInner\":[{\"name\":\"x\"},{}],"
      "\"mInner\":{\"k\":{\"n\":1}},\"dbl\":1.5e3,\"flag\":true,\"inner\":null,\"rRaw\":[\"YQ==\"]}";
  size_t n = strlen(j);
  for (size_t k = 0; k < n; k++)
    if (!refuses(&pstest__all_types__descriptor, j, k, "invalid JSON"))
      return;
  PS_CHECK(decodes_to(&pstest__all_types__descriptor, j,
                      "{\"i32\":-12,\"dbl\":1500,\"flag\":true,\"str\":\"a\xc3\xa9\xf0\x9f\x98\x80\","
                      "\"rInner\":[{\"name\":\"x\"},{}],\"rRaw\":[\"YQ==\"],\"mInner\":{\"k\":{\"n\":1}}}"));
  /* Not even the content's own errors come before the end is found missing. */
  PS_CHECK(REFUSES("{\"nope\":1,", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\":\"x\"", "invalid JSON"));
  PS_CHECK(REFUSES("{\"rI32\":[1,null", "invalid JSON"));
  PS_CHECK(REFUSES("{\"str\":\"abc", "invalid JSON (line 1, column 12): premature EOF"));
  PS_CHECK(REFUSES("{\n\"str\":\n\"abc\"\n", "invalid JSON (line 4, column 1): premature EOF"));
}

/* One document, nothing after it but whitespace; no comments; JSON's whitespace only. */
PS_TEST(decode_refuses_trailing_garbage_and_extensions) {
  PS_CHECK(decodes_to(&pstest__all_types__descriptor, " \t\r\n{\"i32\":1} \t\r\n", "{\"i32\":1}"));
  PS_CHECK(REFUSES("{}x", "invalid JSON (line 1, column 3): trailing garbage"));
  PS_CHECK(REFUSES("{} {}", "trailing garbage"));
  PS_CHECK(REFUSES("{}{\"i32\":1}", "trailing garbage"));
  PS_CHECK(REFUSES("{} 1", "trailing garbage"));
  PS_CHECK(REFUSES("{}\"x\"", "trailing garbage"));
  PS_CHECK(REFUSES("{} null", "trailing garbage"));
  PS_CHECK(REFUSES("{}\n]", "invalid JSON (line 2"));
  /* yajl itself takes an unterminated string after the value for the end of the text */
  PS_CHECK(REFUSES("{} \"abc", "invalid JSON (line 1, column 4): trailing garbage"));
  PS_CHECK(REFUSES("{}\"", "trailing garbage"));
  PS_CHECK(REFUSES("{\"rI32\":[1]}\n\"x\\\"y", "invalid JSON (line 2, column 1): trailing garbage"));
  PS_CHECK(REFUSES("{\"nope\":1} \"", "trailing garbage"));
  PS_CHECK(REFUSES("1 \"", "trailing garbage"));
  PS_CHECK(REFUSES("{},", "invalid JSON"));
  PS_CHECK(REFUSES("{\"nope\":1} x", "invalid JSON")); /* the syntax error wins */
  PS_CHECK(REFUSES("{\"i32\":1,}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"rI32\":[1,]}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\" 1}", "invalid JSON"));
  PS_CHECK(REFUSES("{i32:1}", "invalid JSON"));
  PS_CHECK(REFUSES("{'i32':1}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"str\":'a'}", "invalid JSON"));
  PS_CHECK(REFUSES("{/* c */}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\":1 // c\n}", "invalid JSON"));
  PS_CHECK(REFUSES("{\"i32\":1}\v", "invalid JSON (line 1, column 10): invalid character U+000B"));
  PS_CHECK(REFUSES("{\f\"i32\":1}", "invalid character U+000C"));
  PS_CHECK(REFUSES("{\"str\":\"a\tb\"}", "invalid JSON"));   /* raw control character in a string */
  PS_CHECK(REFUSES("{\"str\":\"a\\x41\"}", "invalid JSON")); /* no such escape */
  PS_CHECK(REFUSES("{\"str\":\"\\u12G4\"}", "invalid JSON"));
  PS_CHECK(REFUSES("\xef\xbb\xbf{}", "invalid JSON")); /* a byte order mark */
  PS_CHECK(REFUSES("   ", "invalid JSON"));
  PS_CHECK(REFUSES("[]", "expected an object (pstest.AllTypes)"));
  PS_CHECK(REFUSES("null", "expected an object"));
  PS_CHECK(REFUSES("\"x\"", "expected an object"));
  PS_CHECK(REFUSES("1", "expected an object"));
  PS_CHECK(refuses(&pstest__all_types__descriptor, NULL, 0, "invalid JSON"));
}

/* UTF-8 as strict as ps_utf8_valid, in keys and values, raw or escaped; a NUL only where a string can hold
 * it. */
PS_TEST(decode_refuses_invalid_utf8_anywhere) {
  PS_CHECK(REFUSES("{\"\xc0\xaf\":1}", "invalid JSON (line 1, column 3): invalid UTF-8"));
  PS_CHECK(REFUSES("{\"\xed\xa0\x80\":1}", "invalid UTF-8"));
  PS_CHECK(REFUSES("{\"\xf4\x90\x80\x80\":1}", "invalid UTF-8"));
  PS_CHECK(REFUSES("{\"mInner\":{\"\xe0\x80\xaf\":{}}}", "invalid UTF-8"));
  PS_CHECK(REFUSES("{\"mInner\":{\"a\xc3\":{}}}", "invalid UTF-8"));
  PS_CHECK(REFUSES("{\"rStr\":[\"ok\",\"\xf8\x88\x80\x80\x80\"]}", "invalid UTF-8"));
  PS_CHECK(
      REFUSES("{\"str\":\"0123456789abcdef0123456789abcdef0123456789abcdef\xed\xbf\xbf\"}", "invalid UTF-8"));
  PS_CHECK(REFUSES("{\"str\":\"\xed\xa0\xbd\xed\xb8\x80\"}", "invalid UTF-8")); /* CESU-8 */
  /* UTF-16 escapes: pairs only */
  PS_CHECK(REFUSES("{\"\\udc00\":1}",
                   "invalid JSON (line 1, column 3): \\u escape of an unpaired UTF-16 surrogate"));
  PS_CHECK(REFUSES("{\"mInner\":{\"\\ud800\":{}}}", "unpaired"));
  PS_CHECK(REFUSES("{\"str\":\"\\ud800\\u0041\"}", "unpaired"));
  PS_CHECK(REFUSES("{\"str\":\"\\uD800x\"}", "unpaired"));
  PS_CHECK(REFUSES("{\"str\":\"\\ud800\\ud800\"}", "unpaired"));
  PS_CHECK(REFUSES("{\"str\":\"\\udbff\\\\udc00\"}", "unpaired")); /* "\\" then "udc00": no low half */
  PS_CHECK(REFUSES("{\"str\":\"x\\ud800", "unpaired"));
  PS_CHECK(decodes_to(&pstest__all_types__descriptor,
                      "{\"str\":\"\\\\ud800\\\\\\\"\\/\\uDBFF\\uDFFF\\u00e9\"}",
                      "{\"str\":\"\\\\ud800\\\\\\\"/\xf4\x8f\xbf\xbf\xc3\xa9\"}"));
  PS_CHECK(decodes_to(&pstest__all_types__descriptor,
                      "{\"mInner\":{\"\\u00e9\\ud83d\\ude00\":{}},\"s\\u0074r\":\"\xc3\xa9\"}",
                      "{\"str\":\"\xc3\xa9\",\"mInner\":{\"\xc3\xa9\xf0\x9f\x98\x80\":{}}}"));
  /* U+0000 cannot be in a protobuf-c string, a field name or a map key */
  PS_CHECK(REFUSES("{\"mInner\":{\"a\\u0000\":{}}}", "mInner.a: string: contains U+0000"));
  PS_CHECK(REFUSES("{\"str\\u0000\":\"x\"}", "unknown field \"str\\u0000\" in pstest.AllTypes"));
  PS_CHECK(REFUSES("{\"color\":\"RED\\u0000\"}", "has no value named \"RED\\u0000\""));
  PS_CHECK(REFUSES("{\"i32\":\"1\\u0000\"}", "i32: int32: \"1\\u0000\" is not a whole number"));
  PS_CHECK(REFUSES("{\"rRaw\":[\"YQ==\\u0000\"]}", "rRaw[0]: bytes: invalid base64"));
  PS_CHECK(decodes_to(&pstest__all_types__descriptor, "{\"raw\":\"A\\u0041\\u003d\\u003d\"}",
                      "{\"raw\":\"AA==\"}"));
}

/* Keys are looked up through a per-thread cache: it must never answer for a different key. */
PS_TEST(decode_field_lookup_is_exact) {
  const ProtobufCMessageDescriptor *E = &event__events__descriptor;
  for (int round = 0; round < 3; round++) {
    PS_CHECK(decodes_to(E, "{\"events\":[{\"completePurchaseEvent\":{\"amount\":1}}]}",
                        "{\"events\":[{\"completePurchaseEvent\":{\"amount\":1}}]}"));
    /* same length, head and tail as a known key: only the middle differs */
    PS_CHECK(refuses(E, "{\"events\":[{\"completeXurchaseEvent\":{}}]}", 41,
                     "unknown field \"completeXurchaseEvent\""));
    PS_CHECK(refuses(E, "{\"events\":[{\"completePurchaseEvenT\":{}}]}", 41, "unknown field"));
    PS_CHECK(refuses(E, "{\"events\":[{\"CompletePurchaseEvent\":{}}]}", 41, "unknown field"));
    PS_CHECK(REFUSES("{\"snakeCaseNam\":\"a\"}", "unknown field \"snakeCaseNam\""));
    PS_CHECK(REFUSES("{\"snakeCaseNamee\":\"a\"}", "unknown field"));
    PS_CHECK(REFUSES("{\"snake_case_nameX\":\"a\"}", "unknown field"));
    PS_CHECK(REFUSES("{\"i3\":1}", "unknown field \"i3\""));
    PS_CHECK(REFUSES("{\"i322\":1}", "unknown field"));
    PS_CHECK(REFUSES("{\"\":1}", "unknown field \"\""));
    PS_CHECK(decodes_to(&pstest__all_types__descriptor, "{\"snake_case_name\":\"a\",\"i32\":1,\"rI32\":[2]}",
                        "{\"i32\":1,\"snakeCaseName\":\"a\",\"rI32\":[2]}"));
    PS_CHECK(decodes_to(&pstest__all_types__descriptor, "{\"snakeCaseName\":\"b\",\"r_i32\":[3]}",
                        "{\"snakeCaseName\":\"b\",\"rI32\":[3]}"));
    /* a key spelled one way, then the other: the field is given twice */
    PS_CHECK(REFUSES("{\"r_i32\":[3],\"rI32\":[]}", "field \"r_i32\" of pstest.AllTypes given twice"));
    PS_CHECK(REFUSES("{\"rI32\":[3],\"rI32\":[]}", "duplicate key \"rI32\" in pstest.AllTypes"));
    PS_CHECK(REFUSES("{\"inner\":{\"n\":1,\"n\":null}}", "inner: duplicate key \"n\" in pstest.Inner"));
  }
}

/* Lists grow as their elements come, through the caller's allocator. */
PS_TEST(decode_grows_large_lists_and_maps) {
  enum { N = 100000, M = 3000 };
  ps_buf b = PS_BUF_INIT;
  ps_buf_puts(&b, "{\"rI32\":[");
  for (int i = 0; i < N; i++) {
    char num[24];
    snprintf(num, sizeof num, "%s%d", i ? "," : "", i - N / 2);
    ps_buf_puts(&b, num);
  }
  ps_buf_puts(&b, "],\"rStr\":[");
  for (int i = 0; i < M; i++) {
    char s[32];
    snprintf(s, sizeof s, "%s\"s%d\"", i ? "," : "", i);
    ps_buf_puts(&b, s);
  }
  ps_buf_puts(&b, "],\"rInner\":[");
  for (int i = 0; i < M; i++)
    ps_buf_puts(&b, i ? ",{\"n\":7}" : "{\"n\":7}");
  ps_buf_puts(&b, "],\"mI32\":{");
  for (int i = 0; i < M; i++) {
    char s[48];
    snprintf(s, sizeof s, "%s\"%d\":\"v%d\"", i ? "," : "", M - i, i);
    ps_buf_puts(&b, s);
  }
  ps_buf_puts(&b, "}}");
  for (int arena = 0; arena < 2; arena++) {
    ps_arena *a = arena ? ps_arena_create(4096) : NULL;
    ProtobufCAllocator al = arena ? ps_arena_allocator(a) : (ProtobufCAllocator){0};
    ProtobufCMessage *m = NULL;
    char err[256];
    PS_CHECK_INT_EQ(ps_pbjson_decode(&pstest__all_types__descriptor, b.data, b.len, arena ? &al : NULL, &m,
                                     err, sizeof err),
                    0);
    const Pstest__AllTypes *t = (const Pstest__AllTypes *)m;
    PS_CHECK(t->n_r_i32 == N && t->r_i32[0] == -N / 2 && t->r_i32[N - 1] == N / 2 - 1);
    PS_CHECK(t->n_r_str == M && strcmp(t->r_str[M - 1], "s2999") == 0);
    PS_CHECK(t->n_r_inner == M && t->r_inner[M - 1]->n == 7);
    PS_CHECK(t->n_m_i32 == M && t->m_i32[0]->key == M && strcmp(t->m_i32[M - 1]->value, "v2999") == 0);
    if (arena)
      ps_arena_destroy(a);
    else
      protobuf_c_message_free_unpacked(m, NULL);
  }
  /* An error after the lists grew frees every array (ASan checks). */
  b.len -= 2;
  ps_buf_puts(&b, "},\"rI32\":[]}");
  PS_CHECK(refuses(&pstest__all_types__descriptor, b.data, b.len, "duplicate key \"rI32\""));
  ps_buf_free(&b);
}

/* Each allocation failing in turn, in a document whose lists and maps grow several times. */
PS_TEST(decode_survives_allocation_failures_while_growing) {
  const char *j =
      "{\"rI32\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18],\"rStr\":[\"a\",\"b\",\"c\",\"d\","
      "\"e\",\"f\",\"g\",\"h\",\"i\"],\"rRaw\":[\"YQ\",\"YQ\",\"YQ\",\"YQ\",\"YQ\",\"YQ\",\"YQ\",\"YQ\","
      "\"YQ\"],"
      "\"mInner\":{\"a\":{\"name\":\"x\"},\"b\":{},\"c\":{},\"d\":{},\"e\":{},\"f\":{},\"g\":{},\"h\":{},"
      "\"i\":{\"name\":\"y\"}},\"cInner\":{\"name\":\"z\"}}";
  int n = 0, rc;
  for (;; n++) {
    failing f = {n, 0};
    ProtobufCAllocator al = {failing_alloc, failing_free, &f};
    ProtobufCMessage *m = NULL;
    char err[128];
    rc = ps_pbjson_decode(&pstest__all_types__descriptor, j, strlen(j), &al, &m, err, sizeof err);
    if (rc == 0) {
      protobuf_c_message_free_unpacked(m, &al);
      PS_CHECK_INT_EQ(f.live, 0);
      break;
    }
    PS_CHECK_MSG(rc == PS_ENOMEM && m == NULL && f.live == 0 && strstr(err, "out of memory"),
                 "allocation %d: rc %d, %d left, %s", n, rc, f.live, err);
  }
  PS_CHECK_MSG(n > 40, "only %d allocations", n);
}

/* Map keys may not repeat (compared as keys: "1" and "1.0" are the same int32). */
PS_TEST(decode_refuses_duplicate_map_keys) {
  PS_CHECK(REFUSES("{\"mI32\":{\"1\":\"a\",\"1\":\"b\"}}", "mI32: duplicate map key \"1\""));
  PS_CHECK(REFUSES("{\"mI32\":{\"1\":\"a\",\"2\":\"b\",\"1.0\":\"c\"}}", "mI32: duplicate map key \"1\""));
  PS_CHECK(REFUSES("{\"mFlag\":{\"true\":1,\"false\":1,\"true\":2}}", "mFlag: duplicate map key \"true\""));
  PS_CHECK(REFUSES("{\"mI64\":{\"-9223372036854775808\":1,\"-9223372036854775808\":2}}",
                   "duplicate map key \"-9223372036854775808\""));
  PS_CHECK(
      REFUSES("{\"mU32\":{\"4294967295\":\"\",\"4294967295\":\"\"}}", "duplicate map key \"4294967295\""));
  PS_CHECK(REFUSES(
      "{\"inner\":{},\"mInner\":{\"a\":{},\"b\":{},\"c\":{},\"d\":{},\"e\":{},\"f\":{},\"g\":{},\"h\":{},"
      "\"i\":{},\"j\":{},\"e\":{\"name\":\"x\"}}}",
      "mInner: duplicate map key \"e\""));
  /* many distinct keys, none taken for another */
  ps_buf b = PS_BUF_INIT;
  ps_buf_puts(&b, "{\"mInner\":{");
  for (int i = 0; i < 1000; i++) {
    char s[32];
    snprintf(s, sizeof s, "%s\"k%d\":{}", i ? "," : "", i * 7919 % 1000);
    ps_buf_puts(&b, s);
  }
  ps_buf_puts(&b, "}}");
  ProtobufCMessage *m = NULL;
  char err[256];
  PS_CHECK_INT_EQ(ps_pbjson_decode(&pstest__all_types__descriptor, b.data, b.len, NULL, &m, err, sizeof err),
                  0);
  PS_CHECK(((Pstest__AllTypes *)m)->n_m_inner == 1000);
  protobuf_c_message_free_unpacked(m, NULL);
  ps_buf_puts(&b, "");
  b.len -= 2;
  ps_buf_puts(&b, ",\"k999\":{}}}");
  PS_CHECK(refuses(&pstest__all_types__descriptor, b.data, b.len, "mInner: duplicate map key \"k999\""));
  ps_buf_free(&b);
}

/* Nesting: messages 100 deep at most; any depth of JSON elsewhere is only a wrong type. */
PS_TEST(decode_depth_limits) {
  enum { DEEP = 200000 };
  char *deep = malloc(12 * 105 + 2 * DEEP + 64);
  PS_CHECK(deep != NULL);
  for (int levels = 99; levels <= 101; levels++) {
    size_t k = 0;
    for (int i = 0; i < levels; i++)
      k += (size_t)sprintf(deep + k, "{\"child\":");
    k += (size_t)sprintf(deep + k, "{\"v\":1}");
    for (int i = 0; i < levels; i++)
      deep[k++] = '}';
    ProtobufCMessage *m = NULL;
    char err[64];
    int rc = ps_pbjson_decode(&pstest__node__descriptor, deep, k, NULL, &m, err, sizeof err);
    if (levels <= 100) { /* the innermost message is levels deep */
      PS_CHECK_MSG(rc == 0, "%d levels: %s", levels, err);
      protobuf_c_message_free_unpacked(m, NULL);
    } else {
      PS_CHECK_MSG(rc == PS_EINVAL && strstr(err, "messages nested deeper than 100"), "%d levels: %s", levels,
                   err);
      PS_CHECK_MSG(strncmp(err, "...", 3) == 0 && strstr(err, "child.child: messages"), "%s", err);
    }
  }
  /* Arrays in arrays, far deeper than any message: refused as a wrong type, the whole text still checked. */
  size_t k = (size_t)sprintf(deep, "{\"rI32\":");
  memset(deep + k, '[', DEEP);
  memset(deep + k + DEEP, ']', DEEP);
  k += 2 * (size_t)DEEP;
  deep[k++] = '}';
  PS_CHECK(refuses(&pstest__all_types__descriptor, deep, k, "rI32[0]: int32: expected a number"));
  PS_CHECK(refuses(&pstest__all_types__descriptor, deep, k - 2, "invalid JSON"));
  k = (size_t)sprintf(deep, "{\"nope\":");
  for (int i = 0; i < DEEP / 5; i++)
    k += (size_t)sprintf(deep + k, "{\"a\":");
  deep[k++] = '1';
  memset(deep + k, '}', DEEP / 5 + 1);
  k += DEEP / 5 + 1;
  PS_CHECK(refuses(&pstest__all_types__descriptor, deep, k, "unknown field \"nope\""));
  free(deep);
}

/* One parser per thread serves document after document: no failure of any kind may leak into the next. */
PS_TEST(decode_parser_reuse_after_each_failure) {
  static const char *const bad[] = {
      "",
      "   \n",
      "{",
      "{\"i32\":1",
      "{\"str\":\"ab",
      "{\"str\":\"a\\",
      "{}x",
      "{} \"abc",
      "{}\"",
      "{}{\"i32\":1}",
      "{} 1",
      "1",
      "1 \"x",
      "\"x",
      "[1,",
      "{\"i32\":tru}",
      "{\"nope\":1}",
      "{\"i32\":\"x\"}",
      "{\"s\xff\":1}",
      "{\"str\":\"\\ud800\"}",
      "{/*c*/}",
      "{\"rI32\":[1,2,3",
      "{\"i32\":1}\v",
      "null",
  };
  for (int round = 0; round < 2; round++)
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      refuses(&pstest__all_types__descriptor, bad[i], strlen(bad[i]), "");
      /* the next document, with escapes, numbers at the ends of tokens, nesting */
      PS_CHECK(decodes_to(
          &pstest__all_types__descriptor,
          "{\"i32\":7,\"str\":\"\\u00e9\\\"\",\"rInner\":[{\"n\":1},{}],\"mI32\":{\"1\":\"a\"},\"dbl\":2}",
          "{\"i32\":7,\"dbl\":2,\"str\":\"\xc3\xa9\\\"\",\"rInner\":[{\"n\":1},{}],\"mI32\":{\"1\":\"a\"}}"));
    }
}

/* Decoding in several threads at once (each has its own parser and caches, freed when it exits). */
static void *decode_thread(void *arg) {
  long bad = 0;
  for (int i = 0; i < 300 && !bad; i++) {
    const char *j =
        (i + (int)(long)arg) % 2
            ? "{\"header\":{\"sessionId\":\"s\",\"userId\":\"7\"},\"events\":[{\"id\":\"1\",\"clickEvent\":{}"
              "},"
              "{\"pageOpenedEvent\":{\"params\":{\"a\":\"b\"}}}]}"
            : "{\"events\":[{\"completePurchaseEvent\":{\"amount\":2.5,\"productIds\":[\"p\"]}}]}";
    ProtobufCMessage *m = NULL;
    char err[128];
    if (ps_pbjson_decode(&event__events__descriptor, j, strlen(j), NULL, &m, err, sizeof err) != 0) {
      bad = 1;
      break;
    }
    Event__Events *e = (Event__Events *)m;
    bad = (i + (int)(long)arg) % 2
              ? !(e->header && e->header->userid == 7 && e->n_events == 2 &&
                  e->events[1]->pageopenedevent->n_params == 1)
              : !(e->n_events == 1 && e->events[0]->completepurchaseevent->amount == 2.5);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  return (void *)bad;
}

PS_TEST(decode_in_threads) {
  pthread_t th[4];
  for (long i = 0; i < 4; i++)
    PS_CHECK(pthread_create(&th[i], NULL, decode_thread, (void *)i) == 0);
  long bad = 0;
  for (int i = 0; i < 4; i++) {
    void *r;
    pthread_join(th[i], &r);
    bad += (long)r;
  }
  PS_CHECK_INT_EQ(bad, 0);
}

PS_TEST(encode_appends_to_existing_buffer) {
  ps_buf b = PS_BUF_INIT;
  ps_buf_puts(&b, "x=");
  Event__Events e = EVENT__EVENTS__INIT;
  PS_CHECK_INT_EQ(ps_pbjson_encode(&b, &e.base), 0);
  PS_CHECK_STR_EQ(b.data, "x={}");
  ps_buf_free(&b);
}

PS_TEST_MAIN(PS_CASE(goldens_match_reference_and_round_trip), PS_CASE(double_spelling_matches_go),
             PS_CASE(float_spelling_matches_go), PS_CASE(doubles_round_trip),
             PS_CASE(string_escaping_matches_go), PS_CASE(utf8_validation),
             PS_CASE(check_utf8_names_the_field), PS_CASE(encode_all_types_by_hand),
             PS_CASE(encode_maps_sorted_like_go), PS_CASE(encode_proto2_labels), PS_CASE(encode_depth_limit),
             PS_CASE(decode_accepts_the_proto3_forms), PS_CASE(decode_refuses_bad_input),
             PS_CASE(decode_into_an_arena), PS_CASE(decode_survives_each_allocation_failing),
             PS_CASE(decode_numbers_exactly_at_the_limits), PS_CASE(decode_refuses_truncated_documents),
             PS_CASE(decode_refuses_trailing_garbage_and_extensions),
             PS_CASE(decode_refuses_invalid_utf8_anywhere), PS_CASE(decode_field_lookup_is_exact),
             PS_CASE(decode_grows_large_lists_and_maps),
             PS_CASE(decode_survives_allocation_failures_while_growing),
             PS_CASE(decode_refuses_duplicate_map_keys), PS_CASE(decode_depth_limits),
             PS_CASE(decode_parser_reuse_after_each_failure), PS_CASE(decode_in_threads),
             PS_CASE(encode_appends_to_existing_buffer))
