"""Fixtures of the fault suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.serial.contec import Generation
from firmware_sim.cms50 import Cms50Simulator
from tests.conftest import Subscriber
from tests.faults.disks import tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """1 MiB: a full SD card in miniature."""
    with tmpfs(tmp_path / "small-disk", "size=1m") as disk:
        yield disk


@pytest.fixture
def cms50_factory(tmp_path: Path) -> Iterator[Callable[..., Cms50Simulator]]:
    """CMS50 simulators on pseudo-terminals, at `<tmp_path>/<name>` (a stable path to
    configure even before `start`), stopped after the test."""
    made: list[Cms50Simulator] = []

    def make(scenario: str, name: str = "usb-a", start: bool = True) -> Cms50Simulator:
        sim = Cms50Simulator(Generation.V46, scenario, link=str(tmp_path / name))
        made.append(sim)
        if start:
            sim.start()
        return sim

    yield make
    for sim in made:
        sim.stop()


def cms50_devices(*sims: Cms50Simulator) -> str:
    """`[[devices]]` entries for `sims`, bound to bed-1, bed-2, ..."""
    return "".join(
        f'[[devices]]\nkind = "cms50"\nport = "{sim.path}"\nsubject = "bed-{n}"\n'
        for n, sim in enumerate(sims, start=1)
    )


def alerts_of(sub: Subscriber, kind: str) -> list[dict[str, Any]]:
    return [a for a in sub.alerts() if a["kind"] == kind]
