"""The corridor totals table's rules: its keys, and counting each settlement exactly once.

Totals are kept per source partition and corridor (key ``"<partition>|<corridor>"``), so each
partition's totals travel with it on a rebalance. The observations of settled shipments are
numbered per partition (`seq`); each totals record remembers, per numbering source, the last
number it counted (its ``"o"`` map), and each shipment remembers its last settlements (``"lobs"``,
timeline.remember). After a crash that kept the states but not the totals (the states' changelog
is written first), `missing` finds what the totals lack and `count_once` adds it exactly as it
was counted the first time (docs/semantics.md "Crashes").
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from streams.domain import aggregate

#: The numbering source of settlements, in totals "o" and timeline "lobs" (the changelog format,
#: streams.domain.records).
SETTLED = "#fin"


def key(partition: int, corridor: str) -> str:
    return f"{partition}|{corridor}"


def split_key(k: str) -> tuple[int, str]:
    """(partition, corridor) of a totals key."""
    p, corridor = k.split("|", 1)
    return int(p), corridor


def by_corridor(observations: Iterable[tuple]) -> dict[str, list[tuple]]:
    """Observations grouped by their corridor (each observation's second field)."""
    out: dict[str, list[tuple]] = defaultdict(list)
    for obs in observations:
        out[obs[1]].append(obs)
    return out


def counted(record: dict, source: str) -> int:
    """The last number of `source` that a totals record has counted (0: none)."""
    return (record.get("o") or {}).get(source, 0)


def count_once(record: dict, source: str, seq: int, observations: list[tuple]) -> bool:
    """Add observations numbered `seq` (one corridor's) to a totals record unless it has already
    counted that number; True if the record changed."""
    if counted(record, source) >= seq:
        return False
    for obs in observations:
        aggregate.add(record, obs)
    record.setdefault("o", {})[source] = seq
    return True


def missing(states: Iterable[dict], counted_by_corridor: dict[str, int],
            source: str) -> tuple[dict[int, list[tuple]], int]:
    """What a partition's totals lack of the settlements its states remember: ({seq: the
    observations of that settlement whose corridor's record has not counted it}, the highest
    number seen in the states or the totals, from which numbering goes on)."""
    top = max(counted_by_corridor.values(), default=0)
    out: dict[int, list[tuple]] = defaultdict(list)
    for state in states:
        for src, seq, obs in state.get("lobs", ()):
            if src != source:
                continue
            top = max(top, seq)
            out[seq].extend(o for o in obs if counted_by_corridor.get(o[1], 0) < seq)
    return {seq: obs for seq, obs in out.items() if obs}, top
