"""Customs KPIs, import regimes, business days and local dates (issue 17), figure by figure on
small histories computed by hand (docs/semantics.md "Customs")."""
from __future__ import annotations

import datetime as dt
import tomllib

import pytest

from builders import HOUR, T0_EPOCH, customs, journey, order, ship
from streams.domain import aggregate, calendar, timeline
from streams.domain.engine import Engine
from streams.domain.policy import DEFAULT_POLICY_FILE, PolicyError, SlaPolicy
from streams.domain.regimes import RegimeError, RegimeTable

DAY = 86400.0
SHIPPED = tomllib.loads(DEFAULT_POLICY_FILE.read_text())


def run(events, policy=None):
    eng = Engine(policy or SlaPolicy.load())
    for kind, ev in events:
        eng.feed(kind, ev)
    return eng.finish()


def with_value(events, amount, currency):
    for kind, ev in events:
        if kind == "orders" and ev["event_type"] == "order_placed":
            ev["declared_value"] = {"amount": amount, "currency": currency}
    return events


def policy_with(**destinations) -> SlaPolicy:
    return SlaPolicy.from_dict({**SHIPPED, "destination": destinations})


def epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def retime(events, **times):
    """Set occurred_at of events by event type (the first of each type) to ISO strings."""
    for kind, ev in events:
        if ev["event_type"] in times:
            ev["occurred_at"] = times.pop(ev["event_type"])
    assert not times, f"no event of type {list(times)}"
    return events


# ---- a parcel held twice ---------------------------------------------------------------------
def held_twice():
    """CN-AU, arrived h80, held h82, inspected h90, held again h95, inspected h110, released h120,
    delivered h150. Declared USD 50 = AUD 76 (fx 1.52): low value under au-gst-low-value."""
    events = journey("S1", "O1", arrived=80.0, released=120.0, delivered=150.0, hold=True)
    events += [("customs", customs("S1", "inspection_completed", 90.0)),
               ("customs", customs("S1", "held_for_inspection", 95.0)),
               ("customs", customs("S1", "inspection_completed", 110.0))]
    return with_value(sorted(events, key=lambda e: e[1]["occurred_at"]), 50, "USD")


def test_a_parcel_held_twice_counts_two_holds_two_inspections_and_one_arrival():
    tot = run(held_twice()).totals["CN-AU"]
    base = "AU|au-gst-low-value|low_value"
    assert tot["cust"] == {f"{base}|arrival": 1, f"{base}|hold": 2, f"{base}|inspection": 2,
                           f"{base}|rejection": 0, f"{base}|seizure": 0}
    # clearance = released - arrived = 40 h = 144,000 s: bucket "<= 2 days" (the third bound)
    assert tot["clear"] == {base: [0, 0, 1, 0, 0, 0, 0, 0, 0, 144000.0]}
    assert aggregate.CLEARANCE_BUCKETS[2] == 2 * DAY
    # within the default 5-day target; no business-day target configured: no business key
    assert tot["cwt"] == {f"{base}|calendar": 1}
    # the existing exception counter sees the same two holds
    assert tot["exceptions"]["customs_hold"] == 2
    # promise of CN-AU standard = 288 h: delivered h150 on time; customs removed (h110) too
    assert tot["delivered"] == {"standard|true": 1} and tot["dex"] == {"standard|true": 1}


def test_holds_after_the_figures_are_final_and_export_holds_count_nothing():
    events = journey("S2", "O2", arrived=80.0, released=100.0, delivered=130.0)
    events.insert(3, ("customs", customs("S2", "held_for_inspection", 25.0, direction="export",
                                         country="CN")))
    eng = Engine(SlaPolicy.load())
    for kind, ev in with_value(events, 20, "USD"):
        eng.feed(kind, ev)
    # a clock far past delivered + grace (48 h): the figures are final, then a late import hold
    eng.feed("shipments", ship("S9", "picked_up", 400.0))
    eng.feed("customs", customs("S2", "held_for_inspection", 120.0))
    eng.finish()
    assert eng.late == 1
    assert eng.totals["CN-AU"]["cust"]["AU|au-gst-low-value|low_value|hold"] == 0


def test_clearance_over_the_target_and_a_parcel_never_released():
    slow = with_value(journey("S3", "O3", arrived=80.0, released=80.0 + 6 * 24, delivered=300.0),
                      10, "AUD")
    # rejected at import and returned: arrived, never released: an arrival, no clearance time
    rejected = journey("S4", "O4", arrived=80.0, released=None, delivered=None)
    rejected += [("customs", customs("S4", "rejected", 90.0)),
                 ("shipments", ship("S4", "returned", 150.0))]
    tot = run(slow + with_value(rejected, 10, "AUD")).totals["CN-AU"]
    base = "AU|au-gst-low-value|low_value"
    assert tot["cust"][f"{base}|arrival"] == 2 and tot["cust"][f"{base}|rejection"] == 1
    # 6 days = 518,400 s: the "<= 7 days" bucket; not within 5 days: the key counts 0
    assert tot["clear"][base] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 518400.0]
    assert tot["cwt"] == {f"{base}|calendar": 0}


def test_a_parcel_that_never_reached_its_destination_makes_no_customs_figure():
    lost = journey("S5", "O5", arrived=None, released=None, delivered=None)
    lost.append(("shipments", ship("S5", "lost", 200.0)))
    tot = run(lost).totals["CN-AU"]
    assert "cust" not in tot and "clear" not in tot and tot["exceptions"] == {"lost": 1}


# ---- regimes and value classes -----------------------------------------------------------------
@pytest.mark.parametrize("amount, currency, expected", [
    (650, "USD", "low_value"),      # 650 x 1.52 = AUD 988: at most AUD 1,000
    (700, "USD", "formal"),         # 700 x 1.52 = AUD 1,064: above
    (1000, "AUD", "low_value"),     # the threshold itself is low value ("AUD 1,000 or less")
    (100_000, "JPY", "formal"),     # 100,000 / 150 = USD 666.67, x 1.52 = AUD 1,013.33: above
    (98_000, "JPY", "low_value"),   # USD 653.33 = AUD 993.07
])
def test_a_declared_value_crosses_the_threshold_after_conversion(amount, currency, expected):
    events = with_value(journey("S6", "O6"), amount, currency)
    tot = run(events).totals["CN-AU"]
    assert tot["cust"] == {f"AU|au-gst-low-value|{expected}|{t}": n for t, n in (
        ("arrival", 1), ("hold", 0), ("inspection", 0), ("rejection", 0), ("seizure", 0))}


def test_the_eu_threshold_in_euros_and_two_orders_summed():
    # DE: eu-ioss, EUR 150. Two orders in one parcel: USD 90 + USD 75 = USD 165 = EUR 151.80
    events = [("orders", order("A", 0, buyer="DE", declared_value={"amount": 90, "currency": "USD"})),
              ("orders", order("B", 1, buyer="DE", declared_value={"amount": 75, "currency": "USD"})),
              ("shipments", ship("S7", "label_created", 2, order_ids=["A", "B"])),
              ("shipments", ship("S7", "arrived_destination", 50)),
              ("customs", customs("S7", "released", 60, country="DE")),
              ("shipments", ship("S7", "delivered", 90))]
    tot = run(events).totals["CN-DE"]
    assert list(tot["clear"]) == ["DE|eu-ioss|formal"]
    # one of the two orders without a declared value: the parcel's value is unknown
    events[1][1].pop("declared_value")
    for kind, ev in events:
        ev["event_id"] += "-b"
        if kind != "orders":
            ev["shipment_id"] = "S8"
    tot = run(events).totals["CN-DE"]
    assert list(tot["clear"]) == ["DE|eu-ioss|unknown"]


def test_the_regime_in_force_is_decided_by_the_arrival_date_in_the_regimes_time_zone():
    table = SlaPolicy.load().regimes
    # 2025-08-29 00:01 in New York is 04:01 UTC; 23:59 on the 28th there is 03:59 UTC on the 29th
    before, after = epoch("2025-08-29T03:59:00+00:00"), epoch("2025-08-29T04:01:00+00:00")
    assert table.classify("US", before, [(50.0, "USD")]) == ("us-de-minimis-800", "low_value")
    assert table.classify("US", after, [(50.0, "USD")]) == ("us-de-minimis-suspended", "formal")
    assert table.classify("US", epoch("2016-03-09T12:00:00+00:00"), [(50.0, "USD")]) == ("none", "unknown")
    assert table.classify("AU", epoch("2018-06-30T13:59:00+00:00"), [(50.0, "USD")]) == ("none", "unknown")
    assert table.classify("AU", epoch("2018-06-30T14:00:00+00:00"), [(50.0, "USD")]) == \
        ("au-gst-low-value", "low_value")      # midnight in Sydney (AEST, UTC+10)
    assert table.classify("FR", epoch("2021-07-01T00:00:00+00:00"), None) == ("eu-ioss", "unknown")
    assert table.classify("GB", epoch("2025-01-01T00:00:00+00:00"), [(5.0, "GBP")]) == ("none", "unknown")
    assert table.classify("AU", epoch("2025-01-01T00:00:00+00:00"), [(5.0, "XXX")]) == \
        ("au-gst-low-value", "unknown")        # a currency without a rate


def test_users_add_regimes_and_rates_from_their_own_file(tmp_path):
    mine = tmp_path / "regimes.toml"
    mine.write_text('[[regime]]\nname = "gb-low-value"\ndestinations = ["GB"]\nsince = 2021-01-01\n'
                    'threshold = 135\ncurrency = "GBP"\n\n[fx]\nGBP = 0.80\n')
    table = RegimeTable.load(mine)
    assert table.names() == ["au-gst-low-value", "eu-ioss", "gb-low-value", "us-de-minimis-800",
                             "us-de-minimis-suspended"]
    # USD 168 = GBP 134.40 at the user's rate (0.80); at the shipped 0.79 it would be 132.72
    assert table.classify("GB", epoch("2025-01-01T00:00:00+00:00"), [(168.0, "USD")]) == \
        ("gb-low-value", "low_value")
    assert table.classify("GB", epoch("2025-01-01T00:00:00+00:00"), [(169.0, "USD")]) == \
        ("gb-low-value", "formal")
    policy = SlaPolicy.load(None, regimes=mine)
    assert "gb-low-value" in policy.regimes.names()


@pytest.mark.parametrize("text, message", [
    ('[[regime]]\nname = "eu-ioss"\ndestinations = ["DE"]\nsince = 2022-01-01\nthreshold = 1\n'
     'currency = "EUR"\n', "defined twice"),
    ('[[regime]]\nname = "x"\ndestinations = ["DE"]\nsince = 2022-01-01\nthreshold = 1\n'
     'currency = "CHF"\n', "CHF has no rate"),
    ('[[regime]]\nname = "x"\ndestinations = ["DE"]\nsince = "2022-01-01"\nthreshold = 1\n'
     'currency = "EUR"\n', "TOML date"),
    ('[[regime]]\nname = "x"\ndestinations = ["Germany"]\nsince = 2022-01-01\nthreshold = 1\n'
     'currency = "EUR"\n', "alpha-2"),
    ('[[regime]]\nname = "x"\ndestinations = ["DE"]\nsince = 2022-01-01\nthreshold = 1\n'
     'currency = "EUR"\ntimezone = "Mars/Olympus"\n', "unknown time zone"),
    ('[fx]\nEUR = 0\n', "positive rate"),
])
def test_a_bad_regime_file_names_its_problem(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(RegimeError, match=message):
        RegimeTable.load(bad)
    with pytest.raises(PolicyError, match=message):
        SlaPolicy.load(None, regimes=bad)


# ---- business days, local dates ----------------------------------------------------------------
AU_BUSINESS = {"AU": {"timezone": "Australia/Sydney", "customs_target_business_days": 3}}


def holiday_parcel(released_local: str):
    """CN-AU, arrived Friday 2025-12-19 10:00 in Sydney; released at `released_local`."""
    events = with_value(journey("H1", "H1-O"), 40, "USD")
    return retime(events, order_placed="2025-12-10T00:00:00+00:00",
                  label_created="2025-12-10T02:00:00+00:00", picked_up="2025-12-11T00:00:00+00:00",
                  departed_origin="2025-12-12T00:00:00+00:00",
                  arrived_destination="2025-12-19T10:00:00+11:00",
                  declaration_lodged="2025-12-19T11:00:00+11:00", released=released_local,
                  delivered="2025-12-30T12:00:00+11:00")


def test_a_parcel_released_on_a_public_holiday():
    # Boxing Day (Friday 26 December) is a public holiday in Australia, Christmas Day too
    assert calendar.is_business_day(dt.date(2025, 12, 26), "AU") is False
    assert calendar.is_business_day(dt.date(2025, 12, 25), "AU") is False
    assert calendar.is_business_day(dt.date(2025, 12, 24), "AU") is True
    tot = run(holiday_parcel("2025-12-26T15:00:00+11:00"), policy_with(**AU_BUSINESS)).totals["CN-AU"]
    base = "AU|au-gst-low-value|low_value"
    # calendar: 7 days 5 h > 5 days: late. Business days after the 19th up to the 26th: Mon 22,
    # Tue 23, Wed 24 (Sat 20, Sun 21, Christmas 25 and Boxing Day 26 do not count) = 3 <= 3
    assert tot["clear"][base][-1] == 7 * DAY + 5 * HOUR
    assert tot["cwt"] == {f"{base}|calendar": 0, f"{base}|business": 1}
    # released on Monday 29th: 4 business days, over the target
    tot = run(holiday_parcel("2025-12-29T09:00:00+11:00"), policy_with(**AU_BUSINESS)).totals["CN-AU"]
    assert tot["cwt"] == {f"{base}|calendar": 0, f"{base}|business": 0}
    # without the destination's configuration: calendar days only (the default)
    tot = run(holiday_parcel("2025-12-26T15:00:00+11:00")).totals["CN-AU"]
    assert tot["cwt"] == {f"{base}|calendar": 0}


def test_business_days_between_counts_by_local_date():
    fri = epoch("2025-12-19T23:30:00+11:00")            # Friday night in Sydney, 12:30 UTC
    assert calendar.business_days_between(fri, epoch("2025-12-22T00:30:00+11:00"), "AU",
                                          "Australia/Sydney") == 1     # Monday
    # the same instants read in UTC: Friday 12:30 to Sunday 13:30: no business day
    assert calendar.business_days_between(fri, epoch("2025-12-22T00:30:00+11:00"), "AU", "UTC") == 0
    # a subdivision's own holiday: the King's Birthday is 9 June 2025 in NSW, 29 September in WA
    assert not calendar.is_business_day(dt.date(2025, 6, 9), "AU", "NSW")
    assert calendar.is_business_day(dt.date(2025, 6, 9), "AU", "WA")


def test_a_target_in_calendar_days_per_destination():
    policy = policy_with(AU={"customs_target_days": 1})
    assert policy.customs_target_seconds("AU") == DAY and policy.customs_target_seconds("US") == 5 * DAY
    tot = run(with_value(journey("S10", "O10", arrived=80.0, released=110.0), 5, "USD"), policy).totals["CN-AU"]
    assert tot["cwt"] == {"AU|au-gst-low-value|low_value|calendar": 0}      # 30 h > 1 day


def test_on_time_by_the_destinations_local_date():
    # promised 2025-03-10T05:00Z = 16:00 in Sydney (AEDT, UTC+11); delivered 12:00Z = 23:00 the
    # same local day: late on the clock, on time by local date
    def parcel(delivered_utc):
        events = journey("L1", "L1-O", promised_h=9 * 24 + 5)
        return retime(events, delivered=delivered_utc)
    assert run(parcel("2025-03-10T12:00:00+00:00")).totals["CN-AU"]["delivered"] == {"standard|false": 1}
    local = policy_with(AU={"timezone": "Australia/Sydney"})
    tot = run(parcel("2025-03-10T12:00:00+00:00"), local).totals["CN-AU"]
    assert tot["delivered"] == {"standard|true": 1} and "late" not in tot
    # 13:30Z is 00:30 on the 11th in Sydney: late by local date too
    assert run(parcel("2025-03-10T13:30:00+00:00"), local).totals["CN-AU"]["delivered"] == {"standard|false": 1}


# ---- on time without customs ---------------------------------------------------------------------
def test_on_time_with_and_without_customs_time():
    # promise h100; arrived h40, released h90 (50 h in customs), delivered h120: 20 h late on the
    # full clock, on time without customs (h70); a second parcel late either way
    a = journey("X1", "X1-O", promised_h=100, arrived=40.0, released=90.0, delivered=120.0)
    b = journey("X2", "X2-O", promised_h=100, arrived=40.0, released=50.0, delivered=120.0)
    tot = run(a + b).totals["CN-AU"]
    assert tot["delivered"] == {"standard|false": 2}
    assert tot["dex"] == {"standard|true": 1, "standard|false": 1}
    # a parcel with no import customs (de minimis, no release scan): the customs stage runs to
    # the delivery, and removing it leaves arrival (h40): on time without customs
    c = journey("X3", "X3-O", promised_h=100, arrived=40.0, released=None, delivered=120.0)
    assert run(c).totals["CN-AU"]["dex"] == {"standard|true": 1}


# ---- parcels waiting in customs ------------------------------------------------------------------
def test_open_parcels_waiting_in_customs_by_age():
    a = with_value(journey("W1", "W1-O", arrived=80.0, released=None, delivered=None), 30, "USD")
    b = with_value(journey("W2", "W2-O", arrived=100.0, released=None, delivered=None), 900, "USD")
    c = journey("W3", "W3-O", arrived=20.0, released=30.0, delivered=None)     # in last_mile
    eng = Engine(SlaPolicy.load())
    for kind, ev in a + b + c:
        eng.feed(kind, ev)
    g = eng.gauges(now=T0_EPOCH + 110 * HOUR)
    # now = h110: W1 waits 30 h (1-2d), W2 10 h (0-1d), W2's USD 900 = AUD 1,368: formal
    assert dict(g.customs_waiting) == {("CN-AU", "AU", "au-gst-low-value", "low_value", "1-2d"): 1,
                                       ("CN-AU", "AU", "au-gst-low-value", "formal", "0-1d"): 1}
    g = eng.gauges(now=T0_EPOCH + 339 * HOUR)     # W1 259 h (10.8 days), W2 239 h (9.96 days)
    assert dict(g.customs_waiting) == {("CN-AU", "AU", "au-gst-low-value", "low_value", "10d+"): 1,
                                       ("CN-AU", "AU", "au-gst-low-value", "formal", "5-10d"): 1}


# ---- the policy's customs sections ---------------------------------------------------------------
@pytest.mark.parametrize("section, message", [
    ({"customs": {"target_days": 0}}, "positive number of days"),
    ({"customs": {"target": 5}}, "unknown key"),
    ({"destination": {"AU": {"customs_target_business_days": 3}}}, "need the destination's timezone"),
    ({"destination": {"AU": {"timezone": "Australia/Perth", "weekend": ["saturday"]}}}, "weekend"),
    ({"destination": {"AU": {"timezone": "Nowhere/Land"}}}, "unknown time zone"),
    ({"destination": {"Australia": {}}}, "alpha-2"),
    ({"destination": {"XX": {"timezone": "UTC", "customs_target_business_days": 2}}},
     "no calendar"),
])
def test_a_bad_customs_policy_names_its_problem(section, message):
    with pytest.raises(PolicyError, match=message):
        SlaPolicy.from_dict({**SHIPPED, **section})


def test_the_shipped_policy_targets_five_calendar_days_everywhere():
    policy = SlaPolicy.load()
    assert policy.customs_target == 5 * DAY and policy.destinations == {}


# ---- the report's columns, and the same series as the worker's ----------------------------------
def test_the_report_gains_the_customs_columns_and_exports_the_workers_series():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from streams.tools import report
    from streams.worker.metrics import CorridorCollector, RegimeCollector
    # the parcel held twice (40 h, low value) and a formal one (USD 900) cleared in 6 days
    slow = with_value(journey("F1", "F1-O", arrived=80.0, released=80.0 + 144, delivered=300.0), 900, "USD")
    waiting = with_value(journey("F2", "F2-O", arrived=200.0, released=None, delivered=None), 10, "USD")
    policy = SlaPolicy.load()
    rep = report.compute(held_twice() + slow + waiting, policy)
    c = report.corridor_figures(rep)["CN-AU"]["customs"]
    assert (c["arrivals"], c["cleared"], c["cleared_within_target"]) == (2, 2, 1)
    assert c["cleared_within_target_share"] == 0.5
    # 2 holds and 2 inspections over 2 arrivals: 1,000 per 1,000 each
    assert c["per_1000_arrivals"] == {"hold": 1000.0, "inspection": 1000.0, "rejection": 0.0,
                                      "seizure": 0.0}
    # exact quantiles of 40 h and 144 h (linear): p50 92 h, p90 133.6 h
    assert c["clearance_seconds"] == pytest.approx({"p50": 92 * HOUR, "p90": 133.6 * HOUR,
                                                    "p95": 138.8 * HOUR})
    assert c["waiting"] == 1 and c["on_time_rate_excluding_customs"] == 1.0
    low = c["by_regime"]["AU|au-gst-low-value|low_value"]
    assert (low["arrivals"], low["cleared"], low["cleared_within_target_share"]) == (1, 1, 1.0)
    assert low["waiting"] == {"2-5d": 1}     # F2 arrived at h200, now h300 (the latest event)
    formal = c["by_regime"]["AU|au-gst-low-value|formal"]
    assert formal["cleared_within_target_share"] == 0.0 and formal["events"]["hold"] == 0
    table = report.customs_table(rep)
    assert list(table["regime"]) == ["au-gst-low-value"] * 2
    assert list(table["value_class"]) == ["formal", "low_value"]
    assert "Customs by import regime" in report.render(rep, "table")

    # the worker's families over the same totals, summed over the partition: the same samples
    registry = CollectorRegistry(auto_describe=False)
    totals = {(corr, "0"): tot for corr, tot in rep.engine.totals.items()}
    registry.register(CorridorCollector(lambda: (totals, rep.gauges, rep.now)))
    registry.register(RegimeCollector(policy.regimes))
    worker = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if "customs" in s.name or "regime" in s.name:
                labels = {k: v for k, v in s.labels.items() if k != "partition"}
                worker[(s.name, frozenset(labels.items()))] = s.value
    batch = {(m["name"], frozenset(m["labels"].items())): m["value"] for m in report.metric_samples(rep)
             if "customs" in m["name"] or "regime" in m["name"]}
    # per (regime, value class) 11 clearance + 1 within + 1 arrivals + 4 events, twice; one
    # delivered-excluding-customs series (both on time without customs), F2 waiting, 4 regimes
    # (no business-day promise is configured: no such series)
    assert worker == batch and len(batch) == 2 * (11 + 1 + 1 + 4) + 1 + 1 + 4


def test_a_promise_in_business_days_is_counted_beside_the_calendar_one():
    # AU, Sydney: placed Friday 19 December 2025 10:00; 5 business days: Mon 22, Tue 23, Wed 24,
    # (Christmas, Boxing Day, the weekend), Mon 29, Tue 30: due on 30 December. The calendar
    # promise of CN-AU standard is 288 h = 12 days: 31 December 10:00 (local date 31 December).
    assert calendar.nth_business_day(epoch("2025-12-19T10:00:00+11:00"), 5, "AU",
                                     "Australia/Sydney") == dt.date(2025, 12, 30)
    policy = policy_with(AU={"timezone": "Australia/Sydney",
                             "promise_business_days": {"standard": 5}})

    def parcel(sid, delivered):
        events = journey(sid, f"{sid}-O")
        return retime(events, order_placed="2025-12-19T10:00:00+11:00",
                      label_created="2025-12-19T11:00:00+11:00", picked_up="2025-12-20T00:00:00+11:00",
                      departed_origin="2025-12-21T00:00:00+11:00",
                      arrived_destination="2025-12-23T00:00:00+11:00",
                      declaration_lodged="2025-12-23T01:00:00+11:00",
                      released="2025-12-23T09:00:00+11:00", delivered=delivered)
    events = (parcel("B1", "2025-12-30T18:00:00+11:00")       # on time both ways
              + parcel("B2", "2025-12-31T09:00:00+11:00"))     # calendar on time, business late
    tot = run(events, policy).totals["CN-AU"]
    assert tot["delivered"] == {"standard|true": 2}
    assert tot["dbd"] == {"standard|true": 1, "standard|false": 1}
    # not configured for the level, or not at all: no business-day figure
    express = policy_with(AU={"timezone": "Australia/Sydney", "promise_business_days": {"express": 2}})
    assert "dbd" not in run(parcel("B3", "2025-12-30T18:00:00+11:00"), express).totals["CN-AU"]
    assert "dbd" not in run(parcel("B4", "2025-12-30T18:00:00+11:00")).totals["CN-AU"]
    with pytest.raises(PolicyError, match="promise_business_days"):
        policy_with(AU={"timezone": "Australia/Sydney", "promise_business_days": {"standard": 0}})
    with pytest.raises(PolicyError, match="timezone"):
        policy_with(AU={"promise_business_days": {"standard": 5}})


# ---- stage targets in business days -------------------------------------------------------------
AU_STAGES = {"AU": {"timezone": "Australia/Sydney", "customs_target_business_days": 2,
                    "stage_target_business_days": {"customs": 1, "last_mile": 2}}}


def stage_parcel(sid, arrived, released, delivered):
    """CN-AU standard, placed Wednesday 10 December 2025; the rest at Sydney local times."""
    events = with_value(journey(sid, f"{sid}-O"), 40, "USD")
    return retime(events, order_placed="2025-12-10T00:00:00+00:00",
                  label_created="2025-12-10T02:00:00+00:00", picked_up="2025-12-11T00:00:00+00:00",
                  departed_origin="2025-12-12T00:00:00+00:00", arrived_destination=arrived,
                  declaration_lodged=arrived, released=released, delivered=delivered)


def test_a_stage_target_in_business_days_is_a_due_date_on_the_destinations_calendar():
    # The 1st business day after Wednesday 24 December 2025 in NSW: Christmas (Thu 25), Boxing Day
    # (Fri 26) and the weekend (27, 28) do not count: Monday 29 December.
    assert calendar.nth_business_day(epoch("2025-12-24T10:00:00+11:00"), 1, "AU",
                                     "Australia/Sydney") == dt.date(2025, 12, 29)
    policy = policy_with(**AU_STAGES)
    # S1: customs from Wed 24 Dec 10:00 to Mon 29 Dec 16:00: 5 days 6 h, over the calendar stage
    # target (standard customs 48 h) and the 5-day clearance target, but released on its due
    # date: within 1 business day. Last mile from Mon 29 16:00 to Wed 31 Dec 12:00: the 2nd
    # business day after the 29th is Wed 31: within.
    s1 = stage_parcel("S1", "2025-12-24T10:00:00+11:00", "2025-12-29T16:00:00+11:00",
                      "2025-12-31T12:00:00+11:00")
    # S2: customs from Wed 24 Dec 10:00 to Tue 30 Dec 09:00: 5 days 23 h, over the calendar target
    # and a day after the business-day due date (Mon 29): over both ways. Last mile from Tue 30
    # to Fri 2 January 2026 10:00: Wed 31 (1st), New Year's Day a holiday, Fri 2 (2nd): within.
    s2 = stage_parcel("S2", "2025-12-24T10:00:00+11:00", "2025-12-30T09:00:00+11:00",
                      "2026-01-02T10:00:00+11:00")
    eng = Engine(policy)
    for kind, ev in s1 + s2:
        eng.feed(kind, ev)
    tot = eng.finish().totals["CN-AU"]
    dwell = {sid: {s: sec for s, _start, sec in timeline.stage_durations(eng.shipments[sid])}
             for sid in ("S1", "S2")}
    assert dwell["S1"]["customs"] == 5 * DAY + 6 * HOUR and dwell["S2"]["customs"] == 5 * DAY + 23 * HOUR
    assert policy.stage_target("CN-AU", "customs", "standard") == 48 * HOUR     # over, both
    assert tot["sbd"] == {"customs|true": 1, "customs|false": 1, "last_mile|true": 2}
    # the stages without a business-day target (fulfilment, origin, linehaul) count nothing here;
    # the calendar figures are unchanged: both cleared over 5 days, both late on the calendar
    # promise (CN-AU standard, 288 h from 10 December 00:00 UTC: 22 December)
    base = "AU|au-gst-low-value|low_value"
    assert tot["cwt"][f"{base}|calendar"] == 0
    assert tot["delivered"] == {"standard|false": 2}
    # the same history without the destination's configuration: no business-day stage figure
    assert "sbd" not in run(stage_parcel("S3", "2025-12-24T10:00:00+11:00",
                                         "2025-12-29T16:00:00+11:00",
                                         "2025-12-31T12:00:00+11:00")).totals["CN-AU"]


def test_a_stage_target_and_the_clearance_target_differ_on_a_release_on_a_holiday():
    # Arrived Monday 22 December 10:00, released Friday 26 (Boxing Day) 11:00. Clearance target,
    # 2 business days elapsed: 23 and 24 (Christmas and Boxing Day do not count) = 2: within. The
    # customs stage target is a due date like the promise's: 1 business day after the 22nd is the
    # 23rd, and the 26th is after it: over.
    tot = run(stage_parcel("S4", "2025-12-22T10:00:00+11:00", "2025-12-26T11:00:00+11:00",
                           "2025-12-29T12:00:00+11:00"), policy_with(**AU_STAGES)).totals["CN-AU"]
    assert tot["cwt"]["AU|au-gst-low-value|low_value|business"] == 1
    # last mile Fri 26 (a holiday) to Mon 29: the 2nd business day after the 26th is Tue 30: within
    assert tot["sbd"] == {"customs|false": 1, "last_mile|true": 1}


def test_every_stage_counts_by_the_destinations_local_dates():
    # fulfilment, in the seller's country, counted on AU's calendar too: placed Friday 19 December
    # 2025 23:30 UTC = Saturday 20 December 10:30 in Sydney; picked up Monday 22 December 08:00
    # UTC = 19:00 in Sydney. 1 business day after Saturday the 20th is Monday the 22nd: within.
    # F2, picked up 22 December 14:00 UTC, is on Tuesday the 23rd in Sydney: over (by UTC dates,
    # the 22nd, it would have been within).
    policy = policy_with(AU={"timezone": "Australia/Sydney",
                             "stage_target_business_days": {"fulfilment": 1}})

    def parcel(sid, picked):
        events = journey(sid, f"{sid}-O")
        return retime(events, order_placed="2025-12-19T23:30:00+00:00",
                      label_created="2025-12-20T00:00:00+00:00", picked_up=picked,
                      departed_origin="2025-12-24T00:00:00+00:00",
                      arrived_destination="2025-12-26T00:00:00+00:00",
                      declaration_lodged="2025-12-26T01:00:00+00:00",
                      released="2025-12-27T00:00:00+00:00", delivered="2025-12-30T00:00:00+00:00")
    tot = run(parcel("F1", "2025-12-22T08:00:00+00:00")
              + parcel("F2", "2025-12-22T14:00:00+00:00"), policy).totals["CN-AU"]
    assert tot["sbd"] == {"fulfilment|true": 1, "fulfilment|false": 1}


@pytest.mark.parametrize("stages, message", [
    ({"customs": 0}, "stage_target_business_days must map stages"),
    ({"customs": 1.5}, "stage_target_business_days must map stages"),
    ({"customs": True}, "stage_target_business_days must map stages"),
    ({"clearance": 2}, "stage_target_business_days must map stages"),
    ([2], "stage_target_business_days must map stages"),
])
def test_a_bad_stage_target_in_business_days_names_its_problem(stages, message):
    with pytest.raises(PolicyError, match=message):
        policy_with(AU={"timezone": "Australia/Sydney", "stage_target_business_days": stages})


def test_a_stage_target_in_business_days_needs_a_timezone_and_a_calendar():
    with pytest.raises(PolicyError, match="need the destination's timezone"):
        policy_with(AU={"stage_target_business_days": {"customs": 2}})
    with pytest.raises(PolicyError, match="no calendar"):
        policy_with(XX={"timezone": "UTC", "stage_target_business_days": {"customs": 2}})
    dest = policy_with(**AU_STAGES).destination("AU")
    assert dest.stage_target_business_days == {"customs": 1, "last_mile": 2}


def test_the_report_and_the_worker_export_the_stage_business_day_figures_alike():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from streams.tools import report
    from streams.worker.metrics import CorridorCollector
    policy = policy_with(**AU_STAGES)
    events = (stage_parcel("S1", "2025-12-24T10:00:00+11:00", "2025-12-29T16:00:00+11:00",
                           "2025-12-31T12:00:00+11:00")
              + stage_parcel("S2", "2025-12-24T10:00:00+11:00", "2025-12-30T09:00:00+11:00",
                             "2026-01-02T10:00:00+11:00"))
    rep = report.compute(events, policy)
    stages = report.corridor_figures(rep)["CN-AU"]["stages"]
    assert stages["customs"]["business_days"] == {"within": 1, "over": 1}
    assert stages["last_mile"]["business_days"] == {"within": 2, "over": 0}
    assert "business_days" not in stages["linehaul"]       # no target: the JSON is as before
    table = report.stage_table(rep).set_index("stage")
    assert table.loc["customs", "within_target_bd"] == 1 and table.loc["customs", "over_target_bd"] == 1
    assert table["within_target_bd"].isna()[["fulfilment", "origin", "linehaul"]].all()
    text = report.render(rep, "table", table="stages")
    assert "within_target_bd" in text and "<NA>" not in text
    assert "<NA>" not in report.render(rep, "markdown", table="stages")
    # without the configuration the human tables have no such columns (csv keeps them, blank)
    plain = report.compute(events, SlaPolicy.load())
    header = report.render(plain, "table", table="stages").splitlines()[3]
    assert header.split()[:2] == ["corridor", "stage"] and "within_target_bd" not in header
    assert "within_target_bd,over_target_bd" in report.render(plain, "csv", table="stages")

    registry = CollectorRegistry(auto_describe=False)
    totals = {(corr, "0"): tot for corr, tot in rep.engine.totals.items()}
    registry.register(CorridorCollector(lambda: (totals, rep.gauges, rep.now)))
    name = "corridor_stage_within_target_business_days_total"
    worker = {frozenset((k, v) for k, v in s.labels.items() if k != "partition"): s.value
              for fam in text_string_to_metric_families(generate_latest(registry).decode())
              for s in fam.samples if s.name == name}
    batch = {frozenset(m["labels"].items()): m["value"] for m in report.metric_samples(rep)
             if m["name"] == name}
    assert worker == batch == {
        frozenset({"corridor": "CN-AU", "stage": "customs", "within": "true"}.items()): 1,
        frozenset({"corridor": "CN-AU", "stage": "customs", "within": "false"}.items()): 1,
        frozenset({"corridor": "CN-AU", "stage": "last_mile", "within": "true"}.items()): 2}
