"""A Xiaomi MCCGQ02HL door sensor (docs/protocols.md 5.2): MiBeacon v5, encrypted with its
bindkey, one object per advertisement: battery 0x100A from power-on, then door 0x1019
(0 open, 1 closed) at each change.

Frame: `frame control 0x5858 | product id 0x098B | frame counter u8 | MAC reversed |
ciphertext | ext. counter (3) | MIC (4)`, AAD 0x11, nonce `MAC reversed | product id |
frame counter | ext. counter`. The 32-bit counter (frame counter in the low byte)
starts well above the replay rule's restart allowance, as on a sensor in service.
"""

from __future__ import annotations

import struct

from bumble.link import LocalLink

from drivers.ble.advert_decoder import parse_mac
from drivers.ble.mibeacon import (
    AAD,
    DOOR_CLOSED,
    DOOR_OPEN,
    FC_ENCRYPTED,
    FC_MAC,
    FC_OBJECTS,
    MCCGQ02HL,
    OBJ_BATTERY,
    OBJ_DOOR,
)
from firmware_sim.devices.advertiser import AdvertisingDoorSensor, ccm_encrypt

DEFAULT_ADDRESS = "F0:00:00:00:00:12"
#: The published MCCGQ02HL test bindkey (docs/protocols.md 5.2).
DEFAULT_KEY = bytes.fromhex("017e52d2684779298709b117c0a75a7b")
FIRST_COUNTER = 1000

SERVICE_UUID = 0xFE95
# Version 5 (bits 12-15) and bit 11, as the MCCGQ02HL sends (0x5858 in the test vector).
FRAME_CONTROL = 5 << 12 | 1 << 11 | FC_OBJECTS | FC_MAC | FC_ENCRYPTED


class MiBeaconDoorSensor(AdvertisingDoorSensor):
    service_uuid = SERVICE_UUID
    protocol = "mibeacon"
    variants = {"mibeacon": (DEFAULT_ADDRESS, DEFAULT_KEY)}

    @classmethod
    def simulate(
        cls, link: LocalLink, address: str, key: bytes | None, advertising_interval_ms: float
    ) -> AdvertisingDoorSensor:
        return cls(
            link, address, key=key or DEFAULT_KEY, advertising_interval_ms=advertising_interval_ms
        )

    def __init__(
        self,
        link: LocalLink,
        address: str = DEFAULT_ADDRESS,
        *,
        key: bytes = DEFAULT_KEY,
        battery: int = 95,
        advertising_interval_ms: float = 50.0,
    ) -> None:
        # No name: the encrypted frame leaves no room for one in 31 bytes.
        super().__init__(
            link,
            address,
            name=None,
            key=key,
            battery=battery,
            advertising_interval_ms=advertising_interval_ms,
        )
        self._counter = FIRST_COUNTER - 1

    def _first_packet(self) -> bytes:
        return self._packet(OBJ_BATTERY, self.battery)

    def _door_packet(self) -> bytes:
        return self._packet(OBJ_DOOR, DOOR_OPEN if self.is_open else DOOR_CLOSED)

    def _packet(self, object_id: int, value: int) -> bytes:
        assert self.key is not None  # required by the constructor
        self._counter += 1
        frame_counter, ext_counter = (
            self._counter & 0xFF,
            (self._counter >> 8).to_bytes(3, "little"),
        )
        header = struct.pack("<HHB", FRAME_CONTROL, MCCGQ02HL, frame_counter)
        mac_reversed = parse_mac(self.address)[::-1]
        nonce = mac_reversed + header[2:] + ext_counter
        plaintext = struct.pack("<HBB", object_id, 1, value)
        ciphertext, mic = ccm_encrypt(self.key, nonce, plaintext, AAD)
        return header + mac_reversed + ciphertext + ext_counter + mic
