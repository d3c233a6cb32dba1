"""Chaos trials: an operator's bad day, then the fleet's figures against the domain Engine.

Per trial, on a fresh embedded broker with a fresh app id: a simulator workload
(benchmarks/common.py `workload`: scenario `customs-backlog`, 1% duplicates, 2% reordered; 800
shipments = about 11,000 events by default, seed --seed + trial - 1) is produced in four chunks,
with --bad (49) malformed messages mixed in, spread over the three input topics and the chunks:
invalid JSON, a JSON object that fails the schema, and a valid-looking event under a key that is
not its id. While it is produced:

    start worker 0 (wait for /health 200); chunk 1
    start workers 1 and 2 (1 -> 3 workers; wait for them); chunk 2
    SIGKILL worker 0 and start it again
    freeze the broker for --freeze-seconds (15; SIGSTOP then SIGCONT of its pid) unless --no-freeze
    chunk 3
    SIGKILL worker 1 for good (3 -> 2)
    SIGKILL worker 2 and start it again
    chunk 4

with --pause seconds (2) between the steps, so kills land while the workers are busy. Then it waits
(at most --deadline seconds) until the group has committed the end offset of every partition of the
input and internal join topics (read from the broker) and the corridor series summed over the live
workers have not changed for --quiet seconds (15). A trial passes when:

  (a) every worker not killed on purpose is alive: its process runs and /health answers 200 (a
      dead one is reported with the last lines of its log);
  (b) summed over the live workers (and their `partition` label), every series of
      corridor_shipments_delivered_total{corridor,service_level,on_time},
      corridor_shipment_exceptions_total{corridor,type} and the _count and _sum of
      corridor_shipment_transit_seconds{corridor,service_level} and
      corridor_stage_dwell_seconds{corridor,stage} equals what streams.domain.engine.Engine gives
      fed the valid messages in the order produced (each differing series is printed);
  (c) every malformed message is in its topic's dead-letter topic (streams.topics.dlq_name),
      found by its exact key and value bytes (at-least-once: a copy twice is reported, not failed;
      valid messages found there are reported by reason).

When series differ, two diagnostics follow (they decide nothing): the late events the live
workers counted (per-process counters: killed workers' counts are gone) against the Engine's, and
each shipment's /shipments/{id} view against the Engine's timeline, sorted into: not held
(forgotten after the retention), milestone/end/exception events missing (lost), other stages
because the worker read events after the shipment's end (cross-topic read order: a late event
changes no figure, docs/semantics.md), other stages with the same events, same stages.

The Engine runs in a child process on the code under test. Workers run a snapshot of streams/
taken at start: the working tree, or with --rev a git revision. Exit status 1 if any trial failed.

    python benchmarks/chaos.py [--trials 5] [--no-freeze] [--shipments 800] [--rev HEAD]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchWorker, produce, unique_app_id, workload  # noqa: E402
from exactness import (Settled, by_label, diff, engine_series, format_diff, health,  # noqa: E402
                       read_topic, snapshot, source_label, total, wait_settled)
from streams.broker.embedded import EmbeddedBroker  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import dlq_name  # noqa: E402

TOPICS = Settings().input_topics           # kind -> topic name (the defaults the workers use)
BAD_KINDS = ("not_json", "schema", "bad_key")


def malformed(n: int, events, trial: int, rng: random.Random) -> list[tuple[str, bytes, bytes, str]]:
    """n (topic, key, value, kind) messages the worker must dead-letter, over the three topics."""
    topics = list(TOPICS.values())
    by_topic = {t: [e for e in events if e[0] == t] for t in topics}
    id_field = {TOPICS["orders"]: "order_id", TOPICS["shipments"]: "shipment_id",
                TOPICS["customs"]: "shipment_id"}
    schema_body = {TOPICS["orders"]: {"event_type": "order_placed", "occurred_at": "2025-01-02T00:00:00Z"},
                   TOPICS["shipments"]: {"event_type": "picked_up"},      # no occurred_at
                   TOPICS["customs"]: {"event_type": "released", "occurred_at": "2025-01-02T00:00:00Z"}}
    out = []
    for i in range(n):
        topic = topics[i % 3]
        kind = BAD_KINDS[(i // 3) % 3]
        tag = f"chaos-bad-{trial}-{i}"
        if kind == "not_json":
            key, value = tag.encode(), b'{"event_id": "' + tag.encode() + b'", "event_type": '
        elif kind == "schema":
            key = tag.encode()
            value = orjson.dumps({"event_id": tag, id_field[topic]: tag, **schema_body[topic]})
        else:       # a real event under another key (and a fresh event_id): key_mismatch
            body = dict(orjson.loads(rng.choice(by_topic[topic])[2]), event_id=tag)
            key, value = f"chaos-badkey-{trial}-{i}".encode(), orjson.dumps(body)
        out.append((topic, key, value, kind))
    return out


def chunks_with_bad(events, bad, rng: random.Random, n_chunks: int = 4) -> list[list]:
    """The workload cut in n_chunks in order; bad message j goes into chunk j % n_chunks at a random
    place."""
    size = -(-len(events) // n_chunks)
    chunks = [list(events[i * size:(i + 1) * size]) for i in range(n_chunks)]
    for j, (topic, key, value, _kind) in enumerate(bad):
        c = chunks[j % n_chunks]
        c.insert(rng.randrange(len(c) + 1), (topic, key, value))
    return chunks


class Fleet:
    """The trial's worker processes, by name, and which were killed on purpose."""

    def __init__(self, broker_url: str, app_id: str, logdir: Path):
        self.broker_url, self.app_id, self.logdir = broker_url, app_id, logdir
        self.procs: list[BenchWorker] = []
        self.killed: set[str] = set()

    def start(self, name: str) -> BenchWorker:
        w = BenchWorker(self.broker_url, self.app_id, self.logdir, name=name,
                        env={"CORRIDOR_LOG_LEVEL": "info"})
        w.env["CORRIDOR_DATA_DIR"] = str(self.logdir / f"data-{self.app_id}-{name}")
        self.procs.append(w.spawn())
        return w

    def kill(self, w: BenchWorker) -> None:
        self.killed.add(w.name)
        w.kill()

    def expected_alive(self) -> list[BenchWorker]:
        return [w for w in self.procs if w.name not in self.killed]

    def live(self) -> list[BenchWorker]:
        return [w for w in self.expected_alive() if w.proc.poll() is None]

    def wait_ready(self, ws, timeout: float = 90.0) -> list[str]:
        """Wait until every w answers /health 200; returns the names that did not (dead or late)."""
        deadline = time.monotonic() + timeout
        pending = list(ws)
        while pending and time.monotonic() < deadline:
            pending = [w for w in pending if w.proc.poll() is None and health(w, 2.0) != 200]
            if pending:
                time.sleep(0.2)
        return [w.name for w in ws if w.proc.poll() is not None or w in pending]

    def kill_all(self) -> None:
        for w in self.procs:
            w.kill()


def dead_report(w: BenchWorker) -> str:
    code = w.proc.poll()
    state = f"exited with status {code}" if code is not None else f"/health {health(w)}"
    tail = "\n".join("      " + line for line in w.log_tail(12).splitlines())
    crash = w.crash()
    return f"worker {w.name} {state}" + (f": {crash}" if crash else "") + f" (log {w.log_path}):\n{tail}"


def one_trial(i: int, args, plan: dict, logdir: Path) -> dict:
    res = {"trial": i, "failures": [], "steps": []}
    t0 = time.monotonic()

    def step(text: str) -> None:
        res["steps"].append(f"{time.monotonic() - t0:.0f}s {text}")

    broker = EmbeddedBroker(port=0).start()
    app_id = unique_app_id("chaos")
    fleet = Fleet(broker.url, app_id, logdir)
    group = None
    frozen = False
    try:
        w0 = fleet.start("w0")
        late = fleet.wait_ready([w0])
        step("w0 ready" if not late else f"w0 NOT ready ({late})")
        produce(broker.bootstrap, plan["chunks"][0])
        step("chunk 1")
        time.sleep(args.pause)
        w1, w2 = fleet.start("w1"), fleet.start("w2")
        late = fleet.wait_ready([w1, w2])
        step("w1, w2 ready" if not late else f"w1, w2 started; NOT ready: {late}")
        produce(broker.bootstrap, plan["chunks"][1])
        step("chunk 2")
        time.sleep(args.pause)
        fleet.kill(w0)
        fleet.start("w0-restarted")
        step("SIGKILL w0, restarted")
        if args.freeze_seconds > 0:
            os.kill(broker.pid, signal.SIGSTOP)
            frozen = True
            time.sleep(args.freeze_seconds)
            os.kill(broker.pid, signal.SIGCONT)
            frozen = False
            step(f"broker frozen {args.freeze_seconds:g} s")
        produce(broker.bootstrap, plan["chunks"][2])
        step("chunk 3")
        time.sleep(args.pause)
        fleet.kill(w1)
        step("SIGKILL w1 for good")
        time.sleep(args.pause)
        fleet.kill(w2)
        fleet.start("w2-restarted")
        step("SIGKILL w2, restarted")
        produce(broker.bootstrap, plan["chunks"][3])
        step("chunk 4")
        t_end = time.monotonic()

        group = Settled(broker.bootstrap, app_id, args.partitions)
        waited = wait_settled(fleet.live, group, quiet=args.quiet, deadline=args.deadline)
        res["settled"], res["wait_s"] = waited.settled, time.monotonic() - t_end
        res["final_after_s"] = waited.seconds
        res["caught_up_after_s"] = waited.caught_up_at
        step("settled" if waited.settled else f"NOT settled: {waited.note}; lag {waited.lag}")
        if not waited.settled:
            res["failures"].append(f"not settled within {args.deadline:.0f} s ({waited.note}; "
                                   f"lag {waited.lag})")
        # (a) every worker not killed on purpose is alive and healthy
        res["dead"] = [dead_report(w) for w in fleet.expected_alive()
                       if w.proc.poll() is not None or health(w) != 200]
        for d in res["dead"]:
            res["failures"].append(d.split(" (log ")[0].split(":\n")[0])
        res["alive"] = f"{len(fleet.expected_alive()) - len(res['dead'])}/{len(fleet.expected_alive())}"
        # (b) the live workers' corridor series against the Engine
        got = waited.figures
        res["delivered"], res["expected_delivered"] = total(got), total(plan["expected"])
        res["diff"] = diff(plan["expected"], got)
        if res["diff"]:
            res["failures"].append(f"{len(res['diff'])} corridor series differ from the Engine "
                                   f"(delivered {total(got):,.0f} of {total(plan['expected']):,.0f})")
            # where from: per-process counters of the live workers, and each shipment's view
            late = {}
            for samples in waited.scrapes:
                for t, v in by_label(samples, "corridor_events_late_total", "topic").items():
                    late[t] = late.get(t, 0) + v
            res["late"] = late
            res["expired"] = {}
            for samples in waited.scrapes:
                for t, v in by_label(samples, "corridor_state_expired_total", "table").items():
                    res["expired"][t] = res["expired"].get(t, 0) + v
            live = fleet.live()
            if live:
                res["inspect"] = inspect(live[0], plan["engine"]["shipments"], args.inspect)
        # (c) every malformed message in its dead-letter topic
        res.update(dlq_check(broker.bootstrap, args.partitions, plan["bad"]))
        if res["dlq_missing"]:
            res["failures"].append(f"{len(res['dlq_missing'])} of {len(plan['bad'])} malformed "
                                   f"messages not in their dead-letter topic")
    except Exception as exc:    # noqa: BLE001 - the trial failed; the error is the result
        res["failures"].append(f"error: {type(exc).__name__}: {exc}")
    finally:
        if frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(broker.pid, signal.SIGCONT)
        if group is not None:
            group.close()
        fleet.kill_all()
        broker.stop()
    res["seconds"] = time.monotonic() - t0
    res["logs"] = sorted({str(w.log_path) for w in fleet.procs})
    return res


def inspect(worker: BenchWorker, shipments: dict, limit: int) -> dict:
    """Compare up to `limit` shipments' /shipments/{id} views (any worker answers for any key) with
    the Engine's timelines: {category: count, "examples": {category: [ids]}}."""
    out: Counter = Counter()
    examples: dict[str, list] = {}

    def note(cat: str, sid: str, what: str = "") -> None:
        out[cat] += 1
        examples.setdefault(cat, [])
        if len(examples[cat]) < 3:
            examples[cat].append(sid + (f" {what}" if what else ""))

    for sid, eng in list(shipments.items())[:limit]:
        try:
            with urllib.request.urlopen(f"{worker.base}/shipments/{urllib.parse.quote(sid, safe='')}",
                                        timeout=10) as resp:
                doc = orjson.loads(resp.read())
        except urllib.error.HTTPError as err:
            note("not held (404: forgotten after the retention)" if err.code == 404
                 else f"answered {err.code}", sid)
            continue
        except OSError:
            note("no answer", sid)
            continue
        ids = {e["event_id"] for e in doc.get("events", ())}
        stages = [[s["stage"], s["seconds"]] for s in doc.get("stages", ())]
        missing = [f"{src}/{etype}" for eid, src, etype in eng["ids"] if eid not in ids]
        if missing:
            note("milestone/end/exception events missing from the worker's timeline", sid,
                 f"lacks {'+'.join(missing)}")
        elif stages != eng["stages"]:
            if doc.get("late_events", 0) > eng["late"]:
                note("other stages: events the worker read after the shipment's end (late)", sid)
            else:
                note("other stages, same events", sid)
        else:
            note("same stages", sid)
    return {"counts": dict(out), "examples": examples, "of": min(limit, len(shipments))}


def dlq_check(bootstrap: str, partitions: int, bad) -> dict:
    expected: dict[str, Counter] = {}
    for topic, key, value, _kind in bad:
        expected.setdefault(topic, Counter())[(key, value)] += 1
    missing, twice, others, reasons = [], 0, Counter(), Counter()
    for topic in TOPICS.values():
        records = read_topic(bootstrap, dlq_name(topic), partitions)
        found = Counter()
        for r in records:
            headers = dict(r.headers or ())
            reason = headers.get("corridor.reason", b"?").decode()
            if (r.key, r.value) in expected.get(topic, ()):
                found[(r.key, r.value)] += 1
                reasons[reason] += 1
            else:
                others[f"{topic}:{reason}"] += 1
        for item, n in expected.get(topic, Counter()).items():
            if found[item] < n:
                missing.append((topic, item[0].decode(errors="replace")))
            twice += max(0, found[item] - n)
    return {"dlq_missing": missing, "dlq_twice": twice, "dlq_others": dict(others),
            "dlq_reasons": dict(reasons)}


def print_trial(r: dict, n: int, plan: dict, show: int) -> None:
    ok = not r["failures"]
    print(f"trial {r['trial']}/{n}: {'PASS' if ok else 'FAIL'} in {r['seconds']:.0f} s; seed {plan['seed']}, "
          f"{plan['messages']:,} messages ({len(plan['bad'])} malformed) in 4 chunks; "
          + (f"figures final {r['final_after_s']:.0f} s after chunk 4 (group caught up "
             f"{'at %.0f s' % r['caught_up_after_s'] if r.get('caught_up_after_s') is not None else 'never'}); "
             f"delivered {r['delivered']:,.0f} expected {r['expected_delivered']:,.0f}; "
             f"series differing {len(r['diff'])}; live workers {r['alive']}; DLQ: "
             f"{len(plan['bad']) - len(r['dlq_missing'])}/{len(plan['bad'])} malformed found "
             f"{r['dlq_reasons']}" + (f", {r['dlq_twice']} twice" if r["dlq_twice"] else "")
             + (f", other records {r['dlq_others']}" if r["dlq_others"] else "")
             if "diff" in r else ""), flush=True)
    print("  steps: " + "; ".join(r["steps"]), flush=True)
    for f in r["failures"]:
        print(f"  FAILED: {f}", flush=True)
    for d in r.get("dead", []):
        print("  " + d, flush=True)
    if r.get("diff"):
        print("  series differing from the Engine:\n" + format_diff(r["diff"], show), flush=True)
        print(f"  late events counted by the live workers {r.get('late')} (the Engine in produced "
              f"order: {plan['engine']['late']}); state expired {r.get('expired')}", flush=True)
        ins = r.get("inspect")
        if ins:
            print(f"  shipment views vs the Engine ({ins['of']} shipments): "
                  + "; ".join(f"{n} {cat} (e.g. {', '.join(ins['examples'][cat])})"
                              for cat, n in sorted(ins["counts"].items(), key=lambda x: -x[1])),
                  flush=True)
    if r.get("dlq_missing"):
        print("  malformed messages missing from the DLQ: "
              + ", ".join(f"{t}:{k}" for t, k in r["dlq_missing"][:show]), flush=True)
    if not ok:
        print("  logs: " + " ".join(r["logs"]), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--no-freeze", action="store_true", help="do not freeze the broker")
    ap.add_argument("--freeze-seconds", type=float, default=15.0)
    ap.add_argument("--shipments", type=int, default=800, help="simulator shipments (800 = ~11,000 events)")
    ap.add_argument("--seed", type=int, default=11, help="seed of trial 1; trial k uses seed + k - 1")
    ap.add_argument("--bad", type=int, default=49, help="malformed messages per trial")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between the steps")
    ap.add_argument("--deadline", type=float, default=240.0,
                    help="seconds after chunk 4 to wait for final figures")
    ap.add_argument("--quiet", type=float, default=15.0, help="seconds the figures must stay unchanged")
    ap.add_argument("--show", type=int, default=40, help="differing series printed per trial")
    ap.add_argument("--inspect", type=int, default=2000,
                    help="when series differ, compare up to this many shipments' views with the Engine")
    ap.add_argument("--rev", default=None, metavar="GIT_REV",
                    help="run streams/ as committed at this revision (e.g. HEAD) instead of the "
                         "working tree as it is at start")
    args = ap.parse_args()
    if args.no_freeze:
        args.freeze_seconds = 0.0
    logdir = Path(tempfile.mkdtemp(prefix="corridor-chaos-"))
    snapshot(logdir / "src", args.rev)
    print(f"code under test: streams/ of {source_label(args.rev)}; {args.trials} trials of "
          f"{args.shipments} shipments; broker freeze "
          f"{'%g s' % args.freeze_seconds if args.freeze_seconds else 'off'}; logs in {logdir}", flush=True)
    plans = []
    for i in range(1, args.trials + 1):
        seed = args.seed + i - 1
        events = workload(args.shipments, seed)
        rng = random.Random(f"chaos/{seed}")
        bad = malformed(args.bad, events, i, rng)
        engine: dict = {}
        plans.append({"seed": seed, "bad": bad, "chunks": chunks_with_bad(events, bad, rng),
                      "messages": len(events) + len(bad),
                      "expected": engine_series(events, TOPICS, engine), "engine": engine})
    results = []
    for i, plan in enumerate(plans, 1):
        r = one_trial(i, args, plan, logdir)
        results.append(r)
        print_trial(r, args.trials, plan, args.show)
    failed = [r for r in results if r["failures"]]
    print(f"trials run {len(results)}, failed {len(failed)}"
          + "".join(f"\n  trial {r['trial']}: " + "; ".join(r["failures"]) for r in failed), flush=True)
    if not failed:
        shutil.rmtree(logdir, ignore_errors=True)
        return 0
    print(f"logs kept in {logdir}", flush=True)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
