"""Import customs as a first-class view: the clearance figures of one shipment.

A shipment **arrives** at its destination with its `arrived_destination` milestone (the opening of
the `customs` stage). Its **clearance time** is arrival -> the import `released` milestone (the
opening of `last_mile`): the customs stage's dwell. It is labelled at arrival with the import
regime in force for its destination and its value class (regimes.py). Its **holds**,
**inspections**, **rejections** and **seizures** are its import-direction `held_for_inspection`,
`inspection_completed`, `rejected` and `seized` events. Everything is decided when its figures
become final (timeline.settle, the same moment as its dwell and delivery), and counted once.
docs/semantics.md "Customs" defines every figure built here.
"""
from __future__ import annotations

from streams.domain import calendar
from streams.domain.policy import SlaPolicy
from streams.domain.records import CustomsObservation, TimelineState

#: Import customs event type -> the count it adds to (the `type` label of corridor_customs_events_total).
COUNTED_EVENTS = {"held_for_inspection": "hold", "inspection_completed": "inspection",
                  "rejected": "rejection", "seized": "seizure"}
EVENT_TYPES = ("hold", "inspection", "rejection", "seizure")
#: Age buckets of parcels waiting in customs (the `age` label): (label, upper bound in seconds).
DAY = 86400.0
AGE_BUCKETS = (("0-1d", 1 * DAY), ("1-2d", 2 * DAY), ("2-5d", 5 * DAY), ("5-10d", 10 * DAY),
               ("10d+", float("inf")))
AGE_LABELS = tuple(label for label, _ in AGE_BUCKETS)


def age_bucket(seconds: float) -> str:
    for label, bound in AGE_BUCKETS:
        if seconds < bound:
            return label
    return AGE_LABELS[-1]


def destination(state: TimelineState) -> str | None:
    """The buyer's country of the primary order, else the shipment's destination_country."""
    first = state["orders"][0] if state["orders"] else None
    facts = state["of"].get(first) if first else None
    return (facts or {}).get("buyer") or state["dest"]


def declared_values(state: TimelineState) -> list[tuple[float, str]] | None:
    """[(amount, currency)] of every order the shipment carries (not cancelled), or None if one
    of them has not declared a value (or is not known yet): a partial sum could put a parcel
    below a threshold it is above."""
    out = []
    for oid in state["orders"]:
        facts = state["of"].get(oid)
        if facts is None or facts.get("cancelled"):
            continue
        value = facts.get("value")
        if not value:
            return None
        out.append((float(value[0]), value[1]))
    return out or None


def classify(state: TimelineState, policy: SlaPolicy, arrival: float) -> tuple[str, str]:
    """(regime, value class) of the shipment at its arrival."""
    return policy.regimes.classify(destination(state), arrival, declared_values(state))


def counts(state: TimelineState, until: float) -> dict[str, int]:
    """Import holds, inspections, rejections and seizures applied before the figures were final
    (`cx`, kept by timeline.apply: a late event changes no figure) that happened at or before
    `until` (the end + the grace, as for the other exceptions)."""
    out = dict.fromkeys(EVENT_TYPES, 0)
    for typ, t in state.get("cx", ()):
        if t <= until:
            out[typ] += 1
    return out


def within_business_days(policy: SlaPolicy, dest: str | None, arrival: float,
                         release: float) -> bool | None:
    """Released within the destination's business-day target (None: none configured)."""
    d = policy.destination(dest)
    if d is None or d.customs_target_business_days is None:
        return None
    used = calendar.business_days_between(arrival, release, dest, d.timezone, d.holidays_subdiv,
                                          d.weekend)
    return used <= d.customs_target_business_days


def observe(state: TimelineState, policy: SlaPolicy, corr: str, end_t: float,
            grace: float) -> list[CustomsObservation]:
    """The customs observation of a final shipment that arrived at its destination before its
    end, else none. (A parcel that never arrived has no clearance to measure.)"""
    arrival = state["ms"].get("customs")
    if arrival is None or arrival > end_t:
        return []
    dest = destination(state)
    regime, value_class = classify(state, policy, arrival)
    release = state["ms"].get("last_mile")
    clearance = within = business = None
    if release is not None and release <= end_t:
        clearance = release - arrival
        within = clearance <= policy.customs_target_seconds(dest)
        business = within_business_days(policy, dest, arrival, release)
    n = counts(state, end_t + grace)
    return [("customs", corr, dest or "unknown", regime, value_class, clearance, within, business,
             n["hold"], n["inspection"], n["rejection"], n["seizure"])]


def waiting(state: TimelineState, policy: SlaPolicy, since: float) -> tuple[str, str, str]:
    """(destination, regime, value class) of an open shipment waiting in customs since `since`
    (its arrival): the labels of corridor_customs_waiting."""
    dest = destination(state)
    regime, value_class = classify(state, policy, since)
    return dest or "unknown", regime, value_class
