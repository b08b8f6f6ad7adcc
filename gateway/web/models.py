"""The JSON API's response models: what `/api/docs` shows. Devices, alerts and readings
are the MQTT contract's own models (`gateway.contract.models`), so the API and the
contract cannot drift apart; FastAPI checks each response against them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.contract.models import (
    AlertEvent,
    Bluetooth,
    Count,
    Device,
    DeviceKind,
    Fault,
    Queue,
    Reading,
    RefusedPackets,
    Timestamp,
)
from gateway.model import ClockState
from gateway.uplink import BrokerState


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadingRecord(Reading):
    delivered: bool = Field(description="the broker acknowledged it")


class Broker(_Record):
    url: str
    state: BrokerState
    last_error: str
    connected_since: Timestamp | None
    published_messages: Count
    rejected_messages: Count = Field(description="publishes the broker refused (MQTT 5)")


class Discovered(_Record):
    """A sensor heard advertising that is not bound to anything: a candidate for pairing."""

    address: str
    kind: DeviceKind
    name: str | None
    rssi: int | None
    seen_s_ago: Count


class Status(_Record):
    gateway: str
    township: str
    version: str
    started_at: Timestamp
    clock: ClockState
    time: Timestamp
    broker: Broker
    queue: Queue
    bluetooth: Bluetooth
    discovered: list[Discovered]
    refused_packets: RefusedPackets
    faults: list[Fault] = Field(description="parts down or degraded; empty when all work")
    restarts: dict[str, Count] = Field(
        description="supervised parts restarted after an unexpected end, since the start"
    )
    devices: list[Device]
    active_alerts: list[AlertEvent]
