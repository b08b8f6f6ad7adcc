"""Every alert rule, declared once. The `[rules]` tables of the configuration file and
the rules the engine runs both derive from `RULES`, as do the risk-grade profiles
(`[rules.profiles.<grade>.<table>]`) and a subject's own thresholds, which override a
table's parameters for the subjects they apply to.

Adding a rule: a module with its parameters (a `ConfigTable`) and its class (a `Rule`),
one entry here, tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import Field, Strict, ValidationError, create_model, field_validator, model_validator

from gateway.config_table import ConfigTable
from gateway.model import RiskGrade
from gateway.rules.base import CareContext, Rule
from gateway.rules.battery import BatteryLowAlerts, BatteryLowParams
from gateway.rules.device_silent import DeviceSilentAlerts, DeviceSilentParams
from gateway.rules.door import DoorOpenAlerts, DoorOpenParams
from gateway.rules.fever import FeverAlerts, FeverParams
from gateway.rules.hypothermia import HypothermiaAlerts, HypothermiaParams
from gateway.rules.missed import MissedMeasurementAlerts, MissedMeasurementParams
from gateway.rules.probe_off import ProbeOffAlerts, ProbeOffParams
from gateway.rules.spo2 import LowSpo2Alerts, LowSpo2Params
from gateway.rules.sustained import (
    BradycardiaAlerts,
    BradycardiaParams,
    TachycardiaAlerts,
    TachycardiaParams,
)

P = TypeVar("P", bound=ConfigTable)


@dataclass(frozen=True, slots=True)
class RuleEntry(Generic[P]):
    #: The rule's table in the configuration file: `[rules.<table>]`.
    table: str
    #: What that table holds: the rule's parameters, their defaults and bounds.
    params: type[P]
    #: Builds the rule (its `kind` says which alerts it raises) from its parameters and
    #: what it may ask of subjects and devices.
    rule: Callable[[P, CareContext], Rule]


RULES: tuple[RuleEntry[Any], ...] = (
    RuleEntry("fever", FeverParams, FeverAlerts),
    RuleEntry("hypothermia", HypothermiaParams, HypothermiaAlerts),
    RuleEntry("low_spo2", LowSpo2Params, LowSpo2Alerts),
    RuleEntry("tachycardia", TachycardiaParams, TachycardiaAlerts),
    RuleEntry("bradycardia", BradycardiaParams, BradycardiaAlerts),
    RuleEntry("missed_measurement", MissedMeasurementParams, MissedMeasurementAlerts),
    RuleEntry("door_open", DoorOpenParams, DoorOpenAlerts),
    RuleEntry("device_silent", DeviceSilentParams, DeviceSilentAlerts),
    RuleEntry("probe_off", ProbeOffParams, ProbeOffAlerts),
    RuleEntry("battery_low", BatteryLowParams, BatteryLowAlerts),
)

_TABLES: dict[str, Any] = {
    entry.table: (entry.params, Field(default_factory=entry.params)) for entry in RULES
}
_RuleTables = create_model("_RuleTables", __base__=ConfigTable, **_TABLES)


#: Parameters that differ from a table's, by table: `{"low_spo2": {"persist_s": 10}}`.
Overrides = dict[str, dict[str, Any]]

#: The grades' profiles when the configuration gives none: residents graded red are
#: followed more closely, so their sustained-breach alerts wait less (10 s, not 15 s).
DEFAULT_PROFILES: dict[RiskGrade, Overrides] = {
    RiskGrade.RED: {
        "low_spo2": {"persist_s": 10.0},
        "tachycardia": {"persist_s": 10.0},
        "bradycardia": {"persist_s": 10.0},
    },
}


def apply_overrides(base: P, overrides: dict[str, Any], *, strict: bool = True) -> P:
    """`base` with `overrides` over it, validated as the table is. `strict=False` for
    overrides that went through JSON (the store, a command), where a time of day is a
    string ("21:00")."""
    if not overrides:
        return base
    merged = base.model_dump()
    for key, value in overrides.items():
        # A table of lines (fever's) is laid over the lines in force, not replaced.
        known = merged.get(key)
        merged[key] = (
            {**known, **value} if isinstance(known, dict) and isinstance(value, dict) else value
        )
    return type(base).model_validate(merged, strict=strict)


def check_overrides(section: ConfigTable, overrides: Overrides, *, strict: bool = True) -> None:
    """ValueError naming the first key of `overrides` that is not a rule's parameter or
    whose value the rule's table refuses (`low_spo2.persist_s: must be at most 300`)."""
    tables = {entry.table for entry in RULES}
    for table, values in overrides.items():
        if table not in tables:
            raise ValueError(f"{table!r} is not a rule (one of {', '.join(sorted(tables))})")
        if not isinstance(values, dict):
            raise ValueError(f"{table}: must be a table")
        try:
            apply_overrides(getattr(section, table), values, strict=strict)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in (table, *error["loc"]))
            raise ValueError(f"{where}: {error['msg']}") from None


class RulesSection(_RuleTables):  # type: ignore[misc,valid-type]
    """`[rules]`: one table per entry of `RULES`, each optional (defaults), and
    `[rules.profiles.<grade>.<table>]`: what differs for subjects of a risk grade."""

    #: A grade given in the file replaces that grade's default profile.
    profiles: dict[Annotated[RiskGrade, Strict(False)], Overrides] = Field(
        default_factory=lambda: dict(DEFAULT_PROFILES), validate_default=True
    )

    @field_validator("profiles", mode="before")
    @classmethod
    def _over_the_defaults(cls, profiles: Any) -> Any:
        return {**DEFAULT_PROFILES, **profiles} if isinstance(profiles, dict) else profiles

    @model_validator(mode="after")
    def _profiles_fit_their_tables(self) -> RulesSection:
        for grade, overrides in self.profiles.items():
            try:
                check_overrides(self, overrides)
            except ValueError as exc:
                raise ValueError(f"profiles.{grade.value}.{exc}") from None
        return self
