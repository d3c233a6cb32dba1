"""The floor: a minimal hand-written aiokafka consumer doing corridor's join and counting with plain dicts.

It reads the three input topics (every partition, manual assignment, from the earliest offset),
decodes each value with orjson and feeds it to `streams.domain.engine.Engine`, the whole join in
memory (orders joined to shipments, timelines, per-corridor totals), and counts consumed events
per topic in a dict. No Faust, no tables, no changelogs, no internal topics, no commits, no
metrics endpoint: what is left is aiokafka's fetch path, orjson and the domain code, i.e. the
Python overhead below which no worker on this broker can go. `--validate` also runs every event
through corridor's contract decoder (streams.contract.codec.Decoder: JSON Schema + timestamp + key
checks), as the worker does.

The clock runs from the moment the consumer is started and assigned (before the first fetch)
until `--expected` messages have been fed. Prints one JSON line: events, seconds, events/s, CPU
seconds (user + system, all threads) and CPU per event over the same span, peak RSS (MiB), events
per topic, delivered shipments (a sanity figure).

    python benchmarks/floor.py --bootstrap 127.0.0.1:PORT --expected N [--partitions 4] [--validate]

run_all.py runs it as a child process against the same broker and workload as the worker.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

# the source snapshot the benchmark session runs (benchmarks/common.py), else this repository
sys.path.insert(0, os.environ.get("CORRIDOR_BENCH_SRC") or str(Path(__file__).resolve().parents[1]))
from streams.domain.engine import Engine  # noqa: E402
from streams.domain.policy import SlaPolicy  # noqa: E402
from streams.settings import Settings  # noqa: E402

KIND = {topic: kind for kind, topic in Settings().input_topics.items()}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def consume(bootstrap: str, expected: int, partitions: int, validate: bool,
                  timeout: float) -> dict:
    engine = Engine(SlaPolicy.load())
    decoders = None
    if validate:
        from streams.contract.codec import Decoder
        decoders = {kind: Decoder(kind) for kind in KIND.values()}
    consumed: dict[str, int] = {topic: 0 for topic in KIND}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in KIND for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        t0 = time.perf_counter()
        cpu0 = _cpu()
        deadline = t0 + timeout
        n = 0
        feed = engine.feed
        loads = orjson.loads
        while n < expected:
            if time.perf_counter() > deadline:
                raise SystemExit(f"floor: only {n} of {expected} events within {timeout} s")
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, messages in batches.items():
                kind = KIND[tp.topic]
                if decoders is None:
                    for m in messages:
                        feed(kind, loads(m.value))
                else:
                    decode = decoders[kind].decode
                    for m in messages:
                        feed(kind, decode(m.key, m.value))
                consumed[tp.topic] += len(messages)
                n += len(messages)
        elapsed = time.perf_counter() - t0
        cpu = _cpu() - cpu0
    finally:
        await consumer.stop()
    engine.finish()
    delivered = sum(sum(t["delivered"].values()) for t in engine.totals.values())
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed,
            "cpu_s": cpu, "cpu_us_per_event": cpu / n * 1e6,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "consumed": consumed, "delivered": delivered, "duplicates": engine.duplicates,
            "validate": validate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--expected", type=int, required=True)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    result = asyncio.run(consume(args.bootstrap, args.expected, args.partitions, args.validate,
                                 args.timeout))
    print(orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
