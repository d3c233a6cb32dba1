"""One shipment's joined timeline and the rules that turn it into SLA figures.

The state of one shipment is a `records.TimelineState`: a plain JSON-able dict with short keys.
It is a Faust table value and a changelog record, so its fields, their units and the older
shapes still found in changelogs are documented in streams/domain/records.py. `new_state`
creates it and `apply` folds in events. `settle` sets `fin`, `observed` and `pend` and compacts
`ev`, `remember` appends to `lobs`, and the worker sets the partition `p`.

`apply(state, source, event)` folds one event into the state; `settle(state, policy, mark, grace)`
turns what the watermark `mark` has made certain into observations, which the caller adds to the
per-corridor totals: exceptions once the watermark has passed them, the end once it has passed
the end + `grace` (allowed lateness). Everything here is event-time only: the same events give the
same figures in any order whose disorder stays within the grace (docs/semantics.md).
"""
from __future__ import annotations

import bisect
import sys
from dataclasses import dataclass, field

from streams.domain import calendar, customs, risk
from streams.domain.policy import SlaPolicy
from streams.domain.records import Observation, OrderFacts, TimelineState
from streams.domain.stages import (END_EVENTS, EVENT_EXCEPTIONS, MILESTONES, STAGE_RANK, STAGES, UNKNOWN,
                     corridor_of, iso, parse_time)

#: Allowed lateness (seconds of event time): a shipment's figures are final once the watermark
#: passes its end by this much; milestones that arrive before count as if they had come in order.
DEFAULT_GRACE_SECONDS = 48 * 3600.0
SEEN_CAP = 512          # event ids remembered per shipment for dedupe (far above a real history)
MILESTONE_TYPES = {etype for (_src, etype) in MILESTONES} | set(END_EVENTS)
#: What an ended, observed shipment keeps of its timeline: milestones, the end, exceptions, the label.
KEPT_AFTER_END = MILESTONE_TYPES | {etype for (_src, etype) in EVENT_EXCEPTIONS} | \
    {"label_created", "order_cancelled"}


@dataclass
class Applied:
    """What one event did to a shipment."""
    state: TimelineState
    duplicate: bool = False
    late: bool = False
    #: Links to publish to the orders side, each stamped with `event_time`: the event-time at
    #: which the shipment named the order. (Not the shipment's latest time: a link in flight
    #: holds the order side's watermark at its stamp, and a stamp later than the order's expiry
    #: would let the order go before the link reaches it; docs/semantics.md "Bounded state".)
    new_order_ids: list[str] = field(default_factory=list)
    event_time: float | None = None                          # occurred_at of this event


def new_state(shipment_id: str) -> TimelineState:
    return {"id": shipment_id, "orders": [], "of": {}, "origin": None, "dest": None,
            "carrier": None, "tracking": None, "ms": {}, "end": None, "fin": False, "observed": False,
            "pend": [], "ev": [], "seen": [], "first": None, "last": None, "late": 0}


# ---- derived facts ------------------------------------------------------------------------
def primary_order(state: TimelineState) -> OrderFacts | None:
    """Facts of the primary order once its order_placed is known, else None."""
    if not state["orders"]:
        return None
    facts = state["of"].get(state["orders"][0])
    return facts if facts and facts.get("placed") is not None else None


def corridor(state: TimelineState) -> str:
    """From the primary order (seller-buyer); until it is known, from the shipment's countries."""
    order = primary_order(state)
    if order is not None:
        return corridor_of(order["seller"], order["buyer"])
    return corridor_of(state["origin"], state["dest"])


def service_level(state: TimelineState) -> str:
    order = primary_order(state)
    return order["sl"] if order is not None else UNKNOWN


def promise(state: TimelineState, policy: SlaPolicy) -> float | None:
    """promised_delivery_at of the primary order, else placed + the policy's hours; None if no order."""
    order = primary_order(state)
    if order is None:
        return None
    if order.get("promised") is not None:
        return order["promised"]
    return order["placed"] + policy.promise_seconds(corridor(state), order["sl"])


def milestones(state: TimelineState, until: float | None = None) -> list[tuple[float, str]]:
    """(time, stage) sorted by event time, journey order breaking ties; optionally up to `until`."""
    out = [(t, s) for s, t in state["ms"].items() if until is None or t <= until]
    out.sort(key=lambda item: (item[0], STAGE_RANK[item[1]]))
    return out


def stage_durations(state: TimelineState) -> list[tuple[str, float, float | None]]:
    """(stage, start, seconds) per reached stage; the current stage of an open shipment has None."""
    end_t = state["end"][1] if state["end"] else None
    ms = milestones(state, end_t)
    out = []
    for i, (t, stage) in enumerate(ms):
        nxt = ms[i + 1][0] if i + 1 < len(ms) else end_t
        out.append((stage, t, None if nxt is None else nxt - t))
    return out


def has_parcel_events(state: TimelineState) -> bool:
    """Has any shipment or customs event been applied? (Order facts alone are not a parcel.)"""
    for e in state["ev"]:
        if e[1] != "orders":
            return True
    return False


def expires_at(state: TimelineState, retention: float) -> float | None:
    """Event time after which a shipment may be forgotten; None while it is needed.

    An ended, observed shipment: its end + retention. A state that holds only order facts (the
    order was forwarded after the shipment itself had been forgotten): its last event + retention.
    """
    if state["end"] is None:
        return None if has_parcel_events(state) else state["last"] + retention
    if not state["observed"]:
        return None
    return state["end"][1] + retention


def expiry_reason(state: TimelineState) -> str:
    """Why a shipment that `expires_at` let go was forgotten (the `reason` label of
    corridor_state_expired_total): `ended` (observed, a retention after its end) or
    `order_facts_only` (an order forwarded to a shipment that had already been forgotten)."""
    return "ended" if state["end"] is not None else "order_facts_only"


def awaiting_order(state: TimelineState) -> bool:
    """A parcel (shipment or customs events applied) whose primary order is not known: it cannot
    be attributed to its corridor's SLA and, if it has ended, is not counted until the order
    arrives (corridor_shipments_awaiting_order)."""
    return not state["observed"] and primary_order(state) is None and has_parcel_events(state) \
        and not (state["end"] is not None and state["end"][0] == "cancelled")


def current_stage(state: TimelineState) -> tuple[str, float] | None:
    """(stage, since) for an open shipment: its latest milestone; fulfilment from its first event if none."""
    if state["end"] is not None or not has_parcel_events(state):
        return None     # ended, or only order facts so far: not a parcel on its way
    ms = milestones(state)
    if ms:
        t, stage = ms[-1]
        return stage, t
    return STAGES[0], state["first"]


# ---- the state transition ---------------------------------------------------------------------
def apply(state: TimelineState | None, source: str, event: dict, policy: SlaPolicy,
          max_events: int = 100) -> Applied:
    """Apply one contract event (`source` = orders | shipments | customs) to a shipment's state.

    `event` is a decoded, validated contract message; an `orders` event reaches a shipment after
    the join has linked its order to it. Duplicates (same event_id) change nothing.
    """
    sid = event.get("shipment_id") or (state["id"] if state else None)
    state = state if state is not None else new_state(sid)
    eid = event["event_id"]
    if eid in state["seen"]:
        # Links are sent again for a redelivered event: the first send may have been lost in a
        # crash after the state reached the changelog (the order side dedupes links).
        return Applied(state, duplicate=True,
                       new_order_ids=list(event.get("order_ids") or ()) if source == "shipments" else [],
                       event_time=parse_time(event["occurred_at"]))
    state["seen"].append(eid)
    if len(state["seen"]) > SEEN_CAP:
        del state["seen"][0]

    t = parse_time(event["occurred_at"])
    etype = event["event_type"]
    state["first"] = t if state["first"] is None else min(state["first"], t)
    state["last"] = t if state["last"] is None else max(state["last"], t)
    _record(state, [t, source, etype, eid, _info(source, event)], max_events)

    result = Applied(state, event_time=t)
    final = is_final(state)
    # Order facts are never late: the join may deliver an order after the parcel's last event,
    # and it then completes the shipment's observation rather than being ignored.
    result.late = final and source != "orders"
    if result.late:
        state["late"] += 1
    # Facts (which orders, which countries) are taken whenever they come: they are needed to
    # attribute and observe a shipment that ended before its order was known.
    if source == "shipments":
        _shipment_facts(state, event, result)
    elif source == "orders":
        _order_facts(state, event, t)

    if not state["observed"]:
        stage = MILESTONES.get((source, etype))
        if stage is not None and (source != "customs" or event.get("direction") == "import"):
            if stage == "fulfilment":
                placed = [f["placed"] for f in state["of"].values() if f.get("placed") is not None]
                state["ms"]["fulfilment"] = min(placed)
            elif not final:
                old = state["ms"].get(stage)
                state["ms"][stage] = t if old is None else min(old, t)
    if not final:
        exc = EVENT_EXCEPTIONS.get((source, etype))
        if exc is not None:
            state["pend"].append([exc, t])
        if source == "customs" and etype in customs.COUNTED_EVENTS and event.get("direction") == "import":
            state.setdefault("cx", []).append([customs.COUNTED_EVENTS[etype], t])
        end = state["end"]
        if source == "shipments" and etype in END_EVENTS:
            if end is None or end[0] == "cancelled" or t < end[1]:   # the earliest end wins
                state["end"] = [etype, t]
        elif source == "orders" and etype == "order_cancelled" and end is None \
                and _all_cancelled(state) and "origin" not in state["ms"]:
            state["end"] = ["cancelled", t]
    return result


def is_final(state: TimelineState) -> bool:
    """Are the shipment's figures final? A state without `fin` (changelog versions 1-3,
    records.py) was final as soon as it ended."""
    fin = state.get("fin")
    return state["end"] is not None if fin is None else fin


def settle_due(state: TimelineState, grace: float) -> float | None:
    """The watermark beyond which `settle` has something to do for this shipment (-inf: at once),
    else None (nothing, or waiting for facts that only an event brings: its corridor, its order)."""
    if state["end"] is None and not state["pend"]:
        return None                 # a parcel on its way: the usual case, decided cheaply
    if corridor(state) == UNKNOWN:
        return None
    if is_final(state):
        if state["observed"] or (primary_order(state) is None and state["end"][0] != "cancelled"):
            return None
        return float("-inf")
    times = [_pend_time(item) for item in state["pend"]]
    if state["end"] is not None and not is_final(state):
        times.append(state["end"][1] + grace)
    return min(times) if times else None


def _pend_time(item) -> float:
    # A str item (changelog versions 1-3, records.py) has no time: it is due at once.
    return item[1] if isinstance(item, list) else float("-inf")


def settle(state: TimelineState, policy: SlaPolicy, mark: float | None,
           grace: float) -> list[Observation]:
    """The observations the watermark `mark` (event time every topic of the shipment's partition
    has reached; None: unknown) makes certain, marking them done in the state:

    - each pending exception once the watermark has passed its time (no end that precedes it can
      still arrive), unless the shipment ended more than `grace` before it (it comes after the
      figures are final), and once the corridor is known;
    - the end, once the watermark is past the end + `grace`: the figures are then final (and
      observed when the primary order is known: transit and promise need order_placed)."""
    out: list[Observation] = []
    end = state["end"]
    if end is not None and not is_final(state) and mark is not None and mark > end[1] + grace:
        state["fin"] = True
    corr = corridor(state)
    if corr == UNKNOWN:
        return out
    final = is_final(state)
    keep = []
    for item in state["pend"]:
        exc, t = (item, float("-inf")) if isinstance(item, str) else item     # str: see _pend_time
        if not (final or (mark is not None and t <= mark)):
            keep.append(item)
        elif end is None or t <= end[1] + grace:
            out.append(("exception", corr, exc))
    state["pend"] = keep
    if final and not state["observed"]:
        _observe_end(state, policy, corr, out, grace)
    return out


def _time_of(item: list) -> float:
    return item[0]


def _record(state: TimelineState, item: list, max_events: int) -> None:
    events = state["ev"]
    if not events or events[-1][0] <= item[0]:      # in time order: the usual case
        events.append(item)
    else:
        events.insert(bisect.bisect_right(events, item[0], key=_time_of), item)
    if len(events) > max_events:
        # Drop the oldest event that is not a milestone or an end: the stage breakdown must stay.
        for i, e in enumerate(events):
            if e[2] not in MILESTONE_TYPES:
                del events[i]
                break
        else:
            del events[0]


def _info(source: str, event: dict) -> str | None:
    if source == "customs":
        return f"{event['direction']} {event['country']} {event['declaration_id']}"
    if source == "shipments":
        loc = event.get("location") or {}
        return " ".join(v for v in (loc.get("facility"), loc.get("country")) if v) or None
    if source == "orders":
        return event["order_id"]
    return None


def _shipment_facts(state: TimelineState, event: dict, result: Applied) -> None:
    for oid in event.get("order_ids") or ():
        if oid not in state["orders"]:
            state["orders"].append(oid)
            result.new_order_ids.append(oid)
    for key, field_ in (("origin", "origin_country"), ("dest", "destination_country"),
                        ("carrier", "carrier"), ("tracking", "tracking_number")):
        if event.get(field_):
            state[key] = event[field_]


def _order_facts(state: TimelineState, event: dict, t: float) -> None:
    # Only shipment events name the orders (their order makes the primary one): an order's events
    # normally come after the shipment event that linked it, but after a crash they can be read
    # before it is applied again, and must not make a later-named order primary.
    oid = event["order_id"]
    facts = state["of"].setdefault(oid, {"seller": None, "buyer": None, "sl": None,
                                         "placed": None, "promised": None, "cancelled": False})
    facts["seller"] = event.get("seller_country") or facts["seller"]
    facts["buyer"] = event.get("buyer_country") or facts["buyer"]
    facts["sl"] = event.get("service_level") or facts["sl"]
    if event.get("promised_delivery_at"):
        facts["promised"] = parse_time(event["promised_delivery_at"])
    declared = event.get("declared_value")
    if declared:
        facts["value"] = [declared["amount"], declared["currency"]]
    if event["event_type"] == "order_placed":
        facts["placed"] = t if facts["placed"] is None else min(facts["placed"], t)
    elif event["event_type"] == "order_cancelled":
        facts["cancelled"] = True


def _all_cancelled(state: TimelineState) -> bool:
    return bool(state["orders"]) and all(
        state["of"].get(oid, {}).get("cancelled") for oid in state["orders"])


def is_on_time(state: TimelineState, policy: SlaPolicy, delivered: float, due: float) -> bool:
    """Delivered at or before the promise; where the policy gives the destination a time zone,
    by local date there (delivered on the promised day counts, whatever the hour)."""
    dest = policy.destination(customs.destination(state))
    if dest is not None and dest.timezone:
        return calendar.local_date(delivered, dest.timezone) <= calendar.local_date(due, dest.timezone)
    return delivered <= due


def on_time_in_business_days(state: TimelineState, policy: SlaPolicy, order: OrderFacts,
                             delivered: float) -> bool | None:
    """Delivered on or before the n-th business day after order_placed (local dates), where the
    policy gives the destination `promise_business_days` for the service level; else None."""
    country = customs.destination(state)
    dest = policy.destination(country)
    days = dest.promise_business_days.get(order["sl"]) if dest is not None else None
    if days is None:
        return None
    due = calendar.nth_business_day(order["placed"], days, country, dest.timezone,
                                    dest.holidays_subdiv, dest.weekend)
    return calendar.local_date(delivered, dest.timezone) <= due


def stages_within_business_days(state: TimelineState, policy: SlaPolicy,
                                durations: list[tuple[str, float, float | None]]
                                ) -> list[tuple[str, bool]]:
    """(stage, within) for each stage the shipment went through that the policy gives a target
    in business days (`[destination.XX] stage_target_business_days`): within if the stage
    ended on a local date at or before the n-th business day after its start's local date. The
    destination's calendar and time zone count for every stage, fulfilment and origin included
    (the policy is the destination's). A due date, like the promise in business days: a stage
    that ends on a weekend or holiday after that day is over target."""
    country = customs.destination(state)
    dest = policy.destination(country)
    if dest is None or not dest.stage_target_business_days:
        return []
    out = []
    for stage, start, seconds in durations:
        days = dest.stage_target_business_days.get(stage)
        if days is None or seconds is None:
            continue
        due = calendar.nth_business_day(start, days, country, dest.timezone, dest.holidays_subdiv,
                                        dest.weekend)
        out.append((stage, calendar.local_date(start + seconds, dest.timezone) <= due))
    return out


def _observe_end(state: TimelineState, policy: SlaPolicy, corr: str,
                 out: list[Observation], grace: float) -> None:
    """The end observation of a final shipment, once (cancelled: at once; else once its primary
    order is known)."""
    end_type, end_t = state["end"]
    if end_type == "cancelled":
        out.append(("exception", corr, "cancelled"))
        state["observed"] = True
        compact(state)
        return
    order = primary_order(state)
    if order is None:
        return          # observed when the order arrives: transit and promise need order_placed
    durations = stage_durations(state)
    for stage, _start, seconds in durations:
        out.append(("dwell", corr, stage, seconds))
    out.extend(customs.observe(state, policy, corr, end_t, grace))
    if end_type == "delivered":
        due = promise(state, policy)
        on_time = is_on_time(state, policy, end_t, due)
        out.append(("delivered", corr, order["sl"], on_time, end_t - order["placed"]))
        in_customs = sum(seconds for stage, _start, seconds in durations if stage == "customs")
        out.append(("delivered_ex_customs", corr, order["sl"],
                    is_on_time(state, policy, end_t - in_customs, due)))
        business = on_time_in_business_days(state, policy, order, end_t)
        if business is not None:
            out.append(("delivered_business_days", corr, order["sl"], business))
        for stage, within in stages_within_business_days(state, policy, durations):
            out.append(("stage_business_days", corr, stage, within))
        out.extend(risk.observations(corr, order["sl"], durations, end_t))
        if not on_time:
            stages = [(stage, seconds, policy.stage_target(corr, stage, order["sl"]))
                      for stage, _start, seconds in stage_durations(state)]
            for stage, seconds in risk.attribute_lateness(end_t - due, stages).items():
                out.append(("late", corr, stage, seconds))
    else:
        out.append(("exception", corr, end_type))
    state["observed"] = True
    compact(state)


#: How many recent settlements a shipment remembers (see `remember`).
RECENT_OBSERVING = 4


def remember(state: TimelineState, source: str, seq: int,
             observations: list[Observation]) -> None:
    """Keep the observations that settlement number `seq` (of `source`) counted, the last
    RECENT_OBSERVING of them ("lobs": [source, seq, observations], records.Remembered).

    The shipment's state and the per-corridor totals are two records (two changelogs). A crash
    can persist the state without the totals: the worker's successor compares what the states
    remember with the numbers the totals counted and adds the difference (totals.missing,
    called by streams.worker.pipeline Pipeline.reconcile). Observations come back as lists
    after a changelog round trip; `aggregate.add` takes either.
    """
    kept = state.setdefault("lobs", [])
    kept.append([source, seq, observations])
    del kept[:-RECENT_OBSERVING]


def compact(state: TimelineState) -> None:
    """An observed shipment needs only its milestones, end and exceptions (for its view) and its
    seen ids (for dedupe): routine scans go. Late events are still appended afterwards."""
    state["ev"] = [e for e in state["ev"] if e[2] in KEPT_AFTER_END]


# ---- read side --------------------------------------------------------------------------------
def open_entry(state: TimelineState, policy: SlaPolicy) -> tuple | None:
    """What the open-shipment gauges need of one shipment, independent of the clock, else None
    (not open): (corridor, service_level, stage, beyond, due, since) where the stage runs over its
    target from `beyond` on, the shipment is overdue after `due` (None: no promise) and it entered
    the stage at `since` (what its lateness risk is conditioned on, risk.score_open).

    Workers keep one per open shipment and update it on every write, so a scrape costs one pass
    over small tuples (`aggregate.gauges_of`), not a pass over the timelines.
    """
    cur = current_stage(state)
    if cur is None:
        return None
    stage, since = cur
    corr = sys.intern(corridor(state))
    sl = service_level(state)
    waiting = (*customs.waiting(state, policy, since), since) if stage == "customs" else None
    return (corr, sl, stage, since + policy.stage_target(corr, stage, sl), promise(state, policy),
            since, waiting)


def describe(state: TimelineState, now: float, policy: SlaPolicy) -> dict:
    """The timeline as the /shipments/{id} view and `corridor shipment ID` show it."""
    corr = corridor(state)
    due = promise(state, policy)
    cur = current_stage(state)
    if state["end"] is None:
        status = "open"
    elif state["observed"] or state["end"][0] == "cancelled" or primary_order(state) is not None:
        status = state["end"][0]
    else:
        status = f"{state['end'][0]} (awaiting order)"
    sla = None
    if due is not None:
        if state["end"] and state["end"][0] == "delivered":
            sla = "on_time" if is_on_time(state, policy, state["end"][1], due) else "late"
        elif state["end"] is None:
            sla = "overdue" if now > due else "on_track"
    stages = []
    for stage, start, seconds in stage_durations(state):
        target = policy.stage_target(corr, stage, service_level(state))
        elapsed = seconds if seconds is not None else max(0.0, now - start)
        stages.append({"stage": stage, "started_at": iso(start), "seconds": seconds,
                       "elapsed_seconds": elapsed, "target_seconds": target,
                       "excess_seconds": max(0.0, elapsed - target)})
    return {
        "shipment_id": state["id"], "corridor": corr, "service_level": service_level(state),
        "status": status, "sla": sla, "promised_delivery_at": iso(due),
        "stage": cur[0] if cur else None, "stage_since": iso(cur[1]) if cur else None,
        "ended_at": iso(state["end"][1]) if state["end"] else None,
        "order_ids": list(state["orders"]), "carrier": state["carrier"],
        "tracking_number": state["tracking"], "origin_country": state["origin"],
        "destination_country": state["dest"],
        "transit_seconds": (state["end"][1] - primary_order(state)["placed"]
                            if state["end"] and state["end"][0] == "delivered"
                            and primary_order(state) else None),
        "stages": stages, "late_events": state["late"], "now": iso(now),
        "figures_final": is_final(state),
        "events": [{"occurred_at": iso(t), "source": src, "event_type": et, "event_id": eid,
                    "info": info} for t, src, et, eid, info in state["ev"]],
    }
