"""The corridor counter/histogram series that streams.domain.engine.Engine gives for a message
file: the in-process reference of benchmarks/chaos.py, run as a child process so that it imports
the code under test (PYTHONPATH = the snapshot of streams/) and not the working tree.

    PYTHONPATH=SNAPSHOT python benchmarks/engine_series.py MESSAGES.jsonl '{"orders": "orders", ...}'

MESSAGES.jsonl: one JSON array [topic, value as text] per line, in the order produced (valid
messages only). Prints a JSON object: "series", a list of [name, labels, value] (labels without
`partition`); "late" and "duplicates", the Engine's counts; and "shipments", per shipment id the
[event id, source, event type] its timeline kept, its stage durations and its late events (to compare with a worker's
/shipments/{id} view).
"""
import json
import sys

import orjson
from streams.domain.engine import Engine
from streams.domain.policy import SlaPolicy
from streams.domain.timeline import KEPT_AFTER_END, stage_durations
from streams.worker.metrics import totals_families

NAMES = ("corridor_shipments_delivered_total", "corridor_shipment_exceptions_total",
         "corridor_shipment_transit_seconds_count", "corridor_shipment_transit_seconds_sum",
         "corridor_stage_dwell_seconds_count", "corridor_stage_dwell_seconds_sum")


def main() -> int:
    path, topics = sys.argv[1], json.loads(sys.argv[2])
    kind_of = {name: kind for kind, name in topics.items()}
    eng = Engine(SlaPolicy.load())
    with open(path, "rb") as fh:
        for line in fh:
            topic, value = orjson.loads(line)
            eng.feed(kind_of[topic], orjson.loads(value))
    eng.finish()            # the workload is the whole input: every figure final (the idle rule)
    out = []
    for fam in totals_families({(c, "all"): t for c, t in eng.totals.items()}):
        for s in fam.samples:
            if s.name in NAMES:
                out.append([s.name, {k: v for k, v in s.labels.items() if k != "partition"}, s.value])
    # ids of the kinds of event every timeline keeps whatever the arrival order (milestones, ends,
    # exceptions, labels): a worker's view must show each of them
    shipments = {sid: {"ids": sorted([e[3], e[1], e[2]] for e in st["ev"] if e[2] in KEPT_AFTER_END),
                       "late": st["late"],
                       "stages": [[stage, secs] for stage, _start, secs in stage_durations(st)]}
                 for sid, st in eng.shipments.items()}
    json.dump({"series": out, "late": eng.late, "duplicates": eng.duplicates,
               "shipments": shipments}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
