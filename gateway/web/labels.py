"""The words the page shows for the code's values (alert kinds, link states, device
kinds...): English message ids marked for the catalogues with `N_`, translated when a
page is rendered. tests/gateway/test_web_i18n.py checks every member of each enum has
one, so a new alert kind cannot reach the page untranslated."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from drivers.listener import AdapterState, LinkState
from drivers.measurement import Metric, Quality, Site
from gateway.contract.models import ProxyLinkState
from gateway.model import (
    AlertClass,
    AlertKind,
    AlertState,
    ClockState,
    DoorRole,
    RiskGrade,
    Severity,
)
from gateway.uplink import BrokerState


def N_(message: str) -> str:
    """Marks a message for the catalogues; translated where it is shown."""
    return message


ALERT_KINDS: Mapping[AlertKind, str] = {
    AlertKind.LOW_SPO2: N_("Low SpO2"),
    AlertKind.FEVER: N_("Fever"),
    AlertKind.HYPOTHERMIA: N_("Low temperature"),
    AlertKind.TACHYCARDIA: N_("Fast pulse"),
    AlertKind.BRADYCARDIA: N_("Slow pulse"),
    AlertKind.MISSED_MEASUREMENT: N_("Missed measurement"),
    AlertKind.DOOR_OPEN: N_("Door opened"),
    AlertKind.DEVICE_SILENT: N_("Device silent"),
    AlertKind.PROBE_OFF: N_("Finger out of the probe"),
    AlertKind.BATTERY_LOW: N_("Battery low"),
    AlertKind.STORAGE_FAILURE: N_("Storage failure"),
    AlertKind.PROXY_SILENT: N_("Bluetooth proxy silent"),
}

ALERT_CLASSES: Mapping[AlertClass, str] = {
    AlertClass.PHYSIOLOGICAL: N_("Health"),
    AlertClass.ADHERENCE: N_("Routine"),
    AlertClass.ISOLATION: N_("Isolation"),
    AlertClass.TECHNICAL: N_("Equipment"),
}

ALERT_STATES: Mapping[AlertState, str] = {
    AlertState.RAISED: N_("raised"),
    AlertState.UPDATED: N_("updated"),
    AlertState.ACKNOWLEDGED: N_("acknowledged"),
    AlertState.CLEARED: N_("cleared"),
}

SEVERITIES: Mapping[Severity, str] = {
    Severity.WARNING: N_("warning"),
    Severity.HIGH: N_("high"),
    Severity.CRITICAL: N_("critical"),
}

RISK_GRADES: Mapping[RiskGrade, str] = {
    RiskGrade.GREEN: N_("Green"),
    RiskGrade.YELLOW: N_("Yellow"),
    RiskGrade.RED: N_("Red"),
}

DOOR_ROLES: Mapping[DoorRole, str] = {
    DoorRole.ISOLATION: N_("isolation door: any opening during isolation alerts"),
    DoorRole.NIGHT: N_("night door: an opening in the quiet hours alerts"),
    DoorRole.INFO: N_("information only: openings are recorded"),
}

LINK_STATES: Mapping[LinkState, str] = {
    LinkState.CONNECTING: N_("connecting"),
    LinkState.CONNECTED: N_("connected"),
    LinkState.DISCONNECTED: N_("disconnected"),
    LinkState.UNREACHABLE: N_("unreachable"),
    LinkState.PERMISSION_DENIED: N_("permission denied"),
}

ADAPTER_STATES: Mapping[AdapterState, str] = {
    AdapterState.NOT_USED: N_("not used"),
    AdapterState.STARTING: N_("starting"),
    AdapterState.OPENING: N_("opening"),
    AdapterState.UP: N_("working"),
    AdapterState.RESTARTING_SCAN: N_("restarting the scan"),
    AdapterState.POWER_CYCLING: N_("power-cycling"),
    AdapterState.UNAVAILABLE: N_("unavailable"),
}

#: An ESPHome proxy's link state, with why it is not connected in the technician's words
#: (the link's own error, in English, goes under it).
PROXY_STATES: Mapping[ProxyLinkState, str] = {
    "connecting": N_("connecting"),
    "connected": N_("connected"),
    "disconnected": N_("not connected: it cannot be reached on the network"),
    "refused": N_("not connected: it refused the gateway (wrong key, or not a Bluetooth proxy)"),
}

BROKER_STATES: Mapping[BrokerState, str] = {
    BrokerState.CONNECTING: N_("connecting"),
    BrokerState.CONNECTED: N_("connected"),
    BrokerState.DISCONNECTED: N_("disconnected"),
}

CLOCK_STATES: Mapping[ClockState, str] = {
    ClockState.SYNCED: N_("synchronised"),
    ClockState.UNSYNCED: N_("not synchronised"),
    ClockState.CORRECTED: N_("corrected"),
}

METRICS: Mapping[Metric, str] = {
    Metric.SPO2: N_("SpO2"),
    Metric.PULSE_RATE: N_("Pulse"),
    Metric.PERFUSION_INDEX: N_("Perfusion index"),
    Metric.BODY_TEMPERATURE: N_("Temperature"),
    Metric.DOOR_OPEN: N_("Door"),
    Metric.BATTERY: N_("Battery"),
}

QUALITIES: Mapping[Quality, str] = {
    Quality.PROBE_OFF: N_("finger out"),
    Quality.LOW_PERFUSION: N_("weak pulse signal"),
    Quality.POOR_SIGNAL: N_("poor signal"),
    Quality.QUESTIONABLE: N_("questionable"),
    Quality.PROVISIONAL: N_("provisional"),
    Quality.DEVICE_FAULT: N_("device fault"),
    Quality.TEST_MODE: N_("test mode"),
    Quality.FROM_STORAGE: N_("from the device's memory"),
    Quality.DEVICE_CLOCK_UNSET: N_("device clock not set"),
    Quality.INTERMEDIATE: N_("still measuring"),
    Quality.SPOT_CHECK: N_("spot check"),
}

SITES: Mapping[Site, str] = {
    Site.AXILLARY: N_("armpit"),
    Site.BODY: N_("body"),
    Site.EAR: N_("ear"),
    Site.FINGER: N_("finger"),
    Site.GASTROINTESTINAL: N_("gastrointestinal"),
    Site.ORAL: N_("mouth"),
    Site.RECTAL: N_("rectal"),
    Site.TOE: N_("toe"),
    Site.TYMPANIC: N_("eardrum"),
    Site.FOREHEAD: N_("forehead"),
}

#: The device kinds by their registry name (drivers/kinds.py), in people's words.
DEVICE_KINDS: Mapping[str, str] = {
    "hts": N_("Bluetooth thermometer"),
    "plx": N_("Bluetooth pulse oximeter"),
    "berrymed": N_("BerryMed pulse oximeter"),
    "pc60fw": N_("PC-60FW pulse oximeter"),
    "bthome": N_("BTHome door sensor"),
    "mibeacon": N_("Xiaomi door sensor"),
    "cms50": N_("CMS50 USB pulse oximeter"),
}

#: The usual names of measurement windows; another name is shown as it is.
WINDOWS: Mapping[str, str] = {
    "morning": N_("Morning"),
    "noon": N_("Noon"),
    "afternoon": N_("Afternoon"),
    "evening": N_("Evening"),
    "night": N_("Night"),
}

LEDGER_STATUSES: Mapping[str, str] = {
    "measured": N_("Measured"),
    "missed": N_("Missed"),
    "pending": N_("Not yet"),
    "not_expected": N_("No thermometer"),
}

#: Every table above of an enum, for the completeness test.
ENUM_TABLES: Mapping[type[StrEnum], Mapping[Any, str]] = {
    AlertKind: ALERT_KINDS,
    AlertClass: ALERT_CLASSES,
    AlertState: ALERT_STATES,
    Severity: SEVERITIES,
    RiskGrade: RISK_GRADES,
    DoorRole: DOOR_ROLES,
    LinkState: LINK_STATES,
    AdapterState: ADAPTER_STATES,
    BrokerState: BROKER_STATES,
    ClockState: CLOCK_STATES,
    Metric: METRICS,
    Quality: QUALITIES,
    Site: SITES,
}

#: The fields a refused form may name (the care service's keys), in people's words.
FIELDS: Mapping[str, str] = {
    "by": N_("role code"),
    "subject": N_("bed or subject code"),
    "kind": N_("device kind"),
    "address": N_("address"),
    "site": N_("measurement site"),
    "role": N_("door role"),
    "key": N_("encryption key"),
    "risk_grade": N_("risk grade"),
    "isolation_start": N_("isolation start"),
    "isolation_days": N_("isolation days"),
    "code": N_("bed or subject code"),
}

#: The service's supervised parts (`gateway/supervision.py`), as a fault names them.
PARTS: Mapping[str, str] = {
    "pipeline": N_("collecting readings"),
    "commands": N_("the township's commands"),
    "uplink": N_("sending to the township"),
    "housekeeping": N_("housekeeping"),
    "web": N_("this page"),
    "store": N_("the store on the SD card"),
}
