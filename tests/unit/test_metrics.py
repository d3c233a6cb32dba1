"""The worker's metrics: the cached text of the totals families is byte for byte what
prometheus_client renders; readiness and the memory limit for the meta-monitoring alerts."""
from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from streams.domain import aggregate
from streams.worker import metrics
from streams.worker.metrics import (CorridorCollector, MemoryLimitCollector, ReadinessCollector,
                                    TotalsExposition, memory_limit_bytes, register_process_metrics,
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
    assert text.render({}).count("# HELP ") == 4 and "{" not in text.render({})


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
