"""Marketplace order exports (CSV tables) into order and shipment contract events, by a TOML mapping.

An export is a main table of orders (one row per order) plus lookup tables joined onto it
(customers, sellers, order items...). The mapping (streams/feeds/mappings/*.toml; olist.toml is the
worked example, docs/feeds.md the reference) names the tables, the joins and which column holds
each fact. Per order row:

- ``order_placed`` at ``placed_at``, with the seller and buyer countries, the service level and
  ``promised_delivery_at`` (``promise_is_date``: the column holds a calendar day, so the promise
  runs to 23:59:59 local time that day);
- ``order_cancelled`` when the status is one of ``cancelled_status``, at the latest of the
  ``cancelled_at`` columns that has a time (an export that records no cancellation time names
  the times it has: the cancellation happened at or after them);
- ``label_created`` (with ``order_ids`` = the order: the join link) and ``picked_up`` at the
  carrier hand-over ``handed_over_at``; ``delivered`` at ``delivered_at``. One shipment per order,
  id from the ``shipment_id`` template.

Countries: ``seller_country`` / ``buyer_country`` columns; when they are absent or empty the
``seller_region`` / ``buyer_region`` columns stand in (a 2-letter state code such as SP passes the
contract's country pattern, so the corridor is the state pair, SP-RJ). Times without an offset are
local times in the mapping's ``timezone``: a time that occurs twice when clocks go back is read as
the first, a time skipped when they go forward is read with the offset before the change
(``zoneinfo``'s fold=0); the event carries the offset (``-03:00``), never a guess in UTC.

Irregular rows: what is valid is kept, what cannot be applied is a reject naming the order id and
what was dropped (the row's other events are still produced):

- no order id, or no usable ``placed_at`` / seller / buyer country: the whole row is rejected
  (nothing joins or counts without the order);
- an unreadable promise: dropped (the SLA policy's promise applies);
- a hand-over or delivery time before the order was placed, or a delivery before the hand-over:
  that milestone is dropped (``irregular_time``); a shipment delivered without a readable hand-over
  gets its ``label_created`` (the order link) at the delivery time and no ``picked_up``;
- a status in ``delivered_status`` without a delivery time: the shipment stays open, noted as a
  reject (``missing_field``).
"""
from __future__ import annotations

import re
import string
import tomllib
from datetime import datetime
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.feeds import Converted, Skip, country, reject

SERVICE_LEVELS = ("economy", "standard", "express")


class MappingError(ValueError):
    """The mapping file is unreadable or does not fit the export; the message is one line."""


_SCHEMA = {
    "": {"name": str, "timezone": str, "region_codes": list, "tables": dict, "join": list, "order": dict, "shipment": dict},
    "join": {"table": str, "on": str, "key": str, "columns": list, "first_by": str},
    "order": {"order_id": str, "placed_at": str, "promised_delivery_at": str, "promise_is_date": bool,
              "seller_country": str, "seller_region": str, "buyer_country": str, "buyer_region": str,
              "service_level": str, "service_level_column": str, "status": str,
              "cancelled_status": list, "cancelled_at": list, "delivered_status": list},
    "shipment": {"shipment_id": str, "handed_over_at": str, "delivered_at": str, "carrier": str},
}
_REQUIRED = {"": ("timezone", "tables", "order", "shipment"), "join": ("table", "on", "key", "columns"),
             "order": ("order_id", "placed_at"), "shipment": ("handed_over_at", "delivered_at")}


def load_mapping(text: str, source: str = "mapping") -> dict:
    """Parse and check a mapping (TOML text); returns it with defaults filled in."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{source} is not valid TOML: {exc}") from None
    _check(doc, "", source)
    for i, join in enumerate(doc.get("join", [])):
        if not isinstance(join, dict):
            raise MappingError(f"{source}: [[join]] #{i + 1} is not a table")
        _check(join, "join", f"{source} [[join]] #{i + 1}")
        if join["table"] not in doc["tables"]:
            raise MappingError(f"{source} [[join]] #{i + 1}: table {join['table']!r} is not in [tables]")
    _check(doc["order"], "order", f"{source} [order]")
    _check(doc["shipment"], "shipment", f"{source} [shipment]")
    if "orders" not in doc["tables"]:
        raise MappingError(f"{source} [tables]: the main table must be named 'orders'")
    try:
        ZoneInfo(doc["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise MappingError(f"{source}: timezone {doc['timezone']!r} is not an IANA time zone") from None
    bad = [c for c in doc.get("region_codes", ()) if not (isinstance(c, str) and re.fullmatch(r"[A-Z]{2}", c))]
    if bad:
        raise MappingError(f"{source}: region_codes must be two capital letters each, not {bad[0]!r}")
    order = doc["order"]
    order.setdefault("service_level", "standard")
    if order["service_level"] not in SERVICE_LEVELS:
        raise MappingError(f"{source} [order]: service_level must be one of {', '.join(SERVICE_LEVELS)}")
    for side in ("seller", "buyer"):
        if not order.get(f"{side}_country") and not order.get(f"{side}_region"):
            raise MappingError(f"{source} [order]: give {side}_country or {side}_region (a column)")
    for key in ("cancelled_status", "cancelled_at", "delivered_status"):
        order.setdefault(key, [])
    doc["shipment"].setdefault("shipment_id", "{order_id}")
    doc.setdefault("join", [])
    doc.setdefault("name", source)
    return doc


def _check(section: dict, name: str, where: str) -> None:
    allowed = _SCHEMA[name]
    for key, value in section.items():
        if key not in allowed:
            raise MappingError(f"{where}: unknown key {key!r} (expected one of {', '.join(allowed)})")
        if not isinstance(value, allowed[key]):
            raise MappingError(f"{where}: {key} must be a {allowed[key].__name__}")
    missing = [k for k in _REQUIRED[name] if k not in section]
    if missing:
        raise MappingError(f"{where}: {', '.join(missing)} missing")


def convert(tables: Mapping[str, Sequence[Mapping[str, str]]], mapping: dict) -> Converted:
    """Contract events of every order row, in row order (orders first, then its shipment).

    `tables` maps each table name of the mapping to its rows (dicts of strings, "" = empty);
    `mapping` is what `load_mapping` returned. Raises MappingError when the export does not have
    the columns the mapping names.
    """
    tz = ZoneInfo(mapping["timezone"])
    orders = tables.get("orders")
    if orders is None:
        raise MappingError("no 'orders' table given")
    lookups = [_Lookup(join, tables) for join in mapping["join"]]
    columns = set(orders[0]) if orders else set()
    for lk in lookups:
        columns |= set(lk.columns)
    _check_columns(mapping, columns)
    events: list[tuple[str, dict]] = []
    rejects: list[tuple[object, str]] = []
    conv = _RowConverter(mapping, tz)
    for i, raw in enumerate(orders):
        row, misses = dict(raw), []
        for lk in lookups:
            lk.apply(row, misses)
        where = (row.get(mapping["order"]["order_id"]) or "").strip() or f"row {i + 2}"
        try:
            out, notes = conv.row(row, misses)
        except Skip as exc:
            rejects.append((where, exc.reason))
            continue
        events.extend(out)
        rejects.extend((where, note) for note in notes)
    return Converted(events, rejects)


def _check_columns(mapping: dict, columns: set) -> None:
    wanted = [v for k, v in mapping["order"].items()
              if isinstance(v, str) and k not in ("service_level",)]
    wanted += [c for c in mapping["order"]["cancelled_at"]]
    wanted += [mapping["shipment"][k] for k in ("handed_over_at", "delivered_at")]
    wanted += [f for _, f, _, _ in string.Formatter().parse(mapping["shipment"]["shipment_id"]) if f]
    missing = sorted({c for c in wanted if c and c not in columns})
    if missing:
        raise MappingError(f"the export has no column {', '.join(missing)} "
                           f"(columns: {', '.join(sorted(columns))})")


class _Lookup:
    """One [[join]]: index the table by `key`, copy `columns` of the matching row onto the order row."""

    def __init__(self, join: dict, tables: Mapping[str, Sequence[Mapping[str, str]]]):
        self.table, self.on, self.key = join["table"], join["on"], join["key"]
        self.columns = list(join["columns"])
        rows = tables.get(self.table)
        if rows is None:
            raise MappingError(f"no {self.table!r} table given")
        if rows and (self.key not in rows[0] or any(c not in rows[0] for c in self.columns)):
            want = [c for c in [self.key, *self.columns] if c not in rows[0]]
            raise MappingError(f"table {self.table} has no column {', '.join(want)}")
        first_by = join.get("first_by")
        index: dict[str, Mapping[str, str]] = {}
        for r in rows:
            k = (r.get(self.key) or "").strip()
            if not k:
                continue
            old = index.get(k)
            if old is None or (first_by and _sort_key(r.get(first_by)) < _sort_key(old.get(first_by))):
                index[k] = r
        self.index = index

    def apply(self, row: dict, misses: list[str]) -> None:
        k = (row.get(self.on) or "").strip()
        match = self.index.get(k)
        if match is None:
            if k:
                misses.append(f"no {self.table} row has {self.key} {k!r}")
            elif not misses:            # (an empty key after an earlier miss says nothing new)
                misses.append(f"{self.on} is empty")
            for c in self.columns:
                row.setdefault(c, "")
            return
        for c in self.columns:
            row[c] = match.get(c) or ""


def _sort_key(value):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


class _RowConverter:
    def __init__(self, mapping: dict, tz: ZoneInfo):
        self.o = mapping["order"]
        self.s = mapping["shipment"]
        self.tz = tz

    def time(self, row: dict, column: str | None, end_of_day: bool = False) -> tuple[str, float] | None:
        """(ISO-8601 with offset, epoch) of a local time column; None if empty; Skip if unreadable."""
        if not column:
            return None
        value = (row.get(column) or "").strip()
        if not value:
            return None
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise Skip("bad_timestamp", f"{column} {value!r} is not a date-time") from None
        if end_of_day:
            dt = dt.replace(hour=23, minute=59, second=59, microsecond=0)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=self.tz)
        return dt.isoformat(), dt.timestamp()

    def soft_time(self, row, column, notes, what: str, end_of_day: bool = False):
        try:
            return self.time(row, column, end_of_day)
        except Skip as exc:
            notes.append(f"{exc.reason}; {what}")
            return None

    def party(self, row: dict, side: str, misses: list[str]) -> str:
        cols = [c for c in (self.o.get(f"{side}_country"), self.o.get(f"{side}_region")) if c]
        for c in cols:
            value = (row.get(c) or "").strip()
            if value:
                code = country(value)
                if code is None:
                    raise Skip("bad_value", f"{c} {value!r} is not a 2-letter code")
                return code
        why = f" ({'; '.join(misses)})" if misses else ""
        raise Skip("missing_field", f"no {side} country: {' and '.join(cols)} empty{why}")

    def row(self, row: dict, misses: list[str]) -> tuple[list[tuple[str, dict]], list[str]]:
        o, s = self.o, self.s
        notes: list[str] = []
        oid = (row.get(o["order_id"]) or "").strip()
        if not oid:
            raise Skip("missing_field", f"{o['order_id']} is empty")
        placed = self.time(row, o["placed_at"])
        if placed is None:
            raise Skip("missing_field", f"{o['placed_at']} is empty: the order cannot be placed")
        seller, buyer = self.party(row, "seller", misses), self.party(row, "buyer", misses)
        level = o["service_level"]
        if o.get("service_level_column"):
            value = (row.get(o["service_level_column"]) or "").strip().lower()
            if value in SERVICE_LEVELS:
                level = value
            elif value:
                notes.append(reject("bad_value", f"{o['service_level_column']} {value!r} is not a "
                                    f"service level; {level} used"))
        base = {"order_id": oid, "seller_country": seller, "buyer_country": buyer,
                "service_level": level}
        placed_ev = {"event_id": f"{oid}:order_placed", "event_type": "order_placed",
                     "occurred_at": placed[0], **base}
        promised = self.soft_time(row, o.get("promised_delivery_at"), notes,
                                  "promise not applied (the SLA policy's applies)",
                                  o.get("promise_is_date", False))
        if promised is not None:
            placed_ev["promised_delivery_at"] = promised[0]
        out: list[tuple[str, dict]] = [("orders", placed_ev)]

        status = (row.get(o["status"]) or "").strip() if o.get("status") else ""
        if status and status in o["cancelled_status"]:
            times = [t for c in o["cancelled_at"]
                     if (t := self.soft_time(row, c, notes, "not used for the cancellation time"))]
            at = max(times, key=lambda t: t[1]) if times else placed
            out.append(("orders", {"event_id": f"{oid}:order_cancelled", "event_type": "order_cancelled",
                                   "occurred_at": at[0], **base}))

        sid = s["shipment_id"].format_map(row)
        handed = self.soft_time(row, s["handed_over_at"], notes, "picked_up not applied")
        delivered = self.soft_time(row, s["delivered_at"], notes, "delivered not applied")
        for name, t, col in (("picked_up", handed, s["handed_over_at"]),
                             ("delivered", delivered, s["delivered_at"])):
            if t is not None and t[1] < placed[1]:
                notes.append(reject("irregular_time", f"{col} {row[col]} is before {o['placed_at']} "
                                    f"{row[o['placed_at']]}; {name} not applied"))
                if name == "picked_up":
                    handed = None
                else:
                    delivered = None
        pick = handed
        if handed is not None and delivered is not None and delivered[1] < handed[1]:
            notes.append(reject("irregular_time", f"{s['delivered_at']} {row[s['delivered_at']]} is before "
                                f"{s['handed_over_at']} {row[s['handed_over_at']]}; picked_up not applied"))
            pick = None
        if delivered is None and status and status in o["delivered_status"]:
            notes.append(reject("missing_field", f"{o['status']} is {status} but {s['delivered_at']} is "
                                "empty: the shipment stays open"))
        label_at = handed or delivered
        if label_at is not None:
            facts = {"origin_country": seller, "destination_country": buyer}
            if s.get("carrier"):
                facts["carrier"] = s["carrier"]
            out.append(("shipments", {"event_id": f"{sid}:label_created", "shipment_id": sid,
                                      "event_type": "label_created", "occurred_at": label_at[0],
                                      "order_ids": [oid], **facts}))
            if pick is not None:
                out.append(("shipments", {"event_id": f"{sid}:picked_up", "shipment_id": sid,
                                          "event_type": "picked_up", "occurred_at": pick[0]}))
            if delivered is not None:
                out.append(("shipments", {"event_id": f"{sid}:delivered", "shipment_id": sid,
                                          "event_type": "delivered", "occurred_at": delivered[0]}))
        return out, notes

