"""The traffic simulator's pure layer: deterministic, valid against the wire contract, realistic enough.

No broker here; publishing (simulate.run) is covered in tests/e2e/test_broker.py.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter, defaultdict
from datetime import datetime
from itertools import islice
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator, FormatChecker

from streams.tools import simulate
from streams.tools.simulate import MAX_HISTORY_SECONDS, SCENARIOS, SimEvent, histories, plan_clock

START = 1_790_000_000.0  # 2026-09-21T13:33:20Z
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_FILES = {"orders": "orders.schema.json", "shipments": "shipments.schema.json",
                "customs": "customs-events.schema.json"}
KEY_FIELD = {"orders": "order_id", "shipments": "shipment_id", "customs": "shipment_id"}
TERMINAL = {"delivered", "returned", "lost"}


def gen(seed=1, n=300, **kw) -> list[SimEvent]:
    return list(histories(seed, n, start=START, **kw))


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def shipment_of(events: list[SimEvent]) -> dict[str, str]:
    """order_id -> shipment_id, from label_created."""
    out = {}
    for e in events:
        if e.topic == "shipments" and e.value["event_type"] == "label_created":
            for oid in e.value["order_ids"]:
                out[oid] = e.key
    return out


def history_key(e: SimEvent, orders: dict[str, str]) -> str:
    return orders.get(e.key, e.key) if e.topic == "orders" else e.key


def by_shipment(events: list[SimEvent]) -> dict[str, list[SimEvent]]:
    out = defaultdict(list)
    for e in events:
        if e.topic != "orders":
            out[e.key].append(e)
    return out


def corridor_of(events: list[SimEvent]) -> dict[str, str]:
    return {e.key: f"{e.value['origin_country']}-{e.value['destination_country']}" for e in events
            if e.topic == "shipments" and e.value["event_type"] == "label_created"}


def import_dwell_hours(events: list[SimEvent], corridor: str) -> list[float]:
    """arrived_destination -> import released, per shipment of `corridor`."""
    corr = corridor_of(events)
    arrived, released = {}, {}
    for e in events:
        if corr.get(e.key) != corridor:
            continue
        if e.topic == "shipments" and e.value["event_type"] == "arrived_destination":
            arrived[e.key] = e.at
        if e.topic == "customs" and e.value["direction"] == "import" and e.value["event_type"] == "released":
            released[e.key] = e.at
    return [(released[k] - arrived[k]) / 3600 for k in released]


# ---- determinism ---------------------------------------------------------------------------------

def test_same_seed_same_events_and_different_seed_different_events():
    a, b = gen(seed=5, n=150), gen(seed=5, n=150)
    assert a == b
    assert [json.dumps(e.value, sort_keys=True) for e in a] == [json.dumps(e.value, sort_keys=True) for e in b]
    c = gen(seed=6, n=150)
    assert [e.value["event_id"] for e in a] != [e.value["event_id"] for e in c]
    assert [e.at for e in a] != [e.at for e in c]


def test_same_seed_with_noise_is_deterministic_too():
    assert gen(seed=2, n=120, duplicate_rate=0.1, reorder_rate=0.1) == gen(seed=2, n=120, duplicate_rate=0.1,
                                                                            reorder_rate=0.1)


def test_ids_follow_seed_and_counter():
    events = gen(seed=42, n=3)
    ships = sorted({e.key for e in events if e.topic == "shipments"})
    assert ships == ["SHP-42-000001", "SHP-42-000002", "SHP-42-000003"]
    assert all(e.key.startswith("ORD-42-") for e in events if e.topic == "orders")
    assert len({e.value["event_id"] for e in events}) == len(events)


# ---- contract ------------------------------------------------------------------------------------

def test_every_value_validates_against_the_schemas_and_keys_match():
    validators = {kind: Draft202012Validator(json.loads((SCHEMA_DIR / name).read_text()),
                                             format_checker=FormatChecker())
                  for kind, name in SCHEMA_FILES.items()}
    events = gen(seed=9, n=500, duplicate_rate=0.02, reorder_rate=0.02)
    seen_types = defaultdict(set)
    for e in events:
        assert e.topic in SCHEMA_FILES
        errors = [err.message for err in validators[e.topic].iter_errors(e.value)]
        assert errors == [], (e.topic, e.value)
        assert e.key == e.value[KEY_FIELD[e.topic]]
        assert e.at == ts(e.value["occurred_at"])  # whole seconds, offset honoured
        assert orjson.loads(orjson.dumps(e.value)) == e.value
        seen_types[e.topic].add(e.value["event_type"])
    assert seen_types["orders"] == {"order_placed", "order_cancelled"}
    assert {"label_created", "picked_up", "departed_origin", "arrived_destination", "out_for_delivery",
            "delivered", "delivery_failed", "returned"} <= seen_types["shipments"]
    assert {"declaration_lodged", "risk_assessed", "held_for_inspection", "inspection_completed",
            "duty_assessed", "duty_paid", "released"} <= seen_types["customs"]


def test_the_worker_decoder_accepts_every_generated_message():
    from streams.contract.codec import Decoder

    decoders = {kind: Decoder(kind, clock=lambda: START + 400 * 86400) for kind in SCHEMA_FILES}
    for e in gen(seed=4, n=300):
        doc = decoders[e.topic].decode(e.key.encode(), orjson.dumps(e.value))
        assert doc == e.value


def test_order_fields_and_optional_shares():
    events = gen(seed=3, n=1500)
    placed = [e.value for e in events if e.topic == "orders" and e.value["event_type"] == "order_placed"]
    without_promise = sum("promised_delivery_at" not in v for v in placed) / len(placed)
    assert 0.15 < without_promise < 0.25
    for v in placed:
        if "promised_delivery_at" in v:
            assert ts(v["promised_delivery_at"]) > ts(v["occurred_at"])
        for item in v.get("items", []):
            assert item["qty"] >= 1 and len(item["hs_code"]) == 6
    assert any("declared_value" not in v for v in placed) and any("items" not in v for v in placed)
    assert {v["service_level"] for v in placed} == {"economy", "standard", "express"}


def test_customs_events_name_their_side():
    events = gen(seed=3, n=400)
    corr = corridor_of(events)
    for e in events:
        if e.topic == "customs":
            origin, dest = corr[e.key].split("-")
            side = "EX" if e.value["direction"] == "export" else "IM"
            assert e.value["country"] == (origin if side == "EX" else dest)
            assert e.value["declaration_id"].endswith(side)


# ---- complete histories --------------------------------------------------------------------------

def test_exactly_n_complete_histories_in_order():
    n = 500
    events = gen(seed=11, n=n)
    labels = [e for e in events if e.topic == "shipments" and e.value["event_type"] == "label_created"]
    terminals = [e for e in events if e.topic == "shipments" and e.value["event_type"] in TERMINAL]
    assert len(labels) == n and len({e.key for e in labels}) == n
    assert len(terminals) == n and len({e.key for e in terminals}) == n

    placed = {e.key: e.at for e in events if e.topic == "orders" and e.value["event_type"] == "order_placed"}
    cancelled = {e.key for e in events if e.topic == "orders" and e.value["event_type"] == "order_cancelled"}
    assert cancelled and not cancelled & set(shipment_of(events))  # cancelled orders never ship
    for sid, evs in by_shipment(events).items():
        ship = [e for e in evs if e.topic == "shipments"]
        assert ship[0].value["event_type"] == "label_created"
        assert ship[-1].value["event_type"] in TERMINAL
        assert evs[-1] is ship[-1]  # nothing after the terminal event
        assert all(a.at < b.at for a, b in zip(evs, evs[1:]))  # without noise: strictly in event time
        for oid in ship[0].value["order_ids"]:
            assert placed[oid] < ship[0].at
        delivered = ship[-1].value["event_type"] == "delivered"
        if delivered:
            customs = [(e.value["direction"], e.value["event_type"]) for e in evs if e.topic == "customs"]
            assert customs[:2] == [("export", "declaration_lodged"), ("export", "released")]
            assert customs[2:4] == [("import", "declaration_lodged"), ("import", "risk_assessed")]
            assert customs[-1] == ("import", "released")
            kinds = [e.value["event_type"] for e in ship]
            assert kinds[:4] == ["label_created", "picked_up", "departed_origin", "arrived_destination"]
            assert kinds[-2:] == ["out_for_delivery", "delivered"]


def test_stream_is_in_event_time_order_without_noise_and_histories_arrive_steadily():
    events = gen(seed=12, n=2000)
    assert all(a.at <= b.at for a, b in zip(events, events[1:]))
    assert events[0].at == START and events[0].value["event_type"] == "order_placed"
    first_order = {}
    for e in events:
        if e.topic == "orders":
            first_order.setdefault(e.key, e.at)
    starts = [first_order[oids[0]] for oids in (
        e.value["order_ids"] for e in sorted((e for e in events if e.topic == "shipments"
                                              and e.value["event_type"] == "label_created"), key=lambda e: e.key))]
    assert all(a <= b for a, b in zip(starts, starts[1:]))  # SHP-…-000002 starts after SHP-…-000001
    mean_gap = (starts[-1] - starts[0]) / (len(starts) - 1)
    assert 0.85 * simulate.DEFAULT_ARRIVAL_INTERVAL < mean_gap < 1.15 * simulate.DEFAULT_ARRIVAL_INTERVAL


def test_no_history_spans_more_than_the_maximum():
    for scenario in SCENARIOS:
        spans = defaultdict(lambda: [float("inf"), 0.0])
        events = gen(seed=13, n=1500, scenario=scenario)
        orders = shipment_of(events)
        for e in events:
            k = history_key(e, orders)
            spans[k][0] = min(spans[k][0], e.at)
            spans[k][1] = max(spans[k][1], e.at)
        assert max(hi - lo for lo, hi in spans.values()) <= MAX_HISTORY_SECONDS


def test_generation_is_lazy():
    t = time.perf_counter()
    first = list(islice(histories(1, 10_000_000, start=START), 5000))
    assert len(first) == 5000
    assert time.perf_counter() - t < 5.0


def test_endless_stream_when_shipments_is_none():
    events = list(islice(histories(1, None, start=START), 3000))
    assert len(events) == 3000


# ---- realism -------------------------------------------------------------------------------------

def test_corridors_include_the_five_named_and_are_weighted():
    counts = Counter(corridor_of(gen(seed=14, n=2000)).values())
    assert {"CN-AU", "CN-US", "CN-GB", "DE-US", "US-MX"} <= set(counts)
    assert counts.most_common(1)[0][0] == "CN-US"
    assert counts["CN-US"] > 3 * counts["CN-NZ"]


def test_carriers_belong_to_their_corridor():
    allowed = {c.name: {x for level in c.carriers for x in level} for c in simulate.CORRIDORS}
    for e in gen(seed=15, n=500):
        if e.topic == "shipments":
            corridor = f"{e.value['origin_country']}-{e.value['destination_country']}"
            assert e.value["carrier"] in allowed[corridor]


def test_service_levels_take_days_to_weeks_and_most_are_on_time():
    events = gen(seed=16, n=3000)
    orders = {e.key: e.value for e in events if e.topic == "orders" and e.value["event_type"] == "order_placed"}
    door_to_door = defaultdict(list)
    on_time = late = 0
    for sid, evs in by_shipment(events).items():
        label, last = evs[0], evs[-1]
        if last.value["event_type"] != "delivered":
            continue
        for oid in label.value["order_ids"]:
            o = orders[oid]
            door_to_door[o["service_level"]].append((last.at - ts(o["occurred_at"])) / 86400)
            if "promised_delivery_at" in o:
                if last.at <= ts(o["promised_delivery_at"]):
                    on_time += 1
                else:
                    late += 1
    median = {lv: statistics.median(d) for lv, d in door_to_door.items()}
    assert median["express"] < 5 < median["standard"] < 12 < median["economy"] < 30
    assert 0.85 < on_time / (on_time + late) < 0.97


def test_some_histories_fail_delivery_are_returned_or_lost():
    terminal = Counter(e.value["event_type"] for e in gen(seed=17, n=3000)
                       if e.topic == "shipments" and e.value["event_type"] in TERMINAL | {"delivery_failed"})
    assert terminal["delivered"] > 0.95 * 3000
    assert terminal["returned"] > 0 and terminal["lost"] > 0 and terminal["delivery_failed"] > 100


# ---- scenarios -----------------------------------------------------------------------------------

def test_scenarios_are_named_and_unknown_ones_refused():
    assert {"baseline", "customs-backlog", "linehaul-delay"} <= set(SCENARIOS)
    try:
        next(histories(1, 1, start=START, scenario="nope"))
    except ValueError as exc:
        assert "unknown scenario 'nope'" in str(exc)
    else:
        raise AssertionError("unknown scenario accepted")


def test_customs_backlog_slows_cn_au_import_customs_only():
    base, backlog = gen(seed=18, n=2000), gen(seed=18, n=2000, scenario="customs-backlog")
    ratio = statistics.median(import_dwell_hours(backlog, "CN-AU")) / statistics.median(
        import_dwell_hours(base, "CN-AU"))
    assert ratio > 4
    # Other corridors draw the same histories in both runs.
    assert import_dwell_hours(backlog, "CN-US") == import_dwell_hours(base, "CN-US")
    def held(events):
        corr = corridor_of(events)
        return sum(1 for e in events if e.topic == "customs" and e.value["event_type"] == "held_for_inspection"
                   and corr[e.key] == "CN-AU")
    assert held(backlog) > 4 * held(base)


def test_customs_backlog_applies_to_arrivals_after_the_scenario_starts():
    cut = START + 2 * 86400
    events = gen(seed=19, n=3000, scenario="customs-backlog", scenario_start=cut)
    base = gen(seed=19, n=3000)
    dwell = lambda evs, after: statistics.median(
        [h for h, arr in zip(import_dwell_hours(evs, "CN-AU"), arrivals(evs, "CN-AU")) if (arr >= cut) == after])
    assert dwell(events, after=False) == dwell(base, after=False)
    assert dwell(events, after=True) > 4 * dwell(base, after=True)


def arrivals(events, corridor):
    """arrived_destination time per shipment of `corridor`, in the order import_dwell_hours lists them."""
    corr = corridor_of(events)
    arrived = {e.key: e.at for e in events
               if e.topic == "shipments" and e.value["event_type"] == "arrived_destination" and corr[e.key] == corridor}
    released = [e.key for e in events if e.topic == "customs" and corr[e.key] == corridor
                and e.value["direction"] == "import" and e.value["event_type"] == "released"]
    return [arrived[k] for k in released]


def test_linehaul_delay_slows_cn_us_linehaul():
    def linehaul(events):
        corr, dep, out = corridor_of(events), {}, []
        for e in events:
            if e.topic == "shipments" and corr[e.key] == "CN-US":
                if e.value["event_type"] == "departed_origin":
                    dep[e.key] = e.at
                elif e.value["event_type"] == "arrived_destination":
                    out.append((e.at - dep[e.key]) / 3600)
        return statistics.median(out)
    assert linehaul(gen(seed=20, n=2000, scenario="linehaul-delay")) > 2 * linehaul(gen(seed=20, n=2000))


def test_last_mile_failures_fail_more_deliveries_in_gb():
    def failed(events):
        corr = corridor_of(events)
        return sum(1 for e in events if e.topic == "shipments" and e.value["event_type"] == "delivery_failed"
                   and corr[e.key].endswith("-GB"))
    assert failed(gen(seed=21, n=2000, scenario="last-mile-failures")) > 4 * failed(gen(seed=21, n=2000))


# ---- duplicates and reordering -------------------------------------------------------------------

def test_duplicates_are_verbatim_later_copies_at_the_requested_rate():
    clean = gen(seed=22, n=600)
    noisy = gen(seed=22, n=600, duplicate_rate=0.05)
    first = {}
    dups = 0
    for i, e in enumerate(noisy):
        eid = e.value["event_id"]
        if eid in first:
            dups += 1
            assert e == noisy[first[eid]]  # verbatim: same key, value and event time
            assert e.duplicate and e.value is noisy[first[eid]].value
        else:
            assert not e.duplicate
            first[eid] = i
    assert 0.035 < dups / len(clean) < 0.065
    assert len(noisy) == len(clean) + dups
    # Without the copies it is exactly the clean stream.
    assert [noisy[i] for i in sorted(first.values())] == clean
    assert len({e.value["event_id"] for e in clean}) == len(clean)


def test_reorder_delays_events_past_later_events_of_the_same_history():
    clean = gen(seed=23, n=600)
    noisy = gen(seed=23, n=600, reorder_rate=0.1)
    assert sorted(noisy, key=lambda e: e.value["event_id"]) == sorted(clean, key=lambda e: e.value["event_id"])
    orders = shipment_of(noisy)
    latest: dict[str, float] = {}
    overtaken = 0
    for e in noisy:
        k = history_key(e, orders)
        if latest.get(k, float("-inf")) > e.at:
            overtaken += 1
        latest[k] = max(latest.get(k, float("-inf")), e.at)
    eligible = len(clean) - 600  # every event but the last of each history
    assert 0.08 < overtaken / eligible < 0.12

    # Across topics: customs before its shipment's label, a label before its order.
    pos = {e.value["event_id"]: i for i, e in enumerate(noisy)}
    label_pos = {e.key: pos[e.value["event_id"]] for e in noisy
                 if e.topic == "shipments" and e.value["event_type"] == "label_created"}
    customs_first = sum(1 for e in noisy if e.topic == "customs" and pos[e.value["event_id"]] < label_pos[e.key])
    order_late = sum(1 for e in noisy if e.topic == "orders" and e.value["event_type"] == "order_placed"
                     and e.key in orders and pos[e.value["event_id"]] > label_pos[orders[e.key]])
    assert customs_first > 0 and order_late > 0


def test_clean_stream_never_shows_customs_before_label_or_label_before_order():
    clean = gen(seed=23, n=600)
    seen_label, seen_order = set(), set()
    for e in clean:
        if e.topic == "orders":
            seen_order.add(e.key)
        elif e.topic == "shipments" and e.value["event_type"] == "label_created":
            assert set(e.value["order_ids"]) <= seen_order
            seen_label.add(e.key)
        else:
            assert e.key in seen_label


def test_rates_are_validated():
    for kw in ({"duplicate_rate": -0.1}, {"reorder_rate": 1.5}):
        try:
            next(histories(1, 1, start=START, **kw))
        except ValueError:
            continue
        raise AssertionError(f"{kw} accepted")


# ---- the simulated clock of run() ----------------------------------------------------------------

def test_a_bounded_run_is_placed_entirely_before_now():
    now = START + 500 * 86400
    layout = plan_clock(now=now, rate=200.0, shipments=300, speedup=3600.0)
    events = list(histories(1, 300, start=layout["start"], arrival_interval=layout["arrival_interval"],
                            scenario="customs-backlog", scenario_start=layout["scenario_start"]))
    assert max(e.at for e in events) <= now
    assert layout["start"] < layout["scenario_start"] < max(e.at for e in events)
    assert layout["arrival_interval"] == simulate.EVENTS_PER_SHIPMENT * 3600.0 / 200.0


def test_an_open_ended_run_starts_thirty_days_back_and_its_scenario_a_week_later():
    now = START + 500 * 86400
    layout = plan_clock(now=now, rate=None, shipments=None, speedup=3600.0)
    assert layout == {"start": float(int(now - 30 * 86400)), "arrival_interval": simulate.DEFAULT_ARRIVAL_INTERVAL,
                      "scenario_start": float(int(now - 23 * 86400))}


def test_cli_arguments():
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.rate, args.shipments, args.seed, args.scenario, args.speedup, args.duplicates, args.reorder) == (
        simulate.DEFAULT_RATE, None, 1, "baseline", simulate.DEFAULT_SPEEDUP, 0.0, 0.0)
    args = parser.parse_args(["--rate", "50", "--shipments", "10", "--seed", "7", "--scenario", "customs-backlog",
                              "--speedup", "100", "--duplicates", "0.02", "--reorder", "0.05"])
    assert (args.rate, args.shipments, args.seed, args.scenario, args.speedup, args.duplicates, args.reorder) == (
        50.0, 10, 7, "customs-backlog", 100.0, 0.02, 0.05)
    for bad in (["--scenario", "nope"], ["--duplicates", "2"], ["--speedup", "0"]):
        try:
            parser.parse_args(bad)
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"{bad} accepted")


# ---- de-minimis-change (issue 17) ------------------------------------------------------------------
def customs_by_corridor_and_regime(events, policy):
    """{(corridor, regime): (arrivals, holds, cleared, cleared within 5 days, clearance sum)} from
    the engine (the worker's rules) over the simulated events in stream order."""
    from streams.domain import figures
    from streams.domain.engine import Engine
    eng = Engine(policy)
    for e in events:
        eng.feed(e.topic, e.value)
    eng.finish()
    out = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for corr, tot in eng.totals.items():
        rows = figures.customs_rows(tot)
        for (_d, regime, _v), n in rows["arrivals"]:
            out[(corr, regime)][0] += n
        for (_d, regime, _v, typ), n in rows["events"]:
            out[(corr, regime)][1] += n if typ == "hold" else 0
        for (_d, regime, _v), row in rows["clearance"]:
            out[(corr, regime)][2] += sum(row[:-1])
            out[(corr, regime)][4] += row[-1]
        for (_d, regime, _v, days), n in rows["within"]:
            out[(corr, regime)][3] += n if days == "calendar" else 0
    return {k: tuple(v) for k, v in out.items()}


def test_de_minimis_change_slows_and_holds_cn_au_low_value_parcels_under_the_new_regime_only(tmp_path):
    from streams.domain.policy import SlaPolicy
    cut = START + 13 * 86400                     # 2026-10-04T13:33Z: the change is at midnight after
    assert simulate.change_at(cut) == ts("2026-10-05T00:00:00+00:00")
    regimes = tmp_path / "regimes.toml"
    regimes.write_text(simulate.scenario_regimes("de-minimis-change", cut))
    assert "since = 2026-10-05" in regimes.read_text()
    assert simulate.scenario_regimes("customs-backlog", cut) is None
    policy = SlaPolicy.load(None, regimes=regimes)
    kw = dict(arrival_interval=600.0, scenario_start=cut)
    changed = gen(seed=23, n=3000, scenario="de-minimis-change", **kw)
    base = gen(seed=23, n=3000, **kw)
    fig, ref = customs_by_corridor_and_regime(changed, policy), customs_by_corridor_and_regime(base, policy)
    old, new = "au-gst-low-value", simulate.DE_MINIMIS_REGIME
    # before the change both runs are the same parcels; every corridor keeps its figures elsewhere
    assert fig[("CN-AU", old)] == ref[("CN-AU", old)]
    assert {k: v for k, v in fig.items() if k[0] != "CN-AU"} == {k: v for k, v in ref.items() if k[0] != "CN-AU"}

    def share(v):
        return v[3] / v[2]

    def holds_per_1000(v):
        return 1000 * v[1] / v[0]

    def mean_hours(v):
        return v[4] / v[2] / 3600

    a, b = fig[("CN-AU", old)], fig[("CN-AU", new)]
    assert a[2] > 100 and b[2] > 200
    # the jump: clearance time, holds per 1,000 arrivals, share cleared within 5 days
    assert mean_hours(b) > 4 * mean_hours(a) and holds_per_1000(b) > 5 * holds_per_1000(a)
    assert share(a) >= 0.95 and share(b) < 0.8
    # every other corridor and regime with a meaningful count stays above the 80 % floor, KR-AU
    # under the new regime included: the alert is for exactly (CN-AU, au-de-minimis-removed)
    below = {k for k, v in fig.items() if v[2] >= 20 and share(v) < 0.8}
    assert below == {("CN-AU", new)}
    assert fig[("KR-AU", new)][2] >= 20


def test_the_cli_writes_the_scenarios_regime_for_the_worker():
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    args = parser.parse_args(["--scenario", "de-minimis-change", "--write-regimes", "r.toml"])
    assert (args.scenario, args.write_regimes) == ("de-minimis-change", "r.toml")
    text = simulate.scenario_regimes("de-minimis-change", ts("2026-10-05T00:00:00+00:00"))
    import tomllib
    (entry,) = tomllib.loads(text)["regime"]
    assert entry["name"] == simulate.DE_MINIMIS_REGIME and entry["threshold"] == 0
    assert str(entry["since"]) == "2026-10-05" and entry["destinations"] == ["AU"]


def test_the_demo_gives_its_worker_the_regime_the_simulator_will_use(tmp_path, monkeypatch):
    from streams import cli
    now = ts("2026-12-03T07:00:00+00:00")
    monkeypatch.setattr(time, "time", lambda: now)
    args = argparse.Namespace(rate=200.0, shipments=None, scenario="de-minimis-change")
    path = cli._demo_regimes(args, tmp_path / "regimes.toml")
    # open-ended: the world starts 30 days back, the scenario 7 days later (2026-11-10 07:00),
    # the change at the following midnight UTC
    assert plan_clock(now=now, rate=200.0, shipments=None, speedup=simulate.DEFAULT_SPEEDUP)[
        "scenario_start"] == ts("2026-11-10T07:00:00+00:00")
    assert "since = 2026-11-11" in Path(path).read_text()
    args.scenario = "customs-backlog"
    assert cli._demo_regimes(args, tmp_path / "other.toml") is None
    assert not (tmp_path / "other.toml").exists()
