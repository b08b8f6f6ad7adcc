"""Data flows one way: drivers know nothing of the gateway, the service never loads the
simulator, and a serial-only gateway never loads the Bluetooth stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", files("drivers"), ids=lambda p: str(p.relative_to(REPO)))
def test_drivers_import_neither_the_gateway_nor_the_simulator(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.split(".")[0] in ("gateway", "firmware_sim")}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", files("gateway"), ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_demo_in_the_gateway_uses_the_simulator(path: Path) -> None:
    if path.name == "demo.py":
        return
    bad = {m for m in imported_modules(path) if m.split(".")[0] == "firmware_sim"}
    assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_a_serial_only_gateway_never_loads_bleak_bumble_pyserial_or_aes_at_import() -> None:
    heavy = "{'bleak', 'bumble', 'serial', 'cryptography'}"
    probe = (
        "import sys, gateway.service, gateway.cli, drivers.kinds, drivers.decode;"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "[]"
