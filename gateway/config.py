"""The configuration file (TOML) read into typed objects.

Unknown keys are errors, so a typo never silently falls back to a default. Every error
names the key and what is wrong, on one line (`bedside-gateway check-config`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from drivers.measurement import Site

GATT_KINDS = ("hts", "plx", "berrymed", "pc60fw")  # connected Bluetooth devices
ADVERT_KINDS = ("bthome", "mibeacon")  # Bluetooth sensors that only advertise
BLE_KINDS = (*GATT_KINDS, *ADVERT_KINDS)
DEVICE_KINDS = (*BLE_KINDS, "cms50")
_ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOPIC_PART = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class ConfigError(ValueError):
    """One line: the key and what is wrong with it."""


@dataclass(frozen=True)
class GatewaySection:
    id: str
    township: str
    data_dir: Path


@dataclass(frozen=True)
class MqttSection:
    url: str = "mqtt://127.0.0.1:1883"
    protocol: str = "5"
    topic_prefix: str = "vitals/v1"
    client_id: str = ""
    username: str = ""
    password_file: Path | None = None
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    keepalive_s: int = 30
    readings_per_message: int = 50
    max_inflight: int = 20
    status_interval_s: float = 30.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0

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


@dataclass(frozen=True)
class StoreSection:
    path: Path
    max_mb: float = 512.0
    batch_max: int = 500
    batch_wait_ms: float = 20.0


@dataclass(frozen=True)
class BluetoothSection:
    adapter: str = "bluez"
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    #: Connections the adapter may hold at once (a Pi's controller manages 5-10).
    max_connections: int = 5
    #: The adapter watchdog (drivers/ble/watchdog.py): after this long without hearing
    #: any Bluetooth device, restart scanning; as long again, power-cycle the adapter.
    watchdog_enabled: bool = True
    watchdog_silence_s: float = 300.0


@dataclass(frozen=True)
class WebSection:
    listen: str = "127.0.0.1:8080"

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


#: Fever lines per measurement site, degC, reading >= line raises. Defaults follow
#: docs/protocols.md section 6: 37.3 axillary (the isolation documents), Western
#: patient-education cut-offs elsewhere. Sites not listed never raise a fever alert.
DEFAULT_FEVER_LINES: dict[str, float] = {
    "axillary": 37.3,
    "oral": 37.8,
    "tympanic": 38.0,
    "ear": 38.0,
    "rectal": 38.0,
    "forehead": 38.0,
    "body": 37.3,
}


@dataclass(frozen=True)
class FeverRule:
    lines: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FEVER_LINES))
    high_fever_c: float = 39.1


@dataclass(frozen=True)
class LowSpo2Rule:
    raise_at_or_below: float = 93.0
    persist_s: float = 15.0
    clear_at_or_above: float = 95.0
    clear_after_s: float = 60.0
    critical_at_or_below: float = 88.0
    max_gap_s: float = 5.0


@dataclass(frozen=True)
class RulesSection:
    fever: FeverRule = field(default_factory=FeverRule)
    low_spo2: LowSpo2Rule = field(default_factory=LowSpo2Rule)


@dataclass(frozen=True)
class DeviceConfig:
    kind: str
    address: str
    subject: str | None = None
    site: Site | None = None
    port: str | None = None
    #: AES key of an encrypting advertiser (BTHome key, MiBeacon bindkey). A secret:
    #: kept out of repr, logs and every message.
    key: bytes | None = field(default=None, repr=False)

    @property
    def device_id(self) -> str:
        """Stable across restarts: derived from kind and address only."""
        if self.kind == "cms50":
            name = self.address.rstrip("/").rsplit("/", 1)[-1]  # by-id names are unique
            return f"cms50-{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-').lower()}"
        return f"{self.kind}-{self.address.replace(':', '').lower()}"


@dataclass(frozen=True)
class Config:
    gateway: GatewaySection
    mqtt: MqttSection
    store: StoreSection
    bluetooth: BluetoothSection
    web: WebSection
    rules: RulesSection
    devices: tuple[DeviceConfig, ...]
    source: Path | None = None

    @property
    def topic_root(self) -> str:
        return f"{self.mqtt.topic_prefix}/{self.gateway.township}/{self.gateway.id}"

    def device(self, device_id: str) -> DeviceConfig | None:
        return next((d for d in self.devices if d.device_id == device_id), None)


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
    _only(raw, "", {"gateway", "mqtt", "store", "bluetooth", "web", "rules", "devices"})
    gw = _table(raw, "gateway", required=True)
    _only(gw, "gateway", {"id", "township", "data_dir"})
    gateway = GatewaySection(
        id=_code(gw, "gateway.id", required=True),
        township=_code(gw, "gateway.township", required=True),
        data_dir=_path(gw, "gateway.data_dir", base_dir, required=True) or base_dir,
    )
    mqtt = _mqtt(_table(raw, "mqtt"), base_dir)
    st = _table(raw, "store")
    _only(st, "store", {"path", "max_mb", "batch_max", "batch_wait_ms"})
    store = StoreSection(
        path=_path(st, "store.path", base_dir) or gateway.data_dir / "gateway.sqlite3",
        max_mb=_number(st, "store.max_mb", 512.0, minimum=1.0),
        batch_max=int(_number(st, "store.batch_max", 500, minimum=1, integer=True)),
        batch_wait_ms=_number(st, "store.batch_wait_ms", 20.0, minimum=0.0),
    )
    bt = _table(raw, "bluetooth")
    _only(bt, "bluetooth", set(BluetoothSection.__dataclass_fields__))
    adapter = _string(bt, "bluetooth.adapter", "bluez")
    if not (re.fullmatch(r"bluez(:hci\d+)?", adapter) or re.fullmatch(r"bumble:.+", adapter)):
        raise ConfigError(
            f"bluetooth.adapter: {adapter!r} is not 'bluez', 'bluez:hciN' or 'bumble:TRANSPORT'"
        )
    bluetooth = BluetoothSection(
        adapter=adapter,
        reconnect_min_s=_number(bt, "bluetooth.reconnect_min_s", 1.0, minimum=0.01),
        reconnect_max_s=_number(bt, "bluetooth.reconnect_max_s", 60.0, minimum=0.01),
        connect_timeout_s=_number(bt, "bluetooth.connect_timeout_s", 10.0, minimum=0.1),
        max_connections=int(_number(bt, "bluetooth.max_connections", 5, minimum=1, integer=True)),
        watchdog_enabled=_bool(bt, "bluetooth.watchdog_enabled", True),
        watchdog_silence_s=_number(bt, "bluetooth.watchdog_silence_s", 300.0, minimum=10.0),
    )
    wb = _table(raw, "web")
    _only(wb, "web", {"listen"})
    listen = _string(wb, "web.listen", "127.0.0.1:8080")
    if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}", listen):
        raise ConfigError(f"web.listen: {listen!r} is not HOST:PORT")
    if not 0 <= int(listen.rsplit(":", 1)[1]) <= 65535:
        raise ConfigError(f"web.listen: port out of range in {listen!r}")
    rules = _rules(_table(raw, "rules"))
    devices = _devices(raw.get("devices", []))
    return Config(gateway, mqtt, store, bluetooth, WebSection(listen), rules, devices, source)


def _mqtt(mq: dict[str, Any], base_dir: Path) -> MqttSection:
    names = set(MqttSection.__dataclass_fields__)
    _only(mq, "mqtt", names)
    url = _string(mq, "mqtt.url", MqttSection.url)
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"mqtt.url: {url!r} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"mqtt.url: bad port in {url!r}") from None
    if parts.username or parts.password:
        raise ConfigError("mqtt.url: put credentials in mqtt.username and mqtt.password_file")
    protocol = _string(mq, "mqtt.protocol", "5")
    if protocol not in ("5", "3.1.1"):
        raise ConfigError(f"mqtt.protocol: {protocol!r} is not '5' or '3.1.1'")
    prefix = _string(mq, "mqtt.topic_prefix", MqttSection.topic_prefix)
    if not _TOPIC_PART.fullmatch(prefix):
        raise ConfigError(f"mqtt.topic_prefix: {prefix!r} must be topic levels without + or #")
    password_file = _readable(_path(mq, "mqtt.password_file", base_dir), "mqtt.password_file")
    username = _string(mq, "mqtt.username", "")
    if password_file and not username:
        raise ConfigError("mqtt.password_file: set mqtt.username too")
    return MqttSection(
        url=url,
        protocol=protocol,
        topic_prefix=prefix,
        client_id=_string(mq, "mqtt.client_id", ""),
        username=username,
        password_file=password_file,
        ca_file=_readable(_path(mq, "mqtt.ca_file", base_dir), "mqtt.ca_file"),
        client_cert=_readable(_path(mq, "mqtt.client_cert", base_dir), "mqtt.client_cert"),
        client_key=_readable(_path(mq, "mqtt.client_key", base_dir), "mqtt.client_key"),
        keepalive_s=int(_number(mq, "mqtt.keepalive_s", 30, minimum=5, integer=True)),
        readings_per_message=int(
            _number(mq, "mqtt.readings_per_message", 50, minimum=1, integer=True)
        ),
        max_inflight=int(_number(mq, "mqtt.max_inflight", 20, minimum=1, integer=True)),
        status_interval_s=_number(mq, "mqtt.status_interval_s", 30.0, minimum=1.0),
        reconnect_min_s=_number(mq, "mqtt.reconnect_min_s", 1.0, minimum=0.01),
        reconnect_max_s=_number(mq, "mqtt.reconnect_max_s", 60.0, minimum=0.01),
    )


def _rules(rl: dict[str, Any]) -> RulesSection:
    _only(rl, "rules", {"fever", "low_spo2"})
    fv = _table(rl, "fever", prefix="rules.")
    _only(fv, "rules.fever", {"lines", "high_fever_c"})
    lines_raw = _table(fv, "lines", prefix="rules.fever.")
    lines = dict(DEFAULT_FEVER_LINES)
    for site in lines_raw:
        if site not in Site.__members__.values():
            raise ConfigError(f"rules.fever.lines.{site}: unknown site; one of {_sites()}")
        lines[site] = _number(lines_raw, f"rules.fever.lines.{site}", 0, minimum=34.0)
    fever = FeverRule(lines, _number(fv, "rules.fever.high_fever_c", 39.1, minimum=34.0))
    sp = _table(rl, "low_spo2", prefix="rules.")
    names = set(LowSpo2Rule.__dataclass_fields__)
    _only(sp, "rules.low_spo2", names)
    defaults = LowSpo2Rule()
    values = {
        name: _number(sp, f"rules.low_spo2.{name}", getattr(defaults, name), minimum=0.0)
        for name in names
    }
    low_spo2 = LowSpo2Rule(**values)
    if low_spo2.clear_at_or_above <= low_spo2.raise_at_or_below:
        raise ConfigError("rules.low_spo2.clear_at_or_above: must be above raise_at_or_below")
    return RulesSection(fever, low_spo2)


def _devices(items: Any) -> tuple[DeviceConfig, ...]:
    if not isinstance(items, list):
        raise ConfigError("devices: must be an array of tables ([[devices]])")
    out: list[DeviceConfig] = []
    for index, item in enumerate(items):
        key = f"devices[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{key}: must be a table")
        _only(item, key, {"kind", "address", "subject", "site", "port", "key"})
        kind = _string(item, f"{key}.kind", "", required=True)
        if kind not in DEVICE_KINDS:
            raise ConfigError(f"{key}.kind: {kind!r} is not one of {', '.join(DEVICE_KINDS)}")
        if kind == "cms50":
            address = _string(item, f"{key}.port", "", required=True)
            if "address" in item:
                raise ConfigError(f"{key}.address: a cms50 is found by its port, not an address")
        else:
            address = _string(item, f"{key}.address", "", required=True).upper()
            if not _ADDRESS.fullmatch(address):
                raise ConfigError(f"{key}.address: {address!r} is not a Bluetooth address")
            if "port" in item:
                raise ConfigError(f"{key}.port: only cms50 devices have a serial port")
        subject = item.get("subject")
        if subject is not None and not (isinstance(subject, str) and _CODE.fullmatch(subject)):
            raise ConfigError(
                f"{key}.subject: must be a bed or pseudonymous code (letters, digits, - _ .),"
                " never a name"
            )
        site_name = item.get("site")
        site: Site | None = None
        if site_name is not None:
            if kind != "hts":
                raise ConfigError(f"{key}.site: only thermometers (kind hts) have a site")
            if site_name not in Site.__members__.values():
                raise ConfigError(f"{key}.site: {site_name!r} is not one of {_sites()}")
            site = Site(site_name)
        device = DeviceConfig(
            kind,
            address,
            subject,
            site,
            address if kind == "cms50" else None,
            _key(item, kind, key),
        )
        if any(d.device_id == device.device_id for d in out):
            raise ConfigError(f"{key}: the same device is configured twice")
        out.append(device)
    return tuple(out)


def _key(item: dict[str, Any], kind: str, where: str) -> bytes | None:
    """32 hex digits; required for a MiBeacon (always encrypted), optional for BTHome
    (absent: the sensor sends in the clear; present: clear packets are refused)."""
    value = item.get("key")
    if value is None:
        if kind == "mibeacon":
            raise ConfigError(f"{where}.key: a MiBeacon needs its 32-hex-digit bindkey")
        return None
    if kind not in ADVERT_KINDS:
        raise ConfigError(f"{where}.key: only bthome and mibeacon devices have a key")
    if not (isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{32}", value)):
        raise ConfigError(f"{where}.key: must be 32 hex digits (a 16-byte AES key)")
    return bytes.fromhex(value)


def _sites() -> str:
    return ", ".join(s.value for s in Site)


def _only(table: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise ConfigError(f"{name}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _table(
    raw: dict[str, Any], key: str, required: bool = False, prefix: str = ""
) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{prefix}{key}: missing table [{prefix}{key}]")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{prefix}{key}: must be a table")
    return value


def _string(raw: dict[str, Any], key: str, default: str, required: bool = False) -> str:
    name = key.rsplit(".", 1)[-1]
    if name not in raw:
        if required:
            raise ConfigError(f"{key}: missing")
        return default
    value = raw[name]
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a string")
    if required and not value:
        raise ConfigError(f"{key}: must not be empty")
    return value


def _code(raw: dict[str, Any], key: str, required: bool = False) -> str:
    value = _string(raw, key, "", required)
    if not _CODE.fullmatch(value):
        raise ConfigError(f"{key}: {value!r} must be letters, digits, '-', '_' or '.'")
    return value


def _path(raw: dict[str, Any], key: str, base: Path, required: bool = False) -> Path | None:
    value = _string(raw, key, "", required)
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else base / path


def _readable(path: Path | None, key: str) -> Path | None:
    """Secrets and certificates must be readable by the service's own user: check now,
    so `check-config` (run by systemd before start) says so instead of a dead uplink."""
    if path is not None:
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    return path


def _bool(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key.rsplit(".", 1)[-1], default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false")
    return value


def _number(
    raw: dict[str, Any], key: str, default: float, minimum: float, integer: bool = False
) -> float:
    name = key.rsplit(".", 1)[-1]
    if name not in raw:
        return default
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: must be a number")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{key}: must be a whole number")
    if value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum:g}")
    return float(value)
