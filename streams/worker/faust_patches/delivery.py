"""Three changes to how messages reach the agents (docs/performance.md), in every profile.

The fetcher loop without a task per message (`_eager_delivery_patch`, `resume`), stream iteration
that yields to the event loop once per STREAM_YIELD_EVERY events rather than once per event
(`_stream_yield_patch`), and the producer buffer's size read without a settings lookup per message
(`_producer_buffer_ebb_patch`). tests/unit/test_resume.py covers how a suspended delivery is
finished, test_stream_yield.py how often a stream yields, test_producer_buffer.py the buffer's
size, and every e2e test goes through all three.

The yield patch replaces a global of faust's Cython extension (faust._cython.streams), whose
source cannot be fingerprinted; without the extension (not built, or NO_CYTHON set) it would do
nothing, so streams.worker.faust_patches.check refuses to start then (unless
CORRIDOR_ALLOW_UNTESTED_FAUST is set). The Python upstream functions, and their fingerprints, are in
streams.worker.faust_patches.UPSTREAM (patch module "delivery").
"""
from __future__ import annotations

import asyncio
import time
import weakref

from faust.streams import _current_event
from faust.transport.consumer import ack_lock
from mode.utils.futures import notify


async def resume(coro, yielded):
    """Go on with a coroutine that has already run up to its first suspension, where it yielded
    `yielded` (what it awaits: a future, or None for a bare yield), stepping it as asyncio.Task
    does: resumed once that future is done; cancelling this task cancels that future."""
    loop = asyncio.get_running_loop()
    while True:
        if yielded is None:
            await asyncio.sleep(0)
        else:
            yielded._asyncio_future_blocking = False
            waiter = loop.create_future()
            yielded.add_done_callback(lambda _f, w=waiter: w.done() or w.set_result(None))
            try:
                await waiter
            except asyncio.CancelledError:
                if not yielded.cancel():     # already done: throw the cancellation in, as Task does
                    try:
                        yielded = coro.throw(asyncio.CancelledError())
                    except StopIteration as stop:
                        return stop.value
                    continue
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value


def _eager_delivery_patch() -> None:
    """Deliver each fetched message without a task per message when delivery does not wait.

    faust's fetcher loop (Consumer._drain_messages) hands every message to the streams with
    `await self.wait_first(callback(message), self.suspend_flow.wait())`: four tasks (the
    delivery, the suspend flag, the service's stopped and crashed flags), an asyncio.wait and
    three cancellations per message, about a fifth of a worker's busy time (docs/performance.md).
    The delivery almost never waits: it puts the event on a stream queue that has room. Here it
    runs at once; only if it suspends (a full queue, flow control during a rebalance) is the
    rest of it raced against the suspend flag as before (`resume`). The same messages reach the
    same streams in the same order. Replaces faust.transport.consumer.Consumer._drain_messages
    (faust-streaming 0.15.3), otherwise copied as it is.
    """
    from faust.transport import consumer as fc
    if getattr(fc.Consumer, "_corridor_eager_patched", False):
        return

    async def _drain_messages(self, fetcher) -> None:  # pragma: no cover (the worker's loop)
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = fc.CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                batches = getattr(self.app, "corridor_batches", None)
                if batches:
                    await deliver_fetch(self, batches, callback)
                    unset_flag(flag_consumer_fetching)
                    continue
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                if acks_enabled_for(message.topic):
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            delivery = callback(message)
                            try:
                                yielded = delivery.send(None)
                            except StopIteration:
                                pass
                            else:
                                await self.wait_first(resume(delivery, yielded),
                                                      self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)

    fc.Consumer._drain_messages = _drain_messages
    fc.Consumer._corridor_eager_patched = True


#: How many events a stream takes from its queue between two yields to the event loop.
STREAM_YIELD_EVERY = 64


def _stream_yield_patch(every: int = STREAM_YIELD_EVERY) -> None:
    """Streams yield to the event loop once per `every` events instead of once per event.

    faust's stream iterator (the Cython `StreamIterator.next`, which `Stream.__aiter__` uses when
    the extension is built) awaits `asyncio.sleep(0)` before taking each event: a full turn of the
    event loop per event (a zero-timeout select, the ready queue, the task step), and the fetcher,
    woken by the one slot the stream freed in a full queue, delivers a single message and
    suspends again. Here that sleep yields on every `every`-th call (counted over all the
    worker's streams) and returns at once otherwise, so the other tasks (fetcher, commits,
    timers, /metrics) still run at least every `every` events (~5 ms at 80 µs per event). Replaces the module global `sleep` of faust._cython.streams
    (faust-streaming 0.15.3); the pure-Python iterator is left as it is.
    """
    try:
        from faust._cython import streams as cstreams
    except ImportError:      # the extension is not built: Stream uses the Python iterator
        return
    if getattr(cstreams, "_corridor_yield_patched", False):
        return
    cstreams.sleep = yielding_every(every)
    cstreams._corridor_yield_patched = True


def yielding_every(every: int, sleep=asyncio.sleep):
    """An `asyncio.sleep` whose zero-delay calls yield to the event loop only every `every`-th
    time (returning at once otherwise); other delays sleep as usual."""
    count = 0

    async def _sleep(delay, result=None):
        nonlocal count
        if delay <= 0:
            count += 1
            if count < every:
                return result
            count = 0
        return await sleep(delay, result)

    return _sleep


def _producer_buffer_ebb_patch() -> None:
    """faust's conductor awaits `ProducerBuffer.wait_until_ebb()` before handing each message to
    the streams, and the buffer's `size` reads the `producer_threaded` setting through faust's
    settings registry every time (about 3 % of a worker's busy time). corridor sends nothing
    through that buffer on the hot path (changelogs and join records go to the producer directly),
    so the answer is almost always "empty". Here the setting is read once per buffer; the size
    and the wait are otherwise faust-streaming 0.15.3's."""
    from faust.transport.producer import ProducerBuffer
    if getattr(ProducerBuffer, "_corridor_ebb_patched", False):
        return
    size = ProducerBuffer.size.fget

    def _size(self) -> int:
        threaded = self.__dict__.get("_corridor_threaded")
        if threaded is None:
            threaded = self.__dict__["_corridor_threaded"] = bool(self.app.conf.producer_threaded)
        return size(self) if threaded else len(self.pending._queue)

    ProducerBuffer.size = property(_size)
    ProducerBuffer._corridor_ebb_patched = True


# ---- the batch path ------------------------------------------------------------------------------
#: How many records of one batch are applied between two yields to the event loop (as a stream
#: yields once per STREAM_YIELD_EVERY events): the commit, timers and /metrics still run.
BATCH_YIELD_EVERY = 64


class BatchMessage:
    """A fetched record as the handlers read it: what faust's ConsumerMessage carries that they
    use (topic, partition, offset, timestamp in seconds, headers, key, value), and what faust's
    `Consumer.ack`, its `wait_empty` and its sensors use of a message (tp, acked, refcount, a
    weak reference). A quarter of the cost of faust's `_to_message`, which sets 25 attributes."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "headers", "key", "value", "tp",
                 "acked", "refcount", "__weakref__")

    def __init__(self, tp, record):
        self.topic, self.partition, self.offset = tp.topic, tp.partition, record.offset
        stamp = record.timestamp
        self.timestamp = None if stamp is None else stamp / 1000.0
        self.headers, self.key, self.value = record.headers, record.key, record.value
        self.tp, self.acked, self.refcount = tp, False, 1


class BatchEvent:
    """Stands for the event being processed while a batch of one topic partition is applied:
    Faust's tables take the changelog partition (and the RocksDB store its partition) from the
    current event's message (faust.streams.current_event)."""

    __slots__ = ("message", "__weakref__")

    def __init__(self, topic: str, partition: int):
        self.message = _BatchMessage(topic, partition)


class _BatchMessage:
    __slots__ = ("topic", "partition")

    def __init__(self, topic: str, partition: int):
        self.topic, self.partition = topic, partition


async def deliver_fetch(consumer, handlers: dict, callback) -> None:
    """One fetch of faust's consumer, delivered: the records of a topic that has a handler in
    `handlers` (topic -> async handler(message)) are applied in one call per topic partition
    (`deliver_batch`), without faust's per-message path (the conductor's decode and stream queue,
    an Event, the stream iterator and its ack); the other topics' records (global tables'
    changelogs) go through `callback` one by one as before. What faust's `Consumer.getmany`
    checks is checked here too: only active (or buffered) partitions, nothing once the flow has
    stopped or a new generation began (what is left unacked is fetched again after the seek)."""
    records, active = await consumer._wait_next_records(1.0)
    await consumer.sleep(0)
    if records is None or consumer.should_stop:
        return
    if not consumer.flow_active:
        consumer.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await consumer.perform_seek()
        except Exception as ex:
            consumer.log.warning(f"exception performing seek when flow not active {ex}")
        return
    app = consumer.app
    generation = app.consumer_generation_id
    buffered = consumer._buffered_partitions
    track_end = app.monitor.track_tp_end_offset
    others = {}
    for tp, batch in records.items():
        if active is not None and tp not in active and tp not in buffered:
            continue
        track_end(tp, consumer.highwater(tp))
        handler = handlers.get(tp.topic)
        if handler is None:
            others[tp] = batch
        elif not await deliver_batch(consumer, tp, batch, handler, generation):
            return
    if others:
        await _deliver_one_by_one(consumer, others, callback, generation)


async def deliver_batch(consumer, tp, records, handler, generation) -> bool:
    """Apply one topic partition's fetched records in order, each through `handler`, and ack
    them in bulk (what faust's `Consumer.ack` does per message). A record whose handler suspends
    (a full producer buffer, the RocksDB commit gate) is tracked as unacked until it is done, so
    that a rebalance's `wait_empty` waits for it, as for an event in a stream. False when the
    flow stopped or a rebalance began before the batch was through."""
    app = consumer.app
    await app.flow_control.acquire()
    await app.producer.buffer.wait_until_ebb()
    read_offsets = consumer._read_offset
    acks = app.topics.acks_enabled_for(tp.topic)
    done: list[int] = []
    message = None
    standin = BatchEvent(tp.topic, tp.partition)     # held here: the context keeps a weakref
    token = _current_event.set(weakref.ref(standin))
    try:
        since_yield = 0
        for record in records:
            if not consumer.flow_active or app.consumer_generation_id != generation:
                return False
            offset = record.offset
            read = read_offsets[tp]
            if read is not None and offset < read:
                continue
            if read and offset - read > 1 and acks:
                await consumer._add_gap(tp, read + 1, offset)
            message = BatchMessage(tp, record)
            delivery = handler(message)
            try:
                yielded = delivery.send(None)
            except StopIteration:
                done.append(offset)
            else:
                consumer._unacked_messages.add(message)
                _ack_offsets(consumer, tp, done)
                done = []
                try:
                    await resume(delivery, yielded)
                finally:
                    if acks:
                        consumer.ack(message)
            read_offsets[tp] = offset
            since_yield += 1
            if since_yield >= BATCH_YIELD_EVERY:
                since_yield = 0
                if acks:
                    _ack_offsets(consumer, tp, done)
                done = []
                await asyncio.sleep(0)
        return True
    finally:
        if acks:
            _ack_offsets(consumer, tp, done)
        if message is not None:
            consumer._on_message_in(tp, message.offset, message)
            inbound = app.monitor.stream_inbound_time      # faust's stall check reads it
            if inbound is not None:
                inbound[tp] = time.monotonic()
        _current_event.reset(token)


def _ack_offsets(consumer, tp, offsets: list[int]) -> None:
    """Mark these offsets of `tp` processed, as faust's `Consumer.ack` marks one message's."""
    if not offsets:
        return
    with ack_lock:
        committed = consumer._committed_offset[tp]
        index, acked = consumer._acked_index[tp], consumer._acked[tp]
        n = 0
        for offset in offsets:
            if (committed is None or offset >= committed) and offset not in index:
                index.add(offset)
                acked.append(offset)
                n += 1
        consumer._n_acked += n
    notify(consumer._waiting_for_ack)


async def _deliver_one_by_one(consumer, records, callback, generation) -> None:
    """faust's path for the other topics' records (global tables' changelogs): round-robin over
    the topics (faust's scheduler), each message through the conductor's `callback`."""
    app = consumer.app
    to_message = consumer._to_message
    read_offsets = consumer._read_offset
    acks_enabled_for = app.topics.acks_enabled_for
    for tp, record in consumer.scheduler.iterate(records):
        if not consumer.flow_active or app.consumer_generation_id != generation:
            return
        offset = record.offset
        read = read_offsets[tp]
        if read is None or offset >= read:
            gap = offset - (read or 0)
            if gap > 1 and read and acks_enabled_for(tp.topic):
                await consumer._add_gap(tp, read + 1, offset)
            delivery = callback(to_message(tp, record))
            try:
                yielded = delivery.send(None)
            except StopIteration:
                pass
            else:
                await consumer.wait_first(resume(delivery, yielded), consumer.suspend_flow.wait())
            read_offsets[tp] = offset
