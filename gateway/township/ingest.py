"""From one MQTT message (topic, payload bytes) to what the township store records.

Pure: no broker, no database. Every payload is validated against the contract's models
(`gateway/contract/models.py`) and its topic (docs/mqtt-contract.md, "Topic tree").
Anything else is a `Refusal` with a short reason code: the consumer counts it, logs the
code and the topic (gateway and device ids are codes, never names) and acknowledges the
message, so one bad message can never block the queue behind it. Nothing of the payload
goes into a refusal's text.

Also refused: payloads holding a NUL character (PostgreSQL cannot store one in text,
so such a message would otherwise fail its batch for ever) and integers beyond a
64-bit column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from gateway.contract.models import (
    ActiveAlerts,
    AlertEvent,
    ClockCorrection,
    CommandResult,
    Devices,
    LedgerDay,
    ReadingMessage,
    Status,
    Subjects,
)

#: Larger payloads are refused unread (the gateway's largest, a readings message of 1,000
#: readings, is under 1 MiB).
MAX_PAYLOAD = 4 * 1024 * 1024
#: The largest value a BIGINT column holds.
_BIGINT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message was not stored: a code (`unknown_topic`, `too_large`, `not_json`,
    `invalid`, `mismatch`) and, for `invalid`, the fields at fault (names only)."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ReadingsIn:
    gateway: str
    #: Each reading as the contract has it (a JSON object).
    readings: list[dict[str, Any]]
    #: Each one's `received_at` in Unix milliseconds.
    received_ms: list[int]


@dataclass(frozen=True, slots=True)
class AlertEventIn:
    gateway: str
    event: dict[str, Any]
    #: Its `updated_at` in Unix milliseconds.
    updated_ms: int


@dataclass(frozen=True, slots=True)
class ActiveAlertsIn:
    gateway: str
    alerts: list[dict[str, Any]]
    updated_ms: list[int]


@dataclass(frozen=True, slots=True)
class StatusIn:
    gateway: str
    state: str
    status: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DevicesIn:
    gateway: str
    devices: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class SubjectsIn:
    gateway: str
    subjects: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ClockIn:
    gateway: str
    from_seq: int
    to_seq: int
    offset_ms: int
    synced_at: str


@dataclass(frozen=True, slots=True)
class LedgerIn:
    gateway: str
    day: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandResultIn:
    gateway: str
    result: dict[str, Any]


Message = (
    ReadingsIn
    | AlertEventIn
    | ActiveAlertsIn
    | StatusIn
    | DevicesIn
    | SubjectsIn
    | ClockIn
    | LedgerIn
    | CommandResultIn
)

#: Topic under a gateway's root -> the contract model of its payload.
_MODELS: dict[str, type[BaseModel]] = {
    "alerts": AlertEvent,
    "alerts/active": ActiveAlerts,
    "status": Status,
    "devices": Devices,
    "subjects": Subjects,
    "clock": ClockCorrection,
    "ledger": LedgerDay,
}


def parse(topic: str, payload: bytes, prefix: str, township: str) -> Message | Refusal:
    """What `payload` on `topic` says, for the gateways of `township` under `prefix`."""
    root = f"{prefix}/{township}/"
    if not topic.startswith(root):
        return Refusal("unknown_topic")
    gateway, _, rest = topic[len(root) :].partition("/")
    if not gateway or not rest:
        return Refusal("unknown_topic")
    kind, model = _kind(rest)
    if model is None:
        return Refusal("unknown_topic")
    if len(payload) > MAX_PAYLOAD:
        return Refusal("too_large")
    if b"\x00" in payload or b"\\u0000" in payload:
        return Refusal("invalid", "NUL character")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Refusal("not_json")
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return Refusal("invalid", _fields(exc))
    except RecursionError:
        return Refusal("invalid", "nested too deep")
    return _message(kind, rest, gateway, data)


def _kind(rest: str) -> tuple[str, type[BaseModel] | None]:
    level = rest.split("/")
    if len(level) == 2 and level[0] == "readings" and level[1]:
        return "readings", ReadingMessage
    if len(level) == 3 and level[0] == "cmd" and level[1] and level[2] == "result":
        return "result", CommandResult
    return rest, _MODELS.get(rest)


def _message(kind: str, rest: str, gateway: str, data: dict[str, Any]) -> Message | Refusal:
    if kind == "result":
        if data["command"] != rest.split("/")[1] or data["id"] is None:
            return Refusal("mismatch", "command")
        return CommandResultIn(gateway, data)
    if kind == "alerts":
        return AlertEventIn(gateway, data, unix_ms(data["updated_at"]))
    if data.get("gateway") != gateway:
        return Refusal("mismatch", "gateway")
    if kind == "readings":
        return _readings(gateway, rest.split("/")[1], data)
    if kind == "alerts/active":
        alerts = data["alerts"]
        return ActiveAlertsIn(gateway, alerts, [unix_ms(a["updated_at"]) for a in alerts])
    if kind == "status":
        return StatusIn(gateway, data["state"], data)
    if kind == "devices":
        return DevicesIn(gateway, data["devices"])
    if kind == "subjects":
        return SubjectsIn(gateway, data["subjects"])
    if kind == "clock":
        numbers = (data["from_seq"], data["to_seq"], data["offset_ms"])
        if any(abs(n) > _BIGINT for n in numbers) or data["from_seq"] > data["to_seq"]:
            return Refusal("invalid", "from_seq, to_seq, offset_ms")
        return ClockIn(gateway, *numbers, data["synced_at"])
    return LedgerIn(gateway, data)


def _readings(gateway: str, device: str, data: dict[str, Any]) -> ReadingsIn | Refusal:
    if data["device"] != device:
        return Refusal("mismatch", "device")
    for reading in data["readings"]:
        if reading["device"] != device or reading["id"] != f"{gateway}-{reading['seq']}":
            return Refusal("mismatch", "readings.id, readings.device")
        if reading["seq"] > _BIGINT:
            return Refusal("invalid", "readings.seq")
    readings = data["readings"]
    return ReadingsIn(gateway, readings, [unix_ms(r["received_at"]) for r in readings])


def _fields(exc: ValidationError) -> str:
    """The paths of the fields at fault, never their values."""
    paths = {".".join(str(part) for part in error["loc"]) or "(root)" for error in exc.errors()}
    return ", ".join(sorted(paths)[:5])


def unix_ms(timestamp: str) -> int:
    """A time with a zone (as the contract models checked it) in Unix ms: any year
    Python reads fits a BIGINT."""
    return round(datetime.fromisoformat(timestamp).timestamp() * 1000)
