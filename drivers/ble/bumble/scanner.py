"""The bleak scanner backend: one bleak scanner's share of its radio's scan."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakError
from bumble import core, hci

if TYPE_CHECKING:
    from drivers.ble.bumble.radio import BumbleRadio


class BumbleScanner(BaseBleakScanner):
    """bleak scanner backend; `BumbleRadio.scanner_backend` is this class bound to a radio."""

    radio: ClassVar[BumbleRadio]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"],
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.scanning_mode = scanning_mode

    async def start(self) -> None:
        self.seen_devices = {}
        try:
            await self.radio.add_scanner(self)
        except core.BaseBumbleError as error:
            raise BleakError(f"cannot scan on {self.radio.transport_spec}: {error!r}") from error

    async def stop(self) -> None:
        await self.radio.remove_scanner(self)

    def on_advertisement(self, address: hci.Address, data: AdvertisementData) -> None:
        if not self.is_allowed_uuid(data.service_uuids):
            return
        key = address.to_string(with_type_qualifier=False)
        device = self.create_or_update_device(key, key, data.local_name, address, data)
        self.call_detection_callbacks(device, data)
