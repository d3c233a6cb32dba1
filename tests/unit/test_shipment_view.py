"""`corridor shipment`'s terminal view: exact lines of render() on describe() documents built with the
Engine over builders.journey (the same histories as tests/e2e/test_pipeline.py), at now = h140."""
import pytest

from builders import HOUR, T0_EPOCH, journey, ship
from streams.domain import timeline
from streams.domain.engine import Engine
from streams.domain.policy import SlaPolicy
from streams.tools.shipment_view import render, span, when

NOW = T0_EPOCH + 140 * HOUR


@pytest.fixture(scope="module")
def views():
    policy = SlaPolicy.load()
    engine = Engine(policy)
    history = (journey("S1", "O1", promised_h=200, hold=True)
               + journey("S3", "O3", seller="CN", buyer="US", sl="economy", end="returned")
               + journey("S4", "O4", promised_h=150, released=None, delivered=None)
               + journey("S5", "O5", seller="US", buyer="MX", sl="express", arrived=None,
                         released=None, delivered=None)
               + [("shipments", ship("S9", "picked_up", 5, origin_country="CN", destination_country="AU",
                                     carrier="MAEU", tracking_number="T-9",
                                     location={"facility": "CNSHA", "country": "CN"}))])
    for kind, event in history:
        engine.feed(kind, event)
    engine.finish()                 # the figures are final: a scan that comes now is late
    engine.feed("shipments", ship("S3", "out_for_delivery", 140))
    return {sid: timeline.describe(state, NOW, policy) for sid, state in engine.shipments.items()}


def test_a_delivered_shipment(views):
    assert render(views["S1"]).splitlines() == [
        "Shipment S1  (times in UTC)",
        "  corridor       CN-AU",
        "  service level  standard",
        "  status         delivered",
        "  SLA            on time (delivered 2d 22h before the promise)",
        "  promised       2025-03-09 08:00",
        "  now            2025-03-06 20:00 (the stream's event time)",
        "  orders         O1",
        "",
        "  stage       started           duration  target  beyond target",
        "  fulfilment  2025-03-01 00:00  10h       2d      -",
        "  origin      2025-03-01 10:00  20h       2d      -",
        "  linehaul    2025-03-02 06:00  2d 02h    4d      -",
        "  customs     2025-03-04 08:00  20h       2d      -",
        "  last_mile   2025-03-05 04:00  1d 06h    3d      -",
        "",
        "  time              source     event                info",
        "  2025-03-01 00:00  orders     order_placed         O1",
        "  2025-03-01 01:00  shipments  label_created",
        "  2025-03-01 10:00  shipments  picked_up",
        "  2025-03-02 06:00  shipments  departed_origin",
        "  2025-03-04 08:00  shipments  arrived_destination",
        "  2025-03-04 10:00  customs    held_for_inspection  import AU D-S1-import",
        "  2025-03-05 04:00  customs    released             import AU D-S1-import",
        "  2025-03-06 10:00  shipments  delivered",
        "",
        "Now: delivered at 2025-03-06 10:00, 5d 10h after the order was placed.",
    ]


def test_an_open_shipment_marks_its_current_stage_and_time_beyond_target(views):
    assert render(views["S4"]).splitlines() == [
        "Shipment S4  (times in UTC)",
        "  corridor       CN-AU",
        "  service level  standard",
        "  status         open",
        "  SLA            on track (10h left)",
        "  promised       2025-03-07 06:00",
        "  now            2025-03-06 20:00 (the stream's event time)",
        "  orders         O4",
        "",
        "  stage       started           duration       target  beyond target",
        "  fulfilment  2025-03-01 00:00  10h            2d      -",
        "  origin      2025-03-01 10:00  20h            2d      -",
        "  linehaul    2025-03-02 06:00  2d 02h         4d      -",
        "> customs     2025-03-04 08:00  2d 12h so far  2d      12h",
        "",
        "  time              source     event                info",
        "  2025-03-01 00:00  orders     order_placed         O4",
        "  2025-03-01 01:00  shipments  label_created",
        "  2025-03-01 10:00  shipments  picked_up",
        "  2025-03-02 06:00  shipments  departed_origin",
        "  2025-03-04 08:00  shipments  arrived_destination",
        "  2025-03-04 09:00  customs    declaration_lodged   import AU D-S4-import",
        "",
        "Now: in customs since 2025-03-04 08:00, 2d 12h so far, 12h beyond its 2d target.",
    ]


def test_an_overdue_shipment(views):
    lines = render(views["S5"]).splitlines()
    assert lines[4] == "  SLA            OVERDUE by 2d 20h"
    assert "> linehaul    2025-03-02 06:00  4d 14h so far  2d      2d 14h" in lines
    assert lines[-1] == "Now: in linehaul since 2025-03-02 06:00, 4d 14h so far, 2d 14h beyond its 2d target."


def test_a_returned_shipment_with_a_late_event(views):
    lines = render(views["S3"]).splitlines()
    assert lines[3:5] == ["  status         returned", "  SLA            none (returned)"]
    assert "  2025-03-06 20:00  shipments  out_for_delivery" in lines
    assert lines[-2:] == [
        "Now: returned at 2025-03-06 10:00.",
        "1 event arrived after the shipment had ended (kept in the list, not in the figures).",
    ]


def test_a_shipment_whose_order_is_not_joined_yet(views):
    assert render(views["S9"]).splitlines() == [
        "Shipment S9  (times in UTC)",
        "  corridor       CN-AU",
        "  service level  unknown",
        "  status         open",
        "  SLA            unknown (no order joined yet, so no promise)",
        "  promised       -",
        "  now            2025-03-06 20:00 (the stream's event time)",
        "  orders         -",
        "  carrier        MAEU",
        "  tracking       T-9",
        "",
        "  stage   started           duration       target  beyond target",
        "> origin  2025-03-01 05:00  5d 15h so far  2d      3d 15h",
        "",
        "  time              source     event      info",
        "  2025-03-01 05:00  shipments  picked_up  CNSHA CN",
        "",
        "Now: in origin since 2025-03-01 05:00, 5d 15h so far, 3d 15h beyond its 2d target.",
    ]


def test_a_minimal_document_renders_without_stages_or_events():
    lines = render({"shipment_id": "X", "status": "open", "stage": None, "now": "2025-03-01T00:00:00Z"})
    assert lines.splitlines()[-5:] == ["  (no stage reached yet)", "", "  (no events)", "", "Now: open."]


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (45.9, "45s"), (60, "1m"), (30 * 60, "30m"), (5400, "1h 30m"), (10 * HOUR, "10h"),
    (48 * HOUR, "2d"), (60 * HOUR, "2d 12h"), (48 * HOUR + 300, "2d 00h 05m"), (None, "-"),
])
def test_span(seconds, text):
    assert span(seconds) == text


def test_when_keeps_what_it_cannot_read():
    assert when("2025-03-01T10:00:59.5Z") == "2025-03-01 10:00"
    assert when("yesterday") == "yesterday"
    assert when(None) == "-"
