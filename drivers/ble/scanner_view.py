"""One view of every radio's advertisements (ESPHome proxies and the local adapter), and
the GATT routes chosen from it.

Every radio reports what it hears (`heard`). The view keeps, per device, the last
sighting by each radio, and gives:

- **a scanner**: `scanner_kwargs()` is a bleak scanner backend that hears what every
  radio hears, so the advertisement listener decodes a door sensor through any proxy
  (two proxies relaying one advertisement give the decoder a repeat, which it drops);
- **routes** (`route`, a `drivers/ble/routes.py` `Routes`): a GATT device connects
  through the radio that heard it best within `fresh_s`, among those that are up and
  have a connection slot free. The radio that connected it last keeps it unless another
  hears it `margin_db` stronger, so a device at the edge of two proxies does not flap
  between them. No choice is made while a radio is coming up (`SETTLE_S`), so that the
  first proxy to connect at start does not take every device. A device stays with its
  radio while connected: a connected device no longer advertises, so no other radio
  can tell how well it would hear it; after a drop it is routed by what the radios hear
  of it then, so one whose radio has gone moves to another that hears it.

Why our own: habluetooth's manager of several scanners (what bleak-esphome routes
through) replaces bleak's scanner and client classes for the whole process and needs
BlueZ on D-Bus and the kernel's management socket; this view is the part of it the
gateway needs, on bleak's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner

from drivers.ble.routes import NoRoute, Route, Waiting

#: A radio that has just come up is listened to this long before its sightings are
#: compared with the others' (proxies connect one after another at start).
SETTLE_S = 3.0


class Radio(Protocol):
    """One radio of the view: a proxy, or the local adapter."""

    name: str

    def usable(self) -> bool:
        """Up now: it hears, and can connect."""
        ...

    def settled(self, now: float) -> bool:
        """What it hears can be compared with the others: up for `SETTLE_S`, or its
        first attempt to come up over (a radio that is down hears nothing to wait for)."""
        ...

    def free_slots(self, held: int) -> int:
        """Connections it can take now, `held` of its own being the view's routes."""
        ...

    def client_kwargs(self) -> dict[str, Any]:
        """For `BleakClient(...)`, with a device this radio heard."""
        ...


@dataclass(frozen=True, slots=True)
class Sighting:
    rssi: int
    heard_at: float  # time.monotonic()
    #: The device as this radio reported it (its details are what its client needs).
    device: BLEDevice


def choose_radio(
    sightings: Mapping[str, Sighting],
    usable: Collection[str],
    current: str | None,
    now: float,
    *,
    fresh_s: float,
    margin_db: int,
) -> str | None:
    """The radio to connect through: the strongest fresh sighting among the `usable`
    radios, unless `current` heard it too and is less than `margin_db` weaker."""
    fresh = {
        name: sighting
        for name, sighting in sightings.items()
        if name in usable and now - sighting.heard_at <= fresh_s
    }
    if not fresh:
        return None
    best = max(fresh, key=lambda name: (fresh[name].rssi, name))
    if current in fresh and fresh[best].rssi - fresh[current].rssi < margin_db:
        return current
    return best


class ScannerView:
    """See the module docstring. `scan_timeout`: how long a route waits for a radio
    that hears the device and has a slot free."""

    def __init__(self, *, fresh_s: float, margin_db: int, scan_timeout: float) -> None:
        self._fresh_s = fresh_s
        self._margin_db = margin_db
        self._scan_timeout = scan_timeout
        self.radios: dict[str, Radio] = {}
        self._sightings: dict[str, dict[str, Sighting]] = {}
        #: The radio of each device's current or last route.
        self._owners: dict[str, str] = {}
        #: Routes held per radio: connections made or being made through it.
        self._held: Counter[str] = Counter()
        #: Set when a waiting route may now find a radio (the device heard, a radio
        #: changed, a slot freed).
        self._moved: dict[str, asyncio.Event] = {}
        self._scanners: set[ViewScanner] = set()
        #: When anything at all was last heard (time.monotonic()).
        self.last_advert_at: float | None = None
        self._scanner_backend = type("ViewScanner", (ViewScanner,), {"view": self})

    def add(self, radio: Radio) -> None:
        self.radios[radio.name] = radio

    def scanner_kwargs(self) -> dict[str, Any]:
        """For `BleakScanner(...)`: one that hears every radio."""
        return {"backend": self._scanner_backend}

    def heard(self, radio: str, device: BLEDevice, advertisement: AdvertisementData) -> None:
        """A radio heard an advertisement (on the loop)."""
        now = time.monotonic()
        self.last_advert_at = now
        address = device.address.upper()
        self._sightings.setdefault(address, {})[radio] = Sighting(advertisement.rssi, now, device)
        if (moved := self._moved.get(address)) is not None:
            moved.set()
        for scanner in list(self._scanners):
            scanner.on_advertisement(address, device, advertisement)

    def radios_changed(self) -> None:
        """A radio went up or down, or its slots changed: waiting routes look again."""
        for moved in self._moved.values():
            moved.set()

    def owner(self, address: str) -> str | None:
        """The radio of the device's current or last connection; for a device that only
        advertises, the one that hears it best now."""
        address = address.upper()
        if (owner := self._owners.get(address)) is not None:
            return owner
        return choose_radio(
            self._sightings.get(address, {}),
            self._usable(address, slots=False),
            None,
            time.monotonic(),
            fresh_s=self._fresh_s,
            margin_db=0,
        )

    def owned(self, radio: str) -> int:
        """Connections held through `radio` now."""
        return self._held[radio]

    @asynccontextmanager
    async def route(self, address: str, waiting: Waiting) -> AsyncIterator[Route]:
        address = address.upper()
        name = await self._wait_for_radio(address, waiting)
        sighting = self._sightings[address][name]
        self._held[name] += 1
        self._owners[address] = name
        try:
            yield Route(sighting.device, sighting.rssi, self.radios[name].client_kwargs(), name)
        finally:
            self._held[name] -= 1
            self.radios_changed()

    async def _wait_for_radio(self, address: str, waiting: Waiting) -> str:
        moved = self._moved.setdefault(address, asyncio.Event())
        told = False
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._scan_timeout):
                    while True:
                        moved.clear()
                        settling = not self._settled()
                        name = None if settling else self._choose(address, slots=True)
                        if name is not None:
                            return name
                        if not told and not settling and self._choose(address, slots=False):
                            waiting("waiting for a free connection slot")
                            told = True
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(SETTLE_S / 4 if settling else None):
                                await moved.wait()
        finally:
            del self._moved[address]
        if self._choose(address, slots=False) is not None:
            raise NoRoute("waiting for a free connection slot")
        up = [name for name, radio in self.radios.items() if radio.usable()]
        if not up:
            raise NoRoute("no radio up")
        raise NoRoute(f"not heard within {self._scan_timeout:g} s by {', '.join(sorted(up))}")

    def _settled(self) -> bool:
        now = time.monotonic()
        return all(radio.settled(now) for radio in self.radios.values())

    def _choose(self, address: str, *, slots: bool) -> str | None:
        return choose_radio(
            self._sightings.get(address, {}),
            self._usable(address, slots=slots),
            self._owners.get(address),
            time.monotonic(),
            fresh_s=self._fresh_s,
            margin_db=self._margin_db,
        )

    def _usable(self, address: str, *, slots: bool) -> set[str]:
        return {
            name
            for name, radio in self.radios.items()
            if radio.usable() and (not slots or radio.free_slots(self._held[name]) > 0)
        }


class ViewScanner(BaseBleakScanner):
    """bleak scanner backend: what every radio of `view` hears. The radios scan as
    they do (a proxy as it is set up); `scanning_mode` is not theirs to change."""

    view: ClassVar[ScannerView]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "passive",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)

    async def start(self) -> None:
        self.seen_devices = {}
        self.view._scanners.add(self)

    async def stop(self) -> None:
        self.view._scanners.discard(self)

    def on_advertisement(
        self, address: str, device: BLEDevice, advertisement: AdvertisementData
    ) -> None:
        if not self.is_allowed_uuid(advertisement.service_uuids):
            return
        seen = self.create_or_update_device(
            address, address, advertisement.local_name, device.details, advertisement
        )
        self.call_detection_callbacks(seen, advertisement)
