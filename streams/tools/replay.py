"""`corridor replay FILE...`: publish an event log, or feed documents through the adapters, to the
input topics.

Input is read by streams/feeds/sources.py (JSON Lines, CSV, Parquet event logs; DCSA, EPCIS and
CSV order exports through the adapters; docs/feeds.md). Every event is checked with the worker's
own Decoder before it is sent, so what is published is what the worker accepts; a record that
fails is written to the rejects file (JSON Lines: source, where, reason, detail, record) and the
replay goes on. Keys are the order id (orders) and the shipment id (shipments, customs-events),
as the join needs.

Pace: as fast as the producer goes, or ``--rate`` events per second. A progress line (events,
events/s, ETA) goes to stderr, the summary (published per topic, rejected per reason) to stdout.
``--dry-run`` checks everything and publishes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

import orjson

from streams.errors import CliError

DEFAULT_REJECTS = "replay-rejects.jsonl"


class ReplayError(CliError):
    """A bad file, mapping, flag or an unreachable broker: one line, exit status 2."""


@dataclass
class Summary:
    events: int = 0                                   # records that reached the contract check
    published: Counter = field(default_factory=Counter)   # topic -> events sent (or valid, dry run)
    rejected: Counter = field(default_factory=Counter)    # reason -> records
    failed: int = 0                                   # sends the broker did not acknowledge
    first_error: str | None = None
    seconds: float = 0.0
    dry_run: bool = False
    interrupted: bool = False
    rejects_path: str | None = None

    def line(self) -> str:
        total = sum(self.published.values())
        rate = total / self.seconds if self.seconds > 0 else 0.0
        topics = ", ".join(f"{t} {n:,}" for t, n in sorted(self.published.items())) or "nothing"
        head = (f"corridor replay (dry run): {total:,} events valid ({topics})" if self.dry_run else
                f"corridor replay: {total:,} events published in {self.seconds:.1f} s "
                f"({rate:,.0f}/s; {topics})")
        rej = sum(self.rejected.values())
        if rej:
            head += (f"; {rej:,} rejected (" + ", ".join(f"{k} {n:,}" for k, n in self.rejected.most_common())
                     + f") -> {self.rejects_path}")
        if self.failed:
            head += f"; {self.failed:,} sends failed: {self.first_error}"
        if self.interrupted:
            head += "; interrupted"
        return head


class Progress:
    """events, events/s and ETA on one line: redrawn in place on a terminal, a line every
    `every` seconds otherwise (logs stay readable)."""

    def __init__(self, total: int, stream: TextIO, clock: Callable[[], float] = time.monotonic,
                 every: float | None = None):
        self.total, self.stream, self.clock = total, stream, clock
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.every = every if every is not None else (0.25 if self.tty else 5.0)
        self.start = self.last = clock()
        self.shown = False

    def update(self, done: int, rejected: int, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate > 0 else None
        eta = "-" if left is None else time.strftime("%H:%M:%S", time.gmtime(left))
        pct = 100.0 * done / self.total if self.total else 100.0
        text = (f"corridor replay: {done:,}/{self.total:,} events ({pct:.0f}%), {rate:,.0f} events/s, "
                f"ETA {eta}" + (f", {rejected:,} rejected" if rejected else ""))
        if self.tty:
            self.stream.write("\r" + text.ljust(100))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


class _RejectsFile:
    """JSON Lines, opened at the first reject (no file when nothing was rejected)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fh = None

    def write(self, item: dict) -> None:
        if self.fh is None:
            try:
                self.fh = open(self.path, "wb")
            except OSError as exc:
                raise ReplayError(f"cannot write the rejects file {self.path}: {exc.strerror}") from None
        self.fh.write(orjson.dumps(item, default=str) + b"\n")

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def replay(settings, loaded, *, rate: float | None = None, dry_run: bool = False,
           rejects_path: str | Path = DEFAULT_REJECTS, producer=None,
           progress: TextIO | None = None, progress_every: float | None = None,
           clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> Summary:
    """Check and publish `loaded` (sources.Loaded) to settings.input_topics.

    `producer` is anything with kafka-python's send(topic, key=, value=) -> future with
    add_errback, flush(timeout) and close(timeout); None creates a KafkaProducer (not for dry runs).
    """
    from streams.feeds.sources import Checker
    from streams.contract.codec import Rejected

    topics = settings.input_topics
    check = Checker(settings.max_message_bytes, settings.region_code_set | loaded.region_codes)
    if producer is None and not dry_run:
        producer = _producer(settings)          # an unreachable broker fails before anything is written
    summary = Summary(dry_run=dry_run, rejects_path=str(rejects_path))
    rejects = _RejectsFile(rejects_path)
    failures: list[BaseException] = []
    bar = Progress(len(loaded.events), progress if progress is not None else sys.stderr, clock,
                   progress_every)
    interval = 1.0 / rate if rate else 0.0
    next_slot = clock()
    start = clock()
    done = 0
    try:
        for item in loaded.rejects:
            summary.rejected[item["reason"]] += 1
            rejects.write(item)
        for (kind, event), (source, where) in zip(loaded.events, loaded.where):
            summary.events += 1
            try:
                key, value, _doc = check(kind, event)
            except Rejected as err:
                summary.rejected[err.reason] += 1
                rejects.write({"source": source, "where": where, "reason": err.reason,
                               "detail": err.detail, "record": {"kind": kind, **event}})
            else:
                if not dry_run:
                    if interval:
                        now = clock()
                        if next_slot > now:
                            sleep(next_slot - now)
                        next_slot = max(next_slot, now - 0.05) + interval   # no catch-up burst
                    try:
                        producer.send(topics[kind], key=key, value=value).add_errback(failures.append)
                    except Exception as exc:     # kafka-python raises e.g. KafkaTimeoutError at once
                        if not type(exc).__module__.startswith("kafka"):
                            raise
                        failures.append(exc)
                summary.published[topics[kind]] += 1
            done += 1
            bar.update(done, sum(summary.rejected.values()))
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        try:
            if producer is not None:
                producer.flush(timeout=60)
                producer.close(timeout=5)
        finally:
            rejects.close()
            bar.update(done, sum(summary.rejected.values()), force=bar.shown)
            bar.close()
    summary.seconds = clock() - start
    summary.failed = len(failures)
    if failures:
        summary.first_error = (str(failures[0]).splitlines() or [type(failures[0]).__name__])[0]
    return summary


def _producer(settings):
    from kafka import KafkaProducer

    from streams.broker.embedded import BrokerError, create_topics
    from streams.security import kafka_python_options

    options = kafka_python_options(settings)
    try:
        create_topics(settings.bootstrap_servers,
                      {name: settings.partitions for name in settings.input_topics.values()},
                      client_options=options)
        return KafkaProducer(bootstrap_servers=settings.bootstrap_servers, client_id="corridor-replay",
                             acks=1, linger_ms=20, batch_size=256 * 1024, enable_idempotence=False,
                             **options)
    except BrokerError as exc:
        raise ReplayError(str(exc)) from None
    except Exception as exc:     # kafka-python: NoBrokersAvailable and friends
        if type(exc).__module__.startswith("kafka"):
            raise ReplayError(f"cannot publish to {settings.broker}: {exc}".splitlines()[0]) from None
        raise


# ---- CLI glue ---------------------------------------------------------------------------------------
def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `corridor replay` (besides the broker flags the CLI adds)."""
    from streams.feeds.sources import INPUT_FORMATS
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="event log(s) (.jsonl, .csv, .parquet), feed documents, or the directory "
                             "of an order export (--format csv-orders)")
    parser.add_argument("--format", "--input-format", dest="input_format", choices=INPUT_FORMATS,
                        default="auto", help="how to read FILE (default: from the extension)")
    parser.add_argument("--mapping", help="mapping TOML for dcsa / epcis / csv-orders "
                                          "(e.g. streams/feeds/mappings/olist.toml)")
    parser.add_argument("--rate", type=_rate, default=0.0,
                        help="events per second; 0 = as fast as possible (default)")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="check every event with the contract's decoder, publish nothing")
    parser.add_argument("--rejects", default=DEFAULT_REJECTS, metavar="PATH",
                        help=f"JSON Lines file for rejected records (default {DEFAULT_REJECTS}; "
                             "written only if something is rejected)")


def main(settings, args: argparse.Namespace) -> int:
    """`corridor replay`: 0 when everything readable was published (rejects are not failures),
    1 when the broker failed some sends, 130 when interrupted; ReplayError (exit 2) on bad input."""
    from streams.feeds.sources import SourceError, load
    kinds = {name: kind for kind, name in settings.input_topics.items()}
    try:
        loaded = load(args.files, args.input_format, args.mapping, topics=kinds)
    except SourceError as exc:
        raise ReplayError(str(exc)) from None
    summary = replay(settings, loaded, rate=args.rate or None, dry_run=args.dry_run,
                     rejects_path=args.rejects)
    print(summary.line(), flush=True)
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0
