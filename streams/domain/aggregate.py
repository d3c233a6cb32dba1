"""Per-corridor figures: totals of observations (counters, histograms) and open-shipment gauges.

Totals are `records.TotalsRecord`s, JSON-able dicts that live in a changelogged table next to
the timelines, keyed "<partition>|<corridor>" (streams/domain/records.py documents the record):

    delivered   {"<service_level>|<true|false>": count}
    exceptions  {"<type>": count}
    transit     {"<service_level>": [bucket counts..., +Inf count, sum]}   non-cumulative buckets
    dwell       {"<stage>": [bucket counts..., +Inf count, sum]}
    late        {"<stage>": whole seconds of lateness attributed to the stage}: only once a late
                delivery has been counted (risk.attribute_lateness; older records have none)
    o           {source: the last settlement number counted}: added by totals.count_once, not here
    clear       {"<destination>|<regime>|<value class>": histogram row}: clearance seconds
    cwt         {"<destination>|<regime>|<value class>|<calendar|business>": cleared within target}
    cust        {"<destination>|<regime>|<value class>|<type>": arrivals, holds, inspections, ...}
    dex         {"<service_level>|<true|false>": deliveries on time with customs time removed}
    dbd         {"<service_level>|<true|false>": deliveries on time against a promise in business
                days, where the policy gives one for the destination}
    sbd         {"<stage>|<true|false>": stages of delivered shipments ended within their target in
                business days, where the policy gives the destination one for the stage}

Gauges of open shipments are computed at read time from one small entry per open shipment
(`timeline.open_entry`, `gauges_of`).
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from streams.domain import customs
from streams.domain.policy import SlaPolicy
from streams.domain.records import Observation, TotalsRecord
from streams.domain.stages import STAGES
from streams.domain.timeline import open_entry

HOUR, DAY = 3600.0, 86400.0
#: Transit time buckets (seconds): parcels take days to weeks.
TRANSIT_BUCKETS = (1 * DAY, 2 * DAY, 3 * DAY, 4 * DAY, 5 * DAY, 7 * DAY, 10 * DAY, 14 * DAY,
                   21 * DAY, 30 * DAY, 45 * DAY, 60 * DAY)
#: Stage dwell buckets (seconds): hours to weeks.
DWELL_BUCKETS = (1 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, 1 * DAY, 2 * DAY, 3 * DAY, 5 * DAY,
                 7 * DAY, 10 * DAY, 14 * DAY, 21 * DAY)
#: Import clearance buckets (seconds): hours for a de minimis parcel, days for a formal entry. The
#: usual targets (1, 2, 3, 5, 7, 10 days) are bounds, so "within N days" reads off a bucket too.
CLEARANCE_BUCKETS = (6 * HOUR, 1 * DAY, 2 * DAY, 3 * DAY, 5 * DAY, 7 * DAY, 10 * DAY, 14 * DAY)
#: The `type` values of the customs counts kept in `cust` ("arrival" is exported on its own).
CUSTOMS_COUNTS = ("arrival",) + customs.EVENT_TYPES


def new_totals() -> TotalsRecord:
    return {"delivered": {}, "exceptions": {}, "transit": {}, "dwell": {}}


def _observe(hist: dict, key: str, buckets: tuple[float, ...], value: float) -> None:
    row = hist.get(key)
    if row is None:
        row = hist[key] = [0] * (len(buckets) + 1) + [0.0]
    row[bisect.bisect_left(buckets, value)] += 1      # le semantics: value <= bound
    row[-1] += value


def add(totals: TotalsRecord, obs: Observation) -> None:
    """Add one observation from timeline.settle, a tuple or (read back from `lobs`) a list. Its
    corridor is obs[1]; the caller picks the record."""
    kind = obs[0]
    if kind == "delivered":
        _, _corr, sl, on_time, transit = obs
        key = f"{sl}|{'true' if on_time else 'false'}"
        totals["delivered"][key] = totals["delivered"].get(key, 0) + 1
        _observe(totals["transit"], sl, TRANSIT_BUCKETS, transit)
    elif kind == "dwell":
        _, _corr, stage, seconds = obs
        _observe(totals["dwell"], stage, DWELL_BUCKETS, seconds)
    elif kind == "exception":
        _, _corr, exc = obs
        totals["exceptions"][exc] = totals["exceptions"].get(exc, 0) + 1
    elif kind == "late":
        _, _corr, stage, seconds = obs
        late = totals.setdefault("late", {})
        late[stage] = late.get(stage, 0) + seconds
    elif kind == "risk":
        _, _key, sample = obs
        risk = totals.setdefault("risk", {})
        risk[sample] = risk.get(sample, 0) + 1
    elif kind == "customs":
        (_, _corr, dest, regime, vclass, clearance, within, business,
         holds, inspections, rejections, seizures) = obs
        base = f"{dest}|{regime}|{vclass}"
        cust = totals.setdefault("cust", {})
        # every type gets its series at the first arrival: a rate of 0 holds is 0, not no data
        for typ, n in zip(CUSTOMS_COUNTS, (1, holds, inspections, rejections, seizures)):
            k = f"{base}|{typ}"
            cust[k] = cust.get(k, 0) + n
        if clearance is not None:
            _observe(totals.setdefault("clear", {}), base, CLEARANCE_BUCKETS, clearance)
            cwt = totals.setdefault("cwt", {})
            for days, ok in (("calendar", within), ("business", business)):
                if ok is not None:
                    k = f"{base}|{days}"
                    cwt[k] = cwt.get(k, 0) + (1 if ok else 0)
    elif kind in ("delivered_ex_customs", "delivered_business_days"):
        _, _corr, sl, on_time = obs
        key = f"{sl}|{'true' if on_time else 'false'}"
        section = totals.setdefault("dex" if kind == "delivered_ex_customs" else "dbd", {})
        section[key] = section.get(key, 0) + 1
    elif kind == "stage_business_days":
        _, _corr, stage, within = obs
        key = f"{stage}|{'true' if within else 'false'}"
        sbd = totals.setdefault("sbd", {})
        sbd[key] = sbd.get(key, 0) + 1
    else:
        raise ValueError(f"unknown observation {obs!r}")


def merge(into: TotalsRecord, other: TotalsRecord) -> TotalsRecord:
    """Sum two totals (for a worker holding several partitions, or a report). `o` is not summed:
    it numbers one partition's settlements."""
    for section in ("delivered", "exceptions", "late", "cwt", "cust", "dex", "dbd", "sbd"):
        for k, v in other.get(section, {}).items():
            into.setdefault(section, {})[k] = into.get(section, {}).get(k, 0) + v
    for section in ("transit", "dwell", "clear"):
        for k, row in other.get(section, {}).items():
            mine = into.setdefault(section, {}).get(k)
            into[section][k] = list(row) if mine is None else [a + b for a, b in zip(mine, row)]
    return into


def cumulative(row: list, buckets: tuple[float, ...]) -> tuple[list[tuple[float, int]], int, float]:
    """Prometheus form of a stored row: [(le, cumulative count)...] incl. +Inf, count, sum."""
    out, acc = [], 0
    for bound, n in zip(buckets + (float("inf"),), row[:-1]):
        acc += n
        out.append((bound, acc))
    return out, acc, row[-1]


def quantile(row: list, buckets: tuple[float, ...], q: float) -> float | None:
    """histogram_quantile as Prometheus computes it (linear within a bucket), for the views."""
    total = sum(row[:-1])
    if total == 0:
        return None
    rank, acc, lower = q * total, 0, 0.0
    for bound, n in zip(buckets, row[:-1]):
        if acc + n >= rank and n > 0:
            return lower + (bound - lower) * (rank - acc) / n
        acc, lower = acc + n, bound
    return buckets[-1]


@dataclass
class OpenGauges:
    in_stage: dict = field(default_factory=lambda: defaultdict(int))      # (corridor, stage) -> n
    overdue: dict = field(default_factory=lambda: defaultdict(int))       # (corridor, sl) -> n
    excess: dict = field(default_factory=lambda: defaultdict(float))      # (corridor, stage) -> s
    #: (corridor, destination, regime, value class, age bucket) -> parcels waiting in customs
    customs_waiting: dict = field(default_factory=lambda: defaultdict(int))
    open: int = 0

    def bottlenecks(self) -> dict[str, str]:
        """corridor -> the stage with the largest total time beyond target (only if > 0)."""
        best: dict[str, tuple[float, int, str]] = {}
        for (corr, stage), secs in self.excess.items():
            if secs <= 0:
                continue
            # ties go to the later stage in the journey: it is the one holding the parcel now
            cand = (secs, STAGES.index(stage), stage)
            if corr not in best or cand > best[corr]:
                best[corr] = cand
        return {corr: c[2] for corr, c in best.items()}


def open_gauges(states, now: float, policy: SlaPolicy) -> OpenGauges:
    """Gauges over open shipments at event-time `now`; cost is one pass over the given states."""
    return gauges_of((open_entry(state, policy) for state in states), now)


def gauges_of(entries, now: float) -> OpenGauges:
    """Gauges at event-time `now` from `timeline.open_entry` tuples (None entries are skipped)."""
    g = OpenGauges()
    in_stage, overdue, excess, waiting = g.in_stage, g.overdue, g.excess, g.customs_waiting
    n = 0
    for entry in entries:
        if entry is None:
            continue
        corr, sl, stage, beyond, due, _since, cust = entry
        n += 1
        key = (corr, stage)
        in_stage[key] += 1
        excess[key] += now - beyond if now > beyond else 0.0
        if due is not None and now > due:
            overdue[(corr, sl)] += 1
        if cust is not None:
            dest, regime, vclass, since = cust
            waiting[(corr, dest, regime, vclass, customs.age_bucket(max(0.0, now - since)))] += 1
    g.open = n
    return g


def event_now(latest_event_time: float | None, wall: float, live_lag: float) -> float | None:
    """The stream's clock: the latest event time, following the wall clock only while live."""
    if latest_event_time is None:
        return None
    if wall - live_lag <= latest_event_time <= wall:
        return wall
    return latest_event_time
