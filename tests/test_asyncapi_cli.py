"""docs/asyncapi.yaml is valid by the AsyncAPI project's own CLI (`asyncapi validate`,
@asyncapi/cli as package-lock.json pins it, installed by `make`), schemas and references
included; and a broken copy is refused, so the check can fail."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

CLI = REPO / "node_modules" / ".bin" / "asyncapi"
DOCUMENT = REPO / "docs" / "asyncapi.yaml"
ERROR, WARNING = 0, 1  # the severities of the CLI's diagnostics (Spectral's)


def validate(document: Path, home: Path) -> tuple[int, list[dict[str, Any]]]:
    """The CLI's exit status and diagnostics for `document`; warnings fail it too. Its
    anonymous metrics and its check for a newer version (both over the network) are off,
    and it writes its settings under `home`."""
    assert CLI.exists(), f"no {CLI.relative_to(REPO)}: run `make node_modules/.installed`"
    settings = home / "asyncapi-analytics.json"
    settings.write_text(
        json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "tests"})
    )
    env = {
        **os.environ,
        "HOME": str(home),
        "ASYNCAPI_METRICS_CONFIG_PATH": str(settings),
        "ASYNCAPI_SKIP_NEW_VERSION_CHECK": "true",
        "NO_COLOR": "1",
    }
    saved = home / "diagnostics.json"
    command = [str(CLI), "validate", str(document), "--diagnostics-format", "json"]
    done = subprocess.run(
        [*command, "--fail-severity", "warn", "--save-output", str(saved)],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=120,
        check=False,
    )
    assert saved.exists(), f"no diagnostics saved: {done.stdout}{done.stderr}"
    return done.returncode, json.loads(saved.read_text(encoding="utf-8"))


def problems(diagnostics: list[dict[str, Any]]) -> list[str]:
    return [
        f"{d['code']} at {'.'.join(map(str, d['path']))}: {d['message']}"
        for d in diagnostics
        if d["severity"] in (ERROR, WARNING)
    ]


def test_the_asyncapi_cli_finds_the_contract_valid(tmp_path: Path) -> None:
    status, diagnostics = validate(DOCUMENT, tmp_path)
    assert not problems(diagnostics), "\n".join(problems(diagnostics))
    assert status == 0


BREAKAGES = {
    # AsyncAPI 2's verb, which version 3 replaced by send and receive
    "an operation's action": ("action: send\n", "action: publish\n"),
    "a payload schema file that does not exist": (
        "/contract/alert-event.json'",
        "/contract/no-such-schema.json'",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_asyncapi_cli_refuses_a_broken_copy(tmp_path: Path, breakage: str) -> None:
    """The copy sits where the document does relative to the schemas it refers to."""
    old, new = BREAKAGES[breakage]
    text = DOCUMENT.read_text(encoding="utf-8")
    assert old in text
    (tmp_path / "docs").mkdir()
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "contract").symlink_to(REPO / "gateway" / "contract")
    broken = tmp_path / "docs" / "asyncapi.yaml"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    status, diagnostics = validate(broken, tmp_path)
    assert status != 0
    errors = [d for d in diagnostics if d["severity"] == ERROR]
    assert errors, diagnostics
    if "schema file" in breakage:
        assert any("no-such-schema.json" in d["message"] for d in errors), errors
