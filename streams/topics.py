"""Topic names: inputs, internal join and reroute topics, dead-letter topics."""
from __future__ import annotations

from streams.settings import Settings

DLQ_SUFFIX = ".dlq"


def dlq_name(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


def all_topics(settings: Settings) -> dict[str, int]:
    """Every topic the worker reads or writes, with its partition count (tables' changelogs aside)."""
    names = list(settings.input_topics.values())
    names += [settings.topic_order_links, settings.topic_shipment_orders]
    names += list(settings.rerouted_topics.values())
    names += [dlq_name(t) for t in settings.input_topics.values()]
    return {name: settings.partitions for name in names}
