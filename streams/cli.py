"""The `corridor` command: broker, worker, simulate, replay, report, bridge, shipment, demo.

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
    parser = _Parser(prog="corridor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (Tansu) in the foreground")
    p.add_argument("--port", type=port, default=9092)
    p.add_argument("--host", default="127.0.0.1")

    p = sub.add_parser("worker", help="run a Faust worker (extra arguments go to `faust worker`)")
    _common(p, web=True)
    p.add_argument("--sla-policy", dest="sla_policy", help="SLA policy TOML file (CORRIDOR_SLA_POLICY)")
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

    p = sub.add_parser("shipment", help="one shipment's timeline from a worker, as a table")
    from streams.tools import shipment_view
    shipment_view.add_arguments(p)

    p = sub.add_parser("report", help="corridor SLA figures of an event log, in batch")
    from streams.tools import report
    report.add_arguments(p)

    p = sub.add_parser("demo", help="embedded broker + one worker + simulator; Ctrl-C stops all")
    p.add_argument("--port", type=port, default=0, help="broker port (default: a free one)")
    p.add_argument("--web-port", dest="web_port", type=port, default=6066)
    p.add_argument("--rate", type=float, default=200.0, help="simulator events per second")
    p.add_argument("--scenario", default="customs-backlog")
    p.add_argument("--run-seconds", dest="run_seconds", type=float, default=None,
                   help="stop by itself after this many seconds (default: until Ctrl-C)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    keys = ("broker", "profile", "app_id", "partitions", "web_port", "web_host", "sla_policy",
            "store", "log_level")
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
        if args.command == "shipment":
            from streams.tools import shipment_view
            return shipment_view.main(args)
        if args.command == "report":
            from streams.tools import report
            return report.main(args)
        if args.command == "demo":
            return run_demo(args)
    except (CliError, SettingsError) as exc:
        print(f"corridor {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


def run_worker(settings: Settings, faust_args: list[str]) -> int:
    from streams.worker.app import create_app
    from streams.domain.policy import PolicyError, SlaPolicy
    from streams.topics import all_topics
    from streams.worker import faust_patches
    faust_patches.check(settings.allow_untested_faust)     # refuse before reaching the broker
    try:
        policy = SlaPolicy.load(settings.sla_policy or None)
    except PolicyError as exc:
        raise CliError(str(exc)) from None
    _ensure_topics_waiting(settings, all_topics(settings))
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


def _ensure_topics_waiting(settings: Settings, topics: dict[str, int]) -> None:
    """`ensure_topics`, retried while the brokers cannot be reached (a broker restarting or
    stalled must not stop a worker from starting), for up to settings.broker_wait_seconds."""
    from streams.broker.embedded import BrokerError, BrokerUnreachable
    deadline = time.monotonic() + settings.broker_wait_seconds
    delay = 1.0
    while True:
        try:
            return ensure_topics(settings, topics)
        except BrokerUnreachable as exc:
            if time.monotonic() + delay > deadline:
                raise CliError(f"{exc} (tried for {settings.broker_wait_seconds:.0f} s, "
                               "CORRIDOR_BROKER_WAIT_SECONDS)") from None
            print(f"corridor worker: {exc}; retrying in {delay:.0f} s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        except BrokerError as exc:
            raise CliError(str(exc)) from None


def ensure_topics(settings: Settings, topics: dict[str, int]) -> None:
    """Create missing topics; refuse input topics whose partition count breaks co-partitioning."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError
    from streams.broker.embedded import BrokerError, BrokerUnreachable, create_topics
    from streams.security import kafka_python_options
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                 client_id="corridor-setup", request_timeout_ms=10000,
                                 bootstrap_timeout_ms=10000, **kafka_python_options(settings))
    except KafkaError as exc:
        raise BrokerUnreachable(f"cannot reach the broker at {settings.broker}: {exc}") from None
    try:
        names = [n for n in topics if n in admin.list_topics()]
        # Ask only for ours, and never with an empty list: Tansu answers it with every topic.
        existing = {t.get("name") or t.get("topic"): len(t["partitions"])
                    for t in (admin.describe_topics(names) if names else ())
                    if (t.get("name") or t.get("topic")) in topics}
    except KafkaError as exc:
        raise BrokerUnreachable(f"the broker at {settings.broker} did not answer: {exc}") from None
    finally:
        admin.close()
    wrong = {n: c for n, c in existing.items() if c != topics[n]}
    if wrong:
        detail = ", ".join(f"{n} has {c}" for n, c in sorted(wrong.items()))
        raise BrokerError(f"every topic must have {settings.partitions} partitions to be joined "
                          f"(CORRIDOR_PARTITIONS), but {detail}")
    missing = {n: c for n, c in topics.items() if n not in existing}
    if missing:
        create_topics(settings.bootstrap_servers, missing,
                      client_options=kafka_python_options(settings))


def run_demo(args: argparse.Namespace) -> int:
    """What `make demo` runs: everything on loopback, stopped together on Ctrl-C."""
    from streams.broker.embedded import EmbeddedBroker
    broker = EmbeddedBroker(port=args.port).start()
    env = dict(os.environ, CORRIDOR_BROKER=broker.url, CORRIDOR_PROFILE="embedded",
               CORRIDOR_APP_ID=f"corridor-demo-{int(time.time())}",
               CORRIDOR_WEB_PORT=str(args.web_port), CORRIDOR_WEB_HOST="127.0.0.1")
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env))
        base = f"http://127.0.0.1:{args.web_port}"
        _wait_http(f"{base}/health", 60, procs[0])
        procs.append(subprocess.Popen([sys.executable, "-m", "streams", "simulate", "--rate",
                                       str(args.rate), "--scenario", args.scenario], env=env))
        print(f"""
corridor demo is running (Ctrl-C stops everything)
  broker     {broker.url}   (embedded Tansu, memory storage)
  metrics    {base}/metrics
  corridors  {base}/corridors
  shipment   {base}/shipments/<id>   e.g. the ids in {base}/corridors' traffic
  health     {base}/health
""", flush=True)
        deadline = None if args.run_seconds is None else time.monotonic() + args.run_seconds
        while deadline is None or time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None and p is procs[0]:
                    raise CliError(f"the worker exited with status {p.returncode}")
            time.sleep(0.5)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
    return 0


def _wait_http(url: str, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(f"the worker exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise CliError(f"the worker was not ready at {url} after {seconds:.0f} s")
