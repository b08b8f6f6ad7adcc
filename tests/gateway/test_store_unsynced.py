"""Readings kept unsynced (`store.sync_interval_s`): none lost to a killed process, at
most the unsynced ones to a power cut (and their ids never reused), written to SQLite
with whatever transaction comes first. Real SQLite files, real killed processes."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store import Store
from gateway.store_unsynced import UnsyncedFile, UnsyncedJournal, UnsyncedRow, unsynced_paths
from tests.conftest import REPO
from tests.gateway.helpers import low_spo2_alert, reading

MAX = 10**9


def stored_seqs(path: Path) -> list[int]:
    """The readings in the SQLite file itself, as another program reads them."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return [seq for (seq,) in conn.execute("SELECT seq FROM readings ORDER BY seq")]


def killed_after(path: Path, boot: str, steps: str) -> None:
    """Run `steps` on `store = Store(path, unsynced=True, boot=boot)` in a process of
    its own, which is then killed with SIGKILL (nothing of the store is closed)."""
    script = (
        textwrap.dedent(
            f"""
        import os, signal
        from pathlib import Path
        from gateway.store import Store
        from tests.gateway.helpers import reading
        store = Store(Path({str(path)!r}), {MAX}, unsynced=True, boot={boot!r})
        """
        )
        + textwrap.dedent(steps)
        + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def row(seq: int) -> UnsyncedRow:
    """Reading `seq` as the store keeps it unsynced."""
    return UnsyncedRow(*reading(seq).row())


def left_unsynced(path: Path) -> int:
    """Bytes in the store's files of unsynced readings."""
    return sum(p.stat().st_size for p in unsynced_paths(path) if p.exists())


def reserved_through(path: Path) -> int:
    return int(json.loads(Path(f"{path}.seq").read_text())["reserved_through"])


def test_a_killed_process_loses_no_accepted_reading(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    killed_after(
        path,
        "boot-a",
        """
        store.commit_readings([reading(s) for s in range(1, 6)])
        store.sync()
        store.commit_readings([reading(s) for s in range(6, 51)])
        store.mark_delivered(range(6, 11))
        """,
    )
    assert stored_seqs(path) == [1, 2, 3, 4, 5]  # the rest never reached SQLite

    store = Store(path, MAX, unsynced=True, boot="boot-a")
    assert stored_seqs(path) == list(range(1, 51))
    assert store.last_seq() == 50
    # Marks of unsynced readings died with the process: those readings go again (same id).
    assert [r.seq for r in store.undelivered(0, 100)] == list(range(1, 51))
    assert left_unsynced(path) == 0
    store.close()


def test_after_a_power_cut_numbering_goes_on_above_every_reserved_seq(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    killed_after(
        path,
        "boot-a",
        """
        store.commit_readings([reading(s) for s in range(1, 6)])
        store.sync()
        store.commit_readings([reading(s) for s in range(6, 10)])  # published, maybe
        """,
    )
    for lost in unsynced_paths(path):  # the page cache did not survive the cut
        lost.write_bytes(b"")
    ceiling = reserved_through(path)

    store = Store(path, MAX, unsynced=True, boot="boot-b")
    assert stored_seqs(path) == [1, 2, 3, 4, 5]  # at most the unsynced ones are lost
    assert store.last_seq() == ceiling  # 6..9 may have been sent: never reused
    store.close()


def test_a_crash_in_the_same_boot_or_a_clean_stop_makes_no_jump(tmp_path: Path) -> None:
    crashed = tmp_path / "crashed.sqlite3"
    killed_after(crashed, "boot-a", "store.commit_readings([reading(s) for s in range(1, 10)])")
    store = Store(crashed, MAX, unsynced=True, boot="boot-a")
    assert store.last_seq() == 9
    store.close()

    stopped = tmp_path / "stopped.sqlite3"
    store = Store(stopped, MAX, unsynced=True, boot="boot-a")
    store.commit_readings([reading(s) for s in range(1, 10)])
    store.close()  # writes them: then a reboot is no power cut
    assert stored_seqs(stopped) == list(range(1, 10))
    store = Store(stopped, MAX, unsynced=True, boot="boot-b")
    assert store.last_seq() == 9
    store.close()


def test_readings_acknowledged_before_the_sync_are_written_delivered(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    store = Store(path, MAX, unsynced=True)
    assert store.commit_readings([reading(s) for s in range(1, 11)]) == 10
    store.mark_delivered(range(1, 8))
    assert [r.seq for r in store.undelivered(0, 100)] == [8, 9, 10]
    assert [r["seq"] for r in store.recent_readings(2)] == [10, 9]
    assert store.queue_stats().undelivered == 3
    assert stored_seqs(path) == []

    store.sync()

    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT seq, delivered FROM readings ORDER BY seq").fetchall()
        assert rows == [(s, int(s < 8)) for s in range(1, 11)]
        indexed = conn.execute(
            "SELECT seq FROM readings INDEXED BY readings_undelivered WHERE delivered = 0"
        ).fetchall()
    assert indexed == [(8,), (9,), (10,)]
    assert [r.seq for r in store.undelivered(0, 100)] == [8, 9, 10]
    store.close()


def test_an_alert_takes_the_readings_before_it_to_disk(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    store = Store(path, MAX, unsynced=True)
    store.commit_readings([reading(s) for s in range(1, 4)])
    store.save_alert_events([low_spo2_alert()])
    assert stored_seqs(path) == [1, 2, 3]
    assert left_unsynced(path) == 0
    store.close()


def test_a_retried_batch_is_kept_once(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    store = Store(path, MAX, unsynced=True)
    batch = [reading(s) for s in range(1, 4)]
    store.commit_readings(batch)
    assert store.commit_readings(batch) == 3
    store.close()
    assert stored_seqs(path) == [1, 2, 3]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=300), cut=st.integers(min_value=0, max_value=400))
def test_a_torn_or_damaged_file_keeps_its_whole_lines(
    tmp_path: Path, garbage: bytes, cut: int
) -> None:
    path = tmp_path / "fuzz.sqlite3"
    with contextlib.suppress(FileNotFoundError):
        unsynced_paths(path)[0].unlink()
    file = UnsyncedFile(unsynced_paths(path)[0])
    file.append([row(s) for s in range(1, 4)])
    file.close()
    torn = row(4).line()
    with unsynced_paths(path)[0].open("ab") as f:
        f.write(torn[: cut % len(torn)] + garbage)

    rows = UnsyncedFile(unsynced_paths(path)[0]).read()

    assert [r.seq for r in rows][:3] == [1, 2, 3]
    assert all(r.payload.startswith("{") for r in rows[:3])


def test_marks_of_stored_readings_wait_for_the_next_write_and_count_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "g.sqlite3"
    store = Store(path, MAX, unsynced=True)
    store.commit_readings([reading(s) for s in range(1, 4)])
    store.sync()  # 1..3 in SQLite, undelivered
    store.commit_readings([reading(4)])
    store.mark_delivered([2, 3, 4])

    assert [r.seq for r in store.undelivered(0, 1)] == [1]
    assert [r.seq for r in store.undelivered(1, 10)] == []
    assert store.queue_stats().undelivered == 1
    assert [r["delivered"] for r in store.recent_readings(4)] == [True, True, True, False]
    with contextlib.closing(sqlite3.connect(path)) as conn:  # not written on their own
        assert conn.execute("SELECT count(*) FROM readings WHERE delivered = 1").fetchone() == (0,)

    store.sync()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        delivered = conn.execute("SELECT seq FROM readings WHERE delivered = 1").fetchall()
    assert delivered == [(2,), (3,), (4,)]
    store.close()


def test_while_the_log_is_fsynced_new_readings_go_to_the_other_file(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    store = Store(path, MAX, unsynced=True)  # makes the write-ahead log the fsync needs
    journal = UnsyncedJournal(tmp_path / "g.sqlite3")
    journal.append([row(1), row(2)])
    journal.fsync_in_background()  # 1 and 2 are in SQLite (not yet synced)
    journal.append([row(3)])
    journal.wait()

    first, second = unsynced_paths(path)
    assert first.stat().st_size == 0  # synced: no longer needed
    assert [r.seq for r in journal.read()] == [3]
    journal.written_synced()
    assert second.stat().st_size == 0
    journal.close()
    store.close()
