"""IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit) numbers, as GATT sends them.

Special raw values (NaN, NRes, +INF, -INF, reserved) are matched on the raw integer
before decoding: decoded naively they look like ordinary numbers (0x07FF -> 2047).
FLOAT NaN is 0x007FFFFF (as Wireshark); NXP's ieee11073.h wrongly says 0x07FFFFFF.
"""

from __future__ import annotations

from drivers.errors import length_mismatch

SFLOAT_SPECIALS = frozenset({0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801})
FLOAT_SPECIALS = frozenset({0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002, 0x00800001})


def decode_sfloat(data: bytes) -> float | None:
    """Two little-endian bytes -> value, or None for a special value."""
    if len(data) != 2:
        raise length_mismatch(f"SFLOAT needs 2 bytes, got {len(data)}", len(data), 2)
    raw = int.from_bytes(data, "little")
    if raw in SFLOAT_SPECIALS:
        return None
    return _scale(_signed(raw & 0x0FFF, 12), _signed(raw >> 12, 4))


def decode_float(data: bytes) -> float | None:
    """Four little-endian bytes -> value, or None for a special value."""
    if len(data) != 4:
        raise length_mismatch(f"FLOAT needs 4 bytes, got {len(data)}", len(data), 4)
    raw = int.from_bytes(data, "little")
    if raw in FLOAT_SPECIALS:
        return None
    return _scale(_signed(raw & 0xFFFFFF, 24), _signed(raw >> 24, 8))


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def _scale(mantissa: int, exponent: int) -> float:
    # Dividing by an exact power of ten gives the float nearest the decimal value,
    # so 374 x 10^-1 is 37.4, not 37.400000000000006.
    if exponent >= 0:
        return float(mantissa * 10**exponent)
    return mantissa / 10**-exponent
