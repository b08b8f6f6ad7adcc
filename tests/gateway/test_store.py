"""The store keeps what it accepted, across a reopen, within its size limit."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from drivers.measurement import Metric
from gateway.model import Alert, AlertKind, AlertState, Severity
from gateway.store import MIGRATIONS, Store
from tests.gateway.helpers import T0, reading


def test_committed_readings_survive_a_reopen_and_seq_never_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    store = Store(path, 10**9)
    store.commit_readings([reading(1), reading(2, Metric.PULSE_RATE, 72)])
    store.mark_delivered([1, 2])
    store.close()
    reopened = Store(path, 10**9)
    assert reopened.last_seq() == 2
    assert reopened.undelivered(0, 10) == []
    assert [r["id"] for r in reopened.recent_readings(10)] == ["gw-test-2", "gw-test-1"]
    assert reopened.schema_version == len(MIGRATIONS)


def test_the_outbox_returns_undelivered_rows_oldest_first_within_bounds(tmp_path: Path) -> None:
    store = Store(tmp_path / "g.sqlite3", 10**9)
    store.commit_readings([reading(s) for s in range(1, 11)])
    store.mark_delivered([2, 3])
    assert [r.seq for r in store.undelivered(0, 4)] == [1, 4, 5, 6]
    assert [r.seq for r in store.undelivered(5, 100, up_to_seq=8)] == [6, 7, 8]
    row = store.undelivered(9, 1)[0]
    assert json.loads(row.payload)["id"] == "gw-test-10"
    stats = store.queue_stats()
    assert stats.undelivered == 8
    assert stats.oldest_undelivered_at == T0.isoformat(timespec="milliseconds")


def test_a_store_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    Store(path, 10**9).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this gateway knows"):
        Store(path, 10**9)


def test_size_limit_prunes_delivered_first_then_counts_evicted_undelivered(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "g.sqlite3", 10**9)
    store.commit_readings([reading(s, at_s=s) for s in range(1, 3001)])
    store.mark_delivered(range(1, 1501))
    alert = Alert(
        "low_spo2:bed-1:1",
        AlertKind.LOW_SPO2,
        "bed-1",
        "plx-x",
        Severity.HIGH,
        AlertState.RAISED,
        T0,
        T0,
        90,
        93,
    )
    store.save_alert_events([alert])
    full = store.used_bytes()
    # Room for roughly two thirds of the data: delivered rows alone make up a half.
    store.max_bytes = int(full * 0.66)
    assert store.enforce_size_limit(chunk=100) == 0
    assert store.queue_stats().undelivered == 1500, "undelivered kept while delivered remain"
    store.max_bytes = int(full * 0.25)
    evicted = store.enforce_size_limit(chunk=100)
    assert evicted > 0
    assert store.counters()["evicted_undelivered"] == evicted
    assert store.queue_stats().undelivered == 1500 - evicted
    remaining = store.undelivered(0, 5000)
    assert remaining[0].seq == 1501 + evicted, "the oldest undelivered go first"
    assert [a["id"] for a in store.active_alerts()] == ["low_spo2:bed-1:1"]
    assert len(store.undelivered_alert_events(0, 10)) == 1, "alerts are never evicted"
