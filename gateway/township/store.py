"""The township's database: one schema in SQLAlchemy Core, on a SQLite file (WAL) or on
PostgreSQL (`postgresql+psycopg://...`), written one transaction per batch of messages.

Every insert is idempotent (`ON CONFLICT DO NOTHING`, or an upsert that only moves a
row forward), so a message the broker delivers again, a reading a gateway resends, or
two consumers storing the same retained message change nothing. What depends on the
order of a gateway's readings (its highest seq, the gaps still open, clock corrections
of readings that arrive after their correction) is worked out after the gateway's row
is locked (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's single writer, taken at
`BEGIN IMMEDIATE`), so consumers that store one gateway's readings side by side never
miss each other's. Rows are written in one order (table by table, each sorted by key):
concurrent batches cannot deadlock on each other's rows.

A batch that fails for a reason in its data (a row the database refuses) is stored
message by message: only the message at fault is refused (`Applied.refused`), and the
others go in. A failure of the database itself (connection lost, locked, deadlock)
raises `StoreUnavailable`: nothing was stored, and the caller tries the batch again.

Tables (times the gateway wrote are kept as its text, with Unix ms beside them where
the township computes with them; times of the township's own are `stored_at` and such):

- `gateways`: one row per gateway heard: township, `state` (online, degraded, offline;
  null before its first `status`), the last `status` and when it came, when its last
  message came, `max_seq` (the highest reading seq stored).
- `readings`: one row per reading, `id` (`<gateway>-<seq>`) the key, unique
  (gateway, seq); the contract's fields, `received_ms`, and `offset_ms` /
  `corrected_ms` once a clock correction moved a reading received `unsynced`;
  `payload` the reading as received.
- `seq_gaps`: per gateway, the ranges of seqs below `max_seq` not stored (yet).
- `alert_events`: every event once, keyed (gateway, id, state, updated_at).
- `alerts`: per (gateway, id) the latest event (from `alerts` and from the retained
  `alerts/active`); active: state not `cleared`.
- `devices`, `subjects`: each gateway's latest retained set, one row per entry.
- `clock_corrections`: each correction once, keyed (gateway, from_seq, to_seq,
  offset_ms), with how many readings it corrected.
- `ledger_days`: each subject's ledger day once.
- `commands`: the commands this township sent; `command_results`: the answers, keyed
  (gateway, id), from any consumer or the sender itself.
"""

from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from gateway.township.ingest import (
    ActiveAlertsIn,
    AlertEventIn,
    ClockIn,
    DevicesIn,
    LedgerIn,
    Message,
    ReadingsIn,
    StatusIn,
    SubjectsIn,
)

log = logging.getLogger(__name__)
metadata = sa.MetaData()
_Time = sa.DateTime(timezone=True)


def _key(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.Text, primary_key=True)


gateways = sa.Table(
    "gateways",
    metadata,
    _key("id"),
    sa.Column("township", sa.Text, nullable=False),
    sa.Column("state", sa.Text),
    sa.Column("status", sa.JSON),
    sa.Column("status_at", _Time),
    sa.Column("last_message_at", _Time),
    sa.Column("max_seq", sa.BigInteger, nullable=False, server_default="0"),
)

readings = sa.Table(
    "readings",
    metadata,
    _key("id"),
    sa.Column("gateway", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("subject", sa.Text),
    sa.Column("metric", sa.Text, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("unit", sa.Text),
    sa.Column("site", sa.Text),
    sa.Column("quality", sa.JSON, nullable=False),
    sa.Column("measured_at", sa.Text),
    sa.Column("received_at", sa.Text, nullable=False),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    sa.Column("clock", sa.Text, nullable=False),
    sa.Column("offset_ms", sa.BigInteger),
    sa.Column("corrected_ms", sa.BigInteger),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("stored_at", _Time, nullable=False),
    sa.UniqueConstraint("gateway", "seq", name="readings_gateway_seq"),
)

seq_gaps = sa.Table(
    "seq_gaps",
    metadata,
    _key("gateway"),
    sa.Column("from_seq", sa.BigInteger, primary_key=True),
    sa.Column("to_seq", sa.BigInteger, nullable=False),
    sa.Column("opened_at", _Time, nullable=False),
    #: When a consumer last asked the gateway to resend the range, and how often it has.
    sa.Column("requested_at", _Time),
    sa.Column("requests", sa.Integer, nullable=False, server_default="0"),
)

alert_events = sa.Table(
    "alert_events",
    metadata,
    _key("gateway"),
    _key("id"),
    _key("state"),
    _key("updated_at"),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("subject", sa.Text),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("stored_at", _Time, nullable=False),
)

alerts = sa.Table(
    "alerts",
    metadata,
    _key("gateway"),
    _key("id"),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    #: raised 0, updated 1, acknowledged 2, cleared 3: orders events of one time.
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("severity", sa.Text),
    sa.Column("subject", sa.Text),
    sa.Column("device", sa.Text, nullable=False),
    sa.Column("raised_at", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Text, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("cleared_at", sa.Text),
    sa.Column("acknowledged_by", sa.Text),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("stored_at", _Time, nullable=False),
)

devices = sa.Table(
    "devices",
    metadata,
    _key("gateway"),
    _key("id"),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("subject", sa.Text),
    sa.Column("link", sa.Text, nullable=False),
    sa.Column("battery", sa.Float),
    sa.Column("last_seen", sa.Text),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("stored_at", _Time, nullable=False),
)

subjects = sa.Table(
    "subjects",
    metadata,
    _key("gateway"),
    _key("code"),
    sa.Column("risk_grade", sa.Text, nullable=False),
    sa.Column("isolated", sa.Boolean, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("stored_at", _Time, nullable=False),
)

clock_corrections = sa.Table(
    "clock_corrections",
    metadata,
    _key("gateway"),
    sa.Column("from_seq", sa.BigInteger, primary_key=True),
    sa.Column("to_seq", sa.BigInteger, primary_key=True),
    sa.Column("offset_ms", sa.BigInteger, primary_key=True),
    sa.Column("synced_at", sa.Text, nullable=False),
    sa.Column("readings_corrected", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("stored_at", _Time, nullable=False),
)

ledger_days = sa.Table(
    "ledger_days",
    metadata,
    _key("gateway"),
    _key("subject"),
    _key("date"),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("stored_at", _Time, nullable=False),
)

commands = sa.Table(
    "commands",
    metadata,
    _key("id"),
    sa.Column("gateway", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("args", sa.JSON, nullable=False),
    sa.Column("sent_at", sa.Text, nullable=False),
)

command_results = sa.Table(
    "command_results",
    metadata,
    _key("gateway"),
    _key("id"),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error_code", sa.Text),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("at", sa.Text, nullable=False),
    sa.Column("stored_at", _Time, nullable=False),
)

#: Execution option of a connection that only reads (SQLite: no write lock taken).
_READ_ONLY = "township_read_only"
_RANK = {"raised": 0, "updated": 1, "acknowledged": 2, "cleared": 3}


class StoreUnavailable(Exception):
    """The database could not be used (connection lost, locked, deadlock): nothing of
    the batch was stored; try it again."""


@dataclass
class Applied:
    """What one batch did."""

    readings: int = 0
    duplicates: int = 0
    alert_events: int = 0
    #: Indexes of the messages the database refused (stored without them).
    refused: list[int] = field(default_factory=list)


def database_url(target: str) -> str:
    """A SQLAlchemy URL: `target` as it is when it has a scheme, else a SQLite file."""
    if "://" in target:
        return target
    return f"sqlite:///{Path(target).absolute()}"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(target: str) -> Engine:
    """An engine on `target` (a SQLite path or URL, or a PostgreSQL URL)."""
    url = sa.make_url(database_url(target))
    backend = url.get_backend_name()
    if backend == "postgresql":
        return sa.create_engine(url, json_serializer=_json, pool_pre_ping=True)
    if backend != "sqlite":
        raise ValueError(f"{backend}: the township stores into SQLite or PostgreSQL")
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, json_serializer=_json)

    @sa.event.listens_for(engine, "connect")
    def _connected(dbapi: Any, _record: Any) -> None:
        dbapi.isolation_level = None  # transactions are begun below, not by sqlite3
        cursor = dbapi.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a commit is acked: it must last
        cursor.execute("PRAGMA busy_timeout=60000")  # other consumers on the same file
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # Writers take the lock at the start: a read lock turned into a write lock
        # mid-transaction would fail at once (SQLITE_BUSY) against another writer.
        reading = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

    return engine


def _insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has `on_conflict_do_nothing` / `_do_update`."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or (
        isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    )


class TownshipStore:
    def __init__(self, target: str) -> None:
        """Opens (and creates, when missing) the schema at `target`."""
        self.engine = create_engine(target)
        self._known: set[str] = set()
        try:
            metadata.create_all(self.engine)
        except sa.exc.IntegrityError:
            # Another consumer created the same tables at the same moment.
            metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- storing a batch --------------------------------------------------------------

    def apply(self, township: str, messages: Sequence[Message]) -> Applied:
        """Store `messages` in one transaction; a message whose data the database
        refuses is left out (its index in `Applied.refused`). Raises `StoreUnavailable`
        when the database cannot be used."""
        try:
            return self._apply_all(township, messages)
        except Exception as exc:  # any fault in the data is isolated below
            if _transient(exc):
                raise StoreUnavailable(type(exc).__name__) from exc
            if len(messages) == 1:
                # The type only: a database error's text holds the row's values.
                log.warning("row refused by the database", extra={"error": type(exc).__name__})
                return Applied(refused=[0])
        total = Applied()
        for index, message in enumerate(messages):
            done = self.apply(township, [message])
            total.readings += done.readings
            total.duplicates += done.duplicates
            total.alert_events += done.alert_events
            if done.refused:
                total.refused.append(index)
        return total

    def _apply_all(self, township: str, messages: Sequence[Message]) -> Applied:
        batch = _Batch(messages)
        self._ensure_gateways(township, batch.gateways)
        with self.engine.begin() as conn:
            return _Writer(conn, batch).run()

    def _ensure_gateways(self, township: str, names: Iterable[str]) -> None:
        """The gateways' rows, in a transaction of their own: the batch then only
        locks rows that exist."""
        new = sorted(set(names) - self._known)
        if not new:
            return
        with self.engine.begin() as conn:
            conn.execute(
                _insert(conn, gateways).on_conflict_do_nothing(),
                [{"id": name, "township": township} for name in new],
            )
        self._known.update(new)

    # --- commands ---------------------------------------------------------------------

    def record_command(
        self, command_id: str, gateway: str, name: str, args: dict[str, Any], sent_at: str
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                _insert(conn, commands).on_conflict_do_nothing(),
                {"id": command_id, "gateway": gateway, "name": name, "args": args,
                 "sent_at": sent_at},
            )  # fmt: skip

    def record_result(self, gateway: str, result: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            _store_results(conn, [(gateway, result)], datetime.now(UTC))

    # --- repairing gaps ---------------------------------------------------------------

    def claim_gaps(self, after_s: float) -> list[tuple[str, int, int]]:
        """The gaps to ask their gateway to resend now, each claimed by this caller
        alone (other consumers' claims are seen): open for `after_s` at least, of a
        gateway whose last `status`, received since the gap opened, says it has nothing
        left to send (so the gap is not backlog still on its way); asked again after
        `after_s` doubled by each request already made (a gap the gateway can no longer
        fill, readings it evicted or lost, is not asked for every minute for ever)."""
        now = datetime.now(UTC)
        s, g = seq_gaps.c, gateways.c
        query = (
            sa.select(s.gateway, s.from_seq, s.to_seq, s.opened_at, s.requested_at,
                      s.requests, g.state, g.status, g.status_at)
            .join(gateways, g.id == s.gateway)
            .where(s.opened_at <= now - timedelta(seconds=after_s))
            .order_by(s.gateway, s.from_seq)
        )  # fmt: skip
        claimed = []
        with self.engine.begin() as conn:
            for row in conn.execute(query).all():
                if not _drained(row.state, row.status, row.status_at, row.opened_at):
                    continue
                wait = timedelta(seconds=after_s * 2 ** min(row.requests, 20))
                if row.requested_at is not None and _utc(row.requested_at) + wait > now:
                    continue
                done = conn.execute(
                    seq_gaps.update()
                    .where(s.gateway == row.gateway, s.from_seq == row.from_seq,
                           s.requests == row.requests)
                    .values(requested_at=now, requests=row.requests + 1)
                )  # fmt: skip
                if done.rowcount == 1:
                    claimed.append((row.gateway, row.from_seq, row.to_seq))
        return claimed

    # --- reading ----------------------------------------------------------------------

    def rows(self, query: sa.Select[Any]) -> list[sa.Row[Any]]:
        with self.engine.connect().execution_options(**{_READ_ONLY: True}) as conn:
            return list(conn.execute(query))


class _Batch:
    """A batch's messages sorted by what they write; for the retained sets, the last
    one of each gateway."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self.readings: dict[str, tuple[str, dict[str, Any], int]] = {}
        self.events: dict[tuple[str, str, str, str], tuple[dict[str, Any], int]] = {}
        self.alerts: list[tuple[str, dict[str, Any], int]] = []
        self.status: dict[str, StatusIn] = {}
        self.devices: dict[str, DevicesIn] = {}
        self.subjects: dict[str, SubjectsIn] = {}
        self.clock: dict[tuple[str, int, int, int], ClockIn] = {}
        self.ledger: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.results: list[tuple[str, dict[str, Any]]] = []
        self.gateways: set[str] = set()
        for message in messages:
            self.gateways.add(message.gateway)
            self._add(message)

    def _add(self, message: Message) -> None:
        gateway = message.gateway
        if isinstance(message, ReadingsIn):
            for reading, ms in zip(message.readings, message.received_ms, strict=True):
                self.readings[reading["id"]] = (gateway, reading, ms)
        elif isinstance(message, AlertEventIn):
            event = message.event
            key = (gateway, event["id"], event["state"], event["updated_at"])
            self.events[key] = (event, message.updated_ms)
            self.alerts.append((gateway, event, message.updated_ms))
        elif isinstance(message, ActiveAlertsIn):
            for alert, ms in zip(message.alerts, message.updated_ms, strict=True):
                self.alerts.append((gateway, alert, ms))
        elif isinstance(message, StatusIn):
            self.status[gateway] = message
        elif isinstance(message, DevicesIn):
            self.devices[gateway] = message
        elif isinstance(message, SubjectsIn):
            self.subjects[gateway] = message
        elif isinstance(message, ClockIn):
            key = (gateway, message.from_seq, message.to_seq, message.offset_ms)
            self.clock[key] = message
        elif isinstance(message, LedgerIn):
            self.ledger[(gateway, message.day["subject"], message.day["date"])] = message.day
        else:
            self.results.append((gateway, message.result))


def _alert_order(state: str, updated_ms: int) -> tuple[bool, int, int]:
    """Which of two events of one alert is the later: a clear (an episode ends once),
    then the later `updated_at`, then the later state. A clear is told apart from the
    times because a clock correction may move an alert's later times before its
    earlier ones."""
    return (state == "cleared", updated_ms, _RANK[state])


class _Writer:
    """One batch's statements, on one transaction."""

    def __init__(self, conn: Connection, batch: _Batch) -> None:
        self.conn = conn
        self.batch = batch
        self.now = datetime.now(UTC)
        self.applied = Applied()

    def run(self) -> Applied:
        new_seqs = self._readings()
        self._events()
        self._alerts()
        new_clock = self._clock_corrections()
        _store_results(self.conn, self.batch.results, self.now)
        self._ledger()
        # Then what needs each gateway's readings in order, under its row's lock.
        locked = self._lock_gateways()
        self._seqs(new_seqs, locked)
        self._correct(new_clock, new_seqs)
        self._retained()
        return self.applied

    def _readings(self) -> dict[str, list[tuple[int, str]]]:
        """Insert the new readings; returns each gateway's new (seq, clock), sorted."""
        batch = self.batch
        if not batch.readings:
            return {}
        rows = [
            _reading_row(gateway, reading, ms, self.now)
            for _, (gateway, reading, ms) in sorted(batch.readings.items())
        ]
        statement = (
            _insert(self.conn, readings)
            .on_conflict_do_nothing()
            .returning(readings.c.gateway, readings.c.seq, readings.c.clock)
        )
        new: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for gateway, seq, clock in self.conn.execute(statement, rows):
            new[gateway].append((seq, clock))
        for seqs in new.values():
            seqs.sort()
        self.applied.readings = sum(len(seqs) for seqs in new.values())
        self.applied.duplicates = len(rows) - self.applied.readings
        return new

    def _events(self) -> None:
        if not self.batch.events:
            return
        rows = [
            {
                "gateway": gateway, "id": alert_id, "state": state, "updated_at": updated_at,
                "updated_ms": ms, "kind": event["kind"], "subject": event["subject"],
                "device": event["device"], "payload": event, "stored_at": self.now,
            }
            for (gateway, alert_id, state, updated_at), (event, ms) in sorted(
                self.batch.events.items()
            )
        ]  # fmt: skip
        statement = (
            _insert(self.conn, alert_events).on_conflict_do_nothing().returning(alert_events.c.id)
        )
        self.applied.alert_events = len(list(self.conn.execute(statement, rows)))

    def _alerts(self) -> None:
        """Each alert's latest event, moved forward only (`_alert_order`)."""
        latest: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        for gateway, event, ms in self.batch.alerts:
            key = (gateway, event["id"])
            known = latest.get(key)
            if known is None or _alert_order(event["state"], ms) > _alert_order(
                known[0]["state"], known[1]
            ):
                latest[key] = (event, ms)
        if not latest:
            return
        rows = [
            {
                "gateway": gateway, "id": alert_id, "kind": event["kind"],
                "state": event["state"], "rank": _RANK[event["state"]],
                "severity": event["severity"], "subject": event["subject"],
                "device": event["device"], "raised_at": event["raised_at"],
                "updated_at": event["updated_at"], "updated_ms": ms,
                "cleared_at": event["cleared_at"], "acknowledged_by": event["acknowledged_by"],
                "payload": event, "stored_at": self.now,
            }
            for (gateway, alert_id), (event, ms) in sorted(latest.items())
        ]  # fmt: skip
        statement = _insert(self.conn, alerts)
        new, old = statement.excluded, alerts.c
        later = sa.or_(
            sa.and_(new.state == "cleared", old.state != "cleared"),
            sa.and_(
                old.state != "cleared",
                sa.or_(
                    new.updated_ms > old.updated_ms,
                    sa.and_(new.updated_ms == old.updated_ms, new.rank > old.rank),
                ),
            ),
        )
        columns = [c.name for c in alerts.columns if c.name not in ("gateway", "id")]
        statement = statement.on_conflict_do_update(
            index_elements=[old.gateway, old.id],
            set_={name: new[name] for name in columns},
            where=later,
        )
        self.conn.execute(statement, rows)

    def _clock_corrections(self) -> list[ClockIn]:
        """Insert the corrections; returns those new to the database."""
        if not self.batch.clock:
            return []
        rows = [
            {
                "gateway": c.gateway, "from_seq": c.from_seq, "to_seq": c.to_seq,
                "offset_ms": c.offset_ms, "synced_at": c.synced_at, "stored_at": self.now,
            }
            for _, c in sorted(self.batch.clock.items())
        ]  # fmt: skip
        table = clock_corrections
        statement = (
            _insert(self.conn, table)
            .on_conflict_do_nothing()
            .returning(table.c.gateway, table.c.from_seq, table.c.to_seq, table.c.offset_ms)
        )
        return [self.batch.clock[tuple(row)] for row in self.conn.execute(statement, rows)]

    def _ledger(self) -> None:
        if not self.batch.ledger:
            return
        rows = [
            {"gateway": g, "subject": s, "date": d, "payload": day, "stored_at": self.now}
            for (g, s, d), day in sorted(self.batch.ledger.items())
        ]
        self.conn.execute(_insert(self.conn, ledger_days).on_conflict_do_nothing(), rows)

    def _lock_gateways(self) -> dict[str, int]:
        """Lock the batch's gateways' rows, in order; returns their `max_seq`."""
        query = (
            sa.select(gateways.c.id, gateways.c.max_seq)
            .where(gateways.c.id.in_(sorted(self.batch.gateways)))
            .order_by(gateways.c.id)
            .with_for_update()
        )
        return {name: max_seq for name, max_seq in self.conn.execute(query)}

    def _seqs(self, new: dict[str, list[tuple[int, str]]], locked: dict[str, int]) -> None:
        """Move each gateway's `max_seq` on; open gaps for seqs skipped, close those the
        new readings fill."""
        filling = [g for g, seqs in new.items() if seqs[0][0] <= locked[g]]
        open_gaps: dict[str, list[tuple[int, int]]] = defaultdict(list)
        if filling:
            query = sa.select(seq_gaps.c.gateway, seq_gaps.c.from_seq, seq_gaps.c.to_seq).where(
                seq_gaps.c.gateway.in_(filling)
            )
            for gateway, low, high in self.conn.execute(query):
                open_gaps[gateway].append((low, high))
        for gateway in sorted(self.batch.gateways):
            values: dict[str, Any] = {"last_message_at": self.now}
            seqs = [seq for seq, _ in new.get(gateway, ())]
            if seqs:
                top = locked[gateway]
                gaps, changed = _gaps_after(open_gaps[gateway], top, seqs)
                if changed:
                    self._replace_gaps(gateway, open_gaps[gateway], gaps)
                values["max_seq"] = max(top, seqs[-1])
            self.conn.execute(gateways.update().where(gateways.c.id == gateway).values(values))

    def _replace_gaps(
        self, gateway: str, before: list[tuple[int, int]], after: list[tuple[int, int]]
    ) -> None:
        kept = set(before) & set(after)
        gone = [low for low, high in before if (low, high) not in kept]
        if gone:
            self.conn.execute(
                seq_gaps.delete().where(
                    seq_gaps.c.gateway == gateway, seq_gaps.c.from_seq.in_(gone)
                )
            )
        added = [
            {"gateway": gateway, "from_seq": low, "to_seq": high, "opened_at": self.now}
            for low, high in after
            if (low, high) not in kept
        ]
        if added:
            self.conn.execute(seq_gaps.insert(), added)

    def _correct(self, new_clock: list[ClockIn], new: dict[str, list[tuple[int, str]]]) -> None:
        """Apply each new correction to the readings of its span received unsynced, and
        the known corrections to new unsynced readings of their spans: once each, as a
        reading already corrected is left alone."""
        for c in new_clock:
            count = self._correct_span(c.gateway, c.from_seq, c.to_seq, c.offset_ms)
            self._count_corrected(c.gateway, c.from_seq, c.to_seq, c.offset_ms, count)
        for gateway, seqs in sorted(new.items()):
            unsynced = [seq for seq, clock in seqs if clock == "unsynced"]
            if not unsynced:
                continue
            table = clock_corrections.c
            spans = self.conn.execute(
                sa.select(table.from_seq, table.to_seq, table.offset_ms).where(
                    table.gateway == gateway,
                    table.from_seq <= unsynced[-1],
                    table.to_seq >= unsynced[0],
                )
            ).all()
            for low, high, offset in spans:
                first, last = max(low, unsynced[0]), min(high, unsynced[-1])
                count = self._correct_span(gateway, first, last, offset)
                self._count_corrected(gateway, low, high, offset, count)

    def _correct_span(self, gateway: str, low: int, high: int, offset: int) -> int:
        r = readings.c
        result = self.conn.execute(
            readings.update()
            .where(
                r.gateway == gateway,
                r.seq.between(low, high),
                r.clock == "unsynced",
                r.offset_ms.is_(None),
            )
            .values(offset_ms=offset, corrected_ms=r.received_ms + offset)
        )
        return int(result.rowcount)

    def _count_corrected(self, gateway: str, low: int, high: int, offset: int, n: int) -> None:
        if n == 0:
            return
        c = clock_corrections.c
        self.conn.execute(
            clock_corrections.update()
            .where(c.gateway == gateway, c.from_seq == low, c.to_seq == high, c.offset_ms == offset)
            .values(readings_corrected=c.readings_corrected + n)
        )

    def _retained(self) -> None:
        """The latest `status`, `devices` and `subjects` of each gateway: these sets
        replace what was there."""
        for gateway, status in sorted(self.batch.status.items()):
            self.conn.execute(
                gateways.update()
                .where(gateways.c.id == gateway)
                .values(state=status.state, status=status.status, status_at=self.now)
            )
        for gateway, message in sorted(self.batch.devices.items()):
            self.conn.execute(devices.delete().where(devices.c.gateway == gateway))
            rows = [
                {
                    "gateway": gateway, "id": d["id"], "kind": d["kind"],
                    "subject": d["subject"], "link": d["link"], "battery": d["battery"],
                    "last_seen": d["last_seen"], "payload": d, "stored_at": self.now,
                }
                for d in _unique(message.devices, "id")
            ]  # fmt: skip
            if rows:
                self.conn.execute(devices.insert(), rows)
        for gateway, sent in sorted(self.batch.subjects.items()):
            self.conn.execute(subjects.delete().where(subjects.c.gateway == gateway))
            rows = [
                {
                    "gateway": gateway, "code": s["code"], "risk_grade": s["risk_grade"],
                    "isolated": s["isolated"], "payload": s, "stored_at": self.now,
                }
                for s in _unique(sent.subjects, "code")
            ]  # fmt: skip
            if rows:
                self.conn.execute(subjects.insert(), rows)


def _utc(moment: datetime) -> datetime:
    """SQLite gives back the UTC times stored without their zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _drained(state: str | None, status: Any, status_at: datetime | None, since: datetime) -> bool:
    """Whether the gateway said, after `since`, that it has no readings left to send."""
    if state not in ("online", "degraded") or status_at is None:
        return False
    if _utc(status_at) <= _utc(since):
        return False
    queue = status.get("queue") if isinstance(status, dict) else None
    return isinstance(queue, dict) and queue.get("undelivered") == 0


def _unique(entries: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The last entry of each key (a set that names one twice keeps one row)."""
    return list({entry[key]: entry for entry in entries}.values())


def _reading_row(gateway: str, r: dict[str, Any], ms: int, now: datetime) -> dict[str, Any]:
    return {
        "id": r["id"], "gateway": gateway, "seq": r["seq"], "device": r["device"],
        "subject": r["subject"], "metric": r["metric"], "value": float(r["value"]),
        "unit": r["unit"], "site": r["site"], "quality": r["quality"],
        "measured_at": r["measured_at"], "received_at": r["received_at"],
        "received_ms": ms, "clock": r["clock"], "payload": r, "stored_at": now,
    }  # fmt: skip


def _store_results(
    conn: Connection, results: Sequence[tuple[str, dict[str, Any]]], now: datetime
) -> None:
    keyed = {(gateway, result["id"]): result for gateway, result in results}
    if not keyed:
        return
    rows = [
        {
            "gateway": gateway, "id": command_id, "command": r["command"], "ok": r["ok"],
            "error_code": (r["error"] or {}).get("code"), "payload": r, "at": r["at"],
            "stored_at": now,
        }
        for (gateway, command_id), r in sorted(keyed.items())
    ]  # fmt: skip
    conn.execute(_insert(conn, command_results).on_conflict_do_nothing(), rows)


def _gaps_after(
    gaps: list[tuple[int, int]], top: int, seqs: list[int]
) -> tuple[list[tuple[int, int]], bool]:
    """The open gaps once `seqs` (sorted, new) are stored, the highest seq stored
    before them being `top`; and whether they changed."""
    below = [seq for seq in seqs if seq <= top]
    result: list[tuple[int, int]] = []
    for low, high in sorted(gaps):
        start = low
        for seq in below[bisect_left(below, low) : bisect_right(below, high)]:
            if seq > start:
                result.append((start, seq - 1))
            start = seq + 1
        if start <= high:
            result.append((start, high))
    previous = top
    for seq in seqs:
        if seq > previous + 1:
            result.append((previous + 1, seq - 1))
        previous = max(previous, seq)
    return result, result != sorted(gaps)
