"""Shared pieces of the exactness tools (replay_race.py, chaos.py, the figures check of pipeline.py):
when a worker group has finished, what its figures are, what they should be, and how they differ.

"Finished" is read from the broker, not from the workers: the group's committed offset equals the
end offset (high watermark, from a fetch: Tansu's ListOffsets is wrong, docs/broker.md) of every
partition of every input topic and of both internal join topics. Faust flushes its producer before
it commits, so once that holds nothing is in flight. The figures are then read from the workers'
/metrics, summed over workers and over the `partition` label, and must stay unchanged for a quiet
period: a worker that is rebalancing or recovering exports no totals, so a single scrape can be
short for a moment without anything being lost.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import common
from common import ROOT, GroupProgress  # noqa: F401  (sys.path set up by common)
from prometheus_client.parser import text_string_to_metric_families

#: The table-derived counter and histogram series compared by the tools (gauges depend on "now").
COUNTER_SERIES = ("corridor_shipments_delivered_total", "corridor_shipment_exceptions_total",
                  "corridor_shipment_transit_seconds_count", "corridor_shipment_transit_seconds_sum",
                  "corridor_stage_dwell_seconds_count", "corridor_stage_dwell_seconds_sum")
DELIVERED = "corridor_shipments_delivered_total"


class Settled(GroupProgress):
    """GroupProgress, with the end offsets of the inputs also read from fetches (the producers of
    the inputs batch too), and the lag per topic for the progress lines."""

    def lag(self) -> dict[str, int]:
        """{topic: end offset - committed offset, summed over partitions} for every input and
        internal topic; all zero once the group has processed and committed everything."""
        tps = self.inputs + self.internal
        end = self.end_offsets(tps)
        out: dict[str, int] = {}
        for tp in tps:
            committed = self.consumer.committed(tp) or 0
            out[tp.topic] = out.get(tp.topic, 0) + max(0, end[tp] - committed)
        return out

    def ends(self) -> dict[str, int]:
        """{topic: records} of the inputs and internal topics."""
        out: dict[str, int] = {}
        for tp, n in self.end_offsets(self.inputs + self.internal).items():
            out[tp.topic] = out.get(tp.topic, 0) + n
        return out


def scrape(worker, timeout: float = 30.0) -> list[tuple[str, dict, float]] | None:
    """Every sample of one /metrics scrape as (name, labels, value), or None when the worker does
    not answer 200 (down, or not serving)."""
    try:
        with urllib.request.urlopen(worker.base + "/metrics", timeout=timeout) as resp:
            if resp.status != 200:
                return None
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return None
    return [(s.name, dict(s.labels), s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples]


def health(worker, timeout: float = 5.0) -> int | None:
    """The HTTP status of /health (any answer), None when nothing answers."""
    try:
        with urllib.request.urlopen(worker.base + "/health", timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def series(scrapes, names=COUNTER_SERIES) -> dict[tuple[str, frozenset], float]:
    """{(name, labels without `partition`): value} summed over the given scrapes (workers)."""
    out: dict = {}
    for samples in scrapes:
        for name, labels, value in samples or ():
            if name in names:
                key = (name, frozenset((k, v) for k, v in labels.items() if k != "partition"))
                out[key] = out.get(key, 0.0) + value
    return out


def by_label(samples, name: str, label: str) -> dict[str, float]:
    """{label value: summed value} of one family, e.g. rejected by reason."""
    out: dict[str, float] = {}
    for n, labels, value in samples or ():
        if n == name:
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + value
    return out


def total(series_: dict, name: str = DELIVERED) -> float:
    return sum(v for (n, _), v in series_.items() if n == name)


def diff(expected: dict, got: dict, names=COUNTER_SERIES) -> list[tuple]:
    """[(name, labels dict, expected, got)] of the series that differ; sums (integer seconds in
    these workloads, exact in a double) to 1e-9 relative against summation order."""
    out = []
    for key in set(expected) | set(got):
        if key[0] not in names:
            continue
        a, b = expected.get(key, 0.0), got.get(key, 0.0)
        if key[0].endswith("_sum"):
            same = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
        else:
            same = a == b
        if not same:
            out.append((key[0], dict(sorted(key[1])), a, b))
    return sorted(out, key=lambda d: (d[0], sorted(d[1].items())))


def format_diff(rows, limit: int | None = None) -> str:
    lines = []
    for name, labels, a, b in rows[:limit] if limit else rows:
        short = name.replace("corridor_", "")
        lab = ",".join(f"{k}={v}" for k, v in labels.items())
        lines.append(f"    {short}{{{lab}}}: expected {a:,.0f}, got {b:,.0f} ({b - a:+,.0f})")
    if limit and len(rows) > limit:
        lines.append(f"    ... and {len(rows) - limit} more")
    return "\n".join(lines)


def snapshot(dest: Path, rev: str | None = None) -> Path:
    """Make every process started from now on run a copy of streams/ and schemas/: the working
    tree as it is now (rev None), or a git revision (`HEAD`, a commit): other people edit streams/
    while the tools run, and a half-made edit would otherwise crash the workers mid-trial."""
    if rev is None:
        return common.snapshot_source(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "streams", "schemas"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    common.SRC = dest
    os.environ["CORRIDOR_BENCH_SRC"] = str(dest)
    return dest


def source_label(rev: str | None) -> str:
    if rev is None:
        return f"the working tree as of now ({common.git_rev()})"
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    return f"git {rev} ({sha})"


def engine_series(messages, topics: dict[str, str], detail: dict | None = None) -> dict:
    """COUNTER_SERIES as streams.domain.engine.Engine gives them for (topic, key, value) messages
    fed in order (invalid messages must be left out by the caller). Computed by
    benchmarks/engine_series.py in a child process that imports the code under test (common.SRC),
    not whatever this process imported. `detail`, if given, receives the Engine's late and
    duplicate counts and its per-shipment timelines ("shipments": {id: {ids, stages, late}})."""
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as fh:
        import orjson
        for topic, key, value in messages:
            fh.write(orjson.dumps([topic, value.decode()]) + b"\n")
        path = fh.name
    try:
        env = dict(os.environ, PYTHONPATH=str(common.SRC))
        proc = subprocess.run([sys.executable, str(Path(__file__).with_name("engine_series.py")),
                               path, json.dumps(topics)], cwd=common.SRC, env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise RuntimeError(f"engine_series.py failed: {proc.stderr.strip()[-1500:]}")
    doc = json.loads(proc.stdout)
    if detail is not None:
        detail.update({k: v for k, v in doc.items() if k != "series"})
    return {(name, frozenset(labels.items())): value for name, labels, value in doc["series"]}


class Waited:
    """What wait_settled saw: settled or not, when, the last figures and lag."""

    def __init__(self):
        self.settled = False
        self.seconds = 0.0            # from the start of the wait to the last change of the figures
        self.caught_up_at: float | None = None
        self.figures: dict = {}
        self.scrapes: list = []
        self.lag: dict = {}
        self.note = ""


def wait_settled(workers, group: Settled, *, key=lambda fig: fig, quiet: float = 15.0,
                 deadline: float = 240.0, interval: float = 2.0, check=None) -> Waited:
    """Poll until the group has committed everything (`group.lag()` all zero) and `key(figures)`
    has not changed for `quiet` seconds while every worker answered its scrape.

    `workers` is a callable giving the workers to scrape (the live ones); `check`, if given, is
    called every round and may raise to stop the wait (a worker that died). Never raises on a
    deadline: the caller reports what was reached.
    """
    w = Waited()
    t0 = time.monotonic()
    last_key, last_change = object(), t0
    while True:
        now = time.monotonic()
        if check is not None:
            check()
        try:
            w.lag = group.lag()
        except Exception as exc:    # noqa: BLE001 - a broker hiccup: try again next round
            w.lag, w.note = {"?": -1}, f"lag unreadable: {exc}"
        caught_up = bool(w.lag) and all(v == 0 for v in w.lag.values())
        if caught_up and w.caught_up_at is None:
            w.caught_up_at = now - t0
        elif not caught_up:
            w.caught_up_at = None
        live = list(workers())
        scrapes = [scrape(x) for x in live]
        complete = all(s is not None for s in scrapes)
        figures = series(s for s in scrapes if s is not None)
        k = key(figures) if complete else None
        if k != last_key:
            last_key, last_change = k, now
        if complete:
            w.figures, w.scrapes = figures, scrapes
            w.seconds = last_change - t0
        if caught_up and complete and now - last_change >= quiet:
            w.settled = True
            return w
        if now - t0 > deadline:
            w.note = (("figures still changing" if caught_up else "group not caught up")
                      + ("" if complete else "; a worker did not answer /metrics"))
            return w
        time.sleep(max(0.0, interval - (time.monotonic() - now)))


def read_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30.0) -> list:
    """Every record of a topic, all partitions, from the beginning to the high watermark."""
    from kafka import KafkaConsumer, TopicPartition
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             fetch_max_wait_ms=50)
    out = []
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
            hw = {tp: consumer.highwater(tp) for tp in tps}
            if all(h is not None and consumer.position(tp) >= h for tp, h in hw.items()):
                return out
        raise RuntimeError(f"could not read {topic} to its end within {timeout:.0f} s "
                           f"({len(out)} records read)")
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
