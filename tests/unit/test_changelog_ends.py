"""The pure pieces of changelog-end recovery (streams.worker.changelog_ends, faust_patches
`_recovery_ends_patch`) and the version guard of faust_patches. The probe against a real broker
and the worker end to end: tests/e2e/test_changelog_tail.py."""
import asyncio
from types import SimpleNamespace

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from streams.worker import faust_patches
from streams.worker.changelog_ends import RecoveryCounters, caught_up, offsets_ahead
from streams.worker.faust_patches import (AIOKAFKA_VERSION, FAUST_VERSION, RECOVERY_SOURCES,
                                   check_versions, require_source, source_fingerprint)


def test_a_partition_is_caught_up_once_read_up_to_its_last_fetch_high_watermark():
    assert caught_up(None, 0) is None            # no fetch answered yet
    assert caught_up(11, 2) is None              # the tail of the last batch is still to read
    assert caught_up(11, 11) == 11
    assert caught_up(0, 0) == 0                  # an empty partition


def test_offsets_ahead_lists_the_partitions_whose_store_is_past_the_last_offset():
    offsets = {("c", 0): 18, ("c", 1): 15, ("c", 2): None, ("c", 3): 4, ("c", 4): 0}
    highwaters = {("c", 0): 15, ("c", 1): 15, ("c", 2): 7, ("c", 3): None, ("c", 4): -1}
    assert offsets_ahead(offsets, offsets, highwaters) == [(("c", 0), 18, 15), (("c", 4), 0, -1)]
    assert offsets_ahead([("c", 1)], offsets, highwaters) == []


def test_the_installed_versions_are_the_patched_ones():
    import aiokafka
    import faust
    assert (faust.__version__, aiokafka.__version__) == (FAUST_VERSION, AIOKAFKA_VERSION)
    check_versions()


@pytest.mark.parametrize("module,version", [("faust", "0.15.4"), ("aiokafka", "0.13.0")])
def test_apply_refuses_other_versions_before_patching_anything(monkeypatch, module, version):
    import importlib
    from faust.tables.recovery import Recovery
    before = (Recovery._build_highwaters, Recovery._build_offsets)
    monkeypatch.setattr(importlib.import_module(module), "__version__", version)
    with pytest.raises(RuntimeError, match=f"{module}[-a-z]* {version}"):
        faust_patches.apply(embedded=True)
    assert (Recovery._build_highwaters, Recovery._build_offsets) == before


def test_the_recovery_fingerprints_are_those_of_the_installed_faust():
    from faust.tables.recovery import Recovery
    originals = {**(getattr(Recovery, "_corridor_ends_originals", None) or {    # not patched yet
        "_build_highwaters": Recovery._build_highwaters,
        "_build_offsets": Recovery._build_offsets,
        "_restart_recovery": Recovery.__dict__["_restart_recovery"].fun}),
        **(getattr(Recovery, "_corridor_seek_originals", None) or {
            "_seek_offsets": Recovery._seek_offsets,
            "on_rebalance": Recovery.on_rebalance})}
    assert {name: source_fingerprint(fn) for name, fn in originals.items()} == RECOVERY_SOURCES


def test_a_function_with_another_source_is_refused():
    def _build_highwaters(self, consumer, tps, destination, title):
        return None
    with pytest.raises(RuntimeError, match="refusing to patch it"):
        require_source(_build_highwaters, RECOVERY_SOURCES["_build_highwaters"], "x")


@pytest.mark.parametrize("profile", ["embedded", "kafka"])
def test_faust_consistency_check_is_off_in_every_profile(profile):
    from streams.worker.app import faust_settings
    from streams.settings import Settings
    assert faust_settings(Settings(profile=profile))["recovery_consistency_check"] is False


class _Store:
    def __init__(self):
        self.persisted = {}

    def set_persisted_offset(self, tp, offset):
        self.persisted[tp] = offset


class _Consumer:
    def __init__(self, ends):
        self.ends, self.asked, self.sought = ends, [], []

    async def highwaters(self, *tps):
        self.asked.append(sorted(tps))
        return {tp: self.ends[tp] for tp in tps}

    async def seek_wait(self, offsets):
        self.sought.append(dict(offsets))


def _recovery(tables):
    app = SimpleNamespace(corridor=SimpleNamespace(registry=CollectorRegistry()))
    tp_to_table = {tp: t for t in tables for tp in t.tps}
    return SimpleNamespace(app=app, tables={t.name: t for t in tables}, tp_to_table=tp_to_table)


def _table(name, tps):
    return SimpleNamespace(name=name, tps=tps, data=_Store())


def _sample(recovery, name, table):
    return recovery.app.corridor.registry.get_sample_value(name, {"table": table})


def test_an_offset_past_the_end_is_lowered_to_it_counted_and_sought(monkeypatch):
    monkeypatch.setattr(faust_patches, "_TRUE_ENDS", False)
    a, b = TP("app-timelines-changelog", 3), TP("app-timelines-changelog", 1)
    clock = TP("app-clock-changelog", 0)
    timelines, clocks = _table("timelines", [a, b]), _table("clock", [clock])
    rec = _recovery([timelines, clocks])
    offsets = {a: 468, b: 40, clock: 18}
    highwaters = {a: 370, b: 40, clock: 15}
    # timelines p3 lost records (its end is still 371); the clock grew to 20 while being read
    consumer = _Consumer({a: 371, clock: 20})
    asyncio.run(faust_patches._settle_offsets_ahead(rec, consumer, [a, b, clock], offsets,
                                                    highwaters, seek=True))
    assert consumer.asked == [sorted([a, clock])]
    assert offsets == {a: 370, b: 40, clock: 18}
    assert highwaters == {a: 370, b: 40, clock: 19}
    assert timelines.data.persisted == {a: 370} and clocks.data.persisted == {}
    assert consumer.sought == [{a: 370}]
    assert _sample(rec, "corridor_recovery_offset_ahead_total", "timelines") == 1.0
    assert _sample(rec, "corridor_recovery_offset_ahead_total", "clock") == 0.0
    assert _sample(rec, "corridor_recovery_end_corrected_total", "timelines") == 0.0


def test_an_offset_past_an_empty_log_goes_back_to_its_start_and_actives_are_not_sought(monkeypatch):
    monkeypatch.setattr(faust_patches, "_TRUE_ENDS", False)
    tp = TP("app-orders-changelog", 2)
    orders = _table("orders", [tp])
    rec = _recovery([orders])
    offsets, highwaters = {tp: 12}, {tp: -1}
    consumer = _Consumer({tp: 0})
    asyncio.run(faust_patches._settle_offsets_ahead(rec, consumer, [tp], offsets, highwaters,
                                                    seek=False))
    assert offsets == {tp: -1} and orders.data.persisted == {tp: -1} and consumer.sought == []
    assert _sample(rec, "corridor_recovery_offset_ahead_total", "orders") == 1.0


def test_nothing_is_read_again_when_no_offset_is_ahead(monkeypatch):
    monkeypatch.setattr(faust_patches, "_TRUE_ENDS", False)
    tp = TP("app-orders-changelog", 0)
    rec = _recovery([_table("orders", [tp])])
    consumer = _Consumer({tp: 9})
    offsets, highwaters = {tp: 8}, {tp: 8}
    asyncio.run(faust_patches._settle_offsets_ahead(rec, consumer, [tp], offsets, highwaters,
                                                    seek=True))
    assert consumer.asked == [] and offsets == {tp: 8} and highwaters == {tp: 8}


def test_recovery_counters_start_at_zero_for_every_table():
    registry = CollectorRegistry()
    RecoveryCounters(registry, ["clock", "orders"])
    for name in ("corridor_recovery_end_corrected_total", "corridor_recovery_offset_ahead_total"):
        assert registry.get_sample_value(name, {"table": "clock"}) == 0.0
        assert registry.get_sample_value(name, {"table": "orders"}) == 0.0
