"""The township's database, on SQLite and on a private PostgreSQL (tests/postgres.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "township.sqlite3")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def sqlite_file(tmp_path: Path) -> str:
    return str(tmp_path / "township.sqlite3")
