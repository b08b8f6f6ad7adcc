"""`Reading.row()`: the store's text of a reading is, byte for byte, what the json module
writes of its payload, though orjson writes it; and the payload is what it always was."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from drivers.measurement import Measurement, Metric, Quality, Site
from gateway.config import CODE
from gateway.model import ClockState, Reading

codes = st.from_regex(CODE, fullmatch=True)
#: What parsers hand in: booleans for doors, numbers otherwise, the SFLOAT / FLOAT
#: formats' tiny and huge values included (mantissa x 10^exponent), never NaN or inf
#: (their special values are no reading).
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    # Where orjson and json part ways (orjson writes 1e-05 as 0.00001, 1e-09 as 1e-9).
    st.floats(min_value=1e-10, max_value=1e-3).flatmap(lambda v: st.sampled_from([v, -v])),
    st.builds(lambda m, e: m * 10.0**e, st.integers(-2048, 2047), st.integers(-128, 127)),
    st.integers(-(2**63), 2**64 - 1),
)
zones = st.one_of(
    st.just(UTC),
    st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes))),
)


@st.composite
def measurements(draw: st.DrawFn) -> Measurement:
    metric = draw(st.sampled_from(Metric))
    value = draw(st.booleans()) if metric is Metric.DOOR_OPEN else draw(values)
    return Measurement(
        metric,
        value,
        draw(st.frozensets(st.sampled_from(Quality))),
        draw(st.none() | st.sampled_from(Site)),
        draw(st.none() | st.datetimes(datetime(1990, 1, 1), datetime(2100, 1, 1))),
    )


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    seq = draw(st.integers(0, 2**53))
    received_at = draw(st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=zones))
    return Reading(
        seq=seq,
        id=f"{draw(codes)}-{seq}",
        device=draw(codes),
        subject=draw(st.none() | codes),
        measurement=draw(measurements()),
        received_at=received_at,
        clock=draw(st.sampled_from(ClockState)),
    )


def payload_as_it_was(r: Reading) -> dict[str, object]:
    """The payload as gateway/model.py built it before its shortcuts (the oracle)."""
    m = r.measurement
    return {
        "id": r.id,
        "seq": r.seq,
        "device": r.device,
        "subject": r.subject,
        "metric": m.metric.value,
        "value": m.value,
        "unit": m.unit,
        "site": m.site.value if m.site else None,
        "quality": sorted(q.value for q in m.quality),
        "measured_at": m.measured_at.astimezone().isoformat(timespec="seconds")
        if m.measured_at
        else None,
        "received_at": r.received_at.isoformat(timespec="milliseconds"),
        "clock": r.clock.value,
    }


@given(readings())
def test_the_row_is_the_payload_as_json_writes_it(reading: Reading) -> None:
    payload = reading.payload()
    assert payload == payload_as_it_was(reading)
    assert [type(v) for v in payload.values()] == [
        type(v) for v in payload_as_it_was(reading).values()
    ]
    seq, device, metric, received_at, text = reading.row()
    assert text == json.dumps(payload, separators=(",", ":"))
    assert (seq, device, metric, received_at) == (
        reading.seq,
        reading.device,
        reading.measurement.metric.value,
        payload["received_at"],
    )
    assert json.loads(text) == payload


def test_values_no_parser_makes_are_stored_as_json_always_wrote_them() -> None:
    """Should one come, its text is json's still: orjson writes null for a non-finite
    value and refuses an int past 64 bits."""
    now = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    for value in (math.nan, math.inf, -math.inf, 2**64, -(2**63) - 1):
        reading = Reading(
            1, "gw-1", "plx-1", None, Measurement(Metric.SPO2, value), now, ClockState.SYNCED
        )
        assert reading.row()[4] == json.dumps(reading.payload(), separators=(",", ":"))


def test_each_reading_says_its_own_received_time() -> None:
    """One instant in two zones, readings sharing one time object, then another: each
    payload says its own received time as it was given."""
    utc = datetime(2026, 11, 22, 0, 0, 0, 123456, tzinfo=UTC)
    beijing = utc.astimezone(timezone(timedelta(hours=8)))
    texts = [
        Reading(
            seq, f"gw-{seq}", "plx-1", None, Measurement(Metric.SPO2, 97), at, ClockState.SYNCED
        ).row()[3]
        for seq, at in enumerate([utc, utc, beijing, utc])
    ]
    assert texts == [
        "2026-11-22T00:00:00.123+00:00",
        "2026-11-22T00:00:00.123+00:00",
        "2026-11-22T08:00:00.123+08:00",
        "2026-11-22T00:00:00.123+00:00",
    ]
