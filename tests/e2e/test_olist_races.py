"""The Olist history replayed as users meet it: into a worker that is still starting, into a
worker that is recovering its tables, and while a second worker joins. Each ends, series by
series, with exactly what `corridor report` computes from the same files (9,648 deliveries),
with the default 30-day retention (the export spans two years: state is forgotten all along).

Before the expiry rule of docs/semantics.md "Bounded state", a replay started before the worker's
group join ended at 9,027-9,245 deliveries: orders were forgotten while links to them were unread.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from builders import shared_data
from harness import REPO, Worker, poll, unique_app_id
from streams.feeds.sources import load
from streams.tools.replay import replay
from streams.settings import Settings

OLIST = shared_data() / "olist-10k"
MAPPING = REPO / "streams" / "feeds" / "mappings" / "olist.toml"

# Olist's corridors are Brazilian states, accepted as countries because the mapping declares them;
# a worker is told the same with CORRIDOR_REGION_CODES (docs/feeds.md).
REGIONS = ",".join(tomllib.loads(MAPPING.read_text())["region_codes"])
DEADLINE = 300.0

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict:
    """The report's corridor series for the export, {(name, labels): value}."""
    out = tmp_path_factory.mktemp("report") / "report.json"
    subprocess.run([sys.executable, "-m", "streams", "report", "--input-format", "csv-orders",
                    "--mapping", str(MAPPING), str(OLIST), "--format", "json", "-o", str(out)],
                   cwd=REPO, check=True, capture_output=True)
    doc = json.loads(out.read_text())
    return {(m["name"], frozenset(m["labels"].items())): m["value"] for m in doc["metrics"]}


@pytest.fixture(scope="module")
def events():
    return load([OLIST], "csv-orders", MAPPING)


def delivered(series: dict) -> float:
    return sum(v for (name, _), v in series.items() if name == "corridor_shipments_delivered_total")


def fleet_series(workers, names) -> dict:
    """The corridor series summed over the workers and their partitions."""
    out: dict = {}
    for w in workers:
        for (name, labels), v in w.metrics().items():
            if name in names:
                labels = frozenset((k, x) for k, x in labels if k != "partition")
                out[(name, labels)] = out.get((name, labels), 0.0) + v
    return out


def wait_for_report(workers, expected: dict) -> None:
    # corridor_bottleneck_stage and the stream clock are each worker's own (docs/semantics.md
    # "Open-shipment gauges"): they do not add up over workers; the excess seconds do.
    if len(workers) > 1:
        own = {"corridor_bottleneck_stage", "corridor_stream_time_seconds",
               "corridor_risk_scored_time_seconds", "corridor_import_regime_start_seconds"}
        expected = {k: v for k, v in expected.items() if k[0] not in own}
    names = {name for name, _ in expected}
    last: dict = {}

    def equal():
        nonlocal last
        for w in workers:
            assert w.proc.poll() is None, f"worker {w.name} died:\n{w.log_tail()}"
        last = fleet_series(workers, names)
        return last == expected

    try:
        poll(equal, DEADLINE, 2.0, "the fleet's series equal the report")
    except AssertionError:
        diff = sorted((k[0], sorted(k[1]), expected.get(k), last.get(k))
                      for k in set(expected) | set(last) if expected.get(k) != last.get(k))
        awaiting = [w.metrics().get(("corridor_shipments_awaiting_order", frozenset()))
                    for w in workers]
        pytest.fail(f"delivered {delivered(last):.0f} of {delivered(expected):.0f}; "
                    f"{len(diff)} series differ, e.g. {diff[:4]}; awaiting order {awaiting}; "
                    f"logs {[str(w.log_path) for w in workers]}")


def spawn(broker, app_id, logdir, name, topics) -> Worker:
    env = {"CORRIDOR_TOPIC_ORDERS": topics["orders"], "CORRIDOR_TOPIC_SHIPMENTS": topics["shipments"],
           "CORRIDOR_TOPIC_CUSTOMS": topics["customs"], "CORRIDOR_REGION_CODES": REGIONS}
    return Worker(broker.url, app_id, logdir, name=name, env=env)


def start_without_waiting(worker: Worker) -> Worker:
    """Start the process and return as soon as its web port answers, before /health says 200."""
    log = open(worker.log_path, "ab")
    worker.proc = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=worker.env,
                                   cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    log.close()
    poll(lambda: worker.proc.poll() is not None or worker.get("/health")[0] is not None,
         60, 0.05, f"worker {worker.name} web port")
    return worker


def publish(broker, app_id, topics, loaded, start: int = 0, stop: int | None = None) -> None:
    part = type(loaded)(events=loaded.events[start:stop], where=loaded.where[start:stop],
                        region_codes=loaded.region_codes)
    settings = Settings.from_env({}, broker=broker.url, app_id=app_id,
                                 topic_orders=topics["orders"], topic_shipments=topics["shipments"],
                                 topic_customs=topics["customs"])
    summary = replay(settings, part, rejects_path=Path("/dev/null"), progress=open("/dev/null", "w"))
    assert summary.failed == 0 and sum(summary.published.values()) == len(part.events)


def names_for(app_id: str) -> dict:
    return {"orders": f"{app_id}.orders", "shipments": f"{app_id}.shipments",
            "customs": f"{app_id}.customs-events"}


def test_a_replay_started_before_the_worker_joined_its_group(broker, logdir, expected, events):
    app_id = unique_app_id("olist-race")
    topics = names_for(app_id)
    worker = start_without_waiting(spawn(broker, app_id, logdir, "a", topics))
    try:
        publish(broker, app_id, topics, events)
        wait_for_report([worker], expected)
        assert delivered(expected) == 9648
    finally:
        worker.stop()


def test_a_replay_into_a_worker_that_recovers_its_tables(broker, logdir, expected, events):
    app_id = unique_app_id("olist-recover")
    topics = names_for(app_id)
    half = len(events.events) // 2
    first = spawn(broker, app_id, logdir, "first", topics).start()
    try:
        publish(broker, app_id, topics, events, 0, half)
        poll(lambda: delivered(fleet_series([first], {"corridor_shipments_delivered_total"})) > 2000,
             DEADLINE, 1.0, "the first half counted")
    finally:
        first.kill()
    second = start_without_waiting(spawn(broker, app_id, logdir, "second", topics))
    try:
        publish(broker, app_id, topics, events, half)
        wait_for_report([second], expected)
    finally:
        second.stop()


def test_a_replay_while_a_second_worker_joins(broker, logdir, expected, events):
    app_id = unique_app_id("olist-join")
    topics = names_for(app_id)
    one = spawn(broker, app_id, logdir, "one", topics).start()
    two = spawn(broker, app_id, logdir, "two", topics)
    try:
        producer = threading.Thread(target=publish, args=(broker, app_id, topics, events))
        producer.start()
        poll(lambda: delivered(fleet_series([one], {"corridor_shipments_delivered_total"})) > 500,
             DEADLINE, 0.2, "the replay under way")
        two.start()
        producer.join(120)
        assert not producer.is_alive()
        wait_for_report([one, two], expected)
        assert all(w.metrics().get(("corridor_partitions_assigned", frozenset())) == 2
                   for w in (one, two))
    finally:
        two.stop()
        one.stop()
