"""Bounds-checked reading of GATT characteristic values, and the 7-byte Date Time (0x2A08).

Every parser reads through `FieldReader`, so a short or over-long packet is reported
the same way everywhere: which field is missing, where, and how long the packet was.
"""

from __future__ import annotations

from datetime import datetime

from drivers.ble.ieee11073 import decode_float, decode_sfloat
from drivers.errors import ImplausibleValue, MalformedPacket, TruncatedPacket, length_mismatch

DATE_TIME_LENGTH = 7


def decode_date_time(data: bytes) -> datetime | None:
    """GATT Date Time -> naive device-local datetime; None when year, month or day is 0
    (the spec's "unknown")."""
    if len(data) != DATE_TIME_LENGTH:
        raise length_mismatch(
            f"Date Time needs {DATE_TIME_LENGTH} bytes, got {len(data)}",
            len(data),
            DATE_TIME_LENGTH,
        )
    year = int.from_bytes(data[:2], "little")
    month, day, hour, minute, second = data[2:]
    if 0 in (year, month, day):
        return None
    text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    if year < 1582:
        raise ImplausibleValue(f"impossible Date Time {text}: year before 1582")
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError as err:
        raise ImplausibleValue(f"impossible Date Time {text}: {err}") from None


class FieldReader:
    """Reads fields in order from one packet; `what` names the packet in error messages."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self.what = what

    def take(self, size: int, field: str) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            where = f"byte {self._pos}" if size == 1 else f"bytes {self._pos}-{end - 1}"
            raise TruncatedPacket(
                f"{self.what}: {field} missing (needs {where}, packet is {len(self._data)} bytes)"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "little")

    def sfloat(self, field: str) -> float | None:
        return decode_sfloat(self.take(2, field))

    def float32(self, field: str) -> float | None:
        return decode_float(self.take(4, field))

    def date_time(self, field: str) -> datetime | None:
        raw = self.take(DATE_TIME_LENGTH, field)
        try:
            return decode_date_time(raw)
        except MalformedPacket as err:
            raise type(err)(f"{self.what}: {field}: {err}") from None

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def end(self) -> None:
        """Raise if bytes are left over: the flags and the length disagree."""
        extra = self.remaining
        if extra:
            raise MalformedPacket(
                f"{self.what}: {extra} unexpected trailing byte(s) after byte {self._pos - 1} "
                f"(packet is {len(self._data)} bytes)"
            )
