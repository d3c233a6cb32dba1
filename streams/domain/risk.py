"""Lateness risk of a shipment in flight: P(late) and a delivery range, from what comparable
shipments took, and the baseline it is measured against (docs/risk.md).

Pure code, event time only; the worker and `corridor backtest` run it alike. What a delivered
shipment teaches is a handful of counts (`observations`): per stage it went through, one sample
(time it spent in the stage, time from entering the stage to delivery), binned on fixed
log-spaced bins (`cell`), and counted under the day of the delivery. Counts add up: whatever
partition or worker counted them, in whatever order, the fleet's model is their sum, so every
worker can hold the same model and it equals the batch one (docs/risk.md "Online").

`RiskModel.predict` answers for a shipment in stage S since `entered`, at event time `now`, with
promise `promise`, from the deliveries of the last WINDOW_DAYS days up to now's day (a recent
window: a customs backlog shows up within days):

- P(late): among comparable shipments that spent at least as long in S as this one already has,
  the share whose time from entering S to delivery exceeded this one's slack (promise - entered).
  Comparable: the same corridor, service level and stage, shrunk towards the same destination
  and stage, itself shrunk towards the stage alone, with SHRINK pseudo-observations at each level
  (a corridor seen a few times borrows from its destination). Already past its promise: 1.
- The range p10/p50/p90: event times, from the same conditioned times to delivery of the first
  level with at least MIN_SAMPLES of them, at the levels RANGE_LEVELS.

`Baseline` is the reference the issue defines: at hand-over (picked_up), the share of the same
corridor's last 500 shipments delivered before the prediction time (fewer than 20: the
destination's, then all) whose hand-over-to-delivery time exceeded the shipment's slack.
"""
from __future__ import annotations

import math
from collections import defaultdict, deque
from dataclasses import dataclass, field

from streams.domain.stages import iso

DAY = 86400
WINDOW_DAYS = 60        # deliveries of the last 60 days (docs/risk.md: 30 and 120 scored lower)
SHRINK = 10.0           # pseudo-observations borrowed from the coarser level
MIN_SAMPLES = 20        # conditioned samples a level needs to give the range
#: The quantile levels of the range: the central 85 % of the conditioned history, which covers
#: about 77 % of Olist deliveries (the next weeks move more than a 60-day window shows; the
#: central 80 % covered 72 %). Chosen on Olist (docs/risk.md).
RANGE_LEVELS = (0.075, 0.5, 0.925)
#: The bins of a sample's two times: [0, 1 h), then PER_OCTAVE per doubling from 1 h; the last is
#: open (beyond 1 h * 2^12 = 170 days).
BIN_BASE = 3600.0
PER_OCTAVE = 4
BINS = 2 + PER_OCTAVE * 12
EDGES = (0.0,) + tuple(BIN_BASE * 2 ** (k / PER_OCTAVE) for k in range(BINS - 1))
BASELINE_LAST = 500
BASELINE_MIN = 20
#: P(late) at or above which an open shipment counts as at risk (the SLA policy's `at_risk`).
AT_RISK = 0.5
#: Expected late counts are summed in units of 2^-20 (about a millionth): integers, exact in any
#: order, and their values as floats add up exactly too (a fleet's sum over workers in PromQL
#: equals the batch figure: decimal millionths would not).
UNIT = 2 ** 20


@dataclass(frozen=True)
class Prediction:
    p_late: float
    p10: float | None           # event times (epoch seconds) of the delivery range
    p50: float | None
    p90: float | None
    level: str                  # the hierarchy level the range came from: corridor, destination, stage


def destination(corridor: str) -> str:
    return corridor.rsplit("-", 1)[-1]


def bin_of(seconds: float) -> int:
    if seconds < BIN_BASE:
        return 0
    return min(BINS - 1, 1 + int(PER_OCTAVE * math.log2(seconds / BIN_BASE)))


def _bounds(j: int) -> tuple[float, float]:
    lo = EDGES[j]
    return lo, (EDGES[j + 1] if j + 1 < BINS else lo * 2 ** (1 / PER_OCTAVE))


def _share_above(j: int, x: float) -> float:
    """The share of bin j above x (uniform in log time within the bin; linear in the first)."""
    lo, hi = _bounds(j)
    if x <= lo:
        return 1.0
    if x >= hi:
        return 0.0
    if j == 0:
        return (hi - x) / hi
    return math.log(hi / x) / math.log(hi / lo)


def cell(dwell: float, to_delivery: float) -> int:
    """The bin pair of one sample: (time spent in the stage, time from entering it to delivery)."""
    return bin_of(dwell) * BINS + bin_of(to_delivery)


# ---- what a delivery teaches: observations counted like the other totals ------------------------
def risk_key(corridor: str, day: int) -> str:
    """The totals "corridor" under which a corridor's samples of one delivery day are counted."""
    return f"{corridor}#{day}"


def is_risk_key(name: str) -> bool:
    return "#" in name


def split_risk_key(name: str) -> tuple[str, int]:
    corridor, day = name.rsplit("#", 1)
    return corridor, int(day)


def observations(corridor: str, level: str, stages, delivered: float) -> list[tuple]:
    """("risk", corridor#day, "level|stage|cell") of a delivered shipment, one per stage it went
    through; `stages` = (stage, entered, dwell) (timeline.stage_durations)."""
    key = risk_key(corridor, int(delivered // DAY))
    return [("risk", key, f"{level}|{stage}|{cell(dwell, delivered - start)}")
            for stage, start, dwell in stages]


def _parse(sample: str, _cache: dict = {}) -> tuple[str, str, int]:
    hit = _cache.get(sample)
    if hit is None:
        level, stage, c = sample.split("|")
        hit = _cache[sample] = (level, stage, int(c))
    return hit


class RiskModel:
    """The deliveries of a window of days, summed over whoever counted them.

    `add(name, counts, sign)` adds (or, sign -1, removes) one totals record's risk counts
    ({"level|stage|cell": n} of risk_key name); `move_to(day)` sets the window's last day.
    """

    def __init__(self, window_days: int = WINDOW_DAYS):
        self.window_days = window_days
        #: day -> corridor -> {sample: n}, every day counted (the window slides over them)
        self.days: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
        #: group -> {cell: n} over the window: (corridor, level, stage), (destination, stage), (stage,)
        self.window: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.day: int | None = None
        self._rows: dict[tuple, dict[int, tuple]] = {}   # group -> spent bin -> (row, suffix sums)

    # ---- learning ------------------------------------------------------------------------------
    def add(self, name: str, counts: dict[str, int], sign: int = 1) -> None:
        corridor, day = split_risk_key(name)
        kept = self.days[day][corridor]
        for sample, n in counts.items():
            left = kept.get(sample, 0) + sign * n
            if left:
                kept[sample] = left
            else:
                kept.pop(sample, None)
        if not kept:
            del self.days[day][corridor]
            if not self.days[day]:
                del self.days[day]
        if self.day is not None and self.day - self.window_days < day <= self.day:
            self._apply(corridor, counts, sign)

    def counts(self) -> dict[str, dict[str, int]]:
        """Every count, as the worker's totals hold them: {risk_key: {sample: n}}."""
        return {risk_key(corridor, day): dict(counts) for day, by_corridor in self.days.items()
                for corridor, counts in by_corridor.items()}

    def delivered(self, corridor: str, level: str, stages, at: float) -> None:
        """What settling a delivery counts (`observations`), for batch use."""
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for _kind, name, sample in observations(corridor, level, stages, at):
            counts[name][sample] = counts[name].get(sample, 0) + 1
        for name, c in counts.items():
            self.add(name, c)

    def move_to(self, day: int) -> None:
        """Make the window end on `day` (the days day - window_days + 1 .. day)."""
        old = self.day
        if old == day:
            return
        if old is None or abs(day - old) >= self.window_days:
            self.window.clear()
            self._rows.clear()
            for d, by_corridor in self.days.items():
                if day - self.window_days < d <= day:
                    for corridor, counts in by_corridor.items():
                        self._apply(corridor, counts, 1)
        else:
            lo_old, lo_new = old - self.window_days, day - self.window_days
            entering = range(old + 1, day + 1) if day > old else range(lo_new + 1, lo_old + 1)
            leaving = range(lo_old + 1, lo_new + 1) if day > old else range(day + 1, old + 1)
            for days, sign in ((entering, 1), (leaving, -1)):
                for d in days:
                    for corridor, counts in self.days.get(d, {}).items():
                        self._apply(corridor, counts, sign)
        self.day = day

    def _apply(self, corridor: str, counts: dict[str, int], sign: int) -> None:
        dest = destination(corridor)
        for sample, n in counts.items():
            level, stage, c = _parse(sample)
            for group in ((corridor, level, stage), (dest, stage), (stage,)):
                w = self.window[group]
                w[c] += sign * n
                self._rows.pop(group, None)

    # ---- predicting ----------------------------------------------------------------------------
    def _row(self, group: tuple, spent_bin: int) -> tuple:
        """(times to delivery by bin, suffix sums, total) of the group's samples that spent at
        least `spent_bin` in the stage."""
        by_spent = self._rows.setdefault(group, {})
        hit = by_spent.get(spent_bin)
        if hit is None:
            row = [0] * BINS
            for c, n in self.window.get(group, {}).items():
                if c // BINS >= spent_bin:
                    row[c % BINS] += n
            suffix = [0] * (BINS + 1)
            for j in range(BINS - 1, -1, -1):
                suffix[j] = suffix[j + 1] + row[j]
            hit = by_spent[spent_bin] = (row, suffix)
        return hit

    def _rows_for(self, corridor: str, level: str, stage: str, spent: float) -> tuple[list, float]:
        """The rows of the three levels conditioned on `spent`, and the delay to add to their
        times: 0, unless no sample of the stage spent that long. Such a shipment is judged by the
        longest-held samples there are, delayed by how much longer it has been held than they
        were (the start of their dwell bin)."""
        groups = ((corridor, level, stage), (destination(corridor), stage), (stage,))
        s = top = bin_of(spent)
        while s > 0 and not self._row(groups[-1], s)[1][0]:
            s -= 1
        delay = 0.0 if s == top else max(0.0, spent - EDGES[s])
        return [self._row(g, s) for g in groups], delay

    def p_late(self, corridor: str, level: str, stage: str, entered: float, now: float,
               promise: float, rows: tuple | None = None) -> float:
        """P(late) at `now`, the window as it is (`predict` moves it)."""
        spent = max(0.0, now - entered)
        slack = promise - entered
        if slack <= spent:
            return 1.0                          # already past its promise
        rows, delay = rows if rows is not None else self._rows_for(corridor, level, stage, spent)
        slack -= delay
        if slack <= 0:
            return 1.0
        j = bin_of(slack)
        p = 0.0
        for row, suffix in reversed(rows):
            late = suffix[j + 1] + row[j] * _share_above(j, slack)
            p = (late + SHRINK * p) / (suffix[0] + SHRINK)
        return p

    def predict(self, corridor: str, level: str, stage: str, entered: float, now: float,
                promise: float) -> Prediction:
        """P(late) and the range at `now` (the window is moved to now's day)."""
        self.move_to(int(now // DAY))
        spent = max(0.0, now - entered)
        rows, delay = found = self._rows_for(corridor, level, stage, spent)
        p = self.p_late(corridor, level, stage, entered, now, promise, found)
        names = ("corridor", "destination", "stage")
        name, (row, suffix) = next(((n, r) for n, r in zip(names, rows) if r[1][0] >= MIN_SAMPLES),
                                   (names[-1], rows[-1]))
        q = _quantiles(row, suffix[0], RANGE_LEVELS)
        p10, p50, p90 = (None if v is None else entered + max(v + delay, spent) for v in q)
        return Prediction(p, p10, p50, p90, name)


def _quantiles(row: list[int], total: int, levels) -> tuple:
    """Quantiles of binned times (uniform in log time within a bin; linear in the first)."""
    if not total:
        return (None,) * len(levels)
    out = []
    for q in levels:
        target = q * total
        acc = 0
        for j, n in enumerate(row):
            if n and acc + n >= target:
                f = (target - acc) / n
                lo, hi = _bounds(j)
                out.append(lo + f * (hi - lo) if j == 0 else lo * (hi / lo) ** f)
                break
            acc += n
    return tuple(out)


def describe(p: Prediction, stage: str, threshold: float = AT_RISK) -> dict:
    """A prediction as the shipment view shows it."""
    return {"p_late": round(p.p_late, 4), "at_risk": p.p_late >= threshold, "stage": stage,
            "delivery_p10": iso(p.p10), "delivery_p50": iso(p.p50), "delivery_p90": iso(p.p90),
            "compared_with": p.level}


@dataclass
class AtRisk:
    """The open shipments' risk at one moment: what the at-risk gauges show."""
    at_risk: dict = field(default_factory=lambda: defaultdict(int))   # (corridor, level, stage) -> n
    expected_late: dict = field(default_factory=lambda: defaultdict(int))  # corridor -> sum P, in 1/UNIT
    scored: dict = field(default_factory=lambda: defaultdict(int))    # corridor -> open with a promise


def score_open(model: RiskModel, entries, now: float, threshold: float = AT_RISK) -> AtRisk:
    """P(late) of every open shipment (`timeline.open_entry` tuples; those without a promise are
    not scored) at event time `now`: the at-risk counts and the expected number of late ones."""
    out = AtRisk()
    at_risk, expected, scored = out.at_risk, out.expected_late, out.scored
    model.move_to(int(now // DAY))
    p_late = model.p_late
    for entry in entries:
        if entry is None:
            continue
        corr, level, stage, _beyond, due, since, _waiting = entry
        if due is None:
            continue
        p = p_late(corr, level, stage, since, now, due)
        scored[corr] += 1
        expected[corr] += round(p * UNIT)
        if p >= threshold:
            at_risk[(corr, level, stage)] += 1
    return out


class Baseline:
    """The reference predictor (issue 16, exactly as defined there), for hand-over predictions."""

    def __init__(self):
        self.by_corridor: dict[str, deque] = defaultdict(lambda: deque(maxlen=BASELINE_LAST))
        self.by_destination: dict[str, deque] = defaultdict(lambda: deque(maxlen=BASELINE_LAST))
        self.all: deque = deque(maxlen=BASELINE_LAST)

    def delivered(self, corridor: str, handed_over: float, at: float) -> None:
        x = at - handed_over
        self.by_corridor[corridor].append(x)
        self.by_destination[destination(corridor)].append(x)
        self.all.append(x)

    def predict(self, corridor: str, handed_over: float, promise: float) -> float:
        slack = promise - handed_over
        for history in (self.by_corridor.get(corridor, ()), self.by_destination.get(destination(corridor), ()),
                        self.all):
            if len(history) >= BASELINE_MIN:
                break
        if not history:
            return 0.0
        return sum(1 for x in history if x > slack) / len(history)


# ---- scores -------------------------------------------------------------------------------------
def average_precision(labels: list[bool], scores: list[float]) -> float | None:
    """PR-AUC as average precision (step-wise, tied scores taken together), as scikit-learn's
    average_precision_score. None without a positive."""
    positives = sum(labels)
    if not positives:
        return None
    pairs = sorted(zip(scores, labels), key=lambda p: -p[0])
    tp = fp = 0
    ap = 0.0
    i = 0
    while i < len(pairs):
        j = i
        new_tp = 0
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            new_tp += pairs[j][1]
            j += 1
        tp += new_tp
        fp += (j - i) - new_tp
        ap += new_tp / positives * tp / (tp + fp)
        i = j
    return ap


def roc_auc(labels: list[bool], scores: list[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half). None without both classes."""
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and scores[order[j]] == scores[order[i]]:
            j += 1
        avg_rank = (i + 1 + j) / 2
        rank_sum += avg_rank * sum(labels[order[k]] for k in range(i, j))
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def brier(labels: list[bool], scores: list[float]) -> float | None:
    if not labels:
        return None
    return sum((s - y) ** 2 for y, s in zip(labels, scores)) / len(labels)


def precision_recall(labels: list[bool], scores: list[float], threshold: float) -> tuple:
    flagged = [y for y, s in zip(labels, scores) if s >= threshold]
    positives = sum(labels)
    precision = sum(flagged) / len(flagged) if flagged else None
    recall = sum(flagged) / positives if positives else None
    return precision, recall


def attribute_lateness(lateness: float, stages: list[tuple[str, float, float]]) -> dict[str, int]:
    """Where a late shipment's lateness (delivered - promise, > 0) was lost, in whole seconds:
    split over its stages in proportion to each stage's time beyond its target; if no stage ran
    over its target (the promise is tighter than the targets), in proportion to each stage's
    dwell. `stages` = (stage, dwell, target). The parts add up to the lateness rounded to the
    second, exactly (largest remainder): sums over shipments and partitions are whole numbers,
    exact in any order and in floating point (docs/risk.md)."""
    total = round(lateness)
    if total <= 0 or not stages:
        return {}
    weights = {stage: max(0.0, dwell - target) for stage, dwell, target in stages}
    if sum(weights.values()) <= 0:
        weights = {stage: max(0.0, dwell) for stage, dwell, _t in stages}
    weight = sum(weights.values())
    if weight <= 0:
        return {stages[-1][0]: total}
    shares = {stage: total * w / weight for stage, w in weights.items() if w > 0}
    parts = {stage: int(share) for stage, share in shares.items()}
    left = total - sum(parts.values())
    order = sorted(shares, key=lambda s: (-(shares[s] - parts[s]), s))
    for stage in order[:left]:
        parts[stage] += 1
    return parts
