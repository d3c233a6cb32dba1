"""How the worker tells what it has read of a topic partition (Pipeline._progress), the input of
the watermark rule (streams/domain/watermark.py): a topic partition it has processed nothing from
since its assignment lets the watermark go only if it is known to hold nothing unread.

The consumer is aiokafka's own subscription state, driven as the fetcher drives it (a fetch
response sets the high-water mark, handing records to faust's getmany moves the position), and
faust's committed offsets as its seek to them on an assignment leaves them. The agent's side is
`note_time`, which it calls for every record it processes.

The chaos trial that found it (benchmarks/chaos.py, seed 15): a restarted worker was given
partitions with a backlog; the consumer had fetched every record of `shipments` and
`customs-events` (fetch position = high-water mark) while they still waited, unprocessed, in
faust's getmany and the agent's stream queue. Both counted as caught up and empty, so the idle
tick settled the partition against the wall clock (every ended shipment final), and then, with the
shipments being processed ahead of the queued customs events, against the shipments' clock: 718
customs events (import releases among them) were read after their shipments' figures were final.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from types import SimpleNamespace

from aiokafka.consumer.subscription_state import SubscriptionState
from aiokafka.structs import TopicPartition
from faust.types import TP

from streams.domain.policy import SlaPolicy
from streams.settings import Settings
from streams.worker.pipeline import Pipeline, Tables

DAY = 86400.0
T0 = 1_736_000_000.0                 # event times of the records (January 2025)


class Consumer:
    """What Pipeline reads of faust's consumer: its aiokafka consumer's subscription state (through
    the consumer thread) and the committed offsets faust sought the stream partitions to."""

    def __init__(self, tps):
        self.subscription = SubscriptionState()
        self.subscription.subscribe({tp.topic for tp in tps})
        self.subscription.assign_from_subscribed({TopicPartition(*tp) for tp in tps})
        self._committed_offset = defaultdict(lambda: None)
        self._thread = SimpleNamespace(_consumer=SimpleNamespace(_subscription=self.subscription))

    def state(self, tp):
        return self.subscription.subscription.assignment.state_value(TopicPartition(*tp))

    def sought(self, tp, committed: int | None) -> None:
        """faust's perform_seek on an assignment: the position at the committed offset (the
        beginning without one), kept as faust keeps it (0 and none are both None)."""
        self.state(tp).seek(committed or 0)
        self._committed_offset[TP(*tp)] = committed or None

    def fetched(self, tp, highwater: int, handed_out: int | None = None,
                at_ms: int | None = None) -> None:
        """A fetch response (the high-water mark, and when it was answered: aiokafka's fetcher sets
        both), and getmany taking records up to `handed_out`."""
        state = self.state(tp)
        state.highwater = highwater
        state.timestamp = int(1000 * time.time()) if at_ms is None else at_ms
        if handed_out is not None:
            state.consumed_to(handed_out)

    def response(self, answers: dict) -> None:
        """One fetch response answering several partitions at once, as the consumer's long poll
        does for every partition it has nothing buffered for: {tp: high-water mark, or
        (high-water mark, handed out)}, all stamped with the same time."""
        at_ms = int(1000 * time.time())
        for tp, answer in answers.items():
            highwater, handed_out = answer if isinstance(answer, tuple) else (answer, None)
            self.fetched(tp, highwater, handed_out, at_ms)


def pipeline(consumer: Consumer, monitor=None, idle: float = 2.0) -> Pipeline:
    app = SimpleNamespace(consumer=consumer,
                          monitor=monitor or SimpleNamespace(tp_end_offsets={}, tp_read_offsets={}))
    return Pipeline(Settings(idle_seconds=idle), SlaPolicy.load(), app, Tables({}, {}, {}, {}), {})


def fresh_assignment(p: int, idle: float) -> tuple[dict[str, TP], "Consumer", Pipeline]:
    """The shipment side of partition `p` newly assigned, no committed offset on any topic, and
    the pipeline reading it (idle period `idle` seconds)."""
    tps = shipment_side(Settings(), p)
    consumer = Consumer(tps.values())
    for tp in tps.values():
        consumer.sought(tp, None)
    return tps, consumer, pipeline(consumer, idle=idle)


def shipment_side(settings: Settings, p: int) -> dict[str, TP]:
    s = settings
    return {"shipments": TP(s.topic_shipments, p), "customs": TP(s.topic_customs, p),
            "rerouted-shipments": TP(s.rerouted_topics["shipments"], p),
            "rerouted-customs": TP(s.rerouted_topics["customs"], p)}


def process(pipe: Pipeline, tp: TP, offsets: range, first_time: float) -> float:
    """The agent processes the records at `offsets`, an hour apart in event time; the last time."""
    t = first_time
    for i, offset in enumerate(offsets):
        t = first_time + i * 3600.0
        pipe.note_time(tp.topic, tp.partition, offset, t)
    return t


def run(test):
    asyncio.run(test())     # aiokafka's subscription state wants a running loop


def test_records_fetched_but_not_processed_since_the_assignment_hold_the_watermark():
    async def test():
        tps = shipment_side(Settings(), 0)
        consumer = Consumer(tps.values())
        pipe = pipeline(consumer)
        # A new assignment: the previous owner processed shipments to 25 and customs to 10; the
        # rerouted topics are empty.
        consumer.sought(tps["shipments"], 25)
        consumer.sought(tps["customs"], 10)
        for name in ("rerouted-shipments", "rerouted-customs"):
            consumer.sought(tps[name], None)
            consumer.fetched(tps[name], 0)
        # The consumer fetched every record and faust's getmany took them: they wait for the agent.
        consumer.fetched(tps["shipments"], 40, handed_out=40)
        consumer.fetched(tps["customs"], 30, handed_out=30)
        assert pipe.settle_mark(0) is None          # records wait unread: nothing may settle
        assert pipe.watermark(0) is None

        # The agent processes the shipments first; the customs events still wait in its queue.
        shipped = process(pipe, tps["shipments"], range(25, 40), T0)
        assert pipe.settle_mark(0) is None          # not the shipments' clock: customs unread
        assert pipe.watermark(0) is None

        cleared = process(pipe, tps["customs"], range(10, 30), T0 - 2 * DAY)
        assert pipe.settle_mark(0) == min(shipped, cleared)
        assert pipe.watermark(0) == min(shipped, cleared)
    run(test)


def test_a_topic_partition_whose_records_were_all_processed_before_the_assignment_holds_nothing():
    async def test():
        tps = shipment_side(Settings(), 1)
        consumer = Consumer(tps.values())
        pipe = pipeline(consumer)
        committed = {"shipments": 40, "customs": 30}
        for name, tp in tps.items():
            consumer.sought(tp, committed.get(name))
        consumer.response({tp: committed.get(name, 0) for name, tp in tps.items()})
        # Nothing to read on any topic of the side: the partition settles against the wall clock
        # (the idle rule: a replay's last shipments become final).
        before = time.time()
        assert before <= pipe.settle_mark(1) <= time.time()
        # A record arrives on customs: it is unread until the agent has processed it. The same
        # fetch response answers the other topics of the side (nothing new there).
        consumer.response({tps["customs"]: (31, 31), tps["shipments"]: 40,
                           tps["rerouted-shipments"]: 0, tps["rerouted-customs"]: 0})
        assert pipe.settle_mark(1) is None
        process(pipe, tps["customs"], range(30, 31), T0)
        assert pipe.settle_mark(1) == T0
    run(test)


def test_an_end_offset_seen_in_an_earlier_assignment_does_not_count_as_caught_up():
    async def test():
        tps = shipment_side(Settings(), 2)
        consumer = Consumer(tps.values())
        # This process owned the partition before and saw it end at 30 (faust's monitor keeps
        # that across assignments); since then 10 more records were produced. No fetch of this
        # assignment has answered yet.
        monitor = SimpleNamespace(tp_end_offsets={tp: 30 for tp in tps.values()}, tp_read_offsets={})
        pipe = pipeline(consumer, monitor)
        for tp in tps.values():
            consumer.sought(tp, 30)
        assert pipe.settle_mark(2) is None
        consumer.fetched(tps["shipments"], 40)
        consumer.fetched(tps["customs"], 40)
        assert pipe.settle_mark(2) is None
    run(test)


IDLE = 0.3          # CORRIDOR_IDLE_SECONDS of the tests below (seconds of wall time)


def test_a_topic_partition_the_consumer_stopped_hearing_about_keeps_holding_the_watermark():
    """corridor demo (seed 7): the worker reported 13 open shipments in corridor `unknown`, stage
    last_mile, after all deliveries were final. Reproduced by withholding fetch responses for
    `customs-events` for a few seconds early in the run: the agent processed every customs event
    the consumer knew of (its last high-water mark), customs-events went quiet for the idle period
    and counted as caught up, so the shipments' clock alone moved the watermark; ended shipments
    were settled (their customs stages missing) and forgotten a retention later, and their customs
    events, read afterwards, started timelines without a shipment event: no corridor, an import
    release, open forever. A high-water mark says nothing once the consumer has stopped hearing
    about the partition while it hears about the other topics of the same partition."""
    async def test():
        tps, consumer, pipe = fresh_assignment(0, idle=IDLE)
        # one fetch response answers every partition
        consumer.response({tp: {"shipments": 10, "customs": 10}.get(name, 0)
                           for name, tp in tps.items()})
        consumer.fetched(tps["customs"], 10, handed_out=10)
        customs_clock = process(pipe, tps["customs"], range(0, 10), T0)
        consumer.fetched(tps["shipments"], 10, handed_out=10)
        process(pipe, tps["shipments"], range(0, 10), T0)
        # From now on the broker answers for shipments and the rerouted topics, never for customs
        # (the consumer does not know that customs events wait there); the shipments run on.
        t = T0 + 40 * DAY
        end = 10
        deadline = time.monotonic() + 2 * IDLE
        while time.monotonic() < deadline:
            end += 1
            for name in ("shipments", "rerouted-shipments", "rerouted-customs"):
                consumer.fetched(tps[name], end if name == "shipments" else 0,
                                 handed_out=end if name == "shipments" else None)
            pipe.note_time(tps["shipments"].topic, 0, end - 1, t)
            await asyncio.sleep(IDLE / 10)
        # customs-events: processed to its last known end, quiet for twice the idle period; its
        # last answer is older than the shipments' answers: it still holds the watermark.
        assert pipe.watermark(0) == customs_clock
        assert pipe.settle_mark(0) == customs_clock

        # The broker answers for customs-events again, at the same end: now it is known to hold
        # nothing unread, and the idle rule lets the shipments' clock move the watermark.
        consumer.response({tps[name]: {"shipments": end, "customs": 10}.get(name, 0)
                           for name in ("shipments", "customs", "rerouted-shipments",
                                        "rerouted-customs")})
        assert pipe.watermark(0) == t
        assert pipe.settle_mark(0) == t
    run(test)


def test_after_a_stall_the_last_answers_do_not_make_the_partition_idle():
    """A worker that did not run for longer than the idle period (CPU starved, a long pause, SIGSTOP)
    has heard nothing from the broker meanwhile: every topic looks caught up (its last answers) and
    quiet. Measured live (SIGSTOP of the worker for 5 s during a simulation): the partition then
    settled against the wall clock, 73 days of event time ahead of records the consumer had not
    fetched yet. Only an answer of the idle period counts."""
    async def test():
        tps, consumer, pipe = fresh_assignment(3, idle=IDLE)
        for tp in tps.values():
            consumer.fetched(tp, 0)
        consumer.fetched(tps["shipments"], 5, handed_out=5)
        consumer.fetched(tps["customs"], 5, handed_out=5)
        shipped = process(pipe, tps["shipments"], range(0, 5), T0)
        cleared = process(pipe, tps["customs"], range(0, 5), T0 - DAY)
        await asyncio.sleep(2 * IDLE)           # the stall: no record, no answer
        # Nothing is known of any topic (the empty rerouted ones included) until the broker answers
        # again: nothing may settle or be forgotten, and certainly not against the wall clock.
        assert pipe.settle_mark(3) is None
        assert pipe.watermark(3) is None
        # the consumer runs again: one response confirms the ends
        consumer.response({tp: {"shipments": 5, "customs": 5}.get(name, 0)
                           for name, tp in tps.items()})
        before = time.time()
        assert before <= pipe.settle_mark(3) <= time.time()
        assert pipe.watermark(3) == max(shipped, cleared)
    run(test)


def test_topics_answered_by_different_fetch_responses_still_become_idle():
    """Partitions led by different brokers are answered by different fetch responses, a little
    apart: answers within the slack (FETCH_ANSWER_SLACK_SECONDS, at most a quarter of the idle
    period) are one round. Without it the topic answered first looked stale at every round and
    the partition never became idle: the last shipments of a replay never became final."""
    async def test():
        tps, consumer, pipe = fresh_assignment(2, idle=2.0)
        consumer.fetched(tps["shipments"], 5, handed_out=5)
        consumer.fetched(tps["customs"], 5, handed_out=5)
        shipped = process(pipe, tps["shipments"], range(0, 5), T0)
        process(pipe, tps["customs"], range(0, 5), T0 - DAY)
        # broker A answers shipments and the rerouted shipments, broker B 0.2 s later the rest;
        # the next round again A first: the topic answered first is always the older one
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            now_ms = int(1000 * time.time())
            consumer.fetched(tps["shipments"], 5, at_ms=now_ms)
            consumer.fetched(tps["rerouted-shipments"], 0, at_ms=now_ms)
            await asyncio.sleep(0.2)
            now_ms = int(1000 * time.time())
            consumer.fetched(tps["customs"], 5, at_ms=now_ms)
            consumer.fetched(tps["rerouted-customs"], 0, at_ms=now_ms)
            await asyncio.sleep(0.05)
        # every topic caught up and quiet for longer than the idle period (2 s): the partition
        # settles against the wall clock, and the watermark is the latest clock read
        before = time.time()
        assert before <= pipe.settle_mark(2) <= time.time()
        assert pipe.watermark(2) == shipped
    run(test)

