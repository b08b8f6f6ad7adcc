"""Whatever bytes a cable delivers: results or a decoding error, never another exception."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import MalformedPacket, RefusedPacket
from drivers.measurement import Measurement, Metric
from drivers.serial.contec import (
    Cms50StreamDecoder,
    Generation,
    decode_cms50_legacy,
    decode_cms50_v46,
    parse_cms50_legacy_packet,
    parse_cms50_v46_packet,
)
from firmware_sim.cms50 import legacy_packet, v46_packet
from firmware_sim.scenarios import OximeterSample

PARSERS = [parse_cms50_legacy_packet, parse_cms50_v46_packet, decode_cms50_legacy, decode_cms50_v46]
ENCODERS = {Generation.LEGACY: legacy_packet, Generation.V46: v46_packet}

samples = st.builds(
    OximeterSample,
    spo2=st.integers(1, 100),
    pulse_rate=st.integers(1, 126),
    perfusion_index=st.just(4.5),
)
chunked = st.lists(st.binary(max_size=40), max_size=12)
#: No example database, so running the tests writes nothing into the source tree.
no_database = settings(database=None)


def _plausible(m: Measurement) -> bool:
    if m.metric is Metric.SPO2:
        return 0 < float(m.value) <= 100
    return m.metric is Metric.PULSE_RATE and 0 < float(m.value) < 255


@pytest.mark.parametrize("parse", PARSERS)
@no_database
@given(data=st.binary(max_size=64))
def test_parsers_return_plausible_values_or_malformed(
    parse: Callable[[bytes], list[Measurement]], data: bytes
) -> None:
    try:
        out = parse(data)
    except RefusedPacket as exc:
        assert isinstance(exc, MalformedPacket)  # a cable has no security checks
        assert str(exc) and "\n" not in str(exc)
    else:
        assert all(_plausible(m) for m in out)


@pytest.mark.parametrize("generation", list(Generation))
@no_database
@given(chunks=chunked)
def test_stream_decoder_accounts_for_every_byte(
    generation: Generation, chunks: list[bytes]
) -> None:
    decoder = Cms50StreamDecoder(generation)
    packets = [p for chunk in chunks for p in decoder.feed(chunk)]
    assert all(_plausible(m) for p in packets for m in p)
    framed = decoder.packet_len * (decoder.packets + decoder.bad_packets)
    pending = sum(map(len, chunks)) - decoder.garbage_bytes - framed
    assert len(packets) == decoder.packets
    assert 0 <= pending < decoder.packet_len


@pytest.mark.parametrize("generation", list(Generation))
@no_database
@given(chunks=chunked)
def test_stream_decoder_does_not_care_how_reads_are_split(
    generation: Generation, chunks: list[bytes]
) -> None:
    split, whole = Cms50StreamDecoder(generation), Cms50StreamDecoder(generation)
    assert [p for c in chunks for p in split.feed(c)] == whole.feed(b"".join(chunks))
    assert split.garbage_bytes == whole.garbage_bytes


@pytest.mark.parametrize("generation", list(Generation))
@no_database
@given(noise=st.binary(max_size=40), sample=samples, count=st.integers(1, 4))
def test_real_packets_after_any_noise_are_all_found(
    generation: Generation, noise: bytes, sample: OximeterSample, count: int
) -> None:
    """A packet's first byte can never sit inside a false frame, so noise costs nothing."""
    packet = ENCODERS[generation](sample, 0.25)
    packets = Cms50StreamDecoder(generation).feed(noise + packet * count)
    assert packets[-count:] == [packets[-1]] * count
    assert {m.metric: m.value for m in packets[-1]} == {
        Metric.SPO2: sample.spo2,
        Metric.PULSE_RATE: sample.pulse_rate,
    }
