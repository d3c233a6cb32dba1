"""The worker's HTTP surface: /metrics, /health, /shipments/{id}, /corridors. Nothing else."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from streams.domain import aggregate, figures, timeline
from streams.domain.aggregate import TRANSIT_BUCKETS
from streams.domain.stages import iso

MAX_ID_LENGTH = 200


def register(app, pipe) -> None:
    @app.page("/metrics")
    async def metrics(web, request):
        return web.bytes(pipe.metrics_text(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    async def health(web, request):
        # Ready = in the group with an assignment (possibly none: a worker beyond the partition
        # count, or kept as a standby by the sticky assignor), tables recovered, not rebalancing.
        owned = sorted(pipe.owned_partitions()) if pipe.assigned else []
        recovered = app.tables.recovery.completed.is_set()
        ready = pipe.assigned and recovered and not app.rebalancing
        body = {"status": "ready" if ready else "starting", "partitions": owned,
                "recovering": not recovered, "rebalancing": bool(app.rebalancing)}
        return web.json(body, status=200 if ready else 503)

    @app.page("/shipments/{shipment_id}")
    @app.table_route(table=pipe.timelines, match_info="shipment_id")
    async def shipment(web, request, shipment_id):
        if not shipment_id or len(shipment_id) > MAX_ID_LENGTH:
            return web.json({"error": "invalid shipment id"}, status=400)
        state = pipe.timelines.get(shipment_id)
        if state is None:
            return web.json({"error": f"shipment {shipment_id} not found"}, status=404)
        now = pipe.stream_time(pipe.owned_partitions()) or state["last"]
        return web.json(timeline.describe(state, now, pipe.policy))

    @app.page("/corridors")
    async def corridors(web, request):
        totals, gauges, now = pipe.snapshot()
        return web.json(corridor_summary(totals, gauges, now, sorted(pipe.owned_partitions())))


def corridor_summary(totals: dict, gauges: aggregate.OpenGauges, now, partitions) -> dict:
    names = set(totals) | {c for c, _ in gauges.in_stage} | {c for c, _ in gauges.overdue}
    bottlenecks = gauges.bottlenecks()
    out = {}
    for corr in sorted(names):
        tot = totals.get(corr) or aggregate.new_totals()
        done = figures.delivered(tot)
        on_time, delivered = done["on_time"], done["on_time"] + done["late"]
        rate = figures.on_time_rate(done["on_time"], done["late"])
        transit = None
        for row in tot["transit"].values():
            transit = list(row) if transit is None else [a + b for a, b in zip(transit, row)]
        out[corr] = {
            "delivered": delivered, "on_time": on_time,
            "on_time_rate": None if rate is None else round(rate, 6),
            "exceptions": dict(sorted(tot["exceptions"].items())),
            "transit_seconds": None if transit is None else {
                "p50": aggregate.quantile(transit, TRANSIT_BUCKETS, 0.5),
                "p90": aggregate.quantile(transit, TRANSIT_BUCKETS, 0.9),
                "p95": aggregate.quantile(transit, TRANSIT_BUCKETS, 0.95),
                "mean": transit[-1] / sum(transit[:-1])},
            **figures.open_figures(gauges, corr),
            "bottleneck": bottlenecks.get(corr),
        }
    return {"now": iso(now), "partitions": partitions, "corridors": out}
