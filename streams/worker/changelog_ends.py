"""Where a changelog partition really ends, and what recovery does when the store is past that end.

Faust recovers a table by reading its changelog up to the end the consumer's `end_offsets`
(ListOffsets, latest) answers. The embedded broker (Tansu) answers the base offset of the
partition's last record batch + 1, not the high watermark (docs/broker.md "The ListOffsets
tail"): a changelog whose last batch holds several records, as a worker killed between a
commit's records and its end marker leaves it, was read short. A fetch is right on Tansu: its
records and its high watermark go to the true end. `true_end_offsets` fetches each partition from
the answered end onward until it has read up to the fetch's high watermark; recovery reads to
that end (streams.worker.faust_patches `_recovery_ends_patch`, embedded profile only).

`offsets_ahead` finds the partitions whose recovery offset (the last offset the worker's store
has seen there) is past the end: see docs/semantics.md "Crashes" for what that means and what
the worker does (it never stops with faust's ConsistencyError).
"""
from __future__ import annotations

import asyncio
from typing import Iterable, Mapping

#: The longest one probe of the changelog ends may take (start, fetches, stop).
PROBE_TIMEOUT = 10.0
#: How long a probe's fetch may wait on the broker (Tansu answers a fetch only when it is over).
PROBE_FETCH_WAIT_MS = 10


def caught_up(highwater: int | None, position: int) -> int | None:
    """The partition's end once the reader has read everything up to the high watermark of its
    last fetch (a fetch at that position returns nothing), else None (read on)."""
    if highwater is None or position < highwater:
        return None
    return position


async def true_end_offsets(bootstrap_servers, tps: Iterable, listed: Mapping, *,
                           client_options: dict | None = None,
                           timeout: float = PROBE_TIMEOUT) -> dict:
    """{tp: the offset after the partition's last record}, read with a short-lived consumer with
    manual assignment (no group, nothing committed) that fetches each partition from its
    `listed` end (the ListOffsets answer) until it has read up to the fetch's high watermark.

    Reads only the tail past the listed end (the rest of the last batch, normally). Raises
    asyncio.TimeoutError if that takes longer than `timeout`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    given = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}   # faust's TP or aiokafka's
    start = {atp: max(listed.get(tp) or 0, 0) for atp, tp in given.items()}
    tps = sorted(given)
    if not tps:
        return {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, client_id="corridor-changelog-end-probe",
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=PROBE_FETCH_WAIT_MS, **(client_options or {}))
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp])
        ends: dict = {}
        pending = set(tps)
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"changelog ends not read within {timeout} s: "
                                           f"{sorted(pending)}")
            # Short waits: a partition without a tail returns no records, only a high watermark.
            await consumer.getmany(*pending, timeout_ms=int(min(remaining, 0.05) * 1000))
            for tp in sorted(pending):
                end = caught_up(consumer.highwater(tp), await consumer.position(tp))
                if end is not None:
                    ends[given[tp]] = max(end, start[tp])
                    pending.discard(tp)
                    consumer.pause(tp)
        return ends
    finally:
        await asyncio.shield(consumer.stop())


def offsets_ahead(tps: Iterable, offsets: Mapping, highwaters: Mapping) -> list[tuple]:
    """[(tp, offset, highwater)] of the partitions whose recovery offset is past the changelog's
    last offset (faust's notation: both are last offsets, -1 for none), sorted."""
    out = []
    for tp in sorted(set(tps)):
        offset, highwater = offsets.get(tp), highwaters.get(tp)
        if offset is not None and highwater is not None and offset > highwater:
            out.append((tp, offset, highwater))
    return out


class RecoveryCounters:
    """The worker's counts of the two recovery corrections, by table (per process)."""

    def __init__(self, registry=None, tables: Iterable[str] = ()):
        from prometheus_client import Counter
        self.corrected = Counter(
            "corridor_recovery_end_corrected",
            "Times a recovery step (active or standby) found the end of a changelog partition, as "
            "the broker's ListOffsets answered it, short of its records (the embedded broker "
            "answers its last batch's first offset + 1); recovery read to the true end. By table.",
            ["table"], registry=registry)
        self.ahead = Counter(
            "corridor_recovery_offset_ahead",
            "Times a recovery step found a changelog partition's recovery offset past the log's "
            "end (the log lost records the store has seen): the worker kept its store and read "
            "on from the end (docs/semantics.md \"Crashes\"). By table.", ["table"],
            registry=registry)
        for name in tables:
            self.corrected.labels(name)
            self.ahead.labels(name)
