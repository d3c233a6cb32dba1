"""End to end: a dead letter replayed after its cause is fixed is counted once (issue 15).

The real broker and real `corridor worker` processes; `corridor dlq` run as a subprocess.

1. A worker with CORRIDOR_MAX_MESSAGE_BYTES=1024 reads two journeys (tests/builders.journey):
   S1/O1 CN-AU standard, promised h200, delivered h130 (on time), and S2/O2 DE-US express (policy:
   120 h), delivered h125 (late), whose delivery event carries a 2,000-byte proof of delivery and
   is rejected `too_large`; plus a record that is not JSON (`not_json`, never replayable).
   Figures: CN-AU delivered on time 1, DE-US nothing; shipments.dlq holds both records.
2. The fix: the worker is restarted with the default limit (64 KiB).
3. `corridor dlq show` and `corridor dlq replay --dry-run`: nothing is sent (the shipments topic's
   end offsets and the figures do not move).
4. `corridor dlq replay --topic shipments --reason too_large`: DE-US delivered late 1, once; the
   replayed record sits on the partition of its key, with the producer's headers and
   corridor.replayed_from.
5. The same replay again: the worker drops the record as a duplicate by event_id (not as late),
   and the figures do not move.
"""
from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from builders import journey
from harness import REPO, Worker, consume_all, poll, produce, sample, series, unique_app_id, wait_final
from streams.domain.partitioning import partition_for

pytestmark = pytest.mark.e2e

POD = "p" * 2000                  # a proof-of-delivery blob: the delivery event is ~2.1 kB
CN_AU = frozenset({"corridor": "CN-AU", "service_level": "standard", "on_time": "true"}.items())
DE_US = frozenset({"corridor": "DE-US", "service_level": "express", "on_time": "false"}.items())


def corridor_dlq(broker, app_id, *args):
    env = dict(os.environ, CORRIDOR_BROKER=broker.url, CORRIDOR_PROFILE="embedded",
               CORRIDOR_APP_ID=app_id)
    return subprocess.run([sys.executable, "-m", "streams", "dlq", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def end_offsets(broker, topic="shipments"):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in range(4)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def consumed(worker, topic="shipments"):
    return sample(worker.metrics(), "corridor_events_consumed_total", topic=topic) or 0.0


def test_a_replayed_dead_letter_is_counted_once(broker, logdir):
    app_id = unique_app_id("corridor-dlq")
    history = (journey("S1", "O1", promised_h=200)
               + journey("S2", "O2", seller="DE", buyer="US", sl="express", delivered=125.0))
    big = history[-1][1]
    assert big["event_type"] == "delivered" and big["shipment_id"] == "S2"
    big["proof_of_delivery"] = POD
    big_bytes = orjson.dumps(big)
    items = history + [("shipments", b"not json", "S-bad")]
    produced = {k: sum(1 for kind, *_ in items if kind == k) for k in ("orders", "shipments", "customs")}
    topic_of = {"orders": "orders", "shipments": "shipments", "customs": "customs-events"}

    # 1. a limit too small for the delivery event: it is dead-lettered, its figure is missing
    small = Worker(broker.url, app_id, logdir, name="small",
                   env={"CORRIDOR_MAX_MESSAGE_BYTES": "1024"}).start()
    try:
        produce(broker.bootstrap, items)
        poll(lambda: all(consumed(small, topic_of[k]) == n for k, n in produced.items()), 60,
             what="the small worker consumed everything")
        wait_final([small])
        m = small.metrics()
        assert series(m, "corridor_shipments_delivered_total") == {CN_AU: 1.0}
        assert series(m, "corridor_events_rejected_total") == {
            frozenset({"topic": "shipments", "reason": "too_large"}.items()): 1.0,
            frozenset({"topic": "shipments", "reason": "not_json"}.items()): 1.0}
    finally:
        small.stop()
    dead = {dict(r.headers)["corridor.reason"]: r for r in consume_all(broker.bootstrap, "shipments.dlq", 2)}
    assert sorted(dead) == [b"not_json", b"too_large"]
    letter = dead[b"too_large"]
    assert (letter.key, letter.value) == (b"S2", big_bytes)
    assert dict(letter.headers)["corridor.detail"] == f"value is {len(big_bytes)} bytes, max 1024".encode()
    where = f"shipments.dlq/{letter.partition}/{letter.offset}"

    # 2. the fix: the same app with a limit the record fits
    fixed = Worker(broker.url, app_id, logdir, name="fixed").start()
    try:
        poll(lambda: series(fixed.metrics(), "corridor_shipments_delivered_total") == {CN_AU: 1.0},
             60, what="the restarted worker recovered its figures")
        base = consumed(fixed)

        # 3. show, and a dry run: nothing sent
        shown = corridor_dlq(broker, app_id, "show")
        assert (shown.returncode, shown.stderr) == (0, "")
        rows = [line.split()[:3] for line in shown.stdout.splitlines()[2:] if not line.startswith(" ")]
        assert shown.stdout.splitlines()[0] == (
            "2 dead letters in orders.dlq, shipments.dlq, customs-events.dlq")
        assert sorted(rows) == [["shipments", "not_json", "1"], ["shipments", "too_large", "1"]]

        ends = end_offsets(broker)
        dry = corridor_dlq(broker, app_id, "replay", "--topic", "shipments", "--reason", "too_large",
                           "--dry-run")
        assert (dry.returncode, dry.stderr) == (0, "")
        lines = dry.stdout.splitlines()
        assert lines[:3] == ["would replay 1 of 2 dead letters read",
                             "  shipments            too_large                   1",
                             "first 1:"]
        assert lines[3].startswith(f"  {where} -> shipments[{partition_for(b'S2', 4)}] key S2 too_large "
                                   "rejected ")
        assert lines[3].endswith(f": value is {len(big_bytes)} bytes, max 1024")
        assert lines[4:] == ["corridor dlq replay (dry run): 1 would be replayed (shipments 1), 1 skipped"]
        assert end_offsets(broker) == ends
        m = fixed.metrics()
        assert consumed(fixed) == base
        assert series(m, "corridor_shipments_delivered_total") == {CN_AU: 1.0}

        # 4. the replay: the delivery is counted, once
        done = corridor_dlq(broker, app_id, "replay", "--topic", "shipments", "--reason", "too_large")
        assert (done.returncode, done.stdout, done.stderr) == (
            0, "corridor dlq replay: 1 replayed (shipments 1), 1 skipped\n", "")
        assert end_offsets(broker) != ends
        poll(lambda: consumed(fixed) == base + 1, 60, what="the worker consumed the replayed record")
        wait_final([fixed])
        poll(lambda: series(fixed.metrics(), "corridor_shipments_delivered_total")
             == {CN_AU: 1.0, DE_US: 1.0}, 60, what="the replayed delivery counted")
        m = fixed.metrics()
        assert sample(m, "corridor_shipment_transit_seconds_sum", corridor="DE-US",
                      service_level="express") == 125 * 3600.0
        assert series(m, "corridor_events_rejected_total") == {}
        assert series(m, "corridor_events_duplicate_total") == {}
        replayed = [r for r in consume_all(broker.bootstrap, "shipments", produced["shipments"] + 1)
                    if any(k == "corridor.replayed_from" for k, _ in r.headers or ())]
        assert [(r.partition, r.key, r.value, r.headers) for r in replayed] == [
            (partition_for(b"S2", 4), b"S2", big_bytes, [("corridor.replayed_from", where.encode())])]

        # 5. the same replay again: dropped by event_id, the figures stay
        again = corridor_dlq(broker, app_id, "replay", "--topic", "shipments", "--reason", "too_large")
        assert (again.returncode, again.stdout) == (
            0, "corridor dlq replay: 1 replayed (shipments 1), 1 skipped\n")
        poll(lambda: consumed(fixed) == base + 2, 60, what="the worker consumed the second replay")
        poll(lambda: sample(fixed.metrics(), "corridor_events_duplicate_total", topic="shipments") == 1.0,
             60, what="the second replay counted as a duplicate")
        wait_final([fixed])
        m = fixed.metrics()
        assert series(m, "corridor_shipments_delivered_total") == {CN_AU: 1.0, DE_US: 1.0}
        assert series(m, "corridor_events_late_total") == {}
        assert series(m, "corridor_events_rejected_total") == {}
    finally:
        fixed.stop()
