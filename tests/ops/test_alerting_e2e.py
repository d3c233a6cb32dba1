"""Alerting end to end, every server real and on loopback: the embedded broker, one `corridor worker`,
Prometheus (1 s scrape and evaluation, fresh TSDB) with the rules of deploy/prometheus/rules.yml, and
Alertmanager with deploy/alertmanager/alertmanager.yml.

The worker is fed a customs backlog in one corridor while the others flow (live.customs_backlog;
hours after T0, see tests/builders.journey; the stream clock ends at h200):
  AU1..AU5  CN-AU standard, arrived h80, never released   -> 72 h beyond the 48 h customs target each,
                                                             3 days on average (threshold 12 h, 5
                                                             shipments at least)
  AU0       CN-AU standard, delivered h130                 -> healthy
  DU1..DU3  DE-US express, delivered h200, every stage within target
  UM1..UM3  US-MX express, in linehaul since h180 (target 48 h)
  GD1..GD3  GB-DE standard, in customs since h170 (target 48 h)
CorridorStageBottleneck must reach Alertmanager for CN-AU/customs and for no other corridor.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from harness import Worker, free_port, poll, produce, sample, unique_app_id  # noqa: E402
from live import (ALERTMANAGER_CONFIG, Server, alertmanager, customs_backlog, fast_rules,  # noqa: E402
                  one_worker_config, prometheus)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from streams.broker.embedded import EmbeddedBroker

    tmp = tmp_path_factory.mktemp("alerting")
    with contextlib.ExitStack() as cleanup:
        broker = EmbeddedBroker(port=0).start()
        cleanup.callback(broker.stop)
        worker = Worker(broker.url, unique_app_id("corridor-alerting"), tmp)   # port chosen now
        cleanup.callback(worker.stop)

        am_port = free_port()
        am = alertmanager(tmp, ALERTMANAGER_CONFIG, am_port)
        cleanup.callback(am.stop)
        am.start()

        prom_port = free_port()
        prom = prometheus(tmp, one_worker_config(fast_rules(tmp / "rules.yml"), worker.port, am_port),
                          prom_port)
        cleanup.callback(prom.stop)
        prom.start()

        worker.start(ready_timeout=90)
        poll(am.ready, 30, 0.1, "alertmanager ready")
        poll(prom.ready, 30, 0.1, "prometheus ready")

        events = customs_backlog()
        produce(broker.bootstrap, events)
        expected = {"orders": sum(1 for k, _ in events if k == "orders"),
                    "shipments": sum(1 for k, _ in events if k == "shipments"),
                    "customs-events": sum(1 for k, _ in events if k == "customs")}
        poll(lambda: all(sample(worker.metrics(), "corridor_events_consumed_total", topic=t) == n
                         for t, n in expected.items()), 60, 0.2, "worker consumed every event")
        yield {"worker": worker, "prometheus": prom, "alertmanager": am}


def logs(stack) -> str:
    return "\n".join(f"--- {name} log ---\n{s.log_tail()}" for name, s in stack.items())


def am_alerts(alertmanager: Server, alertname: str) -> list[dict]:
    return alertmanager.get_json("/api/v2/alerts", filter=f'alertname="{alertname}"') or []


def test_customs_backlog_fires_stage_bottleneck_for_cn_au_only(stack):
    am = stack["alertmanager"]

    def cn_au_customs_active():
        return [a for a in am_alerts(am, "CorridorStageBottleneck")
                if a["labels"].get("corridor") == "CN-AU" and a["labels"].get("stage") == "customs"
                and a["status"]["state"] == "active"]
    try:
        alerts = poll(cn_au_customs_active, 60, 0.25, "CorridorStageBottleneck CN-AU/customs active")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{logs(stack)}") from None

    (alert,) = alerts
    assert alert["labels"] == {"alertname": "CorridorStageBottleneck", "corridor": "CN-AU",
                               "stage": "customs", "severity": "warning"}
    # each of the 5 shipments is h200 - h80 - 48 h target = 72 h beyond it
    assert alert["annotations"]["summary"] == ("CN-AU is held up in customs: its open shipments "
                                               "there are 3d 0h 0m 0s beyond the stage target on "
                                               "average")
    assert alert["annotations"]["description"].startswith("The 5 open shipments of corridor CN-AU")
    assert alert["annotations"]["runbook_url"].endswith("deploy/RUNBOOK.md#corridorstagebottleneck")
    assert [r["name"] for r in alert["receivers"]] == ["logistics-ops"]     # a warning: no page

    # The healthy corridors were scraped and evaluated (so "no alert" below is not vacuous) ...
    prom = stack["prometheus"]
    result = prom.get_json("/api/v1/query", query="corridor_stage:excess_seconds:sum")["data"]["result"]
    excess = {(r["metric"]["corridor"], r["metric"]["stage"]): float(r["value"][1]) for r in result}
    assert excess[("CN-AU", "customs")] == 5 * 72 * 3600
    assert {("US-MX", "linehaul"), ("GB-DE", "customs")} <= set(excess)
    assert {k: v for k, v in excess.items() if k != ("CN-AU", "customs")} == {
        k: 0.0 for k in excess if k != ("CN-AU", "customs")}
    result = prom.get_json("/api/v1/query", query="corridor:shipments_open:sum")["data"]["result"]
    assert {r["metric"]["corridor"]: float(r["value"][1]) for r in result} == {
        "CN-AU": 5.0, "US-MX": 3.0, "GB-DE": 3.0}

    # ... and no corridor alert, firing or pending, names any corridor but CN-AU.
    others = [a["labels"] for a in am_alerts(am, "CorridorStageBottleneck")
              if a["labels"] != alert["labels"]]
    assert others == []
    pending_or_firing = prom.get_json("/api/v1/alerts")["data"]["alerts"]
    assert [a["labels"] for a in pending_or_firing
            if a["labels"].get("corridor", "CN-AU") != "CN-AU"] == []
    assert {(a["labels"]["alertname"], a["labels"].get("stage")) for a in pending_or_firing
            if a["labels"].get("corridor") == "CN-AU"} == {("CorridorStageBottleneck", "customs")}
