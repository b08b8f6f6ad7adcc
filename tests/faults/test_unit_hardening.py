"""The systemd unit stays hardened, and systemd accepts every line of it.

Both checks run offline (no systemd manager needed): `systemd-analyze security` rates
the unit file itself, and `systemd-analyze verify --root=` loads it from a directory
laid out as systemd/install.sh installs it. A hardening line systemd cannot parse is
only warned about and ignored, so verify must say nothing about the unit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO

UNIT = REPO / "systemd" / "bedside-gateway.service"
MAX_EXPOSURE = 2.5
# Where Debian keeps systemd's own units (sysinit.target, modprobe@.service...):
# /lib is /usr/lib on a merged-/usr system, its own directory on an older one.
SYSTEM_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("systemd-analyze"), "systemd-analyze missing: apt-get install systemd"
    return subprocess.run(
        ["systemd-analyze", "--no-pager", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_COLORS": "0"},
    )


def test_the_unit_is_rated_at_most_2_5_by_systemd_analyze_security() -> None:
    result = _analyze("security", "--offline=true", str(UNIT))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def _installed_root(root: Path) -> None:
    """What install.sh leaves behind, under `root`: the unit enabled in /etc, the
    command in the venv, the settings file; plus systemd's own units, which the
    gateway's unit depends on."""
    system = root / "etc/systemd/system"
    (system / "multi-user.target.wants").mkdir(parents=True)
    shutil.copy(UNIT, system / UNIT.name)
    (system / "multi-user.target.wants" / UNIT.name).symlink_to(f"/etc/systemd/system/{UNIT.name}")
    command = root / "opt/bedside-gateway/venv/bin/bedside-gateway"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    (root / "etc/bedside-gateway").mkdir()
    shutil.copy(REPO / "examples" / "gateway.toml", root / "etc/bedside-gateway/gateway.toml")
    host_units = next(d for d in SYSTEM_UNIT_DIRS if (d / "sysinit.target").exists())
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "lib").symlink_to("usr/lib")  # the units' absolute links into /lib resolve


def test_systemd_analyze_verify_finds_nothing_wrong_with_the_installed_unit(
    tmp_path: Path,
) -> None:
    _installed_root(tmp_path)
    result = _analyze("verify", f"--root={tmp_path}", UNIT.name)
    about_the_unit = [
        line for line in (result.stdout + result.stderr).splitlines() if "bedside-gateway" in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert about_the_unit == []
