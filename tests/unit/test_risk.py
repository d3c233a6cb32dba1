"""The lateness estimator (streams/domain/risk.py), its baseline and scores, by hand (issue 16)."""
import pytest

from streams.domain import risk

DAY = 86400.0
T0 = 1_700_000_000.0


def single_stage(model, sid, corridor, entered, days, stage="customs"):
    """A shipment that entered `stage` at `entered` and was delivered `days` later."""
    model.entered(sid, stage, entered)
    model.delivered(sid, corridor, "standard", [(stage, entered, days * DAY)], entered + days * DAY)


@pytest.fixture
def model():
    m = risk.RiskModel()
    single_stage(m, "a", "CN-AU", T0, 5)
    single_stage(m, "b", "CN-AU", T0, 15)
    single_stage(m, "c", "KR-AU", T0, 20)
    single_stage(m, "d", "DE-US", T0, 1)
    return m


def test_history_is_shrunk_from_stage_to_destination_to_corridor_and_blended_with_now(model):
    now = T0 + 30 * DAY
    p = model.predict("CN-AU", "standard", "customs", entered=now, now=now, promise=now + 10 * DAY)
    stage = (2 + 10 * 0) / (4 + 10)                 # 15 d and 20 d of 4 exceed the 10 d slack
    dest = (2 + 10 * stage) / (3 + 10)              # AU: 5, 15, 20
    corridor = (1 + 10 * dest) / (2 + 10)           # CN-AU: 5, 15
    assert p.p_history == pytest.approx(corridor)
    assert p.p_now == pytest.approx(0.5)            # all 4 delivered: 1 and 5 d <= 10 d < 15, 20 d
    assert p.p_late == pytest.approx(0.9 * corridor + 0.1 * 0.5)
    # the range: CN-AU has 2 < MIN_SAMPLES conditioned samples, AU 3, the stage 4: the stage's
    assert p.level == "stage"
    assert (p.p10 - now, p.p50 - now, p.p90 - now) == pytest.approx(
        (1 * DAY + 0.3 * 4 * DAY, 10 * DAY, 15 * DAY + 0.7 * 5 * DAY))


def test_time_already_spent_in_the_stage_conditions_every_level(model):
    entered = T0 + 30 * DAY
    now = entered + 6 * DAY                         # 6 days in customs already
    p = model.predict("CN-AU", "standard", "customs", entered=entered, now=now,
                      promise=entered + 10 * DAY)
    stage = (2 + 0) / (2 + 10)                      # of 15 and 20 d (>= 6 d), both > 10 d
    dest = (2 + 10 * stage) / (2 + 10)
    corridor = (1 + 10 * dest) / (1 + 10)           # only 15 d
    assert p.p_history == pytest.approx(corridor)
    # Kaplan-Meier: S(6 d) = 2/4 (1 and 5 d delivered), S(10 d) = 2/4: P(> 10 d | > 6 d) = 1
    assert p.p_now == pytest.approx(1.0)


def test_kaplan_meier_counts_shipments_not_delivered_yet_as_censored():
    cohort = [["a", 0.0, 2 * DAY], ["b", 0.0, None], ["c", 0.0, 4 * DAY], ["d", 5 * DAY, None]]
    now = 6 * DAY
    # times: a 2 d (delivered), c 4 d (delivered), d 1 d (censored, entered at 5 d), b 6 d (censored)
    # S(2 d) = 1 - 1/3 (d left at 1 d, 3 at risk) = 2/3; S(4 d) = 2/3 * (1 - 1/2) = 1/3
    assert risk.km_late(cohort, now, 0.0, 3 * DAY) == (pytest.approx(2 / 3), 6 * DAY)
    assert risk.km_late(cohort, now, 0.0, 5 * DAY)[0] == pytest.approx(1 / 3)
    assert risk.km_late(cohort, now, 3 * DAY, 5 * DAY)[0] == pytest.approx(0.5)   # (1/3) / (2/3)
    assert risk.km_late(cohort, now, 3 * DAY, 2 * DAY)[0] == 1.0   # already past the slack
    assert risk.km_late([], now, 0.0, DAY) == (0.0, None)
    # entries after `now` are not known yet
    assert risk.km_late([["x", now + 1, None]], now, 0.0, DAY) == (0.0, None)


def test_the_baseline_falls_back_from_corridor_to_destination_to_all():
    b = risk.Baseline()
    for i in range(19):                                  # 19 < 20: CN-AU falls back to AU
        b.delivered("CN-AU", 0.0, (i + 1) * DAY)
    for i in range(20):
        b.delivered("KR-AU", 0.0, 30 * DAY)
    # AU has 39: 19 CN-AU (1..19 d) and 20 KR-AU (30 d); slack 10 d: 9 + 20 exceed it
    assert b.predict("CN-AU", 0.0, 10 * DAY) == pytest.approx(29 / 39)
    assert b.predict("KR-AU", 0.0, 10 * DAY) == 1.0
    assert b.predict("DE-US", 0.0, 10 * DAY) == pytest.approx(29 / 39)    # all = the same 39


def test_average_precision_roc_auc_and_brier_by_hand():
    labels, scores = [True, False, True, False], [0.9, 0.8, 0.7, 0.1]
    assert risk.average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert risk.roc_auc(labels, scores) == pytest.approx(3 / 4)
    assert risk.brier(labels, scores) == pytest.approx((0.01 + 0.64 + 0.09 + 0.01) / 4)
    # ties are one threshold: both tied scores enter together
    assert risk.average_precision([True, False], [0.5, 0.5]) == pytest.approx(0.5)
    assert risk.roc_auc([True, False], [0.5, 0.5]) == pytest.approx(0.5)
    assert risk.precision_recall(labels, scores, 0.75) == (0.5, 0.5)
    assert risk.average_precision([False], [0.3]) is None and risk.roc_auc([True], [0.3]) is None


def test_lateness_is_attributed_to_the_stages_beyond_target_in_seconds_that_add_up():
    H = 3600.0
    parts = risk.attribute_lateness(20 * H, [("origin", 10 * H, 48 * H), ("linehaul", 106 * H, 96 * H),
                                             ("customs", 78 * H, 48 * H)])
    assert parts == {"linehaul": 5 * 3600, "customs": 15 * 3600}       # 10 h : 30 h over target
    # no stage beyond its target (a tight promise): in proportion to the dwell
    parts = risk.attribute_lateness(6 * H, [("origin", 10 * H, 48 * H), ("customs", 20 * H, 48 * H)])
    assert parts == {"origin": 2 * 3600, "customs": 4 * 3600}
    # thirds of 10 s: 3.33 each, the second left to the first by name on equal remainders
    parts = risk.attribute_lateness(10.0, [("a", 2.0, 1.0), ("b", 2.0, 1.0), ("c", 2.0, 1.0)])
    assert parts == {"a": 4, "b": 3, "c": 3} and sum(parts.values()) == 10
    assert risk.attribute_lateness(0.4, [("origin", H, 0.0)]) == {}       # under half a second


def test_where_a_delivery_fell_in_its_predicted_distribution():
    grid = tuple(float(k) for k in range(1, 20))     # the GRID levels 0.05 .. 0.95 at 1 .. 19
    assert risk.pit(grid, 0.5) == 0.025 and risk.pit(grid, 25.0) == 0.975
    assert risk.pit(grid, 10.0) == pytest.approx(0.5)
    assert risk.pit(grid, 10.5) == pytest.approx(0.525)


def test_the_range_is_recalibrated_by_where_recent_deliveries_fell():
    m = risk.RiskModel()
    assert m.range_levels() == (0.1, 0.5, 0.9)
    m.pits.extend([0.975] * 50 + [0.5] * 50)         # half of the deliveries beyond the grid
    assert m.range_levels() == pytest.approx((0.5, 0.7375, 0.975))
