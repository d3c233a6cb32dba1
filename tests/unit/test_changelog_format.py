"""The changelog format (streams.domain.records): what the tables hold, and that today's code keeps
reading the records that are already in changelogs.

- Shape: the records the domain builds, as a changelog carries them (orjson JSON), have exactly
  the keys and value types that the TypedDicts in records.py declare.
- Golden records: changelog_fixtures/v8 holds records written by today's code, frozen, v7 those
  of the code before the stage targets in business days, v6 those of the code before the customs
  figures, v5 those of the code before the lateness prediction
  and v4 those of the code before the lateness attribution (each frozen earlier).
  changelog_fixtures/v3 and v1 hold records written by the code of 0035b5f and 8eceba3
  (changelog versions 3 and 1; changelog_fixtures/README.md says how each was made). Loading
  them and going on with today's code gives exact figures. A change to a record's shape has to
  keep these passing. It must not regenerate the fixtures: a new version gets new ones.

`Partition` plays the worker for one partition: the steps streams/worker/agents.py and
pipeline.py take, through the same domain functions, without Faust. Every write goes through
the changelog encoding, so the tables hold what a successor would recover.
"""
from __future__ import annotations

import copy
import json
import math
import tomllib
import types
import typing
from pathlib import Path

import orjson
import pytest

from builders import HOUR, T0_EPOCH, customs, journey, order, ship
from streams.domain import aggregate, join, orders as order_side, records, risk, timeline, totals
from streams.domain.aggregate import CLEARANCE_BUCKETS, DWELL_BUCKETS, TRANSIT_BUCKETS
from streams.domain.policy import DEFAULT_POLICY_FILE, SlaPolicy

POLICY = SlaPolicy.load()
GRACE = timeline.DEFAULT_GRACE_SECONDS
RETENTION = 30 * 86400.0
FIN = "#fin"                    # streams.worker.pipeline FIN_SOURCE: the settlement numbering
P = 0                           # every record here is on partition 0
FIXTURES = Path(__file__).parent / "changelog_fixtures"
TABLES = ("timelines", "orders", "totals")
SHAPES = {"timelines": records.TimelineState, "orders": records.OrderState,
          "totals": records.TotalsRecord}
LOADERS = {"timelines": records.load_timeline, "orders": records.load_order,
           "totals": records.load_totals}


def h(hours: float) -> float:
    return T0_EPOCH + hours * HOUR


def changelog(value) -> bytes:
    """A table value as the worker writes it to a changelog (streams.worker.tables _OrJson)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def round_trip(value):
    return orjson.loads(changelog(value))


# ---- shape: a record against its TypedDict -----------------------------------------------------
def problems(value, tp, path: str = "$") -> list[str]:
    """Where a decoded JSON value departs from a records.py type: missing or undeclared keys,
    values of another type. Tuples are positional JSON arrays; ints are accepted for floats."""
    if tp is typing.Any:
        return []
    if typing.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not an object"]
        declared = tp.__required_keys__ | tp.__optional_keys__
        out = [f"{path}: no {k!r}" for k in sorted(tp.__required_keys__ - value.keys())]
        out += [f"{path}: undeclared {k!r}" for k in sorted(value.keys() - declared)]
        hints = typing.get_type_hints(tp)
        for k in sorted(value.keys() & declared):
            out += problems(value[k], hints[k], f"{path}.{k}")
        return out
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if any(not problems(value, arg, path) for arg in args):
            return []
        return [f"{path}: {value!r} is not {tp}"]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not an array"]
        return [p for i, item in enumerate(value) for p in problems(item, args[0], f"{path}[{i}]")]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            return [f"{path}: {value!r} is not an array of {len(args)}"]
        return [p for i, (item, arg) in enumerate(zip(value, args))
                for p in problems(item, arg, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not an object"]
        return [p for k, v in value.items() for p in problems(v, args[1], f"{path}.{k}")]
    ok = {type(None): value is None,
          bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value),
          str: isinstance(value, str)}
    if tp not in ok:
        raise TypeError(f"no check for {tp} at {path}")
    return [] if ok[tp] else [f"{path}: {value!r} is not {tp.__name__}"]


def assert_shape(value, tp) -> None:
    """The value, as a changelog carries it, has the shape `tp` declares."""
    assert problems(round_trip(value), tp) == []


# ---- the worker, for one partition --------------------------------------------------------------
class Partition:
    """One partition's tables as the worker keeps them, and its steps: join.* for each record,
    settlement against the watermark `mark` (Pipeline.settle and settle_due), counted once per
    corridor record (totals.count_once), and reconciled from the states first
    (Pipeline.reconcile). Forwarded order events and links are processed at once rather than
    through their topics."""

    def __init__(self, tables: dict | None = None, policy: SlaPolicy = POLICY):
        tables = tables or {}
        self.policy = policy
        self.timelines: dict = tables.get("timelines", {})
        self.orders: dict = tables.get("orders", {})
        self.totals: dict = tables.get("totals", {})
        self.mark: float | None = None
        self.seq: int | None = None             # None until reconciled
        self.recounted: dict = {}               # what reconciling found missing from the totals
        self.written: list[tuple[str, dict]] = []

    @classmethod
    def recovered(cls, version: int, load: bool = True, policy: SlaPolicy = POLICY) -> "Partition":
        """The tables a successor recovers from the fixtures of `version`. With load=True they
        go through the records.py loaders; without, the code reads them as they were written."""
        tables = {}
        for name in TABLES:
            values = fixture(version, name)
            tables[name] = {k: LOADERS[name](v) for k, v in values.items()} if load else values
        return cls(tables, policy)

    def write(self, table: str, key: str, value: dict) -> None:
        stored = round_trip(value)
        getattr(self, table)[key] = stored
        self.written.append((table, stored))

    def feed(self, kind: str, event: dict) -> None:
        """An input record: kind = orders | shipments | customs."""
        if kind == "orders":
            oid = event["order_id"]
            self._order(oid, join.order_step(self.orders.get(oid), event))
        else:
            self._parcel(kind, event)

    def advance(self, hours: float) -> None:
        """The partition's watermark reaches `hours`: settle what it has passed."""
        self.mark = h(hours)
        self.reconcile()
        self.settle_due()

    def _order(self, oid: str, step: join.OrderStep) -> None:
        if not step.applied.duplicate:
            step.applied.state["p"] = P
            self.write("orders", oid, step.applied.state)
        for _sid, forwarded in step.forwards:   # via <app>-shipment-orders
            self._parcel("orders", forwarded)

    def _parcel(self, source: str, event: dict) -> None:
        self.reconcile()
        step = join.shipment_step(self.timelines.get(event["shipment_id"]), source, event, self.policy)
        state = step.applied.state
        if not step.applied.duplicate:
            state["p"] = P
            due = timeline.settle_due(state, GRACE)
            if due is not None:
                self.settle(state, self.mark if self.mark is not None and due < self.mark else None)
            self.write("timelines", state["id"], state)
            self.settle_due()
        for link in step.links:                 # via <app>-order-links
            self._order(link.order_id, join.link_step(self.orders.get(link.order_id), link))

    def settle_due(self) -> None:
        if self.mark is None:
            return
        due = sorted((t, sid) for sid, st in self.timelines.items()
                     if (t := timeline.settle_due(st, GRACE)) is not None and t < self.mark)
        for _t, sid in due:
            state = self.timelines[sid]
            self.settle(state, self.mark)
            self.write("timelines", sid, state)

    def settle(self, state: dict, mark: float | None) -> None:
        obs = timeline.settle(state, self.policy, mark, GRACE)
        if obs:
            self.seq += 1
            timeline.remember(state, FIN, self.seq, obs)
            self.count(self.seq, obs)

    def count(self, seq: int, observations: list) -> None:
        for corr, items in totals.by_corridor(observations).items():
            key = totals.key(P, corr)
            record = self.totals.get(key) or aggregate.new_totals()
            if totals.count_once(record, FIN, seq, items):
                self.write("totals", key, record)

    def reconcile(self) -> None:
        if self.seq is not None:
            return
        counted = {totals.split_key(k)[1]: totals.counted(r, FIN) for k, r in self.totals.items()
                   if totals.split_key(k)[0] == P}
        self.recounted, self.seq = totals.missing(self.timelines.values(), counted, FIN)
        for seq in sorted(self.recounted):
            self.count(seq, self.recounted[seq])


# ---- the history behind the version 4 fixtures (CN-AU, hours after T0) -------------------------
#: S1 is delivered and final, S2 is open with a customs hold the watermark has not passed, and
#: S3 has ended but is not final yet and waits for its order O3.
def v4_until_freeze(policy: SlaPolicy = POLICY) -> Partition:
    p = Partition(policy=policy)
    cn_au = dict(origin_country="CN", destination_country="AU")
    p.feed("orders", order("O1", 0.0, promised_h=200.0, event_id="o1-placed"))
    p.feed("shipments", ship("S1", "label_created", 1.0, order_ids=["O1"], carrier="AusPost",
                             tracking_number="AP1", event_id="s1-label", **cn_au))
    p.feed("shipments", ship("S1", "picked_up", 10.0, event_id="s1-picked",
                             location={"facility": "SZX hub", "country": "CN"}))
    p.feed("shipments", ship("S1", "departed_origin", 30.0, event_id="s1-departed"))
    p.feed("orders", order("O2", 20.0, sl="express", event_id="o2-placed"))
    p.feed("shipments", ship("S2", "label_created", 21.0, order_ids=["O2"], event_id="s2-label",
                             **cn_au))
    p.feed("shipments", ship("S2", "picked_up", 24.0, event_id="s2-picked"))
    p.feed("shipments", ship("S2", "departed_origin", 40.0, event_id="s2-departed"))
    p.feed("shipments", ship("S1", "arrived_destination", 80.0, event_id="s1-arrived"))
    p.feed("customs", customs("S1", "declaration_lodged", 81.0, event_id="c1-lodged"))
    p.feed("customs", customs("S1", "held_for_inspection", 82.0, event_id="c1-held"))
    p.advance(85.0)                                                 # the hold is counted
    p.feed("customs", customs("S1", "released", 100.0, event_id="c1-released"))
    p.feed("shipments", ship("S3", "label_created", 101.0, order_ids=["O3"], event_id="s3-label",
                             **cn_au))
    p.feed("shipments", ship("S3", "picked_up", 105.0, event_id="s3-picked"))
    p.feed("shipments", ship("S3", "departed_origin", 110.0, event_id="s3-departed"))
    p.feed("shipments", ship("S1", "delivered", 130.0, event_id="s1-delivered"))
    p.feed("shipments", ship("S3", "arrived_destination", 130.0, event_id="s3-arrived"))
    p.feed("customs", customs("S3", "released", 140.0, event_id="c3-released"))
    p.feed("shipments", ship("S3", "delivery_failed", 150.0, event_id="s3-failed"))
    p.feed("shipments", ship("S3", "delivered", 160.0, event_id="s3-delivered"))
    p.feed("shipments", ship("S2", "arrived_destination", 170.0, event_id="s2-arrived"))
    p.feed("customs", customs("S2", "declaration_lodged", 171.0, event_id="c2-lodged"))
    p.advance(180.0)            # S1 final (130 + 48 h grace), S3's failed delivery counted
    p.feed("customs", customs("S2", "held_for_inspection", 185.0, event_id="c2-held"))
    return p


# ---- fixtures -----------------------------------------------------------------------------------
def fixture(version: int, table: str) -> dict:
    """{key: value} of one table's records of one version (the file is absent: none)."""
    path = FIXTURES / f"v{version}" / f"{table}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else {}


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("v*/*.json"))


def render(values: dict) -> str:
    """A fixture file: one JSON object, one record per line, each value the changelog's bytes."""
    lines = [f"{json.dumps(k)}: {changelog(v).decode()}" for k, v in values.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def row(buckets: tuple[float, ...], *hours: float) -> list:
    """The totals row of these values (in hours), counted by hand: the first bound each fits."""
    counts = [0] * (len(buckets) + 1)
    for v in hours:
        counts[next(i for i, b in enumerate(buckets + (math.inf,)) if v * HOUR <= b)] += 1
    return counts + [sum(v * HOUR for v in hours)]


def customs_totals(base: str, hours: list[float], *, arrivals: int, holds: int = 0,
                   inspections: int = 0, within: int | None = None) -> dict:
    """The `clear`, `cwt` and `cust` sections of parcels cleared in `hours`, by hand."""
    within = len(hours) if within is None else within
    return {"clear": {base: row(CLEARANCE_BUCKETS, *hours)}, "cwt": {f"{base}|calendar": within},
            "cust": {f"{base}|arrival": arrivals, f"{base}|hold": holds,
                     f"{base}|inspection": inspections, f"{base}|rejection": 0,
                     f"{base}|seizure": 0}}


def transit(*hours: float) -> list:
    return row(TRANSIT_BUCKETS, *hours)


def dwell(*hours: float) -> list:
    return row(DWELL_BUCKETS, *hours)


def day_of(hours: float) -> int:
    """The epoch day of `hours` after T0 (T0, 2025-03-01, is day 20148)."""
    return 20148 + int(hours // 24)


def risk_record(seq: int, level: str, delivered_h: float, *stages: tuple) -> tuple[str, dict]:
    """The totals key and record of one delivery's risk samples (changelog version 6), from its
    stages as (stage, entered, hours in it) in hours after T0, worked out from the history: each
    is counted in cell (hours in the stage, hours from entering it to the delivery)."""
    counts = {f"{level}|{stage}|{risk.cell(hours * HOUR, (delivered_h - entered) * HOUR)}": 1
              for stage, entered, hours in stages}
    return (totals.key(P, risk.risk_key("CN-AU", day_of(delivered_h))),
            {"delivered": {}, "exceptions": {}, "transit": {}, "dwell": {}, "risk": counts,
             "o": {FIN: seq}})


def corridor_records(values: dict) -> dict:
    return {k: v for k, v in values.items() if not risk.is_risk_key(totals.split_key(k)[1])}


def risk_records(values: dict) -> dict:
    return {k: v for k, v in values.items() if risk.is_risk_key(totals.split_key(k)[1])}


#: The risk samples of S1, S2, S3 and S4 (see their histories below: v4_until_freeze, continue_v4,
#: v5_until_freeze), each the settlement number that counted its delivery.
#: S1 (standard, placed 0 h, picked up 10, departed 30, arrived 80, released 100, delivered 130 h).
def s1_risk(seq: int) -> tuple[str, dict]:
    return risk_record(seq, "standard", 130.0, ("fulfilment", 0.0, 10.0), ("origin", 10.0, 20.0),
                       ("linehaul", 30.0, 50.0), ("customs", 80.0, 20.0),
                       ("last_mile", 100.0, 30.0))


#: S2 (express, placed 20 h, picked up 24, departed 40, arrived 170, released 190, delivered 200 h):
#: fulfilment 4 h (180 h to delivery), origin 16 h (176), linehaul 130 h (160), customs 20 h (30),
#: last_mile 10 h (10). Its fulfilment by hand: bin_of(4 h) = 1 + int(4 * log2 4) = 9 and
#: bin_of(180 h) = 1 + int(4 * 7.49) = 30, so cell 9 * 50 + 30 = 480.
def s2_risk(seq: int) -> tuple[str, dict]:
    record = risk_record(seq, "express", 200.0, ("fulfilment", 20.0, 4.0), ("origin", 24.0, 16.0),
                         ("linehaul", 40.0, 130.0), ("customs", 170.0, 20.0),
                         ("last_mile", 190.0, 10.0))
    assert record[0] == "0|CN-AU#20156" and "express|fulfilment|480" in record[1]["risk"]
    return record


#: S3 (standard, its order O3 placed 100 h, picked up 105, departed 110, arrived 130, released 140,
#: delivered 160 h).
def s3_risk(seq: int) -> tuple[str, dict]:
    return risk_record(seq, "standard", 160.0, ("fulfilment", 100.0, 5.0), ("origin", 105.0, 5.0),
                       ("linehaul", 110.0, 20.0), ("customs", 130.0, 10.0),
                       ("last_mile", 140.0, 20.0))


#: S4 (standard, placed 200 h, picked up 210, departed 230, arrived 340, released 420, delivered
#: 430 h).
def s4_risk(seq: int) -> tuple[str, dict]:
    return risk_record(seq, "standard", 430.0, ("fulfilment", 200.0, 10.0), ("origin", 210.0, 20.0),
                       ("linehaul", 230.0, 110.0), ("customs", 340.0, 80.0),
                       ("last_mile", 420.0, 10.0))


# ---- shape of the records the domain builds -----------------------------------------------------
def test_a_timeline_has_the_declared_shape_after_apply_settle_and_remember():
    state = None
    for source, ev in journey("S1", "O1", promised_h=200.0, hold=True):
        ev = {**ev, "shipment_id": "S1"} if source == "orders" else ev   # as forwarded
        state = timeline.apply(state, source, ev, POLICY).state
        state["p"] = P                                          # as the worker writes it
        assert_shape(state, records.TimelineState)
    assert state["pend"] == [["customs_hold", h(82.0)]] and not state["fin"]

    obs = timeline.settle(state, POLICY, h(90.0), GRACE)        # the hold, not yet the end
    assert obs == [("exception", "CN-AU", "customs_hold")]
    assert_shape(state, records.TimelineState)
    timeline.remember(state, FIN, 1, obs)
    assert_shape(state, records.TimelineState)
    assert "lobs" in state

    obs = timeline.settle(state, POLICY, h(130.0) + GRACE + 1, GRACE)     # final
    # 5 dwells, the customs figures, delivered, delivered without customs time, and a risk
    # sample per stage (version 6)
    assert state["fin"] and state["observed"] and len(obs) == 13
    assert [o[0] for o in obs].count("risk") == 5
    assert_shape(state, records.TimelineState)
    assert problems(round_trip(obs), list[records.Observation]) == []
    timeline.remember(state, FIN, 2, obs)
    assert_shape(state, records.TimelineState)

    late = timeline.apply(state, "shipments", ship("S1", "returned", 150.0), POLICY)
    assert late.late
    assert_shape(late.state, records.TimelineState)


def test_an_order_has_the_declared_shape_after_events_and_links():
    res = order_side.apply_link(None, "O1", "S1", h(1.0))       # the link read first
    assert_shape(res.state, records.OrderState)
    placed = order("O1", 0.0, promised_h=200.0)
    for step in (lambda st: order_side.apply_order_event(st, placed),
                 lambda st: order_side.apply_order_event(st, placed),      # redelivered
                 lambda st: order_side.apply_link(st, "O1", "S2", h(3.0)),
                 lambda st: order_side.apply_order_event(st, order("O1", 4.0,
                                                                    etype="order_cancelled"))):
        res = step(res.state)
        res.state["p"] = P
        assert_shape(res.state, records.OrderState)
    assert res.state["t"] == h(4.0) and res.state["shipments"] == ["S1", "S2"]


def test_totals_have_the_declared_shape_after_add():
    record = aggregate.new_totals()
    assert_shape(record, records.TotalsRecord)
    for obs in [("delivered", "CN-AU", "standard", True, 130 * HOUR),
                ("dwell", "CN-AU", "customs", 20 * HOUR),
                ["exception", "CN-AU", "customs_hold"]]:               # as read from `lobs`
        aggregate.add(record, obs)
        assert_shape(record, records.TotalsRecord)
    samples = aggregate.new_totals()                    # a "<corridor>#<day>" record
    for obs in [("risk", "CN-AU#20153", "standard|customs|924"),
                ["risk", "CN-AU#20153", "standard|customs|924"]]:
        aggregate.add(samples, obs)
        assert_shape(samples, records.TotalsRecord)
    assert samples["risk"] == {"standard|customs|924": 2}
    assert totals.count_once(record, FIN, 1, [("exception", "CN-AU", "lost")])
    assert_shape(record, records.TotalsRecord)
    assert record["o"] == {FIN: 1}
    assert len(record["transit"]["standard"]) == len(TRANSIT_BUCKETS) + 2
    assert len(record["dwell"]["customs"]) == len(DWELL_BUCKETS) + 2


def test_every_record_the_worker_writes_has_the_declared_shape():
    p = v4_until_freeze()
    continue_v4(p)
    assert {table for table, _ in p.written} == set(TABLES)
    for table, value in p.written:
        assert problems(value, SHAPES[table]) == [], (table, value)


# ---- golden records ------------------------------------------------------------------------------
def test_the_fixture_files_hold_changelog_bytes():
    assert {f.parent.name for f in fixture_files()} == {"v1", "v3", "v4", "v5", "v6", "v7", "v8"}
    for path in fixture_files():
        assert path.read_text() == render(orjson.loads(path.read_bytes())), path


def test_every_fixture_record_loads_into_the_declared_shape():
    for version in (1, 3, 4, 5, 6, 7, 8):
        for table in TABLES:
            for key, value in fixture(version, table).items():
                loaded = LOADERS[table](copy.deepcopy(value))
                assert problems(loaded, SHAPES[table]) == [], (version, table, key)


def test_loading_todays_records_changes_nothing():
    for table in TABLES:
        values = fixture(records.CHANGELOG_VERSION, table)
        assert values
        for value in values.values():
            assert LOADERS[table](copy.deepcopy(value)) == value


def test_a_record_of_no_known_version_is_refused():
    with pytest.raises(ValueError, match="no end, ev"):
        records.load_timeline({k: v for k, v in timeline.new_state("S1").items()
                               if k not in ("end", "ev")})
    with pytest.raises(ValueError, match="no dwell"):
        records.load_totals({"delivered": {}, "exceptions": {}, "transit": {}})


def continue_v4(p: Partition) -> None:
    """After the freeze: a late and a redelivered event for S1, O3's order for S3, S2's hold
    passed, its release and delivery, then a watermark that makes S2 and S3 final."""
    p.feed("shipments", ship("S1", "returned", 190.0, event_id="s1-returned"))
    p.feed("shipments", ship("S1", "delivered", 130.0, event_id="s1-delivered"))   # redelivered
    p.feed("orders", order("O3", 100.0, promised_h=300.0, event_id="o3-placed"))
    p.advance(190.0)
    p.feed("customs", customs("S2", "released", 190.0, event_id="c2-released"))
    p.feed("shipments", ship("S2", "delivered", 200.0, event_id="s2-delivered"))
    p.advance(260.0)


def test_todays_changelog_loads_and_continues_with_exact_figures():
    p = Partition.recovered(4)
    s1, s2, s3 = (p.timelines[s] for s in ("S1", "S2", "S3"))
    assert timeline.is_final(s1) and s1["observed"]
    assert timeline.expires_at(s1, RETENTION) == h(130.0) + RETENTION
    assert timeline.settle_due(s2, GRACE) == h(185.0)           # the hold, once the mark passes
    assert timeline.settle_due(s3, GRACE) == h(160.0) + GRACE   # its end, after the grace
    assert timeline.awaiting_order(s3)
    assert order_side.expires_at(p.orders["O3"], RETENTION) == h(101.0) + 4 * RETENTION

    continue_v4(p)
    assert p.recounted == {}                                    # states and totals agreed
    assert p.timelines["S1"]["late"] == 1
    assert p.timelines["S1"]["end"] == ["delivered", h(130.0)]
    assert all(p.timelines[s]["fin"] and p.timelines[s]["observed"] for s in ("S2", "S3"))
    assert order_side.expires_at(p.orders["O3"], RETENTION) == h(101.0) + RETENTION
    # S1 was counted by version 4 code, before risk samples: only S3's and S2's have them
    assert risk_records(p.totals) == dict([s3_risk(5), s2_risk(6)])
    assert corridor_records(p.totals) == {"0|CN-AU": {
        "delivered": {"standard|true": 2, "express|false": 1},   # S2: 180 h > express 144 h
        "exceptions": {"customs_hold": 2, "delivery_failed": 1},
        "transit": {"standard": transit(130, 60), "express": transit(180)},
        "dwell": {"fulfilment": dwell(10, 5, 4), "origin": dwell(20, 5, 16),
                  "linehaul": dwell(50, 20, 130), "customs": dwell(20, 10, 20),
                  "last_mile": dwell(30, 20, 10)},
        # S2 is 36 h late and only its linehaul ran over target (130 h, express 48 h): version 5
        # code attributes all of it there, to a record written by version 4
        "late": {"linehaul": 36 * 3600},
        # version 6 figures of the two shipments settled after the freeze: S3 cleared in 10 h,
        # S2 in 20 h (both within a day), no declared value; S2's hold was applied by version 4
        # code (no `cx`), so it is in customs_hold above but not in the customs counts
        **customs_totals("AU|au-gst-low-value|unknown", [10, 20], arrivals=2),
        # S3 on time either way; S2 (express, due at 164 h) delivered at 200 h, 180 h without customs
        "dex": {"standard|true": 1, "express|false": 1},
        "o": {FIN: 6},          # 3 settlements before the freeze, then S2's hold, S3, S2
    }}


# ---- the history behind the version 5 fixtures: version 4's, continued, then S4 -----------------
def v5_until_freeze(policy: SlaPolicy = POLICY) -> Partition:
    """The version 4 history and its continuation (S2 delivered 36 h late), then S4: placed at
    200 h with a promise at 400 h, 110 h in linehaul (96 h target: 14 h over) and 80 h in customs
    (48 h: 32 h over), delivered 30 h late at 430 h; frozen before the watermark makes it final."""
    p = v4_until_freeze(policy)
    continue_v4(p)
    feed_journey(p, "4", 200.0, 400.0, picked=210.0, departed=230.0, arrived=340.0,
                 released=420.0, delivered=430.0)
    p.advance(440.0)
    return p


def feed_journey(p: "Partition", n: str, placed: float, promised: float, *, picked: float,
                 departed: float, arrived: float, released: float, delivered: float) -> None:
    """Order O<n> and shipment S<n>, CN-AU, fed milestone by milestone (hours after T0), each
    event with an event_id of its own, as the fixtures' histories were written."""
    cn_au = dict(origin_country="CN", destination_country="AU")
    s = f"s{n}"
    p.feed("orders", order(f"O{n}", placed, promised_h=promised, event_id=f"o{n}-placed"))
    p.feed("shipments", ship(f"S{n}", "label_created", placed + 1, order_ids=[f"O{n}"],
                             event_id=f"{s}-label", **cn_au))
    p.feed("shipments", ship(f"S{n}", "picked_up", picked, event_id=f"{s}-picked"))
    p.feed("shipments", ship(f"S{n}", "departed_origin", departed, event_id=f"{s}-departed"))
    p.feed("shipments", ship(f"S{n}", "arrived_destination", arrived, event_id=f"{s}-arrived"))
    p.feed("customs", customs(f"S{n}", "released", released, event_id=f"c{n}-released"))
    p.feed("shipments", ship(f"S{n}", "delivered", delivered, event_id=f"{s}-delivered"))


def test_a_version_5_changelog_continues_and_attributes_lateness_exactly():
    p = Partition.recovered(5)
    assert p.totals["0|CN-AU"]["late"] == {"linehaul": 36 * 3600}     # S2, before the freeze
    assert not timeline.is_final(p.timelines["S4"])
    p.advance(480.0)                                        # S4 final: 430 h + 48 h grace
    assert p.recounted == {}
    late = p.totals["0|CN-AU"]["late"]
    # S4: 30 h = 108,000 s over linehaul (14 h over) and customs (32 h over), 14:32 = 32,869.57
    # and 75,130.43: the second left by rounding goes to the larger remainder (linehaul, .57)
    assert late == {"linehaul": 36 * 3600 + 32_870, "customs": 75_130}
    assert p.totals["0|CN-AU"]["delivered"] == {"standard|true": 2, "express|false": 1,
                                                "standard|false": 1}
    # version 5 code counted no risk samples; S4, settled now (number 7), has them
    assert risk_records(p.totals) == dict([s4_risk(7)])


# ---- the history behind the version 6 fixtures: version 5's, continued, then S5 -----------------
def v6_until_freeze() -> Partition:
    """The version 5 history, continued until S4 is final (settlement 7, its risk samples counted
    under CN-AU#20165), then S5: placed at 450 h with a promise at 700 h, delivered at 560 h;
    frozen before the watermark makes it final."""
    p = v5_until_freeze()
    p.advance(480.0)                                        # S4 final: 430 h + 48 h grace
    feed_journey(p, "5", 450.0, 700.0, picked=460.0, departed=470.0, arrived=520.0,
                 released=540.0, delivered=560.0)
    p.advance(570.0)
    return p


def test_a_version_6_changelog_continues_and_counts_risk_samples_exactly():
    p = Partition.recovered(6)
    # what today's code counted before the freeze: S1's (settled third, after S1's hold and
    # before S3's failed delivery), S3's, S2's and S4's samples, one record per delivery day
    assert risk_records(p.totals) == dict([s1_risk(3), s3_risk(5), s2_risk(6), s4_risk(7)])
    assert not timeline.is_final(p.timelines["S5"])
    p.advance(610.0)                                        # S5 final: 560 h + 48 h grace
    assert p.recounted == {}
    # S5 (standard): fulfilment 10 h (110 h to delivery), origin 10 h (100), linehaul 50 h (90),
    # customs 20 h (40), last_mile 20 h (20), delivered on day 20148 + 23
    s5 = risk_record(8, "standard", 560.0, ("fulfilment", 450.0, 10.0), ("origin", 460.0, 10.0),
                     ("linehaul", 470.0, 50.0), ("customs", 520.0, 20.0),
                     ("last_mile", 540.0, 20.0))
    assert s5[0] == "0|CN-AU#20171"
    assert risk_records(p.totals) == dict([s1_risk(3), s3_risk(5), s2_risk(6), s4_risk(7), s5])
    assert p.totals["0|CN-AU"]["delivered"] == {"standard|true": 3, "express|false": 1,
                                                "standard|false": 1}
    assert p.totals["0|CN-AU"]["o"] == {FIN: 8}
    # the lateness model read back from these records has S5's linehaul sample where it belongs
    model = risk.RiskModel()
    for key, record in risk_records(p.totals).items():
        model.add(totals.split_key(key)[1], record["risk"])
    model.move_to(day_of(560.0))
    assert dict(model.window[("linehaul",)]) == {
        risk.cell(hours * HOUR, to_delivery * HOUR): 1
        for hours, to_delivery in ((50.0, 100.0), (20.0, 50.0), (130.0, 160.0), (110.0, 200.0),
                                   (50.0, 90.0))}


# ---- the history behind the version 7 fixtures: version 5's, S4 final, then S5 and S6 -----------
def v7_until_freeze(policy: SlaPolicy = POLICY) -> Partition:
    """The version 5 history, S4 made final (80 h in customs, no declared value), then S5:
    declared USD 700 (AUD 1,064: formal under au-gst-low-value), held twice and inspected twice,
    40 h in customs, delivered at 470 h and not final yet; and S6 (USD 30: low value) waiting in
    customs since 450 h."""
    p = v5_until_freeze(policy)
    p.advance(480.0)
    cn_au = dict(origin_country="CN", destination_country="AU")
    usd = lambda amount: {"amount": amount, "currency": "USD"}     # noqa: E731
    p.feed("orders", order("O5", 300.0, declared_value=usd(700), event_id="o5-placed"))
    p.feed("orders", order("O6", 350.0, declared_value=usd(30), event_id="o6-placed"))
    for sid, oid, t0 in (("S5", "O5", 300.0), ("S6", "O6", 350.0)):
        p.feed("shipments", ship(sid, "label_created", t0 + 1, order_ids=[oid],
                                 event_id=f"{sid.lower()}-label", **cn_au))
        p.feed("shipments", ship(sid, "picked_up", t0 + 10, event_id=f"{sid.lower()}-picked"))
        p.feed("shipments", ship(sid, "departed_origin", t0 + 20, event_id=f"{sid.lower()}-departed"))
    p.feed("shipments", ship("S5", "arrived_destination", 400.0, event_id="s5-arrived"))
    for etype, hours in (("declaration_lodged", 401.0), ("held_for_inspection", 402.0),
                         ("inspection_completed", 410.0), ("held_for_inspection", 415.0),
                         ("inspection_completed", 430.0), ("released", 440.0)):
        p.feed("customs", customs("S5", etype, hours, event_id=f"c5-{etype}-{hours:g}"))
    p.feed("shipments", ship("S6", "arrived_destination", 450.0, event_id="s6-arrived"))
    p.feed("shipments", ship("S5", "delivered", 470.0, event_id="s5-delivered"))
    p.advance(490.0)            # S5's holds pass the watermark; S5 is final at 470 + 48 h
    return p


def test_a_version_7_changelog_continues_with_exact_customs_figures():
    p = Partition.recovered(7)
    tot = p.totals["0|CN-AU"]
    # S1 to S4, settled before the freeze by today's code: in customs 20, 10, 20 and 80 h (all
    # within 5 days), S1 and S2 held once each, none with a declared value
    assert {k: tot[k] for k in ("clear", "cwt", "cust")} == \
        customs_totals("AU|au-gst-low-value|unknown", [20, 10, 20, 80], arrivals=4, holds=2)
    assert p.timelines["S5"]["cx"] == [["hold", h(402.0)], ["inspection", h(410.0)],
                                       ["hold", h(415.0)], ["inspection", h(430.0)]]
    assert p.timelines["S5"]["of"]["O5"]["value"] == [700, "USD"]
    entry = timeline.open_entry(p.timelines["S6"], POLICY)
    assert entry[2] == "customs" and entry[6] == ("AU", "au-gst-low-value", "low_value", h(450.0))
    p.advance(530.0)
    assert p.recounted == {}
    tot = p.totals["0|CN-AU"]
    assert tot["clear"] == {"AU|au-gst-low-value|unknown": row(CLEARANCE_BUCKETS, 20, 10, 20, 80),
                            "AU|au-gst-low-value|formal": row(CLEARANCE_BUCKETS, 40)}
    assert tot["cust"]["AU|au-gst-low-value|formal|hold"] == 2
    assert tot["cust"]["AU|au-gst-low-value|formal|inspection"] == 2
    assert tot["cwt"] == {"AU|au-gst-low-value|unknown|calendar": 4,
                          "AU|au-gst-low-value|formal|calendar": 1}
    # S5: CN-AU standard promise 288 h from 300 h = 588 h; delivered 470 h: on time both ways.
    # S4 was 30 h late (promise 400 h, delivered 430 h) but 80 h in customs: on time without
    # them (350 h); S2 (express) late either way; S1 and S3 on time
    assert tot["delivered"] == {"standard|true": 3, "express|false": 1, "standard|false": 1}
    assert tot["dex"] == {"standard|true": 4, "express|false": 1}


# ---- the history behind the version 8 fixtures: version 7's, with stage targets in business days --
#: The shipped policy with AU's stage targets in business days: customs 2, last mile 1, on
#: Victoria's calendar (Labour Day, Monday 10 March 2025, is a public holiday there), by local
#: dates in Melbourne (UTC+11 in March 2025: hour h after T0 is 11:00 on 1 March + h).
V8_POLICY = SlaPolicy.from_dict({
    **tomllib.loads(DEFAULT_POLICY_FILE.read_text()),
    "destination": {"AU": {"timezone": "Australia/Melbourne", "holidays_subdiv": "VIC",
                           "stage_target_business_days": {"customs": 2, "last_mile": 1}}}})


def v8_until_freeze() -> Partition:
    """The version 7 history under V8_POLICY, until S5 is final (settlement 10): S1 to S5 counted
    against the stage targets in business days; S6 still waiting in customs since 450 h."""
    p = v7_until_freeze(V8_POLICY)
    p.advance(530.0)
    return p


#: The stages of S1 to S5 against V8_POLICY, by hand (local dates in Melbourne; the due date is
#: the n-th business day after the stage's start date, Saturdays, Sundays and 10 March skipped):
#:   S1 customs    Tue  4 Mar -> Wed  5, due Thu  6: within;  last mile Wed  5 -> Thu  6, due Thu  6: within
#:   S3 customs    Thu  6     -> Fri  7, due Tue 11: within;  last mile Fri  7 -> Sat  8, due Tue 11: within
#:   S2 customs    Sat  8     -> Sun  9, due Wed 12: within;  last mile Sun  9 -> Sun  9, due Tue 11: within
#:   S4 customs    Sat 15     -> Tue 18, due Tue 18: within (80 h: over the 48 h calendar target);
#:                                                            last mile Tue 18 -> Wed 19, due Wed 19: within
#:   S5 customs    Tue 18     -> Wed 19, due Thu 20: within;  last mile Wed 19 -> Fri 21, due Thu 20: over
V8_SBD = {"customs|true": 5, "last_mile|true": 4, "last_mile|false": 1}


def test_a_version_7_changelog_counts_stage_targets_in_business_days_from_the_upgrade_on():
    """A version 7 totals record has no `sbd`: the shipments settled after the upgrade (S5) are
    counted into a new one, those counted before are not counted again."""
    p = Partition.recovered(7, policy=V8_POLICY)
    assert "sbd" not in p.totals["0|CN-AU"]
    p.advance(530.0)
    assert p.recounted == {}
    assert p.totals["0|CN-AU"]["sbd"] == {"customs|true": 1, "last_mile|false": 1}


def test_a_version_8_changelog_continues_with_exact_stage_business_day_figures():
    p = Partition.recovered(8, policy=V8_POLICY)
    assert p.totals["0|CN-AU"]["sbd"] == V8_SBD and p.totals["0|CN-AU"]["o"] == {FIN: 10}
    s5 = p.timelines["S5"]["lobs"][-1]
    assert s5[:2] == [FIN, 10] and [o for o in s5[2] if o[0] == "stage_business_days"] == [
        ["stage_business_days", "CN-AU", "customs", True],
        ["stage_business_days", "CN-AU", "last_mile", False]]
    # S6, waiting in customs since Thu 20 March (450 h): 2 business days after it is Mon 24.
    # Released at 600 h (Wed 26 March 11:00): over; delivered at 610 h the same day: last mile
    # within (due Thu 27).
    p.feed("customs", customs("S6", "released", 600.0, event_id="c6-released"))
    p.feed("shipments", ship("S6", "delivered", 610.0, event_id="s6-delivered"))
    p.advance(660.0)                                        # 610 h + 48 h grace
    assert p.recounted == {}
    tot = p.totals["0|CN-AU"]
    assert tot["sbd"] == {"customs|true": 5, "customs|false": 1, "last_mile|true": 5,
                          "last_mile|false": 1}
    assert tot["o"] == {FIN: 11}


@pytest.mark.parametrize("version, seqs", [(4, [1, 2, 3]), (5, [1, 2, 3, 4, 5, 6]),
                                           (6, [1, 2, 3, 4, 5, 6, 7]),
                                           (7, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
                                           (8, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])])
def test_todays_lobs_recount_totals_that_a_crash_lost(version, seqs):
    """The `lobs` that the timelines hold are enough to recount totals lost in a crash between
    the two changelog ranks (states are written first), late attribution and the risk records
    of version 6 included."""
    p = Partition.recovered(version)
    p.totals.clear()
    p.reconcile()
    assert sorted(p.recounted) == seqs and p.seq == seqs[-1]
    assert p.totals == fixture(version, "totals")


@pytest.mark.parametrize("load", [True, False], ids=["loaded", "as_written"])
def test_a_version_3_changelog_continues_with_exact_figures(load):
    """Version 3: no `fin`, a str in `pend`, `lobs` and `o` keyed by input topic. The loaders and
    the code's own reading of old shapes give the same figures."""
    p = Partition.recovered(3, load=load)
    s7, s8, s9 = (p.timelines[s] for s in ("S7", "S8", "S9"))
    assert timeline.is_final(s7) and timeline.is_final(s8) and not timeline.is_final(s9)
    assert s9["pend"] == ["customs_hold"] and timeline.corridor(s9) == "unknown"

    p.advance(150.0)
    assert p.recounted == {} and p.seq == 0     # topic-keyed `lobs` are not settlements
    p.feed("shipments", ship("S8", "returned", 150.0, event_id="s8-returned"))         # late
    p.feed("orders", order("O7", 1.0, event_id="o7-placed"))        # S7 ended before it came
    p.feed("orders", order("O9", 0.0, sl="express", promised_h=90.0, event_id="o9-placed"))
    assert p.timelines["S9"]["pend"] == []      # its corridor is known: the hold is counted
    for etype, hours in (("picked_up", 5.0), ("departed_origin", 20.0),
                         ("arrived_destination", 55.0)):
        p.feed("shipments", ship("S9", etype, hours, event_id=f"s9-{etype}"))
    p.feed("customs", customs("S9", "released", 75.0, event_id="c9-released"))
    p.feed("shipments", ship("S9", "delivered", 85.0, event_id="s9-delivered"))

    assert p.timelines["S8"]["late"] == 1
    assert all(p.timelines[s]["observed"] for s in ("S7", "S8", "S9"))
    # today's code counts the risk samples of the deliveries it settles: S7 (standard, order O7
    # placed 1 h, picked up 12, departed 32, arrived 82, released 102, delivered 140 h) and S9
    # (express, placed 0 h, picked up 5, departed 20, arrived 55, released 75, delivered 85 h)
    assert risk_records(p.totals) == dict([
        risk_record(1, "standard", 140.0, ("fulfilment", 1.0, 11.0), ("origin", 12.0, 20.0),
                    ("linehaul", 32.0, 50.0), ("customs", 82.0, 20.0), ("last_mile", 102.0, 38.0)),
        risk_record(3, "express", 85.0, ("fulfilment", 0.0, 5.0), ("origin", 5.0, 15.0),
                    ("linehaul", 20.0, 35.0), ("customs", 55.0, 20.0), ("last_mile", 75.0, 10.0))])
    assert corridor_records(p.totals) == {"0|CN-AU": {
        "delivered": {"standard|true": 2, "express|true": 1},
        "exceptions": {"customs_hold": 2},
        "transit": {"standard": transit(130, 139), "express": transit(85)},
        "dwell": {"fulfilment": dwell(10, 11, 5), "origin": dwell(20, 20, 15),
                  "linehaul": dwell(50, 50, 35), "customs": dwell(20, 20, 20),
                  "last_mile": dwell(30, 38, 10)},
        # S7 and S9, settled by today's code: 20 h in customs each, no declared value
        **customs_totals("AU|au-gst-low-value|unknown", [20, 20], arrivals=2),
        "dex": {"standard|true": 1, "express|true": 1},
        "o": {"customs-events": 1, "shipments": 4, FIN: 3},    # S7, S9's hold, S9
    }}
    for table in TABLES:
        for value in getattr(p, table).values():
            assert problems(LOADERS[table](value), SHAPES[table]) == []


@pytest.mark.parametrize("load", [True, False], ids=["loaded", "as_written"])
def test_a_version_1_order_continues(load):
    """Version 1: an order without `t` (nor `p`) is kept until an event or a link dates it."""
    p = Partition.recovered(1, load=load)
    assert [order_side.expires_at(p.orders[o], RETENTION) for o in ("O5", "O6")] == [None, None]
    p.feed("orders", order("O5", 10.0, etype="order_cancelled", event_id="o5-cancelled"))
    assert p.orders["O5"]["t"] == h(10.0)
    assert order_side.expires_at(p.orders["O5"], RETENTION) == h(10.0) + RETENTION

    p.feed("shipments", ship("S6b", "label_created", 50.0, order_ids=["O6"], event_id="s6b-label"))
    p.feed("orders", order("O6", 0.0, sl="economy", event_id="o6-placed"))    # redelivered
    o6 = p.orders["O6"]
    assert o6["shipments"] == ["S6", "S6b"] and o6["seen"] == ["o6-placed"]
    assert o6["t"] == h(50.0) and o6["p"] == P
    s6b = p.timelines["S6b"]
    assert s6b["of"] == {"O6": {"seller": "CN", "buyer": "AU", "sl": "economy", "placed": h(0.0),
                                "promised": None, "cancelled": False}}
    assert s6b["ms"] == {"fulfilment": h(0.0)}

    p.feed("orders", order("O6", 60.0, etype="order_cancelled", event_id="o6-cancelled"))
    assert p.orders["O6"]["seen"] == ["o6-placed", "o6-cancelled"]
    assert p.orders["O6"]["t"] == h(60.0)
    assert order_side.expires_at(p.orders["O6"], RETENTION) == h(60.0) + RETENTION
    assert p.timelines["S6b"]["end"] == ["cancelled", h(60.0)]     # before its pickup
