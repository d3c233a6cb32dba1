"""The adversarial event set shared by the e2e tests (expected figures are in test_pipeline.py)."""
import orjson

from builders import customs, journey, ship
from harness import merge_partitions, poll, produce, sample, wait_final

TOPIC = {"customs": "customs-events", "shipments": "shipments", "orders": "orders"}


def dataset():
    return (journey("S1", "O1", promised_h=200, hold=True)
            + journey("S2", "O2", seller="DE", buyer="US", sl="express", delivered=125.0)
            + journey("S3", "O3", seller="CN", buyer="US", sl="economy", end="returned")
            + journey("S4", "O4", promised_h=150, released=None, delivered=None)
            + journey("S5", "O5", seller="US", buyer="MX", sl="express", arrived=None,
                      released=None, delivered=None))


CORRIDOR_FAMILIES = ("corridor_shipments_delivered_total", "corridor_shipment_exceptions_total",
                     "corridor_shipment_transit_seconds_sum", "corridor_shipment_transit_seconds_count",
                     "corridor_shipment_transit_seconds_bucket", "corridor_stage_dwell_seconds_sum",
                     "corridor_stage_dwell_seconds_count", "corridor_stage_dwell_seconds_bucket",
                     "corridor_shipments_in_stage", "corridor_shipments_overdue",
                     "corridor_stage_excess_seconds", "corridor_bottleneck_stage",
                     "corridor_stream_time_seconds")


def corridor_view(metrics):
    return {k: v for k, v in metrics.items() if k[0] in CORRIDOR_FAMILIES}


def produce_adversarial(broker, workers):
    """All customs events, then all shipment events, then the orders, then duplicates, bad input
    and a late event; each phase waits until the workers together consumed it.

    Returns {"s1": per-kind count of S1's resent events, "consumed": per-kind messages produced}.
    """
    events = dataset()
    by_kind = {k: [(k, e) for kk, e in events if kk == k] for k in ("customs", "shipments", "orders")}
    consumed = {"customs": 0, "shipments": 0, "orders": 0}

    def phase(items):
        for kind, *_ in items:
            consumed[kind] += 1
        produce(broker.bootstrap, items)

        def caught_up():
            scrapes = [w.metrics() for w in workers]
            return all(sum(sample(m, "corridor_events_consumed_total", topic=TOPIC[k]) or 0
                           for m in scrapes) == n for k, n in consumed.items() if n)
        poll(caught_up, 60, what="workers consumed every message")

    phase(by_kind["customs"])
    phase(by_kind["shipments"])
    phase(by_kind["orders"])
    wait_final(workers)              # the figures are final: what comes now is late
    s1 = [(k, e) for k, e in events if e.get("shipment_id") == "S1" or e.get("order_id") == "O1"]
    bad_customs = customs("S1", "released", 1.0)
    bad_customs["occurred_at"] = "2025-03-01T10:00:00"          # no UTC offset
    phase(s1 + [("shipments", b"not json", "S-bad"),
                ("customs", orjson.dumps(bad_customs), "S1"),
                ("shipments", ship("S3", "out_for_delivery", 140.0))])
    wait_final(workers)
    return {"s1": {k: sum(1 for kk, _ in s1 if kk == k) for k in TOPIC}, "consumed": consumed}


def engine_samples(events):
    """The pure engine over simulator events (`.topic` = kind, `.value` = event) in the order
    given, finished (the workers' idle rule), as samples summed over `partition`; and the engine."""
    from streams.domain.engine import Engine
    from streams.domain.policy import SlaPolicy
    from streams.worker.metrics import families
    eng = Engine(SlaPolicy.load())
    for e in events:
        eng.feed(e.topic, e.value)
    eng.finish()
    out = {}
    totals = {(corridor, "all"): tot for corridor, tot in eng.totals.items()}
    for fam in families(totals, eng.gauges(), eng.latest):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return merge_partitions(out), eng
