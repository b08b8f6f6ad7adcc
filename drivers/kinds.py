"""The device kinds the gateway reads, each declared once.

A `DeviceKind` says everything that varies by kind: how the device is reached
(`Transport`), which configuration keys it takes, how its id is derived, what its
session speaks (a GATT profile, an advertisement protocol or a serial protocol), the
`decode` command's decoders for its bytes, how `scan` recognises it, and which simulated
twin in `firmware_sim/` plays it. Configuration, sessions, `decode`, `scan`, the
simulator's command line and the docs table all derive from `KINDS`.

Importing this module loads the pure parsers only: no bleak, bumble or pyserial, so a
serial-only gateway never loads the Bluetooth stack.

Adding a kind: a parser module, a simulator module, one entry in `KINDS`, tests
(docs/architecture.md, "Adding a device kind").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from drivers.ble import mibeacon, uuids
from drivers.ble.advert_decoder import AdvertDecoder
from drivers.ble.bthome import BthomeDecoder, parse_bthome
from drivers.ble.gatt_profiles import (
    BERRYMED,
    HEALTH_THERMOMETER,
    PC60FW,
    PULSE_OXIMETER,
    GattProfile,
    MeasurementStream,
)
from drivers.ble.hts import parse_intermediate_temperature, parse_temperature_measurement
from drivers.ble.mibeacon import MiBeaconDecoder, parse_mibeacon
from drivers.ble.plx import parse_plx_continuous, parse_plx_spot_check
from drivers.errors import ChecksumMismatch, TruncatedPacket
from drivers.measurement import Measurement
from drivers.serial.cms50 import Cms50Protocol
from drivers.serial.contec import decode_cms50_legacy, decode_cms50_v46
from drivers.serial.protocol import SerialProtocol


class Transport(StrEnum):
    GATT = "gatt"  # a Bluetooth connection: notifications and reads
    ADVERT = "advert"  # Bluetooth advertisements only, no connection
    SERIAL = "serial"  # a USB-serial port


class KeyUse(StrEnum):
    """Whether a kind takes an AES key (`key` in its configuration)."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


#: Decodes captured bytes for `bedside-gateway decode`: (data, key, mac) -> measurements.
DecodeFunction = Callable[[bytes, bytes | None, str | None], list[Measurement]]
#: What a scan heard of one device: (local name, service UUIDs, service data) -> match?
Recogniser = Callable[[str | None, Sequence[str], Mapping[str, bytes]], bool]


@dataclass(frozen=True, slots=True)
class Decoder:
    """One `decode` format: a characteristic, an advertisement or a byte stream."""

    name: str
    description: str
    decode: DecodeFunction
    takes_key: bool = False


@dataclass(frozen=True, slots=True)
class DeviceKind:
    name: str
    #: One line for the docs table and error messages: what device this is.
    description: str
    transport: Transport
    #: GATT kinds: what the session does with each characteristic.
    gatt: GattProfile | None = None
    #: Advertisement kinds: the service data UUID their packets come under, and the
    #: decoder (one per device: decryption, repeats, replays) of that service data.
    service_data_uuid: str | None = None
    advert_decoder: type[AdvertDecoder] | None = None
    #: Serial kinds: a new protocol object for each session.
    serial: Callable[[], SerialProtocol] | None = None
    #: Thermometers: a `site` key names where the temperature is taken.
    has_site: bool = False
    key: KeyUse = KeyUse.NONE
    decoders: tuple[Decoder, ...] = ()
    #: How `scan` recognises the kind from advertisements; None: not a Bluetooth device.
    recognise: Recogniser | None = None
    #: The simulated twin, `module:Class` under firmware_sim/ (never imported by the
    #: service: only the simulator and the tests resolve it).
    twin: str = ""

    @property
    def bluetooth(self) -> bool:
        return self.transport is not Transport.SERIAL

    def device_id(self, address: str) -> str:
        """Stable across restarts: derived from kind and address (or port) only."""
        if self.transport is Transport.SERIAL:
            name = address.rstrip("/").rsplit("/", 1)[-1]  # by-id names are unique
            return f"{self.name}-{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-').lower()}"
        return f"{self.name}-{address.replace(':', '').lower()}"

    @property
    def found_by(self) -> str:
        """The configuration keys that find the device, as the docs table says it."""
        if self.transport is Transport.SERIAL:
            return "`port`"
        return {
            KeyUse.NONE: "`address`",
            KeyUse.OPTIONAL: "`address` (+ `key` if it encrypts)",
            KeyUse.REQUIRED: "`address` + `key`",
        }[self.key]


def check_kind(kind: DeviceKind) -> None:
    """Raises ValueError when an entry cannot work: the start-up self-check, so a broken
    entry is one clear error instead of a crash of the running service."""
    needs = {
        Transport.GATT: ("gatt", kind.gatt is not None),
        Transport.ADVERT: (
            "service_data_uuid and advert_decoder",
            kind.service_data_uuid is not None and kind.advert_decoder is not None,
        ),
        Transport.SERIAL: ("serial", kind.serial is not None),
    }
    what, present = needs[kind.transport]
    if not present:
        raise ValueError(f"device kind {kind.name!r} ({kind.transport}) declares no {what}")
    serial = kind.transport is Transport.SERIAL
    if serial and (kind.recognise or kind.has_site or kind.key is not KeyUse.NONE):
        raise ValueError(f"device kind {kind.name!r}: a serial device has no advert, site or key")
    if not re.fullmatch(r"[a-z][a-z0-9]*", kind.name):
        raise ValueError(f"device kind {kind.name!r}: a name is lower-case letters and digits")
    if not re.fullmatch(r"firmware_sim(\.\w+)+:\w+", kind.twin):
        raise ValueError(
            f"device kind {kind.name!r}: twin {kind.twin!r} is not firmware_sim...:Class"
        )


# --- how scan recognises a kind ------------------------------------------------------


def _by_service(service_uuid: str) -> Recogniser:
    return lambda _name, service_uuids, _data: service_uuid in service_uuids


def _by_name(*prefixes: str) -> Recogniser:
    """Local name prefixes, case-insensitive (for devices that advertise no service)."""
    return lambda name, _uuids, _data: (name or "").lower().startswith(prefixes)


def _either(*recognisers: Recogniser) -> Recogniser:
    return lambda name, uuids_, data: any(r(name, uuids_, data) for r in recognisers)


def _mibeacon_door(_name: str | None, _uuids: Sequence[str], data: Mapping[str, bytes]) -> bool:
    """A MiBeacon frame whose product id is the MCCGQ02HL door sensor."""
    frame = data.get(uuids.MIBEACON_SERVICE_DATA, b"")
    return len(frame) >= 4 and int.from_bytes(frame[2:4], "little") == mibeacon.MCCGQ02HL


# --- how `decode` reads captured bytes -----------------------------------------------


def _packet(parse: Callable[[bytes], list[Measurement]]) -> DecodeFunction:
    return lambda data, _key, _mac: parse(data)


def _stream(profile: GattProfile) -> DecodeFunction:
    """The joined bytes as a stream split anywhere; an error when not one packet decodes."""
    (new_stream,) = profile.streams.values()

    def decode(data: bytes, _key: bytes | None, _mac: str | None) -> list[Measurement]:
        stream: MeasurementStream[object] = new_stream()
        packets = stream.feed(data)
        if packets:
            return [m for packet in packets for m in packet]
        if stream.last_error is not None:
            raise stream.last_error
        raise (ChecksumMismatch if stream.garbage_bytes else TruncatedPacket)(
            f"no complete packet in {len(data)} bytes ({stream.garbage_bytes} garbage, "
            f"{stream.pending} waiting for the rest of a packet)"
        )

    return decode


def _bthome(data: bytes, key: bytes | None, mac: str | None) -> list[Measurement]:
    return parse_bthome(data, key, mac).measurements


def _mibeacon(data: bytes, key: bytes | None, mac: str | None) -> list[Measurement]:
    return parse_mibeacon(data, key, mac).measurements


_DEVICE_KINDS = (
    DeviceKind(
        name="hts",
        description="Bluetooth Health Thermometer (standard service 0x1809)",
        transport=Transport.GATT,
        gatt=HEALTH_THERMOMETER,
        has_site=True,
        decoders=(
            Decoder(
                "hts-temperature",
                "Temperature Measurement 0x2A1C (Health Thermometer Service)",
                _packet(parse_temperature_measurement),
            ),
            Decoder(
                "hts-intermediate",
                "Intermediate Temperature 0x2A1E (Health Thermometer Service)",
                _packet(parse_intermediate_temperature),
            ),
        ),
        recognise=_by_service(uuids.HEALTH_THERMOMETER_SERVICE),
        twin="firmware_sim.devices.health_thermometer:HealthThermometer",
    ),
    DeviceKind(
        name="plx",
        description="Bluetooth Pulse Oximeter (standard service 0x1822), continuous or spot-check",
        transport=Transport.GATT,
        gatt=PULSE_OXIMETER,
        decoders=(
            Decoder(
                "plx-continuous",
                "PLX Continuous Measurement 0x2A5F (Pulse Oximeter Service)",
                _packet(parse_plx_continuous),
            ),
            Decoder(
                "plx-spot-check",
                "PLX Spot-check Measurement 0x2A5E (Pulse Oximeter Service)",
                _packet(parse_plx_spot_check),
            ),
        ),
        recognise=_by_service(uuids.PULSE_OXIMETER_SERVICE),
        twin="firmware_sim.devices.plx_oximeter:PlxOximeter",
    ),
    DeviceKind(
        name="berrymed",
        description="BerryMed BCI oximeter (BM1000 family)",
        transport=Transport.GATT,
        gatt=BERRYMED,
        decoders=(
            Decoder(
                "berrymed",
                "BerryMed BCI byte stream (5-byte packets, any split)",
                _stream(BERRYMED),
            ),
        ),
        recognise=_either(_by_service(uuids.BERRYMED_SERVICE), _by_name("berrymed")),
        twin="firmware_sim.devices.berrymed_oximeter:BerryMedOximeter",
    ),
    DeviceKind(
        name="pc60fw",
        description="Viatom/Wellue PC-60FW oximeter (Nordic UART)",
        transport=Transport.GATT,
        gatt=PC60FW,
        decoders=(
            Decoder(
                "pc60fw",
                "Viatom/Wellue PC-60FW byte stream (AA 55 frames, any split)",
                _stream(PC60FW),
            ),
        ),
        # Known by its name only: the Nordic UART service says nothing about the device.
        recognise=_by_name("pc-60f", "pc60f"),
        twin="firmware_sim.devices.pc60fw_oximeter:Pc60fwOximeter",
    ),
    DeviceKind(
        name="bthome",
        description=(
            "BTHome v2 door/window sensor (e.g. Shelly BLU Door/Window), advertisements only"
        ),
        transport=Transport.ADVERT,
        service_data_uuid=uuids.BTHOME_SERVICE_DATA,
        advert_decoder=BthomeDecoder,
        key=KeyUse.OPTIONAL,
        decoders=(
            Decoder(
                "bthome",
                "BTHome v2 service data 0xFCD2 (encrypted: --key and --mac)",
                _bthome,
                takes_key=True,
            ),
        ),
        recognise=lambda _name, _uuids, data: uuids.BTHOME_SERVICE_DATA in data,
        twin="firmware_sim.devices.bthome_door:BthomeDoorSensor",
    ),
    DeviceKind(
        name="mibeacon",
        description="Xiaomi MCCGQ02HL door sensor (MiBeacon v4/v5, encrypted), advertisements only",
        transport=Transport.ADVERT,
        service_data_uuid=uuids.MIBEACON_SERVICE_DATA,
        advert_decoder=MiBeaconDecoder,
        key=KeyUse.REQUIRED,
        decoders=(
            Decoder(
                "mibeacon",
                "Xiaomi MiBeacon service data 0xFE95 (encrypted: --key; --mac if not in the frame)",
                _mibeacon,
                takes_key=True,
            ),
        ),
        recognise=_mibeacon_door,
        twin="firmware_sim.devices.mibeacon_door:MiBeaconDoorSensor",
    ),
    DeviceKind(
        name="cms50",
        description="Contec CMS50D+/E on USB serial, either firmware generation",
        transport=Transport.SERIAL,
        serial=Cms50Protocol,
        decoders=(
            Decoder(
                "cms50-legacy",
                "Contec CMS50D+/E serial stream, firmware <= 4.5 (5-byte packets)",
                _packet(decode_cms50_legacy),
            ),
            Decoder(
                "cms50-v46",
                "Contec CMS50D+/E serial stream, firmware 4.6+ (9-byte packets)",
                _packet(decode_cms50_v46),
            ),
        ),
        twin="firmware_sim.cms50:Cms50Simulator",
    ),
)

#: Every device kind, by the name the configuration's `kind` key uses.
KINDS: dict[str, DeviceKind] = {kind.name: kind for kind in _DEVICE_KINDS}


def kinds_table() -> list[str]:
    """The kinds as a Markdown table: `bedside-gateway kinds` prints it, and the
    configuration guide carries it (a test keeps the two equal)."""
    lines = ["| `kind` | Device | Found by | Device id | `decode` with |", "|---|---|---|---|---|"]
    for kind in KINDS.values():
        if kind.transport is Transport.SERIAL:
            device_id = f"`{kind.name}-<last part of the port path, non-alphanumerics as ->`"
        else:
            device_id = f"`{kind.name}-<address without colons, lower case>`"
        decoders = ", ".join(f"`{d.name}`" for d in kind.decoders)
        lines.append(
            f"| `{kind.name}` | {kind.description} | {kind.found_by} | {device_id} | {decoders} |"
        )
    return lines


def kinds_of(transport: Transport) -> tuple[str, ...]:
    return tuple(name for name, kind in KINDS.items() if kind.transport is transport)


def shown_name(name: str | None, kind: str | None, *, bound: bool) -> str | None:
    """A device's advertised name as a list of devices in range shows it: only for a
    device the gateway can read (`kind`, its guess) or has bound. Phones and earbuds are
    often named after their owners, and such a list on a ward must not list people."""
    return name if kind is not None or bound else None


def classify_advertisement(
    name: str | None, service_uuids: Sequence[str], service_data: Mapping[str, bytes]
) -> str | None:
    """The device kind an advertisement suggests, or None: a guess to offer for pairing
    (a PC-60FW is known only by its name, a MiBeacon only when it is the door sensor)."""
    return next(
        (
            kind.name
            for kind in KINDS.values()
            if kind.recognise is not None and kind.recognise(name, service_uuids, service_data)
        ),
        None,
    )
