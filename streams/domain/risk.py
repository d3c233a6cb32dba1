"""Lateness risk of a shipment in flight: P(late) and a delivery range, from what comparable
shipments took, and the baseline it is measured against (docs/risk.md).

Pure code, event time only. A `RiskModel` learns from delivered shipments (`delivered`) and from
shipments entering stages (`entered`), in event-time order; `predict` answers for a shipment in
stage S since `entered`, at event time `now`, with promise `promise`:

    P(late) = (1 - NOW_WEIGHT) * P_history + NOW_WEIGHT * P_now

- P_history: among comparable shipments delivered before `now` that spent at least the time this
  one has already spent in S, the share whose time from entering S to delivery exceeded this
  one's slack (promise - entered). Comparable: the same corridor, service level and stage (the
  last HISTORY of them), shrunk towards the same destination and stage, which is shrunk towards
  the stage alone, with SHRINK pseudo-observations at each level (a corridor seen a few times
  borrows from its destination, not the other way round).
- P_now: the Kaplan-Meier survival, at the slack, of the time from entering S to delivery over
  the last RECENT shipments (any corridor) that entered S, those not delivered yet counted as
  censored at `now`: it sees a backlog that has not delivered anything yet.
- The range p10/p50/p90: quantiles of the delivery times (entered + time to delivery) of the
  first level of the hierarchy with at least MIN_SAMPLES conditioned shipments.

`Baseline` is the reference the issue defines: at hand-over (picked_up), the share of the same
corridor's last 500 shipments delivered before the prediction time (fewer than 20: the
destination's, then all) whose hand-over-to-delivery time exceeded the shipment's slack.
"""
from __future__ import annotations

import bisect
import math
from collections import defaultdict, deque
from dataclasses import dataclass

HISTORY = 500           # samples kept per (corridor, level, stage) and per (destination, stage)
HISTORY_ALL = 2000      # samples kept per stage
RECENT = 300            # stage entries in the Kaplan-Meier cohort
SHRINK = 10.0           # pseudo-observations borrowed from the coarser level
MIN_SAMPLES = 20        # conditioned samples a level needs to give the range
NOW_WEIGHT = 0.1        # weight of P_now (docs/risk.md: how it was chosen, and the ablation)
#: Levels at which a prediction's distribution is remembered until the delivery (for the range's
#: recalibration), and how many resolved predictions the recalibration uses.
GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
PIT_LAST = 500
PIT_MIN = 100
BASELINE_LAST = 500
BASELINE_MIN = 20


@dataclass(frozen=True)
class Prediction:
    p_late: float
    p10: float | None           # event times (epoch seconds) of the delivery range
    p50: float | None
    p90: float | None
    p_history: float
    p_now: float
    level: str                  # the hierarchy level the range came from: corridor, destination, stage
    grid: tuple = ()            # entered + the conditioned times to delivery at the GRID levels


def destination(corridor: str) -> str:
    return corridor.rsplit("-", 1)[-1]


class RiskModel:
    """What delivered and in-flight shipments taught, per stage; one per partition in the worker,
    one per log in batch."""

    def __init__(self):
        # group -> deque of (dwell in the stage, entry-to-delivery seconds), oldest first
        self.history: dict[tuple, deque] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.history_all: dict[str, deque] = defaultdict(lambda: deque(maxlen=HISTORY_ALL))
        # stage -> deque of [shipment id, entered, delivered or None], oldest entry first
        self.recent: dict[str, deque] = defaultdict(lambda: deque(maxlen=RECENT))
        self._open: dict[tuple[str, str], list] = {}      # (stage, shipment) -> its recent item
        # (shipment, stage) -> the GRID of its prediction, until it is delivered
        self._grids: dict[tuple[str, str], tuple] = {}
        self.pits: deque = deque(maxlen=PIT_LAST)         # where deliveries fell in their grids

    # ---- learning ------------------------------------------------------------------------------
    def predicted(self, shipment: str, stage: str, prediction: "Prediction") -> None:
        """Remember the prediction made as `shipment` entered `stage`, to score its range once it
        is delivered (the range's recalibration)."""
        if prediction.grid:
            self._grids[(shipment, stage)] = prediction.grid

    def entered(self, shipment: str, stage: str, at: float) -> None:
        """A shipment entered `stage` at event time `at`."""
        cohort = self.recent[stage]
        if len(cohort) == cohort.maxlen:
            old = cohort[0]
            self._open.pop((stage, old[0]), None)
        item = [shipment, at, None]
        cohort.append(item)
        self._open[(stage, shipment)] = item

    def delivered(self, shipment: str, corridor: str, level: str,
                  stages: list[tuple[str, float, float]], at: float) -> None:
        """A shipment was delivered at `at`; `stages` = (stage, entered, dwell) of every stage it
        went through (timeline.stage_durations)."""
        for stage, start, dwell in stages:
            sample = (dwell, at - start)
            self.history[(corridor, level, stage)].append(sample)
            self.history[(destination(corridor), stage)].append(sample)
            self.history_all[stage].append(sample)
            item = self._open.pop((stage, shipment), None)
            if item is not None:
                item[2] = at
            grid = self._grids.pop((shipment, stage), None)
            if grid is not None:
                self.pits.append(pit(grid, at))

    def range_levels(self) -> tuple[float, float, float]:
        """The quantile levels that give the p10/p50/p90 of the range: (0.1, 0.5, 0.9) until
        PIT_MIN predictions have been resolved, then the 10th, 50th and 90th percentile of where
        recent deliveries fell in their predicted distributions (quantile recalibration: when
        recent shipments run slower than the history, the range moves and widens with them)."""
        if len(self.pits) < PIT_MIN:
            return 0.1, 0.5, 0.9
        return _quantiles(sorted(self.pits), (0.1, 0.5, 0.9))

    # ---- predicting ----------------------------------------------------------------------------
    def predict(self, corridor: str, level: str, stage: str, entered: float, now: float,
                promise: float) -> Prediction:
        spent = max(0.0, now - entered)
        slack = promise - entered
        levels = (("corridor", self.history.get((corridor, level, stage), ())),
                  ("destination", self.history.get((destination(corridor), stage), ())),
                  ("stage", self.history_all.get(stage, ())))
        conditioned = [[r for d, r in samples if d >= spent] for _, samples in levels]
        # shrink from the coarsest level inwards
        p = 0.0
        for rows in reversed(conditioned):
            late = sum(1 for r in rows if r > slack)
            p = (late + SHRINK * p) / (len(rows) + SHRINK)
        p_now = self._p_now(stage, now, spent, slack)
        p_late = (1 - NOW_WEIGHT) * p + NOW_WEIGHT * p_now
        name, rows = next(((n, r) for (n, _), r in zip(levels, conditioned) if len(r) >= MIN_SAMPLES),
                          (levels[-1][0], conditioned[-1]))
        rows.sort()
        q = _quantiles(rows, self.range_levels()) if rows else (None, None, None)
        p10, p50, p90 = (None if v is None else entered + v for v in q)
        grid = tuple(entered + v for v in _quantiles(rows, GRID)) if rows else ()
        return Prediction(p_late, p10, p50, p90, p, p_now, name, grid)


    def _p_now(self, stage: str, now: float, spent: float, slack: float) -> float:
        """P_now: the Kaplan-Meier survival of the recent cohort at the slack or, when the slack
        is beyond its longest follow-up (a slack of weeks, a cohort of days), at that follow-up.
        So it is mostly the share of the latest entries into the stage not delivered yet: how
        the stage is flowing now (docs/risk.md: extrapolating the tail from history instead
        scored worse on Olist, PR-AUC 0.279 against 0.313)."""
        return km_late(self.recent.get(stage, ()), now, spent, slack)[0]


def km_late(cohort, now: float, spent: float, slack: float) -> tuple[float, float | None]:
    """(P(time to delivery > min(slack, horizon) | > spent), horizon) by Kaplan-Meier over the
    cohort's [id, entered, delivered or None] items that entered before `now` (not delivered by
    `now`: censored at now - entered); horizon = the longest time observed. (0, None) without data."""
    times = []
    for _sid, start, end in cohort:
        if start > now:
            continue
        if end is not None and end <= now:
            times.append((end - start, 1))
        else:
            times.append((now - start, 0))
    if not times:
        return 0.0, None
    times.sort()
    horizon = times[-1][0]
    s_spent = s_slack = surv = 1.0
    at_risk = len(times)
    i = 0
    while i < len(times):
        t = times[i][0]
        events = gone = 0
        while i < len(times) and times[i][0] == t:
            events += times[i][1]
            gone += 1
            i += 1
        if events:
            surv *= 1 - events / at_risk
        at_risk -= gone
        if t <= spent:
            s_spent = surv
        if t <= slack:
            s_slack = surv
    if s_spent <= 0 or slack <= spent:
        return 1.0, horizon
    return min(1.0, s_slack / s_spent), horizon


def pit(grid: tuple, actual: float) -> float:
    """Where `actual` fell in a predicted distribution given at the GRID levels (linear between
    them; below the first level 0.025, above the last 0.975)."""
    if actual < grid[0]:
        return GRID[0] / 2
    if actual > grid[-1]:
        return (GRID[-1] + 1) / 2
    i = bisect.bisect_left(grid, actual)
    if grid[i] == actual or i == 0:
        # ties: the middle of the levels that share this value
        j = bisect.bisect_right(grid, actual) - 1
        return (GRID[i] + GRID[j]) / 2
    lo, hi = grid[i - 1], grid[i]
    return GRID[i - 1] + (GRID[i] - GRID[i - 1]) * (actual - lo) / (hi - lo)


def _quantiles(values: list[float], qs) -> tuple:
    """Linear interpolation between the two nearest ranks (pandas' default), of sorted values."""
    out = []
    n = len(values)
    for q in qs:
        pos = q * (n - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, n - 1)
        out.append(values[lo] + (values[hi] - values[lo]) * (pos - lo))
    return tuple(out)


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
