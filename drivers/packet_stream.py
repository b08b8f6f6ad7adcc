"""Shared machinery for byte streams whose reads (BLE notifications, serial reads) do
not align with their packets: buffering across reads, resynchronisation, and counters."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from drivers.errors import MalformedPacket

T = TypeVar("T")


class StreamDecoder(ABC, Generic[T]):
    """Feed reads in order; get back one decoded item per complete packet.

    Never raises on device bytes. `garbage_bytes` counts bytes discarded while looking
    for a packet start; `bad_packets` counts well-framed packets that failed their check
    (CRC, implausible value), the last of which is kept in `last_error`. `packets` and
    `packet_bytes` count the packets decoded and their bytes; `refused_bytes` every byte
    dropped (the garbage and the bad packets' bytes): together they say how much of a
    line is the protocol and how much is noise.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.garbage_bytes = 0
        self.bad_packets = 0
        self.last_error: MalformedPacket | None = None
        self.packets = 0
        self.packet_bytes = 0
        self.refused_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a packet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[T]:
        self._buffer += data
        out: list[T] = []
        while True:
            drop, size = self._split(bytes(self._buffer))
            if drop:
                self._discard(drop)
                continue
            if not size or size > len(self._buffer):
                return out
            packet = bytes(self._buffer[:size])
            del self._buffer[:size]
            try:
                out.append(self._decode(packet))
            except MalformedPacket as err:
                self._reject(err)
                self.refused_bytes += size
            else:
                self.packets += 1
                self.packet_bytes += size

    def _discard(self, count: int) -> None:
        """The first `count` buffered bytes are garbage."""
        del self._buffer[:count]
        self.garbage_bytes += count
        self.refused_bytes += count

    def _reject(self, error: MalformedPacket) -> None:
        """A framed packet failed its check (its bytes are dropped by the caller)."""
        self.bad_packets += 1
        self.last_error = error

    @abstractmethod
    def _split(self, buffer: bytes) -> tuple[int, int]:
        """Return (drop, size): discard `drop` leading bytes as garbage; or, when `drop`
        is 0, a packet of `size` bytes starts here (0 = not known yet, wait for more)."""

    @abstractmethod
    def _decode(self, packet: bytes) -> T:
        """Decode one complete packet; raise MalformedPacket to count it as bad."""
