"""A Shelly BLU Door/Window style BTHome v2 sensor (docs/protocols.md 5.1), plain or
AES-CCM encrypted: service data 0xFCD2 with packet id 0x00, battery 0x01 and window
0x2D in every packet.

Encrypted packets are `info | ciphertext | counter u32 | MIC`, sealed with the nonce
`MAC | D2 FC | info | counter`. The counter starts well above the restart allowance
(100) of bthome-ble's replay rule, as on a sensor that has been running a while, so
that a replayed packet is recognised as one.
"""

from __future__ import annotations

from bumble.link import LocalLink

from drivers.ble.advert_decoder import parse_mac
from drivers.ble.bthome import BATTERY, ENCRYPTED, PACKET_ID, UUID16
from firmware_sim.devices.advertiser import AdvertisingDoorSensor, ccm_encrypt

DEFAULT_ADDRESS = "F0:00:00:00:00:10"
DEFAULT_ENCRYPTED_ADDRESS = "F0:00:00:00:00:11"
#: The published BTHome test key (docs/protocols.md 5.1).
DEFAULT_KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
FIRST_COUNTER = 1000

VERSION_2 = 0x40  # device info bits 5-7
WINDOW = 0x2D


class BthomeDoorSensor(AdvertisingDoorSensor):
    service_uuid = int.from_bytes(UUID16, "little")
    protocol = "bthome"
    variants = {
        "bthome": (DEFAULT_ADDRESS, None),
        "bthome-encrypted": (DEFAULT_ENCRYPTED_ADDRESS, DEFAULT_KEY),
    }

    @classmethod
    def simulate(
        cls, link: LocalLink, address: str, key: bytes | None, advertising_interval_ms: float
    ) -> AdvertisingDoorSensor:
        return cls(link, address, key=key, advertising_interval_ms=advertising_interval_ms)

    def __init__(
        self,
        link: LocalLink,
        address: str = DEFAULT_ADDRESS,
        *,
        key: bytes | None = None,
        name: str | None = "Sim DW",
        battery: int = 100,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        super().__init__(
            link,
            address,
            name=name,
            key=key,
            battery=battery,
            advertising_interval_ms=advertising_interval_ms,
        )
        self._packet_id = 0
        self._counter = FIRST_COUNTER - 1

    def _first_packet(self) -> bytes:
        return self._door_packet()

    def _door_packet(self) -> bytes:
        self._packet_id = (self._packet_id + 1) % 256
        objects = bytes(
            [PACKET_ID, self._packet_id, BATTERY, self.battery, WINDOW, int(self.is_open)]
        )
        if self.key is None:
            return bytes([VERSION_2]) + objects
        info = VERSION_2 | ENCRYPTED
        self._counter += 1
        counter = self._counter.to_bytes(4, "little")
        nonce = parse_mac(self.address) + UUID16 + bytes([info]) + counter
        ciphertext, mic = ccm_encrypt(self.key, nonce, objects, None)
        return bytes([info]) + ciphertext + counter + mic
