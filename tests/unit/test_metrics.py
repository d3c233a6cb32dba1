"""The cached text of the totals families is byte for byte what prometheus_client renders."""
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from streams.domain import aggregate
from streams.worker.metrics import CorridorCollector, TotalsExposition


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
