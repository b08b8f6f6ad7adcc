"""Sensors that only advertise (BTHome v2, Xiaomi MiBeacon door sensors), heard by one
bleak scanner shared by all of them.

Such a device has no connection: being heard is its link. The first advertisement
reports it CONNECTED ("advertising"); every advertisement reports its signal; its
service data goes through the device's decoder, which decrypts, drops the repeats and
rejects replays. Devices that are not bound but look like something the gateway can
read are remembered in `discovered`, for pairing, and never give readings.

For an advertisement kind, the last service data heard from each device is kept with
when it was heard (bound or not: `service_data`), so that a key can be tried on a real
packet before it is saved.

Scanning is passive where the backend allows it: the sensors need no scan request,
and a passive scanner does not make the adapter transmit. BlueZ scans passively only
through an advertisement monitor, which needs match patterns (the BTHome and MiBeacon
service data below) and, bleak says, BlueZ >= 5.56 run with --experimental; without it the
listener falls back to active scanning and logs a warning (once: it stays active). A
passive BlueZ scan reports only advertisements that match the patterns, so `discovered`
then holds door sensors only; discovering GATT devices needs an active scan, which the
listener runs while it is told to discover (`set_discovering`): the running scanner is
replaced by an active one, and by one in the mode asked for when discovery ends, without
the bound sensors' links noticing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bleak import BleakScanner
from bleak.args.bluez import OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from drivers.ble.adapter import Scanning
from drivers.ble.advert_decoder import AdvertDecoder, format_mac, parse_mac
from drivers.errors import RefusedPacket
from drivers.kinds import KINDS, Transport, classify_advertisement, kinds_of
from drivers.listener import LinkState, SessionListener

logger = logging.getLogger(__name__)

ScanningMode = Literal["active", "passive"]

#: The kinds heard by advertisement alone, from the device-kind registry.
_ADVERT_KINDS = {name: KINDS[name] for name in kinds_of(Transport.ADVERT)}

#: BlueZ advertisement monitor patterns: service data whose 16-bit UUID (as sent on
#: air, little-endian, at the start of the AD structure's value) is an advert kind's.
OR_PATTERNS = [
    OrPattern(
        0,
        AdvertisementDataType.SERVICE_DATA_UUID16,
        int(str(kind.service_data_uuid)[4:8], 16).to_bytes(2, "little"),
    )
    for kind in _ADVERT_KINDS.values()
]


@dataclass(frozen=True, slots=True)
class ServiceData:
    """The last service data an advertisement-only device sent under its kind's UUID."""

    uuid: str
    data: bytes
    heard_at: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    kind: str
    name: str | None
    rssi: int | None
    last_seen: float  # time.monotonic()
    #: Advertisement kinds: the last service data heard (None: none yet).
    service_data: ServiceData | None = None


@dataclass(slots=True)
class _Bound:
    service_uuid: str
    decoder: AdvertDecoder
    heard: bool = False
    #: The last service data the decoder refused: the radio repeats an advertisement
    #: many times, and one report of each bad packet is enough.
    last_rejected: bytes | None = None
    service_data: ServiceData | None = None


class AdvertListener:
    """One scanner for every advertisement-only device.

    `devices` maps each bound address to its protocol ("bthome" or "mibeacon") and its
    16-byte key (None for an unencrypted BTHome sensor). Raises ValueError on an unknown
    protocol, a bad address or a key that is not 16 bytes. Reports to `listener`, keyed
    by the address in upper-case colon form: on_link_state, on_signal, on_measurements
    and on_refused (see the module docstring).
    """

    def __init__(
        self,
        adapter: Scanning,
        listener: SessionListener,
        devices: Mapping[str, tuple[str, bytes | None]],
        *,
        scanning_mode: ScanningMode = "passive",
    ) -> None:
        self._adapter = adapter
        self._listener = listener
        self._bound: dict[str, _Bound] = {}
        self._requested_mode: ScanningMode = scanning_mode
        #: The mode in use once started: passive may have fallen back to active.
        self.scanning_mode: ScanningMode | None = None
        self._discovering = False
        #: Held while the scanner starts, stops or changes mode.
        self._lock = asyncio.Lock()
        #: Unbound devices worth pairing, by address.
        self.discovered: dict[str, DiscoveredDevice] = {}
        #: When anything at all was last heard (time.monotonic()), for a watchdog.
        self.last_advert_at: float | None = None
        self._scanner: BleakScanner | None = None
        for address, (protocol, key) in devices.items():
            self.bind(address, protocol, key)

    def bind(self, address: str, protocol: str, key: bytes | None) -> None:
        """Decode `address` from its next advertisement on (a sensor bound while the
        listener runs, too). Raises ValueError as the constructor does."""
        kind = _ADVERT_KINDS.get(protocol)
        if kind is None or kind.advert_decoder is None or kind.service_data_uuid is None:
            raise ValueError(
                f"{address}: unknown advertisement protocol {protocol!r}; "
                f"choose one of {', '.join(_ADVERT_KINDS)}"
            )
        mac = format_mac(parse_mac(address))  # as bleak reports it on Linux
        self._bound[mac] = _Bound(kind.service_data_uuid, kind.advert_decoder(key, mac))
        self.discovered.pop(mac, None)

    def unbind(self, address: str) -> None:
        """No longer decode `address`: from its next advertisement it is one more
        sensor in range (`discovered`)."""
        self._bound.pop(format_mac(parse_mac(address)), None)

    @property
    def wanted(self) -> bool:
        """Something to scan for: a bound sensor, or a discovery under way."""
        return bool(self._bound) or self._discovering

    def service_data(self, address: str) -> ServiceData | None:
        """The last service data heard from an advertisement-only device, bound or not."""
        mac = format_mac(parse_mac(address))
        bound = self._bound.get(mac)
        if bound is not None:
            return bound.service_data
        seen = self.discovered.get(mac)
        return seen.service_data if seen is not None else None

    async def set_discovering(self, on: bool) -> None:
        """While on, scan actively, so that GATT devices are heard (names and services)
        on BlueZ too; a running scanner is replaced in the new mode. Off again, the
        listener scans in the mode asked for, or stops if no sensor is bound. Raises
        BleakError when the new scanner cannot start (the listener is then stopped)."""
        async with self._lock:
            self._discovering = on
            if self._scanner is None or (self.wanted and self.scanning_mode == self._mode()):
                return
            scanner, self._scanner = self._scanner, None
            self.scanning_mode = None
            with contextlib.suppress(BleakError):  # the adapter may be gone already
                await scanner.stop()
            if self.wanted:
                await self._start_scanner()

    async def start(self) -> None:
        """Raises BleakError when the adapter cannot scan at all."""
        async with self._lock:
            if self._scanner is None:
                await self._start_scanner()

    def _mode(self) -> ScanningMode:
        return "active" if self._discovering else self._requested_mode

    async def _start_scanner(self) -> None:
        mode = self._mode()
        scanner = self._new_scanner(mode)
        try:
            await scanner.start()
        except BleakError as error:
            if mode != "passive":
                raise
            logger.warning("passive scanning unavailable (%s); scanning actively", error)
            mode = self._requested_mode = "active"  # from now on: it is unavailable
            scanner = self._new_scanner(mode)
            await scanner.start()
        self._scanner = scanner
        self.scanning_mode = mode

    async def stop(self) -> None:
        """Stop scanning; every device heard is reported DISCONNECTED."""
        async with self._lock:
            if self._scanner is None:
                return
            scanner, self._scanner = self._scanner, None
            self.scanning_mode = None
            with contextlib.suppress(BleakError):  # the adapter may be gone already
                await scanner.stop()
        for address, bound in self._bound.items():
            if bound.heard:
                bound.heard = False
                self._listener.on_link_state(address, LinkState.DISCONNECTED, "listener stopped")

    async def __aenter__(self) -> AdvertListener:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _new_scanner(self, mode: ScanningMode) -> BleakScanner:
        kwargs = self._adapter.scanner_kwargs()
        if mode == "passive":  # other backends ignore the bluez arguments
            kwargs["bluez"] = {**kwargs.get("bluez", {}), "or_patterns": OR_PATTERNS}
        return BleakScanner(self._on_advertisement, scanning_mode=mode, **kwargs)

    def _on_advertisement(self, device: BLEDevice, advertisement: AdvertisementData) -> None:
        now = time.monotonic()
        self.last_advert_at = now
        address = device.address.upper()
        try:
            bound = self._bound.get(address)
            if bound is None:
                self._discover(address, advertisement, now)
            else:
                self._receive(address, bound, advertisement, now)
        except Exception:  # a bug must not stop the scanner's callbacks
            logger.exception("advertisement from %s could not be handled", address)

    def _receive(
        self, address: str, bound: _Bound, advertisement: AdvertisementData, now: float
    ) -> None:
        if not bound.heard:
            bound.heard = True
            self._listener.on_link_state(address, LinkState.CONNECTED, "advertising")
        self._listener.on_signal(address, advertisement.rssi)
        raw = advertisement.service_data.get(bound.service_uuid)
        if raw is None:
            return
        bound.service_data = ServiceData(bound.service_uuid, raw, now)
        try:
            measurements = bound.decoder.feed(raw, now)
        except RefusedPacket as error:
            if raw != bound.last_rejected:
                bound.last_rejected = raw
                self._listener.on_refused(address, error, raw)
            return
        bound.last_rejected = None
        if measurements:
            self._listener.on_measurements(address, measurements)

    def _discover(self, address: str, advertisement: AdvertisementData, now: float) -> None:
        previous = self.discovered.get(address)
        # Names come in some advertisements only (or in scan responses).
        name = advertisement.local_name or (previous.name if previous else None)
        kind = classify_advertisement(name, advertisement.service_uuids, advertisement.service_data)
        if kind is None and previous is not None:
            kind = previous.kind  # an advertisement without the telling part still counts
        if kind is None:
            return
        heard = previous.service_data if previous is not None else None
        advert_kind = _ADVERT_KINDS.get(kind)
        if advert_kind is not None and advert_kind.service_data_uuid is not None:
            raw = advertisement.service_data.get(advert_kind.service_data_uuid)
            if raw is not None:
                heard = ServiceData(advert_kind.service_data_uuid, raw, now)
        self.discovered[address] = DiscoveredDevice(kind, name, advertisement.rssi, now, heard)
