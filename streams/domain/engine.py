"""The whole join in memory, with the same rules as the stream: for tests, reports and backfills.

`Engine.feed(kind, event)` takes contract events in arrival order, exactly as the two agents do
(orders keyed by order_id, shipments and customs by shipment_id, order events forwarded to the
shipments that carry them), and keeps per-corridor totals. The worker distributes the same steps
over partitions and tables; both call the functions in timeline.py and orders.py.
"""
from __future__ import annotations

from collections import deque

from . import aggregate, orders as order_side, timeline
from .policy import SlaPolicy


class Engine:
    def __init__(self, policy: SlaPolicy, max_events: int = 100):
        self.policy = policy
        self.max_events = max_events
        self.shipments: dict[str, dict] = {}
        self.orders: dict[str, dict] = {}
        self.totals: dict[str, dict] = {}
        self.duplicates = 0
        self.late = 0
        self.latest: float | None = None

    def feed(self, kind: str, event: dict) -> None:
        """kind = orders | shipments | customs."""
        queue = deque([(kind, event)])
        while queue:
            kind, event = queue.popleft()
            if kind == "orders":
                res = order_side.apply_order_event(self.orders.get(event["order_id"]), event)
                self.duplicates += res.duplicate
                self._order_result(res, event["order_id"], queue)
            elif kind == "link":
                oid, sid = event
                self._order_result(order_side.apply_link(self.orders.get(oid), oid, sid), oid, queue)
            else:
                source = "orders" if kind == "forwarded" else kind
                sid = event["shipment_id"]
                res = timeline.apply(self.shipments.get(sid), source, event, self.policy,
                                     self.max_events)
                if res.duplicate:
                    self.duplicates += kind != "forwarded"
                    queue.extend(("link", (oid, sid)) for oid in res.new_order_ids)
                    continue
                self.late += res.late
                self.shipments[sid] = res.state
                last = res.state["last"]
                self.latest = last if self.latest is None else max(self.latest, last)
                for obs in res.observations:
                    aggregate.add(self.totals.setdefault(obs[1], aggregate.new_totals()), obs)
                queue.extend(("link", (oid, sid)) for oid in res.new_order_ids)

    def _order_result(self, res, oid: str, queue: deque) -> None:
        if not res.duplicate:
            self.orders[oid] = res.state
        queue.extend(("forwarded", {**ev, "shipment_id": sid}) for sid, ev in res.forwards)

    def gauges(self, now: float | None = None) -> aggregate.OpenGauges:
        now = self.latest if now is None else now
        return aggregate.open_gauges(self.shipments.values(), now, self.policy)
