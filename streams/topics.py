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


#: The worker's tables, with their partition count (None: the settings' partitions). Faust names
#: each changelog "<app id>-<table>-changelog" and creates it, compacted, at start.
TABLES = {"timelines": None, "orders": None, "totals": None, "clock": 1, "risk": 1}


def changelog_topics(settings: Settings) -> dict[str, int]:
    """The tables' changelog topics with their partition counts (compacted)."""
    return {f"{settings.app_id}-{name}-changelog": parts or settings.partitions
            for name, parts in TABLES.items()}


def faust_topics(settings: Settings) -> dict[str, int]:
    """Every topic Faust itself would create: the changelogs and its assignor's leader topic.
    corridor creates them first, with the replication factor and configs of the settings (Faust
    would create them with its own replication factor)."""
    return {**changelog_topics(settings), f"{settings.app_id}-__assignor-__leader": 1}


def topic_configs(settings: Settings) -> dict[str, str]:
    """Topic configs for every topic corridor creates (min.insync.replicas when set)."""
    if settings.min_insync_replicas:
        return {"min.insync.replicas": str(settings.min_insync_replicas)}
    return {}
