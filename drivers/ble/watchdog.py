"""The Bluetooth adapter watchdog: when no device has been heard for a while, restart
scanning; when the silence goes on, power-cycle the adapter.

Adapters wedge now and then (a BlueZ controller that stops reporting advertisements, a
USB dongle that stops answering) and nobody stands beside a bed gateway to notice.

What counts as heard: any report a Bluetooth session makes about a device (signal,
readings, identity, even a malformed packet: bytes came over the air), any advertisement
the shared scanner hears, bound or not, and a GATT link that is up, for as long as it
is up (a link stays up only while the controller works, even when the device is quiet).

While the silence lasts, one step every `silence_s`: restart scanning, power-cycle,
restart scanning, power-cycle, ... A step that fails leaves the adapter `unavailable`
and the next step is a power cycle. Hearing a device again ends it: the adapter is `up`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from drivers.ble.cancel import cancel_until_done
from drivers.errors import RefusedPacket
from drivers.listener import AdapterState, LinkState, SessionListener, WatchdogAction
from drivers.measurement import Measurement

logger = logging.getLogger(__name__)

Action = Callable[[], Awaitable[None]]

#: Longest time between two looks at the silence.
_MAX_CHECK_INTERVAL_S = 10.0
#: A step that takes longer has failed (a D-Bus call without an answer, a hung dongle).
_STEP_TIMEOUT_S = 60.0


class AdapterWatchdog:
    """Escalates on silence (see the module docstring). `restart_scan` and `power_cycle`
    do the work; `scanner_heard_at` tells when the shared scanner last heard any
    advertisement (`clock` time, None if never). Sessions report through `listener(...)`.
    """

    def __init__(
        self,
        silence_s: float,
        restart_scan: Action,
        power_cycle: Action,
        *,
        scanner_heard_at: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.silence_s = silence_s
        self._restart_scan = restart_scan
        self._power_cycle = power_cycle
        self._scanner_heard_at = scanner_heard_at
        self._clock = clock
        self.state = AdapterState.UP
        self.error = ""
        self.scan_restarts = 0
        self.power_cycles = 0
        self.last_action: WatchdogAction | None = None
        self.last_action_at: datetime | None = None
        self._last_heard = clock()
        #: When the last step ended: the next one waits `silence_s` from here.
        self._last_step_end = -math.inf
        self._links: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def heard(self, at: float | None = None) -> None:
        """A device was heard now, or at `at` (`clock` time)."""
        self._last_heard = self._clock() if at is None else at
        if self.state is not AdapterState.UP:
            logger.info("a Bluetooth device was heard again: adapter up")
            self.state = AdapterState.UP
            self.error = ""

    def link_changed(self, address: str, up: bool) -> None:
        if up:
            self._links.add(address)
            self.heard()
        else:
            self._links.discard(address)

    def listener(self, listener: SessionListener, *, links: bool) -> SessionListener:
        """`listener` with this watchdog listening in. `links`: the session's CONNECTED
        means a GATT link is up (False for the advertisement listener, whose CONNECTED
        only means a sensor was heard once)."""
        return _Feed(listener, self, links)

    async def check(self) -> None:
        """Take the next step if the silence has lasted `silence_s` since the last
        sound or the last step."""
        now = self._clock()
        if self._links:
            self.heard()
            return
        scanned = self._scanner_heard_at()
        if scanned is not None and scanned > self._last_heard:
            self.heard(scanned)
        silent_s = now - self._last_heard
        if now - max(self._last_heard, self._last_step_end) < self.silence_s:
            return
        if self.state in (AdapterState.UP, AdapterState.POWER_CYCLING):
            self.scan_restarts += 1
            await self._step(AdapterState.RESTARTING_SCAN, WatchdogAction.RESTART_SCAN, silent_s)
        else:
            self.power_cycles += 1
            await self._step(AdapterState.POWER_CYCLING, WatchdogAction.POWER_CYCLE, silent_s)

    async def _step(self, state: AdapterState, action: WatchdogAction, silent_s: float) -> None:
        logger.warning("no Bluetooth device heard for %.0f s: %s", silent_s, action)
        self.state = state
        self.last_action = action
        self.last_action_at = datetime.now(UTC)
        run = self._restart_scan if state is AdapterState.RESTARTING_SCAN else self._power_cycle
        try:
            async with asyncio.timeout(_STEP_TIMEOUT_S):
                await run()
        except Exception as error:  # the adapter is gone, refuses or hangs: later again
            reason = str(error) or type(error).__name__
            logger.error("Bluetooth adapter %s failed: %s", action, reason)
            self.state = AdapterState.UNAVAILABLE
            self.error = f"{action} failed: {reason}"
        else:
            self.error = ""
        self._last_step_end = self._clock()

    async def start(self) -> None:
        """Watch an adapter just opened (again): it is up until the silence says not."""
        if self._task is None:
            self._last_heard = self._clock()
            self._last_step_end = -math.inf
            self.state, self.error = AdapterState.UP, ""
            self._links.clear()
            self._task = asyncio.create_task(self._run(), name="Bluetooth adapter watchdog")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_until_done(task)

    async def _run(self) -> None:
        interval = min(self.silence_s / 4, _MAX_CHECK_INTERVAL_S)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:  # a bug must not end the watch
                logger.exception("Bluetooth adapter watchdog check failed")

    def health(self) -> dict[str, Any]:
        """For the status page and the MQTT `status` message."""
        at = self.last_action_at
        return {
            "state": self.state.value,
            "error": self.error,
            "last_action": self.last_action.value if self.last_action else None,
            "last_action_at": at.isoformat(timespec="seconds") if at else None,
            "scan_restarts": self.scan_restarts,
            "power_cycles": self.power_cycles,
        }


class _Feed:
    """Passes every report on, and tells the watchdog what it means."""

    def __init__(self, listener: SessionListener, watchdog: AdapterWatchdog, links: bool) -> None:
        self._listener = listener
        self._watchdog = watchdog
        self._links = links

    def on_measurements(self, address: str, measurements: Sequence[Measurement]) -> None:
        self._watchdog.heard()
        self._listener.on_measurements(address, measurements)

    def on_live(self, address: str, measurements: Sequence[Measurement]) -> None:
        self._watchdog.heard()
        self._listener.on_live(address, measurements)

    def on_link_state(self, address: str, state: LinkState, detail: str = "") -> None:
        if self._links:
            self._watchdog.link_changed(address, state is LinkState.CONNECTED)
        self._listener.on_link_state(address, state, detail)

    def on_device_info(self, address: str, info: dict[str, str]) -> None:
        self._watchdog.heard()
        self._listener.on_device_info(address, info)

    def on_refused(self, address: str, error: RefusedPacket, raw: bytes) -> None:
        self._watchdog.heard()
        self._listener.on_refused(address, error, raw)

    def on_signal(self, address: str, rssi: int | None) -> None:
        self._watchdog.heard()
        self._listener.on_signal(address, rssi)
