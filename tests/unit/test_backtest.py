"""`corridor backtest` (issue 16): predictions in event time without look-ahead, the scored set,
the predictions file, and its command-line errors."""
import argparse
import csv

import pytest

from builders import HOUR, T0_EPOCH, journey
from streams.cli import main
from streams.domain.engine import Engine
from streams.domain.policy import SlaPolicy
from streams.tools import backtest

POLICY = SlaPolicy.load()


def replayed(histories):
    engine = Engine(POLICY)
    for history in histories:
        for kind, event in history:
            engine.feed(kind, event)
    engine.finish()
    return backtest.replay(engine.shipments.values(), POLICY)


def test_a_prediction_sees_only_deliveries_strictly_before_it():
    # A is delivered at 130 h, the moment B is handed over; C is handed over after it
    bt = replayed([journey("A", "OA"),
                   journey("B", "OB", placed=120.0, picked=130.0, departed=None, arrived=None,
                           released=None, delivered=200.0),
                   journey("C", "OC", placed=120.0, picked=131.0, departed=None, arrived=None,
                           released=None, delivered=None)])
    rows = {(r.shipment, r.milestone): r for r in bt.rows}
    assert rows[("B", "picked_up")].earlier == 0 and rows[("C", "picked_up")].earlier == 1
    # nothing delivered before B's hand-over (A's delivery at the same second is not known yet)
    assert rows[("B", "picked_up")].p_late == 0.0
    assert rows[("B", "picked_up")].p10 is None
    # C sees A: 120 h from hand-over to delivery against C's slack (CN-AU standard promise 288 h
    # after 120 h, from 131 h: 277 h): not late (120 h is in bin 1 + int(4 * log2 120) = 28, the
    # slack in bin 33), and the range is A's one sample, spread uniformly in log time over its
    # bin [2^6.75 h, 2^7 h): the median is 2^6.875 h = 117.4 h
    c = rows[("C", "picked_up")]
    assert c.p_late == 0.0
    assert c.p50 == pytest.approx(T0_EPOCH + 131 * HOUR + 2 ** 6.875 * HOUR)
    # every milestone of A was predicted, in journey order
    assert [r.milestone for r in bt.rows if r.shipment == "A"] == [
        "order_placed", "picked_up", "departed_origin", "arrived_destination", "released"]
    assert bt.scored() == []                      # fewer than MIN_EARLIER deliveries before any


def test_the_predictions_file_has_a_row_per_shipment_and_milestone(tmp_path):
    bt = replayed([journey("A", "OA", promised_h=100.0)])
    path = tmp_path / "p.csv"
    backtest.write_predictions(bt, str(path))
    rows = list(csv.DictReader(path.open()))
    assert [r["milestone"] for r in rows] == ["order_placed", "picked_up", "departed_origin",
                                              "arrived_destination", "released"]
    assert rows[1]["predicted_at"] == "2025-03-01T10:00:00Z"
    assert rows[1]["promised_delivery_at"] == "2025-03-05T04:00:00Z"
    assert rows[1]["delivered_at"] == "2025-03-06T10:00:00Z" and rows[1]["late"] == "true"
    assert rows[1]["p_late_baseline"] == "0.000000" and rows[0]["p_late_baseline"] == ""


def test_lead_time_buckets():
    assert [backtest.lead_bucket(d) for d in (0.5, 2, 3, 10, 11)] == [
        "<= 2 d", "<= 2 d", "2-5 d", "5-10 d", "> 10 d"]


def test_a_bad_threshold_is_one_line_and_exit_2(capsys, tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("")
    assert main(["backtest", str(log), "--threshold", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "corridor backtest: --threshold must be in (0, 1], not 1.5"
    assert main(["backtest", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
