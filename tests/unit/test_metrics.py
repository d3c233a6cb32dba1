"""The worker's metrics: the cached text of the totals families is byte for byte what
prometheus_client renders; readiness and the memory limit for the meta-monitoring alerts; the
number of series one worker exports (the budget of docs/cardinality.md and sample_limit)."""
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from streams.contract import codec
from streams.domain import aggregate
from streams.domain import customs
from streams.domain.aggregate import CLEARANCE_BUCKETS, DWELL_BUCKETS, TRANSIT_BUCKETS
from streams.domain.policy import SlaPolicy
from streams.domain.regimes import NO_REGIME, VALUE_CLASSES
from streams.domain.risk import AtRisk
from streams.domain.stages import END_EVENTS, EVENT_EXCEPTIONS, SERVICE_LEVELS, STAGES
from streams.settings import Settings
from streams.worker import metrics
from streams.worker.metrics import (AwaitingCollector, CorridorCollector, EventCounters, RiskCollector,
                                    MemoryLimitCollector, ReadinessCollector, RegimeCollector,
                                    TotalsExposition,
                                    WorkerCollector, memory_limit_bytes, register_process_metrics,
                                    worker_ready)
from streams.worker.views import readiness


def record(offset: int, *observations) -> dict:
    tot = aggregate.new_totals()
    for obs in observations:
        aggregate.add(tot, obs)
    tot["o"] = {"shipments": offset}
    return tot


def generic(totals: dict) -> str:
    """The same families through prometheus_client's registry, as before the cache."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CorridorCollector(lambda: (totals, aggregate.OpenGauges(), None)))
    text = generate_latest(registry).decode()
    return text[:text.index("# HELP corridor_shipments_in_stage")]


def test_cached_text_equals_prometheus_client_and_follows_each_record_change():
    records = {
        ("CN-AU", "3"): record(4, ("delivered", "CN-AU", "standard", True, 50 * 3600.0),
                               ("dwell", "CN-AU", "customs", 7200.0)),
        ("DE-US", "1"): record(9, ("exception", "DE-US", "lost"),
                               ("delivered", "DE-US", "express", False, 9 * 86400.0)),
    }
    text = TotalsExposition()
    first = text.render(records)
    assert first == generic(records)
    assert 'corridor_shipment_transit_seconds_bucket{corridor="DE-US",le="+Inf",partition="1",' \
           'service_level="express"} 1.0\n' in first

    # A record is rendered again only when its source offsets move: the same offsets, the same text
    # (here the record is changed behind the stamp's back, which corridor never does).
    aggregate.add(records[("CN-AU", "3")], ("exception", "CN-AU", "customs_hold"))
    assert text.render(records) == first
    records[("CN-AU", "3")]["o"]["shipments"] = 5
    assert text.render(records) == generic(records) != first
    assert 'type="customs_hold"} 1.0\n' in text.render(records)

    # A partition given away disappears; nothing owned leaves the family headers only.
    del records[("DE-US", "1")]
    assert text.render(records) == generic(records)
    assert text.render({}) == generic({})
    assert text.render({}).count("# HELP ") == 12 and "{" not in text.render({})


# ---- readiness and the memory limit ---------------------------------------------------------------
def scrape(*collectors) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for c in collectors:
        registry.register(c)
    return registry


def test_worker_ready_is_the_health_rule():
    """Ready only when assigned, recovered and not rebalancing: any one missing is NotReady."""
    assert worker_ready(True, True, False) is True
    for assigned, recovered, rebalancing in [(False, True, False), (True, False, False),
                                             (True, True, True), (False, False, True)]:
        assert worker_ready(assigned, recovered, rebalancing) is False


class FakeRecovery:
    def __init__(self, done: bool):
        self.completed = SimpleNamespace(is_set=lambda: done)


def fake_worker(assigned: bool, recovered: bool, rebalancing: bool):
    app = SimpleNamespace(tables=SimpleNamespace(recovery=FakeRecovery(recovered)),
                          rebalancing=rebalancing)
    return app, SimpleNamespace(assigned=assigned)


def test_corridor_worker_ready_follows_what_health_answers():
    """views.readiness is what /health answers and what the gauge exports, read at each scrape."""
    state = {"assigned": True, "recovered": False, "rebalancing": False}
    registry = scrape(ReadinessCollector(lambda: readiness(*fake_worker(**state))["ready"]))
    assert readiness(*fake_worker(**state)) == {"ready": False, "recovering": True,
                                                "rebalancing": False}
    assert registry.get_sample_value("corridor_worker_ready") == 0.0
    state["recovered"] = True
    assert readiness(*fake_worker(**state))["ready"] is True
    assert registry.get_sample_value("corridor_worker_ready") == 1.0
    state["rebalancing"] = True
    assert readiness(*fake_worker(**state)) == {"ready": False, "recovering": False,
                                                "rebalancing": True}
    assert registry.get_sample_value("corridor_worker_ready") == 0.0


def test_memory_limit_from_cgroup_v2(tmp_path):
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert memory_limit_bytes(tmp_path) == 1073741824
    (tmp_path / "memory.max").write_text("max\n")
    assert memory_limit_bytes(tmp_path) is None


def test_memory_limit_from_cgroup_v1(tmp_path):
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    assert memory_limit_bytes(tmp_path) == 536870912
    # v1 writes "no limit" as the largest page-aligned 63-bit number
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory_limit_bytes(tmp_path) is None


def test_memory_limit_prefers_v2_and_is_none_when_unreadable(tmp_path):
    assert memory_limit_bytes(tmp_path) is None                 # neither file
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    (tmp_path / "memory.max").write_text("268435456\n")
    assert memory_limit_bytes(tmp_path) == 268435456
    (tmp_path / "memory.max").write_text("garbage\n")
    assert memory_limit_bytes(tmp_path) is None
    (tmp_path / "memory.max").unlink()
    (tmp_path / "memory.max").mkdir()                           # unreadable: falls back to v1
    assert memory_limit_bytes(tmp_path) == 536870912


def test_memory_limit_series_only_when_limited():
    limit = {"value": 2 * 2**30}
    registry = scrape(MemoryLimitCollector(lambda: limit["value"]))
    assert registry.get_sample_value("corridor_memory_limit_bytes") == 2 * 2**30
    limit["value"] = None
    assert registry.get_sample_value("corridor_memory_limit_bytes") is None
    lines = generate_latest(registry).decode().splitlines()
    assert [line for line in lines if not line.startswith("#")] == []


def test_process_metrics_include_resident_memory_and_the_limit(monkeypatch, tmp_path):
    """CorridorMemoryNearLimit reads process_resident_memory_bytes / corridor_memory_limit_bytes:
    both come from register_process_metrics (the worker's registry)."""
    (tmp_path / "memory.max").write_text("1073741824\n")
    monkeypatch.setattr(metrics, "CGROUP_ROOT", tmp_path)
    registry = CollectorRegistry(auto_describe=False)
    register_process_metrics(registry)
    assert registry.get_sample_value("process_resident_memory_bytes") > 10 * 2**20
    assert registry.get_sample_value("corridor_memory_limit_bytes") == 1073741824


# ---- the series budget (docs/cardinality.md) ------------------------------------------------------
#: What one worker exports, counted from the metric definitions: every series of a full
#: /metrics body (the registry plus TotalsExposition, as Pipeline.metrics_text serves it) with
#: every label value the code can produce. sample_limit (deploy/prometheus/prometheus.yml,
#: deploy/k8s/podmonitor.yaml) is checked against it.
REPO = Path(__file__).resolve().parents[2]
EXCEPTION_TYPES = sorted({e for e in END_EVENTS if e != "delivered"} | {"cancelled"}
                         | set(EVENT_EXCEPTIONS.values()))
#: Every dead-letter reason the code can give (the `reason` label of corridor_events_rejected_total):
#: the codec's, and any other `Rejected("...")` in the code (the agents' `expired`).
REASONS = sorted(set(codec.REASONS) | {r for path in (REPO / "streams").rglob("*.py")
                                       for r in re.findall(r'Rejected\("([a-z_]+)"', path.read_text())})
EXPIRY_REASONS = {"timelines": ("ended", "order_facts_only"),
                  "orders": ("shipped", "never_shipped", "order_never_arrived")}
SETTINGS = Settings()
INPUT_TOPICS = list(SETTINGS.input_topics.values())
#: The topics a worker consumes: the three inputs, their rerouted twins and the two join topics.
CONSUMED = (INPUT_TOPICS + list(SETTINGS.rerouted_topics.values())
            + [SETTINGS.topic_order_links, SETTINGS.topic_shipment_orders])

HISTOGRAM_SERIES = {"transit": len(TRANSIT_BUCKETS) + 1 + 2,      # buckets, +Inf, _sum, _count
                    "dwell": len(DWELL_BUCKETS) + 1 + 2,
                    "clearance": len(CLEARANCE_BUCKETS) + 1 + 2}
#: The import regimes a corridor's parcels can be labelled with: those of its destination in the
#: shipped table and `none` (before the first). The budget's corridors end in DE: `none` and
#: eu-ioss. `none` has one value class (unknown), a regime all three.
REGIMES = SlaPolicy.load().regimes
DE_REGIMES = [r.name for r in REGIMES.regimes if "DE" in r.destinations]
CUSTOMS_LABELS = [(NO_REGIME, "unknown")] + [(r, v) for r in DE_REGIMES for v in VALUE_CLASSES]
#: per (regime, value class): the clearance histogram, cleared within target in calendar and
#: business days, arrivals, and holds, inspections, rejections and seizures.
PER_CUSTOMS_LABELS = HISTOGRAM_SERIES["clearance"] + 2 + 1 + len(customs.EVENT_TYPES)
#: per corridor and partition: delivered (service level x on time), exceptions by type, transit
#: per service level, dwell per stage, lateness attributed per stage, the customs families per
#: (regime, value class), delivered excluding customs and against a business-day promise (service
#: level x on time each), stages within or over their business-day target (stage x within).
PER_CORRIDOR_PARTITION = (len(SERVICE_LEVELS) * 2 + len(EXCEPTION_TYPES)
                          + len(SERVICE_LEVELS) * HISTOGRAM_SERIES["transit"]
                          + len(STAGES) * HISTOGRAM_SERIES["dwell"] + len(STAGES)
                          + len(CUSTOMS_LABELS) * PER_CUSTOMS_LABELS + 2 * len(SERVICE_LEVELS) * 2
                          + len(STAGES) * 2)
#: per corridor (the open-shipment gauges, no partition label): in stage and excess per stage,
#: overdue per service level, the bottleneck stage, parcels waiting in customs per (regime,
#: value class) and age bucket, at risk per (service level, stage), predicted late and scored.
PER_CORRIDOR = (len(STAGES) * 2 + len(SERVICE_LEVELS) + 1
                + len(CUSTOMS_LABELS) * len(customs.AGE_LABELS)
                + len(SERVICE_LEVELS) * len(STAGES) + 2)
#: per partition owned: lag and end offset per consumed topic, awaiting order, pending final.
PER_PARTITION = len(CONSUMED) * 2 + 2


def saturated_totals(corridor: str) -> dict:
    """A (corridor, partition) totals record with every label value: each service level
    delivered on time and late, every stage's dwell, every exception type."""
    tot = aggregate.new_totals()
    for sl in SERVICE_LEVELS:
        aggregate.add(tot, ("delivered", corridor, sl, True, 86400.0))
        aggregate.add(tot, ("delivered", corridor, sl, False, 9 * 86400.0))
    for stage in STAGES:
        aggregate.add(tot, ("dwell", corridor, stage, 3600.0))
    for exc in EXCEPTION_TYPES:
        aggregate.add(tot, ("exception", corridor, exc))
    for stage in STAGES:
        aggregate.add(tot, ("late", corridor, stage, 3600))
    for regime, vclass in CUSTOMS_LABELS:
        aggregate.add(tot, ("customs", corridor, "DE", regime, vclass, 3600.0, True, False,
                            1, 1, 1, 1))
    for sl in SERVICE_LEVELS:
        for kind in ("delivered_ex_customs", "delivered_business_days"):
            aggregate.add(tot, (kind, corridor, sl, True))
            aggregate.add(tot, (kind, corridor, sl, False))
    for stage in STAGES:
        aggregate.add(tot, ("stage_business_days", corridor, stage, True))
        aggregate.add(tot, ("stage_business_days", corridor, stage, False))
    tot["o"] = {"shipments": 1}
    return tot


def worker_exposition(corridors: int, partitions: int) -> str:
    """The /metrics body of a worker owning `partitions` partitions of `corridors` corridors, every
    corridor in every partition with every label value (the worst case the code allows)."""
    names = [f"{chr(65 + i // 26)}{chr(65 + i % 26)}-DE" for i in range(corridors)]
    totals = {(c, str(p)): saturated_totals(c) for c in names for p in range(partitions)}
    gauges = aggregate.OpenGauges()
    for c in names:
        for stage in STAGES:
            gauges.in_stage[(c, stage)] = 3
            gauges.excess[(c, stage)] = 600.0
        for sl in SERVICE_LEVELS:
            gauges.overdue[(c, sl)] = 1
        for regime, vclass in CUSTOMS_LABELS:
            for age in customs.AGE_LABELS:
                gauges.customs_waiting[(c, "DE", regime, vclass, age)] = 2
    registry = CollectorRegistry(auto_describe=False)
    counters = EventCounters(registry)
    for topic in CONSUMED:
        for counter in (counters.consumed, counters.applied, counters.duplicate, counters.late):
            counters.inc(counter, topic)
        for reason in REASONS:
            counters.inc(counters.rejected, topic, reason)
    for topic in INPUT_TOPICS:
        counters.inc(counters.rerouted, topic)
    for table, reasons in EXPIRY_REASONS.items():
        for reason in reasons:
            counters.inc(counters.expired, table, reason)
    counters.rebalances.inc()
    register_process_metrics(registry)
    registry.register(CorridorCollector(lambda: ({}, gauges, 1.7e9), totals=False))
    rows = [(t, p, 10, 5) for t in CONSUMED for p in range(partitions)]
    registry.register(WorkerCollector(lambda: (rows, partitions), 4))
    counts = {p: 1 for p in range(partitions)}
    registry.register(AwaitingCollector(lambda: {"awaiting_order": counts, "pending_final": counts}))
    registry.register(ReadinessCollector(lambda: True))
    registry.register(RegimeCollector(REGIMES))
    at_risk = AtRisk()
    for c in names:
        for sl in SERVICE_LEVELS:
            for stage in STAGES:
                at_risk.at_risk[(c, sl, stage)] = 1
        at_risk.expected_late[c] = 1_500_000
        at_risk.scored[c] = 15
    registry.register(RiskCollector(lambda: (at_risk, 1.7e9)))
    return generate_latest(registry).decode() + TotalsExposition().render(totals)


def series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


@pytest.fixture
def memory_limit(monkeypatch, tmp_path):
    (tmp_path / "memory.max").write_text("1073741824\n")
    monkeypatch.setattr(metrics, "CGROUP_ROOT", tmp_path)


def families_without_samples(text: str) -> list[str]:
    declared = re.findall(r"^# TYPE (\S+) ", text, re.M)
    sampled = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    return [name for name in declared
            if not any(s == name or s.startswith(name + "_") for s in sampled)]


def test_the_budget_counts_every_family(memory_limit):
    """A tripwire: the saturated worker below has a sample in every family it declares. A new
    family (or label) that the budget does not fill fails here: add it to saturated_totals or
    worker_exposition, then update the counts here and in docs/cardinality.md."""
    text = TotalsExposition().render({("AA-DE", "0"): saturated_totals("AA-DE")})
    assert families_without_samples(text) == []
    assert families_without_samples(worker_exposition(2, 2)) == []


def test_series_per_corridor_follow_from_the_metric_definitions():
    assert len(EXCEPTION_TYPES) == 7 and len(SERVICE_LEVELS) == 3 and len(STAGES) == 5
    assert HISTOGRAM_SERIES == {"transit": 15, "dwell": 15, "clearance": 11}
    assert len(CUSTOMS_LABELS) == 4 and PER_CUSTOMS_LABELS == 18
    assert PER_CORRIDOR_PARTITION == 138 + 4 * 18 + 2 * 6 + 10 == 232 and PER_CORRIDOR == 14 + 4 * 5 + 15 + 2 == 51
    assert len(CONSUMED) == 8 and PER_PARTITION == 18
    for n, p in ((1, 1), (3, 2), (50, 4)):
        totals = {(f"{chr(65 + i)}A-DE", str(q)): saturated_totals(f"{chr(65 + i)}A-DE")
                  for i in range(n) for q in range(p)}
        assert series(TotalsExposition().render(totals)) == n * p * PER_CORRIDOR_PARTITION


def test_worker_series_count_exactly(memory_limit):
    """Every series of a worker's /metrics: corridors x partitions x 232 + corridors x 51 +
    partitions x 18 + a fixed part (counters with every topic and reason, process, readiness,
    the import regimes' starts)."""
    fixed = series(worker_exposition(0, 0))
    counter_children = (len(CONSUMED) * (4 + len(REASONS)) + len(INPUT_TOPICS)
                        + sum(map(len, EXPIRY_REASONS.values())) + 1)
    # each Counter child is `_total` and `_created`; process_* (6), python_info, build_info,
    # memory limit, corridor_stream_time_seconds, partitions assigned and configured, ready, one
    # start per import regime of the shipped table, the time the open shipments' risk was scored
    assert fixed == 2 * counter_children + 6 + 1 + 1 + 1 + 1 + 2 + 1 + len(REGIMES.regimes) + 1
    for n, p in ((1, 1), (10, 2), (50, 4), (50, 12)):
        assert series(worker_exposition(n, p)) == (n * p * PER_CORRIDOR_PARTITION
                                                   + n * PER_CORRIDOR + p * PER_PARTITION + fixed)


def test_sample_limit_fits_the_planned_fleet_with_headroom(memory_limit):
    """docs/cardinality.md: 50 corridors x 3 service levels, the 4 partitions of
    deploy/k8s/configmap.yaml all on one worker (a fleet of one, or the others gone) is the
    budget; the scrapes' sample_limit leaves it at least 40 % headroom and is the same in the
    compose Prometheus and the Kubernetes PodMonitor."""
    budget = series(worker_exposition(50, 4))
    assert budget == 50 * 4 * 232 + 50 * 51 + 4 * 18 + series(worker_exposition(0, 0))
    assert len(REASONS) == 13 and budget == 49330            # the figure of docs/cardinality.md
    prom = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "corridor-workers"]
    podmonitor = yaml.safe_load((REPO / "deploy" / "k8s" / "podmonitor.yaml").read_text())
    limit = job["sample_limit"]
    assert podmonitor["spec"]["sampleLimit"] == limit
    configmap = yaml.safe_load((REPO / "deploy" / "k8s" / "configmap.yaml").read_text())
    assert configmap["data"]["CORRIDOR_PARTITIONS"] == "4"
    assert budget * 1.4 <= limit < budget * 2
    # the limit is what stops a label explosion: 100 corridors would not fit on one worker
    assert series(worker_exposition(100, 4)) > limit
