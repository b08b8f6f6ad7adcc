"""Check a message against the published MQTT contract: against the JSON Schema files of
gateway/contract/, as a server reads them, or against the models they are generated from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from pydantic import BaseModel, RootModel
from referencing import Registry, Resource

from gateway.contract.schemas import FILES

_SCHEMAS = {
    file: json.loads(resources.files("gateway.contract").joinpath(file).read_text())
    for file in FILES
}
_REGISTRY = Registry().with_resources(
    (file, Resource.from_contents(schema)) for file, schema in _SCHEMAS.items()
)


def contract_schema(file: str) -> dict[str, Any]:
    """The published schema `file`, e.g. `devices.json`."""
    return _SCHEMAS[file]


def schema_for(topic: str) -> str:
    """The schema file of the messages on `topic`."""
    if "/readings/" in topic:
        return "reading-message.json"
    if "/cmd/" in topic:
        return "command-result.json" if topic.endswith("/result") else "command.json"
    for suffix, file in (
        ("/alerts/active", "active-alerts.json"),
        ("/alerts", "alert-event.json"),
        ("/status", "status.json"),
        ("/devices", "devices.json"),
        ("/subjects", "subjects.json"),
        ("/ledger", "ledger-day.json"),
        ("/audit", "audit-entry.json"),
        ("/clock", "clock-correction.json"),
    ):
        if topic.endswith(suffix):
            return file
    raise AssertionError(f"topic {topic!r} is not in the contract")


def validator(file: str) -> Draft202012Validator:
    """A validator of schema `file` that checks date-time formats and follows the
    references between the files."""
    return Draft202012Validator(_SCHEMAS[file], registry=_REGISTRY, format_checker=FormatChecker())


def assert_contract(topic: str, payload: Any) -> None:
    """Every error, and for a `status` (online or offline) what each of them lacks."""
    errors = list(validator(schema_for(topic)).iter_errors(payload))
    assert not errors, f"{topic}: " + "; ".join(
        f"{e.message} at {list(e.absolute_path)}"
        for error in errors
        for e in error.context or [error]
    )


def assert_exactly(model: type[BaseModel], payload: Any) -> None:
    """`payload` is valid as a `model`, read from its JSON text as a server reads it, and
    has no field the model lacks (even where the contract lets later versions add some):
    a field the code writes and the contract does not know fails here."""
    parsed = model.model_validate_json(json.dumps(payload), strict=True)
    unknown = list(_extra_fields(parsed, model.__name__))
    assert not unknown, f"not in the contract: {unknown}"


def _extra_fields(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, RootModel):
        yield from _extra_fields(value.root, path)
    elif isinstance(value, BaseModel):
        yield from (f"{path}.{name}" for name in value.model_extra or {})
        for name in type(value).model_fields:
            yield from _extra_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _extra_fields(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _extra_fields(item, f"{path}[{key}]")
