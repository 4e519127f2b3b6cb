"""`penstock bench`: the real load generator against a real penstock (RabbitMQ -> ClickHouse).

Closed loop for a count: every id of --ids lands in ClickHouse exactly once, in the default mix's proportions,
and `accepted` equals the server's penstock_events_accepted_total delta; --json has the documented keys;
--timeline and --cdf are well-formed CSV that agree with the report. Open loop at 2000 events/s for 3 s
achieves the rate within 10%. Calls the server refuses are reported and the exit code stays 0; a bad --mix
exits 2; an unreachable server exits 1; the progress line shows on a terminal only, once a second.
bench/idle-floor, whose RSS bench/compare prints under penstock's idle RSS, maps the shared objects an idle
penstock maps, accepts a gRPC connection and exits 0 on SIGTERM.
"""

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import time

import grpc

import pstest

BENCH_TIMEOUT_S = 60
LAND_TIMEOUT_S = 60

JSON_KEYS = {"run_id", "addr", "mode", "offered_rate", "sent", "accepted", "failed", "failed_by_status",
             "events_per_sec", "elapsed_s", "late_calls", "latency_ms"}
LATENCY_KEYS = {"p50", "p90", "p99", "p999", "max", "mean"}
DEFAULT_MIX = {"LaunchEvent": 5, "PageOpenedEvent": 25, "WidgetViewEvent": 30, "ClickEvent": 25,
               "AddToCartEvent": 10, "CompletePurchaseEvent": 5}


def bench(args, timeout=BENCH_TIMEOUT_S):
    """Runs `penstock bench ARGS`; returns the CompletedProcess (text)."""
    return subprocess.run([pstest.PENSTOCK_BIN, "bench"] + list(args), capture_output=True, timeout=timeout,
                          text=True, stdin=subprocess.DEVNULL)


def addr(p):
    return "127.0.0.1:%d" % p.port


def ok(r):
    assert r.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)
    return r


def report(r):
    """The --json report: one line, one object with every documented key."""
    lines = r.stdout.splitlines()
    assert len(lines) == 1, "--json prints one line: %r" % r.stdout
    s = json.loads(lines[0])
    assert JSON_KEYS <= set(s), "missing keys: %s" % (JSON_KEYS - set(s))
    assert set(s["latency_ms"]) >= LATENCY_KEYS, s["latency_ms"]
    lat = s["latency_ms"]
    if s["sent"]:
        assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"], lat
        assert lat["mean"] <= lat["max"], lat
    assert s["sent"] == s["accepted"] + s["failed"], s
    assert s["failed"] == sum(v["events"] for v in s["failed_by_status"].values()), s
    return s


def read_csv(path, header):
    text = path.read_text()
    assert text.endswith("\n"), "%s does not end with a newline" % path
    rows = list(csv.reader(io.StringIO(text)))
    assert rows and rows[0] == header, "%s: header %r" % (path, rows[:1])
    assert all(len(row) == len(header) for row in rows[1:]), "%s: ragged rows" % path
    return rows[1:]


def check_timeline(path, s):
    """Rows 0, 1, 2, ... whose counts add up to the report's; latencies present exactly when calls finished."""
    rows = read_csv(path, ["second", "accepted_events", "calls", "p50_ms", "p99_ms"])
    assert [int(r[0]) for r in rows] == list(range(len(rows))), rows
    assert len(rows) >= max(1, int(s["elapsed_s"])), (len(rows), s["elapsed_s"])
    assert len(rows) <= int(s["elapsed_s"]) + 2, (len(rows), s["elapsed_s"])
    assert sum(int(r[1]) for r in rows) == s["accepted"], rows
    assert sum(int(r[2]) for r in rows) == s["sent_calls"], rows
    for r in rows:
        if int(r[2]) == 0:
            assert r[3] == r[4] == "", r
        else:
            assert 0 <= float(r[3]) <= float(r[4]) <= s["latency_ms"]["max"] * 1.07 + 0.01, (r, s["latency_ms"])
    return rows


def check_cdf(path, s):
    """Strictly increasing latencies and fractions, ending at 1 at the largest latency."""
    rows = [(float(a), float(b)) for a, b in read_csv(path, ["latency_ms", "fraction"])]
    assert rows, "no rows"
    assert all(x2 > x1 and f2 > f1 for (x1, f1), (x2, f2) in zip(rows, rows[1:])), rows[:20]
    assert 0 < rows[0][1] and rows[-1][1] == 1.0, rows[-3:]
    assert abs(rows[-1][0] - s["latency_ms"]["max"]) < 0.001, (rows[-1], s["latency_ms"])
    # The median from the CDF agrees with p50 within the histogram's 1/16.
    median = next(x for x, f in rows if f >= 0.5)
    assert abs(median - s["latency_ms"]["p50"]) <= median / 16 + 0.002, (median, s["latency_ms"])
    return rows


def ready(clickhouse, db):
    """Waits for penstock's events table; merges stop, so that a duplicate row would stay visible."""
    pstest.poll(lambda: clickhouse.table_exists(db, "events"), 30, what="penstock to create %s.events" % db)
    clickhouse.query("SYSTEM STOP MERGES %s.events" % db)


def accepted_total(p):
    return p.metrics().value("penstock_events_accepted_total")


def test_closed_loop_count_lands_every_id(penstock_proc, db, clickhouse, tmp_path):
    p = penstock_proc(db=db)
    ready(clickhouse, db)
    runid = pstest.new_id("bc")
    ids_path, tl_path, cdf_path = tmp_path / "ids.txt", tmp_path / "timeline.csv", tmp_path / "cdf.csv"
    before = accepted_total(p)
    r = ok(bench(["--addr", addr(p), "--events", "5000", "--concurrency", "16", "--connections", "2",
                  "--run-id", runid, "--ids", str(ids_path), "--timeline", str(tl_path), "--cdf", str(cdf_path),
                  "--json"]))
    assert r.stderr == "", "stderr is a pipe: no progress line, no errors expected: %r" % r.stderr[:500]
    s = report(r)
    assert (s["run_id"], s["addr"], s["mode"], s["offered_rate"]) == (runid, addr(p), "closed", None), s
    assert (s["sent"], s["accepted"], s["failed"], s["failed_by_status"]) == (5000, 5000, 0, {}), s
    assert (s["sent_calls"], s["late_calls"]) == (100, 0), s
    assert s["events_per_sec"] > 0 and abs(s["events_per_sec"] - 5000 / s["elapsed_s"]) <= 0.01 * s["events_per_sec"] + 1
    assert s["mix"] == DEFAULT_MIX, s["mix"]
    assert accepted_total(p) - before == s["accepted"], "server counted %s, bench %d" % (
        accepted_total(p) - before, s["accepted"])
    pstest.report("bench closed loop, 5000 events, 16 in flight: %.0f events/s, p99 %.1f ms"
                  % (s["events_per_sec"], s["latency_ms"]["p99"]))

    ids = ids_path.read_text().splitlines()
    assert len(ids) == 5000 and len(set(ids)) == 5000, "%d ids, %d distinct" % (len(ids), len(set(ids)))
    bad = [i for i in ids if not re.fullmatch(re.escape(runid) + r"-\d{12}", i)]
    assert not bad, bad[:5]
    assert sorted(int(i.rsplit("-", 1)[1]) for i in ids) == list(range(1, 5001))

    check_timeline(tl_path, s)
    check_cdf(cdf_path, s)

    pstest.poll(lambda: clickhouse.count_ids(db, ids)[1] >= 5000, LAND_TIMEOUT_S, what="5000 ids in ClickHouse")
    time.sleep(1.0)  # a duplicate would come with its original: give it the time to show up
    assert clickhouse.count_ids(db, ids) == (5000, 5000)
    assert set(clickhouse.id_counts(db, runid)) == set(ids), "rows of this run that are not in --ids"
    # The default mix: the original load generator's proportions (the pool holds them exactly; 5000 events
    # are a part of it, so allow a little).
    by_type = {row["event_type"]: int(row["n"]) for row in clickhouse.rows(
        "SELECT event_type, count() AS n FROM %s.events WHERE event_id LIKE %s GROUP BY event_type"
        % (db, pstest.sql_str(runid + "-%")))}
    assert set(by_type) == set(DEFAULT_MIX), by_type
    for t, w in DEFAULT_MIX.items():
        assert abs(by_type[t] / 5000 * 100 - w) <= 2.5, "%s: %d of 5000, mix says %d%%" % (t, by_type[t], w)
    p.stop()


def test_open_loop_achieves_the_rate(penstock_proc, db, clickhouse, tmp_path):
    p = penstock_proc(db=db)
    ready(clickhouse, db)
    tl_path = tmp_path / "timeline.csv"
    before = accepted_total(p)
    r = ok(bench(["--addr", addr(p), "--rate", "2000", "--duration", "3", "--timeline", str(tl_path), "--json"]))
    s = report(r)
    assert (s["mode"], s["offered_rate"]) == ("open", 2000), s
    # One call of 50 every 25 ms for 3 s: 120 calls, the last due at 2.975 s.
    assert (s["sent"], s["sent_calls"]) == (6000, 120), s
    assert s["accepted"] == 6000 and s["failed"] == 0, s
    assert 3.0 * 0.95 <= s["elapsed_s"] <= 3.0 * 1.5, s
    assert abs(s["events_per_sec"] - 2000) <= 200, "achieved %.0f events/s of 2000" % s["events_per_sec"]
    # Late starts (more than 1 ms after due) say the client fell behind: on a busy machine, a few.
    assert s["late_calls"] <= 60 and s["late_max_ms"] < 1000, (s["late_calls"], s["late_max_ms"])
    assert accepted_total(p) - before == 6000
    rows = check_timeline(tl_path, s)
    for row in rows[:3]:
        assert 1500 <= int(row[1]) <= 2500, "second %s: %s events accepted" % (row[0], row[1])
    pstest.report("bench open loop 2000 events/s for 3 s: achieved %.0f events/s, p50 %.1f ms, p99 %.1f ms, "
                  "%d late" % (s["events_per_sec"], s["latency_ms"]["p50"], s["latency_ms"]["p99"], s["late_calls"]))
    # The text report says the same.
    r = ok(bench(["--addr", addr(p), "--rate", "1000", "--events", "120", "--batch", "20"]))
    assert re.search(r"^sent\s+120 events in 6 calls$", r.stdout, re.M), r.stdout
    assert re.search(r"^accepted\s+120 events \(6 calls\)$", r.stdout, re.M), r.stdout
    assert re.search(r"^open loop\s+offered 1000 events/s, achieved \d+ events/s; \d+ of 6 calls started late",
                     r.stdout, re.M), r.stdout
    assert re.search(r"^latency\s+p50 [\d.]+ ms, p90 [\d.]+ ms, p99 [\d.]+ ms, p99\.9 [\d.]+ ms, max [\d.]+ ms",
                     r.stdout, re.M), r.stdout
    p.stop()


def test_refused_calls_are_reported_and_exit_0(penstock_proc, db):
    """A batch larger than GRPC_MAX_RECV_BYTES is refused (RESOURCE_EXHAUSTED): counted by status, and the run
    still completed."""
    p = penstock_proc(db=db, env={"GRPC_MAX_RECV_BYTES": "1024", "CONSUMERS_PER_QUEUE": "0"})
    r = bench(["--addr", addr(p), "--events", "300", "--batch", "50", "--json"])
    assert r.returncode == 0, "exit %d; stderr: %s" % (r.returncode, r.stderr)
    s = report(r)
    assert s["accepted"] == 0 and s["failed"] == 300, s
    assert s["failed_by_status"] == {"RESOURCE_EXHAUSTED": {"events": 300, "calls": 6}}, s
    assert "RESOURCE_EXHAUSTED" in r.stderr, r.stderr
    p.stop()


def test_unreachable_server_exits_1(tmp_path):
    port = pstest.free_port()  # nothing listens there
    r = bench(["--addr", "127.0.0.1:%d" % port, "--events", "200", "--json", "--ids", str(tmp_path / "ids.txt")])
    assert r.returncode == 1, "exit %d; stderr: %s" % (r.returncode, r.stderr)
    s = report(r)
    assert s["accepted"] == 0 and s["failed"] == 200, s
    assert s["failed_by_status"] == {"UNAVAILABLE": {"events": 200, "calls": 4}}, s
    assert "unreachable" in r.stderr, r.stderr
    assert (tmp_path / "ids.txt").read_text() == ""
    # A duration: the same, for the whole of it.
    r = bench(["--addr", "127.0.0.1:%d" % port, "--duration", "0.5", "--quiet"])
    assert (r.returncode, r.stdout) == (1, ""), (r.returncode, r.stdout, r.stderr)


def test_usage_errors_exit_2():
    for args, want in ((["--addr", "127.0.0.1:1", "--events", "10", "--mix", "ClickEvent=1,NoSuchEvent=2"],
                        "unknown event type 'NoSuchEvent'"),
                       (["--addr", "127.0.0.1:1", "--events", "10", "--mix", "ClickEvent"], "TYPE=WEIGHT"),
                       (["--addr", "127.0.0.1:1"], "--duration S or --events N"),
                       (["--events", "10"], "--addr"),
                       (["--addr", "127.0.0.1:1", "--events", "10", "--duration", "1"], "not both"),
                       (["--addr", "127.0.0.1:1", "--events", "10", "--rate", "0"], "--rate"),
                       (["--addr", "127.0.0.1:1", "--events", "10", "--frobnicate"], "unknown option")):
        r = bench(args, timeout=30)
        assert r.returncode == 2, "%s: exit %d" % (args, r.returncode)
        assert want in r.stderr and r.stderr.startswith("penstock bench:"), "%s: %r" % (args, r.stderr)
        assert r.stdout == ""
    # The mix's message lists the types the proto has.
    r = bench(["--addr", "127.0.0.1:1", "--events", "10", "--mix", "Nope=1"], timeout=30)
    assert all(t in r.stderr for t in DEFAULT_MIX), r.stderr
    r = ok(bench(["--help"], timeout=30))
    assert r.stdout.startswith("usage: penstock bench")
    for option in ("--addr HOST:PORT", "--connections N", "--concurrency C", "--batch B", "--mix TYPE=W",
                   "--duration S", "--events N", "--rate R", "--timeout-ms T", "--run-id ID", "--ids FILE",
                   "--json", "--timeline FILE", "--cdf FILE", "--quiet", "exit codes"):
        assert option in r.stdout, "--help lacks %s" % option
    top = subprocess.run([pstest.PENSTOCK_BIN, "--help"], capture_output=True, text=True, timeout=30)
    assert re.search(r"^\s+bench\b", top.stdout, re.M), top.stdout


def test_progress_line_on_a_terminal_only(penstock_proc, db):
    """Once a second on a terminal: elapsed, events/s over the last second, calls in flight, failed calls."""
    p = penstock_proc(db=db, env={"CONSUMERS_PER_QUEUE": "0"})
    rc, tty, out = pstest.run_on_tty([pstest.PENSTOCK_BIN, "bench", "--addr", addr(p), "--rate", "1000",
                                      "--duration", "2.5", "--json"], BENCH_TIMEOUT_S)
    assert rc == 0, tty.decode("utf-8", "replace")[-2000:]
    s = json.loads(out)
    assert s["accepted"] == 2500, s
    draws = [d for d in tty.decode("utf-8", "replace").split("\r") if "events/s" in d]
    assert 2 <= len(draws) <= 3, "%d progress lines in %.1f s: %r" % (len(draws), s["elapsed_s"], draws)
    m = re.search(r"^\s*(\d+)s\s+(\d+) events/s\s+(\d+) in flight\s+(\d+) failed calls", draws[1])
    assert m, draws[1]
    assert int(m.group(1)) == 2 and 800 <= int(m.group(2)) <= 1200 and int(m.group(4)) == 0, draws[1]
    assert "\r" not in out.decode(), "the report on stdout carries no progress line"
    p.stop()


IDLE_FLOOR_BIN = os.path.join(os.path.dirname(pstest.PENSTOCK_BIN), "bench", "idle-floor")


def shared_objects(pid):
    """The shared objects mapped into process PID, by file name."""
    with open("/proc/%d/maps" % pid) as f:
        paths = {line.split()[5] for line in f if len(line.split()) > 5}
    return {os.path.basename(q) for q in paths if ".so" in os.path.basename(q)}


def test_idle_floor_maps_what_idle_penstock_maps(penstock_proc, db):
    assert os.access(IDLE_FLOOR_BIN, os.X_OK), "%s missing: make bench-idle-floor" % IDLE_FLOOR_BIN
    p = penstock_proc(db=db)
    port = pstest.free_port()
    floor = subprocess.Popen([IDLE_FLOOR_BIN, "127.0.0.1:%d" % port], stdout=subprocess.PIPE, text=True)
    try:
        line = floor.stdout.readline()
        assert line == "ready port=%d\n" % port, line
        pstest.poll(lambda: pstest.port_open(port), 10, what="idle-floor to listen")
        # A real gRPC client completes the HTTP/2 handshake with it.
        with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
            grpc.channel_ready_future(ch).result(timeout=10)
        mine, its = shared_objects(floor.pid), shared_objects(p.proc.pid)
        # penstock may load more at run time (name-service modules and the like), never fewer.
        assert mine <= its, "idle-floor maps what penstock does not: %s" % sorted(mine - its)
        linked = {n for n in its if not n.startswith(("libnss_", "libresolv"))}
        assert linked <= mine, "penstock maps what idle-floor does not: %s" % sorted(linked - mine)
        floor.send_signal(signal.SIGTERM)
        assert floor.wait(timeout=30) == 0
    finally:
        if floor.poll() is None:
            floor.kill()
            floor.wait()


def test_idle_floor_says_so_when_it_cannot_listen():
    """On a port that is taken, idle-floor exits 1 and names the address (bench/compare then reports that it
    did not start instead of a figure)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        addr = "127.0.0.1:%d" % taken.getsockname()[1]
        r = subprocess.run([IDLE_FLOOR_BIN, addr], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r
    assert r.stdout == "", r.stdout
    assert "idle-floor: cannot listen on %s" % addr in r.stderr, r.stderr
