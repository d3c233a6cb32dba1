"""Reading event logs and feed documents from files: the one place in streams.feeds that does I/O.

`load(paths, fmt, mapping)` returns every contract event the files hold, as ``(kind, event)`` in
publish order, and a reject record for everything it could not read. `Checker` then puts each
event through the worker's own `Decoder`, so `corridor replay` publishes and `corridor report`
counts exactly what the worker would accept.

Event logs (docs/feeds.md): JSON Lines, CSV or Parquet, one contract event per line/row, plus a
``kind`` (orders | shipments | customs) or ``topic`` (a topic name) field that is removed before
publishing; without either, the kind follows from ``event_type`` (the three topics' event types
are disjoint). In CSV and Parquet, nested fields are JSON text (``order_ids`` also ``A;B``) or
dotted columns (``location.country``); empty cells are absent fields. Logs are replayed in file
order. Feed documents go through an adapter (``dcsa``, ``epcis``, ``csv-orders``) and their events
are replayed in event-time order (stable), as the history happened.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import orjson

from streams.feeds import KEY_FIELD, KINDS, csv_orders, dcsa, epcis, epoch, reason_code
from streams.feeds.csv_orders import MappingError

LOG_FORMATS = ("jsonl", "csv", "parquet")
FEED_FORMATS = ("dcsa", "epcis", "csv-orders")
INPUT_FORMATS = ("auto",) + LOG_FORMATS + FEED_FORMATS
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet",
               ".pq": "parquet"}
_FEED_SUFFIXES = {"dcsa": (".json",), "epcis": (".json", ".jsonld")}
#: Fields of the contract that hold JSON structures (CSV cells carry them as JSON text).
_NESTED = ("order_ids", "location", "items", "declared_value")
_DEFAULT_TOPICS = {"orders": "orders", "shipments": "shipments", "customs-events": "customs",
                   "customs": "customs"}


class SourceError(Exception):
    """A file or mapping that cannot be used at all; the message is one line."""


@dataclass
class Loaded:
    events: list[tuple[str, dict]] = field(default_factory=list)
    where: list[tuple[str, object]] = field(default_factory=list)    # (source, index/id) per event
    rejects: list[dict] = field(default_factory=list)
    #: Two-letter region codes the source declares as countries (a csv-orders mapping's region_codes)
    region_codes: frozenset = frozenset()

    def reject(self, source: str, where, reason: str, record=None) -> None:
        code = reason_code(reason)
        item = {"source": source, "where": where, "reason": code,
                "detail": reason[len(code) + 2:] if reason.startswith(code + ": ") else reason}
        if record is not None:
            item["record"] = record
        self.rejects.append(item)


def load(paths: Iterable[str | Path], fmt: str = "auto", mapping: str | Path | None = None,
         topics: Mapping[str, str] | None = None) -> Loaded:
    """Read every path. `topics` maps topic names to kinds (the configured names are added to the
    defaults). Raises SourceError for a missing/unreadable file, a wrong format or mapping."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise SourceError("no input files given")
    if fmt not in INPUT_FORMATS:
        raise SourceError(f"unknown input format {fmt!r} (expected one of {', '.join(INPUT_FORMATS)})")
    for p in paths:
        if not p.exists():
            raise SourceError(f"{p} does not exist")
    if fmt == "csv-orders":
        return _load_orders_export(paths, mapping)
    if mapping is not None and fmt not in FEED_FORMATS:
        raise SourceError("--mapping is only for the input formats dcsa, epcis and csv-orders")
    if fmt in ("dcsa", "epcis"):
        return _load_feed(paths, fmt, feed_options(fmt, mapping))
    kinds = dict(_DEFAULT_TOPICS)
    kinds.update({name: kind for name, kind in (topics or {}).items()})
    out = Loaded()
    for p in paths:
        if p.is_dir():
            raise SourceError(f"{p} is a directory; give the log files (or an input format: csv-orders, "
                              "dcsa, epcis)")
        f = fmt if fmt != "auto" else _EXTENSIONS.get(p.suffix.lower())
        if f is None:
            raise SourceError(f"cannot tell the format of {p} from its extension "
                              f"(.jsonl, .csv, .parquet); pass --input-format")
        reader = {"jsonl": _jsonl_records, "csv": _csv_records, "parquet": _parquet_records}[f]
        for where, record in reader(p):
            _add_log_record(out, str(p), where, record, kinds)
    return out


# ---- event logs -------------------------------------------------------------------------------
def _jsonl_records(path: Path):
    try:
        with open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if n == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]             # a UTF-8 byte order mark
                if not line.strip():
                    continue
                try:
                    yield f"line {n}", orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    yield f"line {n}", _BadRecord("not_json", str(exc), line.decode("utf-8", "replace").rstrip())
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None


def _csv_records(path: Path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, restval="")
            for n, row in enumerate(reader, 2):
                yield f"row {n}", _unflatten(row, from_text=True)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except (OSError, csv.Error) as exc:
        raise SourceError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _parquet_records(path: Path):
    try:
        import pandas as pd
        frame = pd.read_parquet(path)
    except ImportError as exc:
        raise SourceError(f"reading Parquet needs the report extra (pip install 'corridor[report]'): "
                          f"{exc}") from None
    except Exception as exc:   # pyarrow raises its own error types for a corrupt or non-Parquet file
        raise SourceError(f"cannot read {path} as Parquet: {str(exc).splitlines()[0]}") from None
    for i, row in enumerate(frame.to_dict("records")):
        yield f"row {i + 1}", _unflatten({k: _plain(v) for k, v in row.items()}, from_text=False)


class _BadRecord:
    def __init__(self, code: str, detail: str, raw):
        self.code, self.detail, self.raw = code, detail, raw


def _plain(value):
    """A Parquet cell as JSON-able Python: None for nulls, ISO-8601 for timestamps."""
    import numpy as np
    import pandas as pd
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unflatten(row: Mapping[str, object], from_text: bool) -> dict:
    """Columns -> a nested event: dotted columns build objects, JSON text in nested fields is parsed."""
    out: dict = {}
    for col, value in row.items():
        if col is None:                 # a CSV row with more cells than the header
            continue
        if value is None or (from_text and value == ""):
            continue
        if col in _NESTED and isinstance(value, str):
            value = _cell_json(col, value)
        elif from_text and col == "declared_value.amount":
            try:
                value = float(value)
            except ValueError:
                pass                    # left as text: the schema check names the field
        parts = col.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return out


def _cell_json(col: str, value: str):
    text = value.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return value
    if col == "order_ids":
        return [v.strip() for v in text.split(";") if v.strip()]
    return value


@functools.lru_cache(maxsize=1)
def _kind_from_event_type() -> dict[str, str]:
    from streams.contract.codec import load_schema
    out = {}
    for kind in KINDS:
        for etype in load_schema(kind)["properties"]["event_type"]["enum"]:
            out[etype] = kind
    return out


def _add_log_record(out: Loaded, source: str, where, record, kinds: Mapping[str, str]) -> None:
    if isinstance(record, _BadRecord):
        out.reject(source, where, f"{record.code}: {record.detail}", record.raw)
        return
    if not isinstance(record, dict):
        out.reject(source, where, "bad_document: the record is not a JSON object", record)
        return
    event = dict(record)
    kind = event.pop("kind", None)
    topic = event.pop("topic", None)
    if kind is None and topic is not None:
        kind = kinds.get(topic)
        if kind is None:
            out.reject(source, where, f"unknown_kind: topic {topic!r} is not one of "
                       f"{', '.join(sorted(kinds))}", record)
            return
    if kind is None:
        kind = _kind_from_event_type().get(event.get("event_type"))
        if kind is None:
            out.reject(source, where, "unknown_kind: no kind or topic field, and event_type "
                       f"{event.get('event_type')!r} belongs to no topic", record)
            return
    if kind not in KINDS:
        out.reject(source, where, f"unknown_kind: kind {kind!r} is not one of {', '.join(KINDS)}", record)
        return
    out.events.append((kind, event))
    out.where.append((source, where))


# ---- feeds through the adapters -------------------------------------------------------------------
def _read_mapping_file(mapping: str | Path) -> str:
    try:
        return Path(mapping).read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read mapping {mapping}: {exc.strerror}") from None


def feed_options(fmt: str, mapping: str | Path | None) -> dict:
    """Keyword arguments of dcsa.convert / epcis.convert from an optional mapping file."""
    if mapping is None:
        return {}
    try:
        doc = tomllib.loads(_read_mapping_file(mapping))
    except tomllib.TOMLDecodeError as exc:
        raise SourceError(f"mapping {mapping} is not valid TOML: {exc}") from None
    section = doc.get(fmt)
    if not isinstance(section, dict):
        raise SourceError(f"mapping {mapping} has no [{fmt}] section")
    allowed = {"dcsa": {"destinations": dict, "default_destination": str, "id_from": list},
               "epcis": {"shipment_key": str, "locations": dict}}[fmt]
    for key, value in section.items():
        if key not in allowed:
            raise SourceError(f"mapping {mapping} [{fmt}]: unknown key {key!r} "
                              f"(expected one of {', '.join(allowed)})")
        if not isinstance(value, allowed[key]):
            raise SourceError(f"mapping {mapping} [{fmt}]: {key} must be a {allowed[key].__name__}")
    opts = dict(section)
    if "id_from" in opts:
        opts["id_from"] = tuple(opts["id_from"])
    return opts


def _feed_files(paths: list[Path], fmt: str) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in _FEED_SUFFIXES[fmt])
            if not found:
                raise SourceError(f"{p} holds no {' or '.join(_FEED_SUFFIXES[fmt])} files")
            out.extend(found)
        else:
            out.append(p)
    return out


def _load_feed(paths: list[Path], fmt: str, opts: dict) -> Loaded:
    convert = dcsa.convert if fmt == "dcsa" else epcis.convert
    out = Loaded()
    named = {p for p in paths if not p.is_dir()}
    for p in _feed_files(paths, fmt):
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {p}: {exc.strerror}") from None
        result = convert(raw, **opts)
        if p in named and not result.events and [w for w, _r in result.rejects] == ["document"]:
            # A file named on the command line that is not a document of this format at all (a
            # wrong file or --input-format): say so before anything is published. (In a folder,
            # such a file is a reject among the documents.)
            article = "an" if fmt == "epcis" else "a"
            raise SourceError(f"{p} is not {article} {fmt.upper()} document: {result.rejects[0][1]}")
        for where, reason in result.rejects:
            out.reject(str(p), where, reason)
        for kind, event in result.events:
            out.events.append((kind, event))
            out.where.append((str(p), event["event_id"]))
    _sort_by_event_time(out)
    return out


def _load_orders_export(paths: list[Path], mapping: str | Path | None) -> Loaded:
    if mapping is None:
        raise SourceError("csv-orders input needs --mapping FILE (e.g. streams/feeds/mappings/olist.toml)")
    try:
        spec = csv_orders.load_mapping(_read_mapping_file(mapping), str(mapping))
    except MappingError as exc:
        raise SourceError(str(exc)) from None
    if len(paths) != 1:
        raise SourceError("csv-orders input takes one directory (the export's tables)")
    folder = paths[0] if paths[0].is_dir() else paths[0].parent
    tables = {}
    for name, filename in spec["tables"].items():
        path = folder / filename
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                tables[name] = [{k: (v or "") for k, v in row.items() if k is not None}
                                for row in csv.DictReader(fh, restval="")]
        except OSError as exc:
            raise SourceError(f"cannot read {path} (table {name} of {mapping}): {exc.strerror}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"cannot read {path} as UTF-8 CSV: {exc}") from None
    try:
        result = csv_orders.convert(tables, spec)
    except MappingError as exc:
        raise SourceError(f"{mapping} does not fit {folder}: {exc}") from None
    out = Loaded(region_codes=frozenset(spec.get("region_codes", ())))
    source = str(folder)
    for where, reason in result.rejects:
        out.reject(source, where, reason)
    for kind, event in result.events:
        out.events.append((kind, event))
        out.where.append((source, event["event_id"]))
    _sort_by_event_time(out)
    return out


def _sort_by_event_time(out: Loaded) -> None:
    order = sorted(range(len(out.events)), key=lambda i: epoch(out.events[i][1]["occurred_at"]))
    out.events = [out.events[i] for i in order]
    out.where = [out.where[i] for i in order]


# ---- the contract check -----------------------------------------------------------------------------
class Checker:
    """(key bytes, value bytes, decoded event) exactly as the worker would receive and accept them;
    raises codec.Rejected otherwise."""

    def __init__(self, max_bytes: int = 65536, region_codes=()):
        from streams.contract.codec import Decoder, accepted_countries
        countries = accepted_countries(region_codes)
        self.decoders = {kind: Decoder(kind, max_bytes=max_bytes, countries=countries) for kind in KINDS}

    def __call__(self, kind: str, event: dict) -> tuple[bytes | None, bytes, dict]:
        from streams.contract.codec import Rejected
        key = event.get(KEY_FIELD[kind])
        key_bytes = key.encode("utf-8") if isinstance(key, str) and key else None
        try:
            value = orjson.dumps(event)
        except TypeError as exc:
            raise Rejected("schema", f"not JSON-serialisable: {exc}") from None
        return key_bytes, value, self.decoders[kind].decode(key_bytes, value)
