"""From a message to what the township stores: every contract payload read, anything
else refused with a reason that names fields, never values; random input never raises."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.township.ingest import (
    ActiveAlertsIn,
    AlertEventIn,
    ClockIn,
    ReadingsIn,
    Refusal,
    StatusIn,
    parse,
)

ROOT = "vitals/v1/river-town/gw-0001"


def reading(seq: int, **changes: Any) -> dict[str, Any]:
    return {
        "id": f"gw-0001-{seq}", "seq": seq, "device": "cms50-x", "subject": "bed-7",
        "metric": "spo2", "value": 90.0, "unit": "%", "site": None, "quality": [],
        "measured_at": None, "received_at": "2026-11-22T16:25:54.702+00:00",
        "clock": "unsynced", **changes,
    }  # fmt: skip


def readings_message(*items: dict[str, Any]) -> bytes:
    message = {"gateway": "gw-0001", "device": "cms50-x", "backlog": False, "readings": items}
    return json.dumps(message).encode()


def read(topic: str, payload: bytes) -> object:
    return parse(f"{ROOT}/{topic}", payload, "vitals/v1", "river-town")


ALERT = {
    "id": "fever:bed-1:1795364553451", "kind": "fever", "class": "physiological",
    "state": "raised", "severity": "warning", "subject": "bed-1",
    "device": "hts-f00000000001", "value": 38.2, "threshold": 37.3, "site": "axillary",
    "raised_at": "2026-11-22T16:22:33.451+00:00", "updated_at": "2026-11-22T16:22:33.451+00:00",
    "cleared_at": None, "evidence": ["gw-0001-18"], "detail": None,
    "acknowledged_by": None, "acknowledged_at": None,
}  # fmt: skip


def test_a_readings_message_is_read_with_its_times_in_unix_ms() -> None:
    parsed = read("readings/cms50-x", readings_message(reading(73), reading(74)))
    assert isinstance(parsed, ReadingsIn)
    assert [r["seq"] for r in parsed.readings] == [73, 74]
    assert parsed.received_ms == [1795364754702, 1795364754702]


def test_each_topic_of_the_contract_is_read() -> None:
    assert isinstance(read("alerts", json.dumps(ALERT).encode()), AlertEventIn)
    active = {"gateway": "gw-0001", "alerts": [ALERT]}
    assert isinstance(read("alerts/active", json.dumps(active).encode()), ActiveAlertsIn)
    offline = read("status", b'{"gateway":"gw-0001","state":"offline"}')
    assert isinstance(offline, StatusIn) and offline.state == "offline"
    clock = {"gateway": "gw-0001", "from_seq": 1, "to_seq": 9, "offset_ms": -5,
             "synced_at": "2026-11-22T08:00:00.000+00:00"}  # fmt: skip
    assert read("clock", json.dumps(clock).encode()) == ClockIn(
        "gw-0001", 1, 9, -5, "2026-11-22T08:00:00.000+00:00"
    )


def test_refusals_say_why_and_name_fields_never_values() -> None:
    assert read("readings/cms50-x", b"\xff{") == Refusal("not_json")
    assert read("nonsense", b"{}") == Refusal("unknown_topic")
    assert parse("other/town/gw/status", b"{}", "vitals/v1", "river-town") == Refusal(
        "unknown_topic"
    )
    secret = read("readings/cms50-x", readings_message(reading(1, subject="full name here")))
    assert isinstance(secret, Refusal) and secret.reason == "invalid"
    assert "readings.0.subject" in secret.detail and "name here" not in secret.detail
    # A reading whose id is not its gateway's and seq's, or of another device.
    assert read("readings/cms50-x", readings_message(reading(1, id="gw-0002-1"))) == Refusal(
        "mismatch", "readings.id, readings.device"
    )
    assert read("readings/other", readings_message(reading(1))) == Refusal("mismatch", "device")
    assert read("status", b'{"gateway":"gw-9","state":"offline"}') == Refusal("mismatch", "gateway")


def test_what_a_database_column_cannot_hold_is_refused() -> None:
    assert read("readings/cms50-x", readings_message(reading(2**63))) == Refusal(
        "invalid", "readings.seq"
    )
    nul = readings_message(reading(1, device="cms50-x\u0000"))
    assert read("readings/cms50-x", nul) == Refusal("invalid", "NUL character")


TOPICS = st.sampled_from(
    ["readings/cms50-x", "alerts", "alerts/active", "status", "devices", "subjects",
     "clock", "ledger", "cmd/ping/result", "cmd//result", "readings/", "x/y/z"]
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(topic=st.text(max_size=40), payload=st.binary(max_size=200))
def test_random_bytes_on_random_topics_are_refused_cleanly(topic: str, payload: bytes) -> None:
    result = parse(topic, payload, "vitals/v1", "river-town")
    assert isinstance(result, Refusal)


@settings(max_examples=600, deadline=None)
@given(topic=TOPICS, payload=JSON)
def test_random_json_on_the_contract_topics_never_raises(topic: str, payload: Any) -> None:
    parse(f"{ROOT}/{topic}", json.dumps(payload).encode(), "vitals/v1", "river-town")


@settings(max_examples=600, deadline=None)
@given(
    field=st.sampled_from(sorted(reading(1))),
    value=JSON,
)
def test_a_reading_with_any_one_field_changed_never_raises(field: str, value: Any) -> None:
    payload = readings_message({**reading(1), field: value})
    result = read("readings/cms50-x", payload)
    assert isinstance(result, ReadingsIn | Refusal)
