"""Throughput of the whole pipeline: embedded broker + `corridor worker` processes on a simulator load.

Each run: a fresh embedded broker, the topics created, the workload produced up front with
kafka-python, then N workers are spawned at the same moment (cold: new processes, a new consumer
group, empty tables). Two clocks:

- from ready: from the moment the first worker answers /health 200 (in the group, tables recovered)
  until the group has committed every input message and everything on the two internal join
  topics (common.GroupProgress): every event and every join hop it caused has been processed.
  This is the headline events/s.
- cold: the same end, from the spawn of the processes (adds Python boot and the group join).

Progress is read from the broker (the group's committed offsets) every 0.25 s, so measuring costs
the workers nothing; the workers' `corridor_consumer_lag` is not used: it is computed from the end
offsets Faust last saw and reads 0 while forwarded order events are still in flight. Also
reported: the workers' peak RSS (VmHWM; the largest of the workers) and, from their /metrics at
the end, shipments delivered and events applied/duplicate/rejected, and the worker CPU time
(user + system, from ready to the end) per event: unlike events/s it hardly moves when other
processes compete for the cores (sanity figures; the floor's
Engine gives the reference delivered count). A figure, not a test: nothing here asserts a time.

Figures check: every run's final figures, summed over the workers and their `partition` label,
are compared with an independent count of the workload (benchmarks/oracle.py: plain Python over
the produced messages, no streams.domain): delivered, delivered on time and transit seconds (sum)
per corridor and service level. A run whose figures differ is re-scraped for up to
--figures-wait seconds (a worker that is rebalancing exports no totals for a moment), then printed
as "figures: exact" or with every mismatching series; the last line counts the exact runs. The
check runs after the clock has stopped: it does not change the throughput figures.

    python benchmarks/pipeline.py [--shipments 20000] [--runs 3] [--workers 1] [--partitions 4]
                                  [--store memory://|rocksdb://] [--faust SETTING=VALUE ...]
                                  [--rev GIT_REV] [--figures-wait 20]

Exit status 1 when a run's figures are not exact.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (GroupProgress, cpu_seconds, kill_all, loadavg, parse_overrides,  # noqa: E402
                    poll, produce, rss_mib, start_broker, start_workers, workload)
import oracle  # noqa: E402
from exactness import scrape, snapshot, source_label  # noqa: E402
from streams.settings import Settings  # noqa: E402

WORKER_ENV = {"CORRIDOR_LOG_LEVEL": "warn"}


def one_run(events, n_workers: int, partitions: int, logdir: Path, *, store: str = "memory://",
            profile_out: Path | None = None, timeout: float = 1800, shim: bool = False,
            env: dict | None = None, figures_wait: float = 20.0) -> dict:
    """One cold run; returns the figures (see the module docstring)."""
    load_before = loadavg()
    broker = start_broker(partitions)
    workers = []
    spy = None
    try:
        produce_s = produce(broker.bootstrap, events)
        env = dict(WORKER_ENV, CORRIDOR_PARTITIONS=str(partitions), CORRIDOR_STORE=store, **(env or {}))
        workers = start_workers(broker.url, n_workers, logdir, env, shim=shim)
        broker_cpu0 = cpu_seconds(broker.pid)
        t_spawn = min(w.t_spawn for w in workers)
        t_ready = min(w.t_ready for w in workers)
        if profile_out is not None:
            spy = subprocess.Popen([py_spy(), "record", "-p", str(workers[0].proc.pid), "--idle", "--threads",
                                    "-r", "100", "-f", "raw", "-o", str(profile_out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   start_new_session=True)
        marks: dict[str, float] = {}
        n = len(events)
        group = GroupProgress(broker.bootstrap, workers[0].env["CORRIDOR_APP_ID"], partitions)

        def done() -> bool:
            for w in workers:
                if w.proc.poll() is not None:
                    raise RuntimeError(f"worker {w.name} exited with status {w.proc.returncode}: "
                                       f"{w.crash() or w.log_tail(25)}")
            if "inputs" not in marks and group.inputs_committed() >= n:
                marks["inputs"] = time.perf_counter()
            return "inputs" in marks and group.done(n)

        try:
            poll(done, timeout, 0.25, "every event and every join hop processed and committed")
        finally:
            internal = group.internal_records()
            changelogs = group.changelog_records()
            group.close()
        t_end = time.perf_counter()
        rss = [rss_mib(w.proc.pid, "VmHWM:") for w in workers]
        cpu = sum(w.cpu_since_ready() for w in workers)
        broker_cpu = cpu_seconds(broker.pid) - broker_cpu0
        figures = final_figures(workers)
        figures.update(check_figures(workers, events, figures_wait))
        profile_err = None
        if spy is not None:
            spy.send_signal(signal.SIGINT)          # py-spy writes its output on Ctrl-C
            try:
                _, err = spy.communicate(timeout=60)
                profile_err = err.decode(errors="replace")[-500:] if spy.returncode else None
            except subprocess.TimeoutExpired:
                spy.kill()
                profile_err = "py-spy did not stop"
        return {"events": n, "workers": n_workers, "store": store, "shim": shim,
                "seconds": t_end - t_ready,
                "events_per_s": n / (t_end - t_ready),
                "cold_events_per_s": n / (t_end - t_spawn),
                "start_to_ready_s": t_ready - t_spawn,
                "all_ready_s": max(w.t_ready for w in workers) - t_spawn,
                "inputs_committed_s": marks["inputs"] - t_ready,
                "internal_records": internal,
                "changelog_records": changelogs,
                "produce_per_s": n / produce_s,
                "worker_cpu_s": cpu, "cpu_us_per_event": cpu / n * 1e6,
                "broker_cpu_s": broker_cpu,
                "peak_rss_mib": max(rss), "peak_rss_mib_each": rss,
                "loadavg_before": load_before, "loadavg_after": loadavg(),
                "profile_error": profile_err, **figures}
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        kill_all(workers)
        broker.stop()


def writes_per_event(r: dict) -> str:
    """Records the worker wrote per input event: each changelog, and the two join topics."""
    parts = [f"{name} {n / r['events']:.2f}" for name, n in r["changelog_records"].items()]
    parts.append(f"join topics {r['internal_records'] / r['events']:.2f}")
    return ", ".join(parts)


def py_spy() -> str:
    """The py-spy next to this Python (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else (shutil.which("py-spy") or "py-spy")


def final_figures(workers) -> dict:
    """Sanity figures from the workers' metrics at the end (summed over workers): shipments
    delivered, events applied / duplicate / rejected. The floor's Engine gives the same delivered
    count up to cross-topic arrival order (docs/semantics.md, late events)."""
    out = {"delivered": 0.0, "applied": 0.0, "duplicate": 0.0, "rejected": 0.0}
    names = {"corridor_shipments_delivered_total": "delivered",
             "corridor_events_applied_total": "applied",
             "corridor_events_duplicate_total": "duplicate",
             "corridor_events_rejected_total": "rejected"}
    for w in workers:
        for (name, _labels), v in w.metrics().items():
            if name in names:
                out[names[name]] += v
    return out


_ORACLE: dict = {}


def expected_figures(events) -> dict:
    """oracle.count of the workload, computed once per workload list."""
    key = (id(events), len(events))
    if key not in _ORACLE:
        _ORACLE.clear()
        _ORACLE[key] = oracle.count(events, Settings().input_topics)
    return _ORACLE[key]


def check_figures(workers, events, wait: float = 20.0) -> dict:
    """The workers' delivered / on-time / transit-sum rows against the independent count:
    {"figures_exact": bool, "figures_mismatch": [lines], "figures_checked_after_s": s, ...}.
    Re-scraped every 2 s for up to `wait` seconds while they differ."""
    expected = expected_figures(events)
    t0 = time.perf_counter()
    while True:
        scrapes = [scrape(w, timeout=600) for w in workers]
        got = oracle.from_samples(x for s in scrapes if s is not None for x in s)
        bad = oracle.mismatches(expected["rows"], got)
        missing = [w.name for w, s in zip(workers, scrapes) if s is None]
        if missing:
            bad = [f"worker(s) {', '.join(missing)} did not answer /metrics"] + bad
        if not bad or time.perf_counter() - t0 >= wait:
            break
        time.sleep(2.0)
    tot = oracle.totals(expected["rows"])
    return {"figures_exact": not bad, "figures_mismatch": bad,
            "figures_checked_after_s": time.perf_counter() - t0,
            "oracle_delivered": tot["delivered"], "oracle_on_time": tot["on_time"],
            "oracle_transit_sum": tot["transit_sum"], "oracle_series": len(expected["rows"]),
            "oracle_awaiting_order": expected["awaiting_order"]}


def check_totals(events, totals: dict) -> dict:
    """The figures check of a peer port (benchmarks/quix.py, bytewax_job.py): its final
    per-corridor totals records against the independent count; the same fields as check_figures."""
    expected = expected_figures(events)
    bad = oracle.mismatches(expected["rows"], oracle.from_totals(totals))
    tot = oracle.totals(expected["rows"])
    return {"figures_exact": not bad, "figures_mismatch": bad,
            "oracle_delivered": tot["delivered"], "oracle_on_time": tot["on_time"],
            "oracle_transit_sum": tot["transit_sum"], "oracle_series": len(expected["rows"]),
            "oracle_awaiting_order": expected["awaiting_order"]}


def figures_line(r: dict, limit: int | None = None) -> str:
    """"figures: exact ..." or the mismatching series of one run."""
    if r.get("figures_exact"):
        return (f"figures: exact ({r['oracle_delivered']:,} delivered, {r['oracle_on_time']:,} on time, "
                f"transit {r['oracle_transit_sum']:,.0f} s, {r['oracle_series']} corridor/level rows, "
                f"as the independent count)")
    bad = r.get("figures_mismatch", [])
    shown = bad[:limit] if limit else bad
    more = f"\n    ... and {len(bad) - len(shown)} more" if len(bad) > len(shown) else ""
    return (f"figures: {len(bad)} series differ from the independent count (delivered "
            f"{r.get('delivered', 0):,.0f} of {r.get('oracle_delivered', 0):,}):\n    "
            + "\n    ".join(shown) + more)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shipments", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--store", default="memory://", help="memory:// or rocksdb://")
    ap.add_argument("--faust", action="append", default=[], metavar="SETTING=VALUE",
                    help="what-if: override a Faust setting of the worker (JSON value, else a "
                    "string), through benchmarks/worker_shim.py; repeatable")
    ap.add_argument("--shim", action="store_true", help="run the worker through worker_shim.py")
    ap.add_argument("--rev", default=None, metavar="GIT_REV",
                    help="run the workers on streams/ as committed at this revision (e.g. HEAD), "
                         "copied at start; default: the working tree, as it is on disk")
    ap.add_argument("--figures-wait", type=float, default=20.0,
                    help="seconds to re-scrape figures that differ from the independent count")
    args = ap.parse_args()
    overrides = parse_overrides(args.faust)
    env = {"CORRIDOR_BENCH_FAUST": json.dumps(overrides)} if overrides else {}
    logdir = Path(tempfile.mkdtemp(prefix="corridor-bench-"))
    if args.rev:
        snapshot(logdir / "src", args.rev)
        print(f"code under test: streams/ of {source_label(args.rev)}", flush=True)
    events = workload(args.shipments, args.seed)
    print(f"workload: {args.shipments} shipments, {len(events)} events, {args.partitions} partitions, "
          f"{args.workers} worker(s), store {args.store}, {os.cpu_count()} CPUs; logs in {logdir}"
          + (f"; Faust overrides {overrides}" if overrides else ""), flush=True)
    results = []
    for i in range(args.runs):
        r = one_run(events, args.workers, args.partitions, logdir, store=args.store, env=env,
                    shim=args.shim or bool(overrides), figures_wait=args.figures_wait)
        results.append(r)
        print(f"run {i + 1}: {r['events_per_s']:8.0f} events/s from ready ({r['seconds']:.1f} s; "
              f"{r['cpu_us_per_event']:.0f} us worker CPU/event; "
              f"{r['cold_events_per_s']:.0f} from spawn, ready after {r['start_to_ready_s']:.1f} s)  "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB  delivered {r['delivered']:.0f}  "
              f"(producer {r['produce_per_s']:.0f} msg/s, load {r['loadavg_before']:.1f}); "
              f"records written per event: {writes_per_event(r)}", flush=True)
        print(f"  {figures_line(r)}", flush=True)
    rates = [r["events_per_s"] for r in results]
    print(f"median {statistics.median(rates):.0f} events/s  (min {min(rates):.0f}, max {max(rates):.0f},"
          f" {len(rates)} runs); median peak RSS "
          f"{statistics.median(r['peak_rss_mib'] for r in results):.0f} MiB")
    exact = sum(bool(r.get("figures_exact")) for r in results)
    print(f"figures: {exact} of {len(results)} runs exact (delivered, on time and transit seconds per "
          f"corridor and service level against an independent count of the workload)")
    shutil.rmtree(logdir, ignore_errors=True)
    return 0 if exact == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
