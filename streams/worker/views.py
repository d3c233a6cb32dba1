"""The worker's HTTP surface: /metrics, /health, /shipments/{id}, /corridors. Nothing else."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from streams.domain import aggregate, figures, timeline
from streams.domain.aggregate import TRANSIT_BUCKETS
from streams.domain.stages import iso
from streams.worker.metrics import ReadinessCollector, worker_ready

MAX_ID_LENGTH = 200


def register(app, pipe) -> None:
    @app.page("/metrics")
    async def metrics(web, request):
        names = request.query.getall("name[]", [])     # e.g. ?name[]=corridor_events_consumed_total
        return web.bytes(pipe.metrics_text(names), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    # corridor_worker_ready is what /health answers, computed at scrape time by the same function.
    pipe.registry.register(ReadinessCollector(lambda: readiness(app, pipe)["ready"]))

    @app.page("/health")
    async def health(web, request):
        state = readiness(app, pipe)
        owned = sorted(pipe.owned_partitions()) if pipe.assigned else []
        body = {"status": "ready" if state["ready"] else "starting", "partitions": owned,
                "recovering": state["recovering"], "rebalancing": state["rebalancing"]}
        return web.json(body, status=200 if state["ready"] else 503)

    @app.page("/shipments/{shipment_id}")
    @app.table_route(table=pipe.timelines, match_info="shipment_id")
    async def shipment(web, request, shipment_id):
        if not shipment_id or len(shipment_id) > MAX_ID_LENGTH:
            return web.json({"error": "invalid shipment id"}, status=400)
        state = pipe.timelines.get(shipment_id)
        if state is None:
            return web.json({"error": f"shipment {shipment_id} not found"}, status=404)
        now = pipe.stream_time(pipe.owned_partitions()) or state["last"]
        view = timeline.describe(state, now, pipe.policy)
        view["prediction"] = pipe.predict(state, now)
        return web.json(view)

    @app.page("/corridors")
    async def corridors(web, request):
        totals, gauges, now = pipe.snapshot()
        return web.json(corridor_summary(totals, gauges, now, sorted(pipe.owned_partitions())))


def readiness(app, pipe) -> dict:
    """Whether the worker is ready (streams.worker.metrics.worker_ready), and why not: what /health
    answers (200 or 503) and `corridor_worker_ready` exports."""
    recovered = app.tables.recovery.completed.is_set()
    rebalancing = bool(app.rebalancing)
    return {"ready": worker_ready(pipe.assigned, recovered, rebalancing),
            "recovering": not recovered, "rebalancing": rebalancing}


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
            "customs": {**figures.customs_summary(tot),
                        "waiting": sum(n for k, n in gauges.customs_waiting.items() if k[0] == corr)},
        }
    return {"now": iso(now), "partitions": partitions, "corridors": out}
