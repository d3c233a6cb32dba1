"""The SLA policy: promised end-to-end time per corridor and service level, target time per stage.

Loaded from TOML (the shipped defaults are streams/sla_policy.toml). A corridor section overrides
the defaults key by key; everything is stored in seconds.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from streams.domain.stages import SERVICE_LEVELS, STAGES

DEFAULT_POLICY_FILE = Path(__file__).resolve().parent.parent / "sla_policy.toml"
HOUR = 3600.0


class PolicyError(ValueError):
    """The policy file is unreadable or names an unknown stage or service level."""


@dataclass(frozen=True)
class SlaPolicy:
    promise: dict[str, float]                       # service level -> seconds
    stage_targets: dict[str, float]                 # stage -> seconds
    corridor_promise: dict[str, dict[str, float]] = field(default_factory=dict)
    corridor_stage_targets: dict[str, dict[str, float]] = field(default_factory=dict)
    level_stage_targets: dict[str, dict[str, float]] = field(default_factory=dict)  # sl -> stage -> s
    at_risk: float = 0.5        # [risk] at_risk: P(late) from which an open shipment is at risk

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
    def load(cls, path: str | Path | None = None) -> "SlaPolicy":
        path = Path(path) if path else DEFAULT_POLICY_FILE
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError(f"SLA policy file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"SLA policy file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(doc, source=str(path))

    @classmethod
    def from_dict(cls, doc: dict, source: str = "policy") -> "SlaPolicy":
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
        risk = dict(doc.get("risk", {}))
        at_risk = risk.pop("at_risk", 0.5)
        if risk:
            raise PolicyError(f"{source} [risk]: unknown key {next(iter(risk))!r} (expected at_risk)")
        if not isinstance(at_risk, (int, float)) or isinstance(at_risk, bool) or not 0 < at_risk <= 1:
            raise PolicyError(f"{source} [risk]: at_risk must be a probability in (0, 1], not {at_risk!r}")
        return cls(promise, targets, c_promise, c_targets, levels, float(at_risk))


def _hours(section: dict, allowed: tuple[str, ...], where: str) -> dict[str, float]:
    out = {}
    for name, hours in section.items():
        if name not in allowed:
            raise PolicyError(f"{where}: unknown key {name!r} (expected one of {', '.join(allowed)})")
        if not isinstance(hours, (int, float)) or isinstance(hours, bool) or hours <= 0:
            raise PolicyError(f"{where}: {name} must be a positive number of hours, not {hours!r}")
        out[name] = float(hours) * HOUR
    return out
