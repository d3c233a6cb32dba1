"""Names that the semantics, metrics and schemas share: stages, milestones, end events, corridors."""
from __future__ import annotations

from datetime import datetime, timezone

SERVICE_LEVELS = ("economy", "standard", "express")

#: Stages in journey order; each is opened by a milestone and lasts until the next milestone.
STAGES = ("fulfilment", "origin", "linehaul", "customs", "last_mile")
STAGE_RANK = {s: i for i, s in enumerate(STAGES)}

#: (source, event_type) -> the stage that event opens. The import `released` customs event opens
#: last_mile; an export release does not (timeline.apply opens a customs stage only for
#: `direction` import).
MILESTONES = {
    ("orders", "order_placed"): "fulfilment",
    ("shipments", "picked_up"): "origin",
    ("shipments", "departed_origin"): "linehaul",
    ("shipments", "arrived_destination"): "customs",
    ("customs", "released"): "last_mile",
}

#: Shipment events that end a shipment (the earliest in event time wins until the figures are
#: final, timeline.apply; events after that are late).
END_EVENTS = ("delivered", "returned", "lost")

#: Events that count as an exception when applied (ends are counted when the shipment ends).
EVENT_EXCEPTIONS = {
    ("shipments", "delivery_failed"): "delivery_failed",
    ("customs", "held_for_inspection"): "customs_hold",
    ("customs", "rejected"): "customs_rejected",
    ("customs", "seized"): "customs_seized",
}

UNKNOWN = "unknown"


def corridor_of(seller_country: str | None, buyer_country: str | None) -> str:
    """`CN-AU` from two ISO 3166-1 alpha-2 codes; `unknown` unless both are known."""
    if seller_country and buyer_country:
        return f"{seller_country}-{buyer_country}"
    return UNKNOWN


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO-8601 in UTC (as the views and reports print times)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


#: The last string parse_time parsed and its value: the codec checks an event's occurred_at and
#: the domain then reads the same string object, so the second call is an identity test.
_last_parsed: tuple[object, float] = (object(), 0.0)


def parse_time(s: str) -> float:
    """ISO-8601 date-time with a mandatory UTC offset ('Z' or ±HH:MM) -> epoch seconds.

    Raises ValueError whose message quotes the value and says what is wrong with it. A time
    without an offset is a different instant on every producer host (and in every country a
    parcel crosses): it is refused rather than guessed.
    """
    global _last_parsed
    last = _last_parsed
    if s is last[0]:
        return last[1]
    t = _parse_time(s)
    _last_parsed = (s, t)
    return t


def _parse_time(s: str) -> float:
    if not isinstance(s, str):
        raise ValueError(f"{s!r} is not a string")
    try:
        # C-implemented and, since 3.11, accepts 'Z' and any offset: the fast path.
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{s!r} is not an ISO-8601 date-time") from None
    if dt.tzinfo is None:
        raise ValueError(f"{s!r} has no UTC offset")
    try:
        return dt.timestamp()
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{s!r} is out of range") from None
