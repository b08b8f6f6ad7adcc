"""The configuration file (TOML) read into typed, validated, frozen sections (pydantic).

Every default and bound is written once, on its field. Unknown keys are errors, so a
typo never silently falls back to a default. Every error names the key and what is
wrong, on one line (`bedside-gateway check-config`): pydantic's errors become that line
here. The `[rules]` tables are declared beside their rules (`gateway/rules/registry.py`);
what each device kind takes comes from the registry of kinds (`drivers/kinds.py`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import itertools
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from drivers.kinds import KINDS, DeviceKind, KeyUse, Transport
from drivers.measurement import Site
from gateway.config_table import ConfigTable
from gateway.model import DEFAULT_SCHEDULE, DoorRole, RiskGrade
from gateway.rules.registry import RulesSection, check_overrides

_ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
#: A bed, resident or gateway code: letters, digits, - _ . (never a name with spaces).
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOPIC_PART = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_AES_KEY = re.compile(r"^[0-9A-Fa-f]{32}$")
#: Labels of letters, digits and '-' (not at either end), dot separated; a final dot ok.
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


class ConfigError(ValueError):
    """One line: the key and what is wrong with it."""


class _Invalid(ValueError):
    """A check over a whole table that blames one entry of it (`at`, below the table)."""

    def __init__(self, message: str, *at: int | str) -> None:
        super().__init__(message)
        self.at = at


# --- value types -----------------------------------------------------------------------


def _not_empty(value: Any) -> Any:
    if value == "":
        raise ValueError("must not be empty")
    return value


def _unset_if_empty(value: Any) -> Any:
    return None if value == "" else value


def _given(info: ValidationInfo, name: str) -> Any:
    """What `parse_config` hands the validators: `base_dir` and `source`."""
    if info.context is None:
        raise TypeError("a configuration is validated by parse_config only")
    return info.context[name]


def _in_config_folder(path: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the configuration file's folder."""
    return path if path.is_absolute() else _given(info, "base_dir") / path


def _readable(path: Path) -> Path:
    """Secrets and certificates must be readable by the service's own user: check now,
    so `check-config` (run by systemd before start) says so instead of a dead uplink."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return path


def _code(value: str) -> str:
    if not CODE.fullmatch(value):
        raise ValueError(f"{value!r} must be letters, digits, '-', '_' or '.'")
    return value


def _subject(value: str) -> str:
    if not CODE.fullmatch(value):
        raise ValueError(
            "must be a bed or pseudonymous code (letters, digits, - _ .), never a name"
        )
    return value


_Path = Annotated[Path, Strict(False), AfterValidator(_in_config_folder)]
_RequiredPath = Annotated[_Path, BeforeValidator(_not_empty)]
_File = Annotated[_Path, AfterValidator(_readable)]
#: A file the service reads: `""` is the same as leaving the key out.
_ReadableFile = Annotated[_File | None, BeforeValidator(_unset_if_empty)]
_Code = Annotated[str, BeforeValidator(_not_empty), AfterValidator(_code)]


def _not_below_min(value: float, info: ValidationInfo) -> float:
    """`reconnect_max_s` against `reconnect_min_s` of the same table (checked first)."""
    low = info.data.get("reconnect_min_s")
    if low is not None and value < low:
        raise ValueError(f"must be at least reconnect_min_s ({low:g})")
    return value


#: Waits between connection attempts, seconds: doubling from the first to the longest.
_ReconnectMin = Annotated[float, Field(ge=0.01, le=60.0)]
_ReconnectMax = Annotated[
    float, Field(ge=0.01, le=300.0, validate_default=True), AfterValidator(_not_below_min)
]


# --- sections --------------------------------------------------------------------------


class GatewaySection(ConfigTable):
    """`[gateway]` (required)."""

    id: _Code
    township: _Code
    data_dir: _RequiredPath
    #: IANA name (`Asia/Shanghai`) of the local time schedules and quiet hours are in;
    #: empty: the system's time zone.
    timezone: str = ""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        if name:
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"{name!r} is not an IANA time zone (e.g. Asia/Shanghai)"
                ) from None
        return name

    @property
    def tz(self) -> tzinfo:
        if self.timezone:
            return zoneinfo.ZoneInfo(self.timezone)
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        return zone


class MqttSection(ConfigTable):
    """`[mqtt]`: the township broker."""

    url: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["5", "3.1.1"] = "5"
    topic_prefix: str = "vitals/v1"
    client_id: str = ""
    username: str = ""
    password_file: _ReadableFile = None
    ca_file: _ReadableFile = None
    client_cert: _ReadableFile = None
    client_key: _ReadableFile = None
    #: MQTT carries the keep-alive as a 16-bit number of seconds.
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    #: A reading is 200-450 bytes of JSON (up to ~800 with the longest ids), so 1,000 of
    #: them stay under 1 MiB, the smallest default message limit of common brokers
    #: (EMQX's); the uplink reads 2,000 rows a round anyway.
    readings_per_message: int = Field(default=50, ge=1, le=1000)
    #: MQTT packet identifiers are 16-bit: no more can be in flight.
    max_inflight: int = Field(default=20, ge=1, le=65535)
    status_interval_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    reconnect_min_s: _ReconnectMin = 1.0
    reconnect_max_s: _ReconnectMax = 30.0
    #: MQTT 5: how long the broker keeps the gateway's session (its subscription to
    #: commands, and the commands sent meanwhile) after the connection drops. 0 to
    #: MQTT's largest (0xFFFFFFFE, "never" excluded); default a week.
    session_expiry_s: int = Field(default=604_800, ge=0, le=4_294_967_294)

    @field_validator("url")
    @classmethod
    def _broker_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"{url!r} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        try:
            port = parts.port  # raises on a bad port, and on one above 65535
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError(f"bad port in {url!r} (1 to 65535)")
        if parts.username or parts.password:
            raise ValueError("put credentials in mqtt.username and mqtt.password_file")
        return url

    @field_validator("topic_prefix")
    @classmethod
    def _topic_levels(cls, prefix: str) -> str:
        if not _TOPIC_PART.fullmatch(prefix):
            raise ValueError(f"{prefix!r} must be topic levels without + or #")
        return prefix

    @field_validator("password_file")
    @classmethod
    def _with_a_username(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is not None and info.data.get("username") == "":
            raise ValueError("set mqtt.username too")
        return path

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class StoreSection(ConfigTable):
    """`[store]`: the SQLite file and how readings are committed to it."""

    #: Default `<gateway.data_dir>/gateway.sqlite3` (filled in by `Config`).
    path: _Path
    #: Up to 1 TiB: far past a Pi's storage, and inside SQLite's own limit.
    max_mb: float = Field(default=512.0, ge=1.0, le=1048576.0)
    batch_max: int = Field(default=500, ge=1, le=10000)
    #: Readings reach SQLite in one transaction this often (kept meanwhile in memory
    #: and `<store>.unsynced`: a crash loses none, a power cut at most this long).
    #: 0: one transaction per batch, as they come (SD-card wear: ~14 KB per reading).
    sync_interval_s: float = Field(default=1.0, ge=0.0, le=60.0)
    #: The store in memory that stands in while the disk refuses writes (bounded:
    #: past it, oldest delivered readings go, then oldest undelivered; never alerts).
    memory_max_mb: float = Field(default=16.0, ge=1.0, le=128.0)
    #: The `storage_failure` alert clears once the store has worked this long.
    failure_clear_s: float = Field(default=60.0, ge=1.0, le=86400.0)


def _noise_key(key: str) -> str:
    """ESPHome's `api: encryption: key`: 32 bytes, base64."""
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error:
        raise ValueError("is not base64 (ESPHome's api encryption key)") from None
    if len(raw) != 32:
        raise ValueError(f"is {len(raw)} bytes, not 32 (ESPHome's api encryption key)")
    return key


def _proxy_host(host: str) -> str:
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host))
    if not _HOST_NAME.fullmatch(host):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    return host


#: What the page and `status` call the gateway's own adapter beside the proxies.
LOCAL_RADIO = "local"


class ProxyConfig(ConfigTable):
    """One `[[bluetooth.proxies]]` table: an ESPHome Bluetooth proxy, one more radio."""

    #: How the page, `status` and the proxy's alert name it (the proxy's own name).
    name: _Code
    host: Annotated[str, AfterValidator(_proxy_host)]
    port: int = Field(default=6053, ge=1, le=65535)
    #: The proxy's API encryption key (base64). A secret: kept out of repr, logs,
    #: error messages and every message.
    noise_key: Annotated[str, AfterValidator(_noise_key)] = Field(repr=False)


class BluetoothSection(ConfigTable):
    """`[bluetooth]`: the adapter and the ESPHome proxies, shared by every Bluetooth
    device."""

    #: The local radio; `none` with proxies: the proxies only.
    adapter: str = "bluez"
    reconnect_min_s: _ReconnectMin = 1.0
    reconnect_max_s: _ReconnectMax = 60.0
    connect_timeout_s: float = Field(default=10.0, ge=0.1, le=60.0)
    #: Connections the adapter may hold at once (a Pi's controller manages 5-10).
    max_connections: int = Field(default=5, ge=1, le=32)
    #: The adapter watchdog (drivers/ble/watchdog.py): after this long without hearing
    #: any Bluetooth device, restart scanning; as long again, power-cycle the adapter.
    watchdog_enabled: bool = True
    watchdog_silence_s: float = Field(default=300.0, ge=10.0, le=86400.0)
    proxies: tuple[ProxyConfig, ...] = Field(default=(), strict=False)
    #: A proxy that relayed no advertisement for this long, or is not connected for this
    #: long, raises `proxy_silent`; its devices move to another radio that hears them.
    proxy_silent_s: float = Field(default=60.0, ge=5.0, le=3600.0)
    #: A device stays with the radio that connected it last unless another hears it this
    #: much stronger (dB), so it does not flap between two proxies.
    switch_margin_db: int = Field(default=10, ge=0, le=60)

    @field_validator("adapter")
    @classmethod
    def _known_stack(cls, adapter: str) -> str:
        if not re.fullmatch(r"bluez(:hci\d+)?|bumble:.+|none", adapter):
            raise ValueError(
                f"{adapter!r} is not 'bluez', 'bluez:hciN', 'bumble:TRANSPORT' or 'none'"
            )
        return adapter

    @field_validator("proxies")
    @classmethod
    def _proxies_apart(cls, proxies: tuple[ProxyConfig, ...]) -> tuple[ProxyConfig, ...]:
        names: set[str] = set()
        for index, proxy in enumerate(proxies):
            if proxy.name in names:
                raise _Invalid("two proxies have this name", index, "name")
            if proxy.name == LOCAL_RADIO:
                raise _Invalid(f"{LOCAL_RADIO!r} names the gateway's own adapter", index, "name")
            names.add(proxy.name)
        return proxies

    @model_validator(mode="after")
    def _some_radio(self) -> BluetoothSection:
        if self.adapter == "none" and not self.proxies:
            raise ValueError("adapter 'none' needs [[bluetooth.proxies]]: no radio is left")
        return self


class CommandsSection(ConfigTable):
    """`[commands]`: what the township may send over MQTT (`cmd/<name>`)."""

    #: A command whose `sent_at` is older than this is refused as `expired`: a stale
    #: "unbind" must not fire days later. A minute to 30 days; default a day.
    max_age_s: float = Field(default=86_400.0, ge=60.0, le=2_592_000.0)


def _host_name(name: str) -> str:
    """One name of `web.allowed_hosts`: a DNS name, no port, scheme or wildcard."""
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a host name (no port, scheme or wildcard;"
            " IP addresses are always allowed)"
        )
    return name.lower().rstrip(".")


class WebSection(ConfigTable):
    """`[web]`: the technician's page."""

    listen: str = "127.0.0.1:8080"
    #: Host names the page answers to besides the ones always allowed (any IP address,
    #: `localhost`, the machine's host name and `<hostname>.local`): a request naming
    #: another host is refused, so a web page elsewhere cannot read it by DNS rebinding.
    allowed_hosts: tuple[Annotated[str, AfterValidator(_host_name)], ...] = Field(
        default=(), strict=False
    )
    #: TLS for the page: both or neither; the files are read at start.
    tls_cert: _ReadableFile = None
    tls_key: _ReadableFile = Field(default=None, validate_default=True)
    #: The argon2 hash of the page's password (`bedside-gateway set-password` writes
    #: it); none: `web-password` beside `store.path` (`Config.password_path`).
    password_file: Annotated[_Path | None, BeforeValidator(_unset_if_empty)] = None
    #: A login ends after this long without a request.
    session_idle_s: float = Field(default=900.0, ge=60.0, le=86400.0)
    #: Failed logins from one client address within `login_lockout_s`, then that
    #: address is refused for `login_lockout_s`.
    login_attempts: int = Field(default=5, ge=1, le=100)
    login_lockout_s: float = Field(default=300.0, ge=10.0, le=86400.0)
    #: A file holding the bearer token of `/metrics`; none: `/metrics` is not served.
    metrics_token_file: _ReadableFile = None

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, listen: str) -> str:
        if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}", listen):
            raise ValueError(f"{listen!r} is not HOST:PORT")
        if not 1 <= int(listen.rsplit(":", 1)[1]) <= 65535:
            raise ValueError(f"port out of range in {listen!r}")
        return listen

    @field_validator("tls_key")
    @classmethod
    def _with_a_cert(cls, key: Path | None, info: ValidationInfo) -> Path | None:
        if "tls_cert" not in info.data:
            return key  # tls_cert itself was wrong: that error is the one shown
        if key is None and info.data["tls_cert"] is not None:
            raise ValueError("missing (web.tls_cert is set: both or neither)")
        if key is not None and info.data["tls_cert"] is None:
            raise ValueError("set web.tls_cert too")
        return key

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


#: What a secret becomes wherever a device entry is kept, published or shown.
MASK = "***"


def masked_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A `[[devices]]` entry (or a command's args holding one) with its key masked."""
    return {**entry, "key": MASK} if entry.get("key") is not None else entry


#: A door sensor's periodic advertisements (battery, state) come at least this often
#: (the sensors in the kinds table send one every few minutes).
DOOR_REPORT_INTERVAL_S = 600.0


class WindowConfig(ConfigTable):
    """One measurement window of `[[subjects]]`' `schedule`: local times."""

    name: _Code
    start: time
    end: time

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: time, info: ValidationInfo) -> time:
        start = info.data.get("start")
        if start is not None and end <= start:
            raise ValueError("must be after start, the same day (a window does not cross midnight)")
        return end


def _default_schedule() -> tuple[WindowConfig, ...]:
    return tuple(WindowConfig(name=w.name, start=w.start, end=w.end) for w in DEFAULT_SCHEDULE)


class SubjectConfig(ConfigTable):
    """One `[[subjects]]` table: seeds a subject in the store at its first start; after
    that the store's copy is the one that counts (changed through the service API)."""

    code: Annotated[str, AfterValidator(_subject)]
    risk_grade: Annotated[RiskGrade, Strict(False)] = RiskGrade.GREEN
    #: A TOML date (midnight local time) or date-time; none: not isolated.
    isolation_start: date | datetime | None = None
    #: The field's 14 days by default; at most 60.
    isolation_days: int = Field(default=14, ge=1, le=60)
    schedule: tuple[WindowConfig, ...] = Field(default_factory=_default_schedule, strict=False)
    #: Per rule table, parameters that differ for this subject: `{low_spo2 = {persist_s = 10}}`.
    thresholds: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("schedule")
    @classmethod
    def _windows_apart(cls, schedule: tuple[WindowConfig, ...]) -> tuple[WindowConfig, ...]:
        names: set[str] = set()
        ordered = sorted(schedule, key=lambda w: w.start)
        for index, window in enumerate(schedule):
            if window.name in names:
                raise _Invalid("two windows have this name", index, "name")
            names.add(window.name)
        for earlier, later in itertools.pairwise(ordered):
            if later.start < earlier.end:
                raise ValueError(f"windows {earlier.name!r} and {later.name!r} overlap")
        return schedule


class DeviceConfig(ConfigTable):
    """One `[[devices]]` table. Which keys a device takes follows from its kind's entry
    in `drivers.kinds.KINDS`: its transport, whether it has a site, whether it takes a
    key. Each check runs on its own key, after `kind` (fields validate in order)."""

    kind: str
    port: str | None = Field(default=None, validate_default=True)
    #: A Bluetooth address (upper case), or a serial device's port.
    address: str = Field(default=None, validate_default=True)
    subject: Annotated[str, AfterValidator(_subject)] | None = None
    site: Annotated[Site, Strict(False)] | None = None
    #: AES key of an encrypting advertiser (BTHome key, MiBeacon bindkey). A secret:
    #: kept out of repr, logs, error messages and every message.
    key: bytes | None = Field(default=None, repr=False, validate_default=True)
    #: A door sensor's role: what an opening means (default `isolation`).
    role: Annotated[DoorRole, Strict(False)] | None = Field(default=None, validate_default=True)
    #: The device is expected to report at least this often (s); silence for
    #: `rules.device_silent.missed_reports` of these raises `device_silent`. Door sensors
    #: default to 600 s (their periodic advertisements); other devices are not watched
    #: unless it is set (an oximeter worn continuously: a few seconds).
    report_interval_s: float | None = Field(default=None, ge=1.0, le=86400.0, validate_default=True)

    @field_validator("kind")
    @classmethod
    def _registered(cls, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"{kind!r} is not one of {', '.join(KINDS)}")
        return kind

    @field_validator("port")
    @classmethod
    def _serial_only(cls, port: str | None, info: ValidationInfo) -> str | None:
        kind = _kind(info)
        if kind is None:
            return port
        if kind.transport is not Transport.SERIAL:
            if port is not None:
                serial = _kinds_where(lambda k: k.transport is Transport.SERIAL)
                raise ValueError(f"only {serial} devices have a serial port")
            return None
        if port is None:
            raise ValueError("missing")
        return _not_empty(port)

    @field_validator("address", mode="before")
    @classmethod
    def _bluetooth_address(cls, address: Any, info: ValidationInfo) -> Any:
        kind = _kind(info)
        if kind is None:
            return address
        if kind.transport is Transport.SERIAL:
            if address is not None:
                raise ValueError(f"a {kind.name} is found by its port, not an address")
            return info.data.get("port") or ""
        if address is None:
            raise ValueError("missing")
        if isinstance(address, str):
            address = address.upper()
            if not _ADDRESS.fullmatch(address):
                raise ValueError(f"{address!r} is not a Bluetooth address")
        return address

    @field_validator("site")
    @classmethod
    def _where_taken(cls, site: Site | None, info: ValidationInfo) -> Site | None:
        kind = _kind(info)
        if site is not None and kind is not None and not kind.has_site:
            raise ValueError(f"only {_kinds_where(lambda k: k.has_site)} devices have a site")
        return site

    @field_validator("key", mode="before")
    @classmethod
    def _aes_key(cls, key: Any, info: ValidationInfo) -> bytes | None:
        """32 hex digits: required for a kind that always encrypts; optional for one that
        may (absent: it sends in the clear; present: clear packets are refused)."""
        kind = _kind(info)
        if kind is None:
            return None
        if key is None:
            if kind.key is KeyUse.REQUIRED:
                raise ValueError(f"a {kind.name} needs its 32-hex-digit key")
            return None
        if kind.key is KeyUse.NONE:
            keyed = _kinds_where(lambda k: k.key is not KeyUse.NONE)
            raise ValueError(f"only {keyed} devices have a key")
        if not (isinstance(key, str) and _AES_KEY.fullmatch(key)):
            raise ValueError("must be 32 hex digits (a 16-byte AES key)")
        return bytes.fromhex(key)

    @field_validator("role", mode="after")
    @classmethod
    def _doors_only(cls, role: DoorRole | None, info: ValidationInfo) -> DoorRole | None:
        kind = _kind(info)
        if kind is None:
            return role
        if kind.transport is not Transport.ADVERT:
            if role is not None:
                doors = _kinds_where(lambda k: k.transport is Transport.ADVERT)
                raise ValueError(f"only {doors} door sensors have a role")
            return None
        return role or DoorRole.ISOLATION

    @field_validator("report_interval_s", mode="after")
    @classmethod
    def _doors_report_periodically(
        cls, interval: float | None, info: ValidationInfo
    ) -> float | None:
        kind = _kind(info)
        if interval is None and kind is not None and kind.transport is Transport.ADVERT:
            return DOOR_REPORT_INTERVAL_S
        return interval

    @property
    def device_id(self) -> str:
        """Stable across restarts: derived from kind and address only."""
        return KINDS[self.kind].device_id(self.address)


def _kind(info: ValidationInfo) -> DeviceKind | None:
    """The device's kind, None when `kind` itself was wrong (that error comes first)."""
    return KINDS.get(info.data.get("kind", ""))


def _kinds_where(test: Callable[[DeviceKind], bool]) -> str:
    names = [kind.name for kind in KINDS.values() if test(kind)]
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


class Config(ConfigTable):
    """The whole file. `source` is the file it was read from (None: not from a file)."""

    gateway: GatewaySection
    mqtt: MqttSection = Field(default_factory=MqttSection)
    store: StoreSection = Field(default_factory=dict, validate_default=True)
    bluetooth: BluetoothSection = Field(default_factory=BluetoothSection)
    web: WebSection = Field(default_factory=WebSection)
    commands: CommandsSection = Field(default_factory=CommandsSection)
    rules: RulesSection = Field(default_factory=RulesSection)
    subjects: tuple[SubjectConfig, ...] = Field(default=(), strict=False)
    devices: tuple[DeviceConfig, ...] = Field(default=(), strict=False)  # TOML gives a list
    _source: Path | None = PrivateAttr(None)

    @field_validator("store", mode="before")
    @classmethod
    def _store_in_data_dir(cls, store: Any, info: ValidationInfo) -> Any:
        gateway = info.data.get("gateway")
        if isinstance(store, dict) and store.get("path", "") == "" and gateway is not None:
            return {**store, "path": gateway.data_dir / "gateway.sqlite3"}
        return store

    @field_validator("subjects")
    @classmethod
    def _subjects_once_with_known_thresholds(
        cls, subjects: tuple[SubjectConfig, ...], info: ValidationInfo
    ) -> tuple[SubjectConfig, ...]:
        seen: set[str] = set()
        rules = info.data.get("rules")
        for index, subject in enumerate(subjects):
            if subject.code in seen:
                raise _Invalid("the same subject is configured twice", index, "code")
            seen.add(subject.code)
            if rules is not None:
                try:
                    check_overrides(rules, subject.thresholds)
                except ValueError as exc:
                    raise _Invalid(str(exc), index, "thresholds") from None
        return subjects

    @field_validator("devices")
    @classmethod
    def _each_once(cls, devices: tuple[DeviceConfig, ...]) -> tuple[DeviceConfig, ...]:
        seen: set[str] = set()
        for index, device in enumerate(devices):
            if device.device_id in seen:
                raise _Invalid("the same device is configured twice", index)
            seen.add(device.device_id)
        return devices

    @model_validator(mode="after")
    def _read_from(self, info: ValidationInfo) -> Config:
        self._source = _given(info, "source")
        return self

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def password_path(self) -> Path:
        """Where the page's password hash is kept (`web.password_file`)."""
        return self.web.password_file or self.store.path.parent / "web-password"

    @property
    def topic_root(self) -> str:
        return f"{self.mqtt.topic_prefix}/{self.gateway.township}/{self.gateway.id}"

    def device(self, device_id: str) -> DeviceConfig | None:
        return next((d for d in self.devices if d.device_id == device_id), None)


# --- reading and reporting -------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, base_dir=path.parent, source=path)


def parse_config(raw: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Relative paths in `raw` are taken relative to `base_dir`."""
    context = {"base_dir": base_dir.absolute(), "source": source}
    try:
        return Config.model_validate(raw, context=context)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc.errors())) from None


_REASONS = {
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number (not nan or inf)",
    "bool_type": "must be true or false",
    "path_type": "must be a string (a path)",
    "model_type": "must be a table",
    "dict_type": "must be a table",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "above"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "below"),
}


def describe_errors(errors: Sequence[ErrorDetails], root: type[BaseModel] | None = None) -> str:
    """`<key path>: <what is wrong>` for the first error; an unknown key before anything
    else, since a misspelt key also shows as the right one missing. `root`: the table
    validated (default the whole file), for a change that arrives by the service API."""
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc, kind, ctx = error["loc"], error["type"], error.get("ctx", {})
    if isinstance(ctx.get("error"), _Invalid):
        loc = (*loc, *ctx["error"].at)
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}"
        for part in loc
        if part != "[key]"  # a bad key of a table (rules.fever.lines.<site>)
    ).lstrip(".")
    if kind == "value_error":
        reason = str(ctx["error"])
    elif kind == "missing":
        reason = f"missing table [{where}]" if _is_table(_type_at(loc, root)) else "missing"
    elif kind == "extra_forbidden":
        table = _type_at(loc[:-1], root)
        reason = f"unknown key (allowed: {', '.join(sorted(table.model_fields))})"
    elif kind in ("enum", "literal_error"):
        reason = f"{error['input']!r} is not {ctx['expected']}"
    elif kind == "tuple_type":
        items = get_args(_type_at(loc, root)) or (None,)
        reason = (
            f"must be an array of tables ([[{where}]])"
            if _is_table(items[0])
            else "must be an array"
        )
    elif kind in _BOUNDS:
        bound, words = _BOUNDS[kind]
        reason = f"must be {words} {ctx[bound]:g}"
    else:
        reason = _REASONS.get(kind, error["msg"])
    return f"{where}: {reason}"


def _type_at(loc: tuple[int | str, ...], root: type[BaseModel] | None) -> Any:
    """The type validated at `loc`, from `root` (`Config`) down: to name a table's keys."""
    target: Any = root or Config
    for part in loc:
        if isinstance(part, int):
            target = get_args(target)[0]  # tuple[X, ...]
        elif _is_table(target) and part in target.model_fields:
            target = target.model_fields[part].annotation
        else:
            return None
    return target


def _is_table(target: Any) -> bool:
    return isinstance(target, type) and issubclass(target, BaseModel)
