"""What a family of serial devices speaks, for `drivers/serial/session.py` to run it.

A `SerialProtocol` says how to find the line (the settings to try, and the packets
that prove the device is there), what to send, how to decode what comes back, and
what to report. It knows nothing of ports: this module and the protocols import no
pyserial, so the device-kind registry can hold them on a machine without it.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol

from drivers.reduced_stream import PacketStream


class LineSettings(NamedTuple):
    """Speed and parity; always 8 data bits and 1 stop bit."""

    baudrate: int
    #: pyserial's letters: none, odd, even.
    parity: Literal["N", "O", "E"]

    def __str__(self) -> str:
        return f"{self.baudrate} 8{self.parity}1"


class SerialStream(PacketStream, Protocol):
    """A connection's stream decoder that can say how much of the line it understood."""

    @property
    def packets(self) -> int:
        """Packets decoded."""

    @property
    def packet_bytes(self) -> int:
        """The bytes of the packets decoded."""

    @property
    def refused_bytes(self) -> int:
        """Every byte dropped: garbage, and the bytes of packets that failed their check."""


class SerialProtocol(Protocol):
    """One device family on a serial line; the methods taking `settings` are told which
    of `line_settings` the line speaks at."""

    #: The family's name in link details and log lines, e.g. "CMS50".
    name: str
    #: Every setting the family may speak at, in the order a fresh session tries them.
    line_settings: tuple[LineSettings, ...]
    #: Packets that prove the line speaks the protocol at those settings, provided no
    #: more bytes were refused than the packets hold (bytes merely arriving prove
    #: nothing; a line with some garbage is still the device's line).
    detect_packets: int
    #: No packet for this long on an open line: the line is reopened.
    stall_timeout_s: float
    #: How often `keepalive` is sent while connected.
    keepalive_interval_s: float

    @property
    def preferred(self) -> LineSettings | None:
        """The settings that last worked (or were given as a hint): tried first."""

    def spoke(self, settings: LineSettings) -> None:
        """The line was detected at `settings`: prefer them from now on."""

    def open_command(self, settings: LineSettings) -> bytes:
        """Sent once the port is open, before detection; b"" for none."""

    def keepalive(self, settings: LineSettings) -> bytes:
        """Sent every `keepalive_interval_s` while connected; b"" for none."""

    def new_stream(self, settings: LineSettings) -> SerialStream:
        """A fresh decoder for one connection."""

    def variant(self, settings: LineSettings) -> str:
        """What the line turned out to be, e.g. "CMS50 v46": the connected link detail
        and the name of its stream in malformed-packet summaries."""

    def device_info(self, settings: LineSettings) -> dict[str, str]:
        """The identity reported on connecting (manufacturer, model, firmware)."""
