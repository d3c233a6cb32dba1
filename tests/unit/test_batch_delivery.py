"""faust_patches.delivery's batch path: a topic partition's fetched records are applied in order in
one call, acked once each as faust's Consumer.ack would, under a current event of their partition;
a rebalance stops a batch where it is (the rest is fetched again after the seek), and a record
whose handler suspends is tracked as unacked so that faust's wait_empty waits for it. The e2e
tests (test_pipeline, test_crash, test_rebalance, chaos) run the real worker through it."""
import asyncio
import weakref
from collections import defaultdict
from types import SimpleNamespace

from faust.streams import current_event
from faust.types import TP

from streams.worker.faust_patches.delivery import BATCH_YIELD_EVERY, deliver_batch, deliver_fetch


class Record:
    """An aiokafka ConsumerRecord's fields that the batch path reads."""

    def __init__(self, offset: int):
        self.offset, self.timestamp, self.headers = offset, 1_700_000_000_123, ((b"h", b"v"),)
        self.key, self.value = f"S{offset}".encode(), b"{}"


class Message(SimpleNamespace):
    """A fetched message (faust's Message is weak-referenceable: _unacked_messages is a WeakSet)."""

    __hash__ = object.__hash__


class FakeConsumer:
    """The attributes of faust's Consumer that the batch path reads and writes, as faust keeps them."""

    def __init__(self):
        self.flow_active = True
        self.should_stop = False
        self._read_offset = defaultdict(lambda: None)
        self._committed_offset = defaultdict(lambda: None)
        self._acked = defaultdict(list)
        self._acked_index = defaultdict(set)
        self._n_acked = 0
        self._unacked_messages = weakref.WeakSet()
        self._waiting_for_ack = None
        self._buffered_partitions = set()
        self.gaps = []
        self.messages_in = []
        self.ends = {}
        self.fetches = []
        flow = SimpleNamespace(acquire=_nothing)
        buffer = SimpleNamespace(wait_until_ebb=_nothing)
        topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
        monitor = SimpleNamespace(track_tp_end_offset=self.ends.__setitem__,
                                  stream_inbound_time={})
        self.app = SimpleNamespace(flow_control=flow, producer=SimpleNamespace(buffer=buffer),
                                   topics=topics, consumer_generation_id=1, monitor=monitor)

    def _to_message(self, tp, record):
        return Message(tp=tp, topic=tp.topic, partition=tp.partition,
                               offset=record.offset, acked=False)

    async def _add_gap(self, tp, start, end):
        self.gaps.append((tp, start, end))

    def _on_message_in(self, tp, offset, message):
        self.messages_in.append((tp, offset))

    def ack(self, message):
        message.acked = True
        self._unacked_messages.discard(message)
        self._acked_index[message.tp].add(message.offset)
        self._acked[message.tp].append(message.offset)
        self._n_acked += 1

    def highwater(self, tp):
        return 1000

    async def _wait_next_records(self, timeout):
        return self.fetches.pop(0)

    async def sleep(self, _):
        await asyncio.sleep(0)


async def _nothing():
    return None


TP0 = TP("shipments", 2)


def run(coro):
    return asyncio.run(coro)


def applied_by(seen: list):
    async def handler(message):
        event = current_event()
        seen.append((message.offset, event.message.topic, event.message.partition))
    return handler


def test_a_batch_is_applied_in_order_and_every_record_acked_once_under_its_partition():
    consumer, seen, got = FakeConsumer(), [], []
    handler = applied_by(seen)

    async def reading(message):
        got.append((message.topic, message.partition, message.offset, message.timestamp,
                    message.headers, message.key, message.value))
        await handler(message)
    ok = run(deliver_batch(consumer, TP0, [Record(o) for o in range(5, 10)], reading, 1))
    assert ok is True
    assert seen == [(o, "shipments", 2) for o in range(5, 10)]
    assert got[0] == ("shipments", 2, 5, 1_700_000_000.123, ((b"h", b"v"),), b"S5", b"{}")
    assert consumer._acked[TP0] == [5, 6, 7, 8, 9] and consumer._n_acked == 5
    assert consumer._read_offset[TP0] == 9
    assert consumer.messages_in == [(TP0, 9)]
    assert TP0 in consumer.app.monitor.stream_inbound_time      # faust's stall check is fed
    assert current_event() is None          # the stand-in is gone after the batch


def test_records_before_the_read_offset_are_skipped_and_a_gap_is_recorded():
    consumer, seen = FakeConsumer(), []
    consumer._read_offset[TP0] = 6
    run(deliver_batch(consumer, TP0, [Record(o) for o in (4, 5, 6, 9)], applied_by(seen), 1))
    assert [o for o, _, _ in seen] == [6, 9]
    assert consumer.gaps == [(TP0, 7, 9)]
    assert consumer._acked[TP0] == [6, 9]


def test_offsets_below_the_committed_offset_are_applied_but_not_acked_again():
    consumer, seen = FakeConsumer(), []
    consumer._committed_offset[TP0] = 3
    run(deliver_batch(consumer, TP0, [Record(o) for o in range(1, 5)], applied_by(seen), 1))
    assert consumer._acked[TP0] == [3, 4] and consumer._n_acked == 2


def test_a_rebalance_stops_the_batch_and_leaves_the_rest_unapplied_and_unacked():
    consumer, seen = FakeConsumer(), []

    async def handler(message):
        seen.append(message.offset)
        if message.offset == 2:
            consumer.flow_active = False        # what faust's on_partitions_revoked does first
    ok = run(deliver_batch(consumer, TP0, [Record(o) for o in range(6)], handler, 1))
    assert ok is False
    assert seen == [0, 1, 2]
    assert consumer._acked[TP0] == [0, 1, 2]


def test_a_new_generation_stops_the_batch():
    consumer, seen = FakeConsumer(), []

    async def handler(message):
        seen.append(message.offset)
        consumer.app.consumer_generation_id = 2
    assert run(deliver_batch(consumer, TP0, [Record(0), Record(1)], handler, 1)) is False
    assert seen == [0]


def test_a_suspended_record_is_unacked_until_it_is_done_and_the_ones_before_are_acked():
    consumer = FakeConsumer()
    observed = {}

    async def main():
        gate = asyncio.Event()

        async def handler(message):
            if message.offset == 2:
                await gate.wait()               # e.g. a full producer buffer

        task = asyncio.ensure_future(deliver_batch(consumer, TP0, [Record(o) for o in range(4)],
                                                   handler, 1))
        for _ in range(3):
            await asyncio.sleep(0)
        observed["unacked"] = sorted(m.offset for m in consumer._unacked_messages)
        observed["acked"] = list(consumer._acked[TP0])
        gate.set()
        return await task

    assert run(main()) is True
    assert observed == {"unacked": [2], "acked": [0, 1]}   # faust's wait_empty waits for offset 2
    assert consumer._acked[TP0] == [0, 1, 2, 3] and not consumer._unacked_messages


def test_a_long_batch_lets_other_tasks_run_every_batch_yield():
    consumer = FakeConsumer()
    ticks, at = [], []

    async def main():
        async def ticker():
            while True:
                ticks.append(1)
                await asyncio.sleep(0)

        async def handler(message):
            at.append(len(ticks))
        t = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        await deliver_batch(consumer, TP0, [Record(o) for o in range(3 * BATCH_YIELD_EVERY)],
                            handler, 1)
        t.cancel()
    run(main())
    # the ticker ran once before the batch, then once after each BATCH_YIELD_EVERY records
    assert at[0] == 1 and at[BATCH_YIELD_EVERY - 1] == 1 and at[BATCH_YIELD_EVERY] == 2
    assert at[-1] == 3
    assert consumer._acked[TP0] == list(range(3 * BATCH_YIELD_EVERY))


def test_a_fetch_goes_to_the_handlers_by_topic_and_the_rest_one_by_one_to_faust():
    consumer, seen, one_by_one = FakeConsumer(), [], []
    other = TP("corridor-clock-changelog", 0)
    inactive = TP("shipments", 3)
    consumer.scheduler = SimpleNamespace(
        iterate=lambda records: ((tp, r) for tp, rs in records.items() for r in rs))
    consumer.fetches.append(({TP0: [Record(0), Record(1)], other: [Record(7)],
                              inactive: [Record(0)]}, {TP0, other}))

    async def callback(message):
        one_by_one.append((message.topic, message.offset))
    run(deliver_fetch(consumer, {"shipments": applied_by(seen)}, callback))
    assert seen == [(0, "shipments", 2), (1, "shipments", 2)]
    assert one_by_one == [("corridor-clock-changelog", 7)]
    assert inactive not in consumer.ends and consumer._acked[TP0] == [0, 1]
    assert consumer._read_offset[other] == 7 and consumer._acked[other] == []


def test_nothing_is_delivered_once_the_flow_has_stopped():
    consumer, seen = FakeConsumer(), []
    consumer.flow_active = False
    seeks = []

    async def perform_seek():
        seeks.append(1)
    consumer.perform_seek = perform_seek
    consumer.log = SimpleNamespace(dev=lambda *a: None, warning=lambda *a: None)
    consumer.fetches.append(({TP0: [Record(0)]}, {TP0}))
    run(deliver_fetch(consumer, {"shipments": applied_by(seen)}, None))
    assert seen == [] and seeks == [1]
