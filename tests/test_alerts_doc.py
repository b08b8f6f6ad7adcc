"""docs/alerts.md tells clinicians the alert rules as the code runs them: each alert kind
has its section stating its class (and no severity unless physiological), and every
default in its "Key | Default" tables is the code's. A default changed in the code and
not in the document, a new key, a new kind, fails here."""

from __future__ import annotations

import re
from datetime import time
from typing import Any

from gateway.config import DOOR_REPORT_INTERVAL_S, BluetoothSection, StoreSection, SubjectConfig
from gateway.model import ALERT_CLASSES, DEFAULT_SCHEDULE, AlertClass, AlertKind
from gateway.rules.registry import DEFAULT_PROFILES, RULES
from tests.conftest import REPO

DOC = REPO / "docs" / "alerts.md"

#: `### `low_spo2`: low blood oxygen` opens the section of an alert kind.
KIND_HEADING = re.compile(r"^### `(\w+)`", re.MULTILINE)
#: A row of a defaults table: `| `rules.low_spo2.persist_s` | 15 | s | source |`.
DEFAULT_ROW = re.compile(r"^\| `([\w.]+)` \| ([^|]+?) \|")


def code_defaults() -> dict[str, Any]:
    """Every default the document must state, by its key as the document writes it."""
    found: dict[str, Any] = {}
    for entry in RULES:
        params = entry.params()
        for name in type(params).model_fields:
            value = getattr(params, name)
            if isinstance(value, dict):  # the fever lines, one per site
                for site, line in value.items():
                    found[f"rules.{entry.table}.{name}.{site.value}"] = line
            else:
                found[f"rules.{entry.table}.{name}"] = value
    for grade, tables in DEFAULT_PROFILES.items():
        for table, values in tables.items():
            for name, value in values.items():
                found[f"rules.profiles.{grade.value}.{table}.{name}"] = value
    found["store.failure_clear_s"] = StoreSection.model_fields["failure_clear_s"].default
    found["bluetooth.proxy_silent_s"] = BluetoothSection.model_fields["proxy_silent_s"].default
    found["devices.report_interval_s"] = DOOR_REPORT_INTERVAL_S
    found["subjects.isolation_days"] = SubjectConfig.model_fields["isolation_days"].default
    found["subjects.schedule"] = ", ".join(w.label() for w in DEFAULT_SCHEDULE)
    return found


def kind_sections(text: str) -> dict[str, str]:
    """Each alert kind's section, from its heading to the next heading of level 1-3."""
    sections: dict[str, str] = {}
    for match in KIND_HEADING.finditer(text):
        rest = text[match.end() :]
        end = re.search(r"^#{1,3} ", rest, re.MULTILINE)
        sections[match[1]] = rest[: end.start()] if end else rest
    return sections


def stated_defaults(text: str) -> list[tuple[str, str]]:
    """(key, default as written) of every row of every "| Key | Default |" table."""
    rows: list[tuple[str, str]] = []
    in_table = False
    for line in text.splitlines():
        if line.startswith("| Key | Default |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and (row := DEFAULT_ROW.match(line)):
            rows.append((row[1], row[2].strip()))
    return rows


def same(written: str, default: Any) -> bool:
    if isinstance(default, time):
        return written == f"{default:%H:%M}"
    if isinstance(default, str):
        return written == default
    try:
        return float(written) == float(default)
    except ValueError:
        return False


def test_every_alert_kind_has_a_section_stating_its_class() -> None:
    sections = kind_sections(DOC.read_text(encoding="utf-8"))
    wrong = []
    for kind in AlertKind:
        section = sections.get(kind.value)
        if section is None:
            wrong.append(f"{kind.value}: no '### `{kind.value}`' section")
            continue
        alert_class = ALERT_CLASSES[kind]
        if f"**Class:** {alert_class.value}\n" not in section:
            wrong.append(f"{kind.value}: its section does not say '**Class:** {alert_class.value}'")
        no_severity = "**Severity:** none." in section
        if no_severity == (alert_class is AlertClass.PHYSIOLOGICAL):
            says = (
                "a physiological alert has a severity" if no_severity else "'**Severity:** none.'"
            )
            wrong.append(f"{kind.value}: {says}")
    unknown = set(sections) - {kind.value for kind in AlertKind}
    wrong += [f"{name}: a section for a kind the gateway does not have" for name in unknown]
    assert not wrong, "\n".join(wrong)


def test_every_default_the_document_states_is_the_codes() -> None:
    defaults = code_defaults()
    rows = stated_defaults(DOC.read_text(encoding="utf-8"))
    assert rows, "no '| Key | Default |' table found: the pattern no longer matches"
    wrong = [
        f"{key}: the document says {written!r}, the code {defaults[key]!r}"
        if key in defaults
        else f"{key}: not a default of the code"
        for key, written in rows
        if key not in defaults or not same(written, defaults[key])
    ]
    assert not wrong, "\n".join(wrong)


def test_every_default_of_the_code_is_stated_once() -> None:
    keys = [key for key, _ in stated_defaults(DOC.read_text(encoding="utf-8"))]
    missing = sorted(set(code_defaults()) - set(keys))
    twice = sorted({key for key in keys if keys.count(key) > 1})
    assert not missing, "defaults the document does not state:\n" + "\n".join(missing)
    assert not twice, "defaults stated twice:\n" + "\n".join(twice)


def test_each_rule_table_is_stated_in_its_own_alerts_section() -> None:
    """`rules.fever.*` rows are in the `fever` section (each table is its kind's name)."""
    wrong = []
    for kind, section in kind_sections(DOC.read_text(encoding="utf-8")).items():
        for key, _ in stated_defaults(section):
            parts = key.split(".")
            if parts[0] == "rules" and parts[1] != "profiles" and parts[1] != kind:
                wrong.append(f"{key}: in the section of {kind}")
    tables = {entry.table for entry in RULES}
    assert tables <= {kind.value for kind in AlertKind}, "a rule table is not an alert kind"
    assert not wrong, "\n".join(wrong)
