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

from streams.domain import aggregate, join, risk, timeline
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
        #: What the deliveries taught the lateness model, summed as every worker sums the counts
        #: of its totals table's risk keys (`risk`).
        self._model = risk.RiskModel()
        self.duplicates = 0
        self.late = 0
        self.latest: float | None = None

    def feed(self, kind: str, event: dict) -> None:
        """kind = orders | shipments | customs."""
        queue = deque([(kind, event)])
        while queue:
            kind, event = queue.popleft()
            if kind == "orders":
                step = join.order_step(self.orders.get(event["order_id"]), event)
                self.duplicates += step.applied.duplicate
                self._order_result(step, event["order_id"], queue)
            elif kind == "link":
                step = join.link_step(self.orders.get(event.order_id), event)
                self._order_result(step, event.order_id, queue)
            else:
                source = "orders" if kind == "forwarded" else kind
                step = join.shipment_step(self.shipments.get(event["shipment_id"]), source, event,
                                          self.policy, self.max_events)
                res = step.applied
                queue.extend(("link", link) for link in step.links)
                if res.duplicate:
                    self.duplicates += kind != "forwarded"
                    continue
                self.late += res.late
                sid = res.state["id"]
                self.shipments[sid] = res.state
                last = res.state["last"]
                self.latest = last if self.latest is None else max(self.latest, last)
                if kind != "forwarded" and (self.mark is None or res.event_time > self.mark):
                    self.mark = res.event_time
                self._settle(sid)
                self._settle_due(self.mark)

    def _settle(self, sid: str, mark: float | None = None) -> None:
        state = self.shipments[sid]
        for obs in timeline.settle(state, self.policy, self.mark if mark is None else mark,
                                   self.grace):
            if obs[0] == "risk":
                self._model.add(obs[1], {obs[2]: 1})
            else:
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

    def _order_result(self, step, oid: str, queue: deque) -> None:
        if not step.applied.duplicate:
            self.orders[oid] = step.applied.state
        queue.extend(("forwarded", ev) for _sid, ev in step.forwards)

    def risk_model(self) -> risk.RiskModel:
        """The lateness model of every delivery settled so far (what every worker's sums to)."""
        return self._model

    def at_risk(self, now: float | None = None, threshold: float = risk.AT_RISK,
                shipments=None) -> risk.AtRisk:
        """The open shipments' risk at `now` (default: the latest event time), as the worker's
        at-risk gauges show it; of the given shipment ids only, if any."""
        now = self.latest if now is None else now
        states = (self.shipments.values() if shipments is None
                  else (self.shipments[s] for s in shipments if s in self.shipments))
        entries = (timeline.open_entry(st, self.policy) for st in states)
        return risk.score_open(self._model, entries, now, threshold)

    def gauges(self, now: float | None = None) -> aggregate.OpenGauges:
        now = self.latest if now is None else now
        return aggregate.open_gauges(self.shipments.values(), now, self.policy)

    # (defined after the methods whose defaults read the `risk` module)
    @property
    def risk(self) -> dict[str, dict[str, int]]:
        """risk.risk_key -> {sample: n}: the model's counts as a worker's totals records hold them."""
        return self._model.counts()
