"""How a GATT session reaches its device: which radio connects to it, and the slot it
holds on that radio while connected.

A `GattSession` asks its `Routes` for a `Route` on every attempt and holds it until
the link ends. With one adapter (`AdapterRoutes`) that is a connection slot of the
adapter, then a scan for the device. With ESPHome proxies (`drivers/ble/scanner_view.py`)
it is the radio that hears the device best, chosen from what every radio has heard.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from drivers.ble.adapter import BleAdapter

#: Told, before a route waits for a slot, what the device's row should say meanwhile.
Waiting = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Route:
    """The device as the radio that will connect heard it, and what to build its
    `BleakClient` with."""

    device: BLEDevice
    rssi: int | None
    client_kwargs: dict[str, Any]
    #: The radio's name, as the page and `status` show it.
    adapter: str


class NoRoute(Exception):
    """The device cannot be reached now; the message says why (its row's detail)."""


class Routes(Protocol):
    def route(self, address: str, waiting: Waiting) -> AbstractAsyncContextManager[Route]:
        """A route to `address`, held until the block ends; raises NoRoute."""
        ...


class AdapterRoutes:
    """One adapter: a connection slot of its `slots` (waited for without holding
    anything else, so a full adapter delays only the sessions without one), then a scan
    for the device of up to `scan_timeout`."""

    def __init__(self, adapter: BleAdapter, slots: asyncio.Semaphore, scan_timeout: float) -> None:
        self._adapter = adapter
        self._slots = slots
        self._scan_timeout = scan_timeout

    @asynccontextmanager
    async def route(self, address: str, waiting: Waiting) -> AsyncIterator[Route]:
        if self._slots.locked():
            waiting("waiting for a free connection slot")
        async with self._slots:
            try:
                device, rssi = await self._find(address)
            except (BleakError, OSError) as error:  # cannot scan: off, gone, busy, no D-Bus
                raise NoRoute(f"scan failed: {describe(error)}") from error
            yield Route(device, rssi, self._adapter.client_kwargs(), self._adapter.spec)

    async def _find(self, address: str) -> tuple[BLEDevice, int | None]:
        heard: list[AdvertisementData] = []

        def is_ours(device: BLEDevice, advertisement: AdvertisementData) -> bool:
            if device.address.upper() != address.upper():
                return False
            heard.append(advertisement)
            return True

        device = await BleakScanner.find_device_by_filter(
            is_ours, timeout=self._scan_timeout, **self._adapter.scanner_kwargs()
        )
        if device is None:
            raise NoRoute(f"not seen within {self._scan_timeout:g} s")
        return device, heard[-1].rssi


def describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
