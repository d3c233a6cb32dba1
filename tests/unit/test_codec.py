"""The edge decoder: every rejection reason from a concrete bad message, in the documented order."""
from __future__ import annotations

import copy
import pickle

import orjson
import pytest
from jsonschema import Draft202012Validator

from streams.contract.codec import KINDS, REASONS, Decoder, Rejected, inline_refs, load_schema, parse_time

NOW = 1740830400.0  # 2025-03-01T12:00:00Z, the fixed clock of every decoder here
DAY = 86400.0

ORDER = {
    "event_id": "ev-1",
    "order_id": "o-1",
    "event_type": "order_placed",
    "occurred_at": "2025-03-01T10:00:00+08:00",
    "seller_country": "CN",
    "buyer_country": "US",
    "service_level": "express",
    "promised_delivery_at": "2025-03-06T23:59:59Z",
    "declared_value": {"amount": 42.5, "currency": "USD"},
    "items": [{"sku": "SKU-1", "qty": 2, "hs_code": "851762"}, {"sku": "SKU-2", "qty": 1}],
    "x_channel": "marketplace",  # not in the schema: must be kept
}
SHIPMENT = {
    "event_id": "ev-2",
    "shipment_id": "s-1",
    "event_type": "label_created",
    "occurred_at": "2025-03-01T11:00:00Z",
    "order_ids": ["o-1"],
    "carrier": "DHL",
    "location": {"country": "CN", "facility": "SZX hub"},
    "x_weight_kg": 1.2,
}
CUSTOMS = {
    "event_id": "ev-3",
    "shipment_id": "s-1",
    "declaration_id": "d-1",
    "direction": "export",
    "country": "CN",
    "event_type": "declaration_lodged",
    "occurred_at": "2025-03-01T11:30:00Z",
    "x_broker": "acme",
}
VALID = {"orders": (b"o-1", ORDER), "shipments": (b"s-1", SHIPMENT), "customs": (b"s-1", CUSTOMS)}


def decoder(kind: str = "orders", **kw) -> Decoder:
    return Decoder(kind, clock=lambda: NOW, **kw)


def rejected(kind: str, key, value, **kw) -> Rejected:
    if isinstance(value, dict):
        value = orjson.dumps(value)
    with pytest.raises(Rejected) as info:
        decoder(kind, **kw).decode(key, value)
    return info.value


def order(**changes) -> dict:
    body = copy.deepcopy(ORDER)
    for name, value in changes.items():
        if value is None:
            del body[name]
        else:
            body[name] = value
    return body


@pytest.mark.parametrize("kind", KINDS)
def test_valid_message_decodes_with_extra_fields_kept(kind):
    key, body = VALID[kind]
    assert decoder(kind).decode(key, orjson.dumps(body)) == body


def test_shipment_scan_without_order_ids_is_valid():
    body = {k: v for k, v in SHIPMENT.items() if k != "order_ids"} | {"event_type": "picked_up"}
    assert decoder("shipments").decode(b"s-1", orjson.dumps(body)) == body


def test_key_may_be_str():
    assert decoder().decode("o-1", orjson.dumps(ORDER)) == ORDER


# (case id, kind, key, value, reason, text the detail must contain)
CASES = [
    ("none value", "orders", b"o-1", None, "empty", "no value"),
    ("empty value", "orders", b"o-1", b"", "empty", "no value"),
    ("not utf-8", "orders", b"o-1", b"\xff\xfe", "not_utf8", "invalid UTF-8 at byte 0"),
    ("bad utf-8 in a string", "orders", b"o-1", b'{"order_id": "\xff"}', "not_utf8", "byte 14"),
    ("truncated json", "orders", b"o-1", b'{"order_id": ', "not_json", ""),
    ("json array", "orders", b"o-1", b"[1, 2]", "not_object", "is an array, expected object"),
    ("json string", "orders", b"o-1", b'"o-1"', "not_object", "is a string"),
    ("missing required", "orders", b"o-1", order(buyer_country=None), "schema",
     "$: 'buyer_country' is a required property"),
    ("wrong type", "orders", b"o-1", order(items=[{"sku": "A", "qty": "2"}]), "schema",
     "$.items[0].qty: '2' is not of type 'integer'"),
    ("qty zero", "orders", b"o-1", order(items=[{"sku": "A", "qty": 0}]), "schema", "$.items[0].qty"),
    ("unknown service level", "orders", b"o-1", order(service_level="rocket"), "schema",
     "$.service_level: 'rocket' is not one of"),
    ("lower-case country", "orders", b"o-1", order(buyer_country="us"), "schema", "$.buyer_country"),
    ("negative amount", "orders", b"o-1", order(declared_value={"amount": -1, "currency": "USD"}),
     "schema", "$.declared_value.amount"),
    ("event_type not a string", "orders", b"o-1", order(event_type=5), "schema", "$.event_type"),
    ("occurred_at not a string", "orders", b"o-1", order(occurred_at=1740830400), "schema",
     "$.occurred_at: 1740830400 is not of type 'string'"),
    ("label without orders", "shipments", b"s-1",
     {k: v for k, v in SHIPMENT.items() if k != "order_ids"}, "schema", "'order_ids' is a required property"),
    ("empty order_ids", "shipments", b"s-1", {**SHIPMENT, "order_ids": []}, "schema", "$.order_ids"),
    ("unknown direction", "customs", b"s-1", {**CUSTOMS, "direction": "transit"}, "schema", "$.direction"),
    ("unknown order event", "orders", b"o-1", order(event_type="order_teleported"), "unknown_event_type",
     "event_type: 'order_teleported' is not one of order_cancelled, order_placed"),
    ("unknown customs event", "customs", b"s-1", {**CUSTOMS, "event_type": "bribed"}, "unknown_event_type",
     "event_type: 'bribed'"),
    ("no offset", "orders", b"o-1", order(occurred_at="2025-01-01T10:00:00"), "bad_timestamp",
     "occurred_at: '2025-01-01T10:00:00' has no UTC offset"),
    ("unparseable", "orders", b"o-1", order(occurred_at="yesterday"), "bad_timestamp",
     "occurred_at: 'yesterday' is not an ISO-8601 date-time"),
    ("impossible date", "customs", b"s-1", {**CUSTOMS, "occurred_at": "2025-02-30T10:00:00Z"},
     "bad_timestamp", "occurred_at: '2025-02-30T10:00:00Z' is not an ISO-8601 date-time"),
    ("offset without colon", "orders", b"o-1", order(occurred_at="2025-03-01T10:00:00+0800"),
     "bad_timestamp", "occurred_at: '2025-03-01T10:00:00+0800' is not of the form"),
    ("30 days ahead", "orders", b"o-1", order(occurred_at="2025-03-31T12:00:00Z"), "bad_timestamp",
     "occurred_at: '2025-03-31T12:00:00Z' is more than 7 days ahead of the clock"),
    ("before 2000", "shipments", b"s-1", {**SHIPMENT, "occurred_at": "1999-12-31T23:59:59Z"},
     "bad_timestamp", "occurred_at: '1999-12-31T23:59:59Z' is before 2000-01-01"),
    ("promise without offset", "orders", b"o-1", order(promised_delivery_at="2025-03-06T23:59:59"),
     "bad_timestamp", "promised_delivery_at: '2025-03-06T23:59:59' has no UTC offset"),
    ("promise two years out", "orders", b"o-1", order(promised_delivery_at="2027-03-01T00:00:00Z"),
     "bad_timestamp", "promised_delivery_at: '2027-03-01T00:00:00Z' is more than 366 days after occurred_at"),
    ("no key", "orders", None, ORDER, "missing_key", "expected the order_id"),
    ("empty key", "customs", b"", CUSTOMS, "missing_key", "expected the shipment_id"),
    ("key is another order", "orders", b"o-2", ORDER, "key_mismatch", "key 'o-2' != order_id 'o-1'"),
    ("key is the order, not the shipment", "shipments", b"o-1", SHIPMENT, "key_mismatch",
     "key 'o-1' != shipment_id 's-1'"),
    ("key not utf-8", "customs", b"\xff", CUSTOMS, "key_mismatch", "is not UTF-8"),
    # Issue 15: the schema's two capital letters allow 676 codes and every seller x buyer pair is
    # a corridor label; only ISO 3166-1 codes pass.
    ("seller not a country", "orders", b"o-1", order(seller_country="ZZ"), "unknown_country",
     "seller_country: 'ZZ' is not an ISO 3166-1 alpha-2 country code"),
    ("UK is GB", "orders", b"o-1", order(buyer_country="UK"), "unknown_country", "buyer_country: 'UK'"),
    ("destination not a country", "shipments", b"s-1", {**SHIPMENT, "destination_country": "EU"},
     "unknown_country", "destination_country: 'EU' is not an ISO 3166-1"),
    ("scan location not a country", "shipments", b"s-1",
     {**SHIPMENT, "location": {"country": "QQ", "facility": "x"}}, "unknown_country",
     "location.country: 'QQ'"),
    ("customs authority not a country", "customs", b"s-1", {**CUSTOMS, "country": "AA"},
     "unknown_country", "country: 'AA'"),
]


@pytest.mark.parametrize(("kind", "key", "value", "reason", "text"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rejection(kind, key, value, reason, text):
    exc = rejected(kind, key, value)
    assert exc.reason == reason
    assert text in exc.detail
    assert "\n" not in exc.detail and len(exc.detail) <= 200


def test_every_reason_has_a_case():
    # too_large is parametrised on max_bytes, so it has its own test below.
    assert {c[4] for c in CASES} | {"too_large"} == set(REASONS)


def test_country_codes_are_the_iso_3166_1_list():
    from streams.contract.codec import COUNTRIES
    assert len(COUNTRIES) == 250                 # 249 assigned and XK (Kosovo)
    assert {"CN", "AU", "DE", "US", "GB", "BR", "XK"} <= COUNTRIES
    assert not {"UK", "EU", "ZZ", "XX"} & COUNTRIES
    assert decoder("orders").decode(b"o-1", orjson.dumps(order(buyer_country="XK")))["buyer_country"] == "XK"


def test_every_country_field_of_the_schemas_is_checked():
    assert decoder("orders").country_paths == (("seller_country",), ("buyer_country",))
    assert decoder("shipments").country_paths == (("origin_country",), ("destination_country",),
                                                  ("location", "country"))
    assert decoder("customs").country_paths == (("country",),)


def test_too_large():
    value = orjson.dumps(ORDER)
    exc = rejected("orders", b"o-1", value, max_bytes=len(value) - 1)
    assert exc.reason == "too_large"
    assert exc.detail == f"value is {len(value)} bytes, max {len(value) - 1}"
    assert decoder(max_bytes=len(value)).decode(b"o-1", value) == ORDER


def test_too_large_is_checked_before_utf8():
    assert rejected("orders", b"o-1", b"\xff" * 100, max_bytes=10).reason == "too_large"


def test_unknown_event_type_wins_over_schema_errors():
    exc = rejected("orders", b"o-1", order(event_type="order_teleported", buyer_country=None))
    assert exc.reason == "unknown_event_type"


def test_other_schema_errors_win_over_bad_timestamp():
    exc = rejected("orders", b"o-1", order(occurred_at="2025-01-01T10:00:00", buyer_country=None))
    assert exc.reason == "schema"
    assert "buyer_country" in exc.detail


def test_timestamps_are_checked_before_the_key():
    assert rejected("orders", None, order(occurred_at="yesterday")).reason == "bad_timestamp"


def test_schema_errors_are_checked_before_the_key():
    assert rejected("orders", b"o-2", order(buyer_country=None)).reason == "schema"


def test_future_bound_is_configurable_and_inclusive():
    six_days = order(occurred_at="2025-03-07T12:00:00Z")
    assert decoder().decode(b"o-1", orjson.dumps(six_days)) == six_days
    exc = rejected("orders", b"o-1", six_days, max_future_seconds=DAY)
    assert exc.detail == "occurred_at: '2025-03-07T12:00:00Z' is more than 1 day ahead of the clock"
    assert decoder(max_future_seconds=6 * DAY).decode(b"o-1", orjson.dumps(six_days)) == six_days


def test_promised_delivery_weeks_ahead_is_fine():
    # An economy promise lies weeks after the order: the clock bound is for event time only.
    body = order(service_level="economy", promised_delivery_at="2025-04-15T00:00:00Z")
    assert decoder().decode(b"o-1", orjson.dumps(body)) == body


def test_fractional_seconds_and_negative_offsets_are_accepted():
    body = order(occurred_at="2025-03-01T06:59:59.123456789-05:00")
    assert decoder().decode(b"o-1", orjson.dumps(body)) == body


def test_detail_is_one_line_and_bounded():
    exc = rejected("orders", b"o-1", order(event_type="x\n" * 500))
    assert exc.reason == "unknown_event_type"
    assert len(exc.detail) == 200
    assert exc.detail.endswith("...")
    assert "\n" not in exc.detail


def test_rejected_str_and_pickle():
    exc = Rejected("schema", "$: 'order_id' is a required property")
    assert str(exc) == "schema: $: 'order_id' is a required property"
    back = pickle.loads(pickle.dumps(exc))
    assert (back.reason, back.detail) == (exc.reason, exc.detail)


def test_decoder_uses_the_clock_per_call():
    now = [NOW]
    dec = Decoder("orders", clock=lambda: now[0])
    body = orjson.dumps(order(occurred_at="2025-03-31T12:00:00Z"))
    with pytest.raises(Rejected):
        dec.decode(b"o-1", body)
    now[0] = NOW + 30 * DAY
    assert dec.decode(b"o-1", body)["occurred_at"] == "2025-03-31T12:00:00Z"


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind 'returns'"):
        load_schema("returns")
    with pytest.raises(ValueError):
        Decoder("returns")


def test_parse_time_exact_values():
    assert parse_time("2025-03-01T12:00:00+08:00") == 1740801600.0
    assert parse_time("2025-03-01T04:00:00Z") == 1740801600.0
    assert parse_time("2025-03-01T04:00:00+00:00") == 1740801600.0
    assert parse_time("2025-02-28T23:00:00-05:00") == 1740801600.0
    assert parse_time("2025-03-01T04:00:00.25Z") == 1740801600.25
    assert parse_time("2000-01-01T00:00:00Z") == 946684800.0


def test_parse_time_errors():
    with pytest.raises(ValueError, match=r"^'2025-03-01T04:00:00' has no UTC offset$"):
        parse_time("2025-03-01T04:00:00")
    with pytest.raises(ValueError, match=r"^'soon' is not an ISO-8601 date-time$"):
        parse_time("soon")
    with pytest.raises(ValueError, match=r"^1740801600 is not a string$"):
        parse_time(1740801600)


def test_schemas_are_the_validation_source():
    # The decoder's enum comes from the schema file, not from a copy in Python.
    schema = load_schema("customs")
    assert decoder("customs").event_types == frozenset(schema["properties"]["event_type"]["enum"])


@pytest.mark.parametrize("kind", KINDS)
def test_inline_refs_expands_every_ref_and_keeps_descriptions(kind):
    schema = load_schema(kind)
    inlined = inline_refs(schema)
    assert "$ref" not in orjson.dumps(inlined).decode()
    assert "$defs" not in inlined
    Draft202012Validator.check_schema(inlined)
    occurred_at = inlined["properties"]["occurred_at"]
    assert occurred_at["format"] == "date-time"
    assert occurred_at["description"] == schema["properties"]["occurred_at"]["description"]


def test_inline_refs_refuses_recursion():
    with pytest.raises(ValueError, match="recursive"):
        inline_refs({"$defs": {"node": {"items": {"$ref": "#/$defs/node"}}}, "$ref": "#/$defs/node"})
