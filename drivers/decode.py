"""The `bedside-gateway decode DECODER HEX [HEX...]` command: captured device bytes
decoded as the gateway would, by the decoders each device kind declares
(`drivers/kinds.py`) plus the Battery Level characteristic every GATT kind shares.

All hex arguments are joined in order, so `02 61 00` typed unquoted (three arguments)
is the same as `"026100"` or `02:61:00`. For packet decoders the joined bytes are one
packet; for stream decoders (berrymed, pc60fw, cms50-*) they are a stream, split anywhere.
"""

from __future__ import annotations

import re

from drivers.ble.battery import parse_battery_level
from drivers.kinds import KINDS, Decoder
from drivers.measurement import Measurement

_SEPARATORS = re.compile(r"[\s:]+")


class DecodeError(ValueError):
    """One line saying why the input could not be decoded."""


def decode(
    decoder: str, hex_chunks: list[str], key: str | None = None, mac: str | None = None
) -> list[Measurement]:
    """Decode bytes given as hex with the named decoder; raises DecodeError."""
    found = DECODERS.get(decoder)
    if found is None:
        raise DecodeError(f"unknown decoder {decoder!r}; known: {', '.join(DECODERS)}")
    if (key is not None or mac is not None) and not found.takes_key:
        keyed = " and ".join(d.name for d in DECODERS.values() if d.takes_key)
        raise DecodeError(f"--key and --mac apply only to {keyed}")
    data = parse_hex(hex_chunks)
    key_bytes = None if key is None else _parse_key(key)
    try:
        return found.decode(data, key_bytes, mac)
    except ValueError as err:  # a refused packet, or a bad --mac
        raise DecodeError(f"{decoder}: {err}") from err


def parse_hex(hex_chunks: list[str]) -> bytes:
    """Join the chunks; whitespace and colons between digits are allowed."""
    text = _SEPARATORS.sub("", "".join(hex_chunks))
    if not text:
        raise DecodeError("no bytes given")
    try:
        return bytes.fromhex(text)
    except ValueError:
        bad = next((c for c in text if c not in "0123456789abcdefABCDEF"), None)
        reason = f"{bad!r} is not a hex digit" if bad else f"odd number of hex digits ({len(text)})"
        raise DecodeError(f"bad hex: {reason}") from None


def _parse_key(key: str) -> bytes:
    data = parse_hex([key])
    if len(data) != 16:
        raise DecodeError(f"--key must be 16 bytes (32 hex digits), got {len(data)} bytes")
    return data


_BATTERY = Decoder(
    "battery", "Battery Level 0x2A19", lambda data, _key, _mac: parse_battery_level(data)
)

#: Every decoder by name: each kind's, in the registry's order, and the battery level.
DECODERS: dict[str, Decoder] = {
    d.name: d for d in (*(d for kind in KINDS.values() for d in kind.decoders), _BATTERY)
}
