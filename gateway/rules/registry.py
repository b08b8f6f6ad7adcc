"""Every alert rule, declared once. The `[rules]` tables of the configuration file and
the rules the engine runs both derive from `RULES`.

Adding a rule: a module with its parameters (a `ConfigTable`) and its class (a `Rule`),
one entry here, tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import Field, create_model

from gateway.config_table import ConfigTable
from gateway.rules.base import Rule
from gateway.rules.fever import FeverAlerts, FeverParams
from gateway.rules.spo2 import LowSpo2Alerts, LowSpo2Params

P = TypeVar("P", bound=ConfigTable)


@dataclass(frozen=True, slots=True)
class RuleEntry(Generic[P]):
    #: The rule's table in the configuration file: `[rules.<table>]`.
    table: str
    #: What that table holds: the rule's parameters, their defaults and bounds.
    params: type[P]
    #: Builds the rule (its `kind` says which alerts it raises) from its parameters.
    rule: Callable[[P], Rule]


RULES: tuple[RuleEntry[Any], ...] = (
    RuleEntry("fever", FeverParams, FeverAlerts),
    RuleEntry("low_spo2", LowSpo2Params, LowSpo2Alerts),
)

_TABLES: dict[str, Any] = {
    entry.table: (entry.params, Field(default_factory=entry.params)) for entry in RULES
}
_RuleTables = create_model("_RuleTables", __base__=ConfigTable, **_TABLES)


class RulesSection(_RuleTables):  # type: ignore[misc,valid-type]
    """`[rules]`: one table per entry of `RULES`, each optional (defaults)."""
