"""The local store: one SQLite file (WAL) holding readings, the outbox, alerts,
devices, counters and an audit trail.

Every method runs on one dedicated thread (see `StoreThread`), so a slow disk never
stalls the event loop and SQLite's single-writer rule holds by construction.

The outbox is the readings table itself: `delivered = 0` rows are waiting for a PUBACK.
A partial index on those rows keeps "oldest undelivered" fast however large the
delivered history grows (measured for the project: ~30x faster, and not quadratic).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlite_utils

from gateway.model import Alert, AlertState, Reading

P = ParamSpec("P")
T = TypeVar("T")


def _v1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("readings").create(
        {
            "seq": int,
            "device": str,
            "metric": str,
            "received_at": str,
            "delivered": int,
            "payload": str,
        },
        pk="seq",
        defaults={"delivered": 0},
        not_null={"device", "metric", "received_at", "delivered", "payload"},
    )
    db.execute("CREATE INDEX readings_undelivered ON readings(seq) WHERE delivered = 0")
    db.table("alerts").create(
        {"id": str, "kind": str, "state": str, "updated_at": str, "payload": str}, pk="id"
    )
    db.table("alert_events").create(
        {"seq": int, "alert_id": str, "delivered": int, "payload": str},
        pk="seq",
        defaults={"delivered": 0},
    )
    db.execute("CREATE INDEX alert_events_undelivered ON alert_events(seq) WHERE delivered = 0")
    db.table("devices").create({"id": str, "updated_at": str, "record": str}, pk="id")
    db.table("counters").create({"name": str, "value": int}, pk="name")
    db.table("audit").create({"seq": int, "at": str, "action": str, "detail": str}, pk="seq")


#: Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_v1,)


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    device: str
    #: The JSON text as stored: published as is, never decoded on the way out.
    payload: str


@dataclass(frozen=True)
class QueueStats:
    undelivered: int
    oldest_undelivered_at: str | None
    undelivered_alert_events: int
    db_bytes: int
    evicted_undelivered: int


class Store:
    """Synchronous store. Use from a single thread (the `StoreThread`)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._conn = sqlite3.connect(path, isolation_level=None)
        self.db = sqlite_utils.Database(self._conn)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed batch survives a power cut, not only a crash. Batching
        # keeps this at one fsync per batch, not per reading.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def close(self) -> None:
        self._conn.close()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path}: schema version {version} is newer than this gateway knows"
                f" ({len(MIGRATIONS)}); refusing to touch it"
            )
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction():
                migration(self.db)
                self._conn.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # --- readings and the outbox ---------------------------------------------------

    def last_seq(self) -> int:
        """The highest sequence number ever assigned (kept in meta: pruning never
        makes it go backwards)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(row[0]) if row else 0

    def commit_readings(self, readings: Sequence[Reading]) -> None:
        """Write a batch in one transaction. When this returns the readings are durable."""
        if not readings:
            return
        payloads = [r.payload() for r in readings]
        rows = [
            {
                "seq": p["seq"],
                "device": p["device"],
                "metric": p["metric"],
                "received_at": p["received_at"],
                "delivered": 0,
                "payload": json.dumps(p, separators=(",", ":")),
            }
            for p in payloads
        ]
        with self._transaction():
            self.db.table("readings").insert_all(rows, batch_size=1000)
            self._conn.execute(
                "INSERT INTO meta(key, value) VALUES('last_seq', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(max(r.seq for r in readings)),),
            )

    def undelivered(
        self, after_seq: int, limit: int, up_to_seq: int | None = None
    ) -> list[OutboxRow]:
        """Undelivered readings with `after_seq < seq [<= up_to_seq]`, oldest first."""
        sql = "SELECT seq, device, payload FROM readings WHERE delivered = 0 AND seq > ?"
        args: list[int] = [after_seq]
        if up_to_seq is not None:
            sql += " AND seq <= ?"
            args.append(up_to_seq)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        return [OutboxRow(*row) for row in self._conn.execute(sql, args)]

    def mark_delivered(self, seqs: Iterable[int]) -> None:
        self._mark_delivered("readings", seqs)

    def recent_readings(self, limit: int, device: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT payload, delivered FROM readings"
        args: list[Any] = []
        if device:
            sql += " WHERE device = ?"
            args.append(device)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [
            {**json.loads(payload), "delivered": bool(delivered)}
            for payload, delivered in self._conn.execute(sql, args)
        ]

    # --- alerts ----------------------------------------------------------------------

    def save_alert_events(self, alerts: Sequence[Alert]) -> None:
        """Persist each alert's new state and queue one event per change for `alerts`."""
        if not alerts:
            return
        with self._transaction():
            for alert in alerts:
                payload = json.dumps(alert.payload(), separators=(",", ":"))
                self.db.table("alerts").upsert(
                    {
                        "id": alert.id,
                        "kind": alert.kind.value,
                        "state": alert.state.value,
                        "updated_at": alert.updated_at.isoformat(),
                        "payload": payload,
                    },
                    pk="id",
                )
                self.db.table("alert_events").insert(
                    {"alert_id": alert.id, "delivered": 0, "payload": payload}
                )

    def active_alerts(self) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT payload FROM alerts WHERE state != ? ORDER BY updated_at",
            (AlertState.CLEARED.value,),
        )
        return [json.loads(payload) for (payload,) in rows]

    def undelivered_alert_events(self, after_seq: int, limit: int) -> list[OutboxRow]:
        rows = self._conn.execute(
            "SELECT seq, alert_id, payload FROM alert_events"
            " WHERE delivered = 0 AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [OutboxRow(*row) for row in rows]

    def mark_alert_events_delivered(self, seqs: Iterable[int]) -> None:
        self._mark_delivered("alert_events", seqs)

    def _mark_delivered(self, table: str, seqs: Iterable[int]) -> None:
        """Without an fsync of its own: a mark lost in a power cut only means the
        reading is sent once more (same id), and the next readings commit (FULL)
        makes it durable anyway."""
        rows = [(s,) for s in seqs]
        if rows:
            self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._transaction():
                    self._conn.executemany(f"UPDATE {table} SET delivered = 1 WHERE seq = ?", rows)
            finally:
                self._conn.execute("PRAGMA synchronous=FULL")

    # --- devices, counters, audit ----------------------------------------------------

    def save_devices(self, records: Sequence[dict[str, Any]]) -> None:
        now = datetime.now(UTC).isoformat()
        with self._transaction():
            self.db.table("devices").upsert_all(
                [{"id": r["id"], "updated_at": now, "record": json.dumps(r)} for r in records],
                pk="id",
            )

    def devices(self) -> list[dict[str, Any]]:
        return [
            json.loads(record)
            for (record,) in self._conn.execute("SELECT record FROM devices ORDER BY id")
        ]

    def add_counters(self, increments: dict[str, int]) -> None:
        if not increments:
            return
        with self._transaction():
            self._conn.executemany(
                "INSERT INTO counters(name, value) VALUES(?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                increments.items(),
            )

    def counters(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT name, value FROM counters ORDER BY name"))

    def audit(self, action: str, detail: dict[str, Any]) -> None:
        with self._transaction():
            self.db.table("audit").insert(
                {
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "action": action,
                    "detail": json.dumps(detail, sort_keys=True),
                }
            )

    # --- size and health -------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes in use by data (deleted rows' pages are free for reuse)."""
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def enforce_size_limit(self, chunk: int = 5000) -> int:
        """Keep the data under `max_bytes`: delivered readings go first (oldest first);
        then undelivered routine readings, each one counted as `evicted_undelivered`.
        Alerts and alert events are never evicted. Returns readings evicted undelivered.
        """
        evicted = 0
        for delivered in (1, 0):
            while self.used_bytes() > self.max_bytes:
                with self._transaction():
                    cur = self._conn.execute(
                        "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings"
                        " WHERE delivered = ? ORDER BY seq LIMIT ?)",
                        (delivered, chunk),
                    )
                if cur.rowcount == 0:
                    break
                if not delivered:
                    evicted += cur.rowcount
        if evicted:
            self.add_counters({"evicted_undelivered": evicted})
        return evicted

    def queue_stats(self) -> QueueStats:
        count, oldest = self._conn.execute(
            "SELECT count(*), (SELECT received_at FROM readings WHERE delivered = 0"
            " ORDER BY seq LIMIT 1) FROM readings WHERE delivered = 0"
        ).fetchone()
        (events,) = self._conn.execute(
            "SELECT count(*) FROM alert_events WHERE delivered = 0"
        ).fetchone()
        return QueueStats(
            undelivered=int(count),
            oldest_undelivered_at=oldest,
            undelivered_alert_events=int(events),
            db_bytes=self.used_bytes(),
            evicted_undelivered=self.counters().get("evicted_undelivered", 0),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


class StoreThread:
    """Runs every store call on one dedicated thread and awaits the result."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._path = path
        self._max_bytes = max_bytes
        self._store: Store | None = None

    async def open(self) -> None:
        self._store = await self._run(Store, self._path, self._max_bytes)

    async def close(self) -> None:
        if self._store is not None:
            await self._run(self._store.close)
            self._store = None
        self._executor.shutdown(wait=True)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("store is not open")
        return self._store

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`await store_thread.call(store_thread.store.method, ...)`"""
        return await self._run(fn, *args, **kwargs)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
