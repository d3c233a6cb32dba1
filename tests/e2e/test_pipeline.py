"""End to end: the real broker, a real `corridor worker` process, events produced with kafka-python,
exact figures read back from /metrics and the views, then a SIGKILL and a new worker that recovers
the same figures from the changelogs.

The event set (hours after T0 = 2025-03-01T00:00Z; see tests/builders.journey):
  S1/O1 CN-AU standard, promised h200, held in customs, delivered h130       -> on time
  S2/O2 DE-US express, no promise (policy: 120 h), delivered h125            -> late
  S3/O3 CN-US economy, returned h130, then out_for_delivery at h140         -> exception + late event
  S4/O4 CN-AU standard, promised h150, in customs since h80                 -> open, not overdue
  S5/O5 US-MX express (policy: 72 h), in linehaul since h30                  -> open, overdue
Arrival order is adversarial: all customs events first, then shipment events, then the orders.
"""
import pytest

from builders import HOUR, T0_EPOCH
from harness import Worker, consume_all, poll, sample, series, unique_app_id
from scenarios import corridor_view, produce_adversarial

pytestmark = pytest.mark.e2e

H = HOUR


@pytest.fixture(scope="module")
def run(broker, logdir):
    """Produce the data set in phases against one worker; yield (worker, counts, app_id)."""
    app_id = unique_app_id()
    worker = Worker(broker.url, app_id, logdir).start()
    counts = produce_adversarial(broker, [worker])
    yield worker, counts, app_id
    worker.stop()


def test_table_derived_series_are_per_partition(run):
    """Each partition's series moves whole on a rebalance, so rate() sees no reset."""
    worker, _, _ = run
    raw = worker.metrics(raw=True)
    delivered = series(raw, "corridor_shipments_delivered_total")
    assert {dict(k)["partition"] for k in delivered} <= {"0", "1", "2", "3"}
    assert sum(delivered.values()) == 2.0
    assert all("partition" in dict(k) for k in series(raw, "corridor_stage_dwell_seconds_count"))


def test_corridor_counters_and_histograms_are_exact(run):
    worker, _, _ = run
    m = worker.metrics()
    assert series(m, "corridor_shipments_delivered_total") == {
        frozenset({"corridor": "CN-AU", "service_level": "standard", "on_time": "true"}.items()): 1.0,
        frozenset({"corridor": "DE-US", "service_level": "express", "on_time": "false"}.items()): 1.0}
    assert series(m, "corridor_shipment_exceptions_total") == {
        frozenset({"corridor": "CN-AU", "type": "customs_hold"}.items()): 1.0,
        frozenset({"corridor": "CN-US", "type": "returned"}.items()): 1.0}
    assert sample(m, "corridor_shipment_transit_seconds_sum", corridor="CN-AU",
                  service_level="standard") == 130 * H
    assert sample(m, "corridor_shipment_transit_seconds_sum", corridor="DE-US",
                  service_level="express") == 125 * H
    assert sample(m, "corridor_shipment_transit_seconds_bucket", corridor="DE-US",
                  service_level="express", le="432000.0") == 0.0          # 125 h > 5 d
    assert sample(m, "corridor_shipment_transit_seconds_bucket", corridor="DE-US",
                  service_level="express", le="604800.0") == 1.0          # <= 7 d
    dwell = {(dict(k)["corridor"], dict(k)["stage"]): v
             for k, v in series(m, "corridor_stage_dwell_seconds_sum").items()}
    assert dwell == {
        ("CN-AU", "fulfilment"): 10 * H, ("CN-AU", "origin"): 20 * H, ("CN-AU", "linehaul"): 50 * H,
        ("CN-AU", "customs"): 20 * H, ("CN-AU", "last_mile"): 30 * H,
        ("DE-US", "fulfilment"): 10 * H, ("DE-US", "origin"): 20 * H, ("DE-US", "linehaul"): 50 * H,
        ("DE-US", "customs"): 20 * H, ("DE-US", "last_mile"): 25 * H,
        ("CN-US", "fulfilment"): 10 * H, ("CN-US", "origin"): 20 * H, ("CN-US", "linehaul"): 50 * H,
        ("CN-US", "customs"): 20 * H, ("CN-US", "last_mile"): 30 * H}
    assert set(series(m, "corridor_stage_dwell_seconds_count").values()) == {1.0}


def test_open_shipment_gauges_use_the_event_time_clock(run):
    worker, _, _ = run
    m = worker.metrics()
    assert sample(m, "corridor_stream_time_seconds") == T0_EPOCH + 140 * H
    assert series(m, "corridor_shipments_in_stage") == {
        frozenset({"corridor": "CN-AU", "stage": "customs"}.items()): 1.0,
        frozenset({"corridor": "US-MX", "stage": "linehaul"}.items()): 1.0}
    assert series(m, "corridor_shipments_overdue") == {
        frozenset({"corridor": "US-MX", "service_level": "express"}.items()): 1.0}
    assert series(m, "corridor_stage_excess_seconds") == {
        frozenset({"corridor": "CN-AU", "stage": "customs"}.items()): (140 - 80 - 48) * H,
        frozenset({"corridor": "US-MX", "stage": "linehaul"}.items()): (140 - 30 - 48) * H}
    assert series(m, "corridor_bottleneck_stage") == {
        frozenset({"corridor": "CN-AU", "stage": "customs"}.items()): 1.0,
        frozenset({"corridor": "US-MX", "stage": "linehaul"}.items()): 1.0}


def test_open_shipments_lateness_risk_equals_the_engine(run):
    """The at-risk gauges and a shipment's prediction, from the fleet's model (the risk counts of
    S1 and S2's deliveries, shared through the global table), equal the Engine's on the same
    events at the same clock (h140). S5 is past its promise (h72): P(late) 1, at risk. S4 has
    spent 60 h in customs, longer than either delivery's customs stage: it is judged by the
    longest-held samples there are."""
    from streams.domain.engine import Engine
    from streams.domain.policy import SlaPolicy
    from scenarios import dataset
    worker, _, _ = run
    eng = Engine(SlaPolicy.load())
    for kind, event in dataset():
        eng.feed(kind, event)
    eng.finish()
    now = T0_EPOCH + 140 * H
    expected = eng.at_risk(now)
    assert expected.at_risk[("US-MX", "express", "linehaul")] == 1
    assert dict(expected.scored) == {"CN-AU": 1, "US-MX": 1}
    want = {
        "corridor_shipments_at_risk": {frozenset({"corridor": c, "service_level": sl, "stage": st}.items()): float(n)
                                       for (c, sl, st), n in expected.at_risk.items()},
        "corridor_shipments_predicted_late": {frozenset({"corridor": c}.items()): v / 2 ** 20
                                              for c, v in expected.expected_late.items()},
        "corridor_shipments_scored": {frozenset({"corridor": c}.items()): float(n)
                                      for c, n in expected.scored.items()}}

    def scored():
        m = worker.metrics()
        return sample(m, "corridor_risk_scored_time_seconds") == now and all(
            series(m, name) == value for name, value in want.items())
    poll(scored, 30, what="the worker scored the open shipments as the Engine does")
    status, body = worker.get("/shipments/S4")
    p = eng.risk_model().predict("CN-AU", "standard", "customs", T0_EPOCH + 80 * H, now,
                                 T0_EPOCH + 150 * H)
    assert status == 200 and body["prediction"]["p_late"] == round(p.p_late, 4)
    assert body["prediction"]["stage"] == "customs"
    assert 0 < p.p_late < 1 and body["prediction"]["delivery_p10"] <= body["prediction"]["delivery_p90"]
    status, body = worker.get("/shipments/S5")
    assert body["prediction"]["p_late"] == 1.0 and body["prediction"]["at_risk"] is True
    status, body = worker.get("/shipments/S1")
    assert body["prediction"] is None                       # delivered: nothing to predict


def test_operational_counters_duplicates_late_and_rejects(run, broker):
    worker, counts, _ = run
    m = worker.metrics()
    s1 = counts["s1"]
    assert sample(m, "corridor_events_duplicate_total", topic="shipments") == s1["shipments"]
    assert sample(m, "corridor_events_duplicate_total", topic="customs-events") == s1["customs"]
    assert sample(m, "corridor_events_duplicate_total", topic="orders") == s1["orders"]
    assert series(m, "corridor_events_late_total") == {frozenset({"topic": "shipments"}.items()): 1.0}
    assert series(m, "corridor_events_rejected_total") == {
        frozenset({"topic": "shipments", "reason": "not_json"}.items()): 1.0,
        frozenset({"topic": "customs-events", "reason": "bad_timestamp"}.items()): 1.0}
    dead = consume_all(broker.bootstrap, "shipments.dlq", 1)
    assert [(r.key, r.value) for r in dead] == [(b"S-bad", b"not json")]
    headers = dict(dead[0].headers)
    assert headers["corridor.reason"] == b"not_json"
    assert headers["corridor.source.topic"] == b"shipments"
    assert int(headers["corridor.source.offset"]) >= 0


def test_shipment_view_shows_the_joined_timeline(run):
    worker, _, _ = run
    status, body = worker.get("/shipments/S1")
    assert status == 200
    assert {k: body[k] for k in ("corridor", "service_level", "status", "sla", "promised_delivery_at",
                                 "ended_at", "order_ids", "transit_seconds")} == {
        "corridor": "CN-AU", "service_level": "standard", "status": "delivered", "sla": "on_time",
        "promised_delivery_at": "2025-03-09T08:00:00Z", "ended_at": "2025-03-06T10:00:00Z",
        "order_ids": ["O1"], "transit_seconds": 130 * H}
    assert [(s["stage"], s["seconds"]) for s in body["stages"]] == [
        ("fulfilment", 10 * H), ("origin", 20 * H), ("linehaul", 50 * H), ("customs", 20 * H),
        ("last_mile", 30 * H)]
    # ended and observed: compacted to milestones, the end and exceptions (declaration_lodged went)
    assert [e["event_type"] for e in body["events"]] == [
        "order_placed", "label_created", "picked_up", "departed_origin", "arrived_destination",
        "held_for_inspection", "released", "delivered"]
    status, body = worker.get("/shipments/S5")
    assert (status, body["status"], body["stage"], body["sla"]) == (200, "open", "linehaul", "overdue")
    assert worker.get("/shipments/NO-SUCH-SHIPMENT") == (
        404, {"error": "shipment NO-SUCH-SHIPMENT not found"})


def test_corridors_view_summarises_each_corridor(run):
    worker, _, _ = run
    status, body = worker.get("/corridors")
    assert status == 200
    assert body["partitions"] == [0, 1, 2, 3]
    assert body["now"] == "2025-03-06T20:00:00Z"
    c = body["corridors"]
    assert sorted(c) == ["CN-AU", "CN-US", "DE-US", "US-MX"]
    assert {k: c["CN-AU"][k] for k in ("delivered", "on_time", "on_time_rate", "open", "bottleneck",
                                      "exceptions", "in_stage")} == {
        "delivered": 1, "on_time": 1, "on_time_rate": 1.0, "open": 1, "bottleneck": "customs",
        "exceptions": {"customs_hold": 1}, "in_stage": {"customs": 1}}
    assert c["DE-US"]["on_time_rate"] == 0.0
    assert c["US-MX"]["overdue"] == {"express": 1}


def test_metrics_can_be_asked_for_by_name(run):
    """`/metrics?name[]=...` (prometheus_client's filter): only the families of those sample
    names, each whole, with the values of the full page; nothing else is computed."""
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    worker, _, _ = run

    def scrape(query: str) -> dict:
        with urllib.request.urlopen(worker.base + "/metrics" + query, timeout=5) as resp:
            text = resp.read().decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}
    asked = ("corridor_events_consumed_total", "corridor_shipments_delivered_total")
    full = scrape("")
    some = scrape("?" + "&".join(f"name[]={n}" for n in asked))
    # the worker's own counters by sample name; a table-derived family whole
    assert {n for n, _ in some} - {"corridor_shipments_delivered_created"} == set(asked)
    assert some == {k: v for k, v in full.items() if k[0] in {n for n, _ in some}}
    assert sum(v for (n, _), v in some.items() if n == asked[1]) == 2.0
    assert sum(v for (n, _), v in some.items() if n == asked[0]) > 0


def test_web_port_serves_no_raw_tables(run):
    worker, _, _ = run
    assert worker.get("/table/timelines/")[0] == 404
    assert worker.get("/stats/")[0] == 404


def test_consumer_lag_is_zero_once_everything_is_processed(run):
    worker, counts, _ = run
    m = poll(lambda: (m := worker.metrics()) and all(
        v == 0 for v in series(m, "corridor_consumer_lag").values()) and m, 15,
        what="lag 0 on every partition")
    lag = series(m, "corridor_consumer_lag")
    topics = {dict(k)["topic"] for k in lag}
    assert {"orders", "shipments", "customs-events"} <= topics
    assert sample(m, "corridor_partitions_assigned") == 4.0
    ends = {dict(k)["topic"]: 0 for k in series(m, "corridor_consumer_end_offset")}
    for k, v in series(m, "corridor_consumer_end_offset").items():
        ends[dict(k)["topic"]] += v
    assert ends["shipments"] == counts["consumed"]["shipments"]


def _changelog_ends(bootstrap: str, app_id: str) -> dict:
    """(topic, partition) -> (ListOffsets end, high watermark of a fetch, last record's key and
    value) of every changelog partition of the app."""
    from kafka import KafkaConsumer, TopicPartition
    tps = [TopicPartition(f"{app_id}-{t}-changelog", p)
           for t in ("timelines", "orders", "totals") for p in range(4)]
    tps.append(TopicPartition(f"{app_id}-clock-changelog", 0))
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    try:
        listed = c.end_offsets(tps)
        c.assign(tps)
        for tp in tps:
            c.seek(tp, max(listed[tp] - 1, 0))
        last = {}
        poll(lambda: last.update({tp: recs[-1] for tp, recs in c.poll(100).items()}) or
             all(c.highwater(tp) is not None for tp in tps), 10, what="a fetch of each changelog")
        return {(tp.topic, tp.partition): (listed[tp], c.highwater(tp),
                                           last[tp].key if tp in last else None,
                                           last[tp].value if tp in last else None)
                for tp in tps}
    finally:
        c.close()


def test_changelogs_end_with_a_marker_so_recovery_reads_every_record(run, broker):
    """The embedded broker's ListOffsets answers the last record batch's base offset + 1 and
    Faust recovers a changelog up to there: the worker ends what it writes to each changelog
    partition with a lone tombstone of a key no table holds (streams.worker.faust_patches), so the end
    that recovery asks for is the true one."""
    from streams.worker.faust_patches import END_MARKER_KEY
    worker, _, app_id = run
    poll(lambda: all(v == 0 for v in series(worker.metrics(), "corridor_consumer_lag").values()),
         15, what="lag 0")
    last: dict = {}

    def check() -> tuple:
        """(tables written, ListOffsets ends, fetched ends, last records) of the written ones."""
        written = {tp: e for tp, e in _changelog_ends(broker.bootstrap, app_id).items() if e[1]}
        last["seen"] = ({t.rsplit("-", 2)[-2] for t, _p in written},
                        {tp: e[0] for tp, e in written.items()},
                        {tp: e[1] for tp, e in written.items()},
                        {e[2:] for e in written.values()})
        return last["seen"]

    # The clock is written by a timer: wait until it has been (and its marker has followed).
    want = {"timelines", "orders", "totals", "clock"}
    try:
        poll(lambda: (s := check())[0] == want and s[1] == s[2] and len(s[3]) == 1, 15)
    except AssertionError:
        pass            # the assertions below show what differs
    tables, listed, fetched, records = last["seen"]
    assert tables == want
    assert listed == fetched
    assert records == {(END_MARKER_KEY, None)}


def test_sigkill_and_restart_recover_the_same_figures(run, broker, logdir):
    """Corridor figures come from changelogged tables: a new worker shows exactly the same."""
    worker, _, app_id = run
    before = corridor_view(worker.metrics())
    assert len(before) > 50
    worker.kill()
    successor = Worker(broker.url, app_id, logdir, name="successor").start()
    try:
        try:
            poll(lambda: corridor_view(successor.metrics()) == before, 30)
        except AssertionError:
            pass     # the assertion below shows what differs
        after = corridor_view(successor.metrics())
        diff = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                if before.get(k) != after.get(k)}
        assert diff == {}
        m = successor.metrics()
        # nothing was reprocessed as new: offsets were committed before the kill
        assert sample(m, "corridor_events_late_total", topic="shipments") in (None, 0.0, 1.0)
    finally:
        successor.stop()
