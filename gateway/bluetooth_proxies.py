"""The Bluetooth side when ESPHome proxies are configured (`[[bluetooth.proxies]]`):
every proxy kept connected, and the gateway's own adapter kept open unless it is
`none`; one scanner view over what they all hear, and every Bluetooth session on it.

- Each proxy is a `ProxyLink` (`drivers/ble/esphome/`), connected with back-off and
  connected again after a drop, by itself. Its state, slots and when it last relayed
  an advertisement are in `health()["proxies"]`, for `status`, the page and the
  `proxy_silent` alert.
- Door sensors are decoded by one advertisement listener on the view: any proxy that
  hears them will do.
- Each GATT device connects through the proxy that hears it best, within its slots, and
  stays with it until that proxy drops or another hears it `switch_margin_db` stronger
  (`drivers/ble/scanner_view.py`). When a proxy drops, its links end at once; each of
  its devices is routed again after `reconnect_min_s`, to a proxy that hears it.

The adapter watchdog is not run here: a proxy's silence is its alert, and the local
adapter is opened again once it has gone (`drivers/ble/local_radio.py`).
Imported only when a Bluetooth device and a proxy are configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from drivers.backoff import Backoff
from drivers.ble.adapter import open_ble_adapter
from drivers.ble.advert_listener import AdvertListener, ServiceData
from drivers.ble.esphome.link import ProxyLink
from drivers.ble.local_radio import LocalRadio
from drivers.ble.proxy_radio import ProxyRadio, relay_into
from drivers.ble.scanner_view import ScannerView
from drivers.ble.session import GattSession
from drivers.kinds import DeviceKind, Transport
from drivers.listener import AdapterState, SessionListener
from gateway.bluetooth import SCAN_TIMEOUT_S, Fail, discovered_rows
from gateway.config import LOCAL_RADIO, BluetoothSection, DeviceConfig

log = logging.getLogger(__name__)

#: A radio's sighting of a device counts for routing for this long: a device heard
#: longer ago may have moved.
FRESH_S = 30.0


class ProxiedBluetooth:
    """Every Bluetooth device's session on the proxies' scanner view (see the module
    docstring); the same calls as `gateway.bluetooth.BluetoothSessions`."""

    def __init__(self, config: BluetoothSection, listener: SessionListener) -> None:
        self._config = config
        self._listener = listener
        self.view = ScannerView(
            fresh_s=FRESH_S, margin_db=config.switch_margin_db, scan_timeout=SCAN_TIMEOUT_S
        )
        relay = relay_into(self.view)
        self._links = [
            ProxyLink(
                proxy.name,
                proxy.host,
                proxy.port,
                proxy.noise_key,
                on_advertisement=relay,
                on_change=self._link_changed,
                backoff=Backoff(config.reconnect_min_s, config.reconnect_max_s),
            )
            for proxy in config.proxies
        ]
        for link in self._links:
            self.view.add(ProxyRadio(link))
        self._local: LocalRadio | None = None
        if config.adapter != "none":
            self._local = LocalRadio(
                open_ble_adapter(config.adapter),
                self.view,
                name=LOCAL_RADIO,
                max_connections=config.max_connections,
                backoff=Backoff(config.reconnect_min_s, config.reconnect_max_s),
            )
            self.view.add(self._local)
        self._adverts: AdvertListener | None = None
        self._gatt: list[GattSession] = []
        self._connect_lock = asyncio.Lock()  # one connect at a time per gateway
        self._started = False

    @property
    def state(self) -> AdapterState:
        if any(radio.usable() for radio in self.view.radios.values()):
            return AdapterState.UP
        return AdapterState.UNAVAILABLE if self._started else AdapterState.STARTING

    async def start(self, devices: Sequence[tuple[DeviceConfig, DeviceKind]], fail: Fail) -> None:
        """Build the sessions of `devices` (Bluetooth kinds only) and start them; the
        proxies connect in the background, and the sessions wait for them."""
        for link in self._links:
            await link.start()
        if self._local is not None:
            await self._local.start()
        self._started = True
        for device, kind in devices:
            await self.add(device, kind, fail)

    async def stop(self) -> None:
        for session in self._gatt:
            await session.stop()
        if self._adverts is not None:
            await self._adverts.stop()
        for link in self._links:
            await link.stop()
        if self._local is not None:
            await self._local.stop()
        self._started = False

    async def add(self, device: DeviceConfig, kind: DeviceKind, fail: Fail) -> None:
        """Serve one more Bluetooth device."""
        if kind.transport is Transport.ADVERT:
            try:
                self._listening().bind(device.address, device.kind, device.key)
            except ValueError as error:
                fail(device, f"session not built: {error}")
                return
            await self._listening().start()  # the view's scanner cannot fail to start
            return
        if kind.gatt is None:
            return
        try:
            session = GattSession(
                device.address,
                kind.gatt,
                self.view,
                self._listener,
                self._connect_lock,
                configured_site=device.site,
                connect_timeout=self._config.connect_timeout_s,
                backoff=Backoff(self._config.reconnect_min_s, self._config.reconnect_max_s),
            )
        except Exception as error:  # a bug in a kind's entry or its driver
            fail(device, f"session not built: {error}")
            return
        self._gatt.append(session)
        await session.start()

    async def remove(self, address: str) -> None:
        for session in [s for s in self._gatt if s.address == address]:
            self._gatt.remove(session)
            await session.stop()
        if self._adverts is not None:
            self._adverts.unbind(address)

    def health(self) -> dict[str, Any]:
        links = [link.health() for link in self._links]
        for entry in links:
            entry["devices"] = self.view.owned(entry["name"])
        return {
            "adapter": self._config.adapter,
            "state": self.state.value,
            "error": self._error(),
            "proxies": links,
        }

    def _error(self) -> str:
        """Why no radio can be used ('' while one can, or while they start)."""
        if self.state is not AdapterState.UNAVAILABLE:
            return ""
        why = [f"{link.name}: {link.error or link.state.value}" for link in self._links]
        if self._local is not None:
            why.insert(0, f"{self._config.adapter}: {self._local.error}")
        return "no radio up: " + "; ".join(why)

    def radio_of(self, address: str) -> str | None:
        """The proxy a device is connected through, or was last; for a door sensor,
        the one that hears it best now."""
        return self.view.owner(address)

    async def discover(self, for_s: float) -> str:
        """Devices nearby are what the proxies relay: nothing to switch on. Returns why
        they cannot be heard now, '' while they are."""
        await self._listening().start()
        state = self.state
        return "" if state is AdapterState.UP else self._error() or state.value

    def service_data(self, address: str) -> ServiceData | None:
        return None if self._adverts is None else self._adverts.service_data(address)

    def discovered(self, bound: Iterable[str]) -> list[dict[str, Any]]:
        return [] if self._adverts is None else discovered_rows(self._adverts, bound)

    def _listening(self) -> AdvertListener:
        if self._adverts is None:
            self._adverts = AdvertListener(self.view, self._listener, {})
        return self._adverts

    def _link_changed(self, link: ProxyLink) -> None:
        self.view.radios_changed()
