"""Readings accepted but not yet in SQLite: kept in memory and appended to
`<store>.unsynced`, so that a process crash (SIGKILL, OOM kill, watchdog) loses none.

Why our own file and not one SQLite transaction per batch: every SQLite commit writes
whole 4 KB pages to the write-ahead log (the readings' leaf page, each index's), and a
checkpoint writes them once more, so committing the few readings of a household as they
come costs ~14 KB of SD-card writes per ~215-byte reading. Here they are gathered for
`store.sync_interval_s` and written to SQLite in one transaction. Meanwhile they live in
this file, written with plain `write(2)`: a killed process leaves its writes in the
kernel's page cache, and the file is emptied (`ftruncate`) after each transaction,
within a second, long before the kernel would write its pages out (~30 s), so it
costs the card next to nothing. A power cut may lose what the file held: at most
`sync_interval_s` of readings, as the contract says.

Each line is one reading as JSON: `[seq, device, metric, received_at, payload]`. A
line torn by a power cut is skipped when read back.

The periodic write to SQLite is committed without an fsync and the write-ahead log is
then fsynced on a thread of its own (`UnsyncedJournal.fsync_in_background`), so the
10-20 ms an fsync takes never holds up the store thread, and with it the next live
reading. Meanwhile new readings go to a second file (`<store>.unsynced-1`): the first
is emptied only once the fsync made what it held durable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UnsyncedRow:
    """A reading as the `readings` table holds it, waiting to be written there."""

    seq: int
    device: str
    metric: str
    received_at: str
    payload: str
    #: PUBACK'd before it reached SQLite: it is written there as delivered.
    delivered: bool = field(default=False)

    def line(self) -> bytes:
        """One JSON array a line (orjson: a seventh of what `json` took, per reading)."""
        row = [self.seq, self.device, self.metric, self.received_at, self.payload]
        return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)


def unsynced_paths(store_path: Path) -> tuple[Path, Path]:
    """Where the readings not yet in the store at `store_path` are kept (in turn)."""
    name = store_path.name + ".unsynced"
    return store_path.with_name(name), store_path.with_name(name + "-1")


class UnsyncedFile:
    """The append-only file of one store (opened on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        #: Bytes appended since it was last emptied (0: nothing to empty).
        self._size = 0

    def append(self, rows: list[UnsyncedRow]) -> None:
        """Raises OSError (a full disk: ENOSPC) with part of the lines written at most;
        a retry appends them again, and reading back keeps one of each seq."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._size = os.fstat(self._fd).st_size
        data = b"".join(row.line() for row in rows)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._size += written
            view = view[written:]

    def empty(self) -> None:
        """Everything in it is in SQLite now. A failure is logged, not raised: the
        lines are read back (and ignored, being in the store) at the next start."""
        if self._size == 0:
            return
        try:
            if self._fd is None:
                os.truncate(self.path, 0)
            else:
                os.ftruncate(self._fd, 0)
            self._size = 0
        except OSError as exc:
            log.warning("unsynced readings file not emptied", extra={"error": str(exc)})

    def read(self) -> list[UnsyncedRow]:
        """What a previous run left (a crash), oldest first; torn or damaged lines are
        skipped and counted in the log."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        self._size = len(data)
        rows: dict[int, UnsyncedRow] = {}
        damaged = 0
        for line in data.splitlines():
            try:
                seq, device, metric, received_at, payload = json.loads(line)
                texts = (device, metric, received_at, payload)
                if not (
                    isinstance(seq, int) and seq > 0 and all(isinstance(t, str) for t in texts)
                ):
                    raise ValueError(line)
                rows.setdefault(seq, UnsyncedRow(seq, device, metric, received_at, payload))
            except (ValueError, TypeError):
                damaged += 1
        if damaged:
            log.warning(
                "unsynced readings file: damaged lines skipped",
                extra={"path": str(self.path), "lines": damaged},
            )
        return [rows[seq] for seq in sorted(rows)]

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class UnsyncedJournal:
    """The two files of one store, and the fsync of its write-ahead log that lets one
    of them be emptied."""

    def __init__(self, store_path: Path) -> None:
        self._files = tuple(UnsyncedFile(p) for p in unsynced_paths(store_path))
        self._current = 0
        self._wal = Path(f"{store_path}-wal")
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-fsync")
        self._fsync: Future[None] | None = None

    def append(self, rows: list[UnsyncedRow]) -> None:
        self._files[self._current].append(rows)

    def read(self) -> list[UnsyncedRow]:
        """What a previous run left in either file, oldest first, once each."""
        rows = {row.seq: row for file in reversed(self._files) for row in file.read()}
        return [rows[seq] for seq in sorted(rows)]

    @property
    def fsync_running(self) -> bool:
        return self._fsync is not None and not self._fsync.done()

    def written_synced(self) -> None:
        """A synced commit wrote everything appended: empty the file in use (and the
        other, unless its fsync is still under way: that empties it)."""
        self._files[self._current].empty()
        if not self.fsync_running:
            self._files[1 - self._current].empty()

    def fsync_in_background(self) -> None:
        """A commit without fsync wrote everything appended: new lines go to the other
        file, and this one is emptied once the write-ahead log is fsynced. Only when no
        fsync is running (`fsync_running`)."""
        written = self._files[self._current]
        self._current = 1 - self._current
        self._fsync = self._syncer.submit(self._fsync_then_empty, written)

    def _fsync_then_empty(self, written: UnsyncedFile) -> None:
        try:
            fd = os.open(self._wal, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # the file keeps them: a crash replays them
            log.error("write-ahead log not synced", extra={"error": str(exc)})
            return
        written.empty()

    def wait(self) -> None:
        """Until the fsync under way (if any) is done."""
        if self._fsync is not None:
            self._fsync.result()

    def close(self) -> None:
        self.wait()
        self._syncer.shutdown(wait=True)
        for file in self._files:
            file.close()
