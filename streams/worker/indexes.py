"""Indexes of when each key of a table is next due for something: settling a shipment
(`settle_index`, timeline.settle_due) or forgetting it (`Expiry`, timeline/orders.expires_at).
The table is the truth; these heaps only save the agents a scan of it per event."""
from __future__ import annotations

import heapq
from typing import Callable

from streams.domain import timeline


class DueIndex:
    """When each key of a table is next due for something (`due_of(state)`: an event time, or
    None): a min-heap of (time, key) per partition.

    Built lazily by one scan of the table per partition after an assignment (the table is the
    truth; the heap is only an index), kept up to date as keys change (`note`), and consumed by the
    agents while they process an event of that partition, or by a timer that names the partition,
    where Faust allows the write (it goes to the changelog partition of the key).
    """

    def __init__(self, table, due_of: Callable[[dict], float | None]):
        self.table = table
        self.due_of = due_of
        self._heaps: dict[int, list] = {}

    def note(self, partition: int, key: str, state: dict) -> None:
        heap = self._heaps.get(partition)
        if heap is not None and (t := self.due_of(state)) is not None:
            heapq.heappush(heap, (t, key))

    def _heap(self, partition: int) -> list:
        heap = self._heaps.get(partition)
        if heap is None:
            due_of = self.due_of
            heap = self._heaps[partition] = [
                (t, key) for key, st in self.table.items()
                if st.get("p") == partition and (t := due_of(st)) is not None]
            heapq.heapify(heap)
        return heap

    def due(self, partition: int) -> float | None:
        """The earliest time at which a key of the partition is due (None: none is)."""
        heap = self._heaps.get(partition)
        if heap is None:
            heap = self._heap(partition)
        return heap[0][0] if heap else None

    def pop_due(self, partition: int, mark: float) -> list[tuple[str, dict]]:
        """(key, state) of every key due before `mark` and unchanged since it was noted; their
        entries are consumed. A key noted twice for the same time comes once: a RocksDB store
        hands out a copy per read, and two copies would both be acted on."""
        heap = self._heap(partition)
        out: dict[str, dict] = {}
        while heap and heap[0][0] < mark:
            t, key = heapq.heappop(heap)
            if key in out:
                continue
            state = self.table.get(key)
            if state is not None and self.due_of(state) == t:
                out[key] = state
        return list(out.items())

    def forget(self, partitions) -> None:
        for p in partitions:
            self._heaps.pop(p, None)


class Expiry(DueIndex):
    """When each key of a table may be forgotten (`expires_at`), and forgetting it: the
    tombstone goes to the changelog partition of the event being processed, which is the key's."""

    def __init__(self, table, expires_at: Callable[[dict], float | None],
                 reason_of: Callable[[dict], str], count: Callable[[str], None]):
        super().__init__(table, expires_at)
        self.reason_of = reason_of
        self.count = count                  # called with the reason of each key forgotten

    def expire(self, partition: int, mark: float) -> int:
        gone = self.pop_due(partition, mark)
        for key, state in gone:
            del self.table[key]
            self.count(self.reason_of(state))
        return len(gone)


def settle_index(table, grace: float) -> DueIndex:
    """When each shipment next has something to settle (timeline.settle_due)."""
    return DueIndex(table, lambda state: timeline.settle_due(state, grace))
