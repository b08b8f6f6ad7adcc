"""The MQTT contract is one model (gateway/contract/models.py, in the code's own enums):
the published JSON Schemas are generated from it, docs/asyncapi.yaml publishes them on
their topics, and what a running gateway publishes is exactly what the models say. An
enum or a field changed in the code and not in the contract fails here, before a server
meets it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest
import yaml
from pydantic import BaseModel

from drivers.errors import ReplayedPacket, TruncatedPacket
from drivers.measurement import Measurement, Metric, Quality, Site
from gateway.broker import Mosquitto
from gateway.care import Channel
from gateway.config import load_config
from gateway.contract.models import (
    AlertEvent,
    AuditEntry,
    ClockCorrection,
    Command,
    CommandResult,
    Device,
    LedgerDay,
    ReadingMessage,
    Status,
    Subjects,
)
from gateway.contract.schemas import DIRECTORY, FILES, texts
from gateway.model import ClockState
from gateway.service import GatewayService
from tests.conftest import REPO, Subscriber, write_config
from tests.contract import assert_contract, assert_exactly, schema_for, validator
from tests.gateway.helpers import DEVICE, PORT_PATH, Clocks, until

THERMOMETER_ADDRESS = "F0:00:00:00:00:01"
THERMOMETER = f"""
[[devices]]
kind = "hts"
address = "{THERMOMETER_ADDRESS}"
subject = "bed-9"
site = "axillary"
"""
ISOLATED = """
[[subjects]]
code = "bed-9"
risk_grade = "yellow"
isolation_start = 2026-11-20
"""

ASYNCAPI = REPO / "docs" / "asyncapi.yaml"
SCHEMA_REF = "../gateway/contract/"


def test_the_published_schemas_are_generated_from_the_models() -> None:
    generated = texts()
    published = {path.name: path.read_text(encoding="utf-8") for path in DIRECTORY.glob("*.json")}
    stale = sorted(
        n for n in generated.keys() | published.keys() if generated.get(n) != published.get(n)
    )
    assert not stale, f"{stale} differ from the models: run `python -m gateway.contract`"


@pytest.mark.asyncio
async def test_what_the_gateway_publishes_is_exactly_the_contract(
    tmp_path: Path, mosquitto: Mosquitto, subscriber_factory: Callable[[int], Subscriber]
) -> None:
    """Every message of a running gateway, of every topic: readings of each value type,
    an alert raised and acknowledged, the retained sets with a device's counts, the
    subjects, a day of the ledger, status online and offline."""
    server = subscriber_factory(mosquitto.port)
    clocks = Clocks(wall=datetime(2026, 11, 22, 21, 58, tzinfo=UTC))
    config = write_config(
        tmp_path,
        mosquitto.port,
        devices=DEVICE + THERMOMETER,
        extra=ISOLATED,
        gateway_extra='timezone = "UTC"',
    )
    synced = [False]
    service = GatewayService(
        load_config(config),
        now=clocks.now,
        monotonic=clocks.monotonic,
        clock_state=lambda: ClockState.SYNCED if synced[0] else ClockState.UNSYNCED,
    )
    await service.start()
    try:
        # The ledger watches the evening window from the first tick on.
        await until(
            lambda: service.ledger_book.day("bed-9", clocks.wall.date())["windows"], what="tick"
        )
        pipeline = service.pipeline
        pipeline.on_refused(PORT_PATH, ReplayedPacket("counter went back"), b"\x01")
        pipeline.on_refused(PORT_PATH, TruncatedPacket("3 bytes, 5 needed"), b"\x02")
        pipeline.on_device_info(PORT_PATH, {"model": "CMS50 (USB serial)"})
        pipeline.on_signal(PORT_PATH, -61)
        flagged = frozenset({Quality.PROBE_OFF, Quality.LOW_PERFUSION})
        fever = Measurement(
            Metric.BODY_TEMPERATURE, 38.5, site=Site.AXILLARY, measured_at=datetime(2026, 11, 22, 8)
        )
        pipeline.on_measurements(PORT_PATH, [Measurement(Metric.SPO2, 91, flagged), fever])
        pipeline.on_measurements(PORT_PATH, [Measurement(Metric.DOOR_OPEN, True)])
        await until(lambda: server.alerts(), what="the fever alert")
        await service.care.acknowledge(server.alerts()[0]["id"], "doctor-3", channel=Channel.MQTT)
        evening = Measurement(Metric.BODY_TEMPERATURE, 36.6, site=Site.AXILLARY)
        pipeline.on_measurements(THERMOMETER_ADDRESS, [evening])  # clears the fever
        await until(lambda: service.uplink.health.delivered_readings == 4, what="delivered")
        clocks.advance(4 * 60)  # 22:02: the evening window is judged, the day complete
        await until(lambda: server.snapshot("/ledger"), what="the day's ledger")
        root = service.config.topic_root
        command = {"id": "contract-1", "args": {}, "sent_at": clocks.wall.isoformat()}
        publish.single(
            f"{root}/cmd/ping", json.dumps(command), qos=1, port=mosquitto.port, protocol=5
        )
        await until(lambda: server.snapshot("/audit"), what="the ping's audit entry")
        await until(lambda: server.snapshot("/cmd/ping/result"), what="the ping's result")
        synced[0] = True  # NTP has set the clock: what was stamped before is corrected
        await until(lambda: server.snapshot("/clock"), what="the clock correction")
        await until(
            lambda: any(
                d["security_rejections"] == 1 and d["info"]
                for _, p, _ in server.snapshot("/devices")
                for d in p["devices"]
            ),
            what="the devices inventory with the counts",
        )
        await until(
            lambda: any(p["alerts"] for _, p, _ in server.snapshot("/alerts/active")),
            what="an alert in alerts/active",
        )
    finally:
        await service.stop()
    server.wait_for(lambda s: s.snapshot("/status")[-1][1]["state"] == "offline", 10, "offline")

    messages = server.snapshot()
    for topic, payload, _ in messages:
        assert_exactly(FILES[schema_for(topic)], payload)
        assert_contract(topic, payload)
    assert {schema_for(topic) for topic, _, _ in messages} == set(FILES)
    assert {p["state"] for _, p, _ in server.snapshot("/status")} == {"online", "offline"}


def asyncapi() -> dict[str, Any]:
    return yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for key in ref.removeprefix("#/").split("/"):
        node = node[key]
    return node


def test_the_asyncapi_document_publishes_each_schema_on_its_topic() -> None:
    """Each message's payload is one of the schema files, each file is one message's, and
    each channel's address is a topic whose messages that schema describes."""
    document = asyncapi()
    messages = document["components"]["messages"]
    payload_file = {}
    for name, message in messages.items():
        ref = message["payload"]["schema"]["$ref"]
        assert ref.startswith(SCHEMA_REF), (name, ref)
        assert message["name"] == name
        payload_file[name] = ref.removeprefix(SCHEMA_REF)
    assert sorted(payload_file.values()) == sorted(FILES)

    parameters = document["components"]["parameters"]
    examples = {name: parameter["examples"][0] for name, parameter in parameters.items()}
    for name, channel in document["channels"].items():
        topic = channel["address"].format(**examples)
        (message,) = (resolve(document, m["$ref"]) for m in channel["messages"].values())
        assert schema_for(topic) == payload_file[message["name"]], name
    for name, operation in document["operations"].items():
        channel = resolve(document, operation["channel"]["$ref"])
        for ref in operation["messages"]:
            assert resolve(document, ref["$ref"]) in channel["messages"].values(), name


@pytest.mark.parametrize("message", sorted(asyncapi()["components"]["messages"]))
def test_the_asyncapi_examples_are_complete_valid_messages(message: str) -> None:
    document = asyncapi()["components"]["messages"][message]
    file = document["payload"]["schema"]["$ref"].removeprefix(SCHEMA_REF)
    assert document["examples"], f"{message} has no example"
    for example in document["examples"]:
        errors = sorted(validator(file).iter_errors(example["payload"]), key=str)
        assert not errors, f"{example['name']}: {errors[0].message}"
        assert_exactly(FILES[file], example["payload"])


def documented_payloads() -> Iterator[dict[str, Any]]:
    """Every JSON object of the examples in docs/mqtt-contract.md (a block may hold more
    than one)."""
    text = (REPO / "docs" / "mqtt-contract.md").read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL):
        rest = block.strip()
        while rest:
            payload, end = decoder.raw_decode(rest)
            yield payload
            rest = rest[end:].lstrip()


def test_the_examples_of_the_contract_document_are_complete_valid_payloads() -> None:
    by_field: dict[str, type[BaseModel]] = {
        "readings": ReadingMessage,
        "evidence": AlertEvent,
        "link": Device,  # one entry of `devices`
        "state": Status,
        "subjects": Subjects,
        "windows": LedgerDay,
        "channel": AuditEntry,
        "ok": CommandResult,
        "sent_at": Command,
        "offset_ms": ClockCorrection,
    }
    shown = set()
    for payload in documented_payloads():
        model = next(m for field, m in by_field.items() if field in payload)
        assert_exactly(model, payload)
        shown.add(model)
    assert shown == set(by_field.values())
