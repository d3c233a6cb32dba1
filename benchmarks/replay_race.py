"""Replay race: `corridor replay` of the Olist export started while the only worker is still
starting, then the worker's delivered figures against `corridor report` on the same files.

Per trial: a fresh embedded broker (new cluster id), a fresh app id, ONE `corridor worker`
(CORRIDOR_PROFILE=embedded, as tests/e2e/harness.Worker starts it). As soon as its web port
answers HTTP at all (/health still 503: not in the group, or recovering), `corridor replay
--input-format csv-orders --mapping streams/feeds/mappings/olist.toml /work/shared/data/olist-10k` is run
against that broker. Then the tool waits until the figures are final: the group has committed the
end offset of every partition of the input and internal join topics (read from the broker), and
the worker's delivered total has not changed for --quiet seconds (default 15).

Exact = every `corridor_shipments_delivered_total{corridor,service_level,on_time}` series of the
worker (summed over its `partition` label) equals the one `corridor report --format json` computes
from the same files (so the total too; 9,648 deliveries today). Also printed per trial:
`corridor_state_expired_total` by table, rejected counts (worker by reason, replay by reason), how
many other counter/histogram series (exceptions, transit, dwell) differ, and when not exact the
per-corridor delivered / on-time mismatches.

Workers, replay and report run a snapshot of streams/ taken at start (edits made meanwhile do not
change the code under test half-way): the working tree, or with --rev a git revision. Exit status
1 if any trial is not exact.

    python benchmarks/replay_race.py [--trials 10] [--deadline 240] [--quiet 15] [--rev HEAD]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import BenchWorker, ROOT, unique_app_id  # noqa: E402
from exactness import (COUNTER_SERIES, DELIVERED, Settled, by_label, diff, format_diff,  # noqa: E402
                       health, snapshot, source_label, total, wait_settled)
from streams.broker.embedded import EmbeddedBroker  # noqa: E402

OLIST = Path("/work/shared/data/olist-10k")
if not OLIST.is_dir():
    OLIST = (ROOT / ".." / "shared" / "data" / "olist-10k").resolve()
MAPPING_REL = Path("streams") / "feeds" / "mappings" / "olist.toml"


def run_cli(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m streams ARGS` on the snapshot (or the repository)."""
    env = dict(__import__("os").environ, PYTHONPATH=str(common.SRC))
    return subprocess.run([sys.executable, "-m", "streams", *args], cwd=common.SRC, env=env,
                          capture_output=True, text=True, timeout=timeout)


def expected_report(tmp: Path) -> dict:
    out = tmp / "report.json"
    proc = run_cli(["report", "--input-format", "csv-orders", "--mapping",
                    str(common.SRC / MAPPING_REL), str(OLIST), "--format", "json", "-o", str(out)])
    if proc.returncode != 0:
        raise SystemExit(f"corridor report failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(out.read_text())


def report_series(doc: dict) -> dict:
    return {(m["name"], frozenset(m["labels"].items())): float(m["value"]) for m in doc["metrics"]
            if m["name"] in COUNTER_SERIES}


_REJ = re.compile(r"rejected \(([^)]*)\)")


def replay_rejects(line: str) -> dict[str, int]:
    m = _REJ.search(line)
    if not m:
        return {}
    out = {}
    for part in m.group(1).split(","):
        reason, _, n = part.strip().rpartition(" ")
        out[reason] = int(n.replace(",", ""))
    return out


def per_corridor(series_: dict) -> dict[str, tuple[float, float]]:
    """{corridor: (delivered, on time)} of the delivered series."""
    out: dict[str, list] = {}
    for (name, labels), v in series_.items():
        if name != DELIVERED:
            continue
        lab = dict(labels)
        row = out.setdefault(lab["corridor"], [0.0, 0.0])
        row[0] += v
        if lab["on_time"] == "true":
            row[1] += v
    return {c: (a, b) for c, (a, b) in out.items()}


def fmt_counts(d: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:,.0f}" for k, v in sorted(d.items())) + "}"


def one_trial(i: int, args, expected: dict, logdir: Path, tmp: Path) -> dict:
    res = {"trial": i, "exact": False, "error": None}
    broker = EmbeddedBroker(port=0).start()
    app_id = unique_app_id("race")
    w = BenchWorker(broker.url, app_id, logdir, name="w0")
    w.env["CORRIDOR_DATA_DIR"] = str(logdir / f"data-{app_id}")
    w.env["CORRIDOR_REGION_CODES"] = ",".join(   # Olist's states, as its mapping declares them
        tomllib.loads((common.SRC / MAPPING_REL).read_text())["region_codes"])
    group = None
    try:
        w.spawn()
        t_spawn = time.monotonic()
        status = None
        while status is None:
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {w.proc.returncode} before its web port "
                                   f"answered: {w.crash() or w.log_tail(15)}")
            if time.monotonic() - t_spawn > 120:
                raise RuntimeError("the worker's web port did not answer within 120 s")
            status = health(w, timeout=1.0)
            if status is None:
                time.sleep(0.02)
        res["http_after_s"] = time.monotonic() - t_spawn
        res["health_at_replay"] = status
        t_replay = time.monotonic()
        proc = run_cli(["replay", "--broker", broker.url, "--format", "csv-orders", "--mapping",
                        str(common.SRC / MAPPING_REL), str(OLIST),
                        "--rejects", str(tmp / f"rejects-{i}.jsonl")])
        line = (proc.stdout.strip().splitlines() or [""])[-1]
        if proc.returncode != 0:
            raise RuntimeError(f"corridor replay exited with {proc.returncode}: "
                               f"{(proc.stderr or line).strip()[-500:]}")
        res["replay_s"] = time.monotonic() - t_replay
        res["replay_rejected"] = replay_rejects(line)

        def check():
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {w.proc.returncode}: "
                                   f"{w.crash() or w.log_tail(15)}")

        group = Settled(broker.bootstrap, app_id, args.partitions)
        waited = wait_settled(lambda: [w], group, key=total, quiet=args.quiet,
                              deadline=args.deadline, check=check)
        got = waited.figures
        res.update(settled=waited.settled, note=waited.note, lag=waited.lag,
                   seconds=res["replay_s"] + waited.seconds,
                   delivered=total(got), expected=total(expected))
        samples = waited.scrapes[0] if waited.scrapes else []
        res["expired"] = by_label(samples, "corridor_state_expired_total", "table")
        res["worker_rejected"] = by_label(samples, "corridor_events_rejected_total", "reason")
        delivered_diff = diff(expected, got, (DELIVERED,))
        res["other_diff"] = diff(expected, got, tuple(n for n in COUNTER_SERIES if n != DELIVERED))
        res["exact"] = not delivered_diff and waited.settled
        if delivered_diff:
            want, have = per_corridor(expected), per_corridor(got)
            res["corridors"] = [
                f"    {c}: expected {want.get(c, (0, 0))[0]:,.0f} delivered ({want.get(c, (0, 0))[1]:,.0f}"
                f" on time), got {have.get(c, (0, 0))[0]:,.0f} ({have.get(c, (0, 0))[1]:,.0f} on time)"
                for c in sorted(set(want) | set(have)) if want.get(c) != have.get(c)]
    except Exception as exc:    # noqa: BLE001 - the trial failed; the error is the result
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if group is not None:
            group.close()
        w.kill()
        broker.stop()
    res["log"] = str(w.log_path)
    return res


def print_trial(r: dict, n: int) -> None:
    head = f"trial {r['trial']}/{n}:"
    if r.get("error"):
        print(f"{head} FAILED: {r['error']} (log {r['log']})", flush=True)
        return
    verdict = "EXACT" if r["exact"] else "NOT EXACT"
    settled = "" if r["settled"] else f" (NOT SETTLED within the deadline: {r['note']}; lag {r['lag']})"
    print(f"{head} delivered {r['delivered']:,.0f} expected {r['expected']:,.0f} {verdict}{settled}; "
          f"{r['seconds']:.1f} s from the replay's start to the final figures (replay "
          f"{r['replay_s']:.1f} s; started {r['http_after_s']:.1f} s after spawn, /health answered "
          f"{r['health_at_replay']}); expired by table {fmt_counts(r['expired'])}; rejected: worker "
          f"{fmt_counts(r['worker_rejected'])}, replay {fmt_counts(r['replay_rejected'])}; other "
          f"counter/histogram series differing: {len(r['other_diff'])}", flush=True)
    if r.get("corridors"):
        print(f"  per-corridor delivered mismatches ({len(r['corridors'])} corridors):", flush=True)
        print("\n".join(r["corridors"]), flush=True)
    if r["other_diff"] and not r["exact"]:
        print("  other series differing (first 10):\n" + format_diff(r["other_diff"], 10), flush=True)
    if not r["exact"]:
        print(f"  worker log: {r['log']}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--deadline", type=float, default=240.0,
                    help="seconds after the replay to wait for final figures (default 240)")
    ap.add_argument("--quiet", type=float, default=15.0,
                    help="seconds the delivered total must stay unchanged (default 15)")
    ap.add_argument("--rev", default=None, metavar="GIT_REV",
                    help="run streams/ as committed at this revision (e.g. HEAD) instead of the "
                         "working tree as it is at start")
    args = ap.parse_args()
    logdir = Path(tempfile.mkdtemp(prefix="corridor-race-"))
    snapshot(logdir / "src", args.rev)
    print(f"code under test: streams/ of {source_label(args.rev)}", flush=True)
    doc = expected_report(logdir)
    expected = report_series(doc)
    print(f"corridor report on {OLIST}: {total(expected):,.0f} deliveries expected "
          f"({doc['input']['events']:,} events, rejected {fmt_counts(doc['input']['rejected'])}); "
          f"{args.trials} trials; logs in {logdir}", flush=True)
    results = []
    for i in range(1, args.trials + 1):
        r = one_trial(i, args, expected, logdir, logdir)
        results.append(r)
        print_trial(r, args.trials)
    exact = sum(r["exact"] for r in results)
    print(f"{len(results)} trials, {exact} exact", flush=True)
    if exact == len(results):
        shutil.rmtree(logdir, ignore_errors=True)
        return 0
    print(f"logs kept in {logdir}", flush=True)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
