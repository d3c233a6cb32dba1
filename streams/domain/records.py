"""The values corridor keeps in its Faust tables. They are also the changelog format.

Each table value is a plain JSON object with short keys (`of`, `ms`, `ev`, ...). Every changed
value goes to a changelog at each commit, so the short keys save bytes, and they are the format:
renaming or retyping a field is a new changelog version (below), and the code must keep reading
the versions that are already in changelogs. The TypedDicts here describe today's records; the
domain functions build them (timeline.py, orders.py, aggregate.py, totals.py) and the worker
adds the partition ("p"). `load_timeline`, `load_order` and `load_totals` take a value read back
from a changelog or a store, of any version, and return it in today's shape.
(streams.contract.records is something else: the wire events on the input topics.)

Tables and their changelogs
---------------------------
Topic names are `<app_id>-<table>-changelog`.

    table      key                            value            changelog partitions
    timelines  shipment_id                    TimelineState    settings.partitions
    orders     order_id                       OrderState       settings.partitions
    totals     "<partition>|<corridor>"       TotalsRecord     settings.partitions
               "<partition>|<corridor>#<day>" TotalsRecord (its `risk` only; since version 6)
    clock      "p<n>", "w<n>", "t<n>|<topic>" float (ClockValues)   1 (a GlobalTable)

- timelines, orders and totals are `Utf8KeyTable`s (streams.worker.tables). The key is the str
  encoded as UTF-8, the same bytes the producers use as the input key, so the key hashes to the
  partition that holds the shipment or order. The value is
  `orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)`, the JSON that faust's `json` codec would
  write. Tuples come back as lists (observations are written as tuples and read back as lists).
  orjson writes float infinities and NaN as `null`, so a record must never hold one: that is why
  `-inf` cannot stand in for a missing time in a record.
- A record goes to the changelog partition of the event being processed. For timelines and orders
  that is the key's own partition. For totals it is the shipments partition `<partition>` whose
  settled shipments it counts: `streams.domain.totals.key(partition, corridor)`, for example
  "3|CN-AU". The corridor is "<seller>-<buyer>" (ISO 3166-1 alpha-2), never "unknown".
- A key that expires (timelines, orders) is deleted and leaves a tombstone (value null). Totals
  are never deleted.
- With the embedded profile, each flush also ends with a tombstone of the key
  b'"\\u0000corridor-end-of-flush"' in every changelog partition it wrote
  (streams/worker/faust_patches/write_behind.py END_MARKER_KEY). No table holds that key, so
  recovering it deletes nothing.
- clock is a faust GlobalTable with faust's `json` codec for both key and value. Its changelog
  key is a JSON string (b'"p0"') and its value a JSON number (b'1740787200.5').

Times in records are event time (`occurred_at`) in epoch seconds (UTC) as floats (`EpochSeconds`),
and durations are in seconds. Order events keep `occurred_at` as the producer's ISO-8601 string.

Changelog versions
------------------
Each version adds to the one before. A table can hold records of every version, because a key
that has not been written since keeps its old record until it expires. The commit that made each
change is given.

1. 8eceba3, first release. Timelines have no `fin` and no `lobs`, and their `pend` items are
   exception type strings (counted once the corridor was known). Orders have no `t` and no `p`.
   Totals have no `o`.
2. 9e0ff02, bounded state. Orders gain `t` (expiry) and `p`.
3. 40d34e7, count each message once. Timelines gain `lobs` entries of the form
   [input topic, offset, observations]. Totals gain `o` of the form {input topic: last offset}.
4. cfeac5f, allowed lateness. Timelines gain `fin`.
   `pend` items are [exception type, event time]. New `lobs` entries and `o` entries number
   settlements under the source "#fin" (streams.domain.totals.SETTLED).
5. Lateness attribution, issue 16. A late delivery adds
   ["late", corridor, stage, seconds] observations (`lobs`), and totals gain `late`
   {stage: whole seconds}. Nothing else changes: a version 4 record is a version 5 record that
   has counted no late delivery's attribution (the shipments it counted before keep none).
6. Lateness prediction, issue 16. A delivered shipment
   adds one ["risk", "<corridor>#<day>", "<service level>|<stage>|<cell>"] observation per
   stage it went through (`lobs`; risk.observations: day = the delivery's epoch day, cell =
   risk.cell(dwell, delivered - stage start)). Observations are counted under their second
   field, so the totals gain records keyed "<partition>|<corridor>#<day>" (risk.risk_key) whose
   `risk` is {sample: count}; their `delivered`, `exceptions`, `transit` and `dwell` stay empty,
   and `o` numbers their settlements like any other record's. The corridor records are as in
   version 5. Older records simply have none: the deliveries they counted teach the lateness
   model nothing (risk.is_risk_key tells the two kinds of key apart).
7. Customs KPIs and import regimes, issue 17. Order facts
   gain `value` [amount, currency] (the order's declared_value); timelines gain `cx` (the import
   customs holds, inspections, rejections and seizures applied before `fin`). A settlement adds ["customs",
   ...], ["delivered_ex_customs", ...] and ["delivered_business_days", ...] observations (`lobs`),
   and totals gain `clear`, `cwt`, `cust`, `dex` and `dbd`. All five and `value` are optional: a version 6 record is a version 7 record
   that has counted no customs figure, and an order fact without `value` declares none (its
   parcel's value class is `unknown`).
8. Stage targets in business days, issue 17 (today's version, `CHANGELOG_VERSION`). Where the
   policy gives a destination `stage_target_business_days`, a delivered shipment's settlement
   adds one ["stage_business_days", corridor, stage, within] observation per stage with a target
   (`lobs`), and totals gain `sbd` {"<stage>|<true|false>": count}. Optional: a version 7 record is
   a version 8 record that has counted no stage against a business-day target.

How today's code reads older records:

- A timeline without `fin` (versions 1-3) was final as soon as it ended. `load_timeline` sets
  `fin` to `end is not None`, which is what `timeline.is_final` reads for a missing `fin`.
- A `pend` item that is a str (versions 1-3) has no time. It is due at once: `timeline.settle`
  and `timeline._pend_time` read it as time -inf. It is kept as it is, because -inf cannot be
  written (see above).
- `lobs` entries and `o` entries from version 3 are keyed by an input topic, not "#fin".
  Reconciling after a crash (`totals.missing`, `totals.counted`) reads only "#fin" entries.
  The metrics' cache stamp reads every `o` entry. They are kept as they are: `lobs` drops them
  after RECENT_OBSERVING newer settlements, and `o` keeps them.
- An order without `t` (version 1) has had no event or link since. `load_order` sets `t` to
  None, which is what orders.py reads for a missing `t` (`state.get("t")`); its next event or
  dated link sets it. An order without `p` is not in the worker's expiry index until it is written
  again.
- Totals without `late` (versions 1-4) have attributed no lateness; every reader uses
  `.get("late", {})` and aggregate.add creates it at the first late delivery.
- Totals without `risk` (versions 1-5, and every corridor record) have counted no risk sample;
  aggregate.add creates it at the first, and no record of a version before 6 is keyed
  "<corridor>#<day>".
- Totals without `clear`, `cwt`, `cust`, `dex` or `dbd` (versions 1-6) have counted no customs figure;
  readers use `.get(section, {})` and aggregate.add creates them. Order facts without `value`
  (versions 1-6) are read with `.get("value")`, timelines without `cx` with `.get("cx", ())`: a
  shipment settled by version 7 code from a version 6 state counts no hold it applied before
  the upgrade.
- Totals without `sbd` (versions 1-7) have counted no stage against a business-day target;
  readers use `.get("sbd", {})` and aggregate.add creates it at the first. A shipment settled by
  version 8 code is counted whole (every stage it went through), whatever code applied its events.
- `o`, `lobs` and `p` are optional in every version. The Engine and the reports never write
  them, and a timeline has no `lobs` before its first settlement.

The worker calls no loader today: every place that reads a record also reads its older shapes.
tests/unit/test_changelog_format.py keeps records of versions 1, 3, 4, 5, 6, 7 and 8 as fixtures. It checks
that the loaders and those readers agree and give the same figures. To change a record's shape,
add a version here with its upgrade in the loader, and add fixtures for it. Keep the old fixtures.
"""
from typing import Any, Literal, NotRequired, TypedDict

#: The version of the records that today's code writes (see "Changelog versions").
CHANGELOG_VERSION = 8

#: Event time as epoch seconds (UTC).
EpochSeconds = float

# ---- observations: what settling a shipment counts, and what `lobs` remembers -------------------
#: ("delivered", corridor, service level, on time, transit seconds from order_placed to delivered).
#: On time means delivered at or before the promise.
DeliveredObservation = tuple[Literal["delivered"], str, str, bool, float]
#: ("dwell", corridor, stage, seconds spent in the stage) for each stage the shipment reached.
DwellObservation = tuple[Literal["dwell"], str, str, float]
#: ("exception", corridor, exception type): a pending exception, or an end that is not a
#: delivery (returned, lost, cancelled).
ExceptionObservation = tuple[Literal["exception"], str, str]
#: ("late", corridor, stage, whole seconds): the part of a late delivery's lateness attributed to
#: the stage (risk.attribute_lateness; the parts of one shipment add up to its lateness).
LateObservation = tuple[Literal["late"], str, str, int]
#: ("customs", corridor, destination, regime, value class, clearance seconds or None (not
#: released before the end), within the calendar target or None, within the business-day target
#: or None (not configured), holds, inspections, rejections, seizures): one per shipment that
#: arrived at its destination (customs.observe).
CustomsObservation = tuple[Literal["customs"], str, str, str, str, float | None, bool | None,
                           bool | None, int, int, int, int]
#: ("delivered_ex_customs", corridor, service level, on time with the customs time removed), and
#: ("delivered_business_days", corridor, service level, on time against the destination's promise
#: in business days; only where the policy gives one).
ExCustomsObservation = tuple[Literal["delivered_ex_customs", "delivered_business_days"], str, str, bool]
#: ("stage_business_days", corridor, stage, ended within the destination's target for the stage
#: in business days): one per stage of a delivered shipment that the policy gives such a target
#: (timeline.stages_within_business_days; since version 8).
StageBusinessDaysObservation = tuple[Literal["stage_business_days"], str, str, bool]
#: ("risk", "<corridor>#<day>", "<service level>|<stage>|<cell>"): one stage of a delivered
#: shipment as the lateness model counts it (risk.observations): the epoch day of the delivery,
#: and risk.cell of (seconds in the stage, seconds from entering it to the delivery).
RiskObservation = tuple[Literal["risk"], str, str]
#: One observation (timeline.settle -> aggregate.add). It is a tuple in memory and a JSON array
#: after a changelog round trip; aggregate.add takes either.
Observation = (DeliveredObservation | DwellObservation | ExceptionObservation | LateObservation
               | RiskObservation | CustomsObservation | ExCustomsObservation
               | StageBusinessDaysObservation)
#: One `lobs` entry: [source, number, observations]. Since version 4 the source is "#fin" and
#: the number is the partition's settlement number. In version 3 they were an input topic and the
#: offset of the message that caused the observations.
Remembered = tuple[str, int, list[Observation]]


# ---- timelines: one per shipment ----------------------------------------------------------------
class OrderFacts(TypedDict):
    """What a shipment knows of one order (TimelineState `of`). The join forwards each order
    event to the shipments that carry the order, and timeline.apply (`_order_facts`) reads it
    into these fields."""
    seller: str | None          # seller_country (ISO alpha-2): where the corridor starts
    buyer: str | None           # buyer_country: where the corridor ends
    sl: str | None              # "service level": economy | standard | express
    placed: EpochSeconds | None     # the earliest order_placed; None until one is read
    promised: EpochSeconds | None   # promised_delivery_at from the last event that carried one;
                                    # None: the policy's promise (placed + hours) applies
    cancelled: bool             # an order_cancelled was read
    value: NotRequired[tuple[float, str] | None]  # declared_value [amount, currency] from the
                                # last event that carried one (since version 6)


#: One `ev` entry: [occurred_at, source, event_type, event_id, info]. The source is the input
#: the event came from ("orders" is a forwarded order event). The info is a short text for the
#: view: for customs "<direction> <country> <declaration_id>", for shipments "<facility>
#: <country>" of the location (None if it has none), for orders the order_id.
EventEntry = tuple[EpochSeconds, Literal["orders", "shipments", "customs"], str, str, str | None]
#: One `pend` item: [exception type, occurred_at]. A bare str is a version 1-3 item with no time.
PendingException = tuple[str, EpochSeconds]


class TimelineState(TypedDict):
    """One shipment's joined timeline: the `timelines` table value, keyed by shipment_id.

    timeline.new_state creates it and timeline.apply folds in each event. timeline.settle sets
    `fin`, `observed` and `pend`, and compacts `ev` once observed. timeline.remember appends to
    `lobs`, and the worker sets `p` on every write. The record is never deleted before it
    expires (timeline.expires_at).
    """
    id: str                     # the shipment id (the table key)
    orders: list[str]           # order ids in the order the shipment events named them. The
                                # first is the primary order: corridor, service level and
                                # promise come from it. Only shipment events add to it.
    of: dict[str, OrderFacts]   # "order facts": order_id -> what its forwarded events said. It
                                # may hold an order that no shipment event has named yet (read
                                # again before its naming event after a crash).
    origin: str | None          # origin_country from the latest shipment event that gave one:
                                # the corridor until the primary order is known
    dest: str | None            # destination_country, the same way
    carrier: str | None         # carrier, the same way
    tracking: str | None        # tracking_number, the same way
    ms: dict[str, EpochSeconds]  # "milestones": stage -> when it started, which is the earliest
                                 # time of the milestone event that opens it
                                 # (stages.MILESTONES). For fulfilment this is the earliest
                                 # order_placed of its orders. After `fin` only fulfilment
                                 # still moves (from order facts); once observed, nothing does.
    end: tuple[str, EpochSeconds] | None  # [end type, time]: delivered | returned | lost from a
                                 # shipment event, or cancelled when every order was cancelled
                                 # before pickup. Until `fin`, the earliest end in event time
                                 # wins, and a shipment end replaces cancelled. None while open.
    fin: bool                   # "final": the watermark has passed end + grace, so the figures
                                # can no longer change (missing in versions 1-3)
    observed: bool              # the end has been counted in the totals (exactly once)
    pend: list[PendingException | str]  # "pending": exceptions not counted yet. Each is counted
                                # once the watermark passes its time and the corridor is known.
                                # A str item is version 1-3 and is due at once.
    ev: list[EventEntry]        # "events": sorted by occurred_at, at most
                                # settings.timeline_max_events. The oldest entry that is not a
                                # milestone or end goes first. Once observed, only
                                # timeline.KEPT_AFTER_END types are kept (compact).
    seen: list[str]             # event ids applied (dedupe), oldest first, at most SEEN_CAP
    first: EpochSeconds | None  # earliest occurred_at applied (None only before the first event)
    last: EpochSeconds | None   # latest occurred_at applied: the partition's clock reads it
    late: int                   # events, other than order facts, applied after `fin`
    lobs: NotRequired[list[Remembered]]  # "last observations": the last RECENT_OBSERVING
                                # settlements that counted this shipment. The worker reconciles
                                # the totals with them after a crash. Absent until the first.
    p: NotRequired[int]         # "partition" of the key. The worker sets it on every write; it is
                                # absent from states the domain builds alone (Engine, reports).
    cx: NotRequired[list[tuple[str, EpochSeconds]]]  # "customs exceptions": [type, occurred_at]
                                # of each import hold, inspection, rejection and seizure applied
                                # before `fin` (customs.counts); since version 6, absent until one


# ---- orders: one per order -----------------------------------------------------------------------
class OrderState(TypedDict):
    """The order side of the join: the `orders` table value, keyed by order_id (orders.py)."""
    id: str                     # the order id (the table key)
    events: list[dict[str, Any]]  # the order's contract events as decoded
                                # (schemas/orders.schema.json; occurred_at stays an ISO string),
                                # in arrival order, at most orders.MAX_ORDER_EVENTS. Each is
                                # forwarded to every linked shipment.
    shipments: list[str]        # shipment ids linked to it (from links), at most orders.MAX_LINKS
    seen: list[str]             # the event ids of `events`, same order (dedupe). The oldest id
                                # goes when its event does.
    t: EpochSeconds | None      # latest occurred_at of its events or `at` of a link to it, used
                                # for expiry (orders.expires_at). None until one (missing in
                                # version 1).
    p: NotRequired[int]         # "partition" of the key, set by the worker on every write


# ---- totals: one per (partition, corridor) -------------------------------------------------------
#: A histogram row: [count per bucket..., count above the last bucket (+Inf), sum of values].
#: Counts are not cumulative; a value is counted in the first bucket whose bound it does not
#: exceed (Prometheus `le`). Counts are ints and the sum is float seconds. The bounds are
#: aggregate.TRANSIT_BUCKETS or aggregate.DWELL_BUCKETS, so a row has len(bounds) + 2 items.
HistogramRow = list[int | float]


class TotalsRecord(TypedDict):
    """The counted figures of one corridor on one partition: the `totals` table value, keyed by
    "<partition>|<corridor>" (or, for the lateness model's samples of one delivery day,
    "<partition>|<corridor>#<day>": only `risk` and `o` filled). aggregate.new_totals creates it and aggregate.add counts each
    observation into it. The worker exports each record with a `partition` label and sums them
    by corridor for its views (aggregate.merge)."""
    delivered: dict[str, int]   # "<service level>|true" or "<service level>|false" (on time or
                                # not) -> deliveries
    exceptions: dict[str, int]  # exception type -> count (returned, lost, cancelled, and the
                                # pending exceptions from stages.EVENT_EXCEPTIONS)
    transit: dict[str, HistogramRow]  # service level -> order_placed-to-delivered seconds
    dwell: dict[str, HistogramRow]    # stage -> seconds spent in the stage
    late: NotRequired[dict[str, int]]  # stage -> whole seconds of late deliveries' lateness
                                # attributed to it (risk.attribute_lateness); since version 5
    risk: NotRequired[dict[str, int]]  # "<service level>|<stage>|<cell>" -> deliveries: the
                                # samples of the lateness model (risk.observations); only in
                                # records keyed "<partition>|<corridor>#<day>", since version 6
    clear: NotRequired[dict[str, HistogramRow]]  # "<destination>|<regime>|<value class>" ->
                                # clearance seconds (aggregate.CLEARANCE_BUCKETS); since version 7
    cwt: NotRequired[dict[str, int]]   # "<destination>|<regime>|<value class>|<calendar|business>"
                                # -> parcels cleared within the target (every cleared parcel adds
                                # its key, with 0 if late); since version 7
    cust: NotRequired[dict[str, int]]  # "<destination>|<regime>|<value class>|<type>" -> count,
                                # type: arrival, hold, inspection, rejection, seizure; since version 7
    dex: NotRequired[dict[str, int]]   # "<service level>|<true|false>" -> deliveries on time with
                                # the customs time removed; since version 7
    dbd: NotRequired[dict[str, int]]   # "<service level>|<true|false>" -> deliveries on time
                                # against a promise in business days (policy [destination.XX]
                                # promise_business_days); since version 7
    sbd: NotRequired[dict[str, int]]   # "<stage>|<true|false>" -> stages of delivered shipments
                                # ended within (or over) their target in business days (policy
                                # [destination.XX] stage_target_business_days); since version 8
    o: NotRequired[dict[str, int]]    # "offsets" (named in version 3): source -> the last
                                # number it counted (totals.count_once), so recounting a number
                                # adds nothing. Since version 4 the source is "#fin" with the
                                # partition's settlement number. Version 3 entries
                                # {input topic: offset} may remain. Every record the worker
                                # writes has it; the Engine's and the reports' do not.


# ---- clock: one GlobalTable shared by every worker ----------------------------------------------
#: The `clock` table: key -> EpochSeconds (streams.worker.pipeline Pipeline.persist_clock). A
#: value is written only when it is greater than the one held, so values never go back.
#:   "p<n>"          the latest event time of any shipment on partition n (the stream clock)
#:   "w<n>"          partition n's shipment-side watermark, read by the workers that do not own
#:                   it (global watermark for the order side's expiry)
#:   "t<n>|<topic>"  the latest event time read on <topic> partition n (the fallback of
#:                   Pipeline.too_old after a restart, before the topic is read again)
ClockValues = dict[str, EpochSeconds]


# ---- loading: any version in, today's shape out ------------------------------------------------
def load_timeline(value: dict) -> TimelineState:
    """A `timelines` value read back from a changelog or store, in today's shape (changelog
    versions above). The value is upgraded in place and returned.

    Keys this code does not declare are kept, because a newer worker may have written them.
    Raises ValueError if a required key is missing after the upgrade: that is not a version this
    code reads.
    """
    if "fin" not in value:                  # versions 1-3: final as soon as it ended
        value["fin"] = value.get("end") is not None
    _require(value, TimelineState, "timelines")
    return value


def load_order(value: dict) -> OrderState:
    """An `orders` value in today's shape, upgraded in place (see `load_timeline`)."""
    value.setdefault("t", None)             # version 1: no event or link since the upgrade
    _require(value, OrderState, "orders")
    return value


def load_totals(value: dict) -> TotalsRecord:
    """A `totals` value in today's shape. Every version reads as today's: `o` is optional, and
    its version 3 entries are kept (see "Changelog versions")."""
    _require(value, TotalsRecord, "totals")
    return value


def _require(value: dict, shape: type, table: str) -> None:
    missing = shape.__required_keys__ - value.keys()
    if missing:
        raise ValueError(f"not a {table} record of any changelog version this code reads: "
                         f"no {', '.join(sorted(missing))}")
