"""The worker's state shared by its agents, timers, views and metrics: `Pipeline`.

It owns the tables (given by create_app), the per-partition clocks and watermarks the expiry and
settling rules read (the rules themselves are streams.domain.watermark and timeline.settle), the
indexes of what is due (streams.worker.indexes), the links in flight, the dead letters and the
metric collectors. Everything here runs on the worker's event loop; nothing is shared between
processes except through Kafka (the `clock` table carries each partition's watermark).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Callable, NamedTuple

from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from streams.contract import deadletter
from streams.contract.codec import Decoder, Rejected, accepted_countries
from streams.contract.internal import link_value
from streams.domain import aggregate, orders as order_side, risk, timeline, watermark as wm
from streams.domain import totals as totals_rule
from streams.domain.join import Link
from streams.domain.partitioning import partition_for
from streams.domain.policy import SlaPolicy
from streams.domain.stages import parse_time
from streams.settings import Settings
from streams.worker.indexes import Expiry, settle_index
from streams.worker.metrics import (AwaitingCollector, CorridorCollector, EventCounters,
                                    RegimeCollector, RiskCollector, TotalsExposition,
                                    WorkerCollector, register_process_metrics)
from streams.worker.reroute import as_produced
from streams.worker.sends import log_send_error

log = logging.getLogger("corridor")

#: How long an agent reuses a partition's settle watermark (seconds of wall time).
SETTLE_MARK_SECONDS = 0.02
#: A scoring pass of the open shipments' risk waits at least RISK_SCORE_SECONDS and this many times
#: its own duration before the next (at 1M open shipments a pass takes seconds): scoring takes at
#: most a tenth of the worker. The at-risk gauges move over hours; the alert waits 30 minutes.
RISK_SCORE_RATIO = 10.0
RISK_SCORE_SECONDS = 5.0
#: Fetch answers for the topics of one partition this close together are of the same round
#: (`_answered_lately`): the consumer long-polls each broker at least every 1.5 s.
FETCH_ANSWER_SLACK_SECONDS = 2.0
#: The source under which settled observations are numbered (part of the changelog format).
FIN_SOURCE = totals_rule.SETTLED


class Tables(NamedTuple):
    """The worker's tables (docs/semantics.md; streams.domain.records has their values)."""
    timelines: object       # shipment_id -> timeline state
    orders: object          # order_id -> order state
    totals: object          # "<partition>|<corridor>" -> corridor totals
    clock: object           # global: "p<n>", "w<n>", "t<n>|<topic>" -> event time
    risk: object = None     # global: "<partition>|<corridor>#<day>" -> {"s": seq, "c": risk counts}


class Pipeline:
    """Holds what the agents, views and the metrics collector share."""

    def __init__(self, settings: Settings, policy: SlaPolicy, app, tables: Tables, dlq: dict):
        self.settings = settings
        self.policy = policy
        self.app = app
        self.timelines, self.orders, self.totals, self.clock, self.risk_table = tables
        self.dlq = dlq                           # input topic -> its dead-letter topic
        retention = settings.retention_seconds
        self.registry = CollectorRegistry(auto_describe=False)
        self.counters = EventCounters(self.registry)
        register_process_metrics(self.registry)
        expired = self.counters.expired
        self.timeline_expiry = Expiry(
            self.timelines, lambda st: timeline.expires_at(st, retention), timeline.expiry_reason,
            lambda why: self.counters.inc(expired, "timelines", why))
        self.order_expiry = Expiry(
            self.orders, lambda st: order_side.expires_at(st, retention), order_side.expiry_reason,
            lambda why: self.counters.inc(expired, "orders", why))
        self.settle_index = settle_index(self.timelines, settings.grace_seconds)
        # The totals families are rendered by TotalsExposition (cached per record), the rest here.
        self.registry.register(CorridorCollector(lambda: self.snapshot(totals=False), totals=False))
        self.totals_text = TotalsExposition()
        self.registry.register(WorkerCollector(self.offsets, settings.partitions))
        self.registry.register(AwaitingCollector(self.waiting_counts))
        #: The fleet's lateness model: the risk counts of every partition (the global `risk` table,
        #: which each owner fills from its totals), and the open shipments' risk it last scored.
        self.risk_model = risk.RiskModel()
        self._risk_applied: dict[str, tuple] = {}      # risk table key -> (seq, counts) applied
        self._risk_dirty: set[str] = set()             # totals keys whose risk counts moved
        self._risk_checked: set[int] = set()           # partitions compared with the table
        self._at_risk: tuple[risk.AtRisk, float] | None = None
        self._risk_next = 0.0
        self.registry.register(RiskCollector(lambda: self._at_risk))
        self.registry.register(RegimeCollector(policy.regimes))
        self.decoders = {kind: Decoder(kind, max_bytes=settings.max_message_bytes,
                                      countries=accepted_countries(settings.region_code_set))
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
        #: partition -> {shipment: state} written since the indexes were last brought up to date.
        self._open_written: dict[int, dict[str, dict]] = {}
        #: Observations of settled shipments are numbered per partition (FIN_SOURCE, seq): the
        #: state remembers its last ones, the totals the last number they counted, so that after
        #: a crash that saved the states but not the totals `reconcile` adds what is missing.
        self._seq: dict[int, int] = {}
        self._clock_scanned: set[int] = set()     # partitions whose states were read for the clock
        #: (source, partition) -> the latest event time of that source in the partition's states
        #: as recovered at its assignment: what `too_old` measures against before it has read more.
        self._recovered_latest: dict[tuple[str, int], float] = {}
        self.assigned = False                      # has the group given this worker an assignment
        self._last_reject_log = 0.0
        #: The last figures exported while settled, served while rebalancing or recovering.
        self._held: dict = {}
        self._suppressed = 0

    # ---- the agents' reads ----------------------------------------------------------------------
    def timeline_state(self, sid: str) -> dict | None:
        """The shipment's state, or None (the first call binds the table's fastest `get`)."""
        self.timeline_state = _fast_get(self.timelines)
        return self.timeline_state(sid)

    def order_state(self, oid: str) -> dict | None:
        """The order's state, or None (as `timeline_state`)."""
        self.order_state = _fast_get(self.orders)
        return self.order_state(oid)

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
        """Index the newly owned partitions (one scan of the table), and bring every index up to
        the states written since the last call (`note_open`). Every reader of the indexes calls
        this first."""
        self._index_written()
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
        self._open_written.update({p: {} for p in todo})

    def warm_open_index(self) -> None:
        """Build the index of newly assigned partitions off the scrape path (a timer calls this):
        at 1M open shipments the build takes seconds, a scrape of a built index 0.25 s."""
        if self.assigned and not self.app.rebalancing and not getattr(self.app, "in_recovery", False):
            self._build_open_index(self.owned_partitions())

    def note_open(self, partition: int, sid: str, state: dict) -> None:
        """The state of `sid` was written: its index entries are brought up to date at the next
        read of the indexes or tick of the 1 s timer (`_index_written`), once per shipment
        however often it was written in between (a shipment's events come in bursts)."""
        written = self._open_written.get(partition)
        if written is not None:
            written[sid] = state

    def _index_written(self) -> None:
        for p, written in self._open_written.items():
            if not written:
                continue
            idx, waiting, pending = self.open_index[p], self.awaiting_index[p], self.pending_index[p]
            policy = self.policy
            for sid, state in written.items():
                entry = timeline.open_entry(state, policy)
                if entry is None:
                    idx.pop(sid, None)
                else:
                    idx[sid] = entry
                if timeline.awaiting_order(state):
                    waiting.add(sid)
                else:
                    waiting.discard(sid)
                if state["end"] is not None and not timeline.is_final(state):
                    pending.add(sid)
                else:
                    pending.discard(sid)
            written.clear()

    def waiting_counts(self) -> dict[str, dict[int, int]]:
        """{"awaiting_order": {partition: n}, "pending_final": {partition: n}} of the partitions
        owned now (indexed like the open shipments)."""
        if not self.settled():
            return self._held.get("waiting", {})
        owned = self.owned_partitions()
        self._build_open_index(owned)
        out = {"awaiting_order": {p: len(self.awaiting_index.get(p, ())) for p in owned},
               "pending_final": {p: len(self.pending_index.get(p, ())) for p in owned}}
        self._held["waiting"] = out
        return out

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
        """Once per partition assignment, take the latest event times from the recovered timelines
        (`_scan_states`), unless a rebalance or a recovery is under way."""
        todo = owned - self._clock_scanned
        if not todo or self.app.rebalancing or getattr(self.app, "in_recovery", False):
            return
        self._scan_states(todo)

    def _scan_states(self, todo: set[int]) -> None:
        """Take the latest event times from the recovered timelines of these partitions: each
        partition's (its clock) and each source's on it (`too_old`), once per assignment.

        The shared clock is written once a second, so after a restart or a rebalance it may lag;
        the timelines hold each shipment's events exactly (`ev`, in time order; the ones a
        compacted shipment keeps are its milestones and end, enough for the latest of a source).
        """
        clock, latest = self._clock, self._recovered_latest
        for state in self.timelines.values():
            p = state.get("p")
            if p not in todo:
                continue
            if state["last"] is not None and state["last"] > clock.get(p, float("-inf")):
                clock[p] = state["last"]
            found = set()
            for event in reversed(state.get("ev", ())):
                source = event[1]
                if source in found:
                    continue
                found.add(source)
                if event[0] > latest.get((source, p), float("-inf")):
                    latest[source, p] = event[0]
        self._clock_scanned |= todo

    def on_partitions_revoked(self, revoked) -> None:
        gone = {tp.partition for tp in revoked}
        self._clock_scanned -= gone
        self._recovered_latest = {k: t for k, t in self._recovered_latest.items()
                                  if k[1] not in gone}
        for p in gone:
            self._clock.pop(p, None)
            self.open_index.pop(p, None)
            self.awaiting_index.pop(p, None)
            self.pending_index.pop(p, None)
            self._open_written.pop(p, None)
        self._topic_clock = {k: v for k, v in self._topic_clock.items() if k[1] not in gone}
        self._side_bound = {k: v for k, v in self._side_bound.items() if k[1] not in gone}
        self._topic_offset = {k: v for k, v in self._topic_offset.items() if k[1] not in gone}
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
        tp = TP(topic, partition)
        done = self._topic_offset.get(key)
        # The offset of the next record the agent will process: after the last one it processed,
        # or, before it has processed one since the assignment, the committed offset the stream
        # partition was sought to. Never the consumer's fetch position: records fetched wait in
        # faust's getmany and the agent's stream queue, unseen by the agent (and by faust's read
        # offsets, set when the stream takes a record), and a topic partition taken for caught up
        # with nothing processed stops holding the watermark (tests/unit/test_stream_progress.py).
        upcoming = done + 1 if done is not None else self._stream_start(tp)
        end, answered = self._fetched_end(tp)
        return wm.Progress(clock=clock, caught_up=end is not None and upcoming >= end
                           and self._answered_lately(topic, partition, answered),
                           quiet_for=quiet, in_flight=inflight)

    def _fetched_end(self, tp) -> tuple[int | None, float | None]:
        """The high-water mark of an assigned topic partition as a fetch of the current assignment
        answered it, and when that answer came (wall seconds); (None, None) until one has. Not
        faust's monitor: it keeps the end this process saw in an earlier assignment, which records
        produced since may have passed."""
        consumer = getattr(getattr(self.app.consumer, "_thread", None), "_consumer", None)
        try:
            state = consumer._subscription.subscription.assignment.state_value(tp)
        except AttributeError:
            return None, None
        if state is None:
            return None, None
        stamp = getattr(state, "timestamp", None)     # set by aiokafka's fetcher with highwater
        return state.highwater, None if stamp is None else stamp / 1000.0

    def _answered_lately(self, topic: str, partition: int, answered: float | None) -> bool:
        """Is the end the consumer last heard for this topic partition still worth anything? Only
        an answer of the idle period, and none older than an answer for another topic of the same
        side of the partition. A high-water mark is what the broker said at the last fetch
        response: a consumer that has not heard from the broker since (a worker that did not run
        for a while, a partition the fetches left out) does not know what was produced since. A
        topic partition taken for caught up on such an end stopped holding the watermark while
        its records waited on the broker: after a stall every ended shipment was settled against
        the wall clock, and with customs-events unanswered for a few seconds the shipments' clock
        settled and then forgot shipments whose customs events, read later, started timelines of
        their own (corridor `unknown`, open forever; tests/unit/test_stream_progress.py). The
        consumer long-polls every partition it has nothing buffered for in one request per broker
        (faust: at least every 1.5 s), so a partition that really holds nothing more is answered
        as often as the others. Answers within FETCH_ANSWER_SLACK_SECONDS (at most a quarter of
        the idle period) count as the same round: partitions led by different brokers are
        answered by different responses, and even one response stamps its partitions a
        millisecond apart now and then; without the slack, the partition answered first would
        never count as caught up and the last shipments of a replay would never become final."""
        idle = self.settings.idle_seconds
        if answered is None or time.time() - answered >= idle:
            return False
        slack = min(FETCH_ANSWER_SLACK_SECONDS, idle / 4)
        for side in self._sides_of.get(topic, ()):
            for other in self.side_topics[side]:
                if other != topic:
                    _end, then = self._fetched_end(TP(other, partition))
                    if then is not None and then - answered > slack:
                        return False
        return True

    def _stream_start(self, tp) -> int:
        """Where the stream partition is read from in the current assignment: the committed offset
        faust sought it to (None until that seek, and for offset 0 or no commit: the beginning,
        taken as 0; a log whose head was deleted and that the group never committed then holds
        the watermark until a record of it is processed)."""
        committed = getattr(self.app.consumer, "_committed_offset", {}).get(tp)
        return 0 if committed is None else committed

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
        """Settle one shipment (timeline.settle), write its state, count what it observed, note
        when it is next due.

        The state (remembering the observations and their number) is written before the totals
        that count them: the RocksDB store keeps each write at once, and a SIGKILL between the two
        writes must leave the state ahead of the totals, which `reconcile` repairs, never the
        totals ahead of the state, which the successor would settle and count a second time
        (docs/semantics.md "Crashes")."""
        obs = timeline.settle(state, self.policy, mark, self.settings.grace_seconds)
        if obs:
            seq = self._seq[partition] = self._seq.get(partition, 0) + 1
            timeline.remember(state, FIN_SOURCE, seq, obs)
        self.timelines[sid] = state
        if obs:
            self.count(partition, seq, obs)
        self.settle_index.note(partition, sid, state)

    def count(self, partition: int, seq: int, observations: list[tuple]) -> None:
        """Add the observations numbered `seq` on `partition` to the totals, each corridor's record
        once (totals_rule.count_once: a record that already counted `seq` adds nothing)."""
        for corr, items in totals_rule.by_corridor(observations).items():
            key = totals_rule.key(partition, corr)
            record = self.totals.get(key) or aggregate.new_totals()
            if totals_rule.count_once(record, FIN_SOURCE, seq, items):
                self.totals[key] = record
                if risk.is_risk_key(corr):
                    self._risk_dirty.add(key)

    def settle_due(self, partition: int, mark: float | None) -> None:
        """Settle every shipment of the partition that the watermark has passed, and write it."""
        if mark is None:
            return
        for sid, state in self.settle_index.pop_due(partition, mark):
            self.settle(partition, sid, state, mark)
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
        counted = {}
        for k, record in self.totals.items():
            p, corr = totals_rule.split_key(k)
            if p == partition:
                counted[corr] = totals_rule.counted(record, FIN_SOURCE)
        states = (st for st in self.timelines.values() if st.get("p") == partition)
        missing, top = totals_rule.missing(states, counted, FIN_SOURCE)
        for seq in sorted(missing):
            self.count(partition, seq, missing[seq])
        if missing:
            log.warning("partition %d: %d observations that the states remember were missing "
                        "from the totals (a crash between the changelog ranks); added",
                        partition, len(missing))
        self._seq[partition] = top

    # ---- links in flight ----------------------------------------------------------------------
    async def send_link(self, link: Link) -> None:
        """Publish a link to the order side and hold that side's watermark at its stamp until it
        has been read back: an order must not be forgotten while a link to it is in flight."""
        key = link.order_id.encode()
        p = partition_for(key, self.settings.partitions)    # where aiokafka's partitioner puts it
        fut = await self.app.producer.send(self.settings.topic_order_links, key, link_value(link),
                                           p, None, None)
        at = link.at
        if at is not None:
            old = self._links_inflight.get(p)
            self._links_inflight[p] = at if old is None else min(old, at)
        self._links_unacked[p] += 1
        fut.add_done_callback(lambda f, p=p: self._link_acked(p, f))

    def _link_acked(self, partition: int, fut) -> None:
        self._links_unacked[partition] -= 1
        if fut.cancelled() or fut.exception() is not None:
            log_send_error(fut)
            return                          # the bound stays until a later link is read back
        offset = fut.result().offset
        if offset > self._links_sent_max.get(partition, -1):
            self._links_sent_max[partition] = offset

    def link_read(self, partition: int, offset: int) -> None:
        """The order side read the link at `offset`: once every link sent is read, none is in flight."""
        if self._links_unacked[partition] == 0 and offset >= self._links_sent_max.get(partition, -1):
            self._links_inflight.pop(partition, None)

    def settled(self) -> bool:
        """Not rebalancing or recovering: half-recovered totals would read as a counter reset."""
        return not (self.app.rebalancing or getattr(self.app, "in_recovery", False))

    def owned_totals(self) -> dict[tuple[str, str], dict] | None:
        """{(corridor, partition): totals record} of the partitions owned now (one record each); None
        until settled (`_settled`)."""
        if not self.settled():
            return None
        owned = self.owned_partitions()
        out = {}
        for key, tot in self.totals.items():
            p, corr = totals_rule.split_key(key)
            if p in owned and not risk.is_risk_key(corr):
                out[(corr, str(p))] = tot       # the partition as its label value
        return out

    def snapshot(self, totals: bool = True):
        """(corridor totals, open-shipment gauges, clock) of the partitions owned now; totals summed
        over partitions by corridor ({} with totals=False). While the worker rebalances or
        recovers, the last values it had (`_held`)."""
        if not self.settled():
            return self._held.get(("snapshot", totals), ({}, aggregate.OpenGauges(), None))
        out = self._snapshot(totals)
        self._held[("snapshot", totals)] = out
        return out

    def _snapshot(self, totals: bool):
        by_corridor: dict = {}
        for (corr, _p), tot in (self.owned_totals().items() if totals else ()):
            aggregate.merge(by_corridor.setdefault(corr, aggregate.new_totals()), tot)
        owned = self.owned_partitions()
        now = self.stream_time(owned)
        if now is None:
            return by_corridor, aggregate.OpenGauges(), None
        return by_corridor, aggregate.gauges_of(self.open_entries(owned), now), now

    def metrics_text(self, names=None) -> bytes:
        """The /metrics body. Totals carry a `partition` label: a series per partition moves whole
        to the new owner on a rebalance, where a per-worker sum would drop on the old owner (a
        counter reset to rate()) and jump on the new one.

        While the worker rebalances or recovers (every worker of the group does at once, on every
        scale-out, rolling update or restart), each corridor series keeps the value it had: were it
        left out, Prometheus would mark it stale and a firing alert would resolve and page again
        (docs/semantics.md "Metrics during a rebalance").

        `names` (the `name[]` query parameters, as prometheus_client's own handlers take them):
        only the families those sample names belong to, each whole; the others are not computed,
        so a frequent scrape of one counter costs little."""
        owned = self.owned_totals()
        if owned is None:
            owned = self._held.get("totals", {})
        else:
            self._held["totals"] = owned
        if not names:
            return generate_latest(self.registry) + self.totals_text.render(owned).encode()
        names = frozenset(names)
        families = self.totals_text.families_for(names)
        return (generate_latest(self.registry.restricted_registry(names))
                + (self.totals_text.render(owned, families).encode() if families else b""))

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
        fut.add_done_callback(log_send_error)

    # ---- errors -------------------------------------------------------------------------------
    def has_dead_letters(self, message) -> bool:
        """Does the record's topic (or, for a rerouted copy, its source topic) have a DLQ?"""
        return as_produced(message).topic in self.dlq

    async def reject(self, message, err: Rejected) -> None:
        self.counters.inc(self.counters.rejected, message.topic, err.reason)
        message = as_produced(message)      # a rerouted copy: the record as its producer wrote it
        topic = message.topic
        headers = deadletter.headers(message.headers, err.reason, err.detail, topic,
                                     message.partition, message.offset)
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

    def too_old(self, topic: str, partition: int, source: str, event: dict) -> bool:
        """watermark.too_old against the latest event time the event's own topic partition is
        known to have carried: read since the assignment, shared by an owner (the clock table,
        written once a second), or held by the recovered timelines for its source.

        The last two matter after a restart or a rebalance, when the partition is read again from
        the committed offsets: the state handed over may be ahead of them (a crash between a
        commit's changelogs and its offsets; faust commits the offsets a commit took before it
        sent the changelogs), and a shipment forgotten in that stretch must not start again from
        its own events read a second time (docs/semantics.md "Bounded state")."""
        if partition not in self._clock_scanned:
            self._scan_states((self.owned_partitions() | {partition}) - self._clock_scanned)
        known = (self._topic_clock.get((topic, partition)), self.clock.get(f"t{partition}|{topic}"),
                 self._recovered_latest.get((source, partition)))
        latest = max((t for t in known if t is not None), default=None)
        return wm.too_old(parse_time(event["occurred_at"]), latest, self.settings.retention_seconds)

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

    # ---- lateness risk (docs/risk.md "Online") -------------------------------------------------
    def publish_risk(self) -> int:
        """Share the risk counts of the owned partitions' totals with every worker (the global
        `risk` table): the records counted into since the last call, and once per assignment
        every record the table does not hold as it is (a crash between the two). Returns how many
        were written."""
        table = self.risk_table
        if table is None or not self.assigned or not self.settled():
            return 0
        owned = self.owned_partitions()
        todo = set(self._risk_dirty)
        self._risk_dirty.clear()
        for p in owned - self._risk_checked:
            todo.update(k for k in self.totals.keys()
                        if k.startswith(f"{p}|") and risk.is_risk_key(k))
        self._risk_checked = owned
        wrote = 0
        for key in todo:
            p, name = totals_rule.split_key(key)
            record = self.totals.get(key)
            if p not in owned or record is None:
                continue
            value = {"s": totals_rule.counted(record, FIN_SOURCE), "c": record.get("risk", {})}
            held = table.get(key)
            if held is None or held.get("s") != value["s"]:
                table[key] = value
                wrote += 1
        return wrote

    def sync_risk(self) -> None:
        """Bring the fleet's model up to the global `risk` table (what changed since last time)."""
        table = self.risk_table
        if table is None:
            return
        applied = self._risk_applied
        seen = set()
        model = self.risk_model
        for key, value in list(table.items()):
            seen.add(key)
            if not value:
                continue
            old = applied.get(key)
            if old is not None and old[0] == value["s"]:
                continue
            name = totals_rule.split_key(key)[1]
            if old is not None:
                model.add(name, old[1], -1)
            counts = dict(value["c"])
            model.add(name, counts)
            applied[key] = (value["s"], counts)
        for key in set(applied) - seen:
            model.add(totals_rule.split_key(key)[1], applied.pop(key)[1], -1)

    async def score_risk(self, chunk: int = 20_000) -> bool:
        """Score every open shipment of the owned partitions against the fleet's model at the
        stream clock (risk.score_open), a chunk at a time so that the agents go on meanwhile. At
        most every RISK_SCORE_SECONDS, and RISK_SCORE_RATIO times the last pass's duration. True if it
        scored."""
        wall = time.monotonic()
        if wall < self._risk_next or not self.assigned or not self.settled():
            return False
        self.sync_risk()
        owned = self.owned_partitions()
        now = self.stream_time(owned)
        if now is None:
            return False
        self._build_open_index(owned)
        entries = [e for p in owned for e in list(self.open_index.get(p, {}).values())]
        threshold = self.policy.at_risk
        start = time.perf_counter()
        out = risk.AtRisk()
        for i in range(0, len(entries), chunk):
            if i:
                await asyncio.sleep(0)
            part = risk.score_open(self.risk_model, entries[i:i + chunk], now, threshold)
            for field_name in ("at_risk", "expected_late", "scored"):
                mine = getattr(out, field_name)
                for k, v in getattr(part, field_name).items():
                    mine[k] += v
        took = time.perf_counter() - start
        self._risk_next = time.monotonic() + max(RISK_SCORE_SECONDS, RISK_SCORE_RATIO * took)
        if self.settled() and self.owned_partitions() == owned:
            self._at_risk = (out, now)
        return True

    def predict(self, state: dict, now: float) -> dict | None:
        """The lateness prediction of one shipment at `now` (the /shipments/{id} view): None if it
        is not open or has no promise."""
        entry = timeline.open_entry(state, self.policy)
        if entry is None or entry[4] is None:
            return None
        self.sync_risk()
        corr, level, stage, _beyond, due, since, _waiting = entry
        return risk.describe(self.risk_model.predict(corr, level, stage, since, now, due), stage,
                             self.policy.at_risk)

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


def _fast_get(table):
    fast = getattr(table, "fast_get", None)
    return fast() if fast is not None else table.get


def _recent(cache: dict, partition: int, read: Callable[[int], float | None]) -> float | None:
    """read(partition), reused from `cache` for SETTLE_MARK_SECONDS of wall time."""
    wall = time.monotonic()
    cached = cache.get(partition)
    if cached is not None and wall - cached[0] < SETTLE_MARK_SECONDS:
        return cached[1]
    value = read(partition)
    cache[partition] = (wall, value)
    return value
