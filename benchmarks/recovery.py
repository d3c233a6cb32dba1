"""Recovery time: a worker holding N open shipments is SIGKILLed; how long until a new worker has
recovered its tables from the changelogs and is ready, and until /metrics shows all N again.

    python benchmarks/recovery.py [--shipments 100000] [--runs 3]

Open shipments are made with one `picked_up` event each (origin and destination known, no order),
processed by a first worker, so the changelog is exactly what Faust writes. Prints medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from kafka import KafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from harness import Worker, poll, sample, series, unique_app_id  # noqa: E402
from streams.broker.embedded import EmbeddedBroker, create_topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import all_topics  # noqa: E402

CORRIDORS = (("CN", "AU"), ("CN", "US"), ("DE", "US"), ("US", "MX"), ("CN", "GB"))


def open_shipments(broker, n: int) -> None:
    t0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=20,
                             batch_size=256 * 1024)
    for i in range(n):
        o, d = CORRIDORS[i % len(CORRIDORS)]
        sid = f"SHP-{i:07d}"
        ev = {"event_id": f"e-{i}", "shipment_id": sid, "event_type": "picked_up",
              "occurred_at": (t0 + timedelta(seconds=i)).isoformat(), "origin_country": o,
              "destination_country": d, "carrier": "DHL Express"}
        producer.send("shipments", key=sid.encode(), value=orjson.dumps(ev))
    producer.flush()
    producer.close()


def open_count(w) -> float:
    return sum(series(w.metrics(), "corridor_shipments_in_stage").values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shipments", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    logdir = Path("/tmp/corridor-bench")
    logdir.mkdir(exist_ok=True)
    broker = EmbeddedBroker(port=0).start()
    try:
        create_topics(broker.bootstrap, all_topics(Settings(broker=broker.url)))
        app_id = unique_app_id("recovery")
        env = {"CORRIDOR_LOG_LEVEL": "warn"}
        w = Worker(broker.url, app_id, logdir, name="builder", env=env).start(120)
        t = time.perf_counter()
        open_shipments(broker, args.shipments)
        poll(lambda: sample(w.metrics(), "corridor_events_consumed_total", topic="shipments")
             == args.shipments, 3600, 1.0, "state built")
        print(f"built {args.shipments} open shipments in {time.perf_counter() - t:.0f} s", flush=True)
        ready, complete = [], []
        for run in range(args.runs):
            w.kill()
            t = time.perf_counter()
            w = Worker(broker.url, app_id, logdir, name=f"r{run}", env=env).start(1800)
            ready.append(time.perf_counter() - t)
            poll(lambda: open_count(w) == args.shipments, 1800, 0.5, "all shipments visible")
            complete.append(time.perf_counter() - t)
            print(f"run {run + 1}: ready after {ready[-1]:.1f} s, all {args.shipments} open "
                  f"shipments in /metrics after {complete[-1]:.1f} s", flush=True)
        print(f"median: ready {statistics.median(ready):.1f} s, complete "
              f"{statistics.median(complete):.1f} s over {args.runs} runs")
        w.stop()
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
