"""The simulated proxy's own Bluetooth radio: a bumble host on an HCI transport (the
simulator's virtual link, `python -m firmware_sim ble`), listening passively, as the
ESP32 of a real proxy listens on the air, and connecting to peripherals as a central.

The host is the gateway's own `BumbleRadio`, for its connects: one at a time, a cancelled
attempt withdrawn from the controller (pitfalls 1 and 2).

bumble's virtual radio gives every packet RSSI -50 (pitfall 4), so the strength a proxy
reports is set, per proxy and per device: that is how two proxies hear one oximeter at
different strengths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bumble import hci
from bumble.device import Advertisement, Connection, Device

from drivers.ble.bumble.radio import BumbleRadio

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Heard:
    """One advertisement as the proxy relays it (ESPHome's `BluetoothLERawAdvertisement`)."""

    #: The device's address as a 48-bit number, first byte most significant.
    address: int
    #: 0 public, 1 random (ESP-IDF's `esp_ble_addr_type_t`, as ESPHome sends it).
    address_type: int
    rssi: int
    #: The advertising data exactly as on the air.
    data: bytes


def address_number(address: hci.Address) -> int:
    """bumble keeps an address's bytes least significant first."""
    return int.from_bytes(address.address_bytes, "little")


class ProxyRadio:
    """The proxy's listener and central: every advertisement heard goes to `on_heard`, with the
    strength set for its address (`rssi_for`, addresses as `F0:00:00:00:00:01`) or
    `rssi`."""

    def __init__(
        self,
        hci_spec: str,
        on_heard: Callable[[Heard], None],
        *,
        rssi: int = -60,
        rssi_for: Mapping[str, int] | None = None,
    ) -> None:
        for strength in [rssi, *(rssi_for or {}).values()]:
            if not -127 <= strength <= 20:
                raise ValueError(f"RSSI {strength} dBm is outside -127..20")
        self.hci_spec = hci_spec
        self._on_heard = on_heard
        self._rssi = rssi
        self._rssi_for = {
            address_number(hci.Address(address)): strength
            for address, strength in (rssi_for or {}).items()
        }
        # With its own address on the link, as every radio there needs (pitfall 10).
        self._radio = BumbleRadio(hci_spec)

    async def start(self) -> None:
        await self._radio.start()
        try:
            device = self._radio.device
            device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            # Passive: the simulated devices need no scan request, and bumble's virtual
            # controller would answer one with a fake scan response (pitfall 3).
            await device.start_scanning(active=False, filter_duplicates=False)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self._radio.stop()

    async def connect(self, address: int, address_type: int) -> Connection:
        """An LE link to the peripheral at `address` (as `Heard.address`, with its
        `address_type`); waits as long as the controller does, so the caller times out."""
        peer = hci.Address(address.to_bytes(6, "little"), hci.AddressType(address_type))
        return await self._radio.connect(peer)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        address = address_number(advertisement.address)
        self._on_heard(
            Heard(
                address=address,
                address_type=0 if advertisement.address.is_public else 1,
                rssi=self._rssi_for.get(address, self._rssi),
                data=advertisement.data_bytes,
            )
        )
