"""Real processes for end-to-end tests: the embedded broker, `corridor worker` processes, a producer.

Workers are started as `python -m streams worker` child processes, talked to over HTTP, and polled
with deadlines (never fixed sleeps).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(fn, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Call fn until it returns a truthy value; raise AssertionError with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s; last value: {last!r}")


class Worker:
    """One `corridor worker` process with its own web port and log file."""

    def __init__(self, broker_url: str, app_id: str, log_dir: Path, *, name: str = "w",
                 env: dict | None = None, args: tuple[str, ...] = ()):
        self.port = free_port()
        self.name = name
        self.log_path = log_dir / f"{app_id}-{name}-{self.port}.log"
        self.env = dict(os.environ, CORRIDOR_BROKER=broker_url, CORRIDOR_PROFILE="embedded",
                        CORRIDOR_APP_ID=app_id, CORRIDOR_WEB_PORT=str(self.port),
                        CORRIDOR_WEB_HOST="127.0.0.1", CORRIDOR_DATA_DIR=str(log_dir / f"data-{name}"),
                        PYTHONUNBUFFERED="1",
                        # A scenario's end is final 2 s after its last event, not 30 s.
                        **{"CORRIDOR_IDLE_SECONDS": "2", **(env or {})})
        self.args = args
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout: float = 60.0) -> "Worker":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams", "worker", *self.args],
                                     env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        poll(self.ready, ready_timeout, 0.2, f"worker {self.name} ready (log {self.log_path})")
        return self

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n"
                                 + self.log_tail())
        status, _ = self.get("/health")
        return status == 200

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str) -> tuple[int | None, object]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                body = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as err:
            body, status = err.read().decode(), err.code
        except OSError:
            return None, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def metrics(self, raw: bool = False) -> dict[tuple, float]:
        """{(sample name, frozenset(labels)): value} of one scrape.

        Unless `raw`, the table-derived corridor series are summed over their `partition` label
        (what `sum by (corridor, ...)` gives), so tests compare corridor figures.
        """
        status, text = self.get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out if raw else merge_partitions(out)

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def pending_final(workers) -> float:
    """Ended shipments whose figures are not final yet, over the workers (None scrapes count 1)."""
    total = 0.0
    for w in workers:
        status, text = w.get("/metrics")
        if status != 200:
            return 1.0
        for fam in text_string_to_metric_families(text):
            if fam.name == "corridor_shipments_pending_final":
                total += sum(s.value for s in fam.samples)
    return total


def wait_final(workers, timeout: float = 60.0) -> None:
    """Wait until every ended shipment's figures are final: with CORRIDOR_IDLE_SECONDS=2 (the
    harness default) the workers settle 2 s after the last event."""
    poll(lambda: pending_final(workers) == 0, timeout, 0.2, "every ended shipment final")


PER_PARTITION_OPS = ("corridor_consumer_lag", "corridor_consumer_end_offset")


def merge_partitions(metrics: dict) -> dict:
    """Sum corridor series over their `partition` label (offset gauges keep theirs)."""
    out: dict = {}
    for (name, labels), v in metrics.items():
        if name not in PER_PARTITION_OPS and any(k == "partition" for k, _ in labels):
            labels = frozenset((k, x) for k, x in labels if k != "partition")
        out[(name, labels)] = out.get((name, labels), 0.0) + v
    return out


def sample(metrics: dict, name: str, **labels) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


def series(metrics: dict, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in metrics.items() if n == name}


def unique_app_id(prefix: str = "corridor-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


TOPICS = {"orders": "orders", "shipments": "shipments", "customs": "customs-events"}


def produce(bootstrap: str, items, topics: dict = TOPICS) -> int:
    """Publish (kind, event dict | raw bytes[, key]) items in order; returns how many were sent."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
    n = 0
    try:
        for item in items:
            kind, value = item[0], item[1]
            if isinstance(value, (bytes, bytearray)):
                key = item[2]
            else:
                key = value.get("shipment_id") or value.get("order_id")
                value = orjson.dumps(value)
            producer.send(topics[kind], key=key.encode() if isinstance(key, str) else key, value=value)
            n += 1
        producer.flush(30)
    finally:
        producer.close(5)
    return n


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list:
    """Read `expected` records from the start of a topic (all partitions)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=1000)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
    finally:
        consumer.close()
    return out
