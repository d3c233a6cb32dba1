"""Decode and validate raw Kafka messages at the edge: bytes in, a checked dict or `Rejected` out.

The JSON Schema files in schemas/ are the only statement of the wire rules; this module compiles
them once per Decoder and adds just what a schema cannot say: timestamps must be real instants
within a sane range of the clock, country codes must be ISO 3166-1 alpha-2 codes (the schema
only says "two capital letters": 676 codes, and every seller x buyer pair is a metric label), and
the message key must equal the body's id field (the
schema's "x-kafka-key"), because partitioning, and so every per-shipment table, relies on it.

A rejection carries a `reason` from a small fixed set (REASONS), fit for a metric label and a
dead-letter header, and a one-line `detail` for the log that names the offending field.

No faust import: this is the per-event hot path and is tested as plain Python.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import jsonschema_rs
import orjson
from iso3166 import countries_by_alpha2
from jsonschema import Draft202012Validator

from streams.domain.stages import parse_time  # noqa: F401  (re-exported: the codec's time rule)
from jsonschema.exceptions import best_match

REASONS = (
    "empty",
    "too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "schema",
    "unknown_event_type",
    "bad_timestamp",
    "missing_key",
    "key_mismatch",
    "unknown_country",
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_FILES = {
    "orders": "orders.schema.json",
    "shipments": "shipments.schema.json",
    "customs": "customs-events.schema.json",
}
KINDS = tuple(SCHEMA_FILES)

#: The event-time field every topic carries; other date-time fields are checked relative to it.
EVENT_TIME_FIELD = "occurred_at"
_EPOCH_2000 = 946684800.0  # 2000-01-01T00:00:00Z: anything earlier is a producer bug, not history
_DETAIL_MAX = 200
#: The schemas' pattern for a country code; fields with it are checked against ISO 3166-1.
COUNTRY_PATTERN = "^[A-Z]{2}$"
#: ISO 3166-1 alpha-2: the 249 officially assigned codes and XK (Kosovo, user-assigned but used
#: by customs and carriers alike), as the maintained iso3166 package lists them.
COUNTRIES = frozenset(countries_by_alpha2)


class Rejected(Exception):
    """A message that fails the contract. `reason` is one of REASONS; `detail` is one line."""

    def __init__(self, reason: str, detail: str) -> None:
        detail = _one_line(detail)
        super().__init__(reason, detail)  # both in args, so the exception pickles
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def load_schema(kind: str) -> dict:
    """The parsed JSON Schema for a topic kind ("orders", "shipments" or "customs")."""
    try:
        name = SCHEMA_FILES[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}") from None
    with open(SCHEMA_DIR / name, "rb") as f:
        return json.load(f)


class Decoder:
    """Per-topic decoder; build one per topic at start-up and call `decode` per message.

    `max_future_seconds` bounds occurred_at against `clock()` (producer clock skew, unit bugs).
    Other date-time fields (promised_delivery_at) are forward-looking by nature, so instead they
    may be at most `max_horizon_seconds` after the event's occurred_at.
    """

    def __init__(
        self,
        kind: str,
        *,
        max_bytes: int = 65536,
        max_future_seconds: float = 7 * 86400,
        max_horizon_seconds: float = 366 * 86400,
        clock: Callable[[], float] = time.time,
        countries: frozenset[str] = None,
    ) -> None:
        self.kind = kind
        self.countries = COUNTRIES if countries is None else countries
        self.schema = load_schema(kind)
        # A broken schema file should stop the worker at start-up, not reject every event.
        Draft202012Validator.check_schema(self.schema)
        # Same rules with the local $refs expanded in place: jsonschema's $ref resolution is
        # about 40% of the validation time per event, and these schemas only use $ref to
        # avoid repeating a pattern.
        inlined = inline_refs(self.schema)
        self._validator = Draft202012Validator(ecma_anchors(inlined))
        # The same schema compiled by jsonschema-rs answers valid/invalid in ~1 us instead of ~45;
        # the Python validator runs only on a failure, to name the error. Formats are
        # annotations for both (the patterns carry the rules), so they agree.
        self._fast = jsonschema_rs.validator_for(inlined, validate_formats=False)
        self.key_field: str = self.schema["x-kafka-key"]
        self.event_types = frozenset(inlined["properties"]["event_type"]["enum"])
        self.time_fields = tuple(
            name for name, sub in inlined["properties"].items() if sub.get("format") == "date-time"
        )
        if EVENT_TIME_FIELD not in self.time_fields:
            raise ValueError(f"{kind} schema has no date-time {EVENT_TIME_FIELD}")
        self._other_time_fields = tuple(f for f in self.time_fields if f != EVENT_TIME_FIELD)
        self.country_paths = country_paths(inlined)
        self.max_bytes = max_bytes
        self.max_future_seconds = max_future_seconds
        self.max_horizon_seconds = max_horizon_seconds
        self._clock = clock

    def decode(self, key: bytes | None, value: bytes | None) -> dict:
        """The message body as a dict (unknown fields kept), or raise Rejected."""
        if not value:
            raise Rejected("empty", "message has no value")
        if len(value) > self.max_bytes:
            raise Rejected("too_large", f"value is {len(value)} bytes, max {self.max_bytes}")
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            # orjson also refuses bad UTF-8; only on failure pay for telling the two apart.
            try:
                str(value, "utf-8")
            except UnicodeDecodeError as uexc:
                raise Rejected("not_utf8", f"invalid UTF-8 at byte {uexc.start}") from None
            raise Rejected("not_json", str(exc)) from None
        if type(doc) is not dict:
            raise Rejected("not_object", f"top-level JSON value is {_json_type(doc)}, expected object")

        # Checked before the schema so a new event type from a newer producer is counted as
        # such, not buried among malformed messages.
        event_type = doc.get("event_type")
        if type(event_type) is str and event_type not in self.event_types:
            raise Rejected(
                "unknown_event_type",
                f"event_type: {event_type!r} is not one of {', '.join(sorted(self.event_types))}",
            )

        if not self._fast.is_valid(doc):
            self._raise_schema_error(doc)
        for path in self.country_paths:
            self._check_country(doc, path)

        event_time = self._check_time(doc, EVENT_TIME_FIELD)
        if event_time > self._clock() + self.max_future_seconds:
            raise Rejected(
                "bad_timestamp",
                f"{EVENT_TIME_FIELD}: {doc[EVENT_TIME_FIELD]!r} is more than "
                f"{_span(self.max_future_seconds)} ahead of the clock",
            )
        for name in self._other_time_fields:
            if name in doc:
                t = self._check_time(doc, name)
                if t > event_time + self.max_horizon_seconds:
                    raise Rejected(
                        "bad_timestamp",
                        f"{name}: {doc[name]!r} is more than {_span(self.max_horizon_seconds)} "
                        f"after {EVENT_TIME_FIELD}",
                    )

        if not key:
            raise Rejected("missing_key", f"message has no key; expected the {self.key_field}")
        expected = doc[self.key_field]
        if type(key) is str:
            got = key
        else:
            try:
                got = str(key, "utf-8")
            except UnicodeDecodeError:
                raise Rejected("key_mismatch", f"key {key!r} is not UTF-8") from None
        if got != expected:
            raise Rejected("key_mismatch", f"key {got!r} != {self.key_field} {expected!r}")
        return doc

    def _check_country(self, doc: dict, path: tuple[str, ...]) -> None:
        node = doc
        for part in path:
            node = node.get(part) if type(node) is dict else None
        if node is not None and node not in self.countries:
            raise Rejected("unknown_country", f"{'.'.join(path)}: {node!r} is not an ISO 3166-1 "
                                              "alpha-2 country code")

    def _check_time(self, doc: dict, name: str) -> float:
        try:
            t = parse_time(doc[name])
        except ValueError as exc:
            raise Rejected("bad_timestamp", f"{name}: {exc}") from None
        if t < _EPOCH_2000:
            raise Rejected("bad_timestamp", f"{name}: {doc[name]!r} is before 2000-01-01T00:00:00Z")
        return t

    def _raise_schema_error(self, doc: dict) -> None:
        errors = list(self._validator.iter_errors(doc))
        # A string date-time field that fails its pattern is a timestamp problem (no offset,
        # not a date), and gets the same reason and wording as one that fails parse_time.
        # Anything else wrong with the message wins: report it as a schema error.
        time_errors = [
            e
            for e in errors
            if len(e.absolute_path) == 1
            and e.absolute_path[0] in self.time_fields
            and isinstance(e.instance, str)
        ]
        if errors and len(time_errors) == len(errors):
            name = time_errors[0].absolute_path[0]
            self._check_time(doc, name)  # raises with parse_time's explanation if it can
            raise Rejected(
                "bad_timestamp",
                f"{name}: {doc[name]!r} is not of the form YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)",
            )
        err = best_match(errors)
        if err is None:     # the two validators disagree: trust the stricter, say so
            raise Rejected("schema", "does not match the schema (jsonschema-rs)")
        raise Rejected("schema", f"{err.json_path}: {err.message}")


def accepted_countries(region_codes=()) -> frozenset[str]:
    """ISO 3166-1 and the extra two-letter region codes a deployment accepts as countries
    (CORRIDOR_REGION_CODES, a csv-orders mapping's region_codes: e.g. the states of a domestic
    marketplace, as in the Olist data)."""
    return COUNTRIES | frozenset(region_codes)


def country_paths(schema: dict, prefix: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    """The property paths (("destination_country",), ("location", "country"), ...) whose schema is
    a country code (COUNTRY_PATTERN), in an inlined schema."""
    found: list[tuple[str, ...]] = []
    for name, sub in schema.get("properties", {}).items():
        if not isinstance(sub, dict):
            continue
        if sub.get("pattern") == COUNTRY_PATTERN:
            found.append(prefix + (name,))
        elif "properties" in sub:
            found.extend(country_paths(sub, prefix + (name,)))
    return tuple(found)


def ecma_anchors(node):
    """A copy of a schema whose "pattern"s end in \\Z where they end in $.

    JSON Schema patterns are ECMA-262, where $ matches only at the end (as in jsonschema-rs);
    the Python validator uses re.search, where $ also matches before a final newline.
    """
    if isinstance(node, list):
        return [ecma_anchors(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: ecma_anchors(v) for k, v in node.items()}
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.endswith("$") and not pattern.endswith("\\$"):
        out["pattern"] = pattern[:-1] + "\\Z"
    return out


def inline_refs(schema: dict) -> dict:
    """A copy of `schema` with every local "$ref" ("#/...") replaced by its target.

    Keywords beside a $ref (a description, say) are kept alongside the target's; "$defs" is
    dropped as nothing points at it any more. Only for schemas without recursive references.
    """

    def expand(node, seen: tuple[str, ...]):
        if isinstance(node, list):
            return [expand(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if ref is not None:
            if not ref.startswith("#/"):
                raise ValueError(f"only local $ref is supported, got {ref!r}")
            if ref in seen:
                raise ValueError(f"recursive $ref {ref!r} cannot be inlined")
            target = schema
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return expand(merged, seen + (ref,))
        return {k: expand(v, seen) for k, v in node.items()}

    return {k: v for k, v in expand(schema, ()).items() if k != "$defs"}


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"


def _span(seconds: float) -> str:
    if seconds and seconds % 86400 == 0:
        days = seconds / 86400
        return f"{days:.0f} day" if days == 1 else f"{days:.0f} days"
    return f"{seconds:g}s"


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    if len(text) > _DETAIL_MAX:
        text = text[: _DETAIL_MAX - 3] + "..."
    return text
