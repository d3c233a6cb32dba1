"""The embedded broker launcher against the real Tansu binary, and the simulator publishing to it.

Each test starts its own broker on a free port (~0.15 s) and kills it; the whole file runs in a few seconds.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from streams.broker import embedded as broker_mod
from streams.tools import simulate
from streams.broker.embedded import BrokerError, EmbeddedBroker, create_topics
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (our brokers carry their unique cluster id)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def consume(bootstrap: str, topics: list[str], expected: int, timeout: float = 10.0) -> list:
    consumer = KafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
    finally:
        consumer.close()
    return out


@pytest.fixture
def broker():
    b = EmbeddedBroker(port=0).start()
    yield b
    b.stop()


def test_start_create_topics_produce_consume(broker):
    assert broker.port != 0 and broker.running
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.url == f"kafka://127.0.0.1:{broker.port}"
    assert broker.cluster_id.startswith("corridor-embedded-")

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert admin.describe_cluster()["cluster_id"] == broker.cluster_id
        create_topics(broker.bootstrap, {"t-plain": 3, "t-compact": 2}, compact={"t-compact"})
        create_topics([broker.url], {"t-plain": 3})  # idempotent; a kafka:// URL is accepted too
        partitions = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(["t-plain", "t-compact"])}
        assert partitions == {"t-plain": 3, "t-compact": 2}
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, enable_idempotence=False)
    try:
        producer.send("t-plain", key=b"SHP-1", value=b'{"n": 1}').get(timeout=10)
    finally:
        producer.close()
    [record] = consume(broker.bootstrap, ["t-plain"], 1)
    assert (record.key, record.value) == (b"SHP-1", b'{"n": 1}')


def test_a_second_broker_on_the_same_port_is_refused(broker):
    with pytest.raises(BrokerError) as err:
        EmbeddedBroker(port=broker.port).start()
    assert str(err.value) == f"port {broker.port} on 127.0.0.1 is already in use; pick another with --port"
    assert broker.running


def test_a_foreign_listener_is_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port=port).start()


def test_a_listener_that_appears_after_the_port_check_is_detected(monkeypatch):
    """Tansu exits 0 on EADDRINUSE after printing 'ready': readiness must notice the exit, not trust the port."""
    monkeypatch.setattr(broker_mod, "_accepting", lambda host, port, timeout=0.25: False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        b = EmbeddedBroker(port=port)
        with pytest.raises(BrokerError, match=f"exited with status 0 before it was ready on port {port}"):
            b.start(timeout=10)
    assert b.pid is None and not b.running
    assert processes_with(b.cluster_id) == []


def test_stop_leaves_no_process_and_is_idempotent():
    b = EmbeddedBroker(port=0).start()
    pid, cluster_id = b.pid, b.cluster_id
    assert processes_with(cluster_id) == [pid]
    b.stop()
    b.stop()
    assert b.pid is None and not b.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert processes_with(cluster_id) == []


def test_context_manager_and_restart_keep_the_port_with_a_new_cluster():
    with EmbeddedBroker(port=0) as b:
        port, first_id, first_pid = b.port, b.cluster_id, b.pid
        b.restart()
        assert (b.port, b.running) == (port, True)
        assert b.cluster_id != first_id and b.pid != first_pid
        assert processes_with(first_id) == []
        admin = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            assert admin.describe_cluster()["cluster_id"] == b.cluster_id
        finally:
            admin.close()
    assert processes_with(b.cluster_id) == []


def test_corridor_broker_foreground_prints_one_line_and_stops_on_sigterm():
    port = broker_mod._free_port("127.0.0.1")
    code = "import sys; from streams.broker.embedded import run_foreground; sys.exit(run_foreground(%d, '127.0.0.1'))"
    proc = subprocess.Popen([sys.executable, "-c", code % port], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line == (f"corridor: embedded broker (Tansu, memory storage) at kafka://127.0.0.1:{port}"
                        " — Ctrl-C to stop\n")
        # While it runs, the same command on the same port fails with exit status 2 and one line.
        taken = subprocess.run([sys.executable, "-c", code % port], cwd=REPO, capture_output=True, text=True,
                               timeout=20)
        assert taken.returncode == 2
        assert taken.stderr == (f"corridor broker: port {port} on 127.0.0.1 is already in use; "
                                "pick another with --port\n")
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_simulate_run_publishes_exactly_the_requested_histories(broker):
    suffix = uuid.uuid4().hex[:6]
    settings = Settings(broker=broker.url, partitions=2, topic_orders=f"orders-{suffix}",
                        topic_shipments=f"shipments-{suffix}", topic_customs=f"customs-{suffix}")
    summary = simulate.run(settings, rate=None, shipments=25, seed=3, scenario="baseline")
    expected = [e for e in simulate.histories(3, 25, start=0.0)]  # same draws; only the clock differs
    assert summary["shipments"] == summary["shipments_started"] == 25
    assert summary["failed"] == 0 and summary["interrupted"] is False
    assert summary["events"] == len(expected) == sum(summary["topics"].values())
    assert summary["topics"] == {settings.input_topics[k]: n for k, n in
                                 Counter(e.topic for e in expected).items()}

    records = consume(broker.bootstrap, list(settings.input_topics.values()), summary["events"])
    assert len(records) == summary["events"]
    kind = {name: k for k, name in settings.input_topics.items()}
    key_field = {"orders": "order_id", "shipments": "shipment_id", "customs": "shipment_id"}
    now = time.time()
    types = Counter()
    for r in records:
        value = orjson.loads(r.value)
        assert r.key.decode() == value[key_field[kind[r.topic]]]
        types[value["event_type"]] += kind[r.topic] == "shipments"
        assert simulate.datetime.fromisoformat(value["occurred_at"]).timestamp() <= now  # never in the future
    assert types["label_created"] == 25
    assert types["delivered"] + types["returned"] + types["lost"] == 25
    # The partition count asked for, not the broker's auto-create default of 4.
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(kind))} == {n: 2 for n in kind}
    finally:
        admin.close()


def test_simulate_run_paced_by_rate_and_clock_finishes_and_stays_behind_now(broker):
    suffix = uuid.uuid4().hex[:6]
    settings = Settings(broker=broker.url, topic_orders=f"o-{suffix}", topic_shipments=f"s-{suffix}",
                        topic_customs=f"c-{suffix}")
    t = time.monotonic()
    summary = simulate.run(settings, rate=1000.0, shipments=40, seed=4, scenario="customs-backlog",
                           duplicate_rate=0.1, reorder_rate=0.1)
    elapsed = time.monotonic() - t
    assert summary["shipments"] == summary["shipments_started"] == 40  # duplicates are not counted twice
    assert summary["duplicates"] > 0
    assert summary["events"] / 1000.0 < elapsed < summary["events"] / 1000.0 + 3  # paced by rate, not days
    assert simulate.datetime.fromisoformat(summary["event_time_last"]).timestamp() <= time.time()
