"""Property: whatever the arrival schedule, the join's figures equal those of the same events in
event-time order, and forgetting state (domain/watermark.py) never loses a delivery.

Schedules whose disorder stays within the grace period (allowed lateness, timeline.settle): every
event is published up to GRACE after it happened, in any order that gives.

A `Fleet` plays the two agents of streams/worker/agents.py over partitioned topics with the domain's own
functions (timeline.apply, orders.apply_*, watermark.*): every topic partition is a queue, the
join's internal topics (links, forwarded order events) are queues the fleet writes to, and state
is forgotten exactly when the worker would forget it. Hypothesis draws

- histories that span several retentions (orders and parcels over ~4 retentions, some orders
  with two parcels, some cancelled, customs holds and releases, failed deliveries, returns,
  duplicates), and
- schedules: each event is published late by up to the grace period (a late scan), the producer
  interleaved at random with the consumer's reads; the consumer picks which topic partition to
  read next at random, with biases that make one topic run months ahead of another, keep a
  partition empty until the end, or read in bursts; a worker can also start after everything was
  produced. When everything is read the worker's idle rule makes the figures final
  (Engine.finish for the oracle).

Compared: every total (delivered, on time, transit, stage dwells, exceptions) per corridor;
nothing dead-lettered as expired, no shipment left waiting for its order.
"""
from __future__ import annotations

import os
from collections import Counter, deque

from hypothesis import HealthCheck, given, settings, strategies as st

import heapq

from builders import HOUR, customs, order, ship
from streams.domain import aggregate, orders as order_side, timeline, watermark as wm
from streams.domain.engine import Engine
from streams.domain.partitioning import partition_for
from streams.domain.policy import SlaPolicy
from streams.domain.stages import parse_time

POLICY = SlaPolicy.load()
RETENTION = 10 * 24 * HOUR
GRACE = 48 * HOUR
INPUTS = ("orders", "shipments", "customs")
SIDES = {"shipments": ("shipments", "customs"), "orders": ("orders", "links")}


class Fleet:
    """The worker's agents over in-memory topic partitions (one worker owning every partition)."""

    def __init__(self, partitions: int):
        self.n = partitions
        self.queues = {(t, p): deque() for t in INPUTS + ("links", "forwarded")
                       for p in range(partitions)}
        self.clock: dict[tuple[str, int], float] = {}
        self.orders: dict[str, dict] = {}
        self.shipments: dict[str, dict] = {}
        self.totals: dict[str, dict] = {}
        self.expired = Counter()
        self.too_old = 0
        self.due: dict[int, list] = {p: [] for p in range(partitions)}   # the settle index

    def publish(self, topic: str, key: str, value) -> None:
        self.queues[(topic, partition_for(key.encode(), self.n))].append(value)

    def ready(self):
        return [tp for tp, q in self.queues.items() if q]

    # ---- the rule, as Pipeline.watermark / global_watermark apply it ----------------------
    def side_mark(self, side: str, p: int) -> float | None:
        progress = [wm.Progress(clock=self.clock.get((t, p)), caught_up=not self.queues[(t, p)],
                                in_flight=self.in_flight(t, p)) for t in SIDES[side]]
        return wm.finite(wm.side_watermark(progress), [x.clock for x in progress])

    def in_flight(self, topic: str, p: int) -> float | None:
        """Links sent and not read back hold the order side at their event time (the worker's
        Pipeline.send_link / link_read): the links topic is not in event-time order."""
        if topic != "links":
            return None
        return min((at for _o, _s, at in self.queues[(topic, p)] if at is not None), default=None)

    def forget(self, side: str, p: int) -> None:
        if side == "orders":
            local = {q: self.side_mark("shipments", q) for q in range(self.n)}
            mark = wm.order_mark(wm.global_watermark(local, {}, self.n), self.side_mark("orders", p))
            table, expires, reason, name = self.orders, order_side.expires_at, \
                order_side.expiry_reason, "orders"
        else:
            mark = self.side_mark("shipments", p)
            table, expires, reason, name = self.shipments, timeline.expires_at, \
                timeline.expiry_reason, "timelines"
        for key in [k for k, st_ in table.items() if st_["p"] == p
                    and wm.may_forget(expires(st_, RETENTION), mark)]:
            self.expired[(name, reason(table[key]))] += 1
            del table[key]

    # ---- one record read from one topic partition -----------------------------------------
    def step(self, tp) -> None:
        topic, p = tp
        value = self.queues[tp].popleft()
        if topic in ("orders", "links"):
            if topic == "links":
                oid, sid, at = value
                if at is not None:
                    self.clock[tp] = max(self.clock.get(tp, at), at)
                res = order_side.apply_link(self.orders.get(oid), oid, sid, at)
            else:
                oid = value["order_id"]
                t = parse_time(value["occurred_at"])
                self.clock[tp] = max(self.clock.get(tp, t), t)
                res = order_side.apply_order_event(self.orders.get(oid), value)
            if not res.duplicate:
                res.state["p"] = p
                self.orders[oid] = res.state
            self.forget("orders", p)
            for sid, oev in res.forwards:
                self.publish("forwarded", sid, {**oev, "shipment_id": sid})
            return
        source = "orders" if topic == "forwarded" else topic
        sid = value["shipment_id"]
        state = self.shipments.get(sid)
        t = parse_time(value["occurred_at"])
        if state is None and topic != "forwarded" and tp in self.clock \
                and t < self.clock[tp] - RETENTION:
            self.too_old += 1
            return
        res = timeline.apply(state, source, value, POLICY)
        if not res.duplicate:
            res.state["p"] = p
            self.shipments[sid] = res.state
            if topic != "forwarded":
                self.clock[tp] = max(self.clock.get(tp, t), t)
            mark = self.side_mark("shipments", p)
            self.settle(sid, mark)
            self.settle_due(p, mark)
            self.forget("shipments", p)
        for oid in res.new_order_ids:
            self.publish("links", oid, (oid, sid, res.event_time))


    def settle(self, sid: str, mark: float | None) -> None:
        state = self.shipments[sid]
        for obs in timeline.settle(state, POLICY, mark, GRACE):
            aggregate.add(self.totals.setdefault(obs[1], aggregate.new_totals()), obs)
        due = timeline.settle_due(state, GRACE)
        if due is not None:
            heapq.heappush(self.due[state["p"]], (due, sid))

    def settle_due(self, p: int, mark: float | None) -> None:
        heap = self.due[p]
        while heap and mark is not None and heap[0][0] < mark:
            due, sid = heapq.heappop(heap)
            if sid in self.shipments and timeline.settle_due(self.shipments[sid], GRACE) == due:
                self.settle(sid, mark)

    def idle(self) -> None:
        """Everything read and quiet: the worker's idle rule settles with the wall clock."""
        for p in range(self.n):
            self.settle_due(p, float("inf"))


def history(draw) -> list[tuple[str, dict]]:
    """Orders and their parcels over about four retentions, in event-time order."""
    n = draw(st.integers(min_value=3, max_value=14))
    events = []
    for i in range(n):
        placed = draw(st.floats(min_value=0, max_value=4 * RETENTION / HOUR)) // 1
        oid = f"O{i}"
        seller, buyer = draw(st.sampled_from([("CN", "AU"), ("DE", "US"), ("CN", "US")]))
        sl = draw(st.sampled_from(["standard", "economy"]))
        events.append(("orders", order(oid, placed, seller=seller, buyer=buyer, sl=sl)))
        parcels = draw(st.integers(min_value=0, max_value=2))
        if parcels == 0 and draw(st.booleans()):
            events.append(("orders", order(oid, placed + 2, etype="order_cancelled", seller=seller,
                                           buyer=buyer, sl=sl)))
        for j in range(parcels):
            sid = f"S{i}-{j}"
            label = placed + draw(st.integers(min_value=1, max_value=72))
            events.append(("shipments", ship(sid, "label_created", label, order_ids=[oid],
                                             origin_country=seller, destination_country=buyer)))
            t = label
            for etype in ("picked_up", "departed_origin", "arrived_destination"):
                t += draw(st.integers(min_value=1, max_value=120))
                events.append(("shipments", ship(sid, etype, t)))
            if draw(st.booleans()):                      # import customs, maybe a hold
                t += draw(st.integers(min_value=1, max_value=24))
                events.append(("customs", customs(sid, "declaration_lodged", t, country=buyer)))
                if draw(st.booleans()):
                    t += draw(st.integers(min_value=1, max_value=48))
                    events.append(("customs", customs(sid, "held_for_inspection", t,
                                                      country=buyer)))
                t += draw(st.integers(min_value=1, max_value=72))
                events.append(("customs", customs(sid, "released", t, country=buyer)))
            if draw(st.integers(0, 3)) == 0:
                t += draw(st.integers(min_value=1, max_value=24))
                events.append(("shipments", ship(sid, "delivery_failed", t)))
            end = draw(st.sampled_from(["delivered", "delivered", "delivered", "returned", None]))
            if end is not None:
                t += draw(st.integers(min_value=1, max_value=200))
                events.append(("shipments", ship(sid, end, t)))
    events.sort(key=lambda kv: parse_time(kv[1]["occurred_at"]))
    dupes = draw(st.lists(st.integers(min_value=0, max_value=len(events) - 1), max_size=3))
    for i in dupes:     # redelivered a little later (within a day of event time)
        t = parse_time(events[i][1]["occurred_at"])
        j = min(len(events), i + draw(st.integers(0, 5)))
        while j > i + 1 and parse_time(events[j - 1][1]["occurred_at"]) - t > 24 * HOUR:
            j -= 1
        events.insert(j, events[i])
    return events


@st.composite
def runs(draw):
    events = history(draw)
    # Late scans: some events are published up to the grace period after they happened.
    delays = [draw(st.sampled_from([0.0, 0.0, 0.0, 1.0, 6.0, 47.9])) * HOUR for _ in events]
    order_ = sorted(range(len(events)),
                    key=lambda i: parse_time(events[i][1]["occurred_at"]) + delays[i])
    events = [events[i] for i in order_]
    partitions = draw(st.integers(min_value=1, max_value=4))
    produce_first = draw(st.booleans())          # the backlog is there before the worker starts
    # Biases of the consumer's choice: a favourite topic read far ahead, a partition held back.
    favourite = draw(st.sampled_from([None, *INPUTS, "links"]))
    held_back = draw(st.one_of(st.none(), st.integers(0, partitions - 1)))
    choices = draw(st.lists(st.integers(min_value=0, max_value=10**6), min_size=400, max_size=400))
    return events, partitions, produce_first, favourite, held_back, choices


def play(events, partitions, produce_first, favourite, held_back, choices) -> Fleet:
    fleet = Fleet(partitions)
    key = {"orders": "order_id", "shipments": "shipment_id", "customs": "shipment_id"}
    pending = deque(events)
    if produce_first:
        while pending:
            kind, ev = pending.popleft()
            fleet.publish(kind, ev[key[kind]], ev)
    i = 0
    while pending or fleet.ready():
        pick = choices[i % len(choices)]
        i += 1
        ready = fleet.ready()
        if pending and (not ready or pick % 3 == 0):      # the producer publishes the next one
            kind, ev = pending.popleft()
            fleet.publish(kind, ev[key[kind]], ev)
            continue
        preferred = [tp for tp in ready if tp[0] == favourite]
        if held_back is not None and not pending:
            pass                                            # everything produced: release it
        elif held_back is not None:
            ready = [tp for tp in ready if tp[1] != held_back] or ready
        pool = preferred if preferred and pick % 4 else ready
        fleet.step(pool[pick % len(pool)])
    fleet.idle()
    return fleet


def oracle(events) -> Engine:
    eng = Engine(POLICY)
    for kind, ev in sorted(events, key=lambda kv: parse_time(kv[1]["occurred_at"])):
        eng.feed(kind, ev)
    return eng.finish()


def ended_figures(totals: dict) -> dict:
    out = {}
    for corr, tot in totals.items():
        out[corr] = (dict(tot["delivered"]), dict(tot["exceptions"]),
                     {sl: (list(row[:-1]), row[-1]) for sl, row in tot["transit"].items()},
                     {stage: (list(row[:-1]), row[-1]) for stage, row in tot["dwell"].items()})
    return {c: v for c, v in out.items() if any(v)}


#: `make test` runs the same 400 examples every time (derandomized: a failure there is
#: reproducible, never a flake). To search further, as after any change to the rule:
#: CORRIDOR_PROPERTY_EXPLORE=20000 pytest tests/unit/test_arrival_schedules.py (random seeds).
EXPLORE = int(os.environ.get("CORRIDOR_PROPERTY_EXPLORE", "0"))


@settings(max_examples=EXPLORE or 400, derandomize=not EXPLORE, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_figures_do_not_depend_on_the_arrival_schedule(run):
    events = run[0]
    fleet = play(*run)
    assert fleet.too_old == 0
    assert ended_figures(fleet.totals) == ended_figures(oracle(events).totals)
    waiting = [sid for sid, s in fleet.shipments.items() if timeline.awaiting_order(s)]
    assert waiting == []
    assert fleet.expired[("orders", "order_never_arrived")] == 0


def test_a_links_topic_not_read_yet_keeps_the_orders_that_links_will_need():
    """The case that lost deliveries before the rule: links read late, orders read far ahead."""
    events = []
    for i in range(6):
        oid, sid = f"O{i}", f"S{i}"
        placed = i * 5 * 24.0
        events += [("orders", order(oid, placed)),
                   ("shipments", ship(sid, "label_created", placed + 1, order_ids=[oid])),
                   ("shipments", ship(sid, "picked_up", placed + 2)),
                   ("shipments", ship(sid, "delivered", placed + 50))]
    fleet = Fleet(1)
    key = {"orders": "order_id", "shipments": "shipment_id"}
    for kind, ev in events:
        fleet.publish(kind, ev[key[kind]], ev)
    # Read every shipment first (links pile up unread), then every order, then the links.
    for topic in ("shipments", "orders", "links", "forwarded"):
        while fleet.queues[(topic, 0)]:
            fleet.step((topic, 0))
    fleet.idle()
    assert ended_figures(fleet.totals) == ended_figures(oracle(events).totals)
    assert sum(fleet.totals["CN-AU"]["delivered"].values()) == 6


def test_a_second_parcel_read_after_its_customs_scans_still_finds_its_order():
    """Found by the property test: an order with two parcels. The first parcel's link refreshes
    the order; the second parcel's customs scans (days after its label) are read before its
    label, so its shipment's latest time is past the order's expiry when the label sends its
    link. Stamped with that latest time, the link in flight let the order go (the parcel was
    never counted); stamped with the label's own time, it holds the order."""
    events = [("orders", order("O1", 0)), ("orders", order("O5", 280)),
              ("shipments", ship("S1-0", "label_created", 1, order_ids=["O1"])),
              ("customs", customs("S1-1", "declaration_lodged", 300, country="AU")),
              ("customs", customs("S1-1", "released", 301, country="AU")),
              ("shipments", ship("S5", "label_created", 290, order_ids=["O5"])),
              ("shipments", ship("S1-1", "label_created", 60, order_ids=["O1"])),
              ("shipments", ship("S1-1", "delivered", 302))]
    fleet = Fleet(1)
    key = {"orders": "order_id", "shipments": "shipment_id", "customs": "shipment_id"}
    for kind, ev in events:
        fleet.publish(kind, ev[key[kind]], ev)
    # Both orders, the first parcel and its link (O1 now expires a retention after hour 1), the
    # second parcel's customs scans, then every label (links stamped and sent), then the links.
    for tp in [("orders", 0), ("orders", 0), ("shipments", 0), ("links", 0)]:
        fleet.step(tp)
    for topic in ("customs", "shipments", "links", "forwarded"):
        while fleet.queues[(topic, 0)]:
            fleet.step((topic, 0))
    fleet.idle()
    assert fleet.expired[("orders", "order_never_arrived")] == 0
    assert ended_figures(fleet.totals) == ended_figures(oracle(events).totals)
    assert sum(fleet.totals["CN-AU"]["delivered"].values()) == 1
