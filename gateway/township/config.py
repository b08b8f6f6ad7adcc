"""The township consumer's settings: a small TOML file (`[township]`, and `[mqtt]` with
the gateway's own keys and checks: `gateway.config.MqttSection`), each key also given
or overridden by a command-line option."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from gateway.config import CODE, ConfigError, MqttSection, describe_errors
from gateway.config_table import ConfigTable

_Code = Annotated[str, Field(pattern=CODE.pattern)]


class TownshipSection(ConfigTable):
    """`[township]`."""

    #: The township's name in the topics (`gateway.township` of its gateways).
    name: _Code
    #: The shared subscription's group: consumers of one group split the messages.
    group: _Code = "township"
    #: This consumer's name in its group; its client id is `township-<group>-<name>`.
    consumer: _Code = "1"
    #: A SQLite file (relative to the configuration's folder) or a database URL
    #: (`sqlite:///...`, `postgresql+psycopg://USER:PASSWORD@HOST/DB`).
    database: str = "township.sqlite3"
    #: The most messages stored in one transaction.
    batch_max: int = Field(default=500, ge=1, le=100_000)
    #: Seconds a seq gap stays open before its gateway is asked to resend it (once it
    #: says it has nothing left to send); 0: never.
    repair_after_s: float = Field(default=60.0, ge=0, le=86_400)

    @field_validator("database")
    @classmethod
    def _relative_to_the_file(cls, database: str, info: ValidationInfo) -> str:
        if "://" in database or not database:
            return database
        path = Path(database)
        base_dir: Path = (info.context or {}).get("base_dir", Path())
        return str(path if path.is_absolute() else base_dir / path)


class TownshipConfig(ConfigTable):
    township: TownshipSection
    mqtt: MqttSection = MqttSection()

    @field_validator("mqtt")
    @classmethod
    def _mqtt_5(cls, mqtt: MqttSection) -> MqttSection:
        if mqtt.protocol != "5":
            raise ValueError('protocol must be "5": shared subscriptions are MQTT 5')
        return mqtt


def load_township_config(path: Path | None, overrides: dict[str, dict[str, Any]]) -> TownshipConfig:
    """The file at `path` (if any) with `overrides` (table -> key -> value) over it;
    relative paths in the file are relative to its folder, in `overrides` to the
    current one."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base_dir = (path.parent if path is not None else Path()).absolute()
    for table, values in overrides.items():
        section = raw.setdefault(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{table}: must be a table")
        for key, value in values.items():
            if value is None:
                continue
            is_path = key.endswith("_file") or (key == "database" and "://" not in value)
            section[key] = str(Path(value).absolute()) if is_path else value
    try:
        return TownshipConfig.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc.errors(), TownshipConfig)) from None
