"""The store meets a damaged file, a lost file or a full disk and goes on: a bad file
is moved aside and what can be read of it is salvaged, reading ids are never reused,
errors say what they mean, and eviction deletes only what it must. Real SQLite files,
damaged as disks damage them; real tmpfs filesystems for a full disk."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
from pathlib import Path

import pytest

from gateway.store import Store, StoreThread, open_store
from gateway.store_faults import StorageUnavailable, StoreFault, classify
from gateway.store_recovery import RecoveryReason
from gateway.store_seq import RESERVE_BLOCK
from tests.faults.disks import fill, tmpfs
from tests.gateway.helpers import low_spo2_alert, reading

MAX = 10**9


def stored(path: Path, n: int, delivered: int = 0, alerts: int = 0) -> dict[int, str]:
    """A store that issued seqs 1..n (the first `delivered` delivered) and raised
    `alerts` alerts, closed; returns each undelivered reading's stored payload."""
    store = Store(path, MAX)
    for first in range(1, n + 1, 1000):
        store.commit_readings([reading(s) for s in range(first, min(n, first + 999) + 1)])
    store.mark_delivered(range(1, delivered + 1))
    store.save_alert_events([low_spo2_alert(i) for i in range(alerts)])
    payloads = {row.seq: row.payload for row in store.undelivered(0, n)}
    store.close()
    return payloads


def damage_middle_pages(path: Path, pages: int = 3) -> set[int]:
    """Overwrite `pages` leaf pages in the middle of the readings table, as a failing
    SD card garbles them; returns the seqs they held."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = conn.execute(
            "SELECT pageno, ncell FROM dbstat WHERE name = 'readings' AND pagetype = 'leaf'"
            " ORDER BY path"
        ).fetchall()
    first_seq = [1]
    for _, cells in leaves:
        first_seq.append(first_seq[-1] + cells)
    middle = range(len(leaves) // 2, len(leaves) // 2 + pages)
    with path.open("r+b") as f:
        for i in middle:
            f.seek((leaves[i][0] - 1) * page_size)
            f.write(b"\xff" * page_size)
    return {s for i in middle for s in range(first_seq[i], first_seq[i + 1])}


def intact(path: Path) -> bool:
    """`PRAGMA quick_check` passes (it answers with problems, or raises on some)."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return [row[0] for row in conn.execute("PRAGMA quick_check")] == ["ok"]
    except sqlite3.DatabaseError:
        return False


def reserved_through(store: Path) -> int:
    record = json.loads(Path(f"{store}.seq").read_text())
    return int(record["reserved_through"])


def delete_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# --- files that cannot be the store ------------------------------------------------


def test_a_store_whose_header_is_overwritten_is_moved_aside_and_seqs_go_on_above(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.sqlite3"
    stored(path, 100)
    with path.open("r+b") as f:
        f.write(b"overwritten by something else" * 4)

    store, recovery = open_store(path, MAX)

    assert recovery is not None and recovery.reason is RecoveryReason.CORRUPT
    assert "file is not a database" in recovery.detail
    assert recovery.moved_to is not None and recovery.moved_to.read_bytes().startswith(b"over")
    assert recovery.moved_to.name.startswith("g.sqlite3.corrupt-20")
    assert recovery.next_seq > 100
    assert store.last_seq() + 1 == recovery.next_seq
    store.commit_readings([reading(recovery.next_seq)])
    assert [r.seq for r in store.undelivered(0, 10)] == [recovery.next_seq]


def test_a_store_path_that_is_a_directory_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    stored(path, 100)
    delete_store(path)
    path.mkdir()
    (path / "left-by-someone").write_text("x")

    store, recovery = open_store(path, MAX)

    assert recovery is not None and recovery.reason is RecoveryReason.NOT_A_FILE
    assert recovery.moved_to is not None and (recovery.moved_to / "left-by-someone").exists()
    assert path.is_file() and store.last_seq() >= 100


def test_damaged_middle_pages_cost_only_their_rows_and_the_rest_is_salvaged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.sqlite3"
    undelivered = stored(path, 3000, delivered=1000, alerts=2)
    lost = damage_middle_pages(path)
    assert not intact(path)

    store, recovery = open_store(path, MAX)

    assert recovery is not None and recovery.reason is RecoveryReason.CORRUPT
    kept = {seq: p for seq, p in undelivered.items() if seq not in lost}
    assert lost <= set(undelivered), "the damage hit undelivered rows"
    assert recovery.salvaged_readings == len(kept)
    assert recovery.lost == len(lost)
    assert {r.seq: r.payload for r in store.undelivered(0, 5000)} == kept, "same seq, payload"
    assert recovery.salvaged_alert_events == 2 and len(store.undelivered_alert_events(0, 10)) == 2
    assert recovery.salvaged_alerts == 2 and len(store.active_alerts()) == 2
    assert recovery.next_seq > 3000
    store.commit_readings([reading(recovery.next_seq)])
    store.close()
    assert intact(path)
    assert recovery.moved_to is not None and not intact(recovery.moved_to)


def test_a_store_emptied_after_seqs_were_issued_is_set_aside_and_seqs_go_on_above(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.sqlite3"
    stored(path, 100)
    os.truncate(path, 0)

    store, recovery = open_store(path, MAX)

    assert recovery is not None and recovery.reason is RecoveryReason.EMPTY
    assert recovery.moved_to is not None and recovery.moved_to.stat().st_size == 0
    assert store.last_seq() > 100, "seq 1 would reuse the id gw-test-1"


def test_a_deleted_store_starts_fresh_above_every_seq_issued(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    stored(path, 100)
    delete_store(path)

    store, recovery = open_store(path, MAX)

    assert recovery is not None and recovery.reason is RecoveryReason.MISSING
    assert recovery.moved_to is None
    assert store.last_seq() > 100


def test_a_lost_reservation_file_is_made_again_from_the_store(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    stored(path, 100)
    Path(f"{path}.seq").unlink()

    store, recovery = open_store(path, MAX)
    assert recovery is None, "an intact store is no failure"
    assert store.last_seq() == 100, "no gap for a lost reservation"
    assert reserved_through(path) >= 100
    store.close()

    delete_store(path)  # and now the store goes too
    store, _ = open_store(path, MAX)
    assert store.last_seq() >= 100


def test_a_store_from_a_newer_gateway_is_left_alone_and_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    stored(path, 10)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")

    with pytest.raises(StorageUnavailable, match="newer than this gateway knows"):
        open_store(path, MAX)
    assert not list(tmp_path.glob("*.corrupt-*"))


# --- corruption met while running ----------------------------------------------------


@pytest.mark.asyncio
async def test_corruption_met_at_run_time_is_classified_and_recovered(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    thread = StoreThread(path, MAX)
    await thread.open()
    store = thread.store
    await thread.call(store.commit_readings, [reading(s) for s in range(1, 3001)])
    await thread.call(store.mark_delivered, range(1, 1001))
    before = {r.seq: r.payload for r in await thread.call(store.undelivered, 0, 5000)}
    lost = damage_middle_pages(path)  # under the running gateway

    generation = thread.generation
    # What the uplink reads meets the damage: the store is set aside, salvaged, and
    # the call answers from the fresh one.
    rows = await thread.call(store.undelivered, 0, 5000)
    recovery = thread.recovery
    assert recovery is not None and recovery.reason is RecoveryReason.CORRUPT
    assert "malformed" in recovery.detail and thread.generation > generation
    assert recovery.salvaged_readings == len(before) - len(lost)
    assert {r.seq: r.payload for r in rows} == {s: p for s, p in before.items() if s not in lost}
    await thread.call(thread.store.commit_readings, [reading(recovery.next_seq)])
    assert await thread.call(thread.store.last_seq) == recovery.next_seq > 3000
    await thread.close()


def test_the_periodic_integrity_check_finds_damaged_pages(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    stored(path, 3000, delivered=3000)
    store = Store(path, MAX)
    assert any(store.check_integrity_step(rows=500) for _ in range(100)), "a clean pass ends"
    store.close()
    damage_middle_pages(path, pages=1)  # delivered history only: nothing reads it

    store = Store(path, MAX)  # opened as it is, without the start-up check
    with pytest.raises(sqlite3.DatabaseError) as found:
        for _ in range(100):
            store.check_integrity_step(rows=500)
    assert classify(found.value) is StoreFault.CORRUPT


# --- eviction -------------------------------------------------------------------------


def test_eviction_just_over_the_limit_deletes_few_rows_and_never_alert_events(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "g.sqlite3", MAX)
    for first in range(1, 12_001, 1000):
        store.commit_readings([reading(s) for s in range(first, first + 1000)])
    store.save_alert_events([low_spo2_alert(1)])
    store.max_bytes = store.used_bytes() - 1  # the limit just crossed

    evicted = store.enforce_size_limit()

    assert 0 < evicted <= 50, f"{evicted} undelivered readings deleted for 1 byte"
    assert store.max_bytes * 0.99 <= store.used_bytes() <= store.max_bytes
    assert store.undelivered(0, 1)[0].seq == evicted + 1, "the oldest went"
    assert store.counters()["evicted_undelivered"] == evicted
    assert len(store.undelivered_alert_events(0, 10)) == 1 and len(store.active_alerts()) == 1

    store.mark_delivered(range(evicted + 1, 6001))
    store.max_bytes = store.used_bytes() - 1
    assert store.enforce_size_limit() == 0, "delivered readings go first"
    assert len(store.recent_readings(20_000)) >= 12_000 - evicted - 50
    assert store.undelivered(0, 1)[0].seq == 6001


# --- a full disk ----------------------------------------------------------------------


def use_up_inodes(disk: Path) -> list[Path]:
    """Make empty files until no file can be made (ENOSPC); remove one to make room."""
    made: list[Path] = []
    while True:
        try:
            (disk / f"inode-{len(made)}").touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            return made
        made.append(disk / f"inode-{len(made)}")


def test_a_full_disk_fails_a_commit_as_full_and_the_store_stays_consistent(
    small_disk: Path,
) -> None:
    path = small_disk / "g.sqlite3"
    store = Store(path, MAX)
    store.commit_readings([reading(s) for s in range(1, 101)])
    filler = fill(small_disk)
    # More than SQLite's page cache: it spills mid-transaction, and the failure rolls
    # the whole transaction back (a ROLLBACK after it fails, and must not hide why).
    batch = [reading(s) for s in range(101, 10_101)]

    with pytest.raises(sqlite3.Error) as failed:
        store.commit_readings(batch)

    assert classify(failed.value) is StoreFault.FULL, str(failed.value)
    assert store.last_seq() == 100
    assert [r.seq for r in store.undelivered(0, 2000)] == list(range(1, 101))
    filler.unlink()
    store.commit_readings(batch[:1000])  # the same seqs, once there is room
    assert store.last_seq() == 1100 and len(store.undelivered(0, 2000)) == 1100
    store.close()
    assert intact(path)


@pytest.mark.asyncio
async def test_on_a_full_disk_a_memory_store_stands_in_and_is_written_back(
    small_disk: Path,
) -> None:
    filler = fill(small_disk)
    thread = StoreThread(small_disk / "g.sqlite3", MAX)
    await thread.open()  # no store can be created on the disk
    assert thread.fault is not None and "disk is full" in thread.fault
    assert "\n" not in thread.fault
    await thread.call(thread.store.commit_readings, [reading(1), reading(2)])
    assert not await thread.write_back()  # still full

    filler.unlink()
    assert await thread.write_back()
    assert thread.fault is None
    await thread.call(thread.store.commit_readings, [reading(3)])
    await thread.close()
    with contextlib.closing(sqlite3.connect(small_disk / "g.sqlite3")) as conn:
        assert [seq for (seq,) in conn.execute("SELECT seq FROM readings")] == [1, 2, 3]


@pytest.mark.asyncio
async def test_readings_not_yet_synced_when_the_disk_fills_go_on_to_the_memory_store(
    small_disk: Path,
) -> None:
    path = small_disk / "g.sqlite3"
    thread = StoreThread(path, MAX, unsynced=True)
    await thread.open()
    await thread.call(thread.store.commit_readings, [reading(1), reading(2)])
    filler = fill(small_disk)
    await thread.call(thread.store.commit_readings, [reading(3)])
    await thread.call(thread.store.sync)  # the disk refuses: a memory store stands in

    assert thread.fault is not None and "disk is full" in thread.fault
    assert [r.seq for r in await thread.call(thread.store.undelivered, 0, 10)] == [1, 2, 3]
    filler.unlink()
    assert await thread.write_back()
    await thread.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert [seq for (seq,) in conn.execute("SELECT seq FROM readings")] == [1, 2, 3]


def test_out_of_inodes_the_reservation_is_renewed_in_place(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "size=32m,nr_inodes=16") as disk:
        path = disk / "g.sqlite3"
        store = Store(path, MAX)
        store.commit_readings([reading(1)])
        ceiling = reserved_through(path)
        use_up_inodes(disk)  # no new file, not even a temporary one

        for first in range(2, ceiling + 100, 1000):
            store.commit_readings([reading(s) for s in range(first, first + 1000)])

        assert store.last_seq() > ceiling
        assert reserved_through(path) >= store.last_seq()
        store.close()


def test_a_reservation_that_cannot_be_written_lets_commits_go_on_up_to_its_ceiling(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", "size=32m,nr_inodes=16") as disk:
        path = disk / "g.sqlite3"
        store = Store(path, MAX)
        store.commit_readings([reading(1)])
        ceiling = reserved_through(path)
        Path(f"{path}.seq").unlink()  # lost while running, and the disk is out of inodes
        room = use_up_inodes(disk)

        for first in range(2, ceiling + 1, 1000):  # within what was reserved: committed
            store.commit_readings([reading(s) for s in range(first, min(ceiling, first + 999) + 1)])
        assert store.last_seq() == ceiling
        with pytest.raises(OSError) as refused:  # beyond it: not without a reservation
            store.commit_readings([reading(ceiling + 1)])
        assert classify(refused.value) is StoreFault.FULL
        assert store.last_seq() == ceiling

        room[0].unlink()
        store.commit_readings([reading(ceiling + 1)])
        assert reserved_through(path) >= ceiling + 1 + RESERVE_BLOCK
        store.close()
