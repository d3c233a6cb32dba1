"""The join step (streams.domain.join), the totals rules (streams.domain.totals), the straggler
rule (watermark.too_old) and the join's internal records (streams.contract.internal)."""
from __future__ import annotations

from builders import HOUR, T0_EPOCH, customs, order, ship
from streams.contract import deadletter
from streams.contract.internal import forwarded_value, link_value, read_forwarded, read_link
from streams.domain import join, totals, watermark as wm
from streams.domain.aggregate import new_totals
from streams.domain.policy import SlaPolicy

POLICY = SlaPolicy.load()


def test_a_label_sends_one_link_per_order_stamped_with_the_label_time():
    label = ship("S1", "label_created", 5, order_ids=["O1", "O2"])
    step = join.shipment_step(None, "shipments", label, POLICY)
    assert step.links == [join.Link("O1", "S1", T0_EPOCH + 5 * HOUR),
                          join.Link("O2", "S1", T0_EPOCH + 5 * HOUR)]
    assert not step.applied.duplicate


def test_a_label_read_after_later_scans_is_still_stamped_with_its_own_time():
    state = join.shipment_step(None, "customs", customs("S1", "released", 300), POLICY).applied.state
    step = join.shipment_step(state, "shipments", ship("S1", "label_created", 60, order_ids=["O1"]),
                              POLICY)
    assert step.applied.state["last"] == T0_EPOCH + 300 * HOUR
    assert step.links == [join.Link("O1", "S1", T0_EPOCH + 60 * HOUR)]


def test_a_redelivered_label_sends_its_links_again():
    label = ship("S1", "label_created", 5, order_ids=["O1"])
    first = join.shipment_step(None, "shipments", label, POLICY)
    again = join.shipment_step(first.applied.state, "shipments", label, POLICY)
    assert again.applied.duplicate
    assert again.links == first.links


def test_order_events_are_forwarded_to_every_linked_shipment_and_a_link_brings_them():
    placed = order("O1", 0)
    step = join.order_step(None, placed)
    assert step.forwards == []                              # no shipment knows it yet
    linked = join.link_step(step.applied.state, join.Link("O1", "S1", T0_EPOCH + HOUR))
    assert linked.forwards == [("S1", {**placed, "shipment_id": "S1"})]
    cancel = order("O1", 2, etype="order_cancelled")
    assert join.order_step(linked.applied.state, cancel).forwards == [
        ("S1", {**cancel, "shipment_id": "S1"})]
    again = join.link_step(linked.applied.state, join.Link("O1", "S1", T0_EPOCH + HOUR))
    assert again.applied.duplicate                  # every event so far, for the shipment to dedupe
    assert again.forwards == [("S1", {**placed, "shipment_id": "S1"}),
                              ("S1", {**cancel, "shipment_id": "S1"})]


def test_totals_count_each_numbered_settlement_once():
    obs = [("exception", "CN-AU", "customs_hold"), ("exception", "CN-AU", "delivery_failed")]
    record = new_totals()
    assert totals.count_once(record, "#fin", 3, obs)
    assert not totals.count_once(record, "#fin", 3, obs)          # the same settlement again
    assert not totals.count_once(record, "#fin", 2, obs)          # an older one
    assert record["exceptions"] == {"customs_hold": 1, "delivery_failed": 1}
    assert totals.counted(record, "#fin") == 3
    assert totals.key(2, "CN-AU") == "2|CN-AU" and totals.split_key("2|CN-AU") == (2, "CN-AU")


def test_missing_finds_what_the_states_remember_and_the_totals_lack():
    states = [{"lobs": [["#fin", 4, [("exception", "CN-AU", "customs_hold")]],
                        ["#fin", 6, [("exception", "DE-US", "delivery_failed"),
                                     ("exception", "CN-AU", "delivery_failed")]]]},
              {"lobs": [["orders", 9, [("exception", "CN-AU", "lost")]]]}]   # another source
    missing, top = totals.missing(states, {"CN-AU": 4, "DE-US": 7}, "#fin")
    assert missing == {6: [("exception", "CN-AU", "delivery_failed")]}
    assert top == 7


def test_by_corridor_groups_observations():
    obs = [("exception", "CN-AU", "a"), ("exception", "DE-US", "b"), ("exception", "CN-AU", "c")]
    assert totals.by_corridor(obs) == {"CN-AU": [obs[0], obs[2]], "DE-US": [obs[1]]}


def test_a_straggler_is_too_old_only_beyond_the_retention_of_its_own_topic():
    assert not wm.too_old(100.0, None, 50.0)
    assert not wm.too_old(100.0, 150.0, 50.0)
    assert wm.too_old(99.0, 150.0, 50.0)


def test_internal_records_round_trip():
    link = join.Link("O1", "S1", 1740790800.0)
    assert read_link(link_value(link)) == link
    assert read_link(b'{"order_id": "O1", "shipment_id": "S1"}') == join.Link("O1", "S1", None)
    ev = {**order("O1", 0), "shipment_id": "S1"}
    assert read_forwarded(forwarded_value(ev)) == ev


def test_dead_letter_headers_keep_the_records_own_and_say_why_and_where():
    from datetime import datetime, timezone
    at = datetime(2026, 12, 2, 19, 0, 0, 123456, tzinfo=timezone.utc)
    h = deadletter.headers([("trace", b"1")], "schema", "x" * 2000, "orders", 3, 42,
                           extra=[("corridor.where", b"row 2")], now=at)
    assert h[0] == ("trace", b"1")
    assert dict(h) == {"trace": b"1", "corridor.reason": b"schema",
                       "corridor.detail": b"x" * deadletter.MAX_DETAIL_BYTES,
                       "corridor.where": b"row 2", "corridor.source.topic": b"orders",
                       "corridor.source.partition": b"3", "corridor.source.offset": b"42",
                       "corridor.rejected_at": b"2026-12-02T19:00:00.123Z"}


def test_corridor_figures_shared_by_the_view_and_the_report():
    from streams.domain import figures
    from streams.domain.aggregate import OpenGauges
    tot = new_totals()
    tot["delivered"] = {"standard|true": 3, "standard|false": 1, "economy|false": 2}
    assert figures.delivered(tot) == {"on_time": 3, "late": 3, "by_service_level": {
        "economy": {"on_time": 0, "late": 2}, "standard": {"on_time": 3, "late": 1}}}
    assert figures.on_time_rate(3, 3) == 0.5 and figures.on_time_rate(0, 0) is None
    g = OpenGauges(in_stage={("CN-AU", "customs"): 2, ("CN-AU", "origin"): 1, ("DE-US", "origin"): 4},
                   overdue={("CN-AU", "standard"): 1}, excess={("CN-AU", "customs"): 7200.0,
                                                               ("CN-AU", "origin"): 0.0})
    assert figures.open_figures(g, "CN-AU") == {
        "open": 3, "in_stage": {"origin": 1, "customs": 2}, "overdue": {"standard": 1},
        "excess_seconds": {"customs": 7200.0, "origin": 0.0}}
