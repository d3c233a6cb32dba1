"""Import regimes: which low-value relief a destination grants on a date, and what a parcel's
declared value makes it there (`low_value` or `formal`).

The table is TOML (the shipped one is streams/regimes.toml; users add theirs with
CORRIDOR_IMPORT_REGIMES): `[[regime]]` entries (name, destinations, since, threshold, currency,
timezone, note) and `[fx]` rates (units of a currency per 1 USD). `RegimeTable.classify` is the one
rule, used by the timelines when a shipment's customs figures become final and by its open entry
while it waits in customs; docs/semantics.md "Customs" defines it.
"""
from __future__ import annotations

import bisect
import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_REGIMES_FILE = Path(__file__).resolve().parent.parent / "regimes.toml"
#: The regime label of a destination with no regime in force on the arrival date.
NO_REGIME = "none"
#: Value classes (the `value_class` label).
LOW_VALUE, FORMAL, UNKNOWN_VALUE = "low_value", "formal", "unknown"
VALUE_CLASSES = (LOW_VALUE, FORMAL, UNKNOWN_VALUE)
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class RegimeError(ValueError):
    """The regime table is unreadable or an entry is malformed; the message names the entry."""


@dataclass(frozen=True)
class Regime:
    name: str
    destinations: tuple[str, ...]
    since: dt.date
    threshold: float
    currency: str
    timezone: str = "UTC"
    note: str = ""

    @property
    def starts_at(self) -> float:
        """Epoch seconds of the first instant in force (midnight of `since` in its time zone)."""
        start = dt.datetime.combine(self.since, dt.time(0), tzinfo=ZoneInfo(self.timezone))
        return start.timestamp()


@dataclass(frozen=True)
class RegimeTable:
    regimes: tuple[Regime, ...] = ()
    fx: dict[str, float] = field(default_factory=dict)      # currency -> units per 1 USD
    #: destination -> ([start epoch...], [Regime...]) sorted by start (built in __post_init__)
    _by_dest: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        by_dest: dict[str, list[tuple[float, Regime]]] = {}
        for r in self.regimes:
            for d in r.destinations:
                by_dest.setdefault(d, []).append((r.starts_at, r))
        for d, rows in by_dest.items():
            rows.sort(key=lambda row: row[0])
            self._by_dest[d] = ([t for t, _ in rows], [r for _, r in rows])

    # ---- the rule -------------------------------------------------------------------------
    def in_force(self, destination: str | None, t: float) -> Regime | None:
        """The regime of `destination` at epoch `t` (the latest that has started), else None."""
        rows = self._by_dest.get(destination or "")
        if rows is None:
            return None
        i = bisect.bisect_right(rows[0], t)
        return rows[1][i - 1] if i else None

    def convert(self, amount: float, currency: str, to: str) -> float | None:
        """`amount` of `currency` in `to` through the USD rates; None if either has no rate."""
        a, b = self.fx.get(currency), self.fx.get(to)
        if a is None or b is None:
            return None
        return amount / a * b

    def classify(self, destination: str | None, t: float,
                 values: list[tuple[float, str]] | None) -> tuple[str, str]:
        """(regime label, value class) of a parcel arriving at `destination` at epoch `t` whose
        orders declare `values` [(amount, currency)...] (None: an order declares none).

        The value is the sum of the orders' values converted to the regime's currency; it is
        `low_value` when at most the threshold (and the threshold is above 0), else `formal`.
        With no regime in force the class is `unknown`: there is no threshold to compare with.
        """
        regime = self.in_force(destination, t)
        if regime is None:
            return NO_REGIME, UNKNOWN_VALUE
        if not values:
            return regime.name, UNKNOWN_VALUE
        total = 0.0
        for amount, currency in values:
            v = self.convert(amount, currency, regime.currency)
            if v is None:
                return regime.name, UNKNOWN_VALUE
            total += v
        # a cent of rounding in the rates must not flip a parcel declared at the threshold itself
        low = regime.threshold > 0 and total <= regime.threshold + 1e-9 * max(1.0, regime.threshold)
        return regime.name, LOW_VALUE if low else FORMAL

    def changes(self) -> list[tuple[float, str, Regime]]:
        """(start epoch, destination, regime) of every regime start, in time order (the Grafana
        annotations and `corridor_import_regime_start_seconds`)."""
        out = [(t, d, r) for d, (times, regs) in self._by_dest.items() for t, r in zip(times, regs)]
        return sorted(out, key=lambda row: (row[0], row[1]))

    def names(self) -> list[str]:
        return sorted({r.name for r in self.regimes})

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, *extra: str | Path | None, shipped: bool = True) -> "RegimeTable":
        """The shipped table plus each extra file (regimes added, fx rates overridden)."""
        docs = []
        for path in ([DEFAULT_REGIMES_FILE] if shipped else []) + [Path(p) for p in extra if p]:
            try:
                docs.append((str(path), tomllib.loads(path.read_text(encoding="utf-8"))))
            except FileNotFoundError:
                raise RegimeError(f"import regime file {path} does not exist") from None
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise RegimeError(f"import regime file {path} is not valid TOML: {exc}") from None
        return cls.from_dicts(docs)

    @classmethod
    def from_dicts(cls, docs: list[tuple[str, dict]]) -> "RegimeTable":
        regimes: list[Regime] = []
        fx: dict[str, float] = {}
        for source, doc in docs:
            unknown = set(doc) - {"regime", "fx"}
            if unknown:
                raise RegimeError(f"{source}: unknown section(s) {', '.join(sorted(unknown))} "
                                  "(expected [[regime]] and [fx])")
            for cur, rate in doc.get("fx", {}).items():
                if not _CURRENCY.match(cur) or isinstance(rate, bool) \
                        or not isinstance(rate, (int, float)) or rate <= 0:
                    raise RegimeError(f"{source} [fx]: {cur} = {rate!r} is not a positive rate "
                                      "of an ISO 4217 currency")
                fx[cur] = float(rate)
            for i, entry in enumerate(doc.get("regime", [])):
                regimes.append(_regime(entry, f"{source} [[regime]] #{i + 1}"))
        seen: set[str] = set()
        for r in regimes:
            if r.name in seen:
                raise RegimeError(f"import regime {r.name!r} is defined twice")
            seen.add(r.name)
            if r.currency not in fx:
                raise RegimeError(f"import regime {r.name!r}: currency {r.currency} has no rate in [fx]")
        return cls(tuple(regimes), fx)


def _regime(entry: dict, where: str) -> Regime:
    allowed = {"name", "destinations", "since", "threshold", "currency", "timezone", "note"}
    unknown = set(entry) - allowed
    if unknown:
        raise RegimeError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    missing = {"name", "destinations", "since", "threshold", "currency"} - set(entry)
    if missing:
        raise RegimeError(f"{where}: missing {', '.join(sorted(missing))}")
    name = entry["name"]
    if not isinstance(name, str) or not _NAME.match(name) or name == NO_REGIME:
        raise RegimeError(f"{where}: name {name!r} must be lower-case letters, digits and '-' "
                          f"(at most 40, not {NO_REGIME!r})")
    dests = entry["destinations"]
    if not isinstance(dests, list) or not dests or not all(
            isinstance(d, str) and _COUNTRY.match(d) for d in dests):
        raise RegimeError(f"{where} ({name}): destinations must be a list of ISO 3166-1 alpha-2 codes")
    since = entry["since"]
    if not isinstance(since, dt.date) or isinstance(since, dt.datetime):
        raise RegimeError(f"{where} ({name}): since must be a TOML date (2021-07-01), not {since!r}")
    threshold = entry["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise RegimeError(f"{where} ({name}): threshold must be a number >= 0, not {threshold!r}")
    currency = entry["currency"]
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise RegimeError(f"{where} ({name}): currency must be an ISO 4217 code, not {currency!r}")
    tz = entry.get("timezone", "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise RegimeError(f"{where} ({name}): unknown time zone {tz!r}") from None
    return Regime(name, tuple(dests), since, float(threshold), currency, tz, str(entry.get("note", "")))
