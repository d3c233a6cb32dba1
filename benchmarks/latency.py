"""Event-to-metric latency at a paced rate: how long from produce until /metrics reflects the event.

Method (one worker, warm: the clock starts after it is ready, on a fresh broker):

- A producer thread sends the simulator workload at `--rate` events/s (kafka-python, acks=1,
  linger 0), in workload order, and notes the time right after each send() returned, per topic:
  the k-th event sent to topic T has produce time s(T, k).
- The main thread scrapes the worker's /metrics every `--interval` s (default 0.1) and reads
  `corridor_events_consumed_total{topic=T}`, asking for that counter alone
  (`/metrics?name[]=corridor_events_consumed_total`): the full page at 10 Hz took about 30 % of
  the worker's event loop at 5,800 events/s (rendering every corridor family 10 times a second,
  which Prometheus, every 15 s, does not), and so measured the scraper as much as the worker.
  The page is rendered in one turn of the event loop either way, so the counter reflects the
  same events as the corridor series would. The counter is bumped when the agent takes the event,
  and the agent gives the event loop (and so the web handler) no chance to run before it has
  written the event's state, so a scrape that counts k events of T has their effects in every
  corridor series it returns.
- The k-th event of T is taken as reflected by the first scrape whose count for T is >= k:
  latency = (that scrape's response time) - s(T, k). This is an upper bound; the previous scrape,
  whose count was < k, gives a lower bound (its request time - s(T, k)). So the resolution is one
  scrape interval plus one scrape's duration; both bounds are reported.
- Attribution by count assumes a topic's events are consumed in the order they were produced.
  Across a topic's partitions that holds only roughly (partitions are fetched in turns), so an
  individual event may be credited to a neighbour's scrape; at a steady rate the error is
  within a fetch round.
- An order event changes a shipment's figures only after two more hops through the internal
  topics (the link from the shipment, then the forwarded order event); that extra time is not in
  this figure (the consumed counter counts input messages only).

- The broker sets a floor: faust hard-codes the consumer's fetch_max_wait_ms to 1500, and Tansu
  answers a fetch only when that wait is over (a raw aiokafka consumer at 200 msg/s here: p50/p99
  396/748 ms with 1500, 132/252 with 500, 26/52 with 100). `--fetch-max-wait-ms` measures the
  worker with another value (benchmarks/worker_shim.py).

    python benchmarks/latency.py [--shipments 5000] [--rate 1000] [--seconds 30] [--fetch-max-wait-ms N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (consumed_by_topic, kill_all, loadavg, start_broker,  # noqa: E402
                    start_workers, workload)

WORKER_ENV = {"CORRIDOR_LOG_LEVEL": "warn"}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q / 100 * (len(sorted_values) - 1)))))
    return sorted_values[i]


def run(events, rate: float, seconds: float, partitions: int, logdir: Path, *,
        interval: float = 0.1, env: dict | None = None, drain_timeout: float = 300,
        shim: bool = False) -> dict:
    from kafka import KafkaProducer
    events = events[:max(1, int(rate * seconds))]
    load_before = loadavg()
    broker = start_broker(partitions)
    workers = []
    producer = None
    try:
        workers = start_workers(broker.url, 1, logdir,
                                dict(WORKER_ENV, CORRIDOR_PARTITIONS=str(partitions), **(env or {})),
                                shim=shim)
        w = workers[0]
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=0)
        producer.partitions_for("orders")        # metadata before the clock starts
        sent: dict[str, list[float]] = {}
        errors: list[BaseException] = []

        def paced() -> None:
            try:
                t0 = time.perf_counter()
                for i, (topic, key, value) in enumerate(events):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    producer.send(topic, key=key, value=value)
                    sent.setdefault(topic, []).append(time.perf_counter())
                producer.flush(60)
            except BaseException as exc:     # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=paced, name="paced-producer", daemon=True)
        scrapes: list[tuple[float, float, dict[str, float]]] = []
        t_start = time.perf_counter()
        thread.start()
        deadline = None
        while True:
            t_req = time.perf_counter()
            counts = consumed_by_topic(w)
            t_resp = time.perf_counter()
            scrapes.append((t_req, t_resp, counts))
            if errors:
                raise errors[0]
            if not thread.is_alive():
                deadline = deadline or time.perf_counter() + drain_timeout
                if all(counts.get(t, 0) >= len(v) for t, v in sent.items()):
                    break
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"not every event consumed {drain_timeout} s after the last "
                                       f"send: {counts} of { {t: len(v) for t, v in sent.items()} }")
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {w.proc.returncode}:\n{w.log_tail(25)}")
            time.sleep(max(0.0, interval - (t_resp - t_req)))
        produce_seconds = max(ts[-1] for ts in sent.values()) - t_start
        upper, lower = [], []
        for topic, times in sent.items():
            j = 0
            for k, s in enumerate(times, start=1):
                while scrapes[j][2].get(topic, 0) < k:
                    j += 1
                upper.append(scrapes[j][1] - s)
                lower.append(max(0.0, scrapes[j - 1][0] - s) if j > 0 else 0.0)
        upper.sort()
        lower.sort()
        durations = sorted(b - a for a, b, _ in scrapes)
        gaps = [scrapes[i + 1][0] - scrapes[i][0] for i in range(len(scrapes) - 1)]
        return {"events": len(events), "target_rate": rate,
                "achieved_rate": len(events) / produce_seconds,
                "p50_s": percentile(upper, 50), "p99_s": percentile(upper, 99),
                "max_s": upper[-1], "p50_lower_s": percentile(lower, 50),
                "p99_lower_s": percentile(lower, 99),
                "scrapes": len(scrapes), "scrape_interval_s": sum(gaps) / max(1, len(gaps)),
                "scrape_p50_s": percentile(durations, 50), "scrape_max_s": durations[-1],
                "loadavg_before": load_before, "loadavg_after": loadavg()}
    finally:
        if producer is not None:
            producer.close(5)
        kill_all(workers)
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shipments", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=1000, help="events/s (run_all uses half the "
                    "measured 1-worker throughput)")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--interval", type=float, default=0.1, help="scrape interval, s")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fetch-max-wait-ms", type=int, default=None,
                    help="what-if: the worker consumer's fetch_max_wait_ms (faust: 1500), through "
                    "benchmarks/worker_shim.py")
    args = ap.parse_args()
    env = ({"CORRIDOR_BENCH_FETCH_MAX_WAIT_MS": str(args.fetch_max_wait_ms)}
           if args.fetch_max_wait_ms is not None else {})
    logdir = Path(tempfile.mkdtemp(prefix="corridor-bench-"))
    events = workload(args.shipments, args.seed)
    r = run(events, args.rate, args.seconds, args.partitions, logdir, interval=args.interval,
            env=env, shim=bool(env))
    print(f"{r['events']} events at {r['achieved_rate']:.0f}/s (target {args.rate:.0f}): event-to-metric "
          f"p50 {r['p50_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms, max {r['max_s'] * 1000:.0f} ms "
          f"(lower bounds p50 {r['p50_lower_s'] * 1000:.0f}, p99 {r['p99_lower_s'] * 1000:.0f} ms); "
          f"{r['scrapes']} scrapes every {r['scrape_interval_s'] * 1000:.0f} ms, "
          f"each {r['scrape_p50_s'] * 1000:.1f} ms (max {r['scrape_max_s'] * 1000:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
