"""The SLA policy: promised end-to-end time per corridor and service level, target time per stage.

Loaded from TOML (the shipped defaults are streams/sla_policy.toml). A corridor section overrides
the defaults key by key; everything is stored in seconds. The customs clearance target
(`[customs]`), the destinations' time zones and business days (`[destination.XX]`) and the import
regime table (streams/regimes.toml plus CORRIDOR_IMPORT_REGIMES) travel with the policy, so every
rule that decides a figure reads one object.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from streams.domain import calendar
from streams.domain.regimes import RegimeError, RegimeTable
from streams.domain.stages import SERVICE_LEVELS, STAGES

DEFAULT_POLICY_FILE = Path(__file__).resolve().parent.parent / "sla_policy.toml"
HOUR, DAY = 3600.0, 86400.0
#: Import clearance target (arrival at destination -> import release) when the policy gives none.
DEFAULT_CUSTOMS_TARGET_DAYS = 5


class PolicyError(ValueError):
    """The policy file is unreadable or names an unknown stage or service level."""


@dataclass(frozen=True)
class Destination:
    """What the policy says of one destination country (`[destination.XX]`)."""
    timezone: str | None = None             # IANA zone: on time and business days by local date
    customs_target: float | None = None     # clearance target, seconds (calendar days x 86400)
    customs_target_business_days: int | None = None   # also count it in business days
    holidays_subdiv: str | None = None      # the holidays library's subdivision (state, province)
    weekend: tuple[int, ...] = (5, 6)       # weekday numbers, Monday 0
    promise_business_days: dict[str, int] = field(default_factory=dict)   # service level -> days
    #: stage -> business days: each stage also counted within or over this many business days
    #: of the destination (its calendar and local dates, whatever country the stage runs in)
    stage_target_business_days: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SlaPolicy:
    promise: dict[str, float]                       # service level -> seconds
    stage_targets: dict[str, float]                 # stage -> seconds
    corridor_promise: dict[str, dict[str, float]] = field(default_factory=dict)
    corridor_stage_targets: dict[str, dict[str, float]] = field(default_factory=dict)
    level_stage_targets: dict[str, dict[str, float]] = field(default_factory=dict)  # sl -> stage -> s
    customs_target: float = DEFAULT_CUSTOMS_TARGET_DAYS * DAY   # seconds, every destination
    destinations: dict[str, Destination] = field(default_factory=dict)
    regimes: RegimeTable = field(default_factory=RegimeTable)
    at_risk: float = 0.5        # [risk] at_risk: P(late) from which an open shipment is at risk

    def customs_target_seconds(self, destination: str | None) -> float:
        """Clearance target of a destination (calendar time), else the `[customs]` default."""
        d = self.destinations.get(destination or "")
        return d.customs_target if d is not None and d.customs_target is not None \
            else self.customs_target

    def destination(self, country: str | None) -> Destination | None:
        return self.destinations.get(country or "")

    def promise_seconds(self, corridor: str, service_level: str) -> float:
        over = self.corridor_promise.get(corridor)
        if over and service_level in over:
            return over[service_level]
        return self.promise.get(service_level, self.promise["standard"])

    def stage_target(self, corridor: str, stage: str, service_level: str | None = None) -> float:
        """Corridor override, else the service level's target, else the default target."""
        over = self.corridor_stage_targets.get(corridor)
        if over and stage in over:
            return over[stage]
        level = self.level_stage_targets.get(service_level)
        if level and stage in level:
            return level[stage]
        return self.stage_targets[stage]

    @classmethod
    def load(cls, path: str | Path | None = None,
             regimes: str | Path | None = None) -> "SlaPolicy":
        """The policy file (None: the shipped one) with the shipped import regimes plus the
        file `regimes` (CORRIDOR_IMPORT_REGIMES)."""
        path = Path(path) if path else DEFAULT_POLICY_FILE
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError(f"SLA policy file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"SLA policy file {path} is not valid TOML: {exc}") from None
        try:
            table = RegimeTable.load(regimes)
        except RegimeError as exc:
            raise PolicyError(str(exc)) from None
        return cls.from_dict(doc, source=str(path), regimes=table)

    @classmethod
    def from_dict(cls, doc: dict, source: str = "policy",
                  regimes: RegimeTable | None = None) -> "SlaPolicy":
        promise = _hours(doc.get("promise", {}), SERVICE_LEVELS, f"{source} [promise]")
        section = dict(doc.get("stage_targets", {}))
        levels = {sl: _hours(section.pop(sl), STAGES, f"{source} [stage_targets.{sl}]")
                  for sl in SERVICE_LEVELS if isinstance(section.get(sl), dict)}
        targets = _hours(section, STAGES, f"{source} [stage_targets]")
        missing = [s for s in SERVICE_LEVELS if s not in promise] + [s for s in STAGES if s not in targets]
        if missing:
            raise PolicyError(f"{source}: no default given for {', '.join(missing)}")
        c_promise, c_targets = {}, {}
        for corridor, section in doc.get("corridor", {}).items():
            if "promise" in section:
                c_promise[corridor] = _hours(section["promise"], SERVICE_LEVELS,
                                             f"{source} [corridor.{corridor}.promise]")
            if "stage_targets" in section:
                c_targets[corridor] = _hours(section["stage_targets"], STAGES,
                                             f"{source} [corridor.{corridor}.stage_targets]")
        unknown = set(doc) - {"promise", "stage_targets", "corridor", "customs", "destination", "risk"}
        if unknown:
            raise PolicyError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}")
        customs = doc.get("customs", {})
        if set(customs) - {"target_days"}:
            raise PolicyError(f"{source} [customs]: unknown key(s) "
                              f"{', '.join(sorted(set(customs) - {'target_days'}))} (expected target_days)")
        target = _days(customs.get("target_days", DEFAULT_CUSTOMS_TARGET_DAYS), f"{source} [customs] target_days")
        dests = {country: _destination(country, section, f"{source} [destination.{country}]")
                 for country, section in doc.get("destination", {}).items()}
        risk = dict(doc.get("risk", {}))
        at_risk = risk.pop("at_risk", 0.5)
        if risk:
            raise PolicyError(f"{source} [risk]: unknown key {next(iter(risk))!r} (expected at_risk)")
        if not isinstance(at_risk, (int, float)) or isinstance(at_risk, bool) or not 0 < at_risk <= 1:
            raise PolicyError(f"{source} [risk]: at_risk must be a probability in (0, 1], not {at_risk!r}")
        return cls(promise, targets, c_promise, c_targets, levels, target, dests,
                   regimes if regimes is not None else RegimeTable.load(), float(at_risk))


def _days(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise PolicyError(f"{where} must be a positive number of days, not {value!r}")
    return float(value) * DAY


def _business_days_map(section: dict, key: str, allowed: tuple[str, ...], what: str,
                       tz: str | None, where: str) -> dict:
    """A `{name: whole days}` table of a destination (promises per service level, stage targets
    per stage), checked: known names, positive whole numbers, a time zone to count them in."""
    value = section.get(key, {})
    if not isinstance(value, dict) or any(
            name not in allowed or isinstance(n, bool) or not isinstance(n, int) or n <= 0
            for name, n in value.items()):
        raise PolicyError(f"{where}: {key} must map {what} ({', '.join(allowed)}) to positive "
                          f"whole numbers of days")
    if value and tz is None:
        raise PolicyError(f"{where}: business days need the destination's timezone")
    return value


def _destination(country: str, section: dict, where: str) -> Destination:
    allowed = {"timezone", "customs_target_days", "customs_target_business_days", "holidays_subdiv",
               "weekend", "promise_business_days", "stage_target_business_days"}
    if not (len(country) == 2 and country.isalpha() and country.isupper()):
        raise PolicyError(f"{where}: {country!r} is not an ISO 3166-1 alpha-2 code")
    unknown = set(section) - allowed
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                          f"(expected {', '.join(sorted(allowed))})")
    tz = section.get("timezone")
    if tz is not None:
        try:
            calendar.zone(tz)
        except Exception:   # zoneinfo raises several types for a bad key
            raise PolicyError(f"{where}: unknown time zone {tz!r}") from None
    target = section.get("customs_target_days")
    business = section.get("customs_target_business_days")
    if business is not None:
        if isinstance(business, bool) or not isinstance(business, int) or business <= 0:
            raise PolicyError(f"{where}: customs_target_business_days must be a positive whole "
                              f"number, not {business!r}")
        if tz is None:
            raise PolicyError(f"{where}: business days need the destination's timezone")
    subdiv = section.get("holidays_subdiv")
    weekend = section.get("weekend", ["sat", "sun"])
    if not isinstance(weekend, list) or not all(d in calendar.WEEKDAYS for d in weekend):
        raise PolicyError(f"{where}: weekend must list days among {', '.join(calendar.WEEKDAYS)}")
    promise = _business_days_map(section, "promise_business_days", SERVICE_LEVELS, "service levels",
                                 tz, where)
    stages = _business_days_map(section, "stage_target_business_days", STAGES, "stages", tz, where)
    if business is not None or promise or stages:
        try:
            calendar.check(country, subdiv)
        except calendar.CalendarError as exc:
            raise PolicyError(f"{where}: {exc}") from None
    return Destination(tz, None if target is None else _days(target, f"{where} customs_target_days"),
                       business, subdiv, tuple(sorted(calendar.WEEKDAYS.index(d) for d in weekend)),
                       dict(promise), dict(stages))


def _hours(section: dict, allowed: tuple[str, ...], where: str) -> dict[str, float]:
    out = {}
    for name, hours in section.items():
        if name not in allowed:
            raise PolicyError(f"{where}: unknown key {name!r} (expected one of {', '.join(allowed)})")
        if not isinstance(hours, (int, float)) or isinstance(hours, bool) or hours <= 0:
            raise PolicyError(f"{where}: {name} must be a positive number of hours, not {hours!r}")
        out[name] = float(hours) * HOUR
    return out
