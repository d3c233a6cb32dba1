"""Recovery reads each changelog to its true end, never stops with faust's ConsistencyError, and
never seeks a changelog with the offsets of a rebalance that superseded it.

The true ends are read on the embedded broker only, whose ListOffsets stops at the last batch's
first record; offsets ahead of the end are settled in every profile (`_recovery_ends_patch`,
docs/semantics.md "Crashes", tests/e2e/test_changelog_tail.py).

A rebalance that lands while a recovery is finishing (every profile, `_stale_seek_patch`): faust's
`Recovery.on_rebalance` replaces the standby and active partition sets and gives each newly
assigned partition the offset None ("not built yet", a memory store persists nothing) in the very
sets the running recovery holds, then signals a new recovery. The running one could still reach
its next seek before it noticed the signal, and aiokafka's seek refused None: the worker exited
with ValueError('Offset must be a positive integer') (chaos trial seed 18). Such a seek is now
skipped and faust's loop restarts recovery, which builds the new offsets and seeks them; an
offset still unknown at a seek reads the changelog from its beginning. No changelog record is
skipped either way (tests/unit/test_recovery_seek.py).

The faust functions these wrap or rely on, and their fingerprints, are in
streams.worker.faust_patches.UPSTREAM (patch module "recovery"; RECOVERY_SOURCES is derived from
it).
"""
from __future__ import annotations

import asyncio
import logging

# Whether recoveries read the true ends (`_TRUE_ENDS`) is kept in the package, not here: apply()
# sets it there and tests set `faust_patches._TRUE_ENDS`, so this module reads it from there.
from streams.worker import faust_patches as _package

log = logging.getLogger("corridor.recovery")


#: The longest the embedded profile keeps trying to read the changelog ends of one recovery step
#: before it goes on with ListOffsets' answers (faust abandons recovery for good if a step takes
#: broker_request_timeout, 90 s by default).
TRUE_END_BUDGET = 30.0


def _recovery_ends_patch(true_ends: bool) -> None:
    """Recovery reads every changelog to its true end, and a store past that end stops nothing.

    True ends (embedded profile only). faust's Recovery reads a changelog partition up to the
    end that `Consumer.highwaters` (ListOffsets) answers. Tansu answers the base offset of the
    partition's last record batch + 1 (docs/broker.md), so a changelog whose last batch holds
    several records (a worker killed, or a broker frozen, between a commit's records and its end
    marker) was read short, and a worker whose store had seen further (its own writes, an
    earlier recovery whose fetch went past that answer, the clock GlobalTable that it reads all
    along) died with ConsistencyError at the next rebalance ("18 > 15"). Here each answer is
    checked by a fetch from it onward (streams.worker.changelog_ends.true_end_offsets) and recovery
    reads to the true end; partitions corrected are logged and counted.

    Offsets ahead (every profile). A recovery offset above the (true) end means the log lost
    records the store holds (docs/semantics.md "Crashes"): instead of faust's ConsistencyError,
    the worker logs a warning, counts it and reads on from the end, its store kept (the offset,
    and the RocksDB store's persisted offset, are lowered to the end, so later records are read,
    not skipped). An offset that is ahead only because the log grew while its end was read (the
    clock GlobalTable is read all along) is not: the end is read again first. faust's own check
    (`recovery_consistency_check`, which only raises) is off (streams.worker.app.faust_settings): it
    runs a loop turn after these, when such growth can still pass it.

    Replaces faust.tables.recovery.Recovery._build_highwaters and _build_offsets (faust-streaming
    0.15.3, each called first as it is), checked by source fingerprint (RECOVERY_SOURCES) in
    `apply` before anything is patched.
    """
    if true_ends:
        _package._TRUE_ENDS = True
    from faust.tables.recovery import Recovery
    if getattr(Recovery, "_corridor_ends_patched", False):
        return
    wrapped = {"_build_highwaters": Recovery._build_highwaters,
               "_build_offsets": Recovery._build_offsets,
               "_restart_recovery": Recovery.__dict__["_restart_recovery"].fun}
    build_highwaters, build_offsets = wrapped["_build_highwaters"], wrapped["_build_offsets"]

    async def _build_highwaters(self, consumer, tps, destination, title) -> None:
        await build_highwaters(self, consumer, tps, destination, title)
        if _package._TRUE_ENDS and tps:
            await _read_true_ends(self, tps, destination)
        if destination is self.standby_highwaters:     # standby offsets are built and sought
            await _settle_offsets_ahead(self, consumer, tps, self.standby_offsets, destination,
                                        seek=True)

    async def _build_offsets(self, consumer, tps, destination, title) -> None:
        await build_offsets(self, consumer, tps, destination, title)
        if destination is self.active_offsets:         # active highwaters are built, no seek yet
            await _settle_offsets_ahead(self, consumer, tps, destination, self.active_highwaters,
                                        seek=False)

    Recovery._build_highwaters = _build_highwaters
    Recovery._build_offsets = _build_offsets
    Recovery._corridor_ends_originals = wrapped
    Recovery._corridor_ends_patched = True


def _recovery_counters(recovery):
    """The app's RecoveryCounters, registered with the corridor pipeline's registry if any."""
    from streams.worker.changelog_ends import RecoveryCounters
    app = recovery.app
    counters = app.__dict__.get("_corridor_recovery_counters")
    if counters is None:
        registry = getattr(getattr(app, "corridor", None), "registry", None)
        counters = RecoveryCounters(registry, sorted(t.name for t in recovery.tables.values()))
        app.__dict__["_corridor_recovery_counters"] = counters
    return counters


def _table_name(recovery, tp) -> str:
    table = recovery.tp_to_table.get(tp)
    return table.name if table is not None else tp.topic


async def _probe_true_ends(recovery, tps, highwaters) -> dict | None:
    """{tp: true end offset} read by fetching from the ends in `highwaters` (faust's notation:
    end - 1); tried again for up to TRUE_END_BUDGET s, then None (logged as an error)."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list

    from streams.worker.changelog_ends import PROBE_TIMEOUT, true_end_offsets
    conf = recovery.app.conf
    servers = server_list(conf.broker, 9092)
    options = credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)
    listed = {tp: highwaters[tp] + 1 for tp in tps if highwaters.get(tp) is not None}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TRUE_END_BUDGET
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - loop.time()
        try:
            return await true_end_offsets(servers, tps, listed, client_options=options,
                                          timeout=max(min(PROBE_TIMEOUT, remaining), 1.0))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if deadline - loop.time() < 2.0:
                log.error("could not read the true ends of %d changelog partitions in %d "
                          "attempts (%r): recovery reads to the ListOffsets answers, which may "
                          "stop short of the broker's records", len(listed), attempt, exc)
                return None
            log.warning("reading the true ends of the changelogs failed (%r); trying again", exc)
            await asyncio.sleep(1.0)


async def _read_true_ends(recovery, tps, highwaters) -> None:
    ends = await _probe_true_ends(recovery, tps, highwaters)
    if not ends:
        return
    counters = _recovery_counters(recovery)
    for tp in sorted(ends):
        end, listed = ends[tp], highwaters[tp] + 1
        if end > listed:
            name = _table_name(recovery, tp)
            log.info("changelog %s[%d] of table %s: ListOffsets answered %d, the log ends at %d; "
                     "recovery reads to %d", tp.topic, tp.partition, name, listed, end, end)
            counters.corrected.labels(name).inc()
            highwaters[tp] = end - 1


async def _settle_offsets_ahead(recovery, consumer, tps, offsets, highwaters, *, seek: bool):
    """Lower every recovery offset above its changelog's (true) end to that end: see
    `_recovery_ends_patch` and docs/semantics.md "Crashes"."""
    from streams.worker.changelog_ends import offsets_ahead
    ahead = offsets_ahead(tps, offsets, highwaters)
    if not ahead:
        return
    # The log may have grown since its end was read: read the end of those partitions again.
    again = {tp for tp, _o, _h in ahead}
    if _package._TRUE_ENDS:
        ends = await _probe_true_ends(recovery, again, highwaters) or {}
    else:
        ends = await consumer.highwaters(*again)
    for tp, end in ends.items():
        if end is not None and end - 1 > highwaters[tp]:
            highwaters[tp] = end - 1
    for tp, offset, last in offsets_ahead(tps, offsets, highwaters):
        name = _table_name(recovery, tp)
        log.warning("changelog %s[%d] of table %s ends at offset %d, but this worker's store has "
                    "seen offset %d there: the log lost records the store holds. Keeping the "
                    "store and reading on from the end (docs/semantics.md \"Crashes\")",
                    tp.topic, tp.partition, name, last + 1, offset)
        _recovery_counters(recovery).ahead.labels(name).inc()
        offsets[tp] = last
        table = recovery.tp_to_table.get(tp)
        if table is not None:
            table.data.set_persisted_offset(tp, last)
        if seek:
            await consumer.seek_wait({tp: max(last, 0)})


def _stale_seek_patch() -> None:
    """A recovery's seek never uses the offsets of a rebalance that superseded it, nor an unknown
    offset: a worker no longer exits with ValueError('Offset must be a positive integer').

    faust-streaming 0.15.3's `Recovery._restart_recovery` seeks the active changelog partitions
    after building their offsets, and the standby ones after the actives were read to their end,
    each in `self._wait`, which raises RebalanceAgain when `signal_recovery_start` is set: faust's
    way of dropping a recovery that a newer rebalance superseded. But `Recovery.on_rebalance`
    (run by the consumer's rebalance callback, without an await) changes the partition sets and
    offsets the running recovery holds, in place, before it sets that signal: newly assigned
    partitions get the offset None (`_add`: a memory store persists none). When the callback
    ran after the awaited step before the seek had finished (waiting for the actives' end, or
    building the standby offsets) but before the recovery task resumed, `_wait` returned
    normally, the signal unseen, and `_seek_offsets` passed None on to aiokafka's
    `AIOKafkaConsumer.seek`, which raises ValueError for anything but an int >= 0 (it maps only
    -1 to 0). `wait_first` raises a task's error before it looks at the signal, and
    `_restart_recovery` re-raises anything but RebalanceAgain/IllegalStateError/ServiceStopped:
    the recovery service crashed and the worker with it.

    Now, with a newer rebalance signalled, the seek raises RebalanceAgain without seeking (the
    sets and offsets are the new assignment's, half-built): faust's loop starts the new recovery,
    which builds every offset and seeks again, as faust itself does right after the active seek
    (`if self.signal_recovery_start.is_set(): continue`). Without a signal, an offset that is
    None or below -1 (faust's "nothing read" is -1, sought as 0) means nothing is known of that
    partition: it becomes what `_build_offsets` gives a fresh recovery (the earliest offset - 1),
    so the partition is read from its beginning (an offset below the log's start goes to its
    start: consumer_auto_offset_reset="earliest", streams.worker.app): re-applying changelog
    records already applied gives the same values, while skipping one would lose a key's update.

    Wraps faust.tables.recovery.Recovery._seek_offsets, relying on `on_rebalance` setting the
    signal after it changed the sets and on `_restart_recovery` catching RebalanceAgain (their
    fingerprints are in UPSTREAM, checked in `apply` before anything is patched).
    """
    from faust.tables.recovery import RebalanceAgain, Recovery
    if getattr(Recovery, "_corridor_seek_patched", False):
        return
    seek_offsets = Recovery._seek_offsets

    async def _seek_offsets(self, consumer, tps, offsets, title) -> None:
        if self.signal_recovery_start.is_set():
            log.info("a newer rebalance is signalled: the %s changelog seek of the superseded "
                     "recovery is skipped, recovery starts again", title)
            raise RebalanceAgain()
        unknown = sorted(tp for tp in tps if offsets.get(tp) is None or offsets[tp] < -1)
        if unknown:
            earliest = await consumer.earliest_offsets(*unknown)
            for tp in unknown:
                first = earliest.get(tp)
                log.warning("%s changelog %s[%d] of table %s: recovery offset %r is unknown; "
                            "reading it from its beginning (offset %s)", title, tp.topic,
                            tp.partition, _table_name(self, tp), offsets.get(tp),
                            first if first is not None else 0)
                offsets[tp] = first - 1 if first is not None else -1
        await seek_offsets(self, consumer, tps, offsets, title)

    Recovery._seek_offsets = _seek_offsets
    Recovery._corridor_seek_originals = {"_seek_offsets": seek_offsets,
                                         "on_rebalance": Recovery.on_rebalance}
    Recovery._corridor_seek_patched = True
