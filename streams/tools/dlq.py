"""`corridor dlq show | replay`: inspect dead letters, and re-publish them to their source topics
once the cause is fixed (issue 15). docs/dead-letters.md is the operator's guide.

A dead letter is an input record the worker (or the feed bridge) rejected, written unchanged to
``<topic>.dlq`` with ``corridor.*`` headers (streams/contract/deadletter.py): the input topics'
(``--topic``) or a bridge's raw feed topic's (``--feed-topic``). `show` counts them per source
topic and reason; `replay` selects some (by source topic, reason, dead-letter partition and
offsets, rejected_at) and sends each one's original key and value back to its
``corridor.source.topic``, with its own headers minus ``corridor.*`` plus
``corridor.replayed_from: <dlq topic>/<partition>/<offset>``. The worker drops a record it has
already applied by its ``event_id``, which is what makes a replay safe to repeat.

Both read each dead-letter topic from its beginning to the end it had when the command started,
and never wait for more: the records a replay gets dead-lettered again (a cause not fixed after
all) are not read back by the same run.

The selection, the headers, the partition and the text are pure functions of hand-made records
(tests/unit/test_dlq.py); `read_dead_letters` and `send` are the Kafka I/O (kafka-python, with the
client options of streams/security.py).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Sequence

from streams.errors import CliError

#: Every header corridor adds starts with this; a replay drops them (the record is new input).
CORRIDOR_PREFIX = "corridor."
#: The header a replayed record carries: ``<dlq topic>/<partition>/<offset>`` it was read from.
REPLAYED_FROM = "corridor.replayed_from"
#: How many selected records a dry run lists, and how many details per row `show` prints.
EXAMPLES = 5
DETAILS_PER_ROW = 3
DETAIL_WIDTH = 80
#: The longest reading a dead-letter topic to its end may take before giving up.
READ_TIMEOUT = 120.0


class DlqError(CliError):
    """A bad filter, an unreachable broker or a missing topic: one line, exit status 2."""


# ---- the records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic, with the corridor headers read out (None if absent)."""
    topic: str                  # the dead-letter topic
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace") if v is not None else None
        return None

    @property
    def reason(self) -> str | None:
        return self.header("corridor.reason")

    @property
    def detail(self) -> str:
        return self.header("corridor.detail") or ""

    @property
    def source_topic(self) -> str | None:
        return self.header("corridor.source.topic")

    @property
    def origin(self) -> str:
        """The source topic: corridor.source.topic, else the dead-letter topic's name without
        ``.dlq`` (a record some other producer wrote there)."""
        from streams.topics import DLQ_SUFFIX
        base = self.topic[:-len(DLQ_SUFFIX)] if self.topic.endswith(DLQ_SUFFIX) else self.topic
        return self.source_topic or base

    @property
    def source_partition(self) -> int | None:
        text = self.header("corridor.source.partition")
        return int(text) if text is not None and text.isdigit() else None

    @property
    def rejected_at(self) -> datetime | None:
        text = self.header("corridor.rejected_at")
        try:
            return as_utc(datetime.fromisoformat(text)) if text else None
        except ValueError:
            return None

    @property
    def where(self) -> str:
        """``<dlq topic>/<partition>/<offset>``: what corridor.replayed_from says."""
        return f"{self.topic}/{self.partition}/{self.offset}"


def as_utc(at: datetime) -> datetime:
    """A naive time is taken as UTC."""
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def replay_headers(dead: DeadLetter) -> list[tuple[str, bytes]]:
    """The replayed record's headers: its own (the producer's), in order, without any
    ``corridor.*`` one (this rejection's, an earlier replay's), then where it was read from."""
    own = [(k, v) for k, v in dead.headers if not k.startswith(CORRIDOR_PREFIX)]
    return own + [(REPLAYED_FROM, dead.where.encode())]


def target_partition(dead: DeadLetter, partitions: int) -> int:
    """Where the replayed record goes among the source topic's `partitions`: Kafka's default
    partitioner of its key (streams/domain/partitioning.py, as `corridor replay` and the join
    need); a record without a key goes back to the partition it was read from."""
    from streams.domain.partitioning import partition_for
    if dead.key is not None:
        return partition_for(dead.key, partitions)
    return (dead.source_partition or 0) % partitions


# ---- the filters ---------------------------------------------------------------------------------
def known_reasons() -> set[str]:
    """Every reason a dead letter can carry: the contract's, `expired`, `internal_error`, the feed
    adapters'."""
    from streams.contract.codec import REASONS as CONTRACT
    from streams.feeds import REASONS as FEEDS
    return set(CONTRACT) | {"expired", "internal_error"} | set(FEEDS)


def source_topics(names: Sequence[str] | None, inputs: Iterable[str],
                  feeds: Sequence[str] | None = None) -> list[str]:
    """The source topics named, in order without repeats: input topics (`names`, ``--topic``) and
    raw feed topics of `corridor bridge` (`feeds`, ``--feed-topic``), each also as its ``.dlq``.
    All the input topics when none is named."""
    from streams.topics import DLQ_SUFFIX
    inputs = list(inputs)
    if not names and not feeds:
        return inputs
    out: list[str] = []
    for flag, given in (("--topic", names or ()), ("--feed-topic", feeds or ())):
        for name in given:
            topic = name[:-len(DLQ_SUFFIX)] if name.endswith(DLQ_SUFFIX) else name
            if flag == "--topic" and topic not in inputs:
                raise DlqError(f"--topic {name}: not an input topic ({', '.join(inputs)}); "
                               "a bridge's feed topic is --feed-topic")
            if flag == "--feed-topic" and (topic in inputs or not topic.strip()):
                raise DlqError(f"--feed-topic {name}: "
                               + ("an input topic: use --topic" if topic in inputs else "empty name"))
            if topic not in out:
                out.append(topic)
    return out


def reasons(names: Sequence[str] | None) -> frozenset[str]:
    """The reasons named (all when none), each checked: a typo would select nothing, silently."""
    known = known_reasons()
    for name in names or ():
        if name not in known:
            raise DlqError(f"--reason {name}: unknown reason (one of {', '.join(sorted(known))})")
    return frozenset(names or ())


def offsets(text: str | None) -> tuple[int, int] | None:
    """``A-B`` (both included) or ``A``: offsets of the dead-letter topic's partition(s)."""
    if text is None:
        return None
    first, sep, last = text.strip().partition("-")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise DlqError(f"--offsets {text}: expected A-B or A, offsets of the dead-letter topic "
                       "(whole numbers >= 0)")
    lo, hi = int(first), int(last) if sep else int(first)
    if lo > hi:
        raise DlqError(f"--offsets {text}: the first offset {lo} is after the last {hi}")
    return lo, hi


def when(flag: str, text: str | None) -> datetime | None:
    """An ISO-8601 time (a date alone is its midnight; no offset is UTC)."""
    if text is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise DlqError(f"{flag} {text}: not an ISO-8601 time (e.g. 2026-11-28T09:30:00Z)") from None


@dataclass(frozen=True)
class Selection:
    """The filters of `replay` (and `show`), ANDed; a None / empty filter selects everything."""
    topics: tuple[str, ...]                  # source topics; their ``.dlq`` topics are read
    reasons: frozenset[str] = frozenset()
    partition: int | None = None             # of the dead-letter topic
    offsets: tuple[int, int] | None = None   # of the dead-letter topic, both ends included
    since: datetime | None = None            # rejected_at >= since
    until: datetime | None = None            # rejected_at < until

    def __post_init__(self):
        if self.partition is not None and self.partition < 0:
            raise DlqError(f"--partition {self.partition}: must be >= 0")
        if self.since and self.until and self.since >= self.until:
            raise DlqError(f"--since {self.since.isoformat()} is not before --until "
                           f"{self.until.isoformat()}")

    def matches(self, dead: DeadLetter) -> bool:
        if dead.origin not in self.topics:
            return False
        if self.reasons and dead.reason not in self.reasons:
            return False
        if self.partition is not None and dead.partition != self.partition:
            return False
        if self.offsets is not None and not self.offsets[0] <= dead.offset <= self.offsets[1]:
            return False
        if self.since is not None or self.until is not None:
            at = dead.rejected_at
            if at is None or (self.since is not None and at < self.since) or (
                    self.until is not None and at >= self.until):
                return False
        return True


def selection_from(args: argparse.Namespace, inputs: Iterable[str]) -> Selection:
    """The filters of `args`, checked: a DlqError (one line, exit 2) before any broker is asked."""
    feeds = getattr(args, "feed_topics", None)
    if args.dlq_action == "replay" and not args.topics and not feeds:
        raise DlqError("replay needs --topic T (an input topic) or --feed-topic F: "
                       "whose dead letters to re-publish")
    return Selection(topics=tuple(source_topics(args.topics, inputs, feeds)),
                     reasons=reasons(args.reasons),
                     partition=getattr(args, "partition", None),
                     offsets=offsets(getattr(args, "offsets", None)),
                     since=when("--since", getattr(args, "since", None)),
                     until=when("--until", getattr(args, "until", None)))


# ---- show ----------------------------------------------------------------------------------------
@dataclass
class Row:
    topic: str
    reason: str
    count: int = 0
    first: datetime | None = None
    last: datetime | None = None
    details: list[str] = field(default_factory=list)


def summarize(dead_letters: Iterable[DeadLetter], selection: Selection) -> list[Row]:
    """One row per (source topic, reason) of the selected dead letters, most first. A record
    without the corridor headers (not written by corridor) counts under reason ``-``."""
    rows: dict[tuple[str, str], Row] = {}
    for dead in dead_letters:
        if not selection.matches(dead):
            continue
        key = (dead.origin, dead.reason or "-")
        row = rows.setdefault(key, Row(*key))
        row.count += 1
        at = dead.rejected_at
        if at is not None:
            row.first = at if row.first is None else min(row.first, at)
            row.last = at if row.last is None else max(row.last, at)
        detail = _short(dead.detail)
        if detail and detail not in row.details and len(row.details) < DETAILS_PER_ROW:
            row.details.append(detail)
    return sorted(rows.values(), key=lambda r: (-r.count, r.topic, r.reason))


def show_text(rows: list[Row], read: int, dlq_topics: Sequence[str]) -> str:
    """The table `corridor dlq show` prints."""
    from streams.contract.deadletter import iso_ms
    topics = ", ".join(dlq_topics)
    if not rows:
        return f"no dead letters in {topics} ({read:,} read)"
    head = ("source topic", "reason", "count", "first rejected_at", "last rejected_at", "details")
    cells = [(r.topic, r.reason, f"{r.count:,}", iso_ms(r.first) if r.first else "-",
              iso_ms(r.last) if r.last else "-") for r in rows]
    widths = [max(len(head[i]), *(len(c[i]) for c in cells)) for i in range(5)]

    def line(values) -> str:
        return "  ".join(v.rjust(w) if i == 2 else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths)))

    indent = sum(widths) + 2 * 5
    out = [f"{sum(r.count for r in rows):,} dead letters in {topics}", line(head[:5]) + "  " + head[5]]
    for row, c in zip(rows, cells):
        details = row.details or ["-"]
        out.append(line(c) + "  " + details[0])
        out += [" " * indent + d for d in details[1:]]
    return "\n".join(out)


def _short(text: str, width: int = DETAIL_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


# ---- replay --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """One record to re-publish."""
    dead: DeadLetter
    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass
class Plan:
    sends: list[Send] = field(default_factory=list)
    skipped: int = 0            # read but not selected, or not a corridor dead letter
    read: int = 0

    def by_topic(self) -> Counter:
        return Counter(s.topic for s in self.sends)

    def by_topic_reason(self) -> Counter:
        return Counter((s.topic, s.dead.reason or "-") for s in self.sends)


def plan(dead_letters: Iterable[DeadLetter], selection: Selection,
         partitions: Callable[[str], int | None]) -> Plan:
    """What a replay sends: the selected dead letters, each to its source topic and partition
    (`partitions(topic)` is the topic's partition count, None when it does not exist). A record
    without corridor.source.topic was not written by corridor: it is skipped, never sent."""
    out = Plan()
    missing: Counter = Counter()
    for dead in dead_letters:
        out.read += 1
        if dead.source_topic is None or not selection.matches(dead):
            out.skipped += 1
            continue
        count = partitions(dead.source_topic)
        if not count:
            missing[dead.source_topic] += 1
            continue
        out.sends.append(Send(dead, dead.source_topic, target_partition(dead, count), dead.key,
                              dead.value, tuple(replay_headers(dead))))
    if missing:
        raise DlqError("source topic missing at the broker: " + ", ".join(
            f"{t} ({n:,} dead letters)" for t, n in sorted(missing.items())))
    return out


def dry_run_text(p: Plan, examples: int = EXAMPLES) -> str:
    """What `replay --dry-run` prints: counts per source topic and reason, the first few."""
    out = [f"would replay {len(p.sends):,} of {p.read:,} dead letters read"]
    for (topic, reason), n in sorted(p.by_topic_reason().items()):
        out.append(f"  {topic:<20} {reason:<20} {n:>8,}")
    if p.sends:
        out.append(f"first {min(examples, len(p.sends))}:")
    for s in p.sends[:examples]:
        at = s.dead.header("corridor.rejected_at") or "-"
        out.append(f"  {s.dead.where} -> {s.topic}[{s.partition}] key {_key_text(s.key)} "
                   f"{s.dead.reason or '-'} rejected {at}: {_short(s.dead.detail, 60)}")
    return "\n".join(out)


def summary_line(p: Plan, *, dry_run: bool, sent: "Sent | None" = None) -> str:
    """The last line: how many replayed per source topic, how many skipped (and failed)."""
    done = p.by_topic()
    failed = sent.failed if sent is not None else Counter()
    done.subtract(failed)
    topics = ", ".join(f"{t} {n:,}" for t, n in sorted(done.items()) if n) or "nothing"
    verb = "would be replayed" if dry_run else "replayed"
    text = (f"corridor dlq replay{' (dry run)' if dry_run else ''}: {sum(done.values()):,} "
            f"{verb} ({topics}), {p.skipped:,} skipped")
    if sent is not None and sent.failed:
        text += (f"; {sum(failed.values()):,} failed (" + ", ".join(
            f"{t} {n:,}" for t, n in sorted(failed.items())) + f"): {sent.first_error}")
    return text


def _key_text(key: bytes | None) -> str:
    if key is None:
        return "-"
    return _short(key.decode("utf-8", "replace"), 40)


# ---- Kafka I/O -----------------------------------------------------------------------------------
@dataclass
class Read:
    """The dead letters read, and the partition count of every topic the broker has."""
    dead_letters: list[DeadLetter]
    partitions: dict[str, int]


def read_dead_letters(settings, dlq_topics: Sequence[str], timeout: float = READ_TIMEOUT) -> Read:
    """Every record of `dlq_topics` from the beginning to the end each partition had when the
    read started; a topic that does not exist is empty (and is not created).

    The end of a partition is the high watermark of its first fetch (at least ListOffsets'
    answer): the embedded broker's ListOffsets answers the base offset of the last record batch
    + 1 (docs/broker.md "ListOffsets"), which would miss the rest of that batch; a fetch's high
    watermark is right on Tansu and on Kafka."""
    from kafka import KafkaConsumer, TopicPartition

    from streams.security import kafka_python_options
    consumer = None
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, client_id="corridor-dlq",
                                 group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                 bootstrap_timeout_ms=10000, request_timeout_ms=30000,
                                 **kafka_python_options(settings))
        # Metadata of a topic by name would create it on Tansu: list first, ask only for those.
        existing = consumer.topics()
        partitions = {t: len(consumer.partitions_for_topic(t) or ()) for t in existing}
        tps = [TopicPartition(t, p) for t in dlq_topics if t in existing
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        out: list[DeadLetter] = []
        if not tps:
            return Read(out, partitions)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        listed = consumer.end_offsets(tps)
        ends: dict = {}
        remaining = set(tps)
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                late = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(remaining))
                raise DlqError(f"did not reach the end of {late} within {timeout:.0f} s")
            batch = consumer.poll(timeout_ms=200)
            for tp in remaining:
                high = consumer.highwater(tp)
                if tp not in ends and high is not None:
                    ends[tp] = max(high, listed.get(tp) or 0)
            for tp, records in batch.items():
                for r in records:
                    if tp in ends and r.offset < ends[tp]:
                        out.append(DeadLetter(r.topic, r.partition, r.offset, r.key, r.value,
                                              tuple(r.headers or ())))
            done = {tp for tp in remaining if tp in ends and consumer.position(tp) >= ends[tp]}
            if done:
                consumer.pause(*done)
                remaining -= done
        out.sort(key=lambda d: (d.topic, d.partition, d.offset))
        return Read(out, partitions)
    except DlqError:
        raise
    except Exception as exc:    # kafka-python: NoBrokersAvailable and friends
        if type(exc).__module__.startswith("kafka"):
            raise DlqError(f"cannot read the dead letters at {settings.broker}: {exc}"
                           .splitlines()[0]) from None
        raise
    finally:
        if consumer is not None:
            consumer.close()


@dataclass
class Sent:
    failed: Counter = field(default_factory=Counter)     # source topic -> sends not acknowledged
    first_error: str | None = None


def send(settings, sends: Sequence[Send], timeout: float = 60.0) -> Sent:
    """Publish `sends` and wait until the broker has acknowledged every one (acks=all)."""
    from kafka import KafkaProducer

    from streams.security import kafka_python_options
    result = Sent()
    if not sends:
        return result
    try:
        producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, client_id="corridor-dlq",
                                 acks="all", linger_ms=5, enable_idempotence=False,
                                 **kafka_python_options(settings))
    except Exception as exc:
        if type(exc).__module__.startswith("kafka"):
            raise DlqError(f"cannot publish to {settings.broker}: {exc}".splitlines()[0]) from None
        raise
    futures, errors = [], []
    try:
        for s in sends:
            try:
                futures.append((s.topic, producer.send(s.topic, key=s.key, value=s.value,
                                                       partition=s.partition, headers=list(s.headers))))
            except Exception as exc:    # kafka-python raises e.g. KafkaTimeoutError at once
                if not type(exc).__module__.startswith("kafka"):
                    raise
                errors.append((s.topic, exc))
        producer.flush(timeout=timeout)
    finally:
        producer.close(timeout=5)
    errors += [(topic, f.exception) for topic, f in futures if not f.is_done or f.failed()]
    result.failed = Counter(topic for topic, _ in errors)
    if errors:
        first = errors[0][1]
        result.first_error = ((str(first).splitlines() or [type(first).__name__])[0] if first
                              else "not acknowledged in time")
    return result


# ---- CLI glue ------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]
                  ) -> None:
    """The `show` and `replay` actions of `corridor dlq`; `common` adds the broker flags."""
    actions = parser.add_subparsers(dest="dlq_action", required=True, metavar="{show,replay}",
                                    parser_class=type(parser))
    p = actions.add_parser("show", help="count dead letters per source topic and reason")
    common(p)
    _filters(p, replay=False)

    p = actions.add_parser("replay", help="re-publish dead letters to their source topics")
    common(p)
    _filters(p, replay=True)
    p.add_argument("--partition", type=int, help="only this partition of the dead-letter topic")
    p.add_argument("--offsets", metavar="A-B",
                   help="only these offsets of the dead-letter topic (both included; A alone: one)")
    p.add_argument("--since", metavar="ISO", help="only dead letters rejected at or after this time")
    p.add_argument("--until", metavar="ISO", help="only dead letters rejected before this time")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print what would be sent, send nothing")


def _filters(p: argparse.ArgumentParser, *, replay: bool) -> None:
    p.add_argument("--topic", dest="topics", action="append", metavar="T",
                   help="input topic whose T.dlq is read; repeatable"
                        + (" (--topic or --feed-topic is required)" if replay else
                           " (default: every input topic)"))
    p.add_argument("--feed-topic", dest="feed_topics", action="append", metavar="F",
                   help="raw feed topic of `corridor bridge --from F` whose F.dlq is read; repeatable")
    p.add_argument("--reason", dest="reasons", action="append", metavar="R",
                   help="only this reason; repeatable (default: every reason)")


def main(settings, args: argparse.Namespace, *, reader=None, sender=None, out=print) -> int:
    """`corridor dlq show|replay`: 0 on success, 1 when the broker failed some sends; DlqError
    (exit 2) on a bad filter (before the broker is asked) or an unreachable broker. `reader` and
    `sender` default to read_dead_letters and send (tests pass fakes)."""
    from streams.topics import dlq_name
    reader = reader or read_dead_letters
    sender = sender or send
    selection = selection_from(args, settings.input_topics.values())
    dlq_topics = [dlq_name(t) for t in selection.topics]
    read = reader(settings, dlq_topics)
    if args.dlq_action == "show":
        out(show_text(summarize(read.dead_letters, selection), len(read.dead_letters), dlq_topics))
        return 0
    p = plan(read.dead_letters, selection, read.partitions.get)
    if args.dry_run:
        out(dry_run_text(p))
        out(summary_line(p, dry_run=True))
        return 0
    sent = sender(settings, p.sends)
    out(summary_line(p, dry_run=False, sent=sent))
    return 1 if sent.failed else 0
