"""The Bluetooth side of the gateway: the one adapter, kept open, and every Bluetooth
session on it (each GATT device's, the advertisement listener, the adapter watchdog).

The adapter may be missing when the gateway starts (a USB dongle not plugged in yet,
BlueZ or the simulator not up yet) and may go away while the gateway runs (unplugged,
bluetoothd restarted, the bumble transport closed). Neither needs a restart:

- While it cannot be opened, or cannot scan for the door sensors, it is tried again
  with back-off (`bluetooth.reconnect_min_s` to `reconnect_max_s`); `status` shows it
  `unavailable` with the reason, and every Bluetooth device `unreachable` with it.
- Once open, it is looked at every `look_again_s`, and at once when a bumble transport
  reports itself lost. When it has gone, every Bluetooth session is stopped and the
  opening starts again; once it is back, every session starts again.

A power cycle by the watchdog and a look at the adapter never overlap, so a radio being
switched off and on is not taken for a lost one.

Devices are added and removed while it runs (`add`, `remove`): a GATT session joins
the others (taking turns for the connection slots) and starts at once if the adapter
is up, else when it opens; a door sensor joins the one advertisement listener (the
first one starts it). A device removed has its session stopped and its slot freed.

Devices nearby are listened for on demand (`discover`, for commissioning): the one
advertisement listener (built if no door sensor is bound) scans actively until the
time asked after the last call, then goes back to its own mode, or stops if it has no
sensor to read. The sessions of the devices bound go on as they were.

Imported only when a Bluetooth device is configured: it loads bleak and bumble.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from drivers.backoff import Backoff
from drivers.ble.adapter import BleAdapter, open_ble_adapter
from drivers.ble.advert_listener import AdvertListener, ServiceData
from drivers.ble.cancel import cancel_until_done
from drivers.ble.routes import AdapterRoutes
from drivers.ble.session import GattSession
from drivers.ble.watchdog import AdapterWatchdog
from drivers.kinds import DeviceKind, Transport
from drivers.listener import AdapterState, LinkState, SessionListener
from gateway.config import BluetoothSection, DeviceConfig

log = logging.getLogger(__name__)

#: How often an open adapter is looked at: BlueZ sends the gateway no news of an
#: adapter leaving, and a failed power cycle leaves a bumble radio closed.
LOOK_AGAIN_S = 5.0
#: A GATT device not heard within this long is reported unreachable, and looked for
#: again after the back-off.
SCAN_TIMEOUT_S = 10.0
#: An opening that takes longer has failed (e.g. a dongle that does not answer).
_OPEN_TIMEOUT_S = 20.0

#: Tells that a device will not be served, and why.
Fail = Callable[[DeviceConfig, str], None]


class BluetoothSessions:
    """Every Bluetooth device's session, run while the adapter is there (see the
    module docstring). `state` and `error` are the adapter's, as `status` shows them."""

    def __init__(
        self,
        config: BluetoothSection,
        listener: SessionListener,
        *,
        look_again_s: float = LOOK_AGAIN_S,
    ) -> None:
        self._config = config
        self._listener = listener
        self._look_again_s = look_again_s
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self.state = AdapterState.STARTING
        self.error = ""
        self._adapter: BleAdapter | None = None
        self._watchdog: AdapterWatchdog | None = None
        self._adverts: AdvertListener | None = None
        self._gatt: list[GattSession] = []
        #: Every Bluetooth device served: told when the adapter is unavailable.
        self._addresses: list[str] = []
        self._connect_lock = asyncio.Lock()  # BlueZ queues connects too; so do we
        #: Held by each GATT session while connected: the adapter's link limit.
        self._connection_slots = asyncio.Semaphore(config.max_connections)
        #: Held by a power cycle and by a look at the adapter.
        self._adapter_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        #: The adapter is open and its sessions started (until it is closed).
        self._serving = False
        #: Nearby devices are listened for until then (time.monotonic()); each call of
        #: `discover` moves it and tells the task that ends the discovery.
        self._discover_until = 0.0
        self._discovery_moved = asyncio.Event()
        self._discovery: asyncio.Task[None] | None = None

    async def start(self, devices: Sequence[tuple[DeviceConfig, DeviceKind]], fail: Fail) -> None:
        """Build the sessions of `devices` (Bluetooth kinds only), open the adapter once
        and, whatever that gave, keep it open from then on."""
        try:
            adapter = open_ble_adapter(self._config.adapter)
        except ValueError as error:  # a spec no stack takes: trying again cannot help
            self._addresses = [device.address for device, _ in devices]
            self._unavailable(str(error))
            return
        self._adapter = adapter
        if self._config.watchdog_enabled:
            self._watchdog = AdapterWatchdog(
                self._config.watchdog_silence_s,
                self._restart_scanning,
                self._power_cycle,
                scanner_heard_at=lambda: self._adverts.last_advert_at if self._adverts else None,
            )
        adverts = [d for d, k in devices if k.transport is Transport.ADVERT]
        if adverts:
            self._listen(adapter, adverts, fail)
        for device, kind in devices:
            self._build_gatt(adapter, device, kind, fail)
        opened = await self._open(adapter)
        self._task = asyncio.create_task(self._keep(adapter, opened), name="Bluetooth adapter")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_until_done(task)
        discovery, self._discovery = self._discovery, None
        await cancel_until_done(discovery)
        await self._close()

    async def add(self, device: DeviceConfig, kind: DeviceKind, fail: Fail) -> None:
        """Serve one more Bluetooth device while running (after `start`)."""
        adapter = self._adapter
        if adapter is None:  # an adapter spec no stack takes
            self._addresses.append(device.address)
        elif kind.transport is Transport.ADVERT:
            await self._add_advert(adapter, device, fail)
        elif (session := self._build_gatt(adapter, device, kind, fail)) and self._serving:
            await session.start()
        if self.state is AdapterState.UNAVAILABLE and device.address in self._addresses:
            self._tell_unavailable(device.address)

    async def remove(self, address: str) -> None:
        """Stop serving a device: its GATT session stopped (its slot freed), or its
        sensor no longer decoded by the advertisement listener."""
        if address in self._addresses:
            self._addresses.remove(address)
        for session in [s for s in self._gatt if s.address == address]:
            self._gatt.remove(session)
            await session.stop()
        if self._adverts is not None:
            self._adverts.unbind(address)

    def health(self) -> dict[str, Any]:
        """While the adapter is up, the watchdog's state and error replace the opening's;
        the watchdog's last action and counts are always added."""
        health: dict[str, Any] = {
            "adapter": self._config.adapter,
            "state": self.state.value,
            "error": self.error,
        }
        if self._watchdog is not None:
            watchdog = self._watchdog.health()
            if self.state is not AdapterState.UP:
                del watchdog["state"], watchdog["error"]
            health.update(watchdog)
        return health

    async def discover(self, for_s: float) -> str:
        """Listen for the devices nearby, actively, until `for_s` after this call (the
        last call counts). Returns why they cannot be heard now, '' while they are."""
        self._discover_until = time.monotonic() + for_s
        self._discovery_moved.set()
        if self._adapter is None:  # an adapter spec no stack takes
            return self.error
        if self._adverts is None:
            self._adverts = AdvertListener(self._adapter, self._feed(links=False), {})
        if self._discovery is None:
            self._discovery = asyncio.create_task(self._end_discovery(), name="discovery")
        try:
            async with asyncio.timeout(_OPEN_TIMEOUT_S):
                await self._adverts.set_discovering(True)
                if not self._serving:
                    return self.error or f"Bluetooth adapter {self.state.value}"
                await self._adverts.start()
        except Exception as error:  # the watchdog's rescan, or the next opening, tries again
            log.error("bluetooth adapter cannot scan", extra={"error": _describe(error)})
            return f"cannot scan: {_describe(error)}"
        return ""

    async def _end_discovery(self) -> None:
        """Once the last discovery asked for is over: the listener back to its mode."""
        while (left := self._discover_until - time.monotonic()) > 0:
            self._discovery_moved.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._discovery_moved.wait()
        self._discovery = None
        if self._adverts is not None:
            await _quietly(self._adverts.set_discovering(False), "ending the discovery")

    def service_data(self, address: str) -> ServiceData | None:
        """The last service data heard from an advertisement-only device."""
        return None if self._adverts is None else self._adverts.service_data(address)

    def discovered(self, bound: Iterable[str]) -> list[dict[str, Any]]:
        """Sensors heard advertising that are not among the `bound` addresses:
        candidates for pairing. They never give readings."""
        return [] if self._adverts is None else discovered_rows(self._adverts, bound)

    def radio_of(self, address: str) -> str | None:
        """The radio a device is served through: the one adapter."""
        return self._config.adapter if address in self._addresses else None

    def _listen(self, adapter: BleAdapter, adverts: Sequence[DeviceConfig], fail: Fail) -> None:
        """The one advertisement listener, for the sensors that only advertise; one
        that cannot be built costs those sensors only."""
        bound = {d.address: (d.kind, d.key) for d in adverts}
        try:
            self._adverts = AdvertListener(adapter, self._feed(links=False), bound)
        except ValueError as error:
            for device in adverts:
                fail(device, f"session not built: {error}")
        else:
            self._addresses += bound

    async def _add_advert(self, adapter: BleAdapter, device: DeviceConfig, fail: Fail) -> None:
        """A door sensor bound while running: decoded by the listener from its next
        advertisement; the first one builds the listener, which starts if the adapter
        is up (else it starts when the adapter opens)."""
        if self._adverts is None:
            self._listen(adapter, [device], fail)
            if self._adverts is None:
                return
        else:
            try:
                self._adverts.bind(device.address, device.kind, device.key)
            except ValueError as error:
                fail(device, f"session not built: {error}")
                return
            self._addresses.append(device.address)
        if not self._serving:
            return
        try:
            async with asyncio.timeout(_OPEN_TIMEOUT_S):
                await self._adverts.start()
        except Exception as error:  # the watchdog's rescan, or the next opening, tries again
            log.error("bluetooth adapter cannot scan", extra={"error": _describe(error)})
            self._listener.on_link_state(
                device.address, LinkState.UNREACHABLE, f"cannot scan: {_describe(error)}"
            )

    def _build_gatt(
        self, adapter: BleAdapter, device: DeviceConfig, kind: DeviceKind, fail: Fail
    ) -> GattSession | None:
        """A connected device's GATT session (None for other kinds); one that cannot be
        built costs its device only."""
        if kind.transport is not Transport.GATT or kind.gatt is None:
            return None
        bt = self._config
        try:
            session = GattSession(
                device.address,
                kind.gatt,
                AdapterRoutes(adapter, self._connection_slots, SCAN_TIMEOUT_S),
                self._feed(links=True),
                self._connect_lock,
                configured_site=device.site,
                connect_timeout=bt.connect_timeout_s,
                backoff=Backoff(bt.reconnect_min_s, bt.reconnect_max_s),
            )
        except Exception as error:  # a bug in a kind's entry or its driver
            fail(device, f"session not built: {error}")
            return None
        self._gatt.append(session)
        self._addresses.append(device.address)
        return session

    def _feed(self, *, links: bool) -> SessionListener:
        """The listener for a Bluetooth session: the watchdog listens in."""
        if self._watchdog is None:
            return self._listener
        return self._watchdog.listener(self._listener, links=links)

    async def _keep(self, adapter: BleAdapter, opened: bool) -> None:
        """Forever: look at the open adapter until it has gone, then open it again."""
        failures = 0 if opened else 1
        while True:
            try:
                if opened:
                    reason = await self._until_gone(adapter)
                    log.error("bluetooth adapter lost", extra={"error": reason})
                    await self._close()
                    self._unavailable(reason)
                    failures = 0
                await asyncio.sleep(self._backoff.delay(failures))
                opened = await self._open(adapter)
            except Exception:  # a bug must not leave Bluetooth down for good
                log.exception("bluetooth adapter keeper failed; opening the adapter again")
                await self._close()
                opened = False
            failures = 0 if opened else failures + 1

    async def _open(self, adapter: BleAdapter) -> bool:
        """Open the adapter and start every session on it; False (and why, in `error`)
        when it is missing, hangs or cannot scan."""
        self.state = AdapterState.OPENING
        try:
            async with asyncio.timeout(_OPEN_TIMEOUT_S):
                await adapter.start()
        except Exception as error:  # missing, refusing or hung: later again
            await _quietly(adapter.stop(), "closing the adapter")
            self._unavailable(_describe(error))
            return False
        if self._adverts is not None and self._adverts.wanted:
            try:
                async with asyncio.timeout(_OPEN_TIMEOUT_S):
                    await self._adverts.start()
            except Exception as error:
                await _quietly(adapter.stop(), "closing the adapter")
                self._unavailable(f"cannot scan: {_describe(error)}")
                return False
        for session in list(self._gatt):
            await session.start()
        if self._watchdog is not None:
            await self._watchdog.start()
        self.state, self.error = AdapterState.UP, ""
        self._serving = True
        log.info("bluetooth adapter up", extra={"adapter": adapter.spec})
        return True

    async def _until_gone(self, adapter: BleAdapter) -> str:
        """Why the open adapter has gone, once it has."""
        while True:
            await adapter.wait_for_loss(self._look_again_s)
            async with self._adapter_lock:
                try:
                    await adapter.check()
                except Exception as error:
                    return _describe(error)

    async def _close(self) -> None:
        """The watchdog and every session stopped, then the adapter closed."""
        self._serving = False
        if self._watchdog is not None:
            await self._watchdog.stop()
        await self._stop_sessions()
        if self._adapter is not None:
            await _quietly(self._adapter.stop(), "closing the adapter")

    def _unavailable(self, reason: str) -> None:
        """The adapter cannot be used: say why in `status`, in the log and on every
        Bluetooth device's row (the last two once per reason)."""
        self.state = AdapterState.UNAVAILABLE
        if reason == self.error:
            return
        self.error = reason
        log.error("bluetooth adapter unavailable", extra={"error": reason})
        for address in self._addresses:
            self._tell_unavailable(address)

    def _tell_unavailable(self, address: str) -> None:
        self._listener.on_link_state(
            address, LinkState.UNREACHABLE, f"Bluetooth adapter unavailable: {self.error}"
        )

    async def _stop_sessions(self) -> None:
        for session in list(self._gatt):
            await session.stop()
        if self._adverts is not None:
            await _quietly(self._adverts.stop(), "stopping the advertisement listener")

    async def _start_sessions(self) -> None:
        """Raises when the advertisement listener cannot scan: the watchdog counts that
        step as failed and takes the next."""
        for session in list(self._gatt):
            await session.start()
        if self._adverts is not None and self._adverts.wanted:
            await self._adverts.start()

    async def _restart_scanning(self) -> None:
        """The watchdog's first step: every Bluetooth session scans anew."""
        await self._stop_sessions()
        await self._start_sessions()

    async def _power_cycle(self) -> None:
        """The watchdog's second step: the adapter switched off and on under the
        sessions, which start again whatever it gave."""
        assert self._adapter is not None  # the watchdog exists only with an adapter
        async with self._adapter_lock:
            await self._stop_sessions()
            try:
                await self._adapter.power_cycle()
            finally:
                await self._start_sessions()


def discovered_rows(adverts: AdvertListener, bound: Iterable[str]) -> list[dict[str, Any]]:
    """The sensors `adverts` heard that are not among the `bound` addresses, as
    commissioning lists them."""
    now, bound = time.monotonic(), set(bound)
    return [
        {
            "address": address,
            "kind": seen.kind,
            "name": seen.name,
            "rssi": seen.rssi,
            "seen_s_ago": round(now - seen.last_seen),
        }
        for address, seen in sorted(adverts.discovered.items())
        if address not in bound
    ]


async def _quietly(step: Awaitable[None], what: str) -> None:
    """A step of shutting down that may fail on an adapter already gone: logged only."""
    try:
        await step
    except Exception as error:
        log.debug("%s failed: %s", what, _describe(error))


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError) and not str(error):
        return f"no answer within {_OPEN_TIMEOUT_S:g} s"
    return str(error) or type(error).__name__
