"""What every simulated advertisement-only door sensor does, whatever its protocol.

Such a sensor never accepts a connection: it repeats one non-connectable legacy
advertisement (flags, optional name, 16-bit service data) and replaces it with a new
packet, with a new counter, when the door opens or closes. Subclasses build the
service data; this class owns the radio side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from bumble import hci
from bumble.core import AdvertisingData
from bumble.device import (
    AdvertisingEventProperties,
    AdvertisingParameters,
    AdvertisingSet,
    Device,
)
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from drivers.ble.advert_decoder import MIC_LENGTH, check_key
from firmware_sim.ble_radio import VirtualController

_NON_CONNECTABLE = AdvertisingEventProperties(
    is_connectable=False, is_scannable=False, is_legacy=True
)
_LEGACY_MAX = 31


def ccm_encrypt(
    key: bytes, nonce: bytes, plaintext: bytes, aad: bytes | None
) -> tuple[bytes, bytes]:
    """AES-128-CCM with a 4-byte MIC, as the sensors seal their objects: the inverse of
    `drivers.ble.advert_decoder.ccm_decrypt`. Returns (ciphertext, MIC)."""
    sealed = AESCCM(check_key(key), tag_length=MIC_LENGTH).encrypt(nonce, plaintext, aad)
    return sealed[:-MIC_LENGTH], sealed[-MIC_LENGTH:]


class AdvertisingDoorSensor(ABC):
    """A door sensor on the virtual link that only advertises.

    `sent` keeps the service data of every new packet, oldest first, so that a test can
    compare what the gateway rejected with what was sent, and `replay()` can send an
    old packet again as an attacker (or a confused relay) would.
    """

    #: The 16-bit service data UUID the packets are sent under.
    service_uuid: int
    #: The device kind the gateway configures for it ("bthome", "mibeacon").
    protocol: str
    #: The simulator's names for this twin (`--door NAME`), each with its default
    #: address and key: e.g. a plain and an encrypting BTHome sensor.
    variants: ClassVar[dict[str, tuple[str, bytes | None]]]

    @classmethod
    @abstractmethod
    def simulate(
        cls, link: LocalLink, address: str, key: bytes | None, advertising_interval_ms: float
    ) -> AdvertisingDoorSensor:
        """This twin at `address`; `key` None: the variant's own (or none)."""

    def __init__(
        self,
        link: LocalLink,
        address: str,
        *,
        name: str | None,
        key: bytes | None,
        battery: int,
        advertising_interval_ms: float,
    ) -> None:
        if not 20.0 <= advertising_interval_ms <= 10240.0:
            raise ValueError("advertising interval must be 20 ms to 10.24 s")
        if not 0 <= battery <= 100:
            raise ValueError(f"battery must be 0-100 %, not {battery}")
        self.address = hci.Address(address).to_string(with_type_qualifier=False)
        self.name = name
        self.key = None if key is None else check_key(key)
        self.battery = battery
        self.is_open = False
        self.sent: list[bytes] = []
        self._interval_ms = advertising_interval_ms
        self._controller = VirtualController(name or self.address, link=link)
        self.device = Device(
            name=name or self.address,
            address=hci.Address(address),
            host=Host(self._controller, AsyncPipeSink(self._controller)),
        )
        self._set: AdvertisingSet | None = None

    @abstractmethod
    def _first_packet(self) -> bytes:
        """Service data advertised from power-on until the door first moves."""

    @abstractmethod
    def _door_packet(self) -> bytes:
        """Service data announcing the current door state, with a new counter."""

    async def start(self) -> None:
        await self.device.power_on()
        self._set = await self.device.create_advertising_set(
            advertising_parameters=AdvertisingParameters(
                advertising_event_properties=_NON_CONNECTABLE,
                primary_advertising_interval_min=self._interval_ms,
                primary_advertising_interval_max=self._interval_ms,
            ),
            advertising_data=self._advertising_data(self._new(self._first_packet())),
        )

    async def stop(self) -> None:
        """Power off: leave the radio."""
        self._set = None
        self._controller.detach()

    async def open(self) -> None:
        self.is_open = True
        await self._advertise(self._new(self._door_packet()))

    async def close(self) -> None:
        self.is_open = False
        await self._advertise(self._new(self._door_packet()))

    async def replay(self, index: int = 0) -> None:
        """Advertise `sent[index]` again (by default the oldest packet): an encrypted
        one carries an old counter, which a gateway must reject."""
        await self._advertise(self.sent[index])

    def _new(self, service_data: bytes) -> bytes:
        self.sent.append(service_data)
        return service_data

    async def _advertise(self, service_data: bytes) -> None:
        if self._set is None:
            raise RuntimeError(f"door sensor {self.address} is not started")
        await self._set.set_advertising_data(self._advertising_data(service_data))

    def _advertising_data(self, service_data: bytes) -> bytes:
        structures = [
            (
                AdvertisingData.Type.FLAGS,
                bytes(
                    [
                        AdvertisingData.LE_GENERAL_DISCOVERABLE_MODE_FLAG
                        | AdvertisingData.BR_EDR_NOT_SUPPORTED_FLAG
                    ]
                ),
            ),
            (
                AdvertisingData.Type.SERVICE_DATA_16_BIT_UUID,
                self.service_uuid.to_bytes(2, "little") + service_data,
            ),
        ]
        if self.name is not None:
            structures.insert(1, (AdvertisingData.Type.COMPLETE_LOCAL_NAME, self.name.encode()))
        data = bytes(AdvertisingData(structures))
        if len(data) > _LEGACY_MAX:
            raise ValueError(
                f"advertising data of {self.address} is {len(data)} bytes, a legacy "
                f"advertisement holds {_LEGACY_MAX}: shorten the name"
            )
        return data
