"""`corridor dlq` without a broker (streams/tools/dlq.py): which dead letters a filter selects, the
headers and partition of a replayed record, the text printed, and bad filters as one line and
exit 2 found before any broker is asked. Dead letters are hand-made with the worker's own header
builder (streams/contract/deadletter.py)."""
from __future__ import annotations

import argparse
from collections import Counter
from datetime import datetime, timezone

import pytest

from streams import cli
from streams.contract import deadletter
from streams.settings import Settings
from streams.tools import dlq
from streams.tools.dlq import DeadLetter, DlqError, Read, Selection, Sent

UTC = timezone.utc
INPUTS = ("orders", "shipments", "customs-events")
SETTINGS = Settings(broker="kafka://127.0.0.1:1")


def at(day: int, hour: int = 0, minute: int = 0, ms: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, 0, ms * 1000, tzinfo=UTC)


def dead(offset: int, *, topic: str = "shipments", partition: int = 0, key: bytes | None = b"S1",
         value: bytes | None = b'{"x":1}', reason: str = "too_large", detail: str = "value is 2000 bytes",
         source_partition: int = 2, source_offset: int = 40, when: datetime | None = None,
         own=(("trace-id", b"abc"),)) -> DeadLetter:
    """A dead letter of `topic`.dlq as the worker writes it."""
    headers = deadletter.headers(list(own), reason, detail, topic, source_partition, source_offset,
                                 now=when or at(28, 9))
    return DeadLetter(f"{topic}.dlq", partition, offset, key, value, tuple(headers))


# ---- the record ----------------------------------------------------------------------------------
def test_a_dead_letter_reads_its_corridor_headers():
    d = dead(7, partition=3, when=at(28, 9, 30, 125), source_partition=2)
    assert (d.reason, d.detail, d.source_topic, d.source_partition) == (
        "too_large", "value is 2000 bytes", "shipments", 2)
    assert d.rejected_at == at(28, 9, 30, 125)
    assert d.where == "shipments.dlq/3/7"
    assert d.header("corridor.source.offset") == "40"


def test_a_record_without_corridor_headers_has_none():
    d = DeadLetter("shipments.dlq", 0, 0, b"k", b"v", (("trace-id", b"abc"),))
    assert (d.reason, d.source_topic, d.source_partition, d.rejected_at, d.detail) == (
        None, None, None, None, "")


def test_replayed_headers_keep_the_records_own_and_say_where_it_was_read():
    d = dead(12, partition=1, own=(("trace-id", b"abc"), ("content-type", b"json")))
    assert dlq.replay_headers(d) == [("trace-id", b"abc"), ("content-type", b"json"),
                                     ("corridor.replayed_from", b"shipments.dlq/1/12")]


def test_a_second_rejection_drops_the_earlier_replays_trace():
    """Replayed, rejected again, replayed again: one corridor.replayed_from, the latest."""
    first = dead(12, partition=1)
    again = dead(30, partition=1, own=tuple(dlq.replay_headers(first)))
    assert dlq.replay_headers(again) == [("trace-id", b"abc"),
                                         ("corridor.replayed_from", b"shipments.dlq/1/30")]


def test_a_replayed_record_goes_where_kafkas_partitioner_puts_its_key():
    # murmur2 as Kafka's Java client (tests/unit/test_partitioning.py checks partition_for)
    assert dlq.target_partition(dead(0, key=b"S1", source_partition=0), 4) == 3
    assert dlq.target_partition(dead(0, key=b"S2", source_partition=3), 4) == 0
    assert dlq.target_partition(dead(0, key=b"S3", source_partition=0), 6) == 5


def test_a_record_without_a_key_goes_back_to_the_partition_it_was_read_from():
    assert dlq.target_partition(dead(0, key=None, source_partition=2), 4) == 2
    assert dlq.target_partition(dead(0, key=None, source_partition=6), 4) == 2


# ---- the filters ---------------------------------------------------------------------------------
def test_offsets_are_a_range_with_both_ends_or_one_offset():
    assert dlq.offsets("3-7") == (3, 7)
    assert dlq.offsets("4") == (4, 4)
    assert dlq.offsets("0-0") == (0, 0)
    assert dlq.offsets(None) is None


@pytest.mark.parametrize("text, words", [
    ("5-2", "--offsets 5-2: the first offset 5 is after the last 2"),
    ("a-b", "--offsets a-b: expected A-B or A"),
    ("-3", "--offsets -3: expected A-B or A"),
    ("3-", "--offsets 3-: expected A-B or A"),
    ("1-2-3", "--offsets 1-2-3: expected A-B or A"),
])
def test_malformed_offsets_say_what_is_wrong(text, words):
    with pytest.raises(DlqError) as err:
        dlq.offsets(text)
    assert str(err.value).startswith(words)


def test_times_are_iso_8601_in_utc():
    assert dlq.when("--since", "2026-11-28") == at(28)
    assert dlq.when("--since", "2026-11-28T10:00:00+02:00") == at(28, 8)
    assert dlq.when("--since", "2026-11-28T10:00:00Z") == at(28, 10)
    assert dlq.when("--until", "2026-11-28T10:00:00") == at(28, 10)      # no offset: UTC
    with pytest.raises(DlqError, match=r"^--until noon: not an ISO-8601 time"):
        dlq.when("--until", "noon")


def test_topics_are_input_topics_or_their_dead_letter_topics():
    assert dlq.source_topics(None, INPUTS) == list(INPUTS)
    assert dlq.source_topics(["shipments.dlq", "orders", "shipments"], INPUTS) == ["shipments", "orders"]
    with pytest.raises(DlqError, match=r"^--topic parcels: not an input topic "
                                       r"\(orders, shipments, customs-events\); a bridge's feed "
                                       r"topic is --feed-topic$"):
        dlq.source_topics(["parcels"], INPUTS)


def test_a_bridges_feed_topic_is_named_with_feed_topic():
    assert dlq.source_topics(None, INPUTS, ["dcsa-raw.dlq", "epcis-raw"]) == ["dcsa-raw", "epcis-raw"]
    assert dlq.source_topics(["orders"], INPUTS, ["dcsa-raw"]) == ["orders", "dcsa-raw"]
    with pytest.raises(DlqError, match=r"^--feed-topic shipments: an input topic: use --topic$"):
        dlq.source_topics(None, INPUTS, ["shipments"])


def test_reasons_are_the_known_ones():
    assert dlq.reasons(["too_large", "expired", "bad_document"]) == {"too_large", "expired",
                                                                     "bad_document"}
    assert dlq.reasons(None) == frozenset()
    with pytest.raises(DlqError, match=r"^--reason toolarge: unknown reason \(one of "):
        dlq.reasons(["toolarge"])


def test_since_must_come_before_until():
    with pytest.raises(DlqError, match="is not before --until"):
        Selection(("orders",), since=at(28, 10), until=at(28, 10))


def test_every_filter_must_match():
    records = [dead(0, partition=0, reason="too_large", when=at(28, 9)),
               dead(1, partition=0, reason="not_json", when=at(28, 10)),
               dead(2, partition=0, reason="too_large", when=at(28, 11)),
               dead(0, partition=1, reason="too_large", when=at(28, 12)),
               dead(0, topic="orders", reason="too_large", key=b"O1", when=at(28, 9))]

    def chosen(selection):
        return [r.where for r in records if selection.matches(r)]

    assert chosen(Selection(("shipments",))) == [
        "shipments.dlq/0/0", "shipments.dlq/0/1", "shipments.dlq/0/2", "shipments.dlq/1/0"]
    assert chosen(Selection(("shipments", "orders"), reasons=frozenset({"not_json"}))) == [
        "shipments.dlq/0/1"]
    assert chosen(Selection(("shipments",), reasons=frozenset({"too_large"}), partition=0)) == [
        "shipments.dlq/0/0", "shipments.dlq/0/2"]
    assert chosen(Selection(("shipments",), offsets=(1, 2))) == ["shipments.dlq/0/1", "shipments.dlq/0/2"]
    assert chosen(Selection(("shipments",), offsets=(0, 0), partition=1)) == ["shipments.dlq/1/0"]
    # since: included; until: excluded
    assert chosen(Selection(("shipments",), since=at(28, 10), until=at(28, 12))) == [
        "shipments.dlq/0/1", "shipments.dlq/0/2"]
    assert chosen(Selection(("orders",), until=at(28, 9, 0, 1))) == ["orders.dlq/0/0"]


def test_a_time_filter_leaves_out_a_record_without_rejected_at():
    bare = DeadLetter("shipments.dlq", 0, 5, b"S1", b"v",
                      (("corridor.reason", b"too_large"), ("corridor.source.topic", b"shipments")))
    assert Selection(("shipments",)).matches(bare)
    assert not Selection(("shipments",), since=at(1)).matches(bare)
    assert not Selection(("shipments",), until=at(30)).matches(bare)


# ---- plan and text -------------------------------------------------------------------------------
def test_a_plan_sends_the_selected_records_to_their_source_topic_and_skips_the_rest():
    records = [dead(0, key=b"S1", reason="too_large"), dead(1, key=b"S2", reason="not_json"),
               dead(2, key=b"S3", reason="too_large", value=None, own=())]
    p = dlq.plan(records, Selection(("shipments",), reasons=frozenset({"too_large"})),
                 {"shipments": 4}.get)
    assert (p.read, p.skipped) == (3, 1)
    assert [(s.topic, s.partition, s.key, s.value, s.headers) for s in p.sends] == [
        ("shipments", 3, b"S1", b'{"x":1}', (("trace-id", b"abc"),
                                             ("corridor.replayed_from", b"shipments.dlq/0/0"))),
        ("shipments", 1, b"S3", None, (("corridor.replayed_from", b"shipments.dlq/0/2"),))]


def test_a_record_without_corridor_headers_is_shown_but_never_replayed():
    stray = DeadLetter("shipments.dlq", 2, 9, b"S9", b"{}", (("trace-id", b"abc"),))
    records = [dead(0, key=b"S1"), stray]
    rows = dlq.summarize(records, Selection(("shipments",)))
    assert [(r.topic, r.reason, r.count, r.first) for r in rows] == [
        ("shipments", "-", 1, None), ("shipments", "too_large", 1, at(28, 9))]
    p = dlq.plan(records, Selection(("shipments",)), {"shipments": 4}.get)
    assert ([s.dead.where for s in p.sends], p.skipped) == (["shipments.dlq/0/0"], 1)


def test_a_plan_refuses_a_source_topic_the_broker_does_not_have():
    with pytest.raises(DlqError, match=r"^source topic missing at the broker: shipments \(1 dead letters\)$"):
        dlq.plan([dead(0)], Selection(("shipments",)), {}.get)


def test_show_counts_per_source_topic_and_reason():
    records = [dead(0, reason="too_large", detail="value is 2000 bytes, max 1024", when=at(28, 9)),
               dead(1, reason="too_large", detail="value is 3000 bytes, max 1024", when=at(28, 11, 5, 7)),
               dead(2, reason="too_large", detail="value is 2000 bytes, max 1024", when=at(27, 23)),
               dead(0, topic="orders", key=b"O1", reason="schema", detail="$.x: " + "y" * 100,
                    when=at(28, 10))]
    rows = dlq.summarize(records, Selection(INPUTS))
    assert [(r.topic, r.reason, r.count, r.first, r.last) for r in rows] == [
        ("shipments", "too_large", 3, at(27, 23), at(28, 11, 5, 7)),
        ("orders", "schema", 1, at(28, 10), at(28, 10))]
    assert dlq.show_text(rows, 4, ["orders.dlq", "shipments.dlq"]).splitlines() == [
        "4 dead letters in orders.dlq, shipments.dlq",
        "source topic  reason     count  first rejected_at         last rejected_at          details",
        "shipments     too_large      3  2026-11-27T23:00:00.000Z  2026-11-28T11:05:00.007Z  "
        "value is 2000 bytes, max 1024",
        " " * 84 + "value is 3000 bytes, max 1024",
        "orders        schema         1  2026-11-28T10:00:00.000Z  2026-11-28T10:00:00.000Z  "
        "$.x: " + "y" * 72 + "...",
    ]


def test_show_with_a_reason_filter_and_nothing_left():
    rows = dlq.summarize([dead(0, reason="too_large")], Selection(INPUTS, reasons=frozenset({"expired"})))
    assert rows == []
    assert dlq.show_text(rows, 1, ["shipments.dlq"]) == "no dead letters in shipments.dlq (1 read)"


def test_dry_run_text_lists_counts_and_the_first_records():
    records = [dead(i, key=f"S{i}".encode(), reason="too_large" if i % 3 else "not_json",
                    when=at(28, 9, i)) for i in range(8)]
    p = dlq.plan(records, Selection(("shipments",)), {"shipments": 4}.get)
    lines = dlq.dry_run_text(p).splitlines()
    assert lines[:4] == ["would replay 8 of 8 dead letters read",
                         "  shipments            not_json                    3",
                         "  shipments            too_large                   5",
                         "first 5:"]
    assert lines[4] == ("  shipments.dlq/0/0 -> shipments[0] key S0 not_json rejected "
                        "2026-11-28T09:00:00.000Z: value is 2000 bytes")
    assert len(lines) == 9
    assert dlq.summary_line(p, dry_run=True) == (
        "corridor dlq replay (dry run): 8 would be replayed (shipments 8), 0 skipped")


# ---- main with fakes for the broker ---------------------------------------------------------------
class FakeBroker:
    """The reader and sender `dlq.main` takes: records in, sends kept."""

    def __init__(self, records, partitions=None, fail: dict | None = None):
        self.records, self.fail = records, fail
        self.partitions = partitions or {"orders": 4, "shipments": 4, "customs-events": 4}
        self.read_topics: list[list[str]] = []
        self.sent: list = []

    def read(self, settings, topics):
        self.read_topics.append(list(topics))
        return Read([r for r in self.records if r.topic in topics], dict(self.partitions))

    def send(self, settings, sends):
        self.sent.extend(sends)
        failed = Counter(self.fail or {})
        return Sent(failed=failed, first_error="NotLeaderForPartitionError" if failed else None)


def run(argv, fake):
    args = cli.build_parser().parse_args(argv)
    printed: list[str] = []
    code = dlq.main(SETTINGS, args, reader=fake.read, sender=fake.send, out=printed.append)
    return code, "\n".join(printed)


def records_of_two_reasons():
    return [dead(0, key=b"S1", reason="too_large", when=at(28, 9)),
            dead(1, key=b"S2", reason="not_json", when=at(28, 10)),
            dead(2, key=b"S3", reason="too_large", when=at(28, 11)),
            dead(0, topic="orders", key=b"O1", reason="too_large", when=at(28, 9))]


def test_replay_sends_the_selection_and_says_how_many():
    fake = FakeBroker(records_of_two_reasons())
    code, text = run(["dlq", "replay", "--topic", "shipments", "--reason", "too_large"], fake)
    assert (code, text) == (0, "corridor dlq replay: 2 replayed (shipments 2), 1 skipped")
    assert fake.read_topics == [["shipments.dlq"]]
    assert [(s.topic, s.partition, s.key) for s in fake.sent] == [("shipments", 3, b"S1"),
                                                                  ("shipments", 1, b"S3")]


def test_replay_by_offsets_and_time():
    fake = FakeBroker(records_of_two_reasons())
    code, text = run(["dlq", "replay", "--topic", "shipments", "--offsets", "1-2", "--partition", "0",
                      "--since", "2026-11-28T10:30:00Z"], fake)
    assert (code, text) == (0, "corridor dlq replay: 1 replayed (shipments 1), 2 skipped")
    assert [s.dead.where for s in fake.sent] == ["shipments.dlq/0/2"]


def test_a_dry_run_sends_nothing():
    fake = FakeBroker(records_of_two_reasons())
    code, text = run(["dlq", "replay", "--topic", "shipments", "--topic", "orders", "--dry-run"], fake)
    assert code == 0 and fake.sent == []
    assert text.splitlines()[0] == "would replay 4 of 4 dead letters read"
    assert text.splitlines()[-1] == (
        "corridor dlq replay (dry run): 4 would be replayed (orders 1, shipments 3), 0 skipped")


def test_sends_the_broker_failed_are_exit_status_1():
    fake = FakeBroker(records_of_two_reasons(), fail={"shipments": 1})
    code, text = run(["dlq", "replay", "--topic", "shipments", "--topic", "orders"], fake)
    assert len(fake.sent) == 4
    assert (code, text) == (1, "corridor dlq replay: 3 replayed (orders 1, shipments 2), 0 skipped; "
                               "1 failed (shipments 1): NotLeaderForPartitionError")


def test_a_bridge_dead_letter_goes_back_to_its_feed_topic():
    """The bridge's dead letters (streams/feeds/bridge.py) carry corridor.where and
    corridor.format too; a replay drops them with the rest of corridor's headers."""
    doc = deadletter.headers([("ce-id", b"1")], "not_actual", "DCSA EST event", "dcsa-raw", 1, 17,
                             extra=[("corridor.where", b"EV-9"), ("corridor.format", b"dcsa")],
                             now=at(28, 9))
    fake = FakeBroker([DeadLetter("dcsa-raw.dlq", 1, 3, b"BKG-1", b'{"events":[]}', tuple(doc))],
                      partitions={"dcsa-raw": 2, **FakeBroker([]).partitions})
    code, text = run(["dlq", "replay", "--feed-topic", "dcsa-raw", "--reason", "not_actual"], fake)
    assert (code, text) == (0, "corridor dlq replay: 1 replayed (dcsa-raw 1), 0 skipped")
    assert fake.read_topics == [["dcsa-raw.dlq"]]
    assert [(s.topic, s.key, s.value, s.headers) for s in fake.sent] == [
        ("dcsa-raw", b"BKG-1", b'{"events":[]}',
         (("ce-id", b"1"), ("corridor.replayed_from", b"dcsa-raw.dlq/1/3")))]
    assert fake.sent[0].partition == dlq.target_partition(fake.sent[0].dead, 2)


def test_show_reads_every_input_dead_letter_topic_by_default():
    fake = FakeBroker(records_of_two_reasons())
    code, text = run(["dlq", "show"], fake)
    assert code == 0
    assert fake.read_topics == [["orders.dlq", "shipments.dlq", "customs-events.dlq"]]
    assert [line.split()[:3] for line in text.splitlines()[2:]] == [
        ["shipments", "too_large", "2"], ["orders", "too_large", "1"], ["shipments", "not_json", "1"]]


# ---- bad flags: one line, exit 2, no broker ---------------------------------------------------------
@pytest.fixture
def no_broker(monkeypatch):
    """The real reader and sender replaced by ones that fail the test if called."""
    def refuse(*_a, **_k):
        raise AssertionError("the broker was asked")
    monkeypatch.setattr(dlq, "read_dead_letters", refuse)
    monkeypatch.setattr(dlq, "send", refuse)


@pytest.mark.parametrize("argv, message", [
    (["dlq", "replay", "--topic", "orders", "--offsets", "5-2"],
     "corridor dlq: --offsets 5-2: the first offset 5 is after the last 2"),
    (["dlq", "replay", "--topic", "parcels"],
     "corridor dlq: --topic parcels: not an input topic (orders, shipments, customs-events); "
     "a bridge's feed topic is --feed-topic"),
    (["dlq", "replay", "--reason", "too_large"],
     "corridor dlq: replay needs --topic T (an input topic) or --feed-topic F: whose dead letters "
     "to re-publish"),
    (["dlq", "replay", "--topic", "orders", "--since", "last tuesday"],
     "corridor dlq: --since last tuesday: not an ISO-8601 time (e.g. 2026-11-28T09:30:00Z)"),
    (["dlq", "replay", "--topic", "orders", "--since", "2026-11-29", "--until", "2026-11-28"],
     "corridor dlq: --since 2026-11-29T00:00:00+00:00 is not before --until 2026-11-28T00:00:00+00:00"),
    (["dlq", "replay", "--topic", "orders", "--partition", "-1"],
     "corridor dlq: --partition -1: must be >= 0"),
    (["dlq", "show", "--topic", "orders", "--reason", "toolarge"], None),
])
def test_a_bad_filter_is_one_line_and_status_2_before_the_broker(argv, message, no_broker, capsys):
    assert cli.main([*argv, "--broker", "kafka://127.0.0.1:1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    if message is None:
        assert lines[0].startswith("corridor dlq: --reason toolarge: unknown reason (one of ")
        assert "too_large" in lines[0] and "expired" in lines[0]
    else:
        assert lines[0] == message


@pytest.mark.parametrize("argv, message", [
    (["dlq", "replay", "--topic", "orders", "--partition", "x"],
     "corridor dlq replay: argument --partition: invalid int value: 'x' "
     "(see corridor dlq replay --help)"),
    (["dlq"], "corridor dlq: the following arguments are required: {show,replay} "
              "(see corridor dlq --help)"),
])
def test_a_bad_flag_is_one_line_and_status_2(argv, message, no_broker, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines() == [message]


def test_the_flags_the_runbook_names_parse():
    """deploy/RUNBOOK.md: `corridor dlq replay --topic T [--reason R] [--partition P]
    [--offsets A-B] [--since ISO] [--until ISO] [--dry-run]`."""
    args = cli.build_parser().parse_args(
        ["dlq", "replay", "--topic", "shipments", "--reason", "too_large", "--partition", "2",
         "--offsets", "10-20", "--since", "2026-11-28", "--until", "2026-11-29", "--dry-run"])
    assert isinstance(args, argparse.Namespace)
    assert dlq.selection_from(args, INPUTS) == Selection(
        ("shipments",), frozenset({"too_large"}), 2, (10, 20), at(28), at(29))
    assert args.dry_run is True
