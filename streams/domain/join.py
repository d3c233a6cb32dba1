"""The join step, written once: what one record does on each side of the join, and what it sends
to the other side. The worker's agents (streams.worker.app), the batch Engine
(streams.domain.engine) and the Quix benchmark port (benchmarks/quix.py) all go through it.

The join is co-partitioned (docs/semantics.md "The join"):

- the order side keeps one state per order (`orders`), fed by order events and by links; every
  order event is forwarded to each shipment linked to the order, and a new link brings the
  order's events so far to its shipment (`order_step`, `link_step`);
- the shipment side keeps one timeline per shipment (`timeline`), fed by shipment and customs
  events and by forwarded order events; a shipment event that names orders sends a `Link` per
  order to the order side (`shipment_step`), stamped with that event's time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from streams.domain import orders as order_side, timeline
from streams.domain.policy import SlaPolicy


class Link(NamedTuple):
    """A shipment named an order: sent to the order's partition (key order_id).

    `at` is the event time of the shipment event that named the order. It holds the order side's
    watermark while the link is in flight, so it must not be later than the order's expiry: the
    shipment's latest time could be (its customs scans read before its label), and the order
    would then be forgotten before the link reaches it (docs/semantics.md "The expiry rule")."""
    order_id: str
    shipment_id: str
    at: float | None


@dataclass
class ShipmentStep:
    """What one event did to a shipment (`applied`) and the links it sends (resent for a
    duplicate: the first send may have been lost in a crash after the state was saved)."""
    applied: timeline.Applied
    links: list[Link]


@dataclass
class OrderStep:
    """What one order event or link did to an order, and the order events to forward to
    shipments: (shipment_id, the event with that shipment_id set)."""
    applied: order_side.OrderApplied
    forwards: list[tuple[str, dict]]


def shipment_step(state: dict | None, source: str, event: dict, policy: SlaPolicy,
                  max_events: int = 100) -> ShipmentStep:
    """A shipments, customs or forwarded order event (`source` = shipments | customs | orders)."""
    res = timeline.apply(state, source, event, policy, max_events)
    sid = res.state["id"]
    return ShipmentStep(res, [Link(oid, sid, res.event_time) for oid in res.new_order_ids])


def order_step(state: dict | None, event: dict) -> OrderStep:
    """An order event."""
    return _forwarding(order_side.apply_order_event(state, event))


def link_step(state: dict | None, link: Link) -> OrderStep:
    """A link read back on the order side."""
    return _forwarding(order_side.apply_link(state, link.order_id, link.shipment_id, link.at))


def _forwarding(res: order_side.OrderApplied) -> OrderStep:
    return OrderStep(res, [(sid, {**ev, "shipment_id": sid}) for sid, ev in res.forwards])
