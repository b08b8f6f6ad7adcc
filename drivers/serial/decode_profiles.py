"""`bedside-gateway decode cms50-legacy|cms50-v46 HEX`: decode a captured byte string.

The capture may hold many packets and start or end mid-packet, as a serial read does;
the samples of every complete packet are returned in order.
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.measurement import MalformedPacket, Measurement
from drivers.serial.contec import (
    Generation,
    StreamDecoder,
    parse_cms50_legacy_packet,
    parse_cms50_v46_packet,
)


def decode_cms50_legacy(data: bytes) -> list[Measurement]:
    return _decode(
        Generation.LEGACY,
        parse_cms50_legacy_packet,
        "5 bytes, the first with bit 7 set and the other four without",
        data,
    )


def decode_cms50_v46(data: bytes) -> list[Measurement]:
    return _decode(
        Generation.V46,
        parse_cms50_v46_packet,
        "9 bytes, 01 then eight bytes with bit 7 set and status E0-E2",
        data,
    )


def _decode(
    generation: Generation,
    parse_one: Callable[[bytes], list[Measurement]],
    framing: str,
    data: bytes,
) -> list[Measurement]:
    decoder = StreamDecoder(generation)
    packets = decoder.feed(data)
    if packets:
        return [m for packet in packets for m in packet]
    if len(data) == decoder.packet_len:
        return parse_one(data)  # exactly one packet's worth: the parser says what is wrong
    raise MalformedPacket(
        f"no complete CMS50 {generation.value} packet in {len(data)} bytes (expected {framing})"
    )
