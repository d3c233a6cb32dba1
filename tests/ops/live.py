"""The live ops stack for tests: real Prometheus and Alertmanager child processes on loopback, the
deploy/ rule and routing files rewritten only in their timings, a webhook sink that records every
notification Alertmanager sends, and the customs backlog both live tests feed the workers.

Used by tests/ops/test_alerting_e2e.py (one worker, which alert fires) and
tests/ops/test_alert_continuity.py (a firing alert across worker restarts and rebalances).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builders import journey

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
TEST_FOR = "2s"
#: The CN-AU shipments held in customs by customs_backlog().
STUCK = [f"AU{i}" for i in range(1, 6)]

_ALERT = re.compile(r"(?m)^\s+- alert:\s*(\S+)\s*$")
_FOR = re.compile(r"(?m)^(\s+for:\s*)\S+\s*$")
_KEEP_FIRING_FOR = re.compile(r"(?m)^(\s+keep_firing_for:\s*)\S+\s*$")


def customs_backlog() -> list[tuple[str, dict]]:
    """A customs backlog in one corridor while the others flow (hours after T0, see
    tests/builders.journey; the stream clock ends at h200):
      AU1..AU5  CN-AU standard, arrived h80, never released   -> 72 h beyond the 48 h customs target
                                                                 each, 3 days on average (threshold
                                                                 12 h, 5 shipments at least)
      AU0       CN-AU standard, delivered h130                 -> healthy
      DU1..DU3  DE-US express, delivered h200, every stage within target
      UM1..UM3  US-MX express, in linehaul since h180 (target 48 h)
      GD1..GD3  GB-DE standard, in customs since h170 (target 48 h)
    """
    stuck = [journey(sid, f"O{sid}", released=None, delivered=None) for sid in STUCK]
    healthy = [journey("AU0", "OAU0")]
    for i in range(1, 4):
        healthy.append(journey(f"DU{i}", f"ODU{i}", seller="DE", buyer="US", sl="express",
                               placed=100, picked=110, departed=120, arrived=160, released=170,
                               delivered=200))
        healthy.append(journey(f"UM{i}", f"OUM{i}", seller="US", buyer="MX", sl="express",
                               placed=150, picked=160, departed=180, arrived=None, released=None,
                               delivered=None))
        healthy.append(journey(f"GD{i}", f"OGD{i}", seller="GB", buyer="DE", placed=120,
                               picked=130, departed=140, arrived=170, released=None, delivered=None))
    return [ev for history in stuck + healthy for ev in history]


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run `make ops-tools` (bash .ci/ensure-ops-tools.sh)")
    return path


def fast_rules(dst: Path, *, for_: str = TEST_FOR, alerts: set[str] | None = None,
               keep_firing_for: str | None = None) -> Path:
    """deploy/prometheus/rules.yml with only its timings changed, so alerts fire within a test: the
    `for:` (minutes in production) of every alert, or of the named `alerts` only, becomes `for_`;
    every `keep_firing_for:` becomes `keep_firing_for` when given; any group `interval:` 1 s. The
    expressions, labels and annotations are the real ones, read from the real file."""
    text = RULES.read_text()
    starts = list(_ALERT.finditer(text))
    names = [m.group(1) for m in starts]
    assert alerts is None or alerts <= set(names), f"no such alerts in rules.yml: {alerts - set(names)}"
    parts, n_for = [text[:starts[0].start()]], 0
    for m, nxt in zip(starts, starts[1:] + [None]):
        block = text[m.start():nxt.start() if nxt else len(text)]
        if alerts is None or m.group(1) in alerts:
            block, n = _FOR.subn(rf"\g<1>{for_}", block)
            assert n == 1, f"alert {m.group(1)} has one for: to rewrite"
            n_for += n
        parts.append(block)
    assert n_for == len(alerts if alerts is not None else names)
    fast = "".join(parts)
    if keep_firing_for is not None:
        fast = _KEEP_FIRING_FOR.sub(rf"\g<1>{keep_firing_for}", fast)
    fast = re.sub(r"(?m)^(\s+interval:\s*)\S+\s*$", r"\g<1>1s", fast)
    dst.write_text(fast)
    return dst


def alert_block(rules_text: str, alertname: str) -> str:
    """The text of one alert rule of a rules file (from its `- alert:` line to the next)."""
    starts = list(_ALERT.finditer(rules_text))
    for m, nxt in zip(starts, starts[1:] + [None]):
        if m.group(1) == alertname:
            return rules_text[m.start():nxt.start() if nxt else len(rules_text)]
    raise AssertionError(f"no alert {alertname} in the rules")


def fast_alertmanager(dst: Path, webhook_url: str, *, group_wait: str, group_interval: str,
                      repeat_interval: str) -> Path:
    """deploy/alertmanager/alertmanager.yml with every receiver's webhook url pointed at
    `webhook_url` and the route timings (every group_wait/group_interval/repeat_interval line,
    routes included) cut to the given values. Routing, grouping, inhibition and send_resolved stay
    the real ones."""
    text = ALERTMANAGER_CONFIG.read_text()
    text, n_url = re.subn(r"(?m)^(\s+-?\s*url:\s*)\S+\s*$", rf"\g<1>'{webhook_url}'", text)
    assert n_url == len(re.findall(r"(?m)^\s+webhook_configs:", text)) >= 1, \
        "one webhook url per receiver to rewrite"
    assert len(re.findall(r"(?m)^\s+send_resolved:\s*true\s*$", text)) == n_url, \
        "every webhook sends resolved notifications"
    for key, value in (("group_wait", group_wait), ("group_interval", group_interval),
                       ("repeat_interval", repeat_interval)):
        text, n = re.subn(rf"(?m)^(\s+{key}:\s*)\S+\s*$", rf"\g<1>{value}", text)
        assert n >= 1, f"alertmanager.yml sets {key}"
    dst.write_text(text)
    return dst


class Server:
    """A child process with its log file, stopped (then killed) in teardown."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, port: int):
        self.name, self.cmd, self.log_path, self.port = name, cmd, log_path, port
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def get_json(self, path: str, **params):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError):
            return None

    def get_text(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            return None

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def alertmanager(tmp: Path, config: Path, port: int) -> Server:
    return Server("alertmanager", [
        binary("prometheus-alertmanager"), f"--config.file={config}",
        f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",          # no gossip listener on 0.0.0.0:9094
    ], tmp / "alertmanager.log", port)


def prometheus(tmp: Path, config: dict, port: int, *extra: str) -> Server:
    (tmp / "prometheus.yml").write_text(json.dumps(config, indent=2))      # JSON is YAML
    return Server("prometheus", [
        binary("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
        f"--web.external-url=http://127.0.0.1:{port}/", *extra,
    ], tmp / "prometheus.log", port)


def one_worker_config(rules: Path, worker_port: int, am_port: int | None = None) -> dict:
    """A Prometheus configuration for a test: scrape and evaluate every second, `rules`, one
    corridor worker on loopback, and an Alertmanager when given."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "corridor-workers", "static_configs": [
            {"targets": [f"127.0.0.1:{worker_port}"]}]}],
    }
    if am_port is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [f"127.0.0.1:{am_port}"]}]}]}
    return config


def write_file_sd(path: Path, targets: list[str], labels: dict[str, str]) -> None:
    """Replace a file_sd target file in one step (Prometheus watches it and must never read half)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": targets, "labels": labels}]))
    os.replace(tmp, path)


class WebhookSink:
    """An HTTP server thread on a free loopback port that records every webhook notification
    (Alertmanager's JSON payload) with the wall-clock time it arrived (Prometheus' time scale)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._received: list[tuple[float, dict]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:
                    sink._received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):       # quiet: the test reports what it received
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-sink",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def start(self) -> "WebhookSink":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def received(self) -> list[tuple[float, dict]]:
        with self._lock:
            return list(self._received)
