"""Adapters: real feeds (DCSA Track & Trace, GS1 EPCIS 2.0, marketplace CSV exports) into contract events.

Each adapter is a pure function, documents or rows in, ``Converted(events, rejects)`` out:

- ``events``: ``(kind, event)`` with kind ``orders`` | ``shipments`` | ``customs`` and ``event`` a dict
  of the wire contract (schemas/*.schema.json), ready for ``Decoder(kind).decode(key, json)``;
- ``rejects``: ``(where, reason)``: ``where`` is the event's id or index (a row's order id for CSV),
  ``reason`` one line, ``"<code>: <detail>"``, the code from REASONS so reports can count by it.

Input that cannot be used is a reject, never an exception: a replay of a large feed must not stop at
its first bad record. The mapping rules of each feed are in its module and in docs/feeds.md.
File reading lives in `sources.py`; nothing else in this package does I/O.
"""
from __future__ import annotations

import json

import re
from datetime import datetime
from typing import NamedTuple

#: Reject codes, shared by every adapter (and by sources.py for event logs).
REASONS = {
    "not_json": "the document or line is not JSON",
    "bad_document": "JSON, but not the structure the format defines",
    "missing_field": "a field the mapping needs is absent or empty",
    "bad_value": "a field has a value the mapping cannot use (e.g. a country that is not 2 letters)",
    "bad_timestamp": "a time that is not ISO-8601 with a UTC offset (or a local time that cannot be read)",
    "irregular_time": "a time that contradicts the others (e.g. delivered before the carrier hand-over)",
    "unknown_event_type": "an event type or business step the format does not define",
    "unsupported_event": "an event kind this adapter does not convert (e.g. EPCIS TransactionEvent)",
    "not_actual": "an estimated or planned event (DCSA EST/PLN): not something that happened",
    "no_equivalent": "a real event with no counterpart in the contract (e.g. a DCSA document draft)",
    "no_shipment_id": "nothing in the event identifies a shipment",
    "unknown_kind": "an event-log record that names no topic and whose event_type fits none",
}

KINDS = ("orders", "shipments", "customs")
KEY_FIELD = {"orders": "order_id", "shipments": "shipment_id", "customs": "shipment_id"}

# The contract's timestamp pattern (schemas/*.schema.json $defs.timestamp).
_CONTRACT_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


class Converted(NamedTuple):
    events: list[tuple[str, dict]]
    rejects: list[tuple[object, str]]


def reject(code: str, detail: str) -> str:
    """A one-line reason "<code>: <detail>" (the code must be one of REASONS)."""
    assert code in REASONS, code
    return f"{code}: {' '.join(str(detail).split())}"


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0]


class Skip(Exception):
    """Raised inside an adapter to turn the current record into a reject."""

    def __init__(self, code: str, detail: str):
        super().__init__(reject(code, detail))
        self.reason = reject(code, detail)


def contract_time(value, field: str) -> str:
    """An ISO-8601 time with a UTC offset as the contract writes it; the instant and offset are kept.

    A value already in the contract's form is returned unchanged (so it survives byte for byte);
    another ISO-8601 spelling with an offset is re-rendered. Raises Skip(bad_timestamp) otherwise.
    """
    if not isinstance(value, str) or not value.strip():
        raise Skip("missing_field", f"{field} is missing")
    value = value.strip()
    if _CONTRACT_TIME.match(value):
        _parse(value, field)            # the form is right; is it a real date (not 2021-02-30)?
        return value
    return _parse(value, field).isoformat()


def _parse(value: str, field: str) -> datetime:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise Skip("bad_timestamp", f"{field}: {value!r} is not an ISO-8601 time") from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise Skip("bad_timestamp", f"{field}: {value!r} has no UTC offset")
    return dt


def epoch(value: str) -> float:
    """Epoch seconds of a contract time (for ordering adapter output by event time)."""
    return datetime.fromisoformat(value).timestamp()


def country(value) -> str | None:
    """A 2-letter upper-case code as the contract wants it, else None."""
    if isinstance(value, str) and _COUNTRY.match(value.strip()):
        return value.strip()
    return None


def parse_document(doc):
    """A feed document given as bytes or text, parsed; anything else is returned as it is."""
    if isinstance(doc, (bytes, bytearray, str)):
        try:
            return json.loads(doc)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Skip("not_json", f"not a JSON document: {exc}") from None
    return doc


def event_where(ev, index: int) -> str:
    """How a reject names a feed event: its eventID, else its position."""
    eid = ev.get("eventID") if isinstance(ev, dict) else None
    return eid if isinstance(eid, str) and eid else f"#{index}"
