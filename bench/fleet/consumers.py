"""The township side of the fleet bench: K consumer processes of the real township
consumer (`python -m gateway.cli township run`, one shared-subscription group, one
SQLite file), and what the bench reads back from their database."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.common import percentile
from bench.fleet.gateways import TOWNSHIP
from bench.fleet.procstat import cpu_s

GROUP = "township"
#: A seq gap is asked for again this long after it opened (the consumer's default is
#: 60 s; a bench run is short, and a broker restart's backlog arrives within seconds).
REPAIR_AFTER_S = 10
_SUBSCRIBED = "township consumer subscribed"
_ASKED = "gap asked for again"


class Consumer:
    """One consumer process; its CPU time is kept across a kill and a restart."""

    def __init__(self, name: str, broker_url: str, database: Path, logs: Path) -> None:
        self.name = name
        self._args = [
            sys.executable, "-m", "gateway.cli", "township", "run",
            "--broker", broker_url, "--township", TOWNSHIP, "--group", GROUP,
            "--name", name, "--database", str(database),
            "--repair-after", str(REPAIR_AFTER_S), "--log-level", "INFO",
        ]  # fmt: skip
        self._log = logs / f"consumer-{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._cpu_before = 0.0  # of earlier incarnations
        self._starts = 0

    def start(self, timeout_s: float = 60.0) -> None:
        """Start it and wait until it is subscribed (its log says so)."""
        self._starts += 1
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(self._args, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while self._log.read_text(errors="replace").count(_SUBSCRIBED) < self._starts:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"consumer {self.name} did not subscribe: {self.log_tail()}")
            time.sleep(0.05)

    def cpu_s(self) -> float:
        return self._cpu_before + (cpu_s(self._proc.pid) if self._proc is not None else 0.0)

    def kill(self) -> None:
        """SIGKILL: no clean disconnect, a batch perhaps half committed."""
        if self._proc is not None:
            self._cpu_before += cpu_s(self._proc.pid)
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self._cpu_before += cpu_s(self._proc.pid)
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def asked_again(self) -> int:
        """Readings this consumer asked the gateways for again (`resend`), from its log."""
        n = 0
        for line in self._log.read_text(errors="replace").splitlines():
            if _ASKED in line:
                entry = json.loads(line)
                n += entry["to_seq"] - entry["from_seq"] + 1
        return n

    def log_tail(self) -> str:
        return self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""


def _connect(database: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=60))


def stored(database: Path) -> int:
    """Readings in the database (0 before the consumers made it)."""
    if not database.exists():
        return 0
    with _connect(database) as db:
        try:
            return int(db.execute("SELECT count(*) FROM readings").fetchone()[0])
        except sqlite3.OperationalError:  # the schema not made yet
            return 0


#: Unix ms of a stored_at (SQLAlchemy writes UTC DateTimes as ISO text on SQLite).
_STORED_MS = "(julianday(stored_at) - 2440587.5) * 86400000.0"


def missing(database: Path, last_seqs: dict[str, int]) -> int:
    """Reading ids committed by the gateways (`<id>-1` .. `<id>-<last seq>`) that are
    not in the database; raises if it holds a seq no gateway committed."""
    with _connect(database) as db:
        rows = db.execute("SELECT gateway, count(*), max(seq) FROM readings GROUP BY gateway")
        present = {gateway: (n, top) for gateway, n, top in rows}
    strays = [gw for gw, (_, top) in present.items() if top > last_seqs.get(gw, 0)]
    if strays:
        raise RuntimeError(f"readings no gateway committed, from {strays[:3]}")
    return sum(last - present.get(gw, (0, 0))[0] for gw, last in last_seqs.items())


def duplicates(database: Path) -> int:
    """Readings stored more than once (0 by the schema: the id is the key)."""
    with _connect(database) as db:
        total, distinct = db.execute("SELECT count(*), count(DISTINCT id) FROM readings").fetchone()
    return int(total - distinct)


def stored_between(database: Path, start_ms: float, end_ms: float) -> int:
    with _connect(database) as db:
        return int(
            db.execute(
                f"SELECT count(*) FROM readings WHERE {_STORED_MS} BETWEEN ? AND ?",
                (start_ms, end_ms),
            ).fetchone()[0]
        )


def latencies_ms(
    database: Path, received_from_ms: float, received_to_ms: float
) -> dict[str, float]:
    """p50 / p99 / max of stored_at - received_at over the readings received in the
    span: the gateway's commit, its uplink, the broker, the consumer's batch, the
    database's commit (stored_at is taken as the consumer's transaction begins)."""
    with _connect(database) as db:
        values = [
            row[0]
            for row in db.execute(
                f"SELECT {_STORED_MS} - received_ms FROM readings"
                " WHERE received_ms BETWEEN ? AND ?",
                (received_from_ms, received_to_ms),
            )
        ]
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
    }
