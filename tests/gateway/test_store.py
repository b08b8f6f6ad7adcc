"""The store keeps what it accepted, across a reopen, within its size limit."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.measurement import Metric
from gateway.model import Alert, AlertKind, AlertState, Severity
from gateway.store import MIGRATIONS, Store
from gateway.store_unsynced import unsynced_path
from tests.conftest import REPO
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


# --- group commit (store.sync_interval_s) ---------------------------------------------


def _low_spo2(seq: int = 1) -> Alert:
    return Alert(
        f"low_spo2:bed-1:{seq}",
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


def _seqs_on_disk(path: Path, table: str = "readings") -> list[int]:
    """What another connection sees in the file: what was committed, and, committed
    with `synchronous=FULL`, synced."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return [s for (s,) in conn.execute(f"SELECT seq FROM {table} ORDER BY seq")]


def test_a_group_reaches_the_file_with_its_sync_and_alert_events_go_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.sqlite3"
    store = Store(path, 10**9, sync_interval_s=60)
    store.commit_readings([reading(1), reading(2, Metric.PULSE_RATE, 72)])
    store.mark_delivered([1])
    assert [r.seq for r in store.undelivered(0, 10)] == [2], "the store sees its own group"
    assert _seqs_on_disk(path) == [], "the group is not committed before its sync is due"
    assert 59 < (store.sync_due() or 0) <= 60
    store.save_alert_events([_low_spo2()])
    assert _seqs_on_disk(path, "alert_events") == [1], "an alert event is synced at once"
    assert _seqs_on_disk(path) == [1, 2], "and with it everything before it"
    assert store.sync_due() is None
    store.commit_readings([reading(3)])
    store.sync()
    assert _seqs_on_disk(path) == [1, 2, 3]
    store.close()
    assert Store(path, 10**9).undelivered(0, 10)[0].seq == 2, "the mark went with the group"


_KILLED = """
import os, signal, sys
from pathlib import Path
from gateway.store import Store
from tests.gateway.helpers import reading
store = Store(Path(sys.argv[1]), 10**9, sync_interval_s=60)
store.commit_readings([reading(1)])
store.sync()
store.commit_readings([reading(2), reading(3)])
store.commit_readings([reading(4)])
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("sync_interval_s", [60.0, 0.0])
def test_a_killed_process_loses_no_committed_reading(
    tmp_path: Path, sync_interval_s: float
) -> None:
    """Killed with a group open: what it committed is taken in at the next open (also
    by a store opened without group commit, which then removes the unsynced file)."""
    path = tmp_path / "g.sqlite3"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED, str(path)], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert _seqs_on_disk(path) == [1], "the group was open when it was killed"
    store = Store(path, 10**9, sync_interval_s=sync_interval_s)
    assert [r.seq for r in store.undelivered(0, 10)] == [1, 2, 3, 4]
    assert [r["id"] for r in store.recent_readings(1)] == ["gw-test-4"]
    assert store.last_seq() == 4
    store.close()
    assert _seqs_on_disk(path) == [1, 2, 3, 4]
    assert unsynced_path(path).exists() == (sync_interval_s > 0)


def test_a_group_sqlite_rolled_back_is_taken_in_again(tmp_path: Path) -> None:
    """A failed commit loses the group in SQLite (the disk refused it): its readings
    are still in the unsynced file, and the next transaction takes them in."""
    path = tmp_path / "g.sqlite3"
    store = Store(path, 10**9, sync_interval_s=60)
    store.commit_readings([reading(1), reading(2)])
    store.abandon_group()
    assert store.last_seq() == 0 and store.undelivered(0, 10) == []
    assert [json.loads(p)["seq"] for p in store.unsynced_readings()] == [1, 2]
    store.commit_readings([reading(3)])
    assert [r.seq for r in store.undelivered(0, 10)] == [1, 2, 3]
    store.sync()
    assert _seqs_on_disk(path) == [1, 2, 3] and store.unsynced_readings() == []


def test_a_store_left_open_by_another_boot_numbers_above_the_reserved_seqs(
    tmp_path: Path,
) -> None:
    """Left open by an earlier boot (a power cut): the last group's readings may be
    lost after they were published, so their seqs are never given again."""
    path = tmp_path / "g.sqlite3"
    killed = subprocess.run([sys.executable, "-c", _KILLED, str(path)], cwd=REPO)
    assert killed.returncode == -signal.SIGKILL
    unsynced_path(path).unlink()  # the power cut took the page cache with it
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value = 'an earlier boot' WHERE key = 'open'")
    store = Store(path, 10**9, sync_interval_s=1)
    ceiling = store.seq_ceiling
    assert ceiling is not None and store.last_seq() == ceiling > 4
    assert [r.seq for r in store.undelivered(0, 10)] == [1], "seqs 2-4 were lost"
    store.close()
    again = Store(path, 10**9, sync_interval_s=1)
    assert again.last_seq() == ceiling, "after a clean stop nothing is skipped"
