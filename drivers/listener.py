"""How a device session reports to the gateway, without knowing the gateway.

A session (BLE connection, advert listener, serial port) calls these methods from the
event loop thread. Implementations must not block: the gateway queues and batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from drivers.measurement import MalformedPacket, Measurement


class LinkState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # was connected, link lost or closed; will retry
    UNREACHABLE = "unreachable"  # a connect or open attempt failed; will retry
    PERMISSION_DENIED = "permission_denied"  # e.g. serial port not readable by our user


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

    def on_malformed(self, address: str, error: MalformedPacket, raw: bytes) -> None:
        """Bytes that could not be decoded. Collection goes on."""

    def on_signal(self, address: str, rssi: int | None) -> None:
        """The device was heard (advert or packet), with its signal strength if known."""
