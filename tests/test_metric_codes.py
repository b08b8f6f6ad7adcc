"""Each metric's IEEE 11073-10101 and LOINC codes are one table in the code
(gateway/codes.py); the schema a server reads and the contract document say the same."""

from __future__ import annotations

import re

from drivers.measurement import Metric
from gateway.codes import CODES, LOINC_SYSTEM, MDC_SYSTEM, contract_table
from tests.conftest import REPO
from tests.contract import contract_schema

CONTRACT = REPO / "docs" / "mqtt-contract.md"


def test_every_metric_has_its_codes_and_the_vital_signs_are_the_issues() -> None:
    assert set(CODES) == set(Metric)
    named = {
        Metric.SPO2: ("150456", "59408-5"),
        Metric.PULSE_RATE: ("149530", "8867-4"),
        Metric.BODY_TEMPERATURE: ("150364", "8310-5"),
    }
    for metric, (mdc, loinc) in named.items():
        codes = CODES[metric]
        assert codes.mdc and codes.loinc
        assert (codes.mdc.system, codes.mdc.code) == (MDC_SYSTEM, mdc)
        assert (codes.loinc.system, codes.loinc.code) == (LOINC_SYSTEM, loinc)
    for codes in CODES.values():
        assert (codes.mdc and codes.loinc) or codes.note, "a missing code says why"


def test_the_published_schema_carries_the_codes_of_each_metric() -> None:
    reading = contract_schema("reading-message.json")["$defs"]["Reading"]
    assert reading["properties"]["metric"]["x-codes"] == contract_table()


def test_the_contract_document_tables_the_codes_of_each_metric() -> None:
    section = CONTRACT.read_text(encoding="utf-8").split("### Metrics and units", 1)[1]
    header = "| `metric` | IEEE 11073-10101 (MDC) | LOINC | Note |\n|---|---|---|---|\n"
    assert header in section, "the codes table is gone from 'Metrics and units'"
    rows = section.split(header, 1)[1].split("\n\n", 1)[0].splitlines()
    documented = {}
    for row in rows:
        metric, mdc, loinc, note = (cell.strip() for cell in row.strip("|").split("|"))
        documented[metric.strip("`")] = (mdc, loinc, note)
    expected = {}
    for metric, codes in CODES.items():
        mdc = f"{codes.mdc.code} `{codes.mdc.display}`" if codes.mdc else "none"
        loinc = f"{codes.loinc.code} {codes.loinc.display}" if codes.loinc else "none"
        expected[metric.value] = (mdc, loinc, codes.note)
    assert documented == expected
    assert all(re.fullmatch(r"\d+-\d", c.loinc.code) for c in CODES.values() if c.loinc)
