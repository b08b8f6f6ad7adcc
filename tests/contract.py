"""Check a message against the published MQTT contract (gateway/contract/*.json)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

_NAMES = ("reading-message", "alert-event", "active-alerts", "status", "devices")
_SCHEMAS = {
    name: json.loads(resources.files("gateway.contract").joinpath(f"{name}.json").read_text())
    for name in _NAMES
}
_REGISTRY = Registry().with_resources(
    (f"{name}.json", Resource.from_contents(schema)) for name, schema in _SCHEMAS.items()
)


def schema_for(topic: str) -> str:
    if "/readings/" in topic:
        return "reading-message"
    for suffix, name in (
        ("/alerts/active", "active-alerts"),
        ("/alerts", "alert-event"),
        ("/status", "status"),
        ("/devices", "devices"),
    ):
        if topic.endswith(suffix):
            return name
    raise AssertionError(f"topic {topic!r} is not in the contract")


def assert_contract(topic: str, payload: Any) -> None:
    validator = Draft202012Validator(
        _SCHEMAS[schema_for(topic)], registry=_REGISTRY, format_checker=FormatChecker()
    )
    errors = sorted(validator.iter_errors(payload), key=str)
    assert not errors, f"{topic}: {errors[0].message} at {list(errors[0].absolute_path)}"
