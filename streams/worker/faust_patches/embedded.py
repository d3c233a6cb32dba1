"""Workarounds for the embedded broker (Tansu, docs/broker.md), applied in the embedded profile
only: on Apache Kafka neither is needed.

The upstream functions these replace, wrap or rely on, and their fingerprints, are in
streams.worker.faust_patches.UPSTREAM (patch module "embedded").
"""
from __future__ import annotations


def _embedded_leave_group_patch() -> None:
    """Tansu starts groups at generation 0 and aiokafka skips LeaveGroup there (docs/broker.md §2)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    if getattr(GroupCoordinator, "_corridor_patched", False):
        return
    original = GroupCoordinator._maybe_leave_group

    async def _leave(self):
        if self.generation == 0 and self._group_instance_id is None and self.member_id:
            self.generation = 1 << 30      # Tansu ignores the generation in LeaveGroup
        await original(self)
    GroupCoordinator._maybe_leave_group = _leave
    GroupCoordinator._corridor_patched = True


#: Embedded profile: the longest a fetch may wait for records (faust hard-codes 1500 ms).
EMBEDDED_FETCH_MAX_WAIT_MS = 100


def _embedded_fetch_wait_patch() -> None:
    """Tansu answers a fetch only when fetch_max_wait_ms is over, even when records arrived sooner
    (Kafka answers as soon as fetch_min_bytes is there), and faust hard-codes 1500 ms, so every
    hop waited ~0.4-0.75 s (docs/performance.md: event-to-metric p99 0.83 s at 200 events/s, 0.16 s
    with 100 ms). Embedded profile only: on Kafka the wait ends when records arrive."""
    import aiokafka
    if getattr(aiokafka.AIOKafkaConsumer, "_corridor_fetch_patched", False):
        return
    original = aiokafka.AIOKafkaConsumer.__init__

    def __init__(self, *args, **kwargs):
        if kwargs.get("fetch_max_wait_ms", 0) > EMBEDDED_FETCH_MAX_WAIT_MS:
            kwargs["fetch_max_wait_ms"] = EMBEDDED_FETCH_MAX_WAIT_MS
        original(self, *args, **kwargs)
    aiokafka.AIOKafkaConsumer.__init__ = __init__
    aiokafka.AIOKafkaConsumer._corridor_fetch_patched = True

