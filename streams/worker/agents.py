"""What the worker does with one record, on each side of the join, and on each idle tick: the
bodies of the agents and timers that streams.worker.app wires up. Each reads as a sequence of
named steps; the rules are the domain's (streams.domain.join, timeline, watermark), the state is
the Pipeline's (streams.worker.pipeline).
"""
from __future__ import annotations

import logging
import weakref

from faust.streams import _current_event

from streams.contract.codec import Rejected
from streams.contract.internal import forwarded_value, read_forwarded, read_link
from streams.domain import join, timeline, watermark as wm
from streams.domain.stages import parse_time
from streams.worker.pipeline import Pipeline
from streams.worker.reroute import Rerouter

log = logging.getLogger("corridor")


async def read_input(pipe: Pipeline, reroute: Rerouter, kind: str, msg) -> dict | None:
    """An input record as a contract event, or None when it was dead-lettered (malformed) or
    sent on to the partition its key belongs to (streams/worker/reroute.py)."""
    counters = pipe.counters
    counters.inc(counters.consumed, msg.topic)
    try:
        ev = pipe.decoders[kind].decode(msg.key, msg.value)
    except Rejected as err:
        pipe.note_time(msg.topic, msg.partition, msg.offset, None)
        await pipe.reject(msg, err)
        return None
    if reroute.misplaced(msg) and await reroute(msg):
        pipe.note_time(msg.topic, msg.partition, msg.offset, None)
        return None
    return ev


async def unprocessable(pipe: Pipeline, msg, exc: Exception) -> None:
    """A record whose handling raised (a defect, not bad input): dead-lettered as
    `internal_error` with the exception's name and text (a replay after the fix applies it),
    logged with its traceback, and the worker goes on with the next record; a record of an
    internal join topic, which has no dead-letter topic, is counted and logged. faust's stream
    path crashed and restarted the agent, the record acknowledged and lost."""
    log.error("applying %s[%d]@%d raised", msg.topic, msg.partition, msg.offset, exc_info=exc)
    pipe.note_time(msg.topic, msg.partition, msg.offset, None)
    err = Rejected("internal_error", f"{type(exc).__name__}: {exc}"[:300])
    if pipe.has_dead_letters(msg):
        await pipe.reject(msg, err)
    else:
        pipe.counters.inc(pipe.counters.rejected, msg.topic, err.reason)


# ---- the order side: orders and links, keyed by order_id --------------------------------------
async def order_record(pipe: Pipeline, reroute: Rerouter, msg) -> None:
    p = msg.partition
    if msg.topic == pipe.settings.topic_order_links:
        link = read_link(msg.value)
        pipe.note_time(msg.topic, p, msg.offset, link.at)
        pipe.link_read(p, msg.offset)
        oid, step = link.order_id, join.link_step(pipe.order_state(link.order_id), link)
    else:
        ev = await read_input(pipe, reroute, "orders", msg)
        if ev is None:
            return
        oid = ev["order_id"]
        pipe.note_time(msg.topic, p, msg.offset, parse_time(ev["occurred_at"]))
        step = join.order_step(pipe.order_state(oid), ev)
        pipe.counters.inc(pipe.counters.duplicate if step.applied.duplicate
                          else pipe.counters.applied, msg.topic)
    write_order(pipe, p, oid, step.applied)
    forget_orders(pipe, p)
    for sid, oev in step.forwards:
        await pipe.send_internal(pipe.settings.topic_shipment_orders, sid, forwarded_value(oev))


def write_order(pipe: Pipeline, p: int, oid: str, res) -> None:
    if not res.duplicate:
        res.state["p"] = p
        pipe.orders[oid] = res.state
    pipe.order_expiry.note(p, oid, res.state)


def forget_orders(pipe: Pipeline, p: int) -> None:
    """An order may be forgotten only once every shipments partition is past it (a link to it can
    come from any of them) and the links already sent to it have been read."""
    if pipe.may_expire(pipe.order_expiry, p, "orders"):
        mark = wm.order_mark(pipe.global_watermark(), pipe.watermark(p, "orders"))
        if mark is not None:
            pipe.order_expiry.expire(p, mark)


# ---- the shipment side: shipments, customs and forwarded order events, keyed by shipment_id ---
async def timeline_record(pipe: Pipeline, reroute: Rerouter, msg) -> None:
    kind = pipe.kind_of[msg.topic]
    if kind == "forwarded":
        ev, source, label = read_forwarded(msg.value), "orders", pipe.settings.topic_orders
    else:
        ev = await read_input(pipe, reroute, kind, msg)
        if ev is None:
            return
        source, label = kind, msg.topic
    p = msg.partition
    pipe.reconcile(p)
    state = pipe.timeline_state(ev["shipment_id"])
    if state is None and kind != "forwarded" and pipe.too_old(msg.topic, p, source, ev):
        pipe.note_time(msg.topic, p, msg.offset, None)
        await pipe.reject(msg, Rejected("expired", f"{source} event {ev['event_id']} is older "
                                        "than the retention and its shipment is gone"))
        return
    step = join.shipment_step(state, source, ev, pipe.policy, pipe.settings.timeline_max_events)
    count_applied(pipe, step.applied, kind, label, msg)
    if not step.applied.duplicate:
        write_timeline(pipe, msg, step.applied)
        forget_shipments(pipe, p)
    for link in step.links:             # resent for a duplicate: see timeline.apply
        await pipe.send_link(link)


def count_applied(pipe: Pipeline, res, kind: str, label: str, msg) -> None:
    counters = pipe.counters
    if res.duplicate:
        if kind != "forwarded":
            counters.inc(counters.duplicate, label)
            pipe.note_time(msg.topic, msg.partition, msg.offset, res.event_time)
        return
    if kind != "forwarded":
        counters.inc(counters.applied, label)
    if res.late:
        counters.inc(counters.late, label)


def write_timeline(pipe: Pipeline, msg, res) -> None:
    """Advance the partition's clock, settle what the watermark allows, write the state and keep
    the indexes (open shipments, what is due) current."""
    p, state = msg.partition, res.state
    sid = state["id"]
    state["p"] = p
    pipe.advance_clock(msg.topic, p, msg.offset, res.event_time, state["last"])
    due = timeline.settle_due(state, pipe.settings.grace_seconds)
    if due is None:
        pipe.timelines[sid] = state
    else:                                    # settle writes the state, before the totals
        mark = pipe.recent_settle_mark(p) if due < pipe.clock_bound(p) else None
        pipe.settle(p, sid, state, mark)
    pipe.note_open(p, sid, state)
    pipe.timeline_expiry.note(p, sid, state)
    pipe.maybe_settle(p)


def forget_shipments(pipe: Pipeline, p: int) -> None:
    if pipe.may_expire(pipe.timeline_expiry, p, "shipments"):
        mark = pipe.recent_watermark(p)
        if mark is not None:
            pipe.timeline_expiry.expire(p, mark)


# ---- the idle tick ---------------------------------------------------------------------------
def settle_idle(pipe: Pipeline) -> None:
    """What no event will come to do: partitions whose input has ended for now settle against the
    wall clock (settle_mark), and ended shipments that the last event of a burst left due are
    forgotten (the agents read the watermark at most every SETTLE_MARK_SECONDS). Table writes
    outside a stream event name their partition (TimerEvent)."""
    for p in sorted(pipe.owned_partitions()):
        due = pipe.settle_index.due(p)
        mark = pipe.settle_mark(p) if due is not None else None
        settle = mark is not None and mark > due
        forget = pipe.watermark(p) if pipe.may_expire(pipe.timeline_expiry, p, "shipments") else None
        if not settle and forget is None:
            continue
        standin = TimerEvent(pipe.settings.topic_shipments, p)   # held: the context has a weakref
        token = _current_event.set(weakref.ref(standin))
        try:
            pipe.reconcile(p)
            if settle:
                pipe.settle_due(p, mark)
            if forget is not None:
                pipe.timeline_expiry.expire(p, forget)
        finally:
            _current_event.reset(token)


class TimerEvent:
    """Stands for the event being processed while a timer writes a table: Faust takes the
    changelog partition (and the RocksDB store its partition) from the current event."""

    def __init__(self, topic: str, partition: int):
        self.message = _TimerMessage(topic, partition)


class _TimerMessage:
    def __init__(self, topic: str, partition: int):
        self.topic, self.partition = topic, partition
