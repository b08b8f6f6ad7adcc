"""systemd sees the gateway as ready only once it runs, and hears the watchdog."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from gateway.broker import Mosquitto
from tests.conftest import REPO, write_config


def test_ready_and_watchdog_notifications_reach_systemd(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(20)
    config = write_config(tmp_path, mosquitto.port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        env={**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        messages = [sock.recv(256).decode() for _ in range(3)]
        assert messages[0] == "READY=1"
        assert messages[1:] == ["WATCHDOG=1", "WATCHDOG=1"]
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        sock.close()
