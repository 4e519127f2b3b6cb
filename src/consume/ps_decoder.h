/*
 * ps_decoder: turns a message taken from a queue into rows.
 *
 * A decoder is a struct of operations; the consumer calls decode once per
 * message, and the decoder writes the message's rows into the sink. A message
 * either decodes completely or not at all: on error no row has been written,
 * and the reason (for the dead-letter headers and the log) is in err.
 */
#ifndef PS_DECODER_H
#define PS_DECODER_H

#include <stddef.h>

#include "broker/ps_broker.h"
#include "sink/ps_sink.h"

typedef struct ps_decoder ps_decoder;

typedef struct ps_decoder_ops {
  const char *name;
  /** Writes d's rows into sink; returns the number of rows (>= 0) or PS_EINVAL with err. */
  int (*decode)(ps_decoder *dec, const ps_delivery *d, ps_sink *sink, char *err, size_t errlen);
  void (*destroy)(ps_decoder *dec);
} ps_decoder_ops;

struct ps_decoder {
  const ps_decoder_ops *ops;
};

/**
 * The `events` decoder: a proto3-JSON `Events` message (as the workers publish
 * it) becomes one row of ps_events_table per event. received_at comes from the
 * message's AMQP timestamp (the time the gateway received the batch), else now.
 */
ps_decoder *ps_decoder_events_create(void);

typedef struct ps_decoder_conf ps_decoder_conf; /* config/ps_topology_config.h */

/**
 * The `json` decoder: a message body that is a JSON object, or an array of
 * objects, becomes one row per object; each configured column reads its field
 * (`from`, a dotted path into nested objects) and coerces it to the column's
 * type; missing or null fields take default_value or the type's zero. A
 * required field that is missing or null, a value that does not coerce, or a
 * body that is not an object or an array of objects makes the whole message
 * undecodable (PS_EINVAL, with the field and the array index in err).
 * With keep_unknown, the top-level fields no column reads go, as one compact
 * JSON object, into the String column unknown_column (default "extra").
 * Fills table_out->ncols and ->cols (the columns in config order, then the
 * unknown column; cols points into the decoder and lives until it is
 * destroyed); table_out->name and ->engine are left to the caller. conf is
 * copied. Returns NULL (the reason logged) if conf cannot work: a
 * default_value that does not coerce to its column's type, or two columns
 * with the same name.
 */
ps_decoder *ps_decoder_json_create(const ps_decoder_conf *conf, ps_table *table_out);

static inline int ps_decoder_decode(ps_decoder *dec, const ps_delivery *d, ps_sink *sink, char *err,
                                    size_t errlen) {
  return dec->ops->decode(dec, d, sink, err, errlen);
}
static inline void ps_decoder_destroy(ps_decoder *dec) {
  if (dec)
    dec->ops->destroy(dec);
}

#endif
