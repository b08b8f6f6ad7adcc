"""Advertisements as bleak's AdvertisementData (bumble's parsed ones, and raw AD
structures as a proxy relays them), and the virtual controller's doubled scan responses
told apart."""

from __future__ import annotations

import struct
from typing import Any

from bleak.backends.scanner import AdvertisementData
from bumble.core import AdvertisingData
from bumble.device import Advertisement

from drivers.ble.bumble.uuids import uuid_str

_T = AdvertisingData.Type
_UUID_LIST_SIZES = {
    _T.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _T.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _T.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _T.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _T.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
    _T.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
}
_SERVICE_DATA_UUID_SIZES = {
    _T.SERVICE_DATA_16_BIT_UUID: 2,
    _T.SERVICE_DATA_32_BIT_UUID: 4,
    _T.SERVICE_DATA_128_BIT_UUID: 16,
}


def advertisement_data(advertisement: Advertisement) -> AdvertisementData:
    return structures_data(advertisement.data, advertisement.rssi, (advertisement,))


def raw_advertisement_data(
    raw: bytes, rssi: int, platform_data: tuple[Any, ...]
) -> AdvertisementData:
    """Raw AD structures (as an ESPHome proxy relays them). Raises ValueError when
    they cannot be parsed."""
    try:
        return structures_data(AdvertisingData.from_bytes(raw), rssi, platform_data)
    except (IndexError, ValueError, struct.error) as error:  # bumble's errors are ValueErrors
        raise ValueError(f"unparsable advertisement: {error}") from error


def structures_data(
    data: AdvertisingData, rssi: int, platform_data: tuple[Any, ...]
) -> AdvertisementData:
    name: str | None = None
    uuids: list[str] = []
    service_data: dict[str, bytes] = {}
    manufacturer_data: dict[int, bytes] = {}
    tx_power: int | None = None
    for ad_type, value in data.ad_structures:
        if ad_type == _T.COMPLETE_LOCAL_NAME or (ad_type == _T.SHORTENED_LOCAL_NAME and not name):
            name = value.decode("utf-8", errors="replace")
        elif size := _UUID_LIST_SIZES.get(ad_type):
            uuids += [uuid_str(value[i : i + size]) for i in range(0, len(value), size)]
        elif size := _SERVICE_DATA_UUID_SIZES.get(ad_type):
            service_data[uuid_str(value[:size])] = value[size:]
        elif ad_type == _T.MANUFACTURER_SPECIFIC_DATA and len(value) >= 2:
            manufacturer_data[int.from_bytes(value[:2], "little")] = value[2:]
        elif ad_type == _T.TX_POWER_LEVEL and value:
            tx_power = int.from_bytes(value[:1], "little", signed=True)
    return AdvertisementData(
        local_name=name,
        manufacturer_data=manufacturer_data,
        service_data=service_data,
        service_uuids=list(dict.fromkeys(uuids)),
        tx_power=tx_power,
        rssi=rssi,
        platform_data=platform_data,
    )


def is_fake_scan_response(advertisement: Advertisement) -> bool:
    """bumble's virtual controller reports every advertisement a second time as a scan
    response carrying the same bytes, which bumble merges into doubled data (pitfall 3)."""
    structures = advertisement.data.ad_structures
    half = len(structures) // 2
    return advertisement.is_scan_response and structures[:half] == structures[half:]
