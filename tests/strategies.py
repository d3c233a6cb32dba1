"""Hypothesis strategies for the wire contract: Kafka messages, each with the outcome it must get.

A `Msg` is one message (kind, key, value, headers) and `expect`: "applied", "duplicate" or the
rejection reason (streams.contract.codec.REASONS, or the pipeline's "expired" when `Clock.stale_max` is
set). `expect` follows from how the message was generated (which field was broken, and how),
never from asking the codec, so the codec unit properties (tests/unit/test_codec_properties.py)
and the worker e2e properties (tests/e2e/test_properties.py) check corridor against an
independent oracle. Field names, enums and required lists are read from schemas/*.schema.json
(the contract), not from the decoder.

The oracle applies the codec's documented precedence when one message has several faults:
empty, too_large, not_utf8 / not_json, not_object, unknown_event_type, schema, bad_timestamp,
missing_key, key_mismatch ("a new event type is counted as such"; "anything else wrong with the
message wins over a timestamp": see streams/contract/codec.py).

Limits are the worker's defaults (Decoder/Settings): occurred_at at most 7 days ahead of the
clock and not before 2000-01-01Z, other date-times at most 366 days after occurred_at, values up
to 65536 bytes. Which times count as valid, far future or stale is a `Clock`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from hypothesis import strategies as st

import builders
from streams.contract.codec import COUNTRIES

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
KINDS = ("orders", "shipments", "customs")
TOPICS = {"orders": "orders", "shipments": "shipments", "customs": "customs-events"}
_SCHEMA_FILE = {"orders": "orders.schema.json", "shipments": "shipments.schema.json",
                "customs": "customs-events.schema.json"}
SCHEMAS = {k: json.loads((SCHEMA_DIR / f).read_text()) for k, f in _SCHEMA_FILE.items()}
KEY_FIELD = {k: s["x-kafka-key"] for k, s in SCHEMAS.items()}
EVENT_TYPES = {k: tuple(s["properties"]["event_type"]["enum"]) for k, s in SCHEMAS.items()}
REQUIRED = {k: tuple(s["required"]) for k, s in SCHEMAS.items()}

MAX_BYTES = 65536                     # Settings.max_message_bytes
DAY = 86400
MAX_FUTURE = 7 * DAY                  # Decoder.max_future_seconds
HORIZON = 366 * DAY                   # Decoder.max_horizon_seconds
EPOCH_2000 = 946684800                # 2000-01-01T00:00:00Z
YEAR_2 = -62104060800                 # 0002-01-01T00:00:00Z: any offset keeps datetime in range
YEAR_9999 = 253370764800              # 9999-01-01T00:00:00Z
ORDER_EVENTS_PER_ID = 16              # streams.domain.orders.MAX_ORDER_EVENTS: its dedupe window

APPLIED, DUPLICATE = "applied", "duplicate"
OUTCOMES_OK = (APPLIED, DUPLICATE)

# Bytes that are never valid UTF-8 whatever surrounds them (0xC0/0xC1/0xF5-0xFF never occur; an
# encoded surrogate; an overlong slash), so splicing them anywhere keeps a value invalid.
INVALID_UTF8 = (b"\xff", b"\xfe", b"\xc0\xaf", b"\xc1\xbf", b"\xf5\x80\x80\x80", b"\xed\xa0\x80")
NOT_JSON = (b"NaN", b"{'event_id': 'e-1'}", b'{"a": 1,}', b"{}{}", b"[1, 2", b"\xef\xbb\xbf{}",
            b'{"a": 1}\x00', b"undefined", b'{"a" 1}', b"tru", b'"unterminated')


@dataclass(frozen=True)
class Msg:
    kind: str                                  # orders | shipments | customs
    key: bytes | None
    value: bytes | None
    expect: str                                # applied | duplicate | a reject reason
    how: str                                   # the generator's choice, for failure messages
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def topic(self) -> str:
        return TOPICS[self.kind]

    @property
    def rejected(self) -> bool:
        return self.expect not in OUTCOMES_OK

    def __repr__(self) -> str:   # short: hypothesis prints whole batches on failure
        def short(b):
            return b if b is None or len(b) <= 80 else b[:60] + b"...(%d bytes)" % len(b)
        return (f"Msg({self.kind}, key={short(self.key)!r}, value={short(self.value)!r}, "
                f"expect={self.expect}, how={self.how!r})")

    def _repr_pretty_(self, p, cycle):     # hypothesis's printer, for "Failing test case"
        p.text(repr(self))


# ---- times ------------------------------------------------------------------------------------
def format_time(sec: int, zone_minutes: int | None, fraction: str = "", naive: bool = False,
                sep: str = "T") -> str:
    """The instant `sec` (+ .fraction) written in the given zone (None = 'Z')."""
    dt = datetime.fromtimestamp(sec, timezone(timedelta(minutes=zone_minutes or 0)))
    s = (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}{sep}"
         f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}")
    if fraction:
        s += "." + fraction
    if naive:
        return s
    if zone_minutes is None:
        return s + "Z"
    h, m = divmod(abs(zone_minutes), 60)
    return s + f"{'+' if zone_minutes >= 0 else '-'}{h:02d}:{m:02d}"


zones = st.one_of(st.none(), st.integers(-(24 * 60 - 1), 24 * 60 - 1))
fractions = st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9))


@st.composite
def stamps(draw, lo: int, hi: int, *, fraction: bool = True, naive: bool = False,
           sep: str = "T") -> str:
    """A date-time whose instant is in [lo, hi + 1) seconds."""
    return format_time(draw(st.integers(lo, hi)), draw(zones), draw(fractions) if fraction else "",
                       naive, sep)


@dataclass(frozen=True)
class Clock:
    """Which event times (epoch seconds) the generators treat as valid, far future or stale.

    `around(now)` is for a decoder with a fixed clock: valid times from 2000 to a day before the
    decoder's limit, far future from a day after it. A worker decodes against the wall clock and
    forgets state by event time, so the e2e test narrows valid times to a window shorter than the
    retention and sets `stale_max` (see tests/e2e/test_properties.py).
    """
    valid_min: int            # earliest valid occurred_at
    valid_max: int            # latest valid occurred_at
    future_min: int           # earliest occurred_at too far ahead of the decoder's clock
    #: Latest occurred_at of an event for an unknown shipment that the worker must reject as
    #: `expired` (older than its partition's event-time clock minus the retention); None: none.
    stale_max: int | None = None

    @classmethod
    def around(cls, now: float) -> "Clock":
        return cls(EPOCH_2000, int(now) + MAX_FUTURE - DAY, int(now) + MAX_FUTURE + DAY)


def valid_range(clock: Clock) -> tuple[int, int]:
    return clock.valid_min, clock.valid_max


@st.composite
def impossible_stamps(draw) -> str:
    """Shaped like the schema's pattern, but no such date-time exists."""
    p = {"Y": "2025", "M": "03", "D": "01", "h": "10", "m": "00", "s": "00", "z": "Z"}
    p.update(draw(st.sampled_from([
        {"M": "13"}, {"M": "00"}, {"D": "32"}, {"D": "00"}, {"M": "02", "D": "30"},
        {"Y": "2023", "M": "02", "D": "29"}, {"h": "24"}, {"m": "60"}, {"s": "60"},
        {"z": "+24:00"}, {"z": "-99:00"}])))
    return f"{p['Y']}-{p['M']}-{p['D']}T{p['h']}:{p['m']}:{p['s']}{p['z']}"


def bad_stamps(clock: Clock, *, event_time: bool):
    """(how, value) of a date-time the decoder must refuse as bad_timestamp."""
    lo, hi = valid_range(clock)
    out = [
        st.tuples(st.just("no UTC offset"), stamps(lo, hi, naive=True)),
        st.tuples(st.just("before 2000"), stamps(YEAR_2, EPOCH_2000 - 1)),
        st.tuples(st.just("impossible date"), impossible_stamps()),
        st.tuples(st.just("space separator"), stamps(lo, hi, sep=" ")),
        st.tuples(st.just("leading space"), stamps(lo, hi).map(lambda t: " " + t)),
        # no digits, so it cannot be a date-time by accident
        st.tuples(st.just("not a date"), st.text(st.characters(blacklist_categories=("Cs", "Nd")),
                                                 max_size=30)),
        st.tuples(st.just("trailing newline"), stamps(lo, hi).map(lambda t: t + "\n")),
    ]
    if event_time:
        out.append(st.tuples(st.just("far future"),
                             stamps(clock.future_min, YEAR_9999)))
    return st.one_of(out)


# ---- ids and valid bodies ---------------------------------------------------------------------
id_suffixes = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
long_chars = st.one_of(st.none(), st.characters(blacklist_categories=("Cs",)))
countries = st.one_of(st.sampled_from(["CN", "AU", "US", "DE", "MX", "GB"]),
                      st.sampled_from(sorted(COUNTRIES)))     # ISO 3166-1: others are unknown_country
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 53), 2 ** 53),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
extras = st.dictionaries(st.text(max_size=10).map(lambda s: "x_" + s),
                         st.one_of(json_leaves, st.lists(json_leaves, max_size=3)), max_size=3)


class Ids:
    """Fresh ids for one batch: event ids by position, a few shipments and orders to share state.

    With `long_char`, the first shipment id is padded with it to the schema's 200-character limit.
    """

    def __init__(self, namespace: str, ship_suffixes: list[str], order_suffixes: list[str],
                 long_char: str | None = None):
        self.ns = namespace
        self.shipments = [f"{namespace}-S{i}{s}" for i, s in enumerate(ship_suffixes)]
        if long_char:
            self.shipments[0] = self.shipments[0].ljust(200, long_char)
        self.orders = [f"{namespace}-O{i}{s}" for i, s in enumerate(order_suffixes)]
        self.order_uses: dict[str, int] = {}
        self.n = 0

    def stranger(self) -> str:
        """A shipment id used by no other message of the batch."""
        self.n += 1
        return f"{self.ns}-X{self.n}"

    def event(self) -> str:
        self.n += 1
        return f"{self.ns}-e{self.n}"

    def order(self, draw) -> str:
        """An order id with fewer than ORDER_EVENTS_PER_ID events so far (its dedupe window)."""
        oid = draw(st.sampled_from(self.orders))
        if self.order_uses.get(oid, 0) >= ORDER_EVENTS_PER_ID:
            oid = f"{self.ns}-O{len(self.orders)}"
            self.orders.append(oid)
        self.order_uses[oid] = self.order_uses.get(oid, 0) + 1
        return oid


@st.composite
def valid_bodies(draw, kind: str, ids: Ids, clock: Clock, *, shipment: str | None = None,
                 when: tuple[int, int] | None = None) -> dict:
    """A contract-valid event built with tests/builders.py, times and optional fields drawn.

    `shipment` and `when` (an occurred_at range) override the drawn shipment id and times."""
    lo, hi = when or valid_range(clock)
    etype = draw(st.sampled_from(EVENT_TYPES[kind]))
    if kind == "orders":
        body = builders.order(ids.order(draw), 0, etype=etype, seller=draw(countries),
                              buyer=draw(countries), sl=draw(st.sampled_from(["economy", "standard",
                                                                              "express"])),
                              event_id=ids.event())
        if draw(st.booleans()):
            sec = draw(st.integers(lo, hi))
            body["occurred_at"] = format_time(sec, draw(zones), draw(fractions))
            body["promised_delivery_at"] = format_time(sec + draw(st.integers(0, HORIZON)),
                                                       draw(zones))
        else:
            body["occurred_at"] = draw(stamps(lo, hi))
        if draw(st.booleans()):
            body["declared_value"] = {"amount": draw(st.floats(0, 1e9)),
                                      "currency": draw(st.from_regex(r"\A[A-Z]{3}\Z"))}
        if draw(st.booleans()):
            body["items"] = draw(st.lists(st.fixed_dictionaries(
                {"sku": st.text(min_size=1, max_size=20), "qty": st.integers(1, 1000)},
                optional={"hs_code": st.from_regex(r"\A[0-9]{4,10}\Z")}), max_size=3))
    elif kind == "shipments":
        oids = None
        if etype == "label_created" or draw(st.booleans()):
            oids = [ids.order(draw) for _ in range(draw(st.integers(1, 3)))]
        sid = shipment or draw(st.sampled_from(ids.shipments))
        body = builders.ship(sid, etype, 0, order_ids=oids, event_id=ids.event())
        body["occurred_at"] = draw(stamps(lo, hi))
        body.update(draw(st.fixed_dictionaries({}, optional={
            "origin_country": countries, "destination_country": countries,
            "carrier": st.text(min_size=1, max_size=20),
            "tracking_number": st.text(min_size=1, max_size=20),
            "location": st.fixed_dictionaries({}, optional={
                "country": countries, "facility": st.text(max_size=20)})})))
    else:
        sid = shipment or draw(st.sampled_from(ids.shipments))
        direction = draw(st.sampled_from(["export", "import"]))
        declaration = draw(st.one_of(st.none(), st.text(min_size=1, max_size=30)))
        if declaration is None and len(sid) > 190:
            declaration = "D-long"     # the builder's D-<shipment>-<direction> would be too long
        body = builders.customs(sid, etype, 0, direction=direction, country=draw(countries),
                                declaration_id=declaration, event_id=ids.event())
        body["occurred_at"] = draw(stamps(lo, hi))
    body.update(draw(extras))
    return body


def pad_to(body: dict, size: int) -> bytes:
    """The body serialized to exactly `size` bytes with an ASCII filler field."""
    body = {**body, "x_pad": ""}
    missing = size - len(orjson.dumps(body))
    assert missing >= 0, "body is already larger than the target"
    body["x_pad"] = "p" * missing
    value = orjson.dumps(body)
    assert len(value) == size
    return value


# ---- faults -----------------------------------------------------------------------------------
non_strings = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.lists(st.integers(0, 9), max_size=3),
                        st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=2))


@st.composite
def schema_faults(draw, kind: str, body: dict, *,
                  touch_event_type: bool = True) -> tuple[str, dict]:
    """(how, body) with one schema violation that is not a date-time written as a string."""
    body = dict(body)
    fields = [f for f in REQUIRED[kind] if touch_event_type or f != "event_type"]
    options = ["drop", "wrong type", "bad string"]
    if kind == "shipments" and touch_event_type:
        options.append("label without orders")
    if kind == "orders":
        options.append("bad nested")
    what = draw(st.sampled_from(options))
    if what == "drop":
        name = draw(st.sampled_from(fields))
        del body[name]
        return f"schema: no {name}", body
    if what == "wrong type":
        name = draw(st.sampled_from(fields))
        body[name] = draw(non_strings)
        return f"schema: {name} = {body[name]!r}", body
    if what == "bad string":
        bad = {"event_id": ["", "x" * 201, "\U0001F4E6" * 201]}
        bad[KEY_FIELD[kind]] = ["", "k" * 201, "\u00e9" * 201]
        if kind == "orders":
            bad.update(seller_country=["cn", "C", "CHN", "1A"], buyer_country=["au", ""],
                       service_level=["fast", "Express", ""])
        elif kind == "customs":
            bad.update(direction=["inbound", "IMPORT", ""], country=["xx", "A"],
                       declaration_id=["", "d" * 201])
        name = draw(st.sampled_from(sorted(bad)))
        body[name] = draw(st.sampled_from(bad[name]))
        return f"schema: {name} = {body[name]!r}", body
    if what == "label without orders":
        body["event_type"] = "label_created"
        how = draw(st.sampled_from(["absent", "empty", "bad item"]))
        if how == "absent":
            body.pop("order_ids", None)
        else:
            body["order_ids"] = [] if how == "empty" else [draw(st.sampled_from(["", 7, None]))]
        return f"schema: label_created with order_ids {how}", body
    name, value = draw(st.sampled_from([
        ("declared_value", {"amount": -1, "currency": "USD"}),
        ("declared_value", {"amount": 10, "currency": "usd"}),
        ("declared_value", {"amount": 10}),
        ("items", [{"sku": "a", "qty": 0}]),
        ("items", [{"sku": "", "qty": 1}]),
        ("items", [{"sku": "a", "qty": 1, "hs_code": "12.34"}]),
        ("items", {"sku": "a", "qty": 1}),
    ]))
    body[name] = value
    return f"schema: {name} = {value!r}", body


def mismatched_keys(body: dict, kind: str, ids: Ids, *, bad_keys: bool):
    """(how, key): a key that is present but is not the body's id."""
    right = body[KEY_FIELD[kind]] if isinstance(body.get(KEY_FIELD[kind]), str) else ""
    others = [k for k in (ids.orders if kind == "orders" else ids.shipments) if k != right]
    opts = [st.text(min_size=1, max_size=12).filter(lambda k: k != right).map(
        lambda k: ("random key", k.encode()))]
    if right and right.swapcase() != right:
        opts.append(st.just(("id in another case", right.swapcase().encode())))
    elif right:
        opts.append(st.just(("id plus a space", f"{right} ".encode())))
    if others:
        opts.append(st.sampled_from(others).map(lambda k: ("another id as key", k.encode())))
    if bad_keys:
        opts.append(st.sampled_from(INVALID_UTF8).map(
            lambda b: ("non-UTF-8 key", right.encode() + b)))
    return st.one_of(opts)


def any_keys(body: dict, kind: str, ids: Ids, *, bad_keys: bool):
    """(how, key) of any sort, for messages whose outcome is decided before the key is checked."""
    right = body.get(KEY_FIELD[kind])
    right = right.encode() if isinstance(right, str) and right else None
    opts = [st.tuples(st.just("no key"), st.sampled_from([None, b""])),
            mismatched_keys(body, kind, ids, bad_keys=bad_keys)]
    if right is not None:
        opts.insert(0, st.just(("right key", right)))
    return st.one_of(opts)


# Faults interleaved with valid messages: hypothesis favours the first entries of a sampled_from.
CHOICES = ("schema", "valid", "bad_timestamp", "key_mismatch", "valid", "not_json", "empty",
           "valid", "unknown_event_type", "missing_key", "valid", "not_utf8", "too_large", "valid",
           "not_object", "schema", "valid", "bad_timestamp", "at_limit", "expired")


@st.composite
def messages(draw, ids: Ids, clock: Clock, *, bad_keys: bool = True,
             kind: str | None = None) -> Msg:
    """One message of a drawn kind and fault, with the outcome the contract gives it."""
    kind = kind or draw(st.sampled_from(KINDS))
    choice = draw(st.sampled_from(CHOICES))
    if choice == "expired" and (clock.stale_max is None or kind == "orders"):
        choice = "valid"    # only the shipment side rejects stragglers (orders have no `expired`)
    if choice == "expired":
        body = draw(valid_bodies(kind, ids, clock, shipment=ids.stranger(),
                                 when=(EPOCH_2000, clock.stale_max)))
    else:
        body = draw(valid_bodies(kind, ids, clock))
    right = body[KEY_FIELD[kind]].encode()
    headers = tuple(draw(st.lists(st.tuples(st.sampled_from(["x-trace", "x-origin"]),
                                            st.binary(max_size=16)), max_size=2)))

    def msg(expect, how, value, key=right):
        return Msg(kind, key, value, expect, how, headers)

    if choice == "valid":
        return msg(APPLIED, "valid", orjson.dumps(body))
    if choice == "expired":
        return msg("expired", "valid, but older than the retention, for an unknown shipment",
                   orjson.dumps(body))
    if choice == "at_limit":
        return msg(APPLIED, "valid, exactly the size limit", pad_to(body, MAX_BYTES))
    if choice == "empty":
        _, key = draw(any_keys(body, kind, ids, bad_keys=bad_keys))
        value = draw(st.sampled_from([b"", None]))
        if value is None and key is None:
            key = right          # Kafka needs a key or a value
        return msg("empty", f"empty value {value!r}", value, key)
    if choice == "too_large":
        size = draw(st.integers(MAX_BYTES + 1, MAX_BYTES + 4096))
        content = draw(st.sampled_from(["event", "not utf-8", "not json"]))
        value = {"event": lambda: pad_to(body, size), "not utf-8": lambda: b"\xff" * size,
                 "not json": lambda: b"{" * size}[content]()
        return msg("too_large", f"too large: {content}", value)
    if choice == "not_utf8":
        if draw(st.booleans()):
            token = "\x01TOKEN\x01"
            body["event_id"] = token
            raw = orjson.dumps(body)
            bad = draw(st.sampled_from(INVALID_UTF8))
            value = raw.replace(orjson.dumps(token)[1:-1], b"e" + bad, 1)
            return msg("not_utf8", f"invalid UTF-8 {bad!r} in a string", value)
        bad = draw(st.sampled_from(INVALID_UTF8))
        value = draw(st.binary(max_size=64)) + bad + draw(st.binary(max_size=64))
        return msg("not_utf8", "random bytes with invalid UTF-8", value)
    if choice == "not_json":
        how = draw(st.sampled_from(["truncated", "garbage", "known"]))
        if how == "truncated":
            text = orjson.dumps(body).decode()
            value = text[:draw(st.integers(1, len(text) - 1))].encode()
        elif how == "garbage":
            value = ("#" + draw(st.text(st.characters(blacklist_categories=("Cs",))))).encode()
        else:
            value = draw(st.sampled_from(NOT_JSON))
        return msg("not_json", f"not JSON: {how}", value)
    if choice == "not_object":
        doc = draw(st.one_of(json_leaves, st.lists(json_leaves, max_size=3), st.just([body])))
        return msg("not_object", f"top-level {type(doc).__name__}", orjson.dumps(doc))
    if choice == "unknown_event_type":
        etype = draw(st.text(max_size=20).filter(lambda t: t not in EVENT_TYPES[kind]))
        how = f"unknown event_type {etype!r}"
        if draw(st.booleans()):
            fault, body = draw(schema_faults(kind, body, touch_event_type=False))
            how += f" and {fault}"
        body["event_type"] = etype
        key_how, key = draw(any_keys(body, kind, ids, bad_keys=bad_keys))
        return msg("unknown_event_type", f"{how}, {key_how}", orjson.dumps(body), key)
    if choice == "schema":
        how, body = draw(schema_faults(kind, body))
        if kind == "orders" and "occurred_at" not in how and draw(st.booleans()):
            bad_how, body["promised_delivery_at"] = draw(bad_stamps(clock, event_time=False))
            how += f" and promised_delivery_at {bad_how}"
        elif "occurred_at" not in how and draw(st.booleans()):
            bad_how, body["occurred_at"] = draw(bad_stamps(clock, event_time=True))
            how += f" and occurred_at {bad_how}"
        key_how, key = draw(any_keys(body, kind, ids, bad_keys=bad_keys))
        return msg("schema", f"{how}, {key_how}", orjson.dumps(body), key)
    if choice == "bad_timestamp":
        if kind == "orders" and draw(st.booleans()):
            if draw(st.booleans()):
                sec = draw(st.integers(*valid_range(clock)))
                body["occurred_at"] = format_time(sec, draw(zones))
                body["promised_delivery_at"] = format_time(
                    sec + draw(st.integers(HORIZON + 2, 20 * 365 * DAY)), draw(zones))
                how = "promised_delivery_at beyond the horizon"
            else:
                bad_how, body["promised_delivery_at"] = draw(bad_stamps(clock, event_time=False))
                how = f"promised_delivery_at {bad_how}"
        else:
            bad_how, body["occurred_at"] = draw(bad_stamps(clock, event_time=True))
            how = f"occurred_at {bad_how}"
        key_how, key = draw(any_keys(body, kind, ids, bad_keys=bad_keys))
        return msg("bad_timestamp", f"{how}, {key_how}", orjson.dumps(body), key)
    if choice == "missing_key":
        return msg("missing_key", "no key", orjson.dumps(body), draw(st.sampled_from([None, b""])))
    key_how, key = draw(mismatched_keys(body, kind, ids, bad_keys=bad_keys))
    return msg("key_mismatch", key_how, orjson.dumps(body), key)


@st.composite
def batches(draw, clock: Clock, namespace=lambda: "t", min_size: int = 5, max_size: int = 40,
            bad_keys: bool = True) -> list[Msg]:
    """A batch of messages for fresh shipments and orders; about one in eight is a resend.

    `namespace()` is called once per batch to prefix every id. It is not a hypothesis draw on
    purpose: hypothesis reuses values between examples, and examples sent to one long-lived
    worker must not touch each other's shipments.
    """
    ids = Ids(namespace(), draw(st.lists(id_suffixes, min_size=1, max_size=4)),
              draw(st.lists(id_suffixes, min_size=1, max_size=4)), draw(long_chars))
    out: list[Msg] = []
    for _ in range(draw(st.integers(min_size, max_size))):
        if out and draw(st.integers(0, 7)) == 0:
            i = draw(st.integers(0, len(out) - 1))
            orig = out[i]
            # A resent valid event is a duplicate; a resent bad message is rejected again.
            expect = DUPLICATE if not orig.rejected else orig.expect
            out.append(replace(orig, expect=expect, how=f"resend of #{i} ({orig.how})"))
        else:
            out.append(draw(messages(ids, clock, bad_keys=bad_keys)))
    return out
