"""Records on the wrong partition (a producer without Kafka's default partitioner) are sent on to
their key's partition through `<app>-rerouted-<kind>` and processed there (streams/worker/reroute.py).

The worker here carries what the agents send to the rerouted topics back to them on the partition
given, as the broker would (conftest.py), so a whole journey produced on the wrong partitions must
give exactly the figures of the same journey produced right.
"""
import logging

import orjson

from builders import journey, ship
from streams.worker.reroute import WARN_EVERY_SECONDS, Rerouter
from streams.settings import Settings
from test_agents import CONSUMED, DUPLICATE, REJECTED, assert_complete_journey, corridor_totals

REROUTED = "corridor_events_rerouted_total"
APPLIED = "corridor_events_applied_total"


def wrong(w, key: str) -> int:
    return (w.partition(key) + 1) % w.settings.partitions


async def feed_misplaced(w, events) -> None:
    """Each event on a partition its key does not map to."""
    for kind, ev in events:
        key = ev["order_id"] if kind == "orders" else ev["shipment_id"]
        await w.feed_raw(w.topic_of(kind), key.encode(), orjson.dumps(ev), partition=wrong(w, key))


async def test_a_journey_on_the_wrong_partitions_gives_the_figures_of_the_right_ones(worker):
    events = journey("S1", "O1", promised_h=200, hold=True)
    async with worker() as w:
        await feed_misplaced(w, events)

        assert_complete_journey(w, "S1")      # totals, state and series on S1's own partition
        rerouted = w.settings.rerouted_topics
        for kind, n in (("orders", 1), ("shipments", 5), ("customs", 3)):
            topic = w.topic_of(kind)
            assert w.sample(REROUTED, topic=topic) == n
            assert w.sample(CONSUMED, topic=topic) == n           # read once where produced...
            assert w.sample(CONSUMED, topic=rerouted[kind]) == n  # ...and once where it belongs
            assert w.sample(APPLIED, topic=rerouted[kind]) == n
            assert w.sample(APPLIED, topic=topic) is None
        # sent on unchanged, to the key's partition, saying where it was produced
        sent = w.producer.sent_to(rerouted["shipments"])
        assert [(s.key, s.partition) for s in sent] == [(b"S1", w.partition("S1"))] * 5
        assert [orjson.loads(s.value)["event_type"] for s in sent] == [
            "label_created", "picked_up", "departed_origin", "arrived_destination", "delivered"]
        assert sent[2].headers == {"corridor.rerouted.topic": b"shipments",
                                   "corridor.rerouted.partition": str(wrong(w, "S1")).encode(),
                                   "corridor.rerouted.offset": b"2"}
        # the totals remember the rerouted topics' offsets (what a redelivery is held to)
        # (the risk samples' record, counted by the end, is checked by assert_complete_journey)
        [tot] = corridor_totals(w.totals()).values()
        assert tot["o"] == {"#fin": 2}          # the hold, then the end (Pipeline.settle)


async def test_a_redelivered_misplaced_record_is_sent_on_again_and_is_a_duplicate(worker):
    events = journey("S1", "O1", promised_h=200, hold=True)
    async with worker() as w:
        await feed_misplaced(w, events)
        before = w.totals()

        await feed_misplaced(w, events[-1:])            # the delivery, read again after a crash

        assert w.sample(REROUTED, topic="shipments") == 6
        assert w.sample(DUPLICATE, topic=w.settings.rerouted_topics["shipments"]) == 1
        assert w.totals() == before
        assert_complete_journey(w, "S1")


async def test_a_malformed_record_is_dead_lettered_where_it_is_read(worker):
    async with worker() as w:
        p = wrong(w, "S1")
        await w.feed_raw("shipments", b"S1", b"not json", partition=p)
        bad_key = ship("S2", "picked_up", 1.0)
        await w.feed_raw("shipments", b"S2\xff", orjson.dumps(bad_key), partition=wrong(w, "S2"))

        assert w.sample(REROUTED, topic="shipments") is None
        assert all(not w.producer.sent_to(t) for t in w.settings.rerouted_topics.values())
        assert w.sample(REJECTED, topic="shipments", reason="not_json") == 1
        assert w.sample(REJECTED, topic="shipments", reason="key_mismatch") == 1
        dead = w.producer.sent_to("shipments.dlq")
        assert [(d.key, d.headers["corridor.source.partition"]) for d in dead] == [
            (b"S1", str(p).encode()), (b"S2\xff", str(wrong(w, "S2")).encode())]


async def test_a_rerouted_record_rejected_where_it_belongs_names_the_record_produced(worker):
    """Dead letters point at the record its producer wrote, with only its own headers."""
    async with worker() as w:
        topic = w.settings.rerouted_topics["shipments"]
        await w.feed_raw(topic, b"S1", b"not json", partition=w.partition("S1"),
                         headers=[("trace", b"t-1"), ("corridor.rerouted.topic", b"shipments"),
                                  ("corridor.rerouted.partition", b"3"),
                                  ("corridor.rerouted.offset", b"41")])

        assert w.sample(REJECTED, topic=topic, reason="not_json") == 1
        [dead] = w.producer.sent_to("shipments.dlq")
        assert (dead.key, dead.value) == (b"S1", b"not json")
        assert {k: v for k, v in dead.headers.items() if k != "corridor.rejected_at"} == {
            "trace": b"t-1", "corridor.reason": b"not_json",
            "corridor.detail": dead.headers["corridor.detail"],
            "corridor.source.topic": b"shipments", "corridor.source.partition": b"3",
            "corridor.source.offset": b"41"}


class _Message:
    def __init__(self, topic, key, partition, offset):
        self.topic, self.key, self.value = topic, key, b"{}"
        self.partition, self.offset = partition, offset
        self.headers, self.timestamp = None, 1.7e9


async def test_the_warning_names_the_topic_and_the_fix_at_most_once_a_minute_per_topic(
        caplog, fake_producer):
    from prometheus_client import CollectorRegistry
    from streams.worker.metrics import EventCounters
    FakeProducer = fake_producer             # noqa: N806 (the class, from this tier's conftest)

    settings = Settings(app_id="a", partitions=4)
    now = [1000.0]
    producer = FakeProducer(4)
    registry = CollectorRegistry()
    counters = EventCounters(registry)
    reroute = Rerouter(settings, lambda: producer, counters, clock=lambda: now[0])
    key = b"S1"
    right = producer.key_partition("shipments", key).partition
    bad = (right + 1) % 4

    with caplog.at_level(logging.WARNING, logger="corridor"):
        assert await reroute(_Message("shipments", key, right, 0)) is False
        assert await reroute(_Message("a-rerouted-shipments", key, bad, 0)) is False  # not an input
        for offset in range(3):
            assert await reroute(_Message("shipments", key, bad, offset)) is True
            now[0] += 1.0
        assert await reroute(_Message("customs-events", key, bad, 0)) is True
        now[0] += WARN_EVERY_SECONDS
        assert await reroute(_Message("shipments", key, bad, 9)) is True

    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"shipments[{bad}]@0: key b'S1' belongs on partition {right} ")
    assert "a-rerouted-shipments" in lines[0] and "partitioner=murmur2_random" in lines[0]
    assert lines[1].startswith(f"customs-events[{bad}]@0")
    assert lines[2].startswith(f"shipments[{bad}]@9") and "(2 more since the last warning)" in lines[2]
    assert [(s.topic, s.partition) for s in producer.sent] == (
        [("a-rerouted-shipments", right)] * 3 + [("a-rerouted-customs", right),
                                                 ("a-rerouted-shipments", right)])
    assert registry.get_sample_value(REROUTED, {"topic": "shipments"}) == 4
