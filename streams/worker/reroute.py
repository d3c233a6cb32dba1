"""Records read on the wrong partition are sent on to the right one, through an internal topic.

The join is co-partitioned (docs/semantics.md "The join"): every record must be on the partition
that Kafka's default partitioner gives its key (murmur2, streams.domain.partitioning). A producer
with another partitioner (librdkafka's default, `consistent_random`, is CRC32) puts records
elsewhere, where they would be joined with the wrong state and counted twice. So the agent that
reads a valid input record on another partition hands it to `Rerouter.__call__`, which sends it
unchanged, with its source coordinates in headers, to `<app>-rerouted-<kind>`
(Settings.rerouted_topics) on the key's partition. The same agent reads that topic, and the record
goes through the ordinary path there: decoded, deduplicated by event_id, dead-lettered with the
coordinates of the record as it was produced (`as_produced`).

Only records that decode are sent on: a malformed one is dead-lettered where it is read. The send
is a direct producer send, like the join topics' (Pipeline.send_internal): the producer is flushed
before every offset commit, so the rerouted copy is on the broker before the original's offset is
committed; after a crash the original is read and sent on again, and the copy that is read twice
is a duplicate of an event_id already applied.

Each rerouted record is counted in `corridor_events_rerouted_total{topic}` (the input topic), and a
warning names the topic and the producer setting to fix, at most once a minute per topic.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Callable, NamedTuple

from streams.domain.partitioning import partition_for
from streams.settings import Settings
from streams.worker.sends import log_send_error

log = logging.getLogger("corridor")

#: A warning per input topic at most this often (seconds); the count says how many were not logged.
WARN_EVERY_SECONDS = 60.0
#: Headers the rerouted copy carries: where the record was produced (dead letters point there).
H_TOPIC, H_PARTITION, H_OFFSET = ("corridor.rerouted.topic", "corridor.rerouted.partition",
                                  "corridor.rerouted.offset")
_OURS = (H_TOPIC, H_PARTITION, H_OFFSET)


class Produced(NamedTuple):
    """A rerouted record as its producer wrote it: what a dead letter names and carries."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list


def _header_list(headers) -> list:
    if not headers:
        return []
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers)


def as_produced(message):
    """The input record a rerouted copy was made from (its topic, partition, offset and own
    headers); any other message unchanged."""
    headers = _header_list(message.headers)
    found = {k: v for k, v in headers if k in _OURS}
    if len(found) != len(_OURS):
        return message
    return Produced(found[H_TOPIC].decode(), int(found[H_PARTITION]), int(found[H_OFFSET]),
                    message.key, message.value, [(k, v) for k, v in headers if k not in _OURS])


class Rerouter:
    """`await rerouter(message)`: True if the message was on the wrong partition of an input
    topic and has been sent on to the right one (the caller then skips it); False otherwise.

    `producer()` returns the app's producer (faust's, created lazily); `counters` is the
    pipeline's EventCounters (its `rerouted` counter, labelled by input topic).
    """

    def __init__(self, settings: Settings, producer: Callable[[], object], counters,
                 clock: Callable[[], float] = time.monotonic):
        self.partitions = settings.partitions
        #: input topic -> its rerouted topic
        self.topics = {settings.input_topics[kind]: name
                       for kind, name in settings.rerouted_topics.items()}
        self._producer = producer
        self._counters = counters
        self._clock = clock
        self._warned: dict[str, float] = {}       # input topic -> when it was last logged
        self._hidden: dict[str, int] = {}         # input topic -> rerouted since, not logged
        #: key -> its partition: a shipment's events share a key (murmur2 in Python is ~1.3 us;
        #: this check runs for every input record). Cleared when it reaches CACHE_KEYS.
        self._partition_of: dict[bytes, int] = {}

    CACHE_KEYS = 1 << 17

    def misplaced(self, message) -> bool:
        """An input record whose key belongs on another partition (murmur2)."""
        key = message.key
        if not key or message.topic not in self.topics:
            return False
        cache = self._partition_of
        right = cache.get(key)
        if right is None:
            if len(cache) >= self.CACHE_KEYS:
                cache.clear()
            right = cache[key] = partition_for(key, self.partitions)
        return right != message.partition

    async def __call__(self, message) -> bool:
        if not self.misplaced(message):
            return False
        topic = message.topic
        right = partition_for(message.key, self.partitions)
        headers = _header_list(message.headers) + [
            (H_TOPIC, topic.encode()), (H_PARTITION, str(message.partition).encode()),
            (H_OFFSET, str(message.offset).encode())]
        fut = await self._producer().send(self.topics[topic], message.key, message.value, right,
                                          message.timestamp or None, headers)
        fut.add_done_callback(log_send_error)
        self._counters.inc(self._counters.rerouted, topic)
        self._warn(message, right)
        return True

    def _warn(self, message, right: int) -> None:
        topic = message.topic
        now = self._clock()
        last = self._warned.get(topic)
        if last is not None and now - last < WARN_EVERY_SECONDS:
            self._hidden[topic] = self._hidden.get(topic, 0) + 1
            return
        hidden = self._hidden.pop(topic, 0)
        more = f" ({hidden} more since the last warning)" if hidden else ""
        self._warned[topic] = now
        log.warning(
            "%s[%d]@%d: key %r belongs on partition %d (murmur2 of the key, Kafka's default "
            "partitioner); sent on through %s%s. Its producer partitions keys otherwise: with "
            "librdkafka clients (confluent-kafka, kcat) set partitioner=murmur2_random. "
            "Counted in corridor_events_rerouted_total.", topic, message.partition,
            message.offset, message.key[:100], right, self.topics[topic], more)
