"""Dead letters: a message the consumers cannot process goes to the dead-letter exchange with its reason in
the headers (and so to grpc_clickhouse_event_q.error), is acknowledged, and does not block what follows."""

import json

import pika

import pstest
from pstest import pb

QUEUE = pstest.CLICKHOUSE_QUEUE
ERROR_QUEUE = QUEUE + ".error"


def _drain_error_queue(ch, want, timeout=30):
    return pstest.get_messages(ch, ERROR_QUEUE, want, timeout)


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


def test_a_row_clickhouse_refuses_does_not_block_its_batch(penstock_proc, clickhouse):
    """The table's event_id is a UInt64 here (made before penstock starts; CREATE TABLE IF NOT EXISTS keeps
    it), so ClickHouse refuses the one row whose id is not a number. The other rows of the same INSERT land;
    the message holding the bad row is dead-lettered with ClickHouse's reason; nothing is retried for ever."""
    db = clickhouse.create_database()
    clickhouse.query(
        "CREATE TABLE %s.events (event_id UInt64, event_type String, event_time DateTime, event_timestamp String, "
        "received_at DateTime, session_id String, user_id Int64, device_id String, client_id String, os String, "
        "app_version String, payload String) ENGINE = MergeTree ORDER BY event_id" % db)
    conn = pstest.amqp_connection()
    try:
        ch = conn.channel()
        ch.queue_purge(ERROR_QUEUE)
        # One consumer and a long flush interval: every message below goes into the same INSERT.
        p = penstock_proc(db=db, env={"CONSUMERS_PER_QUEUE": "1", "CLICKHOUSE_FLUSH_MS": "1500"})
        good_ids = [str(9000000 + i) for i in range(40)]
        batches = []
        for k in range(4):
            b = pb.Events(header=pb.Header(sessionId="s%d" % k))
            for i in good_ids[k * 10:(k + 1) * 10]:
                b.events.add(id=i, timestamp="1700000000").clickEvent.page = "p"
            batches.append(b)
        bad = pb.Events(header=pb.Header(sessionId="bad"))
        bad.events.add(id="not-a-number", timestamp="1700000000").launchEvent.source = "x"
        batches.insert(2, bad)
        for b in batches:
            assert p.dispatch(b).status == "SUCCESS"
        pstest.poll(lambda: int(clickhouse.scalar("SELECT count() FROM %s.events" % db)) >= len(good_ids), 30,
                    what="the good rows")
        got = sorted(clickhouse.scalar("SELECT groupArray(toString(event_id)) FROM %s.events" % db)
                     .strip("[]").replace("'", "").split(","))
        assert got == sorted(good_ids)
        letters = _drain_error_queue(ch, 1)
        assert len(letters) == 1, "the message with the bad row was not dead-lettered"
        props, body = letters[0]
        assert json.loads(body)["events"][0]["id"] == "not-a-number"
        assert props.headers["x-penstock-reason"].startswith("rejected by sink"), props.headers
        assert "row 0" in props.headers["x-penstock-reason"]
        pstest.poll(lambda: ch.queue_declare(QUEUE, passive=True).method.message_count == 0, 10,
                    what="%s to be empty (everything acknowledged)" % QUEUE)
        # The consumer counts a dead letter once RabbitMQ confirmed it, just after it shows in the queue.
        pstest.poll(lambda: p.metrics().total("penstock_messages_dead_lettered_total", queue=QUEUE,
                                              reason="rejected_by_sink") >= 1, 5, what="the dead letter counted")
        m = p.metrics()
        assert m.total("penstock_messages_dead_lettered_total", queue=QUEUE, reason="rejected_by_sink") == 1
        assert m.total("penstock_inserts_total", queue=QUEUE, result="drop") >= 1
        p.stop()
    finally:
        conn.close()
        clickhouse.drop_database(db)
