"""Xiaomi MiBeacon service data (UUID 0xFE95), for the MCCGQ02HL door sensor.

Layout: `frame control u16 | product id u16 | frame counter u8 | [MAC 6 B reversed]
| [capability u8 (+ I/O u8 when capability bit 5)] | objects`. With v4/v5 encryption
the objects are `ciphertext | ext. counter (3) | MIC (4)`, AES-128-CCM with AAD 0x11.
Objects are `id u16 | length u8 | value`; unknown ids are skipped by their length.
Legacy (v2/v3) encryption and mesh frames are not supported.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.advert_decoder import (
    MIC_LENGTH,
    AdvertDecoder,
    ccm_decrypt,
    format_mac,
    parse_mac,
)
from drivers.ble.battery import battery_measurement
from drivers.ble.fields import FieldReader
from drivers.errors import (
    DowngradedPacket,
    ImplausibleValue,
    MalformedPacket,
    SecurityRejection,
    TruncatedPacket,
)
from drivers.measurement import Measurement, Metric

#: Product id of the MCCGQ02HL door sensor, to recognise it in a scan.
MCCGQ02HL = 0x098B

FC_ENCRYPTED = 1 << 3
FC_MAC = 1 << 4
FC_CAPABILITY = 1 << 5
FC_OBJECTS = 1 << 6
FC_MESH = 1 << 7
CAPABILITY_IO = 1 << 5
AAD = b"\x11"
EXT_COUNTER_LENGTH = 3

OBJ_DOOR = 0x1019
OBJ_BATTERY = 0x100A
DOOR_OPEN, DOOR_CLOSED, DOOR_LEFT_OPEN, DOOR_RESET = range(4)


@dataclass(frozen=True, slots=True)
class MiBeaconPacket:
    measurements: list[Measurement]
    product_id: int
    frame_counter: int
    #: Frame counter extended by the encryption counter; None when not encrypted.
    counter: int | None
    encrypted: bool
    mac: str | None  # from the frame, or the one given
    #: The door has stayed open past the device's timeout (door state 2).
    left_open: bool


def parse_mibeacon(
    service_data: bytes, key: bytes | None = None, mac: str | None = None
) -> MiBeaconPacket:
    """Decode one advertisement. `mac` is needed to decrypt when the frame omits it; when
    the frame carries one that differs, the packet is rejected."""
    reader = FieldReader(service_data, "MiBeacon")
    control = reader.uint(2, "Frame Control")
    version = control >> 12
    if control & FC_MESH:
        raise ImplausibleValue(f"MiBeacon: frame control 0x{control:04X}: mesh frames unsupported")
    if version < 2:
        raise ImplausibleValue(f"MiBeacon: frame control 0x{control:04X}: v{version} unsupported")
    product_id = reader.uint(2, "Product ID")
    frame_counter = reader.uint(1, "Frame Counter")
    mac_bytes = parse_mac(mac) if mac is not None else None
    if control & FC_MAC:
        framed = reader.take(6, "MAC")[::-1]
        if mac_bytes is not None and framed != mac_bytes:
            raise SecurityRejection(
                f"MiBeacon: frame is from {format_mac(framed)}, expected {format_mac(mac_bytes)}"
            )
        mac_bytes = framed
    if control & FC_CAPABILITY and reader.uint(1, "Capability") & CAPABILITY_IO:
        reader.take(1, "I/O Capability")
    payload = reader.rest()
    counter = None
    if not control & FC_OBJECTS:
        payload = b""
    elif control & FC_ENCRYPTED:
        if version < 4:
            raise ImplausibleValue(f"MiBeacon: legacy v{version} encryption unsupported")
        if key is None or mac_bytes is None:
            raise MalformedPacket("MiBeacon: packet is encrypted; the bindkey and MAC are needed")
        tail = EXT_COUNTER_LENGTH + MIC_LENGTH
        if len(payload) <= tail:
            raise TruncatedPacket(
                f"MiBeacon: encrypted payload of {len(payload)} bytes has no room for "
                "objects, counter and MIC"
            )
        ext_counter = payload[-tail:-MIC_LENGTH]
        nonce = mac_bytes[::-1] + service_data[2:5] + ext_counter
        payload = ccm_decrypt("MiBeacon", key, nonce, payload[:-tail] + payload[-MIC_LENGTH:], AAD)
        counter = int.from_bytes(bytes([frame_counter]) + ext_counter, "little")
    elif key is not None:
        raise DowngradedPacket("MiBeacon: unencrypted objects from a device with a key: rejected")
    measurements, left_open = _parse_objects(payload)
    return MiBeaconPacket(
        measurements,
        product_id,
        frame_counter,
        counter,
        bool(control & FC_ENCRYPTED),
        None if mac_bytes is None else format_mac(mac_bytes),
        left_open,
    )


def _parse_objects(payload: bytes) -> tuple[list[Measurement], bool]:
    reader = FieldReader(payload, "MiBeacon objects")
    measurements: list[Measurement] = []
    left_open = False
    while reader.remaining:
        oid = reader.uint(2, "object id")
        value = reader.take(reader.uint(1, f"object 0x{oid:04X} length"), f"object 0x{oid:04X}")
        if oid in (OBJ_DOOR, OBJ_BATTERY) and len(value) != 1:
            raise ImplausibleValue(f"MiBeacon: object 0x{oid:04X} has {len(value)} bytes, not 1")
        if oid == OBJ_DOOR:
            if value[0] > DOOR_RESET:
                raise ImplausibleValue(f"MiBeacon: door state {value[0]} is not 0-3")
            left_open = value[0] == DOOR_LEFT_OPEN
            if value[0] != DOOR_RESET:
                measurements.append(Measurement(Metric.DOOR_OPEN, value[0] != DOOR_CLOSED))
        elif oid == OBJ_BATTERY:
            measurements.append(battery_measurement(value[0], "MiBeacon"))
    return measurements, left_open


class MiBeaconDecoder(AdvertDecoder):
    """The frame counter serves as the packet id."""

    def _parse(self, service_data: bytes) -> tuple[list[Measurement], int | None, int | None]:
        packet = parse_mibeacon(service_data, self._key, self._mac)
        return packet.measurements, packet.frame_counter, packet.counter
