"""A changelog whose last record batch holds several records and no end marker (what a worker
killed between a commit's records and its markers leaves): the embedded broker's ListOffsets
stops at that batch's first record, recovery reads to the true end anyway, and a worker whose
store has seen further does not die at the next rebalance (docs/semantics.md "Crashes",
docs/broker.md "The ListOffsets tail", streams/worker/faust_patches/recovery.py).
"""
import asyncio
import os
import signal
from pathlib import Path

from types import SimpleNamespace

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.types import TP
from prometheus_client import CollectorRegistry

from builders import T0_EPOCH
from harness import Worker, poll, sample, series, unique_app_id
from streams.worker import faust_patches
from streams.broker.embedded import EmbeddedBroker, create_topics
from streams.worker.changelog_ends import true_end_offsets
from streams.tools.simulate import histories
from test_crash import expected_metrics, send


@pytest.fixture
def broker():
    """A broker per test (conftest's is per module): the input topics are shared by every app
    on a broker, and the worker tests count what their workers consumed."""
    b = EmbeddedBroker(port=0).start()
    yield b
    b.stop()


async def _write_batch(bootstrap: str, topic: str, partition: int, records) -> list[int]:
    """Write (key, value) records as ONE record batch (one produce request); their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        batch = producer.create_batch()
        for key, value in records:
            assert batch.append(key=key, value=value, timestamp=None) is not None
        base = (await (await producer.send_batch(batch, topic, partition=partition))).offset
        return list(range(base, base + len(records)))
    finally:
        await producer.stop()


def write_batch(bootstrap: str, topic: str, partition: int, records) -> list[int]:
    return asyncio.run(_write_batch(bootstrap, topic, partition, records))


def list_offsets(bootstrap: str, tps) -> dict:
    """The broker's ListOffsets(latest) answers: what aiokafka's end_offsets (and faust) get."""
    async def go():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            return await consumer.end_offsets(list(tps))
        finally:
            await consumer.stop()
    return asyncio.run(go())


def _tail_topic(bootstrap: str) -> tuple[str, list]:
    """A 4-partition topic: p0 ends with a batch of 10 after a lone record, p1 with a lone record
    after a batch of 5 (as a marker ends a flush), p2 with one batch of 3, p3 empty."""
    topic = unique_app_id("tail") + "-changelog"
    create_topics(bootstrap, {topic: 4}, compact={topic})
    assert write_batch(bootstrap, topic, 0, [(b"k0", b"0")]) == [0]
    assert write_batch(bootstrap, topic, 0, [(b"k%d" % i, b"%d" % i) for i in range(10)]) == \
        list(range(1, 11))
    assert write_batch(bootstrap, topic, 1, [(b"k%d" % i, b"1") for i in range(5)]) == [0, 1, 2, 3, 4]
    assert write_batch(bootstrap, topic, 1, [(b"marker", None)]) == [5]
    assert write_batch(bootstrap, topic, 2, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]) == [0, 1, 2]
    return topic, [TopicPartition(topic, p) for p in range(4)]


def test_list_offsets_stops_at_the_last_batch_and_the_probe_reads_to_the_true_end(broker):
    topic, tps = _tail_topic(broker.bootstrap)
    listed = list_offsets(broker.bootstrap, tps)
    # the broker's answer: the base offset of each partition's last batch + 1
    assert {tp.partition: end for tp, end in listed.items()} == {0: 2, 1: 6, 2: 1, 3: 0}
    ends = asyncio.run(true_end_offsets(broker.bootstrap, tps, listed))
    assert {tp.partition: end for tp, end in ends.items()} == {0: 11, 1: 6, 2: 3, 3: 0}
    # faust's TP keys come back as they were given
    ends = asyncio.run(true_end_offsets(broker.bootstrap, [TP(topic, 2)], {TP(topic, 2): 1}))
    assert ends == {TP(topic, 2): 3} and type(next(iter(ends))) is TP


def test_faust_recovery_reads_a_changelog_to_its_true_end(broker):
    """faust's Recovery._build_highwaters as patched for the embedded profile, against the real
    broker: the highwaters recovery reads to (last offsets) are the true ones; faust's own
    answers are ListOffsets', short of the last batch."""
    from faust.tables.recovery import Recovery
    faust_patches.apply(embedded=True)
    topic, _ = _tail_topic(broker.bootstrap)
    tps = {TP(topic, p) for p in range(4)}

    class Consumer:       # what faust's consumer answers: ListOffsets(latest)
        async def highwaters(self, *tps):
            c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
            await c.start()
            try:
                ends = await c.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in tps])
                return {TP(tp.topic, tp.partition): end for tp, end in ends.items()}
            finally:
                await c.stop()

    async def build(fn, registry) -> dict:
        app = faust.App(unique_app_id("tail-recovery"), broker=broker.url)
        app.corridor = SimpleNamespace(registry=registry)      # as streams.worker.app.create_app does
        recovery = app.tables.recovery
        await fn(recovery, Consumer(), tps, recovery.active_highwaters, "active")
        return {tp.partition: hw for tp, hw in recovery.active_highwaters.items()}

    registry = CollectorRegistry()
    original = Recovery._corridor_ends_originals["_build_highwaters"]
    assert asyncio.run(build(original, registry)) == {0: 1, 1: 5, 2: 0, 3: -1}
    assert asyncio.run(build(Recovery._build_highwaters, registry)) == {0: 10, 1: 5, 2: 2, 3: -1}
    # p0 and p2 corrected (no table owns this topic: the label is the topic's name)
    assert registry.get_sample_value("corridor_recovery_end_corrected_total",
                                     {"table": topic}) == 2.0


# ---- workers ----------------------------------------------------------------------------------

CHANGELOG_TABLES = ("timelines", "orders", "totals")


def changelog_tps(app_id: str) -> list:
    tps = [TopicPartition(f"{app_id}-{t}-changelog", p) for t in CHANGELOG_TABLES for p in range(4)]
    return tps + [TopicPartition(f"{app_id}-clock-changelog", 0)]


def short_tails(bootstrap: str, app_id: str) -> dict:
    """{(table, partition): (ListOffsets end, true end)} of the app's changelog partitions whose
    ListOffsets answer stops short of their records."""
    tps = changelog_tps(app_id)
    listed = list_offsets(bootstrap, tps)
    ends = asyncio.run(true_end_offsets(bootstrap, tps, listed))
    return {(tp.topic[len(app_id) + 1:-len("-changelog")], tp.partition): (listed[tp], ends[tp])
            for tp in tps if ends[tp] != listed[tp]}


def recovery_counts(worker) -> dict:
    """{(counter, table): value} of the worker's two recovery counters."""
    m = worker.metrics()
    return {(name[len("corridor_recovery_"):-len("_total")], dict(labels)["table"]): v
            for (name, labels), v in m.items()
            if name in ("corridor_recovery_end_corrected_total", "corridor_recovery_offset_ahead_total")}


def alive(*workers) -> bool:
    for w in workers:
        if w.proc.poll() is not None:
            raise AssertionError(f"worker {w.name} exited with {w.proc.returncode}:\n{w.log_tail()}")
    return True


def test_a_worker_that_read_past_a_short_clock_end_survives_the_next_rebalance(broker, logdir):
    """The clock GlobalTable is read all along, so a worker's recovery offset for it follows the
    true end; a marker-less multi-record last batch then made ListOffsets answer less, and faust
    stopped the worker with ConsistencyError at the next rebalance ("18 > 15" in issue 13)."""
    app_id = unique_app_id("corridor-tail-clock")
    topic = f"{app_id}-clock-changelog"
    t0 = 1_700_000_000.0                        # 2023: far from the wall clock, so not "live"
    w1 = Worker(broker.url, app_id, logdir, name="reader")
    w2 = Worker(broker.url, app_id, logdir, name="joiner")
    try:
        w1.start()
        # the clock is a faust GlobalTable: JSON keys and values
        assert write_batch(broker.bootstrap, topic, 0, [(b'"p0"', b"%.1f" % t0)]) == [0]
        assert write_batch(broker.bootstrap, topic, 0, [(b'"p%d"' % p, b"%.1f" % (t0 + 1 + p))
                                                        for p in range(4)]) == [1, 2, 3, 4]
        assert short_tails(broker.bootstrap, app_id) == {("clock", 0): (2, 5)}
        # w1 reads the clock changelog all along: it has read the whole last batch
        poll(lambda: alive(w1) and sample(w1.metrics(), "corridor_stream_time_seconds") == t0 + 4,
             20, what="the reader's stream time at the last clock record")
        w2.start()
        poll(lambda: alive(w1, w2) and sorted(
            sample(w.metrics(), "corridor_partitions_assigned") for w in (w1, w2)) == [2.0, 2.0],
             60, 0.2, "the four partitions split between the two workers")
        alive(w1, w2)
        for w in (w1, w2):
            assert sample(w.metrics(), "corridor_stream_time_seconds") == t0 + 4
            counts = recovery_counts(w)
            assert {k: v for k, v in counts.items() if k[0] == "offset_ahead"} == {
                ("offset_ahead", t): 0.0 for t in ("clock", "risk", *CHANGELOG_TABLES)}
            # each recovery since the tail was written found the clock's answer short
            assert counts["end_corrected", "clock"] >= 1.0
            assert {k: v for k, v in counts.items() if k[0] == "end_corrected" and v} == {
                ("end_corrected", "clock"): counts["end_corrected", "clock"]}
    finally:
        w2.stop()
        w1.stop()


MARKER_HOOK = Path(__file__).resolve().parent / "marker_hook"

#: Families that add up over workers (each exports the partitions it owns) and do not depend on
#: the worker's clock.
ADDITIVE = ("corridor_shipments_delivered_total", "corridor_shipment_exceptions_total",
            "corridor_shipment_transit_seconds_count", "corridor_shipment_transit_seconds_sum",
            "corridor_stage_dwell_seconds_count", "corridor_stage_dwell_seconds_sum",
            "corridor_shipments_in_stage")


def fleet(workers) -> dict:
    out: dict = {}
    for w in workers:
        for k, v in w.metrics().items():
            if k[0] in ADDITIVE and v:
                out[k] = out.get(k, 0.0) + v
    return out


def lag(workers) -> float:
    return sum(sum(series(w.metrics(), "corridor_consumer_lag").values()) for w in workers)


def wait_for_figures(workers, want: dict, timeout: float, what: str) -> None:
    """Poll until the workers' lag is 0 and their fleet figures are `want`; else assert the diff."""
    try:
        poll(lambda: alive(*workers) and lag(workers) == 0 and fleet(workers) == want,
             timeout, 0.3, what)
    except AssertionError:
        pass            # the assertions below show what differs
    alive(*workers)
    got = fleet(workers)
    diff = {k: (want.get(k), got.get(k)) for k in set(want) | set(got) if want.get(k) != got.get(k)}
    assert (lag(workers), len(diff)) == (0, 0), \
        f"{what}: {sorted(diff.items(), key=str)[:6]}; logs {[str(w.log_path) for w in workers]}"


def _scenario():
    """test_crash's events: customs and orders first, then the shipment events; the expected
    additive figures (the pure engine's)."""
    sim = list(histories(11, 300, scenario="customs-backlog", start=T0_EPOCH - 200 * 86400,
                         duplicate_rate=0.02))
    first = [e for e in sim if e.topic != "shipments"]
    second = [e for e in sim if e.topic == "shipments"]
    expected = expected_metrics(first + second)
    return first, second, {k: v for k, v in expected.items() if k[0] in ADDITIVE and v}


def _hooked(mode: str, trigger: Path) -> dict:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(MARKER_HOOK),
                                                        os.environ.get("PYTHONPATH")])),
            "CORRIDOR_TEST_MARKER_HOOK": mode, "CORRIDOR_TEST_MARKER_TRIGGER": str(trigger),
            "CORRIDOR_TEST_KILL_MIN_RECORDS": "20"}


def _consumed(worker) -> float:
    return sum(series(worker.metrics(), "corridor_events_consumed_total").values())


def _recover_then_rebalance(broker, successor, joiner, want) -> None:
    """The successor recovers the changelogs and ends with `want`; a joiner takes half of the
    partitions, no worker stops and the fleet still has `want`; no store was ever past an end."""
    successor.start()
    wait_for_figures([successor], want, 90, "the successor's figures")
    counts = recovery_counts(successor)
    assert counts["end_corrected", "timelines"] >= 1.0
    assert {k: v for k, v in counts.items() if k[0] == "offset_ahead" and v} == {}
    joiner.start()
    poll(lambda: alive(successor, joiner) and sorted(
        sample(w.metrics(), "corridor_partitions_assigned") for w in (successor, joiner))
         == [2.0, 2.0], 60, 0.2, "the four partitions split between the two workers")
    wait_for_figures([successor, joiner], want, 60, "the fleet's figures")
    for w in (successor, joiner):
        counts = recovery_counts(w)
        assert {k: v for k, v in counts.items() if k[0] == "offset_ahead" and v} == {}


def test_a_worker_killed_between_a_commits_records_and_its_markers(broker, logdir):
    """SIGKILL right after a commit's changelog records were acknowledged, before their end
    markers: the timelines changelog ends with multi-record batches that ListOffsets answers
    short. The successor reads every record (and processes the uncommitted events again), ends
    with the pure engine's figures, and the rebalance after it stops no worker."""
    first, second, want = _scenario()
    app_id = unique_app_id("corridor-tail-kill")
    keep = {"CORRIDOR_RETENTION_SECONDS": str(10 * 365 * 86400)}
    trigger = logdir / f"{app_id}-trigger"
    victim = Worker(broker.url, app_id, logdir, name="victim",
                    env={**keep, **_hooked("kill", trigger)})
    successor = Worker(broker.url, app_id, logdir, name="successor", env=keep)
    joiner = Worker(broker.url, app_id, logdir, name="joiner", env=keep)
    try:
        victim.start()
        send(broker.bootstrap, first)
        poll(lambda: alive(victim) and _consumed(victim) == len(first), 60, 0.2,
             "first phase consumed")
        trigger.touch()
        send(broker.bootstrap, second)
        poll(lambda: victim.proc.poll() is not None, 60, 0.1, "the victim killed by the hook")
        assert victim.proc.returncode == -signal.SIGKILL
        assert "marker hook: SIGKILL before the marker of" in victim.log_tail(200)
        short = short_tails(broker.bootstrap, app_id)
        # killed at a timelines marker; the orders markers sent just before it may not have left
        # the process either (totals, the next rank, were not sent at all)
        assert "timelines" in {table for table, _p in short} <= {"timelines", "orders"}, short
        _recover_then_rebalance(broker, successor, joiner, want)
    finally:
        joiner.stop()
        successor.stop()
        victim.kill()


def test_records_whose_markers_never_reached_the_broker_are_recovered(broker, logdir):
    """A worker whose timelines markers are lost (as in a broker freeze) goes on and commits its
    offsets: the changelog ends with multi-record batches that ListOffsets answers short, and
    no event will be processed again. Recovery to ListOffsets' answer lost those records' state
    (and a store that had read past it died with ConsistencyError at the next rebalance); the
    successor reads them all and has the pure engine's figures, before and after a rebalance."""
    first, second, want = _scenario()
    app_id = unique_app_id("corridor-tail-drop")
    keep = {"CORRIDOR_RETENTION_SECONDS": str(10 * 365 * 86400)}
    trigger = logdir / f"{app_id}-trigger"
    victim = Worker(broker.url, app_id, logdir, name="victim",
                    env={**keep, **_hooked("drop", trigger)})
    successor = Worker(broker.url, app_id, logdir, name="successor", env=keep)
    joiner = Worker(broker.url, app_id, logdir, name="joiner", env=keep)
    try:
        victim.start()
        trigger.touch()
        send(broker.bootstrap, first)           # the cross-topic order the figures assume
        poll(lambda: alive(victim) and _consumed(victim) == len(first), 60, 0.2,
             "first phase consumed")
        send(broker.bootstrap, second)
        wait_for_figures([victim], want, 90, "the victim's figures")
        assert "marker hook: dropping the markers of" in victim.log_tail(400)
        victim.kill()                           # everything was committed: nothing is redone
        short = short_tails(broker.bootstrap, app_id)
        assert {table for table, _p in short} == {"timelines"}, short
        _recover_then_rebalance(broker, successor, joiner, want)
        assert sum(_consumed(w) for w in (successor, joiner)) == 0
    finally:
        joiner.stop()
        successor.stop()
        victim.kill()
