"""The per-corridor figures that both the worker's `/corridors` view (streams.worker.views) and
the batch report (streams.tools.report) show, computed once here from a corridor's totals and
the open-shipment gauges. (The view's quantiles come from the histograms, the report's from the
exact values it keeps in batch: that is the one difference, and each module says so.)"""
from __future__ import annotations

from collections import defaultdict

from streams.domain.aggregate import OpenGauges
from streams.domain.stages import STAGES


def delivered(tot: dict) -> dict:
    """Deliveries of a totals record: on time, late, and both per service level."""
    by_sl: dict = defaultdict(lambda: {"on_time": 0, "late": 0})
    for key, n in tot["delivered"].items():
        sl, flag = key.split("|")
        by_sl[sl]["on_time" if flag == "true" else "late"] += n
    on_time = sum(v["on_time"] for v in by_sl.values())
    late = sum(v["late"] for v in by_sl.values())
    return {"on_time": on_time, "late": late, "by_service_level": dict(sorted(by_sl.items()))}


def on_time_rate(on_time: int, late: int) -> float | None:
    return on_time / (on_time + late) if on_time + late else None


def open_figures(gauges: OpenGauges, corridor: str) -> dict:
    """A corridor's open shipments: how many, per stage (journey order), overdue per service
    level, seconds beyond the stage targets per stage."""
    in_stage = {s: n for (c, s), n in gauges.in_stage.items() if c == corridor}
    return {"open": sum(in_stage.values()),
            "in_stage": {s: in_stage[s] for s in STAGES if s in in_stage},
            "overdue": {sl: n for (c, sl), n in sorted(gauges.overdue.items()) if c == corridor},
            "excess_seconds": {s: v for (c, s), v in sorted(gauges.excess.items())
                               if c == corridor}}


def customs_rows(tot: dict) -> dict[str, list[tuple[tuple[str, ...], object]]]:
    """The customs figures of a totals record as (label values, value) rows, in label order:
    the one reading of `clear`, `cwt`, `cust`, `dex`, `dbd` and `sbd` that the worker's /metrics
    (streams.worker.metrics) and `corridor report` (streams.tools.report) both export.

        clearance  (destination, regime, value_class) -> histogram row (aggregate.CLEARANCE_BUCKETS)
        within     (destination, regime, value_class, days) -> parcels cleared within target
        arrivals   (destination, regime, value_class) -> parcels arrived at destination
        events     (destination, regime, value_class, type) -> holds, inspections, ...
        dex        (service_level, on_time) -> deliveries on time with customs time removed
        dbd        (service_level, on_time) -> deliveries on time against a business-day promise
        sbd        (stage, within) -> stages ended within their target in business days
    """
    out: dict[str, list] = {"clearance": [], "within": [], "arrivals": [], "events": [], "dex": [],
                            "dbd": [], "sbd": []}
    for key, row in sorted(tot.get("clear", {}).items()):
        out["clearance"].append((tuple(key.split("|")), row))
    for key, n in sorted(tot.get("cwt", {}).items()):
        out["within"].append((tuple(key.split("|")), n))
    for key, n in sorted(tot.get("cust", {}).items()):
        dest, regime, vclass, typ = key.split("|")
        if typ == "arrival":
            out["arrivals"].append(((dest, regime, vclass), n))
        else:
            out["events"].append(((dest, regime, vclass, typ), n))
    for section in ("dex", "dbd", "sbd"):
        for key, n in sorted(tot.get(section, {}).items()):
            out[section].append((tuple(key.split("|")), n))
    return out


def customs_summary(tot: dict) -> dict:
    """A corridor's customs figures for the views and the report: arrivals, cleared, within
    target (calendar and, where configured, business days), the share within target, events
    per 1,000 arrivals, and deliveries on time without customs time."""
    rows = customs_rows(tot)
    arrivals = sum(n for _k, n in rows["arrivals"])
    cleared = sum(sum(row[:-1]) for _k, row in rows["clearance"])
    within = defaultdict(int)
    for (_d, _r, _v, days), n in rows["within"]:
        within[days] += n
    events = defaultdict(int)
    for (_d, _r, _v, typ), n in rows["events"]:
        events[typ] += n
    dex, dbd = defaultdict(int), defaultdict(int)
    for (_sl, on_time), n in rows["dex"]:
        dex[on_time] += n
    for (_sl, on_time), n in rows["dbd"]:
        dbd[on_time] += n
    return {"arrivals": arrivals, "cleared": cleared,
            "cleared_within_target": within.get("calendar", 0),
            "cleared_within_target_share": within["calendar"] / cleared if cleared else None,
            "cleared_within_business_days": within.get("business"),
            "per_1000_arrivals": {t: 1000.0 * n / arrivals for t, n in sorted(events.items())}
            if arrivals else {},
            "on_time_excluding_customs": dex.get("true", 0),
            "late_excluding_customs": dex.get("false", 0),
            # only where the policy gives a destination a promise in business days
            "on_time_business_days": dbd.get("true", 0) if dbd else None,
            "late_business_days": dbd.get("false", 0) if dbd else None}


def stage_business_days(tot: dict) -> dict[str, dict[str, int]]:
    """stage -> {"within": n, "over": n}: the stages of delivered shipments against their target
    in business days (`sbd`), only for the stages the policy gives one (none: {})."""
    out: dict[str, dict[str, int]] = {}
    for (stage, within), n in customs_rows(tot)["sbd"]:
        counts = out.setdefault(stage, {"within": 0, "over": 0})
        counts["within" if within == "true" else "over"] += n
    return {s: out[s] for s in STAGES if s in out}
