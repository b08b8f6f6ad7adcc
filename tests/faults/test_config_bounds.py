"""Every number in the configuration file is finite and bounded on both sides, and the
configuration guide states each range. The keys are found by walking the config models,
so a number key added later without bounds, or without its range in the guide, fails
here."""

from __future__ import annotations

import base64
import enum
import math
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeGuard, get_args, get_origin

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gateway.config import Config, ConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]
GATEWAY = {"id": "gw-1", "township": "t", "data_dir": "data"}
#: The smallest entry of each array of tables, to hold a key under test.
ARRAY_ENTRIES = {
    "devices[0]": ("devices", {"kind": "cms50", "port": "/dev/ttyUSB0"}),
    "subjects[0]": ("subjects", {"code": "bed-1"}),
    "bluetooth.proxies[0]": (
        "bluetooth.proxies",
        {"name": "east", "host": "127.0.0.1", "noise_key": base64.b64encode(bytes(32)).decode()},
    ),
}


@dataclass(frozen=True)
class NumberKey:
    """A number key of the file: `<table>.<name>`, or `<table>.<name>.<entry>` for a
    table of numbers (`rules.fever.lines.axillary`)."""

    table: str
    name: str
    whole: bool
    low: float | None
    high: float | None
    entry: str | None = None

    @property
    def path(self) -> str:
        return ".".join(p for p in (self.table, self.name, self.entry) if p)

    @property
    def doc_row(self) -> str:
        """How the guide's table names it."""
        return f"[{self.table}.{self.name}]" if self.entry else self.name

    def config(self, value: float) -> dict[str, Any]:
        """A whole file (as TOML gives it) with this key set to `value`."""
        if self.whole and value.is_integer():
            value = int(value)
        setting: dict[str, Any] = {self.name: {self.entry: value} if self.entry else value}
        raw: dict[str, Any] = {"gateway": dict(GATEWAY)}
        if self.table in ARRAY_ENTRIES:
            array, entry = ARRAY_ENTRIES[self.table]
            *outer, name = array.split(".")
            holder = raw
            for part in outer:
                holder = holder.setdefault(part, {})
            holder[name] = [{**entry, **setting}]
            return raw
        table = raw
        for part in self.table.split("."):
            table = table.setdefault(part, {})
        table.update(setting)
        return raw


def number_keys(model: type[BaseModel] = Config, table: str = "") -> Iterator[NumberKey]:
    for name, field in model.model_fields.items():
        where = f"{table}.{name}".lstrip(".")
        annotation = field.annotation
        if _is_table(annotation):
            yield from number_keys(annotation, where)
        elif get_origin(annotation) is tuple and _is_table(get_args(annotation)[0]):
            yield from number_keys(get_args(annotation)[0], f"{where}[0]")
        elif get_origin(annotation) is dict:
            key_type, value_type = (_unwrap(t) for t in get_args(annotation))
            if _is_number(value_type[0]):
                entry = _sample_key(key_type[0])
                yield NumberKey(table, name, value_type[0] is int, *_bounds(value_type[1]), entry)
        elif _is_number(annotation):
            yield NumberKey(table, name, annotation is int, *_bounds(field.metadata))


def _is_table(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_number(annotation: Any) -> bool:
    return annotation in (int, float)  # bool is an int subclass, not one of these


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """`Annotated[T, ...]` to T and its constraints."""
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        return base, extras
    return annotation, []


def _bounds(metadata: Sequence[Any]) -> tuple[float | None, float | None]:
    low = high = None
    for item in metadata:
        for constraint in item.metadata if isinstance(item, FieldInfo) else [item]:
            if isinstance(constraint, annotated_types.Ge):
                low = float(constraint.ge)  # type: ignore[arg-type]
            elif isinstance(constraint, annotated_types.Le):
                high = float(constraint.le)  # type: ignore[arg-type]
            elif isinstance(constraint, annotated_types.Gt | annotated_types.Lt):
                raise AssertionError("open bounds: this test and the guide say 'A to B'")
    return low, high


def _sample_key(key_type: Any) -> str:
    assert isinstance(key_type, type) and issubclass(key_type, enum.Enum), key_type
    return str(next(iter(key_type)).value)


KEYS = list(number_keys())


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _refusal(key: NumberKey, value: float, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as refused:
        parse_config(key.config(value), base_dir=tmp_path)
    return str(refused.value)


def test_the_walk_finds_the_number_keys() -> None:
    paths = {key.path for key in KEYS}
    assert {"mqtt.keepalive_s", "store.max_mb", "rules.low_spo2.raise_at_or_below"} <= paths
    assert "rules.fever.lines.axillary" in paths and "bluetooth.watchdog_enabled" not in paths


@pytest.mark.parametrize("key", KEYS, ids=[key.path for key in KEYS])
def test_every_number_key_is_finite_and_bounded_on_both_sides(
    key: NumberKey, tmp_path: Path
) -> None:
    assert key.low is not None and key.high is not None, f"{key.path} needs a lower and upper bound"
    # TOML's nan and inf are floats: an integer key refuses them as not whole.
    finite = "must be a whole number" if key.whole else "must be a finite number (not nan or inf)"
    for value in (math.nan, math.inf, -math.inf):
        assert _refusal(key, value, tmp_path) == f"{key.path}: {finite}"
    assert _refusal(key, key.high + 1, tmp_path) == f"{key.path}: must be at most {key.high:g}"
    assert _refusal(key, key.low - 1, tmp_path) == f"{key.path}: must be at least {key.low:g}"


@pytest.mark.parametrize("key", KEYS, ids=[key.path for key in KEYS])
def test_the_configuration_guide_gives_every_number_key_its_range(key: NumberKey) -> None:
    assert key.low is not None and key.high is not None
    cell = _guide_range(key.table, key.doc_row)
    assert f"{_number(key.low)} to {_number(key.high)}" in cell, (key.path, cell)


def _guide_range(table: str, row: str) -> str:
    """The Range cell of `row` in the table under the guide's `[table]` heading."""
    array = ARRAY_ENTRIES.get(table)
    heading = f"## `[[{array[0]}]]`" if array else f"## `[{table}]`"
    guide = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = guide.split(f"\n{heading}", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    header = rows[0]
    assert "Range" in header, f"the {heading} table has no Range column"
    found = [r for r in rows if r[0] == f"`{row}`"]
    assert found, f"no row `{row}` under {heading}"
    return found[0][header.index("Range")]


@pytest.mark.parametrize(
    ("table", "setting", "message"),
    [
        ("mqtt", {"reconnect_min_s": 10, "reconnect_max_s": 5}, "mqtt.reconnect_max_s: must be"),
        ("bluetooth", {"reconnect_min_s": 2, "reconnect_max_s": 1}, "bluetooth.reconnect_max_s"),
        ("mqtt", {"url": "mqtt://broker.example:0"}, "mqtt.url: bad port in"),
        ("web", {"listen": "127.0.0.1:0"}, "web.listen: port out of range"),
    ],
)
def test_protocol_limits_and_orders_are_refused(
    table: str, setting: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=f"^{message}"):
        parse_config({"gateway": GATEWAY, table: setting}, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("table", "setting", "key"),
    [
        ("rules.low_spo2", "raise_at_or_below = nan", "rules.low_spo2.raise_at_or_below"),
        ("store", "max_mb = inf", "store.max_mb"),
        ("mqtt", "keepalive_s = 70000", "mqtt.keepalive_s"),
    ],
)
def test_check_config_refuses_the_reported_values_in_one_line(
    table: str, setting: str, key: str, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\nid = "gw-1"\ntownship = "t"\ndata_dir = "data"\n\n[{table}]\n{setting}\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0 and result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"config error: {key}: "), result.stderr
