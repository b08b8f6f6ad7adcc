"""Arbitrary bytes never crash a parser: each returns a result or refuses the packet
with a decoding error (`MalformedPacket`) or a security error (`SecurityRejection`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import pairwise
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.ble.battery import parse_battery_level
from drivers.ble.berrymed import BciStreamDecoder, decode_bci_packet
from drivers.ble.bthome import BthomeDecoder, parse_bthome
from drivers.ble.dis import decode_dis_string
from drivers.ble.fields import decode_date_time
from drivers.ble.hts import (
    parse_intermediate_temperature,
    parse_temperature_measurement,
    parse_temperature_type,
)
from drivers.ble.ieee11073 import decode_float, decode_sfloat
from drivers.ble.mibeacon import MiBeaconDecoder, parse_mibeacon
from drivers.ble.pc60fw import Pc60fwStreamDecoder, crc8_maxim, parse_pc60fw_frame
from drivers.ble.plx import parse_plx_continuous, parse_plx_features, parse_plx_spot_check
from drivers.decode import DECODERS, DecodeError, decode
from drivers.errors import MalformedPacket, RefusedPacket, SecurityRejection
from drivers.measurement import Measurement
from drivers.packet_stream import StreamDecoder

FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
BTHOME_KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
BTHOME_MAC = "54:48:E6:8F:80:A5"
MI_KEY = bytes.fromhex("017e52d2684779298709b117c0a75a7b")
MI_MAC = "E4:AA:EC:81:21:AE"

PARSERS: dict[str, Callable[[bytes], object]] = {
    "sfloat": decode_sfloat,
    "float": decode_float,
    "date_time": decode_date_time,
    "plx_spot_check": parse_plx_spot_check,
    "plx_continuous": parse_plx_continuous,
    "plx_features": parse_plx_features,
    "hts_temperature": parse_temperature_measurement,
    "hts_intermediate": parse_intermediate_temperature,
    "hts_type": parse_temperature_type,
    "battery": parse_battery_level,
    "bci_packet": decode_bci_packet,
    "pc60fw_frame": parse_pc60fw_frame,
    "bthome": parse_bthome,
    "bthome_key": partial(parse_bthome, key=BTHOME_KEY, mac=BTHOME_MAC),
    "mibeacon": parse_mibeacon,
    "mibeacon_key": partial(parse_mibeacon, key=MI_KEY, mac=MI_MAC),
}


def survives(parse: Callable[[bytes], object], data: bytes) -> None:
    try:
        result = parse(data)
    except RefusedPacket as err:
        assert isinstance(err, MalformedPacket | SecurityRejection)  # counted as one or the other
        assert str(err) and "\n" not in str(err)
        return
    if isinstance(result, list):
        assert all(isinstance(m, Measurement) for m in result)


@pytest.mark.parametrize("name", PARSERS)
@FUZZ
@given(data=st.binary(max_size=64))
def test_parser_on_random_bytes(name: str, data: bytes) -> None:
    survives(PARSERS[name], data)


# Random bytes rarely get past the length checks, so also fuzz well-framed packets.
PLX_SPOT_SIZES = ((0x01, 7), (0x02, 2), (0x04, 3), (0x08, 2))
PLX_CONTINUOUS_SIZES = ((0x01, 4), (0x02, 4), (0x04, 2), (0x08, 3), (0x10, 2))
HTS_SIZES = ((0x02, 7), (0x04, 1))


def framed(base: int, sizes: tuple[tuple[int, int], ...]) -> st.SearchStrategy[bytes]:
    def body(flags: int) -> st.SearchStrategy[bytes]:
        size = base + sum(n for bit, n in sizes if flags & bit)
        return st.binary(min_size=size, max_size=size).map(lambda b: bytes([flags]) + b)

    return st.integers(0, 255).flatmap(body)


@pytest.mark.parametrize(
    ("parse", "strategy"),
    [
        (parse_plx_spot_check, framed(4, PLX_SPOT_SIZES)),
        (parse_plx_continuous, framed(4, PLX_CONTINUOUS_SIZES)),
        (parse_temperature_measurement, framed(4, HTS_SIZES)),
        (parse_intermediate_temperature, framed(4, HTS_SIZES)),
        (
            decode_bci_packet,
            st.binary(min_size=4, max_size=4).map(lambda b: b"\x80" + bytes(x & 0x7F for x in b)),
        ),
        (
            parse_pc60fw_frame,
            st.binary(min_size=1, max_size=20).map(
                lambda p: (h := bytes([0xAA, 0x55, 0x0F, len(p) + 1]) + p) + bytes([crc8_maxim(h)])
            ),
        ),
        (parse_bthome, st.binary(max_size=40).map(lambda b: b"\x40" + b)),
    ],
)
@FUZZ
@given(data=st.data())
def test_parser_on_well_framed_packets(
    parse: Callable[[bytes], object], strategy: st.SearchStrategy[bytes], data: st.DataObject
) -> None:
    survives(parse, data.draw(strategy))


@FUZZ
@given(plain=st.binary(max_size=30), counter=st.integers(0, 2**32 - 1))
def test_bthome_on_encrypted_random_objects(plain: bytes, counter: int) -> None:
    info = 0x41
    counter_bytes = counter.to_bytes(4, "little")
    nonce = bytes.fromhex(BTHOME_MAC.replace(":", "")) + b"\xd2\xfc" + bytes([info]) + counter_bytes
    sealed = AESCCM(BTHOME_KEY, tag_length=4).encrypt(nonce, plain, None)
    data = bytes([info]) + sealed[:-4] + counter_bytes + sealed[-4:]
    survives(PARSERS["bthome_key"], data)


@FUZZ
@given(plain=st.binary(min_size=1, max_size=30), frame_counter=st.integers(0, 255))
def test_mibeacon_on_encrypted_random_objects(plain: bytes, frame_counter: int) -> None:
    mac_reversed = bytes.fromhex(MI_MAC.replace(":", ""))[::-1]
    head = bytes([0x58, 0x58, 0x8B, 0x09, frame_counter])
    nonce = mac_reversed + head[2:5] + b"\x00\x00\x00"
    sealed = AESCCM(MI_KEY, tag_length=4).encrypt(nonce, plain, b"\x11")
    data = head + mac_reversed + sealed[:-4] + b"\x00\x00\x00" + sealed[-4:]
    survives(PARSERS["mibeacon_key"], data)


@FUZZ
@given(data=st.binary(max_size=64))
def test_dis_string_never_raises(data: bytes) -> None:
    assert isinstance(decode_dis_string(data), str)


STREAMS: dict[str, Callable[[], StreamDecoder[Any]]] = {
    "berrymed": BciStreamDecoder,
    "pc60fw": Pc60fwStreamDecoder,
}
# Streams mixing real packets with noise, so that the splitting test sees packets.
STREAM_BYTES = st.lists(
    st.sampled_from(
        [
            bytes.fromhex("85 2A 05 48 61"),
            bytes.fromhex("A0 00 70 7F 7F"),
            bytes.fromhex("AA 55 0F 08 01 60 3E 00 50 00 C0 08"),
            bytes.fromhex("AA 55 0F 08 01 60 3E 00 50 00 C0 09"),
        ]
    )
    | st.binary(max_size=6),
    max_size=20,
).map(b"".join)


@pytest.mark.parametrize("name", STREAMS)
@FUZZ
@given(data=STREAM_BYTES, cuts=st.lists(st.integers(0, 200), max_size=8))
def test_stream_never_raises_and_ignores_how_it_is_split(
    name: str, data: bytes, cuts: list[int]
) -> None:
    whole = STREAMS[name]()
    expected = whole.feed(data)
    split = STREAMS[name]()
    got = []
    points = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    for start, end in pairwise(points):
        got += split.feed(data[start:end])
    assert got == expected
    assert (split.garbage_bytes, split.bad_packets, split.pending) == (
        whole.garbage_bytes,
        whole.bad_packets,
        whole.pending,
    )
    assert whole.garbage_bytes + whole.pending <= len(data)


@pytest.mark.parametrize(
    "decoder",
    [
        lambda: BthomeDecoder(None, BTHOME_MAC),
        lambda: BthomeDecoder(BTHOME_KEY, BTHOME_MAC),
        lambda: MiBeaconDecoder(None, MI_MAC),
        lambda: MiBeaconDecoder(MI_KEY, MI_MAC),
    ],
)
@FUZZ
@given(packets=st.lists(st.tuples(st.binary(max_size=40), st.floats(0, 100)), max_size=10))
def test_advert_decoders_survive(
    decoder: Callable[[], BthomeDecoder | MiBeaconDecoder], packets: list[tuple[bytes, float]]
) -> None:
    instance = decoder()
    for data, now in packets:
        survives(partial(instance.feed, now=now), data)


@pytest.mark.parametrize("profile", DECODERS)
@FUZZ
@given(data=st.binary(max_size=64))
def test_decode_registry_raises_only_decode_error(profile: str, data: bytes) -> None:
    try:
        decode(profile, [data.hex(" ")])
    except DecodeError as err:
        assert "\n" not in str(err)
