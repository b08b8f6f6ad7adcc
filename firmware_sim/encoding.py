"""IEEE-11073-20601 numbers and the GATT Date Time, as a device puts them on the air.

The inverse of docs/protocols.md section 0: `sfloat(2.8, -1)` is `1C F0`, `float32(37.4, -1)`
is `76 01 00 FF`. NaN and the infinities become their reserved raw values. All
little-endian.
"""

from __future__ import annotations

import math
import struct
from datetime import datetime

# Reserved mantissas (raw values with exponent 0).
_SFLOAT_NAN, _SFLOAT_POS_INF, _SFLOAT_NEG_INF = 0x07FF, 0x07FE, 0x0802
_FLOAT_NAN, _FLOAT_POS_INF, _FLOAT_NEG_INF = 0x007FFFFF, 0x007FFFFE, 0x00800002


def _mantissa(value: float, exponent: int, bits: int) -> int:
    """The mantissa m with m x 10^exponent == value (rounded), checked against the
    range left once the reserved values (+-(2^(bits-1)-2) and beyond) are excluded."""
    mantissa = round(value / 10.0**exponent)
    limit = 2 ** (bits - 1) - 3
    if not -limit <= mantissa <= limit:
        raise ValueError(f"{value} does not fit a {bits}-bit mantissa at exponent {exponent}")
    return mantissa & (2**bits - 1)


def _special(value: float, nan: int, pos_inf: int, neg_inf: int) -> int | None:
    if math.isnan(value):
        return nan
    if math.isinf(value):
        return pos_inf if value > 0 else neg_inf
    return None


def sfloat(value: float, exponent: int = 0) -> bytes:
    """16-bit SFLOAT: 4-bit exponent (-8..7), 12-bit mantissa."""
    if not -8 <= exponent <= 7:
        raise ValueError(f"SFLOAT exponent {exponent} outside -8..7")
    raw = _special(value, _SFLOAT_NAN, _SFLOAT_POS_INF, _SFLOAT_NEG_INF)
    if raw is None:
        raw = (exponent & 0xF) << 12 | _mantissa(value, exponent, 12)
    return struct.pack("<H", raw)


def float32(value: float, exponent: int = 0) -> bytes:
    """32-bit FLOAT: 8-bit exponent (-128..127), 24-bit mantissa."""
    if not -128 <= exponent <= 127:
        raise ValueError(f"FLOAT exponent {exponent} outside -128..127")
    raw = _special(value, _FLOAT_NAN, _FLOAT_POS_INF, _FLOAT_NEG_INF)
    if raw is None:
        raw = (exponent & 0xFF) << 24 | _mantissa(value, exponent, 24)
    return struct.pack("<I", raw)


def date_time(moment: datetime) -> bytes:
    """GATT Date Time (7 bytes): year u16, month, day, hours, minutes, seconds."""
    return struct.pack(
        "<HBBBBB",
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )
