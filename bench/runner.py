"""Runs one measurement in a child process (`python -m bench.child`) and collects its
result line; a child that fails or overruns becomes an error, never a hang."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.child import MARK
from bench.common import Result

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Outcome:
    scenario: str
    n: int
    result: Result | None
    error: str = ""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None


def run_child(scenario: str, n: int, timeout_s: float, options: Sequence[str] = ()) -> Outcome:
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.child", scenario, str(n), *options],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        out, err = _stop(proc)
        return Outcome(scenario, n, None, f"timed out after {timeout_s:.0f} s{_tail(err)}")
    except KeyboardInterrupt:
        _stop(proc)
        raise
    wall_s = time.monotonic() - start
    for line in out.splitlines():
        if line.startswith(MARK):
            return Outcome(scenario, n, json.loads(line[len(MARK) :]), wall_s=wall_s)
    return Outcome(scenario, n, None, f"exit code {proc.returncode}{_tail(err)}", wall_s)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM first: the child then kills its mosquitto and removes its files."""
    proc.terminate()
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def _tail(text: str, lines: int = 15) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return (":\n    " + "\n    ".join(kept)) if kept else ""
