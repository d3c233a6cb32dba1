"""SIGKILL in the middle of a stream: a new worker recovers the tables from their changelogs,
resumes from the committed offsets, and ends with exactly the figures of the pure engine fed the
same events (redelivered events are deduplicated by event_id).

Cross-topic arrival order is pinned so the expected figures are unique: all customs and order
events first, then the shipment events (killed half-way). See docs/semantics.md (late events).
That puts the customs topic months of event time ahead of the shipments topic, which is outside
what the retention assumes (topics progress together, docs/semantics.md "Bounded state"), so this
worker keeps everything: the test is about crashes, tests/e2e/test_retention.py about expiry.
`python benchmarks/crash_trials.py N` repeats it N times on fresh brokers.
"""
import time

from kafka import KafkaProducer

from builders import T0_EPOCH
from harness import Worker, poll, series, unique_app_id
from scenarios import corridor_view, engine_samples
from streams.tools.simulate import histories

TOPIC = {"customs": "customs-events", "shipments": "shipments", "orders": "orders"}


def expected_metrics(events) -> dict:
    """The pure engine over the same events in the same cross-topic order, rendered as samples."""
    return engine_samples(events)[0]


def send(bootstrap, events):
    import orjson
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    for e in events:
        producer.send(TOPIC[e.topic], key=e.key.encode(), value=orjson.dumps(e.value))
    producer.flush(30)
    producer.close(5)


def total_lag(worker) -> float:
    return sum(series(worker.metrics(), "corridor_consumer_lag").values())


def test_sigkill_mid_stream_then_recovery_gives_the_clean_figures(broker, logdir):
    crash_and_recover(broker, logdir)


def test_rocksdb_store_reopened_after_sigkill_gives_the_clean_figures(logdir):
    """The successor reopens the victim's RocksDB files: it reads the changelogs only after the
    offsets the store recorded as written (set once per partition per commit by the
    write-behind tables), so a wrong recorded offset would lose or repeat state."""
    from streams.broker.embedded import EmbeddedBroker
    broker = EmbeddedBroker(port=0).start()
    try:
        crash_and_recover(broker, logdir, {"CORRIDOR_STORE": "rocksdb://"}, successor="victim")
    finally:
        broker.stop()


def crash_and_recover(broker, logdir, env: dict | None = None, successor: str = "successor"):
    sim = list(histories(11, 300, scenario="customs-backlog", start=T0_EPOCH - 200 * 86400,
                         duplicate_rate=0.02))
    first = [e for e in sim if e.topic != "shipments"]
    second = [e for e in sim if e.topic == "shipments"]
    expected = expected_metrics(first + second)
    assert sum(v for (n, _), v in expected.items() if n == "corridor_shipments_delivered_total") > 200

    app_id = unique_app_id("corridor-crash")
    keep = {"CORRIDOR_RETENTION_SECONDS": str(10 * 365 * 86400), **(env or {})}
    w1 = Worker(broker.url, app_id, logdir, name="victim", env=keep).start()
    send(broker.bootstrap, first)
    poll(lambda: sum(series(w1.metrics(), "corridor_events_consumed_total").values()) >= len(first),
         60, 0.2, "first phase consumed")
    send(broker.bootstrap, second)
    half = len(first) + len(second) // 2
    poll(lambda: sum(series(w1.metrics(), "corridor_events_consumed_total").values()) >= half,
         60, 0.05, "half of the shipment events consumed")
    w1.kill()                                            # mid-batch, uncommitted offsets included

    started = time.monotonic()
    w2 = Worker(broker.url, app_id, logdir, name=successor, env=keep).start()
    try:
        want = corridor_view(expected)
        try:
            poll(lambda: total_lag(w2) == 0 and corridor_view(w2.metrics()) == want, 90, 0.3)
        except AssertionError:
            pass        # the assertion below shows what differs
        took = time.monotonic() - started
        got = corridor_view(w2.metrics())
        diff = {k: (want.get(k), got.get(k)) for k in set(want) | set(got) if want.get(k) != got.get(k)}
        expired = series(w2.metrics(), "corridor_state_expired_total")
        delivered = [sum(v for (n, _), v in m.items() if n == "corridor_shipments_delivered_total")
                     for m in (want, got)]
        expired = f"{expired}; delivered want/got {delivered}; sample {sorted(diff.items(), key=str)[:3]}"
        assert diff == {}, f"{len(diff)} series differ; lag {total_lag(w2)}; expired {expired}; log {w2.log_path}"
        # the successor did not start from scratch: it resumed from committed offsets
        consumed = sum(series(w2.metrics(), "corridor_events_consumed_total").values())
        assert consumed < len(sim)
        print(f"recovered and caught up in {took:.1f} s; successor consumed {consumed:.0f} of {len(sim)}")
    finally:
        w2.stop()


