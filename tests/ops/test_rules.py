"""Prometheus/Alertmanager files under deploy/ pass their own tools, and the worker's live exposition
passes `promtool check metrics`.

- `promtool check rules` / `promtool test rules` on deploy/prometheus/rules.yml and rules_test.yml
  (the alert logic: every alert fires and stays quiet where it should, exact labels and annotations);
- `promtool check config` on deploy/prometheus/prometheus.yml, `amtool check-config` on
  deploy/alertmanager/alertmanager.yml;
- every alert carries severity, summary, description and a runbook_url whose anchor is a section
  of deploy/RUNBOOK.md (the links themselves: tests/ops/test_links.py); corridor alerts keep
  firing through a deploy; Alertmanager routes each alert to its receiver;
- a real broker and a real `corridor worker`: its /metrics lints clean and exports every metric the
  rules read.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from builders import journey  # noqa: E402
from harness import REPO, Worker, poll, produce, sample, series, unique_app_id  # noqa: E402

PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "rules.yml"
RULES_TEST = PROM / "rules_test.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = REPO / "deploy" / "RUNBOOK.md"

#: Alerts about one corridor: warnings for logistics-ops.
CORRIDOR_ALERTS = {"CorridorOnTimeRateLow", "CorridorOverdueBacklog", "CorridorStageBottleneck",
                   "CorridorNoTraffic", "CorridorAtRiskRising", "CorridorCustomsClearanceSlow"}
#: Alerts about the fleet rather than one corridor (their summary names no corridor), labelled
#: team="platform": warnings go to the platform receiver, critical ones page.
FLEET_ALERTS = {"CorridorWorkerDown", "CorridorConsumerLag", "CorridorNoTargets",
                "CorridorPartitionsUnassigned", "CorridorWorkerNotReady",
                "CorridorDeadLetterRatioHigh", "CorridorStreamClockStopped",
                "CorridorRebalanceStorm", "CorridorMemoryNearLimit"}
ALERTS = CORRIDOR_ALERTS | FLEET_ALERTS
#: Not inhibited while the workers are down: often the cause (an OOM kill loop), or about the
#: input rather than the workers.
NOT_INHIBITED = {"CorridorMemoryNearLimit", "CorridorDeadLetterRatioHigh"}


def run(*cmd: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=stdin, capture_output=True, cwd=cwd, timeout=120)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


@pytest.fixture(scope="session")
def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool not found: run `make ops-tools` (bash .ci/ensure-ops-tools.sh)")
    return path


# --- static checks --------------------------------------------------------------------------------

def test_rules_file_is_valid(promtool):
    proc = run(promtool, "check", "rules", str(RULES))
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS" in output(proc)


def test_rule_unit_tests_pass(promtool):
    proc = run(promtool, "test", "rules", RULES_TEST.name, cwd=PROM)
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS" in output(proc)


def rules_test_on_a_broken_copy(promtool, tmp_path, pattern: str, replacement: str):
    """promtool's run of rules_test.yml against rules.yml with `pattern` replaced: it must fail."""
    text = RULES.read_text()
    broken = re.sub(pattern, replacement, text)
    assert broken != text
    (tmp_path / "rules.yml").write_text(broken)
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    proc = run(promtool, "test", "rules", "rules_test.yml", cwd=tmp_path)
    assert proc.returncode == 1, output(proc)
    return proc


def test_rule_unit_tests_catch_the_all_late_corridor(promtool, tmp_path):
    """The unit tests have teeth: without the `or 0 * rate(...)` guard, a corridor whose deliveries
    are all late has no on-time ratio at all and never alerts; rules_test.yml must notice."""
    proc = rules_test_on_a_broken_copy(
        promtool, tmp_path, r"\n\s*or\n\s*0 \* rate\(corridor_shipments_delivered_total\[6h\]\)", "")
    assert "CorridorOnTimeRateLow" in output(proc)


def test_corridor_alerts_keep_firing_through_a_deploy():
    """Every corridor alert, and only those, keeps firing 10 minutes after its condition was last
    met (their series vanish while workers restart or rebalance); `for:` and `keep_firing_for:`
    each on a line of their own (tests rewrite them with a line regex)."""
    rules = {r["alert"]: r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r}
    assert {n for n, r in rules.items() if "keep_firing_for" in r} == CORRIDOR_ALERTS
    assert {r["keep_firing_for"] for n, r in rules.items() if n in CORRIDOR_ALERTS} == {"10m"}
    text = RULES.read_text()
    assert len(re.findall(r"(?m)^\s+keep_firing_for:\s*\S+\s*$", text)) == len(CORRIDOR_ALERTS)
    assert len(re.findall(r"(?m)^\s+for:\s*\S+\s*$", text)) == len(rules)


def test_rule_unit_tests_catch_an_alert_that_resolves_during_a_deploy(promtool, tmp_path):
    """Without keep_firing_for, the overdue and bottleneck alerts resolve while their series are
    absent (a worker restarting) and fire again after `for:`: rules_test.yml must notice."""
    proc = rules_test_on_a_broken_copy(promtool, tmp_path, r"(?m)^\s+keep_firing_for:.*\n", "")
    assert "alertname: CorridorOverdueBacklog, time: 33m" in output(proc)
    assert "alertname: CorridorStageBottleneck, time: 43m" in output(proc)


def test_prometheus_config_is_valid(promtool):
    proc = run(promtool, "check", "config", str(PROM / "prometheus.yml"))
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS: 1 rule files found" in output(proc)
    assert "is valid prometheus config file syntax" in output(proc)


def test_alertmanager_config_is_valid(amtool):
    proc = run(amtool, "check-config", str(ALERTMANAGER))
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS" in output(proc)


def expected_receiver(rule: dict) -> str:
    if rule["labels"]["severity"] == "critical":
        return "on-call-page"
    return "platform" if rule["labels"].get("team") == "platform" else "logistics-ops"


def test_alertmanager_pages_on_critical_sends_warnings_to_their_team_and_groups_per_corridor(amtool):
    """Issue 15: a warning must not page; corridor warnings go to logistics-ops, warnings about
    the workers (team="platform") to the platform receiver. amtool routes each alert with the
    labels its rule gives it."""
    rules = [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]
    seen = set()
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"].get("team") == ("platform" if name in FLEET_ALERTS else None), name
        receiver = expected_receiver(rule)
        seen.add(receiver)
        labels = [f"{k}={v}" for k, v in rule["labels"].items()]
        proc = run(amtool, "config", "routes", "test", "--config.file", str(ALERTMANAGER),
                   f"--verify.receivers={receiver}", f"alertname={name}",
                   "namespace=production", "corridor=CN-AU", "stage=customs", *labels)
        assert proc.returncode == 0, (name, output(proc))
    assert seen == {"on-call-page", "platform", "logistics-ops"}
    # what pages: a delayed corridor (parcels past their promise piling up), and figures missing
    # or frozen; the other corridor alerts are warnings for the working day
    assert {r["alert"] for r in rules if r["labels"]["severity"] == "critical"} == {
        "CorridorOverdueBacklog", "CorridorWorkerDown", "CorridorNoTargets",
        "CorridorStreamClockStopped"}
    # the test has teeth: a platform warning is not routed to logistics-ops
    proc = run(amtool, "config", "routes", "test", "--config.file", str(ALERTMANAGER),
               "--verify.receivers=logistics-ops", "alertname=CorridorRebalanceStorm",
               "severity=warning", "team=platform")
    assert proc.returncode != 0, output(proc)
    assert load_yaml(ALERTMANAGER)["route"]["group_by"] == ["namespace", "alertname", "corridor",
                                                            "stage", "regime"]


def test_corridor_alerts_are_inhibited_while_the_workers_are_down():
    inhibit = load_yaml(ALERTMANAGER)["inhibit_rules"]
    assert len(inhibit) == 1 and inhibit[0]["equal"] == ["namespace"]
    sources = re.search(r'"(.+)"', inhibit[0]["source_matchers"][0]).group(1).split("|")
    targets = re.search(r'"(.+)"', inhibit[0]["target_matchers"][0]).group(1).split("|")
    assert set(sources) == {"CorridorWorkerDown", "CorridorNoTargets"}
    assert set(targets) == ALERTS - set(sources) - NOT_INHIBITED


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def load_yaml(path: Path):
    import yaml
    return yaml.safe_load(path.read_text())


def test_every_alert_has_severity_annotations_and_a_runbook_section():
    rules = [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert set(alerts) == ALERTS
    anchors = {github_anchor(m) for m in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.M)}
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        ann = rule["annotations"]
        assert ann["summary"].strip() and ann["description"].strip(), name
        _, _, anchor = ann["runbook_url"].partition("#")     # the base: tests/ops/test_links.py
        assert anchor == github_anchor(name) and anchor in anchors, (name, anchor)
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
    # corridor alerts name their corridor (and stage) in the summary
    for name in ALERTS - FLEET_ALERTS:
        assert "$labels.corridor" in alerts[name]["annotations"]["summary"], name
    assert "$labels.stage" in alerts["CorridorStageBottleneck"]["annotations"]["summary"]
    assert "$labels.regime" in alerts["CorridorCustomsClearanceSlow"]["annotations"]["summary"]


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    cases: dict[str, set[bool]] = {}
    for test in load_yaml(RULES_TEST)["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    assert {name: cases.get(name) for name in ALERTS} == {name: {True, False} for name in ALERTS}


# --- the live exposition --------------------------------------------------------------------------

def dataset():
    """Deliveries (on time and late), a customs hold, an open shipment past its promise, one stuck
    beyond its stage target: every family the rules read has a sample."""
    return (journey("S1", "O1", promised_h=200, hold=True)
            + journey("S2", "O2", seller="DE", buyer="US", sl="express", delivered=125.0)
            + journey("S3", "O3", seller="CN", buyer="US", sl="economy", end="returned")
            + journey("S4", "O4", promised_h=150, released=None, delivered=None)
            + journey("S5", "O5", seller="US", buyer="MX", sl="express", arrived=None,
                      released=None, delivered=None))


@pytest.fixture(scope="module")
def live_worker(tmp_path_factory):
    from streams.broker.embedded import EmbeddedBroker

    logdir = tmp_path_factory.mktemp("ops-logs")
    broker = EmbeddedBroker(port=0).start()
    worker = None
    try:
        worker = Worker(broker.url, unique_app_id("corridor-ops"), logdir).start()
        events = dataset()
        produce(broker.bootstrap, events)
        expected = {"orders": 5, "shipments": sum(1 for k, _ in events if k == "shipments"),
                    "customs-events": sum(1 for k, _ in events if k == "customs")}

        def settled():
            m = worker.metrics()
            return (all(sample(m, "corridor_events_consumed_total", topic=t) == n
                        for t, n in expected.items())
                    and len(series(m, "corridor_shipments_delivered_total")) == 2
                    and series(m, "corridor_shipments_overdue")) and m
        poll(settled, 60, 0.2, "worker consumed and joined every event")
        yield worker
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()


def test_live_metrics_pass_promtool_check_metrics(live_worker, promtool):
    status, text = live_worker.get("/metrics")
    assert status == 200
    assert "corridor_shipments_delivered_total{" in text
    proc = run(promtool, "check", "metrics", stdin=text.encode())
    assert (proc.returncode, output(proc)) == (0, "")


def test_live_metrics_export_every_metric_the_rules_read(live_worker):
    """A renamed metric would leave the rules silently empty: each name they read is exported."""
    names = set(re.findall(r"\b(corridor_[a-z_]+)\b(?!:)", RULES.read_text()))
    assert names, "no metric names found in rules.yml"
    assert {"corridor_worker_ready", "corridor_memory_limit_bytes"} <= names
    _, text = live_worker.get("/metrics")
    exported = set(re.findall(r"^(corridor_[a-z_]+)[{ ]", text, re.M))
    # Families a healthy worker may export without a sample: no cgroup memory limit (this test
    # machine may have none), nothing rejected (this dataset is clean). They are still declared.
    may_be_empty = {"corridor_memory_limit_bytes", "corridor_events_rejected_total"}
    declared = set(re.findall(r"^# TYPE (corridor_[a-z_]+) ", text, re.M))
    assert names - exported - may_be_empty == set()
    assert may_be_empty <= names and may_be_empty <= declared
    assert re.search(r"^corridor_worker_ready 1\.0$", text, re.M), "a settled worker is ready"
    assert re.search(r"^process_resident_memory_bytes \d", text, re.M)
