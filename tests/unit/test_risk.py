"""The lateness estimator (streams/domain/risk.py), its baseline and scores, by hand (issue 16).

The model counts samples in bins: a sample is (time spent in the stage, time from entering it to
the delivery), each binned by `risk.bin_of` ([0, 1 h), then 4 bins per doubling from 1 h), so a
time of h hours >= 1 is in bin 1 + int(4 * log2 h) = [2^((k-1)/4) h, 2^(k/4) h). Within a bin, times
are taken as spread uniformly in log time (`risk._share_above`).
"""
import math
import random

import pytest

from streams.domain import risk

HOUR = 3600.0
DAY = 86400.0
D0 = 19_700                     # an epoch day
T0 = D0 * DAY                   # its midnight


def hours_bin(k: int) -> tuple[float, float]:
    """Bin k >= 1 in hours: [2^((k-1)/4), 2^(k/4))."""
    return 2 ** ((k - 1) / 4), 2 ** (k / 4)


# ---- bins and what a delivery teaches ----------------------------------------------------------
def test_bins_at_their_edges():
    assert risk.BINS == 50
    assert [risk.bin_of(s) for s in (0, 1, 3599, 3600, 7199, 7200, 14_400)] == [0, 0, 0, 1, 4, 5, 9]
    # 2^(1/4) h = 4281.1 s opens bin 2
    assert (risk.bin_of(4281), risk.bin_of(4282)) == (1, 2)
    # the last bin is open: from 2^12 h = 170.7 days on
    assert risk.bin_of(2 ** 11.75 * HOUR + 1) == 48
    assert risk.bin_of(2 ** 12 * HOUR) == risk.bin_of(10 ** 12) == 49
    assert risk.EDGES[:2] == (0.0, HOUR) and risk.EDGES[5] == 2 * HOUR
    # a cell is (dwell bin) * 50 + (to-delivery bin)
    assert risk.cell(0, 7200) == 5
    assert risk.cell(7200, 3600) == 5 * 50 + 1
    assert risk.cell(3599, 10 ** 12) == 49
    # within bin 0 the share above x is linear, elsewhere linear in log time
    assert risk._share_above(0, 1800) == pytest.approx(0.5)
    assert risk._share_above(5, 2 * 2 ** (1 / 8) * HOUR) == pytest.approx(0.5)
    assert risk._share_above(5, 2 * HOUR) == 1.0 and risk._share_above(5, 2 ** 1.25 * HOUR) == 0.0


def test_a_delivery_gives_one_sample_per_stage_under_its_corridor_and_day():
    delivered = T0 + 20 * HOUR                              # day D0
    stages = [("origin", T0 + 4 * HOUR, 2 * HOUR), ("linehaul", T0 + 6 * HOUR, 4 * HOUR),
              ("last_mile", T0 + 10 * HOUR, 10 * HOUR)]
    # origin: 2 h (bin 5), 16 h to delivery (bin 1 + 4 * 4 = 17): cell 5 * 50 + 17
    # linehaul: 4 h (bin 9), 14 h (1 + int(4 * 3.807) = 16): cell 9 * 50 + 16
    # last_mile: 10 h (1 + int(4 * 3.322) = 14) both
    assert risk.observations("CN-AU", "standard", stages, delivered) == [
        ("risk", f"CN-AU#{D0}", "standard|origin|267"),
        ("risk", f"CN-AU#{D0}", "standard|linehaul|466"),
        ("risk", f"CN-AU#{D0}", "standard|last_mile|714")]
    assert risk.observations("CN-AU", "express", stages[:1], T0 + DAY) == [
        ("risk", f"CN-AU#{D0 + 1}", "express|origin|268")]      # 20 h: 1 + int(4 * 4.322) = 18
    assert risk.is_risk_key(f"CN-AU#{D0}") and not risk.is_risk_key("CN-AU")
    assert risk.split_risk_key(risk.risk_key("CN-AU", D0)) == ("CN-AU", D0)


# ---- the window ------------------------------------------------------------------------------------
def counts(model, group) -> dict:
    return {c: n for c, n in model.window.get(group, {}).items() if n}


def test_the_window_holds_the_last_60_days_and_slides_both_ways():
    m = risk.RiskModel()
    m.add(f"CN-AU#{D0 - 60}", {"standard|customs|7": 2})   # 60 days before D0: outside
    m.add(f"CN-AU#{D0 - 59}", {"standard|customs|8": 1})   # the window's first day
    m.add(f"CN-AU#{D0}", {"standard|customs|5": 1})
    m.move_to(D0)
    assert counts(m, ("customs",)) == {8: 1, 5: 1}
    assert counts(m, ("CN-AU", "standard", "customs")) == counts(m, ("AU", "customs")) == {8: 1, 5: 1}
    # a delivery counted later, inside the window, counts at once; one after it waits
    m.add(f"KR-AU#{D0 - 10}", {"express|customs|9": 3})
    m.add(f"KR-AU#{D0 + 1}", {"express|customs|11": 1})
    assert counts(m, ("customs",)) == {8: 1, 5: 1, 9: 3}
    assert counts(m, ("AU", "customs")) == {8: 1, 5: 1, 9: 3}
    assert counts(m, ("KR-AU", "express", "customs")) == {9: 3}
    assert counts(m, ("CN-AU", "standard", "customs")) == {8: 1, 5: 1}
    window = {g: counts(m, g) for g in m.window}
    # one day back: D0 - 60 comes in, D0 leaves; one day on: D0 - 59 leaves, D0 + 1 comes in
    m.move_to(D0 - 1)
    assert counts(m, ("customs",)) == {7: 2, 8: 1, 9: 3}
    m.move_to(D0 + 1)
    assert counts(m, ("customs",)) == {5: 1, 9: 3, 11: 1}
    # back and forth, near (day by day) or far (rebuilt), gives the same window
    for day in (D0 + 30, D0 - 200, D0 + 59, D0):
        m.move_to(day)
    assert {g: counts(m, g) for g in m.window if counts(m, g)} == window
    fresh = risk.RiskModel()
    for name, c in ((f"KR-AU#{D0 + 1}", {"express|customs|11": 1}),
                    (f"CN-AU#{D0}", {"standard|customs|5": 1}),
                    (f"KR-AU#{D0 - 10}", {"express|customs|9": 3}),
                    (f"CN-AU#{D0 - 59}", {"standard|customs|8": 1}),
                    (f"CN-AU#{D0 - 60}", {"standard|customs|7": 2})):
        fresh.add(name, c)
    fresh.move_to(D0)
    assert {g: counts(fresh, g) for g in fresh.window if counts(fresh, g)} == window
    # a record taken back (sign -1, a partition's record rewritten) leaves nothing behind
    m.add(f"CN-AU#{D0}", {"standard|customs|5": 1}, -1)
    assert counts(m, ("customs",)) == {8: 1, 9: 3}
    assert D0 not in m.days and m.days[D0 - 59] == {"CN-AU": {"standard|customs|8": 1}}


# ---- P(late) and the range, by hand -------------------------------------------------------------
#: (corridor, days in customs, days from entering customs to delivery), all delivered in the window
SAMPLES = [("CN-AU", 4, 5), ("CN-AU", 7, 9.5), ("CN-AU", 12, 15), ("KR-AU", 18, 20), ("DE-US", 1, 1)]


@pytest.fixture
def model():
    m = risk.RiskModel()
    for corridor, in_customs, to_delivery in SAMPLES:
        entered = T0 - 30 * DAY
        m.delivered(corridor, "standard", [("customs", entered, in_customs * DAY)],
                    entered + to_delivery * DAY)
    return m


def test_the_time_to_delivery_bins_of_the_samples():
    # 5 d = 120 h: bin 1 + int(4 * 6.907) = 28; 9.5 d = 228 h: bin 32 = [215.3 h, 256 h);
    # 15 d = 360 h: 34; 20 d = 480 h: 36; 1 d = 24 h: 19
    assert [risk.bin_of(d * DAY) for _c, _in, d in SAMPLES] == [28, 32, 34, 36, 19]
    # days in customs: 4 d = 96 h: 27; 7 d = 168 h: 30; 12 d = 288 h: 33; 18 d = 432 h: 36; 1 d: 19
    assert [risk.bin_of(d * DAY) for _c, d, _to in SAMPLES] == [27, 30, 33, 36, 19]


def test_p_late_is_shrunk_from_stage_to_destination_to_corridor(model):
    now = T0
    p = model.predict("CN-AU", "standard", "customs", entered=now, now=now, promise=now + 10 * DAY)
    # slack 10 d = 240 h, in bin 32 = [2^7.75 h, 2^8 h) = [215.3 h, 256 h), with the 9.5 d sample:
    # the share of that bin above 240 h, uniform in log time, is log(256 / 240) / log(2^0.25)
    s = math.log(256 / 240) / math.log(2 ** 0.25)
    assert risk._share_above(32, 240 * HOUR) == pytest.approx(s) and s == pytest.approx(0.3724, abs=1e-4)
    # late: 15 d and 20 d entirely, s of the 9.5 d one; 5 d and 1 d not
    stage = (2 + s + 10 * 0) / (5 + 10)                 # all 5
    dest = (2 + s + 10 * stage) / (4 + 10)              # AU: 5, 9.5, 15, 20 d
    corridor = (1 + s + 10 * dest) / (3 + 10)           # CN-AU standard: 5, 9.5, 15 d
    assert p.p_late == pytest.approx(corridor)
    assert p.p_late == pytest.approx(0.3228, abs=1e-4)
    # the range: CN-AU has 3 < MIN_SAMPLES samples, AU 4, the stage 5: the stage's, bins 19, 28,
    # 32, 34 and 36 with one each. p7.5 = 0.375 of the way through bin 19 = [2^4.5 h, 2^4.75 h)
    # in log time, p50 = half of bin 32, p92.5 = 0.625 of bin 36 = [2^8.75 h, 2^9 h)
    assert p.level == "stage"
    assert (p.p10 - now, p.p50 - now, p.p90 - now) == pytest.approx(
        (2 ** (4.5 + 0.375 / 4) * HOUR, 2 ** (7.75 + 0.5 / 4) * HOUR, 2 ** (8.75 + 0.625 / 4) * HOUR))


def test_time_already_spent_in_the_stage_conditions_every_level(model):
    entered = T0
    now = entered + 6 * DAY                             # 144 h: bin 1 + int(4 * 7.17) = 29
    p = model.predict("CN-AU", "standard", "customs", entered=entered, now=now,
                      promise=entered + 10 * DAY)
    # only samples that spent bin 29 or more in customs: 7 d (30), 12 d (33), 18 d (36); not the
    # 4 d (27) nor the 1 d (19) ones
    s = risk._share_above(32, 240 * HOUR)
    stage = (2 + s) / (3 + 10)                          # 9.5, 15, 20 d
    dest = (2 + s + 10 * stage) / (3 + 10)              # the same three
    corridor = (1 + s + 10 * dest) / (2 + 10)           # 9.5 and 15 d
    assert p.p_late == pytest.approx(corridor)
    # the range, from the stage's three conditioned samples, is never before now
    assert p.level == "stage" and p.p10 == pytest.approx(entered + 2 ** (7.75 + 0.225 / 4) * HOUR)
    assert p.p10 > now
    # held longer than any sample (25 d: bin 37): judged by the longest-held there are (bin 36,
    # from 2^8.75 h = 17.94 d: the KR-AU one, delivered 20 d after entering) delayed by how much
    # longer it has been held than their bin's start: 25 d - 2^8.75 h = 7.06 d
    delay = 25 * DAY - 2 ** 8.75 * HOUR
    p = model.predict("CN-AU", "standard", "customs", entered=entered, now=entered + 25 * DAY,
                      promise=entered + 30 * DAY)
    # 20 d + 7.06 d is within 30 d (its bin ends at 2^9 h = 21.33 d < 30 d - 7.06 d): not late
    assert p.p_late == 0.0
    assert p.p50 == pytest.approx(entered + 2 ** 8.875 * HOUR + delay)     # the bin's log middle
    # with a promise at 26 d the slack left, 26 d - 7.06 d = 18.94 d, falls inside the sample's
    # bin: late by the share of the bin above it (log-uniform: ln(21.33/18.94) / ln(21.33/17.94)
    # = 0.69). Stage and destination (AU) have that one sample, the corridor (CN-AU) none
    p = model.predict("CN-AU", "standard", "customs", entered=entered, now=entered + 25 * DAY,
                      promise=entered + 26 * DAY)
    share = risk._share_above(36, 26 * DAY - delay)
    assert share == pytest.approx(0.686, abs=0.001)
    stage = share / (1 + 10)
    dest = (share + 10 * stage) / (1 + 10)
    assert p.p_late == pytest.approx(dest)                   # the corridor borrows it all


def test_past_its_promise_a_shipment_is_late_for_sure(model):
    entered = T0
    for now in (entered + 10 * DAY, entered + 11 * DAY):
        assert model.predict("CN-AU", "standard", "customs", entered, now, entered + 10 * DAY).p_late == 1.0
    # a promise before the stage was even entered, too
    assert model.p_late("CN-AU", "standard", "customs", entered, entered, entered - 1) == 1.0


def test_nothing_learnt_gives_zero_and_no_range():
    p = risk.RiskModel().predict("CN-AU", "standard", "customs", T0, T0, T0 + DAY)
    assert (p.p_late, p.p10, p.p50, p.p90, p.level) == (0.0, None, None, None, "stage")


def test_the_corridor_gives_the_range_once_it_has_enough_samples():
    m = risk.RiskModel()
    for i in range(risk.MIN_SAMPLES):                 # 20 CN-AU samples of 2 h to delivery (bin 5)
        m.add(f"CN-AU#{D0}", {"standard|customs|5": 1})
    m.add(f"DE-US#{D0}", {"standard|customs|9": 100})  # 4 h (bin 9): other corridors' do not count
    p = m.predict("CN-AU", "standard", "customs", T0, T0, T0 + DAY)
    assert p.level == "corridor"
    # every level: bin 5 = [2 h, 2^1.25 h): the median half way in log time
    assert p.p50 - T0 == pytest.approx(2 ** 1.125 * HOUR)
    assert p.p_late == 0.0
    assert m.predict("DE-US", "standard", "customs", T0, T0, T0 + DAY).level == "corridor"
    assert m.predict("KR-AU", "standard", "customs", T0, T0, T0 + DAY).level == "destination"


# ---- the open shipments' risk --------------------------------------------------------------------
def test_score_open_counts_at_risk_and_the_expected_late_in_units_of_2_to_the_minus_20(model):
    now = T0
    # (p_late reads the window as it is; predict, like score_open, moves it to now's day first)
    p1 = model.predict("CN-AU", "standard", "customs", now, now, now + 10 * DAY).p_late  # 0.3228
    entries = [
        ("CN-AU", "standard", "customs", now + 2 * DAY, now + 10 * DAY, now, None),     # p1
        None,                                                                   # not open
        ("CN-AU", "standard", "customs", now, now - HOUR, now - 2 * DAY, None),        # past its promise
        ("KR-AU", "standard", "customs", now, None, now - DAY, None),                  # no promise
    ]
    out = risk.score_open(model, entries, now)
    assert dict(out.at_risk) == {("CN-AU", "standard", "customs"): 1}
    assert dict(out.scored) == {"CN-AU": 2}
    assert dict(out.expected_late) == {"CN-AU": round(p1 * 2 ** 20) + 2 ** 20}
    assert dict(out.expected_late) == {"CN-AU": 338_510 + 2 ** 20}
    # a lower threshold counts the first too
    out = risk.score_open(model, entries, now, threshold=0.3)
    assert dict(out.at_risk) == {("CN-AU", "standard", "customs"): 2}


def test_the_counts_of_two_partitions_merged_in_any_order_predict_as_one_model_fed_everything():
    rng = random.Random(7)
    corridors = ("CN-AU", "KR-AU", "CN-US", "DE-US")
    records = []                # (partition, risk key, {sample: n}): what each totals record holds
    for _ in range(400):
        corridor = rng.choice(corridors)
        delivered = T0 - rng.uniform(0, 90) * DAY
        entered = delivered - rng.uniform(0.1, 30) * DAY
        stay = rng.uniform(0, delivered - entered)
        for _kind, name, sample in risk.observations(corridor, rng.choice(("standard", "express")),
                                                      [("customs", entered, stay)], delivered):
            records.append((rng.randrange(2), name, {sample: 1}))

    def summed(parts) -> dict:
        out: dict = {}
        for _p, name, c in parts:
            for sample, n in c.items():
                out.setdefault(name, {})[sample] = out.setdefault(name, {}).get(sample, 0) + n
        return out

    one = risk.RiskModel()
    for name, c in summed(records).items():
        one.add(name, c)
    halves = [summed(r for r in records if r[0] == p) for p in (0, 1)]
    merged = risk.RiskModel()
    merged.move_to(D0 - 45)                 # a window already set: adds land in it or wait
    for name, c in reversed(list(halves[1].items())):
        merged.add(name, c)
    merged.move_to(D0 + 100)
    for name, c in halves[0].items():
        merged.add(name, c)

    def predictions(m):
        return [m.predict(corridor, level, "customs", T0 - spent * DAY, T0, T0 + slack * DAY)
                for corridor in corridors + ("FR-AU",) for level in ("standard", "express")
                for spent in (0, 0.5, 3, 12) for slack in (1, 5, 20)]

    assert predictions(merged) == predictions(one)            # exactly: the counts are integers
    assert len({p.p_late for p in predictions(one)}) > 10      # and they are not all alike


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
