"""The reading-seq high-water mark, kept beside the store in `<store>.seq`.

Reading ids are `<gateway>-<seq>` and must never be reused, even when the store file is
lost (found corrupt and set aside, emptied, deleted). So seqs are reserved ahead, in
blocks of `RESERVE_BLOCK`, in a small file of their own: no seq above the reserved
ceiling is ever committed, and a store that starts empty starts above it.

The file is replaced atomically (temporary file, fsync, rename, fsync of the directory).
On a full disk, where no new file can be made, the record is overwritten in place: it
always has the same size, so that allocates nothing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

#: Seqs reserved at a time. A renewal costs two fsyncs (about once a minute at 180
#: readings/s); after a store is lost, the next seq jumps by at most this much.
RESERVE_BLOCK = 10_000
#: Renew when fewer than this many reserved seqs are left, so that a renewal that
#: fails (disk full, I/O error) leaves room to go on committing while it is retried.
RENEW_MARGIN = RESERVE_BLOCK // 2
#: The highest seq a store has issued: its highest reading kept, or above it what its
#: `meta` table records (after a jump, or readings evicted).
LAST_SEQ = (
    "SELECT max(coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'last_seq'), 0),"
    " coalesce((SELECT max(seq) FROM readings), 0))"
)
#: Every record is padded to this size (see the module's docstring).
_RECORD_BYTES = 80


def fsync_directory(directory: Path) -> None:
    """Make renames and new files in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SeqReservation:
    """The seqs reserved for the store at `store_path`, and their renewal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: The highest seq any store here may have committed; None: no (readable) file.
        self.ceiling: int | None = None
        #: Seqs up to the ceiling may have been issued without reaching the store (a
        #: store in memory numbered them): the next store must start above the ceiling.
        self.outside_store = False
        self._renew_failing = False
        self._read()

    def cover(self, max_seq: int) -> None:
        """Make sure seqs up to `max_seq` are reserved before they are committed,
        renewing ahead when few are left. A failed renewal is logged and tolerated
        while `max_seq` is still under the ceiling; beyond it the OSError is raised
        (classified like any store error), so the commit is retried later."""
        ceiling = self.ceiling or 0
        if max_seq <= ceiling - RENEW_MARGIN:
            return
        try:
            self.renew(max_seq)
        except OSError as exc:
            if max_seq > ceiling:
                raise
            if not self._renew_failing:
                log.warning(
                    "seq reservation not renewed; committing within the reserved ceiling",
                    extra={"error": str(exc), "ceiling": ceiling, "seq": max_seq},
                )
            self._renew_failing = True
            return
        if self._renew_failing:
            log.info("seq reservation renewed again", extra={"ceiling": self.ceiling})
            self._renew_failing = False

    def renew(self, max_seq: int, *, outside_store: bool | None = None) -> None:
        """Reserve a new block above `max_seq` (never below the current ceiling);
        `outside_store` None keeps the flag as it is. The file is read first: another
        store (one in memory) may have renewed it meanwhile."""
        self._read()
        ceiling = max(max_seq + RESERVE_BLOCK, self.ceiling or 0)
        outside = self.outside_store if outside_store is None else outside_store
        self._write(ceiling, outside)
        self.ceiling, self.outside_store = ceiling, outside

    def _read(self) -> None:
        try:
            record = json.loads(self.path.read_text(encoding="ascii"))
            ceiling, outside = record["reserved_through"], record["outside_store"]
            if not (isinstance(ceiling, int) and ceiling >= 0 and isinstance(outside, bool)):
                raise ValueError(f"not a reservation: {record!r}")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:  # garbage: as if missing
            log.error(
                "seq reservation unreadable", extra={"path": str(self.path), "error": str(exc)}
            )
            return
        self.ceiling, self.outside_store = ceiling, outside

    def _write(self, ceiling: int, outside_store: bool) -> None:
        record = json.dumps({"reserved_through": ceiling, "outside_store": outside_store})
        data = record.ljust(_RECORD_BYTES - 1).encode("ascii") + b"\n"
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            _write_synced(tmp, data, os.O_CREAT | os.O_TRUNC)
            os.replace(tmp, self.path)
            fsync_directory(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.path.is_file():
                raise
            _write_synced(self.path, data, 0)  # full disk: in place, allocating nothing


def _write_synced(path: Path, data: bytes, flags: int) -> None:
    fd = os.open(path, os.O_WRONLY | flags, 0o644)
    try:
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        os.fsync(fd)
    finally:
        os.close(fd)
