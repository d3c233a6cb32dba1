"""The settle index (streams.worker.indexes.settle_index, a DueIndex) over a store that hands out a copy per read, as the
RocksDB store does: a shipment noted twice for the same time must be settled once."""
import copy

from builders import journey
from streams.worker.indexes import settle_index
from streams.domain import timeline
from streams.domain.policy import SlaPolicy

POLICY = SlaPolicy.load()


class CopyingTable(dict):
    def get(self, key, default=None):
        value = super().get(key, default)
        return copy.deepcopy(value)

    def items(self):
        return [(k, copy.deepcopy(v)) for k, v in super().items()]


def test_a_shipment_noted_twice_is_settled_once():
    state = None
    for source, ev in journey("S1", "O1", promised_h=200, hold=True):
        if source != "orders":
            state = timeline.apply(state, source, ev, POLICY).state
    state["p"] = 0
    table = CopyingTable(S1=state)
    index = settle_index(table, grace=0.0)
    assert index.due(0) is not None            # the hold and the end are waiting
    index.note(0, "S1", table.get("S1"))
    index.note(0, "S1", table.get("S1"))        # noted again, unchanged
    due = index.pop_due(0, float("inf"))
    assert [sid for sid, _ in due] == ["S1"]
    counted = timeline.settle(due[0][1], POLICY, float("inf"), 0.0)
    assert [o for o in counted if o[0] == "exception"] == [("exception", "CN-AU", "customs_hold")]
    assert index.pop_due(0, float("inf")) == []
