"""A reading as a FHIR R4 Observation, for a township server built on FHIR (docs/fhir.md).

Pure: the JSON of one reading as the gateway publishes it (an item of `readings` in
reading-message.json) in, the JSON of an Observation out. The codes are the contract's
(`gateway/codes.py`); the resident is named by their subject code only, never a name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.measurement import Metric, Quality, Site
from gateway.codes import CODES, LOINC_SYSTEM, Coding

UCUM_SYSTEM = "http://unitsofmeasure.org"
SNOMED_SYSTEM = "http://snomed.info/sct"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
ABSENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
#: The gateway's quality flags as codes: no standard code system has them.
QUALITY_SYSTEM = "urn:bedside-gateway:quality"


class NotMappable(ValueError):
    """A reading that is no Observation of a person: a door's state, a vital sign of no one."""


@dataclass(frozen=True, slots=True)
class Systems:
    """The identifier systems (URIs) of the gateway's names: a township sets its own."""

    reading: str = "urn:bedside-gateway:reading"
    device: str = "urn:bedside-gateway:device"
    subject: str = "urn:bedside-gateway:subject"


DEFAULT_SYSTEMS = Systems()


_TEXT = {
    Metric.SPO2: "SpO2",
    Metric.PULSE_RATE: "Pulse rate",
    Metric.PERFUSION_INDEX: "Perfusion index",
    Metric.BODY_TEMPERATURE: "Body temperature",
    Metric.BATTERY: "Battery charge",
}
#: The battery is the device's: no vital sign, and the device is its subject.
_VITAL_SIGNS = frozenset(_TEXT) - {Metric.BATTERY}
#: The code the R4 vital signs profile requires where the metric's own LOINC is narrower.
_PROFILE_LOINC = {
    Metric.SPO2: Coding(LOINC_SYSTEM, "2708-6", "Oxygen saturation in Arterial blood"),
}
#: SNOMED CT, from the HL7 Vital Signs guide's body temperature locations; the value set
#: has no code for `body` (general) or `gastrointestinal`: text only.
_BODY_SITES = {
    Site.AXILLARY: ("422543003", "Structure of axillary fossa (body structure)"),
    Site.EAR: ("117590005", "Ear structure (body structure)"),
    Site.FINGER: ("7569003", "Finger structure (body structure)"),
    Site.FOREHEAD: ("52795006", "Forehead structure (body structure)"),
    Site.ORAL: ("74262004", "Oral cavity structure (body structure)"),
    Site.RECTAL: ("34402009", "Rectum structure (body structure)"),
    Site.TOE: ("29707007", "Toe structure (body structure)"),
    Site.TYMPANIC: ("42859004", "Tympanic membrane structure (body structure)"),
}
#: Flags after which the value is not the resident's: it is withheld, with this reason
#: (the first flag present wins).
_ABSENT = {
    Quality.DEVICE_FAULT: Coding(ABSENT_SYSTEM, "error", "Error"),
    Quality.PROBE_OFF: Coding(ABSENT_SYSTEM, "error", "Error"),
    Quality.TEST_MODE: Coding(ABSENT_SYSTEM, "not-performed", "Not Performed"),
}
_PRELIMINARY = frozenset({Quality.PROVISIONAL, Quality.INTERMEDIATE})
_FHIR_ID = re.compile(r"[A-Za-z0-9.-]{1,64}")


def observation(reading: Mapping[str, Any], systems: Systems = DEFAULT_SYSTEMS) -> dict[str, Any]:
    """The Observation of one reading; `NotMappable` for a door's state, and for a vital
    sign from a device bound to no one (the vital signs profile needs its subject)."""
    metric = Metric(reading["metric"])
    if metric is Metric.DOOR_OPEN:
        raise NotMappable(f"{metric.value} is a room's state, not an Observation of a person")
    if metric in _VITAL_SIGNS and reading["subject"] is None:
        raise NotMappable(f"{reading['id']}: a vital sign of no one (the device is not bound)")
    flags = [Quality(flag) for flag in reading["quality"]]
    device = _reference("Device", reading["device"], systems.device)
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "id": fhir_id(reading["id"]),
        "identifier": [{"system": systems.reading, "value": reading["id"]}],
        "status": "preliminary" if _PRELIMINARY.intersection(flags) else "final",
    }
    if metric in _VITAL_SIGNS:
        out["category"] = [_concept(Coding(CATEGORY_SYSTEM, "vital-signs", "Vital Signs"))]
    out["code"] = _code(metric)
    if metric is Metric.BATTERY:
        out["subject"] = device
    else:
        out["subject"] = _subject(reading["subject"], systems.subject)
    device_time = None if Quality.DEVICE_CLOCK_UNSET in flags else reading["measured_at"]
    out["effectiveDateTime"] = device_time or reading["received_at"]
    out["issued"] = reading["received_at"]
    absent = next((flag for flag in _ABSENT if flag in flags), None)
    if absent is None:
        out["valueQuantity"] = {
            "value": reading["value"],
            "unit": reading["unit"],
            "system": UCUM_SYSTEM,
            "code": reading["unit"],
        }
    else:
        out["dataAbsentReason"] = _concept(_ABSENT[absent], text=_words(absent))
    if flags:
        out["interpretation"] = [
            _concept(Coding(QUALITY_SYSTEM, flag.value, _words(flag))) for flag in flags
        ]
    if reading["clock"] == "unsynced":
        out["note"] = [{"text": "the gateway's clock was not synchronised: the times may be wrong"}]
    if reading["site"] is not None:
        out["bodySite"] = _body_site(Site(reading["site"]))
    out["device"] = device
    return out


def fhir_id(name: str) -> str:
    """`name` when it is a valid FHIR id (letters, digits, `-`, `.`; at most 64), else a
    stable id derived from it: a gateway id may hold `_` and be 64 characters long."""
    if _FHIR_ID.fullmatch(name):
        return name
    return "sha256-" + hashlib.sha256(name.encode()).hexdigest()[:40]


def _code(metric: Metric) -> dict[str, Any]:
    codes = CODES[metric]
    codings = [c for c in (_PROFILE_LOINC.get(metric), codes.loinc, codes.mdc) if c]
    return {"coding": [c.as_json() for c in codings], "text": _TEXT[metric]}


def _subject(code: str, system: str) -> dict[str, Any]:
    """The resident by their pseudonymous code: `reference` for a server to resolve (in a
    transaction), `identifier` for one that does not."""
    return {
        "reference": f"Patient?identifier={system}|{code}",
        "type": "Patient",
        "identifier": {"system": system, "value": code},
    }


def _reference(kind: str, name: str, system: str) -> dict[str, Any]:
    return {
        "reference": f"{kind}/{fhir_id(name)}",
        "type": kind,
        "identifier": {"system": system, "value": name},
    }


def _body_site(site: Site) -> dict[str, Any]:
    if site not in _BODY_SITES:
        return {"text": site.value}
    code, display = _BODY_SITES[site]
    return _concept(Coding(SNOMED_SYSTEM, code, display), text=site.value)


def _words(flag: Quality) -> str:
    return flag.value.replace("_", " ")


def _concept(coding: Coding, text: str | None = None) -> dict[str, Any]:
    return {"coding": [coding.as_json()], "text": text or coding.display}
