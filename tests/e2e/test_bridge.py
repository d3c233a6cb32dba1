"""`corridor bridge`: the real broker, the bridge as a `python -m streams bridge` process, raw DCSA
documents produced with kafka-python; the contract events and dead letters read back exactly.

Each test has its own raw topic, input topic names (CORRIDOR_TOPIC_*) and group, so they share the
module's broker without seeing each other's records.
"""
from builders import shared_data
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from harness import REPO, consume_all, poll
from streams.feeds import dcsa, epcis
from streams.feeds.sources import Checker
from streams.feeds.bridge import translate
from streams.broker.embedded import create_topics

STANDARDS = shared_data() / "standards"
TNT_220 = STANDARDS / "dcsa" / "tnt-220-response.json"
E = "3cecb101-7a1a-43a4-9d62-e88a131651e"          # the v2.2 example's eventIDs are E + 2..8
ARRIVED = {"shipment_id": "ABC123123123", "event_type": "arrived_destination",
           "occurred_at": "2021-01-09T14:12:56+01:00", "destination_country": "FR", "carrier": "MAEU",
           "location": {"country": "FR", "facility": "FRPAR"}}
#: Why the example's other events are not converted.
REJECTED = {E + "3": "no_equivalent", E + "4": "not_actual", E + "6": "no_equivalent",
            E + "7": "not_actual", E + "8": "no_equivalent"}


@pytest.fixture
def topics(broker):
    """Fresh raw and input topic names, and the environment that points the bridge at them."""
    tag = uuid.uuid4().hex[:8]
    names = {"raw": f"dcsa-raw-{tag}", "orders": f"orders-{tag}", "shipments": f"shipments-{tag}",
             "customs": f"customs-{tag}"}
    create_topics(broker.bootstrap, {names["raw"]: 2})
    env = dict(os.environ, CORRIDOR_BROKER=broker.url, CORRIDOR_PROFILE="embedded",
               CORRIDOR_APP_ID=f"bridge-test-{tag}", CORRIDOR_TOPIC_ORDERS=names["orders"],
               CORRIDOR_TOPIC_SHIPMENTS=names["shipments"], CORRIDOR_TOPIC_CUSTOMS=names["customs"],
               PYTHONUNBUFFERED="1")
    return names, env


def send_raw(broker, topic, messages):
    """(key, value bytes) messages, in order, to partition 0 (so offsets are predictable)."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, enable_idempotence=False)
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value, partition=0)
        producer.flush(30)
    finally:
        producer.close(5)


def bridge(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "streams", "bridge", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def summary(result) -> str:
    """The last stdout line without its elapsed seconds."""
    assert result.returncode == 0, result.stdout + result.stderr
    return re.sub(r" in [0-9.]+ s,", " in _ s,", result.stdout.strip().splitlines()[-1])


def contract(records):
    return sorted(((r.key, orjson.loads(r.value)) for r in records),
                  key=lambda kv: (kv[0], kv[1]["event_id"]))


@pytest.mark.e2e
def test_dcsa_events_become_contract_events_and_the_rest_dead_letters(broker, topics):
    names, env = topics
    raw = names["raw"]
    doc = TNT_220.read_bytes()
    events = json.loads(doc)
    messages = [(ev["eventID"].encode(), json.dumps(ev).encode()) for ev in events]    # offsets 0..6
    messages += [(b"whole", doc), (b"broken", b'{"eventID": "x", ')]                    # offsets 7, 8
    send_raw(broker, raw, messages)

    result = bridge(env, "--from", raw, "--format", "dcsa", "--idle-exit", "3")
    assert summary(result) == (
        f"corridor bridge: {raw}: 9 documents in _ s, 4 events published ({names['shipments']} 4), "
        f"11 dead letters to {raw}.dlq (no_equivalent 6, not_actual 4, not_json 1); "
        "stopped: no message for 3 s (--idle-exit)")

    published = consume_all(broker.bootstrap, names["shipments"], 4)
    # The two actual ARRIs, once from their own messages and once from the whole document.
    assert contract(published) == [(b"ABC123123123", {"event_id": E + "2", **ARRIVED})] * 2 \
        + [(b"ABC123123123", {"event_id": E + "5", **ARRIVED})] * 2
    assert consume_all(broker.bootstrap, names["orders"], 1, timeout=3) == []
    assert consume_all(broker.bootstrap, names["customs"], 1, timeout=3) == []

    dead = consume_all(broker.bootstrap, f"{raw}.dlq", 11)
    assert len(dead) == 11
    rows = sorted((r.key, h["corridor.where"].decode(), h["corridor.reason"].decode(),
                   int(h["corridor.source.offset"])) for r in dead for h in [dict(r.headers)])
    expected = [(eid.encode(), "document", reason, i) for i, eid in enumerate(e["eventID"] for e in events)
                if (reason := REJECTED.get(eid))]                          # a one-event message, as it came
    expected += [(b"whole", eid, reason, 7) for eid, reason in REJECTED.items()]   # its events, one by one
    expected += [(b"broken", "document", "not_json", 8)]
    assert rows == sorted(expected)
    by_value = {(r.key, r.value): dict(r.headers) for r in dead}
    headers = by_value[(b"broken", b'{"eventID": "x", ')]                 # sent unchanged
    assert headers["corridor.source.topic"] == raw.encode()
    assert headers["corridor.source.partition"] == b"0"
    assert headers["corridor.format"] == b"dcsa"
    assert headers["corridor.detail"].startswith(b"not a JSON document: ")
    # An event dead-lettered out of a document is that event as a one-event document: fixed, it
    # can be produced back to the raw topic.
    singles = {dict(r.headers)["corridor.where"].decode(): r.value for r in dead if r.key == b"whole"}
    assert {eid: json.loads(v) for eid, v in singles.items()} == \
        {e["eventID"]: e for e in events if e["eventID"] in REJECTED}
    assert dcsa.convert(singles[E + "4"]).rejects == [
        (E + "4", "not_actual: EQUIPMENT event classified EST (only ACT events happened)")]


@pytest.mark.e2e
def test_offsets_are_committed_so_a_restart_reads_only_new_documents(broker, topics):
    names, env = topics
    raw = names["raw"]
    arri = json.loads(TNT_220.read_bytes())[0]
    send_raw(broker, raw, [(b"a", json.dumps(arri).encode()), (b"b", b"[]"), (b"c", b"null")])

    first = bridge(env, "--from", raw, "--format", "dcsa", "--max-messages", "2")
    assert summary(first) == (
        f"corridor bridge: {raw}: 2 documents in _ s, 1 events published ({names['shipments']} 1), "
        f"1 dead letters to {raw}.dlq (bad_document 1); stopped: 2 messages read (--max-messages)")
    second = bridge(env, "--from", raw, "--format", "dcsa", "--idle-exit", "3")
    assert summary(second) == (
        f"corridor bridge: {raw}: 1 documents in _ s, 0 events published (none), "
        f"1 dead letters to {raw}.dlq (bad_document 1); stopped: no message for 3 s (--idle-exit)")
    dead = consume_all(broker.bootstrap, f"{raw}.dlq", 2)
    assert sorted((r.value, dict(r.headers)["corridor.detail"]) for r in dead) == [
        (b"[]", b"the document holds no events"),
        (b"null", b"expected a list of DCSA events, an object with 'events', or one event")]
    # Another group starts from the beginning and publishes the same event again: the worker
    # dedupes it by event_id, which is the DCSA eventID.
    again = bridge(env, "--from", raw, "--format", "dcsa", "--group", "another", "--idle-exit", "3")
    assert "3 documents" in summary(again)
    assert [orjson.loads(r.value)["event_id"] for r in consume_all(broker.bootstrap, names["shipments"], 2)] \
        == [E + "2", E + "2"]


@pytest.mark.e2e
def test_sigterm_stops_the_bridge_cleanly(broker, topics, tmp_path):
    names, env = topics
    raw = names["raw"]
    out = open(tmp_path / "bridge.out", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "streams", "bridge", "--from", raw, "--format", "dcsa"],
                            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        send_raw(broker, raw, [(b"a", TNT_220.read_bytes())])
        poll(lambda: consume_all(broker.bootstrap, names["shipments"], 2, timeout=1), 60, 0.2,
             "the bridge published the example's events")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        out.close()
    last = Path(out.name).read_text().strip().splitlines()[-1]
    assert re.sub(r" in [0-9.]+ s,", " in _ s,", last) == (
        f"corridor bridge: {raw}: 1 documents in _ s, 2 events published ({names['shipments']} 2), "
        f"5 dead letters to {raw}.dlq (no_equivalent 3, not_actual 2); stopped: SIGTERM")


@pytest.mark.e2e
@pytest.mark.parametrize("args, message", [
    (["--from", "shipments", "--format", "dcsa"],
     "--from shipments: read a raw feed topic, not an input or dead-letter topic"),
    (["--from", "no-such-topic", "--format", "dcsa"], "topic no-such-topic does not exist at "),
    (["--from", "raw", "--format", "epcis", "--mapping", "/nonexistent.toml"],
     "cannot read mapping /nonexistent.toml"),
    (["--from", "raw", "--format", "csv-orders"], "argument --format: invalid choice: 'csv-orders'"),
])
def test_bad_flags_and_topics_are_one_line_and_exit_2(broker, args, message):
    env = dict(os.environ, CORRIDOR_BROKER=broker.url, CORRIDOR_PROFILE="embedded")
    result = bridge(env, *args, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


# ---- translate(), the pure part, on every example document -----------------------------------------
@pytest.mark.parametrize("fmt, path", [("dcsa", p) for p in sorted((STANDARDS / "dcsa").glob("*.json"))]
                         + [("epcis", p) for p in sorted((STANDARDS / "epcis").glob("Example*"))])
def test_translate_publishes_what_the_adapter_converts_and_is_deterministic(fmt, path):
    """Converting event by event gives the whole document's conversion; twice gives the same bytes."""
    check = Checker()
    raw = path.read_bytes()
    whole = {"dcsa": dcsa, "epcis": epcis}[fmt].convert(raw)
    outcome = translate(raw, fmt, check)
    assert outcome.events == [(kind, *check(kind, event)[:2]) for kind, event in whole.events]
    assert translate(raw, fmt, check) == outcome
    if whole.events:
        assert sorted(d.where for d in outcome.dead) == sorted(str(w) for w, _ in whole.rejects)
    else:
        assert [(d.value, d.where) for d in outcome.dead] == [(raw, "document")]
