"""The live terminal view of `corridor demo`: what the worker's /metrics says, per corridor, once a second.

Pure, and unit-tested on hand-made metrics text (tests/unit/test_live_view.py):

- `parse(text)`: one /metrics scrape (Prometheus text format) -> `Snapshot`, every series summed over
  its `partition` label (what `sum by (corridor, ...)` gives; the fleet figure of one worker).
- `would_fire(snapshot, ...)`: the alerts of deploy/prometheus/rules.yml whose condition holds on the
  current values. The view cannot run PromQL: it evaluates the same comparisons, with the same
  thresholds (the constants below, checked against rules.yml by the unit test), on what the worker
  counts now. "Would fire" ignores `for:` (how long a condition must hold: an alert that would fire
  here fires in Prometheus once it has held that long) and `keep_firing_for:`. The 6 h on-time window is the worker's whole
  life in a demo (a fresh broker and app id each run), the overdue growth is measured against the
  oldest value this view saw within the hour (`History`).
- `make_frame(...)`: everything one screen shows; `render(frame)` -> a rich renderable for the
  terminal, `plain(frame)` -> the same as plain text (no escape codes) for pipes and CI logs.

Thin, and exercised by tests/e2e/test_demo_view.py: `scrape(url)`, `Reader` (what the view keeps
between frames) and `Screen` (rich.live.Live on a terminal; without one, a plain-text snapshot every
`PLAIN_EVERY` seconds). `corridor demo` (streams/cli.py run_demo) runs the processes and calls these.
"""
from __future__ import annotations

import sys
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

from streams.domain.aggregate import OpenGauges
from streams.domain.stages import STAGES, UNKNOWN

#: Seconds between two frames on a terminal.
REFRESH = 1.0
#: Seconds between two plain-text snapshots when stdout is not a terminal (CI logs, pipes).
PLAIN_EVERY = 10.0
#: Behind the wall clock by at most this, the stream clock is "live" (Settings.live_lag_seconds).
LIVE_LAG_SECONDS = 900.0

# ---- the alert thresholds of deploy/prometheus/rules.yml, in one place ----------------------------
#: CorridorOnTimeRateLow: the on-time share of a corridor's deliveries is below this ...
ON_TIME_RATIO_MIN = 0.90
#: ... over at least this many deliveries.
ON_TIME_MIN_DELIVERIES = 30
#: CorridorOverdueBacklog: more than this many open shipments past their promised time ...
OVERDUE_MAX = 50
#: ... or at least this many ...
OVERDUE_GROWING_MIN = 10
#: ... and this many more than OVERDUE_GROWTH_WINDOW_SECONDS ago.
OVERDUE_GROWTH_MIN = 10
OVERDUE_GROWTH_WINDOW_SECONDS = 3600
#: CorridorStageBottleneck: the open shipments of a corridor's bottleneck stage are on average more
#: than this beyond the stage target ...
BOTTLENECK_MEAN_EXCESS_SECONDS = 43200
#: ... with at least this many shipments in the stage.
BOTTLENECK_MIN_SHIPMENTS = 5
#: CorridorCustomsClearanceSlow: the share of a corridor's parcels under one import regime released
#: by customs within the destination's target is below this ...
CUSTOMS_WITHIN_TARGET_MIN = 0.80
#: ... over at least this many released parcels.
CUSTOMS_MIN_CLEARED = 20
#: CorridorConsumerLag: more than this many messages of a topic not processed yet.
CONSUMER_LAG_MAX = 10000
#: CorridorPartitionsUnassigned: more input partitions than this owned by no worker.
UNASSIGNED_PARTITIONS_MAX = 0
#: CorridorWorkerDown: `up` is this (the view could not read the worker's /metrics).
WORKER_DOWN_UP = 0
#: CorridorWorkerNotReady: `corridor_worker_ready` is this (what /health answers 503 to).
WORKER_NOT_READY = 0
#: CorridorMemoryNearLimit: resident memory above this share of the container's memory limit.
MEMORY_LIMIT_RATIO_MAX = 0.9

#: Every alert this view evaluates: its comparisons as written in its `expr` in rules.yml, "<term>
#: <operator>" -> threshold. tests/unit/test_live_view.py reads rules.yml and checks that these are
#: exactly the comparisons of each expression, so the constants above cannot drift from the rules.
RULE_THRESHOLDS: dict[str, dict[str, float]] = {
    "CorridorOnTimeRateLow": {
        "corridor:on_time_ratio:rate6h <": ON_TIME_RATIO_MIN,
        "corridor:shipments_delivered:increase6h >=": ON_TIME_MIN_DELIVERIES},
    "CorridorOverdueBacklog": {
        "corridor:shipments_overdue:sum >": OVERDUE_MAX,
        "corridor:shipments_overdue:sum >=": OVERDUE_GROWING_MIN,
        f"delta(corridor:shipments_overdue:sum[{OVERDUE_GROWTH_WINDOW_SECONDS // 3600}h]) >=":
            OVERDUE_GROWTH_MIN},
    "CorridorStageBottleneck": {
        "corridor_stage:excess_seconds_per_shipment:mean >": BOTTLENECK_MEAN_EXCESS_SECONDS,
        "corridor_stage:shipments_in_stage:sum >=": BOTTLENECK_MIN_SHIPMENTS},
    "CorridorCustomsClearanceSlow": {
        "corridor_regime:customs_cleared_within_target_ratio:rate6h <": CUSTOMS_WITHIN_TARGET_MIN,
        "corridor_regime:customs_cleared:increase6h >=": CUSTOMS_MIN_CLEARED},
    "CorridorConsumerLag": {"topic:consumer_lag:sum >": CONSUMER_LAG_MAX},
    # configured - assigned > 0
    "CorridorPartitionsUnassigned": {"corridor_partitions_assigned >": UNASSIGNED_PARTITIONS_MAX},
    "CorridorWorkerDown": {'up{job="corridor-workers"} ==': WORKER_DOWN_UP},
    "CorridorWorkerNotReady": {"corridor_worker_ready ==": WORKER_NOT_READY},
    # process_resident_memory_bytes / corridor_memory_limit_bytes > 0.9
    "CorridorMemoryNearLimit": {"corridor_memory_limit_bytes >": MEMORY_LIMIT_RATIO_MAX},
}
#: The alerts of rules.yml this view does not evaluate, and why (the unit test checks that every
#: alert there is in RULE_THRESHOLDS or here).
NOT_EVALUATED: dict[str, str] = {
    "CorridorNoTraffic": "compares with the same hour a week earlier",
    "CorridorNoTargets": "the view reads its one worker directly: no target is CorridorWorkerDown here",
    "CorridorDeadLetterRatioHigh": "a rate over 15 minutes",
    "CorridorStreamClockStopped": "changes over 15 minutes",
    "CorridorRebalanceStorm": "an increase over 10 minutes",
    "CorridorAtRiskRising": "the view shows no prediction columns yet (docs/risk.md)",
}


# ---- one scrape ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """One /metrics scrape, summed over `partition`."""
    delivered: dict[str, tuple[int, int]] = field(default_factory=dict)   # corridor -> (on time, late)
    in_stage: dict[tuple[str, str], int] = field(default_factory=dict)    # (corridor, stage) -> open
    overdue: dict[str, int] = field(default_factory=dict)                 # corridor -> open past promise
    excess: dict[tuple[str, str], float] = field(default_factory=dict)    # (corridor, stage) -> s
    clock: float | None = None                                            # the stream clock, Unix s
    lag: dict[str, int] = field(default_factory=dict)                     # topic -> messages
    partitions_configured: int | None = None
    partitions_assigned: int | None = None
    consumed: int = 0                                                     # input messages, all topics
    pending_final: int = 0                                                # ended, not counted yet
    ready: int | None = None                                              # corridor_worker_ready
    memory_bytes: float | None = None                                     # resident memory
    memory_limit_bytes: float | None = None                               # None: no limit
    #: (corridor, import regime) -> (parcels released by import customs, released within target)
    customs: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def corridors(self) -> list[str]:
        """By name; UNKNOWN (shipments whose order has not arrived yet) last."""
        names = set(self.delivered) | {c for c, _ in self.in_stage} | set(self.overdue)
        return sorted(names, key=lambda c: (c == UNKNOWN, c))

    def open(self, corridor: str) -> int:
        return sum(n for (c, _), n in self.in_stage.items() if c == corridor)

    def bottlenecks(self) -> dict[str, str]:
        """corridor -> the stage whose open shipments are furthest beyond target in total (the
        worker's rule, streams.domain.aggregate: only if > 0, ties to the later stage)."""
        return OpenGauges(excess={k: v for k, v in self.excess.items() if k[1] in STAGES}).bottlenecks()


def parse(text: str) -> Snapshot:
    """The figures the view shows, from one /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    delivered: dict[str, list[int]] = {}
    in_stage: dict = {}
    overdue: dict = {}
    excess: dict = {}
    lag: dict = {}
    clock = configured = assigned = ready = memory = limit = None
    consumed = pending = 0
    customs: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == "corridor_shipments_delivered_total":
                row = delivered.setdefault(labels["corridor"], [0, 0])
                row[0 if labels["on_time"] == "true" else 1] += int(value)
            elif name == "corridor_shipments_in_stage":
                key = (labels["corridor"], labels["stage"])
                in_stage[key] = in_stage.get(key, 0) + int(value)
            elif name == "corridor_shipments_overdue":
                overdue[labels["corridor"]] = overdue.get(labels["corridor"], 0) + int(value)
            elif name == "corridor_stage_excess_seconds":
                key = (labels["corridor"], labels["stage"])
                excess[key] = excess.get(key, 0.0) + value
            elif name == "corridor_stream_time_seconds":
                clock = value
            elif name == "corridor_consumer_lag":
                lag[labels["topic"]] = lag.get(labels["topic"], 0) + int(value)
            elif name == "corridor_partitions_configured":
                configured = int(value)
            elif name == "corridor_partitions_assigned":
                assigned = int(value)
            elif name == "corridor_events_consumed_total":
                consumed += int(value)
            elif name == "corridor_shipments_pending_final":
                pending += int(value)
            elif name == "corridor_worker_ready":
                ready = int(value)
            elif name == "process_resident_memory_bytes":
                memory = value
            elif name == "corridor_memory_limit_bytes":
                limit = value
            elif name == "corridor_customs_clearance_seconds_count":
                customs.setdefault((labels["corridor"], labels["regime"]), [0, 0])[0] += int(value)
            elif name == "corridor_customs_cleared_within_target_total" \
                    and labels.get("days") == "calendar":
                customs.setdefault((labels["corridor"], labels["regime"]), [0, 0])[1] += int(value)
    return Snapshot({c: (v[0], v[1]) for c, v in delivered.items()}, in_stage, overdue, excess, clock,
                    lag, configured, assigned, consumed, pending, ready, memory, limit,
                    {k: (v[0], v[1]) for k, v in customs.items()})


# ---- the alerts that would fire --------------------------------------------------------------------

@dataclass(frozen=True)
class Alert:
    name: str
    subject: str          # the corridor, topic or "" (the worker)
    detail: str


def would_fire(snap: Snapshot | None, *, overdue_earlier: dict[str, int] | None = None,
               worker_up: bool = True) -> list[Alert]:
    """The alerts of RULE_THRESHOLDS whose condition holds on `snap` (see the module docstring).

    `overdue_earlier`: overdue per corridor as the view saw it OVERDUE_GROWTH_WINDOW_SECONDS ago (or
    as early as it has, within that window); None: no growth is known, that branch does not fire.
    `worker_up`: False when the last scrape failed (`snap` is then the last one that worked).
    """
    out: list[Alert] = []
    if not worker_up:
        out.append(Alert("CorridorWorkerDown", "", "the worker does not answer /metrics"))
    if snap is None:
        return out
    bottlenecks = snap.bottlenecks()
    for corr in snap.corridors():
        on_time, late = snap.delivered.get(corr, (0, 0))
        done = on_time + late
        if done >= ON_TIME_MIN_DELIVERIES and on_time / done < ON_TIME_RATIO_MIN:   # as PromQL divides
            out.append(Alert("CorridorOnTimeRateLow", corr,
                             f"{percent(on_time, done)} of {done} deliveries on time "
                             f"(< {ON_TIME_RATIO_MIN:.0%} of >= {ON_TIME_MIN_DELIVERIES})"))
        overdue = snap.overdue.get(corr, 0)
        growth = None if overdue_earlier is None else overdue - overdue_earlier.get(corr, 0)
        if overdue > OVERDUE_MAX:
            out.append(Alert("CorridorOverdueBacklog", corr,
                             f"{overdue} open past their promise (> {OVERDUE_MAX})"))
        elif overdue >= OVERDUE_GROWING_MIN and growth is not None and growth >= OVERDUE_GROWTH_MIN:
            out.append(Alert("CorridorOverdueBacklog", corr,
                             f"{overdue} open past their promise, {growth:+d} within the hour "
                             f"(>= {OVERDUE_GROWING_MIN}, up >= {OVERDUE_GROWTH_MIN})"))
        stage = bottlenecks.get(corr)
        n = snap.in_stage.get((corr, stage), 0)
        if stage is not None and n >= BOTTLENECK_MIN_SHIPMENTS:
            mean = snap.excess[(corr, stage)] / n
            if mean > BOTTLENECK_MEAN_EXCESS_SECONDS:
                out.append(Alert("CorridorStageBottleneck", corr,
                                 f"{stage}: {n} open, {duration(mean)} beyond target on average "
                                 f"(> {duration(BOTTLENECK_MEAN_EXCESS_SECONDS)}, "
                                 f">= {BOTTLENECK_MIN_SHIPMENTS})"))
    for (corr, regime), (cleared, within) in sorted(snap.customs.items()):
        if cleared >= CUSTOMS_MIN_CLEARED and within / cleared < CUSTOMS_WITHIN_TARGET_MIN:
            out.append(Alert("CorridorCustomsClearanceSlow", corr,
                             f"{regime}: {percent(within, cleared)} of {cleared} parcels cleared "
                             f"customs within target (< {CUSTOMS_WITHIN_TARGET_MIN:.0%} of "
                             f">= {CUSTOMS_MIN_CLEARED})"))
    for topic, n in sorted(snap.lag.items()):
        if n > CONSUMER_LAG_MAX:
            out.append(Alert("CorridorConsumerLag", topic,
                             f"{n} messages not processed yet (> {CONSUMER_LAG_MAX})"))
    if snap.partitions_configured is not None and snap.partitions_assigned is not None:
        unassigned = snap.partitions_configured - snap.partitions_assigned
        if unassigned > UNASSIGNED_PARTITIONS_MAX:
            out.append(Alert("CorridorPartitionsUnassigned", "",
                             f"{unassigned} of {snap.partitions_configured} partitions owned by no worker"))
    if worker_up and snap.ready == WORKER_NOT_READY:
        out.append(Alert("CorridorWorkerNotReady", "", "the worker is not ready (/health answers 503)"))
    if snap.memory_bytes is not None and snap.memory_limit_bytes:
        share = snap.memory_bytes / snap.memory_limit_bytes
        if share > MEMORY_LIMIT_RATIO_MAX:
            out.append(Alert("CorridorMemoryNearLimit", "",
                             f"resident memory is {share:.0%} of the limit (> {MEMORY_LIMIT_RATIO_MAX:.0%})"))
    return out


# ---- one frame -------------------------------------------------------------------------------------

COLUMNS = ("corridor", "on time", "delivered", "open", "overdue", "bottleneck", "would fire")


@dataclass(frozen=True)
class Row:
    corridor: str
    on_time: int
    delivered: int
    open: int
    overdue: int
    bottleneck: str | None
    alerts: tuple[str, ...]

    def cells(self) -> tuple[str, ...]:
        """The row as the table shows it, in COLUMNS order."""
        return (self.corridor, percent(self.on_time, self.delivered), f"{self.delivered:,}",
                f"{self.open:,}", f"{self.overdue:,}", self.bottleneck or "-",
                " ".join(self.alerts) or "-")


@dataclass(frozen=True)
class Frame:
    """Everything one screen shows."""
    title: str
    status: str                                   # one line: what runs, how it stops
    wall: float                                   # when, Unix seconds
    snapshot: Snapshot | None
    rows: tuple[Row, ...]
    alerts: tuple[Alert, ...]
    links: tuple[tuple[str, str], ...] = ()       # (what, URL or path)


def rows(snap: Snapshot | None, alerts: list[Alert] = ()) -> list[Row]:
    if snap is None:
        return []
    bottlenecks = snap.bottlenecks()
    out = []
    for corr in snap.corridors():
        on_time, late = snap.delivered.get(corr, (0, 0))
        names = tuple(a.name for a in alerts if a.subject == corr)
        out.append(Row(corr, on_time, on_time + late, snap.open(corr), snap.overdue.get(corr, 0),
                       bottlenecks.get(corr), names))
    return out


def make_frame(snap: Snapshot | None, *, wall: float, status: str = "", title: str = "corridor demo",
               overdue_earlier: dict[str, int] | None = None, worker_up: bool = True,
               links: tuple[tuple[str, str], ...] = ()) -> Frame:
    alerts = would_fire(snap, overdue_earlier=overdue_earlier, worker_up=worker_up)
    return Frame(title, status, wall, snap, tuple(rows(snap, alerts)), tuple(alerts), tuple(links))


def percent(part: int, whole: int) -> str:
    """part/whole as a percentage with one decimal, rounded *down* (89.96 % shows as 89.9 %, never
    as the 90.0 % an alert is below); "-" when whole is 0."""
    if not whole:
        return "-"
    tenths = part * 1000 // whole
    return f"{tenths // 10}.{tenths % 10} %"


def duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def clock_text(clock: float | None, wall: float) -> str:
    if clock is None:
        return "stream clock: no events yet"
    at = datetime.fromtimestamp(clock, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    behind = wall - clock
    if behind <= LIVE_LAG_SECONDS:
        return f"stream clock: {at} (live)"
    return f"stream clock: {at} ({behind / 86400:.1f} days behind)"


def _summary(frame: Frame) -> str:
    snap = frame.snapshot
    wall = datetime.fromtimestamp(frame.wall).strftime("%H:%M:%S")
    if snap is None:
        return f"{clock_text(None, frame.wall)} | {wall}"
    return (f"{clock_text(snap.clock, frame.wall)} | events {snap.consumed:,} | "
            f"lag {sum(snap.lag.values()):,} | not final yet {snap.pending_final:,} | {wall}")


#: Shown while there are corridors but no delivery counted yet.
NO_DELIVERIES = ("deliveries count once final: when the stream clock is past the delivery by the "
                 "grace period (CORRIDOR_GRACE_SECONDS, 48 h of stream time: a few minutes into the demo)")
ALERTS_TITLE = "alerts that would fire now (deploy/prometheus/rules.yml, current values, no `for:`)"
NO_ROWS = "no corridor figures yet"


def _no_deliveries(frame: Frame) -> bool:
    return bool(frame.rows) and not any(r.delivered for r in frame.rows)


def plain(frame: Frame) -> str:
    """The frame as plain text: aligned columns, no escape codes."""
    table = [COLUMNS] + [r.cells() for r in frame.rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    right = {1, 2, 3, 4}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"{frame.title}: {frame.status}" if frame.status else frame.title, _summary(frame), ""]
    out.append(line(COLUMNS))
    out += [line(r.cells()) for r in frame.rows] or [NO_ROWS]
    if _no_deliveries(frame):
        out.append(NO_DELIVERIES)
    out.append("")
    if frame.alerts:
        out.append(ALERTS_TITLE + ":")
        out += [f"  {a.name}  {a.subject + ': ' if a.subject else ''}{a.detail}" for a in frame.alerts]
    else:
        out.append("alerts: none would fire now")
    if frame.links:
        out.append("")
        width = max(len(what) for what, _ in frame.links)
        out += [f"{what.ljust(width)}  {where}" for what, where in frame.links]
    return "\n".join(out) + "\n"


def render(frame: Frame):
    """The frame as a rich renderable (a table and a few lines of text)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text(frame.title, style="bold")
    if frame.status:
        head.append(f": {frame.status}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="right" if i in (1, 2, 3, 4) else "left",
                         no_wrap=i < len(COLUMNS) - 1)
    for r in frame.rows:
        cells = list(r.cells())
        late = r.delivered and r.on_time / r.delivered < ON_TIME_RATIO_MIN
        table.add_row(Text(cells[0], style="bold"), Text(cells[1], style="red" if late else ""),
                      *cells[2:6], Text(cells[6], style="bold red" if r.alerts else "dim"))
    parts = [head, Text(_summary(frame), style="dim"), table]
    if not frame.rows:
        parts.append(Text(NO_ROWS, style="dim"))
    if _no_deliveries(frame):
        parts.append(Text(NO_DELIVERIES, style="dim"))
    parts.append(Text(""))
    if frame.alerts:
        alerts = Text(ALERTS_TITLE + ":\n", style="bold")
        for a in frame.alerts:
            alerts.append(f"  {a.name}  ", style="bold red")
            alerts.append(f"{a.subject + ': ' if a.subject else ''}{a.detail}\n")
        parts.append(alerts)
    else:
        parts.append(Text("alerts: none would fire now\n", style="green"))
    if frame.links:
        width = max(len(what) for what, _ in frame.links)
        links = Text()
        for what, where in frame.links:
            links.append(f"{what.ljust(width)}  ", style="dim")
            links.append(f"{where}\n")
        parts.append(links)
    return Group(*parts)


# ---- the thin part: reading the worker, showing frames ---------------------------------------------

def scrape(url: str, timeout: float = 2.0) -> str | None:
    """The text at `url` (the worker's /metrics), or None when it does not answer 200 in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode() if resp.status == 200 else None
    except (OSError, ValueError):
        return None


class History:
    """Overdue per corridor over the last OVERDUE_GROWTH_WINDOW_SECONDS, for CorridorOverdueBacklog's
    growth branch: `add()` returns the oldest values seen within the window."""

    def __init__(self, window: float = OVERDUE_GROWTH_WINDOW_SECONDS):
        self.window = window
        self._seen: deque[tuple[float, dict[str, int]]] = deque()

    def add(self, at: float, snap: Snapshot) -> dict[str, int]:
        self._seen.append((at, dict(snap.overdue)))
        while self._seen[0][0] < at - self.window:
            self._seen.popleft()
        return self._seen[0][1]


class Reader:
    """What the view remembers between frames: the last scrape that worked, whether the last read
    worked (CorridorWorkerDown), and the overdue history (`History`)."""

    def __init__(self, url: str, timeout: float = 2.0):
        self.url = url
        self.timeout = timeout
        self.snapshot: Snapshot | None = None
        self.up = True
        self.earlier: dict[str, int] | None = None
        self._history = History()

    def read(self) -> bool:
        text = scrape(self.url, self.timeout)
        self.up = text is not None
        if text is not None:
            self.snapshot = parse(text)
            self.earlier = self._history.add(time.monotonic(), self.snapshot)
        return self.up

    def frame(self, *, status: str, links=(), wall: float | None = None) -> Frame:
        return make_frame(self.snapshot, wall=time.time() if wall is None else wall, status=status,
                          overdue_earlier=self.earlier, worker_up=self.up, links=tuple(links))


class Screen:
    """Where frames go. On a terminal: a rich.live.Live redrawn in place at every `show()`. Otherwise
    (a pipe, a CI log): a plain-text snapshot at most every `plain_every` seconds, no escape codes.
    `close(frame)` ends the live area and prints `frame` once more, so the last frame stays."""

    def __init__(self, stream=None, *, live: bool | None = None, plain_every: float = PLAIN_EVERY):
        from rich.console import Console
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream)
        self.live = self.console.is_terminal if live is None else live
        self.plain_every = plain_every
        self._live = None
        self._next_plain = 0.0

    def __enter__(self) -> "Screen":
        if self.live:
            from rich.live import Live
            self._live = Live(console=self.console, auto_refresh=False, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop()

    def show(self, frame: Frame, *, force: bool = False) -> None:
        if self._live is not None:
            self._live.update(render(frame), refresh=True)
            return
        now = time.monotonic()
        if force or now >= self._next_plain:
            self._next_plain = now + self.plain_every
            self.stream.write(plain(frame) + "\n")
            self.stream.flush()

    def close(self, frame: Frame, *lines: str) -> None:
        """Print the last frame (and `lines` after it) where it stays."""
        self._stop()
        if self.live:
            self.console.print(render(frame))
            for line in lines:
                self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        else:
            self.stream.write(plain(frame) + "".join(line + "\n" for line in lines))
            self.stream.flush()

    def _stop(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()
