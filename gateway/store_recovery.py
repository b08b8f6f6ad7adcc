"""Is the file at the store's path fit to be the store? If not, why, and where it goes.

Under `Restart=always` a store that fails to open at every start is a restart loop for
ever. So a file that cannot be the store (not a database, damaged pages, a directory,
emptied or deleted after seqs were issued) is moved aside, under a name that says when
(`<name>.corrupt-<UTC time>`, with its `-wal` and `-shm`), and a fresh store takes over
(`gateway.store.open_store`: what can be read is salvaged first). A store that cannot be
read because of the disk itself (full, I/O errors, permissions) is left where it is:
`StorageUnavailable`, and the service tries again later.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from gateway.store_faults import StorageUnavailable, StoreFault, classify
from gateway.store_seq import fsync_directory


class RecoveryReason(StrEnum):
    CORRUPT = "corrupt"  # not a database, damaged pages, or a call met corruption
    NOT_A_FILE = "not_a_file"  # the path is a directory (or another non-file)
    EMPTY = "empty"  # 0 bytes or no schema, although seqs had been issued
    MISSING = "missing"  # no file, although seqs had been issued


@dataclass(frozen=True)
class Problem:
    reason: RecoveryReason
    detail: str  # one line: what SQLite or the filesystem said


@dataclass(frozen=True)
class StoreRecovery:
    """A store set aside and replaced by a fresh one: for the log, the status and the
    technical `storage_failure` alert."""

    reason: RecoveryReason
    detail: str
    #: Where the old file is now; None when there was none.
    moved_to: Path | None
    #: Copied into the fresh store: undelivered readings and alert events (same seq,
    #: same payload), alert rows (active and cleared).
    salvaged_readings: int
    salvaged_alert_events: int
    salvaged_alerts: int
    #: Rowids (mostly reading seqs) that could not be read: an upper bound on the rows
    #: lost, some of which may have been delivered already. None: unknown (nothing
    #: could be read, or copying stopped early).
    lost: int | None
    #: The seq the fresh store assigns next: above every seq ever issued.
    next_seq: int
    at: datetime

    def summary(self) -> str:
        lost = "unknown" if self.lost is None else f"at most {self.lost}"
        where = f", moved to {self.moved_to.name}" if self.moved_to else ""
        return (
            f"store {self.reason.value} ({self.detail}){where}: fresh store from seq"
            f" {self.next_seq}; salvaged {self.salvaged_readings} readings,"
            f" {self.salvaged_alert_events} alert events, {self.salvaged_alerts} alerts;"
            f" rows lost: {lost}"
        )


def diagnose(path: Path, seqs_issued: bool) -> Problem | None:
    """Why the file at `path` cannot serve as the store, or None if it can (including
    no file yet on a new gateway). Runs `PRAGMA quick_check`, which reads every page:
    on a 512 MB store about 1 s with the file cached, 7 s from a cold disk (measured,
    see docs/architecture.md). Raises StorageUnavailable when the file cannot be read
    for reasons that are the disk's, not the file's."""
    try:
        if not path.exists():
            if seqs_issued:
                return Problem(RecoveryReason.MISSING, "no store file, but seqs were issued")
            return None
        if not path.is_file():
            return Problem(RecoveryReason.NOT_A_FILE, "the store path is not a file")
        if path.stat().st_size == 0:
            if seqs_issued:
                return Problem(RecoveryReason.EMPTY, "0 bytes, but seqs were issued")
            return None
    except OSError as exc:
        raise StorageUnavailable(f"cannot look at the store {path}: {exc}", classify(exc)) from exc
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if version == 0 and tables == 0:
                if seqs_issued:
                    return Problem(RecoveryReason.EMPTY, "no schema, but seqs were issued")
                return None
            problems = quick_check(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        fault = classify(exc)
        if fault is StoreFault.CORRUPT:
            return Problem(RecoveryReason.CORRUPT, str(exc))
        raise StorageUnavailable(f"cannot read the store {path}: {exc}", fault) from exc
    return None if problems is None else Problem(RecoveryReason.CORRUPT, problems)


def quick_check(conn: sqlite3.Connection, table: str | None = None) -> str | None:
    """`PRAGMA quick_check` (of one table and its indexes, or of everything): None if
    it passes, else its first problems in one line."""
    pragma = "PRAGMA quick_check" if table is None else f'PRAGMA quick_check("{table}")'
    answer = [str(row[0]) for row in conn.execute(pragma)]
    if answer == ["ok"]:
        return None
    lines = [line for text in answer for line in text.splitlines() if not line.startswith("***")]
    more = f" (+{len(lines) - 3} more)" if len(lines) > 3 else ""
    return f"quick_check{f'({table})' if table else ''}: " + "; ".join(lines[:3]) + more


def move_aside(path: Path, at: datetime) -> Path | None:
    """Rename `path` and its `-wal` and `-shm` to `<name>.corrupt-<UTC time>[-N]` (the
    `-wal` stays beside its database, so the copy opens as it was). The `-wal` goes
    first: a WAL left behind would be replayed into the next store of that name.
    Returns the new name of the main file, or None if there was none."""
    stamp = at.strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(_exists(Path(f"{target}{s}")) for s in ("", "-wal", "-shm")):
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    for suffix in ("-wal", "-shm", ""):
        source = Path(f"{path}{suffix}")
        if _exists(source):
            os.rename(source, f"{target}{suffix}")
    fsync_directory(path.parent)
    return target if _exists(target) else None


def remove_store_files(path: Path) -> None:
    """Delete a database file with its `-wal`, `-shm` and `-journal` (what is left of
    an interrupted recovery)."""
    for suffix in ("-wal", "-shm", "-journal", ""):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _exists(path: Path) -> bool:
    return os.path.lexists(path)
