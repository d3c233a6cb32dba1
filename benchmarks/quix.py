"""Throughput of corridor's job written as a Quix Streams application, on the same broker and workload.

Same job as the corridor worker (streams/worker/agents.py: `order_record` and `timeline_record`), with the
same pure domain functions, so that every event goes through the same logic:

    orders (key order_id) ──────────┐  stateful: join.order_step / join.link_step
    <group>-order-links (order_id) ─┴─ state "o" per order ──> <group>-shipment-orders (key shipment_id)

    shipments, customs-events,      ┐  stateful: join.shipment_step (policy SlaPolicy.load(),
    <group>-shipment-orders          ┴─ state "s" per shipment     max events 100)
        (key shipment_id)               ├─> <group>-order-links           (key order_id) new order ids
                                        └─> <group>-corridor-observations (key corridor) observations

    <group>-corridor-observations ───── stateful: aggregate.new_totals / aggregate.add,
                                         state "t" per corridor (the per-corridor totals)

Each stateful step is a `StreamingDataFrame.apply(stateful=True)` on a dataframe that
`concat`s the co-partitioned topics whose messages share a key (Quix gives a concatenation one
state store, keyed by the message key), so the state lives in Quix State: RocksDB stores with
changelog topics, as a real Quix application keeps it. The re-keying is explicit: `apply(...,
expand=True)` returns the messages a step emits, `to_topic(..., key=...)` writes them keyed by
order_id / shipment_id / corridor (Quix's producer partitions with murmur2, like the input
producer, so the internal topics are co-partitioned with the inputs). Observations carry their
source (topic, partition, offset) and the totals skip a redelivered one (corridor's totals do the
same). Values are decoded by Quix's "json" deserializer, which is orjson; keys stay raw bytes (the
state prefix). No JSON Schema validation, no dead-letter topics, no metrics endpoint: the
corridor worker does all three (its contract decoder validates every message against schemas/),
so the Quix job here does somewhat less work per event than corridor's.

Each run: a fresh embedded broker (common.start_broker), the whole workload produced up front
(common.produce), then the Quix app started cold in a separate process (`--serve`: this file,
a new consumer group, an empty state directory). Clocks:

- from ready: from the moment the app's consumer has its partitions assigned (the app writes a
  marker file from Application._on_assign) until the group has committed every input message
  and every message on the three internal topics. Progress is read from the broker every 0.25 s
  (committed offsets, kafka-python, as common.GroupProgress does). The internal topics' end
  offsets cannot be trusted on Tansu (ListOffsets(latest) returns the base offset of the last
  batch + 1, docs/broker.md, and librdkafka batches), so an internal partition counts as done
  only when a fetch from its committed offset returns no record. Quix flushes its producer
  before it commits offsets, so once the inputs are committed every message they caused is on
  the broker, and so on down the chain. This is the headline events/s.
- processed: from ready until the app processed its last message (its own wall clock): the
  difference to the above is the wait for the last checkpoint commit (commit_interval).
- cold: from the spawn of the process (adds Python boot, topic setup and the group join).

Also: worker CPU (user + system, all threads, from ready to the end) per event, peak RSS
(VmHWM), and correctness: the delivered shipments of the app's per-corridor totals (as held in
its State, written to a file when it stops) against streams.domain.engine.Engine fed the same
events in production order, and the figures check: delivered, on time and transit seconds per
corridor and service level against the independent count of the workload (benchmarks/oracle.py,
no streams.domain); any mismatch is printed and fails the run.

Two configurations (both at-least-once, state in RocksDB with changelogs):

Quix defaults: Application() defaults except what this job and broker require, in both:
  auto_offset_reset="earliest"   the workload is on the topics before the app starts
  producer enable.idempotence=false   Quix sets it true; Tansu fails InitProducerId (docs/broker.md)
  consumer session.timeout.ms=2000, heartbeat.interval.ms=500   Tansu holds a join for
                                 session/2 (librdkafka's 45 s default: 22 s); start-up only
  loglevel="WARNING"             no INFO lines (there are none per message anyway);
                                 QUIX_BENCH_LOGLEVEL=DEBUG shows checkpoints in the app's log
  input topics' retention.ms / retention.bytes read as Kafka's defaults when the broker omits
                                 them (tansu_topic_config_defaults: Tansu's DescribeConfigs
                                 returns only the configs a topic was created with, and Quix
                                 fails with KeyError: 'retention.ms' deriving its changelogs)

--tuned, on top of that (measured on 2026-11-29, 5000 shipments, 2 CPUs; medians of 2-3 runs):
  consumer_poll_timeout=0.05     THE setting. A concat'ed (time-aligned) app reads with
                                 confluent-kafka's consume(max_partition_buffer_size=10000,
                                 timeout), which in confluent-kafka 2.12 returns only when 10,000
                                 messages are queued or the timeout expires: with the default 1 s
                                 the app sits idle for most of the run (defaults: ~1,800 events/s
                                 at 69 us CPU/event). This alone: ~12,500 events/s
  commit_interval=1.0            the run ends at the first checkpoint after the last message:
                                 with 5 s that adds 0-5 s depending on where the grid falls
                                 (alone with the above: ~11,900, within noise of 5 s here)
  producer linger.ms=20, batch.num.messages=10000, batch.size=1 MiB   fewer, larger produce
                                 requests for the internal topics and the changelogs at each
                                 checkpoint (~+5-8 %, within run-to-run noise)
  producer statistics.interval.ms=0   Quix asks librdkafka for statistics JSON every 30 s
  rocksdb_options: use_fsync=False, compression_type="none", block_cache_size=64 MiB
                                 (not measured separately; no fsync and no compression work)
  Tried and dropped (each made it slower or cost CPU): max_partition_buffer_size=1000, consumer
  fetch.wait.max.ms=20, fetch.queue.backoff.ms=10, queued.min.messages=20000.
  Try others with --quix SETTING=VALUE (repeatable), e.g. --quix consumer_poll_timeout=0.05
  --quix producer.linger.ms=50 --quix rocksdb.use_fsync=false.

    python benchmarks/quix.py [--shipments 5000] [--runs 3] [--tuned] [--partitions 4]
                              [--quix SETTING=VALUE ...] [--json FILE] [--keep-logs]
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



# ---- configurations ---------------------------------------------------------------------------

def app_settings(tuned: bool) -> dict:
    """Keyword arguments of quixstreams.Application (besides broker, group, state dir)."""
    conf = dict(
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        loglevel="WARNING",
        producer_extra_config={"enable.idempotence": False},
        consumer_extra_config={"session.timeout.ms": 2000, "heartbeat.interval.ms": 500},
    )
    if tuned:
        from quixstreams.state.rocksdb import RocksDBOptions
        conf.update(
            commit_interval=1.0,
            consumer_poll_timeout=0.05,
            rocksdb_options=RocksDBOptions(use_fsync=False, compression_type="none",
                                           block_cache_size=64 * 1024 * 1024),
        )
        conf["producer_extra_config"].update({
            "linger.ms": 20, "batch.num.messages": 10000, "batch.size": 1024 * 1024,
            "statistics.interval.ms": 0})
    return apply_overrides(conf, json.loads(os.environ.get("QUIX_BENCH_OVERRIDES") or "{}"))


def apply_overrides(conf: dict, overrides: dict) -> dict:
    """What-if (--quix): `producer.<librdkafka key>` / `consumer.<key>` go to the extra configs
    (null removes the key), `rocksdb.<field>` to RocksDBOptions, anything else is an
    Application argument."""
    rocksdb = {}
    for key, value in overrides.items():
        side, _, name = key.partition(".")
        if side in ("producer", "consumer") and name:
            extra = conf[f"{side}_extra_config"]
            if value is None:
                extra.pop(name, None)
            else:
                extra[name] = value
        elif side == "rocksdb" and name:
            rocksdb[name] = value
        else:
            conf[key] = value
    if rocksdb:
        import dataclasses

        from quixstreams.state.rocksdb import RocksDBOptions
        base = conf.get("rocksdb_options") or RocksDBOptions()
        conf["rocksdb_options"] = dataclasses.replace(base, **rocksdb)
    return conf


def internal_topics(group: str) -> dict[str, str]:
    return {"links": f"{group}-order-links", "forwards": f"{group}-shipment-orders",
            "observations": f"{group}-corridor-observations"}


# ---- the Quix application (runs in the --serve process) --------------------------------------

#: What Apache Kafka's DescribeConfigs reports for a topic created without these settings.
KAFKA_TOPIC_DEFAULTS = {"retention.ms": "604800000", "retention.bytes": "-1"}


def tansu_topic_config_defaults() -> None:
    """Tansu workaround: its DescribeConfigs returns only the configs a topic was created with,
    not the broker defaults Kafka reports, and Quix derives the changelog topics' config from the
    input topics' "retention.ms" (KeyError: 'retention.ms' otherwise). Fill in Kafka's defaults."""
    from quixstreams.models.topics.admin import TopicAdmin
    original = TopicAdmin.inspect_topics

    def inspect_topics(self, topic_names, timeout=30):
        configs = original(self, topic_names, timeout=timeout)
        for config in configs.values():
            if config is not None:
                for key, value in KAFKA_TOPIC_DEFAULTS.items():
                    config.extra_config.setdefault(key, value)
        return configs

    TopicAdmin.inspect_topics = inspect_topics


def serve(args) -> int:
    from quixstreams import Application, message_context
    from quixstreams.models import TopicConfig

    from streams.domain import aggregate, join, timeline
    from streams.domain.policy import SlaPolicy
    from streams.settings import Settings

    policy = SlaPolicy.load()
    settings = Settings()
    inputs = settings.input_topics             # kind -> topic
    max_events = settings.timeline_max_events
    names = internal_topics(args.group)
    ready_path, out_path = Path(args.ready), Path(args.out)
    final_totals: dict[str, dict] = {}         # corridor -> the totals last written to State
    counts: dict[str, int] = defaultdict(int)
    last = [0.0]                               # wall time of the last message processed

    def dump() -> None:
        tmp = out_path.with_suffix(".tmp")
        tmp.write_bytes(json.dumps({"totals": final_totals, "counts": counts,
                                    "last_processed": last[0]}).encode())
        tmp.replace(out_path)

    class BenchApplication(Application):
        def _on_assign(self, consumer, topic_partitions):
            super()._on_assign(consumer, topic_partitions)
            if topic_partitions and not ready_path.exists():
                ready_path.write_text(repr(time.time()))

        def _on_sigterm(self, *a):
            dump()      # everything is processed and committed when the benchmark stops us
            super()._on_sigterm(*a)

    tansu_topic_config_defaults()
    app = BenchApplication(broker_address=args.bootstrap, consumer_group=args.group,
                           state_dir=args.state_dir,
                           **{**app_settings(args.tuned),
                              "loglevel": os.environ.get("QUIX_BENCH_LOGLEVEL", "WARNING")})

    def source_topic(name: str):
        return app.topic(name, key_deserializer="bytes", value_deserializer="json")

    cfg = TopicConfig(num_partitions=args.partitions, replication_factor=1)

    def internal(name: str):
        return app.topic(name, key_serializer="str", value_serializer="json",
                         key_deserializer="bytes", value_deserializer="json", config=cfg)

    links_t, forwards_t, obs_t = (internal(names[k]) for k in ("links", "forwards", "observations"))
    orders_t = source_topic(inputs["orders"])
    shipments_t = source_topic(inputs["shipments"])
    customs_t = source_topic(inputs["customs"])
    source_of = {inputs["shipments"]: "shipments", inputs["customs"]: "customs",
                 names["forwards"]: "orders"}
    links_topic = names["links"]

    # -- the order side: orders and links keyed by order_id, one state per order
    def order_step(value, key, timestamp, headers, state):
        last[0] = time.time()
        if message_context().topic == links_topic:
            step = join.link_step(state.get("o"), join.Link(value["order_id"], value["shipment_id"],
                                                            value.get("at")))
            counts["links"] += 1
        else:
            step = join.order_step(state.get("o"), value)
            counts["orders_duplicate" if step.applied.duplicate else "orders_applied"] += 1
        if not step.applied.duplicate:
            state.set("o", step.applied.state)
        counts["forwards"] += len(step.forwards)
        return [ev for _sid, ev in step.forwards]

    orders_sdf = app.dataframe(orders_t).concat(app.dataframe(links_t))
    orders_sdf = orders_sdf.apply(order_step, stateful=True, metadata=True, expand=True)
    orders_sdf.to_topic(forwards_t, key=lambda v: v["shipment_id"])

    # -- the shipment side: shipments, customs and forwarded order events keyed by shipment_id
    def timeline_step(value, key, timestamp, headers, state):
        last[0] = time.time()
        ctx = message_context()
        source = source_of[ctx.topic]
        step = join.shipment_step(state.get("s"), source, value, policy, max_events)
        res = step.applied
        out = []
        if res.duplicate:
            counts[f"{source}_duplicate"] += 1
        else:
            counts[f"{source}_applied"] += 1
            # Settled at once (no watermark in this port): the figures the worker makes final
            # after the grace period, which this workload, produced in order, does not change.
            observations = timeline.settle(res.state, policy, float("inf"), 0.0)
            state.set("s", res.state)
            if observations:
                by_corridor = defaultdict(list)
                for obs in observations:
                    by_corridor[obs[1]].append(obs)
                for corr, items in by_corridor.items():
                    out.append({"corridor": corr, "obs": items,
                                "src": f"{ctx.topic}|{ctx.partition}", "offset": ctx.offset})
        # links are resent for a duplicate too (timeline.apply: the order side dedupes them)
        out.extend(link._asdict() for link in step.links)
        counts["links_sent"] += len(step.links)
        return out

    timeline_sdf = (app.dataframe(shipments_t).concat(app.dataframe(customs_t))
                    .concat(app.dataframe(forwards_t)))
    timeline_sdf = timeline_sdf.apply(timeline_step, stateful=True, metadata=True, expand=True)
    timeline_sdf.to_topic(lambda value, key, ts, headers: obs_t if "obs" in value else links_t,
                          key=lambda v: v["corridor"] if "obs" in v else v["order_id"])

    # -- per-corridor totals keyed by corridor
    def totals_step(value, key, timestamp, headers, state):
        last[0] = time.time()
        tot = state.get("t") or aggregate.new_totals()
        counted = tot.setdefault("o", {})
        if counted.get(value["src"], -1) >= value["offset"]:
            counts["observations_duplicate"] += 1
            return None          # a redelivered observation message: already counted
        for obs in value["obs"]:
            aggregate.add(tot, obs)
        counted[value["src"]] = value["offset"]
        state.set("t", tot)
        final_totals[value["corridor"]] = tot
        counts["observations"] += 1
        return None

    app.dataframe(obs_t).apply(totals_step, stateful=True, metadata=True)

    app.run()
    dump()
    return 0


# ---- the benchmark (parent process) -------------------------------------------------------------

class QuixProgress:
    """The consumer group's committed offsets on the inputs and the internal topics, from the broker."""

    def __init__(self, bootstrap: str, group: str, partitions: int):
        from kafka import KafkaConsumer, TopicPartition

        from streams.settings import Settings
        self.group_id = group
        self.inputs = [TopicPartition(t, p) for t in Settings().input_topics.values()
                       for p in range(partitions)]
        self.internal = [TopicPartition(t, p) for t in internal_topics(group).values()
                         for p in range(partitions)]
        self.group = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                   enable_auto_commit=False)
        self.reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=20)
        self.reader.assign(self.internal)

    def committed(self, tps) -> dict:
        return {tp: self.group.committed(tp) or 0 for tp in tps}

    def inputs_committed(self) -> int:
        return sum(self.committed(self.inputs).values())

    def records_from(self, offsets: dict, wait: float = 0.3) -> int:
        """Records on the broker at or after `offsets` (a fetch, not ListOffsets: see docstring)."""
        for tp, off in offsets.items():
            self.reader.seek(tp, off)
        deadline = time.perf_counter() + wait
        while time.perf_counter() < deadline:
            got = self.reader.poll(timeout_ms=100)
            n = sum(len(v) for v in got.values())
            if n:
                return n
        return 0

    def done(self, n: int) -> bool:
        if self.inputs_committed() < n:
            return False
        committed = self.committed(self.internal)
        ends = self.reader.end_offsets(self.internal)      # a lower bound on Tansu
        if any(committed[tp] < ends.get(tp, 0) for tp in self.internal):
            return False
        return self.records_from(committed) == 0

    def internal_records(self) -> dict[str, int]:
        """Messages on each internal topic (= committed offsets once done), by kind."""
        kind = {t: k for k, t in internal_topics(self.group_id).items()}
        out: dict[str, int] = defaultdict(int)
        for tp, off in self.committed(self.internal).items():
            out[kind[tp.topic]] += off
        return dict(out)

    def close(self) -> None:
        for c in (self.group, self.reader):
            with contextlib.suppress(Exception):
                c.close()


def engine_totals(events) -> dict[str, dict]:
    """Per-corridor totals of streams.domain.engine.Engine fed the events in production order."""
    import orjson

    from streams.domain.engine import Engine
    from streams.domain.policy import SlaPolicy
    from streams.settings import Settings
    settings = Settings()
    kind = {topic: k for k, topic in settings.input_topics.items()}
    engine = Engine(SlaPolicy.load(), max_events=settings.timeline_max_events)
    for topic, _key, value in events:
        engine.feed(kind[topic], orjson.loads(value))
    return engine.finish().totals


def delivered_of(totals: dict[str, dict]) -> dict[str, int]:
    return {corr: sum(t["delivered"].values()) for corr, t in totals.items()
            if sum(t["delivered"].values())}


def one_run(events, partitions: int, tuned: bool, logdir: Path, timeout: float = 1800) -> dict:
    sys.path.insert(0, str(HERE.parent))
    import pipeline
    from common import cpu_seconds, loadavg, poll, produce, rss_mib, start_broker, unique_app_id

    pipeline.expected_figures(events)                 # the independent count, off the clock
    load_before = loadavg()
    broker = start_broker(partitions)
    proc = None
    progress = None
    try:
        produce_s = produce(broker.bootstrap, events)
        group = unique_app_id("quix")
        ready, out = logdir / f"{group}.ready", logdir / f"{group}.json"
        log_path = logdir / f"{group}.log"
        cmd = [sys.executable, str(HERE), "--serve", "--bootstrap", broker.bootstrap,
               "--group", group, "--state-dir", str(logdir / f"state-{group}"),
               "--partitions", str(partitions), "--ready", str(ready), "--out", str(out)]
        if tuned:
            cmd.append("--tuned")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                    start_new_session=True,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
        t_spawn = time.perf_counter()

        def alive() -> None:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-30:]
                raise RuntimeError(f"quix app exited with status {proc.returncode}:\n"
                                   + "\n".join(tail))

        poll(lambda: alive() or ready.exists(), 180, 0.05, "quix app assigned")
        t_ready = time.perf_counter()
        cpu0 = cpu_seconds(proc.pid)
        broker_cpu0 = cpu_seconds(broker.pid)
        ready_wall = float(ready.read_text())
        progress = QuixProgress(broker.bootstrap, group, partitions)
        n = len(events)
        marks: dict[str, float] = {}

        def done() -> bool:
            alive()
            if "inputs" not in marks and progress.inputs_committed() >= n:
                marks["inputs"] = time.perf_counter()
            return "inputs" in marks and progress.done(n)

        poll(done, timeout, 0.25, "every event and every internal message processed and committed")
        t_end = time.perf_counter()
        cpu = cpu_seconds(proc.pid) - cpu0
        rss = rss_mib(proc.pid, "VmHWM:")
        broker_cpu = cpu_seconds(broker.pid) - broker_cpu0
        internal = progress.internal_records()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
        result = json.loads(out.read_text())
        # nothing may have been processed or committed after we called it done
        moved = progress.internal_records() != internal
        totals = result["totals"]
        return {"events": n, "tuned": tuned, "seconds": t_end - t_ready,
                "events_per_s": n / (t_end - t_ready),
                "processed_s": result["last_processed"] - ready_wall,
                "cold_events_per_s": n / (t_end - t_spawn),
                "start_to_ready_s": t_ready - t_spawn,
                "inputs_committed_s": marks["inputs"] - t_ready,
                "internal_records": internal, "moved_after_done": moved,
                "produce_per_s": n / produce_s,
                "worker_cpu_s": cpu, "cpu_us_per_event": cpu / n * 1e6,
                "broker_cpu_s": broker_cpu, "peak_rss_mib": rss,
                "delivered": sum(delivered_of(totals).values()),
                "delivered_by_corridor": delivered_of(totals),
                "counts": result["counts"], "exit_status": proc.returncode,
                **pipeline.check_totals(events, totals),
                "loadavg_before": load_before, "loadavg_after": loadavg()}
    finally:
        if progress is not None:
            progress.close()
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                proc.wait(10)
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shipments", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--tuned", action="store_true", help="the tuned settings (see the docstring)")
    ap.add_argument("--quix", action="append", default=[], metavar="SETTING=VALUE",
                    help="what-if: override a setting (JSON value, else a string): an Application "
                    "argument, producer.<librdkafka key>, consumer.<key> or rocksdb.<field>; repeatable")
    ap.add_argument("--json", metavar="FILE", help="also write every run's figures to FILE")
    ap.add_argument("--keep-logs", action="store_true")
    # the application process
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--group", help=argparse.SUPPRESS)
    ap.add_argument("--state-dir", help=argparse.SUPPRESS)
    ap.add_argument("--ready", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve(args)

    sys.path.insert(0, str(HERE.parent))
    import pipeline
    from common import parse_overrides, workload
    overrides = parse_overrides(args.quix)
    if overrides:
        os.environ["QUIX_BENCH_OVERRIDES"] = json.dumps(overrides)   # inherited by --serve
    events = workload(args.shipments, args.seed)
    reference = engine_totals(events)
    ref_delivered = delivered_of(reference)
    logdir = Path(tempfile.mkdtemp(prefix="corridor-quix-"))
    print(f"workload: {args.shipments} shipments, {len(events)} events, {args.partitions} partitions, "
          f"Quix Streams {'tuned' if args.tuned else 'defaults'}"
          f"{f' with {overrides}' if overrides else ''}, {os.cpu_count()} CPUs; "
          f"Engine delivered {sum(ref_delivered.values())}; logs in {logdir}", flush=True)
    results = []
    for i in range(args.runs):
        r = one_run(events, args.partitions, args.tuned, logdir)
        r["engine_delivered"] = sum(ref_delivered.values())
        r["delivered_matches_engine"] = r["delivered_by_corridor"] == ref_delivered
        results.append(r)
        internal = ", ".join(f"{k} {v / r['events']:.2f}" for k, v in r["internal_records"].items())
        print(f"run {i + 1}: {r['events_per_s']:8.0f} events/s from ready ({r['seconds']:.1f} s; "
              f"last message processed after {r['processed_s']:.1f} s; "
              f"{r['cpu_us_per_event']:.0f} us worker CPU/event; "
              f"{r['cold_events_per_s']:.0f} from spawn, ready after {r['start_to_ready_s']:.1f} s)  "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB  delivered {r['delivered']} "
              f"(Engine {r['engine_delivered']}, per corridor "
              f"{'equal' if r['delivered_matches_engine'] else 'DIFFERENT'})  "
              f"(producer {r['produce_per_s']:.0f} msg/s, load {r['loadavg_before']:.1f}); "
              f"internal messages per event: {internal}"
              + ("; COMMITTED OFFSETS MOVED AFTER DONE" if r["moved_after_done"] else "")
              + f"\n    {pipeline.figures_line(r, 20)}", flush=True)
    rates = [r["events_per_s"] for r in results]
    cpus = [r["cpu_us_per_event"] for r in results]
    print(f"median {statistics.median(rates):.0f} events/s  (min {min(rates):.0f}, max {max(rates):.0f},"
          f" {len(rates)} runs); median worker CPU {statistics.median(cpus):.0f} us/event; median peak RSS "
          f"{statistics.median(r['peak_rss_mib'] for r in results):.0f} MiB; delivered "
          f"{'= Engine in every run' if all(r['delivered_matches_engine'] for r in results) else 'differs from Engine'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.keep_logs:
        shutil.rmtree(logdir, ignore_errors=True)
    return 0 if all(r["delivered_matches_engine"] and r["figures_exact"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
