"""The live view of `corridor demo` (streams/tools/live_view.py), pure: a hand-made /metrics text
in, the rows, the alerts that would fire and the text a person reads out; and its thresholds
against the alert rules they copy (deploy/prometheus/rules.yml)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import yaml
from rich.console import Console

from streams.tools import live_view
from streams.tools.live_view import Alert, Row

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"

# One worker's scrape: the table-derived series carry `partition` (summed by the view), the gauges
# do not. CN-AU: 27 of 31 on time over two partitions and two service levels.
METRICS = """\
# HELP corridor_shipments_delivered_total Shipments delivered.
# TYPE corridor_shipments_delivered_total counter
corridor_shipments_delivered_total{corridor="CN-AU",partition="0",service_level="express",on_time="true"} 20.0
corridor_shipments_delivered_total{corridor="CN-AU",partition="1",service_level="express",on_time="true"} 7.0
corridor_shipments_delivered_total{corridor="CN-AU",partition="1",service_level="economy",on_time="false"} 4.0
corridor_shipments_delivered_total{corridor="CN-US",partition="2",service_level="standard",on_time="true"} 26.0
corridor_shipments_delivered_total{corridor="CN-US",partition="3",service_level="standard",on_time="false"} 4.0
corridor_shipments_delivered_total{corridor="DE-US",partition="0",service_level="express",on_time="true"} 26.0
corridor_shipments_delivered_total{corridor="DE-US",partition="0",service_level="express",on_time="false"} 3.0
corridor_shipments_delivered_total{corridor="US-MX",partition="1",service_level="express",on_time="true"} 27.0
corridor_shipments_delivered_total{corridor="US-MX",partition="2",service_level="express",on_time="false"} 3.0
# HELP corridor_shipment_exceptions_total Shipment exceptions.
# TYPE corridor_shipment_exceptions_total counter
corridor_shipment_exceptions_total{corridor="CN-AU",partition="0",type="customs_hold"} 3.0
# HELP corridor_shipments_in_stage Open shipments now in each stage.
# TYPE corridor_shipments_in_stage gauge
corridor_shipments_in_stage{corridor="CN-AU",stage="linehaul"} 40.0
corridor_shipments_in_stage{corridor="CN-AU",stage="customs"} 6.0
corridor_shipments_in_stage{corridor="CN-US",stage="linehaul"} 4.0
corridor_shipments_in_stage{corridor="CN-US",stage="last_mile"} 9.0
corridor_shipments_in_stage{corridor="DE-US",stage="customs"} 5.0
corridor_shipments_in_stage{corridor="US-MX",stage="origin"} 2.0
corridor_shipments_in_stage{corridor="US-MX",stage="last_mile"} 1.0
corridor_shipments_in_stage{corridor="unknown",stage="fulfilment"} 3.0
# HELP corridor_shipments_overdue Open shipments past their promised delivery time.
# TYPE corridor_shipments_overdue gauge
corridor_shipments_overdue{corridor="CN-AU",service_level="express"} 30.0
corridor_shipments_overdue{corridor="CN-AU",service_level="economy"} 25.0
corridor_shipments_overdue{corridor="CN-US",service_level="standard"} 12.0
corridor_shipments_overdue{corridor="DE-US",service_level="express"} 50.0
corridor_shipments_overdue{corridor="US-MX",service_level="express"} 9.0
# HELP corridor_stage_excess_seconds Total time beyond the stage target.
# TYPE corridor_stage_excess_seconds gauge
corridor_stage_excess_seconds{corridor="CN-AU",stage="linehaul"} 100000.0
corridor_stage_excess_seconds{corridor="CN-AU",stage="customs"} 300000.0
corridor_stage_excess_seconds{corridor="CN-US",stage="linehaul"} 400000.0
corridor_stage_excess_seconds{corridor="CN-US",stage="last_mile"} 0.0
corridor_stage_excess_seconds{corridor="DE-US",stage="customs"} 216000.0
corridor_stage_excess_seconds{corridor="US-MX",stage="origin"} 1000.0
corridor_stage_excess_seconds{corridor="US-MX",stage="last_mile"} 1000.0
corridor_stage_excess_seconds{corridor="unknown",stage="fulfilment"} 0.0
# HELP corridor_bottleneck_stage 1 on the bottleneck stage.
# TYPE corridor_bottleneck_stage gauge
corridor_bottleneck_stage{corridor="CN-AU",stage="customs"} 1.0
# HELP corridor_stream_time_seconds The stream's event-time clock.
# TYPE corridor_stream_time_seconds gauge
corridor_stream_time_seconds 1.7940096e+09
# HELP corridor_consumer_lag Messages not yet committed.
# TYPE corridor_consumer_lag gauge
corridor_consumer_lag{partition="0",topic="shipments"} 6000.0
corridor_consumer_lag{partition="1",topic="shipments"} 5000.0
corridor_consumer_lag{partition="0",topic="orders"} 10000.0
# HELP corridor_partitions_assigned Input partitions this worker owns.
# TYPE corridor_partitions_assigned gauge
corridor_partitions_assigned 3.0
# HELP corridor_partitions_configured Partitions of every input topic.
# TYPE corridor_partitions_configured gauge
corridor_partitions_configured 4.0
# HELP corridor_events_consumed_total Input messages consumed.
# TYPE corridor_events_consumed_total counter
corridor_events_consumed_total{topic="orders"} 1200.0
corridor_events_consumed_total{topic="shipments"} 3400.0
corridor_events_consumed_total{topic="customs-events"} 1000.0
# HELP corridor_shipments_pending_final Ended shipments whose figures are not final yet.
# TYPE corridor_shipments_pending_final gauge
corridor_shipments_pending_final{partition="0"} 2.0
corridor_shipments_pending_final{partition="3"} 5.0
# HELP corridor_worker_ready 1 when the worker is ready.
# TYPE corridor_worker_ready gauge
corridor_worker_ready 1.0
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.5e+08
"""

#: What the view saw an hour ago: CN-US 1 overdue (now 12: +11), DE-US 45 (now 50: +5).
EARLIER = {"CN-US": 1, "DE-US": 45}
WALL = 1794096000.0          # 2026-11-08 00:00 UTC; the stream clock is 1 day behind


def test_parse_sums_every_series_over_its_partition_label():
    snap = live_view.parse(METRICS)
    assert snap.delivered == {"CN-AU": (27, 4), "CN-US": (26, 4), "DE-US": (26, 3), "US-MX": (27, 3)}
    assert snap.overdue == {"CN-AU": 55, "CN-US": 12, "DE-US": 50, "US-MX": 9}
    assert snap.open("CN-AU") == 46 and snap.open("unknown") == 3 and snap.open("DE-US") == 5
    assert snap.lag == {"shipments": 11000, "orders": 10000}
    assert (snap.partitions_configured, snap.partitions_assigned) == (4, 3)
    assert snap.consumed == 5600 and snap.pending_final == 7 and snap.ready == 1
    assert snap.clock == 1794009600.0
    assert snap.memory_bytes == 150e6 and snap.memory_limit_bytes is None


def test_bottleneck_is_the_largest_excess_above_zero_ties_to_the_later_stage():
    snap = live_view.parse(METRICS)
    assert snap.bottlenecks() == {"CN-AU": "customs", "CN-US": "linehaul", "DE-US": "customs",
                                  "US-MX": "last_mile"}       # unknown: all 0, no bottleneck


def test_rows_exact_per_corridor_unknown_last():
    frame = live_view.make_frame(live_view.parse(METRICS), wall=WALL, overdue_earlier=EARLIER)
    assert [r.cells() for r in frame.rows] == [
        ("CN-AU", "87.0 %", "31", "46", "55", "customs",
         "CorridorOnTimeRateLow CorridorOverdueBacklog CorridorStageBottleneck"),
        ("CN-US", "86.6 %", "30", "13", "12", "linehaul", "CorridorOnTimeRateLow CorridorOverdueBacklog"),
        ("DE-US", "89.6 %", "29", "5", "50", "customs", "-"),
        ("US-MX", "90.0 %", "30", "3", "9", "last_mile", "-"),
        ("unknown", "-", "0", "3", "0", "-", "-"),
    ]
    assert frame.rows[0] == Row("CN-AU", 27, 31, 46, 55, "customs",
                                ("CorridorOnTimeRateLow", "CorridorOverdueBacklog", "CorridorStageBottleneck"))


def test_which_alerts_would_fire_and_which_not_at_their_boundaries():
    alerts = live_view.would_fire(live_view.parse(METRICS), overdue_earlier=EARLIER)
    assert alerts == [
        # 27/31 < 90 % over >= 30 deliveries
        Alert("CorridorOnTimeRateLow", "CN-AU", "87.0 % of 31 deliveries on time (< 90% of >= 30)"),
        # 55 > 50
        Alert("CorridorOverdueBacklog", "CN-AU", "55 open past their promise (> 50)"),
        # customs: 300000 s / 6 = 50000 s > 43200 s, with 6 >= 5 shipments
        Alert("CorridorStageBottleneck", "CN-AU", "customs: 6 open, 13.9 h beyond target on average "
                                                  "(> 12.0 h, >= 5)"),
        # 26/30 with exactly 30 deliveries
        Alert("CorridorOnTimeRateLow", "CN-US", "86.6 % of 30 deliveries on time (< 90% of >= 30)"),
        # 12 >= 10 and +11 >= 10 within the hour
        Alert("CorridorOverdueBacklog", "CN-US", "12 open past their promise, +11 within the hour "
                                                 "(>= 10, up >= 10)"),
        # CN-US linehaul: 100000 s on average but 4 < 5 shipments: no bottleneck alert.
        # DE-US: 26/29 = 89.7 % but 29 < 30 deliveries; overdue exactly 50 (not > 50), +5;
        #        customs exactly 43200 s on average (not >). US-MX: 27/30 = 90 % exactly; 9 overdue.
        Alert("CorridorConsumerLag", "shipments", "11000 messages not processed yet (> 10000)"),
        # orders: exactly 10000, not > 10000
        Alert("CorridorPartitionsUnassigned", "", "1 of 4 partitions owned by no worker"),
    ]


def test_overdue_growth_needs_an_earlier_value():
    alerts = live_view.would_fire(live_view.parse(METRICS), overdue_earlier=None)
    assert [(a.name, a.subject) for a in alerts if a.name == "CorridorOverdueBacklog"] == [
        ("CorridorOverdueBacklog", "CN-AU")]


def test_worker_alerts_down_not_ready_and_memory():
    assert live_view.would_fire(None, worker_up=False) == [
        Alert("CorridorWorkerDown", "", "the worker does not answer /metrics")]
    text = ("corridor_worker_ready 0\nprocess_resident_memory_bytes 9.1e8\n"
            "corridor_memory_limit_bytes 1e9\ncorridor_partitions_assigned 4\n"
            "corridor_partitions_configured 4\n")
    assert live_view.would_fire(live_view.parse(text)) == [
        Alert("CorridorWorkerNotReady", "", "the worker is not ready (/health answers 503)"),
        Alert("CorridorMemoryNearLimit", "", "resident memory is 91% of the limit (> 90%)")]
    quiet = text.replace("corridor_worker_ready 0", "corridor_worker_ready 1").replace("9.1e8", "9e8")
    assert live_view.would_fire(live_view.parse(quiet)) == []      # 90 % is not > 90 %
    assert live_view.would_fire(live_view.parse("")) == []


def test_percent_rounds_down_so_that_a_rate_below_the_threshold_never_shows_as_it():
    assert live_view.percent(8999, 10000) == "89.9 %"
    assert live_view.percent(2, 3) == "66.6 %"
    assert live_view.percent(30, 30) == "100.0 %"
    assert live_view.percent(0, 7) == "0.0 %"
    assert live_view.percent(0, 0) == "-"


def test_history_gives_the_oldest_overdue_within_the_hour():
    h = live_view.History()
    snap = live_view.parse
    assert h.add(0.0, snap('corridor_shipments_overdue{corridor="A",service_level="x"} 1\n')) == {"A": 1}
    assert h.add(1800.0, snap('corridor_shipments_overdue{corridor="A",service_level="x"} 5\n')) == {"A": 1}
    assert h.add(3700.0, snap('corridor_shipments_overdue{corridor="A",service_level="x"} 9\n')) == {"A": 5}


LINKS = (("metrics", "http://127.0.0.1:6066/metrics"), ("worker log", "/tmp/demo/worker.log"))


def test_plain_text_frame_exact():
    frame = live_view.make_frame(live_view.parse(METRICS), wall=WALL, overdue_earlier=EARLIER,
                                 status="running", links=LINKS)
    text = live_view.plain(frame)
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "corridor demo: running"
    assert lines[1].startswith("stream clock: 2026-11-07 00:00 UTC (1.0 days behind) | events 5,600 | "
                               "lag 21,000 | not final yet 7 | ")
    assert lines[3:9] == [
        "corridor  on time  delivered  open  overdue  bottleneck  would fire",
        "CN-AU      87.0 %         31    46       55  customs     CorridorOnTimeRateLow "
        "CorridorOverdueBacklog CorridorStageBottleneck",
        "CN-US      86.6 %         30    13       12  linehaul    CorridorOnTimeRateLow CorridorOverdueBacklog",
        "DE-US      89.6 %         29     5       50  customs     -",
        "US-MX      90.0 %         30     3        9  last_mile   -",
        "unknown         -          0     3        0  -           -",
    ]
    assert lines[10] == f"{live_view.ALERTS_TITLE}:"
    assert lines[11] == "  CorridorOnTimeRateLow  CN-AU: 87.0 % of 31 deliveries on time (< 90% of >= 30)"
    assert lines[-2:] == ["metrics     http://127.0.0.1:6066/metrics", "worker log  /tmp/demo/worker.log"]


def test_plain_text_before_any_figure_and_before_any_delivery():
    empty = live_view.plain(live_view.make_frame(None, wall=WALL, status="waiting for the worker (3 s)"))
    assert empty.splitlines()[:2] == ["corridor demo: waiting for the worker (3 s)",
                                      "stream clock: no events yet | " + empty.splitlines()[1][-8:]]
    assert live_view.NO_ROWS in empty and live_view.NO_DELIVERIES not in empty
    assert "alerts: none would fire now" in empty
    text = 'corridor_shipments_in_stage{corridor="CN-AU",stage="origin"} 2\n'
    assert live_view.NO_DELIVERIES in live_view.plain(live_view.make_frame(live_view.parse(text), wall=WALL))


def test_rich_rendering_shows_the_same_cells():
    frame = live_view.make_frame(live_view.parse(METRICS), wall=WALL, overdue_earlier=EARLIER,
                                 status="running", links=LINKS)
    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    console.print(live_view.render(frame))
    shown = [re.split(r"\s{2,}", line.strip()) for line in console.export_text().splitlines()]
    assert ["corridor", "on time", "delivered", "open", "overdue", "bottleneck", "would fire"] in shown
    for row in frame.rows:
        assert list(row.cells()) in shown
    assert ["worker log", "/tmp/demo/worker.log"] in shown
    assert ["CorridorPartitionsUnassigned", "1 of 4 partitions owned by no worker"] in shown


# ---- the thresholds are the rules' ----------------------------------------------------------------

COMPARISON = re.compile(r"(\S+)\s*(==|!=|>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)(?![\w.:\[])")


def comparisons(expr: str) -> list[tuple[str, float]]:
    """("<term> <operator>", number) for each comparison with a number in a PromQL expression; the
    term is the token before the operator, without the parentheses that open or close around it."""
    out = []
    for term, op, number in COMPARISON.findall(expr):
        if term.startswith("(") and term.endswith(")"):
            term = term[1:-1]
        while term.startswith("(") and term.count("(") > term.count(")"):
            term = term[1:]
        while term.endswith(")") and term.count(")") > term.count("("):
            term = term[:-1]
        out.append((f"{term} {op}", float(number)))
    return sorted(out)


def alert_rules() -> dict[str, str]:
    rules = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_the_comparisons_read_from_an_expression():
    assert comparisons('up{job="w"} == 0') == [('up{job="w"} ==', 0.0)]
    assert comparisons("a:b > 50\nor\n(a:b >= 10 and delta(a:b[1h]) >= 10)") == [
        ("a:b >", 50.0), ("a:b >=", 10.0), ("delta(a:b[1h]) >=", 10.0)]
    assert comparisons('max by (n) (x)\n  - sum by (n) (y) > 0') == [("y >", 0.0)]
    assert comparisons('sum by (t) (rate(z{type=~"a|b"}[1h]))') == []


def test_the_view_thresholds_are_the_alert_rules_thresholds():
    rules = alert_rules()
    for name, expected in live_view.RULE_THRESHOLDS.items():
        assert name in rules, f"{name} is no alert of {RULES}"
        assert comparisons(rules[name]) == sorted((k, float(v)) for k, v in expected.items()), name


def test_every_alert_rule_is_evaluated_by_the_view_or_says_why_not():
    rules = set(alert_rules())
    evaluated, skipped = set(live_view.RULE_THRESHOLDS), set(live_view.NOT_EVALUATED)
    assert evaluated.isdisjoint(skipped)
    assert rules - evaluated - skipped == set(), (
        "new alerts in rules.yml: evaluate them in streams/tools/live_view.py (RULE_THRESHOLDS, "
        "would_fire) or say why not (NOT_EVALUATED)")
    assert skipped - rules == set(), "NOT_EVALUATED names alerts that rules.yml no longer has"


def test_the_customs_alert_per_corridor_and_regime_at_its_boundaries():
    def text(rows):
        out = []
        for corr, regime, cleared, within in rows:
            labels = f'corridor="{corr}",partition="0",destination="AU",regime="{regime}",value_class="formal"'
            out.append(f"corridor_customs_clearance_seconds_count{{{labels}}} {cleared}")
            out.append(f'corridor_customs_cleared_within_target_total{{{labels},days="calendar"}} {within}')
            out.append(f'corridor_customs_cleared_within_target_total{{{labels},days="business"}} {cleared}')
        return "\n".join(out) + "\n"
    snap = live_view.parse(text([("CN-AU", "au-de-minimis-removed", 40, 31),   # 77.5 %: fires
                                 ("CN-AU", "au-gst-low-value", 40, 32),        # 80 %: not below
                                 ("KR-AU", "au-de-minimis-removed", 19, 0)]))  # below 20 parcels
    assert snap.customs == {("CN-AU", "au-de-minimis-removed"): (40, 31),
                            ("CN-AU", "au-gst-low-value"): (40, 32),
                            ("KR-AU", "au-de-minimis-removed"): (19, 0)}
    assert live_view.would_fire(snap) == [live_view.Alert(
        "CorridorCustomsClearanceSlow", "CN-AU",
        "au-de-minimis-removed: 77.5 % of 40 parcels cleared customs within target (< 80% of >= 20)")]
