"""Soak: the simulator at a steady rate against one worker for a while; is the worker's memory flat?

    python benchmarks/soak.py [--minutes 10] [--rate 300] [--retention-days 3]

Every 15 s prints the worker's RSS, the events consumed and the open shipments; at the end the
peak RSS and the RSS growth over the second half (flat memory: growth near zero once ended
shipments start to expire; the retention is shortened so that happens within the run).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

from common import rss_mib  # noqa: E402
from harness import Worker, series, unique_app_id  # noqa: E402
from streams.broker.embedded import EmbeddedBroker  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=float, default=300)
    ap.add_argument("--retention-days", type=float, default=3)
    args = ap.parse_args()
    logdir = Path("/tmp/corridor-bench")
    logdir.mkdir(exist_ok=True)
    broker = EmbeddedBroker(port=0).start()
    app_id = unique_app_id("soak")
    env = {"CORRIDOR_LOG_LEVEL": "warn", "CORRIDOR_RETENTION_SECONDS": str(args.retention_days * 86400)}
    w = Worker(broker.url, app_id, logdir, env=env).start(120)
    sim = subprocess.Popen([sys.executable, "-m", "streams", "simulate", "--rate", str(args.rate),
                            "--scenario", "customs-backlog"], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL,
                           env=dict(os.environ, CORRIDOR_BROKER=broker.url, CORRIDOR_PROFILE="embedded"))
    samples = []
    try:
        end = time.monotonic() + args.minutes * 60
        t0 = time.monotonic()
        while time.monotonic() < end:
            time.sleep(15)
            m = w.metrics()
            consumed = sum(series(m, "corridor_events_consumed_total").values())
            open_ = sum(series(m, "corridor_shipments_in_stage").values())
            rss = rss_mib(w.proc.pid)
            samples.append((time.monotonic() - t0, rss, consumed, open_))
            print(f"{samples[-1][0]:6.0f} s  RSS {rss:7.1f} MiB  consumed {consumed:9.0f}  "
                  f"open {open_:6.0f}", flush=True)
        peak = rss_mib(w.proc.pid, "VmHWM:")
        half = [s for s in samples if s[0] >= samples[-1][0] / 2]
        print(f"peak RSS {peak:.1f} MiB; RSS over the second half: {half[0][1]:.1f} -> "
              f"{half[-1][1]:.1f} MiB ({half[-1][1] - half[0][1]:+.1f}); "
              f"{samples[-1][2] / samples[-1][0]:.0f} events/s consumed on average")
    finally:
        sim.terminate()
        sim.wait(30)
        w.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
