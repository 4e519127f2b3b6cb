/*
 * ps_decoder_json: JSON records published by other services -> rows
 * (see ps_decoder.h).
 *
 * The body is parsed with jansson; every object (the body itself, or each
 * element of a top-level array) becomes a row. Each column walks its dotted
 * path and coerces what it finds:
 *   string    JSON strings as they are; numbers and booleans as their text;
 *             objects and arrays as compact JSON (keys in document order)
 *   int64     integers, doubles without a fraction, numeric strings
 *   uint64    the same, not negative
 *   float64   numbers and numeric strings (finite)
 *   datetime  epoch numbers or strings in s, ms, us or ns, ISO-8601 strings
 *             (ps_time_parse)
 * Booleans do not become numbers, and numbers do not become datetimes unless
 * ps_time_parse takes their decimal form. A path through something that is not
 * an object finds nothing (missing). Integers outside int64 make jansson
 * refuse the whole body, so a uint64 above INT64_MAX must come as a string.
 *
 * All rows of a message are coerced before the first is written, so a message
 * fails as a whole. Strings that need text of their own (numbers as text,
 * compact JSON) go into one scratch buffer reused across messages, referenced
 * by offset until the rows are written, since the buffer moves as it grows.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/ps_pbjson.h"
#include "config/ps_topology_config.h"
#include "consume/ps_decoder.h"
#include "core/ps_buf.h"
#include "core/ps_error.h"
#include "core/ps_log.h"
#include "core/ps_time.h"

/* One decoded value; strings either borrowed (s) or in the scratch buffer (off). */
typedef struct {
  int64_t i;
  uint64_t u;
  double f;
  const char *s;
  size_t off, len;
  int in_scratch;
} ps__cell;

typedef struct {
  char *name;
  char *from;
  char **path; /* from, split at dots */
  size_t npath;
  ps_col_type type;
  int required;
  int has_default;
  char *default_text;
  ps__cell def;
} ps__jcol;

typedef struct {
  ps_decoder base;
  ps__jcol *cols;
  size_t ncols;
  int keep_unknown;
  ps_column *table_cols; /* ncols, plus the unknown column */
  size_t ntable;
  ps_buf scratch;
  ps__cell *cells;
  size_t cells_cap;
  ps_value *row;
} ps__json_decoder;

static const char *ps__type_name(ps_col_type t) {
  switch (t) {
  case PS_COL_STRING: return "string";
  case PS_COL_INT64: return "int64";
  case PS_COL_UINT64: return "uint64";
  case PS_COL_FLOAT64: return "float64";
  case PS_COL_DATETIME: return "datetime";
  }
  return "?";
}

static const char *ps__json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  case JSON_NULL: return "null";
  }
  return "?";
}

/* Compact JSON of v, keys in document order, numbers as the codec writes them. */
static void ps__put_json(ps_buf *b, json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: {
    ps_buf_putc(b, '{');
    int first = 1;
    for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
      if (!first)
        ps_buf_putc(b, ',');
      first = 0;
      ps_pbjson_put_string(b, json_object_iter_key(it), json_object_iter_key_len(it));
      ps_buf_putc(b, ':');
      ps__put_json(b, json_object_iter_value(it));
    }
    ps_buf_putc(b, '}');
    break;
  }
  case JSON_ARRAY:
    ps_buf_putc(b, '[');
    for (size_t i = 0; i < json_array_size(v); i++) {
      if (i)
        ps_buf_putc(b, ',');
      ps__put_json(b, json_array_get(v, i));
    }
    ps_buf_putc(b, ']');
    break;
  case JSON_STRING: ps_pbjson_put_string(b, json_string_value(v), json_string_length(v)); break;
  case JSON_INTEGER: ps_buf_put_i64(b, (int64_t)json_integer_value(v)); break;
  case JSON_REAL: ps_pbjson_put_double(b, json_real_value(v)); break;
  case JSON_TRUE: ps_buf_puts(b, "true"); break;
  case JSON_FALSE: ps_buf_puts(b, "false"); break;
  case JSON_NULL: ps_buf_puts(b, "null"); break;
  }
}

/*
 * Numeric text: [+-]digits[.digits][(e|E)[+-]digits], nothing around it.
 * Returns 0 (not a number), 1 (an integer: no fraction, no exponent), 2 (other).
 */
static int ps__numeric_kind(const char *s, size_t n) {
  size_t i = 0, d = 0;
  int kind = 1;
  if (i < n && (s[i] == '+' || s[i] == '-'))
    i++;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
    d++;
  if (i < n && s[i] == '.') {
    kind = 2;
    for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
      d++;
  }
  if (!d)
    return 0;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    kind = 2;
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-'))
      i++;
    size_t e = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
      e++;
    if (!e)
      return 0;
  }
  return i == n ? kind : 0;
}

/* The double that v (a number, or numeric text) holds; 0 if it is neither. */
static int ps__as_double(json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return isfinite(*out);
  }
  if (!json_is_string(v))
    return 0;
  const char *s = json_string_value(v);
  size_t n = json_string_length(v);
  if (n > 400 || !ps__numeric_kind(s, n))
    return 0;
  errno = 0;
  *out = strtod(s, NULL);
  return errno != ERANGE && isfinite(*out);
}

/* Writes into why a description of v for a message: `string "abc"`, `a boolean`. */
static void ps__describe(json_t *v, char *why, size_t whylen, const char *what) {
  if (json_is_string(v))
    snprintf(why, whylen, "string \"%.40s\"%s is %s", json_string_value(v),
             json_string_length(v) > 40 ? "..." : "", what);
  else
    snprintf(why, whylen, "%s is %s", ps__json_kind(v), what);
}

static int ps__coerce(const ps__jcol *c, json_t *v, ps__cell *out, ps_buf *scratch, char *why,
                      size_t whylen) {
  memset(out, 0, sizeof *out);
  switch (c->type) {
  case PS_COL_STRING:
    if (json_is_string(v)) {
      out->s = json_string_value(v);
      out->len = json_string_length(v);
    } else if (json_is_true(v) || json_is_false(v)) {
      out->s = json_is_true(v) ? "true" : "false";
      out->len = strlen(out->s);
    } else {
      out->in_scratch = 1;
      out->off = scratch->len;
      ps__put_json(scratch, v);
      out->len = scratch->len - out->off;
    }
    return 0;

  case PS_COL_INT64:
  case PS_COL_UINT64: {
    int is_u = c->type == PS_COL_UINT64;
    const char *target = is_u ? "not an unsigned 64-bit integer" : "not a 64-bit integer";
    if (json_is_integer(v)) {
      json_int_t x = json_integer_value(v);
      if (is_u && x < 0)
        goto bad_int;
      out->i = (int64_t)x;
      out->u = (uint64_t)x;
      return 0;
    }
    if (json_is_string(v) && ps__numeric_kind(json_string_value(v), json_string_length(v)) == 1) {
      const char *s = json_string_value(v);
      char *end;
      errno = 0;
      if (is_u) {
        if (s[0] == '-')
          goto bad_int;
        out->u = strtoull(s, &end, 10);
      } else {
        out->i = strtoll(s, &end, 10);
      }
      if (errno == ERANGE)
        goto bad_int;
      return 0;
    }
    double d;
    if (!ps__as_double(v, &d) || d != trunc(d))
      goto bad_int;
    if (is_u) {
      if (d < 0 || d >= 18446744073709551616.0)
        goto bad_int;
      out->u = (uint64_t)d;
    } else {
      if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
        goto bad_int;
      out->i = (int64_t)d;
    }
    return 0;
  bad_int:
    ps__describe(v, why, whylen, target);
    return -1;
  }

  case PS_COL_FLOAT64:
    if (!ps__as_double(v, &out->f)) {
      ps__describe(v, why, whylen, "not a finite number");
      return -1;
    }
    return 0;

  case PS_COL_DATETIME: {
    int rc = PS_EINVAL;
    if (json_is_string(v)) {
      rc = ps_time_parse(json_string_value(v), json_string_length(v), &out->i);
    } else if (json_is_number(v)) {
      double d = json_number_value(v);
      if (isfinite(d) && d >= 0 && d < 1e20) {
        char t[32];
        int n = json_is_integer(v) ? snprintf(t, sizeof t, "%lld", (long long)json_integer_value(v))
                                   : snprintf(t, sizeof t, "%.0f", floor(d));
        rc = ps_time_parse(t, (size_t)n, &out->i);
      }
    }
    if (rc != 0) {
      ps__describe(v, why, whylen, "not a time (epoch s/ms/us/ns or ISO-8601, 1970..2105)");
      return -1;
    }
    return 0;
  }
  }
  return -1;
}

/* The value at c's path in obj, or NULL if something on the way is missing. */
static json_t *ps__lookup(const ps__jcol *c, json_t *obj) {
  json_t *cur = obj;
  for (size_t i = 0; i < c->npath; i++) {
    if (!json_is_object(cur))
      return NULL;
    cur = json_object_get(cur, c->path[i]);
    if (!cur)
      return NULL;
  }
  return cur;
}

static int ps__consumed(const ps__json_decoder *dec, const char *key, size_t klen) {
  for (size_t j = 0; j < dec->ncols; j++)
    if (strlen(dec->cols[j].path[0]) == klen && !memcmp(dec->cols[j].path[0], key, klen))
      return 1;
  return 0;
}

static int ps__decode(ps_decoder *bd, const ps_delivery *d, ps_sink *sink, char *err, size_t errlen) {
  ps__json_decoder *dec = (ps__json_decoder *)bd;
  json_error_t je;
  json_t *root =
      json_loadb(d->body ? d->body : "", d->body ? d->len : 0, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
  if (!root) {
    snprintf(err, errlen, "not JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    return PS_EINVAL;
  }
  int is_array = json_is_array(root);
  size_t nobj = is_array ? json_array_size(root) : 1;
  int rc = PS_EINVAL;
  if (!is_array && !json_is_object(root)) {
    snprintf(err, errlen, "the body is %s, not an object or an array of objects", ps__json_kind(root));
    goto cleanup;
  }
  if (nobj > (size_t)0x7fffffff / (dec->ntable ? dec->ntable : 1)) {
    snprintf(err, errlen, "too many objects (%zu)", nobj);
    goto cleanup;
  }
  if (nobj * dec->ntable > dec->cells_cap) {
    dec->cells_cap = nobj * dec->ntable * 2 + 1;
    free(dec->cells);
    dec->cells = malloc(dec->cells_cap * sizeof *dec->cells);
    if (!dec->cells)
      abort();
  }
  ps_buf_reset(&dec->scratch);
  for (size_t k = 0; k < nobj; k++) {
    json_t *obj = is_array ? json_array_get(root, k) : root;
    char at[40] = "";
    if (is_array)
      snprintf(at, sizeof at, "element %zu: ", k);
    if (!json_is_object(obj)) {
      snprintf(err, errlen, "%sis %s, not an object", at, ps__json_kind(obj));
      goto cleanup;
    }
    ps__cell *cells = dec->cells + k * dec->ntable;
    for (size_t j = 0; j < dec->ncols; j++) {
      const ps__jcol *c = &dec->cols[j];
      json_t *v = ps__lookup(c, obj);
      if (!v || json_is_null(v)) {
        if (c->required) {
          snprintf(err, errlen, "%sfield \"%s\" is required but %s", at, c->from, v ? "null" : "missing");
          goto cleanup;
        }
        cells[j] = c->def; /* the default, or zeros: the type's zero */
        continue;
      }
      char why[160];
      if (ps__coerce(c, v, &cells[j], &dec->scratch, why, sizeof why) != 0) {
        snprintf(err, errlen, "%sfield \"%s\" (%s): %s", at, c->from, ps__type_name(c->type), why);
        goto cleanup;
      }
    }
    if (dec->keep_unknown) {
      ps__cell *u = &cells[dec->ncols];
      memset(u, 0, sizeof *u);
      u->in_scratch = 1;
      u->off = dec->scratch.len;
      ps_buf_putc(&dec->scratch, '{');
      int first = 1;
      for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        if (ps__consumed(dec, key, klen))
          continue;
        if (!first)
          ps_buf_putc(&dec->scratch, ',');
        first = 0;
        ps_pbjson_put_string(&dec->scratch, key, klen);
        ps_buf_putc(&dec->scratch, ':');
        ps__put_json(&dec->scratch, json_object_iter_value(it));
      }
      ps_buf_putc(&dec->scratch, '}');
      u->len = dec->scratch.len - u->off;
    }
  }

  /* Every object coerced: now the rows go in. */
  for (size_t k = 0; k < nobj; k++) {
    const ps__cell *cells = dec->cells + k * dec->ntable;
    for (size_t j = 0; j < dec->ntable; j++) {
      ps_value *v = &dec->row[j];
      const ps__cell *c = &cells[j];
      v->i = c->i;
      v->u = c->u;
      v->f = c->f;
      v->s = c->in_scratch ? dec->scratch.data + c->off : c->s ? c->s : "";
      v->len = c->len;
    }
    ps_sink_write(sink, dec->row);
  }
  rc = (int)nobj;

cleanup:
  json_decref(root);
  return rc;
}

static void ps__destroy(ps_decoder *bd) {
  ps__json_decoder *dec = (ps__json_decoder *)bd;
  if (!dec)
    return;
  for (size_t j = 0; j < dec->ncols; j++) {
    ps__jcol *c = &dec->cols[j];
    free(c->name);
    free(c->from);
    for (size_t i = 0; i < c->npath; i++)
      free(c->path[i]);
    free(c->path);
    free(c->default_text);
  }
  if (dec->keep_unknown && dec->table_cols)
    free((char *)dec->table_cols[dec->ncols].name);
  free(dec->cols);
  free(dec->table_cols);
  free(dec->cells);
  free(dec->row);
  ps_buf_free(&dec->scratch);
  free(dec);
}

static const ps_decoder_ops ps__ops = {"json", ps__decode, ps__destroy};

static char *ps__strdup(const char *s) {
  char *p = strdup(s);
  if (!p)
    abort();
  return p;
}

/* Fills c's default from its text; 0, or -1 with why. */
static int ps__prepare_default(ps__jcol *c, char *why, size_t whylen) {
  c->has_default = 1;
  if (c->type == PS_COL_STRING) {
    c->def.s = c->default_text;
    c->def.len = strlen(c->default_text);
    return 0;
  }
  json_t *v = json_string(c->default_text);
  if (!v) {
    snprintf(why, whylen, "not UTF-8");
    return -1;
  }
  ps_buf unused = PS_BUF_INIT;
  int rc = ps__coerce(c, v, &c->def, &unused, why, whylen);
  ps_buf_free(&unused);
  json_decref(v);
  return rc;
}

ps_decoder *ps_decoder_json_create(const ps_decoder_conf *conf, ps_table *table_out) {
  ps__json_decoder *dec = calloc(1, sizeof *dec);
  if (!dec)
    abort();
  dec->base.ops = &ps__ops;
  dec->ncols = conf->ncolumns;
  dec->keep_unknown = conf->keep_unknown != 0;
  dec->ntable = dec->ncols + (size_t)dec->keep_unknown;
  dec->cols = calloc(dec->ncols ? dec->ncols : 1, sizeof *dec->cols);
  dec->table_cols = calloc(dec->ntable ? dec->ntable : 1, sizeof *dec->table_cols);
  dec->row = calloc(dec->ntable ? dec->ntable : 1, sizeof *dec->row);
  if (!dec->cols || !dec->table_cols || !dec->row)
    abort();
  for (size_t j = 0; j < dec->ncols; j++) {
    const ps_json_column_conf *cc = &conf->columns[j];
    ps__jcol *c = &dec->cols[j];
    c->name = ps__strdup(cc->name);
    c->from = ps__strdup(cc->from && cc->from[0] ? cc->from : cc->name);
    c->type = cc->type;
    c->required = cc->required != 0;
    /* Split the path at dots. */
    size_t n = 1;
    for (const char *p = c->from; *p; p++)
      n += *p == '.';
    c->path = calloc(n, sizeof *c->path);
    if (!c->path)
      abort();
    const char *seg = c->from;
    for (;;) {
      const char *dot = strchr(seg, '.');
      size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
      c->path[c->npath] = strndup(seg, len);
      if (!c->path[c->npath++])
        abort();
      if (!dot)
        break;
      seg = dot + 1;
    }
    dec->table_cols[j].name = c->name;
    dec->table_cols[j].type = c->type;
    for (size_t k = 0; k < j; k++)
      if (!strcmp(dec->cols[k].name, c->name)) {
        ps_error("json decoder: two columns have the same name", "column", c->name);
        goto fail;
      }
    if (cc->default_value) {
      c->default_text = ps__strdup(cc->default_value);
      char why[160];
      if (ps__prepare_default(c, why, sizeof why) != 0) {
        ps_error("json decoder: a column's default_value does not fit its type", "column", c->name, "type",
                 ps__type_name(c->type), "error", why);
        goto fail;
      }
    }
  }
  if (dec->keep_unknown) {
    const char *u = conf->unknown_column && conf->unknown_column[0] ? conf->unknown_column : "extra";
    for (size_t k = 0; k < dec->ncols; k++)
      if (!strcmp(dec->cols[k].name, u)) {
        ps_error("json decoder: the unknown_column is also a configured column", "column", u);
        goto fail;
      }
    dec->table_cols[dec->ncols].name = ps__strdup(u);
    dec->table_cols[dec->ncols].type = PS_COL_STRING;
  }
  table_out->ncols = dec->ntable;
  table_out->cols = dec->table_cols;
  return &dec->base;
fail:
  ps__destroy(&dec->base);
  return NULL;
}
