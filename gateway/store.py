"""The local store: one SQLite file (WAL) holding readings, the outbox, alerts,
devices, counters and an audit trail.

Every method runs on one dedicated thread (see `StoreThread`), so a slow disk never
stalls the event loop and SQLite's single-writer rule holds by construction.

Faults: `open_store` sets a damaged file aside and salvages it (`store_recovery`,
`store_salvage`); reading seqs are reserved ahead in `<store>.seq` (`store_seq`), so a
lost store never makes them start again; `store_faults.classify` says what an error
means.

The outbox is the readings table itself: `delivered = 0` rows are waiting for a PUBACK.
A partial index on those rows keeps "oldest undelivered" fast however large the
delivered history grows (measured for the project: ~30x faster, and not quadratic).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import itertools
import json
import logging
import math
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlite_utils

from drivers.measurement import ALERTABLE_FLAGS
from gateway.clock import kernel_boot_id
from gateway.model import Alert, AlertState, Reading
from gateway.store_failover import Taken, take_over, write_back
from gateway.store_faults import CorruptStore, StorageUnavailable, StoreFault, classify
from gateway.store_recovery import (
    Problem,
    RecoveryReason,
    StoreRecovery,
    diagnose,
    move_aside,
    quick_check,
    remove_store_files,
)
from gateway.store_salvage import Salvage, SalvagedRows
from gateway.store_seq import LAST_SEQ, SeqReservation, fsync_directory
from gateway.store_unsynced import UnsyncedJournal, UnsyncedRow

log = logging.getLogger(__name__)

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


def _v2(db: sqlite_utils.Database) -> None:
    """Subjects and device bindings as data, the rules' timers, the daily ledger, and
    an outbox for messages other than readings and alert events (the ledger)."""
    db.table("subjects").create({"code": str, "updated_at": str, "record": str}, pk="code")
    db.table("bindings").create({"device": str, "updated_at": str, "record": str}, pk="device")
    db.table("rule_state").create({"name": str, "saved_at": str, "state": str}, pk="name")
    db.table("ledger").create({"subject": str, "date": str, "payload": str}, pk=("subject", "date"))
    db.table("messages").create(
        {"seq": int, "topic": str, "delivered": int, "payload": str},
        pk="seq",
        defaults={"delivered": 0},
        not_null={"topic", "delivered", "payload"},
    )
    db.execute("CREATE INDEX messages_undelivered ON messages(seq) WHERE delivered = 0")


def _v3(db: sqlite_utils.Database) -> None:
    """The commands received over MQTT, by id: a repeated id gets the stored result."""
    db.table("commands").create(
        {"id": str, "command": str, "at": str, "result": str}, pk="id", not_null={"result"}
    )


#: A reading's subject, as the index `readings_by_subject` holds it (a query must say it
#: in exactly these words to use the index). `json_valid` first: a payload SQLite's JSON
#: cannot parse (Python writes NaN, SQLite 3.40 refuses it) gets no subject rather than
#: an error, so a reading's commit never fails because of the charts' index.
_SUBJECT = "(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.subject') END)"


def _v4(db: sqlite_utils.Database) -> None:
    """A subject's readings of a metric in time order, for the page's charts: without
    it every chart reads the whole table (60 ms per 130,000 readings on a desktop, and a
    512 MB store holds 1.7 M). About 50 bytes per reading; built once over the readings
    kept (3 s per million on a desktop)."""
    db.execute(f"CREATE INDEX readings_by_subject ON readings({_SUBJECT}, metric, received_at)")


#: The one metric indexed by subject (`_v5`).
_TEMPERATURE = "body_temperature"


def _v5(db: sqlite_utils.Database) -> None:
    """The charts' index of `_v4` keeps each subject's and metric's newest entries on a
    page of their own, so every commit rewrote a page per subject and metric: 11 of the
    16 pages a household's second of readings wrote to the SD card. Instead, readings
    by time (appended: about one page per commit), through which the last hour's
    vitals are read, and the temperatures by subject (a few a day per bed), through
    which the isolation's fortnight is read."""
    db.execute("DROP INDEX IF EXISTS readings_by_subject")
    db.execute("CREATE INDEX readings_by_time ON readings(received_at)")
    db.execute(
        f"CREATE INDEX temperatures_by_subject ON readings({_SUBJECT}, received_at)"
        f" WHERE metric = '{_TEMPERATURE}'"
    )


#: Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_v1, _v2, _v3, _v4, _v5)


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


class StoreTooNew(RuntimeError):
    """The store was written by a newer gateway: it is left untouched."""


#: Acknowledged readings in SQLite whose marks wait for the next unsynced write, at
#: most (a backlog being sent is marked as it goes).
_DEFERRED_MARKS_MAX = 500


def seq_path(store_path: Path) -> Path:
    """Where the seq reservation of the store at `store_path` is kept."""
    return store_path.with_name(store_path.name + ".seq")


class Store:
    """Synchronous store. Use from a single thread (the `StoreThread`)."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        *,
        seq_file: Path | None = None,
        unsynced: bool = False,
        boot: str | None = None,
    ) -> None:
        """`seq_file`: the seq reservation (default `<path>.seq`; none for an in-memory
        store, `Path(":memory:")`, unless given). `unsynced`: `commit_readings` keeps
        readings in memory and `<path>.unsynced` until `sync` (or any other
        transaction) writes them to SQLite (see gateway/store_unsynced.py); without it
        each batch is a transaction of its own. `boot`: the kernel boot this runs in
        (default: the kernel's), to tell a power cut from a crash."""
        in_memory = str(path) == ":memory:"
        if not in_memory:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._seq = (
            None if in_memory and seq_file is None else SeqReservation(seq_file or seq_path(path))
        )
        self._buffered = unsynced and not in_memory
        self._boot = boot or kernel_boot_id()
        #: Readings accepted but not in SQLite yet, in seq order, and by seq.
        self._unsynced: list[UnsyncedRow] = []
        self._unsynced_by_seq: dict[int, UnsyncedRow] = {}
        #: Readings in SQLite acknowledged since, marked by the next transaction (one
        #: comes within seconds: the next readings, the rules' timers every 5 s), not
        #: by one of their own that rewrites two more pages. Lost in a crash: resent.
        self._deferred_marks: set[int] = set()
        #: How many times undelivered readings were rewritten (`correct_clock`): rows
        #: read before a rewrite may no longer be what is kept (the uplink's read-ahead).
        self.rewrites = 0
        self._journal = None if in_memory else UnsyncedJournal(path)
        self._conn = sqlite3.connect(path, isolation_level=None)
        try:
            self.db = sqlite_utils.Database(self._conn)
            self._conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed transaction survives a power cut, not only a crash.
            # Readings come in one transaction per `sync_interval_s` (or per batch).
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()
            self._resume_seq()
            self._resume_unsynced()
        except BaseException:
            self._conn.close()
            if self._journal is not None:
                self._journal.close()
            raise
        #: Estimated bytes a reading takes (row and index entry), refined by eviction.
        self._bytes_per_reading: float | None = None
        #: Where the periodic integrity check goes on (`check_integrity_step`).
        self._check_part, self._check_after = 0, 0

    def close(self, *, write_unsynced: bool = True) -> None:
        """Write the readings not in SQLite yet and record a clean stop, then close.
        `write_unsynced=False` (a store found damaged) leaves them in `<path>.unsynced`
        for the store that replaces it. A write that fails is logged: they stay there."""
        try:
            if self._journal is not None:
                self._journal.wait()
            if write_unsynced and str(self.path) != ":memory:":
                with self._transaction():
                    self._set_run(clean=True)
        except (sqlite3.Error, OSError) as exc:
            log.warning(
                "store closed without writing the unsynced readings (kept for the next start)",
                extra={"error": _one_line(exc), "n": len(self._unsynced)},
            )
        finally:
            self._conn.close()
            if self._journal is not None:
                self._journal.close()

    def _resume_unsynced(self) -> None:
        """Write what a crashed run left in `<path>.unsynced`; after a power cut (the
        last run, which kept readings unsynced, neither stopped cleanly nor ran in this
        boot) number on above every reserved seq: readings the cut lost may have been
        published already, and their ids must never be reused."""
        if self._journal is None:
            return
        self._keep_unsynced(self._journal.read())
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()
        last = json.loads(row[0]) if row else None
        power_cut = bool(
            last and last["unsynced"] and not last["clean"] and last["boot"] != self._boot
        )
        if self._unsynced:
            log.warning(
                "readings a crash left unsynced written to the store",
                extra={"n": len(self._unsynced)},
            )
        with self._transaction():
            ceiling = self._seq.ceiling if self._seq is not None else None
            if power_cut and ceiling is not None and ceiling > self.last_seq():
                log.warning(
                    "the last run ended without a stop in another boot (a power cut): up"
                    " to store.sync_interval_s of readings may be lost; numbering goes on"
                    " above the reserved seqs",
                    extra={"last_seq": self.last_seq(), "next_seq": ceiling + 1},
                )
                self.set_last_seq(ceiling)
            self._set_run(clean=False)

    def _set_run(self, *, clean: bool) -> None:
        """Record this run: its boot, whether it keeps readings unsynced, whether it
        stopped cleanly."""
        run = {"boot": self._boot, "unsynced": self._buffered, "clean": clean}
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES('run', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (json.dumps(run),),
        )

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreTooNew(
                f"{self.path}: schema version {version} is newer than this gateway knows"
                f" ({len(MIGRATIONS)}); refusing to touch it"
            )
        # A new store starts above every seq reserved before it (by a store now lost),
        # in the same transaction as its schema.
        floor = (self._seq.ceiling or 0) if version == 0 and self._seq is not None else 0
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction():
                migration(self.db)
                if number == 1 and floor:
                    self.set_last_seq(floor)
                self._conn.execute(f"PRAGMA user_version = {number}")

    def _resume_seq(self) -> None:
        """Keep the reservation and the store in step: re-create a lost (or lagging)
        reservation from the store; continue above the ceiling when seqs were issued
        outside the store."""
        seq = self._seq
        if seq is None:
            return
        last = self.last_seq()
        if seq.outside_store and (seq.ceiling or 0) > last:
            with self._transaction():
                self.set_last_seq(seq.ceiling or 0)
            last = seq.ceiling or 0
        if seq.ceiling is not None and seq.ceiling >= last and not seq.outside_store:
            return
        if seq.ceiling is None and last:
            log.warning("seq reservation missing: re-created from the store", extra={"seq": last})
        try:
            seq.renew(last, outside_store=False)
        except OSError as exc:  # commits within the old ceiling go on; cover() retries
            log.warning("seq reservation cannot be written", extra={"error": str(exc)})

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # --- readings and the outbox ---------------------------------------------------

    def last_seq(self) -> int:
        """The highest sequence number ever assigned (kept in meta: pruning never
        makes it go backwards)."""
        if self._unsynced:
            return max(self._stored_last_seq(), self._unsynced[-1].seq)
        return self._stored_last_seq()

    def _stored_last_seq(self) -> int:
        return int(self._conn.execute(LAST_SEQ).fetchone()[0])

    def set_last_seq(self, seq: int) -> None:
        """Record `seq` as the highest issued (inside the caller's transaction, if any):
        needed only where it is not the highest reading kept (a jump; readings about
        to be evicted), so a commit of readings does not rewrite a page for it."""
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES('last_seq', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(seq),),
        )

    @property
    def seq_ceiling(self) -> int | None:
        """The highest seq reserved (`<store>.seq`); None for a store without one."""
        return None if self._seq is None else self._seq.ceiling

    def reserve_seqs(self, through: int, *, outside_store: bool) -> None:
        """Reserve seqs up to `through` for readings numbered outside this store (a
        store in memory while this one refuses writes), so no later store reuses them.
        `outside_store=True` records that they may never reach this store: the next
        open then continues above the ceiling. `False` (once they were written back)
        clears that. On a full disk the record is overwritten in place. Raises OSError
        when it cannot be written."""
        seq = self._seq
        if seq is None:
            return
        if through <= (seq.ceiling or 0) and seq.outside_store == outside_store:
            return
        seq.renew(through, outside_store=outside_store)

    def commit_readings(self, readings: Sequence[Reading]) -> int:
        """Accept a batch. When this returns, a crash of the process loses none of it:
        unsynced (see `__init__`), the readings are in `<path>.unsynced` and reach
        SQLite at the next `sync`; otherwise they are committed, durably. On any error
        the batch is not accepted: retry with the same seqs (a retry never doubles a
        reading). Returns how many readings are not in SQLite yet."""
        if not readings:
            return len(self._unsynced)
        rows = [UnsyncedRow(*r.row()) for r in readings]
        if self._seq is not None:
            self._seq.cover(max(r.seq for r in rows))  # reserved (durably) before use
        if not self._buffered:
            with self._transaction():
                self._insert_rows(rows)
            return 0
        new = [r for r in rows if r.seq not in self._unsynced_by_seq]
        assert self._journal is not None
        self._journal.append(new)
        self._keep_unsynced(new)
        return len(self._unsynced)

    def _keep_unsynced(self, rows: Sequence[UnsyncedRow]) -> None:
        for row in rows:
            if row.seq not in self._unsynced_by_seq:
                self._unsynced.append(row)
                self._unsynced_by_seq[row.seq] = row
        if rows and self._unsynced[-1].seq != rows[-1].seq:  # older than what was kept
            self._unsynced.sort(key=lambda r: r.seq)

    def sync(self) -> None:
        """Write the readings not in SQLite yet, in one transaction (any transaction
        of the store takes them along: an alert, a command, a mark). Its fsync runs in
        the background (see gateway/store_unsynced.py), unless the last one still does."""
        if self._unsynced or self._deferred_marks:
            with self._transaction_without_fsync():
                pass

    def take_unsynced(self) -> list[UnsyncedRow]:
        """Hand the readings not in SQLite yet to another store (this one refuses
        writes); `<path>.unsynced` keeps them until this store writes again."""
        rows, self._unsynced, self._unsynced_by_seq = self._unsynced, [], {}
        return rows

    def adopt_unsynced(self, rows: Sequence[UnsyncedRow]) -> None:
        """Take over readings another store accepted but could not write."""
        self._keep_unsynced(rows)
        self.sync()

    def _write_unsynced(self) -> int:
        """Inside a transaction: insert the unsynced readings and write the deferred
        marks. Returns how many readings."""
        self._insert_rows(self._unsynced)
        self._conn.executemany(
            "UPDATE readings SET delivered = 1 WHERE seq = ?", [(s,) for s in self._deferred_marks]
        )
        return len(self._unsynced)

    def _not_marked(self) -> tuple[str, list[int]]:
        """SQL (and its parameters) leaving out the readings whose mark is deferred."""
        if not self._deferred_marks:
            return "", []
        marks = sorted(self._deferred_marks)
        return f" AND seq NOT IN ({', '.join('?' * len(marks))})", marks

    def _insert_rows(self, rows: Sequence[UnsyncedRow]) -> None:
        self._conn.executemany(
            "INSERT OR IGNORE INTO readings(seq, device, metric, received_at, delivered,"
            " payload) VALUES(?, ?, ?, ?, ?, ?)",
            [(r.seq, r.device, r.metric, r.received_at, int(r.delivered), r.payload) for r in rows],
        )

    def _unsynced_written(self, n: int, *, fsync: bool) -> None:
        """After the commit that wrote the first `n` unsynced readings (all of them),
        with its own fsync or not."""
        self._deferred_marks.clear()
        written = self._unsynced[:n]
        del self._unsynced[:n]
        for row in written:
            del self._unsynced_by_seq[row.seq]
        if self._journal is None or not written:
            return
        if fsync:
            self._journal.written_synced()
        else:
            self._journal.fsync_in_background()

    def undelivered(
        self, after_seq: int, limit: int, up_to_seq: int | None = None
    ) -> list[OutboxRow]:
        """Undelivered readings with `after_seq < seq [<= up_to_seq]`, oldest first."""
        marked, args = self._not_marked()
        sql = f"SELECT seq, device, payload FROM readings WHERE delivered = 0{marked} AND seq > ?"
        args.append(after_seq)
        if up_to_seq is not None:
            sql += " AND seq <= ?"
            args.append(up_to_seq)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        rows = [OutboxRow(*row) for row in self._conn.execute(sql, args)]
        # The unsynced readings are newer than every one in SQLite.
        start = bisect.bisect_right(self._unsynced, after_seq, key=lambda r: r.seq)
        for row in itertools.islice(self._unsynced, start, None):
            if len(rows) >= limit or (up_to_seq is not None and row.seq > up_to_seq):
                break
            if not row.delivered:
                rows.append(OutboxRow(row.seq, row.device, row.payload))
        return rows

    def mark_delivered(self, seqs: Iterable[int]) -> None:
        """Unsynced readings are marked in memory (so they reach SQLite delivered, and
        the index of undelivered readings is never touched for them)."""
        stored = []
        for seq in seqs:
            row = self._unsynced_by_seq.get(seq)
            if row is None:
                stored.append(seq)
            else:
                row.delivered = True
        if len(self._deferred_marks) + len(stored) <= _DEFERRED_MARKS_MAX:
            self._deferred_marks.update(stored)  # written by the next transaction
        else:
            self._mark_delivered("readings", stored)

    def recent_readings(self, limit: int, device: str | None = None) -> list[dict[str, Any]]:
        newest = [r for r in reversed(self._unsynced) if device in (None, r.device)][:limit]
        found = [{**json.loads(r.payload), "delivered": r.delivered} for r in newest]
        sql = "SELECT payload, delivered FROM readings"
        args: list[Any] = []
        if device:
            sql += " WHERE device = ?"
            args.append(device)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit - len(found))
        for payload, delivered in self._conn.execute(sql, args):
            p = json.loads(payload)
            found.append({**p, "delivered": bool(delivered) or p["seq"] in self._deferred_marks})
        return found

    def subject_series(
        self, subject: str, metrics: Sequence[str], since: datetime, until: datetime, limit: int
    ) -> list[tuple[str, str, float, str | None]]:
        """The subject's readings of `metrics` received in [`since`, `until`), oldest
        first, as (received_at, metric, value, site), for the page's charts.

        Only values fit for a clinical judgement (`Measurement.alertable`): a reading
        flagged probe off, poor signal, device fault... is left out, so a stretch of
        them shows as a gap. When more than `limit` match, each metric (and site) is
        reduced to the mean of each of `limit` equal time buckets, at the mean time of
        its readings: at most `limit` points per series whatever the rate (an hour at
        1 Hz with `limit` 360: 10 s buckets, in which a dip the rules would alert on,
        sustained for 10 s or more, stays visible)."""
        if not metrics or until <= since or limit < 1:
            return []
        self.sync()
        drawn = sorted(ALERTABLE_FLAGS)
        # Temperatures through their own index (its condition must be in the SQL text,
        # not a parameter), anything else through the readings of the time range.
        by = (
            f"INDEXED BY temperatures_by_subject WHERE metric = '{_TEMPERATURE}' AND"
            if list(metrics) == [_TEMPERATURE]
            else "INDEXED BY readings_by_time WHERE"
        )
        where = (
            f" FROM readings {by} {_SUBJECT} = ? AND metric IN ({', '.join('?' * len(metrics))})"
            " AND received_at >= ? AND received_at < ? AND NOT EXISTS (SELECT 1 FROM"
            f" json_each(payload, '$.quality') WHERE value NOT IN ({', '.join('?' * len(drawn))}))"
        )
        args: list[Any] = [subject, *metrics, _utc_text(since), _utc_text(until), *drawn]
        value, site = "json_extract(payload, '$.value')", "json_extract(payload, '$.site')"
        rows = self._conn.execute(
            f"SELECT received_at, metric, {value}, {site}{where} ORDER BY received_at LIMIT ?",
            [*args, limit + 1],
        ).fetchall()
        if len(rows) > limit:  # bucket: whole ms since `since` * limit // span (integers)
            span_ms = max(1, round((until - since).total_seconds() * 1000))
            rows = self._conn.execute(
                "SELECT strftime('%Y-%m-%dT%H:%M:%f+00:00', avg(julianday(received_at))),"
                f" metric, avg({value}), {site} AS site{where} GROUP BY metric, site,"
                " CAST(round((julianday(received_at) - julianday(?)) * 86400000) AS INTEGER)"
                " * ? / ? ORDER BY 1",
                [*args, _utc_text(since), limit, span_ms],
            ).fetchall()
        return [(at, metric, float(v), s) for at, metric, v, s in rows]

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
            with self._transaction_without_fsync():
                self._conn.executemany(f"UPDATE {table} SET delivered = 1 WHERE seq = ?", rows)

    @contextlib.contextmanager
    def _transaction_without_fsync(self) -> Iterator[None]:
        """A transaction without an fsync of its own (`synchronous=NORMAL`: durable at
        the next synced commit). The unsynced readings it takes along are fsynced in
        the background, or by this one (FULL) while the last background fsync runs."""
        if self._unsynced and (self._journal is None or self._journal.fsync_running):
            with self._transaction():
                yield
        else:
            with self._transaction_unfsynced():
                yield

    @contextlib.contextmanager
    def _transaction_unfsynced(self) -> Iterator[None]:
        """A transaction committed with `synchronous=NORMAL`: no fsync of its own."""
        self._conn.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._transaction(fsync=False):
                yield
        finally:
            self._conn.execute("PRAGMA synchronous=FULL")

    # --- subjects, bindings, the rules' timers, the ledger, other messages ------------

    def subjects(self) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT record FROM subjects ORDER BY code")
        return [json.loads(record) for (record,) in rows]

    def bindings(self) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT record FROM bindings ORDER BY device")
        return [json.loads(record) for (record,) in rows]

    def save_care_change(
        self,
        subjects: Sequence[dict[str, Any]],
        bindings: Sequence[dict[str, Any]],
        audit: Sequence[tuple[str, dict[str, Any]]],
    ) -> None:
        """Save subject and binding records and their audit entries (action, detail) in
        one transaction: a change is never kept without its audit, nor audited unkept."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction():
            self.db.table("subjects").upsert_all(
                [{"code": r["code"], "updated_at": now, "record": json.dumps(r)} for r in subjects],
                pk="code",
            )
            self.db.table("bindings").upsert_all(
                [
                    {"device": r["device"], "updated_at": now, "record": json.dumps(r)}
                    for r in bindings
                ],
                pk="device",
            )
            for action, detail in audit:
                self._audit(action, detail)

    def save_rule_state(self, name: str, state: Any) -> None:
        """The rules' timers (or the ledger's days in progress), as JSON, under `name`.
        Without an fsync of its own, like a delivered mark: saved every few seconds,
        a power cut costs at most the last save, and the next commit syncs it."""
        with self._transaction_without_fsync():
            self.db.table("rule_state").upsert(
                {
                    "name": name,
                    "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "state": json.dumps(state, separators=(",", ":")),
                },
                pk="name",
            )

    def rule_state(self, name: str) -> Any:
        row = self._conn.execute("SELECT state FROM rule_state WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def save_ledger_days(self, topic: str, days: Sequence[dict[str, Any]]) -> None:
        """Keep each completed ledger day and queue it for `topic`, in one transaction."""
        if not days:
            return
        with self._transaction():
            for day in days:
                payload = json.dumps(day, separators=(",", ":"), ensure_ascii=False)
                self.db.table("ledger").upsert(
                    {"subject": day["subject"], "date": day["date"], "payload": payload},
                    pk=("subject", "date"),
                )
                self.db.table("messages").insert(
                    {"topic": topic, "delivered": 0, "payload": payload}
                )

    def ledger_days(self, subject: str, first: str, last: str) -> list[dict[str, Any]]:
        """The kept ledger days of `subject` from date `first` to `last` (YYYY-MM-DD)."""
        rows = self._conn.execute(
            "SELECT payload FROM ledger WHERE subject = ? AND date BETWEEN ? AND ? ORDER BY date",
            (subject, first, last),
        )
        return [json.loads(payload) for (payload,) in rows]

    def undelivered_messages(self, after_seq: int, limit: int) -> list[OutboxRow]:
        """Queued messages other than readings and alert events; `OutboxRow.device`
        holds the topic (below the gateway's root)."""
        rows = self._conn.execute(
            "SELECT seq, topic, payload FROM messages"
            " WHERE delivered = 0 AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [OutboxRow(*row) for row in rows]

    def mark_messages_delivered(self, seqs: Iterable[int]) -> None:
        self._mark_delivered("messages", seqs)

    # --- commands ----------------------------------------------------------------------

    def command_result(self, command_id: str) -> dict[str, Any] | None:
        """The result already given to a command with this id, if any."""
        row = self._conn.execute(
            "SELECT result FROM commands WHERE id = ?", (command_id,)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def record_command(
        self,
        result: dict[str, Any],
        audit: dict[str, Any],
        messages: Sequence[tuple[str, dict[str, Any]]],
    ) -> None:
        """Keep a command's result under its id (when it has one), its audit entry, and
        queue `messages` (topic, payload: the result, the audit message), in one
        transaction."""
        with self._transaction():
            if result["id"] is not None:
                self.db.table("commands").insert(
                    {
                        "id": result["id"],
                        "command": result["command"],
                        "at": result["at"],
                        "result": json.dumps(result, ensure_ascii=False),
                    }
                )
            self._audit(f"command.{result['command']}", audit)
            self._queue(messages)

    def queue_messages(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Queue `messages` (topic below the root, payload) for the uplink."""
        with self._transaction():
            self._queue(messages)

    def _queue(self, messages: Sequence[tuple[str, dict[str, Any]]]) -> None:
        for topic, payload in messages:
            text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
            self.db.table("messages").insert({"topic": topic, "delivered": 0, "payload": text})

    def requeue_readings(self, first_seq: int, last_seq: int) -> int:
        """Mark the kept readings of `first_seq..last_seq` undelivered again (a server
        that lost them asked); returns how many there are."""
        with self._transaction():
            return int(
                self._conn.execute(
                    "UPDATE readings SET delivered = 0 WHERE seq BETWEEN ? AND ?",
                    (first_seq, last_seq),
                ).rowcount
            )

    # --- the clock's unsynced span (gateway/clock_correction.py) -----------------------

    def clock_span(self) -> Any:
        """The span received while the clock was not synchronised, as kept, or None."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'clock_span'").fetchone()
        return json.loads(row[0]) if row else None

    def save_clock_span(self, span: Any) -> None:
        """Keep `span` (JSON); None forgets it."""
        with self._transaction():
            self._set_clock_span(span)

    def _set_clock_span(self, span: Any) -> None:
        if span is None:
            self._conn.execute("DELETE FROM meta WHERE key = 'clock_span'")
            return
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES('clock_span', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (json.dumps(span, separators=(",", ":")),),
        )

    def last_alert_event_seq(self) -> int:
        (seq,) = self._conn.execute("SELECT coalesce(max(seq), 0) FROM alert_events").fetchone()
        return int(seq)

    def correct_clock(
        self,
        spans: Sequence[tuple[int, int]],
        reading: Callable[[dict[str, Any]], dict[str, Any] | None],
        alert: Callable[[dict[str, Any]], dict[str, Any] | None],
        events_after: int,
        messages: Sequence[tuple[str, dict[str, Any]]],
    ) -> int:
        """The clock was synchronised. In one transaction: each undelivered reading of
        the spans (`from_seq`, `to_seq`) is replaced by what `reading` makes of its
        payload; each alert not cleared or with an event after `events_after`, and
        each undelivered event after it, by what `alert` makes of it (None: left as
        it is); `messages` (topic, payload) are queued; the span kept is forgotten.
        Returns how many readings were rewritten."""
        rewritten = 0
        with self._transaction():
            for first, last in spans:
                rows = self._conn.execute(
                    "SELECT seq, payload FROM readings WHERE delivered = 0 AND seq BETWEEN ? AND ?",
                    (first, last),
                ).fetchall()
                updates = [
                    (p["received_at"], json.dumps(p, separators=(",", ":")), seq)
                    for seq, text in rows
                    if (p := reading(json.loads(text))) is not None
                ]
                self._conn.executemany(
                    "UPDATE readings SET received_at = ?, payload = ? WHERE seq = ?", updates
                )
                rewritten += len(updates)
            if rewritten:
                self.rewrites += 1
            alerts = self._conn.execute(
                "SELECT id, payload FROM alerts WHERE state != ?"
                " OR id IN (SELECT alert_id FROM alert_events WHERE seq > ?)",
                (AlertState.CLEARED.value, events_after),
            ).fetchall()
            for alert_id, text in alerts:
                if (p := alert(json.loads(text))) is not None:
                    self._conn.execute(
                        "UPDATE alerts SET updated_at = ?, payload = ? WHERE id = ?",
                        (
                            datetime.fromisoformat(p["updated_at"]).isoformat(),
                            json.dumps(p, separators=(",", ":")),
                            alert_id,
                        ),
                    )
            events = self._conn.execute(
                "SELECT seq, payload FROM alert_events WHERE delivered = 0 AND seq > ?",
                (events_after,),
            ).fetchall()
            self._conn.executemany(
                "UPDATE alert_events SET payload = ? WHERE seq = ?",
                [
                    (json.dumps(p, separators=(",", ":")), seq)
                    for seq, text in events
                    if (p := alert(json.loads(text))) is not None
                ],
            )
            self._queue(messages)
            self._set_clock_span(None)
        return rewritten

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
            self._add_counters(increments)

    def _add_counters(self, increments: dict[str, int]) -> None:
        self._conn.executemany(
            "INSERT INTO counters(name, value) VALUES(?, ?)"
            " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            increments.items(),
        )

    def counters(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT name, value FROM counters ORDER BY name"))

    def audit(self, action: str, detail: dict[str, Any]) -> None:
        with self._transaction():
            self._audit(action, detail)

    def _audit(self, action: str, detail: dict[str, Any]) -> None:
        self.db.table("audit").insert(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "action": action,
                "detail": json.dumps(detail, sort_keys=True, ensure_ascii=False),
            }
        )

    def audit_trail(self, limit: int, action_prefix: str = "") -> list[dict[str, Any]]:
        """The latest audit entries, newest first (`action_prefix`: only those actions)."""
        rows = self._conn.execute(
            "SELECT seq, at, action, detail FROM audit WHERE action LIKE ? || '%'"
            " ORDER BY seq DESC LIMIT ?",
            (action_prefix, limit),
        )
        return [
            {"seq": seq, "at": at, "action": action, "detail": json.loads(detail)}
            for seq, at, action, detail in rows
        ]

    # --- size and health -------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes in use by data (deleted rows' pages are free for reuse)."""
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def enforce_size_limit(self, chunk: int = 5000) -> int:
        """Bring the data under `max_bytes`, deleting no more readings than that takes:
        delivered ones first (oldest first), then undelivered routine readings (oldest
        first, each counted as `evicted_undelivered`). Alerts and alert events are never
        deleted. Each step deletes the rows the excess is estimated to hold (at most
        `chunk`, in one transaction) and measures again, so it stops within about a
        page of the limit. Returns the readings evicted undelivered."""
        excess = self.used_bytes() - self.max_bytes
        if excess <= 0:
            return 0
        per_row = self._bytes_per_reading or self._estimate_bytes_per_reading()
        evicted = 0
        for delivered in (1, 0):
            while excess > 0:
                n = min(chunk, max(1, math.ceil(excess / per_row)))
                with self._transaction():
                    self.set_last_seq(self._stored_last_seq())  # the newest may go too
                    deleted = self._conn.execute(
                        "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings"
                        " WHERE delivered = ? ORDER BY seq LIMIT ?)",
                        (delivered, n),
                    ).rowcount
                    if deleted and not delivered:
                        self._add_counters({"evicted_undelivered": deleted})
                if deleted == 0:
                    break
                if not delivered:
                    evicted += deleted
                left = self.used_bytes() - self.max_bytes
                if excess - left > 0:  # pages were freed: aim the next step with them
                    per_row = self._bytes_per_reading = (excess - left) / deleted
                excess = left
        return evicted

    def _estimate_bytes_per_reading(self) -> float:
        """All data over all readings: an overestimate (other tables count too), so a
        first step never deletes more than needed."""
        (count,) = self._conn.execute("SELECT count(*) FROM readings").fetchone()
        return max(1.0, self.used_bytes() / max(1, count))

    def queue_stats(self) -> QueueStats:
        marked, marks = self._not_marked()
        count, oldest = self._conn.execute(
            f"SELECT count(*), (SELECT received_at FROM readings WHERE delivered = 0{marked}"
            f" ORDER BY seq LIMIT 1) FROM readings WHERE delivered = 0{marked}",
            marks + marks,
        ).fetchone()
        waiting = [r for r in self._unsynced if not r.delivered]
        count += len(waiting)
        if oldest is None and waiting:
            oldest = waiting[0].received_at
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

    def check_integrity_step(self, rows: int = 5000) -> bool:
        """One slice of the periodic integrity check, cheap enough for the store thread
        every few seconds (a full `PRAGMA quick_check` of a 512 MB store takes seconds
        and would hold up every commit). In turn: the next `rows` readings, every
        column read from the table's own b-tree; the next `rows` entries of the
        undelivered index; `PRAGMA quick_check` of each other (small) table and its
        indexes. Returns True when this step finished a pass over the whole store.
        Damage raises: SQLite's own corruption error, or CorruptStore.

        Read through a connection of its own, opened for the step: the store's own
        connection keeps pages in its cache, and damage under a cached page would stay
        unseen for as long as the gateway runs."""
        if str(self.path) == ":memory:":
            return True
        with contextlib.closing(
            sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        ) as conn:
            return self._check_slice(conn, rows)

    def _check_slice(self, conn: sqlite3.Connection, rows: int) -> bool:
        if self._check_part < 2:
            sql = (
                "SELECT max(seq), count(n) FROM (SELECT seq, length(device) + length(metric)"
                " + length(received_at) + length(payload) + delivered AS n FROM readings"
                " NOT INDEXED WHERE seq > ? ORDER BY seq LIMIT ?)"
                if self._check_part == 0
                else "SELECT max(seq), count(*) FROM (SELECT seq FROM readings"
                " INDEXED BY readings_undelivered WHERE delivered = 0 AND seq > ?"
                " ORDER BY seq LIMIT ?)"
            )
            (last, read) = conn.execute(sql, (self._check_after, rows)).fetchone()
            if read < rows:  # the end of the table: on to the next part (new rows keep
                # coming in while the gateway runs, so "none left" would never come)
                self._check_part, self._check_after = self._check_part + 1, 0
            else:
                self._check_after = int(last)
            return False
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'readings'"
            )
        ]
        for table in ("sqlite_master", *tables):
            problems = quick_check(conn, table)
            if problems is not None:
                raise CorruptStore(problems)
        self._check_part = 0
        return True

    def _insert_salvaged(self, batch: SalvagedRows) -> None:
        """Rows read out of a damaged store, as they were (same seq, same payload)."""
        spec = batch.spec
        with self._transaction():
            self._conn.executemany(
                f"INSERT OR IGNORE INTO {spec.table}({', '.join(spec.columns)})"
                f" VALUES({', '.join('?' * len(spec.columns))})",
                batch.rows,
            )

    def _transaction(self, *, fsync: bool = True) -> _Transaction:
        """Every transaction takes the unsynced readings along. `fsync`: whether the
        connection's `synchronous` setting syncs this one (see `sync`)."""
        if self._unsynced or self._deferred_marks:
            written = functools.partial(self._unsynced_written, fsync=fsync)
            return _Transaction(self._conn, self._write_unsynced, written)
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (autocommit connection). A
    failed COMMIT is rolled back too (SQLite may have rolled back already, or may have
    left the transaction open); a ROLLBACK that fails never hides the first error."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        first: Callable[[], int] | None = None,
        committed: Callable[[int], None] | None = None,
    ) -> None:
        """`first` runs right after BEGIN; once COMMIT succeeded, `committed` is
        called with what it returned."""
        self._conn = conn
        self._first, self._committed = first, committed
        self._done = 0

    def __enter__(self) -> None:
        self._rollback()  # what a failed rollback may have left open
        self._conn.execute("BEGIN IMMEDIATE")
        if self._first is not None:
            try:
                self._done = self._first()
            except BaseException:
                self._rollback()
                raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._rollback()
            return
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if self._committed is not None:
            self._committed(self._done)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")


def open_store(
    path: Path,
    max_bytes: int,
    *,
    corrupt: str | None = None,
    unsynced: bool = False,
    boot: str | None = None,
) -> tuple[Store, StoreRecovery | None]:
    """Open the store at `path`. A file that cannot be the store (`diagnose`), or, with
    `corrupt`, the file there whatever it looks like (a call met corruption at run
    time), is set aside first and replaced by a fresh store holding what could be
    salvaged; the report says what happened. Raises StorageUnavailable when no store
    can be opened or created (with `recovery` set if one was set aside first)."""
    recovery: StoreRecovery | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        reservation = SeqReservation(seq_path(path))
        problem = (
            Problem(RecoveryReason.CORRUPT, corrupt)
            if corrupt is not None
            else diagnose(path, seqs_issued=bool(reservation.ceiling))
        )
        if problem is not None:
            recovery = _replace(path, max_bytes, problem, reservation)
        return Store(path, max_bytes, unsynced=unsynced, boot=boot), recovery
    except (sqlite3.Error, OSError, StoreTooNew) as exc:
        fault = StoreFault.OTHER if isinstance(exc, StoreTooNew) else classify(exc)
        if fault is StoreFault.CORRUPT and corrupt is None and recovery is None:
            # damage quick_check missed
            return open_store(path, max_bytes, corrupt=str(exc), unsynced=unsynced, boot=boot)
        failure = StorageUnavailable(f"cannot open the store {path}: {exc}", fault)
        failure.recovery = recovery
        raise failure from exc
    except StorageUnavailable as exc:
        exc.recovery = recovery
        raise


def _replace(
    path: Path, max_bytes: int, problem: Problem, reservation: SeqReservation
) -> StoreRecovery:
    """Build a fresh store beside the old one (`<name>.salvage`), copy into it what can
    be read, then move the old one aside and the fresh one into its place. Until the
    last two renames the old file stays where it was, so a recovery cut short (killed,
    power cut) is simply done again at the next start."""
    at = datetime.now(UTC)
    fresh_path = path.with_name(path.name + ".salvage")
    remove_store_files(fresh_path)
    fresh = Store(fresh_path, max_bytes, seq_file=reservation.path)
    counts: Counter[str] = Counter()
    detail = problem.detail
    try:
        # A rollback journal while copying: no WAL to carry along in the rename. No
        # syncs: a copy cut short is thrown away; one fsync before the rename.
        fresh._conn.execute("PRAGMA journal_mode=DELETE")
        fresh._conn.execute("PRAGMA synchronous=OFF")
        salvage = Salvage(path, reservation.ceiling or 0)
        lost: int | None = None
        try:
            for batch in salvage.batches():
                fresh._insert_salvaged(batch)
                counts[batch.spec.table] += len(batch.rows)
            lost = salvage.unreadable
        except (sqlite3.Error, OSError) as exc:  # the fresh store is full: keep what fits
            detail += f"; salvage stopped: {exc}"
        if salvage.highest_seq > fresh.last_seq():  # the old store knew of higher seqs
            with fresh._transaction():
                fresh.set_last_seq(salvage.highest_seq)
        next_seq = fresh.last_seq() + 1
    finally:
        fresh.close()
    fd = os.open(fresh_path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    moved_to = move_aside(path, at)
    os.rename(fresh_path, path)
    fsync_directory(path.parent)
    recovery = StoreRecovery(
        reason=problem.reason,
        detail=detail,
        moved_to=moved_to,
        salvaged_readings=counts["readings"],
        salvaged_alert_events=counts["alert_events"],
        salvaged_alerts=counts["alerts"],
        lost=lost,
        next_seq=next_seq,
        at=at,
    )
    log.error("store set aside", extra={"summary": recovery.summary()})
    return recovery


class StoreThread:
    """Runs every store call on one dedicated thread and awaits the result, and keeps
    the gateway storing whatever the disk does:

    - a call that meets corruption sets the store aside, salvages it and opens a fresh
      one, then runs again on it;
    - a call the disk refuses (full, I/O error, read-only), or a store that cannot be
      opened at all, hands over to a store in memory (`gateway/store_failover.py`) and
      runs again there; `write_back` returns to the disk when it takes writes again.

    `fault` says, in one line, why the disk store is not in use (None when it is);
    `generation` changes whenever the store in use is replaced, so the uplink knows
    its cursors and in-flight marks refer to another store."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        memory_max_bytes: int = 16 << 20,
        *,
        unsynced: bool = False,
        boot: str | None = None,
    ) -> None:
        """`unsynced`, `boot`: as `Store` takes them."""
        self._unsynced = unsynced
        self._boot = boot
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._path = path
        self._max_bytes = max_bytes
        self._memory_max_bytes = memory_max_bytes
        self._store: Store | None = None
        self._unavailable: StorageUnavailable | None = None
        #: The disk store while a memory store stands in for it (None if unopenable).
        self._disk: Store | None = None
        self._taken: Taken | None = None
        self.fault: str | None = None
        self.generation = 0
        #: The last store set aside in this process (at open, or when a call met
        #: corruption), for the log, the status and the `storage_failure` alert.
        self.recovery: StoreRecovery | None = None

    async def open(self) -> None:
        """Open the store, setting a damaged one aside first (see `recovery`). When no
        store can be opened or created, a memory store stands in (see `fault`)."""
        await self._run(self._open_or_fail_over)

    async def write_back(self) -> bool:
        """While a memory store stands in: try to go back to the disk store, taking
        along what the memory store gathered. True when the disk store is in use."""
        return await self._run(self._write_back)

    def _open_or_fail_over(self) -> None:
        try:
            self._open(None)
        except StorageUnavailable as exc:
            self._fail_over(str(exc))

    def _open(self, corrupt: str | None) -> None:
        if self._store is not None:
            if corrupt is None:
                return
            with contextlib.suppress(sqlite3.Error):
                self._store.close(write_unsynced=False)  # the next store reads them back
            self._store = None
        try:
            self._store, recovery = open_store(
                self._path,
                self._max_bytes,
                corrupt=corrupt,
                unsynced=self._unsynced,
                boot=self._boot,
            )
        except StorageUnavailable as exc:
            self.recovery = exc.recovery or self.recovery
            self._unavailable = exc
            raise
        self.recovery = recovery or self.recovery
        self._unavailable = None
        self.generation += 1

    def _fail_over(self, reason: str) -> None:
        """Hand over to a store in memory, reserving its seqs in the disk store's
        reservation so that none is ever issued twice."""
        disk = self._store
        # The disk store's reservation, when there is one to renew (a full disk can
        # overwrite it in place, not create it).
        reservation = seq_path(self._path)
        memory = Store(
            Path(":memory:"),
            self._memory_max_bytes,
            seq_file=reservation if reservation.exists() else None,
        )
        self._taken = take_over(memory, disk, self._path)
        if disk is not None:
            memory.adopt_unsynced(disk.take_unsynced())
        try:
            memory.reserve_seqs(memory.last_seq(), outside_store=True)
        except OSError as exc:  # commits go on within the ceiling already reserved
            log.warning("seq reservation for the memory store failed", extra={"error": str(exc)})
        self._disk, self._store = disk, memory
        self.fault = reason
        self.generation += 1
        log.error("store refuses writes: a memory store stands in", extra={"error": reason})

    def _write_back(self) -> bool:
        memory = self._store
        if self._taken is None or memory is None:
            return True
        try:
            if self._disk is None:
                self._disk, recovery = open_store(
                    self._path, self._max_bytes, unsynced=self._unsynced, boot=self._boot
                )
                self.recovery = recovery or self.recovery
            written = write_back(memory, self._disk, self._taken)
            self._disk.reserve_seqs(self._disk.last_seq(), outside_store=False)
        except (sqlite3.Error, OSError, StorageUnavailable) as exc:
            self.fault = _one_line(exc)
            return False
        memory.close()
        self._store, self._disk, self._taken, self.fault = self._disk, None, None, None
        self.generation += 1
        log.info("store takes writes again: memory store written back", extra={"n": written})
        return True

    async def close(self) -> None:
        """Close, after one last attempt to write a memory store back to disk."""
        if self._taken is not None:
            if not await self.write_back():
                log.error(
                    "stopping with the disk refusing writes: what the memory store held is lost",
                    extra={"error": self.fault},
                )
        for store in (self._store, self._disk):
            if store is not None:
                await self._run(store.close)
        self._store = self._disk = None
        self._executor.shutdown(wait=True)

    @property
    def store(self) -> Store:
        """The open store; raises StorageUnavailable (with the reason the last open
        failed) when there is none."""
        if self._store is None:
            failed = self._unavailable
            if failed is None:
                raise StorageUnavailable("store is not open", StoreFault.OTHER)
            raise StorageUnavailable(str(failed), failed.fault)
        return self._store

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`await store_thread.call(store_thread.store.method, ...)`. A store method
        that meets corruption or a refusing disk runs again on the store that takes
        over (see the class docstring)."""
        return await self._run(self._guarded, fn, *args, **kwargs)

    def _guarded(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (sqlite3.Error, OSError, CorruptStore) as exc:
            store = getattr(fn, "__self__", None)
            if store is None or store is not self._store or self._taken is not None:
                raise
            fault = classify(exc)
            if fault is StoreFault.CORRUPT:
                try:
                    self._open(_one_line(exc))
                except StorageUnavailable as unavailable:
                    self._fail_over(str(unavailable))
            elif fault in (StoreFault.FULL, StoreFault.IO_ERROR, StoreFault.READ_ONLY):
                self._fail_over(f"{fault.value.replace('_', ' ')}: {_one_line(exc)}")
            else:
                raise
            return getattr(self._store, fn.__name__)(*args, **kwargs)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _utc_text(at: datetime) -> str:
    """`at` as `received_at` is stored (UTC, milliseconds), so text order is time order."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds")
