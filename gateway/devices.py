"""What the gateway knows about each configured device: link state, identity, battery,
signal, last values and refused-packet counts. The page, `devices` and `status` read it.

`DeviceRegistry` owns every change to these records, and so knows what each change
means: something the open pages show (any change), something to persist at once
(binding, link, identity, battery, refused-packet counts), something to persist now
and then (last seen, signal, last values: `ROUTINE_SAVE_EVERY_S`), something the
server's `devices` inventory must show at once (link, identity, battery), or a counter
that moved (refused packets), which the inventory shows at most once per
`counters_every_s`: a noisy radio must reach the server without a message per packet.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drivers.errors import RefusedPacket, SecurityRejection
from drivers.listener import LinkState
from drivers.measurement import Measurement, Metric
from gateway.config import DeviceConfig

log = logging.getLogger(__name__)

#: Last seen, signal strength and last values change with every packet. Saving them
#: each second would be an fsynced transaction a second, wearing out the SD card: they
#: are saved at most this often (and at stop, and with any change saved at once). A
#: crash loses at most this much of them; meanwhile the page shows them from memory.
ROUTINE_SAVE_EVERY_S = 60.0


class DeviceExists(ValueError):
    """A device added that is there already (same device id, or same address)."""


class UnknownDevice(LookupError):
    """A device removed (or asked for) that is not there."""


@dataclass
class DeviceStatus:
    id: str
    kind: str
    address: str
    subject: str | None
    link: LinkState = LinkState.DISCONNECTED
    link_detail: str = ""
    info: dict[str, str] = field(default_factory=dict)
    battery: float | None = None
    rssi: int | None = None
    last_seen: str | None = None
    #: By metric: the last measurement, or its JSON as saved before a restart. Kept as
    #: it came (its JSON is built only when a record is asked for: the page, a save).
    last_values: dict[str, Measurement | dict[str, Any]] = field(default_factory=dict)
    #: Packets that could not be decoded (truncated, bad checksum, implausible): noise.
    malformed_packets: int = 0
    #: Packets refused as replayed, downgraded to clear text or undecryptable: maybe
    #: an attack, so never added to the noise above.
    security_rejections: int = 0
    #: When it was last heard (monotonic s), for the rules' `device_silent`; not kept.
    heard_at: float | None = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "address": self.address,
            "subject": self.subject,
            "link": self.link.value,
            "link_detail": self.link_detail,
            "info": dict(self.info),
            "battery": self.battery,
            "rssi": self.rssi,
            "last_seen": self.last_seen,
            "last_values": {
                metric: value.as_json() if isinstance(value, Measurement) else copy.deepcopy(value)
                for metric, value in self.last_values.items()
            },
            "malformed_packets": self.malformed_packets,
            "security_rejections": self.security_rejections,
        }


class DeviceRegistry:
    """In-memory state of the bound devices, keyed by address (what sessions report)."""

    def __init__(
        self,
        devices: tuple[DeviceConfig, ...],
        counters_every_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`monotonic`: the clock `heard_at` is on (the rules' duration clock)."""
        self._monotonic = monotonic
        self.by_address: dict[str, DeviceStatus] = {}
        self._counters_every_s = counters_every_s
        #: Changed since the page was last told; changed so that a restart must find
        #: it (saved at the next chance); changed only routinely (last seen, signal,
        #: last values: saved at most every `ROUTINE_SAVE_EVERY_S`).
        self._page_changed = True
        self._save_due = True
        self._routine_unsaved = False
        self._saved_at = -ROUTINE_SAVE_EVERY_S
        self._seen_second = -1
        self._seen_text = ""
        self._inventory_changed = True
        self._counters_changed = False
        self._counters_published_at = -counters_every_s
        for device in devices:
            self.add(device)

    def add(self, device: DeviceConfig) -> None:
        """A device bound (at start, or at run time): its record appears in `records()`,
        and the `devices` inventory is republished. Raises `DeviceExists`."""
        if self._by_id(device.device_id) is not None:
            raise DeviceExists(f"device {device.device_id} is bound already")
        held = self.by_address.get(device.address)
        if held is not None:
            raise DeviceExists(f"{device.address} is device {held.id} already")
        self.by_address[device.address] = DeviceStatus(
            device.device_id, device.kind, device.address, device.subject
        )
        self._changed(save_now=True)
        self._inventory_changed = True

    def remove(self, device_id: str) -> None:
        """A device unbound: its record goes from `records()` (the store keeps its last
        copy), and the inventory is republished. Raises `UnknownDevice`."""
        status = self._by_id(device_id)
        if status is None:
            raise UnknownDevice(f"no device {device_id}")
        del self.by_address[status.address]
        self._changed(save_now=True)
        self._inventory_changed = True

    def record(self, device_id: str) -> dict[str, Any]:
        """One device's record, as in `records()`. Raises `UnknownDevice`."""
        status = self._by_id(device_id)
        if status is None:
            raise UnknownDevice(f"no device {device_id}")
        return status.record()

    def get(self, address: str) -> DeviceStatus | None:
        return self.by_address.get(address) or self.by_address.get(address.upper())

    def _by_id(self, device_id: str) -> DeviceStatus | None:
        return next((s for s in self.by_address.values() if s.id == device_id), None)

    def bind(self, device_id: str, subject: str | None) -> None:
        """The device now measures `subject`: its next readings carry it."""
        status = self._by_id(device_id)
        if status is not None and status.subject != subject:
            status.subject = subject
            self._changed(save_now=True)
            self._inventory_changed = True

    def heard_at(self, device_id: str) -> float | None:
        """When the device was last heard (monotonic s), None if not since the start."""
        status = self._by_id(device_id)
        return None if status is None else status.heard_at

    def restore(self, records: list[dict[str, Any]]) -> None:
        """Keep identity, last values and counts across restarts; link state starts fresh."""
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
            status.security_rejections = int(record.get("security_rejections") or 0)

    # --- what sessions report ----------------------------------------------------------

    def link_changed(self, address: str, state: LinkState, detail: str) -> None:
        status = self.get(address)
        if status is None:
            return
        if status.link is not state:
            self._inventory_changed = True
            log.info(
                "device link changed",
                extra={"device": status.id, "link": state.value, "detail": detail},
            )
        if (status.link, status.link_detail) != (state, detail):
            status.link = state
            status.link_detail = detail
            self._changed(save_now=True)
        if state is LinkState.CONNECTED:
            self._heard(status)

    def identified(self, address: str, info: dict[str, str]) -> None:
        status = self.get(address)
        if status is not None and info.items() - status.info.items():
            status.info.update(info)
            self._changed(save_now=True)
            self._inventory_changed = True

    def values_seen(self, address: str, measurements: list[Measurement]) -> DeviceStatus | None:
        """Remember a device's latest values (kept or live only); None if not bound."""
        status = self.get(address)
        if status is None:
            return None
        self._heard(status)
        last_values = status.last_values
        for m in measurements:
            if m.metric is Metric.BATTERY and status.battery != float(m.value):
                status.battery = float(m.value)
                self._changed(save_now=True)
                self._inventory_changed = True
            last_values[m.metric.value] = m
        return status

    def signal(self, address: str, rssi: int | None) -> None:
        status = self.get(address)
        if status is not None:
            if rssi is not None:  # a packet without signal strength keeps the last one
                status.rssi = rssi
            self._heard(status)

    def refused(self, address: str, error: RefusedPacket) -> DeviceStatus | None:
        """Count a refused packet by its class; None if the device is not bound."""
        status = self.get(address)
        if status is None:
            return None
        if isinstance(error, SecurityRejection):
            status.security_rejections += 1
        else:
            status.malformed_packets += 1
        self._changed(save_now=True)
        self._counters_changed = True
        return status

    # --- what the supervisor asks ------------------------------------------------------

    def take_changed(self) -> bool:
        """True once after anything the page shows changed (a value a second, even)."""
        changed, self._page_changed = self._page_changed, False
        return changed

    def take_save_due(self) -> bool:
        """True once when the records are to be saved: after a change a restart must
        find (binding, link, identity, battery, refused counts), or after routine
        changes alone when `ROUTINE_SAVE_EVERY_S` has passed since the last save."""
        now = self._monotonic()
        due = self._save_due or (
            self._routine_unsaved and now - self._saved_at >= ROUTINE_SAVE_EVERY_S
        )
        if due:
            self._save_due = self._routine_unsaved = False
            self._saved_at = now
        return due

    def take_inventory_due(self, now: float) -> bool:
        """True when the `devices` inventory should be republished (at monotonic time
        `now`): at once for link, identity or battery; for counters alone, at most once
        per `counters_every_s`."""
        counters_due = (
            self._counters_changed and now - self._counters_published_at >= self._counters_every_s
        )
        if not (self._inventory_changed or counters_due):
            return False
        self._inventory_changed = self._counters_changed = False
        self._counters_published_at = now
        return True

    def refused_totals(self) -> dict[str, int]:
        """Refused packets over all devices, by class, for `status`."""
        devices = self.by_address.values()
        return {
            "malformed": sum(d.malformed_packets for d in devices),
            "security": sum(d.security_rejections for d in devices),
        }

    def records(self) -> list[dict[str, Any]]:
        return [s.record() for s in self.by_address.values()]

    def _heard(self, status: DeviceStatus) -> None:
        status.heard_at = self._monotonic()
        status.last_seen = self._now_text()
        self._changed(save_now=False)

    def _changed(self, save_now: bool) -> None:
        self._page_changed = True
        if save_now:
            self._save_due = True
        else:
            self._routine_unsaved = True

    def _now_text(self) -> str:
        """Now (UTC, whole seconds) as `last_seen` says it: formatted once a second,
        not once a packet."""
        now = int(time.time())
        if now != self._seen_second:
            self._seen_second = now
            self._seen_text = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
        return self._seen_text
