"""The readings committed since the store's last sync, where a killed process cannot
lose them: `<store>.unsynced`, beside the store (gateway/store.py, group commit).

With `store.sync_interval_s` set, the store's writes join one open SQLite transaction
that is committed, with one sync, at most that long after it began. SQLite writes whole
pages: a commit per notification wrote ~14 KB per 215-byte reading (each commit's new
copies of the table's last page, its indexes' pages and the header). Until the group
is committed, its readings live in SQLite's cache, in the process's memory; so each
batch is also written here, with `os.pwrite` into the page cache: that survives the
process being killed (SIGKILL, a crash, the watchdog), not a power cut, and is never
synced (what a power cut may cost is the sync interval: docs/mqtt-contract.md). When
the group has been committed this file is written again from its start, so its few
pages stay in the page cache (rewritten, not reallocated) and reach the disk about once
every 30 s (the kernel's `dirty_expire_centisecs`).

At the next start, what it holds above the store's last seq goes into the store before
anything else; so do the readings of a group SQLite rolled back (a failed commit).

A record: magic, body length, CRC-32 of the body, then the body: the readings' stored
JSON, one per line. Each write ends with an empty header, which the next write
overwrites: reading stops there, at a record cut off by a kill (its CRC fails), or at
the end of the file. Own code rather than a library: these few lines of framing are
all it needs.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

_HEADER = struct.Struct(">4sII")
_MAGIC = b"BGU1"
_END = bytes(_HEADER.size)


def unsynced_path(store_path: Path) -> Path:
    """Where the unsynced readings of the store at `store_path` are kept."""
    return store_path.with_name(store_path.name + ".unsynced")


class UnsyncedLog:
    """The file of readings not yet synced into the store (see the module's docstring).
    Raises OSError when it cannot be opened or written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        #: Where the next record goes: the bytes held since the last rewind.
        self.size = 0

    def close(self) -> None:
        os.close(self._fd)

    def append(self, payloads: Sequence[str]) -> None:
        """Keep the readings' stored JSON (one line each: compact JSON has no newline)."""
        body = "\n".join(payloads).encode()
        record = _HEADER.pack(_MAGIC, len(body), zlib.crc32(body)) + body
        self._write(record + _END, self.size)
        self.size += len(record)

    def rewind(self) -> None:
        """Everything held is in the store now: start again from the beginning."""
        if self.size:
            self._write(_END, 0)
            self.size = 0

    def read(self) -> list[str]:
        """The readings held (their stored JSON), oldest first: the records from the
        start of the file up to the first that is not whole."""
        data = self._read_all()
        payloads: list[str] = []
        at = 0
        while at + _HEADER.size <= len(data):
            magic, length, crc = _HEADER.unpack_from(data, at)
            body = data[at + _HEADER.size : at + _HEADER.size + length]
            if magic != _MAGIC or len(body) != length or zlib.crc32(body) != crc:
                break
            payloads.extend(body.decode().split("\n"))
            at += _HEADER.size + length
        return payloads

    def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        at = 0
        while chunk := os.pread(self._fd, 1 << 20, at):
            chunks.append(chunk)
            at += len(chunk)
        return b"".join(chunks)

    def _write(self, data: bytes, at: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, at)
            view, at = view[written:], at + written
