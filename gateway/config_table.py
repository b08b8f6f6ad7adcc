"""What every table of the configuration file shares, in its own module so the rules
(`gateway/rules/`) can declare their parameters beside them without importing the whole
configuration (which imports the rules)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigTable(BaseModel):
    """A TOML table: unknown keys are errors (a typo never becomes a default), values are
    never coerced (`"30"` is not a number, `true` is not 1, `30.0` is not an integer),
    nan and inf are refused, and the result is frozen. Errors never carry the input, so
    a secret never reaches a log by way of an error."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        hide_input_in_errors=True,
    )
