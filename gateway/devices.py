"""What the gateway knows about each configured device: link state, identity, battery,
signal, last values and error counts. The page, `devices` and `status` read this."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from drivers.listener import LinkState
from drivers.measurement import Measurement, Metric
from gateway.config import DeviceConfig


@dataclass
class DeviceStatus:
    id: str
    kind: str
    address: str
    subject: str | None
    link: str = LinkState.DISCONNECTED.value
    link_detail: str = ""
    info: dict[str, str] = field(default_factory=dict)
    battery: float | None = None
    rssi: int | None = None
    last_seen: str | None = None
    last_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    malformed_packets: int = 0

    def record(self) -> dict[str, Any]:
        return asdict(self)


class DeviceRegistry:
    """In-memory state of the bound devices, keyed by address (what sessions report)."""

    def __init__(self, devices: tuple[DeviceConfig, ...]) -> None:
        self.by_address: dict[str, DeviceStatus] = {
            d.address: DeviceStatus(d.device_id, d.kind, d.address, d.subject) for d in devices
        }
        #: Something to persist (last seen, last values...).
        self.dirty = True
        #: Something the server's `devices` inventory shows changed (link, identity,
        #: battery): republish it. Last seen and last values alone do not count.
        self.changed = True

    def get(self, address: str) -> DeviceStatus | None:
        return self.by_address.get(address) or self.by_address.get(address.upper())

    def restore(self, records: list[dict[str, Any]]) -> None:
        """Keep identity and last values across restarts; link state starts fresh."""
        by_id = {s.id: s for s in self.by_address.values()}
        for record in records:
            status = by_id.get(record.get("id", ""))
            if status is None:
                continue
            status.info = dict(record.get("info") or {})
            status.battery = record.get("battery")
            status.rssi = record.get("rssi")
            status.last_seen = record.get("last_seen")
            status.last_values = dict(record.get("last_values") or {})
            status.malformed_packets = int(record.get("malformed_packets") or 0)

    def heard(self, status: DeviceStatus) -> None:
        status.last_seen = datetime.now(UTC).isoformat(timespec="seconds")
        self.dirty = True

    def note_values(self, status: DeviceStatus, measurements: list[Measurement]) -> None:
        self.heard(status)
        for m in measurements:
            if m.metric is Metric.BATTERY and status.battery != float(m.value):
                status.battery = float(m.value)
                self.changed = True
            status.last_values[m.metric.value] = m.as_json()

    def records(self) -> list[dict[str, Any]]:
        return [s.record() for s in self.by_address.values()]
