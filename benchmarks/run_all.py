"""`make bench`: the benchmark table of issue 5, measured on this machine, in one command.

Sections (each on a fresh embedded broker, workers cold, the same fixed-seed simulator workload):

  1w       corridor, 1 worker: events/s from ready until every event and join hop is processed
           (benchmarks/pipeline.py), cold events/s from process spawn, peak RSS
  2w       corridor, 2 workers started together: the same, and the ratio to 1 worker
  2w0      the same with CORRIDOR_STANDBY_REPLICAS=0 (no standby copies: 1 worker's work per event)
  floor    a hand-written aiokafka consumer feeding streams.domain.engine.Engine with orjson-decoded
           events (benchmarks/floor.py), also with corridor's contract decoder; our ratio to it
  quix     the same job as a Quix Streams application with the tuned settings (benchmarks/quix.py);
           issue 5's target is 1.5x its events/s
  bytewax  the same job as a Bytewax 0.21 dataflow, durable: recovery on, state snapshotted to
           SQLite every 1 s (benchmarks/bytewax_job.py); issue 18's target is 1.0x its events/s
  bytewax-mem  the same dataflow without recovery (state in memory only)
  latency  p50/p99 event-to-metric latency at half the measured 1-worker throughput
           (benchmarks/latency.py)
  scaling  build and probe events/s, RSS per open shipment and /metrics scrape time at N open
           shipments (benchmarks/scaling.py)
  rocksdb  section 1w with CORRIDOR_STORE=rocksdb://
  profile  (only with --profile) one 1-worker run under py-spy; summary of the main thread

Medians over --runs with the min-max spread. Every corridor run (1w, 2w, 2w0, rocksdb) and every
run of the peer ports (quix, bytewax, bytewax-mem) also checks its final figures against an
independent count of the workload (benchmarks/oracle.py: delivered, on time and transit seconds
per corridor and service level; pipeline.check_figures, check_totals): the table says how many
runs were exact and shows a mismatch, and the last line counts them over all sections. Writes
benchmarks/results.json and the table into docs/performance.md (between the bench markers);
prints the table.

    python benchmarks/run_all.py                       # defaults: ~22 min on 2 cores
    python benchmarks/run_all.py --shipments 20000 --scale-sizes 10000,100000,1000000 --profile
    python benchmarks/run_all.py --only floor,latency --runs 1
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bytewax_job  # noqa: E402
import latency  # noqa: E402
import quix  # noqa: E402
import pipeline  # noqa: E402
import pyspy_summary  # noqa: E402
import scaling  # noqa: E402
import exactness  # noqa: E402
from common import (ROOT, git_rev, loadavg, machine, package_versions, produce,  # noqa: E402
                    spread, start_broker, workload)

SECTIONS = ("1w", "2w", "2w0", "floor", "quix", "bytewax", "bytewax-mem", "latency", "scaling",
            "rocksdb", "profile")
DOC = ROOT / "docs" / "performance.md"
RESULTS = HERE / "results.json"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PBEGIN, PEND = "<!-- profile:begin -->", "<!-- profile:end -->"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- sections ------------------------------------------------------------------------------------
def corridor_runs(events, args, logdir, n_workers: int, store: str = "memory://",
                  shim: bool = False, env: dict | None = None) -> list[dict]:
    out = []
    for i in range(args.runs):
        r = pipeline.one_run(events, n_workers, args.partitions, logdir, store=store, shim=shim,
                             env={**args.worker_env, **(env or {})})
        out.append(r)
        log(f"  run {i + 1}/{args.runs}: {r['events_per_s']:.0f} ev/s from ready "
            f"({r['seconds']:.1f} s), {r['cold_events_per_s']:.0f} from spawn, peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB, delivered {r['delivered']:.0f}, load {r['loadavg_before']:.1f}")
        log(f"    {pipeline.figures_line(r, 20)}")
    return out


def floor_runs(events, args) -> dict:
    broker = start_broker(args.partitions)
    out = {"plain": [], "validate": []}
    try:
        produce(broker.bootstrap, events)
        for i in range(args.runs):
            for mode in ("plain", "validate"):
                cmd = [sys.executable, str(HERE / "floor.py"), "--bootstrap", broker.bootstrap,
                       "--expected", str(len(events)), "--partitions", str(args.partitions)]
                if mode == "validate":
                    cmd.append("--validate")
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                if proc.returncode != 0:
                    raise RuntimeError(f"floor.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                r["loadavg_before"] = loadavg()
                out[mode].append(r)
                log(f"  run {i + 1}/{args.runs} {mode}: {r['events_per_s']:.0f} ev/s "
                    f"({r['seconds']:.2f} s), peak RSS {r['peak_rss_mib']:.0f} MiB, "
                    f"delivered {r['delivered']}")
    finally:
        broker.stop()
    return out


def rocksdb_runs(events, args, logdir) -> dict:
    out: dict = {"installed": False}
    try:
        import rocksdict  # noqa: F401
        out["installed"] = True
    except ImportError as exc:
        out["error"] = (f"rocksdict is not installed ({exc}); `pip install rocksdict` "
                        "(or faust-streaming[rocksdict]) and run again")
        return out
    try:
        r = pipeline.one_run(events, 1, args.partitions, logdir, store="rocksdb://",
                             env=args.worker_env, timeout=600)
        out["unpatched"] = "ok"
        log(f"  run 1/{args.runs}: {r['events_per_s']:.0f} ev/s, peak RSS {r['peak_rss_mib']:.0f} MiB")
        log(f"    {pipeline.figures_line(r, 20)}")
        rest = argparse.Namespace(**{**vars(args), "runs": args.runs - 1})
        out["runs"] = [r] + (corridor_runs(events, rest, logdir, 1, store="rocksdb://")
                             if args.runs > 1 else [])
        return out
    except Exception as exc:   # noqa: BLE001 - the error is the result
        out["unpatched"] = _one_line_error(exc)
        log(f"  the worker failed with rocksdb://: {out['unpatched'][:300]}")
    out["runs"] = []
    return out


def _one_line_error(exc: BaseException) -> str:
    text = str(exc)
    if "exited with status" in text and " | " in text:
        return text.splitlines()[0]
    for marker in ("AssertionError", "ConsistencyError", "Error"):
        for line in text.splitlines():
            if marker in line and "Traceback" not in line:
                return f"{type(exc).__name__}: {line.strip()}"
    return f"{type(exc).__name__}: {text.strip().splitlines()[-1] if text.strip() else ''}"


def profile_run(events, args, logdir) -> dict:
    raw = Path(tempfile.gettempdir()) / f"corridor-profile-{time.strftime('%Y%m%d-%H%M%S')}.raw"
    r = pipeline.one_run(events, 1, args.partitions, logdir, profile_out=raw, env=args.worker_env)
    if not raw.exists():
        return {"error": r.get("profile_error") or "py-spy wrote nothing", "run": r}
    s = pyspy_summary.summarise(raw, 15)
    return {"raw": str(raw), "run": r, "summary": s, "markdown": pyspy_summary.markdown(s, 15)}


# ---- table ---------------------------------------------------------------------------------------
def cell(text: str, limit: int = 300) -> str:
    """Free text (an error) made safe for a markdown table cell."""
    text = " ".join(str(text).split())
    # File "/…/site-packages/faust/x.py", line 1, in f  ->  faust/x.py:1 f
    text = re.sub(r'File "[^"]*(?:site-packages/|/src/|/work/main/)([^"]+)", line (\d+), in (\S+)',
                  r"\1:\2 \3", text)
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|")


def fmt(x, digits: int = 0, unit: str = "") -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}{unit}"


def span(s: dict, digits: int = 0) -> str:
    if not s or s.get("median") is None:
        return "–"
    return f"{fmt(s['min'], digits)}–{fmt(s['max'], digits)}"


def table(res: dict) -> str:
    a = res["args"]
    rows = [f"Workload: {a['shipments']:,} shipments = {res.get('events', 0):,} events (simulator "
            f"`customs-backlog`, seed {a['seed']}, 1% duplicates, 2% reordered), {a['partitions']} "
            f"partitions; medians of {a['runs']} runs (min–max).", "",
            "| # | measurement | median | min–max | notes |", "|---|---|---:|---:|---|"]
    sec = res["sections"]
    one = sec.get("1w", {}).get("stats")
    floor = sec.get("floor", {}).get("stats")
    if one:
        rows.append(f"| 1 | corridor, 1 worker: events/s | **{fmt(one['eps']['median'])}** | "
                    f"{span(one['eps'])} | from ready; from process spawn {fmt(one['cold']['median'])}"
                    f" ev/s (ready after {fmt(one['ready']['median'], 1)} s) |")
        if one.get("cpu", {}).get("median") is not None:
            rows.append(f"| 1 | corridor, 1 worker: worker CPU per event | {fmt(one['cpu']['median'])} µs"
                        f" | {span(one['cpu'])} | user + system, all threads, from ready to the end; "
                        f"steadier than events/s when other work shares the cores |")
        if one.get("writes", {}).get("median") is not None:
            rows.append(f"| 1 | corridor, 1 worker: changelog records per event | "
                        f"{one['writes']['median']:.2f} | {one['writes']['min']:.2f}–"
                        f"{one['writes']['max']:.2f} | timelines + orders + totals, written behind "
                        f"(one per key per commit; one per table write would be ≥ 1.3) |")
        rows.append(f"| 1 | corridor, 1 worker: peak RSS | {fmt(one['rss']['median'])} MiB | "
                    f"{span(one['rss'])} | VmHWM |")
        rows.append(f"| 1 | corridor, 1 worker: shipments delivered | {fmt(one['delivered']['median'])}"
                    f" | {span(one['delivered'])} | {_delivered_note(res, one)} |")
        rows += figures_row("1", "corridor, 1 worker", sec["1w"].get("runs"))
    elif "error" in sec.get("1w", {}):
        rows.append(f"| 1 | corridor, 1 worker | failed | | {cell(sec['1w']['error'])} |")
    two = sec.get("2w", {}).get("stats")
    if two:
        ratio = two["eps"]["median"] / one["eps"]["median"] if one else None
        rows.append(f"| 2 | corridor, 2 workers: events/s | **{fmt(two['eps']['median'])}** | "
                    f"{span(two['eps'])} | **{fmt(ratio, 2)}×** 1 worker (target ≥ 1.7×); both ready "
                    f"{fmt(two['all_ready']['median'], 1)} s after spawn |")
        if two.get("cpu", {}).get("median") is not None:
            rows.append(f"| 2 | corridor, 2 workers: CPU per event (both workers) | "
                        f"{fmt(two['cpu']['median'])} µs | {span(two['cpu'])} | |")
        rows.append(f"| 2 | corridor, 2 workers: peak RSS (larger worker) | {fmt(two['rss']['median'])}"
                    f" MiB | {span(two['rss'])} | |")
        rows += figures_row("2", "corridor, 2 workers", sec["2w"].get("runs"))
    elif "error" in sec.get("2w", {}):
        rows.append(f"| 2 | corridor, 2 workers | failed | | {cell(sec['2w']['error'])} |")
    two0 = sec.get("2w0", {}).get("stats")
    if two0:
        ratio = two0["eps"]["median"] / one["eps"]["median"] if one else None
        rows.append(f"| 2 | corridor, 2 workers without standbys: events/s | **{fmt(two0['eps']['median'])}**"
                    f" | {span(two0['eps'])} | **{fmt(ratio, 2)}×** 1 worker; "
                    f"`CORRIDOR_STANDBY_REPLICAS=0`: the same work per event as 1 worker, which has no "
                    f"peer to stand by for; CPU {fmt(two0['cpu']['median'])} µs/event (both), peak RSS "
                    f"{fmt(two0['rss']['median'])} MiB |")
        rows += figures_row("2", "corridor, 2 workers without standbys", sec["2w0"].get("runs"))
    elif "error" in sec.get("2w0", {}):
        rows.append(f"| 2 | corridor, 2 workers without standbys | failed | | {cell(sec['2w0']['error'])} |")
    if floor:
        ratio = one["eps"]["median"] / floor["plain"]["median"] if one else None
        rows.append(f"| 3 | floor: aiokafka + `Engine`, orjson: events/s | **{fmt(floor['plain']['median'])}**"
                    f" | {span(floor['plain'])} | corridor 1 worker = **{fmt(100 * ratio if ratio else None, 1)}%**"
                    f" of it (target ≥ 10%); peak RSS {fmt(floor['rss']['median'])} MiB |")
        if floor.get("cpu_plain", {}).get("median") is not None:
            times = (one["cpu"]["median"] / floor["cpu_plain"]["median"]
                     if one and one.get("cpu", {}).get("median") else None)
            rows.append(f"| 3 | floor: CPU per event | {fmt(floor['cpu_plain']['median'], 1)} µs | "
                        f"{span(floor['cpu_plain'], 1)} | corridor uses {fmt(times)}× the floor's CPU per "
                        f"event; with the decoder {fmt(floor['cpu_validate']['median'], 1)} µs |")
        rows.append(f"| 3 | floor + corridor's contract decoder: events/s | {fmt(floor['validate']['median'])}"
                    f" | {span(floor['validate'])} | JSON Schema (jsonschema-rs) + timestamp + key checks |")
    elif "error" in sec.get("floor", {}):
        rows.append(f"| 3 | floor | failed | | {cell(sec['floor']['error'])} |")
    qx = sec.get("quix", {}).get("stats")
    if qx:
        ratio = one["eps"]["median"] / qx["eps"]["median"] if one else None
        rows.append(f"| 3 | Quix Streams, tuned, same job (benchmarks/quix.py): events/s | "
                    f"**{fmt(qx['eps']['median'])}** | {span(qx['eps'])} | corridor 1 worker = "
                    f"**{fmt(ratio, 2)}×** it (target ≥ 1.5×); {fmt(qx['cpu']['median'])} µs CPU/event, "
                    f"peak RSS {fmt(qx['rss']['median'])} MiB, delivered {fmt(qx['delivered']['median'])}; "
                    f"no schema validation, dead letters, metrics or expiry |")
        rows += figures_row("3", "Quix Streams", sec["quix"].get("runs"))
    elif "error" in sec.get("quix", {}):
        rows.append(f"| 3 | Quix Streams | failed | | {cell(sec['quix']['error'])} |")
    for name, label, target in (
            ("bytewax", "Bytewax 0.21, durable (recovery on, SQLite snapshot every 1 s)", " (target ≥ 1.0×)"),
            ("bytewax-mem", "Bytewax 0.21, state in memory (no recovery)", "")):
        bw = sec.get(name, {}).get("stats")
        if bw:
            ratio = one["eps"]["median"] / bw["eps"]["median"] if one else None
            rows.append(f"| 3 | {label}, same job (benchmarks/bytewax_job.py): events/s | "
                        f"**{fmt(bw['eps']['median'])}** | {span(bw['eps'])} | corridor 1 worker = "
                        f"**{fmt(ratio, 2)}×** it{target}; {fmt(bw['cpu']['median'])} µs CPU/event, "
                        f"peak RSS {fmt(bw['rss']['median'])} MiB, delivered "
                        f"{fmt(bw['delivered']['median'])}; one worker, epoch 1 s; no schema "
                        f"validation, dead letters, metrics or expiry |")
            rows += figures_row("3", label.split(" (")[0], sec[name].get("runs"))
        elif "error" in sec.get(name, {}):
            rows.append(f"| 3 | {label} | failed | | {cell(sec[name]['error'])} |")
    lat = sec.get("latency", {}).get("result")
    if lat:
        p99 = sec["latency"].get("p99")
        runs = (f"p99 {fmt(p99['min'] * 1000)}–{fmt(p99['max'] * 1000)} ms over {len(p99['values'])} runs"
                if p99 else "1 run")
        rows.append(f"| 4 | event-to-metric latency p50 / p99 (medians) | **{fmt(lat['p50_s'] * 1000)} / "
                    f"{fmt(lat['p99_s'] * 1000)} ms** | {runs} | at {fmt(lat['achieved_rate'])} ev/s "
                    f"(half the 1-worker median) for {fmt(lat['events'])} events; max "
                    f"{fmt(lat['max_s'] * 1000)} ms; lower bounds {fmt(lat['p50_lower_s'] * 1000)} / "
                    f"{fmt(lat['p99_lower_s'] * 1000)} ms; scrape every {fmt(lat['scrape_interval_s'] * 1000)}"
                    f" ms, {fmt(lat['scrape_p50_s'] * 1000, 1)} ms each (target p99 < 1 s) |")
    elif "error" in sec.get("latency", {}):
        rows.append(f"| 4 | latency | failed | | {cell(sec['latency']['error'])} |")
    rdb = sec.get("rocksdb", {})
    if rdb.get("stats"):
        st = rdb["stats"]
        note = ("the worker as it is crashes with rocksdb:// (" + cell(rdb["unpatched"], 400) +
                "); measured with the proposed fix applied at run time (benchmarks/worker_shim.py)"
                ) if rdb.get("shim") else "the worker as it is"
        rows.append(f"| 6 | RocksDB store, 1 worker: events/s | **{fmt(st['eps']['median'])}** | "
                    f"{span(st['eps'])} | {note} |")
        rows.append(f"| 6 | RocksDB store, 1 worker: peak RSS | {fmt(st['rss']['median'])} MiB | "
                    f"{span(st['rss'])} | delivered {fmt(st['delivered']['median'])}"
                    + (f"; worker CPU {fmt(st['cpu']['median'])} µs/event"
                       if st.get("cpu", {}).get("median") is not None else "") + " |")
        rows += figures_row("6", "RocksDB store, 1 worker", rdb.get("runs"))
    elif rdb:
        rows.append(f"| 6 | RocksDB store | not run | | {cell(rdb.get('error', ''))} |")
    scale = sec.get("scaling", {})
    if scale.get("results") or scale.get("error"):
        rows += ["", "Scaling (section 5; one worker, memory store, one run per size):", "",
                 "| open shipments | build events/s | probe events/s | probe CPU per event | "
                 "RSS per open shipment | RSS after build | /metrics scrape (median of 5) | "
                 "open shipments in /metrics |",
                 "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in scale.get("results", []):
            rows.append(f"| {r['open_shipments']:,} | {fmt(r['build_events_per_s'])} | "
                        f"{fmt(r['probe_events_per_s'])} ({r['probe_events']:,} events) | "
                        f"{fmt(r.get('probe_cpu_us_per_event'))} µs | "
                        f"{fmt(r['rss_per_shipment_bytes'])} B | {fmt(r['rss_built_mib'])} MiB | "
                        f"{fmt(r['scrape_median_s'] * 1000)} ms | {fmt(r['open_in_metrics'])} |")
        for n, err in scale.get("errors", {}).items():
            rows.append(f"| {int(n):,} | failed | | | | | | {cell(err)} |")
        if scale.get("note"):
            rows += ["", scale["note"]]
    checked = figures_count(res)
    if checked[1]:
        rows += ["", f"Figures check: **{checked[0]} of {checked[1]} runs exact** (corridor and the peer "
                 f"ports): each run's final delivered, on-time and transit-seconds (sum) series per "
                 f"corridor and service level, summed over workers, against an independent count of "
                 f"the workload (benchmarks/oracle.py, no streams.domain)."]
    m = res["machine"]
    rows += ["", f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_gib']} GiB, Python {m['python']}, "
             f"Linux {m['kernel']}; {', '.join(f'{k} {v}' for k, v in res['versions'].items() if v)}; "
             f"commit {res['git']}; {m['date']}; total {fmt(res['total_seconds'] / 60, 1)} min. "
             f"Load average before/after: {fmt(res['load_before'], 1)} / {fmt(res['load_after'], 1)}"
             f"{' — ' + a['note'] if a.get('note') else ''}."]
    return "\n".join(rows)


FIGURE_SECTIONS = ("1w", "2w", "2w0", "rocksdb", "quix", "bytewax", "bytewax-mem")


def figures_row(num: str, label: str, runs) -> list[str]:
    """The table row of a section's figures check ([] for results measured before the check)."""
    runs = [r for r in runs or () if "figures_exact" in r]
    if not runs:
        return []
    exact = sum(r["figures_exact"] for r in runs)
    bad = next((r for r in runs if not r["figures_exact"]), None)
    note = ("delivered, on time and transit seconds (sum) per corridor and service level = the "
            "independent count (benchmarks/oracle.py)" if bad is None else
            f"{len(bad['figures_mismatch'])} series differ in a run, e.g. "
            + cell("; ".join(bad["figures_mismatch"][:3]), 400))
    verdict = f"**{exact} of {len(runs)} runs exact**" if exact == len(runs) else \
        f"**{exact} of {len(runs)} runs exact** ⚠"
    return [f"| {num} | {label}: figures vs an independent count | {verdict} | | {note} |"]


def figures_count(res: dict) -> tuple[int, int]:
    """(exact runs, checked runs) over the corridor sections and the peer ports."""
    runs = [r for name in FIGURE_SECTIONS for r in res["sections"].get(name, {}).get("runs") or ()
            if isinstance(r, dict) and "figures_exact" in r]
    return sum(r["figures_exact"] for r in runs), len(runs)


def _delivered_note(res: dict, one: dict) -> str:
    floor = res["sections"].get("floor", {}).get("stats")
    if not floor:
        return "sanity figure"
    ref = floor["delivered"]
    lo = one["delivered"]["min"]
    if lo >= ref * 0.995:
        return f"the floor's Engine: {ref:,.0f}; every run complete"
    return (f"the floor's Engine: {ref:,.0f}; **{sum(1 for v in one['delivered']['values'] if v < ref * 0.995)}"
            f" of {len(one['delivered']['values'])} runs short**: order joins lost (see docs/performance.md)")


def stats_of(runs: list[dict]) -> dict:
    return {"eps": spread([r["events_per_s"] for r in runs]),
            "cold": spread([r["cold_events_per_s"] for r in runs]),
            "ready": spread([r["start_to_ready_s"] for r in runs]),
            "all_ready": spread([r["all_ready_s"] for r in runs]),
            "rss": spread([r["peak_rss_mib"] for r in runs]),
            "delivered": spread([r["delivered"] for r in runs]),
            "figures_exact": sum(bool(r.get("figures_exact")) for r in runs),
            "cpu": spread([r.get("cpu_us_per_event") for r in runs]),
            "writes": spread([sum(r["changelog_records"].values()) / r["events"]
                              if r.get("changelog_records") else None for r in runs])}


def peer_stats(runs: list[dict]) -> dict:
    """Medians of a peer port's runs (quix, bytewax, bytewax-mem)."""
    return {k: spread([r[f] for r in runs]) for k, f in (
        ("eps", "events_per_s"), ("cpu", "cpu_us_per_event"), ("rss", "peak_rss_mib"),
        ("delivered", "delivered"))}


def update_doc(text: str, begin: str, end: str, body: str) -> str:
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        a, b = text.index(begin), text.index(end) + len(end)
        return text[:a] + block + text[b:]
    return text.rstrip() + "\n\n" + block + "\n"


def write_doc(res: dict, text: str) -> None:
    """Put the table (and the profile summary, if measured) between their markers in the doc."""
    sec = res["sections"]
    doc = DOC.read_text() if DOC.exists() else "# Performance\n"
    doc = update_doc(doc, BEGIN, END, text)
    if "profile" in sec and sec["profile"].get("markdown"):
        raw = Path(sec["profile"].get("raw", ""))
        if raw.is_file():     # re-summarised, so a newer summary format applies to an old profile
            sec["profile"]["markdown"] = pyspy_summary.markdown(pyspy_summary.summarise(raw, 15), 15)
        r = sec["profile"]["run"]
        head = (f"One 1-worker run ({r['events']:,} events, {r['events_per_s']:,.0f} events/s "
                f"under the profiler), `py-spy record --idle --threads -r 100 -f raw`, "
                f"{res['machine']['date']}:\n\n")
        doc = update_doc(doc, PBEGIN, PEND, head + sec["profile"]["markdown"])
    DOC.write_text(doc)


# ---- main ----------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--shipments", type=int, default=20000,
                    help="workload size (default 20000 = 277,155 events, as issue 5 asks; 5000 = 69,204)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--latency-seconds", type=float, default=30)
    ap.add_argument("--latency-rate", type=float, default=None,
                    help="events/s for the latency run (default: half the 1-worker median)")
    ap.add_argument("--scale-sizes", default="10000,100000",
                    help="open shipments for section 5 (add 1000000 for the issue's top size)")
    ap.add_argument("--probe", type=int, default=20000, help="probe events per scaling size")
    ap.add_argument("--retention-days", type=float, default=None,
                    help="CORRIDOR_RETENTION_SECONDS for the workers, in days (default: theirs)")
    ap.add_argument("--only", default=None, help=f"comma list of sections: {','.join(SECTIONS)}")
    ap.add_argument("--skip", default="", help="comma list of sections to leave out")
    ap.add_argument("--profile", action="store_true", help="also run the py-spy profile section")
    ap.add_argument("--note", default="", help="free text for the table (e.g. what else ran)")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/performance.md")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--rev", default=None, metavar="GIT_REV",
                    help="measure streams/ as committed at this revision (e.g. HEAD) instead of "
                         "the working tree as it is at start")
    ap.add_argument("--from-results", type=Path, default=None,
                    help="measure nothing: print the table of a results.json (and update the doc)")
    args = ap.parse_args()
    if args.from_results:
        res = json.loads(args.from_results.read_text())
        text = table(res)
        print(text)
        if not args.no_doc:
            write_doc(res, text)
        return 0
    chosen = [s for s in (args.only.split(",") if args.only else SECTIONS)
              if s not in args.skip.split(",") and (s != "profile" or args.profile or args.only)]
    args.worker_env = ({"CORRIDOR_RETENTION_SECONDS": str(args.retention_days * 86400)}
                       if args.retention_days is not None else {})

    t_all = time.perf_counter()
    logdir = Path(tempfile.mkdtemp(prefix="corridor-bench-"))
    # every worker of this session runs the code as it is now, whatever is edited meanwhile
    src = exactness.snapshot(logdir / "src", args.rev)
    res: dict = {"machine": machine(), "versions": package_versions(),
                 "git": git_rev() if args.rev is None else exactness.source_label(args.rev),
                 "args": {k: v for k, v in vars(args).items() if k not in ("results",)},
                 "load_before": loadavg(), "sections": {}}
    res["args"]["results"] = str(args.results)
    events = workload(args.shipments, args.seed)
    res["events"] = len(events)
    log(f"workload: {args.shipments} shipments, {len(events)} events, {args.partitions} partitions; "
        f"sections {','.join(chosen)}; worker logs in {logdir}")
    sec = res["sections"]
    failed = False

    def section(name: str, fn):
        nonlocal failed
        if name not in chosen:
            return
        log(f"section {name}")
        t = time.perf_counter()
        try:
            sec[name] = fn()
        except Exception as exc:   # noqa: BLE001 - recorded, the other sections still run
            failed = True
            sec[name] = {"error": _one_line_error(exc), "traceback": traceback.format_exc()[-4000:]}
            log(f"  FAILED: {sec[name]['error']}")
        sec[name]["seconds"] = time.perf_counter() - t

    def one_worker():
        runs = corridor_runs(events, args, logdir, 1)
        return {"runs": runs, "stats": stats_of(runs)}

    def two_workers():
        runs = corridor_runs(events, args, logdir, 2)
        return {"runs": runs, "stats": stats_of(runs)}

    def two_workers_no_standby():
        runs = corridor_runs(events, args, logdir, 2, env={"CORRIDOR_STANDBY_REPLICAS": "0"})
        return {"runs": runs, "stats": stats_of(runs)}

    def floor():
        out = floor_runs(events, args)
        return {"runs": out, "stats": {
            "plain": spread([r["events_per_s"] for r in out["plain"]]),
            "validate": spread([r["events_per_s"] for r in out["validate"]]),
            "rss": spread([r["peak_rss_mib"] for r in out["plain"]]),
            "cpu_plain": spread([r.get("cpu_us_per_event") for r in out["plain"]]),
            "cpu_validate": spread([r.get("cpu_us_per_event") for r in out["validate"]]),
            "delivered": statistics.median(r["delivered"] for r in out["plain"])}}

    def lat():
        rate = args.latency_rate
        if rate is None:
            one = sec.get("1w", {}).get("stats")
            if not one:
                raise RuntimeError("no 1-worker throughput to halve: run section 1w or pass --latency-rate")
            rate = one["eps"]["median"] / 2
        # each run sends the first rate x seconds events of the workload (all of it if shorter);
        # the tail moves with the machine's load, so the row gives medians over --runs runs
        runs = []
        for i in range(args.runs):
            r = latency.run(events, rate, args.latency_seconds, args.partitions, logdir,
                            env=args.worker_env)
            runs.append(r)
            log(f"  run {i + 1}/{args.runs}: {r['events']} events at {r['achieved_rate']:.0f}/s: "
                f"p50 {r['p50_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms (lower bounds "
                f"{r['p50_lower_s'] * 1000:.0f} / {r['p99_lower_s'] * 1000:.0f} ms)")
        median_run = dict(runs[0], **{k: statistics.median(r[k] for r in runs) for k in (
            "achieved_rate", "p50_s", "p99_s", "max_s", "p50_lower_s", "p99_lower_s",
            "scrape_interval_s", "scrape_p50_s")})
        return {"result": median_run, "runs": runs, "p99": spread([r["p99_s"] for r in runs])}

    def scale():
        out: dict = {"results": [], "errors": {}}
        for n in (int(s) for s in args.scale_sizes.split(",") if s):
            try:
                r = scaling.run(n, args.probe, args.partitions, logdir)
                out["results"].append(r)
                log(f"  {n} open: build {r['build_events_per_s']:.0f} ev/s, probe "
                    f"{r['probe_events_per_s']:.0f} ev/s, {r['rss_per_shipment_bytes']:.0f} B/shipment, "
                    f"/metrics {r['scrape_median_s'] * 1000:.0f} ms")
            except Exception as exc:   # noqa: BLE001
                out["errors"][str(n)] = _one_line_error(exc)
                log(f"  {n}: FAILED {out['errors'][str(n)]}")
        if 1_000_000 not in [int(s) for s in args.scale_sizes.split(",") if s]:
            out["note"] = ("1,000,000 open shipments is left out of the default run for time (the "
                           "build alone takes ~8-10 min at these rates on 2 cores): "
                           "`python benchmarks/run_all.py --only scaling --scale-sizes 1000000`.")
        return out

    def quix_tuned():
        runs = []
        for i in range(args.runs):
            r = quix.one_run(events, args.partitions, True, logdir)
            runs.append(r)
            log(f"  run {i + 1}/{args.runs}: {r['events_per_s']:.0f} ev/s ({r['cpu_us_per_event']:.0f} "
                f"us CPU/event), peak RSS {r['peak_rss_mib']:.0f} MiB, delivered {r['delivered']}")
            log(f"    {pipeline.figures_line(r, 20)}")
        return {"runs": runs, "stats": peer_stats(runs)}

    def bytewax_runs(mode: str):
        runs = []
        for i in range(args.runs):
            r = bytewax_job.one_run(events, args.partitions, mode, logdir)
            runs.append(r)
            log(f"  run {i + 1}/{args.runs}: {r['events_per_s']:.0f} ev/s ({r['cpu_us_per_event']:.0f} "
                f"us CPU/event; done after {r['seconds']:.1f} s, dataflow returned after {r['returned_s']:.1f} s),"
                f" peak RSS {r['peak_rss_mib']:.0f} MiB, delivered {r['delivered']}, "
                f"load {r['loadavg_before']:.1f}")
            log(f"    {pipeline.figures_line(r, 20)}")
        return {"runs": runs, "stats": peer_stats(runs)}

    section("1w", one_worker)
    section("floor", floor)
    section("quix", quix_tuned)
    section("bytewax", lambda: bytewax_runs("durable"))
    section("bytewax-mem", lambda: bytewax_runs("memory"))
    section("2w", two_workers)
    section("2w0", two_workers_no_standby)
    section("latency", lat)
    section("scaling", scale)
    section("rocksdb", lambda: (lambda o: {**o, "stats": stats_of(o["runs"])} if o.get("runs") else o)(
        rocksdb_runs(events, args, logdir)))
    section("profile", lambda: profile_run(events, args, logdir))

    res["load_after"] = loadavg()
    res["total_seconds"] = time.perf_counter() - t_all
    text = table(res)
    res["table_markdown"] = text
    args.results.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print()
    print(text)
    if "profile" in sec and sec["profile"].get("markdown"):
        print()
        print(sec["profile"]["markdown"])
    exact, checked = figures_count(res)
    if checked:
        log(f"figures: {exact} of {checked} runs exact (corridor and the peer ports, against an "
            f"independent count of the workload)")
        if exact < checked:
            failed = True       # a run whose figures differ is a failed run, not a slower one
            log("FIGURES DIFFER: see the 'figures vs an independent count' rows")
    if not args.no_doc:
        write_doc(res, text)
        log(f"wrote {args.results.relative_to(ROOT) if args.results.is_relative_to(ROOT) else args.results}"
            f" and {DOC.relative_to(ROOT)}")
    if not failed:
        shutil.rmtree(logdir, ignore_errors=True)
    else:
        shutil.rmtree(src, ignore_errors=True)
        log(f"worker logs kept in {logdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
