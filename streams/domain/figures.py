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
