"""`penstock send`, the binary, against a real penstock (external mode: RabbitMQ and ClickHouse).

--demo lands every id it reports accepted exactly once, with every event type; a proto3 JSON file lands
exactly its events; bad input exits 2 with the line; an unreachable server exits 1 with UNAVAILABLE
counted; --json prints one JSON object.
"""

import json
import os
import subprocess

from google.protobuf import json_format

import pstest
from pstest import pb


def send(*args, timeout=120):
    return subprocess.run([pstest.PENSTOCK_BIN, "send"] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def test_send_demo_lands_every_accepted_id_once(penstock_proc, db, clickhouse, tmp_path):
    p = penstock_proc(db=db)
    ids_path = tmp_path / "ids"
    r = send("--addr", "127.0.0.1:%d" % p.port, "--demo", 1000, "--batch", 40, "--ids", ids_path, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    assert (summary["sent"], summary["accepted"], summary["failed"], summary["batches"]) == (1000, 1000, 0, 25), \
        summary
    ids = ids_path.read_text().split()
    assert len(ids) == 1000 and len(set(ids)) == 1000
    prefix = ids[0].rsplit("-", 1)[0]
    assert all(i.startswith(prefix + "-") for i in ids)
    pstest.poll(lambda: clickhouse.count_ids(db, ids) == (1000, 1000), 30, what="1000 demo ids in ClickHouse")
    types = clickhouse.rows("SELECT event_type, count() AS n FROM %s.events WHERE event_id LIKE '%s-%%' "
                            "GROUP BY event_type" % (db, prefix))
    assert {t["event_type"] for t in types} == {cls.DESCRIPTOR.name for _, cls in pstest.event_types()}, types
    # Payloads are filled, not empty objects.
    empty = clickhouse.scalar("SELECT count() FROM %s.events WHERE event_id LIKE '%s-%%' AND payload IN ('', '{}')"
                              % (db, prefix))
    assert empty == "0", "%s demo events with an empty payload" % empty


def test_send_file_lands_exactly_its_events(penstock_proc, db, clickhouse, tmp_path):
    p = penstock_proc(db=db)
    factory = pstest.EventFactory(pstest.new_id("sendfile"))
    batches = [b for b, _ in factory.mixed_batches(5, 10)]
    path = tmp_path / "events.json"
    # One batch per line, then the rest as one JSON array: both forms in one file.
    lines = [json_format.MessageToJson(b, indent=None) for b in batches[:2]]
    lines.append(json.dumps([json.loads(json_format.MessageToJson(b)) for b in batches[2:]]))
    path.write_text("\n".join(lines) + "\n")
    r = send("--addr", "127.0.0.1:%d" % p.port, "--file", path)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = [e.id for b in batches for e in b.events]
    assert "%d accepted, 0 failed" % len(ids) in r.stdout, r.stdout
    pstest.poll(lambda: clickhouse.count_ids(db, ids) == (len(ids), len(ids)), 30, what="the file's events")
    want = {e.id: pstest.payload_of(e)[0] for b in batches for e in b.events}
    got = {row["event_id"]: row["event_type"] for row in clickhouse.rows(
        "SELECT event_id, event_type FROM %s.events WHERE event_id IN (%s)"
        % (db, ",".join(pstest.sql_str(i) for i in ids)))}
    assert got == want


def test_send_bad_input_and_unreachable_server(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"header": {"sessionId": "s"}, "events": []}\n\n{"header": nope}\n')
    r = send("--addr", "127.0.0.1:1", "--file", bad)
    assert r.returncode == 2 and "bad.json:3:" in r.stderr, (r.returncode, r.stderr)
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"header": {}, "events": [{"id": "x", "noSuchEvent": {}}]}')
    r = send("--addr", "127.0.0.1:1", "--file", unknown)
    assert r.returncode == 2 and "noSuchEvent" in r.stderr, (r.returncode, r.stderr)
    for args in (["--demo", "-1"], ["--demo", 10, "--file", bad], [], ["--bogus"]):
        r = send(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
    port = pstest.free_port()
    r = send("--addr", "127.0.0.1:%d" % port, "--demo", 120, "--timeout-ms", 2000, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    assert summary["accepted"] == 0 and summary["failed"] == 120, summary
    assert summary["failed_by_status"] == {"UNAVAILABLE": 3}, summary
    r = send("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: penstock send"), r.stdout
