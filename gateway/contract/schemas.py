"""The published JSON Schemas (draft 2020-12), generated from `gateway.contract.models`.

One file per MQTT payload, under the names and `$id`s the server developers use; a file
refers to another by its name (`active-alerts.json` uses `alert-event.json`), so a
model published in a file of its own is never copied into another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from gateway.contract.models import (
    ActiveAlerts,
    AlertEvent,
    AuditEntry,
    ClockCorrection,
    Command,
    CommandResult,
    Devices,
    LedgerDay,
    ReadingMessage,
    Status,
    Subjects,
)

FILES: dict[str, type[BaseModel]] = {
    "reading-message.json": ReadingMessage,
    "alert-event.json": AlertEvent,
    "active-alerts.json": ActiveAlerts,
    "status.json": Status,
    "devices.json": Devices,
    "subjects.json": Subjects,
    "ledger-day.json": LedgerDay,
    "command.json": Command,
    "command-result.json": CommandResult,
    "audit-entry.json": AuditEntry,
    "clock-correction.json": ClockCorrection,
}

DIRECTORY = Path(__file__).parent
_DRAFT = "https://json-schema.org/draft/2020-12/schema"


class _Generator(GenerateJsonSchema):
    def field_title_should_be_set(self, schema: object) -> bool:
        """Field names are their own titles; types keep theirs (Reading, Metric...)."""
        return False

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        """Without OpenAPI's `discriminator` keyword, which JSON Schema does not know (strict
        validators refuse it): each member's `const` tells them apart anyway."""
        generated = super().tagged_union_schema(schema)
        generated.pop("discriminator", None)
        return generated


def schema(name: str) -> dict[str, Any]:
    """The schema of file `name`."""
    generated = FILES[name].model_json_schema(schema_generator=_Generator)
    links = {f"#/$defs/{m.__name__}": file for file, m in FILES.items() if file != name}
    generated = _relink(generated, links)
    defs = generated.pop("$defs", {})
    used = _refs(generated)
    while more := {r for d in used if d in defs for r in _refs(defs[d])} - used:
        used |= more
    kept = {d: s for d, s in defs.items() if d in used}
    title = generated.pop("title")
    return {
        "$schema": _DRAFT,
        "$id": name,
        "title": title,
        **generated,
        **({"$defs": kept} if kept else {}),
    }


def texts() -> dict[str, str]:
    """Each file's name and text, as checked in."""
    return {name: json.dumps(schema(name), indent=2) + "\n" for name in FILES}


def _relink(node: Any, links: dict[str, str]) -> Any:
    """`node` with references to the `links` keys replaced by their values."""
    if isinstance(node, dict):
        return {k: links.get(v, v) if k == "$ref" else _relink(v, links) for k, v in node.items()}
    if isinstance(node, list):
        return [_relink(v, links) for v in node]
    return node


def _refs(node: Any) -> set[str]:
    """Names of the `$defs` entries that `node` refers to."""
    if isinstance(node, dict):
        found = {str(node["$ref"]).removeprefix("#/$defs/")} if "$ref" in node else set()
        return found.union(*(_refs(v) for k, v in node.items() if k != "$ref"))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()
