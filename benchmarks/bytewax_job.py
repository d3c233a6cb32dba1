"""Throughput of corridor's job written as a Bytewax 0.21 dataflow, on the same broker and workload.

The best Python peer of issue 18, ported like benchmarks/quix.py: the same job as the corridor
worker (streams/worker/agents.py), through the same pure domain functions, so that every event
goes through the same logic. (Not named bytewax.py: that would shadow the package.)

    orders (KafkaSource) ─ key_on order_id ─┐  stateful_flat_map "order": join.order_step /
    <run>-order-links (KafkaSource) ─ key_on ┴─ join.link_step, state per order
                                                 │ forwarded order events
                                                 └ key_on shipment_id ─┐
    shipments (KafkaSource) ─ key_on shipment_id ──────────────────────┤ stateful_flat_map
    customs-events (KafkaSource) ─ key_on shipment_id ─────────────────┴ "shipment":
                                                 join.shipment_step + timeline.settle, per shipment
                    ├─ links ─> KafkaSink <run>-order-links (key order_id)  (the join's back edge)
                    └─ observations per corridor ─ key_on corridor ─ stateful_map "totals":
                               aggregate.new_totals / aggregate.add, per corridor ─> output

State is keyed like Quix's (per order, per shipment, per corridor) in Bytewax's stateful
operators; the re-keying between them is Bytewax's own exchange (key_on, then the stateful
operator routes each item to its key's worker), not Kafka. The one Kafka hop that stays is the
join's back edge, links from the shipment side to the order side: a Bytewax dataflow is acyclic
and the join is a cycle (order -> forwards -> shipment -> links -> order), so the links go out
through KafkaSink and come back through a KafkaSource, as they go through `<app>-order-links`
in the worker and in the Quix port. Each input topic is read by its own KafkaSource (all its
partitions, from the beginning); values are decoded with orjson, as Quix's json deserializer
does, keys are the message keys. Observations are settled at once (no watermark), as in the Quix
port. No JSON Schema validation, no dead-letter topics, no metrics endpoint, no expiry of ended
shipments, no gauges of open shipments: the corridor worker does all of these.

Two configurations, both one process with one worker (`-w 1`), epoch interval 1 s:

  durable   Bytewax recovery on: a recovery directory made like `python -m bytewax.recovery DIR 1`
            (bytewax.recovery.init_db_dir, one SQLite partition), snapshot interval 1 s (= the
            epoch interval, as `python -m bytewax.run -r DIR -s 1 -b 0` sets it), backup interval
            0. Each epoch the changed keys' states (deep copies, pickled) and the sources' offsets
            are written to SQLite. On resume Bytewax rewinds the sources to the last snapshot;
            the KafkaSink is at-least-once (links are deduped by the order side).
  in memory no recovery: the state lives only in the process (a crash loses it all).

The run is `cli_main(flow, workers_per_process=1, epoch_interval=1 s, recovery_config=...)`,
what `python -m bytewax.run` calls. Sources are tuned by one librdkafka setting:
statistics.interval.ms=0 (KafkaSource asks for statistics JSON every second and parses it for a
lag gauge this benchmark does not read; Quix tuned drops it too).

Each run: a fresh embedded broker (common.start_broker), the whole workload produced up front
(common.produce), the links topic created, then the dataflow started cold in a separate process
(`--serve`: this file, an empty recovery directory). The input sources read to the end of their
partitions and stop there (KafkaSource tail=False); the links source stops once the job is
quiescent: every input message applied (the parent passes their number), and every forwarded
order event, link and observation batch sent also applied (counters in the job's one worker:
the same thread runs every step, so equal counts mean nothing is in flight). Clocks (the job's
own wall clock):

- from ready: from the first source partition built (the consumers exist and read) until the
  job is quiescent: every input consumed, every join hop applied and the final totals out. This
  is the headline events/s. Durable, the state of every epoch before the last one is in the
  recovery store by then; the last epoch's snapshot (at most 1 s of changed keys) is not waited
  for, so the figure is, if anything, in Bytewax's favour (Quix and corridor are timed to their
  last commit).
- returned: until the dataflow returned. Bytewax 0.21 ends a dataflow by snapshotting every key
  of every stateful step (a deep copy each, also without recovery, then pickled and written when
  durable): seconds at 20,000 shipments that a long-running job never pays, so not the headline.
- cold: from the spawn of the process to quiescence (adds Python boot and the dataflow's build).

Bytewax 0.21 snapshots the keys changed in an epoch at every epoch close even without
recovery (`_StatefulFlatMapLogic.snapshot`: copy.deepcopy of the state, dropped when nothing
records it), so "in memory" still pays the deep copies; durable adds pickling and SQLite writes.
The job sets the corridor worker's garbage-collector thresholds (Settings.gc_thresholds,
10000,50,1000; BYTEWAX_BENCH_GC=python keeps Python's), as the worker does for the same reason:
the state is many small Python objects that full collections walk.

Also: the job's CPU (user + system, all threads, from ready to quiescence) per event, its peak RSS
(VmHWM), and the figures check: the final per-corridor totals (as the totals sink last received
them), as delivered / on time / transit seconds per corridor and service level, against the
independent count of the workload (benchmarks/oracle.py); any mismatch is printed and fails the run.

    python benchmarks/bytewax_job.py [--shipments 5000] [--runs 3] [--mode durable|memory|both]
                                     [--partitions 4] [--json FILE] [--keep-logs]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
# the source snapshot a benchmark session runs (benchmarks/common.py), else this repository
sys.path.insert(0, os.environ.get("CORRIDOR_BENCH_SRC") or str(ROOT))

MODES = ("durable", "memory")
#: Bytewax's epoch (and, durable, snapshot) interval, seconds.
EPOCH_S = 1.0
#: librdkafka settings for every source and the links sink (see the docstring).
KAFKA_CONFIG = {"statistics.interval.ms": 0}


def links_topic(run_id: str) -> str:
    return f"{run_id}-order-links"


# ---- the dataflow (runs in the --serve process) --------------------------------------------------

def build_flow(bootstrap: str, run_id: str, expected: int, ready_path: Path, sink: dict,
               counts: dict):
    """The Dataflow. `sink` receives {corridor: totals} as the totals step emits them; `counts`
    is the job's counters (also the quiescence test); `expected`: input messages produced."""
    import orjson
    from bytewax import operators as op
    from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource, KafkaSourceMessage
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    from streams.domain import aggregate, join, timeline
    from streams.domain.policy import SlaPolicy
    from streams.settings import Settings

    policy = SlaPolicy.load()
    settings = Settings()
    inputs = settings.input_topics                  # kind -> topic
    kind_of = {topic: kind for kind, topic in inputs.items()}
    max_events = settings.timeline_max_events
    links_t = links_topic(run_id)
    brokers = [bootstrap]
    loads, dumps = orjson.loads, orjson.dumps
    inf = float("inf")

    def quiescent() -> bool:
        c = counts
        return (c["inputs"] >= expected and c["forwards_out"] == c["forwards_in"]
                and c["links_out"] == c["links_in"] and c["obs_out"] == c["obs_in"])

    class Source(KafkaSource):
        """KafkaSource that notes when the dataflow is ready (its first partition built); the
        links source (`until_quiet`) ends once the job is quiescent instead of tailing forever."""

        def __init__(self, topic: str, until_quiet: bool = False):
            super().__init__(brokers, [topic], tail=until_quiet, add_config=dict(KAFKA_CONFIG))
            self._until_quiet = until_quiet

        def build_part(self, step_id, for_part, resume_state):
            part = super().build_part(step_id, for_part, resume_state)
            if not ready_path.exists():
                t = os.times()
                ready_path.write_text(json.dumps({"wall": time.time(), "cpu": t.user + t.system}))
            if self._until_quiet:
                inner = part.next_batch

                def next_batch():
                    if quiescent():
                        if "done_wall" not in counts:
                            t = os.times()
                            counts["done_wall"], counts["done_cpu"] = time.time(), t.user + t.system
                        raise StopIteration()
                    return inner()
                part.next_batch = next_batch
            return part

    class TotalsPartition(StatelessSinkPartition):
        def write_batch(self, items) -> None:
            for corridor, totals in items:
                sink[corridor] = totals

    class TotalsSink(DynamicSink):
        def build(self, step_id, worker_index, worker_count):
            return TotalsPartition()

    def key_of(msg) -> str:
        return msg.key.decode()

    # -- the order side: orders and links keyed by order_id, one state per order
    def order_step(state, msg):
        if msg.topic == links_t:
            v = loads(msg.value)
            step = join.link_step(state, join.Link(v["order_id"], v["shipment_id"], v.get("at")))
            counts["links_in"] += 1
        else:
            step = join.order_step(state, loads(msg.value))
            counts["inputs"] += 1
            counts["orders_duplicate" if step.applied.duplicate else "orders_applied"] += 1
        counts["forwards_out"] += len(step.forwards)
        return (state if step.applied.duplicate else step.applied.state,
                [ev for _sid, ev in step.forwards])

    # -- the shipment side: shipments, customs and forwarded order events keyed by shipment_id
    def shipment_step(state, item):
        if isinstance(item, KafkaSourceMessage):
            source, event = kind_of[item.topic], loads(item.value)
            counts["inputs"] += 1
        else:                                        # (order_id, forwarded order event)
            source, event = "orders", item[1]
            counts["forwards_in"] += 1
        step = join.shipment_step(state, source, event, policy, max_events)
        res = step.applied
        out = []
        if res.duplicate:
            counts[f"{source}_duplicate"] += 1
        else:
            counts[f"{source}_applied"] += 1
            state = res.state
            # Settled at once (no watermark in this port, as in benchmarks/quix.py): the figures
            # the worker makes final after the grace period, which this workload does not change.
            observations = timeline.settle(state, policy, inf, 0.0)
            if observations:
                by_corridor = defaultdict(list)
                for obs in observations:
                    by_corridor[obs[1]].append(obs)
                out.extend(("obs", corr, items) for corr, items in by_corridor.items())
                counts["obs_out"] += len(by_corridor)
        # links are resent for a duplicate too (timeline.apply: the order side dedupes them)
        out.extend(("link", link) for link in step.links)
        counts["links_out"] += len(step.links)
        return state, out

    # -- per-corridor totals keyed by corridor
    def totals_step(tot, item):                      # item: (shipment_id, ("obs", corridor, [obs]))
        tot = tot or aggregate.new_totals()
        for obs in item[1][2]:
            aggregate.add(tot, obs)
        counts["obs_in"] += 1
        return tot, tot

    def link_message(kv):
        link = kv[1][1]
        return KafkaSinkMessage(link.order_id.encode(), dumps(link._asdict()))

    flow = Dataflow("corridor")
    orders = op.key_on("key-orders", op.input("orders", flow, Source(inputs["orders"])), key_of)
    links = op.key_on("key-links", op.input("links", flow, Source(links_t, until_quiet=True)), key_of)
    order_out = op.stateful_flat_map("order", op.merge("order-in", orders, links), order_step)
    forwards = op.key_on("key-forwards", order_out, lambda kv: kv[1]["shipment_id"])
    shipments = op.key_on("key-shipments", op.input("shipments", flow, Source(inputs["shipments"])),
                          key_of)
    customs = op.key_on("key-customs", op.input("customs", flow, Source(inputs["customs"])), key_of)
    shipment_out = op.stateful_flat_map(
        "shipment", op.merge("shipment-in", shipments, customs, forwards), shipment_step)
    split = op.branch("split", shipment_out, lambda kv: kv[1][0] == "link")
    op.output("links-out", op.map("link-message", split.trues, link_message),
              KafkaSink(brokers, links_t, add_config=dict(KAFKA_CONFIG)))
    observations = op.key_on("key-corridor", split.falses, lambda kv: kv[1][1])
    totals = op.stateful_map("totals", observations, totals_step)
    op.output("totals-out", totals, TotalsSink())
    return flow


def serve(args) -> int:
    from datetime import timedelta

    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig

    if os.environ.get("BYTEWAX_BENCH_GC", "worker") == "worker":
        import gc

        from streams.settings import Settings
        gc.set_threshold(*Settings().gc_threshold_values)     # the corridor worker's (see docstring)
    counts: dict = defaultdict(int)
    final_totals: dict = {}
    ready_path, out_path = Path(args.ready), Path(args.out)
    flow = build_flow(args.bootstrap, args.run_id, args.expected, ready_path, final_totals, counts)
    recovery = (RecoveryConfig(args.recovery_dir, backup_interval=timedelta(0))
                if args.recovery_dir else None)
    cli_main(flow, workers_per_process=1, epoch_interval=timedelta(seconds=EPOCH_S),
             recovery_config=recovery)
    end_wall = time.time()
    t = os.times()
    hwm = next((int(line.split()[1]) / 1024 for line in Path("/proc/self/status").read_text()
                .splitlines() if line.startswith("VmHWM:")), None)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_bytes(json.dumps({"totals": final_totals, "counts": counts, "end_wall": end_wall,
                                "end_cpu": t.user + t.system, "peak_rss_mib": hwm}).encode())
    tmp.replace(out_path)
    return 0


# ---- the benchmark (parent process) -------------------------------------------------------------

def one_run(events, partitions: int, mode: str, logdir: Path, timeout: float = 1800) -> dict:
    """One cold run of the dataflow in `mode` (durable | memory) on a fresh broker."""
    sys.path.insert(0, str(HERE.parent))
    import pipeline
    from common import cpu_seconds, loadavg, poll, produce, start_broker, unique_app_id

    from streams.broker.embedded import create_topics

    assert mode in MODES, mode
    pipeline.expected_figures(events)                 # the independent count, off the clock
    load_before = loadavg()
    broker = start_broker(partitions)
    proc = None
    try:
        produce_s = produce(broker.bootstrap, events)
        run_id = unique_app_id("bytewax")
        create_topics(broker.bootstrap, {links_topic(run_id): partitions})
        ready, out = logdir / f"{run_id}.ready", logdir / f"{run_id}.json"
        log_path = logdir / f"{run_id}.log"
        cmd = [sys.executable, str(HERE), "--serve", "--bootstrap", broker.bootstrap,
               "--run-id", run_id, "--expected", str(len(events)),
               "--ready", str(ready), "--out", str(out)]
        if mode == "durable":
            from bytewax.recovery import init_db_dir    # = python -m bytewax.recovery DIR 1
            db = logdir / f"recovery-{run_id}"
            db.mkdir()
            init_db_dir(db, 1)
            cmd += ["--recovery-dir", str(db)]
        with open(log_path, "ab") as log:
            spawn_wall = time.time()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                    start_new_session=True,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))

        def failed() -> None:
            if proc.poll() not in (None, 0):
                tail = log_path.read_text(errors="replace").splitlines()[-30:]
                raise RuntimeError(f"bytewax dataflow exited with status {proc.returncode}:\n"
                                   + "\n".join(tail))

        poll(lambda: failed() or ready.exists() or proc.poll() is not None, 180, 0.05,
             "bytewax dataflow ready")
        broker_cpu0 = cpu_seconds(broker.pid)
        poll(lambda: failed() or proc.poll() is not None, timeout, 0.1,
             "the dataflow done (every event, link and observation applied) and returned")
        failed()
        broker_cpu = cpu_seconds(broker.pid) - broker_cpu0
        r0, result = json.loads(ready.read_text()), json.loads(out.read_text())
        n = len(events)
        counts = result["counts"]
        seconds = counts["done_wall"] - r0["wall"]
        cpu = counts["done_cpu"] - r0["cpu"]
        totals = result["totals"]
        return {"events": n, "mode": mode, "seconds": seconds, "events_per_s": n / seconds,
                "returned_s": result["end_wall"] - r0["wall"],
                "returned_cpu_us_per_event": (result["end_cpu"] - r0["cpu"]) / n * 1e6,
                "cold_events_per_s": n / (counts["done_wall"] - spawn_wall),
                "start_to_ready_s": r0["wall"] - spawn_wall,
                "produce_per_s": n / produce_s,
                "worker_cpu_s": cpu, "cpu_us_per_event": cpu / n * 1e6,
                "broker_cpu_s": broker_cpu, "peak_rss_mib": result["peak_rss_mib"],
                "delivered": sum(sum(t["delivered"].values()) for t in totals.values()),
                "counts": counts, "exit_status": proc.returncode,
                **pipeline.check_totals(events, totals),
                "loadavg_before": load_before, "loadavg_after": loadavg()}
    finally:
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(10)
        broker.stop()


def run_line(r: dict) -> str:
    return (f"{r['events_per_s']:8.0f} events/s from ready ({r['seconds']:.1f} s; returned after "
            f"{r['returned_s']:.1f} s; {r['cpu_us_per_event']:.0f} us CPU/event; "
            f"{r['cold_events_per_s']:.0f} from spawn, ready after {r['start_to_ready_s']:.1f} s)  "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB  delivered {r['delivered']:.0f}  "
            f"(producer {r['produce_per_s']:.0f} msg/s, load {r['loadavg_before']:.1f}"
            f"->{r['loadavg_after']:.1f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shipments", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--mode", choices=(*MODES, "both"), default="both",
                    help="durable: recovery on (SQLite snapshots every 1 s); memory: no recovery")
    ap.add_argument("--json", metavar="FILE", help="also write every run's figures to FILE")
    ap.add_argument("--keep-logs", action="store_true")
    # the dataflow process
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    ap.add_argument("--expected", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--recovery-dir", help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args)

    sys.path.insert(0, str(HERE.parent))
    import pipeline
    from common import workload
    events = workload(args.shipments, args.seed)
    modes = MODES if args.mode == "both" else (args.mode,)
    logdir = Path(tempfile.mkdtemp(prefix="corridor-bytewax-"))
    print(f"workload: {args.shipments} shipments, {len(events)} events, {args.partitions} partitions, "
          f"Bytewax 0.21 {' and '.join(modes)}, {os.cpu_count()} CPUs; logs in {logdir}", flush=True)
    results = []
    for mode in modes:
        rs = []
        for i in range(args.runs):
            r = one_run(events, args.partitions, mode, logdir)
            rs.append(r)
            print(f"{mode} run {i + 1}: {run_line(r)}\n    {pipeline.figures_line(r, 20)}", flush=True)
        rates = [r["events_per_s"] for r in rs]
        print(f"{mode}: median {statistics.median(rates):.0f} events/s  (min {min(rates):.0f}, max "
              f"{max(rates):.0f}, {len(rates)} runs); median CPU "
              f"{statistics.median(r['cpu_us_per_event'] for r in rs):.0f} us/event; median peak RSS "
              f"{statistics.median(r['peak_rss_mib'] for r in rs):.0f} MiB; figures exact in "
              f"{sum(r['figures_exact'] for r in rs)} of {len(rs)} runs", flush=True)
        results += rs
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0 if all(r["figures_exact"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
