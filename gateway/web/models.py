"""The JSON API's response models: what `/api/docs` shows, in the code's own enums.

They describe the records the service already holds (device records, reading and alert
payloads); FastAPI checks each response against them, so the API cannot drift from
what the page and the MQTT contract say.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from drivers.listener import AdapterState, LinkState
from drivers.measurement import Metric, Quality, Site
from gateway.model import AlertKind, AlertState, ClockState, Severity
from gateway.uplink import BrokerState


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceRecord(_Record):
    id: str
    kind: str
    address: str
    subject: str | None
    link: LinkState
    link_detail: str
    info: dict[str, str]
    battery: float | None
    rssi: int | None
    last_seen: str | None
    #: The last value per metric, as `bedside-gateway decode` prints a measurement.
    last_values: dict[str, dict[str, Any]]
    malformed_packets: int
    security_rejections: int


class AlertRecord(_Record):
    id: str
    kind: AlertKind
    state: AlertState
    severity: Severity
    subject: str | None
    device: str
    value: float
    threshold: float
    site: str | None
    raised_at: str
    updated_at: str
    cleared_at: str | None
    evidence: list[str]


class ReadingRecord(_Record):
    id: str
    seq: int
    device: str
    subject: str | None
    metric: Metric
    value: float | bool
    unit: str | None
    site: Site | None
    quality: list[Quality]
    measured_at: str | None
    received_at: str
    clock: ClockState
    #: The broker acknowledged it.
    delivered: bool


class Broker(_Record):
    url: str
    state: BrokerState
    last_error: str
    connected_since: str | None
    published_messages: int
    rejected_messages: int


class Queue(_Record):
    undelivered: int
    oldest_undelivered_at: str | None
    undelivered_alert_events: int
    store_bytes: int
    evicted_undelivered: int


class Bluetooth(BaseModel):
    """The adapter; with the watchdog on, also its last action and counts."""

    model_config = ConfigDict(extra="allow")
    adapter: str
    state: AdapterState
    error: str = ""


class Discovered(_Record):
    address: str
    kind: str
    name: str | None
    rssi: int | None
    seen_s_ago: int


class RefusedPackets(_Record):
    malformed: int
    security: int


class Status(_Record):
    gateway: str
    township: str
    version: str
    started_at: str
    clock: ClockState
    time: str
    broker: Broker
    queue: Queue
    bluetooth: Bluetooth
    discovered: list[Discovered]
    refused_packets: RefusedPackets
    devices: list[DeviceRecord]
    active_alerts: list[AlertRecord]
