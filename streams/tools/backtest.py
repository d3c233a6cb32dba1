"""`corridor backtest`: the lateness predictions the worker makes, replayed over a log and scored.

The log is read and checked like `corridor report` reads it and joined by the same Engine. Then its
history is replayed in event time: at every milestone of every shipment (order placed, hand-over,
departure, arrival, import release) a prediction is made with `domain.risk.RiskModel`, which has
seen only the shipments delivered strictly before that moment and the stage entries made before
it (no look-ahead); each delivery then teaches the model. The baseline of issue 16
(`domain.risk.Baseline`) predicts at hand-over, from the same past.

Scored: delivered shipments whose order gives a promise, with at least MIN_EARLIER deliveries
before the prediction (the model has something to learn from). Per milestone and lead time (from
the prediction to the promise): PR-AUC (average precision), ROC-AUC, Brier score, precision and
recall of the flag P(late) >= --threshold, and how often the delivery fell in the p10-p90 range.
`--predictions FILE` writes one CSV row per shipment and milestone so that anyone can recompute
the scores; `--plot PNG` draws precision-recall and calibration at hand-over (docs/risk.md).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from streams.domain import risk, timeline
from streams.domain.engine import Engine
from streams.domain.policy import PolicyError, SlaPolicy
from streams.domain.stages import STAGES, iso
from streams.errors import CliError

DAY = 86400.0
MIN_EARLIER = 50
#: The milestone that opens each stage, as the backtest names predictions.
MILESTONE_OF = {"fulfilment": "order_placed", "origin": "picked_up", "linehaul": "departed_origin",
                "customs": "arrived_destination", "last_mile": "released"}
HANDOVER = "picked_up"
#: Lead time = promise - prediction time: these bounds (days) cut it into rows.
LEAD_BOUNDS = (2, 5, 10)
FORMATS = ("table", "markdown", "json")


class BacktestError(CliError):
    """A bad file, mapping or flag: one line, exit status 2."""


@dataclass
class Row:
    shipment: str
    corridor: str
    milestone: str
    at: float
    p_late: float
    p10: float | None
    p50: float | None
    p90: float | None
    baseline: float | None
    promise: float
    delivered: float | None
    earlier: int                    # deliveries before the prediction

    @property
    def late(self) -> bool:
        return self.delivered is not None and self.delivered > self.promise

    @property
    def lead_days(self) -> float:
        return (self.promise - self.at) / DAY


@dataclass
class Backtest:
    rows: list[Row] = field(default_factory=list)

    def scored(self) -> list[Row]:
        return [r for r in self.rows if r.delivered is not None and r.earlier >= MIN_EARLIER]


def replay(states, policy: SlaPolicy) -> Backtest:
    """Predictions at every milestone of the shipments (final timeline states of a log), in
    event time. Deliveries at the very moment of a prediction are not yet known to it."""
    actions = []            # (time, order: 0 = predict before 1 = learn, shipment id, payload)
    for state in states:
        corridor = timeline.corridor(state)
        promise = timeline.promise(state, policy)
        if corridor == "unknown" or promise is None:
            continue
        level = timeline.service_level(state)
        stages = timeline.stage_durations(state)
        end = state["end"]
        delivered = end[1] if end is not None and end[0] == "delivered" else None
        for stage, start, _seconds in stages:
            actions.append((start, 0, STAGES.index(stage), state["id"],
                            (corridor, level, stage, promise, delivered, stages)))
        if delivered is not None:
            actions.append((delivered, 1, 0, state["id"], (corridor, level, stages)))
    actions.sort(key=lambda a: a[:4])
    model, baseline = risk.RiskModel(), risk.Baseline()
    out = Backtest()
    earlier = 0
    for at, kind, _rank, sid, payload in actions:
        if kind == 1:
            corridor, level, stages = payload
            model.delivered(corridor, level, stages, at)
            handover = next((start for s, start, _d in stages if s == "origin"), None)
            if handover is not None:
                baseline.delivered(corridor, handover, at)
            earlier += 1
            continue
        corridor, level, stage, promise, delivered, _stages = payload
        p = model.predict(corridor, level, stage, at, at, promise)
        milestone = MILESTONE_OF[stage]
        base = baseline.predict(corridor, at, promise) if milestone == HANDOVER else None
        out.rows.append(Row(sid, corridor, milestone, at, p.p_late, p.p10, p.p50, p.p90,
                            base, promise, delivered, earlier))
    return out


def lead_bucket(days: float) -> str:
    lo = None
    for hi in LEAD_BOUNDS:
        if days <= hi:
            return f"<= {hi} d" if lo is None else f"{lo}-{hi} d"
        lo = hi
    return f"> {LEAD_BOUNDS[-1]} d"


def scores(rows: list[Row], predictor: str, threshold: float) -> dict:
    """The scores of one predictor ("model", "baseline") over `rows`."""
    pick = {"model": lambda r: r.p_late, "baseline": lambda r: r.baseline}[predictor]
    rows = [r for r in rows if pick(r) is not None]
    labels = [r.late for r in rows]
    values = [pick(r) for r in rows]
    precision, recall = risk.precision_recall(labels, values, threshold)
    out = {"predictor": predictor, "n": len(rows), "late_share": sum(labels) / len(rows) if rows else None,
           "pr_auc": risk.average_precision(labels, values), "roc_auc": risk.roc_auc(labels, values),
           "brier": risk.brier(labels, values), "precision": precision, "recall": recall}
    if predictor == "model":
        ranged = [r for r in rows if r.p10 is not None]
        inside = sum(1 for r in ranged if r.p10 <= r.delivered <= r.p90)
        out["coverage_p10_p90"] = inside / len(ranged) if ranged else None
        out["base_rate_brier"] = (risk.brier(labels, [out["late_share"]] * len(labels)) if rows else None)
    return out


def summary(bt: Backtest, threshold: float) -> list[dict]:
    """Score rows: every milestone (all lead times), then per milestone and lead time bucket; the
    baseline beside the model at hand-over."""
    scored = bt.scored()
    out = []
    for milestone in MILESTONE_OF.values():
        rows = [r for r in scored if r.milestone == milestone]
        if not rows:
            continue
        predictors = ("model", "baseline") if milestone == HANDOVER else ("model",)
        for predictor in predictors:
            out.append({"milestone": milestone, "lead": "all", **scores(rows, predictor, threshold)})
        buckets = {}
        for r in rows:
            buckets.setdefault(lead_bucket(r.lead_days), []).append(r)
        for lead in sorted(buckets, key=_lead_order):
            out.append({"milestone": milestone, "lead": lead, **scores(buckets[lead], "model", threshold)})
    return out


def _lead_order(label: str) -> float:
    digits = "".join(c if c.isdigit() or c == "-" else " " for c in label).split()
    first = digits[0].split("-")[0] if digits else "0"
    return float(first) + (0.5 if label.startswith(">") else 0)


def render(table: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(table, indent=2) + "\n"
    cols = ("milestone", "lead", "predictor", "n", "late_share", "pr_auc", "roc_auc", "brier",
            "precision", "recall", "coverage_p10_p90")

    def cell(row, col):
        v = row.get(col)
        if v is None:
            return "" if col == "coverage_p10_p90" else "-"
        if isinstance(v, float):
            return f"{v:.1%}" if col in ("late_share", "precision", "recall", "coverage_p10_p90") else f"{v:.4f}"
        return str(v)

    body = [[cell(r, c) for c in cols] for r in table]
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines) + "\n"


def write_predictions(bt: Backtest, path: str) -> None:
    fields = ("shipment_id", "corridor", "milestone", "predicted_at", "p_late", "p10", "p50", "p90",
              "p_late_baseline", "promised_delivery_at", "delivered_at", "late",
              "earlier_deliveries")
    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(fields)
            for r in bt.rows:
                out.writerow([r.shipment, r.corridor, r.milestone, iso(r.at), f"{r.p_late:.6f}",
                              iso(r.p10), iso(r.p50), iso(r.p90),
                              "" if r.baseline is None else f"{r.baseline:.6f}", iso(r.promise),
                              iso(r.delivered) or "", "" if r.delivered is None else str(r.late).lower(),
                              r.earlier])
    except OSError as exc:
        raise BacktestError(f"cannot write {path}: {exc.strerror}") from None


def plot(bt: Backtest, path: str) -> None:
    """Precision-recall of the model and the baseline at hand-over, and
    the model's calibration (predicted vs observed late share, deciles of P(late))."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in bt.scored() if r.milestone == HANDOVER]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, pick in (("model", lambda r: r.p_late), ("baseline", lambda r: r.baseline)):
        ps = sorted(((pick(r), r.late) for r in rows if pick(r) is not None), key=lambda x: -x[0])
        positives = sum(y for _, y in ps) or 1
        tp = fp = 0
        xs, ys = [], []
        for _s, y in ps:
            tp += y
            fp += not y
            xs.append(tp / positives)
            ys.append(tp / (tp + fp))
        ap = risk.average_precision([y for _, y in ps], [s for s, _ in ps])
        ax1.plot(xs, ys, label=f"{name} (PR-AUC {ap:.3f})")
    ax1.set_xlabel("recall")
    ax1.set_ylabel("precision")
    ax1.set_title("late at hand-over: precision-recall")
    ax1.legend()
    ranked = sorted(rows, key=lambda r: r.p_late)
    n = len(ranked)
    xs, ys = [], []
    for k in range(10):
        part = ranked[k * n // 10:(k + 1) * n // 10]
        if part:
            xs.append(sum(r.p_late for r in part) / len(part))
            ys.append(sum(r.late for r in part) / len(part))
    ax2.plot([0, max(xs + ys + [0.1])], [0, max(xs + ys + [0.1])], color="grey", lw=0.8)
    ax2.plot(xs, ys, marker="o", label="model, deciles of P(late)")
    ax2.set_xlabel("predicted P(late)")
    ax2.set_ylabel("observed late share")
    ax2.set_title("calibration at hand-over")
    ax2.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise BacktestError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from streams.feeds.sources import INPUT_FORMATS
    parser.add_argument("files", nargs="+", metavar="FILE", help="event log(s) or an export directory")
    parser.add_argument("--input-format", dest="input_format", choices=INPUT_FORMATS, default="auto")
    parser.add_argument("--mapping", help="mapping TOML for the adapters (csv-orders needs one)")
    parser.add_argument("--format", choices=FORMATS, default="table")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="P(late) at or above which a shipment is flagged (default 0.5)")
    parser.add_argument("--predictions", metavar="CSV", help="write every prediction, one row each")
    parser.add_argument("--plot", metavar="PNG", help="draw precision-recall and calibration at hand-over")
    parser.add_argument("--sla-policy", dest="sla_policy", help="SLA policy TOML (CORRIDOR_SLA_POLICY)")


def main(args: argparse.Namespace) -> int:
    from streams.settings import Settings
    from streams.tools.report import require_report_extra, accepted_events
    if not 0 < args.threshold <= 1:
        raise BacktestError(f"--threshold must be in (0, 1], not {args.threshold}")
    if args.plot:
        require_report_extra()
    settings = Settings.from_env(sla_policy=args.sla_policy)
    try:
        policy = SlaPolicy.load(settings.sla_policy or None, settings.import_regimes or None)
    except PolicyError as exc:
        raise BacktestError(str(exc)) from None
    events, rejected = accepted_events(args, settings, BacktestError)
    engine = Engine(policy, max_events=settings.timeline_max_events)
    for kind, event in events:
        engine.feed(kind, event)
    engine.finish()
    bt = replay(engine.shipments.values(), policy)
    table = summary(bt, args.threshold)
    sys.stdout.write(render(table, args.format))
    if args.predictions:
        write_predictions(bt, args.predictions)
    if args.plot:
        plot(bt, args.plot)
    print(f"corridor backtest: {len(bt.rows)} predictions, {len(bt.scored())} scored"
          + (f"; {sum(rejected.values())} events rejected" if sum(rejected.values()) else "")
          + (f"; predictions in {args.predictions}" if args.predictions else "")
          + (f"; plot in {args.plot}" if args.plot else ""), file=sys.stderr)
    return 0
