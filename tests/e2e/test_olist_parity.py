"""Stream = batch on real data: the Olist export (10,000 orders, ~39k events) replayed with
`corridor replay` through the real broker and a real `corridor worker` process gives, series by
series, the corridor figures `corridor report --format json` computes from the same files.

The two paths share only the pure semantics (streams/domain): the worker distributes the join over
4 partitions, two internal topics and changelogged tables; the report runs `Engine` in memory.
The worker's table-derived series are summed over their `partition` label before comparing.
"""
from builders import shared_data
import argparse
import json
import time
import tomllib

import pytest

from harness import REPO, Worker, series, unique_app_id
from streams.tools import replay
from streams.tools import report
from streams.settings import Settings

OLIST = shared_data() / "olist-10k"
MAPPING = REPO / "streams" / "feeds" / "mappings" / "olist.toml"

# Olist's corridors are Brazilian states, accepted as countries because the mapping declares them;
# a worker is told the same with CORRIDOR_REGION_CODES (docs/feeds.md).
REGIONS = ",".join(tomllib.loads(MAPPING.read_text())["region_codes"])

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DEADLINE = 240.0      # the worker takes ~40-60 s for the log on 2 shared cores; generous on purpose


def _parse(add_arguments, argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def merge_partitions(metrics: dict) -> dict:
    """Sum series over a `partition` label (a no-op when the harness already did)."""
    out: dict = {}
    for (name, labels), v in metrics.items():
        if name.startswith("corridor_consumer_"):
            continue
        labels = frozenset((k, x) for k, x in labels if k != "partition")
        out[(name, labels)] = out.get((name, labels), 0.0) + v
    return out


@pytest.fixture(scope="module")
def parity(broker, logdir, tmp_path_factory):
    """Replay the export, compute the report, wait until the worker's corridor series equal it."""
    tmp = tmp_path_factory.mktemp("olist")
    app_id = unique_app_id("corridor-olist")
    topics = {"orders": f"{app_id}.orders", "shipments": f"{app_id}.shipments",
              "customs": f"{app_id}.customs-events"}
    env = {"CORRIDOR_TOPIC_ORDERS": topics["orders"], "CORRIDOR_TOPIC_SHIPMENTS": topics["shipments"],
           "CORRIDOR_TOPIC_CUSTOMS": topics["customs"], "CORRIDOR_REGION_CODES": REGIONS}
    worker = Worker(broker.url, app_id, logdir, env=env).start()
    try:
        settings = Settings.from_env({}, broker=broker.url, app_id=app_id, topic_orders=topics["orders"],
                                     topic_shipments=topics["shipments"], topic_customs=topics["customs"])
        started = time.monotonic()
        code = replay.main(settings, _parse(replay.add_arguments, [
            "--format", "csv-orders", "--mapping", MAPPING, OLIST, "--rejects", tmp / "rejects.jsonl"]))
        assert code == 0
        out = tmp / "report.json"
        assert report.main(_parse(report.add_arguments, [
            "--input-format", "csv-orders", "--mapping", MAPPING, OLIST, "--format", "json",
            "-o", out])) == 0
        expected_doc = json.loads(out.read_text())
        expected = {(m["name"], frozenset(m["labels"].items())): m["value"] for m in expected_doc["metrics"]}
        names = {name for name, _ in expected}
        got: dict = {}
        while time.monotonic() - started < DEADLINE:
            got = {k: v for k, v in merge_partitions(worker.metrics()).items() if k[0] in names}
            if got == expected:
                break
            time.sleep(2)
        else:
            diff = sorted((k[0], sorted(k[1]), expected.get(k), got.get(k))
                          for k in set(expected) | set(got) if expected.get(k) != got.get(k))
            pytest.fail(f"worker /metrics != corridor report after {DEADLINE:.0f} s: {len(diff)} series "
                        f"differ, e.g. {diff[:5]} (worker log {worker.log_path})")
        yield worker, expected_doc, expected, topics
    finally:
        worker.stop()


def test_worker_consumed_every_replayed_event_and_rejected_none(parity):
    worker, doc, _, topics = parity
    m = worker.metrics()
    consumed = {dict(k)["topic"]: v for k, v in series(m, "corridor_events_consumed_total").items()}
    assert consumed == {topics["orders"]: doc["input"]["by_kind"]["orders"],
                        topics["shipments"]: doc["input"]["by_kind"]["shipments"]}
    assert (doc["input"]["by_kind"], doc["input"]["rejected"]) == (
        {"orders": 9935, "shipments": 29149}, {"irregular_time": 5, "missing_field": 112})
    assert series(m, "corridor_events_rejected_total") == {}
    # the 5 label_created dated after their delivery come within the grace period: not late
    # (they change no figure either: milestones after the end are cut), on both sides
    assert sum(series(m, "corridor_events_late_total").values()) == doc["input"]["late"] == 0
    assert sum(series(m, "corridor_events_duplicate_total").values()) == doc["input"]["duplicates"] == 0


def test_every_corridor_series_equals_the_report(parity):
    worker, _, expected, _ = parity
    names = {name for name, _ in expected}
    got = {k: v for k, v in merge_partitions(worker.metrics()).items() if k[0] in names}
    assert got == expected
    assert len({dict(labels).get("corridor") for _, labels in expected}) > 200     # state pairs
    # issue 16: where the late days were lost, stream = batch (whole seconds, exact)
    late = {k: v for k, v in expected.items() if k[0] == "corridor_late_attributed_seconds_total"}
    assert len(late) > 100 and all(v == int(v) > 0 for v in late.values())


def test_on_time_transit_and_stage_counts_per_corridor(parity):
    """The figures a manager reads, corridor by corridor, against the worker's series."""
    worker, doc, _, _ = parity
    m = merge_partitions(worker.metrics())

    def total(name, corridor, **labels):
        return sum(v for (n, ls), v in m.items() if n == name and dict(ls).get("corridor") == corridor
                   and all(dict(ls).get(k) == x for k, x in labels.items()))

    for corridor, f in doc["corridors"].items():
        assert total("corridor_shipments_delivered_total", corridor, on_time="true") == f["on_time"], corridor
        assert total("corridor_shipments_delivered_total", corridor, on_time="false") == f["late"], corridor
        assert total("corridor_shipment_transit_seconds_count", corridor) == f["transit_seconds"]["count"]
        assert total("corridor_shipment_transit_seconds_sum", corridor) == f["transit_seconds"]["sum"]
        for stage, s in f["stages"].items():
            assert total("corridor_stage_dwell_seconds_count", corridor, stage=stage) == s["count"]
            assert total("corridor_stage_dwell_seconds_sum", corridor, stage=stage) == s["sum"]
        assert total("corridor_shipments_overdue", corridor) == f["overdue"]
    sp_rj = doc["corridors"]["SP-RJ"]
    assert sp_rj["delivered"] == sp_rj["on_time"] + sp_rj["late"] > 900
