"""The join's internal records (streams.domain.join), as they go over the internal topics:

- `<app>-order-links`, key order_id: a Link as JSON ``{"order_id", "shipment_id", "at"}``
  (``at``: epoch seconds or null);
- `<app>-shipment-orders`, key shipment_id: the order event as decoded from the orders topic,
  with ``shipment_id`` set to the shipment it is forwarded to.

Both are written and read only by corridor workers; they are JSON so that they can be read with
any Kafka tool.
"""
from __future__ import annotations

import orjson

from streams.domain.join import Link


def link_value(link: Link) -> bytes:
    return orjson.dumps({"order_id": link.order_id, "shipment_id": link.shipment_id,
                         "at": link.at})


def read_link(value: bytes) -> Link:
    doc = orjson.loads(value)
    return Link(doc["order_id"], doc["shipment_id"], doc.get("at"))


def forwarded_value(event: dict) -> bytes:
    """A forwarded order event (already carrying its shipment_id, join.OrderStep.forwards)."""
    return orjson.dumps(event)


def read_forwarded(value: bytes) -> dict:
    return orjson.loads(value)
