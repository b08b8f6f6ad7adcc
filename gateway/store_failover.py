"""When the disk refuses writes (full, failing, read-only): a store in memory takes
over, and what it gathered is written back to the disk store once the disk takes writes
again.

Why a whole store in memory rather than a queue in the pipeline: everything downstream
of a commit keeps working unchanged while the disk is failing. Readings are numbered
and committed (to memory), the rules run and raise alerts, the uplink publishes alert
events and live readings within seconds, the page reads what it always reads. Only
durability is lost while it lasts (a crash loses what is in memory), and the status,
the log and a `storage_failure` alert say so.

The memory store is bounded (`StoreThread`'s `memory_max_bytes`): past it, its oldest
delivered readings go first, then its oldest undelivered routine readings (counted),
never alerts or alert events (the store's own eviction order). The disk store's backlog
waits on disk, untouched, and is sent once the disk is back.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.model import AlertState
from gateway.store_seq import LAST_SEQ, RESERVE_BLOCK

if TYPE_CHECKING:
    import sqlite_utils

    from gateway.store import Store


@dataclass(frozen=True, slots=True)
class Taken:
    """What the memory store was started with, so that writing back adds only what is
    new: the alert events in `from_disk` and the messages in `messages_from_disk` (by
    seq) are the disk store's own."""

    from_disk: frozenset[int]
    messages_from_disk: frozenset[int] = frozenset()


def take_over(memory: Store, disk: Store | None, disk_path: Path) -> Taken:
    """Give the fresh `memory` store what the gateway needs to go on from `disk`, when
    it can still be read: its numbering, active alerts, undelivered alert events and
    device records. Without it, `memory` numbers from above the seq reservation, as
    any new store does; and with no reservation either, from a block above the last
    seq the disk file shows (read without writing: its write-ahead log may hold a few
    more, which the block covers)."""
    if disk is None:
        if memory.seq_ceiling is None:
            memory.set_last_seq(peek_last_seq(disk_path) + RESERVE_BLOCK)
        return Taken(from_disk=frozenset())
    db = memory.db
    alerts = disk.db.query(
        "SELECT id, kind, state, updated_at, payload FROM alerts WHERE state != ?",
        [AlertState.CLEARED.value],
    )
    db.table("alerts").insert_all(alerts, pk="id")
    events = list(
        disk.db.query(
            "SELECT seq, alert_id, delivered, payload FROM alert_events WHERE delivered = 0"
        )
    )
    db.table("alert_events").insert_all(events, pk="seq")
    messages = list(
        disk.db.query("SELECT seq, topic, delivered, payload FROM messages WHERE delivered = 0")
    )
    db.table("messages").insert_all(messages, pk="seq")
    for table in _COPIED_WHOLE:
        db.table(table).insert_all(disk.db.query(f"SELECT * FROM {table}"))
    memory.set_last_seq(disk.last_seq())
    return Taken(
        from_disk=frozenset(e["seq"] for e in events),
        messages_from_disk=frozenset(m["seq"] for m in messages),
    )


#: Small tables the memory store starts with a copy of and writes back whole.
_COPIED_WHOLE = ("devices", "subjects", "bindings", "rule_state", "ledger", "commands")
_PRIMARY_KEYS: dict[str, str | tuple[str, ...]] = {
    "devices": "id",
    "subjects": "code",
    "bindings": "device",
    "rule_state": "name",
    "ledger": ("subject", "date"),
    "commands": "id",
}


def peek_last_seq(path: Path) -> int:
    """The last seq in the store file at `path`, read as immutable (no -shm or -wal
    is made, so this works on a full disk); 0 when it cannot be read."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as conn:
            return int(conn.execute(LAST_SEQ).fetchone()[0])
    except sqlite3.Error:
        return 0


def write_back(memory: Store, disk: Store, taken: Taken) -> int:
    """Add what `memory` gathered to `disk` in one transaction (it rolls back whole if
    the disk still refuses). Returns the readings written back."""
    src, dst = memory.db, disk.db
    readings = list(
        src.query("SELECT seq, device, metric, received_at, delivered, payload FROM readings")
    )
    dst.execute("BEGIN IMMEDIATE")
    try:
        dst.table("readings").insert_all(readings, pk="seq", replace=True, batch_size=1000)
        _write_back_new(
            dst, src, "alert_events", ("alert_id", "delivered", "payload"), taken.from_disk
        )
        _write_back_new(
            dst, src, "messages", ("topic", "delivered", "payload"), taken.messages_from_disk
        )
        dst.table("alerts").upsert_all(src.query("SELECT * FROM alerts"), pk="id")
        for table in _COPIED_WHOLE:
            dst.table(table).upsert_all(
                src.query(f"SELECT * FROM {table}"), pk=_PRIMARY_KEYS[table]
            )
        for name, value in src.execute("SELECT name, value FROM counters"):
            dst.execute(
                "INSERT INTO counters(name, value) VALUES(?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                [name, value],
            )
        dst.table("audit").insert_all(
            {k: v for k, v in row.items() if k != "seq"}
            for row in src.query("SELECT * FROM audit ORDER BY seq")
        )
        disk.set_last_seq(max(disk.last_seq(), memory.last_seq()))
        dst.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # must not hide why the write failed
            dst.execute("ROLLBACK")
        raise
    return len(readings)


def _write_back_new(
    dst: sqlite_utils.Database,
    src: sqlite_utils.Database,
    table: str,
    columns: tuple[str, ...],
    from_disk: frozenset[int],
) -> None:
    """Queued rows (alert events, messages): those the disk had get only their
    delivered mark; new ones are added (numbered by the disk store)."""
    for row in src.query(f"SELECT seq, {', '.join(columns)} FROM {table}"):
        if row["seq"] in from_disk:
            if row["delivered"]:
                dst.execute(f"UPDATE {table} SET delivered = 1 WHERE seq = ?", [row["seq"]])
        else:
            dst.table(table).insert({k: row[k] for k in columns})
