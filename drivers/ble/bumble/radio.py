"""The bumble Device on one HCI transport: connects one at a time, and one scan shared by
every bleak scanner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import BleakError
from bumble import core, hci
from bumble.device import Advertisement, Connection, Device
from bumble.transport import open_transport
from bumble.transport.common import Transport

from drivers.ble.bumble.advertising import advertisement_data, is_fake_scan_response
from drivers.ble.bumble.client import BumbleClient
from drivers.ble.bumble.scanner import BumbleScanner

logger = logging.getLogger(__name__)


class BumbleRadio:
    """One bumble host on one HCI transport, shared by all bleak clients and scanners.

    bumble's Device supports one scan and one pending connection at a time: the radio
    runs a single scan for all active scanners and serializes connects (pitfall 2).
    """

    def __init__(self, transport_spec: str) -> None:
        self.transport_spec = transport_spec
        # Every gateway its own address, or two on one virtual link would get each
        # other's packets.
        self._address = hci.Address.generate_static_address()
        self._transport: Transport | None = None
        self._device: Device | None = None
        self._scanners: set[BumbleScanner] = set()
        self._scan_mode: Literal["active", "passive"] | None = None
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        #: Set when the HCI transport was lost (pitfall 8), cleared by `start()`.
        self.lost = asyncio.Event()
        self.client_backend: type[BaseBleakClient] = type(
            "BumbleClient", (BumbleClient,), {"radio": self}
        )
        self.scanner_backend: type[BaseBleakScanner] = type(
            "BumbleScanner", (BumbleScanner,), {"radio": self}
        )

    @property
    def device(self) -> Device:
        if self._device is None:
            raise BleakError(f"bumble radio on {self.transport_spec} is not running")
        return self._device

    async def start(self) -> None:
        self.lost.clear()
        self._transport = await open_transport(self.transport_spec)
        try:
            device = Device.with_hci(
                "bedside-gateway", self._address, self._transport.source, self._transport.sink
            )
            device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            device.on(Device.EVENT_FLUSH, self._on_transport_lost)
            await device.power_on()
        except BaseException:
            await self.stop()
            raise
        self._device = device

    async def stop(self) -> None:
        self._device = None
        self._scanners.clear()
        self._scan_mode = None
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    def _on_transport_lost(self) -> None:
        """The HCI transport is gone (dongle unplugged, simulator stopped). bumble has
        dropped every link; fail fast from now on rather than wait on a dead controller."""
        if self._device is None:  # stop() closed it
            return
        logger.error("bumble radio on %s lost its HCI transport", self.transport_spec)
        self._device = None
        self._scan_mode = None
        self.lost.set()

    def check(self) -> None:
        """Raises BleakError unless the radio is running (saying so if its transport
        was lost)."""
        if self.lost.is_set():
            raise BleakError(f"bumble radio on {self.transport_spec} lost its HCI transport")
        if self._device is None:
            raise BleakError(f"bumble radio on {self.transport_spec} is not running")

    async def __aenter__(self) -> BumbleRadio:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def connect(self, address: hci.Address) -> Connection:
        """Create an LE connection, one at a time; a cancelled attempt is withdrawn from
        the controller so that the next one is accepted."""
        async with self._connect_lock:
            attempt = asyncio.ensure_future(self.device.connect(address, timeout=None))
            try:
                return await asyncio.shield(attempt)
            except asyncio.CancelledError:
                await self._withdraw(attempt)
                raise

    async def _withdraw(self, attempt: asyncio.Future[Connection]) -> None:
        with contextlib.suppress(hci.HCI_Error):
            await self.device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
        try:
            connection = await attempt
        except core.BaseBumbleError:
            return
        await connection.disconnect()  # it completed just before the cancel

    async def add_scanner(self, scanner: BumbleScanner) -> None:
        self._scanners.add(scanner)
        try:
            await self._update_scan()
        except BaseException:
            self._scanners.discard(scanner)
            raise

    async def remove_scanner(self, scanner: BumbleScanner) -> None:
        self._scanners.discard(scanner)
        await self._update_scan()

    async def _update_scan(self) -> None:
        """Scan actively if any scanner wants it, passively if all do, not at all if none."""
        async with self._scan_lock:
            wanted: Literal["active", "passive"] | None = None
            if self._scanners:
                active = any(s.scanning_mode == "active" for s in self._scanners)
                wanted = "active" if active else "passive"
            if wanted == self._scan_mode:
                return
            device = self.device
            if self._scan_mode is not None:
                await device.stop_scanning()
                self._scan_mode = None
            if wanted is not None:
                await device.start_scanning(active=wanted == "active")
                self._scan_mode = wanted

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        if is_fake_scan_response(advertisement):
            return
        data = advertisement_data(advertisement)
        for scanner in list(self._scanners):
            scanner.on_advertisement(advertisement.address, data)
