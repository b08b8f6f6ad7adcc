"""How a device session reports to the gateway, without knowing the gateway.

A session (BLE connection, advert listener, serial port) calls these methods from the
event loop thread. Implementations must not block: the gateway queues and batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from drivers.errors import RefusedPacket
from drivers.measurement import Measurement


class LinkState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # was connected, link lost or closed; will retry
    UNREACHABLE = "unreachable"  # a connect or open attempt failed; will retry
    PERMISSION_DENIED = "permission_denied"  # e.g. serial port not readable by our user


class AdapterState(StrEnum):
    """The Bluetooth adapter, as `status` and the page show it."""

    NOT_USED = "not used"  # no Bluetooth device is configured
    STARTING = "starting"
    OPENING = "opening"
    UP = "up"
    #: The watchdog restarted scanning and no device has been heard since.
    RESTARTING_SCAN = "restarting scan"
    #: The watchdog power-cycled the adapter and no device has been heard since.
    POWER_CYCLING = "power-cycling"
    #: Cannot be opened or cannot scan, or the watchdog's last step failed (see `error`).
    UNAVAILABLE = "unavailable"


class WatchdogAction(StrEnum):
    """The adapter watchdog's steps, as `status` names its last one."""

    RESTART_SCAN = "restart scan"
    POWER_CYCLE = "power cycle"


class SessionListener(Protocol):
    def on_measurements(self, address: str, measurements: Sequence[Measurement]) -> None:
        """Decoded values from one packet (or one reduced window)."""

    def on_live(self, address: str, measurements: Sequence[Measurement]) -> None:
        """Values to show as they change but never to keep as readings: a thermometer's
        in-progress display (0x2A1E) while it settles."""

    def on_link_state(self, address: str, state: LinkState, detail: str = "") -> None:
        """The connection changed; `detail` is a short human-readable reason."""

    def on_device_info(self, address: str, info: dict[str, str]) -> None:
        """Identity read from the device: manufacturer, model, serial, firmware, ..."""

    def on_refused(self, address: str, error: RefusedPacket, raw: bytes) -> None:
        """Bytes refused: undecodable (a `MalformedPacket`: noise) or failing a
        security check (a `SecurityRejection`: maybe an attack). Collection goes on."""

    def on_signal(self, address: str, rssi: int | None) -> None:
        """The device was heard (advert or packet), with its signal strength if known."""
