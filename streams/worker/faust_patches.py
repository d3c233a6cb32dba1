"""Run-time changes to faust-streaming 0.15.3 / aiokafka 0.14 internals, applied by `create_app`.

Four kinds: workarounds for the embedded broker (Tansu, docs/broker.md), applied in the embedded
profile only; fixes for Faust bugs that lose messages after a crash (docs/semantics.md
"Crashes"), applied in every profile; the hook that sends the tables' written-behind changelogs
before each commit (streams.worker.app.Utf8KeyTable), in every profile, ending them with markers in the
embedded profile; and three changes to how messages reach the agents (docs/performance.md), in
every profile: the fetcher loop without a task per message, stream iteration that yields to the
event loop once per STREAM_YIELD_EVERY events rather than once per event, and the producer
buffer's size read without a settings lookup per message. Each names the internals it replaces:
re-check them when faust-streaming or aiokafka is upgraded. tests/e2e/test_crash.py and
test_retention.py fail if the crash fixes or the hook stop working, test_pipeline.py if the
markers do; tests/unit/test_resume.py covers how a suspended delivery is finished,
test_stream_yield.py how often a stream yields, test_producer_buffer.py the buffer's size, and
every e2e test goes through all three.

Recovery reads each changelog to its true end (on the embedded broker, whose ListOffsets stops at
the last batch's first record) and never stops with faust's ConsistencyError
(`_recovery_ends_patch`, docs/semantics.md "Crashes", tests/e2e/test_changelog_tail.py).

`apply` refuses to run (RuntimeError at start-up) on other versions than the ones these patches
were written against (FAUST_VERSION, AIOKAFKA_VERSION), and the recovery patch also checks the
source of each faust function it wraps or depends on (RECOVERY_SOURCES).
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging

log = logging.getLogger("corridor.recovery")

#: The versions every patch here was written against and checked with.
FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"


def check_versions() -> None:
    """Raise unless the installed faust-streaming and aiokafka are the versions patched here."""
    import aiokafka
    import faust
    found = (faust.__version__, aiokafka.__version__)
    if found != (FAUST_VERSION, AIOKAFKA_VERSION):
        raise RuntimeError(
            f"streams.worker.faust_patches replaces internals of faust-streaming {FAUST_VERSION} and "
            f"aiokafka {AIOKAFKA_VERSION}, but faust-streaming {found[0]} and aiokafka {found[1]} "
            "are installed: re-check every patch against their sources (and update the versions "
            "and RECOVERY_SOURCES) before running corridor with them")


def source_fingerprint(fn) -> str:
    """The first 16 hex digits of the SHA-256 of a function's source text."""
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


def require_source(fn, expected: str, name: str) -> None:
    """Raise unless `fn`'s source is the one a patch was written against."""
    found = source_fingerprint(fn)
    if found != expected:
        raise RuntimeError(
            f"streams.worker.faust_patches: {name} is not the faust-streaming {FAUST_VERSION} code the "
            f"recovery patch wraps (source fingerprint {found}, expected {expected}); refusing "
            "to patch it")


def apply(embedded: bool) -> None:
    check_versions()
    if embedded:
        _embedded_leave_group_patch()
        _embedded_fetch_wait_patch()
    _recovery_ends_patch(true_ends=embedded)
    _drain_producer_buffer_patch()
    _seek_with_flow_stopped_patch()
    _write_behind_flush_patch()
    _eager_delivery_patch()
    _stream_yield_patch()
    _producer_buffer_ebb_patch()


#: Key of the end-of-flush markers: valid JSON and valid UTF-8, so every table's key codec reads
#: it (as a key no table holds).
END_MARKER_KEY = b'"\\u0000corridor-end-of-flush"'


#: Changelog records sent between two yields to the event loop while a commit writes them.
SEND_YIELD_EVERY = 256


async def write_changelogs(app, send, flush, send_records=None) -> list[int]:
    """Send the pending changelog records of the write-behind tables (streams.worker.app.Utf8KeyTable).

    Every table's records are taken at one instant (serialized, no await in between), so together
    they reflect the same processed events; then they go out one `flush_rank` at a time, lowest
    first, and each rank is acknowledged (`await flush()`) before the next. A rank's records of
    one changelog partition go out together through `send_records(topic, partition, [(key,
    value)])`, which returns an awaitable of the last offset written (the worker's producer
    builds whole record batches, `batch_sender`; without it, one `send` per record, Producer.send
    semantics). Each table then learns the last offset written per partition (the RocksDB store
    keeps it to skip that part of the changelog on recovery). Returns the ranks that had records.

    An app with a `corridor_flush_gate` (the RocksDB store) has it closed from the take until the
    last rank is acknowledged, and its agents wait at it: the store, which keeps every write at
    once, then holds the values of the take instant whenever a crash can leave a tail of these
    records unacknowledged for recovery to replay over it (docs/semantics.md "Crashes").
    """
    gate = getattr(app, "corridor_flush_gate", None)
    if gate is not None:
        gate.clear()         # the agents wait until every rank is acknowledged (see streams.worker.app)
    try:
        return await _write_ranks(app, send_records or record_sender(send), flush)
    finally:
        if gate is not None:
            gate.set()


async def _write_ranks(app, send_records, flush) -> list[int]:
    taken = [(t.flush_rank, t, t.take_changelog())
             for t in app.tables.values() if hasattr(t, "take_changelog")]
    ranks = sorted({rank for rank, _t, records in taken if records})
    for rank in ranks:
        sent = {}
        for r, table, records in taken:
            if r != rank or not records:
                continue
            topic = table.changelog_topic.get_topic_name()
            by_partition: dict = {}
            for partition, key, value in records:
                by_partition.setdefault(partition, []).append((key, value))
            for partition, pairs in by_partition.items():
                sent[table, partition] = await send_records(topic, partition, pairs)
        await flush()
        for (table, partition), last in sent.items():
            table.on_changelog_written(partition, await last)
    return ranks


def record_sender(send):
    """send_records through `send(topic, key, value, partition, timestamp, headers)`, one
    record at a time (Producer.send semantics; the agents' tests use it)."""
    async def send_records(topic, partition, pairs):
        fut = None
        for i, (key, value) in enumerate(pairs, 1):
            fut = await send(topic, key, value, partition, None, None)
            if i % SEND_YIELD_EVERY == 0:
                await asyncio.sleep(0)     # a commit may send thousands: let the loop turn
        return _offset_of(fut)
    return send_records


async def _offset_of(fut) -> int:
    return (await fut).offset


def batch_sender(producer):
    """send_records for a faust aiokafka Producer: the records of one changelog partition go
    into aiokafka record batches built here (`create_batch`/`send_batch`, aiokafka's public
    batch API) rather than one `send` each, which costs a future, a serializer call and an
    accumulator lookup per record: about a tenth of the worker's time at a commit. A record of
    an unknown partition (a `use_partitioner` table's) goes through `producer.send`."""
    async def send_records(topic, partition, pairs):
        if partition is None:
            return await record_sender(producer.send)(topic, partition, pairs)
        if getattr(producer.app, "corridor_end_markers", False):
            producer.__dict__.setdefault("_corridor_unmarked", set()).add((topic, partition))
        aio = producer._ensure_producer()
        last = None
        batch, count = aio.create_batch(), 0
        for key, value in pairs:
            if batch.append(key=key, value=value, timestamp=None) is None:
                batch.close()
                await aio.send_batch(batch, topic, partition=partition)
                batch, count = aio.create_batch(), 0
                batch.append(key=key, value=value, timestamp=None)   # an empty batch takes any
            count += 1
        batch.close()
        last = await aio.send_batch(batch, topic, partition=partition)
        return _batch_end(last, count)
    return send_records


async def _batch_end(fut, count: int) -> int:
    """The offset of the last record of a batch: its base offset + its records - 1."""
    return (await fut).offset + count - 1


def _flush_lock(producer) -> asyncio.Lock:
    """One flush at a time: a rank's markers must be acknowledged before the next rank is sent."""
    return producer.__dict__.setdefault("_corridor_flush_lock", asyncio.Lock())


def _each_partition(app, written: set[tuple]) -> list[tuple]:
    """(topic, partition) pairs written to, sorted; a partition of None (a `use_partitioner`
    table's write, placed by the producer) stands for every partition of that changelog."""
    counts = {t.changelog_topic.get_topic_name(): t.partitions for t in app.tables.values()}
    out = {(topic, p) for topic, p in written if p is not None}
    for topic, p in written:
        if p is None:
            out.update((topic, q) for q in range(counts.get(topic) or app.conf.topic_partitions))
    return sorted(out)


def _write_behind_flush_patch() -> None:
    """Send the write-behind tables' changelog records whenever the producer is flushed.

    The Faust consumer flushes the producer before every offset commit and when partitions are
    revoked, and the app flushes it when it stops, so a committed offset never runs ahead of the
    state changes its events made. Each rank of tables is flushed to the broker (acknowledged)
    before the next one is sent. Replaces faust.transport.drivers.aiokafka.Producer.flush, which
    drains faust's ProducerBuffer and then aiokafka's producer, and wraps Producer.send.

    End markers (apps with `corridor_end_markers` set: the embedded profile). Tansu's
    ListOffsets(latest) answers the base offset of a partition's last record batch + 1, and Faust
    recovers a changelog only up to that offset, so it dropped the rest of the last batch
    (docs/broker.md §2). Instead of sending every record in a batch of its own (batch size 1:
    one produce request per record), each flushed rank is followed, once acknowledged, by a
    marker: a tombstone of END_MARKER_KEY, alone in its batch, in every changelog partition
    written since the last marker. The answer is then the true end, and recovering the marker
    deletes a key that no table holds. Writes made outside the stream (the clock table's timer)
    are followed by `Producer.mark_changelog_ends()`, as no commit may follow them.
    """
    from faust.transport.drivers.aiokafka import Producer
    if getattr(Producer, "_corridor_write_behind_patched", False):
        return
    flush, send = Producer.flush, Producer.send

    async def _send(self, topic, key, value, partition, timestamp, headers, **kwargs):
        if topic.endswith("-changelog") and getattr(self.app, "corridor_end_markers", False):
            self.__dict__.setdefault("_corridor_unmarked", set()).add((topic, partition))
        return await send(self, topic, key, value, partition, timestamp, headers, **kwargs)

    async def _flush_and_mark(self) -> None:
        await flush(self)
        unmarked = self.__dict__.get("_corridor_unmarked")
        if unmarked:
            self._corridor_unmarked = set()
            for topic, partition in _each_partition(self.app, unmarked):
                await send(self, topic, END_MARKER_KEY, None, partition, None, None)
            await flush(self)

    async def _flush(self) -> None:
        async with _flush_lock(self):
            await write_changelogs(self.app, self.send, lambda: _flush_and_mark(self),
                                   batch_sender(self))
            await _flush_and_mark(self)

    async def _mark_ends(self) -> None:
        async with _flush_lock(self):
            await _flush_and_mark(self)

    Producer.mark_changelog_ends = _mark_ends

    Producer.send = _send
    Producer.flush = _flush
    Producer._corridor_write_behind_patched = True


def _embedded_leave_group_patch() -> None:
    """Tansu starts groups at generation 0 and aiokafka skips LeaveGroup there (docs/broker.md §2)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    if getattr(GroupCoordinator, "_corridor_patched", False):
        return
    original = GroupCoordinator._maybe_leave_group

    async def _leave(self):
        if self.generation == 0 and self._group_instance_id is None and self.member_id:
            self.generation = 1 << 30      # Tansu ignores the generation in LeaveGroup
        await original(self)
    GroupCoordinator._maybe_leave_group = _leave
    GroupCoordinator._corridor_patched = True


#: Embedded profile: the longest a fetch may wait for records (faust hard-codes 1500 ms).
EMBEDDED_FETCH_MAX_WAIT_MS = 100


def _embedded_fetch_wait_patch() -> None:
    """Tansu answers a fetch only when fetch_max_wait_ms is over, even when records arrived sooner
    (Kafka answers as soon as fetch_min_bytes is there), and faust hard-codes 1500 ms, so every
    hop waited ~0.4-0.75 s (docs/performance.md: event-to-metric p99 0.83 s at 200 events/s, 0.16 s
    with 100 ms). Embedded profile only: on Kafka the wait ends when records arrive."""
    import aiokafka
    if getattr(aiokafka.AIOKafkaConsumer, "_corridor_fetch_patched", False):
        return
    original = aiokafka.AIOKafkaConsumer.__init__

    def __init__(self, *args, **kwargs):
        if kwargs.get("fetch_max_wait_ms", 0) > EMBEDDED_FETCH_MAX_WAIT_MS:
            kwargs["fetch_max_wait_ms"] = EMBEDDED_FETCH_MAX_WAIT_MS
        original(self, *args, **kwargs)
    aiokafka.AIOKafkaConsumer.__init__ = __init__
    aiokafka.AIOKafkaConsumer._corridor_fetch_patched = True


def _drain_producer_buffer_patch() -> None:
    """Make the producer buffer's flush send everything before the consumer commits.

    Faust queues every table write (changelog record) in `ProducerBuffer` and sends it from a
    background task. Before committing offsets the consumer calls `producer.flush()`, whose
    `buffer.flush()` in faust-streaming 0.15.3 returns as soon as 0.1 s pass without a send: under
    CPU load it returned with changelog records still queued, the offsets of the events that
    caused them were committed, and a SIGKILL then lost those state changes for good (the
    successor resumed after the events). Measured by benchmarks/crash_trials.py: about half of
    the trials on a loaded machine ended with shipments "awaiting order"; none after this patch.
    Applies to every profile: it is a Faust bug, not a broker one.
    """
    from faust.transport.producer import ProducerBuffer
    if getattr(ProducerBuffer, "_corridor_patched", False):
        return
    send_pending = ProducerBuffer._send_pending

    async def _send_pending(self, fut) -> None:
        self._corridor_inflight = getattr(self, "_corridor_inflight", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._corridor_inflight -= 1

    async def flush(self) -> None:
        if self.app is not None and self.app.conf.producer_threaded:
            return await self.flush_atmost(None)
        while True:
            try:
                fut = self.pending.get_nowait()
            except asyncio.QueueEmpty:
                if not getattr(self, "_corridor_inflight", 0):
                    return
                await asyncio.sleep(0.001)     # the background task is handing one over
                continue
            await _send_pending(self, fut)

    ProducerBuffer._send_pending = _send_pending
    ProducerBuffer.flush = flush
    ProducerBuffer._corridor_patched = True


def _seek_with_flow_stopped_patch() -> None:
    """No message may reach a stream between a partition's resume and its seek to the committed
    offset.

    faust-streaming 0.15.3's recovery resumes the stream partitions, then awaits the seek to the
    committed offsets, then resumes the streams' flow control. Records fetched during that await
    reached the streams while their flow control was still suspended; the stream skips such a
    message and acks it, and the seek had already happened, so nothing fetched them again: the
    first messages of a partition were lost when a worker started under load
    (benchmarks/crash_trials.py: a missing delivery in about one trial in ten). Stopping the
    consumer's flow for the seek drops what was fetched (the seek fetches it again), and recovery
    resumes the flow only after the streams' flow control. Partitions without a committed offset
    go back to their beginning (the `earliest` reset policy): aiokafka leaves them where they are.
    Applies to every profile: it is a Faust bug, not a broker one.
    """
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    if getattr(Consumer, "_corridor_seek_patched", False):
        return
    perform_seek = Consumer.perform_seek

    async def _perform_seek(self) -> None:
        self.stop_flow()
        await perform_seek(self)

    async def _seek_to_committed(self):
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        streams = self.app.topics.acking_topics      # not changelogs: recovery positions those
        fresh = [tp for tp, offset in committed.items() if not offset and tp.topic in streams]
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        return committed

    async def seek_to_committed(self):
        return await self.call_thread(self._corridor_seek_to_committed)

    Consumer.perform_seek = _perform_seek
    AIOKafkaConsumerThread._corridor_seek_to_committed = _seek_to_committed
    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed
    Consumer._corridor_seek_patched = True


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


#: The faust-streaming 0.15.3 functions the recovery patch wraps (the first two) or relies on
#: (the order of `_restart_recovery`: active highwaters, active offsets, the consistency check,
#: ..., standby seek, standby highwaters, the check), by source fingerprint.
RECOVERY_SOURCES = {
    "_build_highwaters": "91b4cc0d3724ae7b",
    "_build_offsets": "27eec86be06cb51f",
    "_restart_recovery": "6bd8a8558a2dffe4",
}
#: The longest the embedded profile keeps trying to read the changelog ends of one recovery step
#: before it goes on with ListOffsets' answers (faust abandons recovery for good if a step takes
#: broker_request_timeout, 90 s by default).
TRUE_END_BUDGET = 30.0

#: Set by apply(embedded=True): recoveries in this process read the changelogs' true ends.
_TRUE_ENDS = False


def _recovery_ends_patch(true_ends: bool) -> None:
    """Recovery reads every changelog to its true end, and a store past that end stops nothing.

    True ends (embedded profile only). faust's Recovery reads a changelog partition up to the
    end that `Consumer.highwaters` (ListOffsets) answers. Tansu answers the base offset of the
    partition's last record batch + 1 (docs/broker.md), so a changelog whose last batch holds
    several records (a worker killed, or a broker frozen, between a commit's records and its end
    marker) was read short, and a worker whose store had seen further (its own writes, an
    earlier recovery whose fetch went past that answer, the clock GlobalTable that it reads all
    along) died with ConsistencyError at the next rebalance ("18 > 15"). Here each answer is
    checked by a fetch from it onward (streams.worker.changelog_ends.true_end_offsets) and recovery
    reads to the true end; partitions corrected are logged and counted.

    Offsets ahead (every profile). A recovery offset above the (true) end means the log lost
    records the store holds (docs/semantics.md "Crashes"): instead of faust's ConsistencyError,
    the worker logs a warning, counts it and reads on from the end, its store kept (the offset,
    and the RocksDB store's persisted offset, are lowered to the end, so later records are read,
    not skipped). An offset that is ahead only because the log grew while its end was read (the
    clock GlobalTable is read all along) is not: the end is read again first. faust's own check
    (`recovery_consistency_check`, which only raises) is off (streams.worker.app.faust_settings): it
    runs a loop turn after these, when such growth can still pass it.

    Replaces faust.tables.recovery.Recovery._build_highwaters and _build_offsets (faust-streaming
    0.15.3, each called first as it is), checked by source fingerprint (RECOVERY_SOURCES).
    """
    global _TRUE_ENDS
    if true_ends:
        _TRUE_ENDS = True
    from faust.tables.recovery import Recovery
    if getattr(Recovery, "_corridor_ends_patched", False):
        return
    wrapped = {"_build_highwaters": Recovery._build_highwaters,
               "_build_offsets": Recovery._build_offsets,
               "_restart_recovery": Recovery.__dict__["_restart_recovery"].fun}
    for name, fn in wrapped.items():
        require_source(fn, RECOVERY_SOURCES[name], f"faust.tables.recovery.Recovery.{name}")
    build_highwaters, build_offsets = wrapped["_build_highwaters"], wrapped["_build_offsets"]

    async def _build_highwaters(self, consumer, tps, destination, title) -> None:
        await build_highwaters(self, consumer, tps, destination, title)
        if _TRUE_ENDS and tps:
            await _read_true_ends(self, tps, destination)
        if destination is self.standby_highwaters:     # standby offsets are built and sought
            await _settle_offsets_ahead(self, consumer, tps, self.standby_offsets, destination,
                                        seek=True)

    async def _build_offsets(self, consumer, tps, destination, title) -> None:
        await build_offsets(self, consumer, tps, destination, title)
        if destination is self.active_offsets:         # active highwaters are built, no seek yet
            await _settle_offsets_ahead(self, consumer, tps, destination, self.active_highwaters,
                                        seek=False)

    Recovery._build_highwaters = _build_highwaters
    Recovery._build_offsets = _build_offsets
    Recovery._corridor_ends_originals = wrapped
    Recovery._corridor_ends_patched = True


def _recovery_counters(recovery):
    """The app's RecoveryCounters, registered with the corridor pipeline's registry if any."""
    from streams.worker.changelog_ends import RecoveryCounters
    app = recovery.app
    counters = app.__dict__.get("_corridor_recovery_counters")
    if counters is None:
        registry = getattr(getattr(app, "corridor", None), "registry", None)
        counters = RecoveryCounters(registry, sorted(t.name for t in recovery.tables.values()))
        app.__dict__["_corridor_recovery_counters"] = counters
    return counters


def _table_name(recovery, tp) -> str:
    table = recovery.tp_to_table.get(tp)
    return table.name if table is not None else tp.topic


async def _probe_true_ends(recovery, tps, highwaters) -> dict | None:
    """{tp: true end offset} read by fetching from the ends in `highwaters` (faust's notation:
    end - 1); tried again for up to TRUE_END_BUDGET s, then None (logged as an error)."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list

    from streams.worker.changelog_ends import PROBE_TIMEOUT, true_end_offsets
    conf = recovery.app.conf
    servers = server_list(conf.broker, 9092)
    options = credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)
    listed = {tp: highwaters[tp] + 1 for tp in tps if highwaters.get(tp) is not None}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TRUE_END_BUDGET
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - loop.time()
        try:
            return await true_end_offsets(servers, tps, listed, client_options=options,
                                          timeout=max(min(PROBE_TIMEOUT, remaining), 1.0))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if deadline - loop.time() < 2.0:
                log.error("could not read the true ends of %d changelog partitions in %d "
                          "attempts (%r): recovery reads to the ListOffsets answers, which may "
                          "stop short of the broker's records", len(listed), attempt, exc)
                return None
            log.warning("reading the true ends of the changelogs failed (%r); trying again", exc)
            await asyncio.sleep(1.0)


async def _read_true_ends(recovery, tps, highwaters) -> None:
    ends = await _probe_true_ends(recovery, tps, highwaters)
    if not ends:
        return
    counters = _recovery_counters(recovery)
    for tp in sorted(ends):
        end, listed = ends[tp], highwaters[tp] + 1
        if end > listed:
            name = _table_name(recovery, tp)
            log.info("changelog %s[%d] of table %s: ListOffsets answered %d, the log ends at %d; "
                     "recovery reads to %d", tp.topic, tp.partition, name, listed, end, end)
            counters.corrected.labels(name).inc()
            highwaters[tp] = end - 1


async def _settle_offsets_ahead(recovery, consumer, tps, offsets, highwaters, *, seek: bool):
    """Lower every recovery offset above its changelog's (true) end to that end: see
    `_recovery_ends_patch` and docs/semantics.md "Crashes"."""
    from streams.worker.changelog_ends import offsets_ahead
    ahead = offsets_ahead(tps, offsets, highwaters)
    if not ahead:
        return
    # The log may have grown since its end was read: read the end of those partitions again.
    again = {tp for tp, _o, _h in ahead}
    if _TRUE_ENDS:
        ends = await _probe_true_ends(recovery, again, highwaters) or {}
    else:
        ends = await consumer.highwaters(*again)
    for tp, end in ends.items():
        if end is not None and end - 1 > highwaters[tp]:
            highwaters[tp] = end - 1
    for tp, offset, last in offsets_ahead(tps, offsets, highwaters):
        name = _table_name(recovery, tp)
        log.warning("changelog %s[%d] of table %s ends at offset %d, but this worker's store has "
                    "seen offset %d there: the log lost records the store holds. Keeping the "
                    "store and reading on from the end (docs/semantics.md \"Crashes\")",
                    tp.topic, tp.partition, name, last + 1, offset)
        _recovery_counters(recovery).ahead.labels(name).inc()
        offsets[tp] = last
        table = recovery.tp_to_table.get(tp)
        if table is not None:
            table.data.set_persisted_offset(tp, last)
        if seek:
            await consumer.seek_wait({tp: max(last, 0)})
