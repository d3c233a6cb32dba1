"""One Settings object for every command: defaults < environment (CORRIDOR_*) < flags.

Built once at start-up and passed in; nothing reads the environment at import time.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from typing import Mapping

PROFILES = ("kafka", "embedded")
LOG_LEVELS = ("crit", "error", "warn", "info", "debug")      # Faust's names
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: Secrets: read from VAR or from the file named by VAR_FILE; never flags (they show in `ps`).
SECRET_ENV = {"sasl_password": "CORRIDOR_SASL_PASSWORD",
              "ssl_key_password": "CORRIDOR_SSL_KEY_PASSWORD"}


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    #: Kafka bootstrap URL(s), faust style: kafka://host:port[;kafka://host2:port].
    broker: str = field(default="kafka://localhost:9092", metadata={"env": "CORRIDOR_BROKER"})
    #: `kafka` (Apache Kafka, Faust defaults) or `embedded` (Tansu workarounds, see docs/broker.md).
    profile: str = field(default="kafka", metadata={"env": "CORRIDOR_PROFILE"})
    #: Faust app id = consumer group id and prefix of internal/changelog topics.
    app_id: str = field(default="corridor", metadata={"env": "CORRIDOR_APP_ID"})
    web_host: str = field(default="127.0.0.1", metadata={"env": "CORRIDOR_WEB_HOST"})
    web_port: int = field(default=6066, metadata={"env": "CORRIDOR_WEB_PORT"})
    topic_orders: str = field(default="orders", metadata={"env": "CORRIDOR_TOPIC_ORDERS"})
    topic_shipments: str = field(default="shipments", metadata={"env": "CORRIDOR_TOPIC_SHIPMENTS"})
    topic_customs: str = field(default="customs-events", metadata={"env": "CORRIDOR_TOPIC_CUSTOMS"})
    #: Partition count of the input topics and of every internal/changelog topic (must all agree).
    partitions: int = field(default=4, metadata={"env": "CORRIDOR_PARTITIONS"})
    #: SLA policy file (TOML); empty = the shipped defaults (streams/sla_policy.toml).
    sla_policy: str = field(default="", metadata={"env": "CORRIDOR_SLA_POLICY"})
    #: Import regimes and FX rates (TOML) added to the shipped table (streams/regimes.toml): a
    #: parcel's `regime` and `value_class` labels (docs/semantics.md "Customs"); empty = none.
    import_regimes: str = field(default="", metadata={"env": "CORRIDOR_IMPORT_REGIMES"})
    #: While the latest event time is within this many seconds of the wall clock, an idle
    #: stream's clock follows the wall clock.
    live_lag_seconds: float = field(default=900.0, metadata={"env": "CORRIDOR_LIVE_LAG_SECONDS"})
    #: Ended shipments (and orders) are forgotten this long after their end (last event), in event
    #: time; events for a forgotten shipment older than this go to the dead-letter topic (`expired`).
    retention_seconds: float = field(default=30 * 86400.0, metadata={"env": "CORRIDOR_RETENTION_SECONDS"})
    #: Allowed lateness, in seconds of event time: a shipment's figures are final once the
    #: watermark passes its end by this much; events that arrive before count as if in order.
    grace_seconds: float = field(default=48 * 3600.0, metadata={"env": "CORRIDOR_GRACE_SECONDS"})
    #: A topic partition caught up and quiet for this many wall seconds stops holding the
    #: watermark back; when a partition's whole shipment side is, its shipments are settled
    #: against the wall clock (the end of a replay becomes final).
    idle_seconds: float = field(default=30.0, metadata={"env": "CORRIDOR_IDLE_SECONDS"})
    #: How often the worker checks that the brokers are still the same cluster (0 = never).
    broker_watch_seconds: float = field(default=10.0, metadata={"env": "CORRIDOR_BROKER_WATCH_SECONDS"})
    #: How long a starting worker keeps trying to reach the brokers (a broker restarting or
    #: stalled) before it gives up with an error; 0 = one attempt.
    broker_wait_seconds: float = field(default=120.0, metadata={"env": "CORRIDOR_BROKER_WAIT_SECONDS"})
    #: After SIGTERM, a worker that has not stopped within this many seconds exits anyway
    #: (status 143): with its broker gone, faust's shutdown waits on it forever. Nothing is lost:
    #: what was not committed is processed again by the partitions' next owner.
    stop_timeout_seconds: float = field(default=20.0, metadata={"env": "CORRIDOR_STOP_TIMEOUT_SECONDS"})
    #: Replication factor of every topic corridor creates (internal, dead-letter, changelog, and
    #: input topics where it creates them); -1: the broker's default.replication.factor.
    replication_factor: int = field(default=-1, metadata={"env": "CORRIDOR_REPLICATION_FACTOR"})
    #: min.insync.replicas of every topic corridor creates; 0: the broker's default. With acks=all
    #: a write needs this many replicas in sync (a cluster with 3 brokers: RF 3, min ISR 2).
    min_insync_replicas: int = field(default=0, metadata={"env": "CORRIDOR_MIN_INSYNC_REPLICAS"})
    #: false: the worker never creates its input topics; a missing one (a mistyped CORRIDOR_TOPIC_*,
    #: topics not provisioned yet) is one error and exit status 2. Internal topics are still created.
    create_input_topics: bool = field(default=True, metadata={"env": "CORRIDOR_CREATE_INPUT_TOPICS"})
    #: Standby copies of each table partition kept by other workers (faust's table_standby_replicas).
    standby_replicas: int = field(default=1, metadata={"env": "CORRIDOR_STANDBY_REPLICAS"})
    #: Faust table store: memory:// or rocksdb://
    store: str = field(default="memory://", metadata={"env": "CORRIDOR_STORE"})
    #: Directory for Faust's local data (rocksdb files, app dir).
    data_dir: str = field(default="corridor-data", metadata={"env": "CORRIDOR_DATA_DIR"})
    #: At most this many events are kept in one shipment's timeline (the oldest non-milestone ones go).
    timeline_max_events: int = field(default=100, metadata={"env": "CORRIDOR_TIMELINE_MAX_EVENTS"})
    #: Two-letter region codes accepted as countries beside ISO 3166-1 (comma-separated), for a
    #: marketplace whose corridors are regions of one country (the Olist data: Brazilian states).
    #: Any other code outside ISO 3166-1 is dead-lettered (unknown_country): it bounds the corridors.
    region_codes: str = field(default="", metadata={"env": "CORRIDOR_REGION_CODES"})
    #: Values larger than this many bytes are rejected.
    max_message_bytes: int = field(default=65536, metadata={"env": "CORRIDOR_MAX_MESSAGE_BYTES"})
    log_level: str = field(default="info", metadata={"env": "CORRIDOR_LOG_LEVEL"})
    #: The worker's garbage-collector thresholds (gc.set_threshold: gen0,gen1,gen2), or `python`
    #: for Python's own 700,10,10. Python's full collections walk every table value and paused
    #: the worker 100-215 ms every ~5 s at 20,000 shipments (docs/performance.md "Latency").
    gc_thresholds: str = field(default="10000,50,1000", metadata={"env": "CORRIDOR_GC_THRESHOLDS"})
    #: Run the worker even where its run-time patches of faust-streaming / aiokafka internals are
    #: untested (other versions, changed upstream code, no Cython stream iterator): one warning
    #: instead of a refusal, for trying an upgrade (streams/worker/faust_patches/).
    allow_untested_faust: bool = field(default=False, metadata={"env": "CORRIDOR_ALLOW_UNTESTED_FAUST"})
    #: Apply each fetched topic partition's records in one call from faust's fetcher (the batch
    #: path, docs/performance.md) rather than one message at a time through faust's streams.
    batch_delivery: bool = field(default=True, metadata={"env": "CORRIDOR_BATCH_DELIVERY"})
    # ---- secured clusters (docs/configuration.md) -----------------------------------------
    security_protocol: str = field(default="PLAINTEXT", metadata={"env": "CORRIDOR_SECURITY_PROTOCOL"})
    sasl_mechanism: str = field(default="PLAIN", metadata={"env": "CORRIDOR_SASL_MECHANISM"})
    sasl_username: str = field(default="", metadata={"env": "CORRIDOR_SASL_USERNAME"})
    #: From CORRIDOR_SASL_PASSWORD or the file named by CORRIDOR_SASL_PASSWORD_FILE; never printed.
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = field(default="", metadata={"env": "CORRIDOR_SSL_CAFILE"})
    ssl_certfile: str = field(default="", metadata={"env": "CORRIDOR_SSL_CERTFILE"})
    ssl_keyfile: str = field(default="", metadata={"env": "CORRIDOR_SSL_KEYFILE"})
    #: From CORRIDOR_SSL_KEY_PASSWORD or CORRIDOR_SSL_KEY_PASSWORD_FILE; never printed.
    ssl_key_password: str = field(default="", repr=False)

    # ---- derived names ---------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> list[str]:
        """host:port list for kafka-python / aiokafka clients."""
        out = []
        for part in self.broker.replace(",", ";").split(";"):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                out.append(part)
        return out

    @property
    def topic_order_links(self) -> str:
        """Internal: order_id -> shipment_id links, keyed by order_id (co-partitioned with orders)."""
        return f"{self.app_id}-order-links"

    @property
    def topic_shipment_orders(self) -> str:
        """Internal: order facts re-keyed by shipment_id (co-partitioned with shipments)."""
        return f"{self.app_id}-shipment-orders"

    @property
    def rerouted_topics(self) -> dict[str, str]:
        """Internal: kind -> where the input topic's records read on another partition than
        murmur2 of their key gives are sent on, to that partition (streams/worker/reroute.py)."""
        return {kind: f"{self.app_id}-rerouted-{kind}" for kind in self.input_topics}

    @property
    def input_topics(self) -> dict[str, str]:
        """kind -> topic name for the three input topics."""
        return {"orders": self.topic_orders, "shipments": self.topic_shipments,
                "customs": self.topic_customs}

    @property
    def gc_threshold_values(self) -> tuple[int, int, int] | None:
        """The three gc thresholds, or None to leave Python's."""
        if self.gc_thresholds.strip() == "python":
            return None
        parts = self.gc_thresholds.split(",")
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) != 3 or min(values) < 1:
            raise SettingsError(f"gc_thresholds must be three positive integers gen0,gen1,gen2 or "
                                f"'python', not {self.gc_thresholds!r}")
        return values

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def region_code_set(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.region_codes.split(",") if c.strip())

    def validate(self) -> "Settings":
        if self.profile not in PROFILES:
            raise SettingsError(f"profile must be one of {', '.join(PROFILES)}, not {self.profile!r}")
        if self.partitions < 1:
            raise SettingsError(f"partitions must be >= 1, not {self.partitions}")
        if self.replication_factor == 0 or self.replication_factor < -1:
            raise SettingsError(f"replication_factor must be >= 1 or -1 (the broker's default), "
                                f"not {self.replication_factor}")
        if self.min_insync_replicas < 0 or (self.replication_factor > 0
                                             and self.min_insync_replicas > self.replication_factor):
            raise SettingsError(f"min_insync_replicas must be 0 (the broker's default) .. the replication "
                                f"factor {self.replication_factor}, not {self.min_insync_replicas}")
        if self.standby_replicas < 0:
            raise SettingsError(f"standby_replicas must be >= 0, not {self.standby_replicas}")
        if not (0 < self.web_port < 65536):
            raise SettingsError(f"web_port must be a TCP port, not {self.web_port}")
        if not self.bootstrap_servers:
            raise SettingsError(f"broker {self.broker!r} names no host:port")
        bad = [c for c in self.region_code_set if not re.fullmatch(r"[A-Z]{2}", c)]
        if bad:
            raise SettingsError(f"region_codes must be two capital letters each, not {', '.join(sorted(bad))}")
        if self.store.split("://")[0] not in ("memory", "rocksdb"):
            raise SettingsError(f"store must be memory:// or rocksdb://, not {self.store!r}")
        self.gc_threshold_values        # raises SettingsError on a bad value
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                                f"not {self.security_protocol!r}")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise SettingsError(f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, "
                                    f"not {self.sasl_mechanism!r}")
            if not self.sasl_username or not self.sasl_password:
                raise SettingsError("SASL needs CORRIDOR_SASL_USERNAME and CORRIDOR_SASL_PASSWORD "
                                    "(or CORRIDOR_SASL_PASSWORD_FILE)")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise SettingsError(f"{name} {path} is not a readable file")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then CORRIDOR_* variables, then non-None keyword overrides (flags)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            env = f.metadata.get("env")
            if env and env in environ:
                raw = environ[env]
                try:
                    values[f.name] = _coerce(f.type, raw)
                except ValueError:
                    raise SettingsError(f"{env}={raw!r} is not a valid {f.type}") from None
        for name, env in SECRET_ENV.items():
            values[name] = _secret(environ, env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validate()


def _secret(environ: Mapping[str, str], env: str) -> str:
    """A secret from VAR, or from the file VAR_FILE names (Kubernetes/Docker secrets)."""
    if environ.get(env):
        return environ[env]
    path = environ.get(f"{env}_FILE")
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise SettingsError(f"{env}_FILE={path}: cannot read it ({exc.strerror})") from None


def _coerce(typ: str, raw: str):
    if typ == "int":
        return int(raw)
    if typ == "float":
        return float(raw)
    if typ == "bool":
        word = raw.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("", "0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    return raw


def env_table() -> list[tuple[str, str, str]]:
    """(env var, default, description) rows for the README's configuration reference."""
    rows = [(f.metadata["env"], repr(f.default), f.name) for f in fields(Settings) if "env" in f.metadata]
    return rows + [(env, "''", f"{name} (or {env}_FILE)") for name, env in SECRET_ENV.items()]
