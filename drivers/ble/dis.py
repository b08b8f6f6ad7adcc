"""Device Information Service 0x180A: the identity strings read once per pairing."""

from __future__ import annotations

from drivers.ble import uuids

#: Key used in `SessionListener.on_device_info` -> characteristic UUID.
DIS_STRINGS: dict[str, str] = {
    "manufacturer": uuids.MANUFACTURER_NAME,
    "model": uuids.MODEL_NUMBER,
    "serial": uuids.SERIAL_NUMBER,
    "firmware": uuids.FIRMWARE_REVISION,
    "hardware": uuids.HARDWARE_REVISION,
    "software": uuids.SOFTWARE_REVISION,
}


def decode_dis_string(data: bytes) -> str:
    """UTF-8 with trailing NULs stripped. Never raises: identity is kept for audit even when
    a device sends bytes that are not UTF-8 (they become U+FFFD)."""
    return data.rstrip(b"\x00").decode("utf-8", errors="replace")
