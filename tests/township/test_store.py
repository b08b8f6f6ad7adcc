"""The township's database, on SQLite and on PostgreSQL: idempotent, in seq order with
the gaps said, alerts moved forward only, clock corrections applied once, and consumers
writing side by side never missing each other's rows."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import sqlalchemy as sa

from gateway.township.ingest import Message, ReadingsIn, Refusal, parse
from gateway.township.store import (
    TownshipStore,
    alert_events,
    clock_corrections,
    devices,
    gateways,
    readings,
)
from tests.township.helpers import alert_states, gaps, seqs

TOWN = "river-town"
GW = "gw-test"


def message(topic: str, payload: dict[str, Any], gateway: str = GW) -> Message:
    parsed = parse(f"vitals/v1/{TOWN}/{gateway}/{topic}", json.dumps(payload).encode(),
                   "vitals/v1", TOWN)  # fmt: skip
    assert not isinstance(parsed, Refusal), parsed
    return parsed


def reading(seq: int, clock: str = "unsynced", gateway: str = GW) -> dict[str, Any]:
    return {
        "id": f"{gateway}-{seq}", "seq": seq, "device": "cms50-x", "subject": "bed-7",
        "metric": "spo2", "value": 90.0, "unit": "%", "site": None, "quality": [],
        "measured_at": None, "received_at": f"2026-11-22T16:00:{seq % 60:02d}.000+00:00",
        "clock": clock,
    }  # fmt: skip


def batch(*seq_list: int, clock: str = "unsynced", gateway: str = GW) -> Message:
    payload = {"gateway": gateway, "device": "cms50-x", "backlog": False,
               "readings": [reading(s, clock, gateway) for s in seq_list]}  # fmt: skip
    return message("readings/cms50-x", payload, gateway)


def alert(state: str, updated: str, alert_id: str = "fever:bed-1:1") -> dict[str, Any]:
    return {
        "id": alert_id, "kind": "fever", "class": "physiological", "state": state,
        "severity": "warning", "subject": "bed-1", "device": "hts-f00000000001",
        "value": 38.2, "threshold": 37.3, "site": "axillary",
        "raised_at": "2026-11-22T16:00:00.000+00:00",
        "updated_at": f"2026-11-22T16:00:{updated}.000+00:00",
        "cleared_at": f"2026-11-22T16:00:{updated}.000+00:00" if state == "cleared" else None,
        "evidence": [], "detail": None, "acknowledged_by": None, "acknowledged_at": None,
    }  # fmt: skip


def online(undelivered: int = 0) -> Message:
    return message("status", {
        "gateway": GW, "state": "online", "faults": [], "version": "0.1.0",
        "time": "2026-11-22T16:25:54+00:00", "started_at": "2026-11-22T16:25:17+00:00",
        "clock": "synced",
        "queue": {"undelivered": undelivered, "oldest_undelivered_at": None,
                  "undelivered_alert_events": 0, "store_bytes": 1, "evicted_undelivered": 0},
        "bluetooth": {"adapter": "bluez", "state": "not used", "error": ""},
        "refused_packets": {"malformed": 0, "security": 0},
        "devices": {"configured": 1, "connected": 1},
    })  # fmt: skip


def test_readings_are_stored_once_and_the_gaps_follow_them(database: str) -> None:
    store = TownshipStore(database)
    applied = store.apply(TOWN, [batch(1, 2, 6), batch(9)])
    assert (applied.readings, applied.duplicates) == (4, 0)
    assert gaps(store) == [(3, 5), (7, 8)]
    again = store.apply(TOWN, [batch(1, 2, 6, 9)])  # resent: nothing new
    assert (again.readings, again.duplicates) == (0, 4)
    store.apply(TOWN, [batch(4), batch(8, 7)])  # fills one and splits another
    assert gaps(store) == [(3, 3), (5, 5)]
    store.apply(TOWN, [batch(3, 5, 10)])
    assert gaps(store) == []
    assert seqs(store) == list(range(1, 11))
    (top,) = store.rows(sa.select(gateways.c.max_seq))
    assert top.max_seq == 10
    store.close()


def test_a_message_the_database_refuses_is_left_out_alone(database: str) -> None:
    store = TownshipStore(database)
    bad = ReadingsIn(GW, [{**reading(2), "metric": None}], [0])
    applied = store.apply(TOWN, [batch(1), bad, batch(3)])
    assert applied.refused == [1]
    assert seqs(store) == [1, 3] and gaps(store) == [(2, 2)]
    store.close()


def test_alerts_move_forward_only_and_an_episode_ends_with_its_clear(database: str) -> None:
    store = TownshipStore(database)
    raised, updated = alert("raised", "01"), alert("updated", "05")
    store.apply(TOWN, [message("alerts", updated), message("alerts", raised)])
    assert alert_states(store) == {"fever": "updated"}  # the earlier one came late
    # A clear wins even when a clock correction moved its time before the others'.
    store.apply(TOWN, [message("alerts", alert("cleared", "00"))])
    assert alert_states(store) == {"fever": "cleared"}
    store.apply(TOWN, [message("alerts", updated)])  # delivered again
    assert alert_states(store) == {"fever": "cleared"}
    events = store.rows(sa.select(alert_events.c.state).order_by(alert_events.c.state))
    assert [state for (state,) in events] == ["cleared", "raised", "updated"]
    # The retained set tells of an alert whose events came before this database.
    other = alert("raised", "09", "low_spo2:bed-2:9") | {"kind": "low_spo2"}
    store.apply(TOWN, [message("alerts/active", {"gateway": GW, "alerts": [other]})])
    assert alert_states(store) == {"fever": "cleared", "low_spo2": "raised"}
    store.close()


def test_a_clock_correction_is_applied_once_also_to_readings_that_come_later(
    database: str,
) -> None:
    store = TownshipStore(database)
    correction = {"gateway": GW, "from_seq": 1, "to_seq": 4, "offset_ms": 60_000,
                  "synced_at": "2026-11-22T16:10:00.000+00:00"}  # fmt: skip
    store.apply(TOWN, [batch(1, 2), batch(5), message("clock", correction)])
    store.apply(TOWN, [message("clock", correction)])  # delivered again
    store.apply(TOWN, [batch(3), batch(4, clock="corrected")])
    r = readings.c
    rows = store.rows(sa.select(r.seq, r.offset_ms, r.corrected_ms - r.received_ms).order_by(r.seq))
    # 1-3 received unsynced: moved once; 4 came corrected already; 5 is outside the span.
    assert [tuple(row) for row in rows] == [
        (1, 60_000, 60_000), (2, 60_000, 60_000), (3, 60_000, 60_000),
        (4, None, None), (5, None, None),
    ]  # fmt: skip
    (applied,) = store.rows(sa.select(clock_corrections.c.readings_corrected))
    assert applied.readings_corrected == 3
    store.close()


def test_the_retained_sets_replace_what_was_there(database: str) -> None:
    store = TownshipStore(database)

    def device(name: str) -> dict[str, Any]:
        return {
            "id": name, "kind": "cms50", "address": "/dev/x", "subject": "bed-7",
            "link": "connected", "link_detail": "", "info": {}, "battery": None,
            "rssi": None, "last_seen": None, "last_values": {}, "malformed_packets": 0,
            "security_rejections": 0,
        }  # fmt: skip

    store.apply(TOWN, [message("devices", {"gateway": GW, "devices": [device("a"), device("b")]})])
    store.apply(TOWN, [message("devices", {"gateway": GW, "devices": [device("b")]}), online()])
    assert [name for (name,) in store.rows(sa.select(devices.c.id))] == ["b"]
    store.apply(TOWN, [message("status", {"gateway": GW, "state": "offline"})])
    (row,) = store.rows(sa.select(gateways.c.state))
    assert row.state == "offline"
    store.close()


def test_consumers_storing_side_by_side_miss_nothing(database: str) -> None:
    """Two consumers' stores commit from two threads at once: alternate runs of three
    gateways' readings (each seeing the other's only once committed), then all of
    them again as duplicates, backwards."""
    stores = [TownshipStore(database), TownshipStore(database)]
    names = ["gw-a", "gw-b", "gw-c"]
    runs = [list(range(1 + 8 * k, 9 + 8 * k)) for k in range(60)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def consume(index: int) -> None:
        try:
            start.wait()
            for run in runs[index::2]:
                stores[index].apply(TOWN, [batch(*run, gateway=g) for g in names])
            for run in runs[::-1]:
                stores[index].apply(TOWN, [batch(*run, gateway=g) for g in names])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for name in names:
        assert seqs(stores[0], name) == list(range(1, 481))
        assert gaps(stores[0], name) == []
    top = stores[0].rows(sa.select(gateways.c.max_seq).where(gateways.c.id.in_(names)))
    assert [row.max_seq for row in top] == [480] * 3
    for store in stores:
        store.close()


def test_a_gap_is_claimed_once_and_only_once_the_gateway_sent_everything(
    database: str,
) -> None:
    first, second = TownshipStore(database), TownshipStore(database)
    first.apply(TOWN, [batch(1, 5), online(undelivered=3)])
    assert first.claim_gaps(0) == []  # the gateway still has readings on their way
    first.apply(TOWN, [online(undelivered=0)])
    assert first.claim_gaps(3600) == []  # not open long enough
    time.sleep(0.5)  # the gap's age
    assert first.claim_gaps(0.5) == [(GW, 2, 4)]
    assert second.claim_gaps(0.5) == []  # claimed already; asked again in 1 s, not now
    first.close()
    second.close()
