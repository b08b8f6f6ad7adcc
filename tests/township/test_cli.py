"""`bedside-gateway township`: its settings from a TOML file and the options, one-line
errors, and none of it loaded when the gateway runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.township.store import TownshipStore
from tests.conftest import REPO
from tests.township.test_store import TOWN, online


def township(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "township", *args],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip


def test_the_gateway_never_loads_the_township_code_or_its_database_drivers() -> None:
    probe = (
        "import sys, gateway.service, gateway.cli;"
        "print(sorted(m for m in sys.modules if m.startswith('gateway.township')"
        " or m.split('.')[0] in ('sqlalchemy', 'psycopg')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_report_reads_the_database_named_in_the_config_file(tmp_path: Path) -> None:
    store = TownshipStore(str(tmp_path / "data" / "township.sqlite3"))
    store.apply(TOWN, [online()])
    store.close()
    config = tmp_path / "township.toml"
    config.write_text(f'[township]\nname = "{TOWN}"\ndatabase = "data/township.sqlite3"\n')
    done = township("gateways", "--config", str(config))
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split()[:3] == ["gateway", "township", "state"]
    assert row.split()[:3] == ["gw-test", TOWN, "online"]


def test_settings_that_cannot_work_are_one_line_errors(tmp_path: Path) -> None:
    config = tmp_path / "township.toml"
    config.write_text(f'[township]\nname = "{TOWN}"\n[mqtt]\nprotocol = "3.1.1"\n')
    done = township("run", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        'config error: mqtt: protocol must be "5": shared subscriptions are MQTT 5'
    ]
    done = township("run", "--broker", "mqtt://127.0.0.1:1", "--township", "a b")
    assert done.returncode == 2 and "township.name" in done.stderr
    done = township("command", "gw-1", "ping", "--township", TOWN, "--args", "[1]")
    assert done.returncode == 2 and "--args: must be a JSON object" in done.stderr
