"""Dead letters: a message the consumers cannot process goes to the dead-letter exchange with its reason in
the headers (and so to grpc_clickhouse_event_q.error), is acknowledged, and does not block what follows."""

import json
import time

import pika

import pstest
from pstest import pb

QUEUE = pstest.CLICKHOUSE_QUEUE
ERROR_QUEUE = QUEUE + ".error"


def _drain_error_queue(ch, want, timeout=30):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        method, props, body = ch.basic_get(ERROR_QUEUE, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        got.append((props, body))
    return got


def test_undecodable_messages_are_dead_lettered_with_their_reason(penstock_proc, db, clickhouse):
    p = penstock_proc(db=db)
    pstest.poll(lambda: clickhouse.table_exists(db, "events"), 30, what="the events table")
    conn = pstest.amqp_connection()
    try:
        ch = conn.channel()
        ch.queue_purge(ERROR_QUEUE)
        runid = pstest.new_id("dl")
        poison = [b"{not json", json.dumps({"header": {}, "events": [{"id": runid + "-x", "nosuch": 1}]}).encode(),
                  json.dumps({"events": [{"id": runid + "-y"}]}).encode()]  # an event without a payload
        for i, body in enumerate(poison):
            ch.basic_publish(pstest.EVENT_EXCHANGE, "ClickEvent", body,
                             pika.BasicProperties(content_type="application/json", message_id="%s-p%d" % (runid, i),
                                                  delivery_mode=2))
        # A good batch after them still lands: poison does not block the queue.
        good = pb.Events(header=pb.Header(sessionId="s"))
        good.events.add(id=runid + "-ok", timestamp="1700000000").clickEvent.page = "p"
        assert p.dispatch(good).status == "SUCCESS"
        pstest.poll(lambda: clickhouse.count_ids(db, [runid + "-ok"])[0] >= 1, 30, what="the good event")

        letters = _drain_error_queue(ch, len(poison))
        assert len(letters) == len(poison), "%d of %d poison messages reached %s" % (
            len(letters), len(poison), ERROR_QUEUE)
        by_id = {props.message_id: (props, body) for props, body in letters}
        for i, body in enumerate(poison):
            props, got_body = by_id["%s-p%d" % (runid, i)]
            h = props.headers or {}
            assert got_body == body, "the dead letter carries the original body"
            assert h.get("x-penstock-reason", "").startswith("undecodable"), h
            assert h.get("x-penstock-source-queue") == QUEUE, h
            assert h.get("x-penstock-consumer"), h
            assert h.get("x-penstock-routing-key") == "ClickEvent", h
            assert h.get("x-penstock-time", "").endswith("Z"), h
        assert "nosuch" in by_id["%s-p1" % runid][0].headers["x-penstock-reason"]
        # Acknowledged, not redelivered: the main queue is empty again.
        pstest.poll(lambda: ch.queue_declare(QUEUE, passive=True).method.message_count == 0, 10,
                    what="%s to be empty" % QUEUE)
        dead = p.metrics().total("penstock_messages_dead_lettered_total", queue=QUEUE, reason="undecodable")
        assert dead == len(poison), dead
    finally:
        conn.close()
    p.stop()
