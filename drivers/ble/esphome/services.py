"""The GATT services an ESPHome proxy discovered on a device, as bleak's collection."""

from __future__ import annotations

from collections.abc import Callable, Collection

from aioesphomeapi.model import ESPHomeBluetoothGATTServices
from bleak.assigned_numbers import gatt_char_props_to_strs
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection


def service_collection(
    discovered: ESPHomeBluetoothGATTServices,
    max_write_without_response: Callable[[], int],
    wanted: Collection[str] | None,
) -> BleakGATTServiceCollection:
    """`wanted`: only these service UUIDs (bleak's `services=` argument), or all.

    ESPHome's UUIDs are already bleak's form (lower-case, 128-bit); its characteristic
    handle is the value's handle, which is what its reads and writes take.
    """
    collection = BleakGATTServiceCollection()
    for service in discovered.services:
        if wanted is not None and service.uuid not in wanted:
            continue
        bleak_service = BleakGATTService(service, service.handle, service.uuid)
        collection.add_service(bleak_service)
        for characteristic in service.characteristics:
            bleak_characteristic = BleakGATTCharacteristic(
                characteristic,
                characteristic.handle,
                characteristic.uuid,
                list(gatt_char_props_to_strs(characteristic.properties)),
                max_write_without_response,
                bleak_service,
            )
            collection.add_characteristic(bleak_characteristic)
            for descriptor in characteristic.descriptors:
                collection.add_descriptor(
                    BleakGATTDescriptor(
                        descriptor, descriptor.handle, descriptor.uuid, bleak_characteristic
                    )
                )
    return collection
