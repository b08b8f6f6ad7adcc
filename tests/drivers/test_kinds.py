"""The device-kind registry: every entry works, a broken one is named, and what derives
from it (the docs table, the simulated twins) stays in step."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from drivers.kinds import KINDS, DeviceKind, KeyUse, Transport, check_kind, kinds_table
from tests.conftest import REPO


@pytest.mark.parametrize("kind", KINDS.values(), ids=list(KINDS))
def test_every_shipped_kind_passes_the_start_up_self_check(kind: DeviceKind) -> None:
    check_kind(kind)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gatt": None}, r"'hts' \(gatt\) declares no gatt"),
        ({"transport": Transport.ADVERT}, r"declares no service_data_uuid and advert_decoder"),
        ({"transport": Transport.SERIAL}, r"declares no serial"),
        ({"twin": "tests.fake:Thing"}, r"twin 'tests.fake:Thing' is not firmware_sim"),
        ({"name": "HTS 2"}, r"a name is lower-case letters and digits"),
    ],
)
def test_a_broken_entry_is_one_clear_error(change: dict[str, object], message: str) -> None:
    broken = dataclasses.replace(KINDS["hts"], **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        check_kind(broken)


def test_a_serial_kind_takes_no_key_or_site() -> None:
    broken = dataclasses.replace(KINDS["cms50"], key=KeyUse.OPTIONAL)
    with pytest.raises(ValueError, match="a serial device has no advert, site or key"):
        check_kind(broken)


@pytest.mark.parametrize("kind", KINDS.values(), ids=list(KINDS))
def test_every_kind_has_a_simulated_twin(kind: DeviceKind) -> None:
    module, _, name = kind.twin.partition(":")
    assert isinstance(getattr(importlib.import_module(module), name), type)


def test_the_configuration_guide_lists_every_kind_as_the_kinds_command_does() -> None:
    guide = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "\n".join(kinds_table()) in guide


def test_device_ids_are_stable_and_safe_in_topics() -> None:
    assert KINDS["plx"].device_id("F0:00:00:00:00:02") == "plx-f00000000002"
    port = "/dev/serial/by-id/usb-Silicon_Labs_CP2102_0001-if00-port0"
    assert KINDS["cms50"].device_id(port) == "cms50-usb-silicon-labs-cp2102-0001-if00-port0"
