"""End to end: ≥ 10,000 events of every type through gRPC → queue → workers → broker → store.

Runs in both modes through the same code: external (RabbitMQ → ClickHouse) and embedded (the in-process
broker → SQLite under DATA_DIR). Checks every row of the store column by column and, with RabbitMQ, every
message penstock published (seen on a test queue bound '#' to the event exchange) against the batch it
came from. Prints the events/s seen.
"""

import collections
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import DecodeError

import pstest
from pstest import pb

PER_TYPE = int(os.environ.get("PS_TEST_E2E_PER_TYPE", "10000"))
BATCH = 50
SENDERS = 4


def send_all(port, batches, senders=SENDERS):
    """Sends every batch from `senders` threads, each on its own channel (connection).

    Returns (results by batch index, first send time, last answer time)."""
    results = [None] * len(batches)
    t_first = [None]
    lock = threading.Lock()

    def run(k):
        ch = pstest.grpc_channel(port)
        call = pstest.dispatch_stub(ch)
        try:
            for i in range(k, len(batches), senders):
                with lock:
                    if t_first[0] is None:
                        t_first[0] = time.monotonic()
                try:
                    r = call(batches[i][0], timeout=30)
                    results[i] = ("OK", r.status, r.message)
                except grpc.RpcError as e:
                    results[i] = (str(e.code()), None, e.details())
        finally:
            ch.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, t_first[0], time.monotonic()


class ClickHouseStore:
    """The events table of the external mode, in the test's ClickHouse database."""

    name = "ClickHouse"

    def __init__(self, clickhouse, db):
        self.ch, self.db = clickhouse, db

    def env(self):
        return {}

    def ready(self):
        # Duplicates must stay visible: ReplacingMergeTree would fold them in a background merge.
        pstest.poll(lambda: self.ch.table_exists(self.db, "events"), 30, what="penstock to create %s.events" % self.db)
        self.ch.query("SYSTEM STOP MERGES %s.events" % self.db)

    def count(self, runid):
        """(rows, distinct ids) of the run."""
        r = self.ch.rows("SELECT count() AS n, uniqExact(event_id) AS u FROM %s.events WHERE event_id LIKE '%s-%%'"
                         % (self.db, runid))[0]
        return int(r["n"]), int(r["u"])

    def rows(self, runid):
        return self.ch.rows(
            "SELECT event_id, event_type, event_timestamp, toUnixTimestamp(event_time) AS t, "
            "toUnixTimestamp(received_at) AS rt, session_id, user_id, device_id, client_id, os, app_version, "
            "payload FROM %s.events WHERE event_id LIKE '%s-%%'" % (self.db, runid))

    def close(self):
        pass


class SqliteStore:
    """The events table of the embedded mode: DATA_DIR/penstock.db."""

    name = "SQLite"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pstest-embedded-")
        self.path = os.path.join(self.dir, "penstock.db")

    def env(self):
        return {"PENSTOCK_MODE": "embedded", "DATA_DIR": self.dir, "RABBITMQ_URL": None, "CLICKHOUSE_URL": None}

    def _query(self, sql):
        con = sqlite3.connect("file:%s?mode=ro" % self.path, uri=True, timeout=10)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute(sql)]
        finally:
            con.close()

    def ready(self):
        def has_table():
            return os.path.exists(self.path) and self._query(
                "SELECT count(*) AS n FROM sqlite_master WHERE name = 'events'")[0]["n"] == 1
        pstest.poll(has_table, 30, what="penstock to create events in %s" % self.path)

    def count(self, runid):
        r = self._query("SELECT count(*) AS n, count(DISTINCT event_id) AS u FROM events WHERE event_id LIKE '%s-%%'"
                        % runid)[0]
        return r["n"], r["u"]

    def rows(self, runid):
        return self._query(
            "SELECT event_id, event_type, event_timestamp, CAST(strftime('%%s', event_time) AS INTEGER) AS t, "
            "CAST(strftime('%%s', received_at) AS INTEGER) AS rt, session_id, user_id, device_id, client_id, os, "
            "app_version, payload FROM events WHERE event_id LIKE '%s-%%'" % runid)

    def close(self):
        shutil.rmtree(self.dir, True)


@pytest.mark.parametrize("mode", ["external", "embedded", "packed", "protobuf"])
def test_e2e(mode, penstock_proc, db, clickhouse):
    """packed: external with PUBLISH_FORMAT=packed (several Events per message, one per line); protobuf: external
    with PUBLISH_FORMAT=protobuf (several binary Events per message, each preceded by its length)."""
    store = ClickHouseStore(clickhouse, db) if mode != "embedded" else SqliteStore()
    try:
        run_e2e(mode, store, penstock_proc, db)
    finally:
        store.close()


def run_e2e(mode, store, penstock_proc, db):
    runid = pstest.new_id("e2e")
    factory = pstest.EventFactory(runid)
    batches = factory.mixed_batches(PER_TYPE, BATCH)
    n_types = len(factory.types)
    sent = {}  # id -> (batch index, position, Event, expected unix time or None)
    for bi, (b, expects) in enumerate(batches):
        for pos, (ev, exp) in enumerate(zip(b.events, expects)):
            sent[ev.id] = (bi, pos, ev, exp)
    total = len(sent)
    assert total == PER_TYPE * n_types

    queue = pstest.TestQueue() if mode != "embedded" else None
    packed = mode in ("packed", "protobuf")
    try:
        env = store.env()
        if packed:
            env["PUBLISH_FORMAT"] = mode
        p = penstock_proc(db=db, env=env)
        store.ready()

        wall0 = time.time()
        results, t_first, t_sent = send_all(p.port, batches)
        bad = [(i, r) for i, r in enumerate(results) if r is None or r[0] != "OK" or r[1] != "SUCCESS"]
        assert not bad, "%d of %d calls did not answer SUCCESS, first: %s" % (len(bad), len(batches), bad[:5])

        def landed():
            return store.count(runid)[0] >= total

        pstest.poll(landed, 120, interval=0.05, what="%d rows in %s" % (total, store.name))
        t_landed = time.monotonic()
        wall1 = time.time()
        secs = t_landed - t_first
        pstest.report("e2e (%s): %d events (%d types x %d, batches of %d, %d sender threads) sent in %.2fs "
                      "(%.0f events/s accepted); all in %s after %.2fs: %.0f events/s end to end"
                      % (mode, total, n_types, PER_TYPE, BATCH, SENDERS, t_sent - t_first,
                         total / (t_sent - t_first), store.name, secs, total / secs))

        # (a) the store: every id exactly once, every column right.
        n, u = store.count(runid)
        assert (n, u) == (total, total), "rows, distinct ids = %s, %s; sent %d" % (n, u, total)
        rows = store.rows(runid)
        assert len(rows) == total
        problems = []
        by_type = collections.Counter()
        for row in rows:
            eid = row["event_id"]
            if eid not in sent:
                problems.append("unknown id %s" % eid)
                continue
            bi, pos, ev, exp_t = sent[eid]
            header = batches[bi][0].header
            type_name, sub = pstest.payload_of(ev)
            by_type[row["event_type"]] += 1
            want = {
                "event_type": type_name, "event_timestamp": ev.timestamp, "session_id": header.sessionId,
                "user_id": header.userId, "device_id": header.deviceId, "client_id": header.clientId,
                "os": header.os, "app_version": header.appVersion,
            }
            got = dict((k, row[k]) for k in want)
            got["user_id"] = int(got["user_id"])
            for k in want:
                if got[k] != want[k]:
                    problems.append("%s: %s = %r, want %r" % (eid, k, got[k], want[k]))
            rt = int(row["rt"])
            if not int(wall0) - 1 <= rt <= int(wall1) + 1:
                problems.append("%s: received_at %d outside the test's window [%d, %d]" % (eid, rt, wall0, wall1))
            t = int(row["t"])
            if exp_t is None:
                if not int(wall0) - 1 <= t <= int(wall1) + 1:
                    problems.append("%s: event_time %d for unparsable timestamp %r, want the receive time"
                                    % (eid, t, ev.timestamp))
            elif t != exp_t:
                problems.append("%s: event_time %d for timestamp %r, want %d" % (eid, t, ev.timestamp, exp_t))
            try:
                payload = json.loads(row["payload"])
            except ValueError as e:
                problems.append("%s: payload is not JSON (%s): %r" % (eid, e, row["payload"][:200]))
                continue
            want_payload = pstest.payload_json(sub)
            if payload != want_payload:
                problems.append("%s: payload %s, want %s" % (eid, row["payload"][:300],
                                                             json.dumps(want_payload, ensure_ascii=False)[:300]))
        assert not problems, "%d column mismatches, first:\n%s" % (len(problems), "\n".join(problems[:15]))
        assert len(by_type) == n_types and set(by_type.values()) == {PER_TYPE}, by_type

        if queue is None:  # embedded: no RabbitMQ to watch; what the rows hold is checked above
            p.stop()
            return

        # (b) the messages published: one type each, routing key = type; each Events in them (the body, or
        # each line of a packed one) has a header and, batch by batch, exactly that batch's events of the type,
        # in order (batches with the same header may share a message).
        seen = collections.Counter()
        want_ct = {"packed": "application/x-ndjson", "protobuf": "application/x-protobuf-delimited"}.get(
            mode, "application/json")

        def docs(body):
            """The Events of a message: the body, its lines (packed), or its length-delimited parts (protobuf)."""
            if mode == "protobuf":
                out, i = [], 0
                while i < len(body):
                    n, shift = 0, 0
                    while True:
                        b = body[i]
                        i += 1
                        n |= (b & 0x7f) << shift
                        shift += 7
                        if not b & 0x80:
                            break
                    out.append(body[i:i + n])
                    i += n
                return out
            return [d for d in body.split(b"\n") if d] if packed else [body]

        def parse(doc):
            if mode == "protobuf":
                return pb.Events.FromString(doc)
            return json_format.Parse(doc, pb.Events())

        def count(doc):
            return len(pb.Events.FromString(doc).events) if mode == "protobuf" else len(json.loads(doc).get("events", []))

        def all_seen(msgs):
            return sum(count(d) for _, _, b in msgs for d in docs(b)) >= total

        msgs = queue.drain(until=all_seen, inactivity=1.0, timeout=120)
        problems = []
        lines = 0
        for method, props, body in msgs:
            rk = method.routing_key
            if props.content_type != want_ct:
                problems.append("content_type %r" % props.content_type)
            if props.delivery_mode != 2:
                problems.append("delivery_mode %r" % props.delivery_mode)
            if not props.message_id:
                problems.append("no message_id")
            if mode == "packed" and not body.endswith(b"\n"):
                problems.append("packed message without a final newline: %r" % body[-100:])
            for doc in docs(body):
                lines += 1
                try:
                    m = parse(doc)
                except (json_format.ParseError, DecodeError) as e:
                    problems.append("body does not parse as Events (%s): %r" % (e, doc[:300]))
                    continue
                if not m.events:
                    problems.append("message with no events, key %s" % rk)
                    continue
                by_batch = collections.OrderedDict()
                for e in m.events:
                    bi = sent.get(e.id, (None,))[0]
                    if bi is None:
                        problems.append("message with unknown event id %s" % e.id)
                        continue
                    by_batch.setdefault(bi, []).append(e)
                    seen[e.id] += 1
                for bi, got in by_batch.items():
                    batch = batches[bi][0]
                    if m.header != batch.header:
                        problems.append("batch %d: header %s, want %s" % (
                            bi, json_format.MessageToJson(m.header), json_format.MessageToJson(batch.header)))
                    want = [e for e in batch.events if pstest.payload_of(e)[0] == rk]
                    if [e.SerializeToString(deterministic=True) for e in got] != \
                            [e.SerializeToString(deterministic=True) for e in want]:
                        problems.append("batch %d key %s: events %s, want %s" % (
                            bi, rk, [e.id for e in got], [e.id for e in want]))
                        for got_e, want_e in zip(got, want):
                            if got_e != want_e:
                                problems.append("  first difference: got %s want %s" % (
                                    json_format.MessageToJson(got_e)[:400], json_format.MessageToJson(want_e)[:400]))
                                break
        missing = [i for i in sent if seen[i] == 0]
        dups = [i for i, n in seen.items() if n > 1]
        assert not problems, "%d problems in %d messages, first:\n%s" % (len(problems), len(msgs),
                                                                         "\n".join(problems[:15]))
        assert not missing and not dups, "%d sent events never published, %d published more than once " \
            "(e.g. %s %s)" % (len(missing), len(dups), missing[:3], dups[:3])
        pstest.report("e2e (%s): %d messages (%d Events) published for %d batches (%.2f messages per batch)"
                      % (mode, len(msgs), lines, len(batches), len(msgs) / len(batches)))
        p.stop()
    finally:
        if queue is not None:
            queue.close()


def test_strings_with_nul_are_refused_not_cut_short(penstock_proc, db, clickhouse):
    """U+0000 is valid in a proto3 string but cannot be carried whole by penstock's decoder (protobuf-c
    keeps strings NUL-terminated). Such a batch is refused with INVALID_ARGUMENT naming the field, and
    nothing of it lands: never a silently truncated string."""
    runid = pstest.new_id("nul")
    p = penstock_proc(db=db)
    cases = []
    b = pb.Events(header=pb.Header(sessionId="sess\x00ion", userId=7))
    b.events.add(id="%s-1" % runid, timestamp="1700000000").clickEvent.page = "page"
    cases.append((b, "header.sessionId"))
    b = pb.Events(header=pb.Header(sessionId="s"))
    b.events.add(id="%s-2" % runid, timestamp="1700000000").clickEvent.page = "page"
    b.events.add(id="%s-3" % runid, timestamp="1700000000").pageOpenedEvent.params["k\x00ey"] = "v"
    cases.append((b, "events[1].pageOpenedEvent.params[0].key"))
    for batch, field in cases:
        with pytest.raises(grpc.RpcError) as exc:
            p.dispatch(batch)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in exc.value.details() and "U+0000" in exc.value.details(), exc.value.details()
    # The process still serves, and a clean batch after them lands; the refused ids never do.
    ok = pb.Events(header=pb.Header(sessionId="s"))
    ok.events.add(id="%s-ok" % runid, timestamp="1700000000").clickEvent.page = "page"
    assert p.dispatch(ok).status == "SUCCESS"
    pstest.poll(lambda: clickhouse.count_ids(db, ["%s-ok" % runid])[0] >= 1, 30, what="the clean event")
    assert clickhouse.scalar("SELECT count() FROM %s.events WHERE event_id LIKE '%s-%%'" % (db, runid)) == "1"
    p.stop()
