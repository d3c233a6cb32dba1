"""The wire contract agrees with itself: schemas/ and streams/contract/records.py describe the same events.

The schemas are the source of truth; these tests fail when a record or an enum constant drifts.
"""
from __future__ import annotations

import json
import typing

import faust
import orjson
import pytest
from jsonschema import Draft202012Validator

from streams.contract import records
from streams.contract.codec import KINDS, SCHEMA_DIR, Decoder, load_schema
from streams.contract.records import (
    CUSTOMS_EVENT_TYPES,
    DIRECTIONS,
    KEY_FIELDS,
    ORDER_EVENT_TYPES,
    RECORDS,
    SCHEMA_FILES,
    SERVICE_LEVELS,
    SHIPMENT_EVENT_TYPES,
    CustomsEvent,
    Item,
    Location,
    Money,
    OrderEvent,
    ShipmentEvent,
    wire,
)

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
SCALAR_TYPES = {str: "string", int: "integer", float: "number"}


def resolve(schema: dict, node: dict) -> dict:
    """Merge a local $ref target with the node's own keywords (description etc.)."""
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/$defs/"), ref
    target = schema["$defs"][ref.removeprefix("#/$defs/")]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def required_fields(record: type) -> set[str]:
    return {name for name in record._options.fields if name not in record._options.defaults}


def unwrap_optional(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        return args[0]
    return tp


def assert_record_matches(schema: dict, record: type, node: dict) -> None:
    """Fields, required set and scalar/array/object types of `record` equal the object `node`."""
    node = resolve(schema, node)
    assert node["type"] == "object"
    assert list(record._options.fields) == list(node["properties"])
    assert required_fields(record) == set(node.get("required", []))
    for name, tp in record._options.fields.items():
        prop = resolve(schema, node["properties"][name])
        tp = unwrap_optional(tp)
        if typing.get_origin(tp) is list:
            assert prop["type"] == "array", name
        elif isinstance(tp, type) and issubclass(tp, faust.Record):
            assert prop["type"] == "object", name
        else:
            assert prop["type"] == SCALAR_TYPES[tp], name


def test_schema_files_and_records_cover_the_same_kinds():
    assert set(RECORDS) == set(SCHEMA_FILES) == set(KINDS) == set(KEY_FIELDS)
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(SCHEMA_FILES.values())


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_2020_12(kind):
    schema = load_schema(kind)
    assert schema["$schema"] == DRAFT_2020_12
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_documented(kind):
    schema = load_schema(kind)
    assert schema["$id"].endswith("/" + SCHEMA_FILES[kind])
    assert schema["title"] and schema["description"]
    assert schema["additionalProperties"] is True
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
        for sub_name, sub in resolve(schema, prop).get("properties", {}).items():
            assert sub.get("description"), f"{name}.{sub_name}"
        for sub_name, sub in resolve(schema, prop).get("items", {}).get("properties", {}).items():
            assert sub.get("description"), f"{name}[].{sub_name}"


@pytest.mark.parametrize("kind", KINDS)
def test_record_fields_match_schema(kind):
    schema = load_schema(kind)
    assert_record_matches(schema, RECORDS[kind], schema)


@pytest.mark.parametrize("kind", KINDS)
def test_kafka_key_field(kind):
    schema = load_schema(kind)
    assert schema["x-kafka-key"] == KEY_FIELDS[kind]
    assert KEY_FIELDS[kind] in schema["required"]
    assert Decoder(kind).key_field == KEY_FIELDS[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_time_fields_are_date_time_with_offset_pattern(kind):
    schema = load_schema(kind)
    expected = ("occurred_at", "promised_delivery_at") if kind == "orders" else ("occurred_at",)
    assert Decoder(kind).time_fields == expected
    for name in expected:
        prop = resolve(schema, schema["properties"][name])
        assert prop["format"] == "date-time"
        assert prop["pattern"].endswith("(Z|[+-][0-9]{2}:[0-9]{2})$")


def test_nested_records_match_nested_schemas():
    orders = load_schema("orders")
    shipments = load_schema("shipments")
    assert_record_matches(orders, Money, orders["properties"]["declared_value"])
    assert_record_matches(orders, Item, orders["properties"]["items"]["items"])
    assert_record_matches(shipments, Location, shipments["properties"]["location"])


def test_enum_constants_equal_schema_enums():
    orders = load_schema("orders")["properties"]
    shipments = load_schema("shipments")["properties"]
    customs = load_schema("customs")["properties"]
    assert tuple(orders["event_type"]["enum"]) == ORDER_EVENT_TYPES
    assert tuple(orders["service_level"]["enum"]) == SERVICE_LEVELS
    assert tuple(shipments["event_type"]["enum"]) == SHIPMENT_EVENT_TYPES
    assert tuple(customs["event_type"]["enum"]) == CUSTOMS_EVENT_TYPES
    assert tuple(customs["direction"]["enum"]) == DIRECTIONS


def test_order_ids_required_only_on_label_created():
    schema = load_schema("shipments")
    assert "order_ids" not in schema["required"]
    assert "order_ids" not in required_fields(ShipmentEvent)
    assert schema["if"]["properties"]["event_type"] == {"const": "label_created"}
    assert schema["then"] == {"required": ["order_ids"]}


FULL = {
    "orders": OrderEvent(
        event_id="ev-1",
        order_id="o-1",
        event_type="order_placed",
        occurred_at="2025-03-01T10:00:00+08:00",
        seller_country="CN",
        buyer_country="US",
        service_level="express",
        promised_delivery_at="2025-03-06T23:59:59Z",
        declared_value=Money(amount=42.5, currency="USD"),
        items=[Item(sku="SKU-1", qty=2, hs_code="851762"), Item(sku="SKU-2", qty=1)],
    ),
    "shipments": ShipmentEvent(
        event_id="ev-2",
        shipment_id="s-1",
        event_type="label_created",
        occurred_at="2025-03-01T12:00:00.123Z",
        order_ids=["o-1"],
        origin_country="CN",
        destination_country="US",
        carrier="DHL",
        tracking_number="JD0001",
        location=Location(country="CN", facility="SZX hub"),
    ),
    "customs": CustomsEvent(
        event_id="ev-3",
        shipment_id="s-1",
        declaration_id="d-1",
        direction="import",
        country="US",
        event_type="released",
        occurred_at="2025-03-04T08:30:00-05:00",
    ),
}

MINIMAL = {
    "orders": OrderEvent(
        event_id="ev-1",
        order_id="o-1",
        event_type="order_cancelled",
        occurred_at="2025-03-01T10:00:00Z",
        seller_country="CN",
        buyer_country="US",
        service_level="economy",
    ),
    "shipments": ShipmentEvent(
        event_id="ev-2", shipment_id="s-1", event_type="picked_up", occurred_at="2025-03-01T12:00:00Z"
    ),
}


@pytest.mark.parametrize("kind", KINDS)
def test_full_record_wire_validates_and_sets_every_field(kind):
    schema = load_schema(kind)
    body = wire(FULL[kind])
    assert set(body) == set(schema["properties"])
    Draft202012Validator(schema).validate(body)


@pytest.mark.parametrize("kind", KINDS)
def test_dumps_is_the_wire_json_and_round_trips(kind):
    record = FULL[kind]
    assert record.dumps() == orjson.dumps(wire(record))
    assert "__faust" not in json.loads(record.dumps())
    assert RECORDS[kind].loads(record.dumps()) == record


@pytest.mark.parametrize("kind", ["orders", "shipments"])
def test_minimal_record_omits_unset_optionals_and_validates(kind):
    record = MINIMAL[kind]
    body = json.loads(record.dumps())
    assert set(body) == required_fields(RECORDS[kind])
    Draft202012Validator(load_schema(kind)).validate(body)


def test_wire_drops_none_inside_nested_records():
    location = Location(country="US")
    assert wire(location) == {"country": "US"}
    assert wire(Item(sku="A", qty=1)) == {"sku": "A", "qty": 1}


def test_decoded_body_builds_a_record():
    body = Decoder("orders", clock=lambda: 1740801600.0).decode(b"o-1", FULL["orders"].dumps())
    record = OrderEvent.from_data(body)
    assert record == FULL["orders"]
    assert isinstance(record.declared_value, Money)
    assert isinstance(record.items[0], Item)


def test_records_module_reexports_the_codec_mapping():
    from streams.contract import codec

    assert records.SCHEMA_FILES is codec.SCHEMA_FILES
