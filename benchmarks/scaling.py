"""Cost as state grows: events/s, RSS per open shipment and /metrics scrape time at N open shipments.

For each N (fresh broker, one fresh worker, memory store unless --store):

1. baseline: the worker's RSS once it is ready and idle;
2. build: N open shipments, one `picked_up` event each (origin and destination countries, no
   order: the shape benchmarks/recovery.py uses), produced as fast as kafka-python goes while the
   worker consumes; build events/s = N / (time until the group has committed all N);
3. RSS per open shipment = (RSS after the build - baseline) / N, and the peak (VmHWM);
4. /metrics: the median of 5 scrapes (the corridor gauges walk every open shipment the worker
   owns), and a check that `corridor_shipments_in_stage` sums to N;
5. probe: P more events (`departed_origin` for P distinct existing shipments, P = min(--probe, N),
   a fixed sample) on top of the N; probe events/s = P / (time until committed), and the worker's
   CPU time per probe event (robust to other load on the machine). Flat cost per event means
   neither falls / rises as N grows.

Progress is read from the broker (committed offsets), never by scraping, so a slow scrape at
large N does not slow the build.

    python benchmarks/scaling.py [--sizes 10000,100000] [--probe 20000]
    python benchmarks/scaling.py --sizes 1000000          # ~10 min on 2 cores
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (GroupProgress, cpu_seconds, kill_all, loadavg, poll, produce,  # noqa: E402
                    rss_mib, scrape_seconds, start_broker, start_workers)

CORRIDORS = (("CN", "AU"), ("CN", "US"), ("DE", "US"), ("US", "MX"), ("CN", "GB"))
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
WORKER_ENV = {"CORRIDOR_LOG_LEVEL": "warn"}


def open_shipments(n: int):
    """(topic, key, value) of n `picked_up` events, one per new shipment."""
    for i in range(n):
        o, d = CORRIDORS[i % len(CORRIDORS)]
        sid = f"SHP-{i:07d}"
        yield ("shipments", sid.encode(), orjson.dumps({
            "event_id": f"e-{i}", "shipment_id": sid, "event_type": "picked_up",
            "occurred_at": (T0 + timedelta(seconds=i)).isoformat(), "origin_country": o,
            "destination_country": d, "carrier": "DHL Express"}))


def probe_events(n: int, p: int, seed: int = 11):
    """p `departed_origin` events for p distinct shipments of the n, a fixed sample."""
    for j, i in enumerate(random.Random(seed).sample(range(n), p)):
        o, _d = CORRIDORS[i % len(CORRIDORS)]
        sid = f"SHP-{i:07d}"
        yield ("shipments", sid.encode(), orjson.dumps({
            "event_id": f"p-{i}", "shipment_id": sid, "event_type": "departed_origin",
            "occurred_at": (T0 + timedelta(seconds=n + j)).isoformat(),
            "location": {"country": o, "facility": f"{o}-HUB"}}))


def open_count(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("corridor_shipments_in_stage{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(n: int, probe: int, partitions: int, logdir: Path, *, store: str = "memory://",
        timeout: float = 3600, shim: bool = False) -> dict:
    load_before = loadavg()
    broker = start_broker(partitions)
    workers = []
    group = None
    try:
        env = dict(WORKER_ENV, CORRIDOR_PARTITIONS=str(partitions), CORRIDOR_STORE=store)
        workers = start_workers(broker.url, 1, logdir, env, shim=shim)
        w = workers[0]
        group = GroupProgress(broker.bootstrap, w.env["CORRIDOR_APP_ID"], partitions)
        time.sleep(1.0)
        base = rss_mib(w.proc.pid)

        def committed(target: int):
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {w.proc.returncode}:\n{w.log_tail(25)}")
            return group.inputs_committed() >= target

        t = time.perf_counter()
        cpu0 = cpu_seconds(w.proc.pid)
        produce(broker.bootstrap, open_shipments(n))
        poll(lambda: committed(n), timeout, 0.5, f"{n} open shipments committed")
        build_s = time.perf_counter() - t
        build_cpu = cpu_seconds(w.proc.pid) - cpu0
        time.sleep(1.0)
        rss_built = rss_mib(w.proc.pid)
        scrapes = scrape_seconds(w, 5)
        seen = open_count(w.raw_metrics(timeout=600))
        p = min(probe, n)
        t = time.perf_counter()
        cpu0 = cpu_seconds(w.proc.pid)
        produce(broker.bootstrap, probe_events(n, p))
        poll(lambda: committed(n + p), timeout, 0.25, f"{p} probe events committed")
        probe_s = time.perf_counter() - t
        probe_cpu = cpu_seconds(w.proc.pid) - cpu0
        return {"open_shipments": n, "store": store, "build_events_per_s": n / build_s,
                "build_s": build_s, "probe_events": p, "probe_events_per_s": p / probe_s,
                "build_cpu_us_per_event": build_cpu / n * 1e6,
                "probe_cpu_us_per_event": probe_cpu / p * 1e6,
                "rss_baseline_mib": base, "rss_built_mib": rss_built,
                "rss_per_shipment_bytes": (rss_built - base) * 1024 * 1024 / n,
                "peak_rss_mib": rss_mib(w.proc.pid, "VmHWM:"),
                "scrape_median_s": statistics.median(scrapes), "scrapes_s": scrapes,
                "open_in_metrics": seen, "loadavg_before": load_before, "loadavg_after": loadavg()}
    finally:
        if group is not None:
            group.close()
        kill_all(workers)
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--probe", type=int, default=20000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--store", default="memory://")
    args = ap.parse_args()
    logdir = Path(tempfile.mkdtemp(prefix="corridor-bench-"))
    for n in (int(s) for s in args.sizes.split(",")):
        r = run(n, args.probe, args.partitions, logdir, store=args.store)
        print(f"{n:>9} open: build {r['build_events_per_s']:6.0f} ev/s, probe "
              f"{r['probe_events_per_s']:6.0f} ev/s ({r['probe_cpu_us_per_event']:.0f} us CPU/event), RSS {r['rss_per_shipment_bytes']:6.0f} B/shipment "
              f"({r['rss_baseline_mib']:.0f} -> {r['rss_built_mib']:.0f} MiB), /metrics "
              f"{r['scrape_median_s'] * 1000:.0f} ms, open in metrics {r['open_in_metrics']:.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
