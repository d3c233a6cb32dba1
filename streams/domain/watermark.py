"""Event-time watermarks and the rule for forgetting state: when may an order or a shipment go?

State may be forgotten only when no record that could still need it can arrive from a topic
partition that has not been read far enough. The worker describes each topic partition of one
side of the join with a `Progress` (what it has read there, whether it knows it is at the end);
everything here is pure, so the rule is unit- and property-tested without a broker
(tests/unit/test_watermark.py, tests/unit/test_arrival_schedules.py).

The rule (docs/semantics.md "Bounded state"):

- A topic partition bounds the watermark at the latest event time read there (its clock).
- One that nothing has been read from bounds it at minus infinity (nothing may be forgotten),
  unless it is known to hold nothing unread (its end offset is known and reached): an empty topic
  does not hold a replay back.
- One that is caught up and has been silent for `idle_after` seconds of wall time stops bounding
  it: a feed that stopped must not keep every order forever.
- Records this worker sent to an internal topic and has not read back yet (links in flight)
  bound it at the earliest event time they carry.
- The watermark of a side on a partition is the minimum of those bounds; the join's order side
  also waits for the shipment side of every partition (a link to an order can come from any),
  taking for a partition it does not own the value its owner shared, and nothing (minus
  infinity) for a partition nobody has reported.
"""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple

NEG_INF = float("-inf")
POS_INF = float("inf")
#: A caught-up topic partition with no event for this long (wall seconds) stops holding the
#: watermark back.
IDLE_AFTER_SECONDS = 300.0


class Progress(NamedTuple):
    """What a worker knows of one topic partition it reads (a tuple: built for many events)."""
    clock: float | None = None          # latest event time read (None: nothing read yet)
    caught_up: bool = False             # the end offset is known and has been reached
    quiet_for: float = 0.0              # wall seconds since the last record read
    in_flight: float | None = None      # earliest event time of records sent here, not yet read


def bound(p: Progress, idle_after: float = IDLE_AFTER_SECONDS) -> float:
    """The event time up to which this topic partition lets the watermark go."""
    if p.clock is None:
        base = POS_INF if p.caught_up else NEG_INF
    elif p.caught_up and p.quiet_for >= idle_after:
        base = POS_INF
    else:
        base = p.clock
    return base if p.in_flight is None else min(base, p.in_flight)


def side_watermark(progress: Iterable[Progress], idle_after: float = IDLE_AFTER_SECONDS) -> float:
    """The watermark of one side of the join on one partition: the least bound of its topics.

    +inf when every topic is empty or idle (nothing bounds it: the caller keeps its last value)."""
    return min((bound(p, idle_after) for p in progress), default=POS_INF)


def finite(mark: float, clocks: Iterable[float | None]) -> float | None:
    """A watermark as a time: None when blocked (-inf); when nothing bounds it (+inf), the latest
    clock read on the side (what it has actually seen), or None if it has seen nothing."""
    if mark == NEG_INF:
        return None
    if mark == POS_INF:
        return max((c for c in clocks if c is not None), default=None)
    return mark


def global_watermark(local: Mapping[int, float | None], shared: Mapping[int, float | None],
                     partitions: int) -> float | None:
    """The shipment-side watermark every partition has reached: the least over the partitions of
    the worker's own value where it owns the partition, else the value its owner shared; None
    while any partition has neither (not assigned yet, recovering, nothing read)."""
    marks = []
    for p in range(partitions):
        value = local.get(p)
        if value is None:
            value = shared.get(p)
        if value is None:
            return None
        marks.append(value)
    return min(marks) if marks else None


def order_mark(global_shipments: float | None, order_side: float | None) -> float | None:
    """What an order's expiry is compared with: the shipments of every partition (links come from
    any of them) and the order's own partition (its events and the links already sent to it)."""
    if global_shipments is None or order_side is None:
        return None
    return min(global_shipments, order_side)


def may_forget(expires_at: float | None, mark: float | None) -> bool:
    """Forget a key once the watermark is past the time its state expires."""
    return expires_at is not None and mark is not None and expires_at < mark


def too_old(event_time: float, latest: float | None, retention: float) -> bool:
    """An event for a shipment the worker does not hold, older by more than the retention than
    the latest event time its own topic partition has carried (`latest`; None: nothing known):
    a straggler whose shipment was forgotten, dead-lettered as `expired` rather than starting a
    new, partial timeline. (Measured against its own topic: another topic of the partition may
    legitimately run weeks ahead.)"""
    return latest is not None and event_time < latest - retention
