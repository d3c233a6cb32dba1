"""`corridor bridge --from TOPIC --format dcsa|epcis`: a live bridge from a raw feed topic to the input
topics.

Each message of TOPIC is one feed document (a DCSA event list / ``{"events": [...]}`` / one event,
an EPCIS document / event list / one event), converted by the same adapters as `corridor replay`
and checked with the worker's own Decoder (adapters.sources.Checker). Contract events go to the
input topics from Settings, keyed by order id / shipment id. What cannot be used goes to
``<TOPIC>.dlq`` with the headers the worker's dead letters carry (``corridor.reason``,
``corridor.detail``, ``corridor.source.topic/partition/offset``, ``corridor.rejected_at``) plus
``corridor.where`` and ``corridor.format``:

- a document with no usable event (not JSON, not the format's structure, no events, every event
  rejected): one record, the message value unchanged, ``corridor.where: document``;
- a rejected event inside a document that also has usable events: one record per event, its JSON as
  a one-event document (so it can be fixed and produced back to TOPIC), ``corridor.where`` = its
  eventID, else ``#<index in the document>``.

Delivery is at least once: the consumer group's offsets are committed only after the producer has
flushed everything a batch of documents gave. A crash re-reads at most one batch; the worker drops
the repeats by ``event_id``, which the adapters take from the feed's own ids (DCSA ``eventID``;
EPCIS ``eventID``, else a hash of the event's canonical JSON), so a re-read gives the same ids.

`translate()` is the pure part (one document in, events and dead letters out); `Bridge` runs the
consumer loop. Secrets and TLS come from Settings, as for replay (streams/security.py).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, TextIO

import orjson

from streams.contract import deadletter
from streams.errors import CliError

log = logging.getLogger("corridor.bridge")

FORMATS = ("dcsa", "epcis")
SUMMARY_EVERY = 30.0            # seconds between two summary lines
POLL_MS = 500                   # the longest a stop request or the idle timer waits for a poll


class BridgeError(CliError):
    """A bad flag, mapping or topic, or an unreachable broker: one line, exit status 2."""


# ---- the pure part ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dead:
    """One record for the dead-letter topic."""
    value: bytes
    reason: str             # a code: the adapters' REASONS or the Decoder's
    detail: str
    where: str              # "document", an eventID, or "#<index>"


@dataclass
class Outcome:
    events: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)   # (kind, key, value)
    dead: list[Dead] = field(default_factory=list)


def _split(reason: str) -> tuple[str, str]:
    code, _, detail = reason.partition(": ")
    return code, detail


def translate(raw: bytes | None, fmt: str, check, options: dict | None = None) -> Outcome:
    """One raw document -> the contract events to publish and the dead letters.

    `check` is an adapters.sources.Checker (kind, event) -> (key, value, decoded) that raises
    codec.Rejected. Each event of the document is converted on its own (``convert([event])``, which
    the adapters treat exactly as that event inside the document), so every contract event and
    every reject is attributable to the feed event it came from.
    """
    from streams.feeds import Skip, dcsa, epcis
    from streams.contract.codec import Rejected

    adapter = {"dcsa": dcsa, "epcis": epcis}[fmt]
    options = options or {}
    out = Outcome()
    value = raw or b""
    try:
        items = adapter.event_list(value)    # the adapter's own reading of the document's structure
    except Skip as exc:
        code, detail = _split(exc.reason)
        out.dead.append(Dead(value, code, detail, "document"))
        return out
    if not items:
        out.dead.append(Dead(value, "bad_document", "the document holds no events", "document"))
        return out

    failed: list[tuple[int, str, str, str]] = []        # (index, where, code, detail)
    for i, item in enumerate(items):
        where = item.get("eventID") if isinstance(item, dict) and isinstance(item.get("eventID"), str) \
            and item.get("eventID") else f"#{i}"
        result = adapter.convert([item], **options)
        for _where, reason in result.rejects:
            failed.append((i, where, *_split(reason)))
        for kind, event in result.events:
            try:
                key, body, _doc = check(kind, event)
            except Rejected as err:
                failed.append((i, where, err.reason, err.detail))
            else:
                out.events.append((kind, key, body))

    if not out.events:
        code, detail = failed[0][2], failed[0][3]
        if len(items) > 1:
            detail = f"none of the {len(items)} events is usable: " + "; ".join(
                f"{w} {c}" for _i, w, c, _d in failed)
        out.dead.append(Dead(value, code, detail, "document"))
        return out
    done: set[int] = set()
    for i, where, code, detail in failed:
        if i not in done:           # one record per feed event, with its first reason
            done.add(i)
            out.dead.append(Dead(orjson.dumps(items[i]), code, detail, where))
    return out


# ---- the loop ----------------------------------------------------------------------------------------
@dataclass
class Stats:
    source: str
    dlq: str
    documents: int = 0
    published: Counter = field(default_factory=Counter)       # topic -> events
    dead: Counter = field(default_factory=Counter)            # reason -> dead-letter records
    commit_failures: int = 0
    failed: int = 0                                           # sends the broker did not acknowledge
    first_error: str | None = None
    seconds: float = 0.0
    stopped: str | None = None

    def line(self) -> str:
        events = sum(self.published.values())
        topics = ", ".join(f"{t} {n:,}" for t, n in sorted(self.published.items())) or "none"
        text = (f"corridor bridge: {self.source}: {self.documents:,} documents in {self.seconds:.1f} s, "
                f"{events:,} events published ({topics})")
        dead = sum(self.dead.values())
        if dead:
            reasons = sorted(self.dead.items(), key=lambda kv: (-kv[1], kv[0]))
            text += (f", {dead:,} dead letters to {self.dlq} ("
                     + ", ".join(f"{k} {n:,}" for k, n in reasons) + ")")
        if self.commit_failures:
            text += f", {self.commit_failures:,} commits failed (their documents are read again)"
        if self.failed:
            text += f"; {self.failed:,} sends failed: {self.first_error}; not committed"
        if self.stopped:
            text += f"; stopped: {self.stopped}"
        return text


class Bridge:
    """Consumer group on the raw topic -> adapters -> producer. `consumer` / `producer` are
    kafka-python clients (or anything with their poll/assignment/commit/close and
    send/flush/close)."""

    def __init__(self, settings, source: str, fmt: str, options: dict, consumer, producer, *,
                 clock: Callable[[], float] = time.monotonic):
        from streams.feeds.sources import Checker
        from streams.topics import dlq_name
        self.settings, self.source, self.fmt, self.options = settings, source, fmt, options
        self.consumer, self.producer, self.clock = consumer, producer, clock
        self.check = Checker(settings.max_message_bytes, settings.region_code_set)
        self.topics = settings.input_topics
        self.dlq = dlq_name(source)
        self.stats = Stats(source, self.dlq)
        self.failures: list[BaseException] = []
        self.stop_reason: str | None = None

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the current batch (safe from a signal handler)."""
        self.stop_reason = self.stop_reason or reason

    def run(self, *, max_messages: int | None = None, idle_exit: float | None = None,
            summary_every: float = SUMMARY_EVERY, out: TextIO | None = None) -> Stats:
        out = out if out is not None else sys.stdout
        start = last_activity = self.clock()
        next_summary = start + summary_every
        assigned = False
        try:
            while self.stop_reason is None:
                if max_messages is not None and self.stats.documents >= max_messages:
                    self.stop(f"{max_messages:,} messages read (--max-messages)")
                    break
                limit = 500 if max_messages is None else min(500, max_messages - self.stats.documents)
                batches = self.consumer.poll(timeout_ms=POLL_MS, max_records=limit)
                now = self.clock()
                if not assigned and self.consumer.assignment():
                    assigned, last_activity = True, now     # the idle timer starts once we can read
                records = [r for part in batches.values() for r in part]
                if records:
                    for record in records:
                        self._handle(record)
                    if not self._flush_and_commit():
                        break
                    last_activity = now
                elif idle_exit is not None and now - last_activity >= idle_exit:
                    self.stop(f"no message for {idle_exit:g} s (--idle-exit)")
                if now >= next_summary:
                    self.stats.seconds = now - start
                    print(self.stats.line(), file=out, flush=True)
                    next_summary = now + summary_every
        finally:
            self.stats.seconds = self.clock() - start
            self.stats.stopped = self.stop_reason
            self._close()
        print(self.stats.line(), file=out, flush=True)
        return self.stats

    def _handle(self, record) -> None:
        self.stats.documents += 1
        outcome = translate(record.value, self.fmt, self.check, self.options)
        for kind, key, value in outcome.events:
            topic = self.topics[kind]
            self._send(topic, key, value, None)
            self.stats.published[topic] += 1
        for dead in outcome.dead:
            headers = deadletter.headers(
                record.headers, dead.reason, dead.detail, record.topic, record.partition,
                record.offset, extra=[("corridor.where", dead.where.encode()),
                                      ("corridor.format", self.fmt.encode())])
            self._send(self.dlq, record.key, dead.value, headers)
            self.stats.dead[dead.reason] += 1

    def _send(self, topic: str, key, value: bytes, headers) -> None:
        try:
            self.producer.send(topic, key=key, value=value, headers=headers).add_errback(self.failures.append)
        except Exception as exc:        # kafka-python raises e.g. MessageSizeTooLargeError at once
            if not type(exc).__module__.startswith("kafka"):
                raise
            self.failures.append(exc)

    def _flush_and_commit(self) -> bool:
        """Commit the batch once every record it gave is acknowledged; False (and stop) if some
        were not: nothing is committed, so a restart reads those documents again."""
        try:
            self.producer.flush(timeout=60)
        except Exception as exc:
            if not type(exc).__module__.startswith("kafka"):
                raise
            self.failures.append(exc)
        if self.failures:
            self.stats.failed = len(self.failures)
            first = self.failures[0]
            self.stats.first_error = (str(first).splitlines() or [type(first).__name__])[0]
            self.stop("the broker did not acknowledge every record")
            return False
        from kafka.errors import KafkaError
        try:
            self.consumer.commit()
        except KafkaError as exc:
            # A rebalance took the partitions away: their new owner reads the batch again (at least once).
            self.stats.commit_failures += 1
            log.warning("commit failed (%s); the batch will be read again", exc)
        return True

    def _close(self) -> None:
        try:
            if not self.failures:
                self.producer.flush(timeout=30)
        finally:
            try:
                self.producer.close(timeout=5)
            finally:
                self.consumer.close(autocommit=False)


# ---- clients -------------------------------------------------------------------------------------
def _clients(settings, source: str, group: str):
    from kafka import KafkaConsumer, KafkaProducer

    from streams.broker.embedded import BrokerError, create_topics
    from streams.security import kafka_python_options
    from streams.topics import dlq_name

    options = kafka_python_options(settings)
    group_options = {}
    if settings.profile == "embedded":
        # Tansu holds a JoinGroup for session/2 and evicts a dead member after the session
        # (docs/broker.md §1-2): the worker's embedded settings.
        group_options = dict(session_timeout_ms=2000, heartbeat_interval_ms=500)
    consumer = producer = None
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                                 client_id="corridor-bridge", enable_auto_commit=False,
                                 auto_offset_reset="earliest", bootstrap_timeout_ms=10000,
                                 **group_options, **options)
        # Subscribing to a missing topic would wait forever on Kafka and auto-create it on Tansu.
        if source not in consumer.topics():
            raise BridgeError(f"topic {source} does not exist at {settings.broker}")
        create_topics(settings.bootstrap_servers,
                      {name: settings.partitions for name in [*settings.input_topics.values(),
                                                              dlq_name(source)]},
                      client_options=options)
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, client_id="corridor-bridge",
                                 acks="all", linger_ms=5, enable_idempotence=False, **options)
        consumer.subscribe([source])
        return consumer, producer
    except BaseException as exc:
        for client in (producer, consumer):
            if client is not None:
                client.close()
        if isinstance(exc, BrokerError):
            raise BridgeError(str(exc)) from None
        if type(exc).__module__.startswith("kafka"):      # NoBrokersAvailable and friends
            raise BridgeError(
                f"cannot reach the broker at {settings.broker}: {exc}".splitlines()[0]) from None
        raise


# ---- CLI glue ---------------------------------------------------------------------------------------
def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `corridor bridge` (besides the broker flags the CLI adds)."""
    parser.add_argument("--from", dest="source", required=True, metavar="TOPIC",
                        help="raw feed topic: one JSON document per message")
    parser.add_argument("--format", dest="input_format", required=True, choices=FORMATS,
                        help="the feed's standard")
    parser.add_argument("--mapping", help="mapping TOML with a [dcsa] / [epcis] section (docs/feeds.md)")
    parser.add_argument("--group", help="consumer group (default: <app id>-bridge-<TOPIC>)")
    parser.add_argument("--max-messages", dest="max_messages", type=_positive(int), metavar="N",
                        help="stop after N messages")
    parser.add_argument("--idle-exit", dest="idle_exit", type=_positive(float), metavar="SECONDS",
                        help="stop after SECONDS without a message (counted once partitions are assigned)")


def main(settings, args: argparse.Namespace) -> int:
    """`corridor bridge`: 0 after a clean stop (SIGTERM, Ctrl-C, --max-messages, --idle-exit), 1 when
    the broker failed some sends (nothing after them is committed); BridgeError (exit 2) on bad
    flags, mapping or topic, or an unreachable broker."""
    from streams.feeds.sources import SourceError, feed_options
    from streams.topics import DLQ_SUFFIX

    source = args.source
    if source in settings.input_topics.values() or source.endswith(DLQ_SUFFIX):
        raise BridgeError(f"--from {source}: read a raw feed topic, not an input or dead-letter topic")
    try:
        options = feed_options(args.input_format, args.mapping)
    except SourceError as exc:
        raise BridgeError(str(exc)) from None
    group = args.group or f"{settings.app_id}-bridge-{source}"
    consumer, producer = _clients(settings, source, group)
    bridge = Bridge(settings, source, args.input_format, options, consumer, producer)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")):
            previous[sig] = signal.signal(sig, lambda _s, _f, name=name: bridge.stop(name))
    try:
        print(f"corridor bridge: {source} ({args.input_format}) -> "
              f"{', '.join(settings.input_topics.values())}; dead letters to {bridge.dlq}; group {group}",
              flush=True)
        stats = bridge.run(max_messages=args.max_messages, idle_exit=args.idle_exit)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if stats.failed else 0
