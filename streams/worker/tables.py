"""The worker's table class (`Utf8KeyTable`: UTF-8 keys, orjson values, changelog written behind)
and the two codecs it names. streams.domain.records describes the values; docs/semantics.md
"Crashes" how the written-behind changelog keeps the figures exact."""
from __future__ import annotations

import faust
import orjson
from faust.serializers import codecs
from faust.types import TP


class _Utf8(codecs.Codec):
    """Keys as plain UTF-8 (what producers send), so table routing hashes the same bytes."""

    def _dumps(self, obj) -> bytes:
        return obj.encode() if isinstance(obj, str) else obj

    def _loads(self, s: bytes) -> str:
        return s.decode()


class _OrJson(codecs.Codec):
    """Table values as JSON through orjson: the same JSON as faust's `json` codec (tuples as lists,
    non-str keys as strings), several times faster; the changelog format does not change."""

    def _dumps(self, obj) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)

    def _loads(self, s: bytes):
        return orjson.loads(s)


_ORJSON = _OrJson()


def register_codecs() -> None:
    """Register the `utf8` key and `orjson` value codecs with faust (create_app calls this)."""
    codecs.register("utf8", _Utf8())
    codecs.register("orjson", _ORJSON)


_DELETED = object()


class Utf8KeyTable(faust.Table):
    """A Table whose str keys are serialized as plain UTF-8, like the producers' keys, and whose
    changelog is written behind, once per key per commit.

    Keys: Faust derives a table's key serializer from `key_type` (json for str) and ignores the
    schema's, so changelog keys would be b'"S1"' and `table_route` would hash them to another
    partition than the one that holds the shipment, sending view requests to the wrong worker.
    Values (plain dicts) go through orjson rather than faust's json codec: the same JSON.

    Write-behind: Faust sends one changelog record per write, and each costs more CPU than the
    event that caused it (docs/performance.md). Here a write updates the store at once (reads and
    views see it) and remembers (partition, value) per key. Before every offset commit the
    producer takes the pending records of every table at one instant (`take_changelog`) and sends
    them rank by rank (`faust_patches.write_changelogs`), so a committed event's state changes
    are on the broker before its offset is. A crash before that loses the pending records with
    the uncommitted offsets, and the events are processed again. Timelines and orders go first,
    the totals they count after (docs/semantics.md "Crashes").
    """

    flush_rank = 0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending_changelog: dict = {}

    def _serializer_from_type(self, typ):
        if typ is str:
            return "utf8"
        return "orjson" if typ is None else super()._serializer_from_type(typ)

    def on_key_set(self, key, value) -> None:
        # The partition of the event being processed, as Faust would send it (raises outside one).
        self._pending_changelog[key] = (self.partition_for_key(key), value)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key) -> None:
        self._pending_changelog[key] = (self.partition_for_key(key), _DELETED)
        self._sensor_on_del(self, key)

    def fast_get(self):
        """A `get(key)` for the agents' hot path: with the memory store, that store's dict's own
        `get`, without faust's `Mapping.get` -> `__getitem__` -> `__contains__` -> `__missing__`
        chain (four Python calls, and an exception for a new key: ~3 % of a worker's time); with
        any other store, the table's `get`. Reads see every write at once either way."""
        from faust.stores.memory import Store as MemoryStore
        store = self.data
        if type(store) is MemoryStore and type(store.data) is dict:
            return store.data.get
        return self.get

    def take_changelog(self) -> list[tuple]:
        """The pending records as (partition, key bytes, value bytes or None for a tombstone),
        serialized now, so that they are the values of this instant; nothing is pending after."""
        pending, self._pending_changelog = self._pending_changelog, {}
        key_serializer, value_serializer = self.key_serializer, self.value_serializer
        if key_serializer == "utf8" and value_serializer == "orjson":
            # The codecs faust's Registry would call (_Utf8, _OrJson), without its per-record
            # dispatch: a quarter of the time, and this runs in one go at a commit, so the event
            # loop waits for it.
            dumps = _ORJSON._dumps
            return [(partition, key.encode(), None if value is _DELETED else dumps(value))
                    for key, (partition, value) in pending.items()]
        topic = self.changelog_topic
        return [(partition, topic.prepare_key(key, key_serializer)[0],
                 None if value is _DELETED else topic.prepare_value(value, value_serializer)[0])
                for key, (partition, value) in pending.items()]

    def on_changelog_written(self, partition: int, offset: int) -> None:
        """The broker acknowledged this table's records up to `offset` in changelog `partition`
        (what faust's per-record callback does: the RocksDB store remembers it for recovery)."""
        self.data.set_persisted_offset(TP(self.changelog_topic.get_topic_name(), partition), offset)
