"""Every bad input of dispatch gets its status, nothing of it is published, and penstock serves afterwards.

One penstock (GRPC_MAX_RECV_BYTES=65536) takes all the bad calls of this module in order; the last test
checks it is still healthy and that good events still land. A second penstock, whose RabbitMQ is
unreachable, fills its queue to test "queue full" and deadlines.
"""

import time

import grpc
import pytest

import pstest
from pstest import pb

SKIPPED_QUEUE = "grpc_event_skipped.error"

MAX_RECV = 65536


@pytest.fixture(scope="module")
def runid():
    return pstest.new_id("bad")


@pytest.fixture(scope="module")
def queue():
    q = pstest.TestQueue()
    yield q
    q.close()


@pytest.fixture(scope="module")
def server(logdir, db, queue, request):
    p = pstest.Penstock(logdir, db=db, env={"GRPC_MAX_RECV_BYTES": MAX_RECV}, name="bad-input")
    p.start()
    yield p
    if p.running():
        try:
            p.stop()
        finally:
            p.kill()


@pytest.fixture
def show_log(request, server):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print("\n---- %s stderr (tail) ----\n%s" % (server.name, server.stderr_tail(40)))


def good_events(runid, n, tag):
    f = pstest.EventFactory("%s-%s" % (runid, tag))
    b, _ = f.batch([f.types[i % len(f.types)] for i in range(n)])
    return b


def assert_status(server, data, code):
    with pytest.raises(grpc.RpcError) as ei:
        server.dispatch_raw(data)
    assert ei.value.code() == code, "got %s (%s), want %s" % (ei.value.code(), ei.value.details(), code)
    return ei.value.details()


def header_bytes(**fields):
    return pb.Header(**fields).SerializeToString()


HDR = pstest.field_number(pb.Events, "header")
EVS = pstest.field_number(pb.Events, "events")
SESSION = pstest.field_number(pb.Header, "sessionId")
EV_ID = pstest.field_number(pb.Event, "id")


def invalid_inputs(runid):
    """(name, bytes) of requests that are not a valid proto3 Events."""
    good = good_events(runid, 3, "cut").SerializeToString()
    cut = good[:-3]
    try:
        pb.Events.FromString(cut)
        raise AssertionError("the truncated request parses in Python: pick another cut")
    except Exception as e:  # DecodeError
        if isinstance(e, AssertionError):
            raise
    click = pstest.field_number(pb.Event, "clickEvent")
    page = pstest.field_number(pb.ClickEvent, "page")
    hdr = pstest.field_bytes(HDR, header_bytes(sessionId="s", os="android"))
    return [
        ("garbage", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
        ("bad wire type", b"\x07\x00\x00"),
        ("length past end", pstest.field_bytes(HDR, b"")[:1] + b"\x7f" + b"abc"),
        ("truncated", cut),
        ("invalid UTF-8 in header.sessionId", pstest.field_bytes(HDR, pstest.field_bytes(SESSION, b"\xff\xfe"))
         + pstest.field_bytes(EVS, good_events(runid, 1, "u1").events[0].SerializeToString())),
        ("invalid UTF-8 in event id", hdr + pstest.field_bytes(EVS, pstest.field_bytes(EV_ID, b"id-\xc3\x28"))),
        ("invalid UTF-8 in payload string", hdr + pstest.field_bytes(
            EVS, pstest.field_bytes(EV_ID, ("%s-utf8payload" % runid).encode())
            + pstest.field_bytes(click, pstest.field_bytes(page, b"\xed\xa0\x80surrogate")))),
    ]


def test_invalid_bytes_are_invalid_argument(server, queue, runid, show_log):
    for name, data in invalid_inputs(runid):
        with pytest.raises(grpc.RpcError) as ei:
            server.dispatch_raw(data)
        e = ei.value
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, "%s: got %s (%s)" % (name, e.code(), e.details())
        assert e.details(), "%s: INVALID_ARGUMENT without a message" % name


def test_no_header_is_invalid_argument(server, runid, show_log):
    b = good_events(runid, 2, "nohdr")
    b.ClearField("header")
    for data in (b.SerializeToString(), b""):
        details = assert_status(server, data, grpc.StatusCode.INVALID_ARGUMENT)
        assert details, "no message with INVALID_ARGUMENT"


def test_empty_events_is_success(server, show_log):
    r = server.dispatch(pb.Events(header=pb.Header(sessionId="empty", userId=1)))
    assert r.status == "SUCCESS", r


def test_untyped_events_are_skipped(server, db, clickhouse, runid, show_log):
    b = good_events(runid, 4, "skip")
    no_payload_id = "%s-skip-nopayload" % runid
    unknown_id = "%s-skip-unknown" % runid
    data = bytearray(pstest.field_bytes(HDR, b.header.SerializeToString()))
    evs = list(b.events)
    data += pstest.field_bytes(EVS, evs[0].SerializeToString())
    data += pstest.field_bytes(EVS, pb.Event(id=no_payload_id, timestamp="1700000000").SerializeToString())
    data += pstest.field_bytes(EVS, evs[1].SerializeToString())
    # A type this build does not know: a payload under an unused field number of the oneof.
    unknown_payload = pstest.field_bytes(1, "from a newer client".encode()) + pstest.field_varint(2, 7)
    data += pstest.field_bytes(EVS, pstest.field_bytes(EV_ID, unknown_id.encode())
                               + pstest.field_bytes(pstest.field_number(pb.Event, "timestamp"), b"1700000000")
                               + pstest.field_bytes(pstest.unused_event_field_number(), unknown_payload))
    for e in evs[2:]:
        data += pstest.field_bytes(EVS, e.SerializeToString())
    r = server.dispatch_raw(bytes(data))
    assert r.status == "SUCCESS", r
    assert "2" in r.message and "skip" in r.message.lower(), "Response.message %r does not say 2 were skipped" % (
        r.message,)

    good_ids = [e.id for e in evs]
    pstest.poll(lambda: clickhouse.count_ids(db, good_ids) == (len(good_ids), len(good_ids)), 30,
                what="the good events of the batch in ClickHouse")
    assert clickhouse.count_ids(db, [no_payload_id, unknown_id]) == (0, 0), "a skipped event landed"
    pstest.poll(lambda: no_payload_id in server.stderr_text() and unknown_id in server.stderr_text(), 10,
                what="both skipped ids in penstock's log")
    # Not dropped: dead-lettered, as a binary Events with the unknown field kept, with the reason.
    conn = pstest.amqp_connection()
    try:
        ch = conn.channel()
        found = None
        deadline = time.monotonic() + 15
        while found is None and time.monotonic() < deadline:
            method, props, body = ch.basic_get(SKIPPED_QUEUE, auto_ack=True)
            if method is None:
                time.sleep(0.1)
                continue
            m = pb.Events.FromString(body)
            if any(e.id == unknown_id for e in m.events):
                found = (props, m)
        assert found, "the skipped events never reached %s" % SKIPPED_QUEUE
        props, m = found
        assert [e.id for e in m.events] == [no_payload_id, unknown_id]
        assert m.header == b.header
        assert props.content_type == "application/x-protobuf"
        assert props.headers["x-penstock-reason"].startswith("skipped at dispatch"), props.headers
        assert props.headers["x-penstock-consumer"] == "dispatch"
        # The unknown payload survived: re-serialising the event gives back the bytes the client sent.
        assert unknown_payload in m.events[1].SerializeToString()
    finally:
        conn.close()


def test_oversized_request_is_resource_exhausted(server, runid, show_log):
    b = good_events(runid, 1, "big")
    b.events[0].clickEvent.page = "x" * (MAX_RECV + 1024)
    assert b.ByteSize() > MAX_RECV
    with pytest.raises(grpc.RpcError) as ei:
        server.dispatch(b)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, "got %s (%s)" % (ei.value.code(),
                                                                                 ei.value.details())
    # Just under the limit still goes through.
    small = good_events(runid, 1, "fits")
    small.events[0].clickEvent.page = "y" * (MAX_RECV - small.ByteSize() - 64)
    assert small.ByteSize() <= MAX_RECV
    assert server.dispatch(small).status == "SUCCESS"


def test_still_serving_and_nothing_bad_published(server, db, clickhouse, queue, runid, show_log):
    """Runs last in this module: health, a good dispatch that lands, and nothing of the bad calls published."""
    assert server.running(), "penstock died:\n%s" % server.stderr_tail()
    assert server.health() == pstest.SERVING
    b = good_events(runid, 12, "after")
    assert server.dispatch(b).status == "SUCCESS"
    ids = [e.id for e in b.events]
    pstest.poll(lambda: clickhouse.count_ids(db, ids) == (len(ids), len(ids)), 30,
                what="the events sent after the bad calls in ClickHouse")

    # Everything published in this module: only events of calls that answered SUCCESS.
    import json
    msgs = queue.drain(inactivity=1.0, timeout=30)
    published = {e["id"] for _, _, body in msgs for e in json.loads(body).get("events", [])}
    assert set(ids) <= published
    bad = sorted(i for i in published if "-cut-" in i or "-u1-" in i or "utf8payload" in i or "-nohdr-" in i
                 or "-big-" in i or "-skip-nopayload" in i or "-skip-unknown" in i)
    assert not bad, "events of rejected calls (or skipped events) were published: %s" % bad[:10]
    server.stop()


# ------------------------------------------------------------- queue full

def test_queue_full_and_deadline(penstock_proc, db):
    """The queue's backpressure, seen alone: no spool to take what the unreachable broker does not, and
    calls answered once queued (ACK_MODE=enqueued), so that the queue is what fills."""
    closed = pstest.free_port()  # nothing listens there: nothing is ever published
    p = penstock_proc(db=db, env={
        "RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:%d/" % closed,
        "EVENT_BUFFERED_CHANNEL_SIZE": 2, "EVENT_WORKER_POOL_SIZE": 1, "DISPATCH_TIMEOUT_MS": 200,
        "SHUTDOWN_TIMEOUT_MS": 3000, "SPOOL_MAX_BYTES": 0, "ACK_MODE": "enqueued",
    })
    runid = pstest.new_id("full")
    accepted = 0
    full = None
    for i in range(12):
        b = good_events(runid, 5, "q%d" % i)
        t0 = time.monotonic()
        try:
            r = p.dispatch(b, timeout=5)
            assert r.status == "SUCCESS", r
            accepted += 1
        except grpc.RpcError as e:
            took = time.monotonic() - t0
            assert e.code() == grpc.StatusCode.UNAVAILABLE, "got %s (%s)" % (e.code(), e.details())
            assert "queue full" in (e.details() or "").lower(), "details %r" % e.details()
            assert 0.18 <= took < 2.0, "queue full answered after %.3fs, DISPATCH_TIMEOUT_MS=200" % took
            full = took
            break
    assert full is not None, "12 calls accepted with a queue of 2 and no broker"
    assert accepted <= 2 + 1 + 2, "%d calls accepted before the queue of 2 was full" % accepted

    # A deadline shorter than DISPATCH_TIMEOUT_MS wins.
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        p.dispatch(good_events(runid, 1, "deadline"), timeout=0.05)
    took = time.monotonic() - t0
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "got %s (%s)" % (ei.value.code(),
                                                                                ei.value.details())
    assert took < 0.5, "a call with a 50 ms deadline took %.3fs" % took

    # The server is not stuck: the next call is answered queue full again, in time.
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ei:
        p.dispatch(good_events(runid, 1, "again"), timeout=5)
    took = time.monotonic() - t0
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE and took < 2.0, "%s after %.3fs" % (ei.value.code(), took)
    assert p.health() == pstest.SERVING
    # What it holds cannot be published; it must still stop within SHUTDOWN_TIMEOUT_MS.
    p.stop(expect_rc=None)
