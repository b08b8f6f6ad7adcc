"""Citations of the protocol and simulation notes point at sections that exist.

Code, tests and docs cite `docs/protocols.md` and `docs/ble-simulation.md` by section
number, and the bumble/dbusmock pitfalls by number ("pitfall 3"). A citation of a section
that was renumbered or removed, of a document the repository does not hold, or of a
path outside the repository, sends the reader nowhere: these tests name each one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = REPO / "docs" / "protocols.md"
SIMULATION = REPO / "docs" / "ble-simulation.md"
SKIPPED_DIRS = {"__pycache__", "node_modules", "build", "dist"}

_NUMBER = r"\d+(?:\.\d+)*"
#: `docs/x.md 4.2`, `docs/x.md section 6`, `docs/x.md 4.3 and 4.1`.
_CITATION = rf"(?:section\s+)?({_NUMBER}(?:(?:\s*,\s*|\s+and\s+|\s+or\s+){_NUMBER})*)"
CITATIONS = {
    PROTOCOLS: re.compile(r"docs/protocols\.md,?\s+" + _CITATION),
    SIMULATION: re.compile(r"docs/ble-simulation\.md,?\s+" + _CITATION),
}
PITFALL_CITATION = re.compile(r"\bpitfalls? (\d+)")
#: A Markdown document cited by its file name.
DOCUMENT_CITATION = re.compile(r"(?<![\w/.-])([A-Za-z0-9_-]+\.md)\b")
#: A path relative to the citing file's folder that starts by climbing up (`..`, then `/`).
PARENT_PATH = re.compile(r"(?<![\w.])((?:\.\./)+[\w.-]+(?:/[\w.-]+)*)")
HEADING_NUMBER = re.compile(rf"^#{{1,6}}\s+({_NUMBER})\.?\s", re.MULTILINE)
PITFALL_HEADING = re.compile(r"^\*\*Pitfall (\d+)\.", re.MULTILINE)


def text_files() -> Iterator[tuple[str, str]]:
    """(path relative to the repository, text) of every text file of the project."""
    for directory, subdirs, files in os.walk(REPO):
        subdirs[:] = sorted(
            d
            for d in subdirs
            if not (d.startswith(".") or d.endswith(".egg-info") or d in SKIPPED_DIRS)
        )
        for file in sorted(files):
            path = Path(directory, file)
            if path.stat().st_size > 1_000_000:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # not text
            yield str(path.relative_to(REPO)), text


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def test_every_cited_section_exists() -> None:
    sections = {doc: set(HEADING_NUMBER.findall(doc.read_text())) for doc in CITATIONS}
    cited = 0
    missing = []
    for name, text in text_files():
        for doc, pattern in CITATIONS.items():
            for match in pattern.finditer(text):
                for number in re.findall(_NUMBER, match.group(1)):
                    cited += 1
                    if number not in sections[doc]:
                        where = f"{name}:{line_of(text, match.start())}"
                        missing.append(f"{where}: {doc.name} has no section {number}")
    assert cited, "no citation found at all: the citation pattern no longer matches"
    assert not missing, "\n".join(missing)


def test_every_cited_pitfall_exists() -> None:
    pitfalls = set(PITFALL_HEADING.findall(SIMULATION.read_text()))
    missing = [
        f"{name}:{line_of(text, match.start())}: {SIMULATION.name} has no pitfall {match[1]}"
        for name, text in text_files()
        for match in PITFALL_CITATION.finditer(text)
        if match[1] not in pitfalls
    ]
    assert not missing, "\n".join(missing)


def test_every_cited_document_is_in_the_repository() -> None:
    installed = {".venv", "node_modules"}  # what the set-up installs, not the project's
    documents = {path.name for path in REPO.rglob("*.md") if not installed & set(path.parts)}
    missing = [
        f"{name}:{line_of(text, match.start())}: no {match[1]} in the repository"
        for name, text in text_files()
        for match in DOCUMENT_CITATION.finditer(text)
        if match[1] not in documents
    ]
    assert not missing, "cite the project's own docs (docs/):\n" + "\n".join(missing)


def test_no_relative_path_leads_out_of_the_repository() -> None:
    stray = []
    for name, text in text_files():
        folder = (REPO / name).parent
        for match in PARENT_PATH.finditer(text):
            target = (folder / match[1]).resolve()
            if not target.is_relative_to(REPO) or not target.exists():
                stray.append(f"{name}:{line_of(text, match.start())}: {match[1]}")
    assert not stray, "paths must stay inside the repository:\n" + "\n".join(stray)
