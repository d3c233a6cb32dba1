"""`corridor demo` as a person sees it: the real command (embedded broker, worker, simulator) in a
pseudo-terminal, every byte it writes read back with the escape codes stripped; and, with stdout a
pipe (CI), its plain-text snapshots and a clean stop on SIGINT (what Ctrl-C sends it).

The exact check: a fixed-seed simulation of known size (`--shipments --seed`) whose deliveries the
pure engine computes (tests/e2e/scenarios.py); once the worker has counted all of it the figures no
longer move, so the final frame must show exactly the engine's figures and the worker's /metrics."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import REPO, free_port, merge_partitions, poll, series
from scenarios import engine_samples
from streams.tools.simulate import histories, plan_clock

pytestmark = pytest.mark.e2e

ROWS, COLS = 50, 150
SEED, SHIPMENTS, RATE = 7, 150, 1000.0
RUN = 30.0                 # seconds the demo runs once its worker is ready; the simulation is counted in ~12
HEADER = ["corridor", "on time", "delivered", "open", "overdue", "bottleneck", "would fire"]
ROW = re.compile(r"^(\S+)\s+(-|\d+\.\d %)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+(\S+)\s+(.+)$")
# CSI sequences, OSC strings, charset selection and the other two-byte escapes.
ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78DEHMc]")
FAUST_LINES = ("[INFO]", "[WARNING]", "Worker ready", "[^Worker]", "Recovery")


class Output:
    """Everything a child writes to `fd` (a pty's master side or a pipe), read by a thread."""

    def __init__(self, fd: int):
        self.fd = fd
        self.data = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:          # EIO: the pty's other side is closed (the child exited)
                return
            if not chunk:
                return
            with self._lock:
                self.data += chunk

    def raw(self) -> bytes:
        with self._lock:
            return bytes(self.data)

    def text(self) -> str:
        """What was written, escape codes and carriage returns removed."""
        return ANSI.sub(b"", self.raw()).decode(errors="replace").replace("\r", "")

    def close(self) -> None:
        self._thread.join(10)
        os.close(self.fd)


def demo_env(data_dir: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CORRIDOR_", "FORCE_COLOR", "NO_COLOR", "TTY_", "COLUMNS", "LINES"))}
    # CORRIDOR_IDLE_SECONDS: the end of a bounded simulation is final 2 s after its last event.
    return dict(env, CORRIDOR_DATA_DIR=str(data_dir), CORRIDOR_IDLE_SECONDS="2", **extra)


def demo(*args: str, web: int) -> list[str]:
    return [sys.executable, "-m", "streams", "demo", "--web-port", str(web), *args]


def metrics(web: int) -> dict | None:
    """One scrape of the demo's worker summed over `partition` (tests/e2e/harness.py), or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return merge_partitions(out)


def total(m: dict, name: str) -> float:
    return sum(series(m, name).values())


def delivered_by_corridor(m: dict) -> dict[str, tuple[int, int]]:
    """corridor -> (on time, delivered)."""
    out: dict[str, list[int]] = {}
    for labels, v in series(m, "corridor_shipments_delivered_total").items():
        lab = dict(labels)
        row = out.setdefault(lab["corridor"], [0, 0])
        row[0] += int(v) * (lab["on_time"] == "true")
        row[1] += int(v)
    return {c: (a, b) for c, (a, b) in out.items()}


def figures(m: dict) -> dict[str, tuple]:
    """What a row shows, from one scrape: corridor -> (on time, delivered, open, overdue,
    bottleneck: the worker's own corridor_bottleneck_stage)."""
    done = delivered_by_corridor(m)
    open_: dict[str, int] = {}
    for labels, v in series(m, "corridor_shipments_in_stage").items():
        open_[dict(labels)["corridor"]] = open_.get(dict(labels)["corridor"], 0) + int(v)
    overdue: dict[str, int] = {}
    for labels, v in series(m, "corridor_shipments_overdue").items():
        overdue[dict(labels)["corridor"]] = overdue.get(dict(labels)["corridor"], 0) + int(v)
    neck = {dict(labels)["corridor"]: dict(labels)["stage"]
            for labels, v in series(m, "corridor_bottleneck_stage").items() if v == 1}
    return {c: (shown_percent(*done[c]) if c in done else "-", done.get(c, (0, 0))[1],
                open_.get(c, 0), overdue.get(c, 0), neck.get(c, "-"))
            for c in set(done) | set(open_) | set(overdue)}


def shown_percent(on_time: int, delivered: int) -> str:
    """The screen's on-time share: one decimal, rounded down."""
    if not delivered:
        return "-"
    tenths = on_time * 1000 // delivered
    return f"{tenths // 10}.{tenths % 10} %"


def final_frame(text: str, title: str) -> list[str]:
    """The lines of the frame printed last, from its title line on."""
    at = text.rfind(f"{title}\nstream clock:")
    assert at >= 0, f"no final frame {title!r} on the screen:\n{text[-3000:]}"
    return text[at:].splitlines()


def table(lines: list[str]) -> dict[str, tuple]:
    """The corridor rows of a frame: corridor -> (on time, delivered, open, overdue, bottleneck, alerts)."""
    heads = [i for i, line in enumerate(lines) if re.split(r"\s{2,}", line.strip()) == HEADER]
    assert heads, "no corridor table header in the frame:\n" + "\n".join(lines)
    head = heads[0]
    rows = {}
    for line in lines[head + 1:]:
        if set(line.strip()) <= set("─-") and line.strip():
            continue                                    # the rule under the header
        match = ROW.match(line.strip())
        if not match:
            break
        c, pct, done, open_, overdue, neck, alerts = match.groups()
        rows[c] = (pct, int(done.replace(",", "")), int(open_.replace(",", "")),
                   int(overdue.replace(",", "")), neck, alerts.strip())
    return rows


def link(lines: list[str], what: str) -> str:
    found = [line.split(None, len(what.split()))[-1] for line in lines if line.startswith(what + "  ")]
    assert found, f"no {what!r} line in the frame"
    return found[0]


def leftovers(data_dir: Path) -> list[int]:
    """Processes still running with this demo's CORRIDOR_DATA_DIR (broker, worker, simulator)."""
    mark = f"CORRIDOR_DATA_DIR={data_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def accepting(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(proc: subprocess.Popen) -> None:
    """Teardown after a failure: the demo stops its children on SIGTERM."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def oracle() -> tuple[int, dict[str, tuple[int, int]]]:
    """The simulation the demo runs (same seed, size and clock layout; only absolute times differ),
    through the pure engine: (events, corridor -> (on time, delivered))."""
    layout = plan_clock(now=0.0, rate=RATE, shipments=SHIPMENTS, speedup=3600.0)
    events = list(histories(SEED, SHIPMENTS, scenario="baseline", start=layout["start"],
                            arrival_interval=layout["arrival_interval"],
                            scenario_start=layout["scenario_start"]))
    samples, _engine = engine_samples(events)
    return len(events), delivered_by_corridor(samples)


def test_the_terminal_shows_the_corridor_table_and_the_last_frame_is_exact(tmp_path):
    events, expected = oracle()
    web = free_port()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    env = demo_env(tmp_path, TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS))
    proc = subprocess.Popen(demo("--run-seconds", f"{RUN:g}", "--rate", f"{RATE:g}", "--shipments",
                                 str(SHIPMENTS), "--seed", str(SEED), "--scenario", "baseline", web=web),
                            cwd=REPO, env=env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    out = Output(master)
    try:
        def counted_all():
            assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{out.text()[-3000:]}"
            m = metrics(web)
            if m is None or total(m, "corridor_events_consumed_total") != events:
                return None
            if total(m, "corridor_shipments_pending_final") != 0:
                return None
            return m if delivered_by_corridor(m) == expected else None

        # While the demo runs: the worker counts the whole simulation, then nothing moves.
        settled = poll(counted_all, 90 + RUN, 0.5, "the demo's worker has counted the whole simulation")
        live = out.text()
        assert "corridor demo: simulator: 1000 events/s, baseline, seed 7, 150 shipments" in live
        # The shipment link on the screen answers with that shipment.
        url = link(live[live.rfind("metrics  "):].splitlines(), "shipment")
        assert url == f"http://127.0.0.1:{web}/shipments/SHP-7-000001"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200 and b'"SHP-7-000001"' in resp.read()
        # Read the worker until the demo stops it: the last read is the moment of the last frame
        # (the demo reads /metrics once more, then stops the worker).
        last, deadline = settled, time.monotonic() + RUN + 60
        while proc.poll() is None and time.monotonic() < deadline:
            last = metrics(web) or last
            time.sleep(0.1)
        rc = proc.wait(30)
    finally:
        stop(proc)
        out.close()
    assert rc == 0
    text = out.text()
    lines = final_frame(text, f"corridor demo: stopped after {RUN:g} s (--run-seconds)")

    # The last frame shows exactly the worker's figures at the stop, and every corridor of the
    # simulation with the engine's deliveries and on-time share; all ended, so nothing open or
    # overdue and no bottleneck; the one alert that holds is CN-US's on-time rate (30 of 39 on
    # time, >= 30 deliveries).
    rows = table(lines)
    assert {c: r[:5] for c, r in rows.items()} == figures(last)
    assert delivered_by_corridor(settled) == delivered_by_corridor(last) == expected
    assert {c: r[:5] for c, r in rows.items() if c in expected} == {
        c: (shown_percent(on, done), done, 0, 0, "-") for c, (on, done) in expected.items()}
    assert {c: r[5] for c, r in rows.items() if c in expected} == {
        c: "CorridorOnTimeRateLow" if done >= 30 and on / done < 0.90 else "-"
        for c, (on, done) in expected.items()}
    assert sum(r[1] for r in rows.values()) == 147 and rows["CN-US"][:2] == ("76.9 %", 39)
    assert "  CorridorOnTimeRateLow  CN-US: 76.9 % of 39 deliveries on time (< 90% of >= 30)" in lines

    # The logs: their paths on the screen, the worker's Faust log in its file and not on the screen.
    worker_log = tmp_path / "demo" / "worker.log"
    assert link(lines, "worker log") == str(worker_log)
    assert lines[-1] == f"corridor demo: stopped after {RUN:g} s (--run-seconds); the worker's log: {worker_log}"
    log = worker_log.read_text()
    assert "[INFO]" in log and "Worker ready" in log
    assert f"corridor simulate: {events} events" in (tmp_path / "demo" / "simulator.log").read_text()
    assert [line for line in FAUST_LINES if line in text] == []
    assert leftovers(tmp_path) == []


def test_without_a_terminal_plain_snapshots_and_sigint_stops_everything(tmp_path):
    web = free_port()
    proc = subprocess.Popen(demo("--rate", "300", web=web), cwd=REPO, env=demo_env(tmp_path),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out = Output(os.dup(proc.stdout.fileno()))
    proc.stdout.close()
    try:
        def shipments_open():
            assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{out.text()}"
            m = metrics(web)
            return m is not None and total(m, "corridor_shipments_in_stage") > 0
        poll(shipments_open, 90, 0.5, "the demo's worker shows open shipments")
        proc.send_signal(signal.SIGINT)               # what Ctrl-C sends the demo
        rc = proc.wait(45)
    finally:
        stop(proc)
        out.close()
    assert rc == 0                                     # Ctrl-C is how it stops: not a failure
    raw = out.raw()
    assert b"\x1b" not in raw                          # no escape codes in a pipe
    text = raw.decode()
    assert text.startswith("corridor demo: starting the broker\nstream clock: no events yet | ")
    lines = final_frame(text, "corridor demo: stopped (Ctrl-C)")
    rows = table(lines)
    assert rows and all(re.fullmatch(r"[A-Z]{2}-[A-Z]{2}|unknown", c) for c in rows)
    assert sum(r[2] for r in rows.values()) > 0       # open shipments counted at the stop
    worker_log = tmp_path / "demo" / "worker.log"
    assert lines[-1] == f"corridor demo: stopped (Ctrl-C); the worker's log: {worker_log}"
    assert "Worker ready" in worker_log.read_text()
    assert [line for line in FAUST_LINES if line in text] == []
    # Everything stopped: the worker's port, the broker's port, no process of this demo left.
    broker_port = int(re.search(r"kafka://127\.0\.0\.1:(\d+)", link(lines, "broker")).group(1))
    assert not accepting(web) and not accepting(broker_port)
    assert leftovers(tmp_path) == []


def test_a_worker_that_cannot_start_is_one_line_and_exit_2(tmp_path):
    env = demo_env(tmp_path, CORRIDOR_SLA_POLICY="/nonexistent/policy.toml")
    result = subprocess.run(demo(web=free_port()), cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    worker_log = tmp_path / "demo" / "worker.log"
    assert result.returncode == 2
    assert result.stderr == (f"corridor demo: the worker exited with status 2 before it was ready; "
                             f"its log: {worker_log}\n")
    assert "SLA policy file /nonexistent/policy.toml does not exist" in worker_log.read_text()
    assert "corridor demo: stopped: the worker exited with status 2" in result.stdout
    assert leftovers(tmp_path) == []


def test_a_web_port_in_use_is_one_line_and_exit_2_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(demo(web=port), cwd=REPO, env=demo_env(tmp_path),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"corridor demo: port {port} is already in use (another corridor demo?); "
                             "pick another with --web-port\n")
    assert not (tmp_path / "demo").exists()
