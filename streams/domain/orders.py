"""The order side of the join: orders are keyed by order_id, shipments by shipment_id.

An order's state remembers its events and the shipments that carry it. Either side may come first:
an order event is forwarded to every shipment already linked, and a new link (from a shipment event
naming the order) forwards every order event already known. The shipment side dedupes by
event_id, so forwarding twice is harmless, and a redelivered (duplicate) order event or link
forwards again: after a crash the state change may have reached the changelog while the forwards
did not, and dropping them then would leave the shipment waiting for its order forever.

The state of one order is a `records.OrderState` (the `orders` table value and changelog record,
documented in streams/domain/records.py): its events (at most MAX_ORDER_EVENTS) and their ids,
the shipments linked to it (at most MAX_LINKS), and `t`, the latest event time of the order or of
a link to it, for expiry. The worker adds the partition `p`. Records written before `t` existed
(changelog version 1) are read with `state.get("t")`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from streams.domain.records import OrderState
from streams.domain.stages import parse_time

MAX_ORDER_EVENTS = 16
MAX_LINKS = 256


@dataclass
class OrderApplied:
    state: OrderState
    forwards: list[tuple[str, dict]] = field(default_factory=list)   # (shipment_id, order event)
    duplicate: bool = False


def new_order(order_id: str) -> OrderState:
    return {"id": order_id, "events": [], "shipments": [], "seen": [], "t": None}


def apply_order_event(state: OrderState | None, event: dict) -> OrderApplied:
    state = state if state is not None else new_order(event["order_id"])
    if event["event_id"] in state["seen"]:
        return OrderApplied(state, [(sid, event) for sid in state["shipments"]], duplicate=True)
    state["seen"].append(event["event_id"])
    state["events"].append(event)
    t = parse_time(event["occurred_at"])
    state["t"] = t if state.get("t") is None else max(state["t"], t)
    if len(state["events"]) > MAX_ORDER_EVENTS:
        del state["events"][0]
        del state["seen"][0]
    return OrderApplied(state, [(sid, event) for sid in state["shipments"]])


def expires_at(state: OrderState, retention: float) -> float | None:
    """An order is forgotten a retention after its last event or link; an order that no shipment
    has named yet (nor cancelled) is kept four retentions: parcels can wait that long for stock;
    so is a link whose order has not been read: the order's feed may lag the shipments'."""
    if state.get("t") is None:
        return None
    shipped = bool(state["shipments"]) or any(
        e["event_type"] == "order_cancelled" for e in state["events"])
    return state["t"] + (retention if shipped and state["events"] else 4 * retention)


def expiry_reason(state: OrderState) -> str:
    """Why an order that `expires_at` let go was forgotten (the `reason` label of
    corridor_state_expired_total): `shipped` (linked or cancelled, a retention after its last
    event or link), `never_shipped` (no shipment named it in four retentions) or
    `order_never_arrived` (shipments named it, but no event of the order itself was read: those
    shipments wait for it, corridor_shipments_awaiting_order)."""
    if not state["events"]:
        return "order_never_arrived"
    shipped = bool(state["shipments"]) or any(
        e["event_type"] == "order_cancelled" for e in state["events"])
    return "shipped" if shipped else "never_shipped"


def apply_link(state: OrderState | None, order_id: str, shipment_id: str,
               at: float | None = None) -> OrderApplied:
    state = state if state is not None else new_order(order_id)
    if at is not None:
        state["t"] = at if state.get("t") is None else max(state["t"], at)
    if shipment_id in state["shipments"]:
        return OrderApplied(state, [(shipment_id, ev) for ev in state["events"]], duplicate=True)
    state["shipments"].append(shipment_id)
    if len(state["shipments"]) > MAX_LINKS:
        del state["shipments"][0]
    return OrderApplied(state, [(shipment_id, ev) for ev in state["events"]])
