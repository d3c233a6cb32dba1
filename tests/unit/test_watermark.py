"""The rule for forgetting state (streams/domain/watermark.py), case by case."""
from streams.domain import orders, watermark as wm
from streams.domain.watermark import NEG_INF, POS_INF, Progress

DAY = 86400.0


def test_a_topic_partition_bounds_the_watermark_at_its_clock():
    assert wm.bound(Progress(clock=100.0)) == 100.0
    assert wm.bound(Progress(clock=100.0, caught_up=True, quiet_for=10.0)) == 100.0


def test_a_topic_partition_not_read_yet_blocks_unless_it_is_known_to_be_empty():
    assert wm.bound(Progress()) == NEG_INF                       # end offset unknown, or unread
    assert wm.bound(Progress(caught_up=True)) == POS_INF          # nothing in it


def test_a_caught_up_topic_partition_stops_bounding_after_the_idle_time():
    quiet = Progress(clock=100.0, caught_up=True, quiet_for=wm.IDLE_AFTER_SECONDS)
    assert wm.bound(quiet) == POS_INF
    backlog = Progress(clock=100.0, caught_up=False, quiet_for=10 * wm.IDLE_AFTER_SECONDS)
    assert wm.bound(backlog) == 100.0                            # silent, but records wait unread


def test_links_in_flight_hold_the_bound_at_their_event_time():
    assert wm.bound(Progress(clock=500.0, in_flight=200.0)) == 200.0
    assert wm.bound(Progress(caught_up=True, in_flight=200.0)) == 200.0
    assert wm.bound(Progress(clock=100.0, in_flight=200.0)) == 100.0


def test_the_side_watermark_is_the_least_bound_and_a_lagging_topic_holds_it_back():
    # orders read to day 90, the links topic not read at all yet: nothing may be forgotten.
    assert wm.side_watermark([Progress(clock=90 * DAY), Progress()]) == NEG_INF
    assert wm.side_watermark([Progress(clock=90 * DAY), Progress(clock=3 * DAY)]) == 3 * DAY
    assert wm.side_watermark([Progress(clock=90 * DAY), Progress(caught_up=True)]) == 90 * DAY


def test_finite_turns_blocked_into_none_and_unbounded_into_the_latest_clock():
    assert wm.finite(NEG_INF, [1.0, 2.0]) is None
    assert wm.finite(POS_INF, [1.0, None, 2.0]) == 2.0
    assert wm.finite(POS_INF, [None]) is None
    assert wm.finite(5.0, [1.0, 9.0]) == 5.0


def test_the_global_watermark_waits_for_every_partition():
    assert wm.global_watermark({0: 10.0, 1: 20.0}, {2: 5.0, 3: 30.0}, 4) == 5.0
    assert wm.global_watermark({0: 10.0, 1: None}, {2: 5.0, 3: 30.0}, 4) is None  # recovering
    assert wm.global_watermark({0: 10.0}, {1: 4.0, 2: 5.0}, 4) is None            # nobody has 3
    assert wm.global_watermark({0: None}, {0: 7.0, 1: 8.0}, 2) == 7.0             # shared value


def test_an_order_waits_for_every_shipments_partition_and_its_own_side():
    assert wm.order_mark(50.0, 80.0) == 50.0
    assert wm.order_mark(None, 80.0) is None
    assert wm.order_mark(50.0, None) is None
    assert wm.may_forget(49.0, 50.0) and not wm.may_forget(50.0, 50.0)
    assert not wm.may_forget(None, 50.0) and not wm.may_forget(1.0, None)


def test_a_link_whose_order_was_not_read_keeps_it_four_retentions_and_says_why():
    retention = 30 * DAY
    link_only = orders.apply_link(None, "O1", "S1", at=10 * DAY).state
    assert orders.expires_at(link_only, retention) == 10 * DAY + 4 * retention
    assert orders.expiry_reason(link_only) == "order_never_arrived"
    placed = {"event_id": "e1", "event_type": "order_placed", "order_id": "O1",
              "occurred_at": "1970-01-02T00:00:00Z"}
    state = orders.apply_order_event(link_only, placed).state
    assert orders.expires_at(state, retention) == 10 * DAY + retention
    assert orders.expiry_reason(state) == "shipped"
    lonely = orders.apply_order_event(None, placed).state
    assert orders.expires_at(lonely, retention) == DAY + 4 * retention
    assert orders.expiry_reason(lonely) == "never_shipped"
