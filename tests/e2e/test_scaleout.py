"""Several workers: partitions split, every worker exports only what it owns, so the sum over
workers of every corridor series is the single-worker figure; views answer from any worker; the
stream clock is shared. Then a third worker joins and the first leaves: the sums stay exact.
"""
from collections import Counter

import pytest

from builders import HOUR, T0_EPOCH
from harness import Worker, poll, sample, unique_app_id
from scenarios import corridor_view, produce_adversarial

pytestmark = pytest.mark.e2e
H = HOUR

# Additive corridor series and their single-worker values (see test_pipeline.py for the derivation).
EXPECTED = {
    ("corridor_shipments_delivered_total", (("corridor", "CN-AU"), ("on_time", "true"),
                                            ("service_level", "standard"))): 1.0,
    ("corridor_shipments_delivered_total", (("corridor", "DE-US"), ("on_time", "false"),
                                            ("service_level", "express"))): 1.0,
    ("corridor_shipment_exceptions_total", (("corridor", "CN-AU"), ("type", "customs_hold"))): 1.0,
    ("corridor_shipment_exceptions_total", (("corridor", "CN-US"), ("type", "returned"))): 1.0,
    ("corridor_shipment_transit_seconds_sum", (("corridor", "CN-AU"), ("service_level", "standard"))): 130 * H,
    ("corridor_shipment_transit_seconds_sum", (("corridor", "DE-US"), ("service_level", "express"))): 125 * H,
    ("corridor_stage_dwell_seconds_sum", (("corridor", "DE-US"), ("stage", "last_mile"))): 25 * H,
    ("corridor_stage_dwell_seconds_count", (("corridor", "CN-US"), ("stage", "customs"))): 1.0,
    ("corridor_shipments_in_stage", (("corridor", "CN-AU"), ("stage", "customs"))): 1.0,
    ("corridor_shipments_in_stage", (("corridor", "US-MX"), ("stage", "linehaul"))): 1.0,
    ("corridor_shipments_overdue", (("corridor", "US-MX"), ("service_level", "express"))): 1.0,
    ("corridor_stage_excess_seconds", (("corridor", "CN-AU"), ("stage", "customs"))): 12 * H,
    ("corridor_stage_excess_seconds", (("corridor", "US-MX"), ("stage", "linehaul"))): 62 * H,
}
ADDITIVE = {name for name, _ in EXPECTED} | {"corridor_stage_dwell_seconds_bucket",
                                             "corridor_shipment_transit_seconds_bucket"}


def fleet_sum(workers) -> dict:
    total = Counter()
    for w in workers:
        for (name, labels), v in corridor_view(w.metrics()).items():
            if name in ADDITIVE:
                total[(name, tuple(sorted(labels)))] += v
    return dict(total)


def assert_split(workers):
    """Every worker ready and every partition owned by exactly one of them.

    A worker may own none: Faust's assignor caps each worker at ceil(4 / workers) partitions and
    is sticky, so a third worker on 4 partitions can stay a standby until someone leaves.
    """
    def split():
        health = [w.get("/health") for w in workers]
        if any(status != 200 for status, _ in health):
            return False
        return sorted(p for _, body in health for p in body["partitions"]) == [0, 1, 2, 3]
    poll(split, 60, 0.3, "partitions split over the workers")


def assert_fleet_figures(workers):
    def exact():
        got = fleet_sum(workers)
        return all(got.get(k) == v for k, v in EXPECTED.items()) and got
    got = poll(exact, 60, 0.3, "fleet sums equal the single-worker figures")
    assert {k: got.get(k) for k in EXPECTED} == EXPECTED
    # nothing else is exported twice: every bucket count is 0 or 1 in this data set
    assert {v for (name, _), v in got.items() if name.endswith("_bucket")} <= {0.0, 1.0}


@pytest.fixture(scope="module")
def fleet(broker, logdir):
    app_id = unique_app_id("corridor-fleet")
    workers = [Worker(broker.url, app_id, logdir, name=f"w{i}") for i in (1, 2, 3)]
    workers[0].start()
    workers[1].start()
    yield app_id, workers
    for w in workers:
        w.stop()


def test_two_workers_split_partitions_and_sum_to_the_exact_figures(fleet, broker):
    _, (w1, w2, _) = fleet
    assert_split([w1, w2])
    assert [len(w.get("/health")[1]["partitions"]) for w in (w1, w2)] == [2, 2]
    produce_adversarial(broker, [w1, w2])
    assert_fleet_figures([w1, w2])
    # the stream clock is shared: both workers use the latest event time of all partitions
    poll(lambda: all(sample(w.metrics(), "corridor_stream_time_seconds") == T0_EPOCH + 140 * H
                     for w in (w1, w2)), 20, 0.3, "both workers at the shared clock")


def test_any_worker_answers_a_shipment_view(fleet):
    _, (w1, w2, _) = fleet
    bodies = [w.get("/shipments/S1") for w in (w1, w2)]
    assert [status for status, _ in bodies] == [200, 200]
    assert bodies[0][1]["stages"] == bodies[1][1]["stages"]
    assert bodies[0][1]["transit_seconds"] == 130 * H
    assert w2.get("/shipments/S5")[1]["sla"] == w1.get("/shipments/S5")[1]["sla"] == "overdue"


def test_a_third_worker_joins_then_the_first_leaves_and_sums_stay_exact(fleet):
    _, (w1, w2, w3) = fleet
    w3.start()
    assert_split([w1, w2, w3])
    assert_fleet_figures([w1, w2, w3])
    w1.stop()
    assert_split([w2, w3])
    assert [len(w.get("/health")[1]["partitions"]) for w in (w2, w3)] == [2, 2]
    assert_fleet_figures([w2, w3])
