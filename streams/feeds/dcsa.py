"""DCSA Track & Trace events (v2.2 and v3) into shipment and customs contract events.

A DCSA event tracks a container and the booking / transport document it carries; corridor tracks a
shipment. The shipment id is the event's booking reference (BKG), else its transport document
(TRD): the booking exists from the first event (confirmation) on, the transport document only once
it is issued, so preferring the booking keeps one shipment's events under one id (``id_from``
changes the order). ``event_id`` is the DCSA ``eventID``; ``occurred_at`` is ``eventDateTime`` as
sent, offset included. Only actual events (classifier ACT) are converted: estimated and planned
times are not things that happened.

Which side of the voyage an event is on decides what it means (a vessel arrival at a
transshipment port is not the arrival at destination):

1. the event's own phase, when it has one (v3 ``movementType`` / ``transportPhase``:
   EXPORT, IMPORT; TRANSSHIPMENT converts to nothing);
2. else the port's country (UN/LOCODE) against the shipment's destination country, when it is
   known (``destinations[shipment_id]`` or ``default_destination``, from the mapping file):
   in the destination country = import side, elsewhere = export side;
3. else a direct port-to-port voyage is assumed: DEPA, LOAD, GTIN, PICK happen at origin; ARRI,
   DISC, GTOT, DROP and customs at destination.

=============  ===========  =====================================================
DCSA           side         contract event
=============  ===========  =====================================================
TRANSPORT DEPA export       shipments departed_origin (origin_country = port's)
TRANSPORT ARRI import       shipments arrived_destination (destination_country)
EQUIPMENT PICK export       shipments picked_up (collected at the shipper)
EQUIPMENT GTIN export       shipments picked_up (gated into the origin terminal)
EQUIPMENT LOAD export       shipments departed_origin (on board at the port of loading)
EQUIPMENT DISC import       shipments arrived_destination (off the vessel at destination)
EQUIPMENT GTOT import       shipments out_for_delivery (gated out towards the consignee)
EQUIPMENT DROP import       shipments delivered (dropped at the consignee)
EQUIPMENT CUSI any          customs held_for_inspection (selected for inspection)
EQUIPMENT CUSS any          customs held_for_inspection (selected for scan: held too)
EQUIPMENT CUSR any          customs released
SHIPMENT CONF  -            shipments label_created, only with PO references (order_ids)
=============  ===========  =====================================================

A milestone counts at its earliest time (docs/semantics.md), so a LOAD before the vessel's DEPA
starts linehaul at loading; a DEPA from a later transshipment port changes nothing. Equipment
moves of an EMPTY container, the other side's counterpart of a row (ARRI on the export side, GTIN on
the import side, ...), the other codes (STUF, STRP, INSP, ...), the other SHIPMENT codes (document
workflow), IOT and REEFER events have no equivalent and are rejected with reason ``no_equivalent``.
Customs events take the direction from the side, the country from the event's location, and
the declaration id from a CUS document reference, else ``<shipment>/<direction>/<country>``.

v2.2 puts the codes at the top level (``eventType``, ``transportEventTypeCode``, ...,
``documentReferences``, ``transportCall``); v3 in ``eventClassification`` and ``shipmentDetails``.
The spelled-out codes of T&T 3.0.0 (``ARRIVED``, ``CUSTOMS_RELEASED``, ``ACTUAL``, ``BOOKING``...)
are read as their 4-letter forms.
"""
from __future__ import annotations

from typing import Mapping

from streams.feeds import Converted, Skip, contract_time, country, event_where, parse_document

#: T&T 3.0.0 spells the codes out; v2.2 and the v3 beta use these 4-letter forms.
LONG_CODES = {
    "ARRIVED": "ARRI", "DEPARTED": "DEPA",
    "LOADED": "LOAD", "DISCHARGED": "DISC", "GATED_IN": "GTIN", "GATED_OUT": "GTOT",
    "PICKED_UP": "PICK", "DROPPED_OFF": "DROP", "STUFFED": "STUF", "STRIPPED": "STRP",
    "INSPECTED": "INSP", "RESEALED": "RSEA", "REMOVED": "RMVD", "CROSSED": "CROS",
    "AVAILABLE_FOR_PICKUP": "AVPU", "AVAILABLE_FOR_DROP_OFF": "AVDO",
    "CUSTOMS_SELECTED_FOR_INSPECTION": "CUSI", "CUSTOMS_SELECTED_FOR_SCAN": "CUSS",
    "CUSTOMS_RELEASED": "CUSR", "CONFIRMED": "CONF",
    "ACTUAL": "ACT", "ESTIMATED": "EST", "PLANNED": "PLN",
    "BOOKING": "BKG", "TRANSPORT_DOCUMENT": "TRD", "CUSTOMS_CLEARANCE": "CUS", "PURCHASE_ORDER": "PO",
}
EVENT_TYPES = ("TRANSPORT", "EQUIPMENT", "SHIPMENT", "IOT", "REEFER")
TRANSPORT_CODES = {"ARRI", "DEPA", "APPROACHING"}
EQUIPMENT_CODES = {"LOAD", "DISC", "GTIN", "GTOT", "STUF", "STRP", "PICK", "DROP", "INSP", "RSEA",
                   "RMVD", "AVPU", "AVDO", "CUSS", "CUSI", "CUSR", "CROS"}
#: The side each code happens on when nothing else tells (a direct port-to-port voyage).
NATURAL_SIDE = {"DEPA": "export", "LOAD": "export", "GTIN": "export", "PICK": "export",
                "ARRI": "import", "DISC": "import", "GTOT": "import", "DROP": "import",
                "CUSI": "import", "CUSS": "import", "CUSR": "import"}
#: (code, side) -> shipment event type.
SHIPMENT_MAP = {
    ("DEPA", "export"): "departed_origin", ("ARRI", "import"): "arrived_destination",
    ("PICK", "export"): "picked_up", ("GTIN", "export"): "picked_up",
    ("LOAD", "export"): "departed_origin", ("DISC", "import"): "arrived_destination",
    ("GTOT", "import"): "out_for_delivery", ("DROP", "import"): "delivered",
}
#: code -> customs event type (either direction).
CUSTOMS_MAP = {"CUSI": "held_for_inspection", "CUSS": "held_for_inspection", "CUSR": "released"}


def convert(doc, *, destinations: Mapping[str, str] | None = None,
            default_destination: str | None = None,
            id_from: tuple[str, ...] = ("BKG", "TRD")) -> Converted:
    """Convert one DCSA document: a JSON text/bytes, a list of events (v2.2 response), an object
    with ``events`` (v3 request/response) or a single event object."""
    events, rejects = [], []
    try:
        items = event_list(doc)
    except Skip as exc:
        return Converted([], [("document", exc.reason)])
    destinations = destinations or {}
    for i, ev in enumerate(items):
        where = event_where(ev, i)
        try:
            events.append(_convert_event(ev, destinations, default_destination, id_from))
        except Skip as exc:
            rejects.append((where, exc.reason))
    return Converted(events, rejects)


def event_list(doc) -> list:
    doc = parse_document(doc)
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if isinstance(doc.get("events"), list):
            return doc["events"]
        if "eventID" in doc or "eventType" in doc or "eventClassification" in doc:
            return [doc]
    raise Skip("bad_document", "expected a list of DCSA events, an object with 'events', or one event")


def _convert_event(ev, destinations, default_destination, id_from) -> tuple[str, dict]:
    if not isinstance(ev, dict):
        raise Skip("bad_document", "an event is not a JSON object")
    event_id = ev.get("eventID")
    if not isinstance(event_id, str) or not event_id:
        raise Skip("missing_field", "eventID is missing")
    if ev.get("isRetracted") is True:
        raise Skip("no_equivalent", "a retracted event (isRetracted): the contract has no retraction")
    occurred_at = contract_time(ev.get("eventDateTime"), "eventDateTime")

    cls = ev.get("eventClassification") if isinstance(ev.get("eventClassification"), dict) else ev
    etype = _first(cls, "eventTypeCode", "eventType")
    if etype not in EVENT_TYPES:
        raise Skip("unknown_event_type" if etype else "missing_field",
                   f"eventType {etype!r} is not one of {', '.join(EVENT_TYPES)}" if etype
                   else "eventType is missing")
    classifier = _code(_first(cls, "eventClassifierCode", "eventClassifier"))
    if not classifier:
        raise Skip("missing_field", "eventClassifierCode is missing")
    if classifier != "ACT":
        raise Skip("not_actual", f"{etype} event classified {classifier} (only ACT events happened)")
    if etype in ("IOT", "REEFER"):
        raise Skip("no_equivalent", f"{etype} events (sensor readings) have no contract counterpart")
    code = _code(_first(cls, f"{etype.lower()}EventTypeCode", f"{etype.lower()}EventType"))
    if not code:
        raise Skip("missing_field", f"{etype.lower()}EventTypeCode is missing")

    equipment = _equipment(ev)
    if etype == "SHIPMENT":
        return _shipment_event(ev, code, event_id, occurred_at, id_from)
    known = TRANSPORT_CODES if etype == "TRANSPORT" else EQUIPMENT_CODES
    if code not in known:
        raise Skip("unknown_event_type", f"{etype} code {code!r} is not a DCSA {etype.lower()} event type")
    if code not in NATURAL_SIDE:
        raise Skip("no_equivalent", f"{etype} {code} has no contract counterpart")
    if code not in CUSTOMS_MAP and _code(_first(equipment, "emptyIndicatorCode", "emptyIndicator")) == "EMPTY":
        raise Skip("no_equivalent", f"{etype} {code} of an empty container is not the cargo's journey")

    loc_country, facility = _location(ev)
    sid = _shipment_id(ev, id_from)
    dest = country(destinations.get(sid)) if sid else None
    dest = dest or country(default_destination)
    side = _side(code, _code(_first(equipment, "movementType", "transportPhase")), loc_country, dest)
    where = f" at {facility}" if facility else ""

    if code in CUSTOMS_MAP:
        if sid is None:
            raise _no_shipment(etype, code)
        ccountry = loc_country or (dest if side == "import" else None)
        if ccountry is None:
            raise Skip("missing_field", f"{etype} {code}: a customs event needs the country, and the "
                       "event's location has no UN/LOCODE or countryCode")
        decl = _references(ev, ("CUS",)) or [f"{sid}/{side}/{ccountry}"]
        return "customs", {"event_id": event_id, "shipment_id": sid, "declaration_id": decl[0],
                           "direction": side, "country": ccountry,
                           "event_type": CUSTOMS_MAP[code], "occurred_at": occurred_at}

    contract_type = SHIPMENT_MAP.get((code, side))
    if contract_type is None:
        why = (f"the destination is {dest}" if dest and loc_country else f"its phase is {side}")
        raise Skip("no_equivalent", f"{etype} {code}{where} is on the {side} side ({why}): "
                   "not a milestone of the shipment")
    if sid is None:
        raise _no_shipment(etype, code)
    out = {"event_id": event_id, "shipment_id": sid, "event_type": contract_type,
           "occurred_at": occurred_at}
    if side == "export" and loc_country:
        out["origin_country"] = loc_country
    if dest or (side == "import" and loc_country):
        out["destination_country"] = dest or loc_country
    carrier = _carrier(ev)
    if carrier:
        out["carrier"] = carrier
    location = {k: v for k, v in (("country", loc_country), ("facility", facility)) if v}
    if location:
        out["location"] = location
    return "shipments", out


def _shipment_event(ev, code, event_id, occurred_at, id_from) -> tuple[str, dict]:
    if code != "CONF":
        raise Skip("no_equivalent", f"SHIPMENT {code} (document workflow) has no contract counterpart")
    orders = _references(ev, ("PO",))
    if not orders:
        raise Skip("no_equivalent", "SHIPMENT CONF names no purchase order (PO reference), so it "
                   "cannot link the shipment to orders as label_created must")
    sid = _shipment_id(ev, id_from)
    if sid is None:
        raise _no_shipment("SHIPMENT", code)
    out = {"event_id": event_id, "shipment_id": sid, "event_type": "label_created",
           "occurred_at": occurred_at, "order_ids": orders}
    carrier = _carrier(ev)
    if carrier:
        out["carrier"] = carrier
    return "shipments", out


def _no_shipment(etype: str, code: str) -> Skip:
    return Skip("no_shipment_id", f"{etype} {code} names no booking (BKG) or transport document (TRD)")


def _side(code: str, phase: str | None, loc_country: str | None, dest: str | None) -> str:
    if phase == "TRANSSHIPMENT":
        raise Skip("no_equivalent", f"{code} during transshipment is not a milestone of the shipment")
    if phase in ("EXPORT", "IMPORT"):
        return phase.lower()
    if dest and loc_country:
        return "import" if loc_country == dest else "export"
    return NATURAL_SIDE[code]


# ---- field access across versions -------------------------------------------------------------
def _first(obj, *names):
    if not isinstance(obj, dict):
        return None
    for name in names:
        value = obj.get(name)
        if value not in (None, ""):
            return value
    return None


def _code(value) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return LONG_CODES.get(value, value)


def _equipment(ev: dict) -> dict:
    details = ev.get("equipmentDetails")
    return details if isinstance(details, dict) else ev


def _doc_refs(ev: dict) -> list[tuple[str, str]]:
    """(type, value) of every document reference, in the order the event lists them."""
    out = []

    def add(item):
        if isinstance(item, dict):
            typ = _code(_first(item, "documentReferenceType", "typeCode", "type"))
            val = _first(item, "documentReferenceValue", "reference")
            if typ and isinstance(val, str):
                out.append((typ, val))

    for item in ev.get("documentReferences") or ():
        add(item)
    details = ev.get("shipmentDetails")
    if isinstance(details, dict):
        add(details.get("documentReference"))
        for key in ("additionalDocumentReferences", "documentReferences"):
            for item in details.get(key) or ():
                add(item)
    if isinstance(ev.get("documentID"), str):      # v2.2 SHIPMENT events
        typ = _code(ev.get("documentTypeCode"))
        if typ:
            out.append((typ, ev["documentID"]))
    return out


def _shipment_id(ev: dict, id_from: tuple[str, ...]) -> str | None:
    refs = _doc_refs(ev)
    for wanted in id_from:
        for typ, val in refs:
            if typ == wanted and val.strip():
                return val.strip()
    return None


def _references(ev: dict, types: tuple[str, ...]) -> list[str]:
    """Values of `references` (PO, ...) and of document references of the given types."""
    out = []
    lists = [ev.get("references")]
    if isinstance(ev.get("shipmentDetails"), dict):
        lists.append(ev["shipmentDetails"].get("references"))
    for refs in lists:
        for item in refs or ():
            if isinstance(item, dict):
                typ = _code(_first(item, "referenceType", "type"))
                val = _first(item, "referenceValue", "value", "reference")
                if typ in types and isinstance(val, str) and val not in out:
                    out.append(val)
    for typ, val in _doc_refs(ev):
        if typ in types and val not in out:
            out.append(val)
    return out


def _location(ev: dict) -> tuple[str | None, str | None]:
    """(country, facility) from the event location, else the transport call."""
    call = ev.get("transportCall")
    if not isinstance(call, dict):
        details = ev.get("transportDetails")
        call = details.get("transportCall") if isinstance(details, dict) else None
    candidates = [ev.get("eventLocation")]
    if isinstance(call, dict):
        candidates += [call.get("location"), call]
    for loc in candidates:
        if not isinstance(loc, dict):
            continue
        unloc = loc.get("UNLocationCode")
        address = loc.get("address") if isinstance(loc.get("address"), dict) else {}
        c = country(unloc[:2]) if isinstance(unloc, str) and len(unloc) == 5 else None
        c = c or country(address.get("countryCode"))
        facility = unloc if isinstance(unloc, str) and unloc else loc.get("locationName")
        if c or facility:
            return c, (facility[:200] if isinstance(facility, str) else None)
    return None, None


def _carrier(ev: dict) -> str | None:
    routing = ev.get("eventRouting")
    if isinstance(routing, dict):
        parties = [routing.get("originatingParty")] + list(routing.get("originatingParties") or ())
        for party in parties:
            if isinstance(party, dict) and party.get("partyFunction") == "CA" \
                    and isinstance(party.get("partyCode"), str) and party["partyCode"]:
                return party["partyCode"]
    call = ev.get("transportCall")
    vessel = call.get("vessel") if isinstance(call, dict) else None
    if isinstance(vessel, dict) and isinstance(vessel.get("vesselOperatorCarrierCode"), str):
        return vessel["vesselOperatorCarrierCode"] or None
    return None
