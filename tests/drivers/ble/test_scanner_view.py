"""The proxies' scanner view: which radio a GATT device connects through (the one that
hears it best, kept unless another is clearly better, within slots), and the one
scanner that hears every radio."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.bumble.advertising import raw_advertisement_data
from drivers.ble.routes import NoRoute
from drivers.ble.scanner_view import ScannerView, Sighting, choose_radio

OXIMETER = "F0:00:00:00:00:02"
NOW = 1000.0


def sighting(rssi: int, age_s: float = 1.0) -> Sighting:
    return Sighting(rssi, NOW - age_s, BLEDevice(OXIMETER, None, None))


def choose(current: str | None, margin_db: int = 10, **rssi: int) -> str | None:
    return choose_radio(
        {name: sighting(value) for name, value in rssi.items()},
        set(rssi),
        current,
        NOW,
        fresh_s=30,
        margin_db=margin_db,
    )


def test_the_strongest_radio_takes_a_new_device() -> None:
    assert choose(None, east=-50, west=-72) == "east"
    assert choose(None, east=-80, west=-72) == "west"


def test_the_radio_that_has_it_keeps_it_unless_another_is_clearly_stronger() -> None:
    assert choose("west", east=-65, west=-72) == "west"  # 7 dB: not enough
    assert choose("west", east=-62, west=-72) == "east"  # 10 dB: moves
    assert choose("west", margin_db=0, east=-71, west=-72) == "east"


def test_only_fresh_sightings_by_usable_radios_count() -> None:
    sightings = {"east": sighting(-40, age_s=31), "west": sighting(-80)}
    assert choose_radio(sightings, {"east", "west"}, None, NOW, fresh_s=30, margin_db=10) == (
        "west"
    )
    assert choose_radio(sightings, {"east"}, None, NOW, fresh_s=30, margin_db=10) is None
    # The radio that had it is gone: the device goes to one that hears it.
    assert choose_radio(sightings, {"west"}, "east", NOW, fresh_s=30, margin_db=10) == "west"


@given(
    st.dictionaries(st.sampled_from("abcd"), st.integers(-100, -20), min_size=1),
    st.sampled_from("abcd") | st.none(),
    st.integers(0, 30),
)
def test_the_choice_is_a_radio_that_hears_it_and_never_weaker_than_allowed(
    rssi: dict[str, int], current: str | None, margin_db: int
) -> None:
    chosen = choose(current, margin_db, **rssi)
    assert chosen in rssi
    best = max(rssi.values())
    if chosen != current:
        assert rssi[chosen] == best
    else:
        assert rssi[chosen] == best or best - rssi[chosen] < margin_db


class Radio:
    """A radio of the view with a fixed number of slots (a proxy's count is its own)."""

    def __init__(self, name: str, slots: int, up: bool = True) -> None:
        self.name, self.slots, self.up = name, slots, up

    def usable(self) -> bool:
        return self.up

    def settled(self, now: float) -> bool:
        return True

    def free_slots(self, held: int) -> int:
        return self.slots - held

    def client_kwargs(self) -> dict[str, Any]:
        return {"radio": self.name}


def hear(view: ScannerView, radio: str, address: str, rssi: int) -> None:
    view.heard(radio, BLEDevice(address, None, radio), AdvertisementData(
        local_name=None, manufacturer_data={}, service_data={}, service_uuids=[],
        tx_power=None, rssi=rssi, platform_data=(),
    ))  # fmt: skip


@pytest.mark.asyncio
async def test_a_route_waits_for_a_slot_and_takes_the_radio_that_frees_one() -> None:
    view = ScannerView(fresh_s=30, margin_db=10, scan_timeout=5)
    view.add(Radio("east", slots=1))
    view.add(Radio("west", slots=0))
    other = "F0:00:00:00:00:01"
    hear(view, "east", OXIMETER, -50)
    hear(view, "east", other, -50)
    hear(view, "west", other, -60)
    said: list[str] = []
    async with view.route(OXIMETER, said.append) as first:
        assert (first.adapter, first.client_kwargs, first.rssi) == ("east", {"radio": "east"}, -50)
        assert first.device.details == "east"
        assert view.owned("east") == 1
        waiting = asyncio.ensure_future(view.route(other, said.append).__aenter__())
        await asyncio.sleep(0.05)
        assert said == ["waiting for a free connection slot"] and not waiting.done()
    second = await asyncio.wait_for(waiting, 5)
    assert second.adapter == "east"
    assert view.owner(OXIMETER) == "east"


@pytest.mark.asyncio
async def test_a_device_no_radio_hears_is_not_routed_and_says_which_radios_listened() -> None:
    view = ScannerView(fresh_s=30, margin_db=10, scan_timeout=0.2)
    view.add(Radio("east", slots=3))
    view.add(Radio("west", slots=3, up=False))
    with pytest.raises(NoRoute, match=r"not heard within 0\.2 s by east"):
        async with view.route(OXIMETER, print):
            pass
    hear(view, "west", OXIMETER, -40)  # heard by a radio that is down: no use
    with pytest.raises(NoRoute, match="not heard"):
        async with view.route(OXIMETER, print):
            pass


@pytest.mark.asyncio
async def test_the_view_scanner_hears_every_radio() -> None:
    view = ScannerView(fresh_s=30, margin_db=10, scan_timeout=1)
    heard: list[tuple[str, int | None]] = []
    scanner = BleakScanner(lambda d, a: heard.append((d.address, a.rssi)), **view.scanner_kwargs())
    await scanner.start()
    hear(view, "east", OXIMETER, -50)
    hear(view, "west", OXIMETER, -70)
    await scanner.stop()
    hear(view, "west", OXIMETER, -71)
    assert heard == [(OXIMETER, -50), (OXIMETER, -70)]


@given(st.binary(max_size=62), st.integers(-127, 20))
def test_any_relayed_bytes_give_an_advertisement_or_a_clear_error(raw: bytes, rssi: int) -> None:
    try:
        data = raw_advertisement_data(raw, rssi, ())
    except ValueError as error:
        assert "unparsable advertisement" in str(error)
    else:
        assert data.rssi == rssi
