"""Builders of contract events with readable defaults, shared by every test tier.

Times are hours after T0 (2025-03-01T00:00:00Z) so expected figures are easy to compute by hand.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import count

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
T0_EPOCH = T0.timestamp()
HOUR = 3600.0
_ids = count(1)


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def eid(prefix: str = "e") -> str:
    return f"{prefix}-{next(_ids)}"


def order(order_id: str, hours: float, *, etype: str = "order_placed", seller: str = "CN",
          buyer: str = "AU", sl: str = "standard", promised_h: float | None = None, **extra) -> dict:
    ev = {"event_id": extra.pop("event_id", None) or eid("o"), "order_id": order_id,
          "event_type": etype, "occurred_at": at(hours), "seller_country": seller,
          "buyer_country": buyer, "service_level": sl}
    if promised_h is not None:
        ev["promised_delivery_at"] = at(promised_h)
    ev.update(extra)
    return ev


def ship(shipment_id: str, etype: str, hours: float, *, order_ids=None, **extra) -> dict:
    ev = {"event_id": extra.pop("event_id", None) or eid("s"), "shipment_id": shipment_id,
          "event_type": etype, "occurred_at": at(hours)}
    if order_ids is not None:
        ev["order_ids"] = list(order_ids)
    ev.update(extra)
    return ev


def customs(shipment_id: str, etype: str, hours: float, *, direction: str = "import",
            country: str = "AU", declaration_id: str | None = None, **extra) -> dict:
    ev = {"event_id": extra.pop("event_id", None) or eid("c"), "shipment_id": shipment_id,
          "declaration_id": declaration_id or f"D-{shipment_id}-{direction}", "direction": direction,
          "country": country, "event_type": etype, "occurred_at": at(hours)}
    ev.update(extra)
    return ev


def journey(sid: str, oid: str, *, seller="CN", buyer="AU", sl="standard", promised_h=None,
            placed=0.0, picked=10.0, departed=30.0, arrived=80.0, released=100.0, delivered=130.0,
            end="delivered", hold=False):
    """A complete history as (source, event) in event-time order; None skips a milestone."""
    out = [("orders", order(oid, placed, seller=seller, buyer=buyer, sl=sl, promised_h=promised_h)),
           ("shipments", ship(sid, "label_created", placed + 1, order_ids=[oid],
                              origin_country=seller, destination_country=buyer))]
    if picked is not None:
        out.append(("shipments", ship(sid, "picked_up", picked)))
    if departed is not None:
        out.append(("shipments", ship(sid, "departed_origin", departed)))
    if arrived is not None:
        out.append(("shipments", ship(sid, "arrived_destination", arrived)))
        out.append(("customs", customs(sid, "declaration_lodged", arrived + 1, country=buyer)))
        if hold:
            out.append(("customs", customs(sid, "held_for_inspection", arrived + 2, country=buyer)))
    if released is not None:
        out.append(("customs", customs(sid, "released", released, country=buyer)))
    if delivered is not None:
        out.append(("shipments", ship(sid, end, delivered)))
    return out


def shared_data():
    """The team's shared test data (../shared/data next to the checkout; read, never copied).

    CORRIDOR_SHARED_DATA overrides; a clone elsewhere (CI's, /tmp/x) falls back to /work/shared.
    """
    import os
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    for candidate in (os.environ.get("CORRIDOR_SHARED_DATA"), repo.parent / "shared" / "data",
                      Path("/work/shared/data")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise FileNotFoundError("shared test data not found: set CORRIDOR_SHARED_DATA to ../shared/data")
