"""Throughput of the whole pipeline: embedded broker + `corridor worker` processes on a simulator load.

Each run: a fresh embedded broker, the topics created, the workload produced up front with
kafka-python, then N workers start cold and the clock runs from the moment the first worker is ready
until the workers together have consumed every message (read from their /metrics). Prints events/s,
the workers' peak RSS, and the median and spread over the runs. A figure, not a test: nothing here
asserts a time.

    python benchmarks/pipeline.py [--shipments 5000] [--runs 3] [--workers 1] [--partitions 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import orjson
from kafka import KafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from harness import Worker, poll, series, unique_app_id  # noqa: E402
from streams.broker import EmbeddedBroker, create_topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.simulate import histories  # noqa: E402
from streams.topics import all_topics  # noqa: E402


def workload(shipments: int, seed: int) -> list[tuple[str, bytes, bytes]]:
    topics = Settings().input_topics
    start = time.time() - 120 * 86400
    return [(topics[e.topic], e.key.encode(), orjson.dumps(e.value))
            for e in histories(seed, shipments, scenario="customs-backlog", start=start,
                               duplicate_rate=0.01, reorder_rate=0.02)]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_run(events, n_workers: int, partitions: int, logdir: Path) -> dict:
    broker = EmbeddedBroker(port=0).start()
    try:
        settings = Settings(broker=broker.url, partitions=partitions)
        create_topics(broker.bootstrap, all_topics(settings))
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=20,
                                 batch_size=256 * 1024)
        t = time.perf_counter()
        for topic, key, value in events:
            producer.send(topic, key=key, value=value)
        producer.flush()
        producer.close()
        produce_s = time.perf_counter() - t
        app_id = unique_app_id("bench")
        env = {"CORRIDOR_PARTITIONS": str(partitions), "CORRIDOR_LOG_LEVEL": "warn"}
        workers = [Worker(broker.url, app_id, logdir, name=f"w{i}", env=env) for i in range(n_workers)]
        for w in workers:
            w.start(ready_timeout=120)
        t0 = time.perf_counter()

        def consumed():
            return sum(sum(series(w.metrics(), "corridor_events_consumed_total").values())
                       for w in workers)
        poll(lambda: consumed() >= len(events), 1800, 0.25, "all events consumed")
        elapsed = time.perf_counter() - t0
        rss = [peak_rss_mib(w.proc.pid) for w in workers]
        for w in workers:
            w.stop()
        return {"events": len(events), "seconds": elapsed, "events_per_s": len(events) / elapsed,
                "produce_per_s": len(events) / produce_s, "peak_rss_mib": max(rss)}
    finally:
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shipments", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    logdir = Path(os.environ.get("TMPDIR", "/tmp")) / "corridor-bench"
    logdir.mkdir(parents=True, exist_ok=True)
    events = workload(args.shipments, args.seed)
    print(f"workload: {args.shipments} shipments, {len(events)} events, {args.partitions} partitions, "
          f"{args.workers} worker(s), {os.cpu_count()} CPUs", flush=True)
    results = []
    for i in range(args.runs):
        r = one_run(events, args.workers, args.partitions, logdir)
        results.append(r)
        print(f"run {i + 1}: {r['events_per_s']:8.0f} events/s  ({r['seconds']:.1f} s)  "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB  (producer {r['produce_per_s']:.0f} msg/s)",
              flush=True)
    rates = [r["events_per_s"] for r in results]
    print(f"median {statistics.median(rates):.0f} events/s  (min {min(rates):.0f}, max {max(rates):.0f},"
          f" {len(rates)} runs); median peak RSS "
          f"{statistics.median(r['peak_rss_mib'] for r in results):.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
