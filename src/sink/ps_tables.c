/* ps_tables: the tables penstock creates (see ps_sink.h). */
#include "sink/ps_sink.h"

static const ps_column ps__events_cols[PS_EV_NCOLS] = {
    [PS_EV_EVENT_ID] = {"event_id", PS_COL_STRING},
    [PS_EV_EVENT_TYPE] = {"event_type", PS_COL_STRING},
    [PS_EV_EVENT_TIME] = {"event_time", PS_COL_DATETIME},
    [PS_EV_EVENT_TIMESTAMP] = {"event_timestamp", PS_COL_STRING},
    [PS_EV_RECEIVED_AT] = {"received_at", PS_COL_DATETIME},
    [PS_EV_SESSION_ID] = {"session_id", PS_COL_STRING},
    [PS_EV_USER_ID] = {"user_id", PS_COL_INT64},
    [PS_EV_DEVICE_ID] = {"device_id", PS_COL_STRING},
    [PS_EV_CLIENT_ID] = {"client_id", PS_COL_STRING},
    [PS_EV_OS] = {"os", PS_COL_STRING},
    [PS_EV_APP_VERSION] = {"app_version", PS_COL_STRING},
    [PS_EV_PAYLOAD] = {"payload", PS_COL_STRING},
};

/* ReplacingMergeTree on received_at: a redelivered event (same type and id)
   collapses to one row when parts merge, keeping the latest copy. The engine
   syntax is the one both ClickHouse 18.x and current releases accept. */
const ps_table ps_events_table = {
    "events",
    PS_EV_NCOLS,
    ps__events_cols,
    "ENGINE = ReplacingMergeTree(received_at) PARTITION BY toYYYYMM(event_time) ORDER BY (event_type, event_id)",
};
