"""Operability: the monitoring HTTP server on GIN_PORT, metrics that move as events flow, readiness as RabbitMQ
and ClickHouse come and go, draining, the per-RPC access log and its sampling, JSON and text logs, secrets
redaction, fail points, sd_notify and the watchdog, and docs/operations.md's metrics table against the live
/metrics.

One penstock (`mon`, module scope) serves the tests that come first in this file, then the readiness tests at
the end, which stop and restart the test RabbitMQ and ClickHouse with scripts/servers (always restarting them).
While `mon` runs, other tests start their own penstock; only one of them runs at a time.
"""

import datetime
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

import grpc
import pytest

import pstest
from pstest import pb

MAX_RECV = 65536
MON_QUEUE = 777          # an EVENT_BUFFERED_CHANNEL_SIZE no default would give
MON_WORKERS = 2
MON_CONSUMERS = 2        # of grpc_clickhouse_event_q; the built-in topology's other queues add theirs
SECRET = "s3cret-pw"

# The metric families the server documents (name -> type); the labelled ones may appear only once used.
ALWAYS = {
    "penstock_build_info": "gauge",
    "penstock_events_received_total": "counter",
    "penstock_events_accepted_total": "counter",
    "penstock_batches_received_total": "counter",
    "penstock_batches_accepted_total": "counter",
    "penstock_messages_published_total": "counter",
    "penstock_events_published_total": "counter",
    "penstock_publish_errors_total": "counter",
    "penstock_publish_given_up_events_total": "counter",
    "penstock_queue_depth": "gauge",
    "penstock_queue_capacity": "gauge",
    "penstock_dispatch_parked_calls": "gauge",
    "penstock_ready": "gauge",
    "penstock_draining": "gauge",
    "penstock_log_suppressed_total": "counter",
    "process_cpu_seconds_total": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
    "process_threads": "gauge",
}
LABELLED = {  # family -> (type, label names)
    "penstock_rpcs_total": ("counter", {"method", "code"}),
    "penstock_rpc_duration_seconds": ("histogram", {"method", "code"}),
    "penstock_events_rejected_total": ("counter", {"reason"}),
    "penstock_events_skipped_total": ("counter", {"reason"}),
    "penstock_messages_consumed_total": ("counter", {"queue"}),
    "penstock_messages_dead_lettered_total": ("counter", {"queue", "reason"}),
    "penstock_rows_inserted_total": ("counter", {"queue", "table"}),
    "penstock_inserts_total": ("counter", {"queue", "table", "result"}),
    "penstock_insert_duration_seconds": ("histogram", {"table"}),
    "penstock_insert_rows": ("histogram", {"table"}),
    "penstock_broker_connections": ("gauge", {"role"}),
    "penstock_dependency_up": ("gauge", {"dependency"}),  # and `connection` for each ClickHouse connection
    "penstock_broker_reconnects_total": ("counter", {"role"}),
}


# ------------------------------------------------------------------ helpers

def binary_version():
    r = subprocess.run([pstest.PENSTOCK_BIN, "version"], capture_output=True, text=True, timeout=10)
    m = re.search(r"\d+\.\d+\S*", r.stdout + r.stderr)
    assert r.returncode == 0 and m, "penstock version: rc %d, %r" % (r.returncode, r.stdout + r.stderr)
    return m.group(0)


HTTP_ERRORS = (OSError, http.client.HTTPException)


def wait_http(p, timeout=15):
    """Waits until GET /health answers 200 on GIN_PORT."""
    def up():
        if not p.running():
            raise AssertionError("%s exited with %s; stderr:\n%s" % (p.name, p.proc.returncode, p.stderr_tail()))
        try:
            return p.http("/health", timeout=1).status == 200
        except HTTP_ERRORS:
            return False
    pstest.poll(up, timeout, interval=0.05, what="%s: GET /health on GIN_PORT %s" % (p.name, p.http_port))


def get_ready(p, timeout=2):
    """(status, body) of GET /ready; (None, error text) when nothing answers."""
    try:
        r = p.http("/ready", timeout=timeout)
    except HTTP_ERRORS as e:
        return None, repr(e)
    return r.status, r.json()


def check_ready_shape(status, body):
    """The /ready body: {"ready": bool, "checks": {rabbitmq, clickhouse, queue, draining: {ok[, error]}}}."""
    assert isinstance(body, dict), body
    assert body.get("ready") is (status == 200), "HTTP %s with ready=%r: %s" % (status, body.get("ready"), body)
    checks = body.get("checks")
    assert isinstance(checks, dict), "no checks object: %s" % body
    assert {"rabbitmq", "queue", "draining"} <= set(checks), "checks: %s" % sorted(checks)
    for name, c in checks.items():
        assert isinstance(c, dict) and isinstance(c.get("ok"), bool), "check %s: %r" % (name, c)
        if not c["ok"]:
            assert isinstance(c.get("error"), str) and c["error"], "check %s not ok without an error: %r" % (name, c)
    assert body["ready"] == all(c["ok"] for c in checks.values()), "ready=%s but checks %s" % (body["ready"], checks)
    return checks


def wait_ready(p, want, timeout, what, cond=None):
    """Polls /ready until it answers 200 (want=True) or 503 (want=False) and cond(checks) holds; returns
    (seconds taken, checks)."""
    t0 = time.monotonic()
    last = [None]

    def ok():
        status, body = get_ready(p)
        last[0] = (status, body)
        if status is None:
            return False
        assert status in (200, 503), "GET /ready: HTTP %s %s" % (status, body)
        checks = check_ready_shape(status, body)
        if (status == 200) != want:
            return False
        return checks if cond is None or cond(checks) else False

    checks = pstest.poll(ok, timeout, interval=0.1, what="%s (last /ready: %s)" % (what, last))
    return time.monotonic() - t0, checks


def proc_stat(pid):
    """(start time as unix seconds, cpu seconds, rss bytes, vsize bytes) from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        btime = next(int(l.split()[1]) for l in f if l.startswith("btime "))
    utime, stime, start, vsize, rss = (int(fields[11]), int(fields[12]), int(fields[19]), int(fields[20]),
                                       int(fields[21]))
    return btime + start / tck, (utime + stime) / tck, rss * os.sysconf("SC_PAGE_SIZE"), vsize


def metric_delta(before, after, name, **labels):
    return after.total(name, **labels) - before.total(name, **labels)


def batch_of(factory, fields, tag):
    b, _ = factory.batch(fields, tag=tag)
    return b


def raw_with_unknown_event(batch, event_id):
    """batch serialized, plus one event whose payload is in a field number this build does not know."""
    evs = pstest.field_number(pb.Events, "events")
    ev = (pstest.field_bytes(pstest.field_number(pb.Event, "id"), event_id.encode())
          + pstest.field_bytes(pstest.field_number(pb.Event, "timestamp"), b"1700000000")
          + pstest.field_bytes(pstest.unused_event_field_number(), pstest.field_varint(1, 1)))
    return batch.SerializeToString() + pstest.field_bytes(evs, ev)


def distinct_types(batch):
    return {pstest.payload_of(e)[0] for e in batch.events} - {None}


def servers_cmd(cmd):
    """scripts/servers <cmd> on the test servers (tests/run-integration's PS_* settings)."""
    env = os.environ
    rmq_port = str(urllib.parse.urlparse(pstest.RABBITMQ_URL).port)
    ch_port = str(urllib.parse.urlparse(pstest.CLICKHOUSE_URL).port)
    if not env.get("PS_SERVERS_DIR") or env.get("PS_RABBITMQ_PORT") != rmq_port \
            or env.get("PS_CLICKHOUSE_HTTP_PORT") != ch_port:
        pytest.fail("PS_SERVERS_DIR, PS_RABBITMQ_PORT=%s and PS_CLICKHOUSE_HTTP_PORT=%s must name the test servers "
                    "(tests/run-integration sets them) before a test may stop and start them; have %s"
                    % (rmq_port, ch_port, {k: env.get(k) for k in ("PS_SERVERS_DIR", "PS_RABBITMQ_PORT",
                                                                  "PS_CLICKHOUSE_HTTP_PORT")}))
    r = subprocess.run([os.path.join(pstest.ROOT, "scripts", "servers"), cmd], capture_output=True, text=True,
                       timeout=150, cwd=pstest.ROOT)
    assert r.returncode == 0, "scripts/servers %s: rc %d\n%s%s" % (cmd, r.returncode, r.stdout, r.stderr)


# ---------------------------------------------------------------- log lines

LOG_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)"
TEXT_LINE = re.compile(r"^(%s) +(debug|info|warn|error) +(\S.*)$" % LOG_TIME)
TEXT_KV = re.compile(r' ([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
LEVELS = ("debug", "info", "warn", "error")


def text_unquote(v):
    if not v.startswith('"'):
        return v
    esc = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r"}
    return re.sub(r'\\(x[0-9a-fA-F]{2}|.)',
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "x" and len(m.group(1)) == 3
                  else esc.get(m.group(1), m.group(1)), v[1:-1])


def parse_text_line(line):
    """(time, level, msg, fields) of a text log line `time level msg key=value...`, or None."""
    m = TEXT_LINE.match(line)
    if not m:
        return None
    rest = m.group(3)
    for i in [j for j, c in enumerate(rest) if c == " "] + [len(rest)]:
        if i == 0:
            continue
        fields, pos = {}, i
        while pos < len(rest):
            kv = TEXT_KV.match(rest, pos)
            if not kv:
                break
            fields[kv.group(1)] = text_unquote(kv.group(2))
            pos = kv.end()
        if pos == len(rest):
            return m.group(1), m.group(2), rest[:i], fields
    return None


def parse_json_line(line):
    """(time, level, msg, fields) of a JSON log line; raises AssertionError when it is not one."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise AssertionError("not JSON (%s): %r" % (e, line[:300])) from None
    assert isinstance(obj, dict), "not a JSON object: %r" % line[:300]
    for k in ("time", "level", "msg"):
        assert isinstance(obj.get(k), str), "no string %r in %r" % (k, line[:300])
    assert re.fullmatch(LOG_TIME, obj["time"]), "time %r is not ISO-8601: %r" % (obj["time"], line[:300])
    assert obj["level"] in LEVELS, "level %r: %r" % (obj["level"], line[:300])
    fields = {k: v for k, v in obj.items() if k not in ("time", "level", "msg")}
    return obj["time"], obj["level"], obj["msg"], fields


def log_lines(text):
    """The lines of a log, split on newlines only: str.splitlines would also split inside values at U+2028,
    U+0085, \\x1c..., which JSON and penstock's text format both carry raw."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def log_epoch(t):
    """Unix seconds of a log time (UTC with Z, as penstock writes it)."""
    t = t.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(t).timestamp()


def rpc_method(f):
    m = str(f.get("method", ""))
    if m.endswith("dispatch"):
        return "dispatch"
    if m == "health" or m.endswith("Health/Check"):
        return "health"
    return m


def check_rpc_line(f, line):
    """The fields of one access-log line."""
    for k in ("method", "code", "duration_ms", "peer"):
        assert k in f, "access-log line without %s: %r" % (k, line[:300])
    assert rpc_method(f) in ("dispatch", "health"), "method %r: %r" % (f["method"], line[:300])
    assert re.fullmatch(r"[A-Z_]+", str(f["code"])), "code %r is not a gRPC status name: %r" % (f["code"], line)
    d = float(f["duration_ms"])
    assert 0 <= d < 60000, "duration_ms %r: %r" % (f["duration_ms"], line)
    assert "127.0.0.1" in str(f["peer"]), "peer %r: %r" % (f["peer"], line)
    if rpc_method(f) == "dispatch" and f["code"] == "OK":
        assert "events" in f and int(f["events"]) >= 0, "dispatch line without events: %r" % line[:300]


def rpc_counts_from_metrics(m):
    out = {}
    for labels, v in m.series("penstock_rpcs_total"):
        if v:
            out[(labels.get("method"), labels.get("code"))] = int(v)
    return out


def rpc_counts_from_log(entries):
    out = {}
    for _, _, _, f in entries:
        k = (rpc_method(f), str(f.get("code")))
        out[k] = out.get(k, 0) + 1
    return out


# ------------------------------------------------------------------ fixtures

def consumer_connections(env):
    """Consumer threads (one broker connection each) the built-in topology runs with env: the sum of the
    counts `penstock check-config` resolves."""
    import yaml
    full = {k: v for k, v in os.environ.items() if k not in pstest.PENSTOCK_VARS}
    full.update({k: str(v) for k, v in env.items()})
    out = subprocess.run([pstest.PENSTOCK_BIN, "check-config"], env=full, capture_output=True, text=True,
                         check=True).stdout
    return sum(c["count"] for c in yaml.safe_load(out)["consumers"])


MON_CONSUMER_CONNS = consumer_connections({"CONSUMERS_PER_QUEUE": MON_CONSUMERS})


@pytest.fixture(scope="module")
def version():
    return binary_version()


@pytest.fixture(scope="module")
def mon(logdir, db):
    p = pstest.Penstock(logdir, db=db, name="mon", env={
        "GRPC_MAX_RECV_BYTES": MAX_RECV, "EVENT_BUFFERED_CHANNEL_SIZE": MON_QUEUE,
        "EVENT_WORKER_POOL_SIZE": MON_WORKERS, "CONSUMERS_PER_QUEUE": MON_CONSUMERS,
        "CLICKHOUSE_FLUSH_MS": 200, "ACCESS_LOG_PER_SEC": 100000,
    })
    p.start()
    try:
        wait_http(p)
        yield p
        if p.running():
            p.stop()
    finally:
        p.kill()


@pytest.fixture
def show_log(request, mon):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("\n---- %s stderr (tail) ----\n%s" % (mon.name, mon.stderr_tail(40)))


# ------------------------------------------------------------ the endpoints

def listening_addresses(port):
    """Local addresses with a TCP socket in LISTEN on port, from /proc/net/tcp and tcp6 (hex, as the kernel
    writes them: 00000000 is 0.0.0.0, 32 zeros is ::)."""
    out = set()
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/net/" + name) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    addr, _, hexport = cols[1].rpartition(":")
                    if cols[3] == "0A" and int(hexport, 16) == port:
                        out.add(addr)
        except FileNotFoundError:
            pass
    return out


def test_health(mon, version, show_log):
    r = mon.http("/health")
    assert r.status == 200, r
    assert r.content_type.split(";")[0].strip() == "application/json", r.content_type
    assert r.json() == {"status": "ok", "version": version}, r.json()
    # On all interfaces, as the gRPC port.
    addrs = listening_addresses(mon.http_port)
    assert addrs & {"00000000", "0" * 32}, "GIN_PORT %d listens on %s, not on all interfaces" % (
        mon.http_port, addrs)


def test_ready_when_everything_is_up(mon, show_log):
    _, checks = wait_ready(mon, True, 10, "/ready 200 with RabbitMQ and ClickHouse up")
    assert all(c["ok"] for c in checks.values()), checks
    r = mon.http("/ready")
    assert r.content_type.split(";")[0].strip() == "application/json", r.content_type


def test_metrics_exposition(mon, version, show_log):
    r = mon.http("/metrics")
    assert r.status == 200, r
    ct = [x.strip() for x in r.content_type.split(";")]
    assert ct[0] == "text/plain" and "version=0.0.4" in ct, "Content-Type %r" % r.content_type
    m = pstest.parse_metrics(r.text)  # validates the format, TYPE order and histograms

    missing = [n for n in ALWAYS if n not in m.families()]
    assert not missing, "families missing from /metrics: %s" % missing
    wrong = {n: m.types[n] for n, t in ALWAYS.items() if m.types.get(n) != t}
    assert not wrong, "families of the wrong type: %s (want %s)" % (wrong, {n: ALWAYS[n] for n in wrong})
    for fam, (t, labels) in LABELLED.items():
        if fam in m.types:
            assert m.types[fam] == t, "%s is a %s, want %s" % (fam, m.types[fam], t)

    bi = m.series("penstock_build_info")
    assert len(bi) == 1 and bi[0][1] == 1 and bi[0][0].get("version") == version, \
        "penstock_build_info %s, want version=%s value 1" % (bi, version)
    assert m.value("penstock_queue_capacity") == MON_QUEUE
    assert 0 <= m.value("penstock_queue_depth") <= MON_QUEUE
    assert m.value("penstock_dispatch_parked_calls") == 0
    assert m.value("penstock_draining") == 0

    # The probe thread reports both dependencies up, and the consumers connect at start.
    def settled():
        mm = mon.metrics()
        got = (mm.value("penstock_dependency_up", dependency="rabbitmq"),
               mm.value("penstock_dependency_up", dependency="clickhouse", connection="default"), mm.value("penstock_ready"),
               mm.value("penstock_broker_connections", role="consumer"))
        return mm if got == (1, 1, 1, MON_CONSUMER_CONNS) else None
    mm = pstest.poll(settled, 10, what="dependency_up 1 for both, ready 1, broker_connections{role=consumer} = %d"
                     % MON_CONSUMER_CONNS)
    assert 0 <= mm.value("penstock_broker_connections", role="publisher") <= MON_WORKERS

    # process_* against /proc.
    pid = mon.proc.pid
    start, cpu, rss, vsize = proc_stat(pid)
    assert abs(m.value("process_start_time_seconds") - start) < 1.5, \
        "process_start_time_seconds %r, /proc says %r" % (m.value("process_start_time_seconds"), start)
    assert 0 <= m.value("process_cpu_seconds_total") <= cpu + 0.5, (m.value("process_cpu_seconds_total"), cpu)
    assert rss / 3 <= m.value("process_resident_memory_bytes") <= rss * 3, \
        "process_resident_memory_bytes %r, /proc says %r" % (m.value("process_resident_memory_bytes"), rss)
    assert vsize / 3 <= m.value("process_virtual_memory_bytes") <= vsize * 3, \
        "process_virtual_memory_bytes %r, /proc says %r" % (m.value("process_virtual_memory_bytes"), vsize)
    threads = len(os.listdir("/proc/%d/task" % pid))
    assert abs(m.value("process_threads") - threads) <= 3, (m.value("process_threads"), threads)
    fds = len(os.listdir("/proc/%d/fd" % pid))
    assert abs(m.value("process_open_fds") - fds) <= 10, (m.value("process_open_fds"), fds)


def norm_setting(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    if v is None:
        return ""
    s = str(v)
    return {"true": "1", "false": "0"}.get(s.lower(), s)


def test_debug_config_matches_penstock_config(mon, show_log):
    r = mon.http("/debug/config")
    assert r.status == 200, r
    assert r.content_type.split(";")[0].strip() == "application/json", r.content_type
    got = r.json()
    assert isinstance(got, dict), got
    out = subprocess.run([pstest.PENSTOCK_BIN, "config"], env=mon.env, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    want = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert {"GIN_PORT", "DEBUG", "ACCESS_LOG_PER_SEC"} <= set(want), "penstock config lacks the new settings"
    assert set(got) == set(want), "settings only in /debug/config: %s; only in `penstock config`: %s" % (
        sorted(set(got) - set(want)), sorted(set(want) - set(got)))
    diff = {k: (got[k], want[k]) for k in want if norm_setting(got[k]) != norm_setting(want[k])}
    assert not diff, "/debug/config differs from `penstock config` (json, config): %s" % diff
    assert norm_setting(got["GIN_PORT"]) == str(mon.http_port)
    assert norm_setting(got["EVENT_BUFFERED_CHANNEL_SIZE"]) == str(MON_QUEUE)


def proc_thread_names(pid):
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                out[int(tid)] = f.read().strip()
        except OSError:
            pass
    return out


def check_threads_body(body, pid, want_names):
    assert isinstance(body, dict) and isinstance(body.get("threads"), list), body
    tids = set(int(t) for t in os.listdir("/proc/%d/task" % pid))
    names = set()
    for t in body["threads"]:
        assert isinstance(t.get("tid"), int) and isinstance(t.get("name"), str), t
        assert isinstance(t.get("cpu_seconds"), (int, float)) and t["cpu_seconds"] >= 0, t
        assert t["tid"] in tids, "thread %s is not a thread of pid %d (%s)" % (t, pid, sorted(tids))
        names.add(t["name"])
    assert set(want_names) <= names, "thread names %s lack %s; threads in /proc now: %s" % (
        sorted(names), sorted(set(want_names) - names), proc_thread_names(pid))
    q = body.get("queue")
    assert isinstance(q, dict) and all(isinstance(q.get(k), int) for k in ("depth", "capacity", "parked")), q
    return q


def test_debug_threads_outside_production(mon, show_log):
    # ENV is DEVELOPMENT and DEBUG unset: the profiling endpoint is on.
    r = mon.http("/debug/threads")
    assert r.status == 200, r
    assert r.content_type.split(";")[0].strip() == "application/json", r.content_type
    q = check_threads_body(r.json(), mon.proc.pid, ["ps-grpc-0", "ps-worker-0", "ps-consumer-0"])
    assert q["capacity"] == MON_QUEUE and 0 <= q["depth"] <= MON_QUEUE and q["parked"] >= 0, q


def test_unknown_path_and_method(mon, show_log):
    for path in ("/nope", "/healthz", "/metrics/x", "/debug", "/debug/nope"):
        r = mon.http(path)
        assert r.status == 404, "GET %s: %s" % (path, r)
        assert r.content_type.split(";")[0].strip() == "application/json", "GET %s: %s" % (path, r.content_type)
        assert r.json() == {"error": "not found"}, "GET %s: %s" % (path, r.body)
    for method, path in (("POST", "/metrics"), ("POST", "/health"), ("DELETE", "/ready"), ("PUT", "/debug/config")):
        r = mon.http(path, method=method, body=b"x" if method in ("POST", "PUT") else None)
        assert r.status == 405, "%s %s: %s" % (method, path, r)
        assert "GET" in r.headers.get("Allow", ""), "%s %s: 405 without Allow: GET (RFC 9110 15.5.6): %s" % (
            method, path, dict(r.headers))
    # Still serving after all that.
    assert mon.http("/health").status == 200


# ---------------------------------------------------- metrics as events flow

def test_metrics_move_as_events_flow(mon, db, clickhouse, show_log):
    runid = pstest.new_id("mx")
    f = pstest.EventFactory(runid, seed=7)
    types = f.types
    typed = [b for b, _ in f.mixed_batches(5, 10)]                 # every type 5 times, 10 per batch
    nopay = batch_of(f, types[:3], "np")                            # 3 typed + 2 without payload
    nopay.events.add(id="%s-np1" % runid, timestamp="1700000000")
    nopay.events.add(id='%s-np2 "q" \\ \n\t\x01 é😀' % runid, timestamp="1700000000")  # a hard id for the log
    unknown = batch_of(f, types[:1], "unk")                        # 1 typed + 1 of an unknown type
    unknown_raw = raw_with_unknown_event(unknown, "%s-unk1" % runid)
    invalid = batch_of(f, types[1:2], "inv")                       # no header: INVALID_ARGUMENT
    invalid.ClearField("header")
    oversize = batch_of(f, types[:1], "big")
    oversize.events.add(id="%s-big" % runid, timestamp="1").clickEvent.page = "x" * (MAX_RECV + 1000)

    ok_calls = len(typed) + 2
    typed_ids = [e.id for b in typed + [nopay, unknown] for e in b.events if pstest.payload_of(e)[0]]
    n_typed = len(typed_ids)
    assert n_typed == 5 * len(types) + 3 + 1
    messages = sum(len(distinct_types(b)) for b in typed + [nopay, unknown])

    before = mon.metrics()
    for b in typed + [nopay]:
        r = mon.dispatch(b)
        assert r.status == "SUCCESS", r
    assert mon.dispatch_raw(unknown_raw).status == "SUCCESS"
    with pytest.raises(grpc.RpcError) as ei:
        mon.dispatch(invalid)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT, ei.value
    with pytest.raises(grpc.RpcError) as ei:
        mon.dispatch(oversize)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
    for _ in range(3):
        assert mon.health() == pstest.SERVING

    pstest.poll(lambda: clickhouse.count_ids(db, typed_ids)[1] == n_typed, 30, interval=0.1,
                what="%d typed events in ClickHouse" % n_typed)

    def counted():
        m = mon.metrics()
        return m if (metric_delta(before, m, "penstock_rows_inserted_total", queue=pstest.CLICKHOUSE_QUEUE) >= n_typed
                     and metric_delta(before, m, "penstock_messages_consumed_total", queue=pstest.CLICKHOUSE_QUEUE)
                     >= messages
                     and m.value("penstock_queue_depth") == 0) else None
    after = pstest.poll(counted, 10, interval=0.1, what="rows_inserted and messages_consumed to count everything")

    # The consumers of grpc_clickhouse_event_q (bound "#") see every message; the built-in topology's other
    # queues (click_events, app_init_events) see some too, and are not what these counts are about.
    own = {"penstock_messages_consumed_total": {"queue": pstest.CLICKHOUSE_QUEUE},
           "penstock_rows_inserted_total": {"queue": pstest.CLICKHOUSE_QUEUE},
           "penstock_inserts_total": {"queue": pstest.CLICKHOUSE_QUEUE},
           "penstock_insert_rows_sum": {"table": "events"}, "penstock_insert_rows_count": {"table": "events"}}

    def d(name, **labels):
        return metric_delta(before, after, name, **dict(own.get(name, {}), **labels))

    want = {
        ("penstock_events_received_total",): n_typed + 2 + 1 + 1,  # + no payload, unknown type, the invalid call's
        ("penstock_events_accepted_total",): n_typed + 2 + 1,       # every event of a call answered SUCCESS
        ("penstock_events_rejected_total", "invalid"): 1,
        ("penstock_events_rejected_total", "queue_full"): 0,
        ("penstock_events_rejected_total", "deadline"): 0,
        ("penstock_events_rejected_total", "shutdown"): 0,
        ("penstock_events_skipped_total", "no_payload"): 2,
        ("penstock_events_skipped_total", "unknown_type"): 1,
        ("penstock_batches_received_total",): ok_calls + 1,
        ("penstock_batches_accepted_total",): ok_calls,
        ("penstock_messages_published_total",): messages,
        ("penstock_events_published_total",): n_typed,
        ("penstock_publish_errors_total",): 0,
        ("penstock_publish_given_up_events_total",): 0,
        ("penstock_messages_consumed_total",): messages,
        ("penstock_messages_dead_lettered_total",): 0,
        ("penstock_rows_inserted_total",): n_typed,
        ("penstock_rpcs_total", "dispatch", "OK"): ok_calls,
        ("penstock_rpcs_total", "dispatch", "INVALID_ARGUMENT"): 1,
        ("penstock_rpcs_total", "health", "OK"): 3,
        ("penstock_rpc_duration_seconds_count", "dispatch", "OK"): ok_calls,
        ("penstock_rpc_duration_seconds_count", "dispatch", "INVALID_ARGUMENT"): 1,
        ("penstock_rpc_duration_seconds_count", "health", "OK"): 3,
    }
    got = {}
    for key in want:
        name = key[0]
        if name == "penstock_events_rejected_total" or name == "penstock_events_skipped_total":
            got[key] = d(name, reason=key[1])
        elif name.startswith("penstock_rpc"):
            got[key] = d(name, method=key[1], code=key[2])
        else:
            got[key] = d(name)
    wrong = {"%s%s" % (k[0], list(k[1:]) if len(k) > 1 else ""): "got %g, want %g" % (got[k], want[k])
             for k in want if got[k] != want[k]}
    assert not wrong, "metric deltas after %d calls (%d typed events, %d messages):\n  %s" % (
        ok_calls + 2, n_typed, messages, "\n  ".join("%s: %s" % kv for kv in sorted(wrong.items())))

    # Labels as documented, once used.
    for fam in ("penstock_rpcs_total", "penstock_rpc_duration_seconds", "penstock_events_rejected_total",
                "penstock_events_skipped_total", "penstock_messages_consumed_total", "penstock_rows_inserted_total",
                "penstock_inserts_total", "penstock_insert_duration_seconds", "penstock_insert_rows",
                "penstock_broker_connections", "penstock_dependency_up"):
        t, labels = LABELLED[fam]
        assert after.types.get(fam) == t, "%s: type %r, want %s" % (fam, after.types.get(fam), t)
        sample = fam + "_count" if t == "histogram" else fam
        series = after.series(sample)
        assert series, "%s has no series after traffic" % fam
        for l, _ in series:
            want_labels = labels | {"connection"} if l.get("dependency") == "clickhouse" else labels
            assert set(l) == want_labels, "%s%s: labels %s, want %s" % (sample, l, sorted(l), sorted(want_labels))
    assert pstest.CLICKHOUSE_QUEUE in {l["queue"] for l, _ in after.series("penstock_messages_consumed_total")}

    # Inserts: at least one, all ok; the rows histogram adds up to the rows inserted.
    ok_inserts = d("penstock_inserts_total", result="ok")
    assert ok_inserts >= 1 and d("penstock_inserts_total", result="drop") == 0, \
        "inserts ok %g, drop %g" % (ok_inserts, d("penstock_inserts_total", result="drop"))
    assert d("penstock_insert_rows_sum") == n_typed, "insert_rows_sum grew by %g, want %d" % (
        d("penstock_insert_rows_sum"), n_typed)
    assert d("penstock_insert_rows_count") == ok_inserts, (d("penstock_insert_rows_count"), ok_inserts)
    assert d("penstock_insert_duration_seconds_count") >= ok_inserts
    assert 0 < d("penstock_insert_duration_seconds_sum") < 30 * ok_inserts
    dur = d("penstock_rpc_duration_seconds_sum", method="dispatch", code="OK")
    assert 0 < dur < 10 * ok_calls, "rpc_duration_seconds_sum{dispatch,OK} grew by %g" % dur

    # At rest again; a publisher connected to publish.
    assert after.value("penstock_dispatch_parked_calls") == 0
    assert 1 <= after.value("penstock_broker_connections", role="publisher") <= MON_WORKERS
    assert after.value("penstock_broker_connections", role="consumer") == MON_CONSUMER_CONNS

    # Nothing of the invalid, oversize or untyped events landed.
    stray = ["%s-np1" % runid, "%s-unk1" % runid, "%s-big" % runid] + [e.id for e in invalid.events]
    assert clickhouse.count_ids(db, stray) == (0, 0)
    pstest.report("monitoring: %d calls, %d events -> metric deltas as expected (RESOURCE_EXHAUSTED counted "
                  "in penstock_rpcs_total: %g)" % (ok_calls + 2, n_typed + 4,
                                                   d("penstock_rpcs_total", code="RESOURCE_EXHAUSTED")))


def test_oversize_calls_are_refused_by_the_transport(mon, show_log):
    """A request over GRPC_MAX_RECV_BYTES is refused by the gRPC core itself with RESOURCE_EXHAUSTED, before
    penstock's handler exists (docs/operations.md says so): the client sees the status, nothing of it is
    counted as received or logged as an RPC, and the server keeps serving."""
    f = pstest.EventFactory(pstest.new_id("big"))
    big = batch_of(f, f.types[:1], "big")
    big.events[0].id = "x" * (MAX_RECV + 1000)
    before = mon.metrics()
    with pytest.raises(grpc.RpcError) as ei:
        mon.dispatch(big)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
    assert mon.health() == pstest.SERVING
    pstest.poll(lambda: metric_delta(before, mon.metrics(), "penstock_rpcs_total", method="health") >= 1, 5,
                what="the health check after it to be counted")
    after = mon.metrics()
    assert metric_delta(before, after, "penstock_batches_received_total") == 0
    assert metric_delta(before, after, "penstock_rpcs_total", method="dispatch") == 0
    ok = batch_of(f, f.types[:1], "after-big")
    assert mon.dispatch(ok).status == "SUCCESS"


def test_text_log_lines(mon, show_log):
    """LOG_FORMAT=text (the default): every line is `time level msg key=value...`; one access-log line per
    RPC (ACCESS_LOG_PER_SEC is high here), as many per method and code as penstock_rpcs_total counts.
    The server counts and logs a call just after answering it, so a call of the previous test may still be
    on its way: both are read again until they agree (5 s at most), then compared."""
    deadline = time.monotonic() + 5
    while True:
        m = mon.metrics()
        text = mon.stderr_text()
        entries, bad = [], []
        for line in log_lines(text):
            e = parse_text_line(line)
            if e is None:
                bad.append(line)
            else:
                entries.append(e)
        rpc = [e for e in entries if e[2] == "rpc"]
        if rpc_counts_from_log(rpc) == rpc_counts_from_metrics(m) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not bad, "%d stderr lines are not `time level msg key=value...`, first:\n%s" % (
        len(bad), "\n".join(repr(l) for l in bad[:10]))
    for e in rpc:
        check_rpc_line(e[3], "%s %s rpc %s" % (e[0], e[1], e[3]))
    assert rpc_counts_from_log(rpc) == rpc_counts_from_metrics(m), \
        "access-log lines per (method, code) vs penstock_rpcs_total"
    # The event id with quotes, a backslash, a newline, a tab and a control character comes back whole.
    skipped = [e[3].get("event_id", "") for e in entries if e[3].get("event_id", "").endswith("é😀")]
    assert any(i.endswith('-np2 "q" \\ \n\t\x01 é😀') for i in skipped), \
        "the skipped event's id is not logged as sent: %r" % skipped


# ---------------------------------------------------- docs/operations.md

DOC = os.path.join(pstest.ROOT, "docs", "operations.md")
ONCE_USED = re.compile(r"once (first )?used|when first used|after (its )?first use|once (it is |they are )?"
                       r"(first )?(seen|used|observed|set|recorded|incremented)|only (once|after|when)|"
                       r"appears? (only )?(once|after|when)", re.I)


def documented_metrics():
    """{family: 'once used' flag} from the markdown tables of docs/operations.md whose first cell holds a
    metric name in backticks."""
    assert os.path.exists(DOC), "%s does not exist" % DOC
    out = {}
    with open(DOC, encoding="utf-8") as fh:
        for line in fh:
            if not line.lstrip().startswith("|"):
                continue
            cells = line.strip().strip("|").split("|")
            for code in re.findall(r"`([^`]+)`", cells[0]):
                m = re.match(r"(penstock|process)_[a-zA-Z0-9_:]*", code)
                if not m:
                    continue
                name = m.group(0).rstrip("_")
                for suf in ("_bucket", "_sum", "_count"):
                    if name.endswith(suf) and not name.endswith("_total"):
                        name = name[:-len(suf)]
                out[name] = out.get(name, False) or bool(ONCE_USED.search(line))
    assert out, "no metric names in the tables of %s" % DOC
    return out


def test_documented_metrics_are_live(mon, show_log):
    """Every metric docs/operations.md lists is in /metrics (after the traffic of the tests above), except
    labelled series the table marks as appearing once used."""
    docs = documented_metrics()
    m = mon.metrics()
    live = m.families()
    missing = sorted(n for n, once in docs.items() if n not in live and not once)
    assert not missing, "documented in docs/operations.md but not in /metrics: %s" % missing


def test_live_metrics_are_documented(mon, show_log):
    docs = documented_metrics()
    live = {f for f in mon.metrics().families() if f.startswith("penstock_") or f.startswith("process_")}
    undocumented = sorted(live - set(docs))
    assert not undocumented, "in /metrics but not in docs/operations.md's tables: %s" % undocumented


# ----------------------------------------------------------------- JSON logs

def test_json_logs(penstock_proc, db, clickhouse):
    """LOG_FORMAT=json: every stderr line, start to exit, is one JSON object with time, level and msg; the
    access log has its fields; values with quotes, newlines and control characters round-trip."""
    runid = pstest.new_id("jl")
    p = penstock_proc(db=db, env={"LOG_FORMAT": "json", "LOG_LEVEL": "debug", "ACCESS_LOG_PER_SEC": 100000,
                                  "CLICKHOUSE_FLUSH_MS": 200})
    wait_http(p)
    f = pstest.EventFactory(runid)
    good = batch_of(f, f.types[:4], "good")
    weird_session = 'sess "q" \\ \n\t\x01\x1f é 😀 \u2028'
    weird_id = '%s-np {"x":1} \\"\n' % runid
    hdr = pb.Header(sessionId=weird_session, userId=1)
    np_batch = pb.Events(header=hdr)
    np_batch.events.add(id=weird_id, timestamp="1")
    assert p.dispatch(good).status == "SUCCESS"
    assert p.dispatch(np_batch).status == "SUCCESS"
    with pytest.raises(grpc.RpcError) as ei:
        p.dispatch_raw(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert p.health() == pstest.SERVING
    ids = [e.id for e in good.events]
    pstest.poll(lambda: clickhouse.count_ids(db, ids)[1] == len(ids), 30, what="the good batch in ClickHouse")
    m = p.metrics()
    p.stop()

    entries, bad = [], []
    for line in log_lines(p.stderr_text()):
        try:
            entries.append(parse_json_line(line))
        except AssertionError as e:
            bad.append(str(e))
    assert not bad, "%d of %d stderr lines are not JSON log objects, first:\n%s" % (
        len(bad), len(bad) + len(entries), "\n".join(bad[:10]))
    assert len(entries) >= 5, "only %d log lines" % len(entries)
    rpc = [e for e in entries if e[2] == "rpc"]
    for e in rpc:
        check_rpc_line(e[3], json.dumps(e[3]))
    assert rpc_counts_from_log(rpc) == rpc_counts_from_metrics(m), \
        "access-log lines per (method, code) vs penstock_rpcs_total"
    disp_ok = [e[3] for e in rpc if rpc_method(e[3]) == "dispatch" and e[3]["code"] == "OK"]
    assert any(int(x["events"]) == len(good.events) for x in disp_ok), \
        "no dispatch line with events=%d: %s" % (len(good.events), disp_ok)
    assert any(rpc_method(e[3]) == "dispatch" and e[3]["code"] == "INVALID_ARGUMENT" for e in rpc), rpc
    assert any(rpc_method(e[3]) == "health" and e[3]["code"] == "OK" for e in rpc), rpc
    skipped = [e[3] for e in entries if e[3].get("event_id") == weird_id]
    assert skipped, "no log line names the skipped event %r" % weird_id
    assert any(s.get("session_id") == weird_session for s in skipped), skipped


# ------------------------------------------------------- access-log sampling

def test_access_log_sampling(penstock_proc, db):
    """ACCESS_LOG_PER_SEC=5: a burst of 200 health checks writes at most 5 access-log lines per second; the
    calls not logged are counted, and a later line carries suppressed=N. Every RPC is either logged or counted
    in some suppressed=N."""
    per_sec = 5
    p = penstock_proc(db=db, env={"ACCESS_LOG_PER_SEC": per_sec, "CONSUMERS_PER_QUEUE": 0})
    wait_http(p)
    ch = pstest.grpc_channel(p.port)
    check = pstest.health_stub(ch)
    req = pstest.health_pb.HealthCheckRequest()
    try:
        wall0 = time.time()
        for _ in range(200):
            check(req, timeout=5)
        wall1 = time.time()

        def rpc_lines():
            out = []
            for line in log_lines(p.stderr_text()):
                e = parse_text_line(line)
                if e and e[2] == "rpc":
                    out.append(e)
            return out

        burst = [e for e in rpc_lines() if wall0 - 0.002 <= log_epoch(e[0]) <= wall1 + 0.002]
        span = wall1 - wall0
        limit = per_sec * (math.ceil(span) + 1) + 1
        assert len(burst) <= limit, "%d access-log lines in a %.2fs burst of 200 calls with ACCESS_LOG_PER_SEC=%d " \
            "(at most %d)" % (len(burst), span, per_sec, limit)
        assert burst, "no access-log line at all during the burst"

        # One more call now and then, until every call is accounted for: logged, or in a suppressed=N.
        state = {}

        def accounted():
            check(req, timeout=5)
            lines = rpc_lines()
            sup = sum(int(e[3].get("suppressed", 0)) for e in lines)
            total = p.metrics().total("penstock_rpcs_total")
            state.update(lines=len(lines), suppressed=sup, rpcs=total)
            return sup > 0 and len(lines) + sup == total
        pstest.poll(accounted, 8, interval=0.3, what="a line with suppressed=N accounting for every call "
                    "(lines + suppressed = penstock_rpcs_total; last: %s)" % state)
        m = p.metrics()
        assert m.value("penstock_log_suppressed_total") >= state["suppressed"], \
            "penstock_log_suppressed_total %r < %d suppressed" % (m.value("penstock_log_suppressed_total"),
                                                                   state["suppressed"])
        pstest.report("access log: 200 calls in %.2fs -> %d lines; later lines carried suppressed=%d"
                      % (span, len(burst), state["suppressed"]))
    finally:
        ch.close()
    p.stop()


# --------------------------------------------------- redaction and gating

def test_debug_config_redacts_secrets_and_threads_off_in_production(penstock_proc, db):
    with tempfile.TemporaryDirectory(prefix="pstest-prod-") as cwd:
        p = penstock_proc(db=db, cwd=cwd, env={"ENV": "PRODUCTION", "DEBUG": None, "CLICKHOUSE_PASSWORD": SECRET,
                                               "CONSUMERS_PER_QUEUE": 0})
        wait_http(p)
        r = p.http("/debug/config")
        assert r.status == 200, r
        cfg = r.json()
        assert cfg.get("CLICKHOUSE_PASSWORD") == "<redacted>", cfg.get("CLICKHOUSE_PASSWORD")
        u = urllib.parse.urlparse(pstest.RABBITMQ_URL)
        want_url = "amqp://%s:<redacted>@%s:%d%s" % (u.username, u.hostname, u.port, u.path or "/")
        assert cfg.get("RABBITMQ_URL") == want_url, "RABBITMQ_URL %r, want %r" % (cfg.get("RABBITMQ_URL"), want_url)
        assert norm_setting(cfg.get("ENV")) == "PRODUCTION"
        t = p.http("/debug/threads")
        assert t.status == 404, "/debug/threads with ENV=PRODUCTION and no DEBUG: %s" % t
        # Let the probe thread try ClickHouse with the password, then look everywhere it could leak.
        pstest.poll(lambda: get_ready(p)[0] is not None, 5, what="/ready to answer")
        bodies = {path: p.http(path).text for path in ("/debug/config", "/ready", "/metrics", "/health")}
        p.stop()
        bodies["stderr"] = p.stderr_text()
        bodies["stdout"] = p.stdout_text()
        leaks = [k for k, v in bodies.items() if SECRET in v]
        assert not leaks, "CLICKHOUSE_PASSWORD appears in %s" % leaks


def test_debug_threads_with_debug_in_production(penstock_proc, db):
    with tempfile.TemporaryDirectory(prefix="pstest-prod-") as cwd:
        p = penstock_proc(db=db, cwd=cwd, env={"ENV": "PRODUCTION", "DEBUG": 1, "CONSUMERS_PER_QUEUE": 1})
        wait_http(p)
        r = p.http("/debug/threads")
        assert r.status == 200, r
        q = check_threads_body(r.json(), p.proc.pid, ["ps-grpc-0", "ps-worker-0", "ps-consumer-0"])
        assert q["capacity"] == 10000, q
        p.stop()


# ----------------------------------------------------------------- fail points

def test_failpoint_dispatch_internal(penstock_proc, db):
    """PENSTOCK_FAILPOINTS=dispatch.internal: every dispatch fails inside its handler; the call answers
    INTERNAL with a message and is counted, and health, /health and /metrics keep working."""
    p = penstock_proc(db=db, env={"PENSTOCK_FAILPOINTS": "dispatch.internal", "CONSUMERS_PER_QUEUE": 0})
    wait_http(p)
    f = pstest.EventFactory(pstest.new_id("fp"))
    before = p.metrics()
    for i in range(3):
        with pytest.raises(grpc.RpcError) as ei:
            p.dispatch(batch_of(f, f.types[:2], "fp%d" % i))
        assert ei.value.code() == grpc.StatusCode.INTERNAL, "call %d: %s %s" % (i, ei.value.code(), ei.value.details())
        assert ei.value.details(), "INTERNAL without a message"
    assert p.health() == pstest.SERVING
    assert p.http("/health").status == 200
    after = p.metrics()
    assert metric_delta(before, after, "penstock_rpcs_total", method="dispatch", code="INTERNAL") == 3
    assert metric_delta(before, after, "penstock_rpcs_total", method="dispatch", code="OK") == 0
    assert metric_delta(before, after, "penstock_events_accepted_total") == 0
    assert metric_delta(before, after, "penstock_rpcs_total", method="health", code="OK") >= 1
    assert p.running()
    p.stop()


def test_failpoint_dispatch_internal_first_n(penstock_proc, db, clickhouse):
    """dispatch.internal:3 fails the first 3 calls only; the 4th works in the same process and its events land;
    the failed calls' events never do."""
    runid = pstest.new_id("fpn")
    p = penstock_proc(db=db, env={"PENSTOCK_FAILPOINTS": "dispatch.internal:3", "CLICKHOUSE_FLUSH_MS": 200})
    wait_http(p)
    f = pstest.EventFactory(runid)
    batches = [batch_of(f, f.types[:2], "c%d" % i) for i in range(5)]
    codes = []
    for b in batches:
        try:
            codes.append(("OK", p.dispatch(b).status))
        except grpc.RpcError as e:
            codes.append((e.code().name, e.details()))
    assert [c for c, _ in codes] == ["INTERNAL"] * 3 + ["OK"] * 2, codes
    ok_ids = [e.id for b in batches[3:] for e in b.events]
    failed_ids = [e.id for b in batches[:3] for e in b.events]
    pstest.poll(lambda: clickhouse.count_ids(db, ok_ids)[1] == len(ok_ids), 30, what="the events of calls 4 and 5")
    assert clickhouse.count_ids(db, failed_ids) == (0, 0), "events of calls answered INTERNAL landed"
    m = p.metrics()
    assert m.value("penstock_rpcs_total", method="dispatch", code="INTERNAL") == 3
    assert m.value("penstock_rpcs_total", method="dispatch", code="OK") == 2
    p.stop()


# --------------------------------------------------------------- sd_notify

class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notify socket; records (monotonic time, line)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pstest-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.msgs = []
        self.on_ready = None
        self.ready_port_open = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.monotonic()
            for line in data.decode("utf-8", "replace").split("\n"):
                if line == "READY=1" and self.on_ready and self.ready_port_open is None:
                    self.ready_port_open = self.on_ready()
                if line:
                    self.msgs.append((t, line))

    def times(self, line):
        return [t for t, l in list(self.msgs) if l == line]

    def close(self):
        self._stop.set()
        self._t.join()
        self.sock.close()
        shutil.rmtree(self.dir, True)


def test_sd_notify_ready_watchdog_stopping(penstock_proc, db):
    ns = NotifySocket()
    try:
        p = penstock_proc(db=db, start=False, env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": 200000,
                                                   "CONSUMERS_PER_QUEUE": 0})
        ns.on_ready = lambda: pstest.port_open(p.port)
        p.start(wait=False)
        pstest.poll(lambda: ns.times("READY=1"), 30, interval=0.05, what="READY=1 on NOTIFY_SOCKET")
        t_ready = ns.times("READY=1")[0]
        assert ns.ready_port_open, "READY=1 came before the gRPC port %d was listening" % p.port
        p.wait_serving(10)

        def pings():
            return [t for t in ns.times("WATCHDOG=1") if t_ready <= t <= t_ready + 1.0]
        # Measured over the first second after READY=1.
        pstest.poll(lambda: time.monotonic() > t_ready + 1.05, 3, interval=0.05, what="a second to pass")
        w = pings()
        assert len(w) >= 3, "%d WATCHDOG=1 in the second after READY=1 with WATCHDOG_USEC=200000 (want >= 3): %s" % (
            len(w), ns.msgs[:20])
        gaps = [b - a for a, b in zip([t_ready] + w, w)]
        assert max(gaps) < 0.25, "a gap of %.3fs between watchdog pings (WATCHDOG_USEC=200000)" % max(gaps)

        p.signal(signal.SIGTERM)
        rc = p.wait_exit(p.shutdown_ms / 1000.0 + pstest.STOP_SLACK_S)
        assert rc == 0, "exit %s after SIGTERM:\n%s" % (rc, p.stderr_tail())
        p.check_sanitizers()
        pstest.poll(lambda: ns.times("STOPPING=1"), 1, interval=0.05, what="STOPPING=1 on NOTIFY_SOCKET")
        assert ns.times("STOPPING=1")[0] > t_ready
        assert len(ns.times("READY=1")) == 1, "READY=1 sent %d times" % len(ns.times("READY=1"))
        pstest.report("sd_notify: READY=1, %d WATCHDOG=1 in the first second (largest gap %.0f ms), STOPPING=1"
                      % (len(w), max(gaps) * 1000))
    finally:
        ns.close()


def test_watchdog_is_for_its_own_pid_only(penstock_proc, db):
    """WATCHDOG_PID naming another process: the watchdog is not penstock's; READY=1 but no WATCHDOG=1."""
    ns = NotifySocket()
    try:
        p = penstock_proc(db=db, start=False, env={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": 200000,
                                                   "WATCHDOG_PID": 1, "CONSUMERS_PER_QUEUE": 0})
        p.start(wait=False)
        pstest.poll(lambda: ns.times("READY=1"), 30, interval=0.05, what="READY=1 on NOTIFY_SOCKET")
        t_ready = ns.times("READY=1")[0]
        pstest.poll(lambda: time.monotonic() > t_ready + 0.6, 3, interval=0.05, what="0.6 s to pass")
        assert not ns.times("WATCHDOG=1"), "WATCHDOG=1 sent although WATCHDOG_PID=1"
        p.stop()
    finally:
        ns.close()


# ---------------------------------------------------- queue full, draining

def test_ready_reports_full_queue_then_draining(penstock_proc, db):
    """With RabbitMQ unreachable and a queue of 1 batch: /ready names rabbitmq and then queue as not ok, the
    call that finds the queue full is counted as rejected{queue_full}; after SIGTERM and until exit, /ready is
    503 with draining not ok (or nothing listens any more)."""
    p = penstock_proc(db=db, env={
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:%d/" % pstest.free_port(), "EVENT_BUFFERED_CHANNEL_SIZE": 1,
        "EVENT_WORKER_POOL_SIZE": 1, "DISPATCH_TIMEOUT_MS": 200, "CONSUMERS_PER_QUEUE": 0,
        "SHUTDOWN_TIMEOUT_MS": 3000, "SPOOL_MAX_BYTES": 0, "ACK_MODE": "enqueued"})
    wait_http(p)
    _, checks = wait_ready(p, False, 6, "/ready 503 naming rabbitmq", cond=lambda c: not c["rabbitmq"]["ok"])
    assert checks["queue"]["ok"] and checks["draining"]["ok"], checks
    # An ingest-only instance (no consumer runs) does not depend on ClickHouse.
    assert not any(c.startswith("clickhouse") for c in checks), checks
    m = p.metrics()
    assert m.value("penstock_dependency_up", dependency="rabbitmq") == 0
    assert not m.series("penstock_dependency_up", dependency="clickhouse")
    assert m.value("penstock_ready") == 0

    f = pstest.EventFactory(pstest.new_id("full"))
    before = p.metrics()
    results = []
    for i in range(10):
        try:
            results.append(p.dispatch(batch_of(f, f.types[:1], "q%d" % i), timeout=5).status)
        except grpc.RpcError as e:
            results.append(e.code().name)
            break
    assert results[-1] == "UNAVAILABLE" and results[:-1] and set(results[:-1]) == {"SUCCESS"}, results
    _, checks = wait_ready(p, False, 3, "/ready naming the full queue", cond=lambda c: not c["queue"]["ok"])
    r = p.http("/ready")
    assert r.status == 503 and r.content_type.split(";")[0].strip() == "application/json", r
    # The server counts an RPC when its call completes there, which may be just after the client has its answer.
    after = pstest.poll(lambda: (lambda m: m if metric_delta(before, m, "penstock_rpcs_total", method="dispatch",
                                                             code="UNAVAILABLE") >= 1 else None)(p.metrics()),
                        5, what="the refused call counted in penstock_rpcs_total")
    assert after.value("penstock_queue_depth") == after.value("penstock_queue_capacity") == 1
    assert metric_delta(before, after, "penstock_events_rejected_total", reason="queue_full") == 1
    assert metric_delta(before, after, "penstock_rpcs_total", method="dispatch", code="UNAVAILABLE") == 1
    assert after.value("penstock_dispatch_parked_calls") == 0
    assert checks["draining"]["ok"], checks

    # Draining: a poller on /ready as fast as it goes, from before SIGTERM until the process is gone.
    seen = []  # (monotonic start of the request, its end, status or None, body)
    stop = threading.Event()

    def poller():
        while not stop.is_set():
            t = time.monotonic()
            try:
                r = pstest.http_request(p.http_port, "/ready", timeout=1)
                seen.append((t, time.monotonic(), r.status, r.body))
            except HTTP_ERRORS as e:
                seen.append((t, time.monotonic(), None, repr(e)))
            time.sleep(0.002)
    th = threading.Thread(target=poller)
    th.start()
    try:
        pstest.poll(lambda: len(seen) >= 3, 5, interval=0.01, what="the poller to get going")
        t_term = time.monotonic()
        p.signal(signal.SIGTERM)
        draining_metrics = None
        while p.running() and time.monotonic() < t_term + 2.5 and draining_metrics is None:
            try:
                mm = p.metrics(timeout=1)
                if mm.value("penstock_draining") == 1:
                    draining_metrics = mm
            except (AssertionError,) + HTTP_ERRORS:
                pass
            time.sleep(0.02)
        rc = p.wait_exit(p.shutdown_ms / 1000.0 + pstest.STOP_SLACK_S)
    finally:
        stop.set()
        th.join()
    assert rc is not None, "penstock did not exit within SHUTDOWN_TIMEOUT_MS=3000 of SIGTERM"
    p.check_sanitizers()
    # A request begun 50 ms after the signal must see it; one answered before the signal must not.
    after_term = [(t - t_term, s, b) for t, _, s, b in seen if t >= t_term + 0.05]
    answered = [(dt, s, b) for dt, s, b in after_term if s is not None]
    problems = []
    for dt, s, b in answered:
        try:
            body = json.loads(b)
            ok = s == 503 and body.get("ready") is False and body["checks"]["draining"]["ok"] is False \
                and body["checks"]["draining"].get("error")
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            problems.append((round(dt, 3), s, b[:200]))
    assert not problems, "/ready after SIGTERM not 503 with draining not ok: %s" % problems[:5]
    before_term = [(s, b) for _, end, s, b in seen if end < t_term and s is not None]
    assert before_term and all(s == 503 and json.loads(b)["checks"]["draining"]["ok"] for s, b in before_term), \
        "/ready before SIGTERM: %s" % before_term[:3]
    if draining_metrics is not None:
        assert draining_metrics.value("penstock_ready") == 0
    pstest.report("draining: %d /ready answers after SIGTERM (all 503 draining), %d refused; exit %s in %.2fs; "
                  "penstock_draining 1 seen: %s" % (len(answered), len(after_term) - len(answered), rc,
                                                    time.monotonic() - t_term, draining_metrics is not None))


# ------------------------------------------- readiness follows the servers

def send_batch(p, tag, n=6):
    """Sends one batch of n typed events (SUCCESS expected); returns their ids."""
    f = pstest.EventFactory(pstest.new_id(tag))
    b = batch_of(f, [f.types[i % len(f.types)] for i in range(n)], tag)
    assert p.dispatch(b).status == "SUCCESS"
    return [e.id for e in b.events]


def test_ready_follows_rabbitmq(mon, db, clickhouse, show_log):
    wait_ready(mon, True, 10, "/ready 200 before stopping RabbitMQ")
    before = mon.metrics()
    stopped = False
    try:
        servers_cmd("stop-rabbitmq")
        stopped = True
        assert not pstest.port_open(urllib.parse.urlparse(pstest.RABBITMQ_URL).port), "RabbitMQ still up"
        took_down, checks = wait_ready(mon, False, 6, "/ready 503 with rabbitmq not ok after stop-rabbitmq",
                                       cond=lambda c: not c["rabbitmq"]["ok"])
        assert checks["clickhouse"]["ok"] and checks["draining"]["ok"], checks
        m = mon.metrics()
        assert m.value("penstock_dependency_up", dependency="rabbitmq") == 0
        assert m.value("penstock_dependency_up", dependency="clickhouse", connection="default") == 1
        assert m.value("penstock_ready") == 0
    finally:
        if stopped or not pstest.port_open(urllib.parse.urlparse(pstest.RABBITMQ_URL).port):
            servers_cmd("start-rabbitmq")
    took_up, _ = wait_ready(mon, True, 20, "/ready 200 after start-rabbitmq")
    ids = send_batch(mon, "rmq")
    pstest.poll(lambda: clickhouse.count_ids(db, ids)[1] == len(ids), 30, interval=0.2,
                what="events sent after RabbitMQ returned to land")
    after = pstest.poll(lambda: (lambda m: m if m.value("penstock_broker_connections", role="consumer")
                                 == MON_CONSUMER_CONNS else None)(mon.metrics()), 10,
                        what="the consumers to be connected again")
    assert after.value("penstock_dependency_up", dependency="rabbitmq") == 1
    for role in ("publisher", "consumer"):
        assert metric_delta(before, after, "penstock_broker_reconnects_total", role=role) >= 1, \
            "penstock_broker_reconnects_total{role=%s} did not grow" % role
    pstest.report("readiness: /ready 503 %.1fs after RabbitMQ stopped, 200 %.1fs after it started; events land"
                  % (took_down, took_up))


def test_ready_follows_clickhouse(mon, db, clickhouse, show_log):
    wait_ready(mon, True, 20, "/ready 200 before stopping ClickHouse")
    before = mon.metrics()
    stopped = False
    ids = []
    try:
        servers_cmd("stop-clickhouse")
        stopped = True
        took_down, checks = wait_ready(mon, False, 6, "/ready 503 with clickhouse not ok after stop-clickhouse",
                                       cond=lambda c: not c["clickhouse"]["ok"])
        assert checks["rabbitmq"]["ok"] and checks["draining"]["ok"], checks
        m = mon.metrics()
        assert m.value("penstock_dependency_up", dependency="clickhouse", connection="default") == 0
        assert m.value("penstock_dependency_up", dependency="rabbitmq") == 1
        assert m.value("penstock_ready") == 0
        # Events sent now are accepted and published; their insert fails and is retried.
        ids = send_batch(mon, "chd")
        pstest.poll(lambda: metric_delta(before, mon.metrics(), "penstock_inserts_total", result="retry") >= 1, 10,
                    what="an insert counted as result=retry while ClickHouse is down")
    finally:
        if stopped or not pstest.port_open(urllib.parse.urlparse(pstest.CLICKHOUSE_URL).port):
            servers_cmd("start-clickhouse")
    took_up, _ = wait_ready(mon, True, 20, "/ready 200 after start-clickhouse")
    pstest.poll(lambda: clickhouse.count_ids(db, ids)[1] == len(ids), 30, interval=0.2,
                what="events sent while ClickHouse was down to land")
    after = mon.metrics()
    assert after.value("penstock_dependency_up", dependency="clickhouse", connection="default") == 1
    assert metric_delta(before, after, "penstock_inserts_total", result="drop") == 0
    pstest.report("readiness: /ready 503 %.1fs after ClickHouse stopped, 200 %.1fs after it started; events "
                  "sent meanwhile land" % (took_down, took_up))


# ------------------------------------------------------------ new settings

INVALID = [("GIN_PORT", "abc"), ("GIN_PORT", "70000"), ("ACCESS_LOG_PER_SEC", "abc"), ("ACCESS_LOG_PER_SEC", "-1"),
           ("DEBUG", "maybe")]


@pytest.mark.parametrize("name,value", INVALID, ids=["%s=%s" % nv for nv in INVALID])
def test_invalid_new_setting_stops_startup(penstock_proc, name, value):
    p = penstock_proc(env={name: value}, wait=False)
    rc = p.wait_exit(10)
    assert rc == 2, "exit %s with %s=%s (want 2, a configuration error)" % (rc, name, value)
    assert name in p.stderr_text(), "stderr does not name %s:\n%s" % (name, p.stderr_tail())


def test_new_settings_defaults():
    env = {k: v for k, v in os.environ.items() if k not in pstest.PENSTOCK_VARS}
    with tempfile.TemporaryDirectory() as cwd:
        r = subprocess.run([pstest.PENSTOCK_BIN, "config"], env=env, cwd=cwd, capture_output=True, text=True,
                           timeout=10)
    assert r.returncode == 0, r.stderr
    cfg = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert (cfg.get("GIN_PORT"), norm_setting(cfg.get("DEBUG")), cfg.get("ACCESS_LOG_PER_SEC")) == \
        ("8080", "0", "10"), cfg
