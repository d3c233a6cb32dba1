"""An independent count of a workload's delivery figures, to check the workers' final figures.

Independent on purpose: nothing here imports `streams` (not the domain Engine, not the codec, not
the policy loader). It reads the raw (topic, key, value) messages of a workload and counts, per
corridor and service level, what `corridor_shipments_delivered_total{on_time}` and
`corridor_shipment_transit_seconds_sum` should say once every message is processed
(docs/semantics.md is the definition it re-implements from the prose):

- a shipment is delivered at its first `delivered` scan by event time (`occurred_at`, offsets
  honoured); duplicates (the same event_id again) change nothing;
- its primary order is the first order id its earliest `label_created` names; corridor =
  `seller_country-buyer_country` of that order, service level = the order's `service_level`;
- transit = delivered - the order's `order_placed` time (the earliest, if sent twice);
- on time = delivered <= the order's `promised_delivery_at`, or, when the order has none,
  <= placed + the SLA policy's promise hours for (corridor, service level): the
  `[corridor.XX-YY.promise]` table of the policy TOML if it names the level, else `[promise]`
  (a level the policy does not know falls back to `standard`, as streams/domain/policy.py does);
- a delivered shipment whose primary order never arrives is not counted (the worker waits for the
  order), and is reported as `awaiting_order`.

What it does not model, and why that is fine for the simulator's workloads (`python
benchmarks/oracle.py` shows the two counts agree series by series):

- "the first end to arrive wins": a shipment with both `returned`/`lost` and `delivered` would be
  counted by the Engine only if `delivered` arrived first; the simulator gives each history one
  terminal event, and `conflicting_ends` counts shipments where this could matter;
- cancellation: a shipment ends `cancelled` only when every order it names is cancelled before
  pick-up; the simulator never names a cancelled order in a label;
- retention: the worker forgets ended shipments 30 days (event time) after their end and
  dead-letters older stragglers; the workload's events are emitted in event-time order give or
  take hours, so nothing the count needs is that late.

    python benchmarks/oracle.py [--shipments 20000] [--seed 7]    # this count vs the domain Engine
"""
from __future__ import annotations

import math
import os
import tomllib
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = ROOT / "streams" / "sla_policy.toml"
#: The input topic of each kind, as the workers are configured by default (Settings).
DEFAULT_TOPICS = {"orders": "orders", "shipments": "shipments", "customs": "customs-events"}

#: Keys of one row of figures: (corridor, service_level) -> {FIELD: value}.
FIELDS = ("delivered", "on_time", "transit_sum")


def _ts(text: str) -> float:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return dt.timestamp()


def promise_hours(policy_path: str | Path | None = None) -> tuple[dict, dict]:
    """(default {level: hours}, {corridor: {level: hours}}) from the policy TOML."""
    path = Path(policy_path or os.environ.get("CORRIDOR_SLA_POLICY") or DEFAULT_POLICY)
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    default = {k: float(v) for k, v in doc.get("promise", {}).items()}
    per_corridor = {c: {k: float(v) for k, v in sec["promise"].items()}
                    for c, sec in doc.get("corridor", {}).items() if "promise" in sec}
    return default, per_corridor


def count(messages, topics: dict[str, str] | None = None, policy_path=None) -> dict:
    """Figures of (topic, key, value bytes) messages: {"rows": {(corridor, sl): {delivered,
    on_time, transit_sum}}, "awaiting_order": n, "conflicting_ends": n, "skipped": n}.
    Messages that are not JSON objects of a known topic are skipped (counted)."""
    kind_of = {name: kind for kind, name in (topics or DEFAULT_TOPICS).items()}
    default_h, corridor_h = promise_hours(policy_path)
    orders: dict[str, dict] = {}           # order id -> {seller, buyer, sl, placed, promised}
    label: dict[str, tuple] = {}           # shipment id -> (event time, primary order id)
    delivered: dict[str, float] = {}       # shipment id -> earliest delivered event time
    other_end: set[str] = set()
    skipped = 0
    for topic, _key, value in messages:
        kind = kind_of.get(topic)
        try:
            ev = orjson.loads(value)
        except orjson.JSONDecodeError:
            skipped += 1
            continue
        if kind is None or not isinstance(ev, dict):
            skipped += 1
            continue
        etype = ev.get("event_type")
        if kind == "orders":
            o = orders.setdefault(ev["order_id"], {"seller": None, "buyer": None, "sl": None,
                                                   "placed": None, "promised": None})
            o["seller"] = ev.get("seller_country") or o["seller"]
            o["buyer"] = ev.get("buyer_country") or o["buyer"]
            o["sl"] = ev.get("service_level") or o["sl"]
            if ev.get("promised_delivery_at"):
                o["promised"] = _ts(ev["promised_delivery_at"])
            if etype == "order_placed":
                t = _ts(ev["occurred_at"])
                o["placed"] = t if o["placed"] is None else min(o["placed"], t)
        elif kind == "shipments":
            sid = ev["shipment_id"]
            if etype == "label_created" and ev.get("order_ids"):
                t = _ts(ev["occurred_at"])
                if sid not in label or t < label[sid][0]:
                    label[sid] = (t, ev["order_ids"][0])
            elif etype == "delivered":
                t = _ts(ev["occurred_at"])
                delivered[sid] = min(t, delivered.get(sid, math.inf))
            elif etype in ("returned", "lost"):
                other_end.add(sid)
    rows: dict = defaultdict(lambda: {"delivered": 0, "on_time": 0, "transit_sum": 0.0})
    awaiting = 0
    for sid, t in delivered.items():
        oid = label.get(sid, (None, None))[1]
        o = orders.get(oid) if oid else None
        if o is None or o["placed"] is None or not (o["seller"] and o["buyer"]):
            awaiting += 1
            continue
        corridor = f"{o['seller']}-{o['buyer']}"
        sl = o["sl"]
        due = o["promised"]
        if due is None:
            hours = corridor_h.get(corridor, {}).get(sl, default_h.get(sl, default_h["standard"]))
            due = o["placed"] + hours * 3600.0
        row = rows[(corridor, sl)]
        row["delivered"] += 1
        row["on_time"] += t <= due
        row["transit_sum"] += t - o["placed"]
    return {"rows": dict(rows), "awaiting_order": awaiting,
            "conflicting_ends": len(other_end & set(delivered)), "skipped": skipped}


def from_samples(samples) -> dict:
    """The same rows from Prometheus samples: an iterable of (name, labels dict, value), e.g. every
    scrape of every worker, any `partition` label summed away."""
    rows: dict = defaultdict(lambda: {"delivered": 0.0, "on_time": 0.0, "transit_sum": 0.0})
    for name, labels, value in samples:
        if name == "corridor_shipments_delivered_total":
            row = rows[(labels["corridor"], labels["service_level"])]
            row["delivered"] += value
            if labels["on_time"] == "true":
                row["on_time"] += value
        elif name == "corridor_shipment_transit_seconds_sum":
            rows[(labels["corridor"], labels["service_level"])]["transit_sum"] += value
    return dict(rows)


def from_totals(totals: dict) -> dict:
    """The same rows from per-corridor totals records as the Quix and Bytewax ports keep them
    ({corridor: {"delivered": {"<sl>|<true|false>": n}, "transit": {sl: [buckets..., sum]}}},
    streams/domain/aggregate.py)."""
    samples = []
    for corr, tot in totals.items():
        for key, n in tot["delivered"].items():
            sl, on_time = key.split("|")
            samples.append(("corridor_shipments_delivered_total",
                            {"corridor": corr, "service_level": sl, "on_time": on_time}, n))
        for sl, row in tot["transit"].items():
            samples.append(("corridor_shipment_transit_seconds_sum",
                            {"corridor": corr, "service_level": sl}, row[-1]))
    return from_samples(samples)


def mismatches(expected: dict, got: dict) -> list[str]:
    """One line per differing (corridor, service level, field); [] when every series agrees.
    Counts must be equal; transit sums (integer seconds here, so exact in a double) are compared
    to 1e-9 relative, against a different summation order across partitions."""
    out = []
    zero = {f: 0 for f in FIELDS}
    for key in sorted(set(expected) | set(got)):
        e, g = expected.get(key, zero), got.get(key, zero)
        for f in FIELDS:
            a, b = e.get(f, 0), g.get(f, 0)
            same = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6) if f == "transit_sum" else a == b
            if not same:
                out.append(f"{key[0]} {key[1]} {f}: expected {a:,.0f}, got {b:,.0f} ({b - a:+,.0f})")
    return out


def totals(rows: dict) -> dict:
    return {f: sum(r[f] for r in rows.values()) for f in FIELDS}


# ---- the Engine cross-check (imports streams; only for the CLI below) ----------------------------
def engine_rows(messages, topics: dict[str, str] | None = None) -> dict:
    """The same rows from streams.domain.engine.Engine fed the messages in order."""
    import sys
    sys.path.insert(0, str(ROOT))
    from streams.domain.engine import Engine
    from streams.domain.policy import SlaPolicy
    kind_of = {name: kind for kind, name in (topics or DEFAULT_TOPICS).items()}
    eng = Engine(SlaPolicy.load(os.environ.get("CORRIDOR_SLA_POLICY") or None))
    for topic, _key, value in messages:
        eng.feed(kind_of[topic], orjson.loads(value))
    eng.finish()
    return from_totals(eng.totals)


def main() -> int:
    import argparse
    import sys
    import time
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import workload
    ap = argparse.ArgumentParser(description="the independent count vs streams.domain's Engine")
    ap.add_argument("--shipments", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    events = workload(args.shipments, args.seed)
    t = time.perf_counter()
    mine = count(events)
    t_mine = time.perf_counter() - t
    t = time.perf_counter()
    eng = engine_rows(events)
    t_eng = time.perf_counter() - t
    diff = mismatches(mine["rows"], eng)
    tot = totals(mine["rows"])
    print(f"workload: {args.shipments} shipments, {len(events)} events (seed {args.seed})")
    print(f"independent count ({t_mine:.1f} s): {tot['delivered']:,} delivered, {tot['on_time']:,} on time, "
          f"transit {tot['transit_sum']:,.0f} s over {len(mine['rows'])} corridor/level rows; "
          f"awaiting order {mine['awaiting_order']}, conflicting ends {mine['conflicting_ends']}, "
          f"skipped {mine['skipped']}")
    print(f"Engine ({t_eng:.1f} s): {totals(eng)['delivered']:,.0f} delivered")
    print("agree: every series" if not diff else f"DIFFER in {len(diff)} series:\n  " + "\n  ".join(diff))
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main())
