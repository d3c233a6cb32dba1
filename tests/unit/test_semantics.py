"""The pure semantics: join, stages, SLA, dedupe, late events, bottleneck, the event-time clock."""
import pytest

from builders import HOUR, T0_EPOCH, customs, journey, order, ship
from streams.domain import aggregate, timeline
from streams.domain.aggregate import DWELL_BUCKETS, TRANSIT_BUCKETS, event_now
from streams.domain.engine import Engine
from streams.domain.policy import PolicyError, SlaPolicy

POLICY = SlaPolicy.load()


def run(events, policy=POLICY):
    eng = Engine(policy)
    for kind, ev in events:
        eng.feed(kind, ev)
    return eng.finish()


def dwell_sums(totals):
    return {stage: row[-1] for stage, row in totals["dwell"].items()}


def test_complete_journey_gives_stage_dwell_transit_and_on_time():
    eng = run(journey("S1", "O1", promised_h=200))
    tot = eng.totals["CN-AU"]
    assert tot["delivered"] == {"standard|true": 1}
    assert tot["transit"]["standard"][-1] == 130 * HOUR
    assert dwell_sums(tot) == {"fulfilment": 10 * HOUR, "origin": 20 * HOUR, "linehaul": 50 * HOUR,
                               "customs": 20 * HOUR, "last_mile": 30 * HOUR}
    # one observation per stage, in the bucket that holds it (le semantics)
    assert sum(sum(row[:-1]) for row in tot["dwell"].values()) == 5
    assert tot["transit"]["standard"][TRANSIT_BUCKETS.index(7 * 86400.0)] == 1   # 130 h <= 7 d
    assert eng.gauges().in_stage == {}


def test_late_delivery_against_order_promise_and_policy_promise():
    late = run(journey("S1", "O1", promised_h=129.5))
    assert late.totals["CN-AU"]["delivered"] == {"standard|false": 1}
    # no promise on the order: CN-AU express promise from the policy is 144 h
    eng = run(journey("S2", "O2", sl="express", delivered=144.0)
              + journey("S3", "O3", sl="express", delivered=144.5))
    assert eng.totals["CN-AU"]["delivered"] == {"express|true": 1, "express|false": 1}


@pytest.mark.parametrize("seed", range(12))
def test_any_arrival_order_gives_the_same_figures(seed):
    events = journey("S1", "O1", promised_h=200, hold=True)
    reference = run(events)
    eng = run(_shuffle(events, seed))
    # the terminal event arrives last, so every arrival order ends with the same timeline
    assert eng.totals == reference.totals
    assert eng.late == 0
    assert eng.totals["CN-AU"]["exceptions"] == {"customs_hold": 1}


def _shuffle(events, seed):
    import random
    out = list(events)
    random.Random(seed).shuffle(out)
    # keep the terminal event last so that nothing counts as late
    out.sort(key=lambda kv: kv[1]["event_type"] == "delivered")
    return out


def test_customs_before_shipment_and_shipment_before_order():
    events = journey("S1", "O1", promised_h=200)
    order_ev = events[0]
    reordered = [e for e in events if e[0] == "customs"] + \
        [e for e in events if e[0] == "shipments"] + [order_ev]
    eng = run(reordered)
    tot = eng.totals["CN-AU"]
    assert tot["delivered"] == {"standard|true": 1}
    assert dwell_sums(tot)["fulfilment"] == 10 * HOUR
    assert eng.late == 0      # the order arrived after `delivered`: it completes the observation


def test_duplicates_change_nothing():
    events = journey("S1", "O1", promised_h=200, hold=True)
    eng = run(events + events + events[:3])
    assert eng.totals == run(events).totals
    assert eng.duplicates == len(events) + 3


def test_missing_order_uses_shipment_countries_and_waits_to_observe():
    events = [e for e in journey("S1", "O1", seller="DE", buyer="US", hold=True) if e[0] != "orders"]
    eng = run(events)
    st = eng.shipments["S1"]
    assert timeline.corridor(st) == "DE-US"
    assert st["end"][0] == "delivered" and st["observed"] is False
    assert eng.totals["DE-US"] == {"delivered": {}, "exceptions": {"customs_hold": 1},
                                   "transit": {}, "dwell": {}}
    eng.feed("orders", order("O1", 0.0, seller="DE", buyer="US", promised_h=500))
    assert eng.totals["DE-US"]["delivered"] == {"standard|true": 1}


def test_unknown_corridor_is_reattributed_when_known():
    eng = run([("customs", customs("S9", "held_for_inspection", 5.0))])
    assert timeline.corridor(eng.shipments["S9"]) == "unknown"
    assert eng.totals == {}
    assert eng.gauges().in_stage == {("unknown", "fulfilment"): 1}
    eng.feed("shipments", ship("S9", "label_created", 1.0, order_ids=["O9"]))
    eng.feed("orders", order("O9", 0.0, seller="CN", buyer="GB"))
    assert eng.totals["CN-GB"]["exceptions"] == {"customs_hold": 1}
    assert eng.gauges().in_stage == {("CN-GB", "fulfilment"): 1}


def test_skipped_stages_have_no_dwell_and_extend_the_previous_stage():
    eng = run(journey("S1", "O1", promised_h=300, departed=None, released=None))
    assert dwell_sums(eng.totals["CN-AU"]) == {"fulfilment": 10 * HOUR, "origin": 70 * HOUR,
                                               "customs": 50 * HOUR}


def test_event_after_end_is_late_and_kept_but_changes_no_figure():
    events = journey("S1", "O1", promised_h=200)
    eng = run(events)
    before = eng.totals["CN-AU"]
    eng.feed("shipments", ship("S1", "out_for_delivery", 120.0))
    eng.feed("shipments", ship("S1", "returned", 150.0))
    assert eng.late == 2
    assert eng.totals["CN-AU"] == before
    assert [e[2] for e in eng.shipments["S1"]["ev"]][-3:] == ["out_for_delivery", "delivered", "returned"]


def test_returned_and_lost_count_as_exceptions_with_dwell_but_no_transit():
    eng = run(journey("S1", "O1", end="returned") + journey("S2", "O2", end="lost", released=None))
    tot = eng.totals["CN-AU"]
    assert tot["exceptions"] == {"returned": 1, "lost": 1}
    assert tot["delivered"] == {} and tot["transit"] == {}
    assert sum(row[:-1][0:].count(1) for row in tot["dwell"].values()) >= 1
    assert tot["dwell"]["customs"][-1] == 20 * HOUR + 50 * HOUR


def test_cancelled_before_pickup_ends_the_shipment():
    eng = run([("orders", order("O1", 0.0)),
               ("shipments", ship("S1", "label_created", 1.0, order_ids=["O1"])),
               ("orders", order("O1", 2.0, etype="order_cancelled"))])
    assert eng.shipments["S1"]["end"][0] == "cancelled"
    assert eng.totals["CN-AU"]["exceptions"] == {"cancelled": 1}
    assert eng.gauges().open == 0


def test_open_gauges_overdue_excess_and_bottleneck():
    policy = SlaPolicy.load()
    # S1 sits in customs since h80 (target 48 h); S2 in linehaul since h30 (target 96 h)
    events = journey("S1", "O1", promised_h=150, released=None, delivered=None) + \
        journey("S2", "O2", promised_h=400, arrived=None, released=None, delivered=None)
    eng = run(events)
    now = T0_EPOCH + 200 * HOUR
    g = eng.gauges(now)
    assert g.in_stage == {("CN-AU", "customs"): 1, ("CN-AU", "linehaul"): 1}
    assert g.overdue == {("CN-AU", "standard"): 1}
    assert g.excess == {("CN-AU", "customs"): (200 - 80 - 48) * HOUR,
                        ("CN-AU", "linehaul"): (200 - 30 - 96) * HOUR}
    assert g.bottlenecks() == {"CN-AU": "linehaul"}
    assert eng.gauges(T0_EPOCH + 100 * HOUR).bottlenecks() == {}


def test_the_open_shipments_at_risk_from_the_deliveries_settled_so_far():
    """Engine.at_risk: what the worker's at-risk gauges show, over the Engine's own history."""
    eng = Engine(POLICY)
    # two deliveries teach the model their customs samples: D1 20 h in customs (80-100 h), 50 h
    # from entering it to delivery; D2 160 h (80-240 h), 170 h. Both final by the watermark of
    # 301 h (D2: 250 h + 48 h grace)
    history = journey("D1", "OD1") + journey("D2", "OD2", released=240.0, delivered=250.0)
    # three open shipments in customs since 300 h (the watermark, their declaration, is 301 h),
    # promised at 400 h (slack 100 h), 300.5 h (already past it) and 340 h (slack 40 h)
    for sid, promised in (("A", 400.0), ("B", 300.5), ("C", 340.0)):
        history += journey(sid, f"O{sid}", placed=200.0, picked=210.0, departed=220.0, arrived=300.0,
                           released=None, delivered=None, promised_h=promised)
    for kind, ev in history:
        eng.feed(kind, ev)
    assert eng.latest == T0_EPOCH + 301 * HOUR
    assert {k: sorted(c.values()) for k, c in eng.risk.items()} == {
        "CN-AU#20153": [1] * 5, "CN-AU#20158": [1] * 5}      # 130 h and 250 h: days 5 and 10

    # every level (corridor, AU, customs) has the same 2 samples, both held longer than the 1 h
    # spent: 50 h (bin 1 + int(4 * 5.64) = 23) and 170 h (bin 30). A's slack of 100 h (bin 27)
    # is beaten by the 170 h one only: 1 of 2 late at each level, shrunk with 10 pseudo-samples
    stage = 1 / 12
    dest = (1 + 10 * stage) / 12
    a = (1 + 10 * dest) / 12                                 # 364 / 1728 = 0.2106
    # C's slack of 40 h (bin 22) is beaten by both
    stage = 2 / 12
    dest = (2 + 10 * stage) / 12
    c = (2 + 10 * dest) / 12                                 # 728 / 1728 = 0.4213
    assert (a, c) == (pytest.approx(364 / 1728), pytest.approx(728 / 1728))
    out = eng.at_risk()                                      # at 301 h, at risk from 0.5
    assert dict(out.at_risk) == {("CN-AU", "standard", "customs"): 1}       # B, past its promise
    assert dict(out.scored) == {"CN-AU": 3}
    assert dict(out.expected_late) == {"CN-AU": round(a * 2 ** 20) + 2 ** 20 + round(c * 2 ** 20)}
    assert dict(out.expected_late) == {"CN-AU": 220_881 + 2 ** 20 + 441_761}
    assert dict(eng.at_risk(threshold=0.4).at_risk) == {("CN-AU", "standard", "customs"): 2}
    # and one under A's 0.2106 counts all three
    assert dict(eng.at_risk(threshold=0.2).at_risk) == {("CN-AU", "standard", "customs"): 3}


def test_several_orders_share_a_shipment_and_the_first_is_primary():
    eng = run([("orders", order("O1", 0.0, promised_h=100)),
               ("orders", order("O2", 2.0, seller="CN", buyer="AU", sl="express")),
               ("shipments", ship("S1", "label_created", 3.0, order_ids=["O1", "O2"])),
               ("shipments", ship("S1", "delivered", 90.0))])
    assert eng.totals["CN-AU"]["delivered"] == {"standard|true": 1}
    assert eng.totals["CN-AU"]["transit"]["standard"][-1] == 90 * HOUR


def test_order_facts_read_before_the_event_that_names_the_order_do_not_make_it_primary():
    """After a crash, order events forwarded in the first pass can be read before the shipment
    event that named their orders is applied again: the primary order stays the first named."""
    o1, o2 = order("O1", 0.0, promised_h=100), order("O2", 2.0, sl="express")
    label = ship("S1", "label_created", 3.0, order_ids=["O1", "O2"])
    delivered = ship("S1", "delivered", 90.0)

    def observed(arrivals):
        state, out = None, []
        for source, ev in arrivals:
            res = timeline.apply(state, source, {**ev, "shipment_id": "S1"}, POLICY)
            state = res.state
            out += timeline.settle(state, POLICY, float("inf"), timeline.DEFAULT_GRACE_SECONDS)
        return state["orders"], [o for o in out if o[0] == "delivered"]

    first_pass = observed([("shipments", label), ("orders", o1), ("orders", o2),
                           ("shipments", delivered)])
    replay = observed([("orders", o2), ("shipments", label), ("shipments", delivered),
                       ("orders", o1)])
    assert first_pass == replay == (["O1", "O2"],
                                    [("delivered", "CN-AU", "standard", True, 90 * HOUR)])


def test_export_release_does_not_open_last_mile():
    eng = run(journey("S1", "O1", released=None, delivered=None) +
              [("customs", customs("S1", "released", 20.0, direction="export", country="CN"))])
    assert eng.gauges(T0_EPOCH + 90 * HOUR).in_stage == {("CN-AU", "customs"): 1}


def test_timeline_is_capped_but_keeps_milestones():
    eng = Engine(POLICY, max_events=8)
    for kind, ev in journey("S1", "O1", delivered=None):
        eng.feed(kind, ev)
    for i in range(20):
        eng.feed("customs", customs("S1", "risk_assessed", 81 + i * 0.1))
    st = eng.shipments["S1"]
    assert len(st["ev"]) == 8
    assert {"order_placed", "picked_up", "departed_origin", "arrived_destination", "released"} <= \
        {e[2] for e in st["ev"]}


def test_event_clock_follows_wall_clock_only_while_live():
    assert event_now(1000.0, 1500.0, 900.0) == 1500.0     # live: follows the wall clock
    assert event_now(1000.0, 5000.0, 900.0) == 1000.0     # replay of old events: event time
    assert event_now(9000.0, 5000.0, 900.0) == 9000.0     # events ahead of the wall clock
    assert event_now(None, 5000.0, 900.0) is None


def test_histogram_rows_and_quantile():
    tot = aggregate.new_totals()
    for hours in (0.5, 2, 2, 30):
        aggregate.add(tot, ("dwell", "X", "customs", hours * HOUR))
    row = tot["dwell"]["customs"]
    assert row[:4] == [1, 2, 0, 0] and row[-1] == 34.5 * HOUR
    buckets, count, total = aggregate.cumulative(row, DWELL_BUCKETS)
    assert count == 4 and buckets[-1] == (float("inf"), 4) and buckets[1] == (3 * HOUR, 3)
    assert aggregate.quantile(row, DWELL_BUCKETS, 0.5) == HOUR + 2 * HOUR * 0.5


def test_policy_overrides_and_errors(tmp_path):
    assert POLICY.promise_seconds("CN-AU", "express") == 144 * HOUR
    assert POLICY.promise_seconds("DE-US", "express") == 120 * HOUR
    assert POLICY.stage_target("US-MX", "linehaul", "economy") == 48 * HOUR     # corridor override
    assert POLICY.stage_target("CN-AU", "linehaul", "standard") == 96 * HOUR
    assert POLICY.stage_target("CN-AU", "linehaul", "economy") == 336 * HOUR    # level target
    assert POLICY.stage_target("CN-AU", "customs", "express") == 24 * HOUR
    assert POLICY.stage_target("CN-AU", "customs", "unknown") == 48 * HOUR      # default
    bad = tmp_path / "p.toml"
    bad.write_text("[promise]\nexpress = 1\nstandard = 2\neconomy = 3\n[stage_targets]\nwarehouse = 4\n")
    with pytest.raises(PolicyError, match="unknown key 'warehouse'"):
        SlaPolicy.load(bad)
    with pytest.raises(PolicyError, match="does not exist"):
        SlaPolicy.load(tmp_path / "missing.toml")


def test_ended_shipments_are_compacted_and_expire_after_the_retention():
    eng = run(journey("S1", "O1", promised_h=200, hold=True) + journey("S2", "O2", delivered=None))
    ended, open_ = eng.shipments["S1"], eng.shipments["S2"]
    assert [e[2] for e in ended["ev"]] == ["order_placed", "label_created", "picked_up",
                                            "departed_origin", "arrived_destination",
                                            "held_for_inspection", "released", "delivered"]
    assert "declaration_lodged" in [e[2] for e in open_["ev"]]        # open: kept whole
    assert timeline.expires_at(ended, 10 * HOUR) == T0_EPOCH + 140 * HOUR
    assert timeline.expires_at(open_, 10 * HOUR) is None


def test_a_redelivered_link_or_order_event_forwards_again():
    """After a crash the order state may be saved while its forwards were lost: resend them."""
    from streams.domain import orders as order_side
    placed = order("O1", 0.0)
    res = order_side.apply_order_event(None, placed)
    res = order_side.apply_link(res.state, "O1", "S1")
    assert res.forwards == [("S1", placed)] and not res.duplicate
    again = order_side.apply_link(res.state, "O1", "S1")
    assert again.duplicate and again.forwards == [("S1", placed)]
    again = order_side.apply_order_event(again.state, placed)
    assert again.duplicate and again.forwards == [("S1", placed)]
    assert again.state["shipments"] == ["S1"] and len(again.state["events"]) == 1

