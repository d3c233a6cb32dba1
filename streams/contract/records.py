"""Faust records for the three input topics: a typed view of the wire contract.

The JSON Schema files in schemas/ are the contract; these classes mirror them field for field
(tests/unit/test_contract.py keeps the two in step). Required schema fields are required here;
optional ones default to None. Timestamps stay ISO-8601 strings, as on the wire: parsing them is
the codec's job (streams.contract.codec.parse_time), and a decoded event keeps the producer's text.

`include_metadata=False` keeps Faust's `__faust` type tag off the wire, and `dumps()` is
overridden to write `wire(record)`: declared fields only, None-valued optional fields left out
(the schemas do not allow null). `asdict()` is Faust-generated and cannot be overridden: it
returns every field, None included, with nested records as objects.
"""
from __future__ import annotations

from typing import Any, List, Optional

import faust

from streams.contract.codec import SCHEMA_FILES  # noqa: F401  (re-exported: one copy of the mapping)

ORDER_EVENT_TYPES = ("order_placed", "order_cancelled")
SHIPMENT_EVENT_TYPES = (
    "label_created",
    "picked_up",
    "departed_origin",
    "arrived_destination",
    "out_for_delivery",
    "delivered",
    "delivery_failed",
    "returned",
    "lost",
)
CUSTOMS_EVENT_TYPES = (
    "declaration_lodged",
    "risk_assessed",
    "held_for_inspection",
    "inspection_completed",
    "duty_assessed",
    "duty_paid",
    "released",
    "rejected",
    "seized",
)
SERVICE_LEVELS = ("economy", "standard", "express")
DIRECTIONS = ("export", "import")


class _WireRecord(faust.Record, abstract=True, serializer="json", include_metadata=False):
    """Base: `dumps()` writes exactly `wire(self)`, the plain JSON a producer would send."""

    def to_representation(self) -> dict:
        # Faust's default emits optional fields as null, which the schemas reject
        # (optional means absent), so a record we publish would fail our own decoder.
        return wire(self)


class Money(_WireRecord):
    amount: float
    currency: str


class Item(_WireRecord):
    sku: str
    qty: int
    hs_code: Optional[str] = None


class Location(_WireRecord):
    country: Optional[str] = None
    facility: Optional[str] = None


class OrderEvent(_WireRecord):
    event_id: str
    order_id: str
    event_type: str
    occurred_at: str
    seller_country: str
    buyer_country: str
    service_level: str
    promised_delivery_at: Optional[str] = None
    declared_value: Optional[Money] = None
    items: Optional[List[Item]] = None


class ShipmentEvent(_WireRecord):
    event_id: str
    shipment_id: str
    event_type: str
    occurred_at: str
    # Required by the schema only on label_created (if/then), hence optional here.
    order_ids: Optional[List[str]] = None
    origin_country: Optional[str] = None
    destination_country: Optional[str] = None
    carrier: Optional[str] = None
    tracking_number: Optional[str] = None
    location: Optional[Location] = None


class CustomsEvent(_WireRecord):
    event_id: str
    shipment_id: str
    declaration_id: str
    direction: str
    country: str
    event_type: str
    occurred_at: str


RECORDS = {"orders": OrderEvent, "shipments": ShipmentEvent, "customs": CustomsEvent}
#: Body field that must equal the Kafka message key (the schemas' "x-kafka-key").
KEY_FIELDS = {"orders": "order_id", "shipments": "shipment_id", "customs": "shipment_id"}


def wire(record: faust.Record) -> dict:
    """The record as its wire JSON dict: declared fields only, None-valued ones left out."""
    out = {}
    for name in record._options.fields:
        value = _plain(getattr(record, name))
        if value is not None:
            out[name] = value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, faust.Record):
        return wire(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    # from_data/loads may leave a nested value as a dict; normalise it the same way.
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value
