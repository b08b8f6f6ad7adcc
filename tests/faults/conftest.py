"""Fixtures of the fault suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.disks import tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """1 MiB: a full SD card in miniature."""
    with tmpfs(tmp_path / "small-disk", "size=1m") as disk:
        yield disk
