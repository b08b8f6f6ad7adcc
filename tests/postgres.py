"""A private PostgreSQL server for the tests, from Debian's packages.

`postgres_server` (session) initdbs a cluster in a fresh temporary directory and runs
`postgres` from `/usr/lib/postgresql/<version>/bin` on 127.0.0.1 at a free port (its unix
socket in that directory); `postgres_url` (per test) is a SQLAlchemy URL
(`postgresql+psycopg://...`) to a new, empty database on it, dropped after the test.
Nothing relies on a server the machine happens to run (the system's on 5432 is never
touched): the tests start, stop and remove their own.

PostgreSQL refuses to run as root, and CI runs as root: then initdb and the server run
as the `postgres` user that Debian's package creates, and the directory (under the
system's temporary directory, which that user can reach) is handed to it. Host
connections need the superuser's password, which is random per server, so no other
local user can use the server; fsync is off (a crash of the test machine may lose the
test data, which is thrown away anyway).

Written here rather than taken from a library (pytest-postgresql, testing.postgresql):
those find `pg_ctl` on PATH and run it as the current user, so as root they fail; this is
the few calls that start Debian's binaries as another user.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from psycopg import sql

from gateway.broker import free_port

SUPERUSER = "tests"
#: The unprivileged account the server runs as when the tests run as root.
SERVER_ACCOUNT = "postgres"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def server_binaries() -> Path:
    """The bin directory of the newest PostgreSQL server installed from Debian's packages."""
    found = []
    for bindir in Path("/usr/lib/postgresql").glob("*/bin"):
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            version = tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name))
            found.append((version, bindir))
    if not found:
        raise FileNotFoundError(
            "PostgreSQL's server is not installed (apt-get install -y postgresql)"
        )
    return max(found)[1]


class PostgresServer:
    """One PostgreSQL cluster of our own: `start()`, `create_database()`, `close()`."""

    def __init__(self, port: int | None = None) -> None:
        self.bindir = server_binaries()
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(18)
        self.workdir = Path(tempfile.mkdtemp(prefix="postgres-"))
        self.data_dir = self.workdir / "data"
        self.socket_dir = self.workdir / "socket"
        self.log_path = self.workdir / "postgres.log"
        self._account = pwd.getpwnam(SERVER_ACCOUNT) if os.geteuid() == 0 else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._databases = 0

    def _as_server(self) -> dict[str, Any]:
        """subprocess arguments that run a child as the server's account (when root)."""
        env = {**os.environ, "LC_ALL": "C"}
        if self._account is None:
            return {"env": env}
        env["HOME"] = str(self.workdir)
        return {
            "env": env,
            "user": self._account.pw_uid,
            "group": self._account.pw_gid,
            "extra_groups": [],
        }

    def _hand_over(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def start(self) -> PostgresServer:
        try:
            self._initdb()
            self._run()
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _initdb(self) -> None:
        self._hand_over(self.workdir)  # mkdtemp made it 0700
        self.socket_dir.mkdir()
        self._hand_over(self.socket_dir)
        password_file = self.workdir / "password"
        password_file.write_text(self.password + "\n")
        self._hand_over(password_file)
        done = subprocess.run(
            [
                str(self.bindir / "initdb"),
                f"--pgdata={self.data_dir}",
                f"--username={SUPERUSER}",
                f"--pwfile={password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",  # the socket is in our 0700 directory
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **self._as_server(),
        )
        password_file.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stdout.decode()}")

    def _run(self) -> None:
        self._log = self.log_path.open("ab")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        command = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        self._proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, **self._as_server()
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited ({self._proc.returncode}) on start: {self.log_text()}"
                )
            try:
                psycopg.connect(self._dsn("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL accepted no connection within {START_TIMEOUT_S} s:"
                        f" {self.log_text()}"
                    ) from None
                time.sleep(0.05)

    def _dsn(self, database: str) -> str:
        return (
            f"host=127.0.0.1 port={self.port} dbname={database}"
            f" user={SUPERUSER} password={self.password}"
        )

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one database on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drops it, ending the connections a test left open."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT: open sessions are ended), killed if it hangs."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGINT)
                try:
                    self._proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stops the server and removes its files."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """`postgresql+psycopg://...` of a fresh, empty database for this test alone."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
