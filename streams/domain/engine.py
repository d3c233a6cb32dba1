"""The whole join in memory, with the same rules as the stream: for tests, reports and backfills.

`Engine.feed(kind, event)` takes contract events in arrival order, exactly as the two agents do
(orders keyed by order_id, shipments and customs by shipment_id, order events forwarded to the
shipments that carry them), and keeps per-corridor totals. The watermark is the latest shipment
or customs event time fed (one stream); `finish()` says the input has ended (the worker's idle
rule), which makes every figure final. The worker distributes the same steps over partitions and
tables; both call the functions in timeline.py and orders.py.
"""
from __future__ import annotations

import heapq
from collections import deque

from streams.domain import aggregate, orders as order_side, timeline
from streams.domain.policy import SlaPolicy


class Engine:
    def __init__(self, policy: SlaPolicy, max_events: int = 100,
                 grace: float = timeline.DEFAULT_GRACE_SECONDS):
        self.policy = policy
        self.max_events = max_events
        self.grace = grace
        self.mark: float | None = None          # the watermark: latest parcel event time fed
        self._due: list[tuple[float, str]] = []
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
                if kind != "forwarded" and (self.mark is None or res.event_time > self.mark):
                    self.mark = res.event_time
                self._settle(sid)
                self._settle_due(self.mark)
                queue.extend(("link", (oid, sid)) for oid in res.new_order_ids)

    def _settle(self, sid: str, mark: float | None = None) -> None:
        state = self.shipments[sid]
        for obs in timeline.settle(state, self.policy, self.mark if mark is None else mark,
                                   self.grace):
            aggregate.add(self.totals.setdefault(obs[1], aggregate.new_totals()), obs)
        due = timeline.settle_due(state, self.grace)
        if due is not None:
            heapq.heappush(self._due, (due, sid))

    def _settle_due(self, mark: float | None) -> None:
        while self._due and mark is not None and self._due[0][0] < mark:
            due, sid = heapq.heappop(self._due)
            if timeline.settle_due(self.shipments[sid], self.grace) == due:
                self._settle(sid, mark)

    def finish(self) -> "Engine":
        """The input has ended: every pending figure becomes final (the worker does the same once
        its partitions have been caught up and quiet for CORRIDOR_IDLE_SECONDS)."""
        end = float("inf")
        self._settle_due(end)
        for sid in list(self.shipments):
            if timeline.settle_due(self.shipments[sid], self.grace) is not None:
                self._settle(sid, end)
        return self

    def _order_result(self, res, oid: str, queue: deque) -> None:
        if not res.duplicate:
            self.orders[oid] = res.state
        queue.extend(("forwarded", {**ev, "shipment_id": sid}) for sid, ev in res.forwards)

    def gauges(self, now: float | None = None) -> aggregate.OpenGauges:
        now = self.latest if now is None else now
        return aggregate.open_gauges(self.shipments.values(), now, self.policy)
