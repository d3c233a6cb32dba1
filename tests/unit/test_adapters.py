"""The adapters on the standards bodies' own example documents and on the real Olist export.

The examples live in ../shared/data (read, never edited). What the semantics use must survive the
conversion exactly: ids, event types, instants and their UTC offsets, countries. Every event an
adapter produces must pass the worker's Decoder; malformed input is a reject with a clear reason.
"""
from builders import shared_data
import copy
import json
from collections import Counter
import tomllib
from pathlib import Path

import orjson
import pytest

from streams.feeds import csv_orders, dcsa, epcis, reason_code, sources
from streams.contract.codec import Decoder, Rejected, accepted_countries, parse_time

DATA = shared_data()
DCSA = DATA / "standards" / "dcsa"
EPCIS = DATA / "standards" / "epcis"
OLIST = DATA / "olist-10k"
OLIST_MAPPING = Path(__file__).resolve().parents[2] / "streams" / "feeds" / "mappings" / "olist.toml"
# The csv-orders cases use Brazilian state codes as countries, declared by the Olist mapping.
STATES = tomllib.loads(OLIST_MAPPING.read_text())["region_codes"]
DECODERS = {kind: Decoder(kind, countries=accepted_countries(STATES))
            for kind in ("orders", "shipments", "customs")}



def decodes(converted):
    """Every event passes the worker's Decoder, keyed as replay keys it; returns the events."""
    for kind, event in converted.events:
        key = event["order_id"] if kind == "orders" else event["shipment_id"]
        assert DECODERS[kind].decode(key.encode(), orjson.dumps(event)) == event
    return converted.events


def codes(converted):
    return [(where, reason_code(reason)) for where, reason in converted.rejects]


def raw(path):
    return path.read_bytes()


# ---- DCSA --------------------------------------------------------------------------------------
def test_dcsa_v22_response_converts_the_actual_transport_events():
    result = dcsa.convert(raw(DCSA / "tnt-220-response.json"))
    assert decodes(result) == [
        ("shipments", {"event_id": "3cecb101-7a1a-43a4-9d62-e88a131651e2", "shipment_id": "ABC123123123",
                       "event_type": "arrived_destination", "occurred_at": "2021-01-09T14:12:56+01:00",
                       "destination_country": "FR", "carrier": "MAEU",
                       "location": {"country": "FR", "facility": "FRPAR"}}),
        ("shipments", {"event_id": "3cecb101-7a1a-43a4-9d62-e88a131651e5", "shipment_id": "ABC123123123",
                       "event_type": "arrived_destination", "occurred_at": "2021-01-09T14:12:56+01:00",
                       "destination_country": "FR", "carrier": "MAEU",
                       "location": {"country": "FR", "facility": "FRPAR"}})]
    assert codes(result) == [
        ("3cecb101-7a1a-43a4-9d62-e88a131651e3", "no_equivalent"),   # SHIPMENT DRFT: document workflow
        ("3cecb101-7a1a-43a4-9d62-e88a131651e4", "not_actual"),      # EQUIPMENT LOAD, classifier EST
        ("3cecb101-7a1a-43a4-9d62-e88a131651e6", "no_equivalent"),
        ("3cecb101-7a1a-43a4-9d62-e88a131651e7", "not_actual"),
        ("3cecb101-7a1a-43a4-9d62-e88a131651e8", "no_equivalent")]
    assert "classified EST" in dict(result.rejects)["3cecb101-7a1a-43a4-9d62-e88a131651e4"]


def test_dcsa_v3_examples_keep_ids_times_and_port_countries():
    transport = dcsa.convert(raw(DCSA / "tnt-300-request-transport.json"))
    assert decodes(transport) == [("shipments", {
        "event_id": "evt-trans-001-2026-01-20T12:30:00Z", "shipment_id": "ABC709951",
        "event_type": "arrived_destination", "occurred_at": "2026-01-20T12:30:00Z",
        "destination_country": "DE", "carrier": "EXCO", "location": {"country": "DE", "facility": "DEHAM"}})]
    response = dcsa.convert(raw(DCSA / "tnt-300-response.json"))
    assert decodes(response) == [("shipments", {
        "event_id": "evt-resp-trans-001", "shipment_id": "ABC709951", "event_type": "departed_origin",
        "occurred_at": "2026-01-16T11:30:00Z", "origin_country": "GB", "carrier": "EXCO",
        "location": {"country": "GB", "facility": "GBSOU"}})]
    assert codes(response) == [("evt-resp-ship-001", "no_equivalent"),    # CONF without a PO reference
                               ("evt-resp-equip-001", "no_equivalent"),   # GTIN of an EMPTY container
                               ("evt-resp-iot-001", "no_equivalent"),
                               ("evt-resp-reefer-001", "no_equivalent")]
    # A v3 equipment event without shipmentDetails names no booking: nothing to attach it to.
    equipment = dcsa.convert(raw(DCSA / "tnt-300-request-equipment.json"))
    assert equipment.events == []
    assert codes(equipment) == [("evt-equip-001-2026-01-20T14:15:00Z", "no_shipment_id")]
    assert codes(dcsa.convert(raw(DCSA / "tnt-300-request-shipment.json"))) == [("evt-ship-001", "no_equivalent")]


def test_dcsa_destination_decides_arrival_versus_transshipment():
    doc = raw(DCSA / "tnt-300-request-transport.json")               # ARRI at DEHAM
    at_destination = dcsa.convert(doc, destinations={"ABC709951": "DE"})
    assert [e["event_type"] for _, e in decodes(at_destination)] == ["arrived_destination"]
    elsewhere = dcsa.convert(doc, default_destination="AU")
    assert elsewhere.events == []
    assert codes(elsewhere) == [("evt-trans-001-2026-01-20T12:30:00Z", "no_equivalent")]
    assert "destination is AU" in elsewhere.rejects[0][1]
    departed = dcsa.convert(raw(DCSA / "tnt-300-response.json"), default_destination="AU")
    assert [(e["event_type"], e["origin_country"], e["destination_country"])
            for _, e in decodes(departed)] == [("departed_origin", "GB", "AU")]


def _equipment_event(code, phase, empty="LADEN"):
    """The v3 equipment example with the booking of the transport example and another code/phase."""
    ev = copy.deepcopy(json.loads(raw(DCSA / "tnt-300-request-equipment.json"))["events"][0])
    ev["shipmentDetails"] = json.loads(raw(DCSA / "tnt-300-request-transport.json"))["events"][0]["shipmentDetails"]
    ev["eventClassification"]["equipmentEventTypeCode"] = code
    ev["equipmentDetails"].update(movementType=phase, emptyIndicatorCode=empty)
    return ev


@pytest.mark.parametrize("code, phase, kind, etype", [
    ("LOAD", "EXPORT", "shipments", "departed_origin"),
    ("GTIN", "EXPORT", "shipments", "picked_up"),
    ("PICK", "EXPORT", "shipments", "picked_up"),
    ("DISC", "IMPORT", "shipments", "arrived_destination"),
    ("GTOT", "IMPORT", "shipments", "out_for_delivery"),
    ("DROP", "IMPORT", "shipments", "delivered"),
    ("CUSI", "IMPORT", "customs", "held_for_inspection"),
    ("CUSS", "IMPORT", "customs", "held_for_inspection"),
    ("CUSR", "IMPORT", "customs", "released"),
    ("CUSR", "EXPORT", "customs", "released"),
])
def test_dcsa_equipment_codes_map_by_side(code, phase, kind, etype):
    result = dcsa.convert({"events": [_equipment_event(code, phase)]})
    [(got_kind, ev)] = decodes(result)
    assert (got_kind, ev["event_type"], ev["shipment_id"], ev["occurred_at"]) == \
        (kind, etype, "ABC709951", "2026-01-20T14:15:00Z")
    if kind == "customs":
        assert (ev["direction"], ev["country"], ev["declaration_id"]) == \
            (phase.lower(), "NL", f"ABC709951/{phase.lower()}/NL")
    else:
        assert ev["location"] == {"country": "NL", "facility": "NLRTM"}


@pytest.mark.parametrize("code, phase, empty", [
    ("LOAD", "IMPORT", "LADEN"),         # loading at destination: not this shipment's milestone
    ("DISC", "EXPORT", "LADEN"),
    ("GTOT", "EXPORT", "LADEN"),
    ("STUF", "EXPORT", "LADEN"),
    ("LOAD", "TRANSSHIPMENT", "LADEN"),
    ("LOAD", "EXPORT", "EMPTY"),
])
def test_dcsa_other_sides_and_codes_have_no_equivalent(code, phase, empty):
    result = dcsa.convert({"events": [_equipment_event(code, phase, empty)]})
    assert result.events == [] and codes(result) == [("evt-equip-001-2026-01-20T14:15:00Z", "no_equivalent")]


def test_dcsa_v3_spelled_out_codes_and_booking_confirmation_with_orders():
    ev = json.loads(raw(DCSA / "tnt-300-request-transport.json"))["events"][0]
    ev["eventClassification"] = {"eventType": "TRANSPORT", "eventClassifier": "ACTUAL",
                                 "transportEventType": "DEPARTED"}
    ev["shipmentDetails"] = {"documentReference": {"type": "BOOKING", "reference": "ABC709951"}}
    [(_, out)] = decodes(dcsa.convert([ev]))
    assert (out["event_type"], out["shipment_id"], out["origin_country"]) == ("departed_origin", "ABC709951", "DE")
    conf = json.loads(raw(DCSA / "tnt-220-response.json"))[4]          # SHIPMENT DRFT of booking ABC123123123
    conf["shipmentEventTypeCode"] = "CONF"
    conf["references"].append({"referenceType": "PO", "referenceValue": "PO-778"})
    [(_, label)] = decodes(dcsa.convert([conf]))
    assert label == {"event_id": "3cecb101-7a1a-43a4-9d62-e88a131651e6", "shipment_id": "ABC123123123",
                     "event_type": "label_created", "occurred_at": "2019-11-12T07:41:00+08:30",
                     "order_ids": ["PO-778"]}


def _edited(ev: dict, changes: dict) -> dict:
    """`ev` with each changed key set, or removed where the change is None."""
    for key, value in changes.items():
        if value is None:
            ev.pop(key)
        else:
            ev[key] = value
    return ev


def _v22_event(**changes):
    return _edited(json.loads(raw(DCSA / "tnt-220-response.json"))[0], changes)


@pytest.mark.parametrize("doc, where, code, words", [
    ([_v22_event(eventDateTime=None)], "3cecb101-7a1a-43a4-9d62-e88a131651e2", "missing_field",
     "eventDateTime is missing"),
    ([_v22_event(eventDateTime="2021-01-09T14:12:56")], "3cecb101-7a1a-43a4-9d62-e88a131651e2",
     "bad_timestamp", "has no UTC offset"),
    ([_v22_event(eventType="PARCEL")], "3cecb101-7a1a-43a4-9d62-e88a131651e2", "unknown_event_type",
     "eventType 'PARCEL'"),
    ([_v22_event(transportEventTypeCode="XXXX")], "3cecb101-7a1a-43a4-9d62-e88a131651e2",
     "unknown_event_type", "'XXXX'"),
    ([_v22_event(eventID=None)], "#0", "missing_field", "eventID"),
    ([_v22_event(documentReferences=[])], "3cecb101-7a1a-43a4-9d62-e88a131651e2", "no_shipment_id", "BKG"),
    ([42], "#0", "bad_document", "not a JSON object"),
    (b'{"events": [', "document", "not_json", "not a JSON document"),
    ('"just a string"', "document", "bad_document", "expected a list"),
])
def test_dcsa_malformed_input_is_rejected_with_a_reason(doc, where, code, words):
    result = dcsa.convert(doc)
    assert result.events == []
    [(got_where, reason)] = result.rejects
    assert (got_where, reason_code(reason)) == (where, code)
    assert words in reason and "\n" not in reason


# ---- EPCIS -------------------------------------------------------------------------------------
SHIP_ID = "ni:///sha-256;df7bb3c352fef055578554f09f5e2aa41782150ced7bd0b8af24dd3ccb30ba69?ver=CBV2.0"
RECV_ID = "ni:///sha-256;00e1e6eba3a7cc6125be4793a631f0af50f8322e0ab5f2c0bab994a11cec1d79?ver=CBV2.0"
PO = "http://transaction.acme.com/po/12345678"


def test_epcis_object_events_become_one_shipment_event_per_epc():
    result = epcis.convert(raw(EPCIS / "Example_9.6.1-ObjectEvent.jsonld"))
    assert decodes(result) == [
        ("shipments", {"event_id": SHIP_ID, "shipment_id": "urn:epc:id:sgtin:0614141.107346.2017",
                       "event_type": "picked_up", "occurred_at": "2005-04-03T20:33:31.116000-06:00",
                       "order_ids": [PO], "location": {"facility": "urn:epc:id:sgln:0614141.07346.1234"}}),
        ("shipments", {"event_id": SHIP_ID, "shipment_id": "urn:epc:id:sgtin:0614141.107346.2018",
                       "event_type": "picked_up", "occurred_at": "2005-04-03T20:33:31.116000-06:00",
                       "order_ids": [PO], "location": {"facility": "urn:epc:id:sgln:0614141.07346.1234"}}),
        ("shipments", {"event_id": RECV_ID, "shipment_id": "urn:epc:id:sgtin:0614141.107346.2018",
                       "event_type": "delivered", "occurred_at": "2005-04-04T20:33:31.116-06:00",
                       "order_ids": [PO], "location": {"facility": "urn:epc:id:sgln:0012345.11111.0"}})]
    assert result.rejects == []


def test_epcis_shipment_from_a_business_transaction_and_locations_from_the_mapping():
    doc = raw(EPCIS / "Example_9.6.1-ObjectEvent.jsonld")
    result = epcis.convert(doc, shipment_key="desadv",
                           locations={"urn:epc:id:sgln:0012345.11111.0": "US"})
    assert [(e["shipment_id"], e["event_type"], e["location"]) for _, e in decodes(result)] == [
        ("urn:epcglobal:cbv:bt:0614141073467:1152", "delivered",
         {"country": "US", "facility": "urn:epc:id:sgln:0012345.11111.0"})]
    assert codes(result) == [(SHIP_ID, "no_shipment_id")]          # the shipping event has no desadv


def test_epcis_class_level_and_transaction_events_are_rejected():
    quantities = epcis.convert(raw(EPCIS / "Example_9.6.2-ObjectEvent.jsonld"))
    assert quantities.events == []
    assert codes(quantities) == [(
        "ni:///sha-256;a98f08ae6ac4de3482054314d637c07010b448d3802dccb028a06aafcc6a4b10?ver=CBV2.0",
        "no_shipment_id")]
    assert "quantityList" in quantities.rejects[0][1]
    transactions = epcis.convert(raw(EPCIS / "Example-TransactionEvents-2020_07_03y.jsonld"))
    assert codes(transactions) == [("#0", "unsupported_event"), ("#1", "unsupported_event")]


def test_epcis_time_is_written_in_the_events_own_offset():
    ev = json.loads(raw(EPCIS / "Example_9.6.2-ObjectEvent.jsonld"))["epcisBody"]["eventList"][0]
    ev["epcList"] = ["urn:epc:id:sscc:4012345.0000000001"]
    [(_, out)] = decodes(epcis.convert([ev]))
    assert out["occurred_at"] == "2013-06-08T16:58:56.591000+02:00"     # eventTimeZoneOffset +02:00
    assert parse_time(out["occurred_at"]) == parse_time("2013-06-08T14:58:56.591Z")
    assert (out["event_type"], out["shipment_id"]) == ("delivered", "urn:epc:id:sscc:4012345.0000000001")


def _object_event(**changes):
    doc = json.loads(raw(EPCIS / "Example_9.6.1-ObjectEvent.jsonld"))
    return _edited(doc["epcisBody"]["eventList"][1], changes)


@pytest.mark.parametrize("changes, etype", [
    ({"bizStep": "urn:epcglobal:cbv:bizstep:departing"}, "departed_origin"),
    ({"bizStep": "https://ref.gs1.org/cbv/BizStep-arriving"}, "arrived_destination"),
    ({"bizStep": "shipping"}, "picked_up"),
    ({"bizStep": "receiving", "disposition": "returned"}, "returned"),
    ({"bizStep": "transporting", "disposition": "stolen"}, "lost"),
])
def test_epcis_biz_steps_and_dispositions(changes, etype):
    [(_, out)] = decodes(epcis.convert([_object_event(**changes)]))
    assert (out["event_type"], out["event_id"], out["occurred_at"]) == \
        (etype, RECV_ID, "2005-04-04T20:33:31.116-06:00")


@pytest.mark.parametrize("doc, where, code, words", [
    ([_object_event(eventTime=None)], RECV_ID, "missing_field", "eventTime is missing"),
    ([_object_event(eventTime="2005-04-04 20:33")], RECV_ID, "bad_timestamp", "no UTC offset"),
    ([_object_event(bizStep="inspecting")], RECV_ID, "no_equivalent", "bizStep inspecting"),
    ([_object_event(bizStep="http://epcis.example.org/hc/bizstep/summarising_discharge")], RECV_ID,
     "unknown_event_type", "not a CBV business step"),
    ([_object_event(action="DELETE")], RECV_ID, "no_equivalent", "DELETE"),
    ([_object_event(type="AggregationEvent")], RECV_ID, "unsupported_event", "AggregationEvent"),
    ("{not json", "document", "not_json", "not a JSON document"),
    ({"type": "EPCISDocument", "epcisBody": {}}, "document", "bad_document", "no eventList"),
])
def test_epcis_malformed_input_is_rejected_with_a_reason(doc, where, code, words):
    result = epcis.convert(doc)
    assert result.events == []
    [(got_where, reason)] = result.rejects
    assert (got_where, reason_code(reason)) == (where, code)
    assert words in reason


def test_epcis_event_without_id_gets_a_stable_one():
    ev = _object_event(eventID=None)
    first, again = epcis.convert([ev]), epcis.convert([copy.deepcopy(ev)])
    assert first.events[0][1]["event_id"].startswith("epcis:sha256:")
    assert first.events == again.events
    decodes(first)


# ---- CSV order exports (Olist) --------------------------------------------------------------------
@pytest.fixture(scope="module")
def olist():
    return sources.load([OLIST], "csv-orders", OLIST_MAPPING)


def _of(loaded, order_id):
    return [(k, e) for k, e in loaded.events if e.get("order_id") == order_id or e.get("shipment_id") == order_id]


def test_olist_converts_every_usable_row_and_every_event_decodes(olist):
    assert Counter((k, e["event_type"]) for k, e in olist.events) == {
        ("orders", "order_placed"): 9889, ("orders", "order_cancelled"): 46,
        ("shipments", "label_created"): 9753, ("shipments", "picked_up"): 9748,
        ("shipments", "delivered"): 9648}
    assert Counter(r["reason"] for r in olist.rejects) == {"missing_field": 112, "irregular_time": 5}
    assert len(olist.region_codes) == 27                  # Brazil's 26 states and its federal district
    states = {kind: Decoder(kind, countries=accepted_countries(olist.region_codes)) for kind in DECODERS}
    for kind, event in olist.events:
        key = event["order_id"] if kind == "orders" else event["shipment_id"]
        states[kind].decode(key.encode(), orjson.dumps(event))
    times = [parse_time(e["occurred_at"]) for _, e in olist.events]
    assert times == sorted(times)                      # replayed as the history happened


def test_olist_states_are_countries_only_where_the_mapping_declares_them(olist):
    """Issue 15: codes outside ISO 3166-1 are dead-lettered; Olist's states (SP, RJ, ...) pass only
    because its mapping lists them (region_codes), and a worker needs CORRIDOR_REGION_CODES."""
    kind, event = next((k, e) for k, e in olist.events
                       if k == "orders" and e["seller_country"] == "SP")
    with pytest.raises(Rejected) as info:
        Decoder(kind).decode(event["order_id"].encode(), orjson.dumps(event))
    assert (info.value.reason, info.value.detail) == (
        "unknown_country", "seller_country: 'SP' is not an ISO 3166-1 alpha-2 country code")


def test_olist_order_keeps_its_local_times_with_the_brazilian_offset(olist):
    oid = "e481f51cbdc54678b7cc49136f2d6af7"     # purchase 2017-10-02 10:56:33, estimate 2017-10-18
    assert _of(olist, oid) == [
        ("orders", {"event_id": f"{oid}:order_placed", "event_type": "order_placed",
                    "occurred_at": "2017-10-02T10:56:33-03:00", "order_id": oid, "seller_country": "SP",
                    "buyer_country": "SP", "service_level": "standard",
                    # summer time began on 2017-10-15: the promised day ends at -02:00
                    "promised_delivery_at": "2017-10-18T23:59:59-02:00"}),
        ("shipments", {"event_id": f"{oid}:label_created", "shipment_id": oid, "event_type": "label_created",
                       "occurred_at": "2017-10-04T19:55:00-03:00", "order_ids": [oid],
                       "origin_country": "SP", "destination_country": "SP"}),
        ("shipments", {"event_id": f"{oid}:picked_up", "shipment_id": oid, "event_type": "picked_up",
                       "occurred_at": "2017-10-04T19:55:00-03:00"}),
        ("shipments", {"event_id": f"{oid}:delivered", "shipment_id": oid, "event_type": "delivered",
                       "occurred_at": "2017-10-10T21:25:13-03:00"})]


def test_olist_seller_of_the_first_item_and_state_pairs(olist):
    # items 1 (MG seller) and 2, 3 (SC seller); the customer is in SP
    [(_, placed)] = [(k, e) for k, e in _of(olist, "0420dbc50fc554e303e4b2d6b39063f6") if k == "orders"]
    assert (placed["seller_country"], placed["buyer_country"]) == ("MG", "SP")
    assert placed["occurred_at"] == "2017-11-17T19:49:17-02:00"


def test_olist_irregular_rows_keep_what_is_valid_and_say_what_was_dropped(olist):
    rejects = {r["where"]: (r["reason"], r["detail"]) for r in olist.rejects}
    # delivered (07-25) before the carrier hand-over (07-28): no picked_up, the link stays
    oid = "a1abeb653a4d4cd1e142ccb8c82cd069"
    assert [e["event_type"] for _, e in _of(olist, oid)] == ["order_placed", "delivered", "label_created"]
    assert rejects[oid] == ("irregular_time", "order_delivered_customer_date 2017-07-25 19:32:56 is before "
                            "order_delivered_carrier_date 2017-07-28 16:57:58; picked_up not applied")
    # status delivered without a delivery time: the shipment stays open
    oid = "2d1e2d5bf4dc7227b3bfebb81328c15f"
    assert [e["event_type"] for _, e in _of(olist, oid)] == ["order_placed", "label_created", "picked_up"]
    assert rejects[oid][0] == "missing_field" and "stays open" in rejects[oid][1]
    # cancelled, no cancellation time: stamped at the approval (here the same second as the purchase)
    oid = "a39d3db795a5cf4c8b6c9dd050f0d326"
    assert [(e["event_type"], e["occurred_at"]) for _, e in _of(olist, oid)] == [
        ("order_placed", "2017-03-13T16:12:24-03:00"), ("order_cancelled", "2017-03-13T16:12:24-03:00")]
    # no items, so no seller state: the whole row is rejected
    oid = "df8282afe61008dc26c6c31011474d02"
    assert _of(olist, oid) == []
    assert rejects[oid] == ("missing_field", "no seller country: seller_state empty "
                            "(no items row has order_id 'df8282afe61008dc26c6c31011474d02')")


ORDER_COLUMNS = ["order_id", "customer_id", "order_status", "order_purchase_timestamp", "order_approved_at",
                 "order_delivered_carrier_date", "order_delivered_customer_date",
                 "order_estimated_delivery_date"]


def _tables(*orders):
    return {"orders": [dict(zip(ORDER_COLUMNS, row)) for row in orders],
            "customers": [{"customer_id": "c1", "customer_state": "RJ"}],
            "items": [{"order_id": o[0], "order_item_id": "1", "seller_id": "s1"} for o in orders],
            "sellers": [{"seller_id": "s1", "seller_state": "SP"}]}


@pytest.fixture(scope="module")
def mapping():
    return csv_orders.load_mapping(OLIST_MAPPING.read_text(), "olist.toml")


def test_csv_rows_with_unreadable_or_impossible_times(mapping):
    result = csv_orders.convert(_tables(
        ("o1", "c1", "delivered", "yesterday", "", "", "", "2017-05-01 00:00:00"),
        ("o2", "c1", "delivered", "2017-04-10 10:00:00", "", "2017-04-09 08:00:00", "2017-04-12 09:00:00",
         "not a date"),
        ("o3", "c1", "delivered", "2017-04-10 10:00:00", "", "2017-04-11 08:00:00", "2017-04-13 9h",
         "2017-05-01 00:00:00"),
        ("", "c1", "delivered", "2017-04-10 10:00:00", "", "", "", "")), mapping)
    assert result.rejects == [
        ("o1", "bad_timestamp: order_purchase_timestamp 'yesterday' is not a date-time"),
        ("o2", "bad_timestamp: order_estimated_delivery_date 'not a date' is not a date-time; promise not "
               "applied (the SLA policy's applies)"),
        ("o2", "irregular_time: order_delivered_carrier_date 2017-04-09 08:00:00 is before "
               "order_purchase_timestamp 2017-04-10 10:00:00; picked_up not applied"),
        ("o3", "bad_timestamp: order_delivered_customer_date '2017-04-13 9h' is not a date-time; delivered "
               "not applied"),
        ("o3", "missing_field: order_status is delivered but order_delivered_customer_date is empty: the "
               "shipment stays open"),
        ("row 5", "missing_field: order_id is empty")]
    assert [(e.get("order_id") or e["shipment_id"], e["event_type"], e["occurred_at"])
            for _, e in decodes(result)] == [
        ("o2", "order_placed", "2017-04-10T10:00:00-03:00"),
        ("o2", "label_created", "2017-04-12T09:00:00-03:00"),     # the link, at the delivery time
        ("o2", "delivered", "2017-04-12T09:00:00-03:00"),
        ("o3", "order_placed", "2017-04-10T10:00:00-03:00"),
        ("o3", "label_created", "2017-04-11T08:00:00-03:00"),
        ("o3", "picked_up", "2017-04-11T08:00:00-03:00")]
    assert "promised_delivery_at" not in result.events[0][1]


@pytest.mark.parametrize("text, words", [
    ('timezone = "Mars/Olympus"\n[tables]\norders = "o.csv"\n[order]\norder_id = "id"\nplaced_at = "t"\n'
     'seller_region = "s"\nbuyer_region = "b"\n[shipment]\nhanded_over_at = "h"\ndelivered_at = "d"\n',
     "not an IANA time zone"),
    ('timezone = "UTC"\n[tables]\norders = "o.csv"\n[order]\norder_id = "id"\nplaced_at = "t"\n'
     'seller_region = "s"\nbuyer_region = "b"\nsevice_level = "express"\n[shipment]\nhanded_over_at = "h"\n'
     'delivered_at = "d"\n', "unknown key 'sevice_level'"),
    ('timezone = "UTC"\n[tables]\norders = "o.csv"\n[order]\norder_id = "id"\nplaced_at = "t"\n'
     '[shipment]\nhanded_over_at = "h"\ndelivered_at = "d"\n', "give seller_country or seller_region"),
    ("timezone = ", "not valid TOML"),
])
def test_bad_mappings_are_one_line_errors(text, words):
    with pytest.raises(csv_orders.MappingError, match=words):
        csv_orders.load_mapping(text, "m.toml")


def test_a_mapping_that_names_missing_columns_is_refused(mapping):
    tables = _tables(("o1", "c1", "delivered", "2017-04-10 10:00:00", "", "", "", ""))
    for row in tables["orders"]:
        row.pop("order_delivered_carrier_date")
    with pytest.raises(csv_orders.MappingError, match="no column order_delivered_carrier_date"):
        csv_orders.convert(tables, mapping)
