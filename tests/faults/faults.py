#!/usr/bin/python3
"""penstock's fault-injection suite (run it with tests/faults/run, or `make test-faults`).

A real gRPC client sends a steady load (RATE batches/s of BATCH mixed events, every event with a unique id)
to a real `penstock serve` while one fault is injected; it records every event id answered SUCCESS. After
the fault, the pipeline is left to settle and the suite checks where those ids are: ClickHouse `events`
(and, in scenario d, the HTTP target). See tests/faults/README.md for what each scenario does and asserts.

Scenarios (all run by default; --only a,c picks some):
  a  RabbitMQ restarts                     d  the HTTP target answers 503 for OUTAGE_S
  b  RabbitMQ is down for OUTAGE_S         e  penstock gets SIGTERM under load, is started again
  c  ClickHouse is down for OUTAGE_S       f  penstock gets SIGKILL under load, is started again
  g  penstock gets SIGKILL under load while RabbitMQ is down (what it acknowledged is only in its spool),
     is started again, then RabbitMQ returns: the spool is replayed
  h  penstock gets SIGTERM under load while ClickHouse is down (its consumers hold messages they cannot
     insert: they must give them up at the shutdown deadline, unacknowledged), is started again, then
     ClickHouse returns: RabbitMQ's redeliveries land

It talks to the servers tests/faults/run started (scripts/servers, on the fault ports; PS_SERVERS_DIR and
the PS_* port variables are inherited) and stops and starts them itself for a, b, c, g and h.

Settings (environment; tests/faults/run sets the first three):
  PENSTOCK_BIN, PS_TEST_RABBITMQ_URL, PS_TEST_CLICKHOUSE_URL   as for tests/integration (pstest)
  PS_FAULT_LOG_DIR       penstock logs, per scenario                     (a temporary directory)
  PS_FAULT_RATE          batches per second                              (40)
  PS_FAULT_BATCH         events per batch                                (50)
  PS_FAULT_DEADLINE_S    deadline of one dispatch call                   (10)
  PS_FAULT_WARMUP_S      load before the fault                           (8)
  PS_FAULT_AFTER_S       load after the fault ends (at least 5 s after recovery)   (10)
  PS_FAULT_OUTAGE_S      length of the outages of b, c and d             (30)
  PS_FAULT_SETTLE_S      longest wait for everything acknowledged to land (90)
  PS_FAULT_QUIET_S       ...which ends early when nothing lands for this long and the pipeline is idle (20)
  PS_FAULT_RSS_LIMIT_MB  bound on penstock's peak resident memory        (300)
  PS_FAULT_STOP_WAIT_S   c, h: seconds stop-clickhouse waits after SIGTERM before SIGKILL (10)
  PS_FAULT_KILL_HOLD_S   g, h: load with the server down before the signal, and again after the restart (5)
  PS_FAULT_KEEP=1        keep each scenario's ClickHouse database
"""

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import pstest  # noqa: E402

import grpc  # noqa: E402
import pika  # noqa: E402


def env_num(name, default, cast=float):
    v = os.environ.get(name, "")
    return cast(v) if v.strip() else default


RATE = env_num("PS_FAULT_RATE", 40.0)
BATCH = env_num("PS_FAULT_BATCH", 50, int)
DEADLINE_S = env_num("PS_FAULT_DEADLINE_S", 10.0)
WARMUP_S = env_num("PS_FAULT_WARMUP_S", 8.0)
AFTER_S = env_num("PS_FAULT_AFTER_S", 10.0)
OUTAGE_S = env_num("PS_FAULT_OUTAGE_S", 30.0)
SETTLE_S = env_num("PS_FAULT_SETTLE_S", 90.0)
QUIET_S = env_num("PS_FAULT_QUIET_S", 20.0)
RSS_LIMIT_MB = env_num("PS_FAULT_RSS_LIMIT_MB", 300.0)
KILL_HOLD_S = env_num("PS_FAULT_KILL_HOLD_S", 5.0)
STOP_WAIT_S = env_num("PS_FAULT_STOP_WAIT_S", 10, int)
RECOVER_LIMIT_S = 60.0
SHUTDOWN_MS = 20000
SPOOL_MAX_BYTES = 512 * 1024 * 1024
SERVERS = os.path.join(pstest.ROOT, "scripts", "servers")

# Queues of the built-in topology (config/penstock.default.yaml) without webengage_event_q (off by default).
DEFAULT_QUEUES = ("grpc_clickhouse_event_q", "clickhouse_click_event_q", "app_init_event_q", "branch_event_q",
                  "graphy_event_q", "trace_log", "affiliate_orders_event_q", "post_log_events_q",
                  "sentiment_log_events_q", "shopify_events_q")
SKIPPED_ERROR_QUEUE = "grpc_event_skipped.error"
# The queue every gRPC event reaches (binding "#"), consumed into `events`: what scenario h's consumers hold.
EVENTS_QUEUE = "grpc_clickhouse_event_q"
HTTP_QUEUE = "fault_http_forward_q"
# Event types (Event oneof fields) that scenario d's topology forwards to the HTTP target.
FORWARDED = {"completePurchaseEvent": "CompletePurchaseEvent", "addToCartEvent": "AddToCartEvent"}

# The landing table, created by the suite before penstock starts, with the columns penstock writes
# (README "The landing table") but a plain MergeTree: penstock's ReplacingMergeTree would fold the duplicates
# this suite counts as soon as parts merge (and stopping merges for minutes of inserts runs into "too many
# parts"). penstock's CREATE TABLE IF NOT EXISTS keeps it.
EVENTS_DDL = """CREATE TABLE %s.events (
  event_id String, event_type String, event_time DateTime, event_timestamp String, received_at DateTime,
  session_id String, user_id Int64, device_id String, client_id String, os String, app_version String,
  payload String
) ENGINE = MergeTree PARTITION BY toYYYYMM(event_time) ORDER BY (event_type, event_id)"""

# Scenario d's topology: the catch-all ClickHouse queue as in the built-in one, plus an HTTP sink queue for
# purchases and add-to-carts (what WEBENGAGE does), in batches.
HTTP_TOPOLOGY = """\
event_exchange: grpc_event.tx
dead_letter_exchange: grpc_event_error.dx
clickhouse_connections:
  - name: default
    url: "%(ch_url)s"
    database: "%(db)s"
    timeout_ms: 10000
    health_check_ms: 1000
queues:
  - {name: grpc_clickhouse_event_q, dead_letter: true}
  - {name: %(http_q)s, dead_letter: true}
bindings:
  - {queue: grpc_clickhouse_event_q, key: "#"}
  - {queue: %(http_q)s, key: CompletePurchaseEvent}
  - {queue: %(http_q)s, key: AddToCartEvent}
consumers:
  - queue: grpc_clickhouse_event_q
    count: 2
    prefetch: 2000
    decoder: {type: events}
    sink: {type: clickhouse, connection: default, table: events, flush_rows: 10000, flush_ms: 1000}
  - queue: %(http_q)s
    count: 2
    prefetch: 500
    decoder: {type: events}
    sink:
      type: http
      url: "%(url)s"
      method: POST
      headers:
        X-Source: penstock-faults
      body: batch
      batch_max: 100
      timeout_ms: 5000
      concurrency: 4
      max_retries: 10
      retry_base_ms: 200
      retry_max_ms: 2000
"""

T0 = time.monotonic()


def log(msg):
    print("[%6.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def servers(cmd, timeout=120, wait_s=None):
    """scripts/servers CMD on the fault servers (PS_SERVERS_DIR and ports come from the environment);
    wait_s: its PS_SERVERS_TIMEOUT (how long a stop waits before SIGKILL)."""
    t = time.monotonic()
    env = dict(os.environ)
    if wait_s is not None:
        env["PS_SERVERS_TIMEOUT"] = str(int(wait_s))
    r = subprocess.run([SERVERS, cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       cwd=pstest.ROOT, env=env)
    out = r.stdout.decode("utf-8", "replace").strip()
    if r.returncode != 0:
        raise RuntimeError("scripts/servers %s exited %d:\n%s" % (cmd, r.returncode, out))
    log("servers %s: done in %.1fs" % (cmd, time.monotonic() - t))


def ensure_servers():
    """After a scenario that failed half-way: both servers running again (no-op when they are)."""
    for cmd in ("start-rabbitmq", "start-clickhouse"):
        try:
            servers(cmd)
        except Exception as e:  # reported by the next scenario's set-up
            log("could not %s: %s" % (cmd, e))


def proc_rss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


# ------------------------------------------------------------------ the load client

class Call:
    __slots__ = ("index", "first", "types", "t_sent", "t_done", "outcome")

    def __init__(self, index, first, types, t_sent):
        self.index, self.first, self.types, self.t_sent = index, first, types, t_sent
        self.t_done = None
        self.outcome = None

    @property
    def ok(self):
        return self.outcome == "SUCCESS"


def client_channel(port):
    # One channel for the whole scenario, as a real client keeps: it reconnects on its own after a
    # penstock restart, quickly (the default backoff reaches minutes). After a failed connection attempt
    # the channel waits for a re-resolution of the target, which gRPC rate-limits (to one per 30 s by
    # default; measured here: the first SUCCESS came 3 s after a restart instead of 0.15 s).
    return grpc.insecure_channel("127.0.0.1:%d" % port, options=[
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.enable_retries", 0),
        ("grpc.dns_min_time_between_resolutions_ms", 100),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
        # Not grpc.min_reconnect_backoff_ms: it is also the connect timeout (20 s by default); set low, a
        # server busy starting up fails every handshake in time.
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ])


class LoadClient:
    """RATE batches/s of BATCH random events of every type, each batch one dispatch call (a future, so that
    slow answers do not slow the load) with a DEADLINE_S deadline. Batch i holds the ids <runid>-<50i+1> ..
    <runid>-<50i+50>. A call that fails (UNAVAILABLE, DEADLINE_EXCEEDED, ...) is not acknowledged; its
    events are sent again as part of a later batch, under new ids."""

    def __init__(self, port, runid, seed):
        self.runid = runid
        self.factory = pstest.EventFactory(runid, seed=seed)
        self.channel = client_channel(port)
        self.stub = pstest.dispatch_stub(self.channel)
        self.calls = []
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.inflight = 0
        self.max_inflight = int(RATE * DEADLINE_S * 1.5) + 10
        self.skipped_ticks = 0
        self.details = {}  # outcome -> Counter of the error details (a few distinct ones)
        self.retries_owed = 0
        self.retries_sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults-load", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        interval = 1.0 / RATE
        next_t = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_t:
                self._stop.wait(next_t - now)
                continue
            next_t += interval
            if now - next_t > 1.0:
                next_t = now  # this thread stalled: no burst to catch up
            with self.lock:
                full = self.inflight >= self.max_inflight
                if not full:
                    self.inflight += 1
                    if self.retries_owed:
                        self.retries_owed -= 1
                        self.retries_sent += 1
            if full:
                self.skipped_ticks += 1
                continue
            self._send()

    def _send(self):
        f = self.factory
        fields = [f.rnd.choice(f.types) for _ in range(BATCH)]
        first = f.n + 1
        batch, _ = f.batch(fields, tag="%s-%d" % (self.runid, first))
        call = Call((first - 1) // BATCH, first, tuple(name for name, _ in fields), time.monotonic())
        with self.lock:
            self.calls.append(call)
        try:
            fut = self.stub.future(batch, timeout=DEADLINE_S)
        except Exception as e:  # the channel refused to start the call
            self._done(call, None, e)
            return
        fut.add_done_callback(lambda fu, c=call: self._done(c, fu, None))

    def _done(self, call, fut, exc):
        outcome = None
        try:
            if exc is not None:
                raise exc
            r = fut.result()
            outcome = "SUCCESS" if r.status == "SUCCESS" else "status " + (r.status or "(empty)")
        except grpc.RpcError as e:
            outcome = e.code().name
            with self.lock:
                d = self.details.setdefault(outcome, collections.Counter())
                if len(d) < 5 or e.details() in d:
                    d[(e.details() or "")[:160]] += 1
        except Exception as e:
            outcome = type(e).__name__
        with self.lock:
            call.t_done = time.monotonic()
            call.outcome = outcome
            if outcome != "SUCCESS":
                self.retries_owed += 1
            self.inflight -= 1
            if self.inflight == 0:
                self.idle.notify_all()

    def stop(self):
        """Stops sending and waits for every call in flight to be answered (at most the deadline)."""
        if self._stop.is_set():
            return 0
        self._stop.set()
        self._thread.join(5)
        with self.lock:
            self.idle.wait_for(lambda: self.inflight == 0, DEADLINE_S + 5)
            left = self.inflight
        self.channel.close()
        return left

    def snapshot(self):
        with self.lock:
            return list(self.calls)

    def first_success_after(self, t):
        """Answer time of the first call sent at or after t that was answered SUCCESS, or None."""
        best = None
        for c in self.snapshot():
            if c.t_sent >= t and c.ok and c.t_done is not None and (best is None or c.t_done < best):
                best = c.t_done
        return best


# ------------------------------------------------------------------ observation

class Sampler:
    """Once a second: penstock's /metrics (process_resident_memory_bytes, counters for the report), falling
    back to /proc/PID/status for the memory when /metrics does not answer."""

    NAMES = ("penstock_events_accepted_total", "penstock_events_published_total", "penstock_spool_records",
             "penstock_spool_appended_records_total", "penstock_spool_committed_records_total",
             "penstock_messages_dead_lettered_total",
             "penstock_queue_depth", "penstock_publish_given_up_events_total", "penstock_publish_errors_total",
             "penstock_messages_published_total")

    def __init__(self):
        self.proc = None
        self.peak_rss = 0
        self.samples = 0
        self.metric_errors = 0
        self.last = {}  # penstock name -> {metric: value}
        self.last_error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults-sampler", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self):
        p = self.proc
        if p is None or not p.running():
            return
        rss = None
        try:
            m = p.metrics(timeout=2)
            rss = m.value("process_resident_memory_bytes")
            self.last[p.name] = {n: m.total(n) for n in self.NAMES}
        except Exception as e:
            self.metric_errors += 1
            self.last_error = "%s: %s" % (type(e).__name__, str(e)[:200])
        if rss is None:
            rss = proc_rss(p.proc.pid)
        if rss is not None:
            self.samples += 1
            self.peak_rss = max(self.peak_rss, rss)

    def total(self, name):
        return sum(v.get(name, 0) for v in self.last.values())

    def latest(self, p, name):
        return self.last.get(p.name, {}).get(name, 0)

    def stop(self):
        self._stop.set()
        self._thread.join(5)


class ForwardIndex:
    """The event ids the HTTP target took (requests answered 2xx), with how many times each."""

    def __init__(self, recv):
        self.recv = recv
        self.pos = 0
        self.counts = collections.Counter()
        self.bad = 0
        self.lock = threading.Lock()

    def update(self):
        with self.lock:
            reqs = self.recv.snapshot()
            for r in reqs[self.pos:]:
                if r.status is None or not 200 <= r.status < 300:
                    continue
                try:
                    body = json.loads(r.body.decode("utf-8"))
                except ValueError:
                    self.bad += 1
                    continue
                for o in body if isinstance(body, list) else [body]:
                    self.counts[o.get("event_id") if isinstance(o, dict) else None] += 1
            self.pos = len(reqs)
            return self.counts


def landed_by_batch(ch, db, runid):
    """{batch index: (rows, distinct ids)} of the scenario's ids in db.events (ids are <runid>-<n>, batch
    index (n-1) // BATCH): a few thousand rows, cheap enough to poll every second."""
    sql = ("SELECT intDiv(toUInt64(substring(event_id, %d)) - 1, %d) AS b, count() AS r, uniqExact(event_id) AS u "
           "FROM %s.events WHERE event_id LIKE %s GROUP BY b FORMAT TSV"
           % (len(runid) + 2, BATCH, db, pstest.sql_str(runid + "-%")))
    out = {}
    for line in ch.query(sql, timeout=10).splitlines():
        b, r, u = line.split("\t")
        out[int(b)] = (int(r), int(u))
    return out


def queue_counts(names):
    """{queue: ready messages} of the queues that exist."""
    out = {}
    conn = pstest.amqp_connection()
    try:
        for n in names:
            ch = conn.channel()
            try:
                out[n] = ch.queue_declare(n, passive=True).method.message_count
                ch.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass
    finally:
        conn.close()
    return out


def queue_after_exit(name, limit_s=3.0):
    """(messages, consumers) of queue name once no consumer is left on it and the count held still for 0.2 s:
    RabbitMQ takes back what a closed connection held unacknowledged a moment after the close (at most
    limit_s)."""
    deadline = time.monotonic() + limit_s
    conn = pstest.amqp_connection()
    try:
        ch = conn.channel()
        last = None
        while True:
            m = ch.queue_declare(name, passive=True).method
            now = (m.message_count, m.consumer_count)
            if (now == last and not m.consumer_count) or time.monotonic() >= deadline:
                return now
            last = now
            time.sleep(0.2)
    finally:
        conn.close()


def purge_queues(names):
    for n in names:
        try:
            pstest.purge_queue(n)
        except Exception as e:
            log("purge %s: %s" % (n, e))


def delete_queues(names):
    conn = pstest.amqp_connection()
    try:
        for n in names:
            ch = conn.channel()
            try:
                ch.queue_delete(n)
                ch.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass
    finally:
        conn.close()


# ------------------------------------------------------------------ one scenario

class Scenario:
    def __init__(self, key, name, title, fault, logroot, tmproot, http=False, expected_dead_letters=None):
        self.key, self.name, self.title, self.fault = key, name, title, fault
        self.http = http
        self.expected_dead_letters = expected_dead_letters or {}
        self.logdir = os.path.join(logroot, "%s-%s" % (key, name))
        shutil.rmtree(self.logdir, True)
        os.makedirs(self.logdir)
        self.spool_dir = os.path.join(tmproot, "spool-" + key)
        self.data_dir = os.path.join(tmproot, "data-" + key)
        self.ch = pstest.ClickHouse()
        self.runid = pstest.new_id("f" + key)
        self.db = None
        self.procs = []
        self.intended_exit = set()
        self.problems = []
        self.notes = []
        self.result = {"key": key, "scenario": "%s %s" % (key, name), "title": title}
        self.recv = None
        self.fwd = None
        self.refuse = threading.Event()
        self.load = None
        self.sampler = None
        self.env = None
        self.fault_start = self.fault_end = None
        self.catch_series = []
        self._catch_stop = threading.Event()

    # -- penstock
    def start_penstock(self):
        p = pstest.Penstock(self.logdir, db=self.db, env=self.env, name="penstock-" + self.key)
        self.procs.append(p)  # before start: teardown kills it even when it never serves
        p.start(wait=True, timeout=30)
        if self.sampler:
            self.sampler.proc = p
        log("penstock %s serving (pid %d)" % (p.name, p.proc.pid))
        return p

    @property
    def penstock(self):
        return self.procs[-1]

    def ready(self, p=None, timeout=2):
        p = p or self.penstock
        try:
            return p.http("/ready", timeout=timeout).status == 200
        except Exception:
            return False

    def queues(self):
        if self.http:
            return ("grpc_clickhouse_event_q", HTTP_QUEUE)
        return DEFAULT_QUEUES

    def error_queues(self):
        return tuple(q + ".error" for q in self.queues()) + (SKIPPED_ERROR_QUEUE,)

    # -- phases
    def setup(self):
        purge_queues(self.queues() + self.error_queues() + ((HTTP_QUEUE, HTTP_QUEUE + ".error")
                                                             if not self.http else ()))
        self.db = self.ch.create_database("pstfault")
        self.ch.query(EVENTS_DDL % self.db)
        for d in (self.spool_dir, self.data_dir):
            shutil.rmtree(d, True)
            os.makedirs(d)
        self.env = {
            "PORT": pstest.free_port(),
            "GIN_PORT": pstest.free_port(),
            "SHUTDOWN_TIMEOUT_MS": SHUTDOWN_MS,
            "ACK_MODE": "confirmed",
            "SPOOL_DIR": self.spool_dir,
            "SPOOL_MAX_BYTES": SPOOL_MAX_BYTES,
            "SPOOL_FSYNC": "always",
            "DATA_DIR": self.data_dir,  # one for the scenario: the same across restarts
            "LOG_LEVEL": "info",
        }
        if self.http:
            self.recv = pstest.HttpReceiver()
            self.fwd = ForwardIndex(self.recv)
            self.recv.answer(503, match=lambda rec: self.refuse.is_set(), headers={"Retry-After": "1"},
                             body='{"error":"down for maintenance"}')
            path = os.path.join(self.logdir, "topology.yaml")
            with open(path, "w") as f:
                f.write(HTTP_TOPOLOGY % {"ch_url": pstest.CLICKHOUSE_URL, "db": self.db, "http_q": HTTP_QUEUE,
                                         "url": self.recv.url("/v1/events")})
            self.env["PENSTOCK_CONFIG"] = path
        self.sampler = Sampler()
        self.start_penstock()
        pstest.poll(lambda: self.ready(), 30, interval=0.2, what="/ready 200 after start")

    def run(self):
        t_start = time.monotonic()
        try:
            self.setup()
            self.load = LoadClient(self.penstock.port, self.runid, seed=ord(self.key)).start()
            log("%s: load started (%g batches/s of %d events), warming up %gs" % (self.key, RATE, BATCH, WARMUP_S))
            time.sleep(WARMUP_S)
            if not any(c.ok for c in self.load.snapshot()):
                raise AssertionError("no dispatch answered SUCCESS during the warm-up")
            self.fault_start = time.monotonic()
            log("%s: fault: %s" % (self.key, self.title))
            self.fault_end = self.fault(self)
            log("%s: fault over after %.1fs" % (self.key, self.fault_end - self.fault_start))
            catcher = threading.Thread(target=self._catch_up, name="faults-catchup", daemon=True)
            catcher.start()
            recover = self.measure_recovery()
            self.result["recover_s"] = recover
            rest = max(self.fault_end + AFTER_S, time.monotonic() + 5) - time.monotonic()
            if recover is None:
                rest = 2
            time.sleep(max(0, rest))
            left = self.load.stop()
            if left:
                self.problems.append("%d calls still unanswered %gs after the load stopped" % (left, DEADLINE_S + 5))
            log("%s: load stopped; waiting for the pipeline to settle (at most %gs)" % (self.key, SETTLE_S))
            self.settle()
            self._catch_stop.set()
            catcher.join(15)
            if not self.catch_series or self.catch_series[-1][2] < self.catch_series[-1][1]:
                want, got = self._pre_fault_landed()  # what landed between its last poll and now
                self.catch_series.append((time.monotonic(), want, got))
            self.collect()
        except Exception as e:
            self.problems.append("error: %s: %s" % (type(e).__name__, str(e).splitlines()[0][:300] if str(e) else ""))
            log("%s: ERROR\n%s" % (self.key, traceback.format_exc()))
            if self.load:
                self.load.stop()
            ensure_servers()
            self.refuse.clear()
        finally:
            self._catch_stop.set()
            self.teardown()
        self.result["seconds"] = round(time.monotonic() - t_start, 1)
        self.result["problems"] = self.problems
        self.result["notes"] = self.notes
        self.result["passed"] = not self.problems
        return self.result

    def measure_recovery(self):
        """Seconds from the fault's end until penstock serves again: /ready answers 200 and a call sent after
        the end was answered SUCCESS (None: not within RECOVER_LIMIT_S)."""
        end = self.fault_end
        deadline = end + RECOVER_LIMIT_S
        t_ready = None
        while time.monotonic() < deadline:
            if t_ready is None and self.ready(timeout=1):
                t_ready = time.monotonic()
            if t_ready is not None:
                t_ok = self.load.first_success_after(end)
                if t_ok is not None:
                    r = max(t_ready, t_ok) - end
                    log("%s: recovered %.1fs after the fault's end" % (self.key, r))
                    return round(r, 1)
            time.sleep(0.1)
        self.problems.append("not recovered %gs after the fault's end (/ready %s, no SUCCESS for a call sent after "
                             "it)" % (RECOVER_LIMIT_S, "200" if t_ready else "never 200"))
        return None

    def _pre_fault_acked(self):
        return [c for c in self.load.snapshot() if c.ok and c.t_sent <= self.fault_end]

    def _pre_fault_landed(self):
        """(events acknowledged for calls sent before the fault's end, how many of them reached the sink the
        fault was about: ClickHouse, or the HTTP target in d)."""
        calls = self._pre_fault_acked()
        if self.http:
            counts = self.fwd.update()
            ids = ["%s-%d" % (self.runid, c.first + k) for c in calls for k, t in enumerate(c.types) if t in FORWARDED]
            return len(ids), sum(1 for i in ids if counts.get(i))
        landed = landed_by_batch(self.ch, self.db, self.runid)
        return len(calls) * BATCH, sum(min(BATCH, landed.get(c.index, (0, 0))[1]) for c in calls)

    def _catch_up(self):
        """Polls, once a second from the fault's end until the pipeline settled, how much of what was acknowledged
        before the fault's end has landed: caught up = when that reached its final value (everything, or all that
        ever lands when some is lost)."""
        while not self._catch_stop.is_set():
            try:
                want, got = self._pre_fault_landed()
                self.catch_series.append((time.monotonic(), want, got))
                if got >= want:
                    log("%s: caught up %.1fs after the fault's end" % (self.key, time.monotonic() - self.fault_end))
                    return
            except Exception:
                pass  # ClickHouse just back: try again
            self._catch_stop.wait(1.0)

    def caught_up_s(self):
        if not self.catch_series:
            return None
        final = self.catch_series[-1][2]
        for t, _, got in self.catch_series:
            if got >= final:
                return round(max(0.0, t - self.fault_end), 1)
        return None

    def _acked(self):
        return [c for c in self.load.snapshot() if c.ok]

    def _idle(self):
        """Nothing left on the way: penstock's queue (and spool) empty, the consumed queues empty."""
        try:
            q = queue_counts(self.queues())
        except Exception:
            return False
        p = self.penstock
        self.sampler.sample()
        depth = self.sampler.latest(p, "penstock_queue_depth")
        spool = self.sampler.latest(p, "penstock_spool_records")
        return not any(q.values()) and not depth and not spool

    def settle(self):
        """Polls until every acknowledged id landed, or nothing landed for QUIET_S with the pipeline idle, or
        SETTLE_S passed."""
        acked = self._acked()
        want = len(acked) * BATCH
        fwd_want = None
        if self.http:
            fwd_want = {"%s-%d" % (self.runid, c.first + k) for c in acked for k, t in enumerate(c.types)
                        if t in FORWARDED}
        t0 = time.monotonic()
        last, last_change = None, t0
        while True:
            now = time.monotonic()
            got = None
            try:
                landed = landed_by_batch(self.ch, self.db, self.runid)
                got = sum(landed.get(c.index, (0, 0))[1] for c in acked)
            except Exception as e:
                log("%s: ClickHouse: %s" % (self.key, str(e)[:200]))
            fwd_done = True
            fwd_got = 0
            if fwd_want is not None:
                counts = self.fwd.update()
                fwd_got = sum(1 for i in fwd_want if counts.get(i))
                fwd_done = fwd_got == len(fwd_want)
            if got is not None and got >= want and fwd_done:
                break
            progress = (got, fwd_got)
            if progress != last:
                last, last_change = progress, now
            elif now - last_change >= QUIET_S and self._idle():
                log("%s: nothing landed for %gs and the pipeline is idle: settled short" % (self.key, QUIET_S))
                break
            if now - t0 >= SETTLE_S:
                log("%s: still not settled after %gs" % (self.key, SETTLE_S))
                break
            time.sleep(1.0)
        self.result["settle_s"] = round(time.monotonic() - t0, 1)

    def collect(self):
        calls = self.load.snapshot()
        acked = [c for c in calls if c.ok]
        landed = landed_by_batch(self.ch, self.db, self.runid)
        acked_idx = {c.index for c in acked}
        n_acked = len(acked) * BATCH
        n_landed = sum(landed.get(i, (0, 0))[1] for i in acked_idx)
        rows = sum(landed.get(i, (0, 0))[0] for i in acked_idx)
        lost = n_acked - n_landed
        outcomes = collections.Counter(c.outcome for c in calls)
        failed = [c.t_sent - self.fault_start for c in calls if not c.ok]
        r = self.result
        r.update(acknowledged=n_acked, landed=n_landed, duplicated=rows - n_landed, lost=lost,
                 calls=len(calls), outcomes=dict(outcomes),
                 failed_sent=[round(min(failed), 1), round(max(failed), 1)] if failed else None, retries=self.load.retries_sent,
                 skipped_ticks=self.load.skipped_ticks,
                 failure_details={k: dict(v.most_common(3)) for k, v in self.load.details.items()},
                 unacked_landed=sum(u for i, (_, u) in landed.items() if i not in acked_idx),
                 caught_up_s=self.caught_up_s(),
                 fault_s=round(self.fault_end - self.fault_start, 1))
        if len(acked) < 0.25 * WARMUP_S * RATE:
            self.problems.append("only %d calls acknowledged: the load did not get through" % len(acked))
        if lost:
            bad = sorted((c for c in acked if landed.get(c.index, (0, 0))[1] < BATCH), key=lambda c: c.t_sent)
            rel = [c.t_sent - self.fault_start for c in bad]
            self.problems.append("lost %d acknowledged events (%d of %d acknowledged batches incomplete, sent "
                                 "%+.1fs..%+.1fs from the fault's start; e.g. %s-%d)"
                                 % (lost, len(bad), len(acked), min(rel), max(rel), self.runid, bad[0].first))
        if self.http:
            counts = self.fwd.update()
            want = ["%s-%d" % (self.runid, c.first + k) for c in acked for k, t in enumerate(c.types)
                    if t in FORWARDED]
            got = sum(1 for i in want if counts.get(i))
            copies = sum(counts.get(i, 0) for i in want)
            reqs = self.recv.snapshot()
            r["http"] = {"acknowledged": len(want), "received": got, "duplicated": copies - got,
                         "lost": len(want) - got, "requests": len(reqs),
                         "answered_503": sum(1 for q in reqs if q.status == 503)}
            if len(want) - got:
                self.problems.append("HTTP target: %d of %d acknowledged %s events never arrived"
                                     % (len(want) - got, len(want), "/".join(sorted(FORWARDED.values()))))
            if not r["http"]["answered_503"]:
                self.problems.append("the HTTP target never answered 503: the fault did not happen")
        try:
            dl = queue_counts(self.error_queues())
        except Exception as e:
            dl = {}
            self.problems.append("cannot read the dead-letter queues: %s" % e)
        r["dead_letters"] = sum(dl.values())
        for q, n in sorted(dl.items()):
            exp = self.expected_dead_letters.get(q, 0)
            if n != exp:
                self.problems.append("%d dead letters in %s (expected %d)" % (n, q, exp))
        # Counters of every penstock of the scenario (each one's last scrape, at most a second before it ended).
        self.sampler.sample()
        r["metrics"] = {n.replace("penstock_", ""): int(self.sampler.total(n)) for n in Sampler.NAMES
                        if n not in ("penstock_queue_depth", "penstock_spool_records")}
        r["metrics"]["spool_records_at_end"] = int(self.sampler.latest(self.penstock, "penstock_spool_records"))
        r["peak_rss_mb"] = round(self.sampler.peak_rss / 1048576.0, 1)
        r["rss_samples"] = self.sampler.samples
        if not self.sampler.samples:
            self.problems.append("no memory sample of penstock")
        elif r["peak_rss_mb"] > RSS_LIMIT_MB:
            self.problems.append("penstock's resident memory peaked at %.0f MB (limit %g MB)"
                                 % (r["peak_rss_mb"], RSS_LIMIT_MB))
        if self.sampler.metric_errors:
            self.notes.append("%d /metrics scrapes failed (last: %s)" % (self.sampler.metric_errors,
                                                                       self.sampler.last_error))
        for p in self.procs:
            if p not in self.intended_exit and not p.running():
                self.problems.append("%s exited by itself with %s; stderr tail:\n%s"
                                     % (p.name, p.proc.returncode, p.stderr_tail(15)))

    def teardown(self):
        if self.load:
            self.load.stop()
        p = self.procs[-1] if self.procs else None
        if p is not None and p.running():
            try:
                took = p.stop(expect_rc=None)
                if p.returncode != 0:
                    self.problems.append("%s exited %s at the final SIGTERM" % (p.name, p.returncode))
                else:
                    self.notes.append("final stop: exit 0 in %.1fs" % took)
            except AssertionError as e:
                self.problems.append(str(e).splitlines()[0])
        for q in self.procs:
            q.kill()
            try:
                q.check_sanitizers()
            except AssertionError as e:
                self.problems.append(str(e).splitlines()[0])
        if self.sampler:
            self.sampler.stop()
        if self.recv:
            self.recv.close()
        try:
            if self.http:
                delete_queues((HTTP_QUEUE, HTTP_QUEUE + ".error"))
            purge_queues(self.queues() + self.error_queues())
        except Exception as e:
            log("%s: cleaning the queues: %s" % (self.key, e))
        if self.db and os.environ.get("PS_FAULT_KEEP") != "1":
            try:
                self.ch.drop_database(self.db)
            except Exception as e:
                log("%s: drop %s: %s" % (self.key, self.db, e))


# ------------------------------------------------------------------ the faults

def wait_outage(s, what):
    log("%s: %s for %gs" % (s.key, what, OUTAGE_S))
    time.sleep(OUTAGE_S)


def fault_rabbitmq_restart(s):
    servers("stop-rabbitmq")
    servers("start-rabbitmq")
    return time.monotonic()


def fault_rabbitmq_down(s):
    servers("stop-rabbitmq")
    wait_outage(s, "RabbitMQ down")
    servers("start-rabbitmq")
    return time.monotonic()


def fault_clickhouse_down(s):
    # ClickHouse 18.16 keeps serving its open keep-alive connections for a while after SIGTERM, and under load
    # its shutdown can take a minute: scripts/servers kills it after STOP_WAIT_S.
    servers("stop-clickhouse", wait_s=STOP_WAIT_S)
    wait_outage(s, "ClickHouse down")
    servers("start-clickhouse")
    return time.monotonic()


def fault_http_503(s):
    s.refuse.set()
    wait_outage(s, "HTTP target answering 503")
    s.refuse.clear()
    return time.monotonic()


def restart_after(s, sig, after_exit=None):
    """Stops penstock with sig (SIGTERM: it must exit 0 within SHUTDOWN_TIMEOUT_MS + 5 s) and starts it again
    with the same environment; after_exit(old), when given, runs between the two."""
    old = s.penstock
    s.intended_exit.add(old)
    s.sampler.sample()  # its counters as close to its end as possible
    t = time.monotonic()
    if sig == signal.SIGKILL:
        old.kill()
        log("%s: %s killed" % (s.key, old.name))
    else:
        old.signal(sig)
        rc = old.wait_exit(old.shutdown_ms / 1000.0 + 5)
        if rc is None:
            old.kill()
            s.problems.append("%s did not exit within SHUTDOWN_TIMEOUT_MS + 5 s of SIGTERM" % old.name)
        elif rc != 0:
            s.problems.append("%s exited %s after SIGTERM under load (expected 0); stderr tail:\n%s"
                              % (old.name, rc, old.stderr_tail(15)))
        s.result["sigterm_exit_s"] = round(time.monotonic() - t, 1)
        s.notes.append("SIGTERM: %s drained and exited %s in %.1fs" % (old.name, rc, time.monotonic() - t))
        log("%s: %s exited %s after %.1fs" % (s.key, old.name, rc, time.monotonic() - t))
    end = time.monotonic()
    if after_exit:
        after_exit(old)
    s.start_penstock()
    return end


def fault_sigkill_broker_down(s):
    """RabbitMQ stops; what is acknowledged now can only be in penstock (the spool, with ACK_MODE=confirmed);
    penstock is killed and started again, still without RabbitMQ; then RabbitMQ comes back and the spool
    must be replayed."""
    servers("stop-rabbitmq")
    log("%s: RabbitMQ down, load for %gs" % (s.key, KILL_HOLD_S))
    time.sleep(KILL_HOLD_S)
    restart_after(s, signal.SIGKILL)
    log("%s: RabbitMQ still down, load for %gs" % (s.key, KILL_HOLD_S))
    time.sleep(KILL_HOLD_S)
    servers("start-rabbitmq")
    return time.monotonic()


def fault_sigterm_clickhouse_down(s):
    """ClickHouse stops; the consumers of EVENTS_QUEUE take what their prefetch allows and cannot insert it;
    penstock gets SIGTERM: at the shutdown deadline they must give those inserts up and leave the messages
    unacknowledged (RabbitMQ takes them back), and penstock must exit 0. It is started again at once, still
    without ClickHouse; then ClickHouse comes back and RabbitMQ's redeliveries must land. Acknowledging a
    message whose insert failed loses its events (lost > 0: the check that catches it; the count below only
    shows that the shutdown had work to give up).

    How many messages the consumers held is measured without the management plugin: nothing leaves
    EVENTS_QUEUE while ClickHouse is down, so what its consumers held unacknowledged at the SIGTERM is what is
    in it after the exit, minus what was ready in it before the SIGTERM, minus what penstock published (every
    message of the event exchange reaches it) from then until its exit."""
    servers("stop-clickhouse", wait_s=STOP_WAIT_S)
    log("%s: ClickHouse down, load for %gs" % (s.key, KILL_HOLD_S))
    time.sleep(KILL_HOLD_S)
    old = s.penstock
    published = old.metrics(timeout=2).total("penstock_messages_published_total")
    ready = queue_counts((EVENTS_QUEUE,))[EVENTS_QUEUE]
    held = {"ready_before_sigterm": ready}

    def count(p):
        # p's last scrape: at most a second before its exit, long after its last publish (its consumers
        # waited for the deadline).
        held["published_after"] = int(s.sampler.latest(p, "penstock_messages_published_total") - published)
        held["queued_after_exit"], consumers = queue_after_exit(EVENTS_QUEUE)
        held["held_at_sigterm"] = held["queued_after_exit"] - ready - held["published_after"]
        log("%s: %s after the exit: %d messages (%d ready before the SIGTERM, %d published after it): "
            "%d were held unacknowledged" % (s.key, EVENTS_QUEUE, held["queued_after_exit"], ready,
                                             held["published_after"], held["held_at_sigterm"]))
        if consumers:
            s.problems.append("%d consumers still on %s 3 s after %s exited" % (consumers, EVENTS_QUEUE, p.name))
        gave_up = [line for line in p.stderr_text().splitlines()
                   if "stopped before its last batch landed" in line and EVENTS_QUEUE in line]
        held["gave_up_warnings"] = len(gave_up)
        if not gave_up:
            s.problems.append("%s did not log that the consumers of %s gave up their last batch at the deadline"
                              % (p.name, EVENTS_QUEUE))
        if held["queued_after_exit"] <= 0 or held["held_at_sigterm"] <= 0:
            s.problems.append("%s held no unacknowledged message of %s at the SIGTERM (%d in it after the exit, "
                              "%d ready before, %d published since): the shutdown had nothing to give up (or "
                              "acknowledged all of it)"
                              % (p.name, EVENTS_QUEUE, held["queued_after_exit"], ready, held["published_after"]))
        s.notes.append("%s right after the SIGTERM exit: %d messages, %d of them held unacknowledged by %s's "
                       "consumers (the others: %d ready before the SIGTERM, %d published while it drained)"
                       % (EVENTS_QUEUE, held["queued_after_exit"], held["held_at_sigterm"], p.name, ready,
                          held["published_after"]))

    s.result["held"] = held
    restart_after(s, signal.SIGTERM, after_exit=count)
    log("%s: ClickHouse still down, load for %gs" % (s.key, KILL_HOLD_S))
    time.sleep(KILL_HOLD_S)
    servers("start-clickhouse")
    return time.monotonic()


SCENARIOS = (
    ("a", "rabbitmq-restart", "RabbitMQ restarts", fault_rabbitmq_restart, {}),
    ("b", "rabbitmq-down", "RabbitMQ is down for %gs" % OUTAGE_S, fault_rabbitmq_down, {}),
    ("c", "clickhouse-down", "ClickHouse is down for %gs" % OUTAGE_S, fault_clickhouse_down, {}),
    ("d", "http-503", "the HTTP target answers 503 for %gs" % OUTAGE_S, fault_http_503, {"http": True}),
    ("e", "sigterm-restart", "penstock gets SIGTERM under load and is started again",
     lambda s: restart_after(s, signal.SIGTERM), {}),
    ("f", "sigkill-restart", "penstock gets SIGKILL under load and is started again (spool replay)",
     lambda s: restart_after(s, signal.SIGKILL), {}),
    ("g", "sigkill-broker-down", "penstock gets SIGKILL under load while RabbitMQ is down, is started again "
     "(still down), then RabbitMQ returns (spool replay)", fault_sigkill_broker_down, {}),
    ("h", "sigterm-clickhouse-down", "penstock gets SIGTERM under load while ClickHouse is down, is started "
     "again (still down), then ClickHouse returns (redelivery)", fault_sigterm_clickhouse_down, {}),
)


# ------------------------------------------------------------------ report

def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.*f" % (nd, v)
    return str(v)


def print_table(results):
    cols = (("scenario", "scenario", "<"), ("acknowledged", "acknowledged", ">"), ("landed", "landed", ">"),
            ("duplicated", "duplicated", ">"), ("lost", "lost", ">"), ("recover_s", "recover s", ">"),
            ("caught_up_s", "caught up s", ">"), ("peak_rss_mb", "peak RSS MB", ">"),
            ("dead_letters", "dead letters", ">"), ("passed", "result", "<"))
    rows = []
    for r in results:
        row = []
        for key, _, _ in cols:
            v = r.get(key)
            if key == "passed":
                v = "PASS" if v else "FAIL"
            row.append(fmt(v))
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, (_, h, _) in enumerate(cols)]

    def line(vals):
        return "  ".join(("%-*s" if cols[i][2] == "<" else "%*s") % (widths[i], v) for i, v in enumerate(vals))

    print()
    print("==== fault injection: %g batches/s x %d events, outages %gs, RSS limit %g MB"
          % (RATE, BATCH, OUTAGE_S, RSS_LIMIT_MB))
    print(line([h for _, h, _ in cols]))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))
    print()
    for r in results:
        m = r.get("metrics", {})
        print("%s: %s (%.0fs)" % (r["scenario"], r["title"], r.get("seconds", 0)))
        if "calls" in r:
            print("    calls %d: %s%s; re-sent %d; unacknowledged events that landed anyway %d; fault lasted %ss; "
                  "settled in %ss" % (r["calls"], ", ".join("%s %d" % kv for kv in sorted(r["outcomes"].items())),
                                      " (failed ones sent %+.1fs..%+.1fs from the fault's start)" % tuple(r["failed_sent"])
                                      if r.get("failed_sent") else "",
                                      r["retries"], r["unacked_landed"], r.get("fault_s"), r.get("settle_s")))
        for code, ds in sorted(r.get("failure_details", {}).items()):
            print("    %s: %s" % (code, "; ".join("%r x%d" % kv for kv in ds.items())))
        if m:
            print("    metrics: accepted %d, published %d, publish errors %d, given up %d, spool appended %d, "
                  "spool committed %d, spool records at end %d, dead-lettered %d"
                  % (m.get("events_accepted_total", 0), m.get("events_published_total", 0),
                     m.get("publish_errors_total", 0), m.get("publish_given_up_events_total", 0),
                     m.get("spool_appended_records_total", 0), m.get("spool_committed_records_total", 0),
                     m.get("spool_records_at_end", 0), m.get("messages_dead_lettered_total", 0)))
        if "http" in r:
            h = r["http"]
            print("    HTTP target: acknowledged %d, received %d, duplicated %d, lost %d (%d requests, %d answered 503)"
                  % (h["acknowledged"], h["received"], h["duplicated"], h["lost"], h["requests"], h["answered_503"]))
        for n in r.get("notes", []):
            print("    note: " + n)
        for p in r.get("problems", []):
            print("    FAIL: " + p.replace("\n", "\n          "))
    print(flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=os.environ.get("PS_FAULT_ONLY", ""),
                    help="comma-separated scenario letters (default: all)")
    ap.add_argument("--results", help="write the results as JSON to this file (after every scenario)")
    args = ap.parse_args()
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - {s[0] for s in SCENARIOS}
    if unknown:
        ap.error("unknown scenario(s): %s" % ", ".join(sorted(unknown)))
    chosen = [s for s in SCENARIOS if not only or s[0] in only]
    if not os.access(pstest.PENSTOCK_BIN, os.X_OK):
        ap.error("penstock binary not found or not executable: %s (set PENSTOCK_BIN)" % pstest.PENSTOCK_BIN)
    logroot = os.environ.get("PS_FAULT_LOG_DIR") or tempfile.mkdtemp(prefix="penstock-faults-")
    os.makedirs(logroot, exist_ok=True)
    tmproot = tempfile.mkdtemp(prefix="penstock-faults-spool-")
    log("penstock %s; RabbitMQ %s; ClickHouse %s; logs in %s"
        % (pstest.PENSTOCK_BIN, pstest.RABBITMQ_URL, pstest.CLICKHOUSE_URL, logroot))
    # `timeout` (tests/faults/run) ends the suite with SIGTERM: stop the scenario under way (its teardown stops
    # penstock) and print what was measured so far.
    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    results = []
    state = {"planned": [s[0] for s in chosen], "results": results}

    def save():
        if args.results:
            with open(args.results + ".tmp", "w") as f:
                json.dump(state, f, indent=1)
            os.replace(args.results + ".tmp", args.results)

    save()
    try:
        for key, name, title, fault, kw in chosen:
            log("==== %s %s: %s" % (key, name, title))
            r = Scenario(key, name, title, fault, logroot, tmproot, **kw).run()
            results.append(r)
            save()
            log("==== %s %s: %s in %.0fs (acknowledged %s, landed %s, duplicated %s, lost %s)"
                % (key, name, "PASS" if r["passed"] else "FAIL", r["seconds"], r.get("acknowledged"),
                   r.get("landed"), r.get("duplicated"), r.get("lost")))
    finally:
        shutil.rmtree(tmproot, True)
        print_table(results)
    return 0 if len(results) == len(chosen) and all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
