"""What a store error means, so the service knows what to do about it.

SQLite and the filesystem report the same few situations in many shapes (result codes,
extended codes, errno values, messages). `classify` turns any of them into one
`StoreFault`; `StoreThread` then hands over to a memory store until the disk takes
writes (`FULL`, `IO_ERROR`, `READ_ONLY`), sets the store aside (`CORRUPT`), or lets the
error be a bug (`OTHER`).
"""

from __future__ import annotations

import errno
import sqlite3
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.store_recovery import StoreRecovery


class StoreFault(StrEnum):
    FULL = "full"  # SQLITE_FULL, ENOSPC, EDQUOT: writes wait for space
    IO_ERROR = "io_error"  # SQLITE_IOERR, SQLITE_CANTOPEN, EIO: the medium or the OS failed
    CORRUPT = "corrupt"  # SQLITE_CORRUPT, SQLITE_NOTADB: the file must be set aside
    READ_ONLY = "read_only"  # SQLITE_READONLY, EROFS, EACCES: nothing can be written
    OTHER = "other"  # anything else: a bug, not the disk


class StorageUnavailable(Exception):
    """No store can be opened or created (disk full, read-only, permissions, I/O
    errors): the service runs on without it and tries again. `str()` is one line."""

    def __init__(self, reason: str, fault: StoreFault) -> None:
        super().__init__(reason)
        self.fault = fault
        #: Set when a damaged store was set aside before the fresh one failed to open.
        self.recovery: StoreRecovery | None = None


class CorruptStore(Exception):
    """An integrity check found damage that SQLite did not raise as an error itself
    (`PRAGMA quick_check` answered with problems)."""


# Primary result codes (the low byte of an extended code), from sqlite3.h.
_SQLITE_CODES = {
    3: StoreFault.READ_ONLY,  # SQLITE_PERM
    8: StoreFault.READ_ONLY,  # SQLITE_READONLY
    10: StoreFault.IO_ERROR,  # SQLITE_IOERR
    11: StoreFault.CORRUPT,  # SQLITE_CORRUPT
    13: StoreFault.FULL,  # SQLITE_FULL
    14: StoreFault.IO_ERROR,  # SQLITE_CANTOPEN
    26: StoreFault.CORRUPT,  # SQLITE_NOTADB
}

# For errors that carry no code (raised before Python 3.11 added them, or re-raised).
_SQLITE_MESSAGES = (
    ("database or disk is full", StoreFault.FULL),
    ("disk i/o error", StoreFault.IO_ERROR),
    ("malformed", StoreFault.CORRUPT),
    ("file is not a database", StoreFault.CORRUPT),
    ("readonly database", StoreFault.READ_ONLY),
    ("unable to open database file", StoreFault.IO_ERROR),
)

_ERRNOS = {
    errno.ENOSPC: StoreFault.FULL,
    errno.EDQUOT: StoreFault.FULL,
    errno.EROFS: StoreFault.READ_ONLY,
    errno.EACCES: StoreFault.READ_ONLY,
    errno.EPERM: StoreFault.READ_ONLY,
}


def classify(exc: BaseException) -> StoreFault:
    """What a store call's exception means."""
    if isinstance(exc, StorageUnavailable):
        return exc.fault
    if isinstance(exc, CorruptStore):
        return StoreFault.CORRUPT
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_CODES:
            return _SQLITE_CODES[code & 0xFF]
        message = str(exc).lower()
        for text, fault in _SQLITE_MESSAGES:
            if text in message:
                return fault
        return StoreFault.OTHER
    if isinstance(exc, OSError):
        return _ERRNOS.get(exc.errno or 0, StoreFault.IO_ERROR)
    return StoreFault.OTHER
