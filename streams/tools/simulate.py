"""Realistic cross-border e-commerce traffic for the three input topics: orders, shipments, customs-events.

Two layers:

- `histories()` is pure and deterministic: for a seed it yields the events of many shipment histories,
  interleaved in (approximately) event-time order, lazily (a heap of in-flight histories, each held as a
  compact plan and turned into JSON-ready dicts only when emitted), so 100k+ shipments need little memory.
- `run()` publishes that stream to Kafka with kafka-python, paced against the wall clock.

A history: order_placed (one order, sometimes two or three consolidated into one shipment), label_created,
picked_up, export customs (declaration_lodged, released), departed_origin, arrived_destination, import
customs (declaration_lodged, risk_assessed, sometimes held_for_inspection + inspection_completed, sometimes
duty_assessed + duty_paid, released), out_for_delivery, sometimes delivery_failed and a second attempt,
delivered. A small share is returned (two failed attempts, or rejected by import customs) or lost (in
transit, or seized by customs). Some extra orders are placed and cancelled without ever shipping.
Stage durations are lognormal around per-service-level medians (express: days door to door; economy:
weeks), so most shipments beat their promise and some are late. `occurred_at` carries the local UTC
offset of where the event happened (orders: UTC), so consumers must honour offsets.

The simulated clock (run)
-------------------------
Event times must mean something next to the wall clock (the worker's stream clock follows the wall clock
once events are recent, Settings.live_lag_seconds), but a real history takes days to weeks. So:

- The simulated world starts at `start` = T0, in the past: by default 30 days before now for an open-ended
  run, and for a run bounded by `shipments` far enough back (arrival span + MAX_HISTORY_SECONDS, 75 days)
  that every history completes before now.
- Events are published in stream order at `rate` events per wall second (a token bucket), and an event is
  never published before its event time has passed on the wall clock. So simulated time advances as fast
  as the publish rate carries it, and never runs ahead of the wall clock.
- Shipments arrive as a Poisson process whose rate is chosen so that, once the pipeline is full, `rate`
  events per wall second carry simulated time at `speedup` x wall time (about 13.6 events per shipment):
  mean gap = 13.6 * speedup / rate simulated seconds. At the default 3600x (an hour per second) an express
  history plays out in about a minute and an economy one in under ten. While the pipeline fills, and as
  a bounded run drains, there are fewer events per simulated hour, so simulated time moves faster then.
  A bounded run thus takes about (events / rate) wall seconds.
- `rate=None` means as fast as possible: no pacing; shipments arrive every DEFAULT_ARRIVAL_INTERVAL
  simulated seconds on average.
- An open-ended run therefore replays ~30 days quickly (about 9 minutes at the defaults) and then goes on
  in real time: shipments keep arriving and progressing, but at the real-world pace (a trickle of
  events). Pass an earlier `start` (CLI: --backfill-days) for a longer demo at full rate.
- Scenarios start some time after T0 (7 days for open-ended runs, a third of the arrival span for
  bounded ones), so the figures first show the baseline and then the disruption building up.

`duplicate_rate` re-emits that fraction of events verbatim (same event_id) minutes to hours later;
`reorder_rate` delays that fraction of events (any but the last of a history) past the next one to three
events of the same history, so consumers see customs before shipment events and shipment events before
their order. Both only ever delay, so event times never run ahead of emission.
"""
from __future__ import annotations

import argparse
import hashlib
import heapq
import math
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from random import Random
from typing import Callable, Iterator

__all__ = ["SCENARIOS", "SimEvent", "CORRIDORS", "histories", "run", "add_arguments", "main",
           "plan_clock", "DEFAULT_SPEEDUP", "DEFAULT_RATE", "DEFAULT_ARRIVAL_INTERVAL", "EVENTS_PER_SHIPMENT",
           "MAX_HISTORY_SECONDS"]

SCENARIOS: dict[str, str] = {
    "baseline": "normal operations on every corridor",
    "customs-backlog": "CN-AU import customs takes 5-10x longer and holds most parcels for inspection "
                       "(shipments arriving in AU after the scenario starts)",
    "linehaul-delay": "CN-US linehaul (departed_origin -> arrived_destination) takes 2-6 days longer, "
                      "3-6x for air (shipments departing after the scenario starts)",
    "last-mile-failures": "half of first delivery attempts in GB fail and re-attempts take twice as long "
                          "(out_for_delivery after the scenario starts)",
    "de-minimis-change": "AU drops its low-value threshold (AUD 1,000 -> 0) at midnight UTC on the scenario's "
                         "first day: CN-AU parcels declared at AUD 1,000 or less (or undeclared) arriving from "
                         "then on go through formal entry, import customs takes 4-8x longer and holds half of "
                         "them (run the worker with the regime of --write-regimes)",
}

#: run(): simulated seconds per wall second once the pipeline is full (it sets the arrival rate): an hour a second.
DEFAULT_SPEEDUP = 3600.0
#: Default publish rate of the CLI (events per wall second).
DEFAULT_RATE = 200.0
#: Mean simulated seconds between two shipments' first events when no rate ties it to the wall clock.
DEFAULT_ARRIVAL_INTERVAL = 60.0
#: Average events per shipment history (measured over the baseline; cancelled orders included).
EVENTS_PER_SHIPMENT = 13.6
#: Default backfill of an open-ended run (seconds before now where the simulated world starts).
DEFAULT_BACKFILL = 30 * 86400.0
#: No history spans more event time than this (first order -> terminal event); the rare longer draws are
#: squeezed to fit, so a bounded run can be placed entirely before now.
MAX_HISTORY_SECONDS = 75 * 86400.0
#: Default delay of a scenario's start after T0 for an open-ended run.
DEFAULT_SCENARIO_DELAY = 7 * 86400.0

LEVELS = ("express", "standard", "economy")
_STAGE_CAP = 3.0          # no stage lasts longer than 3x its (scenario-adjusted) median
_SIGMA = 0.45             # lognormal spread of a stage duration
_HICCUP = 0.04            # chance that a stage is hit by a 1.5-3x hiccup (weather, missed connection...)


@dataclass(frozen=True)
class SimEvent:
    """One event to publish. `topic` is a kind ("orders" | "shipments" | "customs"), not a topic name."""
    topic: str
    key: str
    value: dict
    at: float  # event time (= occurred_at), epoch seconds
    #: True on the re-emitted copy of an event (duplicate_rate). Not part of equality or of the message.
    duplicate: bool = field(default=False, compare=False)


# ---- the world -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Country:
    code: str
    utc_offset: float      # hours; fixed (no DST) on purpose: deterministic and good enough
    currency: str          # declared-value currency of sellers in this country
    sorting: tuple[str, ...]   # first-mile sorting centres
    gateways: tuple[str, ...]  # international gateways (departure/arrival)
    depots: tuple[str, ...]    # last-mile delivery depots
    hold_prob: float       # import: chance of a physical inspection
    duty_prob: float       # import: chance duty/tax is assessed at the border

    @property
    def tz(self) -> timezone:
        return _TZ[self.utc_offset]


_TZ: dict[float, timezone] = {}
COUNTRIES: dict[str, Country] = {c.code: c for c in (
    Country("CN", 8, "USD", ("Shenzhen Longhua Sorting Centre", "Guangzhou Baiyun Sorting Centre",
                             "Yiwu Consolidation Centre", "Shanghai Songjiang Sorting Centre"),
            ("Shenzhen Bao'an Air Gateway", "Shanghai Pudong Air Gateway", "Guangzhou Baiyun Air Gateway"),
            ("Shenzhen Futian Depot",), 0.05, 0.3),
    Country("AU", 10, "AUD", ("Sydney Mascot Sorting Centre",), ("Sydney Gateway Facility", "Melbourne Gateway"),
            ("Sydney Alexandria Depot", "Melbourne Dandenong Depot", "Brisbane Eagle Farm Depot",
             "Perth Welshpool Depot"), 0.08, 0.1),
    Country("US", -5, "USD", ("Newark Sort Center", "Los Angeles Sort Center", "Chicago Sort Center"),
            ("JFK International Service Center", "LAX International Service Center",
             "Chicago O'Hare Gateway", "Memphis Hub"),
            ("Brooklyn Delivery Unit", "Dallas Delivery Unit", "Seattle Delivery Unit",
             "Atlanta Delivery Unit", "Phoenix Delivery Unit"), 0.05, 0.85),
    Country("GB", 0, "GBP", ("Heathrow Worldwide Distribution Centre",),
            ("Heathrow Worldwide Distribution Centre", "East Midlands Gateway"),
            ("London Mount Pleasant Depot", "Manchester Depot", "Birmingham Depot", "Glasgow Depot"), 0.04, 0.15),
    Country("DE", 1, "EUR", ("Leipzig Sorting Centre", "Frankfurt Sorting Centre"),
            ("Leipzig/Halle Hub", "Frankfurt International Mail Centre"),
            ("Berlin Depot", "Munich Depot", "Hamburg Depot", "Cologne Depot"), 0.05, 0.5),
    Country("MX", -6, "MXN", ("Mexico City Sorting Centre",), ("Nuevo Laredo Border Crossing", "Mexico City Air Gateway"),
            ("Mexico City Iztapalapa Depot", "Guadalajara Depot", "Monterrey Depot"), 0.10, 0.6),
    Country("CA", -5, "CAD", ("Toronto Gateway Sort",), ("Toronto Pearson Gateway", "Vancouver Gateway"),
            ("Toronto Depot", "Montreal Depot", "Vancouver Depot", "Calgary Depot"), 0.05, 0.4),
    Country("JP", 9, "JPY", ("Tokyo International Sorting Centre",), ("Narita Air Gateway", "Kansai Air Gateway"),
            ("Tokyo Shinagawa Depot",), 0.03, 0.3),
    Country("KR", 9, "USD", ("Seoul International Sorting Centre",), ("Incheon Air Gateway",),
            ("Seoul Gangnam Depot",), 0.03, 0.3),
    Country("NZ", 12, "NZD", ("Auckland Sorting Centre",), ("Auckland International Mail Centre",),
            ("Auckland Depot", "Wellington Depot", "Christchurch Depot"), 0.08, 0.1),
)}


@dataclass(frozen=True)
class Corridor:
    origin: str
    destination: str
    weight: float
    carriers: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # express, standard, economy
    linehaul_h: tuple[float, float, float]  # median departed_origin -> arrived_destination, hours, per level
    level_weights: tuple[float, float, float] = (0.15, 0.45, 0.40)

    @property
    def name(self) -> str:
        return f"{self.origin}-{self.destination}"


CORRIDORS: tuple[Corridor, ...] = (
    Corridor("CN", "US", 24, (("DHL Express", "FedEx", "UPS"), ("YunExpress", "Cainiao", "4PX"),
                              ("China Post", "Cainiao")), (28, 56, 260)),
    Corridor("CN", "AU", 18, (("DHL Express", "SF Express"), ("YunExpress", "4PX", "Cainiao"),
                              ("China Post", "Cainiao")), (30, 60, 200)),
    Corridor("CN", "GB", 12, (("DHL Express", "UPS"), ("YunExpress", "Cainiao"), ("China Post", "Cainiao")),
             (30, 60, 240)),
    Corridor("DE", "US", 9, (("DHL Express", "UPS", "FedEx"), ("DHL Parcel International", "Deutsche Post"),
                             ("Deutsche Post",)), (22, 44, 150)),
    Corridor("US", "MX", 9, (("FedEx", "UPS", "DHL Express"), ("Estafeta", "FedEx"), ("USPS", "Estafeta")),
             (14, 30, 72), (0.2, 0.55, 0.25)),
    Corridor("CN", "DE", 7, (("DHL Express",), ("Cainiao", "YunExpress"), ("China Post",)), (30, 64, 380)),
    Corridor("US", "CA", 6, (("FedEx", "UPS"), ("Canada Post", "UPS"), ("USPS",)), (12, 30, 70),
             (0.2, 0.55, 0.25)),
    Corridor("GB", "US", 5, (("DHL Express", "UPS"), ("Parcelforce Worldwide", "Royal Mail International"),
                             ("Royal Mail International",)), (24, 50, 160)),
    Corridor("JP", "US", 4, (("DHL Express", "FedEx"), ("Japan Post", "Yamato Transport"), ("Japan Post",)),
             (26, 54, 220)),
    Corridor("KR", "AU", 3, (("DHL Express",), ("Korea Post",), ("Korea Post",)), (30, 60, 200)),
    Corridor("CN", "NZ", 3, (("DHL Express",), ("YunExpress", "Cainiao"), ("China Post",)), (34, 70, 230)),
)
_CORRIDOR_WEIGHTS = [c.weight for c in CORRIDORS]
_TZ.update({c.utc_offset: timezone(timedelta(hours=c.utc_offset)) for c in COUNTRIES.values()})

_POSTAL = {"China Post", "Korea Post", "Japan Post", "Royal Mail International", "Deutsche Post", "USPS",
           "Canada Post"}
_TRACKING_PREFIX = {"DHL Express": "", "FedEx": "", "UPS": "1Z", "YunExpress": "YT", "Cainiao": "LP",
                    "4PX": "4PX", "SF Express": "SF", "Estafeta": "EST", "DHL Parcel International": "JJD",
                    "Parcelforce Worldwide": "PF", "Yamato Transport": "YM"}

#: (hs_code, description, unit price range in USD) of typical cross-border parcels.
_CATALOGUE = (
    ("851830", "headphones", 12, 120), ("610910", "t-shirt", 4, 25), ("640411", "sneakers", 25, 140),
    ("420222", "handbag", 15, 220), ("950300", "toy", 5, 60), ("330499", "cosmetics", 6, 55),
    ("711719", "costume jewellery", 3, 80), ("940540", "lamp", 12, 90), ("392690", "plastic accessory", 2, 20),
    ("850440", "charger", 6, 40), ("620442", "dress", 10, 90), ("900410", "sunglasses", 5, 70),
)
_USD_RATE = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 150.0, "AUD": 1.52, "CAD": 1.37, "MXN": 18.0,
             "NZD": 1.66}

# Stage medians in hours, per service level (express, standard, economy).
_HANDLING = (4, 14, 30)        # last order placed -> label_created
_PICKUP = (3, 10, 20)          # label_created -> picked_up
_EXPORT_LODGE = (2, 6, 14)     # picked_up -> export declaration_lodged
_EXPORT_CLEAR = (1.5, 4, 8)    # export declaration_lodged -> released
_TO_DEPART = (5, 20, 60)       # export released -> departed_origin (consolidation, flight/vessel booking)
_IMPORT_LODGE = (1, 3, 8)      # arrived_destination -> import declaration_lodged
_RISK = (1, 3, 6)              # lodged -> risk_assessed
_INSPECTION = (10, 24, 36)     # held_for_inspection -> inspection_completed
_DUTY_ASSESS = (2, 4, 8)       # -> duty_assessed
_DUTY_PAY = (3, 10, 24)        # duty_assessed -> duty_paid
_RELEASE = (1, 3, 6)           # -> released
_TO_OFD = (8, 24, 48)          # import released -> out_for_delivery (domestic linehaul)
_DELIVER = (4, 6, 7)           # out_for_delivery -> delivered
_FAIL = (5, 6, 7)              # out_for_delivery -> delivery_failed
_RETRY = (20, 24, 30)          # delivery_failed -> out_for_delivery again
_RETURN = (48, 72, 96)         # second failure / customs rejection -> returned
_LOST = (240, 336, 480)        # last scan -> declared lost
_SEIZE = (24, 48, 72)          # held_for_inspection -> seized

_FAIL_PROB = 0.07              # first delivery attempt fails
_FAIL_AGAIN_PROB = 0.3         # second attempt fails too -> returned
_LOST_PROB = 0.003             # lost in transit after departure
_SEIZED_PROB = 0.02            # of inspected parcels
_REJECTED_PROB = 0.003         # import declaration rejected -> returned
_CANCELLED_ORDER_PROB = 0.04   # an extra order that is placed and cancelled, never shipped
_NO_PROMISE_PROB = 0.2
_PROMISE_BUFFER = (1.4, 1.4, 1.55)   # promise = median door-to-door x buffer + a day: ~5-12 % late
_PROMISE_EXTRA_DAYS = 1
_NO_VALUE_PROB = 0.1
_NO_ITEMS_PROB = 0.1

_BACKLOG = (5.0, 10.0)         # customs-backlog: factor on CN-AU import customs stages
_BACKLOG_HOLD_PROB = 0.6
_LINEHAUL_DELAY = (48.0, 144.0)  # linehaul-delay: extra hours on CN-US linehaul (air capacity crunch)
_LASTMILE_FAIL_PROB = 0.5      # last-mile-failures: first attempt failure in GB
_LASTMILE_RETRY = 2.0
#: de-minimis-change: the destination, the corridor whose low-value flood goes through formal entry,
#: the regime the worker must know (scenario_regimes), the factor on import customs and the hold rate.
DE_MINIMIS_DESTINATION, DE_MINIMIS_CORRIDOR = "AU", "CN-AU"
DE_MINIMIS_REGIME = "au-de-minimis-removed"
DE_MINIMIS_OLD_THRESHOLD_AUD = 1000.0
_FORMAL_ENTRY = (4.0, 8.0)
_FORMAL_HOLD_PROB = 0.5

_EVENT_NS = uuid.UUID("6f1c9a52-4d0e-5a43-9a1e-0c0a7d1b2c3d")
_EVENT_NS_BYTES = _EVENT_NS.bytes


def _promise_days(corridor: Corridor, level: int) -> int:
    """Whole days promised at checkout: the median door-to-door time plus a buffer, rounded up."""
    hours = (_HANDLING[level] + _PICKUP[level] + _EXPORT_LODGE[level] + _EXPORT_CLEAR[level]
             + _TO_DEPART[level] + corridor.linehaul_h[level] + _IMPORT_LODGE[level] + _RISK[level]
             + _RELEASE[level] + _TO_OFD[level] + _DELIVER[level])
    return math.ceil(hours * _PROMISE_BUFFER[level] / 24) + _PROMISE_EXTRA_DAYS


# ---- one history as a compact plan -----------------------------------------------------------------

class _Plan:
    """One shipment's history: shared facts plus a sorted list of (at, kind, event_type, extra) steps.

    Values are built only when a step is emitted, so in-flight histories stay small.
    """
    __slots__ = ("seed", "n", "shipment_id", "corridor", "level", "carrier", "tracking", "orders",
                 "steps", "export_dec", "import_dec", "facilities")

    def __init__(self, seed, n, shipment_id, corridor, level, carrier, tracking):
        self.seed, self.n, self.shipment_id = seed, n, shipment_id
        self.corridor, self.level, self.carrier, self.tracking = corridor, level, carrier, tracking
        self.orders: list[dict] = []   # order facts (order_id, placed, promised, value, items)
        self.steps: list[tuple] = []
        self.facilities: dict[str, str] = {}
        self.export_dec = f"DEC-{seed}-{n:06d}-EX"
        self.import_dec = f"DEC-{seed}-{n:06d}-IM"


class _Clock:
    """Accumulates stage durations for one history, in whole seconds, strictly increasing."""
    __slots__ = ("rng", "t")

    def __init__(self, rng: Random, t: float):
        self.rng, self.t = rng, int(t)

    def after(self, median_hours: float, factor: float = 1.0) -> int:
        rng = self.rng
        median = median_hours * 3600.0 * factor
        d = median * math.exp(_SIGMA * rng.gauss(0.0, 1.0))
        if rng.random() < _HICCUP:
            d *= rng.uniform(1.5, 3.0)
        d = min(d, _STAGE_CAP * median)
        self.t += max(1, int(d))
        return self.t


def _tracking_number(rng: Random, carrier: str, origin: str) -> str:
    if carrier in _POSTAL:  # UPU S10: 2 letters, 8 digits, check digit, origin country
        digits = [rng.randrange(10) for _ in range(8)]
        check = 11 - sum(w * d for w, d in zip((8, 6, 4, 2, 3, 5, 9, 7), digits)) % 11
        check = {10: 0, 11: 5}.get(check, check)
        return f"{rng.choice('LRCE')}{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{''.join(map(str, digits))}{check}{origin}"
    prefix = _TRACKING_PREFIX.get(carrier, "")
    if prefix == "1Z":
        return "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16))
    length = {"DHL Express": 10, "FedEx": 12}.get(carrier, 14)
    return prefix + "".join(str(rng.randrange(10)) for _ in range(length))


def _order_facts(rng: Random, order_id: str, placed: int, corridor: Corridor, level: int) -> dict:
    origin, dest = COUNTRIES[corridor.origin], COUNTRIES[corridor.destination]
    facts = {"order_id": order_id, "placed": placed, "promised": None, "value": None, "items": None,
             "cancelled": False}
    if rng.random() >= _NO_PROMISE_PROB:
        facts["promised"] = placed + _promise_days(corridor, level) * 86400
    items = []
    usd = 0.0
    for _ in range(1 if rng.random() < 0.6 else rng.randint(2, 4)):
        hs, _desc, lo, hi = rng.choice(_CATALOGUE)
        qty = 1 if rng.random() < 0.75 else rng.randint(2, 3)
        usd += qty * rng.uniform(lo, hi)
        items.append({"sku": f"SKU-{hs[:4]}-{rng.randrange(100000):05d}", "qty": qty, "hs_code": hs})
    if rng.random() >= _NO_ITEMS_PROB:
        facts["items"] = items
    if rng.random() >= _NO_VALUE_PROB:
        currency = origin.currency
        amount = usd * _USD_RATE[currency]
        facts["value"] = {"amount": round(amount) if currency == "JPY" else round(amount, 2),
                          "currency": currency}
    facts["tz_buyer"] = dest.tz
    return facts


def _plan(seed: int, n: int, arrival: float, scenario: str, scenario_start: float,
          next_order: Callable[[], str]) -> _Plan:
    """Draw one complete history starting at `arrival` (the first order's placement)."""
    rng = Random(seed * 10_000_019 + n)
    corridor = rng.choices(CORRIDORS, weights=_CORRIDOR_WEIGHTS)[0]
    level = rng.choices((0, 1, 2), weights=corridor.level_weights)[0]
    origin, dest = COUNTRIES[corridor.origin], COUNTRIES[corridor.destination]
    carrier = rng.choice(corridor.carriers[level])
    plan = _Plan(seed, n, f"SHP-{seed}-{n:06d}", corridor, level, carrier,
                 _tracking_number(rng, carrier, corridor.origin))
    plan.facilities = {
        "sorting": rng.choice(origin.sorting), "out_gw": rng.choice(origin.gateways),
        "in_gw": rng.choice(dest.gateways), "depot": rng.choice(dest.depots),
    }
    steps = plan.steps
    lv = level

    # Orders: usually one, sometimes a buyer's two or three orders from one seller ship together.
    n_orders = 1 if rng.random() < 0.85 else (2 if rng.random() < 0.8 else 3)
    placed = int(arrival)
    for i in range(n_orders):
        if i:
            placed += max(60, int(rng.uniform(0.5, 12) * 3600))
        facts = _order_facts(rng, next_order(), placed, corridor, level)
        plan.orders.append(facts)
        steps.append((placed, "orders", "order_placed", len(plan.orders) - 1))
    if rng.random() < _CANCELLED_ORDER_PROB:
        c_placed = int(arrival) + int(rng.uniform(0, 6) * 3600)
        facts = _order_facts(rng, next_order(), c_placed, corridor, level)
        facts["cancelled"] = True
        plan.orders.append(facts)
        steps.append((c_placed, "orders", "order_placed", len(plan.orders) - 1))
        steps.append((c_placed + max(60, int(rng.uniform(0.2, 24) * 3600)), "orders", "order_cancelled",
                      len(plan.orders) - 1))

    clock = _Clock(rng, placed)
    S = "shipments"
    steps.append((clock.after(_HANDLING[lv]), S, "label_created", "sorting"))
    steps.append((clock.after(_PICKUP[lv]), S, "picked_up", "sorting"))
    steps.append((clock.after(_EXPORT_LODGE[lv]), "customs", "declaration_lodged", "export"))
    steps.append((clock.after(_EXPORT_CLEAR[lv]), "customs", "released", "export"))
    departed = clock.after(_TO_DEPART[lv])
    steps.append((departed, S, "departed_origin", "out_gw"))

    if rng.random() < _LOST_PROB:
        steps.append((clock.after(_LOST[lv]), S, "lost", None))
        return _sorted(plan)

    linehaul = corridor.linehaul_h[lv]
    if scenario == "linehaul-delay" and corridor.name == "CN-US" and departed >= scenario_start:
        linehaul += rng.uniform(*_LINEHAUL_DELAY)
    arrived = clock.after(linehaul)
    steps.append((arrived, S, "arrived_destination", "in_gw"))

    # Import customs.
    slow, hold_prob = 1.0, dest.hold_prob
    if scenario == "customs-backlog" and corridor.name == "CN-AU" and arrived >= scenario_start:
        slow, hold_prob = rng.uniform(*_BACKLOG), _BACKLOG_HOLD_PROB
    if scenario == "de-minimis-change" and corridor.name == DE_MINIMIS_CORRIDOR \
            and arrived >= scenario_start and _was_low_value(plan.orders):
        slow, hold_prob = rng.uniform(*_FORMAL_ENTRY), _FORMAL_HOLD_PROB
    steps.append((clock.after(_IMPORT_LODGE[lv], slow), "customs", "declaration_lodged", "import"))
    steps.append((clock.after(_RISK[lv], slow), "customs", "risk_assessed", "import"))
    if rng.random() < hold_prob:
        steps.append((clock.after(0.5, slow), "customs", "held_for_inspection", "import"))
        if rng.random() < _SEIZED_PROB:
            steps.append((clock.after(_SEIZE[lv], slow), "customs", "seized", "import"))
            steps.append((clock.after(_LOST[lv]), S, "lost", None))
            return _sorted(plan)
        steps.append((clock.after(_INSPECTION[lv], slow), "customs", "inspection_completed", "import"))
    if rng.random() < _REJECTED_PROB:
        steps.append((clock.after(_RELEASE[lv], slow), "customs", "rejected", "import"))
        steps.append((clock.after(_RETURN[lv]), S, "returned", "in_gw"))
        return _sorted(plan)
    if rng.random() < dest.duty_prob:
        steps.append((clock.after(_DUTY_ASSESS[lv], slow), "customs", "duty_assessed", "import"))
        steps.append((clock.after(_DUTY_PAY[lv]), "customs", "duty_paid", "import"))
    steps.append((clock.after(_RELEASE[lv], slow), "customs", "released", "import"))

    # Last mile.
    ofd = clock.after(_TO_OFD[lv])
    steps.append((ofd, S, "out_for_delivery", "depot"))
    fail_prob, retry = _FAIL_PROB, 1.0
    if scenario == "last-mile-failures" and corridor.destination == "GB" and ofd >= scenario_start:
        fail_prob, retry = _LASTMILE_FAIL_PROB, _LASTMILE_RETRY
    if rng.random() < fail_prob:
        steps.append((clock.after(_FAIL[lv]), S, "delivery_failed", "depot"))
        steps.append((clock.after(_RETRY[lv], retry), S, "out_for_delivery", "depot"))
        if rng.random() < _FAIL_AGAIN_PROB:
            steps.append((clock.after(_FAIL[lv]), S, "delivery_failed", "depot"))
            steps.append((clock.after(_RETURN[lv]), S, "returned", "depot"))
            return _sorted(plan)
    steps.append((clock.after(_DELIVER[lv]), S, "delivered", "depot"))
    return _sorted(plan)


def _was_low_value(orders: list[dict]) -> bool:
    """Would the parcel have been low value before the de-minimis change (AUD 1,000 or less, or no
    declared value: customs cannot tell it from one)?"""
    total = 0.0
    for o in orders:
        if o["cancelled"]:
            continue
        if o["value"] is None:
            return True
        total += o["value"]["amount"] / _USD_RATE[o["value"]["currency"]] * _USD_RATE["AUD"]
    return total <= DE_MINIMIS_OLD_THRESHOLD_AUD


def change_at(scenario_start: float) -> float:
    """The de-minimis-change instant: midnight UTC at or after `scenario_start` (a regime starts on
    a date)."""
    day = datetime.fromtimestamp(scenario_start, timezone.utc).replace(hour=0, minute=0, second=0,
                                                                          microsecond=0)
    if day.timestamp() < scenario_start:
        day += timedelta(days=1)
    return day.timestamp()


def scenario_regimes(scenario: str, scenario_start: float) -> str | None:
    """The import regime table (TOML, for CORRIDOR_IMPORT_REGIMES) a worker needs to label the
    scenario's parcels as the simulated customs treat them; None if the scenario needs none."""
    if scenario != "de-minimis-change":
        return None
    day = datetime.fromtimestamp(change_at(scenario_start), timezone.utc).date().isoformat()
    return (f"# corridor simulate --scenario de-minimis-change: {DE_MINIMIS_DESTINATION} drops its "
            f"low-value threshold on {day}\n"
            f"[[regime]]\nname = \"{DE_MINIMIS_REGIME}\"\ndestinations = [\"{DE_MINIMIS_DESTINATION}\"]\n"
            f"since = {day}\nthreshold = 0\ncurrency = \"AUD\"\ntimezone = \"UTC\"\n"
            f"note = \"simulated: AU removes its low-value threshold (de-minimis-change)\"\n")


def _sorted(plan: _Plan) -> _Plan:
    steps = plan.steps
    steps.sort(key=lambda s: s[0])  # stable: the shipment chain is already strictly increasing
    first, span = steps[0][0], steps[-1][0] - steps[0][0]
    if span > MAX_HISTORY_SECONDS:  # the rare extreme tail (< 1 in 1000): squeeze it to fit, keeping order
        k = MAX_HISTORY_SECONDS / span
        plan.steps = [(first + int((s[0] - first) * k),) + s[1:] for s in steps]
        for o in plan.orders:
            if o["promised"] is not None:  # promised stays relative to placement, like the checkout did
                o["promised"] = o["promised"] - o["placed"] + first + int((o["placed"] - first) * k)
            o["placed"] = first + int((o["placed"] - first) * k)
    return plan


def _iso(at: float, tz: timezone) -> str:
    return datetime.fromtimestamp(at, tz).isoformat()


def _event_id(name: str) -> str:
    """uuid.uuid5(_EVENT_NS, name) as a string, without the UUID object (a third of the generation time)."""
    b = bytearray(hashlib.sha1(_EVENT_NS_BYTES + name.encode()).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x50
    b[8] = (b[8] & 0x3F) | 0x80
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _materialize(plan: _Plan, index: int) -> SimEvent:
    at, kind, event_type, extra = plan.steps[index]
    corridor = plan.corridor
    origin, dest = COUNTRIES[corridor.origin], COUNTRIES[corridor.destination]
    event_id = _event_id(f"{plan.seed}/{plan.n}/{index}")
    if kind == "orders":
        o = plan.orders[extra]
        value = {"event_id": event_id, "order_id": o["order_id"], "event_type": event_type,
                 "occurred_at": _iso(at, timezone.utc), "seller_country": corridor.origin,
                 "buyer_country": corridor.destination, "service_level": LEVELS[plan.level]}
        if event_type == "order_placed":
            if o["promised"] is not None:
                value["promised_delivery_at"] = _iso(o["promised"], o["tz_buyer"])
            if o["value"] is not None:
                value["declared_value"] = dict(o["value"])
            if o["items"] is not None:
                value["items"] = [dict(i) for i in o["items"]]
        return SimEvent("orders", o["order_id"], value, float(at))
    if kind == "customs":
        country = origin if extra == "export" else dest
        value = {"event_id": event_id, "shipment_id": plan.shipment_id,
                 "declaration_id": plan.export_dec if extra == "export" else plan.import_dec,
                 "direction": extra, "country": country.code, "event_type": event_type,
                 "occurred_at": _iso(at, country.tz)}
        return SimEvent("customs", plan.shipment_id, value, float(at))
    # shipments: carrier feeds repeat the parcel's identity on every scan
    value = {"event_id": event_id, "shipment_id": plan.shipment_id, "event_type": event_type}
    if extra is None:  # lost: no scan location
        value["occurred_at"] = _iso(at, timezone.utc)
    else:
        country = origin if extra in ("sorting", "out_gw") else dest
        value["occurred_at"] = _iso(at, country.tz)
    if event_type == "label_created":
        value["order_ids"] = [o["order_id"] for o in plan.orders if not o["cancelled"]]
    value.update(origin_country=corridor.origin, destination_country=corridor.destination,
                 carrier=plan.carrier, tracking_number=plan.tracking)
    if extra is not None:
        value["location"] = {"country": country.code, "facility": plan.facilities[extra]}
    return SimEvent("shipments", plan.shipment_id, value, float(at))



# ---- the interleaved stream ------------------------------------------------------------------------

def histories(seed: int, shipments: int | None, *, scenario: str = "baseline", start: float,
              duplicate_rate: float = 0.0, reorder_rate: float = 0.0,
              arrival_interval: float = DEFAULT_ARRIVAL_INTERVAL,
              scenario_start: float | None = None) -> Iterator[SimEvent]:
    """Events of `shipments` complete histories (None: endless), interleaved in approximate event-time order.

    Deterministic for (seed, shipments, scenario, start, rates, arrival_interval, scenario_start).
    The first history starts at `start`; later ones arrive as a Poisson process with mean gap
    `arrival_interval` seconds. Scenario effects apply from `scenario_start` (default: `start`).
    A duplicate is the same SimEvent again (same value, same event_id); a reordered event keeps its
    `at` but comes after the next 1-3 events of its history.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    if not (0.0 <= duplicate_rate <= 1.0 and 0.0 <= reorder_rate <= 1.0):
        raise ValueError("duplicate_rate and reorder_rate must be between 0 and 1")
    if arrival_interval <= 0:
        raise ValueError("arrival_interval must be > 0")
    if shipments is not None and shipments < 0:
        raise ValueError("shipments must be >= 0")
    scenario_start = start if scenario_start is None else scenario_start
    if scenario == "de-minimis-change":
        scenario_start = change_at(scenario_start)     # the regime's first day starts at midnight
    arrivals = Random(f"corridor-arrivals/{seed}")
    noise = Random(f"corridor-noise/{seed}")
    order_no = 0

    def next_order() -> str:
        nonlocal order_no
        order_no += 1
        return f"ORD-{seed}-{order_no:06d}"

    # Heap entries: (emit_at, seq, plan, step index) for a history's next step, or
    # (emit_at, seq, None, (event, may_duplicate)) for a delayed or duplicated event.
    heap: list[tuple] = []
    seq = 0
    started = 0
    next_arrival = float(start)
    while True:
        if (shipments is None or started < shipments) and (not heap or heap[0][0] >= next_arrival):
            started += 1
            plan = _plan(seed, started, next_arrival, scenario, scenario_start, next_order)
            seq += 1
            heapq.heappush(heap, (plan.steps[0][0], seq, plan, 0))
            next_arrival += arrivals.expovariate(1.0 / arrival_interval)
            continue
        if not heap:
            return
        emit_at, _, plan, item = heapq.heappop(heap)
        if plan is None:
            event, may_duplicate = item
        else:
            steps = plan.steps
            event = _materialize(plan, item)
            if item + 1 < len(steps):
                seq += 1
                heapq.heappush(heap, (steps[item + 1][0], seq, plan, item + 1))
                if reorder_rate and noise.random() < reorder_rate:
                    later = steps[min(item + noise.randint(1, 3), len(steps) - 1)][0]
                    seq += 1
                    heapq.heappush(heap, (later + noise.uniform(1.0, 900.0), seq, None, (event, True)))
                    continue
            may_duplicate = True
        yield event
        if may_duplicate and duplicate_rate and noise.random() < duplicate_rate:
            seq += 1
            delay = min(6 * 3600.0, 1.0 + noise.expovariate(1 / 1800.0))
            heapq.heappush(heap, (emit_at + delay, seq, None, (replace(event, duplicate=True), False)))


# ---- publishing ------------------------------------------------------------------------------------

def _arrival_interval(rate: float | None, speedup: float, duplicate_rate: float) -> float:
    if rate is None:
        return DEFAULT_ARRIVAL_INTERVAL
    return EVENTS_PER_SHIPMENT * (1.0 + duplicate_rate) * speedup / rate


def plan_clock(*, now: float, rate: float | None, shipments: int | None, speedup: float,
               start: float | None = None, duplicate_rate: float = 0.0) -> dict:
    """The simulated-clock layout run() uses: start (T0), arrival_interval, scenario_start (all event time)."""
    interval = _arrival_interval(rate, speedup, duplicate_rate)
    if shipments is None:
        t0 = now - DEFAULT_BACKFILL if start is None else start
        scenario_start = t0 + DEFAULT_SCENARIO_DELAY
    else:
        # Poisson arrivals: the last one comes after ~N gaps; allow 6 standard deviations, then the longest
        # possible history, so that every history completes before the clock reaches now.
        span = interval * (shipments + 6 * math.sqrt(max(shipments, 1)) + 1)
        t0 = now - (span + MAX_HISTORY_SECONDS) if start is None else start
        scenario_start = t0 + min(DEFAULT_SCENARIO_DELAY, interval * shipments / 3)
    return {"start": float(int(t0)), "arrival_interval": interval, "scenario_start": float(int(scenario_start))}


def run(settings, *, rate: float | None, shipments: int | None, seed: int, scenario: str,
        speedup: float = DEFAULT_SPEEDUP, start: float | None = None, duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0, echo: Callable[[str], None] | None = None,
        progress_every: float = 30.0, regimes_out: str | None = None) -> dict:
    """Publish simulated traffic to settings.input_topics; returns a summary dict.

    Stops after `shipments` complete histories, or (None) at SIGINT/SIGTERM, flushing first.
    `echo` (e.g. print) receives a start line and a progress line every `progress_every` wall seconds.
    `regimes_out`: write there the import regime table the scenario needs (scenario_regimes), if any.
    """
    from kafka import KafkaProducer
    import orjson

    from streams.broker.embedded import create_topics
    from streams.security import kafka_python_options

    if rate is not None and rate <= 0:
        rate = None
    if speedup <= 0:
        raise ValueError("speedup must be > 0")
    topics = settings.input_topics
    client_options = kafka_python_options(settings)  # TLS/SASL for a production cluster; PLAINTEXT here
    create_topics(settings.bootstrap_servers, {name: settings.partitions for name in topics.values()},
                  client_options=client_options)

    wall0 = time.time()
    layout = plan_clock(now=wall0, rate=rate, shipments=shipments, speedup=speedup, start=start,
                        duplicate_rate=duplicate_rate)
    t0 = layout["start"]
    if scenario == "de-minimis-change":
        layout["scenario_start"] = change_at(layout["scenario_start"])
    regimes = scenario_regimes(scenario, layout["scenario_start"])
    if regimes_out and regimes:
        from pathlib import Path
        Path(regimes_out).write_text(regimes, encoding="utf-8")
        if echo:
            echo(f"corridor simulate: wrote the scenario's import regime to {regimes_out} "
                 "(run the worker with CORRIDOR_IMPORT_REGIMES pointing to it)")
    stream = histories(seed, shipments, scenario=scenario, start=t0, duplicate_rate=duplicate_rate,
                       reorder_rate=reorder_rate, arrival_interval=layout["arrival_interval"],
                       scenario_start=layout["scenario_start"])

    if echo:
        pace = "as fast as possible" if rate is None else f"{rate:g} events/s, ~{speedup:g}x"
        echo(f"corridor simulate: seed {seed}, scenario {scenario}, "
             f"{'until Ctrl-C' if shipments is None else f'{shipments} shipments'}, {pace}; event time from "
             f"{_iso(t0, timezone.utc)} (scenario from {_iso(layout['scenario_start'], timezone.utc)}) "
             f"to {', '.join(topics.values())} on {settings.broker}")

    failures: list[BaseException] = []
    # acks=1 and no idempotence: Tansu cannot InitProducerId (docs/broker.md §4); duplicates are part of
    # the contract anyway (consumers dedupe by event_id).
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, client_id="corridor-simulate",
                             acks=1, linger_ms=20, batch_size=256 * 1024, enable_idempotence=False,
                             key_serializer=lambda k: k.encode("utf-8"), value_serializer=orjson.dumps,
                             **client_options)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())

    counts = {name: 0 for name in topics.values()}
    events = completed = started_n = duplicates = 0
    last_at = None
    next_slot = time.monotonic()
    next_progress = time.monotonic() + progress_every
    try:
        for ev in stream:
            # Never publish an event stamped in the future: once the stream has caught up with now,
            # it follows the wall clock (real time).
            while not stop.is_set():
                lag = ev.at - time.time()
                if lag <= 0:
                    break
                stop.wait(min(0.5, lag))
            if rate is not None and not stop.is_set():
                now_m = time.monotonic()
                if next_slot > now_m + 0.01:
                    stop.wait(next_slot - now_m)
                next_slot = max(next_slot, now_m - 0.05) + 1.0 / rate  # small bursts are fine, no catch-up surge
            if stop.is_set():
                break
            name = topics[ev.topic]
            producer.send(name, key=ev.key, value=ev.value).add_errback(failures.append)
            counts[name] += 1
            events += 1
            last_at = ev.at if last_at is None else max(last_at, ev.at)
            etype = ev.value["event_type"]
            if ev.duplicate:
                duplicates += 1
            elif ev.topic == "shipments":
                if etype == "label_created":
                    started_n += 1
                elif etype in ("delivered", "returned", "lost"):
                    completed += 1
            if echo and time.monotonic() >= next_progress:
                next_progress = time.monotonic() + progress_every
                behind = time.time() - last_at
                echo(f"corridor simulate: {events} events, {completed} shipments complete, event time "
                     f"{_iso(last_at, timezone.utc)} ({behind / 86400:.1f} days behind now)")
    finally:
        try:
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=5)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    summary = {
        "events": events, "shipments": completed, "shipments_started": started_n, "duplicates": duplicates,
        "seconds": round(time.time() - wall0, 3), "topics": counts, "failed": len(failures),
        "seed": seed, "scenario": scenario, "interrupted": stop.is_set(),
        "event_time_start": _iso(t0, timezone.utc),
        "event_time_last": _iso(last_at, timezone.utc) if last_at is not None else None,
    }
    if failures:
        summary["first_error"] = str(failures[0]).splitlines()[0] if str(failures[0]) else type(failures[0]).__name__
    return summary


# ---- CLI glue --------------------------------------------------------------------------------------

def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: as fast as possible), not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `corridor simulate`."""
    parser.add_argument("--rate", type=_rate, default=DEFAULT_RATE,
                        help=f"events per second, wall clock; 0 = as fast as possible (default {DEFAULT_RATE:g})")
    parser.add_argument("--shipments", type=int, default=None,
                        help="stop after this many complete shipment histories (default: run until Ctrl-C)")
    parser.add_argument("--seed", type=int, default=1, help="random seed; same seed, same traffic (default 1)")
    parser.add_argument("--scenario", choices=list(SCENARIOS), default="baseline",
                        help="; ".join(f"{k}: {v}" for k, v in SCENARIOS.items()))
    parser.add_argument("--speedup", type=_positive, default=DEFAULT_SPEEDUP,
                        help=f"simulated seconds per wall second at --rate once the pipeline is full; sets how "
                             f"many shipments start per simulated day (default {DEFAULT_SPEEDUP:g}: an hour per "
                             f"second)")
    parser.add_argument("--duplicates", type=_fraction, default=0.0,
                        help="fraction of events re-sent verbatim later (same event_id), e.g. 0.02")
    parser.add_argument("--reorder", type=_fraction, default=0.0,
                        help="fraction of events delivered after later events of the same shipment, e.g. 0.05")
    parser.add_argument("--write-regimes", dest="write_regimes", metavar="FILE", default=None,
                        help="write the import regime the scenario needs (de-minimis-change) to FILE, "
                             "for the worker's CORRIDOR_IMPORT_REGIMES")
    parser.add_argument("--backfill-days", type=_positive, default=None,
                        help="start the simulated clock this many days before now (default: 30 for "
                             "open-ended runs; far enough back for a bounded run to complete)")


def main(settings, args: argparse.Namespace) -> int:
    """`corridor simulate`: returns the exit code."""
    from streams.broker.embedded import BrokerError

    start = None
    if getattr(args, "backfill_days", None):
        start = time.time() - args.backfill_days * 86400
    if args.shipments is not None and args.shipments < 0:
        print("corridor simulate: --shipments must be >= 0", file=sys.stderr)
        return 2
    try:
        summary = run(settings, rate=args.rate, shipments=args.shipments, seed=args.seed, scenario=args.scenario,
                      speedup=args.speedup, start=start, duplicate_rate=args.duplicates,
                      reorder_rate=args.reorder, echo=lambda line: print(line, flush=True),
                      regimes_out=getattr(args, "write_regimes", None))
    except BrokerError as exc:
        print(f"corridor simulate: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # kafka-python: NoBrokersAvailable-style errors on an unreachable broker
        if type(exc).__module__.startswith("kafka"):
            print(f"corridor simulate: cannot publish to {settings.broker}: {exc}".splitlines()[0], file=sys.stderr,
                  flush=True)
            return 2
        raise
    per_topic = ", ".join(f"{name} {n}" for name, n in summary["topics"].items())
    print(f"corridor simulate: {summary['events']} events ({per_topic}), {summary['shipments']} shipments "
          f"complete, {summary['seconds']:.1f} s" + (f", {summary['failed']} failed sends: "
                                                    f"{summary.get('first_error')}" if summary["failed"] else ""),
          flush=True)
    return 1 if summary["failed"] else 0
