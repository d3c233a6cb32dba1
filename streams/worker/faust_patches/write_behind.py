"""The hook that sends the tables' written-behind changelogs before each commit, in every profile.

The write-behind tables (streams.worker.tables.Utf8KeyTable) keep their changelog records until the
producer is flushed; the patched flush sends them rank by rank in whole record batches
(`write_changelogs`, `batch_sender`) and, in the embedded profile, ends each changelog partition
written with an end marker (END_MARKER_KEY). One flush at a time (`_flush_lock`).
tests/e2e/test_crash.py and test_retention.py fail if the hook stops working, test_pipeline.py if
the markers do. The upstream functions it replaces, wraps or relies on, and their fingerprints,
are in streams.worker.faust_patches.UPSTREAM (patch module "write_behind").
"""
from __future__ import annotations

import asyncio


#: Key of the end-of-flush markers: valid JSON and valid UTF-8, so every table's key codec reads
#: it (as a key no table holds).
END_MARKER_KEY = b'"\\u0000corridor-end-of-flush"'


#: Changelog records sent between two yields to the event loop while a commit writes them.
SEND_YIELD_EVERY = 256


async def write_changelogs(app, send, flush, send_records=None) -> list[int]:
    """Send the pending changelog records of the write-behind tables (streams.worker.tables.Utf8KeyTable).

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
        _note_unmarked(producer, topic, partition)
        aio = producer._ensure_producer()
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


def _note_unmarked(producer, topic: str, partition: int | None) -> None:
    """A changelog partition written since its last end marker (apps with end markers only)."""
    if getattr(producer.app, "corridor_end_markers", False):
        producer.__dict__.setdefault("_corridor_unmarked", set()).add((topic, partition))


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
        if topic.endswith("-changelog"):
            _note_unmarked(self, topic, partition)
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
