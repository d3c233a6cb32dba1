"""End to end: a scenario produced with confluent-kafka at its default partitioner gives exactly the
figures of the pure engine, because the worker sends every misplaced record on to its key's
partition (streams/worker/reroute.py).

librdkafka's default partitioner (`consistent_random`: CRC32 of the key) is not Kafka's (murmur2),
so about 3 records in 4 land on another partition than the join expects. Before rerouting, the
400 shipments below gave 23 of 147 corridor series wrong, silently (issue 13). Here each record's
partition is read back from confluent-kafka's delivery reports, so the test knows exactly which
records were misplaced: `corridor_events_rerouted_total{topic}` must count exactly those, each
must be read once more from `<app>-rerouted-<kind>`, and a warning must say what to set.

Cross-topic arrival order is pinned as in test_crash.py (customs and orders first, then the
shipment events), so the engine's figures are the only right answer; within a topic a key's
records keep their order on the way through the reroute topic. Retention is out of the way for the
same reason as there (the customs topic runs months of event time ahead).
"""
import re

import orjson
import pytest

from builders import T0_EPOCH
from harness import Worker, poll, series, unique_app_id
from scenarios import corridor_view, engine_samples
from streams.domain.engine import Engine
from streams.domain.partitioning import partition_for
from streams.settings import Settings
from streams.tools.simulate import histories

pytestmark = pytest.mark.e2e

TOPIC = {"customs": "customs-events", "shipments": "shipments", "orders": "orders"}
PARTITIONS = Settings().partitions          # the worker's default, which it creates the topics with
KEEP = {"CORRIDOR_RETENTION_SECONDS": str(10 * 365 * 86400)}
SETTLE = 120.0                              # two shared cores: generous


def scenario():
    sim = list(histories(13, 400, scenario="customs-backlog", start=T0_EPOCH - 200 * 86400,
                         duplicate_rate=0.02))
    first = [e for e in sim if e.topic != "shipments"]
    second = [e for e in sim if e.topic == "shipments"]
    return first, second


def oracle(events) -> tuple[dict, Engine]:
    """The pure engine over the same events in the same cross-topic order, as summed samples."""
    return engine_samples(events)


def produce_with_confluent_defaults(bootstrap: str, events, topics: dict = TOPIC
                                    ) -> list[tuple[str, bytes, int]]:
    """Publish with confluent-kafka, partitioner left at librdkafka's default; (topic, key,
    partition) of every record as the broker acknowledged it."""
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    placed, errors = [], []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)
        else:
            placed.append((msg.topic(), msg.key(), msg.partition()))

    for e in events:
        producer.produce(topics[e.topic], key=e.key.encode(), value=orjson.dumps(e.value),
                         on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0 and errors == [], errors
    assert len(placed) == len(events)
    return placed


def misplaced(placed) -> dict[str, int]:
    """Input topic -> records not on murmur2's partition of their key."""
    out: dict[str, int] = {}
    for topic, key, partition in placed:
        out[topic] = out.get(topic, 0) + (partition != partition_for(key, PARTITIONS))
    return out


def by_topic(m, name: str) -> dict[str, float]:
    return {dict(k)["topic"]: v for k, v in series(m, f"corridor_events_{name}_total").items()}


def fleet_counters(workers, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for w in workers:
        for t, v in by_topic(w.metrics(), name).items():
            out[t] = out.get(t, 0) + v
    return out


def fleet_view(workers) -> dict:
    """The fleet's corridor series: each worker exports the partitions it owns, so the sum over
    workers; the stream clock is shared (one value, or None while the workers differ).
    `corridor_bottleneck_stage` is per worker (the fleet's is the top of the summed excess)."""
    out: dict = {}
    clocks = set()
    for w in workers:
        for key, v in corridor_view(w.metrics()).items():
            if key[0] == "corridor_stream_time_seconds":
                clocks.add(v)
            elif key[0] != "corridor_bottleneck_stage":
                out[key] = out.get(key, 0.0) + v
    if len(clocks) == 1:
        out[("corridor_stream_time_seconds", frozenset())] = clocks.pop()
    return out


def settled(workers, produced: dict[str, int], rerouted_topic: dict[str, str]) -> bool:
    """Every message read, every rerouted copy read back, all of them accounted for."""
    for w in workers:
        w.ready()                      # fails at once, with the log, if a worker died
    consumed, rerouted = fleet_counters(workers, "consumed"), fleet_counters(workers, "rerouted")
    outcomes: dict[str, float] = {}
    for name in ("applied", "duplicate", "rejected"):
        for t, v in fleet_counters(workers, name).items():
            outcomes[t] = outcomes.get(t, 0) + v
    for topic, n in produced.items():
        copies = rerouted.get(topic, 0)
        if consumed.get(topic, 0) != n or outcomes.get(topic, 0) + copies != n:
            return False
        if consumed.get(rerouted_topic[topic], 0) != copies or \
                outcomes.get(rerouted_topic[topic], 0) != copies:
            return False
    return all(v == 0 for w in workers for v in series(w.metrics(), "corridor_consumer_lag").values())


def split(workers) -> bool:
    """Every worker ready with two of the four partitions."""
    health = [w.get("/health") for w in workers]
    return all(status == 200 for status, _ in health) and \
        sorted(len(body["partitions"]) for _, body in health) == [2, 2]


@pytest.fixture(scope="module")
def fleet(broker, logdir):
    """Two workers, two partitions each: a record read on the wrong partition is read by a worker
    that may not hold its key's state at all, so nothing but rerouting can join it right."""
    app_id = unique_app_id("corridor-partitioner")
    workers = [Worker(broker.url, app_id, logdir, name=f"w{i}", env=KEEP) for i in (1, 2)]
    try:
        for w in workers:
            w.start()                  # the first creates every topic, with 4 partitions
        poll(lambda: split(workers), 60, 0.3, "partitions split over the two workers")
        yield app_id, workers
    finally:
        for w in workers:
            w.stop()


def test_confluent_kafka_default_partitioner_gives_the_engines_figures(fleet, broker):
    app_id, workers = fleet
    first, second = scenario()
    expected, eng = oracle(first + second)
    assert sum(v for (n, _), v in expected.items() if n == "corridor_shipments_delivered_total") > 250
    rerouted_topic = {TOPIC[kind]: name
                      for kind, name in Settings(app_id=app_id).rerouted_topics.items()}

    produced = {t: 0 for t in TOPIC.values()}
    placed = []
    for phase in (first, second):
        placed += produce_with_confluent_defaults(broker.bootstrap, phase)
        for e in phase:
            produced[TOPIC[e.topic]] += 1
        poll(lambda: settled(workers, {t: n for t, n in produced.items() if n}, rerouted_topic),
             SETTLE, 0.3, "every message accounted for")
    assert [len(w.get("/health")[1]["partitions"]) for w in workers] == [2, 2]   # no rebalance

    # librdkafka's default put most records elsewhere than murmur2 would: exactly these
    wrong = misplaced(placed)
    assert wrong == {"customs-events": 1970, "shipments": 1904, "orders": 403}
    assert fleet_counters(workers, "rerouted") == wrong
    assert fleet_counters(workers, "consumed") == {
        **produced, **{rerouted_topic[t]: n for t, n in wrong.items()}}
    assert fleet_counters(workers, "rejected") == {}
    assert sum(fleet_counters(workers, "duplicate").values()) == eng.duplicates
    assert sum(fleet_counters(workers, "late").values()) == eng.late

    # and the figures are the engine's, series by series
    want = {k: v for k, v in corridor_view(expected).items() if k[0] != "corridor_bottleneck_stage"}
    try:
        poll(lambda: fleet_view(workers) == want, 30, 0.3)
    except AssertionError:
        pass            # the assertion below shows what differs
    got = fleet_view(workers)
    diff = {k: (want.get(k), got.get(k)) for k in set(want) | set(got) if want.get(k) != got.get(k)}
    assert diff == {}, f"{len(diff)} of {len(want)} series differ, e.g. {sorted(diff.items(), key=str)[:3]}"
    assert len(want) > 140

    # a warning per topic per worker that read misplaced records of it (at most one a minute),
    # naming the topic and the producer setting to fix
    for topic in TOPIC.values():
        per_worker = [len(re.findall(rf"{re.escape(topic)}\[\d\]@\d+: key .* belongs on partition "
                                     r"\d.*set partitioner=murmur2_random",
                                     w.log_path.read_text(errors="replace"))) for w in workers]
        assert set(per_worker) <= {0, 1} and sum(per_worker) >= 1, (topic, per_worker)


def test_sigkill_mid_stream_then_a_successor_gives_the_engines_figures(broker, logdir):
    """The copy of a rerouted record is on the broker before the original's offset is committed
    (the producer is flushed before every commit): a worker killed mid-stream loses none, and its
    successor, which reads the uncommitted originals again and sends them on again, counts each
    event once (the second copy is a duplicate by event_id). Own topics, one worker."""
    first, second = scenario()
    expected, _ = oracle(first + second)
    app_id = unique_app_id("corridor-partitioner-crash")
    topics = {kind: f"{app_id}.{name}" for kind, name in TOPIC.items()}
    env = {**KEEP, "CORRIDOR_TOPIC_ORDERS": topics["orders"],
           "CORRIDOR_TOPIC_SHIPMENTS": topics["shipments"], "CORRIDOR_TOPIC_CUSTOMS": topics["customs"]}
    rerouted_topic = {topics[kind]: name
                      for kind, name in Settings(app_id=app_id).rerouted_topics.items()}
    victim = Worker(broker.url, app_id, logdir, name="victim", env=env).start()
    try:
        produce_with_confluent_defaults(broker.bootstrap, first, topics)
        produced = {topics[k]: sum(1 for e in first if e.topic == k) for k in ("orders", "customs")}
        poll(lambda: settled([victim], produced, rerouted_topic), SETTLE, 0.3, "first phase done")
        produce_with_confluent_defaults(broker.bootstrap, second, topics)
        # Early: the worker reads the whole phase in about a second, and commits every 0.3 s.
        poll(lambda: fleet_counters([victim], "consumed").get(topics["shipments"], 0) >= 100,
             SETTLE, 0.02, "shipment events being read")
    finally:
        victim.kill()                                   # uncommitted offsets and sends included

    successor = Worker(broker.url, app_id, logdir, name="successor", env=env).start()
    try:
        want = corridor_view(expected)

        def caught_up():
            m = successor.metrics()
            return all(v == 0 for v in series(m, "corridor_consumer_lag").values()) and \
                corridor_view(m) == want
        try:
            poll(caught_up, SETTLE, 0.3)
        except AssertionError:
            pass            # the assertions below show what differs
        m = successor.metrics()
        got = corridor_view(m)
        diff = {k: (want.get(k), got.get(k)) for k in set(want) | set(got) if want.get(k) != got.get(k)}
        assert diff == {}, (f"{len(diff)} of {len(want)} series differ, e.g. "
                            f"{sorted(diff.items(), key=str)[:3]}; log {successor.log_path}")
        # it read the shipment events not committed before the kill, and sent the misplaced ones
        # on again (those the victim had sent on already are now in the topic twice)
        assert by_topic(m, "rerouted").get(topics["shipments"], 0) > 0
        print(f"successor: read {by_topic(m, 'consumed')}, sent on {by_topic(m, 'rerouted')}, "
              f"duplicates {by_topic(m, 'duplicate')}")
    finally:
        successor.stop()
