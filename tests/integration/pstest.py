"""Shared harness of penstock's integration tests.

Everything here talks to real processes: a penstock binary started per test
module (or per test), and the RabbitMQ and ClickHouse that tests/run-integration
started on loopback. Nothing is mocked.

- The Python protobuf modules are generated at import time with protoc into a
  temporary directory (never committed): `pb` (proto/eventservice.proto) and
  `health_pb` (grpc/health/v1/health.proto from Debian's grpc-proto).
- `Penstock` starts `penstock serve` with a given environment, waits for the
  gRPC health check to answer SERVING, captures stdout/stderr to files and stops
  it with SIGTERM, expecting exit 0 within SHUTDOWN_TIMEOUT_MS.
- `ClickHouse` is a small client for the HTTP interface; `TestQueue` is a pika
  queue bound to the event exchange that records what penstock publishes.
- `EventFactory` builds random but realistic batches for every event type of
  the proto, found through the descriptor, so a new type is covered without a
  test edit.

Settings (environment, set by tests/run-integration):
  PENSTOCK_BIN            the binary under test   (build/penstock)
  PS_TEST_RABBITMQ_URL    amqp://guest:guest@127.0.0.1:6672/
  PS_TEST_CLICKHOUSE_URL  http://127.0.0.1:18123
"""

import atexit
import datetime
import importlib.util
import json
import math
import os
import pty
import random
import re
import shutil
import signal
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import grpc
import pika
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import json_format

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PENSTOCK_BIN = os.path.abspath(os.environ.get("PENSTOCK_BIN", os.path.join(ROOT, "build", "penstock")))
RABBITMQ_URL = os.environ.get("PS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:6672/")
CLICKHOUSE_URL = os.environ.get("PS_TEST_CLICKHOUSE_URL", "http://127.0.0.1:18123").rstrip("/")
HEALTH_PROTO_DIR = "/usr/share/grpc-proto"
EVENT_EXCHANGE = "grpc_event.tx"
CLICKHOUSE_QUEUE = "grpc_clickhouse_event_q"
DISPATCH_METHOD = "/event.EventService/dispatch"
HEALTH_METHOD = "/grpc.health.v1.Health/Check"

# Every variable penstock reads: none of them leaks from the caller's
# environment into a penstock under test unless a test sets it. The settings
# table of the README (generated from penstock's own list, and checked by
# scripts/config-doc --check) names all but those of the failpoints and of the
# built-in topology's WebEngage consumers, added here.
def _readme_settings():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    table = text[text.index("<!-- BEGIN CONFIG -->"):text.index("<!-- END CONFIG -->")]
    return re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", table, re.M)


PENSTOCK_VARS = tuple(sorted(set(_readme_settings()) |
                             {"PENSTOCK_FAILPOINTS", "WEBENGAGE_ENABLED", "WEBENGAGE_URL", "WEBENGAGE_API_KEY"}))
# Set by a service manager: a test shell running under systemd must not hand them to a penstock under test.
SYSTEMD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
DEFAULT_SHUTDOWN_MS = 20000
# How long past SHUTDOWN_TIMEOUT_MS a process may take to be gone (exit itself, not more draining).
STOP_SLACK_S = 1.0

# Lines that tests want in the final summary (throughput, timings): printed by
# conftest's pytest_terminal_summary.
REPORT_LINES = []


def report(line):
    REPORT_LINES.append(line)
    print(line, flush=True)


# ------------------------------------------------------------------ protos

def _generate_protos():
    out = tempfile.mkdtemp(prefix="pstest-proto-")
    atexit.register(shutil.rmtree, out, True)
    for include, proto in ((os.path.join(ROOT, "proto"), "eventservice.proto"),
                           (HEALTH_PROTO_DIR, "grpc/health/v1/health.proto")):
        subprocess.run(["protoc", "--python_out=" + out, "-I", include, os.path.join(include, proto)],
                       check=True)

    def load(name, rel):
        # Loaded by path: the health module's package would be "grpc", which
        # is the gRPC library itself.
        spec = importlib.util.spec_from_file_location(name, os.path.join(out, rel))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
        return mod

    return load("eventservice_pb2", "eventservice_pb2.py"), load("pstest_health_pb2", "grpc/health/v1/health_pb2.py")


pb, health_pb = _generate_protos()
SERVING = health_pb.HealthCheckResponse.SERVING
NOT_SERVING = health_pb.HealthCheckResponse.NOT_SERVING


def event_oneof():
    """The oneof of Event that carries the typed payload."""
    return pb.Event.DESCRIPTOR.oneofs[0]


def event_types():
    """[(oneof field name, payload message class)] for every type this proto knows."""
    from google.protobuf import message_factory
    out = []
    for f in event_oneof().fields:
        cls = getattr(pb, f.message_type.name, None) or message_factory.GetMessageClass(f.message_type)
        out.append((f.name, cls))
    return out


def payload_of(event):
    """(type name, payload message) of an Event, or (None, None) when no type is set."""
    which = event.WhichOneof(event_oneof().name)
    if which is None:
        return None, None
    sub = getattr(event, which)
    return sub.DESCRIPTOR.name, sub


def payload_json(sub):
    """The proto3 JSON of a payload message, as the reference implementation writes it, parsed."""
    return json.loads(json_format.MessageToJson(sub))


# ------------------------------------------------------------------- misc

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False



def run_on_tty(args, timeout):
    """Runs args with stderr on a pseudo-terminal (stdout a pipe) until it exits or timeout seconds pass.
    Returns (returncode, what it wrote to the terminal, its stdout), both bytes."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = None
        tty = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the last writer closed the terminal
                    break
                if not chunk:
                    break
                tty += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=timeout)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    return proc.returncode, tty, out

def poll(fn, timeout, interval=0.1, what="condition"):
    """Calls fn until it returns a true value, which it returns; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(interval)


def new_id(prefix):
    """A name safe in SQL, AMQP and LIKE patterns (no '_' or '%')."""
    return prefix + uuid.uuid4().hex[:10]


def grpc_channel(port, host="127.0.0.1"):
    # A local subchannel pool gives each channel its own connection.
    return grpc.insecure_channel("%s:%d" % (host, port), options=[
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.enable_retries", 0),
    ])


def dispatch_stub(channel):
    return channel.unary_unary(DISPATCH_METHOD, request_serializer=pb.Events.SerializeToString,
                               response_deserializer=pb.Response.FromString)


def raw_dispatch_stub(channel):
    """dispatch that sends the given bytes as they are."""
    return channel.unary_unary(DISPATCH_METHOD, request_serializer=None,
                               response_deserializer=pb.Response.FromString)


def health_stub(channel):
    return channel.unary_unary(HEALTH_METHOD, request_serializer=health_pb.HealthCheckRequest.SerializeToString,
                               response_deserializer=health_pb.HealthCheckResponse.FromString)


# The penstock under test dies with the test process, even when that is killed: util-linux's setpriv
# sets the parent-death signal and execs it (same pid). Not a preexec_fn: this process runs gRPC's threads,
# and Python documents preexec_fn as unsafe with threads.
PDEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


# ---------------------------------------------------------------- penstock

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer",
                   "runtime error:", "ERROR: UndefinedBehaviorSanitizer")


class Penstock:
    """One `penstock serve` process under test.

    env: variables on top of the test defaults (PORT and GIN_PORT, the test servers' URLs,
    CLICKHOUSE_DB_NAME=db, SHUTDOWN_TIMEOUT_MS); a value of None removes one.
    """

    _seq = 0

    def __init__(self, logdir, db=None, env=None, cwd=None, name="penstock"):
        Penstock._seq += 1
        self.name = "%s-%d" % (name, Penstock._seq)
        self.logdir = logdir
        self.cwd = cwd
        self.proc = None
        self.returncode = None
        e = {k: v for k, v in os.environ.items() if k not in PENSTOCK_VARS and k not in SYSTEMD_VARS}
        e.update({
            "PORT": str(free_port()),
            # Never the default 8080: two penstocks of one test would collide on it.
            "GIN_PORT": str(free_port()),
            "RABBITMQ_URL": RABBITMQ_URL,
            "CLICKHOUSE_URL": CLICKHOUSE_URL,
            "SHUTDOWN_TIMEOUT_MS": str(DEFAULT_SHUTDOWN_MS),
            # Its own data directory (the spool, and the embedded store): one penstock per directory.
            "DATA_DIR": os.path.join(logdir, self.name + "-data"),
        })
        if db:
            e["CLICKHOUSE_DB_NAME"] = db
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = str(v)
        self.env = e
        self.port = int(e["PORT"]) if e.get("PORT", "").isdigit() else None
        self.http_port = int(e["GIN_PORT"]) if e.get("GIN_PORT", "").isdigit() else None
        self.stdout_path = os.path.join(logdir, self.name + ".stdout")
        self.stderr_path = os.path.join(logdir, self.name + ".stderr")
        self._channel = None

    @property
    def shutdown_ms(self):
        v = self.env.get("SHUTDOWN_TIMEOUT_MS", "30000")
        return int(v) if v.isdigit() else 30000

    def start(self, wait=True, timeout=30, args=("serve",)):
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(PDEATHSIG + [PENSTOCK_BIN] + list(args), env=self.env, cwd=self.cwd,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        if wait:
            self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout=30, port=None):
        port = port or self.port
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %s before serving; stderr:\n%s"
                                     % (self.name, self.proc.returncode, self.stderr_tail()))
            # A fresh channel per attempt: a channel that met a closed port backs off for seconds.
            ch = grpc_channel(port)
            try:
                r = health_stub(ch)(health_pb.HealthCheckRequest(), timeout=1)
                if r.status == SERVING:
                    return
                last = health_pb.HealthCheckResponse.ServingStatus.Name(r.status)
            except grpc.RpcError as e:
                last = "%s %s" % (e.code(), e.details())
            finally:
                ch.close()
            time.sleep(0.05)
        raise AssertionError("%s not SERVING on port %s after %ss (last: %s); stderr:\n%s"
                             % (self.name, port, timeout, last, self.stderr_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def channel(self):
        if self._channel is None:
            self._channel = grpc_channel(self.port)
        return self._channel

    def dispatch(self, events, timeout=10):
        return dispatch_stub(self.channel)(events, timeout=timeout)

    def dispatch_raw(self, data, timeout=10):
        return raw_dispatch_stub(self.channel)(data, timeout=timeout)

    def health(self, timeout=2):
        return health_stub(self.channel)(health_pb.HealthCheckRequest(), timeout=timeout).status

    def http(self, path, method="GET", timeout=5, body=None):
        """An HTTPResponse-like (status, headers, body) from the monitoring server on GIN_PORT."""
        return http_request(self.http_port, path, method=method, timeout=timeout, body=body)

    def http_json(self, path, timeout=5):
        """(status, parsed JSON body) of GET path; fails when the body is not JSON."""
        r = self.http(path, timeout=timeout)
        return r.status, r.json()

    def metrics(self, timeout=5):
        """The parsed and validated /metrics exposition (a Metrics)."""
        r = self.http("/metrics", timeout=timeout)
        assert r.status == 200, "GET /metrics: %d %s" % (r.status, r.text[:500])
        return parse_metrics(r.text)

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, expect_rc=0, slack_s=STOP_SLACK_S):
        """SIGTERM; asserts exit `expect_rc` within SHUTDOWN_TIMEOUT_MS (plus slack for process exit).

        Returns the seconds shutdown took.
        """
        self.close_channel()
        if self.proc is None:
            return 0.0
        if self.proc.poll() is not None:
            raise AssertionError("%s had already exited with %s; stderr:\n%s"
                                 % (self.name, self.proc.returncode, self.stderr_tail()))
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        limit = self.shutdown_ms / 1000.0 + slack_s
        rc = self.wait_exit(limit)
        took = time.monotonic() - t0
        if rc is None:
            self.kill()
            raise AssertionError("%s did not exit within %.1fs of SIGTERM (SHUTDOWN_TIMEOUT_MS=%d); stderr:\n%s"
                                 % (self.name, limit, self.shutdown_ms, self.stderr_tail()))
        if expect_rc is not None:
            assert rc == expect_rc, "%s exited with %s after SIGTERM, expected %s; stderr:\n%s" % (
                self.name, rc, expect_rc, self.stderr_tail())
        self.check_sanitizers()
        return took

    def kill(self):
        self.close_channel()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close_channel(self):
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, lines=40):
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def check_sanitizers(self):
        text = self.stderr_text()
        for mark in SANITIZER_MARKS:
            assert mark not in text, "%s: sanitizer report in stderr:\n%s" % (self.name, self.stderr_tail(80))


# ------------------------------------------------------- monitoring HTTP

# Loopback only: an http_proxy in the caller's environment must not take these requests.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HttpResponse:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    @property
    def content_type(self):
        return self.headers.get("Content-Type", "")

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            raise AssertionError("body of HTTP %d (%s) is not JSON (%s): %r"
                                 % (self.status, self.content_type, e, self.body[:500])) from None

    def __repr__(self):
        return "<HTTP %d %s %r>" % (self.status, self.content_type, self.body[:200])


def http_request(port, path, method="GET", timeout=5, body=None, host="127.0.0.1"):
    """One HTTP request; any status comes back as an HttpResponse, connection errors raise OSError/URLError."""
    req = urllib.request.Request("http://%s:%d%s" % (host, port, path), data=body, method=method)
    try:
        with _HTTP.open(req, timeout=timeout) as r:
            return HttpResponse(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        with e:
            return HttpResponse(e.code, e.headers, e.read())


_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def _prom_float(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    return float(s)  # ValueError for anything else


class Metrics:
    """A parsed Prometheus text exposition (format 0.0.4).

    samples: [(name, labels dict, value)] in the order given; types: family -> type.
    """

    def __init__(self, text, samples, types, helps):
        self.text, self.samples, self.types, self.helps = text, samples, types, helps

    def series(self, name, **labels):
        """[(labels, value)] of the samples called name whose labels include the given ones."""
        want = {k: str(v) for k, v in labels.items()}
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == x for k, x in want.items())]

    def value(self, name, **labels):
        """The value of the one series name{labels} (exactly those labels), or None."""
        want = {k: str(v) for k, v in labels.items()}
        for n, l, v in self.samples:
            if n == name and l == want:
                return v
        return None

    def total(self, name, **labels):
        """Sum over every series of name whose labels include the given ones (0 when none)."""
        return sum(v for _, v in self.series(name, **labels))

    def family_of(self, sample_name):
        if sample_name in self.types:
            return sample_name
        for suf in _HIST_SUFFIXES:
            base = sample_name[:-len(suf)] if sample_name.endswith(suf) else None
            if base and self.types.get(base) in ("histogram", "summary"):
                return base
        return None

    def families(self):
        """Every family that has at least one sample."""
        return {self.family_of(n) for n, _, _ in self.samples}


def parse_metrics(text):
    """Parses and validates a text exposition; any breach of the format raises AssertionError.

    Checked: line syntax; one TYPE (and at most one HELP) per family, before its first sample; every sample
    belongs to a TYPEd family; a family's samples are contiguous; no series twice; counters are >= 0;
    histograms have _sum, _count and cumulative _bucket series ending in le="+Inf" equal to _count.
    """
    assert text.endswith("\n"), "exposition does not end with a newline: %r" % text[-100:]
    import re
    sample_re = re.compile(r"^(%s)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$" % _METRIC_NAME)
    label_re = re.compile(r'\s*(%s)\s*=\s*"((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)' % _LABEL_NAME)
    samples, types, helps = [], {}, {}
    seen_series = set()
    closed = set()      # families whose block of samples has ended
    current = None      # family of the previous sample
    problems = []

    def family(sample_name):
        if sample_name in types:
            return sample_name
        for suf in _HIST_SUFFIXES:
            if sample_name.endswith(suf) and types.get(sample_name[:-len(suf)]) in ("histogram", "summary"):
                return sample_name[:-len(suf)]
        return None

    for i, line in enumerate(text.split("\n")[:-1], 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                name = parts[2]
                if not re.fullmatch(_METRIC_NAME, name):
                    problems.append("line %d: bad metric name in %r" % (i, line))
                if parts[1] == "TYPE":
                    t = parts[3].strip() if len(parts) > 3 else ""
                    if t not in ("counter", "gauge", "histogram", "summary", "untyped"):
                        problems.append("line %d: unknown type in %r" % (i, line))
                    if name in types:
                        problems.append("line %d: second TYPE line for %s" % (i, name))
                    if name in closed or name == current or any(family(n) == name for n, _, _ in samples):
                        problems.append("line %d: TYPE for %s after its samples" % (i, name))
                    types[name] = t
                else:
                    if name in helps:
                        problems.append("line %d: second HELP line for %s" % (i, name))
                    helps[name] = parts[3] if len(parts) > 3 else ""
            continue
        m = sample_re.match(line)
        if not m:
            problems.append("line %d: not a sample: %r" % (i, line))
            continue
        name, labeltext, valtext = m.group(1), m.group(2), m.group(3)
        labels = {}
        if labeltext:
            pos = 0
            while pos < len(labeltext):
                lm = label_re.match(labeltext, pos)
                if not lm or lm.end() == pos:
                    problems.append("line %d: bad labels %r" % (i, labeltext))
                    break
                k = lm.group(1)
                v = lm.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
                if k in labels:
                    problems.append("line %d: label %s twice" % (i, k))
                labels[k] = v
                pos = lm.end()
        try:
            value = _prom_float(valtext)
        except ValueError:
            problems.append("line %d: bad value %r" % (i, valtext))
            continue
        fam = family(name)
        if fam is None:
            problems.append("line %d: sample %s has no TYPE line before it" % (i, name))
            fam = name
        if fam != current:
            if current is not None:
                closed.add(current)
            if fam in closed:
                problems.append("line %d: samples of %s are not contiguous" % (i, fam))
            current = fam
        key = (name, tuple(sorted(labels.items())))
        if key in seen_series:
            problems.append("line %d: series %s%s twice" % (i, name, labels))
        seen_series.add(key)
        if types.get(fam) == "counter" and not value >= 0:
            problems.append("line %d: counter %s = %r" % (i, name, value))
        samples.append((name, labels, value))

    # Histograms.
    for fam, t in types.items():
        if t != "histogram":
            continue
        groups = {}
        for n, l, v in samples:
            if n in (fam + "_bucket", fam + "_sum", fam + "_count"):
                key = tuple(sorted((k, x) for k, x in l.items() if k != "le"))
                groups.setdefault(key, {"buckets": [], "sum": None, "count": None})
                g = groups[key]
                if n == fam + "_bucket":
                    if "le" not in l:
                        problems.append("%s_bucket%s without le" % (fam, l))
                        continue
                    try:
                        g["buckets"].append((_prom_float(l["le"]), v))
                    except ValueError:
                        problems.append("%s_bucket: bad le %r" % (fam, l["le"]))
                elif n == fam + "_sum":
                    g["sum"] = v
                else:
                    g["count"] = v
        for key, g in groups.items():
            where = "%s%s" % (fam, dict(key))
            if g["sum"] is None or g["count"] is None:
                problems.append("%s: missing _sum or _count" % where)
            b = sorted(g["buckets"])
            if not b or b[-1][0] != math.inf:
                problems.append("%s: no le=\"+Inf\" bucket" % where)
                continue
            les = [le for le, _ in b]
            if len(set(les)) != len(les):
                problems.append("%s: a bucket bound twice" % where)
            counts = [c for _, c in b]
            if any(c2 < c1 for c1, c2 in zip(counts, counts[1:])):
                problems.append("%s: buckets not cumulative: %s" % (where, b))
            if g["count"] is not None and counts[-1] != g["count"]:
                problems.append("%s: le=\"+Inf\" %r != _count %r" % (where, counts[-1], g["count"]))
            if g["sum"] is not None and g["count"] == 0 and g["sum"] != 0:
                problems.append("%s: _sum %r with _count 0" % (where, g["sum"]))
    assert not problems, "invalid exposition (%d problems):\n%s\n---- text (head) ----\n%s" % (
        len(problems), "\n".join(problems[:30]), text[:3000])
    return Metrics(text, samples, types, helps)


# -------------------------------------------------------------- ClickHouse

class ClickHouse:
    """The ClickHouse HTTP interface, as the tests use it."""

    def __init__(self, url=CLICKHOUSE_URL):
        self.url = url.rstrip("/")

    def query(self, sql, timeout=60):
        req = urllib.request.Request(self.url + "/", data=sql.encode("utf-8"), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raise AssertionError("ClickHouse error %s for %s: %s"
                                 % (e.code, sql[:200], e.read().decode("utf-8", "replace")[:2000])) from None

    def rows(self, sql):
        """The rows of a SELECT, as dicts."""
        return [json.loads(line) for line in self.query(sql + " FORMAT JSONEachRow").splitlines() if line]

    def scalar(self, sql):
        return self.query(sql + " FORMAT TSV").strip()

    def table_exists(self, db, table):
        return self.scalar("EXISTS TABLE %s.%s" % (db, table)) == "1"

    def create_database(self, prefix="pstest"):
        db = new_id(prefix)
        self.query("CREATE DATABASE %s" % db)
        return db

    def drop_database(self, db):
        self.query("DROP DATABASE IF EXISTS %s" % db)

    def count_ids(self, db, ids):
        """(rows, distinct ids) in db.events among the given ids."""
        if not ids:
            return 0, 0
        r = self.rows("SELECT count() AS n, uniqExact(event_id) AS u FROM %s.events WHERE event_id IN (%s)"
                      % (db, ",".join(sql_str(i) for i in ids)))[0]
        return int(r["n"]), int(r["u"])


    def id_counts(self, db, prefix):
        """{event_id: rows} in db.events for the ids that start with prefix + '-'."""
        rows = self.query("SELECT event_id, count() FROM %s.events WHERE event_id LIKE %s GROUP BY event_id "
                          "FORMAT TSV" % (db, sql_str(prefix + "-%")))
        out = {}
        for line in rows.splitlines():
            k, _, n = line.rpartition("\t")
            out[k] = int(n)
        return out


def sql_str(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------- RabbitMQ

def amqp_connection():
    params = pika.URLParameters(RABBITMQ_URL)
    params.heartbeat = 0
    params.blocked_connection_timeout = 60
    return pika.BlockingConnection(params)


def purge_queue(name):
    """Empties a queue when it exists (left-overs of another module must not land in this one's database)."""
    conn = amqp_connection()
    try:
        ch = conn.channel()
        try:
            ch.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return
        ch.queue_purge(name)
    finally:
        conn.close()


class TestQueue:
    """A queue bound to the event exchange with '#': sees every message penstock publishes.

    Declared (with the exchange: topic, durable) before anything is sent.
    """

    __test__ = False  # not a pytest class

    def __init__(self, exchange=EVENT_EXCHANGE, binding="#"):
        self.name = new_id("pstest.q.")
        self.conn = amqp_connection()
        self.ch = self.conn.channel()
        self.ch.exchange_declare(exchange, "topic", durable=True)
        self.ch.queue_declare(self.name, durable=False, auto_delete=False,
                              arguments={"x-expires": 15 * 60 * 1000})
        self.ch.queue_bind(self.name, exchange, binding)

    def message_count(self):
        return self.ch.queue_declare(self.name, passive=True).method.message_count

    def drain(self, until=None, inactivity=1.0, timeout=60):
        """Consumes messages until the queue stays quiet for `inactivity` s once until(msgs) is true (or
        always, without until), or `timeout` s pass. Returns [(method, properties, body)]."""
        msgs = []
        deadline = time.monotonic() + timeout
        self.ch.basic_qos(prefetch_count=2000)
        for method, props, body in self.ch.consume(self.name, auto_ack=True, inactivity_timeout=inactivity):
            if method is None:
                if until is None or until(msgs) or time.monotonic() >= deadline:
                    break
                continue
            msgs.append((method, props, body))
            if time.monotonic() >= deadline:
                break
        self.ch.cancel()
        return msgs

    def close(self):
        try:
            self.ch.queue_delete(self.name)
        except Exception:
            pass
        try:
            self.conn.close()
        except Exception:
            pass


# ------------------------------------------------------------------ events

STRING_POOL = (
    "home", "checkout", "cart", "search?q=shoes&page=2", "ПРОДУКТ", "商品ページ", "café", "naïve",
    "emoji 😀🎉", "मराठी", "עברית", "Ελληνικά", "quote \" and backslash \\", "tab\tnewline\n",
    "ctl \x01\x1f", "html <b>&amp;</b>", "line sep \u2028 para \u2029", "slash /a/b", "dollar $", "",
)
CURRENCIES = ("USD", "EUR", "INR", "JPY", "GBP", "BRL", "₹")
OS_NAMES = ("android", "ios", "web", "Android 14", "iOS 17.2", "HarmonyOS")


def random_string(rnd, max_len=24):
    r = rnd.random()
    if r < 0.5:
        return rnd.choice(STRING_POOL)
    if r < 0.8:
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:"
    else:
        alphabet = "aé中😀ßЖ\"\\/\n\t\u00a0\u2028ü한"
    return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, max_len)))


def random_double(rnd):
    r = rnd.random()
    if r < 0.35:
        return round(rnd.uniform(0, 1000), 2)
    if r < 0.5:
        return float(rnd.randint(-1000, 1000))
    if r < 0.65:
        return rnd.uniform(-1e6, 1e6)
    if r < 0.75:
        return rnd.choice((0.1, 0.2 + 0.1, 1e-7, 1.5e-300, 5e-324, 1e21, 1.7976931348623157e308, 2.0 ** 53 + 2,
                           123456789.123456789, -2.5e-5, 3.141592653589793))
    if r < 0.78:
        return rnd.choice((float("nan"), float("inf"), float("-inf")))
    return rnd.random() * 10 ** rnd.randint(-10, 15)


def random_int(rnd, bits, signed=True):
    r = rnd.random()
    if signed:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    if r < 0.6:
        return rnd.randint(max(lo, -1000), min(hi, 100000))
    if r < 0.8:
        return rnd.choice((lo, hi, 1, -1 if signed else 2, (1 << 53) + 1 if bits == 64 else hi - 1))
    return rnd.randint(lo, hi)


_INT_BITS = {
    pb_descriptor.FieldDescriptor.TYPE_INT32: (32, True), pb_descriptor.FieldDescriptor.TYPE_SINT32: (32, True),
    pb_descriptor.FieldDescriptor.TYPE_SFIXED32: (32, True), pb_descriptor.FieldDescriptor.TYPE_INT64: (64, True),
    pb_descriptor.FieldDescriptor.TYPE_SINT64: (64, True), pb_descriptor.FieldDescriptor.TYPE_SFIXED64: (64, True),
    pb_descriptor.FieldDescriptor.TYPE_UINT32: (32, False), pb_descriptor.FieldDescriptor.TYPE_FIXED32: (32, False),
    pb_descriptor.FieldDescriptor.TYPE_UINT64: (64, False), pb_descriptor.FieldDescriptor.TYPE_FIXED64: (64, False),
}


def random_scalar(rnd, f):
    FD = pb_descriptor.FieldDescriptor
    name = f.name.lower()
    if f.type == FD.TYPE_STRING:
        if "currency" in name:
            return rnd.choice(CURRENCIES)
        return random_string(rnd)
    if f.type in (FD.TYPE_DOUBLE,):
        if "price" in name or "amount" in name:
            return round(rnd.uniform(0.01, 5000), 2) if rnd.random() < 0.9 else random_double(rnd)
        return random_double(rnd)
    if f.type == FD.TYPE_FLOAT:
        return rnd.randint(-4096, 4096) / 8.0  # exact in float32
    if f.type == FD.TYPE_BOOL:
        return rnd.random() < 0.5
    if f.type in _INT_BITS:
        bits, signed = _INT_BITS[f.type]
        if "position" in name or "quantity" in name:
            return rnd.randint(0, 50) if rnd.random() < 0.9 else random_int(rnd, bits, signed)
        return random_int(rnd, bits, signed)
    if f.type == FD.TYPE_ENUM:
        return rnd.choice(f.enum_type.values).number
    if f.type == FD.TYPE_BYTES:
        return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 16)))
    raise NotImplementedError("field type %d of %s" % (f.type, f.full_name))


def fill_message(rnd, msg, depth=0):
    """Sets random values on every field of msg (some left at their default, to test their omission)."""
    FD = pb_descriptor.FieldDescriptor
    for f in msg.DESCRIPTOR.fields:
        if f.containing_oneof is not None and rnd.random() < 0.5:
            continue
        if rnd.random() < 0.12:
            continue  # default value: must be omitted from the JSON
        if f.type == FD.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            key_f, val_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            m = getattr(msg, f.name)
            for _ in range(rnd.randint(0, 4)):
                k = random_scalar(rnd, key_f)
                if val_f.type == FD.TYPE_MESSAGE:
                    if depth < 2:
                        fill_message(rnd, m[k], depth + 1)
                else:
                    m[k] = random_scalar(rnd, val_f)
        elif f.label == FD.LABEL_REPEATED:
            n = rnd.randint(0, 5)
            if f.type == FD.TYPE_MESSAGE:
                if depth < 2:
                    for _ in range(n):
                        fill_message(rnd, getattr(msg, f.name).add(), depth + 1)
            else:
                getattr(msg, f.name).extend(random_scalar(rnd, f) for _ in range(n))
        elif f.type == FD.TYPE_MESSAGE:
            if depth < 2:
                fill_message(rnd, getattr(msg, f.name), depth + 1)
        else:
            setattr(msg, f.name, random_scalar(rnd, f))
    return msg


def random_timestamp(rnd, now):
    """(text, expected event_time as unix seconds or None for 'receive time')."""
    e = int(now) - rnd.randint(0, 20 * 86400)  # realistic: up to 20 days old
    r = rnd.random()
    if r < 0.25:
        return str(e), e
    if r < 0.5:
        ms = e * 1000 + rnd.randint(0, 999)
        return str(ms), e
    if r < 0.97:
        frac_digits = rnd.choice((0, 0, 1, 3, 6, 9))
        frac = ""
        if frac_digits:
            frac = "." + "".join(rnd.choice("0123456789") for _ in range(frac_digits))
        zone = rnd.choice(("Z", "Z", "+00:00", "+05:30", "-08:00", "+14:00", "-03:30", ""))
        off = 0
        if zone not in ("Z", ""):
            sign = 1 if zone[0] == "+" else -1
            off = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
        local = datetime.datetime.fromtimestamp(e + off, datetime.timezone.utc)
        return local.strftime("%Y-%m-%dT%H:%M:%S") + frac + zone, e
    return rnd.choice(("", "not a time", "yesterday", "2024-13-45T25:61:00Z", "17000000000000000000000")), None


def random_header(rnd, tag):
    h = pb.Header(
        sessionId="sess-%s-%s" % (tag, random_string(rnd, 8)),
        userId=random_int(rnd, 64) if rnd.random() < 0.9 else 0,
        deviceId=uuid.UUID(int=rnd.getrandbits(128)).hex if rnd.random() < 0.9 else "",
        clientId=rnd.choice(("app", "web", "клиент", "クライアント", "")),
        os=rnd.choice(OS_NAMES),
        appVersion="%d.%d.%d" % (rnd.randint(1, 9), rnd.randint(0, 30), rnd.randint(0, 200)),
    )
    return h


class SentEvent:
    __slots__ = ("id", "batch", "pos", "type_name", "field", "timestamp", "expect_time")

    def __init__(self, id, batch, pos, type_name, field, timestamp, expect_time):
        self.id, self.batch, self.pos, self.type_name, self.field = id, batch, pos, type_name, field
        self.timestamp, self.expect_time = timestamp, expect_time


class EventFactory:
    """Builds batches of random events of every type, with unique ids '<runid>-<n>'."""

    def __init__(self, runid, seed=None):
        self.runid = runid
        self.rnd = random.Random(seed)
        self.types = event_types()
        self.n = 0
        self.now = time.time()

    def event(self, field=None, cls=None):
        if field is None:
            field, cls = self.rnd.choice(self.types)
        self.n += 1
        ts, expect = random_timestamp(self.rnd, self.now)
        ev = pb.Event(id="%s-%d" % (self.runid, self.n), timestamp=ts)
        fill_message(self.rnd, getattr(ev, field))
        getattr(ev, field).SetInParent()  # set even when every field is default
        return ev, expect

    def batch(self, fields, tag=None):
        """An Events with one event per entry of fields ([(field, cls)])."""
        b = pb.Events(header=random_header(self.rnd, tag or "%s-%d" % (self.runid, self.n)))
        expects = []
        for field, cls in fields:
            ev, expect = self.event(field, cls)
            b.events.append(ev)
            expects.append(expect)
        return b, expects

    def mixed_batches(self, per_type, batch_size):
        """Batches holding exactly per_type events of every type, shuffled and mixed."""
        plan = [t for t in self.types for _ in range(per_type)]
        self.rnd.shuffle(plan)
        out = []
        for i in range(0, len(plan), batch_size):
            out.append(self.batch(plan[i:i + batch_size], tag="%s-b%d" % (self.runid, len(out))))
        return out


# ------------------------------------------------------ hand-encoded bytes

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number, payload):
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_number(msg_cls, name):
    return msg_cls.DESCRIPTOR.fields_by_name[name].number


def unused_event_field_number(start=99):
    used = {f.number for f in pb.Event.DESCRIPTOR.fields}
    n = start
    while n in used:
        n += 1
    return n


# ------------------------------------------------------------ HTTP target

class HttpRequestRecord:
    """One request an HttpReceiver took: method, path, headers (lower-case names), body, arrival time
    (time.monotonic()) and the status it was answered with."""

    __slots__ = ("method", "path", "headers", "body", "time", "status")

    def __init__(self, method, path, headers, body, when):
        self.method, self.path, self.headers, self.body, self.time = method, path, headers, body, when
        self.status = None

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            raise AssertionError("body of %s %s is not JSON (%s): %r" % (self.method, self.path, e,
                                                                         self.body[:300])) from None

    def __repr__(self):
        return "<%s %s -> %s %r>" % (self.method, self.path, self.status, self.body[:120])


class HttpReceiver:
    """A real HTTP server on 127.0.0.1 (http.server.ThreadingHTTPServer, served from a thread) that records
    every request and answers as scripted.

    answer(status, ...) adds a rule; a request takes the first rule (in the order added) that matches it and
    has answers left, else 200 with {"ok":true}. Use as a context manager, or close() it.
    """

    def __init__(self):
        import http.server
        self.requests = []
        self._rules = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as an API behind a load balancer would

            def _read_body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self):
                body = self._read_body()
                rec = HttpRequestRecord(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                        body, time.monotonic())
                status, headers, rbody = receiver._decide(rec)
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(rbody)))
                self.end_headers()
                self.wfile.write(rbody)

            do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _handle

            def log_message(self, fmt, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="pstest-http-receiver", daemon=True)
        self._thread.start()

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def answer(self, status, times=None, match=None, headers=None, body=b""):
        """Answers `status` (with headers and body) to the requests for which match(record) is true (every
        request without match): the next `times` of them, or all of them without times."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        with self._lock:
            self._rules.append({"status": status, "left": times, "match": match, "headers": headers or {},
                                "body": body})

    def _decide(self, rec):
        with self._lock:
            answer = (200, {}, b'{"ok":true}')
            for r in self._rules:
                if r["left"] is not None and r["left"] <= 0:
                    continue
                if r["match"] is not None and not r["match"](rec):
                    continue
                if r["left"] is not None:
                    r["left"] -= 1
                answer = (r["status"], r["headers"], r["body"])
                break
            rec.status = answer[0]
            self.requests.append(rec)
            return answer

    def snapshot(self, path=None):
        """The requests taken so far (of one path, if given), in arrival order."""
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def ok(self, path=None):
        """The requests answered 2xx (of one path, if given)."""
        return [r for r in self.snapshot(path) if 200 <= r.status < 300]

    def wait(self, pred, timeout, what="requests", path=None):
        """Polls until pred(snapshot(path)) is true; returns the snapshot."""
        out = []

        def check():
            out[:] = self.snapshot(path)
            return pred(out)

        poll(check, timeout, what=what)
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------- RabbitMQ, more

def queue_exists(name):
    """True when the queue is declared on the test broker (a passive declare on a connection of its own)."""
    conn = amqp_connection()
    try:
        conn.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        conn.close()


def get_messages(ch, queue, want, timeout=30):
    """Takes (auto-ack) up to `want` messages from queue with basic_get, waiting up to timeout for them.
    Returns [(properties, body)]."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        got.append((props, body))
    return got
