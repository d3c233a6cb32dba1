"""`corridor report`: the corridor SLA figures of an event log, in batch.

The log is read like `corridor replay` reads it (streams/feeds/sources.py), every event goes
through the worker's Decoder, and the accepted ones are fed to `domain.engine.Engine`: the same
join and the same definitions of stage, on time, transit and bottleneck as the stream
(docs/semantics.md). So the counters and histograms here are the ones a worker exports after
consuming the same log; the JSON output lists them as `metrics` samples, named as on /metrics
(summed over the worker's `partition` label).

Beyond what the worker exports, the report gives exact percentiles: transit p50/p90/p95 per
corridor and dwell percentiles per stage, from the per-shipment values (the worker only has
histogram buckets). "Now" for overdue, open shipments and the bottleneck is the latest event time
in the log, as the stream clock would be at the end of a replay (override with --now).

Tables are pandas DataFrames (`corridor_table`, `stage_table`); `--plot` draws the on-time rate and
the stage-dwell breakdown per corridor with matplotlib (no display needed).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from streams.errors import CliError
from streams.domain import aggregate, customs, figures, risk, timeline
from streams.domain.aggregate import OpenGauges
from streams.domain.engine import Engine
from streams.domain.policy import PolicyError, SlaPolicy
from streams.domain.stages import STAGES, iso

OUTPUT_FORMATS = ("table", "csv", "json", "html", "markdown")
QUANTILES = (0.5, 0.9, 0.95)
DAY, HOUR = 86400.0, 3600.0
DEFAULT_TOP_HUMAN = 25      # corridors shown by table / markdown / html unless --top says otherwise
DEFAULT_TOP_PLOT = 15

NOTES = (
    "transit = delivered - order_placed of the primary order; on time = delivered at or before the "
    "promise (docs/semantics.md).",
    "p50/p90/p95 are exact quantiles of the per-shipment values (linear interpolation between the "
    "two nearest shipments); Prometheus' histogram_quantile() on the worker's buckets is an estimate.",
    "A shipment is counted once it has ended and its order is known; the rest are 'open'. Open, "
    "overdue and bottleneck are as of 'now'.",
    "customs: clearance = arrived_destination -> import release, labelled with the import regime and "
    "value class at arrival; within target = the SLA policy's [customs] days; on time excl. customs "
    "= delivered - customs time at or before the promise (docs/semantics.md \"Customs\").",
    "within_target_bd / over_target_bd (stages): delivered shipments' stages that ended by the "
    "n-th business day of the destination after they started, where the SLA policy gives "
    "stage_target_business_days (docs/semantics.md \"Business days and local dates\").",
)


class ReportError(CliError):
    """A bad file, mapping or flag; `corridor report` prints it on one line and exits with 2."""


@dataclass
class Report:
    """The figures of one log. `engine` holds the totals (exactly the worker's) and the states."""
    engine: Engine
    now: float | None
    gauges: OpenGauges
    transit: dict[str, list[float]] = field(default_factory=dict)
    dwell: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: (corridor, destination, regime, value class) -> clearance seconds of each cleared parcel
    clearance: dict[tuple[str, str, str, str], list[float]] = field(default_factory=dict)
    events: int = 0
    by_kind: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=lambda: list(NOTES))
    at_risk: risk.AtRisk = field(default_factory=risk.AtRisk)   # the open shipments' risk at `now`

    @property
    def corridors(self) -> list[str]:
        names = set(self.engine.totals) | {c for c, _ in self.gauges.in_stage}
        return sorted(names)


def compute(events, policy: SlaPolicy, *, max_events: int = 100, now: float | None = None) -> Report:
    """Feed (kind, decoded contract event) pairs to an Engine and collect the per-shipment values."""
    engine = Engine(policy, max_events=max_events)
    by_kind: Counter = Counter()
    for kind, event in events:
        engine.feed(kind, event)
        by_kind[kind] += 1
    engine.finish()         # the file is the whole input: every figure is final (the worker's idle rule)
    now = engine.latest if now is None else now
    report = Report(engine, now, engine.gauges(now) if now is not None else OpenGauges(),
                    events=sum(by_kind.values()), by_kind=by_kind)
    if now is not None:
        report.at_risk = engine.at_risk(now, policy.at_risk)
    transit, dwell, clearance = defaultdict(list), defaultdict(list), defaultdict(list)
    for state in engine.shipments.values():
        # The values the observation was made of: once observed, a shipment's milestones and end
        # no longer change (timeline.apply); only a later order fact could, which
        # _check_consistency reports.
        if not state["observed"] or state["end"] is None or state["end"][0] == "cancelled":
            continue
        corr = timeline.corridor(state)
        for stage, _start, seconds in timeline.stage_durations(state):
            dwell[(corr, stage)].append(seconds)
        if state["end"][0] == "delivered":
            transit[corr].append(state["end"][1] - timeline.primary_order(state)["placed"])
        for obs in customs.observe(state, policy, corr, state["end"][1], engine.grace):
            if obs[5] is not None:
                clearance[(corr, *obs[2:5])].append(obs[5])
    report.transit, report.dwell, report.clearance = dict(transit), dict(dwell), dict(clearance)
    _check_consistency(report)
    return report


def _check_consistency(report: Report) -> None:
    """The per-shipment values must be the observations the totals were made of."""
    off = []
    for corr, tot in report.engine.totals.items():
        counted = sum(sum(row[:-1]) for row in tot["transit"].values())
        if counted != len(report.transit.get(corr, ())):
            off.append(corr)
    if off:
        report.notes.append(f"per-shipment transit values differ from the observed totals in "
                            f"{len(off)} corridor(s) ({', '.join(sorted(off)[:5])}): an order's facts "
                            "changed after its shipment was observed; percentiles use the current facts.")


# ---- tables -----------------------------------------------------------------------------------------
def _quantiles(values) -> dict[str, float | None]:
    import pandas as pd
    if not values:
        return {f"p{int(q * 100)}": None for q in QUANTILES}
    qs = pd.Series(values, dtype="float64").quantile(list(QUANTILES))
    return {f"p{int(q * 100)}": float(qs[q]) for q in QUANTILES}


def corridor_figures(report: Report) -> dict[str, dict]:
    """corridor -> its figures (JSON-able, seconds)."""
    g = report.gauges
    bottlenecks = g.bottlenecks()
    out = {}
    for corr in report.corridors:
        tot = report.engine.totals.get(corr) or aggregate.new_totals()
        done = figures.delivered(tot)
        on_time, late = done["on_time"], done["late"]
        t_count = sum(sum(row[:-1]) for row in tot["transit"].values())
        t_sum = sum(row[-1] for row in tot["transit"].values())
        values = report.transit.get(corr, [])
        business = figures.stage_business_days(tot)
        stages = {}
        for stage in STAGES:
            row = tot["dwell"].get(stage)
            if row is None:
                continue
            count, total = sum(row[:-1]), row[-1]
            stages[stage] = {"count": count, "sum": total, **_quantiles(report.dwell.get((corr, stage), [])),
                             "mean": total / count if count else None}
            if stage in business:   # only where the policy gives a target in business days
                stages[stage]["business_days"] = business[stage]    # {"within": n, "over": n}
        live = figures.open_figures(g, corr)
        cust = figures.customs_summary(tot)
        cleared = [v for (c, *_k), vals in report.clearance.items() if c == corr for v in vals]
        dex_rate = figures.on_time_rate(cust["on_time_excluding_customs"], cust["late_excluding_customs"])
        out[corr] = {
            "delivered": on_time + late, "on_time": on_time, "late": late,
            "on_time_rate": figures.on_time_rate(on_time, late),
            "delivered_by_service_level": done["by_service_level"],
            "transit_seconds": {"count": t_count, "sum": t_sum, **_quantiles(values),
                                "mean": t_sum / t_count if t_count else None},
            "stages": stages,
            "exceptions": dict(sorted(tot["exceptions"].items())),
            # lateness of late deliveries attributed to stages, seconds (docs/risk.md)
            "late_attributed": dict(sorted(tot.get("late", {}).items())),
            "open": live["open"],
            "in_stage": live["in_stage"],
            "overdue": sum(live["overdue"].values()),
            "overdue_by_service_level": live["overdue"],
            "excess_seconds": {s: v for s, v in live["excess_seconds"].items() if v},
            "bottleneck": bottlenecks.get(corr),
            # customs (docs/semantics.md "Customs"): clearance = arrived -> import release
            "customs": {**cust, "clearance_seconds": _quantiles(cleared),
                        "on_time_rate_excluding_customs": dex_rate,
                        "waiting": sum(n for k, n in g.customs_waiting.items() if k[0] == corr),
                        "by_regime": customs_by_regime(report, corr, tot)},
        }
    return out


def customs_by_regime(report: Report, corr: str, tot: dict) -> dict[str, dict]:
    """"<destination>|<regime>|<value class>" -> the customs figures of the corridor's parcels
    labelled so at arrival, with exact clearance percentiles."""
    rows = figures.customs_rows(tot)
    keys = sorted({k[:3] for k, _n in rows["arrivals"]} | {k[1:4] for k in report.gauges.customs_waiting
                                                             if k[0] == corr})
    out = {}
    for key in keys:
        arrivals = sum(n for k, n in rows["arrivals"] if k == key)
        cleared = sum(sum(row[:-1]) for k, row in rows["clearance"] if k == key)
        within = {k[3]: n for k, n in rows["within"] if k[:3] == key}
        events = {k[3]: n for k, n in rows["events"] if k[:3] == key}
        out["|".join(key)] = {
            "arrivals": arrivals, "cleared": cleared,
            "cleared_within_target": within.get("calendar", 0),
            "cleared_within_target_share": within.get("calendar", 0) / cleared if cleared else None,
            "cleared_within_business_days": within.get("business"),
            "clearance_seconds": _quantiles(report.clearance.get((corr, *key), [])),
            "events": dict(sorted(events.items())),
            "per_1000_arrivals": {t: 1000.0 * n / arrivals for t, n in sorted(events.items())}
            if arrivals else {},
            "waiting": {age: n for (c, *k, age), n in sorted(report.gauges.customs_waiting.items())
                        if c == corr and tuple(k) == key}}
    return out


def corridor_table(report: Report, figures: dict | None = None):
    """One row per corridor, most delivered first (seconds; on_time_rate in 0..1)."""
    import pandas as pd
    figures = figures if figures is not None else corridor_figures(report)
    rows = []
    for corr, f in figures.items():
        t = f["transit_seconds"]
        rows.append({"corridor": corr, "delivered": f["delivered"], "on_time": f["on_time"],
                     "late": f["late"], "on_time_rate": f["on_time_rate"],
                     "transit_p50_s": t["p50"], "transit_p90_s": t["p90"], "transit_p95_s": t["p95"],
                     "transit_mean_s": t["mean"], "exceptions": sum(f["exceptions"].values()),
                     "open": f["open"], "overdue": f["overdue"], "bottleneck": f["bottleneck"],
                     **customs_columns(f["customs"])})
    cols = ["corridor", "delivered", "on_time", "late", "on_time_rate", "transit_p50_s", "transit_p90_s",
            "transit_p95_s", "transit_mean_s", "exceptions", "open", "overdue", "bottleneck",
            *CUSTOMS_COLUMNS]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["delivered", "corridor"], ascending=[False, True], kind="stable") \
             .reset_index(drop=True)


#: The customs columns of the corridor table (and, per regime, of the customs table).
CUSTOMS_COLUMNS = ("on_time_rate_excl_customs", "arrivals", "cleared", "cleared_within_target_rate",
                   "clearance_p50_s", "clearance_p90_s", "holds_per_1000", "inspections_per_1000",
                   "rejections_per_1000", "seizures_per_1000", "waiting_in_customs")


def customs_columns(c: dict) -> dict:
    per = c["per_1000_arrivals"]
    return {"on_time_rate_excl_customs": c.get("on_time_rate_excluding_customs"),
            "arrivals": c["arrivals"], "cleared": c["cleared"],
            "cleared_within_target_rate": c["cleared_within_target_share"],
            "clearance_p50_s": c["clearance_seconds"]["p50"],
            "clearance_p90_s": c["clearance_seconds"]["p90"],
            "holds_per_1000": per.get("hold"), "inspections_per_1000": per.get("inspection"),
            "rejections_per_1000": per.get("rejection"), "seizures_per_1000": per.get("seizure"),
            "waiting_in_customs": c["waiting"] if isinstance(c["waiting"], int) else sum(c["waiting"].values())}


def customs_table(report: Report, figures: dict | None = None):
    """One row per corridor, destination, import regime and value class at arrival: the
    clearance figures (seconds; rates in 0..1; events per 1,000 arrivals), parcels waiting now."""
    import pandas as pd
    figures = figures if figures is not None else corridor_figures(report)
    rows = []
    for corr, f in figures.items():
        for key, c in f["customs"]["by_regime"].items():
            dest, regime, vclass = key.split("|")
            cols = customs_columns(c)
            del cols["on_time_rate_excl_customs"]
            rows.append({"corridor": corr, "destination": dest, "regime": regime,
                         "value_class": vclass, **cols})
    cols = ["corridor", "destination", "regime", "value_class",
            *[c for c in CUSTOMS_COLUMNS if c != "on_time_rate_excl_customs"]]
    return pd.DataFrame(rows, columns=cols)


#: The stage table's business-day columns: delivered shipments' stages within and over the
#: destination's target in business days (empty where the policy gives none).
STAGE_BUSINESS_COLUMNS = ("within_target_bd", "over_target_bd")


def stage_table(report: Report, figures: dict | None = None):
    """One row per corridor and stage reached: dwell percentiles (seconds), open shipments there now."""
    import pandas as pd
    figures = figures if figures is not None else corridor_figures(report)
    rows = []
    for corr, f in figures.items():
        for stage in STAGES:
            s = f["stages"].get(stage)
            now_in = f["in_stage"].get(stage, 0)
            if s is None and not now_in:
                continue
            s = s or {"count": 0, "p50": None, "p90": None, "p95": None, "mean": None}
            business = s.get("business_days") or {}
            rows.append({"corridor": corr, "stage": stage, "shipments": s["count"],
                         "dwell_p50_s": s["p50"], "dwell_p90_s": s["p90"], "dwell_p95_s": s["p95"],
                         "dwell_mean_s": s["mean"], "open_now": now_in,
                         "excess_now_s": f["excess_seconds"].get(stage, 0.0),
                         "late_attributed_s": f["late_attributed"].get(stage, 0.0),
                         "bottleneck": f["bottleneck"] == stage,
                         "within_target_bd": business.get("within"),
                         "over_target_bd": business.get("over")})
    cols = ["corridor", "stage", "shipments", "dwell_p50_s", "dwell_p90_s", "dwell_p95_s", "dwell_mean_s",
            "open_now", "excess_now_s", "late_attributed_s", "bottleneck", *STAGE_BUSINESS_COLUMNS]
    # whole counts, blank (not NaN, not 1.0) where the policy gives the stage no such target
    return pd.DataFrame(rows, columns=cols).astype({c: "Int64" for c in STAGE_BUSINESS_COLUMNS})


def metric_samples(report: Report) -> list[dict]:
    """The corridor series a worker's /metrics has after the same log, summed over its `partition`
    label (what `sum by (corridor, ...)` gives): same names, labels, buckets and values."""
    out: list[dict] = []

    def add(name: str, labels: dict, value) -> None:
        out.append({"name": name, "labels": labels, "value": value})

    def histogram(name: str, labels: dict, row: list, buckets: tuple) -> None:
        cumulative, count, total = aggregate.cumulative(row, buckets)
        for bound, n in cumulative:
            add(f"{name}_bucket", {**labels, "le": "+Inf" if bound == float("inf") else repr(float(bound))}, n)
        add(f"{name}_count", labels, count)
        add(f"{name}_sum", labels, total)

    totals = report.engine.totals
    for corr in sorted(totals):
        tot = totals[corr]
        for key, n in sorted(tot["delivered"].items()):
            sl, on_time = key.split("|")
            add("corridor_shipments_delivered_total",
                {"corridor": corr, "service_level": sl, "on_time": on_time}, n)
        for exc, n in sorted(tot["exceptions"].items()):
            add("corridor_shipment_exceptions_total", {"corridor": corr, "type": exc}, n)
        for sl, row in sorted(tot["transit"].items()):
            histogram("corridor_shipment_transit_seconds", {"corridor": corr, "service_level": sl}, row,
                      aggregate.TRANSIT_BUCKETS)
        for stage, row in sorted(tot["dwell"].items()):
            histogram("corridor_stage_dwell_seconds", {"corridor": corr, "stage": stage}, row,
                      aggregate.DWELL_BUCKETS)
        for stage, seconds in sorted(tot.get("late", {}).items()):
            add("corridor_late_attributed_seconds_total", {"corridor": corr, "stage": stage}, seconds)
        rows = figures.customs_rows(tot)
        names = ("destination", "regime", "value_class")
        for key, row in rows["clearance"]:
            histogram("corridor_customs_clearance_seconds", {"corridor": corr, **dict(zip(names, key))},
                      row, aggregate.CLEARANCE_BUCKETS)
        for name, section, labels in (
                ("corridor_customs_cleared_within_target_total", "within", names + ("days",)),
                ("corridor_customs_arrivals_total", "arrivals", names),
                ("corridor_customs_events_total", "events", names + ("type",)),
                ("corridor_shipments_delivered_excluding_customs_total", "dex",
                 ("service_level", "on_time")),
                ("corridor_shipments_delivered_business_days_total", "dbd",
                 ("service_level", "on_time")),
                ("corridor_stage_within_target_business_days_total", "sbd", ("stage", "within"))):
            for key, n in rows[section]:
                add(name, {"corridor": corr, **dict(zip(labels, key))}, n)
    g = report.gauges
    for (corr, stage), n in sorted(g.in_stage.items()):
        add("corridor_shipments_in_stage", {"corridor": corr, "stage": stage}, n)
    for (corr, sl), n in sorted(g.overdue.items()):
        add("corridor_shipments_overdue", {"corridor": corr, "service_level": sl}, n)
    for (corr, stage), secs in sorted(g.excess.items()):
        add("corridor_stage_excess_seconds", {"corridor": corr, "stage": stage}, secs)
    for corr, stage in sorted(g.bottlenecks().items()):
        add("corridor_bottleneck_stage", {"corridor": corr, "stage": stage}, 1)
    for (corr, dest, regime, vclass, age), n in sorted(g.customs_waiting.items()):
        add("corridor_customs_waiting", {"corridor": corr, "destination": dest, "regime": regime,
                                         "value_class": vclass, "age": age}, n)
    for r in sorted(report.engine.policy.regimes.regimes, key=lambda r: r.name):
        add("corridor_import_regime_start_seconds", {"regime": r.name}, r.starts_at)
    if report.now is not None:
        add("corridor_stream_time_seconds", {}, report.now)
        r = report.at_risk
        for (corr, sl, stage), n in sorted(r.at_risk.items()):
            add("corridor_shipments_at_risk", {"corridor": corr, "service_level": sl, "stage": stage}, n)
        for corr, units in sorted(r.expected_late.items()):
            add("corridor_shipments_predicted_late", {"corridor": corr}, units / risk.UNIT)
        for corr, n in sorted(r.scored.items()):
            add("corridor_shipments_scored", {"corridor": corr}, n)
        add("corridor_risk_scored_time_seconds", {}, report.now)
    return out


def to_json(report: Report, figures: dict | None = None) -> dict:
    figures = figures if figures is not None else corridor_figures(report)
    return {
        "now": iso(report.now), "now_epoch": report.now,
        "input": {"events": report.events, "by_kind": dict(sorted(report.by_kind.items())),
                  "rejected": dict(sorted(report.rejected.items())),
                  "duplicates": report.engine.duplicates, "late": report.engine.late},
        "notes": report.notes,
        "corridors": figures,
        "metrics": metric_samples(report),
    }


# ---- rendering --------------------------------------------------------------------------------------
def _human(df, *, stage: bool = False, table: str | None = None):
    """Seconds -> days (transit) or hours (dwell, clearance), rates -> %, for people."""
    import pandas as pd
    table = table or ("stages" if stage else "corridors")
    out = df.copy()
    if table == "customs":
        out["within_target_%"] = (out.pop("cleared_within_target_rate") * 100).round(1)
        for c in ("clearance_p50_s", "clearance_p90_s"):
            out[c.replace("_s", "_h")] = (out.pop(c) / HOUR).round(1)
        for c in ("holds_per_1000", "inspections_per_1000", "rejections_per_1000", "seizures_per_1000"):
            out[c] = out[c].round(1)
        return out[["corridor", "destination", "regime", "value_class", "arrivals", "cleared",
                    "within_target_%", "clearance_p50_h", "clearance_p90_h", "holds_per_1000",
                    "inspections_per_1000", "rejections_per_1000", "seizures_per_1000",
                    "waiting_in_customs"]]
    if table == "stages":
        for c in ("dwell_p50_s", "dwell_p90_s", "dwell_p95_s", "dwell_mean_s", "excess_now_s",
                  "late_attributed_s"):
            out[c.replace("_s", "_h")] = (out.pop(c) / HOUR).round(1)
        out["bottleneck"] = out["bottleneck"].map({True: "<-", False: ""})
        # only where the policy gives some stage a target in business days (csv keeps them blank)
        business = [c for c in STAGE_BUSINESS_COLUMNS if out[c].notna().any()]
        for c in business:      # pandas prints a missing Int64 as <NA>, whatever na_rep
            out[c] = out[c].map(lambda v: "-" if v is pd.NA else str(v))
        return out[["corridor", "stage", "shipments", "dwell_p50_h", "dwell_p90_h", "dwell_p95_h",
                    "dwell_mean_h", "open_now", "excess_now_h", "late_attributed_h", "bottleneck",
                    *business]]
    out["on_time_%"] = (out.pop("on_time_rate") * 100).round(1)
    out["on_time_excl_customs_%"] = (out.pop("on_time_rate_excl_customs") * 100).round(1)
    out["cleared_in_target_%"] = (out.pop("cleared_within_target_rate") * 100).round(1)
    for c in ("transit_p50_s", "transit_p90_s", "transit_p95_s", "transit_mean_s"):
        out[c.replace("_s", "_d")] = (out.pop(c) / DAY).round(2)
    out["bottleneck"] = out["bottleneck"].fillna("")
    return out[["corridor", "delivered", "on_time", "late", "on_time_%", "on_time_excl_customs_%",
                "transit_p50_d", "transit_p90_d", "transit_p95_d", "transit_mean_d", "exceptions",
                "open", "overdue", "bottleneck", "cleared_in_target_%"]]


def _markdown(df) -> str:
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        return str(v).replace("|", "\\|")
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "|".join("---:" if df[c].dtype.kind in "fiu" else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def render(report: Report, fmt: str, *, top: int | None = None, table: str | None = None) -> str:
    """The report as text in one of OUTPUT_FORMATS. `top` keeps the corridors with the most deliveries
    (None: all for csv/json, DEFAULT_TOP_HUMAN for the others); `table` picks corridors or stages."""
    if fmt not in OUTPUT_FORMATS:
        raise ReportError(f"unknown output format {fmt!r} (expected one of {', '.join(OUTPUT_FORMATS)})")
    figures = corridor_figures(report)
    if fmt == "json":
        if top:
            keep = set(corridor_table(report, figures)["corridor"].head(top))
            figures = {c: f for c, f in figures.items() if c in keep}
        return json.dumps(to_json(report, figures), indent=1, allow_nan=False) + "\n"
    corr = corridor_table(report, figures)
    stages = stage_table(report, figures)
    cust = customs_table(report, figures)
    human = fmt != "csv"
    if top is None and human:
        top = DEFAULT_TOP_HUMAN
    more = 0
    if top:
        more = max(0, len(corr) - top)
        corr = corr.head(top)
        stages = stages[stages["corridor"].isin(set(corr["corridor"]))]
        stages = stages.assign(_o=stages["corridor"].map({c: i for i, c in enumerate(corr["corridor"])})) \
                       .sort_values(["_o"], kind="stable").drop(columns="_o")
        cust = cust[cust["corridor"].isin(set(corr["corridor"]))]
    wanted = [table] if table else (["corridors"] if fmt == "csv" else
                                    ["corridors", "stages"] + (["customs"] if len(cust) else []))
    frames = {"corridors": corr, "stages": stages, "customs": cust}
    if fmt == "csv":
        if len(wanted) != 1:
            raise ReportError("--format csv writes one table: pick it with --table corridors|stages|customs")
        return frames[wanted[0]].to_csv(index=False)
    rej = sum(report.rejected.values())
    title = (f"corridor report: {report.events} events"
             + (f" ({rej} rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(report.rejected.items()))
                + ")" if rej else "")
             + f"; now = {iso(report.now) or '-'} (latest event time)")
    footer = [f"... and {more} more corridors (--top 0 shows all)"] if more else []
    parts = []
    for name in wanted:
        df = _human(frames[name], table=name)
        heading = {"corridors": "Corridors", "stages": "Stage dwell",
                   "customs": "Customs by import regime"}[name]
        if fmt == "table":
            parts.append(f"{heading}\n" + (df.to_string(index=False, na_rep="-") if len(df) else "(none)"))
        elif fmt == "markdown":
            parts.append(f"### {heading}\n\n{_markdown(df)}")
        else:
            parts.append(f"<h3>{heading}</h3>\n{df.to_html(index=False, na_rep='', border=0)}")
    notes = report.notes + footer
    if fmt == "table":
        return "\n\n".join([title, *parts, "\n".join(f"note: {n}" for n in notes)]) + "\n"
    if fmt == "markdown":
        return "\n\n".join([f"**{title}**", *parts, "\n".join(f"- {n}" for n in notes)]) + "\n"
    import html
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>corridor report</title></head>"
            f"<body>\n<p><b>{html.escape(title)}</b></p>\n" + "\n".join(parts)
            + "\n<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>\n</body></html>\n")


def plot(report: Report, path: str | Path, *, top: int = DEFAULT_TOP_PLOT) -> None:
    """A PNG: on-time rate per corridor (left) and its mean dwell per stage, stacked (right)."""
    from matplotlib.figure import Figure    # the object API: no pyplot, no display, no global backend
    figures = corridor_figures(report)
    corr = corridor_table(report, figures)
    corr = corr[corr["delivered"] > 0].head(top or None).iloc[::-1]     # biggest at the top
    names = list(corr["corridor"])
    fig = Figure(figsize=(13, 1.6 + 0.38 * max(len(names), 1)), layout="constrained")
    ax_rate, ax_dwell = fig.subplots(1, 2, sharey=True, width_ratios=(1, 1.6))
    if not names:
        ax_rate.text(0.5, 0.5, "no delivered shipments", ha="center", va="center")
    else:
        rates = (corr["on_time_rate"] * 100).tolist()
        ax_rate.barh(names, rates, color="#4c72b0")
        for y, (rate, n) in enumerate(zip(rates, corr["delivered"])):
            ax_rate.text(min(rate, 100) + 1, y, f"{rate:.0f}% of {n}", va="center", fontsize=8)
        ax_rate.set_xlim(0, 118)
        ax_rate.set_xlabel("delivered on time (%)")
        colors = ("#8172b2", "#64b5cd", "#4c72b0", "#c44e52", "#55a868")
        left = [0.0] * len(names)
        for stage, color in zip(STAGES, colors):
            widths = []
            for c in names:
                s = figures[c]["stages"].get(stage)
                widths.append((s["mean"] or 0.0) / DAY if s else 0.0)
            if any(widths):
                ax_dwell.barh(names, widths, left=left, color=color, label=stage)
                left = [a + b for a, b in zip(left, widths)]
        ax_dwell.set_xlabel("mean days in each stage (shipments that ended)")
        ax_dwell.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Corridor SLA: the {len(names)} corridors with most deliveries "
                 f"(to {iso(report.now) or '-'})")
    try:
        fig.savefig(path, format="png", dpi=110)
    except OSError as exc:
        raise ReportError(f"cannot write the plot to {path}: {exc.strerror}") from None


# ---- CLI glue ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `corridor report`."""
    from streams.feeds.sources import INPUT_FORMATS
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="event log(s): .jsonl, .csv, .parquet; or feed documents / an export "
                             "directory with --input-format")
    parser.add_argument("--input-format", dest="input_format", choices=INPUT_FORMATS, default="auto",
                        help="how to read FILE (default: from the extension); dcsa, epcis and "
                             "csv-orders go through the adapters (docs/feeds.md)")
    parser.add_argument("--mapping", help="mapping TOML for the adapters (csv-orders needs one, e.g. "
                                          "streams/feeds/mappings/olist.toml)")
    parser.add_argument("--format", dest="format", choices=OUTPUT_FORMATS, default="table",
                        help="output format (default table)")
    parser.add_argument("--table", choices=("corridors", "stages", "customs"),
                        help="only this table (csv writes the corridor table unless told)")
    parser.add_argument("--top", type=int, default=None,
                        help=f"only the N corridors with most deliveries (default: all for csv/json, "
                             f"{DEFAULT_TOP_HUMAN} for table/markdown/html, {DEFAULT_TOP_PLOT} in the "
                             "plot; 0 = all)")
    parser.add_argument("-o", "--output", help="write the report to this file instead of stdout")
    parser.add_argument("--plot", metavar="PNG", help="also draw on-time rate and stage dwell per corridor")
    parser.add_argument("--now", help="'now' for open/overdue/bottleneck, ISO-8601 with offset "
                                      "(default: the latest event time in the log)")
    parser.add_argument("--sla-policy", dest="sla_policy", help="SLA policy TOML (CORRIDOR_SLA_POLICY)")
    parser.add_argument("--import-regimes", dest="import_regimes",
                        help="import regimes TOML added to the shipped table (CORRIDOR_IMPORT_REGIMES)")


def require_report_extra() -> None:
    """pandas, pyarrow and matplotlib are the `report` extra, not in the worker image: say so."""
    import importlib.util
    missing = [m for m in ("pandas", "pyarrow", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
        raise ReportError(f"needs {', '.join(missing)}: install the report extra "
                          "(pip install 'corridor[report]')")


def accepted_events(args: argparse.Namespace, settings, error=None):
    """(the log's events that pass the worker's contract check, as (kind, decoded event), lazily;
    a Counter of rejected events by reason, filled as they are read). The log is args.files read
    as args.input_format with args.mapping; a bad file raises `error` (one line)."""
    from streams.feeds.sources import Checker, SourceError, load
    from streams.contract.codec import Rejected
    error = error or ReportError
    try:
        loaded = load(args.files, args.input_format, args.mapping, topics=_topic_kinds(settings))
    except SourceError as exc:
        raise error(str(exc)) from None
    rejected = Counter(r["reason"] for r in loaded.rejects)
    check = Checker(settings.max_message_bytes, settings.region_code_set | loaded.region_codes)

    def accepted():
        for kind, event in loaded.events:
            try:
                _key, _value, decoded = check(kind, event)
            except Rejected as err:
                rejected[err.reason] += 1
                continue
            yield kind, decoded

    return accepted(), rejected


def main(args: argparse.Namespace) -> int:
    """`corridor report`. Raises ReportError (a CliError: one line, exit status 2) on bad input."""
    from streams.settings import Settings

    require_report_extra()
    settings = Settings.from_env(sla_policy=getattr(args, "sla_policy", None),
                                 import_regimes=getattr(args, "import_regimes", None))
    try:
        policy = SlaPolicy.load(settings.sla_policy or None, settings.import_regimes or None)
    except PolicyError as exc:
        raise ReportError(str(exc)) from None
    now = None
    if getattr(args, "now", None):
        try:
            given = datetime.fromisoformat(args.now)
            if given.tzinfo is None:
                raise ValueError
            now = given.timestamp()
        except ValueError:
            raise ReportError(f"--now {args.now!r} is not an ISO-8601 time with a UTC offset") from None
    if args.top is not None and args.top < 0:
        raise ReportError("--top must be >= 0")
    accepted, rejected = accepted_events(args, settings, ReportError)
    report = compute(accepted, policy, max_events=settings.timeline_max_events, now=now)
    report.rejected = rejected
    text = render(report, args.format, top=args.top, table=args.table)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ReportError(f"cannot write {args.output}: {exc.strerror}") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if args.plot:
        plot(report, args.plot, top=DEFAULT_TOP_PLOT if args.top is None else args.top)
    rej = sum(rejected.values())
    print(f"corridor report: {report.events} events, {len(report.corridors)} corridors"
          + (f", {rej} rejected (" + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) + ")"
             if rej else "")
          + (f"; wrote {args.output}" if args.output else "")
          + (f"; plot in {args.plot}" if args.plot else ""), file=sys.stderr)
    return 0


def _topic_kinds(settings) -> dict[str, str]:
    return {name: kind for kind, name in settings.input_topics.items()}

