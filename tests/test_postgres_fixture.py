"""The tests' own PostgreSQL (tests/postgres.py): working, empty, private, and gone after."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.postgres import PostgresServer

NOTES = sa.Table(
    "notes",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
)


def test_a_table_written_is_read_back(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        NOTES.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(NOTES.insert(), [{"text": "bed 3 checked"}, {"text": "体温正常"}])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(NOTES.c.text).order_by(NOTES.c.id)).scalars().all()
    finally:
        engine.dispose()
    assert rows == ["bed 3 checked", "体温正常"]


def test_each_test_database_starts_empty_and_sees_no_other(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    first = sa.create_engine(postgres_url)
    second_url = postgres_server.create_database()
    second = sa.create_engine(second_url)
    try:
        assert sa.inspect(first).get_table_names() == []
        NOTES.metadata.create_all(first)
        assert sa.inspect(first).get_table_names() == ["notes"]
        assert sa.inspect(second).get_table_names() == []
    finally:
        first.dispose()
        second.dispose()
        postgres_server.drop_database(second_url)


def test_the_server_is_the_tests_own(postgres_server: PostgresServer, postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            port = conn.execute(sa.text("SELECT inet_server_port()")).scalar_one()
            data_dir = conn.execute(sa.text("SHOW data_directory")).scalar_one()
    finally:
        engine.dispose()
    assert port == postgres_server.port != 5432
    assert Path(data_dir) == postgres_server.data_dir
    assert sa.make_url(postgres_url).port == postgres_server.port


def test_a_url_without_the_password_is_refused(postgres_url: str) -> None:
    engine = sa.create_engine(sa.make_url(postgres_url).set(password="wrong"))
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            engine.connect()
    finally:
        engine.dispose()


def test_closing_stops_the_server_and_removes_its_files() -> None:
    server = PostgresServer().start()
    url = server.create_database()
    engine = sa.create_engine(url)
    conn = engine.connect()  # a session left open does not hold the stop up
    conn.execute(sa.text("SELECT 1"))
    server.close()
    conn.invalidate()  # its server is gone: closing it would talk to nobody
    engine.dispose()
    assert not server.workdir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_a_server_that_cannot_start_says_why_and_leaves_nothing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = PostgresServer(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match=r"(?s)exited \(1\) on start:.*could not bind"):
            server.start()
    assert not server.workdir.exists()
