"""`corridor worker` with changes applied at run time, for measurements (streams/ untouched).

1. Faust setting overrides for what-if runs: CORRIDOR_BENCH_FAUST='{"producer_max_batch_size": 16384}'
   (JSON) is merged over what streams.worker.app.faust_settings() returns
   (`python benchmarks/pipeline.py --faust producer_max_batch_size=16384`).

2. CORRIDOR_BENCH_FETCH_MAX_WAIT_MS=100: the consumer's fetch_max_wait_ms, which faust hard-codes
   to 1500 (faust/transport/drivers/aiokafka.py). Tansu answers a fetch only when that wait is
   over, even when records arrive sooner (Kafka answers as soon as fetch_min_bytes is there), so
   on the embedded broker it sets the latency floor (`python benchmarks/latency.py
   --fetch-max-wait-ms 100`).

3. CORRIDOR_BENCH_GC=700,10,10: gc.set_threshold for what-if runs. CORRIDOR_BENCH_GC_LOG=PATH:
   every garbage collection of generation 2 (and any other over 10 ms) appends
   "monotonic_start duration_s generation collected" to PATH, to see whether collections line
   up with latency outliers.

    python benchmarks/worker_shim.py worker [faust worker args]
"""
import json
import os
import sys
from pathlib import Path

import faust

# the source snapshot the benchmark session runs (benchmarks/common.py), else this repository
sys.path.insert(0, os.environ.get("CORRIDOR_BENCH_SRC") or str(Path(__file__).resolve().parents[1]))

_overrides = json.loads(os.environ.get("CORRIDOR_BENCH_FAUST") or "{}")
if _overrides:
    import streams.worker.app as _app

    _faust_settings = _app.faust_settings

    def _patched(settings):
        conf = _faust_settings(settings)
        conf.update(_overrides)
        return conf

    _app.faust_settings = _patched

_fetch_wait = os.environ.get("CORRIDOR_BENCH_FETCH_MAX_WAIT_MS")
if _fetch_wait:
    import aiokafka

    _consumer_init = aiokafka.AIOKafkaConsumer.__init__

    def _init(self, *args, **kwargs):
        if "fetch_max_wait_ms" in kwargs:
            kwargs["fetch_max_wait_ms"] = int(_fetch_wait)
        _consumer_init(self, *args, **kwargs)

    aiokafka.AIOKafkaConsumer.__init__ = _init

_gc = os.environ.get("CORRIDOR_BENCH_GC")
if _gc:
    import gc

    gc.set_threshold(*(int(x) for x in _gc.split(",")))

_gc_log = os.environ.get("CORRIDOR_BENCH_GC_LOG")
if _gc_log:
    import gc
    import time

    _gc_out = open(_gc_log, "a", buffering=1)
    _gc_start = [0.0]

    def _on_gc(phase, info):
        if phase == "start":
            _gc_start[0] = time.monotonic()
            return
        took = time.monotonic() - _gc_start[0]
        if info["generation"] == 2 or took > 0.01:
            _gc_out.write(f"{_gc_start[0]:.3f} {took:.4f} {info['generation']} {info['collected']}\n")

    gc.callbacks.append(_on_gc)

from streams.cli import main  # noqa: E402

raise SystemExit(main())
