"""Property, end to end: every message a real worker consumes is applied, dropped as a duplicate,
or dead-lettered with the reason its fault deserves, and the counters say exactly that.

Hypothesis generates batches of 5-40 messages over the three input topics (tests/strategies.py:
valid builder events, resends, and every rejection reason, each with the outcome its generator
chose). One embedded broker and one `corridor worker` serve the whole module; each example uses
fresh shipment, order and event ids, so examples do not interact and are checked by the change
of the worker's counters and dead-letter topics over the example:

- per topic: consumed = messages produced = applied + duplicate + rejected, and each of applied,
  duplicate and rejected{reason} is what the generator expects;
- `<topic>.dlq` gains exactly the rejected messages: one record each (found by its source
  partition and offset), same key, value and original headers, `corridor.reason` as expected,
  and the other corridor.* headers well formed.

Deterministic (derandomize, no example database), so a CI failure replays the same batches. No
shrinking: each step costs a round trip through the worker, and the failing batch is printed
whole, every message labelled with how it was made.
"""
from __future__ import annotations

import itertools
import re
import time
import uuid
from collections import Counter
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from builders import customs, T0_EPOCH, ship
from harness import Worker, consume_all, poll, series, unique_app_id
from streams.broker.embedded import EmbeddedBroker
from streams.domain.partitioning import partition_for
from strategies import APPLIED, DAY, DUPLICATE, TOPICS, Clock, batches, format_time

pytestmark = pytest.mark.e2e

# Event times. The worker decodes against the wall clock, and by event time (a per-partition
# clock or watermark, 30-day retention) it forgets ended shipments and orders and rejects events
# for unknown shipments that are older than the retention as `expired`. So valid times lie in a
# 20-day window, every partition's clock is moved into it before the first example (`primed`),
# and nothing is ever forgotten: a resend of a valid event is always a duplicate. Stale events
# (for fresh shipments) are more than the retention older than the window's *start*, so they
# are `expired` whichever in-window time the partition's clock shows. "Far future" starts in
# 2100 and valid times end in 2025: the outcomes hold whenever the test runs, and constant
# bounds keep the generated data identical from run to run (the unit properties probe the
# decoder's 7-day limit itself).
RETENTION = 30 * DAY                                     # Settings.retention_seconds
WINDOW_END = int(T0_EPOCH) + 20 * DAY
CLOCK = Clock(valid_min=int(T0_EPOCH), valid_max=WINDOW_END,
              future_min=int(datetime(2100, 1, 1, tzinfo=timezone.utc).timestamp()),
              stale_max=int(T0_EPOCH) - RETENTION - DAY)
assert CLOCK.future_min > time.time() + 8 * DAY

SETTLE_TIMEOUT = 90.0        # two shared cores, a worker that may be mid-commit: be generous
CORRIDOR_HEADERS = ("corridor.reason", "corridor.detail", "corridor.source.topic",
                    "corridor.source.partition", "corridor.source.offset", "corridor.rejected_at")
ISO_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")   # UTC, milliseconds (contract.deadletter)

_run = uuid.uuid4().hex[:6]
_examples = itertools.count(1)


def fresh_namespace() -> str:
    return f"p{_run}-{next(_examples)}"


@pytest.fixture(scope="module")
def worker(broker, logdir):
    w = Worker(broker.url, unique_app_id("corridor-props"), logdir).start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def producer(broker, worker):
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=5,
                      max_request_size=4 * 1024 * 1024)
    yield p
    p.close(5)


@pytest.fixture(scope="module")
def primed(worker, producer):
    """Every partition's event-time clock inside the valid window: one shipment event and one
    customs event per partition (a straggler is measured against its own topic's clock), keyed
    by an id that belongs there (a record on another partition is sent on to its own)."""
    parts = sorted(producer.partitions_for("shipments"))
    for p in parts:
        sid = next(k for i in itertools.count()
                   if partition_for((k := f"prime-{_run}-{i}").encode(), len(parts)) == p)
        ev = ship(sid, "picked_up", 0)
        ev["occurred_at"] = format_time(WINDOW_END, None)
        producer.send("shipments", key=ev["shipment_id"].encode(), value=orjson.dumps(ev),
                      partition=p)
        cev = customs(sid, "declaration_lodged", 0)
        cev["occurred_at"] = format_time(WINDOW_END, None)
        producer.send("customs-events", key=cev["shipment_id"].encode(), value=orjson.dumps(cev),
                      partition=p)
    producer.flush(30)
    poll(lambda: counters(worker)[("applied", "shipments", "")] == len(parts)
         and counters(worker)[("applied", "customs-events", "")] == len(parts), SETTLE_TIMEOUT,
         0.2, "priming events applied")


class DeadLetters:
    """Reads the three dead-letter topics from where the previous read stopped."""

    def __init__(self, bootstrap: str):
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                      enable_auto_commit=False, auto_offset_reset="earliest",
                                      max_partition_fetch_bytes=4 * 1024 * 1024)
        parts = []
        for topic in TOPICS.values():
            dlq = f"{topic}.dlq"
            found = poll(lambda: self.consumer.partitions_for_topic(dlq), 30, 0.2, f"{dlq} exists")
            parts += [TopicPartition(dlq, p) for p in sorted(found)]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)     # the module's broker is fresh

    #: Sources (topic, partition, offset) of every message earlier examples produced.
    earlier: set = set()

    def take(self, expected: int, timeout: float) -> list:
        """Every new record, once `expected` have arrived or the deadline passed, plus any that
        follow within a short grace poll (so "exactly" can be asserted).

        A record whose source message belongs to an earlier example is a redelivery: delivery is
        at-least-once, so a message re-read after a commit was lost (a rebalance, a restart) is
        rejected, and dead-lettered, again. Those are set aside, not counted for this example.
        """
        out: list = []
        deadline = time.monotonic() + timeout

        def keep(records):
            for r in records:
                h = dict(r.headers or [])
                source = (h.get("corridor.source.topic", b"").decode(),
                          int(h.get("corridor.source.partition", b"-1")),
                          int(h.get("corridor.source.offset", b"-1")))
                if source not in self.earlier:
                    out.append(r)
        while len(out) < expected and time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=200).values():
                keep(records)
        for records in self.consumer.poll(timeout_ms=300).values():
            keep(records)
        return out

    def close(self):
        self.consumer.close()


@pytest.fixture(scope="module")
def dead_letters(broker, worker):
    d = DeadLetters(broker.bootstrap)
    assert d.take(0, 1.0) == [], "dead-letter topics not empty before the first example"
    yield d
    d.close()


def counters(worker) -> Counter:
    """{(counter, topic, reason): value} of the per-process event counters, and rebalances."""
    m = worker.metrics()
    out: Counter = Counter()
    for name in ("consumed", "applied", "duplicate", "rejected"):
        for labels, v in series(m, f"corridor_events_{name}_total").items():
            lab = dict(labels)
            out[(name, lab["topic"], lab.get("reason", ""))] += v
    out[REBALANCES] = sum(series(m, "corridor_rebalances_total").values())
    return out


REBALANCES = ("rebalances", "", "")


def delta(after: Counter, before: Counter) -> Counter:
    d = Counter({k: after[k] - before.get(k, 0) for k in after})
    return Counter({k: v for k, v in d.items() if v})


def expected_counts(batch) -> Counter:
    out: Counter = Counter()
    for m in batch:
        out[("consumed", m.topic, "")] += 1
        if m.expect == APPLIED:
            out[("applied", m.topic, "")] += 1
        elif m.expect == DUPLICATE:
            out[("duplicate", m.topic, "")] += 1
        else:
            out[("rejected", m.topic, m.expect)] += 1
    return out


def per_topic_identity(d: Counter) -> dict:
    """topic -> (consumed, applied + duplicate + rejected)."""
    topics = {t for (_, t, _) in d}
    return {t: (d[("consumed", t, "")],
                sum(v for (name, tt, _), v in d.items() if tt == t and name != "consumed"))
            for t in topics}


def produce(producer, batch) -> dict:
    """Send in order; {(topic, partition, offset): message} from the broker's acknowledgements."""
    futures = [(m, producer.send(m.topic, key=m.key, value=m.value, headers=list(m.headers)))
               for m in batch]
    producer.flush(30)
    where = {}
    for m, fut in futures:
        md = fut.get(timeout=30)
        where[(md.topic, md.partition, md.offset)] = m
    return where


def describe(batch) -> str:
    return "\n".join(f"  #{i} {m!r}" for i, m in enumerate(batch))


@settings(max_examples=25, deadline=None, derandomize=True, database=None, print_blob=False,
          phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example, HealthCheck.filter_too_much])
@given(batch=batches(CLOCK, namespace=fresh_namespace, bad_keys=True))
def test_every_message_is_applied_deduplicated_or_dead_lettered(worker, producer, primed,
                                                                 dead_letters, batch):
    note(f"batch:\n{describe(batch)}")
    for outcome in sorted({m.expect for m in batch}):
        event(outcome)      # --hypothesis-show-statistics: share of examples with each outcome
    before = counters(worker)
    where = produce(producer, batch)
    assert len(where) == len(batch), "the broker acknowledged two messages at one offset"
    expected = expected_counts(batch)
    consumed = {t: n for (name, t, _), n in expected.items() if name == "consumed"}

    def settled():
        worker.ready()                  # fails at once, with the log, if the worker died
        d = delta(counters(worker), before)
        got = per_topic_identity({k: v for k, v in d.items() if k != REBALANCES})
        over = {t: c for t, (c, _) in got.items() if c > consumed.get(t, 0)}
        assert not over, f"consumed more than produced: {over} > {consumed}"
        done = all(got.get(t, (0, 0)) == (n, n) for t, n in consumed.items())
        return d if done else None

    try:
        got = poll(settled, SETTLE_TIMEOUT, 0.1, "every message consumed and accounted for")
    except AssertionError as err:
        raise AssertionError(f"{err}\nexpected {dict(expected)}\nworker log:\n"
                             f"{worker.log_tail()}") from None

    # A rebalance empties the worker's partition clocks until it rebuilds them, and in between a
    # stale event is applied instead of expired (see the report on Pipeline.too_old): say so.
    rebalanced = got.pop(REBALANCES, 0)
    hint = f" (the worker rebalanced {rebalanced:.0f}x during this example)" if rebalanced else ""

    # Per topic: consumed = produced = applied + duplicate + rejected (polled above), and each
    # figure is what the generator chose for the messages it made.
    for topic, (c, outcomes) in per_topic_identity(got).items():
        assert c == outcomes == consumed[topic]
    assert got == expected, hint

    # The dead-letter topics gained exactly the rejected messages, once each, unchanged.
    rejected = {coords: m for coords, m in where.items() if m.rejected}
    records = dead_letters.take(len(rejected), SETTLE_TIMEOUT)
    DeadLetters.earlier.update(where)
    seen = set()
    for r in records:
        headers = [(k, v) for k, v in (r.headers or [])]
        h = dict(headers)
        assert all(name in h for name in CORRIDOR_HEADERS), headers
        source = (h["corridor.source.topic"].decode(), int(h["corridor.source.partition"]),
                  int(h["corridor.source.offset"]))
        assert source not in seen, f"dead-lettered twice: {source}"
        seen.add(source)
        m = rejected.get(source)
        assert m is not None, (f"{r.topic} record for {source}, which is not a rejected message "
                               f"of this batch; key={r.key!r} reason={h['corridor.reason']!r}")
        assert r.topic == f"{m.topic}.dlq"
        assert (r.key, r.value) == (m.key, m.value), m.how
        assert h["corridor.reason"].decode() == m.expect, m.how
        assert h["corridor.detail"], m.how
        assert ISO_Z.fullmatch(h["corridor.rejected_at"].decode())
        assert [kv for kv in headers if not kv[0].startswith("corridor.")] == list(m.headers)
    missing = [rejected[c] for c in rejected.keys() - seen]
    assert not missing, f"rejected but not dead-lettered: {missing}"
    assert len(records) == len(rejected)


def test_a_key_that_is_not_utf8_is_dead_lettered_as_key_mismatch(logdir):
    """The decoder rejects a key that is not UTF-8 as key_mismatch (streams/contract/codec.py), if the
    message reaches it. Own broker and worker: the agent crash must not touch the property."""
    broker = EmbeddedBroker(port=0).start()
    try:
        w = Worker(broker.url, unique_app_id("corridor-badkey"), logdir, name="badkey").start()
        p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1)
        try:
            bad, good = ship("S-bad-key", "picked_up", 1.0), ship("S-good-key", "picked_up", 2.0)
            p.send("shipments", key=b"S-bad-key\xff", value=orjson.dumps(bad))
            p.send("shipments", key=b"S-good-key", value=orjson.dumps(good))
            p.flush(30)
            poll(lambda: counters(w)[("applied", "shipments", "")] == 1, SETTLE_TIMEOUT, 0.2,
                 "the good event applied")
            c = counters(w)
            assert (c[("consumed", "shipments", "")],
                    c[("rejected", "shipments", "key_mismatch")]) == (2, 1), w.log_tail()
            dead = consume_all(broker.bootstrap, "shipments.dlq", 1)
            assert [(r.key, dict(r.headers)["corridor.reason"]) for r in dead] == [
                (b"S-bad-key\xff", b"key_mismatch")]
        finally:
            p.close(5)
            w.stop()
    finally:
        broker.stop()
