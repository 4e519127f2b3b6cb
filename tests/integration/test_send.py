"""`penstock send`: the real binary against a real penstock (RabbitMQ -> ClickHouse).

--demo events land in ClickHouse exactly once, ids as written by --ids, every event type of the proto among
them, with plausible columns; a proto3 JSON file written by the test (google.protobuf.json_format) in each
accepted layout lands those exact events, column by column; invalid input exits 2 naming file:line and sends
nothing; an unreachable server exits 1 with UNAVAILABLE counted; calls the server refuses are counted by
status; --json prints one parseable object; the progress line appears on a terminal only, at most about ten
times a second.
"""

import json
import re
import subprocess
import time

import pytest
from google.protobuf import json_format

import pstest
from pstest import pb

SEND_TIMEOUT_S = 120
LAND_TIMEOUT_S = 60


def send(args, stdin=None, timeout=SEND_TIMEOUT_S):
    """Runs `penstock send ARGS`; returns the CompletedProcess (stdout and stderr as text)."""
    return subprocess.run([pstest.PENSTOCK_BIN, "send"] + list(args), input=stdin, capture_output=True,
                          timeout=timeout, text=True)


def addr(p):
    return "127.0.0.1:%d" % p.port


def ready(clickhouse, db):
    """Waits for penstock's events table; merges stop, so that a duplicate row would stay visible."""
    pstest.poll(lambda: clickhouse.table_exists(db, "events"), 30, what="penstock to create %s.events" % db)
    clickhouse.query("SYSTEM STOP MERGES %s.events" % db)


def summary_line(out, label):
    """(events, calls) of a summary line such as 'accepted   1000 events (20 calls)'."""
    m = re.search(r"^%s\s+(\d+) events (?:\((\d+) calls\)|in (\d+) calls)" % label, out, re.M)
    assert m, "no %r line in the summary:\n%s" % (label, out)
    return int(m.group(1)), int(m.group(2) or m.group(3))


def wait_landed(clickhouse, db, ids):
    """Polls until every id has a row; returns (rows, distinct ids)."""
    pstest.poll(lambda: clickhouse.count_ids(db, ids)[1] >= len(ids), LAND_TIMEOUT_S,
                what="%d ids in %s.events" % (len(ids), db))
    time.sleep(1.0)  # a duplicate would come with its original: give it the time to show up
    return clickhouse.count_ids(db, ids)


def type_names():
    return {cls.DESCRIPTOR.name for _, cls in pstest.event_types()}


def test_demo_lands_every_id_once_with_every_type(penstock_proc, db, clickhouse, tmp_path):
    p = penstock_proc(db=db)
    ready(clickhouse, db)
    ids_path = tmp_path / "ids.txt"
    wall0 = time.time()
    r = send(["--addr", addr(p), "--demo", "1000", "--ids", str(ids_path)])
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)
    assert summary_line(r.stdout, "sent") == (1000, 20), r.stdout
    assert summary_line(r.stdout, "accepted") == (1000, 20), r.stdout
    assert summary_line(r.stdout, "failed") == (0, 0), r.stdout
    assert r.stderr == "", "stderr is a pipe: no progress line, no errors expected, got %r" % r.stderr[:500]
    rate = re.search(r"^rate\s+(\d+) events/s", r.stdout, re.M)
    assert rate and int(rate.group(1)) > 0, r.stdout
    pstest.report("send --demo 1000: %s events/s" % rate.group(1))

    ids = ids_path.read_text().splitlines()
    assert len(ids) == 1000 and len(set(ids)) == 1000, "%d ids, %d distinct" % (len(ids), len(set(ids)))
    prefix = ids[0].rsplit("-", 1)[0]
    assert all(i.startswith(prefix + "-") for i in ids), ids[:5]

    n, u = wait_landed(clickhouse, db, ids)
    assert (n, u) == (1000, 1000), "rows %d, distinct %d for 1000 ids" % (n, u)
    counts = clickhouse.id_counts(db, prefix)
    assert set(counts) == set(ids), "rows of this run's prefix that are not in --ids: %s" % (
        sorted(set(counts) - set(ids))[:5])
    assert set(counts.values()) == {1}

    rows = clickhouse.rows(
        "SELECT event_id, event_type, toUnixTimestamp(event_time) AS t, session_id, user_id, device_id, "
        "client_id, os, app_version, payload FROM %s.events WHERE event_id LIKE %s"
        % (db, pstest.sql_str(prefix + "-%")))
    by_type = {}
    classes = {cls.DESCRIPTOR.name: cls for _, cls in pstest.event_types()}
    problems = []
    for row in rows:
        by_type[row["event_type"]] = by_type.get(row["event_type"], 0) + 1
        for col in ("session_id", "device_id", "client_id", "os", "app_version"):
            if not row[col]:
                problems.append("%s: empty %s" % (row["event_id"], col))
        if int(row["user_id"]) <= 0:
            problems.append("%s: user_id %s" % (row["event_id"], row["user_id"]))
        # Demo timestamps are the clock minus up to five minutes, as a client would send them.
        if not wall0 - 400 <= int(row["t"]) <= time.time() + 5:
            problems.append("%s: event_time %s not recent" % (row["event_id"], row["t"]))
        cls = classes.get(row["event_type"])
        try:
            msg = json_format.Parse(row["payload"], cls())
            if not msg.ListFields():
                problems.append("%s: empty payload %s" % (row["event_id"], row["payload"]))
        except (json_format.ParseError, TypeError) as e:
            problems.append("%s: payload %r is not a %s: %s" % (row["event_id"], row["payload"], row["event_type"], e))
    assert not problems, "%d problems, first:\n%s" % (len(problems), "\n".join(problems[:10]))
    assert set(by_type) == type_names(), "types landed: %s" % by_type
    assert min(by_type.values()) >= 1000 // len(by_type) - 1, by_type  # types come in turn: evenly
    p.stop()


def write_input(path, layout, batches):
    """Writes the batches (pb.Events) as proto3 JSON in the given layout; returns the batches written."""
    if layout == "object":
        batches = batches[:1]
        text = json_format.MessageToJson(batches[0], indent=2)
    elif layout == "array":
        text = "[\n" + ",\n".join(json_format.MessageToJson(b, indent=2) for b in batches) + "\n]\n"
    elif layout == "mixed":  # two objects on their lines, then the rest as one array, in one file
        text = "".join(json_format.MessageToJson(b, indent=None) + "\n" for b in batches[:2])
        text += json.dumps([json.loads(json_format.MessageToJson(b)) for b in batches[2:]], ensure_ascii=False)
    else:  # one per line
        text = "".join(json_format.MessageToJson(b, indent=None) + "\n" for b in batches)
        assert text.count("\n") == len(batches)
    path.write_text(text, encoding="utf-8")
    return batches


@pytest.mark.parametrize("layout", ["lines", "array", "object", "mixed", "stdin"])
def test_json_file_lands_exact_events(layout, penstock_proc, db, clickhouse, tmp_path):
    runid = pstest.new_id("sendf")
    factory = pstest.EventFactory(runid)
    batches = [b for b, _ in factory.mixed_batches(3, 7)]
    path = tmp_path / "events.json"
    batches = write_input(path, "lines" if layout == "stdin" else layout, batches)
    sent = {}
    for b in batches:
        for ev in b.events:
            sent[ev.id] = (b, ev)

    p = penstock_proc(db=db)
    ready(clickhouse, db)
    ids_path = tmp_path / "ids.txt"
    if layout == "stdin":
        r = send(["--addr", addr(p), "--file", "-", "--ids", str(ids_path)], stdin=path.read_text(encoding="utf-8"))
    else:
        r = send(["--addr", addr(p), "--file", str(path), "--ids", str(ids_path)])
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)
    assert summary_line(r.stdout, "accepted") == (len(sent), len(batches)), r.stdout
    assert sorted(ids_path.read_text(encoding="utf-8").splitlines()) == sorted(sent)

    n, u = wait_landed(clickhouse, db, list(sent))
    assert (n, u) == (len(sent), len(sent)), "rows %d, distinct %d for %d events" % (n, u, len(sent))
    assert set(clickhouse.id_counts(db, runid).values()) == {1}
    rows = clickhouse.rows(
        "SELECT event_id, event_type, event_timestamp, session_id, user_id, device_id, client_id, os, app_version, "
        "payload FROM %s.events WHERE event_id LIKE %s" % (db, pstest.sql_str(runid + "-%")))
    assert {row["event_id"] for row in rows} == set(sent)
    problems = []
    for row in rows:
        b, ev = sent[row["event_id"]]
        type_name, sub = pstest.payload_of(ev)
        want = {"event_type": type_name, "event_timestamp": ev.timestamp, "session_id": b.header.sessionId,
                "user_id": b.header.userId, "device_id": b.header.deviceId, "client_id": b.header.clientId,
                "os": b.header.os, "app_version": b.header.appVersion, "payload": pstest.payload_json(sub)}
        got = dict(row)
        got["user_id"] = int(got["user_id"])
        got["payload"] = json.loads(got["payload"])
        for k, v in want.items():
            if got[k] != v:
                problems.append("%s: %s = %r, want %r" % (row["event_id"], k, got[k], v))
    assert not problems, "%d mismatches, first:\n%s" % (len(problems), "\n".join(problems[:10]))
    p.stop()


def dispatch_calls(p):
    return p.metrics().total("penstock_rpcs_total", method="dispatch")


@pytest.mark.parametrize("case", ["syntax", "not-events", "unknown-type"])
def test_invalid_input_exits_2_with_line_and_sends_nothing(case, penstock_proc, db, tmp_path):
    good = '{"header":{"sessionId":"s"},"events":[{"id":"%s","clickEvent":{"page":"home"}}]}\n'
    if case == "syntax":
        text = good % "bad-1" + good % "bad-2" + '{"header":{"sessionId":"s"},\n  "events":[{"id":"x",}]}\n'
        want = r"%s:4:\d+: invalid JSON" % re.escape(str(tmp_path / "in.json"))
    elif case == "not-events":
        text = good % "bad-1" + '{"header":{"sessionID":"s"}}\n' + good % "bad-2"
        want = r"%s:2:1: not a valid Events object: header: unknown field \"sessionID\"" % re.escape(
            str(tmp_path / "in.json"))
    else:  # an event type this proto does not know
        text = "[\n" + (good % "bad-1").strip() + ",\n" + (good % "bad-2").strip() + ",\n" + \
            '  {"header":{},"events":[{"id":"x","noSuchEvent":{}}]}\n]\n'
        want = r"%s:4:3: not a valid Events object: events\[0\]: unknown field \"noSuchEvent\"" % re.escape(
            str(tmp_path / "in.json"))
    (tmp_path / "in.json").write_text(text)
    p = penstock_proc(db=db)
    r = send(["--addr", addr(p), "--file", str(tmp_path / "in.json")])
    assert r.returncode == 2, "exit %d; stderr: %s" % (r.returncode, r.stderr)
    assert re.search(want, r.stderr), "stderr %r does not match %r" % (r.stderr, want)
    assert r.stdout == "", r.stdout
    assert dispatch_calls(p) == 0, "invalid input must send nothing"
    # Unreadable input is a usage error too.
    r = send(["--addr", addr(p), "--file", str(tmp_path / "missing.json")])
    assert r.returncode == 2 and "missing.json" in r.stderr, r.stderr
    assert dispatch_calls(p) == 0
    p.stop()


def test_unreachable_server_exits_1_with_unavailable(tmp_path):
    port = pstest.free_port()  # nothing listens there
    r = send(["--addr", "127.0.0.1:%d" % port, "--demo", "100", "--batch", "10", "--json",
              "--ids", str(tmp_path / "ids.txt")], timeout=60)
    assert r.returncode == 1, "exit %d; stderr: %s" % (r.returncode, r.stderr)
    s = json.loads(r.stdout)
    assert s["sent"] == 100 and s["sent_calls"] == 10, s
    assert s["accepted"] == 0 and s["failed"] == 100, s
    assert s["failed_by_status"] == {"UNAVAILABLE": {"events": 100, "calls": 10}}, s
    assert "UNAVAILABLE" in r.stderr, r.stderr
    assert (tmp_path / "ids.txt").read_text() == "", "no id of a failed call belongs in --ids"
    r = send(["--addr", "127.0.0.1:%d" % port, "--demo", "30", "--batch", "10"], timeout=60)
    assert r.returncode == 1
    assert re.search(r"^\s+UNAVAILABLE\s+30 events \(3 calls\)", r.stdout, re.M), r.stdout


def test_refused_calls_counted_by_status(penstock_proc, db, clickhouse, tmp_path):
    """A batch penstock refuses (no header: INVALID_ARGUMENT) fails alone; the others land; exit 1."""
    runid = pstest.new_id("sendr")
    ok = pb.Events(header=pb.Header(sessionId="s", userId=1))
    ok.events.add(id="%s-ok" % runid, timestamp="1700000000").clickEvent.page = "home"
    refused = pb.Events()
    refused.events.add(id="%s-refused" % runid, timestamp="1700000000").clickEvent.page = "home"
    path = tmp_path / "in.json"
    path.write_text(json_format.MessageToJson(refused, indent=None) + "\n" +
                    json_format.MessageToJson(ok, indent=None) + "\n")
    p = penstock_proc(db=db)
    ready(clickhouse, db)
    r = send(["--addr", addr(p), "--file", str(path), "--json", "--ids", str(tmp_path / "ids.txt")])
    assert r.returncode == 1, "exit %d; stderr: %s" % (r.returncode, r.stderr)
    s = json.loads(r.stdout)
    assert s["accepted_calls"] == 1 and s["failed_calls"] == 1, s
    assert s["failed_by_status"] == {"INVALID_ARGUMENT": {"events": 1, "calls": 1}}, s
    assert "INVALID_ARGUMENT" in r.stderr and "header" in r.stderr, r.stderr
    assert (tmp_path / "ids.txt").read_text().splitlines() == ["%s-ok" % runid]
    assert wait_landed(clickhouse, db, ["%s-ok" % runid]) == (1, 1)
    assert clickhouse.count_ids(db, ["%s-refused" % runid]) == (0, 0)
    p.stop()


def test_json_summary_parses(penstock_proc, db):
    p = penstock_proc(db=db)
    r = send(["--addr", addr(p), "--demo", "300", "--batch", "40", "--concurrency", "3", "--channels", "2",
              "--json", "--quiet"])
    assert r.returncode == 0, "exit %d; stderr: %s" % (r.returncode, r.stderr)
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert len(lines) == 1, "--json prints one line: %r" % r.stdout
    s = json.loads(lines[0])
    assert s["addr"] == addr(p)
    assert (s["sent"], s["sent_calls"], s["accepted"], s["accepted_calls"]) == (300, 8, 300, 8), s
    assert (s["failed"], s["failed_calls"], s["failed_by_status"], s["not_sent"]) == (0, 0, {}, 0), s
    assert s["events_per_sec"] > 0 and s["elapsed_s"] > 0, s
    lat = s["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], lat
    assert abs(s["events_per_sec"] - 300 / s["elapsed_s"]) <= 0.01 * s["events_per_sec"] + 1, s
    # --quiet without --json: nothing at all, the exit code tells.
    r = send(["--addr", addr(p), "--demo", "10", "--quiet"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    p.stop()


def test_progress_line_on_a_terminal_only(penstock_proc, db):
    p = penstock_proc(db=db, env={"CONSUMERS_PER_QUEUE": "0"})
    rc, tty, out = pstest.run_on_tty([pstest.PENSTOCK_BIN, "send", "--addr", addr(p), "--demo", "60000",
                                      "--batch", "20", "--concurrency", "2", "--json"], SEND_TIMEOUT_S)
    assert rc == 0, tty.decode("utf-8", "replace")[-2000:]
    s = json.loads(out)
    text = tty.decode("utf-8", "replace")
    draws = [d for d in text.split("\r") if "events/s" in d]
    assert draws, "no progress line on the terminal: %r" % text[:500]
    assert "60000/60000 sent" in draws[-1] and "60000 accepted" in draws[-1], draws[-1]
    # Redrawn at most ten times a second (plus the first and the final one).
    assert len(draws) <= s["elapsed_s"] * 10 + 3, "%d redraws in %.2fs" % (len(draws), s["elapsed_s"])
    assert "\r" not in out.decode(), "the summary on stdout carries no progress line"
    p.stop()


def test_usage():
    for args, want in ((["--demo", "0"], "--demo"), (["--frobnicate"], "unknown option"), ([], "nothing to send"),
                       (["--demo", "5", "--file", "x.json"], "not both"),
                       (["--addr", "nohost", "--demo", "5"], "HOST:PORT")):
        r = send(args, timeout=30)
        assert r.returncode == 2, "%s: exit %d" % (args, r.returncode)
        assert want in r.stderr and r.stderr.startswith("penstock send:"), "%s: %r" % (args, r.stderr)
        assert r.stdout == ""
    r = send(["--help"], timeout=30)
    assert r.returncode == 0
    for option in ("--addr HOST:PORT", "--demo N", "--file F", "--batch B", "--concurrency C", "--timeout-ms",
                   "--ids FILE", "--json", "--quiet", "exit codes"):
        assert option in r.stdout, "--help lacks %s" % option
    top = subprocess.run([pstest.PENSTOCK_BIN, "--help"], capture_output=True, text=True, timeout=30)
    assert re.search(r"^\s+send\b", top.stdout, re.M), top.stdout


def test_every_command_has_help_and_unknown_ones_exit_2():
    for cmd in ("serve", "send", "check-config", "config", "version"):
        r = subprocess.run([pstest.PENSTOCK_BIN, cmd, "--help"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout.startswith("usage: penstock " + cmd), (cmd, r.returncode, r.stdout)
    r = subprocess.run([pstest.PENSTOCK_BIN, "frobnicate"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "unknown command" in r.stderr, (r.returncode, r.stderr)
