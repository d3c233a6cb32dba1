"""Issue 17 end to end, every server real and on loopback: the simulator's de-minimis-change
scenario through the embedded broker, one `corridor worker` that knows the scenario's import
regime (CORRIDOR_IMPORT_REGIMES), and Prometheus (1 s scrape and evaluation, fresh TSDB) with the
rules of deploy/prometheus/rules.yml, only the `for:` of CorridorCustomsClearanceSlow cut to 2 s.

1,500 simulated shipments over ~10 days of event time; AU drops its low-value threshold at
midnight UTC ten days in. CN-AU parcels that were low value and arrive after it go through formal
entry (4-8x slower, half held); KR-AU parcels under the same new regime clear as before.

- Stream equals batch: every corridor series of the worker (customs ones included: clearance
  histogram, cleared within target, arrivals, holds..., waiting, delivered excluding customs)
  equals `corridor report`'s over the same events.
- The figures jump: clearance time and holds of CN-AU parcels under the new regime against the
  old one, read from the worker.
- CorridorCustomsClearanceSlow fires in Prometheus for exactly (CN-AU, au-de-minimis-removed):
  no other corridor or regime, while the recorded ratio of the others is above the floor.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from builders import T0_EPOCH  # noqa: E402
from harness import (Worker, free_port, merge_partitions, poll, produce, sample,  # noqa: E402
                     unique_app_id, wait_final)
from live import fast_rules, one_worker_config, prometheus  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

START = T0_EPOCH - 200 * 86400              # 2024-08-13: the whole history is in the past
CUT = START + 10 * 86400                    # the change: midnight UTC after this
SHIPMENTS = 1500
ALERT = "CorridorCustomsClearanceSlow"
NEW, OLD = "au-de-minimis-removed", "au-gst-low-value"


def simulated():
    from streams.tools.simulate import histories
    return [(e.topic, e.value) for e in histories(31, SHIPMENTS, scenario="de-minimis-change",
                                                  start=START, arrival_interval=600.0,
                                                  scenario_start=CUT)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from streams.broker.embedded import EmbeddedBroker
    from streams.domain.policy import SlaPolicy
    from streams.tools import report, simulate

    tmp = tmp_path_factory.mktemp("customs-alert")
    regimes = tmp / "regimes.toml"
    regimes.write_text(simulate.scenario_regimes("de-minimis-change", CUT))
    events = simulated()
    expected = report.compute(iter(events), SlaPolicy.load(None, regimes=regimes))
    with contextlib.ExitStack() as cleanup:
        broker = EmbeddedBroker(port=0).start()
        cleanup.callback(broker.stop)
        worker = Worker(broker.url, unique_app_id("corridor-customs"), tmp,
                        env={"CORRIDOR_IMPORT_REGIMES": str(regimes),
                             "CORRIDOR_RETENTION_SECONDS": str(10 * 365 * 86400)})
        cleanup.callback(worker.stop)
        prom_port = free_port()
        prom = prometheus(tmp, one_worker_config(fast_rules(tmp / "rules.yml", alerts={ALERT}),
                                                 worker.port), prom_port)
        cleanup.callback(prom.stop)
        prom.start()
        worker.start(ready_timeout=90)
        poll(prom.ready, 30, 0.1, "prometheus ready")
        poll(lambda: (prom.get_json("/api/v1/query", query='up{job="corridor-workers"}') or {})
             .get("data", {}).get("result"), 30, 0.2, "prometheus scrapes the worker")
        # In eight parts, each consumed before the next: Prometheus scrapes the counters growing
        # (increase() does not count a series' first value), as it would a live stream.
        sent = 0
        step = len(events) // 8 + 1
        for i in range(0, len(events), step):
            sent += produce(broker.bootstrap, events[i:i + step])
            poll(lambda: sum(v for (n, _), v in worker.metrics().items()
                             if n == "corridor_events_consumed_total") >= sent,
                 120, 0.5, f"worker consumed {sent} events")
        wait_final([worker], timeout=90)
        yield {"worker": worker, "prometheus": prom, "expected": expected, "events": events}


def logs(stack) -> str:
    return "\n".join(f"--- {name} log ---\n{s.log_tail()}" for name, s in
                     (("worker", stack["worker"]), ("prometheus", stack["prometheus"])))


def test_the_workers_series_equal_corridor_report(stack):
    from streams.tools import report
    want = {(m["name"], frozenset(m["labels"].items())): m["value"]
            for m in report.metric_samples(stack["expected"])}
    names = {n for n, _ in want}
    assert {"corridor_customs_clearance_seconds_bucket", "corridor_customs_cleared_within_target_total",
            "corridor_customs_arrivals_total", "corridor_customs_events_total",
            "corridor_shipments_delivered_excluding_customs_total",
            "corridor_import_regime_start_seconds"} <= names

    def worker_series():
        return {k: v for k, v in merge_partitions(stack["worker"].metrics()).items() if k[0] in names}
    try:
        got = poll(lambda: (s := worker_series()) == want and s, 60, 0.5, "worker series = report")
    except AssertionError:
        got = worker_series()
        diff = sorted((k[0], sorted(k[1]), want.get(k), got.get(k))
                      for k in set(want) | set(got) if want.get(k) != got.get(k))
        raise AssertionError(f"{len(diff)} series differ, e.g. {diff[:5]}\n{logs(stack)}") from None
    assert len(got) > 500


def test_clearance_time_and_holds_of_cn_au_parcels_jump_under_the_new_regime(stack):
    m = stack["worker"].metrics()

    def total(name, regime, **labels):
        return sum(v for (n, ls), v in m.items() if n == name and dict(ls).get("corridor") == "CN-AU"
                   and dict(ls).get("regime") == regime
                   and all(dict(ls).get(k) == x for k, x in labels.items()))
    figures = {}
    for regime in (OLD, NEW):
        cleared = total("corridor_customs_clearance_seconds_count", regime)
        arrivals = total("corridor_customs_arrivals_total", regime)
        figures[regime] = {
            "cleared": cleared,
            "mean_hours": total("corridor_customs_clearance_seconds_sum", regime) / cleared / 3600,
            "holds_per_1000": 1000 * total("corridor_customs_events_total", regime, type="hold") / arrivals,
            "within": total("corridor_customs_cleared_within_target_total", regime, days="calendar") / cleared}
    old, new = figures[OLD], figures[NEW]
    assert old["cleared"] >= 50 and new["cleared"] >= 100, figures
    assert new["mean_hours"] > 4 * old["mean_hours"], figures
    assert new["holds_per_1000"] > 4 * old["holds_per_1000"], figures
    assert old["within"] >= 0.95 and new["within"] < 0.8, figures
    # under the new regime nothing is low value any more (threshold 0)
    assert sample(m, "corridor_customs_arrivals_total", corridor="CN-AU", destination="AU",
                  regime=NEW, value_class="low_value") is None


def test_the_alert_fires_for_exactly_that_corridor_and_regime(stack):
    prom = stack["prometheus"]

    def firing():
        alerts = (prom.get_json("/api/v1/alerts") or {}).get("data", {}).get("alerts", [])
        return [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]
    try:
        poll(firing, 90, 0.5, f"{ALERT} firing")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{logs(stack)}") from None
    alerts = firing()
    assert [(a["labels"]["corridor"], a["labels"]["regime"]) for a in alerts] == [("CN-AU", NEW)]
    (alert,) = alerts
    assert alert["labels"] == {"alertname": ALERT, "corridor": "CN-AU", "regime": NEW,
                               "severity": "warning"}
    assert alert["annotations"]["summary"].startswith(f"CN-AU ({NEW}): only ")
    assert alert["annotations"]["runbook_url"].endswith("#corridorcustomsclearanceslow")
    assert alert["annotations"]["dashboard_url"].endswith(f"var-corridor=CN-AU&var-regime={NEW}")
    # the others were scraped and evaluated: their ratios are there, above the floor wherever
    # enough parcels were cleared for the alert to judge (its guard: 20 in 6 h)
    def recorded(name):
        result = prom.get_json("/api/v1/query", query=name)["data"]["result"]
        return {(r["metric"]["corridor"], r["metric"]["regime"]): float(r["value"][1]) for r in result}
    ratio = recorded("corridor_regime:customs_cleared_within_target_ratio:rate6h")
    cleared = recorded("corridor_regime:customs_cleared:increase6h")
    assert ratio[("CN-AU", NEW)] < 0.8 and cleared[("CN-AU", NEW)] >= 20
    assert ratio[("CN-AU", OLD)] >= 0.8 and cleared[("CN-AU", OLD)] >= 20
    assert ("KR-AU", NEW) in ratio and len(ratio) >= 8
    judged = {k for k, n in cleared.items() if n >= 20}
    assert len(judged) >= 6, cleared
    assert {k for k in judged if ratio[k] < 0.8} == {("CN-AU", NEW)}, (ratio, cleared)
    # nothing else of this alert is even pending
    pending = [a["labels"] for a in (prom.get_json("/api/v1/alerts") or {})["data"]["alerts"]
               if a["labels"]["alertname"] == ALERT]
    assert pending == [alert["labels"]]
