"""Reading what can still be read out of a damaged store file.

A damaged page makes every query that touches it fail, so a plain `SELECT` loses a
whole table to one bad page. Here each table is read in rowid order (`NOT INDEXED`: the
table's own b-tree, not an index that may be damaged too): forward until the first
error, then backward from the end down to the error, and the range in between is split
in halves and read the same way, down to single rowids. One bad page costs only its
rows. Rows that are read but do not hold what they should (a payload that is not JSON)
count as unreadable too.

What is worth keeping: undelivered readings and alert events (they must still reach the
server), alert rows (the active ones resume), device records and counters.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Rows handed over at a time (one insert transaction each).
_BATCH_ROWS = 5000
#: Failed range reads allowed per table; past it, what is left is counted unreadable.
#: Bounds the time spent on a table whose root page is gone (then every read fails).
_FAILED_READS_PER_TABLE = 100_000

Row = tuple[Any, ...]


def _json_in(column: int) -> Callable[[Row], bool]:
    def valid(row: Row) -> bool:
        try:
            json.loads(row[column])
        except (TypeError, ValueError):
            return False
        return True

    return valid


def _reading_valid(row: Row) -> bool:
    """The payload is the reading published: it must be JSON carrying the row's seq."""
    try:
        return bool(json.loads(row[5])["seq"] == row[0])
    except (TypeError, ValueError, KeyError):
        return False


@dataclass(frozen=True)
class TableSpec:
    table: str
    columns: tuple[str, ...]
    #: Only rows matching this are kept (e.g. undelivered ones).
    where: str
    valid: Callable[[Row], bool]


#: The tables salvaged, in the order they are copied; the first column of a spec with a
#: `seq` column is the rowid itself (INTEGER PRIMARY KEY).
SALVAGED = (
    TableSpec(
        "readings",
        ("seq", "device", "metric", "received_at", "delivered", "payload"),
        "delivered = 0",
        _reading_valid,
    ),
    TableSpec(
        "alert_events", ("seq", "alert_id", "delivered", "payload"), "delivered = 0", _json_in(3)
    ),
    TableSpec("alerts", ("id", "kind", "state", "updated_at", "payload"), "1", _json_in(4)),
    TableSpec("devices", ("id", "updated_at", "record"), "1", _json_in(2)),
    TableSpec("subjects", ("code", "updated_at", "record"), "1", _json_in(2)),
    TableSpec("bindings", ("device", "updated_at", "record"), "1", _json_in(2)),
    TableSpec("rule_state", ("name", "saved_at", "state"), "1", _json_in(2)),
    TableSpec("ledger", ("subject", "date", "payload"), "1", _json_in(2)),
    TableSpec("commands", ("id", "command", "at", "result"), "1", _json_in(3)),
    TableSpec("messages", ("seq", "topic", "delivered", "payload"), "delivered = 0", _json_in(3)),
    TableSpec("counters", ("name", "value"), "typeof(value) = 'integer'", lambda _: True),
)


@dataclass(frozen=True)
class SalvagedRows:
    spec: TableSpec
    rows: list[Row]


class Salvage:
    """Iterate `batches()`; afterwards `unreadable` says how many rowids (of rows
    present or not: an upper bound on the rows lost) could not be read, or None when
    the file could not be read at all."""

    def __init__(self, path: Path, rowid_hint: int) -> None:
        """`rowid_hint` bounds the rowids searched when a table's end cannot be read
        (the reservation ceiling: above every reading seq, and in practice every
        other table's rowids)."""
        self.path = path
        self.rowid_hint = rowid_hint
        self.unreadable: int | None = None
        #: The highest reading seq the old store shows (its `last_seq`, its last row).
        self.highest_seq = 0

    def batches(self) -> Iterator[SalvagedRows]:
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            try:
                conn.execute("PRAGMA query_only = 1")
                tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
            except sqlite3.DatabaseError:
                return
            self.unreadable = 0
            with contextlib.suppress(sqlite3.DatabaseError, TypeError, ValueError):
                (value,) = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                self.highest_seq = int(value)
            for spec in SALVAGED:
                if spec.table in tables:
                    yield from self._table(conn, spec)
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _table(self, conn: sqlite3.Connection, spec: TableSpec) -> Iterator[SalvagedRows]:
        try:
            (top,) = conn.execute(f"SELECT max(rowid) FROM {spec.table}").fetchone()
        except sqlite3.DatabaseError:
            top = None
        if spec.table == "readings" and isinstance(top, int):
            self.highest_seq = max(self.highest_seq, top)
        select = (
            f"SELECT rowid, {', '.join(spec.columns)} FROM {spec.table} NOT INDEXED"
            f" WHERE rowid BETWEEN ? AND ? AND ({spec.where}) ORDER BY rowid"
        )
        failed = 0
        pending = [(1, max(top or 0, self.rowid_hint))]
        while pending:
            lo, hi = pending.pop()
            done, last = yield from self._scan(conn, spec, select, lo, hi)
            if done:
                continue
            failed += 1
            after = lo - 1 if last is None else last
            _, first = yield from self._scan(conn, spec, select + " DESC", after + 1, hi)
            bad_lo, bad_hi = after + 1, hi if first is None else first - 1
            if bad_lo > bad_hi:
                continue
            if bad_lo == bad_hi or failed >= _FAILED_READS_PER_TABLE:
                self._lost(bad_hi - bad_lo + 1)
                continue
            mid = (bad_lo + bad_hi) // 2
            pending += [(mid + 1, bad_hi), (bad_lo, mid)]

    def _scan(
        self, conn: sqlite3.Connection, spec: TableSpec, select: str, lo: int, hi: int
    ) -> Generator[SalvagedRows, None, tuple[bool, int | None]]:
        """Yield the rows of `lo..hi` up to the first that cannot be read; return
        whether the range was read to its end, and the last rowid read."""
        rows: list[Row] = []
        last = None
        try:
            for row in conn.execute(select, (lo, hi)):
                last = row[0]
                rows.append(row)
                if len(rows) >= _BATCH_ROWS:
                    yield self._kept(spec, rows)
                    rows = []
            done = True
        except sqlite3.DatabaseError:
            done = False
        if rows:
            yield self._kept(spec, rows)
        return done, last

    def _kept(self, spec: TableSpec, rows: list[Row]) -> SalvagedRows:
        kept = [row[1:] for row in rows if spec.valid(row[1:])]
        self._lost(len(rows) - len(kept))
        return SalvagedRows(spec, kept)

    def _lost(self, n: int) -> None:
        self.unreadable = (self.unreadable or 0) + n
