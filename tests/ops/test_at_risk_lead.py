"""CorridorAtRiskRising comes first: on the simulator's customs-backlog scenario it fires at least a
day of event time before CorridorOnTimeRateLow, both evaluated by promtool with the real
deploy/prometheus/rules.yml (the real expressions, windows and `for:`).

The series are the ones a worker would export, in event time: the scenario (seed 7, a shipment a
minute, CN-AU import customs 5-10x slower from day 14) is fed through the Engine, which runs the
worker's domain code, and every hour of event time the CN-AU delivered counters and at-risk gauges
(risk.score_open with the model of every delivery settled by then) are sampled. They become the
input series of a promtool unit test that expects no alert at every hour; promtool lists the hours
at which each alert did fire, which gives the first firing of each.

Only the traffic to AU is fed (CN-AU and the other AU-bound corridors; the Engine's CN-AU figures
do not depend on other corridors, the model's stage level learns from AU-bound deliveries only),
which keeps the run to about a minute. An hour of event time is one scrape and one rule
evaluation: `for: 30m` holds after two evaluations, so firing times have an hour's resolution.
"""
from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from streams.domain.engine import Engine
from streams.domain.policy import SlaPolicy
from streams.tools.simulate import histories

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
DAY, HOUR = 86400.0, 3600.0
T0 = 1_767_225_600.0                  # 2026-01-01T00:00Z
SCENARIO_DAY = 14                     # customs-backlog from here (shipments arriving in AU after it)
FIRST_DAY, LAST_DAY = 10, 26          # the hours sampled
CORRIDOR = "CN-AU"
ARRIVAL = 30.0                        # seconds between two shipments, all corridors
ALERTS = ("CorridorAtRiskRising", "CorridorOnTimeRateLow")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")


def sample_scenario() -> dict[tuple, list[float]]:
    """{(metric, labels): one value per hour from FIRST_DAY to LAST_DAY} for CN-AU."""
    policy = SlaPolicy.load()
    engine = Engine(policy)
    bound_for_au: set[str] = set()
    cn_au: set[str] = set()
    hours = int((LAST_DAY - FIRST_DAY) * 24) + 1
    series: dict[tuple, list[float]] = {}
    step, index = T0 + FIRST_DAY * DAY, 0

    def sample(at: float, i: int) -> None:
        delivered = (engine.totals.get(CORRIDOR) or {}).get("delivered", {})
        for key, n in delivered.items():
            sl, on_time = key.split("|")
            row = series.setdefault(("corridor_shipments_delivered_total",
                                     (("corridor", CORRIDOR), ("on_time", on_time),
                                      ("service_level", sl))), [0.0] * hours)
            row[i] = float(n)
        risk = engine.at_risk(at, policy.at_risk, cn_au)
        for (corr, sl, stage), n in risk.at_risk.items():
            series.setdefault(("corridor_shipments_at_risk",
                               (("corridor", corr), ("service_level", sl), ("stage", stage))),
                              [0.0] * hours)[i] = float(n)
        series.setdefault(("corridor_shipments_scored", (("corridor", CORRIDOR),)),
                          [0.0] * hours)[i] = float(risk.scored.get(CORRIDOR, 0))

    for event in histories(7, 100_000, scenario="customs-backlog", start=T0, arrival_interval=ARRIVAL,
                           scenario_start=T0 + SCENARIO_DAY * DAY):
        v = event.value
        if event.topic == "orders" and v["buyer_country"] != "AU":
            continue
        if event.topic == "shipments":
            if v.get("destination_country") != "AU":
                continue
            bound_for_au.add(v["shipment_id"])
            if v.get("origin_country") == "CN":
                cn_au.add(v["shipment_id"])
        if event.topic == "customs" and v["shipment_id"] not in bound_for_au:
            continue
        # sample every hour the stream has passed before applying an event beyond it
        while index < hours and event.at > step:
            sample(step, index)
            step, index = step + HOUR, index + 1
        if index >= hours:
            break
        engine.feed(event.topic, v)
    return series


def promtool_test(series: dict, tmp: Path) -> dict[str, list[float]]:
    """Run rules.yml over the series with a promtool unit test expecting no alert at any hour;
    return {alert: the event times (epoch) at which promtool found it firing for CN-AU}."""
    hours = len(next(iter(series.values())))
    doc = {"rule_files": [str(RULES)], "evaluation_interval": "1h", "tests": [{
        "interval": "1h",
        "input_series": [{"series": f'{name}{{job="corridor-workers",instance="w1",'
                                    + ",".join(f'{k}="{v}"' for k, v in labels) + "}",
                          "values": " ".join(f"{v:g}" for v in values)}
                         for (name, labels), values in sorted(series.items())],
        "alert_rule_test": [{"eval_time": f"{h}h", "alertname": a, "exp_alerts": []}
                            for h in range(hours) for a in ALERTS]}]}
    path = tmp / "lead_test.yml"
    path.write_text(yaml.safe_dump(doc, width=1 << 20))
    proc = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    fired: dict[str, list[float]] = {a: [] for a in ALERTS}
    unit = {"d": DAY, "h": HOUR, "m": 60.0, "s": 1.0}
    for name, when in re.findall(r"alertname: (\w+), time: ((?:\d+[dhms])+),", out):
        offset = sum(int(n) * unit[u] for n, u in re.findall(r"(\d+)([dhms])", when))
        fired[name].append(T0 + FIRST_DAY * DAY + offset)
    assert proc.returncode in (0, 1), out[-2000:]
    return fired


@pytest.fixture(scope="module")
def fired(tmp_path_factory):
    return promtool_test(sample_scenario(), tmp_path_factory.mktemp("lead"))


def test_the_at_risk_alert_fires_a_day_before_the_on_time_alert(fired):
    start = T0 + SCENARIO_DAY * DAY
    at_risk = min(fired["CorridorAtRiskRising"], default=None)
    on_time = min((t for t in fired["CorridorOnTimeRateLow"] if t >= start), default=None)
    report = (f"scenario from {iso(start)}; CorridorAtRiskRising first fires at "
              f"{iso(at_risk) if at_risk else 'never'}, CorridorOnTimeRateLow at "
              f"{iso(on_time) if on_time else 'never'} (event time)")
    print(report)
    assert at_risk is not None and on_time is not None, report
    assert at_risk >= start, report                 # quiet before the backlog
    assert on_time - at_risk >= DAY, report
