"""Running the benchmark's commands as a user does, from the repository."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def run_module(
    module: str, *args: str, timeout: float, exit_status: int = 0
) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS`, its output captured; asserts that it exited with
    `exit_status`."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == exit_status, done.stdout + done.stderr
    return done
