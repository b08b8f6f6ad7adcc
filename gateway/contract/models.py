"""Every MQTT payload the gateway publishes, as Pydantic models in the code's own enums.

The JSON Schemas beside this module are generated from these models
(`python -m gateway.contract`), so an enum edited in the code changes the published
contract. The gateway does not build its payloads through these models (a reading's
payload is on the hot path): the tests check that what the code builds validates here.

Readings and alerts are closed objects (`additionalProperties: false`). `status` and
`devices` may gain fields in a later version: servers should ignore fields they do not
know there, except in a device entry and in `refused_packets`, which are closed.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, WithJsonSchema

from drivers.kinds import KINDS
from drivers.listener import AdapterState, LinkState, WatchdogAction
from drivers.measurement import UNITS, Metric, Quality, Site
from gateway.codes import contract_table
from gateway.config import CODE
from gateway.model import (
    AlertClass,
    AlertKind,
    AlertState,
    ClockState,
    RiskGrade,
    Severity,
)

if TYPE_CHECKING:
    Unit = str | None
    DeviceKind = str
else:
    #: The UCUM units of the metrics (`drivers.measurement.UNITS`); null for booleans.
    Unit = Literal[tuple(dict.fromkeys(UNITS.values()))]
    #: The configuration's device kinds (`drivers.kinds.KINDS`).
    DeviceKind = Literal[tuple(KINDS)]


def _rfc3339(value: str) -> str:
    """A time as the gateway writes it: ISO 8601 with a zone offset (a JSON string, kept
    as written, so a model never rewrites a time's text)."""
    if datetime.fromisoformat(value).tzinfo is None:
        raise ValueError(f"{value!r} has no zone offset")
    return value


Timestamp = Annotated[
    str, AfterValidator(_rfc3339), WithJsonSchema({"type": "string", "format": "date-time"})
]
#: A bed or pseudonymous code, as the configuration accepts it: never a name.
Subject = Annotated[str, Field(pattern=CODE.pattern)]
Count = Annotated[int, Field(ge=0)]
Number = float | bool


def _unique(flags: list[Quality]) -> list[Quality]:
    if len(set(flags)) != len(flags):
        raise ValueError("quality flags repeat")
    return flags


Flags = Annotated[
    list[Quality], AfterValidator(_unique), Field(json_schema_extra={"uniqueItems": True})
]


class _Closed(BaseModel):
    """An object with exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """An object that may gain fields in a later version."""

    model_config = ConfigDict(extra="allow")


# --- readings/<device> ---------------------------------------------------------------


class Reading(_Closed):
    id: str = Field(description="<gateway>-<seq>: stable; a resend carries the same id")
    seq: int = Field(ge=1, description="per gateway, strictly increasing in acceptance order")
    device: str
    subject: Subject | None = Field(
        description="bed or pseudonymous code; null when the device is not bound"
    )
    metric: Metric = Field(
        description="what was measured; x-codes: each metric's IEEE 11073-10101 (mdc) and"
        " LOINC codes, null where none exists (note says why)",
        json_schema_extra={"x-codes": contract_table()},
    )
    value: Number = Field(description="boolean only for door_open")
    unit: Unit = Field(description="UCUM code of the metric; null for booleans")
    site: Site | None = Field(description="measurement site of a temperature; null otherwise")
    quality: Flags = Field(description="quality flags, sorted; empty: a good, final value")
    measured_at: Timestamp | None = Field(description="device clock, when the device sent one")
    received_at: Timestamp = Field(description="gateway clock when it received the value")
    clock: ClockState = Field(
        description="whether the gateway clock was synchronised when it received the reading;"
        " corrected: it was not, and received_at was corrected once it was (see clock)"
    )


class ReadingMessage(_Closed):
    model_config = ConfigDict(title="readings/<device>: a batch of one device's readings")

    gateway: str
    device: str
    backlog: bool = Field(
        description="true when sent from the backlog after an outage; live readings may"
        " arrive ahead of backlog ones: order by seq"
    )
    readings: list[Reading] = Field(min_length=1)


# --- alerts and alerts/active --------------------------------------------------------


class AlertEvent(_Closed):
    model_config = ConfigDict(
        title="alerts: one change of one alert (also the items of alerts/active)"
    )

    id: str = Field(
        description="stable for the life of the alert (one episode): raised, updated,"
        " acknowledged and cleared events share it; a new episode after a clear has a new id"
    )
    kind: AlertKind = Field(description="what happened; docs/alerts.md gives each rule")
    alert_class: AlertClass = Field(
        alias="class",
        description="physiological (the resident's body), adherence (a measurement not"
        " taken), isolation (a door), technical (the equipment: never clinical)",
    )
    state: AlertState
    severity: Severity | None = Field(
        description="clinical severity of a physiological alert; null for every other class"
    )
    subject: Subject | None = Field(
        description="bed or pseudonymous code; null for the gateway's own alerts and"
        " unbound devices"
    )
    device: str = Field(
        description="the device it concerns, the gateway id (storage_failure), or the"
        " proxy's name (proxy_silent)"
    )
    value: float | None = Field(
        description="the latest value that changed the alert; null for a technical alert"
    )
    threshold: float | None = Field(
        description="the line that was crossed; null for a technical alert"
    )
    site: Site | None = Field(description="temperature site of a fever; null otherwise")
    raised_at: Timestamp
    updated_at: Timestamp
    cleared_at: Timestamp | None
    evidence: list[str] = Field(
        description="ids of the readings that caused the alert (the latest 20)"
    )
    detail: str | None = Field(
        description="what the alert is about in one line when value and threshold do not"
        " say it (storage_failure: disk full; missed_measurement: the window; door_open:"
        " when it opened; proxy_silent: not connected, or relaying nothing, and why)"
    )
    acknowledged_by: Subject | None = Field(
        description="role code of who acknowledged it (e.g. doctor-3), never a name; null"
        " until acknowledged, and again after an escalation"
    )
    acknowledged_at: Timestamp | None


class ActiveAlerts(_Closed):
    model_config = ConfigDict(title="alerts/active (retained): every alert not cleared")

    gateway: str
    alerts: list[AlertEvent] = Field(description="the latest event of each, by updated_at")


# --- subjects ------------------------------------------------------------------------


class LocalTime(RootModel[str]):
    root: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="HH:MM local time")


class ScheduleWindow(_Closed):
    name: Subject = Field(description="e.g. morning, evening")
    start: LocalTime
    end: LocalTime = Field(description="exclusive; the same day as start")


class IsolationPeriod(_Closed):
    start: Timestamp
    days: int = Field(ge=1, le=60)
    end: Timestamp = Field(description="start + days, or when it was ended early")
    ended_early: bool


class SubjectEntry(_Closed):
    code: Subject
    risk_grade: RiskGrade
    isolation: IsolationPeriod | None = Field(description="the latest isolation, or null")
    isolated: bool = Field(description="isolated now (the isolation rules apply)")
    schedule: list[ScheduleWindow] = Field(description="measurement windows of each day")
    thresholds: dict[str, dict[str, float | bool | str]] = Field(
        description="per rule table, the parameters that differ for this subject"
    )


class Subjects(_Open):
    model_config = ConfigDict(
        title="subjects (retained): each subject's risk grade, isolation and schedule"
    )

    gateway: str
    subjects: list[SubjectEntry]


# --- ledger --------------------------------------------------------------------------


class LedgerMeasurement(_Closed):
    """The final temperature that satisfied a window: the first one in it."""

    reading: str = Field(description="the reading's id")
    received_at: Timestamp
    value: float
    unit: Literal["Cel"]
    site: Site | None
    device: str


class LedgerWindow(_Closed):
    name: Subject
    start: LocalTime
    end: LocalTime
    status: Literal["measured", "missed", "pending", "not_expected"] = Field(
        description="measured; missed (no final temperature in it: missed_measurement was"
        " raised); pending (not judged yet: only in a day still in progress); not_expected"
        " (no thermometer bound from its start)"
    )
    measurement: LedgerMeasurement | None


class LedgerIsolationDay(_Closed):
    day: int = Field(ge=1, description="day n of the isolation (day 1: its first date)")
    days: int = Field(ge=1, le=60)


class LedgerDay(_Closed):
    model_config = ConfigDict(
        title="ledger: one subject's measurement windows of one local day (the 台账)"
    )

    gateway: str
    subject: Subject
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", description="local date, YYYY-MM-DD")
    timezone: str = Field(description="IANA name (Asia/Shanghai) or UTC offset (+08:00)")
    isolation: LedgerIsolationDay | None = Field(
        description="the isolation day of that date; null when not isolated on it"
    )
    windows: list[LedgerWindow] = Field(description="in order of their start")


# --- commands: cmd/<name>, cmd/<name>/result, audit ----------------------------------


class Command(_Closed):
    model_config = ConfigDict(title="cmd/<name>: a command from the township")

    id: str = Field(
        min_length=1,
        max_length=128,
        description="unique per sender: a repeated id gets the first result again and"
        " changes nothing",
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="the command's arguments (docs/mqtt-contract.md)"
    )
    sent_at: Timestamp | None = Field(
        default=None,
        description="when it was sent; older than commands.max_age_s: refused as expired",
    )


class CommandError(_Closed):
    code: Literal["malformed", "unknown_command", "not_found", "conflict", "expired"]
    message: str = Field(description="one line: what is wrong, naming the field")


class CommandResult(_Closed):
    model_config = ConfigDict(
        title="cmd/<name>/result: the answer to one command (also on its response topic)"
    )

    id: str | None = Field(description="the command's id; null when none could be read")
    command: str
    ok: bool
    error: CommandError | None = Field(description="null when ok")
    result: dict[str, Any] | None = Field(description="what the command returns; null unless ok")
    at: Timestamp


class AuditEntry(_Closed):
    model_config = ConfigDict(title="audit: one command applied or refused")

    gateway: str
    id: str | None
    command: str
    args: dict[str, Any] = Field(description="as received, a device key masked")
    ok: bool
    error: CommandError | None
    at: Timestamp
    channel: Literal["mqtt"]


# --- clock ---------------------------------------------------------------------------


class ClockCorrection(_Closed):
    model_config = ConfigDict(
        title="clock: the correction of readings received before the clock was synchronised"
    )

    gateway: str
    from_seq: int = Field(ge=1, description="first seq of the span")
    to_seq: int = Field(ge=1, description="last seq of the span, inclusive")
    offset_ms: int = Field(
        description="the true time of a reading of the span received with clock unsynced"
        " is its received_at plus this; readings received with clock corrected carry it"
        " already, synced ones need none"
    )
    synced_at: Timestamp = Field(description="gateway clock, synchronised, at the correction")


# --- status --------------------------------------------------------------------------


class Queue(_Open):
    """Refreshed every 5 s."""

    undelivered: Count = Field(description="readings waiting for a PUBACK")
    oldest_undelivered_at: Timestamp | None = Field(
        description="received_at of the oldest of them, or null"
    )
    undelivered_alert_events: Count = Field(description="alert events waiting for a PUBACK")
    store_bytes: Count = Field(description="bytes of data in the gateway's SQLite store")
    evicted_undelivered: Count = Field(
        description="readings deleted undelivered because the store was full (ever)"
    )


#: An ESPHome proxy's link (`drivers.ble.esphome.link.ProxyState`, not imported: the
#: contract does not load the proxies' libraries).
ProxyLinkState = Literal["connecting", "connected", "disconnected", "refused"]


class Proxy(_Open):
    """One ESPHome Bluetooth proxy (`[[bluetooth.proxies]]`): a small board on the
    floor's network that relays what it hears, one more radio of the gateway."""

    name: Subject = Field(description="the proxy's name in the gateway's configuration")
    host: str = Field(description="its IP address or host name on the floor's network")
    port: int = Field(ge=1, le=65535, description="its ESPHome native API port")
    state: ProxyLinkState = Field(
        description="connecting (first try, or right after a loss); connected;"
        " disconnected (cannot be reached: retried with back-off); refused (wrong"
        " encryption key, or not a Bluetooth proxy: retried slowly)"
    )
    error: str = Field(description="why it is not connected, for a technician; empty when it is")
    slots_free: Count = Field(description="connections it can still make for the gateway")
    slots_limit: Count = Field(description="connections it can hold at once; 0 until it says")
    connected_s: float | None = Field(
        ge=0, description="seconds since this connection began; null when not connected"
    )
    last_heard_s_ago: float | None = Field(
        ge=0,
        description="seconds since it last relayed an advertisement; null when never since"
        " the gateway started. Silent this long (or not connected) for"
        " bluetooth.proxy_silent_s: the proxy_silent alert",
    )
    devices: Count = Field(description="the gateway's device connections held through it now")


class Bluetooth(_Open):
    """The adapter; with the watchdog on, also its last step and counts; with ESPHome
    proxies configured, each proxy."""

    adapter: str = Field(
        description="the gateway's own adapter (bluez, bluez:hciN, bumble:...), or none"
        " when only proxies are used"
    )
    state: AdapterState = Field(description="with proxies: up while any radio is up")
    error: str = Field(description="why the adapter is unavailable; empty otherwise")
    last_action: WatchdogAction | None = Field(
        default=None, description="the watchdog's last step, null before the first"
    )
    last_action_at: Timestamp | None = None
    scan_restarts: Count = Field(default=0, description="with the watchdog on, since the start")
    power_cycles: Count = Field(default=0, description="with the watchdog on, since the start")
    proxies: list[Proxy] = Field(
        default=[], description="the ESPHome Bluetooth proxies, in configuration order"
    )


class RefusedPackets(_Closed):
    malformed: Count = Field(description="sum of the devices' malformed_packets")
    security: Count = Field(description="sum of the devices' security_rejections")


class DeviceCounts(_Open):
    configured: Count
    connected: Count = Field(description="devices whose link is connected now")


class Fault(_Closed):
    """A part of the gateway that is down or cannot do its whole job."""

    part: str = Field(
        description="pipeline, uplink, web, housekeeping (supervised tasks), or store"
    )
    reason: str = Field(description="one line, for a technician")
    since: Timestamp


class OnlineStatus(_Open):
    gateway: str
    state: Literal["online", "degraded"] = Field(
        description="online: collecting, storing and publishing all work; degraded: some"
        " part does not (see faults), the rest goes on"
    )
    faults: list[Fault] = Field(description="empty when online")
    version: str
    time: Timestamp = Field(description="gateway clock when the message was built")
    started_at: Timestamp
    clock: Literal["synced", "unsynced"] = Field(
        description="whether the gateway's clock is synchronised now"
    )
    queue: Queue
    bluetooth: Bluetooth
    refused_packets: RefusedPackets = Field(
        description="packets refused, over all configured devices: malformed (radio noise)"
        " apart from security rejections (maybe an attack)"
    )
    devices: DeviceCounts


class OfflineStatus(_Open):
    """Published by the gateway on a clean stop, and the Last Will."""

    gateway: str
    state: Literal["offline"]


class Status(RootModel[Annotated[OnlineStatus | OfflineStatus, Field(discriminator="state")]]):
    model_config = ConfigDict(
        title="status (retained): online with a health summary, or offline (Last Will)"
    )


# --- devices -------------------------------------------------------------------------


class LastValue(_Open):
    """A device's last value of one metric, as `bedside-gateway decode` prints it."""

    metric: Metric
    value: Number
    unit: Unit
    quality: Flags
    site: Site | None = None
    measured_at: str | None = Field(
        default=None, description="the device's local time, without a zone"
    )


class Device(_Closed):
    id: str
    kind: DeviceKind
    address: str = Field(description="Bluetooth address, or the serial port of a cms50")
    subject: Subject | None
    link: LinkState
    link_detail: str = Field(description="short reason for the link state")
    info: dict[str, str] = Field(description="identity read from the device")
    battery: float | None = Field(description="last battery percentage")
    rssi: int | None = Field(description="signal strength in dBm; null until heard")
    last_seen: Timestamp | None
    last_values: dict[Metric, LastValue] = Field(description="the last value of each metric")
    malformed_packets: Count = Field(
        description="packets that could not be decoded (truncated, bad checksum,"
        " implausible): radio noise"
    )
    security_rejections: Count = Field(
        description="packets refused by a security check (replayed, clear text from a"
        " device with a key, failed decryption): maybe an attack"
    )


class Devices(_Open):
    model_config = ConfigDict(
        title="devices (retained): inventory and binding of devices to subjects"
    )

    gateway: str
    devices: list[Device]
