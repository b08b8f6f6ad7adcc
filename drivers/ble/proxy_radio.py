"""An ESPHome Bluetooth proxy as one radio of the scanner view: what it relays goes into
the view as bleak's types, and it connects through its own slots."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bleak.backends.device import BLEDevice

from drivers.ble.bumble.advertising import raw_advertisement_data
from drivers.ble.esphome.link import ProxyLink, ProxyState, RawAdvert
from drivers.ble.scanner_view import SETTLE_S, ScannerView

logger = logging.getLogger(__name__)


class ProxyRadio:
    """`drivers/ble/scanner_view.py`'s `Radio` for one `ProxyLink`."""

    def __init__(self, link: ProxyLink) -> None:
        self.link = link
        self.name = link.name

    def usable(self) -> bool:
        return self.link.state is ProxyState.CONNECTED

    def settled(self, now: float) -> bool:
        link = self.link
        if link.state is ProxyState.CONNECTED:
            return link.connected_since is not None and now - link.connected_since >= SETTLE_S
        return link.tried

    def free_slots(self, held: int) -> int:
        """The proxy's own count of free slots, and never more than its limit leaves
        beside the connections being made through it (not counted by it yet)."""
        return min(self.link.slots_free, self.link.slots_limit - held)

    def client_kwargs(self) -> dict[str, Any]:
        return {"backend": self.link.client_backend}


def relay_into(view: ScannerView) -> Callable[[ProxyLink, RawAdvert], None]:
    """A `ProxyLink`'s `on_advertisement`: each advertisement into `view`; one that
    cannot be parsed (radio noise) is dropped."""

    def relay(link: ProxyLink, advert: RawAdvert) -> None:
        try:
            data = raw_advertisement_data(advert.data, advert.rssi, (advert,))
        except ValueError as error:
            logger.debug("%s relayed %s from %s", link.name, error, advert.address)
            return
        device = BLEDevice(advert.address, data.local_name, details=advert)
        view.heard(link.name, device, data)

    return relay
