"""The standard codes of each metric: IEEE 11073-10101 (MDC) and LOINC, in one table.

`CODES` is published in the contract (`x-codes` on a reading's `metric` in
reading-message.json, and the table in docs/mqtt-contract.md) and is what
`gateway/fhir.py` codes an Observation with. Sources: the IEEE 11073-10101 nomenclature
(a code is its partition times 2**16 plus its term code, as written below) and LOINC.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from drivers.measurement import Metric

MDC_SYSTEM = "urn:iso:std:iso:11073:10101"
LOINC_SYSTEM = "http://loinc.org"

#: IEEE 11073-10101 partitions used here.
_OBJ = 1  # object-oriented: objects and their attributes
_SCADA = 2  # supervisory control and data acquisition: measurements


@dataclass(frozen=True, slots=True)
class Coding:
    """One code of one code system, shaped as a FHIR Coding."""

    system: str
    code: str
    display: str

    def as_json(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True, slots=True)
class MetricCodes:
    mdc: Coding | None
    loinc: Coding | None
    #: Why a code is missing, or what to know about one; empty otherwise.
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "mdc": self.mdc.as_json() if self.mdc else None,
            "loinc": self.loinc.as_json() if self.loinc else None,
            "note": self.note,
        }


def _mdc(name: str, partition: int, term: int) -> Coding:
    return Coding(MDC_SYSTEM, str(partition << 16 | term), name)


def _loinc(code: str, display: str) -> Coding:
    return Coding(LOINC_SYSTEM, code, display)


CODES: MappingProxyType[Metric, MetricCodes] = MappingProxyType(
    {
        Metric.SPO2: MetricCodes(
            _mdc("MDC_PULS_OXIM_SAT_O2", _SCADA, 19384),
            _loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ),
        Metric.PULSE_RATE: MetricCodes(
            _mdc("MDC_PULS_OXIM_PULS_RATE", _SCADA, 18458),
            _loinc("8867-4", "Heart rate"),
        ),
        Metric.PERFUSION_INDEX: MetricCodes(
            _mdc("MDC_PULS_OXIM_PERF_REL", _SCADA, 19376),
            _loinc("61006-3", "Perfusion index Tissue by Pulse oximetry"),
            "LOINC's pre- and postductal perfusion indexes (73798-1, 73794-0) are for"
            " newborn screening, not a finger sensor",
        ),
        Metric.BODY_TEMPERATURE: MetricCodes(
            _mdc("MDC_TEMP_BODY", _SCADA, 19292),
            _loinc("8310-5", "Body temperature"),
            "the site is in `site` (FHIR: bodySite), never in a site-specific code",
        ),
        Metric.BATTERY: MetricCodes(
            _mdc("MDC_ATTR_VAL_BATT_CHARGE", _OBJ, 2460),
            None,
            "the charge of the device, not of the resident: an attribute of the device in"
            " IEEE 11073, which the HL7 Personal Health Device guide also codes battery"
            " Observations with; LOINC has no code for it",
        ),
        Metric.DOOR_OPEN: MetricCodes(
            None,
            None,
            "a room's door, not a measurement of a person: neither nomenclature has a code",
        ),
    }
)


def contract_table() -> dict[str, Any]:
    """`CODES` as the contract publishes it (`x-codes`), keyed by metric name."""
    return {metric.value: CODES[metric].as_json() for metric in Metric}
