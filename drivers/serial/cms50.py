"""The Contec CMS50 as a `SerialProtocol`: either firmware generation, told apart by
the line settings at which its framing shows up.

Detection: 115200 8N1 with the start command first; without ten v4.6 packets, 19200
8O1 and legacy packets. Bytes merely arriving prove nothing (noise at the wrong baud
rate, or a legacy device that streams regardless), so the framing must match, and
most of the bytes must be in the packets. The generation that worked is tried first at
the next open.
"""

from __future__ import annotations

from drivers.serial.contec import V46_KEEPALIVE, V46_START, Cms50StreamDecoder, Generation
from drivers.serial.protocol import LineSettings, SerialProtocol

_LINE_SETTINGS = {
    Generation.V46: LineSettings(115200, "N"),
    Generation.LEGACY: LineSettings(19200, "O"),
}
_GENERATION_AT = {settings: generation for generation, settings in _LINE_SETTINGS.items()}
_FIRMWARE = {
    Generation.LEGACY: "legacy (<= 4.5), 19200 8O1",
    Generation.V46: "4.6 or later, 115200 8N1",
}


class Cms50Protocol(SerialProtocol):
    """`generation`: a hint for the first open, e.g. remembered from the last run."""

    name = "CMS50"
    line_settings = tuple(_LINE_SETTINGS.values())
    #: Random bytes match the 5-byte legacy framing about once in 32 positions, so ten
    #: such packets holding as many bytes as the noise around them essentially never
    #: turn up (none in 20,000 random 4,000-byte lines), while a line with a cut-off
    #: packet and noise before every other legacy packet, or every v4.6 one, passes.
    detect_packets = 10

    def __init__(
        self,
        generation: Generation | None = None,
        *,
        stall_timeout_s: float = 5.0,
        keepalive_interval_s: float = 3.0,
    ) -> None:
        self._generation = generation
        self.stall_timeout_s = stall_timeout_s
        self.keepalive_interval_s = keepalive_interval_s

    @property
    def generation(self) -> Generation | None:
        """The generation that last worked; it is tried first at the next open."""
        return self._generation

    @property
    def preferred(self) -> LineSettings | None:
        return None if self._generation is None else _LINE_SETTINGS[self._generation]

    def spoke(self, settings: LineSettings) -> None:
        self._generation = _GENERATION_AT[settings]

    def open_command(self, settings: LineSettings) -> bytes:
        return V46_START if _GENERATION_AT[settings] is Generation.V46 else b""

    def keepalive(self, settings: LineSettings) -> bytes:
        return V46_KEEPALIVE if _GENERATION_AT[settings] is Generation.V46 else b""

    def new_stream(self, settings: LineSettings) -> Cms50StreamDecoder:
        return Cms50StreamDecoder(_GENERATION_AT[settings])

    def variant(self, settings: LineSettings) -> str:
        return f"CMS50 {_GENERATION_AT[settings].value}"

    def device_info(self, settings: LineSettings) -> dict[str, str]:
        return {
            "manufacturer": "Contec",
            "model": "CMS50 (USB serial)",
            "firmware": _FIRMWARE[_GENERATION_AT[settings]],
        }
