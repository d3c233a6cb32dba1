"""Run-time changes to faust-streaming 0.15.3 / aiokafka 0.14 internals, applied by `create_app`.

Four kinds, a module each: workarounds for the embedded broker (Tansu, docs/broker.md), applied in
the embedded profile only (`embedded`); fixes for Faust bugs that lose messages after a crash
(docs/semantics.md "Crashes"), applied in every profile (`crash_fixes`); the hook that sends the
tables' written-behind changelogs before each commit (streams.worker.tables.Utf8KeyTable), in every
profile, ending them with markers in the embedded profile (`write_behind`); and three changes to
how messages reach the agents (docs/performance.md), in every profile: the fetcher loop without a
task per message, stream iteration that yields to the event loop once per STREAM_YIELD_EVERY
events rather than once per event, and the producer buffer's size read without a settings lookup
per message (`delivery`). tests/e2e/test_crash.py and test_retention.py fail if the crash fixes or
the hook stop working, test_pipeline.py if the markers do; tests/unit/test_resume.py covers how a
suspended delivery is finished, test_stream_yield.py how often a stream yields,
test_producer_buffer.py the buffer's size, and every e2e test goes through all three.

Recovery reads each changelog to its true end (on the embedded broker, whose ListOffsets stops at
the last batch's first record), never stops with faust's ConsistencyError, and never seeks with
the offsets of a rebalance that superseded it, in every profile (`recovery`, docs/semantics.md
"Crashes", tests/e2e/test_changelog_tail.py, tests/unit/test_recovery_seek.py).

The guard. `apply` refuses to patch anything (UnsupportedDependency: one line; `corridor worker`
checks before it reaches the broker and exits with status 2) unless the patches can work as
written and tested: the installed faust-streaming and aiokafka are FAUST_VERSION and
AIOKAFKA_VERSION; every upstream function a patch replaces, wraps or relies on (UPSTREAM, one table
for every module here) still exists and has the source it was written against (a fingerprint of
its source text); and faust's Cython stream iterator is in use (without it the stream yield patch
does nothing). CORRIDOR_ALLOW_UNTESTED_FAUST=1 (Settings.allow_untested_faust), for trying an
upgrade, turns that into one warning naming the versions; a patch target that no longer exists
still refuses, as the patch would fail or set an attribute nothing reads. On an upgrade,
tests/unit/test_faust_patches.py names every function whose source changed and the patch module
to re-check; then update UPSTREAM and the versions.

The names other code imports from here are re-exported below (`__all__`).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import logging

from streams.errors import UnsupportedDependency
from streams.worker.faust_patches.crash_fixes import (_drain_producer_buffer_patch,
                                                      _final_commit_patch,
                                                      _seek_with_flow_stopped_patch)
from streams.worker.faust_patches.delivery import (STREAM_YIELD_EVERY, _eager_delivery_patch,
                                                   _producer_buffer_ebb_patch, _stream_yield_patch,
                                                   resume, yielding_every)
from streams.worker.faust_patches.embedded import (_embedded_fetch_wait_patch,
                                                   _embedded_leave_group_patch)
from streams.worker.faust_patches.recovery import (_recovery_ends_patch, _settle_offsets_ahead,
                                                   _stale_seek_patch)
from streams.worker.faust_patches.write_behind import (END_MARKER_KEY, _write_behind_flush_patch,
                                                       write_changelogs)

#: Imported from here by other code (the rest of the names above are apply()'s).
__all__ = ["STREAM_YIELD_EVERY", "resume", "yielding_every", "_settle_offsets_ahead",
           "END_MARKER_KEY", "write_changelogs"]

log = logging.getLogger("corridor.faust_patches")

#: The versions every patch here was written against and checked with.
FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"

#: The environment variable of Settings.allow_untested_faust, named in the guard's messages.
ALLOW_UNTESTED_ENV = "CORRIDOR_ALLOW_UNTESTED_FAUST"

#: Every upstream function a patch replaces, wraps or relies on: qualified name (module, then the
#: class the patch assigns to, then the attribute) -> (the first 16 hex digits of the SHA-256 of
#: its source in FAUST_VERSION / AIOKAFKA_VERSION, the patch module to re-check when it changes).
#: A property stands for its getter, a mode `Service.task` for its function. A fingerprint of
#: None: compiled code (Cython), whose source cannot be read; the name must still exist.
UPSTREAM: dict[str, tuple[str | None, str]] = {
    # embedded
    "aiokafka.consumer.group_coordinator.GroupCoordinator._maybe_leave_group":
        ("016cd88a16e6c4b5", "embedded"),
    "aiokafka.AIOKafkaConsumer.__init__": ("01506f316191f7c9", "embedded"),
    #   relied on: faust passes its hard-coded fetch_max_wait_ms=1500 as a keyword
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer":
        ("c2701bfc3e6f6cad", "embedded"),
    # crash_fixes
    "faust.transport.producer.ProducerBuffer._send_pending": ("4a9d5f932b56bc68", "crash_fixes"),
    "faust.transport.producer.ProducerBuffer.flush": ("26fbebb124ad9c98", "crash_fixes"),
    "faust.transport.consumer.Consumer.perform_seek": ("0e8c130ff4b0afd8", "crash_fixes"),
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread.seek_to_committed":
        ("775ab0adc4b052ab", "crash_fixes"),
    #   relied on: the stream partitions are resumed, sought, then the flow is resumed
    "faust.tables.recovery.Recovery._resume_streams": ("d986a6710c1aca98", "crash_fixes"),
    "faust.transport.consumer.Consumer.commit_and_end_transactions":
        ("892377824b11a2ee", "crash_fixes"),
    #   relied on: commit() returns without committing while `_commit_fut` (a running commit)
    #   is set, and maybe_wait_for_commit_to_finish waits for it
    "faust.transport.consumer.Consumer.commit": ("a354437baaa08bf8", "crash_fixes"),
    "faust.transport.consumer.Consumer.maybe_wait_for_commit_to_finish":
        ("d687f63a0b5ef0c5", "crash_fixes"),
    # write_behind
    "faust.transport.drivers.aiokafka.Producer.flush": ("36d0cb3615f65b01", "write_behind"),
    "faust.transport.drivers.aiokafka.Producer.send": ("0b5bd08f52e5e2a9", "write_behind"),
    #   relied on: batch_sender builds batches on the aiokafka producer this returns
    "faust.transport.drivers.aiokafka.Producer._ensure_producer":
        ("5592a4bbdf251325", "write_behind"),
    #   relied on: the producer is flushed before every offset commit
    "faust.transport.consumer.Consumer._commit_offsets": ("1a69799041188441", "write_behind"),
    # delivery
    "faust.transport.consumer.Consumer._drain_messages": ("44a2500309e83c63", "delivery"),
    "faust._cython.streams.sleep": (None, "delivery"),
    #   relied on: the Cython StreamIterator.next, which awaits that `sleep`, drives the stream
    "faust.streams.Stream._c_aiter": ("fa44582a5882e9df", "delivery"),
    "faust.transport.producer.ProducerBuffer.size": ("b543a978fdece62e", "delivery"),
    #   the batch path (deliver_fetch / deliver_batch) does what these do for the topics it
    #   applies: getmany's checks (active partitions, flow, generation), the conductor's flow
    #   control and producer-buffer wait, ack's bookkeeping; it relies on _wait_next_records,
    #   _to_message, and on wait_empty waiting for `_unacked_messages` (a suspended record)
    "faust.transport.consumer.Consumer.getmany": ("4b168d84882a70d6", "delivery"),
    "faust.transport.consumer.Consumer._wait_next_records": ("6218e1969a636b3f", "delivery"),
    "faust.transport.consumer.Consumer.ack": ("5fcf41cf45153475", "delivery"),
    "faust.transport.consumer.Consumer.wait_empty": ("e4662fe24f094819", "delivery"),
    "faust.transport.drivers.aiokafka.Consumer._to_message": ("7c24f6511b2fcef7", "delivery"),
    "faust.transport.conductor.Conductor._compile_message_handler":
        ("9fbc0538097aa4ec", "delivery"),
    # stopping: the worker class overrides the SIGTERM handler
    "faust.worker.Worker._on_sigterm": ("ba99cf23ea875c02", "stopping"),
    # recovery: the two it wraps, and the order of `_restart_recovery` it relies on (active
    # highwaters, active offsets, the consistency check, ..., standby seek, standby highwaters,
    # the check; and that it catches RebalanceAgain, which the stale seek raises)
    "faust.tables.recovery.Recovery._build_highwaters": ("91b4cc0d3724ae7b", "recovery"),
    "faust.tables.recovery.Recovery._build_offsets": ("27eec86be06cb51f", "recovery"),
    "faust.tables.recovery.Recovery._restart_recovery": ("6bd8a8558a2dffe4", "recovery"),
    #   the seek it wraps (it maps only -1 to 0), and, relied on, that on_rebalance changes the
    #   partition sets and offsets in place before it sets signal_recovery_start (the stale seek)
    "faust.tables.recovery.Recovery._seek_offsets": ("19598ca63d94d250", "recovery"),
    "faust.tables.recovery.Recovery.on_rebalance": ("aa4d997a1795ceae", "recovery"),
}

#: The recovery patch's entries of UPSTREAM, by method name (tests/unit/test_changelog_ends.py).
RECOVERY_SOURCES = {name.rsplit(".", 1)[1]: fingerprint
                    for name, (fingerprint, patch) in UPSTREAM.items() if patch == "recovery"}

#: Set by apply(embedded=True): recoveries in this process read the changelogs' true ends. Kept
#: here rather than in `recovery` so that setting `faust_patches._TRUE_ENDS` (the tests do) is
#: what the recovery patch reads.
_TRUE_ENDS = False

#: UPSTREAM's objects as first resolved, before apply() replaced any of them: what the
#: fingerprints are checked against once a process has been patched.
_ORIGINALS: dict[str, object] = {}


def check_versions() -> None:
    """Raise unless the installed faust-streaming and aiokafka are the versions patched here."""
    import aiokafka
    import faust
    found = (faust.__version__, aiokafka.__version__)
    if found != (FAUST_VERSION, AIOKAFKA_VERSION):
        raise UnsupportedDependency(
            f"faust-streaming {found[0]} and aiokafka {found[1]} are installed, but corridor's "
            f"run-time patches (streams.worker.faust_patches) support only faust-streaming "
            f"{FAUST_VERSION} with aiokafka {AIOKAFKA_VERSION}: install those, or set "
            f"{ALLOW_UNTESTED_ENV}=1 to run untested (to try an upgrade)")


def source_fingerprint(fn) -> str:
    """The first 16 hex digits of the SHA-256 of a function's source text."""
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


def require_source(fn, expected: str, name: str, patch: str = "recovery") -> None:
    """Raise unless `fn`'s source is the one a patch was written against."""
    found = source_fingerprint(fn)
    if found != expected:
        raise UnsupportedDependency(
            f"streams.worker.faust_patches: {name} is not the faust-streaming {FAUST_VERSION} / "
            f"aiokafka {AIOKAFKA_VERSION} code the {patch} patch was written against (source "
            f"fingerprint {found}, expected {expected}); refusing to patch it")


def resolve(name: str):
    """What a qualified name of UPSTREAM names now: its longest importable module, then
    attributes as the class holds them (no descriptor called); a property gives its getter, a
    mode Service.task its function. LookupError if a part is missing."""
    from mode.services import ServiceTask
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:      # not a module (a class, an attribute), or a module that is gone
            continue
        break
    else:
        raise LookupError(f"{name}: no module {parts[0]}")
    for attr in parts[i:]:
        try:
            obj = inspect.getattr_static(obj, attr)
        except AttributeError:
            raise LookupError(f"{name}: no {attr}") from None
    if isinstance(obj, property):
        return obj.fget
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__
    if isinstance(obj, ServiceTask):
        return obj.fun
    return obj


def upstream(name: str):
    """The upstream object a name of UPSTREAM names, as it was before apply() patched it."""
    if name in _ORIGINALS:
        return _ORIGINALS[name]
    obj = resolve(name)
    if (getattr(obj, "__module__", None) or "").startswith(__name__ + "."):
        raise RuntimeError(f"{name} was patched before apply() checked it: patch through apply()")
    _ORIGINALS[name] = obj
    return obj


def _cython_stream_iterator_missing() -> bool:
    """Does faust's Stream iterate without the Cython StreamIterator (the extension is not built,
    or NO_CYTHON is set)? The stream yield patch replaces a global of that extension, so it then
    does nothing, and every event costs a turn of the event loop (docs/performance.md)."""
    import faust.streams
    return getattr(faust.streams, "_CStreamIterator", None) is None


def check(allow_untested: bool = False) -> str | None:
    """Raise UnsupportedDependency (one line) unless every patch can be applied as written and
    tested (the module docstring says what that takes). With `allow_untested`, return instead the
    one line saying what is untested (None when nothing is); a patch target that no longer exists
    still raises. Patches nothing: `corridor worker` calls it before it reaches the broker."""
    import aiokafka
    import faust
    if not allow_untested:
        check_versions()                 # the clearest message when both versions and code differ
    versions_differ = (faust.__version__, aiokafka.__version__) != (FAUST_VERSION, AIOKAFKA_VERSION)
    installed = f"faust-streaming {faust.__version__} / aiokafka {aiokafka.__version__}"
    no_cython = _cython_stream_iterator_missing()
    missing, changed = [], []
    for name, (expected, patch) in UPSTREAM.items():
        if no_cython and name.startswith("faust._cython."):
            continue                     # the extension as a whole is reported below
        try:
            fn = upstream(name)
        except LookupError:
            missing.append(f"{name} ({patch})")
            continue
        if expected is not None:
            try:
                require_source(fn, expected, name, patch)
            except UnsupportedDependency:
                changed.append(f"{name} ({patch})")
    if missing:
        raise UnsupportedDependency(
            f"corridor's run-time patches (streams.worker.faust_patches) cannot be applied to "
            f"{installed}: {', '.join(missing)} no longer exist; {ALLOW_UNTESTED_ENV} cannot "
            "override this")
    untested = []
    if changed:
        untested.append(f"upstream code the patches were not written against: {', '.join(changed)}")
    if no_cython:
        untested.append("faust's Cython stream iterator is not in use (extension not built, or "
                        "NO_CYTHON set), so the stream yield patch (delivery) does nothing")
    if untested and not allow_untested:
        raise UnsupportedDependency(
            f"{installed} is supported, but {'; '.join(untested)}: re-check the patch modules "
            f"named (streams/worker/faust_patches/), or set {ALLOW_UNTESTED_ENV}=1 to run untested")
    if not (versions_differ or untested):
        return None
    return (f"{ALLOW_UNTESTED_ENV} is set: corridor's run-time patches run untested on {installed} "
            f"(tested: faust-streaming {FAUST_VERSION} / aiokafka {AIOKAFKA_VERSION})"
            + "".join(f"; {u}" for u in untested))


def apply(embedded: bool, allow_untested: bool = False) -> None:
    """Patch faust-streaming and aiokafka in this process (each patch once), after `check`;
    `embedded`: the embedded broker's workarounds too, and recoveries read the true ends.
    `allow_untested` (Settings.allow_untested_faust): log check's warning instead of refusing."""
    untested = check(allow_untested)
    if untested:
        log.warning("%s", untested)
    if embedded:
        _embedded_leave_group_patch()
        _embedded_fetch_wait_patch()
    _recovery_ends_patch(true_ends=embedded)
    _stale_seek_patch()
    _drain_producer_buffer_patch()
    _seek_with_flow_stopped_patch()
    _final_commit_patch()
    _write_behind_flush_patch()
    _eager_delivery_patch()
    _stream_yield_patch()
    _producer_buffer_ebb_patch()
