"""Nothing lost between dispatch and RabbitMQ: ACK_MODE, publisher confirms, the spool and its replay.

Against the real RabbitMQ of the test run; "unreachable" is a closed port, so the same spool directory can be
replayed by a second penstock pointed at the real one. The fault-injection suite (tests/faults) restarts
and stops the servers themselves under load.
"""

import glob
import os
import time

import grpc
import pika
import pytest

import pstest
from pstest import pb

SKIPPED_QUEUE = "grpc_event_skipped.error"


def closed_url():
    return "amqp://guest:guest@127.0.0.1:%d/" % pstest.free_port()


def batches(runid, n, size=5):
    f = pstest.EventFactory(runid)
    return [f.batch([f.types[(k * size + i) % len(f.types)] for i in range(size)], tag="%s-b%d" % (runid, k))[0]
            for k in range(n)]


def ids_of(bs):
    return {e.id for b in bs for e in b.events}


def ids_in(msgs):
    """Event ids in the proto3-JSON Events bodies of [(method, props, body)]."""
    import json
    out = []
    for _, _, body in msgs:
        out.extend(e["id"] for e in json.loads(body)["events"])
    return out


def segments(spool_dir):
    return sorted(glob.glob(os.path.join(spool_dir, "*.seg")))


# ------------------------------------------------------------------ the spool

def test_unreachable_rabbitmq_spools_then_a_restart_replays_everything(penstock_proc, tmp_path):
    """ACK_MODE=confirmed with RabbitMQ unreachable: every call is answered SUCCESS once its messages are in
    the spool (fsync'ed), which holds one record per message. A penstock started later on the same spool
    with RabbitMQ reachable publishes every record (each event once) and deletes the segments."""
    spool = str(tmp_path / "spool")
    runid = pstest.new_id("sp")
    bs = batches(runid, 8)
    first = penstock_proc(env={"RABBITMQ_URL": closed_url(), "SPOOL_DIR": spool, "CONSUMERS_PER_QUEUE": 0})
    for b in bs:
        assert first.dispatch(b, timeout=10).status == "SUCCESS"
    m = first.metrics()
    groups = sum(len({e.WhichOneof(pstest.event_oneof().name) for e in b.events}) for b in bs)
    assert m.value("penstock_messages_spooled_total") == groups, "one spool record per message"
    assert m.value("penstock_events_spooled_total") == sum(len(b.events) for b in bs)
    assert m.value("penstock_spool_records") == groups
    assert m.value("penstock_events_published_total") == 0
    assert m.value("penstock_events_accepted_total") == sum(len(b.events) for b in bs)
    first.stop()
    assert segments(spool), "no segment file in %s" % spool

    q = pstest.TestQueue()
    try:
        second = penstock_proc(env={"SPOOL_DIR": spool, "CONSUMERS_PER_QUEUE": 0}, name="replay")
        pstest.poll(lambda: second.metrics().value("penstock_spool_records") == 0, 30, what="the spool replayed")
        msgs = q.drain(until=lambda ms: len(ids_in(ms)) >= len(ids_of(bs)), timeout=30)
        got = ids_in(msgs)
        assert sorted(got) == sorted(ids_of(bs)), "replayed ids differ: %d of %d, %d duplicates" % (
            len(set(got) & ids_of(bs)), len(ids_of(bs)), len(got) - len(set(got)))
        m2 = second.metrics()
        assert m2.value("penstock_spool_replayed_messages_total") == groups
        assert m2.value("penstock_events_published_total") == len(ids_of(bs)), "replayed events count as published"
        pstest.poll(lambda: not segments(spool), 10, what="the replayed segments deleted")
        second.stop()
    finally:
        q.close()


def test_a_full_spool_answers_unavailable_not_stored(penstock_proc, tmp_path):
    """RabbitMQ unreachable and a spool too small for the next batch: the call is refused UNAVAILABLE
    "not stored" (counted reason=unstored), and the process keeps serving."""
    p = penstock_proc(env={"RABBITMQ_URL": closed_url(), "SPOOL_DIR": str(tmp_path / "spool"),
                           "SPOOL_MAX_BYTES": 6000, "CONSUMERS_PER_QUEUE": 0, "SHUTDOWN_TIMEOUT_MS": 2000})
    runid = pstest.new_id("full")
    accepted = refused = 0
    for b in batches(runid, 30, size=10):
        try:
            assert p.dispatch(b, timeout=10).status == "SUCCESS"
            accepted += 1
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, "%s %s" % (e.code(), e.details())
            assert "not stored" in e.details() and "spool is full" in e.details(), e.details()
            refused += 1
    assert accepted >= 1 and refused >= 1, "accepted %d, refused %d" % (accepted, refused)
    m = p.metrics()
    assert m.value("penstock_batches_rejected_total", reason="unstored") == refused
    assert m.value("penstock_spool_full_total") >= refused
    assert m.value("penstock_spool_bytes") <= 6000
    assert p.health() == pstest.SERVING
    p.stop()


@pytest.mark.parametrize("mode", ["confirmed", "enqueued"])
def test_without_a_spool_ack_mode_decides_when_the_client_hears(penstock_proc, mode):
    """SPOOL_MAX_BYTES=0 and RabbitMQ unreachable: with confirmed, a call is not answered SUCCESS (its
    deadline passes: nothing confirmed it), and at SIGTERM its batch is answered UNAVAILABLE, so nothing a
    client was told is accepted is lost: exit 0. With enqueued it is answered at once, as the original did,
    and at SIGTERM what could not be published is given up, logged and counted, and the exit code is 1."""
    p = penstock_proc(env={"RABBITMQ_URL": closed_url(), "SPOOL_MAX_BYTES": 0, "ACK_MODE": mode,
                           "CONSUMERS_PER_QUEUE": 0, "SHUTDOWN_TIMEOUT_MS": 1500})
    b = batches(pstest.new_id("ns"), 1)[0]
    if mode == "confirmed":
        with pytest.raises(grpc.RpcError) as ei:
            p.dispatch(b, timeout=1.5)
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ei.value
        assert p.metrics().value("penstock_events_accepted_total") == 0
    else:
        assert p.dispatch(b, timeout=1.5).status == "SUCCESS"
        assert p.metrics().value("penstock_events_accepted_total") == len(b.events)
    if mode == "confirmed":
        p.stop(expect_rc=0)
        assert "events not delivered" not in p.stderr_text()
        assert "code=UNAVAILABLE" in p.stderr_text(), "the waiting call answered at shutdown"
    else:
        p.stop(expect_rc=1)
        assert "events not delivered" in p.stderr_text()


def test_corrupt_spool_tail_is_skipped_counted_and_the_rest_replayed(penstock_proc, tmp_path):
    """A segment whose last record is torn (a crash mid-write) and garbage after it: at start the good
    records are replayed, the bad tail is reported (log names the file) and counted, and new appends work."""
    spool = str(tmp_path / "spool")
    runid = pstest.new_id("tc")
    bs = batches(runid, 6, size=1)  # one message per batch
    first = penstock_proc(env={"RABBITMQ_URL": closed_url(), "SPOOL_DIR": spool, "CONSUMERS_PER_QUEUE": 0})
    for b in bs:
        assert first.dispatch(b).status == "SUCCESS"
    first.stop()
    seg = segments(spool)[-1]
    size = os.path.getsize(seg)
    with open(seg, "r+b") as fh:  # tear the last record: cut its last 7 bytes
        fh.truncate(size - 7)
    q = pstest.TestQueue()
    try:
        second = penstock_proc(env={"SPOOL_DIR": spool, "CONSUMERS_PER_QUEUE": 0}, name="after-crash")
        msgs = q.drain(until=lambda ms: len(ids_in(ms)) >= len(bs) - 1, timeout=30)
        got = ids_in(msgs)
        want = [e.id for b in bs[:-1] for e in b.events]
        assert sorted(got) == sorted(want), "replayed %s, want every record before the torn one" % got
        m = second.metrics()
        assert m.value("penstock_spool_corrupt_total") == 1
        assert os.path.basename(seg) in second.stderr_text(), "the log names the damaged segment"
        # The spool still works: this one is published at once (RabbitMQ is up), nothing else is spooled.
        assert second.dispatch(batches(runid + "-new", 1)[0]).status == "SUCCESS"
        second.stop()
    finally:
        q.close()


def test_two_penstocks_cannot_share_a_spool(penstock_proc, tmp_path):
    spool = str(tmp_path / "spool")
    first = penstock_proc(env={"SPOOL_DIR": spool, "CONSUMERS_PER_QUEUE": 0})
    second = penstock_proc(env={"SPOOL_DIR": spool, "CONSUMERS_PER_QUEUE": 0}, wait=False, name="second")
    rc = second.wait_exit(20)
    assert rc == 1, "second penstock on one spool: exit %s; stderr:\n%s" % (rc, second.stderr_tail())
    assert spool in second.stderr_text()
    assert first.health() == pstest.SERVING
    first.stop()


# -------------------------------------------------------- confirms, returns

def test_unroutable_messages_are_dead_lettered_not_dropped(penstock_proc, tmp_path, db):
    """A topology that binds only ClickEvent: a batch with a click and a launch is answered SUCCESS, the click
    reaches its queue, the launch (no queue for it; published mandatory) comes back and is dead-lettered to
    grpc_event_skipped.error with the reason."""
    tag = pstest.new_id("ur")
    ex, dlx, clicks = tag + ".tx", tag + ".dx", tag + ".clicks"
    path = tmp_path / "topology.yaml"
    path.write_text('''\
event_exchange: "%s"
dead_letter_exchange: "%s"
clickhouse_connections:
  - {name: test, url: "%s", database: "%s"}
queues:
  - {name: "%s"}
bindings:
  - {queue: "%s", key: ClickEvent}
consumers: []
''' % (ex, dlx, pstest.CLICKHOUSE_URL, db, clicks, clicks))
    conn = pstest.amqp_connection()
    ch = conn.channel()
    try:
        p = penstock_proc(env={"PENSTOCK_CONFIG": str(path)})
        b = pb.Events(header=pb.Header(sessionId=tag))
        b.events.add(id=tag + "-click", timestamp="1700000000").clickEvent.page = "p"
        b.events.add(id=tag + "-launch", timestamp="1700000000").launchEvent.SetInParent()
        assert p.dispatch(b).status == "SUCCESS"
        got = pstest.get_messages(ch, clicks, 1)
        assert len(got) == 1 and tag + "-click" in got[0][1].decode()
        letters = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not letters:
            letters = [(pr, body) for pr, body in pstest.get_messages(ch, SKIPPED_QUEUE, 50, timeout=1)
                       if tag.encode() in body]
        assert len(letters) == 1, "the launch event's dead letter in %s" % SKIPPED_QUEUE
        props, body = letters[0]
        h = props.headers or {}
        assert h.get("x-penstock-reason", "").startswith("unroutable"), h
        assert h.get("x-penstock-routing-key") == "LaunchEvent", h
        assert tag + "-launch" in body.decode()
        m = p.metrics()
        assert m.value("penstock_messages_returned_total") == 1
        assert m.value("penstock_events_published_total") == 1, "only the routed click counts as published"
        p.stop()
    finally:
        for name in (clicks, clicks + ".error"):
            try:
                ch.queue_delete(name)
            except pika.exceptions.ChannelClosedByBroker:
                ch = conn.channel()
        for x in (ex, dlx):
            try:
                ch.exchange_delete(x)
            except pika.exceptions.ChannelClosedByBroker:
                ch = conn.channel()
        conn.close()


def test_confirmed_success_means_published(penstock_proc):
    """In the default ACK_MODE=confirmed, at every moment the events answered SUCCESS are at most those
    RabbitMQ confirmed (published) plus those spooled; the window of unconfirmed messages ends empty."""
    q = pstest.TestQueue()
    try:
        p = penstock_proc(env={"CONSUMERS_PER_QUEUE": 0})
        bs = batches(pstest.new_id("cs"), 40, size=20)
        for b in bs:
            assert p.dispatch(b).status == "SUCCESS"
            m = p.metrics()
            assert m.value("penstock_events_accepted_total") <= (
                m.value("penstock_events_published_total") + m.value("penstock_events_spooled_total"))
        m = p.metrics()
        assert m.value("penstock_events_published_total") == m.value("penstock_events_accepted_total") == 800
        assert m.value("penstock_publish_unconfirmed") == 0
        assert sorted(ids_in(q.drain(until=lambda ms: len(ids_in(ms)) >= 800))) == sorted(ids_of(bs))
        p.stop()
    finally:
        q.close()


@pytest.mark.parametrize("var,value", [("ACK_MODE", "maybe"), ("SPOOL_FSYNC", "sometimes"),
                                       ("PUBLISH_CONFIRM_WINDOW", "0"), ("SPOOL_MAX_BYTES", "lots"),
                                       ("PUBLISH_CONFIRM_WINDOW_BYTES", "-1"), ("PUBLISH_CONFIRM_WINDOW_BYTES", "8X")])
def test_invalid_delivery_settings_stop_startup(penstock_proc, var, value):
    p = penstock_proc(env={var: value}, wait=False)
    rc = p.wait_exit(10)
    assert rc == 2, "%s=%s: exit %s" % (var, value, rc)
    assert var in p.stderr_text()


def test_a_queue_full_for_dispatch_timeout_overflows_into_the_spool(penstock_proc):
    """RabbitMQ reachable but slower than ingest (one worker, one unconfirmed message at a time, a queue of one
    batch, no wait for room): calls that find the queue full are spooled and answered SUCCESS, not refused;
    the replay publishes them, and every event reaches the exchange."""
    q = pstest.TestQueue()
    try:
        p = penstock_proc(env={"CONSUMERS_PER_QUEUE": 0, "EVENT_BUFFERED_CHANNEL_SIZE": 1,
                               "EVENT_WORKER_POOL_SIZE": 1, "PUBLISH_CONFIRM_WINDOW": 1, "DISPATCH_TIMEOUT_MS": 0})
        bs = batches(pstest.new_id("of"), 120, size=10)
        stub = pstest.dispatch_stub(p.channel)
        futures = [stub.future(b, timeout=30) for b in bs]
        for f in futures:
            assert f.result().status == "SUCCESS"
        m = p.metrics()
        assert m.value("penstock_events_spooled_total") > 0, "no call overflowed into the spool"
        assert m.value("penstock_batches_rejected_total", reason="queue_full") == 0
        got = ids_in(q.drain(until=lambda ms: len(set(ids_in(ms))) >= len(ids_of(bs)), timeout=60))
        assert set(got) == ids_of(bs), "%d of %d events reached the exchange" % (len(set(got)), len(ids_of(bs)))
        pstest.poll(lambda: p.metrics().value("penstock_spool_records") == 0, 20, what="the spool replayed")
        p.stop()
    finally:
        q.close()
