"""BTHome v2 service data (UUID 0xFCD2): door/window state, battery, packet id; with
AES-CCM decryption, replay rejection and de-duplication.

Written here rather than using the bthome-ble package: bthome-ble only parses a
`habluetooth.BluetoothServiceInfoBleak` into Home Assistant sensor descriptions, logs
and swallows errors instead of raising them, keeps its de-duplication inside that
device object, and pulls in 13 Home Assistant Bluetooth packages (habluetooth,
bluetooth-adapters, bluetooth-auto-recovery, ...). The object sizes, the packet-id
rule and the counter rule below follow bthome-ble 3.25.0, and its published vectors
are in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.advert_decoder import MIC_LENGTH, AdvertDecoder, ccm_decrypt, parse_mac
from drivers.ble.battery import battery_measurement
from drivers.errors import DowngradedPacket, ImplausibleValue, MalformedPacket, TruncatedPacket
from drivers.measurement import Measurement, Metric

UUID16 = b"\xd2\xfc"  # 0xFCD2 as sent on air, part of the nonce
ENCRYPTED = 0x01
MAC_INCLUDED = 0x02  # reserved in the spec; bthome-ble reads the MAC after the info byte
TRIGGER_BASED = 0x04
COUNTER_LENGTH = 4

PACKET_ID = 0x00
BATTERY = 0x01
DOOR_OBJECTS = {0x11: "opening", 0x1A: "door", 0x2D: "window"}
LENGTH_PREFIXED = frozenset({0x53, 0x54})  # text, raw: a length byte follows the id

_SIZES: dict[int, tuple[int, ...]] = {
    1: (0x00, 0x01, 0x09, *range(0x0F, 0x12), *range(0x15, 0x30), 0x3A, 0x46, 0x57, 0x58,
        0x59, 0x60, 0x64, 0x65),
    2: (0x02, 0x03, 0x06, 0x07, 0x08, 0x0C, 0x0D, 0x0E, 0x12, 0x13, 0x14, 0x3C, 0x3D, 0x3F,
        0x40, 0x41, 0x43, 0x44, 0x45, 0x47, 0x48, 0x49, 0x4A, 0x51, 0x52, 0x56, 0x5A, 0x5D,
        0x5E, 0x5F, 0x61, 0xF0),
    3: (0x04, 0x05, 0x0A, 0x0B, 0x42, 0x4B, 0xF2),
    4: (0x3E, 0x4C, 0x4D, 0x4E, 0x4F, 0x50, 0x55, 0x5B, 0x5C, 0x62, 0x63, 0xF1),
}  # fmt: skip
#: Object id -> value size, for every fixed-size object bthome-ble knows.
OBJECT_SIZES: dict[int, int] = {oid: size for size, ids in _SIZES.items() for oid in ids}


@dataclass(frozen=True, slots=True)
class BthomePacket:
    measurements: list[Measurement]
    packet_id: int | None
    counter: int | None  # encryption counter; None when not encrypted
    encrypted: bool
    trigger_based: bool


def parse_bthome(
    service_data: bytes, key: bytes | None = None, mac: str | None = None
) -> BthomePacket:
    """Decode one advertisement. With a key, unencrypted packets are rejected (a
    downgrade is how a spoofer would get in). Parsing stops at the first unknown
    object id, keeping what came before, as the format requires."""
    if not service_data:
        raise TruncatedPacket("BTHome: empty service data")
    info = service_data[0]
    if info >> 5 != 2:
        raise ImplausibleValue(f"BTHome: version {info >> 5} in device info 0x{info:02X}, not 2")
    body = service_data[1:]
    if info & MAC_INCLUDED:
        if len(body) < 6:
            raise TruncatedPacket(
                f"BTHome: MAC missing (needs 6 bytes after info, got {len(body)})"
            )
        mac_bytes: bytes | None = body[5::-1]
        body = body[6:]
    else:
        mac_bytes = parse_mac(mac) if mac is not None else None
    counter = None
    if info & ENCRYPTED:
        if key is None or mac_bytes is None:
            raise MalformedPacket("BTHome: packet is encrypted; the device key and MAC are needed")
        if len(body) < COUNTER_LENGTH + MIC_LENGTH:
            raise TruncatedPacket(
                f"BTHome: encrypted packet of {len(service_data)} bytes has no room for "
                "counter and MIC"
            )
        tail = COUNTER_LENGTH + MIC_LENGTH
        counter_bytes = body[-tail:-MIC_LENGTH]
        nonce = mac_bytes + UUID16 + bytes([info]) + counter_bytes
        sealed = body[:-tail] + body[-MIC_LENGTH:]
        body = ccm_decrypt("BTHome", key, nonce, sealed, None)
        counter = int.from_bytes(counter_bytes, "little")
    elif key is not None:
        raise DowngradedPacket("BTHome: unencrypted packet from a device with a key: rejected")
    measurements, packet_id = _parse_objects(body)
    return BthomePacket(
        measurements, packet_id, counter, bool(info & ENCRYPTED), bool(info & TRIGGER_BASED)
    )


def _parse_objects(payload: bytes) -> tuple[list[Measurement], int | None]:
    measurements: list[Measurement] = []
    packet_id = None
    pos = 0
    while pos < len(payload):
        oid = payload[pos]
        if oid in OBJECT_SIZES:
            start, size = pos + 1, OBJECT_SIZES[oid]
        elif oid in LENGTH_PREFIXED:
            start, size = pos + 2, payload[pos + 1] if pos + 1 < len(payload) else 0
        else:
            break
        if start + size > len(payload):
            raise TruncatedPacket(
                f"BTHome: object 0x{oid:02X} at byte {pos} truncated "
                f"(payload is {len(payload)} bytes)"
            )
        value = payload[start : start + size]
        pos = start + size
        if oid == PACKET_ID:
            packet_id = value[0]
        elif oid == BATTERY:
            measurements.append(battery_measurement(value[0], "BTHome"))
        elif oid in DOOR_OBJECTS:
            if value[0] > 1:
                raise ImplausibleValue(
                    f"BTHome: {DOOR_OBJECTS[oid]} state {value[0]} is not 0 (closed) or 1 (open)"
                )
            measurements.append(Measurement(Metric.DOOR_OPEN, value[0] == 1))
    return measurements, packet_id


class BthomeDecoder(AdvertDecoder):
    def _parse(self, service_data: bytes) -> tuple[list[Measurement], int | None, int | None]:
        packet = parse_bthome(service_data, self._key, self._mac)
        return packet.measurements, packet.packet_id, packet.counter
