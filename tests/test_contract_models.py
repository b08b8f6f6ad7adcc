"""The published contract (gateway/contract/*.json, which docs/asyncapi.yaml refers to)
is tested equal to the models the code publishes from: every enum is the code's enum,
every object carries exactly the fields the code writes. An enum or a field changed in
the code and not in the contract (or the other way round) fails here, before a server
meets it."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from importlib import resources
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker

from drivers.kinds import KINDS
from drivers.listener import AdapterState, LinkState
from drivers.measurement import UNITS, Metric, Quality, Site
from gateway.devices import DeviceStatus
from gateway.model import AlertKind, AlertState, ClockState, Severity
from tests.conftest import REPO
from tests.contract import _REGISTRY
from tests.gateway.helpers import reading


def schema(name: str) -> dict[str, Any]:
    text = resources.files("gateway.contract").joinpath(f"{name}.json").read_text()
    return json.loads(text)


def at(node: dict[str, Any], *path: str) -> dict[str, Any]:
    for key in path:
        node = node[key]
    return node


def values(enum: type[Enum]) -> list[Any]:
    return [member.value for member in enum]


READING = ("reading-message", "$defs", "reading", "properties")
DEVICE = ("devices", "properties", "devices", "items", "properties")

ENUMS = [
    ((*READING, "metric"), values(Metric)),
    ((*READING, "unit"), list(dict.fromkeys(UNITS.values()))),
    ((*READING, "site"), [*values(Site), None]),
    ((*READING, "quality", "items"), values(Quality)),
    ((*READING, "clock"), values(ClockState)),
    (("alert-event", "properties", "kind"), values(AlertKind)),
    (("alert-event", "properties", "state"), values(AlertState)),
    (("alert-event", "properties", "severity"), values(Severity)),
    (("status", "properties", "clock"), values(ClockState)),
    (("status", "properties", "bluetooth", "properties", "state"), values(AdapterState)),
    ((*DEVICE, "link"), values(LinkState)),
    ((*DEVICE, "kind"), list(KINDS)),
]


@pytest.mark.parametrize(("path", "code"), ENUMS, ids=[" ".join(p[::2]) for p, _ in ENUMS])
def test_every_enum_of_the_contract_is_the_codes(path: tuple[str, ...], code: list[Any]) -> None:
    published = at(schema(path[0]), *path[1:])["enum"]
    assert sorted(map(str, published)) == sorted(map(str, code))


def test_a_reading_carries_exactly_the_published_fields() -> None:
    published = at(schema("reading-message"), *READING[1:])
    assert (
        set(reading(1).payload())
        == set(published)
        == set(at(schema("reading-message"), "$defs", "reading")["required"])
    )


def test_a_device_record_carries_exactly_the_published_fields() -> None:
    record = DeviceStatus("plx-f00000000002", "plx", "F0:00:00:00:00:02", "bed-1").record()
    assert set(record) == set(at(schema("devices"), *DEVICE[1:]))
    assert {f.name for f in dataclasses.fields(DeviceStatus)} == set(record)


def test_the_asyncapi_examples_are_valid_messages() -> None:
    """docs/asyncapi.yaml's payloads are the contract's schemas, and its examples obey them."""
    document = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    messages = document["components"]["messages"]
    assert messages, "the AsyncAPI document lists no messages"
    for name, message in messages.items():
        ref = message["payload"]["schema"]["$ref"]
        assert ref.startswith("../gateway/contract/"), (name, ref)
        file = ref.rsplit("/", 1)[1]
        validator = Draft202012Validator(
            schema(file.removesuffix(".json")), registry=_REGISTRY, format_checker=FormatChecker()
        )
        for example in message.get("examples", []):
            errors = list(validator.iter_errors(example["payload"]))
            assert not errors, f"{name} example: {errors[0].message}"
