"""Which Bluetooth stack bleak drives, chosen once from configuration.

- `bluez` or `bluez:hci0`: bleak's default backend, BlueZ over D-Bus (the Pi).
- `bumble:<transport>`: the bumble host stack in this process, on any bumble transport:
  `bumble:usb:0` for a USB dongle, `bumble:tcp-client:127.0.0.1:9001` for the simulator.
"""

from __future__ import annotations

import re
from typing import Any

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from drivers.ble.bumble_backend import BumbleRadio

_USAGE = "use 'bluez', 'bluez:hciN' or 'bumble:<transport>' (e.g. bumble:usb:0)"


class BleAdapter:
    """The backend classes and options to give every BleakScanner and BleakClient."""

    def __init__(
        self, spec: str, *, radio: BumbleRadio | None = None, bluez_adapter: str | None = None
    ) -> None:
        self.spec = spec
        self._radio = radio
        self._bluez_adapter = bluez_adapter

    @property
    def scanner_backend(self) -> type[BaseBleakScanner] | None:
        """None means bleak's platform default (BlueZ on Linux)."""
        return self._radio.scanner_backend if self._radio is not None else None

    @property
    def client_backend(self) -> type[BaseBleakClient] | None:
        return self._radio.client_backend if self._radio is not None else None

    def scanner_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `BleakScanner(...)` and its class methods."""
        return self._kwargs(self.scanner_backend)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `BleakClient(...)`."""
        return self._kwargs(self.client_backend)

    def _kwargs(self, backend: type[Any] | None) -> dict[str, Any]:
        if backend is not None:
            return {"backend": backend}
        if self._bluez_adapter is not None:
            return {"bluez": {"adapter": self._bluez_adapter}}
        return {}

    async def start(self) -> None:
        if self._radio is not None:
            await self._radio.start()

    async def stop(self) -> None:
        if self._radio is not None:
            await self._radio.stop()

    async def __aenter__(self) -> BleAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def open_ble_adapter(spec: str) -> BleAdapter:
    """The adapter a spec names, not yet started. Raises ValueError on a bad spec."""
    kind, separator, rest = spec.partition(":")
    if kind == "bluez":
        if separator and not re.fullmatch(r"hci\d+", rest):
            raise ValueError(f"bad BlueZ adapter name {rest!r} in {spec!r}: {_USAGE}")
        return BleAdapter(spec, bluez_adapter=rest or None)
    if kind == "bumble":
        if not rest:
            raise ValueError(f"{spec!r} names no bumble transport: {_USAGE}")
        return BleAdapter(spec, radio=BumbleRadio(rest))
    raise ValueError(f"unknown Bluetooth adapter {spec!r}: {_USAGE}")
