"""Bounded state: an ended shipment is forgotten once the stream clock passes its end plus the
retention; its figures stay (they live in the totals); an event for it that is older than the
retention goes to the dead-letter topic as `expired` instead of starting a new, never-ending
shipment. The forgetting is durable: a restarted worker recovers the tombstone from the changelog.
"""
import pytest

from builders import HOUR, customs, journey, ship
from harness import Worker, consume_all, poll, produce, sample, series, unique_app_id

pytestmark = pytest.mark.e2e


def test_ended_shipments_expire_and_their_figures_stay(broker, logdir):
    app_id, env = unique_app_id("corridor-retention"), {"CORRIDOR_RETENTION_SECONDS": str(10 * HOUR)}
    w = Worker(broker.url, app_id, logdir, env=env).start()
    try:
        # order first, so that the shipment's end is observed as soon as it arrives
        events = journey("S1", "O1", promised_h=200)
        produce(broker.bootstrap, [e for e in events if e[0] == "orders"])
        poll(lambda: sample(w.metrics(), "corridor_events_applied_total", topic="orders") == 1, 30)
        produce(broker.bootstrap, [e for e in events if e[0] != "orders"])
        poll(lambda: sample(w.metrics(), "corridor_shipments_delivered_total", corridor="CN-AU",
                            service_level="standard", on_time="true") == 1, 30)
        assert w.get("/shipments/S1")[0] == 200
        # S5 (partition 3, like S1) moves that partition's watermark past S1's end + 10 h: every
        # topic of the partition that is active must get there (shipments and customs here)
        produce(broker.bootstrap, [("shipments", ship("S5", "label_created", 150.0,
                                                      order_ids=["O9"], origin_country="CN",
                                                      destination_country="AU")),
                                   ("customs", customs("S5", "declaration_lodged", 150.0,
                                                       direction="export", country="CN"))])
        poll(lambda: w.get("/shipments/S1")[0] == 404, 30, what="S1 forgotten")
        m = w.metrics()
        assert sample(m, "corridor_shipments_delivered_total", corridor="CN-AU",
                      service_level="standard", on_time="true") == 1
        assert sample(m, "corridor_shipment_transit_seconds_sum", corridor="CN-AU",
                      service_level="standard") == 130 * HOUR
        # a straggler for the forgotten shipment, older than the retention: dead-lettered
        produce(broker.bootstrap, [("shipments", ship("S1", "out_for_delivery", 120.0))])
        poll(lambda: sample(w.metrics(), "corridor_events_rejected_total", topic="shipments",
                            reason="expired") == 1, 30, what="expired straggler rejected")
        assert w.get("/shipments/S1")[0] == 404
        dead = consume_all(broker.bootstrap, "shipments.dlq", 1)
        assert [dict(r.headers)["corridor.reason"] for r in dead] == [b"expired"]
        in_stage = {frozenset({"corridor": "CN-AU", "stage": "fulfilment"}.items()): 1.0}  # S5 only
        assert series(w.metrics(), "corridor_shipments_in_stage") == in_stage
        w.stop()
        # A successor rebuilds its tables from the changelogs: S1's tombstone is there.
        w = Worker(broker.url, app_id, logdir, name="successor", env=env).start()
        poll(lambda: sample(w.metrics(), "corridor_shipments_delivered_total", corridor="CN-AU",
                            service_level="standard", on_time="true") == 1, 30)
        assert w.get("/shipments/S1")[0] == 404 and w.get("/shipments/S5")[0] == 200
        assert series(w.metrics(), "corridor_shipments_in_stage") == in_stage
    finally:
        w.stop()
