"""The consumer fleet as configuration: `penstock serve` runs the consumers of its topology file
(PENSTOCK_CONFIG, YAML; config/penstock.example.yaml documents every key), or of the built-in one.

Each test writes its own topology into a temporary directory, with exchange, queue and table names of its own
(pstest.new_id), so tests never see each other's messages on the shared RabbitMQ; what a test declared is
deleted when it ends. Messages reach the fleet the two ways production's do: gRPC events that penstock
publishes to the file's event_exchange, and JSON records that another service publishes (pika) to an exchange
the file declares. What lands is checked where it lands: rows in ClickHouse, requests at a real local HTTP
server (pstest.HttpReceiver), dead letters in `<queue>.error`.
"""

import datetime
import json
import os
import re
import subprocess
import time

import pika
import pytest
import yaml

import pstest
from pstest import pb

# Every queue of the built-in topology (config/penstock.default.yaml) but webengage_event_q, which is declared
# only with WEBENGAGE_ENABLED=true.
DEFAULT_QUEUES = ("grpc_clickhouse_event_q", "clickhouse_click_event_q", "app_init_event_q", "branch_event_q",
                  "graphy_event_q", "trace_log", "affiliate_orders_event_q", "post_log_events_q",
                  "sentiment_log_events_q", "shopify_events_q")
WEBENGAGE_QUEUE = "webengage_event_q"

# What every test topology starts with: its own event and dead-letter exchanges, and the test ClickHouse.
HEAD = """\
event_exchange: "%(ex)s"
dead_letter_exchange: "%(dlx)s"
clickhouse_connections:
  - name: test
    url: "%(ch_url)s"
    database: "%(db)s"
    timeout_ms: 10000
"""


# ------------------------------------------------------------------ helpers

class Fleet:
    """One test's names, topology file and broker channel.

    names: ex (event exchange), dlx (dead-letter exchange), ch_url, db, plus whatever the test adds with
    queue()/table()/exchange(); write() fills a YAML template with them (%(name)s). cleanup() deletes every
    queue (and its .error queue) and exchange named here.
    """

    def __init__(self, tmp_path, db):
        self.tag = pstest.new_id("fl")
        self.dir = tmp_path
        self.names = {"ex": self.tag + ".events.tx", "dlx": self.tag + ".dead.dx", "ch_url": pstest.CLICKHOUSE_URL,
                      "db": db, "tag": self.tag}
        self.db = db
        self._queues, self._exchanges = [], [self.names["ex"], self.names["dlx"]]
        self.conn = pstest.amqp_connection()
        self.ch = self.conn.channel()

    def queue(self, key):
        assert key not in self.names, key
        self.names[key] = "%s.%s" % (self.tag, key)
        self._queues.append(self.names[key])
        return self.names[key]

    def exchange(self, key, suffix=".tx"):
        assert key not in self.names, key
        self.names[key] = "%s.%s%s" % (self.tag, key, suffix)
        self._exchanges.append(self.names[key])
        return self.names[key]

    def table(self, key):
        assert key not in self.names, key
        self.names[key] = "%s_%s" % (key, self.tag)
        return self.names[key]

    def write(self, template, head=True):
        """Writes the topology file (HEAD + template, filled with the names); returns its path."""
        path = os.path.join(str(self.dir), "penstock.yaml")
        with open(path, "w") as f:
            f.write(((HEAD if head else "") + template) % self.names)
        return path

    def start(self, penstock_proc, template, env=None, **kw):
        e = {"PENSTOCK_CONFIG": self.write(template)}
        e.update(env or {})
        return penstock_proc(env=e, **kw)

    def publish(self, exchange, key, body, message_id=None):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode("utf-8")
        self.ch.basic_publish(exchange, key, body, pika.BasicProperties(
            content_type="application/json", delivery_mode=2, message_id=message_id))

    def ready(self, queue):
        """Messages ready in queue (delivered but unacknowledged ones are not counted)."""
        return self.ch.queue_declare(queue, passive=True).method.message_count

    def consumers(self, queue):
        """Consumers attached to queue."""
        return self.ch.queue_declare(queue, passive=True).method.consumer_count

    def dead_letters(self, queue, want, timeout=30):
        """{message id: (properties, body)} of the first `want` messages of queue's .error queue."""
        got = pstest.get_messages(self.ch, queue + ".error", want, timeout)
        assert len(got) == want, "%d of %d dead letters reached %s.error" % (len(got), want, queue)
        return {props.message_id: (props, body) for props, body in got}

    def cleanup(self):
        try:
            ch = self.conn.channel()
            for q in self._queues:
                for name in (q, q + ".error"):
                    try:
                        ch.queue_delete(name)
                    except pika.exceptions.ChannelClosedByBroker:
                        ch = self.conn.channel()
            for x in self._exchanges:
                try:
                    ch.exchange_delete(x)
                except pika.exceptions.ChannelClosedByBroker:
                    ch = self.conn.channel()
        finally:
            self.conn.close()


@pytest.fixture
def fleet(tmp_path, db):
    f = Fleet(tmp_path, db)
    yield f
    f.cleanup()


@pytest.fixture
def own_db(clickhouse):
    """A database of the test's own: the built-in topology's tables have fixed names."""
    name = clickhouse.create_database("pstestfleet")
    yield name
    clickhouse.drop_database(name)


def stays(fn, seconds, what):
    """Asserts that fn() stays true for `seconds` (checked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert fn(), "%s stopped holding" % what
        time.sleep(0.1)


def count_where(clickhouse, db, table, column, values):
    """{value: rows} in db.table for the given values of column."""
    if not values:
        return {}
    rows = clickhouse.rows("SELECT %s AS v, count() AS n FROM %s.%s WHERE %s IN (%s) GROUP BY %s"
                           % (column, db, table, column, ",".join(pstest.sql_str(v) for v in values), column))
    return {r["v"]: int(r["n"]) for r in rows}


def exactly_once(counts, ids):
    """Problems with counts ({id: rows}) against the ids that must each be there once."""
    missing = [i for i in ids if i not in counts]
    dups = {i: n for i, n in counts.items() if n != 1}
    extra = [i for i in counts if i not in ids]
    out = []
    if missing:
        out.append("%d missing (e.g. %s)" % (len(missing), missing[:3]))
    if dups:
        out.append("%d more than once (e.g. %s)" % (len(dups), list(dups.items())[:3]))
    if extra:
        out.append("%d unexpected (e.g. %s)" % (len(extra), extra[:3]))
    return out


def landed(clickhouse, db, table, column, ids):
    """True when every id is in db.table (the table may not exist yet)."""
    if not clickhouse.table_exists(db, table):
        return False
    return len(count_where(clickhouse, db, table, column, ids)) == len(ids)


def sent_events(batches):
    """{event id: (Events, Event, expected unix event_time or None)} of EventFactory batches."""
    out = {}
    for b, expects in batches:
        for ev, exp in zip(b.events, expects):
            out[ev.id] = (b, ev, exp)
    return out


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_problems(eid, got, sent, window, rendered_times=False):
    """Differences between a landed event (a ClickHouse row, or an HTTP sink's JSON object) and what was sent.

    rendered_times: event_time and received_at are RFC 3339 strings (HTTP) rather than unix seconds.
    """
    if eid not in sent:
        return ["unknown id %s" % eid]
    batch, ev, exp_t = sent[eid]
    h = batch.header
    type_name, sub = pstest.payload_of(ev)
    want = {"event_type": type_name, "event_timestamp": ev.timestamp, "session_id": h.sessionId,
            "user_id": h.userId, "device_id": h.deviceId, "client_id": h.clientId, "os": h.os,
            "app_version": h.appVersion}
    out = []
    for k, v in want.items():
        g = got.get(k)
        if k == "user_id" and g is not None:
            g = int(g)
        if g != v:
            out.append("%s: %s = %r, want %r" % (eid, k, g, v))
    payload = got.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            out.append("%s: payload is not JSON: %r" % (eid, payload[:200]))
    if payload != pstest.payload_json(sub):
        out.append("%s: payload %r, want %r" % (eid, payload, pstest.payload_json(sub)))
    t0, t1 = window
    if rendered_times:
        rt = datetime.datetime.strptime(got["received_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        if exp_t is not None and got["event_time"] != rfc3339(exp_t):
            out.append("%s: event_time %r, want %r" % (eid, got["event_time"], rfc3339(exp_t)))
    else:
        rt = int(got["rt"])
        if exp_t is not None and int(got["t"]) != exp_t:
            out.append("%s: event_time %s, want %d" % (eid, got["t"], exp_t))
    if not t0 - 1 <= rt <= t1 + 1:
        out.append("%s: received_at %s outside the test's window" % (eid, rt))
    return out


EVENT_SELECT = ("SELECT event_id, event_type, event_timestamp, toUnixTimestamp(event_time) AS t, "
                "toUnixTimestamp(received_at) AS rt, session_id, user_id, device_id, client_id, os, app_version, "
                "payload FROM %s.%s")


# ------------------------------------------------- 1. each sink lands exactly what was published

def test_events_decoder_direct_clickhouse_lands_every_event_once(penstock_proc, fleet, clickhouse):
    """events decoder + direct ClickHouse sink, two consumers of two queues: the '#' queue lands every event
    in its configured table (a MergeTree, which keeps duplicates visible), the ClickEvent queue only the clicks
    in its own (the default engine); every column as sent."""
    f = fleet
    f.queue("all"), f.queue("clicks"), f.table("all_events"), f.table("click_rows")
    p = f.start(penstock_proc, """\
queues:
  - {name: "%(all)s", dead_letter: true}
  - {name: "%(clicks)s", dead_letter: true}
bindings:
  - {queue: "%(all)s", key: "#"}
  - {queue: "%(clicks)s", key: ClickEvent}
consumers:
  - queue: "%(all)s"
    count: 2
    decoder: {type: events}
    sink:
      type: clickhouse
      connection: test
      table: %(all_events)s
      engine: ENGINE = MergeTree ORDER BY (event_type, event_id)
      flush_ms: 200
  - name: clicks-%(tag)s
    queue: "%(clicks)s"
    count: 1
    decoder: {type: events}
    sink:
      type: clickhouse
      connection: test
      table: %(click_rows)s
      flush_ms: 200
""")
    factory = pstest.EventFactory(f.tag, seed=1)
    wall0 = time.time()
    batches = factory.mixed_batches(per_type=5, batch_size=8)
    for b, _ in batches:
        assert p.dispatch(b).status == "SUCCESS"
    sent = sent_events(batches)
    clicks = [i for i, (_, ev, _) in sent.items() if ev.WhichOneof("EventOf") == "clickEvent"]
    assert len(clicks) == 5
    t_all, t_clicks = f.names["all_events"], f.names["click_rows"]
    pstest.poll(lambda: landed(clickhouse, f.db, t_all, "event_id", list(sent)), 30, what="every event in %s" % t_all)
    pstest.poll(lambda: landed(clickhouse, f.db, t_clicks, "event_id", clicks), 30, what="the clicks in %s" % t_clicks)
    p.stop()
    wall1 = time.time()

    problems = exactly_once(count_where(clickhouse, f.db, t_all, "event_id", list(sent)), set(sent))
    assert not problems, "%s: %s" % (t_all, "; ".join(problems))
    total = int(clickhouse.scalar("SELECT count() FROM %s.%s" % (f.db, t_all)))
    assert total == len(sent), "%s holds %d rows, %d events were sent" % (t_all, total, len(sent))
    rows = clickhouse.rows(EVENT_SELECT % (f.db, t_all))
    problems = [x for r in rows for x in event_problems(r["event_id"], r, sent, (wall0, wall1))]
    assert not problems, "%d column mismatches, first:\n%s" % (len(problems), "\n".join(problems[:10]))

    got_clicks = {r["event_id"]: r for r in clickhouse.rows(EVENT_SELECT % (f.db, t_clicks))}
    assert sorted(got_clicks) == sorted(clicks), "the ClickEvent queue's table holds %s" % sorted(got_clicks)
    problems = [x for i, r in got_clicks.items() for x in event_problems(i, r, sent, (wall0, wall1))]
    assert not problems, "\n".join(problems[:10])
    assert f.ready(f.names["all"]) == 0 and f.ready(f.names["clicks"]) == 0
    assert f.ready(f.names["all"] + ".error") == 0 and f.ready(f.names["clicks"] + ".error") == 0


@pytest.mark.parametrize("buffered", [False, True], ids=["direct", "buffered"])
def test_a_sink_inserts_once_a_consumers_prefetch_window_is_full(buffered, penstock_proc, fleet, clickhouse):
    """A consumer holding `prefetch` unacknowledged messages gets no more until it acks, and it acks a message
    only once the insert holding its rows succeeded: so with its window full the consumer (direct) or the
    sinker (buffered) inserts, however far flush_rows and flush_ms are. Four one-event messages with prefetch 2,
    flush_rows 1000 and flush_ms 10 minutes land in two inserts within seconds."""
    f = fleet
    f.queue("q"), f.table("rows")
    buffering = "      buffered: true\n      buffer_rows: 1000\n" if buffered else ""
    p = f.start(penstock_proc, """\
queues:
  - {name: "%(q)s", dead_letter: true}
bindings:
  - {queue: "%(q)s", key: "#"}
consumers:
  - queue: "%(q)s"
    count: 1
    prefetch: 2
    decoder: {type: events}
    sink:
      type: clickhouse
      connection: test
      table: %(rows)s
""" + buffering + """\
      flush_rows: 1000
      flush_ms: 600000
""")
    factory = pstest.EventFactory(f.tag, seed=3)
    batches = factory.mixed_batches(per_type=1, batch_size=1)[:4]
    for b, _ in batches:
        assert p.dispatch(b).status == "SUCCESS"
    ids = list(sent_events(batches))
    assert len(ids) == 4
    pstest.poll(lambda: landed(clickhouse, f.db, f.names["rows"], "event_id", ids), 30,
                what="four events inserted with flush_ms 10 minutes")
    # The consumer counts an insert once ClickHouse answered it, just after its rows show.
    def inserts():
        return p.metrics().total("penstock_inserts_total", queue=f.names["q"], result="ok")
    pstest.poll(lambda: inserts() >= 2, 10, what="two inserts counted")
    assert inserts() == 2, "%s inserts" % inserts()
    p.stop()


@pytest.mark.parametrize("buffered", [False, True], ids=["direct", "buffered"])
def test_a_consumer_holding_max_held_bytes_inserts_before_taking_more(buffered, penstock_proc, fleet, clickhouse):
    """What a consumer holds unacknowledged is bounded in bytes too: with max_held_bytes 4096, six JSON messages of
    about 3000 bytes each land two by two, in three inserts within seconds, though prefetch (1000), flush_rows
    (100000) and flush_ms (10 minutes) are all far away. Direct: the consumer flushes once it holds 4096 bytes;
    buffered: it has the sinker insert at once and takes nothing more until the insert lets it acknowledge."""
    f = fleet
    f.exchange("big_x", ".dx"), f.queue("q"), f.table("rows")
    buffering = "      buffered: true\n      buffer_rows: 100000\n" if buffered else ""
    p = f.start(penstock_proc, """\
exchanges:
  - {name: "%(big_x)s", type: direct}
queues:
  - {name: "%(q)s", dead_letter: true}
bindings:
  - {queue: "%(q)s", exchange: "%(big_x)s", key: big}
consumers:
  - queue: "%(q)s"
    count: 1
    prefetch: 1000
    max_held_bytes: 4096
    decoder:
      type: json
      columns:
        - {name: id, required: true}
      keep_unknown: true
      unknown_column: rest
    sink:
      type: clickhouse
      connection: test
      table: %(rows)s
""" + buffering + """\
      flush_rows: 100000
      flush_ms: 600000
""")
    ids = ["%s-%d" % (f.tag, i) for i in range(6)]
    for i in ids:
        body = {"id": i, "blob": "x" * 3000}
        f.publish(f.names["big_x"], "big", body, message_id=i)
    pstest.poll(lambda: landed(clickhouse, f.db, f.names["rows"], "id", ids), 30,
                what="six 3000-byte messages inserted with flush_ms 10 minutes")

    def inserts():
        return p.metrics().total("penstock_inserts_total", queue=f.names["q"], result="ok")
    pstest.poll(lambda: inserts() >= 3, 10, what="three inserts counted")
    assert inserts() == 3, "%s inserts" % inserts()
    rows = clickhouse.rows("SELECT id, length(rest) AS n FROM %s.%s" % (f.db, f.names["rows"]))
    assert sorted(r["id"] for r in rows) == sorted(ids), rows
    assert all(int(r["n"]) > 3000 for r in rows), "the blobs are kept whole: %s" % [r["n"] for r in rows]
    assert f.ready(f.names["q"]) == 0
    p.stop()


def test_json_decoder_direct_clickhouse_maps_coerces_and_keeps_unknown(penstock_proc, fleet, clickhouse):
    """json decoder + direct ClickHouse sink: records another service publishes (objects, and arrays of them)
    land one row per object, with renamed and nested fields (`from`), defaults, coercions to each column's
    type, and the fields no column reads kept as JSON in the catch-all column."""
    f = fleet
    f.exchange("orders_x", ".dx"), f.queue("orders_q"), f.table("orders")
    p = f.start(penstock_proc, """\
exchanges:
  - {name: "%(orders_x)s", type: direct}
queues:
  - {name: "%(orders_q)s", dead_letter: true}
bindings:
  - {queue: "%(orders_q)s", exchange: "%(orders_x)s", key: order.created}
consumers:
  - name: orders-%(tag)s
    queue: "%(orders_q)s"
    count: 1
    decoder:
      type: json
      columns:
        - {name: order_id, from: order.id, required: true}
        - {name: total, from: order.total, type: float64, default: "0"}
        - {name: user_id, type: int64}
        - {name: items, type: uint64, default: "1"}
        - {name: placed_at, type: datetime}
        - {name: channel, default: web}
        - {name: note}
      keep_unknown: true
      unknown_column: rest
    sink:
      type: clickhouse
      connection: test
      table: %(orders)s
      flush_ms: 200
""")
    t = f.names["orders"]
    tag = f.tag
    one = {"order": {"id": tag + "-1", "total": 12.5}, "user_id": 42, "items": 3,
           "placed_at": "2024-05-01T10:00:00Z", "channel": "app", "note": "hello, ünïcode ✓",
           "ua": "curl/8", "tags": ["a", "b"], "nested": {"k": [1, 2.5, None, True]}}
    arr = [
        # numbers as strings, a number as the string column, epoch milliseconds, defaults for the rest
        {"order": {"id": 7001, "total": "19.90"}, "user_id": "-5", "placed_at": 1714557600123},
        # null takes the default; a double without fraction is an int64; uint64 max as text; epoch seconds as
        # text; an object and a boolean in string columns become their JSON text
        {"order": {"id": tag + "-3", "total": None}, "user_id": 12.0, "items": "18446744073709551615",
         "placed_at": "1714557600", "note": {"a": 1, "b": [True, None]}, "channel": True, "z": None},
    ]
    three = {"order": {"id": tag + "-4"}, "note": 123.5, "placed_at": "2024-05-01T12:30:00+02:00"}
    f.publish(f.names["orders_x"], "order.created", one, message_id=tag + "-m1")
    f.publish(f.names["orders_x"], "order.created", arr, message_id=tag + "-m2")
    f.publish(f.names["orders_x"], "order.created", three, message_id=tag + "-m3")
    ids = [tag + "-1", "7001", tag + "-3", tag + "-4"]
    pstest.poll(lambda: landed(clickhouse, f.db, t, "order_id", ids), 30, what="4 rows in %s" % t)
    p.stop()

    types = {r["name"]: r["type"] for r in clickhouse.rows("DESCRIBE TABLE %s.%s" % (f.db, t))}
    assert types == {"order_id": "String", "total": "Float64", "user_id": "Int64", "items": "UInt64",
                     "placed_at": "DateTime", "channel": "String", "note": "String", "rest": "String"}, types
    rows = clickhouse.rows("SELECT order_id, total, toString(user_id) AS user_id, toString(items) AS items, "
                           "toUnixTimestamp(placed_at) AS placed_at, channel, note, rest FROM %s.%s" % (f.db, t))
    got = {r["order_id"]: r for r in rows}
    assert sorted(got) == sorted(ids) and len(rows) == 4, "rows: %s" % rows
    want = {
        ids[0]: dict(total=12.5, user_id="42", items="3", placed_at=1714557600, channel="app",
                     note="hello, ünïcode ✓",
                     rest={"ua": "curl/8", "tags": ["a", "b"], "nested": {"k": [1, 2.5, None, True]}}),
        ids[1]: dict(total=19.9, user_id="-5", items="1", placed_at=1714557600, channel="web", note="", rest={}),
        ids[2]: dict(total=0, user_id="12", items="18446744073709551615", placed_at=1714557600, channel="true",
                     note={"a": 1, "b": [True, None]}, rest={"z": None}),
        ids[3]: dict(total=0, user_id="0", items="1", placed_at=1714559400, channel="web", note="123.5", rest={}),
    }
    problems = []
    for oid, w in want.items():
        r = dict(got[oid])
        r["placed_at"] = int(r["placed_at"])
        r["rest"] = json.loads(r["rest"])
        if isinstance(w["note"], dict):
            r["note"] = json.loads(r["note"])
        for k, v in w.items():
            if r[k] != v:
                problems.append("%s: %s = %r, want %r" % (oid, k, r[k], v))
    assert not problems, "\n".join(problems)
    assert f.ready(f.names["orders_q"]) == 0 and f.ready(f.names["orders_q"] + ".error") == 0


def test_http_sink_forwards_every_event_once_single_and_batch(penstock_proc, fleet):
    """http sink: every event forwarded exactly once, one JSON object per request (body: single) or JSON arrays
    of up to batch_max (body: batch), with the configured method and headers, secrets taken from the
    environment (${VAR})."""
    f = fleet
    f.queue("single"), f.queue("batch")
    token = "tok-" + pstest.new_id("s")
    with pstest.HttpReceiver() as recv:
        f.names["url_single"], f.names["url_batch"] = recv.url("/single/events?src=penstock"), recv.url("/batch")
        p = f.start(penstock_proc, """\
queues:
  - {name: "%(single)s", dead_letter: true}
  - {name: "%(batch)s", dead_letter: true}
bindings:
  - {queue: "%(single)s", key: "#"}
  - {queue: "%(batch)s", key: "#"}
consumers:
  - name: fwd-single-%(tag)s
    queue: "%(single)s"
    count: 2
    decoder: {type: events}
    sink:
      type: http
      url: "%(url_single)s"
      headers:
        Authorization: Bearer ${PSTEST_FLEET_TOKEN}
        X-Source: penstock-test
      body: single
  - name: fwd-batch-%(tag)s
    queue: "%(batch)s"
    count: 1
    decoder: {type: events}
    sink:
      type: http
      url: "%(url_batch)s"
      method: PUT
      headers:
        X-Api-Key: "k-${PSTEST_FLEET_TOKEN}"
      body: batch
      batch_max: 4
""", env={"PSTEST_FLEET_TOKEN": token})
        factory = pstest.EventFactory(f.tag, seed=2)
        wall0 = time.time()
        batches = factory.mixed_batches(per_type=3, batch_size=9)
        for b, _ in batches:
            assert p.dispatch(b).status == "SUCCESS"
        sent = sent_events(batches)
        n = len(sent)

        def objects(reqs):
            out = []
            for r in reqs:
                body = r.json()
                out.extend(body if isinstance(body, list) else [body])
            return out

        recv.wait(lambda rs: len(objects(r for r in rs if r.status == 200)) >= n, 30,
                  what="%d events at /single" % n, path="/single/events?src=penstock")
        recv.wait(lambda rs: len(objects(r for r in rs if r.status == 200)) >= n, 30,
                  what="%d events at /batch" % n, path="/batch")
        p.stop()
        wall1 = time.time()
        single = recv.snapshot("/single/events?src=penstock")
        batch = recv.snapshot("/batch")
        assert len(recv.snapshot()) == len(single) + len(batch), "requests to other paths: %s" % recv.snapshot()

    problems = []
    for r in single:
        if r.method != "POST":
            problems.append("single: method %s" % r.method)
        if r.headers.get("authorization") != "Bearer " + token:
            problems.append("single: Authorization %r" % r.headers.get("authorization"))
        if r.headers.get("x-source") != "penstock-test":
            problems.append("single: X-Source %r" % r.headers.get("x-source"))
        if not r.headers.get("content-type", "").startswith("application/json"):
            problems.append("single: Content-Type %r" % r.headers.get("content-type"))
        if not isinstance(r.json(), dict):
            problems.append("single: body is not one JSON object: %r" % r.body[:200])
    for r in batch:
        body = r.json()
        if r.method != "PUT":
            problems.append("batch: method %s" % r.method)
        if r.headers.get("x-api-key") != "k-" + token:
            problems.append("batch: X-Api-Key %r" % r.headers.get("x-api-key"))
        if "authorization" in r.headers:
            problems.append("batch: the other consumer's Authorization header leaked in")
        if not isinstance(body, list) or not 1 <= len(body) <= 4:
            problems.append("batch: body is not a JSON array of 1..4 objects: %r" % r.body[:200])
    assert not problems, "\n".join(problems[:10])
    assert len(single) == n, "%d requests for %d events with body: single" % (len(single), n)
    assert any(len(r.json()) > 1 for r in batch), "body: batch never sent more than one event per request"

    columns = {"event_id", "event_type", "event_time", "event_timestamp", "received_at", "session_id", "user_id",
               "device_id", "client_id", "os", "app_version", "payload"}
    for label, reqs in (("single", single), ("batch", batch)):
        objs = []
        for r in reqs:
            body = r.json()
            objs.extend(body if isinstance(body, list) else [body])
        counts = {}
        for o in objs:
            counts[o.get("event_id")] = counts.get(o.get("event_id"), 0) + 1
        problems = exactly_once(counts, set(sent))
        assert not problems, "%s: %s" % (label, "; ".join(problems))
        problems = ["%s: keys %s" % (o.get("event_id"), sorted(o)) for o in objs if set(o) != columns]
        problems += [x for o in objs for x in event_problems(o["event_id"], o, sent, (wall0, wall1), True)]
        assert not problems, "%s: %d problems, first:\n%s" % (label, len(problems), "\n".join(problems[:10]))
    for q in (f.names["single"], f.names["batch"]):
        assert f.ready(q) == 0 and f.ready(q + ".error") == 0


# ------------------------------------------------------------ 2. the buffered sinker

def test_buffered_sink_flushes_on_size_on_time_and_at_shutdown_acking_only_after_insert(
        penstock_proc, fleet, clickhouse):
    """buffered: true. The consumers of a queue share one buffer: flush_rows rows land at once even when
    two consumers took them, well before flush_ms; fewer wait for flush_ms. Until their insert, the messages
    stay unacknowledged (a killed penstock gives them back to the queue) and a stopping penstock inserts what
    it holds."""
    f = fleet
    f.exchange("records", ".dx"), f.queue("size"), f.queue("time"), f.table("bysize"), f.table("bytime")
    template = """\
exchanges:
  - {name: "%(records)s", type: direct}
queues:
  - {name: "%(size)s", dead_letter: true}
  - {name: "%(time)s", dead_letter: true}
bindings:
  - {queue: "%(size)s", exchange: "%(records)s", key: size}
  - {queue: "%(time)s", exchange: "%(records)s", key: time}
consumers:
  - queue: "%(size)s"
    count: 2
    prefetch: 100
    decoder:
      type: json
      columns: [{name: id, required: true}, {name: n, type: int64}]
    sink:
      type: clickhouse
      connection: test
      table: %(bysize)s
      buffered: true
      buffer_rows: 1000
      flush_rows: 20
      flush_ms: 60000
  - queue: "%(time)s"
    count: 2
    prefetch: 100
    decoder:
      type: json
      columns: [{name: id, required: true}, {name: n, type: int64}]
    sink:
      type: clickhouse
      connection: test
      table: %(bytime)s
      buffered: true
      buffer_rows: 1000
      flush_rows: 1000
      flush_ms: 1500
"""
    t_size, t_time, q_size = f.names["bysize"], f.names["bytime"], f.names["size"]
    p = f.start(penstock_proc, template)
    # Both consumers of each queue attached: RabbitMQ then spreads the messages over them.
    pstest.poll(lambda: f.consumers(q_size) == 2 and f.consumers(f.names["time"]) == 2, 10,
                what="2 consumers on each queue")

    # On size: exactly flush_rows rows, one message each, over two consumers: one insert, long before flush_ms.
    first = ["%s-s%d" % (f.tag, i) for i in range(20)]
    for i, rid in enumerate(first):
        f.publish(f.names["records"], "size", {"id": rid, "n": i}, message_id=rid)
    pstest.poll(lambda: landed(clickhouse, f.db, t_size, "id", first), 15,
                what="20 rows (= flush_rows) that 2 consumers took to land together, without waiting for "
                     "flush_ms (60 s): one buffer per queue, not one batch per consumer")
    assert not exactly_once(count_where(clickhouse, f.db, t_size, "id", first), set(first))

    # On time: fewer rows wait for flush_ms (1.5 s), then land.
    timed = ["%s-t%d" % (f.tag, i) for i in range(3)]
    t0 = time.monotonic()
    for rid in timed:
        f.publish(f.names["records"], "time", {"id": rid}, message_id=rid)
    pstest.poll(lambda: landed(clickhouse, f.db, t_time, "id", timed), 15, interval=0.05,
                what="3 rows to land after flush_ms")
    took = time.monotonic() - t0
    assert took >= 1.4, "3 rows (flush_rows 1000) landed %.2fs after publishing, before flush_ms (1.5 s)" % took

    # Held, not acknowledged: fewer than flush_rows rows wait in the buffer; their messages have left the
    # queue (ready 0) but nothing landed; killed, penstock gives them back.
    held = ["%s-h%d" % (f.tag, i) for i in range(5)]
    for rid in held:
        f.publish(f.names["records"], "size", {"id": rid}, message_id=rid)
    pstest.poll(lambda: f.ready(q_size) == 0, 10, what="the consumers to take the 5 messages")
    stays(lambda: not count_where(clickhouse, f.db, t_size, "id", held), 1.0, "nothing of the 5 held rows landed")
    p.kill()
    pstest.poll(lambda: f.ready(q_size) == len(held), 10,
                what="the 5 held messages back in the queue after SIGKILL (if not, they were acknowledged "
                     "before their insert)")
    assert not count_where(clickhouse, f.db, t_size, "id", held)

    # A new penstock takes them into its buffer; SIGTERM flushes it.
    assert f.consumers(q_size) == 0
    p2 = f.start(penstock_proc, template)
    pstest.poll(lambda: f.ready(q_size) == 0, 10, what="the new penstock to take the 5 messages")
    stays(lambda: not count_where(clickhouse, f.db, t_size, "id", held), 0.5, "nothing of the held rows landed")
    p2.stop()
    problems = exactly_once(count_where(clickhouse, f.db, t_size, "id", held), set(held))
    assert not problems, "rows held in the buffer at SIGTERM: %s" % "; ".join(problems)
    assert f.ready(q_size) == 0, "messages left in the queue after a clean stop"
    assert f.ready(q_size + ".error") == 0 and f.ready(f.names["time"] + ".error") == 0
    total = int(clickhouse.scalar("SELECT count() FROM %s.%s" % (f.db, t_size)))
    assert total == len(first) + len(held), "%s holds %d rows, want %d" % (t_size, total, len(first) + len(held))


# ------------------------------------------------------------ 3. HTTP retries and refusals

HTTP_CONSUMER = """\
queues:
  - {name: "%(fwd)s", dead_letter: true}
bindings:
  - {queue: "%(fwd)s", key: "#"}
consumers:
  - name: fwd-%(tag)s
    queue: "%(fwd)s"
    count: 1
    decoder: {type: events}
    sink:
      type: http
      url: "%(url)s"
      body: single
      concurrency: 4
      max_retries: 5
      retry_base_ms: 50
      retry_max_ms: 5000
"""


def click_batch(ids, session="s"):
    b = pb.Events(header=pb.Header(sessionId=session))
    for i in ids:
        b.events.add(id=i, timestamp="1700000000").clickEvent.page = "p"
    return b


def test_http_sink_retries_5xx_honouring_retry_after(penstock_proc, fleet):
    """503 twice (the first with Retry-After: 1), then 200: every event arrives once, after exactly two extra
    attempts; the retry of the Retry-After answer waits the second it asked for; nothing is dead-lettered."""
    f = fleet
    q = f.queue("fwd")
    with pstest.HttpReceiver() as recv:
        f.names["url"] = recv.url("/hook")
        recv.answer(503, times=1, headers={"Retry-After": "1"}, body='{"error":"busy, come back in 1s"}')
        recv.answer(503, times=1, body='{"error":"busy"}')
        p = f.start(penstock_proc, HTTP_CONSUMER)
        ids = ["%s-%d" % (f.tag, i) for i in range(3)]
        assert p.dispatch(click_batch(ids)).status == "SUCCESS"
        reqs = recv.wait(lambda rs: len([r for r in rs if r.status == 200]) >= 3, 20, what="3 events delivered")
        m = p.metrics()
        p.stop()
        reqs = recv.snapshot()

    delivered = sorted(r.json()["event_id"] for r in reqs if r.status == 200)
    assert delivered == sorted(ids), "delivered %s" % delivered
    assert [r.status for r in reqs].count(503) == 2
    assert len(reqs) == 5, "%d requests for 3 events and two 503s: %s" % (len(reqs), reqs)
    ra = next(r for r in reqs if r.status == 503)  # the first answer: the one with Retry-After
    again = [r for r in reqs if r.body == ra.body and r.time > ra.time]
    assert again, "the request answered 503 + Retry-After was never retried"
    waited = again[0].time - ra.time
    assert waited >= 0.95, "retried %.3fs after 503 with Retry-After: 1" % waited
    other = next(r for r in reqs if r.status == 503 and r is not ra)
    again = [r for r in reqs if r.body == other.body and r.time > other.time]
    assert again and again[0].time - other.time < 0.9, \
        "the retry of a plain 503 (retry_base_ms 50) waited %.3fs" % (again[0].time - other.time if again else -1)
    assert f.ready(q) == 0 and f.ready(q + ".error") == 0
    assert m.total("penstock_messages_dead_lettered_total", queue=q) == 0


def test_http_sink_dead_letters_a_4xx_and_goes_on(penstock_proc, fleet):
    """A 400 is not retried: the message holding the refused event goes to <queue>.error with the status and
    the target's answer as its reason; the events sent before and after it are forwarded."""
    f = fleet
    q = f.queue("fwd")
    bad_id = f.tag + "-bad"
    with pstest.HttpReceiver() as recv:
        f.names["url"] = recv.url("/hook")
        recv.answer(400, match=lambda r: bad_id.encode() in r.body, body='{"error":"invalid event payload"}')
        p = f.start(penstock_proc, HTTP_CONSUMER)
        before = ["%s-a%d" % (f.tag, i) for i in range(3)]
        after = ["%s-b%d" % (f.tag, i) for i in range(3)]
        assert p.dispatch(click_batch(before)).status == "SUCCESS"
        recv.wait(lambda rs: len([r for r in rs if r.status == 200]) >= 3, 20, what="the first 3 events")
        assert p.dispatch(click_batch([bad_id], session="bad")).status == "SUCCESS"
        assert p.dispatch(click_batch(after)).status == "SUCCESS"
        recv.wait(lambda rs: len([r for r in rs if r.status == 200]) >= 6, 20,
                  what="the events after the refused one")
        letters = f.dead_letters(q, 1)
        # The consumer counts a dead letter once RabbitMQ confirmed it, just after it shows in the queue.
        pstest.poll(lambda: p.metrics().total("penstock_messages_dead_lettered_total", queue=q,
                                              reason="rejected_by_sink") >= 1, 5, what="the dead letter counted")
        m = p.metrics()
        p.stop()
        reqs = recv.snapshot()

    delivered = sorted(r.json()["event_id"] for r in reqs if r.status == 200)
    assert delivered == sorted(before + after)
    bad_reqs = [r for r in reqs if bad_id.encode() in r.body]
    assert len(bad_reqs) == 1, "the refused event was sent %d times (a 400 must not be retried)" % len(bad_reqs)
    (props, body), = letters.values()
    assert [e["id"] for e in json.loads(body)["events"]] == [bad_id], "dead letter body: %r" % body[:300]
    h = props.headers or {}
    assert "400" in h.get("x-penstock-reason", "") and "invalid event payload" in h["x-penstock-reason"], h
    assert h.get("x-penstock-source-queue") == q, h
    assert h.get("x-penstock-consumer") == "fwd-" + f.tag, h
    assert h.get("x-penstock-routing-key") == "ClickEvent", h
    assert f.ready(q) == 0 and f.ready(q + ".error") == 0
    assert m.total("penstock_messages_dead_lettered_total", queue=q, reason="rejected_by_sink") == 1


def test_each_queue_warns_of_its_own_failing_target_once_per_interval(penstock_proc, fleet):
    """Two queues whose targets fail at the same time (503 three times each, no retries inside the HTTP sink, so
    every failure is a failed insert for the consumer): the consumer of each says so once in the 5-s interval
    (one queue's warning does not silence the other's, nor does a queue repeat itself), and every event then
    arrives once."""
    f = fleet
    qa, qb = f.queue("fwd_a"), f.queue("fwd_b")
    with pstest.HttpReceiver() as recv:
        f.names["url_a"], f.names["url_b"] = recv.url("/a"), recv.url("/b")
        for path in ("/a", "/b"):
            recv.answer(503, times=3, match=lambda r, path=path: r.path == path, body='{"error":"busy"}')
        consumer = """\
  - name: fwd-%(k)s-%%(tag)s
    queue: "%%(fwd_%(k)s)s"
    count: 1
    decoder: {type: events}
    sink: {type: http, url: "%%(url_%(k)s)s", body: single, max_retries: 0}
"""
        p = f.start(penstock_proc, """\
queues:
  - {name: "%(fwd_a)s", dead_letter: true}
  - {name: "%(fwd_b)s", dead_letter: true}
bindings:
  - {queue: "%(fwd_a)s", key: ClickEvent}
  - {queue: "%(fwd_b)s", key: ClickEvent}
consumers:
""" + consumer % {"k": "a"} + consumer % {"k": "b"})
        ids = ["%s-%d" % (f.tag, i) for i in range(2)]
        assert p.dispatch(click_batch(ids)).status == "SUCCESS"
        recv.wait(lambda rs: len([r for r in rs if r.status == 200]) >= 4, 20, what="both queues' 2 events")
        p.stop()
        reqs = recv.snapshot()
        log = p.stderr_text()

    for path in ("/a", "/b"):
        got = [r for r in reqs if r.path == path]
        assert [r.status for r in got].count(503) == 3, "%s: %s" % (path, got)
        assert sorted(r.json()["event_id"] for r in got if r.status == 200) == sorted(ids), "%s: %s" % (path, got)
    warned = [line for line in log.splitlines() if "consumer: insert failed; retrying" in line]
    for q in (qa, qb):
        mine = [line for line in warned if "queue=%s " % q in line + " "]
        assert len(mine) == 1, "%s: %d warnings for its 3 failed inserts, want 1:\n%s" % (q, len(mine),
                                                                                          "\n".join(warned))
    assert f.ready(qa + ".error") == 0 and f.ready(qb + ".error") == 0


# ------------------------------------------------------------ 4. poison messages

def test_json_poison_messages_are_dead_lettered_and_do_not_block(penstock_proc, fleet, clickhouse):
    """A json consumer meets a body that is not JSON, a record without a required field, an array with one
    such record, and a value that does not coerce to its column: each goes whole to <queue>.error with its
    reason and source queue; the good records around them land."""
    f = fleet
    f.exchange("in", ".tx"), f.queue("recs"), f.table("rows")
    q = f.names["recs"]
    p = f.start(penstock_proc, """\
exchanges:
  - {name: "%(in)s", type: topic}
queues:
  - {name: "%(recs)s", dead_letter: true}
bindings:
  - {queue: "%(recs)s", exchange: "%(in)s", key: "rec.*"}
consumers:
  - name: recs-%(tag)s
    queue: "%(recs)s"
    count: 2
    decoder:
      type: json
      columns:
        - {name: id, required: true}
        - {name: n, type: int64}
    sink:
      type: clickhouse
      connection: test
      table: %(rows)s
      flush_ms: 200
""")
    table = f.names["rows"]
    tag = f.tag
    poison = {
        "p0": (b"{not json", "undecodable: not JSON"),
        "p1": ({"name": "no id"}, 'undecodable: field "id" is required but missing'),
        "p2": ([{"id": tag + "-c1"}, {"id": None}], 'undecodable: element 1: field "id" is required but null'),
        "p3": ({"id": tag + "-c2", "n": "twelve"}, 'undecodable: field "n" (int64)'),
    }
    good = [tag + "-g1", tag + "-g2", tag + "-g3", tag + "-g4"]
    x = f.names["in"]
    f.publish(x, "rec.a", {"id": good[0], "n": 1}, message_id=tag + "-g1")
    for k in ("p0", "p1"):
        f.publish(x, "rec.a", poison[k][0], message_id="%s-%s" % (tag, k))
    f.publish(x, "rec.b", [{"id": good[1]}, {"id": good[2], "n": "2"}], message_id=tag + "-g2")
    for k in ("p2", "p3"):
        f.publish(x, "rec.b", poison[k][0], message_id="%s-%s" % (tag, k))
    f.publish(x, "rec.c", {"id": good[3]}, message_id=tag + "-g4")

    pstest.poll(lambda: landed(clickhouse, f.db, table, "id", good), 30, what="the good records")
    letters = f.dead_letters(q, len(poison))
    m = p.metrics()
    p.stop()
    for k, (body, reason) in poison.items():
        mid = "%s-%s" % (tag, k)
        assert mid in letters, "%s not dead-lettered (got %s)" % (k, sorted(letters))
        props, got = letters[mid]
        want_body = body if isinstance(body, bytes) else json.dumps(body).encode()
        assert got == want_body, "%s: the dead letter does not carry the original body" % k
        h = props.headers or {}
        assert h.get("x-penstock-reason", "").startswith(reason), "%s: %s" % (k, h)
        assert h.get("x-penstock-source-queue") == q, h
        assert h.get("x-penstock-consumer") == "recs-" + tag, h
        assert h.get("x-penstock-routing-key") in ("rec.a", "rec.b"), h
        assert h.get("x-penstock-message-id") == mid, h
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", h.get("x-penstock-time", "")), h
    # A message decodes whole or not at all: nothing of p2 or p3 landed.
    rows = count_where(clickhouse, f.db, table, "id", good + [tag + "-c1", tag + "-c2"])
    assert not exactly_once(rows, set(good)), rows
    assert f.ready(q) == 0 and f.ready(q + ".error") == 0
    assert m.total("penstock_messages_dead_lettered_total", queue=q, reason="undecodable") == len(poison)


# ------------------------------------------------------------ 5. a row ClickHouse refuses

def test_a_row_clickhouse_refuses_is_isolated_from_its_batch(penstock_proc, fleet, clickhouse):
    """The json decoder reads qty as a string, but the table, made before penstock starts (CREATE TABLE IF NOT
    EXISTS keeps it), has qty UInt8: ClickHouse refuses the rows whose qty does not parse. Every other row of
    the same insert lands; the messages holding the refused rows go to <queue>.error with ClickHouse's reason
    (and the refused row's place in its message); the other row of the array message lands."""
    f = fleet
    f.exchange("in", ".dx"), f.queue("items"), f.table("item_rows")
    table = f.names["item_rows"]
    clickhouse.query("CREATE TABLE %s.%s (id String, qty UInt8, note String) ENGINE = MergeTree ORDER BY id"
                     % (f.db, table))
    p = f.start(penstock_proc, """\
exchanges:
  - {name: "%(in)s", type: direct}
queues:
  - {name: "%(items)s", dead_letter: true}
bindings:
  - {queue: "%(items)s", exchange: "%(in)s", key: item}
consumers:
  - name: items-%(tag)s
    queue: "%(items)s"
    count: 1
    decoder:
      type: json
      columns: [{name: id, required: true}, {name: qty}, {name: note}]
    sink:
      type: clickhouse
      connection: test
      table: %(item_rows)s
      flush_rows: 1000
      flush_ms: 1500
""")
    tag, x, q = f.tag, f.names["in"], f.names["items"]
    good = []
    for i in range(12):
        if i == 5:
            f.publish(x, "item", {"id": tag + "-bad", "qty": "lots", "note": "refused"}, message_id=tag + "-mbad")
        if i == 9:
            f.publish(x, "item", [{"id": tag + "-arr0", "qty": "3"}, {"id": tag + "-arr1", "qty": "many"}],
                      message_id=tag + "-marr")
        rid = "%s-%d" % (tag, i)
        good.append(rid)
        f.publish(x, "item", {"id": rid, "qty": str(i), "note": "ok"}, message_id=rid)
    want = good + [tag + "-arr0"]
    pstest.poll(lambda: landed(clickhouse, f.db, table, "id", want), 30, what="the good rows")
    letters = f.dead_letters(q, 2)
    m = p.metrics()
    p.stop()

    counts = count_where(clickhouse, f.db, table, "id", want + [tag + "-bad", tag + "-arr1"])
    problems = exactly_once(counts, set(want))
    assert not problems, "; ".join(problems)
    qty = {r["id"]: int(r["qty"]) for r in clickhouse.rows("SELECT id, qty FROM %s.%s" % (f.db, table))}
    assert all(qty["%s-%d" % (tag, i)] == i for i in range(12)) and qty[tag + "-arr0"] == 3, qty
    assert sorted(letters) == sorted([tag + "-mbad", tag + "-marr"]), sorted(letters)
    for mid, row in ((tag + "-mbad", 0), (tag + "-marr", 1)):
        props, body = letters[mid]
        h = props.headers or {}
        reason = h.get("x-penstock-reason", "")
        assert reason.startswith("rejected by sink (row %d of the message)" % row), h
        assert "Code: " in reason, "no ClickHouse reason in %r" % reason
        assert h.get("x-penstock-source-queue") == q and h.get("x-penstock-consumer") == "items-" + tag, h
    assert json.loads(letters[tag + "-mbad"][1])["id"] == tag + "-bad"
    assert f.ready(q) == 0 and f.ready(q + ".error") == 0
    assert m.total("penstock_messages_dead_lettered_total", queue=q, reason="rejected_by_sink") == 2
    assert m.total("penstock_rows_inserted_total", queue=q) == len(want)


# ------------------------------------------------------------ 6. check-config and a broken file

GOOD_FILE = """\
event_exchange: ${PSTEST_FLEET_EX:-grpc_event.tx}
queues:
  - name: cc_q
    dead_letter: true
clickhouse_connections:
  - name: ch
    url: http://127.0.0.1:1
    password: ${PSTEST_FLEET_PW}
consumers:
  - queue: cc_q
    prefetch: 10
    decoder: {type: events}
    sink:
      type: clickhouse
      connection: ch
      table: cc_events
      buffered: false
"""

# (mutation of GOOD_FILE: old line -> new line, where, what the reason says)
BROKEN = [
    ("unknown_key", "      table: cc_events", "      tabel: cc_events", "consumers[0].sink",
     "unknown key 'tabel'"),
    ("wrong_type", "    prefetch: 10", '    prefetch: "10"', "consumers[0].prefetch", "integer"),
    ("out_of_range", "    prefetch: 10", "    prefetch: 0", "consumers[0].prefetch", "out of range"),
    ("bad_value", "    decoder: {type: events}", "    decoder: {type: kafka}", "consumers[0].decoder.type",
     "'kafka'"),
    ("bad_boolean", "      buffered: false", "      buffered: maybe", "consumers[0].sink.buffered", "maybe"),
    ("undeclared_queue", "  - queue: cc_q", "  - queue: nosuch_q", "consumers[0].queue", "'nosuch_q'"),
]


def run_penstock(args, env=None, timeout=20):
    e = {k: v for k, v in os.environ.items() if k not in pstest.PENSTOCK_VARS}
    e.update(env or {})
    return subprocess.run([pstest.PENSTOCK_BIN] + args, env=e, capture_output=True, text=True, timeout=timeout)


def broken_file(tmp_path, old, new):
    assert GOOD_FILE.count(old + "\n") == 1
    text = GOOD_FILE.replace(old + "\n", new + "\n")
    line = text.splitlines().index(new) + 1
    path = os.path.join(str(tmp_path), "broken.yaml")
    with open(path, "w") as fh:
        fh.write(text)
    return path, line


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_check_config_names_file_line_and_reason(tmp_path, case):
    _, old, new, where, why = case
    path, line = broken_file(tmp_path, old, new)
    r = run_penstock(["check-config", path], env={"PSTEST_FLEET_PW": "pw"})
    assert r.returncode == 2, "exit %d; stdout %r stderr %r" % (r.returncode, r.stdout[:300], r.stderr)
    assert r.stdout == "", "printed a configuration for a broken file: %r" % r.stdout[:300]
    m = re.search(r"^penstock: (.+?):(\d+): (\S+): (.*)$", r.stderr, re.M)
    assert m, "no 'FILE:LINE: where: reason' in %r" % r.stderr
    assert (m.group(1), int(m.group(2)), m.group(3)) == (path, line, where), r.stderr
    assert why in m.group(4), r.stderr


def test_check_config_prints_a_good_file_resolved(tmp_path):
    path = os.path.join(str(tmp_path), "good.yaml")
    with open(path, "w") as fh:
        fh.write(GOOD_FILE)
    env = {"PSTEST_FLEET_EX": "cc.tx", "PSTEST_FLEET_PW": "hunter2-secret"}
    r = run_penstock(["check-config", path], env=env)
    assert r.returncode == 0, r.stderr
    assert "hunter2-secret" not in r.stdout + r.stderr, "the password was printed"
    cfg = yaml.safe_load(r.stdout)
    assert cfg["event_exchange"] == "cc.tx"
    assert cfg["dead_letter_exchange"] == "grpc_event_error.dx"
    assert [x["name"] for x in cfg["exchanges"]] == ["cc.tx", "grpc_event_error.dx"]
    assert [q["name"] for q in cfg["queues"]] == ["cc_q", "cc_q.error"]
    assert cfg["queues"][0]["arguments"] == {"x-dead-letter-exchange": "grpc_event_error.dx",
                                             "x-dead-letter-routing-key": "cc_q"}
    assert {"queue": "cc_q.error", "exchange": "grpc_event_error.dx", "key": "cc_q"} in cfg["bindings"]
    conn = cfg["clickhouse_connections"][0]
    assert conn["password"] == "(redacted)" and conn["database"] == "default" and conn["timeout_ms"] == 30000
    c = cfg["consumers"][0]
    assert (c["name"], c["count"], c["prefetch"], c["max_redeliveries"]) == ("cc_q", 2, 10, 5), c
    assert c["sink"]["flush_rows"] == 10000 and c["sink"]["flush_ms"] == 1000, c
    # What it prints is a valid topology file that resolves to itself.
    again = os.path.join(str(tmp_path), "resolved.yaml")
    with open(again, "w") as fh:
        fh.write(r.stdout)
    r2 = run_penstock(["check-config", again])
    assert r2.returncode == 0, r2.stderr
    assert yaml.safe_load(r2.stdout) == cfg


def test_check_config_and_serve_read_penstock_config(tmp_path, penstock_proc):
    """Without FILE, check-config checks $PENSTOCK_CONFIG; serve refuses to start on a broken one (exit 2,
    FILE:LINE: reason) and declares nothing of it."""
    path, line = broken_file(tmp_path, "      table: cc_events", "      tabel: cc_events")
    qname = pstest.new_id("ccq.")
    with open(path) as fh:
        text = fh.read().replace("cc_q", qname)
    with open(path, "w") as fh:
        fh.write(text)
    r = run_penstock(["check-config"], env={"PENSTOCK_CONFIG": path, "PSTEST_FLEET_PW": "x"})
    assert r.returncode == 2 and "%s:%d: consumers[0].sink: unknown key 'tabel'" % (path, line) in r.stderr, \
        (r.returncode, r.stderr)

    p = penstock_proc(env={"PENSTOCK_CONFIG": path, "PSTEST_FLEET_PW": "x"}, wait=False)
    rc = p.wait_exit(15)
    assert rc == 2, "serve with a broken PENSTOCK_CONFIG: exit %s; stderr:\n%s" % (rc, p.stderr_tail())
    assert "%s:%d:" % (path, line) in p.stderr_text() and "tabel" in p.stderr_text(), p.stderr_tail()
    assert not pstest.queue_exists(qname) and not pstest.queue_exists(qname + ".error")

    missing = os.path.join(str(tmp_path), "nosuch.yaml")
    p = penstock_proc(env={"PENSTOCK_CONFIG": missing}, wait=False)
    rc = p.wait_exit(15)
    assert rc == 2 and missing in p.stderr_text(), (rc, p.stderr_tail())


# ------------------------------------------------------------ 7. the built-in topology

def purge_default_queues():
    """Messages other modules left in the built-in queues would land in this test's database."""
    for q in DEFAULT_QUEUES:
        pstest.purge_queue(q)


def delete_queues(*names):
    conn = pstest.amqp_connection()
    try:
        for n in names:
            ch = conn.channel()
            try:
                ch.queue_delete(n)
            except pika.exceptions.ChannelClosedByBroker:
                pass
    finally:
        conn.close()


def test_default_topology_declares_its_queues_and_lands_in_its_tables(penstock_proc, own_db, clickhouse):
    purge_default_queues()
    delete_queues(WEBENGAGE_QUEUE, WEBENGAGE_QUEUE + ".error")
    p = penstock_proc(db=own_db)  # no PENSTOCK_CONFIG: the built-in topology
    # Each consumer's connection declares the topology when it opens, which may be just after SERVING.
    def missing():
        return [q for q in DEFAULT_QUEUES + tuple(q + ".error" for q in DEFAULT_QUEUES) if not pstest.queue_exists(q)]

    try:
        pstest.poll(lambda: not missing(), 10, what="the built-in queues")
    except AssertionError:
        raise AssertionError("not declared 10 s after SERVING: %s" % missing()) from None
    assert not pstest.queue_exists(WEBENGAGE_QUEUE), "%s declared without WEBENGAGE_ENABLED" % WEBENGAGE_QUEUE
    assert not pstest.queue_exists(WEBENGAGE_QUEUE + ".error")

    # Duplicates must stay visible: ReplacingMergeTree would fold them in a background merge.
    pstest.poll(lambda: all(clickhouse.table_exists(own_db, t) for t in ("events", "click_events")), 10,
                what="the tables of the built-in topology")
    for t in ("events", "click_events"):
        clickhouse.query("SYSTEM STOP MERGES %s.%s" % (own_db, t))
    tag = pstest.new_id("df")
    clicks = ["%s-c%d" % (tag, i) for i in range(100)]
    b = click_batch(clicks, session=tag)
    b.events.add(id=tag + "-launch", timestamp="1700000000").launchEvent.source = "push"
    assert p.dispatch(b).status == "SUCCESS"
    conn = pstest.amqp_connection()
    try:
        ch = conn.channel()
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        ch.basic_publish("shopify_event.dx", "shopify_events", json.dumps(
            {"webhook_id": tag + "-w1", "topic": "orders/create", "shop_domain": "shop.example",
             "created_at": "2024-05-01T10:00:00Z", "id": 8123, "line_items": [{"sku": "A", "qty": 2}]}).encode(),
            props)
        ch.basic_publish("branch_event.tx", "INSTALL", json.dumps(
            {"id": tag + "-b1", "name": "INSTALL", "timestamp": 1714557600000,
             "user_data": {"developer_identity": "u-9", "os": "Android", "app_version": "3.1"},
             "last_attributed_touch_data": {"~campaign": "spring", "~channel": "ads", "~feature": "f"},
             "custom": 1}).encode(), props)
        all_ids = clicks + [tag + "-launch"]
        pstest.poll(lambda: landed(clickhouse, own_db, "events", "event_id", all_ids), 30,
                    what="every event in events")
        pstest.poll(lambda: landed(clickhouse, own_db, "click_events", "event_id", clicks), 30,
                    what="100 clicks in the buffered click_events (inserted after its flush_ms, 1 s)")
        pstest.poll(lambda: landed(clickhouse, own_db, "app_init_events", "event_id", [tag + "-launch"]), 30,
                    what="the launch in app_init_events")
        pstest.poll(lambda: landed(clickhouse, own_db, "branch_events", "event_id", [tag + "-b1"]), 30,
                    what="the Branch record in branch_events")
        # shopify_events is buffered (100 rows or 5 minutes): one record waits for the shutdown flush.
        pstest.poll(lambda: ch.queue_declare("shopify_events_q", passive=True).method.message_count == 0, 10,
                    what="the Shopify record to be taken")
        assert not landed(clickhouse, own_db, "shopify_events", "webhook_id", [tag + "-w1"])
    finally:
        conn.close()
    p.stop()

    assert not exactly_once(count_where(clickhouse, own_db, "events", "event_id", all_ids), set(all_ids))
    assert not exactly_once(count_where(clickhouse, own_db, "click_events", "event_id", clicks), set(clicks))
    assert clickhouse.scalar("SELECT count() FROM %s.click_events" % own_db) == "100", "not only clicks"
    assert clickhouse.scalar("SELECT count() FROM %s.app_init_events" % own_db) == "1"
    shop = clickhouse.rows("SELECT webhook_id, topic, shop_domain, toUnixTimestamp(created_at) AS t, payload "
                           "FROM %s.shopify_events" % own_db)
    assert len(shop) == 1, "shopify_events after the shutdown flush: %s" % shop
    assert (shop[0]["webhook_id"], shop[0]["topic"], shop[0]["shop_domain"], int(shop[0]["t"])) == \
        (tag + "-w1", "orders/create", "shop.example", 1714557600), shop
    assert json.loads(shop[0]["payload"]) == {"id": 8123, "line_items": [{"sku": "A", "qty": 2}]}, shop
    branch = clickhouse.rows("SELECT event_name, toUnixTimestamp(event_time) AS t, user_id, os, app_version, "
                             "campaign, channel, feature, extra FROM %s.branch_events" % own_db)
    assert len(branch) == 1 and branch[0]["event_name"] == "INSTALL" and int(branch[0]["t"]) == 1714557600
    assert (branch[0]["user_id"], branch[0]["os"], branch[0]["campaign"], branch[0]["channel"]) == \
        ("u-9", "Android", "spring", "ads"), branch
    assert json.loads(branch[0]["extra"]) == {"custom": 1}, branch



EVENT_QUEUES = ("grpc_clickhouse_event_q", "clickhouse_click_event_q", "app_init_event_q")


def test_queue_type_quorum_declares_the_event_queues_as_quorum_queues(penstock_proc, own_db, clickhouse):
    """QUEUE_TYPE=quorum: the built-in queues of the gRPC events are declared as quorum queues (RabbitMQ then
    refuses a classic declaration of them), their .error queues and the queues other services publish to
    stay classic, and events land through them as through classic ones."""
    delete_queues(*EVENT_QUEUES)  # RabbitMQ will not turn an existing classic queue into a quorum queue
    try:
        p = penstock_proc(db=own_db, env={"QUEUE_TYPE": "quorum"})
        pstest.poll(lambda: all(pstest.queue_exists(q) for q in EVENT_QUEUES), 10, what="the event queues")

        def declared_as(queue, qtype):
            """Whether RabbitMQ takes a declaration of queue, with its other arguments, as qtype: it refuses a
            type other than the queue's."""
            args = {"x-queue-type": qtype}
            if not queue.endswith(".error"):
                args.update({"x-dead-letter-exchange": "grpc_event_error.dx", "x-dead-letter-routing-key": queue})
            conn = pstest.amqp_connection()
            try:
                conn.channel().queue_declare(queue, durable=True, arguments=args)
                return True
            except pika.exceptions.ChannelClosedByBroker as e:
                assert e.reply_code == 406 and "x-queue-type" in e.reply_text, e
                return False
            finally:
                conn.close()

        for q in EVENT_QUEUES:
            assert declared_as(q, "quorum"), "%s is not a quorum queue" % q
            assert not declared_as(q, "classic"), "%s took a classic declaration" % q
        for q in ("grpc_clickhouse_event_q.error", "branch_event_q"):
            assert declared_as(q, "classic") and not declared_as(q, "quorum"), "%s is not classic" % q

        tag = pstest.new_id("qq")
        clicks = ["%s-c%d" % (tag, i) for i in range(20)]
        b = click_batch(clicks, session=tag)
        b.events.add(id=tag + "-launch", timestamp="1700000000").launchEvent.source = "push"
        assert p.dispatch(b).status == "SUCCESS"
        all_ids = clicks + [tag + "-launch"]
        pstest.poll(lambda: landed(clickhouse, own_db, "events", "event_id", all_ids), 30, what="every event")
        pstest.poll(lambda: landed(clickhouse, own_db, "click_events", "event_id", clicks), 30, what="the clicks")
        pstest.poll(lambda: landed(clickhouse, own_db, "app_init_events", "event_id", [tag + "-launch"]), 30,
                    what="the launch")
        p.stop()
        assert not exactly_once(count_where(clickhouse, own_db, "events", "event_id", all_ids), set(all_ids))
    finally:
        delete_queues(*EVENT_QUEUES)  # the other tests declare them classic

def test_default_topology_forwards_purchases_to_webengage_when_enabled(penstock_proc, own_db):
    purge_default_queues()
    delete_queues(WEBENGAGE_QUEUE, WEBENGAGE_QUEUE + ".error")
    key = "we-" + pstest.new_id("k")
    tag = pstest.new_id("we")
    try:
        with pstest.HttpReceiver() as recv:
            p = penstock_proc(db=own_db, env={"WEBENGAGE_ENABLED": "true", "WEBENGAGE_URL": recv.url("/v1/events"),
                                              "WEBENGAGE_API_KEY": key})
            pstest.poll(lambda: pstest.queue_exists(WEBENGAGE_QUEUE) and
                        pstest.queue_exists(WEBENGAGE_QUEUE + ".error"), 10,
                        what="%s and its .error queue" % WEBENGAGE_QUEUE)
            b = pb.Events(header=pb.Header(sessionId=tag, userId=77))
            b.events.add(id=tag + "-buy", timestamp="1700000000").completePurchaseEvent.orderId = "o-1"
            b.events.add(id=tag + "-cart", timestamp="1700000000").addToCartEvent.productId = "p-1"
            b.events.add(id=tag + "-click", timestamp="1700000000").clickEvent.page = "home"
            assert p.dispatch(b).status == "SUCCESS"
            recv.wait(lambda rs: len(rs) >= 2, 20, what="2 events at WebEngage")
            p.stop()
            reqs = recv.snapshot()
        got = sorted((r.json()["event_id"], r.json()["event_type"]) for r in reqs)
        assert got == [(tag + "-buy", "CompletePurchaseEvent"), (tag + "-cart", "AddToCartEvent")], reqs
        for r in reqs:
            assert (r.method, r.path, r.status) == ("POST", "/v1/events", 200), r
            assert r.headers.get("authorization") == "Bearer " + key, r.headers
            assert r.headers.get("content-type") == "application/json", r.headers
            assert r.json()["user_id"] == 77
        purchase = next(r.json() for r in reqs if r.json()["event_id"] == tag + "-buy")
        assert purchase["payload"] == {"orderId": "o-1"}, purchase
    finally:
        delete_queues(WEBENGAGE_QUEUE, WEBENGAGE_QUEUE + ".error")
