"""GS1 EPCIS 2.0 ObjectEvents (JSON / JSON-LD) into shipment contract events.

An ObjectEvent says what happened (``bizStep``, ``disposition``) to some objects (``epcList``) at a
time (``eventTime``). The shipment is each object: every instance EPC in ``epcList`` gets its own
shipment event (a case shipped with two serialised items tracks two parcels). With
``shipment_key="<type>"`` the shipment is instead the business transaction of that type (e.g.
``desadv`` for the despatch advice, ``bol`` for the bill of lading). An event that names only
quantities of a class (``quantityList``) identifies no parcel and is rejected (``no_shipment_id``).

``event_id`` is the EPCIS ``eventID`` (the same id on each EPC's event: dedupe is per shipment);
an event without one gets ``epcis:sha256:<hash of the event's canonical JSON>``, so a replayed
document dedupes. ``occurred_at`` is ``eventTime`` written in the event's ``eventTimeZoneOffset``
(the local time where it happened; the same instant). Purchase orders in ``bizTransactionList``
(type ``po``) become ``order_ids``, which links the shipment to its orders. The location is the
``bizLocation`` (else ``readPoint``) id as the facility; its country only when the mapping's
``locations`` table names it (an SGLN's company prefix says where the company registered, not
where the place is).

===================  ======================================================================
bizStep              contract event
===================  ======================================================================
shipping             picked_up (the goods leave the shipper: CBV's shipping covers staging,
                     loading and departing at the shipper's site)
departing            departed_origin
arriving             arrived_destination
receiving            delivered (added to the receiver's inventory)
===================  ======================================================================

Whatever the step, disposition ``returned`` gives ``returned`` and ``stolen`` / ``destroyed`` give
``lost``. Every other CBV step (``inspecting``, ``transporting``, ``loading``, ``storing``,
``void_shipping`` ...) has no shipment milestone and is rejected with ``no_equivalent``
(``inspecting`` is a quality check, not customs; customs events come from customs feeds). A step
outside the CBV vocabulary is ``unknown_event_type``; other event types (TransactionEvent,
AggregationEvent, ...) are ``unsupported_event``; ``action: DELETE`` is ``no_equivalent``.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Mapping

from streams.feeds import Converted, Skip, contract_time, country, event_where, parse_document

#: The CBV 2.0 business steps (../shared/data/standards/epcis/bizStep-JSON-Schema.json).
CBV_BIZ_STEPS = frozenset((
    "accepting", "arriving", "assembling", "collecting", "commissioning", "consigning",
    "creating_class_instance", "cycle_counting", "decommissioning", "departing", "destroying",
    "disassembling", "dispensing", "encoding", "entering_exiting", "holding", "inspecting",
    "installing", "killing", "loading", "other", "packing", "picking", "receiving", "removing",
    "repackaging", "repairing", "replacing", "reserving", "retail_selling", "shipping",
    "staging_outbound", "stock_taking", "stocking", "storing", "transporting", "unloading",
    "unpacking", "void_shipping", "sensor_reporting", "sampling"))
BIZ_STEP_MAP = {"shipping": "picked_up", "departing": "departed_origin",
                "arriving": "arrived_destination", "receiving": "delivered"}
DISPOSITION_MAP = {"returned": "returned", "stolen": "lost", "destroyed": "lost"}
_PREFIXES = ("urn:epcglobal:cbv:bizstep:", "urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/BizStep-",
             "https://ref.gs1.org/cbv/Disp-", "https://gs1.org/voc/BizStep-", "https://gs1.org/voc/Disp-",
             "cbv:BizStep-", "cbv:Disp-", "gs1:BizStep-", "gs1:Disp-")


def convert(doc, *, shipment_key: str = "epc", locations: Mapping[str, str] | None = None) -> Converted:
    """Convert an EPCISDocument / EPCISQueryDocument (text, bytes or parsed), a list of events or one
    event."""
    try:
        items = event_list(doc)
    except Skip as exc:
        return Converted([], [("document", exc.reason)])
    events, rejects = [], []
    for i, ev in enumerate(items):
        where = event_where(ev, i)
        try:
            events.extend(_convert_event(ev, shipment_key, locations or {}))
        except Skip as exc:
            rejects.append((where, exc.reason))
    return Converted(events, rejects)


def event_list(doc) -> list:
    doc = parse_document(doc)
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        body = doc.get("epcisBody")
        if isinstance(body, dict):
            if isinstance(body.get("eventList"), list):
                return body["eventList"]
            results = (body.get("queryResults") or {}).get("resultsBody") or {}
            if isinstance(results, dict) and isinstance(results.get("eventList"), list):
                return results["eventList"]
            raise Skip("bad_document", "epcisBody has no eventList")
        if isinstance(doc.get("type"), str) and doc["type"].endswith("Event"):
            return [doc]
    raise Skip("bad_document", "expected an EPCISDocument, a list of events or one event")


def _convert_event(ev, shipment_key: str, locations: Mapping[str, str]) -> list[tuple[str, dict]]:
    if not isinstance(ev, dict):
        raise Skip("bad_document", "an event is not a JSON object")
    etype = ev.get("type")
    if etype != "ObjectEvent":
        raise Skip("unsupported_event" if etype else "missing_field",
                   f"{etype}: only ObjectEvents are converted" if etype else "type is missing")
    occurred_at = _event_time(ev)
    if ev.get("action") == "DELETE":
        raise Skip("no_equivalent", "action DELETE: the objects cease to exist, nothing was moved")
    step = _vocab(ev.get("bizStep"))
    disposition = _vocab(ev.get("disposition"))
    contract_type = DISPOSITION_MAP.get(disposition)
    if contract_type is None:
        if not step:
            raise Skip("no_equivalent", "no bizStep and no disposition that marks a shipment milestone")
        if step not in CBV_BIZ_STEPS:
            raise Skip("unknown_event_type", f"bizStep {ev.get('bizStep')!r} is not a CBV business step")
        contract_type = BIZ_STEP_MAP.get(step)
        if contract_type is None:
            raise Skip("no_equivalent", f"bizStep {step} has no shipment milestone")

    event_id = ev.get("eventID") if isinstance(ev.get("eventID"), str) and ev["eventID"] else _hash_id(ev)
    shipments = _shipments(ev, shipment_key)
    orders = _transactions(ev, "po")
    facility = _id(ev.get("bizLocation")) or _id(ev.get("readPoint"))
    location = {}
    if facility:
        c = country(locations.get(facility))
        if c:
            location["country"] = c
        location["facility"] = facility[:200]
    out = []
    for sid in shipments:
        item = {"event_id": event_id, "shipment_id": sid, "event_type": contract_type,
                "occurred_at": occurred_at}
        if orders:
            item["order_ids"] = orders
        if location:
            item["location"] = dict(location)
        out.append(("shipments", item))
    return out


def _event_time(ev: dict) -> str:
    """eventTime written in eventTimeZoneOffset (the same instant)."""
    value = contract_time(ev.get("eventTime"), "eventTime")
    offset = ev.get("eventTimeZoneOffset")
    if not isinstance(offset, str) or not offset:
        return value
    try:
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = offset.lstrip("+-").split(":")
        tz = timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
    except (ValueError, IndexError):
        raise Skip("bad_timestamp", f"eventTimeZoneOffset {offset!r} is not ±HH:MM") from None
    dt = datetime.fromisoformat(value)
    if dt.utcoffset() == tz.utcoffset(None):
        return value                     # already local: keep it as sent
    return dt.astimezone(tz).isoformat()


def _vocab(value) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    for prefix in _PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix):]
    return value


def _id(ref) -> str | None:
    if isinstance(ref, dict) and isinstance(ref.get("id"), str) and ref["id"]:
        return ref["id"]
    return ref if isinstance(ref, str) and ref else None


def _transactions(ev: dict, typ: str) -> list[str]:
    out = []
    for item in ev.get("bizTransactionList") or ():
        if isinstance(item, dict) and _vocab_bt(item.get("type")) == typ:
            value = item.get("bizTransaction")
            if isinstance(value, str) and value and value not in out:
                out.append(value[:200])
    return out


def _vocab_bt(value) -> str | None:
    if not isinstance(value, str):
        return None
    for prefix in ("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-", "cbv:BTT-", "gs1:BTT-"):
        if value.startswith(prefix):
            return value[len(prefix):]
    return value


def _shipments(ev: dict, shipment_key: str) -> list[str]:
    if shipment_key != "epc":
        ids = _transactions(ev, shipment_key)
        if not ids:
            raise Skip("no_shipment_id", f"the event has no bizTransaction of type {shipment_key}")
        return ids[:1]
    epcs = [e for e in ev.get("epcList") or () if isinstance(e, str) and e]
    if not epcs:
        what = "only quantities of a class (quantityList)" if ev.get("quantityList") else "no epcList"
        raise Skip("no_shipment_id", f"the event names {what}: no instance to track as a shipment")
    return [e[:200] for e in dict.fromkeys(epcs)]


def _hash_id(ev: dict) -> str:
    canonical = json.dumps(ev, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "epcis:sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
