"""`corridor replay` without a broker: dry runs, the rejects file, keys and topics through a fake
producer, pacing and progress on a fake clock. (Publishing for real: tests/e2e/test_olist_parity.py.)"""
import argparse
import io
import json
from pathlib import Path

import orjson
import pytest

from builders import shared_data, journey, ship
from streams.tools import replay
from streams.feeds import sources
from streams.tools.replay import ReplayError
from streams.settings import Settings

DATA = shared_data()
MAPPINGS = Path(__file__).resolve().parents[2] / "streams" / "feeds" / "mappings"
SETTINGS = Settings.from_env({}, broker="kafka://127.0.0.1:1", topic_orders="t-orders",
                             topic_shipments="t-shipments", topic_customs="t-customs")


class FakeFuture:
    def __init__(self, error=None):
        self.error = error

    def add_errback(self, fn):
        if self.error is not None:
            fn(self.error)
        return self


class FakeProducer:
    """kafka-python's producer surface as replay uses it; `fail` makes every n-th send fail."""

    def __init__(self, fail: int | None = None):
        self.sent, self.fail = [], fail
        self.flushed = self.closed = False

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))
        failed = self.fail and len(self.sent) % self.fail == 0
        return FakeFuture(RuntimeError("KafkaTimeoutError: batch expired\nmore") if failed else None)

    def flush(self, timeout=None):
        self.flushed = True

    def close(self, timeout=None):
        self.closed = True


class FakeClock:
    def __init__(self):
        self.t, self.slept = 1000.0, []

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.t += seconds


@pytest.fixture
def log(tmp_path):
    """8 good events (one per kind field style) and 4 bad lines."""
    good = journey("S1", "O1", promised_h=200)
    lines = [orjson.dumps({"kind": k, **e}) for k, e in good]
    bad = ship("S2", "picked_up", 5.0)
    bad["occurred_at"] = "2025-03-01T05:00:00"
    lines += [b"not json at all", orjson.dumps({"kind": "shipments", **bad}),
              orjson.dumps({"topic": "parcels", **ship("S3", "picked_up", 1.0)}),
              orjson.dumps(["a", "list"])]
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n\n")
    return path


def args(*argv):
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def test_dry_run_counts_and_writes_every_reject_with_its_reason(log, tmp_path, capsys):
    rejects = tmp_path / "rejects.jsonl"
    assert replay.main(SETTINGS, args(log, "--dry-run", "--rejects", rejects)) == 0
    line = capsys.readouterr().out.strip()
    assert line == ("corridor replay (dry run): 8 events valid (t-customs 2, t-orders 1, t-shipments 5); "
                    f"4 rejected (not_json 1, unknown_kind 1, bad_document 1, bad_timestamp 1) -> {rejects}")
    items = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [(i["where"], i["reason"]) for i in items] == [
        ("line 9", "not_json"), ("line 11", "unknown_kind"), ("line 12", "bad_document"),
        ("line 10", "bad_timestamp")]
    assert all(i["source"] == str(log) for i in items)
    assert items[3]["detail"] == "occurred_at: '2025-03-01T05:00:00' has no UTC offset"
    assert items[3]["record"]["shipment_id"] == "S2" and items[3]["record"]["kind"] == "shipments"
    assert "topic 'parcels' is not one of" in items[1]["detail"]
    assert items[0]["record"] == "not json at all"


def test_publishes_keyed_by_the_join_ids_to_the_configured_topics(log, tmp_path):
    producer = FakeProducer()
    summary = replay.replay(SETTINGS, sources.load([log]), producer=producer,
                            rejects_path=tmp_path / "r.jsonl", progress=io.StringIO())
    assert producer.flushed and producer.closed
    assert [(t, k) for t, k, _ in producer.sent] == [
        ("t-orders", b"O1"), ("t-shipments", b"S1"), ("t-shipments", b"S1"), ("t-shipments", b"S1"),
        ("t-shipments", b"S1"), ("t-customs", b"S1"), ("t-customs", b"S1"), ("t-shipments", b"S1")]
    # in log order, and without the routing field, which is not part of the contract event
    logged = [orjson.loads(line) for line in log.read_bytes().splitlines()[:8]]
    assert [orjson.loads(v) for _, _, v in producer.sent] == [
        {k: v for k, v in e.items() if k != "kind"} for e in logged]
    assert dict(summary.published) == {"t-orders": 1, "t-shipments": 5, "t-customs": 2}
    assert dict(summary.rejected) == {"not_json": 1, "unknown_kind": 1, "bad_document": 1, "bad_timestamp": 1}
    assert summary.failed == 0


def test_failed_sends_are_counted_and_reported(log, tmp_path):
    producer = FakeProducer(fail=3)
    summary = replay.replay(SETTINGS, sources.load([log]), producer=producer,
                            rejects_path=tmp_path / "r.jsonl", progress=io.StringIO())
    assert summary.failed == 2 and summary.first_error == "KafkaTimeoutError: batch expired"
    assert "2 sends failed: KafkaTimeoutError: batch expired" in summary.line()


def test_rate_paces_the_sends_and_progress_shows_rate_and_eta(log, tmp_path):
    clock, progress = FakeClock(), io.StringIO()
    summary = replay.replay(SETTINGS, sources.load([log]), producer=FakeProducer(), rate=4.0,
                            rejects_path=tmp_path / "r.jsonl", progress=progress, clock=clock,
                            sleep=clock.sleep, progress_every=0.5)
    # 8 sends at 4/s: the first goes at once, each later one waits its 0.25 s slot
    assert clock.slept == [0.25] * 7
    assert summary.seconds == pytest.approx(1.75)
    lines = progress.getvalue().splitlines()
    assert lines[0] == "corridor replay: 3/9 events (33%), 6 events/s, ETA 00:00:01, 3 rejected"
    assert lines[-1] == "corridor replay: 9/9 events (100%), 5 events/s, ETA 00:00:00, 4 rejected"


def test_nothing_rejected_writes_no_rejects_file(tmp_path, capsys):
    path = tmp_path / "ok.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for _, e in journey("S9", "O9")))
    rejects = tmp_path / "rejects.jsonl"
    assert replay.main(SETTINGS, args(path, "--dry-run", "--rejects", rejects)) == 0
    assert not rejects.exists()
    assert "rejected" not in capsys.readouterr().out


def test_olist_export_dry_run(tmp_path, capsys):
    rejects = tmp_path / "rejects.jsonl"
    code = replay.main(SETTINGS, args("--format", "csv-orders", "--mapping", MAPPINGS / "olist.toml",
                                      DATA / "olist-10k", "--dry-run", "--rejects", rejects))
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("corridor replay (dry run): 39,084 events valid (t-orders 9,935, t-shipments 29,149)")
    assert "117 rejected (missing_field 112, irregular_time 5)" in line
    assert len(rejects.read_text().splitlines()) == 117


def test_feed_documents_dry_run(tmp_path, capsys):
    rejects = tmp_path / "rejects.jsonl"
    assert replay.main(SETTINGS, args("--format", "dcsa", DATA / "standards" / "dcsa", "--dry-run",
                                      "--rejects", rejects)) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("corridor replay (dry run): 4 events valid (t-shipments 4)")
    assert "11 rejected (no_equivalent 8, not_actual 2, no_shipment_id 1)" in line
    assert replay.main(SETTINGS, args("--format", "epcis", DATA / "standards" / "epcis", "--dry-run",
                                      "--rejects", rejects)) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("corridor replay (dry run): 3 events valid (t-shipments 3)")
    # the directory also holds the CBV vocabularies as JSON Schema: not EPCIS documents
    assert "5 rejected (unsupported_event 2, bad_document 2, no_shipment_id 1)" in line


@pytest.mark.parametrize("argv, words", [
    (["/nonexistent.jsonl"], "/nonexistent.jsonl does not exist"),
    (["{log}", "--format", "csv-orders"], "csv-orders input needs --mapping FILE"),
    (["{txt}"], "cannot tell the format of"),
    (["{log}", "--format", "dcsa", "--mapping", "{txt}"], "has no [dcsa] section"),
    (["{dir}"], "is a directory"),
])
def test_bad_inputs_are_one_line_replay_errors(log, tmp_path, argv, words):
    txt = tmp_path / "x.txt"
    txt.write_text("")
    with pytest.raises(ReplayError) as err:
        replay.main(SETTINGS, args(*[a.format(log=log, txt=txt, dir=tmp_path) for a in argv]))
    assert words in str(err.value) and "\n" not in str(err.value)



def test_shipped_feed_mappings_load_and_a_destination_changes_the_arrivals(tmp_path, capsys):
    for fmt in ("dcsa", "epcis"):
        assert replay.main(SETTINGS, args("--format", fmt, "--mapping", MAPPINGS / f"{fmt}.toml",
                                          DATA / "standards" / fmt, "--dry-run",
                                          "--rejects", tmp_path / "r.jsonl")) == 0
    assert "4 events valid" in capsys.readouterr().out.splitlines()[0]
    mapping = tmp_path / "dcsa.toml"
    mapping.write_text('[dcsa]\ndefault_destination = "AU"\n[dcsa.destinations]\n"ABC709951" = "DE"\n')
    loaded = sources.load([DATA / "standards" / "dcsa"], "dcsa", mapping)
    # ABC123123123 goes to AU: its ARRIs at FRPAR are transshipment calls; ABC709951 arrives at DEHAM
    assert [(e["shipment_id"], e["event_type"]) for _, e in loaded.events] == [
        ("ABC709951", "departed_origin"), ("ABC709951", "arrived_destination")]
