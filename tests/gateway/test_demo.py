"""`bedside-gateway demo` shows the whole chain and stops by itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway.broker import free_port
from tests.conftest import REPO


def run_demo(*options: str) -> list[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--http",
            f"127.0.0.1:{free_port()}",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout.splitlines()


def messages(lines: list[str]) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in lines if line.startswith('{"topic"')]


@pytest.mark.parametrize(
    ("broker", "says"),
    [((), "broker: mosquitto started on mqtt://127.0.0.1:"), (("--broker", "builtin"), "amqtt")],
)
def test_the_demo_prints_what_the_server_receives_and_exits(
    broker: tuple[str, ...], says: str
) -> None:
    lines = run_demo("--duration", "12", "--scenario", "fever", *broker)
    assert any(says in line for line in lines), lines[:3]
    assert any(line.startswith("status page: http://127.0.0.1:") for line in lines)
    received = messages(lines)
    temperatures = [
        r
        for m in received
        if "/readings/" in m["topic"]
        for r in m["payload"]["readings"]
        if r["metric"] == "body_temperature"
    ]
    assert temperatures and temperatures[0]["value"] == 38.2
    alerts = [m["payload"] for m in received if m["topic"].endswith("/alerts")]
    assert alerts and alerts[0]["kind"] == "fever" and alerts[0]["subject"] == "bed-1"
