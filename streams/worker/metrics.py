"""Prometheus metrics: the corridor contract (from table state at scrape time) and operational counters.

The corridor figures are not process-local counters: `CorridorCollector.collect()` reads the totals
and timelines that this worker owns *now* (its active partitions), so a restart neither loses nor
repeats them, and after a rebalance no worker exports partitions it gave away. `sum by (corridor,
...)` over workers is the fleet figure. The `corridor_events_*` counters are per process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from prometheus_client import (CollectorRegistry, Counter, Gauge, PlatformCollector,
                               ProcessCollector, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from streams.domain import aggregate, figures
from streams.domain.aggregate import CLEARANCE_BUCKETS, DWELL_BUCKETS, TRANSIT_BUCKETS, OpenGauges
from streams.domain.regimes import RegimeTable
from streams.domain.risk import UNIT


def register_process_metrics(registry: CollectorRegistry) -> None:
    """The worker process itself: memory, CPU, open files and start time (`process_*`, read from
    /proc at scrape time), the container's memory limit (`corridor_memory_limit_bytes`, from the
    cgroup at scrape time), the Python version (`python_info`), and `corridor_build_info` = 1 with
    the versions of corridor and of the libraries it patches: memory against the pod's limit,
    restarts, and which build a fleet runs."""
    from importlib.metadata import PackageNotFoundError, version
    import platform

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(MemoryLimitCollector())
    info = Gauge("corridor_build_info", "Always 1: the versions this worker runs.",
                 ["version", "faust_streaming", "aiokafka", "python"], registry=registry)
    info.labels(installed("corridor"), installed("faust-streaming"), installed("aiokafka"),
                platform.python_version()).set(1)


#: Where the container's memory limit is, cgroup v2 first (the kubelet's and Docker's default
#: today), then cgroup v1's memory controller.
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: cgroup v1 writes "no limit" as the largest page-aligned 63-bit number (9223372036854771712 with
#: 4 KiB pages, another value with 64 KiB pages); no real limit comes near 2**62 bytes.
UNLIMITED_V1 = 2 ** 62


def memory_limit_bytes(root: Path = CGROUP_ROOT) -> int | None:
    """The memory limit of the cgroup this process runs in, in bytes; None when there is no limit
    ("max" in cgroup v2, the v1 "no limit" number) or neither file can be read or parsed.

    cgroup v2: `<root>/memory.max`; cgroup v1: `<root>/memory/memory.limit_in_bytes`. Inside a
    container both paths are the container's own cgroup (the cgroup namespace)."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            return None
        return value if 0 < value < UNLIMITED_V1 else None
    return None


class MemoryLimitCollector(Collector):
    """`corridor_memory_limit_bytes`: the container's memory limit, read at scrape time (a resized
    pod shows its new limit), for `process_resident_memory_bytes / corridor_memory_limit_bytes`
    (alert CorridorMemoryNearLimit). No sample when there is no limit to compare with."""

    def __init__(self, read: Callable[[], int | None] | None = None):
        self._read = read or (lambda: memory_limit_bytes(CGROUP_ROOT))

    def describe(self):
        return []

    def collect(self) -> Iterable:
        fam = GaugeMetricFamily("corridor_memory_limit_bytes", "Memory limit of the worker's "
                                "container (cgroup memory.max or memory.limit_in_bytes), read at "
                                "scrape time; no sample when unlimited.")
        limit = self._read()
        if limit is not None:
            fam.add_metric([], float(limit))
        yield fam


def worker_ready(assigned: bool, recovered: bool, rebalancing: bool) -> bool:
    """The one readiness rule, for /health (200 or 503) and `corridor_worker_ready`: in the group
    with an assignment (possibly no partitions: a worker beyond the partition count, or kept as a
    standby by the sticky assignor), tables recovered, not rebalancing."""
    return bool(assigned) and bool(recovered) and not rebalancing


class ReadinessCollector(Collector):
    """`corridor_worker_ready`: 1 when /health would answer 200, else 0, computed at scrape time
    by the same rule (`ready()` is streams.worker.views.readiness). A worker NotReady for long
    (CorridorWorkerNotReady) processes none of its partitions."""

    def __init__(self, ready: Callable[[], bool]):
        self._ready = ready

    def describe(self):
        return []

    def collect(self) -> Iterable:
        fam = GaugeMetricFamily("corridor_worker_ready", "1 when the worker is ready (/health "
                                "answers 200: assigned, tables recovered, not rebalancing), "
                                "else 0.")
        fam.add_metric([], 1.0 if self._ready() else 0.0)
        yield fam


class EventCounters:
    """Per-process operational counters, with the labelled children cached (hot path)."""

    def __init__(self, registry: CollectorRegistry):
        self.consumed = Counter("corridor_events_consumed", "Input messages consumed, by topic.",
                                ["topic"], registry=registry)
        self.applied = Counter("corridor_events_applied", "Input events applied to the state "
                               "(neither duplicate nor rejected), by topic.", ["topic"],
                               registry=registry)
        self.duplicate = Counter("corridor_events_duplicate", "Events ignored as duplicates "
                                 "(an event_id already applied), by topic.", ["topic"], registry=registry)
        self.late = Counter("corridor_events_late", "Events that arrived for a shipment that had "
                            "already ended, by topic.", ["topic"], registry=registry)
        self.rejected = Counter("corridor_events_rejected", "Input messages rejected to the "
                                "dead-letter topic, by topic and reason.", ["topic", "reason"],
                                registry=registry)
        self.rerouted = Counter("corridor_events_rerouted", "Input messages read on another "
                                "partition than murmur2 of their key gives (their producer does not "
                                "use Kafka's default partitioner), sent on to that partition, by "
                                "input topic.", ["topic"], registry=registry)
        self.expired = Counter("corridor_state_expired", "Table keys forgotten after the retention, "
                               "by table and reason (docs/semantics.md \"Bounded state\").",
                               ["table", "reason"], registry=registry)
        self.rebalances = Counter("corridor_rebalances", "Consumer group rebalances this worker "
                                  "took part in.", registry=registry)
        self._children: dict = {}

    def inc(self, counter: Counter, *labels: str) -> None:
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()


class CorridorCollector(Collector):
    """Scrape-time view of the state this worker owns.

    `snapshot()` returns (totals by corridor, open-shipment gauges, stream clock); it is provided by
    the app so that this module knows nothing about Faust. With `totals=False` only the gauges are
    collected: the worker renders the totals through `TotalsExposition`.
    """

    def __init__(self, snapshot: Callable[[], tuple[dict, OpenGauges, float | None]],
                 totals: bool = True):
        self._snapshot = snapshot
        self._totals = totals

    def describe(self):
        return []   # do not call collect() at registration time

    def collect(self) -> Iterable:
        totals, gauges, now = self._snapshot()
        if self._totals:
            yield from totals_families(totals)
        yield from gauge_families(gauges, now)


class TotalsExposition:
    """The /metrics text of the table-derived families, kept per totals record.

    These families are most of a scrape: a histogram's buckets per corridor, partition and stage or
    service level (5,400 lines, 46 ms through prometheus_client at 5,000 shipments). Each
    (corridor, partition) record is rendered by prometheus_client on its own, the same text as
    `totals_families` gives, and the text is reused while the record's `stamp` is unchanged. The
    stamp is the record's settlement numbers ("o"): every change to a totals record advances one of
    them (Pipeline.count, streams.domain.totals.count_once), and a record recovered from the changelog carries them.
    """

    def __init__(self):
        self._cache: dict = {}          # (corridor, partition) -> (stamp, {family: sample lines})
        self._headers = _split_families(generate_latest(_Once(totals_families({}))).decode())

    def families_for(self, names) -> set[str]:
        """The families any of these sample names belongs to (`name`, `name_total`, `_bucket`,
        `_sum`, `_count`, `_created`)."""
        return {fam for fam in self._headers
                if any(fam + sfx in names for sfx in ("", "_total", "_bucket", "_sum", "_count",
                                                      "_created"))}

    def render(self, totals: dict[tuple[str, str], dict], families: set[str] | None = None) -> str:
        """The families' text (every family when `families` is None)."""
        lines = {name: [head] for name, head in self._headers.items()
                 if families is None or name in families}
        cache = {}
        for key in sorted(totals):
            tot = totals[key]
            stamp = tuple(sorted(tot["o"].items())) if tot.get("o") else None
            hit = self._cache.get(key)
            if hit is None or stamp is None or hit[0] != stamp:
                text = generate_latest(_Once(totals_families({key: tot}))).decode()
                hit = (stamp, {name: body[body.index("\n", body.index("# TYPE")) + 1:]
                               for name, body in _split_families(text).items()})
            cache[key] = hit
            for name, body in hit[1].items():
                if name in lines:
                    lines[name].append(body)
        self._cache = cache
        return "".join("".join(parts) for parts in lines.values())


class _Once(Collector):
    def __init__(self, fams):
        self._fams = fams

    def collect(self):
        return self._fams


def _split_families(text: str) -> dict[str, str]:
    """Exposition text -> {family: its text from its # HELP line}, in order."""
    out: dict[str, str] = {}
    for chunk in text.split("# HELP ")[1:]:
        out[chunk.split(" ", 1)[0]] = "# HELP " + chunk
    return out


def families(totals: dict[tuple[str, str], dict], gauges: OpenGauges, now: float | None):
    """Every corridor family: `totals_families`, then `gauge_families`."""
    yield from totals_families(totals)
    yield from gauge_families(gauges, now)


def totals_families(totals: dict[tuple[str, str], dict]):
    """totals: {(corridor, partition): totals}: the table-derived counters and histograms carry a
    `partition` label, so each series belongs to one partition and moves whole on a rebalance."""
    delivered = CounterMetricFamily(
        "corridor_shipments_delivered", "Shipments delivered, by corridor, service level and whether "
        "on time (delivered at or before the promise).",
        labels=["corridor", "partition", "service_level", "on_time"])
    exceptions = CounterMetricFamily(
        "corridor_shipment_exceptions", "Shipment exceptions (returned, lost, delivery_failed, "
        "customs_hold, ...), by corridor and type.", labels=["corridor", "partition", "type"])
    transit = HistogramMetricFamily(
        "corridor_shipment_transit_seconds", "Transit time from order_placed to delivered, observed "
        "when the shipment is delivered.", labels=["corridor", "partition", "service_level"])
    dwell = HistogramMetricFamily(
        "corridor_stage_dwell_seconds", "Time spent in each stage, observed when the shipment ends.",
        labels=["corridor", "partition", "stage"])
    late = CounterMetricFamily(
        "corridor_late_attributed_seconds", "Lateness of late deliveries (delivered - promise), "
        "attributed to the stages that ran over their targets (docs/risk.md); the stages of a "
        "shipment add up to its lateness.", labels=["corridor", "partition", "stage"])
    customs = ("destination", "regime", "value_class")
    clearance = HistogramMetricFamily(
        "corridor_customs_clearance_seconds", "Import clearance time (arrived_destination to the "
        "import release), by destination, import regime and value class at arrival; observed "
        "when the shipment's figures are final.", labels=["corridor", "partition", *customs])
    within = CounterMetricFamily(
        "corridor_customs_cleared_within_target", "Parcels released by import customs within the "
        "destination's clearance target (SLA policy [customs]; days=business where configured), "
        "out of corridor_customs_clearance_seconds_count.",
        labels=["corridor", "partition", *customs, "days"])
    arrivals = CounterMetricFamily(
        "corridor_customs_arrivals", "Shipments that arrived at their destination "
        "(arrived_destination), counted when their figures are final.",
        labels=["corridor", "partition", *customs])
    events = CounterMetricFamily(
        "corridor_customs_events", "Import customs holds, inspections, rejections and seizures "
        "of the arrivals counted in corridor_customs_arrivals_total, by type.",
        labels=["corridor", "partition", *customs, "type"])
    dex = CounterMetricFamily(
        "corridor_shipments_delivered_excluding_customs", "Shipments delivered, counted a second "
        "time on the clock with the customs stage removed: on time if delivered - customs time "
        "is at or before the promise.", labels=["corridor", "partition", "service_level", "on_time"])
    dbd = CounterMetricFamily(
        "corridor_shipments_delivered_business_days", "Shipments delivered, counted against the "
        "destination's promise in business days (SLA policy promise_business_days; local dates, "
        "public holidays), where the policy gives one.",
        labels=["corridor", "partition", "service_level", "on_time"])
    sbd = CounterMetricFamily(
        "corridor_stage_within_target_business_days", "Stages of delivered shipments, counted "
        "within or over the destination's target for the stage in business days (SLA policy "
        "stage_target_business_days; local dates, public holidays), where the policy gives one.",
        labels=["corridor", "partition", "stage", "within"])
    for corr, part in sorted(totals):
        tot = totals[(corr, part)]
        rows = figures.customs_rows(tot)
        for labels, row in rows["clearance"]:
            buckets, _count, total = aggregate.cumulative(row, CLEARANCE_BUCKETS)
            clearance.add_metric([corr, part, *labels], [(_le(b), c) for b, c in buckets], total)
        for family, name in ((within, "within"), (arrivals, "arrivals"), (events, "events"),
                             (dex, "dex"), (dbd, "dbd"), (sbd, "sbd")):
            for labels, n in rows[name]:
                family.add_metric([corr, part, *labels], n)
        for key, n in sorted(tot["delivered"].items()):
            sl, on_time = key.split("|")
            delivered.add_metric([corr, part, sl, on_time], n)
        for exc, n in sorted(tot["exceptions"].items()):
            exceptions.add_metric([corr, part, exc], n)
        for sl, row in sorted(tot["transit"].items()):
            buckets, _count, total = aggregate.cumulative(row, TRANSIT_BUCKETS)
            transit.add_metric([corr, part, sl], [(_le(b), c) for b, c in buckets], total)
        for stage, row in sorted(tot["dwell"].items()):
            buckets, _count, total = aggregate.cumulative(row, DWELL_BUCKETS)
            dwell.add_metric([corr, part, stage], [(_le(b), c) for b, c in buckets], total)
        for stage, seconds in sorted(tot.get("late", {}).items()):
            late.add_metric([corr, part, stage], seconds)
    yield from (delivered, exceptions, transit, dwell, late, clearance, within, arrivals, events, dex,
                dbd, sbd)


def gauge_families(gauges: OpenGauges, now: float | None):
    """The open-shipment gauges and the stream clock."""
    in_stage = GaugeMetricFamily("corridor_shipments_in_stage", "Open shipments now in each stage.",
                                 labels=["corridor", "stage"])
    for (corr, stage), n in sorted(gauges.in_stage.items()):
        in_stage.add_metric([corr, stage], n)
    overdue = GaugeMetricFamily("corridor_shipments_overdue", "Open shipments past their promised "
                                "delivery time (stream event time).", labels=["corridor", "service_level"])
    for (corr, sl), n in sorted(gauges.overdue.items()):
        overdue.add_metric([corr, sl], n)
    excess = GaugeMetricFamily("corridor_stage_excess_seconds", "Total time beyond the stage target "
                               "of the open shipments in each stage.", labels=["corridor", "stage"])
    for (corr, stage), secs in sorted(gauges.excess.items()):
        excess.add_metric([corr, stage], secs)
    bottleneck = GaugeMetricFamily("corridor_bottleneck_stage", "1 on the stage whose open shipments "
                                   "have the largest total time beyond target, per corridor.",
                                   labels=["corridor", "stage"])
    for corr, stage in sorted(gauges.bottlenecks().items()):
        bottleneck.add_metric([corr, stage], 1)
    waiting = GaugeMetricFamily("corridor_customs_waiting", "Open shipments waiting in import "
                                "customs (arrived, not released), by how long since arrival "
                                "(stream event time).", labels=["corridor", "destination", "regime",
                                                                "value_class", "age"])
    for labels, n in sorted(gauges.customs_waiting.items()):
        waiting.add_metric(list(labels), n)
    clock = GaugeMetricFamily("corridor_stream_time_seconds", "The stream's event-time clock "
                              "('now' for overdue and excess), Unix seconds.")
    if now is not None:
        clock.add_metric([], now)
    yield from (in_stage, overdue, excess, bottleneck, waiting, clock)


class RegimeCollector(Collector):
    """`corridor_import_regime_start_seconds{regime}`: when each import regime of the table the
    worker runs with (streams/regimes.toml and CORRIDOR_IMPORT_REGIMES) came into force, Unix
    seconds. The customs dashboard draws each start as an annotation."""

    def __init__(self, regimes: RegimeTable):
        self._rows = sorted((r.name, r.starts_at) for r in regimes.regimes)

    def describe(self):
        return []

    def collect(self) -> Iterable:
        fam = GaugeMetricFamily("corridor_import_regime_start_seconds", "When each import regime "
                                "came into force (its first day at midnight in its time zone), "
                                "Unix seconds.", labels=["regime"])
        for name, start in self._rows:
            fam.add_metric([name], start)
        yield fam


class WorkerCollector(Collector):
    """Consumer lag per topic/partition as Faust knows it, and the partitions this worker owns.

    `offsets()` returns (rows of (topic, partition, end offset, committed offset), active partitions).
    """

    def __init__(self, offsets: Callable[[], tuple[list[tuple[str, int, int, int | None]], int]],
                 partitions: int = 0):
        self._offsets = offsets
        self._partitions = partitions

    def describe(self):
        return []

    def collect(self) -> Iterable:
        rows, active = self._offsets()
        lag = GaugeMetricFamily("corridor_consumer_lag", "Messages in the topic partition not yet "
                                "committed by this worker (end offset - committed offset), for the "
                                "partitions it owns.", labels=["topic", "partition"])
        end = GaugeMetricFamily("corridor_consumer_end_offset", "End offset (high watermark) last "
                                "seen per owned topic partition.", labels=["topic", "partition"])
        for topic, partition, end_offset, committed in sorted(rows):
            lag.add_metric([topic, str(partition)], max(0, end_offset - (committed or 0)))
            end.add_metric([topic, str(partition)], end_offset)
        assigned = GaugeMetricFamily("corridor_partitions_assigned", "Input partitions this worker "
                                     "owns (actively processes).")
        assigned.add_metric([], active)
        configured = GaugeMetricFamily("corridor_partitions_configured", "Partitions of every "
                                       "input topic (CORRIDOR_PARTITIONS): the fleet should own "
                                       "them all, sum(corridor_partitions_assigned).")
        configured.add_metric([], self._partitions)
        yield from (lag, end, assigned, configured)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class RiskCollector(Collector):
    """The open shipments' lateness risk as the worker last scored it (Pipeline.score_risk:
    (risk.AtRisk, stream time scored at), or None before the first pass). Like the open-shipment
    gauges, per worker (no partition label): sum over workers."""

    def __init__(self, latest: Callable[[], tuple | None]):
        self._latest = latest

    def describe(self):
        return []

    def collect(self) -> Iterable:
        yield from risk_families(self._latest())


def risk_families(latest):
    at_risk = GaugeMetricFamily(
        "corridor_shipments_at_risk", "Open shipments whose predicted P(late) is at or above the "
        "SLA policy's [risk] at_risk (docs/risk.md), by the stage they are in.",
        labels=["corridor", "service_level", "stage"])
    expected = GaugeMetricFamily(
        "corridor_shipments_predicted_late", "Sum of P(late) over the open shipments with a "
        "promise: how many of them are expected to be late.", labels=["corridor"])
    scored = GaugeMetricFamily(
        "corridor_shipments_scored", "Open shipments with a promise, whose P(late) is scored.",
        labels=["corridor"])
    when = GaugeMetricFamily(
        "corridor_risk_scored_time_seconds", "The stream time (Unix seconds) at which the open "
        "shipments' risk was last scored.")
    if latest is not None:
        out, now = latest
        for (corr, level, stage), n in sorted(out.at_risk.items()):
            at_risk.add_metric([corr, level, stage], n)
        for corr, units in sorted(out.expected_late.items()):
            expected.add_metric([corr], units / UNIT)
        for corr, n in sorted(out.scored.items()):
            scored.add_metric([corr], n)
        when.add_metric([], now)
    yield from (at_risk, expected, scored, when)


class AwaitingCollector(Collector):
    """Shipments not in the SLA figures yet, per partition owned (`counts()`: {"awaiting_order":
    {partition: n}, "pending_final": {partition: n}}).

    A shipment whose order never arrives (or arrives after the order side forgot it) is never
    counted in the SLA figures: `corridor_shipments_awaiting_order` is where it shows instead of
    vanishing. An ended shipment within its grace period is counted once final:
    `corridor_shipments_pending_final`."""

    HELP = {"awaiting_order": "Shipments with parcel events whose primary order is not known yet "
                              "(not attributable to a corridor's SLA until it arrives), by "
                              "partition owned.",
            "pending_final": "Ended shipments whose figures are not final yet: the watermark has "
                             "not passed their end + the grace period (CORRIDOR_GRACE_SECONDS); "
                             "they count in the SLA figures once it has, by partition owned."}

    def __init__(self, counts: Callable[[], dict[str, dict[int, int]]]):
        self._counts = counts

    def describe(self):
        return []

    def collect(self) -> Iterable:
        counts = self._counts()
        for name, text in self.HELP.items():
            fam = GaugeMetricFamily(f"corridor_shipments_{name}", text, labels=["partition"])
            for p, n in sorted(counts.get(name, {}).items()):
                fam.add_metric([str(p)], n)
            yield fam
