"""The `corridor` command: broker, worker, topics, simulate, replay, report, backtest, dlq, bridge,
shipment, demo.

Every flag has a CORRIDOR_* environment variable (streams/settings.py); flags win. Errors in flags,
files or settings are one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request

from streams.errors import CliError
from streams.settings import Settings, SettingsError

EXIT_USAGE = 2


def _common(parser: argparse.ArgumentParser, *, web: bool = False) -> None:
    parser.add_argument("--broker", help="Kafka URL, e.g. kafka://localhost:9092 (CORRIDOR_BROKER)")
    parser.add_argument("--profile", choices=("kafka", "embedded"),
                        help="kafka (Apache Kafka) or embedded (Tansu workarounds) (CORRIDOR_PROFILE)")
    parser.add_argument("--app-id", dest="app_id", help="Faust app id / consumer group (CORRIDOR_APP_ID)")
    parser.add_argument("--partitions", type=int, help="partitions of every topic (CORRIDOR_PARTITIONS)")
    if web:
        parser.add_argument("--web-port", dest="web_port", type=port, help="HTTP port (CORRIDOR_WEB_PORT)")
        parser.add_argument("--web-host", dest="web_host", help="HTTP host (CORRIDOR_WEB_HOST)")


def port(text: str) -> int:
    """A TCP port flag: 0..65535 (0: any free port), else a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="corridor", description=" ".join(__doc__.split("\n\n")[0].split()))
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu) in the foreground")
    p.add_argument("--port", type=port, default=9092)
    p.add_argument("--host", default="127.0.0.1")

    p = sub.add_parser("worker", help="run a Faust worker (extra arguments go to `faust worker`)")
    _common(p, web=True)
    p.add_argument("--sla-policy", dest="sla_policy", help="SLA policy TOML file (CORRIDOR_SLA_POLICY)")
    p.add_argument("--import-regimes", dest="import_regimes",
                   help="import regimes TOML added to the shipped table (CORRIDOR_IMPORT_REGIMES)")
    p.add_argument("--store", help="memory:// or rocksdb:// (CORRIDOR_STORE)")
    p.add_argument("-l", "--loglevel", dest="log_level", help="log level (CORRIDOR_LOG_LEVEL)")

    p = sub.add_parser("simulate", help="publish realistic cross-border traffic")
    _common(p)
    from streams.tools import simulate
    simulate.add_arguments(p)

    p = sub.add_parser("replay", help="publish an event log or feed documents to the input topics")
    _common(p)
    from streams.tools import replay
    replay.add_arguments(p)

    p = sub.add_parser("bridge", help="live: convert a raw DCSA / EPCIS feed topic into the input topics")
    _common(p)
    from streams.feeds import bridge
    bridge.add_arguments(p)

    p = sub.add_parser("topics", help="create (or --check) every topic: inputs, internal, dead letters, "
                                      "changelogs, with the partitions, replication factor and min ISR")
    _common(p)
    from streams.broker import provision
    provision.add_arguments(p)

    p = sub.add_parser("shipment", help="one shipment's timeline from a worker, as a table")
    from streams.tools import shipment_view
    shipment_view.add_arguments(p)

    p = sub.add_parser("report", help="corridor SLA figures of an event log, in batch")
    from streams.tools import report
    report.add_arguments(p)

    p = sub.add_parser("backtest", help="the lateness predictions replayed over an event log, scored "
                                        "against the baseline (PR-AUC, Brier, coverage)")
    from streams.tools import backtest
    backtest.add_arguments(p)

    p = sub.add_parser("dlq", help="dead letters: show them, or replay them to their source topics")
    from streams.tools import dlq
    dlq.add_arguments(p, common=_common)

    p = sub.add_parser("demo", help="embedded broker + one worker + simulator, and a live view of "
                                    "the figures (docs/demo.md); Ctrl-C stops all")
    p.add_argument("--port", type=port, default=0, help="broker port (default: a free one)")
    p.add_argument("--web-port", dest="web_port", type=port, default=6066)
    p.add_argument("--rate", type=float, default=200.0, help="simulator events per second")
    p.add_argument("--scenario", default="customs-backlog", choices=list(simulate.SCENARIOS))
    p.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    p.add_argument("--shipments", type=int, default=None,
                   help="the simulator stops after this many shipments (default: it runs until the demo stops)")
    p.add_argument("--run-seconds", dest="run_seconds", type=float, default=None,
                   help="stop by itself this many seconds after the worker is ready (default: until Ctrl-C)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    keys = ("broker", "profile", "app_id", "partitions", "web_port", "web_host", "sla_policy",
            "import_regimes", "store", "log_level")
    return Settings.from_env(**{k: getattr(args, k, None) for k in keys})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "worker":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "broker":
            from streams.broker.embedded import run_foreground
            return run_foreground(args.port, args.host)
        if args.command == "worker":
            return run_worker(settings_from(args), extra)
        if args.command == "simulate":
            from streams.tools import simulate
            return simulate.main(settings_from(args), args)
        if args.command == "replay":
            from streams.tools import replay
            return replay.main(settings_from(args), args)
        if args.command == "bridge":
            from streams.feeds import bridge
            return bridge.main(settings_from(args), args)
        if args.command == "topics":
            from streams.broker import provision
            return provision.main(settings_from(args), args)
        if args.command == "shipment":
            from streams.tools import shipment_view
            return shipment_view.main(args)
        if args.command == "report":
            from streams.tools import report
            return report.main(args)
        if args.command == "backtest":
            from streams.tools import backtest
            return backtest.main(args)
        if args.command == "dlq":
            from streams.tools import dlq
            return dlq.main(settings_from(args), args)
        if args.command == "demo":
            return run_demo(args)
    except (CliError, SettingsError) as exc:
        print(f"corridor {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


def _demo_regimes(args: argparse.Namespace, path: Path) -> str | None:
    """The import regime the demo's scenario needs (de-minimis-change), written to `path` for the
    worker, which starts before the simulator: the simulator lays out its clock the same way a
    moment later (the change is at a midnight, so the moment does not matter)."""
    from streams.tools import simulate
    layout = simulate.plan_clock(now=time.time(), rate=args.rate if args.rate > 0 else None,
                                 shipments=args.shipments, speedup=simulate.DEFAULT_SPEEDUP)
    text = simulate.scenario_regimes(args.scenario, layout["scenario_start"])
    if text is None:
        return None
    path.write_text(text, encoding="utf-8")
    return str(path)


def run_worker(settings: Settings, faust_args: list[str]) -> int:
    from streams.worker.app import create_app
    from streams.domain.policy import PolicyError, SlaPolicy
    from streams.broker import provision
    from streams.worker import faust_patches
    faust_patches.check(settings.allow_untested_faust)     # refuse before reaching the broker
    try:
        policy = SlaPolicy.load(settings.sla_policy or None, settings.import_regimes or None)
    except PolicyError as exc:
        raise CliError(str(exc)) from None
    provision.ensure_waiting(settings)
    import logging
    import prometheus_client
    prometheus_client.disable_created_metrics()     # *_created series add nothing for our counters
    # faust's worker leaves the root logger at DEBUG whatever -l says, so aiokafka and faust built
    # a LogRecord for every message sent (7 % of the worker's time): give them the level asked for.
    level = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
             "info": logging.INFO, "debug": logging.DEBUG}[settings.log_level]
    for name in ("aiokafka", "faust", "mode", "corridor"):
        logging.getLogger(name).setLevel(level)
    if settings.gc_threshold_values:
        import gc
        gc.set_threshold(*settings.gc_threshold_values)
    app = create_app(settings, policy)
    sys.argv = ["corridor", "worker", "-l", settings.log_level, "--web-port", str(settings.web_port),
                "--web-host", settings.web_host, *faust_args]
    app.main()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """What `make demo` runs: the embedded broker, one worker and the simulator on loopback, and a
    live view of the worker's figures (streams.tools.live_view, docs/demo.md). Their logs go to
    files in CORRIDOR_DATA_DIR/demo/, not to the screen. Ctrl-C (or --run-seconds) stops them all,
    and the last frame stays on the screen."""
    import socket
    from pathlib import Path
    from streams.broker.embedded import BrokerError, EmbeddedBroker
    from streams.tools import live_view

    web_port = args.web_port
    with socket.socket() as s:
        if web_port == 0:
            s.bind(("127.0.0.1", 0))
            web_port = s.getsockname()[1]
        elif s.connect_ex(("127.0.0.1", web_port)) == 0:
            # Else the view would show whatever answers there (another demo's worker).
            raise CliError(f"port {web_port} is already in use (another corridor demo?); "
                           "pick another with --web-port")
    logs = Path(Settings.from_env().data_dir, "demo").resolve()
    logs.mkdir(parents=True, exist_ok=True)
    log = {name: logs / f"{name}.log" for name in ("worker", "simulator", "broker")}
    for path in log.values():
        path.write_bytes(b"")                   # each demo's logs are its own
    os.environ.setdefault("RUST_LOG", "warn")   # Tansu's info log grows by megabytes a second
    base = f"http://127.0.0.1:{web_port}"
    broker = EmbeddedBroker(port=args.port, quiet=False, log_path=str(log["broker"]))
    reader = live_view.Reader(f"{base}/metrics")
    procs: dict[str, subprocess.Popen] = {}
    screen = live_view.Screen()
    state = {"status": "starting the broker", "due": 0.0, "ready": False}

    def links() -> list[tuple[str, str]]:
        return [("metrics", f"{base}/metrics"), ("corridors", f"{base}/corridors"),
                ("shipment", f"{base}/shipments/SHP-{args.seed}-000001"), ("health", f"{base}/health"),
                ("broker", f"{broker.url} (embedded Tansu, memory storage)" if broker.port else "-"),
                *((f"{name} log", str(path)) for name, path in log.items())]

    def show(read: bool = False, force: bool = False) -> None:
        """A frame every live_view.REFRESH seconds (`force`: now; without a terminal, printed)."""
        if force or time.monotonic() >= state["due"]:
            state["due"] = time.monotonic() + live_view.REFRESH
            if read:
                reader.read()
            screen.show(reader.frame(status=state["status"], links=links()), force=force)

    def interrupt(signum, _frame):
        raise KeyboardInterrupt

    hurry: list[int] = []
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT),
                signal.SIGTERM: signal.signal(signal.SIGTERM, interrupt)}   # kill: as Ctrl-C
    error, ended = None, "stopped"
    try:
        with screen:
            try:
                show(force=True)
                try:
                    broker.start()
                except BrokerError as exc:
                    raise CliError(str(exc)) from None
                env = dict(os.environ, CORRIDOR_BROKER=broker.url, CORRIDOR_PROFILE="embedded",
                           CORRIDOR_APP_ID=f"corridor-demo-{int(time.time())}",
                           CORRIDOR_WEB_PORT=str(web_port), CORRIDOR_WEB_HOST="127.0.0.1",
                           PYTHONUNBUFFERED="1")
                regimes = _demo_regimes(args, logs / "regimes.toml")
                if regimes:
                    env["CORRIDOR_IMPORT_REGIMES"] = regimes

                def start(name: str, *argv: str) -> None:
                    # In their own sessions: Ctrl-C reaches the demo only, which stops them in order.
                    with open(log[name], "ab") as out:
                        procs[name] = subprocess.Popen(
                            [sys.executable, "-m", "streams", *argv], env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

                start("worker", "worker")
                waiting = time.monotonic()

                def tick():
                    state["status"] = f"waiting for the worker ({time.monotonic() - waiting:.0f} s)"
                    show()

                _wait_http(f"{base}/health", 60, procs["worker"], tick=tick, log=log["worker"])
                state["ready"] = True
                sim = ["--rate", f"{args.rate:g}", "--scenario", args.scenario, "--seed", str(args.seed)]
                sim += ["--shipments", str(args.shipments)] if args.shipments is not None else []
                start("simulator", "simulate", *sim)
                traffic = (f"simulator: {args.rate:g} events/s, {args.scenario}, seed {args.seed}"
                           + (f", {args.shipments} shipments" if args.shipments is not None else ""))
                deadline = None if args.run_seconds is None else time.monotonic() + args.run_seconds
                while deadline is None or time.monotonic() < deadline:
                    for name, proc in procs.items():
                        if proc.poll() is not None and (name == "worker" or proc.returncode != 0):
                            raise CliError(f"the {name} exited with status {proc.returncode}; "
                                           f"its log: {log[name]}")
                    done = "finished" if procs["simulator"].poll() == 0 else "running"
                    stops = ("Ctrl-C stops everything" if deadline is None else
                             f"stops by itself in {max(0.0, deadline - time.monotonic()):.0f} s")
                    state["status"] = f"{traffic} ({done}); {stops}"
                    show(read=True)
                    time.sleep(0.1)
                ended = f"stopped after {args.run_seconds:g} s (--run-seconds)"
            except KeyboardInterrupt:
                ended = "stopped (Ctrl-C)"          # the way to stop it: not a failure
            except CliError as exc:
                error, ended = exc, f"stopped: {exc}"
            finally:
                # A second Ctrl-C while stopping: kill what is left rather than wait.
                signal.signal(signal.SIGINT, lambda *_: hurry.append(1))
                signal.signal(signal.SIGTERM, lambda *_: hurry.append(1))
                if state["ready"] and procs["worker"].poll() is None:
                    reader.read()               # the last frame: the figures at the stop
                state["status"] = "stopping the simulator, the worker and the broker"
                if screen.live:
                    show(force=True)
                for name in ("simulator", "worker"):
                    proc = procs.get(name)
                    if proc is not None and proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        stop_by = time.monotonic() + 25     # the worker gives up after 20 s itself
                        while proc.poll() is None and time.monotonic() < stop_by and not hurry:
                            time.sleep(0.05)
                        if proc.poll() is None:
                            proc.kill()
                            proc.wait()
                broker.stop()
                # On an error, its one line (main) names the log to read.
                screen.close(reader.frame(status=ended, links=links()), *() if error else (
                    f"corridor demo: {ended}; the worker's log: {log['worker']}",))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if error is not None:
        raise error
    return 0


def _wait_http(url: str, seconds: float, proc: subprocess.Popen, *, tick=None, log=None) -> None:
    """Wait until `url` answers 200 while `proc` runs; `tick()`, if given, is called at every try
    (the demo refreshes its screen); `log` is named in the error when `proc` exits."""
    where = f"; its log: {log}" if log else ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(f"the worker exited with status {proc.returncode} before it was ready{where}")
        if tick is not None:
            tick()
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise CliError(f"the worker was not ready at {url} after {seconds:.0f} s{where}")
