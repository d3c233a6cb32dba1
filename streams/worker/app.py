"""create_app(settings) -> faust.App: the only place that wires topics, tables, agents, views, metrics.

Data flow (every topic and changelog has `settings.partitions` partitions, so Faust's assignor
co-partitions all of them: partition p of every topic lives on the same worker):

    orders (key order_id) ─┐                         ┌─> <app>-shipment-orders (key shipment_id)
    <app>-order-links ─────┴─ agent join_orders ─────┘   order events re-keyed to their shipments
        (key order_id)         table orders

    shipments, customs-events, <app>-shipment-orders ── agent timelines ── table timelines
        (key shipment_id)                                  │              table totals  "<p>|<corridor>"
                                                           └─> <app>-order-links      table clock   "<p>"

The per-corridor totals are keyed by source partition, so each partition's totals travel with it
(changelog partition p) and a worker exports only the partitions it owns.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import time
import weakref
from collections import defaultdict
from typing import Callable

import faust
import orjson
from faust.sensors import Monitor
from faust.types import TP
from faust.serializers import codecs
from faust.streams import _current_event
from prometheus_client import CollectorRegistry, generate_latest

from streams.worker import faust_patches
from streams.contract.codec import Decoder, Rejected
from streams.domain import aggregate, orders as order_side, timeline, watermark as wm
from streams.domain.partitioning import partition_for
from streams.domain.policy import SlaPolicy
from streams.domain.stages import parse_time
from streams.worker.metrics import (AwaitingCollector, CorridorCollector, EventCounters, TotalsExposition,
                      WorkerCollector)
from streams.worker.reroute import Rerouter, as_produced
from streams.settings import Settings
from streams.topics import dlq_name

log = logging.getLogger("corridor")

CLOCK_PERSIST_SECONDS = 1.0      # how often a worker shares its partitions' clocks
SETTLE_IDLE_SECONDS = 1.0        # how often idle partitions are settled against the wall clock
SETTLE_MARK_SECONDS = 0.02       # how long an agent reuses a partition's settle watermark
#: The source under which settled observations are numbered (totals "o", timeline "lobs").
FIN_SOURCE = "#fin"
#: A topic partition with no backlog and no event for this long stops holding the watermark back.
TOPIC_IDLE_SECONDS = 300.0
#: Faust's count-based commit, set out of reach (faust_settings).
COMMIT_EVERY_MESSAGES = 10**9
#: Producer record batch size: half of faust's default producer_max_request_size (1,000,000).
PRODUCER_BATCH_BYTES = 512 * 1024
#: Rejections decided by the pipeline rather than the decoder (codec.REASONS has the others).
PIPELINE_REASONS = ("expired",)


class DueIndex:
    """When each key of a table is next due for something (`due_of(state)`: an event time, or
    None): a min-heap of (time, key) per partition.

    Built lazily by one scan of the table per partition after an assignment (the table is the
    truth; the heap is only an index), kept up to date as keys change (`note`), and consumed by the
    agents while they process an event of that partition, or by a timer that names the partition,
    where Faust allows the write (it goes to the changelog partition of the key).
    """

    def __init__(self, table, due_of: Callable[[dict], float | None]):
        self.table = table
        self.due_of = due_of
        self._heaps: dict[int, list] = {}

    def note(self, partition: int, key: str, state: dict) -> None:
        heap = self._heaps.get(partition)
        if heap is not None and (t := self.due_of(state)) is not None:
            heapq.heappush(heap, (t, key))

    def _heap(self, partition: int) -> list:
        heap = self._heaps.get(partition)
        if heap is None:
            due_of = self.due_of
            heap = self._heaps[partition] = [
                (t, key) for key, st in self.table.items()
                if st.get("p") == partition and (t := due_of(st)) is not None]
            heapq.heapify(heap)
        return heap

    def due(self, partition: int) -> float | None:
        """The earliest time at which a key of the partition is due (None: none is)."""
        heap = self._heaps.get(partition)
        if heap is None:
            heap = self._heap(partition)
        return heap[0][0] if heap else None

    def pop_due(self, partition: int, mark: float) -> list[tuple[str, dict]]:
        """(key, state) of every key due before `mark` and unchanged since it was noted; their
        entries are consumed. A key noted twice for the same time comes once: a RocksDB store
        hands out a copy per read, and two copies would both be acted on."""
        heap = self._heap(partition)
        out: dict[str, dict] = {}
        while heap and heap[0][0] < mark:
            t, key = heapq.heappop(heap)
            if key in out:
                continue
            state = self.table.get(key)
            if state is not None and self.due_of(state) == t:
                out[key] = state
        return list(out.items())

    def forget(self, partitions) -> None:
        for p in partitions:
            self._heaps.pop(p, None)


class Expiry(DueIndex):
    """When each key of a table may be forgotten (`expires_at`), and forgetting it: the
    tombstone goes to the changelog partition of the event being processed, which is the key's."""

    def __init__(self, table, expires_at: Callable[[dict], float | None],
                 reason_of: Callable[[dict], str], count: Callable[[str], None]):
        super().__init__(table, expires_at)
        self.reason_of = reason_of
        self.count = count                  # called with the reason of each key forgotten

    def expire(self, partition: int, mark: float) -> int:
        gone = self.pop_due(partition, mark)
        for key, state in gone:
            del self.table[key]
            self.count(self.reason_of(state))
        return len(gone)


def settle_index(table, grace: float) -> DueIndex:
    """When each shipment next has something to settle (timeline.settle_due)."""
    return DueIndex(table, lambda state: timeline.settle_due(state, grace))


class _TimerEvent:
    """Stands for the event being processed while a timer writes a table: Faust takes the
    changelog partition (and the RocksDB store its partition) from the current event."""

    def __init__(self, topic: str, partition: int):
        self.message = _TimerMessage(topic, partition)


class _TimerMessage:
    def __init__(self, topic: str, partition: int):
        self.topic, self.partition = topic, partition


class _Utf8(codecs.Codec):
    """Keys as plain UTF-8 (what producers send), so table routing hashes the same bytes."""

    def _dumps(self, obj) -> bytes:
        return obj.encode() if isinstance(obj, str) else obj

    def _loads(self, s: bytes) -> str:
        return s.decode()


codecs.register("utf8", _Utf8())


class _OrJson(codecs.Codec):
    """Table values as JSON through orjson: the same JSON as faust's `json` codec (tuples as lists,
    non-str keys as strings), several times faster; the changelog format does not change."""

    def _dumps(self, obj) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)

    def _loads(self, s: bytes):
        return orjson.loads(s)


_ORJSON = _OrJson()
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


class OffsetsMonitor(Monitor):
    """Faust's monitor, keeping only what corridor reads: the read, end and committed offsets per
    topic partition (consumer lag, watermarks). The stock monitor also times every message,
    stream event, table access and send, for figures nothing here exports."""

    def on_message_in(self, tp, offset, message) -> None:
        self.tp_read_offsets[tp] = offset

    def on_stream_event_in(self, tp, offset, stream, event):
        return None

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        pass

    def on_message_out(self, tp, offset, message) -> None:
        pass

    def on_table_get(self, table, key) -> None:
        pass

    def on_table_set(self, table, key, value) -> None:
        pass

    def on_table_del(self, table, key) -> None:
        pass

    def on_send_initiated(self, producer, topic, message, keysize, valsize):
        return None

    def on_send_completed(self, producer, state, metadata) -> None:
        pass


def faust_settings(settings: Settings) -> dict:
    """Faust settings for the chosen profile. Embedded-broker workarounds stay in that profile."""
    conf = dict(
        Table=Utf8KeyTable,
        Monitor=OffsetsMonitor,
        broker=settings.broker,
        store=settings.store,
        datadir=settings.data_dir,
        topic_partitions=settings.partitions,
        table_standby_replicas=settings.standby_replicas,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        canonical_url=f"http://{settings.web_host}:{settings.web_port}",
        # The web port serves only what corridor documents: metrics, health, the views.
        web_tables_enabled=False, web_stats_enabled=False, web_graph_enabled=False,
        web_router_enabled=False,
        consumer_auto_offset_reset="earliest",
        key_serializer="utf8",
        value_serializer="raw",
        # The Cython stream iterator takes an event already in its queue without awaiting the
        # channel (faust's opt-in repair of that fast path): ~3 % less CPU per event.
        cython_optimizations=True,
        # Commits come from the commit interval only. Faust also commits every 10,000 messages
        # from inside its fetcher loop, which then hands no message to the streams until the
        # commit's changelog records are acknowledged (docs/performance.md "Latency").
        broker_commit_every=COMMIT_EVERY_MESSAGES,
        # A commit sends thousands of changelog records (~2 KiB each); aiokafka holds one open
        # batch per partition and a send into a full one waits until it is sent, so with faust's
        # 16 KiB batches a commit took 0.5-1.5 s of round trips at 5,000 events/s.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # faust's check only raises ConsistencyError (the worker exits) when a store is past its
        # changelog's end; corridor lowers such offsets itself and goes on (faust_patches
        # `_recovery_ends_patch`, docs/semantics.md "Crashes").
        recovery_consistency_check=False,
    )
    from streams.security import faust_credentials
    credentials = faust_credentials(settings)
    if credentials is not None:
        conf["broker_credentials"] = credentials
    if settings.profile == "embedded":
        # Tansu (docs/broker.md): the group session fixes the join delay (session/2) and the
        # eviction of dead members. ListOffsets(latest) answers the last batch's base offset + 1,
        # which would lose a changelog's tail on recovery: the producer ends each flush with
        # markers (faust_patches, `corridor_end_markers`) rather than sending batches of 1.
        conf.update(broker_session_timeout=2.0, broker_heartbeat_interval=0.5,
                    broker_commit_interval=0.3)
    return conf


class Pipeline:
    """Holds what the agents, views and the metrics collector share."""

    def __init__(self, settings: Settings, policy: SlaPolicy):
        self.settings = settings
        self.policy = policy
        self.registry = CollectorRegistry(auto_describe=False)
        self.counters = EventCounters(self.registry)
        # The totals families are rendered by TotalsExposition (cached per record), the rest here.
        self.registry.register(CorridorCollector(lambda: self.snapshot(totals=False), totals=False))
        self.totals_text = TotalsExposition()
        self.registry.register(WorkerCollector(self.offsets))
        self.registry.register(AwaitingCollector(self.waiting_counts))
        self.decoders = {kind: Decoder(kind, max_bytes=settings.max_message_bytes)
                         for kind in settings.input_topics}
        self.kind_of = {name: kind for kind, name in settings.input_topics.items()}
        self.kind_of[settings.topic_shipment_orders] = "forwarded"
        self.kind_of[settings.topic_order_links] = "link"
        # Forwarded order events are not in the shipments side: they carry order times (days
        # before the parcel moves), and a shipment expires only once observed, when its order
        # has arrived anyway.
        self.side_topics = {
            "shipments": (settings.topic_shipments, settings.topic_customs),
            "orders": (settings.topic_orders, settings.topic_order_links)}
        # An input topic's records read on the wrong partition come back on the right one through
        # <app>-rerouted-<kind> (streams/worker/reroute.py): the same kind, the same side of the join.
        for kind, name in settings.rerouted_topics.items():
            self.kind_of[name] = kind
            side = "orders" if kind == "orders" else "shipments"
            self.side_topics[side] = (*self.side_topics[side], name)
        #: topic -> the sides of the join it belongs to (note_time keeps each side's bound).
        self._sides_of: dict[str, tuple[str, ...]] = {
            topic: tuple(side for side, names in self.side_topics.items() if topic in names)
            for names in self.side_topics.values() for topic in names}
        #: (side, partition) -> the latest event time processed on any topic of that side: an
        #: upper bound of its watermark, read per event (clock_bound, may_expire).
        self._side_bound: dict[tuple[str, int], float] = {}
        self._clock: dict[int, float] = {}
        #: (topic, partition) -> latest event time processed there, the offset of the last message
        #: processed, and the wall time of that message: what `watermark` needs of each topic
        #: partition (domain/watermark.py has the rule).
        self._topic_clock: dict[tuple[str, int], float] = {}
        self._topic_offset: dict[tuple[str, int], int] = {}
        self._topic_seen: dict[tuple[str, int], float] = {}
        #: Links sent to each order-links partition and not yet read back (links in flight):
        #: the earliest event time among those sent since the partition was last read up to
        #: everything sent, the sends not yet acknowledged, and the highest acknowledged offset.
        self._links_inflight: dict[int, float] = {}
        self._links_unacked: dict[int, int] = defaultdict(int)
        self._links_sent_max: dict[int, int] = {}
        self._global_mark: tuple[float, float | None] | None = None   # (wall time, value) cache
        self._settle_marks: dict[int, tuple[float, float | None]] = {}  # p -> (wall, mark)
        self._expiry_marks: dict[int, tuple[float, float | None]] = {}  # p -> (wall, watermark)
        self.open_index: dict[int, dict[str, tuple]] = {}   # partition -> {shipment: open entry}
        #: partition -> shipments with parcel events whose primary order is not known yet.
        self.awaiting_index: dict[int, set[str]] = {}
        #: partition -> ended shipments whose figures are not final yet (within the grace).
        self.pending_index: dict[int, set[str]] = {}
        #: Observations of settled shipments are numbered per partition (FIN_SOURCE, seq): the
        #: state remembers its last ones, the totals the last number they counted, so that after
        #: a crash that saved the states but not the totals `reconcile` adds what is missing.
        self._seq: dict[int, int] = {}
        self._clock_scanned: set[int] = set()     # partitions whose states were read for the clock
        self.assigned = False                      # has the group given this worker an assignment
        self._last_reject_log = 0.0
        self._suppressed = 0

    # ---- ownership ----------------------------------------------------------------------------
    def owned_partitions(self) -> set[int]:
        topic = self.settings.topic_shipments
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    def open_entries(self, owned: set[int]):
        """`timeline.open_entry` of every open shipment of the owned partitions.

        One dict per partition, kept current by the timelines agent (`note_open`) and built by one
        scan of the table the first time a partition is read after it was assigned (the table,
        recovered from its changelog, is the truth; the index only saves the scrape a pass over it).
        """
        self._build_open_index(owned)
        for p in owned:
            yield from self.open_index[p].values()

    def _build_open_index(self, owned: set[int]) -> None:
        todo = owned - set(self.open_index)
        if not todo:
            return
        built = {p: {} for p in todo}
        awaiting = {p: set() for p in todo}
        pending = {p: set() for p in todo}
        for sid, state in self.timelines.items():
            idx = built.get(state.get("p"))
            if idx is None:
                continue
            if (entry := timeline.open_entry(state, self.policy)) is not None:
                idx[sid] = entry
            if timeline.awaiting_order(state):
                awaiting[state["p"]].add(sid)
            if state["end"] is not None and not timeline.is_final(state):
                pending[state["p"]].add(sid)
        self.open_index.update(built)
        self.awaiting_index.update(awaiting)
        self.pending_index.update(pending)

    def warm_open_index(self) -> None:
        """Build the index of newly assigned partitions off the scrape path (a timer calls this):
        at 1M open shipments the build takes seconds, a scrape of a built index 0.25 s."""
        if self.assigned and not self.app.rebalancing and not getattr(self.app, "in_recovery", False):
            self._build_open_index(self.owned_partitions())

    def note_open(self, partition: int, sid: str, state: dict) -> None:
        idx = self.open_index.get(partition)
        if idx is None:
            return
        entry = timeline.open_entry(state, self.policy)
        if entry is None:
            idx.pop(sid, None)
        else:
            idx[sid] = entry
        waiting = self.awaiting_index.get(partition)
        if waiting is not None:
            if timeline.awaiting_order(state):
                waiting.add(sid)
            else:
                waiting.discard(sid)
        pending = self.pending_index.get(partition)
        if pending is not None:
            if state["end"] is not None and not timeline.is_final(state):
                pending.add(sid)
            else:
                pending.discard(sid)

    def waiting_counts(self) -> dict[str, dict[int, int]]:
        """{"awaiting_order": {partition: n}, "pending_final": {partition: n}} of the partitions
        owned now (indexed like the open shipments)."""
        if not self._settled():
            return {}
        owned = self.owned_partitions()
        self._build_open_index(owned)
        return {"awaiting_order": {p: len(self.awaiting_index.get(p, ())) for p in owned},
                "pending_final": {p: len(self.pending_index.get(p, ())) for p in owned}}

    def stream_time(self, owned: set[int]) -> float | None:
        """The event-time clock over the partitions this worker owns (see docs/semantics.md)."""
        self._scan_clock(owned)
        latest = max((t for k, t in self.clock.items() if k[0] == "p" and t is not None),
                     default=None)
        local = max((t for p, t in self._clock.items() if p in owned), default=None)
        candidates = [t for t in (latest, local) if t is not None]
        return aggregate.event_now(max(candidates) if candidates else None, time.time(),
                                   self.settings.live_lag_seconds)

    def _scan_clock(self, owned: set[int]) -> None:
        """Once per partition assignment, take the latest event time from the recovered timelines.

        The shared clock is written once a second, so after a restart or a rebalance it may lag;
        the timelines hold each shipment's latest event time exactly.
        """
        todo = owned - self._clock_scanned
        if not todo or self.app.rebalancing or getattr(self.app, "in_recovery", False):
            return
        for state in self.timelines.values():
            p = state.get("p")
            if p in todo and state["last"] is not None and state["last"] > self._clock.get(p, float("-inf")):
                self._clock[p] = state["last"]
        self._clock_scanned |= todo

    def on_partitions_revoked(self, revoked) -> None:
        gone = {tp.partition for tp in revoked}
        self._clock_scanned -= gone
        for p in gone:
            self._clock.pop(p, None)
            self.open_index.pop(p, None)
            self.awaiting_index.pop(p, None)
            self.pending_index.pop(p, None)
        self._topic_clock = {k: v for k, v in self._topic_clock.items() if k[1] not in gone}
        self._side_bound = {k: v for k, v in self._side_bound.items() if k[1] not in gone}
        self._topic_offset = {k: v for k, v in self._topic_offset.items() if k[1] not in gone}
        read = self.app.monitor.tp_read_offsets     # so a partition given back starts unread
        for tp in [tp for tp in read if tp.partition in gone]:
            del read[tp]
        self._global_mark = None
        for p in gone:
            self._seq.pop(p, None)
            self._settle_marks.pop(p, None)
            self._expiry_marks.pop(p, None)
        self.settle_index.forget(gone)
        self.timeline_expiry.forget(gone)
        self.order_expiry.forget(gone)

    def watermark(self, partition: int, side: str = "shipments") -> float | None:
        """Event time that every topic of one side of the join has reached on this partition
        (None: nothing may be forgotten yet). The rule is `domain.watermark`: a topic partition
        bounds it at the latest event time processed there; one not read at all blocks it unless
        it is known to be empty; one caught up and silent for `watermark.IDLE_AFTER_SECONDS`
        stops bounding it; links sent and not yet read back bound it at their event time. The
        sides are kept apart: the orders topic runs ahead of the shipments that link to it."""
        progress = [self._progress(topic, partition) for topic in self.side_topics[side]]
        return wm.finite(wm.side_watermark(progress, self.settings.idle_seconds),
                         [p.clock for p in progress])

    def _progress(self, topic: str, partition: int) -> wm.Progress:
        key = (topic, partition)
        clock = self._topic_clock.get(key)
        seen = self._topic_seen.get(key)
        quiet = float("inf") if seen is None else time.monotonic() - seen
        inflight = self._links_inflight.get(partition) if topic == self.settings.topic_order_links \
            else None
        if clock is not None and quiet < self.settings.idle_seconds:
            # Read and not quiet: it bounds at its clock whatever its end (wm.bound), so the
            # consumer's offsets are not needed (this runs for many events).
            return wm.Progress(clock=clock, quiet_for=quiet, in_flight=inflight)
        end, position = self._end_and_position(TP(topic, partition))
        done = self._topic_offset.get(key)
        if done is not None:
            position = done + 1            # what the agent has processed, not what is buffered
        elif self.app.monitor.tp_read_offsets.get(TP(topic, partition)) is not None:
            position = None                # delivered to the stream, not processed yet
        return wm.Progress(
            clock=clock,
            caught_up=end is not None and position is not None and position >= end,
            quiet_for=quiet, in_flight=inflight)

    def _end_and_position(self, tp) -> tuple[int | None, int | None]:
        """(high-water mark, fetch position) of an assigned topic partition as the consumer knows
        them now; None where it does not know yet."""
        end = self.app.monitor.tp_end_offsets.get(tp)
        position = None
        consumer = getattr(getattr(self.app.consumer, "_thread", None), "_consumer", None)
        if consumer is not None:
            try:
                state = consumer._subscription.subscription.assignment.state_value(tp)
            except AttributeError:
                state = None
            if state is not None:
                if state.highwater is not None:
                    end = state.highwater if end is None else max(end, state.highwater)
                if state.has_valid_position:
                    position = state.position
        return end, position

    def global_watermark(self) -> float | None:
        """The shipment-side watermark that every partition has reached (the partitions this
        worker owns from its own reading, the others as their owners shared them through the
        clock table); None until every partition has one. Cached for 0.1 s of wall time."""
        wall = time.monotonic()
        cached = self._global_mark
        if cached is not None and wall - cached[0] < 0.1:
            return cached[1]
        owned = self.owned_partitions()
        local = {p: self.watermark(p) for p in owned}
        shared = {p: self.clock.get(f"w{p}") for p in range(self.settings.partitions)
                  if p not in owned}
        value = wm.global_watermark(local, shared, self.settings.partitions)
        self._global_mark = (wall, value)
        return value

    # ---- settling: exceptions once the watermark passes them, ends after the grace ------------
    def settle_mark(self, partition: int) -> float | None:
        """The watermark a shipment of the partition is settled against: its shipment side's;
        when every topic of that side is caught up and quiet (the input has ended, for now), the
        wall clock: a replay's last shipments become final, and a live stream's stay open for the
        grace period in real time."""
        progress = [self._progress(topic, partition) for topic in self.side_topics["shipments"]]
        mark = wm.side_watermark(progress, self.settings.idle_seconds)
        if mark == wm.POS_INF:
            return time.time()
        return wm.finite(mark, [p.clock for p in progress])

    def clock_bound(self, partition: int) -> float:
        """An upper bound of the partition's settle mark without computing it: the latest event
        time processed on its shipment side (or the wall clock if nothing was)."""
        bound = self._side_bound.get(("shipments", partition))
        return time.time() if bound is None else bound

    def settle(self, partition: int, sid: str, state: dict, mark: float | None) -> None:
        """Settle one shipment (timeline.settle), count what it observed, note when it is next due.
        The caller writes the state."""
        obs = timeline.settle(state, self.policy, mark, self.settings.grace_seconds)
        if obs:
            seq = self._seq[partition] = self._seq.get(partition, 0) + 1
            timeline.remember(state, FIN_SOURCE, seq, obs)
            _add_observations(self, partition, seq, obs)
        self.settle_index.note(partition, sid, state)

    def settle_due(self, partition: int, mark: float | None) -> None:
        """Settle every shipment of the partition that the watermark has passed, and write it."""
        if mark is None:
            return
        for sid, state in self.settle_index.pop_due(partition, mark):
            self.settle(partition, sid, state, mark)
            self.timelines[sid] = state
            self.note_open(partition, sid, state)
            self.timeline_expiry.note(partition, sid, state)

    def maybe_settle(self, partition: int) -> None:
        """Settle what is due on the partition, if its watermark may have passed anything.

        The watermark is read from the consumer at most every SETTLE_MARK_SECONDS per partition
        (it cost 13 % of the worker's time when read per event while a topic lagged): settling a
        few milliseconds later changes nothing that arrives within the grace period."""
        due = self.settle_index.due(partition)
        if due is None or due >= self.clock_bound(partition):
            return
        mark = self.recent_settle_mark(partition)
        if mark is not None and due < mark:
            self.settle_due(partition, mark)

    def recent_watermark(self, partition: int) -> float | None:
        """The shipment side's `watermark`, read again at most every SETTLE_MARK_SECONDS (for
        forgetting ended shipments: doing it a few milliseconds later changes nothing). Not for
        the order side, which links in flight can hold back at any moment."""
        return _recent(self._expiry_marks, partition, self.watermark)

    def recent_settle_mark(self, partition: int) -> float | None:
        """`settle_mark`, read again at most every SETTLE_MARK_SECONDS."""
        return _recent(self._settle_marks, partition, self.settle_mark)

    def reconcile(self, partition: int) -> None:
        """Once per assignment, before the partition's first settle: add to the totals the
        observations that the recovered states remember and the totals lack (a crash between the
        two changelog ranks), and continue the partition's numbering after both."""
        if partition in self._seq:
            return
        prefix = f"{partition}|"
        counted = {key[len(prefix):]: (tot.get("o") or {}).get(FIN_SOURCE, 0)
                   for key, tot in self.totals.items() if key.startswith(prefix)}
        top = max(counted.values(), default=0)
        missing: dict[int, list] = defaultdict(list)
        for state in self.timelines.values():
            if state.get("p") != partition:
                continue
            for source, seq, obs in state.get("lobs", ()):
                if source != FIN_SOURCE:
                    continue
                top = max(top, seq)
                missing[seq].extend(o for o in obs if counted.get(o[1], 0) < seq)
        missing = {seq: obs for seq, obs in missing.items() if obs}
        for seq in sorted(missing):
            _add_observations(self, partition, seq, missing[seq])
        if missing:
            log.warning("partition %d: %d observations that the states remember were missing "
                        "from the totals (a crash between the changelog ranks); added",
                        partition, len(missing))
        self._seq[partition] = top

    # ---- links in flight ----------------------------------------------------------------------
    async def send_link(self, order_id: str, shipment_id: str, at: float | None) -> None:
        """Publish a link to the order side and hold that side's watermark at `at` until it has
        been read back: an order must not be forgotten while a link to it is in flight."""
        key = order_id.encode()
        p = partition_for(key, self.settings.partitions)    # where aiokafka's partitioner puts it
        value = orjson.dumps({"order_id": order_id, "shipment_id": shipment_id, "at": at})
        fut = await self.app.producer.send(self.settings.topic_order_links, key, value, p,
                                           None, None)
        if at is not None:
            old = self._links_inflight.get(p)
            self._links_inflight[p] = at if old is None else min(old, at)
        self._links_unacked[p] += 1
        fut.add_done_callback(lambda f, p=p: self._link_acked(p, f))

    def _link_acked(self, partition: int, fut) -> None:
        self._links_unacked[partition] -= 1
        if fut.cancelled() or fut.exception() is not None:
            _log_send_error(fut)
            return                          # the bound stays until a later link is read back
        offset = fut.result().offset
        if offset > self._links_sent_max.get(partition, -1):
            self._links_sent_max[partition] = offset

    def link_read(self, partition: int, offset: int) -> None:
        """The order side read the link at `offset`: once every link sent is read, none is in flight."""
        if self._links_unacked[partition] == 0 and offset >= self._links_sent_max.get(partition, -1):
            self._links_inflight.pop(partition, None)

    def _settled(self) -> bool:
        """Not rebalancing or recovering: half-recovered totals would read as a counter reset."""
        return not (self.app.rebalancing or getattr(self.app, "in_recovery", False))

    def owned_totals(self) -> dict[tuple[str, str], dict] | None:
        """{(corridor, partition): totals record} of the partitions owned now (one record each); None
        until settled (`_settled`)."""
        if not self._settled():
            return None
        owned = self.owned_partitions()
        out = {}
        for key, tot in self.totals.items():
            p, corr = key.split("|", 1)
            if int(p) in owned:
                out[(corr, p)] = tot
        return out

    def snapshot(self, totals: bool = True):
        """(corridor totals, open-shipment gauges, clock) of the partitions owned now; totals summed
        over partitions by corridor ({} with totals=False)."""
        if not self._settled():
            return {}, aggregate.OpenGauges(), None
        by_corridor: dict = {}
        for (corr, _p), tot in (self.owned_totals().items() if totals else ()):
            aggregate.merge(by_corridor.setdefault(corr, aggregate.new_totals()), tot)
        owned = self.owned_partitions()
        now = self.stream_time(owned)
        if now is None:
            return by_corridor, aggregate.OpenGauges(), None
        return by_corridor, aggregate.gauges_of(self.open_entries(owned), now), now

    def metrics_text(self) -> bytes:
        """The /metrics body. Totals carry a `partition` label: a series per partition moves whole
        to the new owner on a rebalance, where a per-worker sum would drop on the old owner (a
        counter reset to rate()) and jump on the new one."""
        return (generate_latest(self.registry)
                + self.totals_text.render(self.owned_totals() or {}).encode())

    def offsets(self):
        """(topic, partition, end offset, committed offset) of the stream partitions owned now."""
        monitor = self.app.monitor
        consumed = set(self.kind_of)
        rows = []
        for tp in self.app.assignor.assigned_actives():
            if tp.topic in consumed and tp in monitor.tp_end_offsets:
                rows.append((tp.topic, tp.partition, monitor.tp_end_offsets[tp],
                             monitor.tp_committed_offsets.get(tp)))
        return rows, len(self.owned_partitions())

    # ---- the join topics ----------------------------------------------------------------------
    async def send_internal(self, topic: str, key: str, value: bytes) -> None:
        """Send one record to an internal join topic, straight to the producer (aiokafka): no
        faust FutureMessage, publish step or per-record sensor calls. The key's bytes pick the
        partition, as they do for the producers' input records. The producer is flushed before
        every offset commit, so the record is on the broker before the offset of the event that
        caused it. A record the broker refuses is logged, as faust logs it."""
        fut = await self.app.producer.send(topic, key.encode(), value, None, None, None)
        fut.add_done_callback(_log_send_error)

    # ---- errors -------------------------------------------------------------------------------
    async def reject(self, message, err: Rejected) -> None:
        self.counters.inc(self.counters.rejected, message.topic, err.reason)
        message = as_produced(message)      # a rerouted copy: the record as its producer wrote it
        topic = message.topic
        headers = list(message.headers or ()) + [
            ("corridor.reason", err.reason.encode()),
            ("corridor.detail", err.detail.encode()[:1000]),
            ("corridor.source.topic", topic.encode()),
            ("corridor.source.partition", str(message.partition).encode()),
            ("corridor.source.offset", str(message.offset).encode()),
            ("corridor.rejected_at", _now_iso().encode()),
        ]
        await self.dlq[topic].send(key=message.key, value=message.value, headers=headers)
        # One log line per rejection, at most one per second; the count says how many were hidden.
        wall = time.monotonic()
        if wall - self._last_reject_log >= 1.0:
            more = f" (+{self._suppressed} more not logged)" if self._suppressed else ""
            log.warning("rejected %s[%d]@%d: %s: %s%s", topic, message.partition, message.offset,
                        err.reason, err.detail, more)
            self._last_reject_log, self._suppressed = wall, 0
        else:
            self._suppressed += 1

    def too_old(self, topic: str, partition: int, event: dict) -> bool:
        """An event for an unknown shipment that is older, by more than the retention, than what its
        own topic partition has carried: a straggler whose history was forgotten. (Measured against
        its own topic: another topic of the partition may legitimately run weeks ahead.)"""
        latest = self._topic_clock.get((topic, partition))
        if latest is None:      # nothing read yet since a restart or rebalance: the shared value
            latest = self.clock.get(f"t{partition}|{topic}")
        if latest is None:
            return False
        return parse_time(event["occurred_at"]) < latest - self.settings.retention_seconds

    # ---- clock --------------------------------------------------------------------------------
    def advance_clock(self, topic: str, partition: int, offset: int, event_time: float,
                      state_last: float) -> None:
        if state_last > self._clock.get(partition, float("-inf")):
            self._clock[partition] = state_last
        self.note_time(topic, partition, offset, event_time)

    def note_time(self, topic: str, partition: int, offset: int, event_time: float | None) -> None:
        """The agent processed the message at `offset` (event time `event_time`; None for a
        message that carries none, a rejected one)."""
        key = (topic, partition)
        self._topic_seen[key] = time.monotonic()
        self._topic_offset[key] = offset
        if event_time is not None:
            old = self._topic_clock.get(key)
            if old is None or event_time > old:
                self._topic_clock[key] = event_time
                bounds = self._side_bound
                for side in self._sides_of.get(topic, ()):
                    b = bounds.get((side, partition))
                    if b is None or event_time > b:
                        bounds[side, partition] = event_time

    def may_expire(self, expiry: Expiry, partition: int, side: str) -> bool:
        """Could the side's watermark have passed the partition's earliest expiry? (The watermark
        is at most the latest event time read on the side's topics.)"""
        due = expiry.due(partition)
        if due is None:
            return False
        bound = self._side_bound.get((side, partition))
        return bound is not None and due < bound

    def persist_clock(self) -> bool:
        """Share this worker's partition clocks with every worker (the global `clock` table);
        True if a value moved (was written)."""
        values = {}
        for p in self.owned_partitions():
            values[f"p{p}"] = self._clock.get(p)
            values[f"w{p}"] = self.watermark(p)
        for (topic, p), t in self._topic_clock.items():
            values[f"t{p}|{topic}"] = t
        wrote = False
        for key, t in values.items():
            if t is not None and t > (self.clock.get(key) or float("-inf")):
                self.clock[key] = t
                wrote = True
        return wrote


def _recent(cache: dict, partition: int, read: Callable[[int], float | None]) -> float | None:
    """read(partition), reused from `cache` for SETTLE_MARK_SECONDS of wall time."""
    wall = time.monotonic()
    cached = cache.get(partition)
    if cached is not None and wall - cached[0] < SETTLE_MARK_SECONDS:
        return cached[1]
    value = read(partition)
    cache[partition] = (wall, value)
    return value


def _log_send_error(fut) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("sending to an internal join topic failed: %r", fut.exception())


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def create_app(settings: Settings, policy: SlaPolicy | None = None) -> faust.App:
    settings.validate()
    policy = policy or SlaPolicy.load(settings.sla_policy or None)
    faust_patches.apply(embedded=settings.profile == "embedded")
    app = faust.App(settings.app_id, **faust_settings(settings))
    app.corridor_end_markers = settings.profile == "embedded"
    # RocksDB store: the agents hold still while a commit writes the changelogs (docs/semantics.md
    # "Crashes"), so that the store never runs ahead of a changelog tail that recovery replays.
    app.corridor_flush_gate = asyncio.Event() if settings.store.startswith("rocksdb") else None
    if app.corridor_flush_gate is not None:
        app.corridor_flush_gate.set()
    pipe = Pipeline(settings, policy)
    pipe.app = app
    app.corridor = pipe

    def topic(name: str):
        return app.topic(name, key_type=str, value_type=bytes, key_serializer="utf8",
                         value_serializer="raw", partitions=settings.partitions)

    in_orders = topic(settings.topic_orders)
    in_shipments = topic(settings.topic_shipments)
    in_customs = topic(settings.topic_customs)
    forwarded = settings.topic_shipment_orders
    send = pipe.send_internal
    pipe.dlq = {name: topic(dlq_name(name)) for name in settings.input_topics.values()}

    def table(name: str):
        return app.Table(name, default=None, key_type=str, partitions=settings.partitions,
                         schema=faust.Schema(key_type=str, key_serializer="utf8",
                                             value_serializer="orjson"))

    pipe.timelines = table("timelines")
    pipe.orders = table("orders")
    retention = settings.retention_seconds
    expired = pipe.counters.expired
    pipe.timeline_expiry = Expiry(pipe.timelines, lambda st: timeline.expires_at(st, retention),
                                  timeline.expiry_reason,
                                  lambda why: pipe.counters.inc(expired, "timelines", why))
    pipe.order_expiry = Expiry(pipe.orders, lambda st: order_side.expires_at(st, retention),
                               order_side.expiry_reason,
                               lambda why: pipe.counters.inc(expired, "orders", why))
    pipe.settle_index = settle_index(pipe.timelines, settings.grace_seconds)
    pipe.totals = table("totals")
    pipe.totals.flush_rank = 1      # after the states whose counts they hold (docs/semantics.md)
    # The stream clock: one small value per partition that every worker reads (docs/semantics.md).
    # One partition and recovery_buffer_size=1, as faust's GlobalTable docs advise for several
    # workers; written by a timer (use_partitioner: no stream event needed).
    # Always a memory store (recovered from its changelog at start like any table): it is written by
    # a timer, outside any stream event, and faust's RocksDB store asserts an event in _set, so with
    # store=rocksdb:// the worker crashed a second after start. The URL needs a host: faust ignores
    # a falsy store URL, and yarl's URL("memory://") is falsy.
    pipe.clock = app.GlobalTable("clock", default=None, partitions=1, recovery_buffer_size=1,
                                 use_partitioner=True, key_type=str, value_type=float,
                                 store="memory://clock")
    counters = pipe.counters
    gate = app.corridor_flush_gate
    grace = settings.grace_seconds
    reroute = Rerouter(settings, lambda: app.producer, counters)
    rerouted = settings.rerouted_topics

    def decode(kind: str, message):
        """The contract event, or None after dead-lettering it."""
        return pipe.decoders[kind].decode(message.key, message.value)

    # Keys stay raw bytes here: the decoder checks them (a key that is not UTF-8 is a
    # key_mismatch); a Faust key codec that raises would crash the agent and lose the message.
    @app.agent(app.topic(settings.topic_orders, settings.topic_order_links, rerouted["orders"],
                         key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw"),
               name="join_orders")
    async def join_orders(stream):
        async for event in stream.events():
            if gate is not None and not gate.is_set():
                await gate.wait()
            msg = event.message
            if msg.topic == settings.topic_order_links:
                link = orjson.loads(msg.value)
                oid = link["order_id"]
                pipe.note_time(msg.topic, msg.partition, msg.offset, link.get("at"))
                pipe.link_read(msg.partition, msg.offset)
                res = order_side.apply_link(pipe.orders.get(oid), oid, link["shipment_id"],
                                            link.get("at"))
            else:
                counters.inc(counters.consumed, msg.topic)
                try:
                    ev = decode("orders", msg)
                except Rejected as err:
                    pipe.note_time(msg.topic, msg.partition, msg.offset, None)
                    await pipe.reject(msg, err)
                    continue
                if reroute.misplaced(msg) and await reroute(msg):   # sent on to its partition
                    pipe.note_time(msg.topic, msg.partition, msg.offset, None)
                    continue
                oid = ev["order_id"]
                pipe.note_time(msg.topic, msg.partition, msg.offset, parse_time(ev["occurred_at"]))
                res = order_side.apply_order_event(pipe.orders.get(oid), ev)
                counters.inc(counters.duplicate if res.duplicate else counters.applied, msg.topic)
            if not res.duplicate:
                res.state["p"] = msg.partition
                pipe.orders[oid] = res.state
            pipe.order_expiry.note(msg.partition, oid, res.state)
            # An order may be forgotten only once every shipments partition is past it (a link to
            # it can come from any of them) and the links already sent to it have been read.
            if pipe.may_expire(pipe.order_expiry, msg.partition, "orders"):
                mark = wm.order_mark(pipe.global_watermark(), pipe.watermark(msg.partition, "orders"))
                if mark is not None:
                    pipe.order_expiry.expire(msg.partition, mark)
            for sid, oev in res.forwards:
                await send(forwarded, sid, orjson.dumps({**oev, "shipment_id": sid}))

    @app.agent(app.topic(settings.topic_shipments, settings.topic_customs,
                         rerouted["shipments"], rerouted["customs"],
                         settings.topic_shipment_orders, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw"),
               name="timelines")
    async def timelines(stream):
        async for event in stream.events():
            if gate is not None and not gate.is_set():
                await gate.wait()
            msg = event.message
            kind = pipe.kind_of[msg.topic]
            if kind == "forwarded":
                ev, source, label = orjson.loads(msg.value), "orders", settings.topic_orders
            else:
                counters.inc(counters.consumed, msg.topic)
                try:
                    ev = decode(kind, msg)
                except Rejected as err:
                    pipe.note_time(msg.topic, msg.partition, msg.offset, None)
                    await pipe.reject(msg, err)
                    continue
                if reroute.misplaced(msg) and await reroute(msg):   # sent on to its partition
                    pipe.note_time(msg.topic, msg.partition, msg.offset, None)
                    continue
                source, label = kind, msg.topic
            pipe.reconcile(msg.partition)
            sid = ev["shipment_id"]
            state = pipe.timelines.get(sid)
            if state is None and kind != "forwarded" and pipe.too_old(msg.topic, msg.partition, ev):
                pipe.note_time(msg.topic, msg.partition, msg.offset, None)
                await pipe.reject(msg, Rejected("expired", f"{source} event {ev['event_id']} is "
                                                "older than the retention and its shipment is gone"))
                continue
            res = timeline.apply(state, source, ev, policy, settings.timeline_max_events)
            if res.duplicate:
                if kind != "forwarded":
                    counters.inc(counters.duplicate, label)
                    pipe.note_time(msg.topic, msg.partition, msg.offset, res.event_time)
                for oid in res.new_order_ids:       # resent: see timeline.apply
                    await pipe.send_link(oid, sid, res.event_time)
                continue
            if kind != "forwarded":
                counters.inc(counters.applied, label)
            if res.late:
                counters.inc(counters.late, label)
            res.state["p"] = msg.partition
            p = msg.partition
            pipe.advance_clock(msg.topic, p, msg.offset, res.event_time, res.state["last"])
            due = timeline.settle_due(res.state, grace)
            if due is not None:
                pipe.settle(p, sid, res.state,
                            pipe.recent_settle_mark(p) if due < pipe.clock_bound(p) else None)
            pipe.timelines[sid] = res.state
            pipe.note_open(p, sid, res.state)
            pipe.timeline_expiry.note(p, sid, res.state)
            pipe.maybe_settle(p)
            if pipe.may_expire(pipe.timeline_expiry, msg.partition, "shipments"):
                mark = pipe.recent_watermark(msg.partition)
                if mark is not None:
                    pipe.timeline_expiry.expire(msg.partition, mark)
            for oid in res.new_order_ids:
                await pipe.send_link(oid, sid, res.event_time)

    _ = (in_orders, in_shipments, in_customs)   # declared so Faust knows their partition counts

    if settings.broker_watch_seconds > 0:
        @app.task
        async def broker_watch():
            from streams.worker.watch import watch_cluster
            await watch_cluster(settings, settings.broker_watch_seconds)

    @app.timer(CLOCK_PERSIST_SECONDS)
    async def share_clock():
        if pipe.persist_clock() and app.corridor_end_markers:
            await app.producer.mark_changelog_ends()     # an idle worker commits nothing after
        pipe.warm_open_index()

    @app.timer(SETTLE_IDLE_SECONDS)
    async def settle_idle():
        """What no event will come to do: partitions whose input has ended for now settle against
        the wall clock (settle_mark), and ended shipments that the last event of a burst left
        due are forgotten (the agents read the watermark at most every SETTLE_MARK_SECONDS).
        Table writes outside a stream event name their partition."""
        if not pipe.assigned or not pipe._settled():
            return
        if gate is not None and not gate.is_set():
            await gate.wait()
        for p in sorted(pipe.owned_partitions()):
            due = pipe.settle_index.due(p)
            mark = pipe.settle_mark(p) if due is not None else None
            settle = mark is not None and mark > due
            forget = None
            if pipe.may_expire(pipe.timeline_expiry, p, "shipments"):
                forget = pipe.watermark(p)
            if not settle and forget is None:
                continue
            standin = _TimerEvent(settings.topic_shipments, p)     # held: the context has a weakref
            token = _current_event.set(weakref.ref(standin))
            try:
                pipe.reconcile(p)
                if settle:
                    pipe.settle_due(p, mark)
                if forget is not None:
                    pipe.timeline_expiry.expire(p, forget)
            finally:
                _current_event.reset(token)

    @app.on_partitions_assigned.connect
    async def _assigned(sender, assigned, **kwargs):
        pipe.assigned = True

    @app.on_partitions_revoked.connect
    async def _revoked(sender, revoked, **kwargs):
        pipe.on_partitions_revoked(revoked)
        counters.rebalances.inc()

    _register_views(app, pipe)
    return app


def _add_observations(pipe: Pipeline, partition: int, seq: int, observations: list[tuple]) -> None:
    """One totals write per corridor touched by the observations numbered `seq` on `partition`.

    Each totals record keeps the number of the last observations it counted ("o"[FIN_SOURCE]):
    observations added again (Pipeline.reconcile after a crash) that already reached it add
    nothing. Totals of one partition share one changelog partition, so a later count that
    survived a crash implies that every earlier one did.
    """
    by_corridor = defaultdict(list)
    for obs in observations:
        by_corridor[obs[1]].append(obs)
    for corr, items in by_corridor.items():
        key = f"{partition}|{corr}"
        tot = pipe.totals.get(key) or aggregate.new_totals()
        counted = tot.setdefault("o", {})
        if counted.get(FIN_SOURCE, 0) >= seq:
            continue
        for obs in items:
            aggregate.add(tot, obs)
        counted[FIN_SOURCE] = seq
        pipe.totals[key] = tot


def _register_views(app: faust.App, pipe: Pipeline) -> None:
    from streams.worker.views import register
    register(app, pipe)
