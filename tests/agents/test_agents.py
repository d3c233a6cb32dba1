"""The two agents end to end in one process: decode, join, timelines, totals, counters, dead letters.

Seams and the way messages are carried between the agents are described in conftest.py. Figures
are the ones tests/unit/test_semantics.py derives by hand for builders.journey.
"""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from builders import HOUR, T0_EPOCH, journey
from streams.domain import risk
from streams.domain.engine import Engine
from streams.domain.policy import SlaPolicy

DELIVERED = "corridor_shipments_delivered_total"
EXCEPTIONS = "corridor_shipment_exceptions_total"
TRANSIT_SUM = "corridor_shipment_transit_seconds_sum"
DUPLICATE = "corridor_events_duplicate_total"
CONSUMED = "corridor_events_consumed_total"
REJECTED = "corridor_events_rejected_total"


def reference(events) -> Engine:
    """The pure engine fed the same events: the agents must agree with the domain."""
    eng = Engine(SlaPolicy.load())
    for kind, ev in events:
        eng.feed(kind, ev)
    return eng.finish()


def reference_totals(events) -> dict:
    return reference(events).totals


#: The risk samples of builders.journey's delivery (standard; placed 0 h, picked up 10, departed
#: 30, arrived 80, released 100, delivered 130 h on day 20148 + 5): per stage, the cell of (hours
#: in the stage, hours from entering it to the delivery).
JOURNEY_DAY = 20153
JOURNEY_RISK = {f"standard|{stage}|{risk.cell(hours * HOUR, to_delivery * HOUR)}": 1
                for stage, hours, to_delivery in (("fulfilment", 10, 130), ("origin", 20, 120),
                                                  ("linehaul", 50, 100), ("customs", 20, 50),
                                                  ("last_mile", 30, 30))}


def corridor_totals(totals: dict) -> dict:
    """The corridor records of a totals table, without the risk samples' "<corridor>#<day>" ones."""
    return {k: v for k, v in totals.items() if not risk.is_risk_key(k.split("|", 1)[1])}


def assert_complete_journey(w, sid: str) -> None:
    p = w.partition(sid)
    key = f"{p}|CN-AU"
    risk_key = f"{p}|CN-AU#{JOURNEY_DAY}"
    totals = w.totals()
    assert sorted(totals) == [key, risk_key]
    # the delivery's risk samples: counted by its settlement (the second: the hold, then the end)
    assert totals[risk_key] == {"delivered": {}, "exceptions": {}, "transit": {}, "dwell": {},
                                "risk": JOURNEY_RISK, "o": {"#fin": 2}}
    assert len(JOURNEY_RISK) == 5       # five stages, five different cells
    tot = totals[key]
    assert tot["delivered"] == {"standard|true": 1}
    assert tot["exceptions"] == {"customs_hold": 1}
    assert tot["transit"]["standard"][-1] == 130 * HOUR
    assert {stage: row[-1] for stage, row in tot["dwell"].items()} == {
        "fulfilment": 10 * HOUR, "origin": 20 * HOUR, "linehaul": 50 * HOUR,
        "customs": 20 * HOUR, "last_mile": 30 * HOUR}
    state = w.pipe.timelines[sid]
    assert state["end"] == ["delivered", T0_EPOCH + 130 * HOUR]
    assert state["observed"] is True and state["p"] == p
    assert w.sample(DELIVERED, corridor="CN-AU", service_level="standard", on_time="true") == 1
    assert w.sample(EXCEPTIONS, corridor="CN-AU", type="customs_hold") == 1
    assert w.sample(TRANSIT_SUM, corridor="CN-AU", service_level="standard") == 130 * HOUR


async def test_complete_journey_through_both_agents(worker):
    events = journey("S1", "O1", promised_h=200, hold=True)
    async with worker() as w:
        await w.feed_all(events)

        assert_complete_journey(w, "S1")
        eng = reference(events)
        assert {k.split("|")[1] for k in corridor_totals(w.totals())} == set(eng.totals)
        totals = w.totals()[f"{w.partition('S1')}|CN-AU"]
        # per source topic, the offset of the last message counted (what a redelivery is held to)
        assert totals.pop("o") == {"#fin": 2}        # the hold, then the end (Pipeline.settle)
        assert totals == eng.totals["CN-AU"]
        # the Engine keeps the risk samples apart, under the same "<corridor>#<day>" key
        assert eng.risk == {f"CN-AU#{JOURNEY_DAY}": JOURNEY_RISK}
        assert w.totals()[f"{w.partition('S1')}|CN-AU#{JOURNEY_DAY}"]["risk"] == eng.risk[
            f"CN-AU#{JOURNEY_DAY}"]
        # the join went through the internal topics, keyed for co-partitioning
        links = w.producer.sent_to(w.settings.topic_order_links)
        forwards = w.producer.sent_to(w.settings.topic_shipment_orders)
        assert [(s.key, s.partition) for s in links] == [(b"O1", w.partition("O1"))]
        assert [(s.key, s.partition) for s in forwards] == [(b"S1", w.partition("S1"))]
        # every totals write went to the changelog partition of the shipment's source partition
        assert await w.commit() == [0, 1]
        totals_log = [s for s in w.producer.changelog if s.topic.endswith("-totals-changelog")]
        assert totals_log and {s.partition for s in totals_log} == {w.partition("S1")}
        assert w.sample(CONSUMED, topic="shipments") == 5
        assert w.sample(CONSUMED, topic="customs-events") == 3
        assert w.sample(CONSUMED, topic="orders") == 1

        # a worker exports only the partitions it owns
        others = {tp for tp in w.app.assignor.assigned_actives() if tp.partition != w.partition("S1")}
        w.app.assignor.assigned_actives = lambda: set(others)
        assert w.sample(DELIVERED, corridor="CN-AU", service_level="standard", on_time="true") is None


async def test_duplicates_are_counted_and_change_nothing(worker):
    events = journey("S1", "O1", promised_h=200, hold=True)
    by_kind = {k: sum(1 for kind, _ in events if kind == k) for k in ("orders", "shipments", "customs")}
    assert by_kind == {"orders": 1, "shipments": 5, "customs": 3}
    async with worker() as w:
        await w.feed_all(events)
        before = w.totals()
        sent_before = len(w.producer.sent)

        await w.feed_all(events)

        assert w.sample(DUPLICATE, topic="shipments") == by_kind["shipments"]
        assert w.sample(DUPLICATE, topic="customs-events") == by_kind["customs"]
        assert w.sample(DUPLICATE, topic="orders") == by_kind["orders"]
        assert w.sample(CONSUMED, topic="shipments") == 2 * by_kind["shipments"]
        assert w.totals() == before
        # Redelivered messages send their link / forwards again (a crash may have lost the first
        # ones after the state was saved); the other side dedupes them, so totals do not move.
        resent = sorted(s.topic.rsplit("-", 2)[-2] + "-" + s.topic.rsplit("-", 1)[-1]
                        for s in w.producer.sent[sent_before:])
        assert resent == ["order-links", "shipment-orders", "shipment-orders"]
        assert_complete_journey(w, "S1")


async def test_malformed_message_is_dead_lettered_and_processing_goes_on(worker):
    events = journey("S1", "O1", promised_h=200, hold=True)
    async with worker() as w:
        p = w.partition("S1")
        await w.feed_raw("shipments", b"S1", b"not json", headers=[("trace", b"t-1")])

        assert w.sample(REJECTED, topic="shipments", reason="not_json") == 1
        assert w.sample(CONSUMED, topic="shipments") == 1
        assert w.totals() == {} and w.pipe.timelines.get("S1") is None
        [dead] = w.producer.sent_to("shipments.dlq")
        assert (dead.key, dead.value) == (b"S1", b"not json")
        assert dead.headers["corridor.reason"] == b"not_json"
        assert dead.headers["corridor.source.topic"] == b"shipments"
        assert dead.headers["corridor.source.partition"] == str(p).encode()
        assert dead.headers["corridor.source.offset"] == b"0"
        assert dead.headers["trace"] == b"t-1"          # the original headers are kept

        await w.feed_all(events)

        assert_complete_journey(w, "S1")
        assert len(w.producer.sent_to("shipments.dlq")) == 1
        assert w.sample(REJECTED, topic="shipments", reason="not_json") == 1


async def test_a_record_whose_handling_raises_is_dead_lettered_and_the_worker_goes_on(
        worker, monkeypatch):
    """A defect that raises for one record (here: the join step, for shipment S-BAD) costs that
    record only: it is dead-lettered as internal_error with the exception named, and the next
    records are applied as if it had not come."""
    from streams.domain import join
    step = join.shipment_step

    def failing(state, source, ev, *args):
        if ev["shipment_id"] == "S-BAD":
            raise KeyError("boom")
        return step(state, source, ev, *args)
    monkeypatch.setattr(join, "shipment_step", failing)
    events = journey("S1", "O1", promised_h=200, hold=True)
    async with worker() as w:
        [bad] = [ev for kind, ev in journey("S-BAD", "O9", promised_h=200) if kind == "shipments"][:1]
        await w.feed("shipments", bad)
        [dead] = w.producer.sent_to("shipments.dlq")
        assert dead.key == b"S-BAD"
        assert dead.headers["corridor.reason"] == b"internal_error"
        assert dead.headers["corridor.detail"] == b"KeyError: 'boom'"
        assert w.sample(REJECTED, topic="shipments", reason="internal_error") == 1
        assert w.pipe.timelines.get("S-BAD") is None

        await w.feed_all(events)

        assert_complete_journey(w, "S1")
        assert len(w.producer.sent_to("shipments.dlq")) == 1


async def test_shipment_before_its_order_gives_the_same_totals(worker):
    events = journey("S1", "O1", promised_h=200, hold=True)
    order_first, shipment_first = events, [e for e in events if e[0] != "orders"] + events[:1]
    assert shipment_first[-1][0] == "orders" and len(shipment_first) == len(events)

    async with worker() as w:
        await w.feed_all(order_first)
        in_order = figures(w.totals())
    async with worker() as w:
        await w.feed_all(shipment_first[:-1])
        state = w.pipe.timelines["S1"]
        assert state["end"][0] == "delivered" and state["observed"] is False
        assert w.sample(DELIVERED, corridor="CN-AU", service_level="standard", on_time="true") is None
        # the link reached the order side before the order: nothing to forward yet
        assert w.producer.sent_to(w.settings.topic_shipment_orders) == []

        await w.feed_all(shipment_first[-1:])

        assert figures(w.totals()) == in_order
        assert_complete_journey(w, "S1")
        assert w.pipe.timelines["S1"]["late"] == 0


def test_tables_key_by_the_producers_bytes_so_views_route_to_the_owner():
    """table_route hashes the serialized key: it must be the bytes producers key the topics with."""
    from streams.worker.app import create_app
    from streams.settings import Settings
    app = create_app(Settings(app_id="routing-check"))
    for table in (app.corridor.timelines, app.corridor.orders, app.corridor.totals):
        assert table.changelog_topic.key_serializer == "utf8"
        assert app.router._get_serialized_key(table, "SHP-1-000042") == b"SHP-1-000042"


async def test_a_redelivery_after_a_crash_that_kept_one_of_state_and_totals_counts_once(worker):
    """The shipment's state and the corridor totals are two changelog records, the states sent
    first: a SIGKILL between them keeps the state without the totals. The successor, before it
    settles anything on the partition, adds what the states remember and the totals lack
    (Pipeline.reconcile); the redelivered message is then a duplicate: the delivery counts once."""
    import copy
    events = journey("S1", "O1", promised_h=200, hold=True)
    last = max(i for i, (_kind, ev) in enumerate(events) if ev["event_type"] == "delivered")
    async with worker() as w:
        await w.feed_all(events[:last])
        tp = (w.topic_of("shipments"), w.partition("S1"))
        key = f"{w.partition('S1')}|CN-AU"
        before_totals = copy.deepcopy(w.pipe.totals.get(key))
        assert before_totals["exceptions"] == {"customs_hold": 1}
        offset = w.offsets.get(tp_of(tp), 0)
        await w.feed(*events[last])
        after = copy.deepcopy(w.totals())
        assert after[key]["delivered"] == {"standard|true": 1}

        w.pipe.totals.data[key] = copy.deepcopy(before_totals)          # the totals write was lost
        w.pipe._seq.clear()                                             # a new worker's numbering
        w.offsets[tp_of(tp)] = offset
        await w.feed(*events[last])                                    # redelivered: a duplicate
        assert w.totals() == after
        assert w.sample(DELIVERED, corridor="CN-AU", service_level="standard", on_time="true") == 1

        w.pipe._seq.clear()                                             # nothing missing: no-op
        await w.feed(*events[last])
        assert w.totals() == after


async def test_a_settled_state_reaches_the_store_before_the_totals_that_count_it(worker):
    """The RocksDB store keeps every write at once, so a SIGKILL can fall between any two writes
    of one event. A settlement writes the state that remembers it before the totals that count
    it: a kill in between leaves a state ahead of its totals, which Pipeline.reconcile repairs.
    The other order double-counted a delivery in about one crash trial in four (the successor
    settled the shipment again under a new number)."""
    import copy
    writes = []
    async with worker() as w:
        for table in (w.pipe.timelines, w.pipe.totals):
            set_key = table.on_key_set

            def recording(key, value, table=table, set_key=set_key):
                writes.append((table.name, key, copy.deepcopy(value)))
                set_key(key, value)
            table.on_key_set = recording
        await w.feed_all(journey("S1", "O1", promised_h=200, hold=True))
    remembered: set[int] = set()         # the settlement numbers the written states remember
    counted = []
    for name, key, value in writes:
        if name == "timelines":
            remembered |= {seq for _src, seq, _obs in value.get("lobs", ())}
        else:
            seq = value["o"]["#fin"]
            assert seq in remembered, f"totals {key} counted settlement {seq} before a state held it"
            counted.append((key, seq))
    p = w.partition("S1")
    assert counted == [(f"{p}|CN-AU", 1), (f"{p}|CN-AU", 2), (f"{p}|CN-AU#{JOURNEY_DAY}", 2)]


async def test_changelogs_are_written_behind_once_per_key_per_commit_states_first(worker):
    """Faust would send one changelog record per write; the tables send the last value of each
    key written since the previous commit, the states before the totals that count them, each to
    the partition of the event that wrote it."""
    import orjson
    events = journey("S1", "O1", promised_h=200, hold=True)
    async with worker() as w:
        await w.feed_all(events)
        assert w.producer.changelog == []                       # nothing sent before a commit
        assert await w.commit() == [0, 1]
        log = [(s.topic.rsplit("-", 2)[-2], s.key, s.partition) for s in w.producer.changelog]
        p_s, p_o = w.partition("S1"), w.partition("O1")
        assert log == [("timelines", b"S1", p_s), ("orders", b"O1", p_o),
                       ("totals", f"{p_s}|CN-AU".encode(), p_s),
                       ("totals", f"{p_s}|CN-AU#{JOURNEY_DAY}".encode(), p_s)]
        last = {s.key: orjson.loads(s.value) for s in w.producer.changelog}
        as_json = lambda v: orjson.loads(orjson.dumps(v))          # noqa: E731 (tuples -> lists)
        assert last[b"S1"] == as_json(w.pipe.timelines["S1"])
        assert last[f"{p_s}|CN-AU".encode()] == as_json(w.pipe.totals[f"{p_s}|CN-AU"])
        assert last[f"{p_s}|CN-AU#{JOURNEY_DAY}".encode()]["risk"] == JOURNEY_RISK
        # The bytes are those faust's own serializers give (take_changelog skips their dispatch).
        for s in w.producer.changelog:
            table = next(t for t in (w.pipe.timelines, w.pipe.orders, w.pipe.totals)
                         if t.changelog_topic.get_topic_name() == s.topic)
            key = s.key.decode()
            topic = table.changelog_topic
            assert s.key == topic.prepare_key(key, table.key_serializer)[0]
            assert s.value == topic.prepare_value(table[key], table.value_serializer)[0]
        assert await w.commit() == [] and len(w.producer.changelog) == 4   # nothing pending
    # Deletes (expiry) send tombstones the same way: tests/e2e/test_retention.py restarts a worker
    # after one and finds the shipment still gone.


def figures(totals: dict) -> dict:
    """Totals without the source offsets they counted (which depend on arrival order)."""
    return {key: {k: v for k, v in tot.items() if k != "o"} for key, tot in totals.items()}


def tp_of(pair):
    from faust.types import TP
    return TP(*pair)


async def test_open_shipment_gauges_follow_each_write_through_the_index(worker):
    """The scrape reads one open entry per shipment, kept current by the agent: after every event
    the gauges equal a full pass over the timelines, and an ended shipment leaves the index."""
    from streams.domain import aggregate
    s1 = journey("S1", "O1", promised_h=200, hold=True)
    s2 = journey("S2", "O2", promised_h=20, delivered=None)
    async with worker() as w:
        pipe = w.pipe
        for i, (kind, ev) in enumerate(s1[:3] + s2 + s1[3:]):
            await w.feed(kind, ev)
            totals, gauges, now = pipe.snapshot()
            scan = aggregate.open_gauges(pipe.timelines.values(), now, pipe.policy)
            assert (gauges.open, gauges.in_stage, gauges.overdue, gauges.excess,
                    gauges.customs_waiting) == \
                (scan.open, scan.in_stage, scan.overdue, scan.excess, scan.customs_waiting), \
                f"after event {i}"
        assert gauges.open == 1
        assert {sid for idx in pipe.open_index.values() for sid in idx} == {"S2"}
        assert w.sample("corridor_shipments_overdue", corridor="CN-AU", service_level="standard") == 1


async def test_with_the_rocksdb_store_the_agents_hold_still_while_a_commit_writes(worker):
    """The RocksDB store keeps every write at once, ahead of the changelog; were the agents to go
    on while a commit sends its records, a crash could leave the states ahead of totals that
    recovery then replays from the changelog (docs/semantics.md "Crashes")."""
    async with worker() as w:
        assert w.app.corridor_flush_gate is None            # memory store: nothing to hold
    async with worker(store="rocksdb://") as w:
        gate = w.app.corridor_flush_gate
        await w.feed_all(journey("S1", "O1", promised_h=200, hold=True))
        open_during_flush = []

        async def flush():
            open_during_flush.append(gate.is_set())

        w.producer.flush = flush
        assert await w.commit() == [0, 1]
        assert open_during_flush == [False, False] and gate.is_set()   # closed per rank, reopened

        async def failing_flush():
            raise RuntimeError("broker gone")

        _placed, (_, label), (kind, picked), *_ = journey("S2", "O2", promised_h=200)
        await w.feed("shipments", label)
        w.producer.flush = failing_flush
        with pytest.raises(RuntimeError, match="broker gone"):
            await w.commit()
        assert gate.is_set()                                  # reopened on failure too

        # An event taken while the gate is closed waits for it.
        gate.clear()
        with pytest.raises(AssertionError, match="did not finish"):
            await w.feed(kind, picked)
        assert w.pipe.timelines["S2"]["seen"] == [label["event_id"]]
        gate.set()
        await w._settle(w.wrappers["timelines"])
        assert w.pipe.timelines["S2"]["seen"] == [label["event_id"], picked["event_id"]]


async def test_while_a_worker_rebalances_its_series_keep_their_values(worker):
    """Issue 15: /metrics left every corridor series out while the worker rebalanced or recovered,
    Prometheus marked them stale and a firing alert resolved and paged again on every deploy."""
    s1 = journey("S1", "O1", promised_h=200, hold=True)
    s2 = journey("S2", "O2", promised_h=20, delivered=None)
    async with worker() as w:
        await w.feed_all(s1 + s2)
        names = (DELIVERED, "corridor_shipments_overdue", "corridor_shipments_in_stage",
                 "corridor_shipments_awaiting_order")

        def corridor_series():
            text = w.pipe.metrics_text().decode()
            return {(s.name, tuple(sorted(s.labels.items()))): s.value
                    for fam in text_string_to_metric_families(text) for s in fam.samples
                    if s.name.startswith(names)}

        settled = corridor_series()
        assert settled[(DELIVERED, (("corridor", "CN-AU"), ("on_time", "true"),
                                    ("partition", str(w.partition("S1"))),
                                    ("service_level", "standard")))] == 1
        assert any(k[0] == "corridor_shipments_overdue" and v == 1 for k, v in settled.items())
        w.app.rebalancing = True
        assert corridor_series() == settled
        w.app.rebalancing = False
        # settled again on another assignment: the series of partitions gone leave with them
        others = {tp for tp in w.app.assignor.assigned_actives() if tp.partition != w.partition("S1")}
        w.app.assignor.assigned_actives = lambda: set(others)
        assert w.sample(DELIVERED, corridor="CN-AU", service_level="standard", on_time="true") is None


async def test_the_worker_exports_its_process_and_build(worker):
    """Issue 15: no process metrics, so nobody could see memory against the pod's limit."""
    import platform
    from importlib.metadata import version
    async with worker() as w:
        text = w.pipe.metrics_text().decode()
        samples = {s.name: s for fam in text_string_to_metric_families(text) for s in fam.samples}
        assert samples["process_resident_memory_bytes"].value > 10 * 2**20
        assert samples["process_cpu_seconds_total"].value > 0
        assert samples["process_start_time_seconds"].value > T0_EPOCH
        assert samples["python_info"].labels["version"] == platform.python_version()
        build = samples["corridor_build_info"]
        assert build.value == 1
        assert build.labels == {"version": version("corridor"), "faust_streaming": "0.15.3",
                                "aiokafka": "0.14.0", "python": platform.python_version()}


async def test_the_customs_figures_are_counted_once_when_final_and_exported(worker):
    """Issue 17: a parcel held twice (declared USD 50 = AUD 76, low value under au-gst-low-value)
    cleared in 40 h and one still waiting in customs; the worker's series are the engine's."""
    from builders import customs
    held = journey("S1", "O1", promised_h=200, hold=True, arrived=80.0, released=120.0,
                   delivered=150.0)
    held += [("customs", customs("S1", "inspection_completed", 90.0)),
             ("customs", customs("S1", "held_for_inspection", 95.0))]
    held.sort(key=lambda e: e[1]["occurred_at"])     # the harness's partitions settle when idle
    waiting = journey("S2", "O2", promised_h=400, arrived=140.0, released=None, delivered=None)
    for kind, ev in held + waiting:
        if kind == "orders":
            ev["declared_value"] = {"amount": 50, "currency": "USD"}
    async with worker() as w:
        await w.feed_all(held + waiting)
        totals = w.totals()[f"{w.partition('S1')}|CN-AU"]
        totals.pop("o")
        assert totals == reference_totals(held + waiting)["CN-AU"]
        labels = dict(corridor="CN-AU", destination="AU", regime="au-gst-low-value",
                      value_class="low_value")
        assert w.sample("corridor_customs_arrivals_total", **labels) == 1
        assert w.sample("corridor_customs_events_total", **labels, type="hold") == 2
        assert w.sample("corridor_customs_events_total", **labels, type="inspection") == 1
        assert w.sample("corridor_customs_clearance_seconds_sum", **labels) == 40 * HOUR
        assert w.sample("corridor_customs_cleared_within_target_total", **labels, days="calendar") == 1
        assert w.sample("corridor_shipments_delivered_excluding_customs_total", corridor="CN-AU",
                        service_level="standard", on_time="true") == 1
        # now = the latest event, h150; S2 arrived at h140: 10 h in customs
        assert w.sample("corridor_customs_waiting", **labels, age="0-1d") == 1
        assert w.sample("corridor_import_regime_start_seconds", regime="us-de-minimis-suspended") == \
            1756440000.0           # 2025-08-29T00:00 in New York (EDT, UTC-4)


async def test_a_shipment_forgotten_in_the_state_handed_over_is_not_started_again(worker):
    """After a restart or a rebalance a partition is read again from its committed offsets, and
    the state handed over may be ahead of them: a shipment forgotten in between (a retention
    after its end) sees its own events a second time. They are measured against the latest event
    time the recovered timelines hold for their source, and dead-lettered as `expired`: started
    again, the shipment would be counted twice, or wait for an order that was forgotten too."""
    import weakref
    from faust.streams import _current_event
    from faust.types import TP
    from streams.worker.agents import TimerEvent
    async with worker(retention_seconds=10 * 86400) as w:
        p = w.partition("S1")
        later = next(f"S{i}" for i in range(2, 500) if w.partition(f"S{i}") == p)
        first = journey("S1", "O1")
        await w.feed_all(first)
        await w.feed_all(journey(later, "O2", placed=1000, picked=1010, departed=1030,
                                 arrived=1080, released=1100, delivered=1130))   # 41 days on
        delivered = lambda: sum(n for record in corridor_totals(w.totals()).values()   # noqa: E731
                                for n in record["delivered"].values())
        assert delivered() == 2
        if "S1" in w.pipe.timelines:                  # forgotten in the state handed over
            standin = TimerEvent(w.topic_of("shipments"), p)
            token = _current_event.set(weakref.ref(standin))
            try:
                del w.pipe.timelines["S1"]
            finally:
                _current_event.reset(token)
        # a new assignment: nothing read since, the clocks learnt by reading are gone
        w.pipe.on_partitions_revoked({TP(w.topic_of(k), q) for k in ("shipments", "customs")
                                      for q in range(w.settings.partitions)})
        assert w.pipe._topic_clock == {}
        for kind, event in first[1:]:                 # S1's parcel events, read a second time
            await w.feed(kind, event)
        assert "S1" not in w.pipe.timelines
        assert w.sample(REJECTED, topic="shipments", reason="expired") == 5
        assert w.sample(REJECTED, topic="customs-events", reason="expired") == 2
        assert delivered() == 2
