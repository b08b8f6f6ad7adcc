"""A reading as a FHIR R4 Observation (gateway/fhir.py, docs/fhir.md): every metric with
every combination of quality flags is an Observation that the FHIR models of
fhir.resources accept (R4B: its Observation is R4's) and that keeps the R4 rules those
models do not check; the codes are the contract's; the resident is a code."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from itertools import combinations
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation

from drivers.measurement import Measurement, Metric, Quality, Site
from gateway.codes import CODES, LOINC_SYSTEM, MDC_SYSTEM
from gateway.contract.models import Reading as ReadingModel
from gateway.fhir import NotMappable, Systems, observation
from tests.conftest import REPO
from tests.contract import assert_exactly
from tests.gateway.helpers import reading

MAPPED = [m for m in Metric if m is not Metric.DOOR_OPEN]
FLAG_SETS = [frozenset(c) for n in range(len(Quality) + 1) for c in combinations(Quality, n)]
#: Observation.status, a required binding that the models do not check.
R4_STATUS = {
    "registered",
    "preliminary",
    "final",
    "amended",
    "corrected",
    "cancelled",
    "entered-in-error",
    "unknown",
}
#: The R4 vital signs profiles: the LOINC code each requires, and its UCUM units.
PROFILE_UNITS = {"2708-6": {"%"}, "8867-4": {"/min"}, "8310-5": {"Cel", "[degF]"}}
FHIR_ID = re.compile(r"[A-Za-z0-9.-]{1,64}")
UCUM = "http://unitsofmeasure.org"


def r4_violations(resource: dict[str, Any]) -> list[str]:
    """What a valid R4 Observation must hold beyond the structure the models check."""
    bad = []
    if resource["status"] not in R4_STATUS:
        bad.append(f"status {resource['status']!r}")
    values = [key for key in resource if key.startswith("value")]
    if "dataAbsentReason" in resource and values:
        bad.append("obs-6: a value and a dataAbsentReason")
    if not FHIR_ID.fullmatch(resource["id"]):
        bad.append(f"id {resource['id']!r}")
    for field in ("subject", "device"):
        kind, _, target = resource[field]["reference"].partition("/")
        if kind in ("Device", "Patient") and not FHIR_ID.fullmatch(target):
            bad.append(f"{field} {target!r}")
    categories = [c["code"] for cat in resource.get("category", []) for c in cat["coding"]]
    if "vital-signs" in categories:
        if not resource["subject"]["reference"].startswith("Patient"):
            bad.append("a vital sign's subject is a Patient")
        if not (values or "dataAbsentReason" in resource):
            bad.append("vs-2: neither a value nor a dataAbsentReason")
        quantity = resource.get("valueQuantity", {})
        if values and not {"value", "unit", "system", "code"} <= quantity.keys():
            bad.append("a vital sign's quantity has value, unit, system and code")
        if values and quantity["system"] != UCUM:
            bad.append("a vital sign's unit is UCUM")
        loinc = {c["code"] for c in resource["code"]["coding"] if c["system"] == LOINC_SYSTEM}
        for code in loinc & PROFILE_UNITS.keys():
            if values and quantity["code"] not in PROFILE_UNITS[code]:
                bad.append(f"{code} in {quantity['code']}")
    return bad


def assert_valid(resource: dict[str, Any]) -> None:
    Observation.model_validate(resource)
    assert not r4_violations(resource), r4_violations(resource)


@pytest.mark.parametrize("metric", MAPPED)
def test_every_metric_with_every_combination_of_flags_is_a_valid_observation(
    metric: Metric,
) -> None:
    for flags in FLAG_SETS:
        payload = reading(7, metric, 91.0, quality=flags).payload()
        resource = observation(payload)
        assert_valid(resource)
        withheld = flags & {Quality.PROBE_OFF, Quality.DEVICE_FAULT, Quality.TEST_MODE}
        assert ("valueQuantity" in resource) is not withheld, flags
        if not withheld:
            assert resource["valueQuantity"]["value"] == 91.0
        preliminary = flags & {Quality.PROVISIONAL, Quality.INTERMEDIATE}
        assert resource["status"] == ("preliminary" if preliminary else "final")
        shown = {c["code"] for i in resource.get("interpretation", []) for c in i["coding"]}
        assert shown == {flag.value for flag in flags}
    assert_exactly(ReadingModel, payload)  # the input is a reading of the contract


def test_a_flag_that_makes_the_value_not_the_residents_says_why_instead() -> None:
    reasons = {
        frozenset({Quality.PROBE_OFF}): "error",
        frozenset({Quality.DEVICE_FAULT, Quality.LOW_PERFUSION}): "error",
        frozenset({Quality.TEST_MODE}): "not-performed",
    }
    for flags, reason in reasons.items():
        resource = observation(reading(1, Metric.SPO2, 0, quality=flags).payload())
        (coding,) = resource["dataAbsentReason"]["coding"]
        assert coding["code"] == reason


def test_the_code_is_the_metrics_loinc_and_ieee_11073_code_from_the_contract() -> None:
    for metric in MAPPED:
        coded = observation(reading(1, metric).payload())["code"]["coding"]
        codes = CODES[metric]
        expected = [c.as_json() for c in (codes.loinc, codes.mdc) if c]
        if metric is Metric.SPO2:  # the R4 oxygen saturation profile's code first
            assert coded[0] == {
                "system": LOINC_SYSTEM,
                "code": "2708-6",
                "display": "Oxygen saturation in Arterial blood",
            }
            coded = coded[1:]
        assert coded == expected, metric
        assert {c["system"] for c in coded} <= {LOINC_SYSTEM, MDC_SYSTEM}
    spo2 = observation(reading(1, Metric.SPO2).payload())
    assert [c["code"] for c in spo2["code"]["coding"]] == ["2708-6", "59408-5", "150456"]
    assert spo2["valueQuantity"] == {"value": 97, "unit": "%", "system": UCUM, "code": "%"}
    assert spo2["category"][0]["coding"][0]["code"] == "vital-signs"


def test_the_resident_is_their_pseudonymous_code_and_the_battery_the_devices() -> None:
    resource = observation(reading(1, subject="bed-12").payload())
    assert resource["subject"] == {
        "reference": "Patient?identifier=urn:bedside-gateway:subject|bed-12",
        "type": "Patient",
        "identifier": {"system": "urn:bedside-gateway:subject", "value": "bed-12"},
    }
    assert resource["device"]["reference"] == "Device/plx-f00000000002"
    own = Systems(subject="https://township.example/fhir/sid/bed")
    subject = observation(reading(1, subject="bed-12").payload(), own)["subject"]
    assert subject["reference"] == "Patient?identifier=https://township.example/fhir/sid/bed|bed-12"

    battery = observation(reading(2, Metric.BATTERY, 40, subject=None).payload())
    assert_valid(battery)
    assert battery["subject"]["reference"] == "Device/plx-f00000000002"
    assert "category" not in battery
    assert battery["code"]["coding"] == [CODES[Metric.BATTERY].mdc.as_json()]


def test_a_door_and_a_vital_sign_of_an_unbound_device_are_no_observations() -> None:
    door = reading(1, Metric.DOOR_OPEN, True, device="mibeacon-f00000000012").payload()
    with pytest.raises(NotMappable, match="door_open"):
        observation(door)
    with pytest.raises(NotMappable, match="not bound"):
        observation(reading(2, Metric.PULSE_RATE, 80, subject=None).payload())


def test_each_temperature_site_is_its_snomed_body_site() -> None:
    snomed = {
        Site.AXILLARY: "422543003",
        Site.EAR: "117590005",
        Site.FINGER: "7569003",
        Site.FOREHEAD: "52795006",
        Site.ORAL: "74262004",
        Site.RECTAL: "34402009",
        Site.TOE: "29707007",
        Site.TYMPANIC: "42859004",
    }
    for site in Site:
        payload = reading(1, Metric.BODY_TEMPERATURE, 37.9, site=site).payload()
        resource = observation(payload)
        assert_valid(resource)
        codings = resource["bodySite"].get("coding", [])
        assert [c["code"] for c in codings] == ([snomed[site]] if site in snomed else [])
        assert resource["bodySite"]["text"] == site.value
    assert "bodySite" not in observation(reading(2, Metric.BODY_TEMPERATURE, 36.9).payload())


def test_the_time_is_the_devices_unless_its_clock_was_unset() -> None:
    taken = reading(1, Metric.BODY_TEMPERATURE, 36.6)
    stamped = dataclasses.replace(
        taken,
        measurement=Measurement(Metric.BODY_TEMPERATURE, 36.6, measured_at=datetime(2026, 11, 22)),
    )
    unset = dataclasses.replace(
        stamped,
        measurement=dataclasses.replace(
            stamped.measurement, quality=frozenset({Quality.DEVICE_CLOCK_UNSET})
        ),
    )
    received = taken.payload()["received_at"]
    assert observation(taken.payload())["effectiveDateTime"] == received
    device_time = stamped.payload()["measured_at"]
    assert device_time != received
    assert observation(stamped.payload())["effectiveDateTime"] == device_time
    assert observation(unset.payload())["effectiveDateTime"] == received
    assert all(observation(r.payload())["issued"] == received for r in (taken, stamped, unset))


def test_an_id_that_is_no_fhir_id_is_hashed_the_same_every_time() -> None:
    plain = observation(reading(5).payload())
    assert plain["id"] == "gw-test-5"
    long_port = "cms50-usb-" + "silicon-labs-cp2102-usb-to-uart-bridge-controller-0001" + "-if00"
    underscored = dataclasses.replace(reading(5, device=long_port), id="gw_north-5")
    resource = observation(underscored.payload())
    assert_valid(resource)
    assert resource["id"] != "gw_north-5"
    assert resource["identifier"] == [
        {"system": "urn:bedside-gateway:reading", "value": "gw_north-5"}
    ]
    assert resource["device"]["identifier"]["value"] == long_port
    assert observation(underscored.payload())["id"] == resource["id"]  # a resend: same id
    other = dataclasses.replace(underscored, id="gw_north-6")
    assert observation(other.payload())["id"] != resource["id"]


def test_the_worked_examples_of_the_document_are_what_the_converter_makes() -> None:
    text = (REPO / "docs" / "fhir.md").read_text(encoding="utf-8")
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]
    assert len(blocks) == 4
    for payload, documented in zip(blocks[::2], blocks[1::2], strict=True):
        assert_exactly(ReadingModel, payload)
        assert observation(payload) == documented
        assert_valid(documented)
