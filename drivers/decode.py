"""The decoder registry behind `bedside-gateway decode PROFILE HEX [HEX...]`.

All hex arguments are joined in order, so `02 61 00` typed unquoted (three arguments)
is the same as `"026100"` or `02:61:00`. For packet profiles the joined bytes are one
packet; for stream profiles (berrymed, pc60fw, cms50-*) they are a stream, split anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from drivers.ble.battery import parse_battery_level
from drivers.ble.berrymed import BciStreamDecoder
from drivers.ble.bthome import parse_bthome
from drivers.ble.hts import parse_intermediate_temperature, parse_temperature_measurement
from drivers.ble.mibeacon import parse_mibeacon
from drivers.ble.pc60fw import Pc60fwStreamDecoder
from drivers.ble.plx import parse_plx_continuous, parse_plx_spot_check
from drivers.ble.stream import StreamDecoder
from drivers.measurement import MalformedPacket, Measurement
from drivers.serial.decode_profiles import decode_cms50_legacy, decode_cms50_v46

T = TypeVar("T")
Decoder = Callable[[bytes, bytes | None, str | None], list[Measurement]]

_SEPARATORS = re.compile(r"[\s:]+")
_ADVERT_PROFILES = frozenset({"bthome", "mibeacon"})


class DecodeError(ValueError):
    """One line saying why the input could not be decoded."""


def decode(
    profile: str, hex_chunks: list[str], key: str | None = None, mac: str | None = None
) -> list[Measurement]:
    """Decode bytes given as hex with the named profile; raises DecodeError."""
    if profile not in _REGISTRY:
        raise DecodeError(f"unknown profile {profile!r}; known: {', '.join(_REGISTRY)}")
    if (key is not None or mac is not None) and profile not in _ADVERT_PROFILES:
        raise DecodeError(f"--key and --mac apply only to {' and '.join(sorted(_ADVERT_PROFILES))}")
    data = parse_hex(hex_chunks)
    key_bytes = None if key is None else _parse_key(key)
    try:
        return _REGISTRY[profile][1](data, key_bytes, mac)
    except ValueError as err:  # MalformedPacket, or a bad --mac
        raise DecodeError(f"{profile}: {err}") from err


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


def _packet(parse: Callable[[bytes], list[Measurement]]) -> Decoder:
    return lambda data, _key, _mac: parse(data)


def _stream(decoder: StreamDecoder[T], data: bytes) -> list[T]:
    """All packets in the stream; an error when not one packet could be decoded."""
    items = decoder.feed(data)
    if items:
        return items
    if decoder.last_error is not None:
        raise decoder.last_error
    raise MalformedPacket(
        f"no complete packet in {len(data)} bytes ({decoder.garbage_bytes} garbage, "
        f"{decoder.pending} waiting for the rest of a packet)"
    )


def _berrymed(data: bytes, _key: bytes | None, _mac: str | None) -> list[Measurement]:
    return [m for sample in _stream(BciStreamDecoder(), data) for m in sample.measurements]


def _pc60fw(data: bytes, _key: bytes | None, _mac: str | None) -> list[Measurement]:
    return [m for frame in _stream(Pc60fwStreamDecoder(), data) for m in frame]


def _bthome(data: bytes, key: bytes | None, mac: str | None) -> list[Measurement]:
    return parse_bthome(data, key, mac).measurements


def _mibeacon(data: bytes, key: bytes | None, mac: str | None) -> list[Measurement]:
    return parse_mibeacon(data, key, mac).measurements


_REGISTRY: dict[str, tuple[str, Decoder]] = {
    "plx-continuous": (
        "PLX Continuous Measurement 0x2A5F (Pulse Oximeter Service)",
        _packet(parse_plx_continuous),
    ),
    "plx-spot-check": (
        "PLX Spot-check Measurement 0x2A5E (Pulse Oximeter Service)",
        _packet(parse_plx_spot_check),
    ),
    "hts-temperature": (
        "Temperature Measurement 0x2A1C (Health Thermometer Service)",
        _packet(parse_temperature_measurement),
    ),
    "hts-intermediate": (
        "Intermediate Temperature 0x2A1E (Health Thermometer Service)",
        _packet(parse_intermediate_temperature),
    ),
    "battery": ("Battery Level 0x2A19", _packet(parse_battery_level)),
    "berrymed": ("BerryMed BCI byte stream (5-byte packets, any split)", _berrymed),
    "pc60fw": ("Viatom/Wellue PC-60FW byte stream (AA 55 frames, any split)", _pc60fw),
    "cms50-legacy": (
        "Contec CMS50D+/E serial stream, firmware <= 4.5 (5-byte packets)",
        _packet(decode_cms50_legacy),
    ),
    "cms50-v46": (
        "Contec CMS50D+/E serial stream, firmware 4.6+ (9-byte packets)",
        _packet(decode_cms50_v46),
    ),
    "bthome": ("BTHome v2 service data 0xFCD2 (encrypted: --key and --mac)", _bthome),
    "mibeacon": (
        "Xiaomi MiBeacon service data 0xFE95 (encrypted: --key; --mac if not in the frame)",
        _mibeacon,
    ),
}

#: Profile name -> one-line description, for --help.
PROFILES: dict[str, str] = {name: text for name, (text, _) in _REGISTRY.items()}
