"""The gateway's own adapter as one radio of the proxies' scanner view: kept open (opened
with back-off, looked at every few seconds, opened again once gone) and scanning
actively, every advertisement into the view.

It scans actively because a passive BlueZ scan reports only the door sensors' patterns
(`drivers/ble/advert_listener.py`), and the view must hear the GATT devices too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from bleak import BleakScanner

from drivers.backoff import Backoff
from drivers.ble.adapter import BleAdapter
from drivers.ble.cancel import cancel_until_done
from drivers.ble.routes import describe
from drivers.ble.scanner_view import SETTLE_S, ScannerView

logger = logging.getLogger(__name__)

_OPEN_TIMEOUT_S = 20.0


class LocalRadio:
    """`drivers/ble/scanner_view.py`'s `Radio` for the gateway's own adapter."""

    def __init__(
        self,
        adapter: BleAdapter,
        view: ScannerView,
        *,
        name: str,
        max_connections: int,
        backoff: Backoff,
        look_again_s: float = 5.0,
    ) -> None:
        self.name = name
        self.adapter = adapter
        self._view = view
        self._max_connections = max_connections
        self._backoff = backoff
        self._look_again_s = look_again_s
        #: Since when (time.monotonic()) it is up; None while it is not.
        self._up_since: float | None = None
        #: Why it is not up ('' while it is).
        self.error = ""
        self._task: asyncio.Task[None] | None = None

    def usable(self) -> bool:
        return self._up_since is not None

    def settled(self, now: float) -> bool:
        if self._up_since is not None:
            return now - self._up_since >= SETTLE_S
        return self.error != ""  # its first opening failed

    def free_slots(self, held: int) -> int:
        return self._max_connections - held

    def client_kwargs(self) -> dict[str, Any]:
        return self.adapter.client_kwargs()

    def health(self) -> dict[str, Any]:
        state = "up" if self.usable() else "unavailable"
        return {"adapter": self.adapter.spec, "state": state, "error": self.error}

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name="local Bluetooth radio")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_until_done(task)

    async def _keep(self) -> None:
        failures = 0
        while True:
            try:
                await self._serve()
                failures = 0
            except Exception as error:  # missing, refusing, hung or gone: later again
                failures += 1
                self._set(False, describe(error))
            await asyncio.sleep(self._backoff.delay(failures))

    async def _serve(self) -> None:
        """Open, scan into the view until the adapter has gone; raises why it went."""
        try:
            async with asyncio.timeout(_OPEN_TIMEOUT_S):
                await self.adapter.start()
            scanner = BleakScanner(
                lambda device, advertisement: self._view.heard(self.name, device, advertisement),
                scanning_mode="active",
                **self.adapter.scanner_kwargs(),
            )
            async with asyncio.timeout(_OPEN_TIMEOUT_S):
                await scanner.start()
            self._set(True, "")
            try:
                while True:
                    await self.adapter.wait_for_loss(self._look_again_s)
                    await self.adapter.check()
            finally:
                self._set(False, self.error)
                with contextlib.suppress(Exception):  # the adapter may be gone already
                    await scanner.stop()
        finally:
            with contextlib.suppress(Exception):
                await self.adapter.stop()

    def _set(self, up: bool, error: str) -> None:
        if (up, error) != (self.usable(), self.error):
            log = logger.info if up else logger.error
            log("local Bluetooth adapter %s", "up" if up else f"unavailable: {error}")
        if not up:
            self._up_since = None
        elif self._up_since is None:
            self._up_since = time.monotonic()
        self.error = error
        self._view.radios_changed()
