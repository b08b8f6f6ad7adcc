"""A device's byte stream, whatever carries it (BLE notifications, a serial line):
decoded into packets, reduced to one reading per second per metric, and what the
decoder had to drop summarised at most once per `summary_s`, so a noisy line is
counted and visible without flooding anyone."""

from __future__ import annotations

import math
from typing import Protocol

from drivers.errors import MalformedPacket
from drivers.listener import SessionListener
from drivers.measurement import Measurement
from drivers.one_hertz import OneHertzReducer


class PacketStream(Protocol):
    """A stateful stream decoder: never raises on device bytes; counts what it drops."""

    @property
    def garbage_bytes(self) -> int: ...

    @property
    def bad_packets(self) -> int: ...

    @property
    def last_error(self) -> MalformedPacket | None: ...

    def feed(self, data: bytes) -> list[list[Measurement]]: ...


class ReducedStream:
    """One connection's stream: its decoder, its one-per-second reducer, and the summary
    of what the decoder dropped. `joining`: the first bytes may start mid-packet (a BLE
    notification stream joined while running), and what is skipped before the first
    packet is not garbage."""

    def __init__(
        self,
        address: str,
        name: str,
        decoder: PacketStream,
        listener: SessionListener,
        summary_s: float,
        joining: bool = True,
    ) -> None:
        self._address = address
        self._name = name
        self._decoder = decoder
        self._listener = listener
        self._summary_s = summary_s
        self._reducer = OneHertzReducer()
        self._joined = not joining
        self._reported = self._dropped()
        self._reported_at = -math.inf
        self._heard_at = -math.inf
        self._offending = b""

    def feed(self, now: float, raw: bytes) -> int:
        """Bytes received at monotonic time `now`; returns how many packets they completed."""
        if now - self._heard_at >= 1.0:  # a 100 Hz stream need not say so 100 times
            self._heard_at = now
            self._listener.on_signal(self._address, None)
        before = self._dropped()
        packets = self._decoder.feed(raw) if self._joined else self._join(raw)
        if self._dropped() != before:
            self._offending = raw
        readings = self._reducer.add(now, [m for packet in packets for m in packet])
        if readings:
            self._listener.on_measurements(self._address, readings)
        if now - self._reported_at >= self._summary_s:
            self._summarise(now)
        return len(packets)

    def close(self, now: float) -> None:
        """The connection ended: report the last window and anything dropped unreported."""
        if readings := self._reducer.flush():
            self._listener.on_measurements(self._address, readings)
        self._summarise(now)

    def _join(self, raw: bytes) -> list[list[Measurement]]:
        """Decodes the first bytes, which usually start mid-packet: the bytes skipped
        before the first packet are where the stream was joined, not garbage."""
        self._joined = True
        packets: list[list[Measurement]] = []
        end = 0
        while end < len(raw) and not packets:
            packets = self._decoder.feed(raw[end : end + 1])
            end += 1
        self._reported = self._dropped()
        return packets + self._decoder.feed(raw[end:])

    def _dropped(self) -> tuple[int, int]:
        return self._decoder.garbage_bytes, self._decoder.bad_packets

    def _summarise(self, now: float) -> None:
        garbage, bad = self._dropped()
        new_garbage, new_bad = garbage - self._reported[0], bad - self._reported[1]
        if not (new_garbage or new_bad):
            return
        self._reported, self._reported_at = (garbage, bad), now
        parts = []
        if new_garbage:
            parts.append(f"{new_garbage} garbage bytes dropped while resynchronising")
        if new_bad:
            parts.append(f"{new_bad} bad packets dropped (last: {self._decoder.last_error})")
        error = MalformedPacket(f"{self._name} stream: {'; '.join(parts)}")
        self._listener.on_refused(self._address, error, self._offending)
